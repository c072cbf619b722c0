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
  spm_ref.py encode MODEL CORPUS OUT [--every K] [--digest] [--decode] [--jobs J]
      CORPUS: .jsonl or .jsonl.xz with a "text" field per line; documents i with i % K == 0.
      per document: u32 doc index, u32 text bytes, u32 n_ids, then either the ids (n x i32) or,
      with --digest, u32 crc32(ids as <i4 bytes) and u64 sum((i+1)*(ids[i]+1)*0x9E3779B97F4A7C15);
      with --decode also sp.decode(ids) as u32 len + bytes (--digest: u32 len + u32 crc32).
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


_SP = None


def _init(model):
    global _SP
    _SP = load(model)


def _encode_one(args):
    i, text, digest, decode = args
    ids = _SP.encode(text)
    a = np.asarray(ids, dtype="<i4")
    rec = [struct.pack("<III", i, len(text.encode("utf-8")), len(ids))]
    if digest:
        pos = np.arange(1, len(a) + 1, dtype=np.uint64)
        s = int(np.sum(pos * (a.astype(np.uint64) + np.uint64(1)) * GOLD, dtype=np.uint64)) & MASK64
        rec.append(struct.pack("<IQ", zlib.crc32(a.tobytes()) & 0xFFFFFFFF, s))
    else:
        rec.append(a.tobytes())
    if decode:
        d = _SP.decode(ids).encode("utf-8")
        if digest:
            rec.append(struct.pack("<II", len(d), zlib.crc32(d) & 0xFFFFFFFF))
        else:
            rec.append(struct.pack("<I", len(d)) + d)
    return b"".join(rec)


def cmd_encode(model, corpus, out, every, digest, decode, jobs):
    work = ((i, t, digest, decode) for i, t in read_docs(corpus, every))
    with open(out, "wb") as f:
        if jobs > 1:
            import multiprocessing as mp

            with mp.Pool(jobs, initializer=_init, initargs=(model,)) as pool:
                for rec in pool.imap(_encode_one, work, chunksize=8):
                    f.write(rec)
        else:
            _init(model)
            for w in work:
                f.write(_encode_one(w))


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
    elif cmd == "random":
        cmd_random(argv[2], argv[3], int(argv[4]), int(argv[5]))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
