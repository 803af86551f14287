/* The device SDK's transfers against the real shoal-server in process:
 * eligibility polled while the model comes down and the update goes up,
 * and an upload cut off and resumed from the server's
 * upload_resume_offset. The model (logreg on 1x64x64 inputs, 8194
 * parameters, 32776 bytes) travels in five chunks: the server and the
 * device both send messages of at most 8192 bytes. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "sdk_util.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/client.h"
#include "shoal/encoding.h"
#include "shoal/envelope.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"
#include "shoal/rng.h"
#include "shoal/state.h"
#include "shoal/store.h"

#define SIDE        64
#define FEATURES    (SIDE * SIDE)
#define PARAMS      (FEATURES * 2 + 2)
#define UPDATE_LEN  ((size_t)PARAMS * 4)
#define EXAMPLES    64
#define MAX_MESSAGE 8192
#define TRAIN_SEED  42

/* The harness's server with a 1x64x64 logreg population and an 8192-byte
 * message limit; population_fields (or NULL) spliced into it (tpop_ex). */
static void start_server_with(tserver *t, const char *population_fields)
{
    char *pop = tpop_ex("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false",
                        NULL, NULL, population_fields);
    char *shape = strstr(pop, "[1, 2, 2]");
    cr_assert_not_null(shape);
    char *big = malloc(strlen(pop) + 16);
    snprintf(big, strlen(pop) + 16, "%.*s[1, %d, %d]%s", (int)(shape - pop), pop, SIDE, SIDE,
             shape + strlen("[1, 2, 2]"));
    tserver_prepare(t, big);
    FILE *f = fopen(t->config, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "{\"listen\": {\"address\": \"127.0.0.1\", \"port\": 0},\n"
            " \"tls\": {\"cert\": \"cert.pem\", \"key\": \"key.pem\", \"self_signed\": false},\n"
            " \"state\": {\"path\": \"state.db\", \"keep_checkpoints\": 3},\n"
            " \"server\": {\"workers\": 2, \"log_level\": \"warn\"},\n"
            " \"limits\": {\"max_connections\": 256, \"handshake_timeout_ms\": 5000,"
            " \"max_message_bytes\": %d},\n"
            " \"populations\": [%s]}\n",
            MAX_MESSAGE, big);
    fclose(f);
    free(pop);
    free(big);
    tserver_start(t);
}

static void start_server(tserver *t)
{
    start_server_with(t, NULL);
}

static void make_store_keyed(const char *path, const uint8_t *key)
{
    static float x[EXAMPLES][FEATURES];
    shoal_rng rng;
    shoal_rng_seed(&rng, 2024);
    shoal_example ex[EXAMPLES];
    memset(ex, 0, sizeof ex);
    for (int i = 0; i < EXAMPLES; i++) {
        double a = 0, b = 0;
        for (int j = 0; j < FEATURES; j++) {
            x[i][j] = (float)shoal_rng_normal(&rng);
            if (j < FEATURES / 2)
                a += x[i][j];
            else
                b += x[i][j];
        }
        ex[i].features = x[i];
        ex[i].feature_count = FEATURES;
        ex[i].label = a > b;
        ex[i].timestamp_ms = 1767225600000 + i;
    }
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    shoal_store_options o = {.key = key, .key_len = key ? SHOAL_STORE_KEY_BYTES : 0};
    cr_assert_eq(shoal_store_open(path, &o, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_store_add_batch(st, "p", ex, EXAMPLES, 1767225600000 + EXAMPLES, &ei),
                 SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
}

static void make_store(const char *path)
{
    make_store_keyed(path, NULL);
}

/* What the device sent, by message kind (the client's observe_send). */
typedef struct sent_count {
    unsigned checkins, resumes, report_chunks, reports;
    uint64_t first_chunk_offset;
    int any_chunk;
} sent_count;

static void count_sent(void *ctx, const uint8_t *msg, size_t len)
{
    sent_count *sc = ctx;
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    shoal_envelope *env = NULL;
    shoal_errinfo ei = {0};
    if (shoal_envelope_decode(&codec, msg, len, &env, &ei) != SHOAL_OK)
        return;
    if (env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN) {
        sc->checkins++;
        if (env->check_in->resume)
            sc->resumes++;
    } else if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT_CHUNK) {
        if (!sc->any_chunk)
            sc->first_chunk_offset = env->report_chunk->offset;
        sc->any_chunk = 1;
        sc->report_chunks++;
    } else if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT) {
        sc->reports++;
    }
    shoal_envelope_free(env);
}

