// rtnetlink (NETLINK_ROUTE): links, IPv4 and IPv6 addresses and main-table IPv4 and IPv6 routes.
// Control path only. Every call opens its own socket (a few µs): no state is shared between calls,
// nothing needs locking, and nothing goes stale when links or namespaces change underneath us.
// The route batch is the one call that matters for speed. It packs hundreds of requests into each
// sendmsg() and collects their ACKs with recvmmsg(). flanneld does one round trip per route, which is
// why it needs seconds for thousands of leases.
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"

namespace tsf {

namespace {

constexpr size_t kRecvBufSize = 64 * 1024;  // above the kernel's largest dump skb (32 KiB)
constexpr int kRecvTimeoutSec = 5;          // rtnetlink answers synchronously; this only guards a hang
constexpr uint32_t kBatchRcvBuf = 2 * 1024 * 1024;
// One ACK is a small skb, but it is charged to the receive buffer at its truesize (≈0.8 KiB on
// x86-64). A chunk's ACKs must fit, or the kernel drops them (ENOBUFS) and results are lost.
constexpr size_t kAckCharge = 1024;
constexpr size_t kMaxChunk = 1024;  // ≈60 KiB of requests per sendmsg, far below the default sndbuf
constexpr int kAckSlots = 64;
constexpr size_t kAckSlotSize = 256;  // an error ACK with NETLINK_CAP_ACK is 36 bytes

enum RouteOp : uint8_t { kReplace = 0, kDelete = 1 };
enum RouteFlag : uint8_t { kOnlink = 1 };

std::string FormatIp4(uint32_t ip) {
  char text[INET_ADDRSTRLEN];
  in_addr a{htonl(ip)};
  inet_ntop(AF_INET, &a, text, sizeof text);
  return text;
}

std::string FormatNet(uint32_t ip, uint32_t len) { return FormatIp4(ip) + "/" + std::to_string(len); }

// Appends netlink messages (header, fixed struct, attributes) into one contiguous buffer so that
// a whole batch can go out in a single sendmsg().
class MsgBuilder {
 public:
  void Begin(uint16_t type, uint16_t flags, uint32_t seq) {
    start_ = buf_.size();
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    h.nlmsg_seq = seq;
    Append(&h, sizeof h);
  }
  template <class T>
  void Fixed(const T &body) {
    Append(&body, sizeof body);
    Pad();
  }
  void Attr(uint16_t type, const void *data, size_t len) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    Append(&a, sizeof a);
    Append(data, len);
    Pad();
  }
  void AttrU32(uint16_t type, uint32_t v) { Attr(type, &v, sizeof v); }
  void AttrIp4(uint16_t type, uint32_t hostOrder) { AttrU32(type, htonl(hostOrder)); }
  void End() {
    auto *h = reinterpret_cast<nlmsghdr *>(buf_.data() + start_);
    h->nlmsg_len = static_cast<uint32_t>(buf_.size() - start_);
  }
  void Clear() { buf_.clear(); }
  const char *data() const { return buf_.data(); }
  size_t size() const { return buf_.size(); }
  void Reserve(size_t n) { buf_.reserve(n); }

 private:
  void Append(const void *p, size_t n) {
    const char *c = static_cast<const char *>(p);
    buf_.insert(buf_.end(), c, c + n);
  }
  void Pad() { buf_.resize(NLMSG_ALIGN(buf_.size()), 0); }
  std::vector<char> buf_;
  size_t start_ = 0;
};

class NlSocket {
 public:
  NlSocket() = default;
  NlSocket(const NlSocket &) = delete;
  NlSocket &operator=(const NlSocket &) = delete;
  ~NlSocket() {
    if (fd_ >= 0) close(fd_);
  }

  // Returns 0 or an errno.
  int Open() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return errno;
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (bind(fd_, reinterpret_cast<sockaddr *>(&sa), sizeof sa) < 0) return errno;
    int one = 1;
    // Error ACKs then carry only the failed request's header, not the whole request.
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    // Lets dumps be filtered by the kernel (table, oif, ifindex) instead of sending us every object.
    setsockopt(fd_, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof one);
    timeval tv{kRecvTimeoutSec, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 0;
  }

  int fd() const { return fd_; }

  int Send(const MsgBuilder &m) {
    for (;;) {
      ssize_t n = send(fd_, m.data(), m.size(), 0);
      if (n >= 0) return 0;
      if (errno != EINTR) return errno;
    }
  }

  // Sends one request and reads its replies until the ACK (or NLMSG_DONE of a dump), handing
  // every data message to onMsg. Returns 0 or the errno the kernel reported.
  // stopAfterData: the request gets no ACK (a plain RTM_GETROUTE), so the first data message ends it.
  template <class F>
  int Transact(const MsgBuilder &m, uint32_t seq, F &&onMsg, bool stopAfterData = false) {
    if (int err = Send(m)) return err;
    std::unique_ptr<char[]> buf(new char[kRecvBufSize]);
    for (;;) {
      iovec iov{buf.get(), kRecvBufSize};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      ssize_t n = recvmsg(fd_, &mh, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? ETIMEDOUT : errno;
      }
      if (mh.msg_flags & MSG_TRUNC) return EMSGSIZE;
      int len = static_cast<int>(n);
      for (auto *h = reinterpret_cast<nlmsghdr *>(buf.get()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq) continue;
        if (h->nlmsg_type == NLMSG_ERROR) {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(int))) return EPROTO;
          return -static_cast<const nlmsgerr *>(NLMSG_DATA(h))->error;  // 0 = ACK
        }
        if (h->nlmsg_type == NLMSG_DONE) {
          if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) return -*static_cast<const int *>(NLMSG_DATA(h));
          return 0;
        }
        onMsg(h);
        if (stopAfterData) return 0;
      }
    }
  }

 private:
  int fd_ = -1;
};

