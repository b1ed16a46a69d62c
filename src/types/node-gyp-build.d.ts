// node-gyp-build ships no types. Its one export (index.js): load(dir) requires the addon of the package
// at `dir` (build/Release, build/Debug, then prebuilds/<platform>-<arch>/) and throws if none loads.
declare module 'node-gyp-build' {
  function load(dir: string): unknown;
  export = load;
}
