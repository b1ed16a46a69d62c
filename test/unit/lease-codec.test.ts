import t from 'tap';
import fc from 'fast-check';
import {
  LeaseDecodeError,
  LeaseEncodeError,
  MacParseError,
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  formatMac,
  goJsonStringify,
  parseMac,
  parseSubnetKey,
  subnetKey,
} from '../../src/subnet/lease-codec';
import { vxlanBackendData, vxlanBackendV6Data } from '../../src/backend/vxlan/lease-data';
import { formatIp4Net, ip4Net, parseIp4Net } from '../../src/subnet/ip4';
import type { LeaseAttrs } from '../../src/subnet/lease';

const FLANNEL_EXAMPLE =
  '{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ae:12:34:56:78:9a"}}';

t.test('docs/compat.md §1 example round-trips byte for byte', async (t) => {
  const attrs = decodeLeaseAttrs(FLANNEL_EXAMPLE);
  t.same(attrs, {
    PublicIP: '192.168.1.10',
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: 'ae:12:34:56:78:9a' },
  });
  t.equal(encodeLeaseAttrs(attrs), FLANNEL_EXAMPLE);
  t.same(vxlanBackendData(attrs), { VNI: 1, VtepMAC: 'ae:12:34:56:78:9a' });
});

t.test('encode: field order, null PublicIPv6, omissions', async (t) => {
  t.equal(encodeLeaseAttrs({ PublicIP: '192.0.2.1', PublicIPv6: null }), '{"PublicIP":"192.0.2.1","PublicIPv6":null}');
  t.equal(
    encodeLeaseAttrs({ PublicIP: '192.0.2.1', PublicIPv6: null, BackendType: '', BackendData: null, BackendV6Data: undefined }),
    '{"PublicIP":"192.0.2.1","PublicIPv6":null}',
  );
  // Key order of the input object must not matter.
  const dual: LeaseAttrs = {
    BackendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:00:02' },
    BackendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' },
    BackendType: 'vxlan',
    PublicIPv6: '2001:DB8:0::10',
    PublicIP: '192.0.2.1',
  };
  t.equal(
    encodeLeaseAttrs(dual),
    '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}}',
  );
  t.same(vxlanBackendV6Data(decodeLeaseAttrs(encodeLeaseAttrs(dual))), { VNI: 1, VtepMAC: '0a:00:00:00:00:02' });
});

t.test('encode escapes like Go (HTML-safe)', async (t) => {
  t.equal(goJsonStringify({ a: '<b>&\u2028' }), '{"a":"\\u003cb\\u003e\\u0026\\u2028"}');
  t.equal(
    encodeLeaseAttrs({ PublicIP: '192.0.2.1', PublicIPv6: null, BackendType: 'x<y' }),
    '{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"x\\u003cy"}',
  );
});

t.test('encode rejects invalid addresses', async (t) => {
  t.throws(() => encodeLeaseAttrs({ PublicIP: '300.1.1.1', PublicIPv6: null }), LeaseEncodeError);
  t.throws(() => encodeLeaseAttrs({ PublicIP: '', PublicIPv6: null }), LeaseEncodeError);
  t.throws(() => encodeLeaseAttrs({ PublicIP: '192.0.2.1', PublicIPv6: 'nope' }), LeaseEncodeError);
});

t.test('decode is Go-like: case-insensitive, unknown keys ignored', async (t) => {
  const a = decodeLeaseAttrs(
    '{"publicip":"10.0.0.1","PUBLICIPV6":"2001:0db8::1","backendtype":"vxlan","backenddata":{"vni":7,"vtepmac":"AE-12-34-56-78-9A"},"Extra":42}',
  );
  t.same(a, {
    PublicIP: '10.0.0.1',
    PublicIPv6: '2001:db8::1',
    BackendType: 'vxlan',
    BackendData: { vni: 7, vtepmac: 'AE-12-34-56-78-9A' },
  });
  t.same(vxlanBackendData(a), { VNI: 7, VtepMAC: 'ae:12:34:56:78:9a' });
  // Go's net.ParseIP(..).To4() accepts v4-mapped text.
  t.equal(decodeLeaseAttrs('{"PublicIP":"::ffff:10.0.0.2"}').PublicIP, '10.0.0.2');
  // UDP-backend style lease: only addresses.
  t.same(decodeLeaseAttrs('{"PublicIP":"10.0.0.3","PublicIPv6":null}'), { PublicIP: '10.0.0.3', PublicIPv6: null });
  t.same(decodeLeaseAttrs('{"PublicIP":"10.0.0.3","BackendData":null,"BackendType":""}'), { PublicIP: '10.0.0.3', PublicIPv6: null });
});

t.test('decode rejects malformed values with a reason', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['not json', /not valid JSON/],
    ['', /not valid JSON/],
    ['[]', /must be a JSON object, got array/],
    ['null', /must be a JSON object, got null/],
    ['{}', /no PublicIP/],
    ['{"PublicIP":null}', /no PublicIP/],
    ['{"PublicIP":17}', /PublicIP must be a string/],
    ['{"PublicIP":"10.0.0"}', /PublicIP is not a valid IPv4 address/],
    ['{"PublicIP":"010.0.0.1"}', /PublicIP is not a valid IPv4 address/],
    ['{"PublicIP":"2001:db8::1"}', /PublicIP is not a valid IPv4 address/],
    ['{"PublicIP":"10.0.0.1","PublicIPv6":5}', /PublicIPv6 must be a string or null/],
    ['{"PublicIP":"10.0.0.1","PublicIPv6":"zz"}', /PublicIPv6 is not a valid IPv6 address/],
    ['{"PublicIP":"10.0.0.1","BackendType":true}', /BackendType must be a string/],
  ];
  for (const [text, re] of cases) {
    try {
      decodeLeaseAttrs(text);
      t.fail(`accepted ${text}`);
    } catch (e) {
      t.type(e, LeaseDecodeError, text);
      t.match((e as Error).message, re, text);
    }
  }
});

