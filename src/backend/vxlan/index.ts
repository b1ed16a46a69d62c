// The vxlan plug-in: Backend fields (docs/compat.md §5.1, flannel pkg/backend/vxlan RegisterNetwork),
// lease data, MTU overhead, and the data plane hooks.
import { BackendConfigError, type BackendFields, type BackendPlugin, type ResolvedBackend } from '../backend';
import { MAX_VNI } from './lease-data';
import { parseOffloadRequest } from '../../dataplane/offload';
import { VxlanDataplane } from '../../dataplane/vxlan-dataplane';
import { parseMac } from '../../subnet/lease-codec';
import { TunBackend, type TunFlavor } from '../tun-backend';
import { vxlanLeaseMapper } from './mapping';

/** Kernel VXLAN default UDP port (vxlan module param udp_port); flannel's `Port: 0` means this. */
export const DEFAULT_VXLAN_PORT = 8472;
export const DEFAULT_VNI = 1;
/** Outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (flannel's vxlan encapOverhead, §5.4). */
export const VXLAN_OVERHEAD = 50;

export const vxlanPlugin: BackendPlugin = {
  type: 'vxlan',
  parse(f: BackendFields): ResolvedBackend {
    const vni = f.int('VNI', DEFAULT_VNI, 0, MAX_VNI);
    const portField = f.int('Port', 0, 0, 65535);
    const mtu = f.int('MTU', 0, 0, Number.MAX_SAFE_INTEGER);
    const directRouting = f.bool('DirectRouting', false);
    if (f.bool('GBP', false)) {
      throw new BackendConfigError(
        'Backend.GBP true is not supported: the userspace VXLAN data plane sends and accepts no Group Based Policy extension; remove GBP (or set it to false)',
      );
    }
    if (f.bool('Learning', false)) {
      throw new BackendConfigError(
        'Backend.Learning true is not supported: peers come from leases only, nothing is learnt from received frames; remove Learning (or set it to false)',
      );
    }
    const port = portField > 0 ? portField : DEFAULT_VXLAN_PORT;
    return {
      type: 'vxlan',
      summary: { VNI: vni, Port: port, DirectRouting: directRouting, ...(mtu > 0 ? { MTU: mtu } : {}) },
      overhead: VXLAN_OVERHEAD,
      underlayMtu: mtu > 0 ? mtu : null,
      needsVtepMac: true,
      // flannel HEAD (vxlan newSubnetAttrs): each family's data only when that family is enabled.
      leaseAttrs: (macs) => ({
        BackendType: 'vxlan',
        ...(macs.ipv4 !== null ? { BackendData: { VNI: vni, VtepMAC: macs.ipv4 } } : {}),
        ...(macs.ipv6 !== null ? { BackendV6Data: { VNI: vni, VtepMAC: macs.ipv6 } } : {}),
      }),
      createHooks: (deps) => {
        const flavor: TunFlavor = {
          label: 'VXLAN',
          defaultTunName: `flannel.${vni}`,
          usesExtAddrs: directRouting,
          logFields: { port, vni, directRouting },
          takesOverKernelVxlan: true,
          open: (tunName, o, onFatal) =>
            VxlanDataplane.open({
              tunName,
              vni,
              port,
              sourceIp: o.sourceIp,
              localMac: parseMac(o.vtepMac),
              persist: true,
              offload: parseOffloadRequest(deps.offload),
              threads: deps.threads,
              strictSource: deps.strictSource ?? false,
              log: deps.log,
              onFatal,
            }),
          mapper: (tunIfindex, ext) =>
            vxlanLeaseMapper({
              tunIfindex,
              ...(directRouting ? { directRouting: { extIfindex: ext.ifindex, extAddrs: () => ext.addrs() } } : {}),
            }),
        };
        return new TunBackend(flavor, { tunName: deps.tunName, log: deps.log, onFatal: (err) => deps.fatal(err) });
      },
    };
  },
};
