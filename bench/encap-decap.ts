// Microbenchmark of the TypeScript half of the data plane: PacketLoop egress (route lookup + in-place
// VXLAN/Ethernet header + descriptor fill + counting) and ingress (source check + decode + counting)
// over real rings, with the four native I/O calls replaced by syscall-free stand-ins that only do what
// the kernel side would leave in the descriptors. Loop regressions show here without iperf noise.
// Both loop shapes: per-packet (offload rung none) and offload (64 KiB TSO super-packets out, UDP_GRO
// trains of 44 datagrams in, every datagram's header checked). Then the native per-byte work of the
// offload path on one 64 KiB super-packet: split into 46 segments with full checksums, and coalescing
// 46 segments back into one GSO write (both through the test entry points, which also copy the result
// into a buffer, so they slightly overstate the data-plane cost).
// Run: node dist/bench/encap-decap.js [seconds per case, default 2] [peers, default 256]
import { PerformanceObserver } from 'node:perf_hooks';

import { DEFAULT_TX_RING, Ring } from '../src/dataplane/buffer-pool';
import { Counters } from '../src/dataplane/counters';
import { ForwardingTable } from '../src/dataplane/forwarding-table';
import { Desc } from '../src/dataplane/layout';
import { loadOffloadTestNative } from '../src/dataplane/native';
import { requestedFeatures } from '../src/dataplane/offload';
import { type LoopIo, PacketLoop } from '../src/dataplane/packet-loop';
import { ENCAP_LEN, writeEncapHeader } from '../src/dataplane/vxlan-codec';

const seconds = Number(process.argv[2] ?? 2);
const nPeers = Number(process.argv[3] ?? 256);
const PKT = 1400;
const VNI = 1;
const LOCAL_MAC = Uint8Array.from([0x02, 0xaa, 0, 0, 0, 1]);

const peerMac = (i: number): Uint8Array => Uint8Array.from([0x02, 0xbb, 0, 0, i >> 8, i & 0xff]);
const peerSubnet = (i: number): number => ((10 << 24) | (5 << 16) | (i << 8)) >>> 0; // 10.5.i.0/24 (i < 256) …
const peerIp = (i: number): number => (0xc0000200 + 10 + i) >>> 0; // 192.0.2.(10+i) …

const table = new ForwardingTable({ vni: VNI, localMac: LOCAL_MAC });
for (let i = 0; i < nPeers; i++) {
  table.setPeer({ subnet: { ip: peerSubnet(i % 256) + ((i >> 8) << 24), prefixLen: 24 }, publicIp: peerIp(i), vtepMac: peerMac(i) });
}
const peerDst = new Int32Array(nPeers);
const peerSrc = new Int32Array(nPeers);
for (let i = 0; i < nPeers; i++) {
  peerDst[i] = (peerSubnet(i % 256) + ((i >> 8) << 24) + 7) | 0;
  peerSrc[i] = peerIp(i) | 0;
}

const counters = new Counters(table.slotCapacity);
const tx = new Ring(DEFAULT_TX_RING);
const rx = new Ring({ slots: 64, slotSize: 2048, headroom: 64 });
tx.id = 0;
rx.id = 1;

// Pre-fill packets once: egress IPv4 packets at the IP offset; ingress VXLAN frames (peer i → us).
for (let s = 0; s < tx.slots; s++) {
  const ip = tx.ipOffset(s);
  tx.bytes[ip] = 0x45;
  tx.bytes[ip + 2] = PKT >> 8;
  tx.bytes[ip + 3] = PKT & 0xff;
  tx.bytes[ip + 9] = 6;
}
for (let s = 0; s < rx.slots; s++) {
  const f = rx.ipOffset(s) - ENCAP_LEN;
  writeEncapHeader(rx.bytes, f, VNI, LOCAL_MAC, peerMac(s % nPeers));
  rx.bytes[f + ENCAP_LEN] = 0x45;
  rx.bytes[f + ENCAP_LEN + 2] = PKT >> 8;
  rx.bytes[f + ENCAP_LEN + 3] = PKT & 0xff;
}

