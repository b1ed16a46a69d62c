import t from 'tap';
import fc from 'fast-check';
import { LearnedSources, peerForUnlistedSource } from '../../src/dataplane/source-check';
import { ENCAP_LEN, macHi, macLo, writeEncapHeader } from '../../src/dataplane/vxlan-codec';

const OWN = Uint8Array.from([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
const PEER_MAC = Uint8Array.from([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const VNI = 1;
const ip = (a: number, b: number, c: number, d: number): number => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
/** Peers: 10.5.3.0/24 → slot 4, 10.5.9.0/24 → slot 7. */
const table = {
  lookup(dst: number): number {
    const d = dst >>> 0;
    if (d >>> 8 === ip(10, 5, 3, 0) >>> 8) return 4;
    if (d >>> 8 === ip(10, 5, 9, 0) >>> 8) return 7;
    return -1;
  },
};

function frame(opts: { vni?: number; dst?: Uint8Array; src?: number; ver?: number } = {}): Uint8Array {
  const buf = new Uint8Array(ENCAP_LEN + 40 + 8);
  const off = 8;
  writeEncapHeader(buf, off, opts.vni ?? VNI, opts.dst ?? OWN, PEER_MAC);
  const p = off + ENCAP_LEN;
  buf[p] = ((opts.ver ?? 4) << 4) | 5;
  buf[p + 3] = 40;
  const src = opts.src ?? ip(10, 5, 3, 7);
  buf[p + 12] = src >>> 24;
  buf[p + 13] = (src >>> 16) & 0xff;
  buf[p + 14] = (src >>> 8) & 0xff;
  buf[p + 15] = src & 0xff;
  return buf;
}

const check = (buf: Uint8Array): number => peerForUnlistedSource(buf, 8, ENCAP_LEN + 40, VNI, macHi(OWN), macLo(OWN), table);

t.test('accepted only when VNI, our VtepMAC and a peer-owned inner source all fit', async (t) => {
  t.equal(check(frame()), 4, 'inner source 10.5.3.7 → the peer owning 10.5.3.0/24');
  t.equal(check(frame({ src: ip(10, 5, 9, 1) })), 7);
  t.equal(check(frame({ src: ip(10, 5, 4, 1) })), -1, 'inner source in no peer subnet (e.g. our own or unknown)');
  t.equal(check(frame({ vni: 2 })), -1, 'other VNI');
  t.equal(check(frame({ dst: PEER_MAC })), -1, 'inner destination MAC not ours');
  t.equal(check(frame({ dst: Uint8Array.from([255, 255, 255, 255, 255, 255]) })), -1, 'broadcast is not enough');
  t.equal(check(frame({ ver: 6 })), -1, 'not a valid IPv4 packet');
  t.equal(peerForUnlistedSource(frame(), 8, 30, VNI, macHi(OWN), macLo(OWN), table), -1, 'short frame');
});

t.test('property: never accepts a frame whose inner source no peer owns', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 120 }), (bytes) => {
      const slot = peerForUnlistedSource(bytes, 0, bytes.length, VNI, macHi(OWN), macLo(OWN), table);
      if (slot < 0) return true;
      const s = ENCAP_LEN + 12;
      const src = ((bytes[s]! << 24) | (bytes[s + 1]! << 16) | (bytes[s + 2]! << 8) | bytes[s + 3]!) >>> 0;
      return table.lookup(src) === slot && bytes[8] === OWN[0] && bytes[13] === OWN[5];
    }),
  );
});

t.test('LearnedSources: each (source, peer) reported once, moves reported, bounded', async (t) => {
  const m = new LearnedSources(8);
  t.equal(m.remember(ip(192, 0, 2, 50), 4), true, 'new');
  t.equal(m.remember(ip(192, 0, 2, 50), 4), false, 'known');
  t.equal(m.slotOf(ip(192, 0, 2, 50)), 4);
  t.equal(m.remember(ip(192, 0, 2, 50), 7), true, 'moved to another peer');
  t.equal(m.slotOf(ip(192, 0, 2, 51)), -1);
  let fresh = 0;
  for (let i = 0; i < 20; i++) if (m.remember(ip(198, 51, 100, i), 1)) fresh++;
  t.equal(fresh, 3, 'stops learning at half capacity');
  t.throws(() => new LearnedSources(6), RangeError);
});
