// Measurements between two namespaces: iperf3 TCP (1 and N streams) with daemon CPU sampled from
// /proc during the run, ping RTT distribution, and the highest UDP packet rate under a loss limit
// (binary search on iperf3 -u -b). One call of measureRepetition = one repetition of every metric;
// each metric fails on its own (the error is recorded and the others still run).
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { iperf3Server, type Iperf3Server, type NsNode } from '../netns-fixtures/testbed';
import {
  diffCounters,
  median,
  parsePingCounts,
  parsePingTimes,
  parseProcStatTicks,
  parseProcStatusKb,
  parseSnmp,
  percentile,
  mean,
} from './iperf-bench-stats';

export interface MeasureOptions {
  tcpSeconds: number;
  tcpStreams: number;
  pingCount: number;
  pingIntervalSec: number;
  udpSeconds: number;
  /** Bisection steps after the unlimited probe. */
  udpSteps: number;
  /** Loss limit in percent (exclusive). */
  udpMaxLossPercent: number;
  /** Inner IPv4 packet sizes to measure, e.g. [1350, 64]. */
  udpSizes: number[];
  /** iperf3 -w for UDP trials (socket buffers on both ends), e.g. "4M"; empty = iperf3's default. */
  udpWindow: string;
  log(msg: string): void;
  /** Called with the daemons' pids while a 1-stream TCP run is in steady state (e.g. to run perf). */
  onTcpSteadyState?(seconds: number): Promise<void>;
}

/** A daemon process whose CPU and memory are sampled (pid in the root pid namespace). */
export interface DaemonProc {
  /** "h1 (sender)" etc. */
  label: string;
  pid: number;
}

export interface DaemonUsage {
  label: string;
  /** CPU cores used during the sampled window (utime+stime / wall time). */
  cores: number;
  rssBytes?: number;
  hwmBytes?: number;
}

export interface TcpResult {
  streams: number;
  gbit: number;
  retransmits: number;
  seconds: number;
  daemons: DaemonUsage[];
  /** iperf3's own view of its CPU use (percent of one core, sender and receiver). */
  iperfCpu?: { local: number; remote: number };
}

export interface PingStats {
  sent: number;
  received: number;
  avgUs?: number;
  p50Us?: number;
  p99Us?: number;
  minUs?: number;
  maxUs?: number;
}

export interface UdpTrial {
  targetPps: number; // 0 = unlimited
  sentPps: number;
  recvPps: number;
  lossPercent: number;
}

export interface UdpSearch {
  /** Inner IPv4 packet size (IP + UDP + payload). */
  packetSize: number;
  /** iperf3 -l. */
  payload: number;
  /** Received packets/s of the fastest trial under the loss limit; 0 if none passed. */
  pps: number;
  lossPercent?: number;
  /** The unlimited probe itself stayed under the loss limit: the iperf3 sender was the bottleneck. */
  senderBound: boolean;
  trials: UdpTrial[];
}

export interface Repetition {
  tcp1?: TcpResult;
  tcpN?: TcpResult;
  ping?: PingStats;
  udp: Record<string, UdpSearch>;
  /** metric → error message. */
  errors: Record<string, string>;
  /** Per host: drop counters (UDP socket errors, overlay device drops) accumulated over the repetition. */
  drops?: Record<string, Record<string, number>>;
  /** Per daemon: increase of its data-plane counters (packets, drops by reason, …) over the repetition. */
  daemonCounters?: Record<string, Record<string, number>>;
}

export interface Endpoints {
  client: NsNode;
  server: NsNode;
  serverIp: string;
  /** Daemons to sample (sender side first); empty for kernel paths. */
  daemons: DaemonProc[];
  /** Hosts whose drop counters are recorded, with their overlay device if any. */
  dropWatch: Array<{ node: NsNode; dev?: string }>;
  /** Daemons whose data-plane counters can be read (flat name → value), sender first. */
  counters?: Array<{ label: string; read(): Promise<Record<string, number>> }>;
}

const IPV4_UDP_HEADERS = 28;
const SERVER_PORT = 5201;

