// One forwarding thread (a worker_threads Worker started by forwarding-threads.ts). It reads one TUN queue
// and one SO_REUSEPORT receive socket, sends on the send sockets all threads share (the inner flow hash
// picks one, so a flow keeps its outer source port whichever thread reads it), owns its two rings, and
// runs the PacketLoop between
// blocking epoll waits on those fds plus the control eventfd. It never returns to its own event loop
// while forwarding: control messages (MTU, pause, exit) are read synchronously with receiveMessageOnPort
// after the eventfd rang, and the shared peer table's reader is refreshed after every wake-up, between
// batches (the eventfd also rings when a table publish waits for this thread). Nothing on the main thread (etcd, routes,
// logging, HTTP) can delay a packet here. See docs/HACKING.md ("Forwarding threads").
import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';

import { Ring, type RingOptions } from './buffer-pool';
import { type CounterBuffers, Counters } from './counters';
import { type ForwardingTableHandle, ForwardingTableReader } from './forwarding-table';
import { loadDataplaneNative } from './native';
import type { OffloadFeatures } from './offload';
import { PacketLoop } from './packet-loop';

/** What every forwarding thread's PacketLoop is built from (the same for all threads of a data plane). */
export interface LoopSettings {
  readonly tunName: string;
  readonly txRing: RingOptions;
  readonly rxRing: RingOptions;
  readonly vni: number;
  readonly udpPort: number;
  readonly localMac: Uint8Array;
  readonly vnetHdr: boolean;
  readonly repairChecksums: boolean;
  readonly budget: number;
  readonly maxPacket: number;
  readonly offload: OffloadFeatures;
  /** See PacketLoopConfig.strictSource. */
  readonly strictSource: boolean;
  /** Nice value of the thread (-20..19); null = the process's. */
  readonly nice: number | null;
  /** The peer table (shared banks); each thread attaches a reader. */
  readonly table: ForwardingTableHandle;
}

/** workerData of a forwarding thread. */
export interface ForwardingThreadConfig extends LoopSettings {
  readonly index: number;
  readonly port: MessagePort;
  readonly tunFd: number;
  readonly recvFd: number;
  readonly sendFds: readonly number[];
  /** Control eventfd (owned by the main thread, which rings it after posting on `port`). */
  readonly ctlFd: number;
  readonly counters: CounterBuffers;
  /** Int32 words, see ThreadState. */
  readonly state: SharedArrayBuffer;
  /** Forward from the start (else wait for a `run` message). */
  readonly running: boolean;
}

/** Words of a thread's shared state (Int32Array over ForwardingThreadConfig.state). */
export const enum ThreadState {
  /** ThreadPhase below; the main thread Atomics.waits on it when closing. */
  PHASE = 0,
  /** Generation of the peer table the thread read last. */
  TABLE_GEN = 1,
  WORDS = 2,
}

export const enum ThreadPhase {
  BOOTING = 0,
  RUNNING = 1,
  /** Left its loop (its fds are no longer used). */
  EXITED = 2,
}

/** Main → thread, on the MessagePort (then the eventfd rings). */
export type ThreadControl = { op: 'mtu'; mtu: number } | { op: 'run'; on: boolean } | { op: 'exit' };

/** Thread → main, on parentPort. */
export type ThreadReport =
  | { type: 'running'; index: number }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; obj: Record<string, unknown>; msg: string }
  | { type: 'gsoRefused'; index: number }
  | { type: 'tunGsoRefused'; index: number }
  | { type: 'sourceLearned'; index: number; src: number; slot: number }
  | { type: 'fatal'; index: number; direction: string; errno: number; message: string };

// Transient errnos from a read that are worth a log line but not a stop (ENOMEM under pressure, etc.).
const TRANSIENT_ERRNOS = new Set([12 /* ENOMEM */, 105 /* ENOBUFS */, 111 /* ECONNREFUSED */, 113 /* EHOSTUNREACH */]);

function describeErrno(errno: number): string {
  const known = getSystemErrorMap().get(-errno);
  if (known !== undefined) return `${known[1]} (${known[0]})`;
  // libuv's map lacks some (EBADFD: the TUN device was deleted under us); the kernel's name still helps.
  const name = Object.entries(osConstants.errno).find(([, v]) => v === errno)?.[0];
  return `${name ?? 'unknown error'} (errno ${errno})`;
}

