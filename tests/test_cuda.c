/* test_cuda.c: every CUDA op against the CPU op (the reference backend) on fresh random inputs,
 * and a whole training step and several optimizer steps of a small model on both backends.
 * Inputs are bf16-representable so both backends see identical values. Errors are relative L2
 * norms ||cuda - cpu|| / ||cpu||. Tolerances: bf16 outputs of elementwise, norm, embedding and
 * matmul ops 1e-2 (one bf16 rounding is <= 2^-9 relative; fp32 accumulation); attention 2e-2;
 * rstd 1e-3; fp32 parameter-gradient sums (dscale, dmix, dgain) 1e-2 (they sum bf16-rounded inputs);
 * embedding backward, Adam, Muon's momentum, EMA, add/scale of fp32: 1e-6 (the same fp32 operations
 * in the same order: expected bit-identical); sum_squares 1e-9 relative (double accumulation);
 * Muon's update 1e-3 (fp32 Newton-Schulz on both; only GEMM summation order differs); model loss
 * 1e-2 relative, model gradients 5e-2 (tensors of <= 16 values: 0.15), parameters after 3 steps
 * 0.15 for Muon's matrices and 5e-2 for the rest, the loss after them 2e-2. Without a GPU every test says `skipped: no GPU`; a test whose op is still NULL in the CUDA
 * table says so and skips. The CUDA code also ran under a host emulator of the kernels (drafts:
 * cuA/emu, on cuB's fiber emulator), where these tests pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/dist.h"
#include "../src/model.h"
#include "../src/ops.h"
#include "../src/optim.h"
#include "model_forms.h"
#include "ref_common.h"
#include "test.h"

#ifdef PGOLF_CUDA

static const pg_ops *C_ = &pg_cpu_ops;
static const pg_ops *G_ = &pg_cuda_ops;

#define NEED_GPU()                                                                                 \
    do {                                                                                           \
        char why__[512];                                                                           \
        if (!pg_cuda_available(why__, sizeof(why__))) T_SKIP("no GPU");                            \
    } while (0)
/* ops written in another file of the backend may still be NULL in the table */
#define NEED_OP(op)                                                                                \
    do {                                                                                           \
        if (!G_->op) T_SKIP("CUDA op " #op " not implemented yet");                                \
    } while (0)

static unsigned g_seed = 12345;
static float frand(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((g_seed >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
/* round to bf16 so both backends see identical inputs */
static void bf16ify(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = pg_round_bf16(p[i]);
}
static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        if (isnan(a[i])) return INFINITY;
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 1e-30 ? den : 1e-30));
}

/* a pair of buffers (cpu, gpu) holding the same values */
typedef struct {
    void *c, *g;
    size_t n;
    int act;
} pair;
static pair mk(size_t n, int act, const float *host) {
    pair p = {C_->alloc(n * 4), G_->alloc(n * (act ? G_->act_bytes : 4)), n, act};
    if (host) {
        memcpy(p.c, host, n * 4);
        if (act) G_->act_from_f32(p.g, host, n);
        else G_->to_device(p.g, host, n * 4);
    } else {
        C_->zero(p.c, n * 4);
        G_->zero(p.g, n * (act ? G_->act_bytes : 4));
    }
    return p;
}
static pair mk_rnd(size_t n, int act, float scale) {
    float *h = rnd(n, scale);
    bf16ify(h, n);
    pair p = mk(n, act, h);
    free(h);
    return p;
}
static double cmp(pair p) {
    float *h = xmalloc(p.n * 4);
    if (p.act) G_->act_to_f32(h, p.g, p.n);
    else G_->to_host(h, p.g, p.n * 4);
    double e = rel_l2(h, p.c, p.n);
    free(h);
    return e;
}
static void drop(pair p) {
    C_->free(p.c);
    G_->free(p.g);
}
static void *wc_pair(pair *w, const float *host, size_t n) {
    /* compute weights: fp32 on CPU, bf16 on GPU */
    w->c = C_->alloc(n * 4);
    w->g = G_->alloc(n * G_->wc_bytes);
    w->n = n;
    w->act = 1;
    memcpy(w->c, host, n * 4);
    float *tmp = G_->alloc(n * 4);
    G_->to_device(tmp, host, n * 4);
    G_->weights_to_compute(w->g, tmp, n);
    G_->sync();
    G_->free(tmp);
    return w->c;
}

#define EXPECT(p, tol, what)                                                                       \
    do {                                                                                           \
        double e__ = cmp(p);                                                                       \
        T_ASSERT(e__ <= (tol), "%s: relative L2 error %.3g > %.3g", what, e__, (double)(tol));    \
    } while (0)

static void norm_case(t_state *t__, int N, int C) {
    pair x = mk_rnd((size_t)N * C, 1, 2.0f), x0 = mk_rnd((size_t)N * C, 1, 1.0f);
    float *mixh = rnd(2 * C, 1.0f);
    bf16ify(mixh, 2 * C);
    pair mix = mk(2 * C, 0, mixh);
    pair y = mk((size_t)N * C, 1, NULL), xm = mk((size_t)N * C, 1, NULL), r = mk(N, 0, NULL);
    C_->rmsnorm_fwd(y.c, r.c, x.c, N, C);
    G_->rmsnorm_fwd(y.g, r.g, x.g, N, C);
    EXPECT(y, 1e-2, "rmsnorm_fwd y");
    EXPECT(r, 1e-3, "rmsnorm_fwd rstd");
    pair dy = mk_rnd((size_t)N * C, 1, 1.0f), dx = mk_rnd((size_t)N * C, 1, 1.0f);
    C_->rmsnorm_bwd(dx.c, dy.c, y.c, r.c, N, C, 1);
    G_->rmsnorm_bwd(dx.g, dy.g, y.g, r.g, N, C, 1);
    EXPECT(dx, 1e-2, "rmsnorm_bwd accumulate");
    C_->rmsnorm_bwd(dx.c, dy.c, y.c, r.c, N, C, 0);
    G_->rmsnorm_bwd(dx.g, dy.g, y.g, r.g, N, C, 0);
    EXPECT(dx, 1e-2, "rmsnorm_bwd overwrite");
    C_->mix_norm_fwd(xm.c, y.c, r.c, x.c, x0.c, mix.c, N, C);
    G_->mix_norm_fwd(xm.g, y.g, r.g, x.g, x0.g, mix.g, N, C);
    EXPECT(xm, 1e-2, "mix_norm_fwd xm");
    EXPECT(y, 1e-2, "mix_norm_fwd y");
    EXPECT(r, 1e-2, "mix_norm_fwd rstd"); /* the GPU normalises the bf16-rounded xm */
    pair dmix = mk(2 * C, 0, NULL), dx0 = mk_rnd((size_t)N * C, 1, 1.0f);
    C_->mix_bwd(dx.c, dx0.c, dmix.c, dy.c, x.c, x0.c, mix.c, N, C);
    G_->mix_bwd(dx.g, dx0.g, dmix.g, dy.g, x.g, x0.g, mix.g, N, C);
    EXPECT(dx, 1e-2, "mix_bwd dx");
    EXPECT(dx0, 1e-2, "mix_bwd dx0");
    EXPECT(dmix, 1e-2, "mix_bwd dmix");
    /* as model.c calls it: dx aliases dxm */
    float *dyh = rnd((size_t)N * C, 1.0f);
    bf16ify(dyh, (size_t)N * C);
    memcpy(dx.c, dyh, (size_t)N * C * 4);
    G_->act_from_f32(dx.g, dyh, (size_t)N * C);
    C_->mix_bwd(dx.c, dx0.c, dmix.c, dx.c, x.c, x0.c, mix.c, N, C);
    G_->mix_bwd(dx.g, dx0.g, dmix.g, dx.g, x.g, x0.g, mix.g, N, C);
    EXPECT(dx, 1e-2, "mix_bwd dx (aliasing dxm)");
    EXPECT(dx0, 1e-2, "mix_bwd dx0 (dx aliasing dxm)");
    EXPECT(dmix, 1e-2, "mix_bwd dmix (dx aliasing dxm)");
    free(dyh);
    free(mixh);
    pair ps[] = {x, x0, mix, y, xm, r, dy, dx, dmix, dx0};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) drop(ps[i]);
}
/* C % 8 == 0: the 16-byte paths; C = 100: the scalar paths */
TEST(cuda_norm_ops) {
    NEED_GPU();
    norm_case(t__, 300, 512);
}
TEST(cuda_norm_ops_odd_width) {
    NEED_GPU();
    norm_case(t__, 77, 100);
}

