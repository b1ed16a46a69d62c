// Device setup and the route manager against the real kernel, inside a fresh network namespace with a
// TUN made by `ip tuntap`. The code under test runs in routes-driver.js inside the namespace; this file
// checks the kernel state from outside with `ip -n <ns> -j …`. Nothing is configured in the root
// namespace, and the namespace (and the driver in it) goes away in teardown even if a step fails.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import t from 'tap';
import { cleanupPrefix, newPrefix, run } from '../../netns-fixtures/testbed';
import { formatIp4, formatIp4Net, ip4Net, parseIp4, parseIp4Net, type Ip4Net } from '../../src/subnet/ip4';
import type { Lease, LeaseEvent } from '../../src/subnet/lease';
import type { RouteOp } from '../../src/netlink/rtnetlink';
import type { DriverRequest, DriverState } from './routes-driver';
import type { DeviceSetupResult } from '../../src/routes/device-setup';

const DRIVER = path.join(__dirname, 'routes-driver.js');
const ADDON = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'tsflanneld_native.node');
const NETWORK = parseIp4Net('10.5.0.0/16');
const OWN = parseIp4Net('10.5.72.0/26');
const MTU = 1450;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

class Driver {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private stderr = '';

  constructor(readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: string; code?: string };
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(Object.assign(new Error(msg.error), { code: msg.code }));
    });
    child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    child.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`routes driver exited (${code}): ${this.stderr.trim()}`));
      this.pending.clear();
    });
  }

  call<T>(req: DistributiveOmit<DriverRequest, 'id'>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

function lease(subnet: Ip4Net, n: number): Lease {
  return {
    key: formatIp4Net(subnet).replace('/', '-'),
    subnet,
    ipv6Subnet: null,
    attrs: {
      PublicIP: `198.51.100.${(n % 250) + 1}`,
      PublicIPv6: null,
      BackendType: 'vxlan',
      BackendData: {
        VNI: 1,
        VtepMAC: `0a:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`,
      },
    },
    etcdLeaseId: '1',
    modRevision: String(n + 1),
  };
}

/** `count` /26 peer leases inside 10.5.0.0/16, skipping the first subnet and our own. */
function peerLeases(count: number): Lease[] {
  const out: Lease[] = [];
  for (let i = 1; out.length < count; i++) {
    const s = ip4Net(NETWORK.ip + i * 64, 26);
    if (s.ip !== OWN.ip) out.push(lease(s, i));
  }
  return out;
}

interface IpRoute {
  dst: string;
  /** Absent for proto boot. */
  protocol?: string;
  scope?: string;
  metric?: number;
  gateway?: string;
}

const sorted = (xs: Iterable<string>): string[] => [...xs].sort();

t.test('device setup and route manager in a namespace', { skip: skipReason() }, async (t) => {
  const prefix = newPrefix();
  const ns = `${prefix}-rt`;
  const tun = `tsf${prefix.slice(-6)}`;
  let driver: Driver | null = null;
  t.teardown(async () => {
    await driver?.stop();
    await cleanupPrefix(prefix);
  });

  const ip = async (...args: string[]) => (await run(['ip', '-n', ns, ...args])).stdout;
  const routesOnTun = async (): Promise<IpRoute[]> => JSON.parse((await ip('-j', 'route', 'show', 'dev', tun)) || '[]') as IpRoute[];
  const ourRoutes = async (): Promise<string[]> => sorted((await routesOnTun()).filter((r) => r.protocol !== 'kernel').map((r) => r.dst));

  await run(['ip', 'netns', 'add', ns]);
  await ip('tuntap', 'add', 'mode', 'tun', 'name', tun);
  // Leftovers of "an earlier run": two addresses inside the Network (must go), one outside (stays).
  await ip('addr', 'add', '10.5.72.0/24', 'dev', tun);
  await ip('addr', 'add', '10.5.99.1/32', 'dev', tun);
  await ip('addr', 'add', '192.0.2.77/24', 'dev', tun);

  driver = new Driver(spawn('ip', ['netns', 'exec', ns, process.execPath, DRIVER], { stdio: ['pipe', 'pipe', 'pipe'] }));
  const d = driver;

  await t.test('device setup: /32 address, stale Network addresses removed, MTU, up', async (t) => {
    const res = await d.call<DeviceSetupResult>({ cmd: 'setup', ifname: tun, subnet: OWN, network: NETWORK, mtu: MTU });
    t.same(sorted(res.removed.map((a) => `${formatIp4(a.ip)}/${a.prefixLen}`)), ['10.5.72.0/24', '10.5.99.1/32']);
    const [link] = JSON.parse(await ip('-j', 'addr', 'show', 'dev', tun)) as {
      mtu: number;
      flags: string[];
      addr_info: { family: string; local: string; prefixlen: number }[];
    }[];
    t.equal(link!.mtu, MTU);
    t.ok(link!.flags.includes('UP'), 'link is up');
    t.same(sorted(link!.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`)), [
      '10.5.72.0/32',
      '192.0.2.77/24',
    ]);

    const again = await d.call<DeviceSetupResult>({ cmd: 'setup', ifname: tun, subnet: OWN, network: NETWORK, mtu: MTU });
    t.same(again.removed, [], 'second setup changes nothing');
    t.equal(again.ifindex, res.ifindex);
    await d.call({ cmd: 'start', ifindex: res.ifindex, ownSubnet: OWN, network: NETWORK });
  });

  const leases = peerLeases(1000);
  const expectAll = sorted(leases.map((l) => formatIp4Net(l.subnet)));
  const kept = leases.filter((_, i) => i % 2 === 0);
  const gone = leases.filter((_, i) => i % 2 === 1);
  const expectKept = sorted(kept.map((l) => formatIp4Net(l.subnet)));

  await t.test('1,000 peers: exactly their routes, proto boot scope link; own subnet never routed', async (t) => {
    const events: LeaseEvent[] = [...leases, lease(OWN, 0)].map((l) => ({ type: 'added', lease: l }));
    await d.call({ cmd: 'apply', events });
    const rs = await routesOnTun();
    t.same(await ourRoutes(), expectAll);
    t.ok(
      rs
        .filter((r) => r.protocol !== 'kernel')
        .every((r) => (r.protocol ?? 'boot') === 'boot' && r.scope === 'link' && r.gateway === undefined && r.metric === undefined),
      'all routes have our shape',
    );
    t.ok(
      rs.some((r) => r.protocol === 'kernel' && r.dst === '192.0.2.0/24'),
      "the outside address's kernel route is there",
    );
    const st = await d.call<DriverState>({ cmd: 'state' });
    t.same(st.routes.length, 1000);
    t.same(st.forwarding, expectAll);
    t.notOk(st.dirty);
    t.same(st.warnings, []);
  });

  await t.test('removing half deletes exactly those routes and forwarding entries', async (t) => {
    await d.call({ cmd: 'apply', events: gone.map((l) => ({ type: 'removed', lease: l })) });
    t.same(await ourRoutes(), expectKept);
    const st = await d.call<DriverState>({ cmd: 'state' });
    t.same(st.forwarding, expectKept);
    t.same(st.warnings, []);
  });

  await t.test('idempotent re-apply produces no errors', async (t) => {
    await d.call({ cmd: 'apply', events: kept.map((l) => ({ type: 'added', lease: l })) });
    await d.call({ cmd: 'apply', events: gone.map((l) => ({ type: 'removed', lease: l })) });
    await d.call({ cmd: 'reconcile', leases: kept });
    t.same(await ourRoutes(), expectKept);
    const st = await d.call<DriverState>({ cmd: 'state' });
    t.notOk(st.dirty);
    t.same(st.warnings, []);
    t.same(st.errors, []);
  });

  await t.test('reconcile repairs manual deletes and removes strays but keeps kernel routes', async (t) => {
    const [a, b, c] = kept.map((l) => formatIp4Net(l.subnet));
    await ip('route', 'del', a!, 'dev', tun);
    await ip('route', 'del', b!, 'dev', tun);
    await ip('route', 'add', '10.5.255.0/26', 'dev', tun); // stale peer / stray (proto boot; `ip -j` omits it)
    await ip('route', 'add', '10.5.255.64/26', 'dev', tun, 'proto', 'static');
    await ip('route', 'add', c!, 'dev', tun, 'metric', '100'); // duplicate with a metric
    await ip('route', 'replace', formatIp4Net(kept[3]!.subnet), 'via', '10.5.0.1', 'dev', tun, 'onlink'); // wrong shape
    t.not((await ourRoutes()).join(), expectKept.join(), 'kernel state was disturbed');

    await d.call({ cmd: 'reconcile', leases: kept });
    const rs = await routesOnTun();
    t.same(await ourRoutes(), expectKept);
    t.ok(
      rs
        .filter((r) => r.protocol !== 'kernel')
        .every((r) => (r.protocol ?? 'boot') === 'boot' && r.scope === 'link' && r.gateway === undefined && r.metric === undefined),
    );
    t.ok(
      rs.some((r) => r.protocol === 'kernel' && r.dst === '192.0.2.0/24'),
      'kernel route kept',
    );
    const st = await d.call<DriverState>({ cmd: 'state' });
    t.notOk(st.dirty);
    t.same(st.warnings, []);
  });

  await t.test('link flap: failures are reported with context, and a reconcile restores everything', async (t) => {
    await ip('link', 'set', tun, 'down'); // the kernel flushes all routes of the device
    t.same(await ourRoutes(), []);
    const extra = gone.slice(0, 3);
    await d.call({ cmd: 'apply', events: extra.map((l) => ({ type: 'added', lease: l })) });
    let st = await d.call<DriverState>({ cmd: 'state' });
    t.ok(st.dirty);
    t.equal(st.warnings.length, 3);
    t.match(
      st.warnings[0],
      new RegExp(`^replace route ${formatIp4Net(extra[0]!.subnet).replace(/\./g, '\\.')} dev ${tun}: Network is down; retrying`),
    );

    await ip('link', 'set', tun, 'up');
    const now = [...kept, ...extra];
    await d.call({ cmd: 'reconcile', leases: now });
    t.same(await ourRoutes(), sorted(now.map((l) => formatIp4Net(l.subnet))));
    st = await d.call<DriverState>({ cmd: 'state' });
    t.notOk(st.dirty);
  });

  await t.test('native batch: delete of a missing route succeeds, kernel errors come back per op', async (t) => {
    const { ifindex } = await d.call<DeviceSetupResult>({ cmd: 'setup', ifname: tun, subnet: OWN, network: NETWORK, mtu: MTU });
    const missing = parseIp4Net('10.5.253.0/26');
    const ops: RouteOp[] = [
      { kind: 'delete', dst: missing },
      { kind: 'replace', dst: { ip: parseIp4('10.5.254.1'), prefixLen: 26 } }, // host bits set: EINVAL
      { kind: 'replace', dst: parseIp4Net('10.5.254.64/26') },
      { kind: 'delete', dst: parseIp4Net('10.5.254.64/26') },
    ];
    const res = await d.call<({ message: string; code: string } | null)[]>({ cmd: 'rawApply', ifindex, ops });
    t.equal(res[0], null);
    t.match(res[1], { code: 'EINVAL', message: `replace route 10.5.254.1/26 dev ${tun}: Invalid argument` });
    t.equal(res[2], null);
    t.equal(res[3], null);
    await t.rejects(d.call({ cmd: 'setup', ifname: `${tun}x`, subnet: OWN, network: NETWORK, mtu: MTU }), {
      message: `get link ${tun}x: No such device`,
      code: 'ENODEV',
    });
  });
});

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  if (!fs.existsSync(ADDON)) return `native addon not built (${ADDON})`;
  return false;
}
