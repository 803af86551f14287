/* How the simulator forms a round's mean when it aggregates itself: it
 * keeps the round's accepted updates until the engine asks for the
 * aggregate (SHOAL_ACTION_AGGREGATE), then sums them through secure
 * aggregation or in the clear. */
#include <math.h>
#include <string.h>

#include "aggregate_int.h"
#include "shoal/alloc.h"
#include "shoal/dp_ftrl.h"
#include "shoal/privacy.h"
#include "shoal/robust.h"
#include "shoal/round_dp.h"

struct kept {
    uint64_t round;
    uint32_t device;
    int unclipped; /* DP: its norm was within the clip */
    double clip;   /* DP: the clip it was clipped to */
    float weight;
    float *update;
};

struct shoal_sim_aggregator {
    const shoal_sim_config *cfg;
    size_t d;
    struct kept *kept;
    size_t count, cap;
    double *sum;
    float *dp_sum;
    shoal_rdp_accountant accountant;
    double sampling_rate; /* q = clients-per-round / clients */
    /* DP-FTRL: the tree, its increments, each device's reports in the
     * current tree and the most of them (k); rho of the closed trees and
     * in total. */
    int ftrl;
    shoal_dp_tree tree;
    int64_t *increment;
    uint32_t *participations;
    uint32_t k;
    double rho_closed, rho;
    /* DP: the clip of the next update (adaptive clipping moves it); the
     * gathered round's largest clip (its sensitivity) and unclipped count. */
    double clip, round_clip;
    uint64_t round_unclipped;
    /* One round's updates, weights and devices, gathered for aggregation. */
    const float **round_updates;
    uint32_t *round_weights;
    uint32_t *round_devices;
    size_t round_cap;
};

int shoal_sim_aggregates_itself(const shoal_sim_config *cfg)
{
    return cfg->secagg.mode != SHOAL_SIM_SECAGG_OFF || cfg->dp.clip > 0.0 ||
           cfg->robust.aggregator != SHOAL_ROBUST_MEAN;
}

shoal_err shoal_sim_aggregator_new(const shoal_sim_config *cfg, size_t d,
                                   shoal_sim_aggregator **out)
{
    shoal_sim_aggregator *a = shoal_calloc(1, sizeof *a);
    if (!a)
        return SHOAL_ENOMEM;
    a->cfg = cfg;
    a->d = d;
    a->sampling_rate = (double)cfg->round.goal_count / (double)cfg->clients;
    a->clip = cfg->dp.clip;
    if (shoal_rdp_accountant_init(&a->accountant, NULL, 0) != SHOAL_OK) {
        shoal_free(a);
        return SHOAL_EINVAL;
    }
    if (!(a->sum = shoal_mallocarray(d ? d : 1, sizeof *a->sum)) ||
        !(a->dp_sum = shoal_mallocarray(d ? d : 1, sizeof *a->dp_sum))) {
        shoal_sim_aggregator_free(a);
        return SHOAL_ENOMEM;
    }
    a->ftrl = cfg->dp.clip > 0.0 && cfg->dp.mechanism == SHOAL_SIM_DP_FTRL;
    if (a->ftrl) {
        shoal_err err =
            shoal_dp_tree_init(&a->tree, d, cfg->dp.noise * cfg->dp.clip, cfg->dp.ftrl_restart);
        if (!err && (!(a->increment = shoal_mallocarray(d, sizeof *a->increment)) ||
                     !(a->participations = shoal_calloc(cfg->clients, sizeof(uint32_t)))))
            err = SHOAL_ENOMEM;
        if (err) {
            shoal_sim_aggregator_free(a);
            return err;
        }
    }
    *out = a;
    return SHOAL_OK;
}

void shoal_sim_aggregator_free(shoal_sim_aggregator *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++)
        shoal_free(a->kept[i].update);
    shoal_free(a->kept);
    shoal_free(a->sum);
    shoal_free(a->dp_sum);
    shoal_free(a->increment);
    shoal_free(a->participations);
    shoal_free(a->round_updates);
    shoal_free(a->round_weights);
    shoal_free(a->round_devices);
    shoal_free(a);
}

