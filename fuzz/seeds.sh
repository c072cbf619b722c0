#!/usr/bin/env bash
# seeds.sh: (re)generates the seed corpora of the fuzz targets under $FUZZ_BUILD/seeds/<target>/
# (nothing binary is committed): gen_seeds' synthetic inputs, trimmed and whole copies of the
# challenge tokenizers (../shared/data/tokenizers/*.model, when present), and real artifacts that
# $PGOLF_BIN (default build/pgolf, when present) packs from gen_seeds' small model.
set -euo pipefail
cd "$(dirname "$0")/.."
FB="${FUZZ_BUILD:-build-fuzz}"
PG="${PGOLF_BIN:-build/pgolf}"
TOK="${PGOLF_SHARED:-$(cd .. && pwd)/shared}/data/tokenizers"
S="$FB/seeds"
rm -rf "$S"
mkdir -p "$S"
if [ -d "$TOK" ]; then "$FB/gen_seeds" "$S" "$TOK"; else "$FB/gen_seeds" "$S"; fi
if [ -d "$TOK" ]; then
  for m in "$TOK"/*.model; do [ -e "$m" ] && install -m 644 "$m" "$S/spm/"; done
fi
if [ -x "$PG" ]; then
  (unset $(env | sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' | grep -E '^(QUANT_SCHEME|EXPORT_CODEC|NUM_|MODEL_DIM|VOCAB_SIZE|TIE_|MLP_|PGOLF_)' || true)
   "$PG" export "$S/tiny_model.safetensors" "$S/artifact/export_int8_zlib.pgolf" >/dev/null
   QUANT_SCHEME=int6_pr315 EXPORT_CODEC=zstd-22 "$PG" export "$S/tiny_model.safetensors" "$S/artifact/export_int6_zstd.pgolf" >/dev/null) ||
    echo "seeds: $PG export failed; artifact seeds are the synthetic ones only" >&2
fi
mv "$S/tiny_model.safetensors" "$S/safetensors/"
mkdir -p "$S/runlog" && cp tests/data/logs/* "$S/runlog/" # pgolf's and the records' log formats
for t in "$S"/*/; do printf '%s: %s files\n' "$(basename "$t")" "$(ls "$t" | wc -l)"; done
