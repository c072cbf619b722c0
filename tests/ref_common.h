/* ref_common.h: helpers shared by the tests that compare pgolf with the PyTorch reference
 * (tests/reference/ref.py, run with /usr/bin/python3 in float64). */
#ifndef PGOLF_TESTS_REF_COMMON_H
#define PGOLF_TESTS_REF_COMMON_H

#include <stdint.h>

#include "../src/common.h"
#include "../src/config.h"
#include "../src/model.h"
#include "../src/statedict.h"

#define REF "/usr/bin/python3 tests/reference/ref.py"

typedef struct {
    const char *k, *v;
} kv;

extern uint64_t rng_s; /* state of urand(); randomize_weights() seeds it */
double urand(void);    /* uniform [0, 1) */
float usym(float a);   /* uniform [-a, a) */
void random_tokens(int32_t *t, size_t n, int V);

/* A key for pgolf (for_ref 0) or for the reference (1), or NULL: "pg:KEY" is pgolf's alone,
 * "ref:KEY" the reference's alone, "KEY" both. */
const char *pair_key(const kv *p, int for_ref);
/* Apply the pairs to a default config and write them as the JSON config of the reference. */
int make_config(pg_config *c, const kv *pairs, int n, const char *json_path, char *err, size_t errlen);
/* Random weights of the right scale for every tensor (seeds rng_s). */
void randomize_weights(gpt_model *m, uint64_t seed);
/* The parameters (or gradients, with prefix "grad.") as fp32 safetensors. */
int write_arena(const gpt_model *m, const float *arena, const char *prefix, const char *path, char *err, size_t errlen);
/* x and y (int32) of the given shape */
int write_tokens(const char *path, const int32_t *x, const int32_t *y, int ndim, const int64_t *shape, char *err,
                 size_t errlen);
/* a tensor of the reference's output as doubles (malloc'd); NULL if missing or of another size */
double *get_f64(const statedict *sd, const char *name, size_t n);
/* max|a-b| / max|b| in double; a is pgolf's, b the reference's */
double rel_err_fd(const float *a, const double *b, size_t n);
/* the same with the denominator at least `floor` */
double rel_err_fd_floor(const float *a, const double *b, size_t n, double floor);
double rel_err_dd(const double *a, const double *b, size_t n);

#endif
