import t, { Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  SubnetEnvError,
  SubnetEnvValues,
  formatSubnetEnv,
  parseSubnetEnv,
  readPreviousLease,
  writeSubnetEnv,
} from '../../src/subnet/subnet-env';
import { formatIp4Net, parseIp4Net } from '../../src/subnet/ip4';

const V4: SubnetEnvValues = {
  network: parseIp4Net('10.5.0.0/16'),
  subnet: parseIp4Net('10.5.72.0/24'),
  ipv6Network: null,
  ipv6Subnet: null,
  mtu: 1450,
  ipMasq: false,
};

t.test('formats exactly like flanneld', async (t) => {
  t.equal(formatSubnetEnv(V4), 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  t.equal(
    formatSubnetEnv({ ...V4, ipv6Network: 'fc00:0::/48', ipv6Subnet: 'fc00:0:0:48::/64', ipMasq: true, mtu: 8950 }),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:48::1/64\nFLANNEL_MTU=8950\nFLANNEL_IPMASQ=true\n',
  );
  t.equal(
    formatSubnetEnv({ ...V4, network: null, subnet: null, ipv6Network: 'fc00::/48', ipv6Subnet: 'fc00:0:0:48::/64' }),
    'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:48::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
  );
});

t.test('parse: godotenv-like', async (t) => {
  const m = parseSubnetEnv(
    [
      '# written by hand',
      '',
      'FLANNEL_NETWORK=10.5.0.0/16',
      'export FLANNEL_SUBNET="10.5.72.1/24"',
      "FLANNEL_MTU='1450'",
      'FLANNEL_IPMASQ=true # inline comment',
      '  SPACED = value with spaces  ',
      'COLON: yes',
      'ESC="a\\nb\\"c"',
      "LIT='a\\nb'",
      'HASH=a#b',
      'FLANNEL_IPV6_SUBNET=fc00::1/64\r',
      'EMPTY=',
      'DUP=1',
      'DUP=2',
    ].join('\n'),
  );
  t.same(Object.fromEntries(m), {
    FLANNEL_NETWORK: '10.5.0.0/16',
    FLANNEL_SUBNET: '10.5.72.1/24',
    FLANNEL_MTU: '1450',
    FLANNEL_IPMASQ: 'true',
    SPACED: 'value with spaces',
    COLON: 'yes',
    ESC: 'a\nb"c',
    LIT: 'a\\nb',
    HASH: 'a#b',
    FLANNEL_IPV6_SUBNET: 'fc00::1/64',
    EMPTY: '',
    DUP: '2',
  });
  t.same(Object.fromEntries(parseSubnetEnv(formatSubnetEnv(V4))), {
    FLANNEL_NETWORK: '10.5.0.0/16',
    FLANNEL_SUBNET: '10.5.72.1/24',
    FLANNEL_MTU: '1450',
    FLANNEL_IPMASQ: 'false',
  });
});

t.test('parse: malformed lines throw SubnetEnvError', async (t) => {
  for (const bad of ['JUSTTEXT', 'A="unterminated', "A='x", '1BAD=x', 'A B=x', 'A="x" trailing', '\u0000\u0001garbage']) {
    t.throws(() => parseSubnetEnv(bad), SubnetEnvError, JSON.stringify(bad));
  }
  t.throws(() => parseSubnetEnv('OK=1\nNOPE'), /line 2/);
});

async function tmpDir(t: Test): Promise<string> {
  const dir = await fs.mkdtemp(path.join(process.env.TMPDIR ?? '/tmp', 'tsflanneld-subnet-env-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('atomic write creates dirs, sets 0644 and leaves no temp file', async (t) => {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'run', 'flannel', 'subnet.env');
  const oldUmask = process.umask(0o077);
  try {
    await writeSubnetEnv(file, V4);
  } finally {
    process.umask(oldUmask);
  }
  t.equal(await fs.readFile(file, 'utf8'), formatSubnetEnv(V4));
  t.equal((await fs.stat(file)).mode & 0o777, 0o644);
  t.same(await fs.readdir(path.dirname(file)), ['subnet.env']);

  // Replacing an existing file.
  await writeSubnetEnv(file, { ...V4, ipMasq: true });
  t.match(await fs.readFile(file, 'utf8'), /FLANNEL_IPMASQ=true\n$/);
  t.same(await fs.readdir(path.dirname(file)), ['subnet.env']);
});

t.test('write errors are wrapped and name the path', async (t) => {
  const dir = await tmpDir(t);
  const blocker = path.join(dir, 'file');
  await fs.writeFile(blocker, 'x');
  const file = path.join(blocker, 'subnet.env'); // parent is a regular file
  await t.rejects(writeSubnetEnv(file, V4), SubnetEnvError);
  await t.rejects(writeSubnetEnv(file, V4), { message: new RegExp(`cannot write subnet file ${file}`) });
  // A directory in the target's place: rename fails, and the temp file is cleaned up.
  const target = path.join(dir, 'subnet.env');
  await fs.mkdir(path.join(target, 'sub'), { recursive: true });
  await t.rejects(writeSubnetEnv(target, V4), SubnetEnvError);
  t.same((await fs.readdir(dir)).sort(), ['file', 'subnet.env']);
});

t.test('readPreviousLease', async (t) => {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'subnet.env');

  t.same(await readPreviousLease(file), { network: null, subnet: null, ipv6Subnet: null, warning: null }, 'missing file');

  await writeSubnetEnv(file, { ...V4, ipv6Network: 'fc00::/48', ipv6Subnet: 'fc00:0:0:48::/64' });
  const prev = await readPreviousLease(file);
  t.equal(formatIp4Net(prev.subnet!), '10.5.72.0/24', 'FLANNEL_SUBNET .1 is masked to the network');
  t.equal(formatIp4Net(prev.network!), '10.5.0.0/16', 'FLANNEL_NETWORK, for the previous iptables rules');
  t.equal(prev.ipv6Subnet, 'fc00:0:0:48::/64');
  t.equal(prev.warning, null);

  await fs.writeFile(file, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7');
  const trunc = await readPreviousLease(file);
  t.equal(trunc.subnet, null);
  t.match(trunc.warning, /FLANNEL_SUBNET "10\.5\.7" is not a valid IPv4 CIDR/);
  t.match(trunc.warning, file);
  t.equal(formatIp4Net(trunc.network!), '10.5.0.0/16');
  await fs.writeFile(file, 'FLANNEL_NETWORK=10.5.0\nFLANNEL_SUBNET=10.5.7.0/24');
  const badNet = await readPreviousLease(file);
  t.equal(badNet.network, null);
  t.match(badNet.warning, /FLANNEL_NETWORK "10\.5\.0" is not a valid IPv4 CIDR/);

  await fs.writeFile(file, 'FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_SUBNET=nonsense/64\n');
  const half = await readPreviousLease(file);
  t.equal(formatIp4Net(half.subnet!), '10.5.72.0/24');
  t.equal(half.ipv6Subnet, null);
  t.match(half.warning, /FLANNEL_IPV6_SUBNET "nonsense\/64" is not a valid IPv6 CIDR/);

  await fs.writeFile(file, Buffer.from([0, 1, 2, 0xff, 10, 0x41]));
  const corrupt = await readPreviousLease(file);
  t.same({ ...corrupt, warning: null }, { network: null, subnet: null, ipv6Subnet: null, warning: null });
  t.match(corrupt.warning, /is corrupt/);

  await fs.writeFile(file, '');
  t.match((await readPreviousLease(file)).warning, /neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET/);

  await fs.rm(file);
  await fs.mkdir(file);
  const unreadable = await readPreviousLease(file);
  t.equal(unreadable.subnet, null);
  t.match(unreadable.warning, /cannot read previous subnet file/);
});
