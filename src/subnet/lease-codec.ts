// Byte-exact codecs for what flanneld stores in etcd (docs/compat.md §1): the lease key below
// `<prefix>/subnets/` and the LeaseAttrs JSON value. Our leases must read back identically in Go
// flanneld and vice versa, so encoding mirrors Go's encoding/json output and decoding mirrors its
// leniency (case-insensitive keys, unknown keys ignored).
import { Ip4Net, formatIp4, ip4Net, isIp4, maskOf, parseIp4, tryParseIp4 } from './ip4';
import { Ip6ParseError, formatIp6, ip6Net, maskOf6, parseIp6, parseIp6Net } from './ip6';
import { GoFields, isJsonObject, jsonTypeName } from './gojson';
import type { LeaseAttrs, VxlanBackendData } from './lease';
import { MAX_VNI } from './config';

export class LeaseDecodeError extends Error {
  override name = 'LeaseDecodeError';
}

export class LeaseEncodeError extends Error {
  override name = 'LeaseEncodeError';
}

export class MacParseError extends Error {
  override name = 'MacParseError';
}

// ---- keys ----

/**
 * `<prefix>/subnets`: the range flanneld lists and watches, without a trailing slash (docs/compat.md §1).
 * The one place the `/subnets/` key schema is spelled out; `prefix` has no trailing slash.
 */
export function subnetsPrefix(prefix: string): string {
  return `${prefix}/subnets`;
}

/** The full etcd key of a lease: `<prefix>/subnets/<subnet key>`. */
export function leaseKeyPath(prefix: string, key: string): string {
  return `${subnetsPrefix(prefix)}/${key}`;
}

/** The subnet key of a full etcd key below `<prefix>/subnets/`, or null for any other key. */
export function leaseKeyOf(prefix: string, fullKey: string): string | null {
  const head = `${subnetsPrefix(prefix)}/`;
  return fullKey.startsWith(head) ? fullKey.slice(head.length) : null;
}

/** "10.5.72.0-24", or "10.5.72.0-24&fc00:0:0:48::-64" for a dual-stack lease. */
export function subnetKey(subnet: Ip4Net, ipv6Subnet?: string | null): string {
  const v4 = `${formatIp4(subnet.ip)}-${subnet.prefixLen}`;
  if (ipv6Subnet === undefined || ipv6Subnet === null) return v4;
  const n6 = parseIp6Net(ipv6Subnet);
  return `${v4}&${formatIp6(n6.ip)}-${n6.prefixLen}`;
}

// flannel's own pattern, unescaped dots included: matching the same keys matters more than tidiness.
const SUBNET_KEY_RE = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

/**
 * Parses a lease key (or a full etcd key ending in one). Returns null where flanneld would skip
 * the key. Like flannel's ParseUint(…, 5) / (…, 7), prefix lengths above 31 (v6: 127) are
 * rejected and leading zeros are accepted. Keys with host bits set are rejected too: flannel
 * never writes them and a non-network address would make bogus routes.
 */
export function parseSubnetKey(key: string): { subnet: Ip4Net; ipv6Subnet: string | null } | null {
  const m = SUBNET_KEY_RE.exec(key);
  if (m === null) return null;
  if (!isIp4(m[1]!)) return null;
  const len = Number(m[2]);
  if (len > 31) return null;
  const ip = parseIp4(m[1]!);
  if ((ip & maskOf(len)) >>> 0 !== ip) return null;
  const subnet = ip4Net(ip, len);
  if (m[3] === undefined) return { subnet, ipv6Subnet: null };

  const len6 = Number(m[4]);
  if (len6 > 127) return null;
  let ip6: bigint;
  try {
    ip6 = parseIp6(m[3]);
  } catch (e) {
    if (e instanceof Ip6ParseError) return null;
    throw e;
  }
  if ((ip6 & maskOf6(len6)) !== ip6) return null;
  const n6 = ip6Net(ip6, len6);
  return { subnet, ipv6Subnet: `${formatIp6(n6.ip)}/${n6.prefixLen}` };
}

// ---- values ----

/**
 * JSON text as Go's encoding/json writes it: compact, and with <, >, & and U+2028/U+2029 escaped
 * (Go's default HTML-safe escaping, which also applies to embedded RawMessage values).
 */
export function goJsonStringify(value: unknown): string {
  // undefined for undefined, functions and symbols, whatever lib.d.ts says.
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) throw new LeaseEncodeError(`value of type ${typeof value} cannot be encoded as JSON`);
  return text.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Accepts dotted IPv4 and, like Go's net.ParseIP(..).To4(), the IPv4-mapped IPv6 forms. */
function toIp4Text(text: string): string | null {
  const ip = tryParseIp4(text);
  if (ip >= 0) return formatIp4(ip);
  try {
    const v = parseIp6(text);
    if (v >> 32n === 0xffffn) return formatIp4(Number(v & 0xffffffffn));
  } catch {
    // not an address at all
  }
  return null;
}

function toIp6Text(text: string): string | null {
  try {
    return formatIp6(parseIp6(text));
  } catch {
    return null;
  }
}

