// The userspace VXLAN data plane the daemon uses: a TUN device (the daemon's "flannel.<VNI>") plus
// UDP sockets on the VXLAN port, driven by PacketLoop on this thread's event loop. It does not touch
// addresses, routes or MTU (the netlink/route side does); it only moves packets for the peers it is given.
import { getSystemErrorMap } from 'node:util';

import { formatIp4, formatIp4Net, type Ip4Net } from '../subnet/ip4';
import { DEFAULT_RX_RING, DEFAULT_TX_RING, OFFLOAD_TX_RING, Ring, type RingOptions } from './buffer-pool';
import { Counters, type CountersSnapshot } from './counters';
import { ForwardingTable, type ForwardingTableHandle, type PeerEntry } from './forwarding-table';
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
import { PacketLoop } from './packet-loop';

/** The subset of pino's logger the data plane uses. */
export interface DataplaneLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

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
  readonly log: DataplaneLogger;
  /** TUN txqueuelen: packets the kernel may queue for us while the loop is busy. Default 1000 (TUN's own default is 500). */
  readonly txQueueLen?: number;
  /** Send sockets (distinct outer source ports chosen by inner flow hash). Default 8. */
  readonly sendSockets?: number;
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
  /** Called once when a fd fails persistently; the data plane has stopped itself by then. */
  readonly onFatal?: (err: DataplaneIoError) => void;
}

export class DataplaneIoError extends Error {
  override name = 'DataplaneIoError';
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

export class DataplaneConfigError extends Error {
  override name = 'DataplaneConfigError';
}

const DEFAULT_PORT = 8472;
const DEFAULT_SOCKET_BUFFER = 7 * 1024 * 1024;
const DEFAULT_TX_QUEUE_LEN = 1000;
// Transient errnos from a read that are worth a log line but not a stop (ENOMEM under pressure, etc.).
const TRANSIENT_ERRNOS = new Set([12 /* ENOMEM */, 105 /* ENOBUFS */, 111 /* ECONNREFUSED */, 113 /* EHOSTUNREACH */]);

export class VxlanDataplane {
  readonly tunName: string;
  readonly tunIfindex: number;
  readonly vni: number;
  readonly port: number;
  /** Local ports of the send sockets (the outer UDP source ports in use). */
  readonly sourcePorts: readonly number[];

  private readonly native: DataplaneNative;
  private readonly log: DataplaneLogger;
  private readonly table: ForwardingTable;
  private readonly counterSet: Counters;
  private readonly loop: PacketLoop;
  private readonly tx: Ring;
  private readonly rx: Ring;
  private readonly tunFd: number;
  private readonly recvFd: number;
  private readonly sendFds: Int32Array;
  private readonly onFatal: ((err: DataplaneIoError) => void) | undefined;
  private features: OffloadFeatures;
  private mtuFixed: boolean;
  private tunPoll = -1;
  private udpPoll = -1;
  private closed = false;
  private batchOpen = false;
  private readonly loggedErrnos = new Set<string>();

