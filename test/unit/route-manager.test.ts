import { vxlanLeaseMapper } from '../../src/backend/vxlan/mapping';
import t from 'tap';
import { formatIp4Net, parseIp4, parseIp4Net } from '../../src/subnet/ip4';
import { NetlinkError, RTPROT_KERNEL } from '../../src/netlink/rtnetlink';
import { RouteManager, type RouteManagerOptions } from '../../src/routes/route-manager';
import {
  FakeForwarding,
  FakeRouteTable,
  RecordingLog,
  added,
  changed,
  macFor,
  removed,
  route,
  udpLease,
  vxlanLease,
} from './route-helpers';

const IFINDEX = 7;

function setup(opts: Partial<RouteManagerOptions> = {}) {
  const calls: string[] = [];
  const table = new FakeRouteTable(IFINDEX, calls);
  const forwarding = new FakeForwarding(calls);
  const log = new RecordingLog();
  const mgr = new RouteManager({
    netlink: table,
    forwarding,
    devices: [{ ifindex: IFINDEX, exclusive: true }],
    map: vxlanLeaseMapper({ tunIfindex: IFINDEX }),
    ownSubnet: parseIp4Net('10.5.72.0/24'),
    network: parseIp4Net('10.5.0.0/16'),
    log,
    resyncIntervalMs: 0,
    ...opts,
  });
  return { mgr, table, forwarding, log, calls };
}

const batchTexts = (table: FakeRouteTable): string[][] => table.batches.map((b) => b.map((o) => `${o.kind} ${formatIp4Net(o.dst)}`));
const routeTexts = (mgr: RouteManager): string[] => mgr.routes().map(formatIp4Net);

t.test('added events become one batch of replaces; own subnet and non-VXLAN leases are ignored', async (t) => {
  const { mgr, table, forwarding, log } = setup();
  await mgr.applyEvents([
    added(vxlanLease('10.5.1.0/24')),
    added(udpLease('10.5.2.0/24')),
    added(vxlanLease('10.5.72.0/24')),
    added(vxlanLease('10.5.3.0/24', { publicIp: '192.0.2.33' })),
  ]);
  t.same(batchTexts(table), [['replace 10.5.1.0/24', 'replace 10.5.3.0/24']]);
  t.same(table.texts(), ['10.5.1.0/24', '10.5.3.0/24']);
  t.same(forwarding.subnets(), ['10.5.1.0/24', '10.5.3.0/24']);
  t.equal(forwarding.peers.get('10.5.3.0/24')?.publicIp, parseIp4('192.0.2.33'));
  t.equal(forwarding.peers.get('10.5.3.0/24')?.mac, macFor('10.5.3.0/24'));
  t.same(routeTexts(mgr), ['10.5.1.0/24', '10.5.3.0/24']);
  t.notOk(mgr.dirty);
  t.ok(log.at('debug').some((e) => e.msg === 'lease ignored by route manager' && (e.obj as { subnet: string }).subnet === '10.5.2.0/24'));
  t.same(log.at('warn'), []);
});

t.test('forwarding entry is set before the route is added and removed after the route is deleted', async (t) => {
  const { mgr, calls } = setup();
  const l = vxlanLease('10.5.1.0/24');
  await mgr.applyEvents([added(l)]);
  await mgr.applyEvents([removed(l)]);
  t.same(calls, ['setPeer 10.5.1.0/24', 'batch replace 10.5.1.0/24', 'batch delete 10.5.1.0/24', 'removePeer 10.5.1.0/24']);
  t.same(routeTexts(mgr), []);
});

t.test('a batch is coalesced per subnet', async (t) => {
  const { mgr, table, forwarding } = setup();
  const a = vxlanLease('10.5.1.0/24');
  const b = vxlanLease('10.5.2.0/24');
  await mgr.applyEvents([added(a), removed(a), added(b), added(b)]);
  t.same(batchTexts(table), [['replace 10.5.2.0/24']], 'added+removed of an unknown subnet needs no kernel op');
  t.same(forwarding.subnets(), ['10.5.2.0/24']);
});

t.test('changed lease (new VtepMAC) updates forwarding and re-asserts the route', async (t) => {
  const { mgr, table, forwarding } = setup();
  const before = vxlanLease('10.5.1.0/24');
  const after = vxlanLease('10.5.1.0/24', { mac: macFor('10.5.1.0/24', 5), publicIp: '192.0.2.77' });
  await mgr.applyEvents([added(before)]);
  await mgr.applyEvents([changed(after, before)]);
  t.equal(forwarding.peers.get('10.5.1.0/24')?.mac, macFor('10.5.1.0/24', 5));
  t.equal(forwarding.peers.get('10.5.1.0/24')?.publicIp, parseIp4('192.0.2.77'));
  t.same(batchTexts(table), [['replace 10.5.1.0/24'], ['replace 10.5.1.0/24']]);
});

