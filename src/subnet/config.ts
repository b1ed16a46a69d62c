// flannel's network config (the JSON at `<prefix>/config`), decoded and validated the way
// flanneld does it (docs/compat.md §2) so that every node of a mixed cluster derives the same
// SubnetLen/SubnetMin/SubnetMax from the same document.
import { Ip4, Ip4Net, Ip4ParseError, formatIp4, maskOf, netContains, parseIp4, parseIp4Net, sizeOf } from './ip4';
import { formatIp6, type Ip6 } from './ip6';
import { Cidr6Error, cidr6Contains, formatCidr6, parseAddr6, parseCidr6, size6, type Cidr6 } from './cidr6';
import { GoFields, isJsonObject, jsonTypeName } from './gojson';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * The `Backend` object as flannel's config carries it: its Type, and the whole object for the
 * backend plug-in to decode (src/backend/<type>/: each plug-in owns and validates its own fields).
 */
export interface BackendConfig {
  type: string; // lowercased; "udp" when the Backend object is absent (flannel quirk)
  /** The Backend JSON object as written ({} when absent). */
  fields: Readonly<Record<string, unknown>>;
}

export interface NetworkConfig {
  enableIPv4: boolean;
  enableIPv6: boolean;
  network: Ip4Net | null; // null iff !enableIPv4
  subnetLen: number;
  subnetMin: Ip4;
  subnetMax: Ip4;
  ipv6Network: string | null; // canonical CIDR text, null iff !enableIPv6
  ipv6SubnetLen: number;
  ipv6SubnetMin: string | null; // canonical address text
  ipv6SubnetMax: string | null;
  backend: BackendConfig;
}

// ---- typed field readers (Go decode errors become "<Field> must be ..." messages) ----

function readBool(f: GoFields, field: string, prefix: string, def: boolean): boolean {
  const v = f.get(field);
  if (v === undefined) return def;
  if (typeof v !== 'boolean') throw new ConfigError(`${prefix}${field} must be a boolean, got ${jsonTypeName(v)}`);
  return v;
}

function readInt(f: GoFields, field: string, prefix: string, def: number, min: number, max: number): number {
  const v = f.get(field);
  if (v === undefined) return def;
  if (typeof v !== 'number') throw new ConfigError(`${prefix}${field} must be a number, got ${jsonTypeName(v)}`);
  if (!Number.isInteger(v)) throw new ConfigError(`${prefix}${field} must be an integer, got ${v}`);
  if (v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
    throw new ConfigError(`${prefix}${field} must be ${range}, got ${v}`);
  }
  return v;
}

