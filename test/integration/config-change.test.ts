// A <prefix>/config edited while the daemon runs is reported (once per change), not silently ignored.
import path from 'node:path';
import t from 'tap';
import { withEtcd } from '../../netns-fixtures/etcd';
import { parseFlags } from '../../src/cli/flags';
import { runDaemon } from '../../src/daemon/daemon';
import { PREFIX, captureLogger, putConfig, tmpDir, waitFor } from './control-plane-helpers';

t.test('runtime config change: logged once per change, and when reverted', async (t) => {
  const etcd = await withEtcd(t);
  const config = { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } };
  await putConfig(etcd, config);
  const subnetFile = path.join(tmpDir(t), 'subnet.env');
  const options = parseFlags(
    [`-etcd-endpoints=${etcd.endpoint}`, '-iface=127.0.0.1', '-public-ip=192.0.2.131', `-subnet-file=${subnetFile}`],
    {},
  );
  const { log, lines } = captureLogger();
  const stop = new AbortController();
  let ready = false;
  const done = runDaemon(options, { configCheckSeconds: 1, log, signal: stop.signal, onReady: () => (ready = true) });
  t.teardown(() => stop.abort());
  await waitFor('ready', () => ready);
  const changed = (): string[] => lines.filter((l) => /changed \(/.test(l.msg)).map((l) => l.msg);

  await putConfig(etcd, { ...config, Backend: { Type: 'vxlan', VNI: 4 } });
  await waitFor('change logged', () => changed().length === 1);
  t.match(changed()[0], /network config in \/coreos\.com\/network\/config changed \(Backend\.VNI 1 → 4\); not applied: .*restart/);
  await new Promise((r) => setTimeout(r, 2500));
  t.equal(changed().length, 1, 'logged once, not every check');

  await etcd.etcdctl(['put', `${PREFIX}/config`, '{"Network":']);
  await waitFor('invalid logged', () => lines.some((l) => /is now invalid/.test(l.msg)));
  await putConfig(etcd, config);
  await waitFor('revert logged', () => lines.some((l) => /back to the one in effect/.test(l.msg)));
  t.pass('invalid and reverted configs are reported');
  stop.abort();
  t.equal(await done, 0);
});
