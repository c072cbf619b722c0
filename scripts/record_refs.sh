#!/usr/bin/env bash
# record_refs.sh DEST [MIRROR_GIT_DIR]: writes the challenge's reference scripts, train_gpt.py and
# the record script of each preset (DEST/<preset>.py), from a local mirror of openai/parameter-golf
# (default /work/.mirror/openai+parameter-golf/repo). DEST must be git-ignored: the scripts are read
# and run side by side (bench/gpu_session.sh, tests/reference/xcheck.py), never committed.
set -euo pipefail
DEST="${1:?usage: record_refs.sh DEST [MIRROR_GIT_DIR]}"
MIRROR="${2:-/work/.mirror/openai+parameter-golf/repo}"
[ -d "$MIRROR" ] || { echo "record_refs: $MIRROR: no such mirror" >&2; exit 1; }
mkdir -p "$DEST"
# preset -> PR head and the record script in it (docs/seeds.md, the specs' provenance tables)
# (PR #187: the commit of its logged run, spec pr1311-pr1392-pr187.md §0; its PR head has moved on
# to a later, different submission)
REFS="baseline:HEAD:train_gpt.py
pr65:refs/pull/65/head:records/track_10min_16mb/2026-03-19_smeargate_orthoinit_muonwd/train_gpt_v5.py
pr315:refs/pull/315/head:records/track_10min_16mb/2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248/train_gpt.py
pr453:refs/pull/453/head:records/track_10min_16mb/2026-03-22_11L_XSA4_EMA_PartialRoPE_LNScale_Entropy_LongDocTTT/train_gpt.py
pr1311:refs/pull/1311/head:records/track_10min_16mb/2026-04-03_11L_LeakyReLU2_EMA_LZMA_Int6/train_gpt.py
pr1392:refs/pull/1392/head:records/track_10min_16mb/2026-04-05_SP4096_DepthRecur_ParallelResid_Brotli/train_gpt.py
pr187:75eb80f7927ff48b3386147fe632957cb9888baa:records/track_10min_16mb/2026-03-20_PreEnrich_EncoderRecurrence/train_gpt.py"
while IFS=: read -r name ref path; do
  if ! git --git-dir="$MIRROR" show "$ref:$path" > "$DEST/$name.py" 2>/dev/null; then
    rm -f "$DEST/$name.py"; echo "record_refs: $ref:$path not in $MIRROR" >&2
  fi
done <<< "$REFS"
# PR #453's record folder also needs its codec module, which its script imports
git --git-dir="$MIRROR" show "refs/pull/453/head:records/track_10min_16mb/2026-03-22_11L_XSA4_EMA_PartialRoPE_LNScale_Entropy_LongDocTTT/custom_entropy_codec.py" \
  > "$DEST/custom_entropy_codec.py" 2>/dev/null || rm -f "$DEST/custom_entropy_codec.py"
