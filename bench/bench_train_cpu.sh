#!/usr/bin/env bash
# bench_train_cpu.sh: CPU training throughput of pgolf against the PyTorch reference
# (tests/reference/ref.py train, float32). A benchmark, not a test: it asserts nothing about time.
#
# Both sides train the same reduced baseline config from the same initial weights (written once by
# the reference's init, loaded by pgolf with INIT_FROM and by ref.py with --weights) on the same
# shards (made once with `pgolf tokenize` from ../shared/data/corpus/fineweb_sample_300.jsonl.xz and
# the official SP1024 tokenizer), for the same steps, on the same number of threads. pgolf runs
# with WARMUP_STEPS=0 (the reference has no priming steps) and validates only after the last step.
#
# Timing: the training steps only. pgolf: the difference of its cumulative train_time between step
# SKIP and the last step (its train_time excludes validation; it includes reading the next batch,
# a memcpy); ref.py: the sum of its per-step times after step SKIP (`--skip`, batch building
# excluded). The first SKIP steps (allocators, caches, thread pools) are left out on both sides.
# Each (side, threads) is run REPEATS times, interleaved; the medians are reported, with
# tokens/s = TRAIN_BATCH_TOKENS * (STEPS - SKIP) / time and the ratio pgolf / reference. Also
# printed: tokens/s of the fastest single timed step of each side over all runs, a figure that
# other processes on a shared machine disturb less (they only ever make a step slower).
# The train losses of the first steps of both are printed as a sanity check: they should agree
# to about 1e-3 (both float32; the difference grows with the steps as rounding differs).
#
# Threads: pgolf gets OMP_NUM_THREADS=N (its OpenBLAS is the OpenMP build: the same pool). The
# reference gets torch.set_num_threads(N) and OMP_NUM_THREADS=N; its BLAS is Debian's pthread
# OpenBLAS (libblas.so.3), a second thread pool: with OPENBLAS_NUM_THREADS=N next to torch's N
# OpenMP threads the two pools oversubscribe the cores and the reference ran 4x slower at N=2
# (925 against 3969 tokens/s), so it runs with OPENBLAS_NUM_THREADS=BENCH_REF_BLAS_THREADS (1),
# its faster setting here.
#
# Environment: BUILD (build dir, default build), BENCH_STEPS (20), BENCH_SKIP (3), BENCH_REPEATS
# (3), BENCH_THREADS ("1 2"), BENCH_LAYERS (4), BENCH_DIM (256), BENCH_SEQ (256), BENCH_BATCH
# (TRAIN_BATCH_TOKENS, 8192), BENCH_REF_BLAS_THREADS (1), PGOLF_SHARED (../shared), BENCH_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
PG="$PWD/$BUILD/pgolf"
SHARED="${PGOLF_SHARED:-$(cd .. && pwd)/shared}"
PY=/usr/bin/python3
STEPS="${BENCH_STEPS:-20}"
SKIP="${BENCH_SKIP:-3}"
REPEATS="${BENCH_REPEATS:-3}"
THREADS="${BENCH_THREADS:-1 2}"
LAYERS="${BENCH_LAYERS:-4}"
DIM="${BENCH_DIM:-256}"
SEQ="${BENCH_SEQ:-256}"
BATCH="${BENCH_BATCH:-8192}"
TOK="$SHARED/data/tokenizers/fineweb_1024_bpe.model"
CORPUS="$SHARED/data/corpus/fineweb_sample_300.jsonl.xz"

die() { echo "bench_train_cpu: $*" >&2; exit 1; }
[ -x "$PG" ] || die "$PG not built (make BUILD=$BUILD all)"
[ -x "$PY" ] || die "$PY missing (Debian python3-torch)"
[ -e "$TOK" ] && [ -e "$CORPUS" ] || die "$SHARED/data absent"
[ "$SKIP" -lt "$STEPS" ] || die "BENCH_SKIP must be below BENCH_STEPS"

WORK=$(mktemp -d)
if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

