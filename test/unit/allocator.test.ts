import t from 'tap';
import fc from 'fast-check';
import { FREE_SUBNET_LIMIT, SubnetRange, freeSubnets, pickSubnet, subnetFitsConfig } from '../../src/subnet/allocator';
import { Ip4Net, formatIp4Net, ip4Net, netsOverlap, parseIp4, parseIp4Net, sizeOf } from '../../src/subnet/ip4';
import { parseNetworkConfig } from '../../src/subnet/config';

const nets = (...s: string[]): Ip4Net[] => s.map(parseIp4Net);
const texts = (n: readonly Ip4Net[]): string[] => n.map(formatIp4Net);
const range = (min: string, max: string, len: number): SubnetRange => ({
  subnetMin: parseIp4(min),
  subnetMax: parseIp4(max),
  subnetLen: len,
});

/** The obvious O(candidates × taken) walk, as a reference. */
function naiveFree(r: SubnetRange, taken: readonly Ip4Net[], limit: number): Ip4Net[] {
  const out: Ip4Net[] = [];
  for (let c = r.subnetMin; c <= r.subnetMax && out.length < limit; c += sizeOf(r.subnetLen)) {
    const n = ip4Net(c, r.subnetLen);
    if (!taken.some((x) => netsOverlap(x, n))) out.push(n);
  }
  return out;
}

t.test('walks from min to max inclusive with /28 subnets', async (t) => {
  const r = range('10.5.0.16', '10.5.0.64', 28);
  t.same(texts(freeSubnets(r, [])), ['10.5.0.16/28', '10.5.0.32/28', '10.5.0.48/28', '10.5.0.64/28']);
  t.same(texts(freeSubnets(r, nets('10.5.0.32/28', '10.5.0.64/28'))), ['10.5.0.16/28', '10.5.0.48/28']);
  // Leases outside the range do not matter.
  t.same(texts(freeSubnets(r, nets('10.5.0.0/28', '10.5.0.80/28'))).length, 4);
});

t.test('config defaults: the first subnet is never handed out', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16"}');
  const free = freeSubnets(c, []);
  t.equal(free.length, FREE_SUBNET_LIMIT);
  t.equal(formatIp4Net(free[0]!), '10.5.1.0/24');
  t.equal(formatIp4Net(free[99]!), '10.5.100.0/24');
  t.equal(freeSubnets(c, [], 3).length, 3);
  t.same(freeSubnets(c, [], 0), []);
});

t.test('exhaustion gives null', async (t) => {
  const r = range('10.5.0.4', '10.5.0.12', 30);
  const all = nets('10.5.0.4/30', '10.5.0.8/30', '10.5.0.12/30');
  t.same(freeSubnets(r, all), []);
  t.equal(pickSubnet(r, all), null);
  t.equal(formatIp4Net(pickSubnet(r, all.slice(1))!), '10.5.0.4/30');
});

t.test('taken networks of other lengths block by overlap', async (t) => {
  const r = range('10.5.1.0', '10.5.8.0', 24);
  // A /22 reservation blocks four /24s; a /26 and a /32 each block the /24 they sit in.
  const taken = nets('10.5.4.0/22', '10.5.2.64/26', '10.5.1.7/32');
  t.same(texts(freeSubnets(r, taken)), ['10.5.3.0/24', '10.5.8.0/24']);
  // Nested and unsorted larger networks.
  t.same(texts(freeSubnets(r, nets('10.5.6.0/23', '10.5.0.0/21', '10.5.4.0/22'))), ['10.5.8.0/24']);
  // A covering /8 blocks everything.
  t.same(freeSubnets(r, nets('10.0.0.0/8')), []);
  t.same(freeSubnets(r, nets('0.0.0.0/0')), []);
});

t.test('range at the top of the address space terminates', async (t) => {
  const r = range('255.255.254.0', '255.255.255.0', 24);
  t.same(texts(freeSubnets(r, [])), ['255.255.254.0/24', '255.255.255.0/24']);
  t.same(texts(freeSubnets(r, nets('255.255.255.0/24'))), ['255.255.254.0/24']);
});

