// Keeps flanneld's masquerade and forward rules in the kernel (docs/compat.md §8). Each sync
// lists the chains with `iptables -S` and, when a rule set is not intact, rebuilds it with a single
// `iptables-restore --noflush` process so the rules appear in order and atomically per table.
// Rules are left in place on stop, like flannel: traffic keeps flowing across daemon restarts.
import { spawn } from 'node:child_process';
import type { Log } from '../ops/log';
import { formatIp4Net, netsEqual, type Ip4Net } from '../subnet/ip4';
import { formatCidr6 } from '../subnet/cidr6';
import type { Ip6Net } from '../subnet/ip6';
import {
  countPresent,
  forwardRuleSet,
  jumpCount,
  MASQ_CHAIN,
  masqRuleSet,
  parseChainListing,
  parseIptablesVersion,
  previousMasqRules,
  rebuildPayload,
  restoreSupportsWait,
  ruleSetIntact,
  supportsRandomFully,
  type IptablesRule,
  type IptablesTable,
  type IptablesVersion,
  type RebuildItem,
  type RuleSet,
  type RuleSetState,
} from './masquerade-rules';

export interface CommandResult {
  /** Exit code; null when killed by a signal (e.g. the timeout). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program without a shell; rejects only when it cannot be started. */
export type CommandRunner = (file: string, args: readonly string[], input?: string) => Promise<CommandResult>;

export class IptablesError extends Error {
  override name = 'IptablesError';
  constructor(
    /** The command line as run, e.g. "iptables-restore --noflush -w". */
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
    /** stdin given to the command (the restore payload), for debugging. */
    readonly input?: string,
  ) {
    const how = exitCode === null ? 'was killed or could not run' : `exited with ${exitCode}`;
    super(`${command} ${how}: ${stderr.trim() || '(no stderr)'}`);
  }
}

export interface IptablesManagerOptions {
  /**
   * FLANNEL_NETWORK, or FLANNEL_IPV6_NETWORK for the IPv6 rules: an Ip6Net (bigint address) makes
   * this manager drive ip6tables / ip6tables-restore, as flannel does for its IPv6 rule sets.
   */
  network: Ip4Net | Ip6Net;
  /** This host's lease subnet (of the same family). */
  subnet: Ip4Net | Ip6Net;
  /** -ip-masq */
  masq: boolean;
  /** -iptables-forward-rules */
  forwardRules: boolean;
  /** -iptables-resync, seconds between checks. */
  resyncSeconds: number;
  /** false = -ip-masq-fully-random-disable; otherwise --random-fully is used when iptables supports it. */
  randomFully?: boolean;
  /** FLANNEL_NETWORK / FLANNEL_SUBNET from the previous subnet.env, when there was one (IPv4 only: used to log leftovers). */
  previous?: { network: Ip4Net | null; subnet: Ip4Net | null };
  log: Log;
  /** Defaults to spawning the real binaries. */
  run?: CommandRunner;
  iptablesPath?: string;
  iptablesRestorePath?: string;
  /** Per-command limit; iptables can block on the xtables lock. Default 60 s. */
  commandTimeoutMs?: number;
}

export interface SyncResult {
  /** Tables whose rule sets were rebuilt by this sync (empty when everything was in place). */
  readonly rebuilt: IptablesTable[];
}

export function spawnRunner(timeoutMs: number): CommandRunner {
  return (file, args, input) =>
    new Promise((resolve, reject) => {
      let child: ReturnType<typeof spawn>;
      try {
        child = spawn(file, [...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      // First, before anything else can throw: a spawn that fails for want of resources (EMFILE,
      // ENFILE, EAGAIN) reports it as an 'error' event on the next tick, and then has no stdio.
      child.on('error', reject);
      if (!child.stdin || !child.stdout || !child.stderr) return; // the 'error' event follows
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdout.on('error', reject);
      child.stderr.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      // EPIPE when the program exits without reading stdin is reported via its exit status instead.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
}

export class IptablesManager {
  private readonly opts: IptablesManagerOptions;
  private readonly log: Log;
  private readonly run: CommandRunner;
  private readonly iptables: string;
  private readonly restore: string;
  private sets: RuleSet[] = [];
  private restoreArgs: string[] = ['--noflush'];
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** Message of the last resync failure, so a persisting error is logged once, not every period. */
  private lastError: string | null = null;

  constructor(opts: IptablesManagerOptions) {
    if (!Number.isFinite(opts.resyncSeconds) || opts.resyncSeconds <= 0) {
      throw new RangeError(`iptables resync period must be a positive number of seconds, got ${opts.resyncSeconds}`);
    }
    this.opts = opts;
    this.log = opts.log;
    this.run = opts.run ?? spawnRunner(opts.commandTimeoutMs ?? 60_000);
    const v6 = typeof opts.network.ip === 'bigint';
    if (v6 !== (typeof opts.subnet.ip === 'bigint')) throw new RangeError('iptables network and subnet must be of the same IP family');
    this.iptables = opts.iptablesPath ?? (v6 ? 'ip6tables' : 'iptables');
    this.restore = opts.iptablesRestorePath ?? (v6 ? 'ip6tables-restore' : 'iptables-restore');
  }

  /** The rule sets this manager maintains (valid after start()). */
  ruleSets(): readonly RuleSet[] {
    return this.sets;
  }

  /** Detects iptables features, installs all rule sets (rebuilding them like flannel does at startup), starts resync. */
  async start(): Promise<void> {
    if (this.running) throw new Error('IptablesManager already started');
    const version = await this.detectVersion();
    const randomFully = this.opts.randomFully !== false && supportsRandomFully(version);
    this.restoreArgs = restoreSupportsWait(version) ? ['--noflush', '-w'] : ['--noflush'];
    this.sets = [];
    if (this.opts.masq) this.sets.push(masqRuleSet(this.opts.network, this.opts.subnet, { randomFully }));
    if (this.opts.forwardRules) this.sets.push(forwardRuleSet(this.opts.network));
    if (this.sets.length === 0) return;
    await this.enqueue(() => this.sync(true));
    this.log.info(
      {
        network: cidrText(this.opts.network),
        subnet: cidrText(this.opts.subnet),
        masq: this.opts.masq,
        forwardRules: this.opts.forwardRules,
        randomFully: this.opts.masq ? randomFully : undefined,
        iptables: `${version.major}.${version.minor}.${version.patch}${version.backend ? ` (${version.backend})` : ''}`,
      },
      `${this.iptables} rules installed`,
    );
    this.running = true;
    this.schedule();
  }

  /** Stops the resync loop and waits for a sync in progress. The rules stay in place. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.queue.catch(() => undefined);
  }

  /** Checks all rule sets and rebuilds the ones that are not intact. Throws IptablesError on failure. */
  syncOnce(): Promise<SyncResult> {
    return this.enqueue(() => this.sync(false));
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    // Serialised so a manual syncOnce() and the timer never interleave list and restore.
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.syncOnce()
        .then(
          () => {
            if (this.lastError !== null) this.log.info('iptables resync succeeded again');
            this.lastError = null;
          },
          (err: unknown) => {
            const msg = err instanceof Error ? err.message : String(err);
            if (msg !== this.lastError) {
              this.log.error({ err }, `iptables resync failed (retrying every ${this.opts.resyncSeconds}s)`);
            }
            this.lastError = msg;
          },
        )
        .finally(() => this.schedule());
    }, this.opts.resyncSeconds * 1000);
    // The daemon's lifetime is owned by its sockets and signals, not by this timer.
    this.timer.unref();
  }

  private async exec(file: string, args: readonly string[], input?: string): Promise<string> {
    const command = [file, ...args].join(' ');
    let res: CommandResult;
    try {
      res = await this.run(file, args, input);
    } catch (err) {
      throw new IptablesError(command, null, err instanceof Error ? err.message : String(err), input);
    }
    if (res.code !== 0) throw new IptablesError(command, res.code, res.stderr, input);
    return res.stdout;
  }

  private async detectVersion(): Promise<IptablesVersion> {
    const out = await this.exec(this.iptables, ['--version']);
    const v = parseIptablesVersion(out);
    if (!v) throw new IptablesError(`${this.iptables} --version`, 0, `unrecognised version output: ${out.trim()}`);
    return v;
  }

  private async readState(set: RuleSet): Promise<RuleSetState> {
    const parentOut = await this.exec(this.iptables, ['-w', '-t', set.table, '-S', set.parent]);
    const parentRules = parseChainListing(parentOut, set.parent);
    const state: RuleSetState = { parentRules, chainRules: null };
    // A jump can only exist if its target chain does, so list the owned chain only then; listing a
    // missing chain fails with backend-specific messages that are not worth telling apart.
    if (jumpCount(set, state) === 0) return state;
    const chainOut = await this.exec(this.iptables, ['-w', '-t', set.table, '-S', set.chain]);
    return { parentRules, chainRules: parseChainListing(chainOut, set.chain) };
  }

  private staleRules(set: RuleSet): IptablesRule[] {
    const prev = this.opts.previous;
    if (set.chain !== MASQ_CHAIN) return [];
    const network = this.opts.network;
    const subnet = this.opts.subnet;
    if (!prev || !prev.network || !prev.subnet || typeof network.ip === 'bigint' || typeof subnet.ip === 'bigint') return [];
    if (netsEqual(prev.network, network as Ip4Net) && netsEqual(prev.subnet, subnet as Ip4Net)) return [];
    return previousMasqRules(prev.network, prev.subnet, set);
  }

  private async sync(force: boolean): Promise<SyncResult> {
    const states = await Promise.all(this.sets.map((set) => this.readState(set)));
    const items: RebuildItem[] = [];
    this.sets.forEach((set, i) => {
      const state = states[i]!;
      if (force) {
        const stale = this.staleRules(set);
        const found = countPresent(state, stale);
        if (found > 0) {
          this.log.info(
            {
              previousNetwork: formatIp4Net(this.opts.previous!.network!),
              previousSubnet: formatIp4Net(this.opts.previous!.subnet!),
              rules: found,
            },
            `removing iptables rules left in ${set.chain} for the previous network/subnet`,
          );
        }
      } else if (ruleSetIntact(set, state)) {
        return;
      }
      items.push({ set, jumpCopies: jumpCount(set, state) });
    });
    if (items.length === 0) return { rebuilt: [] };
    if (!force) {
      this.log.info({ chains: items.map((it) => it.set.chain) }, 'some iptables rules are missing or changed; recreating them');
    }
    await this.exec(this.restore, this.restoreArgs, rebuildPayload(items));
    return { rebuilt: [...new Set(items.map((it) => it.set.table))] };
  }
}

function cidrText(net: Ip4Net | Ip6Net): string {
  return typeof net.ip === 'bigint' ? formatCidr6(net as Ip6Net) : formatIp4Net(net as Ip4Net);
}
