// IptablesManager against an in-memory iptables that understands exactly what the manager runs:
// `--version`, `-w -t T -S CHAIN` and an `iptables-restore --noflush` payload. The real binaries are
// exercised in test/integration/masquerade.test.ts.
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { IptablesError, IptablesManager, type CommandResult, type CommandRunner } from '../../src/iptables/iptables-manager';
import { forwardRuleSet, masqRuleSet, renderRule, tokenizeRuleLine } from '../../src/iptables/masquerade-rules';
import { parseIp4Net } from '../../src/subnet/ip4';
import { parseCidr6 } from '../../src/subnet/cidr6';

const N = parseIp4Net('10.5.0.0/16');
const P = parseIp4Net('10.5.72.0/24');
const BUILTIN = new Set(['POSTROUTING', 'PREROUTING', 'INPUT', 'OUTPUT', 'FORWARD']);

class FakeIptables {
  version = 'iptables v1.8.9 (nf_tables)';
  /** table → chain → rule lines as `-S` prints them (without "-A CHAIN"). */
  tables = new Map<string, Map<string, string[]>>();
  calls: Array<{ file: string; args: string[]; input?: string }> = [];
  failRestore: string | null = null;

  chain(table: string, chain: string): string[] | undefined {
    return this.tables.get(table)?.get(chain);
  }

  private table(name: string): Map<string, string[]> {
    let tbl = this.tables.get(name);
    if (!tbl) {
      tbl = new Map([...BUILTIN].map((c) => [c, [] as string[]]));
      this.tables.set(name, tbl);
    }
    return tbl;
  }

  restores(): Array<{ args: string[]; input?: string }> {
    return this.calls.filter((c) => c.file === 'iptables-restore');
  }

  readonly run: CommandRunner = async (file, args, input) => {
    this.calls.push({ file, args: [...args], input });
    const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
    if (file === 'iptables' && args[0] === '--version') return ok(`${this.version}\n`);
    if (file === 'iptables' && args[0] === '-w' && args[1] === '-t' && args[3] === '-S') {
      const rules = this.table(args[2]!).get(args[4]!);
      if (!rules) return { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' };
      return ok(rules.map((r) => `-A ${args[4]} ${r}\n`).join(''));
    }
    if (file === 'iptables-restore') {
      if (this.failRestore !== null) return { code: 1, stdout: '', stderr: this.failRestore };
      this.apply(input ?? '');
      return ok();
    }
    return { code: 2, stdout: '', stderr: `fake: unexpected ${file} ${args.join(' ')}` };
  };

  private apply(payload: string): void {
    let tbl: Map<string, string[]> | null = null;
    const staged = new Map<string, Map<string, string[]>>();
    for (const line of payload.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('*')) {
        const name = line.slice(1);
        const copy = new Map([...this.table(name)].map(([c, r]) => [c, [...r]] as [string, string[]]));
        staged.set(name, copy);
        tbl = copy;
      } else if (line === 'COMMIT') {
        tbl = null;
      } else if (line.startsWith(':')) {
        tbl!.set(line.slice(1).split(' ')[0]!, []); // create or flush, as iptables-restore --noflush does
      } else {
        const [op, chain, ...spec] = tokenizeRuleLine(line);
        const rules = tbl!.get(chain!);
        if (!rules) throw new Error(`fake: no chain ${chain}`);
        const text = renderRule('-A', { table: 'nat', chain: chain!, spec }).slice(`-A ${chain} `.length);
        if (op === '-A') rules.push(text);
        else if (op === '-D') {
          const i = rules.indexOf(text);
          if (i < 0) throw new Error(`fake: -D of missing rule ${line}`);
          rules.splice(i, 1);
        }
      }
    }
    for (const [name, copy] of staged) this.tables.set(name, copy);
  }
}

function capture(): { log: pino.Logger; lines: () => Array<{ level: number; msg: string; [k: string]: unknown }> } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk.toString());
      cb();
    },
  });
  return {
    log: pino(stream),
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string; [k: string]: unknown }),
  };
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function specs(set: ReturnType<typeof masqRuleSet>): string[] {
  return set.rules.map((r) => renderRule('-A', r).slice(`-A ${r.chain} `.length));
}

