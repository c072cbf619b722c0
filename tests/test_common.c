/* test_common.c: tests of common.c (half/bfloat16 conversions, atomic writes), json.c and the
 * safetensors reader/writer. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/common.h"
#include "../src/json.h"
#include "../src/statedict.h"
#include "test.h"

TEST(common_bf16_rounding) {
    /* 1 + 2^-8 is halfway between 1 and 1+2^-7: ties to even -> 1.0 */
    T_ASSERT(pg_round_bf16(1.0f + 1.0f / 256) == 1.0f, "tie to even");
    T_ASSERT(pg_round_bf16(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256, "tie to even up");
    T_ASSERT(pg_round_bf16(0.005f) == 0.00500488281250f, "0.005 -> %.12g", pg_round_bf16(0.005f));
    T_ASSERT(pg_round_bf16(0.05f) == 0.050048828125f, "0.05 -> %.12g (spec: 0.050048828125)", pg_round_bf16(0.05f));
    T_ASSERT(isnan(pg_round_bf16(NAN)), "nan");
}

TEST(common_f16_roundtrip) {
    /* every half value survives f16 -> f32 -> f16 */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        float f = pg_f16_to_f32((uint16_t)h);
        T_ASSERT(pg_f32_to_f16(f) == h, "half 0x%04x -> %g -> 0x%04x", h, f, pg_f32_to_f16(f));
    }
    T_ASSERT(pg_f32_to_f16(65520.0f) == 0x7c00, "65520 overflows to inf");
    T_ASSERT(pg_f32_to_f16(65519.0f) == 0x7bff, "65519 -> max");
    T_ASSERT(pg_f16_to_f32(pg_f32_to_f16(1.0f / 127)) == 0.007873535156250f, "1/127 in fp16");
}

TEST(json_parse_and_errors) {
    char err[256];
    const char *s = "{\"a\": [1, -2.5e3, \"x\\u00e9\\ud83d\\ude00\"], \"b\": {\"c\": true, \"d\": null}}";
    json_value *v = json_parse(s, strlen(s), "t", err, sizeof(err));
    T_ASSERT(v, "parse: %s", err);
    const json_value *a = json_get(v, "a");
    T_ASSERT(a && a->type == JSON_ARRAY && a->n == 3, "array");
    T_ASSERT(a->items[0].is_integer && a->items[0].integer == 1, "int");
    T_ASSERT(a->items[1].number == -2500.0, "float");
    T_ASSERT(!strcmp(a->items[2].str, "x\xc3\xa9\xf0\x9f\x98\x80"), "unicode escapes");
    json_free(v);
    const char *bad[] = {"{", "[1,]", "{\"a\" 1}", "\"\\ud800\"", "\"a\x01\"", "01", "[1] x", "\"\xff\""};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        v = json_parse(bad[k], strlen(bad[k]), "t", err, sizeof(err));
        T_ASSERT(!v, "accepted bad json %s", bad[k]);
        T_ASSERT(strstr(err, "t: invalid JSON"), "message: %s", err);
    }
}

TEST(safetensors_roundtrip_and_corruption) {
    const char *dir = t_tmpdir();
    char path[600], err[512];
    snprintf(path, sizeof(path), "%s/a.safetensors", dir);
    statedict sd, rd;
    sd_init(&sd);
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t sh[2] = {2, 3};
    sd_add_f32(&sd, "blocks.0.w", 2, sh, w);
    int8_t q[3] = {-1, 0, 127};
    int64_t sh1[1] = {3};
    sd_add(&sd, "q", DT_I8, 1, sh1, q);
    sd_add(&sd, "scalar", DT_F32, 0, NULL, w);
    const char *meta[2] = {"format", "pt"};
    T_ASSERT(safetensors_write(path, &sd, meta, 1, err, sizeof(err)) == 0, "write: %s", err);
    T_ASSERT(safetensors_read(path, &rd, err, sizeof(err)) == 0, "read: %s", err);
    T_ASSERT(rd.n == 3, "count");
    sd_tensor *t = sd_find(&rd, "blocks.0.w");
    T_ASSERT(t && t->ndim == 2 && t->shape[1] == 3 && !memcmp(t->data, w, sizeof(w)), "tensor");
    t = sd_find(&rd, "scalar");
    T_ASSERT(t && t->ndim == 0 && ((float *)t->data)[0] == 1, "scalar");
    sd_free(&rd);
    /* every truncation of the file is rejected cleanly */
    uint8_t *buf;
    size_t len;
    T_ASSERT(pg_read_file(path, &buf, &len, err, sizeof(err)) == 0, "%s", err);
    for (size_t cut = 0; cut < len; cut++) {
        int rc = safetensors_parse(buf, cut, "cut", &rd, err, sizeof(err));
        T_ASSERT(rc != 0, "truncated file of %zu bytes accepted", cut);
    }
    free(buf);
    sd_free(&sd);
}