let cursor = 0;
// The stand-ins write exactly the descriptor words the native calls write; no syscalls, no allocation.
const io: LoopIo = {
  tunRead(_ring, _fd, max) {
    const d = tx.desc;
    for (let i = 0; i < max; i++) {
      const b = i * Desc.WORDS;
      const p = (cursor + i) % nPeers;
      d[b + Desc.OFF] = i * tx.slotSize + tx.headroom;
      d[b + Desc.LEN] = PKT;
      d[b + Desc.ADDR] = peerDst[p]!;
      d[b + Desc.FLOW] = Math.imul(p + i, 0x9e3779b1);
      d[b + Desc.FLAGS] = 0;
      d[b + Desc.STATUS] = 0;
    }
    cursor = (cursor + max) % nPeers;
    return max;
  },
  udpSend(_ring, n) {
    const d = tx.desc;
    for (let i = 0; i < n; i++) {
      if (d[i * Desc.WORDS + Desc.LEN]! > 0) {
        d[i * Desc.WORDS + Desc.STATUS] = 0;
        d[i * Desc.WORDS + Desc.SEGS] = 1;
      }
    }
    return n;
  },
  udpRecv(_ring, _fd, max) {
    const d = rx.desc;
    for (let i = 0; i < max; i++) {
      const b = i * Desc.WORDS;
      d[b + Desc.OFF] = i * rx.slotSize + rx.headroom - ENCAP_LEN;
      d[b + Desc.LEN] = PKT + ENCAP_LEN;
      d[b + Desc.ADDR] = peerSrc[i % nPeers]!;
      d[b + Desc.FLAGS] = 0;
      d[b + Desc.GSO_SIZE] = 0;
      d[b + Desc.SEGS] = 1;
      d[b + Desc.STATUS] = 0;
    }
    return max;
  },
  tunWrite(_ring, _fd, n) {
    const d = rx.desc;
    for (let i = 0; i < n; i++) if (d[i * Desc.WORDS + Desc.LEN]! > 0) d[i * Desc.WORDS + Desc.STATUS] = 0;
    return n;
  },
};

const loop = new PacketLoop({
  io,
  table,
  counters,
  tx,
  rx,
  tunFd: 3,
  recvFd: 4,
  sendFds: Int32Array.from([5, 6, 7, 8, 9, 10, 11, 12]),
  port: 8472,
  vni: VNI,
  localMac: LOCAL_MAC,
  vnetHdr: false,
  repairChecksums: true,
  maxPacket: 1450,
  budget: 1 << 20,
  onIoError: () => {
    throw new Error('unexpected I/O error in benchmark');
  },
});

let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ['gc'] });

function measure(name: string, step: () => void, packetsPerStep: number): void {
  for (let i = 0; i < 2000; i++) step(); // warm up to optimized code
  gcs = 0;
  const heapBefore = process.memoryUsage().heapUsed;
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let packets = 0;
  const t0 = process.hrtime.bigint();
  let now = t0;
  while (now < deadline) {
    for (let i = 0; i < 1000; i++) step();
    packets += 1000 * packetsPerStep;
    now = process.hrtime.bigint();
  }
  const ns = Number(now - t0);
  const heapDelta = process.memoryUsage().heapUsed - heapBefore;
  const pps = (packets / ns) * 1e9;
  console.log(
    `${name.padEnd(28)} ${(pps / 1e6).toFixed(2).padStart(6)} Mpps  ${(ns / packets).toFixed(1).padStart(6)} ns/packet  ` +
      `(${packets} packets, GCs ${gcs}, heap ${heapDelta >= 0 ? '+' : ''}${(heapDelta / 1024).toFixed(0)} KiB)`,
  );
}

