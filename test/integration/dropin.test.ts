// Drop-in on real hosts (issue 13): taking over flanneld's kernel flannel.1, a second daemon started by
// mistake, a foreign write to our lease, sending from a secondary address, the underlay address going
// away, resource abuse (idle connections, fd limit), the device deleted under a running daemon, a
// corrupt subnet.env. Real etcd, namespaces, TUN and kernel VXLAN.
import t, { type Test } from 'tap';
import {
  addContainer,
  createTestbed,
  kernelPeerAddRemote,
  ping,
  randomVtepMac,
  setupKernelFlannelPeer,
  startCapture,
  waitFor,
  writeFlannelLease,
  type Container,
  type TestHost,
} from '../../netns-fixtures/testbed';
import {
  ETCD_PREFIX,
  getFlannelLease,
  startDaemonNode,
  waitPing,
  type DaemonNode,
  type LogLine,
} from '../../netns-fixtures/tsflanneld-node';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const msg = (l: LogLine): string => (typeof l.msg === 'string' ? l.msg : '');

async function modRevision(etcd: { etcdctl(args: string[]): Promise<string> }, key: string): Promise<string> {
  const out = JSON.parse(await etcd.etcdctl(['get', key, '-w', 'json'])) as { kvs?: Array<{ mod_revision: number }> };
  return String(out.kvs?.[0]?.mod_revision ?? 'none');
}

async function bed2(t: Test, hosts = 2): Promise<Awaited<ReturnType<typeof createTestbed>>> {
  const bed = await createTestbed({ hosts, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, CONFIG]);
  return bed;
}

function dumpOnFailure(t: Test, daemons: DaemonNode[]): void {
  t.teardown(() => {
    if (!t.passing()) for (const d of daemons) t.comment(`--- ${d.host.name} log tail:\n${d.tail(40)}`);
  });
}

t.test("takeover of flanneld's flannel.1; a second daemon by mistake; a foreign write to our lease", async (t) => {
  const bed = await bed2(t);
  const etcd = bed.etcd!;
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  // h1 ran flanneld: its kernel flannel.1 and its lease stay behind (README step "delete flannel.1" forgotten).
  const oldMac = randomVtepMac();
  const oldSubnet = '10.5.72.0/24';
  await setupKernelFlannelPeer(h1, { vtepMac: oldMac, subnet: oldSubnet });
  const lease = await writeFlannelLease(etcd, ETCD_PREFIX, oldSubnet, h1.underlayIp, oldMac);

  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  dumpOnFailure(t, [d1, d2]);
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  t.equal(r1.subnet, oldSubnet, 'h1 keeps its flanneld subnet');
  const after = await getFlannelLease(etcd, oldSubnet);
  t.equal(after?.vtepMac, oldMac, 'the lease keeps the kernel device MAC: peers need no update');
  t.ok(
    d1.logs.some((l) => /took over flanneld's kernel VXLAN device flannel\.1/.test(msg(l))),
    'takeover logged',
  );
  const link = (await h1.exec(['ip', '-d', 'link', 'show', 'flannel.1'])).stdout;
  t.match(link, /\btun\b/, 'flannel.1 is now our TUN');
  const c1: Container = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2: Container = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  await waitPing(c1, c2.ip);
  await waitPing(c2, c1.ip);
  t.pass('containers reach each other through the taken-over node');

  await t.test('a second tsflanneld on the same host fails before touching etcd', async (t) => {
    const before = await modRevision(etcd, lease.key);
    const dup = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, subnetFile: d1.subnetFile });
    const code = await dup.exited;
    t.equal(code, 1, 'exit 1');
    const fatal = dup.logs.filter((l) => l.level === 60);
    t.equal(fatal.length, 1, 'one fatal line');
    t.match(msg(fatal[0] ?? {}), /flannel\.1|8472/, `says what is busy: ${msg(fatal[0] ?? {})}`);
    t.notMatch(dup.stderr(), /\n\s+at /, 'no stack trace');
    t.equal(await modRevision(etcd, lease.key), before, 'our lease was not rewritten');
    await waitPing(c2, c1.ip);
    t.pass('the running node still forwards');
  });

  await t.test('our lease changed by someone else is re-published at once', async (t) => {
    const mark = d1.logs.length;
    const bogus = randomVtepMac();
    // --ignore-lease keeps the key's etcd lease: a changed value, not a reservation.
    await etcd.etcdctl([
      'put',
      '--ignore-lease',
      lease.key,
      JSON.stringify({ PublicIP: h1.underlayIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: bogus } }),
    ]);
    await d1.waitForLog((l) => d1.logs.indexOf(l) >= mark && /re-publishing ours now/.test(msg(l)), 20000, 're-publish log line');
    await waitFor('lease MAC restored', async () => (await getFlannelLease(etcd, oldSubnet))?.vtepMac === oldMac, 20000);
    t.pass('the lease carries our MAC again');
    await waitPing(c2, c1.ip);
  });

  await t.test('ip link del flannel.1 while running: exit 1 saying so', async (t) => {
    await h1.exec(['ip', 'link', 'del', 'flannel.1']);
    const code = await Promise.race([d1.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 30000))]);
    t.equal(code, 1, 'exit 1');
    const fatal = d1.runLogs().filter((l) => l.level === 60);
    t.match(
      msg(fatal[fatal.length - 1] ?? {}),
      /device flannel\.1 was deleted while tsflanneld was running/,
      'the fatal line names the cause',
    );
    await d1.restart();
    await d1.waitReady();
    await waitPing(c2, c1.ip);
    t.pass('a restart recreates the device and forwarding works again');
  });
});

