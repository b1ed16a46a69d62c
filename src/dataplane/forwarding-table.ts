// Peer table of the data plane, split in two:
//
//  - ForwardingTable, the writer. It lives on the main thread next to the route manager and owns the
//    authoritative, mutable state (subnet → slot, per-slot lease data). Every change is O(1) amortised
//    and only marks keys dirty; a batch of changes (the watcher's first snapshot, one watch response)
//    is published once, as a new generation.
//  - ForwardingTableReader, what the packet loop reads. Every lookup touches only typed arrays over
//    SharedArrayBuffers (open-addressing hash tables keyed by int32, no Map, no objects): inner
//    destination → peer slot by longest prefix among the prefix lengths present (normally one, the
//    lease length), and outer source IP → peer slot for ingress validation, plus per-slot public IP,
//    VtepMAC and the prebuilt 22-byte VXLAN+Ethernet header. A reader may live in a worker thread: it
//    attaches to the writer's `handle` (plain object of SharedArrayBuffers, postMessage-able) and calls
//    refresh() between batches. No locks on the packet path.
//
// Consistency: double buffering with a hazard-style acknowledgement.
//  - There are two banks, each a complete copy of what readers read. The generation number g (in the
//    control block) says which one is current: bank g & 1. Readers only ever read the current or the
//    previous generation's bank; the writer only ever writes the other one.
//  - To publish g+1 the writer writes into bank (g+1) & 1, which held g-1. It may do so only when no
//    reader still uses g-1: every reader announces the generation it uses in its own acknowledgement
//    word (0 = idle, reading nothing). refresh() stores ack = g and then re-reads the generation; if it
//    moved meanwhile it retries with the new one, so after refresh() returns, the writer (whose publish
//    is an Atomics.store of the generation, then Atomics.load of the acks) either saw our ack or we saw
//    its generation (Atomics are sequentially consistent). A reader therefore never sees a bank while
//    it is being written, i.e. never a half-applied batch.
//  - The bank being written lags one generation behind. The writer keeps the dirty keys of the last
//    publish ("lag") and replays them before the new ones ("pending"): the replay copies the current
//    authoritative value of each dirty key, so it is idempotent and a key changed k times in a burst is
//    written once. Every change is thus applied exactly twice (once per bank), O(1) each.
//  - If a reader lags (still on g-1 when g+1 is due), the writer does not wait: the changes stay pending,
//    `wakeReaders` is called, and publish is retried on a short timer. Readers that block (poll/epoll)
//    call idle() first so they never hold up the writer.
//  - Slots freed in a generation are reused only by later generations, so a reader on the previous
//    generation never sees a slot change owner under it (per-slot counters stay with their peer).
//
// Capacity: the banks are preallocated for `maxPeers` (default 65,536: a /8 Network in /24 leases).
// The memory is allocated zeroed and only the pages in use are touched (hash tables grow inside their
// region by doubling), so 10,000 peers use ~1 MiB of the reserved ~9 MiB.
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
  /** Initial size of the writer's own per-slot arrays (they double as needed up to maxPeers). */
  readonly initialCapacity?: number;
  /** Most peers the table can hold (shared banks are sized for it). Default 65,536. */
  readonly maxPeers?: number;
  /** Called when a publish had to wait for a reader still on an older generation (e.g. to kick a poll). */
  readonly wakeReaders?: () => void;
}

/** What the packet loop needs from a table; implemented by ForwardingTableReader (and ForwardingTable). */
export interface PeerLookup {
  /** Peer slot for an inner destination (uint32 or int32 form), longest prefix first; -1 if none. */
  lookup(dst: number): number;
  /** Peer slot whose public IP is `src` (uint32 or int32 form); -1 if the sender is not a current peer. */
  peerBySource(src: number): number;
  /** Peer slot → public IP as int32 (`ip | 0`), the form descriptors carry. */
  readonly publicIp: Int32Array;
  /** Peer slot → 22-byte header as 16-bit words (11 per peer) for a two-bytes-at-a-time copy into the arena. */
  readonly encapWords: Uint16Array;
}

/**
 * Everything a reader in another thread needs: postMessage() it (SharedArrayBuffers are shared, not
 * copied) and call ForwardingTableReader.attach() on the other side.
 */
export interface ForwardingTableHandle {
  readonly version: 1;
  readonly maxPeers: number;
  readonly control: SharedArrayBuffer;
  readonly banks: readonly [SharedArrayBuffer, SharedArrayBuffer];
}

