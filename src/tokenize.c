/* tokenize.c: `pgolf tokenize`, text -> challenge-format shards (see tokenize.h and
 * docs/tokenize.md). One reader thread decompresses the inputs (plain, gzip, xz or zstd, detected
 * from the first bytes) and cuts them into records (JSONL lines or blank-line-separated paragraphs)
 * in batches; the main thread parses and encodes each batch in parallel (OpenMP, dynamic schedule)
 * and then walks the results in input order, applying the policies and appending BOS + ids to the
 * shard writer. Shards are written to temporary names and renamed into place only once the whole
 * input went through, so a failure (or SIGINT/SIGTERM) leaves no shard behind. */
#include "tokenize.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "cmds.h"
#include "common.h"
#include "data.h"
#include "json.h"
#include "spm.h"

#define TK_RAW_CAP (1u << 20)
#define TK_OUT_CAP (1u << 20)
#define TK_MAX_LINE ((size_t)1 << 30)
#define TK_BATCH_RECS 2048
#define TK_BATCH_BYTES ((size_t)8 << 20)
#define TK_QUEUE 3

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 */

/* Length of the well-formed sequence at s[i] (*ok = 1) or of its maximal ill-formed subpart
 * (*ok = 0), following Unicode's table of well-formed byte sequences (as CPython's decoder). */
static size_t utf8_step(const uint8_t *s, size_t n, size_t i, int *ok) {
    uint8_t c = s[i], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) {
        *ok = 1;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else {
        *ok = 0;
        return 1;
    }
    size_t k = 1;
    for (int j = 0; j < need; j++, k++) {
        if (i + k >= n || s[i + k] < lo || s[i + k] > hi) {
            *ok = 0;
            return k;
        }
        lo = 0x80, hi = 0xBF;
    }
    *ok = 1;
    return k;
}

size_t tk_utf8_check(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        int ok;
        size_t k = utf8_step(s, n, i, &ok);
        if (!ok) return i;
        i += k;
    }
    return n;
}

