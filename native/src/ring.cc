// Ring registry: JS hands over an arena (ArrayBuffer) and a descriptor table (Int32Array) once;
// hot calls then name the ring by a small integer. The table is a fixed array so a lookup on the
// hot path is an index plus two checks; registration is rare and runs on the JS thread of its env.
#include <cstdio>
#include <cstring>
#include <mutex>

#include "addon.h"
#include "dataplane.h"
#include "offload.h"

namespace tsf {

namespace {
Ring g_rings[kMaxRings];
std::mutex g_ringsMu;  // guards claim/release only; several envs (worker threads) may register

void ReleaseRing(Ring *r) {
  if (r->arenaRef != nullptr) napi_delete_reference(r->env, r->arenaRef);
  if (r->descRef != nullptr) napi_delete_reference(r->env, r->descRef);
  std::lock_guard<std::mutex> lock(g_ringsMu);
  *r = Ring();
}

// Frees the rings of an env that goes away (worker exit) without having released them.
void EnvCleanup(void *arg) {
  napi_env env = static_cast<napi_env>(arg);
  for (Ring &r : g_rings) {
    if (r.used && r.env == env) {
      // References die with the env; only forget them.
      std::lock_guard<std::mutex> lock(g_ringsMu);
      r = Ring();
    }
  }
}

// ringRegister(arena: ArrayBuffer, desc: Int32Array, slotSize, headroom, encapLen?) → id
// encapLen: bytes of encapsulation in front of the inner packet (default 22, VXLAN + Ethernet).
napi_value RingRegister(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 4) return ThrowType(env, "ringRegister(arena, desc, slotSize, headroom): 4 arguments expected");
  bool isAb = false, isTa = false;
  napi_is_arraybuffer(env, argv[0], &isAb);
  napi_is_typedarray(env, argv[1], &isTa);
  if (!isAb) return ThrowType(env, "ringRegister: arena must be an ArrayBuffer");
  if (!isTa) return ThrowType(env, "ringRegister: desc must be an Int32Array");
  void *arenaData = nullptr;
  size_t arenaLen = 0;
  napi_get_arraybuffer_info(env, argv[0], &arenaData, &arenaLen);
  napi_typedarray_type type;
  size_t descLen = 0;
  void *descData = nullptr;
  napi_get_typedarray_info(env, argv[1], &type, &descLen, &descData, nullptr, nullptr);
  if (type != napi_int32_array) return ThrowType(env, "ringRegister: desc must be an Int32Array");
  int32_t slotSize, headroom;
  if (!ArgInt32(env, argv[2], "ringRegister", "slotSize", &slotSize)) return nullptr;
  if (!ArgInt32(env, argv[3], "ringRegister", "headroom", &headroom)) return nullptr;
  int32_t encapLen = kVxlanEthLen;
  if (argc >= 5 && !ArgInt32(env, argv[4], "ringRegister", "encapLen", &encapLen)) return nullptr;
  if (encapLen < 0 || encapLen > kMaxEncapLen) return ThrowType(env, "ringRegister: encapLen must be 0..22");
  if (headroom < kMinHeadroom || slotSize < headroom + 128 || slotSize > (1 << 20)) {
    return ThrowType(env, "ringRegister: need 32 <= headroom and headroom + 128 <= slotSize <= 1 MiB");
  }
  size_t nSlots = arenaLen / static_cast<size_t>(slotSize);
  if (nSlots == 0 || nSlots > 4096) return ThrowType(env, "ringRegister: arena must hold 1..4096 slots");
  if (descLen < nSlots * kDescWords) return ThrowType(env, "ringRegister: desc too small for the slot count");

  int id = -1;
  {
    std::lock_guard<std::mutex> lock(g_ringsMu);
    for (int i = 0; i < kMaxRings; i++) {
      if (!g_rings[i].used) {
        g_rings[i].used = true;
        id = i;
        break;
      }
    }
  }
  if (id < 0) return ThrowType(env, "ringRegister: too many rings registered");
  Ring &r = g_rings[id];
  r.env = env;
  r.arena = static_cast<uint8_t *>(arenaData);
  r.arenaLen = nSlots * static_cast<size_t>(slotSize);
  r.desc = static_cast<int32_t *>(descData);
  r.nSlots = static_cast<uint32_t>(nSlots);
  r.slotSize = static_cast<uint32_t>(slotSize);
  r.headroom = static_cast<uint32_t>(headroom);
  r.encapLen = static_cast<uint32_t>(encapLen);
  napi_create_reference(env, argv[0], 1, &r.arenaRef);
  napi_create_reference(env, argv[1], 1, &r.descRef);
  return MakeInt32(env, id);
}

napi_value RingRelease(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t id;
  if (argc < 1 || !ArgInt32(env, argv[0], "ringRelease", "id", &id)) return nullptr;
  Ring *r = GetRing(env, id);
  if (r == nullptr) return nullptr;
  ReleaseRing(r);
  return nullptr;
}

void SetInt(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, MakeInt32(env, v));
}

}  // namespace

