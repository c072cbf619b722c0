/* model.h: the GPT of train_gpt.py (spec §2.2-§2.3) as a parameter table plus explicit forward and
 * backward passes over the ops of ops.h. The table (one entry per PyTorch state-dict tensor, in
 * PyTorch's state-dict order) drives initialisation, the optimizer split, checkpoints, export and
 * the parameter count. Parameters, gradients and optimizer state are each one arena of fp32 in
 * backend memory; activations are one arena of the backend's activation type. */
#ifndef PGOLF_MODEL_H
#define PGOLF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ops.h"
#include "statedict.h"

/* GROUP_NONE: in no optimizer group (PR #1392's recur_scales: gradients, counted by the clip norm, never applied) */
typedef enum { GROUP_TOKEN, GROUP_MUON, GROUP_SCALAR, GROUP_HEAD, GROUP_NONE, GROUP_COUNT } param_group;

typedef enum {
    INIT_ZERO,
    INIT_ONES,
    INIT_CONST,     /* init_a */
    INIT_NORMAL,    /* N(0, init_a^2) */
    INIT_UNIFORM,   /* U(-init_a, init_a) */
    INIT_RESID_MIX, /* row 0 ones, row 1 zeros */
    INIT_ORTHO,     /* orthogonal (QR of a Gaussian, diag(R) > 0) times init_a */
    INIT_OVERTONE,  /* PR #187: N(0, init_a^2), then its singular values replaced by S_0*(i+1)^-1/2 */
} param_init;

typedef struct {
    char name[96];
    int ndim; /* 0 (a scalar, numel 1), 1 or 2 */
    int64_t shape[2];
    size_t numel;
    size_t offset; /* in floats, into the parameter arena */
    param_group group;
    param_init init;
    float init_a;
    pg_dtype sd_dtype; /* dtype in the records' state dict (bf16 for embedding tables) */
    int linear;        /* a CastedLinear weight of the records: STE fake quantisation applies to it */
    int layer;         /* blocks.<layer>.*: its gradient is final once the backward has passed that
                          block (gpt_model.grads_ready); -1: only at the end of the backward */
} param_info;

/* views of one block's parameters (backend pointers into the arena) */
typedef struct {
    float *c_q, *c_k, *c_v, *proj, *q_gain, *fc, *mproj, *attn_scale, *mlp_scale, *resid_mix;
    float *ve_scale; /* ve_layer_scales.k of a VE layer, else NULL */
    int parallel;    /* parallel residuals as PR #1392's plain sum */
    int lane;        /* a parallel block of the two-lane forms (PR #1289, PR #1334) */
    float *resid_mix_mlp, *route; /* PR #1289's lane parameters, else NULL */
} block_params;

typedef struct {
    pg_act *xm, *n1, *q_raw, *k_raw, *v, *q, *k, *att, *att_x, *a, *xa, *n2, *h, *u, *m, *xout, *xin_skip;
    pg_act *xm2, *xout2, *xin_skip2; /* lane blocks: PR #1289's MLP-lane mix, the second lane's output and skip sum */
    float *rstd1, *rstd_q, *rstd_k, *lse, *rstd2;
} block_acts;

