// tsflanneld next to real flannel nodes: a kernel flannel.1 host laid out exactly as flanneld does it
// (docs/compat.md §5.5: permanent neighbor, FDB entry, onlink route per remote lease; its lease in
// flanneld's JSON) and a tsflanneld host, both on one etcd. Containers talk both ways (ping, 20 MB
// TCP); a capture on the underlay compares tsflanneld's VXLAN frames field by field with the kernel's;
// VXLAN from a non-peer address is dropped and counted; a custom Backend.Port (7890) works between
// tsflanneld hosts and with a kernel peer made with dstport 7890.
import t from 'tap';
import type { CapturedPacket } from '../../netns-fixtures/pcap';
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
  sendHandcraftedVxlan,
  sendUdpFlows,
  startDaemonNode,
  tcpTransfer,
  waitPing,
  type DaemonNode,
} from '../../netns-fixtures/tsflanneld-node';

const MB20 = 20 * 1024 * 1024;
const KERNEL_SUBNET = '10.5.250.0/24';

function config(port?: number): string {
  return JSON.stringify({ Network: '10.5.0.0/16', Backend: port === undefined ? { Type: 'vxlan' } : { Type: 'vxlan', Port: port } });
}

async function portRange(host: TestHost): Promise<[number, number]> {
  const out = (await host.exec(['sysctl', '-n', 'net.ipv4.ip_local_port_range'])).stdout.trim().split(/\s+/).map(Number);
  return [out[0]!, out[1]!];
}

interface FrameSummary {
  count: number;
  dstPorts: number[];
  flags: number[];
  vnis: number[];
  innerDstMacs: string[];
  innerSrcMacs: string[];
  innerTypes: number[];
  df: boolean[];
  ttls: number[];
  /** How the outer UDP checksum of frames carrying ICMP looks as captured: see checksumKind(). */
  checksumKinds: string[];
  srcPorts: Set<number>;
  /** Outer source ports used for the ICMP (ping) flow: one flow → one port. */
  icmpSrcPorts: Set<number>;
  /** UDP length = IP total length − 20. */
  lengthsConsistent: boolean;
}

const uniq = <T>(xs: T[]): T[] => [...new Set(xs)];

function ipWords(ip: string): number {
  const b = ip.split('.').map(Number);
  return ((b[0]! << 8) | b[1]!) + ((b[2]! << 8) | b[3]!);
}

/**
 * "zero" (not computed), "valid" (verifies over the captured bytes), "offload-seed" (the folded
 * pseudo-header sum a sender leaves for checksum offload — on veth nobody completes it, receivers
 * trust it), or "bad".
 */
function checksumKind(p: CapturedPacket): string {
  const u = p.udp!;
  if (u.checksum === 0) return 'zero';
  if (u.checksumValid === true) return 'valid';
  let sum = ipWords(p.ip!.src) + ipWords(p.ip!.dst) + 17 + u.length;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === u.checksum ? 'offload-seed' : 'bad';
}

async function hasEthtool(host: TestHost): Promise<boolean> {
  return (await host.exec(['ethtool', '--version'], { allowFail: true }).catch(() => ({ code: 1 }))).code === 0;
}

function summarize(pkts: CapturedPacket[]): FrameSummary {
  return {
    count: pkts.length,
    dstPorts: uniq(pkts.map((p) => p.udp!.dstPort)),
    flags: uniq(pkts.map((p) => p.vxlan!.flags)),
    vnis: uniq(pkts.map((p) => p.vxlan!.vni)),
    innerDstMacs: uniq(pkts.map((p) => p.inner!.eth.dst)),
    innerSrcMacs: uniq(pkts.map((p) => p.inner!.eth.src)),
    innerTypes: uniq(pkts.map((p) => p.inner!.eth.type)),
    df: uniq(pkts.map((p) => p.ip!.df)),
    ttls: uniq(pkts.map((p) => p.ip!.ttl)),
    // ICMP only: for inner TCP/UDP with a partial inner checksum the kernel's outer checksum uses
    // local checksum offload and only verifies once the inner one is filled in.
    checksumKinds: uniq(pkts.filter((p) => p.inner?.ip?.proto === 1).map(checksumKind)).sort(),
    srcPorts: new Set(pkts.map((p) => p.udp!.srcPort)),
    icmpSrcPorts: new Set(pkts.filter((p) => p.inner?.ip?.proto === 1).map((p) => p.udp!.srcPort)),
    lengthsConsistent: pkts.every((p) => p.udp!.length === p.ip!.totalLength - 20),
  };
}

