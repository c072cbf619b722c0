/* ops_cpu.c: the CPU backend, the reference implementation of every op in ops.h. fp32
 * throughout; OpenBLAS sgemm for matrix products (the OpenMP build, so a call inside an OpenMP
 * parallel region runs single-threaded); OpenMP over rows elsewhere. Reductions over tokens that
 * produce parameter gradients use per-thread partial sums combined in a fixed order, so results
 * do not depend on scheduling for a given thread count. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "../ops.h"
#include "../quant.h"

#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))

static const float RMS_EPS = FLT_EPSILON;
static size_t g_peak, g_cur;

/* ---- memory ---- */
static void *cpu_alloc(size_t bytes) {
    size_t *p = xmalloc_aligned(bytes + 64);
    p[0] = bytes;
    g_cur += bytes;
    if (g_cur > g_peak) g_peak = g_cur;
    return (char *)p + 64;
}
static void cpu_free(void *p) {
    if (!p) return;
    size_t *h = (size_t *)((char *)p - 64);
    g_cur -= h[0];
    free(h);
}
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_copy_rows(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes,
                          size_t rows) {
    for (size_t r = 0; r < rows; r++) memcpy((char *)dst + r * dst_pitch, (const char *)src + r * src_pitch, row_bytes);
}
static void cpu_sync(void) {}
static size_t cpu_peak(void) { return g_peak; }
static void cpu_weights_to_compute(pg_wc *wc, const float *w, size_t n) {
    if ((const void *)wc != (const void *)w) memcpy(wc, w, n * sizeof(float));
}
static void cpu_act_from_f32(pg_act *dst, const float *host, size_t n) { memcpy(dst, host, n * sizeof(float)); }
static void cpu_act_to_f32(float *host, const pg_act *src, size_t n) { memcpy(host, src, n * sizeof(float)); }

/* Column sums over rows with fixed-order combination: out[c] += sum_n a[n,c]*b[n,c]. */
static void colsum_prod(float *out, const float *a, const float *b, int N, int C) {
    int nt = omp_get_max_threads();
    double *part = xcalloc((size_t)nt * (size_t)C, sizeof(double));
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        double *acc = part + (size_t)t * C;
        long n0 = (long)N * t / T, n1 = (long)N * (t + 1) / T;
        for (long n = n0; n < n1; n++) {
            const float *ar = a + n * C, *br = b + n * C;
            for (int c = 0; c < C; c++) acc[c] += (double)ar[c] * br[c];
        }
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += part[(size_t)t * C + c];
        out[c] += (float)s;
    }
    free(part);
}

/* ---- embedding ---- */
static void cpu_embed_fwd(pg_act *y, const int32_t *idx, const pg_wc *table, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(F(y) + (size_t)n * C, CF(table) + (size_t)idx[n] * C, C * sizeof(float));
}

static void cpu_embed_bwd(float *dtable, const pg_act *dy, const int32_t *idx, int N, int C) {
    /* parallel over channels: each thread owns a column slice, rows in order (deterministic) */
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int c0 = C * t / T, c1 = C * (t + 1) / T;
        for (int n = 0; n < N; n++) {
            float *dst = dtable + (size_t)idx[n] * C;
            const float *src = CF(dy) + (size_t)n * C;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

/* ---- norms ---- */
static inline float row_rstd(const float *x, int C) {
    double ss = 0; /* fp32 inputs, wide accumulation: mean(x^2) */
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    return (float)(1.0 / sqrt(ss / C + RMS_EPS));
}

static void cpu_rmsnorm_fwd(pg_act *y, float *rstd, const pg_act *x, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C;
        float *yr = F(y) + (size_t)n * C;
        float r = row_rstd(xr, C);
        rstd[n] = r;
        for (int c = 0; c < C; c++) yr[c] = xr[c] * r;
    }
}

static inline void rms_bwd_row(float *dx, const float *dy, const float *y, float r, int C, int acc) {
    double dot = 0;
    for (int c = 0; c < C; c++) dot += (double)dy[c] * y[c];
    float m = (float)(dot / C);
    if (acc)
        for (int c = 0; c < C; c++) dx[c] += r * (dy[c] - y[c] * m);
    else
        for (int c = 0; c < C; c++) dx[c] = r * (dy[c] - y[c] * m);
}

static void cpu_rmsnorm_bwd(pg_act *dx, const pg_act *dy, const pg_act *y, const float *rstd, int N, int C,
                            int accumulate) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        rms_bwd_row(F(dx) + (size_t)n * C, CF(dy) + (size_t)n * C, CF(y) + (size_t)n * C, rstd[n], C, accumulate);
}

