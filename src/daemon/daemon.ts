// Daemon wiring and lifecycle: interface → VTEP MAC → etcd config → lease → data plane → subnet.env
// → peer watch, then renew until told to stop. The data plane is plugged in through DataPlaneHooks;
// without hooks only the control plane runs (what the control-plane tests exercise).
//
// Exit codes: 0 after SIGTERM/SIGINT (the lease stays in etcd, like flanneld, so a restart keeps
// the subnet); 1 on any fatal error, including losing our lease (flanneld exits 0 there; we don't,
// so supervisors and operators notice a node that lost its subnet).
import type { Logger } from 'pino';
import pino from 'pino';
import type { Options } from '../cli/flags';
import { findExternalInterface } from '../netlink/interfaces';
import { BackendConfigError, type DataPlaneHooks, type ResolvedBackend } from '../backend/backend';
import { resolveBackend } from '../backend/registry';
import { ConfigError, type NetworkConfig } from '../subnet/config';
import { formatIp4Net, isIp4, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseAttrs, LeaseEvent } from '../subnet/lease';
import { LeaseManager, leaseTimingFromEnv, type RevokeReason } from '../subnet/lease-manager';
import { LeaseWatcher } from '../subnet/lease-watcher';
import { ConfigNotFoundError, EtcdError, EtcdRegistry, type Registry } from '../subnet/registry';
import { readPreviousLease, writeSubnetEnv } from '../subnet/subnet-env';
import { loadOrCreateVtepMac, vtepMacPath } from '../subnet/vtep-mac';
import { IptablesManager } from '../iptables/iptables-manager';
import { startHealthServer, type HealthServer } from '../ops/health-server';
import { createMetrics, type DaemonMetrics, type DataplaneSnapshot } from '../ops/metrics';
import { parseIp4Net as parseNet } from '../subnet/ip4';
import { parseSubnetEnv } from '../subnet/subnet-env';
import fs from 'node:fs';

export type { DataPlaneContext, DataPlaneHooks } from '../backend/backend';

export interface DaemonExtras {
  /** Data plane hooks to use instead of the backend's own (tests that record the calls). */
  hooks?: DataPlaneHooks;
  /**
   * Build the configured backend's data plane (resolved from the network config's Backend). Off
   * unless asked for, so an embedded control-plane daemon creates no devices or routes; main() turns it on.
   */
  dataPlane?: boolean;
  log?: Logger;
  /** Aborting it stops the daemon cleanly (exit code 0); main() wires SIGTERM/SIGINT to it. */
  signal?: AbortSignal;
  /** Called once subnet.env is written; for tests and embedding. */
  onReady?(info: { lease: Lease; mtu: number; vtepMac: string }): void;
  /**
   * Called synchronously by runDaemon with the daemon's fatal-error reporter, for hooks that were
   * built before the daemon and need to report asynchronous fatal errors (same as ctx.fatal).
   */
  connectFatal?(report: (err: Error) => void): void;
  /** Registry factory, for tests that need a differently configured client. */
  createRegistry?(options: Options): Registry;
  /**
   * Whether to program iptables (-ip-masq, -iptables-forward-rules). Off unless asked for, so an
   * embedded or in-process test daemon never touches the host's firewall; main() turns it on.
   */
  iptables?: boolean;
}

const BUILTIN_ERROR_NAMES = new Set([
  'Error',
  'TypeError',
  'RangeError',
  'ReferenceError',
  'SyntaxError',
  'EvalError',
  'URIError',
  'AggregateError',
]);

export class DaemonError extends Error {
  override name = 'DaemonError';
}

class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}

