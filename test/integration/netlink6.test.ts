// The IPv6 half of our rtnetlink binding against the real kernel, on a TUN device in a namespace:
// the overlay device's own <IPv6 lease subnet IP>/128 (as flannel's flannel-v6.<VNI> carries),
// and batched IPv6 routes to peers' subnets (replace, idempotent re-replace, delete, delete of an
// absent route, a failing entry reported alone). This file re-executes itself inside the namespace
// as the driver (`--driver <ifname>`), which prints one JSON report.
import { spawn } from 'node:child_process';
import { NativeRtnetlink } from '../../src/netlink/rtnetlink';
import { formatCidr6, parseAddr6, parseCidr6 } from '../../src/subnet/cidr6';
import { formatIp6 } from '../../src/subnet/ip6';
import { cleanupPrefix, newPrefix, run } from '../../netns-fixtures/testbed';

async function driver(ifname: string): Promise<void> {
  const nl = new NativeRtnetlink();
  const link = await nl.getLink(ifname);
  const own = { ip: parseAddr6('fc00:0:0:48::'), prefixLen: 128 };
  await nl.replaceAddr6(link.index, own);
  await nl.replaceAddr6(link.index, own); // again: no EEXIST
  const addrs = (await nl.listAddrs6(link.index)).map((a) => `${formatIp6(a.ip)}/${a.prefixLen}`);
  const replace = await nl.applyRoutes6(link.index, [
    { kind: 'replace', dst: parseCidr6('fc00:0:0:9::/64') },
    { kind: 'replace', dst: parseCidr6('fc00:0:0:a::/64') },
    { kind: 'replace', dst: parseCidr6('fc00:0:0:b::/64'), gateway: parseAddr6('fe80::1'), onlink: true, metric: 5 },
    // A gateway that is not on any link, without onlink: the kernel refuses just this entry.
    { kind: 'replace', dst: parseCidr6('fc00:0:0:c::/64'), gateway: parseAddr6('2001:db8:ffff::1') },
  ]);
  const again = await nl.applyRoutes6(link.index, [{ kind: 'replace', dst: parseCidr6('fc00:0:0:9::/64') }]);
  const routes = (await nl.listRoutes6(link.index))
    .filter((r) => r.proto === 3)
    .map(
      (r) =>
        `${formatCidr6(r.dst)}${r.gateway !== 0n ? ` via ${formatIp6(r.gateway)}` : ''} metric ${r.metric}${r.onlink ? ' onlink' : ''}`,
    )
    .sort();
  const del = await nl.applyRoutes6(link.index, [
    { kind: 'delete', dst: parseCidr6('fc00:0:0:a::/64') },
    { kind: 'delete', dst: parseCidr6('fc00:0:0:d::/64') }, // absent: fine
  ]);
  const after = (await nl.listRoutes6(link.index))
    .filter((r) => r.proto === 3)
    .map((r) => formatCidr6(r.dst))
    .sort();
  await nl.deleteAddr6(link.index, own);
  await nl.deleteAddr6(link.index, own); // gone already: fine
  const addrsAfter = (await nl.listAddrs6(link.index)).map((a) => `${formatIp6(a.ip)}/${a.prefixLen}`);
  const errs = (xs: ReadonlyArray<Error | null>) => xs.map((e) => (e === null ? null : e.message));
  process.stdout.write(
    JSON.stringify({ addrs, replace: errs(replace), again: errs(again), routes, del: errs(del), after, addrsAfter }) + '\n',
  );
}

async function main(): Promise<void> {
  const t = (await import('tap')).default;
  t.test('IPv6 addresses and route batches on a TUN device (real rtnetlink)', async (t) => {
    const prefix = newPrefix();
    const ns = `${prefix}-nl6`;
    const tun = `tsf6${prefix.slice(-5)}`;
    t.teardown(() => cleanupPrefix(prefix));
    await run(['ip', 'netns', 'add', ns]);
    await run(['ip', '-n', ns, 'tuntap', 'add', 'mode', 'tun', 'name', tun]);
    await run(['ip', '-n', ns, 'link', 'set', tun, 'up']);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, __filename, '--driver', tun], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    t.equal(code, 0, err);
    const rep = JSON.parse(out) as Record<string, unknown>;
    t.ok((rep.addrs as string[]).includes('fc00:0:0:48::/128'), 'own /128 address on the device');
    t.same((rep.replace as unknown[]).slice(0, 3), [null, null, null], 'three routes replaced');
    t.match(
      (rep.replace as string[])[3],
      /^replace route fc00:0:0:c::\/64 via 2001:db8:ffff::1 dev tsf6\w+: /,
      'the bad entry fails alone, named',
    );
    t.same(rep.again, [null], 're-replacing is idempotent');
    t.same(rep.routes, ['fc00:0:0:9::/64 metric 1024', 'fc00:0:0:a::/64 metric 1024', 'fc00:0:0:b::/64 via fe80::1 metric 5 onlink']);
    t.same(rep.del, [null, null], 'delete, and delete of an absent route, succeed');
    t.same(rep.after, ['fc00:0:0:9::/64', 'fc00:0:0:b::/64']);
    t.notOk((rep.addrsAfter as string[]).includes('fc00:0:0:48::/128'), 'address removed');
    // The kernel's own view, through iproute2.
    const shown = (await run(['ip', '-n', ns, '-6', 'route', 'show', 'dev', tun, 'proto', 'boot'])).stdout;
    t.match(shown, /^fc00:0:0:9::\/64 metric 1024/m);
  });
}

if (process.argv[2] === '--driver') {
  driver(process.argv[3] ?? '').catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
} else {
  void main();
}
