// Forwarding threads end to end: three hosts on a bridged underlay. h1 restarts again and again on its
// persistent multi-queue TUN, at every offload rung with 1 and 2 forwarding threads (kill -9 between runs,
// so the thread count changes across restarts), and carries ping and a 20 MB TCP transfer both ways to
// h2 (userspace, 2 threads) and h3 (a kernel flannel.1 laid out as flanneld does it). Then: many flows
// land on both threads (per-thread counters), a single-queue persistent TUN left by an older version is
// replaced in place, and a forwarding thread that dies or a TUN that vanishes is one fatal, logged error.
import t from 'tap';
import {
  createTestbed,
  kernelPeerAddRemote,
  iperf3Client,
  iperf3Server,
  randomVtepMac,
  setupKernelFlannelPeer,
  type TestHost,
} from '../../netns-fixtures/testbed';
import { configureTun, exchange, MB20, MTU, type NodeSpec, peerOf, pingOk, Runner, takePort, TUN } from './dataplane-runner';

const RUNGS = ['full', 'no-tun-uso', 'no-udp-gro', 'no-udp-gso', 'none'] as const;

t.test('forwarding threads: every rung × 1 and 2 threads, flows spread, upgrade, fatal', async (t) => {
  const bed = await createTestbed({ hosts: 3, t });
  const [h1, h2, h3] = bed.hosts as [TestHost, TestHost, TestHost];
  const n1: NodeSpec = { host: h1, subnet: '10.5.1.0/24', gw: '10.5.1.0', mac: randomVtepMac() };
  const n2: NodeSpec = { host: h2, subnet: '10.5.2.0/24', gw: '10.5.2.0', mac: randomVtepMac() };
  const n3: NodeSpec = { host: h3, subnet: '10.5.3.0/24', gw: '10.5.3.0', mac: randomVtepMac() };
  await setupKernelFlannelPeer(h3, { vtepMac: n3.mac, subnet: n3.subnet, mtu: MTU });
  for (const r of [n1, n2]) await kernelPeerAddRemote(h3, peerOf(r));

  // Many send sockets: many outer source ports, so the receiver's SO_REUSEPORT group has flows to spread.
  const base = { vni: 1, persist: true, tunName: TUN, mtu: MTU, sendSockets: 32 };
  const r2 = await Runner.start(h2, { ...base, localMac: n2.mac, offload: 'auto', threads: 2, peers: [peerOf(n1), peerOf(n3)] });
  let r1: Runner | null = null;
  t.teardown(async () => {
    for (const r of [r1, r2]) if (r && r.child.exitCode === null && r.child.signalCode === null) await r.kill9();
  });
  await configureTun(n2, [n1, n3]);
  const startH1 = async (offload: string, threads: number): Promise<Runner> =>
    Runner.start(h1, { ...base, localMac: n1.mac, offload, threads, peers: [peerOf(n2), peerOf(n3)] });
  const ifindex = async (): Promise<string> => (await h1.exec(['cat', `/sys/class/net/${TUN}/ifindex`])).stdout.trim();

  await t.test('every rung with 1 and 2 threads: ping + 20 MB TCP both ways to a userspace and a kernel peer', async (t) => {
    let firstIfindex = '';
    for (const rung of RUNGS) {
      for (const threads of [1, 2]) {
        r1 = await startH1(rung, threads);
        if (firstIfindex === '') {
          await configureTun(n1, [n2, n3]);
          firstIfindex = await ifindex();
        } else {
          // kill -9 left the persistent device with its address and routes: nothing is configured again.
          t.equal(await ifindex(), firstIfindex, `${rung}/${threads}: same persistent TUN after kill -9 and restart`);
        }
        t.equal(r1.offloadRung, rung, `${rung}/${threads}: rung in force`);
        t.equal(r1.threads, threads, `${rung}/${threads}: forwarding threads`);
        await exchange(t, n1, n2, MB20, `${rung}/${threads} ↔ userspace`);
        await exchange(t, n1, n3, MB20, `${rung}/${threads} ↔ kernel`);
        await r1.kill9();
      }
    }
    const link = await h1.exec(['ip', '-d', 'link', 'show', TUN]);
    t.match(link.stdout, /multi_queue/, 'the TUN is multi-queue');
  });

  await t.test('many flows land on both forwarding threads (per-thread counters)', async (t) => {
    r1 = await startH1('auto', 2);
    await pingOk(h2, n1.gw);
    const before1 = await r1.threadCounters();
    const before2 = await r2.threadCounters();
    const port = takePort();
    const server = await iperf3Server(h1, { port });
    try {
      const res = await iperf3Client(h2, n1.gw, { port, seconds: 2, streams: 16 });
      t.ok(res.bitsPerSecond > 0, `iperf3 -P 16 h2 → h1: ${(res.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`);
    } finally {
      await server.stop();
    }
    const after1 = await r1.threadCounters();
    const after2 = await r2.threadCounters();
    const delta = (a: typeof after1, b: typeof before1, k: 'rxPackets' | 'txPackets') => a.map((c, i) => c[k] - b[i]![k]);
    const rx1 = delta(after1, before1, 'rxPackets');
    const tx1 = delta(after1, before1, 'txPackets');
    const tx2 = delta(after2, before2, 'txPackets');
    t.comment(`h1 received per thread ${rx1.join('/')}, sent per thread ${tx1.join('/')}; h2 sent per thread ${tx2.join('/')}`);
    t.ok(
      rx1.every((n) => n > 0),
      'h1: every thread received (SO_REUSEPORT spreads the outer source ports)',
    );
    t.ok(
      tx2.every((n) => n > 0),
      'h2: every thread sent (the multi-queue TUN spreads the flows)',
    );
    t.ok(
      tx1.every((n) => n > 0),
      'h1: every thread sent the ACKs of some flows',
    );
    await r1.kill9();
  });

  await t.test('a persistent single-queue TUN from an older version is replaced in place', async (t) => {
    await h1.exec(['ip', 'link', 'del', TUN]);
    await h1.exec(['ip', 'tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
    await configureTun(n1, [n2, n3]);
    const old = await h1.exec(['ip', '-d', 'link', 'show', TUN]);
    t.notMatch(old.stdout, /multi_queue/, 'the old device is single-queue');
    r1 = await startH1('auto', 2);
    t.match(r1.log, /replaced the single-queue TUN/, 'the replacement is logged');
    const now = await h1.exec(['ip', '-d', 'link', 'show', TUN]);
    t.match(now.stdout, /multi_queue/, 'the device is multi-queue now');
    // The device was recreated: its address and routes went with the old one, the route manager's job
    // (here configureTun) is to program them again.
    await configureTun(n1, [n2, n3]);
    await exchange(t, n1, n2, MB20, 'upgraded ↔ userspace');
    await exchange(t, n1, n3, MB20, 'upgraded ↔ kernel');
  });

  await t.test('a forwarding thread that dies is a fatal, logged error', async (t) => {
    const r = r1!;
    await pingOk(h2, n1.gw);
    r.child.stdin!.write('{"op":"terminateThread","index":1}\n');
    const fatal = await r.next('fatal', 15000);
    t.match(String(fatal.message), /forwarding thread 1 of flannel\.1 exited/, `fatal: ${String(fatal.message)}`);
    await r.exited;
    t.equal(r.child.exitCode, 1, 'the runner exits 1');
    t.match(r.log, /forwarding thread 1 of flannel\.1 exited/, 'logged');
  });

  await t.test('a TUN that vanishes under the threads is a fatal, logged error', async (t) => {
    r1 = await startH1('auto', 2);
    await h1.exec(['ip', 'link', 'del', TUN]);
    const fatal = await r1.next('fatal', 15000);
    t.match(String(fatal.message), /read TUN flannel\.1 queue \d/, `fatal: ${String(fatal.message)}`);
    await r1.exited;
    t.equal(r1.child.exitCode, 1, 'the runner exits 1');
  });
});
