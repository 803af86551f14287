/* shoal-server end to end: the real server on a loopback port, devices
 * speaking the protocol over TLS. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sessions.h"
#include "shoal/alloc.h"
#include "shoal/auth.h"

/* ---- tests ------------------------------------------------------------------------------ */

Test(server, a_full_round_commits_the_example_weighted_mean)
{
    tserver t;
    char *pop = tpop("p",
                     "\"goal_count\": 3, \"over_selection\": 1.0, "
                     "\"min_report_fraction\": 1.0, \"pipelining\": false",
                     NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    session_plan s[3];
    for (int i = 0; i < 3; i++)
        fill(&s[i], &t, "p", 0.01f * (float)(i + 1), 10 * (uint64_t)(i + 1));
    run_sessions(s, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(s[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert_eq(s[i].ack_result, TDEV_ACKED, "device %d", i);
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
        cr_assert_eq(s[i].round, 1u);
        cr_assert_leq(s[i].retry_min_ms, s[i].retry_max_ms);
        /* All three got the same initial model. */
        cr_assert_arr_eq(s[i].model, s[0].model, sizeof s[0].model);
    }
    tserver_stop(&t);
    int counted[3] = {1, 1, 1};
    expect_fedavg(&t, "p", s[0].model, s, counted, 3, 1);
    tserver_cleanup(&t);
}

Test(server, devices_beyond_the_goal_are_rejected_with_a_retry_window)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    /* Two devices fill the round and hold it open by not reporting yet. */
    session_plan s[2];
    for (int i = 0; i < 2; i++) {
        fill(&s[i], &t, "p", 0.01f, 5);
        s[i].delay_report_ms = 1500;
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, session_main, &s[i]), 0);
    sleep_ms(500);
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 10000), TDEV_REJECTED);
    cr_assert_eq(d.reason, SHOAL__REASON__REASON_ROUND_FULL);
    cr_assert_geq(d.retry_min_ms, 1000u, "window below retry_min_ms: %llu",
                  (unsigned long long)d.retry_min_ms);
    cr_assert_leq(d.retry_max_ms, 5000u);
    cr_assert_leq(d.retry_min_ms, d.retry_max_ms);
    tdev_close(&d);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    }
    tserver_stop(&t);
    tserver_cleanup(&t);
}

