/* Issue 13, "one device must not own the model": the plan tells devices
 * the largest example count they may claim, and the server holds every
 * report to it. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sessions.h"
#include "shoal/alloc.h"

static void start_population(tserver *t, const char *round_fields, const char *plan_fields,
                             const char *population_fields)
{
    char *pop = tpop_ex("p", round_fields, NULL, plan_fields, population_fields);
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

Test(influence, the_plan_carries_max_examples_and_a_larger_claim_is_refused)
{
    tserver t;
    start_population(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false",
                     "\"max_examples\": 50", NULL);
    session_plan over;
    fill(&over, &t, "p", 0.5f, 51);
    run_sessions(&over, 1);
    cr_assert_eq(over.config_result, TDEV_ACCEPTED);
    cr_assert_eq(over.plan_max_examples, 50u, "Plan.limits.max_examples %llu",
                 (unsigned long long)over.plan_max_examples);
    cr_assert_eq(over.status, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED);
    session_plan at;
    fill(&at, &t, "p", 0.25f, 50);
    run_sessions(&at, 1);
    cr_assert_eq(at.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tserver_stop(&t);
    int counted[1] = {1};
    expect_fedavg(&t, "p", over.model, &at, counted, 1, 1);
    tserver_cleanup(&t);
}

Test(influence, without_plan_max_examples_the_plan_carries_the_servers_hard_limit)
{
    tserver t;
    start_population(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL,
                     NULL);
    session_plan s;
    fill(&s, &t, "p", 0.5f, 7);
    run_sessions(&s, 1);
    cr_assert_eq(s.config_result, TDEV_ACCEPTED);
    cr_assert_eq(s.plan_max_examples, 1000000000u);
    cr_assert_eq(s.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- the update bound -------------------------------------------------------- */

#define ATTACK 9.9e5f /* issue 13: every element of the attacker's update */
#define HONEST 3

#define FOUR_DEVICES                                                                               \
    "\"goal_count\": 4, \"over_selection\": 1.0, \"min_report_fraction\": 1.0, "                   \
    "\"pipelining\": false"

/* Three honest devices (small deltas, 10 to 30 examples) and, checking in
 * last, the attacker: every element 9.9e5, the plan's largest example
 * count. s[HONEST] is the attacker. */
static void run_attack(const tserver *t, session_plan s[HONEST + 1])
{
    for (int i = 0; i < HONEST; i++)
        fill(&s[i], t, "p", 0.01f * (float)(i + 1), 10 * (uint64_t)(i + 1));
    fill(&s[HONEST], t, "p", 0, 100);
    for (int j = 0; j < PARAMS; j++)
        s[HONEST].delta[j] = ATTACK;
    run_sessions(s, HONEST + 1);
    for (int i = 0; i < HONEST + 1; i++)
        cr_assert_eq(s[i].config_result, TDEV_ACCEPTED, "device %d", i);
}

/* The committed model minus the initial one: its L2 norm. */
static double model_moved(const tserver *t, const float *initial)
{
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(t, "p", &params, &count, &version), 0);
    cr_assert_eq(version, 1u);
    double sq = 0;
    for (size_t j = 0; j < count; j++)
        sq += ((double)params[j] - initial[j]) * ((double)params[j] - initial[j]);
    shoal_free(params);
    return sqrt(sq);
}

static void expect_metric(const tserver *t, const char *line)
{
    int status = 0;
    char *metrics = thttp_get(t, "/metrics", &status, NULL);
    cr_assert_not_null(metrics);
    cr_assert_eq(status, 200);
    cr_assert_not_null(strstr(metrics, line), "no \"%s\" in:\n%s", line, metrics);
    free(metrics);
}

Test(influence, with_update_bound_clip_the_attacker_moves_the_model_by_at_most_the_bound)
{
    tserver t;
    start_population(&t, FOUR_DEVICES, "\"max_examples\": 100",
                     "\"update_bound\": {\"l2_norm\": 1.0},");
    session_plan s[HONEST + 1];
    run_attack(&t, s);
    for (int i = 0; i < HONEST + 1; i++)
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    expect_metric(&t, "shoal_updates_clipped_total{population=\"p\"} 1\n");
    expect_metric(&t, "shoal_updates_refused_norm_total{population=\"p\"} 0\n");
    tserver_stop(&t);
    /* The honest updates are within the bound and kept as they are; the
     * attacker's is scaled to norm 1: each element 1 / sqrt(10). */
    for (int j = 0; j < PARAMS; j++)
        s[HONEST].delta[j] = (float)(1.0 / sqrt((double)PARAMS));
    int counted[HONEST + 1] = {1, 1, 1, 1};
    expect_fedavg(&t, "p", s[0].model, s, counted, HONEST + 1, 1);
    /* A weighted mean of updates of norm at most 1 moves it at most 1. */
    double moved = model_moved(&t, s[0].model);
    cr_assert_leq(moved, 1.0 + 1e-5, "the model moved %g", moved);
    tserver_cleanup(&t);
}

