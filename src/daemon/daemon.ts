// Daemon wiring and lifecycle: interface → VTEP MAC → etcd config → lease → data plane → subnet.env
// → peer watch, then renew until told to stop. The data plane is plugged in through DataPlaneHooks;
// without hooks only the control plane runs (what the control-plane tests exercise).
//
// Exit codes: 0 after SIGTERM/SIGINT (the lease stays in etcd, like flanneld, so a restart keeps
// the subnet); 1 on any fatal error, including losing our lease (flanneld exits 0 there; we don't,
// so supervisors and operators notice a node that lost its subnet).
import { createLogger, type Log } from '../ops/log';
import type { Options } from '../cli/flags';
import { findExternalInterface, sendSourceAddress, type ExternalInterface } from '../netlink/interfaces';
import { UnderlayWatch } from '../netlink/underlay-watch';
import { CONFIG_CHECK_SECONDS, ConfigMonitor } from './config-monitor';
import { ConfigError, type NetworkConfig } from '../subnet/config';
import { isIp4, type Ip4Net } from '../subnet/ip4';
import type { Lease, LeaseAttrs, LeaseEvent } from '../subnet/lease';
import { LeaseManager, describeSubnets, type RevokeReason } from '../subnet/lease-manager';
import { LeaseWatcher } from '../subnet/lease-watcher';
import { ConfigNotFoundError, EtcdError, EtcdRegistry, type Registry } from '../subnet/registry';
import { leaseKeyPath } from '../subnet/lease-codec';
import { readPreviousLease, writeSubnetEnv } from '../subnet/subnet-env';
import { loadOrCreateVtepMac, storeVtepMac, vtepMacPath, vtepMacV6Path } from '../subnet/vtep-mac';
import { findExternalInterface6, ipv6AddressOf } from '../netlink/interfaces6';
import { parseAddr6, parseCidr6 } from '../subnet/cidr6';
import { formatIp6, type Ip6Net } from '../subnet/ip6';
import type { VxlanBackendData } from '../subnet/lease';
import { IptablesManager } from '../iptables/iptables-manager';
import { startHealthServer, type HealthServer } from '../ops/health-server';
import type { DaemonMetrics, DataplaneSnapshot } from '../ops/metrics';
import { logLeaseEvents } from './lease-event-log';
import { StartupPhases } from './startup-phases';

/** VXLAN encapsulation overhead flanneld subtracts from the underlay MTU (docs/compat.md §5.4). */
export const VXLAN_OVERHEAD = 50;

/** What the data plane needs to hold its device and sockets before any lease is written. */
export interface PrepareContext {
  config: NetworkConfig;
  /** Overlay MTU: (Backend.MTU or the external interface's MTU) − 50. */
  mtu: number;
  /** The VTEP MAC loaded from (or just created in) the MAC file. */
  vtepMac: string;
  publicIp: string;
  iface: ExternalInterface;
  /** Local address the send sockets bind to: PublicIP when it is on this host, else the interface address. */
  sendSource: string;
}

export interface Prepared {
  /** The VTEP MAC to publish: ctx.vtepMac, or the MAC of a kernel flannel.N device taken over. */
  vtepMac: string;
}

export interface DataPlaneContext {
  lease: Lease;
  config: NetworkConfig;
  /** Overlay MTU: (Backend.MTU or the external interface's MTU) − 50. */
  mtu: number;
  vtepMac: string;
  publicIp: string;
  iface: ExternalInterface;
  /** Reports an asynchronous fatal data-plane error (e.g. persistent TUN I/O failure): logged once, exit 1. */
  fatal(err: Error): void;
}

/**
 * The data plane and route manager, as seen by the daemon. Calls are serialized: start() once
 * (before subnet.env is written), then applyEvents() batches in etcd order — the first call is the
 * initial snapshot of peer leases as 'added' events, delivered even when empty so stale state from
 * an earlier run can be pruned — then stop() once on shutdown (the daemon's lease is kept, so the
 * data plane may keep its kernel state too). Our own lease never appears in events. A rejected
 * promise is fatal for the daemon (exit 1).
 */
export interface DataPlaneHooks {
  /**
   * Takes the device and the UDP port (everything that can fail on a busy host) before the lease is
   * written, so a start that cannot serve never changes etcd. Optional; called once before start().
   */
  prepare?(ctx: PrepareContext): Promise<Prepared>;
  start(ctx: DataPlaneContext): Promise<void>;
  applyEvents(events: LeaseEvent[]): Promise<void>;
  stop(): Promise<void>;
  /**
   * Whether this data plane carries IPv6 (EnableIPv6). Without it the daemon refuses an IPv6
   * network config instead of publishing IPv6 subnets that nothing forwards.
   */
  readonly ipv6?: boolean;
  /** Packet counters for /metrics; null before start(). */
  stats?(): DataplaneSnapshot | null;
}

