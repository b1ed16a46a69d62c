#!/usr/bin/env bash
# `npm test`: deps + build, clean testbeds of crashed runs, run unit and integration tests with tap,
# and close with a plain "N passed, N failed" line (counted from tap's summary).
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

# Namespaces left by runs whose process is gone (a killed tap worker, a ^C'd demo).
node dist/netns-fixtures/cleanup.js --older-than 0 || true

# Only compiled tests whose source still exists: dist/ may hold outputs of deleted tests.
mapfile -t files < <(
  for dir in unit integration; do
    [ -d "test/$dir" ] || continue
    find "test/$dir" -name '*.test.ts' | sort | while read -r src; do
      js="dist/${src%.ts}.js"
      if [ -f "$js" ]; then echo "$js"; else echo "missing build output $js" >&2; fi
    done
  done
)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no test files found"
  echo "0 passed, 1 failed"
  exit 1
fi

log="$(mktemp -t tsflanneld-tap.XXXXXX)"
trap 'rm -f "$log"' EXIT
npx tap --reporter=tap "${files[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

node dist/netns-fixtures/cleanup.js --older-than 0 || true

# tap's closing comment: "# { total: 144, pass: 141, fail: 3, skip: 1 }"
summary="$(grep -E '^# \{ total: [0-9]+' "$log" | tail -1)"
num() { sed -nE "s/.*[{ ]$1: ([0-9]+).*/\1/p" <<<"$summary"; }
pass="$(num pass)"; fail="$(num fail)"; skip="$(num skip)"
pass="${pass:-0}"; fail="${fail:-0}"
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi # a crashed file may not count an assertion
line="$pass passed, $fail failed"
if [ -n "$skip" ]; then line="$line, $skip skipped"; fi
echo "$line"
if [ "$rc" -ne 0 ] || [ "$fail" -ne 0 ]; then exit 1; fi
exit 0
