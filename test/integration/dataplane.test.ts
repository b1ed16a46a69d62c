// End-to-end data plane on both ends of the offload ladder: four hosts on a bridged underlay. h1 and h2
// run the userspace VXLAN data plane at the top rung (offload auto = full on this kernel: TSO/USO TUN,
// UDP GSO/GRO, coalescing writes), h4 at the bottom rung (none: per-packet), h3 has a kernel flannel.1
// laid out exactly as flanneld does it. Traffic: ping and 20 MB TCP (sha256 compared) top↔top,
// bottom↔top and both ↔ kernel, both ways; UDP datagrams through USO coalescing; each middle rung
// against userspace and kernel peers (restarting h2 on the persistent TUN, which must drop offloads a
// lower rung cannot read); a kernel peer without outer UDP checksums; a spoofed VXLAN datagram from a
// non-peer address; the wire format; a kill -9 + restart on port 7890 with a persistent TUN.
import t from 'tap';
import {
  createTestbed,
  kernelPeerAddRemote,
  ping,
  randomVtepMac,
  setupKernelFlannelPeer,
  startCapture,
  waitFor,
  type TestHost,
} from '../../netns-fixtures/testbed';
import { configureTun, exchange, MB20, MTU, type NodeSpec, peerOf, pingOk, Runner, takePort, transferTo, TUN } from './dataplane-runner';

/** A VXLAN frame (right VNI, right MACs) carrying an ICMP echo request, sent from a chosen source address. */
const SPOOF_JS = `
const dgram = require('dgram');
const [bindIp, dstIp, port, dstMac, srcMac, innerSrc, innerDst, count] = process.argv.slice(1);
const mac = (s) => s.split(':').map((x) => parseInt(x, 16));
const ip = (s) => s.split('.').map(Number);
function csum(b) { let s = 0; for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] || 0); while (s >> 16) s = (s & 0xffff) + (s >> 16); return ~s & 0xffff; }
const icmp = Buffer.from([8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
icmp.writeUInt16BE(csum(icmp), 2);
const iph = Buffer.from([0x45, 0, 0, 20 + icmp.length, 0, 1, 0, 0, 64, 1, 0, 0, ...ip(innerSrc), ...ip(innerDst)]);
iph.writeUInt16BE(csum(iph), 10);
const frame = Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 1, 0]), Buffer.from(mac(dstMac)), Buffer.from(mac(srcMac)), Buffer.from([8, 0]), iph, icmp]);
const s = dgram.createSocket('udp4');
s.bind(0, bindIp, () => {
  let left = Number(count);
  const send = () => s.send(frame, Number(port), dstIp, (e) => { if (e) { console.error(e.message); process.exit(1); } if (--left > 0) send(); else s.close(); });
  send();
});`;

/** Datagrams whose contents are a function of their sequence number: the receiver checks each one. */
const UDP_PAYLOAD_JS = `
function payload(seq, size) {
  const b = Buffer.alloc(size);
  let x = (seq * 2654435761) >>> 0;
  for (let i = 4; i < size; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; b[i] = x >>> 24; }
  b.writeUInt32BE(seq, 0);
  return b;
}`;

const UDP_RECV_JS = `${UDP_PAYLOAD_JS}
const dgram = require('dgram');
const [ip, port, size] = process.argv.slice(1).map((v, i) => (i ? Number(v) : v));
const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
let got = 0, bad = 0, timer;
const seen = new Set();
s.on('message', (m) => {
  got++;
  const seq = m.length >= 4 ? m.readUInt32BE(0) : -1;
  if (m.length !== size || !m.equals(payload(seq, size))) bad++; else seen.add(seq);
  clearTimeout(timer);
  timer = setTimeout(() => { process.stdout.write(JSON.stringify({ got, bad, distinct: seen.size }) + '\\n'); s.close(); }, 1000);
});
s.bind(port, ip, () => process.stdout.write('listening\\n'));`;

const UDP_SEND_JS = `${UDP_PAYLOAD_JS}
const dgram = require('dgram');
const [ip, port, size, count] = process.argv.slice(1).map((v, i) => (i ? Number(v) : v));
const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 8 << 20 });
let left = count, inflight = 0, seq = 0;
function pump() {
  while (seq < count && inflight < 256) {
    inflight++;
    s.send(payload(seq++, size), port, ip, () => { inflight--; if (--left === 0) s.close(); else pump(); });
  }
}
pump();`;