export class ForwardingTableError extends Error {
  override name = 'ForwardingTableError';
}

export const DEFAULT_MAX_PEERS = 65_536;
/** Readers (forwarding threads) that can attach at once. */
export const MAX_READERS = 64;

// Control block (Int32Array): the current generation, then one acknowledgement word per reader
// (-1 = free, 0 = attached but idle, g > 0 = reading generation g).
const C_GEN = 0;
const C_ACK = 4;
const CONTROL_INTS = C_ACK + MAX_READERS;

// Bank meta block (Int32Array at offset 0 of each bank).
const M_DST_BITS = 0;
const M_SRC_BITS = 1;
const M_NLENS = 2;
const M_DST_COUNT = 3;
const M_SRC_COUNT = 4;
const M_PEERS = 5;
const M_LENS = 8; // 33 prefix lengths present, longest first
const M_MASKS = 48; // their masks as int32
const META_INTS = 96;

const MIN_BITS = 4;
const HASH_MUL = 0x9e3779b1;

interface BankLayout {
  readonly hashCap: number;
  readonly maxBits: number;
  readonly bytes: number;
  readonly off: {
    dstNet: number;
    dstLen: number;
    dstVal: number;
    srcKey: number;
    srcVal: number;
    publicIp: number;
    encap: number;
    mac: number;
  };
}

function bankLayout(maxPeers: number): BankLayout {
  let maxBits = MIN_BITS;
  while (1 << maxBits < maxPeers * 2) maxBits++;
  const hashCap = 1 << maxBits;
  let at = META_INTS * 4;
  const take = (bytes: number): number => {
    const o = at;
    at += Math.ceil(bytes / 8) * 8;
    return o;
  };
  const off = {
    dstNet: take(hashCap * 4),
    dstLen: take(hashCap * 4),
    dstVal: take(hashCap * 4),
    srcKey: take(hashCap * 4),
    srcVal: take(hashCap * 4),
    publicIp: take(maxPeers * 4),
    encap: take(maxPeers * ENCAP_LEN),
    mac: take(maxPeers * 6),
  };
  return { hashCap, maxBits, bytes: at, off };
}

/** Typed-array views of one bank. Hash values are slot + 1 (0 = empty, so fresh memory is an empty table). */
class Bank {
  readonly meta: Int32Array;
  readonly lens: Int32Array;
  readonly masks: Int32Array;
  readonly dstNet: Int32Array;
  readonly dstLen: Int32Array;
  readonly dstVal: Int32Array;
  readonly srcKey: Int32Array;
  readonly srcVal: Int32Array;
  readonly publicIp: Int32Array;
  readonly encapHeaders: Uint8Array;
  readonly encapWords: Uint16Array;
  readonly vtepMac: Uint8Array;

  constructor(sab: SharedArrayBuffer, maxPeers: number, layout: BankLayout) {
    const { hashCap, off } = layout;
    this.meta = new Int32Array(sab, 0, META_INTS);
    this.lens = this.meta.subarray(M_LENS, M_LENS + 33);
    this.masks = this.meta.subarray(M_MASKS, M_MASKS + 33);
    this.dstNet = new Int32Array(sab, off.dstNet, hashCap);
    this.dstLen = new Int32Array(sab, off.dstLen, hashCap);
    this.dstVal = new Int32Array(sab, off.dstVal, hashCap);
    this.srcKey = new Int32Array(sab, off.srcKey, hashCap);
    this.srcVal = new Int32Array(sab, off.srcVal, hashCap);
    this.publicIp = new Int32Array(sab, off.publicIp, maxPeers);
    this.encapHeaders = new Uint8Array(sab, off.encap, maxPeers * ENCAP_LEN);
    this.encapWords = new Uint16Array(sab, off.encap, (maxPeers * ENCAP_LEN) / 2);
    this.vtepMac = new Uint8Array(sab, off.mac, maxPeers * 6);
  }
}

// ---- hash tables inside a bank (writer side). Linear probing, load ≤ 1/2, backward-shift deletion
// (no tombstones, so lookups of absent keys stay short). All O(1) expected; growth (doubling, O(n))
// is amortised O(1) per insert.

function dstHome(net: number, len: number, bits: number): number {
  return Math.imul(net ^ len, HASH_MUL) >>> (32 - bits);
}

function srcHome(key: number, bits: number): number {
  return Math.imul(key, HASH_MUL) >>> (32 - bits);
}

