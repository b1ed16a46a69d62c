// What to do with a link that already has the overlay device's name when tsflanneld starts. flanneld
// leaves its kernel VXLAN device flannel.<VNI> behind when it stops (and keeps using it on restart);
// a TUN cannot be opened under that name (TUNSETIFF → EINVAL), and the kernel device also holds the
// VXLAN UDP port. Its MAC is the VtepMAC in this node's lease, so keeping it spares every peer an update.
import type { LinkInfo } from '../netlink/rtnetlink';
import { formatMac } from '../subnet/lease-codec';

export type TakeoverDecision =
  /** No link, or our own persistent TUN from an earlier run: open (or reattach) it. */
  | { action: 'open' }
  /** flanneld's kernel VXLAN device: delete it, then open our TUN and publish `mac`. */
  | { action: 'take-over'; mac: string }
  /** Something else holds the name: refuse with `reason` (nothing is touched). */
  | { action: 'refuse'; reason: string };

function usableMac(mac: Uint8Array | null): string | null {
  if (mac === null || mac.length !== 6 || (mac[0]! & 0x01) !== 0 || mac.every((b) => b === 0)) return null;
  return formatMac(mac);
}

/** Decides from `ip link show <name>` as rtnetlink reports it (null: no such link). Pure. */
export function decideTakeover(name: string, link: LinkInfo | null): TakeoverDecision {
  if (link === null) return { action: 'open' };
  const kind = link.kind ?? '';
  if (kind === 'tun') return { action: 'open' };
  if (kind === 'vxlan') {
    const mac = usableMac(link.mac);
    if (mac === null) {
      return { action: 'refuse', reason: `kernel VXLAN device ${name} has no usable MAC; delete it (ip link del ${name}) and start again` };
    }
    return { action: 'take-over', mac };
  }
  return {
    action: 'refuse',
    reason:
      `a ${kind === '' ? 'device' : `"${kind}" device`} named ${name} exists and is neither a TUN nor flanneld's VXLAN device; ` +
      `remove it or choose another name with -tun-name`,
  };
}
