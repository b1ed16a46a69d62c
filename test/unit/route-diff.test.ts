import t from 'tap';
import fc from 'fast-check';
import { formatIp4Net, ip4Net, parseIp4, parseIp4Net, type Ip4Net } from '../../src/subnet/ip4';
import { RTPROT_BOOT, RTPROT_KERNEL, RT_SCOPE_UNIVERSE, type KernelRoute } from '../../src/netlink/rtnetlink';
import { RTPROT_TSFLANNELD } from '../../src/routes/route-diff';
import { formatMac } from '../../src/subnet/lease-codec';
import {
  decideLease,
  diffRoutes,
  eventsToChanges,
  leasesToPlans,
  netKey,
  peersEqual,
  type DeviceRoutes,
  type ManagedDevice,
  type Peer,
  type PeerScope,
  type RouteSpec,
} from '../../src/routes/route-diff';
import { vxlanLeaseMapper } from '../../src/backend/vxlan/mapping';
import type { Lease } from '../../src/subnet/lease';
import { FakeRouteTable, added, changed, macFor, removed, route, udpLease, vxlanLease } from './route-helpers';

const scope: PeerScope = { ownSubnet: parseIp4Net('10.5.72.0/24'), network: parseIp4Net('10.5.0.0/16') };
const texts = (specs: readonly RouteSpec[]): string[] => specs.map((s) => formatIp4Net(s.dst)).sort();
const MAP = vxlanLeaseMapper({ tunIfindex: 7 });
const TUN: ManagedDevice = { ifindex: 7, exclusive: true };
const spec = (net: Ip4Net): RouteSpec => ({ dst: net, gateway: 0, ifindex: 7 });
const on = (routes: KernelRoute[]): DeviceRoutes[] => [{ device: TUN, routes }];

/** The vxlan mapping seen as "peer or ignored" (what these tests check). */
function leaseToPeer(l: Lease, s: PeerScope): { peer: Peer } | { ignored: string } | { refused: string } {
  const d = decideLease(l, s, MAP);
  if ('plan' in d) return { peer: d.plan.forward! };
  return d;
}

