"""tokenize_py.py: the Python side of bench/bench_tokenize.sh. Does the work `pgolf tokenize --val-docs 0
--shard-tokens <large>` does, the way the challenge's exporter (data/download_hf_docs_and_tokenize.py)
does it: reads a JSONL file, json.loads each line, encodes the "text" of batches of 1,024 documents
with SentencePiece's batch encode on THREADS threads (`sp.encode(texts, out_type=int,
num_threads=THREADS)`, the exporter's encode_batch), prepends BOS to each document and writes the
ids as one shard in the challenge format (256 int32 header, uint16 tokens), so its output can be
compared byte for byte with pgolf's. Prints "docs tokens seconds" (seconds from after the model is
loaded to the end, for information; the bench times the whole process).

usage: /usr/bin/python3 bench/tokenize_py.py MODEL INPUT.jsonl OUT.bin THREADS
"""
import json
import sys
import time

import numpy as np
import sentencepiece as spm

BATCH = 1024


def main():
    model, inp, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sp = spm.SentencePieceProcessor(model_file=model)
    bos = sp.bos_id()
    t0 = time.perf_counter()
    chunks, ndocs, ntok = [], 0, 0

    def flush(texts):
        nonlocal ndocs, ntok
        for ids in sp.encode(texts, out_type=int, num_threads=threads):
            a = np.empty(len(ids) + 1, dtype="<u2")
            a[0] = bos
            a[1:] = ids
            chunks.append(a)
            ndocs += 1
            ntok += len(a)

    texts = []
    with open(inp, "r", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == BATCH:
                flush(texts)
                texts = []
    if texts:
        flush(texts)
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, ntok
    with open(out, "wb") as g:
        g.write(header.tobytes())
        for a in chunks:
            g.write(a.tobytes())
    print(ndocs, ntok, "%.3f" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
