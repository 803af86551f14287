/* The simulator's in-process secure aggregation: the decoded sum must be
 * the plain weighted sum within the fixed-point error bound, whatever the
 * grouping; groups that cannot run contribute nothing. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate_int.h"
#include "population_int.h"
#include "shoal/dp_ftrl.h"
#include "shoal/privacy.h"
#include "shoal/rng.h"
#include "shoal/robust.h"
#include "shoal/secagg_protocol.h"

enum { DIM = 300 };

typedef struct reports {
    size_t count;
    float *values; /* count x DIM */
    const float **updates;
    uint32_t *weights;
} reports;

static void reports_make(reports *r, size_t count, double clip, uint64_t seed)
{
    r->count = count;
    r->values = calloc(count * DIM, sizeof(float));
    r->updates = calloc(count, sizeof *r->updates);
    r->weights = calloc(count, sizeof *r->weights);
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    for (size_t i = 0; i < count; i++) {
        for (size_t k = 0; k < DIM; k++)
            r->values[i * DIM + k] = (float)((2.0 * shoal_rng_double(&rng) - 1.0) * clip);
        r->updates[i] = r->values + i * DIM;
        r->weights[i] = 1 + (uint32_t)shoal_rng_below(&rng, 600);
    }
}

static void reports_free(reports *r)
{
    free(r->values);
    free(r->updates);
    free(r->weights);
}

static shoal_sim_secagg_config secagg_config(shoal_sim_secagg_mode mode, uint32_t group_size)
{
    shoal_sim_config c = shoal_sim_defaults();
    c.secagg.mode = mode;
    c.secagg.group_size = group_size;
    return c.secagg;
}

/* Each contributor's element is rounded stochastically to a step of
 * 1/scale, so the sum is off by less than contributors/scale. */
static void check_mean(shoal_sim_secagg_mode mode, size_t count, uint32_t group_size,
                       uint32_t want_groups)
{
    reports r;
    reports_make(&r, count, 1.0, count * 31 + group_size);
    shoal_sim_secagg_config cfg = secagg_config(mode, group_size);
    double sum[DIM];
    uint64_t total_weight = 0;
    shoal_sim_secagg_stats st;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_sim_secagg_sum(&cfg, 7, 1, r.updates, r.weights, r.count, DIM, sum,
                                      &total_weight, &st, &ei),
                 SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(st.groups, want_groups);
    cr_assert_eq(st.groups_failed, 0);
    cr_assert_eq(st.contributors, count);
    uint64_t want_weight = 0;
    for (size_t i = 0; i < count; i++)
        want_weight += r.weights[i];
    cr_assert_eq(total_weight, want_weight);

    shoal_secagg_fixed fx = {.clip = cfg.clip,
                             .max_weight = cfg.max_weight,
                             .max_contributors = group_size ? group_size : (uint32_t)count,
                             .bits = cfg.bits};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
    const double bound = (double)count / fx.scale / (double)want_weight;
    for (size_t k = 0; k < DIM; k++) {
        double plain = 0.0;
        for (size_t i = 0; i < count; i++)
            plain += (double)r.weights[i] * r.values[i * DIM + k];
        double got = sum[k] / (double)total_weight, want = plain / (double)want_weight;
        cr_assert(fabs(got - want) <= bound, "element %zu: %.9g, plain %.9g, bound %.3g", k, got,
                  want, bound);
    }
    reports_free(&r);
}

Test(sim_secagg, one_group_mean_equals_the_plain_weighted_mean_within_the_fixed_point_bound)
{
    check_mean(SHOAL_SIM_SECAGG_FULL, 10, 0, 1);
}

Test(sim_secagg, groups_of_at_most_n_sum_to_the_plain_weighted_mean)
{
    check_mean(SHOAL_SIM_SECAGG_FULL, 10, 4, 3);
}