function dstRehash(b: Bank, bits: number): void {
  const oldSize = 1 << b.meta[M_DST_BITS]!;
  const n = b.meta[M_DST_COUNT]!;
  const net = new Int32Array(n);
  const len = new Int32Array(n);
  const val = new Int32Array(n);
  let k = 0;
  for (let i = 0; i < oldSize; i++) {
    if (b.dstVal[i] === 0) continue;
    net[k] = b.dstNet[i]!;
    len[k] = b.dstLen[i]!;
    val[k++] = b.dstVal[i]!;
  }
  const size = 1 << bits;
  b.dstNet.fill(0, 0, size);
  b.dstLen.fill(0, 0, size);
  b.dstVal.fill(0, 0, size);
  for (let e = 0; e < k; e++) {
    let h = dstHome(net[e]!, len[e]!, bits);
    while (b.dstVal[h] !== 0) h = (h + 1) & (size - 1);
    b.dstNet[h] = net[e]!;
    b.dstLen[h] = len[e]!;
    b.dstVal[h] = val[e]!;
  }
  b.meta[M_DST_BITS] = bits;
}

function dstPut(b: Bank, maxBits: number, net: number, len: number, slot: number): void {
  for (;;) {
    const bits = b.meta[M_DST_BITS]!;
    const mask = (1 << bits) - 1;
    let h = dstHome(net, len, bits);
    while (b.dstVal[h] !== 0) {
      if (b.dstNet[h] === net && b.dstLen[h] === len) {
        b.dstVal[h] = slot + 1;
        return;
      }
      h = (h + 1) & mask;
    }
    if ((b.meta[M_DST_COUNT]! + 1) * 2 > 1 << bits && bits < maxBits) {
      dstRehash(b, bits + 1);
      continue;
    }
    b.dstNet[h] = net;
    b.dstLen[h] = len;
    b.dstVal[h] = slot + 1;
    b.meta[M_DST_COUNT]!++;
    return;
  }
}

function dstDelete(b: Bank, net: number, len: number): void {
  const bits = b.meta[M_DST_BITS]!;
  const mask = (1 << bits) - 1;
  let i = dstHome(net, len, bits);
  for (;;) {
    if (b.dstVal[i] === 0) return;
    if (b.dstNet[i] === net && b.dstLen[i] === len) break;
    i = (i + 1) & mask;
  }
  let j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (b.dstVal[j] === 0) break;
    const home = dstHome(b.dstNet[j]!, b.dstLen[j]!, bits);
    // Entry j may move into the hole at i unless its home lies cyclically in (i, j].
    if (((j - home) & mask) >= ((j - i) & mask)) {
      b.dstNet[i] = b.dstNet[j]!;
      b.dstLen[i] = b.dstLen[j]!;
      b.dstVal[i] = b.dstVal[j]!;
      i = j;
    }
  }
  b.dstNet[i] = 0;
  b.dstLen[i] = 0;
  b.dstVal[i] = 0;
  b.meta[M_DST_COUNT]!--;
}

function srcRehash(b: Bank, bits: number): void {
  const oldSize = 1 << b.meta[M_SRC_BITS]!;
  const n = b.meta[M_SRC_COUNT]!;
  const key = new Int32Array(n);
  const val = new Int32Array(n);
  let k = 0;
  for (let i = 0; i < oldSize; i++) {
    if (b.srcVal[i] === 0) continue;
    key[k] = b.srcKey[i]!;
    val[k++] = b.srcVal[i]!;
  }
  const size = 1 << bits;
  b.srcKey.fill(0, 0, size);
  b.srcVal.fill(0, 0, size);
  for (let e = 0; e < k; e++) {
    let h = srcHome(key[e]!, bits);
    while (b.srcVal[h] !== 0) h = (h + 1) & (size - 1);
    b.srcKey[h] = key[e]!;
    b.srcVal[h] = val[e]!;
  }
  b.meta[M_SRC_BITS] = bits;
}

function srcPut(b: Bank, maxBits: number, key: number, slot: number): void {
  for (;;) {
    const bits = b.meta[M_SRC_BITS]!;
    const mask = (1 << bits) - 1;
    let h = srcHome(key, bits);
    while (b.srcVal[h] !== 0) {
      if (b.srcKey[h] === key) {
        b.srcVal[h] = slot + 1;
        return;
      }
      h = (h + 1) & mask;
    }
    if ((b.meta[M_SRC_COUNT]! + 1) * 2 > 1 << bits && bits < maxBits) {
      srcRehash(b, bits + 1);
      continue;
    }
    b.srcKey[h] = key;
    b.srcVal[h] = slot + 1;
    b.meta[M_SRC_COUNT]!++;
    return;
  }
}

