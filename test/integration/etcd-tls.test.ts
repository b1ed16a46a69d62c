// etcd client security (docs/compat.md §1 "etcd client"): tsflanneld daemons (control plane only,
// in the root namespace, etcd on 127.0.0.1) against etcd serving TLS with client-certificate auth,
// and against etcd with user/password authentication. Failures must be logged with the endpoint and
// retried, never crash the daemon.
import t, { type Test } from 'tap';
import { withEtcd, type EtcdServer } from '../../netns-fixtures/etcd';
import { withTlsFiles, type TlsFiles } from '../../netns-fixtures/tls';
import { flannelLeaseValue, randomVtepMac } from '../../netns-fixtures/testbed';
import {
  PREFIX,
  VXLAN_CONFIG,
  keyOfSubnet,
  putConfig,
  startNode,
  subnetKeys,
  subnetOfEnv,
  tmpDir,
  waitFor,
  type NodeProc,
} from './control-plane-helpers';

const ROOT_PASSWORD = 'r00t-pw';
const USER = 'flannel';
const PASSWORD = 's3cret-pw';

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** Waits for at least `n` log lines matching re: a daemon that keeps retrying logs each attempt at debug level (-v=1). */
async function waitForRepeats(node: NodeProc, re: RegExp, n: number): Promise<void> {
  await waitFor(`${n} log lines ${re}\n${node.stderrText.slice(-5).join('\n')}`, () => {
    if (node.exitCode !== null) throw new Error(`daemon exited with ${node.exitCode}`);
    return node.logs.filter((l) => re.test(l.msg)).length >= n;
  });
}

/**
 * Every retry line names the cause, also while etcd3's circuit breaker refuses to try (the registry
 * appends the last real failure to the breaker's own message).
 */
function assertEveryRetryNames(t: Test, node: NodeProc, re: RegExp, cause: RegExp): void {
  const lines = node.logs.filter((l) => re.test(l.msg));
  t.ok(lines.length > 0, 'retries were logged');
  t.same(
    lines.filter((l) => !cause.test(l.msg)).map((l) => l.msg),
    [],
    `every retry names the cause (${cause})`,
  );
}

/** Asserts the lease of a ready node is in etcd with its public IP. */
async function assertLease(t: Test, etcd: EtcdServer, node: NodeProc, publicIp: string): Promise<string> {
  const env = await node.waitForSubnetEnv();
  const subnet = subnetOfEnv(env);
  const value = (await subnetKeys(etcd)).get(keyOfSubnet(subnet));
  t.ok(value, `lease ${subnet} is in etcd`);
  t.equal((JSON.parse(value ?? '{}') as { PublicIP?: string }).PublicIP, publicIp, 'with our public IP');
  return subnet;
}

function tlsEtcdOptions(files: TlsFiles, clientCertAuth: boolean) {
  return {
    caFile: files.caFile,
    certFile: files.serverCertFile,
    keyFile: files.serverKeyFile,
    clientCertAuth,
    clientCertFile: files.clientCertFile,
    clientKeyFile: files.clientKeyFile,
  };
}

