// flanneld's iptables rules as data (docs/compat.md §8, HEAD order), plus the pure parts of
// keeping them in place: reading `iptables -S` output, deciding whether a rule set is intact and
// rendering one `iptables-restore --noflush` payload that rebuilds the broken sets atomically.
// No processes are spawned here; iptables-manager.ts is the edge.
import { formatIp4Net, type Ip4Net } from '../subnet/ip4';
import { formatCidr6 } from '../subnet/cidr6';
import type { Ip6Net } from '../subnet/ip6';

export type IptablesTable = 'nat' | 'filter';

export interface IptablesRule {
  readonly table: IptablesTable;
  readonly chain: string;
  /** Match and target arguments in the canonical order `iptables -S` prints them. */
  readonly spec: readonly string[];
}

/**
 * One chain owned by flanneld plus the single jump into it from a built-in chain. The owned chain is
 * rebuilt as a whole (its order matters: RETURNs must precede MASQUERADEs), the jump is only required
 * to exist somewhere in the built-in chain, like flannel checks it.
 */
export interface RuleSet {
  readonly table: IptablesTable;
  /** Built-in chain holding the jump (POSTROUTING / FORWARD). */
  readonly parent: string;
  /** Chain owned by flanneld (FLANNEL-POSTRTG / FLANNEL-FWD). */
  readonly chain: string;
  readonly jump: IptablesRule;
  /** Rules of `chain`, in order. */
  readonly rules: readonly IptablesRule[];
}

export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
export const FORWARD_CHAIN = 'FLANNEL-FWD';
export const MASQ_COMMENT = 'flanneld masq';
export const FORWARD_COMMENT = 'flanneld forward';
/** kube-proxy marks packets it will masquerade itself; flannel skips them to avoid double NAT. */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
export const MULTICAST_NET = '224.0.0.0/4';
/** What flannel's IPv6 rules exclude from masquerading instead (pkg/trafficmngr/iptables masqIP6Rules). */
export const MULTICAST_NET6 = 'ff00::/8';

/** CIDR text as iptables/ip6tables -S print it (for IPv6 the same RFC 5952 form as Go's). */
function cidrText(net: Ip4Net | Ip6Net): string {
  return typeof net.ip === 'bigint' ? formatCidr6(net as Ip6Net) : formatIp4Net(net as Ip4Net);
}

function comment(text: string): string[] {
  return ['-m', 'comment', '--comment', text];
}

function masqTarget(randomFully: boolean): string[] {
  return randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
}

/**
 * flannel HEAD `-ip-masq` rules for network N and own subnet P; for IPv6 (ip6tables) the same rules
 * with ff00::/8 in place of 224.0.0.0/4, as flannel's masqIP6Rules.
 */
export function masqRuleSet(network: Ip4Net | Ip6Net, subnet: Ip4Net | Ip6Net, opts: { randomFully: boolean }): RuleSet {
  const n = cidrText(network);
  const p = cidrText(subnet);
  const multicast = typeof network.ip === 'bigint' ? MULTICAST_NET6 : MULTICAST_NET;
  const rule = (spec: string[]): IptablesRule => ({ table: 'nat', chain: MASQ_CHAIN, spec });
  return {
    table: 'nat',
    parent: 'POSTROUTING',
    chain: MASQ_CHAIN,
    jump: { table: 'nat', chain: 'POSTROUTING', spec: [...comment(MASQ_COMMENT), '-j', MASQ_CHAIN] },
    rules: [
      rule(['-m', 'mark', '--mark', KUBE_PROXY_MARK, ...comment(MASQ_COMMENT), '-j', 'RETURN']),
      // Pod-to-pod traffic inside the overlay keeps its source address.
      rule(['-s', p, '-d', n, ...comment(MASQ_COMMENT), '-j', 'RETURN']),
      rule(['-s', n, '-d', p, ...comment(MASQ_COMMENT), '-j', 'RETURN']),
      // External traffic arriving for a local pod (e.g. a NodePort hop) is not rewritten.
      rule(['!', '-s', n, '-d', p, ...comment(MASQ_COMMENT), '-j', 'RETURN']),
      // Pods leaving the overlay (except multicast) take the host's address.
      rule(['-s', n, '!', '-d', multicast, ...comment(MASQ_COMMENT), ...masqTarget(opts.randomFully)]),
      // The host talking into the overlay uses an address the overlay can route back.
      rule(['!', '-s', n, '-d', n, ...comment(MASQ_COMMENT), ...masqTarget(opts.randomFully)]),
    ],
  };
}

