#!/usr/bin/env bash
# prepare_default_data.sh: the embedded default dataset of `make demo`, built from nothing but the
# network and Debian packages (scripts/setup.sh), as a normal user:
#   1. download the npm package nlp-corpus 4.4.0 (MIT; 100,000 varied English sentences in
#      package/builds/doc-0.json .. doc-99.json, JSON arrays of strings) and check its sha512;
#   2. group every 20 consecutive sentences of a file (joined with one space) into one document:
#      data/default/docs.jsonl (5,000 JSON lines {"text": ...}, in file order doc-0, doc-1, ...);
#      the same documents one per line (NULs and newlines as spaces, stripped, empty ones dropped,
#      as the exporter's sentence iterator does) are the tokenizer training text;
#   3. train a 1024-piece SentencePiece BPE model with spm_train and the challenge's trainer settings
#      (data/download_hf_docs_and_tokenize.py; ../shared/data/tokenizers/README.md);
#   4. write challenge-format shards with `pgolf tokenize`: the first 500 documents are validation.
# Outputs (all under data/default/, git-ignored):
#   tokenizer/nlpcorpus_1024_bpe.model   the tokenizer (TOKENIZER_PATH)
#   sp1024/fineweb_val_000000.bin, sp1024/fineweb_train_000000.bin   the shards (DATA_PATH)
# Idempotent: each step records its inputs and the sha256 of its outputs in a stamp file and is
# skipped when the stamp still matches. Environment: PGOLF_BIN (default build/pgolf),
# PGOLF_DEFAULT_DIR (default data/default), PGOLF_NLP_CORPUS_TGZ (a local copy of the tarball,
# checked like a download).
set -euo pipefail
cd "$(dirname "$0")/.."

URL=https://registry.npmjs.org/nlp-corpus/-/nlp-corpus-4.4.0.tgz
INTEGRITY=sha512-1vOdUcAoOi1p85iZTC5SZWiIB1H3sDQxgyb4wTF0bZ9QgAVSJjl/Bck0lC5sG4quFgJ6Bz2K5mTaknhBlfEmvw==
GROUP=20          # sentences per document
VAL_DOCS=500      # first documents used for validation
VOCAB=1024
D=${PGOLF_DEFAULT_DIR:-data/default}
PG=${PGOLF_BIN:-build/pgolf}
TGZ=$D/nlp-corpus-4.4.0.tgz
MODEL_PREFIX=$D/tokenizer/nlpcorpus_${VOCAB}_bpe
OUT=$D/sp${VOCAB}

say() { echo "prepare_default_data: $*" >&2; }
die() { echo "prepare_default_data: error: $*" >&2; exit 1; }

need() { # need CMD PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; install the Debian package $2 (see scripts/setup.sh)"
}
need curl curl; need tar tar; need gzip gzip; need jq jq; need sha256sum coreutils; need base64 coreutils
need spm_train sentencepiece
[ -x "$PG" ] || die "$PG not found; run 'make' first"
mkdir -p "$D"

