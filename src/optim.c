/* optim.c: Adam and Muon over the model's parameter table (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dist.h"

void optim_init(optimizer *o, gpt_model *m) {
    const pg_ops *ops = m->ops;
    *o = (optimizer){.m = m};
    size_t bytes = m->n_floats * sizeof(float);
    o->adam_m = ops->alloc(bytes);
    o->adam_v = ops->alloc(bytes);
    o->muon_buf = ops->alloc(bytes);
    size_t work = 1;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].group == GROUP_MUON) {
            size_t w = ops->muon_work_floats((int)m->params[i].shape[0], (int)m->params[i].shape[1]);
            if (w > work) work = w;
        }
    o->muon_work = ops->alloc(work * sizeof(float));
    optim_reset(o);
}

void optim_reset(optimizer *o) {
    size_t bytes = o->m->n_floats * sizeof(float);
    o->m->ops->zero(o->adam_m, bytes);
    o->m->ops->zero(o->adam_v, bytes);
    o->m->ops->zero(o->muon_buf, bytes);
    o->step = 0;
    o->mom_offset = 0;
}

void optim_keep_adam_after_priming(optimizer *o) {
    o->m->ops->zero(o->muon_buf, o->m->n_floats * sizeof(float));
    o->mom_offset = o->step;
}

void optim_free(optimizer *o) {
    const pg_ops *ops = o->m->ops;
    free(o->seg);
    o->seg = NULL;
    ops->free(o->adam_m);
    ops->free(o->adam_v);
    ops->free(o->muon_buf);
    ops->free(o->muon_work);
}

double optim_muon_momentum(const pg_config *c, long step) {
    double f = c->muon_momentum_warmup_steps > 0 ? fmin((double)step / (double)c->muon_momentum_warmup_steps, 1.0) : 1.0;
    return (1.0 - f) * c->muon_momentum_warmup_start + f * c->muon_momentum;
}

double optim_base_lr(const pg_config *c, param_group g) {
    switch (g) {
    case GROUP_TOKEN: return c->tie_embeddings ? c->tied_embed_lr : c->embed_lr;
    case GROUP_MUON: return c->matrix_lr;
    case GROUP_SCALAR: return c->scalar_lr;
    case GROUP_HEAD: return c->head_lr;
    default: return 0;
    }
}

/* scale every gradient by max_norm/(norm + 1e-6) when that is below 1 (torch's clip_grad_norm_) */
static void clip_to(optimizer *o, double norm, double max_norm) {
    gpt_model *m = o->m;
    if (max_norm <= 0) return;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) m->ops->scale_inplace(m->g, m->n_floats, (float)coef);
}

double optim_clip_grad_norm(optimizer *o, double max_norm) {
    gpt_model *m = o->m;
    double ss = 0;
    if (dist_world() > 1) { /* a Muon matrix's summed gradient is on its rank only; the rest on all */
        PG_CHECK(o->seg != NULL);
        const int world = dist_world(), me = dist_rank();
        size_t *off = xmalloc((size_t)o->n_seg * 2 * sizeof(size_t)), *n = off + o->n_seg;
        double *part = xmalloc((size_t)o->n_seg * sizeof(double));
        int k = 0; /* this rank's segments, in table order; one host synchronisation for all */
        for (int s = 0; s < o->n_seg; s++)
            if (o->seg[s].root == DIST_ALL || o->seg[s].root == me) off[k] = o->seg[s].off, n[k++] = o->seg[s].n;
        m->ops->sum_squares_spans(m->g, off, n, k, part);
        for (int s = 0, j = 0; s < o->n_seg; s++) {
            if (o->seg[s].root == DIST_ALL) ss += part[j++] / world;
            else if (o->seg[s].root == me) ss += part[j++];
        }
        free(off);
        free(part);
        dist_sum_f64(&ss, 1);
    } else
        ss = m->ops->sum_squares(m->g, m->n_floats);
    const double norm = sqrt(ss);
    clip_to(o, norm, max_norm);
    return norm;
}

static void adam_group(optimizer *o, const pg_config *c, param_group g, double lr, double wd) {
    gpt_model *m = o->m;
    long t = o->step + 1;
    float bc1 = (float)(1.0 - pow(c->beta1, (double)t)), bc2 = (float)(1.0 - pow(c->beta2, (double)t));
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        if (p->group != g) continue;
        m->ops->adam_step(m->w + p->offset, m->g + p->offset, o->adam_m + p->offset, o->adam_v + p->offset, p->numel,
                          (float)lr, (float)c->beta1, (float)c->beta2, (float)c->adam_eps, bc1, bc2, (float)wd);
    }
}

/* The Muon parameters in the order the record steps them: PR #187 (PGOLF_OPT_PARTITION=pr187,
 * spec §4.7) lists the block matrices, then pre_enrich.0/.2, then bigram_hash.table and .proj; the
 * other records the table order. (The order does not change the arithmetic: each matrix is updated
 * on its own.) */