shoal_err shoal_sim_aggregator_keep(shoal_sim_aggregator *a, uint64_t round, uint32_t device,
                                    float weight, const float *update)
{
    if (shoal_grow(&a->kept, &a->cap, a->count, sizeof *a->kept, 64))
        return SHOAL_ENOMEM;
    float *copy = shoal_mallocarray(a->d ? a->d : 1, sizeof *copy);
    if (!copy)
        return SHOAL_ENOMEM;
    memcpy(copy, update, a->d * sizeof *copy);
    /* DP-FedAvg: the device clips its whole update before it leaves (and
     * before it is encoded for secure aggregation). */
    shoal_err err = SHOAL_OK;
    double norm = 0;
    if (a->cfg->dp.clip > 0.0)
        err = shoal_round_dp_clip(copy, a->d, a->clip, &norm);
    /* The norm-bounded mean clips every update as it arrives (it streams:
     * Sun et al. 2019). */
    else if (a->cfg->robust.aggregator == SHOAL_ROBUST_NORM_BOUNDED)
        err = shoal_robust_clip(copy, a->d, a->cfg->robust.norm_bound, NULL);
    if (err) {
        shoal_free(copy);
        return err;
    }
    a->kept[a->count++] = (struct kept){.round = round,
                                        .device = device,
                                        .unclipped = norm <= a->clip,
                                        .clip = a->clip,
                                        .weight = weight,
                                        .update = copy};
    return SHOAL_OK;
}

void shoal_sim_aggregator_forget(shoal_sim_aggregator *a, uint64_t round)
{
    size_t w = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (a->kept[i].round == round)
            shoal_free(a->kept[i].update);
        else
            a->kept[w++] = a->kept[i];
    }
    a->count = w;
}

/* Points round_updates/round_weights at the kept updates of `round`, in
 * the order they arrived. Returns how many, or (size_t)-1 without memory. */
static size_t gather(shoal_sim_aggregator *a, uint64_t round)
{
    if (a->round_cap < a->count) {
        const float **u = shoal_realloc(a->round_updates, a->count * sizeof *u);
        if (u)
            a->round_updates = u;
        uint32_t *w = shoal_realloc(a->round_weights, a->count * sizeof *w);
        if (w)
            a->round_weights = w;
        uint32_t *dev = shoal_realloc(a->round_devices, a->count * sizeof *dev);
        if (dev)
            a->round_devices = dev;
        if (!u || !w || !dev)
            return (size_t)-1;
        a->round_cap = a->count;
    }
    /* DP-FedAvg counts every report once: its sensitivity is the clip.
     * Only the fixed-point encoder caps weights. */
    uint32_t max_weight = UINT32_MAX;
    if (a->cfg->dp.clip > 0.0)
        max_weight = 1;
    else if (a->cfg->secagg.mode != SHOAL_SIM_SECAGG_OFF)
        max_weight = a->cfg->secagg.max_weight;
    size_t n = 0;
    a->round_clip = 0.0;
    a->round_unclipped = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (a->kept[i].round != round)
            continue;
        a->round_clip = fmax(a->round_clip, a->kept[i].clip);
        a->round_unclipped += (uint64_t)a->kept[i].unclipped;
        /* The engine's weight is the example count (or 1, uniform), capped
         * at the encoder's maximum weight. */
        double w = floor((double)a->kept[i].weight + 0.5);
        a->round_updates[n] = a->kept[i].update;
        a->round_devices[n] = a->kept[i].device;
        a->round_weights[n] = w < 1.0 ? 1u : (w > (double)max_weight ? max_weight : (uint32_t)w);
        n++;
    }
    return n;
}

/* DP-FTRL's accounting if `round`'s n gathered reports are released: the
 * tree it falls in (fresh: a new one), that tree's k and the total rho. */
struct ftrl_next {
    int fresh;
    uint32_t k;
    double rho_closed, rho;
};

static shoal_err ftrl_next(const shoal_sim_aggregator *a, size_t n, struct ftrl_next *next)
{
    const shoal_dp_tree *t = &a->tree;
    const uint64_t step = shoal_dp_tree_next_step(t);
    next->fresh = step == 1;
    next->k = next->fresh ? 0 : a->k;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (next->fresh ? 0 : a->participations[a->round_devices[i]]) + 1;
        next->k = c > next->k ? c : next->k;
    }
    next->rho_closed = next->fresh ? a->rho : a->rho_closed;
    double tree_rho = 0.0;
    shoal_err err =
        next->k ? shoal_dp_tree_rho(step, a->cfg->dp.noise, next->k, 0, &tree_rho) : SHOAL_OK;
    next->rho = next->rho_closed + tree_rho;
    return err;
}

