// UDP underlay sockets and the batched hot calls (recvmmsg/sendmmsg over a registered ring).
// Sockets: non-blocking, DF clear (IP_PMTUDISC_DONT, like the kernel vxlan driver), 7 MiB buffers
// (FORCE when root, else capped by rmem_max/wmem_max), kernel-computed outer UDP checksum (never
// SO_NO_CHECK: UDP GSO rejects it and kernel GRO skips zero-checksum datagrams, docs/performance.md §5).
// Offload path: UDP_SEGMENT sends (one sendmsg carries up to 64 equal-size datagrams) and UDP_GRO
// receives (one datagram slot holds a train of equal-size datagrams, the size in a cmsg).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "addon.h"
#include "dataplane.h"
#include "offload.h"

namespace tsf {

namespace {

constexpr int kMaxBatch = 256;  // messages per sendmmsg/recvmmsg call

// Per-thread scratch for the message vectors: allocated once, so batches allocate nothing.
thread_local struct mmsghdr t_msgs[kMaxBatch];
thread_local struct iovec t_iov[kMaxBatch];
thread_local struct sockaddr_in t_addr[kMaxBatch];
thread_local int32_t t_idx[4096];
thread_local uint8_t t_done[4096];
struct CmsgInt {
  alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int))];
};
thread_local CmsgInt t_ctrl[kMaxBatch];

bool SetBuf(int fd, int forceOpt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, forceOpt, &bytes, sizeof bytes) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes) == 0;
}

// udpOpen(port, bufBytes, flags?, bindIp?) → { fd, port, gro, gso }: port 0 = ephemeral (send sockets), else
// the VXLAN listen port. bindIp: IPv4 address as a host-order uint32 (0 = any); the send sockets are bound
// to the published PublicIP so the outer source is the address peers know us by. U_REUSEPORT: SO_REUSEPORT,
// one receive socket per forwarding thread on the same port (the kernel spreads senders over them by the
// outer 4-tuple, whose source port carries the flow hash). flags U_GRO asks for UDP_GRO (gro: whether the
// kernel took it, ≥ 5.0; wireguard-go trusts it from 5.12). gso: whether the kernel knows UDP_SEGMENT
// (≥ 4.18); probed by setting the socket default and clearing it again, so plain sends stay unsegmented.
napi_value UdpOpen(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t port, buf, flags = 0;
  uint32_t bindIp = 0;
  if (argc < 2 || !ArgInt32(env, argv[0], "udpOpen", "port", &port) ||
      !ArgInt32(env, argv[1], "udpOpen", "bufBytes", &buf)) {
    return nullptr;
  }
  if (argc >= 3 && !ArgInt32(env, argv[2], "udpOpen", "flags", &flags)) return nullptr;
  if (argc >= 4 && napi_get_value_uint32(env, argv[3], &bindIp) != napi_ok) {
    return ThrowType(env, "udpOpen: bindIp must be a uint32");
  }
  if (port < 0 || port > 65535) return ThrowType(env, "udpOpen: port must be 0..65535");
  char ipText[INET_ADDRSTRLEN];
  in_addr bindAddr{htonl(bindIp)};
  inet_ntop(AF_INET, &bindAddr, ipText, sizeof ipText);
  std::string where = std::string("UDP ") + ipText + ":" + std::to_string(port);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, ("socket " + where).c_str(), errno);
  auto fail = [&](const char *op) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, (std::string(op) + " " + where).c_str(), e);
  };
  if (flags & U_REUSEPORT) {
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) return fail("set SO_REUSEPORT on");
  }
  int pmtu = IP_PMTUDISC_DONT;
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0)
    return fail("set IP_PMTUDISC_DONT on");
  if (buf > 0) {
    if (!SetBuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, buf)) return fail("set receive buffer on");
    if (!SetBuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, buf)) return fail("set send buffer on");
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(bindIp);
  if (bind(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) < 0) return fail("bind");
  socklen_t sl = sizeof sa;
  if (getsockname(fd, reinterpret_cast<struct sockaddr *>(&sa), &sl) < 0) return fail("getsockname");
  bool gro = false;
  if (flags & U_GRO) {
    int on = 1;
    gro = setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0;
  }
  int seg = 1400, none = 0;
  bool gso = setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0;
  if (gso && setsockopt(fd, SOL_UDP, UDP_SEGMENT, &none, sizeof none) != 0)
    return fail("clear UDP_SEGMENT on");
  napi_value out, vgro, vgso;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "fd", MakeInt32(env, fd));
  napi_set_named_property(env, out, "port", MakeInt32(env, ntohs(sa.sin_port)));
  napi_get_boolean(env, gro, &vgro);
  napi_get_boolean(env, gso, &vgso);
  napi_set_named_property(env, out, "gro", vgro);
  napi_set_named_property(env, out, "gso", vgso);
  return out;
}

