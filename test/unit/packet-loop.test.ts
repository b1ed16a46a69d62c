import t from 'tap';
import { Ring } from '../../src/dataplane/buffer-pool';
import { Counters } from '../../src/dataplane/counters';
import { ForwardingTable } from '../../src/dataplane/forwarding-table';
import { Desc, DescFlag } from '../../src/dataplane/layout';
import { type LoopIo, PacketLoop } from '../../src/dataplane/packet-loop';
import { ENCAP_LEN, writeEncapHeader } from '../../src/dataplane/vxlan-codec';
import { parseIp4, parseIp4Net } from '../../src/subnet/ip4';

const OWN = Uint8Array.from([0x02, 0, 0, 0, 0, 0x01]);
const MAC_B = Uint8Array.from([0x02, 0, 0, 0, 0, 0x02]);
const MAC_C = Uint8Array.from([0x02, 0, 0, 0, 0, 0x03]);
const EAGAIN = 11;
const EHOSTUNREACH = 113;

interface Inbound {
  src: string;
  frame: Uint8Array;
}

/** A scripted stand-in for the native calls: queued TUN packets / datagrams, recorded sends/writes. */
function harness(opts: { sendStatus?: (i: number) => number; budget?: number; readErrno?: number } = {}) {
  const table = new ForwardingTable({ vni: 1, localMac: OWN });
  const slotB = table.setPeer({ subnet: parseIp4Net('10.5.2.0/24'), publicIp: parseIp4('192.0.2.12'), vtepMac: MAC_B });
  const slotC = table.setPeer({ subnet: parseIp4Net('10.5.3.0/24'), publicIp: parseIp4('192.0.2.13'), vtepMac: MAC_C });
  const counters = new Counters(table.slotCapacity);
  const tx = new Ring({ slots: 4, slotSize: 2048, headroom: 64 });
  const rx = new Ring({ slots: 4, slotSize: 2048, headroom: 64 });
  const tunQueue: Array<{ pkt: Uint8Array; flags?: number }> = [];
  const udpQueue: Inbound[] = [];
  const sent: Array<{ bytes: Uint8Array; addr: number; port: number; fd: number }> = [];
  const written: Uint8Array[] = [];
  let calls = 0;
  const io: LoopIo = {
    tunRead(_r, _fd, max) {
      calls++;
      if (opts.readErrno !== undefined) return -opts.readErrno;
      let n = 0;
      while (n < max && tunQueue.length > 0) {
        const { pkt, flags } = tunQueue.shift()!;
        const off = tx.ipOffset(n);
        tx.bytes.set(pkt, off);
        const b = n * Desc.WORDS;
        tx.desc[b + Desc.OFF] = off;
        tx.desc[b + Desc.LEN] = pkt.length;
        tx.desc[b + Desc.ADDR] = (pkt[16]! << 24) | (pkt[17]! << 16) | (pkt[18]! << 8) | pkt[19]! | 0;
        tx.desc[b + Desc.FLOW] = n * 7;
        tx.desc[b + Desc.FLAGS] = flags ?? 0;
        n++;
      }
      return n;
    },
    udpSend(_r, n) {
      calls++;
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const b = i * Desc.WORDS;
        const len = tx.desc[b + Desc.LEN]!;
        if (len === 0) continue;
        const status = opts.sendStatus?.(sent.length) ?? 0;
        tx.desc[b + Desc.STATUS] = status;
        tx.desc[b + Desc.SEGS] = 1;
        const off = tx.desc[b + Desc.OFF]!;
        sent.push({
          bytes: tx.bytes.slice(off, off + len),
          addr: tx.desc[b + Desc.ADDR]! >>> 0,
          port: tx.desc[b + Desc.PORT]!,
          fd: tx.desc[b + Desc.FD]!,
        });
        if (status === 0) ok++;
      }
      return ok;
    },
    udpRecv(_r, _fd, max) {
      calls++;
      if (opts.readErrno !== undefined) return -opts.readErrno;
      let n = 0;
      while (n < max && udpQueue.length > 0) {
        const { src, frame } = udpQueue.shift()!;
        const off = rx.ipOffset(n) - ENCAP_LEN;
        rx.bytes.set(frame, off);
        const b = n * Desc.WORDS;
        rx.desc[b + Desc.OFF] = off;
        rx.desc[b + Desc.LEN] = frame.length;
        rx.desc[b + Desc.ADDR] = parseIp4(src) | 0;
        rx.desc[b + Desc.FLAGS] = 0;
        rx.desc[b + Desc.GSO_SIZE] = 0;
        rx.desc[b + Desc.SEGS] = 1;
        n++;
      }
      return n;
    },
    tunWrite(_r, _fd, n) {
      calls++;
      for (let i = 0; i < n; i++) {
        const b = i * Desc.WORDS;
        const len = rx.desc[b + Desc.LEN]!;
        if (len === 0) continue;
        rx.desc[b + Desc.STATUS] = 0;
        // Like the addon: the datagram's encapsulation is stripped, the IPv4 total length kept.
        const ip = rx.desc[b + Desc.OFF]! + ENCAP_LEN;
        written.push(rx.bytes.slice(ip, ip + ((rx.bytes[ip + 2]! << 8) | rx.bytes[ip + 3]!)));
      }
      return n;
    },
  };
  const errors: number[] = [];
  const loop = new PacketLoop({
    io,
    table,
    counters,
    tx,
    rx,
    tunFd: 3,
    recvFd: 4,
    sendFds: Int32Array.from([10, 11, 12]),
    port: 8472,
    vni: 1,
    localMac: OWN,
    vnetHdr: false,
    repairChecksums: true,
    maxPacket: 1450,
    budget: opts.budget ?? 256,
    onIoError: (_dir, errno) => errors.push(errno),
  });
  return { loop, table, counters, tunQueue, udpQueue, sent, written, errors, slotB, slotC, calls: () => calls };
}

