/* statedict.c: the named-tensor container and the safetensors reader/writer (see statedict.h). */
#include "statedict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"

static const struct {
    const char *name;
    size_t size;
} DTYPES[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2}, [DT_F64] = {"F64", 8},
    [DT_I8] = {"I8", 1},   [DT_U8] = {"U8", 1},   [DT_I16] = {"I16", 2},   [DT_I32] = {"I32", 4},
    [DT_I64] = {"I64", 8},
};

size_t pg_dtype_size(pg_dtype dt) { return DTYPES[dt].size; }
const char *pg_dtype_name(pg_dtype dt) { return DTYPES[dt].name; }

int pg_dtype_from_name(const char *name, pg_dtype *dt) {
    for (int k = 0; k < DT_COUNT; k++)
        if (strcmp(DTYPES[k].name, name) == 0) {
            *dt = (pg_dtype)k;
            return 0;
        }
    return -1;
}

void sd_init(statedict *sd) { memset(sd, 0, sizeof(*sd)); }

void sd_free(statedict *sd) {
    for (int k = 0; k < sd->n; k++) {
        free(sd->t[k].name);
        free(sd->t[k].data);
    }
    free(sd->t);
    memset(sd, 0, sizeof(*sd));
}

int64_t sd_numel(const sd_tensor *t) {
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++) n *= t->shape[k];
    return n;
}

sd_tensor *sd_find(const statedict *sd, const char *name) {
    for (int k = 0; k < sd->n; k++)
        if (strcmp(sd->t[k].name, name) == 0) return &sd->t[k];
    return NULL;
}

sd_tensor *sd_add(statedict *sd, const char *name, pg_dtype dt, int ndim, const int64_t *shape,
                  const void *data) {
    PG_CHECK(ndim >= 0 && ndim <= SD_MAX_NDIM);
    if (sd_find(sd, name)) pg_die("duplicate tensor name '%s'", name);
    if (sd->n == sd->cap) {
        sd->cap = sd->cap ? 2 * sd->cap : 32;
        sd->t = xrealloc(sd->t, (size_t)sd->cap * sizeof(sd_tensor));
    }
    sd_tensor *t = &sd->t[sd->n++];
    memset(t, 0, sizeof(*t));
    t->name = xstrdup(name);
    t->dtype = dt;
    t->ndim = ndim;
    for (int k = 0; k < ndim; k++) t->shape[k] = shape[k];
    t->nbytes = (size_t)sd_numel(t) * pg_dtype_size(dt);
    t->data = xmalloc(t->nbytes);
    if (data) memcpy(t->data, data, t->nbytes);
    else memset(t->data, 0, t->nbytes);
    return t;
}

sd_tensor *sd_add_f32(statedict *sd, const char *name, int ndim, const int64_t *shape, const float *data) {
    return sd_add(sd, name, DT_F32, ndim, shape, data);
}

void sd_to_f32(const sd_tensor *t, float *out) {
    int64_t n = sd_numel(t);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        float v = 0;
        switch (t->dtype) {
        case DT_F32: memcpy(&v, p + 4 * i, 4); break;
        case DT_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); v = pg_f16_to_f32(h); break; }
        case DT_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); v = pg_bf16_to_f32(h); break; }
        case DT_F64: { double d; memcpy(&d, p + 8 * i, 8); v = (float)d; break; }
        case DT_I8: v = (float)((const int8_t *)p)[i]; break;
        case DT_U8: v = (float)p[i]; break;
        case DT_I16: { int16_t x; memcpy(&x, p + 2 * i, 2); v = (float)x; break; }
        case DT_I32: { int32_t x; memcpy(&x, p + 4 * i, 4); v = (float)x; break; }
        case DT_I64: { int64_t x; memcpy(&x, p + 8 * i, 8); v = (float)x; break; }
        default: PG_CHECK(0);
        }
        out[i] = v;
    }
}

/* ---- safetensors ---- */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof(e), "\\u%04x", c);
            sb_str(b, e);
        } else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

