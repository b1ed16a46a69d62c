import t from 'tap';
import {
  createMetrics,
  MetricsSourceError,
  type DataplaneSnapshot,
  type DataplaneStatsSource,
  type LeaseStatusSource,
} from '../../src/ops/metrics';

class FakeDataplane implements DataplaneStatsSource {
  snap: DataplaneSnapshot = {
    rxPackets: 10,
    rxBytes: 1000,
    txPackets: 20,
    txBytes: 3000,
    drops: { no_route: 2, bad_vni: 0 },
    peers: [
      { subnet: '10.5.9.0/24', publicIp: '192.0.2.12', rxPackets: 4, rxBytes: 400, txPackets: 5, txBytes: 500 },
      { subnet: '10.5.10.0/24', publicIp: '192.0.2.13', rxPackets: 6, rxBytes: 600, txPackets: 15, txBytes: 2500 },
    ],
    offloadRung: 'gso',
  };
  calls = 0;
  snapshot(): DataplaneSnapshot {
    this.calls++;
    return this.snap;
  }
}

class FakeLease implements LeaseStatusSource {
  expiry: number | null = 1795400000;
  connected = true;
  leaseExpiry(): number | null {
    return this.expiry;
  }
  etcdConnected(): boolean {
    return this.connected;
  }
  subnet(): string {
    return '10.5.72.0/24';
  }
}

/** Sample lines (no comments) of a scrape, for exact matching. */
function samples(text: string): Set<string> {
  return new Set(text.split('\n').filter((l) => l !== '' && !l.startsWith('#')));
}

