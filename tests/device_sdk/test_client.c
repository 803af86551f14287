/* The device SDK against the real shoal-server, in process, over TLS on
 * loopback: the POSIX port moves the bytes, the test port scripts
 * eligibility and records what is sent. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "sdk_util.h"
#include "shoal/alloc.h"
#include "shoal/client.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"
#include "shoal/rng.h"
#include "shoal/store.h"
#include "shoal/selfsigned.h"
#include "shoal/train.h"

#define PARAMS     10
#define EXAMPLES   300
#define TRAIN_SEED 42

/* Synthetic examples for the 1x2x2 logreg: label 1 when the first two
 * features outweigh the last two. Every feature is a random float, so its
 * bit pattern is distinctive. */
static void make_examples(float x[EXAMPLES][4], int32_t y[EXAMPLES])
{
    shoal_rng rng;
    shoal_rng_seed(&rng, 2024);
    for (int i = 0; i < EXAMPLES; i++) {
        for (int j = 0; j < 4; j++)
            x[i][j] = (float)shoal_rng_normal(&rng) + 0.123456f * (float)(j + 1);
        y[i] = x[i][0] + x[i][1] > x[i][2] + x[i][3];
    }
}

static void make_store(const char *path, const char *collection)
{
    static float x[EXAMPLES][4];
    static int32_t y[EXAMPLES];
    make_examples(x, y);
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_example ex[EXAMPLES];
    memset(ex, 0, sizeof ex);
    for (int i = 0; i < EXAMPLES; i++) {
        ex[i].features = x[i];
        ex[i].feature_count = 4;
        ex[i].label = y[i];
        ex[i].timestamp_ms = 1767225600000 + i;
    }
    cr_assert_eq(shoal_store_add_batch(st, collection, ex, EXAMPLES, 1767225600000 + EXAMPLES, &ei),
                 SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
}

/* One SDK device: the POSIX port underneath the test port. */
typedef struct sdk_device {
    shoal_port posix;
    shoal_test_port tp;
    shoal_port port;
    shoal_client_config cfg;
    char store[256];
    char *ca;
    shoal_client *client;
} sdk_device;

static void sdk_device_init(sdk_device *d, const tserver *t, const char *token)
{
    memset(d, 0, sizeof *d);
    shoal_errinfo ei = {0};
    shoal_posix_port_config pc = {
        .power_supply_dir = "", .battery_percent = -1, .charging = -1, .idle = -1};
    cr_assert_eq(shoal_posix_port_init(&pc, &d->posix, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_test_port_init(&d->tp);
    d->tp.transport = &d->posix;
    shoal_test_port_bind(&d->tp, &d->port);
    snprintf(d->store, sizeof d->store, "%s/examples.db", t->dir);
    d->ca = sdk_read_text(t->cert);
    d->cfg = (shoal_client_config){.host = "127.0.0.1",
                                   .port = t->endpoint.port,
                                   .server_name = "localhost",
                                   .ca_pem = d->ca,
                                   .population = "p",
                                   .auth_token = (const uint8_t *)token,
                                   .store_path = d->store,
                                   .io_timeout_ms = 10000,
                                   .train_seed = TRAIN_SEED,
                                   .policy = {.require_charging = 1, .poll_interval_ms = -1}};
}

static void sdk_device_new_client(sdk_device *d)
{
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &d->client, &ei), SHOAL_OK, "%s", ei.msg);
}

static void sdk_device_fini(sdk_device *d)
{
    shoal_client_free(d->client);
    shoal_test_port_fini(&d->tp);
    shoal_posix_port_fini(&d->posix);
    free(d->ca);
}

static void start_server(tserver *t, const char *round_fields)
{
    char *pop = tpop("p", round_fields, NULL);
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

static void expect_window(const shoal_session_result *r, uint64_t lo, uint64_t hi)
{
    cr_assert_geq(r->retry_min_ms, lo);
    cr_assert_leq(r->retry_max_ms, hi);
    cr_assert_leq(r->retry_min_ms, r->retry_max_ms);
    cr_assert_geq(r->next_checkin_ms, r->retry_min_ms);
    cr_assert_leq(r->next_checkin_ms, r->retry_max_ms);
}

/* The delta the device must have computed, recomputed here from the same
 * store, seed and plan (logreg 1x2x2, SGD lr 0.1, 1 epoch, batch 32). */
static void recompute_delta(const char *store_path, const float *global, float *delta)
{
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(store_path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_criteria crit = {.collection = "p"};
    shoal_store_iter *it = NULL;
    cr_assert_eq(shoal_store_iter_new(st, &crit, TRAIN_SEED, &it, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_new(EXAMPLES, (shoal_shape){1, 2, 2}, 2, &ds), SHOAL_OK);
    shoal_store_batch b = {.x = ds->x, .y = ds->y};
    cr_assert_eq(shoal_store_iter_next(it, EXAMPLES, &b, &ei), SHOAL_ROW);
    cr_assert_eq(b.count, (size_t)EXAMPLES);
    shoal_store_iter_free(it);
    shoal_store_close(st);
    shoal_model *m = NULL;
    cr_assert_eq(shoal_model_new(SHOAL_MODEL_LOGREG, (shoal_shape){1, 2, 2}, 2, &m), SHOAL_OK);
    shoal_train_config tc = {.epochs = 1, .batch = 32};
    tc.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
    shoal_train_result tr;
    cr_assert_eq(shoal_train_local(m, global, ds, NULL, ds->count, &tc, TRAIN_SEED, delta, &tr),
                 SHOAL_OK);
    shoal_model_free(m);
    shoal_dataset_free(ds);
}

Test(device_sdk_client, trains_and_reports_and_the_server_folds_exactly_its_delta)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    sdk_device_new_client(&d);

    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_NONE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert_eq(r.example_count, (uint64_t)EXAMPLES);
    cr_assert(r.connected && r.model_downloaded);
    cr_assert_eq(r.round, 1u);
    expect_window(&r, 1000, 5000);
    cr_assert_geq(r.next_checkin_unix_ms, 1767225600000);

    size_t n = 0, mn = 0;
    const float *delta = shoal_client_last_update(d.client, &n);
    const float *initial = shoal_client_model(d.client, &mn);
    cr_assert_eq(n, (size_t)PARAMS);
    cr_assert_eq(mn, (size_t)PARAMS);
    float want_delta[PARAMS];
    recompute_delta(d.store, initial, want_delta);
    cr_assert_arr_eq(delta, want_delta, sizeof want_delta, "the delta is not shoal_train_local's");

    /* Stopping right after the ack: the server commits the round
     * first. */
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "p", &params, &count, &version), 0);
    cr_assert_eq(count, (size_t)PARAMS);
    cr_assert_eq(version, 1u);
    for (int j = 0; j < PARAMS; j++)
        cr_assert_float_eq(params[j], initial[j] + delta[j], 1e-6, "param %d: %g, want %g", j,
                           (double)params[j], (double)(initial[j] + delta[j]));
    shoal_free(params);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_client, a_full_round_rejects_with_a_window_inside_the_configured_bounds)
{
    tserver t;
    start_server(&t, "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false");
    /* Two scripted devices fill the round and hold it open. */
    tdev holders[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(tdev_connect(&holders[i], &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&holders[i], "p", TEST_SECRET, 0, NULL, 0), 0);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(tdev_await_config(&holders[i], 10000), TDEV_ACCEPTED);
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_REJECTED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_REJECTED, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.reason, SHOAL__REASON__REASON_ROUND_FULL);
    cr_assert_eq(r.err, SHOAL_OK);
    expect_window(&r, 1000, 5000);
    cr_assert_eq(r.next_checkin_unix_ms - (int64_t)r.next_checkin_ms,
                 d.tp.wall_ms + d.tp.monotonic_ms, "next time is now + the chosen delay");
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    for (int i = 0; i < 2; i++)
        tdev_close(&holders[i]);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, an_ineligible_device_never_connects)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    d.tp.charging = 0;
    d.cfg.fallback_retry_min_ms = 60000;
    d.cfg.fallback_retry_max_ms = 120000;
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INELIGIBLE);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_INELIGIBLE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "not charging"), "%s", r.errinfo.msg);
    cr_assert_eq(d.tp.connects, 0u);
    cr_assert_eq(r.connected, 0);
    expect_window(&r, 60000, 120000);
    cr_assert_eq(r.retry_min_ms, 60000u);

    /* Each other condition of the policy is checked too. */
    shoal_client_free(d.client);
    d.tp.charging = 1;
    d.tp.network = SHOAL_NET_METERED;
    d.cfg.policy.require_unmetered = 1;
    sdk_device_new_client(&d);
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INELIGIBLE);
    cr_assert_not_null(strstr(r.errinfo.msg, "unmetered"), "%s", r.errinfo.msg);
    shoal_client_free(d.client);
    d.tp.network = SHOAL_NET_UNMETERED;
    d.tp.battery_percent = 15;
    d.cfg.policy.min_battery_percent = 30;
    sdk_device_new_client(&d);
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INELIGIBLE);
    cr_assert_not_null(strstr(r.errinfo.msg, "15 %"), "%s", r.errinfo.msg);
    cr_assert_eq(d.tp.connects, 0u);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, unplugging_during_training_interrupts_and_uploads_nothing)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    /* Poll 1 is the check before check-in; training polls before every
     * batch (10 batches of 32): the fourth poll finds the device
     * unplugged. */
    d.tp.charging_flip_after = 3;
    d.tp.charging_after = 0;
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_STOPPED_INELIGIBLE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "not charging"), "%s", r.errinfo.msg);
    cr_assert_eq(d.tp.charging_polls, 4u);
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    expect_window(&r, 1000, 5000);
    size_t mn = 0;
    float initial[PARAMS];
    memcpy(initial, shoal_client_model(d.client, &mn), sizeof initial);

    int status = 0;
    char *metrics = NULL;
    for (int tries = 0; tries < 50; tries++) {
        free(metrics);
        metrics = thttp_get(&t, "/metrics", &status, NULL);
        if (metrics && strstr(metrics, "shoal_devices_dropped_total{population=\"p\"} 1\n"))
            break;
        sdk_sleep_ms(20);
    }
    cr_assert_not_null(metrics);
    cr_assert_not_null(strstr(metrics, "shoal_devices_dropped_total{population=\"p\"} 1\n"), "%s",
                       metrics);
    free(metrics);
    tserver_stop(&t);
    /* No round committed: the server holds no checkpoint but its initial
     * model (logreg, init_seed 7), the one the device downloaded. */
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_neq(tstate_latest(&t, "p", &params, &count, &version), 0,
                  "a checkpoint (version %llu) was committed", (unsigned long long)version);
    shoal_model *m = NULL;
    cr_assert_eq(shoal_model_new(SHOAL_MODEL_LOGREG, (shoal_shape){1, 2, 2}, 2, &m), SHOAL_OK);
    float init[PARAMS];
    shoal_model_init_params(m, 7, init);
    shoal_model_free(m);
    cr_assert_arr_eq(init, initial, sizeof initial);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_client, a_bad_token_is_an_error_naming_auth_failed)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1");
    sdk_device d;
    sdk_device_init(&d, &t, "not-the-secret-at-all-0000");
    make_store(d.store, "p");
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_AUTH_FAILED, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_EAUTH);
    cr_assert_eq(r.reason, SHOAL__REASON__REASON_AUTH_FAILED);
    cr_assert_not_null(strstr(r.errinfo.msg, "AUTH_FAILED"), "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_model(d.client, NULL));
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, a_server_not_signed_by_the_pinned_ca_is_a_tls_error)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    char cert[256], key[256];
    snprintf(cert, sizeof cert, "%s/other-cert.pem", t.dir);
    snprintf(key, sizeof key, "%s/other-key.pem", t.dir);
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_selfsigned_make(cert, key, "localhost", 30, &ei), SHOAL_OK, "%s", ei.msg);
    free(d.ca);
    d.ca = sdk_read_text(cert);
    d.cfg.ca_pem = d.ca;
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_SERVER_UNTRUSTED, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_EAUTH, "%s: %s", shoal_err_name(r.err), r.errinfo.msg);
    cr_assert_not_null(strstr(r.errinfo.msg, "TLS"), "%s", r.errinfo.msg);
    cr_assert(r.connected);
    expect_window(&r, 15 * 60000, 30 * 60000);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- raw examples never leave the device ---------------------------------------------- */

