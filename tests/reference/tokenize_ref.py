"""tokenize_ref.py: the shards the challenge's exporter (data/download_hf_docs_and_tokenize.py,
export_shards) would write for a JSONL file, computed with Python SentencePiece: every document is
BOS + sp.encode(text) (no EOS); the first VAL_DOCS documents are validation; each split is cut into
shards of SHARD_TOKENS tokens (documents continue across shard ends); names fineweb_{val,train}_NNNNNN.bin.
Written from the exporter's description (spec section 1), for pgolf's tokenize tests.

usage: /usr/bin/python3 tokenize_ref.py MODEL INPUT.jsonl[.xz|.gz|.zst] OUT_DIR VAL_DOCS SHARD_TOKENS [SKIP_EMPTY]
"""
import gzip
import io
import json
import lzma
import os
import struct
import sys

import sentencepiece as spm


def open_text(path):
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        raw = gzip.open(path, "rb")
    elif magic[:6] == b"\xfd7zXZ\x00":
        raw = lzma.open(path, "rb")
    elif magic[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8")


def main():
    model, inp, out, val_docs, shard_tokens = sys.argv[1:6]
    skip_empty = len(sys.argv) > 6 and sys.argv[6] == "1"
    val_docs, shard_tokens = int(val_docs), int(shard_tokens)
    sp = spm.SentencePieceProcessor(model_file=model)
    bos = sp.bos_id()
    os.makedirs(out, exist_ok=True)
    streams = {"val": [], "train": []}
    ndocs = 0
    with open_text(inp) as f:
        for line in f:
            if not line.strip():
                continue
            ids = sp.encode(json.loads(line)["text"], out_type=int)
            if skip_empty and not ids:
                continue
            split = "val" if ndocs < val_docs else "train"
            streams[split].append(bos)
            streams[split].extend(ids)
            ndocs += 1
    for split, toks in streams.items():
        for k in range(0, len(toks), shard_tokens):
            chunk = toks[k : k + shard_tokens]
            hdr = [0] * 256
            hdr[0], hdr[1], hdr[2] = 20240520, 1, len(chunk)
            with open(os.path.join(out, "fineweb_%s_%06d.bin" % (split, k // shard_tokens)), "wb") as g:
                g.write(struct.pack("<256i", *hdr))
                g.write(struct.pack("<%dH" % len(chunk), *chunk))
    print(ndocs)


if __name__ == "__main__":
    main()
