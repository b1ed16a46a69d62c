// Lease churn under traffic: two tsflanneld hosts with an iperf3 TCP stream between their containers
// while a churner adds, changes and removes fake peer leases (flannel JSON, distinct subnets, public
// IPs 192.0.2.200+) every 100 ms. Nothing may crash, iperf3 must complete, and once the churn stops
// each host's kernel routes on flannel.1 must equal the leases in etcd minus its own — exactly.
// TSFLANNELD_CHURN_SECONDS sets the duration (default 30).
import path from 'node:path';
import t from 'tap';
import { addContainer, createTestbed, iperf3Client, iperf3Server, waitFor, type TestHost } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, listFlannelLeases, startDaemonNode, waitPing, type DaemonNode } from '../../netns-fixtures/tsflanneld-node';

const SECONDS = Number(process.env.TSFLANNELD_CHURN_SECONDS ?? 30);
t.setTimeout(300000 + SECONDS * 2000);
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const ETCD3 = path.resolve(__dirname, '..', '..', '..', 'node_modules', 'etcd3');
const TUN = 'flannel.1';

interface Slot {
  subnet: string;
  publicIp: string;
}

interface ChurnReport {
  ops: { add: number; change: number; delete: number; revoke: number; errors: number };
  lastError: string;
  active: string[];
}

/**
 * The churner, run as `node -e "(<source>)()" <args>` inside a host namespace (etcd lives on the
 * underlay): self-contained. Every 100 ms it picks a slot and adds a lease (Grant 24 h + put, as
 * flanneld writes them), or, for an active slot, re-puts it with a new VtepMAC, deletes the key or
 * revokes its etcd lease. Prints a ChurnReport line when done.
 */
function churner(): void {
  const [etcd3Path, endpoint, prefix, slotsJson, seconds] = process.argv.slice(1) as [string, string, string, string, string];
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- runs in a child process from its source text: no imports there
  const { Etcd3 } = require(etcd3Path) as typeof import('etcd3');
  const client = new Etcd3({ hosts: endpoint });
  const slots = JSON.parse(slotsJson) as Slot[];
  const active = new Map<number, string>(); // slot → etcd lease id
  const report: ChurnReport = { ops: { add: 0, change: 0, delete: 0, revoke: 0, errors: 0 }, lastError: '', active: [] };
  const mac = (): string =>
    [0, 1, 2, 3, 4, 5].map((i) => (i === 0 ? 0x02 : Math.floor(Math.random() * 256)).toString(16).padStart(2, '0')).join(':');
  const value = (s: Slot): string =>
    JSON.stringify({ PublicIP: s.publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac() } });
  const keyOf = (s: Slot): string => `${prefix}/subnets/${s.subnet.replace('/', '-')}`;
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  async function put(i: number): Promise<void> {
    const granted = await client.leaseClient.leaseGrant({ TTL: 86400 });
    await client.kv.put({ key: Buffer.from(keyOf(slots[i]!)), value: Buffer.from(value(slots[i]!)), lease: granted.ID });
    active.set(i, granted.ID);
  }

  async function step(): Promise<void> {
    const i = Math.floor(Math.random() * slots.length);
    const lease = active.get(i);
    if (lease === undefined) {
      await put(i);
      report.ops.add++;
      return;
    }
    const r = Math.random();
    if (r < 0.3) {
      await put(i);
      report.ops.change++;
    } else if (r < 0.65) {
      await client.kv.deleteRange({ key: Buffer.from(keyOf(slots[i]!)) });
      active.delete(i);
      report.ops.delete++;
    } else {
      await client.leaseClient.leaseRevoke({ ID: lease });
      active.delete(i);
      report.ops.revoke++;
    }
  }

  void (async () => {
    const end = Date.now() + Number(seconds) * 1000;
    while (Date.now() < end) {
      try {
        await step();
      } catch (e) {
        report.ops.errors++;
        report.lastError = (e as Error).message;
      }
      await sleep(100);
    }
    report.active = [...active.keys()].map((i) => slots[i]!.subnet).sort();
    process.stdout.write(`${JSON.stringify(report)}\n`);
    client.close();
  })();
}

