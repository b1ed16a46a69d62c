// Property tests of the VXLAN codec (fast-check): encode→decode round trips, decode is total over
// arbitrary bytes and agrees with a declarative model of the checks, and single-byte mutations of a
// valid frame's header region are accepted identically or dropped with exactly the expected reason.
import fc from 'fast-check';
import t from 'tap';
import {
  decodeVxlanFrame,
  Drop,
  DROP_NAMES,
  ENCAP_LEN,
  macHi,
  macLo,
  MIN_FRAME_LEN,
  writeEncapHeader,
} from '../../src/dataplane/vxlan-codec';

const RUNS = Number(process.env.TSFLANNELD_PROPERTY_RUNS ?? 2000);
/** Reasons the decoder may return (the others belong to the loop: source, routing, I/O). */
const DECODE_REASONS = new Set<number>([Drop.short, Drop.badFlags, Drop.badVni, Drop.badDstMac, Drop.notIpv4, Drop.badIpv4Header]);
const BROADCAST = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

const vniArb = fc.integer({ min: 0, max: 0xffffff });
/** Unicast MACs like a VtepMAC (the receiver's own MAC is never multicast). */
const unicastMacArb = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => {
  b[0] = b[0]! & 0xfe;
  return b;
});
const anyMacArb = fc.uint8Array({ minLength: 6, maxLength: 6 });

/** A well-formed IPv4 packet: version 4, IHL 5..15, total length = its size, random everything else. */
const ipv4Arb = fc
  .record({
    ihlWords: fc.integer({ min: 5, max: 15 }),
    payloadLen: fc.integer({ min: 0, max: 1600 }),
    seed: fc.uint8Array({ minLength: 64, maxLength: 64, size: 'max' }),
  })
  .map(({ ihlWords, payloadLen, seed }) => {
    const total = ihlWords * 4 + payloadLen;
    const p = new Uint8Array(total);
    for (let i = 0; i < total; i++) p[i] = seed[i % seed.length]! ^ (i * 31);
    p[0] = 0x40 | ihlWords;
    p[2] = total >> 8;
    p[3] = total & 0xff;
    return p;
  });

interface Frame {
  buf: Uint8Array;
  off: number;
  /** Datagram length (header + inner + padding). */
  len: number;
  inner: Uint8Array;
}

const frameArb = fc
  .record({
    vni: vniArb,
    own: unicastMacArb,
    src: anyMacArb,
    toBroadcast: fc.boolean(),
    inner: ipv4Arb,
    off: fc.integer({ min: 0, max: 96 }),
    padding: fc.integer({ min: 0, max: 40 }),
  })
  .map(({ vni, own, src, toBroadcast, inner, off, padding }) => {
    const len = ENCAP_LEN + inner.length + padding;
    const buf = new Uint8Array(off + len + 8).fill(0xa5);
    writeEncapHeader(buf, off, vni, toBroadcast ? BROADCAST : own, src);
    buf.set(inner, off + ENCAP_LEN);
    return { vni, own, src, toBroadcast, frame: { buf, off, len, inner } };
  });

/** The checks the codec must make, written as plain conditions in kernel vxlan_rcv order. */
function model(b: Uint8Array, off: number, len: number, vni: number, own: Uint8Array): number {
  const at = (i: number): number => b[off + i]!;
  if (len < ENCAP_LEN + 20) return -Drop.short;
  if (at(0) !== 0x08 || at(1) !== 0 || at(2) !== 0 || at(3) !== 0 || at(7) !== 0) return -Drop.badFlags;
  if (at(4) * 65536 + at(5) * 256 + at(6) !== vni) return -Drop.badVni;
  const dst = [0, 1, 2, 3, 4, 5].map((i) => at(8 + i));
  const isOwn = dst.every((x, i) => x === own[i]);
  const isBroadcast = dst.every((x) => x === 0xff);
  if (!isOwn && !isBroadcast) return -Drop.badDstMac;
  if (at(20) !== 0x08 || at(21) !== 0x00) return -Drop.notIpv4;
  const version = at(22) >> 4;
  const ihl = (at(22) & 0x0f) * 4;
  const total = at(24) * 256 + at(25);
  if (version !== 4 || ihl < 20 || total < ihl || total > len - ENCAP_LEN) return -Drop.badIpv4Header;
  return total;
}

function decode(f: Frame, vni: number, own: Uint8Array): number {
  return decodeVxlanFrame(f.buf, f.off, f.len, vni, macHi(own), macLo(own));
}

