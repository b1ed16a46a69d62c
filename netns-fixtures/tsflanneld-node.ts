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
import { ping, TestbedError, waitFor, type NsNode, type TestHost } from './testbed';

const REPO = path.resolve(__dirname, '..', '..');
/** Daemon entry script: TSFLANNELD_BIN selects another build (the demo's TSFLANNELD_DEMO_BIN too). */
export const DEFAULT_DAEMON_BIN = process.env.TSFLANNELD_BIN ?? process.env.TSFLANNELD_DEMO_BIN ?? path.join(REPO, 'bin', 'tsflanneld');

export type LogLine = Record<string, unknown>;

export interface DaemonNodeOptions {
  host: TestHost;
  /** One endpoint or a comma-separated list, passed as -etcd-endpoints. */
  etcdEndpoint: string;
  /** Extra flags, appended after the ones this helper sets. */
  args?: string[];
  /** -iface value; default the host's underlay device; null passes no -iface (the daemon picks one). */
  iface?: string | null;
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
    const args = [
      process.execPath,
      this.bin,
      '-etcd-endpoints',
      o.etcdEndpoint,
      ...(o.iface === null ? [] : ['-iface', o.iface ?? o.host.underlayDev]),
      '-subnet-file',
      this.subnetFile,
    ];
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

  /** Waits for a log line of the current run; fails as soon as the daemon exits without it. */
  async waitForLog(pred: (line: LogLine) => boolean, timeoutMs = 60000, what = 'a matching log line'): Promise<LogLine> {
    const start = this.runStart;
    const deadline = Date.now() + timeoutMs;
    let next = start;
    for (;;) {
      const wasRunning = this.running; // read first: an exited run's last lines are in `logs` by then
      for (; next < this.logs.length; next++) if (pred(this.logs[next]!)) return this.logs[next]!;
      if (!wasRunning) throw new TestbedError(`${this.describe()} without ${what}; last lines:\n${this.tail()}`);
      if (Date.now() > deadline) {
        throw new TestbedError(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.describe()}; last lines:\n${this.tail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
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
    if (!sub || !Number.isInteger(mtu))
      throw new TestbedError(`${this.subnetFile} lacks FLANNEL_SUBNET/FLANNEL_MTU: ${JSON.stringify(env)}`);
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
    while ((lm = re.exec(m[3] ?? '')) !== null)
      have.set(
        lm[1]!,
        lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c)),
      );
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

// ------------------------------------------------------------------------------------------------
// traffic and etcd helpers for daemon tests

export const ETCD_PREFIX = '/coreos.com/network';

/** The part of EtcdServer these helpers use. */
export interface EtcdCtl {
  etcdctl(args: string[]): Promise<string>;
}

export interface FlannelLeaseInfo {
  key: string;
  /** "10.5.72.0/24" */
  subnet: string;
  /** The raw JSON value as stored. */
  value: string;
  publicIp: string;
  vtepMac: string;
  vni: number;
}

function parseLeaseValue(key: string, value: string): FlannelLeaseInfo | null {
  const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(key);
  if (!m) return null;
  let v: { PublicIP?: string; BackendData?: { VtepMAC?: string; VNI?: number } };
  try {
    v = JSON.parse(value) as typeof v;
  } catch {
    return null;
  }
  return {
    key,
    subnet: `${m[1]}/${m[2]}`,
    value,
    publicIp: v.PublicIP ?? '',
    vtepMac: v.BackendData?.VtepMAC ?? '',
    vni: v.BackendData?.VNI ?? 0,
  };
}

/** Every lease under <prefix>/subnets/. */
export async function listFlannelLeases(etcd: EtcdCtl, prefix = ETCD_PREFIX): Promise<FlannelLeaseInfo[]> {
  const out = await etcd.etcdctl(['get', '--prefix', `${prefix}/subnets/`]);
  const lines = out.split('\n').filter((l) => l.length > 0);
  const leases: FlannelLeaseInfo[] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const l = parseLeaseValue(lines[i]!, lines[i + 1]!);
    if (l) leases.push(l);
  }
  return leases;
}

/** The lease of `subnet` ("10.5.72.0/24"), or null if there is none. */
export async function getFlannelLease(etcd: EtcdCtl, subnet: string, prefix = ETCD_PREFIX): Promise<FlannelLeaseInfo | null> {
  const key = `${prefix}/subnets/${subnet.replace('/', '-')}`;
  const value = (await etcd.etcdctl(['get', key, '--print-value-only'])).replace(/\n$/, '');
  return value === '' ? null : parseLeaseValue(key, value);
}

/** Waits until from gets `count` replies in a row from ip (the first probes may race route setup). */
export async function waitPing(from: NsNode, ip: string, timeoutMs = 60000, count = 3): Promise<void> {
  await waitFor(
    `ping ${from.name} → ${ip}`,
    async () => (await ping(from, ip, { count, interval: 0.2 })).received === count,
    timeoutMs,
    200,
  );
}

export interface ContinuousPingResult {
  sent: number;
  received: number;
  lost: number;
  /** Longest run of consecutive unanswered probes. */
  longestGap: number;
  /** Highest sequence number answered (0 if none). */
  lastAnswered: number;
  intervalSec: number;
  output: string;
}

export interface ContinuousPing {
  /** Sequence numbers answered so far. */
  answered(): number;
  /** SIGINT to ping (it prints its summary), then the result. */
  stop(): Promise<ContinuousPingResult>;
}

/** `ping -i intervalSec ip` running until stop(); replies are tracked by icmp_seq. */
export function startContinuousPing(from: NsNode, ip: string, intervalSec = 0.01): ContinuousPing {
  const child = from.spawn(['ping', '-n', '-i', String(intervalSec), '-W', '1', ip]);
  let out = '';
  const seqs = new Set<number>();
  let pending = '';
  child.stdout!.on('data', (b: Buffer) => {
    const text = b.toString();
    out += text;
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      const m = /icmp_seq=(\d+)/.exec(line);
      if (m && /bytes from/.test(line) && !/DUP!/.test(line)) seqs.add(Number(m[1]));
    }
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-4000)));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  let result: Promise<ContinuousPingResult> | null = null;
  const stop = (): Promise<ContinuousPingResult> => {
    if (!result) {
      result = (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGINT');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await done;
          clearTimeout(timer);
        }
        const m = /(\d+) packets transmitted/.exec(out);
        if (!m) throw new TestbedError(`[${from.name}] ping -i ${intervalSec} ${ip}: no summary: ${(err || out).trim().slice(-500)}`);
        // The probe sent just before SIGINT may still be in flight: it is not a loss, so it is not counted.
        const transmitted = Number(m[1]);
        const sent = transmitted > 0 && !seqs.has(transmitted) ? transmitted - 1 : transmitted;
        let longestGap = 0;
        let gap = 0;
        let lastAnswered = 0;
        for (let seq = 1; seq <= sent; seq++) {
          if (seqs.has(seq)) {
            gap = 0;
            lastAnswered = seq;
          } else {
            gap += 1;
            longestGap = Math.max(longestGap, gap);
          }
        }
        const received = [...seqs].filter((q) => q >= 1 && q <= sent).length;
        return { sent, received, lost: sent - received, longestGap, lastAnswered, intervalSec, output: out.slice(-400) + err.slice(-400) };
      })();
    }
    return result;
  };
  return { answered: () => seqs.size, stop };
}

