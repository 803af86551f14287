/* The simulator's own aggregation of a round's updates, for the rounds the
 * engine hands over with SHOAL_ACTION_AGGREGATE (external_aggregation):
 * secure aggregation run in-process (secagg_group.c) and the choice of how
 * a round's mean is formed (aggregate.c). */
#ifndef SHOAL_AGGREGATE_INT_H
#define SHOAL_AGGREGATE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/sim.h"

typedef struct shoal_sim_secagg_stats {
    double seconds;
    uint32_t dropouts[SHOAL_SIM_SECAGG_PHASES];
    uint32_t groups, groups_failed;
    uint32_t contributors; /* reports whose input is in the decoded sum */
} shoal_sim_secagg_stats;

/* Checks cfg for groups of up to `max_group` reports: the clip, the ring
 * (shoal_secagg_fixed_plan refuses a ring the sum could wrap) and the
 * rates. ei names the shoal-sim flag. */
SHOAL_NODISCARD shoal_err shoal_sim_secagg_check(const shoal_sim_secagg_config *cfg,
                                                 uint32_t max_group, shoal_errinfo *ei);

/* Securely sums `count` updates of `d` floats: each is encoded with weight
 * weights[i] (1..cfg->max_weight) by the fixed-point encoder, the reports
 * are cut into groups of at most cfg->group_size (near-equal sizes; all in
 * one when 0), and each group runs one SecAgg or SecAgg+ instance in which
 * every device drops at each phase with probability cfg->phase_dropout
 * (drawn from seed and round). sum[0..d) receives the decoded weighted sum
 * of the surviving inputs of the groups that finished, *total_weight their
 * decoded total weight (0 when every group failed: the caller abandons the
 * round). A group of fewer than 3 reports, or one that loses too many
 * devices, fails and contributes nothing. SHOAL_ENOMEM; SHOAL_ECRYPTO when
 * libsodium cannot start; SHOAL_ENUMERIC for a non-finite update. */
SHOAL_NODISCARD shoal_err shoal_sim_secagg_sum(const shoal_sim_secagg_config *cfg, uint64_t seed,
                                               uint64_t round, const float *const *updates,
                                               const uint32_t *weights, size_t count, size_t d,
                                               double *sum, uint64_t *total_weight,
                                               shoal_sim_secagg_stats *stats, shoal_errinfo *ei);

/* The accepted updates of the rounds being aggregated, and how their mean
 * is formed. One owner (the runner's thread). */
typedef struct shoal_sim_aggregator shoal_sim_aggregator;

/* Whether cfg needs the simulator to aggregate (external_aggregation). */
int shoal_sim_aggregates_itself(const shoal_sim_config *cfg);

SHOAL_NODISCARD shoal_err shoal_sim_aggregator_new(const shoal_sim_config *cfg, size_t d,
                                                   shoal_sim_aggregator **out);
void shoal_sim_aggregator_free(shoal_sim_aggregator *a);

/* Keeps a copy of an accepted update of `round` (d floats) from `device`
 * (< cfg->clients) with the weight the engine gave it. SHOAL_ENOMEM. */
SHOAL_NODISCARD shoal_err shoal_sim_aggregator_keep(shoal_sim_aggregator *a, uint64_t round,
                                                    uint32_t device, float weight,
                                                    const float *update);

/* Forgets the updates of `round` (abandoned). */
void shoal_sim_aggregator_forget(shoal_sim_aggregator *a, uint64_t round);

/* What the aggregation of one round cost and lost, for its output row. */
typedef struct shoal_sim_aggregation_stats {
    uint64_t round;
    shoal_sim_secagg_stats secagg;
    /* DP with a budget: the round was not released because it would have
     * taken epsilon to next_epsilon, above the budget. */
    int over_budget;
    double next_epsilon;
    double dp_clip; /* the clip the round's updates had (NaN without DP) */
} shoal_sim_aggregation_stats;

/* Forms the mean update of `round` from its kept updates into mean[0..d)
 * and forgets them. *formed is 0 when no mean could be formed (every
 * secure-aggregation group failed: the caller abandons the round; or, with
 * DP, stats->over_budget: the caller stops the run). With DP every released
 * round is composed into the accountant (DP-FedAvg) or the tree's
 * participation counts and rho (DP-FTRL).
 * SHOAL_ENOMEM, SHOAL_ECRYPTO, SHOAL_ENUMERIC (ei filled). */
SHOAL_NODISCARD shoal_err shoal_sim_aggregator_mean(shoal_sim_aggregator *a, uint64_t round,
                                                    float *mean, int *formed,
                                                    shoal_sim_aggregation_stats *stats,
                                                    shoal_errinfo *ei);

/* DP: the epsilon spent so far at cfg->dp.delta and its order (DP-FedAvg:
 * improved conversion, default grid; DP-FTRL: rho converted by
 * shoal_zcdp_epsilon, order NaN); NaN without DP. */
void shoal_sim_aggregator_epsilon(const shoal_sim_aggregator *a, double *epsilon, double *order);

/* DP-FTRL: the rho spent so far (zCDP) and, in *participations (may be
 * NULL), the k of the current tree: the most reports one device made in
 * it. NaN (and 0) otherwise, or for a NULL aggregator. */
double shoal_sim_aggregator_rho(const shoal_sim_aggregator *a, uint32_t *participations);

/* DP: the clip the next update will be clipped to (adaptive clipping
 * moves it after each round); NaN without DP. */
double shoal_sim_aggregator_clip(const shoal_sim_aggregator *a);

#endif
