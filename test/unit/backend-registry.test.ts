// The backend registry: each plug-in's fields, defaults, lease attrs and MTU overhead; every type or
// setting tsflanneld cannot honour is refused with a message naming it and what to do.
import t, { type Test } from 'tap';
import { BackendConfigError } from '../../src/backend/backend';
import { backendTypes, resolveBackend } from '../../src/backend/registry';
import { parseNetworkConfig } from '../../src/subnet/config';

const resolve = (backend: unknown) =>
  resolveBackend(
    parseNetworkConfig(JSON.stringify(backend === undefined ? { Network: '10.5.0.0/16' } : { Network: '10.5.0.0/16', Backend: backend }))
      .backend,
  );

function refuses(t: Test, backend: unknown, msg: RegExp): void {
  t.throws(() => resolve(backend), { name: 'BackendConfigError', message: msg }, JSON.stringify(backend));
}

t.test('registry lists the implemented types', async (t) => {
  t.same(backendTypes().sort(), ['alloc', 'host-gw', 'udp', 'vxlan']);
});

t.test('vxlan: defaults, fields, lease data, overhead 50', async (t) => {
  const b = resolve({ Type: 'vxlan' });
  t.equal(b.type, 'vxlan');
  t.same(b.summary, { VNI: 1, Port: 8472, DirectRouting: false });
  t.equal(b.overhead, 50);
  t.equal(b.underlayMtu, null);
  t.equal(b.needsVtepMac, true);
  t.same(b.leaseAttrs({ ipv4: 'ae:12:34:56:78:9a', ipv6: null }), {
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: 'ae:12:34:56:78:9a' },
  });
  const c = resolve({ type: 'VXLAN', vni: 4096, port: 4789, mtu: 1400, gbp: false, learning: false, directrouting: true });
  t.same(c.summary, { VNI: 4096, Port: 4789, DirectRouting: true, MTU: 1400 });
  t.equal(c.underlayMtu, 1400);
  t.equal(resolve({ Type: 'vxlan', VNI: 0 }).summary.VNI, 0, 'VNI 0 is accepted, as flanneld does (device flannel.0)');
  t.equal(resolve({ Type: 'vxlan', VNI: 16777215, Port: 65535 }).summary.VNI, 16777215);
});

t.test('vxlan: bad values and refused settings', async (t) => {
  refuses(t, { Type: 'vxlan', VNI: '1' }, /^Backend\.VNI must be a number/);
  refuses(t, { Type: 'vxlan', VNI: 16777216 }, /^Backend\.VNI must be between 0 and 16777215/);
  refuses(t, { Type: 'vxlan', Port: 65536 }, /^Backend\.Port must be between 0 and 65535/);
  refuses(t, { Type: 'vxlan', MTU: -5 }, /^Backend\.MTU must be at least 0, got -5/);
  refuses(t, { Type: 'vxlan', GBP: 1 }, /^Backend\.GBP must be a boolean/);
  refuses(t, { Type: 'vxlan', DirectRouting: 'true' }, /^Backend\.DirectRouting must be a boolean/);
  refuses(t, { Type: 'vxlan', GBP: true }, /^Backend\.GBP true is not supported: .*remove GBP/);
  refuses(t, { Type: 'vxlan', Learning: true }, /^Backend\.Learning true is not supported: .*remove Learning/);
  refuses(t, { Type: 'vxlan', DirectRoutng: true }, /^Backend\.DirectRoutng is not a setting of the "vxlan" backend: remove it/);
  refuses(t, { Type: 'vxlan', MacPrefix: '0E-2A', Foo: 1 }, /^Backend\.MacPrefix, Backend\.Foo are not settings of the "vxlan" backend/);
  t.equal(resolve({ Type: 'vxlan', GBP: false, Learning: false, VNI: null }).type, 'vxlan', 'false (and null) are fine');
});

t.test('udp: the default when Backend is absent; Port 8285; overhead 28; lease without BackendType', async (t) => {
  const b = resolve(undefined);
  t.equal(b.type, 'udp');
  t.same(b.summary, { Port: 8285 });
  t.equal(b.overhead, 28);
  t.equal(b.needsVtepMac, false);
  t.same(b.leaseAttrs({ ipv4: null, ipv6: null }), {}, 'flanneld writes {"PublicIP":…,"PublicIPv6":null} only');
  t.same(resolve({ Type: 'udp', Port: 9000 }).summary, { Port: 9000 });
  refuses(t, { Type: 'udp', Port: 0 }, /^Backend\.Port must be between 1 and 65535/);
  refuses(t, { Type: 'udp', VNI: 1 }, /^Backend\.VNI is not a setting of the "udp" backend/);
});

t.test('host-gw and alloc: no fields, no overhead', async (t) => {
  const h = resolve({ Type: 'host-gw' });
  t.equal(h.overhead, 0);
  t.same(h.leaseAttrs({ ipv4: null, ipv6: null }), { BackendType: 'host-gw' });
  t.equal(h.needsVtepMac, false);
  refuses(t, { Type: 'host-gw', DirectRouting: true }, /^Backend\.DirectRouting is not a setting of the "host-gw" backend/);
  const a = resolve({ Type: 'alloc' });
  t.equal(a.overhead, 0);
  t.same(a.leaseAttrs({ ipv4: null, ipv6: null }), {});
  t.equal(
    a.createHooks({ tunName: '', offload: 'auto', log: undefined as never, fatal: () => undefined }),
    null,
    'alloc has no data plane',
  );
  refuses(t, { Type: 'alloc', Port: 1 }, /^Backend\.Port is not a setting of the "alloc" backend/);
});

t.test('types tsflanneld does not implement, unknown and missing types', async (t) => {
  refuses(t, { Type: 'ipip' }, /^Backend\.Type "ipip" is not implemented by tsflanneld \(supported: .*\); use "vxlan"/);
  refuses(t, { Type: 'wireguard' }, /^Backend\.Type "wireguard" is not implemented by tsflanneld/);
  refuses(t, { Type: 'ipsec' }, /^Backend\.Type "ipsec" is not implemented/);
  refuses(t, { Type: 'vxlam' }, /^Backend\.Type "vxlam" is unknown \(supported: "vxlan", "udp", "host-gw", "alloc"\); check the spelling/);
  refuses(t, {}, /^Backend\.Type is missing: set it to one of/);
  t.ok(new BackendConfigError('x') instanceof Error);
});
