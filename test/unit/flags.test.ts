import t, { Test } from 'tap';
import { FLAGS, FlagError, Options, envName, helpText, parseCommandLine, parseFlags, splitRegexList } from '../../src/cli/flags';

const DEFAULTS: Options = {
  etcdEndpoints: ['http://127.0.0.1:4001', 'http://127.0.0.1:2379'],
  etcdPrefix: '/coreos.com/network',
  etcdKeyfile: '',
  etcdCertfile: '',
  etcdCafile: '',
  etcdUsername: '',
  etcdPassword: '',
  iface: [],
  ifaceRegex: [],
  ifaceCanReach: '',
  publicIp: '',
  publicIpv6: '',
  subnetFile: '/run/flannel/subnet.env',
  subnetLeaseRenewMargin: 60,
  ipMasq: false,
  ipMasqFullyRandomDisable: false,
  iptablesResync: 5,
  iptablesForwardRules: true,
  healthzIp: '0.0.0.0',
  healthzPort: 0,
  v: 0,
  version: false,
  help: false,
  kubeSubnetMgr: false,
  kubeApiUrl: '',
  kubeAnnotationPrefix: 'flannel.alpha.coreos.com',
  kubeconfigFile: '',
  netConfPath: '/etc/kube-flannel/net-conf.json',
  setNodeNetworkUnavailable: true,
  ipBlackholeRoute: false,
  vmodule: '',
  logBacktraceAt: '',
  tunName: '',
  vxlanStrictSource: false,
  offload: 'auto',
  dataplaneThreads: 0,
};

function fails(tt: Test, argv: string[], env: NodeJS.ProcessEnv, msg: string | RegExp): void {
  try {
    parseFlags(argv, env);
    tt.fail(`accepted ${JSON.stringify(argv)} ${JSON.stringify(env)}`);
  } catch (e) {
    tt.type(e, FlagError);
    tt.equal((e as Error).name, 'FlagError');
    if (typeof msg === 'string') tt.equal((e as Error).message, msg);
    else tt.match((e as Error).message, msg);
  }
}

t.test('defaults (docs/compat.md §7)', async (t) => {
  t.same(parseFlags([], {}), DEFAULTS);
});

t.test('one or two dashes, separate or = values', async (t) => {
  const o = parseFlags(
    [
      '-etcd-prefix',
      '/a',
      '--subnet-file',
      '/tmp/s.env',
      '-public-ip=192.0.2.5',
      '--healthz-port=8080',
      '-etcd-endpoints=http://e1:2379,https://e2:2379',
    ],
    {},
  );
  t.equal(o.etcdPrefix, '/a');
  t.equal(o.subnetFile, '/tmp/s.env');
  t.equal(o.publicIp, '192.0.2.5');
  t.equal(o.healthzPort, 8080);
  t.same(o.etcdEndpoints, ['http://e1:2379', 'https://e2:2379']);
  // A string flag's value may itself start with "-", as in Go.
  t.equal(parseFlags(['-etcd-password', '-secret-'], {}).etcdPassword, '-secret-');
  t.equal(parseFlags(['-etcd-password='], {}).etcdPassword, '');
  t.equal(parseFlags(['-etcd-password=a=b'], {}).etcdPassword, 'a=b');
  // Last occurrence of a plain flag wins.
  t.equal(parseFlags(['-etcd-prefix=/a', '-etcd-prefix=/b'], {}).etcdPrefix, '/b');
});

