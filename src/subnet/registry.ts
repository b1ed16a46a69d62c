// The flannel registry: flannel's etcd layout (docs/compat.md §1) on top of the etcd client.
// `<prefix>/config` holds the network config; `<prefix>/subnets/<subnet key>` holds one lease each, the
// Go-JSON lease attrs, attached to an etcd lease with a 24 h TTL or to none (a reservation). Keys and
// values go through lease-codec.ts; member failover, deadlines and retries are etcd-client.ts's.
//
// Everything above this module sees Lease values and typed errors; etcd types stay below it.
import { EtcdClient, EtcdError, type EtcdClientOptions, type KeyValue, type WatchHandle } from './etcd-client';
import { formatIp4Net, type Ip4Net } from './ip4';
import type { Lease, LeaseAttrs } from './lease';
import { decodeLeaseAttrs, encodeLeaseAttrs, leaseKeyOf, leaseKeyPath, parseSubnetKey, subnetKey, subnetsPrefix } from './lease-codec';
import { parseNetworkConfig, type NetworkConfig } from './config';

export { EtcdError, type WatchHandle } from './etcd-client';

export interface RegistryOptions extends EtcdClientOptions {
  /** e.g. "/coreos.com/network" (no trailing slash). */
  prefix: string;
}

export class ConfigNotFoundError extends Error {
  override name = 'ConfigNotFoundError';
  constructor(readonly key: string) {
    super(`flannel config not found in etcd store (${key})`);
  }
}

export interface SkippedEntry {
  /** The full etcd key. */
  key: string;
  reason: string;
  /** The subnets its key names when only the value is unreadable: they are occupied all the same. */
  subnets: { subnet: Ip4Net; ipv6Subnet: string | null } | null;
}

export interface LeaseList {
  leases: Lease[];
  /** Store revision the list was read at; watch from revision+1 to miss nothing. */
  revision: string;
  skipped: SkippedEntry[];
}

export type CreateResult = { created: true; lease: Lease } | { created: false };
export type UpdateResult = { updated: true; lease: Lease } | { updated: false; current: Lease | null };

/** One change below `<prefix>/subnets/` as seen by a watch. */
export type RegistryWatchEvent =
  | { type: 'put'; lease: Lease }
  | { type: 'delete'; key: string; modRevision: string }
  /** A put whose key or value could not be decoded (or a delete of a non-subnet key). */
  | { type: 'skipped'; key: string; reason: string; modRevision: string };

export interface WatchHandlers {
  /** The server accepted the watch. */
  onCreated?(): void;
  /** Events of one response, in order; `revision` is the response header revision (resume at +1). May be empty (progress notification). */
  onEvents(events: RegistryWatchEvent[], revision: string): void;
  /** The start revision was compacted; nothing more will arrive on this handle. Re-list and watch anew. */
  onCompacted(compactRevision: string): void;
  /** The stream failed or ended; nothing more will arrive on this handle. */
  onError(err: EtcdError): void;
}

export interface Registry {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  getNetworkConfig(): Promise<NetworkConfig>;
  listLeases(): Promise<LeaseList>;
  getLease(key: string): Promise<{ lease: Lease | null; revision: string }>;
  createLease(subnet: Ip4Net, ipv6Subnet: string | null, attrs: LeaseAttrs, ttlSec: number): Promise<CreateResult>;
  updateLease(lease: Lease, attrs: LeaseAttrs, ttlSec: number | null): Promise<UpdateResult>;
  deleteLease(key: string): Promise<void>;
  revokeEtcdLease(id: string): Promise<void>;
  watchLeases(fromRevision: string, handlers: WatchHandlers, opts?: { key?: string }): WatchHandle;
  close(): void;
}

export class EtcdRegistry implements Registry {
  readonly prefix: string;
  private readonly etcd: EtcdClient;

  /** Throws EtcdError when the client cannot be set up (unreadable TLS files). */
  constructor(opts: RegistryOptions) {
    this.prefix = opts.prefix.replace(/\/+$/, '');
    this.etcd = new EtcdClient(opts);
  }

  get endpoints(): readonly string[] {
    return this.etcd.endpoints;
  }

  get configKey(): string {
    return `${this.prefix}/config`;
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    const { kv } = await this.etcd.get(this.configKey);
    if (!kv) throw new ConfigNotFoundError(this.configKey);
    return parseNetworkConfig(kv.value);
  }

  private decodeKv(kv: KeyValue): { lease: Lease } | { skipped: SkippedEntry } {
    const key = leaseKeyOf(this.prefix, kv.key);
    if (key === null) return { skipped: { key: kv.key, reason: `not below ${subnetsPrefix(this.prefix)}/`, subnets: null } };
    const parsed = parseSubnetKey(key);
    if (!parsed) return { skipped: { key: kv.key, reason: 'not a subnet key (expected e.g. 10.5.72.0-24)', subnets: null } };
    const subnets = { subnet: parsed.subnet, ipv6Subnet: parsed.ipv6Subnet ?? null };
    let attrs: LeaseAttrs;
    try {
      attrs = decodeLeaseAttrs(kv.value);
    } catch (err) {
      return { skipped: { key: kv.key, reason: (err as Error).message, subnets } };
    }
    return { lease: { key, ...subnets, attrs, etcdLeaseId: kv.lease, modRevision: kv.modRevision } };
  }

