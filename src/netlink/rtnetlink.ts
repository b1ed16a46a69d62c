// Typed access to the addon's rtnetlink calls (native/src/netlink.cc). Consumers depend on the small
// interfaces below (RouteNetlink for the route manager, LinkNetlink for device setup), so they can be
// tested against fakes. NativeRtnetlink is the only implementation that touches the kernel.
//
// The native calls are synchronous. That is deliberate: a single link or address change takes a few µs,
// and even a batch of 5,000 route replaces takes about 13 ms. A thread-pool hop would cost more than it
// saves. The methods still return promises, so a fake (or a later off-thread version) can be async.
import { loadAddon } from '../addon';
import { formatIp4, formatIp4Net, type Ip4, type Ip4Net } from '../subnet/ip4';
import { formatIp6, type Ip6, type Ip6Net } from '../subnet/ip6';
import { formatCidr6 } from '../subnet/cidr6';

/** Routes "installed during boot" — what flanneld and a plain `ip route add` use. We keep it (see RouteManager). */
export const RTPROT_BOOT = 3;
/** Routes the kernel derives from interface addresses; never ours to change. */
export const RTPROT_KERNEL = 2;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;

export interface LinkInfo {
  readonly index: number;
  readonly name: string;
  /** IFLA_INFO_KIND: "tun", "vxlan", ...; "" for devices without one. Absent where the source cannot tell. */
  readonly kind?: string;
  readonly mtu: number;
  /** IFF_* flags as reported by the kernel. */
  readonly flags: number;
  readonly up: boolean;
  /** Hardware address, or null for devices without one (a TUN device). */
  readonly mac: Uint8Array | null;
}

export interface Ip4Addr {
  readonly ip: Ip4;
  readonly prefixLen: number;
  /** Point-to-point peer (IFA_ADDRESS) when it differs from `ip`; omitted otherwise. */
  readonly peer?: Ip4;
}

/** A unicast main-table IPv4 route whose nexthop is the listed device. */
export interface KernelRoute {
  readonly dst: Ip4Net;
  /** 0 = no gateway. */
  readonly gateway: Ip4;
  readonly proto: number;
  readonly scope: number;
  readonly metric: number;
  readonly onlink: boolean;
}

export interface RouteOp {
  /** replace = create or overwrite the route with this dst/prefix/metric; delete succeeds if absent. */
  readonly kind: 'replace' | 'delete';
  readonly dst: Ip4Net;
  readonly gateway?: Ip4;
  readonly onlink?: boolean;
  readonly metric?: number;
}

export interface RouteNetlink {
  listRoutes(ifindex: number): Promise<KernelRoute[]>;
  /**
   * Applies all ops in one native batch (routes via `ifindex`, main table, protocol `proto`, default
   * RTPROT_BOOT). Element i of the result is null if ops[i] succeeded, else its error. Rejects only if
   * the kernel could not be reached at all.
   */
  applyRoutes(ifindex: number, ops: readonly RouteOp[], proto?: number): Promise<(NetlinkError | null)[]>;
}

export interface LinkNetlink {
  getLink(name: string): Promise<LinkInfo>;
  setLinkMtu(ifindex: number, mtu: number): Promise<void>;
  setLinkUp(ifindex: number, up: boolean): Promise<void>;
  listAddrs(ifindex: number): Promise<Ip4Addr[]>;
  /** Adds the address, or leaves it unchanged if it is already there. */
  replaceAddr(ifindex: number, addr: Ip4Addr): Promise<void>;
  /** Removes the address; succeeds if it is already gone. */
  deleteAddr(ifindex: number, addr: Ip4Addr): Promise<void>;
}

export interface Rtnetlink extends RouteNetlink, LinkNetlink {}

/** An IPv6 address on a link (the overlay device's `<lease IPv6 subnet IP>/128`, as flannel-v6.<VNI>). */
export interface Ip6Addr {
  readonly ip: Ip6;
  readonly prefixLen: number;
  /** IFA_F_* flags as the kernel reports them (listing only). */
  readonly flags?: number;
}

/** A unicast main-table IPv6 route whose nexthop is the listed device. */
export interface KernelRoute6 {
  readonly dst: Ip6Net;
  /** 0n = no gateway. */
  readonly gateway: Ip6;
  readonly proto: number;
  readonly scope: number;
  readonly metric: number;
  readonly onlink: boolean;
}

export interface RouteOp6 {
  readonly kind: 'replace' | 'delete';
  readonly dst: Ip6Net;
  readonly gateway?: Ip6;
  readonly onlink?: boolean;
  readonly metric?: number;
}