/** Sends `count` datagrams of `size` B from → to; returns what the receiver saw. */
async function udpTransfer(from: TestHost, to: NodeSpec, size: number, count: number, port: number) {
  const server = to.host.spawn(['node', '-e', UDP_RECV_JS, to.gw, String(port), String(size)]);
  let out = '';
  server.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  try {
    await waitFor(`UDP receiver on ${to.gw}:${port}`, async () => out.includes('listening'), 10000, 50);
    await from.exec(['node', '-e', UDP_SEND_JS, to.gw, String(port), String(size), String(count)], { timeoutMs: 60000 });
    return await waitFor(
      `UDP receiver result on ${to.gw}:${port}`,
      async () => {
        const line = out.split('\n').find((l) => l.startsWith('{'));
        return line ? (JSON.parse(line) as { got: number; bad: number; distinct: number }) : undefined;
      },
      30000,
      50,
    );
  } finally {
    server.kill('SIGKILL');
  }
}

t.test('userspace VXLAN data plane: top and bottom offload rungs, userspace and kernel peers', async (t) => {
  const bed = await createTestbed({ hosts: 4, t });
  const [h1, h2, h3, h4] = bed.hosts as [TestHost, TestHost, TestHost, TestHost];
  const n1: NodeSpec = { host: h1, subnet: '10.5.1.0/24', gw: '10.5.1.0', mac: randomVtepMac() };
  const n2: NodeSpec = { host: h2, subnet: '10.5.2.0/24', gw: '10.5.2.0', mac: randomVtepMac() };
  const n3: NodeSpec = { host: h3, subnet: '10.5.3.0/24', gw: '10.5.3.0', mac: randomVtepMac() };
  const n4: NodeSpec = { host: h4, subnet: '10.5.4.0/24', gw: '10.5.4.0', mac: randomVtepMac() };

  // h3: kernel flannel.1 with the userspace nodes as remote leases (neighbor + FDB + onlink route).
  await setupKernelFlannelPeer(h3, { vtepMac: n3.mac, subnet: n3.subnet, mtu: MTU });
  for (const r of [n1, n2, n4]) await kernelPeerAddRemote(h3, peerOf(r));

  const base = { vni: 1, persist: true, tunName: TUN, mtu: MTU };
  let r1 = await Runner.start(h1, { ...base, localMac: n1.mac, offload: 'auto', peers: [peerOf(n2), peerOf(n3), peerOf(n4)] });
  let r2 = await Runner.start(h2, { ...base, localMac: n2.mac, offload: 'auto', peers: [peerOf(n1), peerOf(n3)] });
  const r4 = await Runner.start(h4, { ...base, localMac: n4.mac, offload: 'none', peers: [peerOf(n1), peerOf(n3)] });
  t.teardown(async () => {
    for (const r of [r1, r2, r4]) if (r.child.exitCode === null && r.child.signalCode === null) await r.kill9();
  });
  await configureTun(n1, [n2, n3, n4]);
  await configureTun(n2, [n1, n3]);
  await configureTun(n4, [n1, n3]);

  await t.test('rungs in force', async (t) => {
    t.not(r1.offloadRung, 'none', `auto picked ${r1.offloadRung}`);
    t.equal(r2.offloadRung, r1.offloadRung);
    t.equal(r4.offloadRung, 'none');
  });

  await t.test('ping between userspace nodes, both ways, top↔top and bottom↔top', async (t) => {
    for (const [a, b] of [
      [n1, n2],
      [n4, n1],
    ] as const) {
      await pingOk(a.host, b.gw);
      await pingOk(b.host, a.gw);
      const res = await ping(a.host, b.gw, { count: 5, interval: 0.1, size: 1400 });
      t.equal(res.received, 5, `${a.host.name} → ${b.host.name}: large pings (1428 B inner) too`);
    }
  });

  await t.test('20 MB TCP top ↔ top arrives intact, both ways, as super-packets', async (t) => {
    const before = [await r1.counters(), await r2.counters()];
    await exchange(t, n1, n2, MB20, 'top↔top');
    const after = [await r1.counters(), await r2.counters()];
    for (const [i, name] of [
      [0, 'h1'],
      [1, 'h2'],
    ] as const) {
      const d = (k: 'txPackets' | 'txSuperPackets' | 'txSends' | 'rxPackets' | 'rxTunWrites') => after[i]![k] - before[i]![k];
      t.ok(d('txSuperPackets') > 0, `${name}: TSO super-packets read and split (${d('txSuperPackets')})`);
      t.ok(d('txSends') < d('txPackets'), `${name}: UDP GSO sends carry several segments (${d('txPackets')} in ${d('txSends')})`);
      t.ok(d('rxTunWrites') < d('rxPackets'), `${name}: received segments coalesced (${d('rxPackets')} in ${d('rxTunWrites')} writes)`);
    }
  });

  await t.test('20 MB TCP bottom ↔ top arrives intact, both ways', async (t) => {
    await exchange(t, n4, n1, MB20, 'bottom↔top');
  });

  await t.test('UDP datagrams keep their boundaries and contents through GSO/GRO and USO coalescing', async (t) => {
    for (const [a, b] of [
      [n1, n2],
      [n4, n1],
      [n1, n4],
    ] as const) {
      const res = await udpTransfer(a.host, b, 1400, 4000, takePort());
      t.equal(res.bad, 0, `${a.host.name} → ${b.host.name}: no datagram altered (${res.distinct}/4000 arrived)`);
      t.ok(res.distinct > 0, 'datagrams arrived');
    }
  });

  await t.test('interop with a kernel flannel.1 peer: ping and 20 MB TCP both ways, top and bottom rung', async (t) => {
    await exchange(t, n1, n3, MB20, 'top↔kernel');
    await exchange(t, n4, n3, MB20, 'bottom↔kernel');
    // The kernel peer offloads inner checksums to veth, which never computes them (see tun.cc).
    const c1 = await r1.counters();
    const c4 = await r4.counters();
    t.comment(
      `h1: ${c1.csumRepaired} partial inner checksums passed on, ${c1.rxSegmented} super-packets written for the kernel to segment`,
    );
    t.comment(`h4: ${c4.csumRepaired} partial inner checksums completed, ${c4.rxSegmented} super-packets segmented`);
  });

  await t.test('wire format seen by the kernel peer', async (t) => {
    const cap = await startCapture(h3, 'eth0', `udp and src host ${h1.underlayIp}`);
    await pingOk(h1, n3.gw);
    const pkts = (await cap.stop()).filter((p) => p.vxlan);
    t.ok(pkts.length >= 3, 'VXLAN packets captured');
    const p = pkts[0]!;
    t.equal(p.udp!.dstPort, 8472);
    t.ok(r1.sourcePorts.includes(p.udp!.srcPort), `source port ${p.udp!.srcPort} is one of the flow-hashed send sockets`);
    t.equal(new Set(pkts.map((x) => x.udp!.srcPort)).size, 1, 'one flow, one source port');
    t.not(p.udp!.checksum, 0, 'outer UDP checksum is computed');
    t.equal(p.ip!.df, false, 'outer DF clear');
    t.equal(p.vxlan!.flags, 0x08);
    t.equal(p.vxlan!.vni, 1);
    t.equal(p.inner!.eth.dst, n3.mac, 'inner dst = kernel peer VtepMAC');
    t.equal(p.inner!.eth.src, n1.mac, 'inner src = our VtepMAC');
    t.equal(p.inner!.eth.type, 0x0800);
    t.equal(p.inner!.ip!.src, n1.gw);
  });

  await t.test('spoofed VXLAN from a non-peer address is dropped and counted', async (t) => {
    await h2.exec(['ip', 'addr', 'add', '192.0.2.99/24', 'dev', 'eth0']);
    const before = await r1.counters();
    // The inner source lies in no peer's subnet: a frame that fits a peer would be accepted from any
    // source (source-check.ts; README Security), this one must not.
    const outside = '10.9.9.9';
    await h2.exec(['node', '-e', SPOOF_JS, '192.0.2.99', h1.underlayIp, '8472', n1.mac, n2.mac, outside, n1.gw, '5']);
    const after = await waitFor(
      'unknownSource drops',
      async () => {
        const c = await r1.counters();
        return c.drops.unknownSource! >= before.drops.unknownSource! + 5 ? c : undefined;
      },
      10000,
    );
    t.equal(after.drops.unknownSource! - before.drops.unknownSource!, 5, 'all five counted as unknownSource');
    t.equal(after.peers[n2.subnet]!.inPackets, before.peers[n2.subnet]!.inPackets, 'nothing credited to h2');
    // Control: the same frames from h2's real public IP are accepted.
    await h2.exec(['node', '-e', SPOOF_JS, h2.underlayIp, h1.underlayIp, '8472', n1.mac, n2.mac, outside, n1.gw, '5']);
    const ok = await waitFor(
      'accepted frames',
      async () => {
        const c = await r1.counters();
        return c.peers[n2.subnet]!.inPackets >= before.peers[n2.subnet]!.inPackets + 5 ? c : undefined;
      },
      10000,
    );
    t.equal(ok.drops.unknownSource, after.drops.unknownSource, 'no new unknownSource drops');
  });

  await t.test('runtime peer changes: remove, then re-add', async (t) => {
    await r1.command({ op: 'removePeer', subnet: n2.subnet });
    const res = await ping(h1, n2.gw, { count: 2, interval: 0.1, waitSec: 1 });
    t.equal(res.received, 0, 'no route once the peer is gone');
    const c = await r1.counters();
    t.ok(c.drops.noRoute! >= 2, 'counted as noRoute');
    t.notOk(c.peers[n2.subnet], 'peer gone from the counters');
    await r1.command({ op: 'setPeer', peer: peerOf(n2) });
    await pingOk(h1, n2.gw);
  });

  await t.test('counters per direction and per peer', async (t) => {
    for (const [r, peers] of [
      [r1, [n2, n3, n4]],
      [r4, [n1, n3]],
    ] as const) {
      const c = await r.counters();
      t.ok(c.txPackets > 10000 && c.rxPackets > 10000, `tx ${c.txPackets} rx ${c.rxPackets}`);
      t.ok(c.txBytes > MB20 && c.rxBytes > MB20);
      for (const n of peers) {
        const p = c.peers[n.subnet]!;
        t.ok(p.inPackets > 0 && p.outPackets > 0 && p.inBytes > 0 && p.outBytes > 0, `traffic with ${n.subnet}`);
      }
      t.equal(c.drops.badVni, 0);
      t.equal(c.drops.badDstMac, 0);
      t.equal(c.drops.sendError, 0);
      t.equal(c.drops.tunWriteError, 0);
      t.ok(c.txBatches <= c.txPackets && c.rxBatches <= c.rxPackets);
    }
  });

  await t.test('every middle rung (and the per-packet path with a vnet header) against userspace and kernel peers', async (t) => {
    // h2 restarts on its persistent TUN at each rung: offloads of the previous run must not leak into it.
    for (const cfg of [
      { offload: 'no-tun-uso' },
      { offload: 'no-udp-gro' },
      { offload: 'no-udp-gso' },
      { offload: 'none', vnetHdr: true },
    ]) {
      await r2.kill9();
      r2 = await Runner.start(h2, { ...base, localMac: n2.mac, ...cfg, peers: [peerOf(n1), peerOf(n3)] });
      t.equal(r2.offloadRung, cfg.offload, `h2 runs ${cfg.offload}`);
      await exchange(t, n2, n1, 4 * 1024 * 1024, `${r2.offloadRung}↔top`);
      await exchange(t, n2, n3, 4 * 1024 * 1024, `${r2.offloadRung}↔kernel`);
      const c = await r2.counters();
      t.equal(c.drops.sendError! + c.drops.tunWriteError!, 0, `${cfg.offload}: no send or TUN write errors`);
    }
  });

  await t.test('kernel peer without outer UDP checksums (noudpcsum), top and bottom rung', async (t) => {
    await h3.exec(['ip', 'link', 'del', TUN]);
    await h3.exec([
      'ip',
      'link',
      'add',
      TUN,
      'address',
      n3.mac,
      'type',
      'vxlan',
      'id',
      '1',
      'local',
      h3.underlayIp,
      'dev',
      h3.underlayDev,
      'nolearning',
      'dstport',
      '8472',
      'noudpcsum',
    ]);
    await h3.exec(['ip', 'addr', 'add', `${n3.gw}/32`, 'dev', TUN]);
    await h3.exec(['ip', 'link', 'set', TUN, 'mtu', String(MTU), 'up']);
    for (const r of [n1, n2, n4]) await kernelPeerAddRemote(h3, peerOf(r));
    await exchange(t, n1, n3, 4 * 1024 * 1024, 'top↔kernel (noudpcsum)');
    await exchange(t, n4, n3, 4 * 1024 * 1024, 'bottom↔kernel (noudpcsum)');
  });

  await t.test('persistent TUN survives kill -9; restart on port 7890 reuses it and its routes', async (t) => {
    await r1.kill9();
    await r2.kill9();
    for (const n of [n1, n2]) {
      const link = await n.host.exec(['ip', 'link', 'show', TUN], { allowFail: true });
      t.equal(link.code, 0, `${n.host.name}: ${TUN} still exists`);
      const routes = await n.host.exec(['ip', 'route', 'show', 'dev', TUN]);
      t.match(routes.stdout, n === n1 ? n2.subnet : n1.subnet, `${n.host.name}: routes kept`);
    }
    const b7890 = { ...base, port: 7890, persist: false };
    r1 = await Runner.start(h1, { ...b7890, localMac: n1.mac, peers: [peerOf(n2)] });
    r2 = await Runner.start(h2, { ...b7890, localMac: n2.mac, offload: 'none', peers: [peerOf(n1)] });
    const listening = await h1.exec(['ss', '-Hlun', 'sport = :7890']);
    t.ok(listening.stdout.trim().length > 0, 'h1 listens on 7890');
    // No address/route setup this time: what survived is used as is.
    await pingOk(h1, n2.gw);
    await pingOk(h2, n1.gw);
    const tr = await transferTo(h2, n1, 4 * 1024 * 1024, takePort());
    t.equal(tr.received.sha256, tr.sent.sha256, 'TCP over port 7890');
    const c1 = await r1.stop();
    t.ok(c1.rxPackets > 0 && c1.txPackets > 0, 'final counters reported at exit');
    await r2.stop();
    const gone = await h1.exec(['ip', 'link', 'show', TUN], { allowFail: true });
    t.not(gone.code, 0, 'non-persistent run removes the TUN on exit');
  });
});
