/* The coordinator's side of DP-FedAvg (issue 16; McMahan et al. 2018,
 * algorithm 1 with the fixed denominator): the round's sum of clipped
 * updates, each weighing 1, gets Gaussian noise once and is divided by the
 * expected number of reports (shoal_round_dp_mean); the RDP accountant
 * composes one step (q, z) per committed round and is committed with the
 * checkpoint; a round that would take epsilon above the budget is not
 * started (docs/privacy.md). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "coordinator_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"

#define LOG_COMPONENT "dp"

struct coord_dp {
    shoal_rdp_accountant acc;  /* the rounds committed so far */
    shoal_rdp_accountant next; /* acc and the round being committed */
    double epsilon, order;     /* acc's, at the config's delta */
    double next_epsilon;
    uint8_t packed[SHOAL_RDP_PACKED_MAX];
};

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static const char *sampling_note(const shoal_dp_population_config *dp)
{
    return dp->sampling_rate < 1.0 ? "assuming Poisson sampling, which the server cannot enforce"
                                   : "q = 1: no amplification by sampling claimed";
}

/* Epsilon after one more round; the budget stops the population when it
 * would pass it. */
static void check_budget(coordinator *co)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    coord_dp *d = co->dp;
    atomic_store(&co->pop->metrics.dp_epsilon_bits, double_bits(d->epsilon));
    atomic_store(&co->pop->metrics.dp_steps, d->acc.steps);
    if (!(dp->budget_epsilon > 0) || atomic_load(&co->pop->metrics.dp_exhausted))
        return;
    shoal_rdp_accountant probe = d->acc;
    double eps = INFINITY, order = 0;
    if (shoal_rdp_accountant_compose(&probe, dp->sampling_rate, dp->noise_multiplier, 1) !=
            SHOAL_OK ||
        shoal_rdp_accountant_epsilon(&probe, dp->delta, SHOAL_DP_CONVERSION_IMPROVED, &eps,
                                     &order) != SHOAL_OK)
        eps = INFINITY;
    if (eps <= dp->budget_epsilon)
        return;
    atomic_store(&co->pop->metrics.dp_exhausted, 1);
    SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
              "population '%s' stops training: its privacy budget is spent. After %llu "
              "round(s) epsilon is %.6g at delta %g; one more would make it %.6g, above "
              "budget_epsilon %g. Check-ins are turned away (NO_TASK) with the longest retry "
              "window; the model stays as committed. A larger budget (a new privacy decision) "
              "and a restart would let it train again",
              co->pop->cfg->name, (unsigned long long)d->acc.steps, d->epsilon, dp->delta, eps,
              dp->budget_epsilon);
}

shoal_err shoal_coordinator_dp_open(coordinator *co, uint64_t version, shoal_errinfo *ei)
{
    const shoal_population_config *pc = co->pop->cfg;
    if (!pc->dp.enabled)
        return SHOAL_OK;
    coord_dp *d = shoal_calloc(1, sizeof *d);
    if (!d)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
    co->dp = d;
    shoal_err err = shoal_rdp_accountant_init(&d->acc, NULL, 0);
    if (err)
        return shoal_errinfo_set(ei, err, "population '%s': cannot start the accountant", pc->name);
    shoal_dp_record rec;
    err = version ? shoal_state_dp_load(co->state, co->pop_id, version, d->packed, sizeof d->packed,
                                        &rec, ei)
                  : SHOAL_ENOTFOUND;
    if (err == SHOAL_ENOTFOUND) {
        if (version)
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': checkpoint version %llu was committed without "
                      "differential privacy; epsilon counts the rounds from now on only, and "
                      "does not cover what the earlier versions released",
                      pc->name, (unsigned long long)version);
    } else if (err) {
        return err;
    } else if (shoal_rdp_accountant_unpack(rec.accountant, rec.accountant_len, &d->acc) !=
               SHOAL_OK) {
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "population '%s': the privacy accountant stored with checkpoint "
                                 "version %llu cannot be read; restore the state database from "
                                 "a backup",
                                 pc->name, (unsigned long long)version);
    }
    if (shoal_rdp_accountant_epsilon(&d->acc, pc->dp.delta, SHOAL_DP_CONVERSION_IMPROVED,
                                     &d->epsilon, &d->order) != SHOAL_OK)
        d->epsilon = INFINITY;
    SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
              "population '%s': differential privacy z=%g clip=%g expected_reports=%g q=%g (%s); "
              "%llu round(s) accounted, epsilon=%.6g at delta=%g",
              pc->name, pc->dp.noise_multiplier, pc->dp.clip, pc->dp.expected_reports,
              pc->dp.sampling_rate, sampling_note(&pc->dp), (unsigned long long)d->acc.steps,
              d->epsilon, pc->dp.delta);
    check_budget(co);
    return SHOAL_OK;
}

