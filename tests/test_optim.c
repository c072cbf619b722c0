/* test_optim.c: optimizer plumbing on the CPU backend that the reference comparisons do not pin
 * down by themselves: decoupled weight decay (MUON_WD / MUON_WEIGHT_DECAY / ADAM_WD) reaches the
 * right groups with the scheduled lr. With zero gradients Adam's and Muon's updates vanish, so one
 * step must scale each parameter by exactly (1 - lr_group * mult * wd) or leave it alone. */
#include <stdlib.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
#include "../src/optim.h"
#include "test.h"

static void run_decay(t_state *t__, const char *muon_key, double muon_wd, double adam_wd) {
    pg_config c;
    config_defaults(&c);
    char err[256], v1[32], v2[32];
    snprintf(v1, sizeof(v1), "%g", muon_wd);
    snprintf(v2, sizeof(v2), "%g", adam_wd);
    const char *kv[][2] = {{"VOCAB_SIZE", "32"}, {"MODEL_DIM", "16"}, {"NUM_LAYERS", "2"}, {"NUM_HEADS", "2"},
                           {"NUM_KV_HEADS", "1"}, {"TIE_EMBEDDINGS", "0"}, {muon_key, v1}, {"ADAM_WD", v2}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        T_ASSERT(config_set(&c, kv[i][0], kv[i][1], "t", err, sizeof(err)) == 0, "%s", err);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 8);
    gpt_init(&m, &c, 1);
    for (size_t i = 0; i < m.n_floats; i++) m.w[i] = 0.5f + 0.001f * (float)(i % 97);
    gpt_sync_weights(&m);
    float *before = xmalloc(m.n_floats * sizeof(float));
    memcpy(before, m.w, m.n_floats * sizeof(float));
    optimizer o;
    optim_init(&o, &m);
    gpt_zero_grad(&m);
    const double mult = 0.7;
    optim_step(&o, &c, mult);
    for (int p = 0; p < m.n_params; p++) {
        const param_info *pi = &m.params[p];
        double wd = pi->group == GROUP_MUON ? muon_wd : (pi->group == GROUP_HEAD ? 0.0 : adam_wd);
        float f = (float)(1.0 - (double)(float)(optim_base_lr(&c, pi->group) * mult) * (double)(float)wd);
        if (wd == 0) f = 1.0f;
        for (size_t k = 0; k < pi->numel; k++) {
            float want = before[pi->offset + k] * f, got = m.w[pi->offset + k];
            T_ASSERT(fabsf(got - want) <= 2e-7f * fabsf(want), "%s[%zu]: %.9g, want %.9g", pi->name, k, got, want);
        }
    }
    free(before);
    optim_free(&o);
    gpt_free(&m);
    config_free(&c);
}

TEST(optim_weight_decay_groups) {
    run_decay(t__, "MUON_WD", 0.04, 0.0);
    if (t__->failed) return;
    run_decay(t__, "MUON_WD", 0.0, 0.04);
    if (t__->failed) return;
    run_decay(t__, "MUON_WEIGHT_DECAY", 0.01, 0.02);
}

TEST(optim_weight_decay_conflicting_names) {
    pg_config c;
    config_defaults(&c);
    char err[256];
    config_set(&c, "MUON_WD", "0.04", "t", err, sizeof(err));
    config_set(&c, "MUON_WEIGHT_DECAY", "0.01", "t", err, sizeof(err));
    T_ASSERT(config_validate(&c, err, sizeof(err)) != 0, "conflicting decays accepted");
    T_ASSERT(strstr(err, "MUON_WEIGHT_DECAY") != NULL, "error: %s", err);
    config_free(&c);
}

/* MuonEq-R normalises every row of the update before NS5, so with zero momentum scaling one row of
 * the gradient by a positive factor leaves the step unchanged; plain Muon's step changes. */
