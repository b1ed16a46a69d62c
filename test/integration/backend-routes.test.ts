// host-gw and vxlan DirectRouting on three hosts: h1 and h2 share an L2 segment; h3 is "routed": its
// public IP (198.51.100.13) is not on h1/h2's segment, they reach it through a router (h3 itself,
// via its 192.0.2.13). host-gw: h1 ↔ h2 talk over `via <PublicIP> dev eth0` routes, h3 is refused on
// h1 and h2 (log line, metric, no half route) while everything else works; an operator's route on the
// shared eth0 is never touched. DirectRouting: h2 gets a direct route, h3 the overlay, at once; when
// h2's PublicIP changes to a routed one its route moves onto the overlay.
import t, { type Test } from 'tap';
import { addContainer, createTestbed, ping, waitFor, type Container, type TestHost } from '../../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  getFlannelLease,
  startDaemonNode,
  tcpTransfer,
  waitPing,
  type DaemonNode,
  type DaemonReady,
} from '../../netns-fixtures/tsflanneld-node';

const MB20 = 20 * 1024 * 1024;
const ROUTED_IP = '198.51.100.13';

async function routeOf(host: TestHost, subnet: string): Promise<string> {
  return (await host.exec(['ip', 'route', 'show', 'exact', subnet])).stdout.trim().replace(/\s+/g, ' ');
}

interface Cluster {
  hosts: [TestHost, TestHost, TestHost];
  daemons: [DaemonNode, DaemonNode, DaemonNode];
  ready: [DaemonReady, DaemonReady, DaemonReady];
  containers: [Container, Container, Container];
  etcd: NonNullable<Awaited<ReturnType<typeof createTestbed>>['etcd']>;
}

async function cluster(t: Test, config: object): Promise<Cluster> {
  const bed = await createTestbed({ hosts: 3, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, JSON.stringify(config)]);
  const [h1, h2, h3] = bed.hosts as [TestHost, TestHost, TestHost];
  // h3's public address is on another network; h1 and h2 reach it through 192.0.2.13.
  await h3.exec(['ip', 'addr', 'add', `${ROUTED_IP}/24`, 'dev', 'eth0']);
  for (const h of [h1, h2]) await h.exec(['ip', 'route', 'add', '198.51.100.0/24', 'via', h3.underlayIp]);
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d3 = await startDaemonNode({ host: h3, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471, args: ['-public-ip', ROUTED_IP] });
  const daemons: [DaemonNode, DaemonNode, DaemonNode] = [d1, d2, d3];
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of daemons) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const ready = (await Promise.all(daemons.map((d) => d.waitReady()))) as [DaemonReady, DaemonReady, DaemonReady];
  const containers = (await Promise.all(
    [h1, h2, h3].map((h, i) => addContainer(h, { subnet: ready[i]!.subnet, index: 0, mtu: ready[i]!.mtu })),
  )) as [Container, Container, Container];
  return { hosts: [h1, h2, h3], daemons, ready, containers, etcd };
}

