/* test_cuda_records.c: the CUDA backend's fused attention and record-technique ops (src/cuda/attn.cu,
 * src/cuda/ops_records.cu) against the CPU ops, on fresh random bf16-representable inputs (identical
 * on both sides). Errors are relative L2 norms ||cuda - cpu|| / ||cpu||. Tolerances: bf16 outputs
 * of elementwise ops 1e-2 (a bf16 rounding is ~2e-3); fp32 parameter gradients (sums over tokens
 * of identical products, fp32 on the GPU, double on the CPU) 1e-4; attention o 2e-2, lse 1e-3,
 * dq/dk/dv 2e-2 (P and dS pass through bf16 on the tensor cores; dq and dk with a norm floor of
 * 1e-3 per element, as they vanish at T = 1). fake_quant_rows is compared
 * code-exactly (every bf16 value equal). Outputs that ops.h says are overwritten are pre-filled
 * with garbage on the GPU; accumulated ones start from random values on both sides. Without a GPU
 * every test says `skipped: no GPU`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common.h"
#include "../src/ops.h"
#include "test.h"

#ifdef PGOLF_CUDA

static const pg_ops *RC = &pg_cpu_ops;
static const pg_ops *RG = &pg_cuda_ops;

#define NEED_GPU()                                                                                 \
    do {                                                                                           \
        char why__[256];                                                                           \
        if (!pg_cuda_available(why__, sizeof(why__))) T_SKIP("no GPU");                            \
    } while (0)
#define NEED_OP(name) T_ASSERT(RG->name != NULL, "pg_cuda_ops." #name " is NULL")

static unsigned r_seed = 777u;
static float r_uni(void) { /* uniform in [-1, 1) */
    r_seed = r_seed * 1664525u + 1013904223u;
    return ((r_seed >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
}
static float *r_host(size_t n, float scale) {
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = pg_round_bf16(r_uni() * scale);
    return p;
}
static double r_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 1e-30 ? den : 1e-30));
}

/* the same values on both backends: c (fp32 CPU memory), g (bf16 activations or fp32 on the GPU) */
typedef struct {
    void *c; /* float *, or pg_act * for the CPU ops */
    void *g;
    size_t n;
    int act;
} rpair;
static rpair r_mk(size_t n, int act, const float *host) {
    size_t gb = (n ? n : 1) * (act ? RG->act_bytes : 4);
    rpair p = {RC->alloc((n ? n : 1) * 4), RG->alloc(gb), n, act};
    if (host) {
        memcpy(p.c, host, n * 4);
        if (act) RG->act_from_f32(p.g, host, n);
        else RG->to_device(p.g, host, n * 4);
    } else {
        memset(p.c, 0, n * 4);
        RG->zero(p.g, gb);
    }
    return p;
}
static rpair r_rnd(size_t n, int act, float scale) {
    float *h = r_host(n, scale);
    rpair p = r_mk(n, act, h);
    free(h);
    return p;
}
/* GPU side filled with garbage (outputs that must be overwritten) */
static void r_garbage(rpair p) {
    float *h = r_host(p.n, 1e4f);
    if (p.act) RG->act_from_f32(p.g, h, p.n);
    else RG->to_device(p.g, h, p.n * 4);
    free(h);
}
static float *r_get(rpair p) {
    float *h = xmalloc((p.n ? p.n : 1) * 4);
    if (p.act) RG->act_to_f32(h, p.g, p.n);
    else RG->to_host(h, p.g, p.n * 4);
    return h;
}
static double r_err(rpair p) {
    float *h = r_get(p);
    double e = r_l2(h, p.c, p.n);
    free(h);
    return e;
}
/* ||cuda - cpu|| / max(||cpu||, floor * sqrt(n)): for outputs that can be ~0 (T = 1: dq = dk = 0
 * exactly in exact arithmetic, both sides then hold rounding noise) */