# stamp_ok NAME KEY: the stamp exists, was made from KEY, and its outputs still have their sha256
stamp_ok() {
  local s="$D/.stamp.$1"
  [ -f "$s" ] && [ "$(head -n1 "$s")" = "$2" ] && tail -n +2 "$s" | sha256sum -c --quiet --status 2>/dev/null
}
# stamp_write NAME KEY FILE...: record KEY and the sha256 of the outputs
stamp_write() {
  local s="$D/.stamp.$1" key=$2; shift 2
  { echo "$key"; sha256sum "$@"; } > "$s.tmp" && mv "$s.tmp" "$s"
}
sha512_ok() { # sha512_ok FILE: matches the npm integrity string
  local want got
  want=$(echo "${INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got=$(sha512sum "$1" | cut -d' ' -f1)
  [ "$want" = "$got" ]
}

# 1. the tarball
if [ -f "$TGZ" ] && sha512_ok "$TGZ"; then
  :
else
  rm -f "$TGZ"
  if [ -n "${PGOLF_NLP_CORPUS_TGZ:-}" ]; then
    say "copying $PGOLF_NLP_CORPUS_TGZ"
    cp "$PGOLF_NLP_CORPUS_TGZ" "$TGZ.part"
  else
    say "downloading $URL"
    curl -fsSL --retry 3 --connect-timeout 20 -o "$TGZ.part" "$URL" || { rm -f "$TGZ.part"; die "download of $URL failed"; }
  fi
  sha512_ok "$TGZ.part" || { rm -f "$TGZ.part"; die "$URL: sha512 does not match $INTEGRITY"; }
  mv "$TGZ.part" "$TGZ"
fi

# 2. documents (JSONL for pgolf tokenize) and the tokenizer training text
KEY2="docs v1 $INTEGRITY group=$GROUP"
if ! stamp_ok docs "$KEY2"; then
  say "extracting documents ($GROUP sentences each)"
  tmp=$(mktemp -d "$D/.extract.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$TGZ" -C "$tmp" package/builds
  files=()
  for i in $(seq 0 99); do
    f="$tmp/package/builds/doc-$i.json"
    [ -f "$f" ] || die "$TGZ: package/builds/doc-$i.json missing"
    files+=("$f")
  done
  # shellcheck disable=SC2016
  jq -c --argjson g "$GROUP" \
    'if type == "array" and all(.[]; type == "string") then . else error("not an array of strings") end
     | . as $a | range(0; length; $g) | {text: ($a[.:(. + $g)] | join(" "))}' "${files[@]}" > "$D/docs.jsonl.tmp"
  jq -r '.text | gsub("\u0000"; " ") | gsub("[\r\n]"; " ") | sub("^\\s+"; "") | sub("\\s+$"; "") | select(length > 0)' \
    "$D/docs.jsonl.tmp" > "$D/spm_train.txt.tmp"
  mv "$D/docs.jsonl.tmp" "$D/docs.jsonl"
  mv "$D/spm_train.txt.tmp" "$D/spm_train.txt"
  rm -rf "$tmp"; trap - EXIT
  stamp_write docs "$KEY2" "$D/docs.jsonl" "$D/spm_train.txt"
fi
say "$(wc -l < "$D/docs.jsonl") documents, $(wc -c < "$D/docs.jsonl") bytes of JSONL"

# 3. the tokenizer: the exporter's SentencePieceTrainer settings
SPM_ARGS=(--model_type=bpe --vocab_size=$VOCAB --character_coverage=0.999 --byte_fallback=true
          --split_digits=true --normalization_rule_name=nmt_nfkc --add_dummy_prefix=false
          --pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3 --hard_vocab_limit=false)
KEY3="tokenizer v1 $(sha256sum < "$D/spm_train.txt" | cut -d' ' -f1) ${SPM_ARGS[*]}"
if ! stamp_ok tokenizer "$KEY3"; then
  say "training the $VOCAB-piece SentencePiece BPE tokenizer (spm_train)"
  mkdir -p "$D/tokenizer"
  rm -f "$MODEL_PREFIX.model" "$MODEL_PREFIX.vocab"
  spm_train --input="$D/spm_train.txt" --model_prefix="$MODEL_PREFIX.tmp" "${SPM_ARGS[@]}" \
    > "$D/tokenizer/spm_train.log" 2>&1 || { tail -n 20 "$D/tokenizer/spm_train.log" >&2; die "spm_train failed (log: $D/tokenizer/spm_train.log)"; }
  mv "$MODEL_PREFIX.tmp.vocab" "$MODEL_PREFIX.vocab"
  mv "$MODEL_PREFIX.tmp.model" "$MODEL_PREFIX.model"
  stamp_write tokenizer "$KEY3" "$MODEL_PREFIX.model" "$MODEL_PREFIX.vocab"
fi

# 4. shards
KEY4="shards v1 $(sha256sum < "$MODEL_PREFIX.model" | cut -d' ' -f1) $(sha256sum < "$D/docs.jsonl" | cut -d' ' -f1) val_docs=$VAL_DOCS"
if ! stamp_ok shards "$KEY4"; then
  say "tokenizing with $PG tokenize"
  "$PG" tokenize --tokenizer "$MODEL_PREFIX.model" --out "$OUT" --val-docs "$VAL_DOCS" "$D/docs.jsonl"
  stamp_write shards "$KEY4" "$OUT"/fineweb_*.bin
fi
say "ready: DATA_PATH=$OUT TOKENIZER_PATH=$MODEL_PREFIX.model VOCAB_SIZE=$VOCAB"