typedef struct sdk_device {
    shoal_port posix;
    shoal_test_port tp;
    shoal_port port;
    shoal_client_config cfg;
    char store[256];
    char *ca;
    shoal_client *client;
    sent_count sent;
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
    make_store(d->store);
    d->ca = sdk_read_text(t->cert);
    d->cfg = (shoal_client_config){
        .host = "127.0.0.1",
        .port = t->endpoint.port,
        .server_name = "localhost",
        .ca_pem = d->ca,
        .population = "p",
        .auth_token = (const uint8_t *)TEST_SECRET,
        .store_path = d->store,
        .io_timeout_ms = 10000,
        .train_seed = TRAIN_SEED,
        .policy = {.require_charging = 1, .require_unmetered = 1, .poll_interval_ms = -1},
        .observe_send = count_sent,
        .observe_ctx = &d->sent,
        .max_message_bytes = MAX_MESSAGE};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &d->client, &ei), SHOAL_OK, "%s", ei.msg);
}

static void sdk_device_fini(sdk_device *d)
{
    shoal_client_free(d->client);
    shoal_test_port_fini(&d->tp);
    shoal_posix_port_fini(&d->posix);
    free(d->ca);
}

static shoal_session_result run(sdk_device *d)
{
    shoal_session_result r;
    memset(&d->sent, 0, sizeof d->sent);
    cr_assert_eq(shoal_client_run(d->client, &r), SHOAL_OK);
    return r;
}

/* Flips the network to metered once `at` bytes have gone the hooked way. */
typedef struct flip {
    int on_send;
    uint64_t at;
    int done;
    /* Cut instead: every send fails on the connection that passed `at`. */
    int cut;
    unsigned cut_connection;
    /* Count `at` from the start of each connection, not of the port. */
    int per_connection;
    unsigned seen_connection;
    uint64_t connection_base;
} flip;

static int hook(void *ctx, shoal_test_port *tp, int sending, size_t len)
{
    (void)len;
    flip *f = ctx;
    if (f->cut_connection && tp->connects == f->cut_connection)
        return sending ? SHOAL_PORT_IO_ERROR : 0;
    uint64_t moved = f->on_send ? tp->bytes_sent : tp->bytes_received;
    if (f->per_connection) {
        if (tp->connects != f->seen_connection) {
            f->seen_connection = tp->connects;
            f->connection_base = moved;
        }
        moved -= f->connection_base;
    }
    if (f->done || sending != f->on_send || moved < f->at)
        return 0;
    f->done = 1;
    if (f->cut) {
        f->cut_connection = tp->connects;
        return SHOAL_PORT_IO_ERROR;
    }
    tp->network = SHOAL_NET_METERED;
    return 0;
}

/* The latest checkpoint of population "p" in the server's state database
 * (the harness's tstate_latest, for this test's model). */
