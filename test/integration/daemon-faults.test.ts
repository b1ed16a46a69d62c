// Operations: what a running tsflanneld does when things around it fail. etcd stops for ~5 s while
// containers ping each other every 10 ms (no loss; one log line per state change; a lease added
// while the daemon could not reach etcd is applied once it can); a dead etcd member listed first;
// kill -9 and restart under traffic (same subnet and VtepMAC, persistent TUN and routes, outage
// measured); SIGTERM (exit 0, lease and subnet.env kept); a peer that disappears, and a peer whose
// VtepMAC and then PublicIP change (forwarding follows without a restart).
import t, { type Test } from 'tap';
import {
  addContainer,
  createTestbed,
  ETCD_IP,
  kernelPeerAddRemote,
  ping,
  randomVtepMac,
  setupKernelFlannelPeer,
  waitFor,
  writeFlannelLease,
  type Container,
  type TestHost,
} from '../../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  getFlannelLease,
  startContinuousPing,
  startDaemonNode,
  waitPing,
  type DaemonNode,
  type LogLine,
} from '../../netns-fixtures/tsflanneld-node';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const TUN = 'flannel.1';
const PING_INTERVAL = 0.01;
const WARN = 40;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function routesOn(host: TestHost): Promise<string> {
  return (await host.exec(['ip', 'route', 'show', 'dev', TUN])).stdout;
}

const msg = (l: LogLine): string => (typeof l.msg === 'string' ? l.msg : '');

/** A log message with revisions, counts and addresses blanked, to group repeats of one message. */
const shape = (l: LogLine): string => msg(l).replace(/\d+/g, 'N');

interface Node {
  host: TestHost;
  daemon: DaemonNode;
  subnet: string;
  mtu: number;
  container: Container;
}

