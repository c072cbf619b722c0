/* gptq.c: calibration Hessians and full GPTQ of PR #1392 (see gptq.h). */
#include "gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "data.h"
#include "quant.h"

/* LAPACK (OpenBLAS), Fortran ABI with the hidden length of the character argument */
extern void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
extern void spotri_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);

/* ---- Hessians ---- */

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

/* H += (sc*X)^T (sc*X) for an activation X (N, C) (upper triangle) */
static void accumulate(const gpt_model *m, float *H, const pg_act *x, int N, int C, float sc, float *buf) {
    m->ops->act_to_f32(buf, x, (size_t)N * C);
    if (sc != 1.0f)
        for (size_t i = 0; i < (size_t)N * C; i++) buf[i] *= sc;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, C, N, 1.0f, buf, C, 1.0f, H, C);
}

/* mirror the upper triangle and divide by n */
static void finish(float *H, int C, float n) {
    for (int i = 0; i < C; i++) {
        for (int j = i; j < C; j++) H[(size_t)i * C + j] /= n;
        for (int j = 0; j < i; j++) H[(size_t)i * C + j] = H[(size_t)j * C + i];
    }
}

int gptq_collect(gpt_model *m, const int32_t *tokens, int n_seqs, gptq_hessians *h, char *err, size_t errlen) {
    memset(h, 0, sizeof(*h));
    if (n_seqs < 1) return pg_err(err, errlen, "GPTQ calibration: no sequences");
    const int L = m->L, d = m->d, hd = m->H * m->D, hid = m->hidden, T = m->T;
    h->L = L, h->d = d, h->hd = hd, h->hidden = hid, h->n_seqs = n_seqs, h->T = T;
    h->qkv = xcalloc((size_t)L * d * d, sizeof(float));
    h->proj = xcalloc((size_t)L * hd * hd, sizeof(float));
    h->fc = xcalloc((size_t)L * d * d, sizeof(float));
    h->mproj = xcalloc((size_t)L * hid * hid, sizeof(float));
    /* the record's replica is purely sequential */
    const int recur_on = m->recur_on;
    int *par = xmalloc((size_t)L * sizeof(int));
    m->recur_on = 0;
    for (int l = 0; l < L; l++) par[l] = m->blk[l].parallel, m->blk[l].parallel = 0;
    int wmax = d > hd ? d : hd;
    if (hid > wmax) wmax = hid;
    float *buf = xmalloc((size_t)m->B * T * wmax * sizeof(float));
    for (int s0 = 0; s0 < n_seqs; s0 += m->B) {
        const int b = n_seqs - s0 < m->B ? n_seqs - s0 : m->B, N = b * T;
        const int32_t *x = tokens + (size_t)s0 * T;
        gpt_forward_backward(m, x, x, b, 0.0f, NULL); /* forward only; the targets are not used */
        for (int l = 0; l < L; l++) {
            const block_acts *a = &m->acts[l];
            const float s = m->ln_scale ? (float)(1.0 / sqrt(l + 1.0)) : 1.0f; /* LN_SCALE on the linears' inputs */
            accumulate(m, h->qkv + (size_t)l * d * d, a->n1, N, d, s, buf);
            accumulate(m, h->proj + (size_t)l * hd * hd, a->att_x ? a->att_x : a->att, N, hd, 1.0f, buf);
            accumulate(m, h->fc + (size_t)l * d * d, a->n2, N, d, s, buf);
            accumulate(m, h->mproj + (size_t)l * hid * hid, a->u, N, hid, 1.0f, buf);
        }
    }
    free(buf);
    m->recur_on = recur_on;
    for (int l = 0; l < L; l++) m->blk[l].parallel = par[l];
    free(par);
    for (int l = 0; l < L; l++) {
        finish(h->qkv + (size_t)l * d * d, d, (float)n_seqs);
        finish(h->proj + (size_t)l * hd * hd, hd, (float)n_seqs);
        finish(h->fc + (size_t)l * d * d, d, (float)n_seqs);
        finish(h->mproj + (size_t)l * hid * hid, hid, (float)n_seqs);
    }
    return 0;
}

int gptq_calib_tokens(const pg_config *cfg, int n_seqs, int T, int32_t **tokens, char *err, size_t errlen) {
    *tokens = NULL;
    char pat[4096], sub[PG_ERRLEN];
    snprintf(pat, sizeof(pat), "%s/fineweb_train_*.bin", cfg->data_path);
    token_stream s;
    if (stream_open(&s, pat, (int)cfg->vocab_size, sub, sizeof(sub)) != 0)
        return pg_err(err, errlen, "int6_gptq calibration needs the training shards (DATA_PATH): %s", sub);
    size_t n = (size_t)n_seqs * T;
    uint16_t *u = xmalloc(n * sizeof(uint16_t));
    int rc = stream_take(&s, n, u, sub, sizeof(sub));
    stream_close(&s);
    if (rc != 0) {
        free(u);
        return pg_err(err, errlen, "int6_gptq calibration: %s", sub);
    }
    int32_t *t = xmalloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) t[i] = u[i];
    free(u);
    *tokens = t;
    return 0;
}

int gptq_collect_train(gpt_model *m, const pg_config *cfg, gptq_hessians *h, char *err, size_t errlen) {
    memset(h, 0, sizeof(*h));
    int32_t *tok;
    const int n = (int)cfg->gptq_calib_batches;
    if (gptq_calib_tokens(cfg, n, m->T, &tok, err, errlen) != 0) return -1;
    int rc = gptq_collect(m, tok, n, h, err, errlen);
    free(tok);
    return rc;
}

int gptq_collect_statedict(const pg_config *cfg, const statedict *sd, gptq_hessians *h, char *err, size_t errlen) {
    memset(h, 0, sizeof(*h));
    const int n = (int)cfg->gptq_calib_batches, T = (int)cfg->train_seq_len;
    int32_t *tok;
    if (gptq_calib_tokens(cfg, n, T, &tok, err, errlen) != 0) return -1;
    gpt_model m;
    gpt_build(&m, cfg, backend_select(cfg->backend), n < 4 ? n : 4, T);
    char sub[PG_ERRLEN];
    int rc = gpt_from_statedict(&m, sd, "int6_gptq calibration model", sub, sizeof(sub));
    if (rc != 0) pg_err(err, errlen, "%s", sub);
    else rc = gptq_collect(&m, tok, n, h, err, errlen);
    gpt_free(&m);
    free(tok);
    return rc;
}

/* ---- GPTQ of one matrix ---- */

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
