// TUN device: open/configure (control path, node-addon-api style errors via ThrowErrno) and the
// batched read/write hot calls (raw napi_callbacks over a registered ring, integer arguments only).
// Without offloads a read()/write() moves one packet and batching only saves JS↔native crossings. With
// IFF_VNET_HDR + TUNSETOFFLOAD a read returns a whole TSO/USO super-packet (split later by udpSend) and
// the coalescing write puts up to 64 received segments into one GSO write (docs/performance.md §2, §6).
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "addon.h"
#include "bytes.h"
#include "dataplane.h"
#include "offload.h"

namespace tsf {

namespace {

inline uint32_t Mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7feb352dU;
  h ^= h >> 15;
  h *= 0x846ca68bU;
  h ^= h >> 16;
  return h;
}

// Hash of the inner flow: addresses + protocol, plus ports for unfragmented TCP/UDP/SCTP/UDP-Lite so
// that every packet (and every fragment) of one flow leaves through the same send socket / source port.
inline uint32_t FlowHash(const uint8_t *ip, size_t len) {
  uint32_t src = Load32be(ip + 12), dst = Load32be(ip + 16);
  uint32_t proto = ip[9];
  uint32_t h = src * 0x9e3779b1U ^ Mix32(dst ^ (proto << 24));
  size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
  uint16_t frag = static_cast<uint16_t>((ip[6] << 8) | ip[7]);
  if ((frag & 0x3fff) == 0 && (proto == 6 || proto == 17 || proto == 132 || proto == 136) && len >= ihl + 4) {
    h ^= Load32be(ip + ihl) * 0x85ebca6bU;
  }
  return Mix32(h);
}

// Applies the wanted TUNSETOFFLOAD bits, dropping what the kernel refuses: USO first (kernel < 6.2),
// then everything but checksum offload, then all. Returns the bits in force.
int32_t ApplyTunOffload(int fd, int32_t want) {
  const int32_t tries[] = {want, want & ~(TUN_OFF_USO4 | TUN_OFF_USO6), want & TUN_OFF_CSUM, 0};
  for (int32_t bits : tries) {
    if ((bits & ~want) != 0) continue;
    if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(bits)) == 0) return bits;
  }
  return 0;
}

