/* test_model.c: the model on the CPU backend: parameter counts, gradients against central finite
 * differences (an independent check of the hand-written backward), and determinism. The PyTorch
 * comparisons are in test_reference.c. */
#include <stdlib.h>
#include <string.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
#include "model_forms.h"
#include "ref_common.h"
#include "test.h"

static void tiny_config(pg_config *c) {
    config_defaults(c);
    char err[256];
    const char *kv[][2] = {{"VOCAB_SIZE", "32"}, {"MODEL_DIM", "16"}, {"NUM_LAYERS", "3"}, {"NUM_HEADS", "2"},
                           {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"}, {"TRAIN_SEQ_LEN", "8"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) config_set(c, kv[i][0], kv[i][1], "test", err, sizeof(err));
}

/* fill every parameter with random values so no gradient is trivially zero */
static void randomize(gpt_model *m, unsigned seed, float scale) {
    srand(seed);
    for (size_t i = 0; i < m->n_floats; i++) m->w[i] = scale * (2.0f * (float)rand() / (float)RAND_MAX - 1.0f);
    /* keep gains/scales away from zero */
    for (int p = 0; p < m->n_params; p++)
        if (m->params[p].group == GROUP_SCALAR)
            for (size_t k = 0; k < m->params[p].numel; k++) m->w[m->params[p].offset + k] += 1.0f;
    gpt_sync_weights(m);
}

TEST(model_param_count_default) {
    pg_config c;
    config_defaults(&c);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 16);
    T_ASSERT(gpt_param_count(&m) == 17059912, "model_params %zu", gpt_param_count(&m));
    gpt_free(&m);
    config_free(&c);
}

TEST(model_param_count_untied) {
    pg_config c;
    config_defaults(&c);
    char err[256];
    config_set(&c, "TIE_EMBEDDINGS", "0", "t", err, sizeof(err));
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 16);
    T_ASSERT(gpt_param_count(&m) == 17059912 + 1024 * 512, "model_params %zu", gpt_param_count(&m));
    gpt_free(&m);
    config_free(&c);
}

static void check_fd(t_state *t__, int tied) {
    pg_config c;
    tiny_config(&c);
    char err[256];
    if (!tied) config_set(&c, "TIE_EMBEDDINGS", "0", "t", err, sizeof(err));
    gpt_model m;
    const int B = 2, T = 8;
    gpt_build(&m, &c, &pg_cpu_ops, B, T);
    randomize(&m, 7, 0.5f);
    int32_t x[16], y[16];
    srand(3);
    for (int i = 0; i < B * T; i++) x[i] = rand() % 32, y[i] = rand() % 32;
    gpt_zero_grad(&m);
    gpt_forward_backward(&m, x, y, B, 1.0f, NULL);
    float *g = xmalloc(m.n_floats * sizeof(float));
    memcpy(g, m.g, m.n_floats * sizeof(float));
    /* check a sample of coordinates of every tensor */
    for (int p = 0; p < m.n_params; p++) {
        const param_info *pi = &m.params[p];
        double maxerr = 0, maxg = 0;
        for (int s = 0; s < 6; s++) {
            size_t k = pi->offset + (size_t)((s * 7919u) % pi->numel);
            float w0 = m.w[k];
            const float h = 1e-2f;
            m.w[k] = w0 + h;
            double lp = gpt_forward_backward(&m, x, y, B, 0.0f, NULL);
            m.w[k] = w0 - h;
            double lm = gpt_forward_backward(&m, x, y, B, 0.0f, NULL);
            m.w[k] = w0;
            double fd = (lp - lm) / (2 * h);
            double e = fabs(fd - g[k]);
            if (e > maxerr) maxerr = e;
            if (fabs(g[k]) > maxg) maxg = fabs(g[k]);
        }
        T_ASSERT(maxerr <= 2e-3 + 2e-2 * maxg, "%s: finite-difference error %.3g (max |grad| %.3g)", pi->name, maxerr, maxg);
    }
    free(g);
    gpt_free(&m);
    config_free(&c);
}

TEST(model_grad_finite_differences_tied) { check_fd(t__, 1); }
TEST(model_grad_finite_differences_untied) { check_fd(t__, 0); }

TEST(model_forward_deterministic) {
    pg_config c;
    tiny_config(&c);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 2, 8);
    gpt_init(&m, &c, 1337);
    int32_t x[16], y[16];
    for (int i = 0; i < 16; i++) x[i] = (i * 5) % 32, y[i] = (i * 11 + 3) % 32;
    double a = gpt_forward_backward(&m, x, y, 2, 0.0f, NULL);
    double b = gpt_forward_backward(&m, x, y, 2, 0.0f, NULL);
    T_ASSERT(a == b, "%.17g vs %.17g", a, b);
    /* at init the logits are tiny: loss is close to ln(V) */
    T_CLOSE(a, log(32.0), 0, 0.05, "initial loss vs ln V");
    gpt_free(&m);
    config_free(&c);
}

