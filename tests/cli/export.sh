#!/usr/bin/env bash
# export.sh: the artifact commands. `pgolf export` packs a safetensors state dict into an artifact
# and unpacks an artifact into dequantised safetensors (equal to the PyTorch reference's
# dequantisation); `pgolf info` reports the byte accounting (adding up to the file size) and
# extracts the source bundle; `pgolf eval` scores the artifact and the dequantised safetensors
# identically; corrupt, truncated, mismatched or unwritable cases fail with one error line and
# leave no output.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
PY=/usr/bin/python3
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
VAL="$PGOLF_SHARED/data/challenge_val/fineweb_val_000000_sp1024_first131072.bin"
# a tiny baseline-shaped model: only tok_emb (1024x128) exceeds 65,536 elements
export NUM_LAYERS=2 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 VOCAB_SIZE=1024 TRAIN_SEQ_LEN=64 \
  TRAIN_BATCH_TOKENS=4096 VAL_BATCH_SIZE=4096 OMP_NUM_THREADS=2

for c in eval export info; do
  if "$PG" $c --help 2>&1 | grep -q "usage: pgolf $c"; then echo "ok ${c}_help"; else echo "FAIL ${c}_help: no usage"; fi
done

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "SKIP export_cli (skipped: /usr/bin/python3 with numpy absent)"; exit 0
fi
# random weights with the model's state-dict names, shapes and dtypes
"$PY" - "$TMP/in.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(5)
d, L, V, H, Hk, hid = 128, 2, 1024, 4, 2, 256
kvd = Hk * (d // H)
t = {"skip_weights": ("F32", (1, d)), "tok_emb.weight": ("BF16", (V, d))}
for l in range(L):
    p = f"blocks.{l}."
    t.update({p + "attn_scale": ("F32", (d,)), p + "mlp_scale": ("F32", (d,)), p + "resid_mix": ("F32", (2, d)),
              p + "attn.c_q.weight": ("F32", (d, d)), p + "attn.c_k.weight": ("F32", (kvd, d)),
              p + "attn.c_v.weight": ("F32", (kvd, d)), p + "attn.proj.weight": ("F32", (d, d)),
              p + "attn.q_gain": ("F32", (H,)), p + "mlp.fc.weight": ("F32", (hid, d)),
              p + "mlp.proj.weight": ("F32", (d, hid))})
hdr, blobs, off = {}, [], 0
for name, (dt, shape) in t.items():
    a = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    if dt == "BF16":
        b = ((a.view(np.uint32) + 0x7FFF + ((a.view(np.uint32) >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
    else:
        b = a.tobytes()
    hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(hdr).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(blobs))
PY
# a short validation shard: the first 8,193 official val tokens
"$PY" tests/mkshard.py slice "$VAL" 0 8193 "$TMP/val/fineweb_val_000000.bin" 2>/dev/null

A="$TMP/out.pgolf"
if "$PG" export "$TMP/in.safetensors" "$A" >"$TMP/export.out" 2>&1 && grep -q "^Serialized model int8+zlib: " "$TMP/export.out"; then
  echo "ok export_pack"
else
  echo "FAIL export_pack: $(tail -1 "$TMP/export.out")"
fi

# info: the byte accounting adds up to the file size
size=$(stat -c %s "$A" 2>/dev/null)
"$PG" info "$A" >"$TMP/info.out" 2>&1
m=$(sed -n 's/^Serialized model: \([0-9]*\) bytes$/\1/p' "$TMP/info.out")
c=$(sed -n 's/^Code size: \([0-9]*\) bytes$/\1/p' "$TMP/info.out")
t=$(sed -n 's/^Total submission size: \([0-9]*\) bytes$/\1/p' "$TMP/info.out")
if [ -n "$m" ] && [ -n "$c" ] && [ "$t" = "$size" ] && [ $((m + c)) -eq "$size" ] && grep -q "size_check: OK" "$TMP/info.out" \
   && grep -q "tok_emb.weight .*int8-row" "$TMP/info.out" && grep -q "blocks.0.attn_scale .*pass-F32" "$TMP/info.out" \
   && grep -q "blocks.0.attn.c_q.weight .*pass-F16" "$TMP/info.out"; then
  echo "ok info_accounting"
else
  echo "FAIL info_accounting: model $m + code $c vs total $t, file $size"
fi

# info --extract-code: the counted code is a tar.xz of the sources
rm -f "$TMP/code.tar.xz"
if "$PG" info --extract-code "$TMP/code.tar.xz" "$A" >/dev/null 2>&1 && [ "$(stat -c %s "$TMP/code.tar.xz")" = "$c" ] \
   && tar tJf "$TMP/code.tar.xz" | grep -qx "src/quant.c" && tar tJf "$TMP/code.tar.xz" | grep -qx "Makefile"; then
  echo "ok info_extract_code"
else
  echo "FAIL info_extract_code: no tar.xz with src/quant.c and Makefile"
fi

# unpack: pgolf's dequantised weights equal the PyTorch reference's dequantisation of the input
if "$PG" export "$A" "$TMP/deq.safetensors" >/dev/null 2>&1; then
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "SKIP export_unpack_matches_reference (skipped: python3-torch absent)"
  elif (cd tests/reference && "$PY" - "$TMP/in.safetensors" "$TMP/deq.safetensors" <<'PY'
import sys
from ref_io import load_safetensors
from ref_export import ExportOptions, quantize_state
src, _ = load_safetensors(sys.argv[1])
got, meta = load_safetensors(sys.argv[2])
qs = quantize_state(src, "int8_baseline", ExportOptions())
assert set(qs) == set(got), "tensor names differ"
for k, q in qs.items():
    assert q.deq.dtype == got[k].dtype and q.deq.shape == got[k].shape, k
    assert q.deq.view(-1).view(__import__("torch").uint8).equal(got[k].contiguous().view(-1).view(__import__("torch").uint8)), k
assert "pgolf_config" in meta
PY
  ); then echo "ok export_unpack_matches_reference"; else echo "FAIL export_unpack_matches_reference: values differ"; fi
else
  echo "FAIL export_unpack_matches_reference: export failed"
fi

# banked names (PR #1311 / #1392): qo_bank = c_q of each layer then attn.proj, kv_bank = c_k then
# c_v, mlp_up_bank = fc, mlp_down_bank = mlp.proj; reading the banked file back gives the same weights
if PGOLF_EXPORT_NAMES=banked "$PG" export "$A" "$TMP/banked.safetensors" >"$TMP/banked.out" 2>&1 \
   && grep -q "banked names" "$TMP/banked.out"; then
  if "$PY" - "$TMP/deq.safetensors" "$TMP/banked.safetensors" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    dt = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16}
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dt[v["dtype"]]).reshape(v["shape"])
            for k, v in h.items() if k != "__metadata__"}
u, b = load(sys.argv[1]), load(sys.argv[2])
L = 2
want = {"qo_bank": ["attn.c_q.weight", "attn.proj.weight"], "kv_bank": ["attn.c_k.weight", "attn.c_v.weight"],
        "mlp_up_bank": ["mlp.fc.weight"], "mlp_down_bank": ["mlp.proj.weight"]}
for bank, mats in want.items():
    assert b[bank].shape[0] == L * len(mats), bank
    for k, m in enumerate(mats):
        for i in range(L):
            assert np.array_equal(b[bank][k * L + i], u[f"blocks.{i}.{m}"]), (bank, k, i)
rest = {k for k in u if not any(k.endswith(m) and k.startswith("blocks.") for ms in want.values() for m in ms)}
assert set(b) == rest | set(want), sorted(set(b) ^ (rest | set(want)))
for k in rest:
    assert np.array_equal(b[k], u[k]), k
PY
  then echo "ok export_banked_names"; else echo "FAIL export_banked_names: banks differ from the matrices"; fi
  "$PG" export "$TMP/banked.safetensors" "$TMP/banked.pgolf" >/dev/null 2>&1
  PGOLF_EXPORT_NAMES=banked "$PG" export "$TMP/deq.safetensors" "$TMP/unbanked.pgolf" >/dev/null 2>&1
  if [ -s "$TMP/banked.pgolf" ] && cmp -s "$TMP/banked.pgolf" "$TMP/unbanked.pgolf"; then
    echo "ok export_banked_reads_back"
  else
    echo "FAIL export_banked_reads_back: the banked file does not pack as the unbanked one"
  fi
else
  echo "FAIL export_banked_names: $(tail -1 "$TMP/banked.out")"
fi

# repacking the same weights gives the same artifact
"$PG" export "$TMP/in.safetensors" "$TMP/again.pgolf" >/dev/null 2>&1
if cmp -s "$A" "$TMP/again.pgolf"; then echo "ok export_deterministic"; else echo "FAIL export_deterministic: artifacts differ"; fi

# other schemes and codecs
for sc in "int6_pr65 zstd-22" "int6_pr315 brotli-11" "int8_baseline lzma-9e"; do
  set -- $sc
  if QUANT_SCHEME=$1 EXPORT_CODEC=$2 "$PG" export "$TMP/in.safetensors" "$TMP/s.pgolf" >/dev/null 2>&1 \
     && "$PG" info "$TMP/s.pgolf" | grep -q "^codec: $2$" && "$PG" info "$TMP/s.pgolf" | grep -q "^quant_scheme: $1$"; then
    echo "ok export_${1}_${2}"
  else
    echo "FAIL export_${1}_${2}: export or info failed"
  fi
done

# eval: artifact and dequantised safetensors give the same numbers
if [ ! -f "$TOK" ] || [ ! -f "$TMP/val/fineweb_val_000000.bin" ]; then
  echo "SKIP eval_artifact (skipped: ../shared/data absent)"; echo "SKIP eval_memory_line (skipped: ../shared/data absent)"
else
  DATA_PATH="$TMP/val" TOKENIZER_PATH="$TOK" "$PG" eval "$A" > "$TMP/eval1.out" 2>&1
  e1=$(sed -n 's/^final_int8_zlib_roundtrip_exact //p' "$TMP/eval1.out")
  e2=$(DATA_PATH="$TMP/val" TOKENIZER_PATH="$TOK" "$PG" eval --artifact "$TMP/deq.safetensors" 2>&1 | sed -n 's/^final_raw_roundtrip_exact //p')
  if [ -n "$e1" ] && [ "$e1" = "$e2" ]; then echo "ok eval_artifact"; else echo "FAIL eval_artifact: '$e1' vs '$e2'"; fi
  # and ends with train's memory line (the evaluator build's backend memory, the process's peak)
  if tail -n 1 "$TMP/eval1.out" | grep -Eq '^peak memory allocated: [0-9]+ MiB reserved: [1-9][0-9]* MiB$'; then
    echo "ok eval_memory_line"
  else
    echo "FAIL eval_memory_line: last line '$(tail -n 1 "$TMP/eval1.out")'"
  fi
  # the dequantised safetensors loaded by the PyTorch reference model give the same loss
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "SKIP export_reference_loads_same_loss (skipped: python3-torch absent)"
  else
    "$PY" - "$TMP/deq.safetensors" "$TMP/refcfg.json" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]; meta = json.loads(f.read(n))["__metadata__"]
