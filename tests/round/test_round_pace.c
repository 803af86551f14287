/* Pace steering of a small population: its devices come back together, so
 * a population no larger than a round commits round after round with the
 * default selection window (Bonawitz et al. 2019, sec. 2.3). */
#include <criterion/criterion.h>

#include "shoal/round.h"

#define N       2
#define DEVICES 10

static const float initial[N] = {0.0f, 0.0f};

static shoal_round_config small_cfg(void)
{
    shoal_round_config c = shoal_round_defaults(SHOAL_ROUND_SYNC, DEVICES);
    c.over_selection = 1.0f;
    c.min_report_fraction = 1.0f;
    c.pipelining = 0;
    c.selection_window_ms = 60000;
    c.reporting_deadline_ms = 600000;
    c.retry_min_ms = 60000;
    c.retry_max_ms = 6 * 3600 * 1000;
    return c;
}

/* Where each device is: the moment it checks in next, or -1 while it
 * trains (it reports at report_at). */
struct fleet {
    int64_t next_checkin[DEVICES];
    int64_t report_at[DEVICES];
    shoal_session_id session[DEVICES];
    shoal_session_id next_session;
    int at_hi; /* devices come back at the end of their windows, else the start */
};

static int64_t pick(const struct fleet *f, int64_t now, int64_t lo, int64_t hi)
{
    cr_assert_leq(lo, hi);
    return now + (f->at_hi ? hi : lo);
}

/* Plays the engine's actions: a configured device trains for a time of its
 * own (devices differ by seconds, as real ones do); an aborted one comes
 * back when the engine said. */
static void play_actions(shoal_round_engine *e, struct fleet *f, int64_t now)
{
    shoal_round_action a;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW)
        for (int d = 0; d < DEVICES; d++) {
            if (f->session[d] != a.session)
                continue;
            if (a.kind == SHOAL_ACTION_CONFIGURE)
                f->report_at[d] = now + 20000 + 1500 * d;
            else if (a.kind == SHOAL_ACTION_ABORT)
                f->next_checkin[d] = pick(f, now, a.retry_min_ms, a.retry_max_ms);
        }
}

static int run_rounds(struct fleet *f, int rounds, int64_t spacing, int *abandoned)
{
    shoal_round_config c = small_cfg();
    shoal_round_engine *e = NULL;
    cr_assert_eq(shoal_round_engine_new(&c, initial, N, NULL, 0, 0, 0, &e), SHOAL_OK);
    for (int d = 0; d < DEVICES; d++) {
        f->next_checkin[d] = spacing * d;
        f->report_at[d] = -1;
    }
    const float delta[N] = {1.0f, 1.0f};
    int64_t now = 0;
    while (shoal_round_committed(e) < (uint64_t)rounds && now < 48LL * 3600 * 1000) {
        /* The next event: a check-in, a report or the engine's timer. */
        int64_t next = shoal_round_next_timer(e);
        for (int d = 0; d < DEVICES; d++) {
            if (f->next_checkin[d] >= 0 && f->next_checkin[d] < next)
                next = f->next_checkin[d];
            if (f->report_at[d] >= 0 && f->report_at[d] < next)
                next = f->report_at[d];
        }
        now = next;
        shoal_round_tick(e, now);
        for (int d = 0; d < DEVICES; d++) {
            if (f->next_checkin[d] == now) {
                f->next_checkin[d] = -1;
                f->session[d] = ++f->next_session;
                shoal_checkin_result r;
                cr_assert_eq(shoal_round_checkin(e, now, f->session[d], &r), SHOAL_OK);
                if (!r.accepted)
                    f->next_checkin[d] = pick(f, now, r.retry_min_ms, r.retry_max_ms);
            } else if (f->report_at[d] == now) {
                f->report_at[d] = -1;
                shoal_report rep = {.example_count = 10, .delta = delta, .loss_sum = 1.0};
                shoal_report_ack ack;
                cr_assert_eq(shoal_round_report(e, now, f->session[d], &rep, &ack), SHOAL_OK);
                f->next_checkin[d] = pick(f, now, ack.retry_min_ms, ack.retry_max_ms);
            }
        }
        play_actions(e, f, now);
    }
    *abandoned = (int)shoal_round_abandoned(e);
    int committed = (int)shoal_round_committed(e);
    shoal_round_engine_free(e);
    return committed;
}

