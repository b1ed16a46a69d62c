// TypeScript mirror of the ring layout documented in native/src/dataplane.h (the one description of
// arena slots and descriptor words). Const enums so the hot loop compiles to literal indices;
// checkLayout() compares them with the addon's exported `layout` at load time.

/** Descriptor words (int32 each), descriptor i at desc[i * Desc.WORDS]. */
export const enum Desc {
  WORDS = 18,
  OFF = 0,
  LEN = 1,
  ADDR = 2,
  PORT = 3,
  FD = 4,
  FLOW = 5,
  PEER = 6,
  STATUS = 7,
  FLAGS = 8,
  GSO_TYPE = 9,
  GSO_SIZE = 10,
  HDR_LEN = 11,
  CSUM_START = 12,
  CSUM_OFF = 13,
  SEGS = 14,
  AUX = 15,
  /** tunWrite input: bit k = segment k (0..31) of the train was rejected by decap. */
  REJECT_LO = 16,
  /** Segments 32..63. */
  REJECT_HI = 17,
}

/** FLAGS bits written by native code. */
export const enum DescFlag {
  TRUNC = 1,
  NOT_IPV4 = 2,
  CSUM_FIXED = 4,
  SEGMENTED = 8,
  /** tunWrite (coalesce): segments of this descriptor went out merged into a GSO write. */
  COALESCED = 16,
  /** udpSend: a UDP_SEGMENT send was refused with EIO (no checksum offload on the route); resent one by one. */
  GSO_EIO = 32,
  /** tunWrite (coalesce): the TUN refused a GSO write (EINVAL); the segments were written one by one. */
  TUN_GSO_REFUSED = 64,
}

/** `mode` bits of tunRead/tunWrite. */
export const enum TunMode {
  /** The TUN carries a virtio_net_hdr (opened with IFF_VNET_HDR). */
  VNET = 1,
  /** tunWrite completes inner TCP/UDP checksums left partial by an offloading sender. */
  CSUM_REPAIR = 2,
  /** tunWrite: merge segments into GSO writes (coalescing, like kernel GRO); needs VNET. */
  COALESCE = 4,
  /** tunWrite (COALESCE): UDP may be merged into GSO_UDP_L4 writes (TUN USO, kernel ≥ 6.2). */
  USO = 8,
  /** tunWrite (COALESCE): no GSO writes at all (after the TUN refused one); oversized packets split here. */
  NO_MERGE = 16,
}

/** `mode` bits of udpSend (0 = one datagram per descriptor). */
export const enum SendMode {
  /** Descriptors may be TSO/USO super-packets (from a vnet-header TUN): split them into segments. */
  SPLIT = 1,
  /** Send equal-size datagrams to one peer as one UDP_SEGMENT sendmsg. */
  GSO = 2,
}

/** TUNSETOFFLOAD bits for tunOpen. */
export const enum TunOffload {
  CSUM = 0x01,
  TSO4 = 0x02,
  TSO6 = 0x04,
  USO4 = 0x20,
  USO6 = 0x40,
}

/** udpOpen flag bits. */
export const enum UdpFlag {
  GRO = 1,
  /** SO_REUSEPORT: one receive socket per forwarding thread on the VXLAN port. */
  REUSEPORT = 2,
}

export const enum Frame {
  VXLAN_LEN = 8,
  ETH_LEN = 14,
  /** VXLAN + Ethernet header written in front of the inner IPv4 packet. */
  ENCAP_LEN = 22,
  VNET_HDR_LEN = 10,
  MIN_HEADROOM = 32,
}

export class LayoutMismatchError extends Error {
  override name = 'LayoutMismatchError';
}

/** Throws if the addon was built from a different layout than this file (stale build/ directory). */
export function checkLayout(native: Record<string, number>): void {
  const expected: Record<string, number> = {
    DESC_WORDS: Desc.WORDS,
    D_OFF: Desc.OFF,
    D_LEN: Desc.LEN,
    D_ADDR: Desc.ADDR,
    D_PORT: Desc.PORT,
    D_FD: Desc.FD,
    D_FLOW: Desc.FLOW,
    D_PEER: Desc.PEER,
    D_STATUS: Desc.STATUS,
    D_FLAGS: Desc.FLAGS,
    D_GSO_TYPE: Desc.GSO_TYPE,
    D_GSO_SIZE: Desc.GSO_SIZE,
    D_HDR_LEN: Desc.HDR_LEN,
    D_CSUM_START: Desc.CSUM_START,
    D_CSUM_OFF: Desc.CSUM_OFF,
    D_SEGS: Desc.SEGS,
    D_AUX: Desc.AUX,
    D_REJECT_LO: Desc.REJECT_LO,
    D_REJECT_HI: Desc.REJECT_HI,
    F_TRUNC: DescFlag.TRUNC,
    F_NOT_IPV4: DescFlag.NOT_IPV4,
    F_CSUM_FIXED: DescFlag.CSUM_FIXED,
    F_SEGMENTED: DescFlag.SEGMENTED,
    F_COALESCED: DescFlag.COALESCED,
    F_GSO_EIO: DescFlag.GSO_EIO,
    F_TUN_GSO_REFUSED: DescFlag.TUN_GSO_REFUSED,
    M_VNET: TunMode.VNET,
    M_CSUM_REPAIR: TunMode.CSUM_REPAIR,
    M_COALESCE: TunMode.COALESCE,
    M_USO: TunMode.USO,
    M_NO_MERGE: TunMode.NO_MERGE,
    S_SPLIT: SendMode.SPLIT,
    S_GSO: SendMode.GSO,
    TUN_OFF_CSUM: TunOffload.CSUM,
    TUN_OFF_TSO4: TunOffload.TSO4,
    TUN_OFF_TSO6: TunOffload.TSO6,
    TUN_OFF_USO4: TunOffload.USO4,
    TUN_OFF_USO6: TunOffload.USO6,
    U_GRO: UdpFlag.GRO,
    U_REUSEPORT: UdpFlag.REUSEPORT,
    VXLAN_ETH_LEN: Frame.ENCAP_LEN,
    VNET_HDR_LEN: Frame.VNET_HDR_LEN,
    MIN_HEADROOM: Frame.MIN_HEADROOM,
  };
  for (const [key, value] of Object.entries(expected)) {
    if (native[key] !== value) {
      throw new LayoutMismatchError(
        `native data-plane layout ${key}=${String(native[key])} but TypeScript expects ${value}; rebuild the addon (npx node-gyp rebuild)`,
      );
    }
  }
}