t.test('a lease that stops being VXLAN loses its route and forwarding entry', async (t) => {
  const { mgr, table, forwarding } = setup();
  const v = vxlanLease('10.5.1.0/24');
  await mgr.applyEvents([added(v)]);
  await mgr.applyEvents([changed(udpLease('10.5.1.0/24'), v)]);
  t.same(table.texts(), []);
  t.same(forwarding.subnets(), []);
});

t.test('removed event for a subnet never routed causes no kernel op', async (t) => {
  const { mgr, table } = setup();
  await mgr.applyEvents([removed(udpLease('10.5.9.0/24')), removed(vxlanLease('10.5.72.0/24'))]);
  t.same(table.batches, []);
});

t.test('re-applying the same events is idempotent', async (t) => {
  const { mgr, table, forwarding, log } = setup();
  const evs = [added(vxlanLease('10.5.1.0/24')), added(vxlanLease('10.5.2.0/24'))];
  await mgr.applyEvents(evs);
  await mgr.applyEvents(evs);
  t.same(table.texts(), ['10.5.1.0/24', '10.5.2.0/24']);
  t.same(forwarding.subnets(), ['10.5.1.0/24', '10.5.2.0/24']);
  t.same(log.at('warn'), []);
  t.notOk(mgr.dirty);
});

t.test('reconcile removes stale and stray routes, adds missing ones, keeps kernel routes', async (t) => {
  const { mgr, table, forwarding } = setup();
  table.add(route('10.5.1.0/24')); // still wanted
  table.add(route('10.5.9.0/24')); // peer vanished while we were down
  table.add(route('10.5.1.0/24', { metric: 100 })); // stray duplicate
  table.add(route('10.5.50.0/24', { proto: 4 })); // hand-made
  table.add(route('10.5.72.0/24', { proto: RTPROT_KERNEL })); // follows an address; not ours
  await mgr.reconcile([vxlanLease('10.5.1.0/24'), vxlanLease('10.5.2.0/24'), vxlanLease('10.5.72.0/24'), udpLease('10.5.3.0/24')]);
  t.equal(table.batches.length, 1, 'one batch');
  t.same(table.texts(), ['10.5.1.0/24', '10.5.2.0/24', '10.5.72.0/24 proto 2']);
  t.same(forwarding.subnets(), ['10.5.1.0/24', '10.5.2.0/24']);
  t.same(routeTexts(mgr), ['10.5.1.0/24', '10.5.2.0/24']);
  t.notOk(mgr.dirty);
});

t.test('reconcile drops forwarding entries of peers that disappeared (relist after etcd reconnect)', async (t) => {
  const { mgr, table, forwarding, calls } = setup();
  await mgr.applyEvents([added(vxlanLease('10.5.1.0/24')), added(vxlanLease('10.5.2.0/24'))]);
  calls.length = 0;
  await mgr.reconcile([vxlanLease('10.5.2.0/24')]);
  t.same(table.texts(), ['10.5.2.0/24']);
  t.same(forwarding.subnets(), ['10.5.2.0/24']);
  t.same(calls, ['batch delete 10.5.1.0/24', 'removePeer 10.5.1.0/24'], 'nothing re-set for unchanged peers; route before forwarding');
});

t.test('reconcile in sync issues no kernel batch', async (t) => {
  const { mgr, table } = setup();
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  t.equal(table.batches.length, 1);
  t.equal(table.listCalls, 2);
});

t.test('a failing op is logged once, marks dirty, and is retried by the next reconcile', async (t) => {
  const { mgr, table, log } = setup();
  table.failOps.set('replace 10.5.2.0/24', 'ENETDOWN');
  await mgr.applyEvents([added(vxlanLease('10.5.1.0/24')), added(vxlanLease('10.5.2.0/24'))]);
  t.ok(mgr.dirty);
  t.same(routeTexts(mgr), ['10.5.1.0/24']);
  const warns = log.at('warn');
  t.equal(warns.length, 1);
  t.match(warns[0]!.msg, /replace route 10\.5\.2\.0\/24 dev fake: ENETDOWN; retrying/);
  t.type((warns[0]!.obj as { err: unknown }).err, NetlinkError);

  // Still failing: no second warning.
  await mgr.applyEvents([added(vxlanLease('10.5.2.0/24'))]);
  await mgr.reconcile([vxlanLease('10.5.1.0/24'), vxlanLease('10.5.2.0/24')]);
  t.equal(log.at('warn').length, 1, 'logged once');
  t.ok(mgr.dirty);

  table.failOps.clear();
  await mgr.reconcile([vxlanLease('10.5.1.0/24'), vxlanLease('10.5.2.0/24')]);
  t.notOk(mgr.dirty);
  t.same(table.texts(), ['10.5.1.0/24', '10.5.2.0/24']);
  t.ok(log.at('info').some((e) => /route 10\.5\.2\.0\/24: recovered/.test(e.msg)));
});