int safetensors_write(const char *path, const statedict *sd, const char *const *meta_kv, int n_meta,
                      char *err, size_t errlen) {
    sbuf h = {0};
    sb_str(&h, "{");
    int first = 1;
    if (meta_kv && n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) sb_str(&h, ",");
            sb_json_str(&h, meta_kv[2 * k]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_kv[2 * k + 1]);
        }
        sb_str(&h, "}");
        first = 0;
    }
    size_t off = 0;
    for (int k = 0; k < sd->n; k++) {
        const sd_tensor *t = &sd->t[k];
        char tmp[128];
        if (!first) sb_str(&h, ",");
        first = 0;
        sb_json_str(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, pg_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(tmp, sizeof(tmp), "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(&h, tmp);
        }
        snprintf(tmp, sizeof(tmp), "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        sb_str(&h, tmp);
        off += t->nbytes;
    }
    sb_str(&h, "}");
    while (h.n % 8) sb_str(&h, " "); /* align the data section to 8 bytes */
    pg_atomic_file af;
    if (pg_atomic_open(&af, path, err, errlen) != 0) {
        free(h.s);
        return -1;
    }
    uint8_t len8[8];
    pg_wr_u64(len8, (uint64_t)h.n);
    int ok = fwrite(len8, 1, 8, af.f) == 8 && fwrite(h.s, 1, h.n, af.f) == h.n;
    for (int k = 0; ok && k < sd->n; k++)
        ok = sd->t[k].nbytes == 0 || fwrite(sd->t[k].data, 1, sd->t[k].nbytes, af.f) == sd->t[k].nbytes;
    free(h.s);
    if (!ok) {
        pg_atomic_abort(&af);
        return pg_err(err, errlen, "%s: write failed", path);
    }
    return pg_atomic_commit(&af, err, errlen);
}

int safetensors_parse(const uint8_t *buf, size_t len, const char *what, statedict *sd, char *err,
                      size_t errlen) {
    sd_init(sd);
    if (len < 8) return pg_err(err, errlen, "%s: not a safetensors file (too short)", what);
    uint64_t hl = pg_rd_u64(buf);
    if (hl > len - 8 || hl > (100u << 20))
        return pg_err(err, errlen, "%s: safetensors header length %llu exceeds the file", what,
                      (unsigned long long)hl);
    json_value *root = json_parse((const char *)buf + 8, (size_t)hl, what, err, errlen);
    if (!root) return -1;
    size_t data_len = len - 8 - (size_t)hl;
    const uint8_t *data = buf + 8 + hl;
    int rc = 0;
    if (root->type != JSON_OBJECT) {
        rc = pg_err(err, errlen, "%s: safetensors header is not an object", what);
        goto done;
    }
    for (size_t k = 0; k < root->n && rc == 0; k++) {
        const char *name = root->keys[k];
        const json_value *e = &root->items[k];
        if (strcmp(name, "__metadata__") == 0) continue;
        if (strlen(name) != root->key_lens[k]) {
            rc = pg_err(err, errlen, "%s: tensor name contains NUL", what);
            break;
        }
        const json_value *jdt = json_get(e, "dtype"), *jsh = json_get(e, "shape"),
                         *jof = json_get(e, "data_offsets");
        pg_dtype dt;
        if (!jdt || jdt->type != JSON_STRING || pg_dtype_from_name(jdt->str, &dt) != 0) {
            rc = pg_err(err, errlen, "%s: tensor '%s' has a missing or unsupported dtype", what, name);
            break;
        }
        if (!jsh || jsh->type != JSON_ARRAY || jsh->n > SD_MAX_NDIM) {
            rc = pg_err(err, errlen, "%s: tensor '%s' has a bad shape", what, name);
            break;
        }
        int64_t shape[SD_MAX_NDIM];
        uint64_t numel = 1;
        for (size_t d = 0; d < jsh->n; d++) {
            const json_value *x = &jsh->items[d];
            if (x->type != JSON_NUMBER || !x->is_integer || x->integer < 0 || x->integer > (1ll << 40)) {
                rc = pg_err(err, errlen, "%s: tensor '%s' has a bad shape", what, name);
                break;
            }
            shape[d] = x->integer;
            numel *= (uint64_t)x->integer;
            if (numel > (1ull << 40)) {
                rc = pg_err(err, errlen, "%s: tensor '%s' is too large", what, name);
                break;
            }
        }
        if (rc) break;
        if (!jof || jof->type != JSON_ARRAY || jof->n != 2 || !jof->items[0].is_integer ||
            !jof->items[1].is_integer || jof->items[0].integer < 0 ||
            jof->items[1].integer < jof->items[0].integer || (uint64_t)jof->items[1].integer > data_len) {
            rc = pg_err(err, errlen, "%s: tensor '%s' has data offsets outside the file", what, name);
            break;
        }
        uint64_t nb = (uint64_t)(jof->items[1].integer - jof->items[0].integer);
        if (nb != numel * pg_dtype_size(dt)) {
            rc = pg_err(err, errlen, "%s: tensor '%s' byte size %llu does not match its shape", what, name,
                        (unsigned long long)nb);
            break;
        }
        if (sd_find(sd, name)) {
            rc = pg_err(err, errlen, "%s: duplicate tensor '%s'", what, name);
            break;
        }
        sd_add(sd, name, dt, (int)jsh->n, shape, data + jof->items[0].integer);
    }
done:
    json_free(root);
    if (rc) sd_free(sd);
    return rc;
}

int safetensors_read(const char *path, statedict *sd, char *err, size_t errlen) {
    uint8_t *buf;
    size_t len;
    sd_init(sd);
    if (pg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = safetensors_parse(buf, len, path, sd, err, errlen);
    free(buf);
    return rc;
}

/* ---- PR #1311 / #1392 weight banks ---- */

static const struct {
    const char *bank, *mat[2]; /* bank slot i: mat[0] of layer i; slot n+i: mat[1] (if any) */
} BANKS[] = {
    {"qo_bank", {"attn.c_q.weight", "attn.proj.weight"}},
    {"kv_bank", {"attn.c_k.weight", "attn.c_v.weight"}},
    {"mlp_up_bank", {"mlp.fc.weight", NULL}},
    {"mlp_down_bank", {"mlp.proj.weight", NULL}},
};
#define N_BANKS (int)(sizeof(BANKS) / sizeof(BANKS[0]))

/* bank b's slot for a tensor name "blocks.<i>.<mat>" (-1 if it is not a bank matrix) */
static int bank_slot(const char *name, int n, int *b_out) {
    int i, used = 0;
    if (sscanf(name, "blocks.%d.%n", &i, &used) != 1 || used == 0 || i < 0 || i >= n) return -1;
    for (int b = 0; b < N_BANKS; b++)
        for (int k = 0; k < 2; k++)
            if (BANKS[b].mat[k] && !strcmp(name + used, BANKS[b].mat[k])) {
                *b_out = b;
                return k * n + i;
            }
    return -1;
}

int sd_bank(const statedict *in, int n, statedict *out, char *err, size_t errlen) {
    sd_init(out);
    const sd_tensor *slot[N_BANKS][512];
    if (n < 1 || n > 256) return pg_err(err, errlen, "sd_bank: %d layers", n);
    memset(slot, 0, sizeof(slot));
    for (int t = 0; t < in->n; t++) {
        int b;
        int s = bank_slot(in->t[t].name, n, &b);
        if (s >= 0) slot[b][s] = &in->t[t];
    }
    for (int b = 0; b < N_BANKS; b++) {
        const int ns = BANKS[b].mat[1] ? 2 * n : n;
        for (int s = 0; s < ns; s++) {
            const sd_tensor *x = slot[b][s], *x0 = slot[b][0];
            const char *mat = BANKS[b].mat[s < n ? 0 : 1];
            if (!x) {
                sd_free(out);
                return pg_err(err, errlen, "sd_bank: blocks.%d.%s missing", s % n, mat);
            }
            if (x->ndim != 2 || !x0 || x->shape[0] != x0->shape[0] || x->shape[1] != x0->shape[1] || x->dtype != x0->dtype) {
                sd_free(out);
                return pg_err(err, errlen, "sd_bank: blocks.%d.%s does not match the shape/dtype of %s", s % n, mat,
                              x0 ? x0->name : "its bank");
            }
        }
    }
    int placed[N_BANKS] = {0};
    for (int t = 0; t < in->n; t++) {
        int b;
        if (bank_slot(in->t[t].name, n, &b) < 0) {
            sd_add(out, in->t[t].name, in->t[t].dtype, in->t[t].ndim, in->t[t].shape, in->t[t].data);
            continue;
        }
        if (placed[b]) continue;
        placed[b] = 1;
        const int ns = BANKS[b].mat[1] ? 2 * n : n;
        const sd_tensor *x0 = slot[b][0];
        int64_t shape[3] = {ns, x0->shape[0], x0->shape[1]};
        sd_tensor *bt = sd_add(out, BANKS[b].bank, x0->dtype, 3, shape, NULL);
        for (int s = 0; s < ns; s++) memcpy((char *)bt->data + (size_t)s * x0->nbytes, slot[b][s]->data, x0->nbytes);
    }
    return 0;
}

void sd_pr187_names(statedict *sd) {
    for (int i = 0; i < sd->n; i++)
        if (!strcmp(sd->t[i].name, "smeargate.gate")) {
            free(sd->t[i].name);
            sd->t[i].name = xstrdup("smear_gate.gate");
        }
}

int safetensors_read_records(const char *path, statedict *sd, char *err, size_t errlen) {
    statedict raw;
    char sub[PG_ERRLEN];
    sd_init(sd);
    if (safetensors_read(path, &raw, err, errlen) != 0) return -1;
    int rc = sd_unbank(&raw, sd, sub, sizeof(sub));
    sd_free(&raw);
    return rc != 0 ? pg_err(err, errlen, "%s: %s", path, sub) : 0;
}

int sd_unbank(const statedict *in, statedict *out, char *err, size_t errlen) {
    /* (also the one rename between the records: smear_gate.gate -> smeargate.gate) */
    sd_init(out);
    for (int t = 0; t < in->n; t++) {
        const sd_tensor *x = &in->t[t];
        int b = -1;
        for (int k = 0; k < N_BANKS; k++)
            if (!strcmp(x->name, BANKS[k].bank)) b = k;
        if (b < 0) { /* PR #187 names PR #65's smeargate.gate smear_gate.gate */
            const char *nm = !strcmp(x->name, "smear_gate.gate") ? "smeargate.gate" : x->name;
            if (nm != x->name && sd_find(in, nm)) {
                sd_free(out);
                return pg_err(err, errlen, "%s: given both as smear_gate.gate and smeargate.gate", nm);
            }
            sd_add(out, nm, x->dtype, x->ndim, x->shape, x->data);
            continue;
        }
        const int per = BANKS[b].mat[1] ? 2 : 1;
        if (x->ndim != 3 || x->shape[0] < per || x->shape[0] % per) {
            sd_free(out);
            return pg_err(err, errlen, "%s: a bank of shape [2n or n, rows, cols] expected", x->name);
        }
        const int n = (int)(x->shape[0] / per);
        const size_t mb = x->nbytes / (size_t)x->shape[0];
        for (int s = 0; s < (int)x->shape[0]; s++) {
            char name[128];
            snprintf(name, sizeof(name), "blocks.%d.%s", s % n, BANKS[b].mat[s / n]);
            if (sd_find(out, name) || sd_find(in, name)) {
                sd_free(out);
                return pg_err(err, errlen, "%s: %s given both banked and unbanked", x->name, name);
            }
            sd_add(out, name, x->dtype, 2, x->shape + 1, (const char *)x->data + (size_t)s * mb);
        }
    }
    return 0;
}
