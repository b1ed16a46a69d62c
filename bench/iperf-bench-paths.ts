// The data paths the iperf benchmark compares, each on its own fresh testbed:
//   underlay   — host ↔ host over the bridged veth underlay;
//   kernel     — containers behind two hosts with a kernel flannel.1 laid out exactly as flanneld does;
//   dataplane  — the daemon's data plane alone (src/dataplane/static-runner.js with a fixed peer
//                table, TUN address/route/MTU set here as the route manager would), containers behind;
//                isolates the packet path from the control plane;
//   tsflanneld — etcd + two hosts running the real daemon (bin/tsflanneld), containers behind each,
//                optionally with an offload rung forced through the daemon's environment.
import { execFileSync, spawn as cpSpawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { formatIp4Net, parseIp4Net } from '../src/subnet/ip4';
import {
  addContainer,
  createTestbed,
  kernelPeerAddRemote,
  randomVtepMac,
  setupKernelFlannelPeer,
  type Testbed,
  type TestHost,
} from '../netns-fixtures/testbed';
import type { DaemonProc, Endpoints } from './iperf-bench-measure';
import { parsePromSamples } from './iperf-bench-stats';

export const REPO = path.resolve(__dirname, '..', '..');

/**
 * Where the daemon and runner code is taken from: the repo, or a snapshot of its build (see
 * snapshotCode) so a long run measures one build even while dist/ is rebuilt meanwhile.
 */
let codeRoot = REPO;

/**
 * Copies the runnable build (bin/, dist/src, the addon, package.json) to dir and runs daemons from
 * there. dir must be inside the repo so node_modules still resolves by walking up.
 */
export function snapshotCode(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  fs.cpSync(path.join(REPO, 'bin'), path.join(dir, 'bin'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(
    path.join(REPO, 'build', 'Release', 'tsflanneld_native.node'),
    path.join(dir, 'build', 'Release', 'tsflanneld_native.node'),
  );
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  codeRoot = dir;
}

/** How a rung is forced on the daemon: its -offload flag, or an environment variable. */
export type RungControl = { kind: 'flag'; flag: string } | { kind: 'env'; name: string };
let rungControl: RungControl | null = null;

/**
 * Finds how the built daemon lets a rung be forced: an `-offload` flag in its --help, else an
 * OFFLOAD variable its code mentions (the static runner's own reading doesn't count). Null: it can't.
 */
export function detectRungControl(envNames: readonly string[]): RungControl | null {
  let help: string;
  try {
    help = execFileSync(process.execPath, [path.join(codeRoot, 'bin', 'tsflanneld'), '--help'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20000,
    }).toString();
  } catch (e) {
    const err = e as { stdout?: Buffer; stderr?: Buffer };
    help = `${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`;
  }
  const m = /(^|\s)(--?offload)\b/m.exec(help);
  rungControl = m ? { kind: 'flag', flag: m[2]! } : null;
  if (!rungControl) {
    const name = envNames.find((n) => daemonReadsEnv(n));
    if (name) rungControl = { kind: 'env', name };
  }
  return rungControl;
}

/** The parent's environment minus flanneld settings and test knobs, plus the bench's extras. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('FLANNELD_') || k.startsWith('TSFLANNELD_TEST_')) continue;
    env[k] = v;
  }
  return Object.assign(env, extra);
}

/** Whether the built static runner accepts an `offload` rung in its config. */
export function runnerTakesOffload(): boolean {
  try {
    return /\bcfg\.offload\b/.test(fs.readFileSync(runnerPath(), 'utf8'));
  } catch {
    return false;
  }
}

function runnerPath(): string {
  return path.join(codeRoot, 'dist', 'src', 'dataplane', 'static-runner.js');
}
export const ETCD_PREFIX = '/coreos.com/network';
const NETWORK_CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const KERNEL_SUBNETS = ['10.5.1.0/24', '10.5.2.0/24'];
const OVERLAY_DEV = 'flannel.1';
// The daemons serve /metrics here, inside their own host namespace only.
const HEALTHZ_PORT = 9701;
/** Data-plane counters read from the daemons' /metrics around each repetition. */
const DAEMON_COUNTERS = ['tsflanneld_packets_total', 'tsflanneld_drops_total'];

export type PathKind = 'underlay' | 'kernel' | 'dataplane' | 'tsflanneld';

export interface PathSpec {
  /** Stable id used in JSON and file names: underlay, kernel, tsflanneld, tsflanneld-none, … */
  id: string;
  label: string;
  kind: PathKind;
  /** Offload rung forced through TSFLANNELD_OFFLOAD (tsflanneld only). */
  rung?: string;
  /** Forwarding threads (-dataplane-threads; tsflanneld only); absent = the daemon's default. */
  threads?: number;
}

export interface PathContext {
  mtu: number;
  log(msg: string): void;
  /** Extra environment for the daemons (the rung is added per path). */
  daemonEnv: Record<string, string>;
  /** Node options for the daemons (profiling). */
  nodeOptions: string[];
  /** Where each daemon writes its --cpu-prof output, if profiling. */
  cpuProfDir?: string;
  readyTimeoutMs: number;
  connectTimeoutMs: number;
  /** Called with the testbed as soon as it exists, so a signal handler can tear it down. */
  onTestbed(bed: Testbed | null): void;
}

export interface PathSession {
  endpoints: Endpoints;
  /** Facts about the setup worth keeping with the results (subnets, MTU, daemon offload log lines). */
  info: Record<string, unknown>;
  notes: string[];
  /** Stops daemons (reporting their warnings/errors) and tears the testbed down. */
  close(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class PathSetupError extends Error {
  override name = 'PathSetupError';
}

export async function openPath(spec: PathSpec, ctx: PathContext): Promise<PathSession> {
  const bed = await createTestbed({ hosts: 2, mtu: ctx.mtu, etcd: spec.kind === 'tsflanneld' });
  ctx.onTestbed(bed);
  const closeBed = async (): Promise<void> => {
    ctx.onTestbed(null);
    await bed.teardown();
  };
  try {
    if (spec.kind === 'underlay') return underlay(bed, closeBed);
    if (spec.kind === 'kernel') return await kernel(bed, closeBed);
    if (spec.kind === 'dataplane') return await dataplane(bed, spec, ctx, closeBed);
    return await tsflanneld(bed, spec, ctx, closeBed);
  } catch (e) {
    await closeBed().catch((te: unknown) => ctx.log(`  teardown: ${te instanceof Error ? te.message : String(te)}`));
    throw e;
  }
}

function underlay(bed: Testbed, close: () => Promise<void>): PathSession {
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  return {
    endpoints: {
      client: h1,
      server: h2,
      serverIp: h2.underlayIp,
      daemons: [],
      dropWatch: [
        { node: h1, dev: h1.underlayDev },
        { node: h2, dev: h2.underlayDev },
      ],
    },
    info: { client: h1.underlayIp, server: h2.underlayIp, mtu: h1.mtu, testbed: bed.prefix },
    notes: [],
    close,
  };
}

async function kernel(bed: Testbed, close: () => Promise<void>): Promise<PathSession> {
  const hosts = bed.hosts as [TestHost, TestHost];
  const macs = [randomVtepMac(), randomVtepMac()];
  for (let i = 0; i < 2; i++) await setupKernelFlannelPeer(hosts[i]!, { vtepMac: macs[i]!, subnet: KERNEL_SUBNETS[i]! });
  for (let i = 0; i < 2; i++) {
    const o = 1 - i;
    await kernelPeerAddRemote(hosts[i]!, { subnet: KERNEL_SUBNETS[o]!, publicIp: hosts[o]!.underlayIp, vtepMac: macs[o]! });
  }
  const c1 = await addContainer(hosts[0], { subnet: KERNEL_SUBNETS[0]!, index: 0 });
  const c2 = await addContainer(hosts[1], { subnet: KERNEL_SUBNETS[1]!, index: 0 });
  const csum = await hosts[0].exec(['ip', '-d', 'link', 'show', OVERLAY_DEV]);
  return {
    endpoints: {
      client: c1,
      server: c2,
      serverIp: c2.ip,
      daemons: [],
      dropWatch: hosts.map((h) => ({ node: h, dev: OVERLAY_DEV })),
    },
    info: {
      client: c1.ip,
      server: c2.ip,
      subnets: KERNEL_SUBNETS,
      overlayMtu: hosts[0].mtu - 50,
      udpCsum: /\budpcsum\b/.test(csum.stdout) && !/\bnoudpcsum\b/.test(csum.stdout),
      testbed: bed.prefix,
    },
    notes: [],
    close,
  };
}

// ------------------------------------------------------------------------------------------------
// data plane alone (static runner)

interface RunnerProc {
  host: TestHost;
  child: ChildProcess;
  pid: number;
  /** Offload rung the runner reports in force (newer runners only). */
  rung?: string;
  stderr: () => string;
  exited: () => string | null;
  /** The runner's counters (stdin {"op":"counters"}), flattened: txPackets, …, drops.<reason>. */
  counters(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/** Top-level numbers and `drops.<reason>` of a CountersSnapshot; per-peer detail is left out. */
function flattenCounters(c: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(c)) {
    if (typeof v === 'number') out[k] = v;
    else if (k === 'drops' && v && typeof v === 'object') {
      for (const [r, n] of Object.entries(v as Record<string, unknown>)) if (typeof n === 'number') out[`drops.${r}`] = n;
    }
  }
  return out;
}

async function startRunner(host: TestHost, cfg: object, ctx: PathContext, spec: PathSpec): Promise<RunnerProc> {
  const runner = runnerPath();
  if (!fs.existsSync(runner)) throw new PathSetupError(`${runner} missing: build first`);
  const nodeOptions = [...ctx.nodeOptions];
  if (ctx.cpuProfDir) {
    const profDir = path.join(ctx.cpuProfDir, `${spec.id}-${host.name}`);
    fs.mkdirSync(profDir, { recursive: true });
    nodeOptions.push('--cpu-prof', `--cpu-prof-dir=${profDir}`);
  }
  const child = host.spawn(['node', ...nodeOptions, runner, JSON.stringify(cfg)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: childEnv(ctx.daemonEnv),
  });
  // stdout is JSON lines; events are queued and taken in order (ready first, then counter replies).
  const events: Array<Record<string, unknown>> = [];
  let partial = '';
  let err = '';
  let exited: string | null = null;
  const exitedP = new Promise<void>((resolve) =>
    child.on('exit', (code, signal) => {
      exited = `exited with ${signal ?? `code ${code}`}`;
      resolve();
    }),
  );
  child.stdout!.on('data', (b: Buffer) => {
    partial += b.toString();
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        events.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        err = `${err}stdout: ${line}\n`.slice(-8000);
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-8000)));
  child.stdin!.on('error', () => undefined); // a dead runner shows up as `exited`
  const stop = async (): Promise<void> => {
    if (exited !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    await exitedP;
    clearTimeout(timer);
  };
  const nextEvent = async (event: string, timeoutMs: number): Promise<Record<string, unknown>> => {
    for (const deadline = Date.now() + timeoutMs; ;) {
      const i = events.findIndex((e) => e.event === event);
      if (i >= 0) return events.splice(0, i + 1)[i]!;
      if (exited !== null) throw new PathSetupError(`static-runner on ${host.name} ${exited}: ${err.trim().slice(-1500)}`);
      if (Date.now() > deadline)
        throw new PathSetupError(`no "${event}" from the static runner on ${host.name} within ${timeoutMs} ms: ${err.trim().slice(-1500)}`);
      await sleep(20);
    }
  };
  let ready: { pid?: number; offloadRung?: string };
  try {
    ready = await nextEvent('ready', 15000);
  } catch (e) {
    await stop();
    throw e;
  }
  const counters = async (): Promise<Record<string, number>> => {
    child.stdin!.write('{"op":"counters"}\n');
    const ev = await nextEvent('counters', 10000);
    return flattenCounters(ev.counters as Record<string, unknown>);
  };
  return { host, child, pid: ready.pid ?? child.pid!, rung: ready.offloadRung, stderr: () => err, exited: () => exited, counters, stop };
}

function runnerRungNotes(spec: PathSpec, runners: RunnerProc[]): string[] {
  const reported = [...new Set(runners.map((r) => r.rung ?? '?'))];
  if (spec.rung && reported.some((r) => r !== spec.rung)) return [`forced ${spec.rung}, runners report rung ${reported.join('/')}`];
  return !spec.rung && runners.some((r) => r.rung) ? [`offload rung ${reported.join('/')}`] : [];
}

async function dataplane(bed: Testbed, spec: PathSpec, ctx: PathContext, close: () => Promise<void>): Promise<PathSession> {
  const hosts = bed.hosts as [TestHost, TestHost];
  const mtu = ctx.mtu - 50;
  const nodes = hosts.map((h, i) => ({ host: h, subnet: KERNEL_SUBNETS[i]!, gw: KERNEL_SUBNETS[i]!.split('/')[0]!, mac: randomVtepMac() }));
  const runners: RunnerProc[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(runners.map((r) => r.stop()));
  };
  try {
    for (const [i, n] of nodes.entries()) {
      const peer = nodes[1 - i]!;
      runners.push(
        await startRunner(
          n.host,
          {
            tunName: OVERLAY_DEV,
            vni: 1,
            localMac: n.mac,
            ...(spec.rung ? { offload: spec.rung } : {}),
            peers: [{ subnet: peer.subnet, publicIp: peer.host.underlayIp, vtepMac: peer.mac }],
          },
          ctx,
          spec,
        ),
      );
    }
    // What the route manager does for the TUN: address .0/32, MTU, up, an onlink route per peer.
    for (const [i, n] of nodes.entries()) {
      const peer = nodes[1 - i]!;
      await n.host.exec(['ip', 'addr', 'replace', `${n.gw}/32`, 'dev', OVERLAY_DEV]);
      await n.host.exec(['ip', 'link', 'set', OVERLAY_DEV, 'mtu', String(mtu), 'up']);
      await n.host.exec(['ip', 'route', 'replace', peer.subnet, 'via', peer.gw, 'dev', OVERLAY_DEV, 'onlink']);
    }
    const c1 = await addContainer(hosts[0], { subnet: nodes[0]!.subnet, index: 0, mtu });
    const c2 = await addContainer(hosts[1], { subnet: nodes[1]!.subnet, index: 0, mtu });
    const deadline = Date.now() + ctx.connectTimeoutMs;
    let forwarding = false;
    while (!forwarding && Date.now() < deadline) {
      forwarding = (await c1.exec(['ping', '-n', '-c', '1', '-W', '1', c2.ip], { allowFail: true, timeoutMs: 5000 })).code === 0;
      const dead = runners.find((r) => r.exited() !== null);
      if (dead) throw new PathSetupError(`static-runner on ${dead.host.name} ${dead.exited()}: ${dead.stderr().trim().slice(-1500)}`);
    }
    if (!forwarding) {
      throw new PathSetupError(
        `data plane does not forward: no ping reply from ${c1.ip} to ${c2.ip} within ${Math.round(ctx.connectTimeoutMs / 1000)} s\n` +
          runners.map((r) => `--- ${r.host.name} runner stderr ---\n${r.stderr().trim().split('\n').slice(-10).join('\n')}`).join('\n'),
      );
    }
    return {
      endpoints: {
        client: c1,
        server: c2,
        serverIp: c2.ip,
        daemons: runners.map((r, i) => ({ label: `${r.host.name} ${i === 0 ? 'tx' : 'rx'}`, pid: r.pid })),
        dropWatch: hosts.map((h) => ({ node: h, dev: OVERLAY_DEV })),
        counters: runners.map((r, i) => ({ label: `${r.host.name} ${i === 0 ? 'tx' : 'rx'}`, read: () => r.counters() })),
      },
      info: {
        client: c1.ip,
        server: c2.ip,
        subnets: KERNEL_SUBNETS,
        overlayMtu: mtu,
        runner: path.relative(REPO, runnerPath()),
        reportedRungs: runners.map((r) => r.rung),
        testbed: bed.prefix,
      },
      notes: runnerRungNotes(spec, runners),
      close: async () => {
        await stopAll();
        await close();
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

// ------------------------------------------------------------------------------------------------
// tsflanneld

interface Daemon {
  host: TestHost;
  child: ChildProcess;
  log: string;
  subnetFile: string;
  exited: string | null;
  exitedP: Promise<void>;
}

function startDaemon(bed: Testbed, host: TestHost, spec: PathSpec, ctx: PathContext): Daemon {
  const dir = path.join(bed.tmpDir, host.name);
  fs.mkdirSync(dir, { recursive: true });
  const subnetFile = path.join(dir, 'subnet.env');
  const log = path.join(dir, 'tsflanneld.log');
  const env = childEnv(ctx.daemonEnv);
  const rungArgs: string[] = [];
  if (spec.rung) {
    if (rungControl?.kind === 'flag') rungArgs.push(rungControl.flag, spec.rung);
    else if (rungControl?.kind === 'env') env[rungControl.name] = spec.rung;
    else throw new PathSetupError(`cannot force rung ${spec.rung}: the daemon has no -offload flag or OFFLOAD variable`);
  }
  const nodeOptions = [...ctx.nodeOptions];
  if (ctx.cpuProfDir) {
    const profDir = path.join(ctx.cpuProfDir, `${spec.id}-${host.name}`);
    fs.mkdirSync(profDir, { recursive: true });
    nodeOptions.push('--cpu-prof', `--cpu-prof-dir=${profDir}`);
  }
  const fd = fs.openSync(log, 'a');
  const cmd = [
    'node',
    ...nodeOptions,
    path.join(codeRoot, 'bin', 'tsflanneld'),
    '-etcd-endpoints',
    bed.etcdEndpoint!,
    '-iface',
    host.underlayDev,
    '-subnet-file',
    subnetFile,
    '-healthz-ip',
    '127.0.0.1',
    '-healthz-port',
    String(HEALTHZ_PORT),
    ...rungArgs,
    ...(spec.threads !== undefined ? ['-dataplane-threads', String(spec.threads)] : []),
  ];
  const envNote = spec.rung && rungControl?.kind === 'env' ? ` (${rungControl.name}=${spec.rung})` : '';
  fs.writeSync(fd, `# ${cmd.join(' ')}${envNote}\n`);
  const child = host.spawn(cmd, { stdio: ['ignore', fd, fd], env });
  fs.closeSync(fd);
  const d: Daemon = { host, child, log, subnetFile, exited: null, exitedP: Promise.resolve() };
  d.exitedP = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      d.exited = `exited with ${signal ?? `code ${code}`}`;
      resolve();
    });
  });
  return d;
}

async function stopDaemon(d: Daemon): Promise<void> {
  if (d.exited !== null) return;
  d.child.kill('SIGTERM');
  const timer = setTimeout(() => d.child.kill('SIGKILL'), 10000);
  await d.exitedP;
  clearTimeout(timer);
}

function readSubnetEnv(file: string): Record<string, string> | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1).trim();
  }
  return env.FLANNEL_SUBNET && env.FLANNEL_MTU ? env : null;
}

/** The daemon's log lines (pino JSON or plain) as "level: msg {fields}" text. */
export function readDaemonLog(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const levels: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
  return text
    .split('\n')
    .filter((l) => l.trim().length > 0 && !l.startsWith('# '))
    .map((line) => {
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        const { level, msg, time: _t, pid: _p, hostname: _h, ...rest } = j;
        const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
        return `${levels[level as number] ?? String(level)}: ${typeof msg === 'string' ? msg : JSON.stringify(msg ?? '')}${extra}`;
      } catch {
        return line;
      }
    });
}

const HTTP_GET_JS = `
const http = require('node:http');
const req = http.get({ host: '127.0.0.1', port: Number(process.argv[1]), path: process.argv[2], timeout: 10000 }, (res) => {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => { process.stdout.write(Buffer.concat(chunks)); process.exit(res.statusCode === 200 ? 0 : 1); });
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => { process.stderr.write(e.message); process.exit(1); });`;

/** The daemon's Prometheus text, fetched from inside its namespace. */
async function fetchMetrics(host: TestHost): Promise<string> {
  const res = await host.exec([process.execPath, '-e', HTTP_GET_JS, String(HEALTHZ_PORT), '/metrics'], { timeoutMs: 20000 });
  return res.stdout;
}

/** The rung label of the `tsflanneld_offload_rung` series whose value is 1, if the daemon exports one. */
function activeRung(metrics: string): string | undefined {
  return /^tsflanneld_offload_rung\{[^}]*rung="([^"]*)"[^}]*\}\s+1(?:\s|$)/m.exec(metrics)?.[1];
}

