import t from 'tap';
import fc from 'fast-check';
import { ForwardingTable, ForwardingTableError, ForwardingTableReader, MAX_READERS } from '../../src/dataplane/forwarding-table';
import { ENCAP_LEN } from '../../src/dataplane/vxlan-codec';
import { maskOf, parseIp4, parseIp4Net } from '../../src/subnet/ip4';

const mac = (last: number): Uint8Array => Uint8Array.from([0x02, 0, 0, 0, 0, last]);
const peer = (subnet: string, publicIp: string, last: number) => ({
  subnet: parseIp4Net(subnet),
  publicIp: parseIp4(publicIp),
  vtepMac: mac(last),
});
const ip = parseIp4;

t.test('empty table finds nothing', async (t) => {
  const ft = new ForwardingTable();
  t.equal(ft.lookup(ip('10.5.1.1')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.1')), -1);
  t.equal(ft.peerCount, 0);
});

t.test('lookup by destination and by source', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const b = ft.setPeer(peer('10.5.2.0/24', '192.0.2.12', 2));
  t.not(a, b);
  t.equal(ft.peerCount, 2);
  t.equal(ft.lookup(ip('10.5.1.0')), a);
  t.equal(ft.lookup(ip('10.5.1.255')), a);
  t.equal(ft.lookup(ip('10.5.2.7')), b);
  t.equal(ft.lookup(ip('10.5.2.7') | 0), b, 'int32 form too');
  t.equal(ft.lookup(ip('10.5.3.1')), -1);
  t.equal(ft.lookup(ip('10.6.1.1')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), a);
  t.equal(ft.peerBySource(ip('192.0.2.12')), b);
  t.equal(ft.peerBySource(ip('192.0.2.13')), -1);
  t.equal(ft.publicIp[a]! >>> 0, ip('192.0.2.11'));
  t.same([...ft.vtepMac.subarray(b * 6, b * 6 + 6)], [...mac(2)]);
});

t.test('setPeer replaces MAC and public IP of an existing subnet', async (t) => {
  const ft = new ForwardingTable({ vni: 1, localMac: mac(99) });
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const again = ft.setPeer(peer('10.5.1.0/24', '192.0.2.21', 7));
  t.equal(again, a, 'same slot');
  t.equal(ft.peerCount, 1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1, 'old public IP no longer accepted');
  t.equal(ft.peerBySource(ip('192.0.2.21')), a);
  t.equal(ft.publicIp[a]! >>> 0, ip('192.0.2.21'));
  t.same([...ft.vtepMac.subarray(a * 6, a * 6 + 6)], [...mac(7)]);
  const hdr = ft.encapHeaders.subarray(a * ENCAP_LEN, a * ENCAP_LEN + ENCAP_LEN);
  t.same([...hdr.subarray(0, 8)], [8, 0, 0, 0, 0, 0, 1, 0], 'VXLAN header with VNI 1');
  t.same([...hdr.subarray(8, 14)], [...mac(7)], 'header uses the new MAC');
  t.same([...hdr.subarray(14, 20)], [...mac(99)], 'src MAC = ours');
});

t.test('removePeer', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  ft.setPeer(peer('10.5.2.0/24', '192.0.2.12', 2));
  t.equal(ft.removePeer(parseIp4Net('10.5.1.0/24')), true);
  t.equal(ft.removePeer(parseIp4Net('10.5.1.0/24')), false, 'second remove is a no-op');
  t.equal(ft.removePeer(parseIp4Net('10.5.2.0/25')), false, 'exact subnet only');
  t.equal(ft.lookup(ip('10.5.1.3')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1);
  t.equal(ft.lookup(ip('10.5.2.3')) >= 0, true);
  t.equal(ft.peerCount, 1);
  const c = ft.setPeer(peer('10.5.3.0/24', '192.0.2.13', 3));
  t.equal(c, a, 'freed slot is reused');
  t.same(ft.subnetOf(c), parseIp4Net('10.5.3.0/24'));
});

t.test('longest prefix wins among several prefix lengths', async (t) => {
  const ft = new ForwardingTable();
  const wide = ft.setPeer(peer('10.5.0.0/16', '192.0.2.1', 1));
  const mid = ft.setPeer(peer('10.5.4.0/22', '192.0.2.2', 2));
  const narrow = ft.setPeer(peer('10.5.5.0/24', '192.0.2.3', 3));
  const host = ft.setPeer(peer('10.5.5.9/32', '192.0.2.4', 4));
  const all = ft.setPeer(peer('0.0.0.0/0', '192.0.2.5', 5));
  t.equal(ft.lookup(ip('10.5.5.9')), host);
  t.equal(ft.lookup(ip('10.5.5.10')), narrow);
  t.equal(ft.lookup(ip('10.5.6.1')), mid);
  t.equal(ft.lookup(ip('10.5.9.1')), wide);
  t.equal(ft.lookup(ip('172.16.0.1')), all);
  ft.removePeer(parseIp4Net('10.5.5.0/24'));
  t.equal(ft.lookup(ip('10.5.5.10')), mid, 'falls back to the next length');
  ft.removePeer(parseIp4Net('0.0.0.0/0'));
  t.equal(ft.lookup(ip('172.16.0.1')), -1);
});

t.test('several leases behind one public IP: newest set wins, source stays valid until all are gone', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const b = ft.setPeer(peer('10.5.9.0/24', '192.0.2.11', 1));
  t.equal(ft.peerBySource(ip('192.0.2.11')), b);
  ft.removePeer(parseIp4Net('10.5.9.0/24'));
  t.equal(ft.peerBySource(ip('192.0.2.11')), a);
  ft.removePeer(parseIp4Net('10.5.1.0/24'));
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1);
});

