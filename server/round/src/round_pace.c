/* Pace steering (Bonawitz et al. 2019, sec. 2.3): retry windows chosen so
 * that check-ins arrive at the rate the population's rounds need. */
#include <math.h>

#include "round_int.h"

/* Smoothing horizon of the check-in rate. */
static double rate_horizon_ms(const shoal_round_engine *e)
{
    double h = (double)e->cfg.selection_window_ms * 4.0;
    return h < 60000.0 ? 60000.0 : h;
}

void shoal_round_observe_checkin(shoal_round_engine *e, int64_t now)
{
    double tau = rate_horizon_ms(e);
    double dt = now > e->last_checkin ? (double)(now - e->last_checkin) : 0.0;
    e->checkin_rate = e->checkin_rate * exp(-dt / tau) + 1.0 / tau;
    e->last_checkin = now;
}

/* Devices the population must deliver per ms to keep rounds fed. */
static double demand_per_ms(const shoal_round_engine *e)
{
    const shoal_round_config *c = &e->cfg;
    double per_round = (double)shoal_round_ceil_mul(c->goal_count, c->over_selection);
    double d = per_round / (e->round_ms > 1.0 ? e->round_ms : 1.0);
    if (c->eval_every)
        d += (double)shoal_round_ceil_mul(c->eval_goal_count, c->over_selection) /
             ((double)c->eval_every * (e->round_ms > 1.0 ? e->round_ms : 1.0));
    return d;
}

/* The retry window for a device leaving now. Little's law: a population of
 * N devices each returning after R ms on average checks in at N/R per ms;
 * rounds need D per ms; so R = N / D. N comes from the configuration or from
 * the observed rate times the windows handed out (N = rate * R_current). */
void shoal_round_retry_window(shoal_round_engine *e, int64_t now, int64_t *lo, int64_t *hi)
{
    const shoal_round_config *c = &e->cfg;
    double since = now > e->last_checkin ? (double)(now - e->last_checkin) : 0.0;
    double rate = e->checkin_rate * exp(-since / rate_horizon_ms(e));
    double n = c->population_estimate ? (double)c->population_estimate : rate * e->retry_mean_ms;
    if (!c->population_estimate) {
        /* Smooth the estimate; it only moves as fast as rounds go by. */
        e->population = e->population > 0.0 ? 0.9 * e->population + 0.1 * n : n;
        n = e->population;
    } else {
        e->population = n;
    }
    double r = n / demand_per_ms(e);
    if (!(r >= (double)c->retry_min_ms))
        r = (double)c->retry_min_ms;
    if (r > (double)c->retry_max_ms)
        r = (double)c->retry_max_ms;
    e->retry_mean_ms = 0.9 * e->retry_mean_ms + 0.1 * r;
    /* +-20% spreads devices out so they do not return as one herd. */
    double a = r * 0.8, b = r * 1.2;
    if (a < (double)c->retry_min_ms)
        a = (double)c->retry_min_ms;
    if (b > (double)c->retry_max_ms)
        b = (double)c->retry_max_ms;
    if (b < a)
        b = a;
    *lo = (int64_t)a;
    *hi = (int64_t)b;
}

/* Whether the population is small next to one round's need: then its
 * devices must come back together, or no selection window gathers enough
 * of them (Bonawitz et al. 2019, sec. 2.3: "for small populations, pace
 * steering is used to ensure that a sufficient number of devices connect to
 * the server simultaneously"). */
int shoal_round_small_population(const shoal_round_engine *e)
{
    const shoal_round_config *c = &e->cfg;
    double per_round = (double)shoal_round_ceil_mul(c->goal_count, c->over_selection);
    double n = c->population_estimate ? (double)c->population_estimate : e->population;
    return c->mode == SHOAL_ROUND_SYNC && n > 0.0 && n <= 2.0 * per_round;
}

int64_t shoal_round_next_selection_estimate(const shoal_round_engine *e, const struct slot *s)
{
    /* When the round reporting now will have ended: twice the usual
     * reporting time, and never later than its deadline, the one moment
     * known for certain. Sending devices back while the round still
     * reports would split the population into groups that miss each
     * other's selection windows for good. */
    int64_t bound = s->reporting_started + (int64_t)(2.0 * e->round_ms);
    return bound < s->deadline ? bound : s->deadline;
}

/* How far apart devices sent back to one moment arrive. */
static int64_t gather_spread(const shoal_round_engine *e)
{
    int64_t spread = e->cfg.selection_window_ms / 4;
    return spread > 0 ? spread : 1;
}

int64_t shoal_round_gather_at(shoal_round_engine *e, int64_t now)
{
    if (!shoal_round_small_population(e))
        return 0;
    const shoal_round_config *c = &e->cfg;
    int64_t earliest = now + c->retry_min_ms;
    if (e->gather_base <= 0)
        e->gather_base = earliest;
    int64_t period = c->selection_window_ms + c->retry_min_ms + gather_spread(e);
    int64_t behind = earliest - e->gather_base; /* may be negative */
    int64_t k = behind > 0 ? (behind + period - 1) / period : -(-behind / period);
    return e->gather_base + k * period;
}

void shoal_round_retry_window_at(shoal_round_engine *e, int64_t now, int64_t anchor, int64_t *lo,
                                 int64_t *hi)
{
    shoal_round_retry_window(e, now, lo, hi);
    if (anchor <= 0 || !shoal_round_small_population(e))
        return;
    /* Every device of a round gets the same moment to come back, whenever
     * it was answered, and a spread of a quarter of a selection window: the
     * first to arrive opens the next selection and the rest arrive inside
     * its window. */
    const shoal_round_config *c = &e->cfg;
    int64_t at = anchor > now + c->retry_min_ms ? anchor : now + c->retry_min_ms;
    *lo = at - now;
    *hi = *lo + gather_spread(e);
    if (*hi > c->retry_max_ms) {
        *hi = c->retry_max_ms;
        if (*lo > *hi)
            *lo = *hi;
    }
}