t.test('-iface <secondary address>: published and sent from that address; underlay loss is reported', async (t) => {
  const bed = await bed2(t);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const secondary = `${h1.underlayIp.split('.').slice(0, 3).join('.')}.${200 + h1.index}`;
  await h1.exec(['ip', 'addr', 'add', `${secondary}/24`, 'dev', h1.underlayDev]);
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471, iface: secondary });
  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  dumpOnFailure(t, [d1, d2]);
  const [r1, r2] = await Promise.all([d1.waitReady(), d2.waitReady()]);
  t.equal((await getFlannelLease(bed.etcd!, r1.subnet))?.publicIp, secondary, 'PublicIP is the secondary address');
  const c1 = await addContainer(h1, { subnet: r1.subnet, index: 0, mtu: r1.mtu });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  const cap = await startCapture(h2, h2.underlayDev, 'udp dst port 8472');
  await waitPing(c1, c2.ip);
  await waitPing(c2, c1.ip);
  const pkts = await cap.stop();
  const sources = new Set(pkts.filter((p) => p.ip?.dst === h2.underlayIp).map((p) => p.ip!.src));
  t.same([...sources], [secondary], 'every VXLAN datagram from h1 leaves from the published address');

  await t.test('the address goes away: logged, /readyz 503; it comes back: ready again', async (t) => {
    t.equal((await d1.httpGet('/readyz')).status, 200);
    await h1.exec(['ip', 'addr', 'del', `${secondary}/24`, 'dev', h1.underlayDev]);
    await d1.waitForLog((l) => l.level === 50 && /underlay changed: address .* is no longer on/.test(msg(l)), 20000, 'underlay error');
    t.equal((await d1.httpGet('/readyz')).status, 503, '/readyz 503');
    t.ok(d1.running, 'the daemon keeps running (peers still route to the published address)');
    await h1.exec(['ip', 'addr', 'add', `${secondary}/24`, 'dev', h1.underlayDev]);
    await d1.waitForLog((l) => /underlay address .* is back/.test(msg(l)), 20000, 'underlay back');
    t.equal((await d1.httpGet('/readyz')).status, 200, '/readyz 200 again');
    await waitPing(c2, c1.ip);
  });
});

