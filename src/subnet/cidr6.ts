// IPv6 parsing, validation and range math for the control plane (network config, lease subnets,
// allocation), on top of the `ip-cidr` library (and its `ip-address` engine) instead of hand-written
// parsers. Values are 128-bit bigints: the control plane handles a few thousand subnets, never
// packets, so bigint cost does not matter here. The text form written to etcd and subnet.env is
// Go's net.IP.String() (formatIp6 in ip6.ts), which the library does not promise to match.
//
// ip-cidr ships as an ES module only; Node ≥ 20.19 loads it with require() from our CommonJS build.
import IPCIDR from 'ip-cidr';
import { formatIp6, type Ip6, type Ip6Net } from './ip6';

export class Cidr6Error extends Error {
  override name = 'Cidr6Error';
}

export interface Cidr6 extends Ip6Net {
  /** Last address of the network (all host bits set). */
  readonly last: Ip6;
}

/**
 * An IPv6 address in any RFC 4291 text form ("fc00::1", "FC00:0:0::1", "::ffff:192.0.2.1" is
 * refused as IPv4); no zone ("%eth0") and no prefix. Throws Cidr6Error naming the text.
 */
export function parseAddr6(text: string): Ip6 {
  if (text.includes('/') || text.includes('%') || !IPCIDR.isValidAddress(text)) {
    throw new Cidr6Error(`"${text}" is not an IPv6 address`);
  }
  const a = IPCIDR.createAddress(text);
  if (a.v4) throw new Cidr6Error(`"${text}" is not an IPv6 address`);
  return IPCIDR.formatIP<bigint>(a, { type: 'bigInteger' });
}

export function isAddr6(text: string): boolean {
  try {
    parseAddr6(text);
    return true;
  } catch (e) {
    if (e instanceof Cidr6Error) return false;
    throw e;
  }
}

/**
 * "addr/len" (len 0..128) as Go's net.ParseCIDR reads it: the network address with host bits
 * cleared ("fc00::1/48" → fc00::/48). IPv4 CIDRs and zones are refused. Throws Cidr6Error.
 */
export function parseCidr6(text: string): Cidr6 {
  if (text.includes('%') || !text.includes('/') || !IPCIDR.isValidCIDR(text)) {
    throw new Cidr6Error(`"${text}" is not an IPv6 CIDR (address/prefix-length)`);
  }
  const c = new IPCIDR(text);
  if (c.address.v4) throw new Cidr6Error(`"${text}" is not an IPv6 CIDR (address/prefix-length)`);
  return {
    ip: c.start<bigint>({ type: 'bigInteger' }),
    prefixLen: c.address.subnetMask,
    last: c.end<bigint>({ type: 'bigInteger' }),
  };
}

/** The network of `ip` with this prefix length, with its last address. */
export function cidr6(ip: Ip6, prefixLen: number): Cidr6 {
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 128) {
    throw new Cidr6Error(`invalid IPv6 prefix length ${prefixLen}`);
  }
  return parseCidr6(`${formatIp6(ip)}/${prefixLen}`);
}

/** Whether `ip` lies inside `net` (ip-cidr's range test). */
export function cidr6Contains(net: Ip6Net, ip: Ip6): boolean {
  return new IPCIDR(`${formatIp6(net.ip)}/${net.prefixLen}`).contains(ip);
}

/** Number of addresses in a network of this prefix length (2^(128-len)). */
export function size6(prefixLen: number): bigint {
  return 1n << BigInt(128 - prefixLen);
}

/** Whether the two networks share any address (one contains the other). */
export function cidr6Overlap(a: Ip6Net, b: Ip6Net): boolean {
  const shorter = a.prefixLen <= b.prefixLen ? a : b;
  const longer = shorter === a ? b : a;
  return cidr6Contains(shorter, longer.ip);
}

/** Canonical CIDR text in Go's form ("FC00:0000::/48" → "fc00::/48"). */
export function formatCidr6(net: Ip6Net): string {
  return `${formatIp6(net.ip)}/${net.prefixLen}`;
}