t.test('host-gw: same-L2 peers routed via their PublicIP; a routed peer is refused, logged and counted', async (t) => {
  const { hosts, daemons, ready, containers, etcd } = await cluster(t, { Network: '10.5.0.0/16', Backend: { Type: 'host-gw' } });
  const [h1, h2] = hosts;
  const [d1, d2, d3] = daemons;
  const [r1, r2, r3] = ready;
  const [c1, c2] = containers;

  await t.test('leases and subnet.env exactly as flanneld writes them', async (t) => {
    for (const [h, r] of [
      [h1, r1],
      [h2, r2],
    ] as const) {
      const lease = await getFlannelLease(etcd, r.subnet);
      t.equal(lease?.value, `{"PublicIP":"${h.underlayIp}","PublicIPv6":null,"BackendType":"host-gw"}`, `${h.name} lease JSON`);
      const first = r.subnet.replace(/\.0\/24$/, '.1/24');
      t.same(r.env, { FLANNEL_NETWORK: '10.5.0.0/16', FLANNEL_SUBNET: first, FLANNEL_MTU: '1500', FLANNEL_IPMASQ: 'false' });
    }
    t.equal((await getFlannelLease(etcd, r3.subnet))?.publicIp, ROUTED_IP);
    t.equal((await h1.exec(['ip', '-o', 'link', 'show', 'type', 'tun'])).stdout.trim(), '', 'no device: host-gw has none');
  });

  // An operator's route inside the Network on the shared interface, added while tsflanneld runs.
  await h1.exec(['ip', 'route', 'add', '10.5.250.0/24', 'via', h2.underlayIp, 'dev', 'eth0']);

  await t.test('h1 ↔ h2: direct routes, ping both ways, 20 MB TCP intact both ways', async (t) => {
    await waitFor('h1 route to h2', async () => (await routeOf(h1, r2.subnet)).includes('via'), 30000);
    t.equal(await routeOf(h1, r2.subnet), `${r2.subnet} via ${h2.underlayIp} dev eth0 proto 157`);
    t.equal(await routeOf(h2, r1.subnet), `${r1.subnet} via ${h1.underlayIp} dev eth0 proto 157`);
    await waitPing(c1, c2.ip);
    await waitPing(c2, c1.ip);
    const ab = await tcpTransfer(c1, c2, c2.ip, MB20, 5001);
    t.equal(ab.received.bytes, MB20, 'c1 → c2 bytes');
    t.equal(ab.received.sha256, ab.sent.sha256, 'c1 → c2 sha256');
    const ba = await tcpTransfer(c2, c1, c1.ip, MB20, 5002);
    t.equal(ba.received.bytes, MB20, 'c2 → c1 bytes');
    t.equal(ba.received.sha256, ba.sent.sha256, 'c2 → c1 sha256');
  });

  await t.test('h3 (not on the L2) is refused on h1 and h2: a clear log line, the metric, no route', async (t) => {
    for (const [h, d] of [
      [h1, d1],
      [h2, d2],
    ] as const) {
      const line = await d.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith(`peer ${r3.subnet} refused`));
      t.equal(line.level, 40, 'a warning');
      t.match(String(line.msg), `its PublicIP ${ROUTED_IP} is not on the L2 network of eth0`);
      t.match(String(line.msg), /use Backend\.Type "vxlan" with "DirectRouting": true/);
      t.equal(
        d.countLogs((l) => typeof l.msg === 'string' && l.msg.startsWith(`peer ${r3.subnet} refused`)),
        1,
        'logged once',
      );
      t.equal(await routeOf(h, r3.subnet), '', `${h.name}: no route to ${r3.subnet}`);
      t.equal(await d.metricValue('tsflanneld_peers_refused'), 1, `${h.name}: tsflanneld_peers_refused 1`);
      t.equal(await d.metricValue('tsflanneld_peers'), 1, `${h.name}: one routed peer`);
    }
    t.ok(d3.running, 'h3 runs (its own routes to h1/h2 are on-link for it)');
    const res = await ping(c1, c2.ip, { count: 5, interval: 0.1 });
    t.equal(res.received, 5, 'h1 ↔ h2 unaffected');
  });

  await t.test("the operator's route on eth0 survives resyncs and the stop; our routes stay like flanneld's", async (t) => {
    // A new peer lease forces a batch; the lease watcher's events do not touch foreign routes.
    await d2.restart();
    await d2.waitReady();
    t.match(await routeOf(h1, '10.5.250.0/24'), `10.5.250.0/24 via ${h2.underlayIp} dev eth0`);
    t.equal(await d1.stop(), 0);
    t.match(await routeOf(h1, '10.5.250.0/24'), `via ${h2.underlayIp}`, 'still there after the stop');
    t.equal(await routeOf(h1, r2.subnet), `${r2.subnet} via ${h2.underlayIp} dev eth0 proto 157`, 'kept, as flanneld keeps them');
  });
});

