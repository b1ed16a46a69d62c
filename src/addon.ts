// Loads the native addon once. Each area declares the typed slice of the addon it uses
// (dataplane I/O, netlink) and narrows this value to it, so no module sees functions it doesn't own.
import path from 'node:path';

let cached: unknown;

export class NativeAddonError extends Error {
  override name = 'NativeAddonError';
}

export function loadAddon(): unknown {
  if (cached !== undefined) return cached;
  const file = path.resolve(__dirname, '..', '..', 'build', 'Release', 'tsflanneld_native.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file);
  } catch (err) {
    throw new NativeAddonError(
      `native addon ${file} could not be loaded (run "npm ci" or "npx node-gyp rebuild"): ${(err as Error).message}`,
    );
  }
  return cached;
}