// Sends msgs[0..n) with sendmmsg (MSG_DONTWAIT), resuming after partial sends and EINTR. When message k
// fails with errno e, onError(k, e) decides: true = skip that message and go on, false = stop (the rest is
// not sent). The one retry loop of every send path. Returns the messages sent.
template <class F>
int SendAll(int fd, struct mmsghdr *msgs, int n, F &&onError) {
  int sent = 0, k = 0;
  while (k < n) {
    const int got = sendmmsg(fd, msgs + k, static_cast<unsigned>(n - k), MSG_DONTWAIT);
    if (got > 0) {
      sent += got;
      k += got;
      continue;
    }
    const int e = got == 0 ? EAGAIN : errno;
    if (e == EINTR) continue;
    if (!onError(k, e)) break;
    k++;
  }
  return sent;
}

inline bool QueueFull(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS; }

// ---- send path (every rung) -----------------------------------------------------------------------

// Message-building scratch, one per thread, allocated on first use (never per packet or batch).
struct SendScratch {
  static constexpr int kMsgs = 256;
  static constexpr int kIov = 4096;
  static constexpr int kHdrs = 1024;
  struct mmsghdr msgs[kMsgs];
  struct sockaddr_in addr[kMsgs];
  struct {
    alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(uint16_t))];
  } ctrl[kMsgs];
  int32_t first[kMsgs];    // position (in t_idx) of the first descriptor the message carries
  int32_t count[kMsgs];    // descriptors it carries: a run of small datagrams may span several
  int32_t segs[kMsgs];     // datagrams in the message
  int32_t gsoSize[kMsgs];  // UDP_SEGMENT size when segs > 1
  int32_t iovPerSeg[kMsgs];
  struct iovec iov[kIov];
  alignas(8) uint8_t hdrs[kHdrs * kMaxSegHdr];
  struct mmsghdr single[kMaxGsoSegs];
};
thread_local SendScratch *t_send = nullptr;

// Builds sendmmsg messages for one socket, in descriptor order (= flow order):
// - a TSO/USO super-packet becomes its MSS segments, each [copy of TS's 22 B header + rebuilt IP/L4
//   header | payload slice in the arena] (2 iovecs, no payload copy);
// - a plain datagram is one iovec straight from the arena;
// - consecutive datagrams/segments to the same peer with the same size (the last may be shorter) share
//   one UDP_SEGMENT message of up to 64 datagrams / 65507 B (without GSO: one message each).
// Messages are flushed with sendmmsg when the scratch fills up and at the end.
class OffloadSender {
 public:
  OffloadSender(Ring *r, SendScratch *s, int fd, bool gso) : r_(r), s_(s), fd_(fd), gso_(gso) {}

  void AddDatagram(int32_t pos) {
    int32_t *d = Desc(pos);
    const int32_t len = d[D_LEN];
    d[D_SEGS] = 1;
    EnsureRoom(1, 1, 0);
    s_->iov[nIov_] = {r_->arena + d[D_OFF], static_cast<size_t>(len)};
    AddSegment(pos, 1, len);
  }

