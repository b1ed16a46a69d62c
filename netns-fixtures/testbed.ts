// Test hosts as network namespaces on a bridged underlay, plus the pieces interop tests need around
// them: containers on a cni0 bridge, a kernel flannel.N peer laid out exactly as flanneld does it,
// flannel-format leases in etcd, packet captures, iperf3 and ping.
//
// Every object lives inside namespaces named `<prefix>-…`: nothing is created in the root
// namespace, so parallel runs never collide and a crashed run is cleaned by prefix alone.
// Prefix = `tsft-<pid>-<epoch seconds>-<random>`: the pid tells whether the owner is still alive,
// the time how old a leftover is (cleanupStale).
import { spawn as cpSpawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { formatIp4, parseIp4Net, sizeOf, type Ip4Net } from '../src/subnet/ip4';
import { startEtcd, type EtcdServer } from './etcd';
import { parsePcap, type CapturedPacket, type PcapParseOptions } from './pcap';

export class TestbedError extends Error {
  override name = 'TestbedError';
}

export interface ExecOptions {
  input?: string;
  /** Default 30 s; the command is SIGKILLed after it. */
  timeoutMs?: number;
  /** Resolve with the exit code instead of rejecting on a non-zero exit. */
  allowFail?: boolean;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Anything commands can run in: a host or a container namespace. */
export interface NsNode {
  readonly name: string;
  readonly ns: string;
  readonly testbed: Testbed;
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Long-running process inside the namespace; killed by teardown (and by the kernel if we die). */
  spawn(cmd: string[], opts?: SpawnOptions): ChildProcess;
}

export interface TestHost extends NsNode {
  readonly index: number; // 1-based
  readonly underlayIp: string;
  readonly underlayDev: string;
  readonly mtu: number;
}

export interface Container extends NsNode {
  readonly host: TestHost;
  readonly ip: string;
  readonly subnet: string;
  readonly gateway: string;
}

export interface Testbed {
  readonly prefix: string;
  readonly hosts: TestHost[];
  readonly etcd?: EtcdServer;
  readonly etcdEndpoint?: string;
  /** Scratch dir removed by teardown (logs, pcaps, subnet.env files). */
  readonly tmpDir: string;
  readonly underlayPrefixLen: number;
  addHost(): Promise<TestHost>;
  /** Registers a cleanup to run at teardown before namespaces go (LIFO). */
  onTeardown(fn: () => Promise<void> | void): void;
  teardown(): Promise<void>;
}

/** The part of a node-tap Test we use; keeps fixtures usable outside tap (demo, bench). */
export interface TeardownRegistrar {
  teardown(fn: () => unknown): void;
}

export interface TestbedOptions {
  hosts: number;
  /** Underlay veth MTU; default 1500. */
  mtu?: number;
  /** Start etcd in its own namespace on the underlay at 192.0.2.2. */
  etcd?: boolean;
  /** Registers teardown with this tap test. */
  t?: TeardownRegistrar;
}

export const PREFIX_ROOT = 'tsft';
export const UNDERLAY_NET = '192.0.2';
export const UNDERLAY_PREFIX_LEN = 24;
export const ETCD_IP = `${UNDERLAY_NET}.2`;
const SWITCH_BRIDGE = 'br0';
const UNDERLAY_DEV = 'eth0';
const PREFIX_RE = new RegExp(`^(${PREFIX_ROOT}-(\\d+)-(\\d+)-[a-z0-9]+)-`);

// ------------------------------------------------------------------------------------------------
// process helpers

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function describe(cmd: string[]): string {
  return cmd.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Runs a command to completion (no shell). */
export function run(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 30000;
  return new Promise((resolve, reject) => {
    const child = cpSpawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new TestbedError(`${describe(cmd)}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code: code ?? -1 };
      if (timedOut) {
        reject(new TestbedError(`${describe(cmd)}: timed out after ${timeoutMs} ms\n${res.stderr.trim()}`));
      } else if (res.code !== 0 && !opts.allowFail) {
        const why = signal ? `killed by ${signal}` : `exit ${res.code}`;
        reject(new TestbedError(`${describe(cmd)}: ${why}: ${(res.stderr || res.stdout).trim()}`));
      } else {
        resolve(res);
      }
    });
    child.stdin.on('error', () => undefined); // command may exit without reading its input
    child.stdin.end(opts.input ?? '');
  });
}

function nsCmd(ns: string, cmd: string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...cmd];
}

/** Waits until cond() is truthy; cond errors count as "not yet" and the last one is reported. */
export async function waitFor<T>(
  what: string,
  cond: () => Promise<T | undefined | null | false>,
  timeoutMs = 30000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown = null;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const detail = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new TestbedError(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(): Promise<string[]> {
  const res = await run(['ip', 'netns', 'list'], { allowFail: true });
  return res.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!.trim())
    .filter((n) => n.length > 0);
}

async function nsPids(ns: string): Promise<number[]> {
  const res = await run(['ip', 'netns', 'pids', ns], { allowFail: true });
  return res.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
}

/** TERM, then KILL what is left, every process inside the namespaces (all of them ours). */
async function killNamespaceProcesses(namespaces: string[]): Promise<void> {
  const pids = new Set<number>();
  for (const ns of namespaces) for (const p of await nsPids(ns)) pids.add(p);
  if (pids.size === 0) return;
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      pids.delete(p);
    }
  }
  const deadline = Date.now() + 3000;
  while ([...pids].some(pidAlive) && Date.now() < deadline) await sleep(50);
  for (const p of pids) {
    if (!pidAlive(p)) continue;
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const killDeadline = Date.now() + 3000;
  while ([...pids].some(pidAlive) && Date.now() < killDeadline) await sleep(50);
}

async function deleteNamespaces(namespaces: string[]): Promise<string[]> {
  const errors: string[] = [];
  await killNamespaceProcesses(namespaces);
  const present = new Set(await listNamespaces());
  for (const ns of namespaces) {
    if (!present.has(ns)) continue;
    const res = await run(['ip', 'netns', 'del', ns], { allowFail: true });
    if (res.code !== 0) errors.push(`ip netns del ${ns}: ${res.stderr.trim()}`);
  }
  return errors;
}

function tmpDirsOf(prefix: string): string[] {
  try {
    return fs
      .readdirSync(os.tmpdir())
      .filter((d) => d.startsWith(`${prefix}-`))
      .map((d) => path.join(os.tmpdir(), d));
  } catch {
    return [];
  }
}

/** Removes everything a run with this prefix left behind: processes, namespaces, temp dirs. */
export async function cleanupPrefix(prefix: string): Promise<string[]> {
  const mine = (await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`));
  const errors = await deleteNamespaces(mine);
  for (const dir of tmpDirsOf(prefix)) fs.rmSync(dir, { recursive: true, force: true });
  if (errors.length > 0) throw new TestbedError(`cleanup of ${prefix}: ${errors.join('; ')}`);
  return mine;
}

export interface StaleOptions {
  /** Only prefixes at least this old; default 10. */
  olderThanMinutes?: number;
  /** Also clean prefixes whose owner process still runs (age alone decides). Default false. */
  ignoreOwner?: boolean;
}

/**
 * Cleans leftovers of crashed runs: prefixes matching `pattern` (default: all testbed prefixes)
 * whose owner pid is gone and which are older than the limit. Returns the prefixes cleaned.
 */
export async function cleanupStale(pattern: RegExp | string = `^${PREFIX_ROOT}-`, opts: StaleOptions = {}): Promise<string[]> {
  const re = typeof pattern === 'string' ? new RegExp(pattern) : pattern;
  const minAgeSec = (opts.olderThanMinutes ?? 10) * 60;
  const now = Date.now() / 1000;
  const prefixes = new Map<string, { pid: number; epoch: number }>();
  const names = [...(await listNamespaces()), ...fs.readdirSync(os.tmpdir())];
  for (const name of names) {
    const m = PREFIX_RE.exec(name);
    if (!m || !re.test(m[1]!)) continue;
    prefixes.set(m[1]!, { pid: Number(m[2]), epoch: Number(m[3]) });
  }
  const cleaned: string[] = [];
  const errors: string[] = [];
  for (const [prefix, { pid, epoch }] of prefixes) {
    if (now - epoch < minAgeSec) continue;
    if (!opts.ignoreOwner && pidAlive(pid)) continue; // includes our own live testbeds
    try {
      await cleanupPrefix(prefix);
      cleaned.push(prefix);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  if (errors.length > 0) throw new TestbedError(errors.join('; '));
  return cleaned;
}

export function newPrefix(): string {
  return `${PREFIX_ROOT}-${process.pid}-${Math.floor(Date.now() / 1000)}-${randomBytes(3).toString('hex')}`;
}

// ------------------------------------------------------------------------------------------------
// testbed

class NsNodeImpl implements NsNode {
  constructor(
    readonly name: string,
    readonly ns: string,
    readonly testbed: TestbedImpl,
  ) {}

  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run(nsCmd(this.ns, cmd), opts).catch((e: unknown) => {
      throw new TestbedError(`[${this.name}] ${e instanceof Error ? e.message : String(e)}`);
    });
  }

  spawn(cmd: string[], opts: SpawnOptions = {}): ChildProcess {
    // pdeathsig: if this process dies without teardown, the kernel kills the child too.
    const full = nsCmd(this.ns, ['setpriv', '--pdeathsig', 'KILL', '--', ...cmd]);
    const child = cpSpawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.testbed.track(child);
    return child;
  }
}

class HostImpl extends NsNodeImpl implements TestHost {
  readonly underlayDev = UNDERLAY_DEV;
  cni: { net: Ip4Net; gateway: string } | null = null;
  constructor(
    name: string,
    ns: string,
    testbed: TestbedImpl,
    readonly index: number,
    readonly underlayIp: string,
    readonly mtu: number,
  ) {
    super(name, ns, testbed);
  }
}

class TestbedImpl implements Testbed {
  readonly hosts: HostImpl[] = [];
  etcd?: EtcdServer;
  etcdEndpoint?: string;
  readonly tmpDir: string;
  readonly underlayPrefixLen = UNDERLAY_PREFIX_LEN;
  readonly switchNs: string;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly cleanups: Array<() => Promise<void> | void> = [];
  private tornDown: Promise<void> | null = null;
  private readonly exitHook = (): void => this.teardownSync();

  constructor(
    readonly prefix: string,
    readonly mtu: number,
  ) {
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    this.switchNs = `${prefix}-sw`;
    process.on('exit', this.exitHook);
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
  }

  onTeardown(fn: () => Promise<void> | void): void {
    this.cleanups.push(fn);
  }

  async addNamespace(ns: string): Promise<void> {
    this.namespaces.push(ns);
    await run(['ip', 'netns', 'add', ns]);
    await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }

  async createSwitch(): Promise<void> {
    await this.addNamespace(this.switchNs);
    await run(['ip', '-n', this.switchNs, 'link', 'add', SWITCH_BRIDGE, 'type', 'bridge', 'stp_state', '0']);
    await run(['ip', '-n', this.switchNs, 'link', 'set', SWITCH_BRIDGE, 'up']);
  }

  /** veth from `ns` (named eth0) to a port of the switch bridge, address ip/24. */
  async plugIntoSwitch(ns: string, port: string, ip: string): Promise<void> {
    const mtu = String(this.mtu);
    await run([
      'ip',
      '-n',
      ns,
      'link',
      'add',
      UNDERLAY_DEV,
      'mtu',
      mtu,
      'type',
      'veth',
      'peer',
      'name',
      port,
      'mtu',
      mtu,
      'netns',
      this.switchNs,
    ]);
    await run(['ip', '-n', this.switchNs, 'link', 'set', port, 'master', SWITCH_BRIDGE, 'up']);
    await run(['ip', '-n', ns, 'addr', 'add', `${ip}/${UNDERLAY_PREFIX_LEN}`, 'dev', UNDERLAY_DEV]);
    await run(['ip', '-n', ns, 'link', 'set', UNDERLAY_DEV, 'up']);
  }

  async addHost(): Promise<TestHost> {
    const index = this.hosts.length + 1;
    if (10 + index > 254) throw new TestbedError('underlay /24 is full');
    const name = `h${index}`;
    const ns = `${this.prefix}-${name}`;
    const ip = `${UNDERLAY_NET}.${10 + index}`;
    await this.addNamespace(ns);
    await this.plugIntoSwitch(ns, `p${name}`, ip);
    // flannel hosts route between containers, the overlay device and the underlay.
    await run(nsCmd(ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']));
    const host = new HostImpl(name, ns, this, index, ip, this.mtu);
    this.hosts.push(host);
    return host;
  }

  async addEtcd(): Promise<void> {
    const ns = `${this.prefix}-etcd`;
    await this.addNamespace(ns);
    await this.plugIntoSwitch(ns, 'petcd', ETCD_IP);
    this.etcd = await startEtcd({ netns: ns, listenIp: ETCD_IP, name: `${this.prefix}-etcd` });
    this.etcdEndpoint = this.etcd.endpoint;
  }

  teardown(): Promise<void> {
    if (!this.tornDown) this.tornDown = this.doTeardown();
    return this.tornDown;
  }

  private async doTeardown(): Promise<void> {
    const errors: string[] = [];
    while (this.cleanups.length > 0) {
      const fn = this.cleanups.pop()!;
      try {
        await fn();
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    if (this.etcd) {
      try {
        await this.etcd.destroy();
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    await this.killChildren();
    errors.push(...(await deleteNamespaces([...this.namespaces].reverse())));
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
    process.removeListener('exit', this.exitHook);
    const left = (await listNamespaces()).filter((n) => n.startsWith(`${this.prefix}-`));
    if (left.length > 0) errors.push(`namespaces left behind: ${left.join(', ')}`);
    if (errors.length > 0) throw new TestbedError(`teardown of ${this.prefix}: ${errors.join('; ')}`);
  }

  private async killChildren(): Promise<void> {
    const live = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
    if (live.length === 0) return;
    const exited = live.map(
      (c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))),
    );
    for (const c of live) c.kill('SIGTERM');
    const timer = setTimeout(() => live.forEach((c) => c.kill('SIGKILL')), 3000);
    await Promise.all(exited);
    clearTimeout(timer);
  }

  /** Last resort from process.on('exit'): no event loop left, so everything is synchronous. */
  private teardownSync(): void {
    if (this.tornDown) return;
    for (const c of this.children) c.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
        for (const p of pids
          .split('\n')
          .map(Number)
          .filter((n) => n > 0 && n !== process.pid)) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // gone
          }
        }
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // best effort: cleanupStale gets whatever is left
      }
    }
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
  }
}

export async function createTestbed(opts: TestbedOptions): Promise<Testbed> {
  const bed = new TestbedImpl(newPrefix(), opts.mtu ?? 1500);
  opts.t?.teardown(() => bed.teardown());
  try {
    await bed.createSwitch();
    if (opts.etcd) await bed.addEtcd();
    for (let i = 0; i < opts.hosts; i++) await bed.addHost();
  } catch (e) {
    // Without t the caller never gets the testbed to tear down.
    await bed.teardown().catch(() => undefined);
    throw e;
  }
  return bed;
}

function bedOf(node: NsNode): TestbedImpl {
  if (!(node.testbed instanceof TestbedImpl)) throw new TestbedError(`${node.name} is not a testbed node`);
  return node.testbed;
}

// ------------------------------------------------------------------------------------------------
// containers

function subnetAddr(net: Ip4Net, offset: number): string {
  if (offset <= 0 || offset >= sizeOf(net.prefixLen) - 1) {
    throw new TestbedError(`offset ${offset} outside ${formatIp4(net.ip)}/${net.prefixLen}`);
  }
  return formatIp4((net.ip + offset) >>> 0);
}

export interface ContainerOptions {
  /** The host's lease, e.g. "10.5.72.0/24"; cni0 gets .1, the container .(10+index). */
  subnet: string;
  index: number;
  /** Container and cni0 MTU; default host MTU − 50, as FLANNEL_MTU for a VXLAN lease. */
  mtu?: number;
}

/** A container namespace behind the host's cni0 bridge, default route via the bridge address. */
export async function addContainer(host: TestHost, opts: ContainerOptions): Promise<Container> {
  if (!(host instanceof HostImpl)) throw new TestbedError(`${host.name} is not a testbed host`);
  const bed = bedOf(host);
  const net = parseIp4Net(opts.subnet);
  const mtu = String(opts.mtu ?? host.mtu - 50);
  const gateway = subnetAddr(net, 1);
  if (!host.cni) {
    await host.exec(['ip', 'link', 'add', 'cni0', 'type', 'bridge', 'stp_state', '0']);
    await host.exec(['ip', 'addr', 'add', `${gateway}/${net.prefixLen}`, 'dev', 'cni0']);
    await host.exec(['ip', 'link', 'set', 'cni0', 'mtu', mtu, 'up']);
    host.cni = { net, gateway };
  } else if (host.cni.net.ip !== net.ip || host.cni.net.prefixLen !== net.prefixLen) {
    throw new TestbedError(`${host.name}: cni0 already serves ${formatIp4(host.cni.net.ip)}/${host.cni.net.prefixLen}, not ${opts.subnet}`);
  }
  const ip = subnetAddr(net, 10 + opts.index);
  const name = `${host.name}c${opts.index}`;
  const ns = `${bed.prefix}-${name}`;
  await bed.addNamespace(ns);
  const hostVeth = `veth${opts.index}`;
  await host.exec(['ip', 'link', 'add', hostVeth, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns]);
  await host.exec(['ip', 'link', 'set', hostVeth, 'master', 'cni0', 'up']);
  await run(['ip', '-n', ns, 'addr', 'add', `${ip}/${net.prefixLen}`, 'dev', 'eth0']);
  await run(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
  await run(['ip', '-n', ns, 'route', 'add', 'default', 'via', gateway]);
  const node = new NsNodeImpl(name, ns, bed);
  return Object.assign(node, { host, ip, subnet: `${formatIp4(net.ip)}/${net.prefixLen}`, gateway });
}

// ------------------------------------------------------------------------------------------------
// kernel flannel.N peer (docs/compat.md §5.2, §5.5)

export interface KernelPeerOptions {
  vni?: number; // default 1
  port?: number; // default 8472
  vtepMac: string;
  /** This host's lease, e.g. "10.5.72.0/24"; the device gets its network address /32. */
  subnet: string;
  /** Device MTU; default underlay MTU − 50. */
  mtu?: number;
}

export interface KernelPeer {
  dev: string;
  vni: number;
  port: number;
  vtepMac: string;
  subnet: string;
  publicIp: string;
}

/** A random VtepMAC the way flannel makes one: unicast, locally administered. */
export function randomVtepMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export async function setupKernelFlannelPeer(host: TestHost, opts: KernelPeerOptions): Promise<KernelPeer> {
  const vni = opts.vni ?? 1;
  const port = opts.port ?? 8472;
  const dev = `flannel.${vni}`;
  const net = parseIp4Net(opts.subnet);
  const mac = opts.vtepMac.toLowerCase();
  // Same attributes flanneld sends: ID, LOCAL, LINK, port, learning off; TTL/TOS 0 and no group
  // are iproute2's defaults too, and udpcsum is left to the kernel default as flannel does.
  await host.exec([
    'ip',
    'link',
    'add',
    dev,
    'address',
    mac,
    'type',
    'vxlan',
    'id',
    String(vni),
    'local',
    host.underlayIp,
    'dev',
    host.underlayDev,
    'nolearning',
    'dstport',
    String(port),
  ]);
  await host.exec(['sysctl', '-qw', `net/ipv6/conf/${dev}/accept_ra=0`]);
  await host.exec(['ip', 'addr', 'add', `${formatIp4(net.ip)}/32`, 'dev', dev]);
  await host.exec(['ip', 'link', 'set', dev, 'mtu', String(opts.mtu ?? host.mtu - 50), 'up']);
  return { dev, vni, port, vtepMac: mac, subnet: `${formatIp4(net.ip)}/${net.prefixLen}`, publicIp: host.underlayIp };
}

export interface RemoteLease {
  vni?: number;
  /** The remote's lease, e.g. "10.5.73.0/24". */
  subnet: string;
  publicIp: string;
  vtepMac: string;
}

/** What flanneld does for an Added lease: permanent neighbor, FDB entry, onlink route (§5.5). */
export async function kernelPeerAddRemote(host: TestHost, remote: RemoteLease): Promise<void> {
  const dev = `flannel.${remote.vni ?? 1}`;
  const net = parseIp4Net(remote.subnet);
  const gw = formatIp4(net.ip);
  const mac = remote.vtepMac.toLowerCase();
  await host.exec(['ip', 'neigh', 'replace', gw, 'lladdr', mac, 'dev', dev, 'nud', 'permanent']);
  await host.exec(['bridge', 'fdb', 'replace', mac, 'dev', dev, 'dst', remote.publicIp, 'self', 'permanent']);
  await host.exec(['ip', 'route', 'replace', `${gw}/${net.prefixLen}`, 'via', gw, 'dev', dev, 'onlink']);
}

/** What flanneld does for a Removed lease: delete neighbor, FDB entry and route, best-effort. */
export async function kernelPeerRemoveRemote(host: TestHost, remote: RemoteLease): Promise<void> {
  const dev = `flannel.${remote.vni ?? 1}`;
  const net = parseIp4Net(remote.subnet);
  const gw = formatIp4(net.ip);
  const mac = remote.vtepMac.toLowerCase();
  await host.exec(['ip', 'neigh', 'del', gw, 'dev', dev], { allowFail: true });
  await host.exec(['bridge', 'fdb', 'del', mac, 'dev', dev, 'dst', remote.publicIp, 'self'], { allowFail: true });
  await host.exec(['ip', 'route', 'del', `${gw}/${net.prefixLen}`, 'via', gw, 'dev', dev], { allowFail: true });
}

// ------------------------------------------------------------------------------------------------
// flannel leases in etcd (docs/compat.md §1)

export type Etcdctl = ((args: string[]) => Promise<string>) | { etcdctl(args: string[]): Promise<string> };

export const FLANNEL_LEASE_TTL_SEC = 86400;

export function flannelLeaseKey(prefix: string, subnet: string): string {
  const net = parseIp4Net(subnet);
  return `${prefix.replace(/\/+$/, '')}/subnets/${formatIp4(net.ip)}-${net.prefixLen}`;
}

/** The lease value byte-for-byte as flanneld's Go JSON encoder writes it for an IPv4 VXLAN node. */
export function flannelLeaseValue(publicIp: string, vtepMac: string, vni = 1): string {
  return JSON.stringify({
    PublicIP: publicIp,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: vni, VtepMAC: vtepMac.toLowerCase() },
  });
}

/** Writes a kernel peer's lease as flanneld would: Grant(24 h) + put with that lease. */
export async function writeFlannelLease(
  etcdctl: Etcdctl,
  prefix: string,
  subnet: string,
  publicIp: string,
  vtepMac: string,
  vni = 1,
): Promise<{ key: string; value: string; leaseId: string }> {
  const ctl = typeof etcdctl === 'function' ? etcdctl : (args: string[]) => etcdctl.etcdctl(args);
  const granted = await ctl(['lease', 'grant', String(FLANNEL_LEASE_TTL_SEC)]);
  const m = /lease ([0-9a-f]+) granted/.exec(granted);
  if (!m) throw new TestbedError(`unexpected etcdctl lease grant output: ${granted.trim()}`);
  const key = flannelLeaseKey(prefix, subnet);
  const value = flannelLeaseValue(publicIp, vtepMac, vni);
  await ctl(['put', `--lease=${m[1]}`, key, value]);
  return { key, value, leaseId: m[1]! };
}

// ------------------------------------------------------------------------------------------------
// packet capture

export interface Capture {
  readonly file: string;
  /** Stops tcpdump and returns the packets it saw. */
  stop(opts?: PcapParseOptions): Promise<CapturedPacket[]>;
}

export async function startCapture(node: NsNode, dev: string, bpfFilter: string, opts: { timeoutMs?: number } = {}): Promise<Capture> {
  const bed = bedOf(node);
  const file = path.join(bed.tmpDir, `cap-${node.name}-${dev}-${randomBytes(3).toString('hex')}.pcap`);
  // -U + --immediate-mode: packets reach the file as they arrive, so stop() right after traffic sees them.
  const cmd = ['tcpdump', '-n', '-i', dev, '-s', '0', '-U', '--immediate-mode', '-w', file];
  if (bpfFilter.trim()) cmd.push(bpfFilter);
  const child = node.spawn(cmd);
  let stderr = '';
  let exited = null as string | null; // set by the exit handler
  const done = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      exited = `code ${code} signal ${signal}`;
      resolve();
    });
  });
  child.stdout!.resume();
  const listening = new Promise<void>((resolve) => {
    child.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      if (/listening on/.test(stderr)) resolve();
    });
  });
  const timeoutMs = opts.timeoutMs ?? 10000;
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    listening.then(() => 'ok' as const),
    done.then(() => 'exited' as const),
    new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (outcome !== 'ok') {
    child.kill('SIGKILL');
    await done;
    throw new TestbedError(`[${node.name}] tcpdump on ${dev} did not start (${outcome}${exited ? `, ${exited}` : ''}): ${stderr.trim()}`);
  }
  let stopped: Promise<CapturedPacket[]> | null = null;
  const stop = (parseOpts?: PcapParseOptions): Promise<CapturedPacket[]> => {
    if (!stopped) {
      stopped = (async () => {
        if (exited === null) {
          // Let packets already on the wire reach tcpdump before asking it to flush and exit.
          await sleep(200);
          child.kill('SIGINT');
          const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await done;
          clearTimeout(killTimer);
        }
        return parsePcap(fs.readFileSync(file), parseOpts);
      })();
    }
    return stopped;
  };
  bed.onTeardown(async () => {
    await stop().catch(() => undefined);
  });
  return { file, stop };
}

