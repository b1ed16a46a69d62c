// The userspace VXLAN data plane the daemon uses: a multi-queue TUN device (the daemon's "flannel.<VNI>")
// plus UDP sockets: one TUN queue and one SO_REUSEPORT receive socket per forwarding thread
// (forwarding-threads.ts) and send sockets they share; this object lives on the main thread, keeps the
// peer table and publishes it to the threads. It does not touch addresses, routes or MTU (the
// netlink/route side does); it only moves packets for the peers it is given.

import { formatIp4, formatIp4Net, type Ip4Net } from '../subnet/ip4';
import { DEFAULT_RX_RING, DEFAULT_TX_RING, OFFLOAD_TX_RING, Ring, type RingOptions } from './buffer-pool';
import type { Counters, CountersSnapshot } from './counters';
import { ForwardingTable, type ForwardingTableHandle, type PeerEntry } from './forwarding-table';
import { defaultDataplaneThreads, ForwardingThreads, MAX_DATAPLANE_THREADS } from './forwarding-threads';
import { TunOffload, UdpFlag } from './layout';
import { type DataplaneNative, loadDataplaneNative } from './native';
import {
  describeFeatures,
  effectiveFeatures,
  type OffloadFeatures,
  type OffloadRequest,
  type OffloadRung,
  parseOffloadRequest,
  requestedFeatures,
  rungOf,
} from './offload';
import type { Log } from '../ops/log';

export interface VxlanDataplaneOptions {
  /** TUN device name; default `flannel.<vni>`. */
  readonly tunName?: string;
  readonly vni: number;
  /** VXLAN UDP port, listened on and sent to (all nodes must agree); default 8472. */
  readonly port?: number;
  /**
   * Drop datagrams whose outer source is no peer's PublicIP (-vxlan-strict-source). Default false:
   * accept them when VNI, inner destination MAC and inner source fit a current peer (source-check.ts).
   */
  readonly strictSource?: boolean;
  /** Local IPv4 address (host order) the send sockets bind to, i.e. the outer source peers see. Default 0 = any. */
  readonly sourceIp?: number;
  /** Our VtepMAC (6 bytes): inner source MAC we send, inner destination MAC we accept. */
  readonly localMac: Uint8Array;
  /** Keep the TUN (and the kernel routes on it) when the process dies, for fast restarts. Default false. */
  readonly persist?: boolean;
  readonly log: Log;
  /** TUN txqueuelen: packets the kernel may queue for us while the loop is busy. Default 1000 (TUN's own default is 500). */
  readonly txQueueLen?: number;
  /** Send sockets, shared by the forwarding threads (distinct outer source ports chosen by inner flow hash). Default 8. */
  readonly sendSockets?: number;
  /**
   * Forwarding threads (1..64): each gets one TUN queue, one SO_REUSEPORT receive socket and its own send
   * sockets. Default: one per CPU, at most 8 (defaultDataplaneThreads).
   */
  readonly threads?: number;
  /**
   * Nice value of the forwarding threads (-20..19). Default -10: on a busy host ordinary work queues
   * behind packets, as it does behind the kernel's own VXLAN (softirq). null = the process's own.
   * Without the privilege to raise priority the threads log it once and run at normal priority.
   */
  readonly threadNice?: number | null;
  /** Socket buffer size, bytes. Default 7 MiB. */
  readonly socketBuffer?: number;
  /**
   * Offload rung (offload.ts): `auto` (default) = the best the kernel supports; a rung name caps it there.
   * The chosen rung is logged at open and exposed as `offloadRung`.
   */
  readonly offload?: OffloadRequest;
  /** Rung `none` only: still open the TUN with IFF_VNET_HDR, without offloads. Default false. */
  readonly vnetHdr?: boolean;
  /**
   * Complete inner TCP/UDP checksums that an offloading sender left partial (kernel vxlan peers on veth or
   * virtio); without it their TCP is dropped by our stack. Default true; off only to measure its cost.
   */
  readonly repairChecksums?: boolean;
  /** Egress ring geometry. Default 64 slots × 2 KiB, 64 B headroom; with offloads 32 × 64 KiB (super-packets). */
  readonly txRing?: RingOptions;
  /** Ingress ring geometry. Default 64 slots × 64 KiB (+64 B headroom), for whole GSO datagrams. */
  readonly rxRing?: RingOptions;
  /**
   * Inner MTU: larger TCP packets received (a peer's GSO super-packet) are split to fit before the TUN
   * write. Default: the TUN's MTU when start() runs (the daemon configures it between open and start).
   */
  readonly mtu?: number;
  /**
   * Descriptors per readiness callback per direction. Default 256; with offloads 64 (a descriptor may be
   * a 64 KiB super-packet, and the other direction waits while one drains).
   */
  readonly budget?: number;
  /**
   * Called once when a forwarding thread hits a persistent I/O error or dies (the error is logged here);
   * the data plane cannot be trusted to forward any more.
   */
  readonly onFatal?: (err: Error) => void;
}

