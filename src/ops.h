/* ops.h: the operations the model is written in, as one table of function pointers per backend.
 * The model code (model.c) calls `ops->...` and does not know where it runs. Buffer kinds:
 *   pg_act  activations: fp32 on the CPU backend, bf16 on CUDA;
 *   pg_wc   compute copies of the weights: the fp32 masters themselves on CPU, bf16 copies on CUDA;
 *   float   fp32 everywhere: master weights, gradients, optimizer state, norms' rstd, losses.
 * All pointers are backend memory (device memory on CUDA) unless a comment says host. Shapes are
 * given in comments as (rows, cols); N = tokens in the batch, C = channels. "accumulate" means
 * add into the output instead of overwriting it. Parameter-gradient reductions over tokens
 * (dscale, dmix, dgain) always accumulate. */
#ifndef PGOLF_OPS_H
#define PGOLF_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct pg_act pg_act;
typedef struct pg_wc pg_wc;

typedef struct pg_ops {
    const char *name;
    size_t act_bytes; /* bytes per activation element */
    size_t wc_bytes;  /* bytes per compute-weight element */

    /* memory */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*to_device)(void *dst, const void *host_src, size_t bytes);
    void (*to_host)(void *host_dst, const void *src, size_t bytes);
    /* backend memory to backend memory (non-overlapping): rows of row_bytes from src (src_pitch bytes
     * apart) to dst (dst_pitch apart) */
    void (*copy_rows)(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes, size_t rows);
    void (*sync)(void);
    /* peak bytes allocated by this backend so far */
    size_t (*peak_bytes)(void);

    /* refresh the compute copy of the weights from the fp32 masters (n elements) */
    void (*weights_to_compute)(pg_wc *wc, const float *w, size_t n);
    /* host float -> activation buffer and back (for tests and outputs) */
    void (*act_from_f32)(pg_act *dst, const float *host, size_t n);
    void (*act_to_f32)(float *host, const pg_act *src, size_t n);

    /* y(N,C) = table[idx(N)] */
    void (*embed_fwd)(pg_act *y, const int32_t *idx, const pg_wc *table, int N, int C);
    /* dtable[idx] += dy  */
    void (*embed_bwd)(float *dtable, const pg_act *dy, const int32_t *idx, int N, int C);
    /* y = x * rstd, rstd = 1/sqrt(mean(x^2) + FLT_EPSILON) per row */
    void (*rmsnorm_fwd)(pg_act *y, float *rstd, const pg_act *x, int N, int C);
    /* dx (+)= rstd * (dy - y * mean(dy*y)), y = the normalised output */
    void (*rmsnorm_bwd)(pg_act *dx, const pg_act *dy, const pg_act *y, const float *rstd, int N, int C,
                        int accumulate);
    /* xm = mix[0]*x + mix[1]*x0; y = rmsnorm(xm)   (mix: fp32 (2, C)) */
    void (*mix_norm_fwd)(pg_act *xm, pg_act *y, float *rstd, const pg_act *x, const pg_act *x0, const float *mix,
                         int N, int C);
    /* dx = mix[0]*dxm (overwrite; dx may alias dxm); dx0 += mix[1]*dxm; dmix[0] += sum dxm*x; dmix[1] += sum dxm*x0 */
    void (*mix_bwd)(pg_act *dx, pg_act *dx0, float *dmix, const pg_act *dxm, const pg_act *x, const pg_act *x0,
                    const float *mix, int N, int C);
    /* y(N,OUT) = x(N,IN) W(OUT,IN)^T */
    void (*matmul_fwd)(pg_act *y, const pg_act *x, const pg_wc *W, int N, int IN, int OUT);
    /* dx(N,IN) (+)= dy W (skipped when dx is NULL); dW(OUT,IN) += dy^T x (skipped when dW is NULL) */
    void (*matmul_bwd)(pg_act *dx, float *dW, const pg_act *dy, const pg_act *x, const pg_wc *W, int N, int IN,
                       int OUT, int accumulate_dx);
    /* per token n (position t = n % T) and head: q <- rope(rmsnorm(q_raw)) * gain[h], k <- rope(rmsnorm(k_raw)).
     * rope acts on the first rope_dims dims of each head (rotate-half within them); cos/sin are fp32
     * (T, rope_dims/2). rstd_q (N,H), rstd_k (N,Hk) saved. */
    void (*qk_prep_fwd)(pg_act *q, pg_act *k, float *rstd_q, float *rstd_k, const pg_act *q_raw, const pg_act *k_raw,
                        const float *gain, const float *cos, const float *sin, int N, int T, int H, int Hk, int D,
                        int rope_dims);
    /* gradients of qk_prep_fwd: dq_raw, dk_raw overwritten; dgain (H) accumulated */
    void (*qk_prep_bwd)(pg_act *dq_raw, pg_act *dk_raw, float *dgain, const pg_act *dq, const pg_act *dk,
                        const pg_act *q_raw, const pg_act *k_raw, const float *rstd_q, const float *rstd_k,
                        const float *gain, const float *cos, const float *sin, int N, int T, int H, int Hk, int D,
                        int rope_dims);
    /* causal GQA attention, scale 1/sqrt(D): q (B,T,H,D), k/v (B,T,Hk,D), o (B,T,H,D), lse (B,H,T) */
    void (*attn_fwd)(pg_act *o, float *lse, const pg_act *q, const pg_act *k, const pg_act *v, int B, int T, int H,
                     int Hk, int D);
    /* dq, dk, dv overwritten */
    void (*attn_bwd)(pg_act *dq, pg_act *dk, pg_act *dv, const pg_act *dout, const pg_act *q, const pg_act *k,
                     const pg_act *v, const pg_act *o, const float *lse, int B, int T, int H, int Hk, int D);
    /* attention of one query token per sequence over its n cached positions (incremental decoding of
     * nb sequences): q, o (nb, H, D); sequence b's keys and values are rows 0..n-1 of k, v (nb, T, Hk, D),
     * every one visible; scale 1/sqrt(D); query head h reads head h/(H/Hk) */
    void (*attn_decode)(pg_act *o, const pg_act *q, const pg_act *k, const pg_act *v, int nb, int n, int T, int H,
                        int Hk, int D);
    /* y = x + scale*a  (scale fp32 (C)); y may alias x */
    void (*resid_fwd)(pg_act *y, const pg_act *x, const pg_act *a, const float *scale, int N, int C);
    /* da (+)= scale*dy; dscale += sum dy*a */
    void (*resid_bwd)(pg_act *da, float *dscale, const pg_act *dy, const pg_act *a, const float *scale, int N, int C,
                      int accumulate_da);
    /* u = relu(h)^2 */
    void (*relu2_fwd)(pg_act *u, const pg_act *h, size_t n);
    /* dh = du * 2*relu(h)  (dh may alias du) */
    void (*relu2_bwd)(pg_act *dh, const pg_act *du, const pg_act *h, size_t n);
    /* SmearGate (PR #65, PR #315): per row of T tokens and channel c, g = sigmoid(gate[c]) and
     * x_prev = x one position earlier (0 at t = 0); y = a*x + (1-a)*x_prev with a = g (reverse = 0,
     * PR #65) or a = 1-g (reverse = 1, PR #315). y must not alias x. */
    void (*smear_fwd)(pg_act *y, const pg_act *x, const float *gate, int N, int T, int C, int reverse);
    /* dx overwritten (must not alias dy); dgate (C) accumulated */
    void (*smear_bwd)(pg_act *dx, float *dgate, const pg_act *dy, const pg_act *x, const float *gate, int N, int T,
                      int C, int reverse);
    /* XSA (PR #315): per token n and query head h, with u = v[n, h/(H/Hk)] / max(|v[n, h/(H/Hk)]|, 1e-12):
     * y = o - (o.u) u. o, y (N, H*D); v (N, Hk*D). y may alias o. */
    void (*xsa_fwd)(pg_act *y, const pg_act *o, const pg_act *v, int N, int H, int Hk, int D);
    /* do_ and dv overwritten; do_ may alias dy */
    void (*xsa_bwd)(pg_act *do_, pg_act *dv, const pg_act *dy, const pg_act *o, const pg_act *v, int N, int H, int Hk,
                    int D);
    /* x *= s (n activations) */
    void (*act_scale)(pg_act *x, size_t n, float s);
    /* u = leaky_relu(h, slope)^2 (PR #1311, PR #1392: slope 0.5) */
    void (*leaky_relu2_fwd)(pg_act *u, const pg_act *h, size_t n, float slope);
    /* dh = du * 2*h * (h > 0 ? 1 : slope^2)  (dh may alias du) */
    void (*leaky_relu2_bwd)(pg_act *dh, const pg_act *du, const pg_act *h, size_t n, float slope);
    /* out = x + r*(y - x)  (r fp32 (C); PR #1392's damped recurrence pass) */
    void (*lerp_fwd)(pg_act *out, const pg_act *x, const pg_act *y, const float *r, int N, int C);
    /* dx = (1-r)*dout (must not alias dout); dy = r*dout (may alias dout); dr += sum dout*(y - x) */
    void (*lerp_bwd)(pg_act *dx, pg_act *dy, float *dr, const pg_act *dout, const pg_act *x, const pg_act *y,
                     const float *r, int N, int C);
    /* u = gelu(h) = h/2 * (1 + erf(h/sqrt(2))), the exact form (PR #187's pre-enrichment, nn.GELU()) */
    void (*gelu_fwd)(pg_act *u, const pg_act *h, size_t n);
    /* dh = du * (Phi(h) + h*phi(h))  (dh may alias du) */
    void (*gelu_bwd)(pg_act *dh, const pg_act *du, const pg_act *h, size_t n);
    /* the lane update of PR #1289's parallel block: y = x + ra*(sa*a) + rm*(sm*m), sa/sm fp32 (C),
     * ra/rm fp32 scalars (one float each, backend memory). y may alias x. */
    void (*lane_route_fwd)(pg_act *y, const pg_act *x, const pg_act *a, const float *sa, const float *ra,
                           const pg_act *m, const float *sm, const float *rm, int N, int C);
    /* da (+)= ra*sa*dy; dm (+)= rm*sm*dy; dsa += ra*sum dy*a; dsm += rm*sum dy*m; dra += sum dy*sa*a;
     * drm += sum dy*sm*m (the gradient wrt x is dy itself) */
    void (*lane_route_bwd)(pg_act *da, pg_act *dm, float *dsa, float *dsm, float *dra, float *drm, const pg_act *dy,
                           const pg_act *a, const float *sa, const float *ra, const pg_act *m, const float *sm,
                           const float *rm, int N, int C, int accumulate);
    /* int6 STE fake quantisation of a weight matrix W (rows, cols) into its compute copy (values
     * rounded to bf16, as the records cast the result to the autocast dtype), per row:
     *   mode 1 (PR #65): w = bf16(W); clip = max(quantile(|w|, 0.9999984), 1e-8); s = clip/31;
     *                    q = round(clamp(w, +-clip)/s)
     *   mode 2 (PR #187): s = max(max|W|, 1e-12)/31; q = clamp(round(W/s), -31, 31)
     *   mode 3 (late QAT, PR #315/#1311/#1392): s = max(max|W|/31, 1/31); q = clamp(round(W/s), low, 31)
     * dst = bf16(q*s); fp32 arithmetic, round half to even. */
    void (*fake_quant_rows)(pg_wc *dst, const float *W, int rows, int cols, int mode, int low);
    /* dx += dy (n elements) */
    void (*add_inplace)(pg_act *dx, const pg_act *dy, size_t n);
    /* per row: l = softcap*tanh(z/softcap); losses[n] = logsumexp(l) - l[target] (fp32).
     * If grad_scale != 0, z is overwritten with dloss/dz * grad_scale. */
    void (*softcap_ce)(float *losses, pg_act *z, const int32_t *targets, int N, int V, float softcap,
                       float grad_scale);

    /* optimizers (fp32 state) */
    /* Adam(W): p = p*(1-lr*wd); m,v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
    void (*adam_step)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                      float eps, float bc1, float bc2, float wd);
    /* Muon for one matrix W (rows, cols): buf = mu*buf + g; u = g + mu*buf (nesterov);
     * eq_r (MuonEq-R, PR #1392): every row u_r /= sqrt(sum_c u_rc^2 + 1e-7);
     * X = NewtonSchulz5(u, steps) * sqrt(max(1, rows/cols)); W = W*(1-lr*wd); W -= lr*X.
     * work: scratch of muon_work_floats(rows, cols) floats. */
    void (*muon_step)(float *W, const float *g, float *buf, int rows, int cols, float lr, float mu, int steps,
                      float wd, int eq_r, float *work);
    size_t (*muon_work_floats)(int rows, int cols);
    /* sum of squares of n floats (double accumulation), returned on the host */
    double (*sum_squares)(const float *x, size_t n);
    /* out[i] = sum_squares(x + off[i], n[i]) for k spans, all returned with one host synchronisation
     * (the global grad-norm clip over several ranks sums ~100 segments per step) */
    void (*sum_squares_spans)(const float *x, const size_t *off, const size_t *n, int k, double *out);
    /* x *= s */
    void (*scale_inplace)(float *x, size_t n, float s);
    /* EMA of weights: e = e*decay; e = e + (1-decay)*w (two fp32 roundings, as torch's mul_/add_) */
    void (*ema_update)(float *e, const float *w, size_t n, float decay);
    /* y += x (fp32; SWA sums) */
    void (*add_f32)(float *y, const float *x, size_t n);
} pg_ops;

extern const pg_ops pg_cpu_ops;
#ifdef PGOLF_CUDA
extern const pg_ops pg_cuda_ops;
/* 1 if a CUDA device is usable (initialises the context) */
int pg_cuda_available(char *why, size_t n);
/* the device's dense bf16 peak in FLOP/s (0: unknown), for MFU */
double pg_cuda_peak_flops(void);
#endif

#endif
