/* The coordinator's side of differential privacy (issue 16;
 * docs/privacy.md). Every update is clipped to S and weighs 1; then:
 *
 * - DP-FedAvg (McMahan et al. 2018, algorithm 1 with the fixed
 *   denominator): the round's sum gets Gaussian noise once and is divided
 *   by the expected number of reports (shoal_round_dp_mean); the RDP
 *   accountant composes one step (q, z) per committed round.
 * - DP-FTRL (Kairouz et al. 2021): the round's sum joins the tree's noised
 *   prefix, and the engine gets the release's change over the expected
 *   reports (shoal_round_dp_ftrl_mean); rho = k^2 x height / (2 z^2) per
 *   tree, adding over trees.
 *
 * - Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021,
 *   algorithm 1), DP-FedAvg only: each round has its own clip S_t, fixed
 *   when it configures its first device; devices report whether their
 *   update was within it (a Report field, or one more element of the
 *   masked input under secure aggregation); the round's count of those
 *   bits gets noise of stddev count_noise once, the update noise
 *   z_u x S_t, and the commit makes S_(t+1) = S_t exp(-eta (fraction -
 *   gamma)) current. The accountant still composes (q, z): z is the total.
 *
 * The privacy state (the packed accountant, or the packed tree with its
 * rho) is committed with the checkpoint in the same transaction (the
 * dp_round table holds it as opaque bytes, with the clips); a round that
 * would take epsilon above the budget is not started. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "coordinator_int.h"
#include "shoal/alloc.h"
#include "shoal/dp_ftrl.h"
#include "shoal/log.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"

#define LOG_COMPONENT "dp"

_Static_assert(SHOAL_DP_FTRL_STATE_PACKED_BYTES <= SHOAL_RDP_PACKED_MAX,
               "the state buffer holds either");

struct coord_dp {
    int ftrl;
    shoal_rdp_accountant acc;  /* DP-FedAvg: the rounds committed so far */
    shoal_rdp_accountant next; /* acc and the round being committed */
    shoal_dp_tree tree;        /* DP-FTRL: as committed */
    shoal_dp_tree pending;     /* tree with the round being committed */
    int64_t *increment;        /* the tree's noise increment, param_count */
    uint64_t rounds, next_rounds;
    double rho, rho_closed, next_rho, next_rho_closed;
    double epsilon, order; /* at the config's delta */
    double next_epsilon;
    uint8_t packed[SHOAL_RDP_PACKED_MAX];
    /* The clip the next training round takes; the round that took one
     * (engine numbering, 0: none yet), its clip and, with adaptive
     * clipping, its counted reports and unclipped bits. */
    double clip;
    uint64_t clip_round;
    double round_clip;
    uint64_t round_reports, round_unclipped;
    /* Adaptive clipping: what the last aggregation used and gave (its
     * clip, counts, noised fraction and next clip), for its commit, which
     * makes next_clip current. */
    double agg_clip, fraction, next_clip;
    uint64_t agg_reports, agg_unclipped;
};

/* A clip as devices see it (a float in the plan), within the config's
 * range: the bound the server holds uploads to and the sensitivity the
 * noise is scaled to are then the same number. */
#define CLIP_MAX 1e9
static double plan_clip(double clip)
{
    if (!(clip >= FLT_MIN)) /* also NaN */
        return FLT_MIN;
    return clip > CLIP_MAX ? (double)(float)CLIP_MAX : (double)(float)clip;
}

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* rho once the tree has released `step` rounds (step 1: a fresh tree,
 * whose closed part is all of rho so far). */
static double ftrl_rho(const coord_dp *d, const shoal_dp_population_config *dp, uint64_t step,
                       double *closed)
{
    double tree_rho = INFINITY;
    *closed = step == 1 ? d->rho : d->rho_closed;
    if (shoal_dp_tree_rho(step, dp->noise_multiplier, dp->max_participations, 0, &tree_rho))
        return INFINITY;
    return *closed + tree_rho;
}