TEST(atomic_write_leaves_no_partial_file) {
    char err[512], path[600];
    snprintf(path, sizeof(path), "%s/no/such/dir/x.bin", t_tmpdir());
    T_ASSERT(pg_write_file_atomic(path, "abc", 3, err, sizeof(err)) != 0, "write into missing dir");
    T_ASSERT(strstr(err, "cannot write"), "message: %s", err);
    struct stat st;
    T_ASSERT(stat(path, &st) != 0, "file exists");
}

/* A child process starts an atomic write of dir/out.bin and is then interrupted: by a signal before
 * or after the commit, or by pg_die. Returns the child's wait status; *names gets the files left. */
enum { MID_SIGTERM, MID_SIGINT, MID_DIE, AFTER_COMMIT_SIGTERM, OWN_HANDLER_SIGTERM };
static volatile sig_atomic_t g_seen;
static void seen_signal(int sig) { g_seen = sig; }

static int interrupted_write(int how, const char *dir, char *names, size_t len) {
    char path[700];
    snprintf(path, sizeof(path), "%s/out.bin", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(98);
        signal(SIGINT, SIG_DFL); /* whatever the test process had, the child starts from the defaults */
        signal(SIGTERM, SIG_DFL);
        if (how == OWN_HANDLER_SIGTERM) signal(SIGTERM, seen_signal);
        pg_atomic_file af;
        char err[512];
        if (pg_atomic_open(&af, path, err, sizeof(err)) != 0) _exit(97);
        if (fwrite("partial", 1, 7, af.f) != 7 || fflush(af.f) != 0) _exit(96);
        if (how == MID_SIGTERM || how == OWN_HANDLER_SIGTERM) raise(SIGTERM);
        if (how == MID_SIGINT) raise(SIGINT);
        if (how == MID_DIE) pg_die("%s: something failed", path);
        if (pg_atomic_commit(&af, err, sizeof(err)) != 0) _exit(95);
        if (how == AFTER_COMMIT_SIGTERM) raise(SIGTERM);
        _exit(how == OWN_HANDLER_SIGTERM && g_seen == SIGTERM ? 0 : 94);
    }
    int st = -1;
    if (pid > 0) waitpid(pid, &st, 0);
    names[0] = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') snprintf(names + strlen(names), len - strlen(names), "%s ", e->d_name);
    if (d) closedir(d);
    return st;
}

TEST(atomic_write_interrupted_leaves_no_temporary) {
    static const struct {
        int how;
        const char *what;
        int sig;   /* the child ends by this signal, or 0: exits with code */
        int code;
        int file;  /* out.bin complete afterwards */
    } cases[] = {
        {MID_SIGTERM, "SIGTERM during the write", SIGTERM, 0, 0},
        {MID_SIGINT, "SIGINT during the write", SIGINT, 0, 0},
        {MID_DIE, "pg_die during the write", 0, 1, 0},
        {AFTER_COMMIT_SIGTERM, "SIGTERM after the commit", SIGTERM, 0, 1},
        {OWN_HANDLER_SIGTERM, "SIGTERM the program handles itself", 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dir[600], names[1024];
        snprintf(dir, sizeof(dir), "%s/interrupted%zu", t_tmpdir(), i);
        T_ASSERT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
        int st = interrupted_write(cases[i].how, dir, names, sizeof(names));
        if (cases[i].sig)
            T_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == cases[i].sig, "%s: wait status %d", cases[i].what, st);
        else
            T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == cases[i].code, "%s: wait status %d", cases[i].what, st);
        const char *want = cases[i].file ? "out.bin " : "";
        T_ASSERT(!strcmp(names, want), "%s: left '%s', expected '%s'", cases[i].what, names, want);
        if (cases[i].file) {
            char path[700];
            snprintf(path, sizeof(path), "%s/out.bin", dir);
            struct stat sb;
            T_ASSERT(stat(path, &sb) == 0 && sb.st_size == 7, "%s: out.bin is not the complete file", cases[i].what);
        }
    }
}

