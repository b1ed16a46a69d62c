// vxlan lease → route + forwarding entry (docs/compat.md §5.5, §5.6). Pure, so unit tests and the
// route benchmark use it directly.
import type { Ip4Addr } from '../../netlink/rtnetlink';
import { leasePublicIp, type LeaseMapper } from '../../routes/route-diff';
import { parseMac } from '../../subnet/lease-codec';
import type { LeaseMapping } from '../backend';
import { isOnLink } from '../l2';
import { vxlanBackendData } from './lease-data';

export interface VxlanRouting {
  /** Our TUN: overlay routes `<subnet> dev <tun>`. */
  readonly tunIfindex: number;
  /** DirectRouting: peers on our L2 get `<subnet> via <PublicIP> dev <external iface>` instead. */
  readonly directRouting?: { readonly extIfindex: number; extAddrs(): readonly Ip4Addr[] };
}

/** Leases with BackendType "vxlan" and usable BackendData become peers; others are ignored (as flannel skips them). */
export function vxlanLeaseMapper(routing: VxlanRouting): LeaseMapper {
  return (lease): LeaseMapping => {
    // vxlanBackendData checks BackendType and normalises/validates the VtepMAC.
    const data = vxlanBackendData(lease.attrs);
    if (data === null) return { ignored: lease.attrs.BackendType === 'vxlan' ? 'bad-backend-data' : 'not-vxlan' };
    const publicIp = leasePublicIp(lease);
    if (publicIp === null) return { ignored: 'bad-public-ip' };
    // The forwarding entry stays for directly routed peers too: a peer that still tunnels to us
    // (its own DirectRouting view differs) is accepted.
    const forward = { subnet: lease.subnet, publicIp, vtepMac: parseMac(data.VtepMAC), vni: data.VNI };
    const direct = routing.directRouting;
    if (direct !== undefined && isOnLink(publicIp, direct.extAddrs())) {
      return { plan: { route: { dst: lease.subnet, gateway: publicIp, ifindex: direct.extIfindex }, forward } };
    }
    return { plan: { route: { dst: lease.subnet, gateway: 0, ifindex: routing.tunIfindex }, forward } };
  };
}