TEST(cuda_memory_and_conversions) {
    NEED_GPU();
    /* peak bytes: an allocation above every earlier peak raises it to at least its size */
    size_t p0 = G_->peak_bytes(), big = p0 + ((size_t)1 << 20);
    void *b = G_->alloc(big);
    size_t p1 = G_->peak_bytes();
    T_ASSERT(p1 >= big && p1 > p0, "peak_bytes %zu after allocating %zu (before: %zu)", p1, big, p0);
    G_->free(b);
    T_ASSERT(G_->peak_bytes() == p1, "peak_bytes changed by a free: %zu -> %zu", p1, G_->peak_bytes());
    /* fp32 round trip, zero */
    const size_t n = 100003;
    float *h = rnd(n, 3.0f), *back = xmalloc(n * 4);
    float *d = G_->alloc(n * 4);
    G_->to_device(d, h, n * 4);
    G_->to_host(back, d, n * 4);
    T_ASSERT(!memcmp(h, back, n * 4), "to_device/to_host round trip differs");
    G_->zero(d, n * 4);
    G_->to_host(back, d, n * 4);
    for (size_t i = 0; i < n; i++) T_ASSERT(back[i] == 0.0f, "zero left %g at %zu", back[i], i);
    /* fp32 -> bf16, round to nearest even, ties included */
    h[0] = 1.0f + 1.0f / 256.0f;        /* halfway between 1 and 1+2^-7: to 1 (even) */
    h[1] = 1.0f + 3.0f / 256.0f;        /* halfway between 1+2^-7 and 1+2^-6: to 1+2^-6 (even) */
    h[2] = -(1.0f + 1.0f / 256.0f);
    h[3] = 3.0e38f;
    G_->to_device(d, h, n * 4);
    pg_wc *wc = G_->alloc(n * G_->wc_bytes);
    G_->weights_to_compute(wc, d, n);
    G_->act_to_f32(back, (const pg_act *)wc, n);
    for (size_t i = 0; i < n; i++)
        T_ASSERT(back[i] == pg_round_bf16(h[i]), "weights_to_compute(%.9g) = %.9g, want %.9g", h[i], back[i],
                 pg_round_bf16(h[i]));
    T_ASSERT(back[0] == 1.0f && back[1] == 1.0f + 1.0f / 64.0f, "ties not to even: %.9g %.9g", back[0], back[1]);
    pg_act *a = G_->alloc(n * G_->act_bytes);
    G_->act_from_f32(a, h, n);
    G_->act_to_f32(back, a, n);
    for (size_t i = 0; i < n; i++)
        T_ASSERT(back[i] == pg_round_bf16(h[i]), "act_from_f32/act_to_f32(%.9g) = %.9g", h[i], back[i]);
    G_->free(a);
    G_->free(wc);
    G_->free(d);
    free(h);
    free(back);
}

static void embed_case(t_state *t__, int V, int C, int N) {
    float *th = rnd((size_t)V * C, 1.0f);
    bf16ify(th, (size_t)V * C);
    pair tab;
    wc_pair(&tab, th, (size_t)V * C);
    int32_t *ih = xmalloc((size_t)N * 4);
    for (int n = 0; n < N; n++) ih[n] = (int32_t)(((long)n * 7 + (n % 3) * 11) % (V - 5)); /* repeats; top rows unused */
    ih[N / 2] = V - 1; /* the last row, once */
    int32_t *ic = C_->alloc((size_t)N * 4), *ig = G_->alloc((size_t)N * 4);
    memcpy(ic, ih, (size_t)N * 4);
    G_->to_device(ig, ih, (size_t)N * 4);
    pair y = mk((size_t)N * C, 1, NULL);
    C_->embed_fwd(y.c, ic, tab.c, N, C);
    G_->embed_fwd(y.g, ig, tab.g, N, C);
    EXPECT(y, 1e-6, "embed_fwd");
    pair dy = mk_rnd((size_t)N * C, 1, 1.0f), dt = mk_rnd((size_t)V * C, 0, 0.1f);
    C_->embed_bwd(dt.c, dy.c, ic, N, C);
    G_->embed_bwd(dt.g, dy.g, ig, N, C);
    EXPECT(dt, 1e-6, "embed_bwd");
    C_->free(ic);
    G_->free(ig);
    free(ih);
    free(th);
    drop(tab);
    drop(y);
    drop(dy);
    drop(dt);
}
TEST(cuda_embedding) {
    NEED_GPU();
    embed_case(t__, 300, 512, 700);
    if (t__->failed) return;
    embed_case(t__, 61, 100, 1000);
}

