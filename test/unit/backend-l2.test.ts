import t from 'tap';
import { describeAddrs, isOnLink } from '../../src/backend/l2';
import { parseIp4 } from '../../src/subnet/ip4';

const ip = parseIp4;

t.test('isOnLink: inside a prefix of the interface, or its point-to-point peer', async (t) => {
  const addrs = [
    { ip: ip('192.0.2.11'), prefixLen: 24 },
    { ip: ip('203.0.113.1'), prefixLen: 32, peer: ip('203.0.113.9') },
  ];
  t.ok(isOnLink(ip('192.0.2.12'), addrs), 'same /24');
  t.notOk(isOnLink(ip('192.0.2.11'), addrs), 'our own address is no peer next hop');
  t.notOk(isOnLink(ip('198.51.100.13'), addrs), 'behind a router');
  t.ok(isOnLink(ip('203.0.113.9'), addrs), 'point-to-point peer');
  t.notOk(isOnLink(ip('203.0.113.2'), addrs));
  t.notOk(isOnLink(ip('192.0.2.12'), [{ ip: ip('192.0.2.11'), prefixLen: 32 }]), 'a /32 has no neighbours');
  t.notOk(isOnLink(ip('192.0.2.12'), []), 'no addresses');
  t.equal(describeAddrs(addrs), '192.0.2.11/24, 203.0.113.1/32');
  t.equal(describeAddrs([]), 'no IPv4 address');
});
