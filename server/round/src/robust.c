/* Robust aggregation (see shoal/robust.h; Yin et al. 2018, "Byzantine-
 * Robust Distributed Learning: Towards Optimal Statistical Rates"). */
#include <math.h>
#include <string.h>

#include "shoal/robust.h"

#include "shoal/blas.h"
#include "shoal/names.h"

static const char *const names[] = {"mean", "median", "trimmed_mean", "norm_bounded"};

const char *shoal_robust_name(shoal_robust_kind kind)
{
    return shoal_names_get(names, SHOAL_NAMES_COUNT(names), (int)kind, "unknown");
}

shoal_err shoal_robust_parse(const char *name, shoal_robust_kind *out)
{
    int value;
    if (!out || shoal_names_find(names, SHOAL_NAMES_COUNT(names), name, &value))
        return SHOAL_EINVAL;
    *out = (shoal_robust_kind)value;
    return SHOAL_OK;
}

/* Sorts v[0..n) ascending: insertion sort, for the handful of updates a
 * round folds (tens to hundreds), cheaper than qsort's calls. */
static void sort_small(float *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        float x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* Moves the k-th smallest of v[0..n) to v[k], with every value before
 * it no larger and every value after it no smaller, and returns it
 * (Wirth's selection, "Algorithms + Data Structures = Programs", 1976). */
static float select_kth(float *v, size_t n, size_t k)
{
    long l = 0, m = (long)n - 1;
    const long kk = (long)k;
    while (l < m) {
        const float x = v[kk];
        long i = l, j = m;
        do {
            while (v[i] < x)
                i++;
            while (x < v[j])
                j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < kk)
            l = i;
        if (kk < i)
            m = j;
    }
    return v[kk];
}

shoal_err shoal_robust_median(const float *const *updates, size_t n, size_t d, float *scratch,
                              float *out)
{
    if (!updates || n == 0 || !scratch || (!out && d))
        return SHOAL_EINVAL;
    for (size_t j = 0; j < d; j++) {
        for (size_t i = 0; i < n; i++)
            scratch[i] = updates[i][j];
        float hi = select_kth(scratch, n, n / 2);
        if (n % 2) {
            out[j] = hi;
        } else {
            /* scratch[0 .. n/2) holds the lower half: its largest is the
             * other middle value. */
            float lo = scratch[0];
            for (size_t i = 1; i < n / 2; i++)
                if (scratch[i] > lo)
                    lo = scratch[i];
            out[j] = (float)(((double)lo + (double)hi) / 2.0);
        }
    }
    return SHOAL_OK;
}

shoal_err shoal_robust_trimmed_mean(const float *const *updates, size_t n, size_t d, double beta,
                                    float *scratch, float *out)
{
    if (!updates || n == 0 || !scratch || (!out && d) || !(beta >= 0.0 && beta < 0.5))
        return SHOAL_EINVAL;
    const size_t trim = (size_t)floor(beta * (double)n);
    const size_t keep = n - 2 * trim;
    for (size_t j = 0; j < d; j++) {
        for (size_t i = 0; i < n; i++)
            scratch[i] = updates[i][j];
        if (n <= 32) {
            sort_small(scratch, n);
        } else if (trim > 0) {
            /* Partition off the trim smallest, then the trim largest. */
            select_kth(scratch, n, trim);
            select_kth(scratch + trim, n - trim, n - 2 * trim);
        }
        double s = 0.0;
        for (size_t i = trim; i < trim + keep; i++)
            s += scratch[i];
        out[j] = (float)(s / (double)keep);
    }
    return SHOAL_OK;
}

double shoal_robust_norm(const float *x, size_t d)
{
    return shoal_nrm2(d, x);
}

shoal_err shoal_robust_clip(float *update, size_t d, double bound, double *norm)
{
    return shoal_clip_l2(d, update, bound, norm);
}