static void matmul_case(t_state *t__, int N, int IN, int OUT, int acc) {
    float *wh = rnd((size_t)OUT * IN, 0.05f);
    bf16ify(wh, (size_t)OUT * IN);
    pair W;
    wc_pair(&W, wh, (size_t)OUT * IN);
    pair x = mk_rnd((size_t)N * IN, 1, 1.0f), y = mk((size_t)N * OUT, 1, NULL);
    C_->matmul_fwd(y.c, x.c, W.c, N, IN, OUT);
    G_->matmul_fwd(y.g, x.g, W.g, N, IN, OUT);
    EXPECT(y, 1e-2, "matmul_fwd");
    pair dy = mk_rnd((size_t)N * OUT, 1, 1.0f), dx = mk_rnd((size_t)N * IN, 1, 1.0f);
    float *dwh = rnd((size_t)OUT * IN, 1.0f);
    pair dW = mk((size_t)OUT * IN, 0, dwh);
    C_->matmul_bwd(dx.c, dW.c, dy.c, x.c, W.c, N, IN, OUT, acc);
    G_->matmul_bwd(dx.g, dW.g, dy.g, x.g, W.g, N, IN, OUT, acc);
    EXPECT(dx, 1e-2, acc ? "matmul_bwd dx (accumulate)" : "matmul_bwd dx");
    EXPECT(dW, 1e-2, "matmul_bwd dW (accumulates)");
    /* one of the two skipped */
    C_->matmul_bwd(NULL, dW.c, dy.c, x.c, W.c, N, IN, OUT, acc);
    G_->matmul_bwd(NULL, dW.g, dy.g, x.g, W.g, N, IN, OUT, acc);
    EXPECT(dW, 1e-2, "matmul_bwd dW only");
    C_->matmul_bwd(dx.c, NULL, dy.c, x.c, W.c, N, IN, OUT, 1);
    G_->matmul_bwd(dx.g, NULL, dy.g, x.g, W.g, N, IN, OUT, 1);
    EXPECT(dx, 1e-2, "matmul_bwd dx only");
    free(wh);
    free(dwh);
    pair ps[] = {W, x, y, dy, dx, dW};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) drop(ps[i]);
}
TEST(cuda_matmul_ops) {
    NEED_GPU();
    matmul_case(t__, 333, 512, 384, 1);
    if (t__->failed) return;
    matmul_case(t__, 77, 136, 1024, 0); /* an odd token count, the head's shape class */
}

static void qk_case(t_state *t__, int rope_dims) {
    const int B = 3, T = 40, H = 8, Hk = 4, D = 64, N = B * T;
    pair qr = mk_rnd((size_t)N * H * D, 1, 1.0f), kr = mk_rnd((size_t)N * Hk * D, 1, 1.0f);
    float *gh = rnd(H, 1.0f);
    for (int h = 0; h < H; h++) gh[h] += 1.5f;
    pair gain = mk(H, 0, gh);
    int half = rope_dims / 2;
    float *cs = xmalloc((size_t)T * half * 4), *sn = xmalloc((size_t)T * half * 4);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            float a = t * powf(10000.f, -2.f * j / rope_dims);
            cs[t * half + j] = pg_round_bf16(cosf(a));
            sn[t * half + j] = pg_round_bf16(sinf(a));
        }
    pair cp = mk((size_t)T * half, 0, cs), sp = mk((size_t)T * half, 0, sn);
    pair q = mk((size_t)N * H * D, 1, NULL), k = mk((size_t)N * Hk * D, 1, NULL), rq = mk((size_t)N * H, 0, NULL),
         rk = mk((size_t)N * Hk, 0, NULL);
    C_->qk_prep_fwd(q.c, k.c, rq.c, rk.c, qr.c, kr.c, gain.c, cp.c, sp.c, N, T, H, Hk, D, rope_dims);
    G_->qk_prep_fwd(q.g, k.g, rq.g, rk.g, qr.g, kr.g, gain.g, cp.g, sp.g, N, T, H, Hk, D, rope_dims);
    EXPECT(q, 1e-2, "qk_prep_fwd q");
    EXPECT(k, 1e-2, "qk_prep_fwd k");
    pair dq = mk_rnd((size_t)N * H * D, 1, 1.0f), dk = mk_rnd((size_t)N * Hk * D, 1, 1.0f);
    pair dqr = mk((size_t)N * H * D, 1, NULL), dkr = mk((size_t)N * Hk * D, 1, NULL), dg = mk(H, 0, NULL);
    C_->qk_prep_bwd(dqr.c, dkr.c, dg.c, dq.c, dk.c, qr.c, kr.c, rq.c, rk.c, gain.c, cp.c, sp.c, N, T, H, Hk, D, rope_dims);
    G_->qk_prep_bwd(dqr.g, dkr.g, dg.g, dq.g, dk.g, qr.g, kr.g, rq.g, rk.g, gain.g, cp.g, sp.g, N, T, H, Hk, D, rope_dims);
    EXPECT(dqr, 1e-2, "qk_prep_bwd dq_raw");
    EXPECT(dkr, 1e-2, "qk_prep_bwd dk_raw");
    EXPECT(dg, 1e-2, "qk_prep_bwd dgain");
    free(gh);
    free(cs);
    free(sn);
    pair ps[] = {qr, kr, gain, cp, sp, q, k, rq, rk, dq, dk, dqr, dkr, dg};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) drop(ps[i]);
}
TEST(cuda_qk_prep_full_rope) {
    NEED_GPU();
    qk_case(t__, 64);
}
TEST(cuda_qk_prep_partial_rope) {
    NEED_GPU();
    qk_case(t__, 16);
}

