// A real single-member etcd server for tests: fresh temp data dir, free ports, optional network
// namespace. Tests talk to it with the real client and poke it with the real etcdctl, so what they
// check is what a flannel host sharing the same etcd would see.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface EtcdOptions {
  /** Run inside this network namespace (`ip netns exec <ns> etcd …`). */
  netns?: string;
  /** Address to listen on; default 127.0.0.1. Inside a namespace it must be an address of that namespace. */
  listenIp?: string;
  /** Member name; default unique per run. */
  name?: string;
  /** Extra etcd flags (e.g. auth or TLS flags once tests need them). */
  extraArgs?: string[];
  /** How long to wait for the member to become healthy; default 30 s. */
  startTimeoutMs?: number;
  /** Serve clients over TLS (endpoint becomes https://); peers stay plain http. */
  tls?: EtcdTlsOptions;
  /** Enable etcd authentication once the member is first healthy (see EtcdAuthOptions). */
  auth?: EtcdAuthOptions;
}

export interface EtcdTlsOptions {
  /** CA that signed the server certificate (and the client certificates etcd accepts). */
  caFile: string;
  /** Server certificate; its subjectAltNames must include the listen IP. */
  certFile: string;
  keyFile: string;
  /** --client-cert-auth: refuse clients without a certificate signed by caFile. */
  clientCertAuth: boolean;
  /** Client certificate for the fixture's own etcdctl; required when clientCertAuth. */
  clientCertFile?: string;
  clientKeyFile?: string;
}

/**
 * Users: root (role root) and `user` with a role granting readwrite on `prefix`; then `auth enable`.
 * The fixture's own etcdctl calls authenticate as root from then on.
 */
export interface EtcdAuthOptions {
  rootPassword: string;
  user: string;
  password: string;
  /** Key prefix `user` may read and write; default "/coreos.com/network/". */
  prefix?: string;
}

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:41234. */
  readonly endpoint: string;
  readonly name: string;
  readonly dataDir: string;
  /** Restarts on the same data dir and ports (after stop() or kill()). */
  start(): Promise<void>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** Compacts at `revision` (default: current revision); returns the revision compacted at. */
  compact(revision?: string): Promise<string>;
  /** Current store revision. */
  revision(): Promise<string>;
  /** Runs etcdctl against this member; resolves stdout, rejects with stderr on failure. */
  etcdctl(args: string[]): Promise<string>;
  /** kill() + remove the data dir. Idempotent. */
  destroy(): Promise<void>;
}

export class EtcdFixtureError extends Error {
  override name = 'EtcdFixtureError';
}

const ETCD = process.env.TSFLANNELD_ETCD_BIN ?? '/usr/bin/etcd';
const ETCDCTL = process.env.TSFLANNELD_ETCDCTL_BIN ?? '/usr/bin/etcdctl';
let counter = 0;

function assertInstalled(): void {
  for (const bin of [ETCD, ETCDCTL]) {
    try {
      fs.accessSync(bin, fs.constants.X_OK);
    } catch {
      throw new EtcdFixtureError(`etcd not installed: run scripts/install-deps.sh (missing ${bin})`);
    }
  }
}

