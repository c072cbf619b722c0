#!/usr/bin/env bash
# quant6.sh: artifacts of the export schemes of PR #1311 (int6_gptq_lite + lzma-9e), PR #1392
# (int6_gptq + brotli-11, calibrated on a training shard), PR #187 (int6_pr187 + lzma-6) and the
# dense int6 packing (PGOLF_INT6_PACK=1): `pgolf export` writes them, `pgolf info` shows the scheme,
# codec and int6 tensors, `pgolf eval` scores them (the packed artifact exactly as the unpacked
# one); int6_gptq without training shards fails with one error line and writes nothing.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
PY=/usr/bin/python3
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
VAL="$PGOLF_SHARED/data/challenge_val/fineweb_val_000000_sp1024_first131072.bin"
# one block of width 320: c_q, attn.proj, mlp.fc and mlp.proj exceed 65,536 elements
export NUM_LAYERS=1 MODEL_DIM=320 NUM_HEADS=4 NUM_KV_HEADS=2 VOCAB_SIZE=1024 TRAIN_SEQ_LEN=64 \
  TRAIN_BATCH_TOKENS=4096 VAL_BATCH_SIZE=4096 GPTQ_CALIB_BATCHES=4 OMP_NUM_THREADS=1
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "SKIP quant6_cli (skipped: /usr/bin/python3 with numpy absent)"; exit 0
fi
if [ ! -f "$TOK" ] || [ ! -f "$VAL" ]; then
  echo "SKIP quant6_cli (skipped: ../shared/data absent)"; exit 0
fi
"$PY" - "$TMP/in.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(7)
d, L, V, H, Hk, hid = 320, 1, 1024, 4, 2, 640
kvd = Hk * (d // H)
t = {"tok_emb.weight": ("BF16", (V, d))}
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
    if name.endswith(("attn_scale", "mlp_scale", "q_gain")):
        a = a + 1.0
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
# val: the first 8,193 official val tokens; train: the next 20,000 (the GPTQ calibration data)
"$PY" tests/mkshard.py slice "$VAL" 0 8193 "$TMP/data/fineweb_val_000000.bin"
"$PY" tests/mkshard.py slice "$VAL" 8193 28193 "$TMP/data/fineweb_train_000000.bin"
export DATA_PATH="$TMP/data" TOKENIZER_PATH="$TOK"

declare -A LOSS
for spec in "int6_gptq_lite lzma-9e int6+lzma int6 0" "int6_gptq brotli-11 int6+brotli int6 0" \
            "int6_pr187 lzma-6 int6+lzma int8_zlib 0" "int6_pr187 lzma-6 int6+lzma int8_zlib 1"; do
  set -- $spec
  s=$1 c=$2 log=$3 short=$4 pack=$5
  n="${s}_pack$pack"
  A="$TMP/$n.pgolf"
  if ! QUANT_SCHEME=$s EXPORT_CODEC=$c PGOLF_INT6_PACK=$pack "$PG" export "$TMP/in.safetensors" "$A" >"$TMP/$n.export" 2>&1 \
     || ! grep -q "^Serialized model $log: " "$TMP/$n.export"; then
    echo "FAIL quant6_export_$n: $(tail -1 "$TMP/$n.export")"; continue
  fi
  echo "ok quant6_export_$n"
  "$PG" info "$A" >"$TMP/$n.info" 2>&1
  if grep -q "^quant_scheme: $s$" "$TMP/$n.info" && grep -q "^codec: $c$" "$TMP/$n.info" \
     && grep -q "blocks.0.mlp.fc.weight .*int6-row" "$TMP/$n.info" && grep -q "blocks.0.attn.c_q.weight .*int6-row" "$TMP/$n.info"; then
    echo "ok quant6_info_$n"
  else
    echo "FAIL quant6_info_$n: $(grep -m1 -E 'quant_scheme|error' "$TMP/$n.info")"
  fi
  "$PG" eval "$A" >"$TMP/$n.eval" 2>&1
  e=$(sed -n "s/^final_${short}_roundtrip_exact val_loss:\([0-9.]*\) val_bpb:\([0-9.]*\)$/\1 \2/p" "$TMP/$n.eval")
  if [ -n "$e" ] && grep -q "^eval:artifact .* quant_scheme:$s codec:$c " "$TMP/$n.eval"; then
    echo "ok quant6_eval_$n"; LOSS[$n]="$e"
  else
    echo "FAIL quant6_eval_$n: $(tail -1 "$TMP/$n.eval")"
  fi
done
if [ -n "${LOSS[int6_pr187_pack0]}" ] && [ "${LOSS[int6_pr187_pack0]}" = "${LOSS[int6_pr187_pack1]}" ]; then
  echo "ok quant6_eval_packed_equals_unpacked"
else
  echo "FAIL quant6_eval_packed_equals_unpacked: '${LOSS[int6_pr187_pack0]}' vs '${LOSS[int6_pr187_pack1]}'"
fi
expect_error quant6_gptq_needs_train_shards "int6_gptq calibration needs the training shards" \
  env QUANT_SCHEME=int6_gptq DATA_PATH="$TMP/none" "$PG" export "$TMP/in.safetensors" "$TMP/none.pgolf"
if [ -e "$TMP/none.pgolf" ]; then echo "FAIL quant6_gptq_no_output: artifact written"; else echo "ok quant6_gptq_no_output"; fi
