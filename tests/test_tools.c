/* test_tools.c: the statistics of `pgolf submit` (Student-t CDF against its closed forms for 1, 2
 * and 4 degrees of freedom, incomplete-beta identities, Welch's t and df on a hand-worked example)
 * and the log reader of plot/compare/submit on small in-memory logs (both record formats, a second
 * run appended to the same log, cut lines). */
#include <math.h>
#include <string.h>

#include "common.h"
#include "runlog.h"
#include "stats.h"
#include "test.h"

TEST(tools_stats_t_cdf_closed_forms) {
    const double ts[] = {-40, -7.5, -3.6742, -1, -0.25, 0, 0.4, 1.5, 4, 25};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        double t = ts[i];
        double c1 = 0.5 + atan(t) / M_PI;
        double c2 = 0.5 + t / (2 * sqrt(2 + t * t));
        double x = t / sqrt(1 + t * t / 4);
        double c4 = 0.5 + 3.0 / 8.0 * x * (1 - t * t / (12 * (1 + t * t / 4)));
        T_CLOSE(stats_t_cdf(t, 1), c1, 1e-12, 1e-14, "t cdf df=1");
        T_CLOSE(stats_t_cdf(t, 2), c2, 1e-12, 1e-14, "t cdf df=2");
        T_CLOSE(stats_t_cdf(t, 4), c4, 1e-11, 1e-14, "t cdf df=4");
        /* a large df approaches the normal distribution */
        T_CLOSE(stats_t_cdf(t, 1e7), 0.5 * erfc(-t / sqrt(2)), 1e-5, 1e-12, "t cdf df=1e7");
    }
    T_ASSERT(stats_t_cdf(INFINITY, 3) == 1 && stats_t_cdf(-INFINITY, 3) == 0, "infinite t");
    T_ASSERT(isnan(stats_t_cdf(1, 0)) && isnan(stats_t_cdf(NAN, 3)), "bad arguments give NAN");
}

TEST(tools_stats_betainc_identities) {
    const double xs[] = {0.001, 0.1, 0.37, 0.5, 0.8, 0.999};
    for (size_t i = 0; i < sizeof(xs) / sizeof(xs[0]); i++) {
        double x = xs[i];
        T_CLOSE(stats_betainc(1, 1, x), x, 1e-13, 1e-15, "I_x(1,1) = x");
        T_CLOSE(stats_betainc(3.5, 1, x), pow(x, 3.5), 1e-12, 1e-15, "I_x(a,1) = x^a");
        T_CLOSE(stats_betainc(1, 2.5, x), 1 - pow(1 - x, 2.5), 1e-12, 1e-15, "I_x(1,b) = 1-(1-x)^b");
        T_CLOSE(stats_betainc(2.2, 7.9, x), 1 - stats_betainc(7.9, 2.2, 1 - x), 1e-12, 1e-14, "symmetry");
    }
    T_ASSERT(stats_betainc(2, 3, 0) == 0 && stats_betainc(2, 3, 1) == 1, "ends");
    T_ASSERT(isnan(stats_betainc(-1, 3, 0.5)) && isnan(stats_betainc(1, 3, 1.5)), "out of domain");
}

TEST(tools_stats_welch_hand_example) {
    /* a = {1.10, 1.11, 1.12}, b = {1.13, 1.14, 1.15}: means 1.11 and 1.14, variances 1e-4 each,
     * se = sqrt(2e-4/3), t = -0.03/se = -3.674235, df = (2e-4/3)^2 / (2 (1e-4/3)^2 / 2) = 4 */
    const double a[] = {1.10, 1.11, 1.12}, b[] = {1.13, 1.14, 1.15};
    T_CLOSE(stats_mean(a, 3), 1.11, 1e-14, 0, "mean");
    T_CLOSE(stats_std(a, 3), 0.01, 1e-12, 0, "sample std");
    T_ASSERT(isnan(stats_std(a, 1)) && isnan(stats_mean(a, 0)), "std of one value, mean of none");
    welch_result w;
    T_ASSERT(stats_welch(a, 3, b, 3, 0, &w) == 0, "welch");
    T_CLOSE(w.t, -0.03 / sqrt(2e-4 / 3), 1e-10, 0, "t");
    T_CLOSE(w.df, 4, 1e-10, 0, "df");
    T_CLOSE(w.p_less, stats_t_cdf(w.t, 4), 1e-14, 0, "p");
    T_ASSERT(w.p_less > 0.0106 && w.p_less < 0.0107, "p = %g", w.p_less);
    /* shifted: lower by more than 0.01 */
    T_ASSERT(stats_welch(a, 3, b, 3, 0.01, &w) == 0, "welch shifted");
    T_CLOSE(w.t, -0.02 / sqrt(2e-4 / 3), 1e-10, 0, "shifted t");
    /* undefined: one value, or no spread */
    const double c[] = {1, 1, 1};
    T_ASSERT(stats_welch(a, 1, b, 3, 0, &w) != 0 && stats_welch(c, 3, c, 3, 0, &w) != 0, "undefined cases refused");
}