t.test('start installs both rule sets with one iptables-restore; an intact sync restores nothing', async (t) => {
  const ipt = new FakeIptables();
  const { log } = capture();
  const mgr = new IptablesManager({ network: N, subnet: P, masq: true, forwardRules: true, resyncSeconds: 3600, log, run: ipt.run });
  await mgr.start();
  t.teardown(() => mgr.stop());
  t.equal(ipt.restores().length, 1);
  t.strictSame(ipt.restores()[0]!.args, ['--noflush', '-w']);
  t.strictSame(ipt.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(N, P, { randomFully: true })));
  t.strictSame(ipt.chain('filter', 'FLANNEL-FWD'), specs(forwardRuleSet(N)));
  t.strictSame(ipt.chain('nat', 'POSTROUTING'), ['-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG']);

  const before = ipt.calls.length;
  t.strictSame(await mgr.syncOnce(), { rebuilt: [] });
  t.equal(ipt.restores().length, 1, 'no restore when everything is in place');
  t.ok(
    ipt.calls.slice(before).every((c) => c.args.includes('-S')),
    'only listings',
  );

  // One forward rule gone: only the filter table is rebuilt, in one process.
  ipt.tables.get('filter')!.get('FLANNEL-FWD')!.pop();
  t.strictSame(await mgr.syncOnce(), { rebuilt: ['filter'] });
  t.equal(ipt.restores().length, 2);
  t.notMatch(ipt.restores()[1]!.input!, /\*nat/);
  t.strictSame(ipt.chain('filter', 'FLANNEL-FWD'), specs(forwardRuleSet(N)));
  t.strictSame(ipt.chain('filter', 'FORWARD'), ['-m comment --comment "flanneld forward" -j FLANNEL-FWD'], 'jump not duplicated');
});

t.test('a foreign rule in our chain or a reordered chain triggers a rebuild', async (t) => {
  const ipt = new FakeIptables();
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: false,
    resyncSeconds: 3600,
    log: capture().log,
    run: ipt.run,
  });
  await mgr.start();
  t.teardown(() => mgr.stop());
  const chain = ipt.tables.get('nat')!.get('FLANNEL-POSTRTG')!;
  chain.reverse();
  t.strictSame(await mgr.syncOnce(), { rebuilt: ['nat'] });
  t.strictSame(ipt.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(N, P, { randomFully: true })));
  t.equal(ipt.tables.get('filter'), undefined, 'filter table untouched without forward rules');
});

t.test('old iptables: no --random-fully, no -w for iptables-restore; the flag can also disable it', async (t) => {
  const old = new FakeIptables();
  old.version = 'iptables v1.6.1';
  const m1 = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: false,
    resyncSeconds: 3600,
    log: capture().log,
    run: old.run,
  });
  await m1.start();
  await m1.stop();
  t.strictSame(old.restores()[0]!.args, ['--noflush']);
  t.notMatch(old.restores()[0]!.input!, /random-fully/);

  const disabled = new FakeIptables();
  const m2 = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: false,
    resyncSeconds: 3600,
    randomFully: false,
    log: capture().log,
    run: disabled.run,
  });
  await m2.start();
  await m2.stop();
  t.strictSame(disabled.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(N, P, { randomFully: false })));
});

t.test('rules of a previous subnet are removed and reported at start', async (t) => {
  const ipt = new FakeIptables();
  const prevSubnet = parseIp4Net('10.5.9.0/24');
  const old = masqRuleSet(N, prevSubnet, { randomFully: true });
  ipt.tables.set(
    'nat',
    new Map([
      ['POSTROUTING', ['-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG']],
      ['FLANNEL-POSTRTG', specs(old)],
    ]),
  );
  const cap = capture();
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: false,
    resyncSeconds: 3600,
    previous: { network: N, subnet: prevSubnet },
    log: cap.log,
    run: ipt.run,
  });
  await mgr.start();
  await mgr.stop();
  t.strictSame(ipt.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(N, P, { randomFully: true })));
  const report = cap.lines().find((l) => /previous network\/subnet/.test(l.msg));
  t.ok(report, 'leftovers logged');
  t.equal(report?.rules, 3, 'the three subnet-specific rules');
  t.equal(report?.previousSubnet, '10.5.9.0/24');
});

t.test('restore failure: typed error with command and stderr; start rejects', async (t) => {
  const ipt = new FakeIptables();
  ipt.failRestore = 'iptables-restore: line 3 failed\n';
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: true,
    resyncSeconds: 3600,
    log: capture().log,
    run: ipt.run,
  });
  const err = await mgr.start().then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, IptablesError);
  const e = err as IptablesError;
  t.equal(e.command, 'iptables-restore --noflush -w');
  t.equal(e.exitCode, 1);
  t.equal(e.stderr, 'iptables-restore: line 3 failed\n');
  t.match(e.message, 'iptables-restore --noflush -w exited with 1: iptables-restore: line 3 failed');
  t.match(e.input, /^\*nat\n:FLANNEL-POSTRTG - \[0:0\]\n/);
});