let clkTck: number | null = null;
function clockTicks(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function cpuTicks(pid: number): number {
  return parseProcStatTicks(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

function memOf(pid: number): { rssBytes?: number; hwmBytes?: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssBytes: parseProcStatusKb(status, 'VmRSS'), hwmBytes: parseProcStatusKb(status, 'VmHWM') };
}

/** Samples CPU ticks of the daemons now; the returned function gives usage since then. */
function startCpuWindow(daemons: DaemonProc[]): () => DaemonUsage[] {
  const t0 = process.hrtime.bigint();
  const ticks0 = daemons.map((d) => cpuTicks(d.pid));
  return () => {
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    return daemons.map((d, i) => ({
      label: d.label,
      cores: (cpuTicks(d.pid) - ticks0[i]!) / clockTicks() / wall,
      ...memOf(d.pid),
    }));
  };
}

// ------------------------------------------------------------------------------------------------
// iperf3

interface IperfSum {
  seconds: number;
  bytes: number;
  bits_per_second: number;
  retransmits?: number;
  packets?: number;
  lost_packets?: number;
  lost_percent?: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum?: IperfSum;
    sum_sent?: IperfSum;
    sum_received?: IperfSum;
    cpu_utilization_percent?: { host_total: number; remote_total: number };
  };
}

/** One iperf3 server per path, restarted when a client run failed (a dead client can wedge it). */
export class IperfServerHandle {
  private server: Iperf3Server | null = null;
  constructor(private readonly node: NsNode) {}

  async ensure(): Promise<void> {
    if (!this.server) this.server = await iperf3Server(this.node, { port: SERVER_PORT });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.ensure();
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await s.stop();
  }
}

async function iperf3(ep: Endpoints, server: IperfServerHandle, args: string[], seconds: number): Promise<IperfJson> {
  await server.ensure();
  const cmd = ['iperf3', '-J', '-c', ep.serverIp, '-p', String(SERVER_PORT), '-t', String(seconds), '--connect-timeout', '5000', ...args];
  const res = await ep.client.exec(cmd, { allowFail: true, timeoutMs: seconds * 1000 + 30000 }).catch((e: unknown) => {
    return { code: -1, stdout: '', stderr: e instanceof Error ? e.message : String(e) };
  });
  let json: IperfJson | null;
  try {
    json = JSON.parse(res.stdout) as IperfJson;
  } catch {
    json = null;
  }
  if (!json || json.error || res.code !== 0) {
    await server.restart().catch(() => undefined);
    const why = json?.error ?? (res.stderr || res.stdout).trim().slice(0, 300);
    throw new Error(`iperf3 ${args.join(' ')}: ${why || `exit ${res.code}`}`);
  }
  return json;
}

export async function measureTcp(ep: Endpoints, server: IperfServerHandle, streams: number, opts: MeasureOptions): Promise<TcpResult> {
  const seconds = opts.tcpSeconds;
  const run = iperf3(ep, server, ['-P', String(streams)], seconds);
  // Sample the daemons in steady state: skip connection setup and the last half second.
  let daemons: DaemonUsage[] = [];
  let sampleErr = null as Error | null; // set by the sampler below
  const sampling = (async () => {
    if (ep.daemons.length === 0) return;
    await sleep(500);
    const window = seconds > 2 ? seconds - 1 : seconds / 2;
    try {
      const stop = startCpuWindow(ep.daemons);
      const extra = streams === 1 && opts.onTcpSteadyState ? opts.onTcpSteadyState(window) : Promise.resolve();
      await sleep(window * 1000);
      daemons = stop();
      await extra;
    } catch (e) {
      sampleErr = e as Error;
    }
  })();
  const [json] = await Promise.all([run, sampling]);
  if (sampleErr) throw new Error(`sampling daemon CPU: ${sampleErr.message}`);
  const sent = json.end?.sum_sent;
  const recv = json.end?.sum_received;
  if (!sent || !recv) throw new Error('iperf3 TCP result without end sums');
  const cpu = json.end?.cpu_utilization_percent;
  return {
    streams,
    gbit: recv.bits_per_second / 1e9,
    retransmits: sent.retransmits ?? 0,
    seconds: recv.seconds,
    daemons,
    ...(cpu ? { iperfCpu: { local: cpu.host_total, remote: cpu.remote_total } } : {}),
  };
}

async function udpTrial(
  ep: Endpoints,
  server: IperfServerHandle,
  payload: number,
  targetPps: number,
  opts: MeasureOptions,
): Promise<UdpTrial> {
  const bitrate = targetPps === 0 ? '0' : String(Math.round(targetPps * payload * 8));
  const args = ['-u', '-l', String(payload), '-b', bitrate];
  if (opts.udpWindow) args.push('-w', opts.udpWindow);
  const json = await iperf3(ep, server, args, opts.udpSeconds);
  const sent = json.end?.sum_sent;
  const recv = json.end?.sum_received;
  if (!sent || !recv || sent.packets === undefined || recv.packets === undefined)
    throw new Error('iperf3 UDP result without packet counts');
  const received = recv.packets - (recv.lost_packets ?? 0);
  return {
    targetPps,
    sentPps: sent.packets / sent.seconds,
    recvPps: received / recv.seconds,
    lossPercent: recv.lost_percent ?? (recv.packets > 0 ? ((recv.lost_packets ?? 0) / recv.packets) * 100 : 100),
  };
}

/**
 * Highest received packet rate with loss under the limit. An unlimited probe (-b 0) gives the
 * ceiling; if it already passes, the iperf3 sender is the bottleneck. Otherwise bisect between
 * 0 and the probe's send rate, starting at the rate that got through the unlimited probe.
 */
export async function measureUdp(ep: Endpoints, server: IperfServerHandle, packetSize: number, opts: MeasureOptions): Promise<UdpSearch> {
  const payload = packetSize - IPV4_UDP_HEADERS;
  const pass = (t: UdpTrial): boolean => t.lossPercent < opts.udpMaxLossPercent && t.recvPps > 0;
  const trials: UdpTrial[] = [];
  const probe = await udpTrial(ep, server, payload, 0, opts);
  trials.push(probe);
  let best: UdpTrial | null = pass(probe) ? probe : null;
  if (!best) {
    let lo = 0;
    let hi = probe.sentPps;
    let next = probe.recvPps > 0 ? Math.min(probe.recvPps, hi * 0.95) : hi / 2;
    for (let step = 0; step < opts.udpSteps && hi > 0; step++) {
      if (next < 1000) next = Math.min(1000, hi / 2); // below 1 kpps the answer is "doesn't forward"
      const t = await udpTrial(ep, server, payload, Math.round(next), opts);
      trials.push(t);
      if (pass(t)) {
        if (!best || t.recvPps > best.recvPps) best = t;
        lo = next;
      } else {
        hi = next;
      }
      if (hi - lo < hi * 0.03) break;
      next = (lo + hi) / 2;
    }
  }
  return {
    packetSize,
    payload,
    pps: best ? best.recvPps : 0,
    ...(best ? { lossPercent: best.lossPercent } : {}),
    senderBound: best === probe,
    trials,
  };
}

export async function measurePing(ep: Endpoints, opts: MeasureOptions): Promise<PingStats> {
  const count = opts.pingCount;
  const cmd = ['ping', '-n', '-c', String(count), '-i', String(opts.pingIntervalSec), '-W', '1', ep.serverIp];
  const res = await ep.client.exec(cmd, { allowFail: true, timeoutMs: count * opts.pingIntervalSec * 1000 + 15000 });
  const counts = parsePingCounts(res.stdout);
  if (!counts) throw new Error(`ping ${ep.serverIp}: ${(res.stderr || res.stdout).trim().slice(0, 300)}`);
  const us = parsePingTimes(res.stdout).map((ms) => ms * 1000);
  if (us.length === 0) throw new Error(`ping ${ep.serverIp}: no replies (${counts.sent} sent)`);
  return {
    sent: counts.sent,
    received: counts.received,
    avgUs: mean(us),
    p50Us: median(us),
    p99Us: percentile(us, 99),
    minUs: Math.min(...us),
    maxUs: Math.max(...us),
  };
}

/** Waits until one ping gets through; false after timeoutMs. */
export async function waitConnectivity(ep: Endpoints, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await ep.client
      .exec(['ping', '-n', '-c', '1', '-W', '1', ep.serverIp], { allowFail: true, timeoutMs: 5000 })
      .catch(() => null);
    if (res && res.code === 0) return true;
  }
  return false;
}

