// /metrics snapshot of a backend: data-plane counters joined with the route manager's peers.
import { formatIp4, formatIp4Net } from '../subnet/ip4';
import type { CountersSnapshot } from '../dataplane/counters';
import type { DataplaneSnapshot, PeerStats } from '../ops/metrics';
import type { RouteManager } from '../routes/route-manager';

/** Builds the snapshot on scrape (never on the packet path). `counters` null: a backend without data plane. */
export function dataplaneStats(counters: CountersSnapshot | null, offloadRung: string, routes: RouteManager | null): DataplaneSnapshot {
  const publicIps = new Map<string, string>();
  for (const p of routes?.plans() ?? []) {
    publicIps.set(formatIp4Net(p.route.dst), p.forward ? formatIp4(p.forward.publicIp) : formatIp4(p.route.gateway));
  }
  const peers: PeerStats[] = [];
  if (counters === null) {
    // No packet counters (host-gw: the kernel forwards): export the routed peers with zero traffic.
    for (const [subnet, publicIp] of publicIps) peers.push({ subnet, publicIp, rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0 });
  } else {
    for (const [subnet, pc] of Object.entries(counters.peers)) {
      peers.push({
        subnet,
        publicIp: publicIps.get(subnet) ?? '',
        rxPackets: pc.inPackets,
        rxBytes: pc.inBytes,
        txPackets: pc.outPackets,
        txBytes: pc.outBytes,
      });
    }
  }
  return {
    rxPackets: counters?.rxPackets ?? 0,
    rxBytes: counters?.rxBytes ?? 0,
    txPackets: counters?.txPackets ?? 0,
    txBytes: counters?.txBytes ?? 0,
    drops: counters?.drops ?? {},
    peers,
    offloadRung,
    refusedPeers: routes?.refusedCount() ?? 0,
  };
}
