/* quant.c: the records' export quantisation schemes, dequantisation and the serialized quantised
 * object (see quant.h). The per-row loops mirror the PyTorch expressions of the records one
 * operation at a time in fp32, so the codes and scales are bit-identical to theirs. */
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "model.h"

/* LAPACK (OpenBLAS), Fortran ABI with the hidden length of the character argument */
extern void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
extern void spotri_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);

/* ---- schemes and labels ---- */

static const struct {
    const char *name, *alias1, *alias2, *codec, *log_label, *short_label, *qname;
} SCHEMES[QS_COUNT] = {
    [QS_INT8_BASELINE] = {"int8_baseline", "baseline", NULL, "zlib-9", "int8+zlib", "int8_zlib", "int8"},
    [QS_INT6_PR65] = {"int6_pr65", "pr65", NULL, "zstd-22", "int6+zstd-22", "int6", "int6"},
    [QS_INT6_PR315] = {"int6_pr315", "pr315", NULL, "zstd-22", "int6+zstd", "int6", "int6"},
    [QS_INT6_GPTQ_LITE] = {"int6_gptq_lite", "pr1311", NULL, "lzma-9e", "int6+lzma", "int6", "int6"},
    [QS_INT6_GPTQ] = {"int6_gptq", "pr1392", NULL, "brotli-11", "int6+brotli", "int6", "int6"},
    /* PR #187 logs "int6+lzma" and, from the baseline's code, final_int8_zlib_roundtrip */
    [QS_INT6_PR187] = {"int6_pr187", "pr187", NULL, "lzma-6", "int6+lzma", "int8_zlib", "int6"},
    /* PR #453's main candidate quantises as PR #315 and logs mixed+zstd / final_quant_* (spec §5) */
    [QS_INT6_PR453] = {"int6_pr453", "pr453", NULL, "zstd-22", "mixed+zstd", "quant", "int6"},
};

const double QUANT_PCT[QUANT_N_PCT] = {0.999, 0.9995, 0.9999, 0.99999, 1.0};

int quant_scheme_parse(const char *s, quant_scheme *out, char *err, size_t errlen) {
    for (int k = 0; k < QS_COUNT; k++)
        if (!strcmp(s, SCHEMES[k].name) || !strcmp(s, SCHEMES[k].alias1) || (SCHEMES[k].alias2 && !strcmp(s, SCHEMES[k].alias2))) {
            *out = (quant_scheme)k;
            return 0;
        }
    return pg_err(err, errlen, "QUANT_SCHEME=%s: unknown scheme (expected int8_baseline, int6_pr65, int6_pr315, int6_pr453, int6_gptq_lite, int6_gptq or int6_pr187)", s);
}

const char *quant_scheme_name(quant_scheme s) { return (unsigned)s < QS_COUNT ? SCHEMES[s].name : "invalid"; }
const char *quant_scheme_default_codec(quant_scheme s) { return (unsigned)s < QS_COUNT ? SCHEMES[s].codec : "zlib-9"; }

void quant_labels(quant_scheme s, const char *codec_label, char *log_label, size_t nl, char *short_label, size_t ns) {
    if (!strcmp(codec_label, SCHEMES[s].codec)) {
        snprintf(log_label, nl, "%s", SCHEMES[s].log_label);
        snprintf(short_label, ns, "%s", SCHEMES[s].short_label);
        return;
    }
    snprintf(log_label, nl, "%s+%s", SCHEMES[s].qname, codec_label);
    size_t k = strcspn(codec_label, "-");
    snprintf(short_label, ns, "%s_%.*s", SCHEMES[s].qname, (int)k, codec_label);
}

/* ---- quantile ---- */

