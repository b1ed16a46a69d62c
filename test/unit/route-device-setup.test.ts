import t from 'tap';
import { formatIp4, parseIp4, parseIp4Net } from '../../src/subnet/ip4';
import { NetlinkError, type Ip4Addr, type LinkInfo, type LinkNetlink } from '../../src/netlink/rtnetlink';
import { setupDevice } from '../../src/routes/device-setup';
import { RecordingLog } from './route-helpers';

class FakeLinks implements LinkNetlink {
  readonly calls: string[] = [];
  constructor(
    public link: LinkInfo,
    public addrs: Ip4Addr[],
  ) {}
  async getLink(name: string): Promise<LinkInfo> {
    if (name !== this.link.name) throw new NetlinkError('get link', name, 'ENODEV', 19, 'No such device');
    return this.link;
  }
  async setLinkMtu(_i: number, mtu: number): Promise<void> {
    this.calls.push(`mtu ${mtu}`);
    this.link = { ...this.link, mtu };
  }
  async setLinkUp(_i: number, up: boolean): Promise<void> {
    this.calls.push(up ? 'up' : 'down');
    this.link = { ...this.link, up };
  }
  async listAddrs(): Promise<Ip4Addr[]> {
    return [...this.addrs];
  }
  async replaceAddr(_i: number, a: Ip4Addr): Promise<void> {
    this.calls.push(`add ${text(a)}`);
    this.addrs.push(a);
  }
  async deleteAddr(_i: number, a: Ip4Addr): Promise<void> {
    this.calls.push(`del ${text(a)}`);
    this.addrs = this.addrs.filter((x) => text(x) !== text(a));
  }
}

const text = (a: Ip4Addr): string => `${formatIp4(a.ip)}/${a.prefixLen}${a.peer !== undefined ? ` peer ${formatIp4(a.peer)}` : ''}`;
const addr = (s: string, peer?: string): Ip4Addr => {
  const [ip, len] = s.split('/');
  return peer === undefined
    ? { ip: parseIp4(ip!), prefixLen: Number(len) }
    : { ip: parseIp4(ip!), prefixLen: Number(len), peer: parseIp4(peer) };
};
/** /proc/sys stand-in: the test must never change the host's own flannel.1. */
class FakeSysctl {
  readonly files = new Map<string, string>([['/proc/sys/net/ipv6/conf/flannel.1/disable_ipv6', '0\n']]);
  read(file: string): string {
    const v = this.files.get(file);
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' });
    return v;
  }
  write(file: string, value: string): void {
    this.read(file);
    this.files.set(file, value);
  }
}

const opts = (netlink: LinkNetlink, sysctl = new FakeSysctl()) => ({
  netlink,
  ifname: 'flannel.1',
  subnet: parseIp4Net('10.5.72.0/24'),
  network: parseIp4Net('10.5.0.0/16'),
  mtu: 1450,
  log: new RecordingLog(),
  sysctl,
});

t.test('fresh device: MTU, our /32, then up (routes need an up link)', async (t) => {
  const f = new FakeLinks({ index: 7, name: 'flannel.1', mtu: 1500, flags: 0, up: false, mac: null }, []);
  const res = await setupDevice(opts(f));
  t.same(f.calls, ['mtu 1450', 'add 10.5.72.0/32', 'up']);
  t.equal(res.ifindex, 7);
  t.same(res.address, addr('10.5.72.0/32'));
  t.same(res.removed, []);
});

t.test('IPv6 is disabled on the device (IPv4-only overlay); a kernel without IPv6 is fine', async (t) => {
  const f = new FakeLinks({ index: 7, name: 'flannel.1', mtu: 1450, flags: 1, up: true, mac: null }, [addr('10.5.72.0/32')]);
  const sysctl = new FakeSysctl();
  await setupDevice(opts(f, sysctl));
  t.equal(sysctl.files.get('/proc/sys/net/ipv6/conf/flannel.1/disable_ipv6'), '1');
  const noIpv6 = new FakeSysctl();
  noIpv6.files.clear();
  await t.resolves(setupDevice(opts(f, noIpv6)));
});

t.test('leftovers: addresses inside the Network go (after ours is added), others stay', async (t) => {
  const f = new FakeLinks({ index: 7, name: 'flannel.1', mtu: 1450, flags: 1, up: true, mac: null }, [
    addr('10.5.72.0/24'),
    addr('10.5.9.0/32'),
    addr('10.5.1.1/32', '10.5.1.2'),
    addr('192.0.2.7/24'),
  ]);
  const res = await setupDevice(opts(f));
  t.same(f.calls, ['add 10.5.72.0/32', 'del 10.5.72.0/24', 'del 10.5.9.0/32', 'del 10.5.1.1/32 peer 10.5.1.2']);
  t.same(f.addrs.map(text).sort(), ['10.5.72.0/32', '192.0.2.7/24']);
  t.equal(res.removed.length, 3);
});

t.test('already configured: no changes', async (t) => {
  const f = new FakeLinks({ index: 7, name: 'flannel.1', mtu: 1450, flags: 1, up: true, mac: null }, [addr('10.5.72.0/32')]);
  await setupDevice(opts(f));
  t.same(f.calls, []);
});

t.test('missing device: the NetlinkError propagates to the daemon', async (t) => {
  const f = new FakeLinks({ index: 7, name: 'other', mtu: 1450, flags: 1, up: true, mac: null }, []);
  await t.rejects(setupDevice(opts(f)), { name: 'NetlinkError', code: 'ENODEV', message: 'get link flannel.1: No such device' });
});
