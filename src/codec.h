/* codec.h: the general-purpose compressors the records use for their model blobs, through the
 * real libraries, each producing the same container as the Python call the record makes:
 *   zlib-N     zlib.compress(raw, N)                 zlib wrapper (RFC 1950), default window/memLevel
 *   zstd-N     zstandard.ZstdCompressor(level=N)     one zstd frame with the content size
 *   lzma-N     lzma.compress(raw, preset=N)          .xz container, CRC64, one LZMA2 filter
 *   lzma-Ne    preset N | lzma.PRESET_EXTREME
 *   brotli-N   brotli.compress(raw, quality=N)       lgwin 22, generic mode
 *   none       the bytes as they are
 * Decompression takes a caller-given maximum output size: a stream that would decode to more
 * (a decompression bomb), a truncated or corrupt stream, or trailing bytes after the stream are
 * errors (-1 with a message), never a crash or an unbounded allocation. */
#ifndef PGOLF_CODEC_H
#define PGOLF_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CODEC_NONE = 0,
    CODEC_ZLIB = 1,
    CODEC_ZSTD = 2,
    CODEC_LZMA = 3,
    CODEC_BROTLI = 4,
    CODEC_COUNT
} pg_codec_kind;

typedef struct {
    pg_codec_kind kind;
    int level;   /* zlib 0..9, zstd 1..22, lzma 0..9, brotli 0..11; 0 for none */
    int extreme; /* lzma only: PRESET_EXTREME */
} pg_codec;

/* Parse "zlib-9", "zstd-22", "lzma-9", "lzma-9e" (alias "xz-9e"), "brotli-11", "none". A bare
 * name takes the strongest setting (zlib-9, zstd-22, lzma-9e, brotli-11). 0 or -1 with err. */
int codec_parse(const char *label, pg_codec *c, char *err, size_t errlen);
/* Canonical label ("lzma-9e") into buf. */
void codec_label(const pg_codec *c, char *buf, size_t n);
/* 0 if the fields form a valid codec, -1 otherwise (used by readers of stored codec fields). */
int codec_check(const pg_codec *c);

/* Compress in[0..n) into a new malloc'd buffer. 0 or -1 with err (library failure only). */
int codec_compress(const pg_codec *c, const uint8_t *in, size_t n, uint8_t **out, size_t *out_len,
                   char *err, size_t errlen);
/* Decompress in[0..n) (a stream written by codec_compress or by the matching Python call) into
 * a new malloc'd buffer of at most max_out bytes. Memory grows with the actual output, so a
 * large max_out costs nothing by itself. 0 or -1 with err ("<what>: <problem>"). */
int codec_decompress(const pg_codec *c, const uint8_t *in, size_t n, size_t max_out, const char *what,
                     uint8_t **out, size_t *out_len, char *err, size_t errlen);

#endif
