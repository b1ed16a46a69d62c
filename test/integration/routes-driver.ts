// Runs inside the test's network namespace (`ip netns exec <ns> node routes-driver.js`) and drives
// device setup and a RouteManager over the real native rtnetlink. The test talks to it with one JSON
// request per stdin line and reads one JSON reply per stdout line. Only namespaced state is touched.
import readline from 'node:readline';
import { NativeRtnetlink, type RouteOp } from '../../src/netlink/rtnetlink';
import { formatIp4Net, type Ip4Net } from '../../src/subnet/ip4';
import type { Lease, LeaseEvent } from '../../src/subnet/lease';
import { setupDevice } from '../../src/routes/device-setup';
import type { Log } from '../../src/ops/log';
import { RouteManager, type PeerForwarding } from '../../src/routes/route-manager';

export type DriverRequest =
  | { id: number; cmd: 'setup'; ifname: string; subnet: Ip4Net; network: Ip4Net; mtu: number }
  | { id: number; cmd: 'start'; ifindex: number; ownSubnet: Ip4Net; network: Ip4Net }
  | { id: number; cmd: 'apply'; events: LeaseEvent[] }
  | { id: number; cmd: 'reconcile'; leases: Lease[] }
  | { id: number; cmd: 'state' }
  | { id: number; cmd: 'rawApply'; ifindex: number; ops: RouteOp[] };

export interface DriverState {
  routes: string[];
  forwarding: string[];
  dirty: boolean;
  warnings: string[];
  errors: string[];
}

const netlink = new NativeRtnetlink();
const forwarded = new Map<string, Ip4Net>();
const forwarding: PeerForwarding = {
  setPeer: (p) => void forwarded.set(formatIp4Net(p.subnet), p.subnet),
  removePeer: (s) => void forwarded.delete(formatIp4Net(s)),
};
const warnings: string[] = [];
const errors: string[] = [];
const log: Log = {
  debug: () => undefined,
  info: () => undefined,
  warn: (o: object | string, msg?: string) => void warnings.push(msg ?? JSON.stringify(o)),
  error: (o: object | string, msg?: string) => void errors.push(`${msg ?? ''}: ${String((o as { err?: unknown }).err)}`),
  fatal: () => undefined,
  isLevelEnabled: () => true,
};
let mgr: RouteManager | null = null;

function manager(): RouteManager {
  if (mgr === null) throw new Error('driver: "start" first');
  return mgr;
}

async function handle(req: DriverRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'setup':
      return setupDevice({ netlink, ifname: req.ifname, subnet: req.subnet, network: req.network, mtu: req.mtu, log });
    case 'start':
      mgr = new RouteManager({
        netlink,
        forwarding,
        ifindex: req.ifindex,
        ownSubnet: req.ownSubnet,
        network: req.network,
        log,
        resyncIntervalMs: 0,
      });
      return null;
    case 'apply':
      await manager().applyEvents(req.events);
      return null;
    case 'reconcile':
      await manager().reconcile(req.leases);
      return null;
    case 'state': {
      const m = manager();
      const state: DriverState = {
        routes: m.routes().map(formatIp4Net),
        forwarding: [...forwarded.keys()].sort(),
        dirty: m.dirty,
        warnings: warnings.splice(0),
        errors: errors.splice(0),
      };
      return state;
    }
    case 'rawApply': {
      const res = await netlink.applyRoutes(req.ifindex, req.ops);
      return res.map((e) => (e === null ? null : { message: e.message, code: e.code, operation: e.operation, object: e.object }));
    }
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    const req = JSON.parse(line) as DriverRequest;
    try {
      const result = await handle(req);
      process.stdout.write(`${JSON.stringify({ id: req.id, ok: true, result })}\n`);
    } catch (err) {
      const e = err as Error & { code?: string };
      process.stdout.write(`${JSON.stringify({ id: req.id, ok: false, error: e.message, code: e.code ?? null, name: e.name })}\n`);
    }
  });
});
rl.on('close', () => {
  void chain.then(() => {
    mgr?.close();
    process.exit(0);
  });
});
