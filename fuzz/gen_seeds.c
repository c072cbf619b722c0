/* gen_seeds.c: writes the seed corpora of the fuzz targets (fuzz/seeds.sh runs it; docs/fuzzing.md).
 *   gen_seeds OUT [TOKENIZER_DIR]
 * OUT/spm         small synthetic SentencePiece models (BPE with and without byte fallback, user-
 *                 defined/unused/control pieces, unigram, a denormalizer and self-test data) and,
 *                 from each .model in TOKENIZER_DIR, trimmed copies (first pieces only; with and
 *                 without the precompiled charsmap)
 * OUT/artifact    tiny artifacts (every codec, every tensor storage kind) and the bare "PGQ1"
 *                 quantised object
 * OUT/checkpoint  checkpoints of the fuzz target's 96-float model (4, 5 and 6 arrays)
 * OUT/shard       token shards (0, 5 and 300 tokens)
 * OUT/safetensors state dicts of several dtypes, and OUT/tiny_model.safetensors: a small pgolf
 *                 model (its configuration in the metadata) that seeds.sh packs with `pgolf export`. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "checkpoint.h"
#include "codec.h"
#include "common.h"
#include "data.h"
#include "fuzz_support.h"
#include "model.h"
#include "quant.h"
#include "statedict.h"

static const char *g_out;

static void put(const char *sub, const char *name, const void *data, size_t n) {
    char dir[4096], path[4096], err[PG_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/%s", g_out, sub);
    if (pg_mkdirs(dir, err, sizeof(err)) != 0) pg_die("%s", err);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (pg_write_file_atomic(path, data, n, err, sizeof(err)) != 0) pg_die("%s", err);
}

/* ---- a protobuf writer ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} pb;

static void pb_raw(pb *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = xrealloc(w->b, w->cap);
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void pb_varint(pb *w, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) c |= 0x80;
        pb_raw(w, &c, 1);
    } while (v);
}
static void pb_tag(pb *w, unsigned field, unsigned wt) { pb_varint(w, ((uint64_t)field << 3) | wt); }
static void pb_vint(pb *w, unsigned field, uint64_t v) {
    pb_tag(w, field, 0);
    pb_varint(w, v);
}
static void pb_bytes(pb *w, unsigned field, const void *p, size_t n) {
    pb_tag(w, field, 2);
    pb_varint(w, n);
    pb_raw(w, p, n);
}
static void pb_str(pb *w, unsigned field, const char *s) { pb_bytes(w, field, s, strlen(s)); }
static void pb_f32(pb *w, unsigned field, float f) {
    uint8_t b[4];
    uint32_t u;
    memcpy(&u, &f, 4);
    pg_wr_u32(b, u);
    pb_tag(w, field, 5);
    pb_raw(w, b, 4);
}
static void pb_msg(pb *w, unsigned field, pb *sub) {
    pb_bytes(w, field, sub->b, sub->n);
    free(sub->b);
    memset(sub, 0, sizeof(*sub));
}

static void add_piece(pb *m, const char *s, float score, int type) {
    pb p = {0};
    pb_str(&p, 1, s);
    pb_f32(&p, 2, score);
    if (type != 1) pb_vint(&p, 3, (uint64_t)type);
    pb_msg(m, 1, &p);
}

static void synth_models(void) {
    static const char *words[] = {"\xe2\x96\x81", "a", "b", "c", "e", "h", "l", "o", "t", "\xe2\x96\x81t", "he",
                                  "\xe2\x96\x81the", "ll", ("\xe2\x96\x81" "a"), "ab", "\xc3\xa9", "1", "2"};
    const int nw = (int)(sizeof(words) / sizeof(*words));
    for (int variant = 0; variant < 5; variant++) {
        pb m = {0};
        add_piece(&m, "<unk>", 0, 2);
        add_piece(&m, "<s>", 0, 3);
        add_piece(&m, "</s>", 0, 3);
        if (variant == 1)
            for (int b = 0; b < 256; b++) {
                char s[8];
                snprintf(s, sizeof(s), "<0x%02X>", b);
                add_piece(&m, s, 0, 6);
            }
        for (int i = 0; i < nw; i++) add_piece(&m, words[i], -(float)i, 1);
        if (variant == 2) {
            add_piece(&m, "<sep>", 0, 4);
            add_piece(&m, "zz", -50, 5);
            add_piece(&m, "\xe2\x96\x81\xe2\x96\x81", -60, 1);
        }
        pb t = {0};
        pb_vint(&t, 3, variant == 3 ? 1 : 2); /* model_type: unigram / bpe */
        pb_vint(&t, 4, (uint64_t)(nw + 3 + (variant == 1 ? 256 : 0)));
        pb_f32(&t, 10, 0.9995f);
        if (variant == 1) pb_vint(&t, 35, 1);
        if (variant == 4) {
            pb_vint(&t, 24, 1); /* treat_whitespace_as_suffix */
            pb_vint(&t, 25, 1);
            pb_str(&t, 45, "<unk>");
        }
        pb_msg(&m, 2, &t);
        pb n = {0};
        pb_str(&n, 1, "identity");
        pb_vint(&n, 3, variant != 4);
        pb_vint(&n, 4, 1);
        pb_vint(&n, 5, 1);
        pb_msg(&m, 3, &n);
        if (variant == 2) {
            pb s = {0}, smp = {0};
            pb_str(&smp, 1, "hello");
            pb_str(&smp, 2, "\xe2\x96\x81he ll o");
            pb_msg(&s, 1, &smp);
            pb_msg(&m, 4, &s);
            pb d = {0};
            pb_str(&d, 1, "identity");
            pb_vint(&d, 3, 0);
            pb_msg(&m, 5, &d);
        }
        char name[64];
        snprintf(name, sizeof(name), "synthetic_%d.model", variant);
        put("spm", name, m.b, m.n);
        free(m.b);
    }
}