t.test('etcd over TLS with client certificate auth', async (t) => {
  const files = await withTlsFiles(t, { serverIps: ['127.0.0.1'] });
  const etcd = await withEtcd(t, { tls: tlsEtcdOptions(files, true) });
  t.match(etcd.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
  await putConfig(etcd, VXLAN_CONFIG);
  const endpointRe = escape(etcd.endpoint);

  t.test('with CA, client cert and key: acquires a lease over https', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.1',
      dir: tmpDir(t),
      args: [`-etcd-cafile=${files.caFile}`, `-etcd-certfile=${files.clientCertFile}`, `-etcd-keyfile=${files.clientKeyFile}`],
    });
    await assertLease(t, etcd, node, '198.51.100.1');
    t.equal(await node.stop(), 0, 'clean exit on SIGTERM');
    // etcd addressed by IP: Node's DEP0123 (TLS server name is an IP) must not reach the log as a warning.
    t.notOk(
      node.stderrText.some((l) => /DEP0123|DeprecationWarning/.test(l) && !/"level":20/.test(l)),
      'no DEP0123 warning on stderr',
    );
  });

  t.test('TLS flags via FLANNELD_* environment work the same', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.2',
      dir: tmpDir(t),
      env: {
        FLANNELD_ETCD_CAFILE: files.caFile,
        FLANNELD_ETCD_CERTFILE: files.clientCertFile,
        FLANNELD_ETCD_KEYFILE: files.clientKeyFile,
      },
    });
    await assertLease(t, etcd, node, '198.51.100.2');
    await node.stop();
  });

  t.test('without client certificate: logs an error naming the endpoint and keeps retrying', async (t) => {
    const node = startNode(t, etcd, { publicIp: '198.51.100.3', dir: tmpDir(t), args: [`-etcd-cafile=${files.caFile}`, '-v=1'] });
    const re = new RegExp(`etcd at ${endpointRe} .*; retrying`, 's');
    const line = await node.waitForLog(re);
    t.equal(line.level, 40, 'first occurrence is a warning');
    t.comment(line.msg);
    await waitForRepeats(node, re, 3);
    assertEveryRetryNames(t, node, re, /bad certificate/);
    t.equal(node.exitCode, null, 'still running');
    t.notOk(node.findLog(/^wrote /), 'no subnet.env written');
    node.kill();
    await node.exited;
  });

  t.test('client certificate from another CA: refused, error names the endpoint', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.4',
      dir: tmpDir(t),
      args: [
        `-etcd-cafile=${files.caFile}`,
        `-etcd-certfile=${files.rogueClientCertFile}`,
        `-etcd-keyfile=${files.rogueClientKeyFile}`,
        '-v=1',
      ],
    });
    const re = new RegExp(`etcd at ${endpointRe} .*; retrying`, 's');
    t.comment((await node.waitForLog(re)).msg);
    await waitForRepeats(node, re, 2);
    assertEveryRetryNames(t, node, re, /bad certificate/);
    t.equal(node.exitCode, null, 'still running');
    node.kill();
    await node.exited;
  });

  t.test('no CA: the self-signed server certificate is not trusted', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.5',
      dir: tmpDir(t),
      args: [`-etcd-certfile=${files.clientCertFile}`, `-etcd-keyfile=${files.clientKeyFile}`, '-v=1'],
    });
    const re = new RegExp(`etcd at ${endpointRe} .*; retrying`, 's');
    t.comment((await node.waitForLog(re)).msg);
    await waitForRepeats(node, re, 2);
    assertEveryRetryNames(t, node, re, /unable to verify/);
    t.equal(node.exitCode, null, 'still running');
    node.kill();
    await node.exited;
  });

  t.test('unreadable key file: fatal error naming the file', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.6',
      dir: tmpDir(t),
      args: [`-etcd-cafile=${files.caFile}`, `-etcd-certfile=${files.clientCertFile}`, `-etcd-keyfile=${files.dir}/missing.key`],
    });
    t.equal(await node.waitForExit(), 1, 'exit 1');
    const line = node.logs.find((l) => l.level === 60);
    t.ok(line, 'a fatal log line');
    t.match(line?.msg ?? '', /missing\.key/, 'names the file');
    t.match(line?.msg ?? '', new RegExp(endpointRe), 'names the endpoint');
  });
});

t.test('etcd over TLS, server certificate only (no client certificates required)', async (t) => {
  const files = await withTlsFiles(t, { serverIps: ['127.0.0.1'] });
  const etcd = await withEtcd(t, { tls: tlsEtcdOptions(files, false) });
  await putConfig(etcd, VXLAN_CONFIG);

  t.test('-etcd-cafile alone is enough for an https endpoint', async (t) => {
    const node = startNode(t, etcd, { publicIp: '198.51.100.11', dir: tmpDir(t), args: [`-etcd-cafile=${files.caFile}`] });
    await assertLease(t, etcd, node, '198.51.100.11');
    await node.stop();
  });

  t.test('a plain http endpoint against the TLS listener fails with a clear error', async (t) => {
    const httpEndpoint = etcd.endpoint.replace(/^https:/, 'http:');
    const node = startNode(t, etcd, { publicIp: '198.51.100.12', dir: tmpDir(t), args: [`-etcd-endpoints=${httpEndpoint}`, '-v=1'] });
    const re = new RegExp(`etcd at ${escape(httpEndpoint)} .*; retrying`, 's');
    t.comment((await node.waitForLog(re)).msg);
    await waitForRepeats(node, re, 2);
    t.equal(node.exitCode, null, 'still running');
    node.kill();
    await node.exited;
  });
});

