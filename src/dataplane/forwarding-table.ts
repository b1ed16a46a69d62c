// Peer table of the data plane. Per-packet lookups touch only typed arrays (open-addressing hash tables
// keyed by int32, no Map, no objects): inner destination → peer slot by longest prefix among the prefix
// lengths present (normally one, the lease length), and outer source IP → peer slot for ingress
// validation. Changes come from the control plane (route manager) and are rare, so every change
// rebuilds both hash tables from the slot arrays: no tombstones, and lookups stay branch-light.
import { formatIp4Net, type Ip4, type Ip4Net, maskOf } from '../subnet/ip4';
import { ENCAP_LEN, writeEncapHeader } from './vxlan-codec';

export interface PeerEntry {
  readonly subnet: Ip4Net;
  /** Underlay address the peer's VXLAN arrives from and is sent to (lease PublicIP). */
  readonly publicIp: Ip4;
  /** The peer's VtepMAC (6 bytes): inner destination MAC of what we send it. */
  readonly vtepMac: Uint8Array;
}

export interface ForwardingTableOptions {
  /** Our VNI and VtepMAC: when given, the table keeps each peer's 22-byte VXLAN+Ethernet header ready. */
  readonly vni?: number;
  readonly localMac?: Uint8Array;
  readonly initialCapacity?: number;
}

export class ForwardingTableError extends Error {
  override name = 'ForwardingTableError';
}

const EMPTY = -1;

function hashBits(entries: number): number {
  let bits = 4;
  while (1 << bits < entries * 2) bits++;
  return bits;
}

export class ForwardingTable {
  /** Peer slot → public IP as int32 (`ip | 0`), the form descriptors carry. */
  publicIp: Int32Array;
  /** Peer slot → VtepMAC at [slot*6, slot*6+6). */
  vtepMac: Uint8Array;
  /** Peer slot → ready-made VXLAN+Ethernet header at [slot*22, slot*22+22) (needs vni/localMac). */
  encapHeaders: Uint8Array;
  /** encapHeaders as 16-bit words (11 per peer) for a two-bytes-at-a-time copy into the arena. */
  encapWords: Uint16Array;
  /** Peer slot → subnet network address / prefix length; prefixLen -1 marks a free slot. */
  private subnetIp: Int32Array;
  private prefixLen: Int8Array;
  private seq: Float64Array;
  private nextSeq = 1;
  private capacity: number;
  private freeSlots: number[] = [];
  private highWater = 0;
  private count = 0;
  /** Control-plane index only (never used per packet). */
  private readonly bySubnet = new Map<string, number>();

  // Destination hash: key = (network, prefix length) → slot.
  private dstBits = 4;
  private dstNet = new Int32Array(16);
  private dstLen = new Int8Array(16);
  private dstVal = new Int32Array(16).fill(EMPTY);
  /** Prefix lengths present, longest first, and their masks. */
  private lens = new Int32Array(33);
  private masks = new Int32Array(33);
  private nLens = 0;

  // Source hash: public IP → slot (the most recently set peer wins if several share an IP).
  private srcBits = 4;
  private srcKey = new Int32Array(16);
  private srcVal = new Int32Array(16).fill(EMPTY);

  private readonly vni: number;
  private readonly localMac: Uint8Array | undefined;

  constructor(options: ForwardingTableOptions = {}) {
    this.vni = options.vni ?? 0;
    this.localMac = options.localMac;
    this.capacity = Math.max(1, options.initialCapacity ?? 16);
    this.publicIp = new Int32Array(this.capacity);
    this.vtepMac = new Uint8Array(this.capacity * 6);
    this.encapHeaders = new Uint8Array(this.capacity * ENCAP_LEN);
    this.encapWords = new Uint16Array(this.encapHeaders.buffer);
    this.subnetIp = new Int32Array(this.capacity);
    this.prefixLen = new Int8Array(this.capacity).fill(-1);
    this.seq = new Float64Array(this.capacity);
  }

  get peerCount(): number {
    return this.count;
  }

  /** Slots are < slotCapacity; per-slot side tables (counters) size themselves by it. */
  get slotCapacity(): number {
    return this.capacity;
  }

  /** Adds or updates the peer owning `subnet` (a changed MAC or public IP replaces the old one) → its slot. */
  setPeer(peer: PeerEntry): number {
    const { subnet, publicIp, vtepMac } = peer;
    if (!Number.isInteger(subnet.prefixLen) || subnet.prefixLen < 0 || subnet.prefixLen > 32) {
      throw new ForwardingTableError(`peer subnet prefix length ${subnet.prefixLen} out of range`);
    }
    if ((subnet.ip & maskOf(subnet.prefixLen)) >>> 0 !== subnet.ip >>> 0) {
      throw new ForwardingTableError(`peer subnet ${formatIp4Net(subnet)} has host bits set`);
    }
    if (vtepMac.length !== 6) {
      throw new ForwardingTableError(`peer ${formatIp4Net(subnet)} VtepMAC must be 6 bytes, got ${vtepMac.length}`);
    }
    const key = formatIp4Net(subnet);
    let slot = this.bySubnet.get(key);
    if (slot === undefined) {
      slot = this.allocSlot();
      this.bySubnet.set(key, slot);
      this.count++;
    }
    this.subnetIp[slot] = subnet.ip | 0;
    this.prefixLen[slot] = subnet.prefixLen;
    this.publicIp[slot] = publicIp | 0;
    this.vtepMac.set(vtepMac, slot * 6);
    this.seq[slot] = this.nextSeq++;
    if (this.localMac !== undefined) {
      writeEncapHeader(this.encapHeaders, slot * ENCAP_LEN, this.vni, vtepMac, this.localMac);
    }
    this.rebuild();
    return slot;
  }

