// Acquires and keeps this node's subnet lease (docs/compat.md §1 "Acquire order", "Renewal",
// "Reservations"): runs the decisions of lease-policy.ts against the registry and logs them.
// Deliberate differences from flanneld (see also lease-policy.ts):
// - a lost create race is retried (re-list, re-pick) instead of being fatal;
// - renewals are guarded on the key's mod revision (see registry.updateLease);
// - a foreign write to our lease is answered at once: our attrs are re-published (same PublicIP) or
//   the takeover is confirmed (other PublicIP), instead of waiting for the next renewal;
// - losing the key (deleted, expired, taken over) emits 'revoked' and the daemon exits non-zero,
//   where flanneld exits 0 — a supervisor must notice that this node lost its subnet.
import { EventEmitter } from 'node:events';
import type { Log } from '../ops/log';
import type { NetworkConfig } from './config';
import type { Ip4Net } from './ip4';
import type { Lease, LeaseAttrs } from './lease';
import { attrsEqual } from './lease-diff';
import { describeSubnets, isOurs, judgeRefusedRenewal, ownAddress, planAcquire, renewDelayMs, type SubnetPair } from './lease-policy';
import type { LeaseList, Registry, RegistryWatchEvent } from './registry';
import { ResilientWatch, type BackoffOptions } from './lease-watcher';

export { OutOfSubnetsError, describeSubnets } from './lease-policy';

export const LEASE_TTL_SECONDS = 86400;
export const RENEW_RETRY_SECONDS = 60;
export const MAX_ACQUIRE_ATTEMPTS = 10;

export class LeaseAcquireError extends Error {
  override name = 'LeaseAcquireError';
}

export type RevokeReason = 'deleted' | 'taken-over';

/** Least time between two re-publications of our lease after foreign writes. */
export const REPUBLISH_MIN_INTERVAL_MS = 2000;

export interface LeaseManagerOptions {
  registry: Registry;
  log: Log;
  config: NetworkConfig;
  /** What we publish; attrs.PublicIP (IPv6-only: attrs.PublicIPv6) identifies our own leases. */
  attrs: LeaseAttrs;
  /** Subnets from an earlier subnet.env (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET), tried before allocating. */
  previous: { subnet: Ip4Net | null; ipv6Subnet: string | null };
  renewMarginMinutes: number;
  ttlSec?: number;
  renewRetrySec?: number;
  maxAttempts?: number;
  random?: () => number;
  watchBackoff?: BackoffOptions;
}

/**
 * Events: 'revoked' (lease: Lease, reason: RevokeReason, by: LeaseAttrs | null) once, when our key is
 * gone or now belongs to another node; 'renewed' (lease: Lease) after each renewal.
 */
export class LeaseManager extends EventEmitter {
  private held: Lease | null = null;
  /** When the current etcd lease was granted (ms), to report its expiry without an RPC per scrape. */
  private grantedAtMs = 0;
  private readonly ttlSec: number;
  private readonly renewRetrySec: number;
  private renewTimer: NodeJS.Timeout | null = null;
  private listing: LeaseList | null = null;
  private watch: ResilientWatch | null = null;
  private stopped = false;
  private revoked = false;
  private lastRepublishMs = -Infinity;

  constructor(private readonly opts: LeaseManagerOptions) {
    super();
    this.ttlSec = opts.ttlSec ?? LEASE_TTL_SECONDS;
    this.renewRetrySec = opts.renewRetrySec ?? RENEW_RETRY_SECONDS;
  }

  private get lease(): Lease | null {
    return this.held;
  }

  private set lease(lease: Lease | null) {
    if (lease && lease.etcdLeaseId !== this.held?.etcdLeaseId) this.grantedAtMs = Date.now();
    this.held = lease;
  }

  /** Unix seconds when our etcd lease runs out; null without a lease or for a reservation (no TTL). */
  expiry(): number | null {
    if (!this.held || this.held.etcdLeaseId === '0') return null;
    return Math.floor(this.grantedAtMs / 1000) + this.ttlSec;
  }

  get acquired(): boolean {
    return this.lease !== null;
  }

  current(): Lease {
    if (!this.lease) throw new LeaseAcquireError('no lease acquired yet');
    return this.lease;
  }

  /** The address that identifies our leases: PublicIP, or PublicIPv6 on an IPv6-only network. */
  private get publicIp(): string {
    return ownAddress(this.opts.config, this.opts.attrs);
  }