export function createLogger(verbosity: number): Logger {
  // klog-style -v: 0 = info, 1..4 = debug, 5+ = trace. Sync to stderr so the last lines before exit are kept.
  const level = verbosity >= 5 ? 'trace' : verbosity >= 1 ? 'debug' : 'info';
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

type End = { kind: 'signal' } | { kind: 'fatal'; err: Error };

class Daemon {
  private end!: (e: End) => void;
  private readonly ended: Promise<End>;
  private endReason: End | null = null;
  private registry: Registry | null = null;
  private manager: LeaseManager | null = null;
  private watcher: LeaseWatcher | null = null;
  private healthz: HealthServer | null = null;
  private metrics: DaemonMetrics | null = null;
  private iptables: IptablesManager | null = null;
  private hooks: DataPlaneHooks | null = null;
  private hooksStarted = false;
  private applyChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly options: Options,
    private readonly env: NodeJS.ProcessEnv,
    private readonly extras: DaemonExtras,
    private readonly log: Logger,
  ) {
    this.ended = new Promise((resolve) => {
      this.end = (e) => {
        if (this.endReason) return;
        this.endReason = e;
        resolve(e);
      };
    });
    extras.connectFatal?.((err) => this.dataPlaneFatal(err));
    const signal = extras.signal;
    if (signal) {
      if (signal.aborted) this.end({ kind: 'signal' });
      else signal.addEventListener('abort', () => this.end({ kind: 'signal' }), { once: true });
    }
  }

  private dataPlaneFatal(err: Error): void {
    this.end({ kind: 'fatal', err: new DaemonError(`data plane failed: ${err.message}`) });
  }

  async run(): Promise<number> {
    let code = 0;
    try {
      await this.startup();
      const why = await this.ended;
      if (why.kind === 'fatal') throw why.err;
      this.log.info(this.manager?.acquired ? 'shutting down (the lease stays in etcd)' : 'shutting down');
    } catch (err) {
      code = 1;
      this.logFatal(err);
    }
    try {
      await this.shutdown();
    } catch (err) {
      code = 1;
      this.logFatal(err);
    }
    return code;
  }

  private logFatal(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    // Our typed errors (each class sets its own name) carry the operator context in the message;
    // JavaScript's built-in errors mean a bug and get a stack.
    if (!BUILTIN_ERROR_NAMES.has(e.name)) this.log.fatal({ errType: e.name }, e.message);
    else this.log.fatal({ err: e }, `unexpected error: ${e.message}`);
  }

  private get stopping(): boolean {
    return this.endReason !== null;
  }

  /** Sleeps unless the daemon is told to stop meanwhile. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      void this.ended.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async startup(): Promise<void> {
    const o = this.options;
    const log = this.log;

    if (o.healthzPort > 0) {
      this.metrics = createMetrics({ dataplane: this.dataplaneStats(), lease: this.leaseStatus() });
      this.healthz = await startHealthServer({ ip: o.healthzIp, port: o.healthzPort, registry: this.metrics.registry, log });
      log.info(`healthz listening on ${o.healthzIp}:${this.healthz.address.port} (/healthz, /readyz, /metrics)`);
    }

    const iface = findExternalInterface({ iface: o.iface, ifaceRegex: o.ifaceRegex });
    const publicIp = o.publicIp !== '' ? o.publicIp : iface.ip;
    if (!isIp4(publicIp)) throw new DaemonError(`public IP "${publicIp}" is not an IPv4 address`);
    log.info({ iface: iface.name, ifaceIp: iface.ip, publicIp }, `using interface ${iface.name} with public IP ${publicIp}`);

    this.registry = this.extras.createRegistry
      ? this.extras.createRegistry(o)
      : new EtcdRegistry({
          endpoints: o.etcdEndpoints,
          prefix: o.etcdPrefix,
          keyfile: o.etcdKeyfile,
          certfile: o.etcdCertfile,
          cafile: o.etcdCafile,
          username: o.etcdUsername,
          password: o.etcdPassword,
        });
    const registry = this.registry;

    const config = await this.waitForConfig(registry);
    if (!config) return;
    // A Backend tsflanneld cannot honour is fatal before anything is written (no MAC file, lease or subnet.env).
    let backend: ResolvedBackend;
    try {
      backend = resolveBackend(config.backend);
    } catch (err) {
      if (!(err instanceof BackendConfigError)) throw err;
      throw new BackendConfigError(`${registry.prefix}/config: ${err.message}`);
    }
    if (!config.enableIPv4 || !config.network || config.enableIPv6) {
      throw new DaemonError(`${registry.prefix}/config: tsflanneld supports IPv4-only networks (EnableIPv4 true, EnableIPv6 false)`);
    }
    log.info({ backend: backend.type, ...backend.summary }, `backend ${backend.type}`);

    let vtepMac = '';
    if (backend.needsVtepMac) {
      const macFile = vtepMacPath(o.subnetFile);
      const mac = await loadOrCreateVtepMac(macFile);
      if (mac.warning) log.warn(mac.warning);
      log.info({ file: macFile, created: mac.created }, `VTEP MAC ${mac.mac}`);
      vtepMac = mac.mac;
    }

    const attrs: LeaseAttrs = { PublicIP: publicIp, PublicIPv6: null, ...backend.leaseAttrs(vtepMac) };
    const previous = await readPreviousLease(o.subnetFile);
    if (previous.warning) log.warn(previous.warning);
    const timing = leaseTimingFromEnv(this.env);
    const manager = new LeaseManager({
      registry,
      log,
      config,
      attrs,
      previous: { subnet: previous.subnet, ipv6Subnet: previous.ipv6Subnet },
      renewMarginMinutes: o.subnetLeaseRenewMargin,
      ttlSec: timing.ttlSec,
      renewRetrySec: timing.renewRetrySec,
    });
    this.manager = manager;
    const lease = await this.acquire(manager);
    if (!lease) return;
    manager.on('revoked', (l: Lease, reason: RevokeReason, by: LeaseAttrs | null) => {
      const key = `${registry.prefix}/subnets/${l.key}`;
      const what = reason === 'deleted' ? 'was deleted from etcd' : `was taken over by ${by?.PublicIP ?? 'another node'}`;
      this.end({ kind: 'fatal', err: new LeaseLostError(`lease for ${formatIp4Net(l.subnet)} ${what} (key ${key}); shutting down`) });
    });
    manager.start();

    const mtu = (backend.underlayMtu ?? iface.mtu) - backend.overhead;
    const hooks =
      this.extras.hooks ??
      (this.extras.dataPlane === true
        ? backend.createHooks({ tunName: o.tunName, offload: o.offload, log, fatal: (err) => this.dataPlaneFatal(err) })
        : null);
    this.hooks = hooks;
    if (hooks) {
      if (this.stopping) return;
      this.hooksStarted = true;
      await hooks.start({ lease, config, mtu, vtepMac, publicIp, iface, fatal: (err) => this.dataPlaneFatal(err) });
    }
    if (this.stopping) return;

    // Like flanneld: traffic rules are in place before subnet.env tells the container runtime to go.
    if ((o.ipMasq || o.iptablesForwardRules) && this.extras.iptables === true) {
      this.iptables = new IptablesManager({
        network: config.network,
        subnet: lease.subnet,
        masq: o.ipMasq,
        forwardRules: o.iptablesForwardRules,
        resyncSeconds: o.iptablesResync,
        ...(o.ipMasqFullyRandomDisable ? { randomFully: false } : {}),
        previous: this.previousNetworkAndSubnet(o.subnetFile),
        log,
      });
      await this.iptables.start();
      log.info({ masq: o.ipMasq, forwardRules: o.iptablesForwardRules }, 'iptables rules in place');
    }
    if (this.stopping) return;

    await writeSubnetEnv(o.subnetFile, {
      network: config.network,
      subnet: lease.subnet,
      ipv6Network: null,
      ipv6Subnet: null,
      mtu,
      ipMasq: o.ipMasq,
    });
    log.info({ file: o.subnetFile }, `wrote ${o.subnetFile} (subnet ${formatIp4Net(lease.subnet)}, MTU ${mtu})`);
    this.healthz?.setReady(true);
    this.extras.onReady?.({ lease, mtu, vtepMac });

    this.watcher = new LeaseWatcher({
      registry,
      log,
      ownSubnet: lease.subnet,
      onEvents: (events) => this.deliver(events),
    });
    this.watcher.start();
  }

  /** FLANNEL_NETWORK/FLANNEL_SUBNET of the previous run, so rules for an old subnet can be removed. */
  private previousNetworkAndSubnet(file: string): { network: Ip4Net | null; subnet: Ip4Net | null } {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return { network: null, subnet: null }; // no previous run; readPreviousLease already warned if unreadable
    }
    const env = parseSubnetEnv(text);
    const net = (key: string): Ip4Net | null => {
      const v = env.get(key);
      try {
        return v ? parseNet(v) : null;
      } catch {
        return null;
      }
    };
    return { network: net('FLANNEL_NETWORK'), subnet: net('FLANNEL_SUBNET') };
  }

  private dataplaneStats(): { snapshot(): DataplaneSnapshot } {
    const empty: DataplaneSnapshot = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: {}, peers: [], offloadRung: 'none' };
    return { snapshot: () => (this.hooksStarted ? this.hooks?.stats?.() : null) ?? empty };
  }

  private leaseStatus(): { leaseExpiry(): number | null; etcdConnected(): boolean; subnet(): string } {
    return {
      leaseExpiry: () => this.manager?.expiry() ?? null,
      etcdConnected: () => (this.watcher ? this.watcher.connected : this.manager?.acquired === true),
      subnet: () => (this.manager?.acquired ? formatIp4Net(this.manager.current().subnet) : ''),
    };
  }

  /** Reads the network config, retrying every 1 s like flanneld while it is missing, invalid or etcd is down. */
  private async waitForConfig(registry: Registry): Promise<NetworkConfig | null> {
    let lastKind = '';
    while (!this.stopping) {
      try {
        const config = await registry.getNetworkConfig();
        if (lastKind !== '') this.log.info(`found network config in ${registry.prefix}/config`);
        return config;
      } catch (err) {
        if (!(err instanceof ConfigNotFoundError || err instanceof ConfigError || err instanceof EtcdError)) throw err;
        const message =
          err instanceof ConfigNotFoundError
            ? `${err.message}, retrying`
            : err instanceof ConfigError
              ? `invalid network config in ${registry.prefix}/config: ${err.message}; retrying`
              : `${err.message}; retrying`;
        // Once per kind of problem, not once a second (etcd errors vary by endpoint and breaker state).
        const kind = err instanceof EtcdError ? 'etcd' : message;
        if (kind !== lastKind) this.log.warn(message);
        else this.log.debug(message);
        lastKind = kind;
      }
      await this.pause(1000);
    }
    return null;
  }

  /** Acquires the lease; etcd outages are waited out (1 s retry), allocation failures are fatal. */
  private async acquire(manager: LeaseManager): Promise<Lease | null> {
    let reported = false;
    while (!this.stopping) {
      try {
        return await manager.acquire();
      } catch (err) {
        if (!(err instanceof EtcdError)) throw err;
        const message = `acquiring a lease failed: ${err.message}; retrying`;
        if (!reported) this.log.warn(message);
        else this.log.debug(message);
        reported = true;
      }
      await this.pause(1000);
    }
    return null;
  }

  /** Serializes batches into the data plane; without hooks the batches are only logged. */
  private deliver(events: LeaseEvent[]): void {
    for (const ev of events) {
      const l = ev.lease;
      this.log.info(
        { key: l.key, publicIp: l.attrs.PublicIP, backendType: l.attrs.BackendType, backendData: l.attrs.BackendData },
        `peer lease ${ev.type}: ${formatIp4Net(l.subnet)} at ${l.attrs.PublicIP}`,
      );
    }
    const hooks = this.hooks;
    if (!hooks) return;
    this.applyChain = this.applyChain.then(async () => {
      if (this.stopping) return;
      try {
        await hooks.applyEvents(events);
      } catch (err) {
        this.end({
          kind: 'fatal',
          err: new DaemonError(`data plane failed to apply ${events.length} lease event(s): ${(err as Error).message}`),
        });
      }
    });
  }

  private async shutdown(): Promise<void> {
    this.end({ kind: 'signal' }); // no-op if already ended; makes pending pauses return
    this.watcher?.stop();
    this.manager?.stop();
    let failure: Error | null = null;
    await this.applyChain;
    if (this.hooksStarted && this.hooks) {
      try {
        await this.hooks.stop();
      } catch (err) {
        failure = new DaemonError(`data plane failed to stop: ${(err as Error).message}`);
      }
    }
    await this.iptables?.stop();
    await this.healthz?.close();
    this.registry?.close();
    if (failure) throw failure;
  }
}

/** Runs the daemon until stopped (signal aborted → 0) or a fatal error (→ 1); returns the exit code. */
export async function runDaemon(options: Options, env: NodeJS.ProcessEnv, extras: DaemonExtras = {}): Promise<number> {
  const log = extras.log ?? createLogger(options.v);
  return new Daemon(options, env, extras, log).run();
}
