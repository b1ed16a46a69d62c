// Shared helpers for the control-plane integration tests: tsflanneld child processes with captured
// JSON logs, a temp dir per test, and wait-for-condition (never timing thresholds).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { EtcdServer, TeardownHost } from '../../netns-fixtures/etcd';
import { EtcdError, type Registry, type WatchHandle, type WatchHandlers } from '../../src/subnet/registry';

export const PREFIX = '/coreos.com/network';
/** The control-plane-only entry point (control-plane-main.ts), compiled next to this file. */
export const BIN = path.resolve(__dirname, 'control-plane-main.js');

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` until it returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 30000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown = null;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    }
    await sleep(50);
  }
}

export function tmpDir(t: TeardownHost): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsflanneld-cp-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function putConfig(etcd: EtcdServer, config: object | string): Promise<void> {
  await etcd.etcdctl(['put', `${PREFIX}/config`, typeof config === 'string' ? config : JSON.stringify(config)]);
}

export const VXLAN_CONFIG = { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } };

/** All keys/values below <prefix>/subnets/ as a map of relative key → value. */
export async function subnetKeys(etcd: EtcdServer): Promise<Map<string, string>> {
  const out = await etcd.etcdctl(['get', '--prefix', `${PREFIX}/subnets/`]);
  const lines = out.split('\n').filter((l) => l !== '');
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i]!.slice(`${PREFIX}/subnets/`.length), lines[i + 1]!);
  return m;
}

/** The etcd lease id (hex, as etcdctl prints it) and remaining TTL of a key; lease "0" = none. */
export async function keyLease(etcd: EtcdServer, key: string): Promise<{ id: string; ttl: number | null }> {
  const out = await etcd.etcdctl(['get', `${PREFIX}/subnets/${key}`, '-w', 'json']);
  if (!/"kvs"/.test(out)) throw new Error(`key ${key} not found`);
  // Lease ids are 64-bit: read the digits, JSON.parse would round them.
  const m = /"lease":\s*(\d+)/.exec(out);
  const id = BigInt(m ? m[1]! : '0');
  if (id === 0n) return { id: '0', ttl: null };
  const hex = id.toString(16);
  const ttlOut = await etcd.etcdctl(['lease', 'timetolive', hex]);
  // "lease 694d7b5f8e9c1a0b granted with TTL(86400s), remaining(86399s)"
  const r = /remaining\((-?\d+)s\)/.exec(ttlOut);
  return { id: hex, ttl: r ? Number(r[1]) : null };
}

export interface NodeOptions {
  publicIp: string;
  dir: string;
  /** Defaults to <dir>/subnet.env. */
  subnetFile?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

export class NodeProc {
  readonly logs: LogLine[] = [];
  readonly stderrText: string[] = [];
  readonly exited: Promise<number | null>;
  readonly subnetFile: string;
  private readonly proc: ChildProcess;

  constructor(
    etcd: EtcdServer,
    readonly opts: NodeOptions,
  ) {
    this.subnetFile = opts.subnetFile ?? path.join(opts.dir, 'subnet.env');
    const args = [
      BIN,
      `-etcd-endpoints=${etcd.endpoint}`,
      '-iface=127.0.0.1',
      `-public-ip=${opts.publicIp}`,
      `-subnet-file=${this.subnetFile}`,
      ...(opts.args ?? []),
    ];
    this.proc = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Many daemons share the root namespace here: leases only, no TUN, routes or iptables.
      env: { ...process.env, ...(opts.env ?? {}) },
    });
    let buf = '';
    this.proc.stderr!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.stderrText.push(line);
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line (e.g. a Node warning); kept in stderrText
        }
      }
    });
    this.proc.stdout!.resume();
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get exitCode(): number | null {
    return this.proc.exitCode;
  }

  findLog(re: RegExp): LogLine | undefined {
    return this.logs.find((l) => re.test(l.msg));
  }

  waitForLog(re: RegExp, timeoutMs = 30000): Promise<LogLine> {
    return waitFor(
      `log line ${re} from node ${this.opts.publicIp}\n${this.stderrText.slice(-10).join('\n')}`,
      () => this.findLog(re),
      timeoutMs,
    );
  }

  async waitForExit(timeoutMs = 30000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`node ${this.opts.publicIp} did not exit within ${timeoutMs} ms\n${this.stderrText.slice(-10).join('\n')}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits until this run wrote subnet.env (its log line, not a leftover file) and returns the content. */
  async waitForSubnetEnv(timeoutMs = 30000): Promise<string> {
    await waitFor(
      `node ${this.opts.publicIp} to write ${this.subnetFile}\n${this.stderrText.slice(-10).join('\n')}`,
      () => {
        if (this.proc.exitCode !== null) throw new Error(`node exited with ${this.proc.exitCode}`);
        return this.findLog(/^wrote /);
      },
      timeoutMs,
    );
    return fs.readFileSync(this.subnetFile, 'utf8');
  }

  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    return this.waitForExit();
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** Starts a tsflanneld child; SIGKILLed in teardown if still running. */
export function startNode(t: TeardownHost, etcd: EtcdServer, opts: NodeOptions): NodeProc {
  const node = new NodeProc(etcd, opts);
  t.teardown(() => node.kill());
  return node;
}