static double r_err_floor(rpair p, double floor) {
    float *h = r_get(p);
    const float *c = p.c;
    double num = 0, den = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (!isfinite(h[i])) num = INFINITY;
        double d = (double)h[i] - c[i];
        num += d * d;
        den += (double)c[i] * c[i];
    }
    free(h);
    double fl = floor * floor * (double)p.n;
    return sqrt(num / (den > fl ? den : fl > 1e-30 ? fl : 1e-30));
}
/* copy the CPU values (rounded to bf16 for activations) onto the GPU side */
static void r_sync_from_cpu(rpair p) {
    float *c = p.c;
    if (p.act)
        for (size_t i = 0; i < p.n; i++) c[i] = pg_round_bf16(c[i]);
    if (p.act) RG->act_from_f32(p.g, c, p.n);
    else RG->to_device(p.g, p.c, p.n * 4);
}
static void r_drop(rpair p) {
    RC->free(p.c);
    RG->free(p.g);
}
#define R_DROP(...)                                                                                \
    do {                                                                                           \
        rpair ps__[] = {__VA_ARGS__};                                                              \
        for (size_t i__ = 0; i__ < sizeof(ps__) / sizeof(ps__[0]); i__++) r_drop(ps__[i__]);       \
    } while (0)

#define R_EXPECT(p, tol, ...)                                                                      \
    do {                                                                                           \
        double e__ = r_err(p);                                                                     \
        char w__[160];                                                                             \
        snprintf(w__, sizeof(w__), __VA_ARGS__);                                                   \
        T_ASSERT(e__ <= (tol), "%s: relative L2 error %.3g > %.3g", w__, e__, (double)(tol));     \
    } while (0)

#define TOL_ACT 1e-2
#define TOL_PGRAD 1e-4

/* ---------------------------------------------------------------- attention */
static void attn_case(t_state *t__, int B, int T, int H, int Hk, int D, float qscale) {
    NEED_OP(attn_fwd);
    NEED_OP(attn_bwd);
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hk * D, nl = (size_t)B * H * T;
    rpair q = r_rnd(nq, 1, qscale), k = r_rnd(nk, 1, 1.0f), v = r_rnd(nk, 1, 1.0f);
    rpair o = r_mk(nq, 1, NULL), lse = r_mk(nl, 0, NULL);
    r_garbage(o);
    r_garbage(lse);
    RC->attn_fwd(o.c, lse.c, q.c, k.c, v.c, B, T, H, Hk, D);
    RG->attn_fwd(o.g, lse.g, q.g, k.g, v.g, B, T, H, Hk, D);
    RG->sync();
    R_EXPECT(o, 2e-2, "attn_fwd o (B=%d T=%d H=%d Hk=%d D=%d)", B, T, H, Hk, D);
    R_EXPECT(lse, 1e-3, "attn_fwd lse (B=%d T=%d H=%d Hk=%d D=%d)", B, T, H, Hk, D);
    /* the backward gets the same o (bf16) and lse on both sides: the CPU's */
    r_sync_from_cpu(o);
    r_sync_from_cpu(lse);
    rpair dout = r_rnd(nq, 1, 1.0f), dq = r_mk(nq, 1, NULL), dk = r_mk(nk, 1, NULL), dv = r_mk(nk, 1, NULL);
    r_garbage(dq);
    r_garbage(dk);
    r_garbage(dv);
    RC->attn_bwd(dq.c, dk.c, dv.c, dout.c, q.c, k.c, v.c, o.c, lse.c, B, T, H, Hk, D);
    RG->attn_bwd(dq.g, dk.g, dv.g, dout.g, q.g, k.g, v.g, o.g, lse.g, B, T, H, Hk, D);
    RG->sync();
    /* dq and dk vanish at T = 1 (softmax over one key): there the norm floor 1e-3 per element decides */
    double edq = r_err_floor(dq, 1e-3), edk = r_err_floor(dk, 1e-3);
    T_ASSERT(edq <= 2e-2, "attn_bwd dq (B=%d T=%d H=%d Hk=%d D=%d): relative L2 error %.3g", B, T, H, Hk, D, edq);
    T_ASSERT(edk <= 2e-2, "attn_bwd dk (B=%d T=%d H=%d Hk=%d D=%d): relative L2 error %.3g", B, T, H, Hk, D, edk);
    R_EXPECT(dv, 2e-2, "attn_bwd dv (B=%d T=%d H=%d Hk=%d D=%d)", B, T, H, Hk, D);
    /* deterministic: a second backward gives the same bits */
    float *dq1 = r_get(dq), *dk1 = r_get(dk);
    RG->attn_bwd(dq.g, dk.g, dv.g, dout.g, q.g, k.g, v.g, o.g, lse.g, B, T, H, Hk, D);
    float *dq2 = r_get(dq), *dk2 = r_get(dk);
    int same = !memcmp(dq1, dq2, nq * 4) && !memcmp(dk1, dk2, nk * 4);
    free(dq1);
    free(dq2);
    free(dk1);
    free(dk2);
    T_ASSERT(same, "attn_bwd is not deterministic (B=%d T=%d H=%d Hk=%d D=%d)", B, T, H, Hk, D);
    R_DROP(q, k, v, o, lse, dout, dq, dk, dv);
}

