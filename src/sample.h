/* sample.h: text generation from a trained model (`pgolf sample`). An incremental decoder runs the
 * forward of model.c one token at a time with per-layer key/value caches, in plain fp32 C on host
 * copies of the weights; a sampler picks the next token (greedy, temperature, top-k) with its own
 * seeded generator. */
#ifndef PGOLF_SAMPLE_H
#define PGOLF_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"

/* 0 if the incremental decoder reads every parameter of m (a guard against model features added
 * later), else -1 with one line naming the first parameter it does not. */
int sample_check_model(const gpt_model *m, char *err, size_t errlen);

typedef struct pg_decoder pg_decoder;

/* A decoder for the model m (built by gpt_build with T = the context length, weights loaded; any
 * backend: weights and RoPE tables are copied to the host). It runs depth recurrence when m has
 * recurring layers and m->recur_on is set, as m's own forward does. The decoder keeps no pointer
 * into m; m may be freed afterwards. */
pg_decoder *decoder_new(const gpt_model *m);
void decoder_free(pg_decoder *dc);
/* Forget the context (position 0 next). */
void decoder_reset(pg_decoder *dc);
/* Tokens in the context (the next token's position). */
int decoder_pos(const pg_decoder *dc);
/* The context capacity (the model's T). */
int decoder_capacity(const pg_decoder *dc);
/* Feed token tok at the next position (requires decoder_pos < capacity): logits (V, host) receive
 * the softcapped logits of the next token, as model.c's loss sees them. */
void decoder_step(pg_decoder *dc, int32_t tok, float *logits);

/* The sampler's generator: xoshiro256** seeded by splitmix64 (the same on every platform). */
typedef struct {
    uint64_t s[4];
} sample_rng;
void sample_rng_seed(sample_rng *r, uint64_t seed);
/* uniform in [0, 1) */
double sample_rng_uniform(sample_rng *r);

/* The next token from logits (V): temperature 0 picks the argmax (the lowest id among ties);
 * otherwise softmax(logits / temperature) restricted to the top_k highest logits (top_k 0 or >= V:
 * all; ties at the cut broken by the lower id), drawn with one uniform from r. */
int sample_pick(const float *logits, int V, double temperature, int top_k, sample_rng *r);

#endif
