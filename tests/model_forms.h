/* model_forms.h: model configurations that together switch on every model feature, small enough
 * (d 64, T 32) for whole-model tests that compare two ways of running the same model (test_sample.c:
 * the decoder against the full forward; test_model.c: the evaluator build against the training
 * build). */
#ifndef PGOLF_TEST_MODEL_FORMS_H
#define PGOLF_TEST_MODEL_FORMS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/config.h"
#include "ref_common.h"

/* shape shared by every case: d 64, T 32 */
static const kv BASE[] = {{"MODEL_DIM", "64"}, {"TRAIN_SEQ_LEN", "32"}, {"MLP_MULT", "2"}};

typedef struct {
    const char *name;
    kv kv[16];
} model_form;

/* together: tied and untied heads, softcap, resid_mix, q/k norm + q_gain (every case), GQA and
 * MHA, partial RoPE, NTK base, fp32 and bf16 RoPE tables, XSA (some and all layers), LN scale,
 * relu2 and leaky_relu2, SmearGate pre and post, both bigram tables (with and without projection),
 * value embeddings (with and without projection), parallel residuals (PR #1392's sum, PR #1289's
 * and PR #1334's lanes), depth recurrence (one and two recurring layers, the first layer too),
 * PR #187's pre-enrichment and encoder recurrence, U-Net skips with even and odd layer counts. */
static const model_form MODEL_FORMS[] = {
    {"baseline", {{"VOCAB_SIZE", "96"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}}},
    {"pr65_untied",
     {{"VOCAB_SIZE", "128"}, {"NUM_LAYERS", "3"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "4"}, {"TIE_EMBEDDINGS", "0"},
      {"PGOLF_SMEAR_MODE", "pre"}, {"BIGRAM_HASH_BUCKETS", "61"}, {"BIGRAM_HASH_DIM", "24"}, {"LOGIT_SOFTCAP", "7"},
      {"PGOLF_BF16_ROPE_TABLE", "0"}}},
    {"pr315",
     {{"VOCAB_SIZE", "100"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"PGOLF_SMEAR_MODE", "post"},
      {"BIGRAM_VOCAB_SIZE", "53"}, {"BIGRAM_DIM", "32"}, {"XSA_LAST_N", "2"}, {"ROPE_DIMS", "8"}, {"LN_SCALE", "1"},
      {"PGOLF_ROPE_NTK", "1"}, {"PGOLF_ROPE_NTK_REF_LEN", "16"}}},
    {"pr1392",
     {{"VOCAB_SIZE", "80"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"PGOLF_SMEAR_MODE", "post"},
      {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}, {"VE_ENABLED", "1"}, {"VE_DIM", "16"}, {"VE_LAYERS", "1,3"},
      {"PARALLEL_START_LAYER", "2"}, {"RECUR_LAYERS", "0,1"}, {"XSA_LAST_N", "4"}, {"ROPE_DIMS", "4"}, {"LN_SCALE", "1"}}},
    {"odd_layers",
     {{"VOCAB_SIZE", "64"}, {"NUM_LAYERS", "3"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "1"}, {"TIE_EMBEDDINGS", "0"},
      {"BIGRAM_VOCAB_SIZE", "40"}, {"BIGRAM_DIM", "64"}, {"VE_ENABLED", "1"}, {"VE_DIM", "32"}, {"VE_LAYERS", "0,2"},
      {"RECUR_LAYERS", "0"}, {"PARALLEL_START_LAYER", "0"}, {"XSA_LAST_N", "1"}, {"PGOLF_MLP_ACTIVATION", "leaky_relu2"},
      {"PGOLF_LEAKY_RELU_SLOPE", "0.3"}, {"PGOLF_SMEAR_MODE", "pre"}}},
    {"pr187",
     {{"VOCAB_SIZE", "96"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"PGOLF_PRE_ENRICH", "96"},
      {"ENCODER_RECURRENCE", "1"}, {"PGOLF_SMEAR_MODE", "pre"}, {"BIGRAM_HASH_BUCKETS", "89"}, {"BIGRAM_HASH_DIM", "16"},
      {"XSA_LAST_N", "3"}, {"PGOLF_OPT_PARTITION", "pr187"}}},
    {"pr187_post_odd",
     {{"VOCAB_SIZE", "72"}, {"NUM_LAYERS", "3"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "1"}, {"PGOLF_PRE_ENRICH", "40"},
      {"ENCODER_RECURRENCE", "1"}, {"PGOLF_SMEAR_MODE", "post"}, {"LN_SCALE", "1"}, {"VE_ENABLED", "1"}, {"VE_DIM", "16"},
      {"VE_LAYERS", "0,1"}, {"TIE_EMBEDDINGS", "0"}}},
    {"lanes1289",
     {{"VOCAB_SIZE", "90"}, {"NUM_LAYERS", "4"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"PARALLEL_START_LAYER", "2"},
      {"PGOLF_PARALLEL_MODE", "lanes1289"}, {"VE_ENABLED", "1"}, {"VE_DIM", "16"}, {"VE_LAYERS", "2,3"}, {"XSA_LAST_N", "2"},
      {"PGOLF_MLP_ACTIVATION", "leaky_relu2"}, {"PGOLF_SMEAR_MODE", "post"}}},
    {"lanes1334",
     {{"VOCAB_SIZE", "70"}, {"NUM_LAYERS", "5"}, {"NUM_HEADS", "2"}, {"NUM_KV_HEADS", "2"}, {"PARALLEL_START_LAYER", "2"},
      {"PGOLF_PARALLEL_MODE", "lanes1334"}, {"LN_SCALE", "1"}, {"ROPE_DIMS", "16"}, {"XSA_LAST_N", "1"}}},
    /* STE QAT: a training forward (test_sample.c's decoder_vs_forward runs one first) reads fake-quantised weights;
     * decoding, like the evaluation forward, must read the weights themselves */
    {"qat_after_training",
     {{"VOCAB_SIZE", "64"}, {"NUM_LAYERS", "2"}, {"NUM_HEADS", "4"}, {"NUM_KV_HEADS", "2"}, {"PGOLF_QAT_MODE", "rowmax"},
      {"PGOLF_SMEAR_MODE", "pre"}, {"BIGRAM_HASH_BUCKETS", "31"}, {"BIGRAM_HASH_DIM", "16"}}},
};
#define N_MODEL_FORMS (int)(sizeof(MODEL_FORMS) / sizeof(MODEL_FORMS[0]))

