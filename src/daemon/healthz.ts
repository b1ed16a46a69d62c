// flanneld's health endpoints (flannel-compat.md §9): /healthz answers as soon as the process runs;
// /readyz turns 200 only once subnet.env is written (what the CNI plugin waits for).
import http from 'node:http';

export class HealthzError extends Error {
  override name = 'HealthzError';
}

export interface HealthzServer {
  setReady(): void;
  close(): Promise<void>;
  readonly port: number;
}

export async function startHealthz(ip: string, port: number): Promise<HealthzServer> {
  let ready = false;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const reply = (code: number, body: string): void => {
      res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(body);
    };
    if (path === '/healthz') reply(200, 'flanneld is running');
    else if (path === '/readyz') reply(ready ? 200 : 503, ready ? 'flanneld is ready' : 'flanneld is not ready yet');
    else reply(404, '404 page not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new HealthzError(`healthz server cannot listen on ${ip}:${port}: ${err.message}`)));
    server.listen(port, ip, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    setReady: () => {
      ready = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
