// -ip-masq end to end: IptablesManager runs inside a test host namespace (this file re-executed as a
// driver process), a container on cni0 talks to an "outside" namespace and to an overlay address on
// another host, and UDP echo servers report the source address they saw. Also: forward rules under
// a FORWARD DROP policy, leftovers of a previous subnet, repair within the resync period, rules kept
// on stop.
//
// Driver modes (argv: --driver <mode> ...), used only by the test itself:
//   manager <json>         IptablesManager.start(), resync until SIGTERM, then stop(); pino logs on stdout
//   udp-echo <ip> <port>   answers every datagram with the sender's address
//   udp-probe <ip> <port> [timeout ms]  sends until answered, prints the answer; exit 1 on timeout
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import pino from 'pino';
import { IptablesManager } from '../../src/iptables/iptables-manager';
import { forwardRuleSet, masqRuleSet, renderRule, type RuleSet } from '../../src/iptables/masquerade-rules';
import { parseIp4Net } from '../../src/subnet/ip4';
import { parseCidr6 } from '../../src/subnet/cidr6';
import { addContainer, createTestbed, run, waitFor, type NsNode, type Testbed } from '../../netns-fixtures/testbed';

const ECHO_PORT = 7777;
const NETWORK = '10.5.0.0/16';
const SUBNET = '10.5.72.0/24';
const REMOTE_SUBNET = '10.5.9.0/24';
const REMOTE_OVERLAY_IP = '10.5.9.1';
const OUTSIDE_IP = '198.51.100.2';
const HOST_OUTSIDE_IP = '198.51.100.1';

interface ManagerDriverConfig {
  network: string;
  subnet: string;
  resyncSeconds: number;
  previous?: { network: string; subnet: string };
}

// ------------------------------------------------------------------------------------------------
// driver side

async function driverManager(cfg: ManagerDriverConfig): Promise<void> {
  const log = pino();
  // An IPv6 network makes the manager maintain the ip6tables rules.
  const net = (text: string) => (text.includes(':') ? parseCidr6(text) : parseIp4Net(text));
  const mgr = new IptablesManager({
    network: net(cfg.network),
    subnet: net(cfg.subnet),
    masq: true,
    forwardRules: true,
    resyncSeconds: cfg.resyncSeconds,
    previous: cfg.previous ? { network: parseIp4Net(cfg.previous.network), subnet: parseIp4Net(cfg.previous.subnet) } : undefined,
    log,
  });
  await mgr.start();
  const keepAlive = setInterval(() => undefined, 1 << 30);
  process.once('SIGTERM', () => {
    void mgr.stop().then(() => {
      log.info('driver stopped');
      clearInterval(keepAlive);
    });
  });
}

function driverUdpEcho(ip: string, port: number): void {
  const sock = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  sock.on('message', (_msg, rinfo) => sock.send(rinfo.address, rinfo.port, rinfo.address));
  sock.bind(port, ip, () => process.stdout.write('listening\n'));
}

function driverUdpProbe(ip: string, port: number, timeoutMs: number): void {
  const sock = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  const send = (): void => sock.send('probe', port, ip);
  const timer = setInterval(send, 200);
  const deadline = setTimeout(() => {
    process.stderr.write(`no answer from ${ip}:${port}\n`);
    process.exit(1);
  }, timeoutMs);
  sock.on('message', (msg) => {
    process.stdout.write(`${msg.toString()}\n`);
    clearInterval(timer);
    clearTimeout(deadline);
    sock.close();
  });
  sock.bind(0, send);
}

function runDriver(mode: string, args: string[]): void {
  switch (mode) {
    case 'manager':
      driverManager(JSON.parse(args[0]!) as ManagerDriverConfig).catch((err: unknown) => {
        process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
        process.exit(1);
      });
      return;
    case 'udp-echo':
      driverUdpEcho(args[0]!, Number(args[1]));
      return;
    case 'udp-probe':
      driverUdpProbe(args[0]!, Number(args[1]), Number(args[2] ?? 10000));
      return;
    default:
      process.stderr.write(`unknown driver mode ${mode}\n`);
      process.exit(2);
  }
}

