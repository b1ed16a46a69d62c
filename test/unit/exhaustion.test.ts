// Resource exhaustion: the health server under idle and excess connections, child processes when no
// fd is left, and the open-file limit raised like Go does.
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import pino from 'pino';
import { Registry } from 'prom-client';
import t from 'tap';
import { startHealthServer } from '../../src/ops/health-server';

function get(port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let buf = '';
    s.on('data', (d) => (buf += d.toString()));
    s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(buf)?.[1] ?? 0)));
    s.on('error', reject);
  });
}

t.test('health server: capped connections, idle clients closed, probes answered again', async (t) => {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  const hs = await startHealthServer({ ip: '127.0.0.1', port: 0, registry: new Registry(), log, maxConnections: 8, idleTimeoutMs: 600 });
  t.teardown(() => hs.close());
  const port = hs.address.port;
  const idle: net.Socket[] = [];
  const closed: Promise<void>[] = [];
  for (let i = 0; i < 30; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    closed.push(new Promise((r) => s.on('close', () => r())));
    idle.push(s);
  }
  await Promise.all(closed);
  t.pass('every idle or excess connection was closed by the server');
  t.equal(lines.filter((l) => /refusing more/.test(l)).length, 1, 'refusals logged once');
  t.equal(await get(port, '/healthz'), 200, '/healthz answers afterwards');
  // A client that starts a request and stalls is closed too.
  const slow = net.connect(port, '127.0.0.1', () => slow.write('GET /healthz HTTP/1.1\r\n'));
  slow.on('error', () => undefined);
  await new Promise<void>((r) => slow.on('close', () => r()));
  t.pass('a slow client is timed out');
  t.equal(await get(port, '/readyz'), 503);
});

const DIST = path.resolve(__dirname, '..', '..');

t.test('iptables runner: spawn failing with EMFILE is a rejected promise, not a crash', async (t) => {
  const script = `
    const fs = require('node:fs');
    const { spawnRunner } = require(${JSON.stringify(path.join(DIST, 'src/iptables/iptables-manager.js'))});
    const held = [];
    try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
    spawnRunner(5000)('true', []).then(
      () => { console.log('resolved'); },
      (e) => { console.log('rejected ' + e.code); },
    );
    setTimeout(() => console.log('alive'), 200);`;
  const res = spawnSync('bash', ['-c', `ulimit -n 64; exec ${JSON.stringify(process.execPath)} -e "$0"`, script], { encoding: 'utf8' });
  t.equal(res.status, 0, res.stderr);
  t.match(res.stdout, /rejected E(MFILE|NFILE|AGAIN)/);
  t.match(res.stdout, /alive/);
});

t.test('raiseNofileLimit lifts the soft limit to the hard one', async (t) => {
  const script = `
    const { raiseNofileLimit } = require(${JSON.stringify(path.join(DIST, 'src/ops/rlimit.js'))});
    console.log(JSON.stringify(raiseNofileLimit()));`;
  const res = spawnSync('bash', ['-c', `ulimit -Sn 256; ulimit -Hn 4096; exec ${JSON.stringify(process.execPath)} -e "$0"`, script], {
    encoding: 'utf8',
  });
  t.equal(res.status, 0, res.stderr);
  // Node's own start-up may already have raised it (PlatformInit does on Linux); either way the
  // soft limit ends at the hard one and never above it.
  const lim = JSON.parse(res.stdout) as { before: number; soft: number; hard: number };
  t.equal(lim.soft, 4096);
  t.equal(lim.hard, 4096);
  t.ok(lim.before === 256 || lim.before === 4096, `before: ${lim.before}`);
});
