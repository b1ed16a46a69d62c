// Results of an iperf benchmark run: medians per path, ratios to kernel VXLAN, a markdown table,
// a hand-written SVG bar chart, the JSON document and bench/RESULTS.md.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import type { Repetition } from './iperf-bench-measure';
import { REPO, type PathSpec } from './iperf-bench-paths';
import { escapeMd, escapeXml, fmtNum, fmtRatio, median, minMax, ratio } from './iperf-bench-stats';

export interface PathResult {
  spec: PathSpec;
  /** Setup failure (the path was not measured) — e.g. the daemon does not forward. */
  error?: string;
  info?: Record<string, unknown>;
  notes: string[];
  reps: Repetition[];
  /** Medians over the repetitions; keys as in metricKeys(). */
  values: Record<string, number | undefined>;
  /** [min, max] over the repetitions, same keys. */
  ranges: Record<string, [number, number] | undefined>;
  /** value / kernel value, same keys. */
  ratios: Record<string, number | undefined>;
  /** Labels of the sampled daemons (sender first). */
  daemonLabels: string[];
  seconds: number;
  /** /proc/loadavg (1, 5, 15 min) when the path started: other work on the machine skews results. */
  loadAvg: number[];
}

export interface MachineInfo {
  cpuModel: string;
  cpus: number;
  memTotalMiB: number;
  uname: string;
  node: string;
  iperf3: string;
  underlayMtu: number;
  overlayMtu: number;
  /** HEAD and the uncommitted changes under src/, native/, bin/ at start: what the daemons ran. */
  git: { commit: string; dirty: string[] };
}

export interface RunDocument {
  tool: 'tsflanneld iperf-bench';
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  options: Record<string, unknown>;
  machine: MachineInfo;
  /** Metric conventions, so a reader of the JSON needs no source. */
  units: Record<string, string>;
  paths: PathResult[];
}

export const UNITS: Record<string, string> = {
  tcp1Gbit: 'Gbit/s received, iperf3 TCP 1 stream',
  tcp1Retr: 'TCP retransmits during the 1-stream run',
  tcpNGbit: 'Gbit/s received, iperf3 TCP N streams (-P)',
  tcpNRetr: 'TCP retransmits during the N-stream run',
  pingAvgUs: 'ping RTT mean over per-probe times, µs',
  pingP99Us: 'ping RTT 99th percentile (nearest rank), µs',
  'udp<size>Kpps': 'received kpps of the fastest UDP trial with loss under the limit; inner IPv4 packet = <size> bytes',
  'udp<size>Loss': 'loss percent of that trial',
  'udp<size>SaturatedKpps': 'received kpps of the unlimited (-b 0) probe: what gets through when the sender floods',
  'udp<size>SaturatedLoss': 'loss percent of the unlimited probe',
  'udp<size>SenderBound': '1 if the unlimited (-b 0) probe already met the loss limit (iperf3 sender is the bottleneck)',
  'cpu<i>': 'cores used by daemon i (0 = sender host, 1 = receiver host) during the 1-stream TCP run (utime+stime / wall)',
  'cpuPerGbit<i>': 'cpu<i> / tcp1Gbit',
  'cpuN<i>': 'cores used by daemon i during the N-stream TCP run',
  'rssMiB<i>': 'daemon i VmRSS after the 1-stream TCP run, MiB',
  'hwmMiB<i>': 'daemon i VmHWM (peak RSS) after the 1-stream TCP run, MiB',
};

// ------------------------------------------------------------------------------------------------
// summaries

