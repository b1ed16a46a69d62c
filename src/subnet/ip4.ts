// IPv4 addresses as unsigned 32-bit numbers in host order: cheap to compare, mask and hash, and
// usable as-is by the data plane's typed-array tables. Parsing is strict (no octal, no shorthand)
// because these strings come from etcd and flags and a lenient parse would hide operator mistakes.

export type Ip4 = number;

export interface Ip4Net {
  readonly ip: Ip4; // network address, host bits zero
  readonly prefixLen: number; // 0..32
}

export class Ip4ParseError extends Error {
  override name = 'Ip4ParseError';
}

/**
 * Strict dotted-quad parse (four decimal octets 0..255, no leading zeros, nothing else) → the address,
 * or -1. A character scan: lease listings parse tens of thousands of addresses at startup.
 */
export function tryParseIp4(text: string): number {
  const n = text.length;
  if (n < 7 || n > 15) return -1;
  let ip = 0;
  let parts = 0;
  let i = 0;
  while (i <= n) {
    const start = i;
    let octet = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 46 /* . */) break;
      if (c < 48 || c > 57) return -1;
      octet = octet * 10 + (c - 48);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(start) === 48)) return -1;
    ip = ip * 256 + octet;
    parts++;
    if (i === n) break;
    i++; // the dot
    if (parts === 4) return -1;
  }
  return parts === 4 ? ip >>> 0 : -1;
}

export function parseIp4(text: string): Ip4 {
  const ip = tryParseIp4(text);
  if (ip < 0) throw new Ip4ParseError(`invalid IPv4 address "${text}"`);
  return ip;
}

export function isIp4(text: string): boolean {
  return tryParseIp4(text) >= 0;
}

export function formatIp4(ip: Ip4): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export function maskOf(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** Number of addresses in a network of this prefix length (2^(32-len)). */
export function sizeOf(prefixLen: number): number {
  return 2 ** (32 - prefixLen);
}

export function ip4Net(ip: Ip4, prefixLen: number): Ip4Net {
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 32) {
    throw new Ip4ParseError(`invalid IPv4 prefix length ${prefixLen}`);
  }
  return { ip: (ip & maskOf(prefixLen)) >>> 0, prefixLen };
}

/** Parses "a.b.c.d/len"; host bits are masked off like Go's net.ParseCIDR network. */
export function parseIp4Net(text: string): Ip4Net {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Ip4ParseError(`invalid IPv4 CIDR "${text}": missing /prefix`);
  const lenText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]?)$/.test(lenText) || Number(lenText) > 32) {
    throw new Ip4ParseError(`invalid IPv4 CIDR "${text}": bad prefix length`);
  }
  return ip4Net(parseIp4(text.slice(0, slash)), Number(lenText));
}

export function formatIp4Net(net: Ip4Net): string {
  return `${formatIp4(net.ip)}/${net.prefixLen}`;
}

export function netContains(net: Ip4Net, ip: Ip4): boolean {
  return (ip & maskOf(net.prefixLen)) >>> 0 === net.ip;
}

export function netsOverlap(a: Ip4Net, b: Ip4Net): boolean {
  const len = Math.min(a.prefixLen, b.prefixLen);
  const m = maskOf(len);
  return (a.ip & m) >>> 0 === (b.ip & m) >>> 0;
}

export function netsEqual(a: Ip4Net, b: Ip4Net): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}