/* Epsilon after one more round than committed. */
static double probe_epsilon(const coord_dp *d, const shoal_dp_population_config *dp)
{
    double eps = INFINITY, order = 0, closed;
    if (d->ftrl) {
        if (shoal_zcdp_epsilon(ftrl_rho(d, dp, shoal_dp_tree_next_step(&d->tree), &closed),
                               dp->delta, &eps))
            return INFINITY;
        return eps;
    }
    if (shoal_rdp_accountant_epsilon_after(&d->acc, dp->sampling_rate, dp->noise_multiplier, 1,
                                           dp->delta, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order))
        return INFINITY;
    return eps;
}

static uint64_t rounds_accounted(const coord_dp *d)
{
    return d->ftrl ? d->rounds : d->acc.steps;
}

static const char *sampling_note(const shoal_dp_population_config *dp)
{
    if (dp->mechanism == SHOAL_DP_MECHANISM_FTRL)
        return "DP-FTRL: no sampling assumed; each device reporting at most max_participations "
               "times a tree, which the server does not enforce";
    return dp->sampling_rate < 1.0 ? "assuming Poisson sampling, which the server cannot enforce"
                                   : "q = 1: no amplification by sampling claimed";
}

/* Publishes epsilon and the clip; the budget stops the population when
 * one more round would pass it. */
static void check_budget(coordinator *co)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    coord_dp *d = co->dp;
    atomic_store(&co->pop->metrics.dp_epsilon_bits, double_bits(d->epsilon));
    atomic_store(&co->pop->metrics.dp_clip_bits, double_bits(d->clip));
    atomic_store(&co->pop->metrics.dp_rho_bits, double_bits(d->ftrl ? d->rho : NAN));
    atomic_store(&co->pop->metrics.dp_steps, rounds_accounted(d));
    if (!(dp->budget_epsilon > 0) || atomic_load(&co->pop->metrics.dp_exhausted))
        return;
    double eps = probe_epsilon(d, dp);
    if (eps <= dp->budget_epsilon)
        return;
    atomic_store(&co->pop->metrics.dp_exhausted, 1);
    SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
              "population '%s' stops training: its privacy budget is spent. After %llu "
              "round(s) epsilon is %.6g at delta %g; one more would make it %.6g, above "
              "budget_epsilon %g. Check-ins are turned away (NO_TASK) with the longest retry "
              "window; the model stays as committed. A larger budget (a new privacy decision) "
              "and a restart would let it train again",
              co->pop->cfg->name, (unsigned long long)rounds_accounted(d), d->epsilon, dp->delta,
              eps, dp->budget_epsilon);
}

/* The committed privacy state of checkpoint `version` into d: the
 * accountant or the tree, whichever the config's mechanism uses. */
static shoal_err load_state(coordinator *co, uint64_t version, shoal_errinfo *ei)
{
    const shoal_population_config *pc = co->pop->cfg;
    coord_dp *d = co->dp;
    shoal_dp_record rec;
    shoal_err err = version ? shoal_state_dp_load(co->state, co->pop_id, version, d->packed,
                                                  sizeof d->packed, &rec, ei)
                            : SHOAL_ENOTFOUND;
    if (err == SHOAL_ENOTFOUND) {
        if (version)
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': checkpoint version %llu was committed without "
                      "differential privacy; epsilon counts the rounds from now on only, and "
                      "does not cover what the earlier versions released",
                      pc->name, (unsigned long long)version);
        return SHOAL_OK;
    }
    if (err)
        return err;
    int stored_ftrl = rec.accountant_len >= 4 && memcmp(rec.accountant, "SFTR", 4) == 0;
    if (stored_ftrl != d->ftrl)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL,
            "population '%s': checkpoint version %llu was committed under %s, and the config "
            "now says mechanism \"%s\"; the two accountings do not add up here, so a population "
            "keeps its mechanism: set it back, or train under a new population name",
            pc->name, (unsigned long long)version, stored_ftrl ? "DP-FTRL" : "DP-FedAvg",
            d->ftrl ? "ftrl" : "fedavg");
    shoal_dp_ftrl_state fs;
    err = d->ftrl ? shoal_dp_ftrl_state_unpack(rec.accountant, rec.accountant_len, &fs)
                  : shoal_rdp_accountant_unpack(rec.accountant, rec.accountant_len, &d->acc);
    if (!err && d->ftrl) {
        d->tree = fs.tree;
        d->rounds = fs.rounds;
        d->rho = fs.rho;
        d->rho_closed = fs.rho_closed;
    }
    if (!err && pc->dp.adaptive.enabled && rec.next_clip > 0) {
        d->clip = plan_clip(rec.next_clip);
    } else if (!err && rec.next_clip > 0) {
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                  "population '%s': checkpoint version %llu was committed with adaptive "
                  "clipping (next clip %g); the config has none, so rounds go on with the "
                  "fixed clip %g",
                  pc->name, (unsigned long long)version, rec.next_clip, pc->dp.clip);
    }
    if (err)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "population '%s': the privacy state stored with checkpoint "
                                 "version %llu cannot be read; restore the state database from "
                                 "a backup",
                                 pc->name, (unsigned long long)version);
    return SHOAL_OK;
}

