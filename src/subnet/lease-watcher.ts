// Keeps an up-to-date view of the other nodes' leases and reports changes as LeaseEvent batches.
// The diff itself is lease-diff.ts (flannel's LeaseWatcher.Reset/Update shape, with our differences);
// this module does the I/O: list, watch, resume, re-list after compaction (docs/compat.md §1 "Watch").
// Compaction re-lists and emits the diff against our view, never a blind "everything added".
import type { Log } from '../ops/log';
import { netsEqual, type Ip4Net } from './ip4';
import type { Lease, LeaseEvent } from './lease';
import { leaseKeyPath, subnetsPrefix } from './lease-codec';
import { resetLeases, updateLeases, type LeaseChange } from './lease-diff';
import type { EtcdError, LeaseList, Registry, RegistryWatchEvent, WatchHandle } from './registry';

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

/** flanneld's watch reconnect backoff: 100 ms doubling up to 5 s. */
export const DEFAULT_WATCH_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 5000 };

function nextRevision(rev: string): string {
  return (BigInt(rev) + 1n).toString();
}

export interface ResilientWatchOptions {
  registry: Registry;
  log: Log;
  /** Human-readable subject for logs, e.g. "etcd watch on /coreos.com/network/subnets". */
  what: string;
  /** Watch one lease key instead of the whole subnets prefix. */
  key?: string;
  backoff?: BackoffOptions;
  onEvents(events: RegistryWatchEvent[]): void;
  /** The resume revision was compacted away: re-read the state and return the revision it was read at. */
  resync(): Promise<string>;
}

/**
 * A watch that survives stream failures and compaction: it reconnects with backoff and resumes at the
 * last seen revision + 1, so nothing written while it was disconnected is missed. Logs once per state
 * change (lost / re-established), not per retry.
 */
export class ResilientWatch {
  private since = '0';
  private handle: WatchHandle | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delayMs: number;
  private connected = true;
  private needResync = false;
  private stopped = false;
  private readonly backoff: BackoffOptions;

  constructor(private readonly opts: ResilientWatchOptions) {
    this.backoff = opts.backoff ?? DEFAULT_WATCH_BACKOFF;
    this.delayMs = this.backoff.initialMs;
  }

  /** False between a lost watch and its re-establishment. */
  get isConnected(): boolean {
    return this.connected;
  }

  /** Starts watching at `fromRevision` (inclusive). */
  start(fromRevision: string): void {
    this.since = fromRevision;
    void this.step();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.handle?.cancel();
    this.handle = null;
  }

  private async step(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    if (this.needResync) {
      try {
        const rev = await this.opts.resync();
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await
        if (this.stopped) return;
        this.needResync = false;
        this.since = nextRevision(rev);
      } catch (err) {
        this.failed(err as Error);
        return;
      }
    }
    this.handle = this.opts.registry.watchLeases(
      this.since,
      {
        onCreated: () => {
          this.delayMs = this.backoff.initialMs;
          if (!this.connected) {
            this.connected = true;
            this.opts.log.info({ revision: this.since }, `${this.opts.what} re-established`);
          }
        },
        onEvents: (events, revision) => {
          this.since = nextRevision(revision);
          if (events.length > 0) this.opts.onEvents(events);
        },
        onCompacted: (compactRevision) => {
          this.handle = null;
          this.opts.log.warn(
            { resumeRevision: this.since, compactRevision },
            `${this.opts.what}: revision ${this.since} was compacted; re-reading state`,
          );
          this.needResync = true;
          void this.step();
        },
        onError: (err: EtcdError) => {
          this.handle = null;
          this.failed(err);
        },
      },
      this.opts.key === undefined ? {} : { key: this.opts.key },
    );
  }

  private failed(err: Error): void {
    if (this.stopped) return;
    if (this.connected) {
      this.connected = false;
      this.opts.log.warn({ err: err.message }, `${this.opts.what} lost; reconnecting (resume at revision ${this.since})`);
    } else {
      this.opts.log.debug({ err: err.message, delayMs: this.delayMs }, `${this.opts.what}: reconnect failed`);
    }
    this.timer = setTimeout(() => void this.step(), this.delayMs);
    this.delayMs = Math.min(this.delayMs * 2, this.backoff.maxMs);
  }
}

export interface LeaseWatcherOptions {
  registry: Registry;
  log: Log;
  /** Our own subnet: never reported (the lease manager watches it). */
  ownSubnet: Ip4Net | null;
  /**
   * The IPv6 part of our own lease key, if it has one: then a lease is ours only if both parts
   * match (every IPv6-only key has the IPv4 part 0.0.0.0/0).
   */
  ownIpv6Subnet?: string | null;
  onEvents(events: LeaseEvent[]): void;
  backoff?: BackoffOptions;
}

