#!/usr/bin/env bash
# bench_cuda.sh: training throughput of pgolf's CUDA backend against the PyTorch reference script
# on the same GPU in the same run (issues 7 and 8). Usage (on a GPU machine, after
# bench/gpu_session.sh build): bash bench/bench_cuda.sh [baseline|pr65|pr315|pr453|pr1311|pr1392|pr187]...
# For each config: synthetic shards of uniformly random tokens (throughput does not depend on the
# text), STEPS optimizer steps of the config's full size (its TRAIN_BATCH_TOKENS with gradient
# accumulation 8 on one GPU), no intermediate validation; then the same with the reference script
# (.devbundle/ref/<name>.py, made by scripts/gpu_bundle.sh; never committed). Reported per run:
# step_avg (ms, as each logs it: training time over steps, compile warmup excluded), tokens/s,
# MFU and peak memory. FLOPs per token: 6*N (N = model_params, the matmul work forward+backward)
# + 6*L*T*d (causal attention scores and values, forward+backward, half the square); MFU against
# the H100 SXM's 989 TFLOP/s dense bf16.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build-gpu}"
PG="$PWD/$BUILD/pgolf"
STEPS="${STEPS:-60}"
PEAK="${PEAK_TFLOPS:-989}"
W=/tmp/pgolf_bench; mkdir -p "$W"
PY="${PY:-python3}"
names=("$@"); [ ${#names[@]} -eq 0 ] && names=(baseline)

shards() { # DIR VOCAB
  [ -f "$1/fineweb_val_000000.bin" ] && return
  mkdir -p "$1"
  $PY - "$1" "$2" "$STEPS" <<'PY'
import numpy as np, sys
d, V, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
def shard(path, n):
    hdr = np.zeros(256, np.int32); hdr[0], hdr[1], hdr[2] = 20240520, 1, n
    with open(path, "wb") as f:
        f.write(hdr.tobytes()); f.write(rng.integers(0, V, n, dtype=np.uint16).tobytes())
need = (steps + 40) * 786432  # the largest TRAIN_BATCH_TOKENS of the presets, priming steps included
for i in range(2): shard("%s/fineweb_train_%06d.bin" % (d, i), need // 2 + 1)
shard(d + "/fineweb_val_000000.bin", 1 << 20)
PY
}

report() { # LABEL LOG
  local log=$2 sa params L T d tbt
  sa=$(grep -oE 'step:[0-9]+/[0-9]+ val_loss:[0-9.]+ val_bpb:[0-9.]+ train_time:[0-9]+ms step_avg:[0-9.]+' "$log" | tail -1 | grep -oE '[0-9.]+$')
  params=$(grep -m1 -oE 'model_params:[0-9]+' "$log" | cut -d: -f2)
  tbt=$(grep -m1 -oE 'train_batch_tokens:[0-9]+' "$log" | cut -d: -f2)
  T=$(grep -m1 -oE 'train_seq_len:[0-9]+' "$log" | cut -d: -f2)
  local mem; mem=$(grep -m1 -oE 'peak memory allocated: [0-9]+ MiB' "$log" | grep -oE '[0-9]+')
  if [ -z "$sa" ] || [ -z "$params" ]; then echo "$1: no result ($(grep -m1 -iE 'error|Traceback' "$log"))"; return 1; fi
  $PY - "$1" "$sa" "$params" "$tbt" "$T" "${L_:-9}" "${D_:-512}" "$PEAK" "${mem:-?}" <<'PY'
import sys
lab, sa, N, tbt, T, L, d, peak, mem = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]), sys.argv[9]
tps = tbt / (sa / 1000.0)
flops = 6 * N + 6 * L * T * d
print("%-22s step_avg %8.2f ms  %10.0f tokens/s  MFU %5.1f%%  peak %s MiB" % (lab, sa, tps, 100 * tps * flops / (peak * 1e12), mem))
print("RESULT %s %.1f" % (lab, tps))
PY
}

for name in "${names[@]}"; do
  preset=""; V=1024; tok=.devbundle/fineweb_1024_bpe.model
  [ "$name" != baseline ] && preset="configs/$name.env"
  if [ -n "$preset" ]; then
    V=$(grep -oE '^VOCAB_SIZE=[0-9]+' "$preset" | cut -d= -f2); V=${V:-1024}
    [ "$V" != 1024 ] && tok=.devbundle/fineweb_${V}_bpe.model
  fi
  # the shape for the attention FLOPs
  L_=${NUM_LAYERS:-$(grep -oE '^NUM_LAYERS=[0-9]+' "$preset" 2>/dev/null | cut -d= -f2)}; L_=${L_:-9}
  D_=${MODEL_DIM:-$(grep -oE '^MODEL_DIM=[0-9]+' "$preset" 2>/dev/null | cut -d= -f2)}; D_=${D_:-512}
  export L_ D_
  data="$W/sp$V"; shards "$data" "$V"
  common=(DATA_PATH="$data" TOKENIZER_PATH="$PWD/$tok" VOCAB_SIZE="$V" ITERATIONS="$STEPS" MAX_WALLCLOCK_SECONDS=0
          VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=10 EVAL_STRIDE=0 SEED=1337)
  echo "== $name"
  env "${common[@]}" RUN_ID="bench_$name" PGOLF_NON_RECORD=1 PGOLF_OUT_DIR="$W/out_$name" PGOLF_LOG_DIR="$W/logs" \
    PGOLF_BACKEND="${BENCH_BACKEND:-cuda}" timeout 420 "$PG" train $preset > "$W/pgolf_$name.log" 2>&1
  pout=$(report "pgolf/$name" "$W/pgolf_$name.log"); echo "$pout" | grep -v '^RESULT'
  p=$(echo "$pout" | awk '/^RESULT/{print $3}')
  ref=".devbundle/ref/$name.py"
  if [ ! -f "$ref" ]; then echo "pytorch/$name: no reference script in .devbundle/ref"; continue; fi
  mkdir -p "$W/ref_$name"; cp "$ref" "$W/ref_$name/train_gpt.py"
  # the preset's keys are the record's own environment variables
  ( cd "$W/ref_$name" && set -a && { [ -z "$preset" ] || . "$OLDPWD/$preset"; } && set +a &&
    env "${common[@]}" RUN_ID="ref_$name" timeout 600 $PY train_gpt.py ) > "$W/ref_$name.log" 2>&1
  rout=$(report "pytorch/$name" "$W/ref_$name.log"); echo "$rout" | grep -v '^RESULT'
  r=$(echo "$rout" | awk '/^RESULT/{print $3}')
  [ -n "$p" ] && [ -n "$r" ] && $PY -c "print('ratio pgolf/pytorch $name: %.2fx' % ($p / $r))"
done