export { DataplaneIoError } from './forwarding-threads';

export class DataplaneConfigError extends Error {
  override name = 'DataplaneConfigError';
}

const DEFAULT_PORT = 8472;
const DEFAULT_THREAD_NICE = -10;
const DEFAULT_SOCKET_BUFFER = 7 * 1024 * 1024;
const DEFAULT_TX_QUEUE_LEN = 1000;

export class VxlanDataplane {
  readonly tunName: string;
  readonly tunIfindex: number;
  readonly vni: number;
  readonly port: number;
  /** Local ports of the send sockets (the outer UDP source ports in use). */
  readonly sourcePorts: readonly number[];
  /** Forwarding threads (= TUN queues = receive sockets). */
  readonly threadCount: number;

  private readonly native: DataplaneNative;
  private readonly log: Log;
  private readonly table: ForwardingTable;
  private readonly threads: ForwardingThreads;
  private features: OffloadFeatures;
  private mtuFixed: boolean;
  private maxPacket: number;
  private started = false;
  private runningNow = false;
  private closed = false;
  private batchOpen = false;

  static open(options: VxlanDataplaneOptions): VxlanDataplane {
    const native = loadDataplaneNative();
    const vni = options.vni;
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new DataplaneConfigError(`VNI ${vni} out of range 0..16777215`);
    const port = options.port ?? DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DataplaneConfigError(`VXLAN port ${port} out of range 1..65535`);
    if (options.localMac.length !== 6) throw new DataplaneConfigError(`local VtepMAC must be 6 bytes, got ${options.localMac.length}`);
    const nSend = options.sendSockets ?? 8;
    if (!Number.isInteger(nSend) || nSend < 1 || nSend > 64) throw new DataplaneConfigError(`sendSockets ${nSend} out of range 1..64`);
    const nThreads = options.threads ?? defaultDataplaneThreads();
    if (!Number.isInteger(nThreads) || nThreads < 1 || nThreads > MAX_DATAPLANE_THREADS) {
      throw new DataplaneConfigError(`forwarding threads ${nThreads} out of range 1..${MAX_DATAPLANE_THREADS}`);
    }
    const nice = options.threadNice;
    if (nice !== undefined && nice !== null && (!Number.isInteger(nice) || nice < -20 || nice > 19)) {
      throw new DataplaneConfigError(`forwarding-thread nice ${nice} out of range -20..19`);
    }
    const request = parseOffloadRequest(options.offload ?? 'auto');
    const want = requestedFeatures(request);
    const txRing = options.txRing ?? (want.vnet ? OFFLOAD_TX_RING : DEFAULT_TX_RING);
    const rxRing = options.rxRing ?? DEFAULT_RX_RING;
    // Geometry errors surface here, on the caller's thread, not later in a forwarding thread.
    new Ring(txRing);
    new Ring(rxRing);
    const tunOffloads = want.tso
      ? TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | (want.uso ? TunOffload.USO4 | TunOffload.USO6 : 0)
      : 0;
    const tunName = options.tunName ?? `flannel.${vni}`;
    const buf = options.socketBuffer ?? DEFAULT_SOCKET_BUFFER;

    // Everything opened so far is closed again if a later step fails.
    const fds: number[] = [];
    try {
      // SO_REUSEPORT would let a second daemon on this port silently take half the traffic: first make
      // sure nobody holds the port, with a plain bind.
      const probe = native.udpOpen(port, 0);
      native.closeFd(probe.fd);
      const threads: ThreadIo[] = [];
      const sourcePorts: number[] = [];
      const sendFds: number[] = [];
      let gso = true;
      for (let s = 0; s < nSend; s++) {
        const h = native.udpOpen(0, buf, 0, options.sourceIp ?? 0);
        fds.push(h.fd);
        sendFds.push(h.fd);
        sourcePorts.push(h.port);
        gso &&= h.gso;
      }
      let features: OffloadFeatures | undefined;
      let replaced = false;
      for (let i = 0; i < nThreads; i++) {
        const tun = native.tunOpen(
          tunName,
          want.vnet || (options.vnetHdr ?? false),
          options.persist ?? false,
          options.txQueueLen ?? DEFAULT_TX_QUEUE_LEN,
          tunOffloads,
          true,
        );
        fds.push(tun.fd);
        replaced ||= tun.replacedSingleQueue;
        const recv = native.udpOpen(port, buf, (want.gro ? UdpFlag.GRO : 0) | UdpFlag.REUSEPORT);
        fds.push(recv.fd);
        features ??= effectiveFeatures(want, {
          tso: (tun.offloads & TunOffload.TSO4) !== 0,
          uso: (tun.offloads & TunOffload.USO4) !== 0,
          gro: recv.gro,
          gso,
        });
        threads.push({ name: tun.name, ifindex: tun.ifindex, io: { tunFd: tun.fd, recvFd: recv.fd, sendFds } });
      }
      if (replaced) {
        options.log.warn(
          { tun: tunName },
          `replaced the single-queue TUN ${tunName} left by an earlier version with a multi-queue one; its routes are programmed again`,
        );
      }
      return new VxlanDataplane(native, options, request, features!, threads, sourcePorts, txRing, rxRing);
    } catch (err) {
      for (const fd of fds) native.closeFd(fd);
      throw err;
    }
  }

