// The control plane at scale, with a real etcd and real daemons in namespaces: 10,000 peer leases are
// in etcd when h1's tsflanneld starts; a real tsflanneld on h2 is one more peer that traffic goes to.
//  1. h1 routes exactly the 10,001 leases other than its own, and forwards to h2.
//  2. A burst of 1,000 concurrent puts, then 1,000 concurrent deletes: routes == leases after each,
//     no event lost, and the watch never reconnects (a blocked event loop would make it time out).
//  3. kill -9 h1, change the lease set while it is down, start it again: same subnet, forwarding to h2
//     over the persistent TUN, routes == leases again.
// No timing thresholds: the waits below are generous upper bounds for a loaded machine.
import path from 'node:path';
import t, { type Test } from 'tap';
import { addContainer, createTestbed, waitFor, type TestHost } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, startDaemonNode, waitPing, type DaemonNode, type EtcdCtl } from '../../netns-fixtures/tsflanneld-node';

t.setTimeout(900000);
// The daemons' own leases come from 10.254.0.0/16, which the fake leases never use.
const CONFIG = '{"Network":"10.0.0.0/8","SubnetLen":24,"SubnetMin":"10.254.0.0","SubnetMax":"10.254.255.0","Backend":{"Type":"vxlan"}}';
const LOADER = path.resolve(__dirname, '..', '..', 'netns-fixtures', 'lease-loader.js');
const TUN = 'flannel.1';
const N = 10_000;
const BURST = 1_000;

async function load(
  host: TestHost,
  endpoint: string,
  mode: string,
  first: number,
  count: number,
): Promise<{ errors: number; lastError: string }> {
  const r = await host.exec([process.execPath, LOADER, endpoint, ETCD_PREFIX, mode, String(first), String(count)], { timeoutMs: 300000 });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { errors: number; lastError: string };
}

async function routedSubnets(host: TestHost): Promise<string[]> {
  const out = (await host.exec(['ip', '-4', '-o', 'route', 'show', 'dev', TUN, 'proto', 'boot'])).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().split(' ')[0]!)
    .filter((s) => s !== '')
    .sort();
}

/** Subnets of all leases in etcd; keys only (the values of 10,000 leases overflow execFile's 1 MiB buffer). */
async function leaseSubnets(etcd: EtcdCtl): Promise<string[]> {
  const out = await etcd.etcdctl(['get', '--prefix', '--keys-only', `${ETCD_PREFIX}/subnets/`]);
  const subnets: string[] = [];
  for (const line of out.split('\n')) {
    const m = /\/subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(line.trim());
    if (m) subnets.push(`${m[1]}/${m[2]}`);
  }
  return subnets;
}

/** Waits until d's routes equal the leases in etcd minus its own, then asserts exactly that. */
async function converges(t: Test, etcd: EtcdCtl, d: DaemonNode, own: string, what: string): Promise<void> {
  let want: string[] = [];
  let got: string[] = [];
  await waitFor(
    `${what}: routes == leases`,
    async () => {
      want = (await leaseSubnets(etcd)).filter((s) => s !== own).sort();
      got = await routedSubnets(d.host);
      return want.length > 0 && got.join() === want.join();
    },
    180000,
    500,
  ).catch(() => undefined);
  const have = new Set(got);
  const wanted = new Set(want);
  const missing = want.filter((s) => !have.has(s));
  const extra = got.filter((s) => !wanted.has(s));
  t.ok(want.length > N / 2, `${what}: ${want.length} peer leases in etcd`);
  t.same(
    { routes: got.length, missing: missing.slice(0, 5), extra: extra.slice(0, 5) },
    { routes: want.length, missing: [], extra: [] },
    `${what}: routes on ${TUN} == the peer leases`,
  );
}

t.test(`${N} leases at start, bursts of ${BURST} puts and deletes, kill -9 and restart`, async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  const etcd = bed.etcd!;
  const endpoint = bed.etcdEndpoint!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const loaded = await load(h1, endpoint, 'load', 0, N);
  t.equal(loaded.errors, 0, `${N} fake leases written ${loaded.lastError}`);

  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: endpoint });
  const r2 = await d2.waitReady(180000);
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: endpoint });
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of [d1, d2]) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const r1 = await d1.waitReady(180000);
  const ready = await d1.waitForLog((l) => String(l.msg).startsWith('ready in '), 180000, '"ready in"');
  t.comment(`h1 ${String(ready.msg)}`);
  t.match(
    String(ready.msg),
    /^ready in \d+ ms: modules \d+, config \d+, lease \d+, .*snapshot \d+ \(10001 leases\), routes \d+ \(10001 leases\)$/,
  );
  await converges(t, etcd, d1, r1.subnet, 'at start');

  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  await waitPing(c1, c2.ip);
  t.pass('h1 forwards to h2 among 10,001 peers');

  const put = await load(h2, endpoint, 'put', N, BURST);
  t.equal(put.errors, 0, `${BURST} concurrent puts ${put.lastError}`);
  await converges(t, etcd, d1, r1.subnet, `after ${BURST} concurrent puts`);
  const del = await load(h2, endpoint, 'delete', 0, BURST);
  t.equal(del.errors, 0, `${BURST} concurrent deletes ${del.lastError}`);
  await converges(t, etcd, d1, r1.subnet, `after ${BURST} concurrent deletes`);
  t.equal(
    d1.countLogs((l) => /lost; reconnecting/.test(String(l.msg))),
    0,
    'the watch never reconnected',
  );
  t.equal(
    d1.countLogs((l) => Number(l.level) >= 50),
    0,
    'no error or fatal log lines',
  );
  await waitPing(c1, c2.ip);

  // kill -9: the persistent TUN keeps its routes; the lease set changes while h1 is down.
  await d1.stop('SIGKILL');
  t.ok((await routedSubnets(h1)).length > N - BURST, 'the routes outlive the process');
  t.equal((await load(h2, endpoint, 'delete', BURST, 100)).errors, 0, '100 leases deleted while h1 is down');
  t.equal((await load(h2, endpoint, 'put', 0, 100)).errors, 0, '100 leases added while h1 is down');
  await d1.restart();
  const again = await d1.waitReady(180000);
  t.equal(again.subnet, r1.subnet, 'same subnet after kill -9');
  await waitPing(c1, c2.ip);
  t.pass('h1 forwards to h2 again after the restart');
  await converges(t, etcd, d1, r1.subnet, 'after kill -9 and restart');
  t.equal(
    d1.countLogs((l) => Number(l.level) >= 50),
    0,
    'no error or fatal log lines after the restart',
  );
  t.equal(await d1.stop(), 0, 'h1 clean exit');
  t.equal(await d2.stop(), 0, 'h2 clean exit');
});
