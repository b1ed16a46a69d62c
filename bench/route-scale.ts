// Route programming at scale, in a throw-away network namespace with a TUN device.
//   node dist/bench/route-scale.js [--peers 5000] [--runs 5] [--changes 2000]
// Measures:
//   - startup: RouteManager.reconcile(N leases) on an empty device (list + diff + one batch);
//   - the same N routes one netlink request per route (flanneld's pattern), and `ip -batch`, for reference;
//   - idempotent re-apply of N added events, and an in-sync reconcile (the periodic drift check);
//   - p50/p99 latency of one lease event → route in the kernel. applyEvents resolves after the kernel
//     ACKed the route; rtnetlink ACKs after the FIB insert, so the route is in place at that point.
// Prints results; no thresholds. The namespace is removed on exit, also on failure or ^C.
import { vxlanLeaseMapper } from '../src/backend/vxlan/mapping';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanupPrefix, newPrefix, run } from '../netns-fixtures/testbed';
import { NativeRtnetlink, type RouteOp } from '../src/netlink/rtnetlink';
import { formatIp4Net, ip4Net, parseIp4Net } from '../src/subnet/ip4';
import type { Lease, LeaseEvent } from '../src/subnet/lease';
import { setupDevice } from '../src/routes/device-setup';
import { RouteManager, type PeerForwarding, type RouteLog } from '../src/routes/route-manager';

const NETWORK = parseIp4Net('10.5.0.0/16');
const SUBNET_LEN = 29; // 8,192 subnets in the /16, enough for 5,000 peers
const OWN = ip4Net(parseIp4Net('10.5.72.0/29').ip, SUBNET_LEN);

interface Args {
  peers: number;
  runs: number;
  changes: number;
  inner: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { peers: 5000, runs: 5, changes: 2000, inner: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[++i];
    if (k === '--peers') a.peers = Number(v);
    else if (k === '--runs') a.runs = Number(v);
    else if (k === '--changes') a.changes = Number(v);
    else if (k === '--inner') a.inner = v ?? null;
    else throw new Error(`unknown argument ${k}`);
  }
  if (a.peers < 1 || a.peers > 8000) throw new Error('--peers must be 1..8000');
  return a;
}

// ---- outside the namespace ----

async function outer(args: Args): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('route-scale needs root (it creates a network namespace)');
  const prefix = newPrefix();
  const ns = `${prefix}-rt`;
  const tun = `tsf${prefix.slice(-6)}`;
  const cleanup = () =>
    cleanupPrefix(prefix).catch((e: unknown) => process.stderr.write(`cleanup: ${e instanceof Error ? e.message : String(e)}\n`));
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    await run(['ip', 'netns', 'add', ns]);
    await run(['ip', '-n', ns, 'tuntap', 'add', 'mode', 'tun', 'name', tun]);
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        __filename,
        '--inner',
        tun,
        '--peers',
        String(args.peers),
        '--runs',
        String(args.runs),
        '--changes',
        String(args.changes),
      ],
      { stdio: 'inherit' },
    );
    const code = await new Promise<number>((r) => child.on('exit', (c) => r(c ?? 1)));
    if (code !== 0) throw new Error(`benchmark inside ${ns} exited with ${code}`);
  } finally {
    await cleanup();
  }
}

// ---- inside the namespace ----