t.test('rejects malformed peers', async (t) => {
  const ft = new ForwardingTable();
  t.throws(() => ft.setPeer({ subnet: { ip: ip('10.5.1.1'), prefixLen: 24 }, publicIp: 1, vtepMac: mac(1) }), ForwardingTableError);
  t.throws(() => ft.setPeer({ subnet: parseIp4Net('10.5.1.0/24'), publicIp: 1, vtepMac: new Uint8Array(5) }), ForwardingTableError);
  t.throws(() => ft.setPeer({ subnet: { ip: 0, prefixLen: 33 }, publicIp: 1, vtepMac: mac(1) }), ForwardingTableError);
  t.equal(ft.peerCount, 0);
});

t.test('grows past its initial capacity (1000 peers) and agrees with a linear scan', async (t) => {
  const ft = new ForwardingTable({ initialCapacity: 2, vni: 1, localMac: mac(0) });
  const slots = new Map<number, number>();
  for (let i = 0; i < 1000; i++) {
    const net = ((10 << 24) | (i << 8)) >>> 0;
    slots.set(net, ft.setPeer({ subnet: { ip: net, prefixLen: 24 }, publicIp: (0xc0000200 + i) >>> 0, vtepMac: mac(i & 0xff) }));
  }
  t.equal(ft.peerCount, 1000);
  t.ok(ft.slotCapacity >= 1000);
  let ok = 0;
  for (const [net, slot] of slots) {
    if (ft.lookup(net + 77) === slot && ft.peerBySource(ft.publicIp[slot]!) === slot) ok++;
  }
  t.equal(ok, 1000);
});

t.test('property: lookup equals longest-prefix linear scan', async (t) => {
  const netArb = fc.record({ ip: fc.integer({ min: 0, max: 0xffffffff }), len: fc.constantFrom(8, 16, 20, 24, 28, 32) });
  fc.assert(
    fc.property(
      fc.array(netArb, { maxLength: 30 }),
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 30 }),
      (nets, probes) => {
        const ft = new ForwardingTable();
        const entries = new Map<string, { ip: number; len: number; slot: number }>();
        for (const n of nets) {
          const netIp = (n.ip & maskOf(n.len)) >>> 0;
          const slot = ft.setPeer({ subnet: { ip: netIp, prefixLen: n.len }, publicIp: n.ip, vtepMac: mac(1) });
          entries.set(`${netIp}/${n.len}`, { ip: netIp, len: n.len, slot });
        }
        for (const n of nets) probes.push(n.ip);
        for (const p of probes) {
          let best = -1;
          let bestLen = -1;
          for (const e of entries.values()) {
            if ((p & maskOf(e.len)) >>> 0 === e.ip && e.len > bestLen) {
              best = e.slot;
              bestLen = e.len;
            }
          }
          if (ft.lookup(p) !== best) return false;
        }
        return true;
      },
    ),
  );
  t.pass('lookup matches the linear scan for all generated tables');
});