function tail(lines: string[], n: number): string {
  return lines.slice(-n).join('\n');
}

/** The real pid of the daemon: spawn goes through `ip netns exec` + setpriv, which both exec in place. */
function daemonPid(d: Daemon): number {
  const pid = d.child.pid;
  if (pid === undefined) throw new PathSetupError(`${d.host.name}: tsflanneld has no pid`);
  const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  if (cmdline.includes('tsflanneld')) return pid;
  // Some wrapper forked instead of exec'ing: take its child running the daemon.
  const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  for (const k of kids) {
    if (fs.readFileSync(`/proc/${k}/cmdline`, 'utf8').includes('tsflanneld')) return k;
  }
  throw new PathSetupError(`${d.host.name}: cannot find the tsflanneld process under pid ${pid}`);
}

/** True if the built daemon (JS or addon) mentions the variable at all; otherwise rungs can't be forced. */
export function daemonReadsEnv(name: string): boolean {
  const roots = [path.join(codeRoot, 'dist', 'src'), path.join(codeRoot, 'build', 'Release')];
  const stack = roots.filter((r) => fs.existsSync(r));
  while (stack.length > 0) {
    const p = stack.pop()!;
    const st = fs.statSync(p);
    if (st.isDirectory()) {
      for (const e of fs.readdirSync(p)) if (e !== 'obj.target' && e !== '.deps') stack.push(path.join(p, e));
    } else if (/\.(js|node)$/.test(p) && !p.endsWith('static-runner.js') && fs.readFileSync(p).includes(name)) {
      return true;
    }
  }
  return false;
}

