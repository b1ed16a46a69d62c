// Control plane at scale: a real etcd and a real tsflanneld in throw-away network namespaces.
//   node dist/bench/route-scale.js [--peers 1000,5000,10000,20000] [--burst 1000] [--no-results]
// For each N: N peer leases are in etcd before the daemon starts (bench/lease-loader.ts); then
//   - time from process start to subnet.env, to all N routes in the kernel (the daemon's "ready in"
//     line, logged once the snapshot's routes were ACKed by the kernel; checked with `ip route`), and
//     the daemon's own phase times;
//   - RSS (current and peak) and CPU seconds of the daemon once converged, etcd RPCs it made (etcd's
//     grpc_server_started_total before/after);
//   - a burst of --burst concurrent puts of new leases → time until routes == leases, then the same
//     number of concurrent deletes → time until routes == leases again; watch reconnects (must be 0).
// Prints a table and how each time grows with N; writes a section of bench/RESULTS.md unless
// --no-results. No thresholds. Everything is torn down on exit, also on failure or ^C.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestbed, type Testbed, type TestHost } from '../netns-fixtures/testbed';
import { ETCD_PREFIX, startDaemonNode, type DaemonNode } from '../netns-fixtures/tsflanneld-node';

// Our own lease comes from 10.254.0.0/16, which the fake leases (bench/lease-loader.ts) never use.
const CONFIG = '{"Network":"10.0.0.0/8","SubnetLen":24,"SubnetMin":"10.254.0.0","SubnetMax":"10.254.255.0","Backend":{"Type":"vxlan"}}';
const LOADER = path.resolve(__dirname, '..', 'netns-fixtures', 'lease-loader.js');
const TUN = 'flannel.1';
const RESULTS = path.resolve(__dirname, '..', '..', 'bench', 'RESULTS.md');
const BEGIN = '<!-- control-plane-scale:begin -->';
const END = '<!-- control-plane-scale:end -->';

interface Args {
  peers: number[];
  burst: number;
  results: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { peers: [1000, 5000, 10000, 20000], burst: 1000, results: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (k === '--no-results') a.results = false;
    else if (k === '--peers') a.peers = (argv[++i] ?? '').split(',').map(Number);
    else if (k === '--burst') a.burst = Number(argv[++i]);
    else if (k === '--help') {
      process.stdout.write('usage: route-scale [--peers 1000,5000,10000,20000] [--burst 1000] [--no-results]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}; see --help`);
  }
  if (a.peers.some((n) => !Number.isInteger(n) || n < 1 || n + a.burst > 65000)) throw new Error('--peers: 1..65000 minus --burst each');
  return a;
}

interface Row {
  n: number;
  subnetEnvMs: number;
  routesMs: number;
  phases: string;
  routes: number;
  rssMiB: number;
  peakMiB: number;
  cpuS: number;
  rpcs: number;
  rpcDetail: string;
  burstPutMs: number;
  /** From etcd's reply to the last put (the loader's doneAt) to routes == leases. */
  burstPutAfterLastMs: number;
  burstDeleteMs: number;
  burstDeleteAfterLastMs: number;
  reconnects: number;
  loadErrors: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function loader(
  host: TestHost,
  endpoint: string,
  mode: string,
  first: number,
  count: number,
): Promise<{ startedAt: number; doneAt: number; errors: number }> {
  const r = await host.exec([process.execPath, LOADER, endpoint, ETCD_PREFIX, mode, String(first), String(count)], { timeoutMs: 600000 });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { startedAt: number; doneAt: number; errors: number };
}

async function routeCount(host: TestHost): Promise<number> {
  const out = (await host.exec(['ip', '-4', '-o', 'route', 'show', 'dev', TUN, 'proto', 'boot'])).stdout;
  let n = 0;
  for (const l of out.split('\n')) if (l.trim() !== '') n++;
  return n;
}

/** Polls the route count until it equals `want`; → epoch ms of the first poll that saw it. */
async function waitRoutes(host: TestHost, want: number, timeoutMs = 120000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const n = await routeCount(host);
    if (n === want) return Date.now();
    if (Date.now() > end) throw new Error(`routes on ${TUN}: ${n}, want ${want}`);
    await sleep(10);
  }
}

async function etcdRpcs(host: TestHost, endpoint: string): Promise<Map<string, number>> {
  const text = (await host.exec(['curl', '-s', `${endpoint}/metrics`])).stdout;
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^grpc_server_started_total\{([^}]*)\} (\S+)/.exec(line);
    if (!m) continue;
    const method = /grpc_method="([^"]+)"/.exec(m[1]!)?.[1] ?? '?';
    out.set(method, (out.get(method) ?? 0) + Number(m[2]));
  }
  return out;
}

function procStats(host: TestHost, pid: number): Promise<{ rssMiB: number; peakMiB: number; cpuS: number }> {
  return host.exec(['cat', `/proc/${pid}/status`, `/proc/${pid}/stat`]).then((r) => {
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(r.stdout)?.[1] ?? NaN);
    const stat = r.stdout.trim().split('\n').pop()!;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14, 15)
    return { rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024, cpuS: ticks / 100 };
  });
}

