// What a backend plug-in is (src/backend/<type>/) and what the daemon hands it. The daemon only talks
// to these interfaces, through the registry (registry.ts); no other module knows backend names.
//
// A plug-in owns: its `Backend` config fields and their validation, the BackendType/BackendData it
// publishes in our lease, the encapsulation overhead subtracted from the underlay MTU, its device
// and data plane, and how a peer lease maps to a kernel route and a forwarding entry.
import type { Log } from '../ops/log';
import type { ExternalInterface } from '../netlink/interfaces';
import type { DataplaneSnapshot } from '../ops/metrics';
import { jsonTypeName } from '../subnet/gojson';
import type { NetworkConfig } from '../subnet/config';
import type { Lease, LeaseAttrs, LeaseEvent } from '../subnet/lease';

/**
 * A `Backend` setting (or type) tsflanneld refuses: the message names the field and what to do.
 * The daemon exits 1 on it before writing anything (no lease, no subnet.env, no VTEP MAC file).
 */
export class BackendConfigError extends Error {
  override name = 'BackendConfigError';
}

/** What the data plane needs to hold its device and sockets before any lease is written. */
export interface PrepareContext {
  config: NetworkConfig;
  /** Overlay MTU: (Backend.MTU where honoured, else the external interface's MTU) − the backend's overhead. */
  mtu: number;
  /** The VTEP MAC loaded from (or just created in) the MAC file; "" for backends without one. */
  vtepMac: string;
  publicIp: string;
  iface: ExternalInterface;
  /** Local address the send sockets bind to: PublicIP when it is on this host, else the interface address. */
  sendSource: string;
}

export interface Prepared {
  /** The VTEP MAC to publish: ctx.vtepMac, or the MAC of a kernel flannel.N device taken over. */
  vtepMac: string;
}

export interface DataPlaneContext {
  lease: Lease;
  config: NetworkConfig;
  /** Overlay MTU: (Backend.MTU where the backend honours it, else the external interface's MTU) − overhead. */
  mtu: number;
  /** Our VTEP MAC ("aa:bb:cc:dd:ee:ff") for backends that publish one, else "". */
  vtepMac: string;
  publicIp: string;
  iface: ExternalInterface;
  /** Reports an asynchronous fatal data-plane error (e.g. persistent TUN I/O failure): logged once, exit 1. */
  fatal(err: Error): void;
}

/**
 * The data plane and route manager, as seen by the daemon. Calls are serialized: start() once
 * (before subnet.env is written), then applyEvents() batches in etcd order — the first call is the
 * initial snapshot of peer leases as 'added' events, delivered even when empty so stale state from
 * an earlier run can be pruned — then stop() once on shutdown (the daemon's lease is kept, so the
 * data plane may keep its kernel state too). Our own lease never appears in events. A rejected
 * promise is fatal for the daemon (exit 1).
 */
export interface DataPlaneHooks {
  /**
   * Takes the device and the UDP port (everything that can fail on a busy host) before the lease is
   * written, so a start that cannot serve never changes etcd. Optional; called once before start().
   */
  prepare?(ctx: PrepareContext): Promise<Prepared>;
  start(ctx: DataPlaneContext): Promise<void>;
  applyEvents(events: LeaseEvent[]): Promise<void>;
  stop(): Promise<void>;
  /**
   * Whether this data plane carries IPv6 (EnableIPv6). Without it the daemon refuses an IPv6
   * network config instead of publishing IPv6 subnets that nothing forwards.
   */
  readonly ipv6?: boolean;
  /** Packet counters for /metrics; null before start(). */
  stats?(): DataplaneSnapshot | null;
}

/** Daemon settings a backend may use when it builds its data plane (flags, logger). */
export interface BackendDeps {
  /** -tun-name: TUN device name; "" = the name flannel gives the backend's device. */
  tunName: string;
  /** -offload: offload rung request ("auto" or a rung name). */
  offload: string;
  /** -dataplane-threads: forwarding threads; undefined = one per CPU, at most 8. */
  threads?: number;
  /** -vxlan-strict-source: drop VXLAN from outer sources that are no peer's PublicIP. Default false. */
  strictSource?: boolean;
  log: Log;
  /** Reports an asynchronous fatal data-plane error to the daemon. */
  fatal(err: Error): void;
}

/**
 * The `Backend` JSON object, read with Go's case-insensitive field matching. Every field read is
 * marked; `unread()` then lists what the backend does not know, which it refuses (flanneld silently
 * ignores unknown keys; a typo like "DirectRoutng" would otherwise go unnoticed).
 */
