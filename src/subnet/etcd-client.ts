// A thin etcd v3 client over etcd3's connection pool: member failover, per-attempt deadlines, retries,
// watches opened on a member we know, and errors typed by their gRPC status instead of their text.
// It knows keys and values only as strings; flannel's key schema and lease JSON are registry.ts's job.
//
// Behaviour (docs/HACKING.md "etcd client behaviour"): a unary call's first attempt gets 3 s, each
// retry on another member twice as long, 15 s in all; a member that failed is skipped for 5 s while
// another may answer. A watch must be confirmed by etcd within 5 s, else its member is marked down and
// the watch reopened on the next one; keepalive pings notice a member that goes silent later.
// Watches use the raw gRPC stream instead of etcd3's WatchManager: we need the member (to mark it down),
// the compaction revision and exact control over the resume revision (the manager advances its cursor on
// the "created" response, which can skip events that were still in flight).
import {
  castGrpcError,
  castGrpcErrorMessage,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCCancelledError,
  GRPCUnauthenticatedError,
  isRecoverableError,
  type IOptions,
} from 'etcd3';
import type { ConnectionPool, Host } from 'etcd3/lib/connection-pool';
import type * as RPC from 'etcd3/lib/rpc';
import fs from 'node:fs';

export interface EtcdClientOptions {
  endpoints: string[];
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

/**
 * What went wrong, from the gRPC status (etcd3 maps status codes to error classes):
 * - 'unreachable': no member answered in time (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED under us,
 *   INTERNAL, UNKNOWN, ABORTED, RESOURCE_EXHAUSTED; a watch not confirmed or ended): retrying may help;
 * - 'auth': etcd refused our credentials or their rights (UNAUTHENTICATED, PERMISSION_DENIED, wrong
 *   user/password, invalid token): retrying the same credentials will not;
 * - 'refused': etcd answered and refused the request for another reason.
 */
export type EtcdErrorKind = 'unreachable' | 'auth' | 'refused';

/** A member did not confirm a watch in time, or ended its stream: it counts as unreachable. */
class WatchLostError extends Error {
  override name = 'WatchLostError';
}

/** Thrown instead of trying a member that recently failed while another member can take the call. */
class MemberSkippedError extends Error {
  override name = 'MemberSkippedError';
}

export function etcdErrorKind(cause: unknown): EtcdErrorKind {
  if (cause instanceof MemberSkippedError || cause instanceof WatchLostError) return 'unreachable';
  if (!(cause instanceof Error)) return 'refused';
  const e = castGrpcError(cause);
  if (
    e instanceof GRPCUnauthenticatedError ||
    e instanceof EtcdPermissionDeniedError ||
    e instanceof EtcdAuthenticationFailedError ||
    e instanceof EtcdInvalidAuthTokenError
  ) {
    return 'auth';
  }
  return isRecoverableError(e) ? 'unreachable' : 'refused';
}

/** etcd could not be reached or refused a request; the message names the endpoints and the operation. */
export class EtcdError extends Error {
  override name = 'EtcdError';
  readonly kind: EtcdErrorKind;
  constructor(
    readonly endpoints: readonly string[],
    readonly operation: string,
    override readonly cause: unknown,
    kind: EtcdErrorKind = etcdErrorKind(cause),
  ) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    const what = kind === 'unreachable' ? 'unreachable' : kind === 'auth' ? 'refused our credentials' : 'error';
    super(`etcd at ${endpoints.join(',')} ${what}: ${operation}: ${msg}`);
    this.kind = kind;
  }

  /** etcd refused the username/password (wrong credentials: retrying cannot help). */
  get authFailed(): boolean {
    return this.cause instanceof Error && castGrpcError(this.cause) instanceof EtcdAuthenticationFailedError;
  }

  /** etcd answered that the etcd lease does not exist (expired or revoked). */
  get leaseNotFound(): boolean {
    return this.cause instanceof Error && castGrpcError(this.cause) instanceof EtcdLeaseInvalidError;
  }
}

/** A key-value pair as stored: key and value as UTF-8 text, etcd lease id ('0': none), mod revision. */
export interface KeyValue {
  key: string;
  value: string;
  lease: string;
  modRevision: string;
}

/** The condition of a guarded put: the key is absent, or unchanged since it was read. */
export type PutCondition = { absent: true } | { modRevision: string };

export type PutIfResult = { written: true; modRevision: string } | { written: false; current: KeyValue | null };

export interface EtcdWatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

