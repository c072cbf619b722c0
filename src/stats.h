/* stats.h: the small statistics `pgolf submit` reports for a set of seeds: mean, sample standard
 * deviation, Welch's unequal-variance t-test against the previous record's per-seed scores, and the
 * Student-t distribution function it needs (through the regularized incomplete beta function). */
#ifndef PGOLF_STATS_H
#define PGOLF_STATS_H

#include <stddef.h>

/* Arithmetic mean (NAN for n == 0). */
double stats_mean(const double *x, size_t n);
/* Sample standard deviation, divisor n - 1 (NAN for n < 2). */
double stats_std(const double *x, size_t n);

/* Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1 (NAN outside). */
double stats_betainc(double a, double b, double x);
/* P(T <= t) for Student's t with df > 0 degrees of freedom (df need not be an integer). */
double stats_t_cdf(double t, double df);

typedef struct {
    double mean_a, mean_b, var_a, var_b; /* sample means and variances (divisor n - 1) */
    double diff;                          /* mean_a - mean_b */
    double se;                            /* sqrt(var_a/na + var_b/nb) */
    double t;                             /* (diff - shift) / se */
    double df;                            /* Welch-Satterthwaite degrees of freedom */
    double p_less;                        /* one-sided P(T <= t): small when mean_a < mean_b - shift */
} welch_result;

/* Welch's t-test of H0: mean_a - mean_b >= -shift against H1: mean_a - mean_b < -shift (shift 0:
 * "a is lower than b"; shift d > 0: "a is lower than b by more than d"). Needs na, nb >= 2 and a
 * positive standard error; returns 0, or -1 (result undefined) when those fail. */
int stats_welch(const double *a, size_t na, const double *b, size_t nb, double shift, welch_result *r);

#endif