/* k-th smallest of v[0..n) by Hoare quickselect; on return v[k] holds it and v[k+1..n) >= v[k] */
static float select_kth(float *v, long n, long k) {
    long lo = 0, hi = n - 1;
    while (lo < hi) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        float piv = (a < b) ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        long i = lo, j = hi;
        while (i <= j) {
            while (v[i] < piv) i++;
            while (v[j] > piv) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        /* v[lo..j] <= piv, v[j+1..i-1] == piv, v[i..hi] >= piv */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

float quant_quantile(float *v, size_t n, double q) {
    PG_CHECK(n >= 1);
    /* torch.quantile: rank = fp32(q) * (n-1) in fp32; below = floor, above = ceil; lerp with
     * weight rank - below, as ATen's vectorised lerp: fma(w, hi-lo, lo) for w < 0.5, else
     * fma(w-1, hi-lo, hi) */
    float pos = (float)q * (float)(n - 1);
    size_t k = (size_t)floorf(pos), k1 = (size_t)ceilf(pos);
    if (k1 > n - 1) k1 = n - 1;
    if (k > k1) k = k1;
    float w = pos - (float)k;
    float lo = select_kth(v, (long)n, (long)k);
    float hi = lo;
    if (k1 != k) { /* the smallest of the values above position k */
        hi = v[k + 1];
        for (size_t i = k + 2; i < n; i++)
            if (v[i] < hi) hi = v[i];
    }
    float d = hi - lo;
    return fabsf(w) < 0.5f ? fmaf(w, d, lo) : fmaf(w - 1.0f, d, hi);
}

/* ---- quantisers (one tensor) ---- */

static int is_float_dtype(pg_dtype d) { return d == DT_F32 || d == DT_F16 || d == DT_BF16 || d == DT_F64; }

static void qt_alloc(qtensor *t, size_t ncodes, pg_dtype sdt, size_t n_scale) {
    t->stored = DT_I8;
    t->nbytes = ncodes;
    t->data = xmalloc(ncodes ? ncodes : 1);
    t->scale_dtype = sdt;
    t->n_scale = n_scale;
    t->scale = xmalloc(n_scale * pg_dtype_size(sdt) + 1);
}

/* per-row codes with the quantile clip (baseline int8, PR #65 int6): clip = quantile(|w_r|),
 * scale = max(clip/qmax, 1/qmax) in fp32, q = clamp(round(clamp(w, -clip, clip)/scale), -qmax, qmax),
 * stored scale fp16(scale) */
static void rows_quantile(qtensor *t, const float *w, size_t rows, size_t cols, int qmax) {
    qt_alloc(t, rows * cols, DT_F16, rows);
    t->kind = QT_ROW;
    int8_t *q = t->data;
    uint16_t *s16 = t->scale;
    const float fq = (float)qmax, floor_s = (float)(1.0 / (double)qmax);
#pragma omp parallel
    {
        float *tmp = xmalloc((cols ? cols : 1) * sizeof(float));
#pragma omp for schedule(static)
        for (long r = 0; r < (long)rows; r++) {
            const float *wr = w + (size_t)r * cols;
            for (size_t i = 0; i < cols; i++) tmp[i] = fabsf(wr[i]);
            float clip = cols ? quant_quantile(tmp, cols, QUANT_CLIP_Q) : 0.0f;
            float scale = clip / fq;
            if (scale < floor_s) scale = floor_s;
            int8_t *qr = q + (size_t)r * cols;
            for (size_t i = 0; i < cols; i++) {
                float c = wr[i] < clip ? wr[i] : clip; /* torch.minimum then torch.maximum */
                c = c > -clip ? c : -clip;
                float v = nearbyintf(c / scale);
                v = v < -fq ? -fq : (v > fq ? fq : v);
                qr[i] = (int8_t)v;
            }
            s16[r] = pg_f32_to_f16(scale);
        }
        free(tmp);
    }
}

/* PR #315 int6 per row: s = fp16(max(rowmax|w|/31, 1/31)); q = clamp(round(w / fp32(s)), -32, 31) */
static void rows_rowmax_int6(qtensor *t, const float *w, size_t rows, size_t cols) {
    qt_alloc(t, rows * cols, DT_F16, rows);
    t->kind = QT_ROW;
    int8_t *q = t->data;
    uint16_t *s16 = t->scale;
    const float floor_s = (float)(1.0 / 31.0);
#pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)rows; r++) {
        const float *wr = w + (size_t)r * cols;
        float m = 0.0f;
        for (size_t i = 0; i < cols; i++) m = fabsf(wr[i]) > m ? fabsf(wr[i]) : m;
        float s = m / 31.0f;
        if (s < floor_s) s = floor_s;
        uint16_t h = pg_f32_to_f16(s);
        float sf = pg_f16_to_f32(h);
        for (size_t i = 0; i < cols; i++) {
            float v = nearbyintf(wr[i] / sf);
            v = v < -32.0f ? -32.0f : (v > 31.0f ? 31.0f : v);
            q[(size_t)r * cols + i] = (int8_t)v;
        }
        s16[r] = h;
    }
}

/* The baseline's per-tensor path for large non-2-D tensors: clip = quantile(|w|) (a Python float),
 * scale = fp32(clip/qmax) or 1.0, q = clamp(round(clamp(w, -clip, clip)/scale), -qmax, qmax),
 * scale stored fp32; qmax 127 (baseline) or 31 (PR #187) */
static void tensor_quantile(qtensor *t, const float *w, size_t n, int qmax) {
    qt_alloc(t, n, DT_F32, 1);
    t->kind = QT_TENSOR;
    float clip = 0.0f;
    if (n) {
        float *tmp = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) tmp[i] = fabsf(w[i]);
        clip = quant_quantile(tmp, n, QUANT_CLIP_Q);
        free(tmp);
    }
    float scale = clip > 0 ? (float)((double)clip / (double)qmax) : 1.0f;
    const float fq = (float)qmax;
    int8_t *q = t->data;
    for (size_t i = 0; i < n; i++) {
        float c = w[i] < -clip ? -clip : (w[i] > clip ? clip : w[i]);
        float v = nearbyintf(c / scale);
        v = v < -fq ? -fq : (v > fq ? fq : v);
        q[i] = (int8_t)v;
    }
    memcpy(t->scale, &scale, 4);
}

/* The per-tensor int6 fallback for non-2-D attn/mlp tensors (none exist in the records):
 * s = fp16(amax/31 or 1), q = clamp(round(w/s), lo, 31); lo = -32 (PR #315) or -31 (PR #1311/#1392) */
static void tensor_rowmax_int6(qtensor *t, const float *w, size_t n, float lo) {
    qt_alloc(t, n, DT_F16, 1);
    t->kind = QT_TENSOR;
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(w[i]) > m ? fabsf(w[i]) : m;
    uint16_t h = pg_f32_to_f16(m > 0 ? (float)((double)m / 31.0) : 1.0f);
    float sf = pg_f16_to_f32(h);
    int8_t *q = t->data;
    for (size_t i = 0; i < n; i++) {
        float v = nearbyintf(w[i] / sf);
        v = v < lo ? lo : (v > 31.0f ? 31.0f : v);
        q[i] = (int8_t)v;
    }
    memcpy(t->scale, &h, 2);
}

/* ---- GPTQ-lite (PR #1311) ---- */