json.dump(json.loads(meta["pgolf_config"]), open(sys.argv[2], "w"))
PY
    "$PY" tests/reference/ref.py eval --config "$TMP/refcfg.json" --weights "$TMP/deq.safetensors" \
      --val "$TMP/val/fineweb_val_000000.bin" --tokenizer "$TOK" --out "$TMP/refeval.json" >/dev/null 2>"$TMP/refeval.err"
    rl=$("$PY" -c 'import json,sys; print("%.8f" % json.load(open(sys.argv[1]))["val_loss"])' "$TMP/refeval.json" 2>/dev/null)
    pl=$(printf '%s\n' "$e1" | sed -n 's/^val_loss:\([0-9.]*\) .*/\1/p')
    if [ -n "$rl" ] && [ -n "$pl" ] && awk -v a="$rl" -v b="$pl" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2e-6 * b) }'; then
      echo "ok export_reference_loads_same_loss"
    else
      echo "FAIL export_reference_loads_same_loss: reference val_loss '$rl' vs pgolf '$pl' $(tail -1 "$TMP/refeval.err")"
    fi
  fi
  expect_error eval_shape_mismatch "model expects" env DATA_PATH="$TMP/val" TOKENIZER_PATH="$TOK" MODEL_DIM=64 "$PG" eval "$A"
  expect_error eval_missing_tensor "missing tensor blocks.2" env DATA_PATH="$TMP/val" TOKENIZER_PATH="$TOK" NUM_LAYERS=3 "$PG" eval "$A"
