// Keeps two things in step with the lease events:
//  (a) kernel routes `<peer subnet> dev <tun> proto boot scope link` in the main table, which steer
//      overlay traffic into our TUN device; and
//  (b) the data plane's forwarding table (the "FDB": subnet → VtepMAC + public IP). It lives in
//      userspace because a TUN device has no neighbour or FDB entries of its own.
// This is docs/compat.md §5.5 adapted to a TUN device. A TUN has no L2, so the route needs no gateway,
// onlink or ARP entry: the data plane picks the peer from the packet's destination address.
//
// Protocol: we keep RTPROT_BOOT ("proto boot") like flanneld, so scripts and monitoring that look for
// flannel's routes keep working. We do not need a protocol of our own to tell our routes apart: the
// device is exclusively ours, so every main-table route on it except the kernel's own is ours.
//
// Failures never propagate to the caller (the lease watcher). Each one is logged once per object and
// error code, marks the manager dirty, and is retried by the periodic resync (a full reconcile).
import { formatIp4, formatIp4Net, type Ip4, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseEvent } from '../subnet/lease';
import { RTPROT_BOOT, type RouteNetlink, type RouteOp } from '../netlink/rtnetlink';
import type { Log } from '../ops/log';
import {
  diffRoutes,
  eventsToChanges,
  isDesiredShape,
  leasesToPeers,
  netKey,
  peersEqual,
  type IgnoredLease,
  type Peer,
  type PeerScope,
} from './route-diff';

/** The data plane's peer table, as far as the route manager needs it. */
export interface PeerForwarding {
  setPeer(peer: { subnet: Ip4Net; publicIp: Ip4; vtepMac: Uint8Array }): void;
  removePeer(subnet: Ip4Net): void;
  /** Resolves when the changes made so far are visible to the packet path (may batch them until then). */
  whenPublished?(): Promise<void>;
}

export interface RouteManagerOptions {
  netlink: RouteNetlink;
  forwarding: PeerForwarding;
  /** Index of our TUN device. */
  ifindex: number;
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
  /** Route protocol; default RTPROT_BOOT (see above). */
  proto?: number;
}

const DEFAULT_RESYNC_MS = 10_000;
const DEFAULT_DRIFT_CHECK_TICKS = 6;
/** New failures logged individually per pass; the rest are summarised in one line. */
const MAX_FAILURE_LOGS = 10;

export class RouteManager {
  private readonly netlink: RouteNetlink;
  private readonly forwarding: PeerForwarding;
  private readonly ifindex: number;
  private readonly log: Log;
  private readonly scope: PeerScope;
  private readonly proto: number;
  private readonly resyncIntervalMs: number;
  private readonly driftCheckTicks: number;

  /** Peers the leases ask for. */
  private desired = new Map<number, Peer>();
  /** Peers the forwarding table has accepted. */
  private readonly forwarded = new Map<number, Peer>();
  /** Subnets whose route the kernel has confirmed (by ACK or by listing). */
  private readonly installed = new Map<number, Ip4Net>();
  /** Object → error code of its current failure, so each failure is logged once. */
  private readonly failures = new Map<string, string>();
  private dirtyFlag = false;
  private queue: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private closed = false;

  constructor(opts: RouteManagerOptions) {
    this.netlink = opts.netlink;
    this.forwarding = opts.forwarding;
    this.ifindex = opts.ifindex;
    this.log = opts.log;
    this.scope = opts.network === undefined ? { ownSubnet: opts.ownSubnet } : { ownSubnet: opts.ownSubnet, network: opts.network };
    this.proto = opts.proto ?? RTPROT_BOOT;
    this.resyncIntervalMs = opts.resyncIntervalMs ?? DEFAULT_RESYNC_MS;
    this.driftCheckTicks = Math.max(1, opts.driftCheckTicks ?? DEFAULT_DRIFT_CHECK_TICKS);
  }

  /** Applies one batch of watcher events with a single netlink batch. Never rejects. */
  applyEvents(events: readonly LeaseEvent[]): Promise<void> {
    return this.enqueue('apply lease events', () => this.doApply(events));
  }

  /**
   * Makes routes and forwarding match exactly this lease list: relists the device's routes, adds what
   * is missing, removes what is stale (also peers that vanished while we were down). Never rejects.
   */
  reconcile(leases: readonly Lease[]): Promise<void> {
    return this.enqueue('reconcile routes', async () => {
      const { peers, ignored } = leasesToPeers(leases, this.scope);
      this.logIgnored(ignored);
      await this.doReconcile(peers, 'leases');
      this.startTimer();
    });
  }

