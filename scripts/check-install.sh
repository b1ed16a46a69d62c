#!/usr/bin/env bash
# Proves the npm package installs and runs on a host without a compiler: packs the tarball (prebuilt
# addons included, scripts/prebuild.sh), installs it with `npm install -g` into a scratch prefix with a
# PATH that has no C/C++ compiler, make or linker, and runs `tsflanneld --help` and `-version` from there.
# Touches nothing outside a temporary directory; needs the npm registry for the runtime dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d -t tsflanneld-install.XXXXXX)"
trap 'rm -rf "$work"' EXIT

tarball="$(npm pack --silent --pack-destination "$work" | tail -1)"
echo "check-install: packed $tarball"
tar tzf "$work/$tarball" | grep -E '^package/prebuilds/.*\.node$' || {
  echo "check-install: the tarball carries no prebuilt addon" >&2
  exit 1
}

# PATH without toolchains: links to every command on the current PATH except compilers and build tools.
nocc="$work/bin"
mkdir -p "$nocc"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name="${f##*/}"
    case "$name" in
      cc | c++ | cpp | gcc* | g++* | clang* | make | gmake | ld | ld.* | as | *-gcc* | *-g++* | *-ld | *-as | node-gyp) continue ;;
    esac
    [ -e "$nocc/$name" ] || ln -s "$f" "$nocc/$name"
  done
done
for tool in cc c++ gcc g++ make; do
  if PATH="$nocc" command -v "$tool" >/dev/null 2>&1; then
    echo "check-install: $tool is still on the stripped PATH" >&2
    exit 1
  fi
done

prefix="$work/prefix"
echo "check-install: npm install -g (no compiler on PATH)"
env -u CC -u CXX -u LINK PATH="$nocc" npm install -g --prefix "$prefix" --no-audit --no-fund --loglevel=error "$work/$tarball"

help="$(PATH="$nocc" "$prefix/bin/tsflanneld" --help 2>&1)" || {
  echo "$help" >&2
  echo "check-install: tsflanneld --help failed" >&2
  exit 1
}
grep -q -- '-etcd-endpoints' <<<"$help" || {
  echo "$help" >&2
  echo "check-install: --help does not list -etcd-endpoints" >&2
  exit 1
}
# The addon itself must load from the installed package (prebuilt, nothing compiled).
PATH="$nocc" node -e "const d = process.argv[1]; require(require.resolve('node-gyp-build', { paths: [d] }))(d); console.log('check-install: addon loads in', d)" \
  "$prefix/lib/node_modules/tsflanneld" 2>&1 || {
  echo "check-install: the installed addon does not load" >&2
  exit 1
}
if [ -d "$prefix/lib/node_modules/tsflanneld/build" ]; then
  echo "check-install: something was compiled at install (build/ exists)" >&2
  exit 1
fi
echo "check-install: ok ($tarball installs and runs --help without a compiler)"