export class LeaseWatcher {
  /** Resolves once the initial snapshot (possibly an empty batch) has been delivered through onEvents. */
  readonly ready: Promise<void>;
  private resolveReady!: () => void;
  private readonly cache = new Map<string, Lease>();
  /** key → reason already warned about, so a malformed entry is reported once, not on every re-list. */
  private readonly warned = new Map<string, string>();
  private readonly watch: ResilientWatch;
  private readonly what: string;
  private stopped = false;
  private listTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: LeaseWatcherOptions) {
    this.ready = new Promise((resolve) => (this.resolveReady = resolve));
    this.what = `etcd watch on ${subnetsPrefix(opts.registry.prefix)}`;
    this.watch = new ResilientWatch({
      registry: opts.registry,
      log: opts.log,
      what: this.what,
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
      onEvents: (events) => this.handleWatchEvents(events),
      resync: () => this.resync(),
    });
  }

  /** Whether the watch on etcd is currently established (for /metrics). */
  get connected(): boolean {
    return this.watch.isConnected;
  }

  /**
   * Lists, delivers the snapshot, then watches; the initial list is retried with backoff until it works.
   * `listing`, a lease list read moments ago (the lease manager's), replaces the first list: the watch
   * resumes after its revision, so nothing written since is missed, and N leases are not read twice.
   */
  start(listing?: LeaseList): void {
    let given = listing;
    const backoff = this.opts.backoff ?? DEFAULT_WATCH_BACKOFF;
    let delay = backoff.initialMs;
    let reported = false;
    const attempt = async (): Promise<void> => {
      this.listTimer = null;
      if (this.stopped) return;
      let rev: string;
      try {
        const list = given;
        given = undefined;
        rev = await this.resync(true, list);
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await
        if (this.stopped) return;
        if (!reported) {
          reported = true;
          this.opts.log.warn({ err: (err as Error).message }, 'listing leases failed; retrying');
        }
        this.listTimer = setTimeout(() => void attempt(), delay);
        delay = Math.min(delay * 2, backoff.maxMs);
        return;
      }
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await
      if (this.stopped) return;
      if (reported) this.opts.log.info('listing leases succeeded');
      this.resolveReady();
      this.watch.start(nextRevision(rev));
    };
    void attempt();
  }

  stop(): void {
    this.stopped = true;
    if (this.listTimer) clearTimeout(this.listTimer);
    this.watch.stop();
  }

  /** Snapshot of the known peer leases (own lease excluded). */
  leases(): Lease[] {
    return [...this.cache.values()];
  }

  private isOwn(lease: Lease): boolean {
    if (this.opts.ownSubnet === null || !netsEqual(lease.subnet, this.opts.ownSubnet)) return false;
    const own6 = this.opts.ownIpv6Subnet ?? null;
    return own6 === null || lease.ipv6Subnet === own6;
  }

  private fullKey(key: string): string {
    return leaseKeyPath(this.opts.registry.prefix, key);
  }

  /** `key` is the full etcd key: malformed entries may not have a usable subnet key. */
  private warnSkipped(key: string, reason: string): void {
    if (this.warned.get(key) === reason) return;
    this.warned.set(key, reason);
    this.opts.log.warn({ key, reason }, `skipping malformed lease ${key}: ${reason}`);
  }

  /**
   * Re-lists and emits the difference to the cache; returns the revision listed at. The initial
   * snapshot is emitted even when empty: it tells the consumer the initial sync is complete.
   */
  private async resync(initial = false, listing?: LeaseList): Promise<string> {
    const list = listing ?? (await this.opts.registry.listLeases());
    if (this.stopped) return list.revision;
    for (const s of list.skipped) this.warnSkipped(s.key, s.reason);
    const batch = resetLeases(this.cache, list.leases, (l) => this.isOwn(l));
    if (batch.length > 0 || initial) this.opts.onEvents(batch);
    return list.revision;
  }

  private handleWatchEvents(events: RegistryWatchEvent[]): void {
    if (this.stopped) return;
    const changes: LeaseChange[] = [];
    for (const ev of events) {
      if (ev.type === 'skipped') {
        this.warnSkipped(ev.key, ev.reason);
        continue;
      }
      // A key that is deleted or readable again may be warned about again later.
      this.warned.delete(this.fullKey(ev.type === 'delete' ? ev.key : ev.lease.key));
      changes.push(ev.type === 'delete' ? { type: 'delete', key: ev.key } : { type: 'put', lease: ev.lease });
    }
    const batch: LeaseEvent[] = updateLeases(this.cache, changes, (l) => this.isOwn(l));
    if (batch.length > 0) this.opts.onEvents(batch);
  }
}
