// Acquires and keeps this node's subnet lease (docs/compat.md §1 "Acquire order", "Renewal",
// "Reservations"). Deliberate differences from flanneld:
// - a lost create race is retried (re-list, re-pick) instead of being fatal;
// - a reservation (key without etcd lease) for our PublicIP stays a reservation: no TTL, no renewal
//   (flanneld attaches a 24 h lease to it by accident, issue #1329);
// - renewals are guarded on the key's mod revision (see registry.updateLease);
// - a foreign write to our lease is answered at once: our attrs are re-published (same PublicIP) or
//   the takeover is confirmed (other PublicIP), instead of waiting for the next renewal;
// - losing the key (deleted, expired, taken over) emits 'revoked' and the daemon exits non-zero,
//   where flanneld exits 0 — a supervisor must notice that this node lost its subnet;
// - IPv6-only (EnableIPv4 false): flannel HEAD publishes PublicIP "0.0.0.0" and key
//   "0.0.0.0-0&<v6>-<len>" for every node and finds "its" lease by that PublicIP, so a second node
//   takes over the first one's lease. We write the same key and value layout but recognise our
//   lease by PublicIPv6 and allocate only the IPv6 part.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { NetworkConfig } from './config';
import { formatIp4, formatIp4Net, netsOverlap, type Ip4Net } from './ip4';
import type { Lease, LeaseAttrs } from './lease';
import { pickSubnet, subnetFitsConfig, type SubnetRange } from './allocator';
import { pickSubnet6, subnet6FitsConfig, subnet6Range, type Subnet6Range } from './allocator6';
import { cidr6Overlap, formatCidr6, parseCidr6 } from './cidr6';
import type { Ip6Net } from './ip6';
import { parseSubnetKey } from './lease-codec';
import type { LeaseList, Registry, RegistryWatchEvent } from './registry';
import { ResilientWatch, attrsEqual, type BackoffOptions } from './lease-watcher';

export const LEASE_TTL_SECONDS = 86400;
export const RENEW_RETRY_SECONDS = 60;
export const MAX_ACQUIRE_ATTEMPTS = 10;

export class OutOfSubnetsError extends Error {
  override name = 'OutOfSubnetsError';
}

export class LeaseAcquireError extends Error {
  override name = 'LeaseAcquireError';
}

/**
 * TEST-ONLY knobs, read from the environment: TSFLANNELD_TEST_LEASE_TTL_SECONDS and
 * TSFLANNELD_TEST_RENEW_RETRY_SECONDS shorten the 24 h lease TTL and the 60 s renewal retry so
 * integration tests can observe renewals. Not flags on purpose: production runs never set them.
 */
export function leaseTimingFromEnv(env: NodeJS.ProcessEnv): { ttlSec: number; renewRetrySec: number } {
  const read = (name: string, def: number): number => {
    const text = env[name];
    if (text === undefined || text === '') return def;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new LeaseAcquireError(`${name}=${text}: expected a positive integer (seconds)`);
    return n;
  };
  return {
    ttlSec: read('TSFLANNELD_TEST_LEASE_TTL_SECONDS', LEASE_TTL_SECONDS),
    renewRetrySec: read('TSFLANNELD_TEST_RENEW_RETRY_SECONDS', RENEW_RETRY_SECONDS),
  };
}

export type RevokeReason = 'deleted' | 'taken-over';

/** Least time between two re-publications of our lease after foreign writes. */
export const REPUBLISH_MIN_INTERVAL_MS = 2000;

export interface LeaseManagerOptions {
  registry: Registry;
  log: Logger;
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

  private get range(): SubnetRange {
    const c = this.opts.config;
    return { subnetMin: c.subnetMin, subnetMax: c.subnetMax, subnetLen: c.subnetLen };
  }

  private get range6(): Subnet6Range | null {
    return this.opts.config.enableIPv6 ? subnet6Range(this.opts.config) : null;
  }

  /** The address that identifies our leases: PublicIP, or PublicIPv6 on an IPv6-only network. */
  private get publicIp(): string {
    return this.opts.config.enableIPv4 ? this.opts.attrs.PublicIP : (this.opts.attrs.PublicIPv6 ?? '');
  }

  private isOurs(attrs: LeaseAttrs): boolean {
    return this.opts.config.enableIPv4 ? attrs.PublicIP === this.publicIp : attrs.PublicIPv6 === this.publicIp;
  }