  private constructor(
    native: DataplaneNative,
    options: VxlanDataplaneOptions,
    request: OffloadRequest,
    features: OffloadFeatures,
    threads: ThreadIo[],
    sourcePorts: number[],
    txRing: RingOptions,
    rxRing: RingOptions,
  ) {
    this.native = native;
    this.log = options.log;
    this.tunName = threads[0]!.name;
    this.tunIfindex = threads[0]!.ifindex;
    this.vni = options.vni;
    this.port = options.port ?? DEFAULT_PORT;
    this.sourcePorts = sourcePorts;
    this.threadCount = threads.length;
    this.features = features;
    this.mtuFixed = options.mtu !== undefined;
    this.maxPacket = options.mtu ?? 0;
    // A publish waits for a thread still reading the previous generation; ringing the threads' doorbells
    // makes them finish their batch and move on (they refresh between batches and go idle before blocking).
    this.table = new ForwardingTable({
      vni: options.vni,
      localMac: Uint8Array.from(options.localMac),
      wakeReaders: () => this.threads.wake(),
    });
    this.threads = new ForwardingThreads({
      native,
      log: this.log,
      tunName: this.tunName,
      threads: threads.map((t) => t.io),
      table: this.table.handle,
      txRing,
      rxRing,
      vni: options.vni,
      udpPort: this.port,
      localMac: Uint8Array.from(options.localMac),
      vnetHdr: options.vnetHdr ?? false,
      repairChecksums: options.repairChecksums ?? true,
      budget: options.budget ?? (features.vnet ? 64 : 256),
      maxPacket: this.maxPacket,
      offload: features,
      nice: options.threadNice === undefined ? DEFAULT_THREAD_NICE : options.threadNice,
      strictSource: options.strictSource ?? false,
      onSourceLearned: (src, slot) => this.sourceLearned(src, slot),
      onFatal: (err) => options.onFatal?.(err),
      onGsoRefused: (index) => this.gsoRefused(index),
      onTunGsoRefused: (index) => this.tunGsoRefused(index),
    });
    this.log.info(
      {
        tun: this.tunName,
        ifindex: this.tunIfindex,
        port: this.port,
        vni: this.vni,
        threads: this.threadCount,
        sourcePorts,
        offload: { requested: request, rung: rungOf(features), features: describeFeatures(features) },
      },
      `VXLAN data plane opened, ${this.threadCount} forwarding thread(s), offload rung ${rungOf(features)}`,
    );
  }

  /** The offload rung the data plane runs on (offload.ts); drops to no-udp-gso if a route refuses UDP GSO. */
  get offloadRung(): OffloadRung {
    return rungOf(this.features);
  }

  get offloadFeatures(): OffloadFeatures {
    return this.features;
  }

  /**
   * Adds or updates a peer (new MAC or public IP of a re-put lease replaces the old values). Changes
   * made in one synchronous run (a watch response, the first snapshot) reach the forwarding threads
   * together, as one table generation, when the run ends (see whenPublished()).
   */
  setPeer(peer: PeerEntry): void {
    this.assertOpen();
    this.autoBatch();
    const isNew = this.table.slotOf(peer.subnet) < 0;
    const slot = this.table.setPeer(peer);
    if (isNew) this.threads.resetPeer(slot);
  }

  /**
   * Resolves once every peer change made so far is visible to the packet path (at the end of the current
   * synchronous run, later only if a forwarding thread still reads an older table generation).
   */
  whenPublished(): Promise<void> {
    return this.table.whenPublished();
  }

  /** Shared-memory handle of the peer table (what the forwarding threads attach their readers to). */
  get tableHandle(): ForwardingTableHandle {
    return this.table.handle;
  }

  /** Removes the peer owning `subnet`; false if unknown. Its traffic is dropped as noRoute/unknownSource from now on. */
  removePeer(subnet: Ip4Net): boolean {
    this.assertOpen();
    this.autoBatch();
    return this.table.removePeer(subnet);
  }

