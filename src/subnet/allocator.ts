// Subnet allocation as flanneld does it (docs/compat.md §3): walk candidates upward from
// SubnetMin, skip every candidate that overlaps any existing key (leases, reservations, keys of
// other lengths), collect at most 100 free ones and pick one uniformly at random. Picking among
// the *first* 100 keeps allocations dense at the bottom of the range, like flannel.
import { Ip4, Ip4Net, ip4Net, maskOf, sizeOf } from './ip4';

export interface SubnetRange {
  subnetMin: Ip4;
  subnetMax: Ip4;
  subnetLen: number;
}

export const FREE_SUBNET_LIMIT = 100;

/**
 * Free candidate subnets in ascending order, at most `limit`. Cost is O(taken log taken + walked):
 * same-or-longer taken prefixes become a Set of blocked candidates, shorter (larger) taken
 * networks are sorted intervals the walk jumps over, so a /8 with thousands of leases is cheap.
 */
export function freeSubnets(range: SubnetRange, taken: readonly Ip4Net[], limit = FREE_SUBNET_LIMIT): Ip4Net[] {
  const len = range.subnetLen;
  const size = sizeOf(len);
  const mask = maskOf(len);
  const blocked = new Set<number>();
  const big: Array<[start: number, end: number]> = [];
  for (const t of taken) {
    if (t.prefixLen >= len) blocked.add((t.ip & mask) >>> 0);
    else {
      const start = (t.ip & maskOf(t.prefixLen)) >>> 0;
      big.push([start, start + sizeOf(t.prefixLen) - 1]);
    }
  }
  big.sort((a, b) => a[0] - b[0]);

  const out: Ip4Net[] = [];
  // Candidates must be aligned; config validation guarantees it, this only guards odd callers.
  let c = Math.ceil(range.subnetMin / size) * size;
  let next = 0; // first interval in `big` not yet folded into coverEnd
  let coverEnd = -1; // highest address covered by a larger taken network starting at or below c
  // Plain numbers (not >>> 0) so stepping past 255.255.255.x ends the loop instead of wrapping.
  while (c <= range.subnetMax && out.length < limit) {
    while (next < big.length && big[next]![0] <= c) {
      coverEnd = Math.max(coverEnd, big[next]![1]);
      next++;
    }
    if (coverEnd >= c) {
      // Larger networks are aligned to a multiple of our size, so coverEnd + 1 is a candidate boundary.
      c = coverEnd + 1;
      continue;
    }
    if (!blocked.has(c)) out.push(ip4Net(c, len));
    c += size;
  }
  return out;
}

/** One of the first `FREE_SUBNET_LIMIT` free subnets, uniformly at random; null when out of subnets. */
export function pickSubnet(range: SubnetRange, taken: readonly Ip4Net[], random: () => number = Math.random): Ip4Net | null {
  const free = freeSubnets(range, taken);
  if (free.length === 0) return null;
  // min() guards a random() that returns exactly 1.
  return free[Math.min(free.length - 1, Math.floor(random() * free.length))]!;
}

/** Whether an existing lease subnet may be kept under this config (flannel's isSubnetConfigCompat plus alignment). */
export function subnetFitsConfig(subnet: Ip4Net, range: SubnetRange): boolean {
  if (subnet.prefixLen !== range.subnetLen) return false;
  if ((subnet.ip & maskOf(range.subnetLen)) >>> 0 !== subnet.ip) return false;
  return subnet.ip >= range.subnetMin && subnet.ip <= range.subnetMax;
}
