#!/usr/bin/env bash
# train_progress.sh: the live progress line of `pgolf train` (step, tokens/s, elapsed, ETA, peak
# memory) appears on a terminal and never in piped output or the log; PGOLF_PLOT draws the run's
# curves at its end.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
PY=/usr/bin/python3
if [ ! -x "$PY" ] || ! [ -e "$TOK" ]; then
  for n in quiet_when_piped ema_not_started gptq_reserve gptq_reserve_too_long terminal_line plot plot_error; do echo "SKIP train_progress/$n (skipped: ../shared/data absent)"; done
  exit 0
fi
mkdir -p "$TMP/d"
"$PY" tests/mkshard.py synth 3 "$TMP/d/fineweb_val_000000.bin:2049" "$TMP/d/fineweb_train_000000.bin:20000"
export DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 \
  NUM_KV_HEADS=2 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 VAL_BATCH_SIZE=2048 ITERATIONS=6 WARMUP_STEPS=0 \
  MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 PGOLF_NON_RECORD=1 OMP_NUM_THREADS=1 \
  PGOLF_LOG_DIR="$TMP/logs"

RUN_ID=piped PGOLF_OUT_DIR="$TMP/o1" "$PG" train > "$TMP/piped.out" 2>&1
if grep -q "step:6/6 train_loss" "$TMP/piped.out" && ! grep -q "\[pgolf\] step" "$TMP/piped.out" \
   && ! grep -q $'\r' "$TMP/piped.out" "$TMP/logs/piped.txt"; then
  echo "ok train_progress/quiet_when_piped"
else
  echo "FAIL train_progress/quiet_when_piped: progress output in a pipe or the log"
fi

# an EMA that would start after the last step holds nothing: the raw weights are exported
RUN_ID=noema PGOLF_OUT_DIR="$TMP/o6" EMA_ENABLED=1 EMA_START_STEP=100 "$PG" train > "$TMP/noema.out" 2>&1
v=$(sed -n 's/^step:6\/6 val_loss:\([0-9.]*\) .*/\1/p' "$TMP/noema.out")
r=$(sed -n 's/^final_int8_zlib_roundtrip_exact val_loss:\([0-9.]*\) .*/\1/p' "$TMP/noema.out")
if grep -q "^ema:not started" "$TMP/noema.out" && ! grep -q "^ema:applying" "$TMP/noema.out" && [ -n "$v" ] && [ -n "$r" ] \
   && awk -v v="$v" -v r="$r" 'BEGIN { d = r - v; if (d < 0) d = -d; exit !(d < 0.05 && v < 6.85) }'; then
  echo "ok train_progress/ema_not_started"
else
  echo "FAIL train_progress/ema_not_started: val $v, roundtrip $r: $(grep -m1 '^ema' "$TMP/noema.out")"
fi

# GPTQ_RESERVE_SECONDS: the wallclock cap of training is shortened by the reserve (later records)
RUN_ID=reserve PGOLF_OUT_DIR="$TMP/o5" MAX_WALLCLOCK_SECONDS=600 GPTQ_RESERVE_SECONDS=13 "$PG" train > "$TMP/reserve.out" 2>&1
if grep -q "^gptq:reserving 13s, effective=587000ms$" "$TMP/reserve.out" && grep -q "step:6/6 train_loss" "$TMP/reserve.out"; then
  echo "ok train_progress/gptq_reserve"
else
  echo "FAIL train_progress/gptq_reserve: $(grep -m1 gptq "$TMP/reserve.out")"
fi
expect_error train_progress/gptq_reserve_too_long "GPTQ_RESERVE_SECONDS=20 leaves no training time" \
  env MAX_WALLCLOCK_SECONDS=10 GPTQ_RESERVE_SECONDS=20 "$PG" train

# on a terminal (script(1) gives the run a pty): the live line, erased before each log line
if command -v script >/dev/null; then
  RUN_ID=tty PGOLF_OUT_DIR="$TMP/o2" script -qec "$PG train" /dev/null > "$TMP/tty.out" 2>&1
  if grep -aq "\[pgolf\] step [0-9]*/6 | [0-9.]*k tok/s | [0-9.]* ms/step | elapsed [0-9]*s | eta [0-9]*s (last step) | peak [0-9]* MiB" "$TMP/tty.out" \
     && grep -aq "step:6/6 train_loss" "$TMP/tty.out" && ! grep -q $'\r' "$TMP/logs/tty.txt" \
     && ! grep -aq "MiB\(step\|final\)" "$TMP/tty.out"; then
    echo "ok train_progress/terminal_line"
  else
    echo "FAIL train_progress/terminal_line: no progress line on the terminal: $(tr '\r' '\n' < "$TMP/tty.out" | grep -a pgolf | tail -2)"
  fi
else
  echo "SKIP train_progress/terminal_line (skipped: script(1) absent)"
fi

if command -v gnuplot >/dev/null; then
  RUN_ID=plot PGOLF_OUT_DIR="$TMP/o3" PGOLF_PLOT="$TMP/curves.png" "$PG" train > "$TMP/plot.out" 2>&1
  if [ "$(head -c 8 "$TMP/curves.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] \
     && grep -q "^plot:$TMP/curves.png" "$TMP/plot.out"; then
    echo "ok train_progress/plot"
  else
    echo "FAIL train_progress/plot: no PNG: $(tail -1 "$TMP/plot.out")"
  fi
  RUN_ID=plot2 PGOLF_OUT_DIR="$TMP/o4" PGOLF_PLOT="$TMP/nodir/curves.png" "$PG" train > "$TMP/plot2.out" 2> "$TMP/plot2.err"
  rc=$?
  if [ $rc -ne 0 ] && [ "$(grep -c . "$TMP/plot2.err")" -eq 1 ] && grep -q "PGOLF_PLOT" "$TMP/plot2.err" \
     && [ -f "$TMP/o4/final_model.int8.pgolf" ]; then
    echo "ok train_progress/plot_error"
  else
    echo "FAIL train_progress/plot_error: rc=$rc: $(cat "$TMP/plot2.err")"
  fi
else
  echo "SKIP train_progress/plot (skipped: gnuplot absent)"
  echo "SKIP train_progress/plot_error (skipped: gnuplot absent)"
fi
