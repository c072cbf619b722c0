#!/usr/bin/env bash
# cuda_emu.sh: the CUDA backend's kernels run on the CPU through the kernel emulator, against the
# CPU ops, without a GPU. Two harnesses, each test reported as <harness>/<name>:
#   cuda_emu       src/cuda/attn.cu and ops_records.cu with tests/test_cuda_records.c (about 25 s);
#   cuda_emu_core  src/cuda/ops_cuda.cu and matmul.cu (cuBLAS/cuBLASLt computed on the host from
#                  their descriptors) with tests/test_cuda.c: the op tests and the whole training step
#                  against the CPU backend (cuda_model_step_matches_cpu; about 2 minutes in all;
#                  CUDA_EMU_MODEL=0 leaves the step out).
# They check the kernels' logic, not the hardware. Skipped without g++ or python3, or when the build
# dir lacks the CPU objects.
cd "$(dirname "$0")/../.."
BUILD_DIR=$(dirname "${PGOLF_BIN:-build/pgolf}")
for h in cuda_emu cuda_emu_core; do
  if ! command -v g++ >/dev/null || ! command -v python3 >/dev/null; then
    echo "SKIP $h (skipped: g++ or python3 absent)"; continue
  fi
  if [ ! -f "$BUILD_DIR/src/cpu/ops_cpu.o" ]; then
    echo "SKIP $h (skipped: $BUILD_DIR/src/cpu/ops_cpu.o absent; run make first)"; continue
  fi
  log=$(mktemp)
  if ! CUDA_EMU_MODEL="${CUDA_EMU_MODEL:-1}" BUILD="$BUILD_DIR" bash tests/$h/run.sh >"$log" 2>&1 && ! grep -q '^\(ok\|FAIL\) ' "$log"; then
    echo "FAIL $h/build: $(grep -m1 -i 'error' "$log" || tail -n1 "$log")"; rm -f "$log"; continue
  fi
  sed -n "s/^ok \(.*\)\$/ok $h\/\1/p; s/^FAIL \([^:]*\):/FAIL $h\/\1:/p; s/^SKIP \(.*\)\$/SKIP $h\/\1/p" "$log"
  grep -q '^ok ' "$log" || echo "FAIL $h: no test ran: $(tail -n1 "$log")"
  rm -f "$log"
done
