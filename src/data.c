/* data.c: shard reading/writing, the training token stream and loader, validation tokens (see
 * data.h and spec §1). */
#include "data.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int shard_parse(const uint8_t *buf, size_t len, const char *what, int vocab, uint16_t **tokens, size_t *n,
                char *err, size_t errlen) {
    *tokens = NULL;
    *n = 0;
    if (len < SHARD_HEADER_INTS * 4)
        return pg_err(err, errlen, "%s: truncated shard header (%zu bytes, need 1024)", what, len);
    uint32_t magic = pg_rd_u32(buf), version = pg_rd_u32(buf + 4);
    int32_t count = (int32_t)pg_rd_u32(buf + 8);
    if (magic != SHARD_MAGIC)
        return pg_err(err, errlen, "%s: wrong shard magic %u (expected %d)", what, magic, SHARD_MAGIC);
    if (version != SHARD_VERSION)
        return pg_err(err, errlen, "%s: unsupported shard version %u (expected %d)", what, version, SHARD_VERSION);
    if (count < 0) return pg_err(err, errlen, "%s: negative token count %d", what, count);
    size_t expect = (size_t)SHARD_HEADER_INTS * 4 + 2 * (size_t)count;
    if (len != expect)
        return pg_err(err, errlen, "%s: shard size mismatch: %zu bytes, header says %d tokens (%zu bytes)%s", what,
                      len, count, expect, len < expect ? ": truncated" : "");
    uint16_t *t = xmalloc_aligned(2 * (size_t)count + 2);
    const uint8_t *p = buf + SHARD_HEADER_INTS * 4;
    for (int32_t i = 0; i < count; i++) t[i] = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
    if (vocab > 0) {
        for (int32_t i = 0; i < count; i++)
            if (t[i] >= vocab) {
                int bad = t[i];
                free(t);
                return pg_err(err, errlen, "%s: token id %d at position %d is >= VOCAB_SIZE=%d", what, bad, i, vocab);
            }
    }
    *tokens = t;
    *n = (size_t)count;
    return 0;
}

int shard_load(const char *path, int vocab, uint16_t **tokens, size_t *n, char *err, size_t errlen) {
    uint8_t *buf;
    size_t len;
    if (pg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = shard_parse(buf, len, path, vocab, tokens, n, err, errlen);
    free(buf);
    return rc;
}

int shard_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen) {
    if (n > 0x7fffffffu) return pg_err(err, errlen, "%s: too many tokens for one shard (%zu)", path, n);
    size_t len = SHARD_HEADER_INTS * 4 + 2 * n;
    uint8_t *buf = xcalloc(1, len);
    pg_wr_u32(buf, SHARD_MAGIC);
    pg_wr_u32(buf + 4, SHARD_VERSION);
    pg_wr_u32(buf + 8, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        buf[SHARD_HEADER_INTS * 4 + 2 * i] = (uint8_t)tokens[i];
        buf[SHARD_HEADER_INTS * 4 + 2 * i + 1] = (uint8_t)(tokens[i] >> 8);
    }
    int rc = pg_write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    return rc;
}

int data_glob(const char *pattern, char ***files) {
    glob_t g;
    *files = NULL;
    if (glob(pattern, 0, NULL, &g) != 0) return 0;
    /* glob sorts with strcoll; re-sort by bytes to match Python's sorted() in any locale */
    char **out = xmalloc(g.gl_pathc * sizeof(char *));
    for (size_t i = 0; i < g.gl_pathc; i++) out[i] = xstrdup(g.gl_pathv[i]);
    globfree(&g);
    int n = (int)g.gl_pathc;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(out[j - 1], out[j]) > 0; j--) {
            char *t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    *files = out;
    return n;
}

void data_free_list(char **files, int n) {
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
}

static int stream_load_file(token_stream *s, int idx, char *err, size_t errlen) {
    free(s->tokens);
    s->tokens = NULL;
    s->n_tokens = 0;
    if (shard_load(s->files[idx], s->vocab, &s->tokens, &s->n_tokens, err, errlen) != 0) return -1;
    s->file_idx = idx;
    s->pos = 0;
    return 0;
}

int shard_check_header(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return pg_err(err, errlen, "%s: cannot open shard", path);
    uint8_t hdr[SHARD_HEADER_INTS * 4];
    size_t got = fread(hdr, 1, sizeof(hdr), f);
    int rc = 0;
    if (got < sizeof(hdr)) {
        rc = pg_err(err, errlen, "%s: truncated shard header (%zu bytes, need 1024)", path, got);
    } else if (fseek(f, 0, SEEK_END) != 0) {
        rc = pg_err(err, errlen, "%s: cannot determine the shard size", path);
    } else {
        long len = ftell(f);
        uint32_t magic = pg_rd_u32(hdr), version = pg_rd_u32(hdr + 4);
        int32_t count = (int32_t)pg_rd_u32(hdr + 8);
        size_t expect = (size_t)SHARD_HEADER_INTS * 4 + 2 * (size_t)(count < 0 ? 0 : count);
        if (magic != SHARD_MAGIC)
            rc = pg_err(err, errlen, "%s: wrong shard magic %u (expected %d)", path, magic, SHARD_MAGIC);
        else if (version != SHARD_VERSION)
            rc = pg_err(err, errlen, "%s: unsupported shard version %u (expected %d)", path, version, SHARD_VERSION);
        else if (count < 0)
            rc = pg_err(err, errlen, "%s: negative token count %d", path, count);
        else if (len < 0 || (size_t)len != expect)
            rc = pg_err(err, errlen, "%s: shard size mismatch: %ld bytes, header says %d tokens (%zu bytes)%s", path,
                        len, count, expect, (size_t)len < expect ? ": truncated" : "");
    }
    fclose(f);
    return rc;
}

