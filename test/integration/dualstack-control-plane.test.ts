// Dual-stack and IPv6-only control plane against a real etcd, each daemon in its own namespace
// with a real IPv6 underlay address (2001:db8::/32): exact lease keys and values, exact subnet.env,
// peers seen with both families, and restarts (kill -9, and lease deleted meanwhile) keeping both
// subnets. Leases and subnet.env only (the control-plane-main.ts entry point): no devices.
import t from 'tap';
import { createTestbed, type TestHost, type Testbed } from '../../netns-fixtures/testbed';
import { DaemonNode, type LogLine } from '../../netns-fixtures/tsflanneld-node';
import { vtepMacPath, vtepMacV6Path } from '../../src/subnet/vtep-mac';
import fs from 'node:fs';
import { BIN as CONTROL_PLANE_BIN, PREFIX, putConfig, subnetKeys } from './control-plane-helpers';

const DUAL = { Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fc00::/48', Backend: { Type: 'vxlan' } };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fc00::/48', Backend: { Type: 'vxlan' } };

const msg = (l: LogLine): string => (typeof l.msg === 'string' ? l.msg : '');

async function addIpv6(host: TestHost): Promise<string> {
  const ip6 = `2001:db8::${10 + host.index}`;
  await host.exec(['ip', '-6', 'addr', 'add', `${ip6}/64`, 'dev', host.underlayDev, 'nodad']);
  return ip6;
}

function start(bed: Testbed, host: TestHost, args: string[] = []): DaemonNode {
  return DaemonNode.start({ host, etcdEndpoint: bed.etcdEndpoint!, args, bin: CONTROL_PLANE_BIN });
}

async function ready(node: DaemonNode): Promise<string> {
  await node.waitForLog((l) => msg(l).startsWith('wrote '), 60000, 'subnet.env written');
  return fs.readFileSync(node.subnetFile, 'utf8');
}

const mac = (file: string): string => fs.readFileSync(file, 'utf8').trim();

/** The lease key of this run's subnet.env ("10.5.7.1/24" + "fc00:0:0:9::1/64" → "10.5.7.0-24&fc00:0:0:9::-64"). */
function keyOf(env: string): string {
  const v4 = /^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.1\/(\d+)$/m.exec(env);
  const v6 = /^FLANNEL_IPV6_SUBNET=([0-9a-f:]+::)1\/(\d+)$/m.exec(env);
  if (!v6) throw new Error(`no FLANNEL_IPV6_SUBNET in ${env}`);
  return `${v4 ? `${v4[1]}.0-${v4[2]}` : '0.0.0.0-0'}&${v6[1]}-${v6[2]}`;
}

