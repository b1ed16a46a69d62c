// Loads the native addon once. Each area declares the typed slice of the addon it uses
// (dataplane I/O, netlink) and narrows this value to it, so no module sees functions it doesn't own.
// node-gyp-build picks build/Release (a local node-gyp build) if present, else the prebuilt addon for
// this platform and architecture shipped in the npm package (prebuilds/linux-<arch>/, scripts/prebuild.sh).
import path from 'node:path';
import nodeGypBuild from 'node-gyp-build';

let cached: unknown;

export class NativeAddonError extends Error {
  override name = 'NativeAddonError';
}

export function loadAddon(): unknown {
  if (cached !== undefined) return cached;
  const root = path.resolve(__dirname, '..', '..');
  try {
    cached = nodeGypBuild(root);
  } catch (err) {
    throw new NativeAddonError(
      `native addon of ${root} could not be loaded (no prebuilt addon for ${process.platform}-${process.arch} and no build/Release; ` +
        `run "npm run native-build" with a C++ toolchain): ${(err as Error).message}`,
    );
  }
  return cached;
}
