// The hot loop: egress TUN → VXLAN/UDP and ingress VXLAN/UDP → TUN, one batch at a time.
import { constants as osConstants } from 'node:os';

import type { Ring } from './buffer-pool';
import { Counters, Ctr, PeerCtr } from './counters';
import type { PeerLookup } from './forwarding-table';
import { Desc, DescFlag, SendMode, TunMode } from './layout';
import type { DataplaneNative } from './native';
import type { OffloadFeatures } from './offload';
import { decodeVxlanFrame, Drop, macHi, macLo } from './vxlan-codec';
import { LearnedSources, peerForUnlistedSource } from './source-check';

/** The four batched I/O calls the loop makes (the addon, or a syscall-free stand-in in the benchmark). */
export type LoopIo = Pick<DataplaneNative, 'tunRead' | 'tunWrite' | 'udpSend' | 'udpRecv'>;

export interface PacketLoopConfig {
  readonly io: LoopIo;
  readonly table: PeerLookup;
  readonly counters: Counters;
  readonly tx: Ring;
  readonly rx: Ring;
  readonly tunFd: number;
  readonly recvFd: number;
  /** Send sockets; the inner flow hash picks one, so the outer source port is per flow (RFC 7348 entropy). */
  readonly sendFds: Int32Array;
  /** Outer UDP destination port (the peers' VXLAN port; flannel: 8472). */
  readonly port: number;
  readonly vni: number;
  readonly localMac: Uint8Array;
  /** The TUN carries a virtio_net_hdr (IFF_VNET_HDR). */
  readonly vnetHdr: boolean;
  /** Complete partial inner checksums on ingress (see RepairPartialCsum in native/src/tun.cc). */
  readonly repairChecksums: boolean;
  /** Largest IP packet written to the TUN (its MTU); longer TCP super-packets are segmented. 0 = never split. */
  readonly maxPacket: number;
  /** Packets per wake-up per direction before the other direction gets its turn (level-triggered epoll resumes). */
  readonly budget: number;
  /**
   * Offloads in force (VxlanDataplane probes them); they only switch I/O modes on, the loop is the same:
   * with `vnet`, super-packets are split by udpSend and datagram trains coalesced by tunWrite.
   * Absent or without vnet: no offloads (vnetHdr/repairChecksums above apply).
   */
  readonly offload?: OffloadFeatures;
  /** Called once when a UDP GSO send was refused with EIO; the loop has switched GSO off by then. */
  readonly onGsoRefused?: () => void;
  /** Called once when the TUN refused a GSO write (EINVAL); the loop writes segments one by one from then on. */
  readonly onTunGsoRefused?: () => void;
  /**
   * Drop datagrams whose outer source is no peer's PublicIP, whatever they carry (-vxlan-strict-source).
   * Default false: such a datagram is accepted when peerForUnlistedSource (source-check.ts) says so.
   */
  readonly strictSource?: boolean;
  /** Called once per new (outer source, peer slot) pair accepted without being that peer's PublicIP. */
  readonly onSourceLearned?: (src: number, slot: number) => void;
  /** tunRead/udpRecv failed with this errno (negative return); the owner decides whether to stop. */
  readonly onIoError: (direction: 'tun' | 'udp', errno: number) => void;
}

const EAGAIN = osConstants.errno.EAGAIN;
const EWOULDBLOCK = osConstants.errno.EWOULDBLOCK;
const ENOBUFS = osConstants.errno.ENOBUFS;

/*
 * Why the loop is shaped this way (docs/performance.md §4, §6):
 * - Batches: a readiness callback drains up to `budget` packets in batches of ring-size packets, with
 *   exactly two native calls per batch (tunRead+udpSend, udpRecv+tunWrite). N-API crossings cost
 *   20–60 ns each; per-packet calls or per-packet callbacks would cost more than the JS work itself.
 * - Memory JS owns: arena + Int32Array descriptors registered once; calls pass integers only and the
 *   results come back in the descriptors. No Buffer, no object, no closure, no promise per packet:
 *   every line below only reads/writes typed arrays and numbers, so the GC has nothing to do.
 * - In place: tunRead leaves headroom in front of each IP packet, so encap is an 11-word copy of the
 *   peer's prebuilt VXLAN+Ethernet header and sendmmsg sends straight from the arena; decap only
 *   validates and flags, tunWrite strips the encapsulation.
 * - One path for every offload rung: a descriptor always carries a segment count (1 without
 *   offloads), rejected segments of a train are flagged explicitly, and the offloads themselves
 *   (TSO split, UDP GSO, UDP GRO trains, GSO coalescing) live in the native I/O calls.
 * - Lookups are typed-array hash probes (ForwardingTable), counters are typed-array increments.
 * - Runs on a forwarding thread that blocks in epoll (forwarding-thread.ts), level triggered, no timers:
 *   an idle tunnel forwards a lone packet immediately; a busy one yields after `budget` packets and
 *   the other direction (or a control message) gets its turn.
 * - A short batch (fewer than asked) means the fd hit EAGAIN, so the loop stops without another syscall.
 */
