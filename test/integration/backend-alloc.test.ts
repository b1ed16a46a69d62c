// The alloc backend (flannel pkg/backend/alloc): two hosts lease subnets and write subnet.env exactly as
// flanneld does (lease without BackendType/BackendData, FLANNEL_MTU = the interface MTU); nothing else:
// no device, no route, no VTEP MAC file. A peer's lease is logged but routes nowhere.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { createTestbed, type TestHost } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, getFlannelLease, startDaemonNode } from '../../netns-fixtures/tsflanneld-node';

t.test('alloc: leases and subnet.env only', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}']);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of [d1, d2]) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  t.not(r1.subnet, r2.subnet);
  for (const [h, r, d] of [
    [h1, r1, d1],
    [h2, r2, d2],
  ] as const) {
    t.equal((await getFlannelLease(etcd, r.subnet))?.value, `{"PublicIP":"${h.underlayIp}","PublicIPv6":null}`, `${h.name} lease JSON`);
    t.same(r.env, {
      FLANNEL_NETWORK: '10.5.0.0/16',
      FLANNEL_SUBNET: r.subnet.replace(/\.0\/24$/, '.1/24'),
      FLANNEL_MTU: '1500',
      FLANNEL_IPMASQ: 'false',
    });
    t.same(
      fs.readdirSync(path.dirname(d.subnetFile)).filter((f) => f.startsWith('tsflanneld-vtep-mac')),
      [],
      'no VTEP MAC file',
    );
    const links = (await h.exec(['ip', '-o', 'link', 'show'])).stdout;
    t.notMatch(links, /flannel/, `${h.name}: no flannel device`);
  }
  await d1.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith(`peer lease added: ${r2.subnet}`));
  const routes = (await h1.exec(['ip', 'route', 'show'])).stdout;
  t.notMatch(routes, /10\.5\./, 'h1: no route into the Network');
  t.equal(await d1.metricValue('tsflanneld_peers'), 0, 'no data plane, no peers');
  t.equal(await d1.stop(), 0);
  t.equal(await d2.stop(), 0);
});
