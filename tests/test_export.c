/* test_export.c: export and artifact tests.
 *  - quantisation bit-identical (codes, scales, passthrough, dequantised values) to the PyTorch
 *    reference tests/reference/ref_export.py for every scheme, on tensors with outliers, zero rows,
 *    constant rows, exact rounding ties, bf16/fp64/int tensors, fp16 overflow and subnormals;
 *    quant_quantile equal to torch.quantile bit for bit;
 *  - the baseline's payload bytes and payload ratio for the default model (spec §2.9);
 *  - every codec and level round-trips; corrupt, truncated, oversized and trailing streams fail
 *    cleanly; streams of Python's zlib/lzma/zstandard/brotli decode in C and the reverse;
 *  - artifacts: roundtrip equals the in-memory dequantisation exactly; every corruption (truncation
 *    at many offsets, flipped bytes, wrong magic/version, trailing bytes, corrupt compressed or
 *    serialized payload behind valid checksums, tensor/shape mismatch) gives one clean error;
 *    a failed write leaves nothing behind; the embedded source bundle is a tar of the sources;
 *  - a briefly trained model: export_and_roundtrip's reloaded model, a model loaded from the
 *    artifact on disk, and the in-memory dequantised weights all evaluate identically. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/artifact.h"
#include "../src/backend.h"
#include "../src/codec.h"
#include "../src/common.h"
#include "../src/config.h"
#include "../src/eval.h"
#include "../src/export_run.h"
#include "../src/model.h"
#include "../src/optim.h"
#include "../src/quant.h"
#include "../src/statedict.h"
#include "test.h"

/* ---- helpers ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd_u64(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rnd_uniform(void) { return (float)((rnd_u64() >> 40) * (1.0 / 16777216.0)); }
static float rnd_normal(void) {
    float u1 = rnd_uniform() + 1e-7f, u2 = rnd_uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static const char *REF_DIR = "tests/reference";

/* the test state dict: every path of the three schemes */
static void make_test_statedict(statedict *sd) {
    sd_init(sd);
    rng_state = 12345;
    { /* attn matrix: outliers, a zero row, a constant row, a row of exact rounding ties */
        int64_t sh[2] = {40, 1700};
        float *w = xmalloc(40 * 1700 * sizeof(float));
        for (int r = 0; r < 40; r++)
            for (int c = 0; c < 1700; c++) {
                float v = rnd_normal() * (0.02f + 0.05f * (float)(r % 7));
                if (r % 5 == 1 && c % 97 == 3) v *= 40.0f; /* outliers */
                if (r == 7) v = 0.0f;
                if (r == 8) v = 0.3f;
                if (r == 9) v = (c % 2 ? 1.0f : -1.0f) * ((float)(c % 127) + 0.5f) / 8.0f; /* ties at step 1/8 */
                if (r == 10) v = (float)((c % 255) - 127) * 0.125f; /* max 15.875 -> int8 step exactly 1/8 */
                if (r == 11) v = 3.0f * rnd_normal();                /* clip > 1 */
                w[r * 1700 + c] = v;
            }
        w[9 * 1700 + 0] = 15.875f, w[9 * 1700 + 1] = -15.875f; /* two maxima: clip exactly 15.875 */
        sd_add_f32(sd, "blocks.0.attn.c_q.weight", 2, sh, w);
        free(w);
    }
    { /* mlp matrix with long rows (rank weight far from 1) */
        int64_t sh[2] = {3, 70001};
        float *w = xmalloc(3 * 70001 * sizeof(float));
        for (int i = 0; i < 3 * 70001; i++) w[i] = rnd_normal() * (i % 3 ? 0.1f : 2.0f);
        sd_add_f32(sd, "blocks.0.mlp.fc.weight", 2, sh, w);
        free(w);
    }
    { /* bf16 embedding */
        int64_t sh[2] = {1030, 70};
        uint16_t *b = xmalloc(1030 * 70 * 2);
        for (int i = 0; i < 1030 * 70; i++) b[i] = pg_f32_to_bf16(rnd_normal() * 0.005f * (i % 113 == 0 ? 50.0f : 1.0f));
        sd_add(sd, "tok_emb.weight", DT_BF16, 2, sh, b);
        free(b);
    }
    { /* large 1-D and 3-D tensors (per-tensor scale) */
        int64_t sh1[1] = {70000}, sh3[3] = {2, 300, 120};
        float *w = xmalloc(72000 * sizeof(float));
        for (int i = 0; i < 72000; i++) w[i] = rnd_normal() * 0.7f;
        sd_add_f32(sd, "big_vec", 1, sh1, w);
        sd_add_f32(sd, "blocks.1.attn.proj3d", 3, sh3, w);
        free(w);
    }
    { /* small tensors: control fp32, others fp16 (overflow, subnormals), fp64 kept, ints kept */
        int64_t sh[1] = {300};
        float w[300];
        for (int i = 0; i < 300; i++) w[i] = rnd_normal();
        w[0] = 70000.0f, w[1] = -1e-6f, w[2] = 3e-8f, w[3] = 6.1e-5f, w[4] = 65519.0f, w[5] = 65520.0f;
        sd_add_f32(sd, "blocks.0.attn_scale", 1, sh, w);
        sd_add_f32(sd, "blocks.0.smear.gate", 1, sh, w);
        int64_t sh2[2] = {2, 150};
        sd_add_f32(sd, "blocks.0.resid_mix", 2, sh2, w);
        sd_add_f32(sd, "skip_weights", 2, sh2, w);
        uint16_t b[300];
        for (int i = 0; i < 300; i++) b[i] = pg_f32_to_bf16(w[i]);
        sd_add(sd, "blocks.0.attn.q_gain_bf16", DT_BF16, 1, sh, b);
        double dd[300];
        for (int i = 0; i < 300; i++) dd[i] = (double)w[i] * 1.000000001;
        sd_add(sd, "extra_f64", DT_F64, 1, sh, dd);
        int64_t ii[300];
        for (int i = 0; i < 300; i++) ii[i] = i * 1000003ll;
        sd_add(sd, "step_counter", DT_I64, 1, sh, ii);
    }
}

static const char *CONTROL = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights";

static int bytes_equal(const void *a, const void *b, size_t n) { return n == 0 || memcmp(a, b, n) == 0; }

