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
# preset -> PR head and the record script in it (docs/seeds.md)
REFS="baseline:HEAD:train_gpt.py
pr65:refs/pull/65/head:records/track_10min_16mb/2026-03-19_smeargate_orthoinit_muonwd/train_gpt_v5.py
pr315:refs/pull/315/head:records/track_10min_16mb/2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248/train_gpt.py
pr453:refs/pull/453/head:records/track_10min_16mb/2026-03-22_11L_XSA4_EMA_PartialRoPE_LNScale_Entropy_LongDocTTT/train_gpt.py
pr1311:refs/pull/1311/head:records/track_10min_16mb/2026-04-03_11L_LeakyReLU2_EMA_LZMA_Int6/train_gpt.py
pr1392:refs/pull/1392/head:records/track_10min_16mb/2026-04-05_SP4096_DepthRecur_ParallelResid_Brotli/train_gpt.py
pr187:refs/pull/187/head:records/track_10min_16mb/2026-03-20_PreEnrich_EncoderRecurrence/train_gpt.py"
if [ -d "$MIRROR" ]; then
  while IFS=: read -r name ref path; do
    git --git-dir="$MIRROR" show "$ref:$path" > "$B/ref/$name.py" 2>/dev/null || rm -f "$B/ref/$name.py"
  done <<< "$REFS"
fi
du -sh "$B"; ls "$B/ref"