  static open(options: VxlanDataplaneOptions): VxlanDataplane {
    const native = loadDataplaneNative();
    const vni = options.vni;
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new DataplaneConfigError(`VNI ${vni} out of range 0..16777215`);
    const port = options.port ?? DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DataplaneConfigError(`VXLAN port ${port} out of range 1..65535`);
    if (options.localMac.length !== 6) throw new DataplaneConfigError(`local VtepMAC must be 6 bytes, got ${options.localMac.length}`);
    const nSend = options.sendSockets ?? 8;
    if (!Number.isInteger(nSend) || nSend < 1 || nSend > 64) throw new DataplaneConfigError(`sendSockets ${nSend} out of range 1..64`);
    const request = parseOffloadRequest(options.offload ?? 'auto');
    const want = requestedFeatures(request);
    const tx = new Ring(options.txRing ?? (want.vnet ? OFFLOAD_TX_RING : DEFAULT_TX_RING));
    const rx = new Ring(options.rxRing ?? DEFAULT_RX_RING);
    const tunOffloads = want.tso
      ? TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | (want.uso ? TunOffload.USO4 | TunOffload.USO6 : 0)
      : 0;

    // Everything opened so far is closed again if a later step fails.
    const fds: number[] = [];
    try {
      const tun = native.tunOpen(
        options.tunName ?? `flannel.${vni}`,
        want.vnet || (options.vnetHdr ?? false),
        options.persist ?? false,
        options.txQueueLen ?? DEFAULT_TX_QUEUE_LEN,
        tunOffloads,
      );
      fds.push(tun.fd);
      const buf = options.socketBuffer ?? DEFAULT_SOCKET_BUFFER;
      const recv = native.udpOpen(port, buf, want.gro ? UdpFlag.GRO : 0);
      fds.push(recv.fd);
      const sendFds = new Int32Array(nSend);
      const sourcePorts: number[] = [];
      let gso = true;
      for (let i = 0; i < nSend; i++) {
        const s = native.udpOpen(0, buf, 0, options.sourceIp ?? 0);
        fds.push(s.fd);
        sendFds[i] = s.fd;
        sourcePorts.push(s.port);
        gso &&= s.gso;
      }
      const features = effectiveFeatures(want, {
        tso: (tun.offloads & TunOffload.TSO4) !== 0,
        uso: (tun.offloads & TunOffload.USO4) !== 0,
        gro: recv.gro,
        gso,
      });
      tx.register(native);
      rx.register(native);
      return new VxlanDataplane(native, options, request, features, tun.name, tun.ifindex, tun.fd, recv.fd, sendFds, sourcePorts, tx, rx);
    } catch (err) {
      tx.release(native);
      rx.release(native);
      for (const fd of fds) native.closeFd(fd);
      throw err;
    }
  }

