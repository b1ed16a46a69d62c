// host-gw data plane hooks: only kernel routes, on the external interface, which is shared with the
// host: our routes carry our own protocol and only those are ever removed (route-manager.ts). The
// kernel forwards the packets; there is no device and no userspace data plane.
//
// A peer whose PublicIP is not on our L2 segment cannot be reached by a host-gw route (the kernel
// refuses an off-link gateway); such a peer is refused: one warning naming it and what to do, the
// tsflanneld_peers_refused gauge, and no route at all. Other peers are unaffected.
import type { Log } from '../../ops/log';
import { NativeRtnetlink, type Ip4Addr, type Rtnetlink } from '../../netlink/rtnetlink';
import { RouteManager } from '../../routes/route-manager';
import { leasePublicIp, type LeaseMapper } from '../../routes/route-diff';
import { formatIp4 } from '../../subnet/ip4';
import type { DataplaneSnapshot } from '../../ops/metrics';
import type { Lease, LeaseEvent } from '../../subnet/lease';
import type { DataPlaneContext, DataPlaneHooks, LeaseMapping } from '../backend';
import { describeAddrs, isOnLink } from '../l2';
import { dataplaneStats } from '../stats';

export interface HostGwBackendOptions {
  log: Log;
  netlink?: Rtnetlink;
}

export class HostGwBackend implements DataPlaneHooks {
  private routes: RouteManager | null = null;
  private netlink: Rtnetlink | null = null;
  private extIfindex = 0;
  private extName = '';
  private extAddrs: Ip4Addr[] = [];
  private readonly leases = new Map<string, Lease>();
  private reconciled = false;

  constructor(private readonly options: HostGwBackendOptions) {}

  async start(ctx: DataPlaneContext): Promise<void> {
    const network = ctx.config.network;
    if (!network) throw new Error('host-gw backend needs an IPv4 Network');
    this.netlink = this.options.netlink ?? new NativeRtnetlink();
    this.extIfindex = ctx.iface.index;
    this.extName = ctx.iface.name;
    this.extAddrs = await this.netlink.listAddrs(this.extIfindex);
    this.routes = new RouteManager({
      netlink: this.netlink,
      devices: [{ ifindex: ctx.iface.index, exclusive: false }],
      map: this.mapper(),
      ownSubnet: ctx.lease.subnet,
      network,
      log: this.options.log,
    });
    this.options.log.info(
      { dev: ctx.iface.name, addresses: describeAddrs(this.extAddrs) },
      `host-gw: routing peer subnets via their public IPs on ${ctx.iface.name}`,
    );
  }

  private mapper(): LeaseMapper {
    return (lease): LeaseMapping => {
      if (lease.attrs.BackendType !== 'host-gw') return { ignored: 'not-host-gw' };
      const publicIp = leasePublicIp(lease);
      if (publicIp === null) return { ignored: 'bad-public-ip' };
      if (!isOnLink(publicIp, this.extAddrs)) {
        return {
          refused:
            `its PublicIP ${formatIp4(publicIp)} is not on the L2 network of ${this.extName} (${describeAddrs(this.extAddrs)}), ` +
            'so a host-gw route via it cannot work; put all host-gw nodes on one L2 segment, or use Backend.Type "vxlan" with "DirectRouting": true',
        };
      }
      return { plan: { route: { dst: lease.subnet, gateway: publicIp, ifindex: this.extIfindex }, forward: null } };
    };
  }

  async applyEvents(events: LeaseEvent[]): Promise<void> {
    const routes = this.routes;
    if (!routes || !this.netlink) throw new Error('host-gw backend not started');
    this.extAddrs = await this.netlink.listAddrs(this.extIfindex);
    for (const ev of events) {
      if (ev.type === 'removed') this.leases.delete(ev.lease.key);
      else this.leases.set(ev.lease.key, ev.lease);
    }
    if (!this.reconciled) {
      this.reconciled = true;
      await routes.reconcile([...this.leases.values()]);
      return;
    }
    await routes.applyEvents(events);
  }

  stats(): DataplaneSnapshot | null {
    if (!this.routes) return null;
    // No userspace data plane: the kernel forwards (the offload-rung gauge says so).
    return dataplaneStats(null, 'kernel', this.routes);
  }

  async stop(): Promise<void> {
    // The routes stay (the lease stays too), like flanneld's.
    this.routes?.close();
    this.routes = null;
  }
}