static void attn_case(t_state *t__, int B, int T, int H, int Hk) {
    NEED_OP(attn_fwd);
    NEED_OP(attn_bwd);
    const int D = 64;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hk * D;
    pair q = mk_rnd(nq, 1, 1.0f), k = mk_rnd(nk, 1, 1.0f), v = mk_rnd(nk, 1, 1.0f);
    pair o = mk(nq, 1, NULL), lse = mk((size_t)B * H * T, 0, NULL);
    C_->attn_fwd(o.c, lse.c, q.c, k.c, v.c, B, T, H, Hk, D);
    G_->attn_fwd(o.g, lse.g, q.g, k.g, v.g, B, T, H, Hk, D);
    EXPECT(o, 2e-2, "attn_fwd o");
    EXPECT(lse, 1e-3, "attn_fwd lse");
    /* the backward gets identical o/lse on both sides (the CPU ones) */
    float *oh = xmalloc(nq * 4), *lh = xmalloc((size_t)B * H * T * 4);
    memcpy(oh, o.c, nq * 4);
    bf16ify(oh, nq);
    memcpy(o.c, oh, nq * 4);
    G_->act_from_f32(o.g, oh, nq);
    memcpy(lh, lse.c, (size_t)B * H * T * 4);
    G_->to_device(lse.g, lh, (size_t)B * H * T * 4);
    pair dout = mk_rnd(nq, 1, 1.0f), dq = mk(nq, 1, NULL), dk = mk(nk, 1, NULL), dv = mk(nk, 1, NULL);
    C_->attn_bwd(dq.c, dk.c, dv.c, dout.c, q.c, k.c, v.c, o.c, lse.c, B, T, H, Hk, D);
    G_->attn_bwd(dq.g, dk.g, dv.g, dout.g, q.g, k.g, v.g, o.g, lse.g, B, T, H, Hk, D);
    EXPECT(dq, 2e-2, "attn_bwd dq");
    EXPECT(dk, 2e-2, "attn_bwd dk");
    EXPECT(dv, 2e-2, "attn_bwd dv");
    free(oh);
    free(lh);
    pair ps[] = {q, k, v, o, lse, dout, dq, dk, dv};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) drop(ps[i]);
}
TEST(cuda_attention_gqa) {
    NEED_GPU();
    attn_case(t__, 2, 256, 8, 4);
}
TEST(cuda_attention_ragged_len_mha) {
    NEED_GPU();
    attn_case(t__, 3, 77, 4, 4);
}

TEST(cuda_elementwise_and_ce) {
    NEED_GPU();
    const int N = 257, C = 512, V = 1024;
    pair x = mk_rnd((size_t)N * C, 1, 1.0f), a = mk_rnd((size_t)N * C, 1, 1.0f), y = mk((size_t)N * C, 1, NULL);
    float *sh = rnd(C, 1.0f);
    pair s = mk(C, 0, sh);
    C_->resid_fwd(y.c, x.c, a.c, s.c, N, C);
    G_->resid_fwd(y.g, x.g, a.g, s.g, N, C);
    EXPECT(y, 1e-2, "resid_fwd");
    pair ds = mk(C, 0, NULL), da = mk_rnd((size_t)N * C, 1, 1.0f);
    C_->resid_bwd(da.c, ds.c, x.c, a.c, s.c, N, C, 1);
    G_->resid_bwd(da.g, ds.g, x.g, a.g, s.g, N, C, 1);
    EXPECT(da, 1e-2, "resid_bwd da");
    EXPECT(ds, 1e-2, "resid_bwd dscale");
    C_->resid_bwd(da.c, ds.c, x.c, a.c, s.c, N, C, 0);
    G_->resid_bwd(da.g, ds.g, x.g, a.g, s.g, N, C, 0);
    EXPECT(da, 1e-2, "resid_bwd da (overwrite)");
    EXPECT(ds, 1e-2, "resid_bwd dscale (accumulated twice)");
    /* as model.c uses it for value embeddings: C = 1 (one scale), y aliasing x */
    pair s1 = mk(1, 0, sh), ds1 = mk(1, 0, NULL);
    C_->resid_fwd(x.c, x.c, a.c, s1.c, N * C, 1);
    G_->resid_fwd(x.g, x.g, a.g, s1.g, N * C, 1);
    EXPECT(x, 1e-2, "resid_fwd C=1 in place");
    C_->resid_bwd(da.c, ds1.c, y.c, a.c, s1.c, N * C, 1, 1);
    G_->resid_bwd(da.g, ds1.g, y.g, a.g, s1.g, N * C, 1, 1);
    EXPECT(da, 1e-2, "resid_bwd C=1 da");
    EXPECT(ds1, 1e-2, "resid_bwd C=1 dscale");
    C_->relu2_fwd(y.c, x.c, (size_t)N * C);
    G_->relu2_fwd(y.g, x.g, (size_t)N * C);
    EXPECT(y, 1e-2, "relu2_fwd");
    C_->relu2_bwd(y.c, a.c, x.c, (size_t)N * C);
    G_->relu2_bwd(y.g, a.g, x.g, (size_t)N * C);
    EXPECT(y, 1e-2, "relu2_bwd");
    C_->relu2_bwd(y.c, y.c, x.c, (size_t)N * C - 3); /* dh aliasing du; a length that is not a multiple of 8 */
    G_->relu2_bwd(y.g, y.g, x.g, (size_t)N * C - 3);
    EXPECT(y, 1e-2, "relu2_bwd in place");
    C_->add_inplace(y.c, a.c, (size_t)N * C);
    G_->add_inplace(y.g, a.g, (size_t)N * C);
    EXPECT(y, 1e-2, "add_inplace");
    C_->act_scale(y.c, (size_t)N * C - 5, 0.37f);
    G_->act_scale(y.g, (size_t)N * C - 5, 0.37f);
    EXPECT(y, 1e-2, "act_scale");
    /* softcap + CE: compare losses, then gradients; without a gradient z holds the softcapped logits */
    int32_t *tg = xmalloc(N * 4);
    for (int i = 0; i < N; i++) tg[i] = (int32_t)((i * 7919) % V);
    int32_t *tgc = C_->alloc(N * 4), *tgg = G_->alloc(N * 4);
    memcpy(tgc, tg, N * 4);
    G_->to_device(tgg, tg, N * 4);
    for (int pass = 0; pass < 2; pass++) {
        const float gs = pass ? 0.0f : 0.5f;
        pair z = mk_rnd((size_t)N * V, 1, 40.0f), loss = mk(N, 0, NULL);
        C_->softcap_ce(loss.c, z.c, tgc, N, V, 30.0f, gs);
        G_->softcap_ce(loss.g, z.g, tgg, N, V, 30.0f, gs);
        EXPECT(loss, 1e-3, "softcap_ce losses");
        EXPECT(z, 2e-2, pass ? "softcap_ce softcapped logits (no gradient)" : "softcap_ce dz");
        drop(z);
        drop(loss);
    }
    C_->free(tgc);
    G_->free(tgg);
    free(tg);
    free(sh);
    pair ps[] = {x, a, y, s, ds, da, s1, ds1};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) drop(ps[i]);
}

