#!/usr/bin/env bash
# gpu_bundle.sh: prepares .devbundle/ (git-ignored) for a run on a GPU machine that cannot reach
# any package registry (the device tool's machines): the Debian 12 build dependencies as .deb
# files (unpacked there under /opt/pgdeps by bench/gpu_session.sh, never into /), the SP1024 and SP4096
# tokenizers, the challenge_val tokens the GPU tests read (.devbundle/shared), and the challenge's reference scripts to run side by side (train_gpt.py and the
# record scripts of the presets, read from a local mirror of openai/parameter-golf; they are
# never committed). Usage: bash scripts/gpu_bundle.sh [MIRROR_GIT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR="${1:-/work/.mirror/openai+parameter-golf/repo}"
SHARED="${PGOLF_SHARED:-$(cd .. && pwd)/shared}"
B=.devbundle
rm -rf "$B"; mkdir -p "$B/debs" "$B/ref"
( cd "$B/debs" && apt-get download -q libopenblas-openmp-dev libopenblas0-openmp libopenblas-dev libgfortran5 \
    zlib1g-dev libzstd-dev liblzma-dev libbrotli-dev libbrotli1 >/dev/null 2>&1 ) \
  || { echo "gpu_bundle: apt-get download failed (needs the Debian registry)" >&2; exit 1; }
cp "$SHARED/data/tokenizers/fineweb_1024_bpe.model" "$SHARED/data/tokenizers/fineweb_4096_bpe.model" "$B/"
# what the GPU tests read from ../shared (PGOLF_SHARED=.devbundle/shared there)
mkdir -p "$B/shared/data/tokenizers" "$B/shared/data/challenge_val"
cp "$SHARED/data/tokenizers/fineweb_1024_bpe.model" "$B/shared/data/tokenizers/"
cp "$SHARED/data/challenge_val/fineweb_val_000000_sp1024_first131072.bin" "$B/shared/data/challenge_val/"
[ -d "$MIRROR" ] && bash scripts/record_refs.sh "$B/ref" "$MIRROR"
du -sh "$B"; ls "$B/ref"
