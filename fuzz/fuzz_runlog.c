/* fuzz_runlog.c: the training-log reader of `pgolf plot`, `compare` and `submit` (src/runlog.h) on
 * arbitrary bytes: runlog_parse must either refuse with a message naming the file or return a log
 * whose points, scores and configuration are consistent (counts match the arrays, every string is
 * set, the chosen final score is one of the log's), read through every accessor the commands use. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz_support.h"
#include "runlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[PG_ERRLEN] = "";
    runlog r;
    if (runlog_parse("fuzz.log", (const char *)data, size, &r, err, sizeof(err)) != 0) {
        fuzz_check_err(err, "runlog_parse");
        if (strncmp(err, "fuzz.log", 8) != 0) abort(); /* the error names the file */
        return 0;
    }
    if ((r.n_train && !r.train) || (r.n_val && !r.val) || (r.n_final && !r.finals) || (r.n_cfg && !r.cfg)) abort();
    double acc = 0; /* read every point (ASan sees an array shorter than its count) */
    for (size_t i = 0; i < r.n_train; i++) acc += (double)r.train[i].step + r.train[i].loss;
    for (size_t i = 0; i < r.n_val; i++) acc += (double)r.val[i].step + r.val[i].loss + r.val[i].bpb;
    for (size_t i = 0; i < r.n_final; i++) {
        if (!r.finals[i].name || !r.finals[i].name[0]) abort();
        acc += r.finals[i].val_bpb;
    }
    for (size_t i = 0; i < r.n_cfg; i++) {
        if (!r.cfg[i].key || !r.cfg[i].value || !r.cfg[i].source) abort();
        if (runlog_cfg(&r, r.cfg[i].key) == NULL) abort();
    }
    const rl_final *f = runlog_final(&r, NULL);
    if ((f == NULL) != (r.n_final == 0)) abort();
    if (f && (f < r.finals || f >= r.finals + r.n_final)) abort();
    if (f && runlog_final(&r, f->name) == NULL) abort();
    fuzz_note("runlog: %zu train, %zu val, %zu finals, %zu config keys (%g)", r.n_train, r.n_val, r.n_final, r.n_cfg,
              acc);
    runlog_free(&r);
    return 0;
}