t.test('a program that cannot be started is an IptablesError too', async (t) => {
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: true,
    resyncSeconds: 5,
    iptablesPath: '/nonexistent/iptables',
    log: capture().log,
  });
  const err = await mgr.start().then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, IptablesError);
  t.equal((err as IptablesError).exitCode, null);
  t.match((err as IptablesError).message, /\/nonexistent\/iptables --version was killed or could not run: .*ENOENT/);
});

t.test('resync failures are logged once per state change', async (t) => {
  const ipt = new FakeIptables();
  const cap = capture();
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: true,
    forwardRules: false,
    resyncSeconds: 0.02,
    log: cap.log,
    run: ipt.run,
  });
  await mgr.start();
  t.teardown(() => mgr.stop());
  ipt.failRestore = 'locked\n';
  ipt.tables.get('nat')!.get('FLANNEL-POSTRTG')!.pop();
  const failedAttempts = (): number => ipt.restores().length - 1;
  await waitUntil('several failed resyncs', () => failedAttempts() >= 5);
  const errors = (): number => cap.lines().filter((l) => l.level === 50).length;
  t.equal(errors(), 1, 'one error line for a persisting failure');
  ipt.failRestore = 'other failure\n';
  const at = failedAttempts();
  await waitUntil('more failed resyncs', () => failedAttempts() >= at + 3);
  t.equal(errors(), 2, 'a different error is a new state');
  ipt.failRestore = null;
  await waitUntil('recovery logged', () => cap.lines().some((l) => l.msg === 'iptables resync succeeded again'));
  t.strictSame(ipt.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(N, P, { randomFully: true })));
  await mgr.stop();
  const n = ipt.calls.length;
  await new Promise((r) => setTimeout(r, 100));
  t.equal(ipt.calls.length, n, 'no resync after stop');
});

t.test('nothing to do without -ip-masq and forward rules; bad resync period rejected', async (t) => {
  const ipt = new FakeIptables();
  const mgr = new IptablesManager({
    network: N,
    subnet: P,
    masq: false,
    forwardRules: false,
    resyncSeconds: 5,
    log: capture().log,
    run: ipt.run,
  });
  await mgr.start();
  await mgr.stop();
  t.strictSame(
    ipt.calls.map((c) => c.args.join(' ')),
    ['--version'],
  );
  t.throws(
    () => new IptablesManager({ network: N, subnet: P, masq: true, forwardRules: true, resyncSeconds: 0, log: capture().log }),
    RangeError,
  );
});

t.test('an IPv6 network drives ip6tables and ip6tables-restore with the IPv6 rules', async (t) => {
  const ipt = new FakeIptables();
  const { log } = capture();
  const files: string[] = [];
  // The fake speaks "iptables"; record which binaries the manager asked for.
  const run: CommandRunner = (file, args, input) => {
    files.push(file);
    return ipt.run(file.replace(/^ip6tables/, 'iptables'), args, input);
  };
  const n6 = parseCidr6('fc00::/48');
  const p6 = parseCidr6('fc00:0:0:48::/64');
  const mgr = new IptablesManager({ network: n6, subnet: p6, masq: true, forwardRules: true, resyncSeconds: 3600, log, run });
  await mgr.start();
  t.teardown(() => mgr.stop());
  t.ok(files.length > 0 && files.every((f) => f === 'ip6tables' || f === 'ip6tables-restore'), files.join(' '));
  t.ok(files.includes('ip6tables-restore'));
  t.strictSame(ipt.chain('nat', 'FLANNEL-POSTRTG'), specs(masqRuleSet(n6, p6, { randomFully: true })));
  t.match((ipt.chain('nat', 'FLANNEL-POSTRTG') ?? []).join('\n'), /-s fc00::\/48 ! -d ff00::\/8 /);
  t.strictSame(ipt.chain('filter', 'FLANNEL-FWD'), specs(forwardRuleSet(n6)));
  t.throws(() => new IptablesManager({ network: n6, subnet: P, masq: true, forwardRules: false, resyncSeconds: 1, log, run }), RangeError);
});
