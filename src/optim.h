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
} optimizer;

void optim_init(optimizer *o, gpt_model *m);
void optim_free(optimizer *o);
/* forget all state (zero moments and momentum buffers, step 0) */
void optim_reset(optimizer *o);
/* Muon momentum at update index `step` (0-based): linear warmup from the start value. */
double optim_muon_momentum(const pg_config *c, long step);
/* Global gradient norm clipping (no-op when max_norm <= 0); returns the norm before clipping. */
double optim_clip_grad_norm(optimizer *o, double max_norm);
/* One step of every group with lr = base_lr * lr_mult. */
void optim_step(optimizer *o, const pg_config *c, double lr_mult);
/* base learning rate of a group */
double optim_base_lr(const pg_config *c, param_group g);

#endif
