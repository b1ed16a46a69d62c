import t from 'tap';
import { InterfaceError, type SysReader } from '../../src/netlink/interfaces';
import { checkUnderlay, UnderlayWatch, type UnderlayState } from '../../src/netlink/underlay-watch';

/** A mutable host: links by name with ifindex and addresses. */
function host(links: Record<string, { index: number; addrs: string[] }>): SysReader {
  return {
    readFile(p) {
      const m = /^\/sys\/class\/net\/([^/]+)\/(ifindex|mtu)$/.exec(p);
      const l = m ? links[m[1]!] : undefined;
      return l ? `${m![2] === 'mtu' ? 1500 : l.index}\n` : null;
    },
    listDir: (p) => (p === '/sys/class/net' ? Object.keys(links) : []),
    ipv4Addresses: () => new Map(Object.entries(links).map(([n, l]) => [n, l.addrs])),
    routeGet: () => {
      throw new InterfaceError('unused');
    },
  };
}

const expect = { name: 'eth0', index: 2, ip: '192.0.2.10', sendSource: '192.0.2.10' };

t.test('checkUnderlay reports the first difference', async (t) => {
  t.same(checkUnderlay(expect, host({ eth0: { index: 2, addrs: ['192.0.2.10'] } })), { ok: true });
  t.same(checkUnderlay(expect, host({})), { ok: false, reason: 'interface eth0 is gone' });
  t.same(checkUnderlay(expect, host({ eth0: { index: 9, addrs: ['192.0.2.10'] } })), {
    ok: false,
    reason: 'interface eth0 was re-created (ifindex 2 → 9)',
  });
  t.same(checkUnderlay(expect, host({ eth0: { index: 2, addrs: ['192.0.2.77'] } })), {
    ok: false,
    reason: 'address 192.0.2.10 is no longer on eth0 (IPv4 addresses now: 192.0.2.77)',
  });
  const pub = { ...expect, sendSource: '198.51.100.7' };
  t.same(checkUnderlay(pub, host({ eth0: { index: 2, addrs: ['192.0.2.10'] }, eth1: { index: 3, addrs: ['198.51.100.7'] } })), {
    ok: true,
  });
  t.match(checkUnderlay(pub, host({ eth0: { index: 2, addrs: ['192.0.2.10'] } })), {
    ok: false,
    reason: /198\.51\.100\.7 .* no longer on this host/,
  });
});

t.test('UnderlayWatch reports changes only, and survives failing checks', async (t) => {
  const links: Record<string, { index: number; addrs: string[] }> = { eth0: { index: 2, addrs: ['192.0.2.10'] } };
  const sys = host(links);
  let broken = false;
  const reader: SysReader = {
    ...sys,
    ipv4Addresses: () =>
      broken
        ? (() => {
            throw new Error('netlink down');
          })()
        : sys.ipv4Addresses(),
  };
  const changes: UnderlayState[] = [];
  const errors: string[] = [];
  const w = new UnderlayWatch({ expect, sys: reader, onChange: (s) => changes.push(s), onError: (e) => errors.push(e.message) });
  w.check();
  t.same(changes, [], 'no change while fine');
  links.eth0!.addrs = [];
  w.check();
  w.check();
  t.equal(changes.length, 1, 'lost: reported once');
  broken = true;
  w.check();
  t.same(errors, ['netlink down']);
  broken = false;
  links.eth0!.addrs = ['192.0.2.10'];
  w.check();
  t.same(changes[1], { ok: true }, 'back: reported');
  w.start();
  w.stop();
});
