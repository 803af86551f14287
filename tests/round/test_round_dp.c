/* DP-FedAvg's clip and noisy mean (shoal/round_dp.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/dp_noise.h"
#include "shoal/rng.h"
#include "shoal/robust.h"
#include "shoal/round_dp.h"

enum { DIM = 1000 };

Test(round_dp, an_update_of_ten_times_the_clip_leaves_within_the_clip)
{
    const double clip = 0.37;
    float u[DIM];
    for (size_t i = 0; i < DIM; i++)
        u[i] = (float)((i % 7) - 3.0) + 0.001f * (float)i;
    double norm0 = shoal_robust_norm(u, DIM);
    for (size_t i = 0; i < DIM; i++)
        u[i] = (float)(u[i] * (10.0 * clip / norm0));
    double had = 0.0;
    cr_assert_eq(shoal_round_dp_clip(u, DIM, clip, &had), SHOAL_OK);
    cr_assert(fabs(had - 10.0 * clip) < 1e-4, "norm before: %.9g", had);
    double after = shoal_robust_norm(u, DIM);
    cr_assert(after <= clip, "norm after: %.12g > %.12g", after, clip);
    cr_assert(after > clip * (1.0 - 1e-5), "clipping should keep the norm at the clip: %.9g",
              after);
}

Test(round_dp, an_update_within_the_clip_is_left_exactly_as_it_is)
{
    float u[DIM], copy[DIM];
    for (size_t i = 0; i < DIM; i++)
        u[i] = copy[i] = 1e-3f * (float)((int)(i % 11) - 5);
    cr_assert_eq(shoal_round_dp_clip(u, DIM, 10.0, NULL), SHOAL_OK);
    cr_assert_eq(memcmp(u, copy, sizeof u), 0);
}

Test(round_dp, without_noise_the_mean_divides_by_the_expected_count_not_the_realised_one)
{
    /* Three reports arrived where 4.5 were expected. */
    float sum[4] = {3.0f, -1.5f, 0.0f, 9.0f}, mean[4];
    shoal_round_dp_config cfg = {.clip = 1.0, .noise_multiplier = 0.0, .expected_reports = 4.5};
    cr_assert_eq(shoal_round_dp_mean(sum, 4, &cfg, mean, NULL), SHOAL_OK);
    const float want[4] = {3.0f / 4.5f, -1.5f / 4.5f, 0.0f, 2.0f};
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(mean[i], want[i], 1e-7f, "coordinate %d: %g", i, (double)mean[i]);
}

Test(round_dp, the_noise_is_added_once_with_stddev_z_times_the_clip)
{
    /* On a zero sum the output is the noise itself: its variance must be
     * (z S / expected)^2, not twice that (noise added twice) nor zero. */
    const size_t d = 200000;
    float *sum = calloc(d, sizeof *sum);
    shoal_round_dp_config cfg = {.clip = 0.5, .noise_multiplier = 1.2, .expected_reports = 2.0};
    cr_assert_eq(shoal_round_dp_mean(sum, d, &cfg, sum, NULL), SHOAL_OK);
    double m = 0.0, v = 0.0;
    for (size_t i = 0; i < d; i++)
        m += sum[i];
    m /= (double)d;
    for (size_t i = 0; i < d; i++)
        v += ((double)sum[i] - m) * ((double)sum[i] - m);
    v /= (double)(d - 1);
    const double want = pow(1.2 * 0.5 / 2.0, 2.0);
    /* The sample variance of 200,000 normals is within 1.5% of the truth
     * with overwhelming probability (its sd is sqrt(2/d) = 0.32%). */
    cr_assert(fabs(v / want - 1.0) < 0.015, "variance %.6g, want %.6g", v, want);
    cr_assert(fabs(m) < 5.0 * sqrt(want / (double)d), "mean %.3g", m);
    free(sum);
}

