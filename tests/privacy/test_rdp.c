/* Tests for privacy/: the RDP accountant against the published values of
 * Google's dp_accounting (rdp_privacy_accountant_test.py) and TensorFlow
 * Privacy (compute_dp_sgd_privacy tests), to 1e-6 relative with the same
 * optimal order; edge cases; monotonicity; the noise search; the packed
 * form. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shoal/privacy.h"

static void expect_rel(double got, double want, double rel, const char *what)
{
    cr_assert(fabs(got - want) <= rel * fabs(want), "%s: %.12g, want %.12g (rel %.2g)", what, got,
              want, fabs(got - want) / fabs(want));
}

Test(privacy_rdp, sampled_gaussian_matches_dp_accounting)
{
    /* q = 0.01, z = 2.5, 50 steps (dp_accounting's
     * test_compute_rdp_poisson_sampled_gaussian). */
    const double orders[] = {1.5, 2.5, 5, 50, 100};
    const double want[] = {6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02,
                           1.67416308e02};
    shoal_rdp_accountant acc;
    cr_assert_eq(shoal_rdp_accountant_init(&acc, orders, 5), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.01, 2.5, 50), SHOAL_OK);
    for (int i = 0; i < 5; i++) {
        char what[32];
        snprintf(what, sizeof what, "order %g", orders[i]);
        expect_rel(acc.rdp[i], want[i], 1e-6, what);
    }
    double inf = 0;
    cr_assert_eq(shoal_rdp_sampled_gaussian(0.01, 2.5, INFINITY, &inf), SHOAL_OK);
    cr_assert(isinf(inf));
}

typedef struct {
    double q, z;
    uint64_t steps;
    double delta, eps, order;
} eps_case;

/* TensorFlow Privacy's compute_dp_sgd_privacy figures (default grid). */
static const eps_case tfp_cases[] = {
    {150.0 / 60000.0, 1.3, 6000, 1e-5, 0.7242234026109595, 19},
    {1e-3, 1.0, 30000, 1e-7, 1.4154988495444842, 13},
    {1024.0 / 1e8, 0.1, 976563, 1e-7, 5907982.3113978775, 1.25},
};

Test(privacy_rdp, epsilon_matches_tensorflow_privacy_with_the_same_order)
{
    for (size_t i = 0; i < sizeof tfp_cases / sizeof *tfp_cases; i++) {
        const eps_case *c = &tfp_cases[i];
        shoal_rdp_accountant acc;
        cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
        cr_assert_eq(shoal_rdp_accountant_compose(&acc, c->q, c->z, c->steps), SHOAL_OK);
        double eps = 0, order = 0;
        cr_assert_eq(shoal_rdp_accountant_epsilon(&acc, c->delta, SHOAL_DP_CONVERSION_IMPROVED,
                                                  &eps, &order),
                     SHOAL_OK);
        char what[64];
        snprintf(what, sizeof what, "case %zu epsilon", i);
        expect_rel(eps, c->eps, 1e-6, what);
        cr_assert_eq(order, c->order, "case %zu: order %g, want %g", i, order, c->order);
    }
}

Test(privacy_rdp, pure_dp_and_exact_gaussian_conversions_match_dp_accounting)
{
    /* test_compute_epsilon_delta_pure_dp: constant rdp 1.1 over 2..32. */
    double orders[31], rdp[31];
    for (int i = 0; i < 31; i++) {
        orders[i] = 2 + i;
        rdp[i] = 1.1;
    }
    double eps, order;
    cr_assert_eq(
        shoal_rdp_epsilon(orders, rdp, 31, 1e-5, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order),
        SHOAL_OK);
    cr_assert(fabs(eps - 1.32783806176) < 1e-7, "%.12f", eps);
    cr_assert_eq(order, 32);
    /* The classic conversion of the same: 1.1 - log(1e-5) / 31. */
    cr_assert_eq(
        shoal_rdp_epsilon(orders, rdp, 31, 1e-5, SHOAL_DP_CONVERSION_CLASSIC, &eps, &order),
        SHOAL_OK);
    expect_rel(eps, 1.1 - log(1e-5) / 31.0, 1e-12, "classic");
}

Test(privacy_rdp, edge_cases)
{
    shoal_rdp_accountant acc;
    double eps, order;
    /* q = 0: nothing is learnt. */
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.0, 1.0, 1000), SHOAL_OK);
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&acc, 1e-5, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order),
        SHOAL_OK);
    cr_assert_eq(eps, 0.0);
    /* z = 0: no privacy at all. */
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.1, 0.0, 1), SHOAL_OK);
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&acc, 1e-5, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order),
        SHOAL_OK);
    cr_assert(isinf(eps));
    /* q = 1: the plain Gaussian, order / (2 z^2) per step. */
    double r;
    cr_assert_eq(shoal_rdp_sampled_gaussian(1.0, 2.0, 3.0, &r), SHOAL_OK);
    cr_assert_eq(r, 3.0 / 8.0);
    /* Refusals. */
    cr_assert_eq(shoal_rdp_sampled_gaussian(1.5, 1.0, 2.0, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_sampled_gaussian(0.5, -1.0, 2.0, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_sampled_gaussian(0.5, 1.0, 1.0, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_sampled_gaussian(NAN, 1.0, 2.0, &r), SHOAL_EINVAL);
    const double bad_orders[] = {2.0, 1.5};
    cr_assert_eq(shoal_rdp_accountant_init(&acc, bad_orders, 2), SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&acc, 1.0, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order),
        SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.1, NAN, 1), SHOAL_EINVAL);
    cr_assert_eq(acc.steps, 0u, "a refused compose counted");
}

