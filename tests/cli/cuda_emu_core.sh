#!/usr/bin/env bash
# cuda_emu_core.sh: the CUDA backend's core ops (src/cuda/ops_cuda.cu, matmul.cu) run on the CPU
# through tests/cuda_emu_core (cuB's kernel emulator plus host cuBLAS/cuBLASLt) against the CPU ops:
# tests/test_cuda.c's op tests, each reported as cuda_emu_core/<name>. Checks the kernels' logic and
# the GEMM mappings without a GPU (about 30 s on one core). Skipped without g++ or python3, or when
# the build dir lacks the CPU objects.
cd "$(dirname "$0")/../.."
BUILD_DIR=$(dirname "${PGOLF_BIN:-build/pgolf}")
if ! command -v g++ >/dev/null || ! command -v python3 >/dev/null; then
  echo "SKIP cuda_emu_core (skipped: g++ or python3 absent)"; exit 0
fi
if [ ! -f "$BUILD_DIR/src/cpu/ops_cpu.o" ]; then
  echo "SKIP cuda_emu_core (skipped: $BUILD_DIR/src/cpu/ops_cpu.o absent; run make first)"; exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! BUILD="$BUILD_DIR" bash tests/cuda_emu_core/run.sh >"$log" 2>&1; then
  if ! grep -q '^\(ok\|FAIL\) ' "$log"; then
    echo "FAIL cuda_emu_core/build: $(grep -m1 -i 'error' "$log" || tail -n1 "$log")"; exit 0
  fi
fi
sed -n 's/^ok \(.*\)$/ok cuda_emu_core\/\1/p; s/^FAIL \([^:]*\):/FAIL cuda_emu_core\/\1:/p; s/^SKIP \(.*\)$/SKIP cuda_emu_core\/\1/p' "$log"
grep -q '^ok ' "$log" || echo "FAIL cuda_emu_core: no test ran: $(tail -n1 "$log")"
