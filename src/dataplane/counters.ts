// Data-plane counters in typed arrays: the hot loop only does `arr[i] += x`; snapshot() builds the
// object the daemon logs/exports. Float64 so byte counts don't wrap (exact up to 2^53).
// Each forwarding thread owns one Counters over SharedArrayBuffers (it is the only writer); the main
// thread views the same memory and sums the threads on scrape (no locks: a scrape may see a batch half
// counted, never a torn word, since every word is written by one thread).
import { DROP_NAMES, DROP_REASON_COUNT } from './vxlan-codec';

export const enum Ctr {
  txPackets = 0,
  txBytes = 1,
  rxPackets = 2,
  rxBytes = 3,
  /** poll callbacks / native read batches per direction: packets ÷ batches shows how well batching works. */
  txWakeups = 4,
  txBatches = 5,
  rxWakeups = 6,
  rxBatches = 7,
  /** tunRead/udpRecv returned an error (each one is also logged). */
  ioErrors = 8,
  /** Ingress packets whose partial inner checksum (offloading sender) was completed before the TUN write. */
  csumRepaired = 9,
  /** Ingress TCP super-packets (a peer's GSO packet received whole) split into MTU-sized segments. */
  rxSegmented = 10,
  /** Egress TSO/USO super-packets read from the TUN (each split into txPackets segments). */
  txSuperPackets = 11,
  /** UDP messages handed to sendmmsg (with UDP GSO one message carries up to 64 datagrams). */
  txSends = 12,
  /** Writes to the TUN (with coalescing one write carries up to 64 received segments). */
  rxTunWrites = 13,
  COUNT = 14,
}

/** Per-peer words at peer[slot * PEER_WORDS + i]. */
export const enum PeerCtr {
  inPackets = 0,
  inBytes = 1,
  outPackets = 2,
  outBytes = 3,
  WORDS = 4,
}

export interface PeerCounters {
  inPackets: number;
  inBytes: number;
  outPackets: number;
  outBytes: number;
}

/** Byte counts are inner IPv4 bytes (what the TUN sees), both directions. */
export interface CountersSnapshot {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  txWakeups: number;
  txBatches: number;
  rxWakeups: number;
  rxBatches: number;
  ioErrors: number;
  csumRepaired: number;
  rxSegmented: number;
  txSuperPackets: number;
  txSends: number;
  rxTunWrites: number;
  drops: Record<string, number>;
  /** Keyed by peer subnet "10.5.2.0/24". */
  peers: Record<string, PeerCounters>;
}

/** The memory of one thread's counters (posted to the thread at start). */
export interface CounterBuffers {
  readonly totals: SharedArrayBuffer;
  readonly drops: SharedArrayBuffer;
  readonly peer: SharedArrayBuffer;
}

/** Shared per-peer counter memory for `slots` peer slots. */
export function sharedPeerBuffer(slots: number): SharedArrayBuffer {
  return new SharedArrayBuffer(slots * PeerCtr.WORDS * Float64Array.BYTES_PER_ELEMENT);
}

export function sharedCounterBuffers(peerSlots: number): CounterBuffers {
  return {
    totals: new SharedArrayBuffer(Ctr.COUNT * Float64Array.BYTES_PER_ELEMENT),
    drops: new SharedArrayBuffer(DROP_REASON_COUNT * Float64Array.BYTES_PER_ELEMENT),
    peer: sharedPeerBuffer(peerSlots),
  };
}

export class Counters {
  readonly totals: Float64Array;
  readonly drops: Float64Array;
  peer: Float64Array;

  /** Private memory for `peerCapacity` slots, or views over shared buffers (a forwarding thread's). */
  constructor(peerCapacity = 16, buffers?: CounterBuffers) {
    this.totals = new Float64Array(buffers?.totals ?? new ArrayBuffer(Ctr.COUNT * 8));
    this.drops = new Float64Array(buffers?.drops ?? new ArrayBuffer(DROP_REASON_COUNT * 8));
    this.peer = new Float64Array(buffers?.peer ?? new ArrayBuffer(peerCapacity * PeerCtr.WORDS * 8));
  }

  /** Adds every count of `other` into this one (scrape: the sum over forwarding threads). */
  addFrom(other: Counters): void {
    for (let i = 0; i < this.totals.length; i++) this.totals[i]! += other.totals[i]!;
    for (let i = 0; i < this.drops.length; i++) this.drops[i]! += other.drops[i]!;
    const n = Math.min(this.peer.length, other.peer.length);
    for (let i = 0; i < n; i++) this.peer[i]! += other.peer[i]!;
  }

  ensurePeerCapacity(slots: number): void {
    if (this.peer.length >= slots * PeerCtr.WORDS) return;
    const grown = new Float64Array(slots * PeerCtr.WORDS);
    grown.set(this.peer);
    this.peer = grown;
  }

  /** Zeroes a slot that now belongs to a different peer. */
  resetPeer(slot: number): void {
    this.peer.fill(0, slot * PeerCtr.WORDS, (slot + 1) * PeerCtr.WORDS);
  }

  snapshot(peerSubnets: ReadonlyArray<readonly [slot: number, subnet: string]>): CountersSnapshot {
    const t = this.totals;
    const drops: Record<string, number> = {};
    for (let r = 1; r < DROP_REASON_COUNT; r++) drops[DROP_NAMES[r]!] = this.drops[r]!;
    const peers: Record<string, PeerCounters> = {};
    for (const [slot, subnet] of peerSubnets) {
      const b = slot * PeerCtr.WORDS;
      peers[subnet] = {
        inPackets: this.peer[b + PeerCtr.inPackets]!,
        inBytes: this.peer[b + PeerCtr.inBytes]!,
        outPackets: this.peer[b + PeerCtr.outPackets]!,
        outBytes: this.peer[b + PeerCtr.outBytes]!,
      };
    }
    return {
      txPackets: t[Ctr.txPackets]!,
      txBytes: t[Ctr.txBytes]!,
      rxPackets: t[Ctr.rxPackets]!,
      rxBytes: t[Ctr.rxBytes]!,
      txWakeups: t[Ctr.txWakeups]!,
      txBatches: t[Ctr.txBatches]!,
      rxWakeups: t[Ctr.rxWakeups]!,
      rxBatches: t[Ctr.rxBatches]!,
      ioErrors: t[Ctr.ioErrors]!,
      csumRepaired: t[Ctr.csumRepaired]!,
      rxSegmented: t[Ctr.rxSegmented]!,
      txSuperPackets: t[Ctr.txSuperPackets]!,
      txSends: t[Ctr.txSends]!,
      rxTunWrites: t[Ctr.rxTunWrites]!,
      drops,
      peers,
    };
  }
}
