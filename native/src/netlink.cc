#include "addon.h"

namespace tsf {
void InitNetlink(napi_env env, napi_value exports) {}
}  // namespace tsf
