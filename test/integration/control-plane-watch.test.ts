// The lease watcher against a real etcd: foreign flanneld leases, add/remove/change, malformed
// entries, resuming after an etcd restart and after compaction without losing anything.
import t, { Test } from 'tap';
import { withEtcd, type EtcdServer } from '../../netns-fixtures/etcd';
import { formatIp4Net, parseIp4Net } from '../../src/subnet/ip4';
import type { LeaseEvent } from '../../src/subnet/lease';
import { LeaseWatcher, type BackoffOptions } from '../../src/subnet/lease-watcher';
import { EtcdRegistry, type Registry } from '../../src/subnet/registry';
import { GatedRegistry, PREFIX, captureLogger, waitFor, type LogLine } from './control-plane-helpers';

// Byte-for-byte what a flanneld v0.20+ VXLAN node stores (docs/compat.md §1).
const FOREIGN = '{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}';
const vx = (ip: string, mac: string): string =>
  `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;

interface Harness {
  etcd: EtcdServer;
  registry: Registry;
  watcher: LeaseWatcher;
  events: LeaseEvent[];
  batches: LeaseEvent[][];
  lines: LogLine[];
  put(key: string, value: string, withLease?: boolean): Promise<void>;
  del(key: string): Promise<void>;
  waitEvent(pred: (e: LeaseEvent) => boolean, what: string): Promise<LeaseEvent>;
}

function describeEvent(e: LeaseEvent): string {
  return `${e.type} ${formatIp4Net(e.lease.subnet)}`;
}

async function setup(
  t: Test,
  opts: { gated?: boolean; backoff?: BackoffOptions; before?: (etcd: EtcdServer) => Promise<void> } = {},
): Promise<Harness & { gate: GatedRegistry | null }> {
  const etcd = await withEtcd(t);
  if (opts.before) await opts.before(etcd);
  const real = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix: PREFIX });
  const gate = opts.gated ? new GatedRegistry(real) : null;
  const registry: Registry = gate ?? real;
  const { log, lines } = captureLogger();
  const events: LeaseEvent[] = [];
  const batches: LeaseEvent[][] = [];
  const watcher = new LeaseWatcher({
    registry,
    log,
    ownSubnet: parseIp4Net('10.5.1.0/24'),
    onEvents: (b) => {
      batches.push(b);
      events.push(...b);
    },
    ...(opts.backoff ? { backoff: opts.backoff } : {}),
  });
  t.teardown(() => {
    watcher.stop();
    registry.close();
  });
  let seen = 0;
  const h: Harness & { gate: GatedRegistry | null } = {
    etcd,
    registry,
    watcher,
    events,
    batches,
    lines,
    gate,
    put: async (key, value, withLease = true) => {
      const args = ['put', `${PREFIX}/subnets/${key}`, value];
      if (withLease) {
        const grant = await etcd.etcdctl(['lease', 'grant', '86400']);
        const id = /lease ([0-9a-f]+) granted/.exec(grant)![1]!;
        args.push(`--lease=${id}`);
      }
      await etcd.etcdctl(args);
    },
    del: async (key) => {
      await etcd.etcdctl(['del', `${PREFIX}/subnets/${key}`]);
    },
    // Consumes events in order: each call only looks at events after the previously matched one.
    waitEvent: async (pred, what) => {
      const found = await waitFor(`${what}; events so far: ${events.map(describeEvent).join(', ')}`, () => {
        for (let i = seen; i < events.length; i++) if (pred(events[i]!)) return { i, e: events[i]! };
        return null;
      });
      seen = found.i + 1;
      return found.e;
    },
  };
  return h;
}

const isEv = (type: LeaseEvent['type'], subnet: string) => (e: LeaseEvent) => e.type === type && formatIp4Net(e.lease.subnet) === subnet;

t.test('snapshot: foreign flanneld lease is a peer; own subnet and malformed entries skipped', async (t) => {
  const h = await setup(t, {
    before: async (etcd) => {
      const grant = await etcd.etcdctl(['lease', 'grant', '86400']);
      const id = /lease ([0-9a-f]+) granted/.exec(grant)![1]!;
      await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.72.0-24`, FOREIGN, `--lease=${id}`]);
      await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.1.0-24`, vx('192.0.2.1', 'aa:aa:aa:aa:aa:01')]);
      await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.99.0-24`, '{"PublicIP":']);
      await etcd.etcdctl(['put', `${PREFIX}/subnets/not-a-subnet`, vx('192.0.2.9', 'aa:aa:aa:aa:aa:09')]);
    },
  });
  h.watcher.start();
  await h.watcher.ready;
  t.equal(h.batches.length, 1, 'one snapshot batch');
  t.same(h.batches[0]!.map(describeEvent), ['added 10.5.72.0/24']);
  const lease = h.batches[0]![0]!.lease;
  t.same(lease.attrs, {
    PublicIP: '192.168.1.10',
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: 'ae:12:34:56:78:9a' },
  });
  t.equal(lease.key, '10.5.72.0-24');
  t.not(lease.etcdLeaseId, '0');
  const warns = h.lines.filter((l) => l.level === 40);
  t.equal(warns.length, 2, 'one warning per malformed entry');
  t.ok(
    warns.some((w) => w.key === `${PREFIX}/subnets/10.5.99.0-24`),
    'bad value named by key',
  );
  t.ok(
    warns.some((w) => w.key === `${PREFIX}/subnets/not-a-subnet`),
    'bad key named',
  );
  t.same(
    h.watcher.leases().map((l) => l.key),
    ['10.5.72.0-24'],
  );
});