static int muon_rank(const pg_config *c, const char *name) {
    if (strcmp(c->opt_partition, "pr187")) return 0;
    if (!strncmp(name, "pre_enrich.", 11)) return 1;
    if (!strncmp(name, "bigram_hash.table", 17)) return 2;
    if (!strncmp(name, "bigram_hash.proj", 16)) return 3;
    return 0;
}

/* The Muon matrices in step order (muon_rank, then the table). With several processes the k-th is
 * orthogonalised by rank k % WORLD_SIZE alone, which keeps its momentum buffer (Parallel Muon, as
 * the records shard Newton-Schulz); the other ranks receive the updated matrix. */
static int muon_order(const optimizer *o, const pg_config *c, int *idx) {
    const gpt_model *m = o->m;
    int k = 0;
    for (int rank = 0; rank < 4; rank++)
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i].group == GROUP_MUON && muon_rank(c, m->params[i].name) == rank) idx[k++] = i;
    return k;
}

/* the rank that steps the j-th Muon matrix of muon_order */
static int muon_owner(int j) { return j % dist_world(); }

/* broadcast one arena's Muon slices (idx: the k matrices in muon_order) from their owners */
static void muon_share(optimizer *o, float *arena, const int *idx, int k) {
    const int world = dist_world();
    if (world <= 1) return;
    gpt_model *m = o->m;
    int *root = xmalloc((size_t)(k > 0 ? k : 1) * sizeof(int));
    float **p = xmalloc((size_t)(k > 0 ? k : 1) * sizeof(float *));
    size_t *n = xmalloc((size_t)(k > 0 ? k : 1) * sizeof(size_t));
    for (int j = 0; j < k; j++) {
        p[j] = arena + m->params[idx[j]].offset;
        n[j] = m->params[idx[j]].numel;
        root[j] = muon_owner(j);
    }
    dist_bcast_many(m->ops, p, n, root, k);
    free(root);
    free(p);
    free(n);
}

void optim_share_state(optimizer *o, const pg_config *c) {
    int *idx = xmalloc((size_t)o->m->n_params * sizeof(int));
    muon_share(o, o->muon_buf, idx, muon_order(o, c, idx));
    free(idx);
}

/* ---- gradients across ranks ---- */

/* The sums: every parameter's range in table order, neighbours of one block that all ranks sum
 * merged into one range; a Muon matrix alone, summed into the rank that steps it. */
static void build_segments(optimizer *o, const pg_config *c) {
    const gpt_model *m = o->m;
    int *root = xmalloc((size_t)m->n_params * sizeof(int)), *idx = xmalloc((size_t)m->n_params * sizeof(int));
    for (int i = 0; i < m->n_params; i++) root[i] = DIST_ALL;
    const int k = muon_order(o, c, idx);
    for (int j = 0; j < k; j++) root[idx[j]] = muon_owner(j);
    o->seg = xcalloc((size_t)m->n_params, sizeof(struct grad_seg));
    o->n_seg = 0;
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        struct grad_seg *last = o->n_seg ? &o->seg[o->n_seg - 1] : NULL;
        if (last && last->root == DIST_ALL && root[i] == DIST_ALL && last->layer == p->layer)
            last->n = p->offset + p->numel - last->off; /* the padding between them is zero */
        else
            o->seg[o->n_seg++] = (struct grad_seg){.off = p->offset, .n = p->numel, .layer = p->layer, .root = root[i]};
    }
    free(root);
    free(idx);
}

static void start_segment(optimizer *o, struct grad_seg *g) {
    if (g->started) return;
    dist_reduce_start(o->m->ops, o->m->g + g->off, g->n, g->root);
    g->started = 1;
}

/* gpt_model.grads_ready: block `layer` is done */
static void on_grads_ready(void *ctx, int layer) {
    optimizer *o = ctx;
    for (int s = 0; s < o->n_seg; s++)
        if (o->seg[s].layer == layer) start_segment(o, &o->seg[s]);
}

/* PGOLF_CLIP_LOCAL with several ranks */
static int clips_locally(const pg_config *c) { return c->clip_local && dist_world() > 1; }

void optim_grads_begin(optimizer *o, const pg_config *c) {
    if (!dist_collectives()) return;
    if (!o->seg) build_segments(o, c);
    for (int s = 0; s < o->n_seg; s++) o->seg[s].started = 0;
    if (c->grad_overlap && !clips_locally(c)) {
        o->m->grads_ready = on_grads_ready;
        o->m->grads_ctx = o;
    }
}

double optim_grads_end(optimizer *o, const pg_config *c, double max_norm) {
    gpt_model *m = o->m;
    if (!dist_collectives()) return optim_clip_grad_norm(o, max_norm);
    m->grads_ready = NULL;
    m->grads_ctx = NULL;
    double norm = 0;
    if (clips_locally(c)) {
        /* the record's local gradient is the mean over its micro-batches, WORLD_SIZE times this
         * rank's share of the sum (grad_scale = 1/(grad_accum*WORLD_SIZE)) */
        norm = dist_world() * sqrt(m->ops->sum_squares(m->g, m->n_floats));
        clip_to(o, norm, max_norm);
    }
    for (int s = 0; s < o->n_seg; s++) start_segment(o, &o->seg[s]); /* table order: the same on every rank */
    dist_reduce_wait(m->ops);
    if (!clips_locally(c)) norm = optim_clip_grad_norm(o, max_norm);
    return norm;
}