TEST(cuda_records_attn_gqa_d64) {
    NEED_GPU();
    attn_case(t__, 2, 256, 8, 4, 64, 1.0f);
    if (t__->failed) return;
    attn_case(t__, 1, 300, 8, 4, 64, 3.0f); /* peaky softmax, ragged */
}
TEST(cuda_records_attn_mqa_ragged) {
    NEED_GPU();
    attn_case(t__, 1, 200, 8, 1, 64, 1.0f);
}
TEST(cuda_records_attn_mha_ragged) {
    NEED_GPU();
    attn_case(t__, 3, 77, 4, 4, 64, 1.0f);
}
TEST(cuda_records_attn_t1) {
    NEED_GPU();
    attn_case(t__, 2, 1, 8, 4, 64, 1.0f);
    if (t__->failed) return;
    attn_case(t__, 1, 65, 8, 4, 64, 1.0f); /* one row past a tile */
}
TEST(cuda_records_attn_d128) {
    NEED_GPU();
    attn_case(t__, 1, 130, 8, 4, 128, 1.0f);
    if (t__->failed) return;
    attn_case(t__, 2, 64, 4, 1, 128, 1.0f);
}
TEST(cuda_records_attn_padded_head_dims) {
    NEED_GPU();
    attn_case(t__, 1, 100, 4, 2, 32, 1.0f); /* D < 64: zero-padded tiles */
    if (t__->failed) return;
    attn_case(t__, 1, 70, 2, 1, 96, 1.0f); /* 64 < D < 128 */
}

/* decoding: one query per sequence over its n cached keys (pgolf sample), against the CPU op; n below,
 * at and past the kernel's 4 warps, long caches, caches longer than n, several sequences, GQA/MQA/MHA,
 * padded head dims */