/** The IPv6 half of the overlay device's kernel state: routes to peers' IPv6 subnets and its own address. */
export interface Route6Netlink {
  listRoutes6(ifindex: number): Promise<KernelRoute6[]>;
  /** As applyRoutes, for IPv6 routes (one native batch; element i is null or the error of ops[i]). */
  applyRoutes6(ifindex: number, ops: readonly RouteOp6[], proto?: number): Promise<(NetlinkError | null)[]>;
  listAddrs6(ifindex: number): Promise<Ip6Addr[]>;
  /** Adds the address (no duplicate address detection), or leaves it as is if present. */
  replaceAddr6(ifindex: number, addr: Ip6Addr): Promise<void>;
  /** Removes the address; succeeds if it is already gone. */
  deleteAddr6(ifindex: number, addr: Ip6Addr): Promise<void>;
}

export class NetlinkError extends Error {
  override name = 'NetlinkError';
  /**
   * @param operation e.g. "replace route"
   * @param object e.g. "10.5.3.0/24 dev flannel.1"
   * @param code errno name, e.g. "EEXIST"
   */
  constructor(
    readonly operation: string,
    readonly object: string,
    readonly code: string,
    readonly errno: number,
    detail: string,
  ) {
    super(`${operation} ${object}: ${detail}`);
  }
}

interface NativeLink {
  index: number;
  name: string;
  kind: string;
  mtu: number;
  flags: number;
  up: boolean;
  mac: Buffer | null;
}

interface NativeAddr {
  ip: number;
  prefixLen: number;
  peer: number;
}

interface NativeRoute {
  dst: number;
  prefixLen: number;
  gateway: number;
  proto: number;
  scope: number;
  metric: number;
  onlink: boolean;
}

/** The netlink slice of the native addon. */
interface NetlinkAddon {
  nlGetLink(name: string): NativeLink;
  nlSetLinkMtu(ifindex: number, mtu: number): void;
  nlSetLinkUp(ifindex: number, up: boolean): void;
  nlDelLink(ifindex: number): void;
  nlListAddrs(ifindex: number): NativeAddr[];
  nlChangeAddr(op: number, ifindex: number, ip: number, prefixLen: number, peer: number): void;
  nlListRoutes(ifindex: number): NativeRoute[];
  nlRouteBatch(
    count: number,
    op: Uint8Array,
    dst: Uint32Array,
    prefixLen: Uint8Array,
    gateway: Uint32Array,
    metric: Uint32Array,
    flags: Uint8Array,
    ifindex: number,
    proto: number,
    errnos: Int32Array,
  ): number;
  nlStrerror(errno: number): { message: string; code: string };
  nlListAddrs6(ifindex: number): Array<{ ip: string; prefixLen: number; flags: number }>;
  nlChangeAddr6(op: number, ifindex: number, ip: Uint8Array, prefixLen: number): void;
  nlListRoutes6(ifindex: number): Array<{
    dst: string;
    prefixLen: number;
    gateway: string;
    proto: number;
    scope: number;
    metric: number;
    onlink: boolean;
  }>;
  nlRouteBatch6(
    count: number,
    op: Uint8Array,
    dst: Uint8Array,
    prefixLen: Uint8Array,
    gateway: Uint8Array,
    metric: Uint32Array,
    flags: Uint8Array,
    ifindex: number,
    proto: number,
    errnos: Int32Array,
  ): number;
}