export class BackendFields {
  private readonly byFolded = new Map<string, { key: string; value: unknown }>();
  private readonly read = new Set<string>();

  constructor(
    readonly type: string,
    obj: Readonly<Record<string, unknown>>,
  ) {
    for (const [key, value] of Object.entries(obj)) {
      // Go leaves a field untouched for null, so null is "absent" (as in src/subnet/gojson.ts).
      if (value === null) continue;
      this.byFolded.set(key.toLowerCase(), { key, value });
    }
    this.read.add('type');
  }

  private take(field: string): unknown {
    const f = field.toLowerCase();
    this.read.add(f);
    return this.byFolded.get(f)?.value;
  }

  bool(field: string, def: boolean): boolean {
    const v = this.take(field);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') throw new BackendConfigError(`Backend.${field} must be a boolean, got ${jsonTypeName(v)}`);
    return v;
  }

  int(field: string, def: number, min: number, max: number): number {
    const v = this.take(field);
    if (v === undefined) return def;
    if (typeof v !== 'number') throw new BackendConfigError(`Backend.${field} must be a number, got ${jsonTypeName(v)}`);
    if (!Number.isInteger(v)) throw new BackendConfigError(`Backend.${field} must be an integer, got ${v}`);
    if (v < min || v > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
      throw new BackendConfigError(`Backend.${field} must be ${range}, got ${v}`);
    }
    return v;
  }

  /** Original spelling of the fields nobody read, in document order. */
  unread(): string[] {
    const out: string[] = [];
    for (const [folded, { key }] of this.byFolded) if (!this.read.has(folded)) out.push(key);
    return out;
  }
}

/** A remote node as the data plane's forwarding table needs it (docs/compat.md §5.5). */
export interface Peer {
  readonly subnet: import('../subnet/ip4').Ip4Net;
  readonly publicIp: number;
  /** VtepMAC for vxlan; all zero for backends without an inner Ethernet header (udp). Always 6 bytes. */
  readonly vtepMac: Uint8Array;
  readonly vni: number;
}

/**
 * The kernel route a peer lease needs: `<dst> dev <ifindex>` (gateway 0, scope link: into our own
 * device) or `<dst> via <gateway> dev <ifindex>` (scope universe: a host-gw style next hop).
 */
export interface RouteSpec {
  readonly dst: import('../subnet/ip4').Ip4Net;
  readonly gateway: number;
  readonly ifindex: number;
}

/** What one peer lease becomes: a route, plus a forwarding entry when our data plane carries it. */
export interface PeerPlan {
  readonly route: RouteSpec;
  readonly forward: Peer | null;
}

/**
 * A backend's decision for one (scope-checked) peer lease: a plan; `ignored` for leases that are not
 * for this backend (other BackendType, unusable BackendData: logged at debug, like flannel's skip);
 * `refused` with an operator message for a lease of our type we cannot serve (host-gw peer off-link):
 * logged at warn, counted in tsflanneld_peers_refused, and no route at all.
 */
export type LeaseMapping = { readonly plan: PeerPlan } | { readonly ignored: string } | { readonly refused: string };

/** A parsed, validated Backend config of one plug-in. */
export interface ResolvedBackend {
  /** flannel's Backend.Type, lowercase ("vxlan", "udp", "host-gw", "alloc"). */
  readonly type: string;
  /** Human summary of the effective settings for the startup log line. */
  readonly summary: Readonly<Record<string, unknown>>;
  /** Bytes of encapsulation subtracted from the underlay MTU (vxlan 50, udp 28, host-gw/alloc 0). */
  readonly overhead: number;
  /** Backend.MTU when the backend honours it and it is set, else null (use the external interface's). */
  readonly underlayMtu: number | null;
  /** Whether the lease carries a VTEP MAC (vxlan): only then is the MAC file created. */
  readonly needsVtepMac: boolean;
  /**
   * BackendType/BackendData(/BackendV6Data) of our lease, exactly as flanneld writes them for this
   * backend. `vtepMacs`: the VTEP MAC per enabled family (null = family disabled), for backends with one.
   */
  leaseAttrs(vtepMacs: { ipv4: string | null; ipv6: string | null }): Pick<LeaseAttrs, 'BackendType' | 'BackendData' | 'BackendV6Data'>;
  /** The data plane and route manager; null for backends without one (alloc). */
  createHooks(deps: BackendDeps): DataPlaneHooks | null;
}

export interface BackendPlugin {
  /** Backend.Type value (lowercase). */
  readonly type: string;
  /** Reads the plug-in's fields (all of them: unread ones are refused by the registry). */
  parse(fields: BackendFields): ResolvedBackend;
}
