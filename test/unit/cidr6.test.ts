import t from 'tap';
import fc from 'fast-check';
import {
  Cidr6Error,
  cidr6,
  cidr6Contains,
  cidr6Overlap,
  formatCidr6,
  isAddr6,
  parseAddr6,
  parseCidr6,
  size6,
} from '../../src/subnet/cidr6';
import { formatIp6 } from '../../src/subnet/ip6';

t.test('addresses: RFC 4291 text forms; no zones, prefixes or IPv4', async (t) => {
  t.equal(parseAddr6('fc00::1'), (0xfc00n << 112n) | 1n);
  t.equal(parseAddr6('FC00:0:0:48::'), parseAddr6('fc00:0:0:48::'));
  t.equal(parseAddr6('::'), 0n);
  for (const bad of ['fc00::1%eth0', 'fc00::/48', '192.0.2.1', 'zz::', 'fc00::1::2', ' fc00::', '']) {
    t.throws(() => parseAddr6(bad), Cidr6Error, bad);
    t.equal(isAddr6(bad), false, bad);
  }
});

t.test('CIDRs: network address with host bits cleared, last address', async (t) => {
  const n = parseCidr6('fc00::1/48');
  t.equal(formatCidr6(n), 'fc00::/48');
  t.equal(formatIp6(n.last), 'fc00::ffff:ffff:ffff:ffff:ffff');
  t.equal(parseCidr6('::/0').last, (1n << 128n) - 1n);
  for (const bad of ['fc00::', 'fc00::/129', '10.0.0.0/8', 'fc00::%x/48', 'fc00::/-1']) t.throws(() => parseCidr6(bad), Cidr6Error, bad);
  t.equal(formatCidr6(cidr6(parseAddr6('fc00:0:0:48::1'), 64)), 'fc00:0:0:48::/64');
  t.throws(() => cidr6(0n, 129), Cidr6Error);
});

t.test('contains and overlap agree with bigint mask math', async (t) => {
  const arb = fc.record({ ip: fc.bigInt(0n, (1n << 128n) - 1n), len: fc.integer({ min: 0, max: 128 }) });
  fc.assert(
    fc.property(arb, fc.bigInt(0n, (1n << 128n) - 1n), (a, ip) => {
      const net = cidr6(a.ip, a.len);
      const size = size6(a.len);
      const expected = ip >= net.ip && ip < net.ip + size;
      return cidr6Contains(net, ip) === expected && net.last === net.ip + size - 1n;
    }),
    { numRuns: 300 },
  );
  const a = parseCidr6('fc00::/48');
  t.ok(cidr6Overlap(a, parseCidr6('fc00:0:0:48::/64')));
  t.ok(cidr6Overlap(parseCidr6('fc00:0:0:48::/64'), a));
  t.notOk(cidr6Overlap(a, parseCidr6('fc00:1::/64')));
});
