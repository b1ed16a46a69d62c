// -etcd-endpoints with a dead member listed before the live one (flannel's default list
// `http://127.0.0.1:4001,http://127.0.0.1:2379` usually has one): a member that silently drops packets
// (a powered-off host on a routed network: SYNs vanish, no ICMP, no RST) and a member that refuses
// connections (RST). etcd3 picks members at random per call, so some calls and watches land on the dead
// member; the daemon must still acquire a lease, write subnet.env and apply new peer leases, also after
// the live member restarted (while it is away every member is down). Two daemons per case give two
// samples of the random member choice. And a member that goes silent after the daemon connected to it
// (gRPC keepalive notices; the watches move to the other member). Times are measured and commented, never
// asserted. (A member that answers with EHOSTUNREACH after ARP fails is covered in daemon-faults.)
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
    daemons.map((d) =>
      waitFor(`${d.host.name} /metrics: etcd disconnected`, async () => (await d.metricValue('tsflanneld_etcd_connected')) === 0, 120000),
    ),
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
  deadMemberFirst(t, 'blackholed', {
    peerSubnet: '10.5.252.0/24',
    peerIp: '192.0.2.201',
    afterRestartSubnet: '10.5.250.0/24',
    afterRestartIp: '192.0.2.203',
  }),
);

t.test('a refusing etcd member listed first', (t) =>
  deadMemberFirst(t, 'refusing', {
    peerSubnet: '10.5.253.0/24',
    peerIp: '192.0.2.202',
    afterRestartSubnet: '10.5.251.0/24',
    afterRestartIp: '192.0.2.204',
  }),
);

// Two endpoints that reach the same etcd by different paths (the second one is DNATed to it), so a path
// stands for a member. The daemon connects through the first; then that path starts dropping packets on
// the established connections: gRPC keepalive pings notice, and the watches move to the other path.
t.test('the member in use goes silent: watches move to the other member', async (t) => {
  const ALIAS = '198.51.100.98';
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  const etcd = bed.etcd!;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const h = bed.hosts[0]!;
  const port = new URL(bed.etcdEndpoint!).port;
  await h.exec(['ip', 'route', 'add', `${ALIAS}/32`, 'via', ETCD_IP]);
  await h.exec([
    'iptables',
    '-t',
    'nat',
    '-I',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    ALIAS,
    '--dport',
    '2379',
    '-j',
    'DNAT',
    '--to-destination',
    `${ETCD_IP}:${port}`,
  ]);
  // Drops a path both ways, established connections included: packets by the destination the
  // connection was opened to (replies carry the same original destination in conntrack).
  const cutPath = async (op: '-I' | '-D', dst: string): Promise<void> => {
    for (const chain of ['OUTPUT', 'INPUT']) {
      await h.exec(['iptables', op, chain, '-p', 'tcp', '-m', 'conntrack', '--ctorigdst', dst, '-j', 'DROP']);
    }
  };
  await cutPath('-I', ALIAS);
  const d = await startDaemonNode({ host: h, etcdEndpoint: `${bed.etcdEndpoint!},http://${ALIAS}:2379`, healthzPort: 8471 });
  t.teardown(() => {
    if (!t.passing()) t.comment(`--- h1 log tail:\n${d.tail(40)}`);
  });
  await d.waitReady(120000);
  // A lease routed while the second path is cut proves the watch runs over the first one.
  const first = '10.5.248.0/24';
  await writeFlannelLease(etcd, ETCD_PREFIX, first, '192.0.2.206', randomVtepMac());
  await waitFor(
    `route to ${first}`,
    async () => (await h.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout.includes(first),
    240000,
    250,
  );
  await cutPath('-D', ALIAS);
  await cutPath('-I', ETCD_IP);
  const cut = Date.now();
  const subnet = '10.5.249.0/24';
  await writeFlannelLease(etcd, ETCD_PREFIX, subnet, '192.0.2.205', randomVtepMac());
  await waitFor(
    `route to ${subnet}`,
    async () => (await h.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout.includes(subnet),
    240000,
    250,
  );
  t.comment(`a lease put when the member in use went silent was routed ${secs(Date.now() - cut)} later`);
  t.pass('the watch moved to the other member');
  const warnings = d.logs.filter((l) => l.level === 40).map((l) => `  ${String(l.msg)}`);
  t.comment(`h1 warnings:\n${warnings.join('\n') || '  (none)'}`);
  t.ok(d.running, 'keeps running');
  t.equal(await d.stop(), 0, 'exit 0 on SIGTERM');
});
