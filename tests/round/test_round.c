#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/round.h"

#define N 4 /* parameters */

static const float initial[N] = {1.0f, -1.0f, 0.5f, 0.0f};

static shoal_round_engine *engine(const shoal_round_config *cfg, int64_t now)
{
    shoal_round_engine *e = NULL;
    cr_assert_eq(shoal_round_engine_new(cfg, initial, N, NULL, 0, 0, now, &e), SHOAL_OK);
    return e;
}

static shoal_round_config sync_cfg(uint32_t goal)
{
    shoal_round_config c = shoal_round_defaults(SHOAL_ROUND_SYNC, goal);
    c.selection_window_ms = 1000;
    c.reporting_deadline_ms = 10000;
    c.retry_min_ms = 100;
    c.retry_max_ms = 100000;
    return c;
}

/* Drains the queue; returns how many actions of `kind` it held and copies
 * the last one into *last (if not NULL). */
static int drain(shoal_round_engine *e, shoal_round_action_kind kind, shoal_round_action *last)
{
    shoal_round_action a;
    int n = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW)
        if (a.kind == kind) {
            n++;
            if (last)
                *last = a;
        }
    return n;
}

static shoal_checkin_result checkin(shoal_round_engine *e, int64_t now, shoal_session_id s)
{
    shoal_checkin_result r;
    cr_assert_eq(shoal_round_checkin(e, now, s, &r), SHOAL_OK);
    return r;
}

static shoal_report_ack report(shoal_round_engine *e, int64_t now, shoal_session_id s,
                               uint64_t examples, const float *delta)
{
    shoal_report rep = {.example_count = examples, .delta = delta, .loss_sum = 0.5 * examples};
    shoal_report_ack ack;
    cr_assert_eq(shoal_round_report(e, now, s, &rep, &ack), SHOAL_OK);
    return ack;
}

Test(round_sync, selects_goal_times_over_selection_then_rejects_with_a_retry_window)
{
    shoal_round_config c = sync_cfg(3); /* target ceil(3 * 1.3) = 4 */
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 3; s++) {
        shoal_checkin_result r = checkin(e, 10, s);
        cr_assert(r.accepted);
        cr_assert_eq(r.task, SHOAL_TASK_TRAIN);
        cr_assert_not(r.configure_now);
    }
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 0);
    shoal_checkin_result fourth = checkin(e, 20, 4);
    cr_assert(fourth.accepted);
    cr_assert(fourth.configure_now);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 4);
    c.pipelining = 0;
    shoal_round_engine_free(e);

    e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 4; s++)
        cr_assert(checkin(e, 10, s).accepted);
    shoal_checkin_result late = checkin(e, 30, 5);
    cr_assert_not(late.accepted);
    cr_assert_geq(late.retry_min_ms, c.retry_min_ms);
    cr_assert_leq(late.retry_max_ms, c.retry_max_ms);
    cr_assert_leq(late.retry_min_ms, late.retry_max_ms);
    shoal_round_engine_free(e);
}

Test(round_sync, commit_applies_the_example_weighted_mean_delta)
{
    shoal_round_config c = sync_cfg(3);
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 4; s++)
        checkin(e, 0, s);
    drain(e, SHOAL_ACTION_CONFIGURE, NULL);
    float d1[N] = {1, 0, 0, 0}, d2[N] = {0, 2, 0, 0}, d3[N] = {0, 0, 3, 1};
    cr_assert_eq(report(e, 100, 1, 10, d1).outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(report(e, 110, 2, 30, d2).outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(shoal_round_version(e), 0);
    cr_assert_eq(report(e, 120, 3, 60, d3).outcome, SHOAL_REPORT_ACCEPTED);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, &a), 1);
    cr_assert_eq(a.version, 1);
    cr_assert_eq(a.stats.reported, 3);
    cr_assert_eq(a.stats.selected, 4);
    cr_assert_eq(a.stats.examples, 100);
    cr_assert_float_eq(a.stats.loss, 0.5, 1e-9);
    const float *p = shoal_round_params(e);
    /* mean = (10*d1 + 30*d2 + 60*d3) / 100 */
    cr_assert_float_eq(p[0], 1.0f + 0.1f, 1e-6);
    cr_assert_float_eq(p[1], -1.0f + 0.6f, 1e-6);
    cr_assert_float_eq(p[2], 0.5f + 1.8f, 1e-6);
    cr_assert_float_eq(p[3], 0.0f + 0.6f, 1e-6);
    /* The straggler's report is late; its session ends. */
    shoal_report_ack ack = report(e, 130, 4, 5, d1);
    cr_assert_eq(ack.outcome, SHOAL_REPORT_LATE);
    cr_assert_not_null(ack.reason);
    cr_assert_eq(report(e, 131, 4, 5, d1).outcome, SHOAL_REPORT_REFUSED);
    cr_assert_float_eq(shoal_round_params(e)[0], 1.1f, 1e-6);
    shoal_round_engine_free(e);
}

Test(round_sync, uniform_weighting_ignores_example_counts)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    c.weighting = SHOAL_WEIGHT_UNIFORM;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    checkin(e, 0, 2);
    float d1[N] = {1, 1, 1, 1}, d2[N] = {3, 3, 3, 3};
    report(e, 10, 1, 1, d1);
    report(e, 10, 2, 99, d2);
    cr_assert_float_eq(shoal_round_params(e)[3], 2.0f, 1e-6);
    shoal_round_engine_free(e);
}