export interface TransferSide {
  bytes: number;
  sha256: string;
}

const SINK_JS = `
const net = require('net'), crypto = require('crypto');
const [ip, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { h.update(d); n += d.length; });
  s.on('end', () => { process.stdout.write(JSON.stringify({ bytes: n, sha256: h.digest('hex') }) + '\\n'); s.end(); srv.close(); });
});
srv.listen(Number(port), ip, () => process.stdout.write('listening\\n'));`;

const SOURCE_JS = `
const net = require('net'), crypto = require('crypto');
const [ip, port, size] = process.argv.slice(1);
const data = crypto.randomBytes(Number(size));
const sha256 = crypto.createHash('sha256').update(data).digest('hex');
const s = net.connect(Number(port), ip, () => s.end(data));
s.resume();
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', () => process.stdout.write(JSON.stringify({ bytes: data.length, sha256 }) + '\\n'));`;

/** Sends `size` random bytes over one TCP connection from → to (listening on toIp:port); both sides' count + sha256. */
export async function tcpTransfer(
  from: NsNode,
  to: NsNode,
  toIp: string,
  size: number,
  port = 5001,
): Promise<{ sent: TransferSide; received: TransferSide; seconds: number }> {
  const server = to.spawn([process.execPath, '-e', SINK_JS, toIp, String(port)]);
  let out = '';
  server.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  let err = '';
  server.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  try {
    await waitFor(
      `TCP sink on ${to.name} ${toIp}:${port}`,
      async () => {
        if (server.exitCode !== null) throw new TestbedError(`sink exited: ${err}`);
        return out.includes('listening');
      },
      20000,
      50,
    );
    const t0 = Date.now();
    const client = await from.exec([process.execPath, '-e', SOURCE_JS, toIp, String(port), String(size)], { timeoutMs: 180000 });
    const sent = JSON.parse(client.stdout) as TransferSide;
    const received = await waitFor(
      `TCP sink result on ${to.name} ${toIp}:${port}`,
      async () => {
        const line = out.split('\n').find((l) => l.startsWith('{'));
        return line ? (JSON.parse(line) as TransferSide) : undefined;
      },
      30000,
      50,
    );
    return { sent, received, seconds: (Date.now() - t0) / 1000 };
  } finally {
    server.kill('SIGKILL');
  }
}

