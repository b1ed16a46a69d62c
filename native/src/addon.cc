#include "addon.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace tsf {

napi_value ThrowErrno(napi_env env, const char *what, int err) {
  std::string msg = std::string(what) + ": " + strerror(err);
  napi_value message, error, code, errnum;
  napi_create_string_utf8(env, msg.c_str(), msg.size(), &message);
  napi_create_error(env, nullptr, message, &error);
  const char *name = strerrorname_np(err);
  if (name == nullptr) name = "EUNKNOWN";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "code", code);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return nullptr;
}

}  // namespace tsf

NAPI_MODULE_INIT() {
  tsf::InitTun(env, exports);
  tsf::InitUdp(env, exports);
  tsf::InitPoll(env, exports);
  tsf::InitNetlink(env, exports);
  tsf::InitRlimit(env, exports);
  return exports;
}
