/* Secure aggregation in the simulator: every group of a round's reports
 * runs the production SecAgg / SecAgg+ state machines (shoal/
 * secagg_protocol.h), devices and server in this thread, messages passed
 * by pointer. Bonawitz et al. CCS 2017, figure 4 (semi-honest variant);
 * Bell et al. CCS 2020 for the sparse graph. */
#include <math.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "aggregate_int.h"
#include "shoal/alloc.h"
#include "shoal/rng.h"
#include "shoal/secagg_protocol.h"

enum { NEVER = SHOAL_SECAGG_PHASE_DONE };

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static shoal_secagg_fixed fixed_for(const shoal_sim_secagg_config *cfg, uint32_t contributors)
{
    shoal_secagg_fixed fx = {.clip = cfg->clip,
                             .max_weight = cfg->max_weight,
                             .max_contributors = contributors,
                             .bits = cfg->bits};
    return fx;
}

shoal_err shoal_sim_secagg_check(const shoal_sim_secagg_config *cfg, uint32_t max_group,
                                 shoal_errinfo *ei)
{
    if (cfg->mode == SHOAL_SIM_SECAGG_OFF)
        return SHOAL_OK;
    if (!(cfg->clip > 0.0) || !isfinite(cfg->clip))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secagg-clip: must be a positive finite number (the fixed-point "
                                 "range [-C, C] of each update element), got %g",
                                 cfg->clip);
    if (cfg->bits < 1 || cfg->bits > 64)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secagg-bits: must be in [1, 64], got %u",
                                 cfg->bits);
    if (cfg->max_weight == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secagg-max-weight: must be at least 1");
    if (cfg->group_size != 0 && cfg->group_size < 3)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secagg-group-size: a group needs at least 3 devices, got %u "
                                 "(0: one group a round)",
                                 cfg->group_size);
    if (!(cfg->phase_dropout >= 0.0 && cfg->phase_dropout < 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secagg-phase-dropout: must be in [0, 1)");
    if (!(cfg->dropout_rate >= 0.0 && cfg->dropout_rate < 1.0) ||
        !(cfg->corrupt_rate >= 0.0 && cfg->corrupt_rate < 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secagg-dropout-rate, secagg-corrupt-rate: must be in [0, 1)");
    shoal_secagg_fixed fx = fixed_for(cfg, max_group ? max_group : 1);
    shoal_errinfo plan = {{0}};
    if (shoal_secagg_fixed_plan(&fx, &plan) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secagg-bits: %u bits cannot hold the sum of a group of %u with "
                                 "--secagg-clip %g and --secagg-max-weight %u (%s); raise "
                                 "--secagg-bits or lower --secagg-group-size, --secagg-clip or "
                                 "--secagg-max-weight",
                                 cfg->bits, max_group, cfg->clip, cfg->max_weight, plan.msg);
    return SHOAL_OK;
}

/* Degree and threshold. SecAgg+ on a group too small for any sparse graph
 * meeting its bounds (SHOAL_ELIMIT) falls back to the complete graph, as
 * shoal_secagg_plus_choose advises. The complete graph's threshold n/2 + 1
 * keeps two disjoint halves from both rebuilding a secret. */
static shoal_err group_shape(const shoal_sim_secagg_config *cfg, uint32_t n, uint32_t *degree,
                             uint32_t *threshold, shoal_errinfo *ei)
{
    *degree = n - 1;
    *threshold = n / 2 + 1;
    if (cfg->mode != SHOAL_SIM_SECAGG_PLUS)
        return SHOAL_OK;
    shoal_secagg_plus_params pp;
    shoal_err err = shoal_secagg_plus_choose(n, cfg->dropout_rate, cfg->corrupt_rate,
                                             SHOAL_SECAGG_SEMI_HONEST, &pp, ei);
    if (err == SHOAL_ELIMIT)
        return SHOAL_OK;
    if (err)
        return err;
    *degree = pp.degree;
    *threshold = pp.threshold;
    return SHOAL_OK;
}

struct group {
    shoal_secagg_config cfg;
    shoal_secagg_server *srv;
    shoal_secagg_client **dev;
    int *drop_at; /* the phase at which each device stops answering */
    uint64_t *input;
    uint8_t *masked;
    shoal_secagg_advertise *keys;
    shoal_secagg_sealed_shares *shares;
    shoal_secagg_revealed_share *revealed;
};

static void group_free(struct group *g)
{
    if (g->dev)
        for (uint32_t i = 0; i < g->cfg.n; i++)
            shoal_secagg_client_free(g->dev[i]);
    shoal_secagg_server_free(g->srv);
    shoal_free(g->dev);
    shoal_free(g->drop_at);
    shoal_free(g->input);
    shoal_free(g->masked);
    shoal_free(g->keys);
    shoal_free(g->shares);
    shoal_free(g->revealed);
}

/* A device that stops answering at `phase` is counted once, there. */
static void drop(struct group *g, uint32_t i, int phase, shoal_sim_secagg_stats *st)
{
    if (g->drop_at[i] > phase) {
        g->drop_at[i] = phase;
        st->dropouts[phase]++;
    }
}

/* Whether device i sits out `phase`; its planned dropout there counts. */
static int sits_out(const struct group *g, uint32_t i, int phase, shoal_sim_secagg_stats *st)
{
    if (g->drop_at[i] == phase)
        st->dropouts[phase]++;
    return g->drop_at[i] <= phase;
}

/* Runs the four phases of the semi-honest variant; the server ends in
 * DONE or FAILED. A device whose call fails counts as dropped there. */
static void run_phases(struct group *g, shoal_sim_secagg_stats *st)
{
    shoal_errinfo ei = {{0}};
    const uint32_t n = g->cfg.n;
    const size_t ring = shoal_secagg_ring_bytes(g->cfg.bits);
    for (uint32_t i = 0; i < n; i++) {
        if (sits_out(g, i, SHOAL_SECAGG_PHASE_ADVERTISE, st))
            continue;
        shoal_secagg_advertise a;
        if (shoal_secagg_client_advertise(g->dev[i], &a, &ei) ||
            shoal_secagg_server_on_advertise(g->srv, &a, &ei))
            drop(g, i, SHOAL_SECAGG_PHASE_ADVERTISE, st);
    }
    if (shoal_secagg_server_close_phase(g->srv, &ei))
        return;

    for (uint32_t i = 0; i < n; i++) {
        if (sits_out(g, i, SHOAL_SECAGG_PHASE_SHARE, st))
            continue;
        size_t nk = 0, ns = 0;
        if (shoal_secagg_server_keys_for(g->srv, i, g->keys, &nk) ||
            shoal_secagg_client_share(g->dev[i], g->keys, nk, g->shares, &ns, &ei) ||
            shoal_secagg_server_on_shares(g->srv, i, g->shares, ns, &ei))
            drop(g, i, SHOAL_SECAGG_PHASE_SHARE, st);
    }
    if (shoal_secagg_server_close_phase(g->srv, &ei))
        return;

    for (uint32_t i = 0; i < n; i++) {
        if (sits_out(g, i, SHOAL_SECAGG_PHASE_MASK, st))
            continue;
        const shoal_secagg_sealed_shares *in = NULL;
        size_t nin = 0;
        if (shoal_secagg_server_inbox(g->srv, i, &in, &nin) ||
            shoal_secagg_client_mask(g->dev[i], in, nin, g->input + (size_t)i * g->cfg.length,
                                     g->masked, &ei) ||
            shoal_secagg_server_on_masked(g->srv, i, g->masked, g->cfg.length * ring, &ei))
            drop(g, i, SHOAL_SECAGG_PHASE_MASK, st);
    }
    if (shoal_secagg_server_close_phase(g->srv, &ei))
        return;

    size_t nu3 = 0;
    const uint32_t *u3 = shoal_secagg_server_survivors(g->srv, &nu3);
    for (uint32_t i = 0; i < n; i++) {
        if (sits_out(g, i, SHOAL_SECAGG_PHASE_UNMASK, st))
            continue;
        size_t nr = 0;
        if (shoal_secagg_client_unmask(g->dev[i], u3, nu3, NULL, NULL, 0, g->revealed, &nr, &ei) ||
            shoal_secagg_server_on_unmask(g->srv, i, g->revealed, nr, &ei))
            drop(g, i, SHOAL_SECAGG_PHASE_UNMASK, st);
    }
    shoal_err closed = shoal_secagg_server_close_phase(g->srv, &ei);
    (void)closed; /* a failure leaves the server FAILED, which the caller reads */
}

/* One group: the reports first..first+n. Adds its decoded sum to `sum`. */
static shoal_err run_group(const shoal_sim_secagg_config *cfg, shoal_rng *rng,
                           const float *const *updates, const uint32_t *weights, uint32_t n,
                           size_t d, double *sum, double *decoded, uint64_t *total_weight,
                           shoal_sim_secagg_stats *st, shoal_errinfo *ei)
{
    st->groups++;
    if (n < 3) {
        st->groups_failed++;
        return SHOAL_OK;
    }
    struct group g;
    memset(&g, 0, sizeof g);
    g.cfg.n = n;
    g.cfg.bits = cfg->bits;
    g.cfg.length = d + 1;
    shoal_err err = group_shape(cfg, n, &g.cfg.degree, &g.cfg.threshold, ei);
    if (err)
        return err;
    randombytes_buf(g.cfg.session_id, sizeof g.cfg.session_id);
    randombytes_buf(g.cfg.graph_seed, sizeof g.cfg.graph_seed);
    shoal_secagg_fixed fx = fixed_for(cfg, n);
    if ((err = shoal_secagg_fixed_plan(&fx, ei)))
        return err;

    err = SHOAL_ENOMEM;
    if (!(g.dev = shoal_calloc(n, sizeof *g.dev)) || !(g.drop_at = shoal_calloc(n, sizeof(int))) ||
        !(g.input = shoal_mallocarray((size_t)n * g.cfg.length, sizeof *g.input)) ||
        !(g.masked = shoal_mallocarray(g.cfg.length, shoal_secagg_ring_bytes(cfg->bits))) ||
        !(g.keys = shoal_calloc(n, sizeof *g.keys)) ||
        !(g.shares = shoal_calloc(n, sizeof *g.shares)) ||
        !(g.revealed = shoal_calloc(n, sizeof *g.revealed)))
        goto out;
    if ((err = shoal_secagg_server_new(&g.cfg, &g.srv, ei)))
        goto out;
    for (uint32_t i = 0; i < n; i++) {
        if ((err = shoal_secagg_client_new(&g.cfg, i, NULL, &g.dev[i], ei)))
            goto out;
        if ((err = shoal_secagg_fixed_encode(&fx, updates[i], d, weights[i],
                                             g.input + (size_t)i * g.cfg.length)))
            goto out;
        /* Each device drops at each phase it reaches with probability P,
         * after its masked input included (then it misses the unmask). */
        g.drop_at[i] = NEVER;
        static const int phases[] = {SHOAL_SECAGG_PHASE_ADVERTISE, SHOAL_SECAGG_PHASE_SHARE,
                                     SHOAL_SECAGG_PHASE_MASK, SHOAL_SECAGG_PHASE_UNMASK};
        for (size_t p = 0; p < sizeof phases / sizeof phases[0]; p++)
            if (shoal_rng_double(rng) < cfg->phase_dropout) {
                g.drop_at[i] = phases[p];
                break;
            }
    }
    run_phases(&g, st);
    const uint64_t *ring_sum = NULL;
    uint32_t contributors = 0;
    uint64_t weight = 0;
    if (shoal_secagg_server_phase(g.srv) != SHOAL_SECAGG_PHASE_DONE ||
        shoal_secagg_server_result(g.srv, &ring_sum, &contributors) ||
        shoal_secagg_fixed_decode(&fx, ring_sum, d, contributors, decoded, &weight)) {
        st->groups_failed++;
        err = SHOAL_OK;
        goto out;
    }
    for (size_t k = 0; k < d; k++)
        sum[k] += decoded[k];
    *total_weight += weight;
    st->contributors += contributors;
out:
    group_free(&g);
    return err;
}

shoal_err shoal_sim_secagg_sum(const shoal_sim_secagg_config *cfg, uint64_t seed, uint64_t round,
                               const float *const *updates, const uint32_t *weights, size_t count,
                               size_t d, double *sum, uint64_t *total_weight,
                               shoal_sim_secagg_stats *st, shoal_errinfo *ei)
{
    memset(st, 0, sizeof *st);
    memset(sum, 0, d * sizeof *sum);
    *total_weight = 0;
    if (shoal_secagg_init() != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "secure aggregation: libsodium cannot start");
    double t0 = now_s();
    double *decoded = shoal_mallocarray(d ? d : 1, sizeof *decoded);
    if (!decoded)
        return SHOAL_ENOMEM;
    shoal_rng rng;
    shoal_rng_derive(&rng, seed ^ 0x5EC466ULL, round);
    /* Near-equal groups: ceil(count / G) of them, so no group is left with
     * a remainder too small to run. */
    size_t max = cfg->group_size ? cfg->group_size : (count ? count : 1);
    size_t groups = count ? (count + max - 1) / max : 0;
    shoal_err err = SHOAL_OK;
    for (size_t gi = 0, first = 0; gi < groups && !err; gi++) {
        size_t n = count / groups + (gi < count % groups);
        err = run_group(cfg, &rng, updates + first, weights + first, (uint32_t)n, d, sum, decoded,
                        total_weight, st, ei);
        first += n;
    }
    shoal_free(decoded);
    st->seconds = now_s() - t0;
    return err;
}
