#!/usr/bin/env bash
# Static gates (part of `npm test`, also `npm run lint`): eslint (typescript-eslint strict, type-aware;
# eslint.config.mjs), prettier --check (.prettierrc.json), clang-format --dry-run over native/ (.clang-format),
# and no file pointing at notes outside the repo.
# Prints one "gate <name>: ok|FAILED" line per gate; exit status = number of failed gates.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=0
gate() {
  local name="$1"
  shift
  if "$@"; then
    echo "gate $name: ok"
  else
    echo "gate $name: FAILED (run: $*)"
    failed=$((failed + 1))
  fi
}

gate eslint npx --no-install eslint --max-warnings 0 .
gate prettier npx --no-install prettier --check --log-level warn .
mapfile -t native < <(find native -name '*.cc' -o -name '*.h' | sort)
gate clang-format clang-format --dry-run --Werror "${native[@]}"
# The repo must stand alone: facts live in docs/, never in notes outside it.
outside() { ! git grep -nE '/work/shared|flannel-compat\.md|perf-notes|baseline\.md' -- ':!scripts/lint.sh'; }
gate repo-local-references outside
exit "$failed"
