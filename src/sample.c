/* sample.c: `pgolf sample`: text generation from a packed artifact, and the incremental decoder it
 * runs on (sample.h).
 *
 * The decoder is the forward of model.c (see its header comment) for one token at a time, written
 * as plain fp32 C on a host copy of the weights. Every position's keys and values are kept per
 * layer (and per recurrence pass: a recurring layer's second pass attends over the second-pass
 * keys and values of the earlier positions, exactly as the full-sequence forward does), so a token
 * costs one pass through the layers instead of a forward over the whole context. What model.c
 * computes across positions is carried from step to step: the previous token (bigram buckets), the
 * previous position's SmearGate input, the caches. Everything else is per token. Numerics follow
 * the CPU ops (ops_cpu.c): double-accumulated RMS norms, fp32 everything else, bf16-rounded RoPE
 * tables taken from the model.
 *
 * Context: the RoPE tables and the training cover TRAIN_SEQ_LEN positions. When the context is full
 * the decoder slides: it restarts on the last TRAIN_SEQ_LEN/2 tokens (positions from 0 again, a
 * fresh window as in the sliding-window eval) and goes on. */
#include "sample.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "cmds.h"
#include "common.h"
#include "export_run.h"
#include "spm.h"
#include "statedict.h"

/* ---- which configurations the decoder implements ---- */

/* The decoder implements every feature of model.c (invalid combinations are refused by gpt_build).
 * As a guard against features added to model.c later, every parameter of the model must be one the
 * decoder reads. */
int sample_check_model(const gpt_model *m, char *err, size_t errlen) {
    static const char *const top[] = {"skip_weights", "lane_merge", "tok_emb.weight", "lm_head.weight",
                                      "bigram_hash.table.weight", "bigram_hash.proj.weight", "bigram.scale",
                                      "bigram.embed.weight", "bigram.proj.weight", "smeargate.gate", "smear.gate",
                                      "pre_enrich.0.weight", "pre_enrich.2.weight", "ve_shared.embed.weight",
                                      "ve_shared.proj.weight", "ve_shared.scale"};
    static const char *const blk[] = {"attn_scale", "mlp_scale", "resid_mix", "resid_mix_mlp", "route",
                                      "attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight",
                                      "attn.q_gain", "mlp.fc.weight", "mlp.proj.weight"};
    for (int i = 0; i < m->n_params; i++) {
        const char *n = m->params[i].name;
        int known = 0, l, k, used = 0;
        for (size_t j = 0; j < sizeof(top) / sizeof(top[0]) && !known; j++) known = !strcmp(n, top[j]);
        if (!known && sscanf(n, "blocks.%d.%n", &l, &used) == 1 && used > 0)
            for (size_t j = 0; j < sizeof(blk) / sizeof(blk[0]) && !known; j++) known = !strcmp(n + used, blk[j]);
        if (!known && sscanf(n, "recur_scales.%d%n", &k, &used) == 1) known = n[used] == 0;
        if (!known && sscanf(n, "ve_layer_scales.%d%n", &k, &used) == 1) known = n[used] == 0;
        if (!known)
            return pg_err(err, errlen, "the model has parameter %s of a feature that `pgolf sample` does not implement", n);
    }
    return 0;
}

/* ---- the decoder ---- */

struct pg_decoder {
    /* shape and features (from the model) */
    int V, d, L, H, Hk, D, hidden, n_enc, n_skip, rope_dims, T;
    float softcap, slope;
    int smear, bigram, nb, db, xsa_from, ln_scale, leaky, ve_dim, recur_n, recur_on;
    int recur_layer[8];
    int pre_enrich, enc_recur, lanes, par_from;
    /* host copies: the parameter arena and the RoPE tables (T, rope_dims/2) */
    float *w, *rope_cos, *rope_sin;
    /* views into w (NULL where the feature is off) */
    const float *tok_emb, *head, *skip_weights, *smear_gate, *bigram_table, *bigram_proj, *bigram_scale;
    const float *ve_embed, *ve_proj, *ve_scale, *pe_w1, *pe_w2, *lane_merge;
    const float *recur_scale[8];
    block_params *blk;
    /* state across positions */
    int pos;
    int32_t prev_tok;
    float *smear_prev; /* (d) the previous position's SmearGate input */
    int n_pass;        /* key/value caches: the L layers, the recur_n second passes, PR #187's n_enc first passes */
    float **kc, **vc;  /* per pass: (T, Hk*D) */
    /* scratch of one token */
    float *e, *mid, *x0, *ve, *bg, *bgp, *pe_h, *nf, *er;
    float *lay_in, *lay_in2, *lay_out, *lay_out2, *rec_out, *ep_out; /* (L, d) (ep_out: (n_enc, d)) */
    float *xm, *n1, *q, *k, *v, *att, *a, *xa, *xm2, *n2, *h, *mo, *p;
};

