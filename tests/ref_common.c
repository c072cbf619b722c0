/* ref_common.c: helpers shared by the tests that compare pgolf with the PyTorch reference
 * (test_reference.c, test_reference_model.c): a seeded generator, configs written for both sides,
 * random weights of the right scale, safetensors of weights/gradients/tokens, relative errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_common.h"

uint64_t rng_s = 1;
double urand(void) { /* uniform [0, 1) */
    rng_s = rng_s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_s >> 11) * (1.0 / 9007199254740992.0);
}
float usym(float a) { return (float)((2.0 * urand() - 1.0) * a); }

/* A key for pgolf (for_ref 0) or for the reference (1), or NULL: "pg:KEY" is pgolf's alone,
 * "ref:KEY" the reference's alone (where the two name or count a setting differently), "KEY" both. */
const char *pair_key(const kv *p, int for_ref) {
    if (!strncmp(p->k, "pg:", 3)) return for_ref ? NULL : p->k + 3;
    if (!strncmp(p->k, "ref:", 4)) return for_ref ? p->k + 4 : NULL;
    return p->k;
}

/* Apply the pairs to a default config and write them as the JSON config of the reference. */
int make_config(pg_config *c, const kv *pairs, int n, const char *json_path, char *err, size_t errlen) {
    config_defaults(c);
    FILE *f = fopen(json_path, "w");
    if (!f) return pg_err(err, errlen, "%s: cannot write", json_path);
    fputc('{', f);
    int nj = 0;
    for (int i = 0; i < n; i++) {
        const char *kp = pair_key(&pairs[i], 0), *kr = pair_key(&pairs[i], 1);
        if (kp && config_set(c, kp, pairs[i].v, "test", err, errlen) != 0) {
            fclose(f);
            return -1;
        }
        if (kr) fprintf(f, "%s\"%s\": \"%s\"", nj++ ? ", " : "", kr, pairs[i].v);
    }
    fputs("}\n", f);
    fclose(f);
    return 0;
}

/* Random weights of the right scale for every tensor (the records' zero-initialised tables and
 * projections would hide most of the backward). */
void randomize_weights(gpt_model *m, uint64_t seed) {
    rng_s = seed;
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        float *w = m->w + p->offset;
        const char *nm = p->name;
        for (size_t k = 0; k < p->numel; k++) {
            float v;
            if (strstr(nm, "resid_mix")) v = k < (size_t)p->shape[1] ? 1.0f + usym(0.3f) : usym(0.5f);
            else if (strstr(nm, "q_gain")) v = 1.5f + usym(0.5f);
            else if (strstr(nm, "gate")) v = usym(2.0f); /* sigmoid well inside (0, 1), both signs */
            else if (p->ndim == 0) v = 0.5f + usym(0.3f);
            else if (p->ndim == 1 || !strcmp(nm, "skip_weights")) v = 1.0f + usym(0.3f);
            else if (!strcmp(nm, "tok_emb.weight") || !strcmp(nm, "lm_head.weight")) v = usym(0.5f);
            else if (strstr(nm, "bigram") && !strstr(nm, "proj")) v = usym(0.5f);
            else v = usym(1.7f / sqrtf((float)p->shape[1]));
            w[k] = v;
        }
    }
    gpt_sync_weights(m);
}

/* The parameters (or gradients, with prefix "grad.") as fp32 safetensors. */
int write_arena(const gpt_model *m, const float *arena, const char *prefix, const char *path, char *err,
                       size_t errlen) {
    statedict sd;
    sd_init(&sd);
    for (int i = 0; i < m->n_params; i++) {
        char nm[160];
        snprintf(nm, sizeof(nm), "%s%s", prefix, m->params[i].name);
        sd_add_f32(&sd, nm, m->params[i].ndim, m->params[i].shape, arena + m->params[i].offset);
    }
    int rc = safetensors_write(path, &sd, NULL, 0, err, errlen);
    sd_free(&sd);
    return rc;
}

/* x and y (int32) of the given shape */
int write_tokens(const char *path, const int32_t *x, const int32_t *y, int ndim, const int64_t *shape, char *err,
                        size_t errlen) {
    statedict sd;
    sd_init(&sd);
    sd_add(&sd, "x", DT_I32, ndim, shape, x);
    sd_add(&sd, "y", DT_I32, ndim, shape, y);
    int rc = safetensors_write(path, &sd, NULL, 0, err, errlen);
    sd_free(&sd);
    return rc;
}

/* a tensor of the reference's output as doubles (malloc'd); NULL if missing or of another size */
double *get_f64(const statedict *sd, const char *name, size_t n) {
    const sd_tensor *t = sd_find(sd, name);
    if (!t || (size_t)sd_numel(t) != n) return NULL;
    double *out = xmalloc((n ? n : 1) * sizeof(double));
    if (t->dtype == DT_F64) memcpy(out, t->data, n * sizeof(double));
    else {
        float *f = xmalloc((n ? n : 1) * sizeof(float));
        sd_to_f32(t, f);
        for (size_t i = 0; i < n; i++) out[i] = f[i];
        free(f);
    }
    return out;
}

/* max|a-b| / max|b| in double; a is pgolf's (float), b the reference's */
double rel_err_fd(const float *a, const double *b, size_t n) { return rel_err_fd_floor(a, b, n, 0); }
double rel_err_fd_floor(const float *a, const double *b, size_t n, double floor) {
    double md = 0, mb = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}
double rel_err_dd(const double *a, const double *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}

void random_tokens(int32_t *t, size_t n, int V) {
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)(urand() * V) % V;
}
