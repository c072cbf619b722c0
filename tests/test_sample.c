/* test_sample.c: the incremental decoding of `pgolf sample` (model.c's gpt_decode_step, CPU backend)
 * against the full-sequence forward, the attn_decode op against attn_fwd, and the sampler. For
 * configurations that together switch on every model feature, a random token sequence is fed one
 * token at a time; at every position the decoder's log-softmax probability of the next token must
 * equal minus the forward's per-token loss (gpt_forward_backward, grad_scale 0) within 1e-4
 * (absolute, in nats). Weights are random (randomize_weights), so no zero-initialised table or
 * projection hides a term. tests/test_cuda.c runs the same comparison on the CUDA backend. */
#include <stdlib.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
#include "../src/sample.h"
#include "model_forms.h"
#include "ref_common.h"
#include "test.h"

#ifndef SAMPLE_TOL
#define SAMPLE_TOL 1e-4
#endif

/* log p(y) from softcapped logits (V) */
static double log_prob(const float *logits, int V, int32_t y) {
    double mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, logits[v]);
    for (int v = 0; v < V; v++) s += exp((double)logits[v] - mx);
    return (double)logits[y] - mx - log(s);
}

/* *worst: max over positions of |decoder log p(y_t) - (-loss_t)| (NaN if any is); -1 on setup
 * failure (msg in err). nb sequences are decoded together, in a model of nb + 1 sequences (the
 * forward runs nb). Between the forward and the decoding a training forward and backward run on other
 * tokens, so the decoder starts from the activations and QAT state a training step leaves. */
static int decoder_vs_forward(const model_form *sc, uint64_t seed, int recur_on, int nb, double *worst_out, char *err,
                              size_t n) {
    pg_config c;
    if (model_form_config(&c, sc, err, n) != 0) return -1;
    const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
    const size_t N = (size_t)nb * T;
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, nb + 1, T);
    randomize_weights(&m, seed);
    m.recur_on = recur_on && m.recur_n > 0;
    int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t));
    int32_t *x2 = xmalloc(N * sizeof(int32_t)), *tok = xmalloc((size_t)nb * sizeof(int32_t));
    rng_s = seed * 7 + 1;
    random_tokens(x, N, V);
    for (size_t i = 0; i < N; i++) y[i] = (i + 1) % T ? x[i + 1] : (int32_t)(urand() * V) % V;
    float *loss = xmalloc(N * sizeof(float)), *logits = xmalloc((size_t)nb * V * sizeof(float));
    gpt_forward_backward(&m, x, y, nb, 0.0f, loss);
    random_tokens(x2, N, V);
    gpt_forward_backward(&m, x2, y, nb, 1.0f, NULL); /* a training forward and backward (weights unchanged) */
    gpt_decode_reset(&m, nb);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < nb; b++) tok[b] = x[(size_t)b * T + t];
        gpt_decode_step(&m, tok, logits);
        for (int b = 0; b < nb; b++) {
            const size_t i = (size_t)b * T + t;
            const double diff = fabs(log_prob(logits + (size_t)b * V, V, y[i]) + (double)loss[i]);
            if (!(diff <= worst)) worst = diff; /* NaN propagates */
        }
    }
    gpt_free(&m);
    free(x);
    free(x2);
    free(y);
    free(tok);
    free(loss);
    free(logits);
    config_free(&c);
    *worst_out = worst;
    return 0;
}

static void run_case(t_state *t__, int ci, int nb) {
    char err[512];
    const int recur = 1;
    double worst;
    T_ASSERT(decoder_vs_forward(&MODEL_FORMS[ci], 11 + (uint64_t)ci, recur, nb, &worst, err, sizeof(err)) == 0,
             "case %s: config: %s", MODEL_FORMS[ci].name, err);
    T_ASSERT(worst < SAMPLE_TOL, "case %s: max |log p diff| %.3g over %d positions of %d sequences", MODEL_FORMS[ci].name,
             worst, 32, nb);
}