async function routedSubnets(host: TestHost): Promise<string[]> {
  const out = (await host.exec(['ip', '-4', 'route', 'show', 'dev', TUN])).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().split(' ')[0]!)
    .filter((s) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(s))
    .sort();
}

t.test(`lease churn every 100 ms for ${SECONDS} s under iperf3`, async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 9103 });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 9103 });
  t.teardown(() => {
    if (t.passing()) return;
    for (const d of [d1, d2]) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  await waitPing(c1, c2.ip);

  // 55 fake peers 10.5.X.0/24 at 192.0.2.200…254, skipping the real hosts' subnets.
  const own = new Set([r1.subnet, r2.subnet]);
  const slots: Slot[] = [];
  for (let i = 0, x = 150; i < 55; x++) {
    const subnet = `10.5.${x}.0/24`;
    if (own.has(subnet)) continue;
    slots.push({ subnet, publicIp: `192.0.2.${200 + i}` });
    i++;
  }

  const server = await iperf3Server(c2);
  const churn = h1.spawn([
    process.execPath,
    '-e',
    `(${churner.toString()})()`,
    ETCD3,
    bed.etcdEndpoint!,
    ETCD_PREFIX,
    JSON.stringify(slots),
    String(SECONDS),
  ]);
  let churnOut = '';
  let churnErr = '';
  churn.stdout!.on('data', (b: Buffer) => (churnOut += b.toString()));
  churn.stderr!.on('data', (b: Buffer) => (churnErr = (churnErr + b.toString()).slice(-4000)));
  const churnDone = new Promise<number | null>((r) => churn.on('exit', (code) => r(code)));

  const iperf = await iperf3Client(c1, c2.ip, { seconds: SECONDS, port: server.port });
  t.ok(
    iperf.bitsPerSecond > 0,
    `iperf3 completed: ${(iperf.bitsPerSecond / 1e6).toFixed(0)} Mbit/s, ${iperf.retransmits ?? 0} retransmits`,
  );

  t.equal(await churnDone, 0, `churner finished ${churnErr.trim()}`);
  const report = JSON.parse(churnOut.trim().split('\n').pop() ?? '{}') as ChurnReport;
  t.comment(`churn: ${JSON.stringify(report.ops)}, ${report.active.length} fake leases left`);
  t.equal(report.ops.errors, 0, `no etcd errors in the churner ${report.lastError}`);
  t.ok(report.ops.add + report.ops.delete + report.ops.revoke > SECONDS, 'leases came and went throughout');

  for (const d of [d1, d2]) {
    t.ok(d.running, `${d.host.name}: daemon still running`);
    t.equal(
      d.countLogs((l) => Number(l.level) >= 50),
      0,
      `${d.host.name}: no error or fatal log lines`,
    );
  }

  // Converged state: kernel routes == leases in etcd minus the host's own, exactly.
  const leases = (await listFlannelLeases(etcd)).map((l) => l.subnet).sort();
  t.same(leases, [...report.active, r1.subnet, r2.subnet].sort(), "etcd holds the churner's active leases plus the two hosts'");
  for (const [d, r] of [
    [d1, r1],
    [d2, r2],
  ] as Array<[DaemonNode, { subnet: string }]>) {
    const want = leases.filter((s) => s !== r.subnet);
    let got: string[] = [];
    await waitFor(
      `${d.host.name} routes to converge`,
      async () => {
        got = await routedSubnets(d.host);
        return got.join() === want.join();
      },
      60000,
      250,
    ).catch(() => undefined);
    t.same(got, want, `${d.host.name}: routes on ${TUN} = the ${want.length} leases in etcd other than its own`);
    t.equal(await d.metricValue('tsflanneld_peers'), want.length, `${d.host.name}: data-plane peers = ${want.length}`);
  }
  await waitPing(c1, c2.ip);
  t.pass('containers still reach each other');
  t.equal(await d1.stop(), 0, 'h1 clean exit');
  t.equal(await d2.stop(), 0, 'h2 clean exit');
});
