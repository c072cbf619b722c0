/* statedict.h: a named-tensor container (the C analogue of a PyTorch state dict) and the
 * safetensors reader/writer built on it. Names follow the PyTorch state-dict names of the records
 * (`tok_emb.weight`, `blocks.0.attn.c_q.weight`, ...), so the same file can be loaded by the
 * reference model and by pgolf. The container owns copies of its tensors' bytes. */
#ifndef PGOLF_STATEDICT_H
#define PGOLF_STATEDICT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DT_F32 = 0,
    DT_F16,
    DT_BF16,
    DT_F64,
    DT_I8,
    DT_U8,
    DT_I16,
    DT_I32,
    DT_I64,
    DT_COUNT
} pg_dtype;

#define SD_MAX_NDIM 4

typedef struct {
    char *name;
    pg_dtype dtype;
    int ndim;
    int64_t shape[SD_MAX_NDIM];
    void *data; /* owned, nbytes long */
    size_t nbytes;
} sd_tensor;

typedef struct {
    sd_tensor *t;
    int n, cap;
} statedict;

size_t pg_dtype_size(pg_dtype dt);
const char *pg_dtype_name(pg_dtype dt);                /* safetensors spelling: "F32", "BF16", ... */
int pg_dtype_from_name(const char *name, pg_dtype *dt); /* 0 or -1 */

void sd_init(statedict *sd);
void sd_free(statedict *sd);
int64_t sd_numel(const sd_tensor *t);
/* Add a tensor (data copied; data may be NULL for zeros). Dies on a duplicate name. */
sd_tensor *sd_add(statedict *sd, const char *name, pg_dtype dt, int ndim, const int64_t *shape,
                  const void *data);
/* Convenience: add an fp32 tensor. */
sd_tensor *sd_add_f32(statedict *sd, const char *name, int ndim, const int64_t *shape, const float *data);
sd_tensor *sd_find(const statedict *sd, const char *name);
/* Copy a tensor's values out as fp32 (converting F16/BF16/F64/int types); n must equal numel. */
void sd_to_f32(const sd_tensor *t, float *out);

/* safetensors (https://github.com/huggingface/safetensors format): 8-byte LE header length, JSON
 * header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the data.
 * The writer is atomic; metadata may be NULL. The reader validates every offset and size. */
int safetensors_write(const char *path, const statedict *sd, const char *const *meta_kv, int n_meta,
                      char *err, size_t errlen);
int safetensors_read(const char *path, statedict *sd, char *err, size_t errlen);
int safetensors_parse(const uint8_t *buf, size_t len, const char *what, statedict *sd, char *err,
                      size_t errlen);

/* PR #1311 / #1392 weight banks (spec §2.8): qo_bank [2n, d, d] = the n layers' attn.c_q then
 * attn.proj, kv_bank [2n, kvd, d] = c_k then c_v, mlp_up_bank [n, hidden, d] = mlp.fc,
 * mlp_down_bank [n, d, hidden] = mlp.proj; every other tensor keeps its name. sd_bank writes the
 * banked form of an unbanked state dict of n layers (banks in the matrices' dtype, placed where
 * blocks.0's first matrix was); sd_unbank the reverse (no banks: a plain copy), and reads PR #187's
 * smear_gate.gate as smeargate.gate (PR #65's name, pgolf's). -1 with err on a missing or
 * mis-shaped matrix. */
int sd_bank(const statedict *in, int n_layers, statedict *out, char *err, size_t errlen);
int sd_unbank(const statedict *in, statedict *out, char *err, size_t errlen);
/* PR #187's name for the SmearGate: smeargate.gate renamed smear_gate.gate (the inverse of
 * sd_unbank's rename). */
void sd_pr187_names(statedict *sd);
/* A safetensors state dict in pgolf's names: safetensors_read, then sd_unbank (errors name path). */
int safetensors_read_records(const char *path, statedict *sd, char *err, size_t errlen);

#endif
