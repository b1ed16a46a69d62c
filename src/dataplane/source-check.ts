// Ingress from an outer source that is no peer's published PublicIP. A flanneld node's kernel VXLAN
// device sends from the address its routing picks, which need not be the PublicIP it published (for
// example -public-ip set to a secondary address); kernel VXLAN receivers accept any source, so such
// clusters work and tsflanneld must accept these frames too (README "Security": the trade-off).
// Pure, allocation-free functions over the receive arena, called from PacketLoop.decap.
import type { PeerLookup } from './forwarding-table';
import { ENCAP_LEN, VXLAN_HDR_LEN, decodeVxlanFrame } from './vxlan-codec';

/**
 * The peer slot a datagram from an unlisted outer source is accepted for, or -1 (drop as unknownSource).
 * Accepted only when all hold: the frame is valid for us (VNI ours, IPv4 inside, sane IPv4 header:
 * decodeVxlanFrame), the inner destination MAC is exactly our VtepMAC (broadcast is not enough), and
 * the inner source address lies in a current peer's subnet, whose slot is returned.
 * `ownHi`/`ownLo`: macHi/macLo of our VtepMAC.
 */
export function peerForUnlistedSource(
  bytes: Uint8Array,
  off: number,
  len: number,
  vni: number,
  ownHi: number,
  ownLo: number,
  table: Pick<PeerLookup, 'lookup'>,
): number {
  if (decodeVxlanFrame(bytes, off, len, vni, ownHi, ownLo) < 0) return -1;
  const e = off + VXLAN_HDR_LEN;
  if (((bytes[e]! << 8) | bytes[e + 1]!) !== ownHi) return -1;
  if (((bytes[e + 2]! << 24) | (bytes[e + 3]! << 16) | (bytes[e + 4]! << 8) | bytes[e + 5]!) !== ownLo) return -1;
  const s = off + ENCAP_LEN + 12; // IPv4 source address
  return table.lookup((bytes[s]! << 24) | (bytes[s + 1]! << 16) | (bytes[s + 2]! << 8) | bytes[s + 3]!);
}

/**
 * Outer sources accepted through peerForUnlistedSource, remembered per peer slot so the control plane
 * hears of each (source, peer) pair once. Fixed capacity, open addressing over typed arrays: remember()
 * allocates nothing; when full, further pairs are still accepted but no longer reported.
 */
export class LearnedSources {
  private readonly keys: Int32Array;
  private readonly slots: Int32Array;
  private readonly used: Uint8Array;
  private readonly mask: number;
  private count = 0;

  /** `capacity`: a power of two. */
  constructor(capacity = 256) {
    if (!Number.isInteger(Math.log2(capacity)) || capacity < 2) throw new RangeError(`capacity ${capacity} is not a power of two ≥ 2`);
    this.keys = new Int32Array(capacity);
    this.slots = new Int32Array(capacity);
    this.used = new Uint8Array(capacity);
    this.mask = capacity - 1;
  }

  /** Records src → slot; true when the pair is new (or src moved to another slot), i.e. worth reporting. */
  remember(src: number, slot: number): boolean {
    const key = src | 0;
    let h = Math.imul(key, 0x9e3779b1) >>> 24;
    for (let probes = 0; probes <= this.mask; probes++) {
      h &= this.mask;
      if (this.used[h] === 0) {
        if (this.count >= (this.mask + 1) >>> 1) return false; // half full: stop learning
        this.used[h] = 1;
        this.keys[h] = key;
        this.slots[h] = slot;
        this.count++;
        return true;
      }
      if (this.keys[h] === key) {
        if (this.slots[h] === slot) return false;
        this.slots[h] = slot;
        return true;
      }
      h++;
    }
    return false;
  }

  /** Slot remembered for src, or -1. */
  slotOf(src: number): number {
    const key = src | 0;
    let h = Math.imul(key, 0x9e3779b1) >>> 24;
    for (let probes = 0; probes <= this.mask; probes++) {
      h &= this.mask;
      if (this.used[h] === 0) return -1;
      if (this.keys[h] === key) return this.slots[h]!;
      h++;
    }
    return -1;
  }
}