static void cpu_mix_norm_fwd(pg_act *xm, pg_act *y, float *rstd, const pg_act *x, const pg_act *x0, const float *mix,
                             int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C, *x0r = CF(x0) + (size_t)n * C;
        float *mr = F(xm) + (size_t)n * C, *yr = F(y) + (size_t)n * C;
        for (int c = 0; c < C; c++) mr[c] = mix[c] * xr[c] + mix[C + c] * x0r[c];
        float r = row_rstd(mr, C);
        rstd[n] = r;
        for (int c = 0; c < C; c++) yr[c] = mr[c] * r;
    }
}

static void cpu_mix_bwd(pg_act *dx, pg_act *dx0, float *dmix, const pg_act *dxm, const pg_act *x, const pg_act *x0,
                        const float *mix, int N, int C) {
    /* parameter grads first: they read dxm, which dx may alias */
    colsum_prod(dmix, CF(dxm), CF(x), N, C);
    colsum_prod(dmix + C, CF(dxm), CF(x0), N, C);
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *g = CF(dxm) + (size_t)n * C;
        float *d = F(dx) + (size_t)n * C, *d0 = F(dx0) + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float gv = g[c];
            d0[c] += mix[C + c] * gv;
            d[c] = mix[c] * gv;
        }
    }
}

/* ---- matmuls ---- */
static void cpu_matmul_fwd(pg_act *y, const pg_act *x, const pg_wc *W, int N, int IN, int OUT) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, CF(x), IN, CF(W), IN, 0.0f, F(y), OUT);
}

static void cpu_matmul_bwd(pg_act *dx, float *dW, const pg_act *dy, const pg_act *x, const pg_wc *W, int N, int IN,
                           int OUT, int accumulate_dx) {
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, CF(dy), OUT, CF(W), IN,
                    accumulate_dx ? 1.0f : 0.0f, F(dx), IN);
    if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, CF(dy), OUT, CF(x), IN, 1.0f, dW, IN);
}

/* ---- q/k preparation: per-head RMSNorm, RoPE (rotate-half), gain ---- */
static inline void rope_row(float *o, const float *in, const float *cs, const float *sn, int half) {
    for (int j = 0; j < half; j++) {
        float x1 = in[j], x2 = in[j + half];
        o[j] = x1 * cs[j] + x2 * sn[j];
        o[j + half] = -x1 * sn[j] + x2 * cs[j];
    }
}

static void qk_fwd_one(float *out, float *rstd, const float *raw, const float *gain, const float *cos,
                       const float *sin, int N, int T, int nh, int D, int rope_dims) {
    int half = rope_dims / 2;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        int t = n % T;
        const float *cs = cos + (size_t)t * half, *sn = sin + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            const float *x = raw + ((size_t)n * nh + h) * D;
            float *o = out + ((size_t)n * nh + h) * D;
            float r = row_rstd(x, D);
            rstd[(size_t)n * nh + h] = r;
            float tmp[1024];
            for (int d = 0; d < D; d++) tmp[d] = x[d] * r;
            rope_row(o, tmp, cs, sn, half);
            for (int d = rope_dims; d < D; d++) o[d] = tmp[d];
            if (gain) {
                float g = gain[h];
                for (int d = 0; d < D; d++) o[d] *= g;
            }
        }
    }
}

static void cpu_qk_prep_fwd(pg_act *q, pg_act *k, float *rstd_q, float *rstd_k, const pg_act *q_raw,
                            const pg_act *k_raw, const float *gain, const float *cos, const float *sin, int N, int T,
                            int H, int Hk, int D, int rope_dims) {
    PG_CHECK(D <= 1024);
    qk_fwd_one(F(q), rstd_q, CF(q_raw), gain, cos, sin, N, T, H, D, rope_dims);
    qk_fwd_one(F(k), rstd_k, CF(k_raw), NULL, cos, sin, N, T, Hk, D, rope_dims);
}

static void qk_bwd_one(float *draw, float *dgain, const float *dout, const float *raw, const float *rstd,
                       const float *gain, const float *cos, const float *sin, int N, int T, int nh, int D,
                       int rope_dims) {
    int half = rope_dims / 2;
    int nt = omp_get_max_threads();
    double *gpart = xcalloc((size_t)nt * nh, sizeof(double));
#pragma omp parallel
    {
        double *gacc = gpart + (size_t)omp_get_thread_num() * nh;
#pragma omp for
        for (int n = 0; n < N; n++) {
            int t = n % T;
            const float *cs = cos + (size_t)t * half, *sn = sin + (size_t)t * half;
            for (int h = 0; h < nh; h++) {
                size_t off = ((size_t)n * nh + h) * D;
                const float *x = raw + off, *g = dout + off;
                float r = rstd[(size_t)n * nh + h];
                float xn[1024], rot[1024], gr[1024], dn[1024];
                for (int d = 0; d < D; d++) xn[d] = x[d] * r;
                float gh = gain ? gain[h] : 1.0f;
                if (gain) {
                    rope_row(rot, xn, cs, sn, half);
                    for (int d = rope_dims; d < D; d++) rot[d] = xn[d];
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)g[d] * rot[d];
                    gacc[h] += s;
                }
                for (int d = 0; d < D; d++) gr[d] = g[d] * gh;
                /* transpose of the rotation */
                for (int j = 0; j < half; j++) {
                    float g1 = gr[j], g2 = gr[j + half];
                    dn[j] = g1 * cs[j] - g2 * sn[j];
                    dn[j + half] = g1 * sn[j] + g2 * cs[j];
                }
                for (int d = rope_dims; d < D; d++) dn[d] = gr[d];
                rms_bwd_row(draw + off, dn, xn, r, D, 0);
            }
        }
    }
    if (dgain)
        for (int h = 0; h < nh; h++) {
            double s = 0;
            for (int t = 0; t < nt; t++) s += gpart[(size_t)t * nh + h];
            dgain[h] += (float)s;
        }
    free(gpart);
}

