// Throwaway PKI for etcd-over-TLS tests, made with the openssl CLI: a CA, a server certificate whose
// subjectAltNames are the etcd listener's IPs, a client certificate, and (for negative tests) a client
// certificate signed by an unrelated CA. Everything lives in one temp dir removed by destroy().
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class TlsFixtureError extends Error {
  override name = 'TlsFixtureError';
}

export interface TlsFiles {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** Signed by caFile, extendedKeyUsage clientAuth, CN = clientCn. */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** A client certificate from a different CA: a server that checks client certs must refuse it. */
  readonly rogueClientCertFile: string;
  readonly rogueClientKeyFile: string;
  /** Removes the directory. Idempotent. */
  destroy(): Promise<void>;
}

export interface TlsOptions {
  /** IP subjectAltNames of the server certificate; default ["127.0.0.1"]. */
  serverIps?: string[];
  /** DNS subjectAltNames of the server certificate; default none. */
  serverDnsNames?: string[];
  /** Common name of the client certificate; default "tsflanneld". */
  clientCn?: string;
  /** Parent of the temp dir; default os.tmpdir(). */
  parentDir?: string;
}

const OPENSSL = process.env.TSFLANNELD_OPENSSL_BIN ?? 'openssl';

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(OPENSSL, args, { cwd, timeout: 30000 }, (err, _stdout, stderr) => {
      if (err) reject(new TlsFixtureError(`openssl ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

/** P-256 keys: fast to generate, accepted by etcd (Go) and gRPC (Node/OpenSSL). */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const DAYS = '2';

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await openssl(
    [
      'req',
      '-x509',
      ...NEW_KEY,
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      DAYS,
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return { cert, key };
}

async function makeLeaf(
  dir: string,
  name: string,
  cn: string,
  ca: { cert: string; key: string },
  extensions: string,
): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, extensions);
  await openssl(['req', '-new', ...NEW_KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`], dir);
  await openssl(
    ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', DAYS, '-extfile', ext],
    dir,
  );
  return { cert, key };
}

/** Creates CA, server and client certificates in a fresh temp dir. */
export async function makeTlsFiles(opts: TlsOptions = {}): Promise<TlsFiles> {
  const dir = await fs.promises.mkdtemp(path.join(opts.parentDir ?? os.tmpdir(), 'tsflanneld-tls-'));
  const destroy = (): Promise<void> => fs.promises.rm(dir, { recursive: true, force: true });
  try {
    const ips = opts.serverIps ?? ['127.0.0.1'];
    const sans = [...ips.map((ip) => `IP:${ip}`), ...(opts.serverDnsNames ?? []).map((d) => `DNS:${d}`)];
    if (sans.length === 0) throw new TlsFixtureError('the server certificate needs at least one subjectAltName');
    const ca = await makeCa(dir, 'ca');
    const server = await makeLeaf(
      dir,
      'server',
      'etcd-server',
      ca,
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n` +
        `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${sans.join(',')}\n`,
    );
    const clientExt = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
    const client = await makeLeaf(dir, 'client', opts.clientCn ?? 'tsflanneld', ca, clientExt);
    const rogueCa = await makeCa(dir, 'rogue-ca');
    const rogue = await makeLeaf(dir, 'rogue-client', opts.clientCn ?? 'tsflanneld', rogueCa, clientExt);
    for (const f of fs.readdirSync(dir)) if (f.endsWith('.key')) fs.chmodSync(path.join(dir, f), 0o600);
    return {
      dir,
      caFile: ca.cert,
      serverCertFile: server.cert,
      serverKeyFile: server.key,
      clientCertFile: client.cert,
      clientKeyFile: client.key,
      rogueClientCertFile: rogue.cert,
      rogueClientKeyFile: rogue.key,
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}

/** makeTlsFiles() for one tap test; the dir is removed in teardown. */
export async function withTlsFiles(t: { teardown(fn: () => unknown): void }, opts: TlsOptions = {}): Promise<TlsFiles> {
  const files = await makeTlsFiles(opts);
  t.teardown(() => files.destroy());
  return files;
}
