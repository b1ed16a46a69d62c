// Data plane hooks shared by the backends whose packets our userspace data plane carries (vxlan, udp):
// open the data plane on a persistent TUN named like flannel's device, configure the device as flannel
// does (address <lease subnet IP>/32, MTU, up), and keep kernel routes and the data plane's peer table
// in step with lease events through the route manager. What differs per backend (encapsulation, device
// name, lease → route/peer mapping) comes in a TunFlavor from the plug-in.
//
// The TUN is persistent on purpose: after kill -9 the device and its routes stay, so the kernel keeps
// routing overlay traffic to it and a restarted daemon only has to reattach and refill its peer table.
import type { Logger } from 'pino';
import { NativeRtnetlink, type Ip4Addr, type Rtnetlink } from '../netlink/rtnetlink';
import { setupDevice } from '../routes/device-setup';
import { RouteManager } from '../routes/route-manager';
import type { LeaseMapper } from '../routes/route-diff';
import { formatIp4Net } from '../subnet/ip4';
import type { DataplaneSnapshot } from '../ops/metrics';
import type { Lease, LeaseEvent } from '../subnet/lease';
import type { VxlanDataplane } from '../dataplane/vxlan-dataplane';
import type { DataPlaneContext, DataPlaneHooks } from './backend';
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
  /** Opens the data plane on the TUN (the device is configured afterwards). */
  open(tunName: string, ctx: DataPlaneContext, onFatal: (err: Error) => void): VxlanDataplane;
  mapper(tunIfindex: number, ext: ExtLink): LeaseMapper;
}

export interface TunBackendOptions {
  /** -tun-name; "" = flavor.defaultTunName. */
  tunName: string;
  log: Logger;
  /** Called when the data plane stops on a persistent I/O error; the daemon treats it as fatal. */
  onFatal(err: Error): void;
  netlink?: Rtnetlink;
}

export class TunBackend implements DataPlaneHooks {
  private dataplane: VxlanDataplane | null = null;
  private routes: RouteManager | null = null;
  private netlink: Rtnetlink | null = null;
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

  async start(ctx: DataPlaneContext): Promise<void> {
    const { log } = this.options;
    const flavor = this.flavor;
    const network = ctx.config.network;
    if (!network) throw new Error(`${flavor.label} backend needs an IPv4 Network`);
    const netlink = this.options.netlink ?? new NativeRtnetlink();
    this.netlink = netlink;
    this.extIfindex = ctx.iface.index;
    const tunName = this.options.tunName !== '' ? this.options.tunName : flavor.defaultTunName;

    const dataplane = flavor.open(tunName, ctx, (err) => this.options.onFatal(err));
    this.dataplane = dataplane;

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
    if (this.netlink === null || !this.flavor.usesExtAddrs) return;
    this.extAddrs = await this.netlink.listAddrs(this.extIfindex);
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
