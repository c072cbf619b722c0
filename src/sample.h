/* sample.h: text generation from a trained model (`pgolf sample`). The model decodes one token at a
 * time with key/value caches (model.h: gpt_decode_step, on any backend); the sampler here picks the
 * next token (greedy, temperature, top-k, top-p) with its own seeded generator. */
#ifndef PGOLF_SAMPLE_H
#define PGOLF_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"

/* The sampler's generator: xoshiro256** seeded by splitmix64 (the same on every platform). */
typedef struct {
    uint64_t s[4];
} sample_rng;
void sample_rng_seed(sample_rng *r, uint64_t seed);
/* stream `stream` of seed: one generator per sequence of a batch, so that what a sequence draws does
 * not depend on how many are generated together */
void sample_rng_stream(sample_rng *r, uint64_t seed, uint64_t stream);
/* uniform in [0, 1) */
double sample_rng_uniform(sample_rng *r);

/* The next token from logits (V): temperature 0 picks the argmax (the lowest id among ties);
 * otherwise softmax(logits / temperature) restricted to the top_k highest logits (top_k 0 or >= V:
 * all; ties at the cut broken by the lower id), then to the nucleus of top_p (0 < top_p <= 1; 1:
 * off): the fewest most likely of those tokens whose probabilities sum to at least top_p, drawn
 * with one uniform from r. */
int sample_pick(const float *logits, int V, double temperature, int top_k, double top_p, sample_rng *r);
/* 1 when all n logits are finite (a diverged model's are not) */
int sample_logits_finite(const float *logits, size_t n);

#endif