  private isOurs(attrs: LeaseAttrs): boolean {
    return isOurs(this.opts.config, this.opts.attrs, attrs);
  }

  /**
   * The lease listing of the last acquire() (all leases at its revision), once: the lease watcher starts
   * from it instead of listing N leases a second time (the watch resumes after its revision).
   */
  takeListing(): LeaseList | null {
    const l = this.listing;
    this.listing = null;
    return l;
  }

  async acquire(): Promise<Lease> {
    const { registry, log, config, attrs } = this.opts;
    const maxAttempts = this.opts.maxAttempts ?? MAX_ACQUIRE_ATTEMPTS;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const list = await registry.listLeases();
      this.listing = list;
      const plan = planAcquire({
        config,
        attrs,
        leases: list.leases,
        // A key with an unreadable value still occupies its subnet.
        occupied: list.skipped.flatMap((s): SubnetPair[] => (s.subnets ? [s.subnets] : [])),
        previous: this.opts.previous,
        ...(this.opts.random ? { random: this.opts.random } : {}),
      });
      for (const l of plan.ignore) {
        log.warn({ key: l.key }, `reservation ${l.key} for ${this.publicIp} does not fit the network config; ignoring it`);
      }
      for (const l of plan.discard) {
        log.info({ key: l.key }, `deleting lease ${l.key} for ${this.publicIp}: it does not fit the network config`);
        await registry.deleteLease(l.key);
      }
      const step = plan.step;
      if (step.kind === 'reuse') {
        const chosen = step.lease;
        const res = await registry.updateLease(chosen, attrs, step.reservation ? null : this.ttlSec);
        if (res.updated) {
          log.info(
            { key: chosen.key, reservation: step.reservation },
            `found ${step.reservation ? 'reservation' : 'lease'} ${describeSubnets(chosen)} for ${this.publicIp}, reusing`,
          );
          if (!step.reservation) await this.revokeOld(chosen.etcdLeaseId, res.lease.etcdLeaseId);
          return (this.lease = res.lease);
        }
        log.info({ key: chosen.key, attempt }, `lease ${chosen.key} changed while reusing it; retrying`);
        continue;
      }
      const res = await registry.createLease(step.subnets.subnet, step.subnets.ipv6Subnet, attrs, this.ttlSec);
      if (res.created) {
        const how = step.source === 'previous' ? 'reacquired previous subnet' : 'allocated subnet';
        log.info({ key: res.lease.key }, `${how} ${describeSubnets(step.subnets)}`);
        return (this.lease = res.lease);
      }
      if (step.source === 'previous') {
        log.info({ attempt }, `previous subnet ${describeSubnets(step.subnets)} was taken concurrently; retrying`);
      } else {
        log.info({ attempt, subnet: describeSubnets(step.subnets) }, 'lost the race for a subnet to another node; retrying');
      }
    }
    throw new LeaseAcquireError(`failed to acquire a lease after ${maxAttempts} attempts: other nodes kept taking the chosen subnets`);
  }

  /** The previous etcd lease no longer holds any key after a re-put; revoke it instead of letting it linger 24 h. */
  private async revokeOld(oldId: string, newId: string): Promise<void> {
    if (oldId === '0' || oldId === newId) return;
    try {
      await this.opts.registry.revokeEtcdLease(oldId);
    } catch (err) {
      // Harmless (it expires by itself) but worth knowing about.
      this.opts.log.warn({ err: (err as Error).message }, `could not revoke superseded etcd lease ${oldId}`);
    }
  }

  /** Starts renewal (unless the lease is a reservation) and the watch on our own key. */
  start(): void {
    const lease = this.current();
    if (lease.etcdLeaseId !== '0') this.scheduleRenewal(this.renewDelayMs());
    this.watch = new ResilientWatch({
      registry: this.opts.registry,
      log: this.opts.log,
      what: `etcd watch on own lease ${lease.key}`,
      key: lease.key,
      ...(this.opts.watchBackoff ? { backoff: this.opts.watchBackoff } : {}),
      onEvents: (events) => this.handleOwnEvents(events),
      resync: async () => {
        const { lease: now, revision } = await this.opts.registry.getLease(this.current().key);
        if (!now) this.handleOwnEvents([{ type: 'delete', key: this.current().key, modRevision: revision }]);
        else this.handleOwnEvents([{ type: 'put', lease: now }]);
        return revision;
      },
    });
    this.watch.start((BigInt(lease.modRevision) + 1n).toString());
  }

  stop(): void {
    this.stopped = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    this.watch?.stop();
  }

  private renewDelayMs(): number {
    return renewDelayMs(this.ttlSec, this.opts.renewMarginMinutes);
  }

  private scheduleRenewal(delayMs: number): void {
    if (this.stopped || this.revoked) return;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), delayMs);
  }

  private async renew(): Promise<void> {
    this.renewTimer = null;
    if (this.stopped || this.revoked) return;
    const lease = this.current();
    if (lease.etcdLeaseId === '0') return; // became a reservation meanwhile: no TTL to renew
    const { log, registry } = this.opts;
    let res;
    try {
      res = await registry.updateLease(lease, this.opts.attrs, this.ttlSec);
    } catch (err) {
      log.warn(
        { err: (err as Error).message, key: lease.key },
        `renewing lease ${describeSubnets(lease)} failed; retrying in ${this.renewRetrySec} s`,
      );
      this.scheduleRenewal(this.renewRetrySec * 1000);
      return;
    }
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await
    if (this.stopped || this.revoked) return;
    if (!res.updated) {
      const verdict = judgeRefusedRenewal(this.opts.config, this.opts.attrs, res.current);
      if (verdict.kind === 'revoke') {
        this.revoke(verdict.reason, verdict.by);
        return;
      }
      // Someone (an operator, or a watch event we haven't processed yet) re-put our key: adopt it.
      this.lease = verdict.lease;
      if (!verdict.keepRenewing) {
        log.info({ key: verdict.lease.key }, `lease ${verdict.lease.key} was turned into a reservation; renewal stopped`);
        return;
      }
      this.scheduleRenewal(this.renewRetrySec * 1000);
      return;
    }
    this.lease = res.lease;
    log.info({ key: lease.key, etcdLease: res.lease.etcdLeaseId }, `renewed lease ${describeSubnets(lease)}`);
    await this.revokeOld(lease.etcdLeaseId, res.lease.etcdLeaseId);
    this.emit('renewed', res.lease);
    this.scheduleRenewal(this.renewDelayMs());
  }

  private handleOwnEvents(events: RegistryWatchEvent[]): void {
    for (const ev of events) {
      if (this.revoked || this.stopped) return;
      const lease = this.current();
      if (ev.type === 'delete') {
        this.revoke('deleted', null);
        return;
      }
      if (ev.type === 'skipped') {
        this.opts.log.warn({ key: ev.key, reason: ev.reason }, `own lease ${ev.key} was overwritten with an unreadable value`);
        continue;
      }
      const now = ev.lease;
      if (now.modRevision === lease.modRevision) continue;
      if (!this.isOurs(now.attrs)) {
        // Don't adopt: the guarded renewal, run now instead of in ~23 h, fails and reports the takeover.
        this.opts.log.warn(
          { key: now.key, theirs: now.attrs, ours: this.opts.attrs },
          `own lease ${now.key} was overwritten in etcd by ${this.opts.config.enableIPv4 ? now.attrs.PublicIP : now.attrs.PublicIPv6}; checking it now`,
        );
        this.republishSoon();
        continue;
      }
      if (!attrsEqual(now.attrs, this.opts.attrs)) {
        const reservation = now.etcdLeaseId === '0';
        this.opts.log.warn(
          { key: now.key, theirs: now.attrs, ours: this.opts.attrs },
          `own lease ${now.key} was changed in etcd by someone else; ` +
            (reservation ? 'it is now a reservation, so ours are not re-published' : 're-publishing ours now'),
        );
        this.lease = now;
        if (!reservation) this.republishSoon();
        continue;
      }
      this.lease = now;
    }
  }

  /**
   * Runs the guarded renewal now (peers must see our attrs again at once, not at the next renewal),
   * at most once per REPUBLISH_MIN_INTERVAL_MS so two writers cannot make us spin.
   */
  private republishSoon(): void {
    const wait = Math.max(0, this.lastRepublishMs + REPUBLISH_MIN_INTERVAL_MS - Date.now());
    this.lastRepublishMs = Date.now() + wait;
    this.scheduleRenewal(wait);
  }

  private revoke(reason: RevokeReason, by: LeaseAttrs | null): void {
    if (this.revoked) return;
    this.revoked = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    this.watch?.stop();
    this.emit('revoked', this.current(), reason, by);
  }
}
