// Data-plane memory layout shared by the C++ I/O calls and the TypeScript packet loop.
// src/dataplane/layout.ts mirrors these numbers and checks them against the addon's exported
// `layout` object at load time, so the two sides cannot silently drift.
//
// RING = one arena + one descriptor table, registered once (ringRegister) and then addressed by an
// integer id, so every hot call takes integers only. One ring per direction (egress: tunRead →
// TS encap → udpSend; ingress: udpRecv → TS decap → tunWrite). JS owns both memories (a plain
// `new ArrayBuffer`, never transferred while registered); native keeps a napi_ref so GC can't free them.
//
// ARENA: nSlots × slotSize bytes. Slot i starts at i*slotSize; descriptor i belongs to slot i.
// Inside every slot the inner IPv4 packet starts at `headroom` (≥ 32, default 64), in both directions:
//
//   slot+0 ... slot+headroom-22 | VXLAN 8 | Ethernet 14 | inner IPv4 packet ...
//                               ^ outer UDP payload starts here (TS writes the 22 B in place on egress;
//                                 udpRecv places the datagram here on ingress)
//   With IFF_VNET_HDR the 10 B virtio_net_hdr is read into slot+headroom-10 (inside the space the
//   VXLAN+Ethernet header later overwrites) and parsed into the descriptor before TS sees it.
//
// slotSize is a parameter: 2 KiB suffices for TUN reads without offloads; the receive ring uses
// 64 KiB + headroom because a peer's GSO super-packet can arrive as one datagram (kernel vxlan over
// veth/virtio delivers SKB_GSO_UDP_TUNNEL whole to a plain UDP socket). The offload path (TSO/USO
// reads, UDP GRO) uses the same 64 KiB slots with the same layout.
//
// DESCRIPTOR: DESC_WORDS (18) int32 per packet = 72 B, descriptor i at desc[i*18]. Words:
//   0 OFF        byte offset of the packet in the arena (IP on tunRead/tunWrite, VXLAN on udpSend/udpRecv)
//   1 LEN        packet length; LEN 0 on input to udpSend/tunWrite = skip (TS dropped it)
//   2 ADDR       IPv4 host order: tunRead → inner dst (0 if not IPv4); udpSend ← outer dst; udpRecv → outer
//   src 3 PORT       udpSend ← outer dst port; udpRecv → outer src port 4 FD         udpSend ← send-socket fd
//   (TS picks one by flow hash → outer source port) 5 FLOW       tunRead → inner flow hash (addresses,
//   protocol, ports unless fragment) 6 PEER       TS scratch: forwarding-table peer slot of the packet 7
//   STATUS     native → 0 done, else errno (udpSend/tunWrite per packet; EAGAIN/ENOBUFS = dropped) 8 FLAGS
//   native → F_* below, | virtio_net_hdr.flags << 8 when the vnet header is on (tunRead) 9 GSO_TYPE   tunRead
//   → virtio gso_type (0 none, 1 TCPv4, 4 TCPv6, 5 UDP_L4); udpSend splits 1 and 5
//  10 GSO_SIZE   tunRead → virtio gso_size (MSS); udpRecv → UDP_GRO segment size (0 = one datagram)
//  11 HDR_LEN    tunRead → virtio hdr_len; udpSend (offload) → the real IP+L4 header length it split with
//  12 CSUM_START virtio csum_start (relative to the IP packet)
//  13 CSUM_OFF   virtio csum_offset
//  14 SEGS       always a segment count: udpRecv → datagrams in the slot (1 without UDP_GRO); udpSend →
//                datagrams sent for this descriptor (1, or the segments of a split super-packet);
//                tunWrite ← TS: segments it accepted (for its counters; native ignores it)
//  15 AUX        TS scratch (ingress: inner bytes accepted)
//  16 REJECT_LO  tunWrite ← TS: bit k set = segment k (0..31) of the datagram train was rejected
//  17 REJECT_HI  same for segments 32..63 (the kernel merges at most 64 datagrams, UDP_GRO_CNT_MAX)
//
// ONE FORMAT for every offload rung (the modes only switch features on):
//   egress: a descriptor may hold a TSO/USO super-packet (GSO_TYPE/GSO_SIZE from tunRead, udpSend mode
//     S_SPLIT) behind the one encapsulation header TS wrote; udpSend splits it into MSS segments, each sent
//     behind a copy of that header. Without offloads it is one datagram (SEGS 1).
//   ingress: the descriptor stays in datagram form (OFF at the encapsulation header, LEN the whole
//     UDP_GRO train, GSO_SIZE its segment size, 0 for one datagram). TS validates each segment and sets
//     its REJECT bit when it drops it; tunWrite strips the encapsulation of every other segment and hands
//     it to the coalescer (which merges only in mode M_COALESCE).
//
// ENCAPSULATION LENGTH: a ring property (ringRegister's encapLen, ≤ kMaxEncapLen): 22 for VXLAN
// (8 VXLAN + 14 Ethernet); the arena layout above is drawn for it.
#pragma once
#include <node_api.h>