async function diagnose(host: TestHost, peerSubnet: string): Promise<string> {
  const link = await host.exec(['ip', '-d', 'link', 'show', OVERLAY_DEV], { allowFail: true });
  const route = await host.exec(['ip', 'route', 'show', peerSubnet], { allowFail: true });
  const linkText =
    link.code === 0
      ? link.stdout
          .split('\n')
          .slice(0, 3)
          .map((l) => l.trim())
          .join(' ')
      : `no ${OVERLAY_DEV} device`;
  const routeText = route.stdout.trim() || 'none';
  return `${host.name}: ${linkText}; route to ${peerSubnet}: ${routeText}`;
}

async function tsflanneld(bed: Testbed, spec: PathSpec, ctx: PathContext, closeBed: () => Promise<void>): Promise<PathSession> {
  const hosts = bed.hosts as [TestHost, TestHost];
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, NETWORK_CONFIG]);
  const daemons = hosts.map((h) => startDaemon(bed, h, spec, ctx));
  const stopAll = async (): Promise<void> => {
    await Promise.all(daemons.map(stopDaemon));
  };
  const fail = async (msg: string): Promise<never> => {
    await stopAll();
    const logs = daemons.map((d) => `--- ${d.host.name} tsflanneld log (last lines) ---\n${tail(readDaemonLog(d.log), 12)}`).join('\n');
    throw new PathSetupError(`${msg}\n${logs}`);
  };

  let envs: Array<Record<string, string>>;
  for (const deadline = Date.now() + ctx.readyTimeoutMs; ;) {
    const dead = daemons.find((d) => d.exited);
    if (dead) return fail(`tsflanneld on ${dead.host.name} ${dead.exited} before it was ready`);
    const got = daemons.map((d) => readSubnetEnv(d.subnetFile));
    if (got.every((e) => e !== null)) {
      envs = got;
      break;
    }
    if (Date.now() > deadline) {
      const missing = daemons.filter((_, i) => got[i] === null).map((d) => d.host.name);
      return fail(
        `tsflanneld did not become ready: no subnet.env from ${missing.join(', ')} within ${Math.round(ctx.readyTimeoutMs / 1000)} s`,
      );
    }
    await sleep(200);
  }
  const subnets = envs.map((e) => formatIp4Net(parseIp4Net(e.FLANNEL_SUBNET!)));
  const mtus = envs.map((e) => Number(e.FLANNEL_MTU));
  const c1 = await addContainer(hosts[0], { subnet: subnets[0]!, index: 0, mtu: mtus[0]! });
  const c2 = await addContainer(hosts[1], { subnet: subnets[1]!, index: 0, mtu: mtus[1]! });

  let procs: DaemonProc[];
  try {
    procs = daemons.map((d, i) => ({ label: `${d.host.name} ${i === 0 ? 'tx' : 'rx'}`, pid: daemonPid(d) }));
  } catch (e) {
    return fail((e as Error).message);
  }
  const endpoints: Endpoints = {
    client: c1,
    server: c2,
    serverIp: c2.ip,
    daemons: procs,
    dropWatch: hosts.map((h) => ({ node: h, dev: OVERLAY_DEV })),
    counters: hosts.map((h, i) => ({
      label: procs[i]!.label,
      read: async () => parsePromSamples(await fetchMetrics(h), DAEMON_COUNTERS),
    })),
  };

  // Routes and peers land shortly after the lease appears; give the daemons time to forward.
  const deadline = Date.now() + ctx.connectTimeoutMs;
  let forwarding = false;
  while (!forwarding && Date.now() < deadline) {
    const res = await c1.exec(['ping', '-n', '-c', '1', '-W', '1', c2.ip], { allowFail: true, timeoutMs: 5000 });
    forwarding = res.code === 0;
    const dead = daemons.find((d) => d.exited);
    if (dead) return fail(`tsflanneld on ${dead.host.name} ${dead.exited} after startup`);
  }
  if (!forwarding) {
    const diag = [await diagnose(hosts[0], subnets[1]!), await diagnose(hosts[1], subnets[0]!)].join('\n');
    return fail(
      `tsflanneld does not forward: no ping reply from ${c1.ip} (${hosts[0].name}) to ${c2.ip} (${hosts[1].name}) ` +
        `within ${Math.round(ctx.connectTimeoutMs / 1000)} s; both daemons are running and wrote subnet.env ` +
        `(${subnets.join(', ')}, MTU ${mtus.join('/')})\n${diag}`,
    );
  }

  const offloadLines = readDaemonLog(daemons[0]!.log).filter((l) => /offload|vnet|gso|gro|\buso\b|rung/i.test(l));
  const notes: string[] = [];
  const rungs = await Promise.all(hosts.map((h) => fetchMetrics(h).then(activeRung, () => undefined)));
  if (rungs.some((r) => r !== undefined)) {
    if (spec.rung && rungs.some((r) => r !== spec.rung))
      notes.push(`forced ${spec.rung}, daemons report rung ${rungs.map((r) => r ?? '?').join('/')}`);
    else if (!spec.rung) notes.push(`offload rung ${[...new Set(rungs.map((r) => r ?? '?'))].join('/')}`);
  } else if (spec.rung && offloadLines.length === 0) {
    notes.push(`daemon reported nothing about offloads with rung ${spec.rung} forced`);
  }
  return {
    endpoints,
    info: {
      client: c1.ip,
      server: c2.ip,
      subnets,
      overlayMtu: mtus[0],
      rung: spec.rung ?? 'default',
      reportedRungs: rungs,
      daemonOffloadLog: offloadLines.slice(0, 8),
      daemonPids: procs.map((p) => p.pid),
      testbed: bed.prefix,
    },
    notes,
    close: async () => {
      for (const d of daemons) if (d.exited) notes.push(`tsflanneld on ${d.host.name} ${d.exited} during the measurement`);
      await stopAll();
      const problems = daemons.flatMap((d) =>
        readDaemonLog(d.log)
          .filter((l) => /^(warn|error|fatal):/.test(l))
          .map((l) => `${d.host.name}: ${l}`),
      );
      if (problems.length > 0) ctx.log(`  daemon warnings/errors:\n    ${problems.slice(0, 10).join('\n    ')}`);
      await closeBed();
    },
  };
}

/** perf record on the daemons for `seconds` (root pid namespace: pids are global). */
export function perfRecord(pids: number[], seconds: number, out: string): Promise<string> {
  return new Promise((resolve) => {
    const args = ['record', '-F', '499', '-g', '-o', out, '-p', pids.join(','), '--', 'sleep', String(Math.max(1, Math.round(seconds)))];
    const child = cpSpawn('perf', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-2000)));
    child.on('error', (e) => resolve(`perf: ${e.message}`));
    child.on('exit', (code) => resolve(code === 0 ? '' : `perf record exit ${code}: ${err.trim()}`));
  });
}
