// `scripts/soak.sh [--minutes N]`: a bounded soak run. Two tsflanneld hosts on a fresh testbed, an
// iperf3 TCP stream between their containers for the whole run, and a churner that adds, changes and
// removes fake peer leases in etcd every --churn-ms. Every --sample-seconds: each daemon's RSS, CPU,
// V8 heap, peer count and overlay throughput. Prints a table, writes bench/out/soak-<ts>.json and
// replaces the "Soak" section of bench/RESULTS.md (between <!-- soak:start --> and <!-- soak:end -->).
// At the end: routes on flannel.1 must equal the leases in etcd minus the host's own (reported, as
// are daemon exits); no thresholds — the numbers are for reading.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addContainer, createTestbed, iperf3Client, iperf3Server, waitFor, type Testbed, type TestHost } from '../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  listFlannelLeases,
  metricValueOf,
  startDaemonNode,
  waitPing,
  type DaemonNode,
} from '../netns-fixtures/tsflanneld-node';

const REPO = path.resolve(__dirname, '..', '..');
const ETCD3 = path.join(REPO, 'node_modules', 'etcd3');
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const SOAK_START = '<!-- soak:start -->';
const SOAK_END = '<!-- soak:end -->';
const HEALTHZ_PORT = 9104;

interface Args {
  minutes: number;
  churnMs: number;
  sampleSeconds: number;
  /** iperf3 -b; "" = unlimited. */
  bitrate: string;
  results: boolean;
  outDir: string;
}

const USAGE = `usage: scripts/soak.sh [options]
  --minutes N          duration (default 10)
  --churn-ms N         one lease add/change/delete every N ms (default 100)
  --sample-seconds N   sampling interval (default 10)
  --bitrate B          iperf3 -b for the TCP stream (default 1G; 0 = unlimited)
  --no-results         do not touch bench/RESULTS.md
  --out DIR            output directory (default bench/out)
`;

function parseArgs(argv: string[]): Args {
  const a: Args = { minutes: 10, churnMs: 100, sampleSeconds: 10, bitrate: '1G', results: true, outDir: path.join(REPO, 'bench', 'out') };
  const num = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`${flag} needs a number ≥ ${min}\n${USAGE}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    if (f === '--minutes') a.minutes = num(f, argv[++i], 0.1);
    else if (f === '--churn-ms') a.churnMs = num(f, argv[++i], 10);
    else if (f === '--sample-seconds') a.sampleSeconds = num(f, argv[++i], 1);
    else if (f === '--bitrate') a.bitrate = argv[++i] === '0' ? '' : (argv[i] ?? '');
    else if (f === '--no-results') a.results = false;
    else if (f === '--out') a.outDir = path.resolve(argv[++i] ?? '');
    else if (f === '--help' || f === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown option ${f}\n${USAGE}`);
  }
  return a;
}

// ------------------------------------------------------------------------------------------------
// churn (runs inside a host namespace: etcd is only reachable on the underlay)

interface Slot {
  subnet: string;
  publicIp: string;
}

interface ChurnCounts {
  add: number;
  change: number;
  delete: number;
  errors: number;
  active: number;
  lastError: string;
}

/**
 * Run as `node -e "(<source>)()" <etcd3 path> <endpoint> <prefix> <slots json> <interval ms>`:
 * self-contained. Until stdin closes, every interval: add a lease to a free slot (Grant 24 h + put,
 * as flanneld), or re-put an active one with a new VtepMAC, or delete it. Prints its counts as a JSON
 * line whenever it reads a line on stdin, and once more at the end.
 */