/* A temporary of a process killed outright (its pid no longer runs) is removed by the next atomic
 * write of the same path; a live process's, another path's and names that only look alike stay. */
TEST(atomic_write_removes_dead_processes_temporaries) {
    char dir[300], p[1024];
    snprintf(dir, sizeof(dir), "%s/dead_tmp", t_tmpdir());
    T_ASSERT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    T_ASSERT(dead > 0 && waitpid(dead, NULL, 0) == dead, "fork");
    char names[8][80];
    snprintf(names[0], 80, "out.bin.tmp.%ld", (long)dead);         /* removed */
    snprintf(names[1], 80, "out.bin.tmp.%ld", (long)getppid());    /* alive */
    snprintf(names[2], 80, "out.bin.tmp.12ab");                    /* not a pid */
    snprintf(names[3], 80, "other.bin.tmp.%ld", (long)dead);       /* another path */
    snprintf(names[4], 80, "out.bin.tmp.tmp.%ld", (long)dead);     /* of "out.bin.tmp" */
    snprintf(names[5], 80, "xout.bin.tmp.%ld", (long)dead);        /* of "xout.bin" */
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        T_ASSERT(f && fclose(f) == 0, "create %s", names[i]);
    }
    T_ASSERT(pg_dead_temporary(names[0]) == 7 && pg_dead_temporary(names[1]) == 0 && pg_dead_temporary(names[2]) == 0 &&
                 pg_dead_temporary(names[4]) == 11 && pg_dead_temporary("out.bin") == 0 &&
                 pg_dead_temporary(".tmp.1") == 0,
             "pg_dead_temporary");
    char err[512];
    snprintf(p, sizeof(p), "%s/out.bin", dir);
    fflush(stderr);
    int saved = dup(2), nul = open("/dev/null", O_WRONLY);
    dup2(nul, 2); /* the note */
    int rc = pg_write_file_atomic(p, "abc", 3, err, sizeof(err));
    fflush(stderr);
    dup2(saved, 2);
    close(saved), close(nul);
    T_ASSERT(rc == 0, "%s", err);
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        struct stat sb;
        T_ASSERT((stat(p, &sb) == 0) == (i != 0), "%s: %s", names[i], i ? "removed" : "kept");
    }
}

/* What pg_die and SIGTERM clean up beyond atomic writes: a scratch directory with its files (more
 * than one getdents buffer of long names), registered files beyond the first block of slots, and
 * registered directories that are empty (also when the outer one was registered first). A registered
 * directory that is not empty, and whatever was dropped, stay. The child's work: */
enum { LEAVE_SIGTERM, LEAVE_DIE, LEAVE_REMOVED_THEN_SIGTERM, LEAVE_SIGNAL_ON_THREAD };
static void *term_this_thread(void *arg) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &stop, NULL); /* the mask came from the main thread */
    pthread_kill(pthread_self(), SIGTERM); /* the handler sends it on to the main thread, which holds it back */
    *(int *)arg = 1;                       /* so this thread goes on */
    return NULL;
}

