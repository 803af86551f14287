/* A population's "differential_privacy": DP-FedAvg on the server (issue
 * 16). Read last, because it decides the update bound, the weighting,
 * pipelining and secure aggregation's weight, and checks what the file says
 * about them. */
#include <math.h>
#include <string.h>

#include "server_config_int.h"
#include "shoal/round_dp.h"

static const char *const dp_keys[] = {"mechanism",
                                      "noise_multiplier",
                                      "clip",
                                      "delta",
                                      "budget_epsilon",
                                      "expected_reports",
                                      "restart_every",
                                      "max_participations",
                                      "adaptive_clipping",
                                      NULL};
static const char *const adaptive_keys[] = {"target_quantile", "learning_rate", "count_noise",
                                            NULL};

#define DELTA_DEFAULT      1e-5
#define NOISE_MAX          1e6
#define CLIP_MAX           1e9
#define BUDGET_MAX         1e6
#define EXPECTED_MAX       1e9
#define RESTART_MAX        (1ll << 31) /* shoal_dp_tree_init's limit */
#define PARTICIPATIONS_MAX 1000000
#define RATE_DEFAULT       0.2  /* eta: Andrew et al. 2021, section 3 */
#define RATE_MAX           10.0 /* the simulator's bound */
#define COUNT_NOISE_PER    20.0 /* sigma_b = expected_reports / 20, their choice */
#define CLIP_IS_THE_RULE   "differential_privacy's noisy mean of clipped updates is the rule"

/* A number checked by shoal_cfg_float (type, range, position), kept as
 * the double the file wrote: the accountant's inputs are not rounded to
 * float. */
static shoal_err read_double(cfg_ctx *c, const json_t *obj, const char *key, int required,
                             double lo, int lo_open, double hi, int hi_open, double *out)
{
    float checked = 0;
    shoal_err err = shoal_cfg_float(c, obj, key, required, lo, lo_open, hi, hi_open, &checked);
    const json_t *v = json_object_get(obj, key);
    if (!err && v)
        *out = json_number_value(v);
    return err;
}

/* Fails at pop.<section>.<key> (the member as written). */
static shoal_err fail_at(cfg_ctx *c, const char *section, const char *key, const char *why)
{
    shoal_cfg_push_key(c, section);
    shoal_cfg_push_key(c, key);
    shoal_err err = shoal_cfg_fail(c, SHOAL_EINVAL, "%s", why);
    shoal_cfg_pop(c);
    shoal_cfg_pop(c);
    return err;
}

/* What DP decides for the rest of the population, where the file did not
 * say it otherwise. */
static shoal_err check_implied(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    const json_t *round = json_object_get(pop, "round");
    const json_t *weighting = json_object_get(round, "weighting");
    if (weighting && json_is_string(weighting) &&
        strcmp(json_string_value(weighting), "uniform") != 0)
        return fail_at(c, "round", "weighting",
                       "differential_privacy counts every report once, whatever its example "
                       "count; expected \"uniform\", or no weighting");
    const json_t *pipelining = json_object_get(round, "pipelining");
    if (json_is_true(pipelining))
        return fail_at(c, "round", "pipelining",
                       "differential_privacy needs each round's epsilon before the next round "
                       "selects devices, so its budget can stop it; expected false, or no "
                       "pipelining");
    const json_t *sa = json_object_get(pop, "secure_aggregation");
    const json_t *max_weight = json_object_get(sa, "max_weight");
    if (p->secagg.enabled && max_weight && json_integer_value(max_weight) != 1)
        return fail_at(c, "secure_aggregation", "max_weight",
                       "differential_privacy gives every device weight 1; expected 1, or no "
                       "max_weight");
    p->round.weighting = SHOAL_WEIGHT_UNIFORM;
    p->round.pipelining = 0;
    if (p->secagg.enabled)
        p->secagg.max_weight = 1;
    return SHOAL_OK;
}