typedef struct gpt_model gpt_model;
struct gpt_model {
    const pg_ops *ops;
    /* shape */
    int V, d, L, H, Hk, D, hidden, n_enc, n_dec, n_skip, tied, rope_dims;
    float softcap;
    /* record features (docs/seeds.md) */
    int smear;       /* SmearGate: 0 off, 1 before the embedding norm (PR #65), 2 after it (PR #315) */
    int bigram;      /* bigram table: 0 off, 1 PR #65 BigramHash, 2 PR #315 BigramHashEmbedding */
    int nb, db;      /* bigram buckets and width */
    int xsa_from;    /* XSA in layers xsa_from..L-1 (L: none) */
    int ln_scale;    /* normalised sublayer inputs of layer l scaled by 1/sqrt(l+1) */
    int leaky;       /* MLP activation leaky_relu(., slope)^2 instead of relu^2 */
    float slope;
    /* STE fake quantisation in training forwards (forwards with a backward); docs/seeds.md */
    int qat_mode;    /* always on: 0 off, 1 quantile (PR #65), 2 rowmax (PR #187) */
    double late_thr; /* late QAT: lr-scale threshold (0: none) */
    long late_after; /* late QAT only at updates after this one (PR #1311: LR_WARMUP_STEPS; -1: any) */
    int late_active; /* late QAT fake-quantises once switched on (PGOLF_LATE_QAT_ACTIVE) */
    int late_low;    /* lowest code of the late grid */
    int late_side_only; /* the banked records (PR #1311, #1392) apply F.linear to their banks: late QAT
                         * reaches only their side CastedLinears (bigram.proj, ve_shared.proj) */
    int late_qat;    /* late QAT has switched on (the records' class flag) */
    pg_wc *wq;       /* fake-quantised compute copies of the linear weights (NULL: no QAT configured) */
    int wq_mode;     /* grid that wq holds for the current weights (0: stale) */
    int qat_now;     /* the running forward reads the linear weights from wq */
    int qat_blocks;  /* ... and so do the blocks' matrices */
    /* value embeddings (PR #1311/#1392): ve (N, Hk*D) = scale * proj(embed[idx]), added to c_v's output */
    int ve_dim, ve_n;
    int ve_layer[16];
    int par_from; /* parallel residuals in layers par_from..L-1 (L: none) */
    int lanes;    /* parallel form: 0 PR #1392's plain sum, 1 PR #1289's lanes, 2 PR #1334's lanes */
    float *lane_merge; /* the lanes' final blend m*lane_a + (1-m)*lane_m (NULL without lanes) */
    /* PR #187: GELU pre-enrichment of width pre_enrich (0: off) before the embedding norm; encoder
     * recurrence (the encoder blocks run twice, RMSNorm between the passes) */
    int pre_enrich, enc_recur, overtone;
    float *pe_w1, *pe_w2;
    float *ve_embed, *ve_proj, *ve_scale; /* NULL when off (ve_proj also when VE_DIM = Hk*D) */
    /* depth recurrence (PR #1392): encoder layers recur_layer[k] run a second pass, blended with
     * recur_scales.k, while recur_on */
    int recur_n, recur_on;
    int recur_layer[8];
    float *recur_scale[8];
    long recur_start;
    int B, T; /* activation capacity: B sequences of T tokens */
    int decoder;      /* built by gpt_build_decoder: decoding only */
    int eval_only;    /* built by gpt_build_eval: full forwards without a backward */
    const gpt_model *wsrc; /* an evaluator's weights' owner (NULL: its own) */
    int sizing;       /* a gpt_build_bytes build: counts its backend memory, allocates none */
    size_t dev_bytes; /* backend memory allocated by the build */

    /* parameter table */
    param_info *params;
    int n_params;
    size_t n_floats; /* arena size in floats (tensors padded to 128-float boundaries) */
    size_t n_count;  /* number of parameters */
    float *w;        /* fp32 masters */
    int w_owned;     /* allocated by this build (not an evaluator's borrowed weights) */
    float *g;        /* fp32 gradients */
    pg_wc *wc;       /* compute copy (== w on CPU) */
    int wc_owned;
    /* views */
    float *tok_emb, *skip_weights, *lm_head;
    float *smear_gate, *bigram_table, *bigram_proj, *bigram_scale; /* NULL when the feature is off */
    block_params *blk;
    int i_tok_emb, i_lm_head, i_bg_proj, i_ve_proj; /* their indices in params (-1: absent) */

    /* rope tables (T, rope_dims/2) fp32, backend memory */
    float *rope_cos, *rope_sin;

