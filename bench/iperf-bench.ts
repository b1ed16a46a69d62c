// `npm run bench`: underlay vs kernel VXLAN (flannel.1) vs tsflanneld (and each offload rung it
// supports), in network namespaces, one path after the other on fresh testbeds. Per path and
// repetition: iperf3 TCP 1 and N streams, ping RTT, UDP packet rate at < 1 % loss for 1350 B and
// 64 B packets, daemon CPU and RSS. Prints a markdown table with ratios to kernel VXLAN and writes
// bench/out/<timestamp>.{json,svg}; full runs also update bench/RESULTS.md and bench/results-latest.svg.
// A path that fails is recorded with its error and the others still run; no thresholds anywhere.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Testbed } from '../netns-fixtures/testbed';
import { IperfServerHandle, measureRepetition, type MeasureOptions } from './iperf-bench-measure';
import { detectRungControl, runnerTakesOffload, openPath, perfRecord, REPO, snapshotCode, type PathSpec } from './iperf-bench-paths';
import {
  headlines,
  machineInfo,
  markdownTable,
  resultsMarkdown,
  summarize,
  svgChart,
  UNITS,
  type PathResult,
  type RunDocument,
} from './iperf-bench-report';
import { fileTimestamp } from './iperf-bench-stats';

const ALL_RUNGS = ['full', 'no-tun-uso', 'no-udp-gro', 'no-udp-gso', 'none'];
// Variables that may force a rung when the daemon has no -offload flag (first one its code mentions).
const OFFLOAD_ENVS = ['TSFLANNELD_OFFLOAD', 'FLANNELD_OFFLOAD'];
// A 1-minute load average above this when a path starts is noted in its row (others share the cores).
const BUSY_LOAD = 1.5;
const ALL_PATHS = ['underlay', 'kernel', 'dataplane', 'tsflanneld'];

interface Args {
  quick: boolean;
  only: Set<string>;
  rungs: string[];
  threads: number[];
  reps: number;
  tcpSeconds: number;
  udpSeconds: number;
  udpSteps: number;
  udpWindow: string;
  streams: number;
  pingCount: number;
  mtu: number;
  cpuProf: boolean;
  perf: boolean;
  daemonEnv: Record<string, string>;
  results: 'auto' | 'yes' | 'no';
  outDir: string;
}

const USAGE = `usage: npm run bench -- [options]
  --quick               1 repetition, short runs (development); does not touch RESULTS.md
  --only LIST           paths to run, comma-separated: ${ALL_PATHS.join(',')} (default: all);
                        dataplane = the data plane alone (static runner, no etcd/daemon)
  --threads LIST        forwarding-thread counts to measure tsflanneld with besides its default
                        (-dataplane-threads; default 1,2; "" = only the default)
  --rungs LIST          offload rungs to force (default: ${ALL_RUNGS.join(',')}) through the daemon's
                        -offload flag, else ${OFFLOAD_ENVS.join(' or ')}; "" = only the daemon's default
  --reps N              repetitions per path (default 3, quick 1)
  --tcp-seconds S       iperf3 TCP duration (default 10, quick 3)
  --udp-seconds S       duration of each UDP search trial (default 2, quick 1)
  --udp-steps N         bisection steps per UDP search (default 6, quick 4)
  --udp-window W        iperf3 -w for UDP trials (default 4M; "" = iperf3 default)
  --streams N           parallel streams of the multi-stream TCP run (default 4)
  --ping-count N        pings per repetition at 10 ms intervals (default 200)
  --mtu N               underlay MTU (default 1500; overlay gets N-50)
  --cpu-prof            run the daemons with node --cpu-prof (profiles in bench/out/<ts>-prof/)
  --perf                perf record -g the daemons during each 1-stream TCP run (needs perf)
  --daemon-env K=V      extra environment for the daemons (repeatable)
  --results / --no-results   force / skip updating bench/RESULTS.md (default: only full runs of every path)
  --out DIR             output directory (default bench/out)
Environment: TSFLANNELD_NODE_OPTIONS = extra node options for the daemons (e.g. "--max-semi-space-size=64").
`;