/** Lease TTL and renewal retry in seconds; unset: flannel's 24 h and 60 s (lease-manager.ts). */
export interface LeaseTiming {
  ttlSec?: number;
  renewRetrySec?: number;
}

export interface DaemonExtras {
  hooks?: DataPlaneHooks;
  log?: Log;
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
  /** Shorter lease timing, for tests that watch renewals happen. */
  leaseTiming?: LeaseTiming;
  /** Seconds between re-reads of `<prefix>/config` (default CONFIG_CHECK_SECONDS), for tests. */
  configCheckSeconds?: number;
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
  private readonly iptables: IptablesManager[] = [];
  private underlay: UnderlayWatch | null = null;
  private configMonitor: ConfigMonitor | null = null;
  private hooksStarted = false;
  private applyChain: Promise<void> = Promise.resolve();
  /** The queued, not yet started batch that newly arriving events join (see deliver()). */
  private openBatch: LeaseEvent[] | null = null;
  private snapshotQueued = false;
  private readonly phases = new StartupPhases();

  constructor(
    private readonly options: Options,
    private readonly extras: DaemonExtras,
    private readonly log: Log,
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
    // Our typed errors (each class sets its own name) carry the operator context in the message, and
    // so do system errors (an errno code such as EACCES: the message names the call and the path);
    // other built-in errors mean a bug and get a stack.
    const code = (e as NodeJS.ErrnoException).code;
    if (!BUILTIN_ERROR_NAMES.has(e.name)) this.log.fatal({ errType: e.name }, e.message);
    else if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) this.log.fatal({ errType: code }, e.message);
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
    this.phases.mark('modules');

    if (o.healthzPort > 0) {
      // Loaded only when asked for: prom-client costs ~0.1 s of startup (-healthz-port is 0 by default).
      const { createMetrics } = await import('../ops/metrics');
      this.metrics = createMetrics({ dataplane: this.dataplaneStats(), lease: this.leaseStatus() });
      this.healthz = await startHealthServer({ ip: o.healthzIp, port: o.healthzPort, registry: this.metrics.registry, log });
      log.info(`healthz listening on ${o.healthzIp}:${this.healthz.address.port} (/healthz, /readyz, /metrics)`);
    }

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
    this.phases.mark('config');
    if (config.backend.type !== 'vxlan') {
      throw new DaemonError(
        `backend type "${config.backend.type}" in ${registry.prefix}/config is not supported: tsflanneld only implements "vxlan"` +
          (config.backend.type === 'udp' ? ' (flannel selects "udp" when the Backend object is missing)' : ''),
      );
    }
    if (!config.enableIPv4 && !config.enableIPv6) {
      // flannel: ipmatch.GetIPFamily fails, exit 1.
      throw new DaemonError(`none defined stack: ${registry.prefix}/config disables both EnableIPv4 and EnableIPv6; enable at least one`);
    }
    if (config.enableIPv6 && this.extras.hooks && this.extras.hooks.ipv6 !== true) {
      throw new DaemonError(
        `${registry.prefix}/config has EnableIPv6 true, but this tsflanneld data plane forwards IPv4 only; set EnableIPv6 false`,
      );
    }

    const { iface, publicIp, publicIpv6, sendSource } = this.chooseUnderlay(config);
    const macFile = vtepMacPath(o.subnetFile);
    let vtepMac = await this.vtepMac(macFile, 'VTEP MAC');
    const mac6 = config.enableIPv6 ? await this.vtepMac(vtepMacV6Path(o.subnetFile), 'IPv6 VTEP MAC') : null;

    // Device and port first: a start that cannot serve must not touch etcd (see DataPlaneHooks.prepare).
    const mtu = (config.backend.mtu > 0 ? config.backend.mtu : iface.mtu) - VXLAN_OVERHEAD;
    const hooks = this.extras.hooks;
    if (hooks?.prepare) {
      if (this.stopping) return;
      this.hooksStarted = true;
      const prepared = await hooks.prepare({ config, mtu, vtepMac, publicIp, iface, sendSource });
      if (prepared.vtepMac !== vtepMac) {
        await storeVtepMac(macFile, prepared.vtepMac);
        log.info({ file: macFile, previous: vtepMac }, `VTEP MAC is now ${prepared.vtepMac} (kept from the device taken over)`);
        vtepMac = prepared.vtepMac;
      }
    }

