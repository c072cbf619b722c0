#!/usr/bin/python3
"""spm_ref.py: SentencePiece 0.1.97 (Debian python3-sentencepiece) outputs for tests/test_spm.c.
Run with /usr/bin/python3. Everything is written to the file named on the command line, little
endian, and read back by the C test; nothing is stored in the repository.

  spm_ref.py vocab MODEL OUT
      header: u32 n, i32 unk_id, i32 bos_id, i32 eos_id, i32 pad_id
      per id: u8 kind (2 unknown, 3 control, 5 unused, 6 byte, 1 other), f32 score,
              u32 len + piece bytes (UTF-8)
      then the three tables of train_gpt.py's build_sentencepiece_luts (table size n):
              n x i16 base_bytes, n x u8 has_leading_space, n x u8 is_boundary_token
  spm_ref.py encode MODEL[,MODEL...] CORPUS OUT [--every K] [--digest] [--decode] [--jobs J]
      CORPUS: .jsonl or .jsonl.xz with a "text" field per line; documents i with i % K == 0.
      One pass over the corpus; the records of the k-th model go to OUT.k. Per document: u32 doc index, u32 text bytes, u32 n_ids, then either the ids (n x i32) or,
      with --digest, u32 crc32(ids as <i4 bytes) and u64 sum((i+1)*(ids[i]+1)*0x9E3779B97F4A7C15);
      with --decode also sp.decode(ids) as u32 len + bytes (--digest: u32 len + u32 crc32).
  spm_ref.py texts MODEL IN OUT
      IN: records u32 len + raw bytes (any bytes: sp.encode accepts bytes); per record:
      u32 n, n x i32 sp.encode(bytes), u32 len + sp.decode(ids) bytes.
  spm_ref.py loads MODEL
      exit status 0 if SentencePiece loads the model, 3 if it refuses it.
  spm_ref.py random MODEL OUT SEED COUNT
      COUNT random id sequences (biased towards byte, control and whitespace pieces);
      per sequence: u32 n, n x i32 ids, u32 len + sp.decode(ids) bytes.
"""
import json
import lzma
import random
import struct
import sys
import zlib

import numpy as np
import sentencepiece as spm

MASK64 = (1 << 64) - 1
GOLD = np.uint64(0x9E3779B97F4A7C15)


def load(path):
    return spm.SentencePieceProcessor(model_file=path)


def cmd_vocab(model, out):
    sp = load(model)
    n = sp.vocab_size()
    with open(out, "wb") as f:
        f.write(struct.pack("<Iiiii", n, sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()))
        for i in range(n):
            if sp.is_unknown(i):
                kind = 2
            elif sp.is_control(i):
                kind = 3
            elif sp.is_unused(i):
                kind = 5
            elif sp.is_byte(i):
                kind = 6
            else:
                kind = 1
            b = sp.id_to_piece(i).encode("utf-8")
            f.write(struct.pack("<BfI", kind, sp.get_score(i), len(b)) + b)
        # build_sentencepiece_luts exactly as train_gpt.py (vocab_size = sp.vocab_size())
        base = np.zeros((n,), dtype=np.int16)
        lead = np.zeros((n,), dtype=np.bool_)
        bnd = np.ones((n,), dtype=np.bool_)
        for t in range(n):
            if sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t):
                continue
            bnd[t] = False
            if sp.is_byte(t):
                base[t] = 1
                continue
            piece = sp.id_to_piece(t)
            if piece.startswith("\u2581"):
                lead[t] = True
                piece = piece[1:]
            base[t] = len(piece.encode("utf-8"))
        f.write(base.astype("<i2").tobytes())
        f.write(lead.astype(np.uint8).tobytes())
        f.write(bnd.astype(np.uint8).tobytes())


def read_docs(path, every):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % every:
                continue
            yield i, json.loads(line)["text"]


_SPS = None


def _init(models):
    global _SPS
    _SPS = [load(m) for m in models]


def _encode_one(args):
    i, text, digest, decode = args
    return [_encode_sp(sp, i, text, digest, decode) for sp in _SPS]