template <class F>
void ForEachAttr(rtattr *rta, int len, F &&f) {
  for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) f(rta);
}

uint32_t AttrU32(const rtattr *rta) {
  uint32_t v = 0;
  if (RTA_PAYLOAD(rta) >= sizeof v) memcpy(&v, RTA_DATA(rta), sizeof v);
  return v;
}

uint32_t AttrIp4(const rtattr *rta) { return ntohl(AttrU32(rta)); }

// One IPv4 dump request (RTM_GET* with NLM_F_DUMP): the fixed header `fixed`, the attributes addAttrs
// appends, every reply of type `reply` handed to onMsg with its fixed header. Returns 0 or an errno.
template <class Fixed, class A, class F>
int Dump(uint16_t type, uint16_t reply, const Fixed &fixed, A &&addAttrs, F &&onMsg) {
  NlSocket s;
  if (int err = s.Open()) return err;
  MsgBuilder m;
  m.Begin(type, NLM_F_REQUEST | NLM_F_DUMP, 1);
  m.Fixed(fixed);
  addAttrs(m);
  m.End();
  return s.Transact(m, 1, [&](nlmsghdr *h) {
    if (h->nlmsg_type != reply || h->nlmsg_len < NLMSG_LENGTH(sizeof(Fixed))) return;
    onMsg(h, static_cast<Fixed *>(NLMSG_DATA(h)));
  });
}

// ---- argument helpers (raw napi) ----

bool GetArgs(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) {
    napi_throw_type_error(env, nullptr, "rtnetlink: missing arguments");
    return false;
  }
  return true;
}

bool GetU32(napi_env env, napi_value v, uint32_t *out, const char *what) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    std::string msg = std::string("rtnetlink: ") + what + " must be a number";
    napi_throw_type_error(env, nullptr, msg.c_str());
    return false;
  }
  return true;
}

template <class T>
bool GetTyped(napi_env env, napi_value v, napi_typedarray_type want, T **data, size_t *length,
              const char *what) {
  if (TypedArrayOf(env, v, want, data, length)) return true;
  std::string msg = std::string("rtnetlink: ") + what + " has the wrong typed-array type";
  napi_throw_type_error(env, nullptr, msg.c_str());
  return false;
}

void SetU32(napi_env env, napi_value obj, const char *key, uint32_t v) {
  napi_value n;
  napi_create_uint32(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

void SetBool(napi_env env, napi_value obj, const char *key, bool v) {
  napi_value b;
  napi_get_boolean(env, v, &b);
  napi_set_named_property(env, obj, key, b);
}

std::string LinkName(uint32_t ifindex) { return "link " + std::to_string(ifindex); }

// ---- links ----

// nlGetLink(name) -> { index, name, kind, mtu, flags, up, mac: Buffer | null }; kind is IFLA_INFO_KIND
// ("tun", "vxlan", ...; "" for devices without one, e.g. a physical NIC)
napi_value GetLink(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!GetArgs(env, info, 1, argv)) return nullptr;
  char name[IFNAMSIZ + 1];
  size_t nameLen = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nameLen) != napi_ok) {
    napi_throw_type_error(env, nullptr, "rtnetlink: link name must be a string");
    return nullptr;
  }
  std::string what = std::string("get link ") + name;
  if (nameLen == 0 || nameLen >= IFNAMSIZ) return ThrowErrno(env, what.c_str(), EINVAL);

  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  MsgBuilder m;
  m.Begin(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, 1);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.Fixed(ifi);
  m.Attr(IFLA_IFNAME, name, nameLen + 1);
  m.AttrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  m.End();

  bool found = false;
  uint32_t index = 0, flags = 0, mtu = 0;
  std::string gotName, kind;
  std::vector<uint8_t> mac;
  int err = s.Transact(m, 1, [&](nlmsghdr *h) {
    if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) return;
    auto *r = static_cast<ifinfomsg *>(NLMSG_DATA(h));
    found = true;
    index = static_cast<uint32_t>(r->ifi_index);
    flags = r->ifi_flags;
    ForEachAttr(IFLA_RTA(r), static_cast<int>(IFLA_PAYLOAD(h)), [&](rtattr *a) {
      switch (a->rta_type) {
        case IFLA_MTU:
          mtu = AttrU32(a);
          break;
        case IFLA_IFNAME:
          gotName.assign(static_cast<const char *>(RTA_DATA(a)),
                         strnlen(static_cast<const char *>(RTA_DATA(a)), RTA_PAYLOAD(a)));
          break;
        case IFLA_ADDRESS: {
          auto *p = static_cast<const uint8_t *>(RTA_DATA(a));
          mac.assign(p, p + RTA_PAYLOAD(a));
          break;
        }
        case IFLA_LINKINFO:
          ForEachAttr(static_cast<rtattr *>(RTA_DATA(a)), static_cast<int>(RTA_PAYLOAD(a)), [&](rtattr *li) {
            if (li->rta_type != IFLA_INFO_KIND) return;
            kind.assign(static_cast<const char *>(RTA_DATA(li)),
                        strnlen(static_cast<const char *>(RTA_DATA(li)), RTA_PAYLOAD(li)));
          });
          break;
      }
    });
  });
  if (err == 0 && !found) err = ENODEV;
  if (err) return ThrowErrno(env, what.c_str(), err);

  napi_value obj, nameValue, macValue;
  napi_create_object(env, &obj);
  SetU32(env, obj, "index", index);
  napi_create_string_utf8(env, gotName.c_str(), gotName.size(), &nameValue);
  napi_set_named_property(env, obj, "name", nameValue);
  napi_value kindValue;
  napi_create_string_utf8(env, kind.c_str(), kind.size(), &kindValue);
  napi_set_named_property(env, obj, "kind", kindValue);
  SetU32(env, obj, "mtu", mtu);
  SetU32(env, obj, "flags", flags);
  SetBool(env, obj, "up", (flags & IFF_UP) != 0);
  // A TUN device (ARPHRD_NONE) has no hardware address: report null rather than an empty buffer.
  if (mac.empty()) {
    napi_get_null(env, &macValue);
  } else {
    napi_create_buffer_copy(env, mac.size(), mac.data(), nullptr, &macValue);
  }
  napi_set_named_property(env, obj, "mac", macValue);
  return obj;
}

