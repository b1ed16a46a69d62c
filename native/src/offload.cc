// Offload building blocks (see offload.h): checksums, TSO/USO split, GSO coalescing, and test entry
// points that run the same split/coalesce code over plain buffers.
#include "offload.h"

#include <arpa/inet.h>
#include <immintrin.h>

#include <cerrno>
#include <cstring>

#include "addon.h"

namespace tsf {

namespace {
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpAck = 0x10, kTcpCwr = 0x80;
}  // namespace

bool PlanSplit(const uint8_t *ip, size_t len, int gsoType, int gsoSize, SplitPlan *plan) {
  if (len < 20 || (ip[0] >> 4) != 4 || gsoSize <= 0) return false;
  size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
  size_t total = Load16be(ip + 2);
  if (ihl < 20 || total > len || total < ihl || !Unfragmented(ip)) return false;
  size_t l4hl;
  int type = gsoType & ~kVnetGsoEcn;
  if (type == kVnetGsoTcpV4 && ip[9] == 6 && total >= ihl + 20) {
    l4hl = static_cast<size_t>(ip[ihl + 12] >> 4) * 4;
    if (l4hl < 20 || ihl + l4hl > total) return false;
  } else if (type == kVnetGsoUdpL4 && ip[9] == 17 && total >= ihl + 8) {
    l4hl = 8;
  } else {
    return false;
  }
  size_t mss = static_cast<size_t>(gsoSize);
  size_t hdr = ihl + l4hl;
  if (hdr + mss > 65535) return false;
  plan->ip = ip;
  plan->total = total;
  plan->proto = ip[9];
  plan->ihl = ihl;
  plan->l4hl = l4hl;
  plan->hdr = hdr;
  plan->mss = mss;
  plan->payload = total - hdr;
  plan->segs = plan->payload == 0 ? 1 : static_cast<uint32_t>((plan->payload + mss - 1) / mss);
  return true;
}

size_t BuildSplitIov(const SplitPlan &p, const uint8_t *prefix, size_t prefixLen, uint32_t first,
                     uint32_t count, uint8_t *hdrs, struct iovec *iov) {
  const uint8_t *ip = p.ip;
  const uint16_t id0 = Load16be(ip + 4);
  const bool tcp = p.proto == 6;
  const uint32_t seq0 = tcp ? Load32be(ip + p.ihl + 4) : 0;
  const uint8_t flags0 = tcp ? ip[p.ihl + 13] : 0;
  for (uint32_t k = 0; k < count; k++) {
    const uint32_t i = first + k;
    uint8_t *blk = hdrs + static_cast<size_t>(k) * kMaxSegHdr;
    if (prefixLen > 0) memcpy(blk, prefix, prefixLen);
    uint8_t *h = blk + prefixLen;
    memcpy(h, ip, p.hdr);
    const size_t off = static_cast<size_t>(i) * p.mss;
    const size_t chunk = p.payload - off < p.mss ? p.payload - off : p.mss;
    Store16be(h + 2, static_cast<uint32_t>(p.hdr + chunk));
    Store16be(h + 4, static_cast<uint16_t>(id0 + i));
    IpHeaderCsum(h, p.ihl);
    uint8_t *l4 = h + p.ihl;
    const uint8_t *data = ip + p.hdr + off;
    if (tcp) {
      Store32be(l4 + 4, seq0 + static_cast<uint32_t>(off));
      uint8_t f = flags0;
      if (i + 1 < p.segs) f &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
      if (i > 0) f &= static_cast<uint8_t>(~kTcpCwr);
      l4[13] = f;
      l4[16] = l4[17] = 0;
      uint64_t s = CsumAdd(PseudoSum(h, 6, p.l4hl + chunk), CsumAcc(l4, p.l4hl, 0));
      StoreCsum(l4 + 16, static_cast<uint16_t>(~CsumFold16(CsumAdd(s, CsumAcc(data, chunk, 0)))));
    } else {
      Store16be(l4 + 4, static_cast<uint32_t>(8 + chunk));
      l4[6] = l4[7] = 0;
      uint64_t s = CsumAdd(PseudoSum(h, 17, 8 + chunk), CsumAcc(l4, 8, 0));
      uint16_t c = static_cast<uint16_t>(~CsumFold16(CsumAdd(s, CsumAcc(data, chunk, 0))));
      StoreCsum(l4 + 6, c == 0 ? 0xffff : c);  // RFC 768: a computed 0 is sent as all ones
    }
    iov[2 * k] = {blk, prefixLen + p.hdr};
    iov[2 * k + 1] = {const_cast<uint8_t *>(data), chunk};
  }
  return prefixLen + p.hdr + p.mss;
}

// ---- Coalescer --------------------------------------------------------------------------------------

void Coalescer::Add(uint8_t *ip, size_t len, bool trusted, int32_t owner) {
  // Candidates: IPv4 without options or fragmentation, TCP ACK / ACK|PSH with payload, or (uso) UDP,
  // no larger than the TUN MTU (larger ones are a peer's whole super-packet: WriteSingle).
  size_t l4hl = 0, payload = 0;
  bool candidate = false;
  if (merge_ && len >= 28 && ip[0] == 0x45 && Unfragmented(ip) && (maxPacket_ == 0 || len <= maxPacket_)) {
    if (ip[9] == 6 && len >= 40) {
      l4hl = static_cast<size_t>(ip[32] >> 4) * 4;
      uint8_t f = ip[33];
      if (l4hl >= 20 && 20 + l4hl < len && (f == kTcpAck || f == (kTcpAck | kTcpPsh))) {
        payload = len - 20 - l4hl;
        candidate = true;
      }
    } else if (ip[9] == 17 && uso_ && Load16be(ip + 24) == len - 20) {
      l4hl = 8;
      payload = len - 28;
      candidate = payload > 0;
    }
  }
  if (!candidate) {
    Flush();
    WriteSingle(ip, len, trusted, owner);
    return;
  }
  if (nsegs_ > 0 && TryAppend(ip, len, l4hl, payload, trusted, owner)) return;
  Flush();
  Start(ip, len, l4hl, payload, trusted, owner);
}

void Coalescer::Start(uint8_t *ip, size_t len, size_t l4hl, size_t payload, bool trusted, int32_t owner) {
  nsegs_ = 1;
  head_ = ip;
  headLen_ = len;
  headTrusted_ = trusted;
  headCsum_ = 0;
  proto_ = ip[9];
  l4hl_ = l4hl;
  mss_ = payload;
  ipTotal_ = len;
  nextId_ = static_cast<uint16_t>(Load16be(ip + 4) + 1);
  psh_ = false;
  closed_ = false;
  if (proto_ == 6) {
    nextSeq_ = Load32be(ip + 24) + static_cast<uint32_t>(payload);
    psh_ = closed_ = (ip[33] & kTcpPsh) != 0;  // PSH only on the tail: nothing may follow
  }
  iov_[1] = {ip, 20 + l4hl};
  iov_[2] = {ip + 20 + l4hl, payload};
  owners_[0] = owner;
  nOwners_ = 1;
  segOwner_[0] = owner;
  segTrusted_[0] = trusted;
}

bool Coalescer::HeadChecksumOk() {
  if (headTrusted_) return true;
  if (headCsum_ == 0) headCsum_ = ClassifyL4Csum(head_, headLen_, true) == L4Csum::kBad ? -1 : 1;
  return headCsum_ > 0;
}

bool Coalescer::TryAppend(uint8_t *ip, size_t len, size_t l4hl, size_t payload, bool trusted, int32_t owner) {
  const uint8_t *h = head_;
  if (closed_ || ip[9] != proto_ || nsegs_ >= kMaxCoalesceSegs || payload > mss_ ||
      ipTotal_ + payload > 65535) {
    return false;
  }
  // Same addresses, TOS, TTL and DF; without DF the IP IDs must count up like TSO output does.
  if (memcmp(h + 12, ip + 12, 8) != 0 || h[1] != ip[1] || h[8] != ip[8] || ((h[6] ^ ip[6]) & 0x40) != 0)
    return false;
  if ((h[6] & 0x40) == 0 && Load16be(ip + 4) != nextId_) return false;
  if (memcmp(h + 20, ip + 20, 4) != 0) return false;  // ports
  if (proto_ == 6) {
    // Same ACK number and identical options; contiguous sequence.
    if (l4hl != l4hl_ || memcmp(h + 28, ip + 28, 4) != 0 || memcmp(h + 40, ip + 40, l4hl - 20) != 0)
      return false;
    if (Load32be(ip + 24) != nextSeq_) return false;
  }
  // The merged packet gets a fresh checksum from the kernel (NEEDS_CSUM), so anything not covered by a
  // verified outer checksum must be verified here first, or corruption would be laundered.
  if (!trusted && ClassifyL4Csum(ip, len, true) == L4Csum::kBad) return false;
  if (!HeadChecksumOk()) return false;
  iov_[2 + nsegs_] = {ip + 20 + l4hl, payload};
  segOwner_[nsegs_] = owner;
  segTrusted_[nsegs_] = trusted;
  nsegs_++;
  ipTotal_ += payload;
  nextId_++;
  if (owners_[nOwners_ - 1] != owner) owners_[nOwners_++] = owner;
  if (proto_ == 6) {
    nextSeq_ += static_cast<uint32_t>(payload);
    if (ip[33] & kTcpPsh) psh_ = closed_ = true;
  }
  if (payload < mss_) closed_ = true;  // only the tail may be short
  return true;
}

void Coalescer::Flush() {
  if (nsegs_ == 0) return;
  const int nsegs = nsegs_;
  nsegs_ = 0;
  if (nsegs == 1) {
    WriteSingle(head_, headLen_, headTrusted_, owners_[0]);
    return;
  }
  uint8_t *h = head_;
  uint8_t saved[80];  // the head's original IPv4 + L4 header, to undo the merge if the kernel refuses it
  memcpy(saved, h, 20 + l4hl_);
  Store16be(h + 2, static_cast<uint32_t>(ipTotal_));
  IpHeaderCsum(h, 20);
  uint8_t *l4 = h + 20;
  const size_t l4len = ipTotal_ - 20;
  if (proto_ == 6) {
    if (psh_) l4[13] |= kTcpPsh;
    StoreCsum(l4 + 16, CsumFold16(PseudoSum(h, 6, l4len)));
    vnet_ = {kVnetNeedsCsum,
             kVnetGsoTcpV4,
             static_cast<uint16_t>(20 + l4hl_),
             static_cast<uint16_t>(mss_),
             20,
             16};
  } else {
    Store16be(l4 + 4, static_cast<uint32_t>(l4len));
    StoreCsum(l4 + 6, CsumFold16(PseudoSum(h, 17, l4len)));
    vnet_ = {kVnetNeedsCsum, kVnetGsoUdpL4, 28, static_cast<uint16_t>(mss_), 20, 6};
  }
  iov_[0] = {&vnet_, kVnetHdrLen};
  const int err = Write(iov_, 2 + nsegs);
  if (err == EINVAL) {
    memcpy(h, saved, 20 + l4hl_);
    Refused(owners_, nOwners_);
    WriteSeparately(nsegs);
    return;
  }
  Account(owners_, nOwners_, F_COALESCED, err);
}

// After a refused merge: every segment goes out as the packet it arrived as (the payload follows its
// own header in the arena, so the header sits right in front of its payload iovec).
void Coalescer::WriteSeparately(int nsegs) {
  WriteSingle(head_, headLen_, segTrusted_[0], segOwner_[0]);
  for (int k = 1; k < nsegs; k++) {
    uint8_t *payload = static_cast<uint8_t *>(iov_[2 + k].iov_base);
    WriteSingle(payload - (20 + l4hl_), 20 + l4hl_ + iov_[2 + k].iov_len, segTrusted_[k], segOwner_[k]);
  }
}

void Coalescer::WriteSingle(uint8_t *ip, size_t len, bool trusted, int32_t owner) {
  VnetHdr v{};
  int32_t flags = 0;
  if (len >= 20 && (ip[0] >> 4) == 4 && Unfragmented(ip) && (ip[9] == 6 || ip[9] == 17)) {
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    if (maxPacket_ > 0 && len > maxPacket_ && ihl >= 20 && len > ihl + 20) {
      if (!merge_) {
        WriteSplit(ip, len, trusted, owner);
        return;
      }
      // A peer's super-packet delivered whole (kernel vxlan over veth): let the kernel segment it to
      // the MTU instead of splitting it here. Its checksum is partial already; set the exact value.
      if (ip[9] == 6) {
        const size_t hdr = ihl + static_cast<size_t>(ip[ihl + 12] >> 4) * 4;
        if (hdr >= ihl + 20 && hdr < maxPacket_ && hdr < len) {
          StoreCsum(ip + ihl + 16, CsumFold16(PseudoSum(ip, 6, len - ihl)));
          uint8_t gso = kVnetGsoTcpV4 | ((ip[ihl + 13] & kTcpCwr) ? kVnetGsoEcn : 0);
          v = {kVnetNeedsCsum,
               gso,
               static_cast<uint16_t>(hdr),
               static_cast<uint16_t>(maxPacket_ - hdr),
               static_cast<uint16_t>(ihl),
               16};
          flags = F_SEGMENTED;
        }
      } else if (uso_ && Load16be(ip + ihl + 4) == len - ihl && maxPacket_ > ihl + 8) {
        StoreCsum(ip + ihl + 6, CsumFold16(PseudoSum(ip, 17, len - ihl)));
        v = {kVnetNeedsCsum,
             kVnetGsoUdpL4,
             static_cast<uint16_t>(ihl + 8),
             static_cast<uint16_t>(maxPacket_ - ihl - 8),
             static_cast<uint16_t>(ihl),
             6};
        flags = F_SEGMENTED;
      }
    }
    if (flags == 0) {
      L4Csum c = ClassifyL4Csum(ip, len, false);
      if (c == L4Csum::kPartial) {
        // Left partial by an offloading sender: the kernel completes it if the packet leaves the host.
        v = {kVnetNeedsCsum,
             kVnetGsoNone,
             0,
             0,
             static_cast<uint16_t>(ihl),
             static_cast<uint16_t>(ip[9] == 6 ? 16 : 6)};
        flags = F_CSUM_FIXED;
      } else if (trusted) {
        v.flags = kVnetDataValid;
      }
    }
  } else if (trusted) {
    v.flags = kVnetDataValid;
  }
  struct iovec iov[2] = {{&v, kVnetHdrLen}, {ip, len}};
  const int err = Write(iov, 2);
  if (err == EINVAL && v.gsoType != kVnetGsoNone) {
    // A peer's packet, not one we built from checked segments: its headers may be what the kernel
    // refused, so split just this one and keep GSO writes on.
    WriteSplit(ip, len, trusted, owner);
    return;
  }
  Account(&owner, 1, flags, err);
}

// Splits an oversized TCP/UDP packet to the MTU here (full checksums computed, so DATA_VALID), for
// when GSO writes are off. Anything unsplittable is written as is and left to the kernel.
void Coalescer::WriteSplit(const uint8_t *ip, size_t len, bool trusted, int32_t owner) {
  const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
  const bool tcp = ip[9] == 6;
  const size_t l4hl = tcp ? static_cast<size_t>(ip[ihl + 12] >> 4) * 4 : 8;
  SplitPlan p;
  VnetHdr v{};
  if (maxPacket_ <= ihl + l4hl || !PlanSplit(ip, len, tcp ? kVnetGsoTcpV4 : kVnetGsoUdpL4,
                                             static_cast<int>(maxPacket_ - ihl - l4hl), &p)) {
    v.flags = trusted ? kVnetDataValid : 0;
    struct iovec iov[2] = {{&v, kVnetHdrLen}, {const_cast<uint8_t *>(ip), len}};
    Account(&owner, 1, 0, Write(iov, 2));
    return;
  }
  v.flags = kVnetDataValid;
  uint8_t hdr[kMaxSegHdr];
  int err = 0;
  for (uint32_t i = 0; i < p.segs; i++) {
    struct iovec iov[3];
    iov[0] = {&v, kVnetHdrLen};
    BuildSplitIov(p, nullptr, 0, i, 1, hdr, iov + 1);
    const int e = Write(iov, 3);
    if (e != 0 && err == 0) err = e;
  }
  Account(&owner, 1, F_SEGMENTED, err);
}

int Coalescer::Write(struct iovec *iov, int cnt) {
  writes_++;
  return sink_->Write(iov, cnt);
}

void Coalescer::Account(const int32_t *owners, int nOwners, int32_t flags, int err) {
  if (desc_ == nullptr) return;
  for (int i = 0; i < nOwners; i++) {
    if (owners[i] < 0) continue;
    int32_t *d = desc_ + owners[i] * kDescWords;
    d[D_FLAGS] |= flags;
    if (err != 0 && d[D_STATUS] == 0) d[D_STATUS] = err;
  }
}

void Coalescer::Refused(const int32_t *owners, int nOwners) {
  merge_ = false;
  Account(owners, nOwners, F_TUN_GSO_REFUSED, 0);
}

// ---- test entry points --------------------------------------------------------------------------------
// Not used by the data plane: they run the split/coalesce code above over caller buffers so unit tests
// can check it against an independent implementation.

namespace {

bool GetBytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  return TypedArrayOf(env, v, napi_uint8_array, data, len);
}

bool GetInt32s(napi_env env, napi_value v, int32_t **data, size_t *len) {
  return TypedArrayOf(env, v, napi_int32_array, data, len);
}

// Writes each record as [iov contents...] back to back; lengths go to lens.
class BufferSink : public TunSink {
 public:
  BufferSink(uint8_t *out, size_t cap, int32_t *lens, size_t maxRecords, bool refuseGso)
      : out_(out), cap_(cap), lens_(lens), maxRecords_(maxRecords), refuseGso_(refuseGso) {}
  int Write(struct iovec *iov, int cnt) override {
    // Plays a kernel whose TUN rejects GSO writes.
    if (refuseGso_ && static_cast<const VnetHdr *>(iov[0].iov_base)->gsoType != kVnetGsoNone) return EINVAL;
    size_t total = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    if (used_ + total > cap_ || n_ >= maxRecords_) return ENOSPC;
    for (int i = 0; i < cnt; i++) {
      memcpy(out_ + used_, iov[i].iov_base, iov[i].iov_len);
      used_ += iov[i].iov_len;
    }
    lens_[n_++] = static_cast<int32_t>(total);
    return 0;
  }
  size_t n_ = 0;

