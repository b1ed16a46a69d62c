import t from 'tap';
import { parseNetworkConfig } from '../../src/subnet/config';
import { formatIp4Net, parseIp4Net } from '../../src/subnet/ip4';
import type { Lease, LeaseAttrs } from '../../src/subnet/lease';
import { OutOfSubnetsError, describeSubnets, judgeRefusedRenewal, planAcquire, renewDelayMs } from '../../src/subnet/lease-policy';

const config = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
const ours: LeaseAttrs = {
  PublicIP: '192.0.2.1',
  PublicIPv6: null,
  BackendType: 'vxlan',
  BackendData: { VNI: 1, VtepMAC: 'aa:00:00:00:00:01' },
};
const theirs: LeaseAttrs = { ...ours, PublicIP: '192.0.2.2' };
const lease = (cidr: string, attrs: LeaseAttrs, etcdLeaseId = '7'): Lease => ({
  key: cidr.replace('/', '-'),
  subnet: parseIp4Net(cidr),
  ipv6Subnet: null,
  attrs,
  etcdLeaseId,
  modRevision: '3',
});
const none = { subnet: null, ipv6Subnet: null };

t.test('1. our fitting lease is reused; a fitting reservation wins over a lease', async (t) => {
  const l = lease('10.5.9.0/24', ours);
  t.same(planAcquire({ config, attrs: ours, leases: [lease('10.5.8.0/24', theirs), l], occupied: [], previous: none }).step, {
    kind: 'reuse',
    lease: l,
    reservation: false,
  });
  const r = lease('10.5.10.0/24', ours, '0');
  const plan = planAcquire({ config, attrs: ours, leases: [l, r], occupied: [], previous: none });
  t.same(plan.step, { kind: 'reuse', lease: r, reservation: true });
});

t.test('our leases that do not fit the config are discarded, reservations only ignored', async (t) => {
  const wrongLen = lease('10.5.9.0/25', ours);
  const outside = lease('10.6.0.0/24', ours, '0');
  const plan = planAcquire({ config, attrs: ours, leases: [wrongLen, outside], occupied: [], previous: none, random: () => 0 });
  t.same(plan.discard, [wrongLen]);
  t.same(plan.ignore, [outside]);
  t.equal(plan.step.kind, 'create');
});

t.test('2. the previous subnet is re-created when free and fitting, else allocation', async (t) => {
  const prev = { subnet: parseIp4Net('10.5.42.0/24'), ipv6Subnet: null };
  const free = planAcquire({ config, attrs: ours, leases: [], occupied: [], previous: prev });
  t.same(free.step, { kind: 'create', subnets: prev, source: 'previous' });
  // Held by another node, or occupied by an unreadable key: allocate instead.
  const held = planAcquire({ config, attrs: ours, leases: [lease('10.5.42.0/24', theirs)], occupied: [], previous: prev, random: () => 0 });
  t.same(held.step.kind === 'create' && [held.step.source, describeSubnets(held.step.subnets)], ['allocated', '10.5.1.0/24']);
  const occupied = planAcquire({ config, attrs: ours, leases: [], occupied: [prev], previous: prev, random: () => 0 });
  t.equal(occupied.step.kind === 'create' && occupied.step.source, 'allocated');
  const outside = planAcquire({
    config,
    attrs: ours,
    leases: [],
    occupied: [],
    previous: { subnet: parseIp4Net('10.9.0.0/24'), ipv6Subnet: null },
  });
  t.equal(outside.step.kind === 'create' && outside.step.source, 'allocated');
});

t.test('3. allocation skips taken subnets; none free is OutOfSubnetsError', async (t) => {
  const small = parseNetworkConfig('{"Network":"10.5.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
  const leases = [lease('10.5.1.0/24', theirs), lease('10.5.2.0/24', theirs)];
  const plan = planAcquire({ config: small, attrs: ours, leases, occupied: [], previous: none, random: () => 0 });
  t.equal(plan.step.kind === 'create' && formatIp4Net(plan.step.subnets.subnet), '10.5.3.0/24');
  t.throws(
    () => planAcquire({ config: small, attrs: ours, leases: [...leases, lease('10.5.3.0/24', theirs)], occupied: [], previous: none }),
    OutOfSubnetsError,
  );
});

t.test('renewal timing and refused renewals', async (t) => {
  t.equal(renewDelayMs(86400, 60), 23 * 3600 * 1000);
  t.equal(renewDelayMs(10, 60), 1000, 'never below 1 s');
  t.same(judgeRefusedRenewal(config, ours, null), { kind: 'revoke', reason: 'deleted', by: null });
  t.same(judgeRefusedRenewal(config, ours, lease('10.5.9.0/24', theirs)), { kind: 'revoke', reason: 'taken-over', by: theirs });
  const re = lease('10.5.9.0/24', { ...ours, BackendData: { VNI: 1, VtepMAC: 'aa:00:00:00:00:99' } });
  t.same(judgeRefusedRenewal(config, ours, re), { kind: 'adopt', lease: re, keepRenewing: true });
  const res = lease('10.5.9.0/24', ours, '0');
  t.same(judgeRefusedRenewal(config, ours, res), { kind: 'adopt', lease: res, keepRenewing: false });
});

t.test('EnableIPv6 switched on or off: the IPv4 part of our old lease or subnet.env is kept when free', async (t) => {
  const dual = parseNetworkConfig('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
  const old = lease('10.5.42.0/24', ours); // IPv4-only lease: no IPv6 part, so it does not fit
  const on = planAcquire({ config: dual, attrs: ours, leases: [old], occupied: [], previous: none, random: () => 0 });
  t.same(on.discard, [old]);
  t.same(on.step.kind === 'create' && describeSubnets(on.step.subnets), '10.5.42.0/24 + fc00:0:0:1::/64', 'IPv4 kept, IPv6 allocated');
  // Only the previous subnet.env knows it (the lease is gone), and it has no IPv6 subnet yet.
  const prev = { subnet: parseIp4Net('10.5.43.0/24'), ipv6Subnet: null };
  const fromEnv = planAcquire({ config: dual, attrs: ours, leases: [], occupied: [], previous: prev, random: () => 0 });
  t.same(fromEnv.step.kind === 'create' && describeSubnets(fromEnv.step.subnets), '10.5.43.0/24 + fc00:0:0:1::/64');
  // Held by another node meanwhile: allocated anew.
  const held = planAcquire({
    config: dual,
    attrs: ours,
    leases: [lease('10.5.43.0/24', theirs)],
    occupied: [],
    previous: prev,
    random: () => 0,
  });
  t.same(held.step.kind === 'create' && describeSubnets(held.step.subnets), '10.5.1.0/24 + fc00:0:0:1::/64');
  // Switched off: a dual-stack lease of ours keeps its IPv4 part.
  const dualLease: Lease = { ...lease('10.5.44.0/24', ours), key: '10.5.44.0-24&fc00:0:0:9::-64', ipv6Subnet: 'fc00:0:0:9::/64' };
  const off = planAcquire({ config, attrs: ours, leases: [dualLease], occupied: [], previous: none, random: () => 0 });
  t.same(off.step.kind === 'create' && describeSubnets(off.step.subnets), '10.5.44.0/24');
});
