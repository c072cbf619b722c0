/* artifact.c: writing, validating and reading pgolf artifacts (see artifact.h, docs/artifact.md).
 * Every size in a file is checked against the file before it is used; each failure gives one
 * message naming the file and the problem. */
#include "artifact.h"

#include <lzma.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "json.h"

/* ---- a tiny JSON writer for the meta ---- */

typedef struct {
    char *s;
    size_t n, cap;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 64;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void jb_str(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
static void jb_fmt(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_fmt(jbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    jb_put(b, tmp, k < (int)sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}
static void jb_quoted(jbuf *b, const char *s, size_t n) {
    jb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jb_put(b, e, 2);
        } else if (c < 0x20) jb_fmt(b, "\\u%04x", c);
        else jb_put(b, (const char *)&c, 1);
    }
    jb_put(b, "\"", 1);
}
static void jb_scalar(jbuf *b, const json_value *v) {
    switch (v->type) {
    case JSON_STRING: jb_quoted(b, v->str, v->len); break;
    case JSON_NUMBER:
        if (v->is_integer) jb_fmt(b, "%lld", (long long)v->integer);
        else jb_fmt(b, "%.17g", v->number);
        break;
    case JSON_BOOL: jb_str(b, v->boolean ? "true" : "false"); break;
    default: jb_str(b, "null"); break;
    }
}

static int json_scalar_equal(const json_value *a, const json_value *b) {
    if (a->type != b->type) return 0;
    if (a->type == JSON_STRING) return a->len == b->len && !memcmp(a->str, b->str, a->len);
    if (a->type == JSON_NUMBER) return a->number == b->number && a->is_integer == b->is_integer && a->integer == b->integer;
    if (a->type == JSON_BOOL) return a->boolean == b->boolean;
    return a->type == JSON_NULL;
}

/* the run's environment: never part of the model */
static const char *const ENV_KEYS[] = {"DATA_PATH",      "TOKENIZER_PATH", "RUN_ID",     "PGOLF_OUT_DIR",  "PGOLF_LOG_DIR",
                                       "INIT_FROM",      "CHECKPOINT_EVERY", "CHECKPOINT_PATH", "RESUME", "RANK",
                                       "WORLD_SIZE",     "LOCAL_RANK",     "PGOLF_BACKEND", "PGOLF_NON_RECORD"};

static int is_env_key(const char *k) {
    for (size_t i = 0; i < sizeof(ENV_KEYS) / sizeof(*ENV_KEYS); i++)
        if (!strcmp(k, ENV_KEYS[i])) return 1;
    return 0;
}

char *artifact_config_json(const pg_config *cfg) {
    pg_config def;
    config_defaults(&def);
    char *a = config_to_json(cfg), *d = config_to_json(&def);
    config_free(&def);
    char err[PG_ERRLEN];
    json_value *ja = json_parse(a, strlen(a), "config", err, sizeof(err));
    json_value *jd = json_parse(d, strlen(d), "config", err, sizeof(err));
    PG_CHECK(ja && jd && ja->type == JSON_OBJECT);
    jbuf b = {0};
    jb_str(&b, "{");
    int first = 1;
    for (size_t i = 0; i < ja->n; i++) {
        const char *k = ja->keys[i];
        if (is_env_key(k)) continue;
        const json_value *dv = json_get(jd, k);
        if (dv && json_scalar_equal(dv, &ja->items[i])) continue;
        if (!first) jb_str(&b, ",");
        first = 0;
        jb_quoted(&b, k, strlen(k));
        jb_str(&b, ":");
        jb_scalar(&b, &ja->items[i]);
    }
    jb_str(&b, "}");
    json_free(ja);
    json_free(jd);
    free(a);
    free(d);
    return b.s;
}

/* ---- writing ---- */

static void put_codec(uint8_t *p, const pg_codec *c) {
    p[0] = (uint8_t)c->kind;
    p[1] = (uint8_t)c->level;
    p[2] = (uint8_t)c->extreme;
    p[3] = 0;
}

void artifact_assemble(const char *meta, const pg_codec *codec, const uint8_t *payload, size_t payload_len,
                       size_t payload_raw_len, const pg_codec *code_codec, const uint8_t *code, size_t code_len,
                       size_t code_raw_len, uint8_t **out, size_t *out_len) {
    size_t ml = strlen(meta);
    size_t total = ART_HEADER_BYTES + ml + payload_len + code_len;
    uint8_t *b = xcalloc(1, total);
    memcpy(b, ART_MAGIC, 8);
    pg_wr_u32(b + 8, ART_VERSION);
    pg_wr_u32(b + 12, ART_HEADER_BYTES);
    pg_wr_u64(b + 16, total);
    pg_wr_u64(b + 24, ml);
    pg_wr_u64(b + 32, payload_len);
    pg_wr_u64(b + 40, payload_raw_len);
    pg_wr_u64(b + 48, code_len);
    pg_wr_u64(b + 56, code_raw_len);
    put_codec(b + 64, codec);
    put_codec(b + 68, code_codec);
    uint8_t *m = b + ART_HEADER_BYTES;
    memcpy(m, meta, ml);
    if (payload_len) memcpy(m + ml, payload, payload_len);
    if (code_len) memcpy(m + ml + payload_len, code, code_len);
    pg_wr_u64(b + 72, lzma_crc64(m, ml, 0));
    pg_wr_u64(b + 80, lzma_crc64(m + ml, payload_len, 0));
    pg_wr_u64(b + 88, lzma_crc64(m + ml + payload_len, code_len, 0));
    pg_wr_u64(b + 96, lzma_crc64(b, 96, 0));
    *out = b;
    *out_len = total;
}

int artifact_build(const uint8_t *raw, size_t raw_len, const pg_codec *codec, const char *scheme,
                   const char *config_json, const char *meta_extra, uint8_t **out, size_t *out_len, char *err,
                   size_t errlen) {
    uint8_t *payload;
    size_t plen;
    if (codec_compress(codec, raw, raw_len, &payload, &plen, err, errlen) != 0) return -1;
    pg_codec cc;
    if (codec_parse(pgolf_src_bundle_codec, &cc, err, errlen) != 0) {
        free(payload);
        return -1;
    }
    char cl[32], ccl[32];
    codec_label(codec, cl, sizeof(cl));
    codec_label(&cc, ccl, sizeof(ccl));
    jbuf m = {0};
    jb_str(&m, "{\"format\":\"pgolf-artifact\",\"quant_scheme\":");
    jb_quoted(&m, scheme, strlen(scheme));
    jb_fmt(&m, ",\"codec\":\"%s\",\"code_codec\":\"%s\",\"code\":\"ustar archive of the sources and Makefile\",", cl, ccl);
    if (meta_extra && meta_extra[0]) {
        jb_str(&m, meta_extra);
        jb_str(&m, ",");
    }
    jb_str(&m, "\"config\":");
    jb_str(&m, config_json ? config_json : "{}");
    jb_str(&m, "}");
    artifact_assemble(m.s, codec, payload, plen, raw_len, &cc, pgolf_src_bundle, pgolf_src_bundle_len,
                      pgolf_src_bundle_raw_len, out, out_len);
    free(m.s);
    free(payload);
    return 0;
}

/* ---- reading ---- */

void artifact_free(artifact *a) {
    free(a->buf);
    free(a->meta);
    free(a->config_json);
    memset(a, 0, sizeof(*a));
}

static int get_codec(const uint8_t *p, pg_codec *c) {
    c->kind = (pg_codec_kind)p[0];
    c->level = p[1];
    c->extreme = p[2];
    return p[3] == 0 && codec_check(c) == 0 ? 0 : -1;
}

#define ART_MAX_RATIO 64
static uint64_t art_max_raw(uint64_t compressed) {
    uint64_t r = compressed * ART_MAX_RATIO, floor = (uint64_t)64 << 20;
    return r > floor ? r : floor;
}

int artifact_parse(uint8_t *buf, size_t len, const char *what, artifact *a, char *err, size_t errlen) {
    memset(a, 0, sizeof(*a));
    int rc = 0;
#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        rc = pg_err(err, errlen, __VA_ARGS__);                                                                         \
        goto fail;                                                                                                     \
    } while (0)
    if (len < 8 || memcmp(buf, ART_MAGIC, 8) != 0) {
        if (len >= 8 && !memcmp(buf, "PK\x03\x04", 4))
            FAIL("%s: not a pgolf artifact (a zip / torch.save file: use the records' own loader)", what);
        FAIL("%s: not a pgolf artifact (bad magic)", what);
    }
    if (len < 12) FAIL("%s: truncated artifact (%zu bytes, shorter than its header)", what, len);
    uint32_t ver = pg_rd_u32(buf + 8);
    if (ver != ART_VERSION) FAIL("%s: unsupported artifact version %u (this pgolf reads version %d)", what, ver, ART_VERSION);
    if (len < ART_HEADER_BYTES) FAIL("%s: truncated artifact (%zu bytes, shorter than its %d-byte header)", what, len, ART_HEADER_BYTES);
    if (pg_rd_u64(buf + 96) != lzma_crc64(buf, 96, 0)) FAIL("%s: header checksum mismatch (corrupt artifact)", what);
    if (pg_rd_u32(buf + 12) != ART_HEADER_BYTES) FAIL("%s: bad header size %u", what, pg_rd_u32(buf + 12));
    uint64_t flen = pg_rd_u64(buf + 16), ml = pg_rd_u64(buf + 24), pl = pg_rd_u64(buf + 32), prl = pg_rd_u64(buf + 40),
             cl = pg_rd_u64(buf + 48), crl = pg_rd_u64(buf + 56);
    if (flen > len) FAIL("%s: truncated artifact (%zu bytes, the header says %llu)", what, len, (unsigned long long)flen);
    if (flen < len) FAIL("%s: %llu trailing bytes after the artifact", what, (unsigned long long)(len - flen));
    if (ml > flen || pl > flen || cl > flen || ART_HEADER_BYTES + ml + pl + cl != flen)
        FAIL("%s: section sizes do not add up to the file size (corrupt artifact)", what);
    if (get_codec(buf + 64, &a->codec) != 0 || get_codec(buf + 68, &a->code_codec) != 0)
        FAIL("%s: unknown compression codec in the header", what);
    if (prl > ((uint64_t)1 << 40) || crl > ((uint64_t)1 << 32)) FAIL("%s: implausible uncompressed sizes in the header", what);
    /* a decompression bomb would make the reader allocate what the header claims: quantised weights
     * and source code compress by a few times, so more than ART_MAX_RATIO x (or 64 MiB for small
     * sections) is refused before anything is decompressed */
    if (prl > art_max_raw(pl) || crl > art_max_raw(cl))
        FAIL("%s: the header claims %llu/%llu uncompressed bytes for %llu/%llu compressed (payload/code): more than "
             "%dx, refused as a decompression bomb", what, (unsigned long long)prl, (unsigned long long)crl,
             (unsigned long long)pl, (unsigned long long)cl, ART_MAX_RATIO);
    const uint8_t *m = buf + ART_HEADER_BYTES;
    if (pg_rd_u64(buf + 72) != lzma_crc64(m, ml, 0)) FAIL("%s: checksum mismatch in the metadata (corrupt artifact)", what);
    if (pg_rd_u64(buf + 80) != lzma_crc64(m + ml, pl, 0)) FAIL("%s: checksum mismatch in the model payload (corrupt artifact)", what);
    if (pg_rd_u64(buf + 88) != lzma_crc64(m + ml + pl, cl, 0)) FAIL("%s: checksum mismatch in the code section (corrupt artifact)", what);
    a->version = ver;
    a->file_len = flen;
    a->meta_len = ml;
    a->meta = xmalloc(ml + 1);
    memcpy(a->meta, m, ml);
    a->meta[ml] = 0;
    a->payload = m + ml;
    a->payload_len = pl;
    a->payload_raw_len = prl;
    a->code = m + ml + pl;
    a->code_len = cl;
    a->code_raw_len = crl;
    {
        char sub[PG_ERRLEN];
        json_value *j = json_parse(a->meta, ml, "metadata", sub, sizeof(sub));
        if (!j) FAIL("%s: %s", what, sub);
        const json_value *s = json_get(j, "quant_scheme"), *c = json_get(j, "config");
        quant_scheme qs;
        if (j->type != JSON_OBJECT || !s || s->type != JSON_STRING || !c || c->type != JSON_OBJECT ||
            quant_scheme_parse(s->str, &qs, NULL, 0) != 0) {
            json_free(j);
            FAIL("%s: metadata lacks a valid quant_scheme or config", what);
        }
        snprintf(a->quant_scheme, sizeof(a->quant_scheme), "%s", quant_scheme_name(qs));
        jbuf b = {0};
        jb_str(&b, "{");
        for (size_t i = 0; i < c->n; i++) {
            if (i) jb_str(&b, ",");
            jb_quoted(&b, c->keys[i], c->key_lens[i]);
            jb_str(&b, ":");
            jb_scalar(&b, &c->items[i]);
        }
        jb_str(&b, "}");
        a->config_json = b.s;
        json_free(j);
    }
    a->buf = buf;
    return 0;
fail:
#undef FAIL
    free(buf);
    free(a->meta);
    free(a->config_json);
    memset(a, 0, sizeof(*a));
    return rc;
}

int artifact_read(const char *path, artifact *a, char *err, size_t errlen) {
    memset(a, 0, sizeof(*a));
    struct stat st;
    if (stat(path, &st) != 0) return pg_err(err, errlen, "%s: cannot open artifact", path);
    if (!S_ISREG(st.st_mode)) return pg_err(err, errlen, "%s: not a regular file", path);
    if ((uint64_t)st.st_size > ((uint64_t)1 << 36)) return pg_err(err, errlen, "%s: file too large to be an artifact", path);
    uint8_t *buf;
    size_t len;
    if (pg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    return artifact_parse(buf, len, path, a, err, errlen);
}

int artifact_is_artifact(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[8];
    int ok = fread(m, 1, 8, f) == 8 && !memcmp(m, ART_MAGIC, 8);
    fclose(f);
    return ok;
}

int artifact_load_qstate(const artifact *a, const char *what, qstate *q, char *err, size_t errlen) {
    qstate_init(q);
    uint8_t *raw;
    size_t rl;
    char w2[600];
    snprintf(w2, sizeof(w2), "%s: model payload", what);
    if (codec_decompress(&a->codec, a->payload, a->payload_len, a->payload_raw_len, w2, &raw, &rl, err, errlen) != 0)
        return -1;
    if (rl != a->payload_raw_len) {
        free(raw);
        return pg_err(err, errlen, "%s: model payload decompresses to %zu bytes, the header says %zu", what, rl,
                      a->payload_raw_len);
    }
    int rc = qstate_parse(raw, rl, what, q, err, errlen);
    free(raw);
    return rc;
}

int artifact_load_code(const artifact *a, const char *what, uint8_t **tar, size_t *len, char *err, size_t errlen) {
    char w2[600];
    snprintf(w2, sizeof(w2), "%s: code section", what);
    if (codec_decompress(&a->code_codec, a->code, a->code_len, a->code_raw_len, w2, tar, len, err, errlen) != 0) return -1;
    if (*len != a->code_raw_len) {
        free(*tar);
        *tar = NULL;
        return pg_err(err, errlen, "%s: code section decompresses to %zu bytes, the header says %zu", what, *len,
                      a->code_raw_len);
    }
    return 0;
}

int artifact_config(const artifact *a, pg_config *cfg, char *err, size_t errlen) {
    return artifact_config_from_json(a->config_json, cfg, err, errlen);
}

int artifact_config_from_json(const char *json, pg_config *cfg, char *err, size_t errlen) {
    config_defaults(cfg);
    char sub[PG_ERRLEN];
    if (json && config_from_json(cfg, json, sub, sizeof(sub)) != 0) {
        config_free(cfg);
        return pg_err(err, errlen, "stored configuration: %s", sub);
    }
    /* the process layout is this run's, not the stored one's (a model trained on 8 ranks is scored on any number) */
    cfg->rank = 0;
    cfg->world_size = 1;
    cfg->local_rank = 0;
    if (config_load_env(cfg, err, errlen) != 0) {
        config_free(cfg);
        return -1;
    }
    if (!cfg->int8_keep_float_fp32_name_patterns[0]) {
        free(cfg->int8_keep_float_fp32_name_patterns);
        cfg->int8_keep_float_fp32_name_patterns = xstrdup(cfg->control_tensor_name_patterns);
    }
    if (config_validate(cfg, err, errlen) != 0) {
        config_free(cfg);
        return -1;
    }
    return 0;
}