function srcDelete(b: Bank, key: number): void {
  const bits = b.meta[M_SRC_BITS]!;
  const mask = (1 << bits) - 1;
  let i = srcHome(key, bits);
  for (;;) {
    if (b.srcVal[i] === 0) return;
    if (b.srcKey[i] === key) break;
    i = (i + 1) & mask;
  }
  let j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (b.srcVal[j] === 0) break;
    const home = srcHome(b.srcKey[j]!, bits);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      b.srcKey[i] = b.srcKey[j]!;
      b.srcVal[i] = b.srcVal[j]!;
      i = j;
    }
  }
  b.srcKey[i] = 0;
  b.srcVal[i] = 0;
  b.meta[M_SRC_COUNT]!--;
}

function checkHandle(handle: ForwardingTableHandle): BankLayout {
  if ((handle.version as number) !== 1)
    throw new ForwardingTableError(`forwarding table handle version ${String(handle.version)} is not 1`);
  const layout = bankLayout(handle.maxPeers);
  if (handle.control.byteLength < CONTROL_INTS * 4 || handle.banks.some((b) => b.byteLength < layout.bytes)) {
    throw new ForwardingTableError('forwarding table handle is smaller than its maxPeers needs');
  }
  return layout;
}

/**
 * Read-only view of the published table, for the packet loop (any thread). Lookups are O(L) hash
 * probes, L = number of distinct prefix lengths (normally 1), and allocate nothing.
 *
 * Protocol: refresh() before each batch of packets; the views (publicIp, encapWords, vtepMac,
 * encapHeaders) and lookups then stay on that generation until the next refresh(). A thread about
 * to block calls idle() so the writer need not wait for it; after idle() call refresh() before reading.
 */
export class ForwardingTableReader implements PeerLookup {
  publicIp: Int32Array;
  encapWords: Uint16Array;
  encapHeaders: Uint8Array;
  vtepMac: Uint8Array;

  private readonly control: Int32Array;
  private readonly banks: readonly [Bank, Bank];
  /** Ack word index in the control block; -1 for the writer's own same-thread reader (not tracked). */
  private readonly index: number;
  private gen = 0;
  private holding = false;
  private dstBits = MIN_BITS;
  private dstNet: Int32Array;
  private dstLen: Int32Array;
  private dstVal: Int32Array;
  private srcBits = MIN_BITS;
  private srcKey: Int32Array;
  private srcVal: Int32Array;
  private lens: Int32Array;
  private masks: Int32Array;
  private nLens = 0;
  private peers = 0;
  private detached = false;

  /** Attaches a reader to a table (another thread's handle is fine); at most MAX_READERS at once. */
  static attach(handle: ForwardingTableHandle): ForwardingTableReader {
    return new ForwardingTableReader(handle, false);
  }

  /** @internal the writer's same-thread reader: not announced, moved by the writer right at publish. */
  static local(handle: ForwardingTableHandle): ForwardingTableReader {
    return new ForwardingTableReader(handle, true);
  }

  private constructor(handle: ForwardingTableHandle, local: boolean) {
    const layout = checkHandle(handle);
    this.control = new Int32Array(handle.control, 0, CONTROL_INTS);
    this.banks = [new Bank(handle.banks[0], handle.maxPeers, layout), new Bank(handle.banks[1], handle.maxPeers, layout)];
    let index = -1;
    if (!local) {
      for (let i = 0; i < MAX_READERS && index < 0; i++) {
        if (Atomics.compareExchange(this.control, C_ACK + i, -1, 0) === -1) index = i;
      }
      if (index < 0) throw new ForwardingTableError(`more than ${MAX_READERS} forwarding table readers attached`);
    }
    this.index = index;
    const b = this.banks[0];
    this.publicIp = b.publicIp;
    this.encapWords = b.encapWords;
    this.encapHeaders = b.encapHeaders;
    this.vtepMac = b.vtepMac;
    this.dstNet = b.dstNet;
    this.dstLen = b.dstLen;
    this.dstVal = b.dstVal;
    this.srcKey = b.srcKey;
    this.srcVal = b.srcVal;
    this.lens = b.lens;
    this.masks = b.masks;
    this.refresh();
  }

  /** Generation in use (increases by one per publish). */
  get generation(): number {
    return this.gen;
  }

  /** Peers in the generation in use. */
  get peerCount(): number {
    return this.peers;
  }

