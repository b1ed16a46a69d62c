#!/usr/bin/env bash
# Bounded soak run: two tsflanneld hosts, iperf3 between their containers, lease churn in etcd; daemon
# RSS/CPU sampled every 10 s. Arguments go to bench/soak.ts (--minutes N, default 10; --help lists all).
# Writes bench/out/soak-<ts>.json and the "Soak" section of bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
# tsc still emits when some file has type errors; run with what was built and say so.
if ! bash scripts/install-deps.sh; then
  echo "soak: install-deps/build reported errors (see above); continuing with the current dist/" >&2
fi
if [ ! -f dist/bench/soak.js ]; then
  echo "soak: dist/bench/soak.js missing: the build failed" >&2
  exit 1
fi
node dist/netns-fixtures/cleanup.js || true
exec node dist/bench/soak.js "$@"