# ---- the config: the baseline architecture reduced (head dim 64, heads:kv_heads 2:1, MLP x2) ----
HEADS=$((DIM / 64)); [ "$HEADS" -ge 2 ] || HEADS=2
KV=$((HEADS / 2))
CFG=(VOCAB_SIZE=1024 NUM_LAYERS=$LAYERS MODEL_DIM=$DIM NUM_HEADS=$HEADS NUM_KV_HEADS=$KV MLP_MULT=2
     TRAIN_SEQ_LEN=$SEQ TRAIN_BATCH_TOKENS=$BATCH ITERATIONS=$STEPS WARMDOWN_ITERS=$((STEPS / 2))
     MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=500 GRAD_CLIP_NORM=0 SEED=1337)
{ printf '{'; sep=""; for kv in "${CFG[@]}"; do printf '%s"%s": "%s"' "$sep" "${kv%%=*}" "${kv#*=}"; sep=", "; done
  printf '}\n'; } > "$WORK/config.json"

# ---- data: shards from real FineWeb text, once ----
"$PG" tokenize --tokenizer "$TOK" --out "$WORK/data" --val-docs 4 --quiet "$CORPUS" > "$WORK/tokenize.out" 2>&1 \
  || die "pgolf tokenize failed: $(tail -2 "$WORK/tokenize.out")"
# ---- initial weights: the reference's init of this config, float32, loaded by both sides ----
"$PY" - "$WORK/config.json" "$WORK/init.safetensors" <<'PY' || die "writing the initial weights failed"
import sys, torch
sys.path.insert(0, "tests/reference")
from ref_config import load_config
from ref_io import save_safetensors
from ref_model import init_params
cfg = load_config(sys.argv[1])
save_safetensors(sys.argv[2], {n: t.to(torch.float32).contiguous() for n, t in init_params(cfg, cfg["SEED"], torch.float32).items()})
PY

