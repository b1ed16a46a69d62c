// The IPv6 side of underlay interface discovery, as flannel HEAD does it (pkg/ipmatch/match.go
// LookupExtIface, pkg/ip/iface.go GetInterfaceIP6Addrs / GetDefaultV6GatewayInterface), read from
// /proc/net/if_inet6 and /proc/net/ipv6_route through the same SysReader as the IPv4 side:
// - usable addresses: global unicast or link-local unicast, not deprecated, not tentative or
//   DAD-failed; globals before link-locals, then permanent (configured) before autoconfigured, then
//   non-temporary before temporary;
// - dual-stack: the interface chosen for IPv4, and its first usable IPv6 address;
// - IPv6-only: -iface (an IPv6 address or a link name), -iface-regex (addresses first, then names),
//   else the link of the IPv6 default route with the lowest metric.
// -public-ipv6, when given, is what the lease publishes; it need not be on the interface.
import { defaultSysReader, firstThatFits, InterfaceError, type SysReader } from './interfaces';
import { formatIp6 } from '../subnet/ip6';
import { isAddr6, parseAddr6 } from '../subnet/cidr6';

export interface ExternalInterface6 {
  name: string;
  index: number;
  /** The interface's IPv6 address flannel would use (Go text form). */
  ip6: string;
  mtu: number;
}

interface Addr6 {
  ip: bigint;
  name: string;
  flags: number;
}

// include/uapi/linux/if_addr.h
const IFA_F_TEMPORARY = 0x01;
const IFA_F_DADFAILED = 0x08;
const IFA_F_DEPRECATED = 0x20;
const IFA_F_TENTATIVE = 0x40;
const IFA_F_PERMANENT = 0x80;

function isLinkLocal(ip: bigint): boolean {
  return ip >> 118n === 0x3fan; // fe80::/10
}

/** Go's IsGlobalUnicast: not ::, ::1, multicast or link-local (IPv4-mapped never appears in if_inet6). */
function isGlobalUnicast(ip: bigint): boolean {
  return ip !== 0n && ip !== 1n && ip >> 120n !== 0xffn && !isLinkLocal(ip);
}

/** Rank by flannel's compareAddrs: global < link-local, permanent < not, non-temporary < temporary. */
function rank(a: Addr6): number {
  return (isLinkLocal(a.ip) ? 4 : 0) + (a.flags & IFA_F_PERMANENT ? 0 : 2) + (a.flags & IFA_F_TEMPORARY ? 1 : 0);
}

/** Usable IPv6 addresses per link name, in flannel's order of preference. */
export function usableIpv6Addresses(sys: SysReader): Map<string, string[]> {
  const text = sys.readFile('/proc/net/if_inet6') ?? '';
  const all: Addr6[] = [];
  // Columns: address(32 hex) ifindex prefixlen scope flags name (hex numbers).
  for (const line of text.split('\n')) {
    const c = line.trim().split(/\s+/);
    if (c.length < 6 || !/^[0-9a-f]{32}$/i.test(c[0]!)) continue;
    const ip = BigInt(`0x${c[0]}`);
    const flags = parseInt(c[4]!, 16);
    if (!(isGlobalUnicast(ip) || isLinkLocal(ip))) continue;
    if (flags & (IFA_F_DEPRECATED | IFA_F_TENTATIVE | IFA_F_DADFAILED)) continue;
    all.push({ ip, name: c[5]!, flags });
  }
  const out = new Map<string, string[]>();
  // Stable sort keeps the kernel's order among equals, as Go's slices.SortFunc on netlink's list does.
  for (const a of all.map((a, i) => ({ a, i })).sort((x, y) => rank(x.a) - rank(y.a) || x.i - y.i)) {
    const list = out.get(a.a.name) ?? [];
    list.push(formatIp6(a.a.ip));
    out.set(a.a.name, list);
  }
  return out;
}

function readIntAttr(sys: SysReader, name: string, attr: 'ifindex' | 'mtu'): number {
  const text = /^[^\s/]{1,15}$/.test(name) ? sys.readFile(`/sys/class/net/${name}/${attr}`) : null;
  const n = text === null ? NaN : Number(text.trim());
  if (!Number.isInteger(n) || n <= 0)
    throw new InterfaceError(`cannot read ${attr} of interface ${name} from /sys/class/net/${name}/${attr}`);
  return n;
}

function describe(sys: SysReader, name: string, ip6: string): ExternalInterface6 {
  return { name, index: readIntAttr(sys, name, 'ifindex'), ip6, mtu: readIntAttr(sys, name, 'mtu') };
}

