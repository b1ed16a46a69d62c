// The daemon in-process with recording DataPlaneHooks: call order and arguments, snapshot delivery,
// clean stop on abort, and a failing data plane being fatal.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { withEtcd } from '../../netns-fixtures/etcd';
import { parseFlags } from '../../src/cli/flags';
import { runDaemon, type DataPlaneContext, type DataPlaneHooks } from '../../src/daemon/daemon';
import { formatIp4Net } from '../../src/subnet/ip4';
import type { LeaseEvent } from '../../src/subnet/lease';
import { PREFIX, captureLogger, putConfig, tmpDir, waitFor } from './control-plane-helpers';

const PEER = '{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}';

class RecordingHooks implements DataPlaneHooks {
  calls: string[] = [];
  ctx: DataPlaneContext | null = null;
  batches: LeaseEvent[][] = [];
  subnetEnvExistedAtStart: boolean | null = null;
  failApply = false;
  constructor(private readonly subnetFile: string) {}
  async start(ctx: DataPlaneContext): Promise<void> {
    this.calls.push('start');
    this.ctx = ctx;
    this.subnetEnvExistedAtStart = fs.existsSync(this.subnetFile);
  }
  async applyEvents(events: LeaseEvent[]): Promise<void> {
    this.calls.push('applyEvents');
    this.batches.push(events);
    if (this.failApply) throw new Error('netlink said no');
  }
  async stop(): Promise<void> {
    this.calls.push('stop');
  }
}

t.test('hooks: start before subnet.env, snapshot then live batches, stop on abort; exit 0', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: 7, MTU: 1500 } });
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.72.0-24`, PEER]);
  const dir = tmpDir(t);
  const subnetFile = path.join(dir, 'subnet.env');
  const options = parseFlags(
    [`-etcd-endpoints=${etcd.endpoint}`, '-iface=127.0.0.1', '-public-ip=192.0.2.121', `-subnet-file=${subnetFile}`],
    {},
  );
  const hooks = new RecordingHooks(subnetFile);
  const { log, lines } = captureLogger();
  const stop = new AbortController();
  let ready = false;
  const done = runDaemon(options, { hooks, log, signal: stop.signal, onReady: () => (ready = true) });
  t.teardown(() => stop.abort());

  await waitFor('snapshot batch', () => hooks.batches.length >= 1);
  t.ok(ready, 'onReady called');
  t.equal(hooks.subnetEnvExistedAtStart, false, 'subnet.env written only after hooks.start');
  const ctx = hooks.ctx!;
  t.equal(ctx.mtu, 1450, 'Backend.MTU − 50');
  t.equal(ctx.publicIp, '192.0.2.121');
  t.equal(ctx.iface.name, 'lo');
  t.equal(ctx.config.backend.vni, 7);
  t.match(ctx.vtepMac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  t.same(ctx.lease.attrs, {
    PublicIP: '192.0.2.121',
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 7, VtepMAC: ctx.vtepMac },
  });
  t.same(
    hooks.batches[0]!.map((e) => `${e.type} ${formatIp4Net(e.lease.subnet)}`),
    ['added 10.5.72.0/24'],
  );

  await etcd.etcdctl(['del', `${PREFIX}/subnets/10.5.72.0-24`]);
  await waitFor('removal batch', () => hooks.batches.length >= 2);
  t.same(
    hooks.batches[1]!.map((e) => `${e.type} ${formatIp4Net(e.lease.subnet)}`),
    ['removed 10.5.72.0/24'],
  );

  stop.abort();
  t.equal(await done, 0);
  t.same(hooks.calls, ['start', 'applyEvents', 'applyEvents', 'stop']);
  t.equal(lines.filter((l) => l.level >= 50).length, 0, 'no errors logged');
  t.ok(lines.find((l) => /the lease stays in etcd/.test(l.msg)));
});

t.test('a failing data plane is fatal: logged once, exit 1, hooks stopped', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.72.0-24`, PEER]);
  const subnetFile = path.join(tmpDir(t), 'subnet.env');
  const options = parseFlags(
    [`-etcd-endpoints=${etcd.endpoint}`, '-iface=127.0.0.1', '-public-ip=192.0.2.122', `-subnet-file=${subnetFile}`],
    {},
  );
  const hooks = new RecordingHooks(subnetFile);
  hooks.failApply = true;
  const { log, lines } = captureLogger();
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  t.equal(await runDaemon(options, { hooks, log, signal: stop.signal }), 1);
  const fatal = lines.filter((l) => l.level === 60);
  t.equal(fatal.length, 1);
  t.match(fatal[0]?.msg, /^data plane failed to apply 1 lease event\(s\): netlink said no$/);
  t.same(hooks.calls, ['start', 'applyEvents', 'stop']);
});

t.test('an asynchronous fatal report from the data plane (ctx.fatal / connectFatal) stops the daemon with exit 1', async (t) => {
  const etcd = await withEtcd(t);
  await putConfig(etcd, { Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } });
  const subnetFile = path.join(tmpDir(t), 'subnet.env');
  const options = parseFlags(
    [`-etcd-endpoints=${etcd.endpoint}`, '-iface=127.0.0.1', '-public-ip=192.0.2.123', `-subnet-file=${subnetFile}`],
    {},
  );
  const hooks = new RecordingHooks(subnetFile);
  const { log, lines } = captureLogger();
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  let report: ((err: Error) => void) | null = null;
  const done = runDaemon(options, { hooks, log, signal: stop.signal, connectFatal: (r) => (report = r) });
  t.ok(report, 'reporter connected synchronously');
  await waitFor('snapshot batch', () => hooks.batches.length >= 1);
  hooks.ctx!.fatal(new Error('TUN read failed: EIO'));
  t.equal(await done, 1);
  const fatal = lines.filter((l) => l.level === 60);
  t.equal(fatal.length, 1, 'logged once');
  t.equal(fatal[0]?.msg, 'data plane failed: TUN read failed: EIO');
  t.same(hooks.calls, ['start', 'applyEvents', 'stop']);
  t.ok(fs.existsSync(subnetFile));
});
