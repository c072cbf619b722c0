#!/usr/bin/env bash
# run.sh SECONDS [TARGET...]: runs each fuzz target (default: all) for SECONDS seconds, one at a
# time at nice 19, from its seeds ($FUZZ_BUILD/seeds/<t>, made by seeds.sh if absent) plus the
# committed regression inputs (fuzz/regressions/<t>); new inputs go to $FUZZ_BUILD/corpus/<t>,
# crashes to $FUZZ_BUILD/crashes/, logs to $FUZZ_BUILD/logs/<t>.log. Prints one summary line per
# target; exit status 1 if any target found a crash. FUZZ_SMALL=1 leaves out seeds over 64 KiB (the
# full tokenizers, the real exports): many times more executions per second, see docs/fuzzing.md.
set -uo pipefail
cd "$(dirname "$0")/.."
FB="${FUZZ_BUILD:-build-fuzz}"
secs="${1:-60}"; shift || true
targets="${*:-$(bash fuzz/targets.sh)}"
[ -d "$FB/seeds" ] || FUZZ_BUILD="$FB" bash fuzz/seeds.sh
mkdir -p "$FB/crashes" "$FB/logs"
bad=0
for t in $targets; do
  mkdir -p "$FB/corpus/$t"
  seeds="$FB/seeds/$t"
  if [ "${FUZZ_SMALL:-0}" = 1 ]; then
    seeds="$FB/seeds_small/$t"
    rm -rf "$seeds" && mkdir -p "$seeds"
    find "$FB/seeds/$t" -type f -size -64k -exec cp {} "$seeds/" \;
  fi
  dirs=("$FB/corpus/$t" "$seeds")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  log="$FB/logs/$t.log"
  dict=(); [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict") # the words of a text format
  start=$(date +%s)
  nice -n 19 "$FB/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$FB/crashes/$t-" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\)\/\([^ ]*\).*/cov \1 ft \2 corpus \3 (\4)/p')
  if [ $rc -ne 0 ]; then bad=1; status="FINDING (exit $rc, see $log)"; else status="no findings"; fi
  echo "fuzz_$t: $((end - start)) s, ${execs:-?} execs, ${cov:-?}, $status"
done
exit $bad