t.test('vxlanBackendData needs vxlan type, numeric VNI and a valid MAC', async (t) => {
  const base = { PublicIP: '10.0.0.1', PublicIPv6: null };
  const mac = '0a:1b:2c:3d:4e:5f';
  t.equal(vxlanBackendData({ ...base }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'udp', BackendData: { VNI: 1, VtepMAC: mac } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'VXLAN', BackendData: { VNI: 1, VtepMAC: mac } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VNI: '1', VtepMAC: mac } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VNI: 1.5, VtepMAC: mac } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VtepMAC: mac } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'zz:1b:2c:3d:4e:5f' } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VNI: 1 } }), null);
  t.equal(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: 'x' }), null);
  t.same(vxlanBackendData({ ...base, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0A1B.2C3D.4E5F' } }), { VNI: 1, VtepMAC: mac });
});

t.test('MAC parse/format', async (t) => {
  t.equal(formatMac(Uint8Array.from([0xae, 0x12, 0x34, 0x56, 0x78, 0x9a])), 'ae:12:34:56:78:9a');
  t.equal(formatMac(new Uint8Array(6)), '00:00:00:00:00:00');
  t.same(Array.from(parseMac('AE:12:34:56:78:9a')), [0xae, 0x12, 0x34, 0x56, 0x78, 0x9a]);
  t.same(Array.from(parseMac('ae-12-34-56-78-9a')), [0xae, 0x12, 0x34, 0x56, 0x78, 0x9a]);
  t.same(Array.from(parseMac('ae12.3456.789a')), [0xae, 0x12, 0x34, 0x56, 0x78, 0x9a]);
  for (const bad of [
    '',
    'ae:12:34:56:78',
    'ae:12:34:56:78:9a:bc',
    'ae:12-34:56:78:9a',
    'a:12:34:56:78:9a',
    'ae:12:34:56:78:9g',
    ' ae:12:34:56:78:9a',
  ]) {
    t.throws(() => parseMac(bad), MacParseError, JSON.stringify(bad));
  }
  t.throws(() => formatMac(new Uint8Array(5)), MacParseError);
});

t.test('subnet keys', async (t) => {
  t.equal(subnetKey(parseIp4Net('10.5.72.0/24')), '10.5.72.0-24');
  t.equal(subnetKey(parseIp4Net('10.5.72.0/24'), null), '10.5.72.0-24');
  t.equal(subnetKey(parseIp4Net('10.5.72.0/24'), 'fc00:0:0:48::/64'), '10.5.72.0-24&fc00:0:0:48::-64');
  t.equal(subnetKey(parseIp4Net('10.5.72.0/24'), 'FC00:0000:0000:0048::/64'), '10.5.72.0-24&fc00:0:0:48::-64');

  const p = parseSubnetKey('/coreos.com/network/subnets/10.5.72.0-24');
  t.ok(p);
  t.equal(formatIp4Net(p!.subnet), '10.5.72.0/24');
  t.equal(p!.ipv6Subnet, null);
  const d = parseSubnetKey('10.5.72.0-24&fc00:0:0:48::-64');
  t.equal(formatIp4Net(d!.subnet), '10.5.72.0/24');
  t.equal(d!.ipv6Subnet, 'fc00:0:0:48::/64');
  // Leading zeros in the length are accepted like Go's ParseUint.
  t.equal(formatIp4Net(parseSubnetKey('10.5.72.0-024')!.subnet), '10.5.72.0/24');

  for (const bad of [
    'config',
    '/coreos.com/network/subnets/',
    '10.5.72.0-24/extra',
    '10.5.72.0_24',
    '10.5.72.256-24',
    '10.05.72.0-24',
    '10.5.72.0-32', // ParseUint(…, 10, 5) caps at 31
    '10.5.72.5-24', // host bits set
    '10.5.72.0-24&FC00::-64', // uppercase is not in flannel's pattern
    '10.5.72.0-24&fc00::-128',
    '10.5.72.0-24&fc00::1-64',
    '10.5.72.0-24&fc00:::1-64',
  ]) {
    t.equal(parseSubnetKey(bad), null, bad);
  }
});

t.test('property: subnetKey and parseSubnetKey are inverse', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 31 }), (ip, len) => {
      const net = ip4Net(ip, len);
      const parsed = parseSubnetKey(`/p/subnets/${subnetKey(net)}`);
      return parsed !== null && parsed.subnet.ip === net.ip && parsed.subnet.prefixLen === len && parsed.ipv6Subnet === null;
    }),
  );
  t.pass('round trip holds');
});

t.test('property: encode/decode round trip for vxlan leases', async (t) => {
  fc.assert(
    fc.property(fc.ipV4(), fc.integer({ min: 1, max: 0xffffff }), fc.uint8Array({ minLength: 6, maxLength: 6 }), (ip, vni, mac) => {
      const attrs: LeaseAttrs = {
        PublicIP: ip,
        PublicIPv6: null,
        BackendType: 'vxlan',
        BackendData: { VNI: vni, VtepMAC: formatMac(mac) },
      };
      const text = encodeLeaseAttrs(attrs);
      return encodeLeaseAttrs(decodeLeaseAttrs(text)) === text && vxlanBackendData(decodeLeaseAttrs(text))!.VNI === vni;
    }),
  );
  t.pass('round trip holds');
});
