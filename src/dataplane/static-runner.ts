// Runs the VXLAN data plane alone with a fixed peer table, for integration tests, benchmarks and
// debugging without etcd: `node dist/src/dataplane/static-runner.js '<json config>'`.
// Config: { tunName?, vni, port?, localMac: "aa:bb:…", persist?, offload?, vnetHdr?, sendSockets?, mtu?,
//           txQueueLen?, budget?, threads?, peers: [{ subnet: "10.5.2.0/24", publicIp: "192.0.2.12", vtepMac: "…" }] }
// threads: forwarding threads; when absent, FLANNELD_DATAPLANE_THREADS, else the default (CPU count, ≤ 8).
// The counters event also carries `threads`: each forwarding thread's own counters.
// offload: an offload rung or "auto"; when absent, FLANNELD_OFFLOAD from the environment (as the daemon's
// -offload flag reads it), else auto. The ready event reports the rung in force.
// stdout gets one JSON object per line: {"event":"ready",…} once the TUN is open and forwarding,
// {"event":"counters",…} on SIGUSR2, on a {"op":"counters"} stdin line and at exit (SIGTERM/SIGINT).
// stdin lines may also be {"op":"setPeer",peer} / {"op":"removePeer","subnet":…} / {"op":"terminateThread",
// "index":…} (kills a forwarding thread as a crash would: the runner then reports "fatal" and exits 1).
// Logs go to stderr.
import readline from 'node:readline';

import pino from 'pino';

import { parseIp4, parseIp4Net } from '../subnet/ip4';
import type { PeerEntry } from './forwarding-table';
import { parseOffloadRequest } from './offload';
import { VxlanDataplane } from './vxlan-dataplane';
import { parseMac } from '../subnet/lease-codec';

interface PeerJson {
  subnet: string;
  publicIp: string;
  vtepMac: string;
}

interface RunnerConfig {
  tunName?: string;
  vni: number;
  port?: number;
  localMac: string;
  persist?: boolean;
  offload?: string;
  vnetHdr?: boolean;
  sendSockets?: number;
  /** Inner MTU (default: the TUN's MTU at start, i.e. before the caller configured it). */
  mtu?: number;
  txQueueLen?: number;
  budget?: number;
  threads?: number;
  peers?: PeerJson[];
}

class RunnerConfigError extends Error {
  override name = 'RunnerConfigError';
}

function toPeer(p: PeerJson): PeerEntry {
  return { subnet: parseIp4Net(p.subnet), publicIp: parseIp4(p.publicIp), vtepMac: parseMac(p.vtepMac) };
}

function emit(obj: object): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main(): Promise<void> {
  const log = pino({ name: 'dataplane-runner' }, pino.destination(2));
  const text = process.argv[2];
  if (text === undefined) throw new RunnerConfigError('usage: static-runner.js <json config>');
  const cfg = JSON.parse(text) as RunnerConfig;
  const dp = VxlanDataplane.open({
    tunName: cfg.tunName,
    vni: cfg.vni,
    port: cfg.port,
    localMac: parseMac(cfg.localMac),
    persist: cfg.persist,
    offload: parseOffloadRequest(cfg.offload ?? process.env.FLANNELD_OFFLOAD ?? 'auto'),
    vnetHdr: cfg.vnetHdr,
    sendSockets: cfg.sendSockets,
    mtu: cfg.mtu,
    txQueueLen: cfg.txQueueLen,
    budget: cfg.budget,
    threads: cfg.threads ?? (process.env.FLANNELD_DATAPLANE_THREADS ? Number(process.env.FLANNELD_DATAPLANE_THREADS) : undefined),
    log,
    onFatal: (err) => {
      emit({ event: 'fatal', message: err.message });
      process.exitCode = 1;
      shutdown();
    },
  });
  for (const p of cfg.peers ?? []) dp.setPeer(toPeer(p));
  dp.start();

  let done = false;
  function shutdown(): void {
    if (done) return;
    done = true;
    emitCounters();
    dp.close();
    process.stdin.destroy();
  }

  function emitCounters(): void {
    emit({ event: 'counters', counters: dp.counters(), threads: dp.threadCounters() });
  }
  process.on('SIGUSR2', emitCounters);
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    try {
      const cmd = JSON.parse(line) as { op: string; peer?: PeerJson; subnet?: string; index?: number };
      if (cmd.op === 'counters') emitCounters();
      else if (cmd.op === 'setPeer' && cmd.peer) dp.setPeer(toPeer(cmd.peer));
      else if (cmd.op === 'removePeer' && cmd.subnet) dp.removePeer(parseIp4Net(cmd.subnet));
      else if (cmd.op === 'terminateThread' && typeof cmd.index === 'number') dp.terminateThread(cmd.index);
      else throw new RunnerConfigError(`unknown command ${line}`);
      // "ok" once the change is what the forwarding threads read.
      dp.whenPublished().then(
        () => emit({ event: 'ok', op: cmd.op }),
        (err: unknown) => emit({ event: 'error', message: (err as Error).message }),
      );
    } catch (err) {
      emit({ event: 'error', message: (err as Error).message });
    }
  });
  await dp.whenRunning();
  emit({
    event: 'ready',
    threads: dp.threadCount,
    tunName: dp.tunName,
    tunIfindex: dp.tunIfindex,
    sourcePorts: dp.sourcePorts,
    offloadRung: dp.offloadRung,
    pid: process.pid,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`static-runner: ${(err as Error).message}\n`);
  process.exit(1);
});