t.test('scrape exports data plane, peers, lease and process metrics', async (t) => {
  const dp = new FakeDataplane();
  const m = createMetrics({ dataplane: dp, lease: new FakeLease() });
  const text = await m.registry.metrics();
  const s = samples(text);
  for (const line of [
    'tsflanneld_packets_total{direction="rx"} 10',
    'tsflanneld_packets_total{direction="tx"} 20',
    'tsflanneld_bytes_total{direction="rx"} 1000',
    'tsflanneld_bytes_total{direction="tx"} 3000',
    'tsflanneld_drops_total{reason="no_route"} 2',
    'tsflanneld_drops_total{reason="bad_vni"} 0',
    'tsflanneld_peer_packets_total{peer="10.5.9.0/24",public_ip="192.0.2.12",direction="rx"} 4',
    'tsflanneld_peer_packets_total{peer="10.5.9.0/24",public_ip="192.0.2.12",direction="tx"} 5',
    'tsflanneld_peer_bytes_total{peer="10.5.10.0/24",public_ip="192.0.2.13",direction="rx"} 600',
    'tsflanneld_peer_bytes_total{peer="10.5.10.0/24",public_ip="192.0.2.13",direction="tx"} 2500',
    'tsflanneld_peers 2',
    'tsflanneld_lease_expiry_timestamp_seconds{subnet="10.5.72.0/24"} 1795400000',
    'tsflanneld_etcd_connected 1',
    'tsflanneld_offload_rung{rung="gso"} 1',
  ]) {
    t.ok(s.has(line), line);
  }
  t.match(text, /# TYPE tsflanneld_packets_total counter/);
  t.match(text, /# TYPE tsflanneld_peers gauge/);
  t.match(text, /^process_resident_memory_bytes \d+/m);
  t.match(text, /^process_cpu_seconds_total [\d.e-]+/m);
  t.equal(dp.calls, 1, 'one snapshot per scrape, shared by all metrics');
});

t.test('counters stay monotonic across scrapes and data plane restarts', async (t) => {
  const dp = new FakeDataplane();
  const m = createMetrics({ dataplane: dp, defaultMetrics: false });
  await m.registry.metrics();
  dp.snap = { ...dp.snap, rxPackets: 15, drops: { no_route: 3, bad_vni: 1 } };
  let s = samples(await m.registry.metrics());
  t.ok(s.has('tsflanneld_packets_total{direction="rx"} 15'));
  t.ok(s.has('tsflanneld_drops_total{reason="bad_vni"} 1'));
  // Data plane restarted: its counters start again from zero.
  dp.snap = { ...dp.snap, rxPackets: 4, drops: { no_route: 0 } };
  s = samples(await m.registry.metrics());
  t.ok(s.has('tsflanneld_packets_total{direction="rx"} 19'), '15 + 4 after the reset');
  t.ok(s.has('tsflanneld_drops_total{reason="no_route"} 3'));
  t.ok(s.has('tsflanneld_drops_total{reason="bad_vni"} 1'), 'a reason that disappeared keeps its total');
  // A new source object counts from its own start.
  const dp2 = new FakeDataplane();
  dp2.snap = { ...dp2.snap, rxPackets: 7 };
  m.setDataplaneSource(dp2);
  s = samples(await m.registry.metrics());
  t.ok(s.has('tsflanneld_packets_total{direction="rx"} 26'), '19 + 7 from the new source');
});

t.test('gone peers are no longer exported; rung follows the data plane', async (t) => {
  const dp = new FakeDataplane();
  const m = createMetrics({ dataplane: dp, defaultMetrics: false });
  await m.registry.metrics();
  dp.snap = { ...dp.snap, peers: [dp.snap.peers[1]!], offloadRung: 'plain' };
  const text = await m.registry.metrics();
  t.notMatch(text, /10\.5\.9\.0\/24/);
  const s = samples(text);
  t.ok(s.has('tsflanneld_peers 1'));
  t.ok(s.has('tsflanneld_peer_packets_total{peer="10.5.10.0/24",public_ip="192.0.2.13",direction="tx"} 15'));
  t.ok(s.has('tsflanneld_offload_rung{rung="plain"} 1'));
  t.notMatch(text, /rung="gso"/);
});

t.test('without sources: no lease series, etcd disconnected, no peers', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  const text = await m.registry.metrics();
  const s = samples(text);
  t.ok(s.has('tsflanneld_peers 0'));
  t.ok(s.has('tsflanneld_etcd_connected 0'));
  t.ok(s.has('tsflanneld_packets_total{direction="tx"} 0'), 'rx/tx series exist before the data plane');
  t.notMatch(text, /^tsflanneld_lease_expiry_timestamp_seconds/m);
  t.notMatch(text, /^tsflanneld_offload_rung/m);

  const lease = new FakeLease();
  lease.expiry = null;
  lease.connected = false;
  m.setLeaseSource(lease);
  t.notMatch(await m.registry.metrics(), /^tsflanneld_lease_expiry_timestamp_seconds/m);
  lease.expiry = 1795400123;
  lease.connected = true;
  const s2 = samples(await m.registry.metrics());
  t.ok(s2.has('tsflanneld_lease_expiry_timestamp_seconds{subnet="10.5.72.0/24"} 1795400123'));
  t.ok(s2.has('tsflanneld_etcd_connected 1'));
});

t.test('a broken source fails the scrape with a typed error', async (t) => {
  const dp = new FakeDataplane();
  dp.snap = { ...dp.snap, txBytes: Number.NaN };
  const m = createMetrics({ dataplane: dp, defaultMetrics: false });
  await t.rejects(m.registry.metrics(), MetricsSourceError);
  dp.snap = { ...dp.snap, txBytes: -1 };
  await new Promise((r) => setImmediate(r));
  await t.rejects(m.registry.metrics(), MetricsSourceError);
});

t.test('registries are private to each instance', async (t) => {
  const a = createMetrics({ dataplane: new FakeDataplane(), defaultMetrics: false });
  const b = createMetrics({ defaultMetrics: false });
  await a.registry.metrics();
  t.ok(samples(await b.registry.metrics()).has('tsflanneld_peers 0'));
});
