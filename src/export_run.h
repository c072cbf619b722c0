/* export_run.h: the end of a training run (spec §2.9): write the raw state dict, quantise and
 * compress it into the artifact, log the byte accounting, reload the artifact into the model.
 * Also the packing and loading steps on their own, used by `pgolf export` and `pgolf eval`. */
#ifndef PGOLF_EXPORT_RUN_H
#define PGOLF_EXPORT_RUN_H

#include <stddef.h>

#include "config.h"
#include "model.h"
#include "statedict.h"

#define PGOLF_SIZE_CAP 16000000

typedef struct {
    const pg_config *cfg;
    gpt_model *model;
    void (*log)(int console, const char *fmt, ...);
    /* outputs */
    char label_short[32]; /* "int8_zlib" as in final_int8_zlib_roundtrip */
    char artifact_path[4096];
    size_t model_bytes, code_bytes, total_bytes;
    double t_eval_start;
} export_run;

/* byte accounting of one packed artifact */
typedef struct {
    size_t file_bytes;            /* the artifact file = total submission size */
    size_t code_bytes;            /* compressed source bundle */
    size_t model_bytes;           /* file_bytes - code_bytes (header, metadata, compressed model) */
    size_t payload_bytes;         /* the records' payload: codes + scales + passthrough bytes */
    size_t raw_bytes;             /* uncompressed serialized quantised object (the records' raw_torch) */
    size_t baseline_tensor_bytes; /* raw state-dict tensor bytes */
    char log_label[48];           /* "int8+zlib" */
    char label_short[32];         /* "int8_zlib" */
    size_t n_gptq, n_gptq_lite;   /* int6_gptq(_lite): matrices by full GPTQ / by the clip search */
} export_sizes;

struct gptq_hessians; /* quant.h */

typedef struct {
    size_t file_bytes, code_bytes, model_bytes;
} artifact_sizes;

/* Fails with an error line naming the directory if final_model.* cannot be written there. */
int export_check_writable(const char *dir, char *err, size_t errlen);
/* Quantise sd with cfg's QUANT_SCHEME, compress with EXPORT_CODEC and write the artifact atomically.
 * QUANT_SCHEME=int6_gptq calibrates on GPTQ_CALIB_BATCHES training sequences from DATA_PATH with a
 * model built from sd (gptq_collect_statedict); an error if the training shards are missing. */
int export_pack(const pg_config *cfg, const statedict *sd, const char *path, export_sizes *sz, char *err, size_t errlen);
/* The same with the Hessians given (int6_gptq; NULL: collected as export_pack does). */
int export_pack_h(const pg_config *cfg, const statedict *sd, const struct gptq_hessians *h, const char *path,
                  export_sizes *sz, char *err, size_t errlen);
/* Read an artifact, validate it, decompress and dequantise into sd (original dtypes). */
int export_load_artifact(const char *path, statedict *sd, artifact_sizes *as, char *err, size_t errlen);
/* Returns 0 with the model now holding the dequantised weights, or -1 after printing and logging the
 * error. With QUANT_SCHEME=int6_gptq the Hessians are collected with ex->model itself on
 * GPTQ_CALIB_BATCHES sequences of the training shards (gptq.h), logged as the record logs them. */
int export_and_roundtrip(export_run *ex);

#endif