export class PacketLoop {
  private readonly io: LoopIo;
  private readonly table: PeerLookup;
  private readonly strictSource: boolean;
  private readonly learned = new LearnedSources();
  private readonly onSourceLearned: ((src: number, slot: number) => void) | undefined;
  private readonly counters: Counters;
  private readonly tx: Ring;
  private readonly rx: Ring;
  private readonly tunFd: number;
  private readonly recvFd: number;
  private readonly sendFds: Int32Array;
  private readonly port: number;
  private readonly vni: number;
  private readonly ownHi: number;
  private readonly ownLo: number;
  private readonly readMode: number;
  /** TunMode bits for tunWrite; NO_MERGE is added at runtime if the TUN refuses GSO writes. */
  private writeMode: number;
  /** SendMode bits for udpSend; GSO is dropped at runtime if a route refuses it. */
  private sendMode: number;
  /** Encapsulation bytes in front of the inner packet (the rings' encapLen). */
  private readonly encap: number;
  private readonly onGsoRefused: (() => void) | undefined;
  private readonly onTunGsoRefused: (() => void) | undefined;
  private readonly budget: number;
  /** See PacketLoopConfig.maxPacket; follows MTU changes (VxlanDataplane.setMtu). */
  maxPacket: number;
  private readonly onIoError: (direction: 'tun' | 'udp', errno: number) => void;

  constructor(config: PacketLoopConfig) {
    if (config.sendFds.length < 1) throw new RangeError('packet loop needs at least one send socket');
    this.io = config.io;
    this.table = config.table;
    this.strictSource = config.strictSource ?? false;
    this.onSourceLearned = config.onSourceLearned;
    this.counters = config.counters;
    this.tx = config.tx;
    this.rx = config.rx;
    this.tunFd = config.tunFd;
    this.recvFd = config.recvFd;
    this.sendFds = config.sendFds;
    this.port = config.port;
    this.vni = config.vni;
    this.ownHi = macHi(config.localMac);
    this.ownLo = macLo(config.localMac);
    const off = config.offload;
    if (off?.vnet) {
      this.readMode = TunMode.VNET;
      this.writeMode = TunMode.VNET | TunMode.COALESCE | (off.uso ? TunMode.USO : 0);
      this.sendMode = SendMode.SPLIT | (off.gso ? SendMode.GSO : 0);
    } else {
      this.readMode = config.vnetHdr ? TunMode.VNET : 0;
      this.writeMode = this.readMode | (config.repairChecksums ? TunMode.CSUM_REPAIR : 0);
      this.sendMode = 0;
    }
    if (config.tx.encapLen !== config.rx.encapLen) throw new RangeError('packet loop rings must share one encapsulation length');
    this.encap = config.tx.encapLen;
    this.onGsoRefused = config.onGsoRefused;
    this.onTunGsoRefused = config.onTunGsoRefused;
    this.budget = config.budget;
    this.maxPacket = config.maxPacket;
    this.onIoError = config.onIoError;
  }

  /** Drains the TUN: read a batch, encapsulate in place, send it; repeat until EAGAIN or budget. */
  egress(): void {
    const io = this.io;
    const ring = this.tx;
    const totals = this.counters.totals;
    totals[Ctr.txWakeups]++;
    let budget = this.budget;
    while (budget > 0) {
      const want = budget < ring.slots ? budget : ring.slots;
      const n = io.tunRead(ring.id, this.tunFd, want, this.readMode);
      if (n <= 0) {
        if (n < 0) {
          totals[Ctr.ioErrors]++;
          this.onIoError('tun', -n);
        }
        return;
      }
      totals[Ctr.txBatches]++;
      if (this.encapBatch(n) > 0) {
        totals[Ctr.txSends] += io.udpSend(ring.id, n, this.sendMode);
        this.countSent(n);
      }
      if (n < want) return;
      budget -= n;
    }
  }

  /** Drains the VXLAN socket: receive a batch, validate every segment, write the accepted ones to the TUN. */
  ingress(): void {
    const io = this.io;
    const ring = this.rx;
    const totals = this.counters.totals;
    totals[Ctr.rxWakeups]++;
    let budget = this.budget;
    while (budget > 0) {
      const want = budget < ring.slots ? budget : ring.slots;
      const n = io.udpRecv(ring.id, this.recvFd, want);
      if (n <= 0) {
        if (n < 0) {
          totals[Ctr.ioErrors]++;
          this.onIoError('udp', -n);
        }
        return;
      }
      totals[Ctr.rxBatches]++;
      if (this.decap(n) > 0) {
        totals[Ctr.rxTunWrites] += io.tunWrite(ring.id, this.tunFd, n, this.writeMode, this.maxPacket);
        this.countWritten(n);
      }
      if (n < want) return;
      budget -= n;
    }
  }

