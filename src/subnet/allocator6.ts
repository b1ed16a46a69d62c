// IPv6 subnet allocation as flanneld does it (docs/compat.md §3; flannel pkg/subnet/etcd
// local_manager.go allocateSubnet): independently of the IPv4 pick, walk /IPv6SubnetLen candidates
// upward from IPv6SubnetMin, skip every candidate that overlaps an existing lease's IPv6 subnet,
// collect at most 100 free ones and pick one uniformly at random.
import { FREE_SUBNET_LIMIT } from './allocator';
import { cidr6, parseCidr6, size6, type Cidr6 } from './cidr6';
import type { Ip6, Ip6Net } from './ip6';

export interface Subnet6Range {
  subnetMin: Ip6;
  subnetMax: Ip6;
  subnetLen: number;
}

/** The IPv6 range of a validated config (its canonical text fields). */
export function subnet6Range(config: { ipv6SubnetMin: string | null; ipv6SubnetMax: string | null; ipv6SubnetLen: number }): Subnet6Range {
  if (config.ipv6SubnetMin === null || config.ipv6SubnetMax === null) {
    throw new RangeError('subnet6Range needs a config with EnableIPv6 (validated IPv6SubnetMin/Max)');
  }
  return {
    subnetMin: parseCidr6(`${config.ipv6SubnetMin}/128`).ip,
    subnetMax: parseCidr6(`${config.ipv6SubnetMax}/128`).ip,
    subnetLen: config.ipv6SubnetLen,
  };
}

/**
 * Free candidate subnets in ascending order, at most `limit`. Like the IPv4 walk, taken networks of
 * the same or a longer prefix block one candidate each (a Set), shorter ones are intervals the walk
 * jumps over, so the cost is O(taken log taken + walked) even in a /48 with thousands of leases.
 */
export function freeSubnets6(range: Subnet6Range, taken: readonly Ip6Net[], limit = FREE_SUBNET_LIMIT): Cidr6[] {
  const len = range.subnetLen;
  const size = size6(len);
  const blocked = new Set<bigint>();
  const big: Array<[start: bigint, end: bigint]> = [];
  for (const t of taken) {
    if (t.prefixLen >= len) blocked.add(t.ip - (t.ip % size));
    else {
      const s = size6(t.prefixLen);
      const start = t.ip - (t.ip % s);
      big.push([start, start + s - 1n]);
    }
  }
  big.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

  const out: Cidr6[] = [];
  // Candidates are aligned; config validation guarantees it, rounding up only guards odd callers.
  let c = range.subnetMin % size === 0n ? range.subnetMin : range.subnetMin - (range.subnetMin % size) + size;
  let next = 0;
  let coverEnd = -1n;
  while (c <= range.subnetMax && out.length < limit) {
    while (next < big.length && big[next]![0] <= c) {
      if (big[next]![1] > coverEnd) coverEnd = big[next]![1];
      next++;
    }
    if (coverEnd >= c) {
      c = coverEnd + 1n; // a larger aligned network ends on one of our boundaries
      continue;
    }
    if (!blocked.has(c)) out.push(cidr6(c, len));
    c += size;
  }
  return out;
}

/** One of the first `FREE_SUBNET_LIMIT` free IPv6 subnets, uniformly at random; null when none is free. */
export function pickSubnet6(range: Subnet6Range, taken: readonly Ip6Net[], random: () => number = Math.random): Cidr6 | null {
  const free = freeSubnets6(range, taken);
  if (free.length === 0) return null;
  return free[Math.min(free.length - 1, Math.floor(random() * free.length))]!;
}

/** flannel's isIPv6SubnetConfigCompat plus alignment: prefix length and [IPv6SubnetMin, IPv6SubnetMax]. */
export function subnet6FitsConfig(subnet: Ip6Net, range: Subnet6Range): boolean {
  if (subnet.prefixLen !== range.subnetLen) return false;
  if (subnet.ip % size6(range.subnetLen) !== 0n) return false;
  return subnet.ip >= range.subnetMin && subnet.ip <= range.subnetMax;
}
