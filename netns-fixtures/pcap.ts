// Minimal pcap reader for what interop tests assert on: outer IPv4/UDP, VXLAN header, inner
// Ethernet/IPv4. Written for tcpdump's own output (classic pcap, not pcapng), so anything else is
// a hard error rather than a silently empty capture.

export class PcapParseError extends Error {
  override name = 'PcapParseError';
}

export interface EthHeader {
  dst: string; // lowercase aa:bb:cc:dd:ee:ff
  src: string;
  type: number; // EtherType after any 802.1Q tags
}

export interface Ip4Header {
  src: string;
  dst: string;
  proto: number;
  ttl: number;
  id: number;
  df: boolean;
  totalLength: number;
}

export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  length: number;
  checksum: number;
  /** null when the checksum is 0 (not computed) or the packet was truncated by the snap length. */
  checksumValid: boolean | null;
}

export interface VxlanHeader {
  flags: number; // first byte; 0x08 = VNI valid
  vni: number;
}

export interface CapturedPacket {
  /** Capture time in seconds since the epoch. */
  time: number;
  capturedLength: number;
  originalLength: number;
  eth?: EthHeader;
  ip?: Ip4Header;
  udp?: UdpHeader;
  vxlan?: VxlanHeader;
  inner?: { eth: EthHeader; ip?: Ip4Header };
}

