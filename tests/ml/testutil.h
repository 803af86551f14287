/* Helpers shared by the ml tests: random fills and finite differences. */
#ifndef SHOAL_TEST_ML_UTIL_H
#define SHOAL_TEST_ML_UTIL_H

#include <math.h>
#include <stddef.h>

#include "shoal/rng.h"

static inline void fill_uniform(shoal_rng *r, float *v, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * shoal_rng_float(r);
}

/* Uniform in +-[lo, hi]: values kept away from relu's kink at zero. */
static inline void fill_away_from_zero(shoal_rng *r, float *v, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        float m = lo + (hi - lo) * shoal_rng_float(r);
        v[i] = shoal_rng_u64(r) & 1 ? m : -m;
    }
}

/* Whether a numeric and an analytic derivative agree. */
static inline int grad_close(double numeric, double analytic, double abs_tol, double rel_tol)
{
    return fabs(numeric - analytic) <= abs_tol + rel_tol * fmax(fabs(numeric), fabs(analytic));
}

#endif