/* A stored tree made for another noise or restart period cannot go on:
 * the next round opens a fresh tree (the release so far stays in the
 * model; rho so far is closed). */
static shoal_err ftrl_fit_tree(coordinator *co)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    coord_dp *d = co->dp;
    const double stddev = dp->noise_multiplier * dp->clip;
    const size_t dim = co->pop->param_count;
    if (d->tree.step && d->tree.stddev == stddev && d->tree.restart_every == dp->restart_every &&
        d->tree.dim == dim)
        return SHOAL_OK;
    if (d->tree.step)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                  "population '%s': the stored DP-FTRL tree has node noise %g and restart_every "
                  "%llu; the config asks for %g and %llu, so the next round opens a new tree "
                  "(rho so far, %.6g, stays spent)",
                  co->pop->cfg->name, d->tree.stddev, (unsigned long long)d->tree.restart_every,
                  stddev, (unsigned long long)dp->restart_every, d->rho);
    d->rho_closed = d->rho;
    return shoal_dp_tree_init(&d->tree, dim, stddev, dp->restart_every);
}

static double current_epsilon(const coord_dp *d, const shoal_dp_population_config *dp,
                              double *order)
{
    double eps = INFINITY;
    *order = NAN;
    if (d->ftrl ? shoal_zcdp_epsilon(d->rho, dp->delta, &eps)
                : shoal_rdp_accountant_epsilon(&d->acc, dp->delta, SHOAL_DP_CONVERSION_IMPROVED,
                                               &eps, order))
        return INFINITY;
    return eps;
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
    d->ftrl = pc->dp.mechanism == SHOAL_DP_MECHANISM_FTRL;
    d->clip = pc->dp.clip;
    d->fraction = NAN;
    shoal_err err = shoal_rdp_accountant_init(&d->acc, NULL, 0);
    if (err)
        return shoal_errinfo_set(ei, err, "population '%s': cannot start the accountant", pc->name);
    if ((err = load_state(co, version, ei)))
        return err;
    if (d->ftrl &&
        (!(d->increment = shoal_mallocarray(co->pop->param_count, sizeof *d->increment)) ||
         (err = ftrl_fit_tree(co))))
        return shoal_errinfo_set(ei, err ? err : SHOAL_ENOMEM,
                                 "population '%s': cannot start the DP-FTRL tree", pc->name);
    d->epsilon = current_epsilon(d, &pc->dp, &d->order);
    SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
              "population '%s': differential privacy (%s) z=%g clip=%g expected_reports=%g q=%g "
              "(%s); %llu round(s) accounted, epsilon=%.6g at delta=%g",
              pc->name, d->ftrl ? "DP-FTRL" : "DP-FedAvg", pc->dp.noise_multiplier, d->clip,
              pc->dp.expected_reports, pc->dp.sampling_rate, sampling_note(&pc->dp),
              (unsigned long long)rounds_accounted(d), d->epsilon, pc->dp.delta);
    if (pc->dp.adaptive.enabled)
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': adaptive clipping toward the %g quantile of update norms at "
                  "rate %g; the count of unclipped updates gets noise %g and the update z_u=%g "
                  "(together z=%g); the next round's clip is %g",
                  pc->name, pc->dp.adaptive.target_quantile, pc->dp.adaptive.learning_rate,
                  pc->dp.adaptive.count_noise, pc->dp.adaptive.update_noise,
                  pc->dp.noise_multiplier, d->clip);
    check_budget(co);
    return SHOAL_OK;
}

