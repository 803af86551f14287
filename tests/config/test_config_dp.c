/* A population's "differential_privacy": read, defaulted, what it implies
 * for the rest of the population, and every refusal with file:line:col,
 * path and what to do (issue 16). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "config_util.h"
#include "shoal/server_config.h"

/* The round, then members on line 9 (and 10): "differential_privacy"'s
 * value starts at column 31 on the last line. */
#define WITH(ROUND, MEMBER) CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND ",\n      " MEMBER)
#define DP(V)               WITH(ROUND_OK, "\"differential_privacy\": " V)
#define DP_WITH(ROUND, V)   WITH(ROUND, "\"differential_privacy\": " V)
#define DP_OK               "{\"noise_multiplier\": 1.2, \"clip\": 0.5}"

Test(config, differential_privacy_is_read_with_its_defaults)
{
    shoal_server_config *cfg = parse_ok(DP(DP_OK));
    const shoal_population_config *p = &cfg->populations[0];
    cr_assert(p->dp.enabled);
    cr_assert_eq(p->dp.noise_multiplier, 1.2); /* the double as written */
    cr_assert_eq(p->dp.clip, 0.5);
    cr_assert_eq(p->dp.delta, 1e-5);
    cr_assert_eq(p->dp.budget_epsilon, 0);
    cr_assert_eq(p->dp.expected_reports, 10); /* goal_count */
    cr_assert_eq(p->dp.sampling_rate, 1);     /* no population_estimate: q = 1 */
    shoal_server_config_free(cfg);

    cfg = parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK));
    cr_assert_not(cfg->populations[0].dp.enabled);
    cr_assert_eq(cfg->populations[0].round.weighting, SHOAL_WEIGHT_EXAMPLES);
    cr_assert(cfg->populations[0].round.pipelining);
    shoal_server_config_free(cfg);

    cfg = parse_ok(DP_WITH("{\"goal_count\": 10, \"population_estimate\": 2000}",
                           "{\"noise_multiplier\": 1, \"clip\": 2, \"delta\": 1e-7, "
                           "\"budget_epsilon\": 3.5, \"expected_reports\": 40}"));
    p = &cfg->populations[0];
    cr_assert_eq(p->dp.delta, 1e-7);
    cr_assert_eq(p->dp.budget_epsilon, 3.5);
    cr_assert_eq(p->dp.expected_reports, 40);
    cr_assert_eq(p->dp.sampling_rate, 40.0 / 2000.0);
    shoal_server_config_free(cfg);
}

Test(config, differential_privacy_implies_a_refusing_bound_uniform_weights_and_no_pipelining)
{
    shoal_server_config *cfg = parse_ok(DP(DP_OK));
    const shoal_population_config *p = &cfg->populations[0];
    cr_assert(p->update_bound.enabled);
    cr_assert_eq(p->update_bound.l2_norm, 0.5);
    cr_assert(p->update_bound.refuse);
    cr_assert_eq(p->round.weighting, SHOAL_WEIGHT_UNIFORM);
    cr_assert_not(p->round.pipelining);
    shoal_server_config_free(cfg);
    /* Saying the same explicitly is accepted. */
    cfg = parse_ok(WITH("{\"goal_count\": 10, \"weighting\": \"uniform\", \"pipelining\": false}",
                        "\"update_bound\": {\"l2_norm\": 0.5, \"action\": \"refuse\"},\n"
                        "      \"differential_privacy\": " DP_OK));
    cr_assert(cfg->populations[0].dp.enabled);
    shoal_server_config_free(cfg);
    /* Secure aggregation: every device's weight is 1. */
    cfg = parse_ok(DP_WITH("{\"goal_count\": 10},\n      \"secure_aggregation\": {\"mode\": "
                           "\"secagg\", \"clip\": 1}",
                           DP_OK));
    cr_assert_eq(cfg->populations[0].secagg.max_weight, 1u);
    shoal_server_config_free(cfg);
}

Test(config, differential_privacy_field_refusals_name_the_field)
{
    expect_error(DP("{\"clip\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].differential_privacy.noise_multiplier: missing "
                 "required field; expected a number above 0 and at most 1e+06");
    expect_error(DP("{\"noise_multiplier\": 0, \"clip\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:52: populations[0].differential_privacy.noise_multiplier: 0 is "
                 "out of range; expected a number above 0 and at most 1e+06");
    expect_error(DP("{\"noise_multiplier\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].differential_privacy.clip: missing required "
                 "field; expected a number above 0 and at most 1e+09");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": -1}"), SHOAL_EINVAL,
                 "shoal.json:9:63: populations[0].differential_privacy.clip: -1 is out of range; "
                 "expected a number above 0 and at most 1e+09");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": 1, \"delta\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:75: populations[0].differential_privacy.delta: 1 is out of range; "
                 "expected a number above 0 and below 1");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": 1, \"budget_epsilon\": 0}"), SHOAL_EINVAL,
                 "shoal.json:9:84: populations[0].differential_privacy.budget_epsilon: 0 is out "
                 "of range; expected a number above 0 and at most 1e+06");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": 1, \"expected_reports\": 0}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:86: populations[0].differential_privacy.expected_reports: 0 is out "
                 "of range; expected a number above 0 and at most 1e+09");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": 1, \"sigma\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:66: populations[0].differential_privacy.sigma: unknown field "
                 "'sigma'; known fields: mechanism, noise_multiplier, clip, delta, "
                 "budget_epsilon, expected_reports, restart_every, max_participations, "
                 "adaptive_clipping");
}

