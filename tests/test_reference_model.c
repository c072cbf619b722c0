/* test_reference_model.c: the records' model features (docs/seeds.md) against the PyTorch
 * reference (tests/reference/ref.py, float64), in the pattern of test_reference.c: pgolf writes the
 * config (JSON of the records' names), random weights and tokens; `ref.py grad` computes the loss,
 * each position's loss and every parameter gradient, `ref.py initcheck` judges gpt_init's tensors
 * against the init rules of the feature. Tolerances as test_reference.c: loss 2e-6 relative,
 * per-token losses and every gradient 1e-5 (max|pgolf - ref| / max|ref| per tensor, the denominator
 * at least GRAD_FLOOR of the largest gradient entry of the model: see check_grads_tol).
 * The presets' parameter counts (configs/<record>.env at full size) are checked against the
 * records' logged model_params without building the model. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
#include "../src/optim.h"
#include "../src/statedict.h"
#include "ref_common.h"
#include "test.h"

/* run-time state of a training step (the reference's RunState) */
#define ST_LATE_QAT 1 /* the late-QAT flag is on */
#define ST_RECUR 2    /* depth recurrence is on */

/* A tensor's gradient is compared on the scale of its largest entry, but of no less than GRAD_FLOOR
 * times the largest gradient entry of the whole model. A gain whose gradient nearly cancels (a VE
 * layer scale of 2.6e-5 in a model whose gradients reach 0.5) is the remainder of a sum of terms many
 * times its size: its fp32 rounding error is set by the terms, and so by the BLAS kernel that made
 * them (its own relative error 4e-6 with OpenBLAS's AVX2 sgemm, 6e-5 with the AVX-512 one picked on
 * a Zen 4: absolute errors of 1e-10 to 2e-9 against entries of 0.3-0.5 elsewhere). A missing or
 * wrong term is still off by about the size of the gradient itself. */
#define GRAD_FLOOR 1e-2

/* loss, per-token losses and every gradient of pgolf against the reference, A micro-batches of B
 * sequences; `names` (comma-separated, optional) must all be parameters of the model; `state`:
 * ST_* bits */
static void check_grads_tol(t_state *t__, const char *label, const kv *cfg, int n_cfg, int B, int A, const char *names,
                            int state, double gtol) {
    T_NEED_TORCH();
    const char *dir = t_tmpdir();
    char cfgp[1024], wp[1024], tp[1024], op[1024], err[PG_ERRLEN];
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    snprintf(wp, sizeof(wp), "%s/weights.safetensors", dir);
    snprintf(tp, sizeof(tp), "%s/tokens.safetensors", dir);
    snprintf(op, sizeof(op), "%s/ref.safetensors", dir);
    pg_config c;
    T_ASSERT(make_config(&c, cfg, n_cfg, cfgp, err, sizeof(err)) == 0, "%s", err);
    const int T = (int)c.train_seq_len, V = (int)c.vocab_size;
    char tbt[32];
    snprintf(tbt, sizeof(tbt), "%d", 8 * B * T);
    T_ASSERT(config_set(&c, "TRAIN_BATCH_TOKENS", tbt, "test", err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(&c, err, sizeof(err)) == 0, "%s", err);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, B, T);
    for (const char *p = names; p && *p;) { /* the feature's tensors exist (the test would pass vacuously otherwise) */
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < m.n_params && !found; i++) found = strlen(m.params[i].name) == n && !strncmp(m.params[i].name, p, n);
        T_ASSERT(found, "%s: no parameter %.*s", label, (int)n, p);
        p = e ? e + 1 : NULL;
    }
    randomize_weights(&m, 2000 + (uint64_t)T * 7 + (uint64_t)m.L);
    if (state & ST_LATE_QAT) T_ASSERT(gpt_step_begin(&m, 1, 0.0) & GPT_SWITCHED_LATE_QAT, "late QAT did not switch on");
    if (state & ST_RECUR)
        T_ASSERT(gpt_step_begin(&m, m.recur_start, 1.0) & GPT_SWITCHED_RECUR, "depth recurrence did not switch on");
    const size_t N = (size_t)A * B * T;
    int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t));
    for (size_t i = 0; i < N; i++) x[i] = (int32_t)(urand() * V) % V, y[i] = (int32_t)(urand() * V) % V;
    T_ASSERT(write_arena(&m, m.w, "", wp, err, sizeof(err)) == 0, "%s", err);
    statedict tk;
    sd_init(&tk);
    int64_t shape[3] = {A, B, T};
    sd_add(&tk, "x", DT_I32, 3, shape, x);
    sd_add(&tk, "y", DT_I32, 3, shape, y);
    T_ASSERT(safetensors_write(tp, &tk, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    sd_free(&tk);

    float *ptl = xmalloc(N * sizeof(float));
    gpt_zero_grad(&m);
    double loss = 0;
    for (int a = 0; a < A; a++)
        loss += gpt_forward_backward(&m, x + (size_t)a * B * T, y + (size_t)a * B * T, B, 1.0f / (float)A,
                                     ptl + (size_t)a * B * T);
    loss /= A;
    T_ASSERT(t_system(REF " grad --config %s --weights %s --tokens %s --out %s%s%s", cfgp, wp, tp, op,
                      state & ST_LATE_QAT ? " --late-qat" : "", state & ST_RECUR ? " --recur" : "") == 0,
             "reference grad failed");
    statedict ref;
    T_ASSERT(safetensors_read(op, &ref, err, sizeof(err)) == 0, "%s", err);
    double *rl = get_f64(&ref, "loss", 1), *rp = get_f64(&ref, "per_token_loss", N);
    T_ASSERT(rl && rp, "reference output lacks loss/per_token_loss");
    T_CLOSE(loss, rl[0], 2e-6, 0, "mean loss");
    double e = rel_err_fd(ptl, rp, N);
    T_ASSERT(e <= 1e-5, "per-token losses: max rel error %.3g", e);
    double worst = 0, gmax = 0;
    const char *worst_name = "";
    for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < m.n_params; i++) {
        const param_info *p = &m.params[i];
        char nm[160];
        snprintf(nm, sizeof(nm), "grad.%s", p->name);
        double *rg = get_f64(&ref, nm, p->numel);
        T_ASSERT(rg, "reference output lacks %s", nm);
        if (pass == 0) { /* the model's largest gradient entry */
            for (size_t k = 0; k < p->numel; k++) gmax = fmax(gmax, fabs(rg[k]));
            free(rg);
            continue;
        }
        double eg = rel_err_fd_floor(m.g + p->offset, rg, p->numel, GRAD_FLOOR * gmax);
        T_ASSERT(eg <= gtol, "%s: gradient max rel error %.3g", p->name, eg);
        if (eg > worst) worst = eg, worst_name = p->name;
        free(rg);
    }
    printf("  %s: loss %.6f, worst gradient rel error %.2g (%s)\n", label, loss, worst, worst_name);
    free(rl);
    free(rp);
    free(ptl);
    free(x);
    free(y);
    sd_free(&ref);
    gpt_free(&m);
    config_free(&c);
}
static void check_grads(t_state *t__, const char *label, const kv *cfg, int n_cfg, int B, int A, const char *names,
                        int state) {
    check_grads_tol(t__, label, cfg, n_cfg, B, A, names, state, 1e-5);
}
#define GRADS(label, B, A, names, ...)                                                             \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        check_grads(t__, label, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), B, A, names, 0);       \
    } while (0)
/* with another gradient tolerance */
#define GRADS_TOL(label, gtol, B, A, names, ...)                                                   \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        check_grads_tol(t__, label, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), B, A, names, 0, gtol); \
    } while (0)
#define GRADS_ST(label, state, B, A, names, ...)                                                   \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        check_grads(t__, label, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), B, A, names, state);   \
    } while (0)

/* gpt_init's tensors against the reference's init rules (ref.py initcheck) */
static void check_init(t_state *t__, const kv *cfg, int n_cfg, const char *names) {
    T_NEED_TORCH();
    const char *dir = t_tmpdir();
    char cfgp[1024], wp[1024], err[PG_ERRLEN];
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    snprintf(wp, sizeof(wp), "%s/weights.safetensors", dir);
    pg_config c;
    T_ASSERT(make_config(&c, cfg, n_cfg, cfgp, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(&c, err, sizeof(err)) == 0, "%s", err);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, 16);
    gpt_init(&m, &c, 1337);
    for (const char *p = names; p && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < m.n_params && !found; i++) found = strlen(m.params[i].name) == n && !strncmp(m.params[i].name, p, n);
        T_ASSERT(found, "no parameter %.*s", (int)n, p);
        p = e ? e + 1 : NULL;
    }
    T_ASSERT(write_arena(&m, m.w, "", wp, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(t_system(REF " initcheck --config %s --weights %s", cfgp, wp) == 0,
             "gpt_init violates the init rules (see the initcheck lines above)");
    gpt_free(&m);
    config_free(&c);
}
#define INIT(names, ...)                                                                           \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        check_init(t__, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), names);                        \
    } while (0)

/* ---- PR #65: MLP 3x, SmearGate before the norm, BigramHash (mult-add hash, projection) ---- */

