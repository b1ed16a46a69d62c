// Pure part of the route manager: which leases become peers (scope checks here, the backend's own
// mapping through a LeaseMapper), how a batch of lease events changes the desired peer set, and which
// kernel route operations turn the actual routes on the managed devices into the desired ones. No I/O
// here, so all of it is unit-tested directly. Nothing here knows backend names.
import type { LeaseMapping, Peer, PeerPlan, RouteSpec } from '../backend/backend';
import { netContains, parseIp4, type Ip4, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { RTPROT_BOOT, RTPROT_KERNEL, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, type KernelRoute } from '../netlink/rtnetlink';

export type { Peer, PeerPlan, RouteSpec } from '../backend/backend';

/**
 * Route protocol of our routes on a shared device (the external interface: host-gw and DirectRouting
 * routes). It marks them as ours, so that only they are ever removed from that device; an operator's
 * routes there are never touched. Not in /etc/iproute2/rt_protos, so `ip route` shows `proto 157`.
 */
export const RTPROT_TSFLANNELD = 157;

/** A device the route manager puts routes on. */
export interface ManagedDevice {
  readonly ifindex: number;
  /**
   * true: the device is ours alone (our TUN): every non-kernel main-table route on it is ours, with
   * protocol boot like flanneld's. false: shared (the external interface): only routes with protocol
   * RTPROT_TSFLANNELD are ours.
   */
  readonly exclusive: boolean;
}

export interface PeerScope {
  /** Our own lease's subnet: never a peer. */
  readonly ownSubnet: Ip4Net;
  /** When given, only subnets strictly inside this network become peers. */
  readonly network?: Ip4Net;
}

/** The backend's decision for a lease that passed the scope checks (see LeaseMapping). */
export type LeaseMapper = (lease: Lease) => LeaseMapping;

export type Decision = LeaseMapping;

/** Numeric map key of a subnet (exact: ip < 2^32, len < 64, product < 2^53). */
export function netKey(net: Ip4Net): number {
  return net.ip * 64 + net.prefixLen;
}

/** The lease's PublicIP as a number, or null if it is not a dotted IPv4 address. */
export function leasePublicIp(lease: Lease): Ip4 | null {
  try {
    return parseIp4(lease.attrs.PublicIP);
  } catch {
    return null;
  }
}

/** Own subnet, outside-network and /0 checks common to every backend, then the backend's mapping. */
export function decideLease(lease: Lease, scope: PeerScope, map: LeaseMapper): Decision {
  const s = lease.subnet;
  if (s.ip === scope.ownSubnet.ip && s.prefixLen === scope.ownSubnet.prefixLen) return { ignored: 'own-subnet' };
  if (scope.network !== undefined) {
    if (s.prefixLen <= scope.network.prefixLen || !netContains(scope.network, s.ip)) return { ignored: 'outside-network' };
  } else if (s.prefixLen === 0) {
    // A /0 "peer" would replace the host's default route.
    return { ignored: 'outside-network' };
  }
  return map(lease);
}

export type DesiredChange =
  { readonly kind: 'set'; readonly plan: PeerPlan } | { readonly kind: 'remove'; readonly subnet: Ip4Net; readonly refused?: string };

export interface IgnoredLease {
  readonly lease: Lease;
  readonly reason: string;
}

/**
 * Folds a batch of lease events into at most one change per subnet (the last event wins).
 * A lease that is (or became) unusable or refused maps to 'remove': the caller drops what it had.
 */
export function eventsToChanges(
  events: readonly LeaseEvent[],
  scope: PeerScope,
  map: LeaseMapper,
): { changes: DesiredChange[]; ignored: IgnoredLease[] } {
  const bySubnet = new Map<number, DesiredChange>();
  const ignored: IgnoredLease[] = [];
  for (const ev of events) {
    const key = netKey(ev.lease.subnet);
    let change: DesiredChange;
    if (ev.type === 'removed') {
      change = { kind: 'remove', subnet: ev.lease.subnet };
    } else {
      const d = decideLease(ev.lease, scope, map);
      if ('plan' in d) {
        change = { kind: 'set', plan: d.plan };
      } else if ('refused' in d) {
        change = { kind: 'remove', subnet: ev.lease.subnet, refused: d.refused };
      } else {
        ignored.push({ lease: ev.lease, reason: d.ignored });
        if (d.ignored === 'own-subnet') continue;
        change = { kind: 'remove', subnet: ev.lease.subnet };
      }
    }
    // Re-insert so the map's order follows the last event of each subnet.
    bySubnet.delete(key);
    bySubnet.set(key, change);
  }
  return { changes: [...bySubnet.values()], ignored };
}

/** Desired plans of a full lease list (startup, relist), keyed by netKey; refused leases by key too. */
export function leasesToPlans(
  leases: readonly Lease[],
  scope: PeerScope,
  map: LeaseMapper,
): { plans: Map<number, PeerPlan>; refused: Map<number, { subnet: Ip4Net; reason: string }>; ignored: IgnoredLease[] } {
  const plans = new Map<number, PeerPlan>();
  const refused = new Map<number, { subnet: Ip4Net; reason: string }>();
  const ignored: IgnoredLease[] = [];
  for (const lease of leases) {
    const d = decideLease(lease, scope, map);
    if ('plan' in d) plans.set(netKey(lease.subnet), d.plan);
    else if ('refused' in d) refused.set(netKey(lease.subnet), { subnet: lease.subnet, reason: d.refused });
    else ignored.push({ lease, reason: d.ignored });
  }
  return { plans, refused, ignored };
}

export function peersEqual(a: Peer | null, b: Peer | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.subnet.ip !== b.subnet.ip || a.subnet.prefixLen !== b.subnet.prefixLen) return false;
  if (a.publicIp !== b.publicIp || a.vni !== b.vni || a.vtepMac.length !== b.vtepMac.length) return false;
  for (let i = 0; i < a.vtepMac.length; i++) if (a.vtepMac[i] !== b.vtepMac[i]) return false;
  return true;
}