void shoal_coordinator_dp_free(coordinator *co)
{
    shoal_free(co->dp);
    co->dp = NULL;
}

int shoal_coordinator_dp_exhausted(const coordinator *co)
{
    return co->dp && atomic_load(&co->pop->metrics.dp_exhausted);
}

shoal_err shoal_coordinator_dp_aggregated(coordinator *co, int64_t now, uint64_t round, float *sum)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    const shoal_round_dp_config rc = {.clip = dp->clip,
                                      .noise_multiplier = dp->noise_multiplier,
                                      .expected_reports = dp->expected_reports};
    shoal_errinfo ei = {{0}};
    /* Noise once on the whole sum, then the fixed denominator. */
    shoal_err err = shoal_round_dp_mean(sum, co->pop->param_count, &rc, sum, &ei);
    if (err) {
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                  "population '%s': round %llu abandoned, nothing released: %s", co->pop->cfg->name,
                  (unsigned long long)(co->round_offset + round), ei.msg);
        return shoal_round_aggregation_failed(co->engine, now, round);
    }
    return shoal_round_aggregated_mean(co->engine, now, round, sum);
}

const shoal_dp_record *shoal_coordinator_dp_prepare(coordinator *co, shoal_dp_record *out)
{
    coord_dp *d = co->dp;
    if (!d)
        return NULL;
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    double order = 0;
    d->next = d->acc;
    if (shoal_rdp_accountant_compose(&d->next, dp->sampling_rate, dp->noise_multiplier, 1) !=
            SHOAL_OK ||
        shoal_rdp_accountant_epsilon(&d->next, dp->delta, SHOAL_DP_CONVERSION_IMPROVED,
                                     &d->next_epsilon, &order) != SHOAL_OK)
        d->next_epsilon = INFINITY;
    *out = (shoal_dp_record){.accountant = d->packed,
                             .accountant_len = shoal_rdp_accountant_pack(&d->next, d->packed),
                             .steps = d->next.steps,
                             .epsilon = d->next_epsilon,
                             .delta = dp->delta};
    return out;
}

void shoal_coordinator_dp_committed(coordinator *co, uint64_t round, uint64_t version)
{
    coord_dp *d = co->dp;
    if (!d)
        return;
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    d->acc = d->next;
    d->epsilon = d->next_epsilon;
    SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
              "population '%s': round %llu committed as version %llu with noise z=%g x clip %g "
              "over %g expected reports: epsilon=%.6g at delta=%g after %llu round(s) (RDP, "
              "q=%g, %s)",
              co->pop->cfg->name, (unsigned long long)round, (unsigned long long)version,
              dp->noise_multiplier, dp->clip, dp->expected_reports, d->epsilon, dp->delta,
              (unsigned long long)d->acc.steps, dp->sampling_rate, sampling_note(dp));
    check_budget(co);
}

void shoal_coordinator_dp_refusal(const coordinator *co, char *detail, size_t len)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    snprintf(detail, len,
             "privacy budget spent: epsilon %.4g of %.4g at delta %g after %llu rounds; the "
             "population trains no more",
             co->dp ? co->dp->epsilon : 0.0, dp->budget_epsilon, dp->delta,
             (unsigned long long)(co->dp ? co->dp->acc.steps : 0));
}
