#!/usr/bin/env bash
# setup.sh: make sure the Debian 12 packages pgolf needs are installed. As root it installs the
# missing ones itself; otherwise it prints the exact apt-get line and fails.
#   build:  OpenBLAS (OpenMP flavour), zlib, zstd, xz/lzma, brotli
#   tests:  python3-torch + python3-sentencepiece (the independent reference), python3-zstandard +
#           python3-brotli (codec interoperability), sentencepiece
#           (spm_train, for the embedded default tokenizer), curl + jq (the npm registry and its
#           JSON), xz-utils
#   plot:   gnuplot-nox (pgolf plot: PNG through pngcairo, SVG)
#   mpi:    libopenmpi-dev + openmpi-bin (mpirun: data parallelism, src/dist.c, tests/cli/mpi.sh)
#   fuzz:   clang-14 + libclang-rt-14-dev (libFuzzer, ASan, UBSan: make fuzz, tests/cli/fuzz_replay.sh)
set -euo pipefail
PKGS="libopenblas-openmp-dev zlib1g-dev libzstd-dev liblzma-dev libbrotli-dev
      python3 python3-torch python3-numpy python3-sentencepiece sentencepiece python3-zstandard python3-brotli
      curl ca-certificates xz-utils zstd gzip jq clang-14 libclang-rt-14-dev gnuplot-nox libopenmpi-dev openmpi-bin"
missing=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: missing Debian packages; run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
