// -etcd-endpoints with a dead member listed before the live one (flannel's default list
// `http://127.0.0.1:4001,http://127.0.0.1:2379` usually has one): a member that silently drops packets
// (a powered-off host on a routed network: SYNs vanish, no ICMP, no RST) and a member that refuses
// connections (RST). etcd3 picks members at random per call, so some calls and watches land on the dead
// member; the daemon must still acquire a lease, write subnet.env and apply new peer leases, also after
// the live member restarted (while it is away every member is down). Two daemons per case give two
// samples of the random member choice. Times are measured and commented, never asserted. (A member that
// answers with EHOSTUNREACH after ARP fails is covered in daemon-faults.)
import t, { type Test } from 'tap';
import { createTestbed, ETCD_IP, randomVtepMac, waitFor, writeFlannelLease } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, getFlannelLease, startDaemonNode, type DaemonNode } from '../../netns-fixtures/tsflanneld-node';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const DEAD = '198.51.100.99';
const HOSTS = 2;

// Generous: before the fix each unlucky pick of a blackholed member cost a 15 s call timeout.
t.setTimeout(900000);

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

type Kind = 'blackholed' | 'refusing';

interface Peers {
  peerSubnet: string;
  peerIp: string;
  afterRestartSubnet: string;
  afterRestartIp: string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function deadMemberFirst(t: Test, kind: Kind, { peerSubnet, peerIp, afterRestartSubnet, afterRestartIp }: Peers): Promise<void> {
  const bed = await createTestbed({ hosts: HOSTS, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  for (const h of bed.hosts) {
    // A route to the dead member (through the etcd namespace's address; any neighbour would do), then
    // a local rule that either drops the packets (connects hang) or answers SYNs with a RST.
    await h.exec(['ip', 'route', 'add', `${DEAD}/32`, 'via', ETCD_IP]);
    if (kind === 'blackholed') await h.exec(['iptables', '-I', 'OUTPUT', '-d', DEAD, '-j', 'DROP']);
    else await h.exec(['iptables', '-I', 'OUTPUT', '-p', 'tcp', '-d', DEAD, '-j', 'REJECT', '--reject-with', 'tcp-reset']);
  }
  const endpoints = `http://${DEAD}:2379,${bed.etcdEndpoint!}`;
  const started = Date.now();
  const daemons: DaemonNode[] = [];
  for (const host of bed.hosts) daemons.push(await startDaemonNode({ host, etcdEndpoint: endpoints, healthzPort: 8471 }));
  t.teardown(() => {
    if (!t.passing()) for (const d of daemons) t.comment(`--- ${d.host.name} log tail:\n${d.tail(40)}`);
  });

  const readyAfter: number[] = [];
  await Promise.all(
    daemons.map(async (d, i) => {
      const r = await d.waitReady(300000);
      readyAfter[i] = Date.now() - started;
      const lease = await getFlannelLease(bed.etcd!, r.subnet);
      t.equal(lease?.publicIp, d.host.underlayIp, `${d.host.name}: lease ${r.subnet} acquired`);
      t.equal((await d.httpGet('/readyz')).status, 200, `${d.host.name}: /readyz 200`);
    }),
  );
  t.comment(`${kind} member first: ready ${readyAfter.map(secs).join(', ')} after start`);

  // Put right after the daemons are ready: the watches may still be settling on a member.
  const put = Date.now();
  await writeFlannelLease(bed.etcd!, ETCD_PREFIX, peerSubnet, peerIp, randomVtepMac());
  const routedAfter: number[] = [];
  await Promise.all(
    daemons.map(async (d, i) => {
      await waitFor(
        `${d.host.name}: route to ${peerSubnet}`,
        async () => (await d.host.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout.includes(peerSubnet),
        240000,
        100,
      );
      routedAfter[i] = Date.now() - put;
      t.pass(`${d.host.name}: the new peer lease ${peerSubnet} is routed`);
    }),
  );
  t.comment(`${kind} member first: new peer lease routed ${routedAfter.map(secs).join(', ')} after it was put`);

  // The live member restarts: while it is away every member is down and the watches' reconnects go to
  // either; once it is back they must end up on it again.
  const etcd = bed.etcd!;
  await etcd.stop();
  await Promise.all(
    daemons.map((d) => waitFor(`${d.host.name} /metrics: etcd disconnected`, async () => (await d.metricValue('tsflanneld_etcd_connected')) === 0, 120000)),
  );
  t.pass('the daemons notice that the live member went away');
  await sleep(5000);
  await etcd.start();
  const back = Date.now();
  await writeFlannelLease(etcd, ETCD_PREFIX, afterRestartSubnet, afterRestartIp, randomVtepMac());
  const put2 = Date.now();
  const routed2: number[] = [];
  await Promise.all(
    daemons.map(async (d, i) => {
      await waitFor(
        `${d.host.name}: route to ${afterRestartSubnet}`,
        async () => (await d.host.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout.includes(afterRestartSubnet),
        240000,
        100,
      );
      routed2[i] = Date.now();
      t.pass(`${d.host.name}: a lease put after the live member restarted is routed`);
    }),
  );
  t.comment(
    `${kind} member first, live member restarted: lease put ${secs(put2 - back)} after the restart routed ` +
      `${routed2.map((r) => secs(r - put2)).join(', ')} after it was put`,
  );

  for (const d of daemons) {
    const warnings = d.logs.filter((l) => l.level === 40).map((l) => `  ${String(l.msg)}`);
    t.comment(`${d.host.name} warnings:\n${warnings.join('\n') || '  (none)'}`);
    t.ok(d.running, `${d.host.name} keeps running`);
    t.equal(await d.stop(), 0, `${d.host.name}: exit 0 on SIGTERM`);
  }
}

t.test('a blackholed etcd member listed first', (t) =>
  deadMemberFirst(t, 'blackholed', { peerSubnet: '10.5.252.0/24', peerIp: '192.0.2.201', afterRestartSubnet: '10.5.250.0/24', afterRestartIp: '192.0.2.203' }),
);

t.test('a refusing etcd member listed first', (t) =>
  deadMemberFirst(t, 'refusing', { peerSubnet: '10.5.253.0/24', peerIp: '192.0.2.202', afterRestartSubnet: '10.5.251.0/24', afterRestartIp: '192.0.2.204' }),
);