t.test('bool forms', async (t) => {
  t.equal(parseFlags(['-ip-masq'], {}).ipMasq, true);
  t.equal(parseFlags(['--ip-masq'], {}).ipMasq, true);
  t.equal(parseFlags(['-ip-masq=true'], {}).ipMasq, true);
  t.equal(parseFlags(['-ip-masq=1'], {}).ipMasq, true);
  t.equal(parseFlags(['-ip-masq=T'], {}).ipMasq, true);
  t.equal(parseFlags(['-ip-masq=false'], {}).ipMasq, false);
  t.equal(parseFlags(['--iptables-forward-rules=false'], {}).iptablesForwardRules, false);
  t.equal(parseFlags(['-iptables-forward-rules=0'], {}).iptablesForwardRules, false);
  // A bool never consumes the next argument; "false" is a positional and stops parsing.
  const cl = parseCommandLine(['-ip-masq', 'false', '-v', '3'], {});
  t.equal(cl.options.ipMasq, true);
  t.equal(cl.options.v, 0);
  t.same(cl.args, ['false', '-v', '3']);
  fails(t, ['-ip-masq=yes'], {}, 'invalid boolean value "yes" for -ip-masq: parse error');
  fails(t, ['-ip-masq='], {}, 'invalid boolean value "" for -ip-masq: parse error');
});

t.test('-- and positionals end the flags', async (t) => {
  const a = parseCommandLine(['-v', '2', '--', '-ip-masq'], {});
  t.equal(a.options.v, 2);
  t.equal(a.options.ipMasq, false);
  t.same(a.args, ['-ip-masq']);
  const b = parseCommandLine(['-', '-ip-masq'], {});
  t.same(b.args, ['-', '-ip-masq']);
  t.equal(b.options.ipMasq, false);
});

t.test('repeatable flags collect in order', async (t) => {
  const o = parseFlags(['-iface', 'eth0', '--iface=192.0.2.1', '-iface-regex', '^eth[0-9]+$', '-iface-regex=^192\\.0\\.2\\.'], {});
  t.same(o.iface, ['eth0', '192.0.2.1']);
  t.same(o.ifaceRegex, ['^eth[0-9]+$', '^192\\.0\\.2\\.']);
});

t.test('ints: Go ParseInt base 0 and ranges', async (t) => {
  t.equal(parseFlags(['-healthz-port', '0x1f90'], {}).healthzPort, 8080);
  t.equal(parseFlags(['-healthz-port', '010'], {}).healthzPort, 8);
  t.equal(parseFlags(['-subnet-lease-renew-margin', '1'], {}).subnetLeaseRenewMargin, 1);
  t.equal(parseFlags(['-subnet-lease-renew-margin', '1439'], {}).subnetLeaseRenewMargin, 1439);
  t.equal(parseFlags(['-iptables-resync=30'], {}).iptablesResync, 30);
  fails(t, ['-healthz-port', 'http'], {}, 'invalid value "http" for flag -healthz-port: parse error');
  fails(t, ['-healthz-port', '1.5'], {}, 'invalid value "1.5" for flag -healthz-port: parse error');
  fails(t, ['-healthz-port', '65536'], {}, 'invalid value "65536" for flag -healthz-port: must be between 0 and 65535');
  fails(t, ['-healthz-port', '-1'], {}, /must be between 0 and 65535/);
  fails(t, ['-healthz-port', '99999999999999999999999'], {}, /value out of range/);
  fails(t, ['-subnet-lease-renew-margin', '0'], {}, 'invalid value "0" for flag -subnet-lease-renew-margin: must be between 1 and 1439');
  fails(t, ['-subnet-lease-renew-margin=1440'], {}, /must be between 1 and 1439/);
  fails(t, ['-iptables-resync', '0'], {}, /-iptables-resync: must be between 1/);
});