TEST(sample_decoder_baseline) { run_case(t__, 0, 1); }
TEST(sample_decoder_pr65_untied) { run_case(t__, 1, 1); }
TEST(sample_decoder_pr315) { run_case(t__, 2, 1); }
TEST(sample_decoder_pr1392) { run_case(t__, 3, 1); }
TEST(sample_decoder_odd_layers) { run_case(t__, 4, 1); }
TEST(sample_decoder_pr187) { run_case(t__, 5, 1); }
TEST(sample_decoder_pr187_post_odd) { run_case(t__, 6, 1); }
TEST(sample_decoder_lanes1289) { run_case(t__, 7, 1); }
TEST(sample_decoder_lanes1334) { run_case(t__, 8, 1); }
TEST(sample_decoder_qat_after_training) { run_case(t__, 9, 1); }

/* three sequences decoded together (each with its own caches, previous token and SmearGate input),
 * every model form */
TEST(sample_decoder_batched) {
    for (int ci = 0; ci < N_MODEL_FORMS && !t__->failed; ci++) run_case(t__, ci, 3);
}

/* recurrence switched off in the model: the decoder follows the model's flag */
TEST(sample_decoder_recur_off) {
    char err[512];
    double worst;
    T_ASSERT(decoder_vs_forward(&MODEL_FORMS[3], 5, 0, 2, &worst, err, sizeof(err)) == 0, "config: %s", err);
    T_ASSERT(worst < SAMPLE_TOL, "max |log p diff| %.3g", worst);
}

/* gpt_build_decoder (what `pgolf sample` decodes with: caches of T rows, one row per sequence of the
 * rest) gives the logits of the training model's decoder bit for bit, every model form, three
 * sequences; its memory grows with T only by its key/value caches (and the RoPE tables) */
TEST(sample_decoder_build) {
    const int nb = 3;
    for (int ci = 0; ci < N_MODEL_FORMS && !t__->failed; ci++) {
        char err[512];
        pg_config c;
        T_ASSERT(model_form_config(&c, &MODEL_FORMS[ci], err, sizeof(err)) == 0, "case %s: %s", MODEL_FORMS[ci].name, err);
        const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
        gpt_model mt, md;
        gpt_build(&mt, &c, &pg_cpu_ops, nb + 1, T);
        gpt_build_decoder(&md, &c, &pg_cpu_ops, nb, T);
        T_ASSERT(md.n_floats == mt.n_floats, "case %s: parameter arenas differ", MODEL_FORMS[ci].name);
        randomize_weights(&mt, 31 + (uint64_t)ci);
        memcpy(md.w, mt.w, mt.n_floats * sizeof(float));
        gpt_sync_weights(&md);
        mt.recur_on = md.recur_on = mt.recur_n > 0;
        int32_t tok[3];
        float *lt = xmalloc((size_t)nb * V * sizeof(float)), *ld = xmalloc((size_t)nb * V * sizeof(float));
        rng_s = 5 + (uint64_t)ci;
        gpt_decode_reset(&mt, nb);
        gpt_decode_reset(&md, nb);
        int same = 1, at = -1;
        for (int t = 0; t < T && same; t++) {
            random_tokens(tok, (size_t)nb, V);
            gpt_decode_step(&mt, tok, lt);
            gpt_decode_step(&md, tok, ld);
            same = !memcmp(lt, ld, (size_t)nb * V * sizeof(float));
            if (!same) at = t;
        }
        /* a second decoder of twice the length: the difference is exactly its longer caches and tables */
        pg_config c2;
        T_ASSERT(model_form_config(&c2, &MODEL_FORMS[ci], err, sizeof(err)) == 0, "%s", err);
        gpt_model m2;
        gpt_build_decoder(&m2, &c2, &pg_cpu_ops, nb, 2 * T);
        const int passes = md.L + md.recur_n + (md.enc_recur ? md.n_enc : 0);
        const size_t caches = (size_t)passes * 2 * nb * T * md.Hk * md.D * sizeof(float);
        const size_t rope = (size_t)2 * T * (md.rope_dims / 2) * sizeof(float);
        const size_t grow = m2.dev_bytes - md.dev_bytes, full = mt.dev_bytes, dec = md.dev_bytes;
        gpt_free(&m2);
        gpt_free(&mt);
        gpt_free(&md);
        free(lt);
        free(ld);
        config_free(&c);
        config_free(&c2);
        T_ASSERT(same, "case %s: the decoder build's logits differ from the training model's at position %d",
                 MODEL_FORMS[ci].name, at);
        T_ASSERT(grow == caches + rope, "case %s: doubling T adds %zu bytes, the caches and RoPE tables %zu",
                 MODEL_FORMS[ci].name, grow, caches + rope);
        T_ASSERT(dec < full, "case %s: the decoder holds %zu bytes, the training model %zu", MODEL_FORMS[ci].name, dec, full);
    }
}

