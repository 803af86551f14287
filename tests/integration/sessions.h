/* Whole device sessions on threads against the test server (harness.h),
 * and the FedAvg result they should commit. */
#ifndef SHOAL_TEST_SESSIONS_H
#define SHOAL_TEST_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define PARAMS 10 /* logreg 1x2x2 -> 2 classes */

void sleep_ms(long ms);

/* One device's session: check in, take the plan and model, upload `delta`
 * with `examples`, wait for the ack; the results come back in it. */
typedef struct session_plan {
    const tserver *srv;
    const char *population;
    const char *token;
    float delta[PARAMS + 2];
    size_t count; /* floats to upload (PARAMS unless testing shapes) */
    uint64_t examples;
    int drop_after_config; /* disconnect instead of reporting */
    int report_twice;
    int delay_report_ms;
    /* results */
    enum tdev_result config_result, ack_result;
    int status, reason;
    char detail[600]; /* the ack's (or abort's) detail */
    int second_status, second_reason;
    uint64_t round;
    uint64_t plan_max_examples; /* the plan's limits.max_examples */
    int task;
    float model[PARAMS];
    uint64_t retry_min_ms, retry_max_ms;
} session_plan;

/* session_main's thread body for one session_plan. */
void *session_main(void *arg);
/* A plan for `pop` whose delta is base * (i + 1) at element i. */
void fill(session_plan *p, const tserver *t, const char *pop, float base, uint64_t examples);
/* Runs n sessions on threads (check-ins 20 ms apart) and joins them. */
void run_sessions(session_plan *plans, int n);
/* The latest checkpoint of `pop` is version want_version and equals
 * `initial` plus the example-weighted mean of the counted plans' deltas
 * (FedAvg, server lr 1). */
void expect_fedavg(const tserver *t, const char *pop, const float *initial,
                   const session_plan *plans, const int *counted, int n, uint64_t want_version);

#endif
