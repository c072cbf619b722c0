/* test_common.c: tests of common.c (half/bfloat16 conversions, atomic writes), json.c and the
 * safetensors reader/writer. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
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