/* the evaluator build (gpt_build_eval: validation's, sliding windows' and `pgolf eval`'s model)
 * against the training build, for every model form: the same mean and per-token losses and logits,
 * bit for bit, with its own copy of the weights and with the training model's. The training model
 * first runs a training forward and backward on other tokens (its QAT copies, its activations). The
 * evaluator's passes share every buffer but their outputs, its memory is below the training
 * model's, and one that borrows the weights holds exactly the weight arena less. */
TEST(model_eval_build_matches_training) {
    const int nb = 3;
    for (int ci = 0; ci < N_MODEL_FORMS && !t__->failed; ci++) {
        const char *name = MODEL_FORMS[ci].name;
        char err[512];
        pg_config c;
        T_ASSERT(model_form_config(&c, &MODEL_FORMS[ci], err, sizeof(err)) == 0, "form %s: %s", name, err);
        const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
        const size_t N = (size_t)nb * T;
        gpt_model mt, me, mw;
        gpt_build(&mt, &c, &pg_cpu_ops, nb + 1, T);
        gpt_build_eval(&me, &c, &pg_cpu_ops, nb + 1, T, NULL);
        gpt_build_eval(&mw, &c, &pg_cpu_ops, nb + 1, T, &mt);
        randomize_weights(&mt, 41 + (uint64_t)ci);
        memcpy(me.w, mt.w, mt.n_floats * sizeof(float));
        gpt_sync_weights(&me);
        mt.recur_on = me.recur_on = mt.recur_n > 0; /* mw follows mt's */
        int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t)), *x2 = xmalloc(N * sizeof(int32_t));
        rng_s = 3 + (uint64_t)ci;
        random_tokens(x, N, V);
        random_tokens(y, N, V);
        random_tokens(x2, N, V);
        gpt_forward_backward(&mt, x2, y, nb, 1.0f, NULL);
        double mean[3];
        gpt_model *ms[3] = {&mt, &me, &mw};
        const int same = same_forwards(ms, 3, x, y, nb, mean);
        /* the passes: the layers', the recurrence passes, PR #187's first encoder passes */
        block_acts *pass[64];
        int np = 0;
        for (int l = 0; l < me.L; l++) pass[np++] = &me.acts[l];
        for (int k = 0; k < me.recur_n; k++) pass[np++] = &me.racts[k];
        for (int k = 0; me.enc_recur && k < me.n_enc; k++) pass[np++] = &me.eacts[k];
        int shared = 1, own = 1;
        for (int i = 0; i < np; i++) {
            shared &= pass[i]->h == me.shared_acts.h && pass[i]->q == me.shared_acts.q &&
                      pass[i]->k == me.shared_acts.k && pass[i]->xm == me.shared_acts.xm;
            own &= pass[i]->xout != NULL && me.shared_acts.xout == NULL;
            for (int j = 0; j < i; j++) own &= pass[i]->xout != pass[j]->xout;
        }
        const size_t full = mt.dev_bytes, ev = me.dev_bytes, borrowed = mw.dev_bytes;
        const size_t arena = mt.n_floats * sizeof(float);
        free(x);
        free(y);
        free(x2);
        gpt_free(&mw);
        gpt_free(&me);
        gpt_free(&mt);
        config_free(&c);
        T_ASSERT(same, "form %s: the evaluator's losses or logits differ from the training model's", name);
        T_ASSERT(shared, "form %s: the passes do not share the evaluator's activations", name);
        T_ASSERT(own, "form %s: the passes' outputs are not their own", name);
        T_ASSERT(ev < full, "form %s: the evaluator holds %zu bytes, the training model %zu", name, ev, full);
        T_ASSERT(ev - borrowed == arena, "form %s: borrowing the weights saves %zu bytes, the arena is %zu", name,
                 ev - borrowed, arena);
    }
}

/* gpt_build_bytes: each form's count equals the backend memory its real build allocates, for every
 * model form; sizing a build far beyond this machine's memory allocates nothing */