Test(influence, with_update_bound_refuse_the_attacker_is_refused_with_norm_exceeded)
{
    tserver t;
    start_population(&t,
                     "\"goal_count\": 3, \"over_selection\": 1.0, \"min_report_fraction\": 0.5, "
                     "\"pipelining\": false",
                     "\"max_examples\": 100",
                     "\"update_bound\": {\"l2_norm\": 1.0, \"action\": \"refuse\"},");
    session_plan s[HONEST];
    for (int i = 0; i < HONEST - 1; i++)
        fill(&s[i], &t, "p", 0.01f * (float)(i + 1), 10 * (uint64_t)(i + 1));
    fill(&s[HONEST - 1], &t, "p", 0, 100);
    for (int j = 0; j < PARAMS; j++)
        s[HONEST - 1].delta[j] = ATTACK;
    run_sessions(s, HONEST);
    const session_plan *attacker = &s[HONEST - 1];
    cr_assert_eq(attacker->status, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED);
    cr_assert_eq(attacker->reason, SHOAL__REASON__REASON_NORM_EXCEEDED, "reason %d",
                 attacker->reason);
    cr_assert_not_null(strstr(attacker->detail, "Plan.update_bound.l2_norm 1;"), "%s",
                       attacker->detail);
    expect_metric(&t, "shoal_updates_refused_norm_total{population=\"p\"} 1\n");
    expect_metric(&t, "shoal_updates_clipped_total{population=\"p\"} 0\n");
    tserver_stop(&t);
    int counted[HONEST] = {1, 1, 0};
    expect_fedavg(&t, "p", s[0].model, s, counted, HONEST, 1);
    tserver_cleanup(&t);
}

Test(influence, without_an_update_bound_the_attacker_owns_the_model)
{
    /* Issue 13 as it was reported: the same round without update_bound
     * moves every parameter by about 100/160 x 9.9e5 (FedAvg). */
    tserver t;
    start_population(&t, FOUR_DEVICES, "\"max_examples\": 100", NULL);
    session_plan s[HONEST + 1];
    run_attack(&t, s);
    tserver_stop(&t);
    /* Every element moves by about 100 x 9.9e5 / 160 = 618750. */
    double want = sqrt((double)PARAMS) * 100.0 * ATTACK / 160.0;
    cr_assert_float_eq(model_moved(&t, s[0].model), want, want * 1e-4);
    tserver_cleanup(&t);
}

/* ---- robust aggregation ------------------------------------------------------ */

static int by_value(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

Test(influence, trimmed_mean_commits_the_robust_aggregate_of_the_uploaded_deltas)
{
    enum { DEVICES = 5 };
    tserver t;
    start_population(&t,
                     "\"goal_count\": 5, \"over_selection\": 1.0, \"min_report_fraction\": 1.0, "
                     "\"pipelining\": false",
                     "\"max_examples\": 100",
                     "\"aggregation\": {\"rule\": \"trimmed_mean\", \"trim_fraction\": 0.2},");
    session_plan s[DEVICES];
    /* Four honest devices with different deltas (and example counts, which
     * the rule ignores), then the attacker. */
    for (int i = 0; i < DEVICES - 1; i++) {
        fill(&s[i], &t, "p", 0.01f * (float)(i + 1), 10 * (uint64_t)(i + 1));
        s[i].delta[i] = -0.05f * (float)(i + 1);
    }
    fill(&s[DEVICES - 1], &t, "p", 0, 100);
    for (int j = 0; j < PARAMS; j++)
        s[DEVICES - 1].delta[j] = ATTACK;
    run_sessions(s, DEVICES);
    for (int i = 0; i < DEVICES; i++)
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "p", &params, &count, &version), 0);
    cr_assert_eq(version, 1u);
    /* Per coordinate: drop the floor(0.2 x 5) = 1 smallest and largest of
     * the five uploaded values, average the other three (FedAvg's server
     * step with server_lr 1 adds it). */
    for (int j = 0; j < PARAMS; j++) {
        float column[DEVICES];
        for (int i = 0; i < DEVICES; i++)
            column[i] = s[i].delta[j];
        qsort(column, DEVICES, sizeof *column, by_value);
        double want = s[0].model[j] + ((double)column[1] + column[2] + column[3]) / 3.0;
        cr_assert_float_eq(params[j], want, 1e-5, "param %d: %g, want %g", j, (double)params[j],
                           want);
    }
    shoal_free(params);
    tserver_cleanup(&t);
}
