// UDP underlay sockets and the batched hot calls (recvmmsg/sendmmsg over a registered ring).
// Sockets: non-blocking, DF clear (IP_PMTUDISC_DONT, like the kernel vxlan driver), 7 MiB buffers
// (FORCE when root, else capped by rmem_max/wmem_max), kernel-computed outer UDP checksum (never
// SO_NO_CHECK: UDP GSO rejects it and kernel GRO skips zero-checksum datagrams, perf-notes §5).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "addon.h"
#include "dataplane.h"

namespace tsf {

namespace {

constexpr int kMaxBatch = 256;  // messages per sendmmsg/recvmmsg call

// Per-thread scratch for the message vectors: allocated once, so batches allocate nothing.
thread_local struct mmsghdr t_msgs[kMaxBatch];
thread_local struct iovec t_iov[kMaxBatch];
thread_local struct sockaddr_in t_addr[kMaxBatch];
thread_local int32_t t_idx[kMaxBatch];
thread_local uint8_t t_done[4096];

bool SetBuf(int fd, int forceOpt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, forceOpt, &bytes, sizeof bytes) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes) == 0;
}

// udpOpen(port, bufBytes) → { fd, port }: port 0 = ephemeral (send sockets), else the VXLAN listen port.
napi_value UdpOpen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t port, buf;
  if (argc < 2 || !ArgInt32(env, argv[0], "udpOpen", "port", &port) ||
      !ArgInt32(env, argv[1], "udpOpen", "bufBytes", &buf)) {
    return nullptr;
  }
  if (port < 0 || port > 65535) return ThrowType(env, "udpOpen: port must be 0..65535");
  std::string where = "UDP 0.0.0.0:" + std::to_string(port);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, ("socket " + where).c_str(), errno);
  auto fail = [&](const char* op) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, (std::string(op) + " " + where).c_str(), e);
  };
  int pmtu = IP_PMTUDISC_DONT;
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0) return fail("set IP_PMTUDISC_DONT on");
  if (buf > 0) {
    if (!SetBuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, buf)) return fail("set receive buffer on");
    if (!SetBuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, buf)) return fail("set send buffer on");
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) return fail("bind");
  socklen_t sl = sizeof sa;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &sl) < 0) return fail("getsockname");
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "fd", MakeInt32(env, fd));
  napi_set_named_property(env, out, "port", MakeInt32(env, ntohs(sa.sin_port)));
  return out;
}

// Sends descriptors idx[0..m) on one socket. Partial sendmmsg results are resumed; a hard error on one
// datagram (e.g. EHOSTUNREACH) skips that one; EAGAIN/ENOBUFS drops the rest of the group instead of
// spinning on a full queue. Returns the number sent.
int SendGroup(Ring* r, int fd, int m) {
  for (int j = 0; j < m; j++) {
    int32_t* d = r->desc + t_idx[j] * kDescWords;
    struct sockaddr_in& a = t_addr[j];
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(d[D_PORT]));
    a.sin_addr.s_addr = htonl(static_cast<uint32_t>(d[D_ADDR]));
    t_iov[j].iov_base = r->arena + d[D_OFF];
    t_iov[j].iov_len = static_cast<size_t>(d[D_LEN]);
    struct msghdr& h = t_msgs[j].msg_hdr;
    h.msg_name = &a;
    h.msg_namelen = sizeof a;
    h.msg_iov = &t_iov[j];
    h.msg_iovlen = 1;
    h.msg_control = nullptr;
    h.msg_controllen = 0;
    h.msg_flags = 0;
  }
  int sent = 0, k = 0;
  while (k < m) {
    int got = sendmmsg(fd, t_msgs + k, static_cast<unsigned>(m - k), MSG_DONTWAIT);
    if (got > 0) {
      for (int j = k; j < k + got; j++) r->desc[t_idx[j] * kDescWords + D_STATUS] = 0;
      k += got;
      sent += got;
      continue;
    }
    int e = got == 0 ? EAGAIN : errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
      for (int j = k; j < m; j++) r->desc[t_idx[j] * kDescWords + D_STATUS] = e;
      break;
    }
    r->desc[t_idx[k] * kDescWords + D_STATUS] = e;
    k++;
  }
  return sent;
}

