/* The device state database (config.state_path) against the real
 * shoal-server in process: persisted retry windows, the operational log,
 * daily byte budgets, the session time budget, the contribution period and
 * the plan's minimum example count. The test port counts connects and owns
 * the wall clock, so "does not connect" and "after the window" are exact. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sdk_util.h"
#include "shoal/client.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"
#include "shoal/rng.h"
#include "shoal/store.h"

#define EXAMPLES    300
#define MODEL_BYTES 40 /* logreg 1x2x2, 2 classes: 10 float32 */

/* Random floats: distinctive bit patterns to look for. */
static void make_features(float x[EXAMPLES][4])
{
    shoal_rng rng;
    shoal_rng_seed(&rng, 2024);
    for (int i = 0; i < EXAMPLES; i++)
        for (int j = 0; j < 4; j++)
            x[i][j] = (float)shoal_rng_normal(&rng);
}

static void make_store(const char *path, const char *collection)
{
    static float x[EXAMPLES][4];
    make_features(x);
    shoal_example ex[EXAMPLES];
    memset(ex, 0, sizeof ex);
    for (int i = 0; i < EXAMPLES; i++) {
        ex[i].features = x[i];
        ex[i].feature_count = 4;
        ex[i].label = x[i][0] + x[i][1] > x[i][2] + x[i][3];
        ex[i].timestamp_ms = 1767225600000 + i;
    }
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_store_add_batch(st, collection, ex, EXAMPLES, 1767225600000 + EXAMPLES, &ei),
                 SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
}

typedef struct sdk_device {
    shoal_port posix;
    shoal_test_port tp;
    shoal_port port;
    shoal_client_config cfg;
    char store[256], state[256];
    char *ca;
    shoal_client *client;
} sdk_device;

static void sdk_device_init(sdk_device *d, const tserver *t)
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
    snprintf(d->state, sizeof d->state, "%s/device-state.db", t->dir);
    make_store(d->store, "p");
    d->ca = sdk_read_text(t->cert);
    d->cfg = (shoal_client_config){.host = "127.0.0.1",
                                   .port = t->endpoint.port,
                                   .server_name = "localhost",
                                   .ca_pem = d->ca,
                                   .population = "p",
                                   .auth_token = (const uint8_t *)TEST_SECRET,
                                   .store_path = d->store,
                                   .io_timeout_ms = 10000,
                                   .train_seed = 42,
                                   .policy = {.require_charging = 1, .poll_interval_ms = -1},
                                   .state_path = d->state};
}

/* Frees the client there is and makes a new one from d->cfg: what an app
 * restarted with the same state_path does. */
static void new_client(sdk_device *d)
{
    shoal_client_free(d->client);
    d->client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &d->client, &ei), SHOAL_OK, "%s", ei.msg);
}

static shoal_session_result run(sdk_device *d)
{
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(d->client, &r), SHOAL_OK);
    return r;
}

/* The wall time the test port answers now (without moving its clock). */
static int64_t wall_now(const sdk_device *d)
{
    return d->tp.wall_ms + d->tp.monotonic_ms;
}

static void sdk_device_fini(sdk_device *d)
{
    shoal_client_free(d->client);
    shoal_test_port_fini(&d->tp);
    shoal_posix_port_fini(&d->posix);
    free(d->ca);
}

