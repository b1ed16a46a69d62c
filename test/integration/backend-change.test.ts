// A cluster whose backend changes: the config moves from vxlan to udp to host-gw and the nodes are
// restarted one at a time. While they disagree, each side ignores the other's lease (flannel skips
// leases of another BackendType) and says so; once both run the new backend they talk again, the
// leases carry the new type (exact JSON), subnet.env the new MTU, and the subnet is kept throughout.
import t from 'tap';
import { addContainer, createTestbed, waitFor, type TestHost } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, getFlannelLease, startDaemonNode, tcpTransfer, waitPing } from '../../netns-fixtures/tsflanneld-node';

const MB20 = 20 * 1024 * 1024;

async function routeOf(host: TestHost, subnet: string): Promise<string> {
  return (await host.exec(['ip', 'route', 'show', 'exact', subnet])).stdout.trim().replace(/\s+/g, ' ');
}

t.test('vxlan → udp → host-gw across restarts, one node at a time', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  const etcd = bed.etcd!;
  const put = (config: object): Promise<string> => etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, JSON.stringify(config)]);
  await put({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of [d1, d2]) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  // Containers keep the vxlan MTU (1450), which fits every backend's.
  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  await waitPing(c1, c2.ip);
  await waitPing(c2, c1.ip);

  const steps: Array<{
    backend: object | null;
    name: string;
    lease: (h: TestHost) => string;
    mtu: number;
    route: (h: TestHost) => RegExp;
  }> = [
    {
      backend: null, // flannel's default: udp
      name: 'udp',
      lease: (h) => `{"PublicIP":"${h.underlayIp}","PublicIPv6":null}`,
      mtu: 1472,
      route: () => / dev flannel0 /,
    },
    {
      backend: { Type: 'host-gw' },
      name: 'host-gw',
      lease: (h) => `{"PublicIP":"${h.underlayIp}","PublicIPv6":null,"BackendType":"host-gw"}`,
      mtu: 1500,
      route: (peer) => new RegExp(` via ${peer.underlayIp.replace(/\./g, '\\.')} dev eth0 proto 157`),
    },
  ];
  let port = 5401;
  for (const step of steps) {
    await t.test(`config → ${step.name}`, async (t) => {
      await put(step.backend === null ? { Network: '10.5.0.0/16' } : { Network: '10.5.0.0/16', Backend: step.backend });
      await d1.restart();
      const a = await d1.waitReady();
      t.equal(a.subnet, r1.subnet, 'h1 keeps its subnet');
      t.equal(a.env.FLANNEL_MTU, String(step.mtu), `h1 FLANNEL_MTU ${step.mtu}`);
      t.equal((await getFlannelLease(etcd, r1.subnet))?.value, step.lease(h1), 'h1 lease JSON of the new backend');
      // Mixed: h2 still runs the old backend; each ignores the other's lease and drops its route.
      await waitFor('h2 drops its route to h1', async () => !(await routeOf(h2, r1.subnet)).includes('flannel'), 30000);
      t.pass('h2 (old backend) no longer routes to h1');
      t.equal(await d2.metricValue('tsflanneld_peers'), 0, 'h2: no peers while the backends differ');

      await d2.restart();
      const b = await d2.waitReady();
      t.equal(b.subnet, r2.subnet, 'h2 keeps its subnet');
      t.equal((await getFlannelLease(etcd, r2.subnet))?.value, step.lease(h2), 'h2 lease JSON of the new backend');
      await waitFor('routes of the new backend', async () => step.route(h2).test(` ${await routeOf(h1, r2.subnet)} `), 30000);
      t.match(` ${await routeOf(h2, r1.subnet)} `, step.route(h1), `h2 → h1: ${await routeOf(h2, r1.subnet)}`);
      await waitPing(c1, c2.ip);
      await waitPing(c2, c1.ip);
      const x = await tcpTransfer(c1, c2, c2.ip, MB20, port++);
      t.equal(x.received.sha256, x.sent.sha256, `20 MB c1 → c2 intact over ${step.name}`);
    });
  }
  t.equal(await d1.stop(), 0);
  t.equal(await d2.stop(), 0);
});
