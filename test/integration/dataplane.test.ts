// End-to-end data plane: three hosts on a bridged underlay. h1 and h2 run the userspace VXLAN data
// plane (static runner with a fixed peer table; h1 without, h2 with the vnet header), h3 has a kernel
// flannel.1 laid out exactly as flanneld does it. Traffic: ping and 20 MB TCP (sha256 compared)
// userspace↔userspace and userspace↔kernel both ways, a spoofed VXLAN datagram from a non-peer
// address, a capture of the wire format, and a kill -9 + restart on port 7890 with a persistent TUN.
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
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
import type { CountersSnapshot } from '../../src/dataplane/counters';

const RUNNER = path.resolve(__dirname, '../../src/dataplane/static-runner.js');
const TUN = 'flannel.1';
const MTU = 1450;
const MB20 = 20 * 1024 * 1024;

interface NodeSpec {
  host: TestHost;
  subnet: string; // "10.5.1.0/24"
  gw: string; // "10.5.1.0"
  mac: string;
}

interface PeerJson {
  subnet: string;
  publicIp: string;
  vtepMac: string;
}

const peerOf = (n: NodeSpec): PeerJson => ({ subnet: n.subnet, publicIp: n.host.underlayIp, vtepMac: n.mac });

/** A static-runner process: JSON lines on stdout, commands on stdin. */
class Runner {
  private readonly events: Array<Record<string, unknown>> = [];
  private readonly waiters: Array<() => void> = [];
  private stderr = '';
  readonly exited: Promise<void>;
  /** Outer UDP source ports of the send sockets, from the "ready" event. */
  sourcePorts: number[] = [];

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.stderr += `stdout: ${line}\n`;
        }
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    child.stderr!.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-8000)));
    this.exited = new Promise((r) => child.on('exit', () => r()));
    void this.exited.then(() => this.waiters.splice(0).forEach((w) => w()));
  }

  static async start(host: TestHost, cfg: object): Promise<Runner> {
    const child = host.spawn(['node', RUNNER, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const r = new Runner(child);
    const ready = await r.next('ready', 15000);
    r.sourcePorts = ready.sourcePorts as number[];
    return r;
  }

  /** Waits for the next event of this type after the ones already consumed. */
  async next(event: string, timeoutMs = 10000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === event);
      if (i >= 0) return this.events.splice(0, i + 1)[i]!;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`data-plane runner exited (${this.child.exitCode ?? this.child.signalCode}) before "${event}": ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${event}" from data-plane runner within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async counters(): Promise<CountersSnapshot> {
    this.child.stdin!.write('{"op":"counters"}\n');
    return (await this.next('counters')).counters as CountersSnapshot;
  }

  async command(cmd: object): Promise<void> {
    this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    const ev = await Promise.race([this.next('ok'), this.next('error')]);
    if (ev.event === 'error') throw new Error(String(ev.message));
  }

  /** SIGTERM → final counters. */
  async stop(): Promise<CountersSnapshot> {
    this.child.kill('SIGTERM');
    const ev = await this.next('counters');
    await this.exited;
    return ev.counters as CountersSnapshot;
  }

  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** What the route manager/netlink side would do for our TUN: address .0/32, MTU, up, one onlink route per peer. */
async function configureTun(self: NodeSpec, peers: NodeSpec[]): Promise<void> {
  const h = self.host;
  await h.exec(['ip', 'addr', 'replace', `${self.gw}/32`, 'dev', TUN]);
  await h.exec(['ip', 'link', 'set', TUN, 'mtu', String(MTU), 'up']);
  for (const p of peers) await h.exec(['ip', 'route', 'replace', p.subnet, 'via', p.gw, 'dev', TUN, 'onlink']);
}

async function pingOk(from: TestHost, to: string): Promise<void> {
  // The first probe may race with a just-started runner; require a run of replies.
  await waitFor(`ping ${from.name} → ${to}`, async () => (await ping(from, to, { count: 3, interval: 0.2 })).received === 3, 20000, 200);
}

const SERVER_JS = `
const net = require('net'), crypto = require('crypto');
const [ip, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { h.update(d); n += d.length; });
  s.on('end', () => { process.stdout.write(JSON.stringify({ bytes: n, sha256: h.digest('hex') }) + '\\n'); s.end(); srv.close(); });
});
srv.listen(Number(port), ip, () => process.stdout.write('listening\\n'));`;

const CLIENT_JS = `
const net = require('net'), crypto = require('crypto');
const [ip, port, size] = process.argv.slice(1);
const data = crypto.randomBytes(Number(size));
const sha256 = crypto.createHash('sha256').update(data).digest('hex');
const s = net.connect(Number(port), ip, () => s.end(data));
s.resume();
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', () => process.stdout.write(JSON.stringify({ bytes: data.length, sha256 }) + '\\n'));`;