run_pgolf() { # threads out
  env "${CFG[@]}" DATA_PATH="$WORK/data" TOKENIZER_PATH="$TOK" INIT_FROM="$WORK/init.safetensors" \
    WARMUP_STEPS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 VAL_BATCH_SIZE=$((8 * SEQ * 4)) PGOLF_NON_RECORD=1 \
    PGOLF_BACKEND=cpu RUN_ID=bench PGOLF_OUT_DIR="$WORK/pg_out" PGOLF_LOG_DIR="$WORK/pg_logs" \
    OMP_NUM_THREADS="$1" OPENBLAS_NUM_THREADS="$1" "$PG" train > "$2" 2>&1 \
    || die "pgolf train failed: $(tail -3 "$2")"
}
run_ref() { # threads out
  OMP_NUM_THREADS="$1" OPENBLAS_NUM_THREADS="${BENCH_REF_BLAS_THREADS:-1}" "$PY" tests/reference/ref.py train --config "$WORK/config.json" \
    --weights "$WORK/init.safetensors" --dtype float32 --data "$WORK/data" --steps "$STEPS" --threads "$1" \
    --skip "$SKIP" > "$2" 2>&1 || die "ref.py train failed: $(tail -3 "$2")"
}
# milliseconds of steps SKIP+1..STEPS
pg_ms() {
  awk -v s="$SKIP" -v n="$STEPS" -F'train_time:' '/^step:[0-9]+\/[0-9]+ train_loss:/ {
      split($1, a, "[:/]"); split($2, b, "ms"); t[a[2] + 0] = b[1] }
    END { if (!((n in t) && (s == 0 || (s in t)))) exit 1; print t[n] - (s ? t[s] : 0) }' "$1"
}
ref_ms() {
  awk -v s="$SKIP" '/^step:[0-9]+\/[0-9]+ train_loss:/ { split($1, a, "[:/]"); split($3, b, ":");
      if (a[2] + 0 > s) { sum += b[2]; k++ } } END { if (!k) exit 1; print sum }' "$1"
}
# per-step milliseconds of steps SKIP+1..STEPS, one a line
pg_steps() {
  awk -v s="$SKIP" -F'train_time:' '/^step:[0-9]+\/[0-9]+ train_loss:/ { split($1, a, "[:/]"); split($2, b, "ms");
      k = a[2] + 0; if (k > s) print b[1] - prev; prev = b[1] }' "$1"
}
ref_steps() {
  awk -v s="$SKIP" '/^step:[0-9]+\/[0-9]+ train_loss:/ { split($1, a, "[:/]"); split($3, b, ":"); if (a[2] + 0 > s) print b[2] }' "$1"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
losses() { grep -o '^step:[0-9]*/[0-9]* train_loss:[0-9.]*' "$1" | sed 's/.*train_loss://'; }

echo "pgolf CPU training benchmark: $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load:$(cut -d' ' -f1-3 /proc/loadavg)"
torch_blas=$("$PY" -c "import torch; print(next((l.split()[-1] for l in open('/proc/self/maps') if 'blas' in l), '?'))" 2>/dev/null || echo '?')
echo "BLAS: pgolf $(ldd "$PG" | grep -o '/[^ ]*openblas[^ ]*' | head -1 | xargs -r readlink -f), reference (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)) $torch_blas; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "config: ${CFG[*]}"
echo "data: fineweb_sample_300 with SP1024: $(head -1 "$WORK/tokenize.out" | sed -e 's/^tokenize: //' -e 's/ -> .*//')"
echo "threads: pgolf OMP_NUM_THREADS=N; reference torch.set_num_threads(N), OPENBLAS_NUM_THREADS=${BENCH_REF_BLAS_THREADS:-1}"
echo "steps: $STEPS (timed: $((STEPS - SKIP)) after $SKIP untimed), $BATCH tokens/step, $REPEATS runs each, median"
declare -A T_PG T_REF
for r in $(seq 1 "$REPEATS"); do
  for th in $THREADS; do
    run_pgolf "$th" "$WORK/pg_${th}_$r.out"; T_PG[$th]+="$(pg_ms "$WORK/pg_${th}_$r.out") "
    run_ref "$th" "$WORK/ref_${th}_$r.out"; T_REF[$th]+="$(ref_ms "$WORK/ref_${th}_$r.out") "
    pg_steps "$WORK/pg_${th}_$r.out" >> "$WORK/pg_steps_$th"; ref_steps "$WORK/ref_${th}_$r.out" >> "$WORK/ref_steps_$th"
    echo "run $r threads $th: pgolf $(pg_ms "$WORK/pg_${th}_$r.out") ms, reference $(ref_ms "$WORK/ref_${th}_$r.out") ms (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
echo
first=${THREADS%% *}
echo "train_loss of the first steps (threads $first, run 1): step pgolf reference |diff|"
paste <(losses "$WORK/pg_${first}_1.out") <(losses "$WORK/ref_${first}_1.out") | head -5 \
  | awk '{ d = $1 - $2; if (d < 0) d = -d; printf "  %d %s %s %.4f\n", NR, $1, $2, d }'
echo "last step: pgolf $(losses "$WORK/pg_${first}_1.out" | tail -1) reference $(losses "$WORK/ref_${first}_1.out" | tail -1)"
echo
ntok=$((BATCH * (STEPS - SKIP)))
echo "tokens/s from the median run time (and from the fastest single step, less sensitive to other load):"
printf '%-8s %14s %16s %16s   %14s %16s %8s\n' threads pgolf_tok/s reference_tok/s pgolf/reference pgolf_best reference_best ratio
for th in $THREADS; do
  mp=$(printf '%s\n' ${T_PG[$th]} | median); mr=$(printf '%s\n' ${T_REF[$th]} | median)
  bp=$(sort -g "$WORK/pg_steps_$th" | head -1); br=$(sort -g "$WORK/ref_steps_$th" | head -1)
  awk -v th="$th" -v n="$ntok" -v a="$mp" -v b="$mr" -v bt="$BATCH" -v c="$bp" -v d="$br" \
    'BEGIN { printf "%-8s %14.0f %16.0f %16.2f   %14.0f %16.0f %8.2f\n", th, n / (a / 1000), n / (b / 1000), b / a,
             bt / (c / 1000), bt / (d / 1000), d / c }'
done
echo "load at the end:$(cut -d' ' -f1-3 /proc/loadavg)"