t.test('addresses, names and regexes are validated', async (t) => {
  fails(t, ['-public-ip', '192.0.2'], {}, 'invalid value "192.0.2" for flag -public-ip: not an IPv4 address');
  fails(t, ['-public-ip', '2001:db8::1'], {}, /not an IPv4 address/);
  fails(t, ['-public-ipv6', '192.0.2.1'], {}, 'invalid value "192.0.2.1" for flag -public-ipv6: not an IPv6 address');
  fails(t, ['-public-ipv6', '2001:db8::1%eth0'], {}, /not an IPv6 address/);
  t.equal(parseFlags(['-public-ipv6', '2001:DB8::10'], {}).publicIpv6, '2001:DB8::10');
  t.equal(parseFlags([], { FLANNELD_PUBLIC_IPV6: '2001:db8::11' }).publicIpv6, '2001:db8::11');
  t.equal(parseFlags(['-healthz-ip', '::1'], {}).healthzIp, '::1');
  fails(t, ['-healthz-ip', 'localhost'], {}, /-healthz-ip: not an IP address/);
  fails(t, ['-iface-regex', 'eth('], {}, /-iface-regex: not a valid Go \(RE2\) regular expression/);
  // RE2 syntax, as flannel: (?i) is accepted, JavaScript-only look-behind is not.
  t.same(parseFlags(['-iface-regex', '(?i)eth1'], {}).ifaceRegex, ['(?i)eth1']);
  fails(t, ['-iface-regex', '(?<=a)eth'], {}, /not a valid Go \(RE2\) regular expression/);
  t.equal(parseFlags([], { FLANNELD_IFACE_CAN_REACH: '198.51.100.1' }).ifaceCanReach, '198.51.100.1');
  fails(t, ['-iface-can-reach', 'eth0'], {}, /-iface-can-reach: not an IPv4 address/);
  fails(t, ['-iface', ''], {}, /-iface: must not be empty/);
  fails(t, ['-etcd-endpoints', 'http://a:2379,,http://b:2379'], {}, /element "": must not be empty/);
  fails(t, ['-tun-name', 'this-name-is-too-long'], {}, /-tun-name: not a valid Linux interface name/);
  fails(t, ['-tun-name', 'a/b'], {}, /-tun-name/);
  t.equal(parseFlags(['-tun-name', 'ts0'], {}).tunName, 'ts0');
});

t.test('syntax errors', async (t) => {
  fails(t, ['-foo'], {}, 'flag provided but not defined: -foo');
  fails(t, ['--foo=bar'], {}, 'flag provided but not defined: -foo');
  fails(t, ['-kube-subnet-mgr-x'], {}, 'flag provided but not defined: -kube-subnet-mgr-x');
  fails(t, ['-etcd-prefix'], {}, 'flag needs an argument: -etcd-prefix');
  fails(t, ['---v'], {}, 'bad flag syntax: ---v');
  fails(t, ['-=x'], {}, 'bad flag syntax: -=x');
  fails(t, ['--=x'], {}, 'bad flag syntax: --=x');
});

t.test('help and version', async (t) => {
  t.equal(parseFlags(['-help'], {}).help, true);
  t.equal(parseFlags(['--help'], {}).help, true);
  t.equal(parseFlags(['-h'], {}).help, true);
  t.equal(parseFlags(['--version'], {}).version, true);
});

t.test('environment fallback', async (t) => {
  const env = {
    FLANNELD_ETCD_ENDPOINTS: 'http://10.0.0.1:2379,http://10.0.0.2:2379',
    FLANNELD_IP_MASQ: 'true',
    FLANNELD_HEALTHZ_PORT: '9000',
    FLANNELD_IFACE: 'eth0,192.0.2.1',
    FLANNELD_IFACE_REGEX: 'eth[0-9]{1,2},^ens',
    FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '120',
    FLANNELD_PUBLIC_IP: '',
    FLANNELD_TUN_NAME: 'ts1',
    UNRELATED: 'x',
  };
  const o = parseFlags([], env);
  t.same(o.etcdEndpoints, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
  t.equal(o.ipMasq, true);
  t.equal(o.healthzPort, 9000);
  t.same(o.iface, ['eth0', '192.0.2.1']);
  t.same(o.ifaceRegex, ['eth[0-9]{1,2}', '^ens']);
  t.equal(o.subnetLeaseRenewMargin, 120);
  t.equal(o.publicIp, '', 'empty env value counts as unset');
  t.equal(o.tunName, 'ts1');

  // The command line wins over the environment, flag by flag (lists are not merged).
  const p = parseFlags(['-ip-masq=false', '-iface', 'eth9', '--healthz-port', '1'], env);
  t.equal(p.ipMasq, false);
  t.same(p.iface, ['eth9']);
  t.equal(p.healthzPort, 1);
  t.same(p.ifaceRegex, ['eth[0-9]{1,2}', '^ens'], 'untouched flags still come from the environment');

  fails(t, [], { FLANNELD_HEALTHZ_PORT: 'abc' }, 'invalid value "abc" for FLANNELD_HEALTHZ_PORT: parse error');
  fails(t, [], { FLANNELD_IP_MASQ: 'yes' }, 'invalid value "yes" for FLANNELD_IP_MASQ: parse error');
  fails(t, [], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '2000' }, /FLANNELD_SUBNET_LEASE_RENEW_MARGIN: must be between 1 and 1439/);
  fails(t, [], { FLANNELD_PUBLIC_IP: 'nope' }, /FLANNELD_PUBLIC_IP: not an IPv4 address/);
  fails(t, [], { FLANNELD_IFACE_REGEX: 'ok,bad(' }, /FLANNELD_IFACE_REGEX: element "bad\(": not a valid Go \(RE2\) regular expression/);
  // A bad env value for a flag given on the command line is never looked at.
  t.equal(parseFlags(['-healthz-port=5'], { FLANNELD_HEALTHZ_PORT: 'abc' }).healthzPort, 5);
});

