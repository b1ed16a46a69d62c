// flannel's default backend, `udp` (a config without Backend): two tsflanneld hosts and an independent
// reference peer (netns-fixtures/udp-reference-peer.ts: Python, laid out like flanneld's udp backend)
// in one cluster. Leases and subnet.env exactly as flanneld writes them, TUN flannel0 with MTU
// underlay − 28, ping both ways between every pair, 20 MB TCP intact with the reference peer and
// between the tsflanneld hosts, the wire format checked in a capture (bare IPv4 in UDP 8285), and
// datagrams from a non-peer dropped and counted.
import t from 'tap';
import { startUdpReferencePeer } from '../../netns-fixtures/udp-reference-peer';
import { addContainer, createTestbed, ping, startCapture, type Container, type TestHost } from '../../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  getFlannelLease,
  startDaemonNode,
  tcpTransfer,
  waitPing,
  type DaemonNode,
} from '../../netns-fixtures/tsflanneld-node';

const MB20 = 20 * 1024 * 1024;
const NETWORK = '10.5.0.0/16';
const REF_SUBNET = '10.5.250.0/24';

t.test('udp backend (no Backend in the config): tsflanneld hosts and a reference flannel udp peer', async (t) => {
  const bed = await createTestbed({ hosts: 3, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, JSON.stringify({ Network: NETWORK })]);
  const [h1, h2, h3] = bed.hosts as [TestHost, TestHost, TestHost];

  // The reference peer's lease, as flanneld's udp backend writes it (24 h etcd lease).
  const ref = await startUdpReferencePeer(h3, { subnet: REF_SUBNET, network: NETWORK });
  t.teardown(() => ref.stop());
  const granted = await etcd.etcdctl(['lease', 'grant', '86400']);
  const id = /lease ([0-9a-f]+) granted/.exec(granted)![1]!;
  await etcd.etcdctl(['put', `--lease=${id}`, `${ETCD_PREFIX}/subnets/10.5.250.0-24`, ref.leaseValue]);

  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const daemons: DaemonNode[] = [d1, d2];
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of daemons) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  await ref.addRoute(r1.subnet, h1.underlayIp);
  await ref.addRoute(r2.subnet, h2.underlayIp);
  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  const c3 = await addContainer(h3, { subnet: REF_SUBNET, index: 0, mtu: h3.mtu - 28 });

  await t.test('leases, subnet.env and device exactly as flanneld udp', async (t) => {
    for (const [h, r] of [
      [h1, r1],
      [h2, r2],
    ] as const) {
      t.equal((await getFlannelLease(etcd, r.subnet))?.value, `{"PublicIP":"${h.underlayIp}","PublicIPv6":null}`, `${h.name} lease JSON`);
      t.same(r.env, {
        FLANNEL_NETWORK: NETWORK,
        FLANNEL_SUBNET: r.subnet.replace(/\.0\/24$/, '.1/24'),
        FLANNEL_MTU: String(h.mtu - 28),
        FLANNEL_IPMASQ: 'false',
      });
      const link = (await h.exec(['ip', '-d', 'link', 'show', 'flannel0'])).stdout;
      t.match(link, /mtu 1472 /, `${h.name}: flannel0 MTU 1472`);
      t.match(link, /tun type tun/, `${h.name}: flannel0 is a TUN`);
    }
    t.same(
      (await h1.exec(['ls', bed.tmpDir + '/h1'])).stdout.split('\n').filter((f) => f.startsWith('tsflanneld-vtep-mac')),
      [],
      'no VTEP MAC file for udp',
    );
    t.match((await h1.exec(['ip', 'route', 'show', 'exact', REF_SUBNET])).stdout, `${REF_SUBNET} dev flannel0`);
  });

  await t.test('ping both ways: tsflanneld ↔ tsflanneld and tsflanneld ↔ reference peer', async (t) => {
    for (const [a, b] of [
      [c1, c2],
      [c2, c1],
      [c1, c3],
      [c3, c1],
      [c2, c3],
      [c3, c2],
    ] as Array<[Container, Container]>) {
      await waitPing(a, b.ip);
      t.pass(`${a.name} → ${b.name}`);
    }
    const big = await ping(c1, c3.ip, { count: 5, interval: 0.1, size: r1.mtu - 28 });
    t.equal(big.received, 5, `full-MTU pings (${r1.mtu} B inner packets) to the reference peer`);
  });

  await t.test('on the wire: bare IPv4 in UDP 8285, nothing in front', async (t) => {
    const cap = await startCapture(h1, 'eth0', `udp and host ${h3.underlayIp}`);
    await ping(c1, c3.ip, { count: 3, interval: 0.1 });
    const packets = await cap.stop();
    const out = packets.filter((p) => p.ip?.src === h1.underlayIp && p.udp !== undefined);
    t.ok(out.length >= 3, `${out.length} datagrams from h1`);
    for (const p of out.slice(0, 3)) {
      t.equal(p.udp!.dstPort, 8285, 'to UDP 8285');
      // A default ping is an 84-byte IPv4 packet (20 IP + 8 ICMP + 56 data): the payload is exactly it.
      t.equal(p.udp!.length, 8 + 84, 'UDP payload = the bare 84-byte inner packet, no header in front');
    }
  });

  await t.test('20 MB TCP intact: with the reference peer both ways, and between tsflanneld hosts', async (t) => {
    let port = 5301;
    for (const [a, b] of [
      [c1, c3],
      [c3, c1],
      [c1, c2],
    ] as Array<[Container, Container]>) {
      const x = await tcpTransfer(a, b, b.ip, MB20, port++);
      t.equal(x.received.bytes, MB20, `${a.name} → ${b.name} bytes`);
      t.equal(x.received.sha256, x.sent.sha256, `${a.name} → ${b.name} sha256`);
      t.comment(`${a.name} → ${b.name}: ${(MB20 / 1e6).toFixed(0)} MB in ${x.seconds.toFixed(2)} s`);
    }
  });

  await t.test('datagrams from a non-peer are dropped and counted', async (t) => {
    const before = (await d1.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' })) ?? 0;
    await h3.exec(['ip', 'addr', 'add', '192.0.2.99/24', 'dev', 'eth0']);
    // A valid ICMP echo from the reference peer's container to c1, but from an address that is no lease's.
    const sendFrom = String.raw`
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
src, dst = socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
icmp = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'x' * 8
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, src, dst)
hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('192.0.2.99', 0))
for _ in range(5): s.sendto(hdr + icmp, (sys.argv[1], 8285))
`;
    await h3.exec(['/usr/bin/python3', '-c', sendFrom, h1.underlayIp, c3.ip, c1.ip]);
    let after = before;
    for (let i = 0; i < 50 && after < before + 5; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = (await d1.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' })) ?? 0;
    }
    t.equal(after - before, 5, 'five datagrams counted as unknownSource');
  });

  await t.test('clean stop', async (t) => {
    t.equal(await d1.stop(), 0);
    t.equal(await d2.stop(), 0);
  });
});
