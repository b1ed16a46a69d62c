// Data plane hooks shared by the backends whose packets our userspace data plane carries (vxlan, udp):
// open the data plane on a persistent TUN named like flannel's device, configure the device as flannel
// does (address <lease subnet IP>/32, MTU, up), and keep kernel routes and the data plane's peer table
// in step with lease events through the route manager. What differs per backend (encapsulation, device
// name, lease → route/peer mapping) comes in a TunFlavor from the plug-in.
//
// The TUN is persistent on purpose: after kill -9 the device and its routes stay, so the kernel keeps
// routing overlay traffic to it and a restarted daemon only has to reattach and refill its peer table.
import type { Log } from '../ops/log';
import { NativeRtnetlink, NetlinkError, type Ip4Addr, type LinkInfo, type Rtnetlink } from '../netlink/rtnetlink';
import { setupDevice } from '../routes/device-setup';
import { decideTakeover } from '../routes/device-takeover';
import { RouteManager } from '../routes/route-manager';
import type { LeaseMapper } from '../routes/route-diff';
import { formatIp4Net, parseIp4 } from '../subnet/ip4';
import type { DataplaneSnapshot } from '../ops/metrics';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { DataplaneIoError, type VxlanDataplane } from '../dataplane/vxlan-dataplane';
import type { DataPlaneContext, DataPlaneHooks, PrepareContext, Prepared } from './backend';
import { dataplaneStats } from './stats';

/** What the external interface looks like to a mapper (for same-L2 decisions). */
export interface ExtLink {
  readonly ifindex: number;
  /** Its IPv4 addresses, refreshed before every batch of lease events. */
  addrs(): readonly Ip4Addr[];
}

/** The per-backend part of a TUN backend. */
export interface TunFlavor {
  /** "VXLAN", "UDP": for log lines. */
  readonly label: string;
  /** Device name when -tun-name is not given (flannel's name: flannel.<VNI>, flannel0). */
  readonly defaultTunName: string;
  /** Whether the mapper looks at the external interface's addresses (DirectRouting). */
  readonly usesExtAddrs: boolean;
  /** Extra fields of the "device up" log line (port, VNI, …). */
  readonly logFields: Readonly<Record<string, unknown>>;
  /**
   * Whether a kernel VXLAN device of flanneld with the TUN's name is taken over (deleted, its MAC kept
   * as our VTEP MAC): vxlan yes (flannel.<VNI>); udp no (flanneld's flannel0 is a TUN that goes with it).
   */
  readonly takesOverKernelVxlan: boolean;
  /** Opens the data plane on the TUN (the device is configured afterwards). */
  open(tunName: string, opts: { vtepMac: string; sourceIp: number }, onFatal: (err: Error) => void): VxlanDataplane;
  mapper(tunIfindex: number, ext: ExtLink): LeaseMapper;
}

export interface TunBackendOptions {
  /** -tun-name; "" = flavor.defaultTunName. */
  tunName: string;
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
      `UDP port ${port} is in use: another tsflanneld, flanneld, or a kernel VXLAN device with dstport ${port} ` +
      `(see ip -d link show type vxlan), holds it (${err.message})`
    );
  }
  if (code === 'EADDRNOTAVAIL') return `cannot send from ${sendSource}: it is not an address of this host (${err.message})`;
  if (code === 'EPERM' || code === 'EACCES')
    return `not allowed to open ${tunName} or its sockets: run as root or with CAP_NET_ADMIN (${err.message})`;
  return `cannot open the data plane on ${tunName}, UDP port ${port}: ${err.message}`;
}

export class TunBackend implements DataPlaneHooks {
  private dataplane: VxlanDataplane | null = null;
  private routes: RouteManager | null = null;
  private netlinkCache: NonNullable<TunBackendOptions['netlink']> | null = null;
  private extIfindex = 0;
  private extAddrs: Ip4Addr[] = [];
  /** Current peer leases by key: the first batch (the watcher's snapshot) is applied as a reconcile. */
  private readonly leases = new Map<string, Lease>();
  private reconciled = false;

  constructor(
    private readonly flavor: TunFlavor,
    private readonly options: TunBackendOptions,
  ) {}

  get dataplaneInstance(): VxlanDataplane | null {
    return this.dataplane;
  }