function repValues(rep: Repetition): Record<string, number | undefined> {
  const v: Record<string, number | undefined> = {
    tcp1Gbit: rep.tcp1?.gbit,
    tcp1Retr: rep.tcp1?.retransmits,
    tcpNGbit: rep.tcpN?.gbit,
    tcpNRetr: rep.tcpN?.retransmits,
    pingAvgUs: rep.ping?.avgUs,
    pingP99Us: rep.ping?.p99Us,
  };
  for (const [size, u] of Object.entries(rep.udp)) {
    v[`udp${size}Kpps`] = u.pps / 1000;
    v[`udp${size}Loss`] = u.lossPercent;
    v[`udp${size}SenderBound`] = u.senderBound ? 1 : 0;
    const probe = u.trials[0];
    if (probe) {
      v[`udp${size}SaturatedKpps`] = probe.recvPps / 1000;
      v[`udp${size}SaturatedLoss`] = probe.lossPercent;
    }
  }
  rep.tcp1?.daemons.forEach((d, i) => {
    v[`cpu${i}`] = d.cores;
    v[`cpuPerGbit${i}`] = rep.tcp1!.gbit > 0 ? d.cores / rep.tcp1!.gbit : undefined;
    if (d.rssBytes !== undefined) v[`rssMiB${i}`] = d.rssBytes / 2 ** 20;
    if (d.hwmBytes !== undefined) v[`hwmMiB${i}`] = d.hwmBytes / 2 ** 20;
  });
  rep.tcpN?.daemons.forEach((d, i) => (v[`cpuN${i}`] = d.cores));
  return v;
}

/** Fills values/ranges from the repetitions, and ratios against the kernel path's values. */
export function summarize(results: PathResult[]): void {
  for (const r of results) {
    const per = r.reps.map(repValues);
    const keys = new Set(per.flatMap((p) => Object.keys(p)));
    r.values = {};
    r.ranges = {};
    for (const k of keys) {
      const xs = per.map((p) => p[k]);
      r.values[k] = median(xs);
      r.ranges[k] = minMax(xs);
    }
    r.daemonLabels = r.reps.find((x) => x.tcp1)?.tcp1?.daemons.map((d) => d.label) ?? [];
  }
  const kernel = results.find((r) => r.spec.kind === 'kernel');
  for (const r of results) {
    r.ratios = {};
    if (!kernel) continue;
    for (const k of Object.keys(r.values)) r.ratios[k] = ratio(r.values[k], kernel.values[k]);
  }
}

// ------------------------------------------------------------------------------------------------
// markdown

function cellGbit(r: PathResult, key: 'tcp1' | 'tcpN'): string {
  const g = r.values[`${key}Gbit`];
  if (g === undefined) return '—';
  const retr = r.values[`${key}Retr`];
  return `${fmtNum(g)} Gbit/s${fmtRatio(r.ratios[`${key}Gbit`])}${retr !== undefined ? `, ${Math.round(retr)} retr` : ''}`;
}

function cellPing(r: PathResult): string {
  const avg = r.values.pingAvgUs;
  if (avg === undefined) return '—';
  return `${avg.toFixed(0)} / ${fmtNum(r.values.pingP99Us)} µs${fmtRatio(r.ratios.pingAvgUs)}`;
}

function cellUdp(r: PathResult, size: number): string {
  const k = r.values[`udp${size}Kpps`];
  if (k === undefined) return '—';
  if (k === 0) return 'no trial under the loss limit';
  const loss = r.values[`udp${size}Loss`];
  const bound = (r.values[`udp${size}SenderBound`] ?? 0) >= 0.5 ? ' ‡' : '';
  return `${fmtNum(k)} kpps${fmtRatio(r.ratios[`udp${size}Kpps`])}${loss !== undefined ? `, ${loss.toFixed(2)} % loss` : ''}${bound}`;
}

function cellCpu(r: PathResult): string {
  const n = r.daemonLabels.length;
  if (n === 0) return '—';
  const cores = r.daemonLabels.map((_, i) => fmtNum(r.values[`cpu${i}`], 2)).join(' + ');
  const per = r.daemonLabels.map((_, i) => fmtNum(r.values[`cpuPerGbit${i}`], 2)).join(' + ');
  return `${cores} cores; ${per} core per Gbit/s`;
}

