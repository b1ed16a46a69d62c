// Underlay ("external") interface discovery: flanneld's -iface / -iface-regex / -iface-can-reach /
// -public-ip / default-route rules (docs/interface-selection.md, docs/compat.md §7), from /proc, /sys and
// rtnetlink. All reads go through SysReader so tests can describe any host.
import { readFileSync, readdirSync } from 'node:fs';
import { RE2JS } from 're2js';
import { loadAddon } from '../addon';
import { formatIp4, isIp4, parseIp4 } from '../subnet/ip4';

export interface ExternalInterface {
  name: string;
  index: number;
  /** The interface address flannel calls IfaceAddr: the -iface address, the regex match, the route's source, or the first usable address. */
  ip: string;
  mtu: number;
}

export class InterfaceError extends Error {
  override name = 'InterfaceError';
}

export interface SysReader {
  /** File content, or null if the file does not exist. */
  readFile(path: string): string | null;
  /** Directory entries, or [] if the directory does not exist. */
  listDir(path: string): string[];
  /** IPv4 addresses per interface name, in the kernel's order, secondary and labelled ones included. */
  ipv4Addresses(): Map<string, string[]>;
  /** `ip route get <ip>`: outgoing ifindex and preferred source (null if the kernel names none). */
  routeGet(ip: string): { ifindex: number; src: string | null };
}

interface InterfacesAddon {
  nlListAddrs(ifindex: number): Array<{ ip: number }>;
  nlRouteGet(dst: number): { ifindex: number; src: number };
}

function addon(): InterfacesAddon {
  return loadAddon() as InterfacesAddon;
}

export const defaultSysReader: SysReader = {
  readFile(path) {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new InterfaceError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
    }
  },
  listDir(path) {
    try {
      return readdirSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new InterfaceError(`cannot list ${path}: ${(e as Error).message}`, { cause: e });
    }
  },
  ipv4Addresses() {
    // From rtnetlink per link, not getifaddrs(): getifaddrs names a labelled secondary address
    // ("eth0:1") by its label, which would hide it from the link it is on.
    const out = new Map<string, string[]>();
    for (const name of this.listDir('/sys/class/net')) {
      const idx = Number((this.readFile(`/sys/class/net/${name}/ifindex`) ?? '').trim());
      if (!Number.isInteger(idx) || idx <= 0) continue;
      let addrs: Array<{ ip: number }>;
      try {
        addrs = addon().nlListAddrs(idx);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENODEV') continue; // link went away meanwhile
        throw new InterfaceError(`cannot list the addresses of ${name}: ${(e as Error).message}`, { cause: e });
      }
      if (addrs.length > 0)
        out.set(
          name,
          addrs.map((a) => formatIp4(a.ip)),
        );
    }
    return out;
  },
  routeGet(ip) {
    try {
      const r = addon().nlRouteGet(parseIp4(ip));
      return { ifindex: r.ifindex, src: r.src === 0 ? null : formatIp4(r.src) };
    } catch (e) {
      throw new InterfaceError(`no route to ${ip} (ip route get ${ip}): ${(e as Error).message}`, { cause: e });
    }
  },
};

// Linux names: at most 15 bytes, no "/" or whitespace; guards the /sys paths built from user input.
function validLinkName(name: string): boolean {
  return name.length > 0 && name.length <= 15 && !/[\s/]/.test(name) && name !== '.' && name !== '..';
}

function linkExists(sys: SysReader, name: string): boolean {
  return validLinkName(name) && sys.readFile(`/sys/class/net/${name}/ifindex`) !== null;
}

function readIntAttr(sys: SysReader, name: string, attr: 'ifindex' | 'mtu'): number {
  const text = sys.readFile(`/sys/class/net/${name}/${attr}`);
  const n = text === null ? NaN : Number(text.trim());
  if (!Number.isInteger(n) || n <= 0) {
    throw new InterfaceError(`cannot read ${attr} of interface ${name} from /sys/class/net/${name}/${attr}`);
  }
  return n;
}

function isLinkLocal(ip: string): boolean {
  return parseIp4(ip) >>> 16 === 0xa9fe; // 169.254.0.0/16
}

function isLoopback(ip: string): boolean {
  return parseIp4(ip) >>> 24 === 127;
}