static void cpu_qk_prep_bwd(pg_act *dq_raw, pg_act *dk_raw, float *dgain, const pg_act *dq, const pg_act *dk,
                            const pg_act *q_raw, const pg_act *k_raw, const float *rstd_q, const float *rstd_k,
                            const float *gain, const float *cos, const float *sin, int N, int T, int H, int Hk, int D,
                            int rope_dims) {
    qk_bwd_one(F(dq_raw), dgain, CF(dq), CF(q_raw), rstd_q, gain, cos, sin, N, T, H, D, rope_dims);
    qk_bwd_one(F(dk_raw), NULL, CF(dk), CF(k_raw), rstd_k, NULL, cos, sin, N, T, Hk, D, rope_dims);
}

/* ---- attention: per (batch, head) row blocks through sgemm, causal, exact softmax ---- */
#define ATT_RB 128

static void cpu_attn_fwd(pg_act *o, float *lse, const pg_act *q, const pg_act *k, const pg_act *v, int B, int T, int H,
                         int Hk, int D) {
    const float scale = 1.0f / sqrtf((float)D);
    const int grp = H / Hk;
    const long qs = (long)H * D, ks = (long)Hk * D;
#pragma omp parallel
    {
        float *S = xmalloc_aligned((size_t)ATT_RB * T * sizeof(float));
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const float *Q = CF(q) + (size_t)b * T * qs + (size_t)h * D;
                const float *K = CF(k) + (size_t)b * T * ks + (size_t)(h / grp) * D;
                const float *V = CF(v) + (size_t)b * T * ks + (size_t)(h / grp) * D;
                float *O = F(o) + (size_t)b * T * qs + (size_t)h * D;
                float *L = lse + ((size_t)b * H + h) * T;
                for (int r0 = 0; r0 < T; r0 += ATT_RB) {
                    int rb = T - r0 < ATT_RB ? T - r0 : ATT_RB;
                    int cols = r0 + rb; /* keys 0..cols-1 can be visible */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rb, cols, D, scale, Q + (size_t)r0 * qs, qs,
                                K, ks, 0.0f, S, cols);
                    for (int i = 0; i < rb; i++) {
                        float *s = S + (size_t)i * cols;
                        int last = r0 + i; /* inclusive */
                        float mx = -INFINITY;
                        for (int j = 0; j <= last; j++) mx = s[j] > mx ? s[j] : mx;
                        double sum = 0;
                        for (int j = 0; j <= last; j++) {
                            s[j] = expf(s[j] - mx);
                            sum += s[j];
                        }
                        float inv = (float)(1.0 / sum);
                        for (int j = 0; j <= last; j++) s[j] *= inv;
                        for (int j = last + 1; j < cols; j++) s[j] = 0.0f;
                        L[r0 + i] = mx + (float)log(sum);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, D, cols, 1.0f, S, cols, V, ks, 0.0f,
                                O + (size_t)r0 * qs, qs);
                }
            }
        free(S);
    }
}

/* one query row of cpu_attn_fwd per sequence over its n visible keys, with the same arithmetic: fp32
 * scores scale*(q.k), exp(s - max) in fp32 summed in double, probabilities times 1/sum, then P V */
static void cpu_attn_decode(pg_act *o, const pg_act *q, const pg_act *k, const pg_act *v, int nb, int n, int T, int H,
                            int Hk, int D) {
    const float scale = 1.0f / sqrtf((float)D);
    const int grp = H / Hk;
    const long ks = (long)Hk * D;
#pragma omp parallel
    {
        float *s = xmalloc_aligned((size_t)n * sizeof(float));
#pragma omp for schedule(static)
        for (int bh = 0; bh < nb * H; bh++) {
            const int b = bh / H, h = bh % H;
            const size_t kv0 = (size_t)b * T * ks + (size_t)(h / grp) * D, row = (size_t)bh * D;
            const float *K = CF(k) + kv0, *V = CF(v) + kv0;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, scale, K, ks, CF(q) + row, 1, 0.0f, s, 1);
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
            double sum = 0;
            for (int j = 0; j < n; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            const float inv = (float)(1.0 / sum);
            for (int j = 0; j < n; j++) s[j] *= inv;
            cblas_sgemv(CblasRowMajor, CblasTrans, n, D, 1.0f, V, ks, s, 1, 0.0f, F(o) + row, 1);
        }
        free(s);
    }
}

