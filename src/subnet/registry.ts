// The only module that talks to etcd. Keys and values are flannel's (docs/compat.md §1):
// `<prefix>/config` and `<prefix>/subnets/<subnet key>` holding the Go-JSON lease attrs, each lease
// attached to an etcd lease with a 24 h TTL, or to none (a reservation).
//
// Everything above this module sees Lease values and typed errors; gRPC/etcd3 types stay here.
// Watches use the raw gRPC stream instead of etcd3's WatchManager because we need the compaction
// revision and exact control over the resume revision (the manager advances its cursor on the
// "created" response, which can skip events that were still in flight).
import { castGrpcError, Etcd3, EtcdLeaseInvalidError, GRPCCancelledError, isRecoverableError, type IOptions } from 'etcd3';
import type { ConnectionPool, Host } from 'etcd3/lib/connection-pool';
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
  /** Overall deadline of a unary call, all attempts included; default 15 s. */
  callTimeoutMs?: number;
  /**
   * Deadline of a unary call's first attempt (default 3 s), doubled for each further attempt; the last
   * attempt gets what is left of callTimeoutMs. Short, so a call that went to a member that drops
   * packets is retried on another member after seconds instead of failing after callTimeoutMs.
   */
  attemptTimeoutMs?: number;
  /** A watch that etcd has not confirmed within this time (default 5 s) fails, to be reopened elsewhere. */
  watchConfirmTimeoutMs?: number;
}

export const DEFAULT_CALL_TIMEOUT_MS = 15000;
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 3000;
export const DEFAULT_WATCH_CONFIRM_TIMEOUT_MS = 5000;
/**
 * A member that failed is skipped for 5 s while another may work. Not growing: while some member
 * answers, a down one is not tried anyway, and while none does, a long period would only delay noticing
 * that the live one is back.
 */
const MEMBER_DOWN_MS = 5000;

/** etcd could not be reached or refused a request; the message names the endpoints. */
export class EtcdError extends Error {
  override name = 'EtcdError';
  /** etcd refused the username/password (wrong credentials: retrying cannot help). */
  readonly authFailed: boolean;
  constructor(
    readonly endpoints: readonly string[],
    readonly operation: string,
    override readonly cause: unknown,
  ) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    const unreachable =
      /unavailable|deadline|connect|ECONNREFUSED|No connection|circuit|timed? ?out|stream ended|not confirmed|members? (is |are )?down/i.test(
        `${cause instanceof Error ? cause.name : ''} ${msg}`,
      );
    super(`etcd at ${endpoints.join(',')} ${unreachable ? 'unreachable' : 'error'}: ${operation}: ${msg}`);
    this.authFailed = /authentication failed|invalid user ID or password/i.test(msg);
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
/** The range result of a txn's first response; etcd sets only the oneof member of the op that ran. */
function rangeResponse(res: RPC.ITxnResponse): RPC.IRangeResponse | undefined {
  return res.responses[0]?.response_range;
}

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

type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
type GlobalPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** The Watch service client of etcd3's generated gRPC stubs. */
interface WatchServiceClient {
  watch(metadata: unknown, options: object): RPC.IDuplexStream<RPC.IWatchRequest, RPC.IWatchResponse>;
}

/** Result of a member call whose success is only known later (a watch stream: once etcd confirms it). */
const PENDING = Symbol('pending verdict');

/** The member a failed call went to (set by MemberGate), to name it in error messages. */
const failedOn = new WeakMap<object, string>();

/** Thrown instead of trying a member that recently failed while another member can take the call. */
class MemberSkippedError extends Error {
  override name = 'MemberSkippedError';
}

/**
 * Whether a call's failure says the member is unreachable or unwell (so other members should take the
 * next calls): gRPC UNAVAILABLE / DEADLINE_EXCEEDED / INTERNAL / … but not our own cancellations, and not
 * etcd refusing the request (permission denied, compare failed, …): that member answered.
 */
function isMemberFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = castGrpcError(err);
  return isRecoverableError(e) && !(e instanceof GRPCCancelledError);
}