function describe(sys: SysReader, name: string, ip: string): ExternalInterface {
  return { name, index: readIntAttr(sys, name, 'ifindex'), ip, mtu: readIntAttr(sys, name, 'mtu') };
}

/** All links, ordered by ifindex like Go's net.Interfaces(). */
function linksByIndex(sys: SysReader): string[] {
  const links = sys
    .listDir('/sys/class/net')
    .filter((n) => validLinkName(n))
    .map((n) => ({ n, idx: Number((sys.readFile(`/sys/class/net/${n}/ifindex`) ?? '').trim()) }))
    .filter((l) => Number.isInteger(l.idx) && l.idx > 0);
  links.sort((a, b) => a.idx - b.idx);
  return links.map((l) => l.n);
}

/** Compiles an -iface-regex with Go's RE2 syntax (what flannel uses); throws InterfaceError if invalid. */
export function compileIfaceRegex(pattern: string): (s: string) => boolean {
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern);
  } catch (e) {
    throw new InterfaceError(`invalid -iface-regex "${pattern}" (Go RE2 syntax): ${(e as Error).message}`);
  }
  // Go's MatchString: a match anywhere in the string.
  return (s) => re.matcher(s).find();
}

/** flannel's usable addresses of a link, in its order: global before link-local, never loopback. */
function usableIp4s(addrs: readonly string[]): string[] {
  const v4 = addrs.filter((a) => isIp4(a) && !isLoopback(a) && a !== '0.0.0.0' && parseIp4(a) >>> 28 < 0xe);
  return [...v4.filter((a) => !isLinkLocal(a)), ...v4.filter((a) => isLinkLocal(a))];
}

function firstUsable(sys: SysReader, name: string, how: string): ExternalInterface {
  const ip = usableIp4s(sys.ipv4Addresses().get(name) ?? [])[0];
  if (ip === undefined) throw new InterfaceError(`interface ${name} (${how}) has no IPv4 address`);
  return describe(sys, name, ip);
}

/** The link holding an IPv4 address (any of its addresses, secondary ones included), by ifindex order. */
export function interfaceWithAddress(sys: SysReader, ip: string): string | null {
  const addrs = sys.ipv4Addresses();
  for (const name of linksByIndex(sys)) {
    if ((addrs.get(name) ?? []).includes(ip)) return name;
  }
  return null;
}

/** One -iface entry: an IPv4 address (that address on whichever link holds it) or a link name. */
function byIfaceEntry(sys: SysReader, entry: string): ExternalInterface {
  if (isIp4(entry)) {
    const name = interfaceWithAddress(sys, entry);
    if (name === null) throw new InterfaceError(`no interface has the address ${entry}`);
    return describe(sys, name, entry);
  }
  if (!linkExists(sys, entry)) throw new InterfaceError(`no interface named ${entry}`);
  return firstUsable(sys, entry, '-iface');
}

/**
 * One -iface-regex, as flannel matches it: the first usable IPv4 address matching it (links by index);
 * else the first link whose name matches, with its first usable address (no further name is tried).
 */
function byIfaceRegex(sys: SysReader, pattern: string): ExternalInterface {
  const match = compileIfaceRegex(pattern);
  const addrs = sys.ipv4Addresses();
  const links = linksByIndex(sys);
  for (const name of links) {
    const ip = usableIp4s(addrs.get(name) ?? []).find((a) => match(a));
    if (ip !== undefined) return describe(sys, name, ip);
  }
  const named = links.find((n) => match(n));
  if (named !== undefined) return firstUsable(sys, named, `name matches -iface-regex "${pattern}"`);
  const available = links.map((n) => `${n}:[${(addrs.get(n) ?? []).join(' ')}]`).join(', ');
  throw new InterfaceError(`no interface address or name matches "${pattern}" (interfaces: ${available})`);
}

/** -iface-can-reach: the link and source address of the kernel's route to that address. */
function byCanReach(sys: SysReader, target: string): ExternalInterface {
  const r = sys.routeGet(target);
  const name = linksByIndex(sys).find((n) => Number((sys.readFile(`/sys/class/net/${n}/ifindex`) ?? '').trim()) === r.ifindex);
  if (name === undefined)
    throw new InterfaceError(`route to ${target} leaves through ifindex ${r.ifindex}, which has no name in /sys/class/net`);
  return r.src !== null ? describe(sys, name, r.src) : firstUsable(sys, name, `route to ${target}`);
}