#include <cstddef>
#include <cstdint>

namespace tsf {

constexpr int kDescWords = 18;
enum DescWord : int {
  D_OFF = 0,
  D_LEN = 1,
  D_ADDR = 2,
  D_PORT = 3,
  D_FD = 4,
  D_FLOW = 5,
  D_PEER = 6,
  D_STATUS = 7,
  D_FLAGS = 8,
  D_GSO_TYPE = 9,
  D_GSO_SIZE = 10,
  D_HDR_LEN = 11,
  D_CSUM_START = 12,
  D_CSUM_OFF = 13,
  D_SEGS = 14,
  D_AUX = 15,
  D_REJECT_LO = 16,
  D_REJECT_HI = 17,
};
// FLAGS bits set by native code.
constexpr int32_t F_TRUNC = 1;       // datagram/packet did not fit the slot (length is what was stored)
constexpr int32_t F_NOT_IPV4 = 2;    // tunRead: not a parseable IPv4 packet (ADDR is 0)
constexpr int32_t F_CSUM_FIXED = 4;  // tunWrite: completed a CHECKSUM_PARTIAL inner TCP/UDP checksum
constexpr int32_t F_SEGMENTED =
    8;  // tunWrite: TCP super-packet written as MTU-sized segments (or as one GSO write)
constexpr int32_t F_COALESCED = 16;  // tunWrite (coalesce): segments of this descriptor went out merged
constexpr int32_t F_GSO_EIO = 32;  // udpSend: a UDP_SEGMENT send failed with EIO (no checksum offload on the
                                   // route's device); its segments were resent one by one
constexpr int32_t F_TUN_GSO_REFUSED = 64;  // tunWrite (coalesce): the TUN refused a GSO write (EINVAL); its
                                           // segments were written one by one
// tunRead/tunWrite `mode` bits.
constexpr int32_t M_VNET = 1;         // the TUN carries a virtio_net_hdr (IFF_VNET_HDR)
constexpr int32_t M_CSUM_REPAIR = 2;  // tunWrite: complete partial inner checksums (see tun.cc)
constexpr int32_t M_COALESCE =
    4;                        // tunWrite: offload format, GRO-style coalescing into GSO writes (needs M_VNET)
constexpr int32_t M_USO = 8;  // tunWrite (coalesce): UDP may be written as GSO_UDP_L4 (kernel ≥ 6.2)
constexpr int32_t M_NO_MERGE =
    16;  // tunWrite (coalesce): no GSO writes at all (after a refusal): one packet each
// udpSend `mode` bits (0 = one datagram per descriptor, the per-packet path).
constexpr int32_t S_SPLIT = 1;  // descriptors may be TSO/USO super-packets: split them into segments
constexpr int32_t S_GSO = 2;    // send runs of equal-size datagrams to one peer as one UDP_SEGMENT sendmsg
// tunOpen offload bits (TUNSETOFFLOAD; this system's linux/if_tun.h predates USO).
constexpr int32_t TUN_OFF_CSUM = 0x01;
constexpr int32_t TUN_OFF_TSO4 = 0x02;
constexpr int32_t TUN_OFF_TSO6 = 0x04;
constexpr int32_t TUN_OFF_USO4 = 0x20;
constexpr int32_t TUN_OFF_USO6 = 0x40;
// udpOpen flag bits.
constexpr int32_t U_GRO = 1;        // enable UDP_GRO on the socket
constexpr int32_t U_REUSEPORT = 2;  // SO_REUSEPORT (one receive socket per forwarding thread)

constexpr int kVxlanEthLen = 22;            // 8 VXLAN + 14 Ethernet
constexpr int kMaxEncapLen = kVxlanEthLen;  // longest encapsulation header a ring may carry
constexpr int kVnetHdrLen = 10;             // struct virtio_net_hdr (no num_buffers)
constexpr int kMinHeadroom = kVxlanEthLen + kVnetHdrLen;
constexpr int kMaxRings = 64;

struct Ring {
  uint8_t *arena = nullptr;
  size_t arenaLen = 0;
  int32_t *desc = nullptr;
  uint32_t nSlots = 0;
  uint32_t slotSize = 0;
  uint32_t headroom = 0;
  uint32_t encapLen = kVxlanEthLen;  // bytes of encapsulation in front of the inner IP packet
  napi_env env = nullptr;
  napi_ref arenaRef = nullptr;
  napi_ref descRef = nullptr;
  bool used = false;
};

// Returns the registered ring or nullptr (after throwing a JS error) when id is not a live ring of env.
Ring *GetRing(napi_env env, int32_t id);
void InitRing(napi_env env, napi_value exports);

// Small helpers for the raw napi_callbacks.
bool ArgInt32(napi_env env, napi_value v, const char *fn, const char *name, int32_t *out);
napi_value MakeInt32(napi_env env, int32_t v);
napi_value ThrowType(napi_env env, const char *msg);

}  // namespace tsf
