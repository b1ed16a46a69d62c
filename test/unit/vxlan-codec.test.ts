import t from 'tap';
import { decodeVxlanFrame, Drop, DROP_NAMES, ENCAP_LEN, macHi, macLo, writeEncapHeader } from '../../src/dataplane/vxlan-codec';

const OWN = Uint8Array.from([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const PEER = Uint8Array.from([0x0e, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
const HI = macHi(OWN);
const LO = macLo(OWN);

/** A minimal IPv4/ICMP packet of `total` bytes (header checksum not needed by the codec). */
function ipv4(total: number, ihl = 5): Uint8Array {
  const p = new Uint8Array(total);
  p[0] = 0x40 | ihl;
  p[2] = total >> 8;
  p[3] = total & 0xff;
  p[8] = 64;
  p[9] = 1;
  p.set([10, 5, 2, 0], 12);
  p.set([10, 5, 1, 0], 16);
  return p;
}

/** A frame as a kernel flannel.1 peer sends it to us, at offset `off` of a larger buffer. */
function frame(inner: Uint8Array, off = 6, vni = 1, dst: Uint8Array = OWN): { buf: Uint8Array; off: number; len: number } {
  const buf = new Uint8Array(off + ENCAP_LEN + inner.length + 4);
  writeEncapHeader(buf, off, vni, dst, PEER);
  buf.set(inner, off + ENCAP_LEN);
  return { buf, off, len: ENCAP_LEN + inner.length };
}

t.test('encodes flags, VNI, MACs and EtherType exactly as kernel vxlan', async (t) => {
  const buf = new Uint8Array(30).fill(0xee);
  writeEncapHeader(buf, 4, 0x123456, PEER, OWN);
  t.same([...buf.subarray(4, 12)], [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
  t.same([...buf.subarray(12, 18)], [...PEER], 'dst = peer VtepMAC');
  t.same([...buf.subarray(18, 24)], [...OWN], 'src = own VtepMAC');
  t.same([...buf.subarray(24, 26)], [0x08, 0x00]);
  t.equal(buf[3], 0xee, 'bytes before the header untouched');
  t.equal(buf[26], 0xee, 'bytes after the header untouched');
});

t.test('round trip: encode then decode returns the inner packet', async (t) => {
  const inner = ipv4(84);
  const { buf, off, len } = frame(inner, 42, 1);
  t.equal(decodeVxlanFrame(buf, off, len, 1, HI, LO), 84);
  t.same(buf.subarray(off + ENCAP_LEN, off + ENCAP_LEN + 84), inner);
  // VNI 0 and the largest VNI are valid too.
  const a = frame(inner, 0, 0);
  t.equal(decodeVxlanFrame(a.buf, a.off, a.len, 0, HI, LO), 84);
  const b = frame(inner, 0, 0xffffff);
  t.equal(decodeVxlanFrame(b.buf, b.off, b.len, 0xffffff, HI, LO), 84);
});

t.test('broadcast inner destination is accepted', async (t) => {
  const f = frame(ipv4(40), 0, 1, Uint8Array.from([255, 255, 255, 255, 255, 255]));
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), 40);
});

t.test('Ethernet padding after the IPv4 total length is not passed on', async (t) => {
  const inner = new Uint8Array(46);
  inner.set(ipv4(28));
  const f = frame(inner);
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), 28);
});

t.test('short frames', async (t) => {
  const f = frame(ipv4(20));
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), 20, '8+14+20 is the minimum');
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len - 1, 1, HI, LO), -Drop.short);
  t.equal(decodeVxlanFrame(f.buf, f.off, 0, 1, HI, LO), -Drop.short);
  t.equal(decodeVxlanFrame(f.buf, f.off, 8, 1, HI, LO), -Drop.short);
});

t.test('flags: I bit required, nothing else set, reserved bytes zero', async (t) => {
  const cases: Array<[number, number]> = [
    [0, 0x00], // I bit missing
    [0, 0x0c], // I plus another flag
    [0, 0x88], // GBP-style bit
    [1, 0x01], // reserved
    [3, 0x01], // reserved
    [7, 0x01], // reserved byte after the VNI
  ];
  for (const [i, v] of cases) {
    const f = frame(ipv4(60));
    f.buf[f.off + i] = v;
    t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.badFlags, `byte ${i} = 0x${v.toString(16)}`);
  }
});

t.test('wrong VNI', async (t) => {
  const f = frame(ipv4(60), 0, 2);
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.badVni);
  const g = frame(ipv4(60), 0, 0x000101);
  t.equal(decodeVxlanFrame(g.buf, g.off, g.len, 1, HI, LO), -Drop.badVni, 'upper VNI bytes count');
});

t.test('wrong inner destination MAC', async (t) => {
  for (let i = 0; i < 6; i++) {
    const mac = Uint8Array.from(OWN);
    mac[i] ^= 0x01;
    const f = frame(ipv4(60), 0, 1, mac);
    t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.badDstMac, `byte ${i} differs`);
  }
  const f = frame(ipv4(60), 0, 1, PEER);
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.badDstMac, "sender's own MAC");
});

t.test('non-IPv4 inner frames', async (t) => {
  for (const type of [
    [0x86, 0xdd],
    [0x08, 0x06],
    [0x81, 0x00],
    [0x00, 0x00],
  ]) {
    const f = frame(ipv4(60));
    f.buf.set(type, f.off + 20);
    t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.notIpv4, `EtherType ${type.join(',')}`);
  }
});

t.test('bad IPv4 header', async (t) => {
  const bad: Array<[string, (p: Uint8Array) => void, number?]> = [
    ['version 6', (p) => (p[0] = 0x65)],
    ['version 0', (p) => (p[0] = 0x05)],
    ['IHL 4', (p) => (p[0] = 0x44)],
    ['IHL beyond total length', (p) => (p[0] = 0x4f), 40],
    ['total length < IHL', (p) => ((p[2] = 0), (p[3] = 19))],
    ['total length 0', (p) => ((p[2] = 0), (p[3] = 0))],
    ['total length > frame', (p) => ((p[2] = 0), (p[3] = 61))],
  ];
  for (const [name, mutate, size] of bad) {
    const inner = ipv4(size ?? 60);
    mutate(inner);
    const f = frame(inner);
    t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), -Drop.badIpv4Header, name);
  }
  const opts = ipv4(60, 15);
  const f = frame(opts);
  t.equal(decodeVxlanFrame(f.buf, f.off, f.len, 1, HI, LO), 60, 'IHL 15 with enough length is fine');
});

t.test('every drop reason has a distinct name', async (t) => {
  const names = DROP_NAMES.slice(1);
  t.equal(new Set(names).size, names.length);
  t.equal(DROP_NAMES[Drop.unknownSource], 'unknownSource');
  t.equal(DROP_NAMES[Drop.noRoute], 'noRoute');
  t.equal(DROP_NAMES[Drop.tunWriteError], 'tunWriteError');
});