const UDP_FLOWS_JS = `
const dgram = require('dgram');
const [dst, dstPort, firstSrcPort, flows, perFlow] = process.argv.slice(1).map((x, i) => (i === 0 ? x : Number(x)));
let left = flows;
for (let f = 0; f < flows; f++) {
  const s = dgram.createSocket('udp4');
  s.bind(firstSrcPort + f, () => {
    let n = perFlow;
    const send = () => s.send(Buffer.alloc(64, f), dstPort, dst, () => { if (--n > 0) setTimeout(send, 5); else { s.close(); if (--left === 0) process.exit(0); } });
    send();
  });
}`;

/** Sends `perFlow` small UDP datagrams on each of `flows` distinct source ports (firstSrcPort + i) to dst:dstPort. */
export async function sendUdpFlows(
  from: NsNode,
  dst: string,
  opts: { dstPort?: number; firstSrcPort?: number; flows?: number; perFlow?: number } = {},
): Promise<void> {
  await from.exec(
    [
      process.execPath,
      '-e',
      UDP_FLOWS_JS,
      dst,
      String(opts.dstPort ?? 9999),
      String(opts.firstSrcPort ?? 40000),
      String(opts.flows ?? 16),
      String(opts.perFlow ?? 3),
    ],
    { timeoutMs: 30000 },
  );
}

export interface HandcraftedVxlan {
  /** Local address to send from (must be configured on `from`). */
  bindIp: string;
  dstIp: string;
  port?: number; // default 8472
  vni?: number; // default 1
  dstMac: string;
  srcMac: string;
  /** Inner ICMP echo request addresses. */
  innerSrc: string;
  innerDst: string;
  count?: number; // default 5
}

const VXLAN_JS = `
const dgram = require('dgram');
const [bindIp, dstIp, port, vni, dstMac, srcMac, innerSrc, innerDst, count] = process.argv.slice(1);
const mac = (s) => s.split(':').map((x) => parseInt(x, 16));
const ip = (s) => s.split('.').map(Number);
function csum(b) { let s = 0; for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] || 0); while (s >> 16) s = (s & 0xffff) + (s >> 16); return ~s & 0xffff; }
const icmp = Buffer.from([8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
icmp.writeUInt16BE(csum(icmp), 2);
const iph = Buffer.from([0x45, 0, 0, 20 + icmp.length, 0, 1, 0, 0, 64, 1, 0, 0, ...ip(innerSrc), ...ip(innerDst)]);
iph.writeUInt16BE(csum(iph), 10);
const v = Number(vni);
const hdr = Buffer.from([8, 0, 0, 0, (v >> 16) & 255, (v >> 8) & 255, v & 255, 0]);
const frame = Buffer.concat([hdr, Buffer.from(mac(dstMac)), Buffer.from(mac(srcMac)), Buffer.from([8, 0]), iph, icmp]);
const s = dgram.createSocket('udp4');
s.bind(0, bindIp, () => {
  let left = Number(count);
  const send = () => s.send(frame, Number(port), dstIp, (e) => { if (e) { console.error(e.message); process.exit(1); } if (--left > 0) send(); else s.close(); });
  send();
});`;

/** Sends a handcrafted VXLAN frame (carrying an ICMP echo request) `count` times. */
export async function sendHandcraftedVxlan(from: NsNode, f: HandcraftedVxlan): Promise<void> {
  await from.exec([
    process.execPath,
    '-e',
    VXLAN_JS,
    f.bindIp,
    f.dstIp,
    String(f.port ?? 8472),
    String(f.vni ?? 1),
    f.dstMac,
    f.srcMac,
    f.innerSrc,
    f.innerDst,
    String(f.count ?? 5),
  ]);
}
