#!/usr/bin/env bash
# sample.sh: `pgolf sample` on an artifact packed by `pgolf train` (a tiny model trained for a few
# steps on the first official validation tokens): it continues a prompt, greedy and seeded sampling
# are reproducible, top-k 1 is greedy, a prompt longer than TRAIN_SEQ_LEN slides the context; bad
# input (missing or corrupt artifact, bad numbers, a tokenizer of another vocabulary, a configuration
# that does not fit the tensors, an unknown backend) gets one error line and a non-zero exit status.
# On a GPU (sample/cuda_greedy; `skipped: no GPU` otherwise, where --backend cuda must fail with one
# line) greedy generation on the CUDA backend continues the prompt and is reproducible, three samples
# decoded together included. --samples S decodes S continuations together (sample 1 is the text of
# --samples 1; greedy samples are all the greedy text; the contexts slide together).
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
PY=/usr/bin/python3
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
TOK4K="$PGOLF_SHARED/data/tokenizers/fineweb_4096_bpe.model"
VAL="$PGOLF_SHARED/data/challenge_val/fineweb_val_000000_sp1024_first131072.bin"
NAMES="sample/prompt sample/greedy_deterministic sample/seed_deterministic sample/topk1_is_greedy sample/slide
  sample/missing_artifact sample/corrupt_artifact sample/not_an_artifact sample/negative_tokens
  sample/negative_temperature sample/bad_number sample/tokenizer_vocab sample/config_mismatch
  sample/form_pr187 sample/form_lanes1289 sample/bad_backend sample/samples sample/samples_greedy
  sample/samples_slide sample/bad_samples sample/topp_tiny_is_greedy sample/topp_seed_deterministic
  sample/bad_top_p sample/cuda_greedy"

if "$PG" sample --help 2>&1 | grep -q "usage: pgolf sample"; then echo "ok sample/help"; else echo "FAIL sample/help: no usage"; fi
if [ ! -e "$VAL" ] || [ ! -e "$TOK" ] || [ ! -e "$TOK4K" ]; then
  for n in $NAMES; do echo "SKIP $n (skipped: ../shared/data absent)"; done; exit 0
fi
if [ ! -x "$PY" ]; then
  for n in $NAMES; do echo "SKIP $n (skipped: /usr/bin/python3 absent)"; done; exit 0
fi
# real text: the official ids, 8,193 for validation and the rest for training
mkdir -p "$TMP/d"
"$PY" tests/mkshard.py slice "$VAL" 0 8193 "$TMP/d/fineweb_val_000000.bin"
"$PY" tests/mkshard.py slice "$VAL" 8193 end "$TMP/d/fineweb_train_000000.bin"
# a tiny model with depth recurrence (switched on at step 4), XSA, SmearGate and a bigram table
export DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 \
  NUM_KV_HEADS=2 TRAIN_SEQ_LEN=32 TRAIN_BATCH_TOKENS=1024 VAL_BATCH_SIZE=8192 ITERATIONS=12 \
  WARMDOWN_ITERS=4 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=0 \
  PGOLF_NON_RECORD=1 OMP_NUM_THREADS=1 RECUR_LAYERS=0 RECUR_START_STEP=4 XSA_LAST_N=1 \
  PGOLF_SMEAR_MODE=post BIGRAM_VOCAB_SIZE=97 BIGRAM_DIM=32
RUN_ID=s PGOLF_OUT_DIR="$TMP/out" PGOLF_LOG_DIR="$TMP/logs" "$PG" train >"$TMP/train.out" 2>&1
A=$(ls "$TMP"/out/final_model.*.pgolf 2>/dev/null | head -1)
if [ -z "$A" ]; then
  for n in $NAMES; do echo "FAIL $n: pgolf train wrote no artifact: $(tail -1 "$TMP/train.out")"; done; exit 0