Test(round_sync, deadline_commits_with_the_minimum_and_abandons_below_it)
{
    shoal_round_config c = sync_cfg(5); /* minimum ceil(5 * 0.8) = 4, target 7 */
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 7; s++)
        checkin(e, 0, s);
    float d[N] = {1, 1, 1, 1};
    for (shoal_session_id s = 1; s <= 3; s++)
        report(e, 100, s, 1, d);
    cr_assert_eq(shoal_round_next_timer(e), 10000);
    shoal_round_tick(e, 10000);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, &a), 1);
    cr_assert_eq(a.stats.reported, 3);
    cr_assert_eq(shoal_round_version(e), 0);
    cr_assert_eq(shoal_round_abandoned(e), 1);
    for (int i = 0; i < N; i++)
        cr_assert_float_eq(shoal_round_params(e)[i], initial[i], 0, "nothing half-applied");
    /* The retried round starts from a clean sum: only its own reports count. */
    for (shoal_session_id s = 11; s <= 17; s++)
        cr_assert(checkin(e, 20000, s).accepted);
    float d2[N] = {2, 2, 2, 2};
    for (shoal_session_id s = 11; s <= 14; s++)
        report(e, 20100, s, 1, d2);
    shoal_round_tick(e, 30000);
    cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, &a), 1);
    cr_assert_eq(a.stats.reported, 4);
    cr_assert_float_eq(shoal_round_params(e)[0], initial[0] + 2.0f, 1e-6);
    shoal_round_engine_free(e);
}

Test(round_sync, bad_reports_are_refused_and_leave_the_aggregate_untouched)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 2.0f; /* target 4 */
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 4; s++)
        checkin(e, 0, s);
    float good[N] = {1, 1, 1, 1}, nan[N] = {1, NAN, 1, 1}, inf[N] = {INFINITY, 0, 0, 0};
    shoal_report_ack ack = report(e, 1, 1, 10, nan);
    cr_assert_eq(ack.outcome, SHOAL_REPORT_REFUSED);
    cr_assert_not_null(strstr(ack.reason, "NaN"));
    cr_assert_eq(report(e, 1, 2, 10, inf).outcome, SHOAL_REPORT_REFUSED);
    cr_assert_eq(report(e, 1, 99, 10, good).outcome, SHOAL_REPORT_REFUSED); /* not selected */
    cr_assert_eq(report(e, 1, 3, 0, good).outcome, SHOAL_REPORT_REFUSED);   /* no examples */
    shoal_report no_delta = {.example_count = 3};
    cr_assert_eq(shoal_round_report(e, 1, 4, &no_delta, &ack), SHOAL_OK);
    cr_assert_eq(ack.outcome, SHOAL_REPORT_REFUSED);
    cr_assert_eq(shoal_round_version(e), 0);
    /* New devices fill the round; only their updates count. */
    shoal_round_tick(e, 10000); /* deadline: abandoned, all refused */
    drain(e, SHOAL_ACTION_ABANDONED, NULL);
    for (shoal_session_id s = 5; s <= 8; s++)
        checkin(e, 10001, s);
    report(e, 10002, 5, 1, good);
    cr_assert_eq(report(e, 10002, 5, 1, good).outcome, SHOAL_REPORT_REFUSED); /* twice */
    report(e, 10003, 6, 1, good);
    cr_assert_eq(shoal_round_version(e), 1);
    cr_assert_float_eq(shoal_round_params(e)[1], initial[1] + 1.0f, 1e-6);
    shoal_round_engine_free(e);
}

Test(round_sync, pipelining_selects_the_next_round_while_this_one_reports)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    checkin(e, 0, 2);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 2);
    /* Round 1 reports; round 2 is already selecting. */
    shoal_checkin_result r3 = checkin(e, 5, 3), r4 = checkin(e, 6, 4);
    cr_assert(r3.accepted && r4.accepted);
    cr_assert_eq(r3.round, 2);
    cr_assert_not(r4.configure_now, "waits for round 1's model");
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 0);
    /* A report from a waiting device is refused: it has no plan yet. */
    float d[N] = {1, 0, 0, 0};
    cr_assert_eq(report(e, 7, 3, 1, d).outcome, SHOAL_REPORT_REFUSED);
    checkin(e, 8, 5); /* replaces device 3 */
    report(e, 10, 1, 1, d);
    report(e, 11, 2, 1, d);
    shoal_round_action a;
    int configures = 0, commits = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
        if (a.kind == SHOAL_ACTION_COMMIT)
            commits++;
        if (a.kind == SHOAL_ACTION_CONFIGURE) {
            configures++;
            cr_assert_eq(a.version, 1, "round 2 trains on round 1's model");
            cr_assert_eq(a.round, 2);
        }
    }
    cr_assert_eq(commits, 1);
    cr_assert_eq(configures, 2);
    shoal_round_engine_free(e);
}

Test(round_sync, without_pipelining_check_ins_during_reporting_are_rejected)
{
    shoal_round_config c = sync_cfg(1);
    c.over_selection = 1.0f;
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    cr_assert_not(checkin(e, 1, 2).accepted);
    float d[N] = {0};
    report(e, 2, 1, 1, d);
    cr_assert(checkin(e, 3, 3).accepted);
    shoal_round_engine_free(e);
}

Test(round_sync, selection_window_configures_with_the_minimum_or_keeps_waiting)
{
    shoal_round_config c = sync_cfg(10); /* minimum 8, target 13 */
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 7; s++)
        checkin(e, 0, s);
    cr_assert_eq(shoal_round_next_timer(e), 1000);
    shoal_round_tick(e, 1000);
    /* 7 < minimum: the selection is abandoned and its devices released. */
    shoal_round_action a;
    int aborts = 0, abandoned = 0, configures = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
        aborts += a.kind == SHOAL_ACTION_ABORT;
        abandoned += a.kind == SHOAL_ACTION_ABANDONED;
        configures += a.kind == SHOAL_ACTION_CONFIGURE;
        if (a.kind == SHOAL_ACTION_ABORT)
            cr_assert_eq(a.cause, SHOAL_ABORT_NO_TASK, "an abandoned selection leaves no task");
    }
    cr_assert_eq(aborts, 7);
    cr_assert_eq(abandoned, 1);
    cr_assert_eq(configures, 0);
    cr_assert_eq(shoal_round_next_timer(e), INT64_MAX,
                 "the new selection's window waits for its first device");
    for (shoal_session_id s = 11; s <= 18; s++)
        checkin(e, 1500, s);
    cr_assert_eq(shoal_round_next_timer(e), 2500, "the first device opened the window");
    shoal_round_tick(e, 2500);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 8, "8 >= minimum: configured");
    cr_assert_eq(shoal_round_next_timer(e), 12500);
    shoal_round_engine_free(e);
}

