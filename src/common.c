/* common.c: implementations of the helpers declared in common.h (errors, allocation, clocks,
 * atomic file writes and the cleanup of interrupted commands, half/bfloat16 conversions). */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

char pg_die_prefix[32];
void (*pg_die_exit)(int code);

void pg_die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    pg_cleanup_run(); /* first: a rank other than 0 may be ended by SIGTERM while it waits below */
    if (pg_die_exit && strncmp(pg_die_prefix, "[rank 0/", 8)) {
        /* a rank other than 0 reports after rank 0 had time to: an error that every rank meets (a
         * bad setting, a diverged loss) is then reported once, by rank 0, whose abort ends the rest */
        signal(SIGTERM, SIG_DFL); /* the launcher ends this rank with SIGTERM once rank 0 aborts */
        struct timespec ts = {3, 0};
        nanosleep(&ts, NULL);
    }
    fputs("pgolf: error: ", stderr);
    fputs(pg_die_prefix, stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (pg_die_exit) pg_die_exit(1);
    exit(1);
}

int pg_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void pg_check_failed(const char *expr, const char *file, int line) {
    fflush(stdout);
    fprintf(stderr, "pgolf: internal error: check failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) pg_die("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) pg_die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) pg_die("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void *xmalloc_aligned(size_t n) {
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, sz ? sz : 64) != 0) pg_die("out of memory allocating %zu bytes", n);
    return p;
}

double pg_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t pg_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss / 1024;
}

int pg_read_file(const char *path, uint8_t **data, size_t *len, char *err, size_t errlen) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return pg_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return pg_err(err, errlen, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = xmalloc(n + 1);
    size_t got = n ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (got != n) {
        free(buf);
        return pg_err(err, errlen, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* ---- what a failed or interrupted command removes (see common.h) ----
 * The registry is a list of 64-slot blocks that is only ever appended to, so that the handler can walk
 * it at any moment: a slot is claimed with a compare-and-swap (CLAIMED while its kind is written) and
 * emptied by storing NULL. */
#define PG_CLEANUP_SLOTS 64
#define CLAIMED ((const char *)1)
typedef struct cleanup_block {
    const char *volatile path[PG_CLEANUP_SLOTS];
    volatile sig_atomic_t kind[PG_CLEANUP_SLOTS];
    struct cleanup_block *volatile next;
} cleanup_block;
static cleanup_block g_cleanup;

/* Remove the files in dir and then dir itself, with system calls only (async-signal-safe). */
static void remove_flat_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        /* deleting while reading can make the kernel skip an entry: read again until a pass removes nothing */
        for (int pass = 0, removed = 1; removed && pass < 8; pass++) {
            removed = 0;
            lseek(fd, 0, SEEK_SET);
            char buf[4096] __attribute__((aligned(8)));
            long n;
            while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0)
                for (long off = 0; off < n;) {
                    /* struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name */
                    unsigned short reclen;
                    memcpy(&reclen, buf + off + 16, sizeof(reclen));
                    const char *name = buf + off + 19;
                    if (strcmp(name, ".") && strcmp(name, "..") && unlinkat(fd, name, 0) == 0) removed = 1;
                    off += reclen;
                }
        }
        close(fd);
    }
    rmdir(dir);
}

void pg_cleanup_run(void) {
    for (int kind = PG_LEAVE_FILE; kind <= PG_LEAVE_EMPTY_DIR; kind++)
        /* empty directories inside one another go in as many rounds as it takes: a round repeats only
         * after an rmdir succeeded, which cannot succeed twice */
        for (int again = 1; again;) {
            again = 0;
            for (cleanup_block *b = &g_cleanup; b; b = b->next)
                for (int i = 0; i < PG_CLEANUP_SLOTS; i++) {
                    const char *p = b->path[i];
                    if (!p || p == CLAIMED || b->kind[i] != kind) continue;
                    if (kind == PG_LEAVE_FILE) unlink(p);
                    else if (kind == PG_LEAVE_SCRATCH_DIR) remove_flat_dir(p);
                    else if (rmdir(p) == 0) again = 1;
                }
        }
}

/* Only the main thread registers, so the handler does its work there: a signal that lands on another
 * thread (a reader, an OpenMP worker) is sent on to the main thread, which may be holding it back. */