/* copy a real model keeping its first `keep` pieces (and its byte pieces when byte_fallback is on),
 * optionally without the normalizer's precompiled charsmap */
static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10 && *p < end; i++) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) return *v = x, 0;
    }
    return -1;
}

static void trim_model(const char *path, const char *base, int keep, int drop_charsmap) {
    uint8_t *buf;
    size_t len;
    char err[PG_ERRLEN];
    if (pg_read_file(path, &buf, &len, err, sizeof(err)) != 0) return;
    pb out = {0};
    const uint8_t *p = buf, *end = buf + len;
    int piece = 0;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t key, n;
        if (rd_varint(&p, end, &key) || (key & 7) != 2 || rd_varint(&p, end, &n) || n > (uint64_t)(end - p)) {
            free(out.b);
            free(buf);
            return; /* not the layout SentencePiece writes: skip this model */
        }
        const uint8_t *d = p;
        p += n;
        unsigned field = (unsigned)(key >> 3);
        if (field == 1) {
            /* keep the first pieces and every byte piece (type 6) */
            int is_byte = n >= 2 && d[n - 2] == 0x18 && d[n - 1] == 6;
            if (piece++ < keep || is_byte) pb_raw(&out, start, (size_t)(p - start));
        } else if (field == 3 && drop_charsmap) {
            pb nm = {0};
            const uint8_t *q = d, *qe = d + n;
            while (q < qe) {
                const uint8_t *fs = q;
                uint64_t k2, v;
                if (rd_varint(&q, qe, &k2)) break;
                if ((k2 & 7) == 2) {
                    if (rd_varint(&q, qe, &v) || v > (uint64_t)(qe - q)) break;
                    q += v;
                } else if ((k2 & 7) == 0) {
                    if (rd_varint(&q, qe, &v)) break;
                } else
                    break;
                if ((k2 >> 3) != 2) pb_raw(&nm, fs, (size_t)(q - fs));
            }
            pb_msg(&out, 3, &nm);
        } else {
            pb_raw(&out, start, (size_t)(p - start));
        }
    }
    char name[512];
    snprintf(name, sizeof(name), "%.400s.first%d%s.model", base, keep, drop_charsmap ? ".nocharsmap" : "");
    put("spm", name, out.b, out.n);
    free(out.b);
    free(buf);
}

static void real_models(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 6, ".model")) continue;
        char path[4096], base[256];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(base, sizeof(base), "%.*s", (int)(l - 6), e->d_name);
        trim_model(path, base, 300, 1);
        trim_model(path, base, 40, 0);
    }
    closedir(d);
}

/* ---- artifacts ---- */

static qtensor *qt_new(qstate *q, const char *name, qt_kind kind, pg_dtype orig, pg_dtype stored, int bits, int ndim,
                       const int64_t *shape) {
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 16;
        q->t = xrealloc(q->t, (size_t)q->cap * sizeof(qtensor));
    }
    qtensor *t = &q->t[q->n++];
    memset(t, 0, sizeof(*t));
    t->name = xstrdup(name);
    t->kind = kind;
    t->orig = orig;
    t->stored = stored;
    t->bits = bits;
    t->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)(t->shape[i] = shape[i]);
    t->nbytes = numel * pg_dtype_size(stored);
    t->data = xcalloc(1, t->nbytes + 1);
    for (size_t i = 0; i < t->nbytes; i++) /* codes within int6 for every quantised kind */
        ((uint8_t *)t->data)[i] = kind == QT_PASS ? (uint8_t)(i * 37 + 11) : (uint8_t)(int8_t)((int)(i % 61) - 30);
    return t;
}

