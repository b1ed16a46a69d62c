// The main thread's side of the forwarding threads: starts one Worker per TUN queue (forwarding-thread.ts),
// hands them the shared peer table, sums their shared counters on scrape, and turns a thread that
// dies into one fatal, logged error. The main thread never touches a packet.
//
// How a change reaches a thread: setPeer/removePeer on the main thread's ForwardingTable (one batch per
// synchronous run) → the table publishes a new generation in its shared banks → each thread's
// ForwardingTableReader moves to it at its next refresh(), which the thread calls after every wake-up,
// before its batches (and idle() before it blocks). If a thread still holds the previous generation the
// table rings the threads' eventfds (wake()) and publishes a moment later. No locks on the packet path.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';

import { type CounterBuffers, Counters, PeerCtr, sharedCounterBuffers } from './counters';
import type { Log } from '../ops/log';
import {
  type ForwardingThreadConfig,
  type LoopSettings,
  type ThreadControl,
  ThreadPhase,
  type ThreadReport,
  ThreadState,
} from './forwarding-thread';
import type { DataplaneNative } from './native';

/** Default forwarding threads: one per CPU this process may use, at most 8. */
export function defaultDataplaneThreads(): number {
  return Math.max(1, Math.min(availableParallelism(), 8));
}

export const MAX_DATAPLANE_THREADS = 64;

/** A forwarding thread died (threw, exited or was terminated). */
export class ForwardingThreadError extends Error {
  override name = 'ForwardingThreadError';
}

/** A forwarding thread stopped on a persistent I/O error (errno: the read's error number). */
export class DataplaneIoError extends Error {
  override name = 'DataplaneIoError';
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

/** The fds of one thread (opened by the caller, closed by close(); sendFds are the same for every thread). */
export interface ThreadFds {
  readonly tunFd: number;
  readonly recvFd: number;
  readonly sendFds: readonly number[];
}

export interface ForwardingThreadsOptions extends LoopSettings {
  readonly native: DataplaneNative;
  readonly log: Log;
  readonly threads: readonly ThreadFds[];
  /** A thread accepted an outer source that is not the peer's PublicIP (once per source and thread). */
  readonly onSourceLearned: (src: number, slot: number) => void;
  /** A thread reported a persistent I/O error, or died: the data plane is broken (called once). */
  readonly onFatal: (err: Error) => void;
  /** A thread's UDP GSO send was refused (EIO) / its TUN refused a GSO write; it fell back on its own. */
  readonly onGsoRefused: (index: number) => void;
  readonly onTunGsoRefused: (index: number) => void;
}

interface Thread {
  readonly index: number;
  readonly worker: Worker;
  readonly port: MessagePort;
  readonly ctlFd: number;
  readonly fds: ThreadFds;
  readonly state: Int32Array;
  readonly counters: CounterBuffers;
  running: boolean;
}

const THREAD_FILE = path.join(__dirname, 'forwarding-thread.js');
/** How long close() waits for the threads to leave their loops and close their fds. */
const CLOSE_WAIT_MS = 5000;

export class ForwardingThreads {
  private readonly threads: Thread[] = [];
  private readonly native: DataplaneNative;
  private readonly log: Log;
  private readonly options: ForwardingThreadsOptions;
  /** Peer slots the per-thread counters have room for (the table's maxPeers). */
  private readonly peerSlots: number;
  private closing = false;
  private fatal = false;
  private readonly runningWaiters: Array<() => void> = [];

  constructor(options: ForwardingThreadsOptions) {
    this.options = options;
    this.native = options.native;
    this.log = options.log;
    this.peerSlots = options.table.maxPeers;
    for (let index = 0; index < options.threads.length; index++) {
      const fds = options.threads[index]!;
      const ctlFd = this.native.eventfdOpen();
      const { port1, port2 } = new MessageChannel();
      const stateBuffer = new SharedArrayBuffer(ThreadState.WORDS * 4);
      const state = new Int32Array(stateBuffer);
      const counters = sharedCounterBuffers(this.peerSlots);
      const config: ForwardingThreadConfig = {
        index,
        port: port2,
        tunName: options.tunName,
        tunFd: fds.tunFd,
        recvFd: fds.recvFd,
        sendFds: fds.sendFds,
        ctlFd,
        txRing: options.txRing,
        rxRing: options.rxRing,
        vni: options.vni,
        udpPort: options.udpPort,
        localMac: options.localMac,
        vnetHdr: options.vnetHdr,
        repairChecksums: options.repairChecksums,
        budget: options.budget,
        maxPacket: options.maxPacket,
        offload: options.offload,
        counters,
        state: stateBuffer,
        table: options.table,
        running: false,
        nice: options.nice,
        strictSource: options.strictSource,
      };
      const worker = new Worker(THREAD_FILE, { workerData: config, transferList: [port2], name: `forwarding-${index}` });
      const thread: Thread = {
        index,
        worker,
        port: port1,
        ctlFd,
        fds,
        state,
        counters,
        running: false,
      };
      worker.on('message', (r: ThreadReport) => this.onReport(thread, r));
      worker.on('error', (err) => this.died(thread, `failed: ${err.message}`, err));
      worker.on('exit', (code) => this.died(thread, `exited (code ${code})`));
      this.threads.push(thread);
    }
  }

  get count(): number {
    return this.threads.length;
  }

