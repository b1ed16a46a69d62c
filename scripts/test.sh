#!/usr/bin/env bash
# `npm test`: deps + build, static gates (scripts/lint.sh: eslint, prettier, clang-format), clean testbeds
# of crashed runs, unit and integration tests with tap (coverage on), the coverage floor
# (scripts/coverage-floor.mjs), and a closing plain "N passed, N failed" line: tap's assertion counts, plus
# one failure per failed gate (lint gates, coverage floor).
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

# Static gates first: cheap, and their failures are listed again above the closing line.
bash scripts/lint.sh
gates_failed=$?

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
rm -rf .tap/report # the floor must judge this run's report, never an older one
npx tap --reporter=tap "${files[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

if ! node scripts/coverage-floor.mjs; then gates_failed=$((gates_failed + 1)); fi

node dist/netns-fixtures/cleanup.js --older-than 0 || true

# tap's closing comment: "# { total: 144, pass: 141, fail: 3, skip: 1 }"
summary="$(grep -E '^# \{ total: [0-9]+' "$log" | tail -1)"
num() { sed -nE "s/.*[{ ]$1: ([0-9]+).*/\1/p" <<<"$summary"; }
pass="$(num pass)"; fail="$(num fail)"; skip="$(num skip)"
pass="${pass:-0}"; fail="${fail:-0}"
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi # a crashed file may not count an assertion
fail=$((fail + gates_failed))
line="$pass passed, $fail failed"
if [ -n "$skip" ]; then line="$line, $skip skipped"; fi
if [ "$gates_failed" -ne 0 ]; then echo "$gates_failed gate(s) failed: see the 'gate' and 'coverage' lines above"; fi
echo "$line"
if [ "$rc" -ne 0 ] || [ "$fail" -ne 0 ]; then exit 1; fi
exit 0
