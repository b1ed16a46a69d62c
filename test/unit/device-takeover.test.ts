import t from 'tap';
import { decideTakeover } from '../../src/routes/device-takeover';
import { explainOpenError } from '../../src/backend/tun-backend';
import type { LinkInfo } from '../../src/netlink/rtnetlink';

const link = (kind: string | undefined, mac: number[] | null): LinkInfo => ({
  index: 7,
  name: 'flannel.1',
  ...(kind === undefined ? {} : { kind }),
  mtu: 1450,
  flags: 0,
  up: true,
  mac: mac === null ? null : Uint8Array.from(mac),
});

t.test('no link or our own TUN: open it', async (t) => {
  t.same(decideTakeover('flannel.1', null), { action: 'open' });
  t.same(decideTakeover('flannel.1', link('tun', null)), { action: 'open' });
});

t.test("flanneld's kernel VXLAN device: take over and keep its MAC", async (t) => {
  t.same(decideTakeover('flannel.1', link('vxlan', [0x12, 0x25, 0xe1, 0xb4, 0xe5, 0xc7])), {
    action: 'take-over',
    mac: '12:25:e1:b4:e5:c7',
  });
  const bad = decideTakeover('flannel.1', link('vxlan', [0x01, 0, 0, 0, 0, 1]));
  t.equal(bad.action, 'refuse', 'a multicast MAC cannot be a VtepMAC');
  t.match((bad as { reason: string }).reason, /ip link del flannel\.1/);
  t.equal(decideTakeover('flannel.1', link('vxlan', [0, 0, 0, 0, 0, 0])).action, 'refuse');
});

t.test('anything else with the name is refused, nothing touched', async (t) => {
  for (const kind of ['bridge', 'veth', '', undefined]) {
    const d = decideTakeover('flannel.1', link(kind, [2, 0, 0, 0, 0, 1]));
    t.equal(d.action, 'refuse', `kind ${String(kind)}`);
    t.match((d as { reason: string }).reason, /named flannel\.1 exists .*-tun-name/);
  }
});

t.test('open errors become one line naming the busy resource', async (t) => {
  const e = (code: string, message: string): Error => Object.assign(new Error(message), { code });
  t.match(
    explainOpenError(e('EBUSY', 'open TUN flannel.1: Device or resource busy'), 'flannel.1', 8472, '192.0.2.1'),
    /^device flannel\.1 is in use by another process: is another tsflanneld running/,
  );
  t.match(
    explainOpenError(e('EADDRINUSE', 'bind UDP 0.0.0.0:8472: Address already in use'), 'flannel.1', 8472, '192.0.2.1'),
    /^UDP port 8472 is in use/,
  );
  t.match(explainOpenError(e('EADDRNOTAVAIL', 'bind'), 'flannel.1', 8472, '192.0.2.1'), /^cannot send from 192\.0\.2\.1/);
  t.match(explainOpenError(e('EPERM', 'open TUN'), 'flannel.1', 8472, '192.0.2.1'), /CAP_NET_ADMIN/);
  t.match(
    explainOpenError(new Error('odd'), 'flannel.1', 8472, '192.0.2.1'),
    /^cannot open the data plane on flannel\.1, UDP port 8472: odd/,
  );
});
