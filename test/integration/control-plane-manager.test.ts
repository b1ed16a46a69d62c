// LeaseManager.acquire in-process against a real etcd: lost create races are retried, endless
// losses give a typed error, own leases that no longer fit the config are cleaned up.
import t from 'tap';
import { withEtcd, type EtcdServer } from '../../netns-fixtures/etcd';
import { parseNetworkConfig } from '../../src/subnet/config';
import { formatIp4Net } from '../../src/subnet/ip4';
import type { LeaseAttrs } from '../../src/subnet/lease';
import { subnetKey } from '../../src/subnet/lease-codec';
import { LeaseAcquireError, LeaseManager } from '../../src/subnet/lease-manager';
import { EtcdRegistry, type Registry } from '../../src/subnet/registry';
import { GatedRegistry, PREFIX, captureLogger, subnetKeys } from './control-plane-helpers';

const ATTRS: LeaseAttrs = {
  PublicIP: '192.0.2.131',
  PublicIPv6: null,
  BackendType: 'vxlan',
  BackendData: { VNI: 1, VtepMAC: '02:00:00:00:01:31' },
};
const OTHER = '{"PublicIP":"192.0.2.199","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:01:99"}}';

/** Before each createLease reaches etcd, another "node" takes that very subnet (up to `times` times). */
class RacingRegistry extends GatedRegistry {
  stolen: string[] = [];
  constructor(
    inner: Registry,
    private readonly etcd: EtcdServer,
    private times: number,
  ) {
    super(inner);
  }
  override async createLease(...a: Parameters<Registry['createLease']>): ReturnType<Registry['createLease']> {
    if (this.times > 0) {
      this.times--;
      const key = subnetKey(a[0], a[1]);
      await this.etcd.etcdctl(['put', `${PREFIX}/subnets/${key}`, OTHER]);
      this.stolen.push(key);
    }
    return super.createLease(...a);
  }
}

function manager(registry: Registry, configText: string, extra: { maxAttempts?: number } = {}) {
  const { log, lines } = captureLogger();
  const m = new LeaseManager({
    registry,
    log,
    config: parseNetworkConfig(configText),
    attrs: ATTRS,
    previous: { subnet: null, ipv6Subnet: null },
    renewMarginMinutes: 60,
    ...extra,
  });
  return { m, lines };
}

async function etcdLeaseCount(etcd: EtcdServer): Promise<number> {
  const out = await etcd.etcdctl(['lease', 'list']);
  return out.split('\n').filter((l) => /^[0-9a-f]+$/.test(l.trim())).length;
}

t.test('a lost create race is retried with a fresh list; the losing grant is revoked', async (t) => {
  const etcd = await withEtcd(t);
  const registry = new RacingRegistry(new EtcdRegistry({ endpoints: [etcd.endpoint], prefix: PREFIX }), etcd, 2);
  t.teardown(() => registry.close());
  const { m, lines } = manager(registry, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  const lease = await m.acquire();
  t.equal(registry.stolen.length, 2, 'lost twice');
  t.notOk(registry.stolen.includes(lease.key), 'won a subnet nobody else took');
  t.equal(lines.filter((l) => /lost the race/.test(l.msg)).length, 2);
  const keys = await subnetKeys(etcd);
  t.equal(keys.size, 3);
  for (const k of registry.stolen) t.equal(keys.get(k), OTHER, 'the winner keeps its value');
  t.equal(await etcdLeaseCount(etcd), 1, 'only the winning grant remains');
});

t.test('losing every race ends in LeaseAcquireError', async (t) => {
  const etcd = await withEtcd(t);
  const registry = new RacingRegistry(new EtcdRegistry({ endpoints: [etcd.endpoint], prefix: PREFIX }), etcd, 100);
  t.teardown(() => registry.close());
  const { m } = manager(registry, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}', { maxAttempts: 3 });
  await t.rejects(m.acquire(), LeaseAcquireError);
  t.equal(registry.stolen.length, 3);
  t.equal(await etcdLeaseCount(etcd), 0, 'no grant leaked');
});

t.test('own leases outside the config: lease deleted, reservation kept with a warning', async (t) => {
  const etcd = await withEtcd(t);
  const grant = /lease ([0-9a-f]+) granted/.exec(await etcd.etcdctl(['lease', 'grant', '86400']))![1]!;
  const mine = JSON.stringify(ATTRS);
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.3.0-24`, mine, `--lease=${grant}`]); // outside [Min..Max]
  await etcd.etcdctl(['put', `${PREFIX}/subnets/10.5.4.0-24`, mine]); // reservation, outside too
  const registry = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix: PREFIX });
  t.teardown(() => registry.close());
  const { m, lines } = manager(
    registry,
    '{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0","Backend":{"Type":"vxlan"}}',
  );
  const lease = await m.acquire();
  const n = (lease.subnet.ip >>> 8) & 255;
  t.ok(n >= 10 && n <= 20, `allocated inside the range (${formatIp4Net(lease.subnet)})`);
  const keys = await subnetKeys(etcd);
  t.notOk(keys.has('10.5.3.0-24'), 'incompatible lease deleted');
  t.ok(keys.has('10.5.4.0-24'), 'reservation left alone');
  t.ok(
    lines.find((l) => l.level === 40 && /reservation 10\.5\.4\.0-24/.test(l.msg)),
    'warned about the reservation',
  );
});