static double muon_row_scale_change(int eq_r) {
    const int rows = 12, cols = 8;
    const size_t n = (size_t)rows * cols;
    float g1[96], g2[96], w1[96], w2[96], b1[96] = {0}, b2[96] = {0};
    srand(9);
    for (size_t i = 0; i < n; i++) {
        g1[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
        g2[i] = g1[i] * (i / cols == 3 ? 7.0f : 1.0f);
        w1[i] = w2[i] = 0.1f * (float)(i % 7);
    }
    float *work = xmalloc(pg_cpu_ops.muon_work_floats(rows, cols) * sizeof(float));
    pg_cpu_ops.muon_step(w1, g1, b1, rows, cols, 0.05f, 0.0f, 5, 0.0f, eq_r, work);
    pg_cpu_ops.muon_step(w2, g2, b2, rows, cols, 0.05f, 0.0f, 5, 0.0f, eq_r, work);
    free(work);
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)w1[i] - w2[i]));
    return d;
}

TEST(optim_muon_eq_r_row_scale_invariance) {
    double with = muon_row_scale_change(1), without = muon_row_scale_change(0);
    T_ASSERT(with < 2e-6, "MuonEq-R step changed by %g when one gradient row was scaled", with);
    T_ASSERT(without > 1e-4, "plain Muon step unchanged (%g): the row scaling test is not sensitive", without);
}

/* The lr multiplier (spec §2.7; PR #1311 §2.5 lr warmup; MIN_LR floor of the warmdown), values
 * worked out by hand from the records' formulas. */
static double lr_at(const char *const (*kv)[2], size_t n, long step, double elapsed_ms) {
    pg_config c;
    config_defaults(&c);
    char err[256];
    double r = NAN; /* a key that does not set fails every comparison */
    for (size_t i = 0; i < n; i++)
        if (config_set(&c, kv[i][0], kv[i][1], "t", err, sizeof(err)) != 0) goto out;
    r = optim_lr_mul(&c, step, elapsed_ms);
out:
    config_free(&c);
    return r;
}

TEST(optim_lr_schedule) {
    /* step-based warmdown: ITERATIONS 100, the last 20 steps */
    const char *const sb[][2] = {{"MAX_WALLCLOCK_SECONDS", "0"}, {"ITERATIONS", "100"}, {"WARMDOWN_ITERS", "20"}};
    T_CLOSE(lr_at(sb, 3, 0, 0), 1.0, 0, 0, "sb step 0");
    T_CLOSE(lr_at(sb, 3, 79, 0), 1.0, 0, 0, "sb step 79");
    T_CLOSE(lr_at(sb, 3, 80, 0), 1.0, 0, 1e-15, "sb step 80");
    T_CLOSE(lr_at(sb, 3, 90, 0), 0.5, 0, 1e-15, "sb step 90");
    T_CLOSE(lr_at(sb, 3, 99, 0), 0.05, 0, 1e-15, "sb step 99");
    /* MIN_LR floors the warmdown */
    const char *const mn[][2] = {{"MAX_WALLCLOCK_SECONDS", "0"}, {"ITERATIONS", "100"}, {"WARMDOWN_ITERS", "20"},
                                 {"MIN_LR", "0.3"}};
    T_CLOSE(lr_at(mn, 4, 90, 0), 0.5, 0, 1e-15, "mn step 90");
    T_CLOSE(lr_at(mn, 4, 95, 0), 0.3, 0, 1e-15, "mn step 95");
    T_CLOSE(lr_at(mn, 4, 10, 0), 1.0, 0, 0, "mn step 10");
    /* wallclock warmdown: cap 10 s, 90 steps in 9 s -> 100 ms/step, window 2 s, 1 s left -> 0.5 */
    const char *const wc[][2] = {{"MAX_WALLCLOCK_SECONDS", "10"}, {"WARMDOWN_ITERS", "20"}};
    T_CLOSE(lr_at(wc, 2, 90, 9000), 0.5, 0, 1e-12, "wc step 90");
    T_CLOSE(lr_at(wc, 2, 50, 5000), 1.0, 0, 0, "wc step 50");
    T_CLOSE(lr_at(wc, 2, 99, 10500), 0.0, 0, 0, "wc step 99");
    /* GPTQ_RESERVE_SECONDS: the warmdown ends at the cap less the reserve (10 s - 1 s: 9 s) */
    const char *const rs[][2] = {{"MAX_WALLCLOCK_SECONDS", "10"}, {"WARMDOWN_ITERS", "20"}, {"GPTQ_RESERVE_SECONDS", "1"}};
    T_CLOSE(lr_at(rs, 3, 80, 8000), 0.5, 0, 1e-12, "rs step 80");
    T_CLOSE(lr_at(rs, 3, 90, 9000), 0.0, 0, 0, "rs step 90");
    /* PR #1311: min(step/50, 1) times the warmdown; step 0 has lr 0 */
    const char *const wu[][2] = {{"MAX_WALLCLOCK_SECONDS", "10"}, {"WARMDOWN_ITERS", "20"}, {"LR_WARMUP_STEPS", "50"}};
    T_CLOSE(lr_at(wu, 3, 0, 0), 0.0, 0, 0, "wu step 0");
    T_CLOSE(lr_at(wu, 3, 10, 1000), 0.2, 0, 1e-15, "wu step 10");
    T_CLOSE(lr_at(wu, 3, 50, 5000), 1.0, 0, 0, "wu step 50");
    T_CLOSE(lr_at(wu, 3, 90, 9000), 0.5, 0, 1e-12, "wu step 90");
}

