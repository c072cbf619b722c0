#!/usr/bin/env bash
# train_errors.sh: bad input to `pgolf train` gets one clear error line naming the file and the
# problem, a non-zero exit status, and leaves no output (no log, no model files) behind.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
PY=/usr/bin/python3

# mkshard PATH NTOKENS [MAGIC] [VERSION] [CLAIMED_COUNT] [MAXID]: a shard of random ids < MAXID
mkshard() {
  "$PY" - "$@" <<'PY'
import random, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
magic = int(sys.argv[3]) if len(sys.argv) > 3 else 20240520
ver = int(sys.argv[4]) if len(sys.argv) > 4 else 1
claimed = int(sys.argv[5]) if len(sys.argv) > 5 else n
maxid = int(sys.argv[6]) if len(sys.argv) > 6 else 1024
rng = random.Random(n)
hdr = [0] * 256
hdr[0], hdr[1], hdr[2] = magic, ver, claimed
with open(path, "wb") as f:
    f.write(struct.pack("<256i", *hdr))
    f.write(struct.pack("<%dH" % n, *[rng.randrange(maxid) for _ in range(n)]))
PY
}

# a good dataset: one val shard and two train shards
good() {
  rm -rf "$TMP/d" "$TMP/out" "$TMP/logs"; mkdir -p "$TMP/d"
  mkshard "$TMP/d/fineweb_val_000000.bin" 4097
  mkshard "$TMP/d/fineweb_train_000000.bin" 20000
  mkshard "$TMP/d/fineweb_train_000001.bin" 20000
}

# run_train NAME PATTERN [ENV=VALUE...]: pgolf train with a tiny config on $TMP/d must fail with
# PATTERN and write nothing.
run_train() {
  local name=$1 pat=$2; shift 2
  expect_error "$name" "$pat" env DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 \
    NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 \
    VAL_BATCH_SIZE=4096 ITERATIONS=2 WARMUP_STEPS=0 VAL_LOSS_EVERY=0 RUN_ID=t \
    PGOLF_OUT_DIR="$TMP/out" PGOLF_LOG_DIR="$TMP/logs" "$@" "$PG" train
  if [ -e "$TMP/out" ] || [ -e "$TMP/logs" ]; then
    echo "FAIL $name/no_output: output left behind: $(ls -R "$TMP/out" "$TMP/logs" 2>/dev/null | tr '\n' ' ')"
  else
    echo "ok $name/no_output"
  fi
}

if [ ! -x "$PY" ] || ! [ -e "$TOK" ]; then
  for n in missing_glob empty_train_glob bad_magic bad_version truncated_shard truncated_header \
           token_over_vocab vocab_mismatch missing_tokenizer bad_env_int bad_env_float \
           bad_env_range unwritable_out_dir; do
    echo "SKIP train_errors/$n (skipped: ../shared/data absent)"
  done
  exit 0
fi

good
run_train train_errors/missing_glob "no files found for pattern" DATA_PATH="$TMP/nowhere"
good; rm -f "$TMP"/d/fineweb_train_*
run_train train_errors/empty_train_glob "fineweb_train_*.bin: no files found for pattern"
good; mkshard "$TMP/d/fineweb_train_000001.bin" 100 12345
run_train train_errors/bad_magic "fineweb_train_000001.bin: wrong shard magic 12345"
good; mkshard "$TMP/d/fineweb_train_000001.bin" 100 20240520 7
run_train train_errors/bad_version "fineweb_train_000001.bin: unsupported shard version 7"
good; mkshard "$TMP/d/fineweb_train_000001.bin" 100 20240520 1 150
run_train train_errors/truncated_shard "fineweb_train_000001.bin: shard size mismatch"
good; head -c 500 "$TMP/d/fineweb_val_000000.bin" > "$TMP/x" && mv "$TMP/x" "$TMP/d/fineweb_val_000000.bin"
run_train train_errors/truncated_header "fineweb_val_000000.bin: truncated shard header"
good; mkshard "$TMP/d/fineweb_val_000000.bin" 4097 20240520 1 4097 2000
run_train train_errors/token_over_vocab "fineweb_val_000000.bin: token id"
good
run_train train_errors/vocab_mismatch "vocab" VOCAB_SIZE=2048
run_train train_errors/missing_tokenizer "$TMP/none.model" TOKENIZER_PATH="$TMP/none.model"
run_train train_errors/bad_env_int "ITERATIONS: not an integer: 'ten'" ITERATIONS=ten
run_train train_errors/bad_env_float "MATRIX_LR: not a finite number: 'nan'" MATRIX_LR=nan
run_train train_errors/bad_env_range "MODEL_DIM: -64 out of range" MODEL_DIM=-64
: > "$TMP/afile"
expect_error train_errors/unwritable_out_dir "$TMP/afile/out" env DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" \
  NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 \
  VAL_BATCH_SIZE=4096 ITERATIONS=2 WARMUP_STEPS=0 PGOLF_OUT_DIR="$TMP/afile/out" PGOLF_LOG_DIR="$TMP/logs" "$PG" train
[ -e "$TMP/logs" ] && echo "FAIL train_errors/unwritable_out_dir/no_output: log written" || echo "ok train_errors/unwritable_out_dir/no_output"