    /* activations */
    int32_t *idx, *tgt; /* backend memory (B*T) */
    int32_t *bidx, *bidx_host; /* bigram buckets (B*T), backend and host */
    pg_act *x0, *nf, *logits, *emb;
    pg_act *emb_mid;    /* (N, d) smear input (PR #65) or norm output (PR #315) */
    pg_act *bg_e, *bg_p; /* (N, db) gathered bigram rows, (N, d) their projection */
    float *rstd0, *rstdf, *losses;
    block_acts *acts;
    block_acts shared_acts; /* an evaluator's activations shared by every pass (all but the outputs) */
    /* backward scratch */
    pg_act *ve_e, *ve_p, *ve; /* (N, ve_dim), (N, Hk*D), (N, Hk*D) */
    pg_act *s_dve, *s_dvp, *s_dvee;
    block_acts *racts;   /* the second passes (recur_n) */
    block_acts *eacts;   /* PR #187: the encoder's first pass (n_enc) */
    pg_act *er_x;        /* PR #187: rmsnorm of the first pass's output, the second pass's input */
    float *rstd_er;
    pg_act *pe_h, *pe_g, *pe_out; /* pre-enrichment: W1 x and gelu(W1 x) (N, pe), W2 gelu (N, d) */
    pg_act *s_pe;        /* (N, pe) */
    pg_act *lane_out;    /* the lanes' blend (N, d) */
    pg_act *dx2, *s_d3;  /* the second lane's gradient, scratch (N, d) */
    pg_act **rec_out;    /* (N, d) blended outputs of the recurring layers */
    pg_act *s_rec;
    pg_act *dx, *dx0, **dskip, *s_d, *s_d2, *s_hid, *s_hd, *s_dq, *s_dk, *s_dv, *s_dqr, *s_dkr, *s_bg;
    pg_act *s_dv2; /* XSA's dv (N, Hk*D) */
    float *losses_host;
    /* incremental decoding (gpt_decode_step) of dec_nb sequences: the next token's position, the
     * previous tokens (B, host), the SmearGate rows (B, 4, d) and the new keys/values (2, B, Hk*D);
     * decoding is set only while a decode step runs */
    int decoding, dec_pos, dec_nb;
    int32_t *dec_prev;
    pg_act *dec_smear, *dec_kv;
    /* Called by a backward (when set) as soon as the gradients of every parameter of block `layer`
     * (param_info.layer) are final for this backward, each block once, last block first; the
     * trainer starts their sum across ranks there (optim_grads_begin) */
    void (*grads_ready)(void *ctx, int layer);
    void *grads_ctx;
};

/* Build the parameter table and allocate parameters and activations for B sequences of T. */
void gpt_build(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int B, int T);
/* A model for incremental decoding only (gpt_decode_step of up to nb sequences of T positions):
 * the parameters, each pass's key/value caches and one row per sequence of the other activations;
 * no gradients and no full forward (gpt_forward_backward refuses it). The same logits as a
 * gpt_build model decoding the same tokens, bit for bit. */
void gpt_build_decoder(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int nb, int T);
/* A model for full forwards without a backward (validation, sliding windows, `pgolf eval`) of up to
 * B sequences of T: each pass keeps only its outputs (what later passes read: the next layer, the
 * U-Net skips, the recurrence blends, the lanes); its other activations are one set shared by every
 * pass, and there are no gradients, QAT copies, backward scratch or decoding state. The same
 * per-token losses and logits as a gpt_build model, bit for bit. With `weights` (a model of the same
 * configuration and backend) it has no parameters of its own: it reads that model's masters and
 * compute copies, so it sees each update, average and reload at once, and its forwards follow that
 * model's depth-recurrence switch (recur_on); weights must outlive it. gpt_forward_backward runs it
 * with grad_scale 0 only; it cannot decode. */
void gpt_build_eval(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int B, int T, const gpt_model *weights);
/* The backend bytes (dev_bytes) of a build of that form for B sequences of T, counted without
 * allocating anything: GPT_EVALUATOR_SHARED is gpt_build_eval with borrowed weights. */
typedef enum { GPT_TRAINING, GPT_DECODER, GPT_EVALUATOR, GPT_EVALUATOR_SHARED } gpt_form;
size_t gpt_build_bytes(const pg_config *cfg, const pg_ops *ops, int B, int T, gpt_form form);
void gpt_free(gpt_model *m);
size_t gpt_param_count(const gpt_model *m);
/* Training FLOPs per token for MFU: 6 * model_params (every weight's multiply-adds, forward and
 * backward) + 6 * L * T * d (causal attention scores and values, half the square). bench/bench_cuda.sh
 * uses the same count. */
