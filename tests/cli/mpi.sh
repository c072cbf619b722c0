#!/usr/bin/env bash
# mpi.sh: data parallelism on the CPU under mpirun (src/dist.c, docs/distributed.md).
#   - a step's gradient sums and clipping (overlapped or not, the summed gradient clipped or each
#     rank's own under PGOLF_CLIP_LOCAL) equal those computed from every rank's own gradient
#     (tests/test_dist.c, `mpirun -np 2 pgolf_tests dist_`);
#   - `mpirun -np 1` (every collective on one rank) gives a plain run's bits;
#   - 2 and 4 ranks train the same model as 1 rank for the same global batch: the train_loss and
#     val lines agree to the printed digits (tolerance 2e-4), every fp32 weight to 1e-4 of its
#     tensor's largest magnitude, bf16 weights in at most 1% of their values by at most one bf16 step
#     at the tensor's largest magnitude (2^-7 of it), the
#     roundtrip val_bpb to 1e-4 (fp32 reduction order is the only difference);
#   - only rank 0 writes the log and the artifact; every rank takes rank 0's RUN_ID;
#   - the gradient sums overlapped with the backward (PGOLF_GRAD_OVERLAP=1, each block's sums started
#     as the backward finishes it) give the bits of the sums started after the backward (=0), on 2
#     ranks (a sum of two is exact in any order), for the baseline and for the record forms that
#     reuse a block's parameters or keep them out of the blocks: depth recurrence, parallel
#     residuals and value embeddings (PR #1392), encoder recurrence, pre-enrichment and the Muon
#     bigram table (PR #187), the two-lane blocks (PR #1289);
#   - `pgolf eval` split over 2 ranks gives the single-process val_bpb (to 2e-8: double sums);
#   - a 2-rank run stopped by SIGUSR1 to mpirun writes a checkpoint (the Muon buffers gathered from
#     the rank that keeps them) that resumes on 1 rank to the weights of an uninterrupted 1-rank run;
#   - failures end every rank: a bad shard seen by one rank, a configuration that differs between
#     ranks, a diverged loss, a rank killed with SIGKILL, WORLD_SIZE without a launcher, RANK
#     disagreeing with MPI. Each must end within 120 s (a hang is a failure), non-zero.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
PY=/usr/bin/python3
NAMES="grads_sum_and_clip one_rank_bitwise two_ranks_match_one four_ranks_match_one overlap_bitwise_baseline overlap_bitwise_pr1392
       overlap_bitwise_pr187 overlap_bitwise_lanes rank0_writes eval_split resume_other_world bad_shard_one_rank
       config_mismatch nan_all_ranks killed_rank no_launcher rank_disagrees"
skip_all() { for n in $NAMES; do echo "SKIP mpi/$n (skipped: $1)"; done; exit 0; }
[ -x "$PY" ] && [ -e "$TOK" ] || skip_all "../shared/data absent"
command -v mpirun >/dev/null || skip_all "mpirun absent (Debian: openmpi-bin)"
ldd "$PG" | grep -q libmpi || skip_all "pgolf built without MPI (Debian: libopenmpi-dev)"
# Open MPI in a container, as root, on few cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
MPIRUN="timeout 120 mpirun"

mkdir -p "$TMP/d" "$TMP/bad"
"$PY" tests/mkshard.py synth 11 "$TMP/d/fineweb_val_000000.bin:4097" "$TMP/d/fineweb_train_000000.bin:9000" \
  "$TMP/d/fineweb_train_000001.bin:9000" "$TMP/bad/fineweb_val_000000.bin:4097" "$TMP/bad/fineweb_train_000000.bin:9000:12345"