void quant_pct_scales(const float *w, size_t rows, size_t cols, double p, uint16_t *s16) {
    const float floor_s = (float)(1.0 / 31.0);
#pragma omp parallel
    {
        float *tmp = xmalloc((cols ? cols : 1) * sizeof(float));
#pragma omp for schedule(static)
        for (long r = 0; r < (long)rows; r++) {
            const float *wr = w + (size_t)r * cols;
            float c = 0.0f;
            if (p >= 1.0) { /* the record's amax(dim=1) */
                for (size_t i = 0; i < cols; i++) c = fabsf(wr[i]) > c ? fabsf(wr[i]) : c;
            } else if (cols) {
                for (size_t i = 0; i < cols; i++) tmp[i] = fabsf(wr[i]);
                c = quant_quantile(tmp, cols, p);
            }
            float s = c / 31.0f; /* (row_clip / 31).clamp_min(1/31) in fp32, then fp16 */
            if (s < floor_s) s = floor_s;
            s16[r] = pg_f32_to_f16(s);
        }
        free(tmp);
    }
}

int quant_int6_search(const float *w, size_t rows, size_t cols, int8_t *q, uint16_t *s16) {
    uint16_t *s = xmalloc((rows ? rows : 1) * sizeof(uint16_t));
    int8_t *qq = xmalloc(rows * cols + 1);
    double *row_err = xmalloc((rows ? rows : 1) * sizeof(double));
    double best = INFINITY;
    int best_k = -1;
    for (int k = 0; k < QUANT_N_PCT; k++) {
        quant_pct_scales(w, rows, cols, QUANT_PCT[k], s);
#pragma omp parallel for schedule(static)
        for (long r = 0; r < (long)rows; r++) {
            const float sf = pg_f16_to_f32(s[r]);
            const float *wr = w + (size_t)r * cols;
            int8_t *qr = qq + (size_t)r * cols;
            double e = 0.0;
            for (size_t i = 0; i < cols; i++) {
                float v = nearbyintf(wr[i] / sf);
                v = v < -31.0f ? -31.0f : (v > 31.0f ? 31.0f : v);
                qr[i] = (int8_t)v;
                float d = wr[i] - v * sf; /* (t32 - q*s)^2 in fp32, summed in double */
                e += (double)(d * d);
            }
            row_err[r] = e;
        }
        double err = 0.0;
        for (size_t r = 0; r < rows; r++) err += row_err[r];
        err /= (double)(rows * cols + (rows * cols == 0));
        if (best_k < 0 || err < best) {
            best = err;
            best_k = k;
            memcpy(q, qq, rows * cols);
            memcpy(s16, s, rows * sizeof(uint16_t));
        }
    }
    free(s);
    free(qq);
    free(row_err);
    return best_k;
}

/* ---- full GPTQ (PR #1392) ---- */

void gptq_hessians_free(gptq_hessians *h) {
    free(h->qkv);
    free(h->proj);
    free(h->fc);
    free(h->mproj);
    memset(h, 0, sizeof(*h));
}

const float *gptq_hessian(const gptq_hessians *h, const char *name, int *dim) {
    int l, n = 0;
    char kind[32];
    if (!h || sscanf(name, "blocks.%d.%31[a-z_.]%n", &l, kind, &n) != 2 || name[n] || l < 0 || l >= h->L)
        return NULL;
    const float *base = NULL;
    if (!strcmp(kind, "attn.c_q.weight") || !strcmp(kind, "attn.c_k.weight") || !strcmp(kind, "attn.c_v.weight"))
        base = h->qkv, *dim = h->d;
    else if (!strcmp(kind, "attn.proj.weight")) base = h->proj, *dim = h->hd;
    else if (!strcmp(kind, "mlp.fc.weight")) base = h->fc, *dim = h->d;
    else if (!strcmp(kind, "mlp.proj.weight")) base = h->mproj, *dim = h->hidden;
    return base ? base + (size_t)l * *dim * *dim : NULL;
}

typedef struct {
    float v;
    int i;
} diag_ent;

static int cmp_diag_desc(const void *a, const void *b) {
    const diag_ent *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i; /* stable */
}