/* Epsilon if `round`'s n gathered reports are released. */
static double next_epsilon(const shoal_sim_aggregator *a, size_t n)
{
    double eps = INFINITY, order = 0;
    if (a->ftrl) {
        struct ftrl_next next;
        if (ftrl_next(a, n, &next) || shoal_zcdp_epsilon(next.rho, a->cfg->dp.delta, &eps))
            return INFINITY;
        return eps;
    }
    if (shoal_rdp_accountant_epsilon_after(&a->accountant, a->sampling_rate, a->cfg->dp.noise, 1,
                                           a->cfg->dp.delta, SHOAL_DP_CONVERSION_IMPROVED, &eps,
                                           &order))
        return INFINITY;
    return eps;
}

/* Composes a released round into the accounting: the RDP accountant
 * (DP-FedAvg), or (DP-FTRL) the tree's participation counts and rho as
 * ftrl_next computed them before the round advanced the tree. */
static shoal_err account(shoal_sim_aggregator *a, size_t n, const struct ftrl_next *next,
                         shoal_errinfo *ei)
{
    shoal_err err;
    if (!a->ftrl) {
        if ((err = shoal_rdp_accountant_compose(&a->accountant, a->sampling_rate, a->cfg->dp.noise,
                                                1)))
            return shoal_errinfo_set(ei, err, "dp: cannot account q = %g, z = %g", a->sampling_rate,
                                     a->cfg->dp.noise);
        return SHOAL_OK;
    }
    if (next->fresh)
        memset(a->participations, 0, a->cfg->clients * sizeof *a->participations);
    for (size_t i = 0; i < n; i++)
        a->participations[a->round_devices[i]]++;
    a->k = next->k;
    a->rho_closed = next->rho_closed;
    a->rho = next->rho;
    return SHOAL_OK;
}

/* Andrew et al. 2021: the noised count of the round's unclipped updates
 * moves the clip toward the target quantile (shoal/round_dp.h). */
static shoal_err adapt_clip(shoal_sim_aggregator *a, size_t n, shoal_errinfo *ei)
{
    const shoal_sim_dp_config *dp = &a->cfg->dp;
    double fraction = 0;
    shoal_err err = shoal_round_dp_noised_fraction(
        a->round_unclipped, n, (double)a->cfg->round.goal_count,
        dp->noise > 0.0 ? shoal_sim_dp_count_noise(a->cfg) : 0.0, &fraction);
    if (err)
        return shoal_errinfo_set(ei, err, "dp: the clipped count could not be noised: %s",
                                 shoal_strerror(err));
    a->clip =
        shoal_round_dp_adaptive_clip(a->clip, fraction, dp->adaptive_quantile, dp->adaptive_rate);
    return SHOAL_OK;
}