static void cpu_attn_bwd(pg_act *dq, pg_act *dk, pg_act *dv, const pg_act *dout, const pg_act *q, const pg_act *k,
                         const pg_act *v, const pg_act *o, const float *lse, int B, int T, int H, int Hk, int D) {
    const float scale = 1.0f / sqrtf((float)D);
    const int grp = H / Hk;
    const long qs = (long)H * D, ks = (long)Hk * D;
    /* one task per (batch, kv head): it owns dk/dv of that head, so no races */
#pragma omp parallel
    {
        float *P = xmalloc_aligned((size_t)ATT_RB * T * sizeof(float));
        float *dP = xmalloc_aligned((size_t)ATT_RB * T * sizeof(float));
        float *Di = xmalloc_aligned(ATT_RB * sizeof(float));
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < Hk; g++) {
                const float *K = CF(k) + (size_t)b * T * ks + (size_t)g * D;
                const float *V = CF(v) + (size_t)b * T * ks + (size_t)g * D;
                float *dK = F(dk) + (size_t)b * T * ks + (size_t)g * D;
                float *dV = F(dv) + (size_t)b * T * ks + (size_t)g * D;
                for (int t = 0; t < T; t++) {
                    memset(dK + (size_t)t * ks, 0, D * sizeof(float));
                    memset(dV + (size_t)t * ks, 0, D * sizeof(float));
                }
                for (int h = g * grp; h < (g + 1) * grp; h++) {
                    const float *Q = CF(q) + (size_t)b * T * qs + (size_t)h * D;
                    const float *O = CF(o) + (size_t)b * T * qs + (size_t)h * D;
                    const float *dO = CF(dout) + (size_t)b * T * qs + (size_t)h * D;
                    float *dQ = F(dq) + (size_t)b * T * qs + (size_t)h * D;
                    const float *L = lse + ((size_t)b * H + h) * T;
                    for (int r0 = 0; r0 < T; r0 += ATT_RB) {
                        int rb = T - r0 < ATT_RB ? T - r0 : ATT_RB;
                        int cols = r0 + rb;
                        /* recompute P = exp(scale*QK^T - lse), causal */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rb, cols, D, scale, Q + (size_t)r0 * qs,
                                    qs, K, ks, 0.0f, P, cols);
                        for (int i = 0; i < rb; i++) {
                            float *p = P + (size_t)i * cols;
                            int last = r0 + i;
                            float l = L[r0 + i];
                            for (int j = 0; j <= last; j++) p[j] = expf(p[j] - l);
                            for (int j = last + 1; j < cols; j++) p[j] = 0.0f;
                            const float *orow = O + (size_t)(r0 + i) * qs, *grow = dO + (size_t)(r0 + i) * qs;
                            double dsum = 0;
                            for (int d = 0; d < D; d++) dsum += (double)orow[d] * grow[d];
                            Di[i] = (float)dsum;
                        }
                        /* dV += P^T dO */
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, D, rb, 1.0f, P, cols,
                                    dO + (size_t)r0 * qs, qs, 1.0f, dV, ks);
                        /* dP = dO V^T */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rb, cols, D, 1.0f, dO + (size_t)r0 * qs,
                                    qs, V, ks, 0.0f, dP, cols);
                        /* dS = P * (dP - D_i) * scale (stored in dP) */
                        for (int i = 0; i < rb; i++) {
                            float *ds = dP + (size_t)i * cols;
                            const float *p = P + (size_t)i * cols;
                            for (int j = 0; j < cols; j++) ds[j] = p[j] * (ds[j] - Di[i]) * scale;
                        }
                        /* dQ = dS K ; dK += dS^T Q */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, D, cols, 1.0f, dP, cols, K, ks,
                                    0.0f, dQ + (size_t)r0 * qs, qs);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, D, rb, 1.0f, dP, cols,
                                    Q + (size_t)r0 * qs, qs, 1.0f, dK, ks);
                    }
                }
            }
        free(P);
        free(dP);
        free(Di);
    }
}

/* ---- residuals and activations ---- */
static void cpu_resid_fwd(pg_act *y, const pg_act *x, const pg_act *a, const float *scale, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C, *ar = CF(a) + (size_t)n * C;
        float *yr = F(y) + (size_t)n * C;
        for (int c = 0; c < C; c++) yr[c] = xr[c] + scale[c] * ar[c];
    }
}