static void qt_scales(qtensor *t, pg_dtype sdt, size_t n) {
    t->scale_dtype = sdt;
    t->n_scale = n;
    t->scale = xcalloc(1, n * pg_dtype_size(sdt) + 1);
    for (size_t i = 0; i < n; i++) {
        if (sdt == DT_F16) ((uint16_t *)t->scale)[i] = pg_f32_to_f16(0.01f * (float)(i + 1));
        else ((float *)t->scale)[i] = 0.02f;
    }
}

static void artifacts(void) {
    qstate q;
    qstate_init(&q);
    const int64_t s23[] = {2, 3}, s4[] = {4}, s32[] = {3, 2}, s222[] = {2, 2, 2};
    qt_new(&q, "blocks.0.attn_scale", QT_PASS, DT_F32, DT_F32, 0, 1, s4);
    qt_new(&q, "blocks.0.attn.c_q.weight", QT_PASS, DT_F32, DT_F16, 0, 2, s23);
    qt_new(&q, "tok_emb.weight", QT_PASS, DT_BF16, DT_BF16, 0, 2, s32);
    qt_new(&q, "step", QT_PASS, DT_I64, DT_I64, 0, 0, NULL);
    qt_scales(qt_new(&q, "blocks.0.mlp.fc.weight", QT_ROW, DT_F32, DT_I8, 8, 2, s23), DT_F16, 2);
    qt_scales(qt_new(&q, "blocks.0.mlp.proj.weight", QT_ROW, DT_BF16, DT_I8, 6, 2, s32), DT_F16, 3);
    qt_scales(qt_new(&q, "lm_head.bias", QT_TENSOR, DT_F32, DT_I8, 8, 1, s4), DT_F32, 1);
    qt_scales(qt_new(&q, "blocks.0.attn.cube", QT_TENSOR, DT_F16, DT_I8, 6, 3, s222), DT_F16, 1);
    uint8_t *raw;
    size_t raw_len;
    qstate_serialize(&q, &raw, &raw_len);
    qstate_free(&q);
    put("artifact", "qstate.pgq1", raw, raw_len);
    /* the check: this blob parses */
    char err[PG_ERRLEN];
    if (qstate_parse(raw, raw_len, "seed", &q, err, sizeof(err)) != 0) pg_die("seed qstate: %s", err);
    qstate_free(&q);

    static const char *const codecs[] = {"none", "zlib-9", "zstd-3", "lzma-6", "brotli-5"};
    static const char *const schemes[] = {"int8_baseline", "int6_pr65", "int6_pr315", "pr453", "baseline"};
    const char *code_txt = "Makefile\0all:\n\techo pgolf\n";
    for (int i = 0; i < 5; i++) {
        pg_codec c, cc;
        if (codec_parse(codecs[i], &c, err, sizeof(err)) != 0) pg_die("%s", err);
        if (codec_parse(i % 2 ? "lzma-6" : "none", &cc, err, sizeof(err)) != 0) pg_die("%s", err);
        uint8_t *pay, *code;
        size_t pl, cl;
        if (codec_compress(&c, raw, raw_len, &pay, &pl, err, sizeof(err)) != 0) pg_die("%s", err);
        if (codec_compress(&cc, (const uint8_t *)code_txt, 26, &code, &cl, err, sizeof(err)) != 0) pg_die("%s", err);
        char meta[1024], label[32];
        codec_label(&c, label, sizeof(label));
        snprintf(meta, sizeof(meta),
                 "{\"format\":\"pgolf-artifact\",\"quant_scheme\":\"%s\",\"codec\":\"%s\",\"code_codec\":\"%s\","
                 "\"n_tensors\":8,\"config\":{\"NUM_LAYERS\":1,\"MODEL_DIM\":%d,\"NUM_HEADS\":2,\"NUM_KV_HEADS\":%d,"
                 "\"VOCAB_SIZE\":64,\"TIE_EMBEDDINGS\":%s,\"MLP_MULT\":1.5,\"EXPORT_CODEC\":\"%s\"%s}}",
                 schemes[i], label, i % 2 ? "lzma-6" : "none", 8 * (i + 1), i % 2 ? 1 : 2, i % 2 ? "false" : "true",
                 label, i == 3 ? ",\"PGOLF_SW_STYLE\":\"pr315\",\"EVAL_STRIDE\":64" : "");
        uint8_t *file;
        size_t fl;
        artifact_assemble(meta, &c, pay, pl, raw_len, &cc, code, cl, 26, &file, &fl);
        char name[64];
        snprintf(name, sizeof(name), "tiny_%s.pgolf", codecs[i]);
        put("artifact", name, file, fl);
        artifact a;
        uint8_t *copy = xmalloc(fl);
        memcpy(copy, file, fl);
        if (artifact_parse(copy, fl, name, &a, err, sizeof(err)) != 0) pg_die("seed %s", err);
        artifact_free(&a);
        free(file);
        free(pay);
        free(code);
    }
    free(raw);
}

