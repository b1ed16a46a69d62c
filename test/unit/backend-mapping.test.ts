// Lease → route/forwarding mapping of the backends whose mapping is a pure function: vxlan (with and
// without DirectRouting) and udp. Route-manager behaviour for a route moving devices.
import t from 'tap';
import { udpLeaseMapper } from '../../src/backend/udp/mapping';
import { vxlanLeaseMapper } from '../../src/backend/vxlan/mapping';
import { RTPROT_BOOT } from '../../src/netlink/rtnetlink';
import { RTPROT_TSFLANNELD } from '../../src/routes/route-diff';
import { RouteManager } from '../../src/routes/route-manager';
import { formatIp4, formatIp4Net, parseIp4, parseIp4Net } from '../../src/subnet/ip4';
import type { Lease } from '../../src/subnet/lease';
import { added, changed, RecordingLog, udpLease, vxlanLease } from './route-helpers';

const TUN = 7;
const EXT = 2;
const extAddrs = [{ ip: parseIp4('192.0.2.11'), prefixLen: 24 }];

const describe = (d: ReturnType<ReturnType<typeof vxlanLeaseMapper>>): string =>
  'plan' in d
    ? `${formatIp4Net(d.plan.route.dst)}${d.plan.route.gateway !== 0 ? ` via ${formatIp4(d.plan.route.gateway)}` : ''} #${d.plan.route.ifindex}` +
      (d.plan.forward ? ` fwd ${formatIp4(d.plan.forward.publicIp)}` : '')
    : 'ignored' in d
      ? `ignored ${d.ignored}`
      : `refused ${d.refused}`;

t.test('vxlan without DirectRouting: every peer into the TUN', async (t) => {
  const map = vxlanLeaseMapper({ tunIfindex: TUN });
  t.equal(describe(map(vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.12' }))), '10.5.3.0/24 #7 fwd 192.0.2.12');
  t.equal(describe(map(udpLease('10.5.4.0/24'))), 'ignored not-vxlan');
});

t.test('vxlan DirectRouting: same-L2 peers via their PublicIP on the external interface, others into the TUN', async (t) => {
  const map = vxlanLeaseMapper({ tunIfindex: TUN, directRouting: { extIfindex: EXT, extAddrs: () => extAddrs } });
  t.equal(describe(map(vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.12' }))), '10.5.3.0/24 via 192.0.2.12 #2 fwd 192.0.2.12');
  t.equal(describe(map(vxlanLease('10.5.4.0/24', { publicIp: '198.51.100.13' }))), '10.5.4.0/24 #7 fwd 198.51.100.13');
});

t.test('udp: leases without BackendType (or "udp") into the TUN with a zero MAC; other backends ignored', async (t) => {
  const map = udpLeaseMapper(TUN);
  const bare: Lease = { ...udpLease('10.5.5.0/24'), attrs: { PublicIP: '192.0.2.15', PublicIPv6: null } };
  const d = map(bare);
  t.equal(describe(d), '10.5.5.0/24 #7 fwd 192.0.2.15');
  if ('plan' in d) t.same([...d.plan.forward!.vtepMac], [0, 0, 0, 0, 0, 0]);
  t.equal(describe(map(udpLease('10.5.6.0/24'))), '10.5.6.0/24 #7 fwd 192.0.2.200');
  t.equal(describe(map(vxlanLease('10.5.7.0/24'))), 'ignored not-udp');
  t.equal(describe(map({ ...bare, attrs: { ...bare.attrs, BackendType: 'host-gw' } })), 'ignored not-udp');
});

/** Route table of two devices with kernel replace semantics (dst+metric unique across devices). */
class TwoDeviceTable {
  readonly routes = new Map<string, { ifindex: number; gateway: number; proto: number }>();
  async listRoutes(ifindex: number) {
    return [...this.routes.entries()]
      .filter(([, r]) => r.ifindex === ifindex)
      .map(([dst, r]) => ({
        dst: parseIp4Net(dst),
        gateway: r.gateway,
        proto: r.proto,
        scope: r.gateway === 0 ? 253 : 0,
        metric: 0,
        onlink: false,
      }));
  }
  async applyRoutes(
    ifindex: number,
    ops: readonly { kind: string; dst: { ip: number; prefixLen: number }; gateway?: number }[],
    proto = RTPROT_BOOT,
  ) {
    for (const o of ops) {
      const key = formatIp4Net(o.dst);
      if (o.kind === 'replace') this.routes.set(key, { ifindex, gateway: o.gateway ?? 0, proto });
      else if (this.routes.get(key)?.ifindex === ifindex) this.routes.delete(key);
    }
    return ops.map(() => null);
  }
}

t.test('DirectRouting: a changed PublicIP moves the route between the external interface and the TUN', async (t) => {
  const table = new TwoDeviceTable();
  const mgr = new RouteManager({
    netlink: table,
    devices: [
      { ifindex: TUN, exclusive: true },
      { ifindex: EXT, exclusive: false },
    ],
    map: vxlanLeaseMapper({ tunIfindex: TUN, directRouting: { extIfindex: EXT, extAddrs: () => extAddrs } }),
    ownSubnet: parseIp4Net('10.5.72.0/24'),
    network: parseIp4Net('10.5.0.0/16'),
    log: new RecordingLog(),
    resyncIntervalMs: 0,
  });
  const direct = vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.12' });
  await mgr.reconcile([direct]);
  t.same(table.routes.get('10.5.3.0/24'), { ifindex: EXT, gateway: parseIp4('192.0.2.12'), proto: RTPROT_TSFLANNELD });
  const routed = vxlanLease('10.5.3.0/24', { publicIp: '198.51.100.12' });
  await mgr.applyEvents([changed(routed, direct)]);
  t.same(table.routes.get('10.5.3.0/24'), { ifindex: TUN, gateway: 0, proto: RTPROT_BOOT }, 'moved onto the overlay');
  await mgr.applyEvents([changed(direct, routed)]);
  t.same(table.routes.get('10.5.3.0/24'), { ifindex: EXT, gateway: parseIp4('192.0.2.12'), proto: RTPROT_TSFLANNELD }, 'and back');
  t.equal(mgr.routeSpecs().length, 1);
  // An operator's route on the shared interface is never removed by a reconcile.
  table.routes.set('10.9.0.0/16', { ifindex: EXT, gateway: parseIp4('192.0.2.1'), proto: RTPROT_BOOT });
  await mgr.reconcile([direct]);
  t.ok(table.routes.has('10.9.0.0/16'), "operator's route kept");
  await mgr.applyEvents([added(vxlanLease('10.5.4.0/24', { publicIp: '198.51.100.14' }))]);
  t.same(table.routes.get('10.5.4.0/24'), { ifindex: TUN, gateway: 0, proto: RTPROT_BOOT });
  mgr.close();
});
