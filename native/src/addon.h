// Shared declarations of the tsflanneld native addon. Each area registers its own functions
// on `exports`; the hot entry points are raw napi_callbacks (no node-addon-api wrappers) to keep
// the per-batch call cost near the N-API floor (perf-notes §4).
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
}  // namespace tsf