/* A population with no devices opens no round to abandon: the selection
 * idles without a timer, and its window starts with the first device. */
Test(round_sync, no_round_is_abandoned_while_no_device_checks_in)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    c.min_report_fraction = 1.0f;
    shoal_round_engine *e = engine(&c, 0);
    cr_assert_eq(shoal_round_next_timer(e), INT64_MAX, "no window runs before a device comes");
    for (int64_t t = 1000; t <= 10000; t += 1000)
        shoal_round_tick(e, t);
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, NULL), 0, "an empty selection was abandoned");
    cr_assert_eq(shoal_round_abandoned(e), 0u);
    cr_assert_eq(shoal_round_next_timer(e), INT64_MAX, "an idle selection keeps a timer");
    /* The first device opens the window; the round keeps its number. */
    shoal_checkin_result r = checkin(e, 50000, 1);
    cr_assert(r.accepted);
    cr_assert_eq(r.round, 1u);
    cr_assert_eq(shoal_round_next_timer(e), 51000);
    /* One device is below the minimum of two: that selection is abandoned
     * when its window closes, and the next one idles again. */
    shoal_round_tick(e, 51000);
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, NULL), 1);
    cr_assert_eq(shoal_round_abandoned(e), 1u);
    shoal_round_tick(e, 52000);
    cr_assert_eq(shoal_round_next_timer(e), INT64_MAX);
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, NULL), 0);
    shoal_round_engine_free(e);
}

/* A small population (10 devices, rounds of 10): every device of a round
 * is sent back for the same moment, whenever its report came, so the next
 * selection gathers them all. */
Test(round_sync, a_small_population_is_sent_back_together)
{
    shoal_round_config c = sync_cfg(10);
    c.over_selection = 1.0f;
    c.min_report_fraction = 1.0f;
    c.pipelining = 0;
    c.population_estimate = 10;
    c.reporting_deadline_ms = 10000;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 10; s++)
        cr_assert(checkin(e, 100 + (int64_t)s, s).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 10);
    int64_t back = -1;
    for (shoal_session_id s = 1; s <= 10; s++) {
        int64_t at = 300 + 100 * (int64_t)s; /* within twice the usual round */
        shoal_report_ack ack = report(e, at, s, 10, initial);
        cr_assert_eq(ack.outcome, SHOAL_REPORT_ACCEPTED);
        cr_assert_leq(ack.retry_max_ms - ack.retry_min_ms, c.selection_window_ms / 4);
        if (back < 0)
            back = at + ack.retry_min_ms;
        cr_assert_eq(at + ack.retry_min_ms, back, "device %llu comes back at %lld, not %lld",
                     (unsigned long long)s, (long long)(at + ack.retry_min_ms), (long long)back);
    }
    cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, NULL), 1);
    shoal_round_engine_free(e);

    /* A large population is paced as before: spread out, not lined up. */
    c.population_estimate = 1000;
    e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 10; s++)
        cr_assert(checkin(e, 100, s).accepted);
    shoal_report_ack a1 = report(e, 400, 1, 10, initial), a2 = report(e, 900, 2, 10, initial);
    cr_assert_neq(400 + a1.retry_min_ms, 900 + a2.retry_min_ms);
    cr_assert_gt(a1.retry_max_ms - a1.retry_min_ms, c.selection_window_ms / 4);
    shoal_round_engine_free(e);
}

Test(round_sync, lost_devices_free_their_place_or_count_as_dropped)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    shoal_round_lost(e, 1, 1);
    checkin(e, 2, 2);
    checkin(e, 3, 3);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 2);
    shoal_round_lost(e, 4, 2);
    shoal_round_lost(e, 4, 12345); /* unknown: ignored */
    float d[N] = {0};
    report(e, 5, 3, 1, d);
    /* Nobody is left and 1 < minimum 2: abandoned at once. */
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, &a), 1);
    cr_assert_eq(a.stats.dropped, 1);
    cr_assert_eq(a.stats.reported, 1);
    cr_assert_eq(a.stats.ended_ms, 5);
    shoal_round_engine_free(e);
}

Test(round_sync, server_optimizer_steps_on_the_mean_delta)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    c.server_optim = shoal_server_optim_defaults(SHOAL_SERVER_FEDADAM);
    shoal_round_engine *e = engine(&c, 0);
    shoal_server_optim *ref;
    cr_assert_eq(shoal_server_optim_new(&c.server_optim, N, &ref), SHOAL_OK);
    float x[N];
    memcpy(x, initial, sizeof x);
    for (int round = 0; round < 3; round++) {
        shoal_session_id a = 10 * round + 1, b = a + 1;
        checkin(e, round * 100, a);
        checkin(e, round * 100, b);
        float da[N] = {0.1f * round, -0.2f, 0.3f, 0}, db[N] = {0.3f, 0.2f * round, -0.1f, 0.05f};
        report(e, round * 100 + 1, a, 1, da);
        report(e, round * 100 + 2, b, 3, db);
        float mean[N];
        for (int i = 0; i < N; i++)
            mean[i] = (da[i] * 1 + db[i] * 3) / 4;
        cr_assert_eq(shoal_server_optim_apply(ref, x, mean), SHOAL_OK);
        for (int i = 0; i < N; i++)
            cr_assert_float_eq(shoal_round_params(e)[i], x[i], 1e-6, "round %d param %d", round, i);
    }
    cr_assert_eq(shoal_round_committed(e), 3);
    shoal_server_optim_free(ref);
    shoal_round_engine_free(e);
}