static void cpu_resid_bwd(pg_act *da, float *dscale, const pg_act *dy, const pg_act *a, const float *scale, int N,
                          int C, int accumulate_da) {
    colsum_prod(dscale, CF(dy), CF(a), N, C);
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *g = CF(dy) + (size_t)n * C;
        float *d = F(da) + (size_t)n * C;
        if (accumulate_da)
            for (int c = 0; c < C; c++) d[c] += scale[c] * g[c];
        else
            for (int c = 0; c < C; c++) d[c] = scale[c] * g[c];
    }
}

static void cpu_relu2_fwd(pg_act *u, const pg_act *h, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float r = CF(h)[i] > 0 ? CF(h)[i] : 0.0f;
        F(u)[i] = r * r;
    }
}

static void cpu_relu2_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float r = CF(h)[i] > 0 ? CF(h)[i] : 0.0f;
        F(dh)[i] = CF(du)[i] * 2.0f * r;
    }
}

/* ---- SmearGate: y[t] = a*x[t] + (1-a)*x[t-1] per row of T, a = g or 1-g ---- */
static void cpu_smear_fwd(pg_act *y, const pg_act *x, const float *gate, int N, int T, int C, int reverse) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C, *xp = n % T ? xr - C : NULL;
        float *yr = F(y) + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float g = 1.0f / (1.0f + expf(-gate[c])), a = reverse ? 1.0f - g : g;
            yr[c] = a * xr[c] + (xp ? (1.0f - a) * xp[c] : 0.0f);
        }
    }
}

static void cpu_smear_bwd(pg_act *dx, float *dgate, const pg_act *dy, const pg_act *x, const float *gate, int N, int T,
                          int C, int reverse) {
    int nt = omp_get_max_threads();
    double *part = xcalloc((size_t)nt * (size_t)C, sizeof(double));
#pragma omp parallel
    {
        int th = omp_get_thread_num(), nth = omp_get_num_threads();
        double *acc = part + (size_t)th * C;
        long n0 = (long)N * th / nth, n1 = (long)N * (th + 1) / nth;
        for (long n = n0; n < n1; n++) {
            const float *g_ = CF(dy) + n * C, *gn = (n + 1) % T ? g_ + C : NULL;
            const float *xr = CF(x) + n * C, *xp = n % T ? xr - C : NULL;
            float *d = F(dx) + n * C;
            for (int c = 0; c < C; c++) {
                float g = 1.0f / (1.0f + expf(-gate[c])), a = reverse ? 1.0f - g : g;
                d[c] = a * g_[c] + (gn ? (1.0f - a) * gn[c] : 0.0f);
                acc[c] += (double)g_[c] * ((double)xr[c] - (xp ? (double)xp[c] : 0.0));
            }
        }
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += part[(size_t)t * C + c];
        double g = 1.0 / (1.0 + exp(-(double)gate[c]));
        dgate[c] += (float)(s * g * (1.0 - g) * (reverse ? -1.0 : 1.0)); /* da/dgate = +-g(1-g) */
    }
    free(part);
}

/* ---- XSA: remove from each head's output its component along the token's own value ---- */
static void cpu_xsa_fwd(pg_act *y, const pg_act *o, const pg_act *v, int N, int H, int Hk, int D) {
    const int grp = H / Hk;
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *vr = CF(v) + ((size_t)n * Hk + h / grp) * D, *orow = CF(o) + ((size_t)n * H + h) * D;
            float *yr = F(y) + ((size_t)n * H + h) * D;
            double ss = 0, dot = 0;
            for (int d = 0; d < D; d++) ss += (double)vr[d] * vr[d];
            const float inv = 1.0f / fmaxf(sqrtf((float)ss), 1e-12f);
            for (int d = 0; d < D; d++) dot += (double)orow[d] * vr[d];
            const float c = (float)dot * inv * inv;
            for (int d = 0; d < D; d++) yr[d] = orow[d] - c * vr[d];
        }
}

static void cpu_xsa_bwd(pg_act *do_, pg_act *dv, const pg_act *dy, const pg_act *o, const pg_act *v, int N, int H,
                        int Hk, int D) {
    const int grp = H / Hk;
    PG_CHECK(D <= 1024);
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int g = 0; g < Hk; g++) {
            const float *vr = CF(v) + ((size_t)n * Hk + g) * D;
            float u[1024], du[1024];
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)vr[d] * vr[d];
            const float nrm = sqrtf((float)ss), r = fmaxf(nrm, 1e-12f);
            for (int d = 0; d < D; d++) u[d] = vr[d] / r, du[d] = 0.0f;
            for (int h = g * grp; h < (g + 1) * grp; h++) {
                const float *orow = CF(o) + ((size_t)n * H + h) * D, *dyr = CF(dy) + ((size_t)n * H + h) * D;
                float *dor = F(do_) + ((size_t)n * H + h) * D;
                double a = 0, b = 0;
                for (int d = 0; d < D; d++) a += (double)orow[d] * u[d], b += (double)dyr[d] * u[d];
                /* y = o - (o.u)u: do = dy - (dy.u)u, du = -(o.u) dy - (dy.u) o */
                for (int d = 0; d < D; d++) du[d] -= (float)a * dyr[d] + (float)b * orow[d];
                for (int d = 0; d < D; d++) dor[d] = dyr[d] - (float)b * u[d];
            }
            /* u = v/max(|v|, eps): dv = (du - (du.u)u)/|v|, or du/eps when clamped */
            double c = 0;
            if (nrm > 1e-12f)
                for (int d = 0; d < D; d++) c += (double)du[d] * u[d];
            float *dvr = F(dv) + ((size_t)n * Hk + g) * D;
            for (int d = 0; d < D; d++) dvr[d] = (du[d] - (float)c * u[d]) / r;
        }
}

