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
