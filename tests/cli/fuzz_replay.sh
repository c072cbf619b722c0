#!/usr/bin/env bash
# fuzz_replay.sh: the fuzz targets of fuzz/ (docs/fuzzing.md) as a cheap regression check. When
# clang-14 with libFuzzer is available: builds them (make fuzz, in $BUILD/fuzz), generates the
# seed corpora (fuzz/seeds.sh), then per target replays every seed and every committed regression
# input (fuzz/regressions/<target>/) once, plus 300 mutations with a fixed libFuzzer seed. Any
# crash, sanitizer report, leak or broken invariant fails the target's line. Otherwise SKIP.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
FB="${FUZZ_BUILD:-${BUILD:-build}/fuzz}"
TARGETS=$(bash fuzz/targets.sh)
probe='int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }'
if ! command -v clang-14 >/dev/null 2>&1 ||
   ! printf '%s\n' "$probe" | clang-14 -x c -fsanitize=fuzzer,address,undefined -o "$TMP/probe" - >/dev/null 2>&1; then
  echo "SKIP fuzz_replay (skipped: clang-14/libFuzzer absent)"
  exit 0
fi
if ! make --no-print-directory -j2 FUZZ_BUILD="$FB" fuzz >"$TMP/build.log" 2>&1; then
  echo "FAIL fuzz_build: $(grep -m1 -E 'error|Error' "$TMP/build.log")"
  exit 0
fi
echo "ok fuzz_build"
if ! FUZZ_BUILD="$FB" PGOLF_BIN="$PG" bash fuzz/seeds.sh >"$TMP/seeds.log" 2>&1; then
  echo "FAIL fuzz_seeds: $(tail -1 "$TMP/seeds.log")"
  exit 0
fi
for t in $TARGETS; do
  dirs=("$FB/seeds/$t")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  n=$(find "${dirs[@]}" -type f | wc -l)
  log="$TMP/$t.log"
  # replay: each input once (-runs=0 loads and runs the corpus, no mutation)
  if ! "$FB/fuzz_$t" -runs=0 -rss_limit_mb=2048 -timeout=60 "${dirs[@]}" >"$log" 2>&1; then
    echo "FAIL fuzz_replay_$t: $(grep -m1 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY|failed|deadly signal' "$log")"
    continue
  fi
  # a few mutations, reproducible (fixed seed), into a scratch corpus (the seeds stay as they are)
  mkdir -p "$TMP/corpus_$t"
  dict=(); [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  if ! "$FB/fuzz_$t" -runs=300 -seed=1 -rss_limit_mb=2048 -timeout=60 "${dict[@]}" -artifact_prefix="$TMP/$t-" \
       "$TMP/corpus_$t" "${dirs[@]}" >"$log" 2>&1; then
    echo "FAIL fuzz_replay_$t: mutation run: $(grep -m1 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY|failed|deadly signal' "$log")"
    continue
  fi
  echo "ok fuzz_replay_$t ($n inputs)"
done