static void cleanup_on_signal(int sig) {
    if (syscall(SYS_gettid) != getpid()) {
        syscall(SYS_tgkill, getpid(), getpid(), sig);
        return;
    }
    pg_cleanup_run();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* SIGINT/SIGTERM clean up unless the program handles the signal itself (train finishes its step and
 * writes a checkpoint) or ignores it: only a default action is replaced, checked at every registration. */
static void cleanup_catch_signals(void) {
    const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        struct sigaction cur;
        if (sigaction(sigs[i], NULL, &cur) != 0 || cur.sa_handler != SIG_DFL || (cur.sa_flags & SA_SIGINFO)) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = cleanup_on_signal;
        sa.sa_flags = SA_RESTART; /* a thread that only passes the signal on resumes its system call */
        sigaction(sigs[i], &sa, NULL);
    }
}

void pg_cleanup_add(const char *path, pg_leave_kind kind) {
    cleanup_catch_signals();
    for (cleanup_block *b = &g_cleanup;; b = b->next) {
        for (int i = 0; i < PG_CLEANUP_SLOTS; i++)
            if (!b->path[i] && __sync_bool_compare_and_swap(&b->path[i], NULL, CLAIMED)) {
                b->kind[i] = (sig_atomic_t)kind;
                __sync_synchronize();
                b->path[i] = path;
                return;
            }
        if (!b->next) {
            cleanup_block *nb = xcalloc(1, sizeof(*nb));
            if (!__sync_bool_compare_and_swap(&b->next, NULL, nb)) free(nb);
        }
    }
}

void pg_cleanup_drop(const char *path) {
    for (cleanup_block *b = &g_cleanup; b; b = b->next)
        for (int i = 0; i < PG_CLEANUP_SLOTS; i++)
            if (b->path[i] == path) {
                b->path[i] = NULL;
                return;
            }
}

void pg_signals_hold(sigset_t *old) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, old);
}

void pg_signals_release(const sigset_t *old) {
    int e = errno;
    pthread_sigmask(SIG_SETMASK, old, NULL);
    errno = e;
}

/* Creating and registering happen with SIGINT/SIGTERM held back: a signal in between would leave
 * the directory, and registering its name first could remove a stranger's directory of that name. */
int pg_scratch_mkdir(char *path, int unique) {
    sigset_t old;
    pg_signals_hold(&old);
    char *made = unique ? mkdtemp(path) : (mkdir(path, 0755) == 0 ? path : NULL);
    if (made) pg_cleanup_add(path, PG_LEAVE_SCRATCH_DIR);
    pg_signals_release(&old);
    return made ? 0 : -1;
}

void pg_scratch_remove(const char *dir) {
    pg_cleanup_drop(dir);
    remove_flat_dir(dir);
}

/* A temporary "<base>.tmp.<pid>" that a process left when it was killed outright (kill -9, out of
 * memory): returns the length of <base> when name is one and that process no longer runs, else 0. */
size_t pg_dead_temporary(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || t == name) return 0;
    for (const char *n; (n = strstr(t + 1, ".tmp."));) t = n; /* the last one */
    const char *d = t + 5;
    if (!*d || strlen(d) > 9 || strspn(d, "0123456789") != strlen(d)) return 0;
    long pid = strtol(d, NULL, 10);
    if (pid <= 0 || pid == (long)getpid()) return 0;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return 0; /* alive (or not ours to judge) */
    return (size_t)(t - name);
}

void pg_remove_dead_temporary(const char *dir, const char *name) {
    char *p = xmalloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    if (unlink(p) == 0)
        fprintf(stderr, "pgolf: removed %s, left by process %s, which no longer runs\n", p, strrchr(name, '.') + 1);
    free(p);
}

/* Remove the dead processes' temporaries of path, with a note: they can be as large as a checkpoint. */
static void remove_dead_temporaries(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t bl = strlen(base);
    char *dir = slash ? xstrdup(path) : xstrdup(".");
    if (slash) dir[slash - path + (slash == path)] = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, base, bl) && pg_dead_temporary(e->d_name) == bl) pg_remove_dead_temporary(dir, e->d_name);
    if (d) closedir(d);
    free(dir);
}