  /**
   * Moves to the newest published generation; true if that is a different one. O(1), no allocation.
   * Call between batches, never while a batch still uses slots or views of the previous generation.
   */
  refresh(): boolean {
    const ctl = this.control;
    let g = Atomics.load(ctl, C_GEN);
    if (g === this.gen && this.holding) return false;
    if (this.index >= 0) {
      if (this.detached) throw new ForwardingTableError('forwarding table reader used after detach()');
      for (;;) {
        Atomics.store(ctl, C_ACK + this.index, g);
        const again = Atomics.load(ctl, C_GEN);
        if (again === g) break;
        g = again;
      }
    }
    this.holding = true;
    if (g === this.gen) return false;
    this.use(g);
    return true;
  }

  /** Stops reading until the next refresh(): the writer may then overwrite anything this reader saw. */
  idle(): void {
    if (this.index >= 0 && !this.detached) Atomics.store(this.control, C_ACK + this.index, 0);
    this.holding = false;
  }

  /** Gives the reader's ack word back; the reader must not be used afterwards. */
  detach(): void {
    if (this.index < 0 || this.detached) return;
    this.detached = true;
    this.holding = false;
    Atomics.store(this.control, C_ACK + this.index, -1);
  }

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
      let h = Math.imul(key ^ len, HASH_MUL) >>> shift;
      for (;;) {
        const v = val[h]!;
        if (v === 0) break;
        if (net[h] === key && lenOf[h] === len) return v - 1;
        h = (h + 1) & tmask;
      }
    }
    return -1;
  }

  peerBySource(src: number): number {
    const key = src | 0;
    const keys = this.srcKey;
    const val = this.srcVal;
    const tmask = (1 << this.srcBits) - 1;
    let h = Math.imul(key, HASH_MUL) >>> (32 - this.srcBits);
    for (;;) {
      const v = val[h]!;
      if (v === 0) return -1;
      if (keys[h] === key) return v - 1;
      h = (h + 1) & tmask;
    }
  }

  /** @internal the writer moves its local reader right after a publish. */
  adopt(): void {
    const g = Atomics.load(this.control, C_GEN);
    if (g !== this.gen) this.use(g);
  }

  private use(g: number): void {
    const b = this.banks[g & 1]!;
    this.gen = g;
    this.dstBits = b.meta[M_DST_BITS]!;
    this.srcBits = b.meta[M_SRC_BITS]!;
    this.nLens = b.meta[M_NLENS]!;
    this.peers = b.meta[M_PEERS]!;
    this.dstNet = b.dstNet;
    this.dstLen = b.dstLen;
    this.dstVal = b.dstVal;
    this.srcKey = b.srcKey;
    this.srcVal = b.srcVal;
    this.lens = b.lens;
    this.masks = b.masks;
    this.publicIp = b.publicIp;
    this.encapWords = b.encapWords;
    this.encapHeaders = b.encapHeaders;
    this.vtepMac = b.vtepMac;
  }
}

/** Keys changed since a bank was last written (replayed from the authoritative state, so idempotent). */
class Dirty {
  readonly slots = new Set<number>();
  /** Subnet keys: network (uint32) * 64 + prefix length. */
  readonly subnets = new Set<number>();
  /** Public IPs (int32 form). */
  readonly sources = new Set<number>();
  lens = false;

  get empty(): boolean {
    return this.slots.size === 0 && this.subnets.size === 0 && this.sources.size === 0 && !this.lens;
  }
}

const subnetKey = (ip: number, len: number): number => (ip >>> 0) * 64 + len;

/**
 * The writer: owns the authoritative peer set and publishes it to readers (see the file comment).
 *
 * Costs (n = peers, d = keys changed since the target bank was last written):
 *  - setPeer / removePeer: O(1) amortised (a Map access, a few typed-array writes, dirty marks).
 *  - publish (end of batch()): O(d) expected plus amortised hash growth; one generation per batch.
 *  - slotOf / subnetOf: O(1). Memory: ~60 bytes per peer here plus the preallocated banks.
 */
export class ForwardingTable implements PeerLookup {
  /** Postable description of the shared memory, for ForwardingTableReader.attach() in other threads. */
  readonly handle: ForwardingTableHandle;
  /** Same-thread reader, always on the newest published generation (the single-threaded loop uses it). */
  readonly reader: ForwardingTableReader;

  private readonly maxPeers: number;
  private readonly maxBits: number;
  private readonly control: Int32Array;
  private readonly banks: readonly [Bank, Bank];
  private readonly vni: number;
  private readonly localMac: Uint8Array | undefined;
  private readonly wakeReaders: (() => void) | undefined;