static void check_against_reference(t_state *t__, quant_scheme qs) {
    T_NEED_TORCH();
    char td[512];
    snprintf(td, sizeof(td), "%s", t_tmpdir());
    char in[1024], out[1024], err[PG_ERRLEN];
    snprintf(in, sizeof(in), "%s/in.safetensors", td);
    snprintf(out, sizeof(out), "%s/ref_%s.safetensors", td, quant_scheme_name(qs));
    statedict sd;
    make_test_statedict(&sd);
    T_ASSERT(safetensors_write(in, &sd, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(t_system("/usr/bin/python3 %s/ref_export.py %s %s --scheme %s --control %s", REF_DIR, in, out,
                      quant_scheme_name(qs), CONTROL) == 0,
             "reference failed");
    statedict ref;
    T_ASSERT(safetensors_read(out, &ref, err, sizeof(err)) == 0, "%s", err);
    quant_opts qo = {.control_patterns = CONTROL};
    qstate q;
    quant_stats st;
    T_ASSERT(quantize_statedict(&sd, qs, &qo, &q, &st, err, sizeof(err)) == 0, "%s", err);
    statedict dq;
    T_ASSERT(dequantize_qstate(&q, &dq, err, sizeof(err)) == 0, "%s", err);
    int n_quant = 0;
    for (int i = 0; i < q.n; i++) {
        const qtensor *t = &q.t[i];
        char nm[256];
        if (t->kind == QT_PASS) {
            snprintf(nm, sizeof(nm), "%s.pass", t->name);
            const sd_tensor *r = sd_find(&ref, nm);
            T_ASSERT(r, "%s: reference quantised what pgolf passes through", t->name);
            T_ASSERT(r->dtype == t->stored && r->nbytes == t->nbytes, "%s: stored as %s, reference %s", t->name,
                     pg_dtype_name(t->stored), pg_dtype_name(r->dtype));
            T_ASSERT(bytes_equal(r->data, t->data, t->nbytes), "%s: passthrough bytes differ", t->name);
        } else {
            n_quant++;
            snprintf(nm, sizeof(nm), "%s.q", t->name);
            const sd_tensor *r = sd_find(&ref, nm);
            T_ASSERT(r, "%s: reference passes through what pgolf quantises", t->name);
            T_ASSERT(r->dtype == DT_I8 && r->nbytes == t->nbytes, "%s: code layout", t->name);
            const int8_t *a = t->data, *b = r->data;
            for (size_t k = 0; k < t->nbytes; k++)
                T_ASSERT(a[k] == b[k], "%s: code %zu: pgolf %d, reference %d", t->name, k, a[k], b[k]);
            snprintf(nm, sizeof(nm), "%s.scale", t->name);
            r = sd_find(&ref, nm);
            T_ASSERT(r && r->dtype == t->scale_dtype && (size_t)sd_numel(r) == t->n_scale, "%s: scale layout", t->name);
            T_ASSERT(bytes_equal(r->data, t->scale, r->nbytes), "%s: scales differ", t->name);
        }
        snprintf(nm, sizeof(nm), "%s.deq", t->name);
        const sd_tensor *r = sd_find(&ref, nm), *d = sd_find(&dq, t->name);
        T_ASSERT(r && d && r->dtype == d->dtype && r->nbytes == d->nbytes, "%s: dequantised layout", t->name);
        T_ASSERT(bytes_equal(r->data, d->data, d->nbytes), "%s: dequantised values differ", t->name);
    }
    T_ASSERT(n_quant >= 4, "only %d tensors quantised", n_quant);
    /* the payload byte count of the record's stats */
    char meta[4096];
    snprintf(meta, sizeof(meta), "/usr/bin/python3 -c \"import json,struct,sys; f=open('%s','rb'); n=struct.unpack('<Q',f.read(8))[0]; "
             "sys.exit(0 if int(json.loads(f.read(n))['__metadata__']['payload_bytes'])==%zu else 1)\"", out, st.payload_bytes);
    T_ASSERT(t_system("%s", meta) == 0, "payload bytes %zu differ from the reference", st.payload_bytes);
    qstate_free(&q);
    sd_free(&dq);
    sd_free(&ref);
    sd_free(&sd);
}

TEST(quant_int8_baseline_matches_reference) { check_against_reference(t__, QS_INT8_BASELINE); }
TEST(quant_int6_pr65_matches_reference) { check_against_reference(t__, QS_INT6_PR65); }
TEST(quant_int6_pr315_matches_reference) { check_against_reference(t__, QS_INT6_PR315); }

TEST(quant_quantile_matches_torch) {
    T_NEED_TORCH();
    char td[512];
    snprintf(td, sizeof(td), "%s", t_tmpdir());
    /* rows of many lengths, values with ties and wide ranges; torch.quantile(|w|, q, dim=1) */
    const int lens[] = {1, 2, 3, 7, 64, 511, 512, 1024, 1536, 3000, 65537, 100003, 312501};
    char path[1024], out[1024], err[PG_ERRLEN];
    statedict sd;
    sd_init(&sd);
    rng_state = 777;
    int rows = 24;
    for (size_t li = 0; li < sizeof(lens) / sizeof(*lens); li++) {
        int n = lens[li];
        float *w = xmalloc((size_t)rows * n * sizeof(float));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < n; c++) {
                float v = fabsf(rnd_normal()) * (0.01f + (float)r);
                if (r % 4 == 3) v = (float)(rnd_u64() % 5) * 0.25f; /* many ties */
                w[(size_t)r * n + c] = v;
            }
        char nm[64];
        snprintf(nm, sizeof(nm), "len%d", n);
        int64_t sh[2] = {rows, n};
        sd_add_f32(&sd, nm, 2, sh, w);
        free(w);
    }
    { /* rows whose two largest values are far apart: where an unfused lerp would round differently */
        const int n = 65537, gr = 64;
        float *w = xmalloc((size_t)gr * n * sizeof(float));
        for (int r = 0; r < gr; r++) {
            for (int c = 0; c < n; c++) w[(size_t)r * n + c] = 0.01f * rnd_uniform();
            w[(size_t)r * n + (int)(rnd_u64() % (uint64_t)n)] = 1.0f + rnd_uniform();
            w[(size_t)r * n + (int)(rnd_u64() % (uint64_t)n)] = 0.5f * rnd_uniform();
        }
        int64_t sh[2] = {gr, n};
        sd_add_f32(&sd, "gap65537", 2, sh, w);
        free(w);
    }
    snprintf(path, sizeof(path), "%s/qin.safetensors", td);
    snprintf(out, sizeof(out), "%s/qout.safetensors", td);
    T_ASSERT(safetensors_write(path, &sd, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    int py = t_system("cd %s && /usr/bin/python3 -c \"import sys, torch; from ref_io import load_safetensors, save_safetensors; "
                      "t,_=load_safetensors('%s'); save_safetensors('%s', {k: torch.quantile(v, %.17g, dim=1) for k,v in t.items()})\"",
                      REF_DIR, path, out, QUANT_CLIP_Q);
    T_ASSERT(py == 0, "torch.quantile script failed");
    statedict ref;
    T_ASSERT(safetensors_read(out, &ref, err, sizeof(err)) == 0, "%s", err);
    long mism = 0, total = 0;
    char first[256] = "";
    for (int i = 0; i < sd.n; i++) {
        const sd_tensor *t = &sd.t[i], *r = sd_find(&ref, t->name);
        T_ASSERT(r && r->dtype == DT_F32 && sd_numel(r) == t->shape[0], "%s: reference shape", t->name);
        size_t n = (size_t)t->shape[1];
        float *tmp = xmalloc(n * sizeof(float));
        for (int row = 0; row < (int)t->shape[0]; row++) {
            memcpy(tmp, (const float *)t->data + (size_t)row * n, n * sizeof(float));
            float c = quant_quantile(tmp, n, QUANT_CLIP_Q), e = ((const float *)r->data)[row];
            total++;
            if (memcmp(&c, &e, 4) != 0) {
                if (!mism) snprintf(first, sizeof(first), "%s row %d: %.9g vs torch %.9g", t->name, row, c, e);
                mism++;
            }
        }
        free(tmp);
    }
    T_ASSERT(mism == 0, "%ld of %ld quantiles differ from torch.quantile; first %s", mism, total, first);
    sd_free(&sd);
    sd_free(&ref);
}

/* the baseline model's payload: 17,178,912 bytes and payload_ratio 3.91 (spec §2.9, NaiveBaseline log) */
TEST(quant_baseline_payload_bytes_default_model) {
    pg_config cfg;
    config_defaults(&cfg);
    gpt_model m;
    gpt_build(&m, &cfg, backend_select("cpu"), 1, 2);
    gpt_init(&m, &cfg, 1337);
    statedict sd;
    gpt_to_statedict(&m, &sd);
    quant_opts qo = {.control_patterns = cfg.control_tensor_name_patterns};
    qstate q;
    quant_stats st;
    char err[PG_ERRLEN];
    T_ASSERT(quantize_statedict(&sd, QS_INT8_BASELINE, &qo, &q, &st, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(st.payload_bytes == 17178912, "payload %zu, the record logs 17178912", st.payload_bytes);
    T_ASSERT(st.param_count == 17059912, "params %zu", st.param_count);
    char r[32];
    snprintf(r, sizeof(r), "%.2f", (double)st.baseline_tensor_bytes / (double)st.payload_bytes);
    T_ASSERT(!strcmp(r, "3.91"), "payload_ratio %s, the record logs 3.91", r);
    /* properties: codes in range, |w - deq| <= step/2 inside the clip */
    statedict dq;
    T_ASSERT(dequantize_qstate(&q, &dq, err, sizeof(err)) == 0, "%s", err);
    for (int i = 0; i < q.n; i++) {
        const qtensor *t = &q.t[i];
        if (t->kind != QT_ROW) continue;
        const sd_tensor *o = sd_find(&sd, t->name), *d = sd_find(&dq, t->name);
        size_t n = (size_t)sd_numel(o), rows = t->n_scale, cols = n / rows;
        float *a = xmalloc(n * 4), *b = xmalloc(n * 4);
        sd_to_f32(o, a);
        sd_to_f32(d, b);
        /* fp32 tensors: |w - q*fp16(s)| <= s/2 + 127*s*2^-11 (the fp16 scale rounding) unless clipped */
        for (size_t k = 0; k < n && o->dtype == DT_F32; k++) {
            float s = pg_f16_to_f32(((uint16_t *)t->scale)[k / cols]);
            T_ASSERT(fabsf(a[k] - b[k]) <= 0.57f * s || fabsf(a[k]) > 126.0f * s, "%s[%zu]: %g vs %g step %g", t->name, k, a[k],
                     b[k], s);
        }
        free(a);
        free(b);
    }
    sd_free(&dq);
    qstate_free(&q);
    sd_free(&sd);
    gpt_free(&m);
    config_free(&cfg);
}

TEST(quant_refuses_nonfinite_and_parses_schemes) {
    statedict sd;
    sd_init(&sd);
    int64_t sh[2] = {300, 300};
    float *w = xcalloc(90000, sizeof(float));
    w[1234] = NAN;
    sd_add_f32(&sd, "blocks.0.mlp.fc.weight", 2, sh, w);
    free(w);
    qstate q;
    quant_stats st;
    char err[PG_ERRLEN];
    quant_opts qo = {0};
    T_ASSERT(quantize_statedict(&sd, QS_INT8_BASELINE, &qo, &q, &st, err, sizeof(err)) != 0, "NaN accepted");
    T_ASSERT(strstr(err, "blocks.0.mlp.fc.weight") && strstr(err, "non-finite"), "error: %s", err);
    sd_free(&sd);
    quant_scheme s;
    T_ASSERT(quant_scheme_parse("pr453", &s, err, sizeof(err)) == 0 && s == QS_INT6_PR453, "pr453 alias");
    T_ASSERT(quant_scheme_parse("baseline", &s, err, sizeof(err)) == 0 && s == QS_INT8_BASELINE, "baseline alias");
    T_ASSERT(quant_scheme_parse("int4", &s, err, sizeof(err)) != 0 && strstr(err, "QUANT_SCHEME=int4"), "bad scheme: %s", err);
    char ll[48], sl[32];
    quant_labels(QS_INT8_BASELINE, "zlib-9", ll, sizeof(ll), sl, sizeof(sl));
    T_ASSERT(!strcmp(ll, "int8+zlib") && !strcmp(sl, "int8_zlib"), "labels %s %s", ll, sl);
    quant_labels(QS_INT6_PR65, "zstd-22", ll, sizeof(ll), sl, sizeof(sl));
    T_ASSERT(!strcmp(ll, "int6+zstd-22") && !strcmp(sl, "int6"), "labels %s %s", ll, sl);
    quant_labels(QS_INT8_BASELINE, "lzma-9e", ll, sizeof(ll), sl, sizeof(sl));
    T_ASSERT(!strcmp(ll, "int8+lzma-9e") && !strcmp(sl, "int8_lzma"), "labels %s %s", ll, sl);
}

/* ---- codecs ---- */

static uint8_t *test_data(size_t n) {
    uint8_t *d = xmalloc(n ? n : 1);
    rng_state = 99;
    for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(i % 251 < 100 ? (rnd_u64() % 7) : (i * 31) % 17); /* compressible */
    return d;
}

TEST(codec_roundtrip_every_codec_and_level) {
    const size_t n = 50000;
    uint8_t *d = test_data(n);
    char err[PG_ERRLEN];
    const struct {
        const char *name;
        int lo, hi, ext;
    } K[] = {{"zlib", 0, 9, 0}, {"zstd", 1, 22, 0}, {"lzma", 0, 9, 1}, {"brotli", 0, 11, 0}};
    for (size_t k = 0; k < 4; k++)
        for (int lv = K[k].lo; lv <= K[k].hi; lv++)
            for (int e = 0; e <= K[k].ext; e++) {
                char label[32];
                snprintf(label, sizeof(label), "%s-%d%s", K[k].name, lv, e ? "e" : "");
                pg_codec c;
                T_ASSERT(codec_parse(label, &c, err, sizeof(err)) == 0, "%s", err);
                char back[32];
                codec_label(&c, back, sizeof(back));
                T_ASSERT(!strcmp(back, label), "label %s -> %s", label, back);
                for (int empty = 0; empty < 2; empty++) {
                    size_t len = empty ? 0 : n;
                    uint8_t *z, *o;
                    size_t zl, ol;
                    T_ASSERT(codec_compress(&c, d, len, &z, &zl, err, sizeof(err)) == 0, "%s: %s", label, err);
                    T_ASSERT(codec_decompress(&c, z, zl, len, "t", &o, &ol, err, sizeof(err)) == 0, "%s: %s", label, err);
                    T_ASSERT(ol == len && bytes_equal(o, d, len), "%s: roundtrip differs", label);
                    if (!empty) T_ASSERT(zl < n / 2 || lv == 0, "%s: %zu bytes, no compression", label, zl);
                    free(z);
                    free(o);
                }
            }
    pg_codec c;
    T_ASSERT(codec_parse("none", &c, err, sizeof(err)) == 0 && c.kind == CODEC_NONE, "none");
    T_ASSERT(codec_parse("xz", &c, err, sizeof(err)) == 0 && c.kind == CODEC_LZMA && c.level == 9 && c.extreme, "xz");
    const char *bad[] = {"zlib-10", "zstd-0", "zstd-23", "lzma-10", "brotli-12", "gzip-9", "zlib-", "zlib-9e", "", "none-1", "zlib-9x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        T_ASSERT(codec_parse(bad[i], &c, err, sizeof(err)) != 0 && strstr(err, "unknown codec"), "accepted '%s'", bad[i]);
    free(d);
}

TEST(codec_corrupt_streams_fail_cleanly) {
    const size_t n = 20000;
    uint8_t *d = test_data(n);
    char err[PG_ERRLEN];
    const char *labels[] = {"zlib-9", "zstd-22", "lzma-9e", "brotli-11"};
    for (int k = 0; k < 4; k++) {
        pg_codec c;
        codec_parse(labels[k], &c, err, sizeof(err));
        uint8_t *z, *o;
        size_t zl, ol;
        T_ASSERT(codec_compress(&c, d, n, &z, &zl, err, sizeof(err)) == 0, "%s", err);
        /* truncation at every offset */
        for (size_t cut = 0; cut < zl; cut++) {
            int rc = codec_decompress(&c, z, cut, n, "t", &o, &ol, err, sizeof(err));
            T_ASSERT(rc != 0, "%s: stream cut at %zu of %zu decoded", labels[k], cut, zl);
            T_ASSERT(!strncmp(err, "t: ", 3), "%s: message '%s'", labels[k], err);
        }
        /* trailing bytes */
        uint8_t *zt = xmalloc(zl + 3);
        memcpy(zt, z, zl);
        memcpy(zt + zl, "xyz", 3);
        T_ASSERT(codec_decompress(&c, zt, zl + 3, n, "t", &o, &ol, err, sizeof(err)) != 0, "%s: trailing bytes accepted", labels[k]);
        /* a bomb: more output than allowed */
        T_ASSERT(codec_decompress(&c, z, zl, n - 1, "t", &o, &ol, err, sizeof(err)) != 0 && strstr(err, "more than"),
                 "%s: limit not enforced (%s)", labels[k], err);
        /* flipped bytes: an error or (rarely, brotli/lzma without checks on that byte) other data, never a crash */
        int errors = 0;
        for (size_t pos = 0; pos < zl; pos += 1 + zl / 200) {
            memcpy(zt, z, zl);
            zt[pos] ^= 0x5a;
            if (codec_decompress(&c, zt, zl, n, "t", &o, &ol, err, sizeof(err)) != 0) errors++;
            else {
                T_ASSERT(ol <= n, "output above the limit");
                free(o);
            }
        }
        T_ASSERT(errors > 0, "%s: no corruption detected", labels[k]);
        free(zt);
        free(z);
    }
    free(d);
}

static int have_py_module(const char *m) { return t_system("/usr/bin/python3 -c 'import %s' 2>/dev/null", m) == 0; }

TEST(codec_python_interop) {
    if (!have_py_module("zlib")) T_SKIP("/usr/bin/python3 absent");
    char td[512];
    snprintf(td, sizeof(td), "%s", t_tmpdir());
    const size_t n = 30000;
    uint8_t *d = test_data(n);
    char err[PG_ERRLEN], raw[1024];
    snprintf(raw, sizeof(raw), "%s/raw.bin", td);
    T_ASSERT(pg_write_file_atomic(raw, d, n, err, sizeof(err)) == 0, "%s", err);
    const struct {
        const char *label, *module, *comp, *decomp;
        int identical; /* same library underneath: byte-identical output expected */
    } K[] = {
        {"zlib-9", "zlib", "zlib.compress(r, 9)", "zlib.decompress(z)", 1},
        {"lzma-9", "lzma", "lzma.compress(r, preset=9)", "lzma.decompress(z)", 1},
        {"lzma-9e", "lzma", "lzma.compress(r, preset=9 | lzma.PRESET_EXTREME)", "lzma.decompress(z)", 1},
        {"zstd-22", "zstandard", "zstandard.ZstdCompressor(level=22).compress(r)", "zstandard.ZstdDecompressor().decompress(z)", 0},
        {"brotli-11", "brotli", "brotli.compress(r, quality=11)", "brotli.decompress(z)", 0},
    };
    int skipped = 0;
    char skipped_names[128] = "";
    for (size_t k = 0; k < sizeof(K) / sizeof(*K); k++) {
        if (!have_py_module(K[k].module)) {
            skipped++;
            strcat(skipped_names, K[k].module);
            strcat(skipped_names, " ");
            continue;
        }
        pg_codec c;
        T_ASSERT(codec_parse(K[k].label, &c, err, sizeof(err)) == 0, "%s", err);
        char pyz[1024], cz[1024], back[1024];
        snprintf(pyz, sizeof(pyz), "%s/py_%s.z", td, K[k].label);
        snprintf(cz, sizeof(cz), "%s/c_%s.z", td, K[k].label);
        snprintf(back, sizeof(back), "%s/back_%s.bin", td, K[k].label);
        T_ASSERT(t_system("/usr/bin/python3 -c \"import %s; r=open('%s','rb').read(); open('%s','wb').write(%s)\"", K[k].module, raw,
                          pyz, K[k].comp) == 0,
                 "python %s compress failed", K[k].module);
        uint8_t *z, *o;
        size_t zl, ol;
        T_ASSERT(pg_read_file(pyz, &z, &zl, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(codec_decompress(&c, z, zl, n, "py", &o, &ol, err, sizeof(err)) == 0, "%s: python stream: %s", K[k].label, err);
        T_ASSERT(ol == n && bytes_equal(o, d, n), "%s: python stream decodes differently", K[k].label);
        free(o);
        uint8_t *cz_b;
        size_t czl;
        T_ASSERT(codec_compress(&c, d, n, &cz_b, &czl, err, sizeof(err)) == 0, "%s", err);
        if (K[k].identical) T_ASSERT(czl == zl && bytes_equal(cz_b, z, zl), "%s: C stream differs from Python's", K[k].label);
        free(z);
        T_ASSERT(pg_write_file_atomic(cz, cz_b, czl, err, sizeof(err)) == 0, "%s", err);
        free(cz_b);
        T_ASSERT(t_system("/usr/bin/python3 -c \"import %s; z=open('%s','rb').read(); open('%s','wb').write(%s)\"", K[k].module, cz,
                          back, K[k].decomp) == 0,
                 "python %s cannot decode the C stream", K[k].module);
        T_ASSERT(pg_read_file(back, &o, &ol, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(ol == n && bytes_equal(o, d, n), "%s: python decodes the C stream differently", K[k].label);
        free(o);
    }
    free(d);
    if (skipped) T_SKIP("python modules absent: %s(apt-get install python3-zstandard python3-brotli)", skipped_names);
}

/* ---- artifacts ---- */

static void small_cfg(pg_config *cfg) {
    char err[PG_ERRLEN];
    config_defaults(cfg);
    const char *kv[][2] = {{"NUM_LAYERS", "2"}, {"MODEL_DIM", "128"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                           {"VOCAB_SIZE", "1024"}, {"TRAIN_SEQ_LEN", "32"}, {"TRAIN_BATCH_TOKENS", "2048"},
                           {"VAL_BATCH_SIZE", "2048"}, {"MLP_MULT", "2"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++) PG_CHECK(config_set(cfg, kv[i][0], kv[i][1], "test", err, sizeof(err)) == 0);
    free(cfg->int8_keep_float_fp32_name_patterns);
    cfg->int8_keep_float_fp32_name_patterns = xstrdup(cfg->control_tensor_name_patterns);
}

static void set_str(pg_config *cfg, const char *k, const char *v) {
    char err[PG_ERRLEN];
    PG_CHECK(config_set(cfg, k, v, "test", err, sizeof(err)) == 0);
}

/* a model with non-trivial weights (every tensor random) */
static void random_model(gpt_model *m, const pg_config *cfg, int B, int T, uint64_t seed) {
    gpt_build(m, cfg, backend_select("cpu"), B, T);
    gpt_init(m, cfg, seed);
    rng_state = seed * 7 + 1;
    float *h = xmalloc(m->n_floats * sizeof(float));
    m->ops->to_host(h, m->w, m->n_floats * sizeof(float));
    for (int i = 0; i < m->n_params; i++)
        for (size_t k = 0; k < m->params[i].numel; k++) {
            float *v = &h[m->params[i].offset + k];
            *v += 0.05f * rnd_normal();
            if (m->params[i].sd_dtype == DT_BF16) *v = pg_round_bf16(*v); /* as the state dict stores it */
        }
    m->ops->to_device(m->w, h, m->n_floats * sizeof(float));
    free(h);
    gpt_sync_weights(m);
}

static int sd_equal(const statedict *a, const statedict *b, char *why, size_t n) {
    if (a->n != b->n) return snprintf(why, n, "%d vs %d tensors", a->n, b->n), 0;
    for (int i = 0; i < a->n; i++) {
        const sd_tensor *x = &a->t[i], *y = sd_find(b, x->name);
        if (!y) return snprintf(why, n, "%s missing", x->name), 0;
        if (x->dtype != y->dtype || x->nbytes != y->nbytes || !bytes_equal(x->data, y->data, x->nbytes))
            return snprintf(why, n, "%s differs", x->name), 0;
    }
    return 1;
}

TEST(artifact_roundtrip_equals_dequantised_weights) {
    const char *schemes[][2] = {{"int8_baseline", "zlib-9"}, {"int6_pr65", "zstd-22"}, {"int6_pr315", "lzma-9e"}, {"int8_baseline", "brotli-11"}};
    for (int s = 0; s < 4; s++) {
        pg_config cfg;
        small_cfg(&cfg);
        set_str(&cfg, "QUANT_SCHEME", schemes[s][0]);
        set_str(&cfg, "EXPORT_CODEC", schemes[s][1]);
        gpt_model m;
        random_model(&m, &cfg, 1, 8, 11 + (uint64_t)s);
        statedict sd, mem, disk;
        gpt_to_statedict(&m, &sd);
        char path[1024], err[PG_ERRLEN], why[256];
        snprintf(path, sizeof(path), "%s/a%d.pgolf", t_tmpdir(), s);
        export_sizes sz;
        T_ASSERT(export_pack(&cfg, &sd, path, &sz, err, sizeof(err)) == 0, "%s", err);
        struct stat st;
        T_ASSERT(stat(path, &st) == 0 && (size_t)st.st_size == sz.file_bytes, "file size %zu vs %zu", (size_t)st.st_size, sz.file_bytes);
        T_ASSERT(sz.model_bytes + sz.code_bytes == sz.file_bytes && sz.code_bytes == pgolf_src_bundle_len, "byte accounting");
        quant_scheme qs;
        quant_scheme_parse(schemes[s][0], &qs, err, sizeof(err));
        quant_opts qo = {.control_patterns = cfg.control_tensor_name_patterns, .keep_fp32_patterns = cfg.int8_keep_float_fp32_name_patterns};
        qstate q;
        quant_stats qst;
        T_ASSERT(quantize_statedict(&sd, qs, &qo, &q, &qst, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(dequantize_qstate(&q, &mem, err, sizeof(err)) == 0, "%s", err);
        qstate_free(&q);
        artifact_sizes as;
        T_ASSERT(export_load_artifact(path, &disk, &as, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(sd_equal(&mem, &disk, why, sizeof(why)), "%s/%s: %s", schemes[s][0], schemes[s][1], why);
        T_ASSERT(as.file_bytes == sz.file_bytes && as.code_bytes == sz.code_bytes, "sizes on reload");
        /* the stored configuration rebuilds the same model */
        artifact a;
        T_ASSERT(artifact_read(path, &a, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(!strcmp(a.quant_scheme, schemes[s][0]), "scheme %s", a.quant_scheme);
        pg_config c2;
        T_ASSERT(artifact_config(&a, &c2, err, sizeof(err)) == 0, "%s", err);
        T_ASSERT(c2.model_dim == 128 && c2.num_layers == 2 && c2.num_heads == 4 && c2.train_seq_len == 32, "stored config");
        gpt_model m2;
        gpt_build(&m2, &c2, backend_select("cpu"), 1, 8);
        T_ASSERT(gpt_from_statedict(&m2, &disk, path, err, sizeof(err)) == 0, "%s", err);
        gpt_free(&m2);
        config_free(&c2);
        artifact_free(&a);
        sd_free(&sd);
        sd_free(&mem);
        sd_free(&disk);
        gpt_free(&m);
        config_free(&cfg);
    }
}

/* every corruption of an artifact gives one clean error */
TEST(artifact_corruption_clean_errors) {
    pg_config cfg;
    small_cfg(&cfg);
    gpt_model m;
    random_model(&m, &cfg, 1, 8, 5);
    statedict sd;
    gpt_to_statedict(&m, &sd);
    char path[1024], err[PG_ERRLEN];
    snprintf(path, sizeof(path), "%s/good.pgolf", t_tmpdir());
    export_sizes sz;
    T_ASSERT(export_pack(&cfg, &sd, path, &sz, err, sizeof(err)) == 0, "%s", err);
    uint8_t *good;
    size_t len;
    T_ASSERT(pg_read_file(path, &good, &len, err, sizeof(err)) == 0, "%s", err);
    artifact a;
#define PARSE_FAILS(buf_, len_, pat_)                                                                                   \
    do {                                                                                                                \
        uint8_t *b_ = xmalloc((len_) + 1);                                                                              \
        memcpy(b_, (buf_), (len_));                                                                                     \
        int rc_ = artifact_parse(b_, (len_), "x.pgolf", &a, err, sizeof(err));                                          \
        if (rc_ == 0) artifact_free(&a);                                                                                \
        T_ASSERT(rc_ != 0, "accepted (%s)", #pat_);                                                                     \
        T_ASSERT(!strncmp(err, "x.pgolf: ", 9) && strstr(err, pat_), "error '%s' lacks '%s'", err, pat_);               \
    } while (0)
    /* truncation: every offset in the header and metadata, then a sample */
    size_t meta_end = ART_HEADER_BYTES + pg_rd_u64(good + 24);
    for (size_t cut = 0; cut < len; cut += cut < meta_end + 64 ? 1 : 1 + len / 500) {
        const char *pat = cut < 8 ? "bad magic" : (cut < ART_HEADER_BYTES ? "truncated" : "truncated");
        PARSE_FAILS(good, cut, pat);
    }
    /* trailing garbage */
    uint8_t *big = xmalloc(len + 10);
    memcpy(big, good, len);
    memset(big + len, 0xab, 10);
    PARSE_FAILS(big, len + 10, "10 trailing bytes");
    free(big);
    uint8_t *bad = xmalloc(len);
    /* wrong magic, foreign zip, wrong version (with a valid header checksum) */
    memcpy(bad, good, len);
    bad[3] ^= 1;
    PARSE_FAILS(bad, len, "bad magic");
    memcpy(bad, good, len);
    memcpy(bad, "PK\x03\x04", 4);
    PARSE_FAILS(bad, len, "torch.save");
    memcpy(bad, good, len);
    pg_wr_u32(bad + 8, 2);
    PARSE_FAILS(bad, len, "unsupported artifact version 2");
    /* a flipped byte anywhere: checksum error (header, metadata, payload or code) */
    for (size_t pos = 12; pos < len; pos += pos < meta_end ? 1 : 1 + len / 300) {
        memcpy(bad, good, len);
        bad[pos] ^= 0x10;
        PARSE_FAILS(bad, len, pos < 104 ? "" : "checksum mismatch");
        if (pos >= 96 && pos < 104) T_ASSERT(strstr(err, "header checksum"), "pos %zu: %s", pos, err);
    }
    free(bad);
    free(good);
    /* corrupt compressed payload / serialized object / code behind valid checksums */
    pg_codec z9, cc;
    codec_parse("zlib-9", &z9, err, sizeof(err));
    codec_parse(pgolf_src_bundle_codec, &cc, err, sizeof(err));
    const char *meta = "{\"quant_scheme\":\"int8_baseline\",\"config\":{}}";
    uint8_t junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 1);
    uint8_t *f;
    size_t fl;
    artifact_assemble(meta, &z9, junk, 64, 1000, &cc, pgolf_src_bundle, pgolf_src_bundle_len, pgolf_src_bundle_raw_len, &f, &fl);
    T_ASSERT(artifact_parse(f, fl, "x.pgolf", &a, err, sizeof(err)) == 0, "%s", err);
    qstate q;
    T_ASSERT(artifact_load_qstate(&a, "x.pgolf", &q, err, sizeof(err)) != 0 && strstr(err, "corrupt zlib stream"), "corrupt stream: %s", err);
    artifact_free(&a);
    uint8_t *zj;
    size_t zjl;
    T_ASSERT(codec_compress(&z9, junk, 64, &zj, &zjl, err, sizeof(err)) == 0, "%s", err);
    artifact_assemble(meta, &z9, zj, zjl, 64, &cc, junk, 64, 64, &f, &fl);
    T_ASSERT(artifact_parse(f, fl, "x.pgolf", &a, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(artifact_load_qstate(&a, "x.pgolf", &q, err, sizeof(err)) != 0 && strstr(err, "not a pgolf quantised object"), "junk payload: %s", err);
    uint8_t *tar;
    size_t tl;
    T_ASSERT(artifact_load_code(&a, "x.pgolf", &tar, &tl, err, sizeof(err)) != 0 && strstr(err, "code section"), "junk code: %s", err);
    artifact_free(&a);
    /* a wrong uncompressed size in the header */
    artifact_assemble(meta, &z9, zj, zjl, 65, &cc, pgolf_src_bundle, pgolf_src_bundle_len, pgolf_src_bundle_raw_len, &f, &fl);
    T_ASSERT(artifact_parse(f, fl, "x.pgolf", &a, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(artifact_load_qstate(&a, "x.pgolf", &q, err, sizeof(err)) != 0 && strstr(err, "the header says 65"), "raw size: %s", err);
    artifact_free(&a);
    free(zj);
    /* bad metadata */
    artifact_assemble("{\"quant_scheme\":\"int9\",\"config\":{}}", &z9, junk, 1, 1, &cc, junk, 1, 1, &f, &fl);
    T_ASSERT(artifact_parse(f, fl, "x.pgolf", &a, err, sizeof(err)) != 0 && strstr(err, "quant_scheme"), "meta: %s", err);
    artifact_assemble("{not json", &z9, junk, 1, 1, &cc, junk, 1, 1, &f, &fl);
    T_ASSERT(artifact_parse(f, fl, "x.pgolf", &a, err, sizeof(err)) != 0 && strstr(err, "x.pgolf: metadata"), "meta json: %s", err);
    /* a tensor/shape mismatch: the artifact of one configuration loaded into another */
    statedict dq;
    T_ASSERT(export_load_artifact(path, &dq, NULL, err, sizeof(err)) == 0, "%s", err);
    pg_config c3;
    small_cfg(&c3);
    set_str(&c3, "MODEL_DIM", "64");
    gpt_model m3;
    gpt_build(&m3, &c3, backend_select("cpu"), 1, 8);
    T_ASSERT(gpt_from_statedict(&m3, &dq, path, err, sizeof(err)) != 0 && strstr(err, "shape"), "shape mismatch: %s", err);
    gpt_free(&m3);
    set_str(&c3, "MODEL_DIM", "128");
    set_str(&c3, "NUM_LAYERS", "1");
    gpt_build(&m3, &c3, backend_select("cpu"), 1, 8);
    T_ASSERT(gpt_from_statedict(&m3, &dq, path, err, sizeof(err)) != 0 && strstr(err, "unexpected tensor"), "name mismatch: %s", err);
    gpt_free(&m3);
    config_free(&c3);
    sd_free(&dq);
    /* missing file */
    T_ASSERT(artifact_read("/nonexistent/x.pgolf", &a, err, sizeof(err)) != 0 && strstr(err, "/nonexistent/x.pgolf"), "missing: %s", err);
    sd_free(&sd);
    gpt_free(&m);
    config_free(&cfg);
#undef PARSE_FAILS
}

/* the serialized quantised object under random corruption: an error or a valid object, never a crash */
TEST(quant_serialized_fuzz) {
    statedict sd;
    make_test_statedict(&sd);
    quant_opts qo = {.control_patterns = CONTROL};
    qstate q, q2;
    quant_stats st;
    char err[PG_ERRLEN];
    T_ASSERT(quantize_statedict(&sd, QS_INT6_PR65, &qo, &q, &st, err, sizeof(err)) == 0, "%s", err);
    uint8_t *raw;
    size_t rl;
    qstate_serialize(&q, &raw, &rl);
    T_ASSERT(qstate_parse(raw, rl, "p", &q2, err, sizeof(err)) == 0, "%s", err);
    uint8_t *r2, *bad = xmalloc(rl);
    size_t rl2;
    qstate_serialize(&q2, &r2, &rl2);
    T_ASSERT(rl2 == rl && bytes_equal(r2, raw, rl), "serialize(parse(x)) != x");
    free(r2);
    qstate_free(&q2);
    size_t table_end = 8;
    for (int i = 0; i < q.n; i++) table_end += 2 + strlen(q.t[i].name) + 6 + 8 * (size_t)q.t[i].ndim + 8;
    rng_state = 4242;
    int rejected = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(bad, raw, rl);
        size_t cut = rl;
        int mode = it % 3;
        if (mode == 0) bad[rnd_u64() % table_end] ^= (uint8_t)(1u << (rnd_u64() % 8));
        else if (mode == 1) cut = rnd_u64() % rl;
        else
            for (int k = 0; k < 4; k++) bad[rnd_u64() % table_end] = (uint8_t)rnd_u64();
        int rc = qstate_parse(bad, cut, "p", &q2, err, sizeof(err));
        if (rc == 0) {
            statedict d;
            if (dequantize_qstate(&q2, &d, err, sizeof(err)) == 0) sd_free(&d);
            qstate_free(&q2);
        } else {
            rejected++;
            T_ASSERT(!strncmp(err, "p: model payload", 16), "message '%s'", err);
        }
    }
    T_ASSERT(rejected > 1500, "only %d of 3000 corruptions rejected", rejected);
    /* an out-of-range int6 code is rejected */
    memcpy(bad, raw, rl);
    size_t first_code = table_end;
    int first_q = -1;
    for (int i = 0; i < q.n && first_q < 0; i++)
        if (q.t[i].kind != QT_PASS) first_q = i;
    T_ASSERT(first_q >= 0 && q.t[first_q].bits == 6, "first quantised tensor is int6");
    bad[first_code] = 40;
    T_ASSERT(qstate_parse(bad, rl, "p", &q2, err, sizeof(err)) != 0 && strstr(err, "outside int6"), "code 40: %s", err);
    free(bad);
    free(raw);
    qstate_free(&q);
    sd_free(&sd);
}

/* a failed write leaves nothing: no file, no temporary */
TEST(artifact_write_is_atomic) {
    pg_config cfg;
    small_cfg(&cfg);
    gpt_model m;
    random_model(&m, &cfg, 1, 8, 9);
    statedict sd;
    gpt_to_statedict(&m, &sd);
    char dir[1024], path[1200], err[PG_ERRLEN];
    snprintf(dir, sizeof(dir), "%s/atomic", t_tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/a.pgolf", dir);
    export_sizes sz;
    /* 1: an existing artifact is not touched by a failing export (non-finite weights) */
    T_ASSERT(export_pack(&cfg, &sd, path, &sz, err, sizeof(err)) == 0, "%s", err);
    uint8_t *before, *after;
    size_t bl, al;
    T_ASSERT(pg_read_file(path, &before, &bl, err, sizeof(err)) == 0, "%s", err);
    ((float *)sd_find(&sd, "blocks.0.mlp.fc.weight")->data)[17] = INFINITY;
    T_ASSERT(export_pack(&cfg, &sd, path, &sz, err, sizeof(err)) != 0 && strstr(err, "non-finite"), "inf accepted: %s", err);
    T_ASSERT(pg_read_file(path, &after, &al, err, sizeof(err)) == 0 && al == bl && bytes_equal(before, after, bl), "file changed");
    free(before);
    free(after);
    /* 2: an unknown codec / scheme fails before writing */
    char p2[1300];
    snprintf(p2, sizeof(p2), "%s/b.pgolf", dir);
    set_str(&cfg, "EXPORT_CODEC", "zip-9");
    T_ASSERT(export_pack(&cfg, &sd, p2, &sz, err, sizeof(err)) != 0 && strstr(err, "EXPORT_CODEC"), "codec: %s", err);
    set_str(&cfg, "EXPORT_CODEC", "zlib-9");
    set_str(&cfg, "QUANT_SCHEME", "int3");
    T_ASSERT(export_pack(&cfg, &sd, p2, &sz, err, sizeof(err)) != 0 && strstr(err, "QUANT_SCHEME"), "scheme: %s", err);
    set_str(&cfg, "QUANT_SCHEME", "int8_baseline");
    /* 3: an unwritable location */
    T_ASSERT(export_pack(&cfg, &sd, "/nonexistent_dir/c.pgolf", &sz, err, sizeof(err)) != 0, "wrote into a missing directory");
    int left = t_system("test $(ls -A %s | wc -l) -eq 1", dir);
    T_ASSERT(left == 0, "temporary files left in the output directory");
    sd_free(&sd);
    gpt_free(&m);
    config_free(&cfg);
}

/* the embedded source bundle: an xz ustar archive holding the sources (as in the tree) and the Makefile */
TEST(artifact_source_bundle_is_tar_of_sources) {
    pg_codec c;
    char err[PG_ERRLEN];
    T_ASSERT(codec_parse(pgolf_src_bundle_codec, &c, err, sizeof(err)) == 0, "%s", err);
    uint8_t *tar;
    size_t tl;
    T_ASSERT(codec_decompress(&c, pgolf_src_bundle, pgolf_src_bundle_len, pgolf_src_bundle_raw_len, "bundle", &tar, &tl, err, sizeof(err)) == 0,
             "%s", err);
    T_ASSERT(tl == pgolf_src_bundle_raw_len && tl % 512 == 0, "tar length %zu", tl);
    int found_make = 0, found_quant = 0, n_files = 0;
    for (size_t off = 0; off + 512 <= tl;) {
        const uint8_t *h = tar + off;
        if (h[0] == 0) break;
        T_ASSERT(!memcmp(h + 257, "ustar", 5), "entry at %zu is not ustar", off);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
        T_ASSERT(strtoul((const char *)h + 148, NULL, 8) == sum, "header checksum at %zu", off);
        size_t sz = strtoul((const char *)h + 124, NULL, 8);
        char name[101];
        memcpy(name, h, 100);
        name[100] = 0;
        n_files++;
        if (!strcmp(name, "Makefile")) found_make = 1;
        if (!strcmp(name, "src/quant.c")) {
            found_quant = 1;
            uint8_t *disk;
            size_t dl;
            if (pg_read_file("src/quant.c", &disk, &dl, err, sizeof(err)) == 0) {
                T_ASSERT(dl == sz && bytes_equal(disk, h + 512, sz), "src/quant.c in the bundle differs from the tree (rebuild?)");
                free(disk);
            }
        }
        off += 512 + (sz + 511) / 512 * 512;
    }
    T_ASSERT(found_make && found_quant && n_files > 10, "bundle has %d files (Makefile %d, src/quant.c %d)", n_files, found_make, found_quant);
    free(tar);
}

/* ---- training -> export -> reload -> eval ---- */

static const char *g_lines[64];
static int g_nlines;
static char g_linebuf[64][512];
static void capture_log(int console, const char *fmt, ...) {
    (void)console;
    if (g_nlines >= 64) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_linebuf[g_nlines], sizeof(g_linebuf[0]), fmt, ap);
    va_end(ap);
    g_lines[g_nlines] = g_linebuf[g_nlines];
    g_nlines++;
}

static void fake_luts(bpb_luts *L, int V) {
    L->size = V;
    L->base_bytes = xmalloc((size_t)V * sizeof(int16_t));
    L->has_leading_space = xmalloc((size_t)V);
    L->is_boundary = xmalloc((size_t)V);
    for (int i = 0; i < V; i++) {
        L->base_bytes[i] = (int16_t)(1 + i % 5);
        L->has_leading_space[i] = (uint8_t)(i % 3 == 0);
        L->is_boundary[i] = (uint8_t)(i < 4);
    }
}

TEST(export_train_roundtrip_eval_consistent) {
    pg_config cfg;
    small_cfg(&cfg);
    set_str(&cfg, "PGOLF_OUT_DIR", t_tmpdir());
    const int T = 32, B = 8, V = 1024;
    gpt_model m;
    gpt_build(&m, &cfg, backend_select("cpu"), B, T);
    gpt_init(&m, &cfg, 3);
    optimizer opt;
    optim_init(&opt, &m);
    rng_state = 31337;
    const size_t nval = 4 * (size_t)B * T + 1;
    uint16_t *val = xmalloc(nval * sizeof(uint16_t));
    for (size_t i = 0; i < nval; i++) val[i] = (uint16_t)((i * 7 + rnd_u64() % 13) % V);
    int32_t *x = xmalloc((size_t)B * T * 4), *y = xmalloc((size_t)B * T * 4);
    for (int step = 0; step < 4; step++) {
        gpt_zero_grad(&m);
        for (int i = 0; i < B * T; i++) x[i] = (int32_t)((i * 5 + step) % 61), y[i] = (int32_t)((i * 5 + step + 1) % 61);
        gpt_forward_backward(&m, x, y, B, 1.0f, NULL);
        optim_step(&opt, &cfg, 1.0);
    }
    statedict trained;
    gpt_to_statedict(&m, &trained);
    g_nlines = 0;
    export_run ex = {.cfg = &cfg, .model = &m, .log = capture_log};
    T_ASSERT(export_and_roundtrip(&ex) == 0, "export failed");
    T_ASSERT(!strcmp(ex.label_short, "int8_zlib"), "label %s", ex.label_short);
    bpb_luts L;
    fake_luts(&L, V);
    eval_result r1, r2, r3;
    const size_t usable = nval - 1;
    eval_val(&m, val, usable, T, B, 0, 1, &L, &r1, NULL);
    /* a fresh model loaded from the artifact on disk */
    char err[PG_ERRLEN];
    statedict disk;
    T_ASSERT(export_load_artifact(ex.artifact_path, &disk, NULL, err, sizeof(err)) == 0, "%s", err);
    gpt_model m2;
    gpt_build(&m2, &cfg, backend_select("cpu"), B, T);
    T_ASSERT(gpt_from_statedict(&m2, &disk, "disk", err, sizeof(err)) == 0, "%s", err);
    eval_val(&m2, val, usable, T, B, 0, 1, &L, &r2, NULL);
    /* the dequantised weights computed in memory */
    quant_opts qo = {.control_patterns = cfg.control_tensor_name_patterns, .keep_fp32_patterns = cfg.int8_keep_float_fp32_name_patterns};
    qstate q;
    quant_stats st;
    statedict mem;
    T_ASSERT(quantize_statedict(&trained, QS_INT8_BASELINE, &qo, &q, &st, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(dequantize_qstate(&q, &mem, err, sizeof(err)) == 0, "%s", err);
    gpt_model m3;
    gpt_build(&m3, &cfg, backend_select("cpu"), B, T);
    T_ASSERT(gpt_from_statedict(&m3, &mem, "mem", err, sizeof(err)) == 0, "%s", err);
    eval_val(&m3, val, usable, T, B, 0, 1, &L, &r3, NULL);
    T_ASSERT(r1.val_loss == r2.val_loss && r1.val_bpb == r2.val_bpb, "roundtrip %.10f vs reload %.10f", r1.val_loss, r2.val_loss);
    T_ASSERT(r1.val_loss == r3.val_loss && r1.val_bpb == r3.val_bpb, "roundtrip %.10f vs dequantised %.10f", r1.val_loss, r3.val_loss);
    /* the quantisation changed the weights (the test would not notice a skipped roundtrip otherwise) */
    gpt_model m4;
    gpt_build(&m4, &cfg, backend_select("cpu"), B, T);
    T_ASSERT(gpt_from_statedict(&m4, &trained, "trained", err, sizeof(err)) == 0, "%s", err);
    eval_result r4;
    eval_val(&m4, val, usable, T, B, 0, 1, &L, &r4, NULL);
    T_ASSERT(r4.val_loss != r1.val_loss, "quantisation left the loss unchanged");
    T_CLOSE(r4.val_loss, r1.val_loss, 0.05, 0, "quantised loss near the trained loss");
    /* the log lines of spec §2.10 */
    struct stat sst;
    T_ASSERT(stat(ex.artifact_path, &sst) == 0, "artifact missing");
    char want[256];
    int seen = 0;
    for (int i = 0; i < g_nlines; i++) {
        long a, b, c;
        double ratio;
        if (sscanf(g_lines[i], "Serialized model int8+zlib: %ld bytes (payload:%ld raw_torch:%ld payload_ratio:%lfx)", &a, &b, &c, &ratio) == 4) {
            T_ASSERT((size_t)a == ex.model_bytes && (size_t)b == st.payload_bytes, "line '%s'", g_lines[i]);
            seen |= 1;
        }
        snprintf(want, sizeof(want), "Total submission size int8+zlib: %lld bytes", (long long)sst.st_size);
        if (!strcmp(g_lines[i], want)) seen |= 2;
        snprintf(want, sizeof(want), "Code size: %zu bytes", pgolf_src_bundle_len);
        if (!strcmp(g_lines[i], want)) seen |= 4;
        if (!strncmp(g_lines[i], "Serialized model: ", 18)) seen |= 8;
        if (!strncmp(g_lines[i], "Total submission size: ", 23)) seen |= 16;
    }
    T_ASSERT(seen == 31, "log lines missing (mask %d); first line '%s'", seen, g_nlines ? g_lines[0] : "");
    T_ASSERT(ex.total_bytes == (size_t)sst.st_size && ex.model_bytes + ex.code_bytes == ex.total_bytes, "accounting");
    qstate_free(&q);
    sd_free(&mem);
    sd_free(&disk);
    sd_free(&trained);
    gpt_free(&m4);
    gpt_free(&m3);
    gpt_free(&m2);
    optim_free(&opt);
    gpt_free(&m);
    bpb_luts_free(&L);
    free(val);
    free(x);
    free(y);
    config_free(&cfg);
}

/* a decompression bomb (a tiny payload that inflates to far more than quantised weights ever do)
 * is refused from the header, before anything is allocated for it; a payload of ordinary ratio
 * with the same codec still loads */
TEST(export_artifact_refuses_decompression_bomb) {
    char err[PG_ERRLEN];
    pg_codec zc;
    T_ASSERT(codec_parse("zstd-22", &zc, err, sizeof(err)) == 0, "%s", err);
    const size_t big = (size_t)80 << 20; /* zeros: zstd makes a few KiB of them */
    uint8_t *raw = xcalloc(big, 1), *art;
    size_t al;
    T_ASSERT(artifact_build(raw, big, &zc, "int8_baseline", "{}", NULL, &art, &al, err, sizeof(err)) == 0, "%s", err);
    artifact a;
    int rc = artifact_parse(art, al, "bomb.pgolf", &a, err, sizeof(err));
    if (rc == 0) artifact_free(&a);
    T_ASSERT(rc != 0 && strstr(err, "decompression bomb") && strstr(err, "bomb.pgolf"), "accepted (%s)", rc ? err : "");
    /* (artifact_parse took art over, and freed it on failure) */
    /* 1 MiB of zeros is under the 64 MiB floor: accepted */
    T_ASSERT(artifact_build(raw, (size_t)1 << 20, &zc, "int8_baseline", "{}", NULL, &art, &al, err, sizeof(err)) == 0,
             "%s", err);
    T_ASSERT(artifact_parse(art, al, "small.pgolf", &a, err, sizeof(err)) == 0, "%s", err);
    artifact_free(&a);
    free(raw);
}

/* the record names read on input: PR #1311/#1392's banks become the per-layer matrices, PR #187's
 * smear_gate.gate becomes smeargate.gate; sd_bank inverts the banks exactly */
TEST(statedict_record_names) {
    statedict in, un, back;
    sd_init(&in);
    const int64_t sq[2] = {4, 4}, kv[2] = {2, 4}, up[2] = {8, 4}, dn[2] = {4, 8}, g[1] = {4};
    float buf[64];
    for (int l = 0; l < 2; l++) {
        const struct {
            const char *n;
            const int64_t *sh;
        } M[] = {{"attn.c_q.weight", sq}, {"attn.c_k.weight", kv}, {"attn.c_v.weight", kv},
                 {"attn.proj.weight", sq}, {"mlp.fc.weight", up}, {"mlp.proj.weight", dn}};
        for (size_t k = 0; k < sizeof(M) / sizeof(M[0]); k++) {
            char nm[64];
            snprintf(nm, sizeof(nm), "blocks.%d.%s", l, M[k].n);
            for (int i = 0; i < 64; i++) buf[i] = (float)(l * 1000 + (int)k * 100 + i);
            sd_add_f32(&in, nm, 2, M[k].sh, buf);
        }
    }
    for (int i = 0; i < 4; i++) buf[i] = 0.5f * (float)i;
    sd_add_f32(&in, "smeargate.gate", 1, g, buf);
    char err[256];
    statedict banked;
    T_ASSERT(sd_bank(&in, 2, &banked, err, sizeof(err)) == 0, "%s", err);
    const sd_tensor *qo = sd_find(&banked, "qo_bank"), *mu = sd_find(&banked, "mlp_up_bank");
    T_ASSERT(qo && qo->ndim == 3 && qo->shape[0] == 4 && mu && mu->shape[0] == 2 && banked.n == 5, "banks: %d tensors", banked.n);
    /* qo_bank[3] = layer 1's attn.proj (k = 3): first value 1000 + 300 */
    T_ASSERT(((const float *)qo->data)[3 * 16] == 1300.0f, "qo_bank[3][0] = %g", ((const float *)qo->data)[3 * 16]);
    /* rename the gate as PR #187 does, then read the record names back */
    sd_pr187_names(&banked);
    T_ASSERT(sd_find(&banked, "smear_gate.gate") && !sd_find(&banked, "smeargate.gate"), "PR #187 name not written");
    T_ASSERT(sd_unbank(&banked, &un, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(un.n == in.n, "%d tensors back, %d in", un.n, in.n);
    for (int i = 0; i < in.n; i++) {
        const sd_tensor *a = &in.t[i], *b = sd_find(&un, a->name);
        T_ASSERT(b && b->nbytes == a->nbytes && !memcmp(a->data, b->data, a->nbytes), "%s differs", a->name);
    }
    /* a name given twice is refused */
    sd_add_f32(&banked, "smeargate.gate", 1, g, buf);
    T_ASSERT(sd_unbank(&banked, &back, err, sizeof(err)) != 0 && strstr(err, "smeargate.gate"), "duplicate accepted: %s", err);
    sd_free(&banked);
    sd_free(&un);
    sd_free(&in);
}

/* PR #453's main candidate quantises exactly as PR #315 and only relabels (baseline spec §5) */
TEST(quant_int6_pr453_is_pr315_relabelled) {
    statedict sd;
    sd_init(&sd);
    const int64_t big[2] = {512, 256}, emb[2] = {1024, 128}, vec[1] = {256};
    float *buf = xmalloc(1024 * 256 * sizeof(float));
    uint64_t r = 99;
    for (int i = 0; i < 1024 * 256; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (float)((double)(r >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
    }
    sd_add_f32(&sd, "blocks.0.attn.c_q.weight", 2, big, buf);
    sd_add_f32(&sd, "blocks.0.mlp.fc.weight", 2, big, buf + 1000);
    sd_add_f32(&sd, "tok_emb.weight", 2, emb, buf + 7);
    sd_add_f32(&sd, "blocks.0.attn_scale", 1, vec, buf + 3);
    free(buf);
    char err[PG_ERRLEN];
    quant_opts qo = {0};
    qstate a, b;
    quant_stats sa, sb;
    T_ASSERT(quantize_statedict(&sd, QS_INT6_PR315, &qo, &a, &sa, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(quantize_statedict(&sd, QS_INT6_PR453, &qo, &b, &sb, err, sizeof(err)) == 0, "%s", err);
    uint8_t *ba, *bb;
    size_t la, lb;
    qstate_serialize(&a, &ba, &la);
    qstate_serialize(&b, &bb, &lb);
    T_ASSERT(la == lb && !memcmp(ba, bb, la), "serialized objects differ (%zu vs %zu bytes)", la, lb);
    char ll[48], sl[32];
    quant_labels(QS_INT6_PR453, "zstd-22", ll, sizeof(ll), sl, sizeof(sl));
    T_ASSERT(!strcmp(ll, "mixed+zstd") && !strcmp(sl, "quant"), "labels %s %s", ll, sl);
    free(ba);
    free(bb);
    qstate_free(&a);
    qstate_free(&b);
    sd_free(&sd);
}