int LinkChange(uint32_t ifindex, uint32_t flags, uint32_t change, uint32_t mtu) {
  NlSocket s;
  if (int err = s.Open()) return err;
  MsgBuilder m;
  m.Begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = static_cast<int>(ifindex);
  ifi.ifi_flags = flags;
  ifi.ifi_change = change;
  m.Fixed(ifi);
  if (mtu != 0) m.AttrU32(IFLA_MTU, mtu);
  m.End();
  return s.Transact(m, 1, [](nlmsghdr *) {});
}

// nlSetLinkMtu(ifindex, mtu)
napi_value SetLinkMtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t ifindex, mtu;
  if (!GetArgs(env, info, 2, argv) || !GetU32(env, argv[0], &ifindex, "ifindex") ||
      !GetU32(env, argv[1], &mtu, "mtu")) {
    return nullptr;
  }
  if (mtu == 0) return ThrowErrno(env, ("set mtu 0 on " + LinkName(ifindex)).c_str(), EINVAL);
  if (int err = LinkChange(ifindex, 0, 0, mtu)) {
    return ThrowErrno(env, ("set mtu " + std::to_string(mtu) + " on " + LinkName(ifindex)).c_str(), err);
  }
  return nullptr;
}

// nlSetLinkUp(ifindex, up)
napi_value SetLinkUp(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t ifindex;
  bool up = false;
  if (!GetArgs(env, info, 2, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  if (napi_get_value_bool(env, argv[1], &up) != napi_ok) {
    napi_throw_type_error(env, nullptr, "rtnetlink: up must be a boolean");
    return nullptr;
  }
  if (int err = LinkChange(ifindex, up ? IFF_UP : 0, IFF_UP, 0)) {
    return ThrowErrno(env, ("set " + LinkName(ifindex) + (up ? " up" : " down")).c_str(), err);
  }
  return nullptr;
}

// nlDelLink(ifindex): RTM_DELLINK.
napi_value DelLink(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t ifindex;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  MsgBuilder m;
  m.Begin(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 1);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = static_cast<int>(ifindex);
  m.Fixed(ifi);
  m.End();
  if (int err = s.Transact(m, 1, [](nlmsghdr *) {})) {
    return ThrowErrno(env, ("delete " + LinkName(ifindex)).c_str(), err);
  }
  return nullptr;
}

// nlRouteGet(dst) -> { ifindex, src } (host-order u32; src 0 when the kernel names none): the answer
// of `ip route get <dst>` (RTM_GETROUTE), which is what flannel's -iface-can-reach uses.
napi_value RouteGet(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t dst;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &dst, "dst")) return nullptr;
  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  MsgBuilder m;
  m.Begin(RTM_GETROUTE, NLM_F_REQUEST, 1);
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = 32;
  m.Fixed(rt);
  m.AttrIp4(RTA_DST, dst);
  m.End();
  bool found = false;
  uint32_t oif = 0, src = 0;
  // A get without NLM_F_ACK is answered by the route or by an error message; Transact returns on either.
  int err = s.Transact(
      m, 1,
      [&](nlmsghdr *h) {
        if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return;
        found = true;
        auto *r = static_cast<rtmsg *>(NLMSG_DATA(h));
        ForEachAttr(RTM_RTA(r), static_cast<int>(RTM_PAYLOAD(h)), [&](rtattr *a) {
          if (a->rta_type == RTA_OIF) oif = AttrU32(a);
          if (a->rta_type == RTA_PREFSRC) src = AttrIp4(a);
        });
      },
      /*stopAfterData=*/true);
  if (err == 0 && !found) err = ENETUNREACH;
  if (err) return ThrowErrno(env, ("route get " + FormatIp4(dst)).c_str(), err);
  napi_value obj;
  napi_create_object(env, &obj);
  SetU32(env, obj, "ifindex", oif);
  SetU32(env, obj, "src", src);
  return obj;
}

// ---- IPv4 addresses ----

// nlListAddrs(ifindex) -> [{ ip, prefixLen, peer }] (host-order u32; peer = IFA_ADDRESS, equal to ip
// unless the address was configured with an explicit point-to-point peer)
napi_value ListAddrs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t ifindex;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_index = ifindex;
  struct Addr {
    uint32_t ip, peer, prefixLen;
  };
  std::vector<Addr> addrs;
  int err = Dump(
      RTM_GETADDR, RTM_NEWADDR, ifa, [](MsgBuilder &) {},
      [&](nlmsghdr *h, ifaddrmsg *r) {
        if (r->ifa_family != AF_INET || r->ifa_index != ifindex) return;
        bool hasLocal = false, hasAddress = false;
        uint32_t local = 0, address = 0;
        ForEachAttr(IFA_RTA(r), static_cast<int>(IFA_PAYLOAD(h)), [&](rtattr *a) {
          if (a->rta_type == IFA_LOCAL) {
            local = AttrIp4(a);
            hasLocal = true;
          } else if (a->rta_type == IFA_ADDRESS) {
            address = AttrIp4(a);
            hasAddress = true;
          }
        });
        if (!hasLocal && !hasAddress) return;
        if (!hasLocal) local = address;
        if (!hasAddress) address = local;
        addrs.push_back({local, address, r->ifa_prefixlen});
      });
  if (err) return ThrowErrno(env, ("list addresses of " + LinkName(ifindex)).c_str(), err);

  napi_value arr;
  napi_create_array_with_length(env, addrs.size(), &arr);
  for (size_t i = 0; i < addrs.size(); i++) {
    napi_value obj;
    napi_create_object(env, &obj);
    SetU32(env, obj, "ip", addrs[i].ip);
    SetU32(env, obj, "prefixLen", addrs[i].prefixLen);
    SetU32(env, obj, "peer", addrs[i].peer);
    napi_set_element(env, arr, static_cast<uint32_t>(i), obj);
  }
  return arr;
}

