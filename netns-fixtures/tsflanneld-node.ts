// A real tsflanneld process on a testbed host: `node bin/tsflanneld -etcd-endpoints … -iface eth0
// -subnet-file …` spawned inside the host's namespace, its JSON log captured line by line (and copied
// to <bed tmp>/<host>/tsflanneld.log for post-mortems), with helpers to wait for readiness or a log
// line, signal/stop/restart it and scrape its /metrics from inside the namespace.
//
// Restarts keep the same options (same subnet file, so the same VtepMAC file and previous lease);
// `logs` accumulates every run, while waitReady()/waitForLog() look only at the current run.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseSubnetEnv } from '../src/subnet/subnet-env';
import { formatIp4Net, parseIp4Net } from '../src/subnet/ip4';
import { TestbedError, waitFor, type TestHost } from './testbed';

const REPO = path.resolve(__dirname, '..', '..');
/** Daemon entry script: TSFLANNELD_BIN selects another build (the demo's TSFLANNELD_DEMO_BIN too). */
export const DEFAULT_DAEMON_BIN =
  process.env.TSFLANNELD_BIN ?? process.env.TSFLANNELD_DEMO_BIN ?? path.join(REPO, 'bin', 'tsflanneld');

export type LogLine = Record<string, unknown>;

export interface DaemonNodeOptions {
  host: TestHost;
  /** One endpoint or a comma-separated list, passed as -etcd-endpoints. */
  etcdEndpoint: string;
  /** Extra flags, appended after the ones this helper sets. */
  args?: string[];
  /** Extra environment (the runner's FLANNELD_* and TSFLANNELD_TEST_* variables are not passed on). */
  env?: Record<string, string>;
  /** Default <bed tmp>/<host.name>/subnet.env. */
  subnetFile?: string;
  /** Passes -healthz-port (and -healthz-ip 127.0.0.1); needed for metrics(). */
  healthzPort?: number;
  /** Daemon entry script; default DEFAULT_DAEMON_BIN. */
  bin?: string;
}

export interface DaemonReady {
  /** The lease, network address form: "10.5.72.0/24". */
  subnet: string;
  mtu: number;
  /** subnet.env as key → value. */
  env: Record<string, string>;
}

function msgOf(line: LogLine): string {
  return typeof line.msg === 'string' ? line.msg : '';
}

/** One tsflanneld host; exit codes are numbers, or null when the process was killed by a signal. */
export class DaemonNode {
  readonly logs: LogLine[] = [];
  readonly host: TestHost;
  readonly subnetFile: string;
  readonly logFile: string;
  readonly bin: string;
  private readonly stderrLines: string[] = [];
  private child!: ChildProcess;
  private runStart = 0;
  private runStderrStart = 0;
  private exitedP!: Promise<number | null>;
  private exitInfo: string | null = null;
  private runs = 0;

  private constructor(readonly opts: DaemonNodeOptions) {
    this.host = opts.host;
    const dir = path.join(opts.host.testbed.tmpDir, opts.host.name);
    fs.mkdirSync(dir, { recursive: true });
    this.subnetFile = opts.subnetFile ?? path.join(dir, 'subnet.env');
    this.logFile = path.join(dir, 'tsflanneld.log');
    this.bin = opts.bin ?? DEFAULT_DAEMON_BIN;
  }

  static start(opts: DaemonNodeOptions): DaemonNode {
    const node = new DaemonNode(opts);
    node.spawn();
    // host.spawn children are killed by the testbed's teardown; this only stops it a bit earlier,
    // and gently, so the daemon's own shutdown path runs while its namespace still exists.
    opts.host.testbed.onTeardown(async () => {
      if (node.running) await node.stop('SIGTERM', 5000).catch(() => undefined);
    });
    return node;
  }