int gptq_quantize(const float *w, int R, int C, const float *Hin, double damp, int block, int8_t *q, uint16_t *s16,
                  int *p_index) {
    if (block <= 0) block = 128;
    const size_t CC = (size_t)C * C, RC = (size_t)R * C;
    float *H = xmalloc(CC * sizeof(float));
    memcpy(H, Hin, CC * sizeof(float));
    uint8_t *dead = xcalloc((size_t)C, 1);
    double dsum = 0.0;
    for (int c = 0; c < C; c++) {
        if (H[(size_t)c * C + c] == 0.0f) dead[c] = 1, H[(size_t)c * C + c] = 1.0f;
        dsum += H[(size_t)c * C + c];
    }
    const float dmp = (float)damp * ((float)dsum / (float)C); /* damp * mean(diag H) in fp32 */
    diag_ent *de = xmalloc((size_t)C * sizeof(diag_ent));
    for (int c = 0; c < C; c++) {
        H[(size_t)c * C + c] += dmp;
        de[c].v = H[(size_t)c * C + c], de[c].i = c;
    }
    qsort(de, (size_t)C, sizeof(diag_ent), cmp_diag_desc);
    int *perm = xmalloc((size_t)C * sizeof(int));
    for (int c = 0; c < C; c++) perm[c] = de[c].i;
    free(de);
    /* A = H[perm][:, perm] (symmetric: its column-major view is itself) */
    float *A = xmalloc(CC * sizeof(float));
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) A[(size_t)i * C + j] = H[(size_t)perm[i] * C + perm[j]];
    free(H);
    int info = 0;
    spotrf_("L", &C, A, &C, &info, 1); /* torch.linalg.cholesky */
    if (info == 0) spotri_("L", &C, A, &C, &info, 1); /* torch.cholesky_inverse: lower triangle, mirrored */
    if (info == 0) {
        for (int j = 0; j < C; j++)
            for (int i = j + 1; i < C; i++) A[(size_t)i * C + j] = A[(size_t)j * C + i]; /* col-major (j,i) <- (i,j) */
        spotrf_("U", &C, A, &C, &info, 1); /* torch.linalg.cholesky(upper=True) */
    }
    if (info != 0) {
        free(A);
        free(perm);
        free(dead);
        return -1;
    }
    /* U row-major: U[i][j] = A(i, j) for i <= j, the column-major element at i + j*C */
    float *U = xcalloc(CC, sizeof(float));
    for (int i = 0; i < C; i++)
        for (int j = i; j < C; j++) U[(size_t)i * C + j] = A[(size_t)j * C + i];
    free(A);
    /* the permuted weights, transposed (column c of W_perm is row c here), dead columns zeroed */
    float *Wt = xmalloc(RC * sizeof(float)), *work = xmalloc(RC * sizeof(float));
    for (int i = 0; i < C; i++)
        for (int r = 0; r < R; r++) Wt[(size_t)i * R + r] = dead[perm[i]] ? 0.0f : w[(size_t)r * C + perm[i]];
    free(dead);
    int8_t *Qt = xmalloc(RC), *Qbest = xmalloc(RC);
    float *E = xmalloc((size_t)block * R * sizeof(float)), *tmp = xmalloc(RC * sizeof(float)), *sf = xmalloc((size_t)R * sizeof(float));
    uint16_t *s = xmalloc((size_t)R * sizeof(uint16_t));
    double *row_err = xmalloc((size_t)C * sizeof(double));
    double best = INFINITY;
    int best_k = -1;
    const int RCH = 64; /* rows per task: rows are independent inside a block */
    for (int k = 0; k < QUANT_N_PCT; k++) {
        quant_pct_scales(w, (size_t)R, (size_t)C, QUANT_PCT[k], s); /* the unpermuted weights */
        for (int r = 0; r < R; r++) sf[r] = pg_f16_to_f32(s[r]);
        memcpy(work, Wt, RC * sizeof(float));
        for (int b = 0; b < C; b += block) {
            const int e = b + block < C ? b + block : C, n = e - b;
#pragma omp parallel for schedule(static)
            for (int r0 = 0; r0 < R; r0 += RCH) {
                const int r1 = r0 + RCH < R ? r0 + RCH : R;
                for (int j = 0; j < n; j++) {
                    float *col = work + (size_t)(b + j) * R;
                    const float dj = U[(size_t)(b + j) * C + b + j];
                    int8_t *qc = Qt + (size_t)(b + j) * R;
                    float *ej = E + (size_t)j * R;
                    for (int r = r0; r < r1; r++) {
                        float v = nearbyintf(col[r] / sf[r]);
                        v = v < -31.0f ? -31.0f : (v > 31.0f ? 31.0f : v);
                        qc[r] = (int8_t)v;
                        ej[r] = (col[r] - v * sf[r]) / dj;
                    }
                    for (int k2 = j; k2 < n; k2++) { /* W_block[:, j:] -= err * U[j, j:] */
                        const float u = U[(size_t)(b + j) * C + b + k2];
                        float *c2 = work + (size_t)(b + k2) * R;
                        for (int r = r0; r < r1; r++) c2[r] -= ej[r] * u;
                    }
                }
            }
            if (e < C) { /* W[:, e:] -= Err @ U[b:e, e:], transposed: U[b:e, e:]^T @ Err^T */
                const size_t M = (size_t)(C - e);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)M, R, n, 1.0f, U + (size_t)b * C + e, C, E, R, 0.0f,
                            tmp, R);
                float *dst = work + (size_t)e * R;
#pragma omp parallel for schedule(static)
                for (long i = 0; i < (long)(M * R); i++) dst[i] -= tmp[i];
            }
        }
        /* unweighted MSE of the permuted weights */
#pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
            const float *wc = Wt + (size_t)c * R;
            const int8_t *qc = Qt + (size_t)c * R;
            for (int r = 0; r < R; r++) {
                float d = wc[r] - (float)qc[r] * sf[r];
                acc += (double)(d * d);
            }
            row_err[c] = acc;
        }
        double mse = 0.0;
        for (int c = 0; c < C; c++) mse += row_err[c];
        mse /= (double)RC;
        if (best_k < 0 || mse < best) {
            best = mse;
            best_k = k;
            memcpy(Qbest, Qt, RC);
            memcpy(s16, s, (size_t)R * sizeof(uint16_t));
        }
    }
    for (int i = 0; i < C; i++) /* un-permute: q[:, perm[i]] = Q_perm[:, i] */
        for (int r = 0; r < R; r++) q[(size_t)r * C + perm[i]] = Qbest[(size_t)i * R + r];
    if (p_index) *p_index = best_k;
    free(U);
    free(Wt);
    free(work);
    free(Qt);
    free(Qbest);
    free(E);
    free(tmp);
    free(sf);
    free(s);
    free(row_err);
    free(perm);
    return 0;
}