// ------------------------------------------------------------------------------------------------
// iperf3

export interface Iperf3Server {
  readonly port: number;
  stop(): Promise<void>;
}

async function listeningOn(node: NsNode, port: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<boolean> {
  const flag = proto === 'tcp' ? '-Hltn' : '-Hlun';
  const res = await node.exec(['ss', flag, `sport = :${port}`], { allowFail: true });
  return res.stdout.trim().length > 0;
}

export async function iperf3Server(node: NsNode, opts: { port?: number } = {}): Promise<Iperf3Server> {
  const bed = bedOf(node);
  const port = opts.port ?? 5201;
  const child = node.spawn(['iperf3', '-s', '-p', String(port)]);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  child.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    }
  };
  bed.onTeardown(stop);
  try {
    await waitFor(
      `iperf3 server on ${node.name}:${port}`,
      async () => {
        if (child.exitCode !== null) throw new TestbedError(`iperf3 -s exited: ${out.trim()}`);
        return listeningOn(node, port);
      },
      10000,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, stop };
}

export interface Iperf3ClientOptions {
  seconds?: number; // default 5
  streams?: number; // default 1
  udp?: boolean;
  /** Write size (-l): UDP datagram payload or TCP write size. */
  len?: number;
  /** Target rate (-b), e.g. "500M"; iperf3's UDP default is 1 Mbit/s. */
  bitrate?: string;
  port?: number;
  reverse?: boolean;
}

