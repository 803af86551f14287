/* TLS session resumption between the SDK (mbedTLS) and the real
 * shoal-server in process (OpenSSL under libwebsockets): the device keeps
 * the session ticket the server issued and resumes with it on its next
 * connection, across an app restart (the device state); the server's
 * tls.session_tickets false means no resumption and nothing kept; a
 * restarted server, or a ticket older than two rotations of the ticket
 * keys, gets a full handshake and a new ticket. Each session is turned
 * away at check-in (a scripted device holds the round's only place), so
 * it is short; the server counts resumptions on /metrics. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sdk_util.h"
#include "shoal/client.h"

#define ROUND_OF_ONE "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false"
#define STORE_KEY    "0123456789abcdef0123456789abcdef"

typedef struct rdev {
    sdk_dev d;
    char state[256];
    shoal_client *client;
    tdev holder;
} rdev;

/* A scripted device takes the round's only place and keeps it: every
 * session of the SDK's device is Rejected after its check-in. */
static void hold_round(tserver *t, tdev *holder)
{
    cr_assert_eq(tdev_connect(holder, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin(holder, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(holder, 10000), TDEV_ACCEPTED);
}

static void start(tserver *t, rdev *r, const char *tls_fields)
{
    tserver_prepare_one(t, ROUND_OF_ONE);
    if (tls_fields) {
        char to[256];
        snprintf(to, sizeof to, "\"self_signed\": false, %s}", tls_fields);
        tserver_config_edit(t, "\"self_signed\": false}", to);
    }
    tserver_start(t);
    memset(r, 0, sizeof *r);
    hold_round(t, &r->holder);
    sdk_dev_init(&r->d, t);
    sdk_make_store(r->d.store, "p");
    snprintf(r->state, sizeof r->state, "%s/device-state.db", t->dir);
    r->d.cfg.state_path = r->state;
}

static void new_client(rdev *r)
{
    shoal_client_free(r->client);
    r->client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&r->d.cfg, &r->d.port, &r->client, &ei), SHOAL_OK, "%s", ei.msg);
}

/* One session (Rejected), then the test port's wall clock past the retry
 * window it persisted, so the next one connects. */
static shoal_session_result session(rdev *r)
{
    shoal_session_result res;
    cr_assert_eq(shoal_client_run(r->client, &res), SHOAL_OK);
    cr_assert_eq(res.outcome, SHOAL_SESSION_REJECTED, "%s: %s",
                 shoal_session_outcome_name(res.outcome), res.errinfo.msg);
    cr_assert(res.connected);
    r->d.tp.wall_ms += (int64_t)res.next_checkin_ms + 1;
    return res;
}

static void finish(tserver *t, rdev *r)
{
    shoal_client_free(r->client);
    tdev_close(&r->holder);
    sdk_dev_fini(&r->d);
    tserver_stop(t);
    tserver_cleanup(t);
}

/* A counter from /metrics. */
static unsigned long long metric(const tserver *t, const char *name)
{
    int status = 0;
    char *body = thttp_get(t, "/metrics", &status, NULL);
    cr_assert_eq(status, 200);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(body, key);
    cr_assert_not_null(at, "/metrics has no %s", name);
    unsigned long long v = strtoull(at + strlen(key), NULL, 10);
    free(body);
    return v;
}

/* The device state's row for the server: found, sealed, and its bytes
 * (malloc'd) in *bytes. */
static int kept_session(const rdev *r, const tserver *t, int *sealed, uint8_t **bytes, size_t *len)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(r->state, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT sealed, session FROM tls_session WHERE peer = ?",
                                    -1, &s, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%u", (unsigned)t->endpoint.port);
    sqlite3_bind_text(s, 1, peer, -1, SQLITE_TRANSIENT);
    int found = sqlite3_step(s) == SQLITE_ROW;
    if (found) {
        if (sealed)
            *sealed = sqlite3_column_int(s, 0);
        if (bytes) {
            *len = (size_t)sqlite3_column_bytes(s, 1);
            *bytes = malloc(*len);
            memcpy(*bytes, sqlite3_column_blob(s, 1), *len);
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return found;
}

Test(sdk_resume, the_second_connection_resumes_the_session_the_first_one_got, .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, NULL);
    new_client(&r);

    unsigned long long resumed0 = metric(&t, "shoal_tls_resumed_total");
    shoal_session_result first = session(&r);
    cr_assert_not(first.tls_resumed, "nothing was kept yet: a full handshake");
    cr_assert_eq(metric(&t, "shoal_tls_resumed_total"), resumed0);
    int sealed = -1;
    cr_assert(kept_session(&r, &t, &sealed, NULL, NULL), "the ticket is in the device state");
    cr_assert_eq(sealed, 0, "no store_key: kept in clear");

    shoal_session_result second = session(&r);
    cr_assert(second.tls_resumed);
    unsigned long long m2 = metric(&t, "shoal_tls_resumed_total");
    cr_assert_eq(m2, resumed0 + 1, "%llu %llu", m2, resumed0);
    /* No certificate, no key exchange: the resumed connection moved less. */
    cr_assert_lt(second.bytes_down, first.bytes_down, "full %llu bytes, resumed %llu",
                 (unsigned long long)first.bytes_down, (unsigned long long)second.bytes_down);

    shoal_session_result third = session(&r);
    cr_assert(third.tls_resumed);
    unsigned long long m3 = metric(&t, "shoal_tls_resumed_total");
    cr_assert_eq(m3, resumed0 + 2, "%llu %llu", m3, resumed0);
    finish(&t, &r);
}

/* Without a device state the session is kept in memory, for the
 * client's lifetime. */
Test(sdk_resume, a_client_without_state_path_resumes_from_memory, .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, NULL);
    r.d.cfg.state_path = NULL;
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    cr_assert(session(&r).tls_resumed);
    new_client(&r); /* a new client starts with nothing */
    cr_assert_not(session(&r).tls_resumed);
    finish(&t, &r);
}

