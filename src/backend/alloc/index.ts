// The alloc plug-in (flannel pkg/backend/alloc): leases and subnet.env only; no device, no routes, no
// data plane. Its lease carries no BackendType and no BackendData, as flanneld's; FLANNEL_MTU is the
// external interface's MTU.
import type { BackendFields, BackendPlugin, ResolvedBackend } from '../backend';

export const allocPlugin: BackendPlugin = {
  type: 'alloc',
  parse(_f: BackendFields): ResolvedBackend {
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
