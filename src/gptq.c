/* gptq.c: the calibration Hessians of PR #1392's full GPTQ (see gptq.h; the GPTQ of one matrix is
 * gptq_quantize in quant.c). */
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
#include "sample.h"

/* ---- Hessians ---- */

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
    /* the record's replica is purely sequential: no depth recurrence, no parallel residuals (nor
     * the lane forms of PR #1289/#1334, nor PR #187's encoder recurrence, which it never ran) */
    const int recur_on = m->recur_on, lanes = m->lanes, enc_recur = m->enc_recur;
    int *par = xmalloc((size_t)L * 2 * sizeof(int));
    m->recur_on = 0;
    m->lanes = 0;
    m->enc_recur = 0;
    for (int l = 0; l < L; l++) {
        par[l] = m->blk[l].parallel, m->blk[l].parallel = 0;
        par[L + l] = m->blk[l].lane, m->blk[l].lane = 0;
    }
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
    m->lanes = lanes;
    m->enc_recur = enc_recur;
    for (int l = 0; l < L; l++) m->blk[l].parallel = par[l], m->blk[l].lane = par[L + l];
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

int gptq_calib_generate(gpt_model *m, int n_seqs, uint64_t seed, double temperature, int32_t **tokens, char *err,
                        size_t errlen) {
    *tokens = NULL;
    const int T = m->T, V = m->V, nb_max = m->B;
    int32_t *t = xmalloc((size_t)n_seqs * T * sizeof(int32_t)), *cur = xmalloc((size_t)nb_max * sizeof(int32_t));
    float *logits = xmalloc((size_t)nb_max * V * sizeof(float));
    sample_rng *r = xmalloc((size_t)nb_max * sizeof(sample_rng));
    const int recur_on = m->recur_on;
    m->recur_on = m->recur_n > 0; /* the record generates with the recurrence active */
    int rc = 0;
    /* m->B sequences at a time; sequence s draws from stream s of seed */
    for (int s0 = 0; s0 < n_seqs && rc == 0; s0 += nb_max) {
        const int nb = n_seqs - s0 < nb_max ? n_seqs - s0 : nb_max;
        int32_t *x = t + (size_t)s0 * T; /* sequence s0 + b is x[b*T ..] */
        for (int b = 0; b < nb; b++) {
            sample_rng_stream(&r[b], seed, (uint64_t)(s0 + b));
            x[(size_t)b * T] = (int32_t)(sample_rng_uniform(&r[b]) * V); /* uniform in [0, V) */
        }
        gpt_decode_reset(m, nb);
        for (int i = 0; i + 1 < T && rc == 0; i++) {
            for (int b = 0; b < nb; b++) cur[b] = x[(size_t)b * T + i];
            gpt_decode_step(m, cur, logits);
            if (!sample_logits_finite(logits, (size_t)nb * V))
                rc = pg_err(err, errlen, "int6_gptq self-generated calibration: the model produced a non-finite logit");
            for (int b = 0; b < nb; b++)
                x[(size_t)b * T + i + 1] = sample_pick(logits + (size_t)b * V, V, temperature, 0, 1.0, &r[b]);
        }
    }
    m->recur_on = recur_on;
    free(logits);
    free(cur);
    free(r);
    if (rc != 0) {
        free(t);
        return -1;
    }
    *tokens = t;
    return 0;
}

int gptq_calibrate(gpt_model *m, const pg_config *cfg, gptq_hessians *h, void (*log)(int, const char *, ...),
                   char *err, size_t errlen) {
    memset(h, 0, sizeof(*h));
    int32_t *tok;
    const int n = (int)cfg->gptq_calib_batches, ar = !strcmp(cfg->gptq_calib, "ar");
    const double t0 = pg_now();
    if (ar) { /* PR #1392's log lines */
        if (log) log(1, "gptq:generating autoregressive calibration data (%d seqs x %d tokens, temp=%g)...", n, m->T,
                     GPTQ_AR_TEMPERATURE);
        if (gptq_calib_generate(m, n, (uint64_t)cfg->seed, GPTQ_AR_TEMPERATURE, &tok, err, errlen) != 0) return -1;
        if (log) {
            log(1, "gptq:generated %d sequences in %.1fs", n, pg_now() - t0);
            log(1, "gptq:collecting hessians from autoregressive data...");
        }
    } else if (gptq_calib_tokens(cfg, n, m->T, &tok, err, errlen) != 0)
        return -1;
    const double t1 = pg_now();
    int rc = gptq_collect(m, tok, n, h, err, errlen);
    free(tok);
    if (rc == 0 && log)
        log(1, "gptq:collected hessians for %d layers (%d distinct) from %d %s sequences of %d tokens in %.1fs", 6 * h->L,
            4 * h->L, h->n_seqs, ar ? "self-generated" : "training", h->T, pg_now() - t1);
    return rc;
}

int gptq_collect_statedict(const pg_config *cfg, const statedict *sd, gptq_hessians *h, char *err, size_t errlen) {
    memset(h, 0, sizeof(*h));
    const int n = (int)cfg->gptq_calib_batches, T = (int)cfg->train_seq_len;
    gpt_model m;
    gpt_build(&m, cfg, backend_select(cfg->backend), n < 4 ? n : 4, T);
    char sub[PG_ERRLEN];
    int rc = gpt_from_statedict(&m, sd, "int6_gptq calibration model", sub, sizeof(sub));
    if (rc != 0) pg_err(err, errlen, "%s", sub);
    else rc = gptq_calibrate(&m, cfg, h, NULL, err, errlen);
    gpt_free(&m);
    return rc;
}
