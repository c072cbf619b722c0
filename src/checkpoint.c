/* checkpoint.c: see checkpoint.h. */
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common.h"
#include "json.h"

#define CKPT_MAGIC "PGOLFCKP"
#define CKPT_VERSION 1
#define CKPT_BASE_ARRAYS 4

/* keys that may differ between the run that wrote a checkpoint and the run resuming it: where
 * files live, how often to log/validate/checkpoint, how long to go on, and the process layout
 * (every rank reads rank 0's checkpoint; the global batch, and so the data stream, is the same on
 * any number of ranks) */
static const char *const RESUME_MAY_CHANGE[] = {
    "DATA_PATH",       "TOKENIZER_PATH",   "RUN_ID",        "RESUME",           "CHECKPOINT_EVERY",
    "CHECKPOINT_PATH", "PGOLF_OUT_DIR",    "PGOLF_LOG_DIR", "VAL_LOSS_EVERY",   "TRAIN_LOG_EVERY",
    "ITERATIONS",      "MAX_WALLCLOCK_SECONDS", "WARMUP_STEPS", "INIT_FROM",   "PGOLF_NON_RECORD",
    "PGOLF_BACKEND",   "LOCAL_RANK",       "RANK",          "WORLD_SIZE",
};

static int may_change(const char *key) {
    for (size_t i = 0; i < sizeof(RESUME_MAY_CHANGE) / sizeof(*RESUME_MAY_CHANGE); i++)
        if (!strcmp(key, RESUME_MAY_CHANGE[i])) return 1;
    return 0;
}

typedef struct {
    FILE *f;
    uLong crc;
    int bad;
} cwriter;

static void cw(cwriter *w, const void *p, size_t n) {
    if (w->bad || n == 0) return;
    if (fwrite(p, 1, n, w->f) != n) w->bad = 1;
    for (size_t off = 0; off < n;) { /* crc32 takes uInt lengths */
        size_t k = n - off > (1u << 30) ? (1u << 30) : n - off;
        w->crc = crc32(w->crc, (const Bytef *)p + off, (uInt)k);
        off += k;
    }
}
static void cw_u32(cwriter *w, uint32_t v) {
    uint8_t b[4];
    pg_wr_u32(b, v);
    cw(w, b, 4);
}
static void cw_u64(cwriter *w, uint64_t v) {
    uint8_t b[8];
    pg_wr_u64(b, v);
    cw(w, b, 8);
}
static void cw_f64(cwriter *w, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    cw_u64(w, v);
}

static const float *array_ptr(const gpt_model *m, const optimizer *o, const float *ema, const float *swa, int i) {
    switch (i) {
    case 0: return m->w;
    case 1: return o->adam_m;
    case 2: return o->adam_v;
    case 3: return o->muon_buf;
    case 4: return ema ? ema : swa;
    default: return swa;
    }
}

int ckpt_save(const char *path, const pg_config *cfg, const gpt_model *m, const optimizer *o, const float *ema,
              const float *swa, const ckpt_progress *p, char *err, size_t errlen) {
    const int n_arrays = CKPT_BASE_ARRAYS + (ema != NULL) + (swa != NULL);
    pg_atomic_file af;
    if (pg_atomic_open(&af, path, err, errlen) != 0) return -1;
    cwriter w = {.f = af.f, .crc = crc32(0L, Z_NULL, 0)};
    char *json = config_to_json(cfg);
    size_t jl = strlen(json);
    cw(&w, CKPT_MAGIC, 8);
    cw_u32(&w, CKPT_VERSION);
    cw_u32(&w, (uint32_t)n_arrays);
    cw_u64(&w, jl);
    cw(&w, json, jl);
    free(json);
    cw_u64(&w, (uint64_t)p->step);
    cw_f64(&w, p->training_ms);
    cw_u64(&w, (uint64_t)(int64_t)p->stop_after);
    cw_u64(&w, (uint64_t)(int64_t)o->step);
    cw_u32(&w, (uint32_t)p->stream_file);
    cw_u32(&w, (uint32_t)p->swa_count);
    cw_u64(&w, p->stream_pos);
    cw_u64(&w, m->n_floats);
    float *host = xmalloc(m->n_floats * sizeof(float));
    for (int i = 0; i < n_arrays; i++) {
        m->ops->to_host(host, array_ptr(m, o, ema, swa, i), m->n_floats * sizeof(float));
        cw(&w, host, m->n_floats * sizeof(float)); /* fp32 little-endian on every supported host */
    }
    free(host);
    uint32_t crc = (uint32_t)w.crc;
    uint8_t b[4];
    pg_wr_u32(b, crc);
    if (!w.bad && fwrite(b, 1, 4, af.f) != 4) w.bad = 1;
    if (w.bad) {
        pg_atomic_abort(&af);
        return pg_err(err, errlen, "%s: write failed (disk full?)", path);
    }
    return pg_atomic_commit(&af, err, errlen);
}