Test(round_eval, evaluation_opens_after_every_r_commits_and_weights_by_examples)
{
    shoal_round_config c = sync_cfg(1);
    c.over_selection = 1.0f;
    c.pipelining = 0;
    c.eval_every = 2;
    c.eval_goal_count = 2;
    shoal_round_engine *e = engine(&c, 0);
    float d[N] = {0.5f, 0, 0, 0};
    for (int r = 0; r < 2; r++) {
        checkin(e, r * 10, 100 + r);
        report(e, r * 10 + 1, 100 + r, 1, d);
    }
    drain(e, SHOAL_ACTION_COMMIT, NULL);
    /* Evaluation comes first for the next check-ins. */
    shoal_checkin_result r1 = checkin(e, 50, 201), r2 = checkin(e, 51, 202);
    cr_assert_eq(r1.task, SHOAL_TASK_EVAL);
    cr_assert_eq(r2.task, SHOAL_TASK_EVAL);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, &a), 2);
    cr_assert_eq(a.task, SHOAL_TASK_EVAL);
    cr_assert_eq(a.version, 2);
    shoal_report ra = {.example_count = 100, .loss_sum = 30.0, .correct = 90};
    shoal_report rb = {.example_count = 300, .loss_sum = 150.0, .correct = 150};
    shoal_report_ack ack;
    cr_assert_eq(shoal_round_report(e, 60, 201, &ra, &ack), SHOAL_OK);
    cr_assert_eq(ack.outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(shoal_round_report(e, 61, 202, &rb, &ack), SHOAL_OK);
    cr_assert_eq(drain(e, SHOAL_ACTION_EVALUATED, &a), 1);
    cr_assert_float_eq(a.stats.accuracy, 240.0 / 400.0, 1e-12);
    cr_assert_float_eq(a.stats.loss, 180.0 / 400.0, 1e-12);
    cr_assert_eq(a.version, 2);
    cr_assert_eq(shoal_round_version(e), 2, "evaluation never changes the model");
    /* An evaluation report with more hits than examples is refused. */
    shoal_round_engine_free(e);
}

static shoal_round_config async_cfg(uint32_t concurrency, uint32_t k)
{
    shoal_round_config c = shoal_round_defaults(SHOAL_ROUND_ASYNC, concurrency);
    c.buffer_size = k;
    c.reporting_deadline_ms = 1000;
    c.retry_min_ms = 10;
    c.retry_max_ms = 10000;
    return c;
}

Test(round_async, fedbuff_steps_every_k_reports_with_staleness_weights)
{
    shoal_round_config c = async_cfg(3, 2);
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 3; s++) {
        shoal_checkin_result r = checkin(e, 0, s);
        cr_assert(r.accepted && r.configure_now);
        cr_assert_eq(r.round, 0);
    }
    cr_assert_not(checkin(e, 1, 4).accepted, "concurrency is 3");
    float d1[N] = {1, 0, 0, 0}, d2[N] = {0, 1, 0, 0}, d3[N] = {0, 0, 4, 0};
    report(e, 10, 1, 1, d1);
    report(e, 11, 2, 1, d2);
    /* step 1: x += (d1 + d2) / 2 */
    cr_assert_eq(shoal_round_version(e), 1);
    cr_assert_float_eq(shoal_round_params(e)[0], 1.5f, 1e-6);
    cr_assert_float_eq(shoal_round_params(e)[1], -0.5f, 1e-6);
    /* Device 3 trained on version 0: staleness 1, weight 1/sqrt(2). */
    cr_assert(checkin(e, 12, 5).accepted);
    report(e, 20, 3, 1, d3);
    float d5[N] = {0, 0, 0, 2};
    report(e, 21, 5, 1, d5);
    cr_assert_eq(shoal_round_version(e), 2);
    cr_assert_float_eq(shoal_round_params(e)[2], 0.5f + 4.0f / sqrtf(2.0f) / 2.0f, 1e-5);
    cr_assert_float_eq(shoal_round_params(e)[3], 1.0f, 1e-6);
    shoal_round_engine_free(e);
}

/* Server steps and federated evaluations are numbered from one sequence:
 * the server keys its round records by number. */
Test(round_async, steps_and_evaluations_never_share_a_number)
{
    shoal_round_config c = async_cfg(2, 1);
    c.eval_every = 1;
    c.eval_goal_count = 1;
    c.min_report_fraction = 1.0f;
    c.over_selection = 1.0f;
    shoal_round_engine *e = engine(&c, 0);
    uint64_t numbers[16];
    int kinds[16], n = 0;
    shoal_session_id next = 1;
    float d[N] = {0.5f, 0, 0, 0};
    for (int64_t now = 0; now < 400 && n < 12; now += 10) {
        shoal_session_id s = next++;
        shoal_checkin_result r = checkin(e, now, s);
        shoal_round_action a;
        while (shoal_round_next_action(e, &a) == SHOAL_ROW)
            (void)a;
        if (!r.accepted)
            continue;
        if (r.task == SHOAL_TASK_EVAL) {
            shoal_report rep = {.example_count = 4, .loss_sum = 1.0, .correct = 3};
            shoal_report_ack ack;
            cr_assert_eq(shoal_round_report(e, now + 1, s, &rep, &ack), SHOAL_OK);
        } else {
            report(e, now + 1, s, 1, d);
        }
        while (shoal_round_next_action(e, &a) == SHOAL_ROW)
            if (a.kind == SHOAL_ACTION_COMMIT || a.kind == SHOAL_ACTION_EVALUATED ||
                a.kind == SHOAL_ACTION_ABANDONED) {
                cr_assert_lt(n, 16);
                numbers[n] = a.round;
                kinds[n++] = a.kind;
            }
    }
    int evals = 0, steps = 0;
    for (int i = 0; i < n; i++) {
        evals += kinds[i] == SHOAL_ACTION_EVALUATED;
        steps += kinds[i] == SHOAL_ACTION_COMMIT;
        for (int j = 0; j < i; j++)
            cr_assert_neq(numbers[i], numbers[j], "record %d and %d are both number %llu", j, i,
                          (unsigned long long)numbers[i]);
    }
    cr_assert_geq(evals, 2, "%d evaluations", evals);
    cr_assert_geq(steps, 2, "%d steps", steps);
    shoal_round_engine_free(e);
}

