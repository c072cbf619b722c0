/* test_eval.c: the window arithmetic of sliding-window evaluation (every target exactly once in
 * pgolf's style; the records' counts of spec §3.7 and §4.9 reproduced for their styles) and the
 * sliding evaluation of a real model against the standard evaluation and direct forwards. */
#include <stdlib.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/eval.h"
#include "../src/model.h"
#include "test.h"

/* how many times each target is scored, and the smallest left context of a scored target outside
 * the first window */
static int coverage(sw_style st, size_t N, int S, int s, int *counts, long *min_ctx) {
    long W = sw_num_windows(st, N, S, s);
    *min_ctx = 1L << 40;
    memset(counts, 0, N * sizeof(int));
    for (long w = 0; w < W; w++) {
        size_t ws, j0, j1;
        int wlen;
        sw_window(st, N, S, s, w, &ws, &wlen, &j0, &j1);
        if (j1 > N || j0 < ws || j1 > ws + (size_t)wlen) return -1;
        for (size_t j = j0; j < j1; j++) {
            counts[j]++;
            if (w > 0 && (long)(j - ws) < *min_ctx) *min_ctx = (long)(j - ws);
        }
    }
    return 0;
}

TEST(eval_sliding_exact_scores_every_target_once) {
    const size_t Ns[] = {1, 7, 64, 100, 1000, 1024, 1025, 4096, 5000};
    const int Ss[] = {16, 64, 128}, strides[] = {1, 16, 64, 128};
    int *counts = xmalloc(5000 * sizeof(int));
    for (size_t a = 0; a < sizeof(Ns) / sizeof(*Ns); a++)
        for (size_t b = 0; b < 3; b++)
            for (size_t c = 0; c < 4; c++) {
                size_t N = Ns[a];
                int S = Ss[b], s = strides[c];
                if (s > S) continue;
                long min_ctx;
                T_ASSERT(coverage(SW_EXACT, N, S, s, counts, &min_ctx) == 0, "window out of range N=%zu S=%d s=%d", N, S, s);
                for (size_t j = 0; j < N; j++)
                    T_ASSERT(counts[j] == 1, "N=%zu S=%d s=%d: target %zu scored %d times", N, S, s, j, counts[j]);
                if (N > (size_t)S) T_ASSERT(min_ctx >= S - s, "context %ld < S-s", min_ctx);
            }
    free(counts);
}

TEST(eval_sliding_record_window_counts) {
    /* spec §3.7: PR #65, N = 62,021,632, S = 1024, s = 64 -> 969,073 windows, targets 960.. scored once */
    const size_t N = 62021632;
    T_ASSERT(sw_num_windows(SW_PR65, N, 1024, 64) == 969073, "pr65 W=%ld", sw_num_windows(SW_PR65, N, 1024, 64));
    size_t ws, j0, j1;
    int wlen;
    sw_window(SW_PR65, N, 1024, 64, 0, &ws, &wlen, &j0, &j1);
    T_ASSERT(j0 == 960 && j1 == 1024, "first scored [%zu,%zu)", j0, j1);
    sw_window(SW_PR65, N, 1024, 64, 969072, &ws, &wlen, &j0, &j1);
    T_ASSERT(j1 == N, "last scored end %zu", j1);
    /* spec §4.9: PR #315, S = 2048 -> 969,088 windows, N_scored = N + 1,984 */
    long W = sw_num_windows(SW_PR315, N, 2048, 64);
    T_ASSERT(W == 969088, "pr315 W=%ld", W);
    size_t scored = 0;
    for (long w = 0; w < W; w++) {
        sw_window(SW_PR315, N, 2048, 64, w, &ws, &wlen, &j0, &j1);
        scored += j1 - j0;
    }
    T_ASSERT(scored == N + 1984, "pr315 scored %zu", scored);
    /* pgolf's style on the same numbers: exactly N */
    W = sw_num_windows(SW_EXACT, N, 2048, 64);
    scored = 0;
    for (long w = 0; w < W; w++) {
        sw_window(SW_EXACT, N, 2048, 64, w, &ws, &wlen, &j0, &j1);
        scored += j1 - j0;
    }
    T_ASSERT(scored == N, "exact scored %zu", scored);
}

