// Process resource limits. Go (since 1.19) raises the soft RLIMIT_NOFILE to the hard limit when a
// program starts, so flanneld runs with the hard limit; a Node process keeps the soft limit it was
// given (often 1024). raiseNofileLimit() does what Go does, once at start (getrlimit(2), setrlimit(2)).
#include <sys/resource.h>

#include <cerrno>

#include "addon.h"

namespace tsf {

namespace {

napi_value MakeNumber(napi_env env, rlim_t v) {
  napi_value n;
  // RLIM_INFINITY does not fit a double exactly; report it as -1.
  napi_create_double(env, v == RLIM_INFINITY ? -1.0 : static_cast<double>(v), &n);
  return n;
}

// raiseNofileLimit() -> { before, soft, hard } (-1 = unlimited). Throws with errno if getrlimit or
// setrlimit fails.
napi_value RaiseNofileLimit(napi_env env, napi_callback_info info) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return ThrowErrno(env, "getrlimit RLIMIT_NOFILE", errno);
  rlim_t before = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return ThrowErrno(env, "setrlimit RLIMIT_NOFILE", errno);
  }
  napi_value obj;
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "before", MakeNumber(env, before));
  napi_set_named_property(env, obj, "soft", MakeNumber(env, lim.rlim_cur));
  napi_set_named_property(env, obj, "hard", MakeNumber(env, lim.rlim_max));
  return obj;
}

}  // namespace

void InitRlimit(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "raiseNofileLimit", NAPI_AUTO_LENGTH, RaiseNofileLimit, nullptr, &fn);
  napi_set_named_property(env, exports, "raiseNofileLimit", fn);
}

}  // namespace tsf