t.test('splitRegexList keeps commas inside groups', async (t) => {
  t.same(splitRegexList('a,b'), ['a', 'b']);
  t.same(splitRegexList('x{1,3},[,;],(a|,b),c\\,d'), ['x{1,3}', '[,;]', '(a|,b)', 'c\\,d']);
});

t.test('-dataplane-threads takes 0 (one per CPU) to 64, also from FLANNELD_DATAPLANE_THREADS', async (t) => {
  t.equal(parseFlags(['-dataplane-threads=2'], {}).dataplaneThreads, 2);
  t.equal(parseFlags([], { FLANNELD_DATAPLANE_THREADS: '3' }).dataplaneThreads, 3);
  t.equal(parseFlags([], {}).dataplaneThreads, 0);
  fails(t, ['-dataplane-threads=65'], {}, /dataplane-threads/);
  fails(t, ['-dataplane-threads=two'], {}, /dataplane-threads/);
});

t.test('-offload takes auto or a rung of the ladder, also from FLANNELD_OFFLOAD', async (t) => {
  t.equal(parseFlags(['-offload=none'], {}).offload, 'none');
  t.equal(parseFlags([], { FLANNELD_OFFLOAD: 'no-udp-gro' }).offload, 'no-udp-gro');
  fails(t, ['-offload=fast'], {}, /offload.*must be one of auto, full, no-tun-uso, no-udp-gro, no-udp-gso, none/);
});

t.test('env names', async (t) => {
  t.equal(envName('subnet-lease-renew-margin'), 'FLANNELD_SUBNET_LEASE_RENEW_MARGIN');
  t.equal(envName('v'), 'FLANNELD_V');
});

t.test('help lists every flag with type, default and env var', async (t) => {
  const h = helpText();
  t.match(h, /^Usage: tsflanneld \[OPTIONS\]\n/);
  t.match(h, /FLANNELD_<NAME>/);
  for (const f of FLAGS) {
    t.match(h, new RegExp(`^  -${f.name}( |\\n|\\t)`, 'm'), f.name);
    t.match(h, `[env ${envName(f.name)}]`, f.name);
  }
  t.equal(FLAGS.length, Object.keys(DEFAULTS).length, 'one flag per option');
  t.match(
    h,
    '  -etcd-endpoints string\n    \tcomma-separated list of etcd endpoints (default "http://127.0.0.1:4001,http://127.0.0.1:2379")',
  );
  t.match(h, / {2}-subnet-lease-renew-margin int\n {4}\t.*\(default 60\)/);
  t.match(h, / {2}-iptables-forward-rules\n {4}\t.*\(default true\)/);
  t.match(h, / {2}-iface value\n/);
  t.match(h, / {2}-v int\n/);
  t.notMatch(h, /-ip-masq\n {4}\t.*\(default false\)/);
  // Sorted by name, like Go.
  const names = [...h.matchAll(/^ {2}-([a-z-]+)/gm)].map((m) => m[1]!);
  t.same(names, [...names].sort());
});
