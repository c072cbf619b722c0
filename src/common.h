/* common.h: error reporting, checked allocation, timing and file helpers shared by every pgolf
 * module. Two error styles coexist on purpose: readers of untrusted input (shards, tokenizer models,
 * artifacts, safetensors) return -1 and fill an error buffer so they can be fuzzed and tested
 * without exiting; command-level code calls pg_die(), which prints one `pgolf: error: ...` line and
 * exits with status 1. */
#ifndef PGOLF_COMMON_H
#define PGOLF_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>

#define PG_ERRLEN 512

/* Print "pgolf: error: <msg>" to stderr and exit(1). */
void pg_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Set by dist.c while several processes run: a prefix for pg_die's line ("[rank 1/2] ") and the
 * exit it takes instead of exit(1) (MPI_Abort, which ends every rank). Ranks other than 0 wait 3 s
 * before reporting, so that an error met by every rank is reported once (by rank 0). */
extern char pg_die_prefix[32];
extern void (*pg_die_exit)(int code);
/* Format into err (if non-NULL) and return -1, so readers can write `return pg_err(err, n, ...)`. */
int pg_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Abort with file:line when an internal invariant fails (a bug, never bad user input). */
#define PG_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) pg_check_failed(#cond, __FILE__, __LINE__);                                  \
    } while (0)
void pg_check_failed(const char *expr, const char *file, int line) __attribute__((noreturn));

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* 64-byte aligned allocation (free with free()). */
void *xmalloc_aligned(size_t n);

/* Monotonic wall clock in seconds. */
double pg_now(void);
/* This process's peak resident memory in MiB. */
size_t pg_peak_rss_mib(void);

/* Read a whole file. Returns 0 or -1 with "<path>: <reason>" in err. */
int pg_read_file(const char *path, uint8_t **data, size_t *len, char *err, size_t errlen);
/* Write a file atomically: a temporary file beside it, fsync, rename. On failure nothing is left
 * at path and the temporary is removed. */
int pg_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* Atomic writer for streamed output: open returns a FILE* on "<path>.tmp.<pid>"; commit fsyncs and
 * renames; abort removes the temporary. The temporary is registered for cleanup (below) while it exists. */
typedef struct {
    FILE *f;
    char *path;
    char *tmp;
} pg_atomic_file;
int pg_atomic_open(pg_atomic_file *af, const char *path, char *err, size_t errlen);
/* A temporary "<base>.tmp.<pid>" whose process no longer runs (killed by kill -9 or for memory) is
 * left behind; pg_atomic_open removes those of its path, with a note on stderr. This returns the
 * length of <base> when name is such a temporary, else 0. */
size_t pg_dead_temporary(const char *name);
void pg_remove_dead_temporary(const char *dir, const char *name); /* unlink dir/name, with the note */
int pg_atomic_commit(pg_atomic_file *af, char *err, size_t errlen);
void pg_atomic_abort(pg_atomic_file *af);

/* What a failed or interrupted command must not leave behind. pg_die, and SIGINT/SIGTERM wherever the
 * program has left their default action, remove every path registered here: files first, then
 * scratch directories with the files in them (flat), then directories if they are empty. A path is
 * registered before its file is created and dropped before it is renamed into place; the pointer is
 * the key and must stay valid while registered. Files are created on the main thread, where the
 * handler does its work (a signal that lands on another thread is sent on to it). */
typedef enum { PG_LEAVE_FILE, PG_LEAVE_SCRATCH_DIR, PG_LEAVE_EMPTY_DIR } pg_leave_kind;
void pg_cleanup_add(const char *path, pg_leave_kind kind);
void pg_cleanup_drop(const char *path);
void pg_cleanup_run(void); /* remove everything registered, now (async-signal-safe) */
/* Create and register a scratch directory: mkdtemp(path) when unique (path ends in XXXXXX and gets the
 * name), else mkdir(path). Returns 0, or -1 with errno. pg_scratch_remove drops it and removes it with
 * its files. */
int pg_scratch_mkdir(char *path, int unique);
void pg_scratch_remove(const char *dir);
/* Hold SIGINT/SIGTERM back on this thread (for a step that must complete once begun) and release them
 * (errno is kept); one that arrived in between then takes effect. */
void pg_signals_hold(sigset_t *old);
void pg_signals_release(const sigset_t *old);

/* Create a directory and its parents (like mkdir -p). Returns 0 or -1 with err. */
int pg_mkdirs(const char *path, char *err, size_t errlen);
/* pg_mkdirs that registers each directory it creates for cleanup (PG_LEAVE_EMPTY_DIR), so that a
 * failed or interrupted command leaves none of them behind. pg_made_dirs_end drops them and, unless
 * keep, removes those that are empty. On failure nothing is left registered or created. */
typedef struct {
    char **dirs; /* outermost first */
    int n;
} pg_made_dirs;
int pg_mkdirs_undoable(const char *path, pg_made_dirs *made, char *err, size_t errlen);
void pg_made_dirs_end(pg_made_dirs *made, int keep);

/* Little-endian loads/stores (explicit, independent of host order). */
static inline uint32_t pg_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t pg_rd_u64(const uint8_t *p) {
    return (uint64_t)pg_rd_u32(p) | ((uint64_t)pg_rd_u32(p + 4) << 32);
}
static inline void pg_wr_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void pg_wr_u64(uint8_t *p, uint64_t v) {
    pg_wr_u32(p, (uint32_t)v);
    pg_wr_u32(p + 4, (uint32_t)(v >> 32));
}

/* IEEE half and bfloat16 conversions (round to nearest even, NaN preserved). */
uint16_t pg_f32_to_f16(float f);
float pg_f16_to_f32(uint16_t h);
uint16_t pg_f32_to_bf16(float f);
float pg_bf16_to_f32(uint16_t h);
/* Round an fp32 value to the nearest bf16-representable fp32 value (the `.bfloat16().float()` of
 * PyTorch). */
static inline float pg_round_bf16(float f) { return pg_bf16_to_f32(pg_f32_to_bf16(f)); }

#endif
