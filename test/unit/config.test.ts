import t, { Test } from 'tap';
import { ConfigError, parseNetworkConfig } from '../../src/subnet/config';
import { formatIp4, formatIp4Net } from '../../src/subnet/ip4';

function rejects(tt: Test, json: string, msg: RegExp | string): void {
  try {
    parseNetworkConfig(json);
    tt.fail(`accepted ${json}`);
  } catch (e) {
    tt.type(e, ConfigError, json);
    tt.equal((e as Error).name, 'ConfigError');
    if (typeof msg === 'string') tt.equal((e as Error).message, msg, json);
    else tt.match((e as Error).message, msg, json);
  }
}

t.test('defaults for a /16', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  t.equal(c.enableIPv4, true);
  t.equal(c.enableIPv6, false);
  t.equal(formatIp4Net(c.network!), '10.5.0.0/16');
  t.equal(c.subnetLen, 24);
  t.equal(formatIp4(c.subnetMin), '10.5.1.0');
  t.equal(formatIp4(c.subnetMax), '10.5.255.0');
  t.equal(c.ipv6Network, null);
  t.equal(c.ipv6SubnetMin, null);
  t.same(c.backend, { type: 'vxlan', fields: { Type: 'vxlan' } }, 'the Backend object is kept for its plug-in (backend-registry.test)');
});

t.test('network host bits are masked', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.3.7/16"}');
  t.equal(formatIp4Net(c.network!), '10.5.0.0/16');
});

t.test('default SubnetLen by network size', async (t) => {
  const cases: Array<[string, number, string, string]> = [
    ['10.0.0.0/8', 24, '10.0.1.0', '10.255.255.0'],
    ['10.5.0.0/22', 24, '10.5.1.0', '10.5.3.0'],
    ['10.5.0.0/23', 25, '10.5.0.128', '10.5.1.128'],
    ['10.5.0.0/26', 28, '10.5.0.16', '10.5.0.48'],
    ['10.5.0.0/28', 30, '10.5.0.4', '10.5.0.12'],
  ];
  for (const [net, len, min, max] of cases) {
    const c = parseNetworkConfig(JSON.stringify({ Network: net }));
    t.equal(c.subnetLen, len, `${net} len`);
    t.equal(formatIp4(c.subnetMin), min, `${net} min`);
    t.equal(formatIp4(c.subnetMax), max, `${net} max`);
  }
});

t.test('network ending at 255.255.255.255 does not overflow', async (t) => {
  const c = parseNetworkConfig('{"Network":"255.255.0.0/16"}');
  t.equal(formatIp4(c.subnetMax), '255.255.255.0');
});

t.test('explicit SubnetLen/Min/Max', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetLen":28,"SubnetMin":"10.5.0.16","SubnetMax":"10.5.0.240"}');
  t.equal(c.subnetLen, 28);
  t.equal(formatIp4(c.subnetMin), '10.5.0.16');
  t.equal(formatIp4(c.subnetMax), '10.5.0.240');
  // No Min <= Max check, like flannel.
  const d = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.2.0"}');
  t.equal(formatIp4(d.subnetMin), '10.5.9.0');
  // "0.0.0.0" is Go's zero value and means "default".
  const e = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetMin":"0.0.0.0","SubnetLen":0}');
  t.equal(formatIp4(e.subnetMin), '10.5.1.0');
  t.equal(e.subnetLen, 24);
});

t.test('keys are case-insensitive, unknown keys ignored, null means absent', async (t) => {
  const c = parseNetworkConfig(
    '{"network":"10.6.0.0/16","SUBNETLEN":26,"EnableNFTables":true,"Whatever":[1],"subnetmin":null,"backend":{"type":"VXLAN","vni":4096,"port":4789,"mtu":1400,"gbp":true,"learning":true,"directrouting":true}}',
  );
  t.equal(formatIp4Net(c.network!), '10.6.0.0/16');
  t.equal(c.subnetLen, 26);
  t.equal(formatIp4(c.subnetMin), '10.6.0.64');
  t.equal(c.backend.type, 'vxlan', 'Backend.Type is matched case-insensitively and lowercased');
  t.equal(c.backend.fields.vni, 4096, 'Backend fields are passed on as written');
  // Last of several case variants wins, as in Go.
  const d = parseNetworkConfig('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}');
  t.equal(formatIp4Net(d.network!), '10.2.0.0/16');
});