/* the test itself can fail: a decoder that disagrees with the model gives a large difference. The
 * decoder reads the model's recurrence flag; a model whose flag differs from the full forward's
 * must be caught. */
TEST(sample_decoder_detects_mismatch) {
    char err[512];
    pg_config c;
    T_ASSERT(model_form_config(&c, &MODEL_FORMS[3], err, sizeof(err)) == 0, "%s", err);
    const int T = 32, V = (int)c.vocab_size;
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, T);
    randomize_weights(&m, 3);
    int32_t x[32], y[32];
    rng_s = 9;
    random_tokens(x, 32, V);
    for (int t = 0; t < T; t++) y[t] = x[(t + 1) % T];
    float loss[32], *logits = xmalloc((size_t)V * sizeof(float));
    m.recur_on = 1;
    gpt_forward_backward(&m, x, y, 1, 0.0f, loss);
    m.recur_on = 0; /* the decoder runs without recurrence */
    gpt_decode_reset(&m, 1);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        gpt_decode_step(&m, x + t, logits);
        worst = fmax(worst, fabs(log_prob(logits, V, y[t]) + loss[t]));
    }
    gpt_free(&m);
    free(logits);
    config_free(&c);
    T_ASSERT(worst > 100 * SAMPLE_TOL, "a decoder without recurrence agrees with the recurrent forward (%.3g)", worst);
}

/* reset gives a fresh context: the same tokens give the same logits again (SmearGate's carried input
 * and the bigram's previous token included) */
TEST(sample_decoder_reset) {
    char err[512];
    pg_config c;
    T_ASSERT(model_form_config(&c, &MODEL_FORMS[2], err, sizeof(err)) == 0, "%s", err);
    const int V = (int)c.vocab_size;
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 32);
    randomize_weights(&m, 4);
    float *a = xmalloc((size_t)V * sizeof(float)), *b = xmalloc((size_t)V * sizeof(float));
    const int32_t toks[5] = {3, 17, 17, 40, 2};
    gpt_decode_reset(&m, 1);
    for (int i = 0; i < 5; i++) gpt_decode_step(&m, toks + i, a);
    T_ASSERT(gpt_decode_pos(&m) == 5, "pos %d", gpt_decode_pos(&m));
    gpt_decode_reset(&m, 1);
    for (int i = 0; i < 5; i++) gpt_decode_step(&m, toks + i, b);
    int same = !memcmp(a, b, (size_t)V * sizeof(float));
    gpt_free(&m);
    free(a);
    free(b);
    config_free(&c);
    T_ASSERT(same, "logits differ after reset");
}

/* attn_decode of B sequences over n keys each is row n-1 of each sequence's causal attn_fwd (CPU
 * backend; the CUDA kernel is compared with this op in tests/test_cuda_records.c) */
TEST(ops_attn_decode_matches_attn_fwd) {
    const int B = 3, T = 37, H = 4, Hk = 2, D = 16, qs = H * D, ks = Hk * D;
    const size_t N = (size_t)B * T;
    const pg_ops *o = &pg_cpu_ops;
    float *q = xmalloc(N * qs * sizeof(float)), *k = xmalloc(N * ks * sizeof(float));
    float *v = xmalloc(N * ks * sizeof(float)), *out = xmalloc(N * qs * sizeof(float));
    float *lse = xmalloc(N * H * sizeof(float)), *qd = xmalloc((size_t)B * qs * sizeof(float));
    float *od = xmalloc((size_t)B * qs * sizeof(float));
    rng_s = 21;
    for (size_t i = 0; i < N * qs; i++) q[i] = usym(2.0f);
    for (size_t i = 0; i < N * ks; i++) k[i] = usym(2.0f), v[i] = usym(1.0f);
    o->attn_fwd((pg_act *)out, lse, (pg_act *)q, (pg_act *)k, (pg_act *)v, B, T, H, Hk, D);
    double worst = 0;
    for (int n = 1; n <= T; n++) {
        for (int b = 0; b < B; b++) memcpy(qd + (size_t)b * qs, q + ((size_t)b * T + n - 1) * qs, qs * sizeof(float));
        o->attn_decode((pg_act *)od, (pg_act *)qd, (pg_act *)k, (pg_act *)v, B, n, T, H, Hk, D);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < qs; i++)
                worst = fmax(worst, fabs((double)od[(size_t)b * qs + i] - out[((size_t)b * T + n - 1) * qs + i]));
    }
    free(q), free(k), free(v), free(out), free(lse), free(qd), free(od);
    T_ASSERT(worst < 1e-5, "attn_decode differs from attn_fwd's row by %.3g", worst);
}

