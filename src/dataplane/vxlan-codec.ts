// VXLAN (RFC 7348) + inner Ethernet framing exactly as a kernel flannel.N device sends and expects it
// (docs/compat.md §5.7): 08 00 00 00 | VNI<<8, then dst MAC = receiver's VtepMAC, src MAC = sender's
// VtepMAC, EtherType 0x0800. Pure functions over (bytes, offset) so the packet loop can encode and
// decode in place in the arena without creating objects; results are plain numbers.

export const VXLAN_HDR_LEN = 8;
export const ETH_HDR_LEN = 14;
/** Bytes in front of the inner IPv4 packet. */
export const ENCAP_LEN = VXLAN_HDR_LEN + ETH_HDR_LEN;
export const MIN_FRAME_LEN = ENCAP_LEN + 20;
/** VXLAN flags byte with the I bit (valid VNI). */
export const VXLAN_FLAG_I = 0x08;
export const ETHERTYPE_IPV4 = 0x0800;

/** Why a packet was dropped; also the index into the drop counters. 0 is never a reason. */
export const enum Drop {
  /** Frame shorter than VXLAN + Ethernet + minimal IPv4 header. */
  short = 1,
  /** VXLAN flags other than exactly the I bit, or reserved bits set (the kernel drops these too). */
  badFlags = 2,
  badVni = 3,
  /** Inner destination MAC is neither our VtepMAC nor broadcast. */
  badDstMac = 4,
  /** Inner EtherType is not IPv4 (ingress) / TUN handed us a non-IPv4 packet (egress). */
  notIpv4 = 5,
  /** Version/IHL/total length of the inner IPv4 header inconsistent with the frame. */
  badIpv4Header = 6,
  /** Datagram not from the public IP of a current lease. */
  unknownSource = 7,
  /** No peer subnet contains the inner destination. */
  noRoute = 8,
  /** sendmmsg failed for this datagram (unreachable, EMSGSIZE, …). */
  sendError = 9,
  /** Socket queue full (EAGAIN/ENOBUFS): dropped instead of spinning. */
  sendBusy = 10,
  /** Packet or datagram larger than an arena slot. */
  truncated = 11,
  /** write() to the TUN failed for this packet. */
  tunWriteError = 12,
}

/** Names by Drop code (index 0 unused); the counters snapshot uses them as keys. */
export const DROP_NAMES: readonly string[] = [
  '',
  'short',
  'badFlags',
  'badVni',
  'badDstMac',
  'notIpv4',
  'badIpv4Header',
  'unknownSource',
  'noRoute',
  'sendError',
  'sendBusy',
  'truncated',
  'tunWriteError',
];
export const DROP_REASON_COUNT = DROP_NAMES.length;

/** First two MAC bytes as a 16-bit number, for allocation-free MAC compares. */
export function macHi(mac: Uint8Array, off = 0): number {
  return (mac[off]! << 8) | mac[off + 1]!;
}

/** Last four MAC bytes as an int32 (signed: compare with `|0` values). */
export function macLo(mac: Uint8Array, off = 0): number {
  return (mac[off + 2]! << 24) | (mac[off + 3]! << 16) | (mac[off + 4]! << 8) | mac[off + 5]!;
}

/**
 * Writes the 22-byte VXLAN + Ethernet header at buf[off..off+22): flags 0x08, VNI, dst = peer VtepMAC,
 * src = own VtepMAC, EtherType IPv4. The inner IPv4 packet is expected at off + 22.
 */
export function writeEncapHeader(buf: Uint8Array, off: number, vni: number, dstMac: Uint8Array, srcMac: Uint8Array): void {
  buf[off] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0;
  for (let i = 0; i < 6; i++) {
    buf[off + 8 + i] = dstMac[i]!;
    buf[off + 14 + i] = srcMac[i]!;
  }
  buf[off + 20] = ETHERTYPE_IPV4 >>> 8;
  buf[off + 21] = ETHERTYPE_IPV4 & 0xff;
}

/**
 * Validates a received VXLAN datagram at buf[off..off+len) and returns the inner IPv4 packet length
 * (the packet starts at off + ENCAP_LEN), or -Drop for a frame to drop. Ethernet padding after the
 * IPv4 total length is excluded from the returned length. `ownHi`/`ownLo` are macHi/macLo of our VtepMAC.
 */
export function decodeVxlanFrame(buf: Uint8Array, off: number, len: number, vni: number, ownHi: number, ownLo: number): number {
  if (len < MIN_FRAME_LEN) return -Drop.short;
  // Kernel vxlan_rcv: only the I flag may be set and the reserved byte after the VNI must be 0.
  if (buf[off] !== VXLAN_FLAG_I || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0 || buf[off + 7] !== 0) {
    return -Drop.badFlags;
  }
  if (((buf[off + 4]! << 16) | (buf[off + 5]! << 8) | buf[off + 6]!) !== vni) return -Drop.badVni;
  const e = off + VXLAN_HDR_LEN;
  const hi = (buf[e]! << 8) | buf[e + 1]!;
  const lo = (buf[e + 2]! << 24) | (buf[e + 3]! << 16) | (buf[e + 4]! << 8) | buf[e + 5]!;
  if (!(hi === ownHi && lo === ownLo) && !(hi === 0xffff && lo === -1)) return -Drop.badDstMac;
  if (buf[e + 12] !== 0x08 || buf[e + 13] !== 0x00) return -Drop.notIpv4;
  const ip = off + ENCAP_LEN;
  const vihl = buf[ip]!;
  const ihl = (vihl & 0x0f) << 2;
  const total = (buf[ip + 2]! << 8) | buf[ip + 3]!;
  if (vihl >>> 4 !== 4 || ihl < 20 || total < ihl || total > len - ENCAP_LEN) return -Drop.badIpv4Header;
  return total;
}