static void attn_decode_case(t_state *t__, int nb, int n, int T, int H, int Hk, int D, float qscale) {
    NEED_OP(attn_decode);
    const size_t kv = (size_t)nb * T * Hk * D;
    rpair q = r_rnd((size_t)nb * H * D, 1, qscale), k = r_rnd(kv, 1, 1.0f), v = r_rnd(kv, 1, 1.0f);
    rpair o = r_mk((size_t)nb * H * D, 1, NULL);
    r_garbage(o);
    RC->attn_decode(o.c, q.c, k.c, v.c, nb, n, T, H, Hk, D);
    RG->attn_decode(o.g, q.g, k.g, v.g, nb, n, T, H, Hk, D);
    RG->sync();
    R_EXPECT(o, TOL_ACT, "attn_decode (nb=%d n=%d T=%d H=%d Hk=%d D=%d)", nb, n, T, H, Hk, D);
    R_DROP(q, k, v, o);
}
TEST(cuda_records_attn_decode) {
    NEED_GPU();
    const int cs[][6] = {{1, 1, 1, 8, 4, 64},     {1, 3, 3, 8, 4, 64},  {1, 4, 9, 4, 4, 64},     {1, 37, 37, 8, 1, 64},
                         {1, 300, 300, 8, 4, 64}, {1, 2048, 2048, 8, 4, 64}, {1, 129, 129, 4, 2, 128},
                         {1, 50, 50, 4, 2, 32},   {1, 70, 70, 2, 1, 96}, {3, 17, 40, 8, 4, 64}, {5, 1, 8, 4, 2, 32},
                         {4, 100, 128, 2, 1, 96}};
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]) && !t__->failed; i++)
        attn_decode_case(t__, cs[i][0], cs[i][1], cs[i][2], cs[i][3], cs[i][4], cs[i][5], 1.0f);
    if (!t__->failed) attn_decode_case(t__, 2, 300, 310, 8, 4, 64, 4.0f); /* peaky softmax */
}

/* ---------------------------------------------------------------- SmearGate */
static void smear_case(t_state *t__, int Bn, int T, int C, int reverse) {
    NEED_OP(smear_fwd);
    NEED_OP(smear_bwd);
    const int N = Bn * T;
    const size_t n = (size_t)N * C;
    rpair x = r_rnd(n, 1, 1.0f), gate = r_rnd((size_t)C, 0, 3.0f), y = r_mk(n, 1, NULL);
    r_garbage(y);
    RC->smear_fwd(y.c, x.c, gate.c, N, T, C, reverse);
    RG->smear_fwd(y.g, x.g, gate.g, N, T, C, reverse);
    R_EXPECT(y, TOL_ACT, "smear_fwd (T=%d C=%d reverse=%d)", T, C, reverse);
    rpair dy = r_rnd(n, 1, 1.0f), dx = r_mk(n, 1, NULL), dg = r_rnd((size_t)C, 0, 1.0f);
    r_garbage(dx);
    RC->smear_bwd(dx.c, dg.c, dy.c, x.c, gate.c, N, T, C, reverse);
    RG->smear_bwd(dx.g, dg.g, dy.g, x.g, gate.g, N, T, C, reverse);
    R_EXPECT(dx, TOL_ACT, "smear_bwd dx (T=%d C=%d reverse=%d)", T, C, reverse);
    R_EXPECT(dg, TOL_PGRAD, "smear_bwd dgate accumulated (T=%d C=%d reverse=%d)", T, C, reverse);
    R_DROP(x, gate, y, dy, dx, dg);
}
TEST(cuda_records_smear) {
    NEED_GPU();
    const int cs[][4] = {{3, 37, 96, 0}, {3, 37, 96, 1}, {2, 64, 512, 1}, {5, 13, 16, 0}, {1, 1, 40, 1}};
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        smear_case(t__, cs[i][0], cs[i][1], cs[i][2], cs[i][3]);
        if (t__->failed) return;
    }
}