TEST(cuda_fp32_ops) {
    NEED_GPU();
    const size_t n = 100003;
    for (int wdon = 0; wdon < 2; wdon++) {
        pair p = mk_rnd(n, 0, 1.0f), g = mk_rnd(n, 0, 0.1f), m = mk_rnd(n, 0, 0.01f);
        float *vh = rnd(n, 0.01f);
        for (size_t i = 0; i < n; i++) vh[i] = fabsf(vh[i]);
        pair v = mk(n, 0, vh);
        const float wd = wdon ? 0.04f : 0.0f;
        C_->adam_step(p.c, g.c, m.c, v.c, n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.19f, 0.0975f, wd);
        G_->adam_step(p.g, g.g, m.g, v.g, n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.19f, 0.0975f, wd);
        EXPECT(p, 1e-6, "adam p");
        EXPECT(m, 1e-6, "adam m");
        EXPECT(v, 1e-6, "adam v");
        free(vh);
        drop(p), drop(g), drop(m), drop(v);
    }
    pair e = mk_rnd(n, 0, 1.0f), w = mk_rnd(n, 0, 1.0f);
    float *wh = rnd(n, 1.0f);
    G_->to_device(w.g, wh, n * 4); /* not bf16-rounded: fp32 values */
    memcpy(w.c, wh, n * 4);
    C_->ema_update(e.c, w.c, n, 0.997f);
    G_->ema_update(e.g, w.g, n, 0.997f);
    float *eh = xmalloc(n * 4);
    G_->to_host(eh, e.g, n * 4);
    T_ASSERT(!memcmp(eh, e.c, n * 4), "ema_update differs from the CPU op (want bit-identical)");
    C_->add_f32(e.c, w.c, n);
    G_->add_f32(e.g, w.g, n);
    EXPECT(e, 1e-6, "add_f32");
    C_->scale_inplace(e.c, n, 0.3f);
    G_->scale_inplace(e.g, n, 0.3f);
    EXPECT(e, 1e-6, "scale_inplace");
    double sc = C_->sum_squares(w.c, n), sg = G_->sum_squares(w.g, n);
    T_CLOSE(sg, sc, 1e-9, 0, "sum_squares");
    T_CLOSE(G_->sum_squares(w.g, 1), (double)wh[0] * wh[0], 1e-12, 0, "sum_squares of one");
    { /* spans (unordered, one empty, one overlapping another): each the single-span op's bits on the
       * device, and the CPU op's sums */
        const size_t off[5] = {0, n / 2, 7, n - 1, 3}, cnt[5] = {n / 2, n - n / 2, 0, 1, n / 3};
        double pg[5], pc[5];
        G_->sum_squares_spans(w.g, off, cnt, 5, pg);
        C_->sum_squares_spans(w.c, off, cnt, 5, pc);
        for (int i = 0; i < 5; i++) {
            T_ASSERT(pg[i] == G_->sum_squares((float *)w.g + off[i], cnt[i]), "sum_squares_spans span %d: %.17g, alone %.17g", i,
                     pg[i], G_->sum_squares((float *)w.g + off[i], cnt[i]));
            T_ASSERT(pc[i] == C_->sum_squares((float *)w.c + off[i], cnt[i]), "CPU sum_squares_spans span %d", i);
            T_CLOSE(pg[i], pc[i], 1e-9, 0, "sum_squares_spans against the CPU op");
        }
        T_ASSERT(pg[2] == 0.0, "an empty span sums to %g", pg[2]);
    }
    free(wh);
    free(eh);
    drop(e);
    drop(w);
}

TEST(cuda_muon) {
    NEED_GPU();
    /* tall (transposed inside), wide, square; with MuonEq-R and weight decay */
    const int shapes[3][2] = {{384, 128}, {128, 256}, {192, 192}};
    for (int s = 0; s < 3; s++)
        for (int variant = 0; variant < 2; variant++) {
            const int r = shapes[s][0], c = shapes[s][1], eq_r = variant, steps = variant ? 4 : 5;
            const float wd = variant ? 0.085f : 0.0f;
            size_t nn = (size_t)r * c;
            pair W = mk_rnd(nn, 0, 0.05f), G = mk_rnd(nn, 0, 0.01f), buf = mk_rnd(nn, 0, 0.01f);
            size_t wc = C_->muon_work_floats(r, c), wg = G_->muon_work_floats(r, c);
            float *workc = C_->alloc(wc * 4), *workg = G_->alloc(wg * 4);
            /* compare the update W' - W rather than W itself (W dominates otherwise) */
            float *w0 = xmalloc(nn * 4);
            memcpy(w0, W.c, nn * 4);
            C_->muon_step(W.c, G.c, buf.c, r, c, 0.02f, 0.95f, steps, wd, eq_r, workc);
            G_->muon_step(W.g, G.g, buf.g, r, c, 0.02f, 0.95f, steps, wd, eq_r, workg);
            float *wg_h = xmalloc(nn * 4);
            G_->to_host(wg_h, W.g, nn * 4);
            for (size_t i = 0; i < nn; i++) wg_h[i] -= w0[i], ((float *)W.c)[i] -= w0[i];
            double e = rel_l2(wg_h, W.c, nn);
            T_ASSERT(e <= 1e-3, "muon update %dx%d eq_r=%d wd=%g: relative L2 error %.3g", r, c, eq_r, wd, e);
            EXPECT(buf, 1e-6, "muon momentum buffer");
            free(w0);
            free(wg_h);
            C_->free(workc);
            G_->free(workg);
            drop(W);
            drop(G);
            drop(buf);
        }
}