// nlChangeAddr(op, ifindex, ip, prefixLen, peer): op 0 = add or replace, 1 = delete.
// Deleting an address that is not there succeeds, so callers can converge without first listing.
napi_value ChangeAddr(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t op, ifindex, ip, prefixLen, peer;
  if (!GetArgs(env, info, 5, argv) || !GetU32(env, argv[0], &op, "op") ||
      !GetU32(env, argv[1], &ifindex, "ifindex") || !GetU32(env, argv[2], &ip, "ip") ||
      !GetU32(env, argv[3], &prefixLen, "prefixLen") || !GetU32(env, argv[4], &peer, "peer")) {
    return nullptr;
  }
  std::string what = (op == kDelete ? "delete address " : "add address ") + FormatNet(ip, prefixLen) +
                     (op == kDelete ? " from " : " to ") + LinkName(ifindex);
  if (prefixLen > 32 || op > kDelete) return ThrowErrno(env, what.c_str(), EINVAL);

  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  MsgBuilder m;
  // REPLACE makes re-adding an existing address a no-op instead of EEXIST.
  m.Begin(op == kDelete ? RTM_DELADDR : RTM_NEWADDR,
          NLM_F_REQUEST | NLM_F_ACK | (op == kDelete ? 0 : NLM_F_CREATE | NLM_F_REPLACE), 1);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefixLen);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = ifindex;
  m.Fixed(ifa);
  m.AttrIp4(IFA_LOCAL, ip);
  // IFA_ADDRESS makes the kernel also match the prefix length on delete, so removing a stale
  // 10.5.72.0/24 cannot take our 10.5.72.0/32 with it.
  m.AttrIp4(IFA_ADDRESS, peer);
  m.End();
  int err = s.Transact(m, 1, [](nlmsghdr *) {});
  if (op == kDelete && err == EADDRNOTAVAIL) err = 0;
  if (err) return ThrowErrno(env, what.c_str(), err);
  return nullptr;
}

// ---- IPv4 routes (main table) ----

// nlListRoutes(ifindex) -> [{ dst, prefixLen, gateway, proto, scope, metric, onlink }]
// Only unicast routes of the main table whose (single) nexthop is the device.
napi_value ListRoutes(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t ifindex;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_table = RT_TABLE_MAIN;
  struct Route {
    uint32_t dst, prefixLen, gateway, proto, scope, metric;
    bool onlink;
  };
  std::vector<Route> routes;
  auto addOif = [ifindex](MsgBuilder &m) { m.AttrU32(RTA_OIF, ifindex); };
  int err = Dump(RTM_GETROUTE, RTM_NEWROUTE, rt, addOif, [&](nlmsghdr *h, rtmsg *r) {
    if (r->rtm_family != AF_INET || r->rtm_type != RTN_UNICAST) return;
    uint32_t table = r->rtm_table, oif = 0, dst = 0, gateway = 0, metric = 0;
    ForEachAttr(RTM_RTA(r), static_cast<int>(RTM_PAYLOAD(h)), [&](rtattr *a) {
      switch (a->rta_type) {
        case RTA_TABLE:
          table = AttrU32(a);
          break;
        case RTA_OIF:
          oif = AttrU32(a);
          break;
        case RTA_DST:
          dst = AttrIp4(a);
          break;
        case RTA_GATEWAY:
          gateway = AttrIp4(a);
          break;
        case RTA_PRIORITY:
          metric = AttrU32(a);
          break;
      }
    });
    if (table != RT_TABLE_MAIN || oif != ifindex) return;
    routes.push_back({dst, r->rtm_dst_len, gateway, r->rtm_protocol, r->rtm_scope, metric,
                      (r->rtm_flags & RTNH_F_ONLINK) != 0});
  });
  if (err) return ThrowErrno(env, ("list routes of " + LinkName(ifindex)).c_str(), err);

  napi_value arr;
  napi_create_array_with_length(env, routes.size(), &arr);
  for (size_t i = 0; i < routes.size(); i++) {
    const Route &r = routes[i];
    napi_value obj;
    napi_create_object(env, &obj);
    SetU32(env, obj, "dst", r.dst);
    SetU32(env, obj, "prefixLen", r.prefixLen);
    SetU32(env, obj, "gateway", r.gateway);
    SetU32(env, obj, "proto", r.proto);
    SetU32(env, obj, "scope", r.scope);
    SetU32(env, obj, "metric", r.metric);
    SetBool(env, obj, "onlink", r.onlink);
    napi_set_element(env, arr, static_cast<uint32_t>(i), obj);
  }
  return arr;
}