void shoal_coordinator_dp_free(coordinator *co)
{
    if (co->dp)
        shoal_free(co->dp->increment);
    shoal_free(co->dp);
    co->dp = NULL;
}

int shoal_coordinator_dp_exhausted(const coordinator *co)
{
    return co->dp && atomic_load(&co->pop->metrics.dp_exhausted);
}

double shoal_coordinator_dp_round_clip(coordinator *co, uint64_t round)
{
    coord_dp *d = co->dp;
    if (!d)
        return 0;
    if (round != d->clip_round) {
        d->clip_round = round;
        d->round_clip = d->clip;
        d->round_reports = d->round_unclipped = 0;
    }
    return d->round_clip;
}

void shoal_coordinator_dp_count(coordinator *co, uint64_t round, uint64_t reports,
                                uint64_t unclipped)
{
    coord_dp *d = co->dp;
    if (!d || !co->pop->cfg->dp.adaptive.enabled || round != d->clip_round)
        return;
    d->round_reports += reports;
    d->round_unclipped += unclipped;
}

/* Adaptive clipping's step for the round being aggregated: the noised
 * fraction of its reports within S_t (the discrete Gaussian of
 * shoal_round_dp_noised_fraction, stddev count_noise, on the count) and
 * the next clip, pending until the commit. */
static shoal_err adapt_clip(coordinator *co, uint64_t round, shoal_errinfo *ei)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    coord_dp *d = co->dp;
    if (round != d->clip_round || d->round_unclipped > d->round_reports)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "adaptive clipping: round %llu's clip was never set, or it "
                                 "counted %llu unclipped of %llu reports",
                                 (unsigned long long)round, (unsigned long long)d->round_unclipped,
                                 (unsigned long long)d->round_reports);
    shoal_err err =
        shoal_round_dp_noised_fraction(d->round_unclipped, d->round_reports, dp->expected_reports,
                                       dp->adaptive.count_noise, &d->fraction);
    if (err)
        return shoal_errinfo_set(ei, err, "the count of unclipped updates could not be noised: %s",
                                 shoal_strerror(err));
    d->agg_clip = d->round_clip;
    d->agg_reports = d->round_reports;
    d->agg_unclipped = d->round_unclipped;
    d->next_clip = plan_clip(shoal_round_dp_adaptive_clip(
        d->round_clip, d->fraction, dp->adaptive.target_quantile, dp->adaptive.learning_rate));
    return SHOAL_OK;
}

shoal_err shoal_coordinator_dp_aggregated(coordinator *co, int64_t now, uint64_t round, float *sum)
{
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    coord_dp *d = co->dp;
    const int adaptive = dp->adaptive.enabled;
    /* With adaptive clipping the update's share of z (their theorem 1),
     * times the round's own clip. */
    const shoal_round_dp_config rc = {.clip = adaptive ? d->round_clip : dp->clip,
                                      .noise_multiplier = adaptive ? dp->adaptive.update_noise
                                                                   : dp->noise_multiplier,
                                      .expected_reports = dp->expected_reports};
    shoal_errinfo ei = {{0}};
    shoal_err err = adaptive ? adapt_clip(co, round, &ei) : SHOAL_OK;
    if (!err && d->ftrl) {
        /* The committed tree moves on only when this round commits. */
        d->pending = d->tree;
        err = shoal_round_dp_ftrl_mean(&d->pending, sum, co->pop->param_count, &rc, d->increment,
                                       sum, &ei);
    } else if (!err) {
        /* Noise once on the whole sum, then the fixed denominator. */
        err = shoal_round_dp_mean(sum, co->pop->param_count, &rc, sum, &ei);
    }
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
    size_t len;
    uint64_t steps;
    if (d->ftrl) {
        d->next_rounds = d->rounds + 1;
        d->next_rho = ftrl_rho(d, dp, d->pending.step, &d->next_rho_closed);
        if (shoal_zcdp_epsilon(d->next_rho, dp->delta, &d->next_epsilon))
            d->next_epsilon = INFINITY;
        const shoal_dp_ftrl_state fs = {.tree = d->pending,
                                        .rounds = d->next_rounds,
                                        .rho = d->next_rho,
                                        .rho_closed = d->next_rho_closed};
        shoal_dp_ftrl_state_pack(&fs, d->packed);
        len = SHOAL_DP_FTRL_STATE_PACKED_BYTES;
        steps = d->next_rounds;
    } else {
        d->next = d->acc;
        if (shoal_rdp_accountant_compose(&d->next, dp->sampling_rate, dp->noise_multiplier, 1) !=
                SHOAL_OK ||
            shoal_rdp_accountant_epsilon(&d->next, dp->delta, SHOAL_DP_CONVERSION_IMPROVED,
                                         &d->next_epsilon, &order) != SHOAL_OK)
            d->next_epsilon = INFINITY;
        len = shoal_rdp_accountant_pack(&d->next, d->packed);
        steps = d->next.steps;
    }
    const int adaptive = dp->adaptive.enabled;
    *out = (shoal_dp_record){.accountant = d->packed,
                             .accountant_len = len,
                             .steps = steps,
                             .epsilon = d->next_epsilon,
                             .delta = dp->delta,
                             .clip = adaptive ? d->agg_clip : dp->clip,
                             .unclipped_fraction = adaptive ? d->fraction : NAN,
                             .next_clip = adaptive ? d->next_clip : 0};
    return out;
}

