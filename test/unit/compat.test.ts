// Every flanneld flag (v0.20.0 and HEAD) parses; the ones tsflanneld does not implement are refused
// or reported, never silently ignored.
import t from 'tap';
import { compatNotes } from '../../src/cli/compat';
import { parseCommandLine, parseFlags } from '../../src/cli/flags';

// flanneld's flags, v0.20.0 ∪ HEAD (main.go), with a sample value; bool flags as "-name".
const FLANNELD_FLAGS: string[][] = [
  ['-etcd-endpoints', 'http://192.0.2.2:2379'],
  ['-etcd-prefix', '/coreos.com/network'],
  ['-etcd-keyfile', '/k'],
  ['-etcd-certfile', '/c'],
  ['-etcd-cafile', '/ca'],
  ['-etcd-username', 'u'],
  ['-etcd-password', 'p'],
  ['-iface', 'eth0'],
  ['-iface-regex', '(?i)eth[0-9]'],
  ['-iface-can-reach', '192.0.2.1'],
  ['-subnet-file', '/run/flannel/subnet.env'],
  ['-public-ip', '192.0.2.10'],
  ['-subnet-lease-renew-margin', '60'],
  ['-ip-masq'],
  ['-ip-masq-fully-random-disable'],
  ['-kube-subnet-mgr=false'],
  ['-kube-api-url', ''],
  ['-kube-annotation-prefix', 'flannel.alpha.coreos.com'],
  ['-kubeconfig-file', ''],
  ['-healthz-ip', '0.0.0.0'],
  ['-healthz-port', '0'],
  ['-iptables-resync', '5'],
  ['-iptables-forward-rules'],
  ['-ip-blackhole-route=false'],
  ['-net-config-path', '/etc/kube-flannel/net-conf.json'],
  ['-set-node-network-unavailable'],
  ['-v', '2'],
  ['-vmodule', ''],
  ['-log_backtrace_at', ''],
];

t.test('a flanneld command line with every flag parses and starts without notes', async (t) => {
  const { options, unknownEnv } = parseCommandLine(FLANNELD_FLAGS.flat(), {});
  t.same(compatNotes(options, unknownEnv), { fatal: [], warnings: [] });
});

t.test('-kube-subnet-mgr and FLANNELD_KUBE_SUBNET_MGR are refused, not ignored', async (t) => {
  for (const o of [parseFlags(['-kube-subnet-mgr'], {}), parseFlags([], { FLANNELD_KUBE_SUBNET_MGR: 'true' })]) {
    const n = compatNotes(o);
    t.equal(n.fatal.length, 1);
    t.match(n.fatal[0], /-kube-subnet-mgr \(FLANNELD_KUBE_SUBNET_MGR\) is not supported/);
  }
  t.same(compatNotes(parseFlags([], { FLANNELD_KUBE_SUBNET_MGR: 'false' })).fatal, []);
});

t.test('kube-only flags, klog flags and unknown FLANNELD_* are reported', async (t) => {
  const n = compatNotes(parseFlags(['-kube-api-url', 'https://k8s', '-vmodule', 'main=4', '-log_backtrace_at', 'main.go:10'], {}), [
    'FLANNELD_IFACES',
  ]);
  t.same(n.fatal, []);
  t.match(n.warnings, [
    /-kube-api-url is set but has no effect without -kube-subnet-mgr/,
    /-vmodule "main=4" has no effect/,
    /-log_backtrace_at "main\.go:10" has no effect/,
    /FLANNELD_IFACES names no flanneld\/tsflanneld flag/,
  ]);
  t.same(parseCommandLine([], { FLANNELD_IFACES: 'x', FLANNELD_IFACE: 'eth0', OTHER: '1' }).unknownEnv, ['FLANNELD_IFACES']);
  t.match(compatNotes(parseFlags(['-ip-blackhole-route'], {})).fatal, [/-ip-blackhole-route .* not supported/]);
});

t.test('-version prints like flanneld: the v-prefixed version alone on stderr, exit 0', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const path = await import('node:path');
  const fs = await import('node:fs');
  const root = path.resolve(__dirname, '..', '..', '..');
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const res = spawnSync(process.execPath, [path.join(root, 'bin', 'tsflanneld'), '-version'], { encoding: 'utf8' });
  t.equal(res.status, 0);
  t.equal(res.stderr, `v${version}\n`);
  t.equal(res.stdout, '');
});
