/* optim.h: the optimizers of train_gpt.py (spec §2.5-§2.6): Adam for the token embedding, the
 * scalar/control tensors and an untied head, Muon (Nesterov momentum + Newton-Schulz 5) for the
 * block matrices; the step order token, Muon, scalar (head after token); global-norm clipping. */
#ifndef PGOLF_OPTIM_H
#define PGOLF_OPTIM_H

#include "config.h"
#include "model.h"

typedef struct {
    gpt_model *m;
    float *adam_m, *adam_v; /* arena-shaped, used for Adam groups */
    float *muon_buf;        /* arena-shaped, used for Muon params */
    float *muon_work;
    long step; /* optimizer steps taken (Adam's t after the next step is step+1) */
    long mom_offset; /* steps taken before update 0 (kept priming steps): Muon momentum warms up
                        over step - mom_offset */
    /* The gradients' sums across ranks (optim_grads_begin): contiguous arena ranges, each of one
     * block (layer, or -1) and summed into every rank (root DIST_ALL) or into the rank that steps
     * the Muon matrix it holds (root), as the records' reduce-scatter before Newton-Schulz */
    struct grad_seg {
        size_t off, n;
        int layer, root, started;
    } *seg;
    int n_seg;
} optimizer;

void optim_init(optimizer *o, gpt_model *m);
void optim_free(optimizer *o);
/* forget all state (zero moments and momentum buffers, step 0) */
void optim_reset(optimizer *o);
/* PR #1311's state after priming: Adam moments and step count kept, Muon momentum buffers zeroed,
 * the momentum warmup restarting at the next step */
void optim_keep_adam_after_priming(optimizer *o);
/* Muon momentum at update index `step` (0-based): linear warmup from the start value. */
double optim_muon_momentum(const pg_config *c, long step);
/* A step's gradients across ranks (dist.h), and their clipping to max_norm (<= 0: none). Call
 * optim_grads_begin before the backward of a step's last micro-batch and optim_grads_end after it.
 * With PGOLF_GRAD_OVERLAP the sums of a block's gradients start as soon as the backward has
 * finished that block (gpt_model.grads_ready), overlapping the backward of the blocks below; end
 * starts the rest, waits for all, and clips. Afterwards every rank holds the summed gradients of
 * every parameter except the Muon matrices, whose sums only the rank that steps them holds.
 * PGOLF_CLIP_LOCAL (several ranks): each rank first clips its own gradient, as the records without
 * DDP do (no overlap then: the sums wait for the local norm); otherwise the summed gradient is
 * clipped. Without collectives only the clip runs. Returns the norm before clipping (the rank's own
 * under PGOLF_CLIP_LOCAL). */
void optim_grads_begin(optimizer *o, const pg_config *c);
double optim_grads_end(optimizer *o, const pg_config *c, double max_norm);
/* Global gradient norm clipping (no-op when max_norm <= 0); returns the norm before clipping.
 * With several ranks, after the sums (each Muon matrix counted on its rank). */
double optim_clip_grad_norm(optimizer *o, double max_norm);
/* One step of every group with lr = base_lr * lr_mult. With several processes (dist.h), after
 * optim_grads_end: the Muon work is split across ranks and the updated matrices shared. */
void optim_step(optimizer *o, const pg_config *c, double lr_mult);
/* Several processes: gather every Muon momentum buffer from the rank that keeps it, so that rank 0
 * holds the whole optimizer state (before a checkpoint). */
void optim_share_state(optimizer *o, const pg_config *c);
/* base learning rate of a group */
double optim_base_lr(const pg_config *c, param_group g);
/* The lr multiplier of update `step` (0-based), computed before its forward with `elapsed_ms` of
 * training so far (spec §2.7, PR #1311 §2.5): the linear warmdown over the last WARMDOWN_ITERS
 * steps (step-based when MAX_WALLCLOCK_SECONDS <= 0, else over the time those steps take at the
 * running mean step time, up to the cap less GPTQ_RESERVE_SECONDS), floored at MIN_LR, times min(step/LR_WARMUP_STEPS, 1) when
 * LR_WARMUP_STEPS > 0. */
double optim_lr_mul(const pg_config *c, long step, double elapsed_ms);

/* Averages of the weights kept beside them in backend memory (spec §4.6): the EMA (EMA_ENABLED,
 * EMA_DECAY, EMA_START_STEP) and the SWA sum (SWA_ENABLED: a sample every SWA_EVERY steps while
 * the lr multiplier is below SWA_START_SCALE; as in PR #315 only when EMA is off, unless
 * PGOLF_EXPORT_WEIGHTS is swa or best, which keep both as PR #1311 does). */
typedef struct {
    const pg_ops *ops;
    size_t n;
    float *ema;    /* NULL when EMA is off */
    float *swa;    /* sum of the samples; NULL when SWA is off */
    int swa_count; /* samples in swa */
} weight_avg;

void wavg_init(weight_avg *a, const pg_ops *ops, const pg_config *c, size_t n);
void wavg_free(weight_avg *a);
/* Before the first update of a run (not on resume): EMA_START_STEP 0 starts the EMA from w. */
void wavg_begin(weight_avg *a, const pg_config *c, const float *w);
/* After the optimizer update that made the step counter `step` (1-based), taken with lr multiplier
 * `mult`: EMA update (a copy at step EMA_START_STEP), SWA sample. Returns 1 when this call took
 * the first SWA sample. */
int wavg_after_step(weight_avg *a, const pg_config *c, const float *w, long step, double mult);

#endif