// ---- model-based: the writer + readers against a plain Map under random set/remove/batch sequences.

type Cmd =
  | { op: 'set'; s: number; ip: number; mac: number }
  | { op: 'remove'; s: number }
  | { op: 'batch'; cmds: Array<{ op: 'set'; s: number; ip: number; mac: number } | { op: 'remove'; s: number }> }
  | { op: 'refreshLagging' };

// Overlapping subnets of several lengths, and few public IPs so that leases share them.
const UNIVERSE = [
  '10.5.0.0/16',
  '10.5.1.0/24',
  '10.5.2.0/24',
  '10.5.2.128/25',
  '10.5.2.130/32',
  '10.6.0.0/24',
  '0.0.0.0/0',
  '10.5.3.0/24',
].map(parseIp4Net);
const IPS = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '198.51.100.7'].map(parseIp4);
const PROBES = [
  ...UNIVERSE.flatMap((n) => [n.ip, (n.ip + 1) >>> 0, (n.ip | (~maskOf(n.prefixLen) >>> 0)) >>> 0]),
  ip('172.16.0.1'),
  ip('10.5.200.1'),
];

interface ModelPeer {
  ip: number;
  mac: number;
  seq: number;
}
type Model = Map<number, ModelPeer>;

function expectLookup(model: Model, addr: number): number {
  let best = -1;
  for (const [s] of model) {
    const n = UNIVERSE[s]!;
    if ((addr & maskOf(n.prefixLen)) >>> 0 === n.ip && (best < 0 || n.prefixLen > UNIVERSE[best]!.prefixLen)) best = s;
  }
  return best;
}

function expectSource(model: Model, src: number): number {
  let best = -1;
  let bestSeq = -1;
  for (const [s, p] of model) {
    if (p.ip === src && p.seq > bestSeq) {
      best = s;
      bestSeq = p.seq;
    }
  }
  return best;
}

/** "" if `r` shows exactly `model`; else what differs. */
function diffReader(ft: ForwardingTable, r: ForwardingTableReader, model: Model): string {
  const subnetIndexOf = (slot: number): number => {
    if (slot < 0) return -1;
    const sn = ft.subnetOf(slot);
    return sn === undefined ? -2 : UNIVERSE.findIndex((u) => u.ip === sn.ip && u.prefixLen === sn.prefixLen);
  };
  // Slot → subnet through the writer is only meaningful while the writer has nothing unpublished.
  const exact = ft.reader === r && !ft.publishPending;
  if (r.peerCount !== model.size) return `peerCount ${r.peerCount} != ${model.size}`;
  for (const a of PROBES) {
    const want = expectLookup(model, a);
    const got = r.lookup(a);
    if (want < 0 ? got !== -1 : got < 0) return `lookup ${a}: got slot ${got}, want subnet ${want}`;
    if (want >= 0) {
      const p = model.get(want)!;
      if (r.publicIp[got]! !== (p.ip | 0)) return `lookup ${a}: public IP ${r.publicIp[got]} != ${p.ip}`;
      if (r.vtepMac[got * 6 + 5] !== p.mac) return `lookup ${a}: mac ${r.vtepMac[got * 6 + 5]} != ${p.mac}`;
      if (r.encapHeaders[got * ENCAP_LEN + 13] !== p.mac) return `lookup ${a}: encap dst mac != ${p.mac}`;
      const idx = subnetIndexOf(got);
      if (exact && idx !== want) return `lookup ${a}: slot ${got} is subnet ${idx}, want ${want}`;
    }
  }
  for (const src of [...IPS, ip('203.0.113.9')]) {
    const want = expectSource(model, src);
    const got = r.peerBySource(src);
    if (want < 0 ? got !== -1 : got < 0) return `source ${src}: got ${got}, want subnet ${want}`;
    if (want >= 0 && r.publicIp[got]! !== (src | 0)) return `source ${src}: slot ${got} has public IP ${r.publicIp[got]}`;
    if (want >= 0 && exact && subnetIndexOf(got) !== want) return `source ${src}: slot is subnet ${subnetIndexOf(got)}, want ${want}`;
  }
  return '';
}

