// This node's lease decisions as plain functions (docs/compat.md §1 "Acquire order", "Renewal",
// "Reservations"): which lease to reuse, which subnet to create, what a refused renewal means. No I/O:
// LeaseManager runs the plan against the registry and logs.
//
// Deliberate differences from flanneld, decided here:
// - a reservation (key without etcd lease) for our address stays a reservation: no TTL, no renewal
//   (flanneld attaches a 24 h lease to it by accident);
// - IPv6-only (EnableIPv4 false): flannel head publishes PublicIP "0.0.0.0" and key
//   "0.0.0.0-0&<v6>-<len>" for every node and finds "its" lease by that PublicIP, so a second node
//   takes over the first one's lease. We write the same key and value layout but recognise our lease by
//   PublicIPv6 and allocate only the IPv6 part.
import type { NetworkConfig } from './config';
import { pickSubnet, subnetFitsConfig, type SubnetRange } from './allocator';
import { pickSubnet6, subnet6FitsConfig, subnet6Range } from './allocator6';
import { cidr6Overlap, formatCidr6, parseCidr6 } from './cidr6';
import { formatIp4, formatIp4Net, netsOverlap, type Ip4Net } from './ip4';
import type { Ip6Net } from './ip6';
import type { Lease, LeaseAttrs } from './lease';

export class OutOfSubnetsError extends Error {
  override name = 'OutOfSubnetsError';
}

/** The subnets of one lease key: IPv4 part (0.0.0.0/0 when IPv6-only) and IPv6 CIDR text or null. */
export interface SubnetPair {
  subnet: Ip4Net;
  ipv6Subnet: string | null;
}

/** The IPv4 part of an IPv6-only lease key ("0.0.0.0-0&fc00:0:0:48::-64"), as flannel writes it. */
export const NO_IP4: Ip4Net = { ip: 0, prefixLen: 0 };

export function isNoIp4(subnet: Ip4Net): boolean {
  return subnet.ip === 0 && subnet.prefixLen === 0;
}

/** "10.5.72.0/24", "10.5.72.0/24 + fc00:0:0:48::/64" or "fc00:0:0:48::/64" (IPv6-only) for logs. */
export function describeSubnets(l: SubnetPair): string {
  if (l.ipv6Subnet === null) return formatIp4Net(l.subnet);
  return isNoIp4(l.subnet) ? l.ipv6Subnet : `${formatIp4Net(l.subnet)} + ${l.ipv6Subnet}`;
}

/** The address that identifies our leases: PublicIP, or PublicIPv6 on an IPv6-only network. */
export function ownAddress(config: NetworkConfig, attrs: LeaseAttrs): string {
  return config.enableIPv4 ? attrs.PublicIP : (attrs.PublicIPv6 ?? '');
}

/** Whether a lease with these attrs is ours (same identifying address). */
export function isOurs(config: NetworkConfig, ours: LeaseAttrs, theirs: LeaseAttrs): boolean {
  return config.enableIPv4 ? theirs.PublicIP === ours.PublicIP : theirs.PublicIPv6 === ownAddress(config, ours);
}

function range4(c: NetworkConfig): SubnetRange {
  return { subnetMin: c.subnetMin, subnetMax: c.subnetMax, subnetLen: c.subnetLen };
}

/**
 * flannel's isSubnetConfigCompat && isIPv6SubnetConfigCompat: each enabled family's part lies in its
 * configured range with its SubnetLen; a disabled family's part is absent (IPv4: 0.0.0.0/0).
 */
export function leaseFitsConfig(config: NetworkConfig, lease: SubnetPair): boolean {
  const v4 = config.enableIPv4 ? subnetFitsConfig(lease.subnet, range4(config)) : isNoIp4(lease.subnet);
  if (!v4) return false;
  if (!config.enableIPv6) return lease.ipv6Subnet === null;
  return lease.ipv6Subnet !== null && subnet6FitsConfig(parseCidr6(lease.ipv6Subnet), subnet6Range(config));
}

/**
 * The subnets existing keys occupy, per family. The 0.0.0.0/0 IPv4 part of IPv6-only keys occupies
 * nothing (flannel head counts it as overlapping every candidate and then finds no subnet).
 */
export function takenSubnets(keys: readonly SubnetPair[]): { taken: Ip4Net[]; taken6: Ip6Net[] } {
  const taken: Ip4Net[] = [];
  const taken6: Ip6Net[] = [];
  for (const k of keys) {
    if (k.ipv6Subnet !== null) taken6.push(parseCidr6(k.ipv6Subnet));
    if (!(k.ipv6Subnet !== null && isNoIp4(k.subnet))) taken.push(k.subnet);
  }
  return { taken, taken6 };
}

export interface AcquireInput {
  config: NetworkConfig;
  /** What we publish; identifies our own leases (ownAddress). */
  attrs: LeaseAttrs;
  /** Every readable lease listed. */
  leases: readonly Lease[];
  /** Subnets of keys whose value could not be read: they occupy their subnets all the same. */
  occupied: readonly SubnetPair[];
  /** FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET of the previous subnet.env. */
  previous: { subnet: Ip4Net | null; ipv6Subnet: string | null };
  random?: () => number;
}

export interface AcquirePlan {
  /** Our leases that do not fit the config: delete them (flanneld does). */
  discard: Lease[];
  /** Our reservations that do not fit the config: left alone, worth a warning. */
  ignore: Lease[];
  step: { kind: 'reuse'; lease: Lease; reservation: boolean } | { kind: 'create'; subnets: SubnetPair; source: 'previous' | 'allocated' };
}

