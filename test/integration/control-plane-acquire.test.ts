// Lease acquisition through the real CLI against a real etcd: allocation, limits, restarts,
// reservations, TTL, subnet.env, config waiting.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { withEtcd } from '../../netns-fixtures/etcd';
import { parseIp4Net } from '../../src/subnet/ip4';
import { vtepMacPath } from '../../src/subnet/vtep-mac';
import {
  PREFIX,
  VXLAN_CONFIG,
  keyLease,
  keyOfSubnet,
  putConfig,
  startNode,
  subnetKeys,
  subnetOfEnv,
  tmpDir,
  waitFor,
} from './control-plane-helpers';

t.test('three daemons get three distinct subnets with flannel-format leases', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const nodes = [1, 2, 3].map((i) => startNode(t, etcd, { publicIp: `192.0.2.${10 + i}`, dir: tmpDir(t) }));
  const subnets = await Promise.all(nodes.map(async (n) => subnetOfEnv(await n.waitForSubnetEnv())));
  t.equal(new Set(subnets).size, 3, `distinct subnets ${subnets.join(' ')}`);
  const keys = await subnetKeys(etcd);
  t.equal(keys.size, 3);
  for (const [i, n] of nodes.entries()) {
    const value = keys.get(keyOfSubnet(subnets[i]!));
    t.ok(value, `key for ${subnets[i]}`);
    const mac = fs.readFileSync(vtepMacPath(n.subnetFile), 'utf8').trim();
    t.equal(
      value,
      `{"PublicIP":"${n.opts.publicIp}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`,
      'value byte-identical to flanneld',
    );
    const net = parseIp4Net(subnets[i]!);
    t.equal(net.prefixLen, 24);
    t.not(subnets[i], '10.5.0.0/24', 'first subnet is skipped (SubnetMin default)');
  }
  for (const n of nodes) t.equal(await n.stop(), 0, 'SIGTERM exits 0');
  t.equal((await subnetKeys(etcd)).size, 3, 'leases are kept in etcd on shutdown');
});

t.test('SubnetMin/SubnetMax/SubnetLen 28 respected; exhaustion is a clear fatal error', async (t) => {
  const etcd = await withEtcd(t);
  // 10.5.0.32, .48 are the only two /28s in [Min..Max].
  await putConfig(etcd, { ...VXLAN_CONFIG, SubnetLen: 28, SubnetMin: '10.5.0.32', SubnetMax: '10.5.0.48' });
  const a = startNode(t, etcd, { publicIp: '192.0.2.21', dir: tmpDir(t) });
  const b = startNode(t, etcd, { publicIp: '192.0.2.22', dir: tmpDir(t) });
  const got = [subnetOfEnv(await a.waitForSubnetEnv()), subnetOfEnv(await b.waitForSubnetEnv())].sort();
  t.same(got, ['10.5.0.32/28', '10.5.0.48/28']);
  t.match(await a.waitForSubnetEnv(), /^FLANNEL_SUBNET=10\.5\.0\.(33|49)\/28$/m);

  const c = startNode(t, etcd, { publicIp: '192.0.2.23', dir: tmpDir(t) });
  const code = await c.waitForExit();
  t.not(code, 0, 'exhaustion exits non-zero');
  t.equal(code, 1);
  const fatal = c.logs.find((l) => l.level === 60);
  t.ok(fatal, 'one fatal log line');
  t.match(fatal?.msg, /^out of subnets in 10\.5\.0\.0\/16 \[10\.5\.0\.32\.\.10\.5\.0\.48\]/);
  t.equal(c.logs.filter((l) => l.level === 60).length, 1, 'logged once');
  t.notOk(fs.existsSync(c.subnetFile), 'no subnet.env without a lease');
});

t.test('restart keeps subnet and VTEP MAC; lease TTL is 24 h and renewed on reuse', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const dir = tmpDir(t);
  const first = startNode(t, etcd, { publicIp: '192.0.2.31', dir });
  const subnet = subnetOfEnv(await first.waitForSubnetEnv());
  const key = keyOfSubnet(subnet);
  const value1 = (await subnetKeys(etcd)).get(key);
  const lease1 = await keyLease(etcd, key);
  t.not(lease1.id, '0', 'attached to an etcd lease');
  t.ok(lease1.ttl !== null && lease1.ttl > 86000 && lease1.ttl <= 86400, `TTL ≈ 86400 (remaining ${lease1.ttl})`);
  t.equal(await first.stop(), 0);

  fs.rmSync(first.subnetFile); // reuse must come from the lease with our PublicIP, not the old subnet.env
  const second = startNode(t, etcd, { publicIp: '192.0.2.31', dir });
  t.equal(subnetOfEnv(await second.waitForSubnetEnv()), subnet, 'same subnet after restart');
  t.ok(second.findLog(/reusing/), 'logged reuse');
  t.equal((await subnetKeys(etcd)).get(key), value1, 'same value, so same VTEP MAC');
  const lease2 = await keyLease(etcd, key);
  t.not(lease2.id, lease1.id, 'fresh etcd lease');
  await waitFor('the superseded etcd lease to be revoked', async () => !(await etcd.etcdctl(['lease', 'list'])).includes(lease1.id));
  t.equal((await subnetKeys(etcd)).size, 1);
  t.equal(await second.stop(), 0);
});

