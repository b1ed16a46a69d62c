// The -healthz-ip/-healthz-port HTTP endpoint (docs/compat.md §9) plus /metrics. Bodies, status
// codes and the 404 text match flanneld's Go net/http server so existing probes keep working; like
// Go's mux, routing looks at the path only, so any method works and HEAD gets headers without body.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Log } from './log';
import type { Registry } from 'prom-client';

export const HEALTHZ_BODY = 'flanneld is running';
export const READY_BODY = 'flanneld is ready';
export const NOT_READY_BODY = 'flanneld is not ready yet';
const NOT_FOUND_BODY = '404 page not found\n';
const TEXT = 'text/plain; charset=utf-8';

export class HealthServerError extends Error {
  override name = 'HealthServerError';
  constructor(
    readonly ip: string,
    readonly port: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

export interface HealthServerOptions {
  /** -healthz-ip, e.g. "0.0.0.0". */
  ip: string;
  /** -healthz-port; 0 asks the kernel for a free port (tests), the daemon does not start the server for 0. */
  port: number;
  registry: Registry;
  log: Log;
  /** Open connections accepted at once; more are closed on accept. Default MAX_CONNECTIONS. */
  maxConnections?: number;
  /** A connection that sends nothing (or no complete request) this long is closed, ms. Default IDLE_TIMEOUT_MS. */
  idleTimeoutMs?: number;
}

/**
 * Limits that keep abusive or broken clients from exhausting the daemon's file descriptors: probes
 * and scrapes need a handful of connections, each answered in milliseconds.
 */
export const MAX_CONNECTIONS = 64;
export const IDLE_TIMEOUT_MS = 10_000;

export interface HealthServer {
  /** /readyz answers 200 once set (after subnet.env is written), 503 before or after clearing it. */
  setReady(ready: boolean): void;
  /** Stops listening and closes idle keep-alive connections; resolves when the server is closed. */
  close(): Promise<void>;
  /** The bound address (port resolved when 0 was asked for). */
  readonly address: { ip: string; port: number };
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  let ready = false;
  let metricsFailing = false;
  const where = hostPort(opts.ip, opts.port);

  const reply = (req: http.IncomingMessage, res: http.ServerResponse, status: number, body: string, contentType = TEXT): void => {
    const buf = Buffer.from(body, 'utf8');
    res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': buf.length });
    res.end(req.method === 'HEAD' ? undefined : buf);
  };

  const idle = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const server = http.createServer(
    {
      // Whole request (headers + body) within `idle`, headers too; checked every second, not every 30 s.
      requestTimeout: idle,
      headersTimeout: idle,
      keepAliveTimeout: Math.min(5000, idle),
      connectionsCheckingInterval: Math.min(1000, idle),
    },
    (req, res) => {
      // Path only: "/healthz?x" is /healthz, like Go's ServeMux.
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q >= 0 ? url.slice(0, q) : url;
      switch (path) {
        case '/healthz':
          reply(req, res, 200, HEALTHZ_BODY);
          return;
        case '/readyz':
          reply(req, res, ready ? 200 : 503, ready ? READY_BODY : NOT_READY_BODY);
          return;
        case '/metrics':
          opts.registry.metrics().then(
            (text) => {
              if (metricsFailing) opts.log.info('metrics collection works again');
              metricsFailing = false;
              reply(req, res, 200, text, opts.registry.contentType);
            },
            (err: unknown) => {
              // Scrapes repeat every few seconds; log a persisting failure once.
              if (!metricsFailing) opts.log.error({ err }, 'metrics collection failed');
              metricsFailing = true;
              reply(req, res, 500, `metrics collection failed: ${err instanceof Error ? err.message : String(err)}\n`);
            },
          );
          return;
        default:
          reply(req, res, 404, NOT_FOUND_BODY);
      }
    },
  );
  server.maxConnections = opts.maxConnections ?? MAX_CONNECTIONS;
  // Socket inactivity (a client that connects and sends nothing): destroy it.
  server.setTimeout(idle, (socket) => socket.destroy());
  let refusedLogged = false;
  server.on('drop', () => {
    // Logged once per burst: the first refusal after the server had room again.
    if (refusedLogged) return;
    refusedLogged = true;
    opts.log.warn(`healthz server on ${where}: ${server.maxConnections} connections open, refusing more until some close`);
  });
  let open = 0;
  server.on('connection', (socket: import('node:net').Socket) => {
    open++;
    socket.once('close', () => {
      open--;
      if (open < server.maxConnections) refusedLogged = false;
    });
  });
  // A malformed request or a reset connection: answer 400 if still possible, never crash.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new HealthServerError(opts.ip, opts.port, err.code, `healthz server cannot listen on ${where}: ${err.message}`));
    };
    server.once('error', onError);
    server.listen({ host: opts.ip, port: opts.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => opts.log.error({ err }, `healthz server on ${where} failed`));

  const addr = server.address() as AddressInfo;
  const address = { ip: addr.address, port: addr.port };
  opts.log.info(`healthz server listening on ${hostPort(address.ip, address.port)}`);

  let closing: Promise<void> | null = null;
  return {
    address,
    setReady(value: boolean): void {
      ready = value;
    },
    close(): Promise<void> {
      if (!closing) {
        closing = new Promise<void>((resolve, reject) => {
          server.close((err) => (err ? reject(err) : resolve()));
          server.closeIdleConnections();
        });
      }
      return closing;
    },
  };
}