Test(sim_secagg, secagg_plus_groups_sum_to_the_plain_weighted_mean)
{
    check_mean(SHOAL_SIM_SECAGG_PLUS, 120, 60, 2);
}

Test(sim_secagg, phase_dropouts_are_counted_and_survivors_still_sum)
{
    reports r;
    reports_make(&r, 40, 1.0, 5);
    shoal_sim_secagg_config cfg = secagg_config(SHOAL_SIM_SECAGG_FULL, 0);
    cfg.phase_dropout = 0.05;
    double sum[DIM];
    uint64_t total_weight = 0;
    shoal_sim_secagg_stats st;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_sim_secagg_sum(&cfg, 3, 2, r.updates, r.weights, r.count, DIM, sum,
                                      &total_weight, &st, &ei),
                 SHOAL_OK, "%s", ei.msg);
    uint32_t dropped = 0;
    for (int p = 0; p < SHOAL_SIM_SECAGG_PHASES; p++)
        dropped += st.dropouts[p];
    cr_assert_gt(dropped, 0, "40 devices x 4 phases at 5%%: some drop");
    cr_assert_eq(st.groups_failed, 0);
    /* Those that dropped before sending their masked input are out of the
     * sum; those that dropped after it are still in. */
    uint32_t before_mask = st.dropouts[SHOAL_SECAGG_PHASE_ADVERTISE] +
                           st.dropouts[SHOAL_SECAGG_PHASE_SHARE] +
                           st.dropouts[SHOAL_SECAGG_PHASE_MASK];
    cr_assert_eq(st.contributors, 40 - before_mask);
    cr_assert_gt(total_weight, 0);
    reports_free(&r);
}

Test(sim_secagg, groups_too_small_or_losing_too_many_devices_contribute_nothing)
{
    reports r;
    reports_make(&r, 2, 1.0, 9);
    shoal_sim_secagg_config cfg = secagg_config(SHOAL_SIM_SECAGG_FULL, 0);
    double sum[DIM];
    uint64_t total_weight = 1;
    shoal_sim_secagg_stats st;
    cr_assert_eq(shoal_sim_secagg_sum(&cfg, 1, 1, r.updates, r.weights, r.count, DIM, sum,
                                      &total_weight, &st, NULL),
                 SHOAL_OK);
    cr_assert_eq(total_weight, 0);
    cr_assert_eq(st.groups_failed, 1);
    reports_free(&r);

    reports_make(&r, 10, 1.0, 11);
    cfg.phase_dropout = 0.9;
    cr_assert_eq(shoal_sim_secagg_sum(&cfg, 1, 1, r.updates, r.weights, r.count, DIM, sum,
                                      &total_weight, &st, NULL),
                 SHOAL_OK);
    cr_assert_eq(total_weight, 0);
    cr_assert_eq(st.groups_failed, 1);
    reports_free(&r);
}

Test(sim_secagg, bad_clips_and_rings_that_could_wrap_are_refused_naming_the_flag)
{
    shoal_sim_secagg_config cfg = secagg_config(SHOAL_SIM_SECAGG_FULL, 0);
    shoal_errinfo ei = {{0}};
    const double bad_clips[] = {0.0, -1.0, NAN, INFINITY};
    for (size_t i = 0; i < 4; i++) {
        cfg.clip = bad_clips[i];
        cr_assert_eq(shoal_sim_secagg_check(&cfg, 10, &ei), SHOAL_EINVAL);
        cr_assert(strstr(ei.msg, "secagg-clip"), "%s", ei.msg);
    }
    cfg.clip = 1.0;
    cfg.bits = 16;
    cr_assert_eq(shoal_sim_secagg_check(&cfg, 100, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "secagg-bits"), "%s", ei.msg);
    cfg.bits = 32;
    cr_assert_eq(shoal_sim_secagg_check(&cfg, 100, &ei), SHOAL_OK);
    cfg.group_size = 2;
    cr_assert_eq(shoal_sim_secagg_check(&cfg, 2, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "secagg-group-size"), "%s", ei.msg);
}

