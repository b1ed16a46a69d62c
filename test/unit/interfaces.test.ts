import t from 'tap';
import {
  InterfaceError,
  SysReader,
  defaultRouteInterface,
  defaultSysReader,
  findExternalInterface,
  sendSourceAddress,
} from '../../src/netlink/interfaces';

interface FakeLink {
  index: number;
  mtu: number;
  addrs: string[];
}

const ROUTE_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

/** A host described as data: links, their addresses and the /proc/net/route text. */
function fakeSys(
  links: Record<string, FakeLink>,
  routes: string | null,
  routeTo: Record<string, { ifindex: number; src: string | null }> = {},
): SysReader & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    readFile(p) {
      reads.push(p);
      if (p === '/proc/net/route') return routes;
      const m = /^\/sys\/class\/net\/([^/]+)\/(ifindex|mtu)$/.exec(p);
      const l = m ? links[m[1]!] : undefined;
      if (!m || !l) return null;
      return `${m[2] === 'mtu' ? l.mtu : l.index}\n`;
    },
    listDir(p) {
      return p === '/sys/class/net' ? Object.keys(links) : [];
    },
    ipv4Addresses() {
      return new Map(
        Object.entries(links)
          .filter(([, l]) => l.addrs.length > 0)
          .map(([n, l]) => [n, l.addrs]),
      );
    },
    routeGet(ip) {
      const r = routeTo[ip];
      if (!r) throw new InterfaceError(`no route to ${ip}`);
      return r;
    },
  };
}

function route(iface: string, dest: string, mask: string, metric: number, flags = '0003'): string {
  return `${iface}\t${dest}\t0102000A\t${flags}\t0\t0\t${metric}\t${mask}\t0\t0\t0`;
}

const LINKS: Record<string, FakeLink> = {
  // Listed out of index order on purpose.
  eth1: { index: 3, mtu: 9000, addrs: ['198.51.100.7'] },
  lo: { index: 1, mtu: 65536, addrs: ['127.0.0.1'] },
  eth0: { index: 2, mtu: 1500, addrs: ['169.254.3.3', '192.0.2.10', '192.0.2.11'] },
  eth2: { index: 4, mtu: 1500, addrs: [] },
  wg0: { index: 5, mtu: 1420, addrs: ['169.254.9.9'] },
};

const ROUTES = [
  ROUTE_HEADER,
  route('eth0', '00000000', '00000000', 100),
  route('eth1', '00000000', '00000000', 50),
  route('eth0', '0002000A', '00FFFFFF', 0),
  route('wg0', '00000000', '00000000', 1, '0000'), // not RTF_UP
].join('\n');

const none = { iface: [], ifaceRegex: [] };

t.test('default route: lowest metric, UP only', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.equal(defaultRouteInterface(sys), 'eth1');
  t.same(findExternalInterface(none, sys), { name: 'eth1', index: 3, ip: '198.51.100.7', mtu: 9000 });
  t.equal(defaultRouteInterface(fakeSys(LINKS, ROUTE_HEADER + '\n')), null);
  t.equal(defaultRouteInterface(fakeSys(LINKS, null)), null);
});

t.test('default route interface: prefers a non-link-local address', async (t) => {
  const sys = fakeSys(LINKS, [ROUTE_HEADER, route('eth0', '00000000', '00000000', 0)].join('\n'));
  t.same(findExternalInterface(none, sys), { name: 'eth0', index: 2, ip: '192.0.2.10', mtu: 1500 });
  // Link-local only is still usable (flannel falls back to it).
  const wg = fakeSys(LINKS, [ROUTE_HEADER, route('wg0', '00000000', '00000000', 0)].join('\n'));
  t.equal(findExternalInterface(none, wg).ip, '169.254.9.9');
});

