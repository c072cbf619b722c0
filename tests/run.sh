#!/usr/bin/env bash
# run.sh: runs every pgolf test (the C tests in build/pgolf_tests, then tests/cli/*.sh) from the
# repository root and ends with the line `N passed, N failed`. Exit status 1 if any test failed.
# Arguments are passed to pgolf_tests as name filters (and select cli scripts by name).
set -uo pipefail
cd "$(dirname "$0")/.."
export PGOLF_SHARED="${PGOLF_SHARED:-$(cd .. && pwd)/shared}"
BUILD="${BUILD:-build}"
export PGOLF_BIN="$PWD/$BUILD/pgolf"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"./$BUILD/pgolf_tests" "$@" 2>&1 | tee -a "$log"
for t in tests/cli/*.sh; do
  [ -e "$t" ] || continue
  if [ $# -gt 0 ]; then
    m=0; for f in "$@"; do case "$t" in *"$f"*) m=1;; esac; done
    [ $m = 1 ] || continue
  fi
  bash "$t" 2>&1 | tee -a "$log"
done
passed=$(grep -c '^ok ' "$log")
failed=$(grep -c '^FAIL ' "$log")
skipped=$(grep -c '^SKIP ' "$log")
if [ "$failed" -gt 0 ]; then echo "failures:"; grep '^FAIL ' "$log"; fi
echo "($skipped skipped)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