static int parse(const char *text, runlog *r, char *err) { return runlog_parse("t.log", text, strlen(text), r, err, PG_ERRLEN); }

TEST(tools_runlog_formats) {
    char err[PG_ERRLEN];
    runlog r;
    /* train_gpt.py: header, step lines, sizes, finals; an epoch prefix on one line */
    const char *a = "logs/x.txt\nmodel_params:1234\nattention_mode:gqa num_heads:8 num_kv_heads:4\n"
                    "tie_embeddings:True embed_lr:0.05 head_lr:0.0 matrix_lr:0.04 scalar_lr:0.04\nseed:42\n"
                    "step:0/50 val_loss:6.9000 val_bpb:4.1000 train_time:0ms step_avg:0.01ms\n"
                    "step:1/50 train_loss:6.9 train_time:80ms step_avg:80.00ms\n"
                    "1776142348.135 step:2/50 train_loss:6.5 train_time:160ms step_avg:80.00ms\n"
                    "    log0(f\"step:{step}/{iters} train_loss:{x}\")\n"
                    "step:50/50 val_loss:3.0 val_bpb:1.8 train_time:4000ms step_avg:80.00ms\n"
                    "Total submission size: 900 bytes\nTotal submission size int8+zlib: 500 bytes\n"
                    "final_int8_zlib_roundtrip_exact val_loss:3.10000000 val_bpb:1.84000000\n"
                    "final_int8_zlib_sliding_window_exact val_loss:3.00000000 val_bpb:1.78000000\n";
    T_ASSERT(parse(a, &r, err) == 0, "%s", err);
    T_ASSERT(r.n_train == 2 && r.n_val == 2 && r.last_step == 50 && r.total_steps == 50, "points %zu %zu", r.n_train, r.n_val);
    T_ASSERT(r.model_params == 1234 && r.total_bytes == 500 && r.have_seed && r.seed == 42, "header");
    T_ASSERT(!strcmp(runlog_final(&r, NULL)->name, "final_int8_zlib_sliding_window_exact"), "auto metric");
    T_ASSERT(runlog_final(&r, "final_int8_zlib_roundtrip_exact")->val_bpb == 1.84, "named metric");
    T_ASSERT(!runlog_final(&r, "nope"), "unknown metric");
    T_ASSERT(!strcmp(runlog_cfg(&r, "token_lr"), "0.05") && !strcmp(runlog_cfg(&r, "num_heads"), "8"), "header keys");
    runlog_free(&r);
    /* PR #1392: hyperparameters block, "key: value", minutes */
    const char *b = "Hyperparameters:\n  num_layers: 11\n  seed: 7\nmodel_params:99\n"
                    "0/100 val_loss: 9.0 val_bpb: 3.5\n50/100 train_loss: 3.3 train_time: 0.5m tok/s: 7000000\n"
                    "100/100 val_loss: 2.8 val_bpb: 1.09\n"
                    "stopping_early: wallclock_cap train_time: 61000ms step: 100/100\n"
                    "quantized val_loss:2.84 val_bpb:1.0997\nquantized_ttt val_loss:2.79 val_bpb:1.0808\n";
    T_ASSERT(parse(b, &r, err) == 0, "%s", err);
    T_ASSERT(r.n_train == 1 && r.train[0].time_ms == 30000 && r.n_val == 2 && r.train_time_ms == 61000, "pr1392 points");
    T_ASSERT(!strcmp(runlog_cfg(&r, "NUM_LAYERS"), "11") && r.seed == 7 && r.stopped_early, "pr1392 config");
    T_ASSERT(!strcmp(runlog_final(&r, NULL)->name, "quantized_ttt"), "pr1392 metric");
    runlog_free(&r);
    /* the records of early April (e.g. 2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR): the
     * sliding score has 8 decimals but no _exact line, and a test-time-training score follows that
     * was not submitted (worse); the submission's score is the sliding one. An _exact sliding line
     * wins over it. */
    const char *c = "step:5453/20000 val_loss:2.5257 val_bpb:1.0976 train_time:590000ms step_avg:108.20ms\n"
                    "final_int6_roundtrip_exact val_loss:2.54952146 val_bpb:1.10799265\n"
                    "final_int6_sliding_window val_loss:2.50671564 val_bpb:1.08938974 eval_time:76195ms\n"
                    "final_int6_ttt val_loss:3.07421378 val_bpb:1.33603200 eval_time:405410ms\n";
    T_ASSERT(parse(c, &r, err) == 0, "%s", err);
    T_ASSERT(!strcmp(runlog_final(&r, NULL)->name, "final_int6_sliding_window") &&
                 runlog_final(&r, NULL)->val_bpb == 1.08938974,
             "sliding score without _exact: auto metric %s", runlog_final(&r, NULL)->name);
    runlog_free(&r);
    char d[512];
    snprintf(d, sizeof(d), "%sfinal_int6_sliding_window_exact val_loss:2.50671500 val_bpb:1.08938900\n", c);
    T_ASSERT(parse(d, &r, err) == 0, "%s", err);
    T_ASSERT(!strcmp(runlog_final(&r, NULL)->name, "final_int6_sliding_window_exact"), "the _exact sliding line first");
    runlog_free(&r);
}