// Opens /dev/net/tun and attaches to (or creates) device `name` with `flags` → fd, or -errno.
int AttachTun(const char *name, size_t nameLen, int flags, struct ifreq *ifr) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -errno;
  memset(ifr, 0, sizeof *ifr);
  memcpy(ifr->ifr_name, name, nameLen);
  ifr->ifr_flags = static_cast<short>(flags);
  if (ioctl(fd, TUNSETIFF, ifr) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

// A persistent single-queue TUN of the same name (left by a version without forwarding threads) refuses a
// multi-queue attach with EINVAL. If a plain attach to it works, it is such a TUN: drop its persistence
// and close it, which deletes the device (and the kernel routes on it; the route manager programs them
// again). → true when the device was removed.
bool RemoveSingleQueueTun(const char *name, size_t nameLen, int flags) {
  struct ifreq ifr;
  int fd = AttachTun(name, nameLen, flags & ~IFF_MULTI_QUEUE, &ifr);
  if (fd < 0) return false;
  bool ok = ioctl(fd, TUNSETPERSIST, 0) == 0;
  close(fd);
  return ok && if_nametoindex(name) == 0;
}

// tunOpen(name: string, vnetHdr: boolean, persist: boolean, txQueueLen: number, offloads?: number,
//         multiQueue?: boolean) → { fd, name, ifindex, offloads, replacedSingleQueue }
// multiQueue: IFF_MULTI_QUEUE; every call attaches one more queue (one per forwarding thread; the kernel
// spreads flows over the queues). A persistent single-queue device of that name is replaced
// (replacedSingleQueue: true). txQueueLen > 0 sets the device queue (the kernel→userspace backlog; TUN's
// default 500 overflows under bulk TCP while the loop is busy with the other direction). offloads:
// TUN_OFF_* bits wanted (only with vnetHdr); the result has the bits the kernel accepted. Offloads are
// always set explicitly: a persistent device keeps them from an earlier run, and a reader without the
// vnet header must never be handed super-packets.
napi_value TunOpen(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 4)
    return ThrowType(
        env, "tunOpen(name, vnetHdr, persist, txQueueLen, offloads?, multiQueue?): 4 arguments expected");
  int32_t txQueueLen, wantOffloads = 0;
  if (!ArgInt32(env, argv[3], "tunOpen", "txQueueLen", &txQueueLen)) return nullptr;
  if (argc >= 5 && !ArgInt32(env, argv[4], "tunOpen", "offloads", &wantOffloads)) return nullptr;
  char name[IFNAMSIZ + 1] = {0};
  size_t nameLen = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nameLen) != napi_ok) {
    return ThrowType(env, "tunOpen: name must be a string");
  }
  if (nameLen == 0 || nameLen >= IFNAMSIZ) return ThrowType(env, "tunOpen: name must be 1..15 bytes");
  bool vnet = false, persist = false, multiQueue = false;
  napi_get_value_bool(env, argv[1], &vnet);
  napi_get_value_bool(env, argv[2], &persist);
  if (argc >= 6) napi_get_value_bool(env, argv[5], &multiQueue);

  std::string what = std::string("open TUN ") + name;
  const int flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0) | (multiQueue ? IFF_MULTI_QUEUE : 0);
  struct ifreq ifr;
  int fd = AttachTun(name, nameLen, flags, &ifr);
  bool replaced = false;
  if (fd == -EINVAL && multiQueue && RemoveSingleQueueTun(name, nameLen, flags)) {
    replaced = true;
    fd = AttachTun(name, nameLen, flags, &ifr);
  }
  if (fd < 0) {
    if (fd == -EINVAL && multiQueue) {
      what +=
          " (multi-queue; an existing device of that name that is not a TUN, or that another process "
          "holds open as a single-queue TUN, cannot be reused)";
    }
    return ThrowErrno(env, what.c_str(), -fd);
  }
  if (vnet) {
    int sz = kVnetHdrLen;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      int e = errno;
      close(fd);
      return ThrowErrno(env, (std::string("set vnet header size on TUN ") + name).c_str(), e);
    }
  }
  const int32_t offloads = vnet ? ApplyTunOffload(fd, wantOffloads) : 0;
  if (!vnet && ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, (std::string("clear offloads on TUN ") + name).c_str(), e);
  }
  // Always set persistence explicitly: a device left persistent by an earlier run must stop being
  // persistent when this run asks for a non-persistent one.
  if (ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, (std::string("set persist on TUN ") + ifr.ifr_name).c_str(), e);
  }
  if (txQueueLen > 0) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq q;
    memset(&q, 0, sizeof q);
    memcpy(q.ifr_name, ifr.ifr_name, IFNAMSIZ);
    q.ifr_qlen = txQueueLen;
    if (s < 0 || ioctl(s, SIOCSIFTXQLEN, &q) < 0) {
      int e = errno;
      if (s >= 0) close(s);
      close(fd);
      return ThrowErrno(env, (std::string("set txqueuelen on TUN ") + ifr.ifr_name).c_str(), e);
    }
    close(s);
  }
  unsigned int ifindex = if_nametoindex(ifr.ifr_name);
  if (ifindex == 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, (std::string("ifindex of TUN ") + ifr.ifr_name).c_str(), e);
  }
  napi_value out, vname;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "fd", MakeInt32(env, fd));
  napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &vname);
  napi_set_named_property(env, out, "name", vname);
  napi_set_named_property(env, out, "ifindex", MakeInt32(env, static_cast<int32_t>(ifindex)));
  napi_set_named_property(env, out, "offloads", MakeInt32(env, offloads));
  napi_value vreplaced;
  napi_get_boolean(env, replaced, &vreplaced);
  napi_set_named_property(env, out, "replacedSingleQueue", vreplaced);
  return out;
}

// tunSetPersist(fd, on): lets a restart keep the device (and the kernel routes on it), or drops that.
napi_value TunSetPersist(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  bool on = false;
  if (argc < 2 || !ArgInt32(env, argv[0], "tunSetPersist", "fd", &fd)) return nullptr;
  napi_get_value_bool(env, argv[1], &on);
  if (ioctl(fd, TUNSETPERSIST, on ? 1 : 0) < 0) return ThrowErrno(env, "set persist on TUN", errno);
  return nullptr;
}

// ifMtu(name) → MTU of an interface in this network namespace (SIOCGIFMTU).
napi_value IfMtu(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  size_t nameLen = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &nameLen) != napi_ok ||
      nameLen == 0) {
    return ThrowType(env, "ifMtu(name): interface name expected");
  }
  std::string what = std::string("get MTU of ") + ifr.ifr_name;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(env, what.c_str(), errno);
  int rc = ioctl(s, SIOCGIFMTU, &ifr);
  int e = errno;
  close(s);
  if (rc < 0) return ThrowErrno(env, what.c_str(), e);
  return MakeInt32(env, ifr.ifr_mtu);
}

