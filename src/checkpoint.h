/* checkpoint.h: training checkpoints for interrupt and resume. A checkpoint holds everything the
 * next step depends on: the fp32 master weights, every optimizer buffer (Adam moments, Muon
 * momentum), the optimizer step count, the training step, the training time spent so far, the
 * wallclock stop decision, the data stream position, and the resolved configuration (a resume with
 * a different model or data layout is refused). Format (little-endian):
 *   "PGOLFCKP" u32 version u32 n_arrays u64 config_json_len  config_json
 *   u64 step  f64 training_ms  i64 stop_after  i64 optim_step  i32 stream_file  u32 swa_count
 *   u64 stream_pos  u64 n_floats  n_arrays x (n_floats fp32)   [weights, adam_m, adam_v, muon_buf,
 *   (ema), (swa sum)]
 *   u32 crc32 of every byte before it
 * Files are written to a temporary name, fsynced and renamed, so a crash (even kill -9) during a
 * write leaves the previous checkpoint intact. */
#ifndef PGOLF_CHECKPOINT_H
#define PGOLF_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "data.h"
#include "model.h"
#include "optim.h"

typedef struct {
    long step;          /* optimizer steps completed */
    double training_ms; /* training time so far (excludes validation) */
    long stop_after;    /* wallclock stop decision (-1: none yet) */
    int stream_file;    /* data stream position */
    size_t stream_pos;
    int swa_count; /* SWA samples summed so far */
} ckpt_progress;

/* Write atomically. Returns 0 or -1 with "<path>: <problem>". */
int ckpt_save(const char *path, const pg_config *cfg, const gpt_model *m, const optimizer *o, const float *ema,
              const float *swa, const ckpt_progress *p, char *err, size_t errlen);
/* Read and verify (magic, version, checksum, sizes, configuration compatibility), then restore the
 * model weights, the optimizer state and the EMA and SWA sums (NULL when off). Returns 0 or -1 with "<path>: <problem>". */
int ckpt_load(const char *path, const pg_config *cfg, gpt_model *m, optimizer *o, float *ema, float *swa,
              ckpt_progress *p, char *err, size_t errlen);

#endif
