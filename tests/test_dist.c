/* test_dist.c: a step's gradients across ranks (optim_grads_begin/end over dist.c), checked
 * against sums computed here from every rank's own gradients. It needs an MPI launcher:
 * tests/cli/mpi.sh runs it as `mpirun -np 2 pgolf_tests dist_`; started alone it skips.
 *
 * Each rank runs a real backward of a small model on its own tokens (so the overlapped sums start
 * from gpt_model.grads_ready as in training), once without the sums to read its local gradient,
 * which every rank then receives from every other. Expected, in double from those local
 * gradients G_r (each already scaled by 1/WORLD_SIZE, as training scales them):
 *   - summed, then clipped: S = sum_r G_r, norm |S|, S * min(1, max/(|S| + 1e-6));
 *   - PGOLF_CLIP_LOCAL: sum_r G_r * min(1, max/(WORLD_SIZE*|G_r| + 1e-6)), norm this rank's.
 * Every rank must hold the expected values of every parameter but the Muon matrices, which only
 * the rank that steps them (the k-th in table order: rank k % WORLD_SIZE) must hold. Tolerance
 * 1e-5 relative to the tensor's largest value (float sums of two values in one order versus
 * double; the clip coefficient in float). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/dist.h"
#include "../src/model.h"
#include "../src/optim.h"
#include "test.h"

static void build(t_state *t__, pg_config *c, gpt_model *m, int overlap, int clip_local) {
    config_defaults(c);
    char err[256];
    const char *kv[][2] = {{"VOCAB_SIZE", "64"},        {"MODEL_DIM", "32"},  {"NUM_LAYERS", "3"},
                           {"NUM_HEADS", "2"},          {"NUM_KV_HEADS", "1"}, {"TIE_EMBEDDINGS", "1"},
                           {"PGOLF_GRAD_OVERLAP", overlap ? "1" : "0"}, {"PGOLF_CLIP_LOCAL", clip_local ? "1" : "0"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        T_ASSERT(config_set(c, kv[i][0], kv[i][1], "t", err, sizeof(err)) == 0, "%s", err);
    gpt_build(m, c, &pg_cpu_ops, 2, 16);
    gpt_init(m, c, 7); /* the same weights on every rank */
}

/* this rank's tokens */
static void tokens(int32_t *x, int32_t *y, int n, int rank) {
    for (int i = 0; i < n; i++) {
        x[i] = (int32_t)((i * 17 + rank * 29 + 3) % 64);
        y[i] = (int32_t)((i * 5 + rank * 11 + 1) % 64);
    }
}

static void check_case(t_state *t__, int overlap, int clip_local, double max_norm) {
    const int world = dist_world(), me = dist_rank();
    pg_config c;
    gpt_model m;
    build(t__, &c, &m, overlap, clip_local);
    const size_t n = m.n_floats;
    int32_t x[32], y[32];
    tokens(x, y, 32, me);
    const float scale = 1.0f / (float)world;
    /* every rank's local gradient */
    float *all = xmalloc((size_t)world * n * sizeof(float));
    gpt_zero_grad(&m);
    gpt_forward_backward(&m, x, y, 2, scale, NULL);
    memcpy(all + (size_t)me * n, m.g, n * sizeof(float));
    for (int r = 0; r < world; r++) dist_bcast_host(all + (size_t)r * n, n * sizeof(float), r);
    /* expected */
    double *want = xcalloc(n, sizeof(double)), want_norm = 0;
    if (clip_local) {
        for (int r = 0; r < world; r++) {
            double ss = 0;
            for (size_t i = 0; i < n; i++) ss += (double)all[(size_t)r * n + i] * all[(size_t)r * n + i];
            const double nr = world * sqrt(ss), coef = fmin(1.0, max_norm / (nr + 1e-6));
            if (r == me) want_norm = nr;
            for (size_t i = 0; i < n; i++) want[i] += coef * all[(size_t)r * n + i];
        }
    } else {
        double ss = 0;
        for (size_t i = 0; i < n; i++) {
            for (int r = 0; r < world; r++) want[i] += all[(size_t)r * n + i];
            ss += want[i] * want[i];
        }
        want_norm = sqrt(ss);
        const double coef = fmin(1.0, max_norm / (want_norm + 1e-6));
        for (size_t i = 0; i < n; i++) want[i] *= coef;
    }
    /* the same backward with the sums */
    optimizer o;
    optim_init(&o, &m);
    gpt_zero_grad(&m);
    optim_grads_begin(&o, &c);
    T_ASSERT((m.grads_ready != NULL) == (overlap && !clip_local), "overlap %d clip_local %d: grads_ready hook %s",
             overlap, clip_local, m.grads_ready ? "set" : "not set");
    gpt_forward_backward(&m, x, y, 2, scale, NULL);
    const double norm = optim_grads_end(&o, &c, max_norm);
    T_CLOSE(norm, want_norm, 1e-6, 0, "norm before clipping");
    int k = 0; /* Muon matrices in table order */
    for (int p = 0; p < m.n_params; p++) {
        const param_info *pi = &m.params[p];
        if (pi->group == GROUP_MUON && k++ % world != me) continue;
        double big = 1e-30, err = 0;
        for (size_t i = 0; i < pi->numel; i++) {
            const double w = want[pi->offset + i];
            big = fmax(big, fabs(w));
            err = fmax(err, fabs(m.g[pi->offset + i] - w));
        }
        T_ASSERT(err <= 1e-5 * big, "overlap %d clip_local %d max_norm %g: %s off by %.3g of %.3g", overlap, clip_local,
                 max_norm, pi->name, err, big);
    }
    optim_free(&o);
    gpt_free(&m);
    config_free(&c);
    free(all);
    free(want);
}

TEST(dist_grads_sum_and_clip) {
    dist_init();
    if (!dist_collectives() || dist_world() < 2) T_SKIP("needs mpirun -np 2 or more (tests/cli/mpi.sh runs it)");
    /* the clip: far above the norms (inactive), and well below them */
    check_case(t__, 1, 0, 1e9);
    check_case(t__, 0, 0, 1e9);
    check_case(t__, 1, 0, 0.05);
    check_case(t__, 0, 0, 0.05);
    check_case(t__, 1, 1, 0.05);
    check_case(t__, 1, 1, 1e9);
    dist_finalize();
}
