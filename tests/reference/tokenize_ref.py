"""tokenize_ref.py: the shards the challenge's exporter (data/download_hf_docs_and_tokenize.py,
export_shards) would write for the given input, computed with Python SentencePiece 0.1.97, plus
pgolf tokenize's documented policies where the exporter has none (it would crash instead):

  - every document is BOS + sp.encode(text) (no EOS, ids as the exporter's `tok.encode`);
  - the first VAL_DOCS documents are validation, the rest train; each split is cut into shards of
    SHARD_TOKENS tokens (documents continue across shard ends), the last shard of a split holds the
    rest; names fineweb_{val,train}_NNNNNN.bin; header = 256 little-endian int32 (20240520, 1,
    token count, 0...), then uint16 tokens; a split without tokens has no file;
  - input read as the exporter reads it: UTF-8 text with universal newlines (`for line in f`),
    gzip / xz / zstd recognised by their magic bytes, several inputs read in order;
  - JSONL: json.loads(line)[KEY]; lines holding only ASCII whitespace (" \\t\\r\\n\\f\\v", pgolf's
    definition) are ignored (pgolf's policy; the exporter's json.loads would fail on them);
  - --format text: a document is a run of non-blank lines joined with "\\n" (pgolf's plain-text format);
  - --fix-utf8: the bytes are decoded with errors="replace" (pgolf --fix-utf8), else strictly;
  - --skip-empty: documents with no ids are dropped (pgolf --skip-empty), else kept as a lone BOS;
  - --max-docs N: stop after N documents.
Written from the exporter's source for pgolf's tokenize tests (tests/cli/tokenize.sh) and used as an
independent reference: it shares no code with pgolf. Prints the number of documents.

usage: /usr/bin/python3 tokenize_ref.py MODEL OUT_DIR VAL_DOCS SHARD_TOKENS [--format jsonl|text]
           [--text-key KEY] [--fix-utf8] [--skip-empty] [--max-docs N] INPUT...   ('-' = stdin)
"""
import gzip
import io
import json
import lzma
import os
import struct
import sys

import sentencepiece as spm

WS = " \t\r\n\f\v"


def open_binary(path):
    if path == "-":
        data = sys.stdin.buffer.read()
        magic = data[:6]
        raw = io.BytesIO(data)
    else:
        with open(path, "rb") as f:
            magic = f.read(6)
        raw = open(path, "rb")
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, "rb")
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def documents(path, fmt, key, fix_utf8):
    with io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", errors="replace" if fix_utf8 else "strict") as f:
        if fmt == "text":
            para = []
            for line in f:
                line = line.rstrip("\n")
                if line.strip(WS):
                    para.append(line)
                elif para:
                    yield "\n".join(para)
                    para = []
            if para:
                yield "\n".join(para)
        else:
            for line in f:
                if not line.strip(WS):
                    continue
                yield json.loads(line)[key]


def main():
    args = sys.argv[1:]
    model, out, val_docs, shard_tokens = args[:4]
    val_docs, shard_tokens = int(val_docs), int(shard_tokens)
    fmt, key, fix_utf8, skip_empty, max_docs, inputs = None, "text", False, False, -1, []
    i = 4
    while i < len(args):
        a = args[i]
        if a == "--format":
            fmt, i = args[i + 1], i + 1
        elif a == "--text-key":
            key, i = args[i + 1], i + 1
        elif a == "--fix-utf8":
            fix_utf8 = True
        elif a == "--skip-empty":
            skip_empty = True
        elif a == "--max-docs":
            max_docs, i = int(args[i + 1]), i + 1
        else:
            inputs.append(a)
        i += 1
    sp = spm.SentencePieceProcessor(model_file=model)
    bos = sp.bos_id()
    streams = {"val": [], "train": []}
    ndocs = 0
    for path in inputs:
        f = fmt
        if f is None:
            base = path
            for suf in (".gz", ".xz", ".zst", ".zstd"):
                if base.endswith(suf):
                    base = base[: -len(suf)]
            f = "text" if path != "-" and (base.endswith(".txt") or base.endswith(".text")) else "jsonl"
        for text in documents(path, f, key, fix_utf8):
            if 0 <= max_docs <= ndocs:
                break
            ids = sp.encode(text, out_type=int)
            if skip_empty and not ids:
                continue
            split = "val" if ndocs < val_docs else "train"
            streams[split].append(bos)
            streams[split].extend(ids)
            ndocs += 1
    os.makedirs(out, exist_ok=True)
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
