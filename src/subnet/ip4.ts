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

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

export function parseIp4(text: string): Ip4 {
  const parts = text.split('.');
  if (parts.length !== 4) throw new Ip4ParseError(`invalid IPv4 address "${text}"`);
  let ip = 0;
  for (const part of parts) {
    if (!OCTET.test(part)) throw new Ip4ParseError(`invalid IPv4 address "${text}"`);
    const octet = Number(part);
    if (octet > 255) throw new Ip4ParseError(`invalid IPv4 address "${text}"`);
    ip = ip * 256 + octet;
  }
  return ip >>> 0;
}

export function isIp4(text: string): boolean {
  try {
    parseIp4(text);
    return true;
  } catch {
    return false;
  }
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
