// Checksums over packet memory (see bytes.h).
#include "bytes.h"

#include <arpa/inet.h>
#include <immintrin.h>

namespace tsf {

// Sums 32-bit little-endian words into 64-bit accumulators: no carry handling in the loop (2^32 words
// fit), folded with end-around carry at the end; the one's complement sum of 16-bit lanes is the same.
// AVX2 when the CPU has it (8 words per 32 B load, two vector accumulators), else 4 scalar chains.
namespace {

uint64_t SumTail(const uint8_t *p, size_t len, uint64_t acc) {
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    acc += w;
    p += 4;
    len -= 4;
  }
  if (len > 0) {
    uint32_t w = 0;  // an odd last byte lands in the low byte of its 16-bit lane, as network order wants
    memcpy(&w, p, len);
    acc += w;
  }
  return acc;
}

uint64_t SumScalar(const uint8_t *p, size_t len) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  while (len >= 16) {
    uint32_t w[4];
    memcpy(w, p, 16);
    a += w[0];
    b += w[1];
    c += w[2];
    d += w[3];
    p += 16;
    len -= 16;
  }
  return SumTail(p, len, a + b + c + d);
}

__attribute__((target("avx2"))) uint64_t SumAvx2(const uint8_t *p, size_t len) {
  const __m256i lo32 = _mm256_set1_epi64x(0xffffffff);
  __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
  while (len >= 64) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
    __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 32));
    a = _mm256_add_epi64(a, _mm256_and_si256(v, lo32));
    b = _mm256_add_epi64(b, _mm256_srli_epi64(v, 32));
    a = _mm256_add_epi64(a, _mm256_and_si256(w, lo32));
    b = _mm256_add_epi64(b, _mm256_srli_epi64(w, 32));
    p += 64;
    len -= 64;
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), _mm256_add_epi64(a, b));
  // For len < 2^32 each lane stays below 2^60, so the plain sum of the four cannot overflow.
  return SumTail(p, len, lanes[0] + lanes[1] + lanes[2] + lanes[3]);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");

}  // namespace

uint64_t CsumAcc(const uint8_t *p, size_t len, uint64_t acc) {
  uint64_t s = len >= 128 && kHaveAvx2 ? SumAvx2(p, len) : SumScalar(p, len);
  return CsumAdd(acc, s);
}

uint64_t PseudoSum(const uint8_t *ip, uint8_t proto, size_t l4len) {
  uint32_t src, dst;
  memcpy(&src, ip + 12, 4);
  memcpy(&dst, ip + 16, 4);
  return static_cast<uint64_t>(src) + dst + htons(proto) + htons(static_cast<uint16_t>(l4len));
}

void IpHeaderCsum(uint8_t *ip, size_t ihl) {
  ip[10] = ip[11] = 0;
  StoreCsum(ip + 10, static_cast<uint16_t>(~CsumFold16(CsumAcc(ip, ihl, 0))));
}

bool FinishPartialCsum(uint8_t *pkt, size_t len, size_t start, size_t off) {
  if (start + off + 2 > len) return false;
  uint16_t c = static_cast<uint16_t>(~CsumFold16(CsumAcc(pkt + start, len - start, 0)));
  if (c == 0 && off == 6) c = 0xffff;
  StoreCsum(pkt + start + off, c);
  return true;
}

L4Csum ClassifyL4Csum(const uint8_t *ip, size_t len, bool verify) {
  if (len < 20 || (ip[0] >> 4) != 4 || !Unfragmented(ip)) return L4Csum::kNotL4;
  size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > len) return L4Csum::kNotL4;
  size_t l4len = len - ihl;
  size_t field;
  if (ip[9] == 6 && l4len >= 20) {
    field = 16;
  } else if (ip[9] == 17 && l4len >= 8) {
    field = 6;
  } else {
    return L4Csum::kNotL4;
  }
  const uint8_t *l4 = ip + ihl;
  uint16_t cur;
  memcpy(&cur, l4 + field, 2);
  if (cur == 0 && ip[9] == 17) return L4Csum::kZero;
  uint64_t pseudo = PseudoSum(ip, ip[9], l4len);
  if (cur == CsumFold16(pseudo)) return L4Csum::kPartial;
  if (!verify) return L4Csum::kValid;
  return CsumFold16(CsumAdd(pseudo, CsumAcc(l4, l4len, 0))) == 0xffff ? L4Csum::kValid : L4Csum::kBad;
}

}  // namespace tsf