TEST(model_build_bytes_counts_each_form) {
    for (int ci = 0; ci < N_MODEL_FORMS && !t__->failed; ci++) {
        const char *name = MODEL_FORMS[ci].name;
        char err[512];
        pg_config c;
        T_ASSERT(model_form_config(&c, &MODEL_FORMS[ci], err, sizeof(err)) == 0, "form %s: %s", name, err);
        const int T = (int)c.train_seq_len, B = 3;
        gpt_model mt, md, me, mw;
        gpt_build(&mt, &c, &pg_cpu_ops, B, T);
        gpt_build_decoder(&md, &c, &pg_cpu_ops, B, T);
        gpt_build_eval(&me, &c, &pg_cpu_ops, B, T, NULL);
        gpt_build_eval(&mw, &c, &pg_cpu_ops, B, T, &mt);
        const size_t real[4] = {mt.dev_bytes, md.dev_bytes, me.dev_bytes, mw.dev_bytes};
        const gpt_form forms[4] = {GPT_TRAINING, GPT_DECODER, GPT_EVALUATOR, GPT_EVALUATOR_SHARED};
        size_t counted[4];
        for (int k = 0; k < 4; k++) counted[k] = gpt_build_bytes(&c, &pg_cpu_ops, B, T, forms[k]);
        gpt_free(&mw);
        gpt_free(&me);
        gpt_free(&md);
        gpt_free(&mt);
        const size_t peak = pg_cpu_ops.peak_bytes();
        const size_t huge = gpt_build_bytes(&c, &pg_cpu_ops, 1 << 20, T, GPT_TRAINING);
        const size_t peak_after = pg_cpu_ops.peak_bytes();
        config_free(&c);
        for (int k = 0; k < 4; k++)
            T_ASSERT(counted[k] == real[k], "form %s: build %d counts %zu bytes, allocates %zu", name, k, counted[k],
                     real[k]);
        T_ASSERT(huge > ((size_t)1 << 36) && peak_after == peak,
                 "form %s: sizing %zu bytes moved the backend's peak from %zu to %zu", name, huge, peak, peak_after);
    }
}

/* an evaluator on another model's weights sees that model's updates and follows its depth-recurrence
 * switch; both change the losses, so an evaluator with a stale copy or its own switch fails */
TEST(model_eval_build_follows_its_weights) {
    char err[512];
    pg_config c;
    T_ASSERT(model_form_config(&c, &MODEL_FORMS[3], err, sizeof(err)) == 0, "%s", err); /* PR #1392's form */
    const int T = (int)c.train_seq_len, V = (int)c.vocab_size, nb = 2;
    const size_t N = (size_t)nb * T;
    gpt_model mt, mw;
    gpt_build(&mt, &c, &pg_cpu_ops, nb, T);
    gpt_build_eval(&mw, &c, &pg_cpu_ops, nb, T, &mt);
    T_ASSERT(mt.recur_n > 0, "the form has depth recurrence");
    int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t));
    rng_s = 17;
    random_tokens(x, N, V);
    random_tokens(y, N, V);
    double lt[3], lw[3];
    randomize_weights(&mt, 5);
    mt.recur_on = 0;
    lt[0] = gpt_forward_backward(&mt, x, y, nb, 0.0f, NULL);
    lw[0] = gpt_forward_backward(&mw, x, y, nb, 0.0f, NULL);
    mt.recur_on = 1; /* gpt_step_begin at RECUR_START_STEP, or the final model */
    lt[1] = gpt_forward_backward(&mt, x, y, nb, 0.0f, NULL);
    lw[1] = gpt_forward_backward(&mw, x, y, nb, 0.0f, NULL);
    randomize_weights(&mt, 6); /* an optimizer step, an average or a reload */
    lt[2] = gpt_forward_backward(&mt, x, y, nb, 0.0f, NULL);
    lw[2] = gpt_forward_backward(&mw, x, y, nb, 0.0f, NULL);
    gpt_free(&mw);
    gpt_free(&mt);
    free(x);
    free(y);
    config_free(&c);
    for (int k = 0; k < 3; k++) T_ASSERT(lw[k] == lt[k], "stage %d: evaluator %.9g, model %.9g", k, lw[k], lt[k]);
    T_ASSERT(lt[1] != lt[0] && lt[2] != lt[1], "the stages change the loss (%.9g %.9g %.9g)", lt[0], lt[1], lt[2]);
}

/* WORLD_SIZE: train_gpt.py's grad_accum_steps = 8 / WORLD_SIZE for divisors of 8; beyond 8 ranks a
 * multiple of 8 with one micro-batch each; anything else is refused. The global batch is the same. */
TEST(config_world_size_grad_accum) {
    static const struct {
        const char *ws;
        int ok, accum;
    } cases[] = {{"1", 1, 8}, {"2", 1, 4}, {"4", 1, 2}, {"8", 1, 1}, {"16", 1, 1}, {"64", 1, 1},
                 {"3", 0, 0}, {"6", 0, 0}, {"12", 0, 0}, {"20", 0, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pg_config c;
        config_defaults(&c);
        char err[512];
        T_ASSERT(config_set(&c, "WORLD_SIZE", cases[i].ws, "test", err, sizeof(err)) == 0, "%s", err);
        /* 524288 tokens split into world*accum micro-batches of whole 1024-token sequences */
        int ok = config_validate(&c, err, sizeof(err)) == 0;
        T_ASSERT(ok == cases[i].ok, "WORLD_SIZE=%s: validate %d (%s)", cases[i].ws, ok, ok ? "" : err);
        if (ok) T_ASSERT(config_grad_accum(&c) == cases[i].accum, "WORLD_SIZE=%s: grad_accum %d", cases[i].ws,
                         config_grad_accum(&c));
        else T_ASSERT(strstr(err, "WORLD_SIZE") != NULL, "error names the key: %s", err);
        config_free(&c);
    }
}
