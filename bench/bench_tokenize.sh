#!/usr/bin/env bash
# bench_tokenize.sh: `pgolf tokenize` against Python SentencePiece 0.1.97 (bench/tokenize_py.py, the
# challenge exporter's way: json.loads per line, sp.encode of 1,024-document batches with
# num_threads) on the same text with the same number of threads. A benchmark, not a test: it
# asserts nothing about time.
#
# Text: the first BENCH_MB MB (whole lines) of ../shared/data/corpus/wikipedia_en_2015.jsonl.xz,
# decompressed once to a temporary .jsonl so that decompression is not timed. Both sides read that
# file, parse the JSON, encode every document with the SP1024 model (BENCH_MODEL), prepend BOS and
# write the ids as one challenge-format shard; the two shards are compared byte for byte (the
# benchmark stops if they differ). Timing: the wall time of the whole process (model loading and,
# for Python, interpreter start-up included: a fraction of a second), each (side, threads) run
# BENCH_REPEATS times, interleaved; medians reported, tokens/s = tokens / median time, ratio =
# pgolf tokens/s / Python tokens/s. Also the ratio of the processes' CPU times (user + sys, medians):
# tokens per CPU-second, a per-core figure that other load on the machine disturbs less.
#
# Environment: BUILD (build dir, default build), BENCH_MB (32), BENCH_REPEATS (3), BENCH_THREADS
# ("1 2"), BENCH_MODEL (fineweb_1024_bpe), PGOLF_SHARED (../shared), BENCH_KEEP=1 keeps the work
# directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
PG="$PWD/$BUILD/pgolf"
SHARED="${PGOLF_SHARED:-$(cd .. && pwd)/shared}"
PY=/usr/bin/python3
MB="${BENCH_MB:-32}"
REPEATS="${BENCH_REPEATS:-3}"
THREADS="${BENCH_THREADS:-1 2}"
MODEL="$SHARED/data/tokenizers/${BENCH_MODEL:-fineweb_1024_bpe}.model"
CORPUS="$SHARED/data/corpus/wikipedia_en_2015.jsonl.xz"

die() { echo "bench_tokenize: $*" >&2; exit 1; }
[ -x "$PG" ] || die "$PG not built (make BUILD=$BUILD all)"
[ -e "$MODEL" ] && [ -e "$CORPUS" ] || die "../shared/data absent ($MODEL, $CORPUS)"
"$PY" -c 'import sentencepiece, numpy' 2>/dev/null || die "/usr/bin/python3 with sentencepiece and numpy absent"

W=$(mktemp -d)
if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory: $W"; else trap 'rm -rf "$W"' EXIT; fi

# the text: whole lines up to BENCH_MB MB
xz -dc "$CORPUS" | "$PY" -c '
import sys
limit, n = int(float(sys.argv[1]) * 1e6), 0
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if n + len(line) > limit: break
    out.write(line); n += len(line)
' "$MB" > "$W/text.jsonl" || true
docs=$(wc -l < "$W/text.jsonl")
bytes=$(stat -c %s "$W/text.jsonl")
[ "$docs" -gt 0 ] || die "no documents taken from $CORPUS"

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run_pg() { # threads -> seconds
  local t0 t1
  rm -rf "$W/pg"
  t0=$EPOCHREALTIME
  OMP_NUM_THREADS=$1 /usr/bin/time -f "%U %S" -o "$W/time" "$PG" tokenize --tokenizer "$MODEL" --out "$W/pg" --val-docs 0 --shard-tokens 2000000000 \
    --threads "$1" --quiet "$W/text.jsonl" > "$W/pg.out" 2>&1 || die "pgolf tokenize failed: $(tail -1 "$W/pg.out")"
  t1=$EPOCHREALTIME
  awk '{printf " %.3f", $1 + $2}' "$W/time" >> "$W/pg_cpu_$1"
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}
run_py() {
  local t0 t1
  t0=$EPOCHREALTIME
  OMP_NUM_THREADS=$1 /usr/bin/time -f "%U %S" -o "$W/time" "$PY" bench/tokenize_py.py "$MODEL" "$W/text.jsonl" "$W/py.bin" "$1" > "$W/py.out" 2>&1 \
    || die "tokenize_py.py failed: $(tail -1 "$W/py.out")"
  t1=$EPOCHREALTIME
  awk '{printf " %.3f", $1 + $2}' "$W/time" >> "$W/py_cpu_$1"
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}

echo "bench_tokenize: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "text: $docs documents, $(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}') MB of JSONL (first lines of wikipedia_en_2015.jsonl);" \
  "model $(basename "$MODEL"); $REPEATS runs each, medians"
printf '%-8s %8s %12s %10s %14s %10s %14s %8s %16s\n' threads docs tokens "pgolf s" "pgolf tok/s" "python s" "python tok/s" ratio "ratio (CPU time)"
for t in $THREADS; do
  pg_times="" py_times=""
  for r in $(seq "$REPEATS"); do
    pg_times="$pg_times $(run_pg "$t")"
    py_times="$py_times $(run_py "$t")"
  done
  cmp -s "$W/pg/fineweb_train_000000.bin" "$W/py.bin" || die "threads $t: pgolf's shard differs from Python's"
  [ "$(ls "$W/pg" | wc -l)" = 1 ] || die "pgolf wrote more than one shard"
  tokens=$("$PY" -c 'import struct,sys; print(struct.unpack("<3i", open(sys.argv[1],"rb").read(12))[2])' "$W/py.bin")
  pg_s=$(echo "$pg_times" | median); py_s=$(echo "$py_times" | median)
  pg_c=$(median < "$W/pg_cpu_$t"); py_c=$(median < "$W/py_cpu_$t")
  awk -v t="$t" -v d="$docs" -v n="$tokens" -v a="$pg_s" -v b="$py_s" -v c="$pg_c" -v e="$py_c" 'BEGIN {
    printf "%-8s %8d %12d %10.2f %14.0f %10.2f %14.0f %7.2fx %15.2fx\n", t, d, n, a, n / a, b, n / b, b / a, e / c }'
  echo "  runs (wall): pgolf$pg_times s; python$py_times s; CPU time (user+sys): pgolf$(cat "$W/pg_cpu_$t") s;" \
    "python$(cat "$W/py_cpu_$t") s; load average $(cut -d' ' -f1 /proc/loadavg); shards identical"
done