t.test('etcd with user/password authentication', async (t) => {
  const files = await withTlsFiles(t, { serverIps: ['127.0.0.1'] });
  const etcd = await withEtcd(t, { auth: { rootPassword: ROOT_PASSWORD, user: USER, password: PASSWORD } });
  await putConfig(etcd, VXLAN_CONFIG);
  const endpointRe = escape(etcd.endpoint);

  t.test('right username and password: acquires a lease, sees peers, survives an etcd restart', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.21',
      dir: tmpDir(t),
      args: [`-etcd-username=${USER}`, `-etcd-password=${PASSWORD}`],
    });
    const own = await assertLease(t, etcd, node, '198.51.100.21');
    t.not(own, '10.5.201.0/24');

    await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.201.0-24`, flannelLeaseValue('198.51.100.201', randomVtepMac())]);
    await node.waitForLog(/^peer lease added: 10\.5\.201\.0\/24/);

    // etcd keeps auth tokens in memory: after a restart every token the client holds is invalid,
    // and the watch must re-authenticate instead of failing forever.
    await etcd.stop();
    await node.waitForLog(/watch on .* lost/);
    await etcd.start();
    await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.202.0-24`, flannelLeaseValue('198.51.100.202', randomVtepMac())]);
    await node.waitForLog(/^peer lease added: 10\.5\.202\.0\/24/, 60000);
    t.pass('peer written after the etcd restart was seen');
    t.equal(node.exitCode, null, 'still running');
    t.equal(await node.stop(), 0);
  });

  t.test('username/password via FLANNELD_ETCD_USERNAME / FLANNELD_ETCD_PASSWORD', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.22',
      dir: tmpDir(t),
      env: { FLANNELD_ETCD_USERNAME: USER, FLANNELD_ETCD_PASSWORD: PASSWORD },
    });
    await assertLease(t, etcd, node, '198.51.100.22');
    await node.stop();
  });

  t.test('a CA file with a plain http endpoint changes nothing (TLS only for https or client certs)', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.26',
      dir: tmpDir(t),
      args: [`-etcd-cafile=${files.caFile}`, `-etcd-username=${USER}`, `-etcd-password=${PASSWORD}`],
    });
    await assertLease(t, etcd, node, '198.51.100.26');
    await node.stop();
  });

  t.test('wrong password: one clear fatal line naming the endpoint, exit 1 (as flanneld)', async (t) => {
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.23',
      dir: tmpDir(t),
      args: [`-etcd-username=${USER}`, '-etcd-password=wrong', '-v=1'],
    });
    const re = new RegExp(`etcd refused the credentials of user "${USER}": etcd at ${endpointRe} .*authentication failed.*-etcd-password`);
    const line = await node.waitForLog(re);
    t.comment(line.msg);
    t.equal(line.level, 60, 'fatal');
    t.notMatch(line.msg, /wrong/, 'the password is not logged');
    await node.exited;
    t.equal(node.exitCode, 1, 'exit 1');
    t.notOk(
      node.stderrText.some((l) => l.includes('-etcd-password=wrong') || l.includes('"wrong"')),
      'nor anywhere on stderr',
    );
  });

  t.test('no credentials: refused (user name is empty), named, retried', async (t) => {
    const node = startNode(t, etcd, { publicIp: '198.51.100.24', dir: tmpDir(t), args: ['-v=1'] });
    const re = new RegExp(`etcd at ${endpointRe} .*(permission denied|user name is empty).*; retrying`, 'i');
    t.comment((await node.waitForLog(re)).msg);
    await waitForRepeats(node, re, 2);
    node.kill();
    await node.exited;
  });

  t.test('user without rights on the prefix: permission denied', async (t) => {
    await etcd.etcdctl(['put', '/other/network/config', JSON.stringify(VXLAN_CONFIG)]);
    const node = startNode(t, etcd, {
      publicIp: '198.51.100.25',
      dir: tmpDir(t),
      args: [`-etcd-username=${USER}`, `-etcd-password=${PASSWORD}`, '-etcd-prefix=/other/network', '-v=1'],
    });
    const re = new RegExp(`etcd at ${endpointRe} .*permission denied.*; retrying`, 'i');
    t.comment((await node.waitForLog(re)).msg);
    node.kill();
    await node.exited;
  });
});

t.test('etcd with TLS client certificates and user/password together', async (t) => {
  const files = await withTlsFiles(t, { serverIps: ['127.0.0.1'] });
  const etcd = await withEtcd(t, {
    tls: tlsEtcdOptions(files, true),
    auth: { rootPassword: ROOT_PASSWORD, user: USER, password: PASSWORD },
  });
  await putConfig(etcd, VXLAN_CONFIG);
  const node = startNode(t, etcd, {
    publicIp: '198.51.100.31',
    dir: tmpDir(t),
    args: [
      `-etcd-cafile=${files.caFile}`,
      `-etcd-certfile=${files.clientCertFile}`,
      `-etcd-keyfile=${files.clientKeyFile}`,
      `-etcd-username=${USER}`,
      `-etcd-password=${PASSWORD}`,
    ],
  });
  await assertLease(t, etcd, node, '198.51.100.31');
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.203.0-24`, flannelLeaseValue('198.51.100.203', randomVtepMac())]);
  await node.waitForLog(/^peer lease added: 10\.5\.203\.0\/24/);
  t.equal(await node.stop(), 0);
});
