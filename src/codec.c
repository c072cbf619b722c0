/* codec.c: zlib / zstd / xz / brotli one-shot compression and bounded decompression through the
 * system libraries (see codec.h). Decoders run as streams into a buffer that grows with the
 * output and may reach max_out + 1 bytes: producing that extra byte is how a bomb is detected,
 * uniformly for all four libraries. */
#include "codec.h"

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "common.h"

static const struct {
    const char *name;
    int lo, hi, strongest;
} KINDS[CODEC_COUNT] = {
    [CODEC_NONE] = {"none", 0, 0, 0},   [CODEC_ZLIB] = {"zlib", 0, 9, 9},
    [CODEC_ZSTD] = {"zstd", 1, 22, 22}, [CODEC_LZMA] = {"lzma", 0, 9, 9},
    [CODEC_BROTLI] = {"brotli", 0, 11, 11},
};

int codec_check(const pg_codec *c) {
    if ((int)c->kind < 0 || c->kind >= CODEC_COUNT) return -1;
    if (c->level < KINDS[c->kind].lo || c->level > KINDS[c->kind].hi) return -1;
    if (c->extreme != 0 && !(c->extreme == 1 && c->kind == CODEC_LZMA)) return -1;
    return 0;
}

int codec_parse(const char *label, pg_codec *c, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    const char *dash = strchr(label, '-');
    size_t nl = dash ? (size_t)(dash - label) : strlen(label);
    int kind = -1;
    for (int k = 0; k < CODEC_COUNT; k++)
        if (strlen(KINDS[k].name) == nl && strncmp(label, KINDS[k].name, nl) == 0) kind = k;
    if (nl == 2 && strncmp(label, "xz", 2) == 0) kind = CODEC_LZMA;
    if (kind < 0) goto bad;
    c->kind = (pg_codec_kind)kind;
    if (!dash) {
        c->level = KINDS[kind].strongest;
        c->extreme = kind == CODEC_LZMA;
        return 0;
    }
    if (kind == CODEC_NONE) goto bad;
    const char *p = dash + 1;
    if (*p < '0' || *p > '9') goto bad;
    int level = 0;
    while (*p >= '0' && *p <= '9' && level < 100) level = 10 * level + (*p++ - '0');
    if (*p == 'e' && kind == CODEC_LZMA) {
        c->extreme = 1;
        p++;
    }
    if (*p) goto bad;
    c->level = level;
    if (codec_check(c) == 0) return 0;
bad:
    return pg_err(err, errlen,
                  "unknown codec '%s' (expected none, zlib-0..9, zstd-1..22, lzma-0..9[e], brotli-0..11)",
                  label);
}

void codec_label(const pg_codec *c, char *buf, size_t n) {
    if (codec_check(c) != 0) snprintf(buf, n, "invalid");
    else if (c->kind == CODEC_NONE) snprintf(buf, n, "none");
    else snprintf(buf, n, "%s-%d%s", KINDS[c->kind].name, c->level, c->extreme ? "e" : "");
}

/* ---- compression ---- */

static int compress_lzma(const pg_codec *c, const uint8_t *in, size_t n, uint8_t **out, size_t *out_len,
                         char *err, size_t errlen) {
    /* A stream encoder (not lzma_easy_buffer_encode) so the block header matches Python's lzma. */
    lzma_stream s = LZMA_STREAM_INIT;
    uint32_t preset = (uint32_t)c->level | (c->extreme ? LZMA_PRESET_EXTREME : 0);
    if (lzma_easy_encoder(&s, preset, LZMA_CHECK_CRC64) != LZMA_OK)
        return pg_err(err, errlen, "lzma: cannot start the encoder (out of memory?)");
    size_t cap = lzma_stream_buffer_bound(n);
    uint8_t *buf = xmalloc(cap ? cap : 1);
    s.next_in = in;
    s.avail_in = n;
    s.next_out = buf;
    s.avail_out = cap;
    lzma_ret r = lzma_code(&s, LZMA_FINISH);
    size_t got = cap - s.avail_out;
    lzma_end(&s);
    if (r != LZMA_STREAM_END) {
        free(buf);
        return pg_err(err, errlen, "lzma: compression failed (code %d)", (int)r);
    }
    *out = buf;
    *out_len = got;
    return 0;
}