/* ---- checkpoints, shards, safetensors ---- */

static void checkpoints(void) {
    enum { NF = 96 };
    float w[NF], am[NF], av[NF], mb[NF], ema[NF], swa[NF];
    for (int i = 0; i < NF; i++) w[i] = am[i] = av[i] = mb[i] = ema[i] = swa[i] = 0.001f * (float)i;
    gpt_model m;
    memset(&m, 0, sizeof(m));
    m.ops = &fuzz_host_ops;
    m.n_floats = NF;
    m.w = w;
    optimizer o;
    memset(&o, 0, sizeof(o));
    o.m = &m;
    o.adam_m = am;
    o.adam_v = av;
    o.muon_buf = mb;
    o.step = 7;
    pg_config cfg;
    config_defaults(&cfg);
    ckpt_progress p = {.step = 7, .training_ms = 1234.5, .stop_after = -1, .stream_file = 0, .stream_pos = 4096};
    char dir[4096], path[4200], err[PG_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/checkpoint", g_out);
    if (pg_mkdirs(dir, err, sizeof(err)) != 0) pg_die("%s", err);
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof(path), "%s/seed_%d_arrays.ckpt", dir, 4 + k);
        if (ckpt_save(path, &cfg, &m, &o, k >= 1 ? ema : NULL, k == 2 ? swa : NULL, &p, err, sizeof(err)) != 0)
            pg_die("%s", err);
    }
    config_free(&cfg);
}

static void shards(void) {
    static const size_t ns[] = {0, 5, 300};
    char dir[4096], path[4200], err[PG_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/shard", g_out);
    if (pg_mkdirs(dir, err, sizeof(err)) != 0) pg_die("%s", err);
    for (int k = 0; k < 3; k++) {
        uint16_t t[300];
        for (size_t i = 0; i < ns[k]; i++) t[i] = (uint16_t)((i * 97 + 3) % 1024);
        snprintf(path, sizeof(path), "%s/shard_%zu.bin", dir, ns[k]);
        if (shard_write(path, t, ns[k], err, sizeof(err)) != 0) pg_die("%s", err);
    }
}

static void safetensors(void) {
    char dir[4096], path[4200], err[PG_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/safetensors", g_out);
    if (pg_mkdirs(dir, err, sizeof(err)) != 0) pg_die("%s", err);
    statedict sd;
    sd_init(&sd);
    const int64_t s23[] = {2, 3}, s4[] = {4};
    static const pg_dtype dts[] = {DT_F32, DT_F16, DT_BF16, DT_F64, DT_I8, DT_U8, DT_I16, DT_I32, DT_I64};
    for (size_t i = 0; i < sizeof(dts) / sizeof(*dts); i++) {
        char name[32];
        snprintf(name, sizeof(name), "t.%s", pg_dtype_name(dts[i]));
        sd_add(&sd, name, dts[i], i % 2 ? 1 : 2, i % 2 ? s4 : s23, NULL);
    }
    sd_add(&sd, "scalar", DT_F32, 0, NULL, NULL);
    const char *meta[] = {"format", "pt", "note", "fuzz seed"};
    snprintf(path, sizeof(path), "%s/dtypes.safetensors", dir);
    if (safetensors_write(path, &sd, meta, 2, err, sizeof(err)) != 0) pg_die("%s", err);
    sd_free(&sd);

    /* a small pgolf model: tok_emb (1100 x 64) is the one tensor over 65,536 elements */
    pg_config cfg;
    config_defaults(&cfg);
    const char *kv[][2] = {{"NUM_LAYERS", "2"}, {"MODEL_DIM", "64"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                           {"VOCAB_SIZE", "1100"}, {"TRAIN_SEQ_LEN", "16"}, {"MLP_MULT", "2"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++)
        if (config_set(&cfg, kv[i][0], kv[i][1], "gen_seeds", err, sizeof(err)) != 0) pg_die("%s", err);
    gpt_model m;
    gpt_build(&m, &cfg, &fuzz_host_ops, 1, 2);
    gpt_init(&m, &cfg, 1);
    gpt_to_statedict(&m, &sd);
    gpt_free(&m);
    char *cj = artifact_config_json(&cfg);
    const char *meta2[] = {"format", "pt", "pgolf_config", cj};
    snprintf(path, sizeof(path), "%s/tiny_model.safetensors", g_out);
    if (safetensors_write(path, &sd, meta2, 2, err, sizeof(err)) != 0) pg_die("%s", err);
    free(cj);
    sd_free(&sd);
    config_free(&cfg);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: gen_seeds OUT [TOKENIZER_DIR]\n");
        return 2;
    }
    g_out = argv[1];
    synth_models();
    if (argc == 3) real_models(argv[2]);
    artifacts();
    checkpoints();
    shards();
    safetensors();
    return 0;
}
