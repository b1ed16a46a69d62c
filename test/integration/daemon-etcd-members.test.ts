// -etcd-endpoints with a member that silently drops packets (a powered-off host on a routed network:
// SYNs vanish, no ICMP, no RST) listed before the live one. etcd3 picks members at random per call,
// so calls and watches that land on the dead member only fail by timeout; the daemon must still
// acquire a lease, write subnet.env and apply new peer leases. Times are measured and commented,
// never asserted. (A member that answers with EHOSTUNREACH is covered in daemon-faults.)
import t from 'tap';
import { createTestbed, randomVtepMac, waitFor, writeFlannelLease } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, getFlannelLease, startDaemonNode } from '../../netns-fixtures/tsflanneld-node';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const DEAD = '198.51.100.99';

// Each unlucky pick of the dead member costs a 15 s call timeout; leave room for a run of them.
t.setTimeout(600000);

t.test('a blackholed etcd member listed first', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const h1 = bed.hosts[0]!;
  // A route to the dead member (through the etcd namespace's address, any neighbour would do) and a
  // local DROP, so connects to it hang instead of failing fast.
  await h1.exec(['ip', 'route', 'add', `${DEAD}/32`, 'via', '192.0.2.2']);
  await h1.exec(['iptables', '-I', 'OUTPUT', '-d', DEAD, '-j', 'DROP']);
  const started = Date.now();
  const d = await startDaemonNode({ host: h1, etcdEndpoint: `http://${DEAD}:2379,${bed.etcdEndpoint!}`, healthzPort: 8471 });
  t.teardown(() => {
    if (!t.passing()) t.comment(`--- h1 log tail:\n${d.tail(40)}`);
  });
  const r = await d.waitReady(300000);
  t.comment(`ready ${((Date.now() - started) / 1000).toFixed(1)} s after start`);
  const lease = await getFlannelLease(bed.etcd!, r.subnet);
  t.equal(lease?.publicIp, h1.underlayIp, `lease ${r.subnet} acquired`);

  const subnet = '10.5.252.0/24';
  const put = Date.now();
  await writeFlannelLease(bed.etcd!, ETCD_PREFIX, subnet, '192.0.2.201', randomVtepMac());
  await waitFor(`route to ${subnet}`, async () => (await h1.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout.includes(subnet), 240000, 250);
  t.comment(`new peer lease routed ${((Date.now() - put) / 1000).toFixed(1)} s after it was put`);
  t.pass('a new peer lease is applied');
  t.ok(d.running, 'keeps running');
  t.equal(await d.stop(), 0, 'exit 0 on SIGTERM');
});
