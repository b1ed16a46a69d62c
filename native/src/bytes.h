// Byte-order loads/stores and Internet checksums (RFC 1071) over packet memory: the one copy every
// native area uses (tun.cc, udp.cc, offload.cc). Checksums use a 64-bit one's complement accumulator
// over little-endian loads, so a folded value stored with memcpy is in network order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tsf {

inline uint16_t Load16be(const uint8_t *p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint16_t Load16le(const uint8_t *p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t Load32be(const uint8_t *p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
inline void Store16be(uint8_t *p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void Store32be(uint8_t *p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
// Stores a checksum computed in memory order (see above).
inline void StoreCsum(uint8_t *p, uint16_t c) { memcpy(p, &c, 2); }

// IPv4: neither a fragment nor more fragments follow.
inline bool Unfragmented(const uint8_t *ip) { return ((ip[6] & 0x3f) | ip[7]) == 0; }

// One's complement accumulator over p[0..len); `len` may be odd, p need not be aligned. AVX2 when the
// CPU has it.
uint64_t CsumAcc(const uint8_t *p, size_t len, uint64_t acc);
inline uint64_t CsumAdd(uint64_t a, uint64_t b) {
  uint64_t s = a + b;
  return s + (s < a);
}
// Folds to 16 bits without complementing (the "pseudo-header sum" form a partial checksum field holds).
inline uint16_t CsumFold16(uint64_t acc) {
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}
// Pseudo-header sum of an IPv4 packet (src, dst at ip+12..20) for protocol `proto` and L4 length `l4len`.
uint64_t PseudoSum(const uint8_t *ip, uint8_t proto, size_t l4len);
// Sets the IPv4 header checksum of ip[0..ihl).
void IpHeaderCsum(uint8_t *ip, size_t ihl);
// Completes a CHECKSUM_PARTIAL packet (virtio NEEDS_CSUM): the field at start+off holds the pseudo-header
// sum, so the complemented sum over [start, len) is final. UDP (off 6) never gets 0 (RFC 768).
// False when the offsets do not fit the packet.
bool FinishPartialCsum(uint8_t *pkt, size_t len, size_t start, size_t off);

// State of the L4 checksum field of an unfragmented IPv4 TCP/UDP packet.
enum class L4Csum { kNotL4, kValid, kPartial, kZero, kBad };
// kPartial: the field holds exactly the pseudo-header sum (an offloading sender's CHECKSUM_PARTIAL packet).
// kZero: UDP without checksum. `verify` = false skips the full pass (returns kValid unless partial/zero).
L4Csum ClassifyL4Csum(const uint8_t *ip, size_t len, bool verify);

}  // namespace tsf