Test(config, differential_privacy_refuses_what_it_cannot_be_combined_with)
{
    expect_error(DP_WITH("{\"goal_count\": 10, \"mode\": \"async\"}", DP_OK), SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].differential_privacy: differential_privacy "
                 "needs round.mode \"sync\": the noise is added once to each round's sum, and "
                 "FedBuff has no rounds");
    expect_error(WITH(ROUND_OK, "\"aggregation\": {\"rule\": \"median\"},\n"
                                "      \"differential_privacy\": " DP_OK),
                 SHOAL_EINVAL,
                 "shoal.json:10:31: populations[0].differential_privacy: differential_privacy "
                 "cannot be combined with aggregation rule \"median\" (differential_privacy's "
                 "noisy mean of clipped updates is the rule); remove aggregation or use "
                 "\"mean\"");
    expect_error(WITH(ROUND_OK, "\"aggregation\": {\"rule\": \"trimmed_mean\"},\n"
                                "      \"differential_privacy\": " DP_OK),
                 SHOAL_EINVAL,
                 "shoal.json:10:31: populations[0].differential_privacy: differential_privacy "
                 "cannot be combined with aggregation rule \"trimmed_mean\" "
                 "(differential_privacy's noisy mean of clipped updates is the rule); remove "
                 "aggregation or use \"mean\"");
    expect_error(WITH(ROUND_OK, "\"update_bound\": {\"l2_norm\": 0.5},\n"
                                "      \"differential_privacy\": " DP_OK),
                 SHOAL_EINVAL,
                 "shoal.json:10:31: populations[0].differential_privacy: update_bound {l2_norm "
                 "0.5, action \"clip\"} disagrees with differential_privacy, which bounds "
                 "updates to clip 0.5 and refuses larger ones; remove update_bound (DP sets it) "
                 "or make it {\"l2_norm\": 0.5, \"action\": \"refuse\"}");
    expect_error(WITH(ROUND_OK, "\"update_bound\": {\"l2_norm\": 2, \"action\": \"refuse\"},\n"
                                "      \"differential_privacy\": " DP_OK),
                 SHOAL_EINVAL,
                 "shoal.json:10:31: populations[0].differential_privacy: update_bound {l2_norm "
                 "2, action \"refuse\"} disagrees with differential_privacy, which bounds "
                 "updates to clip 0.5 and refuses larger ones; remove update_bound (DP sets it) "
                 "or make it {\"l2_norm\": 0.5, \"action\": \"refuse\"}");
    expect_error(DP_WITH("{\"goal_count\": 10, \"population_estimate\": 5}", DP_OK), SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].differential_privacy: expected_reports 10 is "
                 "above round.population_estimate 5, a sampling rate above 1; lower "
                 "expected_reports or raise the estimate");
}

Test(config, differential_privacy_refuses_an_explicit_contrary_weighting_pipelining_or_weight)
{
    expect_error(DP_WITH("{\"goal_count\": 10, \"weighting\": \"examples\"}", DP_OK), SHOAL_EINVAL,
                 "shoal.json:8:48: populations[0].round.weighting: differential_privacy counts "
                 "every report once, whatever its example count; expected \"uniform\", or no "
                 "weighting");
    expect_error(DP_WITH("{\"goal_count\": 10, \"pipelining\": true}", DP_OK), SHOAL_EINVAL,
                 "shoal.json:8:49: populations[0].round.pipelining: differential_privacy needs "
                 "each round's epsilon before the next round selects devices, so its budget can "
                 "stop it; expected false, or no pipelining");
    expect_error(DP_WITH("{\"goal_count\": 10},\n      \"secure_aggregation\": {\"mode\": "
                         "\"secagg\", \"clip\": 1, \"max_weight\": 100}",
                         DP_OK),
                 SHOAL_EINVAL,
                 "shoal.json:9:73: populations[0].secure_aggregation.max_weight: "
                 "differential_privacy gives every device weight 1; expected 1, or no "
                 "max_weight");
}