export interface EtcdWatchHandlers {
  /** The server accepted the watch. */
  onCreated?(): void;
  /** Events of one response, in order; `revision` is the response header revision (resume at +1). May be empty (progress notification). */
  onEvents(events: EtcdWatchEvent[], revision: string): void;
  /** The start revision was compacted; nothing more will arrive on this handle. Re-list and watch anew. */
  onCompacted(compactRevision: string): void;
  /** The stream failed or ended; nothing more will arrive on this handle. */
  onError(err: EtcdError): void;
}

export interface WatchHandle {
  cancel(): void;
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

/** etcd3's global policy: none. EtcdClient.call() retries itself, with a deadline per attempt. */
const NO_RETRY = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
} as unknown as GlobalPolicy;

function buildClientOptions(opts: EtcdClientOptions, gates: MemberGate[]): IOptions {
  const attemptTimeout = opts.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  const options: IOptions = {
    hosts: opts.endpoints,
    // Streams must live forever. Unary calls from EtcdClient.call() carry their own deadline; this
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
  // Like flanneld ≥ v0.20.1 (docs/compat.md §1 "etcd client"): client-certificate TLS only when both key
  // and cert are given; the CA is optional.
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

function toKeyValue(kv: RPC.IKeyValue): KeyValue {
  return { key: kv.key.toString(), value: kv.value.toString(), lease: kv.lease, modRevision: kv.mod_revision };
}

/** The range result of a txn's first response; etcd sets only the oneof member of the op that ran. */
function rangeResponse(res: RPC.ITxnResponse): RPC.IRangeResponse | undefined {
  return res.responses[0]?.response_range;
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  private readonly client: Etcd3;
  /** etcd3's connection pool: watches are opened through it directly to know which member they use. */
  private readonly pool: ConnectionPool;
  private readonly gates: MemberGate[] = [];
  private readonly callTimeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly watchConfirmTimeoutMs: number;

  /** Throws EtcdError when the client cannot be set up (unreadable TLS files, unsupported etcd3). */
  constructor(opts: EtcdClientOptions) {
    this.endpoints = [...opts.endpoints];
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.attemptTimeoutMs = Math.min(opts.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS, this.callTimeoutMs);
    this.watchConfirmTimeoutMs = opts.watchConfirmTimeoutMs ?? DEFAULT_WATCH_CONFIRM_TIMEOUT_MS;
    try {
      this.client = new Etcd3(buildClientOptions(opts, this.gates));
    } catch (err) {
      throw new EtcdError(this.endpoints, 'client setup', err, 'refused');
    }
    // Namespace.pool is protected in etcd3's typings (etcd3 1.1.x; checked here, not assumed).
    const pool = (this.client as unknown as { pool?: ConnectionPool }).pool;
    if (typeof pool?.withConnection !== 'function' || this.gates.length !== this.endpoints.length) {
      this.client.close();
      throw new EtcdError(
        this.endpoints,
        'client setup',
        new Error('unsupported etcd3 client version (no connection pool or member policies)'),
        'refused',
      );
    }
    this.pool = pool;
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
        if (last || Date.now() >= deadline || etcdErrorKind(err) !== 'unreachable') throw this.error(operation, err);
      }
    }
  }

  /** Operator-facing error; names the member the failure came from when there are several. */
  private error(operation: string, err: unknown): EtcdError {
    const member = typeof err === 'object' && err !== null ? failedOn.get(err) : undefined;
    if (err instanceof MemberSkippedError) {
      // Only possible if every member was skipped at once; say why they were marked down.
      const why = this.gates.map((g) => `${g.endpoint}: ${g.lastError ?? 'unknown'}`).join('; ');
      return new EtcdError(this.endpoints, operation, new Error(`not tried, every member is down (${why})`), 'unreachable');
    }
    return new EtcdError(this.endpoints, this.endpoints.length > 1 && member ? `${operation} (on ${member})` : operation, err);
  }

  /** The key's entry (null if absent) and the store revision it was read at. */
  async get(key: string): Promise<{ kv: KeyValue | null; revision: string }> {
    const res = await this.call(`get ${key}`, (o) => this.client.kv.range({ key: Buffer.from(key) }, o));
    const kv = res.kvs[0];
    return { kv: kv ? toKeyValue(kv) : null, revision: res.header.revision };
  }

  /** Every entry whose key starts with `prefix`, and the store revision they were read at. */
  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: string }> {
    const key = Buffer.from(prefix);
    const res = await this.call(`list ${prefix}`, (o) => this.client.kv.range({ key, range_end: prefixEnd(key) }, o));
    return { kvs: res.kvs.map(toKeyValue), revision: res.header.revision };
  }

  /** Grants an etcd lease of `ttlSec` seconds; `what` names its use in errors. Returns its id. */
  async grant(ttlSec: number, what: string): Promise<string> {
    const res = await this.call(`grant ${ttlSec}s lease for ${what}`, (o) => this.client.leaseClient.leaseGrant({ TTL: ttlSec }, o));
    if (res.error) throw new EtcdError(this.endpoints, `grant lease for ${what}`, new Error(res.error), 'refused');
    return res.ID;
  }

  /** Revokes an etcd lease (and deletes its keys); one that is already gone counts as revoked. */
  async revoke(id: string): Promise<void> {
    if (id === '0') return;
    try {
      await this.call(`revoke lease ${id}`, (o) => this.client.leaseClient.leaseRevoke({ ID: id }, o));
    } catch (err) {
      // Already gone: expired, or revoked by an attempt whose reply was lost to its deadline.
      if (err instanceof EtcdError && err.leaseNotFound) return;
      throw err;
    }
  }

  /**
   * Puts `value` under `key`, attached to etcd lease `leaseId` ('0': none), if `cond` holds, in one txn.
   * Not written: the key's current entry (null if absent). A write of an earlier attempt whose reply was
   * lost to its deadline is recognised as ours (same lease and value: the lease was granted for this
   * write alone) and reported as written.
   */
  async putIf(key: string, value: string, leaseId: string, cond: PutCondition): Promise<PutIfResult> {
    const k = Buffer.from(key);
    const compare: RPC.ICompare =
      'absent' in cond
        ? { key: k, target: 'Version', result: 'Equal', version: 0 }
        : { key: k, target: 'Mod', result: 'Equal', mod_revision: cond.modRevision };
    const res = await this.call(`${'absent' in cond ? 'create' : 'update'} ${key}`, (o) =>
      this.client.kv.txn(
        {
          compare: [compare],
          success: [{ request_put: { key: k, value: Buffer.from(value), lease: leaseId } }],
          failure: [{ request_range: { key: k } }],
        },
        o,
      ),
    );
    if (res.succeeded) return { written: true, modRevision: res.header.revision };
    const raw = rangeResponse(res)?.kvs[0];
    const current = raw ? toKeyValue(raw) : null;
    if (current && current.lease === leaseId && current.value === value) {
      return { written: true, modRevision: current.modRevision };
    }
    return { written: false, current };
  }

  async delete(key: string): Promise<void> {
    await this.call(`delete ${key}`, (o) => this.client.kv.deleteRange({ key: Buffer.from(key) }, o));
  }

  /**
   * Watches `key` (with `prefix`, every key starting with it) from `fromRevision` on. Until etcd confirms
   * the watch, a member that fails it hands over to the next member; after that any failure ends the
   * handle (onError) and the caller reopens it from its last revision + 1.
   */
  watch(key: string, opts: { prefix: boolean }, fromRevision: string, handlers: EtcdWatchHandlers): WatchHandle {
    const k = Buffer.from(key);
    const what = `watch ${key} from revision ${fromRevision}`;
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
      this.call('renew auth token', (o) => this.client.kv.range({ key: k, count_only: true }, o))
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
        const err = new WatchLostError(`watch not confirmed by etcd within ${this.watchConfirmTimeoutMs} ms`);
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
              // The reason is etcd's error text (no status code on a cancelled watch); etcd3 maps it.
              const err = castGrpcErrorMessage(`watch canceled by server: ${res.cancel_reason || 'no reason given'}`);
              if (err instanceof EtcdInvalidAuthTokenError) failAfterReauth(err);
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
              res.events.map((ev) => ({ type: ev.type === 'Delete' ? 'delete' : 'put', kv: toKeyValue(ev.kv) })),
              res.header.revision,
            );
          });
          s.on('error', (err) => {
            if (done || s !== stream) return; // our own cancel
            if (isMemberFailure(err)) turnFailed(h, err);
            else fail(err);
          });
          s.on('end', () => {
            if (s === stream) fail(new WatchLostError('watch stream ended'));
          });
          s.write({
            create_request: {
              key: k,
              range_end: opts.prefix ? prefixEnd(k) : undefined,
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

  close(): void {
    this.client.close();
  }
}