shoal_err shoal_sim_aggregator_mean(shoal_sim_aggregator *a, uint64_t round, float *mean,
                                    int *formed, shoal_sim_aggregation_stats *stats,
                                    shoal_errinfo *ei)
{
    memset(stats, 0, sizeof *stats);
    stats->dp_clip = NAN;
    stats->round = round;
    *formed = 0;
    size_t n = gather(a, round);
    if (n == (size_t)-1)
        return SHOAL_ENOMEM;
    const size_t d = a->d;
    uint64_t total_weight = 0;
    shoal_err err = SHOAL_OK;
    const shoal_robust_kind kind = a->cfg->robust.aggregator;
    if (kind == SHOAL_ROBUST_MEDIAN || kind == SHOAL_ROBUST_TRIMMED_MEAN) {
        /* One vote per update, whatever its weight (shoal/robust.h). */
        float *scratch = shoal_mallocarray(n ? n : 1, sizeof *scratch);
        if (!scratch)
            return SHOAL_ENOMEM;
        err = kind == SHOAL_ROBUST_MEDIAN
                  ? shoal_robust_median(a->round_updates, n, d, scratch, mean)
                  : shoal_robust_trimmed_mean(a->round_updates, n, d, a->cfg->robust.trim_fraction,
                                              scratch, mean);
        shoal_free(scratch);
        *formed = !err;
        shoal_sim_aggregator_forget(a, round);
        return err ? shoal_errinfo_set(ei, err, "%s of %zu updates failed: %s",
                                       shoal_robust_name(kind), n, shoal_strerror(err))
                   : SHOAL_OK;
    }
    if (a->cfg->dp.clip > 0.0 && a->cfg->dp.budget > 0.0) {
        double eps = next_epsilon(a, n);
        if (eps > a->cfg->dp.budget) {
            stats->over_budget = 1;
            stats->next_epsilon = eps;
            shoal_sim_aggregator_forget(a, round);
            return SHOAL_OK;
        }
    }
    if (a->cfg->secagg.mode != SHOAL_SIM_SECAGG_OFF) {
        /* DP's weights are all 1: the encoder's range needs no room for more. */
        shoal_sim_secagg_config secagg = a->cfg->secagg;
        if (a->cfg->dp.clip > 0.0)
            secagg.max_weight = 1;
        err = shoal_sim_secagg_sum(&secagg, a->cfg->seed, round, a->round_updates, a->round_weights,
                                   n, d, a->sum, &total_weight, &stats->secagg, ei);
    } else {
        memset(a->sum, 0, d * sizeof *a->sum);
        for (size_t i = 0; i < n; i++) {
            const double w = (double)a->round_weights[i];
            for (size_t k = 0; k < d; k++)
                a->sum[k] += w * (double)a->round_updates[i][k];
            total_weight += a->round_weights[i];
        }
    }
    struct ftrl_next next = {0};
    if (!err && a->ftrl && (err = ftrl_next(a, n, &next)))
        shoal_errinfo_set(ei, err, "dp-ftrl: cannot account z = %g", a->cfg->dp.noise);
    if (!err && total_weight > 0) {
        if (a->cfg->dp.clip > 0.0) {
            /* Noise once on the (unmasked) sum, then the expected count. */
            for (size_t k = 0; k < d; k++)
                a->dp_sum[k] = (float)a->sum[k];
            shoal_round_dp_config dp = {.clip = a->round_clip,
                                        .noise_multiplier = a->cfg->dp.noise,
                                        .expected_reports = (double)a->cfg->round.goal_count};
            stats->dp_clip = a->round_clip;
            if (a->cfg->dp.adaptive_quantile > 0.0 && a->cfg->dp.noise > 0.0)
                err = shoal_round_dp_adaptive_update_noise(
                    a->cfg->dp.noise, shoal_sim_dp_count_noise(a->cfg), &dp.noise_multiplier, ei);
            if (!err)
                err = a->ftrl ? shoal_round_dp_ftrl_mean(&a->tree, a->dp_sum, d, &dp, a->increment,
                                                         mean, ei)
                              : shoal_round_dp_mean(a->dp_sum, d, &dp, mean, ei);
        } else {
            for (size_t k = 0; k < d; k++)
                mean[k] = (float)(a->sum[k] / (double)total_weight);
        }
        *formed = !err;
        if (*formed && a->cfg->dp.clip > 0.0)
            err = account(a, n, &next, ei);
        if (*formed && !err && a->cfg->dp.adaptive_quantile > 0.0)
            err = adapt_clip(a, n, ei);
    }
    shoal_sim_aggregator_forget(a, round);
    return err;
}

void shoal_sim_aggregator_epsilon(const shoal_sim_aggregator *a, double *epsilon, double *order)
{
    *epsilon = NAN;
    *order = NAN;
    if (!a || !(a->cfg->dp.clip > 0.0))
        return;
    if (a->ftrl) {
        /* rho converts over a fine grid of its own: no order to report. */
        if (shoal_zcdp_epsilon(a->rho, a->cfg->dp.delta, epsilon) != SHOAL_OK)
            *epsilon = INFINITY;
        return;
    }
    if (shoal_rdp_accountant_epsilon(&a->accountant, a->cfg->dp.delta, SHOAL_DP_CONVERSION_IMPROVED,
                                     epsilon, order) != SHOAL_OK)
        *epsilon = INFINITY;
    if (!isfinite(*epsilon))
        *order = NAN; /* no order bounds it: z = 0 */
}

double shoal_sim_aggregator_clip(const shoal_sim_aggregator *a)
{
    return a && a->cfg->dp.clip > 0.0 ? a->clip : NAN;
}

double shoal_sim_aggregator_rho(const shoal_sim_aggregator *a, uint32_t *participations)
{
    if (participations)
        *participations = a && a->ftrl ? a->k : 0;
    return a && a->ftrl ? a->rho : NAN;
}
