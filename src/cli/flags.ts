// Command-line flags with Go `flag` package semantics plus flannel's FLANNELD_<NAME> environment
// fallback (docs/compat.md §7), so existing flanneld unit files and container specs work
// unchanged. The flag table is data: adding a flag is one entry in FLAGS plus its Options field.
import { isIP } from 'node:net';
import { isOffloadRequest, OFFLOAD_REQUESTS } from '../dataplane/offload';
import { RE2JS } from 're2js';
import { isIp4 } from '../subnet/ip4';
import { isAddr6 } from '../subnet/cidr6';

export interface Options {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdKeyfile: string;
  etcdCertfile: string;
  etcdCafile: string;
  etcdUsername: string;
  etcdPassword: string;
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach: string;
  publicIp: string;
  publicIpv6: string;
  subnetFile: string;
  subnetLeaseRenewMargin: number;
  ipMasq: boolean;
  iptablesResync: number;
  iptablesForwardRules: boolean;
  ipMasqFullyRandomDisable: boolean;
  healthzIp: string;
  healthzPort: number;
  v: number;
  version: boolean;
  help: boolean;
  // flanneld flags for the Kubernetes subnet manager and klog: accepted so unit files parse, then
  // refused or reported by compatNotes() (src/cli/compat.ts), never silently ignored.
  kubeSubnetMgr: boolean;
  kubeApiUrl: string;
  kubeAnnotationPrefix: string;
  kubeconfigFile: string;
  netConfPath: string;
  setNodeNetworkUnavailable: boolean;
  ipBlackholeRoute: boolean;
  vmodule: string;
  logBacktraceAt: string;
  tunName: string; // tsflanneld extra; "" means flannel.<VNI>
  vxlanStrictSource: boolean; // tsflanneld extra: drop VXLAN whose outer source is no peer's PublicIP
  offload: string; // tsflanneld extra: data-plane offload rung (src/dataplane/offload.ts)
  dataplaneThreads: number; // tsflanneld extra: forwarding threads; 0 = one per CPU, at most 8
}

export class FlagError extends Error {
  override name = 'FlagError';
}

export const ENV_PREFIX = 'FLANNELD';

type KeysOf<T> = { [K in keyof Options]: Options[K] extends T ? K : never }[keyof Options];
/** Returns a reason when the value is unacceptable, else null. */
type Check<T> = (v: T) => string | null;

type FlagDef =
  | { kind: 'string'; name: string; key: KeysOf<string>; def: string; usage: string; check?: Check<string> }
  // One string value split on ",", like flannel's etcd-endpoints.
  | { kind: 'csv'; name: string; key: KeysOf<string[]>; def: string; usage: string; check?: Check<string> }
  // Repeatable: every occurrence appends; the environment value is a comma-separated list.
  | {
      kind: 'list';
      name: string;
      key: KeysOf<string[]>;
      usage: string;
      check?: Check<string>;
      splitEnv: (v: string) => string[];
    }
  | { kind: 'bool'; name: string; key: KeysOf<boolean>; def: boolean; usage: string }
  | { kind: 'int'; name: string; key: KeysOf<number>; def: number; usage: string; min: number; max: number };

const ifaceName: Check<string> = (v) =>
  v === '' || (v.length <= 15 && !/[\s/:]/.test(v) && v !== '.' && v !== '..')
    ? null
    : 'not a valid Linux interface name (at most 15 characters, no "/", ":" or spaces)';
const ipv4OrEmpty: Check<string> = (v) => (v === '' || isIp4(v) ? null : 'not an IPv4 address');
const ipv6OrEmpty: Check<string> = (v) => (v === '' || isAddr6(v) ? null : 'not an IPv6 address');
const ipOrEmpty: Check<string> = (v) => (v === '' || isIP(v) !== 0 ? null : 'not an IP address');
const nonEmpty: Check<string> = (v) => (v.trim() !== '' ? null : 'must not be empty');
// Go RE2 syntax, as flannel compiles it (regexp.Compile).
const regex: Check<string> = (v) => {
  try {
    RE2JS.compile(v);
    return null;
  } catch (e) {
    return `not a valid Go (RE2) regular expression: ${(e as Error).message}`;
  }
};

