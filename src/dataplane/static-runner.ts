// Runs the VXLAN data plane alone with a fixed peer table, for integration tests, benchmarks and
// debugging without etcd: `node dist/src/dataplane/static-runner.js '<json config>'`.
// Config: { tunName?, vni, port?, localMac: "aa:bb:…", persist?, offload?, vnetHdr?, sendSockets?, mtu?,
//           txQueueLen?, budget?, peers: [{ subnet: "10.5.2.0/24", publicIp: "192.0.2.12", vtepMac: "…" }] }
// offload: an offload rung or "auto"; when absent, FLANNELD_OFFLOAD from the environment (as the daemon's
// -offload flag reads it), else auto. The ready event reports the rung in force.
// stdout gets one JSON object per line: {"event":"ready",…} once the TUN is open and forwarding,
// {"event":"counters",…} on SIGUSR2, on a {"op":"counters"} stdin line and at exit (SIGTERM/SIGINT).
// stdin lines may also be {"op":"setPeer",peer} / {"op":"removePeer","subnet":…}. Logs go to stderr.
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

function main(): void {
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
    emit({ event: 'counters', counters: dp.counters() });
    dp.close();
    process.stdin.destroy();
  }

  process.on('SIGUSR2', () => emit({ event: 'counters', counters: dp.counters() }));
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    try {
      const cmd = JSON.parse(line) as { op: string; peer?: PeerJson; subnet?: string };
      if (cmd.op === 'counters') emit({ event: 'counters', counters: dp.counters() });
      else if (cmd.op === 'setPeer' && cmd.peer) dp.setPeer(toPeer(cmd.peer));
      else if (cmd.op === 'removePeer' && cmd.subnet) dp.removePeer(parseIp4Net(cmd.subnet));
      else throw new RunnerConfigError(`unknown command ${line}`);
      emit({ event: 'ok', op: cmd.op });
    } catch (err) {
      emit({ event: 'error', message: (err as Error).message });
    }
  });
  emit({
    event: 'ready',
    tunName: dp.tunName,
    tunIfindex: dp.tunIfindex,
    sourcePorts: dp.sourcePorts,
    offloadRung: dp.offloadRung,
    pid: process.pid,
  });
}

try {
  main();
} catch (err) {
  process.stderr.write(`static-runner: ${(err as Error).message}\n`);
  process.exit(1);
}
