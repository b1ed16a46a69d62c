// The native offload code (native/src/offload.cc) on plain buffers: TSO/USO split, GRO-style coalescing
// into GSO writes, and their round trip, checked against an independent RFC 1071 checksum written here.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { loadOffloadTestNative } from '../../src/dataplane/native';
import { effectiveFeatures, OFFLOAD_RUNGS, parseOffloadRequest, requestedFeatures, rungOf } from '../../src/dataplane/offload';

const native = loadOffloadTestNative();

// ---- independent reference implementation -------------------------------------------------------------

/** One's complement sum of big-endian 16-bit words (odd tail padded with zero), folded, not complemented. */
function sum16(b: Uint8Array, start = 0, end = b.length, init = 0): number {
  let s = init;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function pseudo(ip: Uint8Array, proto: number, l4len: number): number {
  return sum16(ip, 12, 20, proto + l4len);
}

const be16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;
const be32 = (b: Uint8Array, o: number): number => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = (v >> 8) & 0xff;
  b[o + 1] = v & 0xff;
};
const put32 = (b: Uint8Array, o: number, v: number): void => {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
};

function ipHeaderOk(ip: Uint8Array): boolean {
  return sum16(ip, 0, (ip[0]! & 15) * 4) === 0xffff;
}

/** Full L4 checksum check of an IPv4 TCP/UDP packet. */
function l4ChecksumOk(ip: Uint8Array): boolean {
  const ihl = (ip[0]! & 15) * 4;
  const total = be16(ip, 2);
  return sum16(ip, ihl, total, pseudo(ip, ip[9]!, total - ihl)) === 0xffff;
}

interface TcpOpts {
  payload: Uint8Array;
  seq?: number;
  ack?: number;
  flags?: number;
  id?: number;
  df?: boolean;
  src?: number[];
  dst?: number[];
  sport?: number;
  dport?: number;
  /** TCP option bytes (multiple of 4). */
  options?: Uint8Array;
  /** 'partial': the field holds the pseudo-header sum, as TSO output from the kernel; 'full': valid. */
  csum?: 'partial' | 'full';
}

function tcpPacket(o: TcpOpts): Uint8Array {
  const opts = o.options ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  const total = 20 + thl + o.payload.length;
  const p = new Uint8Array(total);
  p[0] = 0x45;
  put16(p, 2, total);
  put16(p, 4, o.id ?? 0x1234);
  p[6] = o.df === false ? 0 : 0x40;
  p[8] = 64;
  p[9] = 6;
  p.set(o.src ?? [10, 5, 1, 2], 12);
  p.set(o.dst ?? [10, 5, 2, 3], 16);
  put16(p, 10, 0xffff - sum16(p, 0, 20));
  put16(p, 20, o.sport ?? 40000);
  put16(p, 22, o.dport ?? 5201);
  put32(p, 24, o.seq ?? 1000);
  put32(p, 28, o.ack ?? 77);
  p[32] = (thl / 4) << 4;
  p[33] = o.flags ?? 0x18;
  put16(p, 34, 502);
  p.set(opts, 40);
  p.set(o.payload, 20 + thl);
  const ps = pseudo(p, 6, total - 20);
  put16(p, 36, o.csum === 'partial' ? ps : 0xffff - sum16(p, 20, total, ps));
  return p;
}

function udpPacket(payload: Uint8Array, opts: { csum?: 'partial' | 'full' | 'zero'; id?: number; sport?: number } = {}): Uint8Array {
  const total = 28 + payload.length;
  const p = new Uint8Array(total);
  p[0] = 0x45;
  put16(p, 2, total);
  put16(p, 4, opts.id ?? 7);
  p[6] = 0x40;
  p[8] = 64;
  p[9] = 17;
  p.set([10, 5, 1, 2], 12);
  p.set([10, 5, 2, 3], 16);
  put16(p, 10, 0xffff - sum16(p, 0, 20));
  put16(p, 20, opts.sport ?? 5000);
  put16(p, 22, 5201);
  put16(p, 24, total - 20);
  p.set(payload, 28);
  const ps = pseudo(p, 17, total - 20);
  if (opts.csum === 'partial') put16(p, 26, ps);
  else if (opts.csum !== 'zero') put16(p, 26, 0xffff - sum16(p, 20, total, ps) || 0xffff);
  return p;
}