/** Sends `size` random bytes over TCP from → to's overlay address; returns both sides' byte count + sha256. */
async function tcpTransfer(from: TestHost, to: NodeSpec, size: number, port: number) {
  const server = to.host.spawn(['node', '-e', SERVER_JS, to.gw, String(port)]);
  let out = '';
  server.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  let err = '';
  server.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  try {
    await waitFor(`TCP server on ${to.gw}:${port}`, async () => {
      if (server.exitCode !== null) throw new Error(`server exited: ${err}`);
      return out.includes('listening');
    }, 10000, 50);
    const client = await from.exec(['node', '-e', CLIENT_JS, to.gw, String(port), String(size)], { timeoutMs: 120000 });
    const sent = JSON.parse(client.stdout) as { bytes: number; sha256: string };
    const received = await waitFor(`TCP server result on ${to.gw}:${port}`, async () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      return line ? (JSON.parse(line) as { bytes: number; sha256: string }) : undefined;
    }, 30000, 50);
    return { sent, received };
  } finally {
    server.kill('SIGKILL');
  }
}

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

t.test('userspace VXLAN data plane: userspace and kernel peers', async (t) => {
  const bed = await createTestbed({ hosts: 3, t });
  const [h1, h2, h3] = bed.hosts as [TestHost, TestHost, TestHost];
  const n1: NodeSpec = { host: h1, subnet: '10.5.1.0/24', gw: '10.5.1.0', mac: randomVtepMac() };
  const n2: NodeSpec = { host: h2, subnet: '10.5.2.0/24', gw: '10.5.2.0', mac: randomVtepMac() };
  const n3: NodeSpec = { host: h3, subnet: '10.5.3.0/24', gw: '10.5.3.0', mac: randomVtepMac() };

  // h3: kernel flannel.1 with h1 and h2 as remote leases (neighbor + FDB + onlink route).
  await setupKernelFlannelPeer(h3, { vtepMac: n3.mac, subnet: n3.subnet, mtu: MTU });
  for (const r of [n1, n2]) await kernelPeerAddRemote(h3, peerOf(r));

  const base = { vni: 1, persist: true, tunName: TUN, mtu: MTU };
  let r1 = await Runner.start(h1, { ...base, localMac: n1.mac, vnetHdr: false, peers: [peerOf(n2), peerOf(n3)] });
  let r2 = await Runner.start(h2, { ...base, localMac: n2.mac, vnetHdr: true, peers: [peerOf(n1), peerOf(n3)] });
  t.teardown(async () => {
    for (const r of [r1, r2]) if (r.child.exitCode === null && r.child.signalCode === null) await r.kill9();
  });
  await configureTun(n1, [n2, n3]);
  await configureTun(n2, [n1, n3]);

  await t.test('ping between the two userspace nodes, both ways', async (t) => {
    await pingOk(h1, n2.gw);
    await pingOk(h2, n1.gw);
    const res = await ping(h1, n2.gw, { count: 5, interval: 0.1, size: 1400 });
    t.equal(res.received, 5, 'large pings (1428 B inner) too');
  });

  await t.test('20 MB TCP userspace → userspace arrives intact, both ways', async (t) => {
    const ab = await tcpTransfer(h1, n2, MB20, 5001);
    t.equal(ab.received.bytes, MB20);
    t.equal(ab.received.sha256, ab.sent.sha256, 'h1 → h2 sha256');
    const ba = await tcpTransfer(h2, n1, MB20, 5002);
    t.equal(ba.received.bytes, MB20);
    t.equal(ba.received.sha256, ba.sent.sha256, 'h2 → h1 sha256');
  });

  await t.test('interop with a kernel flannel.1 peer: ping both ways', async (t) => {
    await pingOk(h1, n3.gw);
    await pingOk(h3, n1.gw);
    await pingOk(h2, n3.gw);
    await pingOk(h3, n2.gw);
    t.pass('kernel ↔ userspace (with and without vnet header) answer');
  });

  await t.test('interop with a kernel flannel.1 peer: 20 MB TCP both ways', async (t) => {
    const uk = await tcpTransfer(h1, n3, MB20, 5003);
    t.equal(uk.received.sha256, uk.sent.sha256, 'userspace h1 → kernel h3');
    const ku = await tcpTransfer(h3, n1, MB20, 5004);
    t.equal(ku.received.sha256, ku.sent.sha256, 'kernel h3 → userspace h1');
    const ku2 = await tcpTransfer(h3, n2, MB20, 5005);
    t.equal(ku2.received.sha256, ku2.sent.sha256, 'kernel h3 → userspace h2 (vnet header)');
    // The kernel peer offloads inner checksums to veth, which never computes them (see tun.cc).
    const c = await r1.counters();
    t.comment(`h1: ${c.csumRepaired} partial inner checksums completed, ${c.rxSegmented} super-packets segmented`);
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
    await h2.exec(['node', '-e', SPOOF_JS, '192.0.2.99', h1.underlayIp, '8472', n1.mac, n2.mac, n2.gw, n1.gw, '5']);
    const after = await waitFor('unknownSource drops', async () => {
      const c = await r1.counters();
      return c.drops.unknownSource! >= before.drops.unknownSource! + 5 ? c : undefined;
    }, 10000);
    t.equal(after.drops.unknownSource! - before.drops.unknownSource!, 5, 'all five counted as unknownSource');
    t.equal(after.peers[n2.subnet]!.inPackets, before.peers[n2.subnet]!.inPackets, 'nothing credited to h2');
    // Control: the same frames from h2's real public IP are accepted.
    await h2.exec(['node', '-e', SPOOF_JS, h2.underlayIp, h1.underlayIp, '8472', n1.mac, n2.mac, n2.gw, n1.gw, '5']);
    const ok = await waitFor('accepted frames', async () => {
      const c = await r1.counters();
      return c.peers[n2.subnet]!.inPackets >= before.peers[n2.subnet]!.inPackets + 5 ? c : undefined;
    }, 10000);
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
    const c = await r1.counters();
    t.ok(c.txPackets > 10000 && c.rxPackets > 10000, `tx ${c.txPackets} rx ${c.rxPackets}`);
    t.ok(c.txBytes > MB20 && c.rxBytes > MB20);
    for (const n of [n2, n3]) {
      const p = c.peers[n.subnet]!;
      t.ok(p.inPackets > 0 && p.outPackets > 0 && p.inBytes > 0 && p.outBytes > 0, `traffic with ${n.subnet}`);
    }
    t.equal(c.drops.badVni, 0);
    t.equal(c.drops.badDstMac, 0);
    t.equal(c.drops.sendError, 0);
    t.equal(c.drops.tunWriteError, 0);
    t.ok(c.txBatches <= c.txPackets && c.rxBatches <= c.rxPackets);
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
    r2 = await Runner.start(h2, { ...b7890, localMac: n2.mac, vnetHdr: true, peers: [peerOf(n1)] });
    const listening = await h1.exec(['ss', '-Hlun', 'sport = :7890']);
    t.ok(listening.stdout.trim().length > 0, 'h1 listens on 7890');
    // No address/route setup this time: what survived is used as is.
    await pingOk(h1, n2.gw);
    await pingOk(h2, n1.gw);
    const tr = await tcpTransfer(h2, n1, 4 * 1024 * 1024, 5006);
    t.equal(tr.received.sha256, tr.sent.sha256, 'TCP over port 7890');
    const c1 = await r1.stop();
    t.ok(c1.rxPackets > 0 && c1.txPackets > 0, 'final counters reported at exit');
    await r2.stop();
    const gone = await h1.exec(['ip', 'link', 'show', TUN], { allowFail: true });
    t.not(gone.code, 0, 'non-persistent run removes the TUN on exit');
  });
});