  /** Removes the peer owning exactly `subnet`; false if there was none. */
  removePeer(subnet: Ip4Net): boolean {
    const key = formatIp4Net(subnet);
    const slot = this.bySubnet.get(key);
    if (slot === undefined) return false;
    this.bySubnet.delete(key);
    this.prefixLen[slot] = -1;
    this.publicIp[slot] = 0;
    this.vtepMac.fill(0, slot * 6, slot * 6 + 6);
    this.encapHeaders.fill(0, slot * ENCAP_LEN, slot * ENCAP_LEN + ENCAP_LEN);
    this.freeSlots.push(slot);
    this.count--;
    this.rebuild();
    return true;
  }

  /** Slot of the peer owning exactly `subnet`, or -1. */
  slotOf(subnet: Ip4Net): number {
    return this.bySubnet.get(formatIp4Net(subnet)) ?? -1;
  }

  /** Subnet of a live slot (control-plane use: counters snapshot, logs). */
  subnetOf(slot: number): Ip4Net | undefined {
    if (slot < 0 || slot >= this.highWater || this.prefixLen[slot]! < 0) return undefined;
    return { ip: this.subnetIp[slot]! >>> 0, prefixLen: this.prefixLen[slot]! };
  }

  /** Peer slot for an inner destination (uint32 or int32 form), longest prefix first; -1 if none. */
  lookup(dst: number): number {
    const nLens = this.nLens;
    const net = this.dstNet;
    const lenOf = this.dstLen;
    const val = this.dstVal;
    const shift = 32 - this.dstBits;
    const tmask = (1 << this.dstBits) - 1;
    for (let i = 0; i < nLens; i++) {
      const len = this.lens[i]!;
      const key = dst & this.masks[i]!;
      let h = Math.imul(key ^ len, 0x9e3779b1) >>> shift;
      for (;;) {
        const v = val[h]!;
        if (v === EMPTY) break;
        if (net[h] === key && lenOf[h] === len) return v;
        h = (h + 1) & tmask;
      }
    }
    return -1;
  }

  /** Peer slot whose public IP is `src` (uint32 or int32 form); -1 if the sender is not a current peer. */
  peerBySource(src: number): number {
    const key = src | 0;
    const keys = this.srcKey;
    const val = this.srcVal;
    const tmask = (1 << this.srcBits) - 1;
    let h = Math.imul(key, 0x9e3779b1) >>> (32 - this.srcBits);
    for (;;) {
      const v = val[h]!;
      if (v === EMPTY) return -1;
      if (keys[h] === key) return v;
      h = (h + 1) & tmask;
    }
  }

  private allocSlot(): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) return reused;
    if (this.highWater === this.capacity) this.grow(this.capacity * 2);
    return this.highWater++;
  }

  private grow(capacity: number): void {
    const copy = <T extends Int32Array | Int8Array | Uint8Array | Float64Array>(old: T, fresh: T): T => {
      fresh.set(old);
      return fresh;
    };
    this.publicIp = copy(this.publicIp, new Int32Array(capacity));
    this.vtepMac = copy(this.vtepMac, new Uint8Array(capacity * 6));
    this.encapHeaders = copy(this.encapHeaders, new Uint8Array(capacity * ENCAP_LEN));
    this.encapWords = new Uint16Array(this.encapHeaders.buffer);
    this.subnetIp = copy(this.subnetIp, new Int32Array(capacity));
    this.prefixLen = copy(this.prefixLen, new Int8Array(capacity).fill(-1));
    this.seq = copy(this.seq, new Float64Array(capacity));
    this.capacity = capacity;
  }

  private rebuild(): void {
    const live: number[] = [];
    for (let s = 0; s < this.highWater; s++) if (this.prefixLen[s]! >= 0) live.push(s);

    const present = new Set<number>();
    for (const s of live) present.add(this.prefixLen[s]!);
    const lens = [...present].sort((a, b) => b - a);
    this.nLens = lens.length;
    for (let i = 0; i < lens.length; i++) {
      this.lens[i] = lens[i]!;
      this.masks[i] = maskOf(lens[i]!) | 0;
    }

    const dBits = hashBits(live.length);
    const dSize = 1 << dBits;
    const dNet = new Int32Array(dSize);
    const dLen = new Int8Array(dSize);
    const dVal = new Int32Array(dSize).fill(EMPTY);
    for (const s of live) {
      const key = this.subnetIp[s]!;
      const len = this.prefixLen[s]!;
      let h = Math.imul(key ^ len, 0x9e3779b1) >>> (32 - dBits);
      while (dVal[h] !== EMPTY) h = (h + 1) & (dSize - 1);
      dNet[h] = key;
      dLen[h] = len;
      dVal[h] = s;
    }

    // Insert in set order so that, for a public IP shared by several leases, the newest one wins.
    const bySeq = live.slice().sort((a, b) => this.seq[a]! - this.seq[b]!);
    const sBits = hashBits(live.length);
    const sSize = 1 << sBits;
    const sKey = new Int32Array(sSize);
    const sVal = new Int32Array(sSize).fill(EMPTY);
    for (const s of bySeq) {
      const key = this.publicIp[s]!;
      let h = Math.imul(key, 0x9e3779b1) >>> (32 - sBits);
      while (sVal[h] !== EMPTY && sKey[h] !== key) h = (h + 1) & (sSize - 1);
      sKey[h] = key;
      sVal[h] = s;
    }

    this.dstBits = dBits;
    this.dstNet = dNet;
    this.dstLen = dLen;
    this.dstVal = dVal;
    this.srcBits = sBits;
    this.srcKey = sKey;
    this.srcVal = sVal;
  }
}