function churner(): void {
  const [etcd3Path, endpoint, prefix, slotsJson, intervalMs] = process.argv.slice(1) as [string, string, string, string, string];
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- runs in a child process from its source text: no imports there
  const { Etcd3 } = require(etcd3Path) as typeof import('etcd3');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- runs in a child process from its source text: no imports there
  const readline = require('node:readline') as typeof import('node:readline');
  const client = new Etcd3({ hosts: endpoint });
  const slots = JSON.parse(slotsJson) as Slot[];
  const active = new Set<number>();
  const c: ChurnCounts = { add: 0, change: 0, delete: 0, errors: 0, active: 0, lastError: '' };
  const mac = (): string =>
    [0, 1, 2, 3, 4, 5].map((i) => (i === 0 ? 0x02 : Math.floor(Math.random() * 256)).toString(16).padStart(2, '0')).join(':');
  const keyOf = (s: Slot): string => `${prefix}/subnets/${s.subnet.replace('/', '-')}`;
  let stopped = false as boolean; // set when stdin closes
  const report = (): void => {
    c.active = active.size;
    process.stdout.write(`${JSON.stringify(c)}\n`);
  };
  readline
    .createInterface({ input: process.stdin })
    .on('line', report)
    .on('close', () => (stopped = true));
  void (async () => {
    while (!stopped) {
      const i = Math.floor(Math.random() * slots.length);
      const s = slots[i]!;
      try {
        if (active.has(i) && Math.random() < 0.6) {
          await client.kv.deleteRange({ key: Buffer.from(keyOf(s)) });
          active.delete(i);
          c.delete++;
        } else {
          const g = await client.leaseClient.leaseGrant({ TTL: 86400 });
          const value = JSON.stringify({
            PublicIP: s.publicIp,
            PublicIPv6: null,
            BackendType: 'vxlan',
            BackendData: { VNI: 1, VtepMAC: mac() },
          });
          await client.kv.put({ key: Buffer.from(keyOf(s)), value: Buffer.from(value), lease: g.ID });
          if (active.has(i)) c.change++;
          else c.add++;
          active.add(i);
        }
      } catch (e) {
        c.errors++;
        c.lastError = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, Number(intervalMs)));
    }
    report();
    client.close();
  })();
}

// ------------------------------------------------------------------------------------------------
// sampling

function clockTicks(): number {
  // USER_HZ is 100 on every Linux this runs on; getconf would only confirm it.
  return 100;
}

function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "(comm)": state is field 3, utime 14, stime 15 (1-based) → indexes 11 and 12 here.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface DaemonSample {
  rssMiB: number;
  /** Cores used since the previous sample. */
  cpuCores: number;
  heapUsedMiB: number;
  /** V8 heap reserved, and memory held by JS objects outside it (Buffers, addon memory): with RSS they tell where growth is. */
  heapTotalMiB: number;
  externalMiB: number;
  peers: number;
  /** Overlay throughput leaving this host (inner bytes, tx) since the previous sample. */
  txMbit: number;
  drops: number;
}

interface Sample {
  t: number;
  daemons: Record<string, DaemonSample>;
  churn: ChurnCounts | null;
}

class DaemonSampler {
  private lastCpu: number;
  private lastTx = 0;
  private lastAt: number;

  constructor(readonly d: DaemonNode) {
    this.lastCpu = cpuSeconds(d.pid!);
    this.lastAt = Date.now();
  }

  async prime(): Promise<void> {
    this.lastTx = metricValueOf(await this.d.metrics(), 'tsflanneld_bytes_total', { direction: 'tx' }) ?? 0;
  }

  async sample(): Promise<DaemonSample> {
    const now = Date.now();
    const wall = (now - this.lastAt) / 1000;
    const cpu = cpuSeconds(this.d.pid!);
    const text = await this.d.metrics();
    const tx = metricValueOf(text, 'tsflanneld_bytes_total', { direction: 'tx' }) ?? 0;
    const s: DaemonSample = {
      rssMiB: rssMiB(this.d.pid!),
      cpuCores: (cpu - this.lastCpu) / wall,
      heapUsedMiB: (metricValueOf(text, 'nodejs_heap_size_used_bytes') ?? NaN) / 1048576,
      heapTotalMiB: (metricValueOf(text, 'nodejs_heap_size_total_bytes') ?? NaN) / 1048576,
      externalMiB: (metricValueOf(text, 'nodejs_external_memory_bytes') ?? NaN) / 1048576,
      peers: metricValueOf(text, 'tsflanneld_peers') ?? NaN,
      txMbit: ((tx - this.lastTx) * 8) / wall / 1e6,
      drops: metricValueOf(text, 'tsflanneld_drops_total') ?? 0,
    };
    this.lastCpu = cpu;
    this.lastTx = tx;
    this.lastAt = now;
    return s;
  }
}

