// The udp plug-in: flannel's default backend (selected when the config has no Backend object, or
// "Type":"udp"; docs/compat.md §6, flannel pkg/backend/udp). Field `Port` (default 8285). Lease without
// BackendType or BackendData; TUN flannel0 with MTU = underlay − 28; the UDP payload is the bare
// inner IPv4 packet. It runs on the same data plane as vxlan (batches, offload ladder), only without
// an encapsulation header.
import { parseOffloadRequest } from '../../dataplane/offload';
import { VxlanDataplane } from '../../dataplane/vxlan-dataplane';
import type { BackendFields, BackendPlugin, ResolvedBackend } from '../backend';
import { TunBackend, type TunFlavor } from '../tun-backend';
import { udpLeaseMapper } from './mapping';

/** flannel's udp backend port. */
export const DEFAULT_UDP_PORT = 8285;
/** Outer IPv4 20 + UDP 8 (flannel's udp encapOverhead). */
export const UDP_OVERHEAD = 28;

export const udpPlugin: BackendPlugin = {
  type: 'udp',
  parse(f: BackendFields): ResolvedBackend {
    // flanneld would listen on a random port for an explicit 0, which no peer can reach: refused.
    const port = f.int('Port', DEFAULT_UDP_PORT, 1, 65535);
    return {
      type: 'udp',
      summary: { Port: port },
      overhead: UDP_OVERHEAD,
      underlayMtu: null,
      needsVtepMac: false,
      leaseAttrs: () => ({}),
      createHooks: (deps) => {
        const flavor: TunFlavor = {
          label: 'UDP',
          // flannel opens "flannel%d", which is flannel0 on a host running one flanneld; a fixed name
          // lets a restarted daemon reattach to its persistent device instead of making flannel1.
          defaultTunName: 'flannel0',
          usesExtAddrs: false,
          logFields: { port },
          takesOverKernelVxlan: false,
          open: (tunName, o, onFatal) =>
            VxlanDataplane.open({
              encapsulation: 'ip',
              tunName,
              port,
              sourceIp: o.sourceIp,
              persist: true,
              offload: parseOffloadRequest(deps.offload),
              threads: deps.threads,
              log: deps.log,
              onFatal,
            }),
          mapper: (tunIfindex) => udpLeaseMapper(tunIfindex),
        };
        return new TunBackend(flavor, { tunName: deps.tunName, log: deps.log, onFatal: (err) => deps.fatal(err) });
      },
    };
  },
};