Test(round_async, updates_staler_than_the_maximum_are_refused)
{
    shoal_round_config c = async_cfg(3, 1);
    c.max_staleness = 1;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    checkin(e, 0, 2);
    checkin(e, 0, 3);
    float d[N] = {1, 1, 1, 1};
    report(e, 1, 1, 1, d);                        /* version 1 */
    report(e, 2, 2, 1, d);                        /* staleness 1: fine; version 2 */
    shoal_report_ack ack = report(e, 3, 3, 1, d); /* staleness 2 */
    cr_assert_eq(ack.outcome, SHOAL_REPORT_REFUSED);
    cr_assert_not_null(strstr(ack.reason, "stale"));
    cr_assert_eq(shoal_round_version(e), 2);
    shoal_round_engine_free(e);
}

Test(round_async, sessions_past_the_deadline_give_their_slot_away)
{
    shoal_round_config c = async_cfg(1, 1);
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1);
    cr_assert_not(checkin(e, 10, 2).accepted);
    cr_assert_eq(shoal_round_next_timer(e), 1000);
    shoal_round_tick(e, 1000);
    cr_assert(checkin(e, 1001, 3).accepted);
    float d[N] = {0};
    cr_assert_eq(report(e, 1002, 1, 1, d).outcome, SHOAL_REPORT_LATE);
    shoal_round_engine_free(e);
}

Test(round_pace, retry_window_grows_with_the_population_and_stays_in_bounds)
{
    shoal_round_config c = sync_cfg(100);
    c.retry_min_ms = 1000;
    c.retry_max_ms = 1000000000;
    c.pipelining = 0;
    c.population_estimate = 10000;
    shoal_round_engine *small = engine(&c, 0);
    c.population_estimate = 1000000;
    shoal_round_engine *big = engine(&c, 0);
    shoal_checkin_result rs, rb;
    /* Fill the selection so the next check-in is rejected. */
    for (shoal_session_id s = 1; s <= 130; s++) {
        checkin(small, 0, s);
        checkin(big, 0, s);
    }
    rs = checkin(small, 1, 1000);
    rb = checkin(big, 1, 1000);
    cr_assert_not(rs.accepted);
    cr_assert_not(rb.accepted);
    /* Before any commit a round is assumed to last one selection window
     * (1 s): demand is 130 devices per second, the window's centre N / D. */
    double round_ms = 1000.0, want = 10000.0 / (130.0 / round_ms);
    double mid = (rs.retry_min_ms + rs.retry_max_ms) / 2.0;
    cr_assert_float_eq(mid, want, want * 0.01);
    cr_assert_float_eq((rb.retry_min_ms + rb.retry_max_ms) / 2.0, want * 100, want);
    cr_assert_lt(rs.retry_min_ms, rs.retry_max_ms, "a window, not a point");
    shoal_round_engine_free(small);
    shoal_round_engine_free(big);
    c.population_estimate = 1000000000;
    c.retry_max_ms = 5000;
    shoal_round_engine *huge = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 131; s++) {
        shoal_checkin_result r = checkin(huge, 0, s);
        if (!r.accepted) {
            cr_assert_leq(r.retry_max_ms, 5000);
            cr_assert_geq(r.retry_min_ms, 1000);
        }
    }
    shoal_round_engine_free(huge);
}

Test(round_pace, learns_the_population_from_the_check_in_rate)
{
    shoal_round_config c = sync_cfg(1);
    c.over_selection = 1.0f;
    c.pipelining = 0;
    c.retry_min_ms = 10;
    c.retry_max_ms = 10000000;
    shoal_round_engine *e = engine(&c, 0);
    checkin(e, 0, 1); /* selected; everyone else is rejected while it trains */
    /* 1000 devices check in once each over 100 s, told to come back later. */
    shoal_checkin_result r = {0};
    for (shoal_session_id s = 2; s < 1002; s++)
        r = checkin(e, (int64_t)s * 100, s);
    cr_assert_not(r.accepted);
    cr_assert_gt(shoal_round_population_estimate(e), 0.0);
    shoal_round_engine_free(e);
}

Test(round_config, bad_values_are_refused_with_the_field_named)
{
    shoal_errinfo ei;
    shoal_round_config c = sync_cfg(10);
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_OK);
    c.goal_count = 0;
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "goal_count"));
    c = sync_cfg(10);
    c.over_selection = 0.9f;
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "over_selection"));
    c = sync_cfg(10);
    c.min_report_fraction = 0.0f;
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "min_report_fraction"));
    c = sync_cfg(10);
    c.retry_max_ms = c.retry_min_ms - 1;
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "retry"));
    c = async_cfg(10, 0);
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "buffer_size"));
    c = sync_cfg(10);
    c.server_optim.tau = 0;
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "tau"));
    shoal_round_engine *e = NULL;
    cr_assert_eq(shoal_round_engine_new(&c, initial, N, NULL, 0, 0, 0, &e), SHOAL_EINVAL);
    cr_assert_null(e);
}