// ------------------------------------------------------------------------------------------------
// output

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '—');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '—');

function tableHeader(names: string[]): string {
  const cols = [
    't (s)',
    ...names.flatMap((n) => [`${n} RSS MiB`, `${n} CPU`, `${n} heap MiB`, `${n} peers`, `${n} tx Mbit/s`]),
    'churn ops',
    'fake leases',
  ];
  return `| ${cols.join(' | ')} |\n|${cols.map(() => '---').join('|')}|`;
}

function tableRow(s: Sample, names: string[]): string {
  const cells = [String(Math.round(s.t))];
  for (const n of names) {
    const d = s.daemons[n]!;
    cells.push(f1(d.rssMiB), f2(d.cpuCores), f1(d.heapUsedMiB), String(d.peers), f1(d.txMbit));
  }
  const c = s.churn;
  cells.push(c ? String(c.add + c.change + c.delete) : '—', c ? String(c.active) : '—');
  return `| ${cells.join(' | ')} |`;
}

interface Summary {
  name: string;
  rssFirstMiB: number;
  rssLastMiB: number;
  rssMaxMiB: number;
  heapFirstMiB: number;
  heapLastMiB: number;
  cpuMeanCores: number;
  cpuMaxCores: number;
  exited: string | null;
  routesMatchEtcd: boolean;
  routes: number;
}

function summarize(name: string, samples: Sample[]): Omit<Summary, 'exited' | 'routesMatchEtcd' | 'routes'> {
  const ds = samples.map((s) => s.daemons[name]).filter((d) => d !== undefined);
  const rss = ds.map((d) => d.rssMiB);
  const cpu = ds.map((d) => d.cpuCores);
  return {
    name,
    rssFirstMiB: rss[0] ?? NaN,
    rssLastMiB: rss[rss.length - 1] ?? NaN,
    rssMaxMiB: Math.max(...rss),
    heapFirstMiB: ds[0]?.heapUsedMiB ?? NaN,
    heapLastMiB: ds[ds.length - 1]?.heapUsedMiB ?? NaN,
    cpuMeanCores: cpu.reduce((a, b) => a + b, 0) / Math.max(1, cpu.length),
    cpuMaxCores: Math.max(...cpu),
  };
}

export function soakMarkdown(doc: SoakDocument, jsonName: string): string {
  const lines = [
    SOAK_START,
    '## Soak',
    '',
    `Generated by \`scripts/soak.sh\` (bench/soak.ts) on ${doc.started.slice(0, 16).replace('T', ' ')} UTC: ${doc.args.minutes} min, ` +
      `iperf3 TCP container → container at ${doc.args.bitrate || 'unlimited'} bit/s, one fake-lease add/change/delete every ` +
      `${doc.args.churnMs} ms (${doc.churn ? doc.churn.add + doc.churn.change + doc.churn.delete : 0} ops, ${doc.churn?.errors ?? 0} errors), ` +
      `samples every ${doc.args.sampleSeconds} s; ${doc.machine}. Raw samples: \`out/${jsonName}\` (not committed).`,
    '',
    '| daemon | RSS first → last (max) | V8 heap used first → last | CPU mean (max) | exit | routes = etcd leases − own |',
    '|---|---|---|---|---|---|',
    ...doc.summary.map(
      (s) =>
        `| ${s.name} | ${f1(s.rssFirstMiB)} → ${f1(s.rssLastMiB)} MiB (${f1(s.rssMaxMiB)}) | ${f1(s.heapFirstMiB)} → ${f1(s.heapLastMiB)} MiB | ` +
        `${f2(s.cpuMeanCores)} (${f2(s.cpuMaxCores)}) cores | ${s.exited ?? 'still running'} | ${s.routesMatchEtcd ? 'yes' : 'NO'} (${s.routes} routes) |`,
    ),
    '',
    `iperf3: ${doc.iperf ? `${f2(doc.iperf.gbit)} Gbit/s received, ${doc.iperf.retransmits} retransmits` : `failed: ${doc.iperfError}`}.`,
    SOAK_END,
  ];
  return lines.join('\n');
}