/* ---------------------------------------------------------------- XSA */
static void xsa_case(t_state *t__, int N, int H, int Hk, int D, int alias) {
    NEED_OP(xsa_fwd);
    NEED_OP(xsa_bwd);
    const size_t no = (size_t)N * H * D, nv = (size_t)N * Hk * D;
    float *vh = r_host(nv, 1.0f);
    for (int d = 0; d < D; d++) vh[(size_t)3 * Hk * D + d] = 0.0f; /* token 3, kv head 0: v = 0 (clamped norm) */
    rpair o = r_rnd(no, 1, 1.0f), v = r_mk(nv, 1, vh);
    free(vh);
    rpair y = r_mk(no, 1, NULL);
    if (alias) { /* y = o in place: run on copies of o */
        RC->xsa_fwd(y.c, o.c, v.c, N, H, Hk, D);
        float *oh = r_get(o);
        RG->act_from_f32(y.g, oh, no);
        free(oh);
        RG->xsa_fwd(y.g, y.g, v.g, N, H, Hk, D);
    } else {
        r_garbage(y);
        RC->xsa_fwd(y.c, o.c, v.c, N, H, Hk, D);
        RG->xsa_fwd(y.g, o.g, v.g, N, H, Hk, D);
    }
    R_EXPECT(y, TOL_ACT, "xsa_fwd (H=%d Hk=%d D=%d alias=%d)", H, Hk, D, alias);
    rpair dy = r_rnd(no, 1, 1.0f), dO = r_mk(no, 1, NULL), dv = r_mk(nv, 1, NULL);
    r_garbage(dv);
    if (alias) { /* do_ = dy in place */
        float *dyh = r_get(dy);
        RC->xsa_bwd(dO.c, dv.c, dy.c, o.c, v.c, N, H, Hk, D);
        RG->act_from_f32(dO.g, dyh, no);
        free(dyh);
        RG->xsa_bwd(dO.g, dv.g, dO.g, o.g, v.g, N, H, Hk, D);
    } else {
        r_garbage(dO);
        RC->xsa_bwd(dO.c, dv.c, dy.c, o.c, v.c, N, H, Hk, D);
        RG->xsa_bwd(dO.g, dv.g, dy.g, o.g, v.g, N, H, Hk, D);
    }
    R_EXPECT(dO, TOL_ACT, "xsa_bwd do (H=%d Hk=%d D=%d alias=%d)", H, Hk, D, alias);
    R_EXPECT(dv, TOL_ACT, "xsa_bwd dv (H=%d Hk=%d D=%d alias=%d)", H, Hk, D, alias);
    R_DROP(o, v, y, dy, dO, dv);
}
TEST(cuda_records_xsa) {
    NEED_GPU();
    const int cs[][5] = {{50, 8, 4, 64, 0}, {50, 8, 4, 64, 1}, {33, 8, 1, 64, 1}, {20, 8, 8, 64, 0}, {17, 4, 2, 128, 1}};
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        xsa_case(t__, cs[i][0], cs[i][1], cs[i][2], cs[i][3], cs[i][4]);
        if (t__->failed) return;
    }
}

/* ---------------------------------------------------------------- LeakyReLU^2, GELU */
TEST(cuda_records_activations) {
    NEED_GPU();
    NEED_OP(leaky_relu2_fwd);
    NEED_OP(leaky_relu2_bwd);
    NEED_OP(gelu_fwd);
    NEED_OP(gelu_bwd);
    const size_t n = 100003;
    rpair h = r_rnd(n, 1, 4.0f), u = r_mk(n, 1, NULL), du = r_rnd(n, 1, 1.0f), dh = r_mk(n, 1, NULL);
    r_garbage(u);
    r_garbage(dh);
    RC->leaky_relu2_fwd(u.c, h.c, n, 0.5f);
    RG->leaky_relu2_fwd(u.g, h.g, n, 0.5f);
    R_EXPECT(u, TOL_ACT, "leaky_relu2_fwd");
    RC->leaky_relu2_bwd(dh.c, du.c, h.c, n, 0.5f);
    RG->leaky_relu2_bwd(dh.g, du.g, h.g, n, 0.5f);
    R_EXPECT(dh, TOL_ACT, "leaky_relu2_bwd");
    RC->leaky_relu2_bwd(du.c, du.c, h.c, n, 0.5f); /* dh aliases du */
    RG->leaky_relu2_bwd(du.g, du.g, h.g, n, 0.5f);
    R_EXPECT(du, TOL_ACT, "leaky_relu2_bwd in place");
    r_sync_from_cpu(du); /* identical (bf16) inputs for what follows */
    r_garbage(u);
    RC->gelu_fwd(u.c, h.c, n);
    RG->gelu_fwd(u.g, h.g, n);
    R_EXPECT(u, TOL_ACT, "gelu_fwd");
    /* tensors off 16-byte alignment (one element in): the element-by-element path; u[0] keeps gelu */
    RC->leaky_relu2_fwd((pg_act *)((float *)u.c + 1), (pg_act *)((float *)h.c + 1), n - 1, 0.5f);
    RG->leaky_relu2_fwd((pg_act *)((char *)u.g + RG->act_bytes), (pg_act *)((char *)h.g + RG->act_bytes), n - 1, 0.5f);
    R_EXPECT(u, TOL_ACT, "leaky_relu2_fwd unaligned");
    RC->gelu_fwd(u.c, h.c, n);
    RG->gelu_fwd(u.g, h.g, n);
    r_garbage(dh);
    RC->gelu_bwd(dh.c, du.c, h.c, n);
    RG->gelu_bwd(dh.g, du.g, h.g, n);
    R_EXPECT(dh, TOL_ACT, "gelu_bwd");
    RC->gelu_bwd(du.c, du.c, h.c, n);
    RG->gelu_bwd(du.g, du.g, h.g, n);
    R_EXPECT(du, TOL_ACT, "gelu_bwd in place");
    R_DROP(h, u, du, dh);
}

