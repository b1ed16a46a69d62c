// Prometheus metrics for operators, on a registry of our own (never prom-client's global one, so
// several daemons/tests in one process do not share series). Values are pulled from the data plane
// and the lease manager when scraped, through the two small source interfaces below, so nothing on
// the packet path touches prom-client.
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

export interface PeerStats {
  /** Remote lease subnet, e.g. "10.5.9.0/24". */
  readonly subnet: string;
  /** Remote underlay address. */
  readonly publicIp: string;
  readonly rxPackets: number;
  readonly rxBytes: number;
  readonly txPackets: number;
  readonly txBytes: number;
}

/** Cumulative counters since the data plane started (they may restart from zero with it). */
export interface DataplaneSnapshot {
  /** rx = decapsulated from the underlay into the TUN device, tx = encapsulated towards peers. */
  readonly rxPackets: number;
  readonly rxBytes: number;
  readonly txPackets: number;
  readonly txBytes: number;
  /** Dropped packets by reason (e.g. "no_route", "bad_vni"). */
  readonly drops: Readonly<Record<string, number>>;
  readonly peers: readonly PeerStats[];
  /** Which rung of the offload ladder the data plane runs on (e.g. "gso", "plain"). */
  readonly offloadRung: string;
  /** Peer leases of our backend refused on this node (no route; e.g. a host-gw peer off our L2). */
  readonly refusedPeers?: number;
}

export interface DataplaneStatsSource {
  snapshot(): DataplaneSnapshot;
}

export interface LeaseStatusSource {
  /** Unix seconds when our lease expires, null while no lease is held. */
  leaseExpiry(): number | null;
  etcdConnected(): boolean;
  /** Our lease subnet, e.g. "10.5.72.0/24". */
  subnet(): string;
}

export class MetricsSourceError extends Error {
  override name = 'MetricsSourceError';
}

export interface MetricsOptions {
  dataplane?: DataplaneStatsSource | null;
  lease?: LeaseStatusSource | null;
  /** prom-client's process/Node.js metrics (RSS, CPU, heap, event loop lag, fds); default true. */
  defaultMetrics?: boolean;
}

type Direction = 'rx' | 'tx';

/**
 * Counters are advanced by the difference to the previous snapshot, so they stay monotonic even when
 * the data plane restarts from zero (then its new value counts as the increase, Prometheus-style).
 */
export class DaemonMetrics {
  readonly registry = new Registry();
  private dataplane: DataplaneStatsSource | null;
  private lease: LeaseStatusSource | null;
  /** Last raw value per counter series, to compute increases. */
  private readonly last = new Map<string, number>();
  /** Peer label sets currently exported. */
  private peerKeys = new Map<string, { peer: string; public_ip: string }>();
  private refreshedThisScrape = false;

  private readonly packets: Counter<'direction'>;
  private readonly bytes: Counter<'direction'>;
  private readonly drops: Counter<'reason'>;
  private readonly peerPackets: Counter<'peer' | 'public_ip' | 'direction'>;
  private readonly peerBytes: Counter<'peer' | 'public_ip' | 'direction'>;
  private readonly peers: Gauge;
  private readonly refusedPeers: Gauge;
  private readonly leaseExpiry: Gauge<'subnet'>;
  private readonly etcdConnected: Gauge;
  private readonly offloadRung: Gauge<'rung'>;

