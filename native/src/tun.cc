#include "addon.h"

namespace tsf {
void InitTun(napi_env env, napi_value exports) {}
}  // namespace tsf
