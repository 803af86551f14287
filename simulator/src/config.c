/* The simulator's configuration: its defaults and the checks of every
 * field and combination, with the shoal-sim flag named in each error. */
#include <math.h>
#include <string.h>

#include "aggregate_int.h"
#include "shoal/round_dp.h"
#include "shoal/sim.h"

shoal_sim_config shoal_sim_defaults(void)
{
    shoal_sim_config c;
    memset(&c, 0, sizeof c);
    c.model = SHOAL_MODEL_CNN;
    c.partition = shoal_partition_defaults(SHOAL_PARTITION_IID);
    c.clients = 100;
    c.round = shoal_round_defaults(SHOAL_ROUND_SYNC, 10);
    c.round.selection_window_ms = 60 * 1000;
    c.round.reporting_deadline_ms = 60 * 60 * 1000;
    c.round.retry_min_ms = 60 * 1000;
    c.round.retry_max_ms = 6 * 3600 * 1000;
    c.rounds = 50;
    c.train.epochs = 1;
    c.train.batch = 64;
    c.train.optim = shoal_optim_defaults(SHOAL_OPTIM_MOMENTUM, 0.01f);
    c.avail_start_hour = 22.0;
    c.avail_hours = 8.0;
    c.avail_extra = 0.3;
    c.compute_mflops = 2000.0;
    c.bandwidth_kbps = 4000.0;
    c.speed_sigma = 0.5;
    c.dropout = 0.05;
    c.test_every = 1;
    c.threads = 1;
    c.seed = 1;
    c.max_sim_hours = 24.0 * 365.0;
    c.secagg.clip = 1.0;
    c.secagg.bits = 32;
    c.secagg.max_weight = 1000;
    c.secagg.dropout_rate = 0.1;
    c.secagg.corrupt_rate = 0.1;
    c.dp.delta = 1e-5;
    c.dp.adaptive_rate = 0.2;
    c.robust.trim_fraction = 0.1;
    return c;
}

double shoal_sim_dp_count_noise(const shoal_sim_config *c)
{
    return c->dp.adaptive_count_noise > 0.0 ? c->dp.adaptive_count_noise
                                            : (double)c->round.goal_count / 20.0;
}

/* Adaptive clipping: its flags, and a count noise that leaves the update
 * some of the noise multiplier. */
static shoal_err check_adaptive(const shoal_sim_config *c, shoal_errinfo *ei)
{
    const shoal_sim_dp_config *dp = &c->dp;
    if (dp->adaptive_quantile == 0.0)
        return SHOAL_OK;
    if (!(dp->adaptive_quantile > 0.0 && dp->adaptive_quantile < 1.0))
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "dp-adaptive-quantile: must be in (0, 1) (0: a fixed clip), got %g",
            dp->adaptive_quantile);
    if (!(dp->adaptive_rate > 0.0 && dp->adaptive_rate <= 10.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "dp-adaptive-rate: must be in (0, 10], got %g",
                                 dp->adaptive_rate);
    if (!(dp->adaptive_count_noise >= 0.0) || !isfinite(dp->adaptive_count_noise))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp-adaptive-count-noise: must be >= 0 (0: clients-per-round / "
                                 "20), got %g",
                                 dp->adaptive_count_noise);
    if (dp->mechanism != SHOAL_SIM_DP_FEDAVG)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp-adaptive-quantile: only with --dp-mechanism fedavg (a DP-FTRL "
                                 "tree's node noise is fixed when it starts)");
    double z_update = 0;
    shoal_errinfo inner = {{0}};
    if (dp->noise > 0.0 && shoal_round_dp_adaptive_update_noise(
                               dp->noise, shoal_sim_dp_count_noise(c), &z_update, &inner))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "dp-adaptive-count-noise: %s", inner.msg);
    return SHOAL_OK;
}

