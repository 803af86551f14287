/* A population's "secure_aggregation" object (shoal_secagg_population_config):
 * the group, its ring and fixed-point range, and the SecAgg+ graph chosen
 * for the configured dropout and corruption rates. */
#include <math.h>

#include "server_config_int.h"
#include "shoal/secagg.h"

static const char *const secagg_keys[] = {
    "mode",         "group_size",       "clip",       "bits", "max_weight", "dropout_rate",
    "corrupt_rate", "phase_timeout_ms", "min_groups", NULL};

enum {
    GROUP_DEFAULT = 100,
    GROUP_MAX = 100000,
    BITS_DEFAULT = 32,
    MAX_WEIGHT_DEFAULT = 10000,
    PHASE_TIMEOUT_DEFAULT = 30000,
};

static shoal_err read_rates(cfg_ctx *c, const json_t *sa, shoal_secagg_population_config *s)
{
    float dropout = 0.3f, corrupt = 0.05f;
    shoal_err err = SHOAL_OK;
    if (s->plus) {
        err = shoal_cfg_float(c, sa, "dropout_rate", 0, 0, 0, 1, 1, &dropout);
        if (!err)
            err = shoal_cfg_float(c, sa, "corrupt_rate", 0, 0, 0, 1, 1, &corrupt);
    } else {
        const char *why = "only secagg_plus uses it (secagg connects every pair of devices)";
        err = shoal_cfg_refuse_unused(c, sa, "dropout_rate", why);
        if (!err)
            err = shoal_cfg_refuse_unused(c, sa, "corrupt_rate", why);
    }
    s->dropout_rate = dropout;
    s->corrupt_rate = corrupt;
    return err;
}

/* degree and threshold for the group, then the fixed-point plan. */
static shoal_err choose(cfg_ctx *c, shoal_secagg_population_config *s)
{
    shoal_errinfo inner = {{0}};
    if (s->plus) {
        shoal_secagg_plus_params pp;
        shoal_err err = shoal_secagg_plus_choose(s->group_size, s->dropout_rate, s->corrupt_rate,
                                                 SHOAL_SECAGG_SEMI_HONEST, &pp, &inner);
        if (err == SHOAL_ENOMEM)
            return shoal_cfg_nomem(c);
        if (err)
            return shoal_cfg_fail(c, SHOAL_EINVAL,
                                  "no SecAgg+ graph for group_size %u at dropout_rate %g and "
                                  "corrupt_rate %g (%s); lower the rates, raise group_size, "
                                  "or use mode \"secagg\"",
                                  (unsigned)s->group_size, s->dropout_rate, s->corrupt_rate,
                                  inner.msg);
        s->degree = pp.degree;
        s->threshold = pp.threshold;
    } else {
        s->degree = s->group_size - 1;
        s->threshold = s->group_size / 2 + 1;
    }
    shoal_secagg_fixed fx = {.clip = s->clip,
                             .max_weight = s->max_weight,
                             .max_contributors = s->group_size,
                             .bits = s->bits};
    shoal_err err = shoal_secagg_fixed_plan(&fx, &inner);
    if (err)
        return shoal_cfg_fail(c, SHOAL_EINVAL, "%s", inner.msg);
    return SHOAL_OK;
}

shoal_err shoal_cfg_parse_secagg(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *sa;
    shoal_err err = shoal_cfg_object(c, pop, "secure_aggregation", 0, secagg_keys, &sa);
    if (err || !sa)
        return err;
    static const char *const modes[] = {"secagg", "secagg_plus"};
    shoal_secagg_population_config *s = &p->secagg;
    int mode = 0;
    float clip = 0;
    int64_t timeout = PHASE_TIMEOUT_DEFAULT;
    s->enabled = 1;
    s->group_size = GROUP_DEFAULT;
    s->bits = BITS_DEFAULT;
    s->max_weight = p->max_examples ? p->max_examples : MAX_WEIGHT_DEFAULT;
    s->min_groups = 1;
    shoal_cfg_push_key(c, "secure_aggregation");
    if (p->round.mode != SHOAL_ROUND_SYNC)
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "secure aggregation needs round.mode \"sync\"; a group sums the "
                             "updates of one round");
    if (!err)
        err = shoal_cfg_choice(c, sa, "mode", 1, "secure aggregation mode", modes, 2, &mode);
    s->plus = mode == 1;
    if (!err)
        err = shoal_cfg_u32(c, sa, "group_size", 0, 3, GROUP_MAX, &s->group_size);
    if (!err)
        err = shoal_cfg_float(c, sa, "clip", 1, 0, 1, 1e6, 0, &clip);
    if (!err)
        err = shoal_cfg_u32(c, sa, "bits", 0, 16, 64, &s->bits);
    if (!err)
        err = shoal_cfg_u32(c, sa, "max_weight", 0, 1, UINT32_MAX, &s->max_weight);
    if (!err)
        err = read_rates(c, sa, s);
    if (!err)
        err = shoal_cfg_int(c, sa, "phase_timeout_ms", 0, 1, 3600000, &timeout);
    if (!err)
        err = shoal_cfg_u32(c, sa, "min_groups", 0, 1, GROUP_MAX, &s->min_groups);
    s->clip = clip;
    s->phase_timeout_ms = (uint64_t)timeout;
    if (!err && p->round.reporting_deadline_ms < 5 * timeout)
        err = shoal_cfg_fail(
            c, SHOAL_EINVAL,
            "phase_timeout_ms %lld leaves too little of round.reporting_deadline_ms "
            "%lld: training and the four phases need at least 5 x %lld ms; "
            "raise the deadline or lower the timeout",
            (long long)timeout, (long long)p->round.reporting_deadline_ms, (long long)timeout);
    const double target = ceil((double)p->round.goal_count * p->round.over_selection);
    if (!err && target < 3)
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "a round selects %.0f devices (goal_count x over_selection); a "
                             "secure-aggregation group needs at least 3",
                             target);
    if (!err)
        err = choose(c, s);
    shoal_cfg_pop(c);
    return err;
}
