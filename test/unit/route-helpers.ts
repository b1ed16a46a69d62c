// Shared fakes for the route unit tests: lease builders, an in-memory main routing table behind the
// RouteNetlink interface, a recording forwarding table and a recording logger.
import { formatIp4Net, parseIp4Net, type Ip4, type Ip4Net } from '../../src/subnet/ip4';
import type { Lease, LeaseAttrs, LeaseEvent } from '../../src/subnet/lease';
import {
  NetlinkError,
  RTPROT_BOOT,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  type KernelRoute,
  type RouteNetlink,
  type RouteOp,
} from '../../src/netlink/rtnetlink';
import { formatMac } from '../../src/subnet/lease-codec';
import type { Log } from '../../src/ops/log';
import type { PeerForwarding } from '../../src/routes/route-manager';

export function macFor(subnet: string, salt = 0): string {
  const n = parseIp4Net(subnet).ip;
  return `0a:${(salt & 255).toString(16).padStart(2, '0')}:${[24, 16, 8, 0].map((s) => ((n >>> s) & 255).toString(16).padStart(2, '0')).join(':')}`;
}

export function vxlanLease(subnet: string, opts: { publicIp?: string; mac?: string; vni?: number } = {}): Lease {
  const net = parseIp4Net(subnet);
  const attrs: LeaseAttrs = {
    PublicIP: opts.publicIp ?? `192.0.2.${(net.ip >>> 8) & 255}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: opts.vni ?? 1, VtepMAC: opts.mac ?? macFor(subnet) },
  };
  return lease(net, attrs);
}

export function udpLease(subnet: string): Lease {
  return lease(parseIp4Net(subnet), { PublicIP: '192.0.2.200', PublicIPv6: null, BackendType: 'udp' });
}

function lease(net: Ip4Net, attrs: LeaseAttrs): Lease {
  return {
    key: formatIp4Net(net).replace('/', '-'),
    subnet: net,
    ipv6Subnet: null,
    attrs,
    etcdLeaseId: '7',
    modRevision: '1',
  };
}

export const added = (l: Lease): LeaseEvent => ({ type: 'added', lease: l });
export const removed = (l: Lease): LeaseEvent => ({ type: 'removed', lease: l });
export const changed = (l: Lease, previous: Lease): LeaseEvent => ({ type: 'changed', lease: l, previous });

export function route(dst: string, extra: Partial<Omit<KernelRoute, 'dst'>> = {}): KernelRoute {
  return { dst: parseIp4Net(dst), gateway: 0, proto: RTPROT_BOOT, scope: RT_SCOPE_LINK, metric: 0, onlink: false, ...extra };
}

const ERRNO: Record<string, number> = { EEXIST: 17, ENETDOWN: 100, EPERM: 1, ENODEV: 19, ESRCH: 3 };

/**
 * A main table with the kernel's replace/delete semantics as far as we rely on them: routes are keyed by
 * (dst, metric); replace writes the metric's slot; delete without a metric removes the lowest-metric
 * route of the prefix; deleting a missing route succeeds (like the native batch, which maps ESRCH to 0).
 */
export class FakeRouteTable implements RouteNetlink {
  readonly routesByKey = new Map<string, KernelRoute>();
  readonly batches: RouteOp[][] = [];
  listCalls = 0;
  /** "replace 10.5.3.0/24" → errno name to fail with (until removed). */
  readonly failOps = new Map<string, string>();
  /** When set, the next applyRoutes/listRoutes call rejects with it. */
  failBatch: NetlinkError | null = null;
  failList: NetlinkError | null = null;

  constructor(
    private readonly ifindex = 7,
    private readonly calls: string[] = [],
  ) {}

  add(r: KernelRoute): void {
    this.routesByKey.set(`${formatIp4Net(r.dst)}@${r.metric}`, r);
  }

  /** Sorted "dst" or "dst metric N" texts of all routes. */
  texts(): string[] {
    return [...this.routesByKey.values()]
      .map((r) => formatIp4Net(r.dst) + (r.metric ? ` metric ${r.metric}` : '') + (r.proto === RTPROT_BOOT ? '' : ` proto ${r.proto}`))
      .sort();
  }

  async listRoutes(ifindex: number): Promise<KernelRoute[]> {
    this.listCalls++;
    if (ifindex !== this.ifindex) throw new Error(`fake: wrong ifindex ${ifindex}`);
    if (this.failList) {
      const e = this.failList;
      this.failList = null;
      throw e;
    }
    return [...this.routesByKey.values()];
  }

  async applyRoutes(ifindex: number, ops: readonly RouteOp[], proto = RTPROT_BOOT): Promise<(NetlinkError | null)[]> {
    if (ifindex !== this.ifindex) throw new Error(`fake: wrong ifindex ${ifindex}`);
    if (this.failBatch) {
      const e = this.failBatch;
      this.failBatch = null;
      throw e;
    }
    this.batches.push([...ops]);
    this.calls.push(`batch ${ops.map((o) => `${o.kind} ${formatIp4Net(o.dst)}`).join(', ')}`);
    return ops.map((o) => {
      const dst = formatIp4Net(o.dst);
      const code = this.failOps.get(`${o.kind} ${dst}`);
      if (code !== undefined) return new NetlinkError(`${o.kind} route`, `${dst} dev fake`, code, ERRNO[code] ?? 0, code);
      const metric = o.metric ?? 0;
      if (o.kind === 'replace') {
        this.add({
          dst: o.dst,
          gateway: o.gateway ?? 0,
          proto,
          scope: o.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK,
          metric,
          onlink: o.onlink ?? false,
        });
      } else if (metric !== 0) {
        this.routesByKey.delete(`${dst}@${metric}`);
      } else {
        const lowest = [...this.routesByKey.values()].filter((r) => formatIp4Net(r.dst) === dst).sort((a, b) => a.metric - b.metric)[0];
        if (lowest) this.routesByKey.delete(`${dst}@${lowest.metric}`);
      }
      return null;
    });
  }
}

export class FakeForwarding implements PeerForwarding {
  readonly peers = new Map<string, { publicIp: Ip4; mac: string }>();
  failSet = new Set<string>();

  constructor(private readonly calls: string[] = []) {}

  setPeer(peer: { subnet: Ip4Net; publicIp: Ip4; vtepMac: Uint8Array }): void {
    const s = formatIp4Net(peer.subnet);
    if (this.failSet.has(s)) throw new Error(`fake forwarding: table full for ${s}`);
    this.calls.push(`setPeer ${s}`);
    this.peers.set(s, { publicIp: peer.publicIp, mac: formatMac(peer.vtepMac) });
  }

  removePeer(subnet: Ip4Net): void {
    const s = formatIp4Net(subnet);
    this.calls.push(`removePeer ${s}`);
    this.peers.delete(s);
  }

  subnets(): string[] {
    return [...this.peers.keys()].sort();
  }
}

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  obj: object;
  msg: string;
}

export class RecordingLog implements Log {
  readonly entries: LogEntry[] = [];
  private record(level: LogEntry['level'], obj: object | string, msg?: string): void {
    this.entries.push(typeof obj === 'string' ? { level, obj: {}, msg: obj } : { level, obj, msg: msg ?? '' });
  }
  debug(obj: object | string, msg?: string): void {
    this.record('debug', obj, msg);
  }
  info(obj: object | string, msg?: string): void {
    this.record('info', obj, msg);
  }
  warn(obj: object | string, msg?: string): void {
    this.record('warn', obj, msg);
  }
  error(obj: object | string, msg?: string): void {
    this.record('error', obj, msg);
  }
  fatal(obj: object | string, msg?: string): void {
    this.record('fatal', obj, msg);
  }
  isLevelEnabled(): boolean {
    return true;
  }
  at(level: LogEntry['level']): LogEntry[] {
    return this.entries.filter((e) => e.level === level);
  }
}