/**
 * etcd3's per-member fault policy, replacing its circuit breaker (which opened only after 3 consecutive
 * failures, counted a call hanging on a member that drops packets only at its deadline, and then let a
 * call through to that member every 5 s). Calls stick to members that answered: a member that has not
 * answered yet is only tried when none has, and a member that failed (error or deadline) is marked down
 * and skipped for MEMBER_DOWN_MS while another member may work; after that one call goes to it as a
 * trial. When every member is down, calls still go out, to the member that failed longest ago: trying is
 * the only way to notice one is back, and the caller gets the real error instead of "not tried".
 */
class MemberGate {
  private state: 'unknown' | 'up' | 'down' = 'unknown';
  private retryAt = 0;
  /** The member's last failure, for messages. */
  lastError: string | null = null;

  constructor(
    readonly endpoint: string,
    private readonly members: readonly MemberGate[],
  ) {}

  /**
   * Lower is better: 0 answered last time, 1 not tried yet or due for a trial, above 1 down, the member
   * that failed longest ago first (while every member is down, calls take turns instead of retrying the
   * member that has just failed).
   */
  private rank(now: number): number {
    if (this.state === 'up') return 0;
    return this.state === 'unknown' || now >= this.retryAt ? 1 : 1 + (this.retryAt - now);
  }

  // The IPolicy surface etcd3 uses: execute() only (Host.faultHandling, ConnectionPool.markFailed).
  async execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
    const now = Date.now();
    const rank = this.rank(now);
    if (this.members.some((m) => m !== this && m.rank(now) < rank)) {
      throw new MemberSkippedError(
        `${this.endpoint} skipped: ${this.state === 'down' ? `down after: ${this.lastError ?? 'a failure'}` : 'another member answers'}`,
      );
    }
    // A trial: others keep skipping the member until it has had its time.
    if (this.state === 'down' && now >= this.retryAt) this.retryAt = now + MEMBER_DOWN_MS;
    let res: T;
    try {
      res = await fn({ signal: new AbortController().signal });
    } catch (err) {
      if (typeof err === 'object' && err !== null && !failedOn.has(err)) failedOn.set(err, this.endpoint);
      if (isMemberFailure(err)) this.failed(err);
      else this.succeeded();
      throw err;
    }
    if (!(typeof res === 'object' && res !== null && PENDING in res)) this.succeeded();
    return res;
  }

  succeeded(): void {
    this.state = 'up';
  }

  failed(err: unknown): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.state = 'down';
    this.retryAt = Date.now() + MEMBER_DOWN_MS;
  }
}

/** etcd3's global policy: none. EtcdRegistry.call() retries itself, with a deadline per attempt. */
const NO_RETRY = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
} as unknown as GlobalPolicy;

