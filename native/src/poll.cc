#include "addon.h"

namespace tsf {
void InitPoll(napi_env env, napi_value exports) {}
}  // namespace tsf
