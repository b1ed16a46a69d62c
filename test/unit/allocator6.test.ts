import t from 'tap';
import { FREE_SUBNET_LIMIT } from '../../src/subnet/allocator';
import { freeSubnets6, pickSubnet6, subnet6FitsConfig, subnet6Range } from '../../src/subnet/allocator6';
import { formatCidr6, parseCidr6 } from '../../src/subnet/cidr6';
import { parseNetworkConfig } from '../../src/subnet/config';

const cfg = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}');
const range = subnet6Range(cfg);
const nets = (...xs: string[]) => xs.map(parseCidr6);
const texts = (xs: ReadonlyArray<{ ip: bigint; prefixLen: number }>) => xs.map(formatCidr6);

t.test('walks from IPv6SubnetMin in /IPv6SubnetLen steps, at most 100', async (t) => {
  const free = freeSubnets6(range, []);
  t.equal(free.length, FREE_SUBNET_LIMIT);
  t.same(texts(free.slice(0, 3)), ['fc00:0:0:1::/64', 'fc00:0:0:2::/64', 'fc00:0:0:3::/64'], 'first subnet (fc00::/64) skipped');
  t.equal(formatCidr6(free[99]!), 'fc00:0:0:64::/64');
});

t.test('skips taken subnets of any length; jumps over larger taken networks', async (t) => {
  const taken = nets('fc00:0:0:1::/64', 'fc00:0:0:3::8/125', 'fc00:0:0:4::/63', 'fc00:0:0:100::/56');
  const free = freeSubnets6(range, taken, 1000);
  t.same(texts(free.slice(0, 3)), ['fc00:0:0:2::/64', 'fc00:0:0:6::/64', 'fc00:0:0:7::/64']);
  t.notOk(
    free.some((f) => f.ip >= parseCidr6('fc00:0:0:100::/56').ip && f.ip <= parseCidr6('fc00:0:0:100::/56').last),
    'nothing inside the taken /56',
  );
  t.equal(formatCidr6(free[free.length - 1]!), 'fc00:0:0:4ec::/64', '1000 candidates: 2, 6..ff, then 200..4ec past the /56');
});

t.test('bounds: IPv6SubnetMax is inclusive; none free → null', async (t) => {
  const c = parseNetworkConfig(
    '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:10::","IPv6SubnetMax":"fc00:0:0:11::"}',
  );
  const r = subnet6Range(c);
  t.same(texts(freeSubnets6(r, [])), ['fc00:0:0:10::/64', 'fc00:0:0:11::/64']);
  t.equal(pickSubnet6(r, nets('fc00:0:0:10::/64', 'fc00:0:0:11::/64')), null);
  t.equal(formatCidr6(pickSubnet6(r, nets('fc00:0:0:10::/64'))!), 'fc00:0:0:11::/64');
  // Uniform pick among the free candidates.
  t.equal(formatCidr6(pickSubnet6(r, [], () => 0)!), 'fc00:0:0:10::/64');
  t.equal(formatCidr6(pickSubnet6(r, [], () => 0.999999)!), 'fc00:0:0:11::/64');
  t.equal(formatCidr6(pickSubnet6(r, [], () => 1)!), 'fc00:0:0:11::/64', 'random() of exactly 1 stays in range');
});

t.test('a large taken list stays cheap (5,000 leases)', async (t) => {
  const taken = Array.from({ length: 5000 }, (_, i) => parseCidr6(`fc00:0:0:${(i + 1).toString(16)}::/64`));
  const free = freeSubnets6(range, taken);
  t.equal(formatCidr6(free[0]!), 'fc00:0:0:1389::/64');
  t.equal(free.length, 100);
});

t.test('fits: prefix length, alignment and range (flannel isIPv6SubnetConfigCompat)', async (t) => {
  t.ok(subnet6FitsConfig(parseCidr6('fc00:0:0:48::/64'), range));
  t.notOk(subnet6FitsConfig(parseCidr6('fc00::/64'), range), 'below IPv6SubnetMin');
  t.notOk(subnet6FitsConfig(parseCidr6('fc00:0:0:48::/80'), range), 'other length');
  t.notOk(subnet6FitsConfig(parseCidr6('fc00:1::/64'), range), 'outside the network');
  t.notOk(subnet6FitsConfig({ ip: parseCidr6('fc00:0:0:48::1/128').ip, prefixLen: 64 }, range), 'not aligned');
  t.throws(() => subnet6Range(parseNetworkConfig('{"Network":"10.5.0.0/16"}')), RangeError);
});
