// The VXLAN backend as the daemon sees it (DataPlaneHooks): opens the userspace data plane on a
// persistent TUN named like flannel's device, configures it as flannel configures flannel.N, and keeps
// kernel routes and the data plane's peer table in step with lease events.
//
// The TUN is persistent on purpose: after kill -9 the device and its routes stay, so the kernel keeps
// routing overlay traffic to it and a restarted daemon only has to reattach and refill its peer table.
import type { Logger } from 'pino';
import { NativeRtnetlink, type Rtnetlink } from '../netlink/rtnetlink';
import { setupDevice } from '../routes/device-setup';
import { RouteManager } from '../routes/route-manager';
import { effectivePort } from '../subnet/config';
import { formatIp4, formatIp4Net } from '../subnet/ip4';
import type { DataplaneSnapshot, PeerStats } from '../ops/metrics';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { parseMac } from '../subnet/lease-codec';
import { parseOffloadRequest } from '../dataplane/offload';
import { VxlanDataplane } from '../dataplane/vxlan-dataplane';
import type { DataPlaneContext, DataPlaneHooks } from './daemon';

export interface VxlanBackendOptions {
  /** TUN name; "" means flannel.<VNI>. */
  tunName: string;
  /** Offload rung request (-offload): "auto" or a rung name (src/dataplane/offload.ts). Default auto. */
  offload?: string;
  /** Forwarding threads (-dataplane-threads); default one per CPU, at most 8. */
  threads?: number;
  log: Logger;
  /** Called when the data plane stops on a persistent I/O error; the daemon treats it as fatal. */
  onFatal(err: Error): void;
  netlink?: Rtnetlink;
}

export class VxlanBackend implements DataPlaneHooks {
  private dataplane: VxlanDataplane | null = null;
  private routes: RouteManager | null = null;
  /** Current peer leases by key: the first batch (the watcher's snapshot) is applied as a reconcile. */
  private readonly leases = new Map<string, Lease>();
  private reconciled = false;

  constructor(private readonly options: VxlanBackendOptions) {}

  get dataplaneInstance(): VxlanDataplane | null {
    return this.dataplane;
  }

  async start(ctx: DataPlaneContext): Promise<void> {
    const { log } = this.options;
    const backend = ctx.config.backend;
    const network = ctx.config.network;
    if (!network) throw new Error('VXLAN backend needs an IPv4 Network');
    const netlink = this.options.netlink ?? new NativeRtnetlink();
    const tunName = this.options.tunName !== '' ? this.options.tunName : `flannel.${backend.vni}`;

    const dataplane = VxlanDataplane.open({
      tunName,
      vni: backend.vni,
      port: effectivePort(backend),
      localMac: parseMac(ctx.vtepMac),
      persist: true,
      offload: parseOffloadRequest(this.options.offload ?? 'auto'),
      threads: this.options.threads,
      log,
      onFatal: (err: Error) => this.options.onFatal(err),
    });
    this.dataplane = dataplane;

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