void AppendRouteMsg(MsgBuilder &m, uint32_t seq, uint8_t op, uint32_t dst, uint8_t len, uint32_t gateway,
                    uint32_t metric, uint8_t flags, uint32_t ifindex, uint8_t proto) {
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = len;
  rt.rtm_table = RT_TABLE_MAIN;
  if (op == kReplace) {
    m.Begin(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq);
    rt.rtm_protocol = proto;
    rt.rtm_scope = gateway != 0 ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    rt.rtm_type = RTN_UNICAST;
    if (flags & kOnlink) rt.rtm_flags = RTNH_F_ONLINK;
  } else {
    // Like `ip route del`: protocol, scope and type left as wildcards, so a stray route someone
    // added by hand with another protocol is removed as well.
    m.Begin(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq);
    rt.rtm_scope = RT_SCOPE_NOWHERE;
  }
  m.Fixed(rt);
  m.AttrIp4(RTA_DST, dst);
  if (ifindex != 0) m.AttrU32(RTA_OIF, ifindex);
  if (gateway != 0) m.AttrIp4(RTA_GATEWAY, gateway);
  if (metric != 0) m.AttrU32(RTA_PRIORITY, metric);
  m.End();
}

// Collects the ACKs of requests [first, end) (sequence number = index + 1) into errnos.
void CollectAcks(int fd, const uint8_t *op, int32_t *errnos, std::vector<bool> &acked, size_t first,
                 size_t end) {
  struct Slots {
    char buf[kAckSlots][kAckSlotSize];
    iovec iov[kAckSlots];
    mmsghdr msgs[kAckSlots];
  };
  static thread_local std::unique_ptr<Slots> slots;
  if (!slots) slots.reset(new Slots());
  size_t outstanding = end - first;
  int failure = 0;  // set when ACKs can no longer be trusted to arrive
  while (outstanding > 0) {
    unsigned vlen = static_cast<unsigned>(outstanding < kAckSlots ? outstanding : kAckSlots);
    for (unsigned i = 0; i < vlen; i++) {
      slots->iov[i] = {slots->buf[i], kAckSlotSize};
      slots->msgs[i] = {};
      slots->msgs[i].msg_hdr.msg_iov = &slots->iov[i];
      slots->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // After an overrun, drain what is queued without blocking: the dropped ACKs will never come.
    int n = recvmmsg(fd, slots->msgs, vlen, failure ? MSG_DONTWAIT : MSG_WAITFORONE, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS && !failure) {
        failure = ENOBUFS;
        continue;
      }
      if (!failure) failure = errno == EAGAIN ? ETIMEDOUT : errno;
      break;
    }
    for (int i = 0; i < n; i++) {
      const char *p = slots->buf[i];
      size_t len = slots->msgs[i].msg_len;
      if (len < NLMSG_LENGTH(sizeof(int))) continue;
      const auto *h = reinterpret_cast<const nlmsghdr *>(p);
      if (h->nlmsg_type != NLMSG_ERROR || h->nlmsg_seq < first + 1 || h->nlmsg_seq > end) continue;
      size_t idx = h->nlmsg_seq - 1;
      if (acked[idx]) continue;
      int err = -static_cast<const nlmsgerr *>(NLMSG_DATA(h))->error;
      // Deleting a route that is already gone is the outcome the caller wanted.
      if (err == ESRCH && op[idx] == kDelete) err = 0;
      errnos[idx] = err;
      acked[idx] = true;
      outstanding--;
    }
  }
  if (outstanding > 0) {
    for (size_t i = first; i < end; i++) {
      if (!acked[i]) errnos[i] = failure;
    }
  }
}

// nlRouteBatch(count, op: Uint8Array, dst: Uint32Array, prefixLen: Uint8Array, gateway: Uint32Array,
//              metric: Uint32Array, flags: Uint8Array, ifindex, proto, errnos: Int32Array) -> failures
// op 0 = replace (create or overwrite the route with the same dst/prefix/metric), 1 = delete.
// gateway 0 = none (scope link), flags bit 0 = onlink, ifindex 0 = no RTA_OIF. errnos[i] gets 0 or
// the errno of request i. Only a failure to talk to the kernel at all throws.
napi_value RouteBatch(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!GetArgs(env, info, 10, argv)) return nullptr;
  uint32_t count, ifindex, proto;
  uint8_t *op, *len, *flags;
  uint32_t *dst, *gateway, *metric;
  int32_t *errnos;
  size_t nOp, nDst, nLen, nGw, nMetric, nFlags, nErr;
  if (!GetU32(env, argv[0], &count, "count") || !GetTyped(env, argv[1], napi_uint8_array, &op, &nOp, "op") ||
      !GetTyped(env, argv[2], napi_uint32_array, &dst, &nDst, "dst") ||
      !GetTyped(env, argv[3], napi_uint8_array, &len, &nLen, "prefixLen") ||
      !GetTyped(env, argv[4], napi_uint32_array, &gateway, &nGw, "gateway") ||
      !GetTyped(env, argv[5], napi_uint32_array, &metric, &nMetric, "metric") ||
      !GetTyped(env, argv[6], napi_uint8_array, &flags, &nFlags, "flags") ||
      !GetU32(env, argv[7], &ifindex, "ifindex") || !GetU32(env, argv[8], &proto, "proto") ||
      !GetTyped(env, argv[9], napi_int32_array, &errnos, &nErr, "errnos")) {
    return nullptr;
  }
  if (nOp < count || nDst < count || nLen < count || nGw < count || nMetric < count || nFlags < count ||
      nErr < count) {
    napi_throw_range_error(env, nullptr, "rtnetlink: route batch arrays are shorter than count");
    return nullptr;
  }
  if (proto > 255) {
    napi_throw_range_error(env, nullptr, "rtnetlink: route protocol must be 0..255");
    return nullptr;
  }
  for (uint32_t i = 0; i < count; i++) {
    if (op[i] > kDelete || len[i] > 32) {
      napi_throw_range_error(env, nullptr, "rtnetlink: route batch entry has a bad op or prefix length");
      return nullptr;
    }
  }
  napi_value result;
  if (count == 0) {
    napi_create_uint32(env, 0, &result);
    return result;
  }

  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  // FORCE needs CAP_NET_ADMIN, which the daemon has anyway; without it we live with rmem_max.
  int want = static_cast<int>(kBatchRcvBuf);
  if (setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) < 0) {
    setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  }
  int rcvbuf = 0;
  socklen_t optlen = sizeof rcvbuf;
  getsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, &optlen);
  // Use only half the buffer for one chunk's ACKs, so misjudging the per-ACK charge cannot overrun it.
  size_t chunk = static_cast<size_t>(rcvbuf > 0 ? rcvbuf : 0) / 2 / kAckCharge;
  if (chunk < 16) chunk = 16;
  if (chunk > kMaxChunk) chunk = kMaxChunk;

  std::vector<bool> acked(count, false);
  MsgBuilder m;
  m.Reserve(chunk * 64);
  uint32_t failures = 0;
  for (size_t first = 0; first < count; first += chunk) {
    size_t end = first + chunk < count ? first + chunk : count;
    m.Clear();
    for (size_t i = first; i < end; i++) {
      AppendRouteMsg(m, static_cast<uint32_t>(i + 1), op[i], dst[i], len[i], gateway[i], metric[i], flags[i],
                     ifindex, static_cast<uint8_t>(proto));
    }
    if (int err = s.Send(m)) {
      for (size_t i = first; i < end; i++) errnos[i] = err;
      continue;
    }
    CollectAcks(s.fd(), op, errnos, acked, first, end);
  }
  for (uint32_t i = 0; i < count; i++) {
    if (errnos[i] != 0) failures++;
  }
  napi_create_uint32(env, failures, &result);
  return result;
}