int pg_atomic_open(pg_atomic_file *af, const char *path, char *err, size_t errlen) {
    memset(af, 0, sizeof(*af));
    size_t n = strlen(path) + 32;
    af->path = xstrdup(path);
    af->tmp = xmalloc(n);
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    remove_dead_temporaries(path);
    pg_cleanup_add(af->tmp, PG_LEAVE_FILE); /* before the file exists: a signal in between must still remove it */
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        pg_cleanup_drop(af->tmp);
        free(af->path);
        free(af->tmp);
        memset(af, 0, sizeof(*af));
        return pg_err(err, errlen, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int pg_atomic_commit(pg_atomic_file *af, char *err, size_t errlen) {
    int bad = 0, e = 0;
    if (fflush(af->f) != 0) bad = 1, e = errno;
    if (!bad && fsync(fileno(af->f)) != 0) bad = 1, e = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, e = errno;
    af->f = NULL;
    if (!bad) {
        pg_cleanup_drop(af->tmp); /* a signal now leaves either the old file or the complete new one */
        if (rename(af->tmp, af->path) != 0) bad = 1, e = errno;
    }
    int rc = 0;
    if (bad) {
        unlink(af->tmp);
        pg_cleanup_drop(af->tmp);
        rc = pg_err(err, errlen, "%s: write failed: %s", af->path, strerror(e));
    }
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof(*af));
    return rc;
}

void pg_atomic_abort(pg_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp), pg_cleanup_drop(af->tmp);
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof(*af));
}

int pg_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    pg_atomic_file af;
    if (pg_atomic_open(&af, path, err, errlen) != 0) return -1;
    if (len && fwrite(data, 1, len, af.f) != len) {
        int e = errno;
        pg_atomic_abort(&af);
        return pg_err(err, errlen, "%s: write failed: %s", path, strerror(e));
    }
    return pg_atomic_commit(&af, err, errlen);
}

/* Each directory a registering call creates is made and registered with the signals held back (as a
 * scratch directory is), so that only directories this process made are ever removed. */
static int mkdirs(const char *path, pg_made_dirs *made, char *err, size_t errlen) {
    char *p = xstrdup(path);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            sigset_t old;
            if (made) pg_signals_hold(&old);
            int rc = mkdir(p, 0777);
            if (rc == 0 && made) {
                made->dirs = xrealloc(made->dirs, (size_t)(made->n + 1) * sizeof(char *));
                made->dirs[made->n] = xstrdup(p);
                pg_cleanup_add(made->dirs[made->n++], PG_LEAVE_EMPTY_DIR);
            }
            if (made) pg_signals_release(&old);
            if (rc != 0 && errno != EEXIST) {
                int e = errno;
                rc = pg_err(err, errlen, "%s: cannot create directory: %s", p, strerror(e));
                free(p);
                return rc;
            }
            p[i] = c;
        }
    }
    struct stat st;
    int ok = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    free(p);
    if (!ok) return pg_err(err, errlen, "%s: not a directory", path);
    return 0;
}

int pg_mkdirs(const char *path, char *err, size_t errlen) { return mkdirs(path, NULL, err, errlen); }

int pg_mkdirs_undoable(const char *path, pg_made_dirs *made, char *err, size_t errlen) {
    memset(made, 0, sizeof(*made));
    if (mkdirs(path, made, err, errlen) == 0) return 0;
    pg_made_dirs_end(made, 0);
    return -1;
}

void pg_made_dirs_end(pg_made_dirs *made, int keep) {
    for (int i = made->n - 1; i >= 0; i--) {
        pg_cleanup_drop(made->dirs[i]);
        if (!keep) rmdir(made->dirs[i]); /* only if empty */
        free(made->dirs[i]);
    }
    free(made->dirs);
    memset(made, 0, sizeof(*made));
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t pg_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (uint16_t)(u >> 16);
}

float pg_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t pg_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (absx >= 0x477ff000u) {
        /* >= 65520 rounds to inf (65504 is max; halfway 65520 rounds to even = inf) */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absx < 0x38800000u) {
        /* subnormal half (or zero): value = m * 2^-24 */
        float a = bits_f32(absx);
        /* scale so that the half subnormal ulp is 1.0 and use round-to-nearest-even via rint */
        float scaled = a * 16777216.0f; /* 2^24 */
        /* exact in float for a < 2^-14: scaled < 1024 */
        uint32_t m = (uint32_t)__builtin_rintf(scaled);
        return (uint16_t)(sign | m);
    }
    /* normal: rebias exponent from 127 to 15 and round mantissa 23 -> 10 bits (nearest even) */
    uint32_t mant = absx & 0x7fffffu;
    uint32_t exp = (absx >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float pg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}