/* ---------------------------------------------------------------- lerp */
static void lerp_case(t_state *t__, int N, int C) {
    NEED_OP(lerp_fwd);
    NEED_OP(lerp_bwd);
    const size_t n = (size_t)N * C;
    rpair x = r_rnd(n, 1, 1.0f), y = r_rnd(n, 1, 1.0f), r = r_rnd((size_t)C, 0, 1.0f), out = r_mk(n, 1, NULL);
    r_garbage(out);
    RC->lerp_fwd(out.c, x.c, y.c, r.c, N, C);
    RG->lerp_fwd(out.g, x.g, y.g, r.g, N, C);
    R_EXPECT(out, TOL_ACT, "lerp_fwd (N=%d C=%d)", N, C);
    /* dy separate, then dy aliasing dout (as the model calls it) */
    rpair dout = r_rnd(n, 1, 1.0f), dx = r_mk(n, 1, NULL), dy = r_mk(n, 1, NULL), dr = r_rnd((size_t)C, 0, 1.0f);
    r_garbage(dx);
    r_garbage(dy);
    RC->lerp_bwd(dx.c, dy.c, dr.c, dout.c, x.c, y.c, r.c, N, C);
    RG->lerp_bwd(dx.g, dy.g, dr.g, dout.g, x.g, y.g, r.g, N, C);
    R_EXPECT(dx, TOL_ACT, "lerp_bwd dx (N=%d C=%d)", N, C);
    R_EXPECT(dy, TOL_ACT, "lerp_bwd dy (N=%d C=%d)", N, C);
    R_EXPECT(dr, TOL_PGRAD, "lerp_bwd dr (N=%d C=%d)", N, C);
    /* deterministic: the same accumulation twice from the same state gives the same bits */
    float *dr0 = r_get(dr);
    RG->lerp_bwd(dx.g, dy.g, dr.g, dout.g, x.g, y.g, r.g, N, C);
    float *dr1 = r_get(dr);
    RG->to_device(dr.g, dr0, (size_t)C * 4);
    RG->lerp_bwd(dx.g, dy.g, dr.g, dout.g, x.g, y.g, r.g, N, C);
    float *dr2 = r_get(dr);
    int same = !memcmp(dr1, dr2, (size_t)C * 4);
    RG->to_device(dr.g, dr0, (size_t)C * 4);
    free(dr0);
    free(dr1);
    free(dr2);
    T_ASSERT(same, "lerp_bwd dr is not deterministic (N=%d C=%d)", N, C);
    RC->lerp_bwd(dx.c, dout.c, dr.c, dout.c, x.c, y.c, r.c, N, C);
    RG->lerp_bwd(dx.g, dout.g, dr.g, dout.g, x.g, y.g, r.g, N, C);
    R_EXPECT(dx, TOL_ACT, "lerp_bwd dx, dy = dout (N=%d C=%d)", N, C);
    R_EXPECT(dout, TOL_ACT, "lerp_bwd dy = dout (N=%d C=%d)", N, C);
    R_EXPECT(dr, TOL_PGRAD, "lerp_bwd dr, dy = dout (N=%d C=%d)", N, C);
    R_DROP(x, y, r, out, dout, dx, dy, dr);
}
TEST(cuda_records_lerp) {
    NEED_GPU();
    lerp_case(t__, 300, 512);
    if (t__->failed) return;
    lerp_case(t__, 77, 33);
    if (t__->failed) return;
    lerp_case(t__, 200 * 128 + 5, 1); /* the lane merge: one scalar r over N*d rows */
}