t.test('default route errors', async (t) => {
  t.throws(() => findExternalInterface(none, fakeSys(LINKS, ROUTE_HEADER)), {
    name: 'InterfaceError',
    message: 'no default route found; use -iface, -iface-regex or -iface-can-reach to choose an interface',
  });
  t.throws(() => findExternalInterface(none, fakeSys(LINKS, [ROUTE_HEADER, route('eth2', '00000000', '00000000', 0)].join('\n'))), {
    message: /^interface eth2 \(default route\) has no IPv4 address/,
  });
});

t.test('-iface by name or IP, first that works wins', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.same(findExternalInterface({ iface: ['eth0'], ifaceRegex: [] }, sys), { name: 'eth0', index: 2, ip: '192.0.2.10', mtu: 1500 });
  // By IP, the given address is used even if it is not the first on the link.
  t.same(findExternalInterface({ iface: ['192.0.2.11'], ifaceRegex: [] }, sys), { name: 'eth0', index: 2, ip: '192.0.2.11', mtu: 1500 });
  t.equal(findExternalInterface({ iface: ['eth9', '10.9.9.9', 'eth1'], ifaceRegex: [] }, sys).name, 'eth1');
  // -iface entries are tried before any regex.
  t.equal(findExternalInterface({ iface: ['eth1'], ifaceRegex: ['eth0'] }, sys).name, 'eth1');
  t.equal(findExternalInterface({ iface: ['eth9'], ifaceRegex: ['^eth0$'] }, sys).name, 'eth0');
});

t.test('-iface errors are specific', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.throws(() => findExternalInterface({ iface: ['eth9'], ifaceRegex: [] }, sys), new InterfaceError('no interface named eth9'));
  t.throws(
    () => findExternalInterface({ iface: ['eth2'], ifaceRegex: [] }, sys),
    new InterfaceError('interface eth2 (-iface) has no IPv4 address'),
  );
  t.throws(
    () => findExternalInterface({ iface: ['10.9.9.9'], ifaceRegex: [] }, sys),
    new InterfaceError('no interface has the address 10.9.9.9'),
  );
  t.throws(() => findExternalInterface({ iface: ['../../../etc'], ifaceRegex: [] }, sys), /no interface named/);
  t.notOk(
    sys.reads.some((p) => p.includes('..')),
    'never builds a path from an invalid name',
  );
  t.throws(() => findExternalInterface({ iface: ['eth9', 'eth2'], ifaceRegex: [] }, sys), {
    message:
      'no usable interface among -iface/-iface-regex/-iface-can-reach: no interface named eth9; interface eth2 (-iface) has no IPv4 address',
  });
});

t.test('-iface-regex matches usable IPs first, then names (flannel order)', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  // "1" occurs in lo's 127.0.0.1, eth0's IPs and the name eth1: loopback addresses are never usable,
  // so eth0 (lower ifindex than eth1) wins with its first global address that matches.
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['1'] }, sys), { name: 'eth0', index: 2, ip: '192.0.2.10', mtu: 1500 });
  // A secondary address is chosen as the interface address when it is the one that matches.
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['^192\\.0\\.2\\.11$'] }, sys), {
    name: 'eth0',
    index: 2,
    ip: '192.0.2.11',
    mtu: 1500,
  });
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['^eth1$'] }, sys), { name: 'eth1', index: 3, ip: '198.51.100.7', mtu: 9000 });
  // Name match: the first link (by ifindex) whose name matches.
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth[12]$'] }, sys).name, 'eth1');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth[02]$'] }, sys).name, 'eth0');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth2$', '^wg'] }, sys).name, 'wg0');
});

t.test('-iface-regex uses Go RE2 syntax', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['(?i)ETH1'] }, sys).name, 'eth1', '(?i) flag group');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['\\Aeth1\\z'] }, sys).name, 'eth1', '\\A and \\z anchors');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^198\\.51\\.100\\.\\d+$'] }, sys).ip, '198.51.100.7');
  // Not RE2: look-behind is refused with the flag named.
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: ['(?<=x)eth'] }, sys),
    /invalid -iface-regex "\(\?<=x\)eth" \(Go RE2 syntax\)/,
  );
});