  /**
   * flannel's isSubnetConfigCompat && isIPv6SubnetConfigCompat: each enabled family's part lies in
   * its configured range with its SubnetLen; a disabled family's part is absent (IPv4: 0.0.0.0/0).
   */
  private fits(lease: { subnet: Ip4Net; ipv6Subnet: string | null }): boolean {
    const c = this.opts.config;
    const v4 = c.enableIPv4 ? subnetFitsConfig(lease.subnet, this.range) : isNoIp4(lease.subnet);
    if (!v4) return false;
    if (!c.enableIPv6) return lease.ipv6Subnet === null;
    return lease.ipv6Subnet !== null && subnet6FitsConfig(parseCidr6(lease.ipv6Subnet), this.range6!);
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
    const { registry, log } = this.opts;
    const maxAttempts = this.opts.maxAttempts ?? MAX_ACQUIRE_ATTEMPTS;
    // An IPv4 subnet of ours worth keeping when only the IPv6 part must change (see step 1 and 2).
    let keep4: Ip4Net | null = null;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const list = await registry.listLeases();
      this.listing = list;
      const keys: Array<{ key: string; subnet: Ip4Net; ipv6Subnet: string | null }> = [...list.leases];
      // A key with an unreadable value still occupies its subnet.
      for (const s of list.skipped) {
        const rel = s.key.slice(`${registry.prefix}/subnets/`.length);
        const parsed = s.key.startsWith(`${registry.prefix}/subnets/`) ? parseSubnetKey(rel) : null;
        if (parsed) keys.push({ key: rel, ...parsed });
      }

      // 1. A lease that already carries our PublicIP.
      const mine = list.leases.filter((l) => this.isOurs(l.attrs));
      const usable = mine.filter((l) => this.fits(l));
      const chosen = usable.find((l) => l.etcdLeaseId === '0') ?? usable[0];
      const dropped = new Set<string>();
      for (const l of mine) {
        if (this.fits(l)) continue;
        if (l.etcdLeaseId === '0') {
          log.warn({ key: l.key }, `reservation ${l.key} for ${this.publicIp} does not fit the network config; ignoring it`);
        } else {
          log.info({ key: l.key }, `deleting lease ${l.key} for ${this.publicIp}: it does not fit the network config`);
          await registry.deleteLease(l.key);
          dropped.add(l.key);
          // EnableIPv6 switched on or off: the IPv4 part may still fit, and containers keep their
          // addresses if it is kept (flannel allocates both parts anew).
          if (this.opts.config.enableIPv4 && subnetFitsConfig(l.subnet, this.range)) keep4 ??= l.subnet;
        }
      }
      const { taken, taken6 } = takenSubnets(keys.filter((k) => !dropped.has(k.key)));
      if (chosen) {
        const reservation = chosen.etcdLeaseId === '0';
        const res = await registry.updateLease(chosen, this.opts.attrs, reservation ? null : this.ttlSec);
        if (res.updated) {
          log.info(
            { key: chosen.key, reservation },
            `found ${reservation ? 'reservation' : 'lease'} ${describeSubnets(chosen)} for ${this.publicIp}, reusing`,
          );
          if (!reservation) await this.revokeOld(chosen.etcdLeaseId, res.lease.etcdLeaseId);
          return (this.lease = res.lease);
        }
        log.info({ key: chosen.key, attempt }, `lease ${chosen.key} changed while reusing it; retrying`);
        continue;
      }

      // 2. The subnets from the previous subnet.env, if still free and fitting (both families).
      const prev = this.previousSubnets();
      if (prev && this.fits(prev)) {
        const prev6 = prev.ipv6Subnet === null ? null : parseCidr6(prev.ipv6Subnet);
        const free4 = !this.opts.config.enableIPv4 || !taken.some((t) => netsOverlap(t, prev.subnet));
        const free6 = prev6 === null || !taken6.some((t) => cidr6Overlap(t, prev6));
        if (free4 && free6) {
          const res = await registry.createLease(prev.subnet, prev.ipv6Subnet, this.opts.attrs, this.ttlSec);
          if (res.created) {
            log.info({ key: res.lease.key }, `reacquired previous subnet ${describeSubnets(prev)}`);
            return (this.lease = res.lease);
          }
          log.info({ attempt }, `previous subnet ${describeSubnets(prev)} was taken concurrently; retrying`);
          continue;
        }
      } else if (prev === null && this.opts.config.enableIPv4) {
        // The previous run had no IPv6 subnet (EnableIPv6 was just switched on): keep its IPv4 subnet.
        const prev4 = this.opts.previous.subnet;
        if (prev4 !== null && subnetFitsConfig(prev4, this.range)) keep4 ??= prev4;
      }

      // 3. Allocate each enabled family independently, as flannel does.
      const kept = keep4 !== null && !taken.some((t) => netsOverlap(t, keep4!)) ? keep4 : null;
      const picked = this.allocate(taken, taken6, list.leases.length, kept);
      const res = await registry.createLease(picked.subnet, picked.ipv6Subnet, this.opts.attrs, this.ttlSec);
      if (res.created) {
        log.info(
          { key: res.lease.key },
          kept !== null
            ? `kept IPv4 subnet ${formatIp4Net(kept)}, allocated ${describeSubnets(picked)}`
            : `allocated subnet ${describeSubnets(picked)}`,
        );
        return (this.lease = res.lease);
      }
      log.info({ attempt, subnet: describeSubnets(picked) }, 'lost the race for a subnet to another node; retrying');
    }
    throw new LeaseAcquireError(`failed to acquire a lease after ${maxAttempts} attempts: other nodes kept taking the chosen subnets`);
  }

  /** FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET of the last run as one lease shape, or null if a needed part is missing. */
  private previousSubnets(): { subnet: Ip4Net; ipv6Subnet: string | null } | null {
    const c = this.opts.config;
    const { subnet, ipv6Subnet } = this.opts.previous;
    if (c.enableIPv4 && subnet === null) return null;
    if (c.enableIPv6 && ipv6Subnet === null) return null;
    return { subnet: c.enableIPv4 ? subnet! : NO_IP4, ipv6Subnet: c.enableIPv6 ? ipv6Subnet : null };
  }

  private allocate(
    taken: Ip4Net[],
    taken6: Ip6Net[],
    leaseCount: number,
    kept: Ip4Net | null,
  ): { subnet: Ip4Net; ipv6Subnet: string | null } {
    const c = this.opts.config;
    let subnet = kept ?? NO_IP4;
    if (c.enableIPv4 && kept === null) {
      const s = pickSubnet(this.range, taken, this.opts.random);
      if (!s) {
        throw new OutOfSubnetsError(
          `out of subnets in ${c.network ? formatIp4Net(c.network) : '(no IPv4 network)'} ` +
            `[${formatIp4(c.subnetMin)}..${formatIp4(c.subnetMax)}] /${c.subnetLen} (${leaseCount} leases)`,
        );
      }
      subnet = s;
    }
    let ipv6Subnet: string | null = null;
    if (c.enableIPv6) {
      const s6 = pickSubnet6(this.range6!, taken6, this.opts.random);
      if (!s6) {
        throw new OutOfSubnetsError(
          `out of subnets in ${c.ipv6Network} [${c.ipv6SubnetMin}..${c.ipv6SubnetMax}] /${c.ipv6SubnetLen} (${leaseCount} leases)`,
        );
      }
      ipv6Subnet = formatCidr6(s6);
    }
    return { subnet, ipv6Subnet };
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

  /** expiry − margin; never below 1 s so a short test TTL with a long margin can't spin. */
  private renewDelayMs(): number {
    return Math.max(this.ttlSec * 1000 - this.opts.renewMarginMinutes * 60_000, 1000);
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
      const cur = res.current;
      if (!cur) {
        this.revoke('deleted', null);
        return;
      }
      if (!this.isOurs(cur.attrs)) {
        this.revoke('taken-over', cur.attrs);
        return;
      }
      // Someone (an operator, or a watch event we haven't processed yet) re-put our key: adopt it.
      this.lease = cur;
      if (cur.etcdLeaseId === '0') {
        log.info({ key: cur.key }, `lease ${cur.key} was turned into a reservation; renewal stopped`);
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

/** The IPv4 part of an IPv6-only lease key ("0.0.0.0-0&fc00:0:0:48::-64"), as flannel writes it. */
export const NO_IP4: Ip4Net = { ip: 0, prefixLen: 0 };

function isNoIp4(subnet: Ip4Net): boolean {
  return subnet.ip === 0 && subnet.prefixLen === 0;
}

/** "10.5.72.0/24", "10.5.72.0/24 + fc00:0:0:48::/64" or "fc00:0:0:48::/64" (IPv6-only) for logs. */
export function describeSubnets(l: { subnet: Ip4Net; ipv6Subnet: string | null }): string {
  if (l.ipv6Subnet === null) return formatIp4Net(l.subnet);
  return isNoIp4(l.subnet) ? l.ipv6Subnet : `${formatIp4Net(l.subnet)} + ${l.ipv6Subnet}`;
}

/**
 * The subnets existing keys occupy, per family. The 0.0.0.0/0 IPv4 part of IPv6-only keys occupies
 * nothing (flannel HEAD counts it as overlapping every candidate and then finds no subnet).
 */
function takenSubnets(keys: ReadonlyArray<{ subnet: Ip4Net; ipv6Subnet: string | null }>): { taken: Ip4Net[]; taken6: Ip6Net[] } {
  const taken: Ip4Net[] = [];
  const taken6: Ip6Net[] = [];
  for (const k of keys) {
    if (k.ipv6Subnet !== null) taken6.push(parseCidr6(k.ipv6Subnet));
    if (!(k.ipv6Subnet !== null && isNoIp4(k.subnet))) taken.push(k.subnet);
  }
  return { taken, taken6 };
}
