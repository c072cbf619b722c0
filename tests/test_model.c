/* test_model.c: the model on the CPU backend: parameter counts, gradients against central finite
 * differences (an independent check of the hand-written backward), and determinism. The PyTorch
 * comparisons are in test_reference.c. */
#include <stdlib.h>
#include <string.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
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