/** The exact bytes flanneld would store for these attrs (field order and omissions as in Go). */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  const ip = toIp4Text(attrs.PublicIP);
  if (ip === null) throw new LeaseEncodeError(`PublicIP is not a valid IPv4 address: "${attrs.PublicIP}"`);
  let out = `{"PublicIP":"${ip}","PublicIPv6":`;
  if (attrs.PublicIPv6 == null) {
    out += 'null';
  } else {
    const ip6 = toIp6Text(attrs.PublicIPv6);
    if (ip6 === null) throw new LeaseEncodeError(`PublicIPv6 is not a valid IPv6 address: "${attrs.PublicIPv6}"`);
    out += `"${ip6}"`;
  }
  if (attrs.BackendType !== undefined && attrs.BackendType !== '') {
    out += `,"BackendType":${goJsonStringify(attrs.BackendType)}`;
  }
  if (attrs.BackendData !== undefined && attrs.BackendData !== null) {
    out += `,"BackendData":${goJsonStringify(attrs.BackendData)}`;
  }
  if (attrs.BackendV6Data !== undefined && attrs.BackendV6Data !== null) {
    out += `,"BackendV6Data":${goJsonStringify(attrs.BackendV6Data)}`;
  }
  return out + '}';
}

/** Decodes a lease value; throws LeaseDecodeError with the reason (callers skip such leases, as flannel does). */
export function decodeLeaseAttrs(text: string): LeaseAttrs {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new LeaseDecodeError(`lease value is not valid JSON: ${(e as Error).message}`);
  }
  if (!isJsonObject(doc)) throw new LeaseDecodeError(`lease value must be a JSON object, got ${jsonTypeName(doc)}`);
  const f = new GoFields(doc);

  const pub = f.get('PublicIP');
  if (pub === undefined) throw new LeaseDecodeError('lease value has no PublicIP');
  if (typeof pub !== 'string') throw new LeaseDecodeError(`lease PublicIP must be a string, got ${jsonTypeName(pub)}`);
  const ip = toIp4Text(pub);
  if (ip === null) throw new LeaseDecodeError(`lease PublicIP is not a valid IPv4 address: "${pub}"`);

  let ip6: string | null = null;
  const pub6 = f.get('PublicIPv6');
  if (pub6 !== undefined) {
    if (typeof pub6 !== 'string') {
      throw new LeaseDecodeError(`lease PublicIPv6 must be a string or null, got ${jsonTypeName(pub6)}`);
    }
    ip6 = toIp6Text(pub6);
    if (ip6 === null) throw new LeaseDecodeError(`lease PublicIPv6 is not a valid IPv6 address: "${pub6}"`);
  }

  const attrs: LeaseAttrs = { PublicIP: ip, PublicIPv6: ip6 };
  const bt = f.get('BackendType');
  if (bt !== undefined) {
    if (typeof bt !== 'string') throw new LeaseDecodeError(`lease BackendType must be a string, got ${jsonTypeName(bt)}`);
    if (bt !== '') attrs.BackendType = bt;
  }
  const bd = f.get('BackendData');
  if (bd !== undefined) attrs.BackendData = bd;
  const bd6 = f.get('BackendV6Data');
  if (bd6 !== undefined) attrs.BackendV6Data = bd6;
  return attrs;
}

function vxlanData(data: unknown): VxlanBackendData | null {
  if (!isJsonObject(data)) return null;
  const f = new GoFields(data);
  const vni = f.get('VNI');
  const mac = f.get('VtepMAC');
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > MAX_VNI) return null;
  if (typeof mac !== 'string') return null;
  try {
    return { VNI: vni, VtepMAC: formatMac(parseMac(mac)) };
  } catch (e) {
    if (e instanceof MacParseError) return null;
    throw e;
  }
}

/** The VXLAN peer data of a lease (IPv4 side), or null if it is not a usable VXLAN lease. */
export function vxlanBackendData(attrs: LeaseAttrs): VxlanBackendData | null {
  if (attrs.BackendType !== 'vxlan') return null;
  return vxlanData(attrs.BackendData);
}

/** Same for the IPv6 side (BackendV6Data of a dual-stack lease). */
export function vxlanBackendV6Data(attrs: LeaseAttrs): VxlanBackendData | null {
  if (attrs.BackendType !== 'vxlan') return null;
  return vxlanData(attrs.BackendV6Data);
}

// ---- MAC addresses ----

export function formatMac(bytes: Uint8Array): string {
  if (bytes.length !== 6) throw new MacParseError(`MAC address must be 6 bytes, got ${bytes.length}`);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

const MAC_COLON = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const MAC_DASH = /^[0-9a-fA-F]{2}(-[0-9a-fA-F]{2}){5}$/;
const MAC_DOT = /^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$/;

/** Parses a 6-byte MAC in the forms Go's net.ParseMAC accepts (aa:bb:.., aa-bb-.., aabb.ccdd.eeff). */
export function parseMac(text: string): Uint8Array {
  if (!MAC_COLON.test(text) && !MAC_DASH.test(text) && !MAC_DOT.test(text)) {
    throw new MacParseError(`invalid MAC address "${text}"`);
  }
  const hex = text.replace(/[:.-]/g, '');
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}