function ipv4(dst: string, total = 60): Uint8Array {
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >> 8;
  p[3] = total & 0xff;
  p[9] = 1;
  p.set(dst.split('.').map(Number), 16);
  p.set([10, 5, 1, 0], 12);
  return p;
}

function vxlan(inner: Uint8Array, dstMac = OWN, vni = 1): Uint8Array {
  const f = new Uint8Array(ENCAP_LEN + inner.length);
  writeEncapHeader(f, 0, vni, dstMac, MAC_B);
  f.set(inner, ENCAP_LEN);
  return f;
}

t.test('egress: routes, encapsulates in place, picks a socket by flow, counts per peer', async (t) => {
  const h = harness();
  h.tunQueue.push({ pkt: ipv4('10.5.2.9') }, { pkt: ipv4('10.5.3.1', 100) }, { pkt: ipv4('10.5.9.1') });
  h.loop.egress();
  t.equal(h.sent.length, 2, 'the unroutable packet is not sent');
  const [a, b] = h.sent as [(typeof h.sent)[0], (typeof h.sent)[0]];
  t.equal(a.addr, parseIp4('192.0.2.12'));
  t.equal(a.port, 8472);
  t.equal(a.bytes.length, 60 + ENCAP_LEN);
  t.same([...a.bytes.subarray(0, 8)], [8, 0, 0, 0, 0, 0, 1, 0]);
  t.same([...a.bytes.subarray(8, 14)], [...MAC_B]);
  t.same([...a.bytes.subarray(14, 20)], [...OWN]);
  t.same(a.bytes.subarray(ENCAP_LEN), ipv4('10.5.2.9'), 'inner packet untouched');
  t.equal(b.addr, parseIp4('192.0.2.13'));
  t.same([...b.bytes.subarray(8, 14)], [...MAC_C]);
  t.ok([10, 11, 12].includes(a.fd) && [10, 11, 12].includes(b.fd));
  const c = h.counters.snapshot([
    [h.slotB, 'b'],
    [h.slotC, 'c'],
  ]);
  t.equal(c.txPackets, 2);
  t.equal(c.txBytes, 160);
  t.equal(c.drops.noRoute, 1);
  t.same(c.peers.b, { inPackets: 0, inBytes: 0, outPackets: 1, outBytes: 60 });
  t.same(c.peers.c, { inPackets: 0, inBytes: 0, outPackets: 1, outBytes: 100 });
  t.equal(c.txWakeups, 1);
  t.equal(c.txBatches, 1, 'short batch: no second read');
  t.equal(h.calls(), 2, 'two native calls for the batch');
});

