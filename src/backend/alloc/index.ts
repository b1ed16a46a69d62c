// The alloc plug-in (flannel pkg/backend/alloc): leases and subnet.env only; no device, no routes, no
// data plane. Its lease carries no BackendType and no BackendData, as flanneld's; FLANNEL_MTU is the
// external interface's MTU.
import type { BackendPlugin, ResolvedBackend } from '../backend';

export const allocPlugin: BackendPlugin = {
  type: 'alloc',
  parse(): ResolvedBackend {
    // No fields: the registry refuses any the Backend object has besides Type.
    return {
      type: 'alloc',
      summary: {},
      overhead: 0,
      underlayMtu: null,
      needsVtepMac: false,
      leaseAttrs: () => ({}),
      createHooks: () => null,
    };
  },
};
