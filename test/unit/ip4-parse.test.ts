import t from 'tap';
import fc from 'fast-check';
import { formatIp4, isIp4, Ip4ParseError, parseIp4, tryParseIp4 } from '../../src/subnet/ip4';

// The reference: the strict definition the scanner must match (four octets 0..255, no leading zeros).
function reference(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4) return -1;
  let ip = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return -1;
    ip = ip * 256 + Number(p);
  }
  return ip >>> 0;
}

t.test('examples', async (t) => {
  t.equal(parseIp4('192.0.2.1'), 0xc0000201);
  t.equal(parseIp4('0.0.0.0'), 0);
  t.equal(parseIp4('255.255.255.255'), 0xffffffff);
  for (const bad of [
    '',
    '1.2.3',
    '1.2.3.4.',
    '.1.2.3',
    '1..2.3',
    '01.2.3.4',
    '1.2.3.256',
    '1.2.3.4/8',
    ' 1.2.3.4',
    '1.2.3.-4',
    '1234.1.1.1',
  ]) {
    t.equal(tryParseIp4(bad), -1, JSON.stringify(bad));
    t.equal(isIp4(bad), false);
    t.throws(() => parseIp4(bad), Ip4ParseError);
  }
});

t.test('property: the scanner agrees with the strict reference', async (t) => {
  const octetish = fc.oneof(fc.nat(300).map(String), fc.constantFrom('', '00', '01', '-1', 'a', ' 1', '1 '));
  const dotted = fc.array(octetish, { minLength: 1, maxLength: 6 }).map((a) => a.join('.'));
  fc.assert(
    fc.property(fc.oneof(dotted, fc.string({ maxLength: 16 })), (s) => tryParseIp4(s) === reference(s)),
    { numRuns: 5000 },
  );
  fc.assert(fc.property(fc.nat(0xffffffff), (ip) => parseIp4(formatIp4(ip)) === ip >>> 0));
  t.pass('agrees');
});