char *tk_utf8_replace(const char *str, size_t n, size_t *out_n, size_t *n_repl) {
    const uint8_t *s = (const uint8_t *)str;
    /* each replaced subpart (>= 1 byte) becomes 3 bytes */
    char *o = xmalloc(3 * n + 1);
    size_t j = 0, r = 0;
    for (size_t i = 0; i < n;) {
        int ok;
        size_t k = utf8_step(s, n, i, &ok);
        if (ok) {
            memcpy(o + j, s + i, k);
            j += k;
        } else {
            o[j++] = (char)0xEF, o[j++] = (char)0xBF, o[j++] = (char)0xBD;
            r++;
        }
        i += k;
    }
    o[j] = 0;
    *out_n = j;
    *n_repl = r;
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* input streams */

enum { IN_PLAIN, IN_GZIP, IN_XZ, IN_ZSTD };

typedef struct {
    const char *name;
    int fd, kind, done;
    uint8_t *raw;
    size_t raw_len, raw_pos;
    int raw_eof;
    uint8_t *out;
    size_t out_len, out_pos;
    z_stream z;
    int z_member_done;
    lzma_stream x;
    ZSTD_DStream *zs;
    size_t zret;
    _Atomic long long *raw_counter;
    char *line;
    size_t line_cap;
    long long lineno;
    long long bytes; /* decompressed bytes */
} tk_in;

static int in_read_raw(tk_in *in, char *err, size_t errlen) {
    if (in->raw_pos < in->raw_len || in->raw_eof) return 0;
    ssize_t r;
    do r = read(in->fd, in->raw, TK_RAW_CAP);
    while (r < 0 && errno == EINTR);
    if (r < 0) return pg_err(err, errlen, "%s: read error: %s", in->name, strerror(errno));
    in->raw_len = (size_t)r, in->raw_pos = 0;
    if (r == 0) in->raw_eof = 1;
    if (in->raw_counter) atomic_fetch_add(in->raw_counter, (long long)r);
    return 0;
}

static void in_close(tk_in *in) {
    if (in->fd > 0) close(in->fd);
    if (in->kind == IN_GZIP) inflateEnd(&in->z);
    if (in->kind == IN_XZ) lzma_end(&in->x);
    if (in->zs) ZSTD_freeDStream(in->zs);
    free(in->raw);
    free(in->out);
    free(in->line);
    memset(in, 0, sizeof(*in));
    in->fd = -1;
}

static int in_open(tk_in *in, const char *path, _Atomic long long *counter, char *err, size_t errlen) {
    memset(in, 0, sizeof(*in));
    in->name = path;
    in->raw_counter = counter;
    if (!strcmp(path, "-")) {
        in->fd = 0;
        in->name = "<stdin>";
    } else {
        in->fd = open(path, O_RDONLY);
        if (in->fd < 0) return pg_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        struct stat st;
        if (fstat(in->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            close(in->fd);
            in->fd = -1;
            return pg_err(err, errlen, "%s: is a directory", path);
        }
    }
    in->raw = xmalloc(TK_RAW_CAP);
    in->out = xmalloc(TK_OUT_CAP);
    /* read at least 6 bytes (or to EOF) to see the magic */
    while (in->raw_len < 6 && !in->raw_eof) {
        ssize_t r = read(in->fd, in->raw + in->raw_len, TK_RAW_CAP - in->raw_len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            in_close(in);
            return pg_err(err, errlen, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0) in->raw_eof = 1;
        in->raw_len += (size_t)r;
        if (counter) atomic_fetch_add(counter, (long long)r);
    }
    const uint8_t *m = in->raw;
    size_t n = in->raw_len;
    if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) {
        in->kind = IN_GZIP;
        if (inflateInit2(&in->z, 15 + 16) != Z_OK) PG_CHECK(0);
    } else if (n >= 6 && !memcmp(m, "\xFD" "7zXZ\0", 6)) {
        in->kind = IN_XZ;
        lzma_stream init = LZMA_STREAM_INIT;
        in->x = init;
        if (lzma_stream_decoder(&in->x, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK) PG_CHECK(0);
    } else if (n >= 4 && m[0] == 0x28 && m[1] == 0xB5 && m[2] == 0x2F && m[3] == 0xFD) {
        in->kind = IN_ZSTD;
        in->zs = ZSTD_createDStream();
        PG_CHECK(in->zs);
        ZSTD_initDStream(in->zs);
    } else {
        in->kind = IN_PLAIN;
    }
    return 0;
}

/* Decompress into in->out. Returns the byte count, 0 at the end, -1 on error. */
static long in_fill(tk_in *in, char *err, size_t errlen) {
    if (in->done) return 0;
    for (;;) {
        if (in_read_raw(in, err, errlen)) return -1;
        int end = in->raw_eof && in->raw_pos == in->raw_len;
        switch (in->kind) {
        case IN_PLAIN: {
            if (end) {
                in->done = 1;
                return 0;
            }
            size_t k = in->raw_len - in->raw_pos;
            if (k > TK_OUT_CAP) k = TK_OUT_CAP;
            memcpy(in->out, in->raw + in->raw_pos, k);
            in->raw_pos += k;
            return (long)k;
        }
        case IN_GZIP: {
            if (in->z_member_done) {
                if (end) {
                    in->done = 1;
                    return 0;
                }
                inflateReset(&in->z); /* another gzip member follows */
                in->z_member_done = 0;
            }
            in->z.next_in = in->raw + in->raw_pos;
            in->z.avail_in = (uInt)(in->raw_len - in->raw_pos);
            in->z.next_out = in->out;
            in->z.avail_out = TK_OUT_CAP;
            int r = inflate(&in->z, Z_NO_FLUSH);
            in->raw_pos = in->raw_len - in->z.avail_in;
            size_t got = TK_OUT_CAP - in->z.avail_out;
            if (r == Z_STREAM_END) in->z_member_done = 1;
            else if (r != Z_OK && r != Z_BUF_ERROR)
                return pg_err(err, errlen, "%s: corrupt gzip data (%s)", in->name, in->z.msg ? in->z.msg : "error");
            if (got) return (long)got;
            if (!in->z_member_done && in->raw_eof && in->raw_pos == in->raw_len)
                return pg_err(err, errlen, "%s: truncated gzip data", in->name);
            break;
        }
        case IN_XZ: {
            in->x.next_in = in->raw + in->raw_pos;
            in->x.avail_in = in->raw_len - in->raw_pos;
            in->x.next_out = in->out;
            in->x.avail_out = TK_OUT_CAP;
            lzma_ret r = lzma_code(&in->x, end ? LZMA_FINISH : LZMA_RUN);
            in->raw_pos = in->raw_len - in->x.avail_in;
            size_t got = TK_OUT_CAP - in->x.avail_out;
            if (r == LZMA_STREAM_END) {
                in->done = 1;
                return (long)got;
            }
            if (r == LZMA_BUF_ERROR) return pg_err(err, errlen, "%s: truncated xz data", in->name);
            if (r != LZMA_OK) return pg_err(err, errlen, "%s: corrupt xz data (lzma error %d)", in->name, (int)r);
            if (got) return (long)got;
            break;
        }
        case IN_ZSTD: {
            /* all input consumed and the last frame complete and flushed (zret 0): the end. (Calling
             * ZSTD_decompressStream again would return the next frame's header hint, not 0.) */
            if (end && in->zret == 0) {
                in->done = 1;
                return 0;
            }
            ZSTD_inBuffer ib = {in->raw, in->raw_len, in->raw_pos};
            ZSTD_outBuffer ob = {in->out, TK_OUT_CAP, 0};
            size_t r = ZSTD_decompressStream(in->zs, &ob, &ib);
            if (ZSTD_isError(r)) return pg_err(err, errlen, "%s: corrupt zstd data (%s)", in->name, ZSTD_getErrorName(r));
            in->raw_pos = ib.pos;
            in->zret = r;
            if (ob.pos) return (long)ob.pos;
            if (in->raw_eof && in->raw_pos == in->raw_len) {
                if (in->zret != 0) return pg_err(err, errlen, "%s: truncated zstd data", in->name);
                in->done = 1;
                return 0;
            }
            break;
        }
        }
    }
}

/* Next line without its "\n" (and a trailing "\r"). Returns 1, 0 at the end, -1 on error. */
static int in_line(tk_in *in, const char **line, size_t *len, char *err, size_t errlen) {
    size_t n = 0;
    int any = 0;
    for (;;) {
        if (in->out_pos == in->out_len) {
            long g = in_fill(in, err, errlen);
            if (g < 0) return -1;
            if (g == 0) {
                if (!any) return 0;
                break;
            }
            in->out_len = (size_t)g, in->out_pos = 0;
            in->bytes += g;
        }
        any = 1;
        const uint8_t *p = in->out + in->out_pos;
        size_t avail = in->out_len - in->out_pos;
        const uint8_t *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) : avail;
        if (n + take + 1 > in->line_cap) {
            if (n + take + 1 > TK_MAX_LINE)
                return pg_err(err, errlen, "%s:%lld: line longer than %zu bytes", in->name, in->lineno + 1, TK_MAX_LINE);
            size_t cap = in->line_cap ? in->line_cap : 4096;
            while (cap < n + take + 1) cap *= 2;
            in->line = xrealloc(in->line, cap);
            in->line_cap = cap;
        }
        memcpy(in->line + n, p, take);
        n += take;
        in->out_pos += take + (nl ? 1 : 0);
        if (nl) break;
    }
    in->lineno++;
    if (n && in->line[n - 1] == '\r') n--;
    char *l = in->line;
    if (in->lineno == 1 && n >= 3 && !memcmp(l, "\xEF\xBB\xBF", 3)) l += 3, n -= 3; /* UTF-8 BOM */
    l[n] = 0;
    *line = l;
    *len = n;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* records, batches and the reader thread */

enum { RS_OK, RS_BLANK, RS_BAD, RS_FATAL };

typedef struct {
    char *text;
    size_t len;
    int file;
    long long line;
} tk_rec;

typedef struct {
    int status;
    int32_t *ids;
    long n;
    size_t n_fixed;
    char msg[PG_ERRLEN];
} tk_res;

typedef struct {
    tk_rec *recs;
    tk_res *res;
    int n, cap;
    size_t bytes;
    int last;   /* no batch follows */
    int failed; /* the reader stopped on err */
    char err[PG_ERRLEN];
} tk_batch;

typedef struct {
    const tk_options *o;
    int *formats; /* per input */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tk_batch *q[TK_QUEUE];
    int q_head, q_n;
    atomic_int stop;
    _Atomic long long raw_bytes;
    _Atomic long long text_bytes;
    _Atomic long long lines;
} tk_reader;

static void batch_free(tk_batch *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) {
        free(b->recs[i].text);
        free(b->res ? b->res[i].ids : NULL);
    }
    free(b->recs);
    free(b->res);
    free(b);
}

static tk_batch *batch_new(void) {
    tk_batch *b = xcalloc(1, sizeof(*b));
    b->cap = 256;
    b->recs = xmalloc(b->cap * sizeof(tk_rec));
    return b;
}

static void batch_add(tk_batch *b, const char *s, size_t n, int file, long long line) {
    if (b->n == b->cap) {
        b->cap *= 2;
        b->recs = xrealloc(b->recs, b->cap * sizeof(tk_rec));
    }
    tk_rec *r = &b->recs[b->n++];
    r->text = xmalloc(n + 1);
    memcpy(r->text, s, n);
    r->text[n] = 0;
    r->len = n;
    r->file = file;
    r->line = line;
    b->bytes += n;
}

/* Hand a batch to the main thread; returns 0, or 1 if the main thread asked the reader to stop. */
static int reader_push(tk_reader *rd, tk_batch *b) {
    pthread_mutex_lock(&rd->mu);
    while (rd->q_n == TK_QUEUE && !atomic_load(&rd->stop)) pthread_cond_wait(&rd->cv, &rd->mu);
    int stopped = atomic_load(&rd->stop);
    if (!stopped) {
        rd->q[(rd->q_head + rd->q_n) % TK_QUEUE] = b;
        rd->q_n++;
        pthread_cond_broadcast(&rd->cv);
    }
    pthread_mutex_unlock(&rd->mu);
    if (stopped) batch_free(b);
    return stopped;
}

static tk_batch *reader_pop(tk_reader *rd) {
    pthread_mutex_lock(&rd->mu);
    while (rd->q_n == 0) pthread_cond_wait(&rd->cv, &rd->mu);
    tk_batch *b = rd->q[rd->q_head];
    rd->q_head = (rd->q_head + 1) % TK_QUEUE;
    rd->q_n--;
    pthread_cond_broadcast(&rd->cv);
    pthread_mutex_unlock(&rd->mu);
    return b;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

static void *reader_main(void *arg) {
    tk_reader *rd = arg;
    const tk_options *o = rd->o;
    tk_batch *b = batch_new();
    char *para = NULL;
    size_t para_n = 0, para_cap = 0;
    long long para_line = 0;
    for (int fi = 0; fi < o->n_inputs && !atomic_load(&rd->stop); fi++) {
        tk_in in;
        if (in_open(&in, o->inputs[fi], &rd->raw_bytes, b->err, sizeof(b->err))) {
            b->failed = 1;
            break;
        }
        int text = rd->formats[fi] == TK_FORMAT_TEXT;
        para_n = 0;
        long long prev_bytes = 0;
        for (;;) {
            const char *l = NULL;
            size_t n = 0;
            int r = in_line(&in, &l, &n, b->err, sizeof(b->err));
            if (r < 0) {
                b->failed = 1;
                break;
            }
            atomic_fetch_add(&rd->text_bytes, in.bytes - prev_bytes);
            prev_bytes = in.bytes;
            if (r > 0) atomic_fetch_add(&rd->lines, 1);
            if (text) {
                /* a document is a run of non-blank lines joined with "\n" */
                if (r > 0 && !is_blank(l, n)) {
                    if (para_n == 0) para_line = in.lineno;
                    if (para_n + n + 2 > para_cap) {
                        para_cap = (para_n + n + 2) * 2;
                        para = xrealloc(para, para_cap);
                    }
                    if (para_n) para[para_n++] = '\n';
                    memcpy(para + para_n, l, n);
                    para_n += n;
                    continue;
                }
                if (para_n) {
                    batch_add(b, para, para_n, fi, para_line);
                    para_n = 0;
                }
            } else if (r > 0) {
                batch_add(b, l, n, fi, in.lineno);
            }
            if (r == 0) break;
            if (b->n >= TK_BATCH_RECS || b->bytes >= TK_BATCH_BYTES) {
                if (reader_push(rd, b)) {
                    b = NULL;
                    break;
                }
                b = batch_new();
            }
        }
        in_close(&in);
        if (!b || b->failed) break;
    }
    free(para);
    if (b) {
        b->last = 1;
        reader_push(rd, b);
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* per-record work (parallel) */

typedef struct {
    const tk_options *o;
    tk_encode_fn enc;
    void *ctx;
    int vocab;
    int *formats;
} tk_job;

static void rec_msg(tk_res *res, int status, const tk_options *o, const tk_rec *r, long long line, const char *fmt,
                    const char *detail) {
    res->status = status;
    snprintf(res->msg, sizeof(res->msg), fmt, o->inputs[r->file][0] == '-' && !o->inputs[r->file][1] ? "<stdin>"
                                                                                                        : o->inputs[r->file],
             line, detail);
}

static void rec_process(const tk_job *job, const tk_rec *r, tk_res *res) {
    const tk_options *o = job->o;
    memset(res, 0, sizeof(*res));
    const char *s = r->text;
    size_t n = r->len;
    char *fixed = NULL;
    int text_fmt = job->formats[r->file] == TK_FORMAT_TEXT;
    if (!text_fmt && is_blank(s, n)) {
        res->status = RS_BLANK;
        return;
    }
    size_t bad = tk_utf8_check(s, n);
    if (bad < n) {
        if (!o->fix_utf8) {
            long long line = r->line;
            for (size_t i = 0; i < bad; i++) line += s[i] == '\n';
            char d[64];
            snprintf(d, sizeof(d), "%zu", bad);
            rec_msg(res, RS_BAD, o, r, line, "%s:%lld: invalid UTF-8 at byte %s", d);
            return;
        }
        size_t nn;
        fixed = tk_utf8_replace(s, n, &nn, &res->n_fixed);
        s = fixed, n = nn;
    }
    const char *text = s;
    size_t tlen = n;
    json_value *doc = NULL;
    if (!text_fmt) {
        char jerr[PG_ERRLEN];
        doc = json_parse(s, n, "", jerr, sizeof(jerr));
        if (!doc) {
            /* jerr is ": invalid JSON: <reason> at byte N" */
            const char *m = strstr(jerr, "invalid JSON");
            rec_msg(res, RS_BAD, o, r, r->line, "%s:%lld: %.400s", m ? m : jerr);
            free(fixed);
            return;
        }
        if (doc->type != JSON_OBJECT) {
            rec_msg(res, RS_BAD, o, r, r->line, "%s:%lld: %s", "not a JSON object");
            json_free(doc);
            free(fixed);
            return;
        }
        const json_value *v = NULL;
        for (size_t k = 0; k < doc->n; k++) /* the last duplicate wins, as in Python's json */
            if (!strcmp(doc->keys[k], o->text_key) && strlen(o->text_key) == doc->key_lens[k]) v = &doc->items[k];
        if (!v || v->type != JSON_STRING) {
            char d[160];
            snprintf(d, sizeof(d), "%s string member \"%.100s\"", v ? "not a" : "no", o->text_key);
            rec_msg(res, RS_BAD, o, r, r->line, "%s:%lld: %s", d);
            json_free(doc);
            free(fixed);
            return;
        }
        text = v->str;
        tlen = v->len;
    }
    char eerr[PG_ERRLEN] = "";
    long k = job->enc(job->ctx, text, tlen, &res->ids, eerr, sizeof(eerr));
    if (k < 0) {
        rec_msg(res, RS_FATAL, o, r, r->line, "%s:%lld: cannot encode: %.400s", eerr);
        res->ids = NULL;
    } else {
        res->n = k;
        for (long i = 0; i < k; i++)
            if (res->ids[i] < 0 || res->ids[i] >= job->vocab) {
                char d[96];
                snprintf(d, sizeof(d), "token id %d outside the vocabulary of %d", (int)res->ids[i], job->vocab);
                rec_msg(res, RS_FATAL, o, r, r->line, "%s:%lld: %s", d);
                break;
            }
    }
    json_free(doc);
    free(fixed);
}

/* ------------------------------------------------------------------------------------------ */
/* shard writer */

typedef struct {
    const char *dir;
    char **tmp, **fin;
    int n, cap;
    FILE *f;
    int split; /* 0 val, 1 train */
    int idx[2];
    long long fill, shard_tokens;
    long long tokens[2];
    uint8_t *buf;
} tk_writer;

static const char *const SPLIT_NAME[] = {"val", "train"};

static int writer_close(tk_writer *w, char *err, size_t errlen) {
    if (!w->f) return 0;
    FILE *f = w->f;
    w->f = NULL;
    uint8_t cnt[4];
    pg_wr_u32(cnt, (uint32_t)w->fill);
    int bad = fflush(f) != 0 || fseek(f, 8, SEEK_SET) != 0 || fwrite(cnt, 1, 4, f) != 4 || fflush(f) != 0 ||
              fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    w->fill = 0;
    if (bad) return pg_err(err, errlen, "%s: write failed: %s", w->fin[w->n - 1], strerror(e));
    return 0;
}

static int writer_open(tk_writer *w, char *err, size_t errlen) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->tmp = xrealloc(w->tmp, w->cap * sizeof(char *));
        w->fin = xrealloc(w->fin, w->cap * sizeof(char *));
    }
    size_t L = strlen(w->dir) + 64;
    char *fin = xmalloc(L), *tmp = xmalloc(L + 32);
    snprintf(fin, L, "%s/fineweb_%s_%06d.bin", w->dir, SPLIT_NAME[w->split], w->idx[w->split]);
    snprintf(tmp, L + 32, "%s.tmp.%ld", fin, (long)getpid());
    w->fin[w->n] = fin;
    w->tmp[w->n] = tmp;
    pg_cleanup_add(tmp, PG_LEAVE_FILE); /* before the file exists: a signal in between must still remove it */
    w->f = fopen(tmp, "wb");
    if (!w->f) {
        int e = errno;
        pg_cleanup_drop(tmp);
        pg_err(err, errlen, "%s: cannot write: %s", fin, strerror(e));
        free(fin);
        free(tmp);
        return -1;
    }
    w->n++;
    w->idx[w->split]++;
    uint8_t hdr[SHARD_HEADER_INTS * 4];
    memset(hdr, 0, sizeof(hdr));
    pg_wr_u32(hdr, SHARD_MAGIC);
    pg_wr_u32(hdr + 4, SHARD_VERSION);
    if (fwrite(hdr, 1, sizeof(hdr), w->f) != sizeof(hdr))
        return pg_err(err, errlen, "%s: write failed: %s", fin, strerror(errno));
    return 0;
}

/* Append BOS + ids[0..n) to the split's stream. */
static int writer_doc(tk_writer *w, int split, int bos, const int32_t *ids, long n, char *err, size_t errlen) {
    if (split != w->split) {
        if (writer_close(w, err, errlen)) return -1;
        w->split = split;
    }
    long i = -1; /* -1 is the BOS */
    while (i < n) {
        if (!w->f && writer_open(w, err, errlen)) return -1;
        long long room = w->shard_tokens - w->fill;
        long take = n - i;
        if (take > room) take = (long)room;
        if (take > 65536) take = 65536;
        for (long k = 0; k < take; k++) {
            uint16_t t = (uint16_t)(i + k < 0 ? bos : ids[i + k]);
            w->buf[2 * k] = (uint8_t)t, w->buf[2 * k + 1] = (uint8_t)(t >> 8);
        }
        if (fwrite(w->buf, 2, (size_t)take, w->f) != (size_t)take)
            return pg_err(err, errlen, "%s: write failed: %s", w->fin[w->n - 1], strerror(errno));
        w->fill += take;
        w->tokens[split] += take;
        i += take;
        if (w->fill == w->shard_tokens && writer_close(w, err, errlen)) return -1;
    }
    return 0;
}

static void writer_abort(tk_writer *w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
    for (int i = 0; i < w->n; i++) unlink(w->tmp[i]), pg_cleanup_drop(w->tmp[i]);
}

static int shard_name(const char *s) {
    size_t n = strlen(s);
    if (n < 4 || strcmp(s + n - 4, ".bin")) return 0;
    return !strncmp(s, "fineweb_val_", 12) || !strncmp(s, "fineweb_train_", 14);
}

/* Remove the old shards the new set does not replace, then rename the new ones into place. */
static int writer_commit_now(tk_writer *w, char *err, size_t errlen) {
    DIR *d = opendir(w->dir);
    if (!d) return pg_err(err, errlen, "%s: cannot list: %s", w->dir, strerror(errno));
    struct dirent *e;
    size_t dl = strlen(w->dir);
    while ((e = readdir(d))) {
        size_t bl = pg_dead_temporary(e->d_name); /* a shard temporary of a run killed outright */
        if (bl) {
            char base[256];
            snprintf(base, sizeof(base), "%.*s", (int)bl, e->d_name);
            if (shard_name(base)) pg_remove_dead_temporary(w->dir, e->d_name);
            continue;
        }
        if (!shard_name(e->d_name)) continue;
        int keep = 0;
        for (int i = 0; i < w->n && !keep; i++) keep = !strcmp(w->fin[i] + dl + 1, e->d_name);
        if (keep) continue;
        char *p = xmalloc(dl + strlen(e->d_name) + 2);
        sprintf(p, "%s/%s", w->dir, e->d_name);
        int rc = unlink(p);
        int en = errno;
        if (rc) {
            pg_err(err, errlen, "%s: cannot remove stale shard: %s", p, strerror(en));
            free(p);
            closedir(d);
            return -1;
        }
        free(p);
    }
    closedir(d);
    for (int i = 0; i < w->n; i++) {
        pg_cleanup_drop(w->tmp[i]);
        if (rename(w->tmp[i], w->fin[i]) != 0)
            return pg_err(err, errlen, "%s: cannot rename into place: %s", w->fin[i], strerror(errno));
    }
    int fd = open(w->dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

/* The commit runs with SIGINT/SIGTERM held back on the main thread (and the cleanup handler sends
 * every such signal there): one that lands in it takes effect once the directory holds the complete new set,
 * never a mix of old and new shards. */
static int writer_commit(tk_writer *w, char *err, size_t errlen) {
    sigset_t old;
    pg_signals_hold(&old);
    int rc = writer_commit_now(w, err, errlen);
    pg_signals_release(&old);
    return rc;
}

static void writer_free(tk_writer *w) {
    for (int i = 0; i < w->n; i++) pg_cleanup_drop(w->tmp[i]), free(w->tmp[i]), free(w->fin[i]);
    free(w->tmp);
    free(w->fin);
    free(w->buf);
}

/* ------------------------------------------------------------------------------------------ */
/* the driver */

void tk_options_default(tk_options *o) {
    memset(o, 0, sizeof(*o));
    o->format = TK_FORMAT_AUTO;
    o->text_key = "text";
    o->val_docs = 50000;
    o->shard_tokens = 100000000;
    o->max_docs = -1;
    o->threads = 1;
    o->progress = 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static int format_of(const char *path) {
    char *p = xstrdup(path);
    const char *comp[] = {".gz", ".xz", ".zst", ".zstd"};
    for (int i = 0; i < 4; i++)
        if (ends_with(p, comp[i])) p[strlen(p) - strlen(comp[i])] = 0;
    int f = ends_with(p, ".txt") || ends_with(p, ".text") ? TK_FORMAT_TEXT : TK_FORMAT_JSONL;
    free(p);
    return f;
}

static void fmt_dur(char *b, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(b, n, "%ld:%02ld", t / 60, t % 60);
}

typedef struct {
    double t0, last;
    int tty;
    long long total_raw; /* -1: unknown */
    int printed;
} tk_progress;

/* a progress line is on the terminal without its newline (warnings clear it first) */
static int g_line_open;

static void progress_show(tk_progress *p, tk_reader *rd, const tk_stats *st, int final) {
    double now = pg_now();
    if (!final && now - p->last < (p->tty ? 0.5 : 10.0)) return;
    p->last = now;
    double el = now - p->t0;
    double mb = (double)atomic_load(&rd->text_bytes) / 1e6;
    long long raw = atomic_load(&rd->raw_bytes);
    char eta[64] = "";
    if (p->total_raw > 0 && raw > 0 && !final) {
        char d[32];
        double frac = (double)raw / (double)p->total_raw;
        fmt_dur(d, sizeof(d), el * (1 - frac) / (frac > 1e-9 ? frac : 1e-9));
        snprintf(eta, sizeof(eta), ", %.0f%%, ETA %s", 100 * (frac < 1 ? frac : 1), d);
    }
    char e[32];
    fmt_dur(e, sizeof(e), el);
    g_line_open = p->tty && !final;
    fprintf(stderr, "%stokenize: %lld docs, %lld tokens, %.1f MB, %.2f MB/s, %s elapsed%s%s", p->tty ? "\r" : "",
            st->docs, st->tokens_val + st->tokens_train, mb, el > 0 ? mb / el : 0.0, e, eta,
            p->tty ? "\033[K" : "\n");
    if (final && p->tty) fputc('\n', stderr);
    fflush(stderr);
    p->printed = 1;
}

static void warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warnf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (g_line_open) fputs("\r\033[K", stderr);
    fprintf(stderr, "pgolf: warning: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int tokenize_run(const tk_options *o, tk_encode_fn enc, void *ctx, int bos_id, int vocab, tk_stats *st, char *err,
                 size_t errlen) {
    memset(st, 0, sizeof(*st));
    double t0 = pg_now();
    if (o->n_inputs < 1) return pg_err(err, errlen, "no input given");
    if (vocab < 1 || vocab > 65536)
        return pg_err(err, errlen, "vocabulary of %d ids does not fit the shards' uint16 tokens", vocab);
    if (bos_id < 0 || bos_id >= vocab) return pg_err(err, errlen, "the tokenizer has no BOS id (bos_id %d)", bos_id);
    if (o->shard_tokens < 1 || o->shard_tokens > 0x7fffffffLL)
        return pg_err(err, errlen, "--shard-tokens %lld out of range [1, 2147483647]", o->shard_tokens);
    if (o->val_docs < 0) return pg_err(err, errlen, "--val-docs %lld is negative", o->val_docs);
    int nstdin = 0;
    long long total_raw = 0;
    int *formats = xmalloc(o->n_inputs * sizeof(int));
    for (int i = 0; i < o->n_inputs; i++) {
        const char *p = o->inputs[i];
        formats[i] = o->format != TK_FORMAT_AUTO ? o->format : !strcmp(p, "-") ? TK_FORMAT_JSONL : format_of(p);
        struct stat sb;
        if (!strcmp(p, "-")) {
            nstdin++;
            total_raw = -1;
            continue;
        }
        if (stat(p, &sb) != 0 || access(p, R_OK) != 0) {
            int e = errno;
            free(formats);
            return pg_err(err, errlen, "%s: cannot open: %s", p, strerror(e));
        }
        if (S_ISDIR(sb.st_mode)) {
            free(formats);
            return pg_err(err, errlen, "%s: is a directory", p);
        }
        if (total_raw >= 0) total_raw = S_ISREG(sb.st_mode) ? total_raw + sb.st_size : -1;
    }
    if (nstdin > 1) {
        free(formats);
        return pg_err(err, errlen, "stdin ('-') given more than once");
    }
    /* output directory: create it (remember to remove it again on failure) and check it is writable.
     * From here on pg_die, SIGINT and SIGTERM remove whatever this run has made. */
    pg_made_dirs made;
    if (pg_mkdirs_undoable(o->out_dir, &made, err, errlen)) {
        free(formats);
        return -1;
    }
    {
        size_t L = strlen(o->out_dir) + 64;
        char *probe = xmalloc(L);
        snprintf(probe, L, "%s/.pgolf_tokenize_probe.%ld", o->out_dir, (long)getpid());
        pg_cleanup_add(probe, PG_LEAVE_FILE);
        int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
        int e = errno;
        if (fd >= 0) close(fd), unlink(probe);
        pg_cleanup_drop(probe);
        free(probe);
        if (fd < 0) {
            pg_made_dirs_end(&made, 0);
            free(formats);
            return pg_err(err, errlen, "%s: cannot write in the output directory: %s", o->out_dir, strerror(e));
        }
    }

    tk_writer w;
    memset(&w, 0, sizeof(w));
    w.dir = o->out_dir;
    w.shard_tokens = o->shard_tokens;
    w.buf = xmalloc(2 * 65536);

    tk_reader rd;
    memset(&rd, 0, sizeof(rd));
    rd.o = o;
    rd.formats = formats;
    pthread_mutex_init(&rd.mu, NULL);
    pthread_cond_init(&rd.cv, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, reader_main, &rd) != 0) PG_CHECK(0);

    tk_job job = {o, enc, ctx, vocab, formats};
    tk_progress pr = {t0, t0, isatty(2), total_raw, 0};
    int threads = o->threads > 0 ? o->threads : 1;
    int rc = 0, done = 0;
    while (!done && rc == 0) {
        tk_batch *b = reader_pop(&rd);
        done = b->last;
        b->res = xcalloc(b->n ? b->n : 1, sizeof(tk_res));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int i = 0; i < b->n; i++) rec_process(&job, &b->recs[i], &b->res[i]);
        for (int i = 0; i < b->n && rc == 0; i++) {
            tk_rec *r = &b->recs[i];
            tk_res *s = &b->res[i];
            const char *fname = strcmp(o->inputs[r->file], "-") ? o->inputs[r->file] : "<stdin>";
            if (o->max_docs >= 0 && st->docs >= o->max_docs) {
                done = 1;
                break;
            }
            st->lines++;
            if (s->status == RS_BLANK) {
                st->blank_lines++;
                continue;
            }
            if (s->status == RS_FATAL || (s->status == RS_BAD && !o->skip_bad)) {
                rc = pg_err(err, errlen, "%s%s", s->msg,
                            s->status == RS_BAD ? " (--skip-bad skips such lines)" : "");
                break;
            }
            if (s->status == RS_BAD) {
                warnf("%s; line skipped", s->msg);
                st->bad_skipped++;
                continue;
            }
            if (s->n_fixed) {
                warnf("%s:%lld: %zu invalid UTF-8 sequence%s replaced by U+FFFD", fname, r->line, s->n_fixed,
                      s->n_fixed > 1 ? "s" : "");
                st->utf8_fixed++;
            }
            if (s->n == 0) {
                if (o->skip_empty) {
                    warnf("%s:%lld: empty document skipped", fname, r->line);
                    st->empty_skipped++;
                    continue;
                }
                warnf("%s:%lld: empty document kept as a lone BOS", fname, r->line);
                st->empty_kept++;
            }
            int split = st->docs < o->val_docs ? 0 : 1;
            if (writer_doc(&w, split, bos_id, s->ids, s->n, err, errlen)) {
                rc = -1;
                break;
            }
            st->docs++;
            if (split == 0) st->docs_val++;
            else st->docs_train++;
        }
        if (rc == 0 && b->failed) {
            rc = pg_err(err, errlen, "%s", b->err);
        }
        batch_free(b);
        st->tokens_val = w.tokens[0];
        st->tokens_train = w.tokens[1];
        if (o->progress) progress_show(&pr, &rd, st, 0);
    }
    /* stop the reader and drain what it still hands over */
    atomic_store(&rd.stop, 1);
    pthread_mutex_lock(&rd.mu);
    pthread_cond_broadcast(&rd.cv);
    pthread_mutex_unlock(&rd.mu);
    pthread_join(th, NULL);
    while (rd.q_n) batch_free(reader_pop(&rd));
    pthread_mutex_destroy(&rd.mu);
    pthread_cond_destroy(&rd.cv);
    st->bytes_in = atomic_load(&rd.text_bytes);

    if (rc == 0) rc = writer_close(&w, err, errlen);
    if (rc == 0 && st->docs == 0) rc = pg_err(err, errlen, "no documents in the input");
    if (rc == 0 && st->docs < o->val_docs)
        rc = pg_err(err, errlen, "only %lld documents, fewer than --val-docs %lld (the exporter's check)", st->docs,
                    o->val_docs);
    if (rc == 0) rc = writer_commit(&w, err, errlen);
    if (rc != 0) {
        writer_abort(&w);
    }
    pg_made_dirs_end(&made, rc == 0); /* after a failure, the directories this run created, if empty */
    st->files_val = w.idx[0];
    st->files_train = w.idx[1];
    writer_free(&w);
    free(formats);
    st->seconds = pg_now() - t0;
    /* the final line always on success (a short run may not have shown one yet); after a failure
     * only to end a line already shown, so that the error stays the only other line */
    if (o->progress && (rc == 0 || pr.printed)) progress_show(&pr, &rd, st, 1);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* the command */

static long spm_enc(void *ctx, const char *text, size_t len, int32_t **ids, char *err, size_t errlen) {
    return spm_encode((const spm_model *)ctx, text, len, ids, err, errlen);
}

static const char *HELP =
    "usage: pgolf tokenize --tokenizer MODEL --out DIR [options] INPUT...\n"
    "\n"
    "Turn text into challenge-format shards with a SentencePiece model, as the challenge's exporter\n"
    "(data/download_hf_docs_and_tokenize.py) does: every document becomes BOS + sp.encode(text) (no\n"
    "EOS); the first --val-docs documents go to DIR/fineweb_val_000000.bin, ... and the rest to\n"
    "DIR/fineweb_train_000000.bin, ...; each shard holds --shard-tokens tokens except the last of\n"
    "each split (documents continue across shard ends).\n"
    "\n"
    "INPUT: files or '-' (stdin), read in order. gzip, xz and zstd are recognised by their magic\n"
    "bytes. Format by name (after the compression suffix): *.txt / *.text = plain text, anything\n"
    "else (and stdin) = JSONL.\n"
    "  JSONL: one JSON object per line; the document is its \"text\" member (--text-key).\n"
    "         Lines holding only whitespace are ignored (counted in the summary).\n"
    "  text:  a document is a run of non-blank lines joined with \"\\n\"; blank lines separate\n"
    "         documents.\n"
    "\n"
    "options:\n"
    "  --tokenizer PATH     SentencePiece .model (required; vocabulary <= 65536)\n"
    "  --out DIR            output directory (created if missing; required)\n"
    "  --val-docs N         the first N documents are validation (default 50000, the exporter's)\n"
    "  --shard-tokens N     tokens per shard (default 100000000, the exporter's)\n"
    "  --max-docs N         stop after N documents\n"
    "  --threads N          encoding threads (default: OMP_NUM_THREADS or all cores)\n"
    "  --format F           auto (default), jsonl or text\n"
    "  --text-key KEY       JSONL member holding the text (default \"text\")\n"
    "  --skip-bad           skip malformed lines (bad JSON, no text member, invalid UTF-8),\n"
    "                       reporting each with its line number, instead of failing\n"
    "  --fix-utf8           replace invalid UTF-8 by U+FFFD (as Python's errors=\"replace\"),\n"
    "                       reporting each line, instead of failing\n"
    "  --skip-empty         drop documents that encode to no ids instead of writing a lone BOS\n"
    "  --quiet              no progress line\n"
    "\n"
    "Policies (nothing is dropped silently):\n"
    "  malformed line or invalid UTF-8: error naming FILE:LINE (the exporter fails too), unless\n"
    "    --skip-bad / --fix-utf8;\n"
    "  empty document (no ids, e.g. \"\" or only whitespace): kept as a lone BOS like the exporter,\n"
    "    reported with its line number; --skip-empty drops it (reported);\n"
    "  fewer documents than --val-docs, or none: error.\n"
    "On any error nothing is written. On success the new shards replace any existing\n"
    "fineweb_val_*.bin / fineweb_train_*.bin in DIR (stale ones are removed, as the exporter does).\n"
    "A progress line (docs, tokens, MB/s, ETA when the input size is known) goes to stderr; the\n"
    "summary to stdout. See docs/tokenize.md.\n";

static long long parse_count(const char *opt, const char *v) {
    if (!v) pg_die("%s needs a value", opt);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < 0) pg_die("%s: not a non-negative integer: '%s'", opt, v);
    return x;
}

int cmd_tokenize(int argc, char **argv) {
    tk_options o;
    tk_options_default(&o);
    o.threads = omp_get_max_threads();
    o.progress = 1;
    const char *tok = NULL;
    const char **inputs = xmalloc((argc + 1) * sizeof(char *));
    int n_in = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            free(inputs);
            return 0;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!v) pg_die("--tokenizer needs a value");
            tok = v, i++;
        } else if (!strcmp(a, "--out")) {
            if (!v) pg_die("--out needs a value");
            o.out_dir = v, i++;
        } else if (!strcmp(a, "--val-docs")) {
            o.val_docs = parse_count(a, v), i++;
        } else if (!strcmp(a, "--shard-tokens")) {
            o.shard_tokens = parse_count(a, v), i++;
            if (o.shard_tokens < 1 || o.shard_tokens > 0x7fffffffLL)
                pg_die("--shard-tokens %lld out of range [1, 2147483647]", o.shard_tokens);
        } else if (!strcmp(a, "--max-docs")) {
            o.max_docs = parse_count(a, v), i++;
        } else if (!strcmp(a, "--threads")) {
            long long t = parse_count(a, v);
            if (t < 1 || t > 1024) pg_die("--threads %lld out of range [1, 1024]", t);
            o.threads = (int)t, i++;
        } else if (!strcmp(a, "--format")) {
            if (!v) pg_die("--format needs a value");
            if (!strcmp(v, "auto")) o.format = TK_FORMAT_AUTO;
            else if (!strcmp(v, "jsonl")) o.format = TK_FORMAT_JSONL;
            else if (!strcmp(v, "text")) o.format = TK_FORMAT_TEXT;
            else pg_die("--format: '%s' is not auto, jsonl or text", v);
            i++;
        } else if (!strcmp(a, "--text-key")) {
            if (!v) pg_die("--text-key needs a value");
            o.text_key = v, i++;
        } else if (!strcmp(a, "--skip-bad")) {
            o.skip_bad = 1;
        } else if (!strcmp(a, "--fix-utf8")) {
            o.fix_utf8 = 1;
        } else if (!strcmp(a, "--skip-empty")) {
            o.skip_empty = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            o.progress = 0;
        } else if (a[0] == '-' && a[1]) {
            pg_die("tokenize: unknown option '%s' (see `pgolf tokenize --help`)", a);
        } else {
            inputs[n_in++] = a;
        }
    }
    if (!tok) pg_die("tokenize: --tokenizer MODEL is required (see `pgolf tokenize --help`)");
    if (!o.out_dir) pg_die("tokenize: --out DIR is required (see `pgolf tokenize --help`)");
    if (n_in == 0) pg_die("tokenize: no input file given (use '-' for stdin)");
    o.inputs = inputs;
    o.n_inputs = n_in;

    char err[PG_ERRLEN];
    spm_model *m = spm_load(tok, err, sizeof(err));
    if (!m) pg_die("%s", err);
    int vocab = spm_vocab_size(m);
    if (vocab > 65536) pg_die("%s: vocabulary of %d ids does not fit the shards' uint16 tokens", tok, vocab);
    int bos = spm_bos_id(m);
    if (bos < 0 || bos >= vocab) pg_die("%s: the tokenizer has no BOS piece (bos_id %d)", tok, bos);

    tk_stats st;
    if (tokenize_run(&o, spm_enc, m, bos, vocab, &st, err, sizeof(err))) pg_die("%s", err);
    spm_free(m);
    free(inputs);
    double mb = (double)st.bytes_in / 1e6;
    long long tokens = st.tokens_val + st.tokens_train;
    printf("tokenize: %lld docs (%lld val, %lld train), %lld tokens (val %lld in %d file%s, train %lld in %d "
           "file%s) -> %s\n",
           st.docs, st.docs_val, st.docs_train, tokens, st.tokens_val, st.files_val, st.files_val == 1 ? "" : "s",
           st.tokens_train, st.files_train, st.files_train == 1 ? "" : "s", o.out_dir);
    printf("tokenize: %.1f MB of text in %.2f s (%.2f MB/s, %.0f tokens/s, %d threads); %lld empty kept, %lld "
           "empty skipped, %lld bad lines skipped, %lld lines with UTF-8 replaced, %lld blank lines ignored\n",
           mb, st.seconds, st.seconds > 0 ? mb / st.seconds : 0.0, st.seconds > 0 ? tokens / st.seconds : 0.0,
           o.threads, st.empty_kept, st.empty_skipped, st.bad_skipped, st.utf8_fixed, st.blank_lines);
    return 0;
}
