/* Whole device sessions on threads against the test server, and the
 * FedAvg result they should commit (shared by the integration tests). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "sessions.h"
#include "shoal/alloc.h"

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void *session_main(void *arg)
{
    session_plan *p = arg;
    tdev d;
    if (tdev_connect(&d, &p->srv->endpoint) != 0) {
        p->config_result = TDEV_ERROR;
        return NULL;
    }
    if (tdev_checkin(&d, p->population, p->token ? p->token : TEST_SECRET, 0, NULL, 0) != 0) {
        p->config_result = TDEV_ERROR;
        tdev_close(&d);
        return NULL;
    }
    p->config_result = tdev_await_config(&d, 20000);
    p->retry_min_ms = d.retry_min_ms;
    p->retry_max_ms = d.retry_max_ms;
    p->reason = d.reason;
    if (p->config_result != TDEV_ACCEPTED) {
        tdev_close(&d);
        return NULL;
    }
    p->round = d.round;
    p->plan_max_examples = d.max_examples;
    p->task = d.task;
    if (d.model)
        memcpy(p->model, d.model, sizeof p->model);
    if (p->drop_after_config) {
        shoal_wss_abort(d.wss);
        tdev_close(&d);
        return NULL;
    }
    if (p->delay_report_ms)
        sleep_ms(p->delay_report_ms);
    if (d.task == SHOAL__TASK_KIND__TASK_KIND_EVALUATE) {
        (void)tdev_report_eval(&d, p->examples, 0.5, 0.75);
    } else {
        (void)tdev_report(&d, p->delta, p->count ? p->count : PARAMS, p->examples, 0.25, 16);
        if (p->report_twice)
            (void)tdev_resend_last(&d); /* the Report again, not the chunks */
    }
    p->ack_result = tdev_await_ack(&d, 20000);
    p->status = d.status;
    p->reason = d.reason;
    memcpy(p->detail, d.detail, sizeof p->detail);
    p->retry_min_ms = d.retry_min_ms;
    p->retry_max_ms = d.retry_max_ms;
    if (p->report_twice && p->ack_result == TDEV_ACKED) {
        enum tdev_result r2 = tdev_await_ack(&d, 20000);
        if (r2 == TDEV_ACKED) {
            p->second_status = d.status;
            p->second_reason = d.reason;
        }
    }
    tdev_close(&d);
    return NULL;
}

void fill(session_plan *p, const tserver *t, const char *pop, float base, uint64_t examples)
{
    memset(p, 0, sizeof *p);
    p->srv = t;
    p->population = pop;
    p->examples = examples;
    for (int i = 0; i < PARAMS; i++)
        p->delta[i] = base * (float)(i + 1);
}

void run_sessions(session_plan *plans, int n)
{
    pthread_t th[16];
    for (int i = 0; i < n; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, session_main, &plans[i]), 0);
        sleep_ms(20); /* check-ins in a known order */
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* The model before any round, as the first device downloaded it, plus the
 * example-weighted mean of the accepted deltas (FedAvg, server lr 1). */
void expect_fedavg(const tserver *t, const char *pop, const float *initial,
                   const session_plan *plans, const int *counted, int n, uint64_t want_version)
{
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(t, pop, &params, &count, &version), 0);
    cr_assert_eq(count, (size_t)PARAMS);
    cr_assert_eq(version, want_version);
    for (int j = 0; j < PARAMS; j++) {
        double num = 0, den = 0;
        for (int i = 0; i < n; i++)
            if (counted[i]) {
                num += (double)plans[i].examples * plans[i].delta[j];
                den += (double)plans[i].examples;
            }
        double want = initial[j] + num / den;
        cr_assert_float_eq(params[j], want, 1e-5, "param %d: %g, want %g", j, (double)params[j],
                           want);
    }
    shoal_free(params);
}