fi

# corrupt artifacts: one error line, no crash
head -c 5000 "$A" >"$TMP/trunc.pgolf"
expect_error info_truncated "truncated artifact" "$PG" info "$TMP/trunc.pgolf"
cp "$A" "$TMP/flip.pgolf"
printf '\x55' | dd of="$TMP/flip.pgolf" bs=1 seek=$((size - 100)) conv=notrunc 2>/dev/null
expect_error info_checksum "checksum mismatch in the code section" "$PG" info "$TMP/flip.pgolf"
cp "$A" "$TMP/flip2.pgolf"
printf '\x55' | dd of="$TMP/flip2.pgolf" bs=1 seek=3000 conv=notrunc 2>/dev/null
expect_error eval_checksum "checksum mismatch in the model payload" env DATA_PATH="$TMP/val" TOKENIZER_PATH="$TOK" "$PG" eval "$TMP/flip2.pgolf"
{ cat "$A"; printf 'junk'; } >"$TMP/trail.pgolf"
expect_error info_trailing "4 trailing bytes" "$PG" info "$TMP/trail.pgolf"
printf 'hello world, not an artifact' >"$TMP/foreign.bin"
expect_error info_foreign "neither a pgolf artifact" "$PG" info "$TMP/foreign.bin"
expect_error info_missing "nope.pgolf" "$PG" info "$TMP/nope.pgolf"

# failed exports leave nothing behind
rm -f "$TMP/bad.pgolf"
expect_error export_bad_codec "EXPORT_CODEC" env EXPORT_CODEC=zip-9 "$PG" export "$TMP/in.safetensors" "$TMP/bad.pgolf"
expect_error export_bad_scheme "QUANT_SCHEME=int4" env QUANT_SCHEME=int4 "$PG" export "$TMP/in.safetensors" "$TMP/bad.pgolf"
expect_error export_unwritable "$TMP/nodir/x.pgolf" "$PG" export "$TMP/in.safetensors" "$TMP/nodir/x.pgolf"
expect_error export_wrong_model "model expects" env MODEL_DIM=256 "$PG" export "$TMP/in.safetensors" "$TMP/bad.pgolf"
if [ -e "$TMP/bad.pgolf" ] || ls "$TMP" | grep -q '\.tmp\.'; then echo "FAIL export_no_partial_output: files left"; else echo "ok export_no_partial_output"; fi
expect_error export_usage "expected IN and OUT" "$PG" export "$TMP/in.safetensors"
