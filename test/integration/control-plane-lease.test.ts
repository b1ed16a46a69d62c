// Lease lifecycle of a running daemon: renewal (new etcd lease each time), renewal retry across an
// etcd outage, losing the own key, foreign edits of the own key, peers seen by the daemon, healthz.
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { withEtcd } from '../../netns-fixtures/etcd';
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

// Test-only knobs: a 63 s TTL with the minimum 1 min margin renews every ~3 s.
const SHORT = { TSFLANNELD_TEST_LEASE_TTL_SECONDS: '63', TSFLANNELD_TEST_RENEW_RETRY_SECONDS: '1' };

t.test('renewal issues a new etcd lease with the configured TTL and keeps the value', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const n = startNode(t, etcd, { publicIp: '192.0.2.101', dir: tmpDir(t), env: SHORT, args: ['-subnet-lease-renew-margin=1'] });
  const key = keyOfSubnet(subnetOfEnv(await n.waitForSubnetEnv()));
  const before = await keyLease(etcd, key);
  const value = (await subnetKeys(etcd)).get(key);
  t.ok(before.ttl !== null && before.ttl <= 63 && before.ttl > 0, `short TTL (${before.ttl})`);
  await n.waitForLog(/^renewed lease/);
  const after = await waitFor('key to carry a new lease id', async () => {
    const l = await keyLease(etcd, key);
    return l.id !== before.id ? l : null;
  });
  t.ok(after.ttl !== null && after.ttl <= 63 && after.ttl > 0, `renewed TTL (${after.ttl})`);
  t.equal((await subnetKeys(etcd)).get(key), value, 'same attrs re-put');
  // Superseded leases are revoked, so etcd doesn't accumulate one lease per renewal.
  await waitFor('old lease revoked', async () => !(await etcd.etcdctl(['lease', 'list'])).includes(before.id));
  t.equal(await n.stop(), 0);
});

t.test('renewal failing while etcd is down is retried and succeeds after it returns', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const n = startNode(t, etcd, { publicIp: '192.0.2.102', dir: tmpDir(t), env: SHORT, args: ['-subnet-lease-renew-margin=1'] });
  const key = keyOfSubnet(subnetOfEnv(await n.waitForSubnetEnv()));
  await etcd.stop();
  await n.waitForLog(/^renewing lease .* failed; retrying in 1 s/);
  const renewedBefore = n.logs.filter((l) => /^renewed lease/.test(l.msg)).length;
  await etcd.start();
  await waitFor('a renewal after etcd came back', () => n.logs.filter((l) => /^renewed lease/.test(l.msg)).length > renewedBefore);
  t.not((await keyLease(etcd, key)).id, '0');
  t.equal(n.exitCode, null, 'still running');
  t.equal(await n.stop(), 0);
});

t.test('own key deleted from etcd → logged, non-zero exit', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const n = startNode(t, etcd, { publicIp: '192.0.2.103', dir: tmpDir(t) });
  const subnet = subnetOfEnv(await n.waitForSubnetEnv());
  const key = keyOfSubnet(subnet);
  await etcd.etcdctl(['del', `${PREFIX}/subnets/${key}`]);
  const code = await n.waitForExit();
  t.equal(code, 1);
  const fatal = n.logs.filter((l) => l.level === 60);
  t.equal(fatal.length, 1, 'logged once');
  t.equal(fatal[0]?.msg, `lease for ${subnet} was deleted from etcd (key ${PREFIX}/subnets/${key}); shutting down`);
});

t.test('own key overwritten with other attrs → warning; daemon keeps running', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const n = startNode(t, etcd, { publicIp: '192.0.2.104', dir: tmpDir(t) });
  const key = keyOfSubnet(subnetOfEnv(await n.waitForSubnetEnv()));
  const { id } = await keyLease(etcd, key);
  const foreign =
    '{"PublicIP":"192.0.2.104","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}';
  await etcd.etcdctl(['put', `${PREFIX}/subnets/${key}`, foreign, `--lease=${id}`]);
  const warn = await n.waitForLog(/was changed in etcd by someone else/);
  t.equal(warn.level, 40);
  t.equal(n.exitCode, null, 'still running');
  t.equal(await n.stop(), 0);
});

t.test('own key taken over by another PublicIP → renewal detects it, non-zero exit', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const n = startNode(t, etcd, { publicIp: '192.0.2.105', dir: tmpDir(t), env: SHORT, args: ['-subnet-lease-renew-margin=1'] });
  const subnet = subnetOfEnv(await n.waitForSubnetEnv());
  const key = keyOfSubnet(subnet);
  const other = '{"PublicIP":"192.0.2.199","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}';
  await etcd.etcdctl(['put', `${PREFIX}/subnets/${key}`, other]);
  t.equal(await n.waitForExit(), 1);
  t.equal(
    n.logs.find((l) => l.level === 60)?.msg,
    `lease for ${subnet} was taken over by 192.0.2.199 (key ${PREFIX}/subnets/${key}); shutting down`,
  );
  t.equal((await subnetKeys(etcd)).get(key), other, "the other node's value was not overwritten");
});

t.test('daemon logs peers from etcd, including a foreign flanneld lease', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);
  const a = startNode(t, etcd, { publicIp: '192.0.2.106', dir: tmpDir(t) });
  await a.waitForSubnetEnv();
  await etcd.etcdctl([
    'put',
    `${PREFIX}/subnets/10.5.72.0-24`,
    '{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}',
  ]);
  const line = await a.waitForLog(/^peer lease added: 10\.5\.72\.0\/24 at 192\.168\.1\.10$/);
  t.same(line.backendData, { VNI: 1, VtepMAC: 'ae:12:34:56:78:9a' }, "the peer's BackendData is logged as is");
  const b = startNode(t, etcd, { publicIp: '192.0.2.107', dir: tmpDir(t) });
  const bSubnet = subnetOfEnv(await b.waitForSubnetEnv());
  await a.waitForLog(new RegExp(`^peer lease added: ${bSubnet.replace(/\./g, '\\.')} at 192\\.0\\.2\\.107$`));
  // B's watcher starts after its subnet.env is written, so wait for its snapshot too.
  t.ok(await b.waitForLog(/^peer lease added: 10\.5\.72\.0\/24/), 'B sees the foreign lease in its snapshot');
  t.equal(await a.stop(), 0);
  t.equal(await b.stop(), 0);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

t.test('healthz: /healthz always, /readyz once subnet.env is written', async (t) => {
  const etcd = await withEtcd(t);
  const port = await freePort();
  const n = startNode(t, etcd, { publicIp: '192.0.2.108', dir: tmpDir(t), args: ['-healthz-ip=127.0.0.1', `-healthz-port=${port}`] });
  await n.waitForLog(/flannel config not found/);
  t.same(await get(port, '/healthz'), { status: 200, body: 'flanneld is running' });
  t.same(await get(port, '/readyz'), { status: 503, body: 'flanneld is not ready yet' });
  t.equal((await get(port, '/other')).status, 404);
  await putConfig(etcd, VXLAN_CONFIG);
  await n.waitForSubnetEnv();
  t.same(await get(port, '/readyz'), { status: 200, body: 'flanneld is ready' });
  t.equal(await n.stop(), 0);
});
