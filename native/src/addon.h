// Shared declarations of the tsflanneld native addon. Each area registers its own functions
// on `exports`; the hot entry points are raw napi_callbacks (no node-addon-api wrappers) to keep
// the per-batch call cost near the N-API floor (docs/performance.md §4).
#pragma once
#include <node_api.h>

namespace tsf {
void InitTun(napi_env env, napi_value exports);
void InitUdp(napi_env env, napi_value exports);
void InitPoll(napi_env env, napi_value exports);
void InitNetlink(napi_env env, napi_value exports);
void InitRlimit(napi_env env, napi_value exports);

// Throws a JS Error whose message is "<what>: <strerror(err)>" and whose `code` is the errno name
// (e.g. "EPERM") and `errno` the number. Returns nullptr for convenient `return ThrowErrno(...)`.
napi_value ThrowErrno(napi_env env, const char *what, int err);

// The data and element count of a typed array of element type `want`; false (nothing thrown) otherwise.
template <class T>
bool TypedArrayOf(napi_env env, napi_value v, napi_typedarray_type want, T **data, size_t *length) {
  bool is = false;
  napi_typedarray_type type;
  void *ptr = nullptr;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, length, &ptr, nullptr, nullptr) != napi_ok || type != want) {
    return false;
  }
  *data = static_cast<T *>(ptr);
  return true;
}
}  // namespace tsf