/**
 * One acquire attempt: reuse our lease (a fitting reservation first), else re-create the previous
 * subnet.env's subnets if free and fitting, else allocate each enabled family (docs/compat.md §3).
 * Throws OutOfSubnetsError when a family has no free subnet.
 */
export function planAcquire(input: AcquireInput): AcquirePlan {
  const { config, attrs, leases } = input;
  const mine = leases.filter((l) => isOurs(config, attrs, l.attrs));
  const fitting = mine.filter((l) => leaseFitsConfig(config, l));
  const unfit = mine.filter((l) => !leaseFitsConfig(config, l));
  const discard = unfit.filter((l) => l.etcdLeaseId !== '0');
  const ignore = unfit.filter((l) => l.etcdLeaseId === '0');

  const chosen = fitting.find((l) => l.etcdLeaseId === '0') ?? fitting[0];
  if (chosen) return { discard, ignore, step: { kind: 'reuse', lease: chosen, reservation: chosen.etcdLeaseId === '0' } };

  // Our discarded leases are deleted before the create, so their subnets are free for us.
  const dropped = new Set(discard.map((l) => l.key));
  const { taken, taken6 } = takenSubnets([...leases.filter((l) => !dropped.has(l.key)), ...input.occupied]);
  const prev = previousSubnets(config, input.previous);
  if (prev && leaseFitsConfig(config, prev)) {
    const prev6 = prev.ipv6Subnet === null ? null : parseCidr6(prev.ipv6Subnet);
    const free4 = !config.enableIPv4 || !taken.some((t) => netsOverlap(t, prev.subnet));
    const free6 = prev6 === null || !taken6.some((t) => cidr6Overlap(t, prev6));
    if (free4 && free6) return { discard, ignore, step: { kind: 'create', subnets: prev, source: 'previous' } };
  }
  // EnableIPv6 switched on or off: the IPv4 part of our old lease (or of the previous subnet.env) is
  // kept when it still fits and is free, so containers keep their addresses (flannel allocates anew).
  const candidates4 = [...discard.map((l) => l.subnet), ...(input.previous.subnet ? [input.previous.subnet] : [])];
  const keep4 = config.enableIPv4
    ? (candidates4.find((s) => subnetFitsConfig(s, range4(config)) && !taken.some((t) => netsOverlap(t, s))) ?? null)
    : null;
  return {
    discard,
    ignore,
    step: { kind: 'create', subnets: allocate(config, taken, taken6, leases.length, input.random, keep4), source: 'allocated' },
  };
}

/** The previous run's subnets as one lease shape, or null if a part the config needs is missing. */
function previousSubnets(config: NetworkConfig, previous: AcquireInput['previous']): SubnetPair | null {
  const { subnet, ipv6Subnet } = previous;
  if (config.enableIPv4 && subnet === null) return null;
  if (config.enableIPv6 && ipv6Subnet === null) return null;
  return { subnet: config.enableIPv4 && subnet ? subnet : NO_IP4, ipv6Subnet: config.enableIPv6 ? ipv6Subnet : null };
}

function allocate(
  c: NetworkConfig,
  taken: Ip4Net[],
  taken6: Ip6Net[],
  leaseCount: number,
  random?: () => number,
  keep4: Ip4Net | null = null,
): SubnetPair {
  let subnet = keep4 ?? NO_IP4;
  if (c.enableIPv4 && keep4 === null) {
    const s = pickSubnet(range4(c), taken, random);
    if (!s) {
      throw new OutOfSubnetsError(
        `out of subnets in ${c.network ? formatIp4Net(c.network) : '(no IPv4 network)'} ` +
          `[${formatIp4(c.subnetMin)}..${formatIp4(c.subnetMax)}] /${c.subnetLen} (${leaseCount} leases)`,
      );
    }
    subnet = s;
  }
  let ipv6Subnet: string | null = null;
  if (c.enableIPv6) {
    const s6 = pickSubnet6(subnet6Range(c), taken6, random);
    if (!s6) {
      throw new OutOfSubnetsError(
        `out of subnets in ${c.ipv6Network} [${c.ipv6SubnetMin}..${c.ipv6SubnetMax}] /${c.ipv6SubnetLen} (${leaseCount} leases)`,
      );
    }
    ipv6Subnet = formatCidr6(s6);
  }
  return { subnet, ipv6Subnet };
}

/** When to renew: expiry − margin after the grant, never below 1 s (a short test TTL with a long margin must not spin). */
export function renewDelayMs(ttlSec: number, renewMarginMinutes: number): number {
  return Math.max(ttlSec * 1000 - renewMarginMinutes * 60_000, 1000);
}

/**
 * What a renewal that etcd refused (the key changed since we read it) means, from the key's current
 * entry: gone → revoked ('deleted'); another node's → revoked ('taken-over'); still ours → adopt the
 * current entry, and keep renewing unless it is now a reservation.
 */
export type RenewRefusal =
  { kind: 'revoke'; reason: 'deleted' | 'taken-over'; by: LeaseAttrs | null } | { kind: 'adopt'; lease: Lease; keepRenewing: boolean };

export function judgeRefusedRenewal(config: NetworkConfig, ours: LeaseAttrs, current: Lease | null): RenewRefusal {
  if (!current) return { kind: 'revoke', reason: 'deleted', by: null };
  if (!isOurs(config, ours, current.attrs)) return { kind: 'revoke', reason: 'taken-over', by: current.attrs };
  return { kind: 'adopt', lease: current, keepRenewing: current.etcdLeaseId !== '0' };
}