// closeFd(fd): closes a TUN or UDP fd opened by this addon.
napi_value CloseFd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  if (argc < 1 || !ArgInt32(env, argv[0], "closeFd", "fd", &fd)) return nullptr;
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(env, "close fd", errno);
  return nullptr;
}

// tunRead(ring, fd, max, mode) → n ≥ 0 packets read into slots 0..n-1, or -errno if the first read failed.
// Stops at EAGAIN, at max, or at the ring size. Descriptor: OFF/LEN of the IPv4 packet, ADDR inner dst,
// FLOW hash, FLAGS, and the virtio fields when mode has M_VNET.
napi_value TunRead(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, fd, max, mode;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &max) != napi_ok ||
      napi_get_value_int32(env, argv[3], &mode) != napi_ok) {
    return ThrowType(env, "tunRead(ring, fd, max, mode): integers expected");
  }
  const bool vnet = (mode & M_VNET) != 0;
  Ring *r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (max > static_cast<int32_t>(r->nSlots)) max = static_cast<int32_t>(r->nSlots);
  const size_t lead = vnet ? kVnetHdrLen : 0;
  const size_t cap = r->slotSize - r->headroom + lead;
  int32_t n = 0;
  while (n < max) {
    uint8_t *slot = r->arena + static_cast<size_t>(n) * r->slotSize;
    uint8_t *ip = slot + r->headroom;
    ssize_t got = read(fd, ip - lead, cap);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || n > 0) break;
      return MakeInt32(env, -errno);
    }
    int32_t *d = r->desc + n * kDescWords;
    int32_t flags = static_cast<size_t>(got) == cap ? F_TRUNC : 0;
    size_t len = static_cast<size_t>(got);
    d[D_GSO_TYPE] = d[D_GSO_SIZE] = d[D_HDR_LEN] = d[D_CSUM_START] = d[D_CSUM_OFF] = d[D_SEGS] = 0;
    if (vnet) {
      if (len < lead) {
        len = lead;  // cannot happen with a vnet TUN; treated as an empty packet
      }
      const uint8_t *h = ip - lead;
      uint8_t vflags = h[0];
      d[D_GSO_TYPE] = h[1];
      d[D_HDR_LEN] = Load16le(h + 2);
      d[D_GSO_SIZE] = Load16le(h + 4);
      d[D_CSUM_START] = Load16le(h + 6);
      d[D_CSUM_OFF] = Load16le(h + 8);
      len -= lead;
      if ((vflags & kVnetNeedsCsum) && h[1] == kVnetGsoNone &&
          FinishPartialCsum(ip, len, Load16le(h + 6), Load16le(h + 8))) {
        vflags &= static_cast<uint8_t>(~kVnetNeedsCsum);
      }
      flags |= static_cast<int32_t>(vflags) << 8;
    }
    d[D_OFF] = static_cast<int32_t>(ip - r->arena);
    d[D_LEN] = static_cast<int32_t>(len);
    d[D_STATUS] = 0;
    d[D_PEER] = -1;
    if (len >= 20 && (ip[0] >> 4) == 4 && (ip[0] & 0x0f) >= 5) {
      d[D_ADDR] = static_cast<int32_t>(Load32be(ip + 16));
      d[D_FLOW] = static_cast<int32_t>(FlowHash(ip, len));
    } else {
      d[D_ADDR] = 0;
      d[D_FLOW] = 0;
      flags |= F_NOT_IPV4;
    }
    d[D_FLAGS] = flags;
    n++;
  }
  return MakeInt32(env, n);
}

// Where the coalescer's packets go: writev on the TUN, with the virtio_net_hdr when the TUN has one.
// Without it (rung none, no vnet header) iov[0] (the header) is left out; a packet the coalescer marked
// NEEDS_CSUM (an offloading sender's partial checksum, see ClassifyL4Csum) is completed here when
// `repair` is on (a plain TUN cannot tell the kernel to finish it, and the stack would drop it), else
// written as it came. Without the vnet header the coalescer never merges, so such a packet is whole in
// iov[1].
class FdSink : public TunSink {
 public:
  FdSink(int fd, bool vnet, bool repair) : fd_(fd), vnet_(vnet), repair_(repair) {}
  int Write(struct iovec *iov, int cnt) override {
    if (!vnet_) {
      const VnetHdr *h = static_cast<const VnetHdr *>(iov[0].iov_base);
      if (repair_ && (h->flags & kVnetNeedsCsum) != 0 && cnt == 2) {
        FinishPartialCsum(static_cast<uint8_t *>(iov[1].iov_base), iov[1].iov_len, h->csumStart,
                          h->csumOffset);
      }
      iov++;
      cnt--;
    }
    ssize_t w;
    do {
      w = writev(fd_, iov, cnt);
    } while (w < 0 && errno == EINTR);
    return w < 0 ? errno : 0;
  }