/* ---------------------------------------------------------------- lane routing */
static void lane_case(t_state *t__, int N, int C) {
    NEED_OP(lane_route_fwd);
    NEED_OP(lane_route_bwd);
    const size_t n = (size_t)N * C;
    rpair x = r_rnd(n, 1, 1.0f), a = r_rnd(n, 1, 1.0f), m = r_rnd(n, 1, 1.0f), sa = r_rnd((size_t)C, 0, 1.0f),
          sm = r_rnd((size_t)C, 0, 1.0f), ra = r_rnd(1, 0, 1.0f), rm = r_rnd(1, 0, 1.0f), y = r_mk(n, 1, NULL);
    r_garbage(y);
    RC->lane_route_fwd(y.c, x.c, a.c, sa.c, ra.c, m.c, sm.c, rm.c, N, C);
    RG->lane_route_fwd(y.g, x.g, a.g, sa.g, ra.g, m.g, sm.g, rm.g, N, C);
    R_EXPECT(y, TOL_ACT, "lane_route_fwd (N=%d C=%d)", N, C);
    RC->lane_route_fwd(x.c, x.c, a.c, sa.c, ra.c, m.c, sm.c, rm.c, N, C); /* y aliases x */
    RG->lane_route_fwd(x.g, x.g, a.g, sa.g, ra.g, m.g, sm.g, rm.g, N, C);
    R_EXPECT(x, TOL_ACT, "lane_route_fwd in place (N=%d C=%d)", N, C);
    rpair dy = r_rnd(n, 1, 1.0f), da = r_mk(n, 1, NULL), dm = r_mk(n, 1, NULL), dsa = r_rnd((size_t)C, 0, 1.0f),
          dsm = r_rnd((size_t)C, 0, 1.0f), dra = r_rnd(1, 0, 1.0f), drm = r_rnd(1, 0, 1.0f);
    r_garbage(da);
    r_garbage(dm);
    for (int acc = 0; acc < 2; acc++) { /* overwrite, then accumulate onto the result */
        RC->lane_route_bwd(da.c, dm.c, dsa.c, dsm.c, dra.c, drm.c, dy.c, a.c, sa.c, ra.c, m.c, sm.c, rm.c, N, C, acc);
        RG->lane_route_bwd(da.g, dm.g, dsa.g, dsm.g, dra.g, drm.g, dy.g, a.g, sa.g, ra.g, m.g, sm.g, rm.g, N, C, acc);
        R_EXPECT(da, TOL_ACT, "lane_route_bwd da (accumulate=%d)", acc);
        R_EXPECT(dm, TOL_ACT, "lane_route_bwd dm (accumulate=%d)", acc);
        R_EXPECT(dsa, TOL_PGRAD, "lane_route_bwd dsa (accumulate=%d)", acc);
        R_EXPECT(dsm, TOL_PGRAD, "lane_route_bwd dsm (accumulate=%d)", acc);
        R_EXPECT(dra, TOL_PGRAD, "lane_route_bwd dra (accumulate=%d)", acc);
        R_EXPECT(drm, TOL_PGRAD, "lane_route_bwd drm (accumulate=%d)", acc);
        r_sync_from_cpu(da); /* the accumulating call starts from identical bf16 values */
        r_sync_from_cpu(dm);
    }
    R_DROP(x, a, m, sa, sm, ra, rm, y, dy, da, dm, dsa, dsm, dra, drm);
}
TEST(cuda_records_lane_route) {
    NEED_GPU();
    lane_case(t__, 300, 512);
    if (t__->failed) return;
    lane_case(t__, 41, 20);
}