const offloadRung: Check<string> = (v) => (isOffloadRequest(v) ? null : `must be one of ${OFFLOAD_REQUESTS.join(', ')}`);

const splitComma = (v: string): string[] => v.split(',');

/** Splits on commas outside (), [], {} so "eth[0-9]{1,2}" survives as one regex. */
export function splitRegexList(v: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < v.length; i++) {
    const ch = v[i]!;
    if (ch === '\\' && i + 1 < v.length) {
      cur += ch + v[++i]!;
      continue;
    }
    if (ch === '(' || ch === '[' || ch === '{') depth++;
    else if ((ch === ')' || ch === ']' || ch === '}') && depth > 0) depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out;
}

export const FLAGS: readonly FlagDef[] = [
  {
    kind: 'csv',
    name: 'etcd-endpoints',
    key: 'etcdEndpoints',
    def: 'http://127.0.0.1:4001,http://127.0.0.1:2379',
    usage: 'comma-separated list of etcd endpoints',
    check: nonEmpty,
  },
  {
    kind: 'string',
    name: 'etcd-prefix',
    key: 'etcdPrefix',
    def: '/coreos.com/network',
    usage: 'etcd key prefix under which the network config and leases live',
    check: nonEmpty,
  },
  {
    kind: 'string',
    name: 'etcd-keyfile',
    key: 'etcdKeyfile',
    def: '',
    usage: 'TLS client key file for etcd (TLS is used only with both keyfile and certfile)',
  },
  { kind: 'string', name: 'etcd-certfile', key: 'etcdCertfile', def: '', usage: 'TLS client certificate file for etcd' },
  { kind: 'string', name: 'etcd-cafile', key: 'etcdCafile', def: '', usage: 'CA certificate file to verify the etcd server' },
  { kind: 'string', name: 'etcd-username', key: 'etcdUsername', def: '', usage: 'username for etcd authentication' },
  { kind: 'string', name: 'etcd-password', key: 'etcdPassword', def: '', usage: 'password for etcd authentication' },
  {
    kind: 'list',
    name: 'iface',
    key: 'iface',
    usage: 'interface (name or IPv4 address) for inter-host traffic; repeat to try several in order',
    check: nonEmpty,
    splitEnv: splitComma,
  },
  {
    kind: 'list',
    name: 'iface-regex',
    key: 'ifaceRegex',
    usage: 'Go (RE2) regex matched against interface IPs, then names, to pick the inter-host interface; repeatable',
    check: regex,
    splitEnv: splitRegexList,
  },
  {
    kind: 'string',
    name: 'iface-can-reach',
    key: 'ifaceCanReach',
    def: '',
    usage: 'use the interface and source address of the route to this IPv4 address (as "ip route get"), after -iface and -iface-regex',
    check: ipv4OrEmpty,
  },
  {
    kind: 'string',
    name: 'public-ip',
    key: 'publicIp',
    def: '',
    usage:
      'IPv4 address other nodes use to reach this one (default: the interface address); without -iface* the interface holding it is used',
    check: ipv4OrEmpty,
  },
  {
    kind: 'string',
    name: 'public-ipv6',
    key: 'publicIpv6',
    def: '',
    usage: 'IPv6 address other nodes use to reach this one with EnableIPv6 (default: the interface IPv6 address)',
    check: ipv6OrEmpty,
  },
  {
    kind: 'string',
    name: 'subnet-file',
    key: 'subnetFile',
    def: '/run/flannel/subnet.env',
    usage: 'file to write the subnet environment (FLANNEL_NETWORK, FLANNEL_SUBNET, ...) to',
    check: nonEmpty,
  },
  {
    kind: 'int',
    name: 'subnet-lease-renew-margin',
    key: 'subnetLeaseRenewMargin',
    def: 60,
    min: 1,
    max: 1439,
    usage: 'renew the 24h lease this many minutes before it expires (1-1439)',
  },
  { kind: 'bool', name: 'ip-masq', key: 'ipMasq', def: false, usage: 'set up IP masquerade for traffic leaving the overlay network' },
  {
    kind: 'int',
    name: 'iptables-resync',
    key: 'iptablesResync',
    def: 5,
    min: 1,
    max: 86400,
    usage: 'seconds between checks that the iptables rules are still in place',
  },
  {
    kind: 'bool',
    name: 'ip-masq-fully-random-disable',
    key: 'ipMasqFullyRandomDisable',
    def: false,
    usage: 'do not add --random-fully to the MASQUERADE rules',
  },
  {
    kind: 'bool',
    name: 'iptables-forward-rules',
    key: 'iptablesForwardRules',
    def: true,
    usage: 'add FORWARD ACCEPT rules for the overlay network',
  },
  {
    kind: 'string',
    name: 'healthz-ip',
    key: 'healthzIp',
    def: '0.0.0.0',
    usage: 'address the health endpoint listens on',
    check: ipOrEmpty,
  },
  {
    kind: 'int',
    name: 'healthz-port',
    key: 'healthzPort',
    def: 0,
    min: 0,
    max: 65535,
    usage: 'port of the /healthz, /readyz and /metrics endpoints (0 disables them)',
  },
  {
    kind: 'bool',
    name: 'kube-subnet-mgr',
    key: 'kubeSubnetMgr',
    def: false,
    usage: "flanneld's Kubernetes subnet manager: not supported by tsflanneld (refused at start; use etcd)",
  },
  {
    kind: 'string',
    name: 'kube-api-url',
    key: 'kubeApiUrl',
    def: '',
    usage: 'Kubernetes API server URL (only with -kube-subnet-mgr; reported as unused)',
  },
  {
    kind: 'string',
    name: 'kube-annotation-prefix',
    key: 'kubeAnnotationPrefix',
    def: 'flannel.alpha.coreos.com',
    usage: 'Kubernetes annotation prefix (only with -kube-subnet-mgr; reported as unused when changed)',
  },
  {
    kind: 'string',
    name: 'kubeconfig-file',
    key: 'kubeconfigFile',
    def: '',
    usage: 'kubeconfig file (only with -kube-subnet-mgr; reported as unused)',
  },
  {
    kind: 'string',
    name: 'net-config-path',
    key: 'netConfPath',
    def: '/etc/kube-flannel/net-conf.json',
    usage: 'network config file (only with -kube-subnet-mgr; reported as unused when changed)',
  },
  {
    kind: 'bool',
    name: 'set-node-network-unavailable',
    key: 'setNodeNetworkUnavailable',
    def: true,
    usage: 'Kubernetes node condition (only with -kube-subnet-mgr; reported as unused when changed)',
  },
  {
    kind: 'bool',
    name: 'ip-blackhole-route',
    key: 'ipBlackholeRoute',
    def: false,
    usage: 'blackhole route for the local subnet (flanneld ≥ v0.21): not supported by tsflanneld (refused at start)',
  },
  { kind: 'int', name: 'v', key: 'v', def: 0, min: 0, max: 2147483647, usage: 'log verbosity (0 info, higher adds debug output)' },
  {
    kind: 'string',
    name: 'vmodule',
    key: 'vmodule',
    def: '',
    usage: "klog's per-file verbosity (pattern=N,...): accepted for flanneld unit files; tsflanneld has no per-file levels, use -v",
  },
  {
    kind: 'string',
    name: 'log_backtrace_at',
    key: 'logBacktraceAt',
    def: '',
    usage: "klog's file:line backtrace trigger: accepted for flanneld unit files; has no effect (reported at start)",
  },
  { kind: 'bool', name: 'version', key: 'version', def: false, usage: 'print the version and exit' },
  { kind: 'bool', name: 'help', key: 'help', def: false, usage: 'print this help and exit' },
  {
    kind: 'string',
    name: 'tun-name',
    key: 'tunName',
    def: '',
    usage: 'name of the overlay device (default flannel.<VNI>)',
    check: ifaceName,
  },
  {
    kind: 'bool',
    name: 'vxlan-strict-source',
    key: 'vxlanStrictSource',
    def: false,
    usage:
      "drop VXLAN datagrams whose outer source is no peer's PublicIP (default: accept them when VNI, our VtepMAC and the inner source fit a peer, as kernel VXLAN does; README Security)",
  },
  {
    kind: 'string',
    name: 'offload',
    key: 'offload',
    def: 'auto',
    usage:
      'data-plane offloads: auto (the best the kernel supports), or cap at a rung: full, no-tun-uso, no-udp-gro, no-udp-gso, none (per-packet)',
    check: offloadRung,
  },
  {
    kind: 'int',
    name: 'dataplane-threads',
    key: 'dataplaneThreads',
    def: 0,
    min: 0,
    max: 64,
    usage:
      'forwarding threads, each with its own TUN queue and UDP socket (the kernel spreads flows over them); 0 = one per CPU, at most 8',
  },
];

const BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));

export function envName(flagName: string): string {
  return `${ENV_PREFIX}_${flagName.toUpperCase().replace(/-/g, '_')}`;
}

function defaults(): Options {
  const o = {} as Record<string, unknown>;
  for (const f of FLAGS) {
    if (f.kind === 'csv') o[f.key] = f.def.split(',');
    else if (f.kind === 'list') o[f.key] = [];
    else o[f.key] = f.def;
  }
  return o as unknown as Options;
}

/** Go strconv.ParseBool. */
function parseBool(s: string): boolean | null {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return null;
}

/** Go strconv.ParseInt(s, 0, 64) without underscores: 0x / 0o / 0b prefixes, leading 0 = octal. */
function parseGoInt(s: string): number | 'parse error' | 'value out of range' {
  const m = /^([+-]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|0([0-7]+)|([0-9]+))$/.exec(s);
  if (m === null) return 'parse error';
  const [, sign, hex, oct, bin, oct0, dec] = m;
  const big =
    hex !== undefined
      ? BigInt(`0x${hex}`)
      : oct !== undefined
        ? BigInt(`0o${oct}`)
        : bin !== undefined
          ? BigInt(`0b${bin}`)
          : oct0 !== undefined
            ? BigInt(`0o${oct0}`)
            : BigInt(dec!);
  const v = sign === '-' ? -big : big;
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) return 'value out of range';
  return Number(v);
}