cat > "$TMP/cmp.py" <<'PY'
# compare two safetensors files (tolerances: see the top of this file; a third argument "exact":
# every tensor bit-identical)
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; raw = b[8 + n + s:8 + n + e]
        if v["dtype"] == "F32": out[k] = ("f32", np.frombuffer(raw, np.float32).astype(np.float64))
        elif v["dtype"] == "BF16":
            out[k] = ("bf16", (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys(): sys.exit("tensor names differ")
if len(sys.argv) > 3 and sys.argv[3] == "exact":
    diff = [k for k in a if not np.array_equal(a[k][1], b[k][1])]
    if diff: sys.exit("%d tensors differ (%s first, by up to %.2e)" % (len(diff), diff[0], np.abs(a[diff[0]][1] - b[diff[0]][1]).max()))
    sys.exit(0)
for k in a:
    kind, x = a[k]; y = b[k][1]
    if kind == "f32":
        d = np.abs(x - y).max() / max(np.abs(x).max(), 1e-3)
        if d > 1e-4: sys.exit("%s differs by %.2e of its max" % (k, d))
    else:  # bf16: a last-bit flip of a rounding (at most one step at the tensor's largest values), rarely
        d = np.abs(x - y)
        if d.max() > np.abs(x).max() * 2.0 ** -7 or (d > 0).mean() > 0.01:
            sys.exit("%s: %d of %d bf16 values differ, by up to %.2e" % (k, (d > 0).sum(), d.size, d.max()))
PY
export DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 NUM_LAYERS=3 MODEL_DIM=64 NUM_HEADS=4 \
  NUM_KV_HEADS=2 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 VAL_BATCH_SIZE=2048 ITERATIONS=12 \
  WARMDOWN_ITERS=5 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=2 VAL_LOSS_EVERY=6 TRAIN_LOG_EVERY=1 \
  GRAD_CLIP_NORM=1.0 EVAL_STRIDE=32 PGOLF_NON_RECORD=1 OMP_NUM_THREADS=1 PGOLF_LOG_DIR="$TMP/logs"
lines() { grep -E '^step:[0-9]+/[0-9]+ (train_loss|val_loss)|^final_.*_exact' "$1" | sed -E 's/ (train_time|eval_time):.*//'; }
# same_numbers A B TOL: the log lines agree field by field, numbers within TOL
same_numbers() {
  "$PY" - "$1" "$2" "$3" <<'PY'
import re, sys
a = open(sys.argv[1]).read().split("\n"); b = open(sys.argv[2]).read().split("\n"); tol = float(sys.argv[3])
if len(a) != len(b) or len(a) < 5: sys.exit("%d vs %d lines" % (len(a), len(b)))
num = re.compile(r"-?\d+\.\d+")
for x, y in zip(a, b):
    if num.sub("#", x) != num.sub("#", y): sys.exit("line differs: %s | %s" % (x, y))
    for u, v in zip(num.findall(x), num.findall(y)):
        if abs(float(u) - float(v)) > tol: sys.exit("%s vs %s: %s | %s" % (u, v, x, y))
PY
}

# the sums and the clipping against every rank's own gradients (tests/test_dist.c)
TESTS_BIN="${PGOLF_TESTS_BIN:-$(dirname "$PG")/pgolf_tests}"
if [ ! -x "$TESTS_BIN" ]; then
  echo "FAIL mpi/grads_sum_and_clip: $TESTS_BIN not built"
elif $MPIRUN -np 2 "$TESTS_BIN" dist_ > "$TMP/dist.out" 2>&1 && [ "$(grep -c '^ok dist_grads_sum_and_clip$' "$TMP/dist.out")" = 2 ]; then
  echo "ok mpi/grads_sum_and_clip"
else
  echo "FAIL mpi/grads_sum_and_clip: $(grep -m1 -E 'FAIL|SKIP|error' "$TMP/dist.out")"
fi

RUN_ID=one PGOLF_OUT_DIR="$TMP/one" "$PG" train > "$TMP/one.out" 2>&1 || skip_all "the 1-rank run failed: $(tail -1 "$TMP/one.out")"
lines "$TMP/one.out" > "$TMP/one.lines"

# `mpirun -np 1` runs every collective on one rank: the same bits as a plain run
if RUN_ID=r1 PGOLF_OUT_DIR="$TMP/r1" $MPIRUN -np 1 "$PG" train > "$TMP/r1.out" 2>&1 \
   && cmp -s "$TMP/one/final_model.safetensors" "$TMP/r1/final_model.safetensors" \
   && [ "$(lines "$TMP/r1.out")" = "$(cat "$TMP/one.lines")" ]; then
  echo "ok mpi/one_rank_bitwise"
else
  echo "FAIL mpi/one_rank_bitwise: mpirun -np 1 differs from a plain run: $(tail -1 "$TMP/r1.out")"
fi

for np in 2 4; do
  name=$([ $np = 2 ] && echo two_ranks_match_one || echo four_ranks_match_one)
  if ! RUN_ID=r$np PGOLF_OUT_DIR="$TMP/r$np" $MPIRUN -np $np "$PG" train > "$TMP/r$np.out" 2> "$TMP/r$np.err"; then
    echo "FAIL mpi/$name: $(grep -m1 'error' "$TMP/r$np.err")"; continue
  fi
  lines "$TMP/r$np.out" > "$TMP/r$np.lines"
  if ! grep -q "^world_size:$np grad_accum_steps:$((8 / np))$" "$TMP/r$np.out"; then
    echo "FAIL mpi/$name: no world_size:$np line"
  elif ! why=$(same_numbers "$TMP/one.lines" "$TMP/r$np.lines" 2e-4 2>&1); then
    echo "FAIL mpi/$name: $why"
  elif ! why=$("$PY" "$TMP/cmp.py" "$TMP/one/final_model.safetensors" "$TMP/r$np/final_model.safetensors" 2>&1); then
    echo "FAIL mpi/$name: final weights: $why"
  elif ! why=$(same_numbers <(grep roundtrip_exact "$TMP/one.lines"; seq 5) <(grep roundtrip_exact "$TMP/r$np.lines"; seq 5) 1e-4 2>&1); then
    echo "FAIL mpi/$name: roundtrip: $why"
  else
    echo "ok mpi/$name"
  fi
done

# the overlapped gradient sums: the bits of the sums after the backward (2 ranks, 6 steps)
overlap() { # overlap NAME PRESET-FILE|"" ENV...
  local name=$1 preset=$2; shift 2
  for ov in 0 1; do
    env "$@" ITERATIONS=6 WARMDOWN_ITERS=3 VAL_LOSS_EVERY=0 PGOLF_GRAD_OVERLAP=$ov RUN_ID=ov$ov$name \
      PGOLF_OUT_DIR="$TMP/ov$ov$name" $MPIRUN -np 2 "$PG" train $preset > "$TMP/ov$ov$name.out" 2>&1 \
      || { echo "FAIL mpi/overlap_bitwise_$name: PGOLF_GRAD_OVERLAP=$ov: $(grep -m1 error "$TMP/ov$ov$name.out")"; return; }
  done
  if ! why=$("$PY" "$TMP/cmp.py" "$TMP/ov0$name/final_model.safetensors" "$TMP/ov1$name/final_model.safetensors" exact 2>&1); then
    echo "FAIL mpi/overlap_bitwise_$name: the overlapped sums give other weights: $why"
  elif [ "$(lines "$TMP/ov0$name.out")" != "$(lines "$TMP/ov1$name.out")" ]; then
    echo "FAIL mpi/overlap_bitwise_$name: the train_loss lines differ"
  else
    echo "ok mpi/overlap_bitwise_$name"
  fi
}
overlap baseline ""
overlap pr1392 configs/pr1392.env PGOLF_CLIP_LOCAL=0 EVAL_SEQ_LEN=64 NUM_LAYERS=4 ROPE_DIMS=8 VE_LAYERS=2,3 XSA_LAST_N=4 PARALLEL_START_LAYER=3 RECUR_LAYERS=1 \
  RECUR_START_STEP=2 GPTQ_CALIB_BATCHES=4
overlap pr187 configs/pr187.env EVAL_SEQ_LEN=64 NUM_LAYERS=4 PGOLF_PRE_ENRICH=96 XSA_LAST_N=2
overlap lanes "" NUM_LAYERS=4 PARALLEL_START_LAYER=2 PGOLF_PARALLEL_MODE=lanes1289

# rank 0 alone writes: one log (rank 0's generated RUN_ID), one artifact; no stray files
rm -rf "$TMP/logs0" "$TMP/w"
if PGOLF_LOG_DIR="$TMP/logs0" PGOLF_OUT_DIR="$TMP/w" ITERATIONS=2 $MPIRUN -np 2 "$PG" train > "$TMP/w.out" 2>&1 \
   && [ "$(ls "$TMP/logs0" | wc -l)" = 1 ] && [ "$(ls -A "$TMP/w" | sort | tr '\n' ' ')" = "final_model.int8.pgolf final_model.safetensors " ] \
   && [ "$(grep -c '^model_params:' "$TMP/w.out")" = 1 ]; then
  echo "ok mpi/rank0_writes"
else
  echo "FAIL mpi/rank0_writes: logs: $(ls "$TMP/logs0" 2>&1 | tr '\n' ' ') out: $(ls -A "$TMP/w" 2>&1 | tr '\n' ' ')"
fi

# the evaluation split over ranks: the same sums
"$PG" eval "$TMP/one/final_model.int8.pgolf" > "$TMP/e1.out" 2>&1
$MPIRUN -np 2 "$PG" eval "$TMP/one/final_model.int8.pgolf" > "$TMP/e2.out" 2> "$TMP/e2.err"
if ! grep -q roundtrip_exact "$TMP/e2.out" || [ "$(grep -c roundtrip_exact "$TMP/e2.out")" != 1 ]; then
  echo "FAIL mpi/eval_split: $(tail -1 "$TMP/e2.err")"
elif why=$(same_numbers <(grep _exact "$TMP/e1.out"; seq 5) <(grep _exact "$TMP/e2.out"; seq 5) 2e-8 2>&1); then
  echo "ok mpi/eval_split"
else
  echo "FAIL mpi/eval_split: $why"
fi

# a 2-rank run stopped by SIGUSR1 to mpirun (passed on to every rank; the ranks agree on the step,
# rank 0 writes the checkpoint with the Muon buffers gathered from their ranks), resumed by one
# process, ends where an uninterrupted 1-rank run ends
RUN_ID=ref40 PGOLF_OUT_DIR="$TMP/ref40" ITERATIONS=40 "$PG" train > "$TMP/ref40.out" 2>&1
ITERATIONS=40 RUN_ID=ck PGOLF_OUT_DIR="$TMP/ck" mpirun -np 2 "$PG" train > "$TMP/ck.out" 2>&1 &
mp=$!
( sleep 120; kill -9 $mp 2>/dev/null ) & watchdog=$!
for _ in $(seq 1 600); do grep -q 'step:3/40 train_loss' "$TMP/ck.out" 2>/dev/null && break; sleep 0.05; done
kill -USR1 $mp; wait $mp
kill $watchdog 2>/dev/null; wait $watchdog 2>/dev/null
k=$(grep -o 'interrupted:signal 10 at step:[0-9]*' "$TMP/ck.out" | grep -o '[0-9]*$')
if [ -z "$k" ] || [ ! -f "$TMP/ck/ck.ckpt" ]; then
  echo "FAIL mpi/resume_other_world: no checkpoint after SIGUSR1: $(tail -1 "$TMP/ck.out")"
elif RUN_ID=res RESUME="$TMP/ck/ck.ckpt" ITERATIONS=40 PGOLF_OUT_DIR="$TMP/res" "$PG" train > "$TMP/res.out" 2>&1 \
     && why=$("$PY" "$TMP/cmp.py" "$TMP/ref40/final_model.safetensors" "$TMP/res/final_model.safetensors" 2>&1); then
  echo "ok mpi/resume_other_world"
else
  echo "FAIL mpi/resume_other_world: resumed at step $k: ${why:-$(tail -1 "$TMP/res.out")}"
fi

# expect_abort NAME PATTERN CMD...: CMD ends within the timeout, non-zero, stderr has PATTERN
expect_abort() {
  local name=$1 pat=$2; shift 2
  "$@" > "$TMP/ab.out" 2> "$TMP/ab.err"; local rc=$?
  if [ $rc = 124 ]; then echo "FAIL mpi/$name: hung (killed by the timeout)"
  elif [ $rc = 0 ]; then echo "FAIL mpi/$name: exit status 0"
  elif ! grep -q -- "$pat" "$TMP/ab.err"; then echo "FAIL mpi/$name: stderr lacks '$pat': $(grep -m2 . "$TMP/ab.err")"
  else echo "ok mpi/$name"; fi
}
# rank 1 alone reads a shard with a bad magic number: its error ends rank 0 too
expect_abort bad_shard_one_rank "pgolf: error: \[rank 1/2\] .*bad/fineweb_train_000000.bin" \
  $MPIRUN -np 1 "$PG" train : -np 1 env DATA_PATH="$TMP/bad" "$PG" train
expect_abort config_mismatch "\[rank 1/2\] this rank's configuration differs from rank 0's: MATRIX_LR=0.5 here, MATRIX_LR=0.25 on rank 0" \
  $MPIRUN -np 1 env MATRIX_LR=0.25 "$PG" train : -np 1 env MATRIX_LR=0.5 "$PG" train
MATRIX_LR=1e5 TIED_EMBED_LR=1e5 SCALAR_LR=1e5 GRAD_CLIP_NORM=0 WARMUP_STEPS=0 \
  expect_abort nan_all_ranks "rank 0/2\] train_loss is .*nan at step [0-9]*: training diverged" $MPIRUN -np 2 "$PG" train
if [ "$(grep -c 'pgolf: error' "$TMP/ab.err")" != 1 ]; then echo "FAIL mpi/nan_all_ranks: reported more than once"; fi

# SIGKILL to rank 1 in the middle of training: mpirun ends the job
ITERATIONS=100000 RUN_ID=kill PGOLF_OUT_DIR="$TMP/kill" $MPIRUN -np 2 "$PG" train > "$TMP/kill.out" 2>&1 &
mp=$!
victim=""
for _ in $(seq 1 600); do
  if grep -q 'step:3/100000 train_loss' "$TMP/kill.out" 2>/dev/null; then
    for p in $(pgrep -f "$PG train"); do
      tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$p
    done
    break
  fi
  sleep 0.1
done
if [ -z "$victim" ]; then
  kill $mp 2>/dev/null; wait $mp 2>/dev/null
  echo "FAIL mpi/killed_rank: rank 1 not found"
else
  kill -9 "$victim"; wait $mp; rc=$?
  if [ $rc = 124 ]; then echo "FAIL mpi/killed_rank: hung after rank 1 died"
  elif [ $rc = 0 ]; then echo "FAIL mpi/killed_rank: exit status 0"
  else echo "ok mpi/killed_rank"; fi
fi

expect_error mpi/no_launcher "not started by an MPI launcher" env WORLD_SIZE=2 "$PG" train
expect_abort rank_disagrees "RANK=5 disagrees with MPI" $MPIRUN -np 2 env RANK=5 "$PG" train
