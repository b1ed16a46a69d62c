import t from 'tap';
import { parseIp4Net } from '../../src/subnet/ip4';
import { parseCidr6 } from '../../src/subnet/cidr6';
import {
  countPresent,
  forwardRuleSet,
  IptablesPayloadError,
  jumpCount,
  masqRuleSet,
  parseChainListing,
  parseIptablesVersion,
  previousMasqRules,
  rebuildPayload,
  renderRule,
  restoreSupportsWait,
  ruleSetIntact,
  supportsRandomFully,
  tokenizeRuleLine,
  type RuleSet,
} from '../../src/iptables/masquerade-rules';

const N = parseIp4Net('10.5.0.0/16');
const P = parseIp4Net('10.5.72.0/24');

function lines(set: RuleSet): string[] {
  return [renderRule('-A', set.jump), ...set.rules.map((r) => renderRule('-A', r))];
}

t.test('masquerade rules: flannel HEAD order with --random-fully', async (t) => {
  const set = masqRuleSet(N, P, { randomFully: true });
  t.equal(set.table, 'nat');
  t.equal(set.parent, 'POSTROUTING');
  t.equal(set.chain, 'FLANNEL-POSTRTG');
  t.strictSame(lines(set), [
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s 10.5.72.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
  ]);
  t.strictSame(set.rules[0]!.spec, [
    '-m',
    'mark',
    '--mark',
    '0x4000/0x4000',
    '-m',
    'comment',
    '--comment',
    'flanneld masq',
    '-j',
    'RETURN',
  ]);
});

t.test('masquerade rules without --random-fully', async (t) => {
  const set = masqRuleSet(N, P, { randomFully: false });
  t.strictSame(lines(set).slice(5), [
    '-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE',
    '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE',
  ]);
});

t.test('forward rules', async (t) => {
  const set = forwardRuleSet(N);
  t.equal(set.table, 'filter');
  t.strictSame(lines(set), [
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
  ]);
});

t.test('rebuild payload: declare (create/flush) chain, re-append jump once, rules in order, per-table COMMIT', async (t) => {
  const masq = masqRuleSet(N, P, { randomFully: false });
  const fwd = forwardRuleSet(N);
  t.equal(
    rebuildPayload([
      { set: masq, jumpCopies: 2 },
      { set: fwd, jumpCopies: 0 },
    ]),
    [
      '*nat',
      ':FLANNEL-POSTRTG - [0:0]',
      '-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.5.72.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE',
      '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE',
      'COMMIT',
      '*filter',
      ':FLANNEL-FWD - [0:0]',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      'COMMIT',
      '',
    ].join('\n'),
  );
  t.equal(rebuildPayload([]), '');
});

t.test('renderRule refuses arguments iptables-restore would re-split', async (t) => {
  t.throws(() => renderRule('-A', { table: 'nat', chain: 'X', spec: ['--comment', 'a"b'] }), IptablesPayloadError);
  t.throws(() => renderRule('-A', { table: 'nat', chain: 'X', spec: ['--comment', ''] }), IptablesPayloadError);
});

t.test('tokenizer understands iptables -S quoting', async (t) => {
  t.strictSame(tokenizeRuleLine('-A POSTROUTING -m comment --comment "a  b" -j X'), [
    '-A',
    'POSTROUTING',
    '-m',
    'comment',
    '--comment',
    'a  b',
    '-j',
    'X',
  ]);
  t.strictSame(tokenizeRuleLine('-A P -m comment --comment ab -j X'), ['-A', 'P', '-m', 'comment', '--comment', 'ab', '-j', 'X']);
  t.strictSame(tokenizeRuleLine('-A P -m comment --comment "a\\"b" -j X'), ['-A', 'P', '-m', 'comment', '--comment', 'a"b', '-j', 'X']);
  t.throws(() => tokenizeRuleLine('-A P --comment "open'));
});

// Verbatim `iptables -t nat -S` output of iptables 1.8.9 (nf_tables) after our payload.
const NAT_POSTROUTING = `-P POSTROUTING ACCEPT
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
`;
const NAT_CHAIN = `-N FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.72.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
`;

