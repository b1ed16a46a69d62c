// `npm run demo`: a small flannel network in namespaces, once per backend (default vxlan, then udp).
// etcd on the underlay, three hosts running tsflanneld and (unless --no-kernel-peer) a fourth host
// that is a real flannel node of that backend with its lease written in flanneld's format: a kernel
// flannel.1 for vxlan, the independent udp reference peer (flannel0 + bare IP in UDP 8285) for udp.
// One container per host; every ordered pair of containers pings, iperf3 measures tsflanneld ↔
// tsflanneld and tsflanneld ↔ the flannel node. Exit 1 if any pair fails. Everything is torn down at
// the end of each round, on errors and on SIGINT/SIGTERM.
import path from 'node:path';
import {
  addContainer,
  createTestbed,
  iperf3Client,
  iperf3Server,
  kernelPeerAddRemote,
  ping,
  randomVtepMac,
  setupKernelFlannelPeer,
  writeFlannelLease,
  type Container,
  type Iperf3Result,
  type PingResult,
  type Testbed,
  type TestHost,
} from './testbed';
import { startDaemonNode, type DaemonNode } from './tsflanneld-node';
import { startUdpReferencePeer } from './udp-reference-peer';

const REPO = path.resolve(__dirname, '..', '..');
// Another build of the daemon can be demoed by pointing this at its entry script.
const DAEMON_BIN = process.env.TSFLANNELD_DEMO_BIN ?? path.join(REPO, 'bin', 'tsflanneld');
const ETCD_PREFIX = '/coreos.com/network';
/** Network config per demoed backend; udp is flannel's default, chosen by leaving Backend out. */
const NETWORK_CONFIGS: Record<DemoBackend, string> = {
  vxlan: '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}',
  udp: '{"Network":"10.5.0.0/16"}',
};
type DemoBackend = 'vxlan' | 'udp';
// Far from where allocation starts (SubnetMin 10.5.1.0), though the allocator skips it anyway.
const KERNEL_PEER_SUBNET = '10.5.250.0/24';

interface DemoOptions {
  backends: DemoBackend[];
  daemons: number;
  kernelPeer: boolean;
  iperfSeconds: number;
  readyTimeoutMs: number;
}

interface Node {
  host: TestHost;
  /** 'kernel' = the real flannel node of the round (kernel flannel.1, or the udp reference peer). */
  kind: 'tsflanneld' | 'kernel';
  subnet?: string;
  mtu?: number;
  vtepMac?: string;
  container?: Container;
  daemon?: DaemonNode;
}

interface LeaseInfo {
  key: string;
  subnet: string;
  publicIp: string;
  vtepMac: string;
  raw: string;
}

function usage(): never {
  process.stderr.write('usage: demo [--backends vxlan,udp] [--no-kernel-peer] [--hosts N] [--iperf-seconds S] [--ready-timeout S]\n');
  process.exit(2);
}

function parseArgs(argv: string[]): DemoOptions {
  const o: DemoOptions = { backends: ['vxlan', 'udp'], daemons: 3, kernelPeer: true, iperfSeconds: 5, readyTimeoutMs: 60000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) usage();
      return v;
    };
    if (a === '--backends') {
      const list = (argv[++i] ?? '').split(',');
      if (list.some((b) => b !== 'vxlan' && b !== 'udp')) usage();
      o.backends = list as DemoBackend[];
    } else if (a === '--no-kernel-peer') o.kernelPeer = false;
    else if (a === '--kernel-peer') o.kernelPeer = true;
    else if (a === '--hosts') o.daemons = Math.floor(num());
    else if (a === '--iperf-seconds') o.iperfSeconds = num();
    else if (a === '--ready-timeout') o.readyTimeoutMs = num() * 1000;
    else usage();
  }
  if (o.daemons < 2) usage();
  return o;
}

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

async function listLeases(bed: Testbed): Promise<LeaseInfo[]> {
  const out = await bed.etcd!.etcdctl(['get', '--prefix', `${ETCD_PREFIX}/subnets`]);
  const lines = out.split('\n').filter((l) => l.length > 0);
  const leases: LeaseInfo[] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const key = lines[i]!;
    const raw = lines[i + 1]!;
    const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(key);
    if (!m) continue;
    try {
      const v = JSON.parse(raw) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
      leases.push({ key, subnet: `${m[1]}/${m[2]}`, publicIp: v.PublicIP ?? '?', vtepMac: v.BackendData?.VtepMAC ?? '?', raw });
    } catch {
      leases.push({ key, subnet: `${m[1]}/${m[2]}`, publicIp: '?', vtepMac: '?', raw });
    }
  }
  return leases;
}

let foreignLabel = 'kernel';

function label(n: Node): string {
  return `${n.host.name}(${n.kind === 'kernel' ? foreignLabel : 'tsf'})`;
}

interface PairResult {
  from: Node;
  to: Node;
  ping?: PingResult;
  error?: string;
  iperf?: Iperf3Result | string;
}