const batch = tx.slots;
console.log(`encap/decap over ${batch}-packet batches, ${nPeers} peers, ${PKT} B packets, ${seconds} s per case (one core)`);
measure(
  'egress (read→encap→send)',
  () => {
    io.tunRead(0, 3, batch, 0);
    loop.encapBatch(batch);
    io.udpSend(0, batch);
    loop.countSent(batch);
  },
  batch,
);
measure(
  'ingress (recv→decap→write)',
  () => {
    io.udpRecv(1, 4, batch);
    loop.decap(batch);
    io.tunWrite(1, 3, batch, 0, 0);
    loop.countWritten(batch);
  },
  batch,
);
// ---- offload loop shape: super-packets out, GRO trains in ----------------------------------------------
const MSS = 1398;
const SUPER = 46 * MSS + 40; // one TSO super-packet as the TUN hands it over
const TRAIN = 44; // datagrams per UDP_GRO train
const SEG = ENCAP_LEN + 40 + MSS;
const otx = new Ring({ slots: 32, slotSize: 65536 + 64, headroom: 64 });
const orx = new Ring({ slots: 32, slotSize: 65536 + 64, headroom: 64 });
otx.id = 2;
orx.id = 3;
for (let s = 0; s < orx.slots; s++) {
  const base = orx.ipOffset(s) - ENCAP_LEN;
  for (let k = 0; k < TRAIN; k++) {
    const f = base + k * SEG;
    writeEncapHeader(orx.bytes, f, VNI, LOCAL_MAC, peerMac(s % nPeers));
    orx.bytes[f + ENCAP_LEN] = 0x45;
    orx.bytes[f + ENCAP_LEN + 2] = (SEG - ENCAP_LEN) >> 8;
    orx.bytes[f + ENCAP_LEN + 3] = (SEG - ENCAP_LEN) & 0xff;
  }
}
let ocursor = 0;
const oio: LoopIo = {
  tunRead(_ring, _fd, max) {
    const d = otx.desc;
    for (let i = 0; i < max; i++) {
      const b = i * Desc.WORDS;
      const p = (ocursor + i) % nPeers;
      d[b + Desc.OFF] = i * otx.slotSize + otx.headroom;
      d[b + Desc.LEN] = SUPER;
      d[b + Desc.ADDR] = peerDst[p]!;
      d[b + Desc.FLOW] = Math.imul(p + i, 0x9e3779b1);
      d[b + Desc.FLAGS] = 0;
      d[b + Desc.GSO_TYPE] = 1;
      d[b + Desc.GSO_SIZE] = MSS;
      d[b + Desc.STATUS] = 0;
    }
    ocursor = (ocursor + max) % nPeers;
    return max;
  },
  udpSend(_ring, n) {
    const d = otx.desc;
    for (let i = 0; i < n; i++) {
      const b = i * Desc.WORDS;
      if (d[b + Desc.LEN]! > 0) {
        d[b + Desc.STATUS] = 0;
        d[b + Desc.SEGS] = 46;
        d[b + Desc.HDR_LEN] = 40;
      }
    }
    return n;
  },
  udpRecv(_ring, _fd, max) {
    const d = orx.desc;
    for (let i = 0; i < max; i++) {
      const b = i * Desc.WORDS;
      d[b + Desc.OFF] = i * orx.slotSize + orx.headroom - ENCAP_LEN;
      d[b + Desc.LEN] = TRAIN * SEG;
      d[b + Desc.ADDR] = peerSrc[i % nPeers]!;
      d[b + Desc.FLAGS] = 0;
      d[b + Desc.GSO_SIZE] = SEG;
      d[b + Desc.SEGS] = TRAIN;
      d[b + Desc.STATUS] = 0;
    }
    return max;
  },
  tunWrite(_ring, _fd, n) {
    const d = orx.desc;
    for (let i = 0; i < n; i++) if (d[i * Desc.WORDS + Desc.LEN]! > 0) d[i * Desc.WORDS + Desc.STATUS] = 0;
    return n;
  },
};
const oloop = new PacketLoop({
  io: oio,
  table,
  counters,
  tx: otx,
  rx: orx,
  tunFd: 3,
  recvFd: 4,
  sendFds: Int32Array.from([5, 6, 7, 8, 9, 10, 11, 12]),
  port: 8472,
  vni: VNI,
  localMac: LOCAL_MAC,
  vnetHdr: true,
  repairChecksums: false,
  maxPacket: 1450,
  budget: 1 << 20,
  offload: requestedFeatures('full'),
  onIoError: () => {
    throw new Error('unexpected I/O error in benchmark');
  },
});
const obatch = 8;
console.log(`offload loop: ${obatch}-descriptor batches, ${SUPER} B TSO super-packets (46 segments) out, ${TRAIN}-datagram GRO trains in`);
measure(
  'egress (TS per segment)',
  () => {
    oio.tunRead(2, 3, obatch, 1);
    oloop.encapBatch(obatch);
    oio.udpSend(2, obatch, 3);
    oloop.countSent(obatch);
  },
  obatch * 46,
);
measure(
  'ingress (TS per segment)',
  () => {
    oio.udpRecv(3, 4, obatch);
    oloop.decap(obatch);
    oio.tunWrite(3, 3, obatch, 5, 1450);
    oloop.countWritten(obatch);
  },
  obatch * TRAIN,
);

