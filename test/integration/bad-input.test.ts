// Bad input from every side the daemon reads: the network config in etcd (malformed, invalid values,
// unsupported backends), foreign or malformed lease values of other nodes, and corrupt local files
// (subnet.env, the VTEP MAC file). Each case must produce a clear message naming what is wrong and
// the flannel behaviour: retry (config), skip/ignore (leases), warn and start afresh (local files) —
// never an unexpected crash. Control plane only in the root namespace, except the lease values, which
// need the real data plane to show that no route appears.
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { withEtcd } from '../../netns-fixtures/etcd';
import { createTestbed, flannelLeaseValue, randomVtepMac, waitFor as waitForBed, type TestHost } from '../../netns-fixtures/testbed';
import { ETCD_PREFIX, startDaemonNode } from '../../netns-fixtures/tsflanneld-node';
import {
  PREFIX,
  VXLAN_CONFIG,
  putConfig,
  startNode,
  subnetKeys,
  subnetOfEnv,
  tmpDir,
  waitFor,
  type NodeProc,
} from './control-plane-helpers';

let ipCounter = 1;
/** A fresh public IP per daemon, so leases of earlier cases are never taken over. */
function nextIp(): string {
  ipCounter += 1;
  return `198.51.100.${ipCounter}`;
}

/** Errors a daemon may end with that are typed (logged without "unexpected error"). */
function assertNoUnexpected(t: Test, node: NodeProc): void {
  t.notOk(
    node.logs.some((l) => /unexpected error/.test(l.msg)),
    'no "unexpected error" (every failure is a typed, explained one)',
  );
  t.notOk(
    node.stderrText.some((l) => /^\s+at /.test(l)),
    'no stack trace on stderr',
  );
}

/** The config is retried every second: the same warning once, then debug lines (-v=1) for each attempt. */
async function assertRetriedWith(t: Test, node: NodeProc, re: RegExp): Promise<void> {
  const first = await node.waitForLog(re);
  t.equal(first.level, 40, `warning: ${first.msg}`);
  await waitFor(`a second attempt ${re}`, () => {
    if (node.exitCode !== null) throw new Error(`daemon exited with ${node.exitCode}`);
    return node.logs.filter((l) => re.test(l.msg)).length >= 2;
  });
  t.equal(node.exitCode, null, 'still running (retrying every second, like flanneld)');
  t.notOk(node.findLog(/^wrote /), 'no subnet.env written');
}