TEST(tools_runlog_appended_run_and_errors) {
    char err[PG_ERRLEN];
    runlog r;
    /* a second run with the same RUN_ID appends to the log: its points replace the first's */
    const char *a = "config SEED=1 (env)\nstep:1/9 train_loss:5 train_time:1ms\nstep:2/9 train_loss:4 train_time:2ms\n"
                    "step:9/9 val_loss:3 val_bpb:2 train_time:9ms\nfinal_x_roundtrip_exact val_loss:3.00000000 val_bpb:2.00000000\n"
                    "config SEED=2 (env)\nstep:0/9 val_loss:7 val_bpb:4 train_time:0ms\nstep:1/9 train_loss:6 train_time:1ms\n";
    T_ASSERT(parse(a, &r, err) == 0, "%s", err);
    T_ASSERT(r.n_train == 1 && r.train[0].loss == 6 && r.n_val == 1 && r.val[0].step == 0, "restart");
    T_ASSERT(r.n_final == 0 && r.seed == 2, "the first run's final score and seed are gone");
    runlog_free(&r);
    struct {
        const char *text, *want;
    } bad[] = {
        {"step:1/9 train_loss:5 train_time:1ms\nstep:2/9 train_loss:4.x train_time:2ms\n", "t.log:2: bad train_loss"},
        {"step:1/9 train_loss:5 train_time:1ms\nstep:2/9 train_loss:4", "t.log:2: train step line without train_time"},
        {"step:1/9 train_loss:5 train_time:1ms\nstep:9/9 val_loss:3.1", "t.log:2: val_loss without val_bpb"},
        {"step:1/9 train_loss:5 train_time:1ms\nfinal_x_roundtrip_exact val_loss:3.00000000 val_bpb:2.0", "t.log:2: last line cut"},
        {"step:1/9 train_loss:5 train_time:1ms\nstep:2/9", "t.log:2: step line without"},
        {"step:1/9 train_loss:5 train_time:1ms\nconfig SEED=1 (en", "t.log:2: config line without"},
        {"step:1/9 train_loss:5 train_time:1ms\nTotal submission size int8+zlib: 12", "t.log:2: byte count without"},
        {"step:1/9 train_loss:5 train_time:xms\n", "t.log:1: bad train_time"},
        {"model_params:12a\nstep:1/9 train_loss:5 train_time:1ms\n", "t.log:1: bad model_params"},
        {"just text\n", "no training progress lines"},
        {"", "empty file"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        T_ASSERT(parse(bad[i].text, &r, err) != 0, "case %zu accepted", i);
        T_ASSERT(strstr(err, bad[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    /* a complete last line without a newline is fine (some record logs end so) */
    const char *ok = "step:1/9 train_loss:5 train_time:1ms\nfinal_x_roundtrip_exact val_loss:3.00000000 val_bpb:2.00000000";
    T_ASSERT(parse(ok, &r, err) == 0, "%s", err);
    runlog_free(&r);
}