  get peerCount(): number {
    return this.table.peerCount;
  }

  /** Inner MTU used to split received super-packets; fixed from now on (the TUN's MTU is no longer read). */
  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw new DataplaneConfigError(`MTU ${mtu} out of range 576..65535`);
    this.maxPacket = mtu;
    this.mtuFixed = true;
    this.threads.setMtu(mtu);
  }

  get mtu(): number {
    return this.maxPacket;
  }

  /** Starts forwarding (idempotent). Without a fixed MTU, reads the TUN's MTU now. */
  start(): void {
    this.assertOpen();
    if (this.runningNow) return;
    if (!this.mtuFixed) {
      this.maxPacket = this.native.ifMtu(this.tunName);
      this.threads.setMtu(this.maxPacket);
    }
    this.threads.run(true);
    this.started = true;
    this.runningNow = true;
  }

  /** Resolves once every forwarding thread runs its loop (after start(): forwarding). */
  whenRunning(): Promise<void> {
    return this.threads.whenRunning();
  }

  /** Stops forwarding; packets queue in the kernel (and are dropped there when queues fill). Idempotent. */
  stop(): void {
    if (!this.runningNow || this.closed) return;
    this.threads.run(false);
    this.runningNow = false;
  }

  get running(): boolean {
    return this.runningNow;
  }

  /** Totals over all forwarding threads (built on scrape, from shared memory). */
  counters(): CountersSnapshot {
    return this.threads.sum().snapshot(this.peerSubnets());
  }

  /** Each forwarding thread's own counters (how flows spread over the threads). */
  threadCounters(): CountersSnapshot[] {
    const peers = this.peerSubnets();
    return this.threads.threadCounters().map((c: Counters) => c.snapshot(peers));
  }

  /** Kills forwarding thread `index` as a crash would (debugging, tests of the fatal path). */
  terminateThread(index: number): void {
    this.assertOpen();
    this.threads.terminate(index);
  }

  /** Stops the threads and closes every TUN queue and socket. A persistent TUN (persist: true) stays with its routes. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.runningNow = false;
    this.threads.close();
    this.table.close();
    this.log.info({ tun: this.tunName, started: this.started }, 'VXLAN data plane closed');
  }

  private peerSubnets(): Array<[number, string]> {
    const peers: Array<[number, string]> = [];
    for (let slot = 0; slot < this.table.slotCapacity; slot++) {
      const subnet = this.table.subnetOf(slot);
      if (subnet !== undefined) peers.push([slot, formatIp4Net(subnet)]);
    }
    return peers;
  }

  /** Opens a table batch that the end of the current synchronous run (a microtask) commits. */
  private autoBatch(): void {
    if (this.batchOpen) return;
    this.batchOpen = true;
    this.table.begin();
    queueMicrotask(() => {
      this.batchOpen = false;
      this.table.commit();
    });
  }

  private sourceLearned(src: number, slot: number): void {
    const subnet = this.table.subnetOf(slot);
    const peer = subnet ? formatIp4Net(subnet) : `slot ${slot}`;
    this.log.info(
      { tun: this.tunName, source: formatIp4(src >>> 0), peer },
      `accepting VXLAN from ${formatIp4(src >>> 0)} for peer ${peer}: not its published PublicIP, but VNI, VtepMAC and ` +
        'inner source fit (a flanneld node sending from another address; -vxlan-strict-source drops these)',
    );
  }

  private assertOpen(): void {
    if (this.closed) throw new DataplaneConfigError(`data plane on ${this.tunName} is closed`);
  }

  private gsoRefused(index: number): void {
    this.features = { ...this.features, gso: false };
    this.log.warn(
      { tun: this.tunName, thread: index, offload: { rung: this.offloadRung, features: describeFeatures(this.features) } },
      `UDP GSO send refused with EIO on forwarding thread ${index} (no checksum offload towards a peer); it sends datagrams one by one, offload rung now ${this.offloadRung}`,
    );
  }

  private tunGsoRefused(index: number): void {
    // Without GSO writes neither TCP nor UDP is merged any more: as far as ingress goes that is the
    // per-packet path, so report the rung honestly.
    this.features = { ...this.features, uso: false, gro: false };
    this.log.error(
      { tun: this.tunName, thread: index, offload: { rung: this.offloadRung, features: describeFeatures(this.features) } },
      `TUN ${this.tunName} refused a GSO write on forwarding thread ${index} (EINVAL, kernel bug?); it writes received packets one by one, offload rung now ${this.offloadRung}`,
    );
  }
}

interface ThreadIo {
  name: string;
  ifindex: number;
  io: { tunFd: number; recvFd: number; sendFds: number[] };
}