fi
# the artifact's stored configuration is what `pgolf sample` uses: the environment is left alone
unset DATA_PATH VOCAB_SIZE NUM_LAYERS MODEL_DIM NUM_HEADS NUM_KV_HEADS TRAIN_SEQ_LEN RECUR_LAYERS \
  RECUR_START_STEP XSA_LAST_N PGOLF_SMEAR_MODE BIGRAM_VOCAB_SIZE BIGRAM_DIM

# run NAME ARGS...: pgolf sample A ARGS, stdout to $TMP/NAME.out, stderr to $TMP/NAME.err
run() { local n=$1; shift; "$PG" sample "$A" "$@" >"$TMP/$n.out" 2>"$TMP/$n.err"; }

PROMPT="The history of the city"
if run p1 --prompt "$PROMPT" --tokens 20 --seed 5 && grep -q "^$PROMPT" "$TMP/p1.out" \
   && [ "$(wc -c <"$TMP/p1.out")" -gt $((${#PROMPT} + 1)) ] && grep -q "generated [0-9]* tokens" "$TMP/p1.err"; then
  echo "ok sample/prompt"
else
  echo "FAIL sample/prompt: $(head -c 300 "$TMP/p1.out") $(tail -1 "$TMP/p1.err")"
fi

run g1 --prompt "$PROMPT" --tokens 24 --temperature 0 && run g2 --prompt "$PROMPT" --tokens 24 --temperature 0
if [ -s "$TMP/g1.out" ] && cmp -s "$TMP/g1.out" "$TMP/g2.out"; then echo "ok sample/greedy_deterministic"
else echo "FAIL sample/greedy_deterministic: $(head -c 200 "$TMP/g1.out") | $(head -c 200 "$TMP/g2.out")"; fi

run s1 --tokens 30 --seed 7 --temperature 1.0 && run s2 --tokens 30 --seed 7 --temperature 1.0 \
  && run s3 --tokens 30 --seed 8 --temperature 1.0
if [ -s "$TMP/s1.out" ] && cmp -s "$TMP/s1.out" "$TMP/s2.out" && ! cmp -s "$TMP/s1.out" "$TMP/s3.out"; then
  echo "ok sample/seed_deterministic"
else
  echo "FAIL sample/seed_deterministic: seed 7: $(head -c 120 "$TMP/s1.out") | again: $(head -c 120 "$TMP/s2.out") | seed 8: $(head -c 120 "$TMP/s3.out")"
fi

run k1 --prompt "$PROMPT" --tokens 24 --temperature 0.7 --top-k 1 --seed 3
if [ -s "$TMP/k1.out" ] && cmp -s "$TMP/k1.out" "$TMP/g1.out"; then echo "ok sample/topk1_is_greedy"
else echo "FAIL sample/topk1_is_greedy: $(head -c 200 "$TMP/k1.out") | greedy: $(head -c 200 "$TMP/g1.out")"; fi

# a prompt of more than TRAIN_SEQ_LEN (32) tokens: the context slides, the prompt comes back whole
LONG="In the beginning of the twentieth century the small town on the river grew into an industrial city with factories, railways and a port that served the whole region for many decades."
if run l1 --prompt "$LONG" --tokens 10 && grep -qF "$LONG" "$TMP/l1.out" && grep -q " [1-9][0-9]* context slides" "$TMP/l1.err"; then
  echo "ok sample/slide"
else
  echo "FAIL sample/slide: $(tail -1 "$TMP/l1.err")"
fi

# --top-p: a nucleus of (nearly) nothing is the most likely token, i.e. greedy; a real nucleus is
# reproducible per seed, and another seed draws another text
run t1 --prompt "$PROMPT" --tokens 24 --temperature 0.9 --top-p 1e-9 --seed 4
if [ -s "$TMP/t1.out" ] && cmp -s "$TMP/t1.out" "$TMP/g1.out"; then echo "ok sample/topp_tiny_is_greedy"
else echo "FAIL sample/topp_tiny_is_greedy: $(head -c 200 "$TMP/t1.out") | greedy: $(head -c 200 "$TMP/g1.out")"; fi
run t2 --tokens 30 --temperature 1.2 --top-p 0.9 --seed 7 && run t3 --tokens 30 --temperature 1.2 --top-p 0.9 --seed 7 \
  && run t4 --tokens 30 --temperature 1.2 --top-p 0.9 --seed 8
if [ -s "$TMP/t2.out" ] && cmp -s "$TMP/t2.out" "$TMP/t3.out" && ! cmp -s "$TMP/t2.out" "$TMP/t4.out"; then
  echo "ok sample/topp_seed_deterministic"
else
  echo "FAIL sample/topp_seed_deterministic: $(head -c 120 "$TMP/t2.out") | again: $(head -c 120 "$TMP/t3.out") | seed 8: $(head -c 120 "$TMP/t4.out")"
fi

# --samples S: S continuations decoded together, each after a '=== sample i/S ===' line; sample i
# draws from stream i of the seed, so sample 1 is the text of --samples 1 with the same seed
block() { awk -v h="=== sample $2 ===" '$0 == h {f = 1; next} /^=== sample [0-9]+\/[0-9]+ ===$/ {f = 0} f' "$1"; }
run m3 --tokens 30 --seed 7 --temperature 1.0 --samples 3
block "$TMP/m3.out" 1/3 >"$TMP/m3.1"; block "$TMP/m3.out" 2/3 >"$TMP/m3.2"; block "$TMP/m3.out" 3/3 >"$TMP/m3.3"
if [ "$(grep -c '^=== sample [123]/3 ===$' "$TMP/m3.out")" = 3 ] && cmp -s "$TMP/m3.1" "$TMP/s1.out" \
   && ! { cmp -s "$TMP/m3.1" "$TMP/m3.2" && cmp -s "$TMP/m3.2" "$TMP/m3.3"; } \
   && grep -q "3 samples, generated [0-9]* tokens (stop: [A-Za-z]* [A-Za-z]* [A-Za-z]*)" "$TMP/m3.err"; then
  echo "ok sample/samples"
else
  echo "FAIL sample/samples: $(head -c 300 "$TMP/m3.out") | --samples 1: $(head -c 120 "$TMP/s1.out") | $(tail -1 "$TMP/m3.err")"
fi
run mg --prompt "$PROMPT" --tokens 24 --temperature 0 --samples 2
block "$TMP/mg.out" 1/2 >"$TMP/mg.1"; block "$TMP/mg.out" 2/2 >"$TMP/mg.2"
if [ -s "$TMP/mg.1" ] && cmp -s "$TMP/mg.1" "$TMP/g1.out" && cmp -s "$TMP/mg.2" "$TMP/g1.out"; then
  echo "ok sample/samples_greedy"
else
  echo "FAIL sample/samples_greedy: $(head -c 300 "$TMP/mg.out") | greedy: $(head -c 200 "$TMP/g1.out")"
fi
run ml --prompt "$LONG" --tokens 10 --samples 2 --seed 3
if [ "$(grep -cF "$LONG" "$TMP/ml.out")" = 2 ] && grep -q "2 samples, .* [1-9][0-9]* context slides" "$TMP/ml.err"; then
  echo "ok sample/samples_slide"
else
  echo "FAIL sample/samples_slide: $(head -c 300 "$TMP/ml.out") | $(tail -1 "$TMP/ml.err")"
fi

# artifacts of the other model forms: PR #187 (pre-enrichment, encoder recurrence) and PR #1289's lanes
for form in pr187 lanes1289; do
  case $form in
    pr187) fenv="PGOLF_PRE_ENRICH=96 ENCODER_RECURRENCE=1 PGOLF_SMEAR_MODE=pre BIGRAM_HASH_BUCKETS=64 BIGRAM_HASH_DIM=16 NUM_LAYERS=2";;
    lanes1289) fenv="NUM_LAYERS=3 PARALLEL_START_LAYER=1 PGOLF_PARALLEL_MODE=lanes1289 VE_ENABLED=1 VE_DIM=16 VE_LAYERS=2";;
  esac
  env $fenv DATA_PATH="$TMP/d" VOCAB_SIZE=1024 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=32 \
    ITERATIONS=6 RUN_ID=$form PGOLF_OUT_DIR="$TMP/$form" PGOLF_LOG_DIR="$TMP/logs" "$PG" train >"$TMP/$form.train" 2>&1
  F=$(ls "$TMP/$form"/final_model.*.pgolf 2>/dev/null | head -1)
  if [ -n "$F" ] && "$PG" sample "$F" --prompt "$PROMPT" --tokens 8 --temperature 0 >"$TMP/$form.out" 2>"$TMP/$form.err" \
     && grep -q "^$PROMPT" "$TMP/$form.out"; then
    echo "ok sample/form_$form"
  else
    echo "FAIL sample/form_$form: $(tail -1 "$TMP/$form.train") $(tail -1 "$TMP/$form.err")"
  fi
done

expect_error sample/missing_artifact "$TMP/nope.pgolf" "$PG" sample "$TMP/nope.pgolf"
cp "$A" "$TMP/bad.pgolf"
size=$(stat -c %s "$TMP/bad.pgolf")
printf '\x55\xaa' | dd of="$TMP/bad.pgolf" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_error sample/corrupt_artifact "bad.pgolf" "$PG" sample "$TMP/bad.pgolf"
echo "hello" >"$TMP/text.txt"
expect_error sample/not_an_artifact "text.txt" "$PG" sample "$TMP/text.txt"
expect_error sample/negative_tokens "--tokens" "$PG" sample "$A" --tokens -1
expect_error sample/negative_temperature "--temperature" "$PG" sample "$A" --temperature -0.5
expect_error sample/bad_number "--top-k" "$PG" sample "$A" --top-k 3x
expect_error sample/tokenizer_vocab "vocabulary 4096" "$PG" sample "$A" --tokenizer "$TOK4K"
# the environment overrides the stored configuration, as for `pgolf eval`: a different shape is refused
expect_error sample/config_mismatch "has shape" env MODEL_DIM=32 "$PG" sample "$A"
expect_error sample/bad_backend "--backend" "$PG" sample "$A" --backend tpu
expect_error sample/bad_samples "--samples" "$PG" sample "$A" --samples 0
bad_top_p=""
for v in 0 1.5 -0.1 nan x; do
  r=$(expect_error sample/bad_top_p "--top-p" "$PG" sample "$A" --top-p "$v")
  case "$r" in ok*) ;; *) bad_top_p="$bad_top_p [$v] $r";; esac