    const backendData = (m: string): VxlanBackendData => ({ VNI: config.backend.vni, VtepMAC: m });
    // flannel HEAD (vxlan newSubnetAttrs): each family's data only when that family is enabled;
    // PublicIP stays "0.0.0.0" (Go's zero IP4) on an IPv6-only network.
    const attrs: LeaseAttrs = {
      PublicIP: config.enableIPv4 ? publicIp : '0.0.0.0',
      PublicIPv6: config.enableIPv6 ? publicIpv6 : null,
      BackendType: 'vxlan',
      ...(config.enableIPv4 ? { BackendData: backendData(vtepMac) } : {}),
      ...(mac6 !== null ? { BackendV6Data: backendData(mac6) } : {}),
    };
    // Read once: the same values serve lease reuse and the removal of old iptables rules.
    const previous = await readPreviousLease(o.subnetFile);
    if (previous.warning) log.warn(previous.warning);
    const manager = new LeaseManager({
      registry,
      log,
      config,
      attrs,
      previous: { subnet: previous.subnet, ipv6Subnet: previous.ipv6Subnet },
      renewMarginMinutes: o.subnetLeaseRenewMargin,
      ...(this.extras.leaseTiming?.ttlSec !== undefined ? { ttlSec: this.extras.leaseTiming.ttlSec } : {}),
      ...(this.extras.leaseTiming?.renewRetrySec !== undefined ? { renewRetrySec: this.extras.leaseTiming.renewRetrySec } : {}),
    });
    this.manager = manager;
    const lease = await this.acquire(manager);
    if (!lease) return;
    this.phases.mark('lease');
    manager.on('revoked', (l: Lease, reason: RevokeReason, by: LeaseAttrs | null) => {
      const key = leaseKeyPath(registry.prefix, l.key);
      const taker = config.enableIPv4 ? by?.PublicIP : by?.PublicIPv6;
      const what = reason === 'deleted' ? 'was deleted from etcd' : `was taken over by ${taker ?? 'another node'}`;
      this.end({ kind: 'fatal', err: new LeaseLostError(`lease for ${describeSubnets(l)} ${what} (key ${key}); shutting down`) });
    });
    manager.start();

    if (hooks) {
      if (this.stopping) return;
      this.hooksStarted = true;
      await hooks.start({ lease, config, mtu, vtepMac, publicIp, iface, fatal: (err) => this.dataPlaneFatal(err) });
      this.phases.mark('data plane');
    }
    if (this.stopping) return;

    // Like flanneld: traffic rules are in place before subnet.env tells the container runtime to go.
    if ((o.ipMasq || o.iptablesForwardRules) && this.extras.iptables === true) {
      // One manager per enabled family: iptables for IPv4, ip6tables for IPv6 (flannel's IPv6 rules).
      const families: Array<{ network: Ip4Net | Ip6Net; subnet: Ip4Net | Ip6Net }> = [];
      if (config.network !== null) families.push({ network: config.network, subnet: lease.subnet });
      if (config.ipv6Network !== null && lease.ipv6Subnet !== null) {
        families.push({ network: parseCidr6(config.ipv6Network), subnet: parseCidr6(lease.ipv6Subnet) });
      }
      for (const f of families) {
        const mgr = new IptablesManager({
          ...f,
          masq: o.ipMasq,
          forwardRules: o.iptablesForwardRules,
          resyncSeconds: o.iptablesResync,
          ...(o.ipMasqFullyRandomDisable ? { randomFully: false } : {}),
          ...(typeof f.network.ip === 'number' ? { previous: { network: previous.network, subnet: previous.subnet } } : {}),
          log,
        });
        this.iptables.push(mgr);
        await mgr.start();
      }
      log.info({ masq: o.ipMasq, forwardRules: o.iptablesForwardRules, families: families.length }, 'iptables rules in place');
    }
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the awaits above
    if (this.stopping) return;

    await writeSubnetEnv(o.subnetFile, {
      network: config.enableIPv4 ? config.network : null,
      subnet: config.enableIPv4 ? lease.subnet : null,
      ipv6Network: config.ipv6Network,
      ipv6Subnet: config.enableIPv6 ? lease.ipv6Subnet : null,
      mtu,
      ipMasq: o.ipMasq,
    });
    log.info({ file: o.subnetFile }, `wrote ${o.subnetFile} (subnet ${describeSubnets(lease)}, MTU ${mtu})`);
    this.phases.mark('subnet.env');
    this.healthz?.setReady(true);
    this.extras.onReady?.({ lease, mtu, vtepMac });
    if (sendSource !== '') this.watchUnderlay(iface, sendSource);
    this.configMonitor = new ConfigMonitor(registry, config, log, this.extras.configCheckSeconds ?? CONFIG_CHECK_SECONDS);
    this.configMonitor.start();

