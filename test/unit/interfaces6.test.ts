import t from 'tap';
import { InterfaceError, type SysReader } from '../../src/netlink/interfaces';
import { defaultRouteInterface6, findExternalInterface6, ipv6AddressOf, usableIpv6Addresses } from '../../src/netlink/interfaces6';

const LINKS: Record<string, { index: number; mtu: number }> = {
  eth1: { index: 3, mtu: 9000 },
  lo: { index: 1, mtu: 65536 },
  eth0: { index: 2, mtu: 1500 },
  eth2: { index: 4, mtu: 1500 },
};

// address ifindex prefixlen scope flags name, as /proc/net/if_inet6 prints them.
const IF_INET6 = [
  '00000000000000000000000000000001 01 80 10 80       lo',
  'fe800000000000000000000000000002 02 40 20 80     eth0', // link-local, permanent
  '20010db8000000000000000000000099 02 40 00 01     eth0', // global, temporary (autoconf)
  '20010db8000000000000000000000010 02 40 00 80     eth0', // global, permanent: preferred
  '20010db8000000000000000000000011 02 40 00 a0     eth0', // deprecated: never
  '20010db8000100000000000000000007 03 40 00 40     eth1', // tentative: never
  '20010db8000100000000000000000008 03 40 00 80     eth1',
  'fe800000000000000000000000000004 04 40 20 80     eth2',
  'ff020000000000000000000000000001 04 80 00 80     eth2', // multicast: never
].join('\n');

const V6_ROUTE = (dst: string, len: string, metric: string, flags: string, dev: string) =>
  `${dst} ${len} 00000000000000000000000000000000 00 fe800000000000000000000000000001 ${metric} 00000001 00000000 ${flags} ${dev}`;
const Z = '0'.repeat(32);

function fakeSys(routes6: string | null, inet6 = IF_INET6): SysReader {
  return {
    readFile(p) {
      if (p === '/proc/net/if_inet6') return inet6;
      if (p === '/proc/net/ipv6_route') return routes6;
      const m = /^\/sys\/class\/net\/([^/]+)\/(ifindex|mtu)$/.exec(p);
      const l = m ? LINKS[m[1]!] : undefined;
      if (!m || !l) return null;
      return `${m[2] === 'mtu' ? l.mtu : l.index}\n`;
    },
    listDir: (p) => (p === '/sys/class/net' ? Object.keys(LINKS) : []),
    ipv4Addresses: () => new Map(),
    routeGet: () => {
      throw new Error('routeGet is not used by IPv6 interface selection');
    },
  };
}

t.test('usable addresses in flannel order: global, permanent, non-temporary first', async (t) => {
  const a = usableIpv6Addresses(fakeSys(null));
  t.same(a.get('eth0'), ['2001:db8::10', '2001:db8::99', 'fe80::2']);
  t.same(a.get('eth1'), ['2001:db8:1::8']);
  t.same(a.get('eth2'), ['fe80::4'], 'a link-local address is usable when nothing else is');
  t.notOk(a.has('lo'), '::1 is not usable');
  t.equal(ipv6AddressOf('eth0', fakeSys(null)), '2001:db8::10');
  t.throws(() => ipv6AddressOf('lo', fakeSys(null)), { name: 'InterfaceError', message: /^failed to find IPv6 address for interface lo/ });
});

t.test('default IPv6 route: lowest metric, unreachable and lo routes skipped', async (t) => {
  const routes = [
    V6_ROUTE(Z, '00', 'ffffffff', '00200200', 'lo'), // the kernel's unreachable default
    V6_ROUTE('20010db8000000000000000000000000', '40', '00000100', '00000001', 'eth0'),
    V6_ROUTE(Z, '00', '00000400', '00000003', 'eth0'),
    V6_ROUTE(Z, '00', '00000100', '00000003', 'eth1'),
  ].join('\n');
  t.equal(defaultRouteInterface6(fakeSys(routes)), 'eth1');
  t.equal(defaultRouteInterface6(fakeSys(routes.split('\n').slice(0, 2).join('\n'))), null);
  t.same(findExternalInterface6({ iface: [], ifaceRegex: [] }, fakeSys(routes)), {
    name: 'eth1',
    index: 3,
    ip6: '2001:db8:1::8',
    mtu: 9000,
  });
  t.throws(() => findExternalInterface6({ iface: [], ifaceRegex: [] }, fakeSys('')), {
    message: /^no IPv6 default route found; use -iface/,
  });
});

t.test('-iface: an IPv6 address or a link name; entries tried in order', async (t) => {
  const sys = fakeSys(null);
  t.same(findExternalInterface6({ iface: ['2001:DB8:1::8'], ifaceRegex: [] }, sys), {
    name: 'eth1',
    index: 3,
    ip6: '2001:db8:1::8',
    mtu: 9000,
  });
  t.same(findExternalInterface6({ iface: ['eth0'], ifaceRegex: [] }, sys).ip6, '2001:db8::10');
  t.same(findExternalInterface6({ iface: ['nope', 'lo', 'eth2'], ifaceRegex: [] }, sys).name, 'eth2');
  t.throws(() => findExternalInterface6({ iface: ['2001:db8::11'], ifaceRegex: [] }, sys), {
    message: 'no interface has the IPv6 address 2001:db8::11',
  });
  t.throws(() => findExternalInterface6({ iface: ['nope', 'lo'], ifaceRegex: [] }, sys), InterfaceError);
  t.throws(() => findExternalInterface6({ iface: ['nope', 'lo'], ifaceRegex: [] }, sys), {
    message: /^no usable interface among -iface\/-iface-regex: no interface named nope; failed to find IPv6 address for interface lo/,
  });
});

t.test('-iface-regex: addresses first (links by index), then names', async (t) => {
  const sys = fakeSys(null);
  t.equal(findExternalInterface6({ iface: [], ifaceRegex: ['^2001:db8:1:'] }, sys).name, 'eth1');
  t.equal(findExternalInterface6({ iface: [], ifaceRegex: ['^2001:db8:'] }, sys).name, 'eth0', 'eth0 has the lower index');
  t.equal(findExternalInterface6({ iface: [], ifaceRegex: ['^eth2$'] }, sys).ip6, 'fe80::4');
  t.throws(() => findExternalInterface6({ iface: [], ifaceRegex: ['^wlan'] }, sys), {
    message: 'no interface IPv6 address or name matches "^wlan"',
  });
  t.throws(() => findExternalInterface6({ iface: [], ifaceRegex: ['('] }, sys), { message: /^invalid -iface-regex "\("/ });
});