/* ---- the sampler ---- */

static void rand_logits(float *l, int V, uint64_t seed) {
    rng_s = seed;
    for (int v = 0; v < V; v++) l[v] = usym(4.0f);
}

TEST(sample_pick_greedy) {
    float l[50];
    rand_logits(l, 50, 1);
    int best = 0;
    for (int v = 1; v < 50; v++)
        if (l[v] > l[best]) best = v;
    sample_rng r;
    sample_rng_seed(&r, 1);
    for (int i = 0; i < 20; i++) T_ASSERT(sample_pick(l, 50, 0.0, 0, 1.0, &r) == best, "greedy is not the argmax");
    l[7] = l[31] = l[best] + 1.0f; /* ties: the lowest id */
    T_ASSERT(sample_pick(l, 50, 0.0, 0, 1.0, &r) == 7, "greedy tie not broken by the lowest id");
}

TEST(sample_pick_topk1_is_greedy) {
    float l[64];
    for (uint64_t s = 1; s <= 20; s++) {
        rand_logits(l, 64, s);
        sample_rng r;
        sample_rng_seed(&r, s);
        const int g = sample_pick(l, 64, 0.0, 0, 1.0, &r);
        for (int i = 0; i < 10; i++) T_ASSERT(sample_pick(l, 64, 1.5, 1, 1.0, &r) == g, "top-k 1 differs from greedy");
    }
}

TEST(sample_pick_seed_deterministic) {
    float l[64];
    rand_logits(l, 64, 2);
    int a[200], b[200], c[200];
    sample_rng r1, r2, r3;
    sample_rng_seed(&r1, 42);
    sample_rng_seed(&r2, 42);
    sample_rng_seed(&r3, 43);
    for (int i = 0; i < 200; i++) {
        a[i] = sample_pick(l, 64, 1.0, 0, 1.0, &r1);
        b[i] = sample_pick(l, 64, 1.0, 0, 1.0, &r2);
        c[i] = sample_pick(l, 64, 1.0, 0, 1.0, &r3);
    }
    T_ASSERT(!memcmp(a, b, sizeof(a)), "the same seed gives different draws");
    T_ASSERT(memcmp(a, c, sizeof(a)) != 0, "different seeds give the same 200 draws");
}

/* top-k: only the k best ids are ever drawn, each of them sometimes; frequencies follow the softmax */
TEST(sample_pick_topk_distribution) {
    const int V = 10, K = 3, N = 30000;
    const float l[10] = {0.1f, 2.0f, -1.0f, 1.5f, 0.0f, 1.0f, -3.0f, 0.5f, 0.2f, 1.2f}; /* best: 1, 3, 9 */
    int cnt[10] = {0};
    sample_rng r;
    sample_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) cnt[sample_pick(l, V, 1.0, K, 1.0, &r)]++;
    T_ASSERT(cnt[1] + cnt[3] + cnt[9] == N, "a token outside the top 3 was drawn");
    const double z = exp(2.0) + exp(1.5) + exp(1.2);
    T_CLOSE(cnt[1] / (double)N, exp(2.0) / z, 0, 0.015, "p(1)");
    T_CLOSE(cnt[3] / (double)N, exp(1.5) / z, 0, 0.015, "p(3)");
    /* temperature 0.5 sharpens: p ~ exp(2l) */
    memset(cnt, 0, sizeof(cnt));
    for (int i = 0; i < N; i++) cnt[sample_pick(l, V, 0.5, 0, 1.0, &r)]++;
    double z2 = 0;
    for (int v = 0; v < V; v++) z2 += exp(2.0 * l[v]);
    T_CLOSE(cnt[1] / (double)N, exp(4.0) / z2, 0, 0.015, "p(1) at temperature 0.5");
}