Test(round_dp, bad_configs_and_non_finite_sums_are_refused_and_leave_the_sum_intact)
{
    float sum[2] = {1.0f, 2.0f}, mean[2] = {0};
    shoal_errinfo ei = {{0}};
    shoal_round_dp_config bad[] = {{0.0, 1.0, 10.0},  {-1.0, 1.0, 10.0}, {NAN, 1.0, 10.0},
                                   {1.0, -0.1, 10.0}, {1.0, NAN, 10.0},  {1.0, 1.0, 0.0}};
    const char *field[] = {"clip", "clip", "clip", "noise", "noise", "expected"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(shoal_round_dp_mean(sum, 2, &bad[i], mean, &ei), SHOAL_EINVAL);
        cr_assert(strstr(ei.msg, field[i]), "%zu: %s", i, ei.msg);
        cr_assert(sum[0] == 1.0f && sum[1] == 2.0f);
    }
    sum[1] = INFINITY;
    shoal_round_dp_config ok = {1.0, 1.0, 10.0};
    cr_assert_eq(shoal_round_dp_mean(sum, 2, &ok, mean, &ei), SHOAL_ENUMERIC);
    cr_assert(sum[0] == 1.0f);
    cr_assert_eq(shoal_round_dp_clip(sum, 2, 0.0, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_round_dp_clip(sum, 2, 1.0, NULL), SHOAL_ENUMERIC);
}

/* DP-FTRL: the means of rounds 1..t add up to (the prefix of the rounded
 * sums + the tree's prefix noise N_t) x grid / expected, where N_t is what
 * a copy of the tree rebuilds from its seeds; across a restart the second
 * tree's noise adds to the first tree's last release. */
Test(round_dp, ftrl_means_add_up_to_the_noised_prefix_the_tree_gives)
{
    enum { D = 3000, ROUNDS = 7, EVERY = 4 };
    const shoal_round_dp_config cfg = {
        .clip = 0.5, .noise_multiplier = 1.3, .expected_reports = 12.0};
    const double grid = 0.65 / SHOAL_DP_NOISE_SIGMA;
    shoal_dp_tree tree;
    cr_assert_eq(shoal_dp_tree_init(&tree, D, 0.65, EVERY), SHOAL_OK);
    float *sum = malloc(D * sizeof *sum), *mean = malloc(D * sizeof *mean);
    int64_t *scratch = malloc(D * sizeof *scratch), *noise = malloc(D * sizeof *noise);
    double *released = calloc(D, sizeof *released), *prefix = calloc(D, sizeof *prefix),
           *closed = calloc(D, sizeof *closed);
    for (int t = 1; t <= ROUNDS; t++) {
        for (size_t i = 0; i < D; i++) {
            sum[i] = (float)(0.01 * (double)((int)((i * 7 + (size_t)t * 13) % 101) - 50));
            prefix[i] += nearbyint((double)sum[i] / grid);
        }
        cr_assert_eq(shoal_round_dp_ftrl_mean(&tree, sum, D, &cfg, scratch, mean, NULL), SHOAL_OK);
        for (size_t i = 0; i < D; i++)
            released[i] += (double)mean[i];
        cr_assert_eq(shoal_dp_tree_current_steps(&tree, noise), SHOAL_OK);
        double worst = 0;
        for (size_t i = 0; i < D; i++) {
            double want = (prefix[i] + closed[i] + (double)noise[i]) * grid / cfg.expected_reports;
            worst = fmax(worst, fabs(released[i] - want));
        }
        cr_assert_lt(worst, 1e-3 * grid / cfg.expected_reports,
                     "round %d: the releases are %g from the tree's prefix", t, worst);
        if (t == EVERY) /* the next round starts a tree from this release */
            for (size_t i = 0; i < D; i++)
                closed[i] += (double)noise[i];
    }
    cr_assert_eq(tree.restarts, 1u);
    free(sum);
    free(mean);
    free(scratch);
    free(noise);
    free(released);
    free(prefix);
    free(closed);
}

Test(round_dp, ftrl_refuses_a_tree_that_does_not_fit_and_changes_nothing)
{
    enum { D = 10 };
    shoal_round_dp_config cfg = {.clip = 1.0, .noise_multiplier = 2.0, .expected_reports = 5.0};
    shoal_dp_tree tree;
    cr_assert_eq(shoal_dp_tree_init(&tree, D, 2.5, 0), SHOAL_OK);
    float sum[D] = {1, 2, 3}, mean[D];
    int64_t scratch[D];
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_round_dp_ftrl_mean(&tree, sum, D, &cfg, scratch, mean, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "noise multiplier x clip"), "%s", ei.msg);
    cr_assert_eq(tree.step, 0u);
    cfg.noise_multiplier = 2.5;
    cr_assert_eq(shoal_round_dp_ftrl_mean(&tree, sum, D - 1, &cfg, scratch, mean, &ei),
                 SHOAL_EINVAL);
    sum[4] = NAN;
    cr_assert_eq(shoal_round_dp_ftrl_mean(&tree, sum, D, &cfg, scratch, mean, &ei), SHOAL_ENUMERIC);
    cr_assert_eq(tree.step, 0u, "nothing released, the tree did not move");
    sum[4] = 0;
    cr_assert_eq(shoal_round_dp_ftrl_mean(&tree, sum, D, &cfg, scratch, mean, &ei), SHOAL_OK);
    cr_assert_eq(tree.step, 1u);
}

/* ---- adaptive clipping (Andrew et al. 2021) ------------------------------------ */

