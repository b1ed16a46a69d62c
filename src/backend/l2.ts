// "Is this peer on our L2 segment?" for host-gw and vxlan DirectRouting. flannel asks the kernel
// (`ip route get <PublicIP>` must yield one gateway-less route, docs/compat.md §5.6); we answer from
// the external interface's own addresses: the PublicIP is inside one of its prefixes (or is the peer
// of a point-to-point address). A route via such a PublicIP is accepted by the kernel as on-link; any
// other PublicIP needs a router, which a host-gw route cannot express.
import { formatIp4, maskOf, type Ip4 } from '../subnet/ip4';
import type { Ip4Addr } from '../netlink/rtnetlink';

export function isOnLink(ip: Ip4, addrs: readonly Ip4Addr[]): boolean {
  for (const a of addrs) {
    if (a.peer !== undefined && a.peer !== a.ip) {
      if (a.peer === ip) return true;
      continue;
    }
    if (a.prefixLen >= 32) continue;
    const m = maskOf(a.prefixLen);
    if ((a.ip & m) >>> 0 === (ip & m) >>> 0 && ip !== a.ip) return true;
  }
  return false;
}

/** "192.0.2.11/24, 198.51.100.1/24" for log lines. */
export function describeAddrs(addrs: readonly Ip4Addr[]): string {
  return addrs.length === 0 ? 'no IPv4 address' : addrs.map((a) => `${formatIp4(a.ip)}/${a.prefixLen}`).join(', ');
}
