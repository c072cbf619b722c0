/* eval.h: validation loss and bits per byte exactly as the challenge computes them (spec §1.5,
 * §2.8): non-overlapping sequences of TRAIN_SEQ_LEN, every val token after the first is a target
 * once; bytes per target from the tokenizer's byte tables with the leading-space rule. */
#ifndef PGOLF_EVAL_H
#define PGOLF_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"

typedef struct {
    int size;
    int16_t *base_bytes;
    uint8_t *has_leading_space, *is_boundary;
} bpb_luts;

/* Tables of size max(tokenizer vocab, vocab_size) from a SentencePiece model; fails if the
 * tokenizer's vocab differs from vocab_size. */
int bpb_luts_load(bpb_luts *L, const char *tokenizer_path, int vocab_size, char *err, size_t errlen);
void bpb_luts_free(bpb_luts *L);

typedef struct {
    double loss_sum;    /* sum of per-target nll (nats), float64 */
    double token_count; /* targets scored */
    double byte_count;  /* bytes of the scored targets */
    double val_loss, val_bpb;
} eval_result;

/* Bytes of target y whose input token is p. */
static inline int bpb_token_bytes(const bpb_luts *L, int y, int p) {
    return L->base_bytes[y] + (L->has_leading_space[y] && !L->is_boundary[p] ? 1 : 0);
}
/* loss/bpb from the sums: val_loss = loss_sum/count; val_bpb = val_loss/ln2 * count/bytes */
void eval_finish(eval_result *r);

/* Standard validation over val[0 .. usable] for this rank's share of sequences, batches of
 * local_batch_seqs. nll_out (optional, host, usable floats) receives each target's loss. */
void eval_val(gpt_model *m, const uint16_t *val, size_t usable, int seq_len, int local_batch_seqs, int rank,
              int world, const bpb_luts *L, eval_result *r, float *nll_out);

/* Sliding-window evaluation (spec §3.7, §4.9): windows of S = m->T tokens starting every `stride`
 * targets; RoPE positions restart in every window. Styles:
 *   SW_EXACT  pgolf's: every target scored exactly once, by the window that gives it the longest
 *             left context (the first window scores all its positions, each later one its last
 *             `stride`; a short tail window scores what is left);
 *   SW_PR65   PR #65's code: W = (N-S)/stride + 1 full windows, each scores only its last `stride`
 *             positions (the first S-stride targets are never scored, no tail);
 *   SW_PR315  PR #315/#453's code: windows while start < N, short tail windows zero-padded; the first
 *             scores all, later ones their last `stride` positions of the valid length (the tail
 *             windows re-score the last `stride` targets).
 * val holds usable+1 tokens (targets j = 0..usable-1 are val[j+1] given val[..j]). Windows are split
 * contiguously across ranks and run `batch` per forward. temp != 1 scores softmax(softcapped
 * logits / temp) (EVAL_TEMPERATURE, PR #1311; fp32 here, bf16 in the record). */
typedef enum { SW_EXACT, SW_PR65, SW_PR315 } sw_style;
/* "exact", "pr65", "pr315" -> style; -1 if unknown */
int sw_style_parse(const char *s);
/* Number of windows and the scored target range [*j0, *j1) of window w (start *ws, valid length *wlen). */
long sw_num_windows(sw_style st, size_t usable, int S, int stride);
void sw_window(sw_style st, size_t usable, int S, int stride, long w, size_t *ws, int *wlen, size_t *j0, size_t *j1);
void eval_sliding(gpt_model *m, const uint16_t *val, size_t usable, int stride, int batch, sw_style st, double temp,
                  int rank, int world, const bpb_luts *L, eval_result *r);

#endif