Test(config, differential_privacy_ftrl_is_read_with_its_tree)
{
    shoal_server_config *cfg = parse_ok(DP(DP_OK));
    cr_assert_eq(cfg->populations[0].dp.mechanism, SHOAL_DP_MECHANISM_FEDAVG);
    shoal_server_config_free(cfg);
    cfg = parse_ok(DP("{\"mechanism\": \"ftrl\", \"noise_multiplier\": 4, \"clip\": 1}"));
    const shoal_dp_population_config *dp = &cfg->populations[0].dp;
    cr_assert_eq(dp->mechanism, SHOAL_DP_MECHANISM_FTRL);
    cr_assert_eq(dp->restart_every, 0u);
    cr_assert_eq(dp->max_participations, 1u);
    cr_assert(cfg->populations[0].update_bound.refuse, "ftrl clips like fedavg");
    shoal_server_config_free(cfg);
    cfg = parse_ok(DP("{\"mechanism\": \"ftrl\", \"noise_multiplier\": 4, \"clip\": 1, "
                      "\"restart_every\": 64, \"max_participations\": 2}"));
    dp = &cfg->populations[0].dp;
    cr_assert_eq(dp->restart_every, 64u);
    cr_assert_eq(dp->max_participations, 2u);
    shoal_server_config_free(cfg);
}

