/* A population's "update_bound" and "aggregation": read, defaulted, and
 * refused with file:line:col, path and what to do (issue 13). */
#include <criterion/criterion.h>
#include <string.h>

#include "config_util.h"
#include "shoal/server_config.h"

/* The round, then one more member on line 9 whose value starts at
 * column 23 for "update_bound" and 22 for "aggregation". */
#define WITH(ROUND, MEMBER) CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND ",\n      " MEMBER)
#define BOUND(V)            WITH(ROUND_OK, "\"update_bound\": " V)
#define AGG(ROUND, V)       WITH(ROUND, "\"aggregation\": " V)

Test(config, update_bound_is_read_with_clip_by_default)
{
    shoal_server_config *cfg = parse_ok(BOUND("{\"l2_norm\": 2.5}"));
    const shoal_update_bound_config *b = &cfg->populations[0].update_bound;
    cr_assert(b->enabled);
    cr_assert_float_eq(b->l2_norm, 2.5, 0);
    cr_assert_not(b->refuse);
    shoal_server_config_free(cfg);
    cfg = parse_ok(BOUND("{\"l2_norm\": 1, \"action\": \"refuse\"}"));
    cr_assert(cfg->populations[0].update_bound.refuse);
    shoal_server_config_free(cfg);
    cfg = parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK));
    cr_assert_not(cfg->populations[0].update_bound.enabled);
    cr_assert_eq(cfg->populations[0].aggregation.rule, SHOAL_ROBUST_MEAN);
    shoal_server_config_free(cfg);
}

Test(config, update_bound_refusals_name_the_field)
{
    expect_error(BOUND("{}"), SHOAL_EINVAL,
                 "shoal.json:9:23: populations[0].update_bound.l2_norm: missing required field; "
                 "expected a number above 0 and at most 1e+09");
    expect_error(BOUND("{\"l2_norm\": 0}"), SHOAL_EINVAL,
                 "shoal.json:9:35: populations[0].update_bound.l2_norm: 0 is out of range; "
                 "expected a number above 0 and at most 1e+09");
    expect_error(BOUND("{\"l2_norm\": 1, \"action\": \"drop\"}"), SHOAL_EINVAL,
                 "shoal.json:9:48: populations[0].update_bound.action: unknown update_bound "
                 "action 'drop'; expected one of: clip, refuse");
    expect_error(BOUND("{\"l2_norm\": 1, \"norm\": 2}"), SHOAL_EINVAL,
                 "shoal.json:9:38: populations[0].update_bound.norm: unknown field 'norm'; known "
                 "fields: l2_norm, action");
}

Test(config, aggregation_rules_and_their_parameters_are_read)
{
    shoal_server_config *cfg = parse_ok(AGG(ROUND_OK, "{\"rule\": \"trimmed_mean\"}"));
    const shoal_aggregation_config *a = &cfg->populations[0].aggregation;
    cr_assert_eq(a->rule, SHOAL_ROBUST_TRIMMED_MEAN);
    cr_assert_float_eq(a->trim_fraction, 0.1, 1e-7);
    shoal_server_config_free(cfg);
    cfg = parse_ok(AGG(ROUND_OK, "{\"rule\": \"trimmed_mean\", \"trim_fraction\": 0.25}"));
    cr_assert_float_eq(cfg->populations[0].aggregation.trim_fraction, 0.25, 0);
    shoal_server_config_free(cfg);
    cfg = parse_ok(AGG(ROUND_OK, "{\"rule\": \"median\"}"));
    cr_assert_eq(cfg->populations[0].aggregation.rule, SHOAL_ROBUST_MEDIAN);
    shoal_server_config_free(cfg);
    cfg = parse_ok(AGG(ROUND_OK, "{\"rule\": \"norm_bounded_mean\", \"l2_norm\": 3}"));
    cr_assert_eq(cfg->populations[0].aggregation.rule, SHOAL_ROBUST_NORM_BOUNDED);
    cr_assert_float_eq(cfg->populations[0].aggregation.l2_norm, 3, 0);
    shoal_server_config_free(cfg);
}

#define SA_ROUND                                                                                   \
    "{\"goal_count\": 10},\n      \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1}"

Test(config, aggregation_refusals_name_the_field_and_what_to_do)
{
    expect_error(AGG(ROUND_OK, "{\"rule\": \"mode\"}"), SHOAL_EINVAL,
                 "shoal.json:9:31: populations[0].aggregation.rule: unknown aggregation rule "
                 "'mode'; expected one of: mean, median, trimmed_mean, norm_bounded_mean");
    expect_error(AGG(ROUND_OK, "{\"rule\": \"trimmed_mean\", \"trim_fraction\": 0.5}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:64: populations[0].aggregation.trim_fraction: 0.5 is out of "
                 "range; expected a number of at least 0 and below 0.5");
    expect_error(AGG(ROUND_OK, "{\"rule\": \"median\", \"trim_fraction\": 0.2}"), SHOAL_EINVAL,
                 "shoal.json:9:41: populations[0].aggregation.trim_fraction: only rule "
                 "\"trimmed_mean\" uses it; remove it");
    expect_error(AGG(ROUND_OK, "{\"rule\": \"norm_bounded_mean\"}"), SHOAL_EINVAL,
                 "shoal.json:9:22: populations[0].aggregation.l2_norm: missing required field; "
                 "expected a number above 0 and at most 1e+09");
    expect_error(AGG(SA_ROUND, "{\"rule\": \"median\"}"), SHOAL_EINVAL,
                 "shoal.json:10:22: populations[0].aggregation: rule \"median\" needs each "
                 "device's update, which secure aggregation hides from the server; use \"mean\" "
                 "with update_bound (devices clip before masking), or remove secure_aggregation");
    expect_error(AGG(SA_ROUND, "{\"rule\": \"trimmed_mean\"}"), SHOAL_EINVAL,
                 "shoal.json:10:22: populations[0].aggregation: rule \"trimmed_mean\" needs each "
                 "device's update, which secure aggregation hides from the server; use \"mean\" "
                 "with update_bound (devices clip before masking), or remove secure_aggregation");
    expect_error(AGG("{\"goal_count\": 10, \"mode\": \"async\"}", "{\"rule\": \"median\"}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:22: populations[0].aggregation: rule \"median\" needs round.mode "
                 "\"sync\": it combines the updates of one round at once");
    expect_error(AGG("{\"goal_count\": 3000}", "{\"rule\": \"median\"}"), SHOAL_EINVAL,
                 "shoal.json:9:22: populations[0].aggregation: rule \"median\" keeps every "
                 "update of a round: 3900 reports x 199210 parameters is 776919000 floats, above "
                 "the limit of 268435456 (1024 MiB); lower round.goal_count or over_selection, "
                 "or use \"norm_bounded_mean\"");
}
