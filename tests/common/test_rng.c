#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "shoal/rng.h"

Test(common_rng, same_seed_same_sequence_other_seed_other_sequence)
{
    shoal_rng a, b, c;
    shoal_rng_seed(&a, 42);
    shoal_rng_seed(&b, 42);
    shoal_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = shoal_rng_u64(&a);
        cr_assert_eq(x, shoal_rng_u64(&b));
        differ += x != shoal_rng_u64(&c);
    }
    cr_assert_gt(differ, 990);
}

Test(common_rng, xoshiro256starstar_matches_the_reference_algorithm)
{
    /* State set directly: the first outputs of xoshiro256** from state
     * {1, 2, 3, 4}, computed by hand from Blackman & Vigna's definition:
     * result = rotl(s1 * 5, 7) * 9. */
    shoal_rng r = {{1, 2, 3, 4}, 0.0, 0};
    cr_assert_eq(shoal_rng_u64(&r), 11520ULL); /* rotl(10, 7) * 9 */
    /* After one step s1 = 2 ^ (3 ^ 1) = 0, so the next is 0. */
    cr_assert_eq(shoal_rng_u64(&r), 0ULL);
}

Test(common_rng, derived_streams_differ_and_are_reproducible)
{
    shoal_rng a, b, c;
    shoal_rng_derive(&a, 7, 0);
    shoal_rng_derive(&b, 7, 1);
    shoal_rng_derive(&c, 7, 0);
    uint64_t xa = shoal_rng_u64(&a), xb = shoal_rng_u64(&b), xc = shoal_rng_u64(&c);
    cr_assert_neq(xa, xb);
    cr_assert_eq(xa, xc);
}

Test(common_rng, uniform_below_is_in_range_and_roughly_uniform)
{
    shoal_rng r;
    shoal_rng_seed(&r, 1);
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint64_t v = shoal_rng_below(&r, 10);
        cr_assert_lt(v, 10);
        counts[v]++;
    }
    for (int k = 0; k < 10; k++)
        cr_assert(counts[k] > 9500 && counts[k] < 10500, "bucket %d has %d", k, counts[k]);
    cr_assert_eq(shoal_rng_below(&r, 0), 0);
}

Test(common_rng, floats_are_in_unit_interval)
{
    shoal_rng r;
    shoal_rng_seed(&r, 3);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        float f = shoal_rng_float(&r);
        double d = shoal_rng_double(&r);
        cr_assert(f >= 0.0f && f < 1.0f);
        cr_assert(d >= 0.0 && d < 1.0);
        sum += d;
    }
    cr_assert_float_eq(sum / 100000, 0.5, 0.01);
}

Test(common_rng, normal_has_unit_moments)
{
    shoal_rng r;
    shoal_rng_seed(&r, 5);
    double s = 0, s2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = shoal_rng_normal(&r);
        s += x;
        s2 += x * x;
    }
    cr_assert_float_eq(s / n, 0.0, 0.01);
    cr_assert_float_eq(s2 / n, 1.0, 0.02);
}

Test(common_rng, gamma_has_mean_and_variance_equal_to_shape)
{
    const double shapes[] = {0.3, 1.0, 4.5};
    for (int k = 0; k < 3; k++) {
        shoal_rng r;
        shoal_rng_seed(&r, 11 + k);
        double s = 0, s2 = 0;
        const int n = 200000;
        for (int i = 0; i < n; i++) {
            double x = shoal_rng_gamma(&r, shapes[k]);
            cr_assert_geq(x, 0.0);
            s += x;
            s2 += x * x;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        cr_assert_float_eq(mean, shapes[k], 0.03 * shapes[k] + 0.01, "shape %g", shapes[k]);
        cr_assert_float_eq(var, shapes[k], 0.06 * shapes[k] + 0.01, "shape %g", shapes[k]);
    }
}

Test(common_rng, shuffle_is_a_permutation)
{
    shoal_rng r;
    shoal_rng_seed(&r, 9);
    uint32_t v[100];
    for (uint32_t i = 0; i < 100; i++)
        v[i] = i;
    shoal_rng_shuffle_u32(&r, v, 100);
    int seen[100] = {0}, moved = 0;
    for (uint32_t i = 0; i < 100; i++) {
        seen[v[i]]++;
        moved += v[i] != i;
    }
    for (int i = 0; i < 100; i++)
        cr_assert_eq(seen[i], 1);
    cr_assert_gt(moved, 80);
}
