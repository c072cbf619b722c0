#!/usr/bin/env bash
# tests/cuda_emu/run.sh [name-filter...]: runs tests/test_cuda_records.c on the CPU against the
# kernels of src/cuda/attn.cu and src/cuda/ops_records.cu compiled as C++ for the host (emu.h: each
# thread of a block is a fiber; __syncthreads, warp shuffles, mma.sync m16n8k16 and ldmatrix
# .x4.trans are collectives over the live threads/lanes; shared memory starts as NaN). It checks the
# kernels' index math, tiling, masking, barriers and reductions without a GPU; it cannot check the
# hardware's fragment layouts (emu.cpp encodes those of the PTX ISA), timing or real races.
# Needs `make BUILD=...` first (the CPU ops come from $BUILD), g++ and python3; about 25 s for
# everything on one core; tests/cli/cuda_emu.sh runs it as part of tests/run.sh. CUDA_EMU_FLAGS adds
# compiler flags (-DPG_ATTN_MANUAL_TRANS: plain shared loads instead of ldmatrix; -fsanitize=address
# for bounds, with the shared memory beyond each launch's size poisoned).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD="${BUILD:-build}"
E=tests/cuda_emu
O="$BUILD/cuda_emu"
FL="${CUDA_EMU_FLAGS:-}"
mkdir -p "$O"
python3 $E/transform.py src/cuda/attn.cu "$O/attn.cpp"
python3 $E/transform.py src/cuda/ops_records.cu "$O/ops_records.cpp"
cp $E/cuda_common.cuh "$O/"
CXX="g++ -std=c++17 -O1 -g -ffp-contract=off -fno-strict-aliasing -I$E -I$O -Isrc -Isrc/cuda -Wno-unknown-pragmas $FL"
$CXX -c -o "$O/attn.o" "$O/attn.cpp"
$CXX -c -o "$O/ops_records.o" "$O/ops_records.cpp"
$CXX -c -o "$O/emu.o" $E/emu.cpp
CC="gcc -std=c11 -O1 -g -D_GNU_SOURCE -Isrc -Itests $FL"
$CC -DPGOLF_CUDA=1 -c -o "$O/test_cuda_records.o" tests/test_cuda_records.c
$CC -c -o "$O/test_main.o" tests/test_main.c
B="$BUILD/src"
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
g++ $FL -o "$O/emu_tests" "$O"/attn.o "$O"/ops_records.o "$O"/emu.o "$O"/test_cuda_records.o "$O"/test_main.o \
    $B/cpu/ops_cpu.o $B/common.o $B/quant.o $B/statedict.o $B/json.o $B/codec.o -L$BLAS -Wl,-rpath,$BLAS \
    -lopenblas -lz -lzstd -llzma -lbrotlienc -lbrotlidec -lm -fopenmp
if [ $# -eq 0 ]; then set -- cuda_records; fi
OMP_NUM_THREADS=1 "$O/emu_tests" "$@"
