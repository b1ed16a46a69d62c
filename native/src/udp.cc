#include "addon.h"

namespace tsf {
void InitUdp(napi_env env, napi_value exports) {}
}  // namespace tsf
