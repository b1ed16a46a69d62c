// PacketLoop in the offload format with scripted native calls: per-datagram validation of UDP_GRO
// trains (rejects counted and marked for tunWrite), per-segment counters, and the runtime fallbacks
// (a UDP GSO send refused with EIO, a TUN that refuses GSO writes).
import t from 'tap';
import { Ring } from '../../src/dataplane/buffer-pool';
import { Counters } from '../../src/dataplane/counters';
import { ForwardingTable } from '../../src/dataplane/forwarding-table';
import { Desc, DescFlag, SendMode, TunMode } from '../../src/dataplane/layout';
import { requestedFeatures } from '../../src/dataplane/offload';
import { type LoopIo, PacketLoop } from '../../src/dataplane/packet-loop';
import { ENCAP_LEN, writeEncapHeader } from '../../src/dataplane/vxlan-codec';
import { parseIp4, parseIp4Net } from '../../src/subnet/ip4';

const OWN = Uint8Array.from([0x02, 0, 0, 0, 0, 0x01]);
const MAC_B = Uint8Array.from([0x02, 0, 0, 0, 0, 0x02]);
const PEER_IP = '192.0.2.12';

function frame(innerLen: number, opts: { vni?: number } = {}): Uint8Array {
  const f = new Uint8Array(ENCAP_LEN + innerLen);
  writeEncapHeader(f, 0, opts.vni ?? 1, OWN, MAC_B);
  const ip = ENCAP_LEN;
  f[ip] = 0x45;
  f[ip + 2] = innerLen >> 8;
  f[ip + 3] = innerLen & 0xff;
  f[ip + 9] = 6;
  return f;
}

interface Recv {
  src: string;
  /** Datagrams of one train (all but the last the same size) or a single datagram. */
  datagrams: Uint8Array[];
}

function harness(opts: { sendStatus?: number; sendFlags?: number; writeFlags?: number } = {}) {
  const table = new ForwardingTable({ vni: 1, localMac: OWN });
  const slot = table.setPeer({ subnet: parseIp4Net('10.5.2.0/24'), publicIp: parseIp4(PEER_IP), vtepMac: MAC_B });
  const counters = new Counters(table.slotCapacity);
  const tx = new Ring({ slots: 4, slotSize: 65536 + 64, headroom: 64 });
  const rx = new Ring({ slots: 4, slotSize: 65536 + 64, headroom: 64 });
  const udpQueue: Recv[] = [];
  const tunQueue: Array<{ len: number; gsoType: number; gsoSize: number }> = [];
  const sendModes: number[] = [];
  const writeModes: number[] = [];
  /** Segments tunWrite would have stripped and written: [descriptor, segment index]. */
  const written: Array<[number, number]> = [];
  const io: LoopIo = {
    tunRead(_r, _fd, max) {
      let n = 0;
      while (n < max && tunQueue.length > 0) {
        const p = tunQueue.shift()!;
        const b = n * Desc.WORDS;
        const off = tx.ipOffset(n);
        tx.bytes.fill(0, off, off + p.len);
        tx.bytes.set([0x45, 0, p.len >> 8, p.len & 0xff, 0, 0, 0, 0, 64, 6, 0, 0, 10, 5, 1, 2, 10, 5, 2, 3], off);
        tx.desc[b + Desc.OFF] = off;
        tx.desc[b + Desc.LEN] = p.len;
        tx.desc[b + Desc.ADDR] = parseIp4('10.5.2.3') | 0;
        tx.desc[b + Desc.FLOW] = 1;
        tx.desc[b + Desc.FLAGS] = 0;
        tx.desc[b + Desc.GSO_TYPE] = p.gsoType;
        tx.desc[b + Desc.GSO_SIZE] = p.gsoSize;
        n++;
      }
      return n;
    },
    udpSend(_r, n, mode) {
      sendModes.push(mode ?? 0);
      for (let i = 0; i < n; i++) {
        const b = i * Desc.WORDS;
        if (tx.desc[b + Desc.LEN] === 0) continue;
        const segs =
          tx.desc[b + Desc.GSO_TYPE] !== 0 ? Math.ceil((tx.desc[b + Desc.LEN]! - ENCAP_LEN - 40) / tx.desc[b + Desc.GSO_SIZE]!) : 1;
        tx.desc[b + Desc.SEGS] = segs;
        tx.desc[b + Desc.HDR_LEN] = 40;
        tx.desc[b + Desc.STATUS] = opts.sendStatus ?? 0;
        tx.desc[b + Desc.FLAGS] |= opts.sendFlags ?? 0;
      }
      return 1;
    },
    udpRecv(_r, _fd, max) {
      let n = 0;
      while (n < max && udpQueue.length > 0) {
        const { src, datagrams } = udpQueue.shift()!;
        const b = n * Desc.WORDS;
        const off = rx.ipOffset(n) - ENCAP_LEN;
        let o = off;
        for (const d of datagrams) {
          rx.bytes.set(d, o);
          o += d.length;
        }
        rx.desc[b + Desc.OFF] = off;
        rx.desc[b + Desc.LEN] = o - off;
        rx.desc[b + Desc.ADDR] = parseIp4(src) | 0;
        rx.desc[b + Desc.FLAGS] = 0;
        rx.desc[b + Desc.GSO_SIZE] = datagrams.length > 1 ? datagrams[0]!.length : 0;
        rx.desc[b + Desc.SEGS] = datagrams.length;
        n++;
      }
      return n;
    },
    tunWrite(_r, _fd, n, mode) {
      writeModes.push(mode);
      for (let i = 0; i < n; i++) {
        const b = i * Desc.WORDS;
        const len = rx.desc[b + Desc.LEN]!;
        if (len === 0) continue;
        const seg = rx.desc[b + Desc.GSO_SIZE]! > 0 ? rx.desc[b + Desc.GSO_SIZE]! : len;
        const reject = [rx.desc[b + Desc.REJECT_LO]!, rx.desc[b + Desc.REJECT_HI]!];
        for (let o = 0, k = 0; o < len; o += seg, k++) if (((reject[k >> 5]! >>> (k & 31)) & 1) === 0) written.push([i, k]);
        rx.desc[b + Desc.STATUS] = 0;
        rx.desc[b + Desc.FLAGS] |= opts.writeFlags ?? 0;
      }
      return 1;
    },
  };
  const events: string[] = [];
  const loop = new PacketLoop({
    io,
    table,
    counters,
    tx,
    rx,
    tunFd: 3,
    recvFd: 4,
    sendFds: Int32Array.from([10]),
    port: 8472,
    vni: 1,
    localMac: OWN,
    vnetHdr: true,
    repairChecksums: false,
    maxPacket: 1450,
    budget: 64,
    offload: requestedFeatures('full'),
    onGsoRefused: () => events.push('gso'),
    onTunGsoRefused: () => events.push('tun'),
    onIoError: () => events.push('io'),
  });
  return { loop, counters, slot, udpQueue, tunQueue, sendModes, writeModes, written, events };
}