t.test('watch: added, changed, renewal (no event), removed with cached attrs, malformed put', async (t) => {
  const h = await setup(t);
  h.watcher.start();
  await h.watcher.ready;
  t.same(h.batches, [[]], 'empty snapshot is still delivered, as an empty batch');

  await h.put('10.5.73.0-24', vx('192.0.2.73', 'aa:00:00:00:00:01'));
  const added = await h.waitEvent(isEv('added', '10.5.73.0/24'), 'added 10.5.73.0/24');
  t.equal(added.lease.attrs.PublicIP, '192.0.2.73');

  await h.put('10.5.73.0-24', vx('192.0.2.73', 'aa:00:00:00:00:02'));
  const changed = await h.waitEvent(isEv('changed', '10.5.73.0/24'), 'changed 10.5.73.0/24');
  t.equal(changed.type === 'changed' && (changed.previous.attrs.BackendData as { VtepMAC: string }).VtepMAC, 'aa:00:00:00:00:01');
  t.equal((changed.lease.attrs.BackendData as { VtepMAC: string }).VtepMAC, 'aa:00:00:00:00:02');

  // A renewal re-puts identical attrs with a new etcd lease: nothing for the data plane.
  await h.put('10.5.73.0-24', vx('192.0.2.73', 'aa:00:00:00:00:02'));
  await h.put('10.5.1.0-24', vx('192.0.2.1', 'aa:00:00:00:00:99')); // own subnet: filtered
  await h.put('10.5.74.0-24', '{"PublicIP": 7}'); // malformed
  await h.put('10.5.75.0-24', vx('192.0.2.75', 'aa:00:00:00:00:03')); // marker
  await h.waitEvent(isEv('added', '10.5.75.0/24'), 'marker added');
  t.same(
    h.events.map(describeEvent),
    ['added 10.5.73.0/24', 'changed 10.5.73.0/24', 'added 10.5.75.0/24'],
    'no event for renewal, own subnet or malformed value',
  );
  const warn = h.lines.find((l) => l.level === 40 && l.key === `${PREFIX}/subnets/10.5.74.0-24`);
  t.ok(warn, 'malformed value warned with its key');
  t.ok(typeof warn?.reason === 'string' && warn.reason.length > 0, 'with a reason');

  await h.del('10.5.73.0-24');
  const removed = await h.waitEvent(isEv('removed', '10.5.73.0/24'), 'removed 10.5.73.0/24');
  t.equal((removed.lease.attrs.BackendData as { VtepMAC: string }).VtepMAC, 'aa:00:00:00:00:02', 'attrs from cache');
  t.same(
    h.watcher.leases().map((l) => l.key),
    ['10.5.75.0-24'],
  );
});

