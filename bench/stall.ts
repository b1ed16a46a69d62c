// Stall benchmark: can anything else the daemon does delay forwarding? Two tsflanneld hosts with a
// container each on a bridged underlay, etcd in its own namespace, and `ping -i 0.01` container →
// container through both daemons in three phases:
//   idle     nothing else happens;
//   leases   10,000 peer leases arrive in etcd (written as fast as etcd takes them, 64 in flight), until
//            h1 has programmed a route for every one of them;
//   metrics  /metrics on h1 is hammered: 50 connections, each pipelining 50 GET /metrics, again and again.
// Per phase: ping avg, p99, max RTT and lost probes (one run, no thresholds; the machine may be shared,
// so read the numbers as a comparison of phases in one run). Prints a table; with --results replaces the
// "Stall" section of bench/RESULTS.md (between <!-- stall:start --> and <!-- stall:end -->).
//   node dist/bench/stall.js [--leases 10000] [--seconds 10] [--threads N] [--results]
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addContainer, createTestbed, waitFor, type Container, type Testbed, type TestHost } from '../netns-fixtures/testbed';
import { ETCD_PREFIX, startDaemonNode, waitPing, type DaemonNode } from '../netns-fixtures/tsflanneld-node';

const REPO = path.resolve(__dirname, '..', '..');
const ETCD3 = path.join(REPO, 'node_modules', 'etcd3');
const HEALTHZ_PORT = 8471;
const CONFIG = '{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}';
const STALL_START = '<!-- stall:start -->';
const STALL_END = '<!-- stall:end -->';