// ------------------------------------------------------------------------------------------------
// drop counters

async function readDrops(node: NsNode, dev?: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const snmp = await node.exec(['cat', '/proc/net/snmp'], { allowFail: true });
  const udp = parseSnmp(snmp.stdout, 'Udp');
  for (const k of ['RcvbufErrors', 'SndbufErrors', 'InErrors', 'NoPorts']) if (k in udp) out[`udp${k}`] = udp[k]!;
  if (dev) {
    const link = await node.exec(['ip', '-j', '-s', 'link', 'show', 'dev', dev], { allowFail: true });
    try {
      const j = JSON.parse(link.stdout) as Array<{
        stats64?: { rx?: { dropped: number; errors: number }; tx?: { dropped: number; errors: number } };
      }>;
      const s = j[0]?.stats64;
      if (s?.rx) {
        out.devRxDropped = s.rx.dropped;
        out.devRxErrors = s.rx.errors;
      }
      if (s?.tx) {
        out.devTxDropped = s.tx.dropped;
        out.devTxErrors = s.tx.errors;
      }
    } catch {
      // device gone or no JSON: leave the device counters out
    }
  }
  return out;
}

async function snapshotDrops(ep: Endpoints): Promise<Array<Record<string, number>>> {
  return Promise.all(ep.dropWatch.map((w) => readDrops(w.node, w.dev)));
}

