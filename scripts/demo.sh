#!/usr/bin/env bash
# `npm run demo`: etcd + tsflanneld hosts (+ a kernel flannel.1 peer) in namespaces; see netns-fixtures/demo.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
node dist/netns-fixtures/cleanup.js --older-than 0 || true
exec node dist/netns-fixtures/demo.js "$@"