  async listLeases(): Promise<LeaseList> {
    // As flannel: the range "<prefix>/subnets" without the trailing slash; other keys in it are reported.
    const { kvs, revision } = await this.etcd.list(subnetsPrefix(this.prefix));
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    for (const kv of kvs) {
      const d = this.decodeKv(kv);
      if ('lease' in d) leases.push(d.lease);
      else skipped.push(d.skipped);
    }
    return { leases, revision, skipped };
  }

  /** The lease under `key` (null if absent) and the revision it was read at. */
  async getLease(key: string): Promise<{ lease: Lease | null; revision: string }> {
    const full = leaseKeyPath(this.prefix, key);
    const { kv, revision } = await this.etcd.get(full);
    if (!kv) return { lease: null, revision };
    const d = this.decodeKv(kv);
    if ('skipped' in d) throw new EtcdError(this.endpoints, `get ${full}`, new Error(d.skipped.reason), 'refused');
    return { lease: d.lease, revision };
  }

  async revokeEtcdLease(id: string): Promise<void> {
    await this.etcd.revoke(id);
  }

  /** Revokes a grant that ended up unused; the original error is the one that matters. */
  private async revokeUnused(id: string, original: unknown): Promise<void> {
    if (id === '0') return;
    try {
      await this.etcd.revoke(id);
    } catch (err) {
      // The grant expires on its own after its TTL; report both so neither error is lost.
      throw new EtcdError(
        this.endpoints,
        `revoke unused lease ${id} (after: ${original instanceof Error ? original.message : String(original)})`,
        err,
      );
    }
  }

  /** Creates the lease atomically (flannel's createSubnet: grant, then put if the key is absent). */
  async createLease(subnet: Ip4Net, ipv6Subnet: string | null, attrs: LeaseAttrs, ttlSec: number): Promise<CreateResult> {
    const key = subnetKey(subnet, ipv6Subnet);
    const value = encodeLeaseAttrs(attrs);
    const leaseId = await this.etcd.grant(ttlSec, formatIp4Net(subnet));
    let res;
    try {
      res = await this.etcd.putIf(leaseKeyPath(this.prefix, key), value, leaseId, { absent: true });
    } catch (err) {
      await this.revokeUnused(leaseId, err);
      throw err;
    }
    if (!res.written) {
      await this.revokeUnused(leaseId, 'subnet already exists');
      return { created: false };
    }
    return { created: true, lease: { key, subnet, ipv6Subnet, attrs, etcdLeaseId: leaseId, modRevision: res.modRevision } };
  }

  /**
   * Re-puts a lease with fresh attrs and, unless ttlSec is null (reservation), a fresh etcd lease.
   * flanneld does a plain Put here; we guard it on the key's mod revision so a renewal after the key
   * expired or was taken by another node can never resurrect or overwrite it. The stored value and
   * lease are the same as flanneld's.
   */
  async updateLease(lease: Lease, attrs: LeaseAttrs, ttlSec: number | null): Promise<UpdateResult> {
    const value = encodeLeaseAttrs(attrs);
    const leaseId = ttlSec === null ? '0' : await this.etcd.grant(ttlSec, formatIp4Net(lease.subnet));
    let res;
    try {
      res = await this.etcd.putIf(leaseKeyPath(this.prefix, lease.key), value, leaseId, { modRevision: lease.modRevision });
    } catch (err) {
      await this.revokeUnused(leaseId, err);
      throw err;
    }
    if (!res.written) {
      await this.revokeUnused(leaseId, 'lease changed concurrently');
      const d = res.current ? this.decodeKv(res.current) : null;
      return { updated: false, current: d && 'lease' in d ? d.lease : null };
    }
    return { updated: true, lease: { ...lease, attrs, etcdLeaseId: leaseId, modRevision: res.modRevision } };
  }

  async deleteLease(key: string): Promise<void> {
    await this.etcd.delete(leaseKeyPath(this.prefix, key));
  }

  /** Watches every lease (or the one under `opts.key`) from `fromRevision` on, decoded. */
  watchLeases(fromRevision: string, handlers: WatchHandlers, opts: { key?: string } = {}): WatchHandle {
    const watched = opts.key === undefined ? subnetsPrefix(this.prefix) : leaseKeyPath(this.prefix, opts.key);
    return this.etcd.watch(watched, { prefix: opts.key === undefined }, fromRevision, {
      ...(handlers.onCreated ? { onCreated: () => handlers.onCreated?.() } : {}),
      onEvents: (events, revision) => {
        handlers.onEvents(
          events.map((ev): RegistryWatchEvent => {
            const modRevision = ev.kv.modRevision;
            if (ev.type === 'delete') {
              const key = leaseKeyOf(this.prefix, ev.kv.key);
              if (key === null || !parseSubnetKey(key)) return { type: 'skipped', key: ev.kv.key, reason: 'not a subnet key', modRevision };
              return { type: 'delete', key, modRevision };
            }
            const d = this.decodeKv(ev.kv);
            if ('skipped' in d) return { type: 'skipped', key: d.skipped.key, reason: d.skipped.reason, modRevision };
            return { type: 'put', lease: d.lease };
          }),
          revision,
        );
      },
      onCompacted: (rev) => handlers.onCompacted(rev),
      onError: (err) => handlers.onError(err),
    });
  }

  close(): void {
    this.etcd.close();
  }
}