/** Interface of the IPv4 default route with the lowest metric, from /proc/net/route. */
export function defaultRouteInterface(sys: SysReader): string | null {
  const text = sys.readFile('/proc/net/route');
  if (text === null) return null;
  let best: { name: string; metric: number } | null = null;
  // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT (hex, host order).
  for (const line of text.split('\n').slice(1)) {
    const c = line.trim().split(/\s+/);
    if (c.length < 8) continue;
    const [name, dest, , flags, , , metric, mask] = c as [string, string, string, string, string, string, string, string];
    const RTF_UP = 0x1;
    if (parseInt(dest, 16) !== 0 || parseInt(mask, 16) !== 0 || (parseInt(flags, 16) & RTF_UP) === 0) continue;
    const m = Number(metric);
    if (best === null || m < best.metric) best = { name, metric: m };
  }
  return best?.name ?? null;
}

export interface InterfaceSelection {
  iface: readonly string[];
  ifaceRegex: readonly string[];
  /** -iface-can-reach; "" = unset. */
  ifaceCanReach?: string;
  /** -public-ip; "" = unset. Without any -iface* flag, the interface holding it is used. */
  publicIp?: string;
}

/**
 * The interface and address for inter-host traffic, chosen like flanneld (docs/interface-selection.md):
 * - no -iface, -iface-regex, -iface-can-reach: the interface holding -public-ip if given (an error if no
 *   interface holds it), else the default-route interface with its first usable address;
 * - else each -iface in order, then each -iface-regex, then -iface-can-reach; the first that resolves wins.
 * Errors explain every failed attempt.
 */
export function findExternalInterface(opts: InterfaceSelection, sys: SysReader = defaultSysReader): ExternalInterface {
  const canReach = opts.ifaceCanReach ?? '';
  const publicIp = opts.publicIp ?? '';
  if (opts.iface.length === 0 && opts.ifaceRegex.length === 0 && canReach === '') {
    if (publicIp !== '') {
      const name = interfaceWithAddress(sys, publicIp);
      if (name === null) {
        throw new InterfaceError(
          `no interface has the address ${publicIp} (-public-ip without -iface uses the interface holding it, as flanneld does); ` +
            'add -iface (or -iface-regex, -iface-can-reach) when the public IP is not on this host, e.g. behind NAT',
        );
      }
      return describe(sys, name, publicIp);
    }
    const name = defaultRouteInterface(sys);
    if (name === null)
      throw new InterfaceError('no default route found; use -iface, -iface-regex or -iface-can-reach to choose an interface');
    return firstUsable(sys, name, 'default route');
  }
  const attempts: Array<() => ExternalInterface> = [
    ...opts.iface.map((e) => () => byIfaceEntry(sys, e)),
    ...opts.ifaceRegex.map((r) => () => byIfaceRegex(sys, r)),
    ...(canReach !== '' ? [() => byCanReach(sys, canReach)] : []),
  ];
  return firstThatFits(attempts, '-iface/-iface-regex/-iface-can-reach');
}

/**
 * The result of the first attempt that finds an interface, trying them in flag order (flanneld's
 * order). An attempt fails with InterfaceError; one failure is reported as it is, several as one line
 * naming `flags`. Other errors propagate.
 */
export function firstThatFits<T>(attempts: ReadonlyArray<() => T>, flags: string): T {
  const failures: string[] = [];
  for (const attempt of attempts) {
    try {
      return attempt();
    } catch (e) {
      if (!(e instanceof InterfaceError)) throw e;
      failures.push(e.message);
    }
  }
  if (failures.length === 1) throw new InterfaceError(failures[0]);
  throw new InterfaceError(`no usable interface among ${flags}: ${failures.join('; ')}`);
}

/**
 * The local address the VXLAN send sockets are bound to: the published PublicIP when it is an address
 * of this host (so peers see the source they know us by), else (a public IP behind NAT) the interface address.
 */
export function sendSourceAddress(publicIp: string, iface: ExternalInterface, sys: SysReader = defaultSysReader): string {
  return interfaceWithAddress(sys, publicIp) !== null ? publicIp : iface.ip;
}