/** FLANNEL_SUBNET of a subnet.env, as the network CIDR ("10.5.7.0/24"). */
export function subnetOfEnv(text: string): string {
  const m = /^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.(\d+)\/(\d+)$/m.exec(text);
  if (!m) throw new Error(`no FLANNEL_SUBNET in ${JSON.stringify(text)}`);
  return `${m[1]}.${Number(m[2]) - 1}/${m[3]}`;
}

export function keyOfSubnet(cidr: string): string {
  return cidr.replace('/', '-');
}

/** A pino logger whose lines land in `lines` (for in-process modules under test). */
export function captureLogger(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as LogLine);
      },
    },
  );
  return { log, lines };
}

/**
 * A real registry whose watches can be cut and held down, so a test can change etcd while a
 * watcher is provably disconnected (no race with its reconnect timer).
 */
export class GatedRegistry implements Registry {
  private blocked = false;
  private readonly live = new Set<{ handle: WatchHandle; handlers: WatchHandlers }>();
  watchAttempts = 0;

  constructor(private readonly inner: Registry) {}

  get endpoints(): readonly string[] {
    return this.inner.endpoints;
  }
  get prefix(): string {
    return this.inner.prefix;
  }

  /** Fails every open watch and every new one until unblock(). */
  block(): void {
    this.blocked = true;
    for (const w of this.live) {
      w.handle.cancel();
      w.handlers.onError(new EtcdError(this.endpoints, 'watch', new Error('blocked by test')));
    }
    this.live.clear();
  }

  unblock(): void {
    this.blocked = false;
  }

  watchLeases(fromRevision: string, handlers: WatchHandlers, opts?: { key?: string }): WatchHandle {
    this.watchAttempts++;
    if (this.blocked) {
      setImmediate(() => handlers.onError(new EtcdError(this.endpoints, 'watch', new Error('blocked by test'))));
      return { cancel: () => undefined };
    }
    const entry = { handle: { cancel: () => undefined } as WatchHandle, handlers };
    const wrapped: WatchHandlers = {
      onCreated: () => handlers.onCreated?.(),
      onEvents: (e, r) => handlers.onEvents(e, r),
      onCompacted: (r) => {
        this.live.delete(entry);
        handlers.onCompacted(r);
      },
      onError: (err) => {
        this.live.delete(entry);
        handlers.onError(err);
      },
    };
    entry.handle = this.inner.watchLeases(fromRevision, wrapped, opts);
    this.live.add(entry);
    return {
      cancel: () => {
        this.live.delete(entry);
        entry.handle.cancel();
      },
    };
  }

  getNetworkConfig(): ReturnType<Registry['getNetworkConfig']> {
    return this.inner.getNetworkConfig();
  }
  listLeases(): ReturnType<Registry['listLeases']> {
    return this.inner.listLeases();
  }
  getLease(key: string): ReturnType<Registry['getLease']> {
    return this.inner.getLease(key);
  }
  createLease(...a: Parameters<Registry['createLease']>): ReturnType<Registry['createLease']> {
    return this.inner.createLease(...a);
  }
  updateLease(...a: Parameters<Registry['updateLease']>): ReturnType<Registry['updateLease']> {
    return this.inner.updateLease(...a);
  }
  deleteLease(key: string): Promise<void> {
    return this.inner.deleteLease(key);
  }
  revokeEtcdLease(id: string): Promise<void> {
    return this.inner.revokeEtcdLease(id);
  }
  close(): void {
    this.inner.close();
  }
}