  /** Resolves once every thread is in its loop (forwarding if run(true) was called). */
  whenRunning(): Promise<void> {
    if (this.threads.every((t) => t.running)) return Promise.resolve();
    return new Promise((resolve) => this.runningWaiters.push(resolve));
  }

  /**
   * The peer in `slot` is new: its per-thread counters start from 0. (The table reuses a freed slot only
   * in a later generation, so at most a batch of a thread still on the old generation can land after this.)
   */
  resetPeer(slot: number): void {
    for (const t of this.threads) new Float64Array(t.counters.peer).fill(0, slot * PeerCtr.WORDS, (slot + 1) * PeerCtr.WORDS);
  }

  /** Rings every thread's doorbell: each refreshes its table reader before its next batch. */
  wake(): void {
    if (this.closing) return;
    for (const t of this.threads) this.native.eventfdSignal(t.ctlFd);
  }

  setMtu(mtu: number): void {
    for (const t of this.threads) this.send(t, { op: 'mtu', mtu });
  }

  /** Starts (true) or pauses (false) forwarding; paused threads only wait for control messages. */
  run(on: boolean): void {
    for (const t of this.threads) this.send(t, { op: 'run', on });
  }

  /** Each thread's counters, as views of its shared memory (scrape; allocates). */
  threadCounters(): Counters[] {
    return this.threads.map((t) => new Counters(0, t.counters));
  }

  /** The sum over all threads (scrape). */
  sum(): Counters {
    const total = new Counters(this.peerSlots);
    for (const c of this.threadCounters()) total.addFrom(c);
    return total;
  }

  /**
   * Kills thread `index` the hard way, as a crash would (debugging and tests of the fatal path): the
   * data plane then reports it through onFatal like any thread that dies.
   */
  terminate(index: number): void {
    const t = this.threads[index];
    if (t === undefined) throw new RangeError(`no forwarding thread ${index} (threads 0..${this.threads.length - 1})`);
    void t.worker.terminate();
    // A thread blocked in epoll_wait only sees the termination once it is back in JavaScript.
    this.native.eventfdSignal(t.ctlFd);
  }

  /** Table generation each thread forwards with (tests, debugging). */
  tableGenerations(): number[] {
    return this.threads.map((t) => Atomics.load(t.state, ThreadState.TABLE_GEN));
  }

  /**
   * Stops every thread, waits (blocking, up to 5 s in all) until each has left its loop, then closes every
   * TUN queue and socket. Idempotent.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    for (const t of this.threads) {
      try {
        t.port.postMessage({ op: 'exit' } satisfies ThreadControl);
        this.native.eventfdSignal(t.ctlFd);
      } catch (err) {
        this.log.warn({ thread: t.index, err }, `could not signal forwarding thread ${t.index} to exit`);
      }
    }
    const deadline = Date.now() + CLOSE_WAIT_MS;
    const errors: string[] = [];
    const close = (fd: number): void => {
      try {
        this.native.closeFd(fd);
      } catch (err) {
        errors.push((err as Error).message);
      }
    };
    for (const t of this.threads) {
      for (;;) {
        const phase = Atomics.load(t.state, ThreadState.PHASE);
        if (phase === (ThreadPhase.EXITED as number) || t.worker.threadId < 0) break;
        const left = deadline - Date.now();
        if (left <= 0) {
          this.log.warn({ thread: t.index, phase }, `forwarding thread ${t.index} did not leave its loop in time; terminating it`);
          void t.worker.terminate();
          break;
        }
        Atomics.wait(t.state, ThreadState.PHASE, phase, Math.min(left, 100));
      }
      t.port.close();
      t.worker.unref();
      close(t.ctlFd);
      close(t.fds.tunFd);
      close(t.fds.recvFd);
    }
    for (const fd of new Set(this.threads.flatMap((t) => t.fds.sendFds))) close(fd);
    if (errors.length > 0) this.log.warn({ errors }, 'closing forwarding-thread fds failed');
  }

  private send(t: Thread, c: ThreadControl): void {
    t.port.postMessage(c);
    this.native.eventfdSignal(t.ctlFd);
  }

  private onReport(t: Thread, r: ThreadReport): void {
    switch (r.type) {
      case 'running':
        t.running = true;
        if (this.threads.every((x) => x.running)) for (const w of this.runningWaiters.splice(0)) w();
        break;
      case 'log':
        this.log[r.level](r.obj, r.msg);
        break;
      case 'gsoRefused':
        this.options.onGsoRefused(r.index);
        break;
      case 'tunGsoRefused':
        this.options.onTunGsoRefused(r.index);
        break;
      case 'sourceLearned':
        this.options.onSourceLearned(r.src, r.slot);
        break;
      case 'fatal':
        this.fail(t, new DataplaneIoError(r.message, r.errno), { direction: r.direction, errno: r.errno });
        break;
    }
  }

  private died(t: Thread, how: string, cause?: Error): void {
    if (this.closing) return;
    this.fail(
      t,
      new ForwardingThreadError(`forwarding thread ${t.index} of ${this.options.tunName} ${how}; the data plane cannot forward`, { cause }),
    );
  }

  private fail(t: Thread, err: Error, extra: Record<string, unknown> = {}): void {
    if (this.fatal) return;
    this.fatal = true;
    this.log.error({ tun: this.options.tunName, thread: t.index, ...extra, err }, err.message);
    this.options.onFatal(err);
  }
}
