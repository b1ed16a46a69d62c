import t from 'tap';
import { parseIp4Net } from '../../src/subnet/ip4';
import type { Lease, LeaseEvent } from '../../src/subnet/lease';
import { resetLeases, updateLeases } from '../../src/subnet/lease-diff';

const lease = (key: string, mac: string, etcdLeaseId = '7', modRevision = '1'): Lease => ({
  key,
  subnet: parseIp4Net(key.replace('-', '/')),
  ipv6Subnet: null,
  attrs: { PublicIP: '192.0.2.1', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } },
  etcdLeaseId,
  modRevision,
});
const own = (l: Lease): boolean => l.key === '10.5.1.0-24';
const summary = (events: LeaseEvent[]): string[] => events.map((e) => `${e.type} ${e.lease.key}`);

t.test('reset: unseen added (in key order), known with new attrs changed, missing removed, own skipped', async (t) => {
  const view = new Map<string, Lease>();
  const first = resetLeases(
    view,
    [lease('10.5.3.0-24', 'aa:00:00:00:00:03'), lease('10.5.2.0-24', 'aa:00:00:00:00:02'), lease('10.5.1.0-24', 'aa:00:00:00:00:01')],
    own,
  );
  t.same(summary(first), ['added 10.5.2.0-24', 'added 10.5.3.0-24']);
  t.same([...view.keys()].sort(), ['10.5.2.0-24', '10.5.3.0-24']);

  const second = resetLeases(view, [lease('10.5.2.0-24', 'aa:00:00:00:00:22'), lease('10.5.4.0-24', 'aa:00:00:00:00:04')], own);
  t.same(summary(second), ['changed 10.5.2.0-24', 'added 10.5.4.0-24', 'removed 10.5.3.0-24']);
  const changed = second[0]!;
  t.equal(changed.type === 'changed' ? (changed.previous.attrs.BackendData as { VtepMAC: string }).VtepMAC : '', 'aa:00:00:00:00:02');
});

t.test('reset: a renewal (same attrs, new etcd lease) is not reported but updates the view', async (t) => {
  const view = new Map<string, Lease>();
  resetLeases(view, [lease('10.5.2.0-24', 'aa:00:00:00:00:02', '7', '1')], own);
  t.same(resetLeases(view, [lease('10.5.2.0-24', 'aa:00:00:00:00:02', '8', '5')], own), []);
  t.equal(view.get('10.5.2.0-24')?.etcdLeaseId, '8');
});

t.test('update: put adds or changes, delete removes known keys only, own puts ignored', async (t) => {
  const view = new Map<string, Lease>();
  const events = updateLeases(
    view,
    [
      { type: 'put', lease: lease('10.5.2.0-24', 'aa:00:00:00:00:02') },
      { type: 'put', lease: lease('10.5.1.0-24', 'aa:00:00:00:00:01') },
      { type: 'put', lease: lease('10.5.2.0-24', 'aa:00:00:00:00:02', '9', '3') },
      { type: 'put', lease: lease('10.5.2.0-24', 'aa:00:00:00:00:99', '9', '4') },
      { type: 'delete', key: '10.5.7.0-24' },
      { type: 'delete', key: '10.5.2.0-24' },
    ],
    own,
  );
  t.same(summary(events), ['added 10.5.2.0-24', 'changed 10.5.2.0-24', 'removed 10.5.2.0-24']);
  t.equal(view.size, 0);
});

t.test('update then reset agree with a reset of the final state', async (t) => {
  const a = new Map<string, Lease>();
  const b = new Map<string, Lease>();
  updateLeases(
    a,
    [
      { type: 'put', lease: lease('10.5.2.0-24', 'aa:00:00:00:00:02') },
      { type: 'put', lease: lease('10.5.3.0-24', 'aa:00:00:00:00:03') },
    ],
    own,
  );
  resetLeases(b, [lease('10.5.2.0-24', 'aa:00:00:00:00:02'), lease('10.5.3.0-24', 'aa:00:00:00:00:03')], own);
  t.same([...a.entries()].sort(), [...b.entries()].sort());
  t.same(
    resetLeases(a, [lease('10.5.3.0-24', 'aa:00:00:00:00:03')], own).map((e) => e.type),
    ['removed'],
  );
});