t.test('-public-ip without -iface: the interface holding that address, with its MTU', async (t) => {
  const bed = await bed2(t, 1);
  const h1 = bed.hosts[0]!;
  // A second underlay link (not the default route) holding the public IP, with a different MTU.
  await h1.exec(['ip', 'link', 'add', 'ul1', 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'ul1p']);
  await h1.exec(['ip', 'link', 'set', 'ul1p', 'up']);
  await h1.exec(['ip', 'addr', 'add', '198.51.100.7/24', 'dev', 'ul1']);
  await h1.exec(['ip', 'link', 'set', 'ul1', 'up']);
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, iface: null, args: ['-public-ip', '198.51.100.7'] });
  dumpOnFailure(t, [d1]);
  const r1 = await d1.waitReady();
  t.equal(r1.mtu, 1350, 'MTU from ul1 (1400 − 50), not from the default-route interface');
  t.ok(
    d1.logs.some((l) => l.iface === 'ul1' && l.publicIp === '198.51.100.7' && l.sendSource === '198.51.100.7'),
    'ul1 chosen, VXLAN sent from the public IP',
  );

  await t.test('a public IP no interface holds is refused in one line (flanneld exits too)', async (t) => {
    const bad = await startDaemonNode({
      host: h1,
      etcdEndpoint: bed.etcdEndpoint!,
      iface: null,
      args: ['-public-ip', '203.0.113.9'],
      subnetFile: `${d1.subnetFile}.2`,
    });
    t.equal(await bad.exited, 1);
    const fatal = bad.logs.filter((l) => l.level === 60);
    t.equal(fatal.length, 1);
    t.match(msg(fatal[0] ?? {}), /no interface has the address 203\.0\.113\.9 .*add -iface/);
  });
});

t.test('a corrupt subnet.env is read once (with -ip-masq); idle connections to the health port do not hurt', async (t) => {
  const bed = await bed2(t, 1);
  const h1 = bed.hosts[0]!;
  const fs = await import('node:fs');
  const path = await import('node:path');
  const dir = path.join(bed.tmpDir, h1.name);
  fs.mkdirSync(dir, { recursive: true });
  const subnetFile = path.join(dir, 'subnet.env');
  fs.writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.5.0.0/16\nthis line is garbage\n');
  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471, subnetFile, args: ['-ip-masq'] });
  dumpOnFailure(t, [d1]);
  await d1.waitReady();
  t.equal(d1.logs.filter((l) => /subnet file .* is corrupt/.test(msg(l))).length, 1, 'one warning about the corrupt file');
  t.ok(d1.running, 'the daemon runs (no second read failing on the iptables path)');

  // 300 connections that never send anything, from inside the namespace.
  const holder = h1.spawn([
    process.execPath,
    '-e',
    `const net=require('node:net');let open=0,closed=0;for(let i=0;i<300;i++){const s=net.connect(8471,'127.0.0.1');s.on('connect',()=>open++);s.on('error',()=>{});s.on('close',()=>closed++);}
     setTimeout(()=>{console.log(JSON.stringify({open,closed}));process.exit(0)},13000);`,
  ]);
  let out = '';
  holder.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const held = new Promise<void>((r) => holder.on('exit', () => r()));
  await held;
  const counts = JSON.parse(out) as { open: number; closed: number };
  t.equal(counts.closed, 300, `the server closed every idle or excess connection (${JSON.stringify(counts)})`);
  t.ok(d1.running, 'the daemon survived');
  t.equal((await d1.httpGet('/healthz')).status, 200, '/healthz answers');
  t.ok(
    d1.logs.some((l) => /refusing more until some close/.test(msg(l))),
    'the cap was logged',
  );
});

