/* A population's "update_bound" (the largest L2 norm of one update) and
 * "aggregation" (the rule that combines a round's updates): how much one
 * device can move the model (issue 13). */
#include <math.h>

#include "server_config_int.h"

static const char *const bound_keys[] = {"l2_norm", "action", NULL};
static const char *const aggregation_keys[] = {"rule", "trim_fraction", "l2_norm", NULL};

/* In shoal_robust_kind's order. */
static const char *const rules[] = {"mean", "median", "trimmed_mean", "norm_bounded_mean"};

#define L2_NORM_MAX  1e9
#define TRIM_DEFAULT 0.1f

shoal_err shoal_cfg_parse_update_bound(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *ub;
    shoal_err err = shoal_cfg_object(c, pop, "update_bound", 0, bound_keys, &ub);
    if (err || !ub)
        return err;
    static const char *const actions[] = {"clip", "refuse"};
    float l2_norm = 0;
    int action = 0;
    shoal_cfg_push_key(c, "update_bound");
    err = shoal_cfg_float(c, ub, "l2_norm", 1, 0, 1, L2_NORM_MAX, 0, &l2_norm);
    if (!err)
        err = shoal_cfg_choice(c, ub, "action", 0, "update_bound action", actions, 2, &action);
    shoal_cfg_pop(c);
    p->update_bound.enabled = !err;
    p->update_bound.l2_norm = l2_norm;
    p->update_bound.refuse = action == 1;
    return err;
}

/* Median and trimmed mean keep every update of a round: the server must
 * see them one by one, all at once, within the memory cap. */
static shoal_err check_kept_updates(cfg_ctx *c, const shoal_population_config *p)
{
    const char *rule = rules[p->aggregation.rule];
    if (p->secagg.enabled)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "rule \"%s\" needs each device's update, which secure aggregation "
                              "hides from the server; use \"mean\" with update_bound (devices "
                              "clip before masking), or remove secure_aggregation",
                              rule);
    if (p->round.mode != SHOAL_ROUND_SYNC)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "rule \"%s\" needs round.mode \"sync\": it combines the updates of "
                              "one round at once",
                              rule);
    const double reports = ceil((double)p->round.goal_count * p->round.over_selection);
    const double floats = reports * (double)p->param_count;
    if (floats > (double)SHOAL_CONFIG_ROBUST_FLOATS_MAX)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "rule \"%s\" keeps every update of a round: %.0f reports x %zu "
                              "parameters is %.0f floats, above the limit of %llu (%llu MiB); "
                              "lower round.goal_count or over_selection, or use "
                              "\"norm_bounded_mean\"",
                              rule, reports, p->param_count, floats,
                              (unsigned long long)SHOAL_CONFIG_ROBUST_FLOATS_MAX,
                              (unsigned long long)(SHOAL_CONFIG_ROBUST_FLOATS_MAX * 4 >> 20));
    return SHOAL_OK;
}

shoal_err shoal_cfg_parse_aggregation(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *agg;
    p->aggregation.rule = SHOAL_ROBUST_MEAN;
    shoal_err err = shoal_cfg_object(c, pop, "aggregation", 0, aggregation_keys, &agg);
    if (err || !agg)
        return err;
    int rule = 0;
    float trim = TRIM_DEFAULT, l2_norm = 0;
    shoal_cfg_push_key(c, "aggregation");
    err = shoal_cfg_choice(c, agg, "rule", 0, "aggregation rule", rules, 4, &rule);
    const shoal_robust_kind kind = (shoal_robust_kind)rule;
    if (!err && kind == SHOAL_ROBUST_TRIMMED_MEAN)
        err = shoal_cfg_float(c, agg, "trim_fraction", 0, 0, 0, 0.5, 1, &trim);
    else if (!err)
        err = shoal_cfg_refuse_unused(c, agg, "trim_fraction",
                                      "only rule \"trimmed_mean\" uses it; remove it");
    if (!err && kind == SHOAL_ROBUST_NORM_BOUNDED)
        err = shoal_cfg_float(c, agg, "l2_norm", 1, 0, 1, L2_NORM_MAX, 0, &l2_norm);
    else if (!err)
        err = shoal_cfg_refuse_unused(c, agg, "l2_norm",
                                      "only rule \"norm_bounded_mean\" uses it; remove it, or "
                                      "bound every update with the population's update_bound");
    p->aggregation.rule = kind;
    p->aggregation.trim_fraction = trim;
    p->aggregation.l2_norm = l2_norm;
    if (!err && kind == SHOAL_ROBUST_NORM_BOUNDED && p->secagg.enabled)
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "rule \"norm_bounded_mean\" clips each device's update, which "
                             "secure aggregation hides from the server; use \"mean\" with "
                             "update_bound (devices clip before masking)");
    if (!err && (kind == SHOAL_ROBUST_MEDIAN || kind == SHOAL_ROBUST_TRIMMED_MEAN))
        err = check_kept_updates(c, p);
    shoal_cfg_pop(c);
    return err;
}