typedef struct recording {
    uint8_t *bytes;
    size_t len;
    unsigned messages;
} recording;

static void record_message(void *ctx, const uint8_t *msg, size_t len)
{
    recording *rec = ctx;
    rec->bytes = realloc(rec->bytes, rec->len + len);
    memcpy(rec->bytes + rec->len, msg, len);
    rec->len += len;
    rec->messages++;
}

static int contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

Test(device_sdk_client, no_example_feature_ever_appears_in_what_the_device_sends)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    d.tp.record_sent = 1;
    recording rec = {0};
    d.cfg.observe_send = record_message;
    d.cfg.observe_ctx = &rec;
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s", r.errinfo.msg);
    cr_assert_geq(rec.messages, 3u, "CheckIn, ReportChunk, Report");
    cr_assert_gt(d.tp.sent_len, rec.len, "TLS and WebSocket framing add bytes");

    /* The detector works: the update's bytes are in the plaintext. */
    size_t n = 0;
    const float *delta = shoal_client_last_update(d.client, &n);
    cr_assert(contains(rec.bytes, rec.len, delta, n * sizeof(float)));

    static float x[EXAMPLES][4];
    static int32_t y[EXAMPLES];
    make_examples(x, y);
    for (int i = 0; i < EXAMPLES; i++)
        for (int j = 0; j < 4; j++) {
            cr_assert_not(contains(rec.bytes, rec.len, &x[i][j], 4),
                          "feature %d of example %d was sent", j, i);
            cr_assert_not(contains(d.tp.sent, d.tp.sent_len, &x[i][j], 4),
                          "feature %d of example %d is on the wire", j, i);
        }
    free(rec.bytes);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- more sessions --------------------------------------------------------------------- */