const TS_OPTION = Uint8Array.from([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]);
const PREFIX = Uint8Array.from({ length: 22 }, (_, i) => i + 1);

function split(pkt: Uint8Array, gsoType: number, gsoSize: number, prefix = PREFIX): Uint8Array[] {
  const out = new Uint8Array(pkt.length * 2 + 64 * 200);
  const lens = new Int32Array(4096);
  const n = native.offloadSplit(pkt, gsoType, gsoSize, prefix, out, lens);
  if (n < 0) return [];
  const segs: Uint8Array[] = [];
  let off = 0;
  for (let i = 0; i < n; i++) {
    segs.push(out.slice(off, off + lens[i]!));
    off += lens[i]!;
  }
  return segs;
}

interface Write {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  pkt: Uint8Array;
}

function coalesce(pkts: Uint8Array[], trusted: boolean, maxPacket = 1500, uso = true, refuseGso = false): Write[] {
  const total = pkts.reduce((a, p) => a + p.length, 0);
  const buf = new Uint8Array(total);
  const lens = new Int32Array(pkts.length);
  let off = 0;
  pkts.forEach((p, i) => {
    buf.set(p, off);
    off += p.length;
    lens[i] = p.length;
  });
  const out = new Uint8Array(2 * total + (pkts.length + 64) * 64);
  const outLens = new Int32Array(pkts.length + 64);
  const n = native.offloadCoalesce(buf, lens, trusted, maxPacket, uso, out, outLens, refuseGso);
  const writes: Write[] = [];
  off = 0;
  for (let i = 0; i < n; i++) {
    const r = out.subarray(off, off + outLens[i]!);
    const le16 = (o: number): number => r[o]! | (r[o + 1]! << 8);
    writes.push({
      flags: r[0]!,
      gsoType: r[1]!,
      hdrLen: le16(2),
      gsoSize: le16(4),
      csumStart: le16(6),
      csumOffset: le16(8),
      pkt: r.slice(10),
    });
    off += outLens[i]!;
  }
  return writes;
}

const strip = (segs: Uint8Array[]): Uint8Array[] => segs.map((s) => s.slice(22));

// ---- tests --------------------------------------------------------------------------------------------

t.test('native checksum equals the RFC 1071 reference for any length and alignment', async (t) => {
  const data = randomBytes(70000);
  for (const [start, len] of [
    [0, 0],
    [0, 1],
    [1, 1],
    [0, 2],
    [3, 7],
    [1, 33],
    [5, 64],
    [2, 1401],
    [0, 65535],
    [7, 65535],
  ] as const) {
    const v = new Uint8Array(data.buffer, data.byteOffset + start, len);
    t.equal(native.offloadChecksum(v), sum16(v), `start ${start} len ${len}`);
  }
  const ones = new Uint8Array(4096).fill(0xff);
  t.equal(native.offloadChecksum(ones), 0xffff, 'all ones (end-around carries)');
});

t.test('TSO split: lengths, IDs, seq, FIN/PSH/CWR placement and full checksums', async (t) => {
  const payload = randomBytes(10000);
  const mss = 1398;
  const pkt = tcpPacket({ payload, seq: 0xfffff000, id: 0xfffe, flags: 0x80 | 0x10 | 0x08 | 0x01, options: TS_OPTION, csum: 'partial' });
  const segs = split(pkt, 1, mss);
  t.equal(segs.length, Math.ceil(payload.length / mss));
  segs.forEach((s, i) => {
    t.same(s.subarray(0, 22), PREFIX, `seg ${i}: header template copied`);
    const ip = s.subarray(22);
    const chunk = Math.min(mss, payload.length - i * mss);
    t.equal(be16(ip, 2), 52 + chunk, `seg ${i}: IP total length`);
    t.equal(ip.length, 52 + chunk);
    t.equal(be16(ip, 4), (0xfffe + i) & 0xffff, `seg ${i}: IP ID + i (wrapping)`);
    t.ok(ipHeaderOk(ip), `seg ${i}: IP header checksum`);
    t.ok(l4ChecksumOk(ip), `seg ${i}: TCP checksum`);
    t.equal(be32(ip, 24), (0xfffff000 + i * mss) >>> 0, `seg ${i}: seq`);
    const last = i === segs.length - 1;
    t.equal(ip[33]! & 0x09, last ? 0x09 : 0, `seg ${i}: FIN/PSH only on the last`);
    t.equal(ip[33]! & 0x80, i === 0 ? 0x80 : 0, `seg ${i}: CWR only on the first`);
    t.same(ip.subarray(40, 52), TS_OPTION, `seg ${i}: options`);
    t.same(ip.subarray(52), payload.subarray(i * mss, i * mss + chunk), `seg ${i}: payload`);
  });
});