/** Link names ordered by ifindex, like Go's net.Interfaces(). */
function linksByIndex(sys: SysReader): string[] {
  const links = sys
    .listDir('/sys/class/net')
    .map((n) => ({ n, idx: Number((sys.readFile(`/sys/class/net/${n}/ifindex`) ?? '').trim()) }))
    .filter((l) => Number.isInteger(l.idx) && l.idx > 0);
  links.sort((a, b) => a.idx - b.idx);
  return links.map((l) => l.n);
}

/** The first usable IPv6 address of a link (dual-stack: the link chosen for IPv4). */
export function ipv6AddressOf(name: string, sys: SysReader = defaultSysReader): string {
  const ip6 = usableIpv6Addresses(sys).get(name)?.[0];
  if (ip6 === undefined) {
    throw new InterfaceError(
      `failed to find IPv6 address for interface ${name} (global or link-local, not deprecated); add one or choose another -iface`,
    );
  }
  return ip6;
}

/** Link of the IPv6 default route with the lowest metric (main and other tables; unreachable routes skipped). */
export function defaultRouteInterface6(sys: SysReader): string | null {
  const text = sys.readFile('/proc/net/ipv6_route');
  if (text === null) return null;
  let best: { name: string; metric: number } | null = null;
  // Columns: dst dstlen src srclen nexthop metric refcnt use flags dev (hex).
  const RTF_UP = 0x1;
  const RTF_REJECT = 0x200;
  for (const line of text.split('\n')) {
    const c = line.trim().split(/\s+/);
    if (c.length < 10) continue;
    if (!/^0{32}$/.test(c[0]!) || parseInt(c[1]!, 16) !== 0) continue;
    const flags = parseInt(c[8]!, 16);
    if ((flags & RTF_UP) === 0 || (flags & RTF_REJECT) !== 0 || c[9] === 'lo') continue;
    const metric = parseInt(c[5]!, 16);
    if (best === null || metric < best.metric) best = { name: c[9]!, metric };
  }
  return best?.name ?? null;
}

function byIfaceEntry(sys: SysReader, entry: string, addrs: Map<string, string[]>): ExternalInterface6 {
  if (isAddr6(entry)) {
    const want = formatIp6(parseAddr6(entry));
    for (const name of linksByIndex(sys)) {
      if ((addrs.get(name) ?? []).includes(want)) return describe(sys, name, want);
    }
    throw new InterfaceError(`no interface has the IPv6 address ${want}`);
  }
  if (sys.readFile(`/sys/class/net/${entry}/ifindex`) === null || !/^[^\s/]{1,15}$/.test(entry)) {
    throw new InterfaceError(`no interface named ${entry}`);
  }
  return describe(sys, entry, ipv6AddressOf(entry, sys));
}

function byIfaceRegex(sys: SysReader, pattern: string, addrs: Map<string, string[]>): ExternalInterface6 {
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (e) {
    throw new InterfaceError(`invalid -iface-regex "${pattern}": ${(e as Error).message}`);
  }
  const links = linksByIndex(sys);
  for (const name of links) {
    for (const ip6 of addrs.get(name) ?? []) if (re.test(ip6)) return describe(sys, name, ip6);
  }
  for (const name of links.filter((n) => re.test(n))) {
    const ip6 = addrs.get(name)?.[0];
    if (ip6 !== undefined) return describe(sys, name, ip6);
  }
  throw new InterfaceError(`no interface IPv6 address or name matches "${pattern}"`);
}

/** IPv6-only networks (EnableIPv4 false): the underlay link and its IPv6 address. */
export function findExternalInterface6(
  opts: { iface: readonly string[]; ifaceRegex: readonly string[] },
  sys: SysReader = defaultSysReader,
): ExternalInterface6 {
  const addrs = usableIpv6Addresses(sys);
  if (opts.iface.length === 0 && opts.ifaceRegex.length === 0) {
    const name = defaultRouteInterface6(sys);
    if (name === null) throw new InterfaceError('no IPv6 default route found; use -iface or -iface-regex to choose an interface');
    return describe(sys, name, ipv6AddressOf(name, sys));
  }
  const attempts = [
    ...opts.iface.map((e) => () => byIfaceEntry(sys, e, addrs)),
    ...opts.ifaceRegex.map((r) => () => byIfaceRegex(sys, r, addrs)),
  ];
  return firstThatFits(attempts, '-iface/-iface-regex');
}
