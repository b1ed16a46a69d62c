#!/usr/bin/env bash
# `npm run bench`: deps + build, clean testbeds of crashed runs, then the iperf benchmark
# (underlay vs kernel VXLAN vs tsflanneld); arguments go to bench/iperf-bench.ts (--help lists them).
set -uo pipefail
cd "$(dirname "$0")/.."
# tsc still emits when some file has type errors; run with what was built and say so.
if ! bash scripts/install-deps.sh; then
  echo "bench: install-deps/build reported errors (see above); continuing with the current dist/" >&2
fi
if [ ! -f dist/bench/iperf-bench.js ]; then
  echo "bench: dist/bench/iperf-bench.js missing: the build failed" >&2
  exit 1
fi
node dist/netns-fixtures/cleanup.js --older-than 0 || true
exec node dist/bench/iperf-bench.js "$@"