t.test('split then coalesce round-trips a TCP super-packet into one GSO write', async (t) => {
  const payload = randomBytes(44 * 1398 - 17);
  const orig = tcpPacket({ payload, options: TS_OPTION, csum: 'partial', flags: 0x18 });
  const segs = strip(split(orig, 1, 1398));
  t.equal(segs.length, 44);
  for (const trusted of [false, true]) {
    const w = coalesce(
      segs.map((s) => s.slice()),
      trusted,
    );
    t.equal(w.length, 1, `trusted=${trusted}: one write`);
    const g = w[0]!;
    t.same(
      { flags: g.flags, gsoType: g.gsoType, hdrLen: g.hdrLen, gsoSize: g.gsoSize, csumStart: g.csumStart, csumOffset: g.csumOffset },
      { flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 },
      'virtio header NEEDS_CSUM TCPV4',
    );
    t.same(g.pkt, orig, 'identical to the original (partial checksum = pseudo-header sum over the total length)');
    t.ok(ipHeaderOk(g.pkt));
  }
});

t.test('USO split then coalesce round-trips a UDP super-packet', async (t) => {
  const payload = randomBytes(1300 * 10 + 5);
  const orig = udpPacket(payload, { csum: 'partial' });
  const segs = strip(split(orig, 5, 1300));
  t.equal(segs.length, 11);
  segs.forEach((ip, i) => {
    t.equal(be16(ip, 24), 8 + Math.min(1300, payload.length - i * 1300), `seg ${i}: UDP length`);
    t.ok(l4ChecksumOk(ip), `seg ${i}: UDP checksum`);
    t.ok(ipHeaderOk(ip));
  });
  const w = coalesce(segs, false);
  t.equal(w.length, 1);
  t.same([w[0]!.flags, w[0]!.gsoType, w[0]!.hdrLen, w[0]!.gsoSize, w[0]!.csumOffset], [1, 5, 28, 1300, 6]);
  t.same(w[0]!.pkt, orig);
  const noUso = coalesce(strip(split(orig, 5, 1300)), false, 1500, false);
  t.equal(noUso.length, 11, 'without USO every datagram is written alone');
});

t.test('an untrusted segment with a bad checksum is never merged; trusted trains are merged as is', async (t) => {
  const orig = tcpPacket({ payload: randomBytes(8 * 1000), csum: 'partial', flags: 0x10 });
  const segs = strip(split(orig, 1, 1000));
  segs[3]![100] ^= 0xff;
  const w = coalesce(
    segs.map((s) => s.slice()),
    false,
  );
  t.same(
    w.map((x) => be32(x.pkt, 24) - 1000),
    [0, 3000, 4000],
    'segments 0-2 merged, 3 alone, 4-7 merged',
  );
  t.same(
    w.map((x) => x.gsoType),
    [1, 0, 1],
  );
  t.equal(w[1]!.flags, 0, 'the bad one goes to the kernel unflagged, which will drop it');
  t.equal(
    coalesce(
      segs.map((s) => s.slice()),
      true,
    ).length,
    1,
    'covered by a verified outer checksum: merged',
  );
});