int codec_compress(const pg_codec *c, const uint8_t *in, size_t n, uint8_t **out, size_t *out_len,
                   char *err, size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (codec_check(c) != 0) return pg_err(err, errlen, "invalid codec settings");
    switch (c->kind) {
    case CODEC_NONE: {
        uint8_t *b = xmalloc(n ? n : 1);
        if (n) memcpy(b, in, n);
        *out = b;
        *out_len = n;
        return 0;
    }
    case CODEC_ZLIB: {
        uLongf cap = compressBound((uLong)n);
        uint8_t *b = xmalloc(cap);
        if (compress2(b, &cap, in, (uLong)n, c->level) != Z_OK) {
            free(b);
            return pg_err(err, errlen, "zlib: compression failed");
        }
        *out = b;
        *out_len = cap;
        return 0;
    }
    case CODEC_ZSTD: {
        size_t cap = ZSTD_compressBound(n);
        uint8_t *b = xmalloc(cap ? cap : 1);
        size_t r = ZSTD_compress(b, cap, in, n, c->level);
        if (ZSTD_isError(r)) {
            free(b);
            return pg_err(err, errlen, "zstd: compression failed: %s", ZSTD_getErrorName(r));
        }
        *out = b;
        *out_len = r;
        return 0;
    }
    case CODEC_LZMA: return compress_lzma(c, in, n, out, out_len, err, errlen);
    case CODEC_BROTLI: {
        size_t cap = BrotliEncoderMaxCompressedSize(n);
        if (cap == 0) return pg_err(err, errlen, "brotli: input of %zu bytes is too large", n);
        uint8_t *b = xmalloc(cap);
        size_t got = cap;
        if (!BrotliEncoderCompress(c->level, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, n, in, &got, b)) {
            free(b);
            return pg_err(err, errlen, "brotli: compression failed");
        }
        *out = b;
        *out_len = got;
        return 0;
    }
    default: break;
    }
    return pg_err(err, errlen, "invalid codec");
}

/* ---- decompression ---- */

typedef struct {
    uint8_t *buf;
    size_t len, cap, limit; /* limit = max_out + 1 */
} obuf;

/* Make room for more output. 0, or -1 when the buffer already holds limit bytes (a bomb). */
static int ob_grow(obuf *o) {
    if (o->cap >= o->limit) return -1;
    size_t want = o->cap < (1u << 16) ? (1u << 16) : o->cap * 2;
    if (want > o->limit || want < o->cap) want = o->limit;
    o->buf = xrealloc(o->buf, want);
    o->cap = want;
    return 0;
}

static int dec_zlib(const uint8_t *in, size_t n, obuf *o, const char **why) {
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit(&z) != Z_OK) return *why = "zlib: cannot start the decoder", -1;
    int rc = -1;
    size_t pos = 0;
    for (;;) {
        if (o->len == o->cap && ob_grow(o) != 0) break;
        /* zlib counts in uInt: feed and drain in pieces of at most 1 GiB */
        size_t ain = n - pos < (1u << 30) ? n - pos : (1u << 30);
        size_t aout = o->cap - o->len < (1u << 30) ? o->cap - o->len : (1u << 30);
        z.next_in = (Bytef *)(in + pos);
        z.avail_in = (uInt)ain;
        z.next_out = o->buf + o->len;
        z.avail_out = (uInt)aout;
        int r = inflate(&z, Z_NO_FLUSH);
        pos += ain - z.avail_in;
        o->len += aout - z.avail_out;
        if (r == Z_STREAM_END) {
            rc = pos == n ? 0 : (*why = "trailing bytes after the zlib stream", -1);
            goto done;
        }
        if (r == Z_NEED_DICT || r == Z_DATA_ERROR || r == Z_MEM_ERROR || r == Z_STREAM_ERROR) {
            *why = "corrupt zlib stream";
            goto done;
        }
        if (pos == n && z.avail_out > 0) { /* all input used, output space left, no end: truncated */
            *why = "truncated zlib stream";
            goto done;
        }
    }
    *why = NULL; /* bomb */
done:
    inflateEnd(&z);
    return rc;
}

static int dec_zstd(const uint8_t *in, size_t n, obuf *o, const char **why) {
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d) return *why = "zstd: cannot start the decoder", -1;
    ZSTD_inBuffer ib = {in, n, 0};
    int rc = -1;
    for (;;) {
        if (o->len == o->cap && ob_grow(o) != 0) {
            *why = NULL;
            break;
        }
        ZSTD_outBuffer ob = {o->buf, o->cap, o->len};
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        o->len = ob.pos;
        if (ZSTD_isError(r)) {
            *why = "corrupt zstd stream";
            break;
        }
        if (r == 0) { /* frame complete and flushed */
            rc = ib.pos == n ? 0 : (*why = "trailing bytes after the zstd frame", -1);
            break;
        }
        if (ib.pos == n && ob.pos < ob.size) {
            *why = "truncated zstd stream";
            break;
        }
    }
    ZSTD_freeDStream(d);
    return rc;
}

