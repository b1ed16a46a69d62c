// Offload helpers shared by the TUN and UDP hot calls (docs/performance.md §2, §6): the virtio_net_hdr,
// TSO/USO super-packet splitting (egress) and TCP/UDP coalescing into GSO writes
// (ingress). Pure functions over memory plus a coalescer that emits through a sink, so the same code
// runs on the ring (tun.cc, udp.cc) and on plain buffers in unit tests (offload.cc test entry points).
#pragma once
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "bytes.h"
#include "dataplane.h"

namespace tsf {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "virtio_net_hdr is read/written native-endian = little-endian");

// virtio_net_hdr values (linux/virtio_net.h clashes with glibc headers and this system's copy predates
// UDP_L4).
constexpr uint8_t kVnetNeedsCsum = 1;
constexpr uint8_t kVnetDataValid = 2;
constexpr uint8_t kVnetGsoNone = 0;
constexpr uint8_t kVnetGsoTcpV4 = 1;
constexpr uint8_t kVnetGsoUdpL4 = 5;
constexpr uint8_t kVnetGsoEcn = 0x80;

struct VnetHdr {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t hdrLen;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};
static_assert(sizeof(VnetHdr) == kVnetHdrLen, "virtio_net_hdr is 10 bytes");

// UDP GSO limits: segments per sendmsg (older kernels allow 64) and the largest UDP payload.
constexpr int kMaxGsoSegs = 64;
constexpr size_t kMaxUdpPayload = 65507;
// Segments merged into one TUN write at most (like kernel GRO).
constexpr int kMaxCoalesceSegs = 64;
// Largest IPv4 + L4 header of a segment (both with options) plus the VXLAN+Ethernet prefix.
constexpr size_t kMaxSegHdr = kVxlanEthLen + 60 + 60;

// ---- egress: TSO/USO split -------------------------------------------------------------------------
struct SplitPlan {
  const uint8_t *ip = nullptr;  // super-packet (IPv4 header first)
  size_t total = 0;             // its IPv4 total length
  uint8_t proto = 0;            // 6 TCP, 17 UDP
  size_t ihl = 0, l4hl = 0, hdr = 0;
  size_t mss = 0;      // payload bytes per segment (virtio gso_size)
  size_t payload = 0;  // payload bytes in all
  uint32_t segs = 0;
};
// False when ip[0..len) is not an IPv4 TCP (gso TCPV4) / UDP (gso UDP_L4) packet that can be split.
bool PlanSplit(const uint8_t *ip, size_t len, int gsoType, int gsoSize, SplitPlan *plan);
// Builds the headers of segments [first, first+count) as [prefix | IPv4 | TCP/UDP] blocks of stride
// kMaxSegHdr at hdrs, and the iovec pairs {block, payload slice} at iov (2 per segment). Lengths, IP ID,
// TCP seq and flags (FIN/PSH only on the last segment, CWR only on the first) and full IP and L4
// checksums are set; payload bytes are only read. Returns the UDP payload size of a full segment.
size_t BuildSplitIov(const SplitPlan &plan, const uint8_t *prefix, size_t prefixLen, uint32_t first,
                     uint32_t count, uint8_t *hdrs, struct iovec *iov);

// ---- ingress: coalescing into GSO TUN writes -------------------------------------------------------
// Where finished packets go: writev(tun) in the data plane, a buffer in tests. Returns 0 or an errno.
class TunSink {
 public:
  virtual ~TunSink() = default;
  virtual int Write(struct iovec *iov, int cnt) = 0;
};

// Merges consecutive TCP segments (and, with uso, UDP datagrams) of one flow into a super-packet written
// with a virtio_net_hdr {NEEDS_CSUM, GSO_TCPV4/UDP_L4, gso_size}, following the rules of kernel GRO
// (docs/performance.md §2). Everything else is written alone with the right checksum flags. Segments are
// taken by pointer (zero copy); the first one's header is rewritten in place when a merged packet is flushed.
// Descriptor owners (index into desc) get STATUS = errno when a write carrying their data fails, and
// FLAGS bits F_COALESCED / F_CSUM_FIXED / F_SEGMENTED for the counters. If the kernel refuses a merged
// GSO write (EINVAL; some kernels had broken TUN GSO), its segments are written one by one instead,
// merging stops for the rest of the call and the owners get F_TUN_GSO_REFUSED so TS can stop asking.
// (A refused oversized packet from a peer is only split: its own headers may be the problem.)
class Coalescer {
 public:
  // merge = false: never a GSO write (the kernel refused one earlier): oversized TCP is split here.
  Coalescer(TunSink *sink, int32_t *desc, size_t maxPacket, bool uso, bool merge = true)
      : sink_(sink), desc_(desc), maxPacket_(maxPacket), uso_(uso), merge_(merge) {}
  // One inner IPv4 packet of IP total length len. trusted: the outer UDP checksum covered it (kernel-GRO'd
  // train, so non-zero and verified, or local CHECKSUM_PARTIAL); otherwise inner checksums are verified
  // before merging. owner: descriptor index, or -1.
  void Add(uint8_t *ip, size_t len, bool trusted, int32_t owner);
  void Flush();
  int writes() const { return writes_; }

 private:
  void Start(uint8_t *ip, size_t len, size_t l4hl, size_t payload, bool trusted, int32_t owner);
  bool TryAppend(uint8_t *ip, size_t len, size_t l4hl, size_t payload, bool trusted, int32_t owner);
  void WriteSingle(uint8_t *ip, size_t len, bool trusted, int32_t owner);
  void WriteSplit(const uint8_t *ip, size_t len, bool trusted, int32_t owner);
  void WriteSeparately(int nsegs);
  int Write(struct iovec *iov, int cnt);
  void Account(const int32_t *owners, int nOwners, int32_t flags, int err);
  void Refused(const int32_t *owners, int nOwners);
  bool HeadChecksumOk();

  TunSink *sink_;
  int32_t *desc_;
  size_t maxPacket_;
  bool uso_;
  bool merge_;
  int writes_ = 0;

  // The packet being built: head segment + payload iovecs of the following ones.
  int nsegs_ = 0;
  uint8_t *head_ = nullptr;
  size_t headLen_ = 0;
  bool headTrusted_ = false;
  int headCsum_ = 0;  // 0 unknown, 1 ok, -1 bad
  uint8_t proto_ = 0;
  size_t l4hl_ = 0;
  size_t mss_ = 0;
  size_t ipTotal_ = 0;
  uint32_t nextSeq_ = 0;
  uint16_t nextId_ = 0;
  bool closed_ = false;
  bool psh_ = false;
  VnetHdr vnet_{};
  struct iovec iov_[2 + kMaxCoalesceSegs];
  int32_t owners_[kMaxCoalesceSegs];  // distinct descriptors, in order
  int nOwners_ = 0;
  int32_t segOwner_[kMaxCoalesceSegs];  // per segment, to write them one by one after a refusal
  bool segTrusted_[kMaxCoalesceSegs];
};

void InitOffload(napi_env env, napi_value exports);

}  // namespace tsf