/** etcd + n tsflanneld hosts (healthz on 8471) with a container each. */
async function cluster(
  t: Test,
  n: number,
  extraHosts = 0,
): Promise<{ nodes: Node[]; spare: TestHost[]; bed: Awaited<ReturnType<typeof createTestbed>> }> {
  const bed = await createTestbed({ hosts: n + extraHosts, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const hosts = bed.hosts.slice(0, n);
  const daemons = hosts.map((host) => startDaemonNode({ host, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 }));
  const ds = await Promise.all(daemons);
  t.teardown(() => {
    if (!t.passing()) for (const d of ds) t.comment(`--- ${d.host.name} log tail:\n${d.tail(40)}`);
  });
  const ready = await Promise.all(ds.map((d) => d.waitReady()));
  const nodes: Node[] = [];
  for (const [i, d] of ds.entries()) {
    const container = await addContainer(d.host, { subnet: ready[i]!.subnet, index: 0, mtu: ready[i]!.mtu });
    nodes.push({ host: d.host, daemon: d, subnet: ready[i]!.subnet, mtu: ready[i]!.mtu, container });
  }
  return { nodes, spare: bed.hosts.slice(n), bed };
}

t.test('etcd outage: the data plane keeps forwarding, logs once per state change, catches up', async (t) => {
  const { nodes, bed } = await cluster(t, 2);
  const etcd = bed.etcd!;
  const [n1, n2] = nodes as [Node, Node];
  await waitPing(n1.container, n2.container.ip);
  await waitPing(n2.container, n1.container.ip);

  await t.test('etcd stopped for ~5 s under ping -i 0.01: zero loss', async (t) => {
    const marks = nodes.map((n) => n.daemon.logs.length);
    const cp = startContinuousPing(n1.container, n2.container.ip, PING_INTERVAL);
    await waitFor('first replies', async () => cp.answered() > 20, 30000);
    await etcd.stop();
    const stoppedAt = Date.now();
    await waitFor('h1 /metrics: etcd disconnected', async () => (await n1.daemon.metricValue('tsflanneld_etcd_connected')) === 0, 30000);
    t.pass('tsflanneld_etcd_connected drops to 0');
    await sleep(Math.max(0, 5000 - (Date.now() - stoppedAt)));
    await etcd.start();
    t.comment(`etcd was down for ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s`);
    for (const n of nodes) {
      await n.daemon.waitForLog(
        (l) => /re-established/.test(msg(l)) && n.daemon.logs.indexOf(l) >= marks[nodes.indexOf(n)]!,
        60000,
        'watch re-established',
      );
    }
    await waitFor('h1 /metrics: etcd connected', async () => (await n1.daemon.metricValue('tsflanneld_etcd_connected')) === 1, 60000);
    t.pass('tsflanneld_etcd_connected back to 1');
    await sleep(1000);
    const res = await cp.stop();
    t.comment(`ping -i ${PING_INTERVAL} during the outage: ${res.sent} sent, ${res.received} received, ${res.lost} lost`);
    t.ok(res.sent > 100, 'the ping ran through the outage');
    t.equal(res.lost, 0, 'zero loss while etcd was down');

    for (const [i, n] of nodes.entries()) {
      const lines = n.daemon.logs.slice(marks[i]);
      const warns = lines.filter((l) => l.level === WARN);
      t.comment(`${n.host.name} warnings during the outage:\n${warns.map((l) => `  ${msg(l)}`).join('\n') || '  (none)'}`);
      t.ok(
        warns.some((l) => /watch/i.test(msg(l))),
        `${n.host.name} warns about the watch`,
      );
      const byShape = new Map<string, number>();
      for (const l of warns) byShape.set(shape(l), (byShape.get(shape(l)) ?? 0) + 1);
      for (const [s, count] of byShape) t.equal(count, 1, `${n.host.name}: "${s}" logged once, not per retry`);
      const back = lines.filter((l) => /re-established/.test(msg(l)));
      const lost = warns.filter((l) => /lost/.test(msg(l)));
      t.equal(back.length, lost.length, `${n.host.name}: one "re-established" per "lost" (${lost.length})`);
      t.ok(n.daemon.running, `${n.host.name} keeps running`);
    }
  });

  await t.test('a lease added while a daemon cannot reach etcd is applied once it can', async (t) => {
    const port = new URL(bed.etcdEndpoint!).port;
    const mark = n1.daemon.logs.length;
    await etcd.stop();
    await n1.daemon.waitForLog((l) => /lost/.test(msg(l)) && n1.daemon.logs.indexOf(l) >= mark, 60000, 'watch lost');
    // h1 stays cut off from etcd after it comes back (connects are reset), h2 is not.
    const rule = ['OUTPUT', '-p', 'tcp', '-d', ETCD_IP, '--dport', port, '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await n1.host.exec(['iptables', '-I', ...rule]);
    let blocked = true;
    t.teardown(async () => {
      if (blocked) await n1.host.exec(['iptables', '-D', ...rule], { allowFail: true });
    });
    await etcd.start();
    const subnet = '10.5.251.0/24';
    await writeFlannelLease(etcd, ETCD_PREFIX, subnet, '192.0.2.200', randomVtepMac());
    await waitFor(`h2 route to ${subnet}`, async () => (await routesOn(n2.host)).includes(subnet), 60000);
    t.pass('h2 (connected) applies the new lease');
    await sleep(2000);
    t.notMatch(await routesOn(n1.host), subnet, 'h1 (cut off) does not have it yet');
    t.equal(await n1.daemon.metricValue('tsflanneld_etcd_connected'), 0, 'h1 /metrics: etcd disconnected');
    await n1.host.exec(['iptables', '-D', ...rule]);
    blocked = false;
    const healed = Date.now();
    await waitFor(`h1 route to ${subnet}`, async () => (await routesOn(n1.host)).includes(subnet), 120000);
    t.comment(`h1 applied the lease ${((Date.now() - healed) / 1000).toFixed(1)} s after it could reach etcd again`);
    t.pass('h1 applies the lease added during its outage');
    t.ok(n1.daemon.running && n2.daemon.running, 'both daemons keep running');
    await waitPing(n1.container, n2.container.ip);
  });
});

t.test('a dead etcd member listed first', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  const h1 = bed.hosts[0]!;
  const started = Date.now();
  const d = await startDaemonNode({ host: h1, etcdEndpoint: `http://192.0.2.99:2379,${bed.etcdEndpoint!}`, healthzPort: 8471 });
  t.teardown(() => {
    if (!t.passing()) t.comment(`--- h1 log tail:\n${d.tail(40)}`);
  });
  const r = await d.waitReady(180000);
  t.comment(`ready ${((Date.now() - started) / 1000).toFixed(1)} s after start`);
  const lease = await getFlannelLease(bed.etcd!, r.subnet);
  t.equal(lease?.publicIp, h1.underlayIp, `lease ${r.subnet} acquired`);
  t.equal((await d.httpGet('/readyz')).status, 200, '/readyz 200');
  const subnet = '10.5.252.0/24';
  await writeFlannelLease(bed.etcd!, ETCD_PREFIX, subnet, '192.0.2.201', randomVtepMac());
  await waitFor(`route to ${subnet}`, async () => (await routesOn(h1)).includes(subnet), 120000);
  t.pass('watching works: a new peer lease is routed');
  t.ok(d.running, 'keeps running');
  t.equal(await d.stop(), 0, 'exit 0 on SIGTERM');
});

t.test('restarts and peer changes', async (t) => {
  const KSUB = '10.5.250.0/24';
  // hk is a kernel flannel.1 node; its lease goes in before the daemons start.
  const { nodes, spare, bed } = await cluster(t, 2, 1);
  const etcd = bed.etcd!;
  const hk = spare[0]!;
  const [n1, n2] = nodes as [Node, Node];
  let kmac = randomVtepMac();
  await setupKernelFlannelPeer(hk, { vtepMac: kmac, subnet: KSUB });
  await writeFlannelLease(etcd, ETCD_PREFIX, KSUB, hk.underlayIp, kmac);
  const addDaemonLeasesToKernel = async (): Promise<void> => {
    for (const n of nodes) {
      const l = await getFlannelLease(etcd, n.subnet);
      if (l) await kernelPeerAddRemote(hk, { subnet: l.subnet, publicIp: l.publicIp, vtepMac: l.vtepMac });
    }
  };
  await addDaemonLeasesToKernel();
  const ck = await addContainer(hk, { subnet: KSUB, index: 0 });
  await waitPing(n1.container, n2.container.ip);
  await waitPing(n1.container, ck.ip);

  await t.test('kill -9 under ping -i 0.01, restart: same lease, persistent TUN, pings recover', async (t) => {
    const before = await getFlannelLease(etcd, n2.subnet);
    const ifindex = async (): Promise<string> => (await n2.host.exec(['cat', `/sys/class/net/${TUN}/ifindex`])).stdout.trim();
    const idxBefore = await ifindex();
    const cp = startContinuousPing(n1.container, n2.container.ip, PING_INTERVAL);
    await waitFor('first replies', async () => cp.answered() > 20, 30000);
    const killedAt = Date.now();
    t.equal(await n2.daemon.stop('SIGKILL'), null, 'h2 killed');
    const atKill = cp.answered();

    t.equal((await n2.host.exec(['ip', 'link', 'show', TUN], { allowFail: true })).code, 0, `${TUN} still exists`);
    t.match(await routesOn(n2.host), n1.subnet, 'its route to h1 is still there');
    t.match((await n2.host.exec(['ip', '-4', 'addr', 'show', 'dev', TUN])).stdout, `${n2.subnet.split('/')[0]}/32`, 'its address too');

    await n2.daemon.restart();
    const again = await n2.daemon.waitReady(120000);
    const readyAfter = Date.now() - killedAt;
    t.equal(again.subnet, n2.subnet, 'same subnet');
    const after = await getFlannelLease(etcd, n2.subnet);
    t.equal(after?.vtepMac, before?.vtepMac, 'same VtepMAC in etcd');
    t.equal(after?.publicIp, before?.publicIp, 'same PublicIP');
    t.equal(await ifindex(), idxBefore, 'the same TUN device was reattached (same ifindex)');
    const atReady = cp.answered();
    await waitFor('pings answered again after the restart', async () => cp.answered() > atReady + 50, 60000);
    t.pass('pings recover');
    await sleep(500);
    const res = await cp.stop();
    t.comment(
      `kill -9 → restart: ${res.lost} of ${res.sent} pings lost (longest gap ${res.longestGap}) ⇒ outage ≈ ${(res.lost * PING_INTERVAL).toFixed(2)} s ` +
        `(gap ${(res.longestGap * PING_INTERVAL).toFixed(2)} s); restarted daemon ready ${(readyAfter / 1000).toFixed(2)} s after the kill; ` +
        `${atKill} answered before the kill`,
    );
    await waitPing(n2.container, ck.ip);
    t.pass('h2 ↔ kernel peer too');
  });

  await t.test('SIGTERM: exit 0, lease stays in etcd, subnet.env intact', async (t) => {
    const lease = await getFlannelLease(etcd, n2.subnet);
    const expected = `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=${n2.subnet.replace(/\.0\/24$/, '.1/24')}\nFLANNEL_MTU=${n2.mtu}\nFLANNEL_IPMASQ=false\n`;
    const fs = await import('node:fs');
    t.equal(fs.readFileSync(n2.daemon.subnetFile, 'utf8'), expected, 'subnet.env before');
    t.equal(await n2.daemon.stop('SIGTERM'), 0, 'exit code 0');
    t.ok(
      n2.daemon.runLogs().some((l) => /lease stays in etcd/.test(msg(l))),
      'says the lease stays',
    );
    const still = await getFlannelLease(etcd, n2.subnet);
    t.equal(still?.value, lease?.value, 'lease still in etcd, unchanged');
    t.equal(fs.readFileSync(n2.daemon.subnetFile, 'utf8'), expected, 'subnet.env complete and unchanged after exit');
    t.equal((await n2.host.exec(['ip', 'link', 'show', TUN], { allowFail: true })).code, 0, `${TUN} kept`);
    await n2.daemon.restart();
    const again = await n2.daemon.waitReady(120000);
    t.equal(again.subnet, n2.subnet, 'restart keeps the subnet');
    await waitPing(n1.container, n2.container.ip);
  });

  await t.test('a peer disappears: kill -9, then its lease is deleted → route removed', async (t) => {
    const lease = await getFlannelLease(etcd, n2.subnet);
    if (!lease) throw new Error(`no lease for ${n2.subnet}`);
    t.match(await routesOn(n1.host), n2.subnet, 'h1 routes to h2 before');
    await n2.daemon.stop('SIGKILL');
    await etcd.etcdctl(['del', lease.key]);
    await waitFor(`h1 route to ${n2.subnet} removed`, async () => !(await routesOn(n1.host)).includes(n2.subnet), 60000);
    t.pass('h1 removed the route');
    await waitFor(
      'h1 /metrics: one peer (the kernel node) left',
      async () => (await n1.daemon.metricValue('tsflanneld_peers')) === 1,
      30000,
    );
    t.pass('h1 forwards to the kernel node only');
    t.ok(n1.daemon.running, 'h1 keeps running');
  });

  await t.test('a peer lease re-put with a new VtepMAC, then a new PublicIP: forwarding follows', async (t) => {
    const pid = n1.daemon.pid;
    // New MAC: what flanneld does after a reboot (new random MAC, re-put lease).
    kmac = randomVtepMac();
    await hk.exec(['ip', 'link', 'set', TUN, 'address', kmac]);
    // A MAC change flushes the device's neighbors, permanent ones too: re-add them as flanneld would.
    await addDaemonLeasesToKernel();
    await writeFlannelLease(etcd, ETCD_PREFIX, KSUB, hk.underlayIp, kmac);
    await waitPing(n1.container, ck.ip);
    await waitPing(ck, n1.container.ip);
    t.pass('ping both ways after the MAC change');

    // New PublicIP: the kernel node moves to 192.0.2.50 (flannel.1 recreated with that local address).
    const newIp = '192.0.2.50';
    // .50 becomes the primary address when the old one goes (else deleting the primary drops it too).
    await hk.exec(['sysctl', '-qw', 'net.ipv4.conf.eth0.promote_secondaries=1']);
    await hk.exec(['ip', 'addr', 'add', `${newIp}/24`, 'dev', 'eth0']);
    await hk.exec(['ip', 'link', 'del', TUN]);
    const moved = Object.create(hk, { underlayIp: { value: newIp } }) as TestHost;
    await setupKernelFlannelPeer(moved, { vtepMac: kmac, subnet: KSUB });
    await addDaemonLeasesToKernel();
    await hk.exec(['ip', 'addr', 'del', `${hk.underlayIp}/24`, 'dev', 'eth0']);
    const mark = n1.daemon.logs.length;
    const stale = await ping(ck, n1.container.ip, { count: 3, interval: 0.1 });
    t.equal(stale.received, 0, 'before the re-put, replies still go to the published (old) address');
    // The frames themselves fit the peer (VNI, our VtepMAC, inner source in its subnet): accepted from
    // the unlisted address and remembered for it (source-check.ts).
    await n1.daemon.waitForLog(
      (l) => n1.daemon.logs.indexOf(l) >= mark && msg(l).includes(`accepting VXLAN from ${newIp} for peer ${KSUB}`),
      10000,
      'frames from the new address accepted for the peer',
    );
    await writeFlannelLease(etcd, ETCD_PREFIX, KSUB, newIp, kmac);
    await waitPing(n1.container, ck.ip);
    await waitPing(ck, n1.container.ip);
    t.pass('ping both ways after the PublicIP change');
    t.equal(n1.daemon.pid, pid, 'h1 was not restarted');
    t.ok(n1.daemon.running, 'h1 keeps running');
  });
});