static void cpu_act_scale(pg_act *x, size_t n, float s) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) F(x)[i] *= s;
}

static void cpu_leaky_relu2_fwd(pg_act *u, const pg_act *h, size_t n, float slope) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = CF(h)[i], r = x > 0 ? x : slope * x;
        F(u)[i] = r * r;
    }
}

static void cpu_leaky_relu2_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n, float slope) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = CF(h)[i], r = x > 0 ? x : slope * x;
        F(dh)[i] = CF(du)[i] * 2.0f * r * (x > 0 ? 1.0f : slope);
    }
}

static void cpu_lerp_fwd(pg_act *out, const pg_act *x, const pg_act *y, const float *r, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C, *yr = CF(y) + (size_t)n * C;
        float *o = F(out) + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = xr[c] + r[c] * (yr[c] - xr[c]);
    }
}

static void cpu_lerp_bwd(pg_act *dx, pg_act *dy, float *dr, const pg_act *dout, const pg_act *x, const pg_act *y,
                         const float *r, int N, int C) {
    int nt = omp_get_max_threads();
    double *part = xcalloc((size_t)nt * (size_t)C, sizeof(double));
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        double *acc = part + (size_t)t * C;
        long n0 = (long)N * t / T, n1 = (long)N * (t + 1) / T;
        for (long n = n0; n < n1; n++) {
            const float *g = CF(dout) + n * C, *xr = CF(x) + n * C, *yr = CF(y) + n * C;
            float *a = F(dx) + n * C, *b = F(dy) + n * C;
            for (int c = 0; c < C; c++) {
                float gc = g[c];
                acc[c] += (double)gc * ((double)yr[c] - (double)xr[c]);
                a[c] = (1.0f - r[c]) * gc;
                b[c] = r[c] * gc;
            }
        }
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += part[(size_t)t * C + c];
        dr[c] += (float)s;
    }
    free(part);
}

/* ---- GELU (exact erf form) ---- */
static void cpu_gelu_fwd(pg_act *u, const pg_act *h, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = CF(h)[i];
        F(u)[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}

static void cpu_gelu_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = CF(h)[i];
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        F(dh)[i] = CF(du)[i] * (cdf + x * pdf);
    }
}

/* ---- PR #1289's lane update: y = x + ra*(sa*a) + rm*(sm*m) ---- */
static void cpu_lane_route_fwd(pg_act *y, const pg_act *x, const pg_act *a, const float *sa, const float *ra,
                               const pg_act *m, const float *sm, const float *rm, int N, int C) {
    const float r_a = ra[0], r_m = rm[0];
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = CF(x) + (size_t)n * C, *ar = CF(a) + (size_t)n * C, *mr = CF(m) + (size_t)n * C;
        float *yr = F(y) + (size_t)n * C;
        for (int c = 0; c < C; c++) yr[c] = xr[c] + r_a * (sa[c] * ar[c]) + r_m * (sm[c] * mr[c]);
    }
}

static void cpu_lane_route_bwd(pg_act *da, pg_act *dm, float *dsa, float *dsm, float *dra, float *drm,
                               const pg_act *dy, const pg_act *a, const float *sa, const float *ra, const pg_act *m,
                               const float *sm, const float *rm, int N, int C, int accumulate) {
    const float r_a = ra[0], r_m = rm[0];
    const int nt = omp_get_max_threads();
    const size_t W = 2 * (size_t)C; /* per thread: sum dy*a (C), sum dy*m (C) */
    double *part = xcalloc((size_t)nt * W, sizeof(double));
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        double *acc = part + (size_t)t * W;
        long n0 = (long)N * t / T, n1 = (long)N * (t + 1) / T;
        for (long n = n0; n < n1; n++) {
            const float *g = CF(dy) + n * C, *ar = CF(a) + n * C, *mr = CF(m) + n * C;
            float *dar = F(da) + n * C, *dmr = F(dm) + n * C;
            for (int c = 0; c < C; c++) {
                acc[c] += (double)g[c] * ar[c];
                acc[C + c] += (double)g[c] * mr[c];
                float va = r_a * sa[c] * g[c], vm = r_m * sm[c] * g[c];
                if (accumulate) dar[c] += va, dmr[c] += vm;
                else dar[c] = va, dmr[c] = vm;
            }
        }
    }
    double sra = 0, srm = 0;
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int t = 0; t < nt; t++) s1 += part[(size_t)t * W + c], s2 += part[(size_t)t * W + C + c];
        dsa[c] += (float)(r_a * s1);
        dsm[c] += (float)(r_m * s2);
        sra += s1 * sa[c];
        srm += s2 * sm[c];
    }
    dra[0] += (float)sra;
    drm[0] += (float)srm;
    free(part);
}

