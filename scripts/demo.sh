#!/usr/bin/env bash
# demo.sh: the main job on the embedded default (`make demo`): builds the default dataset if it is
# not there yet (scripts/prepare_default_data.sh: nlp-corpus from the npm registry, a 1024-piece
# SentencePiece BPE tokenizer trained with spm_train, shards written by `pgolf tokenize`), trains
# the reduced baseline of configs/demo-cpu.env on the CPU for a few minutes, packs the int8+zlib
# artifact, reloads it, evaluates it, continues a prompt with it (`pgolf sample`) and prints the
# summary. Outputs: runs/demo/ (artifact, raw weights) and runs/demo/logs/demo.txt. The environment
# overrides the preset's values.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PGOLF_BIN:-build/pgolf}
[ -x "$PG" ] || { echo "demo: $PG not found; run 'make' first" >&2; exit 1; }
bash scripts/prepare_default_data.sh

OUT=${PGOLF_OUT_DIR:-runs/demo}
export RUN_ID=${RUN_ID:-demo} PGOLF_OUT_DIR=$OUT PGOLF_LOG_DIR=${PGOLF_LOG_DIR:-$OUT/logs}
mkdir -p "$OUT"
echo "demo: training configs/demo-cpu.env (log: $PGOLF_LOG_DIR/$RUN_ID.txt)" >&2
"$PG" train configs/demo-cpu.env

LOG=$PGOLF_LOG_DIR/$RUN_ID.txt
ART=$(ls -t "$OUT"/final_model.*.pgolf 2>/dev/null | head -n1)
[ -n "$ART" ] || { echo "demo: no artifact in $OUT" >&2; exit 1; }
echo "demo: reloading $ART with pgolf eval" >&2
TOK=${TOKENIZER_PATH:-data/default/tokenizer/nlpcorpus_1024_bpe.model}
DATA_PATH=${DATA_PATH:-data/default/sp1024} TOKENIZER_PATH=$TOK "$PG" eval "$ART" > "$OUT/eval.txt"
PROMPT="The history of the city"
SAMPLE=("$PG" sample "$ART" --tokenizer "$TOK" --prompt "$PROMPT" --tokens 32 --temperature 0.8 --top-k 40 --seed 1)
"${SAMPLE[@]}" > "$OUT/sample.txt" 2> "$OUT/sample.err"

field() { sed -n "s/.*$1:\([^ ]*\).*/\1/p" | tail -n1; }
first_loss=$(grep -m1 '^step:1/' "$LOG" | field train_loss)
last=$(grep '^step:.*train_loss' "$LOG" | tail -n1)
echo
echo "==================== pgolf demo summary ===================="
echo "run log:              $LOG"
echo "model_params:         $(grep -m1 '^model_params:' "$LOG" | cut -d: -f2)"
echo "train_loss:           $first_loss (step 1) -> $(echo "$last" | field train_loss) ($(echo "$last" | cut -d' ' -f1))"
echo "pre-export val_bpb:   $(grep 'val_bpb' "$LOG" | grep '^step:' | tail -n1 | field val_bpb)"
grep '_roundtrip_exact ' "$LOG" | tail -n1 | sed 's/^/roundtrip (in train): /'
sed 's/^/reloaded artifact:    /' "$OUT/eval.txt"
echo "artifact:             $ART ($(stat -c %s "$ART") bytes)"
grep -m1 '^Total submission size int8' "$LOG" | sed 's/^/                      /'
echo "limit:                16000000 bytes"
echo "sample:               $(tr '\n' ' ' < "$OUT/sample.txt" | cut -c1-300)"
echo "                      ($(sed 's/^sample: //' "$OUT/sample.err" | tail -n1))"
echo "next:                 ${SAMPLE[*]:0:2} ${ART} --tokenizer $TOK --prompt '...'"
echo "                      $PG plot -o $OUT/curves.png $LOG"
echo "============================================================"
