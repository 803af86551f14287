/* limits.max_concurrent_uploads: with one place, a second device's upload
 * waits, its input paused, until the first one's ends; then it goes on and
 * both are folded. Without the limit the same second device is answered
 * at once (the check that the wait comes from the gate). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sessions.h"
#include "shoal/alloc.h"

#define PARAMS 10 /* the harness's logreg 1x2x2 -> 2 classes */

static double metric(const tserver *t, const char *name)
{
    int status = 0;
    char *text = thttp_get(t, "/metrics", &status, NULL);
    cr_assert_not_null(text);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(text, key);
    cr_assert_not_null(at, "no %s in /metrics", name);
    double v = strtod(at + strlen(key), NULL);
    free(text);
    return v;
}

/* Polls until the gauge reads `want` (bounded: a stuck server fails). */
static void wait_metric(const tserver *t, const char *name, double want)
{
    double v = metric(t, name);
    for (int tries = 0; tries < 500 && v != want; tries++) {
        sleep_ms(20);
        v = metric(t, name);
    }
    cr_assert_eq(v, want, "%s is %g, want %g", name, v, want);
}

/* Two devices of one round; a sends its first chunk and holds. Returns
 * whether b's Report was answered while a held its upload. */
static int second_answered_while_first_holds(const char *limit, float *initial,
                                             float committed[PARAMS])
{
    tserver t;
    tserver_prepare_one(&t, "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false");
    tserver_config_edit(&t, "\"max_connections\": 256,", limit);
    tserver_start(&t);
    tdev a, b;
    cr_assert_eq(tdev_connect(&a, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&a, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_connect(&b, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&b, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&a, 10000), TDEV_ACCEPTED);
    cr_assert_eq(tdev_await_config(&b, 10000), TDEV_ACCEPTED);
    memcpy(initial, a.model, PARAMS * sizeof *initial);
    float da[PARAMS], db[PARAMS];
    for (int i = 0; i < PARAMS; i++) {
        da[i] = 0.25f;
        db[i] = -0.75f;
    }
    /* a: one 8-byte chunk of 40, then it holds. */
    cr_assert_eq(tdev_upload(&a, da, PARAMS, 8, 0, 1), 0);
    wait_metric(&t, "shoal_uploads_active", 1);
    /* b: its first chunk finds the place taken (with the limit). */
    cr_assert_eq(tdev_upload(&b, db, PARAMS, 8, 0, 1), 0);
    const int limited = strstr(limit, "\"max_concurrent_uploads\": 1") != NULL;
    wait_metric(&t, "shoal_uploads_waiting", limited ? 1 : 0);
    /* The rest of b's update and its Report. */
    cr_assert_eq(tdev_upload(&b, db, PARAMS, 8, 8, 100), 0);
    cr_assert_eq(tdev_send_report(&b, PARAMS, 2, 0.5), 0);
    enum tdev_result early = tdev_await_ack(&b, 700);
    /* a finishes; b goes on (or has gone on already). */
    cr_assert_eq(tdev_upload(&a, da, PARAMS, 8, 8, 100), 0);
    cr_assert_eq(tdev_send_report(&a, PARAMS, 2, 0.5), 0);
    cr_assert_eq(tdev_await_ack(&a, 10000), TDEV_ACKED);
    cr_assert_eq(a.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    if (early != TDEV_ACKED)
        cr_assert_eq(tdev_await_ack(&b, 10000), TDEV_ACKED, "b was never answered");
    cr_assert_eq(b.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    wait_metric(&t, "shoal_uploads_active", 0);
    cr_assert_eq(metric(&t, "shoal_uploads_waited_total"), limited ? 1.0 : 0.0);
    tdev_close(&a);
    tdev_close(&b);
    /* Both updates are in the round's FedAvg (equal example counts). */
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    for (int tries = 0; tries < 250 && version < 1; tries++) {
        shoal_free(params);
        params = NULL;
        if (tstate_latest(&t, "p", &params, &count, &version) != 0)
            version = 0;
        sleep_ms(20);
    }
    cr_assert_eq(version, 1u);
    memcpy(committed, params, PARAMS * sizeof *committed);
    shoal_free(params);
    tserver_stop(&t);
    tserver_cleanup(&t);
    return early == TDEV_ACKED;
}

Test(uploads, with_one_place_the_second_upload_waits_for_the_first)
{
    float initial[PARAMS], committed[PARAMS];
    int early = second_answered_while_first_holds(
        "\"max_connections\": 256, \"max_concurrent_uploads\": 1,", initial, committed);
    cr_assert_not(early, "b's report was answered while a held the only place");
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(committed[i], initial[i] + 0.5f * (0.25f - 0.75f), 1e-6);
}

Test(uploads, without_a_limit_the_second_upload_does_not_wait)
{
    float initial[PARAMS], committed[PARAMS];
    int early = second_answered_while_first_holds(
        "\"max_connections\": 256, \"max_concurrent_uploads\": 0,", initial, committed);
    cr_assert(early, "b waited although no limit was set");
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(committed[i], initial[i] + 0.5f * (0.25f - 0.75f), 1e-6);
}