t.test('dual-stack: keys, values and subnet.env exactly as flanneld; peers; restarts keep both subnets', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  await putConfig(bed.etcd!, DUAL);
  const ip6 = await Promise.all(bed.hosts.map(addIpv6));
  const nodes = bed.hosts.map((h) => start(bed, h));
  const envs = await Promise.all(nodes.map(ready));
  const keys = await subnetKeys(bed.etcd!);
  t.equal(keys.size, 2);
  for (const [i, n] of nodes.entries()) {
    const env = envs[i]!;
    t.match(
      env,
      /^FLANNEL_NETWORK=10\.5\.0\.0\/16\nFLANNEL_SUBNET=10\.5\.\d+\.1\/24\nFLANNEL_IPV6_NETWORK=fc00::\/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:[0-9a-f]+::1\/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n$/,
      `subnet.env of ${n.host.name}, line by line`,
    );
    const key = keyOf(env);
    t.match(key, /^10\.5\.\d+\.0-24&fc00:0:0:[0-9a-f]+::-64$/);
    t.equal(
      keys.get(key),
      `{"PublicIP":"${n.host.underlayIp}","PublicIPv6":"${ip6[i]}","BackendType":"vxlan",` +
        `"BackendData":{"VNI":1,"VtepMAC":"${mac(vtepMacPath(n.subnetFile))}"},` +
        `"BackendV6Data":{"VNI":1,"VtepMAC":"${mac(vtepMacV6Path(n.subnetFile))}"}}`,
      'lease value byte-identical to flanneld (two VTEP MACs)',
    );
    t.not(mac(vtepMacPath(n.subnetFile)), mac(vtepMacV6Path(n.subnetFile)), 'the IPv6 side has its own MAC');
  }
  t.not(keyOf(envs[0]!), keyOf(envs[1]!));
  // Each sees the other with both families.
  await nodes[0]!.waitForLog((l) => msg(l) === `peer lease added: ${describe(envs[1]!)} at ${bed.hosts[1]!.underlayIp} and ${ip6[1]}`);

  // kill -9 and start again: the lease is found by PublicIP and kept (both parts).
  const before = keyOf(envs[0]!);
  await nodes[0]!.stop('SIGKILL');
  await nodes[0]!.restart();
  t.equal(keyOf(await ready(nodes[0]!)), before, 'same key after kill -9');
  t.ok(
    nodes[0]!.runLogs().some((l) => /^found lease .* reusing$/.test(msg(l))),
    'reused the lease by PublicIP',
  );

  // Lease gone while the node is down: the previous subnet.env brings back both subnets.
  await nodes[0]!.stop('SIGTERM');
  await bed.etcd!.etcdctl(['del', `${PREFIX}/subnets/${before}`]);
  await nodes[0]!.restart();
  t.equal(keyOf(await ready(nodes[0]!)), before, 'same key from the previous subnet.env');
  t.ok(nodes[0]!.runLogs().some((l) => /^reacquired previous subnet /.test(msg(l))));
  t.equal((await subnetKeys(bed.etcd!)).size, 2);
});

function describe(env: string): string {
  const v4 = /^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.1\/(\d+)$/m.exec(env);
  const v6 = /^FLANNEL_IPV6_SUBNET=([0-9a-f:]+::)1\/(\d+)$/m.exec(env)!;
  const s6 = `${v6[1]}/${v6[2]}`;
  return v4 ? `${v4[1]}.0/${v4[2]} + ${s6}` : s6;
}

t.test('IPv6-only: 0.0.0.0-0&<v6> keys, PublicIP 0.0.0.0, distinct subnets, own lease found by PublicIPv6', async (t) => {
  const bed = await createTestbed({ hosts: 2, etcd: true, t });
  await putConfig(bed.etcd!, V6ONLY);
  const ip6 = await Promise.all(bed.hosts.map(addIpv6));
  // The IPv6-only underlay: no IPv4 address is needed (the testbed's stays unused).
  const nodes = bed.hosts.map((h) => start(bed, h));
  const envs = await Promise.all(nodes.map(ready));
  const keys = await subnetKeys(bed.etcd!);
  t.equal(keys.size, 2, 'two leases: the second node did not take over the first one');
  for (const [i, n] of nodes.entries()) {
    t.match(
      envs[i],
      /^FLANNEL_IPV6_NETWORK=fc00::\/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:[0-9a-f]+::1\/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n$/,
    );
    const key = keyOf(envs[i]!);
    t.match(key, /^0\.0\.0\.0-0&fc00:0:0:[0-9a-f]+::-64$/);
    t.equal(
      keys.get(key),
      `{"PublicIP":"0.0.0.0","PublicIPv6":"${ip6[i]}","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"${mac(vtepMacV6Path(n.subnetFile))}"}}`,
    );
  }
  t.not(keyOf(envs[0]!), keyOf(envs[1]!));
  await nodes[1]!.waitForLog((l) => msg(l) === `peer lease added: ${describe(envs[0]!)} at ${ip6[0]}`);

  const before = keyOf(envs[1]!);
  await nodes[1]!.stop('SIGKILL');
  await nodes[1]!.restart();
  t.equal(keyOf(await ready(nodes[1]!)), before, 'same IPv6 subnet after kill -9');
  t.equal((await subnetKeys(bed.etcd!)).size, 2);
});