function readString(f: GoFields, field: string, prefix: string): string | undefined {
  const v = f.get(field);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${prefix}${field} must be a string, got ${jsonTypeName(v)}`);
  return v;
}

function readIp4(f: GoFields, field: string): Ip4 {
  const s = readString(f, field, '');
  if (s === undefined) return 0;
  try {
    return parseIp4(s);
  } catch (e) {
    if (e instanceof Ip4ParseError) throw new ConfigError(`${field} must be an IPv4 address: "${s}"`);
    throw e;
  }
}

function readIp4Net(f: GoFields, field: string): Ip4Net | null {
  const s = readString(f, field, '');
  if (s === undefined) return null;
  try {
    return parseIp4Net(s);
  } catch (e) {
    if (e instanceof Ip4ParseError) throw new ConfigError(`${field} must be an IPv4 CIDR like "10.5.0.0/16": "${s}"`);
    throw e;
  }
}

function readIp6(f: GoFields, field: string): Ip6 | null {
  const s = readString(f, field, '');
  if (s === undefined) return null;
  try {
    return parseAddr6(s);
  } catch (e) {
    if (e instanceof Cidr6Error) throw new ConfigError(`${field} must be an IPv6 address: "${s}"`);
    throw e;
  }
}

function readIp6Net(f: GoFields, field: string): Cidr6 | null {
  const s = readString(f, field, '');
  if (s === undefined) return null;
  try {
    return parseCidr6(s);
  } catch (e) {
    if (e instanceof Cidr6Error) throw new ConfigError(`${field} must be an IPv6 CIDR like "fc00::/48": "${s}"`);
    throw e;
  }
}

// ---- validation (order and meaning follow flannel's ParseConfig) ----

/**
 * flannel's default subnet length: /24 (v6 /64) if the network is big enough, else network + 2.
 * Error texts are flannel's (pkg/subnet/config.go CheckNetworkConfig), then what to change.
 */
function defaultSubnetLen(prefixLen: number, bits: 32 | 128, netField: string): number {
  const tooSmall = bits - 4; // /28 (v6 /124): four subnets of four addresses
  const roomy = bits === 32 ? 22 : 62;
  if (prefixLen > tooSmall) {
    // flannel says "network" for IPv4 and "IPv6Network" for IPv6.
    const name = bits === 32 ? 'network' : netField;
    throw new ConfigError(`${name} is too small. Minimum useful network prefix is /${tooSmall} (${netField} is a /${prefixLen})`);
  }
  return prefixLen <= roomy ? (bits === 32 ? 24 : 64) : prefixLen + 2;
}

function checkGivenSubnetLen(subnetLen: number, prefixLen: number, bits: 32 | 128, lenField: string, netField: string): void {
  // Each host needs room for at least the .0 device address plus a usable address.
  // flannel names the field "SubnetLen" for both families.
  if (subnetLen > bits - 2) throw new ConfigError(`SubnetLen must be less than /${bits - 1} (${lenField} is ${subnetLen})`);
  // The first subnet is never handed out, so fewer than four subnets is nearly useless.
  if (subnetLen < prefixLen + 2) {
    throw new ConfigError(
      `network must be able to accommodate at least four subnets (${lenField} ${subnetLen} with a /${prefixLen} ${netField}; ` +
        `use at least /${prefixLen + 2})`,
    );
  }
}

interface RawV4 {
  network: Ip4Net | null;
  subnetLen: number;
  subnetMin: Ip4;
  subnetMax: Ip4;
}

interface RawV6 {
  network: Cidr6 | null;
  subnetLen: number;
  subnetMin: Ip6 | null;
  subnetMax: Ip6 | null;
}

// Go decodes (and type-checks) every field before flannel validates, even for a disabled family.
function readV4(f: GoFields): RawV4 {
  return {
    network: readIp4Net(f, 'Network'),
    subnetLen: readInt(f, 'SubnetLen', '', 0, 0, Number.MAX_SAFE_INTEGER),
    subnetMin: readIp4(f, 'SubnetMin'),
    subnetMax: readIp4(f, 'SubnetMax'),
  };
}

function readV6(f: GoFields): RawV6 {
  return {
    network: readIp6Net(f, 'IPv6Network'),
    subnetLen: readInt(f, 'IPv6SubnetLen', '', 0, 0, Number.MAX_SAFE_INTEGER),
    subnetMin: readIp6(f, 'IPv6SubnetMin'),
    subnetMax: readIp6(f, 'IPv6SubnetMax'),
  };
}

function validateIPv4(raw: RawV4): Pick<NetworkConfig, 'network' | 'subnetLen' | 'subnetMin' | 'subnetMax'> {
  const network = raw.network;
  let { subnetLen, subnetMin, subnetMax } = raw;
  // 0.0.0.0/0 is Go's zero value, which flannel treats as "not configured".
  if (network === null || (network.ip === 0 && network.prefixLen === 0)) {
    throw new ConfigError('please define a correct Network parameter in the flannel config');
  }
  if (subnetLen > 0) checkGivenSubnetLen(subnetLen, network.prefixLen, 32, 'SubnetLen', 'Network');
  else subnetLen = defaultSubnetLen(network.prefixLen, 32, 'Network');

  const size = sizeOf(subnetLen);
  // 0.0.0.0 is Go's zero value: an explicit "0.0.0.0" also means "use the default".
  if (subnetMin === 0) {
    // The first subnet is skipped: its .0 would collide with the network address of the whole range.
    subnetMin = (network.ip + size) >>> 0;
  } else if (!netContains(network, subnetMin)) {
    throw new ConfigError(`SubnetMin is not in the range of the Network: ${formatIp4(subnetMin)}`);
  }
  if (subnetMax === 0) {
    // Last subnet of the network; >>> 0 wraps like Go's uint32 when the network ends at 255.255.255.255.
    subnetMax = (network.ip + sizeOf(network.prefixLen) - size) >>> 0;
  } else if (!netContains(network, subnetMax)) {
    throw new ConfigError(`SubnetMax is not in the range of the Network: ${formatIp4(subnetMax)}`);
  }
  const mask = maskOf(subnetLen);
  if ((subnetMin & mask) >>> 0 !== subnetMin) {
    throw new ConfigError(`SubnetMin is not on a SubnetLen boundary: ${formatIp4(subnetMin)}`);
  }
  if ((subnetMax & mask) >>> 0 !== subnetMax) {
    throw new ConfigError(`SubnetMax is not on a SubnetLen boundary: ${formatIp4(subnetMax)}`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

function validateIPv6(raw: RawV6): Pick<NetworkConfig, 'ipv6Network' | 'ipv6SubnetLen' | 'ipv6SubnetMin' | 'ipv6SubnetMax'> {
  const network = raw.network;
  let { subnetLen, subnetMin, subnetMax } = raw;
  if (network === null || (network.ip === 0n && network.prefixLen === 0)) {
    throw new ConfigError('please define a correct IPv6Network parameter in the flannel config');
  }
  if (subnetLen > 0) checkGivenSubnetLen(subnetLen, network.prefixLen, 128, 'IPv6SubnetLen', 'IPv6Network');
  else subnetLen = defaultSubnetLen(network.prefixLen, 128, 'IPv6Network');

  const size = size6(subnetLen);
  // Unlike IPv4, flannel's IPv6 bounds are pointers, but it also treats "::" as unset (ip.IsEmpty).
  if (subnetMin === null || subnetMin === 0n) {
    // The first subnet is skipped, as for IPv4.
    subnetMin = network.ip + size;
  } else if (!cidr6Contains(network, subnetMin)) {
    throw new ConfigError(
      `IPv6SubnetMin is not in the range of the IPv6Network: ${formatIp6(subnetMin)} is outside ${formatCidr6(network)}`,
    );
  }
  if (subnetMax === null || subnetMax === 0n) {
    subnetMax = network.last + 1n - size;
  } else if (!cidr6Contains(network, subnetMax)) {
    throw new ConfigError(
      `IPv6SubnetMax is not in the range of the IPv6Network: ${formatIp6(subnetMax)} is outside ${formatCidr6(network)}`,
    );
  }
  // Aligned means: the address is the first of its /IPv6SubnetLen network.
  if (subnetMin % size !== 0n) {
    throw new ConfigError(`IPv6SubnetMin is not on a SubnetLen boundary: ${formatIp6(subnetMin)} (IPv6SubnetLen is /${subnetLen})`);
  }
  if (subnetMax % size !== 0n) {
    throw new ConfigError(`IPv6SubnetMax is not on a SubnetLen boundary: ${formatIp6(subnetMax)} (IPv6SubnetLen is /${subnetLen})`);
  }
  return {
    ipv6Network: formatCidr6(network),
    ipv6SubnetLen: subnetLen,
    ipv6SubnetMin: formatIp6(subnetMin),
    ipv6SubnetMax: formatIp6(subnetMax),
  };
}

function parseBackend(raw: unknown): BackendConfig {
  // flannel picks "udp" when Backend is missing (its docs say vxlan; docs/compat.md §2 ⚠).
  // A JSON null is Go's "absent" for this RawMessage-backed field too.
  if (raw === undefined) return { type: 'udp', fields: {} };
  if (!isJsonObject(raw)) throw new ConfigError(`Backend must be an object, got ${jsonTypeName(raw)}`);
  const type = readString(new GoFields(raw), 'Type', 'Backend.');
  return { type: (type ?? '').toLowerCase(), fields: raw };
}

/** Decodes and validates a flannel network config; throws ConfigError naming the bad field. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`flannel config is not valid JSON: ${(e as Error).message}`);
  }
  // Go decodes a top-level null into an untouched struct, which then fails the Network check.
  if (doc === null) doc = {};
  if (!isJsonObject(doc)) throw new ConfigError(`flannel config must be a JSON object, got ${jsonTypeName(doc)}`);
  const f = new GoFields(doc);

  const enableIPv4 = readBool(f, 'EnableIPv4', '', true);
  const enableIPv6 = readBool(f, 'EnableIPv6', '', false);
  const raw4 = readV4(f);
  const raw6 = readV6(f);
  const backendRaw = f.get('Backend');
  if (backendRaw !== undefined && !isJsonObject(backendRaw)) {
    throw new ConfigError(`Backend must be an object, got ${jsonTypeName(backendRaw)}`);
  }

  const v4 = enableIPv4 ? validateIPv4(raw4) : { network: null, subnetLen: 0, subnetMin: 0, subnetMax: 0 };
  const v6 = enableIPv6 ? validateIPv6(raw6) : { ipv6Network: null, ipv6SubnetLen: 0, ipv6SubnetMin: null, ipv6SubnetMax: null };
  // flannel decodes the Backend object only after validating the networks.
  const backend = parseBackend(backendRaw);
  return { enableIPv4, enableIPv6, ...v4, ...v6, backend };
}