interface Args {
  leases: number;
  seconds: number;
  threads: number | null;
  results: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { leases: 10000, seconds: 10, threads: null, results: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${k} wants a positive integer`);
      return v;
    };
    if (k === '--leases') a.leases = num();
    else if (k === '--seconds') a.seconds = num();
    else if (k === '--threads') a.threads = num();
    else if (k === '--results') a.results = true;
    else throw new Error(`unknown argument ${k} (--leases N, --seconds S, --threads N, --results)`);
  }
  if (a.leases > 60000) throw new Error('--leases must be ≤ 60000 (10.0.0.0/8 in /24s, minus the hosts)');
  return a;
}

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

/** ping -i 0.01 with every reply's RTT kept. */
class RttPing {
  private readonly rtts: number[] = [];
  private readonly seqs = new Set<number>();
  private out = '';
  private readonly child: ChildProcess;
  private readonly done: Promise<void>;

  constructor(from: Container, ip: string) {
    this.child = from.spawn(['ping', '-n', '-i', '0.01', '-W', '1', ip]);
    let pending = '';
    this.child.stdout!.on('data', (b: Buffer) => {
      pending += b.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.out = (this.out + line + '\n').slice(-2000);
        const m = /icmp_seq=(\d+).*time=([\d.]+) ms/.exec(line);
        if (m && !/DUP!/.test(line)) {
          this.seqs.add(Number(m[1]));
          this.rtts.push(Number(m[2]));
        }
      }
    });
    this.done = new Promise((r) => this.child.on('exit', () => r()));
  }

  /** Replies so far (their count marks phase boundaries). */
  get replies(): number {
    return this.rtts.length;
  }

  get highestSeq(): number {
    let h = 0;
    for (const s of this.seqs) if (s > h) h = s;
    return h;
  }

  /** Statistics of the probes with sequence numbers in (fromSeq, toSeq]. */
  window(fromSeq: number, toSeq: number, replyFrom: number, replyTo: number): PhaseResult {
    const rtts = this.rtts.slice(replyFrom, replyTo).sort((a, b) => a - b);
    let answered = 0;
    for (let s = fromSeq + 1; s <= toSeq; s++) if (this.seqs.has(s)) answered++;
    const sent = toSeq - fromSeq;
    const avg = rtts.reduce((x, y) => x + y, 0) / Math.max(1, rtts.length);
    return {
      sent,
      lost: sent - answered,
      avgMs: avg,
      p99Ms: rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * 0.99))] ?? NaN,
      maxMs: rtts[rtts.length - 1] ?? NaN,
    };
  }

  async stop(): Promise<void> {
    this.child.kill('SIGINT');
    await this.done;
  }
}

interface PhaseResult {
  sent: number;
  lost: number;
  avgMs: number;
  p99Ms: number;
  maxMs: number;
  note?: string;
}

/** Writes `count` fake vxlan leases (one 24 h etcd lease for all, 64 puts in flight); prints {"written":n}. */
function leaseWriter(): void {
  const [etcd3Path, endpoint, prefix, count, skipJson] = process.argv.slice(1) as [string, string, string, string, string];
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- runs as a self-contained `node -e` script
  const { Etcd3 } = require(etcd3Path) as typeof import('etcd3');
  const client = new Etcd3({ hosts: endpoint });
  const skip = new Set(JSON.parse(skipJson) as string[]);
  const subnets: string[] = [];
  for (let i = 0; subnets.length < Number(count); i++) {
    const s = `10.${1 + (i >> 8)}.${i & 255}.0-24`;
    if (!skip.has(s)) subnets.push(s);
  }
  void (async () => {
    const g = await client.leaseClient.leaseGrant({ TTL: 86400 });
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < subnets.length) {
        const i = next++;
        const mac = `02:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`;
        const value = JSON.stringify({
          PublicIP: `198.51.100.${1 + (i % 250)}`,
          PublicIPv6: null,
          BackendType: 'vxlan',
          BackendData: { VNI: 1, VtepMAC: mac },
        });
        await client.kv.put({ key: Buffer.from(`${prefix}/subnets/${subnets[i]}`), value: Buffer.from(value), lease: g.ID });
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    process.stdout.write(`${JSON.stringify({ written: subnets.length })}\n`);
    client.close();
  })().catch((e: unknown) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
}

/** 50 connections × 50 pipelined GET /metrics on 127.0.0.1:port, again and again until stdin closes. */
function metricsFlood(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- runs as a self-contained `node -e` script
  const net = require('node:net') as typeof import('node:net');
  const port = Number(process.argv[1]);
  const req = 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(50);
  let rounds = 0;
  let scrapes = 0;
  let errors = 0;
  // Stop at once when told: with thousands of peers one scrape is megabytes, so a round may not finish.
  process.stdin
    .on('end', () => {
      process.stdout.write(`${JSON.stringify({ rounds, scrapes, errors })}\n`);
      process.exit(0);
    })
    .resume();
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(req));
      let got = 0;
      s.on('data', (b: Buffer) => {
        const n = b.toString('latin1').split('HTTP/1.1 ').length - 1;
        got += n;
        scrapes += n;
        if (got >= 50) s.end();
      });
      s.on('error', () => errors++);
      s.on('close', () => resolve());
      s.setTimeout(10000, () => s.destroy());
    });
  void (async () => {
    for (;;) {
      await Promise.all(Array.from({ length: 50 }, one));
      rounds++;
    }
  })();
}

function inlineScript(fn: () => void): string {
  return `(${fn.toString()})()`;
}

async function routeCount(host: TestHost): Promise<number> {
  const r = await host.exec(['ip', '-4', 'route', 'show', 'dev', 'flannel.1']);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

function fmt(r: PhaseResult): string {
  const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : '—');
  return `| ${ms(r.avgMs)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ${r.lost} / ${r.sent} | ${r.note ?? ''} |`;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('stall benchmark needs root (network namespaces)');
  let bed: Testbed | null = null;
  process.once('SIGINT', () => void bed?.teardown().finally(() => process.exit(130)));
  const started = new Date();
  try {
    bed = await createTestbed({ hosts: 2, etcd: true });
    const [h1, h2] = bed.hosts as [TestHost, TestHost];
    await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
    const extra = args.threads !== null ? ['-dataplane-threads', String(args.threads)] : [];
    const daemons: DaemonNode[] = [
      await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: HEALTHZ_PORT, args: extra }),
      await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: HEALTHZ_PORT, args: extra }),
    ];
    const [r1, r2] = await Promise.all(daemons.map((d) => d.waitReady()));
    const c1 = await addContainer(h1, { subnet: r1!.subnet, index: 0, mtu: r1!.mtu });
    const c2 = await addContainer(h2, { subnet: r2!.subnet, index: 0, mtu: r2!.mtu });
    await waitPing(c1, c2.ip);
    say(`stall benchmark: ping -i 0.01 ${c1.name} → ${c2.ip}; ${os.availableParallelism()} CPUs, load ${os.loadavg()[0]!.toFixed(2)}`);

    const ping = new RttPing(c1, c2.ip);
    const results: Array<[string, PhaseResult]> = [];
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    const phase = async (name: string, body: () => Promise<string | undefined>): Promise<void> => {
      const seq0 = ping.highestSeq;
      const rep0 = ping.replies;
      const note = await body();
      await sleep(300); // replies of the last probes of the phase
      const r = ping.window(seq0, ping.highestSeq, rep0, ping.replies);
      if (note) r.note = note;
      results.push([name, r]);
      say(
        `${name}: avg ${r.avgMs.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms, max ${r.maxMs.toFixed(3)} ms, lost ${r.lost}/${r.sent}${note ? ` (${note})` : ''}`,
      );
    };

    await sleep(1000);
    await phase('idle', async () => {
      await sleep(args.seconds * 1000);
      return undefined;
    });

    await phase(`${args.leases} leases arriving`, async () => {
      const before = await routeCount(h1);
      const t0 = Date.now();
      const writer = h2.spawn(
        [
          'node',
          '-e',
          inlineScript(leaseWriter),
          ETCD3,
          bed!.etcdEndpoint!,
          ETCD_PREFIX,
          String(args.leases),
          JSON.stringify([r1!.subnet, r2!.subnet].map((s) => s.replace('/', '-'))),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let werr = '';
      writer.stderr!.on('data', (b: Buffer) => (werr += b.toString()));
      const written = new Promise<number>((resolve) => writer.on('exit', (code) => resolve(code ?? 1)));
      const code = await written;
      if (code !== 0) throw new Error(`lease writer failed: ${werr.trim()}`);
      const writtenAt = Date.now();
      await waitFor('h1 routes for every lease', async () => (await routeCount(h1)) >= before + args.leases, 120000, 200);
      return `written in ${((writtenAt - t0) / 1000).toFixed(1)} s, all routes on h1 after ${((Date.now() - t0) / 1000).toFixed(1)} s`;
    });

    await phase('/metrics flood (50 × 50 pipelined)', async () => {
      const flood = h1.spawn(['node', '-e', inlineScript(metricsFlood), String(HEALTHZ_PORT)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let ferr = '';
      flood.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      flood.stderr!.on('data', (b: Buffer) => (ferr += b.toString()));
      const exited = new Promise<void>((r) => flood.on('exit', () => r()));
      await sleep(args.seconds * 1000);
      flood.stdin!.end();
      await Promise.race([exited, sleep(30000)]);
      const stats = out.trim() ? (JSON.parse(out.trim()) as { rounds: number; scrapes: number; errors: number }) : null;
      if (!stats)
        throw new Error(
          `the /metrics flood reported nothing${ferr.trim() ? `: ${ferr.trim().split('\n').slice(-3).join(' ')}` : ' (no exit within 30 s)'}`,
        );
      return `${stats.scrapes} scrapes answered (${stats.rounds} full rounds of 2,500), ${stats.errors} connection errors`;
    });
    await ping.stop();

    const table = [
      '| phase | ping avg ms | p99 ms | max ms | lost / sent | notes |',
      '|---|---|---|---|---|---|',
      ...results.map(([name, r]) => `| ${name} ${fmt(r)}`),
    ].join('\n');
    say(`\n${table}\n`);
    if (args.results) {
      const file = path.join(REPO, 'bench', 'RESULTS.md');
      const threads = args.threads ?? `default (${Math.min(os.availableParallelism(), 8)})`;
      const section = [
        STALL_START,
        '## Stall (bench/stall.ts)',
        '',
        `${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.availableParallelism()} CPUs, forwarding threads ${threads}. ` +
          '`ping -i 0.01` container → container through two tsflanneld nodes while nothing else happens, while ' +
          `${args.leases} leases arrive in etcd, and while /metrics on the sending node is hammered. One run on a machine ` +
          'shared with other developers: compare the phases with each other, not with other runs.',
        '',
        table,
        STALL_END,
      ].join('\n');
      const prev = fs.readFileSync(file, 'utf8');
      const a = prev.indexOf(STALL_START);
      const b = prev.indexOf(STALL_END);
      const next = a >= 0 && b > a ? prev.slice(0, a) + section + prev.slice(b + STALL_END.length) : `${prev.trimEnd()}\n\n${section}\n`;
      fs.writeFileSync(file, next);
      say('updated the Stall section of bench/RESULTS.md');
    }
    return 0;
  } finally {
    await bed?.teardown();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`stall: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