static void latest_checkpoint(const tserver *t, shoal_checkpoint *cp)
{
    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_state_open(t->state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    int64_t id;
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x64x64 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    memset(cp, 0, sizeof *cp);
    cr_assert_eq(shoal_state_latest(st, id, cp, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_state_close(st);
}

/* Every parameter of the committed checkpoint is initial + delta: the
 * update was folded exactly once (twice would give initial + 2 delta). */
static void expect_folded_once(tserver *t, const float *initial, const float *delta)
{
    shoal_checkpoint cp;
    latest_checkpoint(t, &cp);
    const float *params = cp.params;
    cr_assert_eq(cp.param_count, (size_t)PARAMS);
    cr_assert_eq(cp.version, 1u);
    double biggest = 0;
    for (int j = 0; j < PARAMS; j++)
        biggest = fmax(biggest, fabs((double)delta[j]));
    cr_assert_gt(biggest, 1e-4, "the delta is too small to tell once from twice");
    for (int j = 0; j < PARAMS; j++)
        cr_assert_float_eq(params[j], initial[j] + delta[j], 1e-6, "param %d: %g, want %g", j,
                           (double)params[j], (double)(initial[j] + delta[j]));
    shoal_checkpoint_fini(&cp);
}

/* The harness's population gives a retry window of [1000, 5000] ms. */
static void expect_window(const shoal_session_result *r)
{
    cr_assert_eq(r->retry_min_ms, 1000u);
    cr_assert_eq(r->retry_max_ms, 5000u);
}

static size_t chunks_from(uint64_t offset)
{
    size_t max = shoal_chunk_max_payload(MAX_MESSAGE);
    return (UPDATE_LEN - (size_t)offset + max - 1) / max;
}

Test(device_sdk_transfer, a_metered_network_mid_download_interrupts_it)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    /* Past the handshake and the first ModelChunk, before the last. */
    flip f = {.on_send = 0, .at = 12000};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_STOPPED_INELIGIBLE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_str_eq(r.errinfo.msg, "the model download stopped: not on an unmetered network");
    cr_assert(f.done);
    cr_assert(r.connected && !r.model_downloaded);
    cr_assert_null(shoal_client_model(d.client, NULL), "a partial model is never held");
    cr_assert_eq(d.sent.reports + d.sent.report_chunks, 0u);
    cr_assert(!r.upload_saved);
    expect_window(&r);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_transfer, a_metered_network_mid_upload_stops_it_and_the_next_session_resumes)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    /* The handshake and CheckIn take well under 4 KB: this is inside the
     * second of five update chunks. */
    flip f = {.on_send = 1, .at = 14000};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_STOPPED_INELIGIBLE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_str_eq(r.errinfo.msg, "the upload stopped: not on an unmetered network");
    cr_assert(r.model_downloaded && r.upload_saved);
    cr_assert_eq(r.example_count, (uint64_t)EXAMPLES);
    cr_assert_geq(d.sent.report_chunks, 1u);
    cr_assert_lt(d.sent.report_chunks, (unsigned)chunks_from(0));
    cr_assert_eq(d.sent.reports, 0u, "no Report goes out on a metered network");
    cr_assert_null(shoal_client_last_update(d.client, NULL));
    size_t mn = 0;
    float *initial = malloc(sizeof(float) * PARAMS);
    memcpy(initial, shoal_client_model(d.client, &mn), sizeof(float) * PARAMS);
    cr_assert_eq(mn, (size_t)PARAMS);

    /* Still metered: nothing is sent, the upload stays saved. */
    d.tp.io_hook = NULL;
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INELIGIBLE);
    cr_assert(!r.connected);

    d.tp.network = SHOAL_NET_UNMETERED;
    sdk_sleep_ms(200);
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert(r.upload_resumed && !r.model_downloaded);
    cr_assert_eq(r.round, 1u);
    cr_assert_eq(r.example_count, (uint64_t)EXAMPLES, "the Report repeats the first training's");
    cr_assert_eq(d.sent.resumes, 1u);
    cr_assert_gt(r.upload_resume_offset, 0u);
    cr_assert_lt(r.upload_resume_offset, (uint64_t)UPDATE_LEN);
    cr_assert_eq(d.sent.first_chunk_offset, r.upload_resume_offset);
    cr_assert_eq(d.sent.report_chunks, (unsigned)chunks_from(r.upload_resume_offset));
    cr_assert_eq(d.sent.reports, 1u);
    size_t n = 0;
    const float *delta = shoal_client_last_update(d.client, &n);
    cr_assert_eq(n, (size_t)PARAMS);
    tserver_stop(&t);
    expect_folded_once(&t, initial, delta);
    free(initial);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_transfer, an_upload_cut_off_resumes_and_the_update_is_folded_exactly_once)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    flip f = {.on_send = 1, .at = 14000, .cut = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_CONNECTION, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert(f.cut_connection == 1 && r.upload_saved, "%s", r.errinfo.msg);
    cr_assert_eq(d.sent.reports, 0u);
    float *initial = malloc(sizeof(float) * PARAMS);
    memcpy(initial, shoal_client_model(d.client, NULL), sizeof(float) * PARAMS);

    sdk_sleep_ms(200);
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert(r.upload_resumed && !r.model_downloaded && !r.upload_saved);
    cr_assert_eq(d.sent.resumes, 1u);
    cr_assert_eq(r.upload_resume_offset % shoal_chunk_max_payload(MAX_MESSAGE), 0u);
    cr_assert_eq(d.sent.report_chunks, (unsigned)chunks_from(r.upload_resume_offset));
    size_t n = 0;
    const float *delta = shoal_client_last_update(d.client, &n);
    cr_assert_eq(n, (size_t)PARAMS);

    tserver_stop(&t);
    expect_folded_once(&t, initial, delta);
    free(initial);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_transfer, a_saved_upload_past_its_reporting_deadline_is_dropped)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    flip f = {.on_send = 1, .at = 14000, .cut = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    /* The harness's reporting deadline is 30 s after Accepted. */
    d.tp.monotonic_ms += 31000;
    r = run(&d);
    cr_assert_eq(d.sent.checkins, 1u);
    cr_assert_eq(d.sent.resumes, 0u, "a resume after the deadline is not attempted");
    cr_assert(!r.upload_resumed);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_transfer, max_message_bytes_out_of_range_is_refused)
{
    shoal_test_port tp;
    shoal_test_port_init(&tp);
    shoal_port port;
    shoal_test_port_bind(&tp, &port);
    shoal_client_config cfg = {.host = "h",
                               .port = 1,
                               .ca_pem = "x",
                               .population = "p",
                               .auth_token = (const uint8_t *)"t",
                               .store_path = "/nonexistent/s.db",
                               .max_message_bytes = 8191};
    shoal_client *c = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&cfg, &port, &c, &ei), SHOAL_EINVAL);
    cr_assert_null(c);
    cr_assert_not_null(strstr(ei.msg, "max_message_bytes 8191"), "%s", ei.msg);
    shoal_test_port_fini(&tp);
}