/* PR #1311's priming (PGOLF_PRIMING_KEEPS_ADAM): after the priming steps the Adam moments and step
 * count are kept (bias correction goes on from there), the Muon momentum buffers are zeroed and the
 * momentum warmup restarts at update 0; optim_reset forgets everything. */
TEST(optim_priming_keeps_adam) {
    pg_config c;
    config_defaults(&c);
    char err[256];
    const char *kv[][2] = {{"VOCAB_SIZE", "32"}, {"MODEL_DIM", "16"}, {"NUM_LAYERS", "2"}, {"NUM_HEADS", "2"},
                           {"NUM_KV_HEADS", "1"}, {"MUON_MOMENTUM_WARMUP_START", "0.5"},
                           {"MUON_MOMENTUM_WARMUP_STEPS", "10"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        T_ASSERT(config_set(&c, kv[i][0], kv[i][1], "t", err, sizeof(err)) == 0, "%s", err);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 8);
    gpt_init(&m, &c, 3);
    optimizer o;
    optim_init(&o, &m);
    for (int s = 0; s < 3; s++) {
        for (size_t i = 0; i < m.n_floats; i++) m.g[i] = 0.01f * (float)((i * 7 + (size_t)s) % 13) - 0.06f;
        optim_step(&o, &c, 1.0);
    }
    optim_keep_adam_after_priming(&o);
    T_ASSERT(o.step == 3 && o.mom_offset == 3, "step %ld offset %ld", o.step, o.mom_offset);
    size_t nz_adam = 0, nz_muon = 0;
    for (size_t i = 0; i < m.n_floats; i++) {
        nz_adam += o.adam_m[i] != 0.0f;
        nz_muon += o.muon_buf[i] != 0.0f;
    }
    T_ASSERT(nz_adam > 0, "Adam moments were not kept");
    T_ASSERT(nz_muon == 0, "%zu Muon momentum entries survived", nz_muon);
    T_CLOSE(optim_muon_momentum(&c, o.step - o.mom_offset), 0.5, 0, 0, "momentum warmup restarts");
    optim_reset(&o);
    T_ASSERT(o.step == 0 && o.mom_offset == 0, "reset: step %ld offset %ld", o.step, o.mom_offset);
    for (size_t i = 0; i < m.n_floats; i++) T_ASSERT(o.adam_m[i] == 0.0f && o.adam_v[i] == 0.0f, "reset kept Adam state");
    optim_free(&o);
    gpt_free(&m);
    config_free(&c);
}
