// flannel's udp backend format (docs/compat.md §6, flannel pkg/backend/udp proxy): the UDP payload is
// the bare inner IPv4 packet, with nothing in front. Pure function over (bytes, offset) like the VXLAN
// codec, so the packet loop validates in place without creating objects.
import { Drop } from './vxlan-codec';

/**
 * Validates a received datagram at buf[off..off+len) as a bare IPv4 packet and returns its length (the
 * IPv4 total length; trailing bytes after it are excluded), or -Drop for a datagram to drop.
 */
export function decodeIpDatagram(buf: Uint8Array, off: number, len: number): number {
  if (len < 20) return -Drop.short;
  const vihl = buf[off]!;
  if (vihl >>> 4 !== 4) return -Drop.notIpv4;
  const ihl = (vihl & 0x0f) << 2;
  const total = (buf[off + 2]! << 8) | buf[off + 3]!;
  if (ihl < 20 || total < ihl || total > len) return -Drop.badIpv4Header;
  return total;
}