t.test('a GRO train is validated datagram by datagram; rejects are counted and marked', async (t) => {
  const h = harness();
  const good = frame(1450);
  const train = [good, frame(1450, { vni: 7 }), good, good.slice(0, 900)];
  h.udpQueue.push({ src: PEER_IP, datagrams: train });
  h.loop.ingress();
  t.same(
    h.written,
    [
      [0, 0],
      [0, 2],
    ],
    'the bad-VNI datagram and the short last one are not written',
  );
  const c = h.counters.snapshot([[h.slot, 'b']]);
  t.equal(c.drops.badVni, 1);
  t.equal(c.drops.badIpv4Header, 1, 'last datagram cut short of its IPv4 total length');
  t.equal(c.rxPackets, 2, 'two inner packets');
  t.equal(c.rxBytes, 2 * 1450);
  t.equal(c.peers.b!.inPackets, 2);
  t.equal(c.rxTunWrites, 1, 'tunWrite calls reported as writes');
  t.equal(h.writeModes[0], TunMode.VNET | TunMode.COALESCE | TunMode.USO);
});

t.test('unknown sources drop whole trains; empty datagrams count as short', async (t) => {
  const h = harness();
  h.udpQueue.push({ src: '192.0.2.99', datagrams: [frame(1450), frame(1450), frame(1450)] });
  h.udpQueue.push({ src: PEER_IP, datagrams: [new Uint8Array(0)] });
  h.loop.ingress();
  const c = h.counters.snapshot([]);
  t.equal(c.drops.unknownSource, 3, 'one per datagram of the train');
  t.equal(c.drops.short, 1);
  t.equal(h.written.length, 0);
});

t.test('egress counts the segments of a super-packet, and bytes with one header per segment', async (t) => {
  const h = harness();
  h.tunQueue.push({ len: 40 + 10 * 1398, gsoType: 1, gsoSize: 1398 }, { len: 100, gsoType: 0, gsoSize: 0 });
  h.loop.egress();
  const c = h.counters.snapshot([[h.slot, 'b']]);
  t.equal(c.txPackets, 11);
  t.equal(c.txBytes, 10 * (40 + 1398) + 100);
  t.equal(c.txSuperPackets, 1);
  t.equal(h.sendModes[0], SendMode.SPLIT | SendMode.GSO);
});

t.test('a GSO send refused with EIO switches UDP GSO off once', async (t) => {
  const h = harness({ sendFlags: DescFlag.GSO_EIO });
  h.tunQueue.push({ len: 40 + 3 * 1398, gsoType: 1, gsoSize: 1398 });
  h.loop.egress();
  h.tunQueue.push({ len: 40 + 3 * 1398, gsoType: 1, gsoSize: 1398 });
  h.loop.egress();
  t.same(h.sendModes, [SendMode.SPLIT | SendMode.GSO, SendMode.SPLIT]);
  t.same(h.events, ['gso']);
});

t.test('a TUN that refuses GSO writes gets no more merging', async (t) => {
  const h = harness({ writeFlags: DescFlag.TUN_GSO_REFUSED });
  for (let i = 0; i < 2; i++) {
    h.udpQueue.push({ src: PEER_IP, datagrams: [frame(1450), frame(1450)] });
    h.loop.ingress();
  }
  t.same(h.writeModes, [TunMode.VNET | TunMode.COALESCE | TunMode.USO, TunMode.VNET | TunMode.COALESCE | TunMode.NO_MERGE]);
  t.same(h.events, ['tun']);
});