void shoal_coordinator_dp_committed(coordinator *co, uint64_t round, uint64_t version)
{
    coord_dp *d = co->dp;
    if (!d)
        return;
    const shoal_dp_population_config *dp = &co->pop->cfg->dp;
    if (d->ftrl) {
        d->tree = d->pending;
        d->rounds = d->next_rounds;
        d->rho = d->next_rho;
        d->rho_closed = d->next_rho_closed;
    } else {
        d->acc = d->next;
    }
    d->epsilon = d->next_epsilon;
    const double round_clip = dp->adaptive.enabled ? d->agg_clip : dp->clip;
    if (dp->adaptive.enabled)
        d->clip = d->next_clip;
    if (d->ftrl)
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': round %llu committed as version %llu, DP-FTRL tree round "
                  "%llu of %s (node noise z=%g x clip %g, over %g expected reports): rho=%.6g, "
                  "epsilon=%.6g at delta=%g after %llu round(s) (zCDP, k=%u; %s)",
                  co->pop->cfg->name, (unsigned long long)round, (unsigned long long)version,
                  (unsigned long long)d->tree.step,
                  dp->restart_every ? "a restarting tree" : "one tree", dp->noise_multiplier,
                  dp->clip, dp->expected_reports, d->rho, d->epsilon, dp->delta,
                  (unsigned long long)d->rounds, dp->max_participations, sampling_note(dp));
    else if (dp->adaptive.enabled)
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': round %llu committed as version %llu with noise z_u=%g x "
                  "clip %g over %g expected reports; %llu of %llu reports within the clip, "
                  "noised fraction %.4f (target %g): the next round's clip is %g; epsilon=%.6g "
                  "at delta=%g after %llu round(s) (RDP at the total z=%g, q=%g, %s)",
                  co->pop->cfg->name, (unsigned long long)round, (unsigned long long)version,
                  dp->adaptive.update_noise, round_clip, dp->expected_reports,
                  (unsigned long long)d->agg_unclipped, (unsigned long long)d->agg_reports,
                  d->fraction, dp->adaptive.target_quantile, d->clip, d->epsilon, dp->delta,
                  (unsigned long long)d->acc.steps, dp->noise_multiplier, dp->sampling_rate,
                  sampling_note(dp));
    else
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': round %llu committed as version %llu with noise z=%g x clip "
                  "%g over %g expected reports: epsilon=%.6g at delta=%g after %llu round(s) "
                  "(RDP, q=%g, %s)",
                  co->pop->cfg->name, (unsigned long long)round, (unsigned long long)version,
                  dp->noise_multiplier, round_clip, dp->expected_reports, d->epsilon, dp->delta,
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
             (unsigned long long)(co->dp ? rounds_accounted(co->dp) : 0));
}
