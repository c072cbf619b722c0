/* config.c: parsing, validation, help and dumps of the configuration table in config.h. */
#include "config.h"
#include "eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"

typedef struct {
    const char *key;
    pg_cfg_type type;
    size_t offset;
    const char *def;
    double lo, hi;
    const char *help;
} cfg_key;

static const cfg_key KEYS[] = {
#define X(type, key, field, def, lo, hi, help) {#key, CFG_##type, offsetof(pg_config, field), def, lo, hi, help},
    PG_CONFIG_KEYS(X)
#undef X
};
#define N_KEYS (int)(sizeof(KEYS) / sizeof(KEYS[0]))
_Static_assert(sizeof(KEYS) / sizeof(KEYS[0]) <= 128, "grow pg_config.set_from");

/* Environment variables of the record scripts that this build does not implement yet, with the
 * value that means "off". Setting one to anything else is an error rather than a silent no-op. */
static const struct {
    const char *key, *off;
} UNIMPLEMENTED[] = {
    {"QAT_ENABLED", "0"},
    {"MTP_NUM_HEADS", "0"},      {"TTT_ENABLED", "0"},        {"TRIGRAM_VOCAB_SIZE", "0"},
    {"NUM_LOOPS", "0"},          {"PARALLEL_RESIDUAL_START", "-1"}, {"LOOP_CORE_LAYERS", "0"},
};

static int key_index(const char *key) {
    for (int k = 0; k < N_KEYS; k++)
        if (!strcmp(KEYS[k].key, key)) return k;
    return -1;
}

static void *field_ptr(pg_config *c, int k) { return (char *)c + KEYS[k].offset; }
static const void *field_cptr(const pg_config *c, int k) { return (const char *)c + KEYS[k].offset; }

static int set_value(pg_config *c, int k, const char *value, char *err, size_t errlen) {
    const cfg_key *ck = &KEYS[k];
    void *p = field_ptr(c, k);
    if (ck->type == CFG_STR) {
        free(*(char **)p);
        *(char **)p = xstrdup(value);
        return 0;
    }
    const char *s = value;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) return pg_err(err, errlen, "%s: empty value", ck->key);
    char *end;
    errno = 0;
    if (ck->type == CFG_FLOAT) {
        double v = strtod(s, &end);
        while (*end == ' ' || *end == '\t') end++;
        if (*end || errno == ERANGE || !isfinite(v))
            return pg_err(err, errlen, "%s: not a finite number: '%s'", ck->key, value);
        if (v < ck->lo || v > ck->hi)
            return pg_err(err, errlen, "%s: %s out of range [%g, %g]", ck->key, value, ck->lo, ck->hi);
        *(double *)p = v;
        return 0;
    }
    /* INT and BOOL accept integers; train_gpt.py parses them with int(), so "1.0" is rejected */
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    if (*end || errno == ERANGE || end == s)
        return pg_err(err, errlen, "%s: not an integer: '%s'", ck->key, value);
    if ((double)v < ck->lo || (double)v > ck->hi)
        return pg_err(err, errlen, "%s: %s out of range [%.0f, %.0f]", ck->key, value, ck->lo, ck->hi);
    if (ck->type == CFG_BOOL) *(int *)p = (int)v;
    else *(int64_t *)p = v;
    return 0;
}

void config_defaults(pg_config *c) {
    memset(c, 0, sizeof(*c));
    for (int k = 0; k < N_KEYS; k++) {
        char err[PG_ERRLEN];
        if (set_value(c, k, KEYS[k].def, err, sizeof(err)) != 0) pg_die("bad default: %s", err);
        strcpy(c->set_from[k], "default");
    }
}

void config_free(pg_config *c) {
    for (int k = 0; k < N_KEYS; k++)
        if (KEYS[k].type == CFG_STR) {
            free(*(char **)field_ptr(c, k));
            *(char **)field_ptr(c, k) = NULL;
        }
}

int config_set(pg_config *c, const char *key, const char *value, const char *source, char *err, size_t errlen) {
    int k = key_index(key);
    if (k < 0) {
        for (size_t u = 0; u < sizeof(UNIMPLEMENTED) / sizeof(UNIMPLEMENTED[0]); u++)
            if (!strcmp(UNIMPLEMENTED[u].key, key)) {
                if (!strcmp(UNIMPLEMENTED[u].off, value)) return 0;
                return pg_err(err, errlen, "%s=%s: this record setting is not implemented in this build of pgolf",
                              key, value);
            }
        return pg_err(err, errlen, "unknown configuration key %s", key);
    }
    if (set_value(c, k, value, err, errlen) != 0) return -1;
    snprintf(c->set_from[k], sizeof(c->set_from[k]), "%s", source);
    return 0;
}

