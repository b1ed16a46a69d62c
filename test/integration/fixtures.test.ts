// The testbed itself: underlay, containers, and above all the kernel flannel.1 peer. Two kernel
// peers laid out by our fixtures must talk to each other exactly like two real flanneld vxlan
// nodes; that makes the fixture a trustworthy reference for the interop tests against tsflanneld.
import t from 'tap';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import {
  addContainer,
  cleanupPrefix,
  cleanupStale,
  createTestbed,
  flannelLeaseValue,
  iperf3Client,
  iperf3Server,
  kernelPeerAddRemote,
  kernelPeerRemoveRemote,
  ping,
  run,
  setupKernelFlannelPeer,
  startCapture,
  waitFor,
  writeFlannelLease,
  PREFIX_ROOT,
} from '../../netns-fixtures/testbed';

async function namespacesWith(prefix: string): Promise<string[]> {
  const res = await run(['ip', 'netns', 'list']);
  return res.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${prefix}-`));
}

const MAC1 = '0e:11:22:33:44:01';
const MAC2 = '0e:11:22:33:44:02';
const SUBNET1 = '10.5.72.0/24';
const SUBNET2 = '10.5.73.0/24';

t.test('two kernel flannel peers', async (t) => {
  const bed = await createTestbed({ hosts: 2, t });
  const [h1, h2] = bed.hosts as [(typeof bed.hosts)[0], (typeof bed.hosts)[0]];

  await t.test('underlay', async (t) => {
    t.equal(h1.underlayIp, '192.0.2.11');
    t.equal(h2.underlayIp, '192.0.2.12');
    const r = await ping(h1, h2.underlayIp, { count: 2 });
    t.equal(r.received, 2, 'h1 reaches h2 on the underlay');
    const mtu = await h1.exec(['cat', `/sys/class/net/${h1.underlayDev}/mtu`]);
    t.equal(mtu.stdout.trim(), '1500');
    const fwd = await h1.exec(['sysctl', '-n', 'net.ipv4.ip_forward']);
    t.equal(fwd.stdout.trim(), '1', 'hosts forward');
  });

  const p1 = await setupKernelFlannelPeer(h1, { vtepMac: MAC1, subnet: SUBNET1 });
  const p2 = await setupKernelFlannelPeer(h2, { vtepMac: MAC2, subnet: SUBNET2 });
  await kernelPeerAddRemote(h1, { subnet: SUBNET2, publicIp: h2.underlayIp, vtepMac: MAC2 });
  await kernelPeerAddRemote(h2, { subnet: SUBNET1, publicIp: h1.underlayIp, vtepMac: MAC1 });
  const c1 = await addContainer(h1, { subnet: SUBNET1, index: 0 });
  const c2 = await addContainer(h2, { subnet: SUBNET2, index: 0 });

  await t.test('device and per-remote state exactly as flanneld lays it out', async (t) => {
    t.equal(p1.dev, 'flannel.1');
    const link = (await h1.exec(['ip', '-d', 'link', 'show', 'flannel.1'])).stdout;
    t.match(link, /mtu 1450 /);
    t.match(link, new RegExp(`link/ether ${MAC1} `));
    t.match(link, /vxlan id 1 local 192\.0\.2\.11 dev eth0 /);
    t.match(link, /dstport 8472 nolearning /);
    t.notMatch(link, / group \d/, 'no multicast group');
    t.notMatch(link, /remote /, 'no default remote');
    const addr = (await h1.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel.1'])).stdout;
    t.match(addr, /inet 10\.5\.72\.0\/32 /);
    const neigh = (await h1.exec(['ip', 'neigh', 'show', 'dev', 'flannel.1'])).stdout;
    t.match(neigh, new RegExp(`10\\.5\\.73\\.0 lladdr ${MAC2} PERMANENT`));
    const fdb = (await h1.exec(['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).stdout;
    t.match(fdb, new RegExp(`${MAC2} dst 192\\.0\\.2\\.12 self permanent`));
    t.notMatch(fdb, /00:00:00:00:00:00/, 'no flood entry');
    const route = (await h1.exec(['ip', 'route', 'show', '10.5.73.0/24'])).stdout;
    t.match(route, /10\.5\.73\.0\/24 via 10\.5\.73\.0 dev flannel\.1 onlink/);
  });

  await t.test('containers', async (t) => {
    t.equal(c1.ip, '10.5.72.10');
    t.equal(c2.ip, '10.5.73.10');
    t.equal(c1.gateway, '10.5.72.1');
    const r = await ping(c1, c1.gateway, { count: 1 });
    t.equal(r.received, 1, 'container reaches its cni0');
    const c3 = await addContainer(h1, { subnet: SUBNET1, index: 1 });
    t.equal(c3.ip, '10.5.72.11', 'second container on the same cni0');
    t.equal((await ping(c3, c1.ip, { count: 1 })).received, 1);
    await t.rejects(addContainer(h1, { subnet: '10.5.99.0/24', index: 2 }), /cni0 already serves/);
  });

  await t.test('containers talk across VXLAN; the wire looks like flannel', async (t) => {
    const cap = await startCapture(h2, h2.underlayDev, 'udp port 8472');
    const r12 = await ping(c1, c2.ip, { count: 3 });
    const r21 = await ping(c2, c1.ip, { count: 3 });
    const pkts = await cap.stop();
    t.equal(r12.received, 3, 'c1 → c2');
    t.equal(r21.received, 3, 'c2 → c1');
    t.ok(r12.avgMs !== undefined && r12.avgMs > 0, 'rtt parsed');

    const toH2 = pkts.filter((p) => p.ip?.dst === h2.underlayIp && p.inner?.ip?.dst === c2.ip);
    const toH1 = pkts.filter((p) => p.ip?.dst === h1.underlayIp && p.inner?.ip?.dst === c1.ip);
    t.ok(toH2.length >= 3, `captured ${toH2.length} encapsulated packets h1 → h2`);
    t.ok(toH1.length >= 3, `captured ${toH1.length} encapsulated packets h2 → h1`);
    for (const p of toH2) {
      t.equal(p.ip!.src, h1.underlayIp);
      t.equal(p.udp!.dstPort, 8472);
      t.equal(p.vxlan!.flags, 0x08);
      t.equal(p.vxlan!.vni, 1);
      t.equal(p.inner!.eth.dst, MAC2, "inner dst MAC = receiver's VtepMAC");
      t.equal(p.inner!.eth.src, MAC1, "inner src MAC = sender's VtepMAC");
      t.equal(p.inner!.eth.type, 0x0800);
      t.equal(p.inner!.ip!.src, c1.ip);
      t.equal(p.inner!.ip!.proto, 1);
      t.equal(p.ip!.df, false, 'outer DF clear');
      // The sending veth may hand the frame over with only a partial (offloaded) checksum, so
      // only the receiver-side facts are asserted: non-zero, per this kernel's udpcsum default.
      t.not(p.udp!.checksum, 0, 'outer UDP checksum present');
    }
    for (const p of toH1) {
      t.equal(p.inner!.eth.dst, MAC1);
      t.equal(p.inner!.eth.src, MAC2);
      t.equal(p.udp!.dstPort, 8472);
    }
  });

  await t.test('host-originated traffic is sourced from the flannel.1 address', async (t) => {
    const cap = await startCapture(h2, 'flannel.1', 'icmp');
    const r = await ping(h1, c2.ip, { count: 2 });
    const pkts = await cap.stop();
    t.equal(r.received, 2);
    t.ok(
      pkts.some((p) => p.ip?.src === '10.5.72.0' && p.ip.dst === c2.ip),
      'source is 10.5.72.0',
    );
  });

  await t.test('iperf3 across the kernel overlay', async (t) => {
    const srv = await iperf3Server(c2);
    const tcp = await iperf3Client(c1, c2.ip, { seconds: 1 });
    t.ok(tcp.bitsPerSecond > 0, `TCP ${(tcp.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`);
    t.type(tcp.retransmits, 'number');
    const udp = await iperf3Client(c1, c2.ip, { seconds: 1, udp: true, len: 1200, bitrate: '10M' });
    t.ok(udp.packets !== undefined && udp.packets > 0, `UDP ${udp.packets} packets`);
    t.type(udp.lostPercent, 'number');
    await srv.stop();
  });

  await t.test('removing a remote undoes neighbor, FDB and route', async (t) => {
    await kernelPeerRemoveRemote(h1, { subnet: SUBNET2, publicIp: h2.underlayIp, vtepMac: MAC2 });
    t.notMatch((await h1.exec(['ip', 'neigh', 'show', 'dev', 'flannel.1'])).stdout, /10\.5\.73\.0/);
    t.notMatch((await h1.exec(['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).stdout, new RegExp(MAC2));
    t.equal((await h1.exec(['ip', 'route', 'show', '10.5.73.0/24'])).stdout.trim(), '');
    const r = await ping(c1, c2.ip, { count: 1, waitSec: 1 });
    t.equal(r.received, 0, 'no path any more');
    // Removing twice is fine (best-effort, like flanneld).
    await kernelPeerRemoveRemote(h1, { subnet: SUBNET2, publicIp: h2.underlayIp, vtepMac: MAC2 });
    await kernelPeerAddRemote(h1, { subnet: SUBNET2, publicIp: h2.underlayIp, vtepMac: MAC2 });
    t.equal((await ping(c1, c2.ip, { count: 1 })).received, 1, 'and adding it back restores it');
  });

  t.ok(p2.publicIp === h2.underlayIp);
});

t.test('etcd on the underlay and flannel-format leases', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  t.ok(bed.etcd, 'etcd started');
  t.match(bed.etcdEndpoint, /^http:\/\/192\.0\.2\.2:\d+$/);
  const h1 = bed.hosts[0]!;
  t.equal((await ping(h1, '192.0.2.2', { count: 1 })).received, 1, 'host reaches etcd');
  // A client inside the host namespace reaches it over the underlay, as tsflanneld will.
  const health = await h1.exec(['etcdctl', `--endpoints=${bed.etcdEndpoint}`, 'endpoint', 'health'], {
    timeoutMs: 15000,
  });
  t.match(health.stdout + health.stderr, /is healthy/);

  const w = await writeFlannelLease(bed.etcd!, '/coreos.com/network', '10.5.72.0/24', '192.0.2.11', 'AE:12:34:56:78:9A', 1);
  t.equal(w.key, '/coreos.com/network/subnets/10.5.72.0-24');
  t.equal(
    w.value,
    '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}',
  );
  t.equal(flannelLeaseValue('192.0.2.11', 'ae:12:34:56:78:9a'), w.value);
  const got = await bed.etcd!.etcdctl(['get', w.key, '--print-value-only']);
  t.equal(got.trim(), w.value);
  const ttl = await bed.etcd!.etcdctl(['lease', 'timetolive', w.leaseId]);
  const m = /granted with TTL\(86400s\), remaining\D*\((\d+)s\)/.exec(ttl);
  t.ok(m, `24 h lease: ${ttl.trim()}`);
  t.ok(m && Number(m[1]) > 86000);
});

t.test('teardown removes namespaces, processes and temp dirs', async (t) => {
  const bed = await createTestbed({ hosts: 1 });
  const h1 = bed.hosts[0]!;
  await addContainer(h1, { subnet: SUBNET1, index: 0 });
  const sleeper = h1.spawn(['sleep', '300']);
  const cap = await startCapture(h1, h1.underlayDev, '');
  t.ok(cap.file.startsWith(bed.tmpDir));
  t.ok((await namespacesWith(bed.prefix)).length >= 3, 'switch, host and container namespaces exist');
  const exited = new Promise<void>((r) => sleeper.on('exit', () => r()));
  await bed.teardown();
  await exited;
  t.same(await namespacesWith(bed.prefix), [], 'no namespace with the prefix is left');
  t.notOk(fs.existsSync(bed.tmpDir), 'temp dir removed');
  await bed.teardown(); // idempotent
});

t.test('stale testbeds of dead owners are cleaned, live ones are not', async (t) => {
  // A prefix owned by a process that has exited, created "an hour ago".
  const dead = spawn('true');
  await new Promise<void>((r) => dead.on('exit', () => r()));
  const old = Math.floor(Date.now() / 1000) - 3600;
  const stalePrefix = `${PREFIX_ROOT}-${dead.pid}-${old}-dead01`;
  const livePrefix = `${PREFIX_ROOT}-${process.pid}-${old}-live01`;
  t.teardown(async () => {
    await cleanupPrefix(stalePrefix).catch(() => undefined);
    await cleanupPrefix(livePrefix).catch(() => undefined);
  });
  await run(['ip', 'netns', 'add', `${stalePrefix}-h1`]);
  await run(['ip', 'netns', 'add', `${livePrefix}-h1`]);
  const cleaned = await cleanupStale(`^${PREFIX_ROOT}-\\d+-${old}-`, { olderThanMinutes: 30 });
  t.same(cleaned, [stalePrefix]);
  t.same(await namespacesWith(stalePrefix), []);
  t.same(await namespacesWith(livePrefix), [`${livePrefix}-h1`], 'live owner keeps its testbed');
  const young = await cleanupStale(`^${PREFIX_ROOT}-\\d+-${old}-`, { olderThanMinutes: 120, ignoreOwner: true });
  t.same(young, [], 'younger than the limit stays');
  await cleanupPrefix(livePrefix);
  await waitFor('live prefix gone', async () => (await namespacesWith(livePrefix)).length === 0, 5000);
  t.pass('cleanupPrefix removes a given prefix');
});