/** Writes a 128-bit address in network order at out[off..off+16). */
function putIp6(out: Uint8Array, off: number, ip: Ip6): void {
  let v = ip;
  for (let i = 15; i >= 0; i--) {
    out[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function ip6Bytes(ip: Ip6): Uint8Array {
  const b = new Uint8Array(16);
  putIp6(b, 0, ip);
  return b;
}

function hexIp6(hex: string): Ip6 {
  return hex === '' ? 0n : BigInt(`0x${hex}`);
}

const OP_REPLACE = 0;
const OP_DELETE = 1;
const FLAG_ONLINK = 1;

function isErrnoError(err: unknown): err is Error & { code: string; errno: number } {
  return err instanceof Error && typeof (err as { errno?: unknown }).errno === 'number';
}

export class NativeRtnetlink implements Rtnetlink, Route6Netlink {
  private readonly addon: NetlinkAddon;
  /** ifindex → name, learnt from getLink, so that errors can say "dev flannel.1" instead of "link 7". */
  private readonly names = new Map<number, string>();

  constructor(addon?: NetlinkAddon) {
    this.addon = addon ?? (loadAddon() as NetlinkAddon);
  }

  async getLink(name: string): Promise<LinkInfo> {
    const l = this.call('get link', name, () => this.addon.nlGetLink(name));
    this.names.set(l.index, l.name);
    return {
      index: l.index,
      name: l.name,
      kind: l.kind,
      mtu: l.mtu,
      flags: l.flags,
      up: l.up,
      mac: l.mac === null ? null : new Uint8Array(l.mac),
    };
  }

  /** Deletes a link (RTM_DELLINK), e.g. a kernel flannel.N being taken over. */
  async deleteLink(ifindex: number): Promise<void> {
    this.call('delete link', `dev ${this.dev(ifindex)}`, () => this.addon.nlDelLink(ifindex));
  }

  async setLinkMtu(ifindex: number, mtu: number): Promise<void> {
    this.call('set mtu', `${mtu} on dev ${this.dev(ifindex)}`, () => this.addon.nlSetLinkMtu(ifindex, mtu));
  }

  async setLinkUp(ifindex: number, up: boolean): Promise<void> {
    this.call(up ? 'set up' : 'set down', `dev ${this.dev(ifindex)}`, () => this.addon.nlSetLinkUp(ifindex, up));
  }

  async listAddrs(ifindex: number): Promise<Ip4Addr[]> {
    const raw = this.call('list addresses', `of dev ${this.dev(ifindex)}`, () => this.addon.nlListAddrs(ifindex));
    return raw.map((a) => (a.peer === a.ip ? { ip: a.ip, prefixLen: a.prefixLen } : { ip: a.ip, prefixLen: a.prefixLen, peer: a.peer }));
  }

  async replaceAddr(ifindex: number, addr: Ip4Addr): Promise<void> {
    this.call('add address', `${describeAddr(addr)} to dev ${this.dev(ifindex)}`, () =>
      this.addon.nlChangeAddr(OP_REPLACE, ifindex, addr.ip, addr.prefixLen, addr.peer ?? addr.ip),
    );
  }

  async deleteAddr(ifindex: number, addr: Ip4Addr): Promise<void> {
    this.call('delete address', `${describeAddr(addr)} from dev ${this.dev(ifindex)}`, () =>
      this.addon.nlChangeAddr(OP_DELETE, ifindex, addr.ip, addr.prefixLen, addr.peer ?? addr.ip),
    );
  }

  async listRoutes(ifindex: number): Promise<KernelRoute[]> {
    const raw = this.call('list routes', `of dev ${this.dev(ifindex)}`, () => this.addon.nlListRoutes(ifindex));
    return raw.map((r) => ({
      dst: { ip: r.dst, prefixLen: r.prefixLen },
      gateway: r.gateway,
      proto: r.proto,
      scope: r.scope,
      metric: r.metric,
      onlink: r.onlink,
    }));
  }

  async applyRoutes(ifindex: number, ops: readonly RouteOp[], proto: number = RTPROT_BOOT): Promise<(NetlinkError | null)[]> {
    const n = ops.length;
    if (n === 0) return [];
    const op = new Uint8Array(n);
    const dst = new Uint32Array(n);
    const len = new Uint8Array(n);
    const gateway = new Uint32Array(n);
    const metric = new Uint32Array(n);
    const flags = new Uint8Array(n);
    const errnos = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const o = ops[i]!;
      op[i] = o.kind === 'delete' ? OP_DELETE : OP_REPLACE;
      dst[i] = o.dst.ip;
      len[i] = o.dst.prefixLen;
      gateway[i] = o.gateway ?? 0;
      metric[i] = o.metric ?? 0;
      flags[i] = o.onlink === true ? FLAG_ONLINK : 0;
    }
    const dev = this.dev(ifindex);
    const failures = this.call('apply routes', `on dev ${dev}`, () =>
      this.addon.nlRouteBatch(n, op, dst, len, gateway, metric, flags, ifindex, proto, errnos),
    );
    const out: (NetlinkError | null)[] = new Array<NetlinkError | null>(n).fill(null);
    if (failures === 0) return out;
    for (let i = 0; i < n; i++) {
      const e = errnos[i]!;
      if (e === 0) continue;
      const o = ops[i]!;
      const { message, code } = this.addon.nlStrerror(e);
      out[i] = new NetlinkError(`${o.kind} route`, describeRoute(o, dev), code, e, message);
    }
    return out;
  }

  async listAddrs6(ifindex: number): Promise<Ip6Addr[]> {
    const raw = this.call('list IPv6 addresses', `of dev ${this.dev(ifindex)}`, () => this.addon.nlListAddrs6(ifindex));
    return raw.map((a) => ({ ip: hexIp6(a.ip), prefixLen: a.prefixLen, flags: a.flags }));
  }

  async replaceAddr6(ifindex: number, addr: Ip6Addr): Promise<void> {
    this.call('add address', `${formatIp6(addr.ip)}/${addr.prefixLen} to dev ${this.dev(ifindex)}`, () =>
      this.addon.nlChangeAddr6(OP_REPLACE, ifindex, ip6Bytes(addr.ip), addr.prefixLen),
    );
  }

  async deleteAddr6(ifindex: number, addr: Ip6Addr): Promise<void> {
    this.call('delete address', `${formatIp6(addr.ip)}/${addr.prefixLen} from dev ${this.dev(ifindex)}`, () =>
      this.addon.nlChangeAddr6(OP_DELETE, ifindex, ip6Bytes(addr.ip), addr.prefixLen),
    );
  }

  async listRoutes6(ifindex: number): Promise<KernelRoute6[]> {
    const raw = this.call('list IPv6 routes', `of dev ${this.dev(ifindex)}`, () => this.addon.nlListRoutes6(ifindex));
    return raw.map((r) => ({
      dst: { ip: hexIp6(r.dst), prefixLen: r.prefixLen },
      gateway: hexIp6(r.gateway),
      proto: r.proto,
      scope: r.scope,
      metric: r.metric,
      onlink: r.onlink,
    }));
  }

  async applyRoutes6(ifindex: number, ops: readonly RouteOp6[], proto: number = RTPROT_BOOT): Promise<(NetlinkError | null)[]> {
    const n = ops.length;
    if (n === 0) return [];
    const op = new Uint8Array(n);
    const dst = new Uint8Array(16 * n);
    const len = new Uint8Array(n);
    const gateway = new Uint8Array(16 * n);
    const metric = new Uint32Array(n);
    const flags = new Uint8Array(n);
    const errnos = new Int32Array(n);
    ops.forEach((o, i) => {
      op[i] = o.kind === 'delete' ? OP_DELETE : OP_REPLACE;
      putIp6(dst, 16 * i, o.dst.ip);
      len[i] = o.dst.prefixLen;
      putIp6(gateway, 16 * i, o.gateway ?? 0n);
      metric[i] = o.metric ?? 0;
      flags[i] = o.onlink === true ? FLAG_ONLINK : 0;
    });
    const dev = this.dev(ifindex);
    const failures = this.call('apply IPv6 routes', `on dev ${dev}`, () =>
      this.addon.nlRouteBatch6(n, op, dst, len, gateway, metric, flags, ifindex, proto, errnos),
    );
    const out: (NetlinkError | null)[] = new Array<NetlinkError | null>(n).fill(null);
    if (failures === 0) return out;
    ops.forEach((o, i) => {
      const e = errnos[i] ?? 0;
      if (e === 0) return;
      const { message, code } = this.addon.nlStrerror(e);
      out[i] = new NetlinkError(`${o.kind} route`, describeRoute6(o, dev), code, e, message);
    });
    return out;
  }

  private dev(ifindex: number): string {
    return this.names.get(ifindex) ?? `#${ifindex}`;
  }

  /** Runs a native call, turning its errno exception into a NetlinkError with our operation/object. */
  private call<T>(operation: string, object: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (!isErrnoError(err)) throw err;
      const colon = err.message.lastIndexOf(': ');
      const detail = colon >= 0 ? err.message.slice(colon + 2) : err.message;
      // Failing to open the socket at all is reported as such, not as a failure of the operation.
      const opening = err.message.startsWith('open rtnetlink socket');
      throw new NetlinkError(
        opening ? 'open rtnetlink socket' : operation,
        opening ? `for ${operation} ${object}` : object,
        err.code,
        err.errno,
        detail,
      );
    }
  }
}

export function describeAddr(addr: Ip4Addr): string {
  const base = `${formatIp4(addr.ip)}/${addr.prefixLen}`;
  return addr.peer === undefined ? base : `${formatIp4(addr.ip)} peer ${formatIp4(addr.peer)}/${addr.prefixLen}`;
}

/** "10.5.3.0/24 dev flannel.1" in `ip route` word order. */
export function describeRoute(op: Pick<RouteOp, 'dst' | 'gateway' | 'onlink' | 'metric'>, dev: string): string {
  let s = formatIp4Net(op.dst);
  if (op.gateway !== undefined && op.gateway !== 0) s += ` via ${formatIp4(op.gateway)}`;
  s += ` dev ${dev}`;
  if (op.metric !== undefined && op.metric !== 0) s += ` metric ${op.metric}`;
  if (op.onlink === true) s += ' onlink';
  return s;
}

/** "fc00:0:0:9::/64 dev flannel.1" in `ip -6 route` word order. */
export function describeRoute6(op: Pick<RouteOp6, 'dst' | 'gateway' | 'onlink' | 'metric'>, dev: string): string {
  let s = formatCidr6(op.dst);
  if (op.gateway !== undefined && op.gateway !== 0n) s += ` via ${formatIp6(op.gateway)}`;
  s += ` dev ${dev}`;
  if (op.metric !== undefined && op.metric !== 0) s += ` metric ${op.metric}`;
  if (op.onlink === true) s += ' onlink';
  return s;
}