t.test('previous subnet from subnet.env is reacquired when its lease is gone', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const dir = tmpDir(t);
  fs.writeFileSync(
    path.join(dir, 'subnet.env'),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.77.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
  );
  const n = startNode(t, etcd, { publicIp: '192.0.2.35', dir });
  t.equal(subnetOfEnv(await n.waitForSubnetEnv()), '10.5.77.0/24');
  t.ok((await subnetKeys(etcd)).has('10.5.77.0-24'));
  t.equal(await n.stop(), 0);
});

t.test('a reservation for our PublicIP is used and never given a TTL', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  // An operator reservation: plain put without an etcd lease (flannel Documentation/reservations.md).
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.200.0-24`, '{"PublicIP":"192.0.2.41"}']);
  const n = startNode(t, etcd, { publicIp: '192.0.2.41', dir: tmpDir(t) });
  t.equal(subnetOfEnv(await n.waitForSubnetEnv()), '10.5.200.0/24');
  const lease = await keyLease(etcd, '10.5.200.0-24');
  t.equal(lease.id, '0', 'still no etcd lease');
  const value = (await subnetKeys(etcd)).get('10.5.200.0-24')!;
  t.match(JSON.parse(value), { PublicIP: '192.0.2.41', BackendType: 'vxlan', BackendData: { VNI: 1 } }, 'our attrs published');
  // Another node must not take the reserved subnet.
  const other = startNode(t, etcd, { publicIp: '192.0.2.42', dir: tmpDir(t) });
  t.not(subnetOfEnv(await other.waitForSubnetEnv()), '10.5.200.0/24');
  t.equal(await n.stop(), 0);
  t.equal(await other.stop(), 0);
  t.equal((await keyLease(etcd, '10.5.200.0-24')).id, '0', 'still a reservation after shutdown');
});

t.test("subnet.env content is exactly flannel's", async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, { Network: '10.5.0.0/16', SubnetMin: '10.5.9.0', SubnetMax: '10.5.9.0', Backend: { Type: 'vxlan', MTU: 1500 } });
  const n = startNode(t, etcd, { publicIp: '192.0.2.51', dir: tmpDir(t), args: ['-ip-masq'] });
  t.equal(await n.waitForSubnetEnv(), 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  t.equal(await n.stop(), 0);
});

t.test('missing config is waited for, then picked up', async (t) => {
  const etcd = await withEtcd(t);
  const n = startNode(t, etcd, { publicIp: '192.0.2.61', dir: tmpDir(t) });
  const line = await n.waitForLog(/flannel config not found/);
  t.equal(line.msg, `flannel config not found in etcd store (${PREFIX}/config), retrying`);
  t.notOk(fs.existsSync(n.subnetFile));
  await putConfig(etcd, VXLAN_CONFIG);
  t.match(await n.waitForSubnetEnv(), /^FLANNEL_SUBNET=10\.5\.\d+\.1\/24$/m);
  t.equal(n.logs.filter((l) => /flannel config not found/.test(l.msg)).length, 1, 'warned once, not every second');
  t.equal(await n.stop(), 0);
});

t.test('a backend type tsflanneld does not implement is rejected with exit 1', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, { Network: '10.5.0.0/16', Backend: { Type: 'ipip' } });
  const n = startNode(t, etcd, { publicIp: '192.0.2.71', dir: tmpDir(t) });
  t.equal(await n.waitForExit(), 1);
  t.match(n.logs.find((l) => l.level === 60)?.msg, /Backend\.Type "ipip" is not implemented by tsflanneld .*use "vxlan"/);
  t.equal((await subnetKeys(etcd)).size, 0, 'no lease taken');
});

t.test('CLI: bad flag exits 2, -help exits 0', async (t) => {
  const etcd = await withEtcd(t);
  const bad = startNode(t, etcd, { publicIp: '192.0.2.81', dir: tmpDir(t), args: ['-no-such-flag'] });
  t.equal(await bad.waitForExit(), 2);
  t.match(bad.stderrText.join('\n'), /flag provided but not defined: -no-such-flag/);
  const help = startNode(t, etcd, { publicIp: '192.0.2.82', dir: tmpDir(t), args: ['--help'] });
  t.equal(await help.waitForExit(), 0);
});