int stream_open(token_stream *s, const char *pattern, int vocab, char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    s->vocab = vocab;
    s->n_files = data_glob(pattern, &s->files);
    if (s->n_files == 0) return pg_err(err, errlen, "%s: no files found for pattern", pattern);
    /* every shard's header and size up front, so a bad file fails now and not hours into a run */
    for (int i = 0; i < s->n_files; i++)
        if (shard_check_header(s->files[i], err, errlen) != 0) {
            stream_close(s);
            return -1;
        }
    if (stream_load_file(s, 0, err, errlen) != 0) {
        stream_close(s);
        return -1;
    }
    return 0;
}

int stream_take(token_stream *s, size_t n, uint16_t *out, char *err, size_t errlen) {
    size_t done = 0;
    int empty_in_a_row = 0;
    while (done < n) {
        size_t avail = s->n_tokens - s->pos;
        if (avail == 0) {
            if (++empty_in_a_row > s->n_files) return pg_err(err, errlen, "%s: all training shards are empty", s->files[0]);
            if (stream_load_file(s, (s->file_idx + 1) % s->n_files, err, errlen) != 0) return -1;
            continue;
        }
        empty_in_a_row = 0;
        size_t k = n - done < avail ? n - done : avail;
        memcpy(out + done, s->tokens + s->pos, k * sizeof(uint16_t));
        s->pos += k;
        done += k;
    }
    return 0;
}

int stream_seek(token_stream *s, int file_idx, size_t pos, char *err, size_t errlen) {
    if (file_idx < 0 || file_idx >= s->n_files) return pg_err(err, errlen, "stream position: bad shard index %d", file_idx);
    if (stream_load_file(s, file_idx, err, errlen) != 0) return -1;
    if (pos > s->n_tokens) return pg_err(err, errlen, "%s: stream position %zu beyond the shard", s->files[file_idx], pos);
    s->pos = pos;
    return 0;
}

void stream_close(token_stream *s) {
    free(s->tokens);
    data_free_list(s->files, s->n_files);
    memset(s, 0, sizeof(*s));
}

int loader_open(batch_loader *l, const char *pattern, int vocab, int rank, int world, char *err, size_t errlen) {
    memset(l, 0, sizeof(*l));
    l->rank = rank;
    l->world = world;
    return stream_open(&l->stream, pattern, vocab, err, errlen);
}

int loader_next(batch_loader *l, long global_tokens, int grad_accum, int32_t *x, int32_t *y, char *err,
                size_t errlen) {
    size_t local = (size_t)global_tokens / ((size_t)l->world * (size_t)grad_accum);
    size_t span = local + 1;
    size_t need = span * (size_t)l->world;
    if (need > l->chunk_cap) {
        free(l->chunk);
        l->chunk = xmalloc(need * sizeof(uint16_t));
        l->chunk_cap = need;
    }
    if (stream_take(&l->stream, need, l->chunk, err, errlen) != 0) return -1;
    const uint16_t *mine = l->chunk + (size_t)l->rank * span;
    for (size_t i = 0; i < local; i++) {
        x[i] = mine[i];
        y[i] = mine[i + 1];
    }
    return 0;
}

void loader_close(batch_loader *l) {
    stream_close(&l->stream);
    free(l->chunk);
    memset(l, 0, sizeof(*l));
}

int val_tokens_load(const char *pattern, int vocab, long seq_len, uint16_t **tokens, size_t *n_total,
                    size_t *usable, char *err, size_t errlen) {
    char **files;
    int nf = data_glob(pattern, &files);
    *tokens = NULL;
    if (nf == 0) return pg_err(err, errlen, "%s: no files found for pattern", pattern);
    uint16_t *all = NULL;
    size_t total = 0;
    for (int i = 0; i < nf; i++) {
        uint16_t *t;
        size_t n;
        if (shard_load(files[i], vocab, &t, &n, err, errlen) != 0) {
            free(all);
            data_free_list(files, nf);
            return -1;
        }
        all = xrealloc(all, (total + n + 1) * sizeof(uint16_t));
        memcpy(all + total, t, n * sizeof(uint16_t));
        total += n;
        free(t);
    }
    size_t use = total ? ((total - 1) / (size_t)seq_len) * (size_t)seq_len : 0;
    if (use == 0) {
        int rc = pg_err(err, errlen, "%s: validation split is too short for TRAIN_SEQ_LEN=%ld (%zu tokens)", files[0],
                        seq_len, total);
        free(all);
        data_free_list(files, nf);
        return rc;
    }
    data_free_list(files, nf);
    *tokens = all;
    *n_total = total;
    *usable = use;
    return 0;
}
