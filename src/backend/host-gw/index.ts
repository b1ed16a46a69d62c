// The host-gw plug-in (flannel pkg/backend/hostgw, docs/compat.md §6.1/§6a): no encapsulation, no
// device. Lease `"BackendType":"host-gw"` without BackendData; FLANNEL_MTU = external interface MTU;
// each peer lease becomes `<subnet> via <PublicIP> dev <external iface>`.
import type { BackendPlugin, ResolvedBackend } from '../backend';
import { HostGwBackend } from './host-gw-backend';

export const hostGwPlugin: BackendPlugin = {
  type: 'host-gw',
  parse(): ResolvedBackend {
    // No fields: the registry refuses any the Backend object has besides Type.
    return {
      type: 'host-gw',
      summary: {},
      overhead: 0,
      underlayMtu: null,
      needsVtepMac: false,
      leaseAttrs: () => ({ BackendType: 'host-gw' }),
      createHooks: (deps) => new HostGwBackend({ log: deps.log }),
    };
  },
};