  void AddSuper(int32_t pos) {
    int32_t *d = Desc(pos);
    const int32_t len = d[D_LEN];
    const uint8_t *tmpl = r_->arena + d[D_OFF];
    SplitPlan p;
    const int32_t encap = static_cast<int32_t>(r_->encapLen);
    if (len < encap ||
        !PlanSplit(tmpl + encap, static_cast<size_t>(len - encap), d[D_GSO_TYPE], d[D_GSO_SIZE], &p)) {
      d[D_STATUS] = EINVAL;
      return;
    }
    for (uint32_t i = 0; i < p.segs; i++) {
      EnsureRoom(1, 2, 1);
      struct iovec *iov = s_->iov + nIov_;
      BuildSplitIov(p, tmpl, static_cast<size_t>(encap), i, 1,
                    s_->hdrs + static_cast<size_t>(nHdr_) * kMaxSegHdr, iov);
      nHdr_++;
      AddSegment(pos, 2, static_cast<int32_t>(iov[0].iov_len + iov[1].iov_len));
    }
    d[D_SEGS] = static_cast<int32_t>(p.segs);
    d[D_HDR_LEN] = static_cast<int32_t>(p.hdr);
  }

  void Flush() {
    for (int m = 0; m < nMsg_; m++) {
      struct msghdr &h = s_->msgs[m].msg_hdr;
      if (s_->segs[m] > 1) {
        h.msg_control = s_->ctrl[m].buf;
        h.msg_controllen = sizeof s_->ctrl[m].buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t g = static_cast<uint16_t>(s_->gsoSize[m]);
        memcpy(CMSG_DATA(c), &g, sizeof g);
      }
    }
    sent_ += SendAll(fd_, s_->msgs, nMsg_, [this](int k, int e) {
      if (QueueFull(e)) {
        for (int j = k; j < nMsg_; j++) Mark(j, e);  // queue full: drop instead of spinning
        return false;
      }
      if (s_->segs[k] > 1 && (e == EIO || e == EINVAL || e == EMSGSIZE)) {
        // The route cannot take this GSO send (EIO: no checksum offload there); the datagrams can go alone.
        SendSingles(k, e == EIO);
      } else {
        Mark(k, e);
      }
      return true;
    });
    nMsg_ = nIov_ = nHdr_ = 0;
    run_ = -1;
  }

  int sent() const { return sent_; }

 private:
  int32_t *Desc(int32_t pos) { return r_->desc + t_idx[pos] * kDescWords; }

  // Takes one datagram whose nIovs iovecs were just placed at s_->iov[nIov_]: appended to the open run
  // when it goes to the same peer with the run's size or less (only the last datagram of a UDP_SEGMENT
  // send may be shorter, so a shorter one closes the run), else the start of a new message. A run may
  // continue across descriptors: TCP sizes super-packets in whole MSS, so the segments of consecutive
  // super-packets of a flow fill 64 KiB messages instead of leaving a short message per super-packet.
  // (A 64 KiB super-packet at MTU 1450 is 46 segments but only 44 fit in 65507 B. Lowering the TUN's
  // gso_max_segs to 44 instead does not work for pods: the kernel then segments their forwarded TSO
  // packets in software before the TUN, which measured 4.4 instead of 7.6 Gbit/s.)
  void AddSegment(int32_t pos, int nIovs, int32_t len) {
    const int32_t *d = Desc(pos);
    if (run_ >= 0 && !runClosed_ && s_->segs[run_] < kMaxGsoSegs &&
        runTotal_ + len <= static_cast<int32_t>(kMaxUdpPayload) && len <= s_->gsoSize[run_] &&
        s_->iovPerSeg[run_] == nIovs && d[D_ADDR] == runAddr_ && d[D_PORT] == runPort_) {
      s_->msgs[run_].msg_hdr.msg_iovlen += static_cast<size_t>(nIovs);
      s_->segs[run_]++;
      s_->count[run_] = pos - s_->first[run_] + 1;
      runTotal_ += len;
      if (len < s_->gsoSize[run_]) runClosed_ = true;
    } else {
      const int m = NewMsg(pos, nIov_, nIovs, 1, len, nIovs);
      if (gso_) {
        run_ = m;
        runTotal_ = len;
        runClosed_ = false;
        runAddr_ = d[D_ADDR];
        runPort_ = d[D_PORT];
      }
    }
    nIov_ += nIovs;
  }

  void EnsureRoom(int msgs, int iovs, int hdrs) {
    if (nMsg_ + msgs > SendScratch::kMsgs || nIov_ + iovs > SendScratch::kIov ||
        nHdr_ + hdrs > SendScratch::kHdrs)
      Flush();
  }