t.test('Backend absent or null selects udp (flannel quirk)', async (t) => {
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16"}').backend.type, 'udp');
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":null}').backend.type, 'udp');
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{}}').backend.type, '');
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}').backend.type, 'host-gw');
});

t.test('IPv4 validation errors of flannel §2', async (t) => {
  const msg = 'please define a correct Network parameter in the flannel config';
  rejects(t, '{}', msg);
  rejects(t, 'null', msg);
  rejects(t, '{"Network":"0.0.0.0/0"}', msg);
  rejects(t, '{"Backend":{"Type":"vxlan"}}', msg);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":31}', 'SubnetLen must be less than /31 (SubnetLen is 31)');
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":40}', 'SubnetLen must be less than /31 (SubnetLen is 40)');
  rejects(
    t,
    '{"Network":"10.5.0.0/16","SubnetLen":17}',
    /^network must be able to accommodate at least four subnets \(SubnetLen 17 with a \/16 Network; use at least \/18\)$/,
  );
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":8}', /^network must be able to accommodate at least four subnets/);
  rejects(t, '{"Network":"10.5.0.0/29"}', 'network is too small. Minimum useful network prefix is /28 (Network is a /29)');
  rejects(t, '{"Network":"10.5.0.0/32"}', /^network is too small. Minimum useful network prefix is \/28 /);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', /^SubnetMin is not in the range of the Network/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMax":"10.4.255.0"}', /^SubnetMax is not in the range of the Network/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.5"}', 'SubnetMin is not on a SubnetLen boundary: 10.5.1.5');
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMax":"10.5.9.128"}', 'SubnetMax is not on a SubnetLen boundary: 10.5.9.128');
  // Boundary cases just inside the rules are accepted.
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetLen":30}').subnetLen, 30);
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetLen":18}').subnetLen, 18);
});

t.test('type errors name the field', async (t) => {
  rejects(t, '{"Network":10}', /^Network must be a string/);
  rejects(t, '{"Network":"10.5.0.0"}', /^Network must be an IPv4 CIDR/);
  rejects(t, '{"Network":"fc00::/48"}', /^Network must be an IPv4 CIDR/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":"24"}', /^SubnetLen must be a number/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":24.5}', /^SubnetLen must be an integer/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetLen":-1}', 'SubnetLen must be at least 0, got -1');
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.1"}', /^SubnetMin must be an IPv4 address/);
  rejects(t, '{"Network":"10.5.0.0/16","SubnetMax":true}', /^SubnetMax must be a string/);
  rejects(t, '{"Network":"10.5.0.0/16","EnableIPv4":"yes"}', /^EnableIPv4 must be a boolean/);
  rejects(t, '{"Network":"10.5.0.0/16","Backend":"vxlan"}', /^Backend must be an object/);
  rejects(t, '{"Network":"10.5.0.0/16","Backend":{"Type":1}}', /^Backend\.Type must be a string/);
  // Backend fields other than Type are decoded by the backend plug-ins (test/unit/backend-registry.test.ts).
  // Go decodes (type-checks) fields of a disabled family too.
  rejects(t, '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","SubnetLen":"x"}', /^SubnetLen must be a number/);
});

t.test('malformed JSON and non-objects', async (t) => {
  rejects(t, '{"Network":', /^flannel config is not valid JSON: /);
  rejects(t, '', /^flannel config is not valid JSON: /);
  rejects(t, '[1,2]', /must be a JSON object, got array/);
  rejects(t, '"x"', /must be a JSON object, got string/);
});

t.test('IPv6 dual-stack defaults', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"FC00:0000::/48"}');
  t.equal(c.ipv6Network, 'fc00::/48');
  t.equal(c.ipv6SubnetLen, 64);
  t.equal(c.ipv6SubnetMin, 'fc00:0:0:1::');
  t.equal(c.ipv6SubnetMax, 'fc00:0:0:ffff::');
  const d = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120"}');
  t.equal(d.network, null);
  t.equal(d.ipv6SubnetLen, 122);
  t.equal(d.ipv6SubnetMin, 'fc00::40');
  t.equal(d.ipv6SubnetMax, 'fc00::c0');
  const e = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/63"}');
  t.equal(e.ipv6SubnetLen, 65);
  const f = parseNetworkConfig(
    '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":56,"IPv6SubnetMin":"fc00:0:0:100::","IPv6SubnetMax":"fc00:0:0:ff00::"}',
  );
  t.equal(f.ipv6SubnetLen, 56);
  t.equal(f.ipv6SubnetMin, 'fc00:0:0:100::');
  t.equal(f.ipv6SubnetMax, 'fc00:0:0:ff00::');
  // IPv6 fields are ignored (beyond type checks) when IPv6 is disabled.
  t.equal(parseNetworkConfig('{"Network":"10.5.0.0/16","IPv6Network":"fc00::/48"}').ipv6Network, null);
});