export interface Iperf3Result {
  /** Throughput seen by the receiver. */
  bitsPerSecond: number;
  sentBitsPerSecond: number;
  retransmits?: number; // TCP
  lostPackets?: number; // UDP
  packets?: number; // UDP
  lostPercent?: number; // UDP
  jitterMs?: number; // UDP
  raw: unknown;
}

interface Iperf3Json {
  error?: string;
  end?: {
    sum_sent?: { bits_per_second: number; retransmits?: number };
    sum_received?: { bits_per_second: number };
    sum?: { bits_per_second: number; lost_packets?: number; packets?: number; lost_percent?: number; jitter_ms?: number };
  };
}

export async function iperf3Client(node: NsNode, serverIp: string, opts: Iperf3ClientOptions = {}): Promise<Iperf3Result> {
  const seconds = opts.seconds ?? 5;
  const cmd = ['iperf3', '-J', '-c', serverIp, '-p', String(opts.port ?? 5201), '-t', String(seconds), '-P', String(opts.streams ?? 1)];
  if (opts.udp) cmd.push('-u');
  if (opts.len !== undefined) cmd.push('-l', String(opts.len));
  if (opts.bitrate !== undefined) cmd.push('-b', opts.bitrate);
  if (opts.reverse) cmd.push('-R');
  // --connect-timeout bounds a blackholed overlay; the overall timeout covers a stalled test.
  cmd.push('--connect-timeout', '5000');
  const res = await node.exec(cmd, { allowFail: true, timeoutMs: seconds * 1000 + 30000 });
  let json: Iperf3Json;
  try {
    json = JSON.parse(res.stdout) as Iperf3Json;
  } catch {
    throw new TestbedError(
      `[${node.name}] iperf3 -c ${serverIp}: no JSON (exit ${res.code}): ${(res.stderr || res.stdout).trim().slice(0, 500)}`,
    );
  }
  if (json.error || res.code !== 0) {
    throw new TestbedError(`[${node.name}] iperf3 -c ${serverIp}: ${json.error ?? `exit ${res.code}`}`);
  }
  const end = json.end ?? {};
  if (opts.udp) {
    const sum = end.sum;
    if (!sum) throw new TestbedError(`[${node.name}] iperf3 UDP result without end.sum`);
    const lost = sum.lost_percent ?? 0;
    return {
      bitsPerSecond: end.sum_received?.bits_per_second ?? sum.bits_per_second * (1 - lost / 100),
      sentBitsPerSecond: end.sum_sent?.bits_per_second ?? sum.bits_per_second,
      lostPackets: sum.lost_packets,
      packets: sum.packets,
      lostPercent: sum.lost_percent,
      jitterMs: sum.jitter_ms,
      raw: json,
    };
  }
  if (!end.sum_received || !end.sum_sent) throw new TestbedError(`[${node.name}] iperf3 TCP result without end sums`);
  return {
    bitsPerSecond: end.sum_received.bits_per_second,
    sentBitsPerSecond: end.sum_sent.bits_per_second,
    retransmits: end.sum_sent.retransmits,
    raw: json,
  };
}

