import t from 'tap';
import fc from 'fast-check';
import { ForwardingTable, ForwardingTableError } from '../../src/dataplane/forwarding-table';
import { ENCAP_LEN } from '../../src/dataplane/vxlan-codec';
import { maskOf, parseIp4, parseIp4Net } from '../../src/subnet/ip4';

const mac = (last: number): Uint8Array => Uint8Array.from([0x02, 0, 0, 0, 0, last]);
const peer = (subnet: string, publicIp: string, last: number) => ({
  subnet: parseIp4Net(subnet),
  publicIp: parseIp4(publicIp),
  vtepMac: mac(last),
});
const ip = parseIp4;

t.test('empty table finds nothing', async (t) => {
  const ft = new ForwardingTable();
  t.equal(ft.lookup(ip('10.5.1.1')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.1')), -1);
  t.equal(ft.peerCount, 0);
});

t.test('lookup by destination and by source', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const b = ft.setPeer(peer('10.5.2.0/24', '192.0.2.12', 2));
  t.not(a, b);
  t.equal(ft.peerCount, 2);
  t.equal(ft.lookup(ip('10.5.1.0')), a);
  t.equal(ft.lookup(ip('10.5.1.255')), a);
  t.equal(ft.lookup(ip('10.5.2.7')), b);
  t.equal(ft.lookup(ip('10.5.2.7') | 0), b, 'int32 form too');
  t.equal(ft.lookup(ip('10.5.3.1')), -1);
  t.equal(ft.lookup(ip('10.6.1.1')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), a);
  t.equal(ft.peerBySource(ip('192.0.2.12')), b);
  t.equal(ft.peerBySource(ip('192.0.2.13')), -1);
  t.equal(ft.publicIp[a]! >>> 0, ip('192.0.2.11'));
  t.same([...ft.vtepMac.subarray(b * 6, b * 6 + 6)], [...mac(2)]);
});

t.test('setPeer replaces MAC and public IP of an existing subnet', async (t) => {
  const ft = new ForwardingTable({ vni: 1, localMac: mac(99) });
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const again = ft.setPeer(peer('10.5.1.0/24', '192.0.2.21', 7));
  t.equal(again, a, 'same slot');
  t.equal(ft.peerCount, 1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1, 'old public IP no longer accepted');
  t.equal(ft.peerBySource(ip('192.0.2.21')), a);
  t.equal(ft.publicIp[a]! >>> 0, ip('192.0.2.21'));
  t.same([...ft.vtepMac.subarray(a * 6, a * 6 + 6)], [...mac(7)]);
  const hdr = ft.encapHeaders.subarray(a * ENCAP_LEN, a * ENCAP_LEN + ENCAP_LEN);
  t.same([...hdr.subarray(0, 8)], [8, 0, 0, 0, 0, 0, 1, 0], 'VXLAN header with VNI 1');
  t.same([...hdr.subarray(8, 14)], [...mac(7)], 'header uses the new MAC');
  t.same([...hdr.subarray(14, 20)], [...mac(99)], 'src MAC = ours');
});

t.test('removePeer', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  ft.setPeer(peer('10.5.2.0/24', '192.0.2.12', 2));
  t.equal(ft.removePeer(parseIp4Net('10.5.1.0/24')), true);
  t.equal(ft.removePeer(parseIp4Net('10.5.1.0/24')), false, 'second remove is a no-op');
  t.equal(ft.removePeer(parseIp4Net('10.5.2.0/25')), false, 'exact subnet only');
  t.equal(ft.lookup(ip('10.5.1.3')), -1);
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1);
  t.equal(ft.lookup(ip('10.5.2.3')) >= 0, true);
  t.equal(ft.peerCount, 1);
  const c = ft.setPeer(peer('10.5.3.0/24', '192.0.2.13', 3));
  t.equal(c, a, 'freed slot is reused');
  t.same(ft.subnetOf(c), parseIp4Net('10.5.3.0/24'));
});