t.test('leaseToPeer: a VXLAN lease becomes a peer with parsed IP, MAC and VNI', async (t) => {
  const d = leaseToPeer(vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.3', mac: 'AE:12:34:56:78:9A', vni: 1 }), scope);
  if (!('peer' in d)) throw new Error(`not a peer: ${JSON.stringify(d)}`);
  t.equal(formatIp4Net(d.peer.subnet), '10.5.3.0/24');
  t.equal(d.peer.publicIp, parseIp4('192.0.2.3'));
  t.equal(formatMac(d.peer.vtepMac), 'ae:12:34:56:78:9a');
  t.equal(d.peer.vni, 1);
});

t.test('leaseToPeer: ignores own subnet, other backends, bad backend data, bad IPs, outside Network', async (t) => {
  t.same(leaseToPeer(vxlanLease('10.5.72.0/24'), scope), { ignored: 'own-subnet' });
  t.same(leaseToPeer(udpLease('10.5.3.0/24'), scope), { ignored: 'not-vxlan' });
  t.same(leaseToPeer(vxlanLease('10.5.3.0/24', { mac: 'nonsense' }), scope), { ignored: 'bad-backend-data' });
  const noData = vxlanLease('10.5.3.0/24');
  t.same(leaseToPeer({ ...noData, attrs: { ...noData.attrs, BackendData: undefined } }, scope), { ignored: 'bad-backend-data' });
  t.same(leaseToPeer(vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.300' }), scope), { ignored: 'bad-public-ip' });
  t.same(leaseToPeer(vxlanLease('10.6.3.0/24'), scope), { ignored: 'outside-network' });
  t.same(leaseToPeer(vxlanLease('10.5.0.0/16'), scope), { ignored: 'outside-network' }, 'the Network itself is no peer');
  // Without a Network only the default route is refused.
  t.same(leaseToPeer(vxlanLease('0.0.0.0/0'), { ownSubnet: scope.ownSubnet }), { ignored: 'outside-network' });
  t.ok('peer' in leaseToPeer(vxlanLease('10.6.3.0/24'), { ownSubnet: scope.ownSubnet }));
});

t.test('eventsToChanges: one change per subnet, last event wins, ordered by last event', async (t) => {
  const a = vxlanLease('10.5.1.0/24');
  const b = vxlanLease('10.5.2.0/24');
  const b2 = vxlanLease('10.5.2.0/24', { mac: macFor('10.5.2.0/24', 9) });
  const c = vxlanLease('10.5.3.0/24');
  const { changes, ignored } = eventsToChanges([added(a), added(b), added(c), removed(a), changed(b2, b)], scope, MAP);
  t.same(
    changes.map((ch) =>
      ch.kind === 'set'
        ? `set ${formatIp4Net(ch.plan.route.dst)} ${formatMac(ch.plan.forward!.vtepMac)}`
        : `remove ${formatIp4Net(ch.subnet)}`,
    ),
    ['set 10.5.3.0/24 0a:00:0a:05:03:00', 'remove 10.5.1.0/24', 'set 10.5.2.0/24 0a:09:0a:05:02:00'],
  );
  t.same(ignored, []);
});

t.test('eventsToChanges: unusable leases map to remove (a lease can stop being VXLAN); own subnet to nothing', async (t) => {
  const { changes, ignored } = eventsToChanges(
    [added(udpLease('10.5.4.0/24')), added(vxlanLease('10.5.72.0/24')), removed(vxlanLease('10.5.72.0/24'))],
    scope,
    MAP,
  );
  t.same(
    changes.map((ch) => `${ch.kind} ${formatIp4Net(ch.kind === 'set' ? ch.plan.route.dst : ch.subnet)}`),
    ['remove 10.5.4.0/24', 'remove 10.5.72.0/24'],
    'a removed event is passed on as is; the manager drops removes of subnets it never had',
  );
  t.same(
    ignored.map((i) => `${formatIp4Net(i.lease.subnet)} ${i.reason}`),
    ['10.5.4.0/24 not-vxlan', '10.5.72.0/24 own-subnet'],
  );
});

t.test('leasesToPlans keys plans by netKey and reports ignored leases', async (t) => {
  const { plans, ignored } = leasesToPlans([vxlanLease('10.5.1.0/24'), udpLease('10.5.2.0/24'), vxlanLease('10.5.72.0/24')], scope, MAP);
  t.same([...plans.keys()], [netKey(parseIp4Net('10.5.1.0/24'))]);
  t.same(
    ignored.map((i) => i.reason),
    ['not-vxlan', 'own-subnet'],
  );
});

t.test('peersEqual compares subnet, public IP, VNI and MAC', async (t) => {
  const p = (l: ReturnType<typeof vxlanLease>) => {
    const d = leaseToPeer(l, scope);
    if (!('peer' in d)) throw new Error('not a peer');
    return d.peer;
  };
  t.ok(peersEqual(p(vxlanLease('10.5.1.0/24')), p(vxlanLease('10.5.1.0/24'))));
  t.notOk(peersEqual(p(vxlanLease('10.5.1.0/24')), p(vxlanLease('10.5.1.0/24', { mac: macFor('10.5.1.0/24', 1) }))));
  t.notOk(peersEqual(p(vxlanLease('10.5.1.0/24')), p(vxlanLease('10.5.1.0/24', { publicIp: '192.0.2.99' }))));
  t.notOk(peersEqual(p(vxlanLease('10.5.1.0/24')), p(vxlanLease('10.5.1.0/24', { vni: 2 }))));
});

t.test('netKey is unique across address and prefix length', async (t) => {
  t.not(netKey(parseIp4Net('10.5.0.0/16')), netKey(parseIp4Net('10.5.0.0/24')));
  t.not(netKey(parseIp4Net('255.255.255.255/32')), netKey(parseIp4Net('255.255.255.254/32')));
  t.ok(Number.isSafeInteger(netKey(parseIp4Net('255.255.255.255/32'))));
});

t.test('diffRoutes: missing → replace, stale → delete, kernel routes untouched', async (t) => {
  const desired = ['10.5.1.0/24', '10.5.2.0/24', '10.5.3.0/24'].map(parseIp4Net).map(spec);
  const actual: KernelRoute[] = [route('10.5.1.0/24'), route('10.5.9.0/24'), route('10.5.72.0/24', { proto: RTPROT_KERNEL })];
  const d = diffRoutes(desired, on(actual));
  t.same(texts(d.replace), ['10.5.2.0/24', '10.5.3.0/24']);
  t.same(
    d.delete.map((r) => formatIp4Net(r.route.dst)),
    ['10.5.9.0/24'],
  );
});

t.test('diffRoutes: a desired prefix with the wrong shape is replaced in place, extra metrics are deleted', async (t) => {
  const desired = ['10.5.1.0/24', '10.5.2.0/24', '10.5.3.0/24', '10.5.4.0/24'].map(parseIp4Net).map(spec);
  const actual: KernelRoute[] = [
    route('10.5.1.0/24', { gateway: parseIp4('10.5.1.0'), scope: RT_SCOPE_UNIVERSE, onlink: true }), // flannel.1 style
    route('10.5.2.0/24', { proto: 4 }), // added by hand as proto static
    route('10.5.3.0/24'),
    route('10.5.3.0/24', { metric: 100 }),
    route('10.5.4.0/24', { metric: 50 }),
  ];
  const d = diffRoutes(desired, on(actual));
  t.same(texts(d.replace), ['10.5.1.0/24', '10.5.2.0/24', '10.5.4.0/24']);
  t.same(d.delete.map(({ route: r }) => `${formatIp4Net(r.dst)} metric ${r.metric}`).sort(), [
    '10.5.3.0/24 metric 100',
    '10.5.4.0/24 metric 50',
  ]);
});

t.test('diffRoutes: nothing to do when in sync', async (t) => {
  const desired = ['10.5.1.0/24', '10.5.2.0/24'].map(parseIp4Net).map(spec);
  const d = diffRoutes(desired, on([route('10.5.1.0/24'), route('10.5.2.0/24')]));
  t.same(d, { replace: [], delete: [] });
});

// Property: applying the diff with kernel semantics (FakeRouteTable) yields exactly the desired
// routes, all in our shape, plus the untouched kernel routes; a second diff is empty.
t.test('diffRoutes converges (property)', async (t) => {
  const subnet = fc.integer({ min: 0, max: 40 }).map((i) => ip4Net(parseIp4('10.5.0.0') + i * 256, 24));
  const actualRoute = fc.record({
    dst: subnet,
    metric: fc.constantFrom(0, 0, 0, 100),
    proto: fc.constantFrom(RTPROT_BOOT, RTPROT_BOOT, 4, RTPROT_KERNEL),
    gateway: fc.constantFrom(0, 0, parseIp4('10.5.0.1')),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(subnet, { maxLength: 30 }), fc.array(actualRoute, { maxLength: 30 }), async (want, have) => {
      const table = new FakeRouteTable(7);
      for (const h of have) table.add(route(formatIp4Net(h.dst), { metric: h.metric, proto: h.proto, gateway: h.gateway }));
      const kernelOnes = [...table.routesByKey.values()]
        .filter((r) => r.proto === RTPROT_KERNEL)
        .map((r) => `${formatIp4Net(r.dst)}@${r.metric}`);
      const d = diffRoutes(want.map(spec), on(await table.listRoutes(7)));
      await table.applyRoutes(7, [
        ...d.replace.map((s) => ({ kind: 'replace' as const, dst: s.dst })),
        ...d.delete.map(({ route: r }) => ({ kind: 'delete' as const, dst: r.dst, gateway: r.gateway, metric: r.metric })),
      ]);
      const after = await table.listRoutes(7);
      const ours = after.filter((r) => r.proto !== RTPROT_KERNEL);
      const kernelAfter = after.filter((r) => r.proto === RTPROT_KERNEL).map((r) => `${formatIp4Net(r.dst)}@${r.metric}`);
      // A kernel route at metric 0 of a wanted prefix is overwritten by the replace; others stay.
      const wantKeys = new Set(want.map(formatIp4Net));
      const expectKernel = kernelOnes.filter((k) => !(wantKeys.has(k.split('@')[0]!) && k.endsWith('@0')));
      if (JSON.stringify(kernelAfter.sort()) !== JSON.stringify(expectKernel.sort())) return false;
      if (JSON.stringify(ours.map((r) => formatIp4Net(r.dst)).sort()) !== JSON.stringify([...wantKeys].sort())) return false;
      if (!ours.every((r) => r.metric === 0 && r.gateway === 0 && r.proto === RTPROT_BOOT)) return false;
      const again = diffRoutes(want.map(spec), on(after));
      return again.replace.length === 0 && again.delete.length === 0;
    }),
    { numRuns: 300 },
  );
  t.pass('converged');
});

t.test('diffRoutes on a shared device: only routes of our protocol are ours; a route moves device by replace', async (t) => {
  const EXT: ManagedDevice = { ifindex: 2, exclusive: false };
  const gw = parseIp4('192.0.2.12');
  const desired: RouteSpec[] = [
    { dst: parseIp4Net('10.5.1.0/24'), gateway: gw, ifindex: 2 }, // DirectRouting peer
    { dst: parseIp4Net('10.5.2.0/24'), gateway: 0, ifindex: 7 }, // overlay peer
  ];
  const d = diffRoutes(desired, [
    { device: TUN, routes: [route('10.5.1.0/24')] }, // the peer was on the overlay before
    {
      device: EXT,
      routes: [
        route('10.5.2.0/24', { gateway: gw, scope: RT_SCOPE_UNIVERSE, proto: RTPROT_TSFLANNELD }), // was direct before
        route('10.5.9.0/24', { gateway: gw, scope: RT_SCOPE_UNIVERSE, proto: RTPROT_TSFLANNELD }), // stale, ours
        route('10.9.0.0/16', { gateway: gw, scope: RT_SCOPE_UNIVERSE, proto: RTPROT_BOOT }), // the operator's
        route('0.0.0.0/0', { gateway: parseIp4('192.0.2.1'), scope: RT_SCOPE_UNIVERSE, proto: 16 }), // DHCP default
      ],
    },
  ]);
  t.same(texts(d.replace), ['10.5.1.0/24', '10.5.2.0/24'], 'both peers are replaced onto their new device');
  t.same(
    d.delete.map((x) => `${formatIp4Net(x.route.dst)} #${x.ifindex}`),
    ['10.5.9.0/24 #2'],
    "only our stale route on the shared device goes; the operator's and the default route stay",
  );
  const inSync = diffRoutes(desired, [
    { device: TUN, routes: [route('10.5.2.0/24')] },
    { device: EXT, routes: [route('10.5.1.0/24', { gateway: gw, scope: RT_SCOPE_UNIVERSE, proto: RTPROT_TSFLANNELD })] },
  ]);
  t.same(inSync, { replace: [], delete: [] });
});
