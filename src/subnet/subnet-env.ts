// subnet.env: the file the flannel CNI plugin reads (docs/compat.md §4). Written atomically
// so the plugin never sees a half-written file, and read back at start-up to prefer the subnet
// this node had before (lease acquire step 2).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Ip4Net, Ip4ParseError, formatIp4, formatIp4Net, parseIp4Net } from './ip4';
import { Ip6ParseError, formatIp6, formatIp6Net, parseIp6Net } from './ip6';

export class SubnetEnvError extends Error {
  override name = 'SubnetEnvError';
}

export interface SubnetEnvValues {
  network: Ip4Net | null;
  subnet: Ip4Net | null;
  ipv6Network: string | null; // CIDR text
  ipv6Subnet: string | null; // CIDR text
  mtu: number;
  ipMasq: boolean;
}

/** flanneld's exact file content; FLANNEL_SUBNET carries the first host address (.1) of the lease. */
export function formatSubnetEnv(v: SubnetEnvValues): string {
  let out = '';
  if (v.network !== null) out += `FLANNEL_NETWORK=${formatIp4Net(v.network)}\n`;
  if (v.subnet !== null) out += `FLANNEL_SUBNET=${formatIp4(v.subnet.ip + 1)}/${v.subnet.prefixLen}\n`;
  if (v.ipv6Network !== null) out += `FLANNEL_IPV6_NETWORK=${formatIp6Net(parseIp6Net(v.ipv6Network))}\n`;
  if (v.ipv6Subnet !== null) {
    const n = parseIp6Net(v.ipv6Subnet);
    out += `FLANNEL_IPV6_SUBNET=${formatIp6(n.ip + 1n)}/${n.prefixLen}\n`;
  }
  out += `FLANNEL_MTU=${v.mtu}\n`;
  out += `FLANNEL_IPMASQ=${v.ipMasq ? 'true' : 'false'}\n`;
  return out;
}

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_.]*$/;
const DQ_ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\', '"': '"', $: '$' };

function parseValue(raw: string, lineNo: number): string {
  const q = raw[0];
  if (q === '"' || q === "'") {
    let val = '';
    let i = 1;
    for (; i < raw.length && raw[i] !== q; i++) {
      const ch = raw[i]!;
      if (q === '"' && ch === '\\' && i + 1 < raw.length) {
        const next = raw[++i]!;
        val += DQ_ESCAPES[next] ?? `\\${next}`;
      } else {
        val += ch;
      }
    }
    if (i >= raw.length) throw new SubnetEnvError(`line ${lineNo}: unterminated ${q} quote`);
    const rest = raw.slice(i + 1).trim();
    if (rest !== '' && !rest.startsWith('#')) throw new SubnetEnvError(`line ${lineNo}: unexpected text after quoted value`);
    return val;
  }
  // Unquoted: an inline comment starts at whitespace followed by '#'.
  const hash = raw.search(/\s#/);
  return (hash >= 0 ? raw.slice(0, hash) : raw).trim();
}

/**
 * Parses dotenv text the way godotenv (which flanneld uses to read subnet.env back) does for
 * single-line values: `KEY=value` or `KEY: value`, optional `export `, comments, blank lines,
 * single/double quotes. Later keys win. Malformed lines throw SubnetEnvError.
 */
export function parseSubnetEnv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    if (/^export\s/.test(line)) line = line.slice(6).trimStart();
    const sep = line.search(/[=:]/);
    if (sep < 0) throw new SubnetEnvError(`line ${i + 1}: expected KEY=value, got "${line.slice(0, 40)}"`);
    const key = line.slice(0, sep).trim();
    if (!KEY_RE.test(key)) throw new SubnetEnvError(`line ${i + 1}: invalid key "${key.slice(0, 40)}"`);
    out.set(key, parseValue(line.slice(sep + 1).trimStart(), i + 1));
  }
  return out;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Replaces `filePath` atomically: write a temp file in the same directory, fsync, chmod 0644,
 * rename over the target, fsync the directory. The CNI plugin reads this file at any moment.
 */
export async function writeSubnetEnv(filePath: string, v: SubnetEnvValues): Promise<void> {
  const dir = path.dirname(filePath);
  const tmp = path.join(dir, `.${path.basename(filePath)}.tmp-${process.pid}`);
  const content = formatSubnetEnv(v);
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    const fh = await fs.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(content);
      await fh.sync();
      // The open() mode is filtered by the umask; the CNI plugin may run as another user.
      await fh.chmod(0o644);
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, filePath);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw new SubnetEnvError(`cannot write subnet file ${filePath}: ${errText(e)}`, { cause: e });
  }
  // Persist the rename itself; failing here does not undo a completed, visible write.
  try {
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the data is already in place.
  }
}

export interface PreviousLease {
  /** FLANNEL_NETWORK, for removing the previous run's iptables rules. */
  network: Ip4Net | null;
  subnet: Ip4Net | null;
  ipv6Subnet: string | null;
  warning: string | null;
}

/**
 * The subnet(s) this node held before, from an earlier subnet.env. Never throws: a missing file
 * is normal (first start); anything unusable yields nulls plus a warning for the operator.
 */
export async function readPreviousLease(filePath: string): Promise<PreviousLease> {
  const none = { network: null, subnet: null, ipv6Subnet: null };
  let text: string;
  try {
    text = await fs.readFile(filePath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ...none, warning: null };
    return { ...none, warning: `cannot read previous subnet file ${filePath}: ${errText(e)}; allocating a subnet afresh` };
  }
  let env: Map<string, string>;
  try {
    env = parseSubnetEnv(text);
  } catch (e) {
    return { ...none, warning: `previous subnet file ${filePath} is corrupt (${errText(e)}); ignoring it` };
  }

  const warnings: string[] = [];
  let network: Ip4Net | null = null;
  const net = env.get('FLANNEL_NETWORK');
  if (net !== undefined) {
    try {
      network = parseIp4Net(net);
    } catch (e) {
      if (!(e instanceof Ip4ParseError)) throw e;
      warnings.push(`FLANNEL_NETWORK "${net}" is not a valid IPv4 CIDR`);
    }
  }
  let subnet: Ip4Net | null = null;
  let ipv6Subnet: string | null = null;
  const v4 = env.get('FLANNEL_SUBNET');
  if (v4 !== undefined) {
    try {
      subnet = parseIp4Net(v4); // host bits masked: 10.5.72.1/24 -> 10.5.72.0/24, as flannel does
    } catch (e) {
      if (!(e instanceof Ip4ParseError)) throw e;
      warnings.push(`FLANNEL_SUBNET "${v4}" is not a valid IPv4 CIDR`);
    }
  }
  const v6 = env.get('FLANNEL_IPV6_SUBNET');
  if (v6 !== undefined) {
    try {
      ipv6Subnet = formatIp6Net(parseIp6Net(v6));
    } catch (e) {
      if (!(e instanceof Ip6ParseError)) throw e;
      warnings.push(`FLANNEL_IPV6_SUBNET "${v6}" is not a valid IPv6 CIDR`);
    }
  }
  if (v4 === undefined && v6 === undefined) warnings.push('it has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET');
  const warning = warnings.length === 0 ? null : `previous subnet file ${filePath}: ${warnings.join('; ')}; ignoring those values`;
  return { network, subnet, ipv6Subnet, warning };
}
