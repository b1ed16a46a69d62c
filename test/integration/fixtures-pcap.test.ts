// The fixtures' pcap reader and ping parser on hand-built input: interop assertions are only as
// good as the decoder under them.
import t from 'tap';
import { parsePcap, PcapParseError } from '../../netns-fixtures/pcap';
import { parsePing } from '../../netns-fixtures/testbed';

function mac(s: string): Buffer {
  return Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
}

function ip(s: string): Buffer {
  return Buffer.from(s.split('.').map(Number));
}

function csum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function ipv4(src: string, dst: string, proto: number, payload: Buffer, df = false): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(0x1234, 4);
  h.writeUInt16BE(df ? 0x4000 : 0, 6);
  h[8] = 64;
  h[9] = proto;
  ip(src).copy(h, 12);
  ip(dst).copy(h, 16);
  h.writeUInt16BE(~csum(h) & 0xffff, 10);
  return Buffer.concat([h, payload]);
}

function udp(src: string, dst: string, sport: number, dport: number, payload: Buffer, withChecksum: boolean): Buffer {
  const u = Buffer.alloc(8);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(8 + payload.length, 4);
  const seg = Buffer.concat([u, payload]);
  if (withChecksum) {
    const pseudo = Buffer.concat([ip(src), ip(dst), Buffer.from([0, 17]), Buffer.from([seg.length >> 8, seg.length & 255])]);
    let c = ~csum(seg, csum(pseudo)) & 0xffff;
    if (c === 0) c = 0xffff;
    seg.writeUInt16BE(c, 6);
  }
  return seg;
}

function eth(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

function vxlanFrame(withChecksum: boolean): Buffer {
  const icmp = Buffer.from([8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4]);
  const inner = eth('0e:11:22:33:44:02', '0e:11:22:33:44:01', 0x0800, ipv4('10.5.72.10', '10.5.73.10', 1, icmp));
  const vx = Buffer.concat([Buffer.from([0x08, 0, 0, 0, 0, 0, 1, 0]), inner]);
  const outerUdp = udp('192.0.2.11', '192.0.2.12', 40000, 8472, vx, withChecksum);
  return eth('aa:aa:aa:aa:aa:02', 'aa:aa:aa:aa:aa:01', 0x0800, ipv4('192.0.2.11', '192.0.2.12', 17, outerUdp));
}

function pcap(linkType: number, frames: Buffer[], le = true, truncateLast = 0): Buffer {
  const w32 = (b: Buffer, v: number, off: number): number => (le ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
  const g = Buffer.alloc(24);
  w32(g, 0xa1b2c3d4, 0);
  g.writeUInt16LE(2, 4);
  g.writeUInt16LE(4, 6);
  w32(g, 262144, 16);
  w32(g, linkType, 20);
  const parts: Buffer[] = [g];
  frames.forEach((f, i) => {
    const r = Buffer.alloc(16);
    w32(r, 1700000000 + i, 0);
    w32(r, 500000, 4);
    w32(r, f.length, 8);
    w32(r, f.length, 12);
    parts.push(r, f);
  });
  const all = Buffer.concat(parts);
  return truncateLast ? all.subarray(0, all.length - truncateLast) : all;
}

t.test('VXLAN over Ethernet, checksummed and zero checksum', async (t) => {
  const pkts = parsePcap(pcap(1, [vxlanFrame(true), vxlanFrame(false)]));
  t.equal(pkts.length, 2);
  const [a, b] = pkts as [(typeof pkts)[0], (typeof pkts)[0]];
  t.equal(a.time, 1700000000.5);
  t.same(a.eth, { dst: 'aa:aa:aa:aa:aa:02', src: 'aa:aa:aa:aa:aa:01', type: 0x0800 });
  t.match(a.ip, { src: '192.0.2.11', dst: '192.0.2.12', proto: 17, ttl: 64, df: false, id: 0x1234 });
  t.match(a.udp, { srcPort: 40000, dstPort: 8472, checksumValid: true });
  t.not(a.udp!.checksum, 0);
  t.same(a.vxlan, { flags: 0x08, vni: 1 });
  t.same(a.inner!.eth, { dst: '0e:11:22:33:44:02', src: '0e:11:22:33:44:01', type: 0x0800 });
  t.match(a.inner!.ip, { src: '10.5.72.10', dst: '10.5.73.10', proto: 1 });
  t.equal(b.udp!.checksum, 0);
  t.equal(b.udp!.checksumValid, null, 'zero checksum = not computed');
});

t.test('a corrupted checksum is reported invalid', async (t) => {
  const f = vxlanFrame(true);
  f[f.length - 1] ^= 0xff;
  t.equal(parsePcap(pcap(1, [f]))[0]!.udp!.checksumValid, false);
});

t.test('other link types, big-endian files, truncated tail', async (t) => {
  const ipPkt = vxlanFrame(true).subarray(14);
  const sll2 = Buffer.concat([Buffer.from([0x08, 0x00]), Buffer.alloc(18)]);
  t.equal(parsePcap(pcap(276, [Buffer.concat([sll2, ipPkt])]))[0]!.vxlan!.vni, 1, 'SLL2 (-i any)');
  t.equal(parsePcap(pcap(101, [ipPkt]))[0]!.inner!.ip!.dst, '10.5.73.10', 'raw IP (TUN)');
  t.equal(parsePcap(pcap(1, [vxlanFrame(true)], false))[0]!.udp!.dstPort, 8472, 'big-endian');
  t.equal(parsePcap(pcap(1, [vxlanFrame(true), vxlanFrame(true)], true, 10)).length, 1, 'partial last record dropped');
  t.equal(parsePcap(pcap(1, [vxlanFrame(true)]), { vxlanPorts: [4789] })[0]!.vxlan, undefined, 'VXLAN only on given ports');
  t.throws(() => parsePcap(Buffer.alloc(24)), PcapParseError);
  t.throws(() => parsePcap(pcap(999, [ipPkt])), /unsupported pcap link type 999/);
});

t.test('ping summary', async (t) => {
  const ok = parsePing(
    '--- 10.5.73.10 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\nrtt min/avg/max/mdev = 0.071/0.093/0.120/0.020 ms\n',
  );
  t.match(ok, { sent: 3, received: 3, lossPercent: 0, minMs: 0.071, avgMs: 0.093, maxMs: 0.12, mdevMs: 0.02 });
  const lost = parsePing('--- x ---\n2 packets transmitted, 0 received, 100% packet loss, time 1010ms\n\n');
  t.match(lost, { sent: 2, received: 0, lossPercent: 100 });
  t.equal(lost.avgMs, undefined);
  t.throws(() => parsePing('ping: connect: Network is unreachable'));
});