  int NewMsg(int32_t pos, int iovStart, int iovCnt, int32_t segs, int32_t gsoSize, int32_t iovPerSeg) {
    const int m = nMsg_++;
    const int32_t *d = Desc(pos);
    struct sockaddr_in &a = s_->addr[m];
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(d[D_PORT]));
    a.sin_addr.s_addr = htonl(static_cast<uint32_t>(d[D_ADDR]));
    struct msghdr &h = s_->msgs[m].msg_hdr;
    h.msg_name = &a;
    h.msg_namelen = sizeof a;
    h.msg_iov = s_->iov + iovStart;
    h.msg_iovlen = static_cast<size_t>(iovCnt);
    h.msg_control = nullptr;
    h.msg_controllen = 0;
    h.msg_flags = 0;
    s_->first[m] = pos;
    s_->count[m] = 1;
    s_->segs[m] = segs;
    s_->gsoSize[m] = gsoSize;
    s_->iovPerSeg[m] = iovPerSeg;
    return m;
  }

  void Mark(int m, int err) {
    for (int32_t j = s_->first[m]; j < s_->first[m] + s_->count[m]; j++) {
      int32_t *d = Desc(j);
      if (d[D_STATUS] == 0) d[D_STATUS] = err;
    }
  }

  void SendSingles(int m, bool eio) {
    const struct msghdr &src = s_->msgs[m].msg_hdr;
    const int n = s_->segs[m], per = s_->iovPerSeg[m];
    for (int j = 0; j < n; j++) {
      struct msghdr &h = s_->single[j].msg_hdr;
      h = src;
      h.msg_iov = src.msg_iov + j * per;
      h.msg_iovlen = static_cast<size_t>(per);
      h.msg_control = nullptr;
      h.msg_controllen = 0;
    }
    int err = 0;
    sent_ += SendAll(fd_, s_->single, n, [&err](int, int e) {
      if (err == 0) err = e;
      return !QueueFull(e);
    });
    if (err != 0) Mark(m, err);
    if (eio) {
      for (int32_t j = s_->first[m]; j < s_->first[m] + s_->count[m]; j++) Desc(j)[D_FLAGS] |= F_GSO_EIO;
    }
  }

  Ring *r_;
  SendScratch *s_;
  int fd_;
  bool gso_;
  int nMsg_ = 0, nIov_ = 0, nHdr_ = 0;
  int run_ = -1;
  bool runClosed_ = false;
  int32_t runTotal_ = 0, runAddr_ = 0, runPort_ = 0;
  int sent_ = 0;
};

// udpSend's work: descriptors grouped per socket (order kept within a socket, i.e. within a flow),
// messages built by OffloadSender.
int SendRing(Ring *r, int32_t n, int32_t mode) {
  if (t_send == nullptr) t_send = new SendScratch();
  const bool split = (mode & S_SPLIT) != 0, gso = (mode & S_GSO) != 0;
  int first = -1;
  for (int32_t i = 0; i < n; i++) {
    int32_t *d = r->desc + i * kDescWords;
    int32_t off = d[D_OFF], len = d[D_LEN];
    t_done[i] = 1;
    if (len <= 0) continue;
    d[D_FLAGS] &= ~F_GSO_EIO;
    d[D_SEGS] = 0;
    if (off < 0 || static_cast<size_t>(off) + static_cast<size_t>(len) > r->arenaLen || d[D_FD] < 0) {
      d[D_STATUS] = EINVAL;
      continue;
    }
    d[D_STATUS] = 0;
    t_done[i] = 0;
    if (first < 0) first = i;
  }
  int sent = 0;
  while (first >= 0) {
    const int fd = r->desc[first * kDescWords + D_FD];
    int m = 0, next = -1;
    for (int32_t i = first; i < n; i++) {
      if (t_done[i]) continue;
      if (r->desc[i * kDescWords + D_FD] == fd) {
        t_idx[m++] = i;
        t_done[i] = 1;
      } else if (next < 0) {
        next = i;
      }
    }
    OffloadSender snd(r, t_send, fd, gso);
    for (int j = 0; j < m; j++) {
      if (split && r->desc[t_idx[j] * kDescWords + D_GSO_TYPE] != 0) {
        snd.AddSuper(j);
      } else {
        snd.AddDatagram(j);
      }
    }
    snd.Flush();
    sent += snd.sent();
    first = next;
  }
  return sent;
}