t.test('longest prefix wins among several prefix lengths', async (t) => {
  const ft = new ForwardingTable();
  const wide = ft.setPeer(peer('10.5.0.0/16', '192.0.2.1', 1));
  const mid = ft.setPeer(peer('10.5.4.0/22', '192.0.2.2', 2));
  const narrow = ft.setPeer(peer('10.5.5.0/24', '192.0.2.3', 3));
  const host = ft.setPeer(peer('10.5.5.9/32', '192.0.2.4', 4));
  const all = ft.setPeer(peer('0.0.0.0/0', '192.0.2.5', 5));
  t.equal(ft.lookup(ip('10.5.5.9')), host);
  t.equal(ft.lookup(ip('10.5.5.10')), narrow);
  t.equal(ft.lookup(ip('10.5.6.1')), mid);
  t.equal(ft.lookup(ip('10.5.9.1')), wide);
  t.equal(ft.lookup(ip('172.16.0.1')), all);
  ft.removePeer(parseIp4Net('10.5.5.0/24'));
  t.equal(ft.lookup(ip('10.5.5.10')), mid, 'falls back to the next length');
  ft.removePeer(parseIp4Net('0.0.0.0/0'));
  t.equal(ft.lookup(ip('172.16.0.1')), -1);
});

t.test('several leases behind one public IP: newest set wins, source stays valid until all are gone', async (t) => {
  const ft = new ForwardingTable();
  const a = ft.setPeer(peer('10.5.1.0/24', '192.0.2.11', 1));
  const b = ft.setPeer(peer('10.5.9.0/24', '192.0.2.11', 1));
  t.equal(ft.peerBySource(ip('192.0.2.11')), b);
  ft.removePeer(parseIp4Net('10.5.9.0/24'));
  t.equal(ft.peerBySource(ip('192.0.2.11')), a);
  ft.removePeer(parseIp4Net('10.5.1.0/24'));
  t.equal(ft.peerBySource(ip('192.0.2.11')), -1);
});

t.test('rejects malformed peers', async (t) => {
  const ft = new ForwardingTable();
  t.throws(() => ft.setPeer({ subnet: { ip: ip('10.5.1.1'), prefixLen: 24 }, publicIp: 1, vtepMac: mac(1) }), ForwardingTableError);
  t.throws(() => ft.setPeer({ subnet: parseIp4Net('10.5.1.0/24'), publicIp: 1, vtepMac: new Uint8Array(5) }), ForwardingTableError);
  t.throws(() => ft.setPeer({ subnet: { ip: 0, prefixLen: 33 }, publicIp: 1, vtepMac: mac(1) }), ForwardingTableError);
  t.equal(ft.peerCount, 0);
});

t.test('grows past its initial capacity (1000 peers) and agrees with a linear scan', async (t) => {
  const ft = new ForwardingTable({ initialCapacity: 2, vni: 1, localMac: mac(0) });
  const slots = new Map<number, number>();
  for (let i = 0; i < 1000; i++) {
    const net = ((10 << 24) | (i << 8)) >>> 0;
    slots.set(net, ft.setPeer({ subnet: { ip: net, prefixLen: 24 }, publicIp: (0xc0000200 + i) >>> 0, vtepMac: mac(i & 0xff) }));
  }
  t.equal(ft.peerCount, 1000);
  t.ok(ft.slotCapacity >= 1000);
  let ok = 0;
  for (const [net, slot] of slots) {
    if (ft.lookup(net + 77) === slot && ft.peerBySource(ft.publicIp[slot]!) === slot) ok++;
  }
  t.equal(ok, 1000);
});

t.test('property: lookup equals longest-prefix linear scan', async (t) => {
  const netArb = fc.record({ ip: fc.integer({ min: 0, max: 0xffffffff }), len: fc.constantFrom(8, 16, 20, 24, 28, 32) });
  fc.assert(
    fc.property(
      fc.array(netArb, { maxLength: 30 }),
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 30 }),
      (nets, probes) => {
        const ft = new ForwardingTable();
        const entries = new Map<string, { ip: number; len: number; slot: number }>();
        for (const n of nets) {
          const netIp = (n.ip & maskOf(n.len)) >>> 0;
          const slot = ft.setPeer({ subnet: { ip: netIp, prefixLen: n.len }, publicIp: n.ip, vtepMac: mac(1) });
          entries.set(`${netIp}/${n.len}`, { ip: netIp, len: n.len, slot });
        }
        for (const n of nets) probes.push(n.ip);
        for (const p of probes) {
          let best = -1;
          let bestLen = -1;
          for (const e of entries.values()) {
            if ((p & maskOf(e.len)) >>> 0 === e.ip && e.len > bestLen) {
              best = e.slot;
              bestLen = e.len;
            }
          }
          if (ft.lookup(p) !== best) return false;
        }
        return true;
      },
    ),
  );
  t.pass('lookup matches the linear scan for all generated tables');
});