t.test('the resync timer retries a failed op without being asked', async (t) => {
  const { mgr, table } = setup({ resyncIntervalMs: 10, driftCheckTicks: 1000 });
  t.teardown(() => mgr.close());
  await mgr.reconcile([]);
  table.failOps.set('replace 10.5.2.0/24', 'ENETDOWN');
  await mgr.applyEvents([added(vxlanLease('10.5.2.0/24'))]);
  t.ok(mgr.dirty);
  table.failOps.clear();
  await waitFor(() => !mgr.dirty);
  t.same(table.texts(), ['10.5.2.0/24']);
});

t.test('the resync timer undoes external changes on drift-check ticks', async (t) => {
  const { mgr, table } = setup({ resyncIntervalMs: 5, driftCheckTicks: 2 });
  t.teardown(() => mgr.close());
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  table.routesByKey.clear(); // e.g. a link flap flushed the device's routes
  table.add(route('10.5.66.0/24'));
  await waitFor(() => table.texts().join() === '10.5.1.0/24');
  t.pass('restored');
});

t.test('a whole-batch failure does not throw, is logged once and retried', async (t) => {
  const { mgr, table, log } = setup();
  table.failBatch = new NetlinkError('open rtnetlink socket', 'for apply routes', 'EMFILE', 24, 'Too many open files');
  await mgr.applyEvents([added(vxlanLease('10.5.1.0/24'))]);
  t.ok(mgr.dirty);
  t.same(routeTexts(mgr), []);
  t.equal(log.at('warn').length, 1);
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  t.notOk(mgr.dirty);
  t.same(table.texts(), ['10.5.1.0/24']);
});

t.test('a failing route listing leaves the manager dirty and is retried', async (t) => {
  const { mgr, table, log } = setup();
  table.failList = new NetlinkError('list routes', 'of dev fake', 'EPERM', 1, 'Operation not permitted');
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  t.ok(mgr.dirty);
  t.equal(log.at('warn').length, 1);
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  t.notOk(mgr.dirty);
  t.same(table.texts(), ['10.5.1.0/24']);
});

t.test('a failing forwarding update is logged, marks dirty and is retried by reconcile', async (t) => {
  const { mgr, table, forwarding, log } = setup();
  forwarding.failSet.add('10.5.1.0/24');
  await mgr.applyEvents([added(vxlanLease('10.5.1.0/24'))]);
  t.ok(mgr.dirty);
  t.same(forwarding.subnets(), []);
  t.same(table.texts(), ['10.5.1.0/24'], 'the route is still programmed');
  t.match(log.at('warn')[0]?.msg ?? '', /cannot set forwarding entry/);
  forwarding.failSet.clear();
  await mgr.reconcile([vxlanLease('10.5.1.0/24')]);
  t.notOk(mgr.dirty);
  t.same(forwarding.subnets(), ['10.5.1.0/24']);
});

t.test('removal proceeds with the forwarding entry even when the route delete fails; the route is retried', async (t) => {
  const { mgr, table, forwarding } = setup();
  const l = vxlanLease('10.5.1.0/24');
  await mgr.applyEvents([added(l)]);
  table.failOps.set('delete 10.5.1.0/24', 'EPERM');
  await mgr.applyEvents([removed(l)]);
  t.same(forwarding.subnets(), []);
  t.ok(mgr.dirty);
  t.same(table.texts(), ['10.5.1.0/24']);
  table.failOps.clear();
  await mgr.reconcile([]);
  t.same(table.texts(), []);
  t.notOk(mgr.dirty);
});

t.test('concurrent calls are serialised in call order', async (t) => {
  const { mgr, table } = setup();
  const l = vxlanLease('10.5.1.0/24');
  const p1 = mgr.applyEvents([added(l)]);
  const p2 = mgr.reconcile([]);
  const p3 = mgr.applyEvents([added(vxlanLease('10.5.2.0/24'))]);
  await Promise.all([p1, p2, p3]);
  t.same(batchTexts(table), [['replace 10.5.1.0/24'], ['delete 10.5.1.0/24'], ['replace 10.5.2.0/24']]);
});

t.test('many failures are summarised instead of logged one by one', async (t) => {
  const { mgr, table, log } = setup();
  const leases = Array.from({ length: 30 }, (_, i) => vxlanLease(`10.5.${i + 1}.0/24`));
  for (const l of leases) table.failOps.set(`replace ${formatIp4Net(l.subnet)}`, 'ENETDOWN');
  await mgr.applyEvents(leases.map(added));
  const warns = log.at('warn');
  t.equal(warns.length, 11);
  t.match(warns[10]!.obj, { more: 20, failed: 30 });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}