t.test('coalescing rules: contiguous seq, same flow and ack, equal sizes, PSH ends a packet', async (t) => {
  const p = (seq: number, len: number, extra: Partial<TcpOpts> = {}): Uint8Array =>
    tcpPacket({ payload: randomBytes(len), seq, csum: 'full', flags: 0x10, ...extra });
  const gap = coalesce([p(0, 1000), p(1000, 1000), p(3000, 1000), p(4000, 1000)], false);
  t.same(
    gap.map((w) => [be32(w.pkt, 24), be16(w.pkt, 2)]),
    [
      [0, 2040],
      [3000, 2040],
    ],
    'a gap starts a new packet',
  );
  const flows = coalesce([p(0, 1000), p(0, 1000, { sport: 1 }), p(1000, 1000), p(1000, 1000, { sport: 1 })], false);
  t.equal(flows.length, 4, 'interleaved flows are written in order, unmerged');
  const acks = coalesce([p(0, 1000), p(1000, 1000, { ack: 78 })], false);
  t.equal(acks.length, 2, 'different ACK numbers');
  const short = coalesce([p(0, 1000), p(1000, 500), p(1500, 1000)], false);
  t.same(
    short.map((w) => be16(w.pkt, 2) - 40),
    [1500, 1000],
    'a short segment is the tail',
  );
  const psh = coalesce([p(0, 1000), p(1000, 1000, { flags: 0x18 }), p(2000, 1000)], false);
  t.same(
    psh.map((w) => w.pkt[33]),
    [0x18, 0x10],
    'PSH closes the packet and stays on it',
  );
  const fin = coalesce([p(0, 1000), p(1000, 1000, { flags: 0x11 })], false);
  t.same(
    fin.map((w) => w.gsoType),
    [0, 0],
    'FIN is never merged',
  );
  const noDf = coalesce([p(0, 1000, { df: false, id: 5 }), p(1000, 1000, { df: false, id: 9 })], false);
  t.equal(noDf.length, 2, 'without DF the IP IDs must be consecutive');
  const opts = coalesce(
    [p(0, 1000, { options: TS_OPTION }), p(1000, 1000, { options: Uint8Array.from([1, 1, 8, 10, 0, 0, 0x12, 0x35, 0, 0, 0x56, 0x78]) })],
    false,
  );
  t.equal(opts.length, 2, 'different TCP options (timestamps)');
  const merged = coalesce([p(0, 1000), p(1000, 1000), p(2000, 1000)], false)[0]!;
  t.equal(be16(merged.pkt, 2), 3040);
  t.ok(ipHeaderOk(merged.pkt), 'merged IP header checksum');
  t.equal(be16(merged.pkt, 36), pseudo(merged.pkt, 6, 3020), 'TCP field = pseudo-header sum of the merged length');
});

t.test('single packets get the right checksum flags; oversized TCP becomes one GSO write', async (t) => {
  const partial = coalesce([tcpPacket({ payload: randomBytes(100), csum: 'partial', flags: 0x11 })], false)[0]!;
  t.same([partial.flags, partial.gsoType, partial.csumStart, partial.csumOffset], [1, 0, 20, 16], 'partial inner checksum → NEEDS_CSUM');
  const full = tcpPacket({ payload: randomBytes(100), csum: 'full', flags: 0x11 });
  t.equal(coalesce([full], true)[0]!.flags, 2, 'trusted (outer checksum verified) → DATA_VALID');
  t.equal(coalesce([full], false)[0]!.flags, 0, 'untrusted → the kernel verifies');
  const zero = coalesce([udpPacket(randomBytes(10), { csum: 'zero' })], false, 1500, false)[0]!;
  t.equal(zero.flags, 0, 'UDP without checksum, untrusted');
  const icmp = new Uint8Array(28);
  icmp[0] = 0x45;
  put16(icmp, 2, 28);
  icmp[9] = 1;
  t.equal(coalesce([icmp], true)[0]!.flags, 2, 'ICMP, trusted → DATA_VALID');
  const big = tcpPacket({ payload: randomBytes(20000), options: TS_OPTION, csum: 'full', flags: 0x18 });
  const w = coalesce([big], false, 1450);
  t.equal(w.length, 1);
  t.same([w[0]!.flags, w[0]!.gsoType, w[0]!.hdrLen, w[0]!.gsoSize, w[0]!.csumStart, w[0]!.csumOffset], [1, 1, 52, 1398, 20, 16]);
  t.equal(be16(w[0]!.pkt, 36), pseudo(big, 6, big.length - 20), 'field set to the pseudo-header sum');
});

