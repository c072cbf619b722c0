#!/usr/bin/env bash
# checkpoint.sh: interrupt and resume. A run stopped by SIGTERM at some step k and resumed from its
# checkpoint ends with bit-identical weights and identical train_loss lines after k as an
# uninterrupted run (with PR #1311's recipe: Adam state kept after priming, lr warmup, EMA and SWA
# with the raw/EMA/SWA selection, plus MIN_LR); kill -9 at arbitrary moments of a checkpointing run never leaves a checkpoint
# that loads wrongly; corrupt or mismatched checkpoints are refused with one error line.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
PY=/usr/bin/python3
NAMES="resume_bitwise resume_losses kill9_resume corrupt_checkpoint config_mismatch"
if [ ! -x "$PY" ] || ! [ -e "$TOK" ]; then
  for n in $NAMES; do echo "SKIP checkpoint/$n (skipped: ../shared/data absent)"; done; exit 0
fi
mkdir -p "$TMP/d"
"$PY" tests/mkshard.py synth 7 "$TMP/d/fineweb_val_000000.bin:2049" "$TMP/d/fineweb_train_000000.bin:9000" \
  "$TMP/d/fineweb_train_000001.bin:9000"
export DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 NUM_LAYERS=3 MODEL_DIM=64 NUM_HEADS=4 \
  NUM_KV_HEADS=2 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 VAL_BATCH_SIZE=2048 ITERATIONS=40 \
  WARMDOWN_ITERS=20 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=2 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 \
  MUON_MOMENTUM_WARMUP_STEPS=10 GRAD_CLIP_NORM=1.0 PGOLF_NON_RECORD=1 OMP_NUM_THREADS=1 \
  EMA_ENABLED=1 EMA_DECAY=0.9 EMA_START_STEP=2 MUON_WD=0.02 ADAM_WD=0.01 \
  PGOLF_PRIMING_KEEPS_ADAM=1 LR_WARMUP_STEPS=5 MIN_LR=0.1 SWA_ENABLED=1 SWA_EVERY=3 SWA_START_SCALE=0.6 \
  PGOLF_EXPORT_WEIGHTS=best
# the uninterrupted run
RUN_ID=full PGOLF_OUT_DIR="$TMP/full" PGOLF_LOG_DIR="$TMP/logs" "$PG" train > "$TMP/full.out" 2>&1 \
  || { echo "FAIL checkpoint/resume_bitwise: uninterrupted run failed: $(tail -2 "$TMP/full.out")"; exit 0; }
losses() { grep -o 'step:[0-9]*/40 train_loss:[0-9.]*' "$1"; }

# interrupted at whatever step SIGTERM lands on (after step 3), then resumed
mkdir -p "$TMP/int"
RUN_ID=int PGOLF_OUT_DIR="$TMP/int" PGOLF_LOG_DIR="$TMP/logs" "$PG" train > "$TMP/int.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q 'step:3/40 train_loss' "$TMP/int.out" 2>/dev/null && break; sleep 0.05; done
kill -TERM $pid; wait $pid; rc=$?
k=$(grep -o 'interrupted:signal 15 at step:[0-9]*' "$TMP/int.out" | grep -o '[0-9]*$')
if [ $rc -ne 143 ] || [ -z "$k" ] || [ ! -f "$TMP/int/int.ckpt" ]; then
  echo "FAIL checkpoint/resume_bitwise: interrupted run: rc=$rc step=$k: $(tail -2 "$TMP/int.out")"
else
  RUN_ID=int2 RESUME="$TMP/int/int.ckpt" PGOLF_OUT_DIR="$TMP/int" PGOLF_LOG_DIR="$TMP/logs" "$PG" train \
    > "$TMP/res.out" 2>&1 || echo "FAIL checkpoint/resume_bitwise: resumed run failed: $(tail -2 "$TMP/res.out")"
  if cmp -s "$TMP/full/final_model.safetensors" "$TMP/int/final_model.safetensors"; then
    echo "ok checkpoint/resume_bitwise"
  else
    echo "FAIL checkpoint/resume_bitwise: final weights differ after resuming at step $k"
  fi
  if [ "$(losses "$TMP/full.out" | awk -F'[:/]' -v k="$k" '$2 > k')" = "$(losses "$TMP/res.out")" ] \
     && [ "$(losses "$TMP/res.out" | wc -l)" -eq $((40 - k)) ]; then
    echo "ok checkpoint/resume_losses"
  else
    echo "FAIL checkpoint/resume_losses: train_loss lines after step $k differ"
  fi
fi

# kill -9 at a few arbitrary moments of a run that checkpoints every step; the checkpoint left
# behind must always load and continue to the same final weights
bad=""
for delay in 0.3 0.7 1.1; do
  rm -rf "$TMP/k9"; mkdir -p "$TMP/k9"
  RUN_ID=k9 CHECKPOINT_EVERY=1 PGOLF_OUT_DIR="$TMP/k9" PGOLF_LOG_DIR="$TMP/logs" "$PG" train > "$TMP/k9.out" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q 'step:2/40 train_loss' "$TMP/k9.out" 2>/dev/null && break; sleep 0.05; done
  sleep $delay; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  [ -f "$TMP/k9/k9.ckpt" ] || { bad="$bad no-checkpoint@$delay"; continue; }
  RUN_ID=k9b RESUME="$TMP/k9/k9.ckpt" PGOLF_OUT_DIR="$TMP/k9" PGOLF_LOG_DIR="$TMP/logs" "$PG" train > "$TMP/k9b.out" 2>&1 \
    || { bad="$bad resume-failed@$delay:$(tail -1 "$TMP/k9b.out")"; continue; }
  cmp -s "$TMP/full/final_model.safetensors" "$TMP/k9/final_model.safetensors" || bad="$bad differs@$delay"
done
[ -z "$bad" ] && echo "ok checkpoint/kill9_resume" || echo "FAIL checkpoint/kill9_resume:$bad"

# corrupt checkpoints
cp "$TMP/int/int.ckpt" "$TMP/c.ckpt" 2>/dev/null || cp "$TMP/k9/k9.ckpt" "$TMP/c.ckpt"
"$PY" -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=1; open(sys.argv[1],'wb').write(b)" "$TMP/c.ckpt"
expect_error checkpoint/corrupt_checkpoint "c.ckpt: checkpoint checksum mismatch" env RUN_ID=c RESUME="$TMP/c.ckpt" \
  PGOLF_OUT_DIR="$TMP/c" PGOLF_LOG_DIR="$TMP/clogs" "$PG" train
[ -e "$TMP/clogs" ] && echo "FAIL checkpoint/corrupt_checkpoint/no_output: log written" || echo "ok checkpoint/corrupt_checkpoint/no_output"
expect_error checkpoint/config_mismatch "checkpoint was written with MODEL_DIM=64" env RUN_ID=c MODEL_DIM=128 \
  RESUME="$TMP/k9/k9.ckpt" PGOLF_OUT_DIR="$TMP/c" PGOLF_LOG_DIR="$TMP/clogs" "$PG" train