static shoal_err check_combinations(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    shoal_dp_population_config *dp = &p->dp;
    if (p->round.mode != SHOAL_ROUND_SYNC)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "differential_privacy needs round.mode \"sync\": the noise is "
                              "added once to each round's sum, and FedBuff has no rounds");
    if (p->aggregation.rule != SHOAL_ROBUST_MEAN) {
        static const char *const rules[] = {"mean", "median", "trimmed_mean", "norm_bounded_mean"};
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "differential_privacy cannot be combined with aggregation rule "
                              "\"%s\" (" CLIP_IS_THE_RULE "); remove aggregation or use "
                              "\"mean\"",
                              rules[p->aggregation.rule]);
    }
    if (p->update_bound.enabled && dp->adaptive.enabled)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "update_bound disagrees with differential_privacy.adaptive_clipping, "
                              "which moves the bound to each round's clip and refuses larger "
                              "updates; remove update_bound");
    if (p->update_bound.enabled && (p->update_bound.l2_norm != dp->clip || !p->update_bound.refuse))
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "update_bound {l2_norm %g, action \"%s\"} disagrees with "
                              "differential_privacy, which bounds updates to clip %g and refuses "
                              "larger ones; remove update_bound (DP sets it) or make it "
                              "{\"l2_norm\": %g, \"action\": \"refuse\"}",
                              p->update_bound.l2_norm, p->update_bound.refuse ? "refuse" : "clip",
                              dp->clip, dp->clip);
    const double estimate = (double)p->round.population_estimate;
    if (estimate > 0 && estimate < dp->expected_reports)
        return shoal_cfg_fail(c, SHOAL_EINVAL,
                              "expected_reports %g is above round.population_estimate %.0f, a "
                              "sampling rate above 1; lower expected_reports or raise the "
                              "estimate",
                              dp->expected_reports, estimate);
    return SHOAL_OK;
}

/* "mechanism" and DP-FTRL's tree: restart_every and max_participations,
 * which DP-FedAvg refuses. */
static shoal_err parse_ftrl(cfg_ctx *c, const json_t *obj, shoal_dp_population_config *dp)
{
    static const char *const mechanisms[] = {"fedavg", "ftrl"};
    int mechanism = 0;
    shoal_err err = shoal_cfg_choice(c, obj, "mechanism", 0, "differential_privacy mechanism",
                                     mechanisms, 2, &mechanism);
    if (err)
        return err;
    dp->mechanism = (shoal_dp_mechanism)mechanism;
    dp->max_participations = 1;
    if (dp->mechanism != SHOAL_DP_MECHANISM_FTRL) {
        static const char *const ftrl_only[] = {"restart_every", "max_participations"};
        for (int i = 0; i < 2; i++)
            if ((err = shoal_cfg_refuse_unused(c, obj, ftrl_only[i],
                                               "only DP-FTRL has a tree; set \"mechanism\": "
                                               "\"ftrl\" or remove it")))
                return err;
        return SHOAL_OK;
    }
    int64_t restart = 0;
    if ((err = shoal_cfg_int(c, obj, "restart_every", 0, 0, RESTART_MAX, &restart)))
        return err;
    dp->restart_every = (uint64_t)restart;
    return shoal_cfg_u32(c, obj, "max_participations", 0, 1, PARTICIPATIONS_MAX,
                         &dp->max_participations);
}

/* "adaptive_clipping" (Andrew, Thakkar, McMahan, Ramaswamy 2021): DP-FedAvg
 * only, and a count noise that leaves the update part of z (their
 * theorem 1, shoal_round_dp_adaptive_update_noise). */
