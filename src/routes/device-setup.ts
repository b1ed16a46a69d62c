// Configures our TUN device after the data plane has opened it, as flanneld configures flannel.N
// (docs/compat.md §5.2, §5.4): address `<lease subnet IP>/32`, no other addresses inside the Network,
// the backend MTU, and link up. Each step is idempotent, so a restart with a device left over from a
// previous run only changes what differs.
//
// The /32 (not the subnet's prefix) keeps the kernel from adding a route for our own subnet via the TUN.
// It gives host-originated overlay traffic a source address (`S.ip`), as flannel.N's .0/32 does.
import fs from 'node:fs';
import { formatIp4Net, netContains, type Ip4Net } from '../subnet/ip4';
import { describeAddr, type Ip4Addr, type LinkNetlink } from '../netlink/rtnetlink';
import type { Log } from '../ops/log';

export interface DeviceSetupOptions {
  netlink: LinkNetlink;
  /** Name of the TUN device the data plane opened. */
  ifname: string;
  /** Our lease's subnet, e.g. 10.5.72.0/24 → address 10.5.72.0/32. */
  subnet: Ip4Net;
  /** The flannel Network; addresses inside it other than ours are removed. */
  network: Ip4Net;
  mtu: number;
  log: Log;
  /** /proc/sys access; tests pass a fake so they never touch the host's settings. */
  sysctl?: Sysctl;
}

export interface Sysctl {
  read(file: string): string;
  write(file: string, value: string): void;
}

const procSysctl: Sysctl = {
  read: (file) => fs.readFileSync(file, 'utf8'),
  write: (file, value) => fs.writeFileSync(file, value),
};

export interface DeviceSetupResult {
  ifindex: number;
  address: Ip4Addr;
  /** Addresses removed because they were inside the Network. */
  removed: Ip4Addr[];
  mtu: number;
}

export async function setupDevice(opts: DeviceSetupOptions): Promise<DeviceSetupResult> {
  const { netlink, ifname, log } = opts;
  const link = await netlink.getLink(ifname);
  const ifindex = link.index;

  if (link.mtu !== opts.mtu) {
    await netlink.setLinkMtu(ifindex, opts.mtu);
    log.info({ dev: ifname, from: link.mtu, to: opts.mtu }, 'device MTU set');
  }

  const address: Ip4Addr = { ip: opts.subnet.ip, prefixLen: 32 };
  const existing = await netlink.listAddrs(ifindex);
  const present = existing.some((a) => isSame(a, address));
  // Add ours before removing the others, so the device is never without its address.
  if (!present) {
    await netlink.replaceAddr(ifindex, address);
    log.info({ dev: ifname, address: describeAddr(address) }, 'device address added');
  }
  const removed: Ip4Addr[] = [];
  for (const a of existing) {
    if (isSame(a, address) || !netContains(opts.network, a.ip)) continue;
    await netlink.deleteAddr(ifindex, a);
    removed.push(a);
    log.info({ dev: ifname, address: describeAddr(a), network: formatIp4Net(opts.network) }, 'stale device address removed');
  }

  disableIpv6(ifname, opts.sysctl ?? procSysctl, log);

  // Up last: routes via the device can only be added once it is up (the kernel answers ENETDOWN).
  if (!link.up) {
    await netlink.setLinkUp(ifindex, true);
    log.info({ dev: ifname }, 'device set up');
  }
  return { ifindex, address, removed, mtu: opts.mtu };
}

/**
 * The overlay is IPv4-only: without this the kernel sends router solicitations and MLD reports into
 * the TUN, which the data plane can only drop (flannel sets accept_ra=0 on flannel.N for a similar
 * reason). A kernel without IPv6 has no such file, which is fine.
 */
function disableIpv6(ifname: string, sysctl: Sysctl, log: Log): void {
  const file = `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`;
  try {
    if (sysctl.read(file).trim() === '1') return;
    sysctl.write(file, '1');
    log.info({ dev: ifname }, 'IPv6 disabled on the device (IPv4-only overlay)');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') log.warn({ dev: ifname, err: (err as Error).message }, `could not disable IPv6 on ${ifname}`);
  }
}

function isSame(a: Ip4Addr, b: Ip4Addr): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen && (a.peer ?? a.ip) === (b.peer ?? b.ip);
}