void optim_step(optimizer *o, const pg_config *c, double lr_mult) {
    gpt_model *m = o->m;
    /* torch order: token Adam, [head Adam], Muon, scalar Adam */
    adam_group(o, c, GROUP_TOKEN, optim_base_lr(c, GROUP_TOKEN) * lr_mult, c->adam_wd);
    adam_group(o, c, GROUP_HEAD, optim_base_lr(c, GROUP_HEAD) * lr_mult, 0.0);
    const double muon_wd = c->muon_wd != 0 ? c->muon_wd : c->muon_weight_decay;
    double mu = optim_muon_momentum(c, o->step - o->mom_offset);
    double lr = optim_base_lr(c, GROUP_MUON) * lr_mult;
    /* decoupled weight decay W *= 1 - lr*wd before the update (PR #65, #315, #1311, #1392) or after it
     * (PGOLF_MUON_WD_AFTER, PR #187) */
    const int wd_after = c->muon_wd_after && muon_wd != 0;
    int *idx = xmalloc((size_t)m->n_params * sizeof(int));
    const int k = muon_order(o, c, idx);
    for (int j = 0; j < k; j++) {
        if (muon_owner(j) != dist_rank()) continue;
        const param_info *p = &m->params[idx[j]];
        m->ops->muon_step(m->w + p->offset, m->g + p->offset, o->muon_buf + p->offset, (int)p->shape[0],
                          (int)p->shape[1], (float)lr, (float)mu, (int)c->muon_backend_steps,
                          wd_after ? 0.0f : (float)muon_wd, (int)c->muon_eq_r, o->muon_work);
        if (wd_after) m->ops->scale_inplace(m->w + p->offset, p->numel, (float)(1.0 - lr * muon_wd));
    }
    muon_share(o, m->w, idx, k);
    free(idx);
    adam_group(o, c, GROUP_SCALAR, optim_base_lr(c, GROUP_SCALAR) * lr_mult, c->adam_wd);
    o->step++;
    gpt_sync_weights(m);
}

double optim_lr_mul(const pg_config *c, long step, double elapsed_ms) {
    const double wu = c->lr_warmup_steps > 0 ? fmin((double)step / (double)c->lr_warmup_steps, 1.0) : 1.0;
    double wd = 1.0;
    if (c->warmdown_iters > 0) {
        const double cap_s = config_train_cap_seconds(c);
        if (cap_s <= 0) {
            long start = c->iterations - c->warmdown_iters > 0 ? c->iterations - c->warmdown_iters : 0;
            if (step >= start && step < c->iterations)
                wd = fmax((double)(c->iterations - step) / (double)c->warmdown_iters, 0.0);
        } else {
            double cap_ms = 1000.0 * cap_s;
            double step_ms = elapsed_ms / (double)(step > 1 ? step : 1);
            double warm_ms = (double)c->warmdown_iters * step_ms;
            double rem = fmax(cap_ms - elapsed_ms, 0.0);
            if (rem <= warm_ms) wd = rem / fmax(warm_ms, 1e-9);
        }
        if (wd < c->min_lr) wd = c->min_lr; /* MIN_LR floors the warmdown only */
    }
    return wu * wd;
}

/* ---- weight averages ---- */

void wavg_init(weight_avg *a, const pg_ops *ops, const pg_config *c, size_t n) {
    *a = (weight_avg){.ops = ops, .n = n};
    if (c->ema_enabled) {
        a->ema = ops->alloc(n * sizeof(float));
        ops->zero(a->ema, n * sizeof(float));
    }
    if (c->swa_enabled && (!c->ema_enabled || !strcmp(c->export_weights, "swa") || !strcmp(c->export_weights, "best"))) {
        a->swa = ops->alloc(n * sizeof(float));
        ops->zero(a->swa, n * sizeof(float));
    }
}

void wavg_free(weight_avg *a) {
    if (a->ema) a->ops->free(a->ema);
    if (a->swa) a->ops->free(a->swa);
    a->ema = a->swa = NULL;
}

void wavg_begin(weight_avg *a, const pg_config *c, const float *w) {
    /* ema_update with decay 0 copies exactly (0*e + 1*w) */
    if (a->ema && c->ema_start_step == 0) a->ops->ema_update(a->ema, w, a->n, 0.0f);
}

int wavg_after_step(weight_avg *a, const pg_config *c, const float *w, long step, double mult) {
    if (a->ema && step >= c->ema_start_step)
        a->ops->ema_update(a->ema, w, a->n, step == c->ema_start_step ? 0.0f : (float)c->ema_decay);
    if (a->swa && mult < c->swa_start_scale && step % c->swa_every == 0) {
        a->ops->add_f32(a->swa, w, a->n);
        return ++a->swa_count == 1;
    }
    return 0;
}