/* passthrough stored as `dt` (a float cast, or the original bytes when dt == the original dtype) */
static void pass_as(qtensor *t, const sd_tensor *s, pg_dtype dt) {
    t->kind = QT_PASS;
    t->stored = dt;
    if (dt == s->dtype) {
        t->nbytes = s->nbytes;
        t->data = xmalloc(s->nbytes ? s->nbytes : 1);
        if (s->nbytes) memcpy(t->data, s->data, s->nbytes);
        return;
    }
    size_t n = (size_t)sd_numel(s);
    float *f = xmalloc((n ? n : 1) * sizeof(float));
    sd_to_f32(s, f);
    t->nbytes = n * pg_dtype_size(dt);
    t->data = xmalloc(t->nbytes ? t->nbytes : 1);
    if (dt == DT_F32) memcpy(t->data, f, n * 4);
    else if (dt == DT_F16)
        for (size_t i = 0; i < n; i++) ((uint16_t *)t->data)[i] = pg_f32_to_f16(f[i]);
    else
        PG_CHECK(0);
    free(f);
}

/* train_gpt.py keep_float_tensor: fp32 for keep-pattern names, fp16 for other fp32/bf16, else as is */
static void keep_float(qtensor *t, const sd_tensor *s, const char *keep_fp32) {
    if (name_matches_patterns(s->name, keep_fp32)) pass_as(t, s, DT_F32);
    else if (s->dtype == DT_F32 || s->dtype == DT_BF16) pass_as(t, s, DT_F16);
    else pass_as(t, s, s->dtype);
}

static int pr315_attn_or_mlp(const char *name) {
    if (strstr(name, "tok_emb") || strstr(name, "lm_head")) return 0;
    if (strstr(name, ".mlp.")) return 1;
    return strstr(name, ".attn.") || strstr(name, ".proj.");
}

void qstate_init(qstate *q) { memset(q, 0, sizeof(*q)); }

void qstate_free(qstate *q) {
    for (int i = 0; i < q->n; i++) {
        free(q->t[i].name);
        free(q->t[i].data);
        free(q->t[i].scale);
    }
    free(q->t);
    memset(q, 0, sizeof(*q));
}

static qtensor *qs_push(qstate *q) {
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->t = xrealloc(q->t, (size_t)q->cap * sizeof(qtensor));
    }
    qtensor *t = &q->t[q->n++];
    memset(t, 0, sizeof(*t));
    return t;
}

size_t quant_payload_bytes(const qstate *q) {
    size_t b = 0;
    for (int i = 0; i < q->n; i++) b += q->t[i].nbytes + q->t[i].n_scale * (q->t[i].kind == QT_PASS ? 0 : pg_dtype_size(q->t[i].scale_dtype));
    return b;
}

int quantize_statedict(const statedict *sd, quant_scheme scheme, const quant_opts *o, qstate *out, quant_stats *st,
                       char *err, size_t errlen) {
    qstate_init(out);
    memset(st, 0, sizeof(*st));
    if ((unsigned)scheme >= QS_COUNT) return pg_err(err, errlen, "invalid quantisation scheme");
    const char *control = o && o->control_patterns ? o->control_patterns : "";
    const char *keep32 = o && o->keep_fp32_patterns && o->keep_fp32_patterns[0] ? o->keep_fp32_patterns : control;
    const char *keep16 = o && o->fp16_keep_patterns ? o->fp16_keep_patterns : "tok_emb,bigram_hash";
    for (int i = 0; i < sd->n; i++) {
        const sd_tensor *s = &sd->t[i];
        size_t n = (size_t)sd_numel(s);
        st->param_count += n;
        st->num_tensors++;
        st->baseline_tensor_bytes += s->nbytes;
        qtensor *t = qs_push(out);
        t->name = xstrdup(s->name);
        t->orig = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof(t->shape));
        if (!is_float_dtype(s->dtype)) {
            st->num_nonfloat_tensors++;
            pass_as(t, s, s->dtype);
            continue;
        }
        float *f = xmalloc((n ? n : 1) * sizeof(float));
        sd_to_f32(s, f);
        for (size_t k = 0; k < n; k++)
            if (!isfinite(f[k])) {
                double bad = (double)f[k];
                free(f);
                pg_err(err, errlen, "tensor %s has a non-finite value (%g) at index %zu: refusing to export", s->name, bad, k);
                qstate_free(out);
                return -1;
            }
        size_t rows = s->ndim >= 1 ? (size_t)s->shape[0] : 1, cols = rows ? n / rows : 0;
        int big = n > QUANT_KEEP_MAX_NUMEL;
        const int pr315 = scheme == QS_INT6_PR315 || scheme == QS_INT6_PR453;
        if (pr315 || scheme == QS_INT6_GPTQ_LITE || scheme == QS_INT6_GPTQ) {
            /* PR #315, #1311 and #1392: the size test comes before the control-name test */
            if (!big) pass_as(t, s, DT_F16);
            else if (name_matches_patterns(s->name, control)) pass_as(t, s, DT_F32);
            else if (pr315_attn_or_mlp(s->name)) {
                st->num_float_tensors++;
                t->bits = 6;
                if (pr315) {
                    if (s->ndim == 2) rows_rowmax_int6(t, f, rows, cols);
                    else tensor_rowmax_int6(t, f, n, -32.0f);
                } else if (s->ndim == 2) {
                    int dim = 0;
                    const float *H = scheme == QS_INT6_GPTQ && o ? gptq_hessian(o->hessians, s->name, &dim) : NULL;
                    if (H && dim != (int)cols) {
                        pg_err(err, errlen, "tensor %s has %zu columns, its GPTQ Hessian is %dx%d", s->name, cols, dim, dim);
                        free(f);
                        qstate_free(out);
                        return -1;
                    }
                    const int blk = o && o->gptq_block > 0 ? o->gptq_block : 128;
                    const double damp = o && o->gptq_block > 0 ? o->gptq_damp : 0.01;
                    qt_alloc(t, rows * cols, DT_F16, rows);
                    t->kind = QT_ROW;
                    if (H && gptq_quantize(f, (int)rows, (int)cols, H, damp, blk, t->data, t->scale, NULL) == 0) st->n_gptq++;
                    else { /* no Hessian, or not positive definite: the record's fallback */
                        quant_int6_search(f, rows, cols, t->data, t->scale);
                        st->n_gptq_lite++;
                    }
                } else {
                    tensor_rowmax_int6(t, f, n, -31.0f);
                }
            } else {
                st->num_float_tensors++;
                t->bits = 8;
                if (s->ndim == 2) rows_quantile(t, f, rows, cols, 127);
                else tensor_quantile(t, f, n, 127);
            }
        } else if (scheme == QS_INT6_PR187) {
            /* PR #187: tok_emb kept as a small tensor is; every other large float tensor int6 */
            if (!big || strstr(s->name, "tok_emb.weight")) keep_float(t, s, keep32);
            else {
                st->num_float_tensors++;
                t->bits = 6;
                if (s->ndim == 2) rows_quantile(t, f, rows, cols, 31);
                else tensor_quantile(t, f, n, 31);
            }
        } else {
            if (!big) keep_float(t, s, keep32);
            else if (scheme == QS_INT6_PR65 && name_matches_patterns(s->name, keep16)) pass_as(t, s, DT_F16);
            else {
                st->num_float_tensors++;
                if (s->ndim == 2) {
                    t->bits = scheme == QS_INT6_PR65 ? 6 : 8;
                    rows_quantile(t, f, rows, cols, scheme == QS_INT6_PR65 ? 31 : 127);
                } else {
                    t->bits = 8;
                    tensor_quantile(t, f, n, 127);
                }
            }
        }
        free(f);
    }
    st->payload_bytes = quant_payload_bytes(out);
    return 0;
}

