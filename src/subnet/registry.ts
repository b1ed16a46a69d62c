// The only module that talks to etcd. Keys and values are flannel's (flannel-compat.md §1):
// `<prefix>/config` and `<prefix>/subnets/<subnet key>` holding the Go-JSON lease attrs, each lease
// attached to an etcd lease with a 24 h TTL, or to none (a reservation).
//
// Everything above this module sees Lease values and typed errors; gRPC/etcd3 types stay here.
// Watches use the raw gRPC stream instead of etcd3's WatchManager because we need the compaction
// revision and exact control over the resume revision (the manager advances its cursor on the
// "created" response, which can skip events that were still in flight).
import { Etcd3, type IOptions } from 'etcd3';
import type * as RPC from 'etcd3/lib/rpc';
import fs from 'node:fs';
import type { Ip4Net } from './ip4';
import { formatIp4Net } from './ip4';
import type { Lease, LeaseAttrs } from './lease';
import { decodeLeaseAttrs, encodeLeaseAttrs, parseSubnetKey, subnetKey } from './lease-codec';
import { parseNetworkConfig, type NetworkConfig } from './config';

export interface RegistryOptions {
  endpoints: string[];
  /** e.g. "/coreos.com/network" (no trailing slash). */
  prefix: string;
  keyfile?: string;
  certfile?: string;
  cafile?: string;
  username?: string;
  password?: string;
  /** Deadline for unary calls; default 15 s, so a blackholed etcd fails a call instead of hanging it. */
  callTimeoutMs?: number;
}

/** etcd could not be reached or refused a request; the message names the endpoints. */
export class EtcdError extends Error {
  override name = 'EtcdError';
  constructor(
    readonly endpoints: readonly string[],
    readonly operation: string,
    override readonly cause: unknown,
  ) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    const unreachable = /unavailable|deadline|connect|ECONNREFUSED|No connection|circuit|timed? ?out|stream ended/i.test(
      `${(cause as Error)?.name ?? ''} ${msg}`,
    );
    super(`etcd at ${endpoints.join(',')} ${unreachable ? 'unreachable' : 'error'}: ${operation}: ${msg}`);
  }
}

export class ConfigNotFoundError extends Error {
  override name = 'ConfigNotFoundError';
  constructor(readonly key: string) {
    super(`flannel config not found in etcd store (${key})`);
  }
}

export interface SkippedEntry {
  key: string;
  reason: string;
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

export interface WatchHandle {
  cancel(): void;
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

/** Exclusive end of a prefix range: the prefix with its last byte incremented (etcd's "WithPrefix"). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function buildClientOptions(opts: RegistryOptions): IOptions {
  const timeout = opts.callTimeoutMs ?? 15000;
  const options: IOptions = {
    hosts: opts.endpoints,
    dialTimeout: timeout,
    // Streams must live forever; unary calls get a deadline.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
  };
  // Like flanneld ≥ v0.20.1: client-certificate TLS only when both key and cert are given; the CA is optional.
  if (opts.keyfile && opts.certfile) {
    options.credentials = {
      rootCertificate: opts.cafile ? fs.readFileSync(opts.cafile) : (undefined as unknown as Buffer),
      privateKey: fs.readFileSync(opts.keyfile),
      certChain: fs.readFileSync(opts.certfile),
    };
  } else if (opts.cafile && opts.endpoints.every((e) => /^https:\/\//i.test(e))) {
    // https endpoints with only a CA: verify the server against it. flanneld ignores the CA here and
    // verifies against the system roots, which can never work with a private etcd CA.
    options.credentials = { rootCertificate: fs.readFileSync(opts.cafile) };
  }
  if (opts.username) options.auth = { username: opts.username, password: opts.password ?? '' };
  return options;
}

export class EtcdRegistry implements Registry {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly subnetsPrefix: string;
  private readonly callTimeoutMs: number;

  constructor(opts: RegistryOptions) {
    this.endpoints = [...opts.endpoints];
    this.callTimeoutMs = opts.callTimeoutMs ?? 15000;
    this.prefix = opts.prefix.replace(/\/+$/, '');
    // flannel lists/watches "<prefix>/subnets" without the trailing slash; keys then carry "/<subnet key>".
    this.subnetsPrefix = `${this.prefix}/subnets`;
    try {
      this.client = new Etcd3(buildClientOptions(opts));
    } catch (err) {
      throw new EtcdError(this.endpoints, 'client setup', err);
    }
  }

  get configKey(): string {
    return `${this.prefix}/config`;
  }

  leaseKeyPath(key: string): string {
    return `${this.subnetsPrefix}/${key}`;
  }

  private async call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.error(operation, err);
    }
  }

  /** Last failure that was not the client's circuit breaker, to explain why the breaker is open. */
  private lastFailure: string | null = null;

