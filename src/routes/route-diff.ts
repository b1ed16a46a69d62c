// Pure part of the route manager: which leases become peers, how a batch of lease events changes
// the desired peer set, and which kernel route operations turn the actual routes of our device into
// the desired ones. No I/O here, so all of it is unit-tested directly.
import { netContains, parseIp4, type Ip4, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { parseMac, vxlanBackendData } from '../subnet/lease-codec';
import { RTPROT_KERNEL, RT_SCOPE_LINK, type KernelRoute } from '../netlink/rtnetlink';

/** A remote node as the data plane and the kernel routes need it (docs/compat.md §5.5). */
export interface Peer {
  readonly subnet: Ip4Net;
  readonly publicIp: Ip4;
  readonly vtepMac: Uint8Array;
  readonly vni: number;
}

export interface PeerScope {
  /** Our own lease's subnet: never a peer. */
  readonly ownSubnet: Ip4Net;
  /** When given, only subnets strictly inside this network become peers. */
  readonly network?: Ip4Net;
}

export type IgnoreReason = 'own-subnet' | 'not-vxlan' | 'bad-public-ip' | 'outside-network';

export type PeerDecision = { readonly peer: Peer } | { readonly ignored: IgnoreReason };

/** Numeric map key of a subnet (exact: ip < 2^32, len < 64, product < 2^53). */
export function netKey(net: Ip4Net): number {
  return net.ip * 64 + net.prefixLen;
}

export function leaseToPeer(lease: Lease, scope: PeerScope): PeerDecision {
  const s = lease.subnet;
  if (s.ip === scope.ownSubnet.ip && s.prefixLen === scope.ownSubnet.prefixLen) return { ignored: 'own-subnet' };
  if (scope.network !== undefined) {
    if (s.prefixLen <= scope.network.prefixLen || !netContains(scope.network, s.ip)) return { ignored: 'outside-network' };
  } else if (s.prefixLen === 0) {
    // A /0 "peer" would replace the host's default route.
    return { ignored: 'outside-network' };
  }
  // vxlanBackendData checks BackendType and normalises/validates the VtepMAC.
  const data = vxlanBackendData(lease.attrs);
  if (data === null) return { ignored: 'not-vxlan' };
  let publicIp: Ip4;
  try {
    publicIp = parseIp4(lease.attrs.PublicIP);
  } catch {
    return { ignored: 'bad-public-ip' };
  }
  return { peer: { subnet: s, publicIp, vtepMac: parseMac(data.VtepMAC), vni: data.VNI } };
}

export type DesiredChange = { readonly kind: 'set'; readonly peer: Peer } | { readonly kind: 'remove'; readonly subnet: Ip4Net };

export interface IgnoredLease {
  readonly lease: Lease;
  readonly reason: IgnoreReason;
}

/**
 * Folds a batch of lease events into at most one change per subnet (the last event wins).
 * A lease that is (or became) unusable maps to 'remove': the caller drops it only if it had it.
 */
export function eventsToChanges(events: readonly LeaseEvent[], scope: PeerScope): { changes: DesiredChange[]; ignored: IgnoredLease[] } {
  const bySubnet = new Map<number, DesiredChange>();
  const ignored: IgnoredLease[] = [];
  for (const ev of events) {
    const key = netKey(ev.lease.subnet);
    let change: DesiredChange;
    if (ev.type === 'removed') {
      change = { kind: 'remove', subnet: ev.lease.subnet };
    } else {
      const d = leaseToPeer(ev.lease, scope);
      if ('peer' in d) {
        change = { kind: 'set', peer: d.peer };
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

/** Desired peers of a full lease list (startup, relist), keyed by netKey. */
export function leasesToPeers(leases: readonly Lease[], scope: PeerScope): { peers: Map<number, Peer>; ignored: IgnoredLease[] } {
  const peers = new Map<number, Peer>();
  const ignored: IgnoredLease[] = [];
  for (const lease of leases) {
    const d = leaseToPeer(lease, scope);
    if ('peer' in d) peers.set(netKey(lease.subnet), d.peer);
    else ignored.push({ lease, reason: d.ignored });
  }
  return { peers, ignored };
}

export function peersEqual(a: Peer, b: Peer): boolean {
  if (a.subnet.ip !== b.subnet.ip || a.subnet.prefixLen !== b.subnet.prefixLen) return false;
  if (a.publicIp !== b.publicIp || a.vni !== b.vni || a.vtepMac.length !== b.vtepMac.length) return false;
  for (let i = 0; i < a.vtepMac.length; i++) if (a.vtepMac[i] !== b.vtepMac[i]) return false;
  return true;
}

/** The one shape our routes have: `<subnet> dev <tun> proto <proto> scope link`, metric 0, no gateway. */
export function isDesiredShape(r: KernelRoute, proto: number): boolean {
  return r.gateway === 0 && r.metric === 0 && r.scope === RT_SCOPE_LINK && r.proto === proto && !r.onlink;
}

export interface RouteDiff {
  /** Subnets whose route is missing or has the wrong shape. */
  readonly replace: Ip4Net[];
  /** Routes on the device that nobody wants (stale peers, strays, duplicates with a metric). */
  readonly delete: KernelRoute[];
}

/**
 * Compares the desired subnets with the main-table routes of our device. The device is ours alone,
 * so every route on it that is not desired goes — except the kernel's own (proto kernel) routes,
 * which follow the device's addresses and are handled by device setup.
 */
export function diffRoutes(desired: Iterable<Ip4Net>, actual: readonly KernelRoute[], proto: number): RouteDiff {
  const want = new Map<number, Ip4Net>();
  for (const net of desired) want.set(netKey(net), net);
  const good = new Set<number>();
  const del: KernelRoute[] = [];
  for (const r of actual) {
    if (r.proto === RTPROT_KERNEL) continue;
    const key = netKey(r.dst);
    if (want.has(key) && r.metric === 0) {
      // A replace overwrites the metric-0 route of this prefix in place, whatever its shape.
      if (isDesiredShape(r, proto)) good.add(key);
    } else {
      del.push(r);
    }
  }
  const replace: Ip4Net[] = [];
  for (const [key, net] of want) if (!good.has(key)) replace.push(net);
  return { replace, delete: del };
}