  /**
   * Turns tunRead descriptors 0..n-1 into udpSend descriptors: route, write the header in the headroom,
   * fill outer address/port/socket. Dropped packets get LEN 0 (udpSend skips them). → packets to send.
   */
  encapBatch(n: number): number {
    const d = this.tx.desc;
    const words = this.tx.words;
    const table = this.table;
    const hdr = table.encapWords;
    const peerIp = table.publicIp;
    const drops = this.counters.drops;
    const sendFds = this.sendFds;
    const nFds = sendFds.length;
    const port = this.port;
    const encap = this.encap;
    let ready = 0;
    for (let i = 0; i < n; i++) {
      const b = i * Desc.WORDS;
      if ((d[b + Desc.FLAGS]! & (DescFlag.NOT_IPV4 | DescFlag.TRUNC)) !== 0) {
        drops[(d[b + Desc.FLAGS]! & DescFlag.TRUNC) !== 0 ? Drop.truncated : Drop.notIpv4]++;
        d[b + Desc.LEN] = 0;
        continue;
      }
      const peer = table.lookup(d[b + Desc.ADDR]!);
      if (peer < 0) {
        drops[Drop.noRoute]++;
        d[b + Desc.LEN] = 0;
        continue;
      }
      const off = d[b + Desc.OFF]! - encap;
      const w = off >> 1;
      const h = peer * 11;
      words[w] = hdr[h]!;
      words[w + 1] = hdr[h + 1]!;
      words[w + 2] = hdr[h + 2]!;
      words[w + 3] = hdr[h + 3]!;
      words[w + 4] = hdr[h + 4]!;
      words[w + 5] = hdr[h + 5]!;
      words[w + 6] = hdr[h + 6]!;
      words[w + 7] = hdr[h + 7]!;
      words[w + 8] = hdr[h + 8]!;
      words[w + 9] = hdr[h + 9]!;
      words[w + 10] = hdr[h + 10]!;
      d[b + Desc.OFF] = off;
      d[b + Desc.LEN] += encap;
      d[b + Desc.ADDR] = peerIp[peer]!;
      d[b + Desc.PORT] = port;
      d[b + Desc.FD] = sendFds[(d[b + Desc.FLOW]! >>> 0) % nFds]!;
      d[b + Desc.PEER] = peer;
      ready++;
    }
    return ready;
  }

  /**
   * Counts udpSend results of descriptors 0..n-1 (totals, per peer, send drops). A descriptor stands for
   * SEGS datagrams on the wire (1, or the segments of a split super-packet), whose inner bytes are the
   * payload plus one header (HDR_LEN) per segment. Switches UDP GSO off if a send was refused with EIO.
   */
  countSent(n: number): void {
    const d = this.tx.desc;
    const totals = this.counters.totals;
    const drops = this.counters.drops;
    const peers = this.counters.peer;
    const encap = this.encap;
    let refused = false;
    for (let i = 0; i < n; i++) {
      const b = i * Desc.WORDS;
      const len = d[b + Desc.LEN]!;
      if (len === 0) continue;
      const segs = d[b + Desc.SEGS]! > 0 ? d[b + Desc.SEGS]! : 1;
      const status = d[b + Desc.STATUS]!;
      if ((d[b + Desc.FLAGS]! & DescFlag.GSO_EIO) !== 0) refused = true;
      if (status === 0) {
        const inner = len - encap + (segs - 1) * d[b + Desc.HDR_LEN]!;
        const p = d[b + Desc.PEER]! * PeerCtr.WORDS;
        if (d[b + Desc.GSO_TYPE] !== 0) totals[Ctr.txSuperPackets]++;
        totals[Ctr.txPackets] += segs;
        totals[Ctr.txBytes] += inner;
        peers[p + PeerCtr.outPackets] += segs;
        peers[p + PeerCtr.outBytes] += inner;
      } else if (status === EAGAIN || status === EWOULDBLOCK || status === ENOBUFS) {
        drops[Drop.sendBusy] += segs;
      } else {
        drops[Drop.sendError] += segs;
      }
    }
    if (refused && (this.sendMode & SendMode.GSO) !== 0) {
      this.sendMode &= ~SendMode.GSO;
      this.onGsoRefused?.();
    }
  }