t.test('intact detection from listings', async (t) => {
  const set = masqRuleSet(N, P, { randomFully: true });
  const parentRules = parseChainListing(NAT_POSTROUTING, 'POSTROUTING');
  t.equal(parentRules.length, 2);
  const chainRules = parseChainListing(NAT_CHAIN, 'FLANNEL-POSTRTG');
  t.equal(chainRules.length, 6);
  t.equal(jumpCount(set, { parentRules, chainRules }), 1);
  t.ok(ruleSetIntact(set, { parentRules, chainRules }));

  t.notOk(ruleSetIntact(set, { parentRules: parentRules.slice(0, 1), chainRules }), 'jump missing');
  t.notOk(ruleSetIntact(set, { parentRules, chainRules: null }), 'chain not listed');
  t.notOk(ruleSetIntact(set, { parentRules, chainRules: chainRules.slice(0, 5) }), 'one rule missing');
  t.notOk(ruleSetIntact(set, { parentRules, chainRules: [chainRules[1]!, chainRules[0]!, ...chainRules.slice(2)] }), 'reordered');
  t.notOk(ruleSetIntact(masqRuleSet(N, P, { randomFully: false }), { parentRules, chainRules }), '--random-fully setting changed');
  t.notOk(ruleSetIntact(masqRuleSet(N, parseIp4Net('10.5.9.0/24'), { randomFully: true }), { parentRules, chainRules }), 'subnet changed');
  t.ok(
    ruleSetIntact(set, { parentRules: [...parentRules, set.jump.spec], chainRules }),
    'a duplicate jump is tolerated (flannel only requires existence)',
  );
});

t.test('leftovers of a previous network/subnet are recognised, shared rules are not counted', async (t) => {
  const cur = masqRuleSet(N, parseIp4Net('10.5.9.0/24'), { randomFully: true });
  const prev = previousMasqRules(N, P, cur);
  const chainRules = parseChainListing(NAT_CHAIN, 'FLANNEL-POSTRTG');
  // All but the kube-proxy mark rule and the two network-wide MASQUERADEs (same N) are stale.
  t.equal(countPresent({ parentRules: [], chainRules }, prev), 3);
  // v0.20.0 order had `-s N -d N -j RETURN`.
  const v020 = tokenizeRuleLine('-s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN');
  t.equal(countPresent({ parentRules: [], chainRules: [v020] }, prev), 1);
  const otherNet = previousMasqRules(parseIp4Net('10.6.0.0/16'), parseIp4Net('10.6.1.0/24'), cur);
  t.equal(countPresent({ parentRules: [], chainRules: [v020] }, otherNet), 0);
});

t.test('iptables version and features', async (t) => {
  const v = parseIptablesVersion('iptables v1.8.9 (nf_tables)\n');
  t.strictSame(v, { major: 1, minor: 8, patch: 9, backend: 'nf_tables' });
  t.ok(supportsRandomFully(v!));
  t.ok(restoreSupportsWait(v!));
  const old = parseIptablesVersion('iptables v1.6.1');
  t.strictSame(old, { major: 1, minor: 6, patch: 1, backend: null });
  t.notOk(supportsRandomFully(old!));
  t.notOk(restoreSupportsWait(old!));
  t.ok(supportsRandomFully(parseIptablesVersion('iptables v1.6.2')!));
  t.equal(parseIptablesVersion('garbage'), null);
});

t.test('IPv6 rules (ip6tables): flannel masqIP6Rules with ff00::/8, forward rules on the IPv6 network', async (t) => {
  const n6 = parseCidr6('fc00::/48');
  const p6 = parseCidr6('fc00:0:0:48::/64');
  t.strictSame(lines(masqRuleSet(n6, p6, { randomFully: true })), [
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s fc00:0:0:48::/64 -d fc00::/48 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s fc00::/48 -d fc00:0:0:48::/64 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00:0:0:48::/64 -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s fc00::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    '-A FLANNEL-POSTRTG ! -s fc00::/48 -d fc00::/48 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
  ]);
  t.strictSame(lines(forwardRuleSet(n6)), [
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s fc00::/48 -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d fc00::/48 -m comment --comment "flanneld forward" -j ACCEPT',
  ]);
});