Ring *GetRing(napi_env env, int32_t id) {
  if (id < 0 || id >= kMaxRings || !g_rings[id].used || g_rings[id].env != env) {
    ThrowType(env, "data-plane ring id is not registered");
    return nullptr;
  }
  return &g_rings[id];
}

bool ArgInt32(napi_env env, napi_value v, const char *fn, const char *name, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s must be a number", fn, name);
    ThrowType(env, msg);
    return false;
  }
  return true;
}

napi_value MakeInt32(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

napi_value ThrowType(napi_env env, const char *msg) {
  napi_throw_type_error(env, nullptr, msg);
  return nullptr;
}

void InitRing(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"ringRegister", nullptr, RingRegister, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"ringRelease", nullptr, RingRelease, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);

  napi_value layout;
  napi_create_object(env, &layout);
  SetInt(env, layout, "DESC_WORDS", kDescWords);
  SetInt(env, layout, "D_OFF", D_OFF);
  SetInt(env, layout, "D_LEN", D_LEN);
  SetInt(env, layout, "D_ADDR", D_ADDR);
  SetInt(env, layout, "D_PORT", D_PORT);
  SetInt(env, layout, "D_FD", D_FD);
  SetInt(env, layout, "D_FLOW", D_FLOW);
  SetInt(env, layout, "D_PEER", D_PEER);
  SetInt(env, layout, "D_STATUS", D_STATUS);
  SetInt(env, layout, "D_FLAGS", D_FLAGS);
  SetInt(env, layout, "D_GSO_TYPE", D_GSO_TYPE);
  SetInt(env, layout, "D_GSO_SIZE", D_GSO_SIZE);
  SetInt(env, layout, "D_HDR_LEN", D_HDR_LEN);
  SetInt(env, layout, "D_CSUM_START", D_CSUM_START);
  SetInt(env, layout, "D_CSUM_OFF", D_CSUM_OFF);
  SetInt(env, layout, "D_SEGS", D_SEGS);
  SetInt(env, layout, "D_AUX", D_AUX);
  SetInt(env, layout, "D_REJECT_LO", D_REJECT_LO);
  SetInt(env, layout, "D_REJECT_HI", D_REJECT_HI);
  SetInt(env, layout, "F_TRUNC", F_TRUNC);
  SetInt(env, layout, "F_NOT_IPV4", F_NOT_IPV4);
  SetInt(env, layout, "F_CSUM_FIXED", F_CSUM_FIXED);
  SetInt(env, layout, "F_SEGMENTED", F_SEGMENTED);
  SetInt(env, layout, "F_COALESCED", F_COALESCED);
  SetInt(env, layout, "F_GSO_EIO", F_GSO_EIO);
  SetInt(env, layout, "F_TUN_GSO_REFUSED", F_TUN_GSO_REFUSED);
  SetInt(env, layout, "M_VNET", M_VNET);
  SetInt(env, layout, "M_CSUM_REPAIR", M_CSUM_REPAIR);
  SetInt(env, layout, "M_COALESCE", M_COALESCE);
  SetInt(env, layout, "M_USO", M_USO);
  SetInt(env, layout, "M_NO_MERGE", M_NO_MERGE);
  SetInt(env, layout, "S_SPLIT", S_SPLIT);
  SetInt(env, layout, "S_GSO", S_GSO);
  SetInt(env, layout, "TUN_OFF_CSUM", TUN_OFF_CSUM);
  SetInt(env, layout, "TUN_OFF_TSO4", TUN_OFF_TSO4);
  SetInt(env, layout, "TUN_OFF_TSO6", TUN_OFF_TSO6);
  SetInt(env, layout, "TUN_OFF_USO4", TUN_OFF_USO4);
  SetInt(env, layout, "TUN_OFF_USO6", TUN_OFF_USO6);
  SetInt(env, layout, "U_GRO", U_GRO);
  SetInt(env, layout, "U_REUSEPORT", U_REUSEPORT);
  SetInt(env, layout, "VXLAN_ETH_LEN", kVxlanEthLen);
  SetInt(env, layout, "VNET_HDR_LEN", kVnetHdrLen);
  SetInt(env, layout, "MIN_HEADROOM", kMinHeadroom);
  napi_set_named_property(env, exports, "layout", layout);
  napi_add_env_cleanup_hook(env, EnvCleanup, env);
}

}  // namespace tsf