// ------------------------------------------------------------------------------------------------
// ping

export interface PingOptions {
  count?: number; // default 3
  /** Seconds between probes; default 0.2. */
  interval?: number;
  /** Seconds to wait for each reply (-W); default 1. */
  waitSec?: number;
  /** Payload bytes (-s). */
  size?: number;
  /** Set DF and forbid local fragmentation (-M do), to probe path MTU. */
  dontFragment?: boolean;
}

export interface PingResult {
  sent: number;
  received: number;
  lossPercent: number;
  minMs?: number;
  avgMs?: number;
  maxMs?: number;
  mdevMs?: number;
  output: string;
}

export function parsePing(output: string): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  if (!counts) throw new TestbedError(`cannot parse ping output: ${output.trim()}`);
  const sent = Number(counts[1]);
  const received = Number(counts[2]);
  const res: PingResult = { sent, received, lossPercent: sent === 0 ? 100 : ((sent - received) / sent) * 100, output };
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(output);
  if (rtt) {
    res.minMs = Number(rtt[1]);
    res.avgMs = Number(rtt[2]);
    res.maxMs = Number(rtt[3]);
    res.mdevMs = Number(rtt[4]);
  }
  return res;
}

export async function ping(node: NsNode, ip: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 3;
  const interval = opts.interval ?? 0.2;
  const waitSec = opts.waitSec ?? 1;
  const cmd = ['ping', '-n', '-q', '-c', String(count), '-i', String(interval), '-W', String(waitSec)];
  if (opts.size !== undefined) cmd.push('-s', String(opts.size));
  if (opts.dontFragment) cmd.push('-M', 'do');
  cmd.push(ip);
  const res = await node.exec(cmd, { allowFail: true, timeoutMs: (count * interval + waitSec) * 1000 + 10000 });
  // Exit 1 = some replies missing (still parseable); 2 = error such as no route.
  if (res.code > 1 && !/packets transmitted/.test(res.stdout)) {
    throw new TestbedError(`[${node.name}] ping ${ip}: ${(res.stderr || res.stdout).trim()}`);
  }
  return parsePing(res.stdout);
}