/* Ten devices, a round of ten: devices finish training seconds apart, yet
 * every round after the first gathers all ten in one selection window,
 * whether they come back at the start or the end of their windows. */
Test(round_pace, a_small_population_comes_back_together)
{
    for (int at_hi = 0; at_hi <= 1; at_hi++) {
        struct fleet f = {.at_hi = at_hi};
        int abandoned = -1;
        int committed = run_rounds(&f, 20, 1000, &abandoned);
        cr_assert_eq(committed, 20, "coming back at the %s of their windows: %d of 20 rounds",
                     at_hi ? "end" : "start", committed);
        cr_assert_eq(abandoned, 0, "%d selections abandoned (at the %s)", abandoned,
                     at_hi ? "end" : "start");
    }
}

/* Ten devices that first come minutes apart, far more than a selection
 * window: selections are abandoned until the groups merge, then every
 * round commits. */
Test(round_pace, a_scattered_small_population_gathers)
{
    for (int at_hi = 0; at_hi <= 1; at_hi++) {
        struct fleet f = {.at_hi = at_hi};
        int abandoned = -1;
        int committed = run_rounds(&f, 20, 97000, &abandoned);
        cr_assert_eq(committed, 20, "%d of 20 rounds", committed);
        cr_assert_leq(abandoned, 10, "%d selections abandoned before the devices met", abandoned);
    }
}

/* Collects the ABORTs queued: their count, and the moment (absolute) they
 * all name; fails if they name different moments, a window below
 * retry_min_ms or a spread above a quarter of a selection window. */
static int aborts_to_one_moment(shoal_round_engine *e, const shoal_round_config *c, int64_t now,
                                int64_t *moment)
{
    shoal_round_action a;
    int n = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
        if (a.kind != SHOAL_ACTION_ABORT)
            continue;
        cr_assert_geq(a.retry_min_ms, c->retry_min_ms);
        cr_assert_leq(a.retry_max_ms - a.retry_min_ms, c->selection_window_ms / 4);
        if (n++ == 0)
            *moment = now + a.retry_min_ms;
        cr_assert_eq(now + a.retry_min_ms, *moment, "one moment for all");
    }
    return n;
}

/* Devices of an abandoned selection come back at one moment; a group that
 * opened a window meanwhile is still in it then, so the two merge, and the
 * merged group is sent back together. */
Test(round_pace, devices_of_abandoned_selections_meet_again)
{
    shoal_round_config c = small_cfg();
    c.population_estimate = DEVICES;
    shoal_round_engine *e = NULL;
    cr_assert_eq(shoal_round_engine_new(&c, initial, N, NULL, 0, 0, 0, &e), SHOAL_OK);
    shoal_checkin_result r;
    for (shoal_session_id s = 1; s <= 3; s++)
        cr_assert_eq(shoal_round_checkin(e, (int64_t)s * 1000, s, &r), SHOAL_OK);
    shoal_round_tick(e, 61000); /* 3 < 10: abandoned */
    int64_t first = 0;
    cr_assert_eq(aborts_to_one_moment(e, &c, 61000, &first), 3);
    cr_assert_eq(first, 61000 + c.retry_min_ms, "as soon as retry_min_ms allows");
    /* Two others open the next window, which is still open when the three
     * come back: five in one selection. */
    for (shoal_session_id s = 4; s <= 5; s++)
        cr_assert_eq(shoal_round_checkin(e, 70000, s, &r), SHOAL_OK);
    for (shoal_session_id s = 6; s <= 8; s++) {
        cr_assert_eq(shoal_round_checkin(e, first, s, &r), SHOAL_OK);
        cr_assert(r.accepted, "a returning device joins the open selection");
    }
    shoal_round_tick(e, 130000);
    int64_t second = 0;
    cr_assert_eq(aborts_to_one_moment(e, &c, 130000, &second), 5, "the five leave together");
    /* On the grid of gatherings, so that a group coming back at `first`
     * and sent away again goes to where this one comes. */
    int64_t period = c.selection_window_ms + c.retry_min_ms + c.selection_window_ms / 4;
    cr_assert_gt(second, first);
    cr_assert_eq((second - first) % period, 0, "%lld is not on the grid from %lld",
                 (long long)second, (long long)first);
    shoal_round_engine_free(e);
}
