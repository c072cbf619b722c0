/* test_gptq.c: the export quantisation of PR #1311 (int6_gptq_lite), PR #1392 (int6_gptq, full
 * Hessian GPTQ with calibration Hessians from gptq.c), PR #187 (int6_pr187, lzma-6) and the dense
 * int6 packing (PGOLF_INT6_PACK), against the PyTorch reference tests/reference/ref_gptq.py (written
 * from the spec, independent of ref_export.py). */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/artifact.h"
#include "../src/backend.h"
#include "../src/codec.h"
#include "../src/common.h"
#include "../src/config.h"
#include "../src/export_run.h"
#include "../src/model.h"
#include "../src/quant.h"
#include "../src/statedict.h"
#include "test.h"

#define REF_GPTQ "/usr/bin/python3 tests/reference/ref_gptq.py"

static uint64_t g_rng = 1;
static uint64_t rnd_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rnd_uniform(void) { return (float)((rnd_u64() >> 40) * (1.0 / 16777216.0)); }
static float rnd_normal(void) {
    float u1 = rnd_uniform() + 1e-7f, u2 = rnd_uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static int bytes_equal(const void *a, const void *b, size_t n) { return n == 0 || memcmp(a, b, n) == 0; }

/* ---- GPTQ-lite (PR #1311) ---- */

/* matrices for the clip search: "floor" (every clip < 1: all rows at the 1/31 floor, every p ties),
 * "mixed" (outlier rows > 1 beside floored rows: a p < 1 wins), "grid" (each row on the grid
 * k/4, |k| <= 31, reaching +-31/4: p = 1 reproduces it exactly and wins), "heavy" (heavy tails) */
static void lite_matrices(statedict *sd) {
    sd_init(sd);
    g_rng = 2024;
    int64_t sh[2];
    float *w;
    sh[0] = 48, sh[1] = 300;
    w = xmalloc(48 * 300 * sizeof(float));
    for (int i = 0; i < 48 * 300; i++) w[i] = 0.02f * rnd_normal();
    sd_add_f32(sd, "floor", 2, sh, w);
    for (int r = 0; r < 48; r++)
        for (int c = 0; c < 300; c++) {
            float v = (r % 3 == 0 ? 0.03f : 2.5f) * rnd_normal();
            if (r % 3 == 1 && c % 41 == 7) v *= 30.0f; /* outliers: clipping them pays */
            w[r * 300 + c] = v;
        }
    sd_add_f32(sd, "mixed", 2, sh, w);
    for (int r = 0; r < 48; r++)
        for (int c = 0; c < 300; c++) w[r * 300 + c] = (float)((int)(rnd_u64() % 41) - 20) * 0.25f; /* one 31 per row: p < 1 clips it */
    for (int r = 0; r < 48; r++) w[r * 300 + (r % 300)] = (r % 2 ? 31.0f : -31.0f) * 0.25f;
    sd_add_f32(sd, "grid", 2, sh, w);
    free(w);
    sh[0] = 33, sh[1] = 1537;
    w = xmalloc(33 * 1537 * sizeof(float));
    for (int i = 0; i < 33 * 1537; i++) {
        float v = rnd_normal();
        w[i] = (i % 5 ? 0.7f : 4.0f) * v * v * v;
    }
    sd_add_f32(sd, "heavy", 2, sh, w);
    free(w);
}

TEST(gptq_lite_matches_reference) {
    T_NEED_TORCH();
    const char *td = t_tmpdir();
    char in[1024], out[1024], err[PG_ERRLEN];
    snprintf(in, sizeof(in), "%s/lite_in.safetensors", td);
    snprintf(out, sizeof(out), "%s/lite_out.safetensors", td);
    statedict sd, ref;
    lite_matrices(&sd);
    T_ASSERT(safetensors_write(in, &sd, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(t_system(REF_GPTQ " lite %s %s", in, out) == 0, "reference failed");
    T_ASSERT(safetensors_read(out, &ref, err, sizeof(err)) == 0, "%s", err);
    int chose[4] = {-1, -1, -1, -1};
    for (int i = 0; i < sd.n; i++) {
        const sd_tensor *t = &sd.t[i];
        size_t R = (size_t)t->shape[0], C = (size_t)t->shape[1];
        int8_t *q = xmalloc(R * C);
        uint16_t *s = xmalloc(R * 2);
        int k = quant_int6_search(t->data, R, C, q, s);
        chose[i] = k;
        char nm[128];
        snprintf(nm, sizeof(nm), "%s.q", t->name);
        const sd_tensor *rq = sd_find(&ref, nm);
        snprintf(nm, sizeof(nm), "%s.s", t->name);
        const sd_tensor *rs = sd_find(&ref, nm);
        snprintf(nm, sizeof(nm), "%s.p", t->name);
        const sd_tensor *rp = sd_find(&ref, nm);
        T_ASSERT(rq && rs && rp && rq->nbytes == R * C && rs->nbytes == R * 2, "%s: reference output", t->name);
        T_ASSERT(*(const int64_t *)rp->data == k, "%s: pgolf chose p #%d, the reference #%lld", t->name, k,
                 (long long)*(const int64_t *)rp->data);
        for (size_t j = 0; j < R * C; j++)
            T_ASSERT(q[j] == ((const int8_t *)rq->data)[j], "%s: code %zu: %d vs reference %d", t->name, j, q[j],
                     ((const int8_t *)rq->data)[j]);
        T_ASSERT(bytes_equal(s, rs->data, R * 2), "%s: scales differ", t->name);
        /* the floor: rows whose every clip is < 1 have step fp16(1/31) */
        if (!strcmp(t->name, "floor"))
            for (size_t r = 0; r < R; r++) T_ASSERT(s[r] == pg_f32_to_f16((float)(1.0 / 31.0)), "floor row %zu", r);
        free(q);
        free(s);
    }
    /* the matrices cover both outcomes of the search */
    T_ASSERT(chose[0] == 0, "floor: every p ties, the first wins (chose #%d)", chose[0]);
    T_ASSERT(chose[1] >= 0 && chose[1] < 4, "mixed: a p < 1 should win (chose #%d)", chose[1]);
    T_ASSERT(chose[2] == 4, "grid: p = 1 should win (chose #%d)", chose[2]);
    sd_free(&sd);
    sd_free(&ref);
}

/* ---- state-dict routing vs the reference ---- */

static const char *CONTROL = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights";

/* a state dict reaching every routing branch of PR #1311/#1392/#187 */
static void routing_statedict(statedict *sd) {
    sd_init(sd);
    g_rng = 777;
    const struct {
        const char *name;
        int64_t r, c;
        float scale;
    } M[] = {{"blocks.0.attn.c_q.weight", 300, 300, 0.05f},  {"blocks.0.attn.proj.weight", 300, 300, 1.3f},
             {"blocks.0.mlp.fc.weight", 400, 200, 0.08f},    {"blocks.0.mlp.proj.weight", 200, 400, 0.03f},
             {"pre_enrich.0.weight", 300, 240, 0.06f},       {"blocks.0.resid_mix", 2, 40000, 0.5f},
             {"bigram.proj.weight", 512, 128, 0.1f}};
    for (size_t i = 0; i < sizeof(M) / sizeof(*M); i++) {
        float *w = xmalloc((size_t)(M[i].r * M[i].c) * sizeof(float));
        for (int64_t k = 0; k < M[i].r * M[i].c; k++) {
            float v = M[i].scale * rnd_normal();
            if (k % 997 == 5) v *= 25.0f; /* outliers */
            w[k] = v;
        }
        if (i == 0)
            for (int64_t k = 0; k < 300; k++) w[7 * 300 + k] = (float)((k % 61) - 30) / 31.0f * 2.0f; /* grid row (ties) */
        int64_t sh[2] = {M[i].r, M[i].c};
        sd_add_f32(sd, M[i].name, 2, sh, w);
        free(w);
    }
    { /* bf16 embeddings (tok_emb: int8 / fp16 passthrough under PR #187) */
        int64_t sh[2] = {1030, 70};
        uint16_t *b = xmalloc(1030 * 70 * 2);
        for (int i = 0; i < 1030 * 70; i++) b[i] = pg_f32_to_bf16(rnd_normal() * 0.005f * (i % 113 == 0 ? 50.0f : 1.0f));
        sd_add(sd, "tok_emb.weight", DT_BF16, 2, sh, b);
        for (int i = 0; i < 1030 * 70; i++) b[i] = pg_f32_to_bf16(rnd_normal() * 0.01f);
        sd_add(sd, "ve_shared.embed.weight", DT_BF16, 2, sh, b);
        free(b);
    }
    { /* large non-2-D tensors */
        int64_t sh1[1] = {70000}, sh3[3] = {2, 300, 120};
        float *w = xmalloc(72000 * sizeof(float));
        for (int i = 0; i < 72000; i++) w[i] = rnd_normal() * 0.7f;
        sd_add_f32(sd, "big_vec", 1, sh1, w);
        sd_add_f32(sd, "blocks.1.attn.proj3d", 3, sh3, w);
        free(w);
    }
    { /* small tensors: control, other, fp64, bf16, int */
        int64_t sh[1] = {300}, sh2[2] = {2, 150};
        float w[300];
        for (int i = 0; i < 300; i++) w[i] = rnd_normal();
        w[0] = 70000.0f, w[1] = -1e-6f, w[2] = 3e-8f;
        sd_add_f32(sd, "blocks.0.attn_scale", 1, sh, w);
        sd_add_f32(sd, "smear.gate", 1, sh, w);
        sd_add_f32(sd, "skip_weights", 2, sh2, w);
        uint16_t b[300];
        for (int i = 0; i < 300; i++) b[i] = pg_f32_to_bf16(w[i]);
        sd_add(sd, "blocks.0.attn.q_gain", DT_BF16, 1, sh, b);
        double dd[300];
        for (int i = 0; i < 300; i++) dd[i] = (double)w[i] * 1.000000001;
        sd_add(sd, "extra_f64", DT_F64, 1, sh, dd);
        int64_t ii[300];
        for (int i = 0; i < 300; i++) ii[i] = i * 1000003ll;
        sd_add(sd, "step_counter", DT_I64, 1, sh, ii);
    }
}

/* quantise sd with scheme (pgolf) and the reference mode; every tensor's storage, codes, scales and
 * dequantised values equal. Returns the number of mismatching codes (exact: must be 0) through
 * *code_mism when non-NULL, tolerated up to max_code_mism. */
static void check_scheme(t_state *t__, const statedict *sd, quant_scheme qs, const quant_opts *qo, const char *mode,
                         const char *extra_args, long max_code_mism, const char *want_kinds) {
    const char *td = t_tmpdir();
    char in[1024], out[1024], err[PG_ERRLEN];
    snprintf(in, sizeof(in), "%s/%s_in.safetensors", td, mode);
    snprintf(out, sizeof(out), "%s/%s_out.safetensors", td, mode);
    T_ASSERT(safetensors_write(in, sd, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(t_system(REF_GPTQ " %s %s %s %s %s", mode, in, out, CONTROL, extra_args) == 0, "reference failed");
    statedict ref, dq;
    T_ASSERT(safetensors_read(out, &ref, err, sizeof(err)) == 0, "%s", err);
    qstate q;
    quant_stats st;
    T_ASSERT(quantize_statedict(sd, qs, qo, &q, &st, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(dequantize_qstate(&q, &dq, err, sizeof(err)) == 0, "%s", err);
    long mism = 0, total = 0;
    char kinds[1024] = "";
    for (int i = 0; i < q.n; i++) {
        const qtensor *t = &q.t[i];
        char nm[256];
        if (strlen(kinds) < sizeof(kinds) - 64)
            snprintf(kinds + strlen(kinds), sizeof(kinds) - strlen(kinds), "%s%s:%s", i ? " " : "", t->name,
                     t->kind == QT_PASS ? pg_dtype_name(t->stored) : (t->bits == 6 ? "int6" : "int8"));
        if (t->kind == QT_PASS) {
            snprintf(nm, sizeof(nm), "%s.pass", t->name);
            const sd_tensor *r = sd_find(&ref, nm);
            T_ASSERT(r, "%s: the reference quantised what pgolf passes through", t->name);
            T_ASSERT(r->dtype == t->stored && r->nbytes == t->nbytes, "%s: stored as %s, the reference %s", t->name,
                     pg_dtype_name(t->stored), pg_dtype_name(r->dtype));
            T_ASSERT(bytes_equal(r->data, t->data, t->nbytes), "%s: passthrough bytes differ", t->name);
        } else {
            snprintf(nm, sizeof(nm), "%s.q", t->name);
            const sd_tensor *r = sd_find(&ref, nm);
            T_ASSERT(r && r->dtype == DT_I8 && r->nbytes == t->nbytes, "%s: the reference passes it through or differs in layout",
                     t->name);
            for (size_t k = 0; k < t->nbytes; k++) {
                total++;
                if (((const int8_t *)t->data)[k] != ((const int8_t *)r->data)[k]) mism++;
            }
            T_ASSERT(mism <= max_code_mism, "%s: %ld codes differ from the reference (at most %ld allowed)", t->name, mism,
                     max_code_mism);
            snprintf(nm, sizeof(nm), "%s.s", t->name);
            r = sd_find(&ref, nm);
            T_ASSERT(r && r->dtype == t->scale_dtype && (size_t)sd_numel(r) == t->n_scale, "%s: scale layout", t->name);
            T_ASSERT(bytes_equal(r->data, t->scale, r->nbytes), "%s: scales differ", t->name);
        }
        snprintf(nm, sizeof(nm), "%s.deq", t->name);
        const sd_tensor *r = sd_find(&ref, nm), *d = sd_find(&dq, t->name);
        T_ASSERT(r && d && r->dtype == d->dtype && r->nbytes == d->nbytes, "%s: dequantised layout", t->name);
        if (max_code_mism == 0) T_ASSERT(bytes_equal(r->data, d->data, d->nbytes), "%s: dequantised values differ", t->name);
    }
    if (want_kinds) T_ASSERT(!strcmp(kinds, want_kinds), "routing:\n  got  %s\n  want %s", kinds, want_kinds);
    qstate_free(&q);
    sd_free(&dq);
    sd_free(&ref);
}

TEST(gptq_lite_scheme_routing_matches_reference) {
    T_NEED_TORCH();
    statedict sd;
    routing_statedict(&sd);
    quant_opts qo = {.control_patterns = CONTROL};
    /* §2.8: size before control name (small control tensors fp16; the large resid_mix fp32),
     * attn/proj/mlp int6 (bigram.proj is small), embeddings and other large tensors int8 */
    check_scheme(t__, &sd, QS_INT6_GPTQ_LITE, &qo, "pr1311", "", 0,
                 "blocks.0.attn.c_q.weight:int6 blocks.0.attn.proj.weight:int6 blocks.0.mlp.fc.weight:int6 "
                 "blocks.0.mlp.proj.weight:int6 pre_enrich.0.weight:int8 blocks.0.resid_mix:F32 bigram.proj.weight:F16 "
                 "tok_emb.weight:int8 ve_shared.embed.weight:int8 big_vec:int8 blocks.1.attn.proj3d:int6 "
                 "blocks.0.attn_scale:F16 smear.gate:F16 skip_weights:F16 blocks.0.attn.q_gain:F16 extra_f64:F16 "
                 "step_counter:I64");
    sd_free(&sd);
}