t.test('-iface-regex errors', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: ['^nope'] }, sys),
    /^no interface address or name matches "\^nope" \(interfaces: lo:/,
  );
  // Like flannel, the first name match decides: it has no address, so this regex fails.
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: ['^eth2$'] }, sys),
    /interface eth2 \(name matches -iface-regex "\^eth2\$"\) has no IPv4 address/,
  );
  t.throws(() => findExternalInterface({ iface: [], ifaceRegex: ['('] }, sys), /invalid -iface-regex "\("/);
});

t.test('-iface-can-reach: the route lookup picks link and source address', async (t) => {
  const sys = fakeSys(LINKS, ROUTES, { '198.51.100.99': { ifindex: 2, src: '192.0.2.11' }, '203.0.113.1': { ifindex: 3, src: null } });
  t.same(findExternalInterface({ iface: [], ifaceRegex: [], ifaceCanReach: '198.51.100.99' }, sys), {
    name: 'eth0',
    index: 2,
    ip: '192.0.2.11',
    mtu: 1500,
  });
  t.equal(
    findExternalInterface({ iface: [], ifaceRegex: [], ifaceCanReach: '203.0.113.1' }, sys).ip,
    '198.51.100.7',
    'no prefsrc: first address',
  );
  // Tried after -iface and -iface-regex.
  t.equal(findExternalInterface({ iface: ['eth9'], ifaceRegex: ['^nope$'], ifaceCanReach: '198.51.100.99' }, sys).name, 'eth0');
  t.equal(findExternalInterface({ iface: ['eth1'], ifaceRegex: [], ifaceCanReach: '198.51.100.99' }, sys).name, 'eth1');
  t.throws(() => findExternalInterface({ iface: [], ifaceRegex: [], ifaceCanReach: '10.1.1.1' }, sys), /no route to 10\.1\.1\.1/);
});

t.test('-public-ip without -iface*: the interface holding that address', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  // eth1 holds the default route, but the public IP is a secondary address of eth0.
  t.same(findExternalInterface({ iface: [], ifaceRegex: [], publicIp: '192.0.2.11' }, sys), {
    name: 'eth0',
    index: 2,
    ip: '192.0.2.11',
    mtu: 1500,
  });
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: [], publicIp: '203.0.113.50' }, sys),
    /^no interface has the address 203\.0\.113\.50 .*add -iface/,
  );
  // With -iface the public IP need not be local (NAT).
  t.equal(findExternalInterface({ iface: ['eth1'], ifaceRegex: [], publicIp: '203.0.113.50' }, sys).ip, '198.51.100.7');
});

t.test('send sockets bind to the public IP when it is local, else to the interface address', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  const eth0 = findExternalInterface({ iface: ['eth0'], ifaceRegex: [] }, sys);
  t.equal(sendSourceAddress('192.0.2.11', eth0, sys), '192.0.2.11');
  t.equal(sendSourceAddress('192.0.2.10', eth0, sys), '192.0.2.10');
  t.equal(sendSourceAddress('203.0.113.50', eth0, sys), '192.0.2.10', 'NAT: the public IP is not ours');
});

t.test('broken /sys attributes give a clear error', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  const broken: SysReader = {
    ...sys,
    readFile: (p) => (p === '/sys/class/net/eth1/mtu' ? 'garbage\n' : sys.readFile(p)),
  };
  t.throws(() => findExternalInterface(none, broken), new InterfaceError('cannot read mtu of interface eth1 from /sys/class/net/eth1/mtu'));
});

t.test('default reader on this host', async (t) => {
  // Loopback always exists: reading it by name must work with the real files.
  const lo = findExternalInterface({ iface: ['127.0.0.1'], ifaceRegex: [] }, defaultSysReader);
  t.equal(lo.ip, '127.0.0.1');
  t.equal(lo.name, 'lo');
  t.ok(lo.index >= 1);
  t.ok(lo.mtu > 0);
  t.equal(defaultSysReader.readFile('/sys/class/net/definitely-not-a-link/mtu'), null);
  t.same(defaultSysReader.listDir('/definitely/not/here'), []);
});