def _encode_sp(sp, i, text, digest, decode):
    ids = sp.encode(text)
    a = np.asarray(ids, dtype="<i4")
    rec = [struct.pack("<III", i, len(text.encode("utf-8")), len(ids))]
    if digest:
        pos = np.arange(1, len(a) + 1, dtype=np.uint64)
        s = int(np.sum(pos * (a.astype(np.uint64) + np.uint64(1)) * GOLD, dtype=np.uint64)) & MASK64
        rec.append(struct.pack("<IQ", zlib.crc32(a.tobytes()) & 0xFFFFFFFF, s))
    else:
        rec.append(a.tobytes())
    if decode:
        d = sp.decode(ids).encode("utf-8")
        if digest:
            rec.append(struct.pack("<II", len(d), zlib.crc32(d) & 0xFFFFFFFF))
        else:
            rec.append(struct.pack("<I", len(d)) + d)
    return b"".join(rec)


def cmd_encode(models, corpus, out, every, digest, decode, jobs):
    models = models.split(",")
    work = ((i, t, digest, decode) for i, t in read_docs(corpus, every))
    files = [open("%s.%d" % (out, k), "wb") for k in range(len(models))]
    if jobs > 1:
        import multiprocessing as mp

        with mp.Pool(jobs, initializer=_init, initargs=(models,)) as pool:
            for recs in pool.imap(_encode_one, work, chunksize=4):
                for f, r in zip(files, recs):
                    f.write(r)
    else:
        _init(models)
        for w in work:
            for f, r in zip(files, _encode_one(w)):
                f.write(r)
    for f in files:
        f.close()


def cmd_texts(model, inp, out):
    sp = load(model)
    data = open(inp, "rb").read()
    pos = 0
    with open(out, "wb") as f:
        while pos < len(data):
            (n,) = struct.unpack_from("<I", data, pos)
            text = data[pos + 4 : pos + 4 + n]
            pos += 4 + n
            ids = sp.encode(text)
            d = sp.decode(ids).encode("utf-8")
            f.write(struct.pack("<I", len(ids)) + np.asarray(ids, dtype="<i4").tobytes())
            f.write(struct.pack("<I", len(d)) + d)


def cmd_loads(model):
    try:
        sp = load(model)
        sp.vocab_size()
    except Exception:  # RuntimeError / OSError from the C++ status
        sys.exit(3)
    sys.exit(0)


def cmd_random(model, out, seed, count):
    sp = load(model)
    n = sp.vocab_size()
    rng = random.Random(seed)
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)]
    byte = [i for i in range(n) if sp.is_byte(i)]
    ws = [i for i in range(n) if sp.id_to_piece(i).startswith("\u2581")]
    with open(out, "wb") as f:
        for _ in range(count):
            length = rng.choice([0, 1, 2, 3, 5, 8, 20, 64])
            ids = []
            for _ in range(length):
                r = rng.random()
                if r < 0.3 and byte:
                    ids.append(rng.choice(byte))
                elif r < 0.4 and special:
                    ids.append(rng.choice(special))
                elif r < 0.6 and ws:
                    ids.append(rng.choice(ws))
                else:
                    ids.append(rng.randrange(n))
            d = sp.decode(ids).encode("utf-8")
            f.write(struct.pack("<I", len(ids)) + np.asarray(ids, dtype="<i4").tobytes())
            f.write(struct.pack("<I", len(d)) + d)


def main(argv):
    cmd = argv[1]
    if cmd == "vocab":
        cmd_vocab(argv[2], argv[3])
    elif cmd == "encode":
        every, digest, decode, jobs = 1, False, False, 1
        rest = argv[5:]
        k = 0
        while k < len(rest):
            if rest[k] == "--every":
                every = int(rest[k + 1])
                k += 1
            elif rest[k] == "--jobs":
                jobs = int(rest[k + 1])
                k += 1
            elif rest[k] == "--digest":
                digest = True
            elif rest[k] == "--decode":
                decode = True
            else:
                raise SystemExit("unknown option " + rest[k])
            k += 1
        cmd_encode(argv[2], argv[3], argv[4], every, digest, decode, jobs)
    elif cmd == "texts":
        cmd_texts(argv[2], argv[3], argv[4])
    elif cmd == "loads":
        cmd_loads(argv[2])
    elif cmd == "random":
        cmd_random(argv[2], argv[3], int(argv[4]), int(argv[5]))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