/* ---- dequantisation ---- */

static void store_as(pg_dtype dt, const float *f, size_t n, void *dst) {
    switch (dt) {
    case DT_F32: memcpy(dst, f, n * 4); break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pg_f32_to_bf16(f[i]);
        break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pg_f32_to_f16(f[i]);
        break;
    case DT_F64:
        for (size_t i = 0; i < n; i++) ((double *)dst)[i] = (double)f[i];
        break;
    default: PG_CHECK(0);
    }
}

int dequantize_qstate(const qstate *q, statedict *out, char *err, size_t errlen) {
    sd_init(out);
    for (int i = 0; i < q->n; i++) {
        const qtensor *t = &q->t[i];
        if (sd_find(out, t->name)) {
            sd_free(out);
            return pg_err(err, errlen, "duplicate tensor %s", t->name);
        }
        sd_tensor *o = sd_add(out, t->name, t->orig, t->ndim, t->shape, NULL);
        size_t n = (size_t)sd_numel(o);
        if (t->kind == QT_PASS && t->stored == t->orig) {
            PG_CHECK(t->nbytes == o->nbytes);
            if (t->nbytes) memcpy(o->data, t->data, t->nbytes);
            continue;
        }
        PG_CHECK(is_float_dtype(t->orig));
        float *f = xmalloc((n ? n : 1) * sizeof(float));
        if (t->kind == QT_PASS) {
            sd_tensor tmp = {.name = t->name, .dtype = t->stored, .ndim = t->ndim, .data = t->data, .nbytes = t->nbytes};
            memcpy(tmp.shape, t->shape, sizeof(tmp.shape));
            sd_to_f32(&tmp, f);
        } else {
            const int8_t *c = t->data;
            if (t->kind == QT_ROW) {
                size_t rows = t->n_scale, cols = rows ? n / rows : 0;
                for (size_t r = 0; r < rows; r++) {
                    float s = pg_f16_to_f32(((const uint16_t *)t->scale)[r]);
                    for (size_t j = 0; j < cols; j++) f[r * cols + j] = (float)c[r * cols + j] * s;
                }
            } else {
                float s;
                if (t->scale_dtype == DT_F16) s = pg_f16_to_f32(*(const uint16_t *)t->scale);
                else memcpy(&s, t->scale, 4);
                for (size_t j = 0; j < n; j++) f[j] = (float)c[j] * s;
            }
        }
        store_as(t->orig, f, n, o->data);
        free(f);
    }
    return 0;
}

/* ---- serialized form ---- */

#define QMAGIC "PGQ1"
#define QMAGIC2 "PGQ2"
#define QFLAG_PACK6 1u

size_t quant_packed6_len(size_t n) { return n / 4 * 3 + (n % 4 * 6 + 7) / 8; }

void quant_pack6(const int8_t *c, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    for (; i + 4 <= n; i += 4, o += 3) {
        uint32_t v = (uint32_t)(c[i] & 63) | (uint32_t)(c[i + 1] & 63) << 6 | (uint32_t)(c[i + 2] & 63) << 12 |
                     (uint32_t)(c[i + 3] & 63) << 18;
        out[o] = (uint8_t)v, out[o + 1] = (uint8_t)(v >> 8), out[o + 2] = (uint8_t)(v >> 16);
    }
    if (i < n) {
        uint32_t v = 0;
        for (size_t k = 0; i + k < n; k++) v |= (uint32_t)(c[i + k] & 63) << (6 * k);
        for (size_t k = 0; k < (n - i) * 6 / 8 + ((n - i) * 6 % 8 != 0); k++) out[o + k] = (uint8_t)(v >> (8 * k));
    }
}

static int8_t sext6(uint32_t v) { return (int8_t)((int)(v & 63) - ((v & 32) ? 64 : 0)); }