static void leave_nothing_child(int how, const char *dir) {
    static char scratch[700], e1[700], e2[700], keep[700], files[100][760], late[700];
    char p[900];
    snprintf(scratch, sizeof(scratch), "%s/scratch.XXXXXX", dir);
    if (pg_scratch_mkdir(scratch, 1) != 0) _exit(90);
    for (int i = 0; i < 300; i++) {
        snprintf(p, sizeof(p), "%s/file_with_a_rather_long_name_so_that_the_entries_fill_buffers_%03d", scratch, i);
        FILE *f = fopen(p, "w");
        if (!f || fputs("x", f) < 0 || fclose(f) != 0) _exit(91);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(files[i], sizeof(files[i]), "%s/tmp%03d", dir, i);
        pg_cleanup_add(files[i], PG_LEAVE_FILE);
        FILE *f = fopen(files[i], "w");
        if (!f || fclose(f) != 0) _exit(92);
    }
    snprintf(e1, sizeof(e1), "%s/e1", dir);
    snprintf(e2, sizeof(e2), "%s/e1/e2", dir);
    snprintf(keep, sizeof(keep), "%s/keep", dir);
    pg_cleanup_add(e1, PG_LEAVE_EMPTY_DIR);
    pg_cleanup_add(e2, PG_LEAVE_EMPTY_DIR);
    pg_cleanup_add(keep, PG_LEAVE_EMPTY_DIR);
    snprintf(p, sizeof(p), "%s/keep/x", dir);
    FILE *f;
    if (mkdir(e1, 0755) || mkdir(e2, 0755) || mkdir(keep, 0755) || !(f = fopen(p, "w")) || fclose(f)) _exit(93);
    pg_cleanup_drop(files[7]); /* tmp007 stays */
    if (how == LEAVE_SIGTERM) raise(SIGTERM);
    if (how == LEAVE_DIE) pg_die("something failed");
    if (how == LEAVE_REMOVED_THEN_SIGTERM) {
        /* removed and dropped: a directory made again under that name is not the command's to remove */
        pg_scratch_remove(scratch);
        if (mkdir(scratch, 0755) != 0) _exit(94);
        raise(SIGTERM);
    }
    if (how == LEAVE_SIGNAL_ON_THREAD) {
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
        int survived = 0;
        pthread_t th;
        if (pthread_create(&th, NULL, term_this_thread, &survived) != 0 || pthread_join(th, NULL) != 0) _exit(95);
        /* a file made after the signal arrived is still removed: the main thread does the work */
        snprintf(late, sizeof(late), "%s/late", dir);
        pg_cleanup_add(late, PG_LEAVE_FILE);
        if (!survived || !(f = fopen(late, "w")) || fclose(f)) _exit(96);
        snprintf(p, sizeof(p), "%s/survived", dir);
        if (!(f = fopen(p, "w")) || fclose(f)) _exit(97);
        pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
    }
    _exit(98);
}

TEST(cleanup_removes_scratch_dirs_files_and_empty_dirs) {
    static const struct {
        int how;
        const char *what;
        int sig, code;
        const char *left; /* the names left in dir, sorted ("scratch*" for a scratch directory) */
    } cases[] = {
        {LEAVE_SIGTERM, "SIGTERM", SIGTERM, 0, "keep tmp007"},
        {LEAVE_DIE, "pg_die", 0, 1, "keep tmp007"},
        {LEAVE_REMOVED_THEN_SIGTERM, "SIGTERM after pg_scratch_remove", SIGTERM, 0, "keep scratch* tmp007"},
        {LEAVE_SIGNAL_ON_THREAD, "SIGTERM on another thread", SIGTERM, 0, "keep survived tmp007"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/leave%zu", t_tmpdir(), i);
        T_ASSERT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stderr)) _exit(99);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            leave_nothing_child(cases[i].how, dir);
        }
        int st = -1;
        T_ASSERT(pid > 0 && waitpid(pid, &st, 0) == pid, "fork");
        if (cases[i].sig)
            T_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == cases[i].sig, "%s: wait status %d", cases[i].what, st);
        else
            T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == cases[i].code, "%s: wait status %d", cases[i].what, st);
        struct dirent **ents;
        int n = scandir(dir, &ents, NULL, alphasort);
        T_ASSERT(n >= 0, "scandir %s", dir);
        char names[512] = "";
        for (int k = 0; k < n; k++) {
            const char *nm = ents[k]->d_name;
            if (nm[0] != '.')
                snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", names[0] ? " " : "",
                         strncmp(nm, "scratch.", 8) ? nm : "scratch*");
            free(ents[k]);
        }
        free(ents);
        T_ASSERT(!strcmp(names, cases[i].left), "%s: left '%s', expected '%s'", cases[i].what, names, cases[i].left);
    }
}
