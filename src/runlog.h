/* runlog.h: a reader for training logs, both pgolf's (logs/$RUN_ID.txt, whose lines are
 * train_gpt.py's) and the challenge records' own train logs, for `pgolf plot`, `compare` and
 * `submit`. It keeps what those commands need: the train and validation points (step, training
 * time, loss, val_bpb), the final scores (final_*_roundtrip(_exact), final_*sliding_window*_exact,
 * the PR #1392 family's quantized* lines), the byte accounting (Total submission size ...),
 * model_params, the seed, and the resolved configuration (pgolf's `config KEY=VALUE (source)`
 * lines, PR #1392's `Hyperparameters:` block, the `key:value` header lines of train_gpt.py).
 *
 * Lines it does not know (embedded source code, nvidia-smi tables, torchrun warnings, TTT
 * progress) are skipped. A line it does know but cannot read (a bad number, a step line missing
 * its loss or time, a final line missing val_bpb: a truncated write) is an error naming the file
 * and the line. A later run appended to the same log (same RUN_ID) replaces the points from the
 * step where it restarts. */
#ifndef PGOLF_RUNLOG_H
#define PGOLF_RUNLOG_H

#include <stddef.h>

typedef struct {
    long step;
    double time_ms; /* NAN when the line has no training time (PR #1392's val lines) */
    double loss;
} rl_train_pt;

typedef struct {
    long step;
    double time_ms; /* NAN when unknown */
    double loss, bpb;
} rl_val_pt;

typedef struct {
    char *name; /* first token: final_int8_zlib_roundtrip_exact, quantized_sliding_window, ... */
    double val_loss, val_bpb;
    int line;
} rl_final;

typedef struct {
    char *key;    /* pgolf config / PR #1392 hyperparameters: upper case; train_gpt.py header: as logged */
    char *value;
    char *source; /* pgolf's "(default)", "(env)", ... without parentheses, or "" */
} rl_kv;

typedef struct {
    char *path;
    rl_train_pt *train;
    size_t n_train;
    rl_val_pt *val;
    size_t n_val;
    rl_final *finals;
    size_t n_final;
    rl_kv *cfg;
    size_t n_cfg;
    long last_step, total_steps; /* the N and M of the last step line */
    double step_avg_ms;          /* of the last step line that logs it (NAN if none) */
    double train_time_ms;        /* of the last step line that logs it (NAN if none) */
    long long model_params;      /* -1 when not logged */
    long long seed;
    int have_seed;
    long long total_bytes;     /* last "Total submission size <label>: N bytes" (else unlabelled), -1 */
    long long code_bytes;      /* "Code size: N bytes", -1 */
    int stopped_early;         /* stopping_early: wallclock_cap */
    int pgolf;                 /* written by pgolf (its config dump is present) */
} runlog;

/* Read and parse a log. 0, or -1 with "<path>:<line>: <problem>" (or "<path>: <problem>") in err. */
int runlog_read(const char *path, runlog *r, char *err, size_t errlen);
/* Parse a log held in memory (len bytes, need not be NUL-terminated); path names it in errors. */
int runlog_parse(const char *path, const char *buf, size_t len, runlog *r, char *err, size_t errlen);
void runlog_free(runlog *r);

/* The run's final score. metric NULL or "auto": the last final_*sliding_window*_exact line, else
 * the last final_*sliding_window* line, else the last final_*_roundtrip_exact, then final_*_roundtrip
 * line, else the last final or quantized* line of any kind; otherwise the last line with exactly
 * that name. NULL if none. */
const rl_final *runlog_final(const runlog *r, const char *metric);
/* The configuration value of key (exact match), or NULL. */
const char *runlog_cfg(const runlog *r, const char *key);
/* A short label for the run: the file name without directory and .txt/.log suffix (malloc'd). */
char *runlog_label(const char *path);

#endif