export interface PcapParseOptions {
  /** UDP destination ports whose payload is decoded as VXLAN; default 8472 and 4789. */
  vxlanPorts?: number[];
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_RAW_ALT = 12; // some BSD-derived writers use DLT_RAW's numeric value
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_IPV4 = 228;
const LINKTYPE_LINUX_SLL2 = 276;

const ETH_P_IP = 0x0800;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const IPPROTO_UDP = 17;

export function formatMac(buf: Buffer, off: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(buf[off + i]!.toString(16).padStart(2, '0'));
  return parts.join(':');
}

function formatIp(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Ethernet header incl. VLAN tags; returns header and payload offset, or null if truncated. */
function parseEth(buf: Buffer, off: number, end: number): { eth: EthHeader; next: number } | null {
  if (end - off < 14) return null;
  const dst = formatMac(buf, off);
  const src = formatMac(buf, off + 6);
  let type = buf.readUInt16BE(off + 12);
  let next = off + 14;
  while ((type === ETH_P_8021Q || type === ETH_P_8021AD) && end - next >= 4) {
    type = buf.readUInt16BE(next + 2);
    next += 4;
  }
  return { eth: { dst, src, type }, next };
}

function parseIp4(buf: Buffer, off: number, end: number): { ip: Ip4Header; next: number; end: number } | null {
  if (end - off < 20 || buf[off]! >> 4 !== 4) return null;
  const ihl = (buf[off]! & 0x0f) * 4;
  if (ihl < 20 || end - off < ihl) return null;
  const totalLength = buf.readUInt16BE(off + 2);
  const ip: Ip4Header = {
    src: formatIp(buf, off + 12),
    dst: formatIp(buf, off + 16),
    proto: buf[off + 9]!,
    ttl: buf[off + 8]!,
    id: buf.readUInt16BE(off + 4),
    df: (buf.readUInt16BE(off + 6) & 0x4000) !== 0,
    totalLength,
  };
  // Ethernet padding may follow a short packet; the IP length bounds the payload.
  return { ip, next: off + ihl, end: Math.min(end, off + totalLength) };
}

function onesComplementSum(buf: Buffer, off: number, len: number, initial: number): number {
  let sum = initial;
  let i = off;
  for (; i + 1 < off + len; i += 2) sum += buf.readUInt16BE(i);
  if (i < off + len) sum += buf[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function udpChecksumValid(buf: Buffer, ipOff: number, udpOff: number, udpLen: number, available: number): boolean | null {
  const checksum = buf.readUInt16BE(udpOff + 6);
  if (checksum === 0 || available < udpLen) return null;
  let pseudo = 0;
  pseudo += buf.readUInt16BE(ipOff + 12) + buf.readUInt16BE(ipOff + 14);
  pseudo += buf.readUInt16BE(ipOff + 16) + buf.readUInt16BE(ipOff + 18);
  pseudo += IPPROTO_UDP + udpLen;
  return onesComplementSum(buf, udpOff, udpLen, pseudo) === 0xffff;
}

function parseFrom(pkt: CapturedPacket, buf: Buffer, l3: number, end: number, vxlanPorts: number[]): void {
  const ip = parseIp4(buf, l3, end);
  if (!ip) return;
  pkt.ip = ip.ip;
  if (ip.ip.proto !== IPPROTO_UDP || ip.end - ip.next < 8) return;
  const u = ip.next;
  const udpLen = buf.readUInt16BE(u + 4);
  pkt.udp = {
    srcPort: buf.readUInt16BE(u),
    dstPort: buf.readUInt16BE(u + 2),
    length: udpLen,
    checksum: buf.readUInt16BE(u + 6),
    checksumValid: udpChecksumValid(buf, l3, u, udpLen, ip.end - u),
  };
  if (!vxlanPorts.includes(pkt.udp.dstPort) || ip.end - u < 16) return;
  pkt.vxlan = { flags: buf[u + 8]!, vni: buf.readUIntBE(u + 12, 3) };
  const innerEth = parseEth(buf, u + 16, ip.end);
  if (!innerEth) return;
  pkt.inner = { eth: innerEth.eth };
  if (innerEth.eth.type === ETH_P_IP) {
    const innerIp = parseIp4(buf, innerEth.next, ip.end);
    if (innerIp) pkt.inner.ip = innerIp.ip;
  }
}

export function parsePcap(file: Buffer, opts: PcapParseOptions = {}): CapturedPacket[] {
  const vxlanPorts = opts.vxlanPorts ?? [8472, 4789];
  if (file.length < 24) throw new PcapParseError(`pcap too short (${file.length} bytes)`);
  const magicLE = file.readUInt32LE(0);
  let le: boolean;
  let nanos: boolean;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    le = true;
    nanos = magicLE === 0xa1b23c4d;
  } else {
    const magicBE = file.readUInt32BE(0);
    if (magicBE !== 0xa1b2c3d4 && magicBE !== 0xa1b23c4d) {
      throw new PcapParseError(`not a classic pcap file (magic 0x${magicLE.toString(16)})`);
    }
    le = false;
    nanos = magicBE === 0xa1b23c4d;
  }
  const u32 = (off: number): number => (le ? file.readUInt32LE(off) : file.readUInt32BE(off));
  const linkType = u32(20) & 0x0fffffff; // upper bits may carry FCS info
  const packets: CapturedPacket[] = [];
  let off = 24;
  while (off + 16 <= file.length) {
    const sec = u32(off);
    const frac = u32(off + 4);
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    const start = off + 16;
    const end = start + incl;
    // tcpdump killed mid-write leaves a partial last record; everything before it is still good.
    if (end > file.length) break;
    const pkt: CapturedPacket = {
      time: sec + frac / (nanos ? 1e9 : 1e6),
      capturedLength: incl,
      originalLength: orig,
    };
    switch (linkType) {
      case LINKTYPE_ETHERNET: {
        const eth = parseEth(file, start, end);
        if (eth) {
          pkt.eth = eth.eth;
          if (eth.eth.type === ETH_P_IP) parseFrom(pkt, file, eth.next, end, vxlanPorts);
        }
        break;
      }
      case LINKTYPE_RAW:
      case LINKTYPE_RAW_ALT:
      case LINKTYPE_IPV4:
        parseFrom(pkt, file, start, end, vxlanPorts);
        break;
      case LINKTYPE_LINUX_SLL:
        if (incl >= 16 && file.readUInt16BE(start + 14) === ETH_P_IP) parseFrom(pkt, file, start + 16, end, vxlanPorts);
        break;
      case LINKTYPE_LINUX_SLL2:
        if (incl >= 20 && file.readUInt16BE(start) === ETH_P_IP) parseFrom(pkt, file, start + 20, end, vxlanPorts);
        break;
      default:
        throw new PcapParseError(`unsupported pcap link type ${linkType}`);
    }
    packets.push(pkt);
    off = end;
  }
  return packets;
}