  // Authoritative per-slot state (writer only).
  private capacity: number;
  private subnetIp: Int32Array;
  /** -1 marks a free slot. */
  private prefixLen: Int8Array;
  private peerIp: Int32Array;
  private peerMac: Uint8Array;
  /** Slots sharing a public IP form a list in set order; srcTail holds the newest (it owns the IP). */
  private srcPrev: Int32Array;
  private srcNext: Int32Array;
  private readonly srcTail = new Map<number, number>();
  private readonly bySubnet = new Map<number, number>();
  private readonly lenCount = new Int32Array(33);
  private highWater = 0;
  private count = 0;
  private readonly freeSlots: number[] = [];
  /** Freed by changes not yet published: reusable once their generation is out. */
  private freedPending: number[] = [];

  private gen: number;
  private pending = new Dirty();
  private lag = new Dirty();
  private depth = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = 1;
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(options: ForwardingTableOptions = {}) {
    this.vni = options.vni ?? 0;
    this.localMac = options.localMac;
    this.wakeReaders = options.wakeReaders;
    const maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    if (!Number.isInteger(maxPeers) || maxPeers < 1 || maxPeers > 1 << 24) {
      throw new ForwardingTableError(`maxPeers ${maxPeers} out of range 1..16777216`);
    }
    this.maxPeers = maxPeers;
    const layout = bankLayout(maxPeers);
    this.maxBits = layout.maxBits;
    const control = new SharedArrayBuffer(CONTROL_INTS * 4);
    const sabs: [SharedArrayBuffer, SharedArrayBuffer] = [new SharedArrayBuffer(layout.bytes), new SharedArrayBuffer(layout.bytes)];
    this.handle = { version: 1, maxPeers, control, banks: sabs };
    this.control = new Int32Array(control);
    this.control.fill(-1, C_ACK, C_ACK + MAX_READERS);
    this.banks = [new Bank(sabs[0], maxPeers, layout), new Bank(sabs[1], maxPeers, layout)];
    for (const b of this.banks) {
      b.meta[M_DST_BITS] = MIN_BITS;
      b.meta[M_SRC_BITS] = MIN_BITS;
    }
    // Generation 1 (bank 1) is the empty table; bank 0 is written next.
    this.gen = 1;
    Atomics.store(this.control, C_GEN, 1);

    this.capacity = Math.min(maxPeers, Math.max(1, options.initialCapacity ?? 16));
    this.subnetIp = new Int32Array(this.capacity);
    this.prefixLen = new Int8Array(this.capacity).fill(-1);
    this.peerIp = new Int32Array(this.capacity);
    this.peerMac = new Uint8Array(this.capacity * 6);
    this.srcPrev = new Int32Array(this.capacity);
    this.srcNext = new Int32Array(this.capacity);
    this.reader = ForwardingTableReader.local(this.handle);
  }

  get peerCount(): number {
    return this.count;
  }

  /** Slots are < slotCapacity; per-slot side tables (counters) size themselves by it. */
  get slotCapacity(): number {
    return this.capacity;
  }

  /** Newest published generation. */
  get generation(): number {
    return this.gen;
  }

  /** True while changes wait for a publish (inside batch(), or held back by a lagging reader). */
  get publishPending(): boolean {
    return !this.pending.empty;
  }

  /**
   * Runs `fn` (which calls setPeer/removePeer) and publishes everything it changed as one generation.
   * Nests: only the outermost batch publishes. Returns what fn returns.
   */
  batch<T>(fn: () => T): T {
    this.begin();
    try {
      return fn();
    } finally {
      this.commit();
    }
  }

  /** Opens a batch (as batch() does); every begin() needs one commit(). */
  begin(): void {
    this.depth++;
  }

  /** Closes a batch opened by begin(); the outermost commit publishes. */
  commit(): void {
    if (this.depth === 0) throw new ForwardingTableError('forwarding table commit() without begin()');
    if (--this.depth === 0) this.publish();
  }