/**
 * Routes/FDB on a daemon may land a moment after its lease shows up in etcd, so first wait (all
 * pairs in parallel, up to warmMs) until each pair has had one reply; pairs that never answer are
 * measured anyway and show their loss.
 */
async function warmUp(pairs: Array<[Container, Container]>, warmMs: number): Promise<void> {
  let pending = pairs;
  const deadline = Date.now() + warmMs;
  while (pending.length > 0 && Date.now() < deadline) {
    const answered = await Promise.all(
      pending.map(async ([from, to]) => (await ping(from, to.ip, { count: 1, waitSec: 1 }).catch(() => null))?.received === 1),
    );
    pending = pending.filter((_, i) => !answered[i]);
  }
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

async function demo(backend: DemoBackend, opts: DemoOptions, setBed: (bed: Testbed) => void): Promise<number> {
  const NETWORK_CONFIG = NETWORK_CONFIGS[backend];
  foreignLabel = backend === 'vxlan' ? 'kernel' : 'flannel-udp';
  const hostCount = opts.daemons + (opts.kernelPeer ? 1 : 0);
  say(`\n===== backend ${backend} =====`);
  say(`demo: creating etcd + ${hostCount} hosts in network namespaces`);
  const bed = await createTestbed({ hosts: hostCount, etcd: true });
  setBed(bed);
  const endpoint = bed.etcdEndpoint!;
  say(`demo: testbed ${bed.prefix}, etcd at ${endpoint}`);

  await bed.etcd!.etcdctl(['put', `${ETCD_PREFIX}/config`, NETWORK_CONFIG]);
  say(`demo: ${ETCD_PREFIX}/config = ${NETWORK_CONFIG}`);

  const nodes: Node[] = bed.hosts.map((host, i) => ({ host, kind: i < opts.daemons ? 'tsflanneld' : 'kernel' }));

  // The kernel peer's lease goes in first so the daemons see it in their initial snapshot.
  const kernel = nodes.find((n) => n.kind === 'kernel');
  let udpPeer: Awaited<ReturnType<typeof startUdpReferencePeer>> | null = null;
  if (kernel && backend === 'vxlan') {
    kernel.vtepMac = randomVtepMac();
    kernel.subnet = KERNEL_PEER_SUBNET;
    kernel.mtu = kernel.host.mtu - 50;
    await setupKernelFlannelPeer(kernel.host, { vtepMac: kernel.vtepMac, subnet: kernel.subnet });
    await writeFlannelLease(bed.etcd!, ETCD_PREFIX, kernel.subnet, kernel.host.underlayIp, kernel.vtepMac, 1);
    say(`demo: ${kernel.host.name} is a kernel flannel.1 peer on ${kernel.subnet}`);
  } else if (kernel) {
    kernel.subnet = KERNEL_PEER_SUBNET;
    kernel.mtu = kernel.host.mtu - 28;
    const peer = await startUdpReferencePeer(kernel.host, { subnet: kernel.subnet, network: '10.5.0.0/16' });
    udpPeer = peer;
    bed.onTeardown(() => peer.stop());
    const granted = await bed.etcd!.etcdctl(['lease', 'grant', '86400']);
    const id = /lease ([0-9a-f]+) granted/.exec(granted)![1]!;
    await bed.etcd!.etcdctl(['put', `--lease=${id}`, `${ETCD_PREFIX}/subnets/${kernel.subnet.replace('/', '-')}`, peer.leaseValue]);
    say(`demo: ${kernel.host.name} is a flannel udp peer (reference implementation, flannel0, UDP 8285) on ${kernel.subnet}`);
  }

  const daemons = nodes.filter((n) => n.kind === 'tsflanneld');
  for (const n of daemons) n.daemon = await startDaemonNode({ host: n.host, etcdEndpoint: endpoint, bin: DAEMON_BIN });
  say(`demo: started tsflanneld on ${daemons.map((n) => n.host.name).join(', ')}; waiting for subnet.env`);

  try {
    await Promise.all(
      daemons.map(async (n) => {
        const ready = await n.daemon!.waitReady(opts.readyTimeoutMs);
        n.subnet = ready.subnet;
        n.mtu = ready.mtu;
      }),
    );
  } catch (e) {
    say(`demo: FAILED: ${(e as Error).message}`);
    for (const n of daemons) say(`--- ${n.host.name} tsflanneld log (last lines) ---\n${n.daemon!.tail()}`);
    return 1;
  }

  for (const n of nodes) n.container = await addContainer(n.host, { subnet: n.subnet!, index: 0, mtu: n.mtu });

  const leases = await listLeases(bed);
  say('\nleases in etcd:');
  for (const l of leases) say(`  ${pad(l.key, 42)} ${l.raw}`);

  if (udpPeer) {
    // What flanneld's udp proxy on that node would be told for each other node's lease.
    for (const l of leases) if (l.subnet !== kernel!.subnet) await udpPeer.addRoute(l.subnet, l.publicIp);
  } else if (kernel) {
    // What flanneld on the kernel node would do for each other node's lease.
    for (const l of leases) {
      if (l.subnet === kernel.subnet || l.vtepMac === '?') continue;
      await kernelPeerAddRemote(kernel.host, { subnet: l.subnet, publicIp: l.publicIp, vtepMac: l.vtepMac });
    }
  }

  say('\npinging every ordered pair of containers…');
  const results: PairResult[] = [];
  for (const from of nodes) for (const to of nodes) if (from !== to) results.push({ from, to });
  await warmUp(
    results.map((r) => [r.from.container!, r.to.container!]),
    15000,
  );
  for (const r of results) {
    const from = r.from.container!;
    const to = r.to.container!;
    try {
      r.ping = await ping(from, to.ip, { count: 5, interval: 0.2, waitSec: 1 });
    } catch (e) {
      r.error = (e as Error).message;
    }
    const verdict = !r.ping ? 'error' : r.ping.received === r.ping.sent ? 'ok' : `${r.ping.received}/${r.ping.sent} replies`;
    say(`  ${label(r.from)} ${from.ip} → ${label(r.to)} ${to.ip}: ${verdict}`);
  }

  const pairOk = (r: PairResult): boolean => !!r.ping && r.ping.received === r.ping.sent;
  const iperfPairs: Array<[Node, Node]> = [[daemons[0]!, daemons[1]!]];
  if (kernel) iperfPairs.push([daemons[0]!, kernel]);
  for (const [from, to] of iperfPairs) {
    const r = results.find((x) => x.from === from && x.to === to)!;
    if (!r.ping || r.ping.received === 0) {
      r.iperf = 'skipped (no connectivity)';
      continue;
    }
    say(`iperf3 ${opts.iperfSeconds} s TCP ${label(from)} → ${label(to)}…`);
    const server = await iperf3Server(to.container!);
    try {
      r.iperf = await iperf3Client(from.container!, to.container!.ip, { seconds: opts.iperfSeconds });
    } catch (e) {
      r.iperf = `error: ${(e as Error).message}`;
    } finally {
      await server.stop();
    }
  }

  say('');
  const header = `${pad('pair', 50)} ${pad('loss', 6)} ${pad('avg RTT', 11)} Gbit/s`;
  say(header);
  say('-'.repeat(header.length + 4));
  for (const r of results) {
    const pair = `${label(r.from)} ${r.from.container!.ip} → ${label(r.to)} ${r.to.container!.ip}`;
    const loss = r.ping ? `${Math.round(r.ping.lossPercent)}%` : 'error';
    const rtt = r.ping?.avgMs !== undefined ? `${r.ping.avgMs.toFixed(3)} ms` : '-';
    let gbit = '';
    if (typeof r.iperf === 'string') gbit = r.iperf;
    else if (r.iperf) gbit = `${(r.iperf.bitsPerSecond / 1e9).toFixed(2)} (retr ${r.iperf.retransmits ?? 0})`;
    say(`${pad(pair, 50)} ${pad(loss, 6)} ${pad(rtt, 11)} ${gbit}`);
    if (r.error) say(`    ${r.error}`);
  }
  const failed = results.filter((r) => !pairOk(r));
  say(`\n${results.length - failed.length}/${results.length} pairs without loss`);
  for (const n of daemons) {
    if (!n.daemon!.running) say(`demo: tsflanneld on ${n.host.name} is no longer running`);
  }
  if (failed.length > 0) {
    for (const n of daemons) say(`--- ${n.host.name} tsflanneld log (last lines) ---\n${n.daemon!.tail()}`);
    return 1;
  }
  return 0;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  let bed: Testbed | null = null;
  let finishing: Promise<void> | null = null;
  const finish = (code: number): Promise<void> => {
    if (!finishing) {
      finishing = (async () => {
        if (bed) {
          say('demo: tearing down');
          try {
            await bed.teardown();
          } catch (e) {
            process.stderr.write(`demo: teardown: ${(e as Error).message}\n`);
            code = code || 1;
          }
        }
        process.exit(code);
      })();
    }
    return finishing;
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      say(`\ndemo: ${sig}, cleaning up`);
      void finish(sig === 'SIGINT' ? 130 : 143);
    });
  }
  let code = 0;
  for (const [i, backend] of opts.backends.entries()) {
    // The round's testbed, also seen by finish() (signals) through `bed`.
    let round: Testbed | null = null;
    try {
      code = (await demo(backend, opts, (b) => (bed = round = b))) || code;
    } catch (e) {
      process.stderr.write(`demo: ${(e as Error).stack ?? String(e)}\n`);
      code = 1;
    }
    const done = round as Testbed | null;
    if (i < opts.backends.length - 1 && done !== null) {
      say('demo: tearing down');
      await done.teardown();
      bed = null;
    }
  }
  await finish(code);
}

void main();