t.test('an unaligned min is rounded up to a boundary', async (t) => {
  t.same(texts(freeSubnets(range('10.5.0.5', '10.5.0.16', 28), [])), ['10.5.0.16/28']);
});

t.test('picks uniformly among the first 100 free', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16"}');
  const taken = nets('10.5.1.0/24', '10.5.3.0/24');
  t.equal(formatIp4Net(pickSubnet(c, taken, () => 0)!), '10.5.2.0/24');
  t.equal(formatIp4Net(pickSubnet(c, taken, () => 0.999999)!), '10.5.102.0/24');
  t.equal(formatIp4Net(pickSubnet(c, taken, () => 1)!), '10.5.102.0/24'); // a random() of 1 stays in bounds
  t.equal(formatIp4Net(pickSubnet(c, taken, () => 0.5)!), '10.5.53.0/24'); // index 50 of 2,4,5,…
  const seen = new Set<string>();
  const outside: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const s = pickSubnet(c, taken)!;
    const third = (s.ip >>> 8) & 255;
    if (!(third >= 2 && third <= 102 && third !== 3)) outside.push(formatIp4Net(s));
    seen.add(formatIp4Net(s));
  }
  t.same(outside, [], 'every pick is among the first 100 free');
  // 2000 uniform draws over 100 values miss one with probability ~1e-7.
  t.equal(seen.size, 100);
});

t.test('a /8 with 5000 taken leases of mixed lengths', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.0.0.0/8"}');
  const taken: Ip4Net[] = [];
  for (let i = 0; i < 5000; i++) taken.push(ip4Net(parseIp4('10.0.0.0') + ((i * 7919) % 65536) * 256, 24));
  taken.push(...nets('10.0.0.0/12', '10.200.0.0/16', '10.17.3.9/32'));
  const free = freeSubnets(c, taken);
  t.equal(free.length, 100);
  t.same(texts(free), texts(naiveFree(c, taken, 100)));
  t.ok(free.every((f) => !taken.some((x) => netsOverlap(x, f))));
  t.ok(pickSubnet(c, taken) !== null);
});

t.test('property: matches the naive walk', async (t) => {
  const arbNet = fc
    .record({ ip: fc.integer({ min: 0x0a050000, max: 0x0a05ffff }), len: fc.integer({ min: 16, max: 32 }) })
    .map((x) => ip4Net(x.ip, x.len));
  fc.assert(
    fc.property(
      fc.array(arbNet, { maxLength: 40 }),
      fc.integer({ min: 20, max: 30 }),
      fc.integer({ min: 1, max: 120 }),
      (taken, len, limit) => {
        const r: SubnetRange = { subnetMin: 0x0a050000 + sizeOf(len), subnetMax: 0x0a060000 - sizeOf(len), subnetLen: len };
        return JSON.stringify(freeSubnets(r, taken, limit)) === JSON.stringify(naiveFree(r, taken, limit));
      },
    ),
    { numRuns: 300 },
  );
  t.pass('equivalent');
});

t.test('subnetFitsConfig', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}');
  t.equal(subnetFitsConfig(parseIp4Net('10.5.10.0/24'), c), true);
  t.equal(subnetFitsConfig(parseIp4Net('10.5.20.0/24'), c), true);
  t.equal(subnetFitsConfig(parseIp4Net('10.5.15.0/24'), c), true);
  t.equal(subnetFitsConfig(parseIp4Net('10.5.9.0/24'), c), false, 'below min');
  t.equal(subnetFitsConfig(parseIp4Net('10.5.21.0/24'), c), false, 'above max');
  t.equal(subnetFitsConfig(parseIp4Net('10.5.15.0/25'), c), false, 'other length');
  t.equal(subnetFitsConfig({ ip: parseIp4('10.5.15.8'), prefixLen: 24 }, c), false, 'unaligned');
});
