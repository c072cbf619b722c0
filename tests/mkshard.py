"""mkshard.py: token shards for the CLI tests, in the challenge's format (a header of 256 int32:
magic, version 1, token count; then the ids as uint16). Parent directories are created.

  mkshard.py slice SRC A B DST          tokens [A, B) of the shard SRC (negative: counted from its
                                        end; B "end": to its end)
  mkshard.py synth SEED DST:N[:MAGIC]...
                                        a learnable stream: ids below 1024 in runs of 1 to 3 repeats,
                                        one random stream (random.Random(SEED)) over the shards in
                                        order; MAGIC replaces 20240520 (a bad shard)
"""
import os
import random
import struct
import sys

MAGIC = 20240520


def write(path, ids, magic=MAGIC):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    hdr = [0] * 256
    hdr[0], hdr[1], hdr[2] = magic, 1, len(ids)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(struct.pack("<%dH" % len(ids), *ids))


def main(argv):
    if len(argv) == 5 and argv[0] == "slice":
        raw = open(argv[1], "rb").read()
        n = struct.unpack("<256i", raw[:1024])[2]
        ids = struct.unpack("<%dH" % n, raw[1024:1024 + 2 * n])
        b = None if argv[3] == "end" else int(argv[3])
        write(argv[4], ids[int(argv[2]):b])
    elif len(argv) >= 3 and argv[0] == "synth":
        rng = random.Random(int(argv[1]))
        for spec in argv[2:]:
            path, n, *magic = spec.split(":")
            n = int(n)
            toks = []
            while len(toks) < n:
                t = rng.randrange(1024)
                toks += [t] * rng.randrange(1, 4)
            write(path, toks[:n], int(magic[0]) if magic else MAGIC)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
