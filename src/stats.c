/* stats.c: mean, sample standard deviation, Student-t CDF and Welch's t-test (see stats.h). The
 * incomplete beta function is evaluated by its continued fraction (modified Lentz iteration), on
 * the side of the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) where the fraction converges fast. */
#include "stats.h"

#include <math.h>

double stats_mean(const double *x, size_t n) {
    if (n == 0) return NAN;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

double stats_std(const double *x, size_t n) {
    if (n < 2) return NAN;
    double m = stats_mean(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (double)(n - 1));
}

/* 1 + d1/(1 + d2/(1 + ...)) with d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)) and
 * d_{2m} = m(b-m)x / ((a+2m-1)(a+2m)): converges quickly for x < (a+1)/(a+b+2). */
static double beta_cf(double a, double b, double x) {
    const double tiny = 1e-300, eps = 1e-16;
    double f = 1.0, c = 1.0, d = 0.0;
    for (int j = 1; j <= 2000; j++) {
        int m = j / 2;
        double dj = (j & 1) ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                            : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
        d = 1.0 + dj * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + dj / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double delta = c * d;
        f *= delta;
        if (fabs(delta - 1.0) < eps) break;
    }
    return f;
}

double stats_betainc(double a, double b, double x) {
    if (!(a > 0) || !(b > 0) || !(x >= 0) || !(x <= 1)) return NAN;
    if (x == 0) return 0;
    if (x == 1) return 1;
    double lfront = a * log(x) + b * log1p(-x) - (lgamma(a) + lgamma(b) - lgamma(a + b));
    if (x < (a + 1) / (a + b + 2)) return exp(lfront) / (a * beta_cf(a, b, x));
    return 1.0 - exp(lfront) / (b * beta_cf(b, a, 1.0 - x));
}

double stats_t_cdf(double t, double df) {
    if (isnan(t) || !(df > 0)) return NAN;
    if (isinf(t)) return t > 0 ? 1.0 : 0.0;
    /* P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2) */
    double tail = 0.5 * stats_betainc(df / 2, 0.5, df / (df + t * t));
    return t > 0 ? 1.0 - tail : tail;
}

int stats_welch(const double *a, size_t na, const double *b, size_t nb, double shift, welch_result *r) {
    if (na < 2 || nb < 2) return -1;
    r->mean_a = stats_mean(a, na);
    r->mean_b = stats_mean(b, nb);
    double sa = stats_std(a, na), sb = stats_std(b, nb);
    r->var_a = sa * sa;
    r->var_b = sb * sb;
    double qa = r->var_a / (double)na, qb = r->var_b / (double)nb;
    r->diff = r->mean_a - r->mean_b;
    r->se = sqrt(qa + qb);
    if (!(r->se > 0) || !isfinite(r->se)) return -1;
    r->t = (r->diff + shift) / r->se;
    r->df = (qa + qb) * (qa + qb) / (qa * qa / (double)(na - 1) + qb * qb / (double)(nb - 1));
    r->p_less = stats_t_cdf(r->t, r->df);
    return 0;
}