/* ---- a saved upload across an app restart ---------------------------------- */

static long saved_rows(const char *state_path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(state_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM saved_upload", -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    long n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* While the resumed upload is on its way (the second connection, past
 * its first kilobytes), the device state must still hold the row: a
 * process killed now resumes again. */
typedef struct row_probe {
    const char *state;
    uint64_t from;
    long rows;
    int probed;
} row_probe;

static int probe_hook(void *ctx, shoal_test_port *tp, int sending, size_t len)
{
    (void)len;
    row_probe *p = ctx;
    if (sending && !p->probed && tp->connects == 2 && tp->bytes_sent > p->from + 8000) {
        p->rows = saved_rows(p->state);
        p->probed = 1;
    }
    return 0;
}

/* The app exits: the client is freed; a new one is made from the same
 * config (and device state). */
static void restart(sdk_device *d)
{
    shoal_client_free(d->client);
    d->client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &d->client, &ei), SHOAL_OK, "%s", ei.msg);
}

static void with_state(sdk_device *d, const tserver *t, char *path, size_t cap)
{
    snprintf(path, cap, "%s/device-state.db", t->dir);
    d->cfg.state_path = path;
    restart(d);
}

static int file_has(const char *path, const uint8_t *needle, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    int found = 0;
    for (size_t i = 0; !found && i + n <= got; i++)
        found = memcmp(buf + i, needle, n) == 0;
    free(buf);
    return found;
}