static void start_server(tserver *t, const char *round_fields, const char *plan_extra)
{
    char *pop = tpop("p", round_fields, NULL);
    if (plan_extra) {
        const char *lr = "\"learning_rate\": 0.1";
        char *at = strstr(pop, lr);
        cr_assert_not_null(at);
        size_t cap = strlen(pop) + strlen(plan_extra) + 8;
        char *patched = malloc(cap);
        snprintf(patched, cap, "%.*s%s, %s%s", (int)(at - pop), pop, lr, plan_extra,
                 at + strlen(lr));
        free(pop);
        pop = patched;
    }
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

#define ROUND_OF(n) "\"goal_count\": " #n ", \"over_selection\": 1.0, \"pipelining\": false"

/* Fills a round of goal_count 2 with two scripted devices. */
static void hold_round(tserver *t, tdev holders[], int n)
{
    for (int i = 0; i < n; i++) {
        cr_assert_eq(tdev_connect(&holders[i], &t->endpoint), 0);
        cr_assert_eq(tdev_checkin(&holders[i], "p", TEST_SECRET, 0, NULL, 0), 0);
    }
    for (int i = 0; i < n; i++)
        cr_assert_eq(tdev_await_config(&holders[i], 10000), TDEV_ACCEPTED);
}

/* ---- the log, read back --------------------------------------------------------------- */

#define MAX_EVENTS 64
typedef struct log_copy {
    shoal_client_event ev[MAX_EVENTS];
    char population[MAX_EVENTS][16];
    char detail[MAX_EVENTS][256];
    int n;
} log_copy;

static int copy_event(void *ctx, const shoal_client_event *ev)
{
    log_copy *l = ctx;
    cr_assert_lt(l->n, MAX_EVENTS);
    l->ev[l->n] = *ev;
    snprintf(l->population[l->n], sizeof l->population[0], "%s", ev->population);
    snprintf(l->detail[l->n], sizeof l->detail[0], "%s", ev->detail);
    l->n++;
    return 0;
}

static void read_log(sdk_device *d, int64_t since, log_copy *l)
{
    memset(l, 0, sizeof *l);
    cr_assert_eq(shoal_client_log_read(d->client, since, copy_event, l), SHOAL_OK);
}

static void expect_kinds(const log_copy *l, const shoal_client_event_kind *want, int n)
{
    cr_assert_eq(l->n, n, "%d log rows, want %d", l->n, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(l->ev[i].kind, want[i], "row %d is %s, want %s", i,
                     shoal_client_event_name(l->ev[i].kind), shoal_client_event_name(want[i]));
}

/* The bytes of a file, or NULL (len 0) if it does not exist. */
static uint8_t *read_file(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

/* ---- 1. persisted retry windows ------------------------------------------------------- */

Test(device_sdk_state, a_new_client_does_not_check_in_before_the_window_a_rejection_chose)
{
    tserver t;
    start_server(&t, ROUND_OF(2), NULL);
    tdev holders[2];
    hold_round(&t, holders, 2);
    sdk_device d;
    sdk_device_init(&d, &t);
    new_client(&d);
    shoal_session_result r1 = run(&d);
    cr_assert_eq(r1.outcome, SHOAL_SESSION_REJECTED, "%s: %s",
                 shoal_session_outcome_name(r1.outcome), r1.errinfo.msg);
    cr_assert_eq(d.tp.connects, 1u);
    cr_assert_gt(r1.next_checkin_unix_ms, wall_now(&d));

    /* The app restarts at once: the new client keeps the window. */
    new_client(&d);
    int64_t before = wall_now(&d);
    shoal_session_result r2 = run(&d);
    cr_assert_eq(r2.outcome, SHOAL_SESSION_NOT_YET, "%s: %s",
                 shoal_session_outcome_name(r2.outcome), r2.errinfo.msg);
    cr_assert_eq(r2.session_reason, SHOAL_SESSION_REASON_HELD, "%s",
                 shoal_session_reason_name(r2.session_reason));
    cr_assert_eq(r2.hold, SHOAL_HOLD_RETRY_WINDOW);
    cr_assert_eq(d.tp.connects, 1u, "a held client connected");
    cr_assert_eq(r2.connected, 0);
    cr_assert_eq(r2.err, SHOAL_OK);
    cr_assert_eq(r2.hold_until_unix_ms, r1.next_checkin_unix_ms);
    cr_assert_eq(r2.next_checkin_unix_ms, r1.next_checkin_unix_ms);
    /* What is left: the window less the wall time that passed, exactly. */
    int64_t left = (int64_t)r2.next_checkin_ms;
    cr_assert_gt(left, 0);
    cr_assert_leq(left, r1.next_checkin_unix_ms - before);
    cr_assert_geq(left, r1.next_checkin_unix_ms - wall_now(&d));
    cr_assert_eq(r2.retry_min_ms, r2.next_checkin_ms);
    cr_assert_eq(r2.retry_max_ms, r2.next_checkin_ms);
    cr_assert_not_null(strstr(r2.errinfo.msg, "not yet"), "%s", r2.errinfo.msg);

    /* Once the wall clock passes the chosen time, it connects. */
    d.tp.wall_ms += left;
    shoal_session_result r3 = run(&d);
    cr_assert_eq(d.tp.connects, 2u, "%s: %s", shoal_session_outcome_name(r3.outcome),
                 r3.errinfo.msg);
    cr_assert_eq(r3.outcome, SHOAL_SESSION_REJECTED, "%s", r3.errinfo.msg);
    for (int i = 0; i < 2; i++)
        tdev_close(&holders[i]);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_state, an_ineligible_session_persists_no_window)
{
    tserver t;
    start_server(&t, ROUND_OF(1), NULL);
    sdk_device d;
    sdk_device_init(&d, &t);
    d.tp.charging = 0;
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INELIGIBLE);
    d.tp.charging = 1;
    new_client(&d);
    r = run(&d);
    cr_assert_eq(d.tp.connects, 1u, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s", r.errinfo.msg);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- 2. the operational log ----------------------------------------------------------- */

Test(device_sdk_state, the_log_holds_each_event_of_a_session_and_a_rejection_in_order)
{
    tserver t;
    start_server(&t, ROUND_OF(2), NULL);
    /* A scripted device takes the round's other place (and never
     * reports): the device's second check-in finds the round full. */
    tdev holder;
    cr_assert_eq(tdev_connect(&holder, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&holder, "p", TEST_SECRET, 0, NULL, 0), 0);
    sdk_device d;
    sdk_device_init(&d, &t);
    int64_t t0 = wall_now(&d);
    new_client(&d);
    shoal_session_result r1 = run(&d);
    cr_assert_eq(r1.outcome, SHOAL_SESSION_TRAINED, "%s: %s",
                 shoal_session_outcome_name(r1.outcome), r1.errinfo.msg);
    cr_assert_eq(tdev_await_config(&holder, 10000), TDEV_ACCEPTED);
    float delta[MODEL_BYTES / 4];
    size_t n_update = 0;
    const float *update = shoal_client_last_update(d.client, &n_update);
    cr_assert_eq(n_update, MODEL_BYTES / 4);
    memcpy(delta, update, sizeof delta);
    d.tp.wall_ms += (int64_t)r1.next_checkin_ms + 1;
    shoal_session_result r2 = run(&d);
    cr_assert_eq(r2.outcome, SHOAL_SESSION_REJECTED, "%s: %s",
                 shoal_session_outcome_name(r2.outcome), r2.errinfo.msg);

    log_copy l;
    read_log(&d, 0, &l);
    const shoal_client_event_kind want[] = {
        SHOAL_EVENT_CHECKED_IN, SHOAL_EVENT_ACCEPTED, SHOAL_EVENT_DOWNLOADED, SHOAL_EVENT_TRAINED,
        SHOAL_EVENT_UPLOADED,   SHOAL_EVENT_ACKED,    SHOAL_EVENT_CHECKED_IN, SHOAL_EVENT_REJECTED};
    expect_kinds(&l, want, 8);
    for (int i = 0; i < l.n; i++) {
        cr_assert_str_eq(l.population[i], "p");
        cr_assert_geq(l.ev[i].unix_ms, i ? l.ev[i - 1].unix_ms : t0, "row %d goes back in time", i);
        cr_assert_leq(l.ev[i].unix_ms, wall_now(&d));
        cr_assert_gt(l.ev[i].id, i ? l.ev[i - 1].id : 0);
    }
    cr_assert_eq(l.ev[1].status, 1, "the round");
    cr_assert_eq(l.ev[2].bytes, (uint64_t)MODEL_BYTES, "model bytes");
    cr_assert_eq(l.ev[3].example_count, (uint64_t)EXAMPLES);
    cr_assert_eq(l.ev[4].bytes, (uint64_t)MODEL_BYTES, "update bytes");
    cr_assert_eq(l.ev[5].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert_eq(l.ev[7].status, SHOAL__REASON__REASON_ROUND_FULL);
    cr_assert_not_null(strstr(l.detail[7], "ROUND_FULL"), "%s", l.detail[7]);
    /* On the wire the session moved more than the tensors: TLS, the
     * handshake, framing. */
    cr_assert_gt(r1.bytes_down, (uint64_t)MODEL_BYTES);
    cr_assert_gt(r1.bytes_up, (uint64_t)MODEL_BYTES);
    cr_assert_gt(r2.bytes_down, 0u);

    /* Neither an example's feature nor the update is anywhere in the
     * state database or its WAL. */
    static float x[EXAMPLES][4];
    make_features(x);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", d.state);
    size_t n_db = 0, n_wal = 0;
    uint8_t *db = read_file(d.state, &n_db), *walb = read_file(wal, &n_wal);
    cr_assert_gt(n_db + n_wal, 0u);
    cr_assert_not(contains(db, n_db, delta, sizeof delta) ||
                  contains(walb, n_wal, delta, sizeof delta));
    for (size_t k = 0; k < MODEL_BYTES / 4; k++)
        cr_assert_not(contains(db, n_db, &delta[k], 4) || contains(walb, n_wal, &delta[k], 4),
                      "update element %zu is in the device state", k);
    for (int i = 0; i < EXAMPLES; i++)
        for (int j = 0; j < 4; j++)
            cr_assert_not(contains(db, n_db, &x[i][j], 4) || contains(walb, n_wal, &x[i][j], 4),
                          "feature %d of example %d is in the device state", j, i);
    free(db);
    free(walb);

    /* since_unix_ms selects the later rows; a non-zero return stops. */
    log_copy later;
    read_log(&d, l.ev[6].unix_ms, &later);
    cr_assert_geq(later.n, 2);
    cr_assert_eq(later.ev[later.n - 1].id, l.ev[7].id);

    /* The row cap keeps the newest rows, applied when a client opens. */
    d.cfg.log_max_rows = 3;
    new_client(&d);
    log_copy capped;
    read_log(&d, 0, &capped);
    cr_assert_eq(capped.n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(capped.ev[i].id, l.ev[5 + i].id, "row %d: id %lld", i,
                     (long long)capped.ev[i].id);

    /* The age cap: a day later with a one-hour limit, nothing is left. */
    d.cfg.log_max_rows = 0;
    d.cfg.log_max_age_ms = 3600000;
    d.tp.wall_ms += 86400000;
    new_client(&d);
    log_copy aged;
    read_log(&d, 0, &aged);
    cr_assert_eq(aged.n, 0, "%d rows outlived the age cap", aged.n);
    tdev_close(&holder);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- 3. budgets and eligibility policies ---------------------------------------------- */

Test(device_sdk_state, a_used_up_daily_byte_budget_keeps_the_device_off_until_utc_midnight)
{
    tserver t;
    start_server(&t, ROUND_OF(1), NULL);
    sdk_device d;
    sdk_device_init(&d, &t);
    new_client(&d);
    shoal_session_result r1 = run(&d);
    cr_assert_eq(r1.outcome, SHOAL_SESSION_TRAINED, "%s", r1.errinfo.msg);
    d.tp.wall_ms += (int64_t)r1.next_checkin_ms + 1; /* past the retry window */
    int64_t midnight = (wall_now(&d) / 86400000 + 1) * 86400000;

    /* Today's received bytes reach the down budget exactly. */
    d.cfg.budget_bytes_down_per_day = r1.bytes_down;
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_OVER_BUDGET, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_HELD, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.hold, SHOAL_HOLD_BYTES_DOWN);
    cr_assert_eq(r.hold_until_unix_ms, midnight);
    cr_assert_eq(r.next_checkin_unix_ms, midnight);
    cr_assert_not_null(strstr(r.errinfo.msg, "budget_bytes_down_per_day"), "%s", r.errinfo.msg);
    cr_assert_eq(d.tp.connects, 1u);

    /* The same for the bytes sent. */
    d.cfg.budget_bytes_down_per_day = 0;
    d.cfg.budget_bytes_up_per_day = r1.bytes_up;
    new_client(&d);
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_OVER_BUDGET, "%s", r.errinfo.msg);
    cr_assert_eq(r.hold, SHOAL_HOLD_BYTES_UP);
    cr_assert_eq(d.tp.connects, 1u);

    /* The log says so. */
    log_copy l;
    read_log(&d, 0, &l);
    cr_assert_eq(l.ev[l.n - 1].kind, SHOAL_EVENT_HELD);
    cr_assert_eq(l.ev[l.n - 1].status, SHOAL_HOLD_BYTES_UP);

    /* One byte of room is room: a session starts. */
    d.cfg.budget_bytes_up_per_day = r1.bytes_up + 1;
    new_client(&d);
    r = run(&d);
    cr_assert_eq(d.tp.connects, 2u, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    d.tp.wall_ms += (int64_t)r.next_checkin_ms + 1;

    /* A new UTC day starts a new budget. */
    d.cfg.budget_bytes_up_per_day = 1;
    d.cfg.budget_bytes_down_per_day = 1;
    new_client(&d);
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_OVER_BUDGET, "%s", r.errinfo.msg);
    d.tp.wall_ms += r.hold_until_unix_ms - wall_now(&d);
    r = run(&d);
    cr_assert_eq(d.tp.connects, 3u, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_state, the_contribution_period_holds_the_population_and_max_examples_caps)
{
    tserver t;
    start_server(&t, ROUND_OF(1), NULL);
    sdk_device d;
    sdk_device_init(&d, &t);
    d.cfg.min_contribution_period_ms = 3600000;
    d.cfg.max_examples = 100; /* examples per session */
    new_client(&d);
    int64_t t0 = wall_now(&d);
    shoal_session_result r1 = run(&d);
    cr_assert_eq(r1.outcome, SHOAL_SESSION_TRAINED, "%s", r1.errinfo.msg);
    cr_assert_eq(r1.example_count, 100u);
    int64_t t1 = wall_now(&d);
    log_copy l;
    read_log(&d, 0, &l);
    cr_assert_eq(l.ev[3].kind, SHOAL_EVENT_TRAINED);
    cr_assert_eq(l.ev[3].example_count, 100u);

    d.tp.wall_ms += (int64_t)r1.next_checkin_ms + 1; /* past the retry window */
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_NOT_YET, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.hold, SHOAL_HOLD_CONTRIBUTION_PERIOD);
    cr_assert_geq(r.hold_until_unix_ms, t0 + 3600000);
    cr_assert_leq(r.hold_until_unix_ms, t1 + 3600000);
    cr_assert_eq(d.tp.connects, 1u);
    cr_assert_not_null(strstr(r.errinfo.msg, "min_contribution_period_ms"), "%s", r.errinfo.msg);

    d.tp.wall_ms += r.hold_until_unix_ms - wall_now(&d);
    r = run(&d);
    cr_assert_eq(d.tp.connects, 2u, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* Charging answers yes and, from the second poll on (the first is the
 * check before connecting), moves the monotonic clock on a second: each
 * training batch then takes a second of device time. */
static int charging_and_slow(void *ctx)
{
    shoal_test_port *tp = ctx;
    if (++tp->charging_polls > 1)
        tp->monotonic_ms += 1000;
    return 1;
}

Test(device_sdk_state, the_session_time_budget_interrupts_training)
{
    tserver t;
    start_server(&t, ROUND_OF(1), NULL);
    sdk_device d;
    sdk_device_init(&d, &t);
    d.tp.monotonic_step_ms = 0;
    d.port.charging = charging_and_slow;
    d.cfg.budget_session_ms = 2500;
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_SESSION_BUDGET, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "time budget"), "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    /* Start at 1000 ms, budget to 3500: batches start at 1000, 2000 and
     * 3000; the fourth poll, at 4000, stops. */
    cr_assert_eq(d.tp.charging_polls, 4u);
    log_copy l;
    read_log(&d, 0, &l);
    const shoal_client_event_kind want[] = {SHOAL_EVENT_CHECKED_IN, SHOAL_EVENT_ACCEPTED,
                                            SHOAL_EVENT_DOWNLOADED, SHOAL_EVENT_INTERRUPTED,
                                            SHOAL_EVENT_ACKED};
    expect_kinds(&l, want, 5);
    cr_assert_eq(l.ev[3].duration_ms, 3000u);
    cr_assert_not_null(strstr(l.detail[3], "budget_session_ms"), "%s", l.detail[3]);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_state, a_session_time_budget_spent_before_training_ends_the_session)
{
    tserver t;
    start_server(&t, ROUND_OF(1), NULL);
    sdk_device d;
    sdk_device_init(&d, &t);
    d.cfg.budget_session_ms = 1; /* the test port's clock moves 1 ms per reading */
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_SESSION_BUDGET, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "budget_session_ms 1"), "%s", r.errinfo.msg);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(d.tp.connects, 1u);
    cr_assert_null(shoal_client_model(d.client, NULL), "stopped before the model arrived");
    log_copy l;
    read_log(&d, 0, &l);
    cr_assert_gt(l.n, 0);
    cr_assert_eq(l.ev[l.n - 1].kind, SHOAL_EVENT_INTERRUPTED, "%s",
                 shoal_client_event_name(l.ev[l.n - 1].kind));
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_state, the_plans_min_examples_above_what_is_stored_is_insufficient_data)
{
    tserver t;
    start_server(&t, ROUND_OF(1), "\"min_examples\": 1000");
    sdk_device d;
    sdk_device_init(&d, &t);
    new_client(&d);
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INSUFFICIENT_DATA, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_not_null(strstr(r.errinfo.msg, "300 examples"), "%s", r.errinfo.msg);
    cr_assert_not_null(strstr(r.errinfo.msg, "needs 1000"), "%s", r.errinfo.msg);
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    log_copy l;
    read_log(&d, 0, &l);
    cr_assert_eq(l.ev[3].kind, SHOAL_EVENT_INSUFFICIENT_DATA, "%s",
                 shoal_client_event_name(l.ev[3].kind));
    cr_assert_eq(l.ev[3].example_count, 300u);
    cr_assert_eq(l.ev[3].status, 1000);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- misuse --------------------------------------------------------------------------- */

Test(device_sdk_state, budgets_without_a_state_path_and_a_foreign_state_file_are_refused)
{
    tserver t;
    tserver_prepare(&t, ""); /* only for its directory and certificate: no server runs */
    sdk_device d;
    sdk_device_init(&d, &t);
    d.cfg.port = 443;
    shoal_client *c = (shoal_client *)&d; /* must be overwritten with NULL */
    shoal_errinfo ei = {0};

    d.cfg.state_path = NULL;
    d.cfg.budget_bytes_down_per_day = 1000;
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &c, &ei), SHOAL_EINVAL);
    cr_assert_null(c);
    cr_assert_not_null(strstr(ei.msg, "state_path"), "%s", ei.msg);
    d.cfg.budget_bytes_down_per_day = 0;
    d.cfg.min_contribution_period_ms = 1;
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &c, &ei), SHOAL_EINVAL);
    d.cfg.min_contribution_period_ms = 0;

    /* Without a state database there is no log to read. */
    new_client(&d);
    cr_assert_eq(shoal_client_log_read(d.client, 0, copy_event, NULL), SHOAL_EINVAL);

    /* The example store is not a device state. */
    d.cfg.state_path = d.store;
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &c, &ei), SHOAL_EINVAL);
    char copy[300];
    snprintf(copy, sizeof copy, "%s/examples-copy.db", t.dir);
    make_store(copy, "q");
    d.cfg.state_path = copy;
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &c, &ei), SHOAL_EFORMAT);
    cr_assert_null(c);
    cr_assert_not_null(strstr(ei.msg, "not a Shoal device state"), "%s", ei.msg);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