TEST(refmodel_pr65_smear_bigram_tied) {
    GRADS("PR65 smear+bigram", 2, 2, "smeargate.gate,bigram_hash.table.weight,bigram_hash.proj.weight",
          {"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "40"},
          {"BIGRAM_HASH_DIM", "8"});
}
/* untied head, the smear alone (no bigram), many buckets (every pair its own row) */
TEST(refmodel_pr65_smear_untied_bigram_wide) {
    GRADS("PR65 smear untied", 3, 1, "smeargate.gate,bigram_hash.table.weight,lm_head.weight", {"NUM_LAYERS", "2"},
          {"MODEL_DIM", "24"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "3"}, {"TIE_EMBEDDINGS", "0"},
          {"VOCAB_SIZE", "40"}, {"TRAIN_SEQ_LEN", "12"}, {"PGOLF_SMEAR_MODE", "pre"},
          {"BIGRAM_HASH_BUCKETS", "4096"}, {"BIGRAM_HASH_DIM", "24"});
}
/* PR #65's init: orthogonal c_q/c_k/c_v/fc (square, wide and tall), zero projections (blocks and
 * bigram), table N(0, 0.01^2), gate 3.0 */
TEST(refmodel_pr65_init_rules) {
    INIT("smeargate.gate,bigram_hash.table.weight,bigram_hash.proj.weight", {"NUM_LAYERS", "2"}, {"MODEL_DIM", "128"},
         {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "256"}, {"USE_SMEARGATE", "1"},
         {"BIGRAM_HASH_BUCKETS", "512"}, {"BIGRAM_HASH_DIM", "32"}, {"PGOLF_INIT_STYLE", "ortho"});
}

/* ---- PR #315's embedding side: SmearGate after the norm, BigramHashEmbedding (xor hash, scale) ---- */

TEST(refmodel_pr315_smear_bigram) {
    GRADS("PR315 smear+bigram", 2, 2, "smear.gate,bigram.embed.weight,bigram.proj.weight,bigram.scale",
          {"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3.0"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "37"},
          {"BIGRAM_DIM", "8"});
}
/* BIGRAM_DIM = MODEL_DIM: no projection; fractional MLP_MULT */
TEST(refmodel_pr315_bigram_noproj) {
    GRADS("PR315 bigram no proj", 2, 1, "bigram.embed.weight,bigram.scale", {"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "2.5"}, {"VOCAB_SIZE", "50"}, {"TRAIN_SEQ_LEN", "16"},
          {"BIGRAM_VOCAB_SIZE", "64"}, {"BIGRAM_DIM", "32"});
}
/* PR #315's init: orthogonal where both dims >= 64, x 1/sqrt(2L) on bigram.proj, the constructor's
 * init below 64 (c_k/c_v of 32 rows keep U(+-1/sqrt(in))), zero embed, scale bf16(0.05), gate 0 */
TEST(refmodel_pr315_init_rules) {
    INIT("smear.gate,bigram.embed.weight,bigram.proj.weight,bigram.scale", {"NUM_LAYERS", "3"}, {"MODEL_DIM", "128"},
         {"NUM_HEADS", "8"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3.0"}, {"VOCAB_SIZE", "256"},
         {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "300"}, {"BIGRAM_DIM", "64"},
         {"PGOLF_INIT_STYLE", "ortho_mup"});
}

/* ---- presets at full size: the records' logged model_params ---- */

static void check_preset(t_state *t__, const char *path, size_t expect) {
    pg_config c;
    char err[PG_ERRLEN];
    config_defaults(&c);
    T_ASSERT(config_load_preset(&c, path, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(&c, err, sizeof(err)) == 0, "%s: %s", path, err);
    size_t n = gpt_param_count_cfg(&c);
    T_ASSERT(n == expect, "%s: model_params %zu, the record logs %zu", path, n, expect);
    config_free(&c);
}
TEST(refmodel_preset_pr65_params) { check_preset(t__, "configs/pr65.env", 22368840); }
TEST(refmodel_preset_pr315_params) { check_preset(t__, "configs/pr315.env", 26829913); }
TEST(refmodel_preset_pr453_params) { check_preset(t__, "configs/pr453.env", 26829913); }
TEST(refmodel_preset_pr1311_params) { check_preset(t__, "configs/pr1311.env", 26993756); }
TEST(refmodel_preset_pr1392_params) { check_preset(t__, "configs/pr1392.env", 34400347); }
TEST(refmodel_preset_pr187_params) { check_preset(t__, "configs/pr187.env", 25222224); }

/* ---- PR #315's trunk: XSA on the last N layers, partial RoPE (+ NTK base), LN scale ---- */

/* 5 layers (2 encoder + 3 decoder), XSA on the last 2, GQA 4:2, ROPE_DIMS 4 of 8, LN scale */
TEST(refmodel_pr315_xsa_partial_rope_ln_scale) {
    GRADS("PR315 XSA2 rope4/8 ln_scale", 2, 1, "blocks.4.attn.c_v.weight", {"NUM_LAYERS", "5"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3.0"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"XSA_LAST_N", "2"}, {"ROPE_DIMS", "4"}, {"LN_SCALE", "1"});
}
/* the whole PR #315 model at small size: XSA on every layer (N > L), MQA, the NTK RoPE base
 * (T 40 > PGOLF_ROPE_NTK_REF_LEN 16) with fp32 positions, smear after the norm, bigram with proj */
TEST(refmodel_pr315_model_small) {
    GRADS("PR315 small", 1, 2, "smear.gate,bigram.proj.weight", {"NUM_LAYERS", "3"}, {"MODEL_DIM", "48"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "3.0"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "40"},
          {"XSA_LAST_N", "7"}, {"ROPE_DIMS", "6"}, {"PGOLF_ROPE_NTK", "1"}, {"PGOLF_ROPE_NTK_REF_LEN", "16"},
          {"LN_SCALE", "1"}, {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "31"}, {"BIGRAM_DIM", "16"},
          {"ROPE_BASE", "500"});
}

/* ---- PR #1311 / PR #1392: LeakyReLU(0.5)^2 MLP ---- */

TEST(refmodel_leaky_relu2) {
    GRADS("leaky_relu2", 2, 1, NULL, {"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"},
          {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"PGOLF_MLP_ACTIVATION", "leaky_relu2"});
}
/* with PR #1311's trunk at small size (XSA, partial RoPE, LN scale, smear after the norm, bigram), MLP 4x
 * (PR #1392), another slope */
TEST(refmodel_leaky_relu2_pr1311_trunk) {
    GRADS("leaky_relu2 PR1311 trunk", 1, 2, "smear.gate", {"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"},
          {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "4.0"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}, {"PGOLF_LEAKY_RELU_SLOPE", "0.3"}, {"XSA_LAST_N", "2"},
          {"ROPE_DIMS", "4"}, {"LN_SCALE", "1"}, {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "33"},
          {"BIGRAM_DIM", "8"});
}

/* ---- STE fake quantisation (PR #65 always on, PR #187 always on, late QAT of PR #315/#1311/#1392) ---- */

/* The grids written out again (spec baseline §3.4, §4.8; second spec §2.7, §3.7, §4.6), independent
 * of ops_cpu.c: the quantile by sorting the row. mode as ops.h fake_quant_rows. */
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static void grid_rows(float *out, const float *w, int rows, int cols, int mode, int low) {
    float *a = xmalloc((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        float s, lo = -31.0f, hi = 31.0f, clip = INFINITY;
        if (mode == 1) {
            for (int c = 0; c < cols; c++) a[c] = fabsf(pg_round_bf16(wr[c]));
            qsort(a, (size_t)cols, sizeof(float), cmp_float);
            float pos = 0.9999984f * (float)(cols - 1);
            int k = (int)floorf(pos), k1 = k + 1 < cols ? k + 1 : k;
            float t = pos - (float)k, dd = a[k1] - a[k];
            clip = t < 0.5f ? fmaf(t, dd, a[k]) : fmaf(t - 1.0f, dd, a[k1]);
            if (clip < 1e-8f) clip = 1e-8f;
            s = clip / 31.0f;
            lo = -INFINITY, hi = INFINITY;
        } else {
            float mx = 0;
            for (int c = 0; c < cols; c++) mx = fmaxf(mx, fabsf(wr[c]));
            if (mode == 2) s = fmaxf(mx, 1e-12f) / 31.0f;
            else s = fmaxf(mx / 31.0f, (float)(1.0 / 31.0)), lo = (float)low;
        }
        for (int c = 0; c < cols; c++) {
            float v = mode == 1 ? pg_round_bf16(wr[c]) : wr[c];
            v = fminf(fmaxf(v, -clip), clip);
            float q = fminf(fmaxf(nearbyintf(v / s), lo), hi);
            o[c] = pg_round_bf16(q * s);
        }
    }
    free(a);
}

static void build_cfg_model(t_state *t__, gpt_model *m, pg_config *c, const kv *pairs, int n, int B) {
    char err[PG_ERRLEN];
    config_defaults(c);
    for (int i = 0; i < n; i++) T_ASSERT(config_set(c, pairs[i].k, pairs[i].v, "t", err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(c, err, sizeof(err)) == 0, "%s", err);
    gpt_build(m, c, &pg_cpu_ops, B, (int)c->train_seq_len);
}

/* loss and every gradient of one training forward/backward (grad_scale 1) */
static double fwd_bwd(gpt_model *m, const int32_t *x, const int32_t *y, int B) {
    gpt_zero_grad(m);
    return gpt_forward_backward(m, x, y, B, 1.0f, NULL);
}

/* The STE: a training forward with QAT equals the plain model at the fake-quantised weights (the
 * forward reads the grid's values, the input gradients flow through them), and every gradient
 * equals the plain model's gradient there (the weight gradient passes straight through the
 * rounding): bit for bit. An eval forward (no backward) does not quantise. Late QAT does nothing
 * before its threshold, nothing when inert (PGOLF_LATE_QAT_ACTIVE=0), and quantises after. */
/* PR #1311 arms late QAT only after its lr warmup (step > LR_WARMUP_STEPS); without a warmup the
 * threshold alone decides (PR #315) */
TEST(refmodel_late_qat_after_lr_warmup) {
    const kv base[] = {{"NUM_LAYERS", "2"},       {"MODEL_DIM", "16"},           {"NUM_HEADS", "2"},
                       {"NUM_KV_HEADS", "1"},     {"TRAIN_SEQ_LEN", "8"},        {"TRAIN_BATCH_TOKENS", "64"},
                       {"LATE_QAT_THRESHOLD", "0.15"}, {"LR_WARMUP_STEPS", "5"}};
    for (int warm = 1; warm >= 0; warm--) {
        gpt_model m;
        pg_config c;
        build_cfg_model(t__, &m, &c, base, warm ? 8 : 7, 1);
        if (warm) {
            T_ASSERT(gpt_step_begin(&m, 0, 0.0) == 0, "late QAT at step 0 of the lr warmup");
            T_ASSERT(gpt_step_begin(&m, 5, 0.1) == 0, "late QAT at the last warmup step");
            T_ASSERT(gpt_step_begin(&m, 6, 0.1) == GPT_SWITCHED_LATE_QAT, "late QAT did not switch on after the warmup");
        } else
            T_ASSERT(gpt_step_begin(&m, 0, 0.1) == GPT_SWITCHED_LATE_QAT, "late QAT did not switch on without a warmup");
        gpt_free(&m);
        config_free(&c);
    }
}

TEST(refmodel_qat_ste) {
    static const kv base[] = {{"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                              {"MLP_MULT", "3"}, {"VOCAB_SIZE", "48"}, {"TRAIN_SEQ_LEN", "12"},
                              {"TIE_EMBEDDINGS", "0"}, {"BIGRAM_HASH_BUCKETS", "30"}, {"BIGRAM_HASH_DIM", "8"},
                              {"TRAIN_BATCH_TOKENS", "192"}};
    const int nb = (int)(sizeof(base) / sizeof(base[0])), B = 2;
    struct {
        const char *k1, *v1, *k2, *v2, *k3, *v3;
        int mode, low, late; /* late: 1 active late QAT, 2 inert late QAT */
    } cases[] = {
        {"PGOLF_QAT_MODE", "quantile", NULL, NULL, NULL, NULL, 1, 0, 0},
        {"PGOLF_QAT_MODE", "rowmax", NULL, NULL, NULL, NULL, 2, 0, 0},
        {"LATE_QAT", "1", "QAT_THRESHOLD", "0.1", "PGOLF_LATE_QAT_ACTIVE", "1", 3, -32, 1},
        {"LATE_QAT_THRESHOLD", "0.15", "PGOLF_LATE_QAT_CLAMP_LOW", "-31", "PGOLF_LATE_QAT_ACTIVE", "1", 3, -31, 1},
        {"LATE_QAT_THRESHOLD", "0.15", NULL, NULL, NULL, NULL, 0, 0, 2},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        kv pairs[16];
        memcpy(pairs, base, sizeof(base));
        int n = nb;
        if (cases[ci].k1) pairs[n++] = (kv){cases[ci].k1, cases[ci].v1};
        if (cases[ci].k2) pairs[n++] = (kv){cases[ci].k2, cases[ci].v2};
        if (cases[ci].k3) pairs[n++] = (kv){cases[ci].k3, cases[ci].v3};
        gpt_model q, pl;
        pg_config cq, cp;
        build_cfg_model(t__, &q, &cq, pairs, n, B);
        if (t__->failed) return;
        build_cfg_model(t__, &pl, &cp, base, nb, B);
        if (t__->failed) return;
        T_ASSERT(q.n_floats == pl.n_floats, "layouts differ");
        randomize_weights(&q, 99 + ci);
        const size_t N = (size_t)B * q.T;
        int32_t *x = xmalloc(N * sizeof(int32_t)), *y = xmalloc(N * sizeof(int32_t));
        for (size_t i = 0; i < N; i++) x[i] = (int32_t)(urand() * q.V) % q.V, y[i] = (int32_t)(urand() * q.V) % q.V;
        /* the plain model at the masters */
        memcpy(pl.w, q.w, q.n_floats * sizeof(float));
        gpt_sync_weights(&pl);
        double l_plain = fwd_bwd(&pl, x, y, B);
        if (cases[ci].late) { /* before the threshold: no fake quantisation */
            T_ASSERT(gpt_step_begin(&q, 3, 0.2) == 0, "late QAT switched on above its threshold");
            double l = fwd_bwd(&q, x, y, B);
            T_ASSERT(l == l_plain && !memcmp(q.g, pl.g, q.n_floats * sizeof(float)), "late QAT acts before the switch");
            T_ASSERT(gpt_step_begin(&q, 4, 0.09) == GPT_SWITCHED_LATE_QAT, "late QAT did not switch on at scale 0.09");
            T_ASSERT(gpt_step_begin(&q, 5, 0.05) == 0, "late QAT switched on twice");
        }
        /* eval forwards never quantise */
        T_ASSERT(gpt_forward_backward(&q, x, y, B, 0.0f, NULL) == gpt_forward_backward(&pl, x, y, B, 0.0f, NULL),
                 "case %zu: an eval forward is fake-quantised", ci);
        double l_q = fwd_bwd(&q, x, y, B);
        if (cases[ci].late == 2) { /* inert: the records' effective behaviour */
            T_ASSERT(l_q == l_plain && !memcmp(q.g, pl.g, q.n_floats * sizeof(float)), "inert late QAT changed the step");
        } else {
            /* the plain model at the grid's values of every CastedLinear weight */
            int n_lin = 0;
            for (int i = 0; i < pl.n_params; i++) {
                const param_info *p = &pl.params[i];
                if (!p->linear) continue;
                grid_rows(pl.w + p->offset, q.w + p->offset, (int)p->shape[0], (int)p->shape[1], cases[ci].mode,
                          cases[ci].low);
                n_lin++;
            }
            T_ASSERT(n_lin == 2 * 6 + 2, "case %zu: %d CastedLinear weights (blocks, bigram proj, lm_head)", ci, n_lin);
            gpt_sync_weights(&pl);
            double l_ref = fwd_bwd(&pl, x, y, B);
            T_ASSERT(l_q != l_plain, "case %zu: QAT does not change the loss", ci);
            T_ASSERT(l_q == l_ref, "case %zu: loss %.9g, plain model at the grid's weights %.9g", ci, l_q, l_ref);
            for (int i = 0; i < q.n_params; i++) {
                const param_info *p = &q.params[i];
                T_ASSERT(!memcmp(q.g + p->offset, pl.g + p->offset, p->numel * sizeof(float)),
                         "case %zu: %s: gradient differs from the plain model's at the grid's weights", ci, p->name);
            }
            /* a changed master refreshes the grid (the copy is not stale after an optimizer step) */
            q.w[q.params[q.n_params - 1].offset] += 0.25f;
            gpt_sync_weights(&q);
            T_ASSERT(fwd_bwd(&q, x, y, B) != l_q, "case %zu: the fake-quantised copy was not refreshed", ci);
        }
        free(x);
        free(y);
        gpt_free(&q);
        gpt_free(&pl);
        config_free(&cq);
        config_free(&cp);
    }
}

/* the grids against the reference's: loss and gradients with QAT on */
TEST(refmodel_qat_pr65_quantile) { /* PR #65: smear, bigram, untied head (a CastedLinear too) */
    GRADS("QAT quantile (PR65)", 2, 1, "bigram_hash.proj.weight,lm_head.weight", {"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"TIE_EMBEDDINGS", "0"}, {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "40"}, {"BIGRAM_HASH_DIM", "8"},
          {"PGOLF_QAT_MODE", "quantile"});
}
TEST(refmodel_qat_pr187_rowmax) {
    GRADS("QAT rowmax (PR187)", 1, 2, "bigram_hash.proj.weight", {"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "40"}, {"BIGRAM_HASH_DIM", "8"}, {"PGOLF_QAT_MODE", "rowmax"});
}
/* late QAT made active (the records' flag never took effect), PR #1392's grid (codes -31..31), on
 * PR #315's trunk with its bigram projection */
TEST(refmodel_qat_late_active) {
    GRADS_ST("late QAT (active)", ST_LATE_QAT, 2, 1, "bigram.proj.weight", {"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"},
             {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3.0"}, {"VOCAB_SIZE", "64"},
             {"TRAIN_SEQ_LEN", "16"}, {"XSA_LAST_N", "2"}, {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "37"},
             {"BIGRAM_DIM", "8"}, {"LATE_QAT_THRESHOLD", "0.15"}, {"PGOLF_LATE_QAT_ACTIVE", "1"},
             {"PGOLF_LATE_QAT_CLAMP_LOW", "-31"});
}

/* late QAT switched on in a banked record (PR #1392's form): the records call F.linear on their banks,
 * so only the side CastedLinears (here ve_shared.proj and bigram.proj) are fake-quantised, not the
 * block matrices (tests/reference/xcheck.py's pr1392_qat checks this against the record's code) */
TEST(refmodel_qat_late_active_banked) {
    GRADS_ST("late QAT (active), banked", ST_LATE_QAT | ST_RECUR, 2, 1,
             "recur_scales.0,recur_scales.1,ve_shared.embed.weight,ve_shared.proj.weight,ve_shared.scale,"
             "ve_layer_scales.0,ve_layer_scales.1,bigram.proj.weight",
             {"NUM_LAYERS", "5"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "4.0"},
             {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"XSA_LAST_N", "5"}, {"QK_GAIN_INIT", "5.0"},
             {"ROPE_DIMS", "4"}, {"LN_SCALE", "1"}, {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "37"},
             {"BIGRAM_DIM", "8"}, {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}, {"VE_ENABLED", "1"}, {"VE_DIM", "8"},
             {"VE_LAYERS", "1,4"}, {"PARALLEL_START_LAYER", "3"}, {"RECUR_LAYERS", "1,3"}, {"RECUR_START_STEP", "7"},
             {"PGOLF_OPT_PARTITION", "banked"}, {"LATE_QAT_THRESHOLD", "0.15"}, {"PGOLF_LATE_QAT_ACTIVE", "1"},
             {"PGOLF_LATE_QAT_CLAMP_LOW", "-31"});
}

/* ---- PR #1311 / PR #1392: value embeddings, parallel residuals, depth recurrence ---- */

/* PR #1392's trunk at small size, recurrence on: 5 layers (encoder 0-1, decoder 2-4); layer 1 (the
 * last encoder layer, whose first pass feeds the skip and whose blend feeds layer 2) recurs and adds
 * the VE on both passes; layer 3 is listed but, a decoder layer, never recurs; parallel residuals
 * from layer 3; XSA everywhere (with VE in v), QK gain 5, LeakyReLU^2, LN scale, smear after the norm */
TEST(refmodel_pr1392_trunk_recur) {
    GRADS_ST("PR1392 trunk, recurrence on", ST_RECUR, 2, 1,
             "recur_scales.0,recur_scales.1,ve_shared.embed.weight,ve_shared.proj.weight,ve_shared.scale,"
             "ve_layer_scales.0,ve_layer_scales.1",
             {"NUM_LAYERS", "5"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "4.0"},
             {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"XSA_LAST_N", "5"}, {"QK_GAIN_INIT", "5.0"},
             {"ROPE_DIMS", "4"}, {"LN_SCALE", "1"}, {"PGOLF_SMEAR_MODE", "post"},
             {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}, {"VE_ENABLED", "1"}, {"VE_DIM", "8"}, {"VE_LAYERS", "1,4"},
             {"PARALLEL_START_LAYER", "3"}, {"RECUR_LAYERS", "1,3"}, {"RECUR_START_STEP", "7"});
}
/* PR #1311's form: VE without projection (VE_DIM = Hk*D) beside the bigram, recurrence configured but
 * not yet switched on (recur_scales get no gradient), parallel residuals from the first decoder layer */
TEST(refmodel_pr1311_ve_bigram_parallel) {
    GRADS("PR1311 VE no proj + bigram", 1, 2, "ve_shared.embed.weight,ve_shared.scale,ve_layer_scales.0,recur_scales.0",
          {"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"XSA_LAST_N", "2"}, {"PGOLF_SMEAR_MODE", "post"},
          {"BIGRAM_VOCAB_SIZE", "37"}, {"BIGRAM_DIM", "8"}, {"VE_ENABLED", "1"}, {"VE_DIM", "16"}, {"VE_LAYERS", "0,3"},
          {"PARALLEL_START_LAYER", "2"}, {"RECUR_LAYERS", "1"}, {"PGOLF_MLP_ACTIVATION", "leaky_relu2"});
}
/* the banked records' init: block matrices orthogonal whatever their shape, side Linears (bigram
 * and VE projections) orthogonal when min(shape) >= 64, VE table N(0, 0.01^2), scales 0.1 / 1,
 * recur_scales 0.5 */
TEST(refmodel_pr1392_init_rules) {
    INIT("ve_shared.proj.weight,bigram.proj.weight,recur_scales.0,ve_layer_scales.1", {"NUM_LAYERS", "3"},
         {"MODEL_DIM", "128"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "4.0"}, {"VOCAB_SIZE", "256"},
         {"PGOLF_SMEAR_MODE", "post"}, {"BIGRAM_VOCAB_SIZE", "300"}, {"BIGRAM_DIM", "64"}, {"VE_ENABLED", "1"},
         {"VE_DIM", "64"}, {"VE_LAYERS", "1,2"}, {"RECUR_LAYERS", "0"}, {"PGOLF_INIT_STYLE", "banked"},
         {"QK_GAIN_INIT", "5.0"});
}

/* the mid-run switch (PR #1392, spec §3.5): nothing before RECUR_START_STEP, the recurrence pass
 * from it on, the optimizer groups of the banked partition, recur_scales in no group */
TEST(refmodel_recur_switch_groups) {
    static const kv pairs[] = {{"NUM_LAYERS", "4"},  {"MODEL_DIM", "32"},       {"NUM_HEADS", "4"},
                               {"NUM_KV_HEADS", "2"}, {"VOCAB_SIZE", "48"},      {"TRAIN_SEQ_LEN", "12"},
                               {"TRAIN_BATCH_TOKENS", "96"}, {"RECUR_LAYERS", "1"}, {"RECUR_START_STEP", "5"},
                               {"VE_ENABLED", "1"}, {"VE_DIM", "8"}, {"VE_LAYERS", "2"},
                               {"PGOLF_OPT_PARTITION", "banked"}, {"BIGRAM_VOCAB_SIZE", "20"}, {"BIGRAM_DIM", "8"}};
    gpt_model m;
    pg_config c;
    build_cfg_model(t__, &m, &c, pairs, (int)(sizeof(pairs) / sizeof(pairs[0])), 1);
    if (t__->failed) return;
    randomize_weights(&m, 5);
    int32_t x[12], y[12];
    for (int i = 0; i < 12; i++) x[i] = (int32_t)(urand() * 48) % 48, y[i] = (int32_t)(urand() * 48) % 48;
    T_ASSERT(gpt_step_begin(&m, 4, 1.0) == 0, "recurrence switched on before RECUR_START_STEP");
    double l0 = fwd_bwd(&m, x, y, 1);
    const param_info *rs = NULL;
    for (int i = 0; i < m.n_params; i++) {
        const param_info *p = &m.params[i];
        if (!strcmp(p->name, "recur_scales.0")) rs = p;
        param_group want = !strcmp(p->name, "recur_scales.0")                                       ? GROUP_NONE
                           : !strcmp(p->name, "bigram.proj.weight") || !strcmp(p->name, "ve_shared.proj.weight") ? GROUP_SCALAR
                           : p->group;
        T_ASSERT(p->group == want, "%s: optimizer group %d, expected %d", p->name, (int)p->group, (int)want);
    }
    T_ASSERT(rs, "no recur_scales.0");
    for (size_t k = 0; k < rs->numel; k++) T_ASSERT(m.g[rs->offset + k] == 0.0f, "recur_scales has a gradient before the switch");
    T_ASSERT(gpt_step_begin(&m, 5, 1.0) == GPT_SWITCHED_RECUR, "recurrence did not switch on at RECUR_START_STEP");
    T_ASSERT(gpt_step_begin(&m, 6, 1.0) == 0, "recurrence switched on twice");
    double l1 = fwd_bwd(&m, x, y, 1);
    T_ASSERT(l1 != l0, "the recurrence pass does not change the loss");
    double gs = 0;
    for (size_t k = 0; k < rs->numel; k++) gs += fabs(m.g[rs->offset + k]);
    T_ASSERT(gs > 0, "recur_scales has no gradient after the switch");
    gpt_free(&m);
    config_free(&c);
}

/* ---- PR #187: GELU pre-enrichment, encoder recurrence, overtone init, its bigram and Muon partition ---- */

/* pre-enrichment d 32 -> 48 -> 32 (the reference's hidden is 3d/2) after SmearGate (before the norm)
 * and PR #187's BigramHash (proj at nn.Linear's init, table and proj in Muon: no effect on grads) */
TEST(refmodel_pr187_pre_enrich) {
    GRADS("PR187 pre-enrichment", 2, 1, "pre_enrich.0.weight,pre_enrich.2.weight,smeargate.gate,bigram_hash.proj.weight",
          {"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "40"},
          {"BIGRAM_HASH_DIM", "8"}, {"PGOLF_OPT_PARTITION", "pr187"}, {"pg:PGOLF_PRE_ENRICH", "48"},
          {"ref:PRE_ENRICH", "1"}, {"ref:BIGRAM_HASH_PROJ_INIT", "default"});
}
/* pre-enrichment alone (no smear, no bigram), untied head, with SmearGate after the norm */
TEST(refmodel_pr187_pre_enrich_post_smear_untied) {
    GRADS("pre-enrichment + post smear, untied", 1, 2, "pre_enrich.0.weight,smear.gate,lm_head.weight",
          {"NUM_LAYERS", "2"}, {"MODEL_DIM", "24"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"},
          {"VOCAB_SIZE", "40"}, {"TRAIN_SEQ_LEN", "12"}, {"TIE_EMBEDDINGS", "0"}, {"PGOLF_SMEAR_MODE", "post"},
          {"pg:PGOLF_PRE_ENRICH", "36"}, {"ref:PRE_ENRICH", "1"});
}
/* encoder recurrence: 5 layers (encoder 0-1 run twice, RMSNorm between the passes; decoder 2-4, skips
 * from the second pass), XSA in the last 2 (decoder) layers, LN scale (the passes share layer i's
 * factor) */
TEST(refmodel_pr187_encoder_recurrence) {
    GRADS("PR187 encoder recurrence", 2, 1, "skip_weights", {"NUM_LAYERS", "5"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"ENCODER_RECURRENCE", "1"}, {"XSA_LAST_N", "2"}, {"LN_SCALE", "1"});
}
/* encoder recurrence with XSA in every layer (the first pass's XSA too) and an even split */
TEST(refmodel_pr187_encoder_recurrence_xsa_all) {
    GRADS("PR187 encoder recurrence, XSA all", 1, 2, "skip_weights", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"}, {"VOCAB_SIZE", "50"}, {"TRAIN_SEQ_LEN", "16"},
          {"ENCODER_RECURRENCE", "1"}, {"XSA_LAST_N", "4"});
}
/* the PR #187 preset at reduced width and depth (configs/pr187.env's model keys): 4 layers of d 32,
 * MLP 3x relu^2, smear before the norm, BigramHash with its default-init proj, pre-enrichment 3d/2,
 * encoder recurrence, XSA on the last 2, QK gain 1.5, always-on rowmax QAT, tied head */
TEST(refmodel_pr187_model_small) {
    GRADS("PR187 small", 2, 2,
          "pre_enrich.0.weight,pre_enrich.2.weight,smeargate.gate,bigram_hash.table.weight,bigram_hash.proj.weight",
          {"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"QK_GAIN_INIT", "1.5"}, {"USE_SMEARGATE", "1"},
          {"BIGRAM_HASH_BUCKETS", "64"}, {"BIGRAM_HASH_DIM", "8"}, {"PGOLF_OPT_PARTITION", "pr187"},
          {"ref:BIGRAM_HASH_PROJ_INIT", "default"}, {"pg:PGOLF_PRE_ENRICH", "48"}, {"ref:PRE_ENRICH", "1"},
          {"ENCODER_RECURRENCE", "1"}, {"XSA_LAST_N", "2"}, {"PGOLF_QAT_MODE", "rowmax"});
}
/* PR #187's init: pre_enrich U(+-1/sqrt(in)) both ways, bigram proj U(+-1/sqrt(64)) (not zero as
 * PR #65's), table N(0, 0.01^2), gate 3, no orthogonal init */
TEST(refmodel_pr187_init_rules) {
    INIT("pre_enrich.0.weight,pre_enrich.2.weight,bigram_hash.proj.weight,bigram_hash.table.weight,smeargate.gate",
         {"NUM_LAYERS", "2"}, {"MODEL_DIM", "128"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
         {"VOCAB_SIZE", "256"}, {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "512"}, {"BIGRAM_HASH_DIM", "64"},
         {"PGOLF_OPT_PARTITION", "pr187"}, {"ref:BIGRAM_HASH_PROJ_INIT", "default"}, {"pg:PGOLF_PRE_ENRICH", "192"},
         {"ref:PRE_ENRICH", "1"}, {"ENCODER_RECURRENCE", "1"});
}
/* PGOLF_OPT_PARTITION=pr187: bigram table and proj and both pre_enrich matrices in Muon, the rest as
 * the baseline's split */
TEST(refmodel_pr187_groups) {
    static const kv pairs[] = {{"NUM_LAYERS", "2"},         {"MODEL_DIM", "32"},          {"NUM_HEADS", "4"},
                               {"NUM_KV_HEADS", "2"},        {"VOCAB_SIZE", "48"},         {"TRAIN_SEQ_LEN", "12"},
                               {"TRAIN_BATCH_TOKENS", "96"}, {"USE_SMEARGATE", "1"},       {"BIGRAM_HASH_BUCKETS", "30"},
                               {"BIGRAM_HASH_DIM", "8"},     {"PGOLF_PRE_ENRICH", "48"},   {"PGOLF_OPT_PARTITION", "pr187"}};
    for (int part = 0; part < 2; part++) {
        gpt_model m;
        pg_config c;
        build_cfg_model(t__, &m, &c, pairs, (int)(sizeof(pairs) / sizeof(pairs[0])) - (part ? 0 : 1), 1);
        if (t__->failed) return;
        int seen = 0;
        for (int i = 0; i < m.n_params; i++) {
            const param_info *p = &m.params[i];
            param_group want = p->group;
            if (!strcmp(p->name, "bigram_hash.table.weight")) want = part ? GROUP_MUON : GROUP_TOKEN, seen++;
            if (!strcmp(p->name, "bigram_hash.proj.weight") || !strncmp(p->name, "pre_enrich.", 11)) want = GROUP_MUON, seen++;
            if (!strcmp(p->name, "tok_emb.weight")) want = GROUP_TOKEN;
            if (!strcmp(p->name, "smeargate.gate") || !strcmp(p->name, "skip_weights")) want = GROUP_SCALAR;
            T_ASSERT(p->group == want, "partition %s: %s in group %d, expected %d", part ? "pr187" : "default", p->name,
                     (int)p->group, (int)want);
            /* PR #187's bigram proj keeps nn.Linear's init, PR #65's is zeroed */
            if (!strcmp(p->name, "bigram_hash.proj.weight"))
                T_ASSERT(part ? p->init == INIT_UNIFORM && fabsf(p->init_a - 1.0f / sqrtf(8.0f)) < 1e-7f : p->init == INIT_ZERO,
                         "bigram_hash.proj init %d", (int)p->init);
            T_ASSERT(!strncmp(p->name, "pre_enrich.", 11) ? p->linear : 1, "%s is not QAT'd as a CastedLinear", p->name);
        }
        T_ASSERT(seen == 4, "partition tensors found: %d", seen);
        gpt_free(&m);
        config_free(&c);
    }
}

/* overtone init (spec §4.5) of a 96x48 tied table: the singular values of the result are
 * S_0*(i+1)^-1/2 with S_0 the top singular value of the N(0, std^2) draw (the draw with the same seed
 * is the table of the same model without overtone, bf16-rounded), and the singular vectors are the
 * draw's: W'^T W_draw = V S' S V^T is symmetric (and positive definite), which a reshaped spectrum on
 * other vectors is not. Up to the bf16 rounding of both tables (2^-8 relative). */
/* the test's own SVD: LAPACK's, as the implementation's (OpenBLAS) */
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork,
                    int *info, size_t jobu_len, size_t jobvt_len);
static void singular_values(const float *w, int rows, int cols, double *s) {
    double *a = xmalloc((size_t)rows * cols * sizeof(double));
    for (size_t i = 0; i < (size_t)rows * cols; i++) a[i] = w[i];
    int M = cols, N = rows, lwork = -1, info = 0, one = 1;
    double wq, du, dv;
    dgesvd_("N", "N", &M, &N, a, &M, s, &du, &one, &dv, &one, &wq, &lwork, &info, 1, 1);
    lwork = (int)wq;
    double *work = xmalloc((size_t)lwork * sizeof(double));
    dgesvd_("N", "N", &M, &N, a, &M, s, &du, &one, &dv, &one, work, &lwork, &info, 1, 1);
    PG_CHECK(info == 0);
    free(work);
    free(a);
}
TEST(refmodel_overtone_init) {
    const int V = 96, d = 48;
    kv pairs[] = {{"NUM_LAYERS", "1"},  {"MODEL_DIM", "48"},          {"NUM_HEADS", "2"},
                  {"NUM_KV_HEADS", "1"}, {"VOCAB_SIZE", "96"},        {"TRAIN_SEQ_LEN", "8"},
                  {"TRAIN_BATCH_TOKENS", "64"}, {"TIED_EMBED_INIT_STD", "0.02"}, {"PGOLF_OVERTONE_INIT", "1"}};
    const int np = (int)(sizeof(pairs) / sizeof(pairs[0]));
    gpt_model mo, md;
    pg_config co, cd;
    build_cfg_model(t__, &mo, &co, pairs, np, 1);
    if (t__->failed) return;
    build_cfg_model(t__, &md, &cd, pairs, np - 1, 1);
    if (t__->failed) return;
    gpt_init(&mo, &co, 1337);
    gpt_init(&md, &cd, 1337);
    const float *wo = mo.tok_emb, *wd = md.tok_emb;
    double so[48], sd[48];
    singular_values(wo, V, d, so);
    singular_values(wd, V, d, sd);
    /* the draw's top singular value is about std*(sqrt(V) + sqrt(d)); the anchor is the draw's */
    T_ASSERT(sd[0] > 0.02 * (sqrt(V) + sqrt(d)) * 0.8 && sd[0] < 0.02 * (sqrt(V) + sqrt(d)) * 1.2,
             "draw S_0 %.4g (std 0.02)", sd[0]);
    T_CLOSE(so[0], sd[0], 2e-3, 0, "S_0 of the overtone table vs the draw's");
    double worst = 0;
    for (int i = 0; i < d; i++) {
        double want = sd[0] / sqrt(i + 1.0), e = fabs(so[i] - want) / sd[0];
        if (e > worst) worst = e;
    }
    T_ASSERT(worst < 4e-3, "singular values off the S_0*(i+1)^-1/2 law by %.3g of S_0", worst);
    /* the draw's spectrum is not already a power law (else the test says nothing) */
    T_ASSERT(fabs(sd[d - 1] - sd[0] / sqrt((double)d)) > 0.05 * sd[0], "the draw's spectrum looks reshaped");
    /* G = W'^T W_draw (d x d) symmetric and positive on the diagonal */
    double asym = 0, gmax = 0;
    double *G = xcalloc((size_t)d * d, sizeof(double));
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double g = 0;
            for (int r = 0; r < V; r++) g += (double)wo[(size_t)r * d + a] * wd[(size_t)r * d + b];
            G[(size_t)a * d + b] = g;
        }
    for (int a = 0; a < d; a++) {
        T_ASSERT(G[(size_t)a * d + a] > 0, "W'^T W has a non-positive diagonal entry");
        for (int b = 0; b < d; b++) {
            asym = fmax(asym, fabs(G[(size_t)a * d + b] - G[(size_t)b * d + a]));
            gmax = fmax(gmax, fabs(G[(size_t)a * d + b]));
        }
    }
    /* and each singular vector keeps its rank: trace(G) = sum_i S'_i S_i with S'_i = S_0 (i+1)^-1/2 */
    double tr = 0, want_tr = 0;
    for (int a = 0; a < d; a++) tr += G[(size_t)a * d + a], want_tr += sd[0] / sqrt(a + 1.0) * sd[a];
    free(G);
    T_ASSERT(asym <= 0.01 * gmax, "W'^T W_draw is not symmetric (%.3g of its largest entry): other singular vectors",
             asym / gmax);
    T_CLOSE(tr, want_tr, 0.01, 0, "<W', W_draw> (the reshaped values on the draw's vectors, in order)");
    /* every value bf16, the other tensors untouched by the flag */
    for (int i = 0; i < V * d; i++) T_ASSERT(pg_round_bf16(wo[i]) == wo[i], "tok_emb value not bf16");
    for (int i = 0; i < mo.n_params; i++)
        if (i != mo.i_tok_emb)
            T_ASSERT(!memcmp(mo.w + mo.params[i].offset, md.w + md.params[i].offset, mo.params[i].numel * sizeof(float)),
                     "%s differs with PGOLF_OVERTONE_INIT", mo.params[i].name);
    printf("  overtone %dx%d: S_0 %.4g, worst law error %.2g of S_0, asymmetry %.2g, trace %.5g (law %.5g)\n", V, d,
           so[0], worst, asym / gmax, tr, want_tr);
    gpt_free(&mo);
    gpt_free(&md);
    config_free(&co);
    config_free(&cd);
}
/* untied: the flag leaves the table at nn.Embedding's N(0, 1), as the record reshapes only a tied one */
TEST(refmodel_overtone_untied_noop) {
    kv pairs[] = {{"NUM_LAYERS", "1"}, {"MODEL_DIM", "16"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"},
                  {"VOCAB_SIZE", "32"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"}, {"TIE_EMBEDDINGS", "0"},
                  {"PGOLF_OVERTONE_INIT", "1"}};
    gpt_model m;
    pg_config c;
    build_cfg_model(t__, &m, &c, pairs, (int)(sizeof(pairs) / sizeof(pairs[0])), 1);
    if (t__->failed) return;
    T_ASSERT(m.params[m.i_tok_emb].init == INIT_NORMAL && m.params[m.i_tok_emb].init_a == 1.0f, "untied table init %d",
             (int)m.params[m.i_tok_emb].init);
    gpt_free(&m);
    config_free(&c);
}

/* ---- PR #187's optimizer side: Muon WD after the update, the pr187 partition (bigram table and proj,
 * pre_enrich in Muon) ---- */

/* S optimizer steps of fixed random gradients (every tensor its own scale) with the given lr
 * multipliers, pgolf against `ref.py step --grads`; every tensor's update (after - before) within tol */
static void check_optim_fixed(t_state *t__, const kv *pairs, int np, int S, const char *mults, double tol) {
    T_NEED_TORCH();
    const char *dir = t_tmpdir();
    char cfgp[1024], wp[1024], gp[1024], op[1024], err[PG_ERRLEN];
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    snprintf(wp, sizeof(wp), "%s/weights.safetensors", dir);
    snprintf(gp, sizeof(gp), "%s/grads.safetensors", dir);
    snprintf(op, sizeof(op), "%s/ref.safetensors", dir);
    pg_config c;
    T_ASSERT(make_config(&c, pairs, np, cfgp, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(config_validate(&c, err, sizeof(err)) == 0, "%s", err);
    gpt_model m;
    gpt_build(&m, &c, &pg_cpu_ops, 1, (int)c.train_seq_len);
    randomize_weights(&m, 187);
    float *w0 = xmalloc(m.n_floats * sizeof(float)), *g0 = xcalloc(m.n_floats, sizeof(float));
    memcpy(w0, m.w, m.n_floats * sizeof(float));
    for (int i = 0; i < m.n_params; i++) {
        float sc = powf(10.0f, usym(1.5f));
        for (size_t k = 0; k < m.params[i].numel; k++) g0[m.params[i].offset + k] = usym(sc);
    }
    T_ASSERT(write_arena(&m, w0, "", wp, err, sizeof(err)) == 0, "%s", err);
    T_ASSERT(write_arena(&m, g0, "grad.", gp, err, sizeof(err)) == 0, "%s", err);
    optimizer o;
    optim_init(&o, &m);
    const char *mp = mults;
    for (int s = 0; s < S; s++) {
        double mult = strtod(mp, (char **)&mp);
        if (*mp == ',') mp++;
        memcpy(m.g, g0, m.n_floats * sizeof(float));
        optim_clip_grad_norm(&o, c.grad_clip_norm);
        optim_step(&o, &c, mult);
    }
    T_ASSERT(t_system(REF " step --config %s --weights %s --grads %s --steps %d --lr-mult %s --out %s", cfgp, wp, gp, S,
                      mults, op) == 0,
             "reference step failed");
    statedict ref;
    T_ASSERT(safetensors_read(op, &ref, err, sizeof(err)) == 0, "%s", err);
    double worst = 0;
    const char *worst_name = "";
    int n_muon = 0;
    for (int i = 0; i < m.n_params; i++) {
        const param_info *p = &m.params[i];
        double *r = get_f64(&ref, p->name, p->numel);
        T_ASSERT(r, "reference output lacks %s", p->name);
        double *dc = xmalloc(p->numel * sizeof(double)), *dr = xmalloc(p->numel * sizeof(double)), maxd = 0;
        for (size_t k = 0; k < p->numel; k++) {
            dc[k] = (double)m.w[p->offset + k] - w0[p->offset + k];
            dr[k] = r[k] - w0[p->offset + k];
            maxd = fmax(maxd, fabs(dr[k]));
        }
        T_ASSERT(maxd > 0, "%s: the reference did not update it", p->name);
        double e = rel_err_dd(dc, dr, p->numel);
        T_ASSERT(e <= tol, "%s (group %d): update max rel error %.3g after %d steps", p->name, (int)p->group, e, S);
        if (e > worst) worst = e, worst_name = p->name;
        n_muon += p->group == GROUP_MUON;
        free(dc);
        free(dr);
        free(r);
    }
    printf("  %d step(s), %d Muon tensors: worst update rel error %.2g (%s)\n", S, n_muon, worst, worst_name);
    sd_free(&ref);
    optim_free(&o);
    free(w0);
    free(g0);
    gpt_free(&m);
    config_free(&c);
}
#define OPTIM_FIXED(S, mults, tol, ...)                                                             \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        check_optim_fixed(t__, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), S, mults, tol);          \
    } while (0)

/* PR #187's optimizer: Muon WD after the update (p *= 1 - lr*wd with the step's Muon lr), the bigram
 * table (tall 40x8: shape scale sqrt(5)) and proj and both pre_enrich matrices in Muon, AdamW with
 * decay on the token and scalar groups, momentum warmup, a warmdown */
TEST(refmodel_optim_pr187_wd_after) {
    OPTIM_FIXED(5, "1,1,0.75,0.5,0.25", 2e-5, {"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"},
                {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
                {"TRAIN_BATCH_TOKENS", "128"}, {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "40"},
                {"BIGRAM_HASH_DIM", "8"}, {"PGOLF_OPT_PARTITION", "pr187"}, {"ref:BIGRAM_HASH_PROJ_INIT", "default"},
                {"pg:PGOLF_PRE_ENRICH", "48"}, {"ref:PRE_ENRICH", "1"}, {"MATRIX_LR", "0.1"}, {"SCALAR_LR", "0.07"},
                {"TIED_EMBED_LR", "0.1"}, {"MUON_WD", "0.3"}, {"ADAM_WD", "0.2"}, {"pg:PGOLF_MUON_WD_AFTER", "1"},
                {"ref:MUON_WD_PLACEMENT", "after"}, {"MUON_MOMENTUM", "0.95"}, {"MUON_MOMENTUM_WARMUP_START", "0.6"},
                {"MUON_MOMENTUM_WARMUP_STEPS", "3"});
}

/* ---- the two-lane parallel residuals of PR #1289 and PR #1334 (second spec §3.4) ---- */

/* PR #1289: 6 layers (encoder 0-2, decoder 3-5), lanes from layer 4: layer 3 sequential, 4 the first
 * lane block (both lanes from the skip sum), 5 a lane block whose skip goes to both lanes;
 * resid_mix_mlp, route (4 scalars), lane_merge; XSA on the last 3, LN scale, VE in a lane block.
 * Gradient tolerance 4e-5: the two lanes stay close (route ~1), so lane_merge's gradient sum(dx*(xa-xb))
 * and the lane blocks' q_gain sums cancel; the reference run in float32 differs from itself in float64
 * by up to 8e-6 on them (every matrix and vector gradient here is within 3e-6). */
TEST(refmodel_lanes1289) {
    GRADS_TOL("lanes PR1289", 4e-5, 2, 1,
          "lane_merge,blocks.4.route,blocks.5.route,blocks.4.resid_mix_mlp,blocks.5.resid_mix_mlp,ve_layer_scales.0",
          {"NUM_LAYERS", "6"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"},
          {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"PARALLEL_START_LAYER", "4"},
          {"pg:PGOLF_PARALLEL_MODE", "lanes1289"}, {"ref:PARALLEL_MODE", "lanes1289"}, {"XSA_LAST_N", "3"},
          {"LN_SCALE", "1"}, {"VE_ENABLED", "1"}, {"VE_DIM", "8"}, {"VE_LAYERS", "5"}, {"ROPE_DIMS", "4"});
}
/* PR #1289 from the first decoder layer of an odd split (5 layers: decoder 2-4 all lanes, the last
 * decoder layer without a skip), untied head, smear after the norm, LeakyReLU^2 */
TEST(refmodel_lanes1289_from_first_decoder) {
    GRADS_TOL("lanes PR1289 from layer 2", 4e-5, 1, 2, "lane_merge,blocks.2.route,blocks.4.resid_mix_mlp,lm_head.weight",
          {"NUM_LAYERS", "5"}, {"MODEL_DIM", "24"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"MLP_MULT", "2"},
          {"VOCAB_SIZE", "40"}, {"TRAIN_SEQ_LEN", "12"}, {"TIE_EMBEDDINGS", "0"}, {"PARALLEL_START_LAYER", "2"},
          {"pg:PGOLF_PARALLEL_MODE", "lanes1289"}, {"ref:PARALLEL_MODE", "lanes1289"}, {"PGOLF_SMEAR_MODE", "post"},
          {"PGOLF_MLP_ACTIVATION", "leaky_relu2"});
}
/* PR #1334: 6 layers, lanes from layer 4: the MLP lane without x0 mix, the attention lane's residual
 * base its x0 mix, no route; layer 5's skip is dropped (skip_weights row 2 gets no gradient) */
TEST(refmodel_lanes1334) {
    GRADS("lanes PR1334", 2, 1, "lane_merge,skip_weights", {"NUM_LAYERS", "6"}, {"MODEL_DIM", "32"},
          {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "3"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
          {"PARALLEL_START_LAYER", "4"}, {"pg:PGOLF_PARALLEL_MODE", "lanes1334"}, {"ref:PARALLEL_MODE", "lanes1334"},
          {"XSA_LAST_N", "6"}, {"LN_SCALE", "1"}, {"VE_ENABLED", "1"}, {"VE_DIM", "8"}, {"VE_LAYERS", "4,5"},
          {"QK_GAIN_INIT", "5.0"}, {"PGOLF_MLP_ACTIVATION", "leaky_relu2"});
}
/* PR #1334 from the first decoder layer of 7 (decoder 3-6: skips of layers 4, 5 dropped) */
TEST(refmodel_lanes1334_from_first_decoder) {
    GRADS("lanes PR1334 from layer 3", 1, 2, "lane_merge", {"NUM_LAYERS", "7"}, {"MODEL_DIM", "16"},
          {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "2"}, {"MLP_MULT", "2"}, {"VOCAB_SIZE", "32"}, {"TRAIN_SEQ_LEN", "8"},
          {"PARALLEL_START_LAYER", "3"}, {"pg:PGOLF_PARALLEL_MODE", "lanes1334"}, {"ref:PARALLEL_MODE", "lanes1334"},
          {"USE_SMEARGATE", "1"}, {"BIGRAM_HASH_BUCKETS", "16"}, {"BIGRAM_HASH_DIM", "8"});
}
/* their parameters: inits (route ones, resid_mix_mlp [ones; zeros], lane_merge 0.5) by the reference's
 * initcheck, groups (scalar AdamW), and which layers have them */
TEST(refmodel_lanes_params) {
    INIT("lane_merge,blocks.2.route,blocks.3.route,blocks.2.resid_mix_mlp,blocks.3.resid_mix_mlp", {"NUM_LAYERS", "4"},
         {"MODEL_DIM", "64"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "2"}, {"VOCAB_SIZE", "128"},
         {"PARALLEL_START_LAYER", "2"}, {"pg:PGOLF_PARALLEL_MODE", "lanes1289"}, {"ref:PARALLEL_MODE", "lanes1289"});
    if (t__->failed || t__->skipped) return;
    INIT("lane_merge", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "64"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "2"},
         {"VOCAB_SIZE", "128"}, {"PARALLEL_START_LAYER", "3"}, {"pg:PGOLF_PARALLEL_MODE", "lanes1334"},
         {"ref:PARALLEL_MODE", "lanes1334"});
    if (t__->failed) return;
    const char *modes[] = {"lanes1289", "lanes1334", "sum"};
    for (int k = 0; k < 3; k++) {
        kv pairs[] = {{"NUM_LAYERS", "5"}, {"MODEL_DIM", "16"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"},
                      {"VOCAB_SIZE", "32"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
                      {"PARALLEL_START_LAYER", "3"}, {"PGOLF_PARALLEL_MODE", modes[k]}};
        gpt_model m;
        pg_config c;
        build_cfg_model(t__, &m, &c, pairs, (int)(sizeof(pairs) / sizeof(pairs[0])), 1);
        if (t__->failed) return;
        int n_route = 0, n_rmm = 0, n_merge = 0;
        for (int i = 0; i < m.n_params; i++) {
            const param_info *p = &m.params[i];
            int l = -1;
            sscanf(p->name, "blocks.%d.", &l);
            if (strstr(p->name, ".route")) {
                n_route++;
                T_ASSERT(l >= 3 && p->numel == 4, "%s", p->name);
            }
            if (strstr(p->name, "resid_mix_mlp")) {
                n_rmm++;
                T_ASSERT(l >= 3 && p->numel == 32, "%s", p->name);
            }
            if (!strcmp(p->name, "lane_merge")) {
                n_merge++;
                T_ASSERT(p->ndim == 0, "lane_merge is not a scalar");
            }
            if (strstr(p->name, ".route") || strstr(p->name, "resid_mix_mlp") || !strcmp(p->name, "lane_merge"))
                T_ASSERT(p->group == GROUP_SCALAR, "%s: group %d, expected the scalar AdamW group", p->name, (int)p->group);
        }
        const int want1289 = k == 0, want_lanes = k < 2;
        T_ASSERT(n_route == (want1289 ? 2 : 0) && n_rmm == (want1289 ? 2 : 0) && n_merge == want_lanes,
                 "%s: %d route, %d resid_mix_mlp, %d lane_merge", modes[k], n_route, n_rmm, n_merge);
        T_ASSERT(gpt_param_count_cfg(&c) == m.n_count, "count without building differs");
        gpt_free(&m);
        config_free(&c);
    }
}

/* ---- refusals: an op the backend lacks, combinations no record ran ---- */

/* the configuration is refused by config_validate with an error containing the patterns, or else
 * gpt_build of it (with `ops`) in a child process must exit 1 with one `pgolf: error:` line
 * containing each of them */
static void build_dies(t_state *t__, const kv *pairs, int n, const pg_ops *ops, const char *pat1, const char *pat2) {
    pg_config c;
    char err[PG_ERRLEN], path[1024];
    config_defaults(&c);
    for (int i = 0; i < n; i++) T_ASSERT(config_set(&c, pairs[i].k, pairs[i].v, "t", err, sizeof(err)) == 0, "%s", err);
    if (config_validate(&c, err, sizeof(err)) != 0) {
        config_free(&c);
        T_ASSERT(strstr(err, pat1) && (!pat2 || strstr(err, pat2)), "validation error '%s' lacks '%s' / '%s'", err, pat1,
                 pat2 ? pat2 : "");
        return;
    }
    snprintf(path, sizeof(path), "%s/stderr.txt", t_tmpdir());
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    T_ASSERT(pid >= 0, "fork failed");
    if (pid == 0) {
        if (!freopen(path, "w", stderr)) _exit(99);
        gpt_model m;
        gpt_build(&m, &c, ops, 1, (int)c.train_seq_len);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    config_free(&c);
    char line[1024] = "";
    FILE *f = fopen(path, "r");
    T_ASSERT(f, "no stderr file");
    int lines = 0;
    char buf[1024];
    while (fgets(buf, sizeof(buf), f))
        if (lines++ == 0) snprintf(line, sizeof(line), "%s", buf);
    fclose(f);
    T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1, "gpt_build did not die (status %d)", st);
    T_ASSERT(lines == 1 && !strncmp(line, "pgolf: error: ", 14) && strstr(line, pat1) && (!pat2 || strstr(line, pat2)),
             "error output (%d lines) '%s' lacks '%s' / '%s'", lines, line, pat1, pat2 ? pat2 : "");
}
#define BUILD_DIES(ops, pat1, pat2, ...)                                                           \
    do {                                                                                           \
        const kv cfg_[] = {__VA_ARGS__};                                                           \
        build_dies(t__, cfg_, (int)(sizeof(cfg_) / sizeof(cfg_[0])), ops, pat1, pat2);              \
        if (t__->failed) return;                                                                   \
    } while (0)

/* a backend without GELU or the lane routing (the CUDA table until it has them) refuses the model */
TEST(refmodel_missing_op_refused) {
    pg_ops no_gelu = pg_cpu_ops, no_route = pg_cpu_ops;
    no_gelu.name = "testbackend";
    no_gelu.gelu_fwd = NULL;
    no_route.name = "testbackend";
    no_route.lane_route_bwd = NULL;
    BUILD_DIES(&no_gelu, "PGOLF_PRE_ENRICH", "testbackend", {"NUM_LAYERS", "2"}, {"MODEL_DIM", "16"},
               {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"PGOLF_PRE_ENRICH", "24"});
    BUILD_DIES(&no_route, "lanes1289", "testbackend", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "16"}, {"NUM_HEADS", "2"},
               {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"PARALLEL_START_LAYER", "2"}, {"PGOLF_PARALLEL_MODE", "lanes1289"});
    /* PR #1334's lanes need no new op */
    pg_config c;
    gpt_model m;
    const kv ok[] = {{"NUM_LAYERS", "4"},  {"MODEL_DIM", "16"},          {"NUM_HEADS", "2"},
                     {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"},       {"TRAIN_BATCH_TOKENS", "64"},
                     {"PARALLEL_START_LAYER", "2"}, {"PGOLF_PARALLEL_MODE", "lanes1334"}};
    char err[PG_ERRLEN];
    config_defaults(&c);
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        T_ASSERT(config_set(&c, ok[i].k, ok[i].v, "t", err, sizeof(err)) == 0, "%s", err);
    gpt_build(&m, &c, &no_route, 1, 8);
    gpt_free(&m);
    config_free(&c);
}
/* combinations that no record ran and the reference does not define are refused with one line */
TEST(refmodel_feature_combinations_refused) {
    BUILD_DIES(&pg_cpu_ops, "ENCODER_RECURRENCE", "RECUR_LAYERS", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "16"},
               {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"ENCODER_RECURRENCE", "1"}, {"RECUR_LAYERS", "1"});
    BUILD_DIES(&pg_cpu_ops, "ENCODER_RECURRENCE", "PARALLEL_START_LAYER", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "16"},
               {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"ENCODER_RECURRENCE", "1"}, {"PARALLEL_START_LAYER", "3"});
    BUILD_DIES(&pg_cpu_ops, "lanes1334", "RECUR_LAYERS", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "16"}, {"NUM_HEADS", "2"},
               {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"PARALLEL_START_LAYER", "3"}, {"PGOLF_PARALLEL_MODE", "lanes1334"}, {"RECUR_LAYERS", "0"});
    BUILD_DIES(&pg_cpu_ops, "lanes1289", "decoder layer", {"NUM_LAYERS", "4"}, {"MODEL_DIM", "16"},
               {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"TRAIN_SEQ_LEN", "8"}, {"TRAIN_BATCH_TOKENS", "64"},
               {"PARALLEL_START_LAYER", "1"}, {"PGOLF_PARALLEL_MODE", "lanes1289"});
}

/* The model keys of a preset file itself (read from the file, so a preset edit is covered) at
 * reduced size, loss and every gradient against the reference: the keys that shape the forward go
 * to both sides, training/export/eval keys to pgolf alone, then the reduced-size overrides `extra`
 * (pgolf-only and reference-only spellings as pg:/ref: pairs). */
static void check_preset_small(t_state *t__, const char *preset, const kv *extra, int n_extra, const char *names,
                               int state) {
    FILE *f = fopen(preset, "r");
    T_ASSERT(f, "%s: cannot open", preset);
    static char keys[96][64], vals[96][512];
    kv pairs[128];
    int n = 0;
    char line[1024];
    static const char *model_keys = ",NUM_LAYERS,MODEL_DIM,NUM_HEADS,NUM_KV_HEADS,MLP_MULT,VOCAB_SIZE,TIE_EMBEDDINGS,"
                                    "ROPE_BASE,LOGIT_SOFTCAP,QK_GAIN_INIT,USE_SMEARGATE,PGOLF_SMEAR_MODE,"
                                    "BIGRAM_HASH_BUCKETS,BIGRAM_HASH_DIM,BIGRAM_VOCAB_SIZE,BIGRAM_DIM,XSA_LAST_N,ROPE_DIMS,"
                                    "LN_SCALE,PGOLF_ROPE_NTK,PGOLF_MLP_ACTIVATION,PGOLF_LEAKY_RELU_SLOPE,PGOLF_INIT_STYLE,"
                                    "PGOLF_OPT_PARTITION,ENCODER_RECURRENCE,VE_ENABLED,VE_DIM,VE_LAYERS,"
                                    "PARALLEL_START_LAYER,RECUR_LAYERS,PGOLF_QAT_MODE,TRAIN_SEQ_LEN,TIED_EMBED_INIT_STD,"
                                    "CONTROL_TENSOR_NAME_PATTERNS,";
    while (fgets(line, sizeof(line), f) && n < 96) {
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq) continue;
        *eq = 0;
        char *v = eq + 1;
        v[strcspn(v, "\r\n")] = 0;
        int overridden = 0; /* reduced below */
        for (int k = 0; k < n_extra; k++) {
            const char *ek = extra[k].k;
            if (!strncmp(ek, "pg:", 3) || !strncmp(ek, "ref:", 4)) ek = strchr(ek, ':') + 1;
            if (!strcmp(ek, line)) overridden = 1;
        }
        if (overridden || !strcmp(line, "DATA_PATH") || !strcmp(line, "TOKENIZER_PATH")) continue;
        char probe[80];
        snprintf(probe, sizeof(probe), ",%.60s,", line);
        const int pg_only = !strstr(model_keys, probe);
        snprintf(keys[n], sizeof(keys[n]), "%s%.56s", pg_only ? "pg:" : "", line);
        snprintf(vals[n], sizeof(vals[n]), "%.500s", v);
        pairs[n] = (kv){keys[n], vals[n]};
        n++;
    }
    fclose(f);
    T_ASSERT(n >= 15, "%s: only %d settings read", preset, n);
    for (int i = 0; i < n_extra; i++) pairs[n++] = extra[i];
    check_grads(t__, preset, pairs, n, 2, 1, names, state);
}

TEST(refmodel_pr187_preset_small) { /* 4 layers of d 32, 4/2 heads, vocab 64, T 16, bigram 64x8, pre-enrichment 48 */
    const kv extra[] = {{"ref:OVERTONE_INIT", "1"}, {"ref:MUON_WD_PLACEMENT", "after"}, {"ref:BIGRAM_HASH_PROJ_INIT", "default"},
                        {"pg:PGOLF_PRE_ENRICH", "48"}, {"ref:PRE_ENRICH", "1"}, {"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"},
                        {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"},
                        {"pg:EVAL_SEQ_LEN", "16"}, {"BIGRAM_HASH_BUCKETS", "64"}, {"BIGRAM_HASH_DIM", "8"},
                        {"XSA_LAST_N", "2"}, {"pg:EVAL_STRIDE", "0"}};
    check_preset_small(t__, "configs/pr187.env", extra, (int)(sizeof(extra) / sizeof(extra[0])),
                       "pre_enrich.0.weight,pre_enrich.2.weight,smeargate.gate,bigram_hash.table.weight,bigram_hash.proj.weight", 0);
}

TEST(refmodel_pr65_preset_small) { /* 2 layers of d 32, vocab 64, T 16, BigramHash 64x8, always-on QAT */
    const kv extra[] = {{"NUM_LAYERS", "2"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                        {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"BIGRAM_HASH_BUCKETS", "64"},
                        {"BIGRAM_HASH_DIM", "8"}, {"pg:EVAL_STRIDE", "0"}};
    check_preset_small(t__, "configs/pr65.env", extra, (int)(sizeof(extra) / sizeof(extra[0])),
                       "smeargate.gate,bigram_hash.table.weight,bigram_hash.proj.weight", 0);
}

static void pr315_family_small(t_state *t__, const char *preset) { /* 3 layers, XSA last 2, RoPE 4 of 8, bigram 64x8 */
    const kv extra[] = {{"NUM_LAYERS", "3"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                        {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"pg:EVAL_SEQ_LEN", "16"}, {"XSA_LAST_N", "2"},
                        {"ROPE_DIMS", "4"}, {"BIGRAM_VOCAB_SIZE", "64"}, {"BIGRAM_DIM", "8"}, {"pg:EVAL_STRIDE", "0"}};
    check_preset_small(t__, preset, extra, (int)(sizeof(extra) / sizeof(extra[0])),
                       "smear.gate,bigram.embed.weight,bigram.proj.weight,bigram.scale", 0);
}
TEST(refmodel_pr315_preset_small) { pr315_family_small(t__, "configs/pr315.env"); }
TEST(refmodel_pr453_preset_small) { pr315_family_small(t__, "configs/pr453.env"); }

TEST(refmodel_pr1311_preset_small) { /* 4 layers, XSA on all, VE in 2, 3 (width 8), bigram 64x8 */
    const kv extra[] = {{"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                        {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"pg:EVAL_SEQ_LEN", "16"}, {"XSA_LAST_N", "4"},
                        {"ROPE_DIMS", "4"}, {"BIGRAM_VOCAB_SIZE", "64"}, {"BIGRAM_DIM", "8"}, {"VE_DIM", "8"},
                        {"VE_LAYERS", "2,3"}, {"pg:EVAL_STRIDE", "0"}};
    check_preset_small(t__, "configs/pr1311.env", extra, (int)(sizeof(extra) / sizeof(extra[0])),
                       "ve_shared.embed.weight,ve_shared.proj.weight,ve_layer_scales.0,bigram.proj.weight", 0);
}

TEST(refmodel_pr1392_preset_small) { /* 4 layers, parallel from 3, layer 1 recurring (on), VE in 2, 3 */
    const kv extra[] = {{"NUM_LAYERS", "4"}, {"MODEL_DIM", "32"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"},
                        {"VOCAB_SIZE", "64"}, {"TRAIN_SEQ_LEN", "16"}, {"pg:EVAL_SEQ_LEN", "16"}, {"XSA_LAST_N", "4"},
                        {"ROPE_DIMS", "4"}, {"VE_DIM", "8"}, {"VE_LAYERS", "2,3"}, {"PARALLEL_START_LAYER", "3"},
                        {"RECUR_LAYERS", "1"}, {"pg:EVAL_STRIDE", "0"}};
    check_preset_small(t__, "configs/pr1392.env", extra, (int)(sizeof(extra) / sizeof(extra[0])),
                       "ve_shared.embed.weight,recur_scales.0,blocks.3.attn.c_q.weight", ST_RECUR);
}