  private constructor(
    native: DataplaneNative,
    options: VxlanDataplaneOptions,
    request: OffloadRequest,
    features: OffloadFeatures,
    tunName: string,
    tunIfindex: number,
    tunFd: number,
    recvFd: number,
    sendFds: Int32Array,
    sourcePorts: number[],
    tx: Ring,
    rx: Ring,
  ) {
    this.native = native;
    this.log = options.log;
    this.tunName = tunName;
    this.tunIfindex = tunIfindex;
    this.vni = options.vni;
    this.port = options.port ?? DEFAULT_PORT;
    this.sourcePorts = sourcePorts;
    this.tunFd = tunFd;
    this.recvFd = recvFd;
    this.sendFds = sendFds;
    this.tx = tx;
    this.rx = rx;
    this.onFatal = options.onFatal;
    this.features = features;
    this.mtuFixed = options.mtu !== undefined;
    this.table = new ForwardingTable({ vni: options.vni, localMac: Uint8Array.from(options.localMac) });
    this.counterSet = new Counters(this.table.slotCapacity);
    this.loop = new PacketLoop({
      io: native,
      table: this.table.reader,
      counters: this.counterSet,
      tx,
      rx,
      tunFd,
      recvFd,
      sendFds,
      port: this.port,
      vni: options.vni,
      localMac: options.localMac,
      vnetHdr: options.vnetHdr ?? false,
      repairChecksums: options.repairChecksums ?? true,
      budget: options.budget ?? (features.vnet ? 64 : 256),
      maxPacket: options.mtu ?? 0,
      offload: features,
      onGsoRefused: () => this.gsoRefused(),
      onTunGsoRefused: () => this.tunGsoRefused(),
      onIoError: (direction, errno) => this.handleIoError(direction, errno),
      strictSource: options.strictSource ?? false,
      onSourceLearned: (src, slot) => this.sourceLearned(src, slot),
    });
    this.log.info(
      {
        tun: tunName,
        ifindex: tunIfindex,
        port: this.port,
        vni: this.vni,
        sourcePorts,
        offload: { requested: request, rung: rungOf(features), features: describeFeatures(features) },
      },
      `VXLAN data plane opened, offload rung ${rungOf(features)}`,
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
   * made in one synchronous run (a watch response, the first snapshot) reach the packet path together,
   * as one table generation, when the run ends (see whenPublished()).
   */
  setPeer(peer: PeerEntry): void {
    this.assertOpen();
    this.autoBatch();
    const isNew = this.table.slotOf(peer.subnet) < 0;
    const slot = this.table.setPeer(peer);
    this.counterSet.ensurePeerCapacity(this.table.slotCapacity);
    if (isNew) this.counterSet.resetPeer(slot);
  }

  /**
   * Resolves once every peer change made so far is visible to the packet path (at the end of the current
   * synchronous run, later only if a forwarding thread still reads an older table generation).
   */
  whenPublished(): Promise<void> {
    return this.table.whenPublished();
  }

  /** Shared-memory handle of the peer table, for readers in forwarding threads. */
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
    this.loop.maxPacket = mtu;
    this.mtuFixed = true;
  }

  get mtu(): number {
    return this.loop.maxPacket;
  }

  /** Starts forwarding (idempotent). Without a fixed MTU, reads the TUN's MTU now. */
  start(): void {
    this.assertOpen();
    if (!this.mtuFixed) this.loop.maxPacket = this.native.ifMtu(this.tunName);
    if (this.tunPoll < 0) this.tunPoll = this.native.pollStart(this.tunFd, this.loop.onTunReadable);
    if (this.udpPoll < 0) this.udpPoll = this.native.pollStart(this.recvFd, this.loop.onUdpReadable);
  }

  /** Stops forwarding; packets queue in the kernel (and are dropped there when queues fill). Idempotent. */
  stop(): void {
    if (this.tunPoll >= 0) this.native.pollStop(this.tunPoll);
    if (this.udpPoll >= 0) this.native.pollStop(this.udpPoll);
    this.tunPoll = -1;
    this.udpPoll = -1;
  }

  get running(): boolean {
    return this.tunPoll >= 0;
  }

  counters(): CountersSnapshot {
    const peers: Array<[number, string]> = [];
    for (let slot = 0; slot < this.table.slotCapacity; slot++) {
      const subnet = this.table.subnetOf(slot);
      if (subnet !== undefined) peers.push([slot, formatIp4Net(subnet)]);
    }
    return this.counterSet.snapshot(peers);
  }

  /** Stops and closes the TUN fd and sockets. A persistent TUN (persist: true) stays with its routes. */
  close(): void {
    if (this.closed) return;
    this.stop();
    this.closed = true;
    this.table.close();
    this.tx.release(this.native);
    this.rx.release(this.native);
    const errors: string[] = [];
    for (const fd of [this.tunFd, this.recvFd, ...this.sendFds]) {
      try {
        this.native.closeFd(fd);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    if (errors.length > 0) this.log.warn({ tun: this.tunName, errors }, 'closing data-plane fds failed');
    this.log.info({ tun: this.tunName }, 'VXLAN data plane closed');
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

  private assertOpen(): void {
    if (this.closed) throw new DataplaneConfigError(`data plane on ${this.tunName} is closed`);
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

  private gsoRefused(): void {
    this.features = { ...this.features, gso: false };
    this.log.warn(
      { tun: this.tunName, offload: { rung: this.offloadRung, features: describeFeatures(this.features) } },
      `UDP GSO send refused with EIO (no checksum offload towards a peer); sending datagrams one by one, offload rung now ${this.offloadRung}`,
    );
  }

  private tunGsoRefused(): void {
    // Without GSO writes neither TCP nor UDP is merged any more: as far as ingress goes that is the
    // per-packet path, so report the rung honestly.
    this.features = { ...this.features, uso: false, gro: false };
    this.log.error(
      { tun: this.tunName, offload: { rung: this.offloadRung, features: describeFeatures(this.features) } },
      `TUN ${this.tunName} refused a GSO write (EINVAL, kernel bug?); writing received packets one by one, offload rung now ${this.offloadRung}`,
    );
  }

  private handleIoError(direction: 'tun' | 'udp', errno: number): void {
    const what = direction === 'tun' ? `read TUN ${this.tunName}` : `receive UDP 0.0.0.0:${this.port}`;
    const [code, text] = getSystemErrorMap().get(-errno) ?? [`E${errno}`, `errno ${errno}`];
    const message = `${what}: ${text} (${code})`;
    const key = `${direction}:${errno}`;
    if (TRANSIENT_ERRNOS.has(errno)) {
      if (!this.loggedErrnos.has(key)) {
        this.loggedErrnos.add(key);
        this.log.warn({ tun: this.tunName, direction, errno }, `${message} (transient; further occurrences only counted)`);
      }
      return;
    }
    // A persistent error would make the level-triggered poll fire forever: stop instead of spinning.
    this.stop();
    const err = new DataplaneIoError(`${message}; data plane stopped`, errno);
    this.log.error({ tun: this.tunName, direction, errno, err }, err.message);
    this.onFatal?.(err);
  }
}