t.test('property: writer and readers agree with a model under random sets, removes and batches', async (t) => {
  const change = fc.oneof(
    fc.record({ op: fc.constant('set' as const), s: fc.nat(UNIVERSE.length - 1), ip: fc.nat(IPS.length - 1), mac: fc.nat(3) }),
    fc.record({ op: fc.constant('remove' as const), s: fc.nat(UNIVERSE.length - 1) }),
  );
  const cmd: fc.Arbitrary<Cmd> = fc.oneof(
    { weight: 4, arbitrary: change },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('batch' as const), cmds: fc.array(change, { maxLength: 12 }) }) },
    { weight: 1, arbitrary: fc.constant({ op: 'refreshLagging' as const }) },
  );
  fc.assert(
    fc.property(fc.array(cmd, { maxLength: 60 }), (cmds) => {
      const ft = new ForwardingTable({ vni: 1, localMac: mac(99), initialCapacity: 1 });
      // A registered reader that refreshes only when told: it holds the writer back (deferred publish).
      const lagging = ForwardingTableReader.attach(ft.handle);
      const model: Model = new Map();
      let published: Model = new Map();
      let seq = 0;
      const apply = (c: { op: 'set'; s: number; ip: number; mac: number } | { op: 'remove'; s: number }): void => {
        if (c.op === 'set') {
          ft.setPeer({ subnet: UNIVERSE[c.s]!, publicIp: IPS[c.ip]!, vtepMac: mac(c.mac) });
          // Re-setting the same public IP makes the lease the newest holder, like a fresh set.
          model.set(c.s, { ip: IPS[c.ip]!, mac: c.mac, seq: seq++ });
        } else {
          ft.removePeer(UNIVERSE[c.s]!);
          model.delete(c.s);
        }
      };
      const fail = (msg: string): never => {
        throw new Error(msg);
      };
      try {
        for (const c of cmds) {
          const genBefore = ft.generation;
          if (c.op === 'refreshLagging') {
            lagging.refresh();
            const d = diffReader(ft, lagging, published);
            if (d !== '') fail(`lagging reader after refresh: ${d}`);
            if (ft.publishPending && !ft.publish()) fail('publish still held back after the reader caught up');
          } else if (c.op === 'batch') {
            ft.batch(() => {
              for (const inner of c.cmds) {
                apply(inner);
                if (ft.generation !== genBefore) fail('published inside a batch');
                const d = diffReader(ft, ft.reader, published);
                if (d !== '') fail(`inside batch: ${d}`);
              }
            });
            if (ft.generation > genBefore + 1) fail(`batch published ${ft.generation - genBefore} generations`);
          } else {
            apply(c);
          }
          if (!ft.publishPending) published = new Map([...model].map(([k, v]) => [k, { ...v }]));
          const d = diffReader(ft, ft.reader, published);
          if (d !== '') fail(`after ${c.op}: ${d}`);
          if (ft.peerCount !== model.size) fail(`writer peerCount ${ft.peerCount} != ${model.size}`);
          for (const [s] of model) if (ft.slotOf(UNIVERSE[s]!) < 0) fail(`slotOf lost subnet ${s}`);
        }
        lagging.refresh();
        if (ft.publishPending && !ft.publish()) fail('final publish held back');
        lagging.refresh();
        const d = diffReader(ft, lagging, model);
        if (d !== '') fail(`lagging reader at the end: ${d}`);
        return true;
      } finally {
        lagging.detach();
        ft.close();
      }
    }),
    { numRuns: 300 },
  );
  t.pass('writer, same-thread reader and a lagging reader match the model');
});