Test(round_dp, adaptive_update_noise_leaves_the_rest_of_the_total)
{
    double zu = 0;
    /* z = 1, count noise 5: z_update^-2 = 1 - 1/100. */
    cr_assert_eq(shoal_round_dp_adaptive_update_noise(1.0, 5.0, &zu, NULL), SHOAL_OK);
    cr_assert_float_eq(zu, 1.0 / sqrt(0.99), 1e-12);
    /* The two together are the total again. */
    cr_assert_float_eq(1.0 / (zu * zu) + 1.0 / 100.0, 1.0, 1e-12);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_round_dp_adaptive_update_noise(2.0, 1.0, &zu, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "above half the noise multiplier"), "%s", ei.msg);
    cr_assert_eq(shoal_round_dp_adaptive_update_noise(0.0, 1.0, &zu, NULL), SHOAL_EINVAL);
}

Test(round_dp, the_noised_fraction_divides_by_the_expected_count_around_one_half)
{
    double f = 0;
    /* 30 of 40 unclipped, 50 expected, no noise: (30 - 20) / 50 + 1/2. */
    cr_assert_eq(shoal_round_dp_noised_fraction(30, 40, 50.0, 0.0, &f), SHOAL_OK);
    cr_assert_float_eq(f, 0.7, 1e-12);
    cr_assert_eq(shoal_round_dp_noised_fraction(41, 40, 50.0, 0.0, &f), SHOAL_EINVAL);
    cr_assert_eq(shoal_round_dp_noised_fraction(1, 40, 0.0, 0.0, &f), SHOAL_EINVAL);
    /* With noise 2 the estimates spread by 2 / 50 around 0.7. */
    double sum = 0, sq = 0;
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        cr_assert_eq(shoal_round_dp_noised_fraction(30, 40, 50.0, 2.0, &f), SHOAL_OK);
        sum += f;
        sq += f * f;
    }
    double mean = sum / N, sd = sqrt(sq / N - mean * mean);
    /* Standard errors: 0.04 / sqrt(N) = 2.8e-4 for the mean, 0.5% for the sd. */
    cr_assert(fabs(mean - 0.7) < 6 * 0.04 / sqrt(N), "mean %g", mean);
    cr_assert(fabs(sd / 0.04 - 1.0) < 0.03, "sd %g", sd);
}

/* Norms log-normal(0, 0.5): the gamma-quantile is exp(0.5 x Phi^-1(gamma)).
 * 100 reports a round from 0.1 (far below), rate 0.2: after 1,500 rounds
 * the clip's geometric mean over the last 500 lies within 3% of the
 * quantile, without count noise and with the paper's m / 20. */
static double converged_clip(double gamma, double count_noise, uint64_t seed)
{
    enum { M = 100, ROUNDS = 1500, LAST = 500 };
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    double clip = 0.1, log_sum = 0;
    for (int t = 0; t < ROUNDS; t++) {
        uint64_t unclipped = 0;
        for (int i = 0; i < M; i++)
            unclipped += exp(0.5 * shoal_rng_normal(&rng)) <= clip;
        double f = 0;
        cr_assert_eq(shoal_round_dp_noised_fraction(unclipped, M, M, count_noise, &f), SHOAL_OK);
        clip = shoal_round_dp_adaptive_clip(clip, f, gamma, 0.2);
        if (t >= ROUNDS - LAST)
            log_sum += log(clip);
    }
    return exp(log_sum / LAST);
}

Test(round_dp, adaptive_clipping_converges_to_the_target_quantile_of_the_norms)
{
    /* Phi^-1(0.5) = 0, Phi^-1(0.8) = 0.8416212335729143. */
    const double gammas[] = {0.5, 0.8}, z[] = {0.0, 0.8416212335729143};
    for (int g = 0; g < 2; g++) {
        const double want = exp(0.5 * z[g]);
        for (int noisy = 0; noisy < 2; noisy++) {
            double got = converged_clip(gammas[g], noisy ? 100.0 / 20.0 : 0.0, 11 + (uint64_t)g);
            cr_assert(fabs(got / want - 1.0) < 0.03, "gamma %g%s: clip %g, quantile %g", gammas[g],
                      noisy ? " with count noise" : "", got, want);
        }
    }
    /* And the step's direction: more unclipped than the target shrinks it. */
    cr_assert_lt(shoal_round_dp_adaptive_clip(1.0, 0.9, 0.5, 0.2), 1.0);
    cr_assert_gt(shoal_round_dp_adaptive_clip(1.0, 0.1, 0.5, 0.2), 1.0);
    cr_assert_float_eq(shoal_round_dp_adaptive_clip(2.0, 0.5, 0.5, 0.2), 2.0, 1e-15);
}
