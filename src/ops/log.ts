// The one logger type of the tree and the one place a logger is made. Modules take a `Log`: the calls
// they make, each with a fields object and a message, or a message alone. pino's Logger satisfies it;
// tests pass a real pino logger on a capture stream or a plain recording object.
import pino from 'pino';

/** One log level's call: `(fields, message)` or `(message)`. */
export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

export interface Log {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /** Whether a level is logged, to skip building lines nobody sees (pino's isLevelEnabled). */
  isLevelEnabled(level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'): boolean;
}

/**
 * The daemon's logger: pino JSON lines on stderr, written synchronously so the last lines before an exit
 * are kept. klog-style `-v`: 0 = info, 1..4 = debug, 5+ = trace.
 */
export function createLogger(verbosity: number): Log {
  const level = verbosity >= 5 ? 'trace' : verbosity >= 1 ? 'debug' : 'info';
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
