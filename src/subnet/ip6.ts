// IPv6 addresses as 128-bit bigints. Only the control plane needs IPv6 (config, lease keys,
// subnet.env), so a bigint is fine here. Text output follows Go's net.IP.String() exactly, because
// flannel writes that form into etcd keys ("fc00:0:0:48::-64") and subnet.env, and we must match.

export type Ip6 = bigint;

export interface Ip6Net {
  readonly ip: Ip6; // network address, host bits zero
  readonly prefixLen: number; // 0..128
}

export class Ip6ParseError extends Error {
  override name = 'Ip6ParseError';
}

const MAX = (1n << 128n) - 1n;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const DOTTED = /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;

function parseGroups(part: string, text: string, allowTrailingV4: boolean): number[] {
  if (part === '') return [];
  const fields = part.split(':');
  const groups: number[] = [];
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (HEX_GROUP.test(f)) {
      groups.push(parseInt(f, 16));
      continue;
    }
    // An embedded dotted IPv4 ("::ffff:1.2.3.4") may only be the last field of the address.
    const m = allowTrailingV4 && i === fields.length - 1 ? DOTTED.exec(f) : null;
    if (m === null) throw new Ip6ParseError(`invalid IPv6 address "${text}"`);
    const o = m.slice(1).map(Number);
    if (o.some((x) => x > 255)) throw new Ip6ParseError(`invalid IPv6 address "${text}"`);
    groups.push((o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!);
  }
  return groups;
}

/** Parses IPv6 text like Go's net.ParseIP (including an embedded trailing dotted IPv4); no zones. */
export function parseIp6(text: string): Ip6 {
  const dbl = text.indexOf('::');
  let groups: number[];
  if (dbl < 0) {
    groups = parseGroups(text, text, true);
    if (groups.length !== 8) throw new Ip6ParseError(`invalid IPv6 address "${text}"`);
  } else {
    if (text.indexOf('::', dbl + 1) >= 0) throw new Ip6ParseError(`invalid IPv6 address "${text}"`);
    const head = parseGroups(text.slice(0, dbl), text, false);
    const tail = parseGroups(text.slice(dbl + 2), text, true);
    // "::" stands for at least one zero group.
    if (head.length + tail.length > 7) throw new Ip6ParseError(`invalid IPv6 address "${text}"`);
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

export function isIp6(text: string): boolean {
  try {
    parseIp6(text);
    return true;
  } catch {
    return false;
  }
}

/** Go's net.IP.String(): lowercase, longest zero run of >= 2 groups compressed, v4-mapped as dotted. */
export function formatIp6(ip: Ip6): string {
  if (ip >> 32n === 0xffffn) {
    const v4 = Number(ip & 0xffffffffn);
    return `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return groups.map((g) => g.toString(16)).join(':');
  const head = groups
    .slice(0, bestStart)
    .map((g) => g.toString(16))
    .join(':');
  const tail = groups
    .slice(bestStart + bestLen)
    .map((g) => g.toString(16))
    .join(':');
  return `${head}::${tail}`;
}

export function maskOf6(prefixLen: number): Ip6 {
  return prefixLen === 0 ? 0n : (MAX << BigInt(128 - prefixLen)) & MAX;
}

/** Number of addresses in a network of this prefix length (2^(128-len)). */
export function sizeOf6(prefixLen: number): bigint {
  return 1n << BigInt(128 - prefixLen);
}

export function ip6Net(ip: Ip6, prefixLen: number): Ip6Net {
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 128) {
    throw new Ip6ParseError(`invalid IPv6 prefix length ${prefixLen}`);
  }
  return { ip: ip & maskOf6(prefixLen), prefixLen };
}

/** Parses "addr/len"; host bits are masked off like Go's net.ParseCIDR network. */
export function parseIp6Net(text: string): Ip6Net {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Ip6ParseError(`invalid IPv6 CIDR "${text}": missing /prefix`);
  const lenText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > 128) {
    throw new Ip6ParseError(`invalid IPv6 CIDR "${text}": bad prefix length`);
  }
  return ip6Net(parseIp6(text.slice(0, slash)), Number(lenText));
}

export function formatIp6Net(net: Ip6Net): string {
  return `${formatIp6(net.ip)}/${net.prefixLen}`;
}

/** Canonical text of an IPv6 CIDR ("FC00:0000::/48" -> "fc00::/48"); throws Ip6ParseError. */
export function canonicalIp6Net(text: string): string {
  return formatIp6Net(parseIp6Net(text));
}

export function net6Contains(net: Ip6Net, ip: Ip6): boolean {
  return (ip & maskOf6(net.prefixLen)) === net.ip;
}