double gpt_train_flops_per_token(const gpt_model *m);
/* The parameter count of a configuration without allocating the model (what `pgolf train` prints as
 * model_params). */
size_t gpt_param_count_cfg(const pg_config *cfg);
/* Initialise parameters with the baseline's rules from a seed (own RNG; values bf16-rounded). */
void gpt_init(gpt_model *m, const pg_config *cfg, uint64_t seed);
/* Copy the compute weights from the masters (call after every optimizer step). */
void gpt_sync_weights(gpt_model *m);

/* The records' switches at the top of a training step, before its forward: `step` is the 0-based
 * update index, `mult` its lr multiplier. Late QAT switches on (for good) once mult < the late-QAT
 * threshold, after the lr warmup when there is one (PR #1311's step > LR_WARMUP_STEPS; it then
 * fake-quantises only with PGOLF_LATE_QAT_ACTIVE=1); depth recurrence runs
 * from update RECUR_START_STEP on (without a restart: same weights, optimizer, data). Returns the GPT_SWITCHED_*
 * bits of what switched on in this call, for the log lines. */
#define GPT_SWITCHED_LATE_QAT 1
#define GPT_SWITCHED_RECUR 2 /* depth recurrence from RECUR_START_STEP */
int gpt_step_begin(gpt_model *m, long step, double mult);

/* Forward over B_run <= B sequences (host token arrays of B_run*T). Returns the mean loss; when
 * grad_scale != 0 also runs the backward and ACCUMULATES parameter gradients scaled by grad_scale
 * (the gradient of grad_scale * mean loss). per_token_loss (host, optional) receives each
 * position's loss. */
double gpt_forward_backward(gpt_model *m, const int32_t *x, const int32_t *y, int B_run, float grad_scale,
                            float *per_token_loss);

/* Incremental decoding (`pgolf sample`, PR #1392's self-generated GPTQ calibration): the forward
 * above for one token per sequence at a time, on any backend, for nb <= m->B sequences together.
 * Each pass's keys and values stay in its activations (sequence b's in rows b*T..b*T+T-1 of a->k,
 * a->v), so a step costs one pass through the layers with nb rows; the previous tokens (bigram
 * buckets) and SmearGate's previous inputs are carried too. Position p's logits equal row p of a full
 * forward over the same tokens, up to the summation order of the matmuls and of attention. Depth
 * recurrence runs when m->recur_on is set, as in the forward. gpt_decode_reset(m, nb) starts nb
 * contexts (position 0; needed before the first step, and after a full forward, which overwrites the
 * caches); gpt_decode_step feeds toks[b] to sequence b at position gpt_decode_pos(m) < m->T, the same
 * for all, and writes the next tokens' softcapped logits (nb, V: host, what the loss sees) to logits. */
void gpt_decode_reset(gpt_model *m, int nb);
int gpt_decode_pos(const gpt_model *m);
void gpt_decode_step(gpt_model *m, const int32_t *toks, float *logits);
void gpt_zero_grad(gpt_model *m);
/* Load averaged weights (an EMA arena, or an SWA sum with its count as divisor; n_floats in backend
 * memory) into the masters: avg/divisor, each tensor cast to its state-dict dtype and back (bf16
 * embedding tables are rounded to bf16). */
void gpt_load_averaged(gpt_model *m, const float *avg, int divisor);

/* State dict (PyTorch names and dtypes) <-> parameters. */
void gpt_to_statedict(const gpt_model *m, statedict *sd);
int gpt_from_statedict(gpt_model *m, const statedict *sd, const char *what, char *err, size_t errlen);
/* Gradients as a state dict named "grad.<param>" (tests). */
void gpt_grads_to_statedict(const gpt_model *m, statedict *sd);

/* name pattern helpers (comma-separated substrings, as CONTROL_TENSOR_NAME_PATTERNS) */
int name_matches_patterns(const char *name, const char *patterns);

#endif