static void small_model(gpt_model *m, pg_config *c, int B, int T) {
    config_defaults(c);
    char err[256], tl[16];
    snprintf(tl, sizeof(tl), "%d", T);
    const char *kv[][2] = {{"VOCAB_SIZE", "64"}, {"MODEL_DIM", "32"}, {"NUM_LAYERS", "2"}, {"NUM_HEADS", "4"},
                           {"NUM_KV_HEADS", "2"}, {"TRAIN_SEQ_LEN", tl}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) config_set(c, kv[i][0], kv[i][1], "test", err, sizeof(err));
    gpt_build(m, c, &pg_cpu_ops, B, T);
    gpt_init(m, c, 5);
    /* random (not init-time) weights so positions and context matter */
    srand(11);
    for (size_t i = 0; i < m->n_floats; i++) m->w[i] += 0.05f * (2.0f * (float)rand() / (float)RAND_MAX - 1.0f);
    gpt_sync_weights(m);
}

static void fake_luts(bpb_luts *L, int V) {
    L->size = V;
    L->base_bytes = xcalloc((size_t)V, sizeof(int16_t));
    L->has_leading_space = xcalloc((size_t)V, 1);
    L->is_boundary = xcalloc((size_t)V, 1);
    for (int i = 0; i < V; i++) {
        L->base_bytes[i] = (int16_t)(i % 4);
        L->has_leading_space[i] = i % 3 == 0;
        L->is_boundary[i] = i < 2;
    }
}

TEST(eval_sliding_matches_standard_and_direct_forwards) {
    const int T = 16, B = 8;
    pg_config c;
    gpt_model m;
    small_model(&m, &c, B, T);
    bpb_luts L;
    fake_luts(&L, 64);
    const size_t usable = 10 * T;
    uint16_t *val = xmalloc((usable + 1) * sizeof(uint16_t));
    srand(3);
    for (size_t i = 0; i <= usable; i++) val[i] = (uint16_t)(rand() % 64);
    eval_result std, sw;
    eval_val(&m, val, usable, T, B, 0, 1, &L, &std, NULL);
    /* stride == S: exact sliding windows are the standard non-overlapping sequences */
    eval_sliding(&m, val, usable, T, 3, SW_EXACT, 1.0, 0, 1, &L, &sw);
    T_CLOSE(sw.token_count, std.token_count, 0, 0, "token count");
    T_CLOSE(sw.byte_count, std.byte_count, 0, 0, "byte count");
    T_CLOSE(sw.loss_sum, std.loss_sum, 1e-6, 0, "loss sum");
    /* stride 4: each target's loss equals a direct forward of its window; split over 3 ranks */
    const int s = 4;
    eval_result parts[3], whole;
    double loss = 0, toks = 0, bytes = 0;
    for (int r = 0; r < 3; r++) {
        eval_sliding(&m, val, usable, s, 5, SW_EXACT, 1.0, r, 3, &L, &parts[r]);
        loss += parts[r].loss_sum, toks += parts[r].token_count, bytes += parts[r].byte_count;
    }
    T_CLOSE(toks, (double)usable, 0, 0, "targets over ranks");
    double direct = 0, dbytes = 0;
    long W = sw_num_windows(SW_EXACT, usable, T, s);
    int32_t x[16], y[16];
    float nll[16];
    for (long w = 0; w < W; w++) {
        size_t ws, j0, j1;
        int wlen;
        sw_window(SW_EXACT, usable, T, s, w, &ws, &wlen, &j0, &j1);
        for (int i = 0; i < T; i++) {
            x[i] = i < wlen ? val[ws + i] : 0;
            y[i] = i < wlen ? val[ws + i + 1] : 0;
        }
        gpt_forward_backward(&m, x, y, 1, 0.0f, nll);
        for (size_t j = j0; j < j1; j++) {
            direct += nll[j - ws];
            dbytes += bpb_token_bytes(&L, val[j + 1], val[j]);
        }
    }
    T_CLOSE(loss, direct, 1e-6, 0, "sliding loss vs direct forwards");
    T_CLOSE(bytes, dbytes, 0, 0, "sliding bytes vs direct");
    eval_sliding(&m, val, usable, s, 5, SW_EXACT, 1.0, 0, 1, &L, &whole);
    T_CLOSE(whole.loss_sum, loss, 1e-6, 0, "one rank vs three");
    /* a model whose loss depends on context gives a different number with more context */
    T_ASSERT(fabs(whole.loss_sum - std.loss_sum) > 1e-6 * fabs(std.loss_sum), "sliding equals standard at stride 4");
    free(val);
    bpb_luts_free(&L);
    gpt_free(&m);
    config_free(&c);
}
