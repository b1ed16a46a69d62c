// The VTEP MAC is what peers put in their neighbor and FDB entries for us (docs/compat.md §5.3,
// §5.5). flanneld keeps it only implicitly (by reusing the kernel device); our TUN-based device
// has no such memory, so we persist it in a small file. A stable MAC across daemon restarts means
// peers' permanent neighbor entries stay right and no stale FDB entries pile up (flannel #1155).
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { MacParseError, formatMac, parseMac } from './lease-codec';

export class VtepMacError extends Error {
  override name = 'VtepMacError';
}

/** Random MAC, unicast and locally administered: first octet (b & 0xfe) | 0x02, as flannel. */
export function generateVtepMac(randomBytes: (n: number) => Uint8Array = crypto.randomBytes): Uint8Array {
  const b = Uint8Array.from(randomBytes(6));
  if (b.length !== 6) throw new VtepMacError(`randomBytes returned ${b.length} bytes, want 6`);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return b;
}

/**
 * Where the MAC is kept: next to the subnet file, so daemons run with distinct -subnet-file
 * values (the documented way to run several per host) never share a MAC file.
 * "/run/flannel/subnet.env" -> "/run/flannel/tsflanneld-vtep-mac-subnet".
 */
export function vtepMacPath(subnetFile: string): string {
  const base = path.basename(subnetFile).replace(/\.env$/, '');
  return path.join(path.dirname(subnetFile), `tsflanneld-vtep-mac-${base}`);
}

/**
 * The IPv6 side's MAC (flannel's flannel-v6.<VNI> device has its own, published in BackendV6Data):
 * "/run/flannel/subnet.env" -> "/run/flannel/tsflanneld-vtep-mac-v6-subnet".
 */
export function vtepMacV6Path(subnetFile: string): string {
  const base = path.basename(subnetFile).replace(/\.env$/, '');
  return path.join(path.dirname(subnetFile), `tsflanneld-vtep-mac-v6-${base}`);
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Parses the file content; null if it is not a usable VTEP MAC (unicast, not all-zero). */
function parseStoredMac(text: string): string | null {
  try {
    const b = parseMac(text.trim());
    if ((b[0]! & 0x01) !== 0 || b.every((x) => x === 0)) return null;
    return formatMac(b);
  } catch (e) {
    if (e instanceof MacParseError) return null;
    throw e;
  }
}

async function writeAtomically(file: string, content: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
    const fh = await fs.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw new VtepMacError(`cannot write VTEP MAC file ${file}: ${errText(e)}`, { cause: e });
  }
}

/**
 * The persisted VTEP MAC, created on first use. A corrupt or unreadable file is replaced by a
 * fresh MAC (with a warning): a new MAC only costs peers one lease update, while refusing to
 * start would cost the node its network. Throws only if the new file cannot be written.
 */
export async function loadOrCreateVtepMac(
  file: string,
  randomBytes: (n: number) => Uint8Array = crypto.randomBytes,
): Promise<{ mac: string; created: boolean; warning: string | null }> {
  let warning: string | null = null;
  try {
    const stored = parseStoredMac(await fs.readFile(file, 'utf8'));
    if (stored !== null) return { mac: stored, created: false, warning: null };
    warning = `VTEP MAC file ${file} does not hold a valid unicast MAC; generated a new one`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      warning = `cannot read VTEP MAC file ${file} (${errText(e)}); generated a new one`;
    }
  }
  const mac = formatMac(generateVtepMac(randomBytes));
  await writeAtomically(file, `${mac}\n`);
  return { mac, created: true, warning };
}

/**
 * Stores `mac` ("aa:bb:cc:dd:ee:ff") as the persisted VTEP MAC, e.g. the MAC of a kernel flannel.N
 * device being taken over, so later restarts keep publishing it. Throws VtepMacError if unwritable.
 */
export async function storeVtepMac(file: string, mac: string): Promise<void> {
  const stored = parseStoredMac(mac);
  if (stored === null) throw new VtepMacError(`"${mac}" is not a usable VTEP MAC (unicast, not all-zero)`);
  await writeAtomically(file, `${stored}\n`);
}