t.test('-public-ipv6 is published; a config change to IPv4-only replaces the dual-stack lease', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  await putConfig(bed.etcd!, DUAL);
  await addIpv6(bed.hosts[0]!);
  const node = start(bed, bed.hosts[0]!, ['-public-ipv6', '2001:DB8:0:0::99']);
  const env = await ready(node);
  const value = (await subnetKeys(bed.etcd!)).get(keyOf(env))!;
  t.match(value, /"PublicIPv6":"2001:db8::99"/, 'given address in Go text form');

  await node.stop('SIGTERM');
  await putConfig(bed.etcd!, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  await node.restart();
  const env4 = await ready(node);
  t.notMatch(env4, /IPV6/, 'no IPv6 lines without EnableIPv6');
  const keys = await subnetKeys(bed.etcd!);
  t.same(
    [...keys.keys()],
    [`${env4.match(/^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.1\/24$/m)?.[1] ?? '?'}.0-24`],
    'dual-stack lease deleted, IPv4 lease made',
  );
  const v4 = (e: string) => /^FLANNEL_SUBNET=(.*)$/m.exec(e)?.[1];
  t.equal(v4(env4), v4(env), 'the IPv4 subnet is kept when IPv6 is switched off');
  t.match(keys.values().next().value, /^\{"PublicIP":"192\.0\.2\.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":/);
  t.ok(
    node.runLogs().some((l) => /-public-ipv6 2001:DB8:0:0::99 is unused/.test(msg(l))),
    'the unused flag is reported',
  );
});

t.test('EnableIPv6 with the real data plane is refused with one clear line (no device made)', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  await putConfig(bed.etcd!, DUAL);
  await addIpv6(bed.hosts[0]!);
  const node = DaemonNode.start({ host: bed.hosts[0]!, etcdEndpoint: bed.etcdEndpoint! });
  t.equal(await node.exited, 1);
  t.ok(
    node.runLogs().some((l) => /has EnableIPv6 true, but this tsflanneld data plane forwards IPv4 only/.test(msg(l))),
    node.tail(),
  );
  t.equal((await subnetKeys(bed.etcd!)).size, 0, 'no lease taken');
  const links = await bed.hosts[0]!.exec(['ip', '-o', 'link']);
  t.notMatch(links.stdout, /flannel/, 'no overlay device');
});

t.test('switching EnableIPv6 on keeps the IPv4 subnet (from the lease, or from subnet.env alone)', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  await putConfig(bed.etcd!, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  await addIpv6(bed.hosts[0]!);
  const node = start(bed, bed.hosts[0]!);
  const env4 = await ready(node);
  const v4 = (e: string) => /^FLANNEL_SUBNET=(.*)$/m.exec(e)?.[1];

  await node.stop('SIGTERM');
  await putConfig(bed.etcd!, DUAL);
  await node.restart();
  const env = await ready(node);
  t.equal(v4(env), v4(env4), 'same IPv4 subnet, lease found by PublicIP');
  t.match(env, /^FLANNEL_IPV6_SUBNET=fc00:0:0:[0-9a-f]+::1\/64$/m, 'an IPv6 subnet was added');
  t.same([...(await subnetKeys(bed.etcd!)).keys()], [keyOf(env)], 'one lease, dual-stack');

  // Lease gone and only an IPv4-only subnet.env left (IPv6 switched on while the node was down).
  await node.stop('SIGTERM');
  await putConfig(bed.etcd!, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  await node.restart();
  const again4 = await ready(node);
  await node.stop('SIGTERM');
  await bed.etcd!.etcdctl(['del', '--prefix', `${PREFIX}/subnets/`]);
  await putConfig(bed.etcd!, DUAL);
  await node.restart();
  t.equal(v4(await ready(node)), v4(again4), 'IPv4 subnet from the previous subnet.env kept');
});