t.test('vxlan DirectRouting: a same-L2 peer routed directly and a routed peer over the overlay, at once', async (t) => {
  const config = { Network: '10.5.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } };
  const { hosts, daemons, ready, containers, etcd } = await cluster(t, config);
  const [h1, h2, h3] = hosts;
  const [d1, d2] = daemons;
  const [r1, r2, r3] = ready;
  const [c1, c2, c3] = containers;

  await t.test('routes: h2 via its PublicIP on eth0, h3 into flannel.1', async (t) => {
    await waitFor('h1 routes', async () => (await routeOf(h1, r2.subnet)) !== '' && (await routeOf(h1, r3.subnet)) !== '', 30000);
    t.equal(await routeOf(h1, r2.subnet), `${r2.subnet} via ${h2.underlayIp} dev eth0 proto 157`);
    const overlay = await routeOf(h1, r3.subnet);
    t.equal(overlay, `${r3.subnet} dev flannel.1 scope link`, `h1: ${overlay}`);
    t.equal(await routeOf(h3, r1.subnet), `${r1.subnet} via ${h1.underlayIp} dev eth0 proto 157`, 'h3 reaches h1 on-link');
    t.equal(r1.mtu, h1.mtu - 50, 'FLANNEL_MTU = underlay − 50');
    t.equal(await d1.metricValue('tsflanneld_peers'), 2);
  });

  await t.test('ping and 20 MB TCP over both paths', async (t) => {
    for (const [a, b] of [
      [c1, c2],
      [c2, c1],
      [c1, c3],
      [c3, c1],
    ] as const) {
      await waitPing(a, b.ip);
    }
    let port = 5101;
    for (const [a, b] of [
      [c1, c2],
      [c1, c3],
      [c3, c1],
    ] as const) {
      const x = await tcpTransfer(a, b, b.ip, MB20, port++);
      t.equal(x.received.bytes, MB20, `${a.name} → ${b.name} bytes`);
      t.equal(x.received.sha256, x.sent.sha256, `${a.name} → ${b.name} sha256`);
    }
    const viaTun = await d1.metricValue('tsflanneld_peer_bytes_total', { peer: r3.subnet, direction: 'tx' });
    t.ok(viaTun !== null && viaTun >= MB20, `h1's data plane carried the routed peer's traffic (${viaTun})`);
    const direct = await d1.metricValue('tsflanneld_peer_bytes_total', { peer: r2.subnet, direction: 'tx' });
    t.ok(direct !== null && direct < 1e6, `the direct peer's traffic bypassed it (${direct})`);
  });

  await t.test("h2's PublicIP changes to a routed address: h1 moves its route onto the overlay", async (t) => {
    const lease = await getFlannelLease(etcd, r2.subnet);
    t.ok(lease);
    if (!lease) return;
    t.equal(await d2.stop(), 0);
    const newIp = '198.51.100.12';
    await h2.exec(['ip', 'addr', 'add', `${newIp}/24`, 'dev', 'eth0']);
    await h1.exec(['ip', 'route', 'add', `${newIp}/32`, 'via', h2.underlayIp]);
    await h3.exec(['ip', 'route', 'add', `${newIp}/32`, 'via', h2.underlayIp]).catch(() => undefined); // on-link for h3 anyway
    const granted = await etcd.etcdctl(['lease', 'grant', '86400']);
    const id = /lease ([0-9a-f]+) granted/.exec(granted)![1]!;
    await etcd.etcdctl(['put', `--lease=${id}`, lease.key, lease.value.replace(h2.underlayIp, newIp)]);
    await waitFor('h1 route to h2 on the overlay', async () => (await routeOf(h1, r2.subnet)).includes('flannel.1'), 30000);
    const moved = await routeOf(h1, r2.subnet);
    t.equal(moved, `${r2.subnet} dev flannel.1 scope link`, `h1: ${moved}`);
    d2.opts.args = ['-public-ip', newIp];
    await d2.restart();
    const again = await d2.waitReady();
    t.equal(again.subnet, r2.subnet, 'h2 keeps its subnet (found by its new PublicIP)');
    await waitPing(c1, c2.ip);
    await waitPing(c2, c1.ip);
    const x = await tcpTransfer(c2, c1, c1.ip, MB20, 5201);
    t.equal(x.received.sha256, x.sent.sha256, 'c2 → c1 20 MB intact over the overlay');
  });
});