shoal_err shoal_sim_config_check(const shoal_sim_config *c, shoal_errinfo *ei)
{
    if (!c)
        return SHOAL_EINVAL;
    if (c->clients == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "clients: must be at least 1");
    if (c->rounds == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "rounds: must be at least 1");
    if (c->round.mode == SHOAL_ROUND_SYNC && c->round.goal_count > c->clients)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "clients-per-round: %u is more than the %u clients",
                                 c->round.goal_count, c->clients);
    if (c->round.mode == SHOAL_ROUND_SYNC &&
        (double)c->round.goal_count * c->round.min_report_fraction > c->clients)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "clients-per-round: too large");
    if (c->round.mode == SHOAL_ROUND_ASYNC && c->round.buffer_size > c->clients)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "buffer-size: %u is more than the %u clients",
                                 c->round.buffer_size, c->clients);
    if (!(c->avail_hours > 0.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "avail-hours: must be positive");
    if (!(c->avail_extra >= 0.0 && c->avail_extra <= 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "avail-extra: must be in [0, 1]");
    if (!(c->compute_mflops > 0.0) || !(c->bandwidth_kbps > 0.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "compute-mflops, bandwidth-kbps: must be positive");
    if (!(c->speed_sigma >= 0.0 && c->speed_sigma <= 5.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "speed-sigma: must be in [0, 5]");
    if (!(c->dropout >= 0.0 && c->dropout < 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "dropout: must be in [0, 1)");
    if (c->test_every == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "test-every: must be at least 1");
    if (c->round.eval_every &&
        (double)c->round.eval_goal_count * c->round.min_report_fraction > c->clients)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "eval-clients: %u is more than the %u clients can provide",
                                 c->round.eval_goal_count, c->clients);
    const int64_t month_ms = 31LL * 24 * 3600 * 1000;
    if (c->round.selection_window_ms > month_ms || c->round.reporting_deadline_ms > month_ms)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "selection-window, deadline: at most 31 days");
    if (c->round.retry_max_ms > month_ms)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "retry-max: at most 31 days");
    if (c->round.retry_min_ms > c->round.retry_max_ms)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "retry-min: %.3f s is more than retry-max (%.3f s)",
            (double)c->round.retry_min_ms / 1000.0, (double)c->round.retry_max_ms / 1000.0);
    if (c->max_sim_hours > 24.0 * 365 * 100)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "max-sim-hours: at most 100 years");
    if ((double)c->round.goal_count * c->round.over_selection > 1e8)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "clients-per-round x over-selection: at most 1e8");
    if (c->threads == 0 || c->threads > 256)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "threads: must be in [1, 256]");
    if (!(c->max_sim_hours > 0.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "max-sim-hours: must be positive");
    if (shoal_sim_aggregates_itself(c) && c->round.mode != SHOAL_ROUND_SYNC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "mode: secure aggregation needs synchronous rounds (--mode sync)");
    if (!(c->dp.clip >= 0.0) || !isfinite(c->dp.clip))
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "dp-clip: must be a positive L2 norm (0: no DP), got %g", c->dp.clip);
    if (c->dp.clip > 0.0) {
        if (!(c->dp.noise >= 0.0) || !isfinite(c->dp.noise))
            return shoal_errinfo_set(
                ei, SHOAL_EINVAL, "dp-noise: must be a noise multiplier >= 0, got %g", c->dp.noise);
        if (!(c->dp.delta > 0.0 && c->dp.delta < 1.0))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "dp-delta: must be in (0, 1), e.g. 1e-5; got %g", c->dp.delta);
        if (!(c->dp.budget >= 0.0) || !isfinite(c->dp.budget))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "dp-budget: must be an epsilon > 0 (0: no budget), got %g",
                                     c->dp.budget);
        if (c->round.mode != SHOAL_ROUND_SYNC)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "mode: DP-FedAvg needs synchronous rounds (--mode sync)");
        if (c->dp.mechanism == SHOAL_SIM_DP_FTRL && !(c->dp.noise > 0.0))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "dp-noise: --dp-mechanism ftrl needs a noise multiplier > 0 "
                                     "(its tree's nodes have stddev Z x S)");
        if (c->dp.mechanism != SHOAL_SIM_DP_FTRL && c->dp.ftrl_restart)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "dp-ftrl-restart: only with --dp-mechanism ftrl");
        if (c->dp.ftrl_restart > (1u << 31))
            return shoal_errinfo_set(ei, SHOAL_EINVAL, "dp-ftrl-restart: at most 2^31 rounds");
        shoal_err err = check_adaptive(c, ei);
        if (err)
            return err;
    } else if (c->dp.noise != 0.0 || c->dp.budget != 0.0) {
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp-noise, dp-budget: need --dp-clip (the L2 norm each update is "
                                 "clipped to)");
    } else if (c->dp.mechanism != SHOAL_SIM_DP_FEDAVG || c->dp.ftrl_restart ||
               c->dp.adaptive_quantile != 0.0) {
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp-mechanism, dp-ftrl-restart, dp-adaptive-quantile: need "
                                 "--dp-clip and --dp-noise");
    }
    if (c->sampling != SHOAL_SIM_SAMPLING_CHECKIN &&
        (c->round.mode != SHOAL_ROUND_SYNC || c->round.eval_every))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "sampling: %s needs synchronous rounds and no federated "
                                 "evaluation (--mode sync, --eval-every 0)",
                                 c->sampling == SHOAL_SIM_SAMPLING_POISSON ? "poisson" : "shuffle");
    const shoal_sim_robust_config *rb = &c->robust;
    if (rb->aggregator != SHOAL_ROBUST_MEAN) {
        if (c->secagg.mode != SHOAL_SIM_SECAGG_OFF)
            return shoal_errinfo_set(
                ei, SHOAL_EINVAL,
                "aggregator: %s needs every individual update, which secure aggregation hides; "
                "drop --secagg/--secagg-plus or use --aggregator mean",
                shoal_robust_name(rb->aggregator));
        if (c->dp.clip > 0.0)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "aggregator: %s cannot be combined with --dp-clip (DP's noise "
                                     "is calibrated to a sum); use --aggregator mean",
                                     shoal_robust_name(rb->aggregator));
        if (c->round.mode != SHOAL_ROUND_SYNC)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "mode: robust aggregation needs synchronous rounds "
                                     "(--mode sync)");
    }
    if (!(rb->trim_fraction >= 0.0 && rb->trim_fraction < 0.5))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "trim-fraction: must be in [0, 0.5) (the share of updates dropped "
                                 "at each end of every coordinate), got %g",
                                 rb->trim_fraction);
    if (rb->aggregator == SHOAL_ROBUST_NORM_BOUNDED &&
        (!(rb->norm_bound > 0.0) || !isfinite(rb->norm_bound)))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "norm-bound: --aggregator norm_bounded needs a positive L2 bound "
                                 "(--norm-bound L), got %g",
                                 rb->norm_bound);
    if (!(rb->attackers >= 0.0 && rb->attackers < 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "attackers: must be a fraction in [0, 1), got %g", rb->attackers);
    if ((rb->attackers > 0.0) != (rb->attack != SHOAL_SIM_ATTACK_NONE))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "attackers, attack: give both (--attackers F --attack "
                                 "sign_flip|scale|noise) or neither");
    uint32_t per_round = c->round.goal_count;
    if (c->round.over_selection > 1.0f)
        per_round = (uint32_t)ceil((double)per_round * c->round.over_selection);
    shoal_err err = shoal_sim_secagg_check(
        &c->secagg, c->secagg.group_size ? c->secagg.group_size : per_round, ei);
    if (err)
        return err;
    if ((err = shoal_train_config_check(&c->train, ei)))
        return err;
    return shoal_round_config_check(&c->round, ei);
}