/** Applies one textual value; returns a reason on failure (the caller words the message). */
function setFlag(o: Options, f: FlagDef, text: string, fromEnv: boolean): string | null {
  switch (f.kind) {
    case 'string': {
      const why = f.check?.(text) ?? null;
      if (why !== null) return why;
      o[f.key] = text;
      return null;
    }
    case 'csv': {
      const parts = text.split(',');
      for (const p of parts) {
        const why = f.check?.(p) ?? null;
        if (why !== null) return `element "${p}": ${why}`;
      }
      o[f.key] = parts;
      return null;
    }
    case 'list': {
      const parts = fromEnv ? f.splitEnv(text) : [text];
      for (const p of parts) {
        const why = f.check?.(p) ?? null;
        if (why !== null) return parts.length > 1 ? `element "${p}": ${why}` : why;
      }
      o[f.key] = [...o[f.key], ...parts];
      return null;
    }
    case 'bool': {
      const b = parseBool(text);
      if (b === null) return 'parse error';
      o[f.key] = b;
      return null;
    }
    case 'int': {
      const n = parseGoInt(text);
      if (typeof n === 'string') return n;
      if (n < f.min || n > f.max) return `must be between ${f.min} and ${f.max}`;
      o[f.key] = n;
      return null;
    }
  }
}

export interface CommandLine {
  options: Options;
  /** FLANNELD_* environment variables that name no flag (flanneld ignores them silently; we report them). */
  unknownEnv: string[];
  /** Arguments after the first non-flag or after "--" (flanneld ignores them; callers may warn). */
  args: string[];
}

