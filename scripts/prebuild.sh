#!/usr/bin/env bash
# Prebuilt native addons for the npm package (run by `npm pack` through "prepack"): N-API builds for
# linux-x64 and, when Debian's cross toolchain is installed (g++-aarch64-linux-gnu), linux-arm64, into
# prebuilds/linux-<arch>/. node-gyp-build loads them at run time, so a host installing the tarball
# needs no compiler. Builds run in a scratch copy of the sources: build/ (the development addon) stays.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

scratch="$(mktemp -d -t tsflanneld-prebuild.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
cp package.json binding.gyp "$scratch/"
cp -r native "$scratch/native"
ln -s "$root/node_modules" "$scratch/node_modules"

rm -rf prebuilds
build() { # arch, then extra environment for the cross toolchain
  local arch="$1"
  shift
  echo "prebuild: linux-$arch"
  rm -rf "$scratch/build"
  env "$@" npx --no-install prebuildify --napi --strip --arch "$arch" --cwd "$scratch" --out "$root" >"$scratch/build.log" 2>&1 || {
    cat "$scratch/build.log" >&2
    return 1
  }
}

host="$(node -p 'process.arch')"
build "$host"
if [ "$host" = x64 ]; then
  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    # Optional: a failed cross build leaves arm64 hosts to build from source at install (node-gyp-build).
    log="$scratch/arm64.log"
    if ! build arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
      AR=aarch64-linux-gnu-ar PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip >"$log" 2>&1; then
      echo "prebuild: linux-arm64 NOT built (arm64 hosts will compile at install): $(grep -m1 -E 'error' "$log")" >&2
      rm -rf prebuilds/linux-arm64
    fi
  else
    echo "prebuild: no aarch64-linux-gnu-g++ (Debian package g++-aarch64-linux-gnu): linux-arm64 not built" >&2
  fi
fi
find prebuilds -name '*.node' -print | sort