/**
 * Rules an older flanneld (v0.20.0 order) or a run with the other --random-fully setting could have
 * left in FLANNEL-POSTRTG for a previous network N / subnet P, minus those `current` also wants
 * (e.g. the kube-proxy mark rule). Used to recognise leftovers; rebuilding the chain removes them.
 */
export function previousMasqRules(network: Ip4Net, subnet: Ip4Net, current: RuleSet): IptablesRule[] {
  const n = formatIp4Net(network);
  const out: IptablesRule[] = [];
  for (const randomFully of [true, false]) {
    out.push(...masqRuleSet(network, subnet, { randomFully }).rules);
    out.push({ table: 'nat', chain: MASQ_CHAIN, spec: ['-s', n, '-d', n, ...comment(MASQ_COMMENT), '-j', 'RETURN'] });
  }
  // v0.20.0's `! -s N -d P` RETURN is identical to HEAD's; dedupe so counts mean distinct rules.
  const seen = new Set<string>(current.rules.map((r) => r.spec.join('\0')));
  return out.filter((r) => {
    const key = r.spec.join('\0');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** ACCEPT forwarding to and from the overlay (default `-iptables-forward-rules=true`); IPv4 or IPv6. */
export function forwardRuleSet(network: Ip4Net | Ip6Net): RuleSet {
  const n = cidrText(network);
  const rule = (spec: string[]): IptablesRule => ({ table: 'filter', chain: FORWARD_CHAIN, spec });
  return {
    table: 'filter',
    parent: 'FORWARD',
    chain: FORWARD_CHAIN,
    jump: { table: 'filter', chain: 'FORWARD', spec: [...comment(FORWARD_COMMENT), '-j', FORWARD_CHAIN] },
    rules: [rule(['-s', n, ...comment(FORWARD_COMMENT), '-j', 'ACCEPT']), rule(['-d', n, ...comment(FORWARD_COMMENT), '-j', 'ACCEPT'])],
  };
}

export class IptablesPayloadError extends Error {
  override name = 'IptablesPayloadError';
}

const NEEDS_QUOTES = /[\s]/;
const UNREPRESENTABLE = /["\\\n\r]/;

function quoteArg(arg: string): string {
  // Only our own constants and CIDRs reach here; refuse anything iptables-restore would re-split.
  if (arg === '' || UNREPRESENTABLE.test(arg)) {
    throw new IptablesPayloadError(`iptables argument ${JSON.stringify(arg)} cannot be written to iptables-restore`);
  }
  return NEEDS_QUOTES.test(arg) ? `"${arg}"` : arg;
}

/** One iptables-restore line, e.g. `-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`. */
export function renderRule(op: '-A' | '-D' | '-I', rule: IptablesRule): string {
  return [op, rule.chain, ...rule.spec].map(quoteArg).join(' ');
}

export class IptablesParseError extends Error {
  override name = 'IptablesParseError';
}

/**
 * Splits one `iptables -S` line into arguments. iptables quotes an argument (comments) only when
 * needed and escapes `"` and `\` inside quotes, so a plain whitespace split would break comments.
 */
export function tokenizeRuleLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === ' ' || c === '\t') {
      i++;
      continue;
    }
    let token = '';
    if (c === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const d = line[i]!;
        if (d === '\\' && i + 1 < line.length) {
          token += line[i + 1]!;
          i += 2;
        } else if (d === '"') {
          i++;
          closed = true;
          break;
        } else {
          token += d;
          i++;
        }
      }
      if (!closed) throw new IptablesParseError(`unterminated quote in iptables rule: ${line}`);
    } else {
      while (i < line.length && line[i] !== ' ' && line[i] !== '\t') token += line[i++]!;
    }
    out.push(token);
  }
  return out;
}