function parseArgs(argv: string[]): Args {
  const a: Args = {
    quick: false,
    only: new Set(ALL_PATHS),
    rungs: ALL_RUNGS,
    threads: [1, 2],
    reps: NaN,
    tcpSeconds: NaN,
    udpSeconds: NaN,
    udpSteps: NaN,
    udpWindow: '4M',
    streams: 4,
    pingCount: 200,
    mtu: 1500,
    cpuProf: false,
    perf: false,
    daemonEnv: {},
    results: 'auto',
    outDir: path.join(REPO, 'bench', 'out'),
  };
  const bad = (msg: string): never => {
    process.stderr.write(`iperf-bench: ${msg}\n${USAGE}`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) bad(`${k} needs a value`);
      return v!;
    };
    const int = (min: number): number => {
      const v = Number(val());
      if (!Number.isInteger(v) || v < min) bad(`${k} must be an integer ≥ ${min}`);
      return v;
    };
    const list = (): string[] =>
      val()
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    if (k === '--quick') a.quick = true;
    else if (k === '--only') a.only = new Set(list());
    else if (k === '--rungs') a.rungs = list();
    else if (k === '--threads') {
      a.threads = list().map(Number);
      if (a.threads.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) bad('--threads wants counts 1..64');
    } else if (k === '--reps') a.reps = int(1);
    else if (k === '--tcp-seconds') a.tcpSeconds = int(2);
    else if (k === '--udp-seconds') a.udpSeconds = int(1);
    else if (k === '--udp-steps') a.udpSteps = int(0);
    else if (k === '--udp-window') a.udpWindow = val();
    else if (k === '--streams') a.streams = int(2);
    else if (k === '--ping-count') a.pingCount = int(1);
    else if (k === '--mtu') a.mtu = int(1280);
    else if (k === '--cpu-prof') a.cpuProf = true;
    else if (k === '--perf') a.perf = true;
    else if (k === '--daemon-env') {
      const kv = val();
      const eq = kv.indexOf('=');
      if (eq <= 0) bad('--daemon-env wants K=V');
      a.daemonEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (k === '--results') a.results = 'yes';
    else if (k === '--no-results') a.results = 'no';
    else if (k === '--out') a.outDir = path.resolve(val());
    else if (k === '--help' || k === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else bad(`unknown option ${k}`);
  }
  for (const p of a.only) if (!ALL_PATHS.includes(p)) bad(`unknown path ${p} in --only`);
  // Any name the daemon understands can be forced; the defaults are the ladder of docs/performance.md §6.
  for (const r of a.rungs) if (!/^[a-z0-9][a-z0-9_-]*$/.test(r)) bad(`rung "${r}" is not a plain name`);
  if (Number.isNaN(a.reps)) a.reps = a.quick ? 1 : 3;
  if (Number.isNaN(a.tcpSeconds)) a.tcpSeconds = a.quick ? 3 : 10;
  if (Number.isNaN(a.udpSeconds)) a.udpSeconds = a.quick ? 1 : 2;
  if (Number.isNaN(a.udpSteps)) a.udpSteps = a.quick ? 4 : 6;
  return a;
}

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

function pathSpecs(args: Args, notes: string[]): PathSpec[] {
  const specs: PathSpec[] = [];
  const wantRungs = args.rungs.length > 0;
  const control = wantRungs && args.only.has('tsflanneld') ? detectRungControl(OFFLOAD_ENVS) : null;
  if (args.only.has('underlay')) specs.push({ id: 'underlay', label: 'underlay veth (host ↔ host)', kind: 'underlay' });
  if (args.only.has('kernel')) specs.push({ id: 'kernel', label: 'kernel VXLAN (flannel.1)', kind: 'kernel' });
  if (args.only.has('dataplane')) {
    specs.push({ id: 'dataplane', label: 'data plane only (static runner)', kind: 'dataplane' });
    // Until the daemon can be told a rung, the runner (which takes one in its config) shows the ladder.
    if (wantRungs && !control && runnerTakesOffload()) {
      notes.push('offload rungs measured on the data plane alone (static runner "offload" config): the daemon cannot be told a rung');
      for (const rung of args.rungs) specs.push({ id: `dataplane-${rung}`, label: `data plane only [${rung}]`, kind: 'dataplane', rung });
    }
  }
  if (args.only.has('tsflanneld')) {
    specs.push({ id: 'tsflanneld', label: `tsflanneld [${os.availableParallelism()} CPUs: default threads]`, kind: 'tsflanneld' });
    for (const n of args.threads)
      specs.push({ id: `tsflanneld-t${n}`, label: `tsflanneld [${n} thread${n > 1 ? 's' : ''}]`, kind: 'tsflanneld', threads: n });
    if (control) {
      notes.push(`rungs forced with ${control.kind === 'flag' ? `the ${control.flag} flag` : `${control.name}=<rung>`}`);
      for (const rung of args.rungs) specs.push({ id: `tsflanneld-${rung}`, label: `tsflanneld [${rung}]`, kind: 'tsflanneld', rung });
    } else if (wantRungs) {
      notes.push(
        `the built daemon has no -offload flag and reads none of ${OFFLOAD_ENVS.join(', ')}: its rungs are not measured, only its default`,
      );
    }
  }
  return specs;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write('iperf-bench: needs root (network namespaces)\n');
    return 1;
  }
  const started = new Date();
  const stamp = fileTimestamp(started);
  fs.mkdirSync(args.outDir, { recursive: true });
  const runNotes: string[] = [];
  // Everyone rebuilds dist/ all the time: every path of this run uses one copy of the build.
  const codeDir = path.join(args.outDir, `${stamp}-code`);
  snapshotCode(codeDir);
  // Kept next to profiles (their frames point into it); otherwise removed when the run ends.
  const dropCode = (): void => {
    if (!args.cpuProf && !args.perf) fs.rmSync(codeDir, { recursive: true, force: true });
  };
  const specs = pathSpecs(args, runNotes);
  const machine = machineInfo(args.mtu);
  const profDir = args.cpuProf || args.perf ? path.join(args.outDir, `${stamp}-prof`) : undefined;
  if (profDir) fs.mkdirSync(profDir, { recursive: true });
  const nodeOptions = (process.env.TSFLANNELD_NODE_OPTIONS ?? '').split(/\s+/).filter((s) => s.length > 0);
  if (args.perf) nodeOptions.push('--perf-basic-prof');

  // Signals: tear down whatever testbed is up, then exit.
  let currentBed: Testbed | null = null;
  let interrupted = false as boolean; // set by the signal handler
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = true;
      say(`\niperf-bench: ${sig}, tearing down`);
      const bed = currentBed;
      const down = bed
        ? bed.teardown().catch((e: unknown) => void process.stderr.write(`teardown: ${e instanceof Error ? e.message : String(e)}\n`))
        : Promise.resolve();
      void down.then(() => {
        dropCode();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    });
  }

  say(
    `iperf-bench: ${specs.map((s) => s.label).join(', ')}; ${args.reps} repetition(s), TCP ${args.tcpSeconds} s, UDP trials ${args.udpSeconds} s`,
  );
  say(`machine: ${machine.cpuModel} × ${machine.cpus}, ${machine.uname}, underlay MTU ${machine.underlayMtu}`);
  const dirty = machine.git.dirty;
  say(`code: ${machine.git.commit}${dirty.length > 0 ? ` + uncommitted changes in ${dirty.join(', ')}` : ''}`);
  for (const n of runNotes) say(`note: ${n}`);

  let perfCount = 0;
  const results: PathResult[] = [];
  for (const spec of specs) {
    if (interrupted) break;
    const t0 = Date.now();
    const loadAvg = os.loadavg().map((x) => Math.round(x * 100) / 100);
    const result: PathResult = { spec, notes: [], reps: [], values: {}, ranges: {}, ratios: {}, daemonLabels: [], seconds: 0, loadAvg };
    results.push(result);
    say(`\n== ${spec.label} (load average ${loadAvg.join(' ')})`);
    if (loadAvg[0]! > BUSY_LOAD) result.notes.push(`machine busy at start (load ${loadAvg[0]})`);
    try {
      const session = await openPath(spec, {
        mtu: args.mtu,
        log: say,
        daemonEnv: args.daemonEnv,
        nodeOptions,
        ...(args.cpuProf && profDir ? { cpuProfDir: profDir } : {}),
        readyTimeoutMs: 60000,
        connectTimeoutMs: 20000,
        onTestbed: (bed) => (currentBed = bed),
      });
      result.info = session.info;
      const ep = session.endpoints;
      const server = new IperfServerHandle(ep.server);
      const mopts: MeasureOptions = {
        tcpSeconds: args.tcpSeconds,
        tcpStreams: args.streams,
        pingCount: args.pingCount,
        pingIntervalSec: 0.01,
        udpSeconds: args.udpSeconds,
        udpSteps: args.udpSteps,
        udpMaxLossPercent: 1,
        udpSizes: [1350, 64],
        udpWindow: args.udpWindow,
        log: say,
        ...(args.perf && profDir && ep.daemons.length > 0
          ? {
              onTcpSteadyState: async (seconds: number) => {
                const out = path.join(profDir, `${spec.id}-${++perfCount}.perf.data`);
                const err = await perfRecord(
                  ep.daemons.map((d) => d.pid),
                  seconds,
                  out,
                );
                if (err) result.notes.push(err.split('\n')[0]!);
                else say(`    perf: ${path.relative(REPO, out)}`);
              },
            }
          : {}),
      };
      try {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- the signal handler sets it during the awaits
        for (let i = 0; i < args.reps && !interrupted; i++) {
          say(`  repetition ${i + 1}/${args.reps}`);
          result.reps.push(await measureRepetition(ep, server, mopts));
        }
      } finally {
        await server.stop().catch(() => undefined);
        await session.close().catch((e: unknown) => say(`  teardown: ${e instanceof Error ? e.message : String(e)}`));
        result.notes.push(...session.notes); // close() may add some (a daemon that died meanwhile)
      }
    } catch (e) {
      result.error = (e as Error).message;
      say(`  ERROR: ${result.error}`);
    }
    result.seconds = (Date.now() - t0) / 1000;
  }
  dropCode();
  if (interrupted) return 130;

  summarize(results);
  const udpSizes = [1350, 64];
  const table = markdownTable(results, udpSizes, args.streams);
  say(`\n${table}\n`);
  for (const l of headlines(results, udpSizes, args.streams)) say(l);
  for (const n of runNotes) say(`note: ${n}`);

  const doc: RunDocument = {
    tool: 'tsflanneld iperf-bench',
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    quick: args.quick,
    options: {
      only: [...args.only],
      rungs: args.rungs,
      threads: args.threads,
      reps: args.reps,
      tcpSeconds: args.tcpSeconds,
      udpSeconds: args.udpSeconds,
      udpSteps: args.udpSteps,
      udpWindow: args.udpWindow,
      streams: args.streams,
      pingCount: args.pingCount,
      pingIntervalSec: 0.01,
      udpSizes,
      udpMaxLossPercent: 1,
      daemonEnv: args.daemonEnv,
      daemonNodeOptions: nodeOptions,
      notes: runNotes,
    },
    machine,
    units: UNITS,
    paths: results,
  };
  const jsonName = `${stamp}.json`;
  const svgName = `${stamp}.svg`;
  const subtitle = `${started.toISOString().slice(0, 16).replace('T', ' ')} UTC · ${machine.cpuModel} × ${machine.cpus} · ${machine.uname.split(' ').slice(0, 2).join(' ')} · MTU ${machine.underlayMtu} · ${args.reps} rep(s)${args.quick ? ' (quick)' : ''}`;
  const svg = svgChart(results, udpSizes, args.streams, subtitle);
  fs.writeFileSync(path.join(args.outDir, jsonName), `${JSON.stringify(doc, null, 2)}\n`);
  fs.writeFileSync(path.join(args.outDir, svgName), svg);
  say(`\nwrote ${path.relative(process.cwd(), path.join(args.outDir, jsonName))} and ${svgName}`);
  if (profDir) say(`profiles in ${path.relative(process.cwd(), profDir)}`);

  const complete = !args.quick && ['underlay', 'kernel', 'tsflanneld'].every((p) => args.only.has(p));
  if (args.results === 'yes' || (args.results === 'auto' && complete)) {
    const resultsFile = path.join(REPO, 'bench', 'RESULTS.md');
    const previous = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, 'utf8') : null;
    fs.writeFileSync(resultsFile, resultsMarkdown(doc, table, previous, jsonName, args.reps));
    fs.writeFileSync(path.join(REPO, 'bench', 'results-latest.svg'), svg);
    say('updated bench/RESULTS.md and bench/results-latest.svg');
  } else {
    say('bench/RESULTS.md left alone (quick or partial run; --results forces an update)');
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`iperf-bench: ${(e instanceof Error ? e.stack : undefined) ?? String(e)}\n`);
    process.exit(1);
  },
);