export function routesEqual(a: RouteSpec, b: RouteSpec): boolean {
  return a.dst.ip === b.dst.ip && a.dst.prefixLen === b.dst.prefixLen && a.gateway === b.gateway && a.ifindex === b.ifindex;
}

/** The protocol our routes carry on this device (see ManagedDevice). */
export function protoOf(device: ManagedDevice): number {
  return device.exclusive ? RTPROT_BOOT : RTPROT_TSFLANNELD;
}

/** Whether a listed route on `device` is ours to change or remove. Kernel (address) routes never are. */
export function isOwned(r: KernelRoute, device: ManagedDevice): boolean {
  if (r.proto === RTPROT_KERNEL) return false;
  return device.exclusive || r.proto === RTPROT_TSFLANNELD;
}

/**
 * The shapes our routes have: `<dst> dev <dev> proto <p> scope link` or `<dst> via <gw> dev <dev>
 * proto <p>` (scope universe), metric 0, not onlink.
 */
export function matchesSpec(r: KernelRoute, device: ManagedDevice, spec: RouteSpec): boolean {
  return (
    device.ifindex === spec.ifindex &&
    r.dst.ip === spec.dst.ip &&
    r.dst.prefixLen === spec.dst.prefixLen &&
    r.gateway === spec.gateway &&
    r.metric === 0 &&
    r.scope === (spec.gateway === 0 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE) &&
    r.proto === protoOf(device) &&
    !r.onlink
  );
}

/** Main-table routes listed on one managed device. */
export interface DeviceRoutes {
  readonly device: ManagedDevice;
  readonly routes: readonly KernelRoute[];
}

export interface RouteDiff {
  /** Routes that are missing or have the wrong shape/device. */
  readonly replace: RouteSpec[];
  /** Our routes that nobody wants (stale peers, strays, duplicates with a metric), with their device. */
  readonly delete: { readonly ifindex: number; readonly route: KernelRoute }[];
}

/**
 * Compares the desired routes with the routes listed on the managed devices. Only routes we own
 * (isOwned) are ever deleted. A metric-0 route for a desired prefix is overwritten in place by the
 * replace (the kernel matches dst, metric and table, whatever the device), so it is not deleted first.
 */
export function diffRoutes(desired: Iterable<RouteSpec>, actual: readonly DeviceRoutes[]): RouteDiff {
  const want = new Map<number, RouteSpec>();
  for (const spec of desired) want.set(netKey(spec.dst), spec);
  const good = new Set<number>();
  const del: { ifindex: number; route: KernelRoute }[] = [];
  for (const { device, routes } of actual) {
    for (const r of routes) {
      if (r.proto === RTPROT_KERNEL) continue;
      const key = netKey(r.dst);
      const spec = want.get(key);
      if (spec !== undefined && r.metric === 0) {
        if (matchesSpec(r, device, spec)) good.add(key);
      } else if (isOwned(r, device)) {
        del.push({ ifindex: device.ifindex, route: r });
      }
    }
  }
  const replace: RouteSpec[] = [];
  for (const [key, spec] of want) if (!good.has(key)) replace.push(spec);
  return { replace, delete: del };
}