/* Epsilon never falls with more rounds, and never rises with more noise. */
Test(privacy_rdp, epsilon_is_monotone_in_rounds_and_noise)
{
    const double zs[] = {0.6, 0.8, 1.0, 1.2, 1.6, 2.5};
    const uint64_t steps[] = {1, 10, 100, 1000, 10000};
    for (int conv = 0; conv < 2; conv++) {
        for (size_t zi = 0; zi < 6; zi++) {
            double prev = -1;
            for (size_t si = 0; si < 5; si++) {
                shoal_rdp_accountant acc;
                double eps;
                cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
                cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.02, zs[zi], steps[si]), SHOAL_OK);
                cr_assert_eq(
                    shoal_rdp_accountant_epsilon(&acc, 1e-5, (shoal_dp_conversion)conv, &eps, NULL),
                    SHOAL_OK);
                cr_assert_geq(eps, prev, "z %g: %llu steps gave %g < %g", zs[zi],
                              (unsigned long long)steps[si], eps, prev);
                prev = eps;
            }
        }
        for (size_t si = 0; si < 5; si++) {
            double prev = INFINITY;
            for (size_t zi = 0; zi < 6; zi++) {
                shoal_rdp_accountant acc;
                double eps;
                cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
                cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.02, zs[zi], steps[si]), SHOAL_OK);
                cr_assert_eq(
                    shoal_rdp_accountant_epsilon(&acc, 1e-5, (shoal_dp_conversion)conv, &eps, NULL),
                    SHOAL_OK);
                cr_assert_leq(eps, prev, "%llu steps: z %g gave %g > %g",
                              (unsigned long long)steps[si], zs[zi], eps, prev);
                prev = eps;
            }
        }
    }
}

/* Composing in pieces is composing at once; the improved conversion is
 * never worse than the classic one. */
Test(privacy_rdp, composition_adds_and_improved_beats_classic)
{
    shoal_rdp_accountant a, b;
    cr_assert_eq(shoal_rdp_accountant_init(&a, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_init(&b, NULL, 0), SHOAL_OK);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(shoal_rdp_accountant_compose(&a, 0.02, 1.2, 1), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&b, 0.02, 1.2, 100), SHOAL_OK);
    cr_assert_eq(a.steps, 100u);
    for (uint32_t i = 0; i < a.count; i++)
        expect_rel(a.rdp[i], b.rdp[i], 1e-12, "piecewise composition");
    double improved, classic;
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&a, 1e-5, SHOAL_DP_CONVERSION_IMPROVED, &improved, NULL),
        SHOAL_OK);
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&a, 1e-5, SHOAL_DP_CONVERSION_CLASSIC, &classic, NULL),
        SHOAL_OK);
    cr_assert_lt(improved, classic);
    /* The simulator setting of docs/privacy.md: about 1.19. */
    cr_assert(improved > 1.0 && improved < 1.4, "q 0.02, z 1.2, 100 rounds: epsilon %g", improved);
}

Test(privacy_rdp, noise_search_finds_the_smallest_multiplier)
{
    double z = 0;
    cr_assert_eq(shoal_rdp_noise_for_epsilon(150.0 / 60000.0, 6000, 1e-5, 0.7242234026109595,
                                             SHOAL_DP_CONVERSION_IMPROVED, &z),
                 SHOAL_OK);
    expect_rel(z, 1.3, 1e-5, "noise for TF Privacy's first case");
    /* The found z meets the target; 0.1% less noise does not. */
    shoal_rdp_accountant acc;
    double eps;
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.02, 1.0, 100), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_epsilon(&acc, 1e-5, 0, &eps, NULL), SHOAL_OK);
    cr_assert_eq(shoal_rdp_noise_for_epsilon(0.02, 100, 1e-5, eps, 0, &z), SHOAL_OK);
    expect_rel(z, 1.0, 1e-5, "round trip");
    cr_assert_eq(shoal_rdp_noise_for_epsilon(0.02, 100, 1e-5, 0.0, 0, &z), SHOAL_EINVAL);
    cr_assert_eq(shoal_rdp_noise_for_epsilon(1.0, 1000000, 1e-5, 1e-9, 0, &z), SHOAL_ELIMIT);
}