/** Replaces the soak section of RESULTS.md (or appends it); the rest of the file is left as it is. */
export function withSoakSection(previous: string | null, section: string): string {
  if (previous === null) return `# Benchmark results\n\n${section}\n`;
  const a = previous.indexOf(SOAK_START);
  const b = previous.indexOf(SOAK_END);
  if (a >= 0 && b > a) return previous.slice(0, a) + section + previous.slice(b + SOAK_END.length);
  return `${previous.replace(/\n*$/, '\n')}\n${section}\n`;
}

interface SoakDocument {
  started: string;
  finished: string;
  args: Args;
  machine: string;
  samples: Sample[];
  summary: Summary[];
  churn: ChurnCounts | null;
  iperf: { gbit: number; retransmits: number } | null;
  iperfError: string | null;
}

// ------------------------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function routedSubnets(host: TestHost): Promise<string[]> {
  const out = (await host.exec(['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().split(' ')[0]!)
    .filter((s) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(s))
    .sort();
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const say = (s: string): void => void process.stdout.write(`${s}\n`);
  const started = new Date();
  const seconds = Math.round(args.minutes * 60);
  const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'} × ${os.cpus().length}, Node ${process.version}`;
  say(
    `soak: ${args.minutes} min, churn every ${args.churnMs} ms, samples every ${args.sampleSeconds} s, iperf3 -b ${args.bitrate || 'unlimited'}`,
  );

  let bed: Testbed | null = null;
  const stop = (): void => {
    void bed?.teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    bed = await createTestbed({ hosts: 2, etcd: true });
    const etcd = bed.etcd!;
    await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
    const [h1, h2] = bed.hosts as [TestHost, TestHost];
    const daemons = [
      await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: HEALTHZ_PORT }),
      await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: HEALTHZ_PORT }),
    ];
    const [r1, r2] = await Promise.all(daemons.map((d) => d.waitReady()));
    const c1 = await addContainer(h1, { subnet: r1!.subnet, index: 0, mtu: r1!.mtu });
    const c2 = await addContainer(h2, { subnet: r2!.subnet, index: 0, mtu: r2!.mtu });
    await waitPing(c1, c2.ip);
    say(`daemons ready: h1 ${r1!.subnet}, h2 ${r2!.subnet}`);

    const own = new Set([r1!.subnet, r2!.subnet]);
    const slots: Slot[] = [];
    for (let i = 0, x = 150; i < 55; x++) {
      const subnet = `10.5.${x}.0/24`;
      if (own.has(subnet)) continue;
      slots.push({ subnet, publicIp: `192.0.2.${200 + i}` });
      i++;
    }

    const server = await iperf3Server(c2);
    const churn = h1.spawn(
      [
        process.execPath,
        '-e',
        `(${churner.toString()})()`,
        ETCD3,
        bed.etcdEndpoint!,
        ETCD_PREFIX,
        JSON.stringify(slots),
        String(args.churnMs),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let churnLast: ChurnCounts | null = null;
    let churnBuf = '';
    churn.stdout!.on('data', (b: Buffer) => {
      churnBuf += b.toString();
      let nl: number;
      while ((nl = churnBuf.indexOf('\n')) >= 0) {
        churnLast = JSON.parse(churnBuf.slice(0, nl)) as ChurnCounts;
        churnBuf = churnBuf.slice(nl + 1);
      }
    });
    const churnExited = new Promise<void>((r) => churn.on('exit', () => r()));

    const iperfRun = iperf3Client(c1, c2.ip, { seconds, port: server.port, ...(args.bitrate ? { bitrate: args.bitrate } : {}) }).then(
      (r) => ({ ok: r }),
      (e: unknown) => ({ err: e instanceof Error ? e.message : String(e) }),
    );

    const names = ['h1', 'h2'];
    const samplers = daemons.map((d) => new DaemonSampler(d));
    for (const s of samplers) await s.prime();
    const samples: Sample[] = [];
    const t0 = Date.now();
    say('');
    say(tableHeader(names));
    for (let next = t0 + args.sampleSeconds * 1000; next <= t0 + seconds * 1000 + 1; next += args.sampleSeconds * 1000) {
      await sleep(Math.max(0, next - Date.now()));
      if (daemons.some((d) => !d.running)) {
        say(`a daemon exited: ${daemons.map((d) => `${d.host.name} ${d.running ? 'running' : 'exited'}`).join(', ')}`);
        break;
      }
      churn.stdin!.write('\n');
      const sample: Sample = { t: (Date.now() - t0) / 1000, daemons: {}, churn: null };
      const got = await Promise.all(samplers.map((s) => s.sample()));
      names.forEach((n, i) => (sample.daemons[n] = got[i]!));
      sample.churn = churnLast; // its answer to the newline above (sampling the daemons takes longer)
      samples.push(sample);
      say(tableRow(sample, names));
    }

    churn.stdin!.end();
    await Promise.race([churnExited, sleep(15000)]);
    const iperf = await iperfRun;
    const finished = new Date();

    // Converged state: give the daemons time to apply the last events, then compare.
    const leases = (await listFlannelLeases(etcd)).map((l) => l.subnet).sort();
    const summary: Summary[] = [];
    for (const [i, d] of daemons.entries()) {
      const ownSubnet = i === 0 ? r1!.subnet : r2!.subnet;
      const want = leases.filter((s) => s !== ownSubnet).join();
      let got: string[] = [];
      await waitFor(`${d.host.name} routes`, async () => (got = await routedSubnets(d.host)).join() === want, 60000, 250).catch(
        () => undefined,
      );
      summary.push({
        ...summarize(names[i]!, samples),
        exited: d.running ? null : `exited (${(await d.exited) ?? 'signal'})`,
        routesMatchEtcd: got.join() === want,
        routes: got.length,
      });
    }

    const doc: SoakDocument = {
      started: started.toISOString(),
      finished: finished.toISOString(),
      args,
      machine,
      samples,
      summary,
      churn: churnLast,
      iperf: 'ok' in iperf ? { gbit: iperf.ok.bitsPerSecond / 1e9, retransmits: iperf.ok.retransmits ?? 0 } : null,
      iperfError: 'err' in iperf ? iperf.err : null,
    };
    fs.mkdirSync(args.outDir, { recursive: true });
    const stamp = started
      .toISOString()
      .replace(/\.\d+Z$/, 'Z')
      .replace(/:/g, '-');
    const jsonName = `soak-${stamp}.json`;
    fs.writeFileSync(path.join(args.outDir, jsonName), `${JSON.stringify(doc, null, 2)}\n`);
    const section = soakMarkdown(doc, jsonName);
    say('');
    say(
      section
        .split('\n')
        .filter((l) => !l.startsWith('<!--'))
        .join('\n'),
    );
    say(`\nwrote ${path.relative(process.cwd(), path.join(args.outDir, jsonName))}`);
    if (args.results) {
      const resultsFile = path.join(REPO, 'bench', 'RESULTS.md');
      const previous = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, 'utf8') : null;
      fs.writeFileSync(resultsFile, withSoakSection(previous, section));
      say('updated the Soak section of bench/RESULTS.md');
    }
    for (const d of daemons) if (d.running) await d.stop();
    const healthy = summary.every((s) => s.exited === null && s.routesMatchEtcd) && doc.iperf !== null;
    return healthy ? 0 : 1;
  } finally {
    await bed?.teardown();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
