// RTT with and without UDP GRO on the receive sockets: two hosts running the data plane alone (static
// runner, persistent TUN), ping -i 0.01 from h1 to h2's overlay address, alternating configurations
// round by round so that load from other work on the machine hits all of them alike.
//   node dist/bench/rtt-gro.js [--rounds 4] [--count 300] [--threads 1]
// Configurations: offload full, offload no-udp-gro (UDP_GRO off, everything else on), and full with
// GRO switched off on the underlay veths (ethtool -K gro off), to tell socket GRO from device GRO.
// Prints avg / max / mdev per configuration (medians over rounds). No thresholds.
import { createTestbed, ping, randomVtepMac, type Testbed, type TestHost } from '../netns-fixtures/testbed';
import { configureTun, MTU, type NodeSpec, peerOf, pingOk, Runner, TUN } from '../test/integration/dataplane-runner';

interface Config {
  name: string;
  offload: string;
  veth: 'on' | 'off';
}

const CONFIGS: Config[] = [
  { name: 'full', offload: 'full', veth: 'on' },
  { name: 'no-udp-gro', offload: 'no-udp-gro', veth: 'on' },
  { name: 'full, underlay veth gro off', offload: 'full', veth: 'off' },
];

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

async function main(): Promise<void> {
  const rounds = arg('--rounds', 4);
  const count = arg('--count', 300);
  const threads = arg('--threads', 1);
  let bed: Testbed | null = null;
  process.once('SIGINT', () => void bed?.teardown().finally(() => process.exit(130)));
  try {
    bed = await createTestbed({ hosts: 2 });
    const [h1, h2] = bed.hosts as [TestHost, TestHost];
    const n1: NodeSpec = { host: h1, subnet: '10.5.1.0/24', gw: '10.5.1.0', mac: randomVtepMac() };
    const n2: NodeSpec = { host: h2, subnet: '10.5.2.0/24', gw: '10.5.2.0', mac: randomVtepMac() };
    const base = { vni: 1, persist: true, tunName: TUN, mtu: MTU, threads };
    const samples = new Map<string, number[][]>(CONFIGS.map((c) => [c.name, []]));
    let configured = false;
    for (let r = 0; r < rounds; r++) {
      for (const c of CONFIGS) {
        for (const h of [h1, h2]) await h.exec(['ethtool', '-K', h.underlayDev, 'gro', c.veth]);
        const r1 = await Runner.start(h1, { ...base, localMac: n1.mac, offload: c.offload, peers: [peerOf(n2)] });
        const r2 = await Runner.start(h2, { ...base, localMac: n2.mac, offload: c.offload, peers: [peerOf(n1)] });
        if (!configured) {
          await configureTun(n1, [n2]);
          await configureTun(n2, [n1]);
          configured = true;
        }
        await pingOk(h1, n2.gw);
        const res = await ping(h1, n2.gw, { count, interval: 0.01 });
        // The fixture's ping is quiet (-q): its summary gives min/avg/max/mdev.
        const one = [(res.avgMs ?? NaN) * 1000, (res.maxMs ?? NaN) * 1000, (res.mdevMs ?? NaN) * 1000];
        samples.get(c.name)!.push(one);
        process.stdout.write(
          `round ${r + 1} ${c.name}: avg ${one[0]!.toFixed(0)} µs, max ${one[1]!.toFixed(0)}, mdev ${one[2]!.toFixed(0)} (${res.received}/${count})\n`,
        );
        await r1.kill9();
        await r2.kill9();
      }
    }
    process.stdout.write('\n| configuration | avg µs (median of rounds) | max µs (median) | mdev µs (median) |\n|---|---|---|---|\n');
    const median = (xs: number[]): number => {
      const s = [...xs].sort((a, b) => a - b);
      return s[Math.floor(s.length / 2)] ?? NaN;
    };
    for (const c of CONFIGS) {
      const rows = samples.get(c.name)!;
      const col = (i: number): string => median(rows.map((x) => x[i]!)).toFixed(0);
      process.stdout.write(`| ${c.name} | ${col(0)} | ${col(1)} | ${col(2)} |\n`);
    }
  } finally {
    await bed?.teardown();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`rtt-gro: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