#ifndef PG_CUDA_TEST_OPS_ONLY /* tests/cuda_emu_core builds the op tests alone (the model is too slow emulated) */
/* whole model: same weights and batch on both backends */
static void small_config(pg_config *c) {
    config_defaults(c);
    char err[256];
    const char *kv[][2] = {{"VOCAB_SIZE", "256"}, {"MODEL_DIM", "128"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "2"},
                           {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"}, {"TRAIN_SEQ_LEN", "128"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) config_set(c, kv[i][0], kv[i][1], "test", err, sizeof(err));
}

TEST(cuda_model_step_matches_cpu) {
    NEED_GPU();
    NEED_OP(attn_fwd);
    NEED_OP(attn_bwd);
    pg_config c;
    small_config(&c);
    const int B = 4, T = 128;
    gpt_model mc, mg;
    gpt_build(&mc, &c, C_, B, T);
    gpt_build(&mg, &c, G_, B, T);
    gpt_init(&mc, &c, 5);
    /* make projections non-zero so every gradient is exercised */
    float *w = xmalloc(mc.n_floats * 4);
    memcpy(w, mc.w, mc.n_floats * 4);
    for (int p = 0; p < mc.n_params; p++)
        if (mc.params[p].init == INIT_ZERO)
            for (size_t k = 0; k < mc.params[p].numel; k++) w[mc.params[p].offset + k] = pg_round_bf16(0.02f * frand());
    memcpy(mc.w, w, mc.n_floats * 4);
    gpt_sync_weights(&mc);
    G_->to_device(mg.w, w, mc.n_floats * 4);
    gpt_sync_weights(&mg);
    int32_t x[B * T], y[B * T];
    for (int i = 0; i < B * T; i++) x[i] = (int32_t)((i * 37 + 11) % 256), y[i] = (int32_t)((i * 91 + 3) % 256);
    gpt_zero_grad(&mc);
    gpt_zero_grad(&mg);
    double lc = gpt_forward_backward(&mc, x, y, B, 1.0f, NULL);
    double lg = gpt_forward_backward(&mg, x, y, B, 1.0f, NULL);
    T_CLOSE(lg, lc, 1e-2, 0, "loss");
    float *gg = xmalloc(mc.n_floats * 4);
    G_->to_host(gg, mg.g, mc.n_floats * 4);
    for (int p = 0; p < mc.n_params; p++) {
        const param_info *pi = &mc.params[p];
        double e = rel_l2(gg + pi->offset, mc.g + pi->offset, pi->numel);
        /* q_gain (H values) sums N*D products that largely cancel: bf16 activations leave it a few
         * percent off (seen 0.3-6% in the emulator, where every matrix is within ~1%) */
        const double tol = pi->numel <= 16 ? 1.5e-1 : 5e-2;
        T_ASSERT(e <= tol, "gradient of %s: relative L2 error %.3g > %.3g", pi->name, e, tol);
    }
    /* three optimizer steps on the same batch */
    optimizer oc, og;
    optim_init(&oc, &mc);
    optim_init(&og, &mg);
    for (int s = 0; s < 3; s++) {
        if (s) {
            gpt_zero_grad(&mc);
            gpt_zero_grad(&mg);
            gpt_forward_backward(&mc, x, y, B, 1.0f, NULL);
            gpt_forward_backward(&mg, x, y, B, 1.0f, NULL);
        }
        optim_step(&oc, &c, 1.0);
        optim_step(&og, &c, 1.0);
    }
    G_->to_host(gg, mg.w, mc.n_floats * 4);
    for (int p = 0; p < mc.n_params; p++) {
        const param_info *pi = &mc.params[p];
        double e = rel_l2(gg + pi->offset, mc.w + pi->offset, pi->numel);
        /* Newton-Schulz maps every singular direction of the momentum to ~1, so the ~1% gradient
         * differences of bf16 activations grow in Muon's matrices (emulator: 1-8% after 3 steps,
         * largest for the small-norm projections), and Adam's m/sqrt(v) amplifies them on small
         * entries (tok_emb 3%); a wrong update is off by O(1) */
        const double tol = pi->group == GROUP_MUON ? 1.5e-1 : 5e-2;
        T_ASSERT(e <= tol, "%s after 3 steps: relative L2 error %.3g > %.3g", pi->name, e, tol);
    }
    /* and the loss those weights give */
    lc = gpt_forward_backward(&mc, x, y, B, 0.0f, NULL);
    lg = gpt_forward_backward(&mg, x, y, B, 0.0f, NULL);
    T_CLOSE(lg, lc, 2e-2, 0, "loss after 3 steps");
    optim_free(&oc);
    optim_free(&og);
    free(w);
    free(gg);
    gpt_free(&mc);
    gpt_free(&mg);
    config_free(&c);
}

/* incremental decoding (pgolf sample) on the CUDA backend: at every position of a random sequence the
 * GPU decoder's log p of the next token against (a) the GPU's own full forward (minus its per-token
 * loss: the same bf16 model, so only attention's and the matmuls' summation orders differ) and (b)
 * the CPU decoder's (fp32). Two model forms cover the decoder's cross-position state: SmearGate
 * before the norm with BigramHash, pre-enrichment and encoder recurrence (PR #187); SmearGate after
 * the norm with the PR #315 bigram table, VE, XSA, parallel residuals and depth recurrence
 * (PR #1392), three sequences decoded together (of a model of four). Random weights (randomize_weights) give peaked distributions (log p down to -13 nats),
 * where bf16 activations alone move log p by ~0.1 nats (emulator: GPU forward vs CPU 0.10, GPU
 * decoder vs CPU 0.08, GPU decoder vs GPU forward 0.10). The bands: 0.25 nats, and the GPU decoder no
 * further from the fp32 decoder than twice the GPU forward is (+0.02); a wrong cache, position or
 * carried state is off by nats. The CPU decoder and a second GPU decoder are gpt_build_decoder models
 * (what `pgolf sample` uses); the second must give the logits of the GPU training model's decoder,
 * the same kernels on the same shapes (within 1e-3 nats). */
static void decode_case(t_state *t__, const char *const kv[][2], int nkv, int nb) {
    pg_config c;
    config_defaults(&c);
    char err[256];
    const char *base[][2] = {{"VOCAB_SIZE", "128"}, {"MODEL_DIM", "128"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "2"},
                             {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"}, {"TRAIN_SEQ_LEN", "40"}, {"TRAIN_BATCH_TOKENS", "320"}};
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        T_ASSERT(config_set(&c, base[i][0], base[i][1], "test", err, sizeof(err)) == 0, "%s", err);
    for (int i = 0; i < nkv; i++) T_ASSERT(config_set(&c, kv[i][0], kv[i][1], "test", err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(&c, err, sizeof(err)) == 0, "%s", err);
    const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
    T_ASSERT(nb <= 3 && T <= 40, "decode_case holds 3 sequences of 40");
    gpt_model mc, mg, md;
    gpt_build_decoder(&mc, &c, C_, nb, T);
    gpt_build(&mg, &c, G_, nb + 1, T); /* nb of nb + 1 sequences */
    gpt_build_decoder(&md, &c, G_, nb, T);
    randomize_weights(&mc, 77);
    for (size_t i = 0; i < mc.n_floats; i++) mc.w[i] = pg_round_bf16(mc.w[i]); /* both see the same values */
    gpt_sync_weights(&mc);
    G_->to_device(mg.w, mc.w, mc.n_floats * 4);
    gpt_sync_weights(&mg);
    G_->to_device(md.w, mc.w, mc.n_floats * 4);
    gpt_sync_weights(&md);
    mc.recur_on = mc.recur_n > 0;
    mg.recur_on = mg.recur_n > 0;
    md.recur_on = md.recur_n > 0;
    int32_t x[120], y[120], tok[3];
    for (int i = 0; i < nb * T; i++) x[i] = (int32_t)((i * 37 + 11 + i / T * 5) % V);
    for (int i = 0; i < nb * T; i++) y[i] = (i + 1) % T ? x[i + 1] : 5;
    float loss[120], *lc = xmalloc((size_t)nb * V * 4), *lg = xmalloc((size_t)nb * V * 4);
    float *ld = xmalloc((size_t)nb * V * 4);
    gpt_forward_backward(&mg, x, y, nb, 0.0f, loss);
    gpt_decode_reset(&mc, nb);
    gpt_decode_reset(&mg, nb);
    gpt_decode_reset(&md, nb);
    double worst_fwd = 0, worst_cpu = 0, spread = 0, worst_fc = 0, worst_dec = 0;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < nb; b++) tok[b] = x[b * T + t];
        gpt_decode_step(&mc, tok, lc);
        gpt_decode_step(&mg, tok, lg);
        gpt_decode_step(&md, tok, ld);
        for (int b = 0; b < nb; b++) {
            const float *pc_ = lc + (size_t)b * V, *pg_ = lg + (size_t)b * V;
            const int i = b * T + t;
            double mxc = -INFINITY, mxg = -INFINITY, sc = 0, sg = 0;
            for (int v = 0; v < V; v++) mxc = fmax(mxc, pc_[v]), mxg = fmax(mxg, pg_[v]);
            for (int v = 0; v < V; v++) sc += exp((double)pc_[v] - mxc), sg += exp((double)pg_[v] - mxg);
            const double pc = pc_[y[i]] - mxc - log(sc), pg = pg_[y[i]] - mxg - log(sg);
            double d1 = fabs(pg + loss[i]), d2 = fabs(pg - pc);
            if (!(d1 <= worst_fwd)) worst_fwd = d1; /* NaN propagates */
            if (!(d2 <= worst_cpu)) worst_cpu = d2;
            const float *pd_ = ld + (size_t)b * V;
            double mxd = -INFINITY, sd = 0;
            for (int v = 0; v < V; v++) mxd = fmax(mxd, pd_[v]);
            for (int v = 0; v < V; v++) sd += exp((double)pd_[v] - mxd);
            const double d3 = fabs(pd_[y[i]] - mxd - log(sd) - pg);
            if (!(d3 <= worst_dec)) worst_dec = d3;
            spread = fmax(spread, fabs(pc + log((double)V)));
            worst_fc = fmax(worst_fc, fabs(pc + loss[i]));
        }
    }
    free(lc);
    free(lg);
    free(ld);
    gpt_free(&mc);
    gpt_free(&mg);
    gpt_free(&md);
    config_free(&c);
    T_ASSERT(worst_dec < 1e-3, "GPU decoder build vs the GPU training model's decoder (%d sequences): max |log p "
             "diff| %.3g", nb, worst_dec);
    T_ASSERT(spread > 1.0, "the test model's distributions are too flat to test anything (%.3g)", spread);
    T_ASSERT(worst_fwd < 0.25, "GPU decoder vs GPU forward (%d sequences): max |log p diff| %.3g", nb, worst_fwd);
    T_ASSERT(worst_cpu < 0.25 && worst_cpu <= 2 * worst_fc + 0.02,
             "GPU decoder vs CPU decoder (%d sequences): max |log p diff| %.3g (the GPU forward's own distance from "
             "the CPU: %.3g)", nb, worst_cpu, worst_fc);
}

/* the evaluator build on the GPU (validation's, sliding windows' and `pgolf eval`'s model) against
 * the GPU training build, for every model form (tests/model_forms.h): the same kernels on the same
 * shapes reading the same weights, so the same mean and per-token losses and logits bit for bit,
 * with its own copy of the weights and with the training model's (gpt_build_eval's borrowed masters
 * and bf16 compute copies). The training model first runs a training forward and backward on other
 * tokens (its QAT copies, its activations). test_model.c checks the same on the CPU. */
TEST(cuda_eval_build_matches_training) {
    NEED_GPU();
    NEED_OP(attn_fwd);
    NEED_OP(attn_bwd);
    const int nb = 3;
    for (int ci = 0; ci < N_MODEL_FORMS && !t__->failed; ci++) {
        const char *name = MODEL_FORMS[ci].name;
        char err[512];
        pg_config c;
        T_ASSERT(model_form_config(&c, &MODEL_FORMS[ci], err, sizeof(err)) == 0, "form %s: %s", name, err);
        const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
        const size_t N = (size_t)nb * T;
        gpt_model h, mt, me, mw; /* h: the weights, on the host */
        gpt_build_decoder(&h, &c, C_, 1, T);
        randomize_weights(&h, 141 + (uint64_t)ci);
        gpt_build(&mt, &c, G_, nb + 1, T);
        gpt_build_eval(&me, &c, G_, nb + 1, T, NULL);
        gpt_build_eval(&mw, &c, G_, nb + 1, T, &mt);
        G_->to_device(mt.w, h.w, h.n_floats * sizeof(float));
        G_->to_device(me.w, h.w, h.n_floats * sizeof(float));
        gpt_sync_weights(&mt);
        gpt_sync_weights(&me);
        mt.recur_on = me.recur_on = mt.recur_n > 0; /* mw follows mt's */
        int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t)), *x2 = xmalloc(N * sizeof(int32_t));
        for (size_t i = 0; i < N; i++) {
            x[i] = (int32_t)((i * 37 + 11 + ci) % (size_t)V);
            y[i] = (int32_t)((i * 53 + 7) % (size_t)V);
            x2[i] = (int32_t)((i * 29 + 3) % (size_t)V);
        }
        gpt_forward_backward(&mt, x2, y, nb, 1.0f, NULL);
        double mean[3];
        gpt_model *ms[3] = {&mt, &me, &mw};
        const int same = same_forwards(ms, 3, x, y, nb, mean);
        const size_t full = mt.dev_bytes, ev = me.dev_bytes;
        free(x);
        free(y);
        free(x2);
        gpt_free(&mw);
        gpt_free(&me);
        gpt_free(&mt);
        gpt_free(&h);
        config_free(&c);
        T_ASSERT(same, "form %s: the GPU evaluator's losses or logits differ from the GPU training model's (means "
                 "%.9g %.9g %.9g)", name, mean[0], mean[1], mean[2]);
        T_ASSERT(ev < full, "form %s: the GPU evaluator holds %zu bytes, the training model %zu", name, ev, full);
    }
}

TEST(cuda_decode_matches_forward_and_cpu) {
    NEED_GPU();
    NEED_OP(attn_decode);
    const char *pr187[][2] = {{"PGOLF_PRE_ENRICH", "96"}, {"ENCODER_RECURRENCE", "1"}, {"PGOLF_SMEAR_MODE", "pre"},
                              {"BIGRAM_HASH_BUCKETS", "61"}, {"BIGRAM_HASH_DIM", "32"}, {"XSA_LAST_N", "2"}};
    decode_case(t__, pr187, 6, 1);
    if (t__->failed) return;
    const char *pr1392[][2] = {{"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "53"}, {"BIGRAM_DIM", "32"},
                               {"VE_ENABLED", "1"}, {"VE_DIM", "32"}, {"VE_LAYERS", "1,3"},
                               {"PARALLEL_START_LAYER", "2"}, {"RECUR_LAYERS", "0,1"}, {"XSA_LAST_N", "4"},
                               {"ROPE_DIMS", "16"}, {"LN_SCALE", "1"}, {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}};
    decode_case(t__, pr1392, 12, 3);
}
#endif

/* NCCL on one rank, without MPI (the unique id stays in this process): the communicator, the
 * communication stream and the events that order it with the backend's stream (nccl.cu). One
 * rank's sums are the identity, so this shows the calls run, keep the data, and wait for the
 * kernels issued before them and hold back those issued after dist_reduce_wait; sums across GPUs
 * need several ranks (docs/distributed.md). */
TEST(cuda_nccl_one_rank) {
#ifndef PGOLF_NCCL
    T_SKIP("built without NCCL (nccl.h not found)");
#else
    NEED_GPU();
    unsigned char id[256] = {0};
    char err[512] = "";
    T_ASSERT(pg_nccl_unique_id(id, sizeof(id), err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(pg_nccl_init(id, 0, 1, err, sizeof(err)) == 0, "%s", err);
    const size_t n = (size_t)3 << 20; /* 12 MiB per buffer: long enough to overlap */
    float *h = rnd(n, 1.0f), *back = xmalloc(n * sizeof(float));
    float *x = G_->alloc(n * sizeof(float)), *y = G_->alloc(n * sizeof(float)), *z = G_->alloc(n * sizeof(float));
    G_->to_device(x, h, n * sizeof(float));
    G_->to_device(y, h, n * sizeof(float));
    G_->to_device(z, h, n * sizeof(float));
    for (int rep = 0; rep < 3; rep++) {
        G_->scale_inplace(x, n, 2.0f); /* issued before the sums: they must see it */
        G_->scale_inplace(y, n, 4.0f);
        pg_nccl_reduce_start(x, n, DIST_ALL);
        pg_nccl_reduce_start(y, n, 0);
        G_->scale_inplace(z, n, 2.0f); /* beside them on the backend's stream */
        pg_nccl_reduce_wait();
        G_->scale_inplace(x, n, 0.5f); /* after the wait: behind the sums */
        G_->scale_inplace(y, n, 0.25f);
    }
    float *p[2] = {x, z};
    size_t cnt[2] = {n, n};
    int root[2] = {0, 0};
    pg_nccl_bcast_many(p, cnt, root, 2);
    const struct {
        float *d;
        float mul;
        const char *what;
    } chk[] = {{x, 1.0f, "all-reduce"}, {y, 1.0f, "reduce to rank 0"}, {z, 8.0f, "the kernels beside them"}};
    for (size_t c = 0; c < sizeof(chk) / sizeof(chk[0]); c++) {
        G_->to_host(back, chk[c].d, n * sizeof(float));
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += back[i] != h[i] * chk[c].mul;
        T_ASSERT(bad == 0, "%s: %zu of %zu values changed", chk[c].what, bad, n);
    }
    pg_nccl_finalize();
    G_->free(x);
    G_->free(y);
    G_->free(z);
    free(h);
    free(back);
#endif
}

#else

TEST(cuda_backend) { T_SKIP("no GPU (built without CUDA)"); }

#endif