function buildClientOptions(opts: RegistryOptions, gates: MemberGate[]): IOptions {
  const attemptTimeout = opts.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  const options: IOptions = {
    hosts: opts.endpoints,
    // Streams must live forever. Unary calls from EtcdRegistry.call() carry their own deadline; this
    // one is for calls etcd3 makes by itself (the user/password exchange, tried on each member in turn).
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptTimeout }),
    grpcOptions: {
      // A member that stops answering on an established connection (powered off, partitioned) would
      // leave a watch waiting forever; pings while calls are open (the watches: always) notice it in
      // about 20 s. etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
      'grpc.keepalive_time_ms': 15000,
      'grpc.keepalive_timeout_ms': 5000,
    },
    faultHandling: {
      host: (endpoint) => {
        const gate = new MemberGate(endpoint, gates);
        gates.push(gate);
        return gate as unknown as HostPolicy;
      },
      global: NO_RETRY,
    },
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
  /** etcd3's connection pool: watches are opened through it directly to know which member they use. */
  private readonly pool: ConnectionPool;
  private readonly gates: MemberGate[] = [];
  private readonly subnetsPrefix: string;
  private readonly callTimeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly watchConfirmTimeoutMs: number;

  constructor(opts: RegistryOptions) {
    this.endpoints = [...opts.endpoints];
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.attemptTimeoutMs = Math.min(opts.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS, this.callTimeoutMs);
    this.watchConfirmTimeoutMs = opts.watchConfirmTimeoutMs ?? DEFAULT_WATCH_CONFIRM_TIMEOUT_MS;
    this.prefix = opts.prefix.replace(/\/+$/, '');
    // flannel lists/watches "<prefix>/subnets" without the trailing slash; keys then carry "/<subnet key>".
    this.subnetsPrefix = `${this.prefix}/subnets`;
    try {
      this.client = new Etcd3(buildClientOptions(opts, this.gates));
    } catch (err) {
      throw new EtcdError(this.endpoints, 'client setup', err);
    }
    // Namespace.pool is protected in etcd3's typings (etcd3 1.1.x; checked here, not assumed).
    const pool = (this.client as unknown as { pool?: ConnectionPool }).pool;
    if (typeof pool?.withConnection !== 'function' || this.gates.length !== this.endpoints.length) {
      this.client.close();
      throw new EtcdError(
        this.endpoints,
        'client setup',
        new Error('unsupported etcd3 client version (no connection pool or member policies)'),
      );
    }
    this.pool = pool;
  }

  get configKey(): string {
    return `${this.prefix}/config`;
  }

  leaseKeyPath(key: string): string {
    return `${this.subnetsPrefix}/${key}`;
  }

  /**
   * Runs a unary call with a deadline per attempt, retrying on another member when one is unreachable
   * (each attempt goes to a member picked by etcd3, skipping members that just failed, see MemberGate).
   * Attempts: one more than there are members, within callTimeoutMs overall; the first gets
   * attemptTimeoutMs, each next one twice as long, the last one all that is left, so a slow but
   * working etcd still gets its time.
   */
  private async call<T>(operation: string, fn: (options: { readonly deadline: number }) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.callTimeoutMs;
    const attempts = this.endpoints.length + 1;
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= attempts;
      const ms = this.attemptTimeoutMs * 2 ** (attempt - 1);
      // Read when etcd3 issues the call (it copies the options then), after it has an auth token: the
      // user/password exchange tries the members in list order and may itself wait on a dead one.
      const options = {
        get deadline(): number {
          return last ? deadline : Math.min(deadline, Date.now() + ms);
        },
      };
      try {
        return await fn(options);
      } catch (err) {
        // Retried: a member's failure, and a call cancelled under us (etcd3 closes a member's channels
        // when a call on it fails); not retried: etcd refusing the request.
        const retriable = err instanceof MemberSkippedError || (err instanceof Error && isRecoverableError(castGrpcError(err)));
        if (last || Date.now() >= deadline || !retriable) throw this.error(operation, err);
      }
    }
  }

  /** Operator-facing error; names the member the failure came from when there are several. */
  private error(operation: string, err: unknown): EtcdError {
    const member = typeof err === 'object' && err !== null ? failedOn.get(err) : undefined;
    if (err instanceof MemberSkippedError) {
      // Only possible if every member was skipped at once; say why they were marked down.
      const why = this.gates.map((g) => `${g.endpoint}: ${g.lastError ?? 'unknown'}`).join('; ');
      return new EtcdError(this.endpoints, operation, new Error(`not tried, every member is down (${why})`));
    }
    return new EtcdError(this.endpoints, this.endpoints.length > 1 && member ? `${operation} (on ${member})` : operation, err);
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    const key = this.configKey;
    const res = await this.call(`get ${key}`, (o) => this.client.kv.range({ key: Buffer.from(key) }, o));
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
        etcdLeaseId: kv.lease,
        modRevision: kv.mod_revision,
      },
    };
  }

  async listLeases(): Promise<LeaseList> {
    const key = Buffer.from(this.subnetsPrefix);
    const res = await this.call(`list ${this.subnetsPrefix}`, (o) => this.client.kv.range({ key, range_end: prefixEnd(key) }, o));
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    for (const kv of res.kvs) {
      const d = this.decodeKv(kv);
      if ('lease' in d) leases.push(d.lease);
      else skipped.push(d.skipped);
    }
    return { leases, revision: res.header.revision, skipped };
  }

  /** The lease under `key` (null if absent) and the revision it was read at. */
  async getLease(key: string): Promise<{ lease: Lease | null; revision: string }> {
    const full = this.leaseKeyPath(key);
    const res = await this.call(`get ${full}`, (o) => this.client.kv.range({ key: Buffer.from(full) }, o));
    const revision = res.header.revision;
    const kv = res.kvs[0];
    if (!kv) return { lease: null, revision };
    const d = this.decodeKv(kv);
    if ('skipped' in d) throw new EtcdError(this.endpoints, `get ${full}`, new Error(d.skipped.reason));
    return { lease: d.lease, revision };
  }

  private async grant(ttlSec: number, what: string): Promise<string> {
    const res = await this.call(`grant ${ttlSec}s lease for ${what}`, (o) => this.client.leaseClient.leaseGrant({ TTL: ttlSec }, o));
    if (res.error) throw new EtcdError(this.endpoints, `grant lease for ${what}`, new Error(res.error));
    return res.ID;
  }

  async revokeEtcdLease(id: string): Promise<void> {
    if (id === '0') return;
    try {
      await this.call(`revoke lease ${id}`, (o) => this.client.leaseClient.leaseRevoke({ ID: id }, o));
    } catch (err) {
      // Already gone: expired, or revoked by an attempt whose reply was lost to its deadline.
      if (err instanceof EtcdError && err.cause instanceof EtcdLeaseInvalidError) return;
      throw err;
    }
  }

  /**
   * The key's current entry from a failed compare, if it is what this very txn wrote: an earlier attempt
   * was applied but its reply was lost to the attempt's deadline, and the retry found its own write. Our
   * etcd lease was granted for this txn alone, so a key holding it and our value is ours.
   */
  private ownEarlierWrite(res: RPC.ITxnResponse, value: string, leaseId: string): RPC.IKeyValue | null {
    const kv = rangeResponse(res)?.kvs[0];
    if (!kv) return null;
    return kv.lease === leaseId && kv.value.toString() === value ? kv : null;
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
      res = await this.call(`create ${full.toString()}`, (o) =>
        this.client.kv.txn(
          {
            compare: [{ key: full, target: 'Version', result: 'Equal', version: 0 }],
            success: [{ request_put: { key: full, value: Buffer.from(value), lease: leaseId } }],
            failure: [{ request_range: { key: full } }],
          },
          o,
        ),
      );
    } catch (err) {
      await this.revokeUnused(leaseId, err);
      throw err;
    }
    let modRevision = res.header.revision;
    if (!res.succeeded) {
      const own = this.ownEarlierWrite(res, value, leaseId);
      if (!own) {
        await this.revokeUnused(leaseId, 'subnet already exists');
        return { created: false };
      }
      modRevision = own.mod_revision;
    }
    return {
      created: true,
      lease: { key, subnet, ipv6Subnet, attrs, etcdLeaseId: leaseId, modRevision },
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
      res = await this.call(`update ${full.toString()}`, (o) =>
        this.client.kv.txn(
          {
            compare: [{ key: full, target: 'Mod', result: 'Equal', mod_revision: lease.modRevision }],
            success: [{ request_put: { key: full, value: Buffer.from(value), lease: leaseId } }],
            failure: [{ request_range: { key: full } }],
          },
          o,
        ),
      );
    } catch (err) {
      if (leaseId !== '0') await this.revokeUnused(leaseId, err);
      throw err;
    }
    let modRevision = res.header.revision;
    if (!res.succeeded) {
      const own = this.ownEarlierWrite(res, value, leaseId);
      if (!own) {
        if (leaseId !== '0') await this.revokeUnused(leaseId, 'lease changed concurrently');
        const kv = rangeResponse(res)?.kvs[0];
        const d = kv ? this.decodeKv(kv) : null;
        return { updated: false, current: d && 'lease' in d ? d.lease : null };
      }
      modRevision = own.mod_revision;
    }
    return {
      updated: true,
      lease: { ...lease, attrs, etcdLeaseId: leaseId, modRevision },
    };
  }

  async deleteLease(key: string): Promise<void> {
    const full = this.leaseKeyPath(key);
    await this.call(`delete ${full}`, (o) => this.client.kv.deleteRange({ key: Buffer.from(full) }, o));
  }

  watchLeases(fromRevision: string, handlers: WatchHandlers, opts: { key?: string } = {}): WatchHandle {
    const key = Buffer.from(opts.key === undefined ? this.subnetsPrefix : this.leaseKeyPath(opts.key));
    const what = `watch ${key.toString()} from revision ${fromRevision}`;
    let done = false;
    let confirmed = false;
    /** Members tried so far: until etcd confirms the watch, a failed member's turn goes to the next one. */
    let tries = 0;
    /** The current stream and the member it went to; events of earlier streams are ignored. */
    let stream: RPC.IDuplexStream<RPC.IWatchRequest, RPC.IWatchResponse> | null = null;
    let member: Host | null = null;
    let createTimer: NodeJS.Timeout | null = null;
    const stopTimer = (): void => {
      if (createTimer) clearTimeout(createTimer);
      createTimer = null;
    };
    const finish = (report: () => void): void => {
      if (done) return;
      done = true;
      stopTimer();
      stream?.cancel();
      report();
    };
    const fail = (err: unknown): void => {
      if (done) return;
      if (member && typeof err === 'object' && err !== null && !failedOn.has(err)) failedOn.set(err, this.endpointOf(member));
      finish(() => handlers.onError(this.error(what, err)));
    };
    /** A member failed the watch: before etcd confirmed it, another member gets a turn. */
    const turnFailed = (host: Host, err: unknown): void => {
      if (done) return;
      this.memberFailed(host, err);
      if (confirmed || tries >= this.endpoints.length) {
        fail(err);
        return;
      }
      stopTimer();
      stream?.cancel();
      stream = null;
      member = null;
      open();
    };
    // etcd keeps auth tokens in memory only (lost on restart, expired after --auth-token-ttl idle), and
    // etcd3 re-authenticates only when a unary call is refused. A watch refused for its token would be
    // retried with the same token forever; a unary read renews the token first (or fails, then the
    // next attempt tries again).
    const failAfterReauth = (err: Error): void => {
      if (done) return;
      this.call('renew auth token', (o) => this.client.kv.range({ key, count_only: true }, o))
        .catch(() => undefined)
        .finally(() => fail(err));
    };

    const open = (): void => {
      tries += 1;
      let host: Host | null = null;
      // A stream opened towards a member that drops packets stays pending without an error for minutes
      // while gRPC keeps trying to connect. etcd confirms a watch at once, so give up after a few
      // seconds: the member is marked down and the watch goes to another one.
      createTimer = setTimeout(() => {
        createTimer = null;
        const err = new Error(`watch not confirmed by etcd within ${this.watchConfirmTimeoutMs} ms`);
        if (host) turnFailed(host, err);
        else fail(err);
      }, this.watchConfirmTimeoutMs);
      // Through the pool rather than etcd3's WatchClient: we need the member (to mark it down when the
      // watch is not confirmed), and WatchClient would count our own cancellations as member failures.
      this.pool
        .withConnection('Watch', ({ resource, client, metadata }) => {
          const s = (client as unknown as WatchServiceClient).watch(metadata, {});
          // Never an unhandled 'error' event, also for a stream cancelled before the handlers below exist.
          s.on('error', () => undefined);
          return { [PENDING]: true, stream: s, host: resource };
        })
        .then(({ stream: s, host: h }) => {
          if (done || createTimer === null) {
            // Finished, or this turn timed out while etcd3 was still fetching an auth token.
            s.cancel();
            return;
          }
          stream = s;
          member = h;
          host = h;
          s.on('data', (res) => {
            if (done || s !== stream) return;
            if (res.compact_revision && res.compact_revision !== '0') {
              const rev = res.compact_revision;
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
              stopTimer();
              confirmed = true;
              this.gateOf(h)?.succeeded();
              handlers.onCreated?.();
              return;
            }
            handlers.onEvents(
              res.events.map((ev) => this.decodeEvent(ev)),
              res.header.revision,
            );
          });
          s.on('error', (err) => {
            if (done || s !== stream) return; // our own cancel
            if (isMemberFailure(err)) turnFailed(h, err);
            else fail(err);
          });
          s.on('end', () => {
            if (s === stream) fail(new Error('watch stream ended'));
          });
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
    };
    open();
    return { cancel: () => finish(() => undefined) };
  }

  private gateOf(host: Host): MemberGate | null {
    return host.faultHandling instanceof MemberGate ? host.faultHandling : null;
  }

  private endpointOf(host: Host): string {
    return this.gateOf(host)?.endpoint ?? 'an etcd member';
  }

  /** As etcd3 does for unary calls: the member is marked down and its connections are dropped. */
  private memberFailed(host: Host, err: unknown): void {
    this.gateOf(host)?.failed(err);
    host.resetAllServices();
  }

  private decodeEvent(ev: RPC.IEvent): RegistryWatchEvent {
    const modRevision = ev.kv.mod_revision;
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