t.test('tsflanneld and a kernel flannel.1 peer', async (t) => {
  const bed = await createTestbed({ hosts: 3, etcd: true, t });
  const etcd = bed.etcd!;
  const [hk, h2, h3] = bed.hosts as [TestHost, TestHost, TestHost];
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, config()]);

  // hk: what flanneld leaves behind on a kernel node: flannel.1 and its lease in etcd.
  const kmac = randomVtepMac();
  await setupKernelFlannelPeer(hk, { vtepMac: kmac, subnet: KERNEL_SUBNET });
  await writeFlannelLease(etcd, ETCD_PREFIX, KERNEL_SUBNET, hk.underlayIp, kmac);

  const d2 = await startDaemonNode({ host: h2, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 8471 });
  t.teardown(() => {
    if (!t.passing()) t.comment(`--- h2 log tail:\n${d2.tail(30)}`);
  });
  const r2 = await d2.waitReady();
  const lease2 = await getFlannelLease(etcd, r2.subnet);
  if (!lease2) throw new Error(`no lease for ${r2.subnet} in etcd`);
  // flanneld on hk would do this for the Added event of h2's lease.
  await kernelPeerAddRemote(hk, { subnet: r2.subnet, publicIp: lease2.publicIp, vtepMac: lease2.vtepMac });
  const mac2 = lease2.vtepMac;

  const ck = await addContainer(hk, { subnet: KERNEL_SUBNET, index: 0 });
  const c2 = await addContainer(h2, { subnet: r2.subnet, index: 0, mtu: r2.mtu });

  await t.test('lease of the tsflanneld host in flannel format', async (t) => {
    t.equal(lease2.publicIp, h2.underlayIp);
    t.match(
      lease2.value,
      /^\{"PublicIP":"[\d.]+","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"[0-9a-f:]{17}"\}\}$/,
      "byte layout of flanneld's Go JSON",
    );
  });

  await t.test('ping both ways between containers', async (t) => {
    await waitPing(c2, ck.ip);
    await waitPing(ck, c2.ip);
    const res = await ping(c2, ck.ip, { count: 5, interval: 0.1, size: r2.mtu - 28 });
    t.equal(res.received, 5, 'full-MTU pings tsflanneld → kernel');
    const back = await ping(ck, c2.ip, { count: 5, interval: 0.1, size: r2.mtu - 28 });
    t.equal(back.received, 5, 'full-MTU pings kernel → tsflanneld');
    // Host-originated traffic is sourced from the sender's .0 on flannel.1 (§5.7).
    await waitPing(hk, r2.subnet.replace(/0\/24$/, '0'));
    t.pass("kernel host → tsflanneld host's .0 address");
  });

  await t.test('20 MB TCP both ways', async (t) => {
    const tk = await tcpTransfer(c2, ck, ck.ip, MB20, 5001);
    t.equal(tk.received.bytes, MB20);
    t.equal(tk.received.sha256, tk.sent.sha256, 'tsflanneld → kernel sha256');
    t.comment(`tsflanneld → kernel: ${MB20 / 1e6} MB in ${tk.seconds.toFixed(2)} s`);
    const kt = await tcpTransfer(ck, c2, c2.ip, MB20, 5002);
    t.equal(kt.received.bytes, MB20);
    t.equal(kt.received.sha256, kt.sent.sha256, 'kernel → tsflanneld sha256');
    t.comment(`kernel → tsflanneld: ${MB20 / 1e6} MB in ${kt.seconds.toFixed(2)} s`);
  });

  await t.test("wire format: tsflanneld frames match the kernel's field by field", async (t) => {
    const cap = await startCapture(hk, 'eth0', 'udp port 8472');
    await waitPing(c2, ck.ip); // echo requests from tsflanneld, replies from the kernel
    await waitPing(ck, c2.ip); // and the other way round
    await sendUdpFlows(c2, ck.ip, { flows: 16, perFlow: 2, firstSrcPort: 41000 });
    await sendUdpFlows(ck, c2.ip, { flows: 16, perFlow: 2, firstSrcPort: 42000 });
    const pkts = (await cap.stop()).filter((p) => p.vxlan && p.inner);
    const fromTsf = pkts.filter((p) => p.ip!.src === h2.underlayIp && p.ip!.dst === hk.underlayIp);
    const fromKernel = pkts.filter((p) => p.ip!.src === hk.underlayIp && p.ip!.dst === h2.underlayIp);
    const tsf = summarize(fromTsf);
    const ker = summarize(fromKernel);
    // Counts vary: with UDP GSO a capture on veth shows a batch of same-size datagrams as one super-packet.
    t.ok(tsf.count > 0 && ker.count > 0, `frames captured: ${tsf.count} from tsflanneld, ${ker.count} from the kernel`);

    // Same values on both sides.
    t.same(tsf.dstPorts, [8472], 'tsflanneld: outer UDP dst port 8472');
    t.same(ker.dstPorts, [8472], 'kernel: outer UDP dst port 8472');
    t.same(tsf.flags, ker.flags, `VXLAN flags equal (${ker.flags.map((f) => `0x${f.toString(16)}`).join(',')})`);
    t.same(tsf.flags, [0x08], 'VXLAN flags 0x08');
    t.same(tsf.vnis, ker.vnis, 'VNI equal');
    t.same(tsf.vnis, [1], 'VNI 1');
    t.same(tsf.innerTypes, ker.innerTypes, 'inner EtherType equal');
    t.same(tsf.innerTypes, [0x0800], 'inner EtherType 0x0800');
    t.same(tsf.df, ker.df, 'outer DF equal');
    t.same(tsf.df, [false], 'outer DF clear');
    t.same(tsf.ttls, ker.ttls, `outer TTL equal (${ker.ttls.join(',')})`);
    t.ok(tsf.lengthsConsistent && ker.lengthsConsistent, 'UDP length = IP length − 20 on both');
    // MACs swap roles: inner dst = the receiver's VtepMAC, inner src = the sender's.
    t.same(tsf.innerDstMacs, [kmac], 'tsflanneld frames: inner dst MAC = kernel peer VtepMAC');
    t.same(tsf.innerSrcMacs, [mac2], 'tsflanneld frames: inner src MAC = own VtepMAC');
    t.same(ker.innerDstMacs, [mac2], 'kernel frames: inner dst MAC = tsflanneld VtepMAC');
    t.same(ker.innerSrcMacs, [kmac], 'kernel frames: inner src MAC = kernel VtepMAC');
    // Checksums: computed (never zero), handled exactly like the kernel handles its own.
    t.equal(
      fromTsf.filter((p) => p.udp!.checksum === 0).length + fromKernel.filter((p) => p.udp!.checksum === 0).length,
      0,
      'no zero outer UDP checksum on either side',
    );
    t.comment(`outer UDP checksums as captured: tsflanneld ${tsf.checksumKinds.join('+')}, kernel ${ker.checksumKinds.join('+')}`);
    t.notOk(
      tsf.checksumKinds.includes('zero') || tsf.checksumKinds.includes('bad'),
      'tsflanneld: outer UDP checksum non-zero and valid or offloaded',
    );
    t.notOk(
      ker.checksumKinds.includes('zero') || ker.checksumKinds.includes('bad'),
      'kernel: outer UDP checksum non-zero and valid or offloaded',
    );
    t.same(tsf.checksumKinds, ker.checksumKinds, 'same checksum handling as the kernel');
    // Source port: per flow, from the sender's ephemeral range.
    const [lo2, hi2] = await portRange(h2);
    const [lok, hik] = await portRange(hk);
    t.ok(
      [...tsf.srcPorts].every((p) => p >= lo2 && p <= hi2),
      `tsflanneld source ports in ${lo2}-${hi2}: ${[...tsf.srcPorts].sort().join(',')}`,
    );
    t.ok(
      [...ker.srcPorts].every((p) => p >= lok && p <= hik),
      `kernel source ports in ${lok}-${hik} (${ker.srcPorts.size} distinct)`,
    );
    t.ok(tsf.srcPorts.size > 1, `tsflanneld: source port varies by flow (${tsf.srcPorts.size} distinct over 17 flows)`);
    t.ok(ker.srcPorts.size > 1, `kernel: source port varies by flow (${ker.srcPorts.size} distinct over 17 flows)`);
    t.equal(tsf.icmpSrcPorts.size, 1, 'tsflanneld: one ping flow, one source port');
    t.equal(ker.icmpSrcPorts.size, 1, 'kernel: one ping flow, one source port');
  });

  const ethtool = await hasEthtool(h2);
  await t.test(
    'outer UDP checksums verify when the senders compute them in software',
    { skip: ethtool ? false : 'ethtool not installed' },
    async (t) => {
      // veth offloads checksums and never completes them, so the capture above shows seeds; with tx
      // checksum offload off on both underlay ports the kernel computes them and they must verify.
      for (const h of [h2, hk]) await h.exec(['ethtool', '-K', 'eth0', 'tx', 'off']);
      try {
        const cap = await startCapture(hk, 'eth0', 'udp port 8472');
        await waitPing(c2, ck.ip);
        await sendUdpFlows(c2, ck.ip, { flows: 8, perFlow: 2, firstSrcPort: 43000 });
        await sendUdpFlows(ck, c2.ip, { flows: 8, perFlow: 2, firstSrcPort: 44000 });
        const pkts = (await cap.stop()).filter((p) => p.vxlan);
        const tsf = pkts.filter((p) => p.ip!.src === h2.underlayIp);
        const ker = pkts.filter((p) => p.ip!.src === hk.underlayIp);
        t.ok(tsf.length > 0 && ker.length > 0, `${tsf.length} + ${ker.length} frames`);
        t.same(uniq(tsf.map(checksumKind)), ['valid'], 'tsflanneld: every outer UDP checksum verifies');
        t.same(uniq(ker.map(checksumKind)), ['valid'], 'kernel: every outer UDP checksum verifies');
      } finally {
        for (const h of [h2, hk]) await h.exec(['ethtool', '-K', 'eth0', 'tx', 'on'], { allowFail: true });
      }
    },
  );

  await t.test('spoofed VXLAN from a non-peer address is dropped and counted', async (t) => {
    const drops = (): Promise<number | null> => d2.metricValue('tsflanneld_drops_total', { reason: 'unknownSource' });
    const peerRx = (): Promise<number | null> => d2.metricValue('tsflanneld_peer_packets_total', { peer: KERNEL_SUBNET, direction: 'rx' });
    const before = (await drops()) ?? 0;
    const rxBefore = (await peerRx()) ?? 0;
    // h3 is on the underlay but holds no lease: right VNI, right MACs, wrong source, and an inner source in
    // no peer's subnet (a frame that fits a peer is accepted from any source: source-check.ts, README Security).
    const frame = { dstIp: h2.underlayIp, dstMac: mac2, srcMac: kmac, innerSrc: '10.9.9.9', innerDst: c2.ip, count: 5 };
    await sendHandcraftedVxlan(h3, { ...frame, bindIp: h3.underlayIp });
    const after = await waitFor(
      'unknownSource drops on /metrics',
      async () => {
        const v = (await drops()) ?? 0;
        return v >= before + 5 ? v : null;
      },
      30000,
    );
    t.equal(after - before, 5, `all 5 counted as tsflanneld_drops_total{reason="unknownSource"}`);
    t.equal((await peerRx()) ?? 0, rxBefore, 'nothing credited to the kernel peer');
    // Control: the same frames from the kernel peer's PublicIP are accepted.
    await sendHandcraftedVxlan(hk, { ...frame, bindIp: hk.underlayIp });
    const rx = await waitFor(
      'accepted frames on /metrics',
      async () => {
        const v = (await peerRx()) ?? 0;
        return v >= rxBefore + 5 ? v : null;
      },
      30000,
    );
    t.ok(rx >= rxBefore + 5, "accepted from the lease's PublicIP");
    t.equal(await drops(), after, 'no further unknownSource drops');
  });
});