Test(privacy_rdp, packed_accountant_round_trips_and_refuses_damage)
{
    shoal_rdp_accountant acc, back;
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, 0.02, 1.2, 37), SHOAL_OK);
    uint8_t buf[SHOAL_RDP_PACKED_MAX];
    size_t len = shoal_rdp_accountant_pack(&acc, buf);
    cr_assert_eq(len, 20 + 16 * (size_t)SHOAL_RDP_DEFAULT_ORDERS);
    cr_assert_eq(shoal_rdp_accountant_unpack(buf, len, &back), SHOAL_OK);
    cr_assert_eq(back.steps, 37u);
    cr_assert_eq(memcmp(back.rdp, acc.rdp, acc.count * sizeof(double)), 0);
    cr_assert_eq(shoal_rdp_accountant_unpack(buf, len - 1, &back), SHOAL_EFORMAT);
    buf[0] = 'X';
    cr_assert_eq(shoal_rdp_accountant_unpack(buf, len, &back), SHOAL_EFORMAT);
    buf[0] = 'S';
    buf[28 + 7] = 0xff; /* the first rdp becomes a NaN */
    cr_assert_eq(shoal_rdp_accountant_unpack(buf, len, &back), SHOAL_EFORMAT);
}

/* ---- the noise ------------------------------------------------------------------------- */

#include "shoal/dp_noise.h"

/* Over 10^6 coordinates the noise has the configured standard deviation
 * (within 0.5%; the estimate's own standard error is 0.07%) and zero mean
 * (within 5 standard errors), and is added once: the released values are
 * the rounded sum plus the noise, nothing more. */
Test(privacy_noise, gaussian_noise_has_the_configured_deviation_and_zero_mean)
{
    enum { N = 1000000 };
    static float sum[N];
    const double stddev = 3.7, base = 100.0;
    for (size_t i = 0; i < N; i++)
        sum[i] = (float)base;
    cr_assert_eq(shoal_dp_add_gaussian_noise(sum, N, stddev), SHOAL_OK);
    double mean = 0, sq = 0;
    for (size_t i = 0; i < N; i++) {
        double d = sum[i] - base;
        mean += d;
        sq += d * d;
    }
    mean /= N;
    double sd = sqrt(sq / N - mean * mean);
    cr_assert(fabs(sd / stddev - 1.0) < 0.005, "standard deviation %.5f, want %.5f", sd, stddev);
    cr_assert(fabs(mean) < 5.0 * stddev / sqrt((double)N), "mean %.6f", mean);
    /* Every released value is a point of the grid stddev / 1024. */
    const double grid = stddev / SHOAL_DP_NOISE_SIGMA;
    for (size_t i = 0; i < 1000; i++) {
        double steps = sum[i] / grid;
        cr_assert(fabs(steps - nearbyint(steps)) < 1e-3 * fabs(steps) + 1e-6,
                  "coordinate %zu is not on the grid", i);
    }
    float bad[2] = {1.0f, NAN};
    cr_assert_eq(shoal_dp_add_gaussian_noise(bad, 2, 1.0), SHOAL_ENUMERIC);
    cr_assert_eq(bad[0], 1.0f, "a refused call changed the sum");
    cr_assert_eq(shoal_dp_add_gaussian_noise(bad, 1, 0.0), SHOAL_EINVAL);
    cr_assert_eq(shoal_dp_add_gaussian_noise(bad, 1, INFINITY), SHOAL_EINVAL);
}

/* The sampler is exact: with sigma = 3 the frequency of each integer
 * matches exp(-x^2 / 18) / normaliser (chi-square over -9..9 and the two
 * tails, 20 degrees of freedom: P(chi2 > 52.4) < 1e-4). */
Test(privacy_noise, discrete_gaussian_matches_its_probabilities)
{
    enum { N = 400000, HALF = 9 };
    static int64_t x[N];
    cr_assert_eq(shoal_dp_discrete_gaussian(3, x, N), SHOAL_OK);
    double norm = 0;
    for (int v = -200; v <= 200; v++)
        norm += exp(-(double)v * v / 18.0);
    double count[2 * HALF + 3] = {0}, expect[2 * HALF + 3] = {0};
    for (size_t i = 0; i < N; i++) {
        int64_t v = x[i];
        int bin = v < -HALF ? 0 : v > HALF ? 2 * HALF + 2 : (int)v + HALF + 1;
        count[bin]++;
    }
    for (int v = -200; v <= 200; v++) {
        int bin = v < -HALF ? 0 : v > HALF ? 2 * HALF + 2 : v + HALF + 1;
        expect[bin] += N * exp(-(double)v * v / 18.0) / norm;
    }
    double chi2 = 0;
    for (int b = 0; b < 2 * HALF + 3; b++)
        chi2 += (count[b] - expect[b]) * (count[b] - expect[b]) / expect[b];
    cr_assert_lt(chi2, 52.4, "chi-square %.1f", chi2);
    cr_assert_eq(shoal_dp_discrete_gaussian(0, x, 1), SHOAL_EINVAL);
    cr_assert_eq(shoal_dp_discrete_gaussian(SHOAL_DP_MAX_SIGMA + 1, x, 1), SHOAL_EINVAL);
}