/* ---------------------------------------------------------------- int6 STE fake quantisation */
/* rows of assorted lengths and contents, compared value by value (bf16 on the GPU, fp32 holding
 * bf16 values on the CPU) */
static void fq_case(t_state *t__, int rows, int cols, int mode, int low, int kind) {
    const size_t n = (size_t)rows * cols;
    float *w = xmalloc((n ? n : 1) * 4);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float *p = w + (size_t)r * cols + c;
            float u = r_uni();
            switch (kind) {
            case 0: *p = u * 0.05f * (1 + r % 7); break; /* plain fp32 values */
            case 1: /* halves with row max 31 (s = 1) or 7.75 (s = 0.25): ties to even in modes 2, 3 */
                *p = (c == 0 ? 31.0f : (float)(c % 62 - 31) + 0.5f) * (r % 2 ? 0.25f : 1.0f);
                break;
            case 2: *p = (float)((c * 7 + r) % 5 - 2) * 0.01f; break; /* many duplicates */
            case 3: *p = r % 3 == 0 ? 0.0f : u * 1e-3f; break;         /* zero rows (clip floor), tiny ones */
            default: *p = (c == r % (cols ? cols : 1)) ? 40.0f * u : u; /* one outlier per row */
            }
        }
    float *wc = RC->alloc((n ? n : 1) * 4), *wg = RG->alloc((n ? n : 1) * 4);
    void *dg = RG->alloc((n ? n : 1) * RG->wc_bytes);
    RG->to_device(wg, w, n * 4);
    RC->fake_quant_rows((pg_wc *)wc, w, rows, cols, mode, low);
    RG->fake_quant_rows((pg_wc *)dg, wg, rows, cols, mode, low);
    uint16_t *bits = xmalloc((n ? n : 1) * 2);
    RG->to_host(bits, dg, n * 2);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (pg_bf16_to_f32(bits[i]) != wc[i] || pg_round_bf16(wc[i]) != wc[i]) {
            if (!bad) first = i;
            bad++;
        }
    float gv = n ? pg_bf16_to_f32(bits[first]) : 0, cv = n ? wc[first] : 0, wv = n ? w[first] : 0;
    free(bits);
    free(w);
    RC->free(wc);
    RG->free(wg);
    RG->free(dg);
    T_ASSERT(bad == 0,
             "fake_quant_rows mode %d low %d rows %d cols %d kind %d: %zu values differ, first at row %zu col %zu: "
             "w %.9g gpu %.9g cpu %.9g",
             mode, low, rows, cols, kind, bad, first / (size_t)cols, first % (size_t)cols, wv, gv, cv);
}
TEST(cuda_records_fake_quant_rows) {
    NEED_GPU();
    NEED_OP(fake_quant_rows);
    T_ASSERT(RG->wc_bytes == 2, "the CUDA compute weights are not bf16 (wc_bytes %zu)", RG->wc_bytes);
    const int modes[][2] = {{1, -31}, {2, -31}, {3, -31}, {3, -32}};
    const int shapes[][2] = {{64, 512}, {7, 1}, {9, 2}, {5, 3}, {12, 100}, {6, 2048}, {3, 5000}};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
            for (int kind = 0; kind < 5; kind++) {
                fq_case(t__, shapes[s][0], shapes[s][1], modes[m][0], modes[m][1], kind);
                if (t__->failed) return;
            }
}

#else

TEST(cuda_records) { T_SKIP("no GPU (built without CUDA)"); }

#endif
