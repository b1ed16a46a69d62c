// The vxlan backend's data plane hooks: opens the userspace VXLAN data plane on a persistent TUN named
// like flannel's device (flannel.<VNI>), configures it as flannel configures flannel.N, and keeps kernel
// routes and the data plane's peer table in step with lease events. With DirectRouting, peers on our L2
// get a host-gw route (`<subnet> via <PublicIP> dev <external iface>`) instead (flannel-compat §5.6);
// the choice is made again for every event of the lease, so a changed PublicIP moves the route.
//
// The TUN is persistent on purpose: after kill -9 the device and its routes stay, so the kernel keeps
// routing overlay traffic to it and a restarted daemon only has to reattach and refill its peer table.
import type { Logger } from 'pino';
import { NativeRtnetlink, type Ip4Addr, type Rtnetlink } from '../../netlink/rtnetlink';
import { setupDevice } from '../../routes/device-setup';
import { RouteManager } from '../../routes/route-manager';
import { formatIp4Net } from '../../subnet/ip4';
import type { DataplaneSnapshot } from '../../ops/metrics';
import type { Lease, LeaseEvent } from '../../subnet/lease';
import { parseMac } from '../../subnet/lease-codec';
import { parseOffloadRequest } from '../../dataplane/offload';
import { VxlanDataplane, type DataplaneIoError } from '../../dataplane/vxlan-dataplane';
import type { DataPlaneContext, DataPlaneHooks } from '../backend';
import { dataplaneStats } from '../stats';
import { vxlanLeaseMapper } from './mapping';

export interface VxlanSettings {
  vni: number;
  /** UDP port listened on and sent to (Backend.Port, 0 → 8472). */
  port: number;
  directRouting: boolean;
}

export interface VxlanBackendOptions {
  settings: VxlanSettings;
  /** TUN name; "" means flannel.<VNI>. */
  tunName: string;
  /** Offload rung request (-offload): "auto" or a rung name (src/dataplane/offload.ts). Default auto. */
  offload?: string;
  log: Logger;
  /** Called when the data plane stops on a persistent I/O error; the daemon treats it as fatal. */
  onFatal(err: Error): void;
  netlink?: Rtnetlink;
}

export class VxlanBackend implements DataPlaneHooks {
  private dataplane: VxlanDataplane | null = null;
  private routes: RouteManager | null = null;
  private netlink: Rtnetlink | null = null;
  private extIfindex = 0;
  /** Addresses of the external interface, for DirectRouting's same-L2 test (refreshed per batch). */
  private extAddrs: Ip4Addr[] = [];
  /** Current peer leases by key: the first batch (the watcher's snapshot) is applied as a reconcile. */
  private readonly leases = new Map<string, Lease>();
  private reconciled = false;

  constructor(private readonly options: VxlanBackendOptions) {}

  get dataplaneInstance(): VxlanDataplane | null {
    return this.dataplane;
  }

  async start(ctx: DataPlaneContext): Promise<void> {
    const { log, settings } = this.options;
    const network = ctx.config.network;
    if (!network) throw new Error('VXLAN backend needs an IPv4 Network');
    const netlink = this.options.netlink ?? new NativeRtnetlink();
    this.netlink = netlink;
    this.extIfindex = ctx.iface.index;
    const tunName = this.options.tunName !== '' ? this.options.tunName : `flannel.${settings.vni}`;

    const dataplane = VxlanDataplane.open({
      tunName,
      vni: settings.vni,
      port: settings.port,
      localMac: parseMac(ctx.vtepMac),
      persist: true,
      offload: parseOffloadRequest(this.options.offload ?? 'auto'),
      log,
      onFatal: (err: DataplaneIoError) => this.options.onFatal(err),
    });
    this.dataplane = dataplane;

    const device = await setupDevice({ netlink, ifname: dataplane.tunName, subnet: ctx.lease.subnet, network, mtu: ctx.mtu, log });
    if (settings.directRouting) await this.refreshExtAddrs();
    this.routes = new RouteManager({
      netlink,
      forwarding: dataplane,
      // The external interface is managed too: DirectRouting routes live there (and ones a previous
      // run with DirectRouting left behind are removed); only routes of our own protocol are touched.
      devices: [
        { ifindex: device.ifindex, exclusive: true },
        { ifindex: ctx.iface.index, exclusive: false },
      ],
      map: vxlanLeaseMapper({
        tunIfindex: device.ifindex,
        ...(settings.directRouting ? { directRouting: { extIfindex: ctx.iface.index, extAddrs: () => this.extAddrs } } : {}),
      }),
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
        vni: settings.vni,
        directRouting: settings.directRouting,
      },
      `VXLAN device ${dataplane.tunName} up`,
    );
  }

  private async refreshExtAddrs(): Promise<void> {
    if (this.netlink === null) return;
    this.extAddrs = await this.netlink.listAddrs(this.extIfindex);
  }

  async applyEvents(events: LeaseEvent[]): Promise<void> {
    const routes = this.routes;
    if (!routes) throw new Error('VXLAN backend not started');
    if (this.options.settings.directRouting) await this.refreshExtAddrs();
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
    // Close the fds but keep the persistent device and its routes, like flanneld keeps flannel.N.
    this.dataplane?.close();
    this.dataplane = null;
  }
}