// ------------------------------------------------------------------------------------------------
// test side

function driverCmd(mode: string, ...args: string[]): string[] {
  return [process.execPath, __filename, '--driver', mode, ...args];
}

/** Collects a child's stdout lines; resolves when one matches. */
class LineWatcher {
  readonly lines: string[] = [];
  constructor(child: ChildProcess) {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
  }
  has(re: RegExp): boolean {
    return this.lines.some((l) => re.test(l));
  }
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }
}

function stderrOf(child: ChildProcess): () => string {
  let s = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (s += d));
  return () => s;
}

async function probe(node: NsNode, ip: string): Promise<string> {
  const res = await node.exec(driverCmd('udp-probe', ip, String(ECHO_PORT)), { timeoutMs: 20000 });
  return res.stdout.trim();
}

async function startEcho(spawnIn: (cmd: string[]) => ChildProcess, ip: string): Promise<void> {
  const child = spawnIn(driverCmd('udp-echo', ip, String(ECHO_PORT)));
  const out = new LineWatcher(child);
  const err = stderrOf(child);
  await waitFor(`udp echo on ${ip}`, async () => {
    if (child.exitCode !== null) throw new Error(`echo exited: ${err()}`);
    return out.has(/^listening$/);
  });
}

async function chainLines(node: NsNode, table: string, chain: string, bin = 'iptables'): Promise<string[]> {
  const res = await node.exec([bin, '-w', '-t', table, '-S', chain]);
  return res.stdout.split('\n').filter((l) => l.startsWith('-A '));
}

function expectedChain(set: RuleSet): string[] {
  return set.rules.map((r) => renderRule('-A', r));
}

