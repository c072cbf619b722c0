/* gptq.h: PR #1392's full Hessian GPTQ (spec pr1311-pr1392-pr187.md §3.8) for QUANT_SCHEME=int6_gptq:
 * the calibration Hessians H = sum X^T X / n of the inputs X of every block linear, and the GPTQ
 * quantisation of one matrix with its Hessian.
 *
 * Calibration, and how it differs from the record on purpose:
 *   - data: GPTQ_CALIB_BATCHES sequences of TRAIN_SEQ_LEN tokens. PGOLF_GPTQ_CALIB=train (the
 *     default; issue #6 asks for calibration from training data): the first tokens of the training
 *     shards DATA_PATH/fineweb_train_*.bin. PGOLF_GPTQ_CALIB=ar (configs/pr1392.env): PR #1392's
 *     self-generated text, sampled autoregressively from the exported (EMA) model with depth
 *     recurrence on, the first token uniform, temperature 0.8, seeded with SEED. Differences from
 *     the record: pgolf's own generator (xoshiro256**, not torch's; the text cannot be the same
 *     anyway, the logits differ in their last bits), one sequence at a time with a key/value cache
 *     (the record: 8 at a time, the whole prefix recomputed per token), and all TRAIN_SEQ_LEN tokens
 *     fed to the Hessians (the record feeds the first 2047 of its 2048).
 *   - dataflow: as the record's non-banked replica, the model runs purely sequentially while the
 *     Hessians are collected: depth recurrence (recur_on) and parallel residuals (blk[l].parallel)
 *     are switched off, then restored. Layers that recur or run in parallel in training and
 *     evaluation are therefore calibrated under another dataflow, exactly as in the record.
 *   - inputs (model.h block_acts, the layer's first pass): c_q/c_k/c_v read s*n1, attn.proj att_x
 *     (XSA layers) or att, mlp.fc s*n2, mlp.proj u, with s = 1/sqrt(l+1) when LN_SCALE=1 (else 1).
 *     c_q, c_k and c_v share one Hessian. ve_shared.proj (too small to quantise) gets none.
 *   - precision: the activations of the backend (fp32 on CPU; bf16 on CUDA, as the record's
 *     autocast inputs), accumulated in fp32 (ssyrk) and divided by the number of sequences.
 *
 * GPTQ of one matrix W (R x C) with H (C x C) (gptq_quantize, quant.h/quant.c), all fp32 as the
 * record runs it on the CPU:
 *   dead columns (diag H == 0) get H_cc = 1; H += GPTQ_DAMP*mean(diag H)*I; columns ordered by
 *   descending diag H (stable: ties keep their index order); W's dead columns zeroed; U = the upper
 *   Cholesky factor of H^-1 (LAPACK spotrf 'L', spotri 'L', spotrf 'U', the calls torch makes);
 *   for each clip percentile p of QUANT_PCT: row scales quant_pct_scales of the unpermuted W, then
 *   blocks of GPTQ_BLOCK_SIZE columns: each column quantised (clamp(round(w/s), -31, 31)), its
 *   error divided by U_cc and subtracted from the rest of the block times U's row, the block's
 *   errors propagated to the later columns with one sgemm; score = unweighted mean squared error
 *   of the permuted W (summed in double); the first lowest p wins; codes un-permuted. */
#ifndef PGOLF_GPTQ_H
#define PGOLF_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"
#include "quant.h"
#include "statedict.h"

/* Collect over n_seqs sequences of m->T tokens (host, n_seqs*m->T ids), m->B at a time, with
 * recurrence and parallel residuals switched off (restored on return). 0 or -1 with err. */
int gptq_collect(gpt_model *m, const int32_t *tokens, int n_seqs, gptq_hessians *h, char *err, size_t errlen);
/* The calibration tokens: n_seqs*T ids from the start of DATA_PATH/fineweb_train_*.bin (malloc'd). */
int gptq_calib_tokens(const pg_config *cfg, int n_seqs, int T, int32_t **tokens, char *err, size_t errlen);
/* PR #1392's self-generated calibration text: n_seqs sequences of m->T tokens sampled from m itself
 * with its incremental decoding, m->B sequences at a time (any backend; depth recurrence on while
 * generating): the first token uniform in [0, V), each next one drawn from softmax(logits /
 * temperature) with the sampler of `pgolf sample`; sequence s draws from sample_rng_stream(seed, s),
 * so the text does not depend on m->B (up to the rounding of the batched matmuls) (malloc'd). */
#define GPTQ_AR_TEMPERATURE 0.8
int gptq_calib_generate(gpt_model *m, int n_seqs, uint64_t seed, double temperature, int32_t **tokens, char *err,
                        size_t errlen);
/* GPTQ_CALIB_BATCHES sequences of m->T tokens, from the training shards (PGOLF_GPTQ_CALIB=train) or
 * self-generated with seed SEED (ar), then gptq_collect; log (optional) gets the record's lines. */
int gptq_calibrate(gpt_model *m, const pg_config *cfg, gptq_hessians *h, void (*log)(int, const char *, ...),
                   char *err, size_t errlen);
/* gptq_calibrate for a state dict without a model: builds one of cfg's shape (PGOLF_BACKEND, up to
 * 4 sequences at a time, TRAIN_SEQ_LEN) and loads sd into it. */
int gptq_collect_statedict(const pg_config *cfg, const statedict *sd, gptq_hessians *h, char *err, size_t errlen);

#endif
