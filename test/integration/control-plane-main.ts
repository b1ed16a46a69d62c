// Test entry point: tsflanneld's main() with the control plane only (leases, watch, subnet.env; no data
// plane, no iptables), so control-plane tests can run many daemons in one namespace. Short lease timing
// comes from this entry's own environment — TSFLANNELD_TEST_LEASE_TTL_SECONDS and
// TSFLANNELD_TEST_RENEW_RETRY_SECONDS — and is injected as options: tsflanneld itself reads no test knobs.
import { main } from '../../src/cli/main';

function seconds(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`${name}=${text}: expected a positive integer (seconds)\n`);
    process.exit(2);
  }
  return n;
}

const ttlSec = seconds('TSFLANNELD_TEST_LEASE_TTL_SECONDS');
const renewRetrySec = seconds('TSFLANNELD_TEST_RENEW_RETRY_SECONDS');
void main(process.argv.slice(2), {
  controlPlaneOnly: true,
  leaseTiming: { ...(ttlSec !== undefined ? { ttlSec } : {}), ...(renewRetrySec !== undefined ? { renewRetrySec } : {}) },
});