function knownResult(r: number, len: number): boolean {
  return Number.isInteger(r) && (r < 0 ? DECODE_REASONS.has(-r) && DROP_NAMES[-r] !== '' : r >= 20 && r <= len - ENCAP_LEN);
}

t.test('encode → decode round trip returns the inner packet untouched', async (t) => {
  fc.assert(
    fc.property(frameArb, ({ vni, own, src, toBroadcast, frame }) => {
      const before = Uint8Array.from(frame.buf);
      const r = decode(frame, vni, own);
      if (r !== frame.inner.length) return false;
      // The header reads back as written: flags, VNI, MACs, EtherType.
      const h = frame.buf.subarray(frame.off, frame.off + ENCAP_LEN);
      const dst = toBroadcast ? BROADCAST : own;
      const expect = [0x08, 0, 0, 0, vni >> 16, (vni >> 8) & 0xff, vni & 0xff, 0, ...dst, ...src, 0x08, 0x00];
      if (!expect.every((x, i) => h[i] === x)) return false;
      // Decoding is read-only and the inner packet sits right after the header.
      if (!before.every((x, i) => frame.buf[i] === x)) return false;
      return frame.inner.every((x, i) => frame.buf[frame.off + ENCAP_LEN + i] === x);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} random frames`);
});

t.test('writeEncapHeader touches exactly its 22 bytes', async (t) => {
  fc.assert(
    fc.property(
      vniArb,
      anyMacArb,
      anyMacArb,
      fc.integer({ min: 0, max: 64 }),
      fc.integer({ min: 0, max: 255 }),
      (vni, dst, src, off, fill) => {
        const buf = new Uint8Array(off + ENCAP_LEN + 16).fill(fill);
        writeEncapHeader(buf, off, vni, dst, src);
        for (let i = 0; i < buf.length; i++) if ((i < off || i >= off + ENCAP_LEN) && buf[i] !== fill) return false;
        return true;
      },
    ),
    { numRuns: RUNS },
  );
  t.pass();
});

/**
 * Arbitrary bytes, made valid up to a random depth (mode 0 = raw … 5 = plausible IPv4 header) so every
 * check is reached: random bytes alone would almost never get past the flags.
 */
function makePlausible(buf: Uint8Array, off: number, len: number, mode: number, vni: number, own: Uint8Array): void {
  const put = (i: number, v: number): void => {
    if (i < len) buf[off + i] = v;
  };
  if (mode >= 1) {
    [0x08, 0, 0, 0].forEach((v, i) => put(i, v));
    put(7, 0);
  }
  if (mode >= 2) {
    put(4, vni >> 16);
    put(5, (vni >> 8) & 0xff);
    put(6, vni & 0xff);
  }
  if (mode >= 3) own.forEach((v, i) => put(8 + i, v));
  if (mode >= 4) {
    put(20, 0x08);
    put(21, 0x00);
  }
  if (mode >= 5 && len >= ENCAP_LEN + 20) {
    const ihl = 5 + ((buf[off + ENCAP_LEN]! & 0x0f) % 11);
    put(ENCAP_LEN, 0x40 | ihl);
    const room = len - ENCAP_LEN - ihl * 4;
    if (room >= 0) {
      const total = ihl * 4 + (buf[off + ENCAP_LEN + 2]! % (room + 1));
      put(ENCAP_LEN + 2, total >> 8);
      put(ENCAP_LEN + 3, total & 0xff);
    }
  }
}

t.test('decode never throws on arbitrary bytes and returns a length or a known drop reason (= the model)', async (t) => {
  const seen = new Map<number, number>();
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 200, size: 'max' }),
      fc.integer({ min: 0, max: 8 }),
      vniArb,
      unicastMacArb,
      fc.integer({ min: 0, max: 5 }),
      (bytes, off, vni, own, mode) => {
        const buf = new Uint8Array(off + bytes.length);
        buf.set(bytes, off);
        makePlausible(buf, off, bytes.length, mode, vni, own);
        let r: number;
        try {
          r = decodeVxlanFrame(buf, off, bytes.length, vni, macHi(own), macLo(own));
        } catch {
          return false;
        }
        seen.set(r < 0 ? r : 0, (seen.get(r < 0 ? r : 0) ?? 0) + 1);
        return knownResult(r, bytes.length) && r === model(buf, off, bytes.length, vni, own);
      },
    ),
    { numRuns: RUNS * 5 },
  );
  const outcomes = [...seen].map(([k, n]) => `${k === 0 ? 'accepted' : DROP_NAMES[-k]}=${n}`).join(' ');
  t.comment(outcomes);
  // The generator reaches every decode outcome, so the property above covers each branch.
  for (const reason of DECODE_REASONS) t.ok(seen.has(-reason), `reached ${DROP_NAMES[reason]}`);
  t.ok(seen.has(0), 'reached accepted');
});

/** What a one-byte change at header index i (0-based from the VXLAN header) must do to a valid frame. */
function expectedAfterMutation(i: number, f: Frame, mutated: Uint8Array, own: Uint8Array): number | 'same' {
  if (i <= 3 || i === 7) return -Drop.badFlags;
  if (i <= 6) return -Drop.badVni;
  if (i <= 13) {
    const dst = mutated.subarray(f.off + 8, f.off + 14);
    return dst.every((x, k) => x === own[k]) || dst.every((x) => x === 0xff) ? 'same' : -Drop.badDstMac;
  }
  if (i <= 19) return 'same'; // the inner source MAC is not checked
  if (i <= 21) return -Drop.notIpv4;
  const ip = f.off + ENCAP_LEN;
  if (i === 22 || i === 24 || i === 25) {
    const version = mutated[ip]! >> 4;
    const ihl = (mutated[ip]! & 0x0f) * 4;
    const total = mutated[ip + 2]! * 256 + mutated[ip + 3]!;
    if (version !== 4 || ihl < 20 || total < ihl || total > f.len - ENCAP_LEN) return -Drop.badIpv4Header;
    return total;
  }
  return 'same'; // TOS, ID, flags/fragment, TTL, protocol, checksum, addresses, options: not the codec's business
}

t.test('single-byte mutations of the header region: accepted identically or dropped with the right reason', async (t) => {
  fc.assert(
    fc.property(
      frameArb,
      fc.integer({ min: 0, max: ENCAP_LEN + 20 - 1 }),
      fc.integer({ min: 1, max: 255 }),
      ({ vni, own, frame }, i, xor) => {
        const original = decode(frame, vni, own);
        const buf = Uint8Array.from(frame.buf);
        buf[frame.off + i] = buf[frame.off + i]! ^ xor;
        const mutated: Frame = { ...frame, buf };
        const r = decode(mutated, vni, own);
        const want = expectedAfterMutation(i, frame, buf, own);
        return want === 'same' ? r === original : r === want;
      },
    ),
    { numRuns: RUNS * 5 },
  );
  t.pass();
});

t.test('multi-byte mutations and truncations always agree with the model', async (t) => {
  fc.assert(
    fc.property(
      frameArb,
      fc.array(fc.tuple(fc.integer({ min: 0, max: ENCAP_LEN + 20 - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.integer({ min: 0, max: 2000 }),
      fc.boolean(),
      ({ vni, own, frame }, writes, cut, truncate) => {
        const buf = Uint8Array.from(frame.buf);
        for (const [i, v] of writes) buf[frame.off + i] = v;
        const len = truncate ? Math.min(frame.len, cut) : frame.len;
        const r = decodeVxlanFrame(buf, frame.off, len, vni, macHi(own), macLo(own));
        return knownResult(r, len) && r === model(buf, frame.off, len, vni, own);
      },
    ),
    { numRuns: RUNS * 5 },
  );
  t.pass();
});

t.test('IPv4 length lies: total length beyond the datagram or below IHL is dropped, padding is cut', async (t) => {
  fc.assert(
    fc.property(
      frameArb,
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: -2, max: 2 }),
      ({ vni, own, frame }, any, pick, delta) => {
        const buf = Uint8Array.from(frame.buf);
        const ip = frame.off + ENCAP_LEN;
        // Mostly right at the edges: around IHL and around the bytes actually received.
        const edges = [any, ((buf[ip]! & 0x0f) * 4 + delta) & 0xffff, (frame.len - ENCAP_LEN + delta) & 0xffff, frame.inner.length];
        const total = edges[pick]!;
        buf[ip + 2] = total >> 8;
        buf[ip + 3] = total & 0xff;
        const ihl = (buf[ip]! & 0x0f) * 4;
        const r = decodeVxlanFrame(buf, frame.off, frame.len, vni, macHi(own), macLo(own));
        if (total < ihl || total > frame.len - ENCAP_LEN) return r === -Drop.badIpv4Header;
        return r === total;
      },
    ),
    { numRuns: RUNS * 2 },
  );
  t.equal(MIN_FRAME_LEN, ENCAP_LEN + 20, 'minimum frame is VXLAN + Ethernet + a bare IPv4 header');
});