  /**
   * Adds or updates the peer owning `subnet` (a changed MAC or public IP replaces the old one) → its
   * slot. O(1) amortised. Published at once outside batch(), at the end of the batch inside one.
   */
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
    const key = subnetKey(subnet.ip, subnet.prefixLen);
    const ip = publicIp | 0;
    const d = this.pending;
    let slot = this.bySubnet.get(key);
    if (slot === undefined) {
      slot = this.allocSlot(subnet);
      this.bySubnet.set(key, slot);
      this.count++;
      this.subnetIp[slot] = subnet.ip | 0;
      this.prefixLen[slot] = subnet.prefixLen;
      if (this.lenCount[subnet.prefixLen]!++ === 0) d.lens = true;
      d.subnets.add(key);
      this.peerIp[slot] = ip;
      this.linkSource(slot, ip);
    } else if (this.peerIp[slot] !== ip) {
      this.unlinkSource(slot);
      this.peerIp[slot] = ip;
      this.linkSource(slot, ip);
    } else if (this.srcTail.get(ip) !== slot) {
      // Same IP set again: it becomes the newest holder of the IP (as a fresh set would).
      this.unlinkSource(slot);
      this.linkSource(slot, ip);
    }
    this.peerMac.set(vtepMac, slot * 6);
    d.slots.add(slot);
    if (this.depth === 0) this.publish();
    return slot;
  }

  /** Removes the peer owning exactly `subnet`; false if there was none. O(1) amortised. */
  removePeer(subnet: Ip4Net): boolean {
    const key = subnetKey(subnet.ip, subnet.prefixLen);
    const slot = this.bySubnet.get(key);
    if (slot === undefined) return false;
    const d = this.pending;
    this.bySubnet.delete(key);
    this.unlinkSource(slot);
    const len = this.prefixLen[slot]!;
    if (--this.lenCount[len]! === 0) d.lens = true;
    this.prefixLen[slot] = -1;
    this.peerIp[slot] = 0;
    this.peerMac.fill(0, slot * 6, slot * 6 + 6);
    d.subnets.add(key);
    d.slots.add(slot);
    this.freedPending.push(slot);
    this.count--;
    if (this.depth === 0) this.publish();
    return true;
  }

  /** Slot of the peer owning exactly `subnet`, or -1 (includes unpublished changes). O(1). */
  slotOf(subnet: Ip4Net): number {
    return this.bySubnet.get(subnetKey(subnet.ip, subnet.prefixLen)) ?? -1;
  }

  /** Subnet of a live slot (control-plane use: counters snapshot, logs). O(1). */
  subnetOf(slot: number): Ip4Net | undefined {
    if (slot < 0 || slot >= this.highWater || this.prefixLen[slot]! < 0) return undefined;
    return { ip: this.subnetIp[slot]! >>> 0, prefixLen: this.prefixLen[slot]! };
  }

  // PeerLookup over the newest published generation (tests and the single-threaded loop).
  lookup(dst: number): number {
    return this.reader.lookup(dst);
  }

  peerBySource(src: number): number {
    return this.reader.peerBySource(src);
  }

  get publicIp(): Int32Array {
    return this.reader.publicIp;
  }

  get encapWords(): Uint16Array {
    return this.reader.encapWords;
  }

  get encapHeaders(): Uint8Array {
    return this.reader.encapHeaders;
  }

  get vtepMac(): Uint8Array {
    return this.reader.vtepMac;
  }

  /**
   * Publishes the pending changes as the next generation → true, or false if a reader still uses the
   * bank to be written (then the changes stay pending and a retry is scheduled) or a batch is open.
   * O(d), see class doc.
   */
  publish(): boolean {
    if (this.depth > 0) return false; // the outermost commit() publishes
    if (this.pending.empty) {
      this.resolveWaiters();
      return true;
    }
    if (this.readersBehind()) {
      this.scheduleRetry();
      return false;
    }
    const next = this.gen + 1;
    const bank = this.banks[next & 1]!;
    this.writeBank(bank, this.lag);
    this.writeBank(bank, this.pending);
    if (this.lag.lens || this.pending.lens) this.writeLens(bank);
    bank.meta[M_PEERS] = this.count;
    Atomics.store(this.control, C_GEN, next);
    this.gen = next;
    this.reader.adopt();
    this.lag = this.pending;
    this.pending = new Dirty();
    for (const s of this.freedPending) this.freeSlots.push(s);
    this.freedPending = [];
    this.retryDelay = 1;
    this.resolveWaiters();
    return true;
  }

  /** Resolves once every change made so far is published (at once if nothing is pending). */
  whenPublished(): Promise<void> {
    if (this.pending.empty && this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /**
   * Stops a scheduled publish retry and schedules none from now on (pending changes stay unpublished). The
   * retry timer keeps the process alive while it runs, so a table whose readers lag must be closed on shutdown.
   */
  close(): void {
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private readersBehind(): boolean {
    const ctl = this.control;
    const cur = this.gen;
    for (let i = 0; i < MAX_READERS; i++) {
      const a = Atomics.load(ctl, C_ACK + i);
      if (a > 0 && a < cur) return true;
    }
    return false;
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined || this.closed) return;
    this.wakeReaders?.();
    const delay = this.retryDelay;
    this.retryDelay = Math.min(50, delay * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.depth === 0) this.publish();
    }, delay);
  }

  private resolveWaiters(): void {
    if (this.waiters.length === 0 || this.depth > 0) return;
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }

  /** Copies the authoritative value of every dirty key into `bank`. O(|d|) expected. */
  private writeBank(bank: Bank, d: Dirty): void {
    const maxBits = this.maxBits;
    for (const slot of d.slots) {
      if (this.prefixLen[slot]! >= 0) {
        bank.publicIp[slot] = this.peerIp[slot]!;
        const mac = this.peerMac.subarray(slot * 6, slot * 6 + 6);
        bank.vtepMac.set(mac, slot * 6);
        if (this.localMac !== undefined) writeEncapHeader(bank.encapHeaders, slot * ENCAP_LEN, this.vni, mac, this.localMac);
      } else {
        bank.publicIp[slot] = 0;
        bank.vtepMac.fill(0, slot * 6, slot * 6 + 6);
        bank.encapHeaders.fill(0, slot * ENCAP_LEN, slot * ENCAP_LEN + ENCAP_LEN);
      }
    }
    for (const key of d.subnets) {
      const len = key % 64;
      const net = ((key - len) / 64) | 0;
      const slot = this.bySubnet.get(key);
      if (slot === undefined) dstDelete(bank, net, len);
      else dstPut(bank, maxBits, net, len, slot);
    }
    for (const ip of d.sources) {
      const slot = this.srcTail.get(ip);
      if (slot === undefined) srcDelete(bank, ip);
      else srcPut(bank, maxBits, ip, slot);
    }
  }

  /** Prefix lengths present, longest first, and their masks. O(33). */
  private writeLens(bank: Bank): void {
    let n = 0;
    for (let len = 32; len >= 0; len--) {
      if (this.lenCount[len]! === 0) continue;
      bank.lens[n] = len;
      bank.masks[n] = maskOf(len) | 0;
      n++;
    }
    bank.meta[M_NLENS] = n;
  }

  private linkSource(slot: number, ip: number): void {
    const tail = this.srcTail.get(ip);
    this.srcPrev[slot] = tail ?? -1;
    this.srcNext[slot] = -1;
    if (tail !== undefined) this.srcNext[tail] = slot;
    this.srcTail.set(ip, slot);
    this.pending.sources.add(ip);
  }

  private unlinkSource(slot: number): void {
    const ip = this.peerIp[slot]!;
    const prev = this.srcPrev[slot]!;
    const next = this.srcNext[slot]!;
    if (prev >= 0) this.srcNext[prev] = next;
    if (next >= 0) this.srcPrev[next] = prev;
    else if (prev >= 0) this.srcTail.set(ip, prev);
    else this.srcTail.delete(ip);
    this.srcPrev[slot] = -1;
    this.srcNext[slot] = -1;
    this.pending.sources.add(ip);
  }

  private allocSlot(subnet: Ip4Net): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) return reused;
    if (this.highWater === this.capacity) {
      if (this.capacity === this.maxPeers) {
        // Full: a slot freed earlier in this same batch is safe to reuse (readers see the batch whole).
        const again = this.freedPending.pop();
        if (again !== undefined) return again;
        throw new ForwardingTableError(`peer table full (${this.maxPeers} peers) when adding ${formatIp4Net(subnet)}; raise maxPeers`);
      }
      this.grow(Math.min(this.maxPeers, this.capacity * 2));
    }
    return this.highWater++;
  }

  private grow(capacity: number): void {
    const copy = <T extends Int32Array | Int8Array | Uint8Array>(old: T, fresh: T): T => {
      fresh.set(old);
      return fresh;
    };
    this.subnetIp = copy(this.subnetIp, new Int32Array(capacity));
    this.prefixLen = copy(this.prefixLen, new Int8Array(capacity).fill(-1));
    this.peerIp = copy(this.peerIp, new Int32Array(capacity));
    this.peerMac = copy(this.peerMac, new Uint8Array(capacity * 6));
    this.srcPrev = copy(this.srcPrev, new Int32Array(capacity));
    this.srcNext = copy(this.srcNext, new Int32Array(capacity));
    this.capacity = capacity;
  }
}