// ---- IPv6 addresses and routes (the overlay's IPv6 side, as flannel's flannel-v6.<VNI>) ----
// Addresses cross the boundary as 16-byte arrays (network order) in and 32-digit hex strings out:
// this is the control path, and the TypeScript side keeps IPv6 addresses as bigints.

std::string FormatIp6(const uint8_t *ip) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, ip, text, sizeof text);
  return text;
}

std::string HexIp6(const uint8_t *ip) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; i++) {
    out[2 * i] = kHex[ip[i] >> 4];
    out[2 * i + 1] = kHex[ip[i] & 15];
  }
  return out;
}

void SetString(napi_env env, napi_value obj, const char *key, const std::string &v) {
  napi_value s;
  napi_create_string_utf8(env, v.data(), v.size(), &s);
  napi_set_named_property(env, obj, key, s);
}

// One 16-byte address argument.
bool GetIp6(napi_env env, napi_value v, uint8_t **out, const char *what) {
  size_t n = 0;
  if (!GetTyped(env, v, napi_uint8_array, out, &n, what)) return false;
  if (n != 16) {
    napi_throw_range_error(env, nullptr, (std::string("rtnetlink: ") + what + " must be 16 bytes").c_str());
    return false;
  }
  return true;
}

// nlListAddrs6(ifindex) -> [{ ip: hex, prefixLen, flags }] (IFA_F_* flags, IFA_FLAGS when present)
napi_value ListAddrs6(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t ifindex;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET6;
  ifa.ifa_index = ifindex;
  struct Addr {
    uint8_t ip[16];
    uint32_t prefixLen, flags;
  };
  std::vector<Addr> addrs;
  int err = Dump(
      RTM_GETADDR, RTM_NEWADDR, ifa, [](MsgBuilder &) {},
      [&](nlmsghdr *h, ifaddrmsg *r) {
        if (r->ifa_family != AF_INET6 || r->ifa_index != ifindex) return;
        Addr a{};
        bool has = false;
        a.prefixLen = r->ifa_prefixlen;
        a.flags = r->ifa_flags;
        ForEachAttr(IFA_RTA(r), static_cast<int>(IFA_PAYLOAD(h)), [&](rtattr *at) {
          if ((at->rta_type == IFA_ADDRESS || at->rta_type == IFA_LOCAL) && RTA_PAYLOAD(at) == 16) {
            memcpy(a.ip, RTA_DATA(at), 16);
            has = true;
          } else if (at->rta_type == IFA_FLAGS && RTA_PAYLOAD(at) >= 4) {
            a.flags = AttrU32(at);
          }
        });
        if (has) addrs.push_back(a);
      });
  if (err) return ThrowErrno(env, ("list IPv6 addresses of " + LinkName(ifindex)).c_str(), err);
  napi_value arr;
  napi_create_array_with_length(env, addrs.size(), &arr);
  for (size_t i = 0; i < addrs.size(); i++) {
    napi_value obj;
    napi_create_object(env, &obj);
    SetString(env, obj, "ip", HexIp6(addrs[i].ip));
    SetU32(env, obj, "prefixLen", addrs[i].prefixLen);
    SetU32(env, obj, "flags", addrs[i].flags);
    napi_set_element(env, arr, static_cast<uint32_t>(i), obj);
  }
  return arr;
}