    this.watcher = new LeaseWatcher({
      registry,
      log,
      ownSubnet: lease.subnet,
      ownIpv6Subnet: lease.ipv6Subnet,
      onEvents: (events) => {
        if (!this.snapshotQueued) this.phases.mark('snapshot', `${events.length} leases`);
        this.deliver(events);
      },
    });
    this.watcher.start(manager.takeListing() ?? undefined);
  }

  /**
   * Reports an underlay that lost the address we send from (DHCP change, operator): logged once per
   * change, /readyz 503 until it is back. tsflanneld does not follow a new address by itself: peers
   * know us by the published PublicIP, so a restart (which re-selects and re-publishes) is the way
   * to move (README "Underlay address changes").
   */
  private watchUnderlay(iface: ExternalInterface, sendSource: string): void {
    this.underlay = new UnderlayWatch({
      expect: { name: iface.name, index: iface.index, ip: iface.ip, sendSource },
      onChange: (state) => {
        if (!state.ok) {
          this.log.error(
            { iface: iface.name, ifaceIp: iface.ip, sendSource },
            `underlay changed: ${state.reason}; overlay traffic to and from this node fails, /readyz reports not ready ` +
              'until the address is back (restart tsflanneld to move to a new address)',
          );
          this.healthz?.setReady(false);
        } else {
          this.log.info(
            { iface: iface.name, ifaceIp: iface.ip, sendSource },
            `underlay address ${sendSource} on ${iface.name} is back; ready`,
          );
          this.healthz?.setReady(true);
        }
      },
      onError: (err) => this.log.warn({ err: err.message }, `checking the underlay interface ${iface.name} failed: ${err.message}`),
    });
    this.underlay.start();
  }

  /**
   * The underlay interface and the public addresses to publish (docs/compat.md §7): IPv4 (and
   * dual-stack) networks pick the interface by its IPv4 address and take its first usable IPv6
   * address; IPv6-only networks pick it by IPv6 (interfaces6.ts). -public-ip / -public-ipv6 override.
   */
  private chooseUnderlay(config: NetworkConfig): {
    iface: ExternalInterface;
    publicIp: string;
    publicIpv6: string | null;
    sendSource: string;
  } {
    const o = this.options;
    const log = this.log;
    let iface: ExternalInterface;
    let publicIp = '';
    let publicIpv6: string | null = null;
    let sendSource = '';
    if (config.enableIPv4) {
      iface = findExternalInterface({ iface: o.iface, ifaceRegex: o.ifaceRegex, ifaceCanReach: o.ifaceCanReach, publicIp: o.publicIp });
      publicIp = o.publicIp !== '' ? o.publicIp : iface.ip;
      if (!isIp4(publicIp)) throw new DaemonError(`public IP "${publicIp}" is not an IPv4 address`);
      sendSource = sendSourceAddress(publicIp, iface);
      if (config.enableIPv6) publicIpv6 = o.publicIpv6 !== '' ? o.publicIpv6 : ipv6AddressOf(iface.name);
    } else {
      const i6 = findExternalInterface6({ iface: o.iface, ifaceRegex: o.ifaceRegex });
      // No IPv4 address is used on an IPv6-only network.
      iface = { name: i6.name, index: i6.index, ip: '', mtu: i6.mtu };
      publicIpv6 = o.publicIpv6 !== '' ? o.publicIpv6 : i6.ip6;
    }
    if (publicIpv6 !== null) publicIpv6 = formatIp6(parseAddr6(publicIpv6));
    if (o.publicIpv6 !== '' && !config.enableIPv6)
      log.warn(`-public-ipv6 ${o.publicIpv6} is unused: EnableIPv6 is false in the network config`);
    log.info(
      { iface: iface.name, ifaceIp: iface.ip, publicIp, publicIpv6, sendSource },
      `using interface ${iface.name} with public IP ${[publicIp, publicIpv6].filter((x) => x).join(' and ')}` +
        (sendSource !== '' ? `; VXLAN leaves from ${sendSource}` : ''),
    );
    return { iface, publicIp, publicIpv6, sendSource };
  }

  private async vtepMac(file: string, what: string): Promise<string> {
    const mac = await loadOrCreateVtepMac(file);
    if (mac.warning) this.log.warn(mac.warning);
    this.log.info({ file, created: mac.created }, `${what} ${mac.mac}`);
    return mac.mac;
  }

  private dataplaneStats(): { snapshot(): DataplaneSnapshot } {
    const empty: DataplaneSnapshot = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: {}, peers: [], offloadRung: 'none' };
    return { snapshot: () => (this.hooksStarted ? this.extras.hooks?.stats?.() : null) ?? empty };
  }

  private leaseStatus(): { leaseExpiry(): number | null; etcdConnected(): boolean; subnet(): string } {
    return {
      leaseExpiry: () => this.manager?.expiry() ?? null,
      etcdConnected: () => (this.watcher ? this.watcher.connected : this.manager?.acquired === true),
      subnet: () => (this.manager?.acquired ? describeSubnets(this.manager.current()) : ''),
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
        if (err instanceof EtcdError && err.authFailed) throw this.credentialsRefused(err);
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

  /** Wrong credentials: fatal at once, as in flanneld (its etcd client fails to start, exit 1). */
  private credentialsRefused(err: EtcdError): DaemonError {
    return new DaemonError(
      `etcd refused the credentials of user "${this.options.etcdUsername}": ${err.message}; ` +
        'check -etcd-username and -etcd-password (FLANNELD_ETCD_USERNAME, FLANNELD_ETCD_PASSWORD)',
    );
  }

  /** Acquires the lease; etcd outages are waited out (1 s retry), allocation failures are fatal. */
  private async acquire(manager: LeaseManager): Promise<Lease | null> {
    let reported = false;
    while (!this.stopping) {
      try {
        return await manager.acquire();
      } catch (err) {
        if (!(err instanceof EtcdError)) throw err;
        if (err.authFailed) throw this.credentialsRefused(err);
        const message = `acquiring a lease failed: ${err.message}; retrying`;
        if (!reported) this.log.warn(message);
        else this.log.debug(message);
        reported = true;
      }
      await this.pause(1000);
    }
    return null;
  }

  /**
   * Serializes batches into the data plane; without hooks the batches are only logged. Events that
   * arrive while earlier ones are being applied are coalesced into one pending batch (in etcd order),
   * so a burst of puts reaches the data plane as a few applyEvents calls. The first batch, the
   * snapshot, is applied on its own. O(events).
   */
  private deliver(events: LeaseEvent[]): void {
    logLeaseEvents(this.log, events);
    const hooks = this.extras.hooks;
    if (!hooks) {
      if (!this.snapshotQueued) this.logReady();
      this.snapshotQueued = true;
      return;
    }
    if (this.openBatch !== null) {
      for (const ev of events) this.openBatch.push(ev);
      return;
    }
    const batch = events.slice();
    if (this.snapshotQueued) this.openBatch = batch;
    const snapshot = !this.snapshotQueued;
    this.snapshotQueued = true;
    this.applyChain = this.applyChain.then(async () => {
      if (this.openBatch === batch) this.openBatch = null;
      if (this.stopping) return;
      try {
        await hooks.applyEvents(batch);
        if (snapshot) {
          this.phases.mark('routes', `${batch.length} leases`);
          this.logReady();
        }
      } catch (err) {
        this.end({
          kind: 'fatal',
          err: new DaemonError(`data plane failed to apply ${batch.length} lease event(s): ${(err as Error).message}`),
        });
      }
    });
  }

  /** One line with the startup phase times (process start → first snapshot applied). */
  private logReady(): void {
    this.log.info({ phasesMs: this.phases.record() }, `ready in ${this.phases.summary()}`);
  }

  private async shutdown(): Promise<void> {
    this.end({ kind: 'signal' }); // no-op if already ended; makes pending pauses return
    this.watcher?.stop();
    this.manager?.stop();
    this.underlay?.stop();
    this.configMonitor?.stop();
    let failure: Error | null = null;
    await this.applyChain;
    if (this.hooksStarted && this.extras.hooks) {
      try {
        await this.extras.hooks.stop();
      } catch (err) {
        failure = new DaemonError(`data plane failed to stop: ${(err as Error).message}`);
      }
    }
    for (const mgr of this.iptables) await mgr.stop();
    await this.healthz?.close();
    this.registry?.close();
    if (failure) throw failure;
  }
}

/** Runs the daemon until stopped (signal aborted → 0) or a fatal error (→ 1); returns the exit code. */
export async function runDaemon(options: Options, extras: DaemonExtras = {}): Promise<number> {
  const log = extras.log ?? createLogger(options.v);
  return new Daemon(options, extras, log).run();
}