/* ---- DP-FedAvg through the aggregator ---------------------------------------- */

/* Four reports of norm 10 S, all along one direction, in a round that
 * expected 10: the mean is 4 S / 10 along it, whatever their weights. */
static void check_dp_mean(shoal_sim_secagg_mode secagg, double tolerance)
{
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.clients = 100;
    cfg.round.goal_count = 10;
    cfg.dp.clip = 0.25;
    cfg.secagg.mode = secagg;
    cr_assert(shoal_sim_aggregates_itself(&cfg));
    shoal_sim_aggregator *a = NULL;
    cr_assert_eq(shoal_sim_aggregator_new(&cfg, DIM, &a), SHOAL_OK);
    float u[DIM];
    for (size_t k = 0; k < DIM; k++)
        u[k] = (k % 2 ? 1.0f : -1.0f) * (float)(10.0 * cfg.dp.clip / sqrt((double)DIM));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(shoal_sim_aggregator_keep(a, 3, (uint32_t)i, 100.0f * (float)(i + 1), u),
                     SHOAL_OK);
    float mean[DIM];
    int formed = 0;
    shoal_sim_aggregation_stats st;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_sim_aggregator_mean(a, 3, mean, &formed, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert(formed);
    const double want = 0.4 * cfg.dp.clip / sqrt((double)DIM);
    for (size_t k = 0; k < DIM; k++)
        cr_assert(fabs(fabs((double)mean[k]) - want) <= tolerance, "element %zu: %.9g, want %.9g",
                  k, (double)mean[k], want);
    double eps, order;
    shoal_sim_aggregator_epsilon(a, &eps, &order);
    cr_assert(isinf(eps), "no noise: epsilon is infinite, got %g", eps);
    shoal_sim_aggregator_free(a);
}

Test(sim_dp, updates_are_clipped_and_the_sum_divided_by_the_expected_count)
{
    check_dp_mean(SHOAL_SIM_SECAGG_OFF, 1e-7);
}

Test(sim_dp, with_secure_aggregation_the_clipped_sum_is_divided_by_the_expected_count)
{
    /* Four inputs of weight 1 each rounded to 1/scale: at most 4/scale off
     * in the sum, 4/(10 scale) in the mean. */
    shoal_sim_config c = shoal_sim_defaults();
    shoal_secagg_fixed fx = {
        .clip = c.secagg.clip, .max_weight = 1, .max_contributors = 4, .bits = c.secagg.bits};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
    check_dp_mean(SHOAL_SIM_SECAGG_FULL, 4.0 / (10.0 * fx.scale) + 1e-7);
}

Test(sim_dp, the_accountant_composes_each_released_round_and_the_budget_stops_the_next)
{
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.clients = 100;
    cfg.round.goal_count = 2;
    cfg.dp.clip = 1.0;
    cfg.dp.noise = 1.1;
    shoal_rdp_accountant ref;
    cr_assert_eq(shoal_rdp_accountant_init(&ref, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&ref, 0.02, 1.1, 2), SHOAL_OK);
    double two_rounds, order;
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&ref, 1e-5, SHOAL_DP_CONVERSION_IMPROVED, &two_rounds, &order),
        SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&ref, 0.02, 1.1, 1), SHOAL_OK);
    double three_rounds;
    cr_assert_eq(shoal_rdp_accountant_epsilon(&ref, 1e-5, SHOAL_DP_CONVERSION_IMPROVED,
                                              &three_rounds, &order),
                 SHOAL_OK);
    /* A budget between two and three rounds' epsilon. */
    cfg.dp.budget = (two_rounds + three_rounds) / 2.0;
    shoal_sim_aggregator *a = NULL;
    cr_assert_eq(shoal_sim_aggregator_new(&cfg, DIM, &a), SHOAL_OK);
    float u[DIM] = {0}, mean[DIM];
    u[0] = 0.5f;
    shoal_sim_aggregation_stats st;
    int formed = 0;
    for (uint64_t round = 1; round <= 2; round++) {
        cr_assert_eq(shoal_sim_aggregator_keep(a, round, 0, 1.0f, u), SHOAL_OK);
        cr_assert_eq(shoal_sim_aggregator_mean(a, round, mean, &formed, &st, NULL), SHOAL_OK);
        cr_assert(formed && !st.over_budget);
    }
    double eps;
    shoal_sim_aggregator_epsilon(a, &eps, &order);
    cr_assert_float_eq(eps, two_rounds, 1e-12 * two_rounds);
    cr_assert_eq(shoal_sim_aggregator_keep(a, 3, 0, 1.0f, u), SHOAL_OK);
    cr_assert_eq(shoal_sim_aggregator_mean(a, 3, mean, &formed, &st, NULL), SHOAL_OK);
    cr_assert(!formed && st.over_budget);
    cr_assert_float_eq(st.next_epsilon, three_rounds, 1e-12 * three_rounds);
    shoal_sim_aggregator_epsilon(a, &eps, &order);
    cr_assert_float_eq(eps, two_rounds, 1e-12 * two_rounds, "nothing released, nothing spent");
    shoal_sim_aggregator_free(a);
}

