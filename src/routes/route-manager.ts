// Keeps two things in step with the lease events, for any backend:
//  (a) kernel routes in the main table: for each peer lease, the route its backend asks for
//      (`<subnet> dev <tun>` into our TUN, or `<subnet> via <PublicIP> dev <external iface>`); and
//  (b) the data plane's forwarding table (subnet → public IP, VtepMAC), when the backend has one.
// This is docs/compat.md §5.5/§5.6/§6a adapted to our devices: a TUN has no L2, so a route into it
// needs no gateway, onlink or ARP entry: the data plane picks the peer from the packet's destination.
//
// Ownership: on our own TUN every main-table route except the kernel's is ours (protocol boot, like
// flanneld's, so scripts and monitoring that look for flannel's routes keep working). On a shared
// device (the external interface) only routes with our own protocol (RTPROT_TSFLANNELD) are ours:
// nothing else there is ever removed.
//
// Failures never propagate to the caller (the lease watcher). Each one is logged once per object and
// error code, marks the manager dirty, and is retried by the periodic resync (a full reconcile).
// A lease the backend refuses (e.g. a host-gw peer that is not on our L2) gets no route at all: one
// warning per lease and reason, counted by refusedCount().
import { formatIp4, formatIp4Net, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { describeRoute, type KernelRoute, type RouteNetlink, type RouteOp } from '../netlink/rtnetlink';
import type { Log } from '../ops/log';
import {
  diffRoutes,
  eventsToChanges,
  leasesToPlans,
  matchesSpec,
  netKey,
  peersEqual,
  protoOf,
  routesEqual,
  type DeviceRoutes,
  type IgnoredLease,
  type LeaseMapper,
  type ManagedDevice,
  type Peer,
  type PeerPlan,
  type PeerScope,
  type RouteSpec,
} from './route-diff';

/** The data plane's peer table, as far as the route manager needs it. */
export interface PeerForwarding {
  setPeer(peer: Peer): void;
  removePeer(subnet: Ip4Net): void;
  /** Resolves when the changes made so far are visible to the packet path (may batch them until then). */
  whenPublished?(): Promise<void>;
}

export interface RouteManagerOptions {
  netlink: RouteNetlink;
  /** The data plane's peer table; absent for backends without one (host-gw). */
  forwarding?: PeerForwarding;
  /** The devices routes go on (RouteSpec.ifindex of every plan must be one of them). */
  devices: readonly ManagedDevice[];
  /** The backend's lease → plan mapping (called for leases that passed the scope checks). */
  map: LeaseMapper;
  ownSubnet: Ip4Net;
  log: Log;
  /** The flannel Network; when given, leases outside it are ignored instead of routed. */
  network?: Ip4Net;
  /**
   * Period of the resync timer (started by the first reconcile). A tick does a full reconcile if
   * something failed; otherwise every `driftCheckTicks`-th tick does one anyway, to undo external
   * changes (an operator's `ip route del`, or a link flap that flushed the routes). 0 disables the timer.
   */
  resyncIntervalMs?: number;
  driftCheckTicks?: number;
}

const DEFAULT_RESYNC_MS = 10_000;
const DEFAULT_DRIFT_CHECK_TICKS = 6;
/** New failures logged individually per pass; the rest are summarised in one line. */
const MAX_FAILURE_LOGS = 10;

/** One route operation on one device (ops are sent in one netlink batch per device). */
interface DeviceOp extends RouteOp {
  readonly ifindex: number;
}

export class RouteManager {
  private readonly netlink: RouteNetlink;
  private readonly forwarding: PeerForwarding | null;
  private readonly devices: Map<number, ManagedDevice>;
  private readonly map: LeaseMapper;
  private readonly log: Log;
  private readonly scope: PeerScope;
  private readonly resyncIntervalMs: number;
  private readonly driftCheckTicks: number;

  /** Plans the leases ask for. */
  private desired = new Map<number, PeerPlan>();
  /** Peers the forwarding table has accepted. */
  private readonly forwarded = new Map<number, Peer>();
  /** Routes the kernel has confirmed (by ACK or by listing). */
  private readonly installed = new Map<number, RouteSpec>();
  /** Leases of our backend refused for this node (no route), with the reason logged. */
  private refused = new Map<number, { subnet: Ip4Net; reason: string }>();
  /** Object → error code of its current failure, so each failure is logged once. */
  private readonly failures = new Map<string, string>();
  private dirtyFlag = false;
  private queue: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private closed = false;

  constructor(opts: RouteManagerOptions) {
    this.netlink = opts.netlink;
    this.forwarding = opts.forwarding ?? null;
    this.devices = new Map(opts.devices.map((d) => [d.ifindex, d]));
    this.map = opts.map;
    this.log = opts.log;
    this.scope = opts.network === undefined ? { ownSubnet: opts.ownSubnet } : { ownSubnet: opts.ownSubnet, network: opts.network };
    this.resyncIntervalMs = opts.resyncIntervalMs ?? DEFAULT_RESYNC_MS;
    this.driftCheckTicks = Math.max(1, opts.driftCheckTicks ?? DEFAULT_DRIFT_CHECK_TICKS);
  }

  /** Applies one batch of watcher events with a single netlink batch per device. Never rejects. */
  applyEvents(events: readonly LeaseEvent[]): Promise<void> {
    return this.enqueue('apply lease events', () => this.doApply(events));
  }

  /**
   * Makes routes and forwarding match exactly this lease list: relists the devices' routes, adds what
   * is missing, removes what is stale and ours (also peers that vanished while we were down). Never rejects.
   */
  reconcile(leases: readonly Lease[]): Promise<void> {
    return this.enqueue('reconcile routes', async () => {
      const { plans, refused, ignored } = leasesToPlans(leases, this.scope, this.map);
      this.logIgnored(ignored);
      this.setRefused(refused);
      await this.doReconcile(plans, 'leases');
      this.startTimer();
    });
  }

  /** Subnets whose kernel route is confirmed, sorted. */
  routes(): Ip4Net[] {
    return [...this.installed.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1].dst);
  }

  /** Confirmed routes with gateway and device, sorted by subnet. */
  routeSpecs(): RouteSpec[] {
    return [...this.installed.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
  }

  /** Peers currently wanted in the forwarding table (from leases), sorted by subnet. */
  peers(): Peer[] {
    const out: Peer[] = [];
    for (const [, plan] of [...this.desired.entries()].sort((a, b) => a[0] - b[0])) if (plan.forward) out.push(plan.forward);
    return out;
  }

  /** Peer leases currently routed (whatever the route), sorted by subnet. */
  plans(): PeerPlan[] {
    return [...this.desired.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
  }

  /** Peer leases of our backend that are refused on this node (no route), e.g. host-gw peers off our L2. */
  refusedCount(): number {
    return this.refused.size;
  }

  /** True while some route or forwarding change is failing and awaits the next resync. */
  get dirty(): boolean {
    return this.dirtyFlag;
  }

  /** Stops the resync timer; pending work still completes. */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private enqueue(what: string, task: () => Promise<void>): Promise<void> {
    const run = async (): Promise<void> => {
      try {
        await task();
      } catch (err) {
        // Only a bug gets here (netlink and forwarding errors are handled where they occur).
        this.dirtyFlag = true;
        this.log.error({ err }, `${what} failed unexpectedly`);
      }
    };
    const p = this.queue.then(run);
    this.queue = p;
    return p;
  }

  private startTimer(): void {
    if (this.timer !== undefined || this.closed || this.resyncIntervalMs <= 0) return;
    this.timer = setInterval(() => {
      this.ticks++;
      if (!this.dirtyFlag && this.ticks < this.driftCheckTicks) return;
      this.ticks = 0;
      void this.enqueue('resync routes', () => this.doReconcile(this.desired, 'resync'));
    }, this.resyncIntervalMs);
    this.timer.unref();
  }

  private setRefused(refused: Map<number, { subnet: Ip4Net; reason: string }>): void {
    for (const [key, r] of refused) this.noteRefused(key, r.subnet, r.reason);
    for (const key of [...this.refused.keys()]) if (!refused.has(key)) this.refused.delete(key);
  }

  private noteRefused(key: number, subnet: Ip4Net, reason: string): void {
    if (this.refused.get(key)?.reason === reason) return;
    this.refused.set(key, { subnet, reason });
    this.log.warn({ subnet: formatIp4Net(subnet), reason }, `peer ${formatIp4Net(subnet)} refused: ${reason}`);
  }

  private async doApply(events: readonly LeaseEvent[]): Promise<void> {
    const { changes, ignored } = eventsToChanges(events, this.scope, this.map);
    this.logIgnored(ignored);
    const ops: DeviceOp[] = [];
    const forget: number[] = [];
    for (const c of changes) {
      if (c.kind === 'set') {
        const key = netKey(c.plan.route.dst);
        this.refused.delete(key);
        this.desired.set(key, c.plan);
        // Forwarding first: once the route exists, packets for the subnet must find their peer.
        if (c.plan.forward) this.setForwarding(key, c.plan.forward);
        else if (this.forwarded.has(key)) forget.push(key);
        // Replace even if we believe the route is there: it is idempotent and cheap, and it repairs
        // drift at the moment the peer matters. A route moving device (DirectRouting) is one replace.
        ops.push({ kind: 'replace', ...this.routeOp(c.plan.route) });
      } else {
        const key = netKey(c.subnet);
        if (c.refused !== undefined) this.noteRefused(key, c.subnet, c.refused);
        else this.refused.delete(key);
        const wanted = this.desired.get(key);
        this.desired.delete(key);
        if (this.failures.size > 0) this.failures.delete(`route ${formatIp4Net(c.subnet)}`);
        const had = this.installed.get(key) ?? wanted?.route;
        if (had !== undefined) ops.push({ kind: 'delete', ...this.routeOp(had) });
        if (this.forwarded.has(key)) forget.push(key);
      }
    }
    await this.forwarding?.whenPublished?.(); // the peers before their routes
    const failed = await this.runOps(ops);
    // Route first, then forwarding entry: traffic for a removed peer stops entering the TUN before
    // the data plane forgets where to send it. Even if the route delete failed, the peer is gone.
    for (const key of forget) this.removeForwarding(key);
    this.dirtyFlag ||= failed > 0;
  }

  private routeOp(spec: RouteSpec): { ifindex: number; dst: Ip4Net; gateway: number } {
    return { ifindex: spec.ifindex, dst: spec.dst, gateway: spec.gateway };
  }

  private async doReconcile(plans: Map<number, PeerPlan>, reason: 'leases' | 'resync'): Promise<void> {
    this.desired = plans;
    let failed = 0;
    for (const [key, plan] of plans) if (plan.forward && !this.setForwarding(key, plan.forward)) failed++;
    await this.forwarding?.whenPublished?.();

    const actual: DeviceRoutes[] = [];
    let listed = true;
    for (const device of this.devices.values()) {
      try {
        actual.push({ device, routes: await this.netlink.listRoutes(device.ifindex) });
        this.clearFailure(`route listing ${device.ifindex}`);
      } catch (err) {
        this.noteFailure(`route listing ${device.ifindex}`, err, {}, 'cannot list routes; retrying on the next resync');
        listed = false;
        failed++;
      }
    }
    if (listed) {
      this.installed.clear();
      for (const { device, routes } of actual) {
        for (const r of routes) {
          const key = netKey(r.dst);
          const plan = plans.get(key);
          if (plan !== undefined && matchesSpec(r, device, plan.route)) this.installed.set(key, plan.route);
        }
      }
      const diff = diffRoutes(
        [...plans.values()].map((p) => p.route),
        actual,
      );
      const ops: DeviceOp[] = diff.replace.map((spec) => ({ kind: 'replace', ...this.routeOp(spec) }));
      for (const d of diff.delete) {
        ops.push({ kind: 'delete', ifindex: d.ifindex, dst: d.route.dst, gateway: d.route.gateway, metric: d.route.metric });
      }
      failed += await this.runOps(ops);
      const summary = { reason, peers: plans.size, replaced: diff.replace.length, deleted: diff.delete.length, failed };
      if (ops.length > 0 || reason === 'leases') this.log.info(summary, 'routes reconciled');
      else this.log.debug(summary, 'routes in sync');
    }

    for (const key of [...this.forwarded.keys()]) {
      if (!plans.get(key)?.forward && !this.removeForwarding(key)) failed++;
    }
    this.dirtyFlag = failed > 0;
  }

  /** Runs the ops, one netlink batch per device, and records the outcome. Returns the number of failed ops. */
  private async runOps(ops: readonly DeviceOp[]): Promise<number> {
    if (ops.length === 0) return 0;
    const byDevice = new Map<number, DeviceOp[]>();
    for (const o of ops) {
      let list = byDevice.get(o.ifindex);
      if (list === undefined) byDevice.set(o.ifindex, (list = []));
      list.push(o);
    }
    let failed = 0;
    let logged = 0;
    for (const [ifindex, list] of byDevice) {
      const device = this.devices.get(ifindex);
      if (device === undefined) throw new Error(`route for unmanaged device #${ifindex}`);
      let results;
      try {
        results = await this.netlink.applyRoutes(ifindex, list, protoOf(device));
        this.clearFailure(`route batch ${ifindex}`);
      } catch (err) {
        this.noteFailure(`route batch ${ifindex}`, err, { ops: list.length }, 'cannot program routes; retrying on the next resync');
        for (const o of list) if (o.kind === 'replace') this.installed.delete(netKey(o.dst));
        failed += list.length;
        continue;
      }
      for (let i = 0; i < list.length; i++) {
        const o = list[i]!;
        const key = netKey(o.dst);
        const err = results[i] ?? null;
        // A delete of a route with a metric removes a stray, never our metric-0 route.
        const ours = (o.metric ?? 0) === 0;
        if (err === null) {
          if (o.kind === 'replace') this.installed.set(key, { dst: o.dst, gateway: o.gateway ?? 0, ifindex });
          else if (ours) {
            const have = this.installed.get(key);
            // A delete on the old device after a move must not forget the route on the new one.
            if (have !== undefined && routesEqual(have, { dst: o.dst, gateway: o.gateway ?? 0, ifindex })) this.installed.delete(key);
          }
          if (ours && this.failures.size > 0) this.clearFailure(`route ${formatIp4Net(o.dst)}`);
          continue;
        }
        failed++;
        if (o.kind === 'replace') this.installed.delete(key);
        const objKey = ours ? `route ${formatIp4Net(o.dst)}` : `stray route ${formatIp4Net(o.dst)} metric ${o.metric ?? 0}`;
        if (this.failures.get(objKey) === err.code) continue;
        this.failures.set(objKey, err.code);
        if (logged++ < MAX_FAILURE_LOGS) {
          this.log.warn({ err, subnet: formatIp4Net(o.dst), op: o.kind }, `${err.message}; retrying on the next resync`);
        }
      }
    }
    if (logged > MAX_FAILURE_LOGS) {
      this.log.warn({ more: logged - MAX_FAILURE_LOGS, failed }, 'further route operations failed; retrying on the next resync');
    }
    return failed;
  }

  private setForwarding(key: number, peer: Peer): boolean {
    const forwarding = this.forwarding;
    if (forwarding === null) return true;
    const have = this.forwarded.get(key);
    if (have !== undefined && peersEqual(have, peer)) return true;
    try {
      forwarding.setPeer(peer);
      this.forwarded.set(key, peer);
      if (this.failures.size > 0) this.clearFailure(`forwarding ${formatIp4Net(peer.subnet)}`);
      return true;
    } catch (err) {
      this.forwarded.delete(key);
      this.dirtyFlag = true;
      this.noteFailure(
        `forwarding ${formatIp4Net(peer.subnet)}`,
        err,
        { subnet: formatIp4Net(peer.subnet), publicIp: formatIp4(peer.publicIp) },
        'cannot set forwarding entry; retrying on the next resync',
      );
      return false;
    }
  }

  private removeForwarding(key: number): boolean {
    const have = this.forwarded.get(key);
    if (have === undefined || this.forwarding === null) return true;
    try {
      this.forwarding.removePeer(have.subnet);
      this.forwarded.delete(key);
      if (this.failures.size > 0) this.clearFailure(`forwarding ${formatIp4Net(have.subnet)}`);
      return true;
    } catch (err) {
      this.dirtyFlag = true;
      this.noteFailure(
        `forwarding ${formatIp4Net(have.subnet)}`,
        err,
        { subnet: formatIp4Net(have.subnet) },
        'cannot remove forwarding entry; retrying on the next resync',
      );
      return false;
    }
  }

  private noteFailure(objKey: string, err: unknown, ctx: object, msg: string): void {
    const code = (err as { code?: unknown }).code;
    const id = typeof code === 'string' ? code : String(err);
    if (this.failures.get(objKey) === id) {
      this.log.debug({ err, ...ctx }, msg);
      return;
    }
    this.failures.set(objKey, id);
    this.log.warn({ err, ...ctx }, msg);
  }

  private clearFailure(objKey: string): void {
    if (this.failures.delete(objKey)) this.log.info({ object: objKey }, `${objKey}: recovered after earlier failure`);
  }

  private logIgnored(ignored: readonly IgnoredLease[]): void {
    for (const i of ignored) {
      if (i.reason === 'own-subnet') continue;
      this.log.debug(
        { subnet: formatIp4Net(i.lease.subnet), backend: i.lease.attrs.BackendType ?? '', reason: i.reason },
        'lease ignored by route manager',
      );
    }
  }
}

/** "10.5.3.0/24 via 192.0.2.3 dev #2" for log lines about a planned route. */
export function describeSpec(spec: RouteSpec, dev?: string): string {
  return describeRoute({ dst: spec.dst, gateway: spec.gateway }, dev ?? `#${spec.ifindex}`);
}

export type { KernelRoute };