  constructor(opts: MetricsOptions = {}) {
    this.dataplane = opts.dataplane ?? null;
    this.lease = opts.lease ?? null;
    const registers = [this.registry];
    // Every metric refreshes from the sources on collect; the first one in a scrape does the work.
    const collect = (): void => this.refresh();
    this.packets = new Counter({
      name: 'tsflanneld_packets_total',
      help: 'Overlay packets through the data plane (rx = from the underlay, tx = to the underlay).',
      labelNames: ['direction'],
      registers,
      collect,
    });
    this.bytes = new Counter({
      name: 'tsflanneld_bytes_total',
      help: 'Inner (overlay) bytes through the data plane (rx = from the underlay, tx = to the underlay).',
      labelNames: ['direction'],
      registers,
      collect,
    });
    this.drops = new Counter({
      name: 'tsflanneld_drops_total',
      help: 'Packets dropped by the data plane, by reason.',
      labelNames: ['reason'],
      registers,
      collect,
    });
    this.peerPackets = new Counter({
      name: 'tsflanneld_peer_packets_total',
      help: 'Overlay packets exchanged with each remote lease.',
      labelNames: ['peer', 'public_ip', 'direction'],
      registers,
      collect,
    });
    this.peerBytes = new Counter({
      name: 'tsflanneld_peer_bytes_total',
      help: 'Inner bytes exchanged with each remote lease.',
      labelNames: ['peer', 'public_ip', 'direction'],
      registers,
      collect,
    });
    this.peers = new Gauge({ name: 'tsflanneld_peers', help: 'Remote leases the data plane forwards to.', registers, collect });
    this.refusedPeers = new Gauge({
      name: 'tsflanneld_peers_refused',
      help: 'Peer leases of our backend that get no route on this node (e.g. a host-gw peer not on our L2; see the log).',
      registers,
      collect,
    });
    this.leaseExpiry = new Gauge({
      name: 'tsflanneld_lease_expiry_timestamp_seconds',
      help: 'Unix time when our subnet lease expires unless renewed (absent without a lease).',
      labelNames: ['subnet'],
      registers,
      collect,
    });
    this.etcdConnected = new Gauge({
      name: 'tsflanneld_etcd_connected',
      help: '1 while the etcd client is connected, else 0.',
      registers,
      collect,
    });
    this.offloadRung = new Gauge({
      name: 'tsflanneld_offload_rung',
      help: 'Offload mode the data plane runs with (the series with value 1).',
      labelNames: ['rung'],
      registers,
      collect,
    });
    // rx/tx exist from the first scrape on, so rate() works before the data plane is up.
    for (const direction of ['rx', 'tx'] as const) {
      this.packets.inc({ direction }, 0);
      this.bytes.inc({ direction }, 0);
    }
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Attaches (or detaches, with null) the data plane; a new source's counters count from its start. */
  setDataplaneSource(src: DataplaneStatsSource | null): void {
    if (src === this.dataplane) return;
    this.dataplane = src;
    // Forget the old source's raw values so the new one's first snapshot is counted in full.
    this.last.clear();
  }

  setLeaseSource(src: LeaseStatusSource | null): void {
    this.lease = src;
  }

  private refresh(): void {
    if (this.refreshedThisScrape) return;
    // prom-client calls every metric's collect hook synchronously at the start of a scrape, so a flag
    // cleared in the next microtask lets one snapshot serve the whole scrape, and the next scrape
    // (which can only start after awaiting) takes a fresh one.
    this.refreshedThisScrape = true;
    queueMicrotask(() => {
      this.refreshedThisScrape = false;
    });
    this.refreshLease();
    this.refreshDataplane();
  }

  private refreshLease(): void {
    const lease = this.lease;
    this.leaseExpiry.reset();
    if (!lease) {
      this.etcdConnected.set(0);
      return;
    }
    this.etcdConnected.set(lease.etcdConnected() ? 1 : 0);
    const expiry = lease.leaseExpiry();
    if (expiry !== null) this.leaseExpiry.set({ subnet: lease.subnet() }, checked('lease expiry', expiry));
  }

  private refreshDataplane(): void {
    this.offloadRung.reset();
    if (!this.dataplane) {
      this.peers.set(0);
      this.refusedPeers.set(0);
      return;
    }
    const s = this.dataplane.snapshot();
    this.advance(this.packets, { direction: 'rx' }, 'packets|rx', s.rxPackets);
    this.advance(this.packets, { direction: 'tx' }, 'packets|tx', s.txPackets);
    this.advance(this.bytes, { direction: 'rx' }, 'bytes|rx', s.rxBytes);
    this.advance(this.bytes, { direction: 'tx' }, 'bytes|tx', s.txBytes);
    for (const [reason, n] of Object.entries(s.drops)) this.advance(this.drops, { reason }, `drops|${reason}`, n);

    const seen = new Map<string, { peer: string; public_ip: string }>();
    for (const p of s.peers) {
      const labels = { peer: p.subnet, public_ip: p.publicIp };
      const key = `${p.subnet}|${p.publicIp}`;
      seen.set(key, labels);
      const values: Array<[Counter<'peer' | 'public_ip' | 'direction'>, string, Direction, number]> = [
        [this.peerPackets, 'pkts', 'rx', p.rxPackets],
        [this.peerPackets, 'pkts', 'tx', p.txPackets],
        [this.peerBytes, 'bytes', 'rx', p.rxBytes],
        [this.peerBytes, 'bytes', 'tx', p.txBytes],
      ];
      for (const [counter, kind, direction, raw] of values) {
        this.advance(counter, { ...labels, direction }, `peer|${kind}|${direction}|${key}`, raw);
      }
    }
    // A lease that went away stops being exported, so peer churn does not grow the scrape forever.
    for (const [key, labels] of this.peerKeys) {
      if (seen.has(key)) continue;
      for (const direction of ['rx', 'tx'] as const) {
        this.peerPackets.remove({ ...labels, direction });
        this.peerBytes.remove({ ...labels, direction });
        this.last.delete(`peer|pkts|${direction}|${key}`);
        this.last.delete(`peer|bytes|${direction}|${key}`);
      }
    }
    this.peerKeys = seen;
    this.peers.set(s.peers.length);
    this.refusedPeers.set(s.refusedPeers ?? 0);
    this.offloadRung.set({ rung: s.offloadRung }, 1);
  }

  private advance<L extends string>(counter: Counter<L>, labels: Partial<Record<L, string>>, key: string, raw: number): void {
    checked(key, raw);
    if (raw < 0) throw new MetricsSourceError(`metrics source reported negative counter ${key}=${raw}`);
    const prev = this.last.get(key);
    // A value below the previous one means the source restarted from zero.
    const delta = prev === undefined || raw < prev ? raw : raw - prev;
    this.last.set(key, raw);
    counter.inc(labels, delta);
  }
}

function checked(what: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new MetricsSourceError(`metrics source reported a non-numeric value for ${what}: ${String(v)}`);
  }
  return v;
}

export function createMetrics(opts: MetricsOptions = {}): DaemonMetrics {
  return new DaemonMetrics(opts);
}
