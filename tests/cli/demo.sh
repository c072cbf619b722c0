#!/usr/bin/env bash
# demo.sh: `make demo`'s script (scripts/demo.sh) end to end at a reduced number of steps, in a
# temporary folder: the embedded default dataset is built from the npm tarball (nlp-corpus: checked
# sha512, spm_train, pgolf tokenize), the run trains, packs, reloads and samples, and the summary
# carries every line with a value: the reloaded artifact's score equals the roundtrip score printed
# in training, the artifact fits the cap and the sample continues the prompt. A second run reuses the
# dataset (its stamps) and gives the same bits. Skipped when the npm registry cannot be reached and
# no tarball is at hand (data/default/ from an earlier `make demo` serves).
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
NAMES="demo/summary demo/reload_equals_roundtrip demo/sample demo/dataset_reused"
URL=https://registry.npmjs.org/nlp-corpus/-/nlp-corpus-4.4.0.tgz
if [ -f data/default/nlp-corpus-4.4.0.tgz ]; then
  export PGOLF_NLP_CORPUS_TGZ="$PWD/data/default/nlp-corpus-4.4.0.tgz"
elif ! curl -fsSI --connect-timeout 20 "$URL" >/dev/null 2>&1; then
  for n in $NAMES; do echo "SKIP $n (skipped: the npm registry cannot be reached)"; done; exit 0
fi
for c in spm_train jq curl; do
  command -v $c >/dev/null || { for n in $NAMES; do echo "SKIP $n (skipped: $c absent; scripts/setup.sh)"; done; exit 0; }
done
D="$TMP/default"
run_demo() { # run_demo OUT_DIR: the demo with 8 steps instead of 120
  PGOLF_BIN="$PG" PGOLF_DEFAULT_DIR="$D" DATA_PATH="$D/sp1024" TOKENIZER_PATH="$D/tokenizer/nlpcorpus_1024_bpe.model" \
    PGOLF_OUT_DIR="$1" RUN_ID=demo ITERATIONS=8 WARMDOWN_ITERS=4 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=4 WARMUP_STEPS=1 \
    OMP_NUM_THREADS=2 bash scripts/demo.sh
}
run_demo "$TMP/run1" > "$TMP/demo1.out" 2> "$TMP/demo1.err"; rc=$?
S="$TMP/summary"
sed -n '/pgolf demo summary/,$p' "$TMP/demo1.out" > "$S" # the training's own output comes before it
field() { grep -m1 "^$1" "$S" | cut -c23-; }
missing=""
for k in "run log:" "model_params:" "train_loss:" "pre-export val_bpb:" "roundtrip (in train):" "reloaded artifact:" \
         "artifact:" "limit:" "sample:" "next:"; do
  [ -n "$(field "$k")" ] || missing="$missing '$k'"
done
if [ $rc -eq 0 ] && [ -z "$missing" ] && grep -q "step:8/8" "$S"; then
  echo "ok demo/summary"
else
  echo "FAIL demo/summary: exit $rc, lines without a value:${missing:- none}: $(tail -n 3 "$TMP/demo1.err" | tr '\n' ' ')"
fi
# the score of the reloaded artifact (pgolf eval) is the one the training run printed for it
rt=$(grep -m1 '^roundtrip (in train):' "$S" | sed -n 's/.*_roundtrip_exact \(val_loss:[0-9.]* val_bpb:[0-9.]*\).*/\1/p')
re=$(grep '^reloaded artifact:.*_roundtrip_exact ' "$S" | sed -n 's/.*_roundtrip_exact \(val_loss:[0-9.]* val_bpb:[0-9.]*\).*/\1/p')
bytes=$(sed -n 's/^artifact: .*(\([0-9]*\) bytes)$/\1/p' "$S")
if [ -n "$rt" ] && [ "$rt" = "$re" ] && [ -n "$bytes" ] && [ "$bytes" -lt 16000000 ]; then
  echo "ok demo/reload_equals_roundtrip"
else
  echo "FAIL demo/reload_equals_roundtrip: in training '$rt', reloaded '$re', artifact '$bytes' bytes"
fi
smp=$(field "sample:")
if [ "${smp#The history of the city}" != "$smp" ] && [ ${#smp} -gt 30 ] && grep -q "generated [1-9][0-9]* tokens" "$S"; then
  echo "ok demo/sample"
else
  echo "FAIL demo/sample: $(field "sample:") | $(grep -A1 '^sample:' "$S" | tail -n 1)"
fi
# the second run finds the dataset ready (nothing downloaded or rebuilt) and trains the same model
run_demo "$TMP/run2" > "$TMP/demo2.out" 2> "$TMP/demo2.err"; rc=$?
if [ $rc -eq 0 ] && ! grep -q "downloading\|copying\|training the\|tokenizing" "$TMP/demo2.err" \
   && cmp -s "$TMP/run1/final_model.int8.pgolf" "$TMP/run2/final_model.int8.pgolf"; then
  echo "ok demo/dataset_reused"
else
  echo "FAIL demo/dataset_reused: exit $rc; $(grep -m2 'downloading\|copying\|training the\|tokenizing' "$TMP/demo2.err" | tr '\n' ' ')"
fi