int config_load_preset(pg_config *c, const char *path, char *err, size_t errlen) {
    uint8_t *buf;
    size_t len;
    if (pg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    char *s = (char *)buf;
    int lineno = 0, rc = 0;
    char *save = NULL;
    /* strtok_r skips empty lines, so count newlines by hand */
    for (char *line = s; line && *line && rc == 0;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        char *hash = strchr(p, '#');
        if (hash) *hash = 0;
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r')) p[--n] = 0;
        if (n) {
            if (!strncmp(p, "export ", 7)) p += 7;
            char *eq = strchr(p, '=');
            if (!eq) {
                rc = pg_err(err, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
                break;
            }
            *eq = 0;
            char *val = eq + 1;
            size_t vl = strlen(val);
            if (vl >= 2 && ((val[0] == '"' && val[vl - 1] == '"') || (val[0] == '\'' && val[vl - 1] == '\''))) {
                val[vl - 1] = 0;
                val++;
            }
            char sub[PG_ERRLEN];
            if (config_set(c, p, val, "preset", sub, sizeof(sub)) != 0) {
                rc = pg_err(err, errlen, "%s:%d: %s", path, lineno, sub);
                break;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    (void)save;
    free(buf);
    return rc;
}

int config_load_env(pg_config *c, char *err, size_t errlen) {
    for (int k = 0; k < N_KEYS; k++) {
        const char *v = getenv(KEYS[k].key);
        if (v && config_set(c, KEYS[k].key, v, "env", err, errlen) != 0) return -1;
    }
    for (size_t u = 0; u < sizeof(UNIMPLEMENTED) / sizeof(UNIMPLEMENTED[0]); u++) {
        const char *v = getenv(UNIMPLEMENTED[u].key);
        if (v && config_set(c, UNIMPLEMENTED[u].key, v, "env", err, errlen) != 0) return -1;
    }
    return 0;
}

int config_mlp_hidden(const pg_config *c) { return (int)floor(c->mlp_mult * (double)c->model_dim); }

double config_late_qat_threshold(const pg_config *c) {
    if (c->late_qat_threshold > 0) return c->late_qat_threshold;
    return c->late_qat ? c->qat_threshold : 0.0;
}

int config_layer_list(const pg_config *c, const char *s, int *out, int max) {
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == ',') s++;
        if (!*s) break;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= c->num_layers || n >= max) return -1;
        out[n++] = (int)v;
        s = end;
        while (*s == ' ') s++;
        if (*s && *s != ',') return -1;
    }
    return n;
}

int config_smear_mode(const pg_config *c) {
    const char *s = c->smear_mode;
    if (!s[0]) return c->use_smeargate ? 1 : 0;
    int m = !strcmp(s, "off") ? 0 : !strcmp(s, "pre") ? 1 : !strcmp(s, "post") ? 2 : -1;
    if (c->use_smeargate && m != 1) return -1; /* USE_SMEARGATE=1 is PR #65's variant */
    return m;
}

int config_grad_accum(const pg_config *c) { return c->world_size < 8 ? (int)(8 / c->world_size) : 1; }

double config_train_cap_seconds(const pg_config *c) {
    return c->max_wallclock_seconds > 0 ? c->max_wallclock_seconds - c->gptq_reserve_seconds : 0.0;
}

int config_validate(const pg_config *c, char *err, size_t errlen) {
    if (c->model_dim % c->num_heads)
        return pg_err(err, errlen, "MODEL_DIM=%lld must be divisible by NUM_HEADS=%lld", (long long)c->model_dim,
                      (long long)c->num_heads);
    if (c->num_heads % c->num_kv_heads)
        return pg_err(err, errlen, "NUM_HEADS=%lld must be divisible by NUM_KV_HEADS=%lld",
                      (long long)c->num_heads, (long long)c->num_kv_heads);
    if ((c->model_dim / c->num_heads) % 2)
        return pg_err(err, errlen, "head dim MODEL_DIM/NUM_HEADS=%lld must be even for RoPE",
                      (long long)(c->model_dim / c->num_heads));
    if (config_mlp_hidden(c) < 1) return pg_err(err, errlen, "MLP_MULT=%g gives an empty MLP", c->mlp_mult);
    {
        int64_t hd = c->model_dim / c->num_heads, rd = c->rope_dims ? c->rope_dims : hd;
        if (rd % 2 || rd > hd)
            return pg_err(err, errlen, "ROPE_DIMS=%lld: must be even and at most the head dim %lld",
                          (long long)c->rope_dims, (long long)hd);
        if (c->rope_ntk && rd <= 2)
            return pg_err(err, errlen, "PGOLF_ROPE_NTK=1 needs more than 2 rotary dims (ROPE_DIMS=%lld)",
                          (long long)c->rope_dims);
    }
    if (config_smear_mode(c) < 0)
        return pg_err(err, errlen, "PGOLF_SMEAR_MODE=%s: expected off, pre or post (USE_SMEARGATE=1 means pre)",
                      c->smear_mode);
    if (c->bigram_hash_buckets > 0 && c->bigram_vocab_size > 0)
        return pg_err(err, errlen, "BIGRAM_HASH_BUCKETS (PR #65) and BIGRAM_VOCAB_SIZE (PR #315) are two bigram "
                                   "tables; set only one");
    if (c->bigram_vocab_size == 1) return pg_err(err, errlen, "BIGRAM_VOCAB_SIZE=1: must be 0 (off) or >= 2");
    if (strcmp(c->mlp_activation, "relu2") && strcmp(c->mlp_activation, "leaky_relu2"))
        return pg_err(err, errlen, "PGOLF_MLP_ACTIVATION=%s: expected relu2 or leaky_relu2", c->mlp_activation);
    if (strcmp(c->init_style, "default") && strcmp(c->init_style, "ortho") && strcmp(c->init_style, "ortho_mup") &&
        strcmp(c->init_style, "banked"))
        return pg_err(err, errlen, "PGOLF_INIT_STYLE=%s: expected default, ortho, ortho_mup or banked", c->init_style);
    if (strcmp(c->opt_partition, "default") && strcmp(c->opt_partition, "banked") && strcmp(c->opt_partition, "pr187"))
        return pg_err(err, errlen, "PGOLF_OPT_PARTITION=%s: expected default, banked or pr187", c->opt_partition);
    if (strcmp(c->parallel_mode, "sum") && strcmp(c->parallel_mode, "lanes1289") && strcmp(c->parallel_mode, "lanes1334"))
        return pg_err(err, errlen, "PGOLF_PARALLEL_MODE=%s: expected sum, lanes1289 or lanes1334", c->parallel_mode);
    if (strcmp(c->export_weights, "auto") && strcmp(c->export_weights, "raw") && strcmp(c->export_weights, "ema") &&
        strcmp(c->export_weights, "swa") && strcmp(c->export_weights, "best"))
        return pg_err(err, errlen, "PGOLF_EXPORT_WEIGHTS=%s: expected auto, raw, ema, swa or best", c->export_weights);
    if (!strcmp(c->export_weights, "ema") && !c->ema_enabled)
        return pg_err(err, errlen, "PGOLF_EXPORT_WEIGHTS=ema needs EMA_ENABLED=1");
    if (!strcmp(c->export_weights, "swa") && !c->swa_enabled)
        return pg_err(err, errlen, "PGOLF_EXPORT_WEIGHTS=swa needs SWA_ENABLED=1");
    if (strcmp(c->export_names, "blocks") && strcmp(c->export_names, "banked") && strcmp(c->export_names, "pr187"))
        return pg_err(err, errlen, "PGOLF_EXPORT_NAMES=%s: expected blocks, banked or pr187", c->export_names);
    if (strcmp(c->parallel_mode, "sum") && c->parallel_start_layer >= 0 &&
        (c->parallel_start_layer < c->num_layers / 2 || c->recur_layers[0]))
        return pg_err(err, errlen, "PGOLF_PARALLEL_MODE=%s: the lanes run in decoder layers only (PARALLEL_START_LAYER >= "
                                   "NUM_LAYERS/2 = %lld) and without RECUR_LAYERS",
                      c->parallel_mode, (long long)(c->num_layers / 2));
    if (c->encoder_recurrence && (c->recur_layers[0] || c->parallel_start_layer >= 0))
        return pg_err(err, errlen, "ENCODER_RECURRENCE=1 (PR #187) is not combined with RECUR_LAYERS or PARALLEL_START_LAYER");
    {
        int tmp[64];
        int nv = c->ve_enabled ? config_layer_list(c, c->ve_layers, tmp, 16) : 0;
        int nr = config_layer_list(c, c->recur_layers, tmp, 8);
        if (nv < 0)
            return pg_err(err, errlen, "VE_LAYERS=%s: expected at most 16 comma-separated layer indices below NUM_LAYERS=%lld",
                          c->ve_layers, (long long)c->num_layers);
        if (c->ve_enabled && nv == 0) return pg_err(err, errlen, "VE_ENABLED=1 with an empty VE_LAYERS");
        if (nr < 0)
            return pg_err(err, errlen, "RECUR_LAYERS=%s: expected at most 8 comma-separated layer indices below NUM_LAYERS=%lld",
                          c->recur_layers, (long long)c->num_layers);
        if (c->parallel_start_layer >= c->num_layers)
            return pg_err(err, errlen, "PARALLEL_START_LAYER=%lld: must be below NUM_LAYERS=%lld (or -1: off)",
                          (long long)c->parallel_start_layer, (long long)c->num_layers);
    }
    if (strcmp(c->gptq_calib, "train") && strcmp(c->gptq_calib, "ar"))
        return pg_err(err, errlen, "PGOLF_GPTQ_CALIB=%s: expected train or ar", c->gptq_calib);
    if (strcmp(c->qat_mode, "off") && strcmp(c->qat_mode, "quantile") && strcmp(c->qat_mode, "rowmax"))
        return pg_err(err, errlen, "PGOLF_QAT_MODE=%s: expected off, quantile or rowmax", c->qat_mode);
    if (strcmp(c->qat_mode, "off") && c->late_qat_active && config_late_qat_threshold(c) > 0)
        return pg_err(err, errlen, "PGOLF_QAT_MODE=%s (always on) and an active late QAT (PGOLF_LATE_QAT_ACTIVE=1) exclude "
                                   "each other", c->qat_mode);
    if (8 % c->world_size && c->world_size % 8)
        return pg_err(err, errlen, "WORLD_SIZE=%lld must divide 8 (grad_accum_steps = 8 / WORLD_SIZE) or be a multiple of 8",
                      (long long)c->world_size);
    if (c->rank >= c->world_size)
        return pg_err(err, errlen, "RANK=%lld must be below WORLD_SIZE=%lld", (long long)c->rank,
                      (long long)c->world_size);
    int64_t accum = config_grad_accum(c);
    int64_t local = c->train_batch_tokens / (c->world_size * accum);
    if (c->train_batch_tokens % (c->world_size * accum) || local % c->train_seq_len || local == 0)
        return pg_err(err, errlen,
                      "TRAIN_BATCH_TOKENS=%lld must split into WORLD_SIZE*grad_accum=%lld micro-batches of whole "
                      "TRAIN_SEQ_LEN=%lld sequences",
                      (long long)c->train_batch_tokens, (long long)(c->world_size * accum),
                      (long long)c->train_seq_len);
    if (c->val_batch_size / (c->world_size * accum) < c->train_seq_len)
        return pg_err(err, errlen, "VAL_BATCH_SIZE=%lld must provide at least one sequence per rank",
                      (long long)c->val_batch_size);
    if (strcmp(c->backend, "cpu") && strcmp(c->backend, "cuda") && strcmp(c->backend, "auto"))
        return pg_err(err, errlen, "PGOLF_BACKEND=%s: expected cpu, cuda or auto", c->backend);
    if (!c->data_path[0]) return pg_err(err, errlen, "DATA_PATH is empty");
    if (c->max_wallclock_seconds > 0 && c->gptq_reserve_seconds >= c->max_wallclock_seconds)
        return pg_err(err, errlen, "GPTQ_RESERVE_SECONDS=%g leaves no training time under MAX_WALLCLOCK_SECONDS=%g",
                      c->gptq_reserve_seconds, c->max_wallclock_seconds);
    if (c->muon_wd != 0 && c->muon_weight_decay != 0 && c->muon_wd != c->muon_weight_decay)
        return pg_err(err, errlen, "MUON_WD=%g and MUON_WEIGHT_DECAY=%g disagree (they name the same decay)", c->muon_wd,
                      c->muon_weight_decay);
    if (sw_style_parse(c->sw_style) < 0)
        return pg_err(err, errlen, "PGOLF_SW_STYLE=%s: expected exact, pr65 or pr315", c->sw_style);
    if (c->eval_seq_len != 0 && c->eval_seq_len != c->train_seq_len)
        return pg_err(err, errlen, "EVAL_SEQ_LEN=%lld: an eval length other than TRAIN_SEQ_LEN=%lld is not implemented yet",
                      (long long)c->eval_seq_len, (long long)c->train_seq_len);
    if (c->eval_stride > 0 && c->eval_stride > c->train_seq_len)
        return pg_err(err, errlen, "EVAL_STRIDE=%lld must not exceed the window length %lld", (long long)c->eval_stride,
                      (long long)c->train_seq_len);
    return 0;
}

static void make_uuid4(char out[37]) {
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, 16, f) : 0;
    if (f) fclose(f);
    if (got != 16) {
        uint64_t s = (uint64_t)(pg_now() * 1e9) ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            b[i] = (unsigned char)(s >> 56);
        }
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void config_resolve(pg_config *c, const char *preset_path) {
    char err[PG_ERRLEN];
    config_defaults(c);
    if (preset_path && config_load_preset(c, preset_path, err, sizeof(err)) != 0) pg_die("%s", err);
    if (config_load_env(c, err, sizeof(err)) != 0) pg_die("%s", err);
    if (!c->run_id[0]) {
        char u[37];
        make_uuid4(u);
        free(c->run_id);
        c->run_id = xstrdup(u);
    }
    if (!c->int8_keep_float_fp32_name_patterns[0]) {
        free(c->int8_keep_float_fp32_name_patterns);
        c->int8_keep_float_fp32_name_patterns = xstrdup(c->control_tensor_name_patterns);
    }
    if (config_validate(c, err, sizeof(err)) != 0) pg_die("%s", err);
}

static void format_value(const pg_config *c, int k, char *out, size_t n, int json) {
    const void *p = field_cptr(c, k);
    switch (KEYS[k].type) {
    case CFG_STR:
        if (json) {
            size_t o = 0;
            const char *s = *(char *const *)p;
            if (o < n) out[o++] = '"';
            for (; *s && o + 8 < n; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch == '"' || ch == '\\') out[o++] = '\\', out[o++] = (char)ch;
                else if (ch < 0x20) o += (size_t)snprintf(out + o, n - o, "\\u%04x", ch);
                else out[o++] = (char)ch;
            }
            if (o + 1 < n) out[o++] = '"';
            out[o < n ? o : n - 1] = 0;
        } else snprintf(out, n, "%s", *(char *const *)p);
        break;
    case CFG_INT: snprintf(out, n, "%lld", (long long)*(const int64_t *)p); break;
    case CFG_FLOAT: snprintf(out, n, "%.17g", *(const double *)p); break;
    case CFG_BOOL: snprintf(out, n, "%d", *(const int *)p); break;
    }
}

char *config_to_json(const pg_config *c) {
    size_t cap = 4096, n = 0;
    char *s = xmalloc(cap);
    s[n++] = '{';
    for (int k = 0; k < N_KEYS; k++) {
        char v[2048];
        format_value(c, k, v, sizeof(v), 1);
        size_t need = strlen(KEYS[k].key) + strlen(v) + 8;
        if (n + need + 2 > cap) {
            cap = 2 * (n + need + 2);
            s = xrealloc(s, cap);
        }
        n += (size_t)sprintf(s + n, "%s\"%s\":%s", k ? "," : "", KEYS[k].key, v);
    }
    s[n++] = '}';
    s[n] = 0;
    return s;
}

int config_from_json(pg_config *c, const char *json, char *err, size_t errlen) {
    json_value *v = json_parse(json, strlen(json), "config", err, errlen);
    if (!v) return -1;
    int rc = 0;
    if (v->type != JSON_OBJECT) rc = pg_err(err, errlen, "config: not a JSON object");
    for (size_t i = 0; i < v->n && !rc; i++) {
        const json_value *e = &v->items[i];
        char buf[64];
        const char *val;
        if (e->type == JSON_STRING) val = e->str;
        else if (e->type == JSON_NUMBER && e->is_integer) snprintf(buf, sizeof(buf), "%lld", (long long)e->integer), val = buf;
        else if (e->type == JSON_NUMBER) snprintf(buf, sizeof(buf), "%.17g", e->number), val = buf;
        else if (e->type == JSON_BOOL) val = e->boolean ? "1" : "0";
        else {
            rc = pg_err(err, errlen, "config: %s has an unsupported value type", v->keys[i]);
            break;
        }
        rc = config_set(c, v->keys[i], val, "artifact", err, errlen);
    }
    json_free(v);
    return rc;
}

void config_print_help(void) {
    printf("Configuration (environment variables; a preset file given as `pgolf train PRESET.env`\n"
           "supplies defaults that the environment overrides):\n\n");
    for (int k = 0; k < N_KEYS; k++) printf("  %-36s default %-12s %s\n", KEYS[k].key, KEYS[k].def[0] ? KEYS[k].def : "''", KEYS[k].help);
}

void config_dump(const pg_config *c, void (*emit)(const char *line, void *ctx), void *ctx) {
    for (int k = 0; k < N_KEYS; k++) {
        char v[2048], line[2300];
        format_value(c, k, v, sizeof(v), 0);
        snprintf(line, sizeof(line), "config %s=%s (%s)", KEYS[k].key, v, c->set_from[k]);
        emit(line, ctx);
    }
}