t.test('a flanneld node whose kernel sends from another address than its PublicIP', async (t) => {
  const bed = await bed2(t);
  const etcd = bed.etcd!;
  const [hk, h2] = bed.hosts as [TestHost, TestHost];
  // hk publishes a secondary address, but its flannel.1 (local = primary) sends from the primary one.
  const published = `${hk.underlayIp.split('.').slice(0, 3).join('.')}.${220 + hk.index}`;
  await hk.exec(['ip', 'addr', 'add', `${published}/24`, 'dev', hk.underlayDev]);
  const kmac = randomVtepMac();
  const kSubnet = '10.5.66.0/24';
  await setupKernelFlannelPeer(hk, { vtepMac: kmac, subnet: kSubnet });
  await writeFlannelLease(etcd, ETCD_PREFIX, kSubnet, published, kmac);

  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  dumpOnFailure(t, [d2]);
  const r2 = await d2.waitReady();
  const lease2 = (await getFlannelLease(etcd, r2.subnet))!;
  await kernelPeerAddRemote(hk, { subnet: r2.subnet, publicIp: lease2.publicIp, vtepMac: lease2.vtepMac });
  const ck = await addContainer(hk, { subnet: kSubnet, index: 0 });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });
  await waitPing(ck, c2.ip);
  await waitPing(c2, ck.ip);
  t.pass('interoperates by default');
  t.ok(
    d2.logs.some((l) => l.source === hk.underlayIp && l.peer === kSubnet && /accepting VXLAN from/.test(msg(l))),
    'the other source is remembered for the peer and logged',
  );

  await t.test('frames from a host that is no peer stay dropped and counted', async (t) => {
    const before = (await d2.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' })) ?? 0;
    // From the same unlisted outer source, an inner source that lies in no peer's subnet.
    await hk.exec(['ip', 'addr', 'add', '10.99.0.1/32', 'dev', 'flannel.1']);
    await hk.exec([
      'ip',
      'route',
      'replace',
      `${c2.ip}/32`,
      'via',
      r2.subnet.split('/')[0]!,
      'dev',
      'flannel.1',
      'onlink',
      'src',
      '10.99.0.1',
    ]);
    await ping(hk, c2.ip, { count: 3, interval: 0.1 }).catch(() => undefined);
    await waitFor(
      'unknownSource counted',
      async () => ((await d2.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' })) ?? 0) >= before + 3,
      20000,
    );
    t.pass('inner source outside every peer subnet: dropped as unknownSource');
  });

  await t.test('-vxlan-strict-source drops them', async (t) => {
    await d2.stop();
    (d2.opts as { args?: string[] }).args = ['-vxlan-strict-source'];
    await d2.restart();
    await d2.waitReady();
    const res = await ping(ck, c2.ip, { count: 3, interval: 0.2 }).catch(() => ({ received: 0 }));
    t.equal(res.received, 0, 'no reply with the strict check');
    t.ok(((await d2.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' })) ?? 0) >= 3, 'counted as unknownSource');
  });
});

t.test('"VNI": 0 works as in flanneld (device flannel.0)', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":0}}']);
  const [h1, h2] = bed.hosts as [TestHost, TestHost];
  const ds = await Promise.all([h1, h2].map((host) => startDaemonNode({ host, etcdEndpoint: bed.etcdEndpoint! })));
  dumpOnFailure(t, ds);
  const [r1, r2] = await Promise.all(ds.map((d) => d.waitReady()));
  t.match((await h1.exec(['ip', 'link', 'show', 'flannel.0'])).stdout, /flannel\.0/);
  t.equal((await getFlannelLease(bed.etcd!, r1!.subnet))?.vni, 0, 'lease carries VNI 0');
  const c1 = await addContainer(h1, { subnet: r1!.subnet, index: 0, mtu: r1!.mtu });
  const c2 = await addContainer(h2, { subnet: r2!.subnet, index: 0, mtu: r2!.mtu });
  await waitPing(c1, c2.ip);
  t.pass('containers reach each other over VNI 0');
});