static shoal_err parse_adaptive(cfg_ctx *c, const json_t *obj, shoal_dp_population_config *dp)
{
    json_t *ac;
    shoal_err err = shoal_cfg_object(c, obj, "adaptive_clipping", 0, adaptive_keys, &ac);
    if (err || !ac)
        return err;
    shoal_dp_adaptive_config *a = &dp->adaptive;
    shoal_cfg_push_key(c, "adaptive_clipping");
    if (dp->mechanism != SHOAL_DP_MECHANISM_FEDAVG) {
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "adaptive clipping moves the clip every round, and a DP-FTRL tree's "
                             "node noise (z x clip) is fixed when the tree starts; use "
                             "\"mechanism\": \"fedavg\" or remove adaptive_clipping");
        shoal_cfg_pop(c);
        return err;
    }
    a->learning_rate = RATE_DEFAULT;
    a->count_noise = dp->expected_reports / COUNT_NOISE_PER;
    err = read_double(c, ac, "target_quantile", 1, 0, 1, 1, 1, &a->target_quantile);
    if (!err)
        err = read_double(c, ac, "learning_rate", 0, 0, 1, RATE_MAX, 0, &a->learning_rate);
    if (!err)
        err = read_double(c, ac, "count_noise", 0, 0, 1, NOISE_MAX, 0, &a->count_noise);
    shoal_errinfo inner = {{0}};
    if (!err && shoal_round_dp_adaptive_update_noise(dp->noise_multiplier, a->count_noise,
                                                     &a->update_noise, &inner) != SHOAL_OK) {
        const int given = json_object_get(ac, "count_noise") != NULL;
        if (given)
            shoal_cfg_push_key(c, "count_noise");
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "count_noise %g%s is not above half of noise_multiplier %g: the "
                             "count of unclipped updates would take all of the privacy z "
                             "allows; raise count_noise above %g, or lower noise_multiplier",
                             a->count_noise, given ? "" : " (expected_reports / 20)",
                             dp->noise_multiplier, dp->noise_multiplier / 2);
        if (given)
            shoal_cfg_pop(c);
    }
    shoal_cfg_pop(c);
    a->enabled = !err;
    return err;
}

shoal_err shoal_cfg_parse_dp(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *obj;
    shoal_err err = shoal_cfg_object(c, pop, "differential_privacy", 0, dp_keys, &obj);
    if (err || !obj)
        return err;
    shoal_dp_population_config *dp = &p->dp;
    float clip = 0;
    dp->delta = DELTA_DEFAULT;
    dp->expected_reports = (double)p->round.goal_count;
    shoal_cfg_push_key(c, "differential_privacy");
    err = read_double(c, obj, "noise_multiplier", 1, 0, 1, NOISE_MAX, 0, &dp->noise_multiplier);
    /* S as devices see it in the plan (a float), so that the server's
     * bound and the sensitivity are the same number. */
    if (!err)
        err = shoal_cfg_float(c, obj, "clip", 1, 0, 1, CLIP_MAX, 0, &clip);
    dp->clip = clip;
    if (!err)
        err = read_double(c, obj, "delta", 0, 0, 1, 1, 1, &dp->delta);
    if (!err)
        err = read_double(c, obj, "budget_epsilon", 0, 0, 1, BUDGET_MAX, 0, &dp->budget_epsilon);
    if (!err)
        err = read_double(c, obj, "expected_reports", 0, 0, 1, EXPECTED_MAX, 0,
                          &dp->expected_reports);
    if (!err)
        err = parse_ftrl(c, obj, dp);
    if (!err)
        err = parse_adaptive(c, obj, dp);
    if (!err)
        err = check_combinations(c, pop, p);
    shoal_cfg_pop(c);
    if (!err)
        err = check_implied(c, pop, p);
    if (err)
        return err;
    const double estimate = (double)p->round.population_estimate;
    dp->sampling_rate = estimate > 0 ? dp->expected_reports / estimate : 1.0;
    dp->enabled = 1;
    p->update_bound.enabled = 1;
    p->update_bound.l2_norm = dp->clip;
    p->update_bound.refuse = 1;
    return SHOAL_OK;
}