static void expect_abort_on_checkin(const char *population, const char *token, uint32_t version,
                                    int reason, const char *detail_part)
{
    tserver t;
    char *pop = tpop("p", "\"goal_count\": 1", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, population, token, version, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ABORTED);
    cr_assert_eq(d.reason, reason, "reason %d", d.reason);
    cr_assert_not_null(strstr(d.detail, detail_part), "detail: %s", d.detail);
    cr_assert_leq(d.retry_min_ms, d.retry_max_ms);
    if (reason == SHOAL__REASON__REASON_VERSION_UNSUPPORTED) {
        cr_assert_eq(d.version_received, (int)version);
        cr_assert_eq(d.version_min, 1);
        cr_assert_eq(d.version_max, 1);
    }
    tdev_close(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(server, a_bad_token_is_refused)
{
    expect_abort_on_checkin("p", "not-the-secret-at-all-0000", 0, SHOAL__REASON__REASON_AUTH_FAILED,
                            "not valid");
}

Test(server, an_unknown_population_is_refused)
{
    expect_abort_on_checkin("q", TEST_SECRET, 0, SHOAL__REASON__REASON_UNKNOWN_POPULATION, "'q'");
}

Test(server, an_unsupported_protocol_version_gets_both_versions)
{
    expect_abort_on_checkin("p", TEST_SECRET, 7, SHOAL__REASON__REASON_VERSION_UNSUPPORTED,
                            "version 7");
}

Test(server, malformed_and_oversized_messages_end_the_session_but_not_the_server)
{
    tserver t;
    char *pop = tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    shoal_errinfo ei = {0};

    /* Not a protobuf Envelope. */
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
    cr_assert_eq(shoal_wss_send(d.wss, junk, sizeof junk, 5000, &ei), SHOAL_OK);
    cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ABORTED);
    cr_assert_eq(d.reason, SHOAL__REASON__REASON_MALFORMED);
    tdev_close(&d);

    /* Over the 1 MiB message limit: the WebSocket layer closes with 1009. */
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    size_t big = (1u << 20) + 4096;
    uint8_t *buf = calloc(1, big);
    shoal_err err = shoal_wss_send(d.wss, buf, big, 5000, &ei);
    free(buf);
    if (err == SHOAL_OK) {
        uint8_t *msg = NULL;
        size_t len = 0;
        err = shoal_wss_recv(d.wss, &msg, &len, 10000, &ei);
        shoal_free(msg);
        cr_assert_eq(err, SHOAL_ECLOSED, "%s", ei.msg);
        cr_assert_eq(shoal_wss_close_code(d.wss, NULL), 1009);
    } else {
        /* The server closed (1009) while the rest was still being written. */
        cr_assert(err == SHOAL_ECLOSED || err == SHOAL_EIO, "%s", ei.msg);
    }
    tdev_close(&d);

    /* A truncated frame, then a dropped connection. */
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    const uint8_t partial[] = {0x82, 0xfe, 0x10}; /* binary, masked, 16-bit length cut off */
    cr_assert_eq(shoal_wss_write_raw(d.wss, partial, sizeof partial, 5000, &ei), SHOAL_OK);
    shoal_wss_abort(d.wss);
    tdev_close(&d);

    /* A device that reports before being configured. */
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    d.session_len = 16;
    cr_assert_eq(tdev_report_outcome(&d, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED), 0);
    cr_assert_eq(tdev_await_ack(&d, 10000), TDEV_ABORTED);
    cr_assert_eq(d.reason, SHOAL__REASON__REASON_MALFORMED);
    tdev_close(&d);

    /* The server still runs a full round. */
    session_plan s;
    fill(&s, &t, "p", 0.5f, 3);
    run_sessions(&s, 1);
    cr_assert_eq(s.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* A refused update leaves the aggregate untouched: the round it was in ends
 * without it, and the model is what the good reports alone give. */
static void expect_refused_update(session_plan *bad, int reason)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    bad->srv = &t;
    run_sessions(bad, 1);
    cr_assert_eq(bad->config_result, TDEV_ACCEPTED);
    cr_assert_eq(bad->ack_result, TDEV_ACKED);
    cr_assert_eq(bad->status, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED);
    cr_assert_eq(bad->reason, reason, "reason %d", bad->reason);
    session_plan good;
    fill(&good, &t, "p", 0.03f, 4);
    run_sessions(&good, 1);
    cr_assert_eq(good.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tserver_stop(&t);
    int counted[1] = {1};
    expect_fedavg(&t, "p", bad->model, &good, counted, 1, 1);
    tserver_cleanup(&t);
}

Test(server, an_update_with_too_many_elements_is_refused)
{
    session_plan bad;
    fill(&bad, NULL, "p", 1.0f, 5);
    bad.count = PARAMS + 1;
    expect_refused_update(&bad, SHOAL__REASON__REASON_SHAPE_MISMATCH);
}

Test(server, an_update_with_too_few_elements_is_refused)
{
    session_plan bad;
    fill(&bad, NULL, "p", 1.0f, 5);
    bad.count = PARAMS - 1;
    expect_refused_update(&bad, SHOAL__REASON__REASON_SHAPE_MISMATCH);
}

Test(server, an_update_with_nan_is_refused)
{
    session_plan bad;
    fill(&bad, NULL, "p", 1.0f, 5);
    bad.delta[3] = NAN;
    expect_refused_update(&bad, SHOAL__REASON__REASON_NON_FINITE);
}

Test(server, a_second_report_is_refused_and_counted_once)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    session_plan s[2];
    fill(&s[0], &t, "p", 0.02f, 10);
    s[0].report_twice = 1;
    fill(&s[1], &t, "p", -0.01f, 30);
    run_sessions(s, 2);
    cr_assert_eq(s[1].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    /* The duplicate is refused as soon as it arrives; if the first report's
     * ack was sent before it, the session is already over and it is
     * dropped. Either way one ack is ACCEPTED and the update counts once. */
    int accepted = s[0].status == SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED ||
                   s[0].second_status == SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED;
    cr_assert(accepted, "statuses %d, %d", s[0].status, s[0].second_status);
    if (s[0].status == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED)
        cr_assert_eq(s[0].reason, SHOAL__REASON__REASON_DUPLICATE);
    tserver_stop(&t);
    int counted[2] = {1, 1};
    expect_fedavg(&t, "p", s[0].model, s, counted, 2, 1);
    tserver_cleanup(&t);
}

Test(server, a_device_dropping_after_configuration_does_not_block_the_round)
{
    tserver t;
    /* resume_grace_ms 0: a dropped connection is a lost device at once. */
    char *pop = tpop("p",
                     "\"goal_count\": 2, \"over_selection\": 1.5, \"pipelining\": false, "
                     "\"resume_grace_ms\": 0",
                     NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    session_plan s[3];
    fill(&s[0], &t, "p", 0.01f, 10);
    fill(&s[1], &t, "p", 0.0f, 10);
    s[1].drop_after_config = 1;
    fill(&s[2], &t, "p", 0.04f, 20);
    run_sessions(s, 3);
    cr_assert_eq(s[1].config_result, TDEV_ACCEPTED);
    cr_assert_eq(s[0].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert_eq(s[2].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    /* The dropped connection is noticed, and the round then commits,
     * asynchronously: wait for both (a bound for a stuck server, not a
     * timing expectation). */
    int status = 0;
    size_t len;
    char *metrics = NULL;
    for (int tries = 0; tries < 1500; tries++) {
        free(metrics);
        metrics = thttp_get(&t, "/metrics", &status, &len);
        if (metrics && strstr(metrics, "shoal_devices_dropped_total{population=\"p\"} 1\n") &&
            strstr(metrics, "shoal_rounds_committed_total{population=\"p\"} 1\n"))
            break;
        sleep_ms(20);
    }
    cr_assert_not_null(metrics);
    cr_assert_eq(status, 200);
    cr_assert_not_null(strstr(metrics, "shoal_devices_dropped_total{population=\"p\"} 1\n"), "%s",
                       metrics);
    cr_assert_not_null(strstr(metrics, "shoal_rounds_committed_total{population=\"p\"} 1\n"));
    cr_assert_not_null(strstr(metrics, "shoal_devices_reported_total{population=\"p\"} 2\n"));
    free(metrics);
    tserver_stop(&t);
    int counted[3] = {1, 0, 1};
    expect_fedavg(&t, "p", s[0].model, s, counted, 3, 1);
    tserver_cleanup(&t);
}

Test(server, a_report_after_the_deadline_is_not_aggregated)
{
    tserver t;
    char *pop = tpop("p",
                     "\"goal_count\": 2, \"over_selection\": 1.0, \"min_report_fraction\": 0.5, "
                     "\"pipelining\": false, \"reporting_deadline_ms\": 700",
                     NULL);
    /* tpop sets reporting_deadline_ms too; the later key would be a
     * duplicate, so drop the default from the string. */
    char *dup = strstr(pop, "\"reporting_deadline_ms\": 30000, ");
    cr_assert_not_null(dup);
    memmove(dup, dup + strlen("\"reporting_deadline_ms\": 30000, "),
            strlen(dup + strlen("\"reporting_deadline_ms\": 30000, ")) + 1);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    session_plan s[2];
    fill(&s[0], &t, "p", 0.01f, 10);
    fill(&s[1], &t, "p", 0.5f, 10);
    s[1].delay_report_ms = 2000;
    run_sessions(s, 2);
    cr_assert_eq(s[0].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    /* The late device is told so: an Abort at the deadline, or a LATE ack. */
    cr_assert(s[1].ack_result == TDEV_ABORTED ||
                  (s[1].ack_result == TDEV_ACKED &&
                   s[1].status != SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED),
              "late device: result %d status %d", s[1].ack_result, s[1].status);
    tserver_stop(&t);
    int counted[2] = {1, 0};
    expect_fedavg(&t, "p", s[0].model, s, counted, 2, 1);
    tserver_cleanup(&t);
}

Test(server, two_populations_train_at_once)
{
    tserver t;
    char *a =
        tpop("alpha", "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    char *b = tpop("beta", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false",
                   "\"name\": \"fedavgm\", \"server_lr\": 1.0, \"momentum\": 0.5");
    char both[8192];
    snprintf(both, sizeof both, "%s, %s", a, b);
    free(a);
    free(b);
    tserver_prepare(&t, both);
    tserver_start(&t);
    session_plan s[3];
    fill(&s[0], &t, "alpha", 0.01f, 10);
    fill(&s[1], &t, "beta", 0.02f, 10);
    fill(&s[2], &t, "alpha", 0.03f, 30);
    run_sessions(s, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    tserver_stop(&t);
    session_plan alpha[2] = {s[0], s[2]};
    int counted[2] = {1, 1};
    expect_fedavg(&t, "alpha", s[0].model, alpha, counted, 2, 1);
    /* FedAvgM's first step with momentum buffer 0: x + lr * delta. */
    expect_fedavg(&t, "beta", s[1].model, &s[1], counted, 1, 1);
    tserver_cleanup(&t);
}

Test(server, federated_evaluation_reaches_the_metrics)
{
    tserver t;
    char *pop = tpop("p",
                     "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false, "
                     "\"eval_every\": 1, \"eval_goal_count\": 1",
                     NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    session_plan train, eval;
    fill(&train, &t, "p", 0.01f, 10);
    run_sessions(&train, 1);
    cr_assert_eq(train.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    fill(&eval, &t, "p", 0.0f, 40);
    run_sessions(&eval, 1);
    cr_assert_eq(eval.task, SHOAL__TASK_KIND__TASK_KIND_EVALUATE);
    cr_assert_eq(eval.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    /* The evaluated model is the committed one. */
    float *params;
    size_t count;
    uint64_t version;
    cr_assert_eq(tstate_latest(&t, "p", &params, &count, &version), 0);
    cr_assert_arr_eq(eval.model, params, sizeof eval.model);
    shoal_free(params);
    int status = 0;
    char *metrics = NULL;
    for (int tries = 0; tries < 50; tries++) {
        free(metrics);
        metrics = thttp_get(&t, "/metrics", &status, NULL);
        if (metrics && strstr(metrics, "shoal_eval_accuracy{population=\"p\"} 0.75\n"))
            break;
        sleep_ms(20);
    }
    cr_assert_not_null(strstr(metrics, "shoal_eval_accuracy{population=\"p\"} 0.75\n"), "%s",
                       metrics);
    cr_assert_not_null(strstr(metrics, "shoal_eval_loss{population=\"p\"} 0.5\n"));
    free(metrics);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(server, http_serves_health_and_the_latest_model)
{
    tserver t;
    char *pop = tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    int status = 0;
    char *body = thttp_get(&t, "/healthz", &status, NULL);
    cr_assert_eq(status, 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    body = thttp_get(&t, "/nope", &status, NULL);
    cr_assert_eq(status, 404);
    free(body);
    body = thttp_get(&t, "/v1/populations/q/model", &status, NULL);
    cr_assert_eq(status, 404);
    free(body);

    float *params = NULL;
    size_t count;
    uint64_t version = 0;
    session_plan s;
    fill(&s, &t, "p", 0.25f, 8);
    run_sessions(&s, 1);
    cr_assert_eq(s.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    /* The acknowledgement may overtake the commit: wait for the round's
     * checkpoint (there is none before it), then the served model must be
     * that one. */
    int found = -1;
    for (int i = 0; i < 200 && found != 0; i++) {
        found = tstate_latest(&t, "p", &params, &count, &version);
        if (found != 0) {
            struct timespec pause = {0, 50 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    cr_assert_eq(found, 0, "the round was not committed within 10 s");
    size_t len = 0;
    body = thttp_get(&t, "/v1/populations/p/model", &status, &len);
    cr_assert_eq(status, 200);
    cr_assert_eq(len, PARAMS * 4u);
    cr_assert_eq(memcmp(body, params, len), 0, "served model differs from the checkpoint");
    shoal_free(params);
    free(body);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* A session whose upload was cut off after three of its five 8-byte
 * chunks: what its device needs to resume it. */
typedef struct cut_upload {
    uint8_t session[64], checkpoint[64];
    size_t session_len, checkpoint_len;
    float initial[PARAMS], delta[PARAMS];
} cut_upload;

static void cut_off_upload(const tserver *t, const char *token, cut_upload *u)
{
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", token, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ACCEPTED);
    memcpy(u->initial, d.model, sizeof u->initial);
    for (int i = 0; i < PARAMS; i++)
        u->delta[i] = 0.01f * (float)(i + 1);
    cr_assert_eq(tdev_upload(&d, u->delta, PARAMS, 8, 0, 3), 0);
    sleep_ms(200);
    u->session_len = d.session_len;
    u->checkpoint_len = d.checkpoint_len;
    memcpy(u->session, d.session, u->session_len);
    memcpy(u->checkpoint, d.checkpoint, u->checkpoint_len);
    shoal_wss_abort(d.wss);
    tdev_close(&d);
    sleep_ms(200); /* the drop reaches the coordinator: the session is detached */
}

/* A resume of `session` with `token` that must not continue any session. */
static void expect_resume_refused(const tserver *t, const char *token, const cut_upload *u,
                                  const uint8_t *session)
{
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin_resume(&d, "p", token, session, u->session_len, u->checkpoint,
                                     u->checkpoint_len),
                 0);
    enum tdev_result r = tdev_await_config(&d, 2000);
    cr_assert(r == TDEV_TIMEOUT || r == TDEV_REJECTED, "the refused resume got %d", r);
    cr_assert(!d.has_resume_offset, "the refused resume continued an upload");
    cr_assert(d.session_len != u->session_len || memcmp(d.session, u->session, u->session_len) != 0,
              "the refused resume was given the cut-off session");
    shoal_wss_abort(d.wss);
    tdev_close(&d);
    sleep_ms(200);
}

/* The cut-off session's own device resumes it, sends the rest of its
 * update and the Report; after the server stops, the checkpoint holds
 * exactly that one update. */
static void resume_and_commit(tserver *t, const char *token, const cut_upload *u)
{
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin_resume(&d, "p", token, u->session, u->session_len, u->checkpoint,
                                     u->checkpoint_len),
                 0);
    cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ACCEPTED);
    cr_assert(d.has_resume_offset, "the session's own device must resume it");
    cr_assert_eq(d.session_len, u->session_len);
    cr_assert_eq(memcmp(d.session, u->session, u->session_len), 0, "the same session continues");
    cr_assert_eq(d.resume_offset % 8, 0u);
    cr_assert_leq(d.resume_offset, 24u, "offset %llu", (unsigned long long)d.resume_offset);
    cr_assert_null(d.model, "a resuming device holding the checkpoint gets no model");
    cr_assert_eq(tdev_upload(&d, u->delta, PARAMS, 8, d.resume_offset, 100), 0);
    cr_assert_eq(tdev_send_report(&d, PARAMS, 7, 0.2), 0);
    cr_assert_eq(tdev_await_ack(&d, 10000), TDEV_ACKED);
    cr_assert_eq(d.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "reason %d", d.reason);
    tdev_close(&d);
    tserver_stop(t);

    session_plan one;
    memset(&one, 0, sizeof one);
    memcpy(one.delta, u->delta, sizeof u->delta);
    one.examples = 7;
    int counted[1] = {1};
    expect_fedavg(t, "p", u->initial, &one, counted, 1, 1);
}

/* An upload cut off by a dropped connection resumes from the offset the
 * server holds, and the update counts exactly once. */
Test(server, an_interrupted_upload_resumes_from_the_acknowledged_offset)
{
    tserver t;
    tserver_start_one(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    cut_upload u;
    cut_off_upload(&t, TEST_SECRET, &u);
    /* A resume with a forged session id is answered as a new check-in. */
    uint8_t forged[64];
    memcpy(forged, u.session, u.session_len);
    forged[u.session_len - 1] ^= 1;
    expect_resume_refused(&t, TEST_SECRET, &u, forged);
    resume_and_commit(&t, TEST_SECRET, &u);
    tserver_cleanup(&t);
}

/* A population p in hmac mode (goal 1, no pipelining). */
static void prepare_hmac(tserver *t)
{
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    char *mode = strstr(pop, "\"mode\": \"shared\"");
    cr_assert_not_null(mode);
    memcpy(mode, "\"mode\": \"hmac\"  ", strlen("\"mode\": \"shared\""));
    tserver_prepare(t, pop);
    free(pop);
}

static void mint(const char *device, char token[SHOAL_AUTH_TOKEN_MAX + 1])
{
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_auth_mint((const uint8_t *)TEST_SECRET, strlen(TEST_SECRET), "p", device,
                                 token, SHOAL_AUTH_TOKEN_MAX + 1, &ei),
                 SHOAL_OK, "%s", ei.msg);
}

/* In hmac mode a session resumes only for the device that opened it: a
 * device with its own valid token and the whole session id (public and
 * secret halves) does not get the session, and the owner still resumes and
 * completes its upload. */
Test(server, a_resume_by_another_authenticated_device_is_refused)
{
    tserver t;
    prepare_hmac(&t);
    tserver_start(&t);
    char token_a[SHOAL_AUTH_TOKEN_MAX + 1], token_b[SHOAL_AUTH_TOKEN_MAX + 1];
    mint("device-a", token_a);
    mint("device-b", token_b);
    cut_upload u;
    cut_off_upload(&t, token_a, &u);
    expect_resume_refused(&t, token_b, &u, u.session);
    resume_and_commit(&t, token_a, &u);
    tserver_cleanup(&t);
}

Test(server, hmac_device_tokens_are_checked_per_device)
{
    tserver t;
    prepare_hmac(&t);
    tserver_start(&t);

    char token[SHOAL_AUTH_TOKEN_MAX + 1];
    mint("device-42", token);
    shoal_errinfo ei = {0};
    session_plan good;
    fill(&good, &t, "p", 0.02f, 6);
    good.token = token;
    run_sessions(&good, 1);
    cr_assert_eq(good.config_result, TDEV_ACCEPTED);
    cr_assert_eq(good.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);

    /* The shared secret itself, another population's token and a token
     * whose device id was changed are all refused. */
    char other[SHOAL_AUTH_TOKEN_MAX + 1], forged[SHOAL_AUTH_TOKEN_MAX + 1];
    cr_assert_eq(shoal_auth_mint((const uint8_t *)TEST_SECRET, strlen(TEST_SECRET), "q",
                                 "device-42", other, sizeof other, &ei),
                 SHOAL_OK);
    snprintf(forged, sizeof forged, "%s", token);
    forged[3] = forged[3] == 'd' ? 'e' : 'd'; /* "v1.device-42..." -> "v1.eevice-42..." */
    const char *bad[3] = {TEST_SECRET, other, forged};
    for (int i = 0; i < 3; i++) {
        tdev d;
        cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&d, "p", bad[i], 0, NULL, 0), 0);
        cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ABORTED, "token %d", i);
        cr_assert_eq(d.reason, SHOAL__REASON__REASON_AUTH_FAILED, "token %d", i);
        tdev_close(&d);
    }
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* A device that leaves while waiting in selection is released: the round
 * fills with others and commits their updates only. */
Test(server, a_device_dropping_during_selection_is_replaced)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    tdev gone;
    cr_assert_eq(tdev_connect(&gone, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&gone, "p", TEST_SECRET, 0, NULL, 0), 0);
    sleep_ms(100);
    shoal_wss_abort(gone.wss);
    tdev_close(&gone);
    sleep_ms(200);
    session_plan s[2];
    fill(&s[0], &t, "p", 0.01f, 10);
    fill(&s[1], &t, "p", 0.03f, 30);
    run_sessions(s, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(s[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    }
    tserver_stop(&t);
    int counted[2] = {1, 1};
    expect_fedavg(&t, "p", s[0].model, s, counted, 2, 1);
    tserver_cleanup(&t);
}

/* A FedBuff population beside a synchronous one: every buffer_size
 * reports make one server step. */
Test(server, an_async_population_steps_every_buffer_beside_a_sync_one)
{
    tserver t;
    char *a =
        tpop("sync", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    char *b = tpop("async", "\"mode\": \"async\", \"goal_count\": 2, \"buffer_size\": 2", NULL);
    char both[8192];
    snprintf(both, sizeof both, "%s, %s", a, b);
    free(a);
    free(b);
    tserver_prepare(&t, both);
    tserver_start(&t);
    session_plan s[3];
    fill(&s[0], &t, "async", 0.01f, 10);
    fill(&s[1], &t, "sync", 0.05f, 10);
    fill(&s[2], &t, "async", 0.03f, 30);
    run_sessions(s, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    tserver_stop(&t);
    /* Both async reports trained on version 0 (staleness 0, weight 1). */
    session_plan async_pair[2] = {s[0], s[2]};
    int counted[2] = {1, 1};
    expect_fedavg(&t, "async", s[0].model, async_pair, counted, 2, 1);
    expect_fedavg(&t, "sync", s[1].model, &s[1], counted, 1, 1);
    tserver_cleanup(&t);
}

/* A resume that claims another device's session (its public half guessed,
 * the secret half wrong) cannot end that session when it disconnects. */
Test(server, a_forged_resume_cannot_end_another_devices_session)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    tdev victim;
    cr_assert_eq(tdev_connect(&victim, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&victim, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&victim, 10000), TDEV_ACCEPTED);

    tdev attacker;
    cr_assert_eq(tdev_connect(&attacker, &t.endpoint), 0);
    uint8_t claim[16];
    memcpy(claim, victim.session, 8);
    memset(claim + 8, 0xA5, 8);
    cr_assert_eq(tdev_checkin_resume(&attacker, "p", TEST_SECRET, claim, sizeof claim, NULL, 0), 0);
    enum tdev_result r = tdev_await_config(&attacker, 2000);
    cr_assert(r == TDEV_REJECTED || r == TDEV_TIMEOUT, "result %d", r);
    shoal_wss_abort(attacker.wss);
    tdev_close(&attacker);
    sleep_ms(300);

    float delta[PARAMS];
    for (int i = 0; i < PARAMS; i++)
        delta[i] = 0.125f;
    cr_assert_eq(tdev_report(&victim, delta, PARAMS, 4, 0.3, 16), 0);
    cr_assert_eq(tdev_await_ack(&victim, 10000), TDEV_ACKED);
    cr_assert_eq(victim.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "reason %d",
                 victim.reason);
    tdev_close(&victim);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* A device aborted for a protocol violation is lost at once: the round
 * settles with the reports it has instead of waiting for its deadline. */
Test(server, a_device_aborted_for_a_bad_chunk_does_not_hold_the_round)
{
    tserver t;
    char *pop = tpop("p",
                     "\"goal_count\": 2, \"over_selection\": 1.0, \"min_report_fraction\": 0.5, "
                     "\"pipelining\": false",
                     NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    tdev a, b;
    cr_assert_eq(tdev_connect(&a, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&a, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_connect(&b, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&b, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&a, 10000), TDEV_ACCEPTED);
    cr_assert_eq(tdev_await_config(&b, 10000), TDEV_ACCEPTED);
    float initial[PARAMS], delta[PARAMS];
    memcpy(initial, a.model, sizeof initial);
    for (int i = 0; i < PARAMS; i++)
        delta[i] = -0.5f;
    cr_assert_eq(tdev_report(&a, delta, PARAMS, 3, 0.3, 64), 0);
    cr_assert_eq(tdev_await_ack(&a, 10000), TDEV_ACKED);
    b.session[0] ^= 1; /* a chunk for a session that is not b's */
    cr_assert_eq(tdev_upload(&b, delta, PARAMS, 64, 0, 1), 0);
    cr_assert_eq(tdev_await_ack(&b, 10000), TDEV_ABORTED);
    cr_assert_eq(b.reason, SHOAL__REASON__REASON_NOT_SELECTED);
    /* The round commits now, long before its 30 s deadline. */
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    for (int tries = 0; tries < 100 && version < 1; tries++) {
        shoal_free(params);
        params = NULL;
        if (tstate_latest(&t, "p", &params, &count, &version) != 0)
            version = 0;
        sleep_ms(20);
    }
    cr_assert_eq(version, 1u, "the round waited for the aborted device");
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(params[i], initial[i] - 0.5f, 1e-6);
    shoal_free(params);
    tdev_close(&a);
    tdev_close(&b);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(server, a_huge_update_or_example_count_is_refused)
{
    session_plan bad;
    fill(&bad, NULL, "p", 1.0f, 5);
    bad.delta[2] = 3.0e38f; /* finite, but would overflow the round's sum */
    expect_refused_update(&bad, SHOAL__REASON__REASON_MALFORMED);
    fill(&bad, NULL, "p", 1.0f, 2000000000ull); /* above the hard cap */
    expect_refused_update(&bad, SHOAL__REASON__REASON_MALFORMED);
}

Test(server, a_connection_that_never_checks_in_is_closed)
{
    tserver t;
    char *pop = tpop("p", "\"goal_count\": 1", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    /* The harness sets limits.handshake_timeout_ms to 5 s. */
    cr_assert_eq(tdev_await_config(&d, 15000), TDEV_ABORTED);
    cr_assert_eq(d.reason, SHOAL__REASON__REASON_MALFORMED);
    cr_assert_not_null(strstr(d.detail, "no CheckIn"), "%s", d.detail);
    tdev_close(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* A model of several chunks reaches every device intact: the chunks are
 * encoded once per version and shared by all downloads. */
Test(server, a_multi_chunk_model_reaches_every_device_intact)
{
    tserver t;
    char *pop =
        tpop("big", "\"goal_count\": 3, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    /* logreg on 1x512x600 with 2 classes: 614,402 parameters, 2.4 MB, three
     * 1 MiB chunks. */
    char *shape = strstr(pop, "\"input_shape\": [1, 2, 2]");
    cr_assert_not_null(shape);
    char big[4096];
    snprintf(big, sizeof big, "%.*s\"input_shape\": [1, 512, 600]%s", (int)(shape - pop), pop,
             shape + strlen("\"input_shape\": [1, 2, 2]"));
    free(pop);
    tserver_prepare(&t, big);
    tserver_start(&t);
    tdev d[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tdev_connect(&d[i], &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&d[i], "big", TEST_SECRET, 0, NULL, 0), 0);
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tdev_await_config(&d[i], 30000), TDEV_ACCEPTED, "device %d", i);
        cr_assert_eq(d[i].param_count, 614402u);
        cr_assert_not_null(d[i].model);
    }
    int status = 0;
    size_t len = 0;
    char *body = thttp_get(&t, "/v1/populations/big/model", &status, &len);
    cr_assert_eq(status, 200);
    cr_assert_eq(len, 614402u * 4);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(memcmp(d[i].model, body, len), 0, "device %d got another model", i);
    free(body);
    for (int i = 0; i < 3; i++)
        tdev_close(&d[i]);
    tserver_stop(&t);
    tserver_cleanup(&t);
}