// nlChangeAddr6(op, ifindex, ip: Uint8Array(16), prefixLen): op 0 = add or replace, 1 = delete (a
// missing address is not an error). Added with IFA_F_NODAD: the address is this host's own, unique
// by lease, and must be usable at once.
napi_value ChangeAddr6(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t op, ifindex, prefixLen;
  uint8_t *ip;
  if (!GetArgs(env, info, 4, argv) || !GetU32(env, argv[0], &op, "op") ||
      !GetU32(env, argv[1], &ifindex, "ifindex") || !GetIp6(env, argv[2], &ip, "ip") ||
      !GetU32(env, argv[3], &prefixLen, "prefixLen")) {
    return nullptr;
  }
  std::string what = (op == kDelete ? "delete address " : "add address ") + FormatIp6(ip) + "/" +
                     std::to_string(prefixLen) + (op == kDelete ? " from " : " to ") + LinkName(ifindex);
  if (prefixLen > 128 || op > kDelete) return ThrowErrno(env, what.c_str(), EINVAL);
  NlSocket s;
  if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
  MsgBuilder m;
  m.Begin(op == kDelete ? RTM_DELADDR : RTM_NEWADDR,
          NLM_F_REQUEST | NLM_F_ACK | (op == kDelete ? 0 : NLM_F_CREATE | NLM_F_REPLACE), 1);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET6;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefixLen);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = ifindex;
  if (op != kDelete) ifa.ifa_flags = IFA_F_NODAD;
  m.Fixed(ifa);
  m.Attr(IFA_LOCAL, ip, 16);
  m.Attr(IFA_ADDRESS, ip, 16);
  m.End();
  int err = s.Transact(m, 1, [](nlmsghdr *) {});
  if (op == kDelete && err == EADDRNOTAVAIL) err = 0;
  if (err) return ThrowErrno(env, what.c_str(), err);
  return nullptr;
}

// nlListRoutes6(ifindex) -> [{ dst: hex, prefixLen, gateway: hex ("" = none), proto, scope, metric,
// onlink }]: unicast routes of the main table whose nexthop is the device.
napi_value ListRoutes6(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t ifindex;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &ifindex, "ifindex")) return nullptr;
  rtmsg rt{};
  rt.rtm_family = AF_INET6;
  rt.rtm_table = RT_TABLE_MAIN;
  struct Route {
    uint8_t dst[16], gateway[16];
    bool hasGateway;
    uint32_t prefixLen, proto, scope, metric;
    bool onlink;
  };
  std::vector<Route> routes;
  auto addOif = [ifindex](MsgBuilder &m) { m.AttrU32(RTA_OIF, ifindex); };
  int err = Dump(RTM_GETROUTE, RTM_NEWROUTE, rt, addOif, [&](nlmsghdr *h, rtmsg *r) {
    if (r->rtm_family != AF_INET6 || r->rtm_type != RTN_UNICAST) return;
    Route out{};
    uint32_t table = r->rtm_table, oif = 0;
    ForEachAttr(RTM_RTA(r), static_cast<int>(RTM_PAYLOAD(h)), [&](rtattr *a) {
      switch (a->rta_type) {
        case RTA_TABLE:
          table = AttrU32(a);
          break;
        case RTA_OIF:
          oif = AttrU32(a);
          break;
        case RTA_DST:
          if (RTA_PAYLOAD(a) == 16) memcpy(out.dst, RTA_DATA(a), 16);
          break;
        case RTA_GATEWAY:
          if (RTA_PAYLOAD(a) == 16) {
            memcpy(out.gateway, RTA_DATA(a), 16);
            out.hasGateway = true;
          }
          break;
        case RTA_PRIORITY:
          out.metric = AttrU32(a);
          break;
      }
    });
    if (table != RT_TABLE_MAIN || oif != ifindex) return;
    out.prefixLen = r->rtm_dst_len;
    out.proto = r->rtm_protocol;
    out.scope = r->rtm_scope;
    out.onlink = (r->rtm_flags & RTNH_F_ONLINK) != 0;
    routes.push_back(out);
  });
  if (err) return ThrowErrno(env, ("list IPv6 routes of " + LinkName(ifindex)).c_str(), err);
  napi_value arr;
  napi_create_array_with_length(env, routes.size(), &arr);
  for (size_t i = 0; i < routes.size(); i++) {
    const Route &r = routes[i];
    napi_value obj;
    napi_create_object(env, &obj);
    SetString(env, obj, "dst", HexIp6(r.dst));
    SetU32(env, obj, "prefixLen", r.prefixLen);
    SetString(env, obj, "gateway", r.hasGateway ? HexIp6(r.gateway) : std::string());
    SetU32(env, obj, "proto", r.proto);
    SetU32(env, obj, "scope", r.scope);
    SetU32(env, obj, "metric", r.metric);
    SetBool(env, obj, "onlink", r.onlink);
    napi_set_element(env, arr, static_cast<uint32_t>(i), obj);
  }
  return arr;
}

void AppendRoute6Msg(MsgBuilder &m, uint32_t seq, uint8_t op, const uint8_t *dst, uint8_t len,
                     const uint8_t *gateway, uint32_t metric, uint8_t flags, uint32_t ifindex,
                     uint8_t proto) {
  static const uint8_t kZero[16] = {};
  bool hasGateway = memcmp(gateway, kZero, 16) != 0;
  rtmsg rt{};
  rt.rtm_family = AF_INET6;
  rt.rtm_dst_len = len;
  rt.rtm_table = RT_TABLE_MAIN;
  if (op == kReplace) {
    m.Begin(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq);
    rt.rtm_protocol = proto;
    rt.rtm_scope = RT_SCOPE_UNIVERSE;  // the kernel keeps every IPv6 route at universe scope
    rt.rtm_type = RTN_UNICAST;
    if (flags & kOnlink) rt.rtm_flags = RTNH_F_ONLINK;
  } else {
    m.Begin(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq);
    rt.rtm_scope = RT_SCOPE_NOWHERE;
  }
  m.Fixed(rt);
  m.Attr(RTA_DST, dst, 16);
  if (ifindex != 0) m.AttrU32(RTA_OIF, ifindex);
  if (hasGateway) m.Attr(RTA_GATEWAY, gateway, 16);
  if (metric != 0) m.AttrU32(RTA_PRIORITY, metric);
  m.End();
}

