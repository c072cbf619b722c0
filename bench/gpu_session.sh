#!/usr/bin/env bash
# gpu_session.sh: what a session with a GPU machine runs, in few calls (device time is scarce).
# From the repository root on the GPU machine, with .devbundle/ carried along (scripts/gpu_bundle.sh
# makes it here), one stage per call (each call is limited to 10 minutes; the build dir stays
# between calls on a warm machine):
#   bash bench/gpu_session.sh build      # unpack the dependencies under /opt/pgdeps, build with CUDA
#   bash bench/gpu_session.sh tests      # the CUDA tests: every op against the CPU op, a training step,
#                                        # then tests/cli/cuda_train.sh (training on both backends)
#   bash bench/gpu_session.sh bench [baseline pr1311 ...]   # bench/bench_cuda.sh against PyTorch
# Each stage's log goes to $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
D=/opt/pgdeps
if [ ! -d $D/usr ]; then
  mkdir -p $D
  for f in .devbundle/debs/*.deb; do dpkg -x "$f" $D; done
fi
export CPATH="$D/usr/include:$D/usr/include/x86_64-linux-gnu${CPATH:+:$CPATH}"
export LIBRARY_PATH="$D/usr/lib/x86_64-linux-gnu:$D/usr/lib/x86_64-linux-gnu/openblas-openmp${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$D/usr/lib/x86_64-linux-gnu:$D/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/usr/local/cuda/bin:$PATH"
export BUILD=build-gpu
stage="${1:-build}"; shift || true
case "$stage" in
build)
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv | tee "$OUT/gpu.txt"
  timeout 540 make -j16 BUILD=$BUILD MPI=0 CUDA=1 \
    BLAS_INC=$D/usr/include/x86_64-linux-gnu/openblas-openmp BLAS_LIB=$D/usr/lib/x86_64-linux-gnu/openblas-openmp all \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "gpu_session: build failed"; exit 1; }
  echo "gpu_session: build ok" ;;
tests) # the C op/step/decode tests, the training runs on both backends (tests/cli/cuda_train.sh),
  # then `pgolf sample --backend cuda` end to end (tests/cli/sample.sh)
  OMP_NUM_THREADS=16 timeout 240 "./$BUILD/pgolf_tests" cuda 2>&1 | tee "$OUT/tests.log" | tail -40
  PGOLF_BIN="$PWD/$BUILD/pgolf" PGOLF_SHARED="$PWD/.devbundle/shared" OMP_NUM_THREADS=16 timeout 300 \
    bash tests/cli/cuda_train.sh 2>&1 | tee -a "$OUT/tests.log"
  PGOLF_BIN="$PWD/$BUILD/pgolf" PGOLF_SHARED="$PWD/.devbundle/shared" OMP_NUM_THREADS=16 timeout 120 \
    bash tests/cli/sample.sh 2>&1 | tee -a "$OUT/tests.log" | grep -v '^ok' ;;
bench)
  timeout 570 bash bench/bench_cuda.sh "$@" 2>&1 | tee "$OUT/bench.log" | tail -40 ;;
*) echo "usage: gpu_session.sh build|tests|bench [configs...]" >&2; exit 2 ;;
esac