/* pass (cache) indices */
static int pass_main(const pg_decoder *dc, int l) { (void)dc; return l; }
static int pass_recur(const pg_decoder *dc, int k) { return dc->L + k; }
static int pass_enc_first(const pg_decoder *dc, int l) { return dc->L + dc->recur_n + l; }

/* ---- fp32 building blocks (as ops_cpu.c computes them) ---- */

/* 1/sqrt(mean(x^2) + FLT_EPSILON), the sum of squares in double */
static float rms_rstd(const float *x, int C) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    return (float)(1.0 / sqrt(ss / C + FLT_EPSILON));
}

static void rmsnorm(float *y, const float *x, int C) {
    const float r = rms_rstd(x, C);
    for (int c = 0; c < C; c++) y[c] = x[c] * r;
}

/* y (OUT) = W (OUT, IN) x (IN) */
static void matvec(float *y, const float *W, const float *x, int IN, int OUT) {
    for (int o = 0; o < OUT; o++) {
        const float *wr = W + (size_t)o * IN;
        float s = 0;
        for (int i = 0; i < IN; i++) s += wr[i] * x[i];
        y[o] = s;
    }
}

static void scale_vec(float *x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

static float sigmoidf_(float g) { return 1.0f / (1.0f + expf(-g)); }

/* xm = mix[0]*x + mix[1]*x0 (mix (2, d)) */
static void mix(float *xm, const float *x, const float *x0, const float *mx, int d) {
    for (int c = 0; c < d; c++) xm[c] = mx[c] * x[c] + mx[d + c] * x0[c];
}

/* per-head RMSNorm, rotate-half RoPE on the first rope_dims dims at position t, optional gain */
static void qk_prep(float *x, int nh, const float *gain, const pg_decoder *dc, int t) {
    const int D = dc->D, half = dc->rope_dims / 2;
    const float *cs = dc->rope_cos + (size_t)t * half, *sn = dc->rope_sin + (size_t)t * half;
    for (int h = 0; h < nh; h++) {
        float *xh = x + (size_t)h * D;
        rmsnorm(xh, xh, D);
        for (int j = 0; j < half; j++) {
            const float x1 = xh[j], x2 = xh[j + half];
            xh[j] = x1 * cs[j] + x2 * sn[j];
            xh[j + half] = -x1 * sn[j] + x2 * cs[j];
        }
        if (gain) scale_vec(xh, D, gain[h]);
    }
}

/* the bigram bucket of token cur at position t after token prev (model.c's bigram_buckets) */
static int32_t bigram_bucket(const pg_decoder *dc, int32_t prev, int32_t cur, int t) {
    if (dc->bigram == 1) { /* PR #65, PR #187 */
        const int64_t p = t ? prev : 0;
        return (int32_t)((p * 92821 + cur) % dc->nb);
    }
    if (t == 0) return dc->nb - 1; /* PR #315: the reserved bucket */
    const int32_t mod = dc->nb - 1;
    const int32_t hsh = (int32_t)((36313u * (uint32_t)cur) ^ (27191u * (uint32_t)prev));
    const int32_t r = hsh % mod;
    return r < 0 ? r + mod : r;
}

/* ---- construction ---- */

/* the host view of a master pointer of m (NULL stays NULL) */
static const float *hv(const pg_decoder *dc, const gpt_model *m, const float *p) {
    return p ? dc->w + (p - m->w) : NULL;
}
static float *mhv(const pg_decoder *dc, const gpt_model *m, const float *p) { return (float *)hv(dc, m, p); }

static float *zalloc(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }

pg_decoder *decoder_new(const gpt_model *m) {
    pg_decoder *dc = xcalloc(1, sizeof(*dc));
    dc->V = m->V, dc->d = m->d, dc->L = m->L, dc->H = m->H, dc->Hk = m->Hk, dc->D = m->D, dc->hidden = m->hidden;
    dc->n_enc = m->n_enc, dc->n_skip = m->n_skip, dc->rope_dims = m->rope_dims, dc->T = m->T;
    dc->softcap = m->softcap, dc->slope = m->slope, dc->smear = m->smear, dc->bigram = m->bigram, dc->nb = m->nb;
    dc->db = m->db, dc->xsa_from = m->xsa_from, dc->ln_scale = m->ln_scale, dc->leaky = m->leaky;
    dc->ve_dim = m->ve_dim, dc->recur_n = m->recur_n, dc->recur_on = m->recur_on;
    for (int k = 0; k < m->recur_n; k++) dc->recur_layer[k] = m->recur_layer[k];
    dc->pre_enrich = m->pre_enrich, dc->enc_recur = m->enc_recur, dc->lanes = m->lanes, dc->par_from = m->par_from;

    dc->w = xmalloc(m->n_floats * sizeof(float));
    m->ops->to_host(dc->w, m->w, m->n_floats * sizeof(float));
    const size_t rope_n = (size_t)m->T * (m->rope_dims / 2);
    dc->rope_cos = zalloc(rope_n);
    dc->rope_sin = zalloc(rope_n);
    m->ops->to_host(dc->rope_cos, m->rope_cos, rope_n * sizeof(float));
    m->ops->to_host(dc->rope_sin, m->rope_sin, rope_n * sizeof(float));

    dc->tok_emb = hv(dc, m, m->tok_emb);
    dc->head = m->tied ? dc->tok_emb : hv(dc, m, m->lm_head);
    dc->skip_weights = hv(dc, m, m->skip_weights);
    dc->smear_gate = hv(dc, m, m->smear_gate);
    dc->bigram_table = hv(dc, m, m->bigram_table);
    dc->bigram_proj = hv(dc, m, m->bigram_proj);
    dc->bigram_scale = hv(dc, m, m->bigram_scale);
    dc->ve_embed = hv(dc, m, m->ve_embed);
    dc->ve_proj = hv(dc, m, m->ve_proj);
    dc->ve_scale = hv(dc, m, m->ve_scale);
    dc->pe_w1 = hv(dc, m, m->pe_w1);
    dc->pe_w2 = hv(dc, m, m->pe_w2);
    dc->lane_merge = hv(dc, m, m->lane_merge);
    for (int k = 0; k < m->recur_n; k++) dc->recur_scale[k] = hv(dc, m, m->recur_scale[k]);
    dc->blk = xcalloc((size_t)m->L, sizeof(block_params));
    for (int l = 0; l < m->L; l++) {
        const block_params *s = &m->blk[l];
        block_params *b = &dc->blk[l];
        b->c_q = mhv(dc, m, s->c_q), b->c_k = mhv(dc, m, s->c_k), b->c_v = mhv(dc, m, s->c_v);
        b->proj = mhv(dc, m, s->proj), b->q_gain = mhv(dc, m, s->q_gain), b->fc = mhv(dc, m, s->fc);
        b->mproj = mhv(dc, m, s->mproj), b->attn_scale = mhv(dc, m, s->attn_scale);
        b->mlp_scale = mhv(dc, m, s->mlp_scale), b->resid_mix = mhv(dc, m, s->resid_mix);
        b->ve_scale = mhv(dc, m, s->ve_scale);
        b->resid_mix_mlp = mhv(dc, m, s->resid_mix_mlp), b->route = mhv(dc, m, s->route);
        b->parallel = s->parallel;
        b->lane = s->lane;
    }

    const size_t d = (size_t)dc->d, hd = (size_t)dc->H * dc->D, kvd = (size_t)dc->Hk * dc->D, L = (size_t)dc->L;
    dc->n_pass = dc->L + dc->recur_n + (dc->enc_recur ? dc->n_enc : 0);
    dc->kc = xcalloc((size_t)dc->n_pass, sizeof(float *));
    dc->vc = xcalloc((size_t)dc->n_pass, sizeof(float *));
    for (int i = 0; i < dc->n_pass; i++) {
        dc->kc[i] = zalloc((size_t)dc->T * kvd);
        dc->vc[i] = zalloc((size_t)dc->T * kvd);
    }
    float **dbufs[] = {&dc->smear_prev, &dc->e, &dc->mid, &dc->x0, &dc->bgp, &dc->nf, &dc->er, &dc->xm,
                       &dc->n1,         &dc->a, &dc->xa,  &dc->xm2, &dc->n2, &dc->mo};
    for (size_t i = 0; i < sizeof(dbufs) / sizeof(dbufs[0]); i++) *dbufs[i] = zalloc(d);
    float **lbufs[] = {&dc->lay_in, &dc->lay_in2, &dc->lay_out, &dc->lay_out2, &dc->rec_out};
    for (size_t i = 0; i < sizeof(lbufs) / sizeof(lbufs[0]); i++) *lbufs[i] = zalloc(L * d);
    dc->ep_out = zalloc((size_t)dc->n_enc * d);
    dc->ve = zalloc(kvd);
    dc->bg = zalloc((size_t)(dc->db > 0 ? dc->db : 1));
    dc->pe_h = zalloc((size_t)dc->pre_enrich);
    dc->q = zalloc(hd);
    dc->att = zalloc(hd);
    dc->k = zalloc(kvd);
    dc->v = zalloc(kvd);
    dc->h = zalloc((size_t)dc->hidden);
    dc->p = zalloc((size_t)dc->T);
    decoder_reset(dc);
    return dc;
}

void decoder_free(pg_decoder *dc) {
    if (!dc) return;
    for (int i = 0; i < dc->n_pass; i++) {
        free(dc->kc[i]);
        free(dc->vc[i]);
    }
    free(dc->kc);
    free(dc->vc);
    float *bufs[] = {dc->w,      dc->rope_cos, dc->rope_sin, dc->smear_prev, dc->e,       dc->mid,     dc->x0,
                     dc->ve,     dc->bg,       dc->bgp,      dc->pe_h,       dc->nf,      dc->er,      dc->lay_in,
                     dc->lay_in2, dc->lay_out, dc->lay_out2, dc->rec_out,    dc->ep_out,  dc->xm,      dc->n1,
                     dc->q,      dc->k,        dc->v,        dc->att,        dc->a,       dc->xa,      dc->xm2,
                     dc->n2,     dc->h,        dc->mo,       dc->p};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    free(dc->blk);
    free(dc);
}

void decoder_reset(pg_decoder *dc) {
    dc->pos = 0;
    dc->prev_tok = 0;
    memset(dc->smear_prev, 0, (size_t)dc->d * sizeof(float));
}

int decoder_pos(const pg_decoder *dc) { return dc->pos; }
int decoder_capacity(const pg_decoder *dc) { return dc->T; }

/* ---- one token ---- */

/* x0 (d) of token tok at position t (embed_fwd): embedding (+ bigram), then SmearGate before the
 * norm (PR #65, #187), PR #187's pre-enrichment, the embedding norm, SmearGate after it (PR #315) */
static void embed_step(pg_decoder *dc, int32_t tok, int t) {
    const int d = dc->d;
    float *e = dc->e;
    memcpy(e, dc->tok_emb + (size_t)tok * d, (size_t)d * sizeof(float));
    if (dc->bigram) {
        const int32_t b = bigram_bucket(dc, dc->prev_tok, tok, t);
        const float *row = dc->bigram_table + (size_t)b * dc->db;
        if (dc->bigram_proj) {
            matvec(dc->bgp, dc->bigram_proj, row, dc->db, d);
            row = dc->bgp;
        }
        for (int c = 0; c < d; c++) e[c] += dc->bigram_scale ? dc->bigram_scale[0] * row[c] : row[c];
    }
    /* smear(y)[t] = a*y[t] + (1-a)*y[t-1] (y[-1] = 0), a = sigmoid(gate) (before the norm) or
     * 1 - sigmoid(gate) (after it); y[t-1] is kept in smear_prev */
    const float *pre = e; /* the embedding norm's input */
    if (dc->smear == 1) {
        for (int c = 0; c < d; c++) {
            const float a = sigmoidf_(dc->smear_gate[c]);
            dc->mid[c] = a * e[c] + (t ? (1.0f - a) * dc->smear_prev[c] : 0.0f);
        }
        memcpy(dc->smear_prev, e, (size_t)d * sizeof(float));
        pre = dc->mid;
    }
    if (dc->pre_enrich) { /* W2 gelu(W1 pre), gelu the exact erf form */
        matvec(dc->pe_h, dc->pe_w1, pre, d, dc->pre_enrich);
        for (int i = 0; i < dc->pre_enrich; i++) {
            const float x = dc->pe_h[i];
            dc->pe_h[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
        }
        matvec(dc->nf, dc->pe_w2, dc->pe_h, dc->pre_enrich, d); /* nf: free until the head */
        pre = dc->nf;
    }
    if (dc->smear == 2) {
        float *y = dc->e; /* e is no longer needed: it takes rmsnorm(pre) */
        rmsnorm(y, pre, d);
        for (int c = 0; c < d; c++) {
            const float a = 1.0f - sigmoidf_(dc->smear_gate[c]);
            dc->x0[c] = a * y[c] + (t ? (1.0f - a) * dc->smear_prev[c] : 0.0f);
        }
        memcpy(dc->smear_prev, y, (size_t)d * sizeof(float));
    } else
        rmsnorm(dc->x0, pre, d);
}

/* the attention branch of block l at position t on the stream x, mixed with x0 by mx, keys/values
 * in pass cache `pass`: xm = mix(x, x0), n1 = rmsnorm(xm), a = proj(attn(s*n1)) */
static void attn_step(pg_decoder *dc, int l, int pass, const float *x, const float *mx, int t) {
    const block_params *p = &dc->blk[l];
    const int d = dc->d, D = dc->D, H = dc->H, Hk = dc->Hk, hd = H * D, kvd = Hk * D, grp = H / Hk;
    const float s = dc->ln_scale ? (float)(1.0 / sqrt(l + 1.0)) : 1.0f;
    mix(dc->xm, x, dc->x0, mx, d);
    rmsnorm(dc->n1, dc->xm, d);
    /* q, k, v = s * n1 W^T; v += ve_layer_scale * ve; q, k = rope(rmsnorm_head(.)), q *= q_gain */
    matvec(dc->q, p->c_q, dc->n1, d, hd);
    matvec(dc->k, p->c_k, dc->n1, d, kvd);
    matvec(dc->v, p->c_v, dc->n1, d, kvd);
    if (s != 1.0f) {
        scale_vec(dc->q, hd, s);
        scale_vec(dc->k, kvd, s);
        scale_vec(dc->v, kvd, s);
    }
    if (p->ve_scale)
        for (int i = 0; i < kvd; i++) dc->v[i] += p->ve_scale[0] * dc->ve[i];
    qk_prep(dc->q, H, p->q_gain, dc, t);
    qk_prep(dc->k, Hk, NULL, dc, t);
    float *K = dc->kc[pass], *Vc = dc->vc[pass];
    memcpy(K + (size_t)t * kvd, dc->k, (size_t)kvd * sizeof(float));
    memcpy(Vc + (size_t)t * kvd, dc->v, (size_t)kvd * sizeof(float));
    /* causal attention over positions 0..t, scale 1/sqrt(D); query head h reads KV head h/grp */
    const float scale = 1.0f / sqrtf((float)D);
    for (int h = 0; h < H; h++) {
        const float *qh = dc->q + (size_t)h * D;
        const int kh = h / grp;
        float mxs = -INFINITY;
        for (int j = 0; j <= t; j++) {
            const float *kj = K + (size_t)j * kvd + (size_t)kh * D;
            float dot = 0;
            for (int i = 0; i < D; i++) dot += qh[i] * kj[i];
            dc->p[j] = scale * dot;
            if (dc->p[j] > mxs) mxs = dc->p[j];
        }
        double sum = 0;
        for (int j = 0; j <= t; j++) {
            dc->p[j] = expf(dc->p[j] - mxs);
            sum += dc->p[j];
        }
        const float inv = (float)(1.0 / sum);
        float *oh = dc->att + (size_t)h * D;
        memset(oh, 0, (size_t)D * sizeof(float));
        for (int j = 0; j <= t; j++) {
            const float pj = dc->p[j] * inv;
            const float *vj = Vc + (size_t)j * kvd + (size_t)kh * D;
            for (int i = 0; i < D; i++) oh[i] += pj * vj[i];
        }
        if (l >= dc->xsa_from) { /* XSA: remove the component along this token's own value */
            const float *vh = dc->v + (size_t)kh * D;
            double ss = 0, od = 0;
            for (int i = 0; i < D; i++) ss += (double)vh[i] * vh[i];
            const float vinv = 1.0f / fmaxf(sqrtf((float)ss), 1e-12f);
            for (int i = 0; i < D; i++) od += (double)oh[i] * vh[i];
            const float cf = (float)od * vinv * vinv;
            for (int i = 0; i < D; i++) oh[i] -= cf * vh[i];
        }
    }
    matvec(dc->a, p->proj, dc->att, hd, d);
}

/* the MLP branch of block l on its (normalised) input: mo = act(s * in Wfc^T) Wp^T */
static void mlp_step(pg_decoder *dc, int l, const float *in) {
    const block_params *p = &dc->blk[l];
    const float s = dc->ln_scale ? (float)(1.0 / sqrt(l + 1.0)) : 1.0f;
    matvec(dc->h, p->fc, in, dc->d, dc->hidden);
    for (int i = 0; i < dc->hidden; i++) {
        float x = dc->h[i];
        if (s != 1.0f) x *= s;
        const float r = x > 0 ? x : (dc->leaky ? dc->slope * x : 0.0f);
        dc->h[i] = r * r;
    }
    matvec(dc->mo, p->mproj, dc->h, dc->hidden, dc->d);
}

/* block l on the stream x: xa = xm + attn_scale*a; out = xa + mlp_scale*mlp(rmsnorm(xa)), or
 * mlp(n1) in a parallel layer (PR #1392's sum) */
static void block_step(pg_decoder *dc, int l, int pass, const float *x, float *out, int t) {
    const block_params *p = &dc->blk[l];
    const int d = dc->d;
    attn_step(dc, l, pass, x, p->resid_mix, t);
    for (int c = 0; c < d; c++) dc->xa[c] = dc->xm[c] + p->attn_scale[c] * dc->a[c];
    const float *in = dc->n1;
    if (!p->parallel) {
        rmsnorm(dc->n2, dc->xa, d);
        in = dc->n2;
    }
    mlp_step(dc, l, in);
    for (int c = 0; c < d; c++) out[c] = dc->xa[c] + p->mlp_scale[c] * dc->mo[c];
}

/* lane block l on the attention lane xa and the MLP lane xb (model.c's lane_block_fwd):
 *   PR #1289: xa' = xa + r0*(sa*attn(rmsnorm(mix(xa, x0)))) + r2*(sm*m), xb' = xb + r1*(sa*a) + r3*(sm*m),
 *             m = mlp(rmsnorm(mix_mlp(xb, x0)))
 *   PR #1334: xa' = xia + sa*attn(rmsnorm(xia)), xia = mix(xa, x0); xb' = xb + sm*mlp(rmsnorm(xb)) */
static void lane_step(pg_decoder *dc, int l, const float *xa, const float *xb, float *oa, float *ob, int t) {
    const block_params *p = &dc->blk[l];
    const int d = dc->d;
    attn_step(dc, l, pass_main(dc, l), xa, p->resid_mix, t);
    if (dc->lanes == 1) {
        mix(dc->xm2, xb, dc->x0, p->resid_mix_mlp, d);
        rmsnorm(dc->n2, dc->xm2, d);
        mlp_step(dc, l, dc->n2);
        const float *r = p->route, *sa = p->attn_scale, *sm = p->mlp_scale;
        for (int c = 0; c < d; c++) {
            oa[c] = xa[c] + r[0] * (sa[c] * dc->a[c]) + r[2] * (sm[c] * dc->mo[c]);
            ob[c] = xb[c] + r[1] * (sa[c] * dc->a[c]) + r[3] * (sm[c] * dc->mo[c]);
        }
    } else {
        for (int c = 0; c < d; c++) oa[c] = dc->xm[c] + p->attn_scale[c] * dc->a[c];
        rmsnorm(dc->n2, xb, d);
        mlp_step(dc, l, dc->n2);
        for (int c = 0; c < d; c++) ob[c] = xb[c] + p->mlp_scale[c] * dc->mo[c];
    }
}

/* index k of encoder layer l in the recurrence list while recurrence runs, else -1 */
static int recur_k(const pg_decoder *dc, int l) {
    if (!dc->recur_on || l >= dc->n_enc) return -1;
    for (int k = 0; k < dc->recur_n; k++)
        if (dc->recur_layer[k] == l) return k;
    return -1;
}

void decoder_step(pg_decoder *dc, int32_t tok, float *logits) {
    PG_CHECK(dc->pos < dc->T && tok >= 0 && tok < dc->V);
    const int t = dc->pos, d = dc->d, kvd = dc->Hk * dc->D;
    embed_step(dc, tok, t);
    if (dc->ve_dim) { /* ve = ve_shared.scale * proj(ve_embed[tok]) */
        const float *row = dc->ve_embed + (size_t)tok * dc->ve_dim;
        if (dc->ve_proj) matvec(dc->ve, dc->ve_proj, row, dc->ve_dim, kvd);
        else memcpy(dc->ve, row, (size_t)kvd * sizeof(float));
        for (int i = 0; i < kvd; i++) dc->ve[i] = 0.0f + dc->ve_scale[0] * dc->ve[i];
    }
    /* cur: the stream entering layer l (the attention lane in lane blocks); cur2: the MLP lane */
    const float *cur = dc->x0, *cur2 = NULL;
    if (dc->enc_recur) { /* PR #187: a first encoder pass (skips discarded), rmsnorm, then the layers */
        for (int l = 0; l < dc->n_enc; l++) {
            float *o = dc->ep_out + (size_t)l * d;
            block_step(dc, l, pass_enc_first(dc, l), cur, o, t);
            cur = o;
        }
        rmsnorm(dc->er, cur, d);
        cur = dc->er;
    }
    for (int l = 0; l < dc->L; l++) {
        const int j = l - dc->n_enc;
        const block_params *p = &dc->blk[l];
        /* U-Net skip from the (first) pass of encoder layer n_enc-1-j; PR #1289 adds it to both
         * lanes, PR #1334 only up to its first lane block */
        if (j >= 0 && j < dc->n_skip && !(dc->lanes == 2 && l > dc->par_from)) {
            const float *sw = dc->skip_weights + (size_t)j * d, *eo = dc->lay_out + (size_t)(dc->n_enc - 1 - j) * d;
            float *xin = dc->lay_in + (size_t)l * d;
            for (int c = 0; c < d; c++) xin[c] = cur[c] + sw[c] * eo[c];
            cur = xin;
            if (p->lane && l > dc->par_from && dc->lanes == 1) {
                float *xin2 = dc->lay_in2 + (size_t)l * d;
                for (int c = 0; c < d; c++) xin2[c] = cur2[c] + sw[c] * eo[c];
                cur2 = xin2;
            }
        }
        float *out = dc->lay_out + (size_t)l * d;
        if (p->lane) {
            if (l == dc->par_from) cur2 = cur; /* the lanes start as one stream */
            float *out2 = dc->lay_out2 + (size_t)l * d;
            lane_step(dc, l, cur, cur2, out, out2, t);
            cur2 = out2;
        } else
            block_step(dc, l, pass_main(dc, l), cur, out, t);
        cur = out;
        const int k = recur_k(dc, l);
        if (k >= 0) { /* second pass on the output, blended: x1 + r*(block(x1) - x1) */
            float *x2 = dc->rec_out + (size_t)l * d;
            block_step(dc, l, pass_recur(dc, k), out, x2, t);
            const float *r = dc->recur_scale[k];
            for (int c = 0; c < d; c++) x2[c] = out[c] + r[c] * (x2[c] - out[c]);
            cur = x2;
        }
    }
    if (dc->lanes) { /* the lanes' blend: lane_m + m*(lane_a - lane_m) */
        float *x = dc->er; /* free again */
        const float mg = dc->lane_merge[0];
        for (int c = 0; c < d; c++) x[c] = cur2[c] + mg * (cur[c] - cur2[c]);
        cur = x;
    }
    /* head: rmsnorm, tied or untied projection, softcap */
    rmsnorm(dc->nf, cur, d);
    matvec(logits, dc->head, dc->nf, d, dc->V);
    for (int v = 0; v < dc->V; v++) logits[v] = dc->softcap * tanhf(logits[v] / dc->softcap);
    dc->prev_tok = tok;
    dc->pos++;
}

/* ---- sampling ---- */

static uint64_t splitmix64_(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sample_rng_seed(sample_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64_(&seed);
}

static uint64_t rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double sample_rng_uniform(sample_rng *r) {
    uint64_t *s = r->s;
    const uint64_t res = rotl_(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl_(s[3], 45);
    return (double)(res >> 11) * (1.0 / 9007199254740992.0);
}

static const float *g_sort_logits; /* qsort context (one sampler at a time) */
static int by_logit_desc(const void *a, const void *b) {
    const int i = *(const int *)a, j = *(const int *)b;
    const float li = g_sort_logits[i], lj = g_sort_logits[j];
    if (li != lj) return li > lj ? -1 : 1;
    return i - j;
}

int sample_pick(const float *logits, int V, double temperature, int top_k, sample_rng *r) {
    if (temperature <= 0) { /* greedy */
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    int *ids = xmalloc((size_t)V * sizeof(int));
    for (int v = 0; v < V; v++) ids[v] = v;
    int n = V;
    if (top_k > 0 && top_k < V) {
        g_sort_logits = logits;
        qsort(ids, (size_t)V, sizeof(int), by_logit_desc);
        n = top_k;
    }
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmax(mx, (double)logits[ids[i]]);
    double *pr = xmalloc((size_t)n * sizeof(double)), sum = 0;
    for (int i = 0; i < n; i++) sum += pr[i] = exp(((double)logits[ids[i]] - mx) / temperature);
    const double u = sample_rng_uniform(r) * sum;
    double acc = 0;
    int pick = ids[n - 1];
    for (int i = 0; i < n; i++) {
        acc += pr[i];
        if (u < acc) {
            pick = ids[i];
            break;
        }
    }
    free(pr);
    free(ids);
    return pick;
}

/* ---- the command ---- */

static void sample_usage(void) {
    printf("usage: pgolf sample ARTIFACT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]\n"
           "                    [--seed S] [--tokenizer PATH]\n\n"
           "Generates text with the model packed in ARTIFACT (a pgolf artifact). The prompt is encoded with\n"
           "the SentencePiece tokenizer (--tokenizer, else the artifact's TOKENIZER_PATH; its vocabulary must\n"
           "be the model's) and fed after a BOS token, as every document of the training data starts; then N\n"
           "tokens are generated one at a time with a key/value cache (CPU, fp32) and the prompt plus the\n"
           "generated text is printed on stdout. Generation stops early at a BOS or EOS token (a document\n"
           "ends). One summary line goes to stderr.\n\n"
           "  --prompt TEXT       text to continue (default: empty, the start of a document)\n"
           "  --tokens N          tokens to generate (default 128; 0: print the prompt only)\n"
           "  --temperature T     softmax temperature of the softcapped logits; 0: greedy (default 1.0)\n"
           "  --top-k K           sample among the K most likely tokens; 0: all (default 0)\n"
           "  --seed S            seed of the sampler's generator (default 1337): the same seed, prompt and\n"
           "                      settings give the same text\n"
           "  --tokenizer PATH    SentencePiece .model file\n\n"
           "The context is TRAIN_SEQ_LEN tokens (the positions the model was trained on). When it is full\n"
           "the decoder slides: it restarts on the last TRAIN_SEQ_LEN/2 tokens (positions from 0, as the\n"
           "sliding-window eval does) and goes on. Depth recurrence (RECUR_LAYERS) runs, as in the records'\n"
           "final evaluation. The configuration comes from the artifact, then the environment.\n");
}

static long long parse_int(const char *opt, const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) pg_die("sample: %s expects an integer, got '%s'", opt, s);
    return v;
}

static double parse_float(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) pg_die("sample: %s expects a number, got '%s'", opt, s);
    return v;
}

/* Push token tok into the context (sliding when full) and compute the next token's logits. hist
 * holds every token so far, tok being hist[n-1]. */
static void ctx_push(pg_decoder *dc, const int32_t *hist, long n, float *logits, long *slides) {
    const int T = decoder_capacity(dc);
    if (decoder_pos(dc) >= T) {
        const int keep = T / 2 > 0 ? T / 2 : 1; /* the window after the push */
        decoder_reset(dc);
        for (long i = n - keep; i < n - 1; i++) decoder_step(dc, hist[i], logits);
        (*slides)++;
    }
    decoder_step(dc, hist[n - 1], logits);
}

int cmd_sample(int argc, char **argv) {
    const char *path = NULL, *prompt = "", *tok_path = NULL;
    long long n_tokens = 128, top_k = 0;
    double temperature = 1.0;
    uint64_t seed = 1337;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sample_usage();
            return 0;
        }
        const int has_val = i + 1 < argc;
        if (!strcmp(a, "--prompt") || !strcmp(a, "--tokens") || !strcmp(a, "--temperature") || !strcmp(a, "--top-k") ||
            !strcmp(a, "--seed") || !strcmp(a, "--tokenizer")) {
            if (!has_val) pg_die("sample: %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--prompt")) prompt = v;
            else if (!strcmp(a, "--tokenizer")) tok_path = v;
            else if (!strcmp(a, "--tokens")) {
                n_tokens = parse_int(a, v);
                if (n_tokens < 0 || n_tokens > 100000000) pg_die("sample: --tokens must be in 0..100000000, got %s", v);
            } else if (!strcmp(a, "--top-k")) {
                top_k = parse_int(a, v);
                if (top_k < 0) pg_die("sample: --top-k must be >= 0 (0: off), got %s", v);
            } else if (!strcmp(a, "--temperature")) {
                temperature = parse_float(a, v);
                if (temperature < 0) pg_die("sample: --temperature must be >= 0 (0: greedy), got %s", v);
            } else {
                long long s = parse_int(a, v);
                if (s < 0) pg_die("sample: --seed must be >= 0, got %s", v);
                seed = (uint64_t)s;
            }
        } else if (a[0] == '-' && a[1]) pg_die("sample: unknown option '%s' (see `pgolf sample --help`)", a);
        else if (path) pg_die("sample: more than one artifact given");
        else path = a;
    }
    if (!path) pg_die("sample: no artifact given (see `pgolf sample --help`)");

    /* the model, as `pgolf eval` rebuilds it: stored configuration (then the environment), tensors */
    char err[PG_ERRLEN];
    artifact art;
    if (artifact_read(path, &art, err, sizeof(err)) != 0) pg_die("%s", err);
    pg_config cfg;
    if (artifact_config(&art, &cfg, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
    artifact_free(&art);
    statedict sd;
    artifact_sizes asz;
    if (export_load_artifact(path, &sd, &asz, err, sizeof(err)) != 0) pg_die("%s", err);
    const int tok_given = tok_path != NULL;
    if (!tok_path) tok_path = cfg.tokenizer_path; /* TOKENIZER_PATH (not stored in artifacts) */
    spm_model *sp = spm_load(tok_path, err, sizeof(err));
    if (!sp) pg_die("%s%s", err, tok_given ? "" : " (name the tokenizer with --tokenizer PATH or TOKENIZER_PATH)");
    const int V = (int)cfg.vocab_size;
    if (spm_vocab_size(sp) != V)
        pg_die("%s: tokenizer vocabulary %d differs from the model's VOCAB_SIZE %d", tok_path, spm_vocab_size(sp), V);
    const int bos = spm_bos_id(sp), eos = spm_eos_id(sp);
    if (bos < 0 || bos >= V) pg_die("%s: the tokenizer has no BOS piece (bos_id %d)", tok_path, bos);

    gpt_model model;
    gpt_build(&model, &cfg, &pg_cpu_ops, 1, (int)cfg.train_seq_len);
    if (sample_check_model(&model, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
    if (gpt_from_statedict(&model, &sd, path, err, sizeof(err)) != 0) pg_die("%s", err);
    sd_free(&sd);
    model.recur_on = model.recur_n > 0; /* the records' final evaluation runs the recurrence */
    pg_decoder *dc = decoder_new(&model);
    gpt_free(&model);

    int32_t *pids = NULL;
    long np = spm_encode(sp, prompt, strlen(prompt), &pids, err, sizeof(err));
    if (np < 0) pg_die("sample: --prompt: %s", err);
    const long cap = 1 + np + (long)n_tokens;
    int32_t *hist = xmalloc((size_t)cap * sizeof(int32_t));
    long n = 0, slides = 0;
    hist[n++] = bos;
    for (long i = 0; i < np; i++) hist[n++] = pids[i];
    free(pids);
    float *logits = xmalloc((size_t)V * sizeof(float));
    sample_rng rng;
    sample_rng_seed(&rng, seed);
    const double t0 = pg_now();
    for (long i = 1; i <= n; i++) ctx_push(dc, hist, i, logits, &slides);
    const long n_prompt = n;
    const char *stop = "length";
    for (long g = 0; g < n_tokens; g++) {
        for (int v = 0; v < V; v++)
            if (!isfinite(logits[v])) pg_die("%s: the model produced a non-finite logit", path);
        const int next = sample_pick(logits, V, temperature, top_k > V ? V : (int)top_k, &rng);
        if (next == bos || next == eos) {
            stop = next == bos ? "BOS" : "EOS";
            break;
        }
        hist[n++] = next;
        if (g + 1 < n_tokens) ctx_push(dc, hist, n, logits, &slides);
    }
    const double dt = pg_now() - t0;
    size_t tl = 0;
    char *text = spm_decode(sp, hist + 1, (size_t)(n - 1), &tl, err, sizeof(err));
    if (!text) pg_die("sample: %s", err);
    fwrite(text, 1, tl, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "sample: prompt %ld tokens (with BOS), generated %ld tokens (stop: %s), %ld context slides, %.1f tokens/s\n",
            n_prompt, n - n_prompt, stop, slides, (double)(n - 1) / (dt > 1e-9 ? dt : 1e-9));
    free(text);
    free(logits);
    free(hist);
    decoder_free(dc);
    spm_free(sp);
    config_free(&cfg);
    return 0;
}