t.test('network config in etcd', async (t) => {
  const etcd = await withEtcd(t);
  const cfgKey = `${PREFIX}/config`;

  const invalid: Array<[string, string, RegExp]> = [
    [
      'malformed JSON',
      '{"Network": "10.5.0.0/16", ',
      /invalid network config in \/coreos\.com\/network\/config: flannel config is not valid JSON/,
    ],
    [
      'SubnetLen 33',
      '{"Network":"10.5.0.0/16","SubnetLen":33,"Backend":{"Type":"vxlan"}}',
      /invalid network config .*SubnetLen must be less than \/31/,
    ],
    [
      'SubnetLen "24" (a string)',
      '{"Network":"10.5.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}',
      /invalid network config .*SubnetLen must be a number, got string/,
    ],
    [
      'Network "banana"',
      '{"Network":"banana","Backend":{"Type":"vxlan"}}',
      /invalid network config .*Network must be an IPv4 CIDR like "10\.5\.0\.0\/16": "banana"/,
    ],
    ['Network missing', '{"Backend":{"Type":"vxlan"}}', /invalid network config .*please define a correct Network parameter/],
    [
      'Network too small',
      '{"Network":"10.5.0.0/29","Backend":{"Type":"vxlan"}}',
      /invalid network config .*network is too small. Minimum useful network prefix is \/28/,
    ],
    [
      'SubnetMin outside Network',
      '{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}',
      /invalid network config .*SubnetMin is not in the range of the Network: 10\.6\.0\.0/,
    ],
    [
      'VNI "x"',
      '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}',
      /invalid network config .*Backend\.VNI must be a number, got string/,
    ],
    [
      'VNI out of range',
      '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}',
      /invalid network config .*Backend\.VNI must be between 0 and 16777215, got 16777216/,
    ],
    [
      'Port 70000',
      '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":70000}}',
      /invalid network config .*Backend\.Port must be between 0 and 65535/,
    ],
    ['Backend a string', '{"Network":"10.5.0.0/16","Backend":"vxlan"}', /invalid network config .*Backend must be an object, got string/],
    // IPv6: flannel's texts (pkg/subnet/config.go), then what to change.
    [
      'IPv6Network missing',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}',
      /invalid network config .*: please define a correct IPv6Network parameter in the flannel config; retrying$/,
    ],
    [
      'IPv6SubnetLen 127',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"fc00::/48","IPv6SubnetLen":127}',
      /invalid network config .*: SubnetLen must be less than \/127 \(IPv6SubnetLen is 127\); retrying$/,
    ],
    [
      'IPv6SubnetLen 49 in a /48',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"fc00::/48","IPv6SubnetLen":49}',
      /invalid network config .*: network must be able to accommodate at least four subnets \(IPv6SubnetLen 49 with a \/48 IPv6Network; use at least \/50\)/,
    ],
    [
      'IPv6Network /125',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"fc00::/125"}',
      /invalid network config .*: IPv6Network is too small\. Minimum useful network prefix is \/124 \(IPv6Network is a \/125\)/,
    ],
    [
      'IPv6SubnetMin off a boundary',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::1"}',
      /invalid network config .*: IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1 \(IPv6SubnetLen is \/64\)/,
    ],
    [
      'IPv6SubnetMax outside IPv6Network',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"fc00::/48","IPv6SubnetMax":"fd00::"}',
      /invalid network config .*: IPv6SubnetMax is not in the range of the IPv6Network: fd00:: is outside fc00::\/48/,
    ],
    [
      'IPv6Network an IPv4 CIDR',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"},"IPv6Network":"10.6.0.0/16"}',
      /invalid network config .*: IPv6Network must be an IPv6 CIDR like "fc00::\/48": "10\.6\.0\.0\/16"/,
    ],
    ['a JSON array', '[1,2,3]', /invalid network config .*must be a JSON object, got array/],
  ];
  for (const [name, value, re] of invalid) {
    await t.test(`${name}: clear message naming the field, retried`, async (t) => {
      await etcd.etcdctl(['put', cfgKey, value]);
      const node = startNode(t, etcd, { publicIp: nextIp(), dir: tmpDir(t), args: ['-v=1'] });
      await assertRetriedWith(t, node, re);
      node.kill();
      await node.exited;
      assertNoUnexpected(t, node);
    });
  }

  await t.test('invalid config fixed while the daemon waits: it goes on with the new one', async (t) => {
    await etcd.etcdctl(['put', cfgKey, '{"Network":"banana","Backend":{"Type":"vxlan"}}']);
    const node = startNode(t, etcd, { publicIp: nextIp(), dir: tmpDir(t) });
    await node.waitForLog(/Network must be an IPv4 CIDR/);
    await putConfig(etcd, { Network: '10.7.0.0/16', Backend: { Type: 'vxlan' } });
    const env = await node.waitForSubnetEnv();
    t.match(env, /^FLANNEL_NETWORK=10\.7\.0\.0\/16$/m, 'uses the corrected config');
    t.ok(node.findLog(/found network config/), 'says it found the config');
    t.equal(await node.stop(), 0);
  });

  const unsupported: Array<[string, string, RegExp]> = [
    [
      'Backend type "host-gw"',
      '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}',
      /backend type "host-gw" in \/coreos\.com\/network\/config is not supported: tsflanneld only implements "vxlan"/,
    ],
    [
      'Backend type "VXLAN " (not exactly vxlan)',
      '{"Network":"10.5.0.0/16","Backend":{"Type":"VXLAN "}}',
      /backend type "vxlan " .* is not supported/,
    ],
    [
      'no Backend (flannel picks udp)',
      '{"Network":"10.5.0.0/16"}',
      /backend type "udp" .* not supported.*flannel selects "udp" when the Backend object is missing/,
    ],
    [
      'EnableIPv4 and EnableIPv6 both false',
      '{"EnableIPv4":false,"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}',
      /^none defined stack: \/coreos\.com\/network\/config disables both EnableIPv4 and EnableIPv6; enable at least one$/,
    ],
    [
      'EnableIPv6 on an interface without an IPv6 address (lo)',
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}',
      /^failed to find IPv6 address for interface lo /,
    ],
  ];
  for (const [name, value, re] of unsupported) {
    await t.test(`${name}: fatal, exit 1 with a clear message`, async (t) => {
      await etcd.etcdctl(['put', cfgKey, value]);
      const node = startNode(t, etcd, { publicIp: nextIp(), dir: tmpDir(t) });
      t.equal(await node.waitForExit(), 1, 'exit 1');
      const fatal = node.logs.find((l) => l.level === 60);
      t.match(fatal?.msg ?? '', re, `fatal: ${fatal?.msg}`);
      assertNoUnexpected(t, node);
      t.notOk(fs.existsSync(node.subnetFile), 'no subnet.env');
    });
  }
});