t.test('Backend.Port 7890: tsflanneld ↔ tsflanneld and ↔ a kernel peer with dstport 7890', async (t) => {
  const PORT = 7890;
  const bed = await createTestbed({ hosts: 3, etcd: true, t });
  const etcd = bed.etcd!;
  const [h1, h2, hk] = bed.hosts as [TestHost, TestHost, TestHost];
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, config(PORT)]);
  const kmac = randomVtepMac();
  await setupKernelFlannelPeer(hk, { vtepMac: kmac, subnet: KERNEL_SUBNET, port: PORT });
  await writeFlannelLease(etcd, ETCD_PREFIX, KERNEL_SUBNET, hk.underlayIp, kmac);

  const daemons: DaemonNode[] = [];
  for (const h of [h1, h2]) daemons.push(await startDaemonNode({ host: h, etcdEndpoint: bed.etcdEndpoint! }));
  t.teardown(() => {
    if (!t.passing()) for (const d of daemons) t.comment(`--- ${d.host.name} log tail:\n${d.tail(30)}`);
  });
  const ready = await Promise.all(daemons.map((d) => d.waitReady()));
  const containers: Container[] = [];
  for (const [i, h] of [h1, h2].entries()) {
    const lease = await getFlannelLease(etcd, ready[i]!.subnet);
    if (!lease) throw new Error(`no lease for ${ready[i]!.subnet}`);
    await kernelPeerAddRemote(hk, { subnet: lease.subnet, publicIp: lease.publicIp, vtepMac: lease.vtepMac });
    containers.push(await addContainer(h, { subnet: ready[i]!.subnet, index: 0, mtu: ready[i]!.mtu }));
  }
  containers.push(await addContainer(hk, { subnet: KERNEL_SUBNET, index: 0 }));
  const [c1, c2, ck] = containers as [Container, Container, Container];

  for (const h of [h1, h2]) {
    const udp = (await h.exec(['ss', '-Hlun'])).stdout;
    t.match(udp, new RegExp(`:${PORT}\\b`), `${h.name} listens on UDP ${PORT}`);
    t.notMatch(udp, /:8472\b/, `${h.name} does not listen on 8472`);
  }

  const cap1 = await startCapture(h1, 'eth0', 'udp');
  const capk = await startCapture(hk, 'eth0', 'udp');
  for (const [a, b] of [
    [c1, c2],
    [c2, c1],
    [c1, ck],
    [ck, c1],
    [c2, ck],
    [ck, c2],
  ] as Array<[Container, Container]>) {
    await waitPing(a, b.ip);
    t.pass(`${a.name} → ${b.name} ping`);
  }
  const tr = await tcpTransfer(c1, c2, c2.ip, 4 * 1024 * 1024, 5003);
  t.equal(tr.received.sha256, tr.sent.sha256, 'TCP tsflanneld → tsflanneld over 7890');
  const trk = await tcpTransfer(ck, c1, c1.ip, 4 * 1024 * 1024, 5004);
  t.equal(trk.received.sha256, trk.sent.sha256, 'TCP kernel → tsflanneld over 7890');
  const pkts = [...(await cap1.stop({ vxlanPorts: [PORT] })), ...(await capk.stop({ vxlanPorts: [PORT] }))];
  const vx = pkts.filter((p) => p.vxlan);
  const pairs = new Set(vx.map((p) => `${p.ip!.src}>${p.ip!.dst}`));
  t.ok(vx.length > 0, `${vx.length} VXLAN frames captured`);
  for (const [a, b] of [
    [h1, h2],
    [h2, h1],
    [h1, hk],
    [hk, h1],
    [h2, hk],
    [hk, h2],
  ] as Array<[TestHost, TestHost]>) {
    t.ok(pairs.has(`${a.underlayIp}>${b.underlayIp}`), `frames ${a.name} → ${b.name} seen`);
  }
  t.same(uniq(vx.map((p) => p.udp!.dstPort)), [PORT], `every VXLAN frame goes to port ${PORT}`);
  t.equal(pkts.filter((p) => p.udp && (p.udp.dstPort === 8472 || p.udp.srcPort === 8472)).length, 0, 'nothing on 8472');
});
