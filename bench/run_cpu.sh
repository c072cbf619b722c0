#!/usr/bin/env bash
# run_cpu.sh: runs every CPU benchmark bench/bench_*.sh (`make bench`), or those whose names contain
# one of the arguments. Benchmarks print their results; they are not tests and assert nothing about
# time. Record results in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
for b in bench/bench_*.sh; do
  [ -e "$b" ] || continue
  if [ $# -gt 0 ]; then
    m=0; for f in "$@"; do case "$b" in *"$f"*) m=1;; esac; done
    [ $m = 1 ] || continue
  fi
  echo "== $b"
  bash "$b" || rc=1
done
exit $rc
