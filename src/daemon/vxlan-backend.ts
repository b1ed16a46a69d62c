// The VXLAN backend as the daemon sees it (DataPlaneHooks): opens the userspace data plane on a
// persistent TUN named like flannel's device, configures it as flannel configures flannel.N, and keeps
// kernel routes and the data plane's peer table in step with lease events.
//
// The TUN is persistent on purpose: after kill -9 the device and its routes stay, so the kernel keeps
// routing overlay traffic to it and a restarted daemon only has to reattach and refill its peer table.
import type { Log } from '../ops/log';
import { NativeRtnetlink, NetlinkError, type LinkInfo, type Rtnetlink } from '../netlink/rtnetlink';
import { setupDevice } from '../routes/device-setup';
import { decideTakeover } from '../routes/device-takeover';
import { RouteManager } from '../routes/route-manager';
import { effectivePort } from '../subnet/config';
import { formatIp4, formatIp4Net, parseIp4 } from '../subnet/ip4';
import type { DataplaneSnapshot, PeerStats } from '../ops/metrics';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { parseMac } from '../subnet/lease-codec';
import { parseOffloadRequest } from '../dataplane/offload';
import { DataplaneIoError, VxlanDataplane } from '../dataplane/vxlan-dataplane';
import type { DataPlaneContext, DataPlaneHooks, PrepareContext, Prepared } from './daemon';

export interface VxlanBackendOptions {
  /** TUN name; "" means flannel.<VNI>. */
  tunName: string;
  /** -vxlan-strict-source: drop VXLAN from outer sources that are no peer's PublicIP. Default false. */
  strictSource?: boolean;
  /** Offload rung request (-offload): "auto" or a rung name (src/dataplane/offload.ts). Default auto. */
  offload?: string;
  /** Forwarding threads (-dataplane-threads); default one per CPU, at most 8. */
  threads?: number;
  log: Log;
  /** Called when the data plane stops on a persistent I/O error; the daemon treats it as fatal. */
  onFatal(err: Error): void;
  netlink?: Rtnetlink & { deleteLink?(ifindex: number): Promise<void> };
}

export class DeviceTakeoverError extends Error {
  override name = 'DeviceTakeoverError';
}

export class DataplaneOpenError extends Error {
  override name = 'DataplaneOpenError';
}

/** One line for the operator: what is busy or missing, and the likely reason. */
export function explainOpenError(err: Error, tunName: string, port: number, sendSource: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EBUSY' && /TUN/.test(err.message)) {
    return `device ${tunName} is in use by another process: is another tsflanneld running on this host? (${err.message})`;
  }
  if (code === 'EADDRINUSE') {
    return (
      `UDP port ${port} is in use: another tsflanneld, or a kernel VXLAN device with dstport ${port} ` +
      `(see ip -d link show type vxlan), holds it (${err.message})`
    );
  }
  if (code === 'EADDRNOTAVAIL') return `cannot send from ${sendSource}: it is not an address of this host (${err.message})`;
  if (code === 'EPERM' || code === 'EACCES')
    return `not allowed to open ${tunName} or its sockets: run as root or with CAP_NET_ADMIN (${err.message})`;
  return `cannot open the data plane on ${tunName}, UDP port ${port}: ${err.message}`;
}

export class VxlanBackend implements DataPlaneHooks {
  private dataplane: VxlanDataplane | null = null;
  private routes: RouteManager | null = null;
  /** Current peer leases by key: the first batch (the watcher's snapshot) is applied as a reconcile. */
  private readonly leases = new Map<string, Lease>();
  private reconciled = false;
  private nl: NonNullable<VxlanBackendOptions['netlink']> | null = null;

  constructor(private readonly options: VxlanBackendOptions) {}

  get dataplaneInstance(): VxlanDataplane | null {
    return this.dataplane;
  }

  /**
   * Holds the device and the VXLAN port before the daemon writes its lease: takes over flanneld's
   * kernel flannel.N (keeping its MAC), then opens the TUN and binds the sockets. Any failure here
   * leaves etcd untouched.
   */
  async prepare(ctx: PrepareContext): Promise<Prepared> {
    const { log } = this.options;
    const backend = ctx.config.backend;
    const netlink = this.netlink();
    const tunName = this.tunName(ctx.config.backend.vni);
    let vtepMac = ctx.vtepMac;

    let existing: LinkInfo | null = null;
    try {
      existing = await netlink.getLink(tunName);
    } catch (err) {
      if (!(err instanceof NetlinkError && err.code === 'ENODEV')) throw err;
    }
    const decision = decideTakeover(tunName, existing);
    if (decision.action === 'refuse') throw new DeviceTakeoverError(decision.reason);
    if (decision.action === 'take-over') {
      if (!netlink.deleteLink) throw new DeviceTakeoverError(`cannot delete ${tunName}: this netlink has no link deletion`);
      await netlink.deleteLink(existing!.index);
      vtepMac = decision.mac;
      log.warn(
        { dev: tunName, vtepMac },
        `took over flanneld's kernel VXLAN device ${tunName}: deleted it and keep its MAC ${vtepMac} as our VTEP MAC, so peers need no update`,
      );
    }

    const port = effectivePort(backend);
    try {
      this.dataplane = VxlanDataplane.open({
        tunName,
        vni: backend.vni,
        port,
        sourceIp: parseIp4(ctx.sendSource),
        localMac: parseMac(vtepMac),
        persist: true,
        offload: parseOffloadRequest(this.options.offload ?? 'auto'),
        threads: this.options.threads,
        strictSource: this.options.strictSource ?? false,
        log,
        onFatal: (err: Error) => void this.ioFailed(tunName, err),
      });
    } catch (err) {
      throw new DataplaneOpenError(explainOpenError(err as Error, tunName, port, ctx.sendSource), { cause: err });
    }
    return { vtepMac };
  }

