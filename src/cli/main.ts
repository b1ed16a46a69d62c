// Process entry (bin/tsflanneld): flags → daemon, signals → clean stop, result → exit code.
// Go-compatible exit codes: 2 for bad flags, 0 for -help/-version and after SIGTERM/SIGINT, 1 for fatal errors.
import fs from 'node:fs';
import path from 'node:path';
import { createLogger, type Log } from '../ops/log';
import { runDaemon, type DataPlaneHooks, type LeaseTiming } from '../daemon/daemon';
import { VxlanBackend } from '../daemon/vxlan-backend';
import { FlagError, helpText, parseCommandLine, type Options } from './flags';
import { compatNotes } from './compat';
import { raiseNofileLimit } from '../ops/rlimit';

export interface MainDeps {
  /**
   * Builds the data plane; without it only the control plane runs. `fatal` reports an asynchronous
   * fatal data-plane error to the daemon (logged once, exit 1).
   */
  createHooks?: (options: Options, log: Log, fatal: (err: Error) => void) => DataPlaneHooks;
  /**
   * Leases, watch and subnet.env only: no data plane and no iptables, so tests can run many daemons in
   * one namespace without creating devices, routes or firewall rules there. Set by test entry points.
   */
  controlPlaneOnly?: boolean;
  /** Lease TTL and renewal retry (seconds) instead of flannel's 24 h and 60 s; set by test entry points. */
  leaseTiming?: LeaseTiming;
}

function defaultHooks(options: Options, log: Log, fatal: (err: Error) => void): DataPlaneHooks {
  return new VxlanBackend({
    tunName: options.tunName,
    offload: options.offload,
    threads: options.dataplaneThreads === 0 ? undefined : options.dataplaneThreads,
    strictSource: options.vxlanStrictSource,
    log,
    onFatal: fatal,
  });
}

function version(): string {
  const file = path.resolve(__dirname, '..', '..', '..', 'package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

/**
 * Node prints process warnings to stderr as multi-line text outside our log. Route them into the log
 * instead, one line each. DEP0123 (TLS server name set to an IP address) comes from the gRPC client
 * when etcd is addressed by IP, which is normal for etcd; it is logged at debug level only.
 */
function routeProcessWarnings(log: Log): void {
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => {
    if (w.code === 'DEP0123') {
      log.debug({ code: w.code }, `node: ${w.message} (etcd addressed by IP over TLS; harmless)`);
      return;
    }
    log.warn({ code: w.code, warning: w.name }, `node: ${w.message}`);
  });
}

/** Runs tsflanneld with argv (without node and script) and exits the process with its exit code. */
export async function main(argv: string[], deps: MainDeps = {}): Promise<never> {
  let options: Options;
  let unknownEnv: string[];
  try {
    ({ options, unknownEnv } = parseCommandLine(argv, process.env));
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
    // As flanneld: the version (a "v"-prefixed release tag) alone on stderr, exit 0.
    process.stderr.write(`v${version()}\n`);
    return process.exit(0);
  }

  const log = createLogger(options.v);
  routeProcessWarnings(log);
  const notes = compatNotes(options, unknownEnv);
  for (const w of notes.warnings) log.warn(w);
  if (notes.fatal.length > 0) {
    for (const f of notes.fatal) log.fatal(f);
    return process.exit(1);
  }
  try {
    const lim = raiseNofileLimit();
    log.info(lim, `open-file limit ${lim.soft === -1 ? 'unlimited' : lim.soft} (soft raised to the hard limit, as Go programs do)`);
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
    // The daemon connects its reporter synchronously inside runDaemon, before any hook can run.
    let report: (err: Error) => void = (err) => {
      throw err;
    };
    const controlPlaneOnly = deps.controlPlaneOnly === true;
    const createHooks = deps.createHooks ?? (controlPlaneOnly ? undefined : defaultHooks);
    const hooks = createHooks?.(options, log, (err) => report(err));
    code = await runDaemon(options, {
      log,
      signal: stop.signal,
      connectFatal: (r) => (report = r),
      iptables: !controlPlaneOnly,
      ...(deps.leaseTiming ? { leaseTiming: deps.leaseTiming } : {}),
      ...(hooks ? { hooks } : {}),
    });
  } catch (err) {
    log.fatal({ err }, `unexpected error: ${(err as Error).message}`);
    code = 1;
  }
  return process.exit(code);
}
