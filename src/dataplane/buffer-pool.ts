// Arena + descriptor table of one ring (layout: native/src/dataplane.h). Allocated once with
// `new ArrayBuffer` (not from Buffer's pool, never transferred) and registered with the addon, so
// every batch afterwards moves only integers across the JS/native boundary.
import { Desc, Frame } from './layout';
import type { DataplaneNative } from './native';

export interface RingOptions {
  /** Packets per batch = slots in the arena. */
  readonly slots: number;
  /** Bytes per slot: ≥ headroom + the largest packet (2 KiB per-packet path; 64 KiB+ for offloads). */
  readonly slotSize: number;
  /** Bytes in front of the inner IP packet in every slot; ≥ 32 (VXLAN+Ethernet 22 + vnet header 10). */
  readonly headroom: number;
  /**
   * Encapsulation bytes in front of the inner packet on the wire (native strips/places/copies that many);
   * 0..22, default 22 (VXLAN 8 + Ethernet 14).
   */
  readonly encapLen?: number;
}

/** TUN reads without offloads: packets ≤ MTU. */
export const DEFAULT_TX_RING: RingOptions = { slots: 64, slotSize: 2048, headroom: 64 };
/** TUN reads with TSO/USO: a super-packet of up to 64 KiB (+ the vnet header inside the headroom). */
export const OFFLOAD_TX_RING: RingOptions = { slots: 32, slotSize: 65536 + 64, headroom: 64 };
/** UDP receive: a peer's GSO super-packet or a UDP_GRO train can arrive as one datagram of up to 64 KiB. */
export const DEFAULT_RX_RING: RingOptions = { slots: 64, slotSize: 65536 + 64, headroom: 64 };

export class RingConfigError extends Error {
  override name = 'RingConfigError';
}

export class Ring {
  readonly arena: ArrayBuffer;
  readonly bytes: Uint8Array;
  /** Same memory as 16-bit words: headers are copied two bytes at a time (offsets are even). */
  readonly words: Uint16Array;
  readonly desc: Int32Array;
  readonly slots: number;
  readonly slotSize: number;
  readonly headroom: number;
  readonly encapLen: number;
  /** Native ring id once registered, else -1. */
  id = -1;

  constructor(options: RingOptions = DEFAULT_TX_RING) {
    const { slots, slotSize, headroom } = options;
    if (!Number.isInteger(slots) || slots < 1 || slots > 4096) {
      throw new RingConfigError(`ring slots ${slots} out of range 1..4096`);
    }
    if (!Number.isInteger(headroom) || headroom < (Frame.MIN_HEADROOM as number) || headroom % 2 !== 0) {
      throw new RingConfigError(`ring headroom ${headroom} must be even and ≥ ${Frame.MIN_HEADROOM}`);
    }
    if (!Number.isInteger(slotSize) || slotSize < headroom + 128 || slotSize % 2 !== 0 || slotSize > 1 << 20) {
      throw new RingConfigError(`ring slot size ${slotSize} must be even, ≥ headroom + 128 and ≤ 1 MiB`);
    }
    this.slots = slots;
    this.slotSize = slotSize;
    this.headroom = headroom;
    const encapLen = options.encapLen ?? Frame.ENCAP_LEN;
    if (!Number.isInteger(encapLen) || encapLen < 0 || encapLen > (Frame.ENCAP_LEN as number)) {
      throw new RingConfigError(`ring encapsulation length ${encapLen} out of range 0..${Frame.ENCAP_LEN}`);
    }
    this.encapLen = encapLen;
    this.arena = new ArrayBuffer(slots * slotSize);
    this.bytes = new Uint8Array(this.arena);
    this.words = new Uint16Array(this.arena);
    this.desc = new Int32Array(slots * Desc.WORDS);
  }

  register(native: DataplaneNative): void {
    if (this.id < 0) this.id = native.ringRegister(this.arena, this.desc, this.slotSize, this.headroom, this.encapLen);
  }

  release(native: DataplaneNative): void {
    if (this.id >= 0) {
      native.ringRelease(this.id);
      this.id = -1;
    }
  }

  /** Offset of the inner IP packet in slot i (where tunRead puts it and udpRecv's datagram ends up). */
  ipOffset(slot: number): number {
    return slot * this.slotSize + this.headroom;
  }
}