  /** The command line of a run (without the namespace wrapper). */
  get argv(): string[] {
    const o = this.opts;
    const args = [process.execPath, this.bin, '-etcd-endpoints', o.etcdEndpoint, '-iface', o.host.underlayDev, '-subnet-file', this.subnetFile];
    if (o.healthzPort !== undefined) args.push('-healthz-ip', '127.0.0.1', '-healthz-port', String(o.healthzPort));
    args.push(...(o.args ?? []));
    return args;
  }

  private spawn(): void {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (k.startsWith('FLANNELD_') || k.startsWith('TSFLANNELD_TEST_')) continue;
      env[k] = v;
    }
    Object.assign(env, this.opts.env ?? {});
    this.runs += 1;
    this.runStart = this.logs.length;
    this.runStderrStart = this.stderrLines.length;
    this.exitInfo = null;
    const header = `--- run ${this.runs}: ${this.argv.join(' ')}\n`;
    fs.appendFileSync(this.logFile, header);
    const child = this.opts.host.spawn(this.argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let buf = '';
    const onLine = (line: string): void => {
      this.stderrLines.push(line);
      try {
        const parsed = JSON.parse(line) as unknown;
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) this.logs.push(parsed as LogLine);
      } catch {
        // not a log line (a Node warning, a native crash message): kept in stderr()
      }
    };
    const onData = (chunk: Buffer): void => {
      fs.appendFileSync(this.logFile, chunk);
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    };
    child.stderr!.on('data', onData);
    child.stdout!.on('data', onData);
    this.exitedP = new Promise((resolve) => {
      let done = false;
      const finish = (code: number | null, why: string): void => {
        if (done) return;
        done = true;
        if (buf.length > 0) {
          onLine(buf);
          buf = '';
        }
        this.exitInfo = why;
        fs.appendFileSync(this.logFile, `--- run ${this.runs} ${why}\n`);
        resolve(code);
      };
      child.on('exit', (code, signal) => {
        // Let the pipes drain so the last log lines are in `logs` before `exited` resolves.
        const settle = (): void => finish(code, signal ? `killed by ${signal}` : `exited with code ${code}`);
        if (child.stderr!.readableEnded) settle();
        else {
          child.stderr!.once('end', settle);
          setTimeout(settle, 1000);
        }
      });
      child.on('error', (e) => finish(null, `failed to start: ${e.message}`));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Exit code of the current run (null if it was killed by a signal or still runs). */
  get exited(): Promise<number | null> {
    return this.exitedP;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** Log lines of the current run. */
  runLogs(): LogLine[] {
    return this.logs.slice(this.runStart);
  }

  /** Everything the daemon wrote to stderr/stdout, all runs. */
  stderr(): string {
    return this.stderrLines.join('\n');
  }

  /** The last lines of the current run, for error messages. */
  tail(lines = 15): string {
    return this.stderrLines.slice(Math.max(this.runStderrStart, this.stderrLines.length - lines)).join('\n');
  }

  private describe(): string {
    return `tsflanneld on ${this.host.name}${this.exitInfo ? ` (${this.exitInfo})` : ''}`;
  }

  /** Waits for a log line of the current run; fails early if the daemon exits. */
  async waitForLog(pred: (line: LogLine) => boolean, timeoutMs = 60000, what = 'a matching log line'): Promise<LogLine> {
    const start = this.runStart;
    return waitFor(
      `${what} from ${this.describe()}`,
      async () => {
        for (let i = start; i < this.logs.length; i++) if (pred(this.logs[i]!)) return this.logs[i]!;
        if (!this.running) throw new TestbedError(`${this.describe()}; last lines:\n${this.tail()}`);
        return null;
      },
      timeoutMs,
      50,
    ).catch((e: Error) => {
      throw new TestbedError(`${e.message}\n--- last lines:\n${this.tail()}`);
    });
  }

  /** Count of current-run log lines matching pred. */
  countLogs(pred: (line: LogLine) => boolean): number {
    return this.runLogs().filter(pred).length;
  }

  /** Waits for this run's "wrote <subnet file>" line, then reads the file. */
  async waitReady(timeoutMs = 60000): Promise<DaemonReady> {
    await this.waitForLog((l) => msgOf(l).startsWith('wrote '), timeoutMs, `"wrote ${this.subnetFile}"`);
    const env = this.readSubnetEnv();
    if (!env) throw new TestbedError(`${this.describe()} logged it wrote ${this.subnetFile}, but it is missing or unparsable`);
    const sub = env.FLANNEL_SUBNET;
    const mtu = Number(env.FLANNEL_MTU);
    if (!sub || !Number.isInteger(mtu)) throw new TestbedError(`${this.subnetFile} lacks FLANNEL_SUBNET/FLANNEL_MTU: ${JSON.stringify(env)}`);
    return { subnet: formatIp4Net(parseIp4Net(sub)), mtu, env };
  }

  /** subnet.env as key → value, or null if absent. */
  readSubnetEnv(): Record<string, string> | null {
    let text: string;
    try {
      text = fs.readFileSync(this.subnetFile, 'utf8');
    } catch {
      return null;
    }
    return Object.fromEntries(parseSubnetEnv(text));
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** Sends sig (SIGKILL after timeoutMs) and resolves the exit code (null when killed by a signal). */
  async stop(sig: NodeJS.Signals = 'SIGTERM', timeoutMs = 30000): Promise<number | null> {
    if (!this.running) return this.exitedP;
    this.child.kill(sig);
    const timer = setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL');
    }, timeoutMs);
    try {
      return await this.exitedP;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts a new process with the same options; a running one is stopped with SIGTERM first. */
  async restart(): Promise<void> {
    if (this.running) await this.stop('SIGTERM');
    this.spawn();
  }

  /** GET http://127.0.0.1:<healthzPort><path> from inside the host's namespace. */
  async httpGet(urlPath: string): Promise<{ status: number; body: string }> {
    const port = this.opts.healthzPort;
    if (port === undefined || port === 0) throw new TestbedError(`${this.describe()} runs without -healthz-port`);
    const script = `
      const http = require('node:http');
      const req = http.get({ host: '127.0.0.1', port: Number(process.argv[1]), path: process.argv[2], timeout: 10000 }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => process.stdout.write(JSON.stringify({ status: res.statusCode, body: Buffer.concat(chunks).toString() })));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => { process.stderr.write(e.message); process.exit(1); });`;
    const res = await this.host.exec([process.execPath, '-e', script, String(port), urlPath], { timeoutMs: 20000 });
    return JSON.parse(res.stdout) as { status: number; body: string };
  }

  /** The Prometheus text of /metrics. */
  async metrics(): Promise<string> {
    const res = await this.httpGet('/metrics');
    if (res.status !== 200) throw new TestbedError(`${this.describe()} /metrics answered ${res.status}: ${res.body.slice(0, 300)}`);
    return res.body;
  }

  /** Sum of the series of `name` whose labels include `labels`; null if there is none. */
  async metricValue(name: string, labels: Record<string, string> = {}): Promise<number | null> {
    return metricValueOf(await this.metrics(), name, labels);
  }
}

/** Sum of the samples of `name` in Prometheus text whose labels include `labels`; null if none matches. */
export function metricValueOf(text: string, name: string, labels: Record<string, string> = {}): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let lm: RegExpExecArray | null;
    while ((lm = re.exec(m[3] ?? '')) !== null) have.set(lm[1]!, lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)));
    if (!Object.entries(labels).every(([k, v]) => have.get(k) === v)) continue;
    const v = Number(m[4]);
    sum = (sum ?? 0) + v;
  }
  return sum;
}

/** Spawns tsflanneld inside opts.host's namespace (see DaemonNode). */
export async function startDaemonNode(opts: DaemonNodeOptions): Promise<DaemonNode> {
  return DaemonNode.start(opts);
}
