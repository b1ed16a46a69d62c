// Readiness wakeups for the non-blocking TUN/UDP fds on the env's own libuv loop (uv_poll_t, level
// triggered): the JS callback runs once per readiness and drains a batch budget itself. No timers and
// no extra thread, so an idle tunnel adds one loop turn of latency and nothing else (docs/performance.md §4).
#include <uv.h>

#include <cstdint>
#include <unordered_map>

#include "addon.h"
#include "dataplane.h"

namespace tsf {

namespace {

struct PollHandle {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref resource;
  napi_async_context async;
  int32_t id;
};

// Handles of all envs by id; touched only from the JS thread of the owning env, guarded for workers.
std::unordered_map<int32_t, PollHandle *> g_polls;
uv_mutex_t g_pollsMu;
int32_t g_nextId = 1;

void OnClosed(uv_handle_t *h) { delete static_cast<PollHandle *>(h->data); }

void ReleaseJs(PollHandle *p) {
  napi_async_destroy(p->env, p->async);
  napi_delete_reference(p->env, p->callback);
  napi_delete_reference(p->env, p->resource);
}

void OnReadable(uv_poll_t *handle, int status, int events) {
  PollHandle *p = static_cast<PollHandle *>(handle->data);
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, resource, arg, result;
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_reference_value(env, p->resource, &resource);
  napi_create_int32(env, status, &arg);
  // make_callback opens a callback scope: async hooks see the call and microtasks run afterwards.
  if (napi_make_callback(env, p->async, resource, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

// Closes every handle an env still has when it is torn down (process exit or worker termination).
void EnvCleanup(void *arg) {
  napi_env env = static_cast<napi_env>(arg);
  uv_mutex_lock(&g_pollsMu);
  for (auto it = g_polls.begin(); it != g_polls.end();) {
    if (it->second->env == env) {
      uv_poll_stop(&it->second->poll);
      uv_close(reinterpret_cast<uv_handle_t *>(&it->second->poll), OnClosed);
      it = g_polls.erase(it);
    } else {
      ++it;
    }
  }
  uv_mutex_unlock(&g_pollsMu);
}

// pollStart(fd, callback(status)) → handle id. callback runs on every loop turn in which fd is readable.
napi_value PollStart(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  if (argc < 2 || !ArgInt32(env, argv[0], "pollStart", "fd", &fd)) return nullptr;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) return ThrowType(env, "pollStart: callback must be a function");
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    return ThrowType(env, "pollStart: no event loop for this environment");
  }
  PollHandle *p = new PollHandle();
  p->env = env;
  int rc = uv_poll_init(loop, &p->poll, fd);
  if (rc != 0) {
    delete p;
    return ThrowErrno(env, "poll fd", -rc);
  }
  p->poll.data = p;
  rc = uv_poll_start(&p->poll, UV_READABLE, OnReadable);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t *>(&p->poll), OnClosed);
    return ThrowErrno(env, "poll fd", -rc);
  }
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "tsflanneld.poll", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[1], 1, &p->callback);
  napi_create_reference(env, resource, 1, &p->resource);
  napi_async_init(env, resource, name, &p->async);
  uv_mutex_lock(&g_pollsMu);
  p->id = g_nextId++;
  g_polls[p->id] = p;
  uv_mutex_unlock(&g_pollsMu);
  return MakeInt32(env, p->id);
}

// pollStop(id): stops and frees the handle; unknown ids are ignored so stop() is idempotent.
napi_value PollStop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t id;
  if (argc < 1 || !ArgInt32(env, argv[0], "pollStop", "id", &id)) return nullptr;
  uv_mutex_lock(&g_pollsMu);
  auto it = g_polls.find(id);
  PollHandle *p = nullptr;
  if (it != g_polls.end() && it->second->env == env) {
    p = it->second;
    g_polls.erase(it);
  }
  uv_mutex_unlock(&g_pollsMu);
  if (p != nullptr) {
    uv_poll_stop(&p->poll);
    ReleaseJs(p);
    uv_close(reinterpret_cast<uv_handle_t *>(&p->poll), OnClosed);
  }
  return nullptr;
}

}  // namespace

void InitPoll(napi_env env, napi_value exports) {
  static uv_once_t once = UV_ONCE_INIT;
  uv_once(&once, [] { uv_mutex_init(&g_pollsMu); });
  napi_property_descriptor props[] = {
      {"pollStart", nullptr, PollStart, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pollStop", nullptr, PollStop, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_add_env_cleanup_hook(env, EnvCleanup, env);
}

}  // namespace tsf