/* compare the stored configuration with this run's, key by key */
static int check_config(const char *path, const char *stored, size_t len, const pg_config *cfg, char *err,
                        size_t errlen) {
    char jerr[PG_ERRLEN];
    json_value *a = json_parse(stored, len, path, jerr, sizeof(jerr));
    if (!a || a->type != JSON_OBJECT) {
        json_free(a);
        return pg_err(err, errlen, "%s: corrupt checkpoint (configuration block)", path);
    }
    char *mine = config_to_json(cfg);
    json_value *b = json_parse(mine, strlen(mine), "config", jerr, sizeof(jerr));
    free(mine);
    int rc = 0;
    for (size_t i = 0; b && i < b->n && rc == 0; i++) {
        const char *key = b->keys[i];
        if (may_change(key)) continue;
        const json_value *va = json_get(a, key), *vb = &b->items[i];
        int same = va && va->type == vb->type;
        if (same && vb->type == JSON_STRING) same = !strcmp(va->str, vb->str);
        if (same && vb->type == JSON_NUMBER) same = va->number == vb->number;
        if (same && vb->type == JSON_BOOL) same = va->boolean == vb->boolean;
        if (!same) {
            char sv[64] = "(absent)";
            if (va && va->type == JSON_STRING) snprintf(sv, sizeof(sv), "%s", va->str);
            else if (va && va->type == JSON_NUMBER) snprintf(sv, sizeof(sv), "%.17g", va->number);
            else if (va && va->type == JSON_BOOL) snprintf(sv, sizeof(sv), "%s", va->boolean ? "1" : "0");
            rc = pg_err(err, errlen, "%s: checkpoint was written with %s=%s; this run differs (only %s may change on resume)",
                        path, key, sv, "paths, logging, ITERATIONS and MAX_WALLCLOCK_SECONDS");
        }
    }
    json_free(a);
    json_free(b);
    return rc;
}

int ckpt_load(const char *path, const pg_config *cfg, gpt_model *m, optimizer *o, float *ema, float *swa,
              ckpt_progress *p, char *err, size_t errlen) {
    const uint32_t want_arrays = CKPT_BASE_ARRAYS + (ema != NULL) + (swa != NULL);
    uint8_t *buf;
    size_t len;
    if (pg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = -1;
    const size_t fixed = 8 + 4 + 4 + 8;
    if (len < fixed + 4 || memcmp(buf, CKPT_MAGIC, 8) != 0) {
        pg_err(err, errlen, "%s: not a pgolf checkpoint (bad magic or too short)", path);
        goto out;
    }
    uint32_t stored_crc = pg_rd_u32(buf + len - 4);
    uint32_t crc = 0;
    {
        uLong c = crc32(0L, Z_NULL, 0);
        for (size_t off = 0; off < len - 4;) {
            size_t k = len - 4 - off > (1u << 30) ? (1u << 30) : len - 4 - off;
            c = crc32(c, buf + off, (uInt)k);
            off += k;
        }
        crc = (uint32_t)c;
    }
    if (crc != stored_crc) {
        pg_err(err, errlen, "%s: checkpoint checksum mismatch (truncated or corrupt file)", path);
        goto out;
    }
    uint32_t version = pg_rd_u32(buf + 8), n_arrays = pg_rd_u32(buf + 12);
    uint64_t jl = pg_rd_u64(buf + 16);
    if (version != CKPT_VERSION) {
        pg_err(err, errlen, "%s: unsupported checkpoint version %u (expected %d)", path, version, CKPT_VERSION);
        goto out;
    }
    const size_t state = 8 + 8 + 8 + 8 + 4 + 4 + 8 + 8;
    if (n_arrays != want_arrays || jl > len || fixed + jl + state + 4 > len) {
        pg_err(err, errlen, "%s: corrupt checkpoint (bad sizes)", path);
        goto out;
    }
    if (check_config(path, (const char *)buf + fixed, (size_t)jl, cfg, err, errlen) != 0) goto out;
    const uint8_t *q = buf + fixed + jl;
    p->step = (long)pg_rd_u64(q);
    memcpy(&p->training_ms, q + 8, 8);
    p->stop_after = (long)(int64_t)pg_rd_u64(q + 16);
    long ostep = (long)(int64_t)pg_rd_u64(q + 24);
    p->stream_file = (int)pg_rd_u32(q + 32);
    p->swa_count = (int)pg_rd_u32(q + 36);
    p->stream_pos = (size_t)pg_rd_u64(q + 40);
    uint64_t nf = pg_rd_u64(q + 48);
    q += state;
    if (nf != m->n_floats || (size_t)(buf + len - 4 - q) != (size_t)n_arrays * nf * sizeof(float)) {
        pg_err(err, errlen, "%s: checkpoint holds %llu parameter floats, this model needs %zu", path,
               (unsigned long long)nf, m->n_floats);
        goto out;
    }
    for (uint32_t i = 0; i < n_arrays; i++) {
        m->ops->to_device((float *)array_ptr(m, o, ema, swa, (int)i), q, nf * sizeof(float));
        q += nf * sizeof(float);
    }
    o->step = ostep;
    gpt_sync_weights(m);
    rc = 0;
out:
    free(buf);
    return rc;
}