t.test('egress: non-IPv4 and truncated packets are dropped; send errors are counted by kind', async (t) => {
  const statuses = [EAGAIN, EHOSTUNREACH, 0];
  const h = harness({ sendStatus: (i) => statuses[i] ?? 0 });
  h.tunQueue.push(
    { pkt: ipv4('10.5.2.1'), flags: DescFlag.NOT_IPV4 },
    { pkt: ipv4('10.5.2.1'), flags: DescFlag.TRUNC },
    { pkt: ipv4('10.5.2.1') },
    { pkt: ipv4('10.5.2.2') },
    { pkt: ipv4('10.5.2.3') },
  );
  h.loop.egress();
  const c = h.counters.snapshot([]);
  t.equal(c.drops.notIpv4, 1);
  t.equal(c.drops.truncated, 1);
  t.equal(c.drops.sendBusy, 1, 'EAGAIN');
  t.equal(c.drops.sendError, 1, 'EHOSTUNREACH');
  t.equal(c.txPackets, 1);
  t.equal(c.txBatches, 2, 'a full batch of 4 is followed by another read');
});

t.test('egress: the budget bounds one callback', async (t) => {
  const h = harness({ budget: 4 });
  for (let i = 0; i < 10; i++) h.tunQueue.push({ pkt: ipv4('10.5.2.1') });
  h.loop.egress();
  t.equal(h.sent.length, 4);
  t.equal(h.tunQueue.length, 6, 'the rest waits for the next (level-triggered) callback');
  h.loop.egress();
  h.loop.egress();
  t.equal(h.sent.length, 10);
});

t.test('ingress: validates source and frame, strips headers, counts per peer', async (t) => {
  const h = harness();
  const good = ipv4('10.5.1.0', 84);
  h.udpQueue.push(
    { src: '192.0.2.12', frame: vxlan(good) },
    { src: '192.0.2.99', frame: vxlan(good) }, // spoofed: right VNI and MAC, unknown sender
    { src: '192.0.2.13', frame: vxlan(good, MAC_C) }, // wrong inner dst MAC
    { src: '192.0.2.13', frame: vxlan(good, OWN, 2) }, // wrong VNI
    { src: '192.0.2.13', frame: vxlan(ipv4('10.5.1.0', 40)) },
  );
  h.loop.ingress();
  t.equal(h.written.length, 2);
  t.same(h.written[0], good, 'inner packet only');
  const c = h.counters.snapshot([
    [h.slotB, 'b'],
    [h.slotC, 'c'],
  ]);
  t.equal(c.drops.unknownSource, 1);
  t.equal(c.drops.badDstMac, 1);
  t.equal(c.drops.badVni, 1);
  t.equal(c.rxPackets, 2);
  t.equal(c.rxBytes, 124);
  t.same(c.peers.b, { inPackets: 1, inBytes: 84, outPackets: 0, outBytes: 0 });
  t.same(c.peers.c, { inPackets: 1, inBytes: 40, outPackets: 0, outBytes: 0 });
});

t.test('ingress: a peer that changed its public IP is accepted only from the new one', async (t) => {
  const h = harness();
  h.table.setPeer({ subnet: parseIp4Net('10.5.2.0/24'), publicIp: parseIp4('192.0.2.22'), vtepMac: MAC_B });
  h.udpQueue.push({ src: '192.0.2.12', frame: vxlan(ipv4('10.5.1.0')) }, { src: '192.0.2.22', frame: vxlan(ipv4('10.5.1.0')) });
  h.loop.ingress();
  t.equal(h.written.length, 1);
  t.equal(h.counters.snapshot([]).drops.unknownSource, 1);
});

t.test('I/O errors are reported, not thrown', async (t) => {
  const h = harness({ readErrno: 9 });
  h.loop.egress();
  h.loop.ingress();
  t.same(h.errors, [9, 9]);
  t.equal(h.counters.snapshot([]).ioErrors, 2, 'each failed read counted');
});
