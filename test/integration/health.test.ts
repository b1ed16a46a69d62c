// The healthz server in-process on loopback: exact flanneld bodies and codes, HEAD, /metrics, 404,
// and a typed error naming ip:port when the port is taken.
import http from 'node:http';
import net from 'node:net';
import pino from 'pino';
import t from 'tap';
import { HealthServerError, startHealthServer } from '../../src/ops/health-server';
import { createMetrics, type DataplaneSnapshot } from '../../src/ops/metrics';

interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function request(port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const log = pino({ level: 'silent' });

const snap: DataplaneSnapshot = {
  rxPackets: 3,
  rxBytes: 300,
  txPackets: 4,
  txBytes: 400,
  drops: { no_route: 1 },
  peers: [{ subnet: '10.5.9.0/24', publicIp: '192.0.2.12', rxPackets: 3, rxBytes: 300, txPackets: 4, txBytes: 400 }],
  offloadRung: 'gso',
};

t.test('healthz, readyz, metrics, 404', async (t) => {
  const metrics = createMetrics({ dataplane: { snapshot: () => snap } });
  const srv = await startHealthServer({ ip: '127.0.0.1', port: 0, registry: metrics.registry, log });
  t.teardown(() => srv.close());
  const port = srv.address.port;
  t.equal(srv.address.ip, '127.0.0.1');
  t.ok(port > 0);

  const h = await request(port, '/healthz');
  t.equal(h.status, 200);
  t.equal(h.body, 'flanneld is running');
  t.equal(h.headers['content-type'], 'text/plain; charset=utf-8');
  t.equal((await request(port, '/healthz?verbose=1')).body, 'flanneld is running', 'query string ignored');

  let r = await request(port, '/readyz');
  t.equal(r.status, 503);
  t.equal(r.body, 'flanneld is not ready yet');
  const headNotReady = await request(port, '/readyz', 'HEAD');
  t.equal(headNotReady.status, 503);
  t.equal(headNotReady.body, '');

  srv.setReady(true);
  r = await request(port, '/readyz');
  t.equal(r.status, 200);
  t.equal(r.body, 'flanneld is ready');

  const head = await request(port, '/healthz', 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '', 'HEAD has no body');
  t.equal(head.headers['content-length'], String('flanneld is running'.length));
  t.equal((await request(port, '/readyz', 'HEAD')).status, 200);

  srv.setReady(false);
  t.equal((await request(port, '/readyz')).status, 503, 'readiness can be withdrawn');

  const m = await request(port, '/metrics');
  t.equal(m.status, 200);
  t.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  // Parse the exposition text: every non-comment line is `name{labels} value`.
  const series = new Map<string, number>();
  for (const line of m.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    t.ok(match, `exposition line parses: ${line}`);
    if (match) series.set(match[1]!, Number(match[2]));
  }
  t.equal(series.get('tsflanneld_packets_total{direction="tx"}'), 4);
  t.equal(series.get('tsflanneld_peer_bytes_total{peer="10.5.9.0/24",public_ip="192.0.2.12",direction="rx"}'), 300);
  t.equal(series.get('tsflanneld_offload_rung{rung="gso"}'), 1);
  t.ok((series.get('process_resident_memory_bytes') ?? 0) > 0);
  t.equal((await request(port, '/metrics', 'HEAD')).body, '');

  for (const path of ['/', '/healthz/', '/nope', '/metricsx']) {
    const nf = await request(port, path);
    t.equal(nf.status, 404, path);
    t.equal(nf.body, '404 page not found\n');
  }
});

t.test('a failing metrics source answers 500 and the other endpoints keep working', async (t) => {
  const metrics = createMetrics({
    defaultMetrics: false,
    dataplane: {
      snapshot: () => {
        throw new Error('data plane gone');
      },
    },
  });
  const srv = await startHealthServer({ ip: '127.0.0.1', port: 0, registry: metrics.registry, log });
  t.teardown(() => srv.close());
  const m = await request(srv.address.port, '/metrics');
  t.equal(m.status, 500);
  t.match(m.body, /data plane gone/);
  t.equal((await request(srv.address.port, '/healthz')).status, 200);
});

t.test('bind failure is a typed error naming ip:port', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as net.AddressInfo).port;
  const err = await startHealthServer({ ip: '127.0.0.1', port, registry: createMetrics({ defaultMetrics: false }).registry, log }).then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, HealthServerError);
  const e = err as HealthServerError;
  t.equal(e.code, 'EADDRINUSE');
  t.match(e.message, `127.0.0.1:${port}`);
  t.equal(e.port, port);
});

t.test('close stops listening', async (t) => {
  const srv = await startHealthServer({ ip: '127.0.0.1', port: 0, registry: createMetrics({ defaultMetrics: false }).registry, log });
  const port = srv.address.port;
  t.equal((await request(port, '/healthz')).status, 200);
  await srv.close();
  await srv.close();
  await t.rejects(request(port, '/healthz'), { code: 'ECONNREFUSED' });
});