int quant_unpack6(const uint8_t *in, size_t n, int8_t *c) {
    size_t i = 0, o = 0;
    for (; i + 4 <= n; i += 4, o += 3) {
        uint32_t v = (uint32_t)in[o] | (uint32_t)in[o + 1] << 8 | (uint32_t)in[o + 2] << 16;
        for (int k = 0; k < 4; k++) c[i + k] = sext6(v >> (6 * k));
    }
    if (i < n) {
        const size_t r = n - i, nb = (r * 6 + 7) / 8;
        uint32_t v = 0;
        for (size_t k = 0; k < nb; k++) v |= (uint32_t)in[o + k] << (8 * k);
        if (v >> (6 * r)) return -1; /* padding bits */
        for (size_t k = 0; k < r; k++) c[i + k] = sext6(v >> (6 * k));
    }
    return 0;
}

/* serialized bytes of a quantised tensor's codes */
static size_t ser_code_bytes(const qtensor *t, int pack6) {
    return pack6 && t->bits == 6 ? quant_packed6_len(t->nbytes) : t->nbytes;
}

typedef struct {
    uint8_t *b;
    size_t n, cap;
} wbuf;

static void wb_put(wbuf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->b = xrealloc(w->b, w->cap);
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void wb_u8(wbuf *w, unsigned v) {
    uint8_t b = (uint8_t)v;
    wb_put(w, &b, 1);
}
static void wb_u64(wbuf *w, uint64_t v) {
    uint8_t b[8];
    pg_wr_u64(b, v);
    wb_put(w, b, 8);
}

void qstate_serialize(const qstate *q, uint8_t **buf, size_t *len) {
    wbuf w = {0};
    size_t data = 0;
    for (int i = 0; i < q->n; i++)
        data += q->t[i].nbytes + (q->t[i].kind == QT_PASS ? 0 : q->t[i].n_scale * pg_dtype_size(q->t[i].scale_dtype));
    w.cap = data + 64 + (size_t)q->n * 160;
    w.b = xmalloc(w.cap);
    wb_put(&w, q->pack6 ? QMAGIC2 : QMAGIC, 4);
    uint8_t b4[4];
    pg_wr_u32(b4, (uint32_t)q->n);
    wb_put(&w, b4, 4);
    if (q->pack6) {
        pg_wr_u32(b4, QFLAG_PACK6);
        wb_put(&w, b4, 4);
    }
    for (int i = 0; i < q->n; i++) {
        const qtensor *t = &q->t[i];
        size_t nl = strlen(t->name);
        PG_CHECK(nl < 65536);
        wb_u8(&w, nl & 0xff);
        wb_u8(&w, nl >> 8);
        wb_put(&w, t->name, nl);
        wb_u8(&w, t->kind);
        wb_u8(&w, t->orig);
        wb_u8(&w, t->stored);
        wb_u8(&w, (unsigned)t->bits);
        wb_u8(&w, t->kind == QT_PASS ? 0 : t->scale_dtype);
        wb_u8(&w, (unsigned)t->ndim);
        for (int d = 0; d < t->ndim; d++) wb_u64(&w, (uint64_t)t->shape[d]);
        wb_u64(&w, t->kind == QT_PASS ? 0 : t->n_scale);
    }
    for (int i = 0; i < q->n; i++) {
        const qtensor *t = &q->t[i];
        if (t->kind == QT_PASS) continue;
        if (q->pack6 && t->bits == 6) {
            size_t pl = quant_packed6_len(t->nbytes);
            uint8_t *pk = xmalloc(pl + 1);
            quant_pack6(t->data, t->nbytes, pk);
            wb_put(&w, pk, pl);
            free(pk);
        } else {
            wb_put(&w, t->data, t->nbytes);
        }
    }
    for (int i = 0; i < q->n; i++)
        if (q->t[i].kind != QT_PASS) wb_put(&w, q->t[i].scale, q->t[i].n_scale * pg_dtype_size(q->t[i].scale_dtype));
    for (int i = 0; i < q->n; i++)
        if (q->t[i].kind == QT_PASS) wb_put(&w, q->t[i].data, q->t[i].nbytes);
    *buf = w.b;
    *len = w.n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int qstate_parse(const uint8_t *buf, size_t len, const char *what, qstate *q, char *err, size_t errlen) {
    qstate_init(q);
    const int v2 = len >= 4 && memcmp(buf, QMAGIC2, 4) == 0;
    const size_t hdr = v2 ? 12 : 8;
    if (len < hdr || (!v2 && memcmp(buf, QMAGIC, 4) != 0))
        return pg_err(err, errlen, "%s: model payload is not a pgolf quantised object", what);
    uint32_t n = pg_rd_u32(buf + 4);
    if (v2) {
        uint32_t flags = pg_rd_u32(buf + 8);
        if (flags & ~QFLAG_PACK6)
            return pg_err(err, errlen, "%s: model payload: unsupported flags 0x%x in a version 2 object", what, flags);
        q->pack6 = (flags & QFLAG_PACK6) != 0;
    }
    if ((uint64_t)n * 16 > len - hdr) return pg_err(err, errlen, "%s: model payload: tensor count %u exceeds the data", what, n);
    size_t p = hdr;
#define NEED(k)                                                                                                        \
    do {                                                                                                               \
        if ((k) > len - p) {                                                                                           \
            rc = pg_err(err, errlen, "%s: model payload: tensor table truncated at byte %zu", what, p);                \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)
    int rc = 0;
    uint64_t need_data = 0;
    for (uint32_t i = 0; i < n; i++) {
        NEED(2);
        size_t nl = (size_t)buf[p] | ((size_t)buf[p + 1] << 8);
        p += 2;
        NEED(nl + 6);
        if (nl == 0 || memchr(buf + p, 0, nl)) {
            rc = pg_err(err, errlen, "%s: model payload: tensor %u has an empty or invalid name", what, i);
            goto fail;
        }
        qtensor *t = qs_push(q);
        t->name = xmalloc(nl + 1);
        memcpy(t->name, buf + p, nl);
        t->name[nl] = 0;
        p += nl;
        unsigned kind = buf[p], orig = buf[p + 1], stored = buf[p + 2], bits = buf[p + 3], sdt = buf[p + 4], ndim = buf[p + 5];
        p += 6;
        if (kind > QT_TENSOR || orig >= DT_COUNT || stored >= DT_COUNT || ndim > SD_MAX_NDIM || sdt >= DT_COUNT) {
            rc = pg_err(err, errlen, "%s: model payload: tensor %s has an invalid kind/dtype/rank", what, t->name);
            goto fail;
        }
        t->kind = (qt_kind)kind;
        t->orig = (pg_dtype)orig;
        t->stored = (pg_dtype)stored;
        t->bits = (int)bits;
        t->ndim = (int)ndim;
        t->scale_dtype = (pg_dtype)sdt;
        NEED(8 * (size_t)ndim + 8);
        uint64_t numel = 1;
        for (unsigned d = 0; d < ndim; d++) {
            uint64_t v = pg_rd_u64(buf + p);
            p += 8;
            if (v > (1ull << 40) || (numel *= v) > (1ull << 40)) {
                rc = pg_err(err, errlen, "%s: model payload: tensor %s has an invalid shape", what, t->name);
                goto fail;
            }
            t->shape[d] = (int64_t)v;
        }
        uint64_t ns = pg_rd_u64(buf + p);
        p += 8;
        int ok;
        if (t->kind == QT_PASS) {
            ok = ns == 0 && bits == 0 && sdt == 0 && (t->stored == t->orig || (is_float_dtype(t->orig) && (t->stored == DT_F16 || t->stored == DT_F32)));
            t->nbytes = (size_t)(numel * pg_dtype_size(t->stored));
        } else {
            ok = is_float_dtype(t->orig) && t->stored == DT_I8 && (bits == 8 || bits == 6);
            if (t->kind == QT_ROW) ok = ok && ndim >= 1 && ns == (uint64_t)t->shape[0] && t->scale_dtype == DT_F16;
            else ok = ok && ns == 1 && (t->scale_dtype == DT_F16 || t->scale_dtype == DT_F32);
            t->nbytes = (size_t)numel;
            t->n_scale = (size_t)ns;
        }
        if (!ok) {
            rc = pg_err(err, errlen, "%s: model payload: tensor %s has an inconsistent description", what, t->name);
            goto fail;
        }
        need_data += t->kind == QT_PASS ? t->nbytes : ser_code_bytes(t, q->pack6) + t->n_scale * pg_dtype_size(t->scale_dtype);
        if (need_data > len) {
            rc = pg_err(err, errlen, "%s: model payload: tensor data exceeds the payload", what);
            goto fail;
        }
    }
    if (need_data != len - p) {
        rc = pg_err(err, errlen, "%s: model payload holds %zu data bytes, its table describes %llu", what, len - p,
                    (unsigned long long)need_data);
        goto fail;
    }
    { /* unique names */
        char **names = xmalloc((q->n ? (size_t)q->n : 1) * sizeof(char *));
        for (int i = 0; i < q->n; i++) names[i] = q->t[i].name;
        qsort(names, (size_t)q->n, sizeof(char *), cmp_str);
        for (int i = 1; i < q->n && !rc; i++)
            if (!strcmp(names[i - 1], names[i])) rc = pg_err(err, errlen, "%s: model payload: duplicate tensor %s", what, names[i]);
        free(names);
        if (rc) goto fail;
    }
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < q->n; i++) {
            qtensor *t = &q->t[i];
            int quant = t->kind != QT_PASS;
            if (pass == 0 && quant) {
                t->data = xmalloc(t->nbytes + 1);
                if (q->pack6 && t->bits == 6) {
                    if (quant_unpack6(buf + p, t->nbytes, t->data) != 0) {
                        rc = pg_err(err, errlen, "%s: model payload: tensor %s: packed int6 codes with non-zero padding bits",
                                    what, t->name);
                        goto fail;
                    }
                    p += quant_packed6_len(t->nbytes);
                } else {
                    memcpy(t->data, buf + p, t->nbytes);
                    p += t->nbytes;
                }
                const int8_t *c = t->data;
                int lo = -(1 << (t->bits - 1)), hi = (1 << (t->bits - 1)) - 1;
                for (size_t k = 0; k < t->nbytes; k++)
                    if (c[k] < lo || c[k] > hi) {
                        rc = pg_err(err, errlen, "%s: model payload: tensor %s has a code %d outside int%d", what, t->name, c[k], t->bits);
                        goto fail;
                    }
            } else if (pass == 1 && quant) {
                size_t sb = t->n_scale * pg_dtype_size(t->scale_dtype);
                t->scale = xmalloc(sb + 1);
                memcpy(t->scale, buf + p, sb);
                p += sb;
            } else if (pass == 2 && !quant) {
                t->data = xmalloc(t->nbytes + 1);
                memcpy(t->data, buf + p, t->nbytes);
                p += t->nbytes;
            }
        }
    return 0;
#undef NEED
fail:
    qstate_free(q);
    return -1;
}