Test(config, differential_privacy_ftrl_refusals_name_the_field)
{
    expect_error(DP("{\"mechanism\": \"tree\", \"noise_multiplier\": 1, \"clip\": 1}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:45: populations[0].differential_privacy.mechanism: unknown "
                 "differential_privacy mechanism 'tree'; expected one of: fedavg, ftrl");
    expect_error(DP("{\"noise_multiplier\": 1, \"clip\": 1, \"restart_every\": 10}"), SHOAL_EINVAL,
                 "shoal.json:9:66: populations[0].differential_privacy.restart_every: only DP-FTRL "
                 "has a tree; set \"mechanism\": \"ftrl\" or remove it");
    expect_error(DP("{\"mechanism\": \"fedavg\", \"noise_multiplier\": 1, \"clip\": 1, "
                    "\"max_participations\": 1}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:89: populations[0].differential_privacy.max_participations: only "
                 "DP-FTRL has a tree; set \"mechanism\": \"ftrl\" or remove it");
    expect_error(DP("{\"mechanism\": \"ftrl\", \"noise_multiplier\": 1, \"clip\": 1, "
                    "\"restart_every\": 4294967296}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:104: populations[0].differential_privacy.restart_every: 4294967296 "
                 "is out of range; expected an integer from 0 to 2147483648");
    expect_error(DP("{\"mechanism\": \"ftrl\", \"noise_multiplier\": 1, \"clip\": 1, "
                    "\"max_participations\": 0}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:109: populations[0].differential_privacy.max_participations: 0 is "
                 "out of range; expected an integer from 1 to 1000000");
}

/* ---- adaptive clipping (Andrew et al. 2021) ------------------------------------ */

#define ADAPTIVE(FIELDS)                                                                           \
    DP("{\"noise_multiplier\": 0.8, \"clip\": 0.5, \"adaptive_clipping\": {" FIELDS "}}")

Test(config, differential_privacy_adaptive_clipping_is_read_with_its_defaults)
{
    shoal_server_config *cfg = parse_ok(ADAPTIVE("\"target_quantile\": 0.5"));
    const shoal_dp_population_config *dp = &cfg->populations[0].dp;
    cr_assert(dp->adaptive.enabled);
    cr_assert_eq(dp->adaptive.target_quantile, 0.5);
    cr_assert_eq(dp->adaptive.learning_rate, 0.2);
    cr_assert_eq(dp->adaptive.count_noise, 0.5); /* expected_reports 10 / 20 */
    /* z_u = (0.8^-2 - (2 x 0.5)^-2)^-1/2 = (1.5625 - 1)^-1/2 */
    cr_assert_float_eq(dp->adaptive.update_noise, 1.0 / sqrt(0.5625), 1e-12);
    /* The first round's clip is the bound the plan starts from. */
    cr_assert_eq(dp->clip, 0.5);
    cr_assert(cfg->populations[0].update_bound.refuse);
    cr_assert_eq(cfg->populations[0].update_bound.l2_norm, 0.5);
    shoal_server_config_free(cfg);

    cfg = parse_ok(DP("{\"noise_multiplier\": 1.2, \"clip\": 0.1, \"expected_reports\": 100, "
                      "\"adaptive_clipping\": {\"target_quantile\": 0.8, \"learning_rate\": 0.5, "
                      "\"count_noise\": 5}}"));
    dp = &cfg->populations[0].dp;
    cr_assert_eq(dp->adaptive.target_quantile, 0.8);
    cr_assert_eq(dp->adaptive.learning_rate, 0.5);
    cr_assert_eq(dp->adaptive.count_noise, 5.0);
    cr_assert_float_eq(dp->adaptive.update_noise, 1.0 / sqrt(1.0 / 1.44 - 1.0 / 100.0), 1e-12);
    shoal_server_config_free(cfg);

    cfg = parse_ok(DP(DP_OK));
    cr_assert_not(cfg->populations[0].dp.adaptive.enabled);
    shoal_server_config_free(cfg);
}

Test(config, differential_privacy_adaptive_clipping_refusals_name_the_field)
{
    expect_error(ADAPTIVE(""), SHOAL_EINVAL,
                 "shoal.json:9:91: populations[0].differential_privacy.adaptive_clipping."
                 "target_quantile: missing required field; expected a number above 0 and below 1");
    expect_error(ADAPTIVE("\"target_quantile\": 1"), SHOAL_EINVAL,
                 "shoal.json:9:111: populations[0].differential_privacy.adaptive_clipping."
                 "target_quantile: 1 is out of range; expected a number above 0 and below 1");
    expect_error(ADAPTIVE("\"target_quantile\": 0.5, \"learning_rate\": 0"), SHOAL_EINVAL,
                 "shoal.json:9:133: populations[0].differential_privacy.adaptive_clipping."
                 "learning_rate: 0 is out of range; expected a number above 0 and at most 10");
    expect_error(ADAPTIVE("\"target_quantile\": 0.5, \"count_noise\": 0"), SHOAL_EINVAL,
                 "shoal.json:9:131: populations[0].differential_privacy.adaptive_clipping."
                 "count_noise: 0 is out of range; expected a number above 0 and at most 1e+06");
    expect_error(ADAPTIVE("\"target_quantile\": 0.5, \"eta\": 0.2"), SHOAL_EINVAL,
                 "shoal.json:9:116: populations[0].differential_privacy.adaptive_clipping.eta: "
                 "unknown field 'eta'; known fields: target_quantile, learning_rate, "
                 "count_noise");
    /* The count's noise must leave the update part of z. */
    expect_error(ADAPTIVE("\"target_quantile\": 0.5, \"count_noise\": 0.4"), SHOAL_EINVAL,
                 "shoal.json:9:131: populations[0].differential_privacy.adaptive_clipping."
                 "count_noise: count_noise 0.4 is not above half of noise_multiplier 0.8: the "
                 "count of unclipped updates would take all of the privacy z allows; raise "
                 "count_noise above 0.4, or lower noise_multiplier");
    expect_error(DP("{\"noise_multiplier\": 1.2, \"clip\": 0.5, \"adaptive_clipping\": "
                    "{\"target_quantile\": 0.5}}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:91: populations[0].differential_privacy.adaptive_clipping: "
                 "count_noise 0.5 (expected_reports / 20) is not above half of noise_multiplier "
                 "1.2: the count of unclipped updates would take all of the privacy z allows; "
                 "raise count_noise above 0.6, or lower noise_multiplier");
}

Test(config, differential_privacy_adaptive_clipping_refuses_ftrl_and_an_explicit_bound)
{
    expect_error(DP("{\"mechanism\": \"ftrl\", \"noise_multiplier\": 0.8, \"clip\": 0.5, "
                    "\"adaptive_clipping\": {\"target_quantile\": 0.5}}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:112: populations[0].differential_privacy.adaptive_clipping: "
                 "adaptive clipping moves the clip every round, and a DP-FTRL tree's node noise "
                 "(z x clip) is fixed when the tree starts; use \"mechanism\": \"fedavg\" or "
                 "remove adaptive_clipping");
    expect_error(WITH(ROUND_OK, "\"update_bound\": {\"l2_norm\": 0.5, \"action\": \"refuse\"},\n"
                                "      \"differential_privacy\": {\"noise_multiplier\": 0.8, "
                                "\"clip\": 0.5, \"adaptive_clipping\": {\"target_quantile\": "
                                "0.5}}"),
                 SHOAL_EINVAL,
                 "shoal.json:10:31: populations[0].differential_privacy: update_bound disagrees "
                 "with differential_privacy.adaptive_clipping, which moves the bound to each "
                 "round's clip and refuses larger updates; remove update_bound");
    /* What DP refuses, adaptive clipping refuses with it: FedBuff and the
     * robust rules. */
    expect_error(DP_WITH("{\"goal_count\": 10, \"mode\": \"async\"}",
                         "{\"noise_multiplier\": 0.8, \"clip\": 0.5, \"adaptive_clipping\": "
                         "{\"target_quantile\": 0.5}}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].differential_privacy: differential_privacy "
                 "needs round.mode \"sync\": the noise is added once to each round's sum, and "
                 "FedBuff has no rounds");
}