t.test('IPv6 validation errors', async (t) => {
  const base = '"EnableIPv4":false,"EnableIPv6":true';
  rejects(t, `{${base}}`, 'please define a correct IPv6Network parameter in the flannel config');
  rejects(t, `{${base},"IPv6Network":"::/0"}`, 'please define a correct IPv6Network parameter in the flannel config');
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, 'SubnetLen must be less than /127 (IPv6SubnetLen is 127)');
  rejects(
    t,
    `{${base},"IPv6Network":"fc00::/48","IPv6SubnetLen":49}`,
    'network must be able to accommodate at least four subnets (IPv6SubnetLen 49 with a /48 IPv6Network; use at least /50)',
  );
  rejects(
    t,
    `{${base},"IPv6Network":"fc00::/125"}`,
    'IPv6Network is too small. Minimum useful network prefix is /124 (IPv6Network is a /125)',
  );
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc01::"}`, /^IPv6SubnetMin is not in the range of the IPv6Network/);
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMax":"fb00::"}`, /^IPv6SubnetMax is not in the range of the IPv6Network/);
  rejects(
    t,
    `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::1"}`,
    'IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1 (IPv6SubnetLen is /64)',
  );
  rejects(
    t,
    `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:1:8000::"}`,
    'IPv6SubnetMax is not on a SubnetLen boundary: fc00:0:0:1:8000:: (IPv6SubnetLen is /64)',
  );
  rejects(t, `{${base},"IPv6Network":"10.5.0.0/16"}`, /^IPv6Network must be an IPv6 CIDR/);
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMin":"zz::"}`, /^IPv6SubnetMin must be an IPv6 address/);
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetLen":"64"}`, /^IPv6SubnetLen must be a number/);
  rejects(t, '{"Network":"10.5.0.0/16","EnableIPv6":1}', /^EnableIPv6 must be a boolean/);
  rejects(t, `{${base},"IPv6Network":"fc00::1%eth0/48"}`, /^IPv6Network must be an IPv6 CIDR/);
  rejects(t, `{${base},"IPv6Network":"fc00::/129"}`, /^IPv6Network must be an IPv6 CIDR/);
  rejects(t, `{${base},"IPv6Network":"fc00::"}`, /^IPv6Network must be an IPv6 CIDR/);
  rejects(t, `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMax":"192.0.2.1"}`, /^IPv6SubnetMax must be an IPv6 address/);
  rejects(
    t,
    `{${base},"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:1::"}`,
    'IPv6SubnetMin is not in the range of the IPv6Network: fc00:1:: is outside fc00::/48',
  );
});

t.test('IPv6 bounds: "::" means unset (flannel ip.IsEmpty), given bounds are kept', async (t) => {
  const base = '"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::1/48"';
  const c = parseNetworkConfig(`{${base},"IPv6SubnetMin":"::","IPv6SubnetMax":"::"}`);
  t.equal(c.ipv6Network, 'fc00::/48', 'host bits of IPv6Network are cleared');
  t.equal(c.ipv6SubnetMin, 'fc00:0:0:1::');
  t.equal(c.ipv6SubnetMax, 'fc00:0:0:ffff::');
  const d = parseNetworkConfig(`{${base},"IPv6SubnetLen":80,"IPv6SubnetMin":"FC00:0:0:10::","IPv6SubnetMax":"fc00:0:0:10:ffff::"}`);
  t.equal(d.ipv6SubnetMin, 'fc00:0:0:10::');
  t.equal(d.ipv6SubnetMax, 'fc00:0:0:10:ffff::');
  t.equal(d.enableIPv4, false);
  t.equal(d.network, null);
});