static inline int model_form_config(pg_config *c, const model_form *sc, char *err, size_t n) {
    config_defaults(c);
    for (size_t i = 0; i < sizeof(BASE) / sizeof(BASE[0]); i++)
        if (config_set(c, BASE[i].k, BASE[i].v, "test", err, n) != 0) return -1;
    for (int i = 0; i < 16 && sc->kv[i].k; i++)
        if (config_set(c, sc->kv[i].k, sc->kv[i].v, "test", err, n) != 0) return -1;
    return config_validate(c, err, n);
}

/* the same forward (grad_scale 0) of nb sequences of x, y on n models (of one shape, any backends'
 * logits read back as fp32): 1 when the first model's mean loss is finite and every model's mean,
 * per-token losses and logits equal the first's bit for bit; means[k] gets model k's mean */
static inline int same_forwards(gpt_model *const *ms, int n, const int32_t *x, const int32_t *y, int nb, double *means) {
    const size_t N = (size_t)nb * ms[0]->T, NV = N * (size_t)ms[0]->V;
    float *loss0 = xmalloc(N * sizeof(float)), *logits0 = xmalloc(NV * sizeof(float));
    float *loss = xmalloc(N * sizeof(float)), *logits = xmalloc(NV * sizeof(float));
    int same = 1;
    for (int k = 0; k < n; k++) {
        means[k] = gpt_forward_backward(ms[k], x, y, nb, 0.0f, k ? loss : loss0);
        ms[k]->ops->act_to_f32(k ? logits : logits0, ms[k]->logits, NV);
        if (k == 0) same = isfinite(means[0]);
        else
            same &= means[k] == means[0] && !memcmp(loss, loss0, N * sizeof(float)) &&
                    !memcmp(logits, logits0, NV * sizeof(float));
    }
    free(loss0);
    free(logits0);
    free(loss);
    free(logits);
    return same;
}

#endif