/* DP-FTRL: rho adds over trees (restart every 2 rounds), each tree's k is
 * the most reports one device made in it, and the budget stops the round
 * whose zCDP epsilon would pass it before anything is released. */
Test(sim_dp, ftrl_counts_each_tree_s_most_reports_of_one_device_and_the_budget_stops)
{
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.clients = 10;
    cfg.round.goal_count = 2;
    cfg.dp.clip = 1.0;
    cfg.dp.noise = 3.0;
    cfg.dp.mechanism = SHOAL_SIM_DP_FTRL;
    cfg.dp.ftrl_restart = 2;
    /* Tree 1: device 0 in both rounds (k = 2); tree 2: round 3 alone (k 1),
     * round 4 with device 5 again (still k 1 in the new tree). */
    static const uint32_t devices[4][2] = {{0, 1}, {0, 2}, {0, 3}, {5, 6}};
    double tree1, three, four, five;
    cr_assert_eq(shoal_dp_tree_rho(2, 3.0, 2, 0, &tree1), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_rho(1, 3.0, 1, 0, &three), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_rho(2, 3.0, 1, 0, &four), SHOAL_OK);
    three += tree1;
    four += tree1;
    double eps_four, eps_five;
    cr_assert_eq(shoal_dp_tree_rho(1, 3.0, 1, 0, &five), SHOAL_OK);
    five += four; /* round 5 opens tree 3 */
    cr_assert_eq(shoal_zcdp_epsilon(four, 1e-5, &eps_four), SHOAL_OK);
    cr_assert_eq(shoal_zcdp_epsilon(five, 1e-5, &eps_five), SHOAL_OK);
    cfg.dp.budget = (eps_four + eps_five) / 2.0;
    cr_assert_eq(shoal_sim_config_check(&cfg, NULL), SHOAL_OK);
    shoal_sim_aggregator *a = NULL;
    cr_assert_eq(shoal_sim_aggregator_new(&cfg, DIM, &a), SHOAL_OK);
    float u[DIM] = {0}, mean[DIM];
    u[0] = 0.5f;
    shoal_sim_aggregation_stats st;
    int formed = 0;
    const double want[4] = {0, tree1, three, four};
    for (uint64_t round = 1; round <= 4; round++) {
        for (int i = 0; i < 2; i++)
            cr_assert_eq(shoal_sim_aggregator_keep(a, round, devices[round - 1][i], 1.0f, u),
                         SHOAL_OK);
        cr_assert_eq(shoal_sim_aggregator_mean(a, round, mean, &formed, &st, NULL), SHOAL_OK);
        cr_assert(formed && !st.over_budget, "round %llu", (unsigned long long)round);
        uint32_t k = 0;
        double rho = shoal_sim_aggregator_rho(a, &k);
        if (round >= 2)
            cr_assert_float_eq(rho, want[round - 1], 1e-12, "round %llu: rho %g",
                               (unsigned long long)round, rho);
        cr_assert_eq(k, round == 2 ? 2u : 1u, "round %llu: k %u", (unsigned long long)round, k);
    }
    double eps, order;
    shoal_sim_aggregator_epsilon(a, &eps, &order);
    cr_assert_float_eq(eps, eps_four, 1e-12 * eps_four);
    cr_assert(isnan(order));
    cr_assert_eq(shoal_sim_aggregator_keep(a, 5, 7, 1.0f, u), SHOAL_OK);
    cr_assert_eq(shoal_sim_aggregator_mean(a, 5, mean, &formed, &st, NULL), SHOAL_OK);
    cr_assert(!formed && st.over_budget);
    cr_assert_float_eq(st.next_epsilon, eps_five, 1e-12 * eps_five);
    cr_assert_float_eq(shoal_sim_aggregator_rho(a, NULL), four, 1e-12, "nothing spent");
    shoal_sim_aggregator_free(a);
}