static void cpu_fake_quant_rows(pg_wc *dst, const float *W, int rows, int cols, int mode, int low) {
#pragma omp parallel
    {
        float *tmp = mode == 1 ? xmalloc((size_t)(cols ? cols : 1) * sizeof(float)) : NULL;
#pragma omp for
        for (int r = 0; r < rows; r++) {
            const float *w = W + (size_t)r * cols;
            float *o = (float *)dst + (size_t)r * cols;
            if (mode == 1) { /* PR #65: the quantile of the bf16-cast row */
                for (int c = 0; c < cols; c++) tmp[c] = fabsf(pg_round_bf16(w[c]));
                float clip = cols ? quant_quantile(tmp, (size_t)cols, QUANT_CLIP_Q) : 0.0f;
                if (!(clip >= 1e-8f)) clip = 1e-8f;
                const float s = clip / 31.0f;
                for (int c = 0; c < cols; c++) {
                    float v = pg_round_bf16(w[c]);
                    v = v < -clip ? -clip : v > clip ? clip : v;
                    o[c] = pg_round_bf16(nearbyintf(v / s) * s);
                }
            } else { /* the row max of the fp32 master */
                float mx = 0;
                for (int c = 0; c < cols; c++) mx = fmaxf(mx, fabsf(w[c]));
                float s, lo = -31.0f;
                if (mode == 2) s = fmaxf(mx, 1e-12f) / 31.0f;
                else s = fmaxf(mx / 31.0f, (float)(1.0 / 31.0)), lo = (float)low;
                for (int c = 0; c < cols; c++) {
                    float q = nearbyintf(w[c] / s);
                    q = q < lo ? lo : q > 31.0f ? 31.0f : q;
                    o[c] = pg_round_bf16(q * s);
                }
            }
        }
        free(tmp);
    }
}

static void cpu_add_inplace(pg_act *dx, const pg_act *dy, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) F(dx)[i] += CF(dy)[i];
}

static void cpu_softcap_ce(float *losses, pg_act *z, const int32_t *targets, int N, int V, float softcap,
                           float grad_scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float *zr = F(z) + (size_t)n * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) {
            float l = softcap * tanhf(zr[v] / softcap);
            zr[v] = l;
            mx = l > mx ? l : mx;
        }
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp((double)(zr[v] - mx));
        double lse = mx + log(sum);
        int y = targets[n];
        losses[n] = (float)(lse - zr[y]);
        if (grad_scale != 0.0f) {
            for (int v = 0; v < V; v++) {
                float l = zr[v];
                float p = (float)exp((double)l - lse);
                float dl = p - (v == y ? 1.0f : 0.0f);
                float th = l / softcap;
                zr[v] = dl * (1.0f - th * th) * grad_scale;
            }
        }
    }
}

/* ---- optimizers ---- */
static void cpu_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                          float eps, float bc1, float bc2, float wd) {
    const float step = lr / bc1, bc2s = sqrtf(bc2);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (wd != 0.0f) p[i] *= 1.0f - lr * wd;
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}

static size_t cpu_muon_work_floats(int rows, int cols) {
    size_t r = rows < cols ? rows : cols, c = rows < cols ? cols : rows;
    return 2 * r * c + 3 * r * r;
}

/* Newton-Schulz quintic iteration on X (r, c) with r <= c, in place; work >= r*c + 3*r*r floats */
static void ns5(float *X, int r, int c, int steps, float *work) {
    const float a = 3.4445f, b = -4.7750f, cc = 2.0315f;
    float *A = work, *A2 = A + (size_t)r * r, *Bm = A2 + (size_t)r * r, *Xn = Bm + (size_t)r * r;
    for (int it = 0; it < steps; it++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, c, 1.0f, X, c, X, c, 0.0f, A, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, r, r, 1.0f, A, r, A, r, 0.0f, A2, r);
        for (size_t i = 0; i < (size_t)r * r; i++) Bm[i] = b * A[i] + cc * A2[i];
        memcpy(Xn, X, (size_t)r * c * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, c, r, 1.0f, Bm, r, Xn, c, a, X, c);
    }
}