t.test('a reader on the previous generation holds back the next publish until it refreshes or idles', async (t) => {
  const ft = new ForwardingTable();
  let wakes = 0;
  const ft2 = new ForwardingTable({ wakeReaders: () => wakes++ });
  for (const table of [ft, ft2]) {
    const r = ForwardingTableReader.attach(table.handle);
    const g0 = r.generation;
    table.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1)); // g0 + 1: written into the bank r does not use
    t.equal(table.generation, g0 + 1);
    t.equal(r.lookup(ip('10.5.1.1')), -1, 'reader still sees its generation');
    table.setPeer(peer('10.5.2.0/24', '192.0.2.12', 2)); // would overwrite r's bank: held back
    t.equal(table.generation, g0 + 1, 'held back');
    t.ok(table.publishPending);
    t.equal(r.lookup(ip('10.5.1.1')), -1, 'reader data untouched');
    t.equal(r.refresh(), true);
    t.equal(r.generation, g0 + 1);
    t.ok(r.lookup(ip('10.5.1.1')) >= 0);
    t.equal(r.lookup(ip('10.5.2.1')), -1);
    await table.whenPublished(); // the retry timer publishes now that r moved on
    t.equal(table.generation, g0 + 2);
    t.equal(r.refresh(), true);
    t.ok(r.lookup(ip('10.5.2.1')) >= 0);
    r.idle(); // an idle reader holds nothing back
    table.setPeer(peer('10.5.3.0/24', '192.0.2.13', 3));
    table.setPeer(peer('10.5.4.0/24', '192.0.2.14', 4));
    t.equal(table.generation, g0 + 4);
    t.equal(r.refresh(), true);
    t.equal(r.peerCount, 4);
    r.detach();
    table.close();
  }
  t.ok(wakes >= 1, 'wakeReaders called when a publish was held back');
});

t.test('readers attach from a handle; at most MAX_READERS', async (t) => {
  const ft = new ForwardingTable({ maxPeers: 8 });
  const readers = Array.from({ length: MAX_READERS }, () => ForwardingTableReader.attach(ft.handle));
  t.throws(() => ForwardingTableReader.attach(ft.handle), ForwardingTableError);
  readers[0]!.detach();
  const again = ForwardingTableReader.attach(ft.handle);
  t.equal(again.generation, ft.generation);
  for (const r of readers) r.detach();
  again.detach();
  t.throws(() => again.refresh(), ForwardingTableError, 'detached reader refuses to read');
  for (let i = 0; i < 8; i++) ft.setPeer(peer(`10.5.${i}.0/24`, `192.0.2.${i + 1}`, i));
  t.throws(() => ft.setPeer(peer('10.5.99.0/24', '192.0.2.99', 9)), /peer table full \(8 peers\) when adding 10\.5\.99\.0\/24/);
  ft.batch(() => {
    ft.removePeer(parseIp4Net('10.5.0.0/24'));
    ft.setPeer(peer('10.5.99.0/24', '192.0.2.99', 9)); // the slot freed in the same batch is reused
  });
  t.ok(ft.lookup(ip('10.5.99.1')) >= 0);
  t.equal(ft.lookup(ip('10.5.0.1')), -1);
  ft.close();
});

t.test('10,000 peers load in one batch, then churn; hash tables stay exact', async (t) => {
  const ft = new ForwardingTable({ vni: 1, localMac: mac(0) });
  const net = (i: number): number => ((10 << 24) | (i << 8)) >>> 0;
  ft.batch(() => {
    for (let i = 0; i < 10_000; i++)
      ft.setPeer({ subnet: { ip: net(i), prefixLen: 24 }, publicIp: (0xc6120000 + i) >>> 0, vtepMac: mac(i & 0xff) });
  });
  t.equal(ft.reader.peerCount, 10_000);
  // Remove every third, re-add half of those with a new IP, in one batch.
  ft.batch(() => {
    for (let i = 0; i < 10_000; i += 3) ft.removePeer({ ip: net(i), prefixLen: 24 });
    for (let i = 0; i < 10_000; i += 6)
      ft.setPeer({ subnet: { ip: net(i), prefixLen: 24 }, publicIp: (0xc6130000 + i) >>> 0, vtepMac: mac(1) });
  });
  let bad = 0;
  let live = 0;
  for (let i = 0; i < 10_000; i++) {
    const removed = i % 3 === 0 && i % 6 !== 0;
    const slot = ft.lookup(net(i) + 5);
    const wantIp = i % 6 === 0 ? 0xc6130000 + i : 0xc6120000 + i;
    if (removed) {
      if (slot !== -1 || ft.peerBySource(0xc6120000 + i) !== -1) bad++;
      continue;
    }
    live++;
    if (slot < 0 || ft.publicIp[slot]! >>> 0 !== wantIp || ft.peerBySource(wantIp) !== slot) bad++;
    if (i % 6 === 0 && ft.peerBySource(0xc6120000 + i) !== -1) bad++;
  }
  t.equal(bad, 0);
  t.equal(ft.peerCount, live);
  t.equal(ft.reader.peerCount, live);
  ft.close();
});