  async start(ctx: DataPlaneContext): Promise<void> {
    const { log } = this.options;
    const backend = ctx.config.backend;
    const network = ctx.config.network;
    if (!network) throw new Error('VXLAN backend needs an IPv4 Network');
    const netlink = this.netlink();
    const dataplane = this.dataplane;
    if (!dataplane) throw new Error('VXLAN backend: start() before prepare()');

    const device = await setupDevice({ netlink, ifname: dataplane.tunName, subnet: ctx.lease.subnet, network, mtu: ctx.mtu, log });
    this.routes = new RouteManager({
      netlink,
      forwarding: dataplane,
      ifindex: device.ifindex,
      ownSubnet: ctx.lease.subnet,
      network,
      log,
    });
    dataplane.start();
    log.info(
      {
        dev: dataplane.tunName,
        address: `${formatIp4Net(ctx.lease.subnet).split('/')[0]}/32`,
        mtu: ctx.mtu,
        port: dataplane.port,
        vni: backend.vni,
      },
      `VXLAN device ${dataplane.tunName} up`,
    );
  }

  private netlink(): NonNullable<VxlanBackendOptions['netlink']> {
    this.nl ??= this.options.netlink ?? new NativeRtnetlink();
    return this.nl;
  }

  private tunName(vni: number): string {
    return this.options.tunName !== '' ? this.options.tunName : `flannel.${vni}`;
  }

  /** A persistent I/O error: say plainly when the cause is the device having been deleted. */
  private async ioFailed(tunName: string, err: Error): Promise<void> {
    let gone = false;
    try {
      await this.netlink().getLink(tunName);
    } catch (e) {
      gone = e instanceof NetlinkError && e.code === 'ENODEV';
    }
    if (!gone) {
      this.options.onFatal(err);
      return;
    }
    this.options.onFatal(
      new DataplaneIoError(
        `device ${tunName} was deleted while tsflanneld was running (ip link del?), taking its routes with it; ` +
          `exiting so that a restart (systemd Restart=, a DaemonSet) recreates it with its address and routes (${err.message})`,
        err instanceof DataplaneIoError ? err.errno : 0,
      ),
    );
  }

  async applyEvents(events: LeaseEvent[]): Promise<void> {
    const routes = this.routes;
    if (!routes) throw new Error('VXLAN backend not started');
    for (const ev of events) {
      if (ev.type === 'removed') this.leases.delete(ev.lease.key);
      else this.leases.set(ev.lease.key, ev.lease);
    }
    if (!this.reconciled) {
      // The first batch is the full snapshot: reconcile also removes routes of peers that vanished
      // while we were down (the persistent TUN kept them).
      this.reconciled = true;
      await routes.reconcile([...this.leases.values()]);
      return;
    }
    await routes.applyEvents(events);
  }

  /** Counters for /metrics (snapshots are built on scrape, never on the packet path). */
  stats(): DataplaneSnapshot | null {
    const dataplane = this.dataplane;
    if (!dataplane) return null;
    const c = dataplane.counters();
    const publicIps = new Map<string, string>();
    for (const p of this.routes?.peers() ?? []) publicIps.set(formatIp4Net(p.subnet), formatIp4(p.publicIp));
    const peers: PeerStats[] = [];
    for (const [subnet, pc] of Object.entries(c.peers)) {
      peers.push({
        subnet,
        publicIp: publicIps.get(subnet) ?? '',
        rxPackets: pc.inPackets,
        rxBytes: pc.inBytes,
        txPackets: pc.outPackets,
        txBytes: pc.outBytes,
      });
    }
    return {
      rxPackets: c.rxPackets,
      rxBytes: c.rxBytes,
      txPackets: c.txPackets,
      txBytes: c.txBytes,
      drops: c.drops,
      peers,
      offloadRung: dataplane.offloadRung,
    };
  }

  async stop(): Promise<void> {
    this.routes?.close();
    this.routes = null;
    // Close the fds but keep the persistent device and its routes, like flanneld keeps flannel.N.
    this.dataplane?.close();
    this.dataplane = null;
  }
}
