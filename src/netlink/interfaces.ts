// Underlay ("external") interface discovery, flanneld's -iface / -iface-regex / default-route
// logic (docs/compat.md §7), from /proc, /sys and os.networkInterfaces() so it needs no
// native code. All reads go through SysReader so tests can describe any host.
import { readFileSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import { isIp4, parseIp4 } from '../subnet/ip4';

export interface ExternalInterface {
  name: string;
  index: number;
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
  /** IPv4 addresses per interface name, in the kernel's order. */
  ipv4Addresses(): Map<string, string[]>;
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
    const out = new Map<string, string[]>();
    for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
      const v4 = (addrs ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address);
      if (v4.length > 0) out.set(name, v4);
    }
    return out;
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

/** flannel's preference: a global address, else a link-local one; loopback addresses never. */
function usableIp4(addrs: readonly string[]): string | null {
  const v4 = addrs.filter((a) => isIp4(a) && !isLoopback(a));
  return v4.find((a) => !isLinkLocal(a)) ?? v4[0] ?? null;
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

/** One -iface entry: an IPv4 address (that address on whichever link holds it) or a link name. */
function byIfaceEntry(sys: SysReader, entry: string): ExternalInterface {
  const addrs = sys.ipv4Addresses();
  if (isIp4(entry)) {
    for (const name of linksByIndex(sys)) {
      if ((addrs.get(name) ?? []).includes(entry)) return describe(sys, name, entry);
    }
    throw new InterfaceError(`no interface has the address ${entry}`);
  }
  if (!linkExists(sys, entry)) throw new InterfaceError(`no interface named ${entry}`);
  const ip = usableIp4(addrs.get(entry) ?? []);
  if (ip === null) throw new InterfaceError(`interface ${entry} has no IPv4 address`);
  return describe(sys, entry, ip);
}

/** One -iface-regex: first IPv4 address matching it (links by index), else first link name matching. */
function byIfaceRegex(sys: SysReader, pattern: string): ExternalInterface {
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (e) {
    throw new InterfaceError(`invalid -iface-regex "${pattern}": ${(e as Error).message}`);
  }
  const addrs = sys.ipv4Addresses();
  const links = linksByIndex(sys);
  for (const name of links) {
    for (const ip of addrs.get(name) ?? []) {
      if (isIp4(ip) && re.test(ip)) return describe(sys, name, ip);
    }
  }
  // Unlike flannel, a name match without an IPv4 address does not end the search for this regex.
  const named = links.filter((n) => re.test(n));
  for (const name of named) {
    const ip = usableIp4(addrs.get(name) ?? []);
    if (ip !== null) return describe(sys, name, ip);
  }
  if (named.length > 0) {
    throw new InterfaceError(`interfaces matching "${pattern}" (${named.join(', ')}) have no IPv4 address`);
  }
  throw new InterfaceError(`no interface address or name matches "${pattern}"`);
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

/**
 * The interface and address for inter-host traffic. -iface entries are tried in order, then each
 * -iface-regex; with neither, the default-route interface. Errors explain every failed attempt.
 */
export function findExternalInterface(
  opts: { iface: readonly string[]; ifaceRegex: readonly string[] },
  sys: SysReader = defaultSysReader,
): ExternalInterface {
  if (opts.iface.length === 0 && opts.ifaceRegex.length === 0) {
    const name = defaultRouteInterface(sys);
    if (name === null) throw new InterfaceError('no default route found; use -iface or -iface-regex to choose an interface');
    const ip = usableIp4(sys.ipv4Addresses().get(name) ?? []);
    if (ip === null) throw new InterfaceError(`interface ${name} (default route) has no IPv4 address; use -iface`);
    return describe(sys, name, ip);
  }
  const failures: string[] = [];
  const attempts: Array<() => ExternalInterface> = [
    ...opts.iface.map((e) => () => byIfaceEntry(sys, e)),
    ...opts.ifaceRegex.map((r) => () => byIfaceRegex(sys, r)),
  ];
  for (const attempt of attempts) {
    try {
      return attempt();
    } catch (e) {
      if (!(e instanceof InterfaceError)) throw e;
      failures.push(e.message);
    }
  }
  if (failures.length === 1) throw new InterfaceError(failures[0]);
  throw new InterfaceError(`no usable interface among -iface/-iface-regex: ${failures.join('; ')}`);
}