t.test('corrupt local files', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, VXLAN_CONFIG);

  /** Starts a daemon on `dir` after `prepare` and checks it leased a subnet and wrote a fresh subnet.env. */
  async function startsAfresh(t: Test, dir: string, warning: RegExp): Promise<NodeProc> {
    const node = startNode(t, etcd, { publicIp: nextIp(), dir });
    const env = await node.waitForSubnetEnv();
    const warn = node.logs.find((l) => l.level === 40 && warning.test(l.msg));
    t.ok(warn, `warning: ${warn?.msg ?? `(none matching ${warning})`}`);
    const subnet = subnetOfEnv(env);
    t.ok((await subnetKeys(etcd)).has(subnet.replace('/', '-')), `fresh lease ${subnet} in etcd`);
    t.match(
      env,
      /^FLANNEL_NETWORK=10\.5\.0\.0\/16\nFLANNEL_SUBNET=10\.5\.\d+\.1\/24\nFLANNEL_MTU=\d+\nFLANNEL_IPMASQ=false\n$/,
      'subnet.env rewritten in full',
    );
    assertNoUnexpected(t, node);
    return node;
  }

  await t.test('subnet.env full of binary garbage', async (t) => {
    const dir = tmpDir(t);
    const bytes = Buffer.alloc(4096);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + 13) & 0xff;
    fs.writeFileSync(path.join(dir, 'subnet.env'), bytes);
    const node = await startsAfresh(t, dir, /previous subnet file .*subnet\.env is corrupt .*ignoring it/);
    await node.stop();
  });

  await t.test('subnet.env with a bad FLANNEL_SUBNET value', async (t) => {
    const dir = tmpDir(t);
    fs.writeFileSync(path.join(dir, 'subnet.env'), 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.999.1/24\n');
    const node = await startsAfresh(t, dir, /FLANNEL_SUBNET "10\.5\.999\.1\/24" is not a valid IPv4 CIDR/);
    await node.stop();
  });

  await t.test('subnet.env is a directory: warned, leased, then a clear fatal error (cannot tell the CNI plugin)', async (t) => {
    const dir = tmpDir(t);
    fs.mkdirSync(path.join(dir, 'subnet.env'));
    const node = startNode(t, etcd, { publicIp: nextIp(), dir });
    t.equal(await node.waitForExit(), 1, 'exit 1: without subnet.env containers would get no network config');
    t.ok(
      node.logs.find((l) => l.level === 40 && /cannot read previous subnet file .*subnet\.env/.test(l.msg)),
      'warned about the unreadable previous file',
    );
    const fatal = node.logs.find((l) => l.level === 60);
    t.match(fatal?.msg ?? '', /cannot write subnet file .*subnet\.env/, `fatal: ${fatal?.msg}`);
    assertNoUnexpected(t, node);
  });

  const badMacs: Array<[string, string | Buffer, RegExp]> = [
    ['garbage text', 'not a mac at all\n', /VTEP MAC file .* does not hold a valid unicast MAC; generated a new one/],
    ['binary garbage', Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 0xff, 0x0a]), /does not hold a valid unicast MAC/],
    ['a multicast MAC', '01:00:5e:00:00:01\n', /does not hold a valid unicast MAC/],
    ['all zeros', '00:00:00:00:00:00\n', /does not hold a valid unicast MAC/],
    ['empty', '', /does not hold a valid unicast MAC/],
  ];
  for (const [name, content, re] of badMacs) {
    await t.test(`VTEP MAC file: ${name}`, async (t) => {
      const dir = tmpDir(t);
      const macFile = path.join(dir, 'tsflanneld-vtep-mac-subnet');
      fs.writeFileSync(macFile, content);
      const node = await startsAfresh(t, dir, re);
      const mac = fs.readFileSync(macFile, 'utf8').trim();
      t.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, `a fresh MAC was persisted (${mac})`);
      t.equal(parseInt(mac.slice(0, 2), 16) & 0x03, 0x02, 'unicast, locally administered');
      const lease = [...(await subnetKeys(etcd)).values()]
        .map((v) => JSON.parse(v) as { PublicIP: string; BackendData?: { VtepMAC?: string } })
        .find((v) => v.PublicIP === node.opts.publicIp);
      t.equal(lease?.BackendData?.VtepMAC, mac, 'the lease publishes the fresh MAC');
      await node.stop();
    });
  }

  await t.test('VTEP MAC file is a directory: clear fatal error naming the file', async (t) => {
    const dir = tmpDir(t);
    fs.mkdirSync(path.join(dir, 'tsflanneld-vtep-mac-subnet'));
    const node = startNode(t, etcd, { publicIp: nextIp(), dir });
    t.equal(await node.waitForExit(), 1, 'exit 1');
    const fatal = node.logs.find((l) => l.level === 60);
    t.match(fatal?.msg ?? '', /VTEP MAC file .*tsflanneld-vtep-mac-subnet/, `fatal: ${fatal?.msg}`);
    assertNoUnexpected(t, node);
  });
});

