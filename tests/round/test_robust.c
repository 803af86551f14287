/* Tests for robust aggregation (shoal/robust.h): each aggregate against a
 * second computation by sorting, with duplicates, even and odd counts;
 * the bound on what attackers can do; clipping. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/robust.h"

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Updates with values from a small set, so coordinates have ties. */
static float **make_updates(size_t n, size_t d, unsigned seed)
{
    float **u = malloc(n * sizeof *u);
    srand(seed);
    for (size_t i = 0; i < n; i++) {
        u[i] = malloc(d * sizeof **u);
        for (size_t j = 0; j < d; j++)
            u[i][j] = (float)(rand() % 41 - 20) / 4.0f;
    }
    return u;
}

static void free_updates(float **u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(u[i]);
    free(u);
}

Test(round_robust, median_and_trimmed_mean_equal_sorting)
{
    const size_t counts[] = {1, 2, 3, 10, 33, 64, 101};
    const size_t d = 300;
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        size_t n = counts[c];
        float **u = make_updates(n, d, (unsigned)n);
        float *scratch = malloc(n * sizeof *scratch), *sorted = malloc(n * sizeof *sorted);
        float med[300], tm[300];
        cr_assert_eq(shoal_robust_median((const float *const *)u, n, d, scratch, med), SHOAL_OK);
        cr_assert_eq(shoal_robust_trimmed_mean((const float *const *)u, n, d, 0.2, scratch, tm),
                     SHOAL_OK);
        size_t trim = (size_t)floor(0.2 * n);
        for (size_t j = 0; j < d; j++) {
            for (size_t i = 0; i < n; i++)
                sorted[i] = u[i][j];
            qsort(sorted, n, sizeof *sorted, cmp_float);
            float want = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
            cr_assert_eq(med[j], want, "n=%zu coordinate %zu: median %g, want %g", n, j, med[j],
                         want);
            double s = 0;
            for (size_t i = trim; i < n - trim; i++)
                s += sorted[i];
            float want_tm = (float)(s / (double)(n - 2 * trim));
            cr_assert(fabsf(tm[j] - want_tm) <= 1e-6f * (1 + fabsf(want_tm)),
                      "n=%zu coordinate %zu: trimmed mean %g, want %g", n, j, tm[j], want_tm);
        }
        free(scratch);
        free(sorted);
        free_updates(u, n);
    }
}

/* 20% of updates scaled by 100: the mean moves by about 20x, the median
 * and the 0.25-trimmed mean stay within the honest values' range. */
Test(round_robust, a_fifth_of_scaled_attackers_cannot_move_median_or_trimmed_mean)
{
    const size_t n = 50, d = 100;
    float **u = make_updates(n, d, 7);
    for (size_t i = 0; i < n / 5; i++)
        for (size_t j = 0; j < d; j++)
            u[i][j] = 100.0f * (u[i][j] + 5.0f) + 1000.0f; /* large and positive */
    float scratch[50], med[100], tm[100];
    cr_assert_eq(shoal_robust_median((const float *const *)u, n, d, scratch, med), SHOAL_OK);
    cr_assert_eq(shoal_robust_trimmed_mean((const float *const *)u, n, d, 0.25, scratch, tm),
                 SHOAL_OK);
    for (size_t j = 0; j < d; j++) {
        cr_assert(med[j] >= -5.0f && med[j] <= 5.0f, "median %g escaped the honest range", med[j]);
        cr_assert(tm[j] >= -5.0f && tm[j] <= 5.0f, "trimmed mean %g escaped", tm[j]);
    }
    free_updates(u, n);
}

Test(round_robust, clip_bounds_the_norm_and_leaves_small_updates_alone)
{
    float u[4] = {3, 4, 0, 0};
    double norm = 0;
    cr_assert_eq(shoal_robust_clip(u, 4, 10.0, &norm), SHOAL_OK);
    cr_assert_eq(norm, 5.0);
    cr_assert(u[0] == 3 && u[1] == 4, "an update within the bound was changed");
    cr_assert_eq(shoal_robust_clip(u, 4, 1.0, &norm), SHOAL_OK);
    cr_assert_float_eq(shoal_robust_norm(u, 4), 1.0, 1e-6);
    cr_assert_float_eq(u[0] / u[1], 0.75, 1e-6, "clipping changed the direction");
    float bad[2] = {INFINITY, 1};
    cr_assert_eq(shoal_robust_clip(bad, 2, 1.0, &norm), SHOAL_ENUMERIC);
    cr_assert_eq(shoal_robust_clip(u, 4, 0.0, &norm), SHOAL_EINVAL);
    cr_assert_eq(shoal_robust_trimmed_mean((const float *const *)&u, 1, 4, 0.5, bad, u),
                 SHOAL_EINVAL);
    shoal_robust_kind k;
    cr_assert_eq(shoal_robust_parse("trimmed_mean", &k), SHOAL_OK);
    cr_assert_eq(k, SHOAL_ROBUST_TRIMMED_MEAN);
    cr_assert_str_eq(shoal_robust_name(SHOAL_ROBUST_NORM_BOUNDED), "norm_bounded");
    cr_assert_eq(shoal_robust_parse("krum", &k), SHOAL_EINVAL);
}