async function measure(n: number, burst: number): Promise<Row> {
  let bed: Testbed | null = null;
  try {
    bed = await createTestbed({ hosts: 1, etcd: true });
    const etcd = bed.etcd!;
    const endpoint = bed.etcdEndpoint!;
    const host = bed.hosts[0]!;
    await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
    const load = await loader(host, endpoint, 'load', 0, n);
    const before = await etcdRpcs(host, endpoint);

    const daemon: DaemonNode = await startDaemonNode({ host, etcdEndpoint: endpoint });
    const ready = await daemon.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('ready in '), 120000, '"ready in"');
    const pid = Number(ready.pid);
    const phasesMs = ready.phasesMs as Record<string, number>;
    const total = Object.values(phasesMs).reduce((a, b) => a + b, 0);
    // The phases are measured from process start inside the daemon; subnet.env is the sum up to it.
    let subnetEnvMs = 0;
    for (const [k, v] of Object.entries(phasesMs)) {
      subnetEnvMs += v;
      if (k === 'subnet.env') break;
    }
    const routes = await routeCount(host);
    await sleep(500);
    const stats = await procStats(host, pid);
    const after = await etcdRpcs(host, endpoint);
    const detail: string[] = [];
    let rpcs = 0;
    for (const [m, v] of after) {
      const d = v - (before.get(m) ?? 0);
      if (d <= 0) continue;
      rpcs += d;
      detail.push(`${m} ${d}`);
    }
    // The burst: new leases n..n+burst-1, all at once, then deleted all at once.
    const put = await loader(host, endpoint, 'put', n, burst);
    const putConverged = await waitRoutes(host, n + burst);
    const del = await loader(host, endpoint, 'delete', n, burst);
    const delConverged = await waitRoutes(host, n);
    const reconnects = daemon.countLogs((l) => typeof l.msg === 'string' && /lost; reconnecting/.test(l.msg));
    await daemon.stop();
    return {
      n,
      subnetEnvMs,
      routesMs: total,
      phases: String(ready.msg).replace(/^ready in /, ''),
      routes,
      rssMiB: stats.rssMiB,
      peakMiB: stats.peakMiB,
      cpuS: stats.cpuS,
      rpcs,
      rpcDetail: detail.sort().join(', '),
      burstPutMs: putConverged - put.startedAt,
      burstPutAfterLastMs: putConverged - put.doneAt,
      burstDeleteMs: delConverged - del.startedAt,
      burstDeleteAfterLastMs: delConverged - del.doneAt,
      reconnects,
      loadErrors: load.errors + put.errors + del.errors,
    };
  } finally {
    await bed?.teardown();
  }
}

function growth(rows: Row[], f: (r: Row) => number): string {
  const base = rows[0]!;
  return rows.map((r) => `${(f(r) / f(base)).toFixed(2)}× at ${(r.n / base.n).toFixed(0)}× N`).join(', ');
}

function markdown(rows: Row[], burst: number): string {
  const lines = [
    '| N leases | → subnet.env | → all N routes | routes | RSS (peak) MiB | CPU s | etcd RPCs | burst ' +
      `${burst} puts → routes == leases (after the last put's reply) | ${burst} deletes → routes == leases (after the last reply) | watch reconnects |`,
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.n} | ${r.subnetEnvMs} ms | ${r.routesMs} ms | ${r.routes} | ${r.rssMiB.toFixed(0)} (${r.peakMiB.toFixed(0)}) | ${r.cpuS.toFixed(2)} | ${r.rpcs} | ${r.burstPutMs} ms (${r.burstPutAfterLastMs} ms) | ${r.burstDeleteMs} ms (${r.burstDeleteAfterLastMs} ms) | ${r.reconnects} |`,
    );
  }
  lines.push('', 'Phases (from process start, ms):', '');
  for (const r of rows) lines.push(`- N=${r.n}: ${r.phases}`);
  lines.push('', 'etcd RPCs by method (daemon start → converged):', '');
  for (const r of rows) lines.push(`- N=${r.n}: ${r.rpcDetail}`);
  if (rows.length > 1) {
    lines.push('', 'Growth relative to the smallest N:', '');
    lines.push(`- time to all routes: ${growth(rows, (r) => r.routesMs)}`);
    lines.push(`- routes phase alone: ${growth(rows, (r) => Number(/routes (\d+)/.exec(r.phases)?.[1] ?? NaN))}`);
    lines.push(`- CPU seconds: ${growth(rows, (r) => r.cpuS)}`);
    lines.push(`- RSS: ${growth(rows, (r) => r.rssMiB)}`);
  }
  return lines.join('\n');
}

function writeResults(body: string): void {
  const section = [
    BEGIN,
    '## Control plane at scale (`node dist/bench/route-scale.js`)',
    '',
    `Run ${new Date().toISOString()} on ${os.cpus().length} vCPUs, load average ${os.loadavg()[0]!.toFixed(1)} at the end.`,
    'The machine is shared with other developers working at the same time, so absolute times are noisy;',
    'compare within one run. Real etcd and tsflanneld in namespaces; N leases present before the daemon starts;',
    'times from process start (the daemon\'s own "ready in" line, after the kernel ACKed every route).',
    '',
    body,
    END,
  ].join('\n');
  let text = fs.existsSync(RESULTS) ? fs.readFileSync(RESULTS, 'utf8') : '# Benchmark results\n';
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a >= 0 && b > a) text = text.slice(0, a) + section + text.slice(b + END.length);
  else {
    const hist = text.indexOf('\n## History');
    text = hist >= 0 ? `${text.slice(0, hist)}\n${section}\n${text.slice(hist)}` : `${text.trimEnd()}\n\n${section}\n`;
  }
  fs.writeFileSync(RESULTS, text);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('route-scale needs root (it creates network namespaces)');
  const rows: Row[] = [];
  for (const n of args.peers) {
    process.stdout.write(`N=${n} …\n`);
    const row = await measure(n, args.burst);
    process.stdout.write(`  ${JSON.stringify(row)}\n`);
    rows.push(row);
  }
  const body = markdown(rows, args.burst);
  process.stdout.write(`\n${body}\n`);
  if (args.results) writeResults(body);
}

main().catch((e: unknown) => {
  process.stderr.write(`route-scale: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
