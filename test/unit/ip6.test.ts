import t from 'tap';
import { Ip6ParseError, canonicalIp6Net, formatIp6, isIp6, parseIp6, parseIp6Net, formatIp6Net } from '../../src/subnet/ip6';

t.test('formats like Go net.IP.String()', async (t) => {
  const cases: Array<[string, string]> = [
    ['fc00:0000:0000:0048:0000:0000:0000:0000', 'fc00:0:0:48::'],
    ['2001:DB8::10', '2001:db8::10'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run wins
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of equal runs wins
    ['::ffff:1.2.3.4', '1.2.3.4'], // v4-mapped prints dotted, as Go does
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
  ];
  for (const [input, want] of cases) t.equal(formatIp6(parseIp6(input)), want, input);
});

t.test('rejects invalid text', async (t) => {
  for (const bad of [
    '',
    ':',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '12345::',
    'g::',
    '::1.2.3',
    '1.2.3.4',
    'fe80::1%eth0',
    '1:2:3:4:5:6:7::8',
  ]) {
    t.throws(() => parseIp6(bad), Ip6ParseError, bad);
    t.equal(isIp6(bad), false, bad);
  }
});

t.test('CIDRs are masked and canonical', async (t) => {
  t.equal(canonicalIp6Net('FC00:0:0:48:1::/64'), 'fc00:0:0:48::/64');
  t.same(parseIp6Net('::/0'), { ip: 0n, prefixLen: 0 });
  t.equal(formatIp6Net(parseIp6Net('fc00::1/128')), 'fc00::1/128');
  t.throws(() => parseIp6Net('fc00::/129'), Ip6ParseError);
  t.throws(() => parseIp6Net('fc00::'), Ip6ParseError);
  t.throws(() => parseIp6Net('fc00::/064'), Ip6ParseError);
});