Test(sdk_resume, without_session_tickets_every_handshake_is_full_and_nothing_is_kept,
     .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, "\"session_tickets\": false");
    new_client(&r);
    for (int i = 0; i < 3; i++) {
        shoal_session_result res = session(&r);
        cr_assert_not(res.tls_resumed, "session %d", i);
    }
    cr_assert_eq(metric(&t, "shoal_tls_resumed_total"), 0);
    cr_assert_gt(metric(&t, "shoal_tls_handshakes_total"), 3);
    cr_assert_not(kept_session(&r, &t, NULL, NULL, NULL), "no ticket, nothing in the device state");
    finish(&t, &r);
}

/* The app restarts: a new client on the same device state resumes with
 * the ticket the old one kept, sealed with the example store's key. */
Test(sdk_resume, the_kept_session_survives_an_app_restart_sealed_with_the_store_key, .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, NULL);
    r.d.cfg.store_key = (const uint8_t *)STORE_KEY;
    r.d.cfg.store_key_len = strlen(STORE_KEY);
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    int sealed = -1;
    cr_assert(kept_session(&r, &t, &sealed, NULL, NULL));
    cr_assert_eq(sealed, 1);

    new_client(&r); /* the old one freed: only the device state remains */
    unsigned long long resumed0 = metric(&t, "shoal_tls_resumed_total");
    cr_assert(session(&r).tls_resumed);
    cr_assert_eq(metric(&t, "shoal_tls_resumed_total"), resumed0 + 1);

    /* Another store_key cannot open it: dropped, a full handshake, and
     * the new ticket kept under the new key. */
    r.d.cfg.store_key = (const uint8_t *)"another key, just as long as one";
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    cr_assert(session(&r).tls_resumed);
    finish(&t, &r);
}

/* The ticket keys live in the server's memory only: after a restart the
 * device's ticket is refused, the handshake is a full one, and the new
 * ticket replaces the old in the device state. */
Test(sdk_resume, a_restarted_server_refuses_the_ticket_and_the_device_keeps_the_new_one,
     .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, NULL);
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    uint8_t *before = NULL, *after = NULL;
    size_t before_len = 0, after_len = 0;
    cr_assert(kept_session(&r, &t, NULL, &before, &before_len));

    /* Same port, so the device's kept session applies. */
    uint16_t port = t.endpoint.port;
    tdev_close(&r.holder);
    tserver_stop(&t);
    char fixed[64];
    snprintf(fixed, sizeof fixed, "\"port\": %u", (unsigned)port);
    tserver_config_edit(&t, "\"port\": 0", fixed);
    tserver_start(&t);
    cr_assert_eq(t.endpoint.port, port);
    hold_round(&t, &r.holder);

    cr_assert_not(session(&r).tls_resumed, "the old ticket must not open after a restart");
    cr_assert(kept_session(&r, &t, NULL, &after, &after_len));
    cr_assert(after_len != before_len || memcmp(after, before, before_len) != 0,
              "the new session replaces the refused one");
    cr_assert(session(&r).tls_resumed);
    free(before);
    free(after);
    finish(&t, &r);
}

/* Keys rotate every ticket_rotation_ms; a ticket opens for less than two
 * periods. Past that the device's ticket is refused: the session still
 * succeeds (a full handshake), and the new ticket replaces the old. */
Test(sdk_resume, a_ticket_older_than_two_rotations_is_refused_and_replaced, .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, "\"ticket_rotation_ms\": 1000");
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    uint8_t *before = NULL, *after = NULL;
    size_t before_len = 0, after_len = 0;
    cr_assert(kept_session(&r, &t, NULL, &before, &before_len));
    /* The key that sealed the ticket became current before the session
     * began, so two periods after this point it is gone. */
    sdk_sleep_ms(2100);
    unsigned long long resumed0 = metric(&t, "shoal_tls_resumed_total");
    cr_assert_not(session(&r).tls_resumed);
    cr_assert_eq(metric(&t, "shoal_tls_resumed_total"), resumed0);
    cr_assert(kept_session(&r, &t, NULL, &after, &after_len));
    cr_assert(after_len != before_len || memcmp(after, before, before_len) != 0);
    free(before);
    free(after);
    finish(&t, &r);
}

Test(sdk_resume, disable_tls_resumption_keeps_nothing_and_clears_what_was_kept, .timeout = 120)
{
    tserver t;
    rdev r;
    start(&t, &r, NULL);
    new_client(&r);
    cr_assert_not(session(&r).tls_resumed);
    cr_assert(kept_session(&r, &t, NULL, NULL, NULL));

    r.d.cfg.disable_tls_resumption = 1;
    new_client(&r);
    cr_assert_not(kept_session(&r, &t, NULL, NULL, NULL), "the kept session is gone at once");
    for (int i = 0; i < 2; i++)
        cr_assert_not(session(&r).tls_resumed);
    cr_assert_not(kept_session(&r, &t, NULL, NULL, NULL));
    finish(&t, &r);
}