t.test('a reader in a worker thread only ever sees whole generations', async (t) => {
  const N = 256;
  const ft = new ForwardingTable({ vni: 1, localMac: mac(0), maxPeers: 1024 });
  const stop = new Int32Array(new SharedArrayBuffer(4));
  // Generation k (batch k): peers 0..N-1 when k is even, only 0..N/2-1 when odd; every peer's public IP
  // is (k << 16) | i and its MAC ends in k & 0xff. A half-applied batch would mix values of two batches.
  const workerCode = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { ForwardingTableReader } = require(workerData.module);
    const { handle, stop, n } = workerData;
    const r = ForwardingTableReader.attach(handle);
    parentPort.postMessage('ready');
    const net = (i) => ((10 << 24) | (i << 8)) >>> 0;
    let gens = 0, checks = 0, bad = [], last = -1, spins = 0;
    while (Atomics.load(stop, 0) === 0) {
      if (++spins % 64 === 0) r.idle();
      r.refresh();
      let k = -1, found = 0;
      for (let i = 0; i < n; i++) {
        const slot = r.lookup(net(i) + 1);
        if (slot < 0) continue;
        found++;
        const pip = r.publicIp[slot] >>> 0;
        const kk = pip >>> 16;
        if (k < 0) k = kk;
        if (kk !== k || (pip & 0xffff) !== i) { bad.push('mixed public IPs ' + k + '/' + kk + ' at ' + i); break; }
        if (r.vtepMac[slot * 6 + 5] !== (k & 0xff) || r.encapHeaders[slot * 22 + 13] !== (k & 0xff)) { bad.push('mac of another batch at ' + i); break; }
        if (r.peerBySource(pip) !== slot) { bad.push('source table of another batch at ' + i); break; }
      }
      checks++;
      if (k >= 0) {
        const want = k % 2 === 0 ? n : n / 2;
        if (found !== want || r.peerCount !== want) bad.push('batch ' + k + ': ' + found + ' peers found, peerCount ' + r.peerCount + ', want ' + want);
        if (k < last) bad.push('went back from batch ' + last + ' to ' + k);
        if (k !== last) gens++;
        last = k;
      }
      if (bad.length > 5) break;
    }
    r.detach();
    parentPort.postMessage({ gens, checks, bad, last });
  `;
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(workerCode, {
    eval: true,
    workerData: { module: require.resolve('../../src/dataplane/forwarding-table'), handle: ft.handle, stop, n: N },
  });
  const messages: unknown[] = [];
  let wake = (): void => {};
  worker.on('message', (m) => {
    messages.push(m);
    wake();
  });
  const failed = new Promise<never>((_, reject) => worker.once('error', reject));
  const nextMessage = async (): Promise<unknown> => {
    while (messages.length === 0) await Promise.race([new Promise<void>((r) => (wake = r)), failed]);
    return messages.shift();
  };
  t.equal(await nextMessage(), 'ready');
  const net = (i: number): number => ((10 << 24) | (i << 8)) >>> 0;
  const BATCHES = 300;
  for (let k = 0; k < BATCHES; k++) {
    ft.batch(() => {
      for (let i = 0; i < N; i++) {
        if (k % 2 === 1 && i >= N / 2) ft.removePeer({ ip: net(i), prefixLen: 24 });
        else ft.setPeer({ subnet: { ip: net(i), prefixLen: 24 }, publicIp: ((k << 16) | i) >>> 0, vtepMac: mac(k & 0xff) });
      }
    });
    await ft.whenPublished();
    // Give the reader time to look at most generations (it is gated only by the retry timer otherwise).
    await new Promise((r) => setTimeout(r, k % 8 === 0 ? 1 : 0));
  }
  await new Promise((r) => setTimeout(r, 20));
  Atomics.store(stop, 0, 1);
  const res = (await nextMessage()) as { gens: number; checks: number; bad: string[]; last: number };
  await worker.terminate();
  ft.close();
  t.same(res.bad, [], 'no mixed or partial generation seen');
  t.ok(res.gens > 1, `the worker saw several generations (${res.gens} of ${BATCHES}, ${res.checks} checks)`);
  t.equal(res.last, BATCHES - 1, 'and ends on the last one');
});
