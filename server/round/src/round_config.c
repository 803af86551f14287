/* The round engine's configuration: defaults and validation. */
#include <string.h>

#include "round_int.h"

shoal_round_config shoal_round_defaults(shoal_round_mode mode, uint32_t goal_count)
{
    shoal_round_config c;
    memset(&c, 0, sizeof c);
    c.mode = mode;
    c.goal_count = goal_count;
    c.over_selection = 1.3f;
    c.min_report_fraction = 0.8f;
    c.selection_window_ms = 60 * 1000;
    c.reporting_deadline_ms = 10 * 60 * 1000;
    c.weighting = SHOAL_WEIGHT_EXAMPLES;
    c.pipelining = 1;
    c.eval_every = 0;
    c.eval_goal_count = goal_count;
    c.buffer_size = 10;
    c.max_staleness = 0;
    c.staleness_exponent = 0.5f;
    c.retry_min_ms = 10 * 1000;
    c.retry_max_ms = 60 * 60 * 1000;
    c.population_estimate = 0;
    c.server_optim = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVG);
    return c;
}

shoal_err shoal_round_config_check(const shoal_round_config *c, shoal_errinfo *ei)
{
    if (!c)
        return SHOAL_EINVAL;
    if (c->mode != SHOAL_ROUND_SYNC && c->mode != SHOAL_ROUND_ASYNC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "mode: must be sync or async");
    if (c->goal_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "goal_count: must be at least 1");
    if (!(c->over_selection >= 1.0f) || c->over_selection > 100.0f)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "over_selection: must be in [1, 100], got %g",
                                 (double)c->over_selection);
    if (!(c->min_report_fraction > 0.0f) || c->min_report_fraction > 1.0f)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "min_report_fraction: must be in (0, 1], got %g",
                                 (double)c->min_report_fraction);
    if (c->selection_window_ms <= 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "selection_window: must be positive");
    if (c->reporting_deadline_ms <= 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "deadline: must be positive");
    if (c->weighting != SHOAL_WEIGHT_EXAMPLES && c->weighting != SHOAL_WEIGHT_UNIFORM)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "weighting: must be examples or uniform");
    if (c->eval_every && c->eval_goal_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "eval_goal_count: must be at least 1 when eval_every is set");
    if (c->mode == SHOAL_ROUND_ASYNC) {
        if (c->buffer_size == 0)
            return shoal_errinfo_set(ei, SHOAL_EINVAL, "buffer_size: must be at least 1");
        if (!(c->staleness_exponent >= 0.0f) || c->staleness_exponent > 10.0f)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "staleness_exponent: must be in [0, 10], got %g",
                                     (double)c->staleness_exponent);
    }
    if (c->retry_min_ms <= 0 || c->retry_max_ms < c->retry_min_ms)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "retry window: need 0 < retry_min (%lld ms) <= retry_max (%lld ms)",
            (long long)c->retry_min_ms, (long long)c->retry_max_ms);
    if (c->external_aggregation && c->mode != SHOAL_ROUND_SYNC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "external_aggregation: only synchronous rounds support it");
    return shoal_server_optim_config_check(&c->server_optim, ei);
}