 private:
  int fd_;
  bool vnet_;
  bool repair_;
};

// True when segment k of a descriptor was rejected by TS (D_REJECT_LO/HI bit k; see dataplane.h).
inline bool Rejected(const int32_t *d, uint32_t k) {
  if (k < 32) return (static_cast<uint32_t>(d[D_REJECT_LO]) >> k) & 1;
  if (k < 64) return (static_cast<uint32_t>(d[D_REJECT_HI]) >> (k - 32)) & 1;
  return true;
}

// tunWrite(ring, fd, n, mode, maxPacket) → TUN writes made. Descriptors are in datagram form (udpRecv's
// OFF/LEN, GSO_SIZE) after TS validated them: LEN 0 = skip the descriptor, REJECT bits = skip those
// segments. Every other segment is stripped of the ring's encapsulation and handed to the coalescer in
// arrival order. Segments of a UDP_GRO train (GSO_SIZE > 0) were covered by a non-zero outer checksum the
// kernel verified; single datagrams may have had none, so their inner checksums are verified before
// they are merged. Merging (GSO writes) needs M_COALESCE with M_VNET and not M_NO_MERGE; otherwise every
// packet is written alone and TCP/UDP packets longer than maxPacket (> 0, the TUN MTU) are split here.
// Partial inner checksums are passed on as NEEDS_CSUM (vnet header) or completed (M_CSUM_REPAIR).
// STATUS gets 0 or the errno of a failed write; FLAGS gets F_COALESCED / F_CSUM_FIXED / F_SEGMENTED /
// F_TUN_GSO_REFUSED (offload.h, Coalescer).
napi_value TunWrite(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, fd, n, mode, maxPacket;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &n) != napi_ok ||
      napi_get_value_int32(env, argv[3], &mode) != napi_ok ||
      napi_get_value_int32(env, argv[4], &maxPacket) != napi_ok) {
    return ThrowType(env, "tunWrite(ring, fd, n, mode, maxPacket): integers expected");
  }
  Ring *r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (n > static_cast<int32_t>(r->nSlots)) n = static_cast<int32_t>(r->nSlots);
  const bool vnet = (mode & M_VNET) != 0;
  const bool merge = vnet && (mode & M_COALESCE) != 0 && (mode & M_NO_MERGE) == 0;
  FdSink sink(fd, vnet, (mode & M_CSUM_REPAIR) != 0);
  Coalescer co(&sink, r->desc, maxPacket > 0 ? static_cast<size_t>(maxPacket) : 0, (mode & M_USO) != 0,
               merge);
  const size_t encap = r->encapLen;
  for (int32_t i = 0; i < n; i++) {
    int32_t *d = r->desc + i * kDescWords;
    const int32_t off = d[D_OFF], len = d[D_LEN];
    if (len <= 0) continue;
    if (off < 0 || static_cast<size_t>(off) + static_cast<size_t>(len) > r->arenaLen) {
      d[D_STATUS] = EINVAL;
      continue;
    }
    d[D_STATUS] = 0;
    const bool trusted = d[D_GSO_SIZE] > 0;
    const size_t seg = trusted ? static_cast<size_t>(d[D_GSO_SIZE]) : static_cast<size_t>(len);
    uint8_t *base = r->arena + off;
    uint32_t k = 0;
    for (size_t o = 0; o < static_cast<size_t>(len); o += seg, k++) {
      const size_t slen = static_cast<size_t>(len) - o < seg ? static_cast<size_t>(len) - o : seg;
      if (Rejected(d, k) || slen < encap + 20) continue;
      uint8_t *ip = base + o + encap;
      const size_t total = Load16be(ip + 2);
      if ((ip[0] >> 4) != 4 || total < 20 || total > slen - encap) continue;
      co.Add(ip, total, trusted, i);
    }
  }
  co.Flush();
  return MakeInt32(env, co.writes());
}

}  // namespace

void InitTun(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"tunOpen", nullptr, TunOpen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tunSetPersist", nullptr, TunSetPersist, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"ifMtu", nullptr, IfMtu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"closeFd", nullptr, CloseFd, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tunRead", nullptr, TunRead, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tunWrite", nullptr, TunWrite, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  InitRing(env, exports);
  InitOffload(env, exports);
}

}  // namespace tsf