function leases(count: number): Lease[] {
  const out: Lease[] = [];
  for (let i = 1; out.length < count; i++) {
    const subnet = ip4Net(NETWORK.ip + i * 8, SUBNET_LEN);
    if (subnet.ip === OWN.ip) continue;
    out.push({
      key: formatIp4Net(subnet).replace('/', '-'),
      subnet,
      ipv6Subnet: null,
      attrs: {
        PublicIP: `198.51.100.${(i % 250) + 1}`,
        PublicIPv6: null,
        BackendType: 'vxlan',
        BackendData: {
          VNI: 1,
          VtepMAC: `0a:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
        },
      },
      etcdLeaseId: '1',
      modRevision: String(i),
    });
  }
  return out;
}

const quietLog: RouteLog = {
  debug: () => undefined,
  info: () => undefined,
  warn: (_o, m) => process.stderr.write(`warn: ${m}\n`),
  error: (o, m) => process.stderr.write(`error: ${m} ${String((o as { err?: unknown }).err)}\n`),
};

const now = (): number => Number(process.hrtime.bigint()) / 1e6;

function stats(xs: number[]): { min: number; p50: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { min: s[0]!, p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

const ms = (x: number): string => `${x.toFixed(2)} ms`;
const us = (x: number): string => `${(x * 1000).toFixed(1)} µs`;

async function inner(args: Args, tun: string): Promise<void> {
  const nl = new NativeRtnetlink();
  const dev = await setupDevice({ netlink: nl, ifname: tun, subnet: OWN, network: NETWORK, mtu: 1450, log: quietLog });
  const ifindex = dev.ifindex;
  const peers = leases(args.peers);
  const subnets = peers.map((l) => l.subnet);
  const forwarding: PeerForwarding = { setPeer: () => undefined, removePeer: () => undefined };
  const flush = async () => {
    const errs = await nl.applyRoutes(
      ifindex,
      subnets.map((dst) => ({ kind: 'delete' as const, dst })),
    );
    if (errs.some((e) => e !== null)) throw new Error('flush failed');
  };
  const count = async () => (await nl.listRoutes(ifindex)).length;

  // Startup: fresh manager, empty device, N leases → all routes.
  const startup: number[] = [];
  for (let r = 0; r < args.runs; r++) {
    await flush();
    const mgr = new RouteManager({
      netlink: nl,
      forwarding,
      devices: [{ ifindex, exclusive: true }],
      map: vxlanLeaseMapper({ tunIfindex: ifindex }),
      ownSubnet: OWN,
      network: NETWORK,
      log: quietLog,
      resyncIntervalMs: 0,
    });
    const t0 = now();
    await mgr.reconcile(peers);
    startup.push(now() - t0);
    if (mgr.dirty || (await count()) !== args.peers) throw new Error('startup reconcile did not program every route');
  }

  // Raw native batch (no manager), and one request per route (flanneld's pattern).
  await flush();
  const replaceOps: RouteOp[] = subnets.map((dst) => ({ kind: 'replace', dst }));
  let t0 = now();
  await nl.applyRoutes(ifindex, replaceOps);
  const rawBatch = now() - t0;
  await flush();
  t0 = now();
  for (const op of replaceOps) await nl.applyRoutes(ifindex, [op]);
  const perRoute = now() - t0;

  // iproute2 batch mode: one process, one request + ACK per line.
  await flush();
  const batchFile = path.join(os.tmpdir(), `route-scale-${process.pid}.batch`);
  fs.writeFileSync(batchFile, subnets.map((s) => `route replace ${formatIp4Net(s)} dev ${tun}\n`).join(''));
  t0 = now();
  await run(['ip', '-batch', batchFile]);
  const ipBatch = now() - t0;
  fs.rmSync(batchFile, { force: true });

  // Idempotent re-apply and in-sync reconcile with all N present.
  const mgr = new RouteManager({
    netlink: nl,
    forwarding,
    devices: [{ ifindex, exclusive: true }],
    map: vxlanLeaseMapper({ tunIfindex: ifindex }),
    ownSubnet: OWN,
    network: NETWORK,
    log: quietLog,
    resyncIntervalMs: 0,
  });
  await mgr.reconcile(peers);
  const events: LeaseEvent[] = peers.map((lease) => ({ type: 'added', lease }));
  t0 = now();
  await mgr.applyEvents(events);
  const reapply = now() - t0;
  const inSync: number[] = [];
  for (let r = 0; r < args.runs; r++) {
    t0 = now();
    await mgr.reconcile(peers);
    inSync.push(now() - t0);
  }
  t0 = now();
  const listed = await count();
  const list = now() - t0;

  // Single-lease changes on top of N routes: add a new peer, then remove it again.
  const spare = leases(args.peers + 1).slice(args.peers)[0]!;
  const addLat: number[] = [];
  const delLat: number[] = [];
  for (let i = 0; i < args.changes; i++) {
    t0 = now();
    await mgr.applyEvents([{ type: 'added', lease: spare }]);
    addLat.push(now() - t0);
    t0 = now();
    await mgr.applyEvents([{ type: 'removed', lease: spare }]);
    delLat.push(now() - t0);
  }
  if (mgr.dirty) throw new Error('single-lease changes left the manager dirty');

  t0 = now();
  await mgr.reconcile([]);
  const removeAll = now() - t0;

  const st = stats(startup);
  const sy = stats(inSync);
  const add = stats(addLat);
  const del = stats(delLat);
  const lines = [
    `route-scale: ${args.peers} peers on ${tun} (kernel ${os.release()}, ${os.cpus().length} CPUs), ${args.runs} runs, ${args.changes} single changes`,
    `  startup reconcile, empty device → ${args.peers} routes   p50 ${ms(st.p50)}  min ${ms(st.min)}  max ${ms(st.max)}`,
    `  raw native batch of ${args.peers} replaces             ${ms(rawBatch)}`,
    `  one netlink request per route (flanneld pattern)  ${ms(perRoute)}`,
    `  ip -batch with ${args.peers} route replaces            ${ms(ipBatch)}`,
    `  idempotent re-apply of ${args.peers} added events       ${ms(reapply)}`,
    `  in-sync reconcile (list ${listed} + diff)           p50 ${ms(sy.p50)}  max ${ms(sy.max)}  (listing alone ${ms(list)})`,
    `  single lease added → route present               p50 ${us(add.p50)}  p99 ${us(add.p99)}  max ${us(add.max)}`,
    `  single lease removed → route gone                p50 ${us(del.p50)}  p99 ${us(del.p99)}  max ${us(del.max)}`,
    `  remove all ${args.peers} (reconcile with no leases)      ${ms(removeAll)}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  process.stdout.write(
    `${JSON.stringify({
      bench: 'route-scale',
      peers: args.peers,
      startupMs: st,
      rawBatchMs: rawBatch,
      perRouteMs: perRoute,
      ipBatchMs: ipBatch,
      reapplyMs: reapply,
      inSyncReconcileMs: sy,
      listMs: list,
      addLatencyMs: add,
      removeLatencyMs: del,
      removeAllMs: removeAll,
    })}\n`,
  );
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.inner !== null) await inner(args, args.inner);
  else await outer(args);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`route-scale: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