  /**
   * After repeated failures etcd3's per-host circuit breaker fails calls without trying, with a message
   * that hides the cause (TLS handshake, refused connection, …); report the last real failure with it.
   */
  private error(operation: string, err: unknown): EtcdError {
    const broken = (err as { isBrokenCircuitError?: boolean } | null)?.isBrokenCircuitError === true;
    if (!broken) {
      this.lastFailure = err instanceof Error ? err.message : String(err);
      return new EtcdError(this.endpoints, operation, err);
    }
    const why = this.lastFailure === null ? '' : `; last error: ${this.lastFailure}`;
    return new EtcdError(this.endpoints, operation, new Error(`not tried, circuit breaker open after repeated failures${why}`));
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    const key = this.configKey;
    const res = await this.call(`get ${key}`, () => this.client.kv.range({ key: Buffer.from(key) }));
    const kv = res.kvs[0];
    if (!kv) throw new ConfigNotFoundError(key);
    return parseNetworkConfig(kv.value.toString());
  }

  /** Key relative to `<prefix>/subnets/`, or null if the full key isn't below it. */
  private relativeKey(fullKey: string): string | null {
    const head = `${this.subnetsPrefix}/`;
    return fullKey.startsWith(head) ? fullKey.slice(head.length) : null;
  }

  private decodeKv(kv: RPC.IKeyValue): { lease: Lease } | { skipped: SkippedEntry } {
    const fullKey = kv.key.toString();
    const key = this.relativeKey(fullKey);
    if (key === null) return { skipped: { key: fullKey, reason: `not below ${this.subnetsPrefix}/` } };
    const parsed = parseSubnetKey(key);
    if (!parsed) return { skipped: { key: fullKey, reason: 'not a subnet key (expected e.g. 10.5.72.0-24)' } };
    let attrs: LeaseAttrs;
    try {
      attrs = decodeLeaseAttrs(kv.value.toString());
    } catch (err) {
      return { skipped: { key: fullKey, reason: (err as Error).message } };
    }
    return {
      lease: {
        key,
        subnet: parsed.subnet,
        ipv6Subnet: parsed.ipv6Subnet ?? null,
        attrs,
        etcdLeaseId: String(kv.lease ?? '0'),
        modRevision: String(kv.mod_revision),
      },
    };
  }

  async listLeases(): Promise<LeaseList> {
    const key = Buffer.from(this.subnetsPrefix);
    const res = await this.call(`list ${this.subnetsPrefix}`, () =>
      this.client.kv.range({ key, range_end: prefixEnd(key) }),
    );
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    for (const kv of res.kvs) {
      const d = this.decodeKv(kv);
      if ('lease' in d) leases.push(d.lease);
      else skipped.push(d.skipped);
    }
    return { leases, revision: String(res.header.revision), skipped };
  }

  /** The lease under `key` (null if absent) and the revision it was read at. */
  async getLease(key: string): Promise<{ lease: Lease | null; revision: string }> {
    const full = this.leaseKeyPath(key);
    const res = await this.call(`get ${full}`, () => this.client.kv.range({ key: Buffer.from(full) }));
    const revision = String(res.header.revision);
    const kv = res.kvs[0];
    if (!kv) return { lease: null, revision };
    const d = this.decodeKv(kv);
    if ('skipped' in d) throw new EtcdError(this.endpoints, `get ${full}`, new Error(d.skipped.reason));
    return { lease: d.lease, revision };
  }