  private netlink(): NonNullable<TunBackendOptions['netlink']> {
    this.netlinkCache ??= this.options.netlink ?? new NativeRtnetlink();
    return this.netlinkCache;
  }

  /**
   * Holds the device and the UDP port before the daemon writes its lease: takes over flanneld's
   * kernel flannel.N where the flavour does (keeping its MAC), then opens the TUN and binds the
   * sockets (sending from ctx.sendSource). Any failure here leaves etcd untouched.
   */
  async prepare(ctx: PrepareContext): Promise<Prepared> {
    const { log } = this.options;
    const flavor = this.flavor;
    const netlink = this.netlink();
    const tunName = this.options.tunName !== '' ? this.options.tunName : flavor.defaultTunName;
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
      if (!flavor.takesOverKernelVxlan) {
        throw new DeviceTakeoverError(
          `a kernel VXLAN device named ${tunName} exists; delete it (ip link del ${tunName}) or choose another -tun-name`,
        );
      }
      if (!netlink.deleteLink) throw new DeviceTakeoverError(`cannot delete ${tunName}: this netlink has no link deletion`);
      await netlink.deleteLink(existing!.index);
      vtepMac = decision.mac;
      log.warn(
        { dev: tunName, vtepMac },
        `took over flanneld's kernel VXLAN device ${tunName}: deleted it and keep its MAC ${vtepMac} as our VTEP MAC, so peers need no update`,
      );
    }

    const sourceIp = ctx.sendSource !== '' ? parseIp4(ctx.sendSource) : 0;
    try {
      this.dataplane = flavor.open(tunName, { vtepMac, sourceIp }, (err) => void this.ioFailed(tunName, err));
    } catch (err) {
      const port = typeof flavor.logFields.port === 'number' ? flavor.logFields.port : 0;
      throw new DataplaneOpenError(explainOpenError(err as Error, tunName, port, ctx.sendSource), { cause: err });
    }
    return { vtepMac };
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

  async start(ctx: DataPlaneContext): Promise<void> {
    const { log } = this.options;
    const flavor = this.flavor;
    const network = ctx.config.network;
    if (!network) throw new Error(`${flavor.label} backend needs an IPv4 Network`);
    const netlink = this.netlink();
    this.extIfindex = ctx.iface.index;
    const dataplane = this.dataplane;
    if (!dataplane) throw new Error(`${flavor.label} backend: start() before prepare()`);

    const device = await setupDevice({ netlink, ifname: dataplane.tunName, subnet: ctx.lease.subnet, network, mtu: ctx.mtu, log });
    await this.refreshExtAddrs();
    this.routes = new RouteManager({
      netlink,
      forwarding: dataplane,
      // The external interface is managed too: DirectRouting routes live there, and ones an earlier
      // run (or backend) left behind are removed; only routes of our own protocol are touched there.
      devices: [
        { ifindex: device.ifindex, exclusive: true },
        { ifindex: ctx.iface.index, exclusive: false },
      ],
      map: flavor.mapper(device.ifindex, { ifindex: ctx.iface.index, addrs: () => this.extAddrs }),
      ownSubnet: ctx.lease.subnet,
      network,
      log,
    });
    dataplane.start();
    log.info(
      { dev: dataplane.tunName, address: `${formatIp4Net(ctx.lease.subnet).split('/')[0]}/32`, mtu: ctx.mtu, ...flavor.logFields },
      `${flavor.label} device ${dataplane.tunName} up`,
    );
  }

  private async refreshExtAddrs(): Promise<void> {
    if (!this.flavor.usesExtAddrs) return;
    this.extAddrs = await this.netlink().listAddrs(this.extIfindex);
  }

  async applyEvents(events: LeaseEvent[]): Promise<void> {
    const routes = this.routes;
    if (!routes) throw new Error(`${this.flavor.label} backend not started`);
    await this.refreshExtAddrs();
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
    return dataplaneStats(dataplane.counters(), dataplane.offloadRung, this.routes);
  }

  async stop(): Promise<void> {
    this.routes?.close();
    this.routes = null;
    // Close the fds but keep the persistent device and its routes, like flanneld keeps its device.
    this.dataplane?.close();
    this.dataplane = null;
  }
}