// nlRouteBatch6(count, op: Uint8Array, dst: Uint8Array(16*count), prefixLen: Uint8Array,
//               gateway: Uint8Array(16*count), metric: Uint32Array, flags: Uint8Array, ifindex, proto,
//               errnos: Int32Array) -> failures. As nlRouteBatch, for IPv6 (gateway all-zero = none).
napi_value RouteBatch6(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!GetArgs(env, info, 10, argv)) return nullptr;
  uint32_t count, ifindex, proto;
  uint8_t *op, *dst, *len, *gateway, *flags;
  uint32_t *metric;
  int32_t *errnos;
  size_t nOp, nDst, nLen, nGw, nMetric, nFlags, nErr;
  if (!GetU32(env, argv[0], &count, "count") || !GetTyped(env, argv[1], napi_uint8_array, &op, &nOp, "op") ||
      !GetTyped(env, argv[2], napi_uint8_array, &dst, &nDst, "dst") ||
      !GetTyped(env, argv[3], napi_uint8_array, &len, &nLen, "prefixLen") ||
      !GetTyped(env, argv[4], napi_uint8_array, &gateway, &nGw, "gateway") ||
      !GetTyped(env, argv[5], napi_uint32_array, &metric, &nMetric, "metric") ||
      !GetTyped(env, argv[6], napi_uint8_array, &flags, &nFlags, "flags") ||
      !GetU32(env, argv[7], &ifindex, "ifindex") || !GetU32(env, argv[8], &proto, "proto") ||
      !GetTyped(env, argv[9], napi_int32_array, &errnos, &nErr, "errnos")) {
    return nullptr;
  }
  if (nOp < count || nDst < 16 * static_cast<size_t>(count) || nLen < count ||
      nGw < 16 * static_cast<size_t>(count) || nMetric < count || nFlags < count || nErr < count) {
    napi_throw_range_error(env, nullptr, "rtnetlink: IPv6 route batch arrays are shorter than count");
    return nullptr;
  }
  if (proto > 255) {
    napi_throw_range_error(env, nullptr, "rtnetlink: route protocol must be 0..255");
    return nullptr;
  }
  for (uint32_t i = 0; i < count; i++) {
    if (op[i] > kDelete || len[i] > 128) {
      napi_throw_range_error(env, nullptr, "rtnetlink: IPv6 route batch entry has a bad op or prefix length");
      return nullptr;
    }
  }
  napi_value result;
  uint32_t failures = 0;
  if (count > 0) {
    NlSocket s;
    if (int err = s.Open()) return ThrowErrno(env, "open rtnetlink socket", err);
    int want = static_cast<int>(kBatchRcvBuf);
    if (setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) < 0) {
      setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    }
    int rcvbuf = 0;
    socklen_t optlen = sizeof rcvbuf;
    getsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, &optlen);
    size_t chunk = static_cast<size_t>(rcvbuf > 0 ? rcvbuf : 0) / 2 / kAckCharge;
    if (chunk < 16) chunk = 16;
    if (chunk > kMaxChunk) chunk = kMaxChunk;
    std::vector<bool> acked(count, false);
    MsgBuilder m;
    m.Reserve(chunk * 96);
    for (size_t first = 0; first < count; first += chunk) {
      size_t end = first + chunk < count ? first + chunk : count;
      m.Clear();
      for (size_t i = first; i < end; i++) {
        AppendRoute6Msg(m, static_cast<uint32_t>(i + 1), op[i], dst + 16 * i, len[i], gateway + 16 * i,
                        metric[i], flags[i], ifindex, static_cast<uint8_t>(proto));
      }
      if (int err = s.Send(m)) {
        for (size_t i = first; i < end; i++) errnos[i] = err;
        continue;
      }
      CollectAcks(s.fd(), op, errnos, acked, first, end);
    }
    for (uint32_t i = 0; i < count; i++) {
      if (errnos[i] != 0) failures++;
    }
  }
  napi_create_uint32(env, failures, &result);
  return result;
}

// nlStrerror(errno) -> the same text the thrown errors use
napi_value Strerror(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t err;
  if (!GetArgs(env, info, 1, argv) || !GetU32(env, argv[0], &err, "errno")) return nullptr;
  const char *text = strerror(static_cast<int>(err));
  const char *name = strerrorname_np(static_cast<int>(err));
  napi_value obj, t, n;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &t);
  napi_create_string_utf8(env, name != nullptr ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &n);
  napi_set_named_property(env, obj, "message", t);
  napi_set_named_property(env, obj, "code", n);
  return obj;
}

void Export(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn);
  napi_set_named_property(env, exports, name, fn);
}

}  // namespace

void InitNetlink(napi_env env, napi_value exports) {
  Export(env, exports, "nlGetLink", GetLink);
  Export(env, exports, "nlSetLinkMtu", SetLinkMtu);
  Export(env, exports, "nlSetLinkUp", SetLinkUp);
  Export(env, exports, "nlDelLink", DelLink);
  Export(env, exports, "nlRouteGet", RouteGet);
  Export(env, exports, "nlListAddrs", ListAddrs);
  Export(env, exports, "nlChangeAddr", ChangeAddr);
  Export(env, exports, "nlListRoutes", ListRoutes);
  Export(env, exports, "nlRouteBatch", RouteBatch);
  Export(env, exports, "nlListAddrs6", ListAddrs6);
  Export(env, exports, "nlChangeAddr6", ChangeAddr6);
  Export(env, exports, "nlListRoutes6", ListRoutes6);
  Export(env, exports, "nlRouteBatch6", RouteBatch6);
  Export(env, exports, "nlStrerror", Strerror);
}

}  // namespace tsf