/** Asks the kernel for a free port on ip in the root namespace (bind to 0, read it, close). */
function freePort(ip: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, ip, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Inside a fresh namespace nothing else listens; a random high port is fine (collisions are retried). */
function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 30000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function run(cmd: string, args: string[], timeoutMs = 15000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, env: { ...process.env, ETCDCTL_API: '3' } }, (err, stdout, stderr) => {
      if (err) reject(new EtcdFixtureError(`${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

class EtcdProcess implements EtcdServer {
  readonly endpoint: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private output: string[] = [];
  private destroyed = false;

  constructor(
    readonly name: string,
    readonly dataDir: string,
    private readonly ip: string,
    clientPort: number,
    private readonly peerPort: number,
    private readonly opts: EtcdOptions,
  ) {
    this.endpoint = `${opts.tls ? 'https' : 'http'}://${ip}:${clientPort}`;
    if (opts.tls?.clientCertAuth && !(opts.tls.clientCertFile && opts.tls.clientKeyFile)) {
      throw new EtcdFixtureError("tls.clientCertAuth needs tls.clientCertFile and tls.clientKeyFile for the fixture's etcdctl");
    }
  }

  private authEnabled = false;

  private tlsArgs(): string[] {
    const tls = this.opts.tls;
    if (!tls) return [];
    // etcd requires client certificates whenever --trusted-ca-file is set, so the CA goes with --client-cert-auth.
    return [
      `--cert-file=${tls.certFile}`,
      `--key-file=${tls.keyFile}`,
      ...(tls.clientCertAuth ? [`--trusted-ca-file=${tls.caFile}`, '--client-cert-auth'] : []),
    ];
  }

  /** etcdctl flags for TLS and, once auth is on, root's credentials. */
  private ctlAuthArgs(): string[] {
    const out: string[] = [];
    const tls = this.opts.tls;
    if (tls) {
      out.push(`--cacert=${tls.caFile}`);
      if (tls.clientCertFile && tls.clientKeyFile) out.push(`--cert=${tls.clientCertFile}`, `--key=${tls.clientKeyFile}`);
    }
    if (this.authEnabled && this.opts.auth) out.push('--user=root', `--password=${this.opts.auth.rootPassword}`);
    return out;
  }

  private async enableAuth(auth: EtcdAuthOptions): Promise<void> {
    const role = `${auth.user}-rw`;
    const steps: string[][] = [
      ['role', 'add', 'root'],
      ['user', 'add', 'root', `--new-user-password=${auth.rootPassword}`, '--interactive=false'],
      ['user', 'grant-role', 'root', 'root'],
      ['role', 'add', role],
      ['role', 'grant-permission', role, '--prefix=true', 'readwrite', auth.prefix ?? '/coreos.com/network/'],
      ['user', 'add', auth.user, `--new-user-password=${auth.password}`, '--interactive=false'],
      ['user', 'grant-role', auth.user, role],
      ['auth', 'enable'],
    ];
    for (const step of steps) await this.etcdctl(step);
    this.authEnabled = true;
  }

  private command(): [string, string[]] {
    const peer = `http://${this.ip}:${this.peerPort}`;
    const etcdArgs = [
      `--name=${this.name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${this.name}=${peer}`,
      `--initial-cluster-token=${this.name}`,
      '--initial-cluster-state=new',
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
      ...this.tlsArgs(),
      ...(this.opts.extraArgs ?? []),
    ];
    // setpriv --pdeathsig: if the test runner dies without teardown, etcd dies with it.
    const base = ['setpriv', '--pdeathsig', 'KILL', '--', ETCD, ...etcdArgs];
    if (this.opts.netns) return ['ip', ['netns', 'exec', this.opts.netns, ...base]];
    return [base[0]!, base.slice(1)];
  }

  private ctlCommand(args: string[]): [string, string[]] {
    const full = [`--endpoints=${this.endpoint}`, '--command-timeout=10s', ...this.ctlAuthArgs(), ...args];
    if (this.opts.netns) return ['ip', ['netns', 'exec', this.opts.netns, ETCDCTL, ...full]];
    return [ETCDCTL, full];
  }

  etcdctl(args: string[]): Promise<string> {
    const [cmd, full] = this.ctlCommand(args);
    return run(cmd, full);
  }

  async start(): Promise<void> {
    if (this.destroyed) throw new EtcdFixtureError(`etcd ${this.name} was destroyed`);
    if (this.child) throw new EtcdFixtureError(`etcd ${this.name} is already running`);
    const [cmd, args] = this.command();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.output = [];
    const keep = (chunk: Buffer): void => {
      this.output.push(chunk.toString());
      if (this.output.length > 200) this.output.shift();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exitInfo = null as string | null; // set by the handlers below
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        exitInfo = `code ${code} signal ${signal}`;
        if (this.child === child) this.child = null;
        resolve();
      });
      child.on('error', (err) => {
        exitInfo = err.message;
        if (this.child === child) this.child = null;
        resolve();
      });
    });
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30000);
    for (;;) {
      if (exitInfo !== null) {
        throw new EtcdFixtureError(`etcd ${this.name} exited during start (${exitInfo}): ${this.tail()}`);
      }
      try {
        await this.etcdctl(['endpoint', 'health']);
        break;
      } catch (err) {
        if (Date.now() > deadline) {
          await this.kill();
          throw new EtcdFixtureError(`etcd ${this.name} not healthy at ${this.endpoint}: ${(err as Error).message}\n${this.tail()}`);
        }
      }
      await sleep(100);
    }
    // Auth state lives in the data dir: only the first start enables it.
    if (this.opts.auth && !this.authEnabled) {
      try {
        await this.enableAuth(this.opts.auth);
      } catch (err) {
        await this.kill();
        throw err;
      }
    }
  }

  tail(): string {
    return this.output.join('').split('\n').slice(-20).join('\n');
  }

  private async signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  stop(): Promise<void> {
    return this.signal('SIGTERM', 10000);
  }

  kill(): Promise<void> {
    return this.signal('SIGKILL', 10000);
  }

  async revision(): Promise<string> {
    const out = JSON.parse(await this.etcdctl(['endpoint', 'status', '-w', 'json'])) as Array<{
      Status: { header: { revision: number | string } };
    }>;
    return String(out[0]!.Status.header.revision);
  }

  async compact(revision?: string): Promise<string> {
    const rev = revision ?? (await this.revision());
    await this.etcdctl(['compaction', '--physical', rev]);
    return rev;
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    await this.kill();
    await fs.promises.rm(this.dataDir, { recursive: true, force: true });
  }
}

function uniqueName(): string {
  counter += 1;
  return `tsf-etcd-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Starts a fresh etcd member; the caller owns destroy(). Prefer withEtcd() in tests. */
export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdServer> {
  assertInstalled();
  const ip = opts.listenIp ?? '127.0.0.1';
  const name = opts.name ?? uniqueName();
  let lastErr: Error | null = null;
  // Ports picked from the kernel can be taken again before etcd binds them; retry on such a start failure.
  for (let attempt = 0; attempt < 5; attempt++) {
    const dataDir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'tsflanneld-etcd-'));
    const clientPort = opts.netns ? randomPort() : await freePort(ip);
    let peerPort = opts.netns ? randomPort() : await freePort(ip);
    while (peerPort === clientPort) peerPort = opts.netns ? randomPort() : await freePort(ip);
    const server = new EtcdProcess(name, dataDir, ip, clientPort, peerPort, opts);
    try {
      await server.start();
      return server;
    } catch (err) {
      lastErr = err as Error;
      await server.destroy();
      if (!/address already in use/i.test(lastErr.message)) break;
    }
  }
  throw lastErr ?? new EtcdFixtureError('etcd failed to start');
}

/** Minimal view of a node-tap test: enough to register teardown. */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

/** Starts etcd for one tap test; killed and its data dir removed in teardown, even on failure. */
export async function withEtcd(t: TeardownHost, opts: EtcdOptions = {}): Promise<EtcdServer> {
  const server = await startEtcd(opts);
  t.teardown(() => server.destroy());
  return server;
}
