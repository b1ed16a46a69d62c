// Process entry (bin/tsflanneld): flags → daemon, signals → clean stop, result → exit code.
// Go-compatible exit codes: 2 for bad flags, 0 for -help/-version and after SIGTERM/SIGINT, 1 for fatal errors.
import fs from 'node:fs';
import path from 'node:path';
import { createLogger, runDaemon } from '../daemon/daemon';
import { FlagError, helpText, parseFlags, type Options } from './flags';
import { raiseNofileLimit } from '../ops/rlimit';

/**
 * Test-only: TSFLANNELD_TEST_CONTROL_PLANE_ONLY=1 runs leases, watch and subnet.env without the data
 * plane and without iptables, so control-plane tests can run many daemons in one namespace without
 * creating devices, routes or firewall rules there.
 */
const CONTROL_PLANE_ONLY_ENV = 'TSFLANNELD_TEST_CONTROL_PLANE_ONLY';

function version(): string {
  const file = path.resolve(__dirname, '..', '..', '..', 'package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

/** Runs tsflanneld with argv (without node and script) and exits the process with its exit code. */
export async function main(argv: string[]): Promise<never> {
  let options: Options;
  try {
    options = parseFlags(argv, process.env);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    process.stderr.write(`${err.message}\n${helpText()}`);
    return process.exit(2);
  }
  if (options.help) {
    process.stdout.write(helpText());
    return process.exit(0);
  }
  if (options.version) {
    process.stdout.write(`${version()}\n`);
    return process.exit(0);
  }

  const log = createLogger(options.v);
  try {
    const lim = raiseNofileLimit();
    log.debug(lim, `open-file limit ${lim.soft} (was ${lim.before})`);
  } catch (err) {
    log.warn(`cannot raise the open-file limit: ${(err as Error).message}; running with the inherited one`);
  }
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    log.info(`received ${sig}, stopping`);
    stop.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let code: number;
  try {
    // The daemon builds the configured backend's data plane (src/backend/registry.ts).
    const controlPlaneOnly = process.env[CONTROL_PLANE_ONLY_ENV] === '1';
    code = await runDaemon(options, process.env, {
      log,
      signal: stop.signal,
      dataPlane: !controlPlaneOnly,
      iptables: !controlPlaneOnly,
    });
  } catch (err) {
    log.fatal({ err }, `unexpected error: ${(err as Error).message}`);
    code = 1;
  }
  return process.exit(code);
}
