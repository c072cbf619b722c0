/* export_run.h: the end of a training run (spec §2.9): write the raw state dict, quantise and
 * compress it into the artifact, log the byte accounting, reload the artifact into the model. */
#ifndef PGOLF_EXPORT_RUN_H
#define PGOLF_EXPORT_RUN_H

#include <stddef.h>

#include "config.h"
#include "model.h"

#define PGOLF_SIZE_CAP 16000000

typedef struct {
    const pg_config *cfg;
    gpt_model *model;
    void (*log)(int console, const char *fmt, ...);
    /* outputs */
    char label_short[32]; /* "int8_zlib" as in final_int8_zlib_roundtrip */
    size_t model_bytes, code_bytes, total_bytes;
    double t_eval_start;
} export_run;

/* Fails with an error line naming the directory if final_model.* cannot be written there. */
int export_check_writable(const char *dir, char *err, size_t errlen);
/* Returns 0 with the model now holding the dequantised weights, or -1 after logging the error. */
int export_and_roundtrip(export_run *ex);

#endif