Test(device_sdk_transfer, a_saved_upload_survives_an_app_restart_and_resumes_inside_its_window)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    char state[256];
    with_state(&d, &t, state, sizeof state);
    flip f = {.on_send = 1, .at = 14000, .cut = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_geq(r.next_checkin_ms, 1000u, "the window drawn is persisted");
    float *initial = malloc(sizeof(float) * PARAMS);
    memcpy(initial, shoal_client_model(d.client, NULL), sizeof(float) * PARAMS);

    /* The app restarts at once, well inside the retry window the cut
     * session drew: the saved upload goes anyway, from the device state. */
    cr_assert_eq(saved_rows(state), 1);
    restart(&d);
    cr_assert_null(shoal_client_model(d.client, NULL), "a new client holds no model");
    row_probe probe = {.state = state, .from = d.tp.bytes_sent};
    d.tp.connects = 1;
    d.tp.io_hook = probe_hook;
    d.tp.hook_ctx = &probe;
    r = run(&d);
    cr_assert(probe.probed, "the resumed upload was not probed");
    cr_assert_eq(probe.rows, 1, "the saved upload left the device state before its ack");
    cr_assert_eq(saved_rows(state), 0, "the acknowledged upload is still in the device state");
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert(r.upload_resumed && !r.model_downloaded);
    cr_assert_eq(d.sent.resumes, 1u);
    cr_assert_gt(r.upload_resume_offset, 0u);
    cr_assert_eq(d.sent.report_chunks, (unsigned)chunks_from(r.upload_resume_offset));
    cr_assert_eq(r.example_count, (uint64_t)EXAMPLES);
    cr_assert_eq(r.round, 1u);
    size_t n = 0;
    const float *delta = shoal_client_last_update(d.client, &n);
    cr_assert_eq(n, (size_t)PARAMS);
    float *kept = malloc(sizeof(float) * PARAMS);
    memcpy(kept, delta, sizeof(float) * PARAMS);

    /* Sent: the next restart has nothing to resume, and the window this
     * session drew holds it. */
    restart(&d);
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_NOT_YET, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.hold, SHOAL_HOLD_RETRY_WINDOW);
    cr_assert_eq(d.sent.checkins, 0u);

    tserver_stop(&t);
    expect_folded_once(&t, initial, kept);
    free(initial);
    free(kept);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

