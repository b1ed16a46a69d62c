import t from 'tap';
import { InterfaceError, SysReader, defaultRouteInterface, defaultSysReader, findExternalInterface } from '../../src/netlink/interfaces';

interface FakeLink {
  index: number;
  mtu: number;
  addrs: string[];
}

const ROUTE_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

/** A host described as data: links, their addresses and the /proc/net/route text. */
function fakeSys(links: Record<string, FakeLink>, routes: string | null): SysReader & { reads: string[] } {
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
    message: 'no default route found; use -iface or -iface-regex to choose an interface',
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
  t.throws(() => findExternalInterface({ iface: ['eth2'], ifaceRegex: [] }, sys), new InterfaceError('interface eth2 has no IPv4 address'));
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
    message: 'no usable interface among -iface/-iface-regex: no interface named eth9; interface eth2 has no IPv4 address',
  });
});

t.test('-iface-regex matches IPs first, then names', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  // "1" occurs in eth0's IP and in the name eth1: IPs win, in ifindex order.
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['1'] }, sys), { name: 'lo', index: 1, ip: '127.0.0.1', mtu: 65536 });
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['^192\\.0\\.2\\.11$'] }, sys), {
    name: 'eth0',
    index: 2,
    ip: '192.0.2.11',
    mtu: 1500,
  });
  t.same(findExternalInterface({ iface: [], ifaceRegex: ['^eth1$'] }, sys), { name: 'eth1', index: 3, ip: '198.51.100.7', mtu: 9000 });
  // Name match: lowest ifindex first, skipping links without IPv4.
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth[12]$'] }, sys).name, 'eth1');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth[02]$'] }, sys).name, 'eth0');
  t.equal(findExternalInterface({ iface: [], ifaceRegex: ['^eth2$', '^wg'] }, sys).name, 'wg0');
});

t.test('-iface-regex errors', async (t) => {
  const sys = fakeSys(LINKS, ROUTES);
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: ['^nope'] }, sys),
    new InterfaceError('no interface address or name matches "^nope"'),
  );
  t.throws(
    () => findExternalInterface({ iface: [], ifaceRegex: ['^eth2$'] }, sys),
    /interfaces matching "\^eth2\$" \(eth2\) have no IPv4 address/,
  );
  t.throws(() => findExternalInterface({ iface: [], ifaceRegex: ['('] }, sys), /invalid -iface-regex "\("/);
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