/* top-p: only the nucleus (the fewest most likely tokens holding top_p of the mass, after top-k) is
 * ever drawn, each of its tokens sometimes, with the softmax's frequencies renormalised over it;
 * temperature comes first; a tiny top_p is greedy */
TEST(sample_pick_topp_distribution) {
    const int V = 10, N = 30000;
    const float l[10] = {0.1f, 2.0f, -1.0f, 1.5f, 0.0f, 1.0f, -3.0f, 0.5f, 0.2f, 1.2f}; /* order: 1, 3, 9, 5, ... */
    double z = 0, p[10];
    for (int v = 0; v < V; v++) z += exp(l[v]);
    for (int v = 0; v < V; v++) p[v] = exp(l[v]) / z;
    /* top_p just above p1 + p3: the nucleus is {1, 3, 9} (p1 + p3 < top_p <= p1 + p3 + p9) */
    const double top_p = p[1] + p[3] + 0.5 * p[9];
    int cnt[10] = {0};
    sample_rng r;
    sample_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) cnt[sample_pick(l, V, 1.0, 0, top_p, &r)]++;
    T_ASSERT(cnt[1] + cnt[3] + cnt[9] == N && cnt[9] > 0, "outside the nucleus {1, 3, 9}: %d draws, 9 drawn %d times",
             N - cnt[1] - cnt[3] - cnt[9], cnt[9]);
    const double zn = p[1] + p[3] + p[9];
    T_CLOSE(cnt[1] / (double)N, p[1] / zn, 0, 0.015, "p(1) in the nucleus");
    T_CLOSE(cnt[9] / (double)N, p[9] / zn, 0, 0.015, "p(9) in the nucleus");
    /* after top-k 2 the nucleus of 0.99 is those two */
    memset(cnt, 0, sizeof(cnt));
    for (int i = 0; i < N; i++) cnt[sample_pick(l, V, 1.0, 2, 0.99, &r)]++;
    T_ASSERT(cnt[1] + cnt[3] == N && cnt[3] > 0, "top-k 2 then top-p 0.99 drew outside {1, 3}");
    T_CLOSE(cnt[1] / (double)N, p[1] / (p[1] + p[3]), 0, 0.015, "p(1) in top-k 2");
    /* temperature before the nucleus: at 0.25 token 1 alone holds > 0.8 of the mass */
    for (int i = 0; i < 200; i++) T_ASSERT(sample_pick(l, V, 0.25, 0, 0.8, &r) == 1, "temperature not applied first");
    sample_rng a;
    sample_rng_seed(&a, 5);
    for (int i = 0; i < 500; i++) T_ASSERT(sample_pick(l, V, 1.0, 0, 1e-9, &a) == 1, "a tiny top-p is not greedy");
}

/* greedy generation through the decoder is deterministic (two models with the same weights) */
TEST(sample_greedy_generation_deterministic) {
    char err[512];
    pg_config c;
    T_ASSERT(model_form_config(&c, &MODEL_FORMS[3], err, sizeof(err)) == 0, "%s", err);
    const int V = (int)c.vocab_size;
    gpt_model ms[2];
    for (int k = 0; k < 2; k++) {
        gpt_build(&ms[k], &c, &pg_cpu_ops, 1, 32);
        randomize_weights(&ms[k], 8);
        ms[k].recur_on = 1;
        gpt_decode_reset(&ms[k], 1);
    }
    float *l = xmalloc((size_t)V * sizeof(float));
    int32_t s1[32], s2[32];
    sample_rng r;
    sample_rng_seed(&r, 0);
    int32_t *ss[2] = {s1, s2};
    for (int k = 0; k < 2; k++) {
        int32_t tok = 1;
        for (int i = 0; i < 32; i++) {
            gpt_decode_step(&ms[k], &tok, l);
            tok = ss[k][i] = sample_pick(l, V, 0.0, 0, 1.0, &r);
        }
        gpt_free(&ms[k]);
    }
    free(l);
    config_free(&c);
    T_ASSERT(!memcmp(s1, s2, sizeof(s1)), "greedy generations differ");
}