static int dec_lzma(const uint8_t *in, size_t n, obuf *o, const char **why) {
    lzma_stream s = LZMA_STREAM_INIT;
    /* 1 GiB of decoder memory covers every preset (9e needs 65 MiB); a foreign stream asking for
     * more is refused rather than allocated. */
    if (lzma_stream_decoder(&s, (uint64_t)1 << 30, 0) != LZMA_OK) return *why = "xz: cannot start the decoder", -1;
    s.next_in = in;
    s.avail_in = n;
    int rc = -1;
    for (;;) {
        if (o->len == o->cap && ob_grow(o) != 0) {
            *why = NULL;
            break;
        }
        s.next_out = o->buf + o->len;
        s.avail_out = o->cap - o->len;
        lzma_ret r = lzma_code(&s, LZMA_FINISH);
        o->len = o->cap - s.avail_out;
        if (r == LZMA_STREAM_END) {
            rc = s.avail_in == 0 ? 0 : (*why = "trailing bytes after the xz stream", -1);
            break;
        }
        if (r == LZMA_OK) continue; /* output full: grow */
        if (r == LZMA_BUF_ERROR) *why = "truncated xz stream";
        else if (r == LZMA_MEMLIMIT_ERROR || r == LZMA_MEM_ERROR) *why = "xz stream needs too much memory";
        else if (r == LZMA_FORMAT_ERROR) *why = "not an xz stream";
        else *why = "corrupt xz stream";
        break;
    }
    lzma_end(&s);
    return rc;
}

static int dec_brotli(const uint8_t *in, size_t n, obuf *o, const char **why) {
    BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!d) return *why = "brotli: cannot start the decoder", -1;
    const uint8_t *nin = in;
    size_t ain = n;
    int rc = -1;
    for (;;) {
        if (o->len == o->cap && ob_grow(o) != 0) {
            *why = NULL;
            break;
        }
        uint8_t *nout = o->buf + o->len;
        size_t aout = o->cap - o->len;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(d, &ain, &nin, &aout, &nout, NULL);
        o->len = o->cap - aout;
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            rc = ain == 0 ? 0 : (*why = "trailing bytes after the brotli stream", -1);
            break;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) continue;
        *why = r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT ? "truncated brotli stream" : "corrupt brotli stream";
        break;
    }
    BrotliDecoderDestroyInstance(d);
    return rc;
}

int codec_decompress(const pg_codec *c, const uint8_t *in, size_t n, size_t max_out, const char *what,
                     uint8_t **out, size_t *out_len, char *err, size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (codec_check(c) != 0) return pg_err(err, errlen, "%s: invalid codec", what);
    if (max_out >= SIZE_MAX / 2) max_out = SIZE_MAX / 2;
    obuf o = {NULL, 0, 0, max_out + 1};
    const char *why = "invalid codec";
    int rc;
    switch (c->kind) {
    case CODEC_NONE:
        if (n > max_out) {
            why = NULL;
            rc = -1;
        } else {
            o.buf = xmalloc(n ? n : 1);
            if (n) memcpy(o.buf, in, n);
            o.len = n;
            rc = 0;
        }
        break;
    case CODEC_ZLIB: rc = dec_zlib(in, n, &o, &why); break;
    case CODEC_ZSTD: rc = dec_zstd(in, n, &o, &why); break;
    case CODEC_LZMA: rc = dec_lzma(in, n, &o, &why); break;
    case CODEC_BROTLI: rc = dec_brotli(in, n, &o, &why); break;
    default: rc = -1; break;
    }
    if (rc == 0 && o.len > max_out) rc = -1, why = NULL;
    if (rc != 0) {
        free(o.buf);
        char label[32];
        codec_label(c, label, sizeof(label));
        if (!why) return pg_err(err, errlen, "%s: %s data decompresses to more than %zu bytes", what, label, max_out);
        return pg_err(err, errlen, "%s: %s", what, why);
    }
    if (!o.buf) o.buf = xmalloc(1);
    *out = o.buf;
    *out_len = o.len;
    return 0;
}