Test(round_sync, duplicate_check_in_is_a_state_error)
{
    shoal_round_config c = sync_cfg(3);
    shoal_round_engine *e = engine(&c, 0);
    shoal_checkin_result r;
    cr_assert_eq(shoal_round_checkin(e, 0, 7, &r), SHOAL_OK);
    cr_assert_eq(shoal_round_checkin(e, 0, 7, &r), SHOAL_ESTATE);
    shoal_round_engine_free(e);
}

Test(round_sync, restored_engine_continues_from_its_checkpoint)
{
    shoal_round_config c = sync_cfg(1);
    c.over_selection = 1.0f;
    c.server_optim = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVGM);
    shoal_round_engine *a = engine(&c, 0);
    float d[N] = {1, 2, 3, 4};
    checkin(a, 0, 1);
    report(a, 1, 1, 1, d);
    /* Checkpoint: params, optimizer state, version. */
    const shoal_server_optim *so = shoal_round_server_optim(a);
    float state[N];
    uint64_t steps;
    shoal_server_optim_state_get(so, state, &steps);
    shoal_round_engine *b = NULL;
    cr_assert_eq(shoal_round_engine_new(&c, shoal_round_params(a), N, state, steps,
                                        shoal_round_version(a), 100, &b),
                 SHOAL_OK);
    checkin(a, 100, 2);
    report(a, 101, 2, 1, d);
    checkin(b, 100, 2);
    report(b, 101, 2, 1, d);
    cr_assert_eq(shoal_round_version(b), 2);
    cr_assert_eq(memcmp(shoal_round_params(a), shoal_round_params(b), sizeof(float) * N), 0);
    shoal_round_engine_free(a);
    shoal_round_engine_free(b);
}

Test(round_sync, many_sessions_grow_the_table_without_losing_any)
{
    shoal_round_config c = sync_cfg(2000);
    c.over_selection = 1.0f;
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 2000; s++)
        cr_assert(checkin(e, 0, s * 7919).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 2000);
    float d[N] = {1, 1, 1, 1};
    for (shoal_session_id s = 1; s <= 2000; s++)
        cr_assert_eq(report(e, 1, s * 7919, 1, d).outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(shoal_round_version(e), 1);
    cr_assert_float_eq(shoal_round_params(e)[3], 1.0f, 1e-5);
    shoal_round_engine_free(e);
}

Test(round_sync, allocation_failures_are_reported_and_leak_nothing)
{
    shoal_round_config c = sync_cfg(2);
    for (long k = 0;; k++) {
        shoal_failalloc_install(k);
        shoal_round_engine *e = NULL;
        shoal_err err = shoal_round_engine_new(&c, initial, N, NULL, 0, 0, 0, &e);
        shoal_round_engine_free(e);
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0);
        if (!err)
            break;
        cr_assert_eq(err, SHOAL_ENOMEM);
        cr_assert_lt(k, 50);
    }
}

Test(round_sync, a_round_with_nobody_left_to_report_closes_before_its_deadline)
{
    shoal_round_config c = sync_cfg(10); /* minimum 8, target 13 */
    c.pipelining = 0;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 9; s++)
        checkin(e, 0, s);
    shoal_round_tick(e, 1000); /* window closes with 9 >= 8 selected */
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 9);
    float d[N] = {1, 1, 1, 1};
    for (shoal_session_id s = 1; s <= 8; s++)
        report(e, 2000, s, 1, d);
    cr_assert_eq(shoal_round_version(e), 0, "one device still training");
    shoal_round_lost(e, 2500, 9);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, &a), 1, "nobody left: commit at once");
    cr_assert_eq(a.stats.ended_ms, 2500);
    cr_assert_eq(a.stats.reported, 8);
    cr_assert_eq(a.stats.dropped, 1);
    shoal_round_engine_free(e);
}

Test(round_eval, competing_selections_below_their_minimum_release_their_devices)
{
    /* 10 devices; training needs 4 of a target of 7, evaluation 8 of 13.
     * Selections that miss their minimum release their devices, so the
     * population ends up serving both instead of deadlocking. */
    shoal_round_config c = sync_cfg(5);
    c.eval_every = 1;
    c.eval_goal_count = 10;
    shoal_round_engine *e = engine(&c, 0);
    int64_t now = 0;
    int busy[11] = {0};
    shoal_session_id next = 1, device_of[100000] = {0};
    int evaluated = 0;
    float d[N] = {0.1f, 0, 0, 0};
    for (int step = 0; step < 4000 && (shoal_round_committed(e) < 3 || !evaluated); step++) {
        now += 50;
        for (int dev = 1; dev <= 10; dev++) {
            if (busy[dev])
                continue;
            shoal_checkin_result r;
            shoal_session_id sid = next++;
            cr_assert_eq(shoal_round_checkin(e, now, sid, &r), SHOAL_OK);
            device_of[sid] = (shoal_session_id)dev;
            if (r.accepted)
                busy[dev] = (int)sid;
        }
        shoal_round_tick(e, now);
        shoal_round_action a;
        while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
            int dev = (int)device_of[a.session];
            if (a.kind == SHOAL_ACTION_ABORT)
                busy[dev] = 0;
            if (a.kind == SHOAL_ACTION_EVALUATED)
                evaluated++;
            if (a.kind == SHOAL_ACTION_CONFIGURE) {
                /* Report at once: train or evaluate. */
                shoal_report rep = {.example_count = 10, .loss_sum = 1.0, .correct = 5};
                if (a.task == SHOAL_TASK_TRAIN)
                    rep.delta = d;
                shoal_report_ack ack;
                cr_assert_eq(shoal_round_report(e, now, a.session, &rep, &ack), SHOAL_OK);
                busy[dev] = 0;
            }
        }
    }
    cr_assert_geq(shoal_round_committed(e), 3, "training made progress");
    cr_assert_geq(evaluated, 1, "an evaluation completed");
    shoal_round_engine_free(e);
}