t.test('foreign and malformed leases of other nodes (real data plane)', async (t) => {
  const bed = await createTestbed({ hosts: 1, etcd: true, t });
  const etcd = bed.etcd!;
  const h1 = bed.hosts[0] as TestHost;
  await etcd.etcdctl(['put', `${ETCD_PREFIX}/config`, JSON.stringify(VXLAN_CONFIG)]);
  const key = (s: string): string => `${ETCD_PREFIX}/subnets/${s}`;
  const bad: Array<[string, string, string]> = [
    // [key, value, why]
    [key('10.5.50.0-24'), '{"PublicIP": "192.0.2.50", garbage', 'garbage JSON'],
    [
      key('10.5.51.0-24'),
      '{"PublicIP":"192.0.2.51","PublicIPv6":null}',
      'udp backend lease (flannel writes no BackendType/BackendData for udp)',
    ],
    [key('10.5.52.0-24'), '{"PublicIP":"192.0.2.52","PublicIPv6":null,"BackendType":"udp"}', 'BackendType "udp"'],
    [key('10.5.53.0-24'), '{"PublicIP":"192.0.2.53","PublicIPv6":null,"BackendType":"host-gw"}', 'host-gw lease'],
    [
      key('10.5.54.0-24'),
      '{"PublicIP":"banana","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:54"}}',
      'PublicIP not an IP',
    ],
    [key('10.5.55.0-24'), '{"PublicIP":"192.0.2.55","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz:zz"}}', 'VtepMAC not a MAC'],
    [key('10.5.56.0-24'), '{"PublicIP":"192.0.2.56","BackendType":"vxlan"}', 'vxlan without BackendData'],
    [key('10.9.57.0-24'), flannelLeaseValue('192.0.2.57', randomVtepMac()), 'subnet outside the Network'],
    [key('banana'), flannelLeaseValue('192.0.2.58', randomVtepMac()), 'not a subnet key'],
    [key('10.5.59.0-24'), '42', 'JSON number'],
  ];
  const good1 = { subnet: '10.5.60.0/24', value: flannelLeaseValue('192.0.2.60', randomVtepMac()) };
  const good2 = { subnet: '10.5.61.0/24', value: flannelLeaseValue('192.0.2.61', randomVtepMac()) };
  // Half of the bad entries exist before the daemon starts (initial snapshot), half arrive by watch.
  const early = bad.slice(0, 5);
  const late = bad.slice(5);
  for (const [k, v] of early) await etcd.etcdctl(['put', k, v]);
  await etcd.etcdctl(['put', key(good1.subnet.replace('/', '-')), good1.value]);

  const d1 = await startDaemonNode({ host: h1, etcdEndpoint: bed.etcdEndpoint!, healthzPort: 9102 });
  t.teardown(() => {
    if (!t.passing()) t.comment(`--- h1 log tail:\n${d1.tail(40)}`);
  });
  const ready = await d1.waitReady();
  const taken = early.map(([k]) => k.slice(k.lastIndexOf('/') + 1).replace('-', '/'));
  t.notOk(taken.includes(ready.subnet), `own lease ${ready.subnet} is none of the existing keys, even unreadable ones`);
  const routes = async (): Promise<string> => (await h1.exec(['ip', 'route', 'show', 'dev', 'flannel.1'])).stdout;
  await waitForBed(`route to ${good1.subnet}`, async () => (await routes()).includes(good1.subnet), 60000);

  for (const [k, v] of late) await etcd.etcdctl(['put', k, v]);
  await etcd.etcdctl(['put', key(good2.subnet.replace('/', '-')), good2.value]);
  await waitForBed(
    `route to ${good2.subnet} (a valid lease after the bad ones)`,
    async () => (await routes()).includes(good2.subnet),
    60000,
  );

  const table = await routes();
  t.comment(`routes on flannel.1:\n${table.trim()}`);
  const routed = table
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((s) => s && s !== '');
  t.same(routed.sort(), [good1.subnet, good2.subnet].sort(), 'routes only for the two valid vxlan leases');
  t.equal(await d1.metricValue('tsflanneld_peers'), 2, 'the data plane forwards to exactly the two valid peers');

  const warned = (what: RegExp): boolean => d1.runLogs().some((l) => Number(l.level) === 40 && what.test(String(l.msg)));
  t.ok(
    warned(/skipping malformed lease \/coreos\.com\/network\/subnets\/10\.5\.50\.0-24: lease value is not valid JSON/),
    'garbage JSON: warned and skipped',
  );
  t.ok(
    warned(/skipping malformed lease .*10\.5\.54\.0-24: lease PublicIP is not a valid IPv4 address: "banana"/),
    'bad PublicIP: warned and skipped',
  );
  t.ok(warned(/skipping malformed lease .*subnets\/banana: not a subnet key/), 'non-subnet key: warned and skipped');
  t.ok(
    warned(/skipping malformed lease .*10\.5\.59\.0-24: lease value must be a JSON object, got number/),
    'JSON number: warned and skipped',
  );
  t.equal(
    d1.countLogs((l) => Number(l.level) >= 50),
    0,
    'no errors',
  );
  t.ok(d1.running, 'daemon still running');

  // A foreign lease replaced by a valid one is picked up; a valid one turned into garbage keeps its route
  // (flannel skips unparsable values, so the last good state stays) and a warning says why.
  await etcd.etcdctl(['put', key('10.5.53.0-24'), flannelLeaseValue('192.0.2.53', randomVtepMac())]);
  await waitForBed('route to 10.5.53.0/24 once it is a vxlan lease', async () => (await routes()).includes('10.5.53.0/24'), 60000);
  t.pass('host-gw lease re-put as vxlan: routed');
  await etcd.etcdctl(['del', key('10.5.53.0-24')]);
  await waitForBed('route to 10.5.53.0/24 removed', async () => !(await routes()).includes('10.5.53.0/24'), 60000);
  t.pass('deleted: route removed');
  t.equal(await d1.stop(), 0, 'clean exit');
});
