#!/usr/bin/env bash
# tests/cuda_emu_core/run.sh [name-filter...]: runs tests/test_cuda.c's op tests on the CPU against
# src/cuda/ops_cuda.cu and matmul.cu (with attn.cu and ops_records.cu, which the table names)
# compiled as C++ for the host by cuB's emulator (tests/cuda_emu: each thread a fiber, barriers and
# warp shuffles as collectives, warps released in random order, shared memory starting as NaN), with
# cuBLAS/cuBLASLt computed from their descriptors (rt.cpp). It checks the kernels' index math,
# reductions, barriers and the column-major GEMM mappings without a GPU; not timing, the hardware's
# memory model or real races. CUDA_EMU_MODEL=1 also builds the whole-model test
# (cuda_model_step_matches_cpu: minutes emulated, so not by default; PG_CUDA_TEST_OPS_ONLY leaves it
# out). Needs `make BUILD=...` first (the CPU ops), g++ and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD="${BUILD:-build}"
E=tests/cuda_emu_core
O="$BUILD/cuda_emu_core"
FL="${CUDA_EMU_FLAGS:-}"
mkdir -p "$O"
for f in ops_cuda matmul attn ops_records; do python3 tests/cuda_emu/transform.py src/cuda/$f.cu "$O/$f.cpp" 2>/dev/null; done
cp $E/cuda_common.cuh "$O/"
mkdir -p "$O/cuda_emu" && cp tests/cuda_emu/cuda_common.cuh tests/cuda_emu/emu.h "$O/cuda_emu/"
CXX="g++ -std=c++17 -O1 -g -ffp-contract=off -fno-strict-aliasing -Itests/cuda_emu -I$O -Isrc -Isrc/cuda -Wno-unknown-pragmas $FL"
for f in ops_cuda matmul attn ops_records; do $CXX -c -o "$O/$f.o" "$O/$f.cpp"; done
$CXX -c -o "$O/rt.o" $E/rt.cpp
$CXX -c -o "$O/emu.o" tests/cuda_emu/emu.cpp
CC="gcc -std=c11 -O1 -g -D_GNU_SOURCE -Isrc -Itests -I/usr/include/x86_64-linux-gnu/openblas-openmp $FL"
MODEL="${CUDA_EMU_MODEL:-0}"
B="$BUILD/src"
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
REN="-Dpg_cuda_ops=pg_cuda_ops_core -Dpg_cuda_available=pg_cuda_available_core"
$CC -c -o "$O/test_main.o" tests/test_main.c
if [ "$MODEL" = 1 ]; then
  # the model, optimizer and their dependencies from $BUILD; dist.c built without MPI (one process)
  # and backend.c naming the emulated table; emu.cpp's stub of name_matches_patterns made local
  # (model.o has the real one)
  $CC -DPGOLF_CUDA=1 $REN -c -o "$O/test_cuda.o" tests/test_cuda.c
  $CC -DPGOLF_CUDA=1 $REN -c -o "$O/backend.o" src/backend.c
  $CC -c -o "$O/dist.o" src/dist.c
  objcopy --localize-symbol=name_matches_patterns "$O/emu.o"
  LIBS=$(ls $B/*.o $B/cpu/*.o | grep -v '/main.o$\|/backend.o$\|/dist.o$')
  EXTRA="$O/backend.o $O/dist.o $BUILD/tests/test_common.o $BUILD/tests/ref_common.o $BUILD/src_bundle.o"
else
  $CC -DPGOLF_CUDA=1 -DPG_CUDA_TEST_OPS_ONLY $REN -c -o "$O/test_cuda.o" tests/test_cuda.c
  LIBS="$B/cpu/ops_cpu.o $B/common.o $B/quant.o $B/statedict.o $B/json.o $B/codec.o"
  EXTRA=
fi
g++ $FL -o "$O/emu_tests" "$O"/ops_cuda.o "$O"/matmul.o "$O"/attn.o "$O"/ops_records.o "$O"/rt.o "$O"/emu.o \
    "$O"/test_cuda.o "$O"/test_main.o $LIBS $EXTRA -L$BLAS -Wl,-rpath,$BLAS -lopenblas -lz -lzstd -llzma -lbrotlienc \
    -lbrotlidec -lm -fopenmp
if [ $# -eq 0 ]; then set -- cuda_; fi
OMP_NUM_THREADS=1 "$O/emu_tests" "$@"