  private async grant(ttlSec: number, what: string): Promise<string> {
    const res = await this.call(`grant ${ttlSec}s lease for ${what}`, () =>
      this.client.leaseClient.leaseGrant({ TTL: ttlSec }),
    );
    if (res.error) throw new EtcdError(this.endpoints, `grant lease for ${what}`, new Error(res.error));
    return String(res.ID);
  }

  async revokeEtcdLease(id: string): Promise<void> {
    if (id === '0') return;
    await this.call(`revoke lease ${id}`, () => this.client.leaseClient.leaseRevoke({ ID: id }));
  }

  /** Revokes a grant that ended up unused; the original error is the one that matters. */
  private async revokeUnused(id: string, original: unknown): Promise<void> {
    try {
      await this.revokeEtcdLease(id);
    } catch (err) {
      // The grant expires on its own after its TTL; report both so neither error is lost.
      throw new EtcdError(
        this.endpoints,
        `revoke unused lease ${id} (after: ${original instanceof Error ? original.message : String(original)})`,
        err,
      );
    }
  }

  async createLease(subnet: Ip4Net, ipv6Subnet: string | null, attrs: LeaseAttrs, ttlSec: number): Promise<CreateResult> {
    const key = subnetKey(subnet, ipv6Subnet);
    const full = Buffer.from(this.leaseKeyPath(key));
    const value = encodeLeaseAttrs(attrs);
    const leaseId = await this.grant(ttlSec, formatIp4Net(subnet));
    let res: RPC.ITxnResponse;
    try {
      res = await this.call(`create ${full.toString()}`, () =>
        this.client.kv.txn({
          compare: [{ key: full, target: 'Version', result: 'Equal', version: 0 }],
          success: [{ request_put: { key: full, value: Buffer.from(value), lease: leaseId } }],
        }),
      );
    } catch (err) {
      await this.revokeUnused(leaseId, err);
      throw err;
    }
    if (!res.succeeded) {
      await this.revokeUnused(leaseId, 'subnet already exists');
      return { created: false };
    }
    return {
      created: true,
      lease: { key, subnet, ipv6Subnet, attrs, etcdLeaseId: leaseId, modRevision: String(res.header.revision) },
    };
  }

  /**
   * Re-puts a lease with fresh attrs and, unless ttlSec is null (reservation), a fresh etcd lease.
   * flanneld does a plain Put here; we guard it on the key's mod revision so a renewal after the key
   * expired or was taken by another node can never resurrect or overwrite it. The stored value and
   * lease are the same as flanneld's.
   */
  async updateLease(lease: Lease, attrs: LeaseAttrs, ttlSec: number | null): Promise<UpdateResult> {
    const full = Buffer.from(this.leaseKeyPath(lease.key));
    const value = encodeLeaseAttrs(attrs);
    const leaseId = ttlSec === null ? '0' : await this.grant(ttlSec, formatIp4Net(lease.subnet));
    let res: RPC.ITxnResponse;
    try {
      res = await this.call(`update ${full.toString()}`, () =>
        this.client.kv.txn({
          compare: [{ key: full, target: 'Mod', result: 'Equal', mod_revision: lease.modRevision }],
          success: [{ request_put: { key: full, value: Buffer.from(value), lease: leaseId } }],
          failure: [{ request_range: { key: full } }],
        }),
      );
    } catch (err) {
      if (leaseId !== '0') await this.revokeUnused(leaseId, err);
      throw err;
    }
    if (!res.succeeded) {
      if (leaseId !== '0') await this.revokeUnused(leaseId, 'lease changed concurrently');
      const kv = res.responses[0]?.response_range?.kvs[0];
      const d = kv ? this.decodeKv(kv) : null;
      return { updated: false, current: d && 'lease' in d ? d.lease : null };
    }
    return {
      updated: true,
      lease: { ...lease, attrs, etcdLeaseId: leaseId, modRevision: String(res.header.revision) },
    };
  }

