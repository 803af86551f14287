/* shoal-sim's report of differential privacy (see sim_dp.h). */
#include "sim_dp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* What an epsilon in this run means: its accounting, and whether the run
 * met the sampling the analysis assumes. */
#define DP_ACCOUNTING                                                                              \
    "RDP of the Poisson-subsampled Gaussian, improved conversion, default grid of 72 orders "      \
    "1.25..512"
#define FTRL_ACCOUNTING                                                                            \
    "zCDP of DP-FTRL's tree aggregation: rho = sum over trees of k^2 x height / (2 z^2), k the "   \
    "most reports of one device in the tree; epsilon by the improved conversion of rho x a over "  \
    "2000 orders 1.01..10001"

static const char *const sampling_names[] = {"checkin", "poisson", "shuffle"};

int shoal_sim_cli_dp_mechanism_parse(const char *v, shoal_sim_dp_mechanism *out)
{
    if (strcmp(v, "fedavg") == 0)
        *out = SHOAL_SIM_DP_FEDAVG;
    else if (strcmp(v, "ftrl") == 0)
        *out = SHOAL_SIM_DP_FTRL;
    else
        return -1;
    return 0;
}

static double sampling_rate(const shoal_sim_config *c)
{
    return (double)c->round.goal_count / (double)c->clients;
}

static int ftrl(const shoal_sim_config *c)
{
    return c->dp.mechanism == SHOAL_SIM_DP_FTRL;
}

void shoal_sim_cli_dp_setting(const shoal_sim_config *c)
{
    if (ftrl(c)) {
        printf("DP-FTRL: clip %g, noise multiplier %g per tree node, %s, delta %g; rho and "
               "epsilon by " FTRL_ACCOUNTING " (no sampling assumption)\n",
               c->dp.clip, c->dp.noise,
               c->dp.ftrl_restart ? "a fresh tree every --dp-ftrl-restart rounds" : "one tree",
               c->dp.delta);
        return;
    }
    printf("DP-FedAvg: clip %g, noise multiplier %g, q = %g, delta %g; epsilon by " DP_ACCOUNTING
           "\n",
           c->dp.clip, c->dp.noise, sampling_rate(c), c->dp.delta);
    if (c->dp.adaptive_quantile > 0.0)
        printf("DP-FedAvg: adaptive clipping (Andrew et al. 2021) from clip %g toward the %g "
               "quantile of update norms at rate %g; the unclipped count gets noise %g and the "
               "noise multiplier %g is the two together, which the accountant composes\n",
               c->dp.clip, c->dp.adaptive_quantile, c->dp.adaptive_rate,
               c->dp.noise > 0.0 ? shoal_sim_dp_count_noise(c) : 0.0, c->dp.noise);
    if (c->sampling != SHOAL_SIM_SAMPLING_POISSON)
        printf("DP-FedAvg: sampling is not Poisson (--sampling %s): every epsilon below "
               "assumes Poisson sampling at rate q, which this run does not meet\n",
               sampling_names[c->sampling]);
}

void shoal_sim_cli_dp_row(const shoal_sim_round *r)
{
    if (!isnan(r->rho))
        printf(" rho %.4g epsilon %.4g", r->rho, r->epsilon);
    else if (isfinite(r->epsilon))
        printf(" epsilon %.4g (order %g)", r->epsilon, r->epsilon_order);
    else
        printf(" epsilon inf (no noise)");
    if (!isnan(r->dp_clip))
        printf(" clip %.4g", r->dp_clip);
}

void shoal_sim_cli_dp_result(const shoal_sim_config *c, const shoal_sim_result *r)
{
    if (r->stopped_by_budget)
        printf("stopped_by_budget: epsilon %.4g after %llu rounds; the next round would reach "
               "%.4g, above --dp-budget %g\n",
               r->epsilon, (unsigned long long)r->rounds_committed, r->next_epsilon, c->dp.budget);
    const char *sampling = sampling_names[c->sampling];
    if (ftrl(c)) {
        printf("epsilon=%.10g delta=%g rho=%.10g k=%u noise=%g restart=%u rounds=%llu "
               "mechanism=ftrl accounting=\"" FTRL_ACCOUNTING "\" sampling=%s\n",
               r->epsilon, c->dp.delta, r->rho, r->ftrl_participations, c->dp.noise,
               c->dp.ftrl_restart, (unsigned long long)r->rounds_committed, sampling);
        return;
    }
    printf("epsilon=%.10g delta=%g order=%g q=%g noise=%g rounds=%llu accounting=\"" DP_ACCOUNTING
           "\" sampling=%s%s\n",
           r->epsilon, c->dp.delta, r->epsilon_order, sampling_rate(c), c->dp.noise,
           (unsigned long long)r->rounds_committed, sampling,
           c->sampling == SHOAL_SIM_SAMPLING_POISSON ? "" : " (not Poisson: assumption not met)");
}

json_t *shoal_sim_cli_dp_json(const shoal_sim_config *c, const shoal_sim_result *r)
{
    json_t *dp = json_pack(
        "{s:s, s:f, s:f, s:f, s:f, s:s, s:s, s:b}", "mechanism", ftrl(c) ? "ftrl" : "fedavg",
        "clip", c->dp.clip, "noise_multiplier", c->dp.noise, "delta", c->dp.delta, "sampling_rate",
        sampling_rate(c), "sampling", sampling_names[c->sampling], "accounting",
        ftrl(c) ? FTRL_ACCOUNTING : DP_ACCOUNTING, "stopped_by_budget", r->stopped_by_budget);
    if (!dp)
        return NULL;
    json_object_set_new(dp, "epsilon",
                        isfinite(r->epsilon) ? json_real(r->epsilon) : json_string("inf"));
    if (ftrl(c)) {
        /* DP-FTRL's guarantee needs no sampling assumption. */
        json_object_set_new(dp, "rho", json_real(r->rho));
        json_object_set_new(dp, "restart_every", json_integer(c->dp.ftrl_restart));
        json_object_set_new(dp, "participations_last_tree",
                            json_integer((json_int_t)r->ftrl_participations));
    } else {
        json_object_set_new(dp, "order", json_real(r->epsilon_order));
        json_object_set_new(dp, "poisson_assumption_met",
                            json_boolean(c->sampling == SHOAL_SIM_SAMPLING_POISSON));
    }
    if (c->dp.budget > 0.0)
        json_object_set_new(dp, "budget", json_real(c->dp.budget));
    if (c->dp.adaptive_quantile > 0.0) {
        json_object_set_new(dp, "adaptive_quantile", json_real(c->dp.adaptive_quantile));
        json_object_set_new(dp, "adaptive_rate", json_real(c->dp.adaptive_rate));
        json_object_set_new(dp, "adaptive_count_noise",
                            json_real(c->dp.noise > 0.0 ? shoal_sim_dp_count_noise(c) : 0.0));
        json_object_set_new(dp, "final_clip", json_real(r->dp_clip));
    }
    return dp;
}