/** The rule specs of `chain` from `iptables -t T -S CHAIN` output (the `-P`/`-N` lines are skipped). */
export function parseChainListing(output: string, chain: string): string[][] {
  const rules: string[][] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const tokens = tokenizeRuleLine(line);
    if (tokens[0] === '-A' && tokens[1] === chain) rules.push(tokens.slice(2));
  }
  return rules;
}

function sameSpec(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

/** What the kernel currently holds for one rule set. */
export interface RuleSetState {
  /** Rule specs in the built-in parent chain. */
  readonly parentRules: readonly (readonly string[])[];
  /** Rule specs in the owned chain; null when it was not listed (no jump, so it may not exist). */
  readonly chainRules: readonly (readonly string[])[] | null;
}

export function jumpCount(set: RuleSet, state: RuleSetState): number {
  return state.parentRules.filter((spec) => sameSpec(spec, set.jump.spec)).length;
}

/**
 * Intact = the jump exists and the owned chain holds exactly our rules in order. Exactness (rather
 * than flannel's per-rule existence check) also catches reordering and rules left for another
 * network, which would change what gets masqueraded.
 */
export function ruleSetIntact(set: RuleSet, state: RuleSetState): boolean {
  if (jumpCount(set, state) === 0 || state.chainRules === null) return false;
  const have = state.chainRules;
  return have.length === set.rules.length && set.rules.every((r, i) => sameSpec(r.spec, have[i]!));
}

/** How many rules in the owned chain are among `candidates` (for logging leftovers). */
export function countPresent(state: RuleSetState, candidates: readonly IptablesRule[]): number {
  if (state.chainRules === null) return 0;
  return state.chainRules.filter((spec) => candidates.some((c) => sameSpec(c.spec, spec))).length;
}

export interface RebuildItem {
  readonly set: RuleSet;
  /** Copies of the jump currently in the parent chain; all are deleted before one is appended. */
  readonly jumpCopies: number;
}

/**
 * iptables-restore --noflush payload rebuilding each set: declaring the owned chain creates it or,
 * if it exists, flushes it (iptables-restore semantics for user chains, legacy and nft alike); the
 * jump is deleted and re-appended so it ends up once, at the end of the parent chain as in flannel
 * HEAD; then the rules are appended in order. Each table section commits atomically.
 */
export function rebuildPayload(items: readonly RebuildItem[]): string {
  const tables: IptablesTable[] = [];
  for (const it of items) if (!tables.includes(it.set.table)) tables.push(it.set.table);
  let out = '';
  for (const table of tables) {
    const mine = items.filter((it) => it.set.table === table);
    out += `*${table}\n`;
    for (const it of mine) out += `:${it.set.chain} - [0:0]\n`;
    for (const it of mine) {
      for (let i = 0; i < it.jumpCopies; i++) out += renderRule('-D', it.set.jump) + '\n';
      out += renderRule('-A', it.set.jump) + '\n';
      for (const r of it.set.rules) out += renderRule('-A', r) + '\n';
    }
    out += 'COMMIT\n';
  }
  return out;
}

export interface IptablesVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** "nf_tables" / "legacy" when printed, else null. */
  readonly backend: string | null;
}

/** Parses `iptables --version` output, e.g. "iptables v1.8.9 (nf_tables)". */
export function parseIptablesVersion(output: string): IptablesVersion | null {
  const m = /v(\d+)\.(\d+)\.(\d+)(?:\s+\(([^)]+)\))?/.exec(output);
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), backend: m[4] ?? null };
}

function atLeast(v: IptablesVersion, major: number, minor: number, patch: number): boolean {
  if (v.major !== major) return v.major > major;
  if (v.minor !== minor) return v.minor > minor;
  return v.patch >= patch;
}

/** MASQUERADE --random-fully and iptables-restore --wait both arrived in iptables 1.6.2. */
export function supportsRandomFully(v: IptablesVersion): boolean {
  return atLeast(v, 1, 6, 2);
}

export function restoreSupportsWait(v: IptablesVersion): boolean {
  return atLeast(v, 1, 6, 2);
}