/* A device state written before adaptive clipping: its saved_upload gains
 * the unclipped column when a client opens it, and its schema version
 * stays (older SDKs still read the file). */
Test(device_sdk_state, a_saved_upload_table_without_the_unclipped_bit_gains_it_on_open)
{
    tserver t;
    tserver_prepare(&t, ""); /* only for its directory and certificate: no server runs */
    sdk_device d;
    sdk_device_init(&d, &t);
    d.cfg.port = 443;
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(d.state, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TABLE saved_upload (population TEXT PRIMARY KEY, session "
                              "BLOB NOT NULL, checkpoint BLOB NOT NULL, round INTEGER NOT NULL, "
                              "example_count INTEGER NOT NULL, loss REAL NOT NULL, accuracy REAL "
                              "NOT NULL, deadline_unix_ms INTEGER NOT NULL, sealed INTEGER NOT "
                              "NULL, payload BLOB NOT NULL);"
                              "PRAGMA application_id = 1397245011; PRAGMA user_version = 1",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    for (int open = 0; open < 2; open++) { /* the second open finds the column there */
        new_client(&d);
        shoal_client_free(d.client);
        d.client = NULL;
        cr_assert_eq(sqlite3_open(d.state, &db), SQLITE_OK);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM pragma_table_info("
                                        "'saved_upload') WHERE name = 'unclipped'), "
                                        "(SELECT user_version FROM pragma_user_version)",
                                        -1, &s, NULL),
                     SQLITE_OK, "%s", sqlite3_errmsg(db));
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int(s, 0), 1, "open %d: the column", open + 1);
        cr_assert_eq(sqlite3_column_int(s, 1), 1, "open %d: the schema version", open + 1);
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}