/* saved_upload.unclipped of the population's row (-1: NULL). */
static int saved_bit(const char *state_path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(state_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT unclipped FROM saved_upload", -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int bit = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return bit;
}

/* Adaptive clipping: the bit is kept with an upload cut off, in the device
 * state, and the resumed Report of a restarted app carries it (a Report
 * without it is refused). A clip of 0.001 is far below the trained
 * update's norm: the bit is 0, and the server's fraction with it. */
Test(device_sdk_transfer, a_saved_upload_keeps_its_unclipped_bit_across_an_app_restart)
{
    tserver t;
    start_server_with(&t, "\"differential_privacy\": {\"noise_multiplier\": 0.001, \"clip\": "
                          "0.001, \"adaptive_clipping\": {\"target_quantile\": 0.5, "
                          "\"count_noise\": 0.001}},");
    sdk_device d;
    sdk_device_init(&d, &t);
    char state[256];
    with_state(&d, &t, state, sizeof state);
    flip f = {.on_send = 1, .at = 14000, .cut = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.unclipped, 0);
    cr_assert_eq(saved_bit(state), 0);
    restart(&d);
    d.tp.connects = 1;
    d.tp.io_hook = NULL;
    r = run(&d);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert(r.upload_resumed);
    cr_assert_eq(r.unclipped, 0);
    tserver_stop(&t);
    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x64x64 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    uint8_t blob[4096];
    shoal_dp_record rec;
    cr_assert_eq(shoal_state_dp_load(st, id, 1, blob, sizeof blob, &rec, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_state_close(st);
    cr_assert_leq(fabs(rec.unclipped_fraction), 0.01, "fraction %g", rec.unclipped_fraction);
    sdk_device_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_transfer,
     a_saved_upload_is_sealed_with_the_store_key_and_dropped_after_its_deadline)
{
    tserver t;
    start_server(&t);
    sdk_device d;
    sdk_device_init(&d, &t);
    static const uint8_t key[SHOAL_STORE_KEY_BYTES] = "saved-upload test key, 32 bytes";
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_destroy(d.store, &ei), SHOAL_OK, "%s", ei.msg);
    make_store_keyed(d.store, key);
    d.cfg.store_key = key;
    d.cfg.store_key_len = sizeof key;
    char state[256];
    with_state(&d, &t, state, sizeof state);
    flip f = {.on_send = 1, .at = 14000, .cut = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &f;
    shoal_session_result r = run(&d);
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    uint8_t enc[UPDATE_LEN];
    size_t n = 0;
    restart(&d);
    const float *delta = shoal_client_last_update(d.client, &n);
    cr_assert_null(delta, "a restarted client has no update until it resumes");
    r = run(&d);
    cr_assert(r.upload_resumed, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    delta = shoal_client_last_update(d.client, &n);
    cr_assert_eq(n, (size_t)PARAMS);
    /* The update was in the device state only sealed: no 16-byte run of
     * its encoding appears in the file or its write-ahead log. */
    cr_assert_eq(shoal_tensor_encode_f32le(delta, n, enc, sizeof enc, &ei), SHOAL_OK);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", state);
    for (size_t at = 0; at + 16 <= UPDATE_LEN; at += 4096) {
        cr_assert(!file_has(state, enc + at, 16), "update bytes at %zu stored in clear", at);
        cr_assert(!file_has(wal, enc + at, 16), "update bytes at %zu in the WAL in clear", at);
    }

    /* A second cut-off upload, then a restart past its reporting deadline
     * (30 s after Accepted): it is dropped, not resumed. */
    d.tp.wall_ms += 10000; /* past the window the resumed session drew */
    flip g = {.on_send = 1, .at = 14000, .cut = 1, .per_connection = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &g;
    for (int tries = 0; tries < 50; tries++) {
        r = run(&d);
        if (r.outcome != SHOAL_SESSION_REJECTED && r.outcome != SHOAL_SESSION_NOT_YET)
            break;
        d.tp.wall_ms += 10000;
        sdk_sleep_ms(100);
    }
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    d.tp.io_hook = NULL;
    /* A row altered in the file (its deadline moved) fails to open and is
     * dropped, not resumed; the same row unaltered resumes. */
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(state, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TABLE kept AS SELECT * FROM saved_upload;"
                              "UPDATE saved_upload SET deadline_unix_ms = deadline_unix_ms + 1",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    restart(&d);
    cr_assert_eq(saved_rows(state), 0, "an altered row was kept");
    r = run(&d);
    cr_assert_eq(d.sent.resumes, 0u, "an altered saved upload was resumed");
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO saved_upload SELECT * FROM kept; DROP TABLE kept",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    restart(&d);
    r = run(&d);
    cr_assert(r.upload_resumed && r.outcome == SHOAL_SESSION_TRAINED, "%s: %s",
              shoal_session_outcome_name(r.outcome), r.errinfo.msg);

    /* Another cut-off upload, then a restart past its reporting deadline
     * (30 s after Accepted): it is dropped, not resumed. */
    d.tp.wall_ms += 10000;
    flip h = {.on_send = 1, .at = 14000, .cut = 1, .per_connection = 1};
    d.tp.io_hook = hook;
    d.tp.hook_ctx = &h;
    for (int tries = 0; tries < 50; tries++) {
        r = run(&d);
        if (r.outcome != SHOAL_SESSION_REJECTED && r.outcome != SHOAL_SESSION_NOT_YET)
            break;
        d.tp.wall_ms += 10000;
        sdk_sleep_ms(100);
    }
    cr_assert(r.upload_saved, "%s: %s", shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    d.tp.io_hook = NULL;
    d.tp.wall_ms += 31000;
    restart(&d);
    r = run(&d);
    cr_assert_eq(d.sent.resumes, 0u, "an upload past its deadline was resumed");
    cr_assert(!r.upload_resumed);
    sdk_device_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}