  async deleteLease(key: string): Promise<void> {
    const full = this.leaseKeyPath(key);
    await this.call(`delete ${full}`, () => this.client.kv.deleteRange({ key: Buffer.from(full) }));
  }

  watchLeases(fromRevision: string, handlers: WatchHandlers, opts: { key?: string } = {}): WatchHandle {
    const key = Buffer.from(opts.key === undefined ? this.subnetsPrefix : this.leaseKeyPath(opts.key));
    const what = `watch ${key.toString()} from revision ${fromRevision}`;
    let done = false;
    let stream: RPC.IDuplexStream<RPC.IWatchRequest, RPC.IWatchResponse> | null = null;
    // A stream opened towards an unreachable member (etcd3 picks members at random) stays pending
    // without an error for minutes while gRPC keeps trying to connect; give up after the call timeout
    // so the watcher reconnects, most likely through another member.
    let createTimer: NodeJS.Timeout | null = setTimeout(() => {
      createTimer = null;
      fail(new Error(`watch not confirmed by etcd within ${this.callTimeoutMs} ms`));
    }, this.callTimeoutMs);
    const finish = (report: () => void): void => {
      if (done) return;
      done = true;
      if (createTimer) clearTimeout(createTimer);
      createTimer = null;
      stream?.cancel();
      report();
    };
    const fail = (err: unknown): void => finish(() => handlers.onError(this.error(what, err)));
    // etcd keeps auth tokens in memory only (lost on restart, expired after --auth-token-ttl idle), and
    // etcd3 re-authenticates only when a unary call is refused. A watch refused for its token would be
    // retried with the same token forever; a unary read renews the token first (or fails, then the
    // next attempt tries again).
    const failAfterReauth = (err: Error): void => {
      if (done) return;
      this.client.kv
        .range({ key, count_only: true })
        .catch(() => undefined)
        .finally(() => fail(err));
    };

    this.client.watchClient
      .watch()
      .then((s) => {
        if (done) {
          s.cancel();
          return;
        }
        stream = s;
        s.on('data', (res) => {
          if (done) return;
          if (res.compact_revision && res.compact_revision !== '0') {
            const rev = String(res.compact_revision);
            finish(() => handlers.onCompacted(rev));
            return;
          }
          if (res.canceled) {
            const err = new Error(`watch canceled by server: ${res.cancel_reason || 'no reason given'}`);
            if (/invalid auth token/i.test(res.cancel_reason)) failAfterReauth(err);
            else fail(err);
            return;
          }
          if (res.created) {
            if (createTimer) clearTimeout(createTimer);
            createTimer = null;
            handlers.onCreated?.();
            return;
          }
          handlers.onEvents(res.events.map((ev) => this.decodeEvent(ev)), String(res.header.revision));
        });
        s.on('error', (err) => fail(err));
        s.on('end', () => fail(new Error('watch stream ended')));
        s.write({
          create_request: {
            key,
            range_end: opts.key === undefined ? prefixEnd(key) : undefined,
            start_revision: fromRevision,
            // Progress notifications advance the resume revision while nothing changes, so a
            // reconnect after a quiet period is less likely to land on a compacted revision.
            progress_notify: true,
          },
        });
      })
      .catch(fail);
    return { cancel: () => finish(() => undefined) };
  }

  private decodeEvent(ev: RPC.IEvent): RegistryWatchEvent {
    const modRevision = String(ev.kv.mod_revision);
    if (ev.type === 'Delete') {
      const fullKey = ev.kv.key.toString();
      const key = this.relativeKey(fullKey);
      if (key === null || !parseSubnetKey(key)) {
        return { type: 'skipped', key: fullKey, reason: 'not a subnet key', modRevision };
      }
      return { type: 'delete', key, modRevision };
    }
    const d = this.decodeKv(ev.kv);
    if ('skipped' in d) return { type: 'skipped', key: d.skipped.key, reason: d.skipped.reason, modRevision };
    return { type: 'put', lease: d.lease };
  }

  close(): void {
    this.client.close();
  }
}