t.test('a TUN that refuses GSO writes gets the original segments, and split oversized packets', async (t) => {
  const orig = tcpPacket({ payload: randomBytes(5 * 1000), options: TS_OPTION, csum: 'partial', flags: 0x18 });
  const segs = strip(split(orig, 1, 1000));
  const w = coalesce(
    segs.map((s) => s.slice()),
    true,
    1500,
    true,
    true,
  );
  t.equal(w.length, 5, 'five single writes after the refused merge');
  w.forEach((x, i) => {
    t.same(x.pkt, segs[i], `segment ${i} written exactly as received (head header restored)`);
    t.equal(x.gsoType, 0);
  });
  const big = tcpPacket({ payload: randomBytes(10000), options: TS_OPTION, csum: 'partial', flags: 0x19 });
  const parts = coalesce([big], false, 1450, true, true);
  t.equal(parts.length, Math.ceil(10000 / 1398), 'oversized TCP split to the MTU here');
  parts.forEach((x, i) => {
    t.equal(x.flags, 2, `part ${i}: DATA_VALID (checksums computed here)`);
    t.ok(x.pkt.length <= 1450 && ipHeaderOk(x.pkt) && l4ChecksumOk(x.pkt), `part ${i}: fits the MTU, checksums valid`);
  });
  t.equal(parts.at(-1)!.pkt[33], 0x19, 'FIN/PSH on the last part');
});

t.test('split rejects what it cannot split', async (t) => {
  const tcp = tcpPacket({ payload: randomBytes(3000), csum: 'partial' });
  t.equal(split(tcp, 5, 1000).length, 0, 'TCP with a UDP gso type');
  t.equal(split(udpPacket(randomBytes(3000)), 1, 1000).length, 0, 'UDP with a TCP gso type');
  const frag = tcp.slice();
  frag[6] = 0x20;
  t.equal(split(frag, 1, 1000).length, 0, 'fragment');
  t.equal(split(tcp, 1, 0).length, 0, 'gso_size 0');
  t.equal(split(tcp.subarray(0, 100), 1, 1000).length, 0, 'truncated (total length beyond the buffer)');
  t.equal(split(tcp, 1, 5000).length, 1, 'one segment when gso_size exceeds the payload');
});

t.test('offload ladder: rung names, requests and what the kernel grants', async (t) => {
  t.same([...OFFLOAD_RUNGS], ['full', 'no-tun-uso', 'no-udp-gro', 'no-udp-gso', 'none']);
  t.throws(() => parseOffloadRequest('fast'));
  t.equal(parseOffloadRequest('auto'), 'auto');
  for (const r of OFFLOAD_RUNGS) t.equal(rungOf(requestedFeatures(r)), r, `${r} names itself`);
  const all = { tso: true, uso: true, gro: true, gso: true };
  t.equal(rungOf(effectiveFeatures(requestedFeatures('auto'), all)), 'full');
  t.equal(rungOf(effectiveFeatures(requestedFeatures('auto'), { ...all, uso: false })), 'no-tun-uso');
  t.equal(rungOf(effectiveFeatures(requestedFeatures('auto'), { ...all, uso: false, gro: false })), 'no-udp-gro');
  t.equal(
    rungOf(effectiveFeatures(requestedFeatures('auto'), { ...all, gro: false })),
    'no-udp-gro',
    'USO without GRO still names the rung it is at least as good as',
  );
  t.equal(rungOf(effectiveFeatures(requestedFeatures('full'), { ...all, gso: false })), 'no-udp-gso');
  t.equal(rungOf(effectiveFeatures(requestedFeatures('no-udp-gro'), all)), 'no-udp-gro', 'a forced rung caps the features');
  t.equal(rungOf(effectiveFeatures(requestedFeatures('auto'), { tso: false, uso: false, gro: false, gso: false })), 'none');
});