Test(device_sdk_client, an_event_loop_drives_the_session_with_step)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    sdk_device_new_client(&d);
    shoal_session_result r;
    unsigned waits = 0;
    for (;;) {
        int64_t now = d.port.monotonic_ms(d.port.ctx);
        shoal_err err = shoal_client_step(d.client, now, &r);
        if (err == SHOAL_DONE)
            break;
        cr_assert_eq(err, SHOAL_EAGAIN, "%s", shoal_err_name(err));
        cr_assert_not_null(shoal_client_conn(d.client));
        cr_assert_gt(shoal_client_deadline_ms(d.client), now);
        /* The loop's own wait: the POSIX port's poll, 50 ms at most. */
        shoal_err w = d.posix.wait(d.posix.ctx, shoal_client_conn(d.client),
                                   shoal_client_want_write(d.client), 50);
        cr_assert(w == SHOAL_OK || w == SHOAL_ETIMEDOUT);
        waits++;
        cr_assert_lt(waits, 10000u);
    }
    cr_assert_geq(waits, 1u, "step never returned to wait for the network");
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_conn(d.client));
    /* run() refuses a port without wait. */
    d.port.wait = NULL;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_EINVAL);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, a_held_current_checkpoint_skips_the_download)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    d.tp.charging_flip_after = 3; /* the first session is interrupted: nothing commits */
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s", r.errinfo.msg);
    cr_assert(r.model_downloaded);
    d.tp.charging_flip_after = 0;
    d.tp.charging = 1;
    /* The next round may open a moment later: retry as told. */
    for (int tries = 0; tries < 20; tries++) {
        cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
        if (r.outcome != SHOAL_SESSION_REJECTED)
            break;
        sdk_sleep_ms(100);
    }
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.model_downloaded, 0, "the held checkpoint was current");
    cr_assert_eq(r.round, 2u);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, an_evaluation_task_reports_loss_and_accuracy_of_the_served_model)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false, "
                     "\"eval_every\": 1, \"eval_goal_count\": 1");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s", r.errinfo.msg);
    for (int tries = 0; tries < 20; tries++) {
        cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
        if (r.outcome != SHOAL_SESSION_REJECTED)
            break;
        sdk_sleep_ms(100);
    }
    cr_assert_eq(r.outcome, SHOAL_SESSION_EVALUATED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_NONE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert(r.model_downloaded, "the committed model is new to the device");
    cr_assert_null(shoal_client_last_update(d.client, NULL), "an evaluation uploads no update");
    cr_assert_eq(r.example_count, (uint64_t)EXAMPLES);

    /* The same figures, computed here on the committed checkpoint. */
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "p", &params, &count, &version), 0);
    size_t mn = 0;
    cr_assert_arr_eq(shoal_client_model(d.client, &mn), params, PARAMS * sizeof(float));
    static float x[EXAMPLES][4];
    static int32_t y[EXAMPLES];
    make_examples(x, y);
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_new(EXAMPLES, (shoal_shape){1, 2, 2}, 2, &ds), SHOAL_OK);
    memcpy(ds->x, x, sizeof x);
    memcpy(ds->y, y, sizeof y);
    shoal_model *m = NULL;
    cr_assert_eq(shoal_model_new(SHOAL_MODEL_LOGREG, (shoal_shape){1, 2, 2}, 2, &m), SHOAL_OK);
    shoal_train_config tc = {.epochs = 1, .batch = 64};
    tc.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
    shoal_trainer *tr = NULL;
    cr_assert_eq(shoal_trainer_new(m, &tc, &tr), SHOAL_OK);
    shoal_batch_stats st = {0};
    cr_assert_eq(shoal_trainer_evaluate(tr, params, ds, NULL, ds->count, &st), SHOAL_OK);
    cr_assert_float_eq(r.loss, st.loss_sum / EXAMPLES, 1e-9);
    cr_assert_float_eq(r.accuracy, (double)st.correct / EXAMPLES, 1e-12);
    shoal_trainer_free(tr);
    shoal_model_free(m);
    shoal_dataset_free(ds);
    shoal_free(params);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_client, too_few_examples_report_insufficient_data)
{
    tserver t;
    start_server(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "another-collection"); /* nothing in "p" */
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INSUFFICIENT_DATA, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_INSUFFICIENT_DATA, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "0 examples"), "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_client, the_plans_time_limit_interrupts_training)
{
    /* tpop's plan is {"learning_rate": 0.1}; this one adds a 1 ms limit,
     * which the test port's clock (1 ms per reading) passes at the first
     * poll. */
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    char *at = strstr(pop, "\"learning_rate\": 0.1");
    cr_assert_not_null(at);
    char *patched = malloc(strlen(pop) + 64);
    snprintf(patched, strlen(pop) + 64, "%.*s\"learning_rate\": 0.1, \"max_duration_ms\": 1%s",
             (int)(at - pop), pop, at + strlen("\"learning_rate\": 0.1"));
    tserver_prepare(&t, patched);
    free(pop);
    free(patched);
    tserver_start(&t);
    sdk_device d;
    sdk_device_init(&d, &t, TEST_SECRET);
    make_store(d.store, "p");
    sdk_device_new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d.client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_TIME_LIMIT, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "time limit"), "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}