static void cpu_muon_step(float *W, const float *g, float *buf, int rows, int cols, float lr, float mu, int steps,
                          float wd, int eq_r, float *work) {
    size_t n = (size_t)rows * cols;
    int tr = rows > cols;
    int r = tr ? cols : rows, c = tr ? rows : cols;
    float *X = work; /* (r, c) */
    float *ns_work = work + n;
    float *U = ns_work; /* (rows, cols) nesterov direction, before NS5 uses the scratch */
    for (size_t i = 0; i < n; i++) {
        buf[i] = mu * buf[i] + g[i];
        U[i] = g[i] + mu * buf[i];
    }
    if (eq_r)
        for (int i = 0; i < rows; i++) {
            float *u = U + (size_t)i * cols;
            double s = 0;
            for (int j = 0; j < cols; j++) s += (double)u[j] * u[j];
            float inv = 1.0f / sqrtf((float)s + 1e-7f);
            for (int j = 0; j < cols; j++) u[j] *= inv;
        }
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        float u = U[i];
        if (tr) X[(i % cols) * rows + i / cols] = u; /* transpose into (cols, rows) */
        else X[i] = u;
        ss += (double)u * u;
    }
    float inv = (float)(1.0 / (sqrt(ss) + 1e-7));
    for (size_t i = 0; i < n; i++) X[i] *= inv;
    ns5(X, r, c, steps, ns_work);
    float sc = sqrtf(fmaxf(1.0f, (float)rows / (float)cols));
    if (wd != 0.0f)
        for (size_t i = 0; i < n; i++) W[i] *= 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) {
        float x = tr ? X[(i % cols) * rows + i / cols] : X[i];
        W[i] -= lr * sc * x;
    }
}

/* Fixed 64 chunks summed in order: the result does not depend on the thread count or on the
 * order threads finish (an OpenMP reduction's would), which keeps runs bit-reproducible. */
static double cpu_sum_squares(const float *x, size_t n) {
    enum { CHUNKS = 64 };
    double part[CHUNKS];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < CHUNKS; c++) {
        size_t a = n * (size_t)c / CHUNKS, b = n * (size_t)(c + 1) / CHUNKS;
        double s = 0;
        for (size_t i = a; i < b; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < CHUNKS; c++) s += part[c];
    return s;
}

static void cpu_sum_squares_spans(const float *x, const size_t *off, const size_t *n, int k, double *out) {
    for (int i = 0; i < k; i++) out[i] = cpu_sum_squares(x + off[i], n[i]);
}

static void cpu_scale_inplace(float *x, size_t n, float s) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void cpu_ema_update(float *e, const float *w, size_t n, float decay) {
    const float a = 1.0f - decay;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float t = e[i] * decay; /* -std=c11 keeps contraction off: rounded like torch's mul_ then add_ */
        e[i] = t + a * w[i];
    }
}

static void cpu_add_f32(float *y, const float *x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

const pg_ops pg_cpu_ops = {
    .name = "cpu",
    .act_bytes = sizeof(float),
    .wc_bytes = sizeof(float),
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy_rows = cpu_copy_rows,
    .sync = cpu_sync,
    .peak_bytes = cpu_peak,
    .weights_to_compute = cpu_weights_to_compute,
    .act_from_f32 = cpu_act_from_f32,
    .act_to_f32 = cpu_act_to_f32,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .mix_norm_fwd = cpu_mix_norm_fwd,
    .mix_bwd = cpu_mix_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .qk_prep_fwd = cpu_qk_prep_fwd,
    .qk_prep_bwd = cpu_qk_prep_bwd,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .attn_decode = cpu_attn_decode,
    .resid_fwd = cpu_resid_fwd,
    .resid_bwd = cpu_resid_bwd,
    .relu2_fwd = cpu_relu2_fwd,
    .relu2_bwd = cpu_relu2_bwd,
    .smear_fwd = cpu_smear_fwd,
    .smear_bwd = cpu_smear_bwd,
    .xsa_fwd = cpu_xsa_fwd,
    .xsa_bwd = cpu_xsa_bwd,
    .act_scale = cpu_act_scale,
    .leaky_relu2_fwd = cpu_leaky_relu2_fwd,
    .leaky_relu2_bwd = cpu_leaky_relu2_bwd,
    .lerp_fwd = cpu_lerp_fwd,
    .lerp_bwd = cpu_lerp_bwd,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .lane_route_fwd = cpu_lane_route_fwd,
    .lane_route_bwd = cpu_lane_route_bwd,
    .fake_quant_rows = cpu_fake_quant_rows,
    .add_inplace = cpu_add_inplace,
    .softcap_ce = cpu_softcap_ce,
    .adam_step = cpu_adam_step,
    .muon_step = cpu_muon_step,
    .muon_work_floats = cpu_muon_work_floats,
    .sum_squares = cpu_sum_squares,
    .sum_squares_spans = cpu_sum_squares_spans,
    .scale_inplace = cpu_scale_inplace,
    .ema_update = cpu_ema_update,
    .add_f32 = cpu_add_f32,
};
