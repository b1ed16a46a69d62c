// udp lease → route into our TUN + forwarding entry. flanneld's udp backend writes leases without
// BackendType and routes to every lease it sees; we take leases without BackendType (udp's, and
// alloc's, which look the same) or with "udp", and ignore other backends' leases as flannel's other
// backends do, so a mixed cluster during a backend change never sends udp to a vxlan node.
import { leasePublicIp, type LeaseMapper } from '../../routes/route-diff';
import type { LeaseMapping } from '../backend';

/** The forwarding table wants a 6-byte MAC per peer; flannel's udp format has no Ethernet header. */
const NO_MAC = new Uint8Array(6);

export function udpLeaseMapper(tunIfindex: number): LeaseMapper {
  return (lease): LeaseMapping => {
    const type = lease.attrs.BackendType;
    if (type !== undefined && type !== '' && type !== 'udp') return { ignored: 'not-udp' };
    const publicIp = leasePublicIp(lease);
    if (publicIp === null) return { ignored: 'bad-public-ip' };
    return {
      plan: {
        route: { dst: lease.subnet, gateway: 0, ifindex: tunIfindex },
        forward: { subnet: lease.subnet, publicIp, vtepMac: NO_MAC, vni: 0 },
      },
    };
  };
}