function cellRss(r: PathResult): string {
  if (r.daemonLabels.length === 0) return '—';
  return `${r.daemonLabels.map((_, i) => fmtNum(r.values[`rssMiB${i}`], 2)).join(' / ')} MiB`;
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

export function markdownTable(results: PathResult[], udpSizes: number[], streams: number): string {
  const head = [
    'path',
    'TCP 1 stream',
    `TCP ${streams} streams`,
    'ping avg / p99',
    ...udpSizes.map((s) => `UDP ${s} B pkts`),
    'daemon CPU (tx + rx), TCP 1 stream',
    'daemon RSS',
    'notes',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of results) {
    const notes = [
      ...(r.error ? [`**error:** ${firstLine(r.error)}`] : []),
      ...Object.entries(r.reps.reduce<Record<string, string>>((acc, rep) => ({ ...acc, ...rep.errors }), {})).map(
        ([m, e]) => `${m}: ${firstLine(e)}`,
      ),
      ...r.notes,
    ];
    const cells = [
      r.spec.label,
      cellGbit(r, 'tcp1'),
      cellGbit(r, 'tcpN'),
      cellPing(r),
      ...udpSizes.map((s) => cellUdp(r, s)),
      cellCpu(r),
      cellRss(r),
      notes.join('; '),
    ];
    lines.push(`| ${cells.map(escapeMd).join(' | ')} |`);
  }
  return lines.join('\n');
}

/** "tsflanneld TCP 1 stream: 3.1 Gbit/s (0.31× kernel)" lines for every measured non-kernel path. */
export function headlines(results: PathResult[], udpSizes: number[], streams: number): string[] {
  const out: string[] = [];
  const kernelOk = results.some((r) => r.spec.kind === 'kernel' && r.values.tcp1Gbit !== undefined);
  const rel = (x: number | undefined): string => (kernelOk && x !== undefined ? ` (${x.toFixed(2)}× kernel)` : '');
  for (const r of results) {
    if (r.error) {
      out.push(`${r.spec.label}: not measured: ${firstLine(r.error)}`);
      continue;
    }
    const parts: string[] = [];
    if (r.values.tcp1Gbit !== undefined)
      parts.push(`TCP 1 stream ${fmtNum(r.values.tcp1Gbit)} Gbit/s${r.spec.kind === 'kernel' ? '' : rel(r.ratios.tcp1Gbit)}`);
    if (r.values.tcpNGbit !== undefined)
      parts.push(`TCP ${streams} streams ${fmtNum(r.values.tcpNGbit)} Gbit/s${r.spec.kind === 'kernel' ? '' : rel(r.ratios.tcpNGbit)}`);
    if (r.values.pingAvgUs !== undefined)
      parts.push(`ping ${r.values.pingAvgUs.toFixed(0)} µs${r.spec.kind === 'kernel' ? '' : rel(r.ratios.pingAvgUs)}`);
    for (const s of udpSizes) {
      const k = r.values[`udp${s}Kpps`];
      if (k === 0) parts.push(`UDP ${s} B: no trial under the loss limit`);
      else if (k !== undefined) parts.push(`UDP ${s} B ${fmtNum(k)} kpps${r.spec.kind === 'kernel' ? '' : rel(r.ratios[`udp${s}Kpps`])}`);
    }
    if (r.daemonLabels.length > 0) {
      const per = r.daemonLabels.map((_, i) => fmtNum(r.values[`cpuPerGbit${i}`], 2)).join(' + ');
      parts.push(`daemon ${per} core per Gbit/s`);
    }
    out.push(`${r.spec.label}: ${parts.join(', ') || 'no metric succeeded'}`);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// SVG

interface Panel {
  key: string;
  title: string;
  unit: string;
  digits: number;
}

const COLORS: Record<string, string> = {
  underlay: '#8c8c8c',
  kernel: '#1f77b4',
  dataplane: '#9467bd',
  dataplaneRung: '#c5b0d5',
  tsflanneld: '#e6550d',
  rung: '#fd8d3c',
};

function barColor(spec: PathSpec): string {
  if (spec.kind === 'tsflanneld' && spec.rung) return COLORS.rung!;
  if (spec.kind === 'dataplane' && spec.rung) return COLORS.dataplaneRung!;
  return COLORS[spec.kind]!;
}

export function svgChart(results: PathResult[], udpSizes: number[], streams: number, subtitle: string): string {
  const panels: Panel[] = [
    { key: 'tcp1Gbit', title: 'TCP, 1 stream', unit: 'Gbit/s', digits: 3 },
    { key: 'tcpNGbit', title: `TCP, ${streams} streams`, unit: 'Gbit/s', digits: 3 },
    ...udpSizes.map((s) => ({ key: `udp${s}Kpps`, title: `UDP ${s} B packets at < 1 % loss`, unit: 'kpps', digits: 3 })),
    { key: 'pingAvgUs', title: 'ping RTT, mean (lower is better)', unit: 'µs', digits: 3 },
  ];
  if (results.some((r) => r.daemonLabels.length > 0)) {
    panels.push({
      key: 'cpuPerGbitSum',
      title: 'daemon CPU per Gbit/s, tx + rx, TCP 1 stream (lower is better)',
      unit: 'core/(Gbit/s)',
      digits: 2,
    });
  }
  const valueOf = (r: PathResult, key: string): { v?: number; range?: [number, number] } => {
    if (key !== 'cpuPerGbitSum') return { v: r.values[key], range: r.ranges[key] };
    if (r.daemonLabels.length === 0) return {};
    const xs = r.daemonLabels.map((_, i) => r.values[`cpuPerGbit${i}`]);
    if (xs.some((x) => x === undefined)) return {};
    return { v: xs.reduce<number>((s, x) => s + x!, 0) };
  };
  // ~7 px per character of a 12 px label; the value text after a bar needs ~150 px.
  const labelW = Math.max(150, Math.max(...results.map((r) => r.spec.label.length)) * 7 + 10);
  const barX = labelW + 10;
  const barMaxW = 470;
  const W = barX + barMaxW + 160;
  const rowH = 22;
  const top = 56;
  let y = top;
  const parts: string[] = [];
  for (const p of panels) {
    parts.push(`<text x="10" y="${y + 14}" class="title">${escapeXml(p.title)} <tspan class="unit">(${escapeXml(p.unit)})</tspan></text>`);
    y += 24;
    const max = Math.max(
      0,
      ...results.map((r) => {
        const { v, range } = valueOf(r, p.key);
        return Math.max(v ?? 0, range?.[1] ?? 0);
      }),
    );
    for (const r of results) {
      const { v, range } = valueOf(r, p.key);
      parts.push(`<text x="${labelW}" y="${y + 15}" class="label" text-anchor="end">${escapeXml(r.spec.label)}</text>`);
      if (v === undefined) {
        const inKernel = r.spec.kind === 'underlay' || r.spec.kind === 'kernel';
        const why = r.error ? 'not measured (error)' : inKernel && p.key === 'cpuPerGbitSum' ? 'n/a (in kernel)' : 'no result';
        parts.push(`<text x="${barX}" y="${y + 15}" class="${r.error ? 'err' : 'na'}">${why}</text>`);
      } else {
        const w = max > 0 ? (v / max) * barMaxW : 0;
        parts.push(`<rect x="${barX}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${barColor(r.spec)}"/>`);
        if (range && range[1] > range[0] && max > 0) {
          const x0 = barX + (range[0] / max) * barMaxW;
          const x1 = barX + (range[1] / max) * barMaxW;
          const cy = y + rowH / 2;
          parts.push(
            `<path d="M${x0.toFixed(1)} ${cy}H${x1.toFixed(1)}M${x0.toFixed(1)} ${cy - 4}V${cy + 4}M${x1.toFixed(1)} ${cy - 4}V${cy + 4}" class="whisker"/>`,
          );
        }
        const rel = r.spec.kind === 'kernel' || r.ratios[p.key] === undefined ? '' : ` · ${r.ratios[p.key]!.toFixed(2)}× kernel`;
        const textX = barX + Math.max(w, range && max > 0 ? (range[1] / max) * barMaxW : 0) + 6;
        parts.push(`<text x="${textX.toFixed(1)}" y="${y + 15}" class="value">${fmtNum(v, p.digits)}${escapeXml(rel)}</text>`);
      }
      y += rowH;
    }
    y += 14;
  }
  const H = y + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`,
    '<style>.title{font-size:14px;font-weight:bold}.unit{font-weight:normal;fill:#555}.label{font-size:12px}.value{font-size:11px}' +
      '.na{font-size:11px;fill:#777}.err{font-size:11px;fill:#c00}.whisker{stroke:#222;stroke-width:1;fill:none}.sub{font-size:11px;fill:#555}</style>',
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    '<text x="10" y="22" style="font-size:17px;font-weight:bold">tsflanneld vs kernel VXLAN vs underlay (medians; whiskers = min–max)</text>',
    `<text x="10" y="40" class="sub">${escapeXml(subtitle)}</text>`,
    ...parts,
    `<text x="10" y="${H - 8}" class="sub">Colours: grey underlay · blue kernel flannel.1 · purple data plane alone · orange tsflanneld (light shades: forced offload rungs)</text>`,
    '</svg>',
    '',
  ].join('\n');
}

// ------------------------------------------------------------------------------------------------
// machine, RESULTS.md

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return '?';
  }
}

export function machineInfo(underlayMtu: number): MachineInfo {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? '?';
  const mem = /^MemTotal:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return {
    cpuModel: model,
    cpus: os.cpus().length,
    memTotalMiB: mem ? Math.round(Number(mem[1]) / 1024) : 0,
    uname: sh('uname', ['-srvm']),
    node: process.version,
    iperf3: sh('iperf3', ['--version']).split('\n')[0] ?? '?',
    underlayMtu,
    overlayMtu: underlayMtu - 50,
    git: gitState(),
  };
}

function gitState(): MachineInfo['git'] {
  const commit = sh('git', ['-C', REPO, 'rev-parse', '--short=12', 'HEAD']);
  let dirty: string[];
  try {
    // Porcelain lines are "XY path"; no trimming, the status columns may be blank.
    const status = execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'native', 'bin', 'binding.gyp'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    }).toString();
    dirty = status
      .split('\n')
      .filter((l) => l.length > 3)
      .map((l) => l.slice(3));
  } catch {
    dirty = ['(git status failed)'];
  }
  return { commit, dirty };
}

const KEPT_SECTIONS: ReadonlyArray<[string, string]> = [
  ['<!-- analysis:start -->', '<!-- analysis:end -->'],
  ['<!-- soak:start -->', '<!-- soak:end -->'],
  ['<!-- stall:start -->', '<!-- stall:end -->'],
  // bench/route-scale.ts writes its own section; the hand-written notes on it follow it.
  ['<!-- control-plane-scale:begin -->', '<!-- control-plane-scale:end -->'],
  ['<!-- control-plane-notes:start -->', '<!-- control-plane-notes:end -->'],
];
const HISTORY_START = '<!-- history:start -->';
const HISTORY_END = '<!-- history:end -->';

function historyLine(doc: RunDocument, jsonName: string): string {
  const bits = doc.paths.map((r) => {
    if (r.error) return `${r.spec.label}: error`;
    const t = r.values.tcp1Gbit;
    const rel = r.spec.kind !== 'kernel' && r.ratios.tcp1Gbit !== undefined ? ` (${r.ratios.tcp1Gbit.toFixed(2)}×)` : '';
    return `${r.spec.label} ${t !== undefined ? `${fmtNum(t)} Gbit/s${rel}` : '—'}`;
  });
  const code = `${doc.machine.git.commit}${doc.machine.git.dirty.length > 0 ? '+dirty' : ''}`;
  return `- ${doc.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${code}${doc.quick ? ' (quick)' : ''}, TCP 1 stream: ${bits.join('; ')} — \`out/${jsonName}\``;
}

function loadLine(doc: RunDocument): string[] {
  const loads = doc.paths
    .map((r) => (r.loadAvg as number[] | undefined)?.[0]) // absent in documents of older runs
    .filter((x): x is number => typeof x === 'number');
  if (loads.length === 0) return [];
  const busy = Math.max(...loads) > 1.5 ? ' — other work was running: expect more noise than usual' : '';
  return [`- 1-minute load average when the paths started: ${Math.min(...loads)}–${Math.max(...loads)}${busy}`];
}

export function resultsMarkdown(doc: RunDocument, table: string, previous: string | null, jsonName: string, reps: number): string {
  const m = doc.machine;
  let history: string[] = [];
  if (previous) {
    const a = previous.indexOf(HISTORY_START);
    const b = previous.indexOf(HISTORY_END);
    if (a >= 0 && b > a) {
      // A rewrite for the same run (same JSON) replaces its line instead of adding another.
      history = previous
        .slice(a + HISTORY_START.length, b)
        .split('\n')
        .filter((l) => l.startsWith('- ') && !l.includes(`out/${jsonName}`));
    }
  }
  history = [historyLine(doc, jsonName), ...history].slice(0, 30);
  // Marked sections are written by others (bench/soak.ts: the soak run; people: the analysis); keep them.
  const kept: string[] = [];
  for (const [start, end] of KEPT_SECTIONS) {
    const a = previous ? previous.indexOf(start) : -1;
    const b = previous ? previous.indexOf(end) : -1;
    if (previous && a >= 0 && b > a) kept.push(previous.slice(a, b + end.length), '');
  }
  const errors = doc.paths.filter((r) => r.error);
  const o = doc.options as { udpSizes?: number[]; tcpSeconds?: number; udpSeconds?: number; pingCount?: number; pingIntervalSec?: number };
  return [
    '# Benchmark results',
    '',
    'Generated by `npm run bench` (bench/iperf-bench.ts); see bench/README.md for what each metric means.',
    `Latest run: ${doc.startedAt} → ${doc.finishedAt}${doc.quick ? ' (**quick**: 1 repetition, short runs)' : ''}; raw JSON in \`bench/out/${jsonName}\` (not committed).`,
    '',
    '## Machine',
    '',
    `- CPU: ${m.cpuModel}, ${m.cpus} cores; RAM ${m.memTotalMiB} MiB`,
    `- Kernel: \`${m.uname}\``,
    `- Node ${m.node}, ${m.iperf3}`,
    `- Code: commit ${m.git.commit}${m.git.dirty.length > 0 ? ` plus uncommitted changes in ${m.git.dirty.length} file(s) (${m.git.dirty.slice(0, 8).join(', ')}${m.git.dirty.length > 8 ? ', …' : ''})` : ''}`,
    `- Testbed: network namespaces; underlay = veth pairs on a bridge, MTU ${m.underlayMtu}; overlay MTU ${m.overlayMtu}; containers on a cni0 bridge behind each host`,
    '- iperf3 client, server and both daemons share all cores: compare ratios within one run, not absolute figures across runs.',
    ...loadLine(doc),
    '',
    `## Results (median of ${reps}${reps > 1 ? '' : ' — no median'})`,
    '',
    `TCP: iperf3 ${o.tcpSeconds ?? '?'} s, container → container (underlay: host → host). ping: ${o.pingCount ?? '?'} probes every ${o.pingIntervalSec ?? '?'} s.` +
      ` UDP: highest received packet rate with loss < 1 % (binary search on iperf3 -b, ${o.udpSeconds ?? '?'} s trials); sizes are inner IPv4 packet sizes.` +
      ' Ratios in parentheses are to kernel VXLAN. ‡ = the unlimited iperf3 sender already stayed under 1 % loss (sender-bound).',
    '',
    table,
    '',
    '![bar chart](results-latest.svg)',
    '',
    ...(errors.length > 0
      ? [
          '## Paths that could not be measured',
          '',
          ...errors.flatMap((r) => [`### ${r.spec.label}`, '', '```', r.error!.trim(), '```', '']),
        ]
      : []),
    ...kept,
    '## History',
    '',
    HISTORY_START,
    ...history,
    HISTORY_END,
    '',
  ].join('\n');
}