// ------------------------------------------------------------------------------------------------

/** One repetition of every metric. */
export async function measureRepetition(ep: Endpoints, server: IperfServerHandle, opts: MeasureOptions): Promise<Repetition> {
  const rep: Repetition = { udp: {}, errors: {} };
  const before = await snapshotDrops(ep).catch(() => null);
  const countersBefore = await snapshotDaemonCounters(ep);
  const step = async (name: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      rep.errors[name] = (e as Error).message;
      opts.log(`    ${name}: ERROR ${(e as Error).message}`);
    }
  };
  await step('ping', async () => {
    rep.ping = await measurePing(ep, opts);
    opts.log(
      `    ping: avg ${rep.ping.avgUs?.toFixed(0)} µs, p99 ${rep.ping.p99Us?.toFixed(0)} µs (${rep.ping.received}/${rep.ping.sent})`,
    );
  });
  await step('tcp1', async () => {
    rep.tcp1 = await measureTcp(ep, server, 1, opts);
    opts.log(`    TCP 1 stream: ${rep.tcp1.gbit.toFixed(2)} Gbit/s, ${rep.tcp1.retransmits} retr${cpuText(rep.tcp1)}`);
  });
  await step('tcpN', async () => {
    rep.tcpN = await measureTcp(ep, server, opts.tcpStreams, opts);
    opts.log(`    TCP ${opts.tcpStreams} streams: ${rep.tcpN.gbit.toFixed(2)} Gbit/s, ${rep.tcpN.retransmits} retr${cpuText(rep.tcpN)}`);
  });
  for (const size of opts.udpSizes) {
    await step(`udp${size}`, async () => {
      const r = await measureUdp(ep, server, size, opts);
      rep.udp[String(size)] = r;
      const how = r.senderBound ? ' (sender-bound)' : '';
      const last = r.trials[r.trials.length - 1]!;
      opts.log(
        r.pps > 0
          ? `    UDP ${size} B: ${(r.pps / 1000).toFixed(1)} kpps at ${r.lossPercent?.toFixed(2)} % loss${how}, ${r.trials.length} trials`
          : `    UDP ${size} B: no trial under ${opts.udpMaxLossPercent} % loss (last: ${(last.recvPps / 1000).toFixed(1)} kpps received, ${last.lossPercent.toFixed(1)} % lost), ${r.trials.length} trials`,
      );
    });
  }
  const after = await snapshotDrops(ep).catch(() => null);
  if (before && after) {
    rep.drops = {};
    ep.dropWatch.forEach((w, i) => (rep.drops![w.node.name] = diffCounters(before[i]!, after[i]!)));
  }
  const countersAfter = await snapshotDaemonCounters(ep);
  if (countersBefore && countersAfter) {
    rep.daemonCounters = {};
    ep.counters!.forEach((c, i) => {
      const d = diffCounters(countersBefore[i]!, countersAfter[i]!);
      rep.daemonCounters![c.label] = d;
      const drops = Object.entries(d).filter(([k, v]) => /drop/i.test(k) && v > 0);
      if (drops.length > 0) opts.log(`    ${c.label} data-plane drops: ${drops.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    });
  }
  return rep;
}

async function snapshotDaemonCounters(ep: Endpoints): Promise<Array<Record<string, number>> | null> {
  if (!ep.counters || ep.counters.length === 0) return null;
  try {
    return await Promise.all(ep.counters.map((c) => c.read()));
  } catch {
    return null; // counters unreachable: they are optional
  }
}

function cpuText(r: TcpResult): string {
  if (r.daemons.length === 0) return '';
  const parts = r.daemons.map((d) => `${d.label} ${d.cores.toFixed(2)}`);
  return `; daemon cores ${parts.join(', ')}`;
}
