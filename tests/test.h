/* test.h: the minimal test harness of pgolf's C tests. A test is `TEST(name) { ... }` in any
 * tests/test_*.c file; it registers itself at start-up. Each test prints exactly one result line:
 *   ok <name>
 *   FAIL <name>: <why>
 *   SKIP <name> (skipped: <reason>)
 * tests/run.sh counts these lines and ends with `N passed, N failed`. Assertions return from the
 * test on the first failure. */
#ifndef PGOLF_TEST_H
#define PGOLF_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int failed;
    int skipped;
    char msg[1024];
} t_state;

typedef void (*t_fn)(t_state *);
void t_register(const char *name, t_fn fn);

#define TEST(name)                                                                                 \
    static void test_##name(t_state *t__);                                                         \
    __attribute__((constructor)) static void reg_##name(void) { t_register(#name, test_##name); }  \
    static void test_##name(t_state *t__)

#define T_FAIL(...)                                                                                \
    do {                                                                                           \
        t__->failed = 1;                                                                           \
        snprintf(t__->msg, sizeof(t__->msg), __VA_ARGS__);                                         \
        return;                                                                                    \
    } while (0)

#define T_ASSERT(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char m__[768];                                                                         \
            snprintf(m__, sizeof(m__), __VA_ARGS__);                                               \
            T_FAIL("%s:%d: %s (%s)", __FILE__, __LINE__, m__, #cond);                              \
        }                                                                                          \
    } while (0)

#define T_SKIP(...)                                                                                \
    do {                                                                                           \
        t__->skipped = 1;                                                                          \
        snprintf(t__->msg, sizeof(t__->msg), __VA_ARGS__);                                         \
        return;                                                                                    \
    } while (0)

/* |a-b| <= atol + rtol*|b| */
#define T_CLOSE(a, b, rtol, atol, what)                                                            \
    do {                                                                                           \
        double a__ = (double)(a), b__ = (double)(b);                                               \
        if (!(fabs(a__ - b__) <= (atol) + (rtol) * fabs(b__)))                                     \
            T_FAIL("%s:%d: %s: %.9g vs %.9g (diff %.3g)", __FILE__, __LINE__, what, a__, b__,      \
                   fabs(a__ - b__));                                                               \
    } while (0)

/* Path of a file under ../shared (or $PGOLF_SHARED); NULL if it does not exist. */
const char *t_shared(const char *rel);
/* Skip the test unless ../shared/data exists. */
#define T_NEED_SHARED(rel, var)                                                                    \
    const char *var = t_shared(rel);                                                               \
    if (!var) T_SKIP("../shared/data absent")

/* A fresh temporary directory for this test (removed by the runner's cleanup). */
const char *t_tmpdir(void);
/* 1 if /usr/bin/python3 can import torch. */
int t_have_torch(void);
#define T_NEED_TORCH()                                                                             \
    if (!t_have_torch()) T_SKIP("python3-torch absent")
/* Run a shell command; returns its exit status (or -1). Output goes to the test log. */
int t_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Max relative error max|a-b| / max(max|b|, tiny) over n floats. */
double t_max_rel(const float *a, const float *b, long n);

#endif