// udpSend(ring, n, mode?) → messages sent. Each descriptor with LEN > 0 is one datagram (OFF/LEN,
// ADDR:PORT, FD), or with S_SPLIT possibly a super-packet that is split; STATUS gets 0 or errno, SEGS the
// datagrams it became and HDR_LEN the header length it was split with. Datagrams are grouped per socket,
// keeping the order within a socket, i.e. within a flow. S_GSO: equal-size runs go out as UDP_SEGMENT
// sends; FLAGS F_GSO_EIO flags one the route refused with EIO (its datagrams were resent one by one).
napi_value UdpSend(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, n, mode = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &n) != napi_ok ||
      (argc >= 3 && napi_get_value_int32(env, argv[2], &mode) != napi_ok)) {
    return ThrowType(env, "udpSend(ring, n, mode?): integers expected");
  }
  Ring *r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (n > static_cast<int32_t>(r->nSlots)) n = static_cast<int32_t>(r->nSlots);
  return MakeInt32(env, SendRing(r, n, mode));
}

// udpRecv(ring, fd, max) → n ≥ 0 datagrams in slots 0..n-1, or -errno. Each datagram lands at
// slot + headroom - 22 so that its inner IP packet sits at slot + headroom. Descriptor: OFF/LEN of the
// datagram, ADDR:PORT of the sender, FLAGS F_TRUNC when it did not fit, GSO_SIZE the UDP_GRO segment
// size when the kernel merged a train of datagrams into the slot (else 0), SEGS the datagrams in it.
napi_value UdpRecv(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, fd, max;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &max) != napi_ok) {
    return ThrowType(env, "udpRecv(ring, fd, max): integers expected");
  }
  Ring *r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (max > static_cast<int32_t>(r->nSlots)) max = static_cast<int32_t>(r->nSlots);
  if (max > kMaxBatch) max = kMaxBatch;
  if (max <= 0) return MakeInt32(env, 0);
  const size_t start = r->headroom - r->encapLen;
  const size_t cap = r->slotSize - start;
  for (int32_t i = 0; i < max; i++) {
    t_iov[i].iov_base = r->arena + static_cast<size_t>(i) * r->slotSize + start;
    t_iov[i].iov_len = cap;
    struct msghdr &h = t_msgs[i].msg_hdr;
    h.msg_name = &t_addr[i];
    h.msg_namelen = sizeof t_addr[i];
    h.msg_iov = &t_iov[i];
    h.msg_iovlen = 1;
    h.msg_control = t_ctrl[i].buf;
    h.msg_controllen = sizeof t_ctrl[i].buf;
    h.msg_flags = 0;
  }
  int got;
  do {
    got = recvmmsg(fd, t_msgs, static_cast<unsigned>(max), MSG_DONTWAIT, nullptr);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return MakeInt32(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
  for (int i = 0; i < got; i++) {
    int32_t *d = r->desc + i * kDescWords;
    d[D_OFF] = static_cast<int32_t>(static_cast<size_t>(i) * r->slotSize + start);
    d[D_LEN] = static_cast<int32_t>(t_msgs[i].msg_len);
    d[D_ADDR] = static_cast<int32_t>(ntohl(t_addr[i].sin_addr.s_addr));
    d[D_PORT] = ntohs(t_addr[i].sin_port);
    d[D_FLAGS] = (t_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? F_TRUNC : 0;
    d[D_STATUS] = 0;
    d[D_PEER] = -1;
    int gso = 0;
    struct msghdr *h = &t_msgs[i].msg_hdr;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        memcpy(&gso, CMSG_DATA(c), sizeof gso);
      }
    }
    const int32_t len = d[D_LEN];
    d[D_GSO_SIZE] = gso > 0 ? gso : 0;
    d[D_SEGS] = gso > 0 && len > 0 ? (len + gso - 1) / gso : 1;
  }
  return MakeInt32(env, got);
}

}  // namespace

void InitUdp(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"udpOpen", nullptr, UdpOpen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"udpSend", nullptr, UdpSend, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"udpRecv", nullptr, UdpRecv, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

}  // namespace tsf