/** An extra namespace of the testbed (same prefix, so stale-run cleanup finds it) with its own process list. */
async function addOutsideNamespace(bed: Testbed, suffix = 'out'): Promise<{ ns: string; spawn: (cmd: string[]) => ChildProcess }> {
  const ns = `${bed.prefix}-${suffix}`;
  const children: ChildProcess[] = [];
  await run(['ip', 'netns', 'add', ns]);
  bed.onTeardown(async () => {
    await Promise.all(
      children
        .filter((c) => c.exitCode === null && c.signalCode === null)
        .map((c) => new Promise<void>((r) => (c.once('exit', () => r()), c.kill('SIGKILL')))),
    );
    await run(['ip', 'netns', 'del', ns]);
  });
  await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  return {
    ns,
    spawn: (cmd) => {
      const child = spawn('ip', ['netns', 'exec', ns, 'setpriv', '--pdeathsig', 'KILL', '--', ...cmd], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      return child;
    },
  };
}

async function main(): Promise<void> {
  const t = (await import('tap')).default;

  t.test('ip-masq: outside traffic takes the host address, overlay traffic keeps the container address', async (t) => {
    const bed = await createTestbed({ hosts: 2, t });
    const h1 = bed.hosts[0]!;
    const h2 = bed.hosts[1]!;
    const c = await addContainer(h1, { subnet: SUBNET, index: 1 });

    // Outside world: 198.51.100.2 behind a veth of h1; its default route points back at h1 so that
    // un-masqueraded packets are answered too and the test sees their source instead of a timeout.
    const out = await addOutsideNamespace(bed);
    await h1.exec(['ip', 'link', 'add', 'vout', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out.ns]);
    await h1.exec(['ip', 'addr', 'add', `${HOST_OUTSIDE_IP}/24`, 'dev', 'vout']);
    await h1.exec(['ip', 'link', 'set', 'vout', 'up']);
    await run(['ip', '-n', out.ns, 'addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0']);
    await run(['ip', '-n', out.ns, 'link', 'set', 'eth0', 'up']);
    await run(['ip', '-n', out.ns, 'route', 'add', 'default', 'via', HOST_OUTSIDE_IP]);

    // Another overlay subnet on h2, reached from h1 over the underlay (eth0), plain routing.
    await h2.exec(['ip', 'link', 'add', 'ov0', 'type', 'bridge']);
    await h2.exec(['ip', 'addr', 'add', `${REMOTE_OVERLAY_IP}/24`, 'dev', 'ov0']);
    await h2.exec(['ip', 'link', 'set', 'ov0', 'up']);
    await h2.exec(['ip', 'route', 'add', SUBNET, 'via', h1.underlayIp]);
    await h1.exec(['ip', 'route', 'add', REMOTE_SUBNET, 'via', h2.underlayIp]);

    await startEcho(out.spawn, OUTSIDE_IP);
    await startEcho((cmd) => h2.spawn(cmd), REMOTE_OVERLAY_IP);

    // Control: without rules the outside sees the container address.
    t.equal(await probe(c, OUTSIDE_IP), c.ip, 'no masquerading before the manager runs');

    // Leftovers of a previous lease (10.5.9.0/24) as flannel v0.20.0 would have left them, with its
    // jump inserted at the top of POSTROUTING.
    await h1.exec(['iptables-restore', '--noflush', '-w'], {
      input: [
        '*nat',
        ':FLANNEL-POSTRTG - [0:0]',
        '-I POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        `-A FLANNEL-POSTRTG -s ${NETWORK} -d ${NETWORK} -m comment --comment "flanneld masq" -j RETURN`,
        `-A FLANNEL-POSTRTG ! -s ${NETWORK} -d ${REMOTE_SUBNET} -m comment --comment "flanneld masq" -j RETURN`,
        'COMMIT',
        '',
      ].join('\n'),
    });
    // Forwarding now depends on FLANNEL-FWD.
    await h1.exec(['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    const blocked = await c.exec(driverCmd('udp-probe', OUTSIDE_IP, String(ECHO_PORT), '2000'), { allowFail: true });
    t.not(blocked.code, 0, 'FORWARD policy DROP blocks the container before the forward rules exist');

    const cfg: ManagerDriverConfig = {
      network: NETWORK,
      subnet: SUBNET,
      resyncSeconds: 1,
      previous: { network: NETWORK, subnet: REMOTE_SUBNET },
    };
    const driver = h1.spawn(driverCmd('manager', JSON.stringify(cfg)));
    const logs = new LineWatcher(driver);
    const driverErr = stderrOf(driver);
    await waitFor('iptables rules installed', async () => {
      if (driver.exitCode !== null) throw new Error(`manager driver exited ${driver.exitCode}: ${driverErr()}`);
      return logs.has(/"msg":"iptables rules installed"/);
    });
    t.ok(logs.has(/"rules":2,"msg":"removing iptables rules left in FLANNEL-POSTRTG/), 'leftovers of the previous subnet reported');

    const masq = masqRuleSet(parseIp4Net(NETWORK), parseIp4Net(SUBNET), { randomFully: true });
    const fwd = forwardRuleSet(parseIp4Net(NETWORK));
    const masqJump = renderRule('-A', masq.jump);
    const fwdJump = renderRule('-A', fwd.jump);
    t.strictSame(await chainLines(h1, 'nat', 'FLANNEL-POSTRTG'), expectedChain(masq), 'FLANNEL-POSTRTG holds exactly the HEAD rules');
    t.strictSame(await chainLines(h1, 'nat', 'POSTROUTING'), [masqJump], 'one jump, appended');
    t.strictSame(await chainLines(h1, 'filter', 'FLANNEL-FWD'), expectedChain(fwd), 'FLANNEL-FWD holds the forward rules');
    t.strictSame(await chainLines(h1, 'filter', 'FORWARD'), [fwdJump], 'one FORWARD jump');

    t.equal(await probe(c, OUTSIDE_IP), HOST_OUTSIDE_IP, 'container → outside is masqueraded to the host address');
    t.equal(await probe(c, REMOTE_OVERLAY_IP), c.ip, 'container → overlay keeps the container address');

    // Break the rules by hand; the resync repairs them (wait for the condition, no timing bound).
    const masqRule = masq.rules[4]!;
    await h1.exec(['iptables', '-w', '-t', 'nat', '-D', masqRule.chain, ...masqRule.spec]);
    t.notOk((await chainLines(h1, 'nat', 'FLANNEL-POSTRTG')).includes(renderRule('-A', masqRule)), 'rule deleted by hand');
    await waitFor('FLANNEL-POSTRTG restored', async () => {
      const lines = await chainLines(h1, 'nat', 'FLANNEL-POSTRTG');
      return JSON.stringify(lines) === JSON.stringify(expectedChain(masq));
    });
    t.pass('masquerade rule restored in order');
    t.equal(await probe(c, OUTSIDE_IP), HOST_OUTSIDE_IP, 'masquerading works again');

    await h1.exec(['iptables', '-w', '-t', 'nat', '-D', 'POSTROUTING', ...masq.jump.spec]);
    await h1.exec(['iptables', '-w', '-t', 'filter', '-F', 'FLANNEL-FWD']);
    await waitFor('jump and forward rules restored', async () => {
      const post = await chainLines(h1, 'nat', 'POSTROUTING');
      const fwdLines = await chainLines(h1, 'filter', 'FLANNEL-FWD');
      return JSON.stringify(post) === JSON.stringify([masqJump]) && JSON.stringify(fwdLines) === JSON.stringify(expectedChain(fwd));
    });
    t.pass('POSTROUTING jump and FLANNEL-FWD restored');
    t.ok(logs.count(/"msg":"some iptables rules are missing or changed; recreating them"/) >= 2, 'repairs were logged');
    t.equal(await probe(c, REMOTE_OVERLAY_IP), c.ip, 'overlay traffic forwarded and not masqueraded');

    // stop() keeps the rules, like flannel.
    const exited = new Promise<number | null>((r) => driver.once('exit', (code) => r(code)));
    driver.kill('SIGTERM');
    t.equal(await exited, 0, 'driver exits cleanly after stop()');
    t.ok(logs.has(/"msg":"driver stopped"/), 'stop() completed');
    t.strictSame(await chainLines(h1, 'nat', 'FLANNEL-POSTRTG'), expectedChain(masq), 'rules kept after stop');
    t.strictSame(await chainLines(h1, 'filter', 'FLANNEL-FWD'), expectedChain(fwd), 'forward rules kept after stop');
    t.equal(driverErr(), '', 'driver wrote nothing to stderr');
  });

  t.test('ip-masq for IPv6 (ip6tables, flannel masqIP6Rules): container → outside masqueraded, overlay kept, repaired', async (t) => {
    const bed = await createTestbed({ hosts: 1, t });
    const h1 = bed.hosts[0]!;
    const ip = (ns: string, ...args: string[]) => run(['ip', '-n', ns, ...args]);
    await h1.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    // A "container" on the host's IPv6 lease subnet and an "outside" network, each a namespace on a veth.
    const c = await addOutsideNamespace(bed, 'c6');
    const out = await addOutsideNamespace(bed, 'out6');
    await h1.exec(['ip', 'link', 'add', 'vc6', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.ns]);
    await h1.exec(['ip', 'link', 'add', 'vout6', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out.ns]);
    await h1.exec(['ip', '-6', 'addr', 'add', 'fc00:0:0:48::1/64', 'dev', 'vc6', 'nodad']);
    await h1.exec(['ip', '-6', 'addr', 'add', '2001:db8:100::1/64', 'dev', 'vout6', 'nodad']);
    for (const dev of ['vc6', 'vout6']) await h1.exec(['ip', 'link', 'set', dev, 'up']);
    // The remote overlay subnet lives behind the outside link in this test.
    await h1.exec(['ip', '-6', 'route', 'add', 'fc00:0:0:9::/64', 'via', '2001:db8:100::2', 'dev', 'vout6']);
    await ip(c.ns, '-6', 'addr', 'add', 'fc00:0:0:48::2/64', 'dev', 'eth0', 'nodad');
    await ip(c.ns, 'link', 'set', 'eth0', 'up');
    await ip(c.ns, '-6', 'route', 'add', 'default', 'via', 'fc00:0:0:48::1');
    await ip(out.ns, '-6', 'addr', 'add', '2001:db8:100::2/64', 'dev', 'eth0', 'nodad');
    await ip(out.ns, '-6', 'addr', 'add', 'fc00:0:0:9::1/64', 'dev', 'eth0', 'nodad');
    await ip(out.ns, 'link', 'set', 'eth0', 'up');
    await ip(out.ns, '-6', 'route', 'add', 'default', 'via', '2001:db8:100::1');
    await startEcho(out.spawn, '2001:db8:100::2');
    await startEcho(out.spawn, 'fc00:0:0:9::1');
    const probe6 = async (dst: string): Promise<string> => {
      const child = c.spawn(driverCmd('udp-probe', dst, String(ECHO_PORT)));
      const lines = new LineWatcher(child);
      const err = stderrOf(child);
      const code = await new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      if (code !== 0) throw new Error(`probe to ${dst} exited ${code}: ${err()}`);
      return lines.lines[0] ?? '';
    };
    t.equal(await probe6('2001:db8:100::2'), 'fc00:0:0:48::2', 'before -ip-masq the container address leaves unchanged');

    const cfg: ManagerDriverConfig = { network: 'fc00::/48', subnet: 'fc00:0:0:48::/64', resyncSeconds: 1 };
    const driver = h1.spawn(driverCmd('manager', JSON.stringify(cfg)));
    const logs = new LineWatcher(driver);
    const driverErr = stderrOf(driver);
    await waitFor('ip6tables rules installed', async () => {
      if (driver.exitCode !== null) throw new Error(`manager driver exited ${driver.exitCode}: ${driverErr()}`);
      return logs.has(/"msg":"ip6tables rules installed"/);
    });
    const masq = masqRuleSet(parseCidr6(cfg.network), parseCidr6(cfg.subnet), { randomFully: true });
    const fwd = forwardRuleSet(parseCidr6(cfg.network));
    t.strictSame(await chainLines(h1, 'nat', 'FLANNEL-POSTRTG', 'ip6tables'), expectedChain(masq), 'FLANNEL-POSTRTG (ip6tables) exactly');
    t.strictSame(await chainLines(h1, 'nat', 'POSTROUTING', 'ip6tables'), [renderRule('-A', masq.jump)]);
    t.strictSame(await chainLines(h1, 'filter', 'FLANNEL-FWD', 'ip6tables'), expectedChain(fwd), 'FLANNEL-FWD (ip6tables) exactly');
    t.strictSame(await chainLines(h1, 'nat', 'POSTROUTING'), [], 'no IPv4 rules from the IPv6 manager');

    t.equal(await probe6('2001:db8:100::2'), '2001:db8:100::1', 'container → outside is masqueraded to the host address');
    t.equal(await probe6('fc00:0:0:9::1'), 'fc00:0:0:48::2', 'container → overlay keeps the container address');

    const masqRule = masq.rules[4]!;
    await h1.exec(['ip6tables', '-w', '-t', 'nat', '-D', masqRule.chain, ...masqRule.spec]);
    await waitFor('FLANNEL-POSTRTG (ip6tables) restored', async () => {
      const lines = await chainLines(h1, 'nat', 'FLANNEL-POSTRTG', 'ip6tables');
      return JSON.stringify(lines) === JSON.stringify(expectedChain(masq));
    });
    t.pass('IPv6 masquerade rule restored in order');
    const exited = new Promise<number | null>((r) => driver.once('exit', (code) => r(code)));
    driver.kill('SIGTERM');
    t.equal(await exited, 0);
    t.equal(driverErr(), '', 'driver wrote nothing to stderr');
  });
}

if (process.argv[2] === '--driver') {
  runDriver(process.argv[3] ?? '', process.argv.slice(4));
} else {
  void main();
}