  /** Subnets whose kernel route is confirmed, sorted. */
  routes(): Ip4Net[] {
    return [...this.installed.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
  }

  /** Peers currently wanted (from leases), sorted by subnet. */
  peers(): Peer[] {
    return [...this.desired.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
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

  private async doApply(events: readonly LeaseEvent[]): Promise<void> {
    const { changes, ignored } = eventsToChanges(events, this.scope);
    this.logIgnored(ignored);
    const ops: RouteOp[] = [];
    const forget: number[] = [];
    for (const c of changes) {
      if (c.kind === 'set') {
        const key = netKey(c.peer.subnet);
        this.desired.set(key, c.peer);
        // Forwarding first: once the route exists, packets for the subnet must find their peer.
        this.setForwarding(key, c.peer);
        // Replace even if we believe the route is there: it is idempotent and cheap, and it repairs
        // drift at the moment the peer matters.
        ops.push({ kind: 'replace', dst: c.peer.subnet });
      } else {
        const key = netKey(c.subnet);
        const wanted = this.desired.delete(key);
        if (this.failures.size > 0) this.failures.delete(`route ${formatIp4Net(c.subnet)}`);
        if (wanted || this.installed.has(key)) ops.push({ kind: 'delete', dst: c.subnet });
        if (this.forwarded.has(key)) forget.push(key);
      }
    }
    await this.forwarding.whenPublished?.(); // the peers before their routes
    const failed = await this.runOps(ops);
    // Route first, then forwarding entry: traffic for a removed peer stops entering the TUN before
    // the data plane forgets where to send it. Even if the route delete failed, the peer is gone.
    for (const key of forget) this.removeForwarding(key);
    this.dirtyFlag ||= failed > 0;
  }

  private async doReconcile(peers: Map<number, Peer>, reason: 'leases' | 'resync'): Promise<void> {
    this.desired = peers;
    let failed = 0;
    for (const [key, peer] of peers) if (!this.setForwarding(key, peer)) failed++;
    await this.forwarding.whenPublished?.();

    let actual;
    try {
      actual = await this.netlink.listRoutes(this.ifindex);
      this.clearFailure('route listing');
    } catch (err) {
      this.noteFailure('route listing', err, {}, 'cannot list routes; retrying on the next resync');
      actual = null;
      failed++;
    }
    if (actual !== null) {
      this.installed.clear();
      for (const r of actual) {
        const key = netKey(r.dst);
        if (peers.has(key) && isDesiredShape(r, this.proto)) this.installed.set(key, r.dst);
      }
      const diff = diffRoutes(
        [...peers.values()].map((p) => p.subnet),
        actual,
        this.proto,
      );
      const ops: RouteOp[] = diff.replace.map((dst) => ({ kind: 'replace', dst }));
      for (const r of diff.delete) {
        ops.push({ kind: 'delete', dst: r.dst, gateway: r.gateway, metric: r.metric });
      }
      failed += await this.runOps(ops);
      const summary = { reason, peers: peers.size, replaced: diff.replace.length, deleted: diff.delete.length, failed };
      if (ops.length > 0 || reason === 'leases') this.log.info(summary, 'routes reconciled');
      else this.log.debug(summary, 'routes in sync');
    }

    for (const key of [...this.forwarded.keys()]) {
      if (!peers.has(key) && !this.removeForwarding(key)) failed++;
    }
    this.dirtyFlag = failed > 0;
  }

  /** Runs one netlink batch and records its outcome. Returns the number of failed ops. */
  private async runOps(ops: readonly RouteOp[]): Promise<number> {
    if (ops.length === 0) return 0;
    let results;
    try {
      results = await this.netlink.applyRoutes(this.ifindex, ops, this.proto);
      this.clearFailure('route batch');
    } catch (err) {
      this.noteFailure('route batch', err, { ops: ops.length }, 'cannot program routes; retrying on the next resync');
      for (const o of ops) if (o.kind === 'replace') this.installed.delete(netKey(o.dst));
      return ops.length;
    }
    let failed = 0;
    let logged = 0;
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i]!;
      const key = netKey(o.dst);
      const err = results[i] ?? null;
      // A delete of a route with a metric removes a stray, never our metric-0 route.
      const ours = (o.metric ?? 0) === 0;
      if (err === null) {
        if (o.kind === 'replace') this.installed.set(key, o.dst);
        else if (ours) this.installed.delete(key);
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
    if (logged > MAX_FAILURE_LOGS) {
      this.log.warn({ more: logged - MAX_FAILURE_LOGS, failed }, 'further route operations failed; retrying on the next resync');
    }
    return failed;
  }

  private setForwarding(key: number, peer: Peer): boolean {
    const have = this.forwarded.get(key);
    if (have !== undefined && peersEqual(have, peer)) return true;
    try {
      this.forwarding.setPeer(peer);
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
    if (have === undefined) return true;
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