// udpSend(ring, n) → datagrams sent. Each descriptor with LEN > 0 is one datagram (OFF/LEN, ADDR:PORT,
// FD); STATUS gets 0 or errno. Datagrams are grouped per socket (one sendmmsg per socket and ≤ 256),
// keeping the order within a socket, i.e. within a flow.
napi_value UdpSend(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, n;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &n) != napi_ok) {
    return ThrowType(env, "udpSend(ring, n): integers expected");
  }
  Ring* r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (n > static_cast<int32_t>(r->nSlots)) n = static_cast<int32_t>(r->nSlots);
  int first = -1;
  for (int32_t i = 0; i < n; i++) {
    int32_t* d = r->desc + i * kDescWords;
    int32_t off = d[D_OFF], len = d[D_LEN];
    t_done[i] = 1;
    if (len <= 0) continue;
    if (off < 0 || static_cast<size_t>(off) + static_cast<size_t>(len) > r->arenaLen || d[D_FD] < 0) {
      d[D_STATUS] = EINVAL;
      continue;
    }
    t_done[i] = 0;
    if (first < 0) first = i;
  }
  int sent = 0;
  while (first >= 0) {
    int fd = r->desc[first * kDescWords + D_FD];
    int m = 0, next = -1;
    for (int32_t i = first; i < n; i++) {
      if (t_done[i]) continue;
      if (r->desc[i * kDescWords + D_FD] == fd && m < kMaxBatch) {
        t_idx[m++] = i;
        t_done[i] = 1;
      } else if (next < 0) {
        next = i;
      }
    }
    sent += SendGroup(r, fd, m);
    first = next;
  }
  return MakeInt32(env, sent);
}

// udpRecv(ring, fd, max) → n ≥ 0 datagrams in slots 0..n-1, or -errno. Each datagram lands at
// slot + headroom - 22 so that its inner IP packet sits at slot + headroom. Descriptor: OFF/LEN of the
// datagram, ADDR:PORT of the sender, FLAGS F_TRUNC when it did not fit.
napi_value UdpRecv(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ringId, fd, max;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &ringId) != napi_ok ||
      napi_get_value_int32(env, argv[1], &fd) != napi_ok || napi_get_value_int32(env, argv[2], &max) != napi_ok) {
    return ThrowType(env, "udpRecv(ring, fd, max): integers expected");
  }
  Ring* r = GetRing(env, ringId);
  if (r == nullptr) return nullptr;
  if (max > static_cast<int32_t>(r->nSlots)) max = static_cast<int32_t>(r->nSlots);
  if (max > kMaxBatch) max = kMaxBatch;
  if (max <= 0) return MakeInt32(env, 0);
  const size_t start = r->headroom - kVxlanEthLen;
  const size_t cap = r->slotSize - start;
  for (int32_t i = 0; i < max; i++) {
    t_iov[i].iov_base = r->arena + static_cast<size_t>(i) * r->slotSize + start;
    t_iov[i].iov_len = cap;
    struct msghdr& h = t_msgs[i].msg_hdr;
    h.msg_name = &t_addr[i];
    h.msg_namelen = sizeof t_addr[i];
    h.msg_iov = &t_iov[i];
    h.msg_iovlen = 1;
    h.msg_control = nullptr;
    h.msg_controllen = 0;
    h.msg_flags = 0;
  }
  int got;
  do {
    got = recvmmsg(fd, t_msgs, static_cast<unsigned>(max), MSG_DONTWAIT, nullptr);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return MakeInt32(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
  for (int i = 0; i < got; i++) {
    int32_t* d = r->desc + i * kDescWords;
    d[D_OFF] = static_cast<int32_t>(static_cast<size_t>(i) * r->slotSize + start);
    d[D_LEN] = static_cast<int32_t>(t_msgs[i].msg_len);
    d[D_ADDR] = static_cast<int32_t>(ntohl(t_addr[i].sin_addr.s_addr));
    d[D_PORT] = ntohs(t_addr[i].sin_port);
    d[D_FLAGS] = (t_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? F_TRUNC : 0;
    d[D_STATUS] = 0;
    d[D_PEER] = -1;
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
