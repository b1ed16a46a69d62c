// The whole daemon end to end: two hosts run `bin/tsflanneld` against a real etcd, each with a
// container on its leased subnet. Ping and a 20 MB TCP transfer between the containers; then the
// peer's lease is deleted in etcd (route and peer go, traffic stops; the peer itself exits 1 because
// it lost its lease) and put back with the same JSON (route back; the restarted peer keeps its subnet
// and traffic flows again).
import t from 'tap';
import { addContainer, createTestbed, ping, waitFor, type TestHost } from '../../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  getFlannelLease,
  startDaemonNode,
  tcpTransfer,
  waitPing,
  type DaemonNode,
} from '../../netns-fixtures/tsflanneld-node';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const MB20 = 20 * 1024 * 1024;
const TUN = 'flannel.1';

async function routesOn(host: TestHost): Promise<string> {
  return (await host.exec(['ip', 'route', 'show', 'dev', TUN])).stdout;
}

t.test('two tsflanneld hosts: containers talk; lease deletion and re-put', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  t.not(r1.subnet, r2.subnet, `distinct leases ${r1.subnet} and ${r2.subnet}`);
  t.equal(r1.mtu, h1.mtu - 50, 'FLANNEL_MTU = underlay MTU − 50');
  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });

  const dump = (d: DaemonNode): void => {
    t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  };
  t.teardown(() => {
    if (t.passing()) return;
    dump(d1);
    dump(d2);
  });

  await t.test('ping between containers, both ways', async (t) => {
    await waitPing(c1, c2.ip);
    await waitPing(c2, c1.ip);
    const big = await ping(c1, c2.ip, { count: 5, interval: 0.1, size: r1.mtu - 28 });
    t.equal(big.received, 5, `full-MTU pings (${r1.mtu} B inner packets) arrive`);
    t.match(await routesOn(h1), r2.subnet, `h1 routes ${r2.subnet} via ${TUN}`);
    t.match(await routesOn(h2), r1.subnet, `h2 routes ${r1.subnet} via ${TUN}`);
    t.equal(await d1.metricValue('tsflanneld_peers'), 1, 'h1 /metrics: one peer');
  });

  await t.test('20 MB TCP container → container arrives intact, both ways', async (t) => {
    const ab = await tcpTransfer(c1, c2, c2.ip, MB20, 5001);
    t.equal(ab.received.bytes, MB20, 'c1 → c2 byte count');
    t.equal(ab.received.sha256, ab.sent.sha256, 'c1 → c2 sha256');
    t.comment(`c1 → c2: ${MB20 / 1e6} MB in ${ab.seconds.toFixed(2)} s`);
    const ba = await tcpTransfer(c2, c1, c1.ip, MB20, 5002);
    t.equal(ba.received.bytes, MB20, 'c2 → c1 byte count');
    t.equal(ba.received.sha256, ba.sent.sha256, 'c2 → c1 sha256');
    t.comment(`c2 → c1: ${MB20 / 1e6} MB in ${ba.seconds.toFixed(2)} s`);
    const tx = await d1.metricValue('tsflanneld_peer_bytes_total', { peer: r2.subnet, direction: 'tx' });
    t.ok(tx !== null && tx >= MB20, `h1 /metrics counts ≥ 20 MB sent to ${r2.subnet} (${tx})`);
  });

  await t.test('lease deleted in etcd: route and peer gone, traffic stops; re-put: back', async (t) => {
    const lease = await getFlannelLease(etcd, r2.subnet);
    t.ok(lease, `h2's lease ${r2.subnet} is in etcd`);
    if (!lease) return;
    t.equal(lease.publicIp, h2.underlayIp);
    await etcd.etcdctl(['del', lease.key]);

    await waitFor(`h1 route to ${r2.subnet} removed`, async () => !(await routesOn(h1)).includes(r2.subnet), 60000);
    t.pass(`h1: route to ${r2.subnet} removed`);
    await waitFor('h1 /metrics: no peers', async () => (await d1.metricValue('tsflanneld_peers')) === 0, 30000);
    t.pass('h1: peer gone from the data plane');
    const during = await ping(c1, c2.ip, { count: 5, interval: 0.1, waitSec: 1 });
    t.equal(during.received, 0, 'no traffic to the deleted lease');
    // A node whose lease an operator deleted stops (exit 1, unlike flanneld's 0) so supervisors notice.
    t.equal(await d2.exited, 1, 'h2 exits 1 after losing its lease');
    t.ok(
      d2.runLogs().some((l) => /was deleted from etcd/.test(String(l.msg))),
      'h2 says its lease was deleted',
    );
    t.ok(d1.running, 'h1 keeps running');

    // Put the same JSON back (as flanneld would: with a 24 h etcd lease).
    const granted = await etcd.etcdctl(['lease', 'grant', '86400']);
    const id = /lease ([0-9a-f]+) granted/.exec(granted)![1]!;
    await etcd.etcdctl(['put', `--lease=${id}`, lease.key, lease.value]);
    await waitFor(`h1 route to ${r2.subnet} back`, async () => (await routesOn(h1)).includes(r2.subnet), 60000);
    t.pass(`h1: route to ${r2.subnet} back after the re-put`);
    await waitFor('h1 /metrics: one peer again', async () => (await d1.metricValue('tsflanneld_peers')) === 1, 30000);

    // The supervisor restarts h2: it finds the lease by its PublicIP and keeps the subnet.
    await d2.restart();
    const again = await d2.waitReady();
    t.equal(again.subnet, r2.subnet, 'h2 keeps its subnet after the restart');
    const after = await getFlannelLease(etcd, r2.subnet);
    t.equal(after?.vtepMac, lease.vtepMac, 'same VtepMAC (persisted next to subnet.env)');
    await waitPing(c1, c2.ip);
    await waitPing(c2, c1.ip);
    const res = await ping(c1, c2.ip, { count: 10, interval: 0.05 });
    t.equal(res.received, 10, 'traffic flows again');
    t.ok(d1.running, 'h1 never restarted');
  });

  await t.test('clean stop', async (t) => {
    t.equal(await d1.stop(), 0, 'h1 exits 0 on SIGTERM');
    t.equal(await d2.stop(), 0, 'h2 exits 0 on SIGTERM');
  });
});