/* ---- external aggregation -------------------------------------------------------- */

/* Runs one round of three reports through an engine, folding them inside
 * (external 0) or outside (external 1), and returns the committed model. */
static void round_with(int external, int pipelining, float out[N])
{
    shoal_round_config c = sync_cfg(3);
    c.over_selection = 1.0f;
    c.pipelining = pipelining;
    c.external_aggregation = external;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 3; s++)
        cr_assert(checkin(e, 10, s).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 3);
    const float d[3][N] = {{0.1f, 0.2f, 0.3f, 0.4f}, {-1, 0, 1, 2}, {0.5f, 0.5f, -0.5f, 0}};
    const uint64_t ex[3] = {10, 30, 60};
    double sum[N] = {0};
    for (int i = 0; i < 3; i++) {
        shoal_report_ack ack =
            report(e, 20 + i, (shoal_session_id)(i + 1), ex[i], external ? NULL : d[i]);
        cr_assert_eq(ack.outcome, SHOAL_REPORT_ACCEPTED);
        if (external) {
            cr_assert_float_eq(ack.fold_weight, (float)ex[i], 0);
            cr_assert_eq(ack.aggregate, 1u);
            for (int j = 0; j < N; j++)
                sum[j] += ack.fold_weight * d[i][j];
        }
    }
    if (external) {
        shoal_round_action a;
        cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, NULL), 0, "no commit before the sum");
        cr_assert_eq(shoal_round_version(e), 0u);
        /* The round is closed: a late report is refused as such. */
        cr_assert(checkin(e, 30, 9).accepted == (pipelining != 0));
        float fsum[N];
        for (int j = 0; j < N; j++)
            fsum[j] = (float)sum[j];
        cr_assert_eq(shoal_round_aggregated(e, 40, 2, fsum), SHOAL_ESTATE, "wrong round");
        if (external == 2) {
            /* The driver divides: by the weights it knows (100 examples). */
            float mean[N];
            for (int j = 0; j < N; j++)
                mean[j] = (float)(sum[j] / 100.0);
            cr_assert_eq(shoal_round_aggregated_mean(e, 40, 2, mean), SHOAL_ESTATE);
            cr_assert_eq(shoal_round_aggregated_mean(e, 40, 1, mean), SHOAL_OK);
            cr_assert_eq(shoal_round_aggregated_mean(e, 41, 1, mean), SHOAL_ESTATE, "only once");
        } else {
            cr_assert_eq(shoal_round_aggregated(e, 40, 1, fsum), SHOAL_OK);
            cr_assert_eq(shoal_round_aggregated(e, 41, 1, fsum), SHOAL_ESTATE, "only once");
        }
        cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, &a), 1);
        cr_assert_eq(a.version, 1u);
        cr_assert_eq(a.stats.reported, 3u);
    } else {
        cr_assert_eq(drain(e, SHOAL_ACTION_COMMIT, NULL), 1);
    }
    memcpy(out, shoal_round_params(e), sizeof(float) * N);
    shoal_round_engine_free(e);
}

Test(round_external, the_drivers_sum_commits_the_same_model_as_the_engines_fold)
{
    float inside[N], outside[N];
    round_with(0, 0, inside);
    round_with(1, 0, outside);
    for (int j = 0; j < N; j++)
        cr_assert_float_eq(outside[j], inside[j], 1e-6, "param %d", j);
    round_with(1, 1, outside);
    for (int j = 0; j < N; j++)
        cr_assert_float_eq(outside[j], inside[j], 1e-6, "param %d (pipelined)", j);
    round_with(2, 0, outside);
    for (int j = 0; j < N; j++)
        cr_assert_float_eq(outside[j], inside[j], 1e-6, "param %d (the driver's mean)", j);
}

Test(round_external, the_next_round_waits_for_the_sum_and_late_reports_are_refused)
{
    shoal_round_config c = sync_cfg(2);
    c.over_selection = 1.0f;
    c.min_report_fraction = 0.5f;
    c.external_aggregation = 1;
    shoal_round_engine *e = engine(&c, 0);
    for (shoal_session_id s = 1; s <= 2; s++)
        cr_assert(checkin(e, 10, s).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 2);
    /* Pipelining: round 2 selects while round 1 reports. */
    for (shoal_session_id s = 3; s <= 4; s++)
        cr_assert(checkin(e, 15, s).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 0);
    cr_assert_eq(report(e, 20, 1, 5, NULL).outcome, SHOAL_REPORT_ACCEPTED);
    /* The deadline closes round 1 with one report of two: enough. */
    shoal_round_tick(e, 10 + c.reporting_deadline_ms + 1);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_AGGREGATE, &a), 1);
    cr_assert_eq(a.round, 1u);
    cr_assert_eq(a.stats.reported, 1u);
    /* Session 2 reports after the close: late, nothing to fold. */
    shoal_report_ack late = report(e, 10 + c.reporting_deadline_ms + 2, 2, 5, NULL);
    cr_assert_eq(late.outcome, SHOAL_REPORT_LATE);
    cr_assert_float_eq(late.fold_weight, 0.0f, 0);
    /* Round 2 is configured only with the new model. */
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 0);
    const float sum[N] = {5, 5, 5, 5}; /* 5 examples x delta 1 */
    cr_assert_eq(shoal_round_aggregated(e, 20000, 1, sum), SHOAL_OK);
    shoal_round_action cfgs[2];
    int n = 0, commits = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
        if (a.kind == SHOAL_ACTION_COMMIT)
            commits++;
        if (a.kind == SHOAL_ACTION_CONFIGURE && n < 2)
            cfgs[n++] = a;
    }
    cr_assert_eq(commits, 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(cfgs[0].version, 1u, "round 2 trains on the new model");
    for (int j = 0; j < N; j++)
        cr_assert_float_eq(shoal_round_params(e)[j], initial[j] + 1.0f, 1e-6);
    shoal_round_engine_free(e);
}

