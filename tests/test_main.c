/* test_main.c: registry and driver of the C tests (see test.h). `pgolf_tests [substring...]` runs
 * the tests whose names contain one of the substrings (all when none is given). */
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#define MAX_TESTS 1024
static struct {
    const char *name;
    t_fn fn;
} tests[MAX_TESTS];
static int n_tests;
static char tmpdir_buf[512];

void t_register(const char *name, t_fn fn) {
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

const char *t_shared(const char *rel) {
    static char buf[8][1024];
    static int slot;
    const char *root = getenv("PGOLF_SHARED");
    if (!root || !*root) root = "../shared";
    char *b = buf[slot++ % 8];
    snprintf(b, 1024, "%s/%s", root, rel);
    struct stat st;
    return stat(b, &st) == 0 ? b : NULL;
}

const char *t_tmpdir(void) {
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir_buf);
    if (tmpdir_buf[0] && system(cmd) != 0) { /* best effort */ }
    snprintf(tmpdir_buf, sizeof(tmpdir_buf), "%s/pgolf_test_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir_buf)) {
        perror("mkdtemp");
        exit(2);
    }
    return tmpdir_buf;
}

int t_have_torch(void) {
    static int cached = -1;
    if (cached < 0) cached = system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
    return cached;
}

int t_system(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    fflush(stdout);
    int rc = system(cmd);
    if (rc == -1) return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

double t_max_rel(const float *a, const float *b, long n) {
    double md = 0, mb = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d; /* NaN propagates */
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n_tests; i++) {
        int want = argc <= 1;
        for (int a = 1; a < argc && !want; a++) want = strstr(tests[i].name, argv[a]) != NULL;
        if (!want) continue;
        t_state st = {0};
        tests[i].fn(&st);
        if (tmpdir_buf[0]) {
            char cmd[600];
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir_buf);
            if (system(cmd) != 0) { /* best effort */ }
            tmpdir_buf[0] = 0;
        }
        if (st.failed) {
            printf("FAIL %s: %s\n", tests[i].name, st.msg);
            failed++;
        } else if (st.skipped) {
            printf("SKIP %s (skipped: %s)\n", tests[i].name, st.msg);
            skipped++;
        } else {
            printf("ok %s\n", tests[i].name);
            passed++;
        }
        fflush(stdout);
    }
    fprintf(stderr, "c tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