/** Parses argv (without node and script) and the environment; throws FlagError like Go's flag package. */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): CommandLine {
  const o = defaults();
  const seen = new Set<string>();
  let i = 0;
  while (i < argv.length) {
    const s = argv[i]!;
    if (s.length < 2 || s[0] !== '-') break; // first non-flag ("-" included) ends the flags
    let minuses = 1;
    if (s[1] === '-') {
      minuses = 2;
      if (s.length === 2) {
        i++;
        break;
      }
    }
    let name = s.slice(minuses);
    if (name === '' || name[0] === '-' || name[0] === '=') throw new FlagError(`bad flag syntax: ${s}`);
    i++;
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq > 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const f = BY_NAME.get(name);
    if (f === undefined) {
      // Go answers -h (when undefined) with the usage, just like -help.
      if (name === 'h') {
        o.help = true;
        seen.add('help');
        continue;
      }
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
    if (f.kind === 'bool') {
      // A bool flag never consumes the next argument: "-ip-masq false" leaves "false" as a non-flag.
      const why = setFlag(o, f, value ?? 'true', false);
      if (why !== null) throw new FlagError(`invalid boolean value "${value}" for -${name}: ${why}`);
    } else {
      if (value === undefined) {
        if (i >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
        value = argv[i++]!;
      }
      const why = setFlag(o, f, value, false);
      if (why !== null) throw new FlagError(`invalid value "${value}" for flag -${name}: ${why}`);
    }
    seen.add(name);
  }

  // Environment only for flags not given on the command line; an empty value counts as unset.
  for (const f of FLAGS) {
    if (seen.has(f.name)) continue;
    const key = envName(f.name);
    const val = env[key];
    if (val === undefined || val === '') continue;
    const why = setFlag(o, f, val, true);
    if (why !== null) throw new FlagError(`invalid value "${val}" for ${key}: ${why}`);
  }
  const known = new Set(FLAGS.map((f) => envName(f.name)));
  const unknownEnv = Object.keys(env)
    .filter((k) => k.startsWith(`${ENV_PREFIX}_`) && !known.has(k))
    .sort();
  return { options: o, args: argv.slice(i), unknownEnv };
}

export function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  return parseCommandLine(argv, env).options;
}

function defaultText(f: FlagDef): string {
  switch (f.kind) {
    case 'string':
    case 'csv':
      return f.def === '' ? '' : ` (default ${JSON.stringify(f.def)})`;
    case 'bool':
      return f.def ? ' (default true)' : '';
    case 'int':
      return f.def === 0 ? '' : ` (default ${f.def})`;
    case 'list':
      return '';
  }
}

const TYPE_NAME: Record<FlagDef['kind'], string> = { string: 'string', csv: 'string', list: 'value', bool: '', int: 'int' };

/** Usage text in the layout of Go's flag.PrintDefaults, sorted by name. */
export function helpText(): string {
  const lines = [
    'Usage: tsflanneld [OPTIONS]',
    '',
    'Flags take one or two dashes: -name value, -name=value, --name=value. Bool flags take no',
    'argument (-ip-masq) or an attached one (-ip-masq=false). Each flag not given on the command',
    `line is read from the environment variable ${ENV_PREFIX}_<NAME> (upper case, "-" as "_"),`,
    'e.g. FLANNELD_IP_MASQ=true; repeatable flags take a comma-separated list there.',
    '',
  ];
  for (const f of [...FLAGS].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    let head = `  -${f.name}`;
    if (TYPE_NAME[f.kind] !== '') head += ` ${TYPE_NAME[f.kind]}`;
    // Go keeps a one-letter bool flag's usage on the same line.
    head += head.length <= 4 ? '\t' : '\n    \t';
    lines.push(`${head}${f.usage}${defaultText(f)} [env ${envName(f.name)}]`);
  }
  return lines.join('\n') + '\n';
}