 private:
  uint8_t *out_;
  size_t cap_;
  int32_t *lens_;
  size_t maxRecords_;
  bool refuseGso_;
  size_t used_ = 0;
};

// offloadChecksum(bytes: Uint8Array) → the folded (not complemented) one's complement sum, as the
// 16-bit value whose big-endian bytes are in memory order.
napi_value OffloadChecksum(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t *p;
  size_t len;
  if (argc < 1 || !GetBytes(env, argv[0], &p, &len))
    return ThrowType(env, "offloadChecksum(bytes: Uint8Array)");
  return MakeInt32(env, ntohs(CsumFold16(CsumAcc(p, len, 0))));
}

// offloadSplit(pkt, gsoType, gsoSize, prefix, out, outLens) → segments written to out back to back as
// [prefix | headers | payload] (lengths in outLens), or -1 if pkt cannot be split.
napi_value OffloadSplit(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t *pkt, *prefix, *out;
  int32_t *lens;
  size_t pktLen, prefixLen, outLen, nLens;
  int32_t gsoType, gsoSize;
  if (argc < 6 || !GetBytes(env, argv[0], &pkt, &pktLen) ||
      napi_get_value_int32(env, argv[1], &gsoType) != napi_ok ||
      napi_get_value_int32(env, argv[2], &gsoSize) != napi_ok ||
      !GetBytes(env, argv[3], &prefix, &prefixLen) || !GetBytes(env, argv[4], &out, &outLen) ||
      !GetInt32s(env, argv[5], &lens, &nLens) || prefixLen > kVxlanEthLen) {
    return ThrowType(
        env, "offloadSplit(pkt, gsoType, gsoSize, prefix (<= 22 B), out: Uint8Array, outLens: Int32Array)");
  }
  SplitPlan plan;
  if (!PlanSplit(pkt, pktLen, gsoType, gsoSize, &plan)) return MakeInt32(env, -1);
  if (plan.segs > nLens) return ThrowType(env, "offloadSplit: outLens too small");
  uint8_t hdrs[kMaxSegHdr];
  size_t used = 0;
  for (uint32_t i = 0; i < plan.segs; i++) {
    struct iovec iov[2];
    BuildSplitIov(plan, prefix, prefixLen, i, 1, hdrs, iov);
    size_t total = iov[0].iov_len + iov[1].iov_len;
    if (used + total > outLen) return ThrowType(env, "offloadSplit: out too small");
    memcpy(out + used, iov[0].iov_base, iov[0].iov_len);
    memcpy(out + used + iov[0].iov_len, iov[1].iov_base, iov[1].iov_len);
    used += total;
    lens[i] = static_cast<int32_t>(total);
  }
  return MakeInt32(env, static_cast<int32_t>(plan.segs));
}

// offloadCoalesce(pkts, lens, trusted, maxPacket, uso, out, outLens, refuseGso?) → TUN writes produced from
// the IPv4 packets laid back to back in pkts (lengths in lens); each write lands in out as
// [virtio_net_hdr | packet]. pkts is modified in place like the arena is (merged packets' first headers).
// refuseGso: the sink fails GSO writes with EINVAL, like a kernel with broken TUN GSO.
napi_value OffloadCoalesce(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t *pkts, *out;
  int32_t *lens, *outLens;
  size_t pktsLen, nLens, outLen, nOut;
  bool trusted = false, uso = false, refuse = false;
  int32_t maxPacket;
  if (argc < 7 || !GetBytes(env, argv[0], &pkts, &pktsLen) || !GetInt32s(env, argv[1], &lens, &nLens) ||
      napi_get_value_bool(env, argv[2], &trusted) != napi_ok ||
      napi_get_value_int32(env, argv[3], &maxPacket) != napi_ok ||
      napi_get_value_bool(env, argv[4], &uso) != napi_ok || !GetBytes(env, argv[5], &out, &outLen) ||
      !GetInt32s(env, argv[6], &outLens, &nOut)) {
    return ThrowType(env, "offloadCoalesce(pkts, lens, trusted, maxPacket, uso, out, outLens, refuseGso?)");
  }
  if (argc >= 8) napi_get_value_bool(env, argv[7], &refuse);
  BufferSink sink(out, outLen, outLens, nOut, refuse);
  Coalescer co(&sink, nullptr, maxPacket > 0 ? static_cast<size_t>(maxPacket) : 0, uso);
  size_t off = 0;
  for (size_t i = 0; i < nLens; i++) {
    size_t len = static_cast<size_t>(lens[i]);
    if (off + len > pktsLen) return ThrowType(env, "offloadCoalesce: lens exceed pkts");
    co.Add(pkts + off, len, trusted, -1);
    off += len;
  }
  co.Flush();
  return MakeInt32(env, static_cast<int32_t>(sink.n_));
}

}  // namespace

void InitOffload(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"offloadChecksum", nullptr, OffloadChecksum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"offloadSplit", nullptr, OffloadSplit, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"offloadCoalesce", nullptr, OffloadCoalesce, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

}  // namespace tsf