/* ---- robust aggregation and attackers ------------------------------------------ */

static shoal_sim_aggregator *robust_round(shoal_sim_config *cfg, const reports *r, float *mean)
{
    cr_assert(shoal_sim_aggregates_itself(cfg));
    shoal_sim_aggregator *a = NULL;
    cr_assert_eq(shoal_sim_aggregator_new(cfg, DIM, &a), SHOAL_OK);
    for (size_t i = 0; i < r->count; i++)
        cr_assert_eq(
            shoal_sim_aggregator_keep(a, 5, (uint32_t)i, (float)r->weights[i], r->updates[i]),
            SHOAL_OK);
    int formed = 0;
    shoal_sim_aggregation_stats st;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_sim_aggregator_mean(a, 5, mean, &formed, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert(formed);
    return a;
}

Test(sim_robust, median_and_trimmed_mean_are_the_robust_functions_of_the_round_s_updates)
{
    reports r;
    reports_make(&r, 9, 2.0, 17);
    float scratch[9], want[DIM], got[DIM];
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.robust.aggregator = SHOAL_ROBUST_MEDIAN;
    shoal_sim_aggregator_free(robust_round(&cfg, &r, got));
    cr_assert_eq(shoal_robust_median(r.updates, r.count, DIM, scratch, want), SHOAL_OK);
    cr_assert_eq(memcmp(got, want, sizeof got), 0);

    cfg.robust.aggregator = SHOAL_ROBUST_TRIMMED_MEAN;
    cfg.robust.trim_fraction = 0.25;
    shoal_sim_aggregator_free(robust_round(&cfg, &r, got));
    cr_assert_eq(shoal_robust_trimmed_mean(r.updates, r.count, DIM, 0.25, scratch, want), SHOAL_OK);
    cr_assert_eq(memcmp(got, want, sizeof got), 0);
    reports_free(&r);
}

Test(sim_robust, norm_bounded_clips_each_update_then_takes_the_weighted_mean)
{
    reports r;
    reports_make(&r, 6, 1.0, 23);
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.robust.aggregator = SHOAL_ROBUST_NORM_BOUNDED;
    cfg.robust.norm_bound = 2.0;
    /* One update far outside the bound (an attacker's x100), the others
     * near it: each leaves with norm <= 2. */
    for (size_t k = 0; k < DIM; k++)
        r.values[k] *= 100.0f;
    float got[DIM];
    shoal_sim_aggregator_free(robust_round(&cfg, &r, got));
    double want[DIM] = {0}, total = 0.0;
    for (size_t i = 0; i < r.count; i++) {
        float clipped[DIM];
        memcpy(clipped, r.updates[i], sizeof clipped);
        cr_assert_eq(shoal_robust_clip(clipped, DIM, 2.0, NULL), SHOAL_OK);
        for (size_t k = 0; k < DIM; k++)
            want[k] += (double)r.weights[i] * clipped[k];
        total += r.weights[i];
    }
    for (size_t k = 0; k < DIM; k++)
        cr_assert_float_eq(got[k], want[k] / total, 1e-6, "element %zu", k);
    reports_free(&r);
}

Test(sim_robust, robust_aggregators_are_refused_with_secure_aggregation_naming_the_flags)
{
    shoal_sim_config cfg = shoal_sim_defaults();
    shoal_errinfo ei = {{0}};
    cfg.robust.aggregator = SHOAL_ROBUST_TRIMMED_MEAN;
    cfg.secagg.mode = SHOAL_SIM_SECAGG_PLUS;
    cr_assert_eq(shoal_sim_config_check(&cfg, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "aggregator: trimmed_mean needs every individual update"), "%s",
              ei.msg);
    cfg.secagg.mode = SHOAL_SIM_SECAGG_OFF;
    cfg.robust.trim_fraction = 0.5;
    cr_assert_eq(shoal_sim_config_check(&cfg, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "trim-fraction"), "%s", ei.msg);
    cfg.robust.trim_fraction = 0.1;
    cfg.robust.aggregator = SHOAL_ROBUST_NORM_BOUNDED;
    cr_assert_eq(shoal_sim_config_check(&cfg, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "norm-bound"), "%s", ei.msg);
    cfg.robust.norm_bound = 1.0;
    cr_assert_eq(shoal_sim_config_check(&cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cfg.robust.attackers = 0.2;
    cr_assert_eq(shoal_sim_config_check(&cfg, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "attackers, attack"), "%s", ei.msg);
}

Test(sim_attack, the_attacking_fraction_is_exact_and_each_attack_does_what_it_says)
{
    shoal_sim_config cfg = shoal_sim_defaults();
    cfg.robust.attack = SHOAL_SIM_ATTACK_SCALE;
    const uint32_t populations[] = {10, 100, 997};
    const double fractions[] = {0.2, 0.05, 0.5};
    for (int p = 0; p < 3; p++) {
        cfg.clients = populations[p];
        cfg.robust.attackers = fractions[p];
        uint32_t count = 0;
        for (uint32_t d = 0; d < cfg.clients; d++)
            count += (uint32_t)shoal_sim_device_attacks(&cfg, d);
        double want = fractions[p] * cfg.clients;
        cr_assert(count == (uint32_t)floor(want) || count == (uint32_t)ceil(want),
                  "%u of %u attack, want %g", count, cfg.clients, want);
    }
    float u[DIM], orig[DIM];
    for (size_t k = 0; k < DIM; k++)
        u[k] = orig[k] = 0.01f * (float)k - 1.0f;
    shoal_sim_attack_update(&cfg, 1, u, DIM);
    for (size_t k = 0; k < DIM; k++)
        cr_assert_eq(u[k], orig[k] * 100.0f);
    cfg.robust.attack = SHOAL_SIM_ATTACK_SIGN_FLIP;
    memcpy(u, orig, sizeof u);
    shoal_sim_attack_update(&cfg, 1, u, DIM);
    for (size_t k = 0; k < DIM; k++)
        cr_assert_eq(u[k], -orig[k]);
    cfg.robust.attack = SHOAL_SIM_ATTACK_NOISE;
    shoal_sim_attack_update(&cfg, 1, u, DIM);
    double m = 0.0, v = 0.0;
    for (size_t k = 0; k < DIM; k++)
        m += u[k];
    m /= DIM;
    for (size_t k = 0; k < DIM; k++)
        v += (u[k] - m) * (u[k] - m);
    v /= DIM - 1;
    /* 300 standard normals: sample variance within 30% of 1. */
    cr_assert(fabs(v - 1.0) < 0.3 && fabs(m) < 0.3, "noise mean %g variance %g", m, v);
}
