// Shared by the data-plane integration tests: a static-runner process (JSON lines on stdout, commands on
// stdin), what the route manager would do for its TUN, and the ping + 20 MB TCP exchange both ways.
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Test } from 'tap';
import { ping, waitFor, type TestHost } from '../../netns-fixtures/testbed';
import type { CountersSnapshot } from '../../src/dataplane/counters';
import { tcpTransfer } from '../../netns-fixtures/tsflanneld-node';

export const RUNNER = path.resolve(__dirname, '../../src/dataplane/static-runner.js');
export const TUN = 'flannel.1';
export const MTU = 1450;
export const MB20 = 20 * 1024 * 1024;

export interface NodeSpec {
  host: TestHost;
  subnet: string; // "10.5.1.0/24"
  gw: string; // "10.5.1.0"
  mac: string;
}

export interface PeerJson {
  subnet: string;
  publicIp: string;
  vtepMac: string;
}

export const peerOf = (n: NodeSpec): PeerJson => ({ subnet: n.subnet, publicIp: n.host.underlayIp, vtepMac: n.mac });

/** A static-runner process: JSON lines on stdout, commands on stdin. */
export class Runner {
  private readonly events: Array<Record<string, unknown>> = [];
  private readonly waiters: Array<() => void> = [];
  private stderr = '';
  readonly exited: Promise<void>;
  /** Outer UDP source ports of the send sockets, from the "ready" event. */
  sourcePorts: number[] = [];
  /** The offload rung in force, from the "ready" event. */
  offloadRung = '';
  /** Forwarding threads, from the "ready" event. */
  threads = 0;

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.stderr += `stdout: ${line}\n`;
        }
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    child.stderr!.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-8000)));
    this.exited = new Promise((r) => child.on('exit', () => r()));
    void this.exited.then(() => this.waiters.splice(0).forEach((w) => w()));
  }

  static async start(host: TestHost, cfg: object): Promise<Runner> {
    const child = host.spawn(['node', RUNNER, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const r = new Runner(child);
    const ready = await r.next('ready', 15000);
    r.sourcePorts = ready.sourcePorts as number[];
    r.offloadRung = ready.offloadRung as string;
    r.threads = ready.threads as number;
    return r;
  }

  /** Waits for the next event of this type after the ones already consumed. */
  async next(event: string, timeoutMs = 10000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === event);
      if (i >= 0) return this.events.splice(0, i + 1)[i]!;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`data-plane runner exited (${this.child.exitCode ?? this.child.signalCode}) before "${event}": ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${event}" from data-plane runner within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async counters(): Promise<CountersSnapshot> {
    this.child.stdin!.write('{"op":"counters"}\n');
    return (await this.next('counters')).counters as CountersSnapshot;
  }

  /** Each forwarding thread's own counters. */
  async threadCounters(): Promise<CountersSnapshot[]> {
    this.child.stdin!.write('{"op":"counters"}\n');
    return (await this.next('counters')).threads as CountersSnapshot[];
  }

  /** Everything the runner wrote to stderr (its log), last 8000 characters. */
  get log(): string {
    return this.stderr;
  }

  async command(cmd: object): Promise<void> {
    this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    const ev = await Promise.race([this.next('ok'), this.next('error')]);
    if (ev.event === 'error') throw new Error(String(ev.message));
  }

  /** SIGTERM → final counters. */
  async stop(): Promise<CountersSnapshot> {
    this.child.kill('SIGTERM');
    const ev = await this.next('counters');
    await this.exited;
    return ev.counters as CountersSnapshot;
  }

  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** What the route manager/netlink side would do for our TUN: address .0/32, MTU, up, one onlink route per peer. */
export async function configureTun(self: NodeSpec, peers: NodeSpec[]): Promise<void> {
  const h = self.host;
  await h.exec(['ip', 'addr', 'replace', `${self.gw}/32`, 'dev', TUN]);
  await h.exec(['ip', 'link', 'set', TUN, 'mtu', String(MTU), 'up']);
  for (const p of peers) await h.exec(['ip', 'route', 'replace', p.subnet, 'via', p.gw, 'dev', TUN, 'onlink']);
}

export async function pingOk(from: TestHost, to: string): Promise<void> {
  // The first probe may race with a just-started runner; require a run of replies.
  await waitFor(`ping ${from.name} → ${to}`, async () => (await ping(from, to, { count: 3, interval: 0.2 })).received === 3, 20000, 200);
}

/** 20 MB-style transfer to `to`'s overlay address (its TUN's .0), via the shared fixture. */
export function transferTo(from: TestHost, to: NodeSpec, size: number, port: number) {
  return tcpTransfer(from, to.host, to.gw, size, port);
}

let nextPort = 5001;

/** A fresh TCP/UDP port for the next transfer. */
export function takePort(): number {
  return nextPort++;
}

/** ping both ways + a TCP transfer both ways, sha256 compared. */
export async function exchange(t: Test, a: NodeSpec, b: NodeSpec, bytes: number, label: string): Promise<void> {
  await pingOk(a.host, b.gw);
  await pingOk(b.host, a.gw);
  const ab = await transferTo(a.host, b, bytes, nextPort++);
  t.equal(ab.received.bytes, bytes, `${label}: ${a.host.name} → ${b.host.name} length`);
  t.equal(ab.received.sha256, ab.sent.sha256, `${label}: ${a.host.name} → ${b.host.name} sha256`);
  const ba = await transferTo(b.host, a, bytes, nextPort++);
  t.equal(ba.received.bytes, bytes, `${label}: ${b.host.name} → ${a.host.name} length`);
  t.equal(ba.received.sha256, ba.sent.sha256, `${label}: ${b.host.name} → ${a.host.name} sha256`);
}