t.test('resumes after an etcd restart without missing events', async (t) => {
  const h = await setup(t, { backoff: { initialMs: 100, maxMs: 1000 } });
  h.watcher.start();
  await h.watcher.ready;
  await h.put('10.5.80.0-24', vx('192.0.2.80', 'aa:00:00:00:00:80'));
  await h.waitEvent(isEv('added', '10.5.80.0/24'), 'added before restart');

  await h.etcd.stop();
  await waitFor('watch loss logged', () => h.lines.find((l) => / lost; reconnecting/.test(l.msg)));
  await h.etcd.start();
  await h.put('10.5.81.0-24', vx('192.0.2.81', 'aa:00:00:00:00:81'));
  await h.del('10.5.80.0-24');
  await h.waitEvent(isEv('added', '10.5.81.0/24'), 'added after restart');
  await h.waitEvent(isEv('removed', '10.5.80.0/24'), 'removed after restart');
  await waitFor('re-established logged', () => h.lines.find((l) => /re-established/.test(l.msg)));
  t.equal(h.lines.filter((l) => / lost; reconnecting/.test(l.msg)).length, 1, 'loss logged once, not per retry');
  t.equal(h.lines.filter((l) => /re-established/.test(l.msg)).length, 1, 'recovery logged once');
});

t.test('events written while the watch is down are delivered from the resume revision', async (t) => {
  const h = await setup(t, { gated: true, backoff: { initialMs: 20, maxMs: 100 } });
  const gate = h.gate!;
  h.watcher.start();
  await h.watcher.ready;
  await h.put('10.5.90.0-24', vx('192.0.2.90', 'aa:00:00:00:00:90'));
  await h.waitEvent(isEv('added', '10.5.90.0/24'), 'added while connected');

  gate.block();
  const attempts = gate.watchAttempts;
  await waitFor('several failed reconnects', () => gate.watchAttempts >= attempts + 3);
  await h.put('10.5.91.0-24', vx('192.0.2.91', 'aa:00:00:00:00:91'));
  await h.put('10.5.90.0-24', vx('192.0.2.90', 'aa:00:00:00:00:9a'));
  await h.del('10.5.91.0-24');
  t.equal(h.events.length, 1, 'nothing delivered while down');
  gate.unblock();
  await h.waitEvent(isEv('added', '10.5.91.0/24'), 'replayed add');
  await h.waitEvent(isEv('changed', '10.5.90.0/24'), 'replayed change');
  await h.waitEvent(isEv('removed', '10.5.91.0/24'), 'replayed remove');
  t.equal(h.lines.filter((l) => / lost; reconnecting/.test(l.msg)).length, 1, 'loss logged once');
});

t.test('recovers after compaction: re-lists and emits the diff', async (t) => {
  const h = await setup(t, { gated: true, backoff: { initialMs: 20, maxMs: 100 } });
  const gate = h.gate!;
  await h.put('10.5.60.0-24', vx('192.0.2.60', 'aa:00:00:00:00:60')); // will be removed
  await h.put('10.5.61.0-24', vx('192.0.2.61', 'aa:00:00:00:00:61')); // will change
  await h.put('10.5.62.0-24', vx('192.0.2.62', 'aa:00:00:00:00:62')); // stays
  h.watcher.start();
  await h.watcher.ready;
  t.same(h.batches[0]!.map(describeEvent), ['added 10.5.60.0/24', 'added 10.5.61.0/24', 'added 10.5.62.0/24']);

  gate.block();
  await h.del('10.5.60.0-24');
  await h.put('10.5.61.0-24', vx('192.0.2.61', 'aa:00:00:00:00:6a'));
  await h.put('10.5.62.0-24', vx('192.0.2.62', 'aa:00:00:00:00:62')); // renewal only
  await h.put('10.5.63.0-24', vx('192.0.2.63', 'aa:00:00:00:00:63'));
  await h.etcd.compact();
  gate.unblock();

  await waitFor('compaction logged', () => h.lines.find((l) => /was compacted/.test(l.msg)));
  await waitFor('diff batch', () => h.batches.length >= 2);
  t.same(
    h.batches[1]!.map(describeEvent).sort(),
    ['added 10.5.63.0/24', 'changed 10.5.61.0/24', 'removed 10.5.60.0/24'],
    'diff against the cache',
  );
  t.same(
    h.watcher
      .leases()
      .map((l) => l.key)
      .sort(),
    ['10.5.61.0-24', '10.5.62.0-24', '10.5.63.0-24'],
  );

  // And the watch continues after the re-list.
  await h.put('10.5.64.0-24', vx('192.0.2.64', 'aa:00:00:00:00:64'));
  await h.waitEvent(isEv('added', '10.5.64.0/24'), 'added after compaction recovery');
});
