// Readiness for the forwarding threads (src/dataplane/forwarding-thread.ts): each thread blocks in
// epoll_wait on its own TUN queue, its own receive socket and an eventfd the main thread signals for
// control (new peer table, MTU, pause, exit). Blocking here, not in libuv callbacks, is what keeps the
// main thread's work (etcd, routes, logging, HTTP) from ever delaying a packet. Level triggered: a loop
// that stopped at its batch budget is woken again at once, alternating the directions.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "addon.h"
#include "dataplane.h"

namespace tsf {

namespace {

constexpr int kMaxWaitFds = 31;  // the result is a bit mask in an int32

// eventfdOpen() → fd (non-blocking, close-on-exec).
napi_value EventfdOpen(napi_env env, napi_callback_info info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, "eventfd", errno);
  return MakeInt32(env, fd);
}

// eventfdSignal(fd): wakes the thread waiting on it (adds 1 to the counter).
napi_value EventfdSignal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  if (argc < 1 || !ArgInt32(env, argv[0], "eventfdSignal", "fd", &fd)) return nullptr;
  uint64_t one = 1;
  ssize_t w;
  do {
    w = write(fd, &one, sizeof one);
  } while (w < 0 && errno == EINTR);
  // EAGAIN: the counter is saturated, so the waiter is due to wake anyway.
  if (w < 0 && errno != EAGAIN) return ThrowErrno(env, "signal eventfd", errno);
  return nullptr;
}

// eventfdDrain(fd): resets the counter (the waiter then handles every pending control message).
napi_value EventfdDrain(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  if (argc < 1 || !ArgInt32(env, argv[0], "eventfdDrain", "fd", &fd)) return nullptr;
  uint64_t v;
  ssize_t r;
  do {
    r = read(fd, &v, sizeof v);
  } while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN) return ThrowErrno(env, "drain eventfd", errno);
  return nullptr;
}

// epollOpen(fds: Int32Array) → epoll fd watching fds[i] for input (level triggered), reported as bit i.
napi_value EpollOpen(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t *fds;
  size_t n;
  if (argc < 1 || !TypedArrayOf(env, argv[0], napi_int32_array, &fds, &n) || n == 0 || n > kMaxWaitFds) {
    return ThrowType(env, "epollOpen(fds: Int32Array of 1..31 fds)");
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return ThrowErrno(env, "epoll_create1", errno);
  for (size_t i = 0; i < n; i++) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
      int e = errno;
      close(ep);
      return ThrowErrno(env, "epoll_ctl add", e);
    }
  }
  return MakeInt32(env, ep);
}

// epollWait(ep, timeoutMs) → bit mask of the ready fds (bit i = fds[i] of epollOpen; EPOLLERR/EPOLLHUP
// count as ready so the read reports the error), 0 on timeout or EINTR, or -errno. Blocks the calling
// thread (a forwarding thread; never call it on the main thread with a timeout other than 0).
napi_value EpollWait(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t ep, timeout;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &ep) != napi_ok ||
      napi_get_value_int32(env, argv[1], &timeout) != napi_ok) {
    return ThrowType(env, "epollWait(ep, timeoutMs): integers expected");
  }
  struct epoll_event evs[kMaxWaitFds];
  int n = epoll_wait(ep, evs, kMaxWaitFds, timeout);
  if (n < 0) return MakeInt32(env, errno == EINTR ? 0 : -errno);
  int32_t mask = 0;
  for (int i = 0; i < n; i++) mask |= 1 << evs[i].data.u32;
  return MakeInt32(env, mask);
}

// threadSetNice(nice) → 0 or errno: the nice value of the calling thread only (setpriority on its tid;
// Linux applies PRIO_PROCESS to a single thread). The forwarding threads use it so that a busy host
// queues ordinary work, not packets, behind them (the kernel's own VXLAN runs in softirq, ahead of tasks).
napi_value ThreadSetNice(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t nice;
  if (argc < 1 || !ArgInt32(env, argv[0], "threadSetNice", "nice", &nice)) return nullptr;
  int rc = setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice);
  return MakeInt32(env, rc == 0 ? 0 : errno);
}

}  // namespace

void InitPoll(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"eventfdOpen", nullptr, EventfdOpen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"eventfdSignal", nullptr, EventfdSignal, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"eventfdDrain", nullptr, EventfdDrain, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"epollOpen", nullptr, EpollOpen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"epollWait", nullptr, EpollWait, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"threadSetNice", nullptr, ThreadSetNice, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

}  // namespace tsf
