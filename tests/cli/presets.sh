#!/usr/bin/env bash
# presets.sh: every record preset (configs/<record>.env) trains on the CPU at reduced size with its
# full recipe (optimizer groups, schedule, QAT, EMA/SWA and the export selection, recurrence switch,
# export with the record's quantisation and codec, sliding-window eval): 12 steps of a 2-4 layer
# d 64 model on the challenge's validation tokens (../shared/data/challenge_val); the train loss
# falls and the run ends with its record's final lines (roundtrip and sliding-window `_exact`) and
# size report. Layer-indexed settings are remapped onto the smaller depth, VOCAB_SIZE 1024 for
# the sp1024 tokens; everything else is the preset's.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
BIN="$PGOLF_SHARED/data/challenge_val/fineweb_val_000000_sp1024_first131072.bin"
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
PY=/usr/bin/python3
PRESETS="pr65 pr315 pr453 pr1311 pr1392 pr187"
if [ ! -e "$BIN" ] || [ ! -e "$TOK" ] || [ ! -x "$PY" ]; then
  for p in $PRESETS; do echo "SKIP presets/${p}_trains (skipped: ../shared/data absent)"; echo "SKIP presets/${p}_final_lines (skipped: ../shared/data absent)"; done; exit 0
fi
mkdir -p "$TMP/d"
ln -s "$BIN" "$TMP/d/fineweb_train_000000.bin"
# a short validation shard: the last 8192 tokens (the training run reads from the start)
"$PY" tests/mkshard.py slice "$BIN" -8192 end "$TMP/d/fineweb_val_000000.bin"
STEPS=12
run() { # run NAME 'FINAL-LINE-PATTERNS' EXTRA-ENV...: train configs/NAME.env at reduced size, check the
  # loss falls and each pattern (|-separated) matches a line of the output, in that order
  local p=$1 finals=$2; shift 2
  env DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 \
    TRAIN_SEQ_LEN=64 EVAL_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 VAL_BATCH_SIZE=8192 ITERATIONS=$STEPS \
    WARMUP_STEPS=2 WARMDOWN_ITERS=4 MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 EVAL_STRIDE=16 \
    OMP_NUM_THREADS=1 RUN_ID="$p" PGOLF_OUT_DIR="$TMP/out_$p" PGOLF_LOG_DIR="$TMP/logs" "$@" \
    "$PG" train "configs/$p.env" > "$TMP/$p.out" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then echo "FAIL presets/${p}_trains: exit $rc: $(tail -2 "$TMP/$p.out" | tr '\n' ' ')"; return; fi
  local l
  l=$(grep -o "^step:[0-9]*/$STEPS train_loss:[0-9.]*" "$TMP/$p.out" | sed 's/.*train_loss://')
  local n first last
  n=$(printf '%s\n' "$l" | grep -c .)
  first=$(printf '%s\n' "$l" | head -1); last=$(printf '%s\n' "$l" | tail -1)
  if [ "$n" -ne $STEPS ]; then echo "FAIL presets/${p}_trains: $n train_loss lines, expected $STEPS"; return; fi
  # the mean of the last 3 steps at least 0.3 nats below the first step's loss
  if awk -v f="$first" -v l="$(printf '%s\n' "$l" | tail -3 | tr '\n' ' ')" \
       'BEGIN { split(l, a, " "); m = (a[1] + a[2] + a[3]) / 3; exit !(m < f - 0.3) }'; then
    echo "ok presets/${p}_trains"
  else
    echo "FAIL presets/${p}_trains: train loss did not fall: $(printf '%s\n' "$l" | tr '\n' ' ')"
  fi
  grep -q "$(printf 'model_params:')" "$TMP/$p.out" || echo "FAIL presets/${p}_trains: no model_params line"
  local rest=$finals pat ln=0 at
  while [ -n "$rest" ]; do
    pat=${rest%%|*}; [ "$rest" = "$pat" ] && rest= || rest=${rest#*|}
    at=$(grep -n -- "$pat" "$TMP/$p.out" | awk -F: -v ln="$ln" '$1 > ln { print $1; exit }')
    if [ -z "$at" ]; then echo "FAIL presets/${p}_final_lines: no line '$pat' after line $ln"; return; fi
    ln=$at
  done
  echo "ok presets/${p}_final_lines"
}
EX='val_loss:[0-9.]* val_bpb:[0-9.]*$'
SIZE='^Total submission size int6+[a-z0-9-]*: [0-9]* bytes$'
run pr65 "$SIZE|^final_int6_roundtrip_exact $EX|^final_sliding_window_eval_exact stride:16 $EX" NUM_LAYERS=2
run pr315 "^ema:applying EMA weights|$SIZE|^final_int6_roundtrip_exact $EX|^final_int6_sliding_window_exact $EX|^final_int6_sliding_window_s64_exact $EX" \
  NUM_LAYERS=2 ROPE_DIMS=8 XSA_LAST_N=2
run pr453 "^ema:applying EMA weights|^Serialized model mixed+zstd: |^final_quant_roundtrip_exact $EX|^final_quant_sliding_window_exact $EX" \
  NUM_LAYERS=2 ROPE_DIMS=8 XSA_LAST_N=2
run pr1311 "^swa:start|^raw_model |^post_ema |^post_swa |^best_model:|$SIZE|^final_int6_roundtrip_exact $EX|^final_int6_sliding_window_exact $EX|^final_int8_zlib_roundtrip_exact $EX" \
  NUM_LAYERS=4 ROPE_DIMS=8 VE_LAYERS=2,3 XSA_LAST_N=4 LR_WARMUP_STEPS=3 EMA_START_STEP=3 SWA_EVERY=1 SWA_START_SCALE=0.6
run pr1392 "^depth_recurrence:enabled|^ema:applying EMA weights|^gptq:generating autoregressive calibration data (16 seqs x 64 tokens, temp=0.8)\.\.\.$|^gptq:generated 16 sequences in |^gptq:collected hessians for 24 layers (16 distinct) from 16 self-generated sequences of 64 tokens|$SIZE|^final_int6_roundtrip_exact $EX|^final_int6_sliding_window_exact $EX|^final_int8_zlib_roundtrip_exact $EX" \
  NUM_LAYERS=4 ROPE_DIMS=8 VE_LAYERS=2,3 XSA_LAST_N=4 PARALLEL_START_LAYER=3 RECUR_LAYERS=1 RECUR_START_STEP=6 \
  GPTQ_CALIB_BATCHES=16
run pr187 "^ema:applying EMA weights|$SIZE|^final_int8_zlib_roundtrip_exact $EX|^final_sliding_window_exact $EX" \
  NUM_LAYERS=4 PGOLF_PRE_ENRICH=96 XSA_LAST_N=2