// ---- native per-byte work on one super-packet --------------------------------------------------------
const off = loadOffloadTestNative();
const sp = new Uint8Array(SUPER);
for (let i = 0; i < SUPER; i++) sp[i] = (i * 131) & 0xff;
sp.set([0x45, 0, SUPER >> 8, SUPER & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 5, 1, 2, 10, 5, 2, 3], 0);
sp[32] = 0x50;
sp[33] = 0x10;
const prefix = new Uint8Array(ENCAP_LEN);
const segOut = new Uint8Array(46 * (SEG + 64));
const segLens = new Int32Array(64);
const nSeg = off.offloadSplit(sp, 1, MSS, prefix, segOut, segLens);
if (nSeg !== 46) throw new Error(`split produced ${nSeg} segments`);
const inner = new Uint8Array(46 * (40 + MSS));
const innerLens = new Int32Array(46);
let w = 0;
for (let i = 0, o = 0; i < 46; i++) {
  inner.set(segOut.subarray(o + ENCAP_LEN, o + segLens[i]!), w);
  innerLens[i] = segLens[i]! - ENCAP_LEN;
  w += innerLens[i]!;
  o += segLens[i]!;
}
const work = inner.slice();
const wOut = new Uint8Array(inner.length + 1024);
const wLens = new Int32Array(64);
console.log(`native, one ${SUPER} B super-packet (${(SUPER / 1024).toFixed(0)} KiB), hot caches`);
measure(
  'split + checksums (46 segs)',
  () => {
    off.offloadSplit(sp, 1, MSS, prefix, segOut, segLens);
  },
  46,
);
measure(
  'coalesce 46 segs, verified',
  () => {
    work.set(inner);
    off.offloadCoalesce(work, innerLens, false, 1450, true, wOut, wLens);
  },
  46,
);
measure(
  'coalesce 46 segs, trusted',
  () => {
    work.set(inner);
    off.offloadCoalesce(work, innerLens, true, 1450, true, wOut, wLens);
  },
  46,
);

const c = counters.snapshot([]);
const dropped = Object.entries(c.drops).filter(([, v]) => v > 0);
if (dropped.length > 0) console.log('unexpected drops:', Object.fromEntries(dropped));
console.log(`counted: tx ${c.txPackets} packets / ${c.txBytes} B, rx ${c.rxPackets} packets / ${c.rxBytes} B`);