done
if [ -z "$bad_top_p" ]; then echo "ok sample/bad_top_p"; else echo "FAIL sample/bad_top_p:$bad_top_p"; fi

# the CUDA backend: where no GPU answers, one error line
"$PG" sample "$A" --backend cuda --tokens 0 >"$TMP/cu0.out" 2>"$TMP/cu0.err"
if grep -q "PGOLF_BACKEND=cuda: " "$TMP/cu0.err"; then
  expect_error sample/cuda_unavailable "PGOLF_BACKEND=cuda" "$PG" sample "$A" --backend cuda
  echo "SKIP sample/cuda_greedy (skipped: no GPU)"
else
  run c1 --prompt "$PROMPT" --tokens 24 --temperature 0 --backend cuda
  run c2 --prompt "$PROMPT" --tokens 24 --temperature 0 --backend cuda
  run c3 --prompt "$PROMPT" --tokens 24 --temperature 0 --backend cuda --samples 3
  block "$TMP/c3.out" 3/3 >"$TMP/c3.3"
  if grep -q "^$PROMPT" "$TMP/c1.out" && [ "$(wc -c <"$TMP/c1.out")" -gt $((${#PROMPT} + 1)) ] \
     && cmp -s "$TMP/c1.out" "$TMP/c2.out" && grep -q "backend cuda" "$TMP/c1.err" && cmp -s "$TMP/c3.3" "$TMP/c1.out"; then
    echo "ok sample/cuda_greedy"
  else
    echo "FAIL sample/cuda_greedy: $(head -c 200 "$TMP/c1.out") | $(head -c 200 "$TMP/c2.out") | $(tail -1 "$TMP/c1.err")"
  fi
fi