  /**
   * Validates udpRecv descriptors 0..n-1: datagrams, or UDP_GRO trains of GSO_SIZE-byte datagrams from
   * one sender (SEGS of them). The sender must be a current peer; every datagram's VXLAN/Ethernet/IPv4
   * framing is checked, and each rejected one is counted and flagged in REJECT_LO/HI (bit k = segment
   * k) for tunWrite. A descriptor with nothing accepted gets LEN 0. Descriptors stay in datagram form
   * (tunWrite strips the encapsulation); SEGS becomes the accepted count and AUX their inner bytes.
   * → descriptors to write.
   */
  decap(n: number): number {
    const d = this.rx.desc;
    const bytes = this.rx.bytes;
    const table = this.table;
    const drops = this.counters.drops;
    const vni = this.vni;
    const ownHi = this.ownHi;
    const ownLo = this.ownLo;
    let ready = 0;
    for (let i = 0; i < n; i++) {
      const b = i * Desc.WORDS;
      const len = d[b + Desc.LEN]!;
      const gso = d[b + Desc.GSO_SIZE]!;
      const seg = gso > 0 ? gso : len;
      const segs = d[b + Desc.SEGS]! > 0 ? d[b + Desc.SEGS]! : 1;
      d[b + Desc.REJECT_LO] = 0;
      d[b + Desc.REJECT_HI] = 0;
      if ((d[b + Desc.FLAGS]! & DescFlag.TRUNC) !== 0 || segs > 64) {
        drops[Drop.truncated] += segs;
        d[b + Desc.LEN] = 0;
        continue;
      }
      const off = d[b + Desc.OFF]!;
      let peer = table.peerBySource(d[b + Desc.ADDR]!);
      if (peer < 0 && !this.strictSource) peer = this.unlistedSource(bytes, off, len < seg ? len : seg, d[b + Desc.ADDR]!);
      if (peer < 0) {
        drops[Drop.unknownSource] += segs;
        d[b + Desc.LEN] = 0;
        continue;
      }
      let accepted = 0;
      let innerBytes = 0;
      let rejectLo = 0;
      let rejectHi = 0;
      // At least one pass, so an empty datagram is counted (short) like any other.
      let o = 0;
      let k = 0;
      do {
        const inner = decodeVxlanFrame(bytes, off + o, len - o < seg ? len - o : seg, vni, ownHi, ownLo);
        if (inner < 0) {
          drops[-inner]++;
          if (k < 32) rejectLo |= 1 << k;
          else rejectHi |= 1 << (k - 32);
        } else {
          accepted++;
          innerBytes += inner;
        }
        o += seg;
        k++;
      } while (o < len);
      if (accepted === 0) {
        d[b + Desc.LEN] = 0;
        continue;
      }
      d[b + Desc.REJECT_LO] = rejectLo;
      d[b + Desc.REJECT_HI] = rejectHi;
      d[b + Desc.PEER] = peer;
      d[b + Desc.SEGS] = accepted;
      d[b + Desc.AUX] = innerBytes;
      ready++;
    }
    return ready;
  }

  /** A sender that is no peer's PublicIP: accepted per peerForUnlistedSource (a GRO train by its first datagram). */
  private unlistedSource(bytes: Uint8Array, off: number, len: number, src: number): number {
    const peer = peerForUnlistedSource(bytes, off, len, this.vni, this.ownHi, this.ownLo, this.table);
    if (peer >= 0 && this.learned.remember(src, peer)) this.onSourceLearned?.(src, peer);
    return peer;
  }

  /**
   * Counts tunWrite results of descriptors 0..n-1: SEGS accepted segments / AUX inner bytes each.
   * Stops asking for GSO writes if the TUN refused one.
   */
  countWritten(n: number): void {
    const d = this.rx.desc;
    const totals = this.counters.totals;
    const drops = this.counters.drops;
    const peers = this.counters.peer;
    let refused = false;
    for (let i = 0; i < n; i++) {
      const b = i * Desc.WORDS;
      if (d[b + Desc.LEN] === 0) continue;
      const segs = d[b + Desc.SEGS]!;
      const flags = d[b + Desc.FLAGS]!;
      if ((flags & DescFlag.TUN_GSO_REFUSED) !== 0) refused = true;
      if (d[b + Desc.STATUS] === 0) {
        const bytes = d[b + Desc.AUX]!;
        const p = d[b + Desc.PEER]! * PeerCtr.WORDS;
        if ((flags & DescFlag.CSUM_FIXED) !== 0) totals[Ctr.csumRepaired]++;
        if ((flags & DescFlag.SEGMENTED) !== 0) totals[Ctr.rxSegmented]++;
        totals[Ctr.rxPackets] += segs;
        totals[Ctr.rxBytes] += bytes;
        peers[p + PeerCtr.inPackets] += segs;
        peers[p + PeerCtr.inBytes] += bytes;
      } else {
        drops[Drop.tunWriteError] += segs;
      }
    }
    if (refused && (this.writeMode & TunMode.NO_MERGE) === 0) {
      this.writeMode = (this.writeMode | TunMode.NO_MERGE) & ~TunMode.USO;
      this.onTunGsoRefused?.();
    }
  }
}
