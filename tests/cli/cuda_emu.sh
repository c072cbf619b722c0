#!/usr/bin/env bash
# cuda_emu.sh: the CUDA record-technique and attention kernels (src/cuda/attn.cu, ops_records.cu)
# run on the CPU through the emulator of tests/cuda_emu against the CPU ops: tests/test_cuda_records.c
# unchanged, each of its tests reported as cuda_emu/<name>. Checks the kernels' logic without a GPU
# (about 25 s). Skipped without g++ or python3, or when the build dir lacks the CPU objects.
cd "$(dirname "$0")/../.."
BUILD_DIR=$(dirname "${PGOLF_BIN:-build/pgolf}")
if ! command -v g++ >/dev/null || ! command -v python3 >/dev/null; then
  echo "SKIP cuda_emu (skipped: g++ or python3 absent)"; exit 0
fi
if [ ! -f "$BUILD_DIR/src/cpu/ops_cpu.o" ]; then
  echo "SKIP cuda_emu (skipped: $BUILD_DIR/src/cpu/ops_cpu.o absent; run make first)"; exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! BUILD="$BUILD_DIR" bash tests/cuda_emu/run.sh >"$log" 2>&1; then
  if ! grep -q '^\(ok\|FAIL\) ' "$log"; then
    echo "FAIL cuda_emu/build: $(grep -m1 -i 'error' "$log" || tail -n1 "$log")"; exit 0
  fi
fi
sed -n 's/^ok \(.*\)$/ok cuda_emu\/\1/p; s/^FAIL \([^:]*\):/FAIL cuda_emu\/\1:/p; s/^SKIP \(.*\)$/SKIP cuda_emu\/\1/p' "$log"
grep -q '^ok ' "$log" || echo "FAIL cuda_emu: no test ran: $(tail -n1 "$log")"