/* An engine (external aggregation, goal 2) whose round 1 has both its
 * reports in and waits for the sum; with pipelining, round 2 has selected
 * sessions 3 and 4 meanwhile. */
static shoal_round_engine *round_one_reported(shoal_round_config *c)
{
    c->over_selection = 1.0f;
    c->external_aggregation = 1;
    shoal_round_engine *e = engine(c, 0);
    for (shoal_session_id s = 1; s <= 2; s++)
        cr_assert(checkin(e, 10, s).accepted);
    cr_assert_eq(drain(e, SHOAL_ACTION_CONFIGURE, NULL), 2);
    if (c->pipelining)
        for (shoal_session_id s = 3; s <= 4; s++)
            cr_assert(checkin(e, 15, s).accepted);
    cr_assert_eq(report(e, 20, 1, 5, NULL).outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(report(e, 21, 2, 5, NULL).outcome, SHOAL_REPORT_ACCEPTED);
    cr_assert_eq(drain(e, SHOAL_ACTION_AGGREGATE, NULL), 1);
    return e;
}

Test(round_external, a_failed_aggregation_abandons_the_round_and_the_next_one_trains_on)
{
    shoal_round_config c = sync_cfg(2);
    shoal_round_engine *e = round_one_reported(&c);

    cr_assert_eq(shoal_round_aggregation_failed(e, 30, 2), SHOAL_ESTATE, "wrong round");
    cr_assert_eq(shoal_round_aggregation_failed(e, 30, 1), SHOAL_OK);
    cr_assert_eq(shoal_round_aggregation_failed(e, 31, 1), SHOAL_ESTATE, "only once");
    const float sum[N] = {10, 10, 10, 10};
    cr_assert_eq(shoal_round_aggregated(e, 31, 1, sum), SHOAL_ESTATE, "no sum after a failure");

    shoal_round_action a;
    int abandoned = 0, commits = 0, configured = 0;
    while (shoal_round_next_action(e, &a) == SHOAL_ROW) {
        if (a.kind == SHOAL_ACTION_ABANDONED) {
            abandoned++;
            cr_assert_eq(a.round, 1u);
            cr_assert_eq(a.abandon, SHOAL_ABANDON_AGGREGATION_FAILED);
            cr_assert_eq(a.stats.reported, 2u);
        }
        commits += a.kind == SHOAL_ACTION_COMMIT;
        if (a.kind == SHOAL_ACTION_CONFIGURE) {
            configured++;
            cr_assert_eq(a.version, 0u, "round 2 trains on the unchanged model");
        }
    }
    cr_assert_eq(abandoned, 1);
    cr_assert_eq(commits, 0);
    cr_assert_eq(configured, 2, "the waiting round is configured");
    cr_assert_eq(shoal_round_abandoned(e), 1u);
    cr_assert_eq(shoal_round_committed(e), 0u);
    cr_assert_eq(shoal_round_version(e), 0u);
    cr_assert_arr_eq(shoal_round_params(e), initial, sizeof initial, "nothing applied");
    shoal_round_engine_free(e);
}

Test(round_external, abandon_causes_tell_too_few_reports_from_a_non_finite_mean)
{
    shoal_round_config c = sync_cfg(2);
    c.pipelining = 0;
    c.min_report_fraction = 1.0f;
    shoal_round_engine *e = round_one_reported(&c);
    float sum[N] = {1, 1, 1, 1};
    sum[2] = INFINITY;
    cr_assert_eq(shoal_round_aggregated(e, 30, 1, sum), SHOAL_OK);
    shoal_round_action a;
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, &a), 1);
    cr_assert_eq(a.abandon, SHOAL_ABANDON_NOT_FINITE);
    cr_assert_arr_eq(shoal_round_params(e), initial, sizeof initial, "nothing applied");

    /* Round 2: selected in full, no report by the deadline. */
    cr_assert(checkin(e, 40, 3).accepted);
    cr_assert(checkin(e, 41, 4).accepted);
    shoal_round_tick(e, 41 + c.reporting_deadline_ms + 1);
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, &a), 1);
    cr_assert_eq(a.round, 2u);
    cr_assert_eq(a.abandon, SHOAL_ABANDON_TOO_FEW_REPORTS);

    /* Round 3: one device when the selection window closes. */
    int64_t t = 41 + c.reporting_deadline_ms + 2;
    cr_assert(checkin(e, t, 5).accepted);
    shoal_round_tick(e, t + c.selection_window_ms + 1);
    cr_assert_eq(drain(e, SHOAL_ACTION_ABANDONED, &a), 1);
    cr_assert_eq(a.round, 3u);
    cr_assert_eq(a.abandon, SHOAL_ABANDON_TOO_FEW_DEVICES);
    cr_assert_eq(shoal_round_abandoned(e), 3u);
    shoal_round_engine_free(e);
}

Test(round_external, only_synchronous_rounds_take_external_aggregation)
{
    shoal_round_config c = shoal_round_defaults(SHOAL_ROUND_ASYNC, 4);
    c.external_aggregation = 1;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_round_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "external_aggregation"), "%s", ei.msg);
    shoal_round_config s = sync_cfg(2);
    cr_assert_eq(shoal_round_aggregated(NULL, 0, 1, initial), SHOAL_EINVAL);
    shoal_round_engine *e = engine(&s, 0);
    cr_assert_eq(shoal_round_aggregated(e, 0, 1, initial), SHOAL_EINVAL, "engine folds itself");
    cr_assert_eq(shoal_round_aggregation_failed(e, 0, 1), SHOAL_EINVAL, "engine folds itself");
    cr_assert_eq(shoal_round_aggregation_failed(NULL, 0, 1), SHOAL_EINVAL);
    shoal_round_engine_free(e);
}