function run(config: ForwardingThreadConfig): void {
  const report = (r: ThreadReport): void => parentPort!.postMessage(r);
  const native = loadDataplaneNative();
  const state = new Int32Array(config.state);
  const tx = new Ring(config.txRing);
  const rx = new Ring(config.rxRing);
  tx.register(native);
  rx.register(native);
  const counters = new Counters(0, config.counters);
  const table = ForwardingTableReader.attach(config.table);
  const loggedErrnos = new Set<string>();
  // Set from callbacks (onIoError, control()): typed wide so the loop condition is not narrowed away.
  let fatal = false as boolean;
  const where = { tun: config.tunName, thread: config.index };

  const loop = new PacketLoop({
    io: native,
    table,
    counters,
    tx,
    rx,
    tunFd: config.tunFd,
    recvFd: config.recvFd,
    sendFds: Int32Array.from(config.sendFds),
    port: config.udpPort,
    vni: config.vni,
    localMac: config.localMac,
    vnetHdr: config.vnetHdr,
    repairChecksums: config.repairChecksums,
    budget: config.budget,
    maxPacket: config.maxPacket,
    offload: config.offload,
    onGsoRefused: () => report({ type: 'gsoRefused', index: config.index }),
    onTunGsoRefused: () => report({ type: 'tunGsoRefused', index: config.index }),
    strictSource: config.strictSource,
    onSourceLearned: (src, slot) => report({ type: 'sourceLearned', index: config.index, src, slot }),
    onIoError: (direction, errno) => {
      const what = direction === 'tun' ? `read TUN ${config.tunName} queue ${config.index}` : `receive UDP 0.0.0.0:${config.udpPort}`;
      const message = `${what}: ${describeErrno(errno)}`;
      if (TRANSIENT_ERRNOS.has(errno)) {
        const key = `${direction}:${errno}`;
        if (!loggedErrnos.has(key)) {
          loggedErrnos.add(key);
          report({
            type: 'log',
            level: 'warn',
            obj: { ...where, direction, errno },
            msg: `${message} (transient; further occurrences only counted)`,
          });
        }
        return;
      }
      // A persistent error would make the level-triggered wait fire forever: stop instead of spinning.
      fatal = true;
      report({ type: 'fatal', index: config.index, direction, errno, message: `${message}; forwarding thread ${config.index} stopped` });
    },
  });

  let running: boolean = config.running;
  let exit = false as boolean;
  /** Applies every queued control message; between batches only. → whether to forward now. */
  const control = (): boolean => {
    native.eventfdDrain(config.ctlFd);
    for (let m = receiveMessageOnPort(config.port); m !== undefined; m = receiveMessageOnPort(config.port)) {
      const c = m.message as ThreadControl;
      if (c.op === 'mtu') {
        loop.maxPacket = c.mtu;
      } else if (c.op === 'run') {
        running = c.on;
      } else {
        exit = true;
      }
    }
    return running && !exit;
  };
  /** Whether a callback of the loop reported a fatal error (read after each direction). */
  const failed = (): boolean => fatal;

  if (config.nice !== null) {
    const errno = native.threadSetNice(config.nice);
    if (errno !== 0) {
      report({
        type: 'log',
        level: 'warn',
        obj: { ...where, nice: config.nice, errno },
        msg: `forwarding thread ${config.index}: cannot set nice ${config.nice}: ${describeErrno(errno)}; forwarding at normal priority`,
      });
    }
  }
  const epAll = native.epollOpen(Int32Array.of(config.tunFd, config.recvFd, config.ctlFd));
  const epCtl = native.epollOpen(Int32Array.of(config.ctlFd));
  Atomics.store(state, ThreadState.PHASE, ThreadPhase.RUNNING);
  report({ type: 'running', index: config.index });
  try {
    while (!exit && !fatal) {
      // Idle while blocked, so a table publish never waits for this thread; refresh before any batch.
      table.idle();
      // Stopped threads wait on the control eventfd alone (its bit is 1 there, 4 in the full set).
      const all = running;
      const ready = native.epollWait(all ? epAll : epCtl, -1);
      if (ready < 0) {
        fatal = true;
        report({
          type: 'fatal',
          index: config.index,
          direction: 'epoll',
          errno: -ready,
          message: `epoll_wait: ${describeErrno(-ready)}`,
        });
        break;
      }
      if (!all) {
        if ((ready & 1) !== 0) control();
        continue;
      }
      if ((ready & 4) !== 0 && !control()) continue;
      if (table.refresh()) Atomics.store(state, ThreadState.TABLE_GEN, table.generation);
      if ((ready & 1) !== 0) loop.egress();
      if ((ready & 2) !== 0 && !failed()) loop.ingress();
    }
  } finally {
    // The main thread waits for EXITED before it closes the TUN queue and sockets.
    table.detach();
    tx.release(native);
    rx.release(native);
    const errors: string[] = [];
    for (const fd of [epAll, epCtl]) {
      try {
        native.closeFd(fd);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    if (errors.length > 0) report({ type: 'log', level: 'warn', obj: { ...where, errors }, msg: 'closing forwarding-thread fds failed' });
    Atomics.store(state, ThreadState.PHASE, ThreadPhase.EXITED);
    Atomics.notify(state, ThreadState.PHASE);
    config.port.close();
  }
}

if (parentPort !== null && workerData !== null && typeof workerData === 'object' && 'ctlFd' in workerData) {
  run(workerData as ForwardingThreadConfig);
}
