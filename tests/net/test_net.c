/* Tests for the server's network layer (server/net). A real shoal_net runs
 * on 127.0.0.1 on its own thread, TLS with a self-signed certificate made
 * by the openssl tool, and is driven by an OpenSSL client speaking
 * WebSocket through protocol/ws or HTTP/1.1 by hand. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "shoal/alloc.h"
#include "shoal/net.h"

static th_server S;

static void teardown(void)
{
    th_fini(&S);
}

TestSuite(net_ws, .fini = teardown, .timeout = 60);
TestSuite(net_api, .fini = teardown, .timeout = 60);
TestSuite(net_http, .fini = teardown, .timeout = 60);
TestSuite(net_limits, .fini = teardown, .timeout = 60);
TestSuite(net_timeouts, .fini = teardown, .timeout = 60);
TestSuite(net_stop, .fini = teardown, .timeout = 60);
TestSuite(net_tls, .fini = teardown, .timeout = 60);
TestSuite(net_new, .fini = teardown, .timeout = 60);

/* Deterministic bytes that differ per seed and per position. */
static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

static uint8_t *pattern(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    fill_pattern(p, len, seed);
    return p;
}

static uint8_t *owned_copy(const void *bytes, size_t len)
{
    uint8_t *p = shoal_malloc(len ? len : 1);
    cr_assert_not_null(p);
    memcpy(p, bytes, len);
    return p;
}

static void open_session(tclient *c, size_t max_frame_send)
{
    shoal_err err = tc_session(c, S.port, S.cfg.tls ? &S.tls : NULL, max_frame_send);
    cr_assert_eq(err, SHOAL_OK, "opening a session on port %u: %s: %s", (unsigned)S.port,
                 shoal_err_name(err), c->error);
}

static void send_binary(tclient *c, const void *data, size_t len)
{
    shoal_err err = tc_ws_send(c, data, len);
    cr_assert_eq(err, SHOAL_OK, "sending %zu bytes: %s: %s", len, shoal_err_name(err), c->error);
}

static void expect_binary(tclient *c, const void *want, size_t len)
{
    tc_event ev;
    shoal_err err = tc_ws_next(c, &ev);
    cr_assert_eq(err, SHOAL_OK, "waiting for a %zu-byte message: %s: %s", len, shoal_err_name(err),
                 c->error);
    cr_assert_eq(ev.kind, SHOAL_WS_EVENT_BINARY,
                 "expected a binary message, got event %d (close code %u, \"%s\")", (int)ev.kind,
                 (unsigned)ev.close_code, (const char *)ev.data);
    cr_assert_eq(ev.len, len, "message of %zu bytes, expected %zu", ev.len, len);
    cr_assert(len == 0 || memcmp(ev.data, want, len) == 0, "message bytes differ");
    free(ev.data);
}

static void expect_close(tclient *c, uint16_t code, const char *reason)
{
    tc_event ev;
    shoal_err err = tc_ws_next(c, &ev);
    cr_assert_eq(err, SHOAL_OK, "waiting for Close %u: %s: %s", (unsigned)code, shoal_err_name(err),
                 c->error);
    cr_assert_eq(ev.kind, SHOAL_WS_EVENT_CLOSE, "expected Close %u, got event %d (%zu bytes)",
                 (unsigned)code, (int)ev.kind, ev.len);
    cr_assert_eq(ev.close_code, code, "Close code %u, expected %u (reason \"%s\")",
                 (unsigned)ev.close_code, (unsigned)code, (const char *)ev.data);
    if (reason)
        cr_assert_str_eq((const char *)ev.data, reason);
    free(ev.data);
}

static void start(int tls)
{
    th_init(&S, tls);
    th_start(&S);
}

/* ---- WebSocket sessions ---- */

Test(net_ws, echo_through_another_thread_over_tls)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    cr_assert(th_wait_opened(&S, 1, 5000));

    char expect_peer[16];
    snprintf(expect_peer, sizeof expect_peer, "127.0.0.1:");
    cr_assert(strncmp(S.last_peer, expect_peer, strlen(expect_peer)) == 0 &&
                  atoi(S.last_peer + strlen(expect_peer)) > 0,
              "on_open peer is \"%s\"", S.last_peer);
    cr_assert_geq(SSL_version(c.ssl), TLS1_2_VERSION);

    static const char hello[] = "hello, shoal";
    send_binary(&c, hello, sizeof hello - 1);
    expect_binary(&c, hello, sizeof hello - 1);
    cr_assert_eq(tc_ws_close(&c, 1000, "bye"), SHOAL_OK);
    expect_close(&c, 1000, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000), "on_close did not run after the client closed");

    th_stop(&S);
    cr_assert_eq(S.final_stats.accepted_total, 1);
    cr_assert_eq(S.final_stats.bytes_in_total, sizeof hello - 1);
    cr_assert_eq(S.final_stats.bytes_out_total, sizeof hello - 1);
    cr_assert_eq(S.final_stats.connections, 0);
}

Test(net_ws, many_messages_arrive_whole_and_in_order)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    enum { BATCHES = 10, PER_BATCH = 100 };
    uint8_t buf[4000];
    for (uint32_t b = 0; b < BATCHES; b++) {
        for (uint32_t i = 0; i < PER_BATCH; i++) {
            uint32_t seq = b * PER_BATCH + i;
            size_t len = 4 + (seq * 37) % (sizeof buf - 4);
            fill_pattern(buf, len, seq);
            memcpy(buf, &seq, 4);
            send_binary(&c, buf, len);
        }
        for (uint32_t i = 0; i < PER_BATCH; i++) {
            uint32_t seq = b * PER_BATCH + i;
            size_t len = 4 + (seq * 37) % (sizeof buf - 4);
            fill_pattern(buf, len, seq);
            memcpy(buf, &seq, 4);
            expect_binary(&c, buf, len);
        }
    }
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.n_messages, BATCHES * PER_BATCH);
    cr_assert_eq(S.echo_failures, 0);
}

Test(net_ws, one_mebibyte_message_both_ways)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    size_t len = (size_t)1 << 20;
    uint8_t *big = pattern(len, 7);
    send_binary(&c, big, len);
    expect_binary(&c, big, len);
    /* And a second one, odd-sized, straight after. */
    fill_pattern(big, len - 3, 8);
    send_binary(&c, big, len - 3);
    expect_binary(&c, big, len - 3);
    free(big);
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.final_stats.bytes_in_total, 2 * len - 3);
    cr_assert_eq(S.final_stats.bytes_out_total, 2 * len - 3);
}

/* A client sending one message from its own thread (the server may stop
 * reading it, so the send can block until it resumes). */
typedef struct sender {
    tclient *c;
    const uint8_t *data;
    size_t len;
    shoal_err result;
} sender;

static void *send_thread(void *arg)
{
    sender *sd = arg;
    sd->result = tc_ws_send(sd->c, sd->data, sd->len);
    return NULL;
}

static size_t held_count(void)
{
    pthread_mutex_lock(&S.mu);
    size_t n = S.n_held;
    pthread_mutex_unlock(&S.mu);
    return n;
}

/* shoal_net_hold_next: the next message stops at its first fragment, the
 * server is told (on_held), nothing more of it is read until the input
 * resumes, and then it arrives whole. Once only: the message after it
 * passes. */
Test(net_ws, held_message_waits_at_its_first_fragment_until_resumed)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    cr_assert(th_wait_opened(&S, 1, 5000));
    const shoal_conn_id id = th_opened_id(&S, 0);
    shoal_net_hold_next(S.net, id);
    const size_t len = (size_t)1 << 20;
    uint8_t *big = pattern(len, 11);
    sender sd = {&c, big, len, SHOAL_EINVAL};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, send_thread, &sd), 0);
    for (int tries = 0; tries < 500 && held_count() == 0; tries++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    cr_assert_eq(held_count(), 1u, "on_held was not called");
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    shoal_net_stats st;
    shoal_net_get_stats(S.net, &st);
    pthread_mutex_lock(&S.mu);
    const size_t messages = S.n_messages;
    pthread_mutex_unlock(&S.mu);
    cr_assert_eq(messages, 0u, "the held message was delivered before the input resumed");
    cr_assert_lt(st.bytes_in_total, (uint64_t)65536,
                 "%llu bytes of the held message were read while it was held",
                 (unsigned long long)st.bytes_in_total);
    shoal_net_pause_input(S.net, id, 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(sd.result, SHOAL_OK, "send: %s", c.error);
    expect_binary(&c, big, len);
    /* The next message is not held. */
    fill_pattern(big, len, 12);
    send_binary(&c, big, len);
    expect_binary(&c, big, len);
    cr_assert_eq(held_count(), 1u);
    free(big);
    tc_close(&c);
    th_stop(&S);
}

Test(net_ws, fragmented_client_messages_are_reassembled)
{
    start(1);
    tclient c;
    open_session(&c, 1000); /* the client sends frames of at most 1000 bytes */
    static const size_t sizes[] = {1, 999, 1000, 1001, 4096, 25000, 70001};
    size_t n = sizeof sizes / sizeof sizes[0];
    for (size_t i = 0; i < n; i++) {
        uint8_t *m = pattern(sizes[i], (uint32_t)i);
        send_binary(&c, m, sizes[i]);
        expect_binary(&c, m, sizes[i]);
        free(m);
    }
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.n_messages, n, "%zu messages delivered for %zu sent", S.n_messages, n);
}

Test(net_ws, empty_message_round_trip)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    send_binary(&c, "", 0);
    expect_binary(&c, "", 0);
    send_binary(&c, "x", 1);
    expect_binary(&c, "x", 1);
    tc_close(&c);
}

Test(net_ws, oversize_message_is_closed_with_1009)
{
    th_init(&S, 1);
    S.cfg.max_message_bytes = 4096;
    th_start(&S);

    tclient c;
    open_session(&c, 0);
    uint8_t *m = pattern(5000, 1);
    send_binary(&c, m, 4096); /* exactly the limit: fine */
    expect_binary(&c, m, 4096);
    send_binary(&c, m, 4097);
    expect_close(&c, 1009, NULL);
    tc_close(&c);

    /* Fragments: refused once their sum passes the limit. */
    tclient f;
    open_session(&f, 1000);
    send_binary(&f, m, 5000);
    expect_close(&f, 1009, NULL);
    tc_close(&f);
    free(m);

    cr_assert(th_wait_closed(&S, 2, 5000));
    th_stop(&S);
    cr_assert_eq(S.n_messages, 1, "only the message within the limit was delivered");
}

Test(net_ws, text_message_is_closed_with_1003)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    cr_assert_eq(tc_ws_send_text(&c, "{\"json\": true}"), SHOAL_OK);
    expect_close(&c, 1003, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
    th_stop(&S);
    cr_assert_eq(S.n_messages, 0);
}

Test(net_ws, refusal_by_on_open_closes_with_1013)
{
    th_init(&S, 1);
    S.refuse_open = 1;
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    expect_close(&c, 1013, "try again later");
    tc_close(&c);
    cr_assert(th_wait_connections(&S, 0, 5000));
    th_stop(&S); /* checks on_close never ran for the refused id */
    cr_assert_eq(S.n_closed, 0);
    cr_assert_eq(S.final_stats.refused_total, 1);
    cr_assert_eq(S.final_stats.accepted_total, 0);
}

Test(net_ws, message_refused_by_handler_closes_with_1013)
{
    th_init(&S, 1);
    S.reject_messages = 1;
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    send_binary(&c, "full", 4);
    expect_close(&c, 1013, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
}

Test(net_ws, upgrade_refused_on_other_path_or_without_subprotocol)
{
    start(1);
    struct {
        const char *path, *subprotocol;
        int status;
    } cases[] = {
        {"/v1/other", SHOAL_NET_SUBPROTOCOL, 404},
        {"/", SHOAL_NET_SUBPROTOCOL, 404},
        {SHOAL_NET_WS_PATH, NULL, 400},
        {SHOAL_NET_WS_PATH, "shoal.v2", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tclient c;
        cr_assert_eq(tc_connect(&c, S.port, &S.tls, 5000), 0, "%s", c.error);
        int status = 0;
        shoal_err err = tc_ws_open(&c, cases[i].path, cases[i].subprotocol, 0, &status);
        cr_assert_neq(err, SHOAL_OK, "upgrade at %s (subprotocol %s) was accepted", cases[i].path,
                      cases[i].subprotocol ? cases[i].subprotocol : "none");
        cr_assert_eq(status, cases[i].status, "upgrade at %s (subprotocol %s): status %d (%s)",
                     cases[i].path, cases[i].subprotocol ? cases[i].subprotocol : "none", status,
                     c.error);
        tc_close(&c);
    }
    /* The right path and subprotocol still work. */
    tclient ok;
    open_session(&ok, 0);
    tc_close(&ok);
    cr_assert(th_wait_opened(&S, 1, 5000));
    th_stop(&S);
    cr_assert_eq(S.n_opened, 1);
}

/* ---- the thread-safe API ---- */

Test(net_api, send_to_closed_or_unknown_id_is_eclosed_and_keeps_ownership)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    cr_assert(th_wait_opened(&S, 1, 5000));
    shoal_conn_id id = th_opened_id(&S, 0);
    cr_assert_neq(id, 0);
    cr_assert_eq(tc_ws_close(&c, 1000, NULL), SHOAL_OK);
    expect_close(&c, 1000, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));

    uint8_t *bytes = owned_copy("late", 4);
    cr_assert_eq(shoal_net_send(S.net, id, bytes, 4), SHOAL_ECLOSED);
    cr_assert_eq(shoal_net_send(S.net, id + 1000, bytes, 4), SHOAL_ECLOSED);
    cr_assert_eq(shoal_net_send(S.net, 0, bytes, 4), SHOAL_ECLOSED);
    cr_assert_eq(shoal_net_send(S.net, id, NULL, 4), SHOAL_EINVAL);
    shoal_free(bytes); /* still ours: a double free would show under ASan */
    shoal_net_close(S.net, id, 1000, "unknown ids are ignored");
}

Test(net_api, full_outbox_is_elimit)
{
    th_init(&S, 1);
    S.cfg.max_outbox_messages = 2;
    S.burst = 3; /* on_message queues three copies from the service thread */
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    for (int round = 0; round < 2; round++) {
        send_binary(&c, "abc", 3);
        expect_binary(&c, "abc", 3);
        expect_binary(&c, "abc", 3);
        /* The third copy was refused; the next message must be the next
         * round's first copy, not a third "abc". */
    }
    send_binary(&c, "end", 3);
    expect_binary(&c, "end", 3);
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.n_burst, 9);
    for (size_t i = 0; i < S.n_burst; i++)
        cr_assert_eq(S.burst_results[i], i % 3 == 2 ? SHOAL_ELIMIT : SHOAL_OK, "send %zu: %s", i,
                     shoal_err_name(S.burst_results[i]));
}

Test(net_api, close_sends_queued_messages_then_code_and_reason)
{
    th_init(&S, 1);
    S.echo = 0;
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    cr_assert(th_wait_opened(&S, 1, 5000));
    shoal_conn_id id = th_opened_id(&S, 0);

    static const size_t sizes[] = {10, 200000, 5};
    uint8_t *want[3];
    for (int i = 0; i < 3; i++) {
        want[i] = pattern(sizes[i], 100 + (uint32_t)i);
        cr_assert_eq(shoal_net_send(S.net, id, owned_copy(want[i], sizes[i]), sizes[i]), SHOAL_OK);
    }
    shoal_net_close(S.net, id, 4000, "round over");
    uint8_t *late = owned_copy("late", 4);
    cr_assert_eq(shoal_net_send(S.net, id, late, 4), SHOAL_ECLOSED,
                 "a closing connection takes no more messages");
    shoal_free(late);

    for (int i = 0; i < 3; i++) {
        expect_binary(&c, want[i], sizes[i]);
        free(want[i]);
    }
    expect_close(&c, 4000, "round over");
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
}

Test(net_api, stop_before_run_returns_at_once_and_run_runs_once)
{
    th_init(&S, 0);
    shoal_net_handlers h = {0};
    shoal_net *net = NULL;
    shoal_errinfo ei;
    cr_assert_eq(shoal_net_new(&S.cfg, &h, &net, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_net_stop(net);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(shoal_net_run(net), SHOAL_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_lt(th_ms_between(&t0, &t1), 500.0);
    cr_assert_eq(shoal_net_run(net), SHOAL_ESTATE);
    uint8_t *b = owned_copy("x", 1);
    cr_assert_eq(shoal_net_send(net, 1, b, 1), SHOAL_ECLOSED);
    shoal_free(b);
    shoal_net_stop(net); /* after run: harmless */
    shoal_net_free(net);
    shoal_net_free(NULL);
}

/* ---- HTTP ---- */

static void http_ok(tclient *c, const char *method, const char *path, tc_http_response *r)
{
    cr_assert_eq(tc_http(c, method, path, r), 0, "%s %s: %s", method, path, c->error);
}

Test(net_http, healthz_answers_status_headers_and_body)
{
    start(1);
    tclient c;
    cr_assert_eq(tc_connect(&c, S.port, &S.tls, 5000), 0, "%s", c.error);
    tc_http_response r;
    char v[128];
    http_ok(&c, "GET", "/healthz", &r);
    cr_assert_eq(r.status, 200, "%s", r.head);
    cr_assert_str_eq(tc_http_header(&r, "content-type", v, sizeof v), "text/plain");
    cr_assert_str_eq(tc_http_header(&r, "content-length", v, sizeof v), "3");
    cr_assert_not_null(tc_http_header(&r, "x-shoal-version", v, sizeof v), "%s", r.head);
    cr_assert_str_eq(v, "12");
    cr_assert_str_eq(tc_http_header(&r, "cache-control", v, sizeof v), "no-store");
    cr_assert_eq(r.body_len, 3);
    cr_assert_str_eq((char *)r.body, "ok\n");
    free(r.body);

    /* Same connection (keep-alive): HEAD, a query string, 204. */
    http_ok(&c, "HEAD", "/healthz", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(tc_http_header(&r, "content-length", v, sizeof v), "3");
    cr_assert_null(r.body);
    http_ok(&c, "GET", "/healthz?verbose=1", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq((char *)r.body, "ok\n");
    free(r.body);
    http_ok(&c, "GET", "/empty", &r);
    cr_assert_eq(r.status, 204, "%s", r.head);
    cr_assert_null(tc_http_header(&r, "content-length", v, sizeof v));

    /* Other methods: 405, then the server hangs up. */
    http_ok(&c, "POST", "/healthz", &r);
    cr_assert_eq(r.status, 405, "%s", r.head);
    cr_assert_str_eq(tc_http_header(&r, "allow", v, sizeof v), "GET, HEAD");
    free(r.body);
    char byte;
    cr_assert_eq(tc_read(&c, &byte, 1), 0, "the connection stays open after 405");
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.final_stats.http_requests_total, 5);
}

Test(net_http, unknown_path_is_404_and_session_path_is_426)
{
    start(1);
    tclient c;
    cr_assert_eq(tc_connect(&c, S.port, &S.tls, 5000), 0, "%s", c.error);
    tc_http_response r;
    http_ok(&c, "GET", "/no/such/thing", &r);
    cr_assert_eq(r.status, 404, "%s", r.head);
    cr_assert_str_eq((char *)r.body, "not found\n");
    free(r.body);
    http_ok(&c, "GET", SHOAL_NET_WS_PATH, &r);
    cr_assert_eq(r.status, 426, "%s", r.head);
    free(r.body);
    tc_close(&c);
}

Test(net_http, multi_megabyte_body_arrives_intact)
{
    th_init(&S, 1);
    S.model_len = ((size_t)5 << 20) + 12345;
    S.model = pattern(S.model_len, 42);
    th_start(&S);
    tclient c;
    cr_assert_eq(tc_connect(&c, S.port, &S.tls, 10000), 0, "%s", c.error);
    for (int i = 0; i < 2; i++) {
        tc_http_response r;
        http_ok(&c, "GET", "/model", &r);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.body_len, S.model_len, "%zu of %zu bytes", r.body_len, S.model_len);
        cr_assert(memcmp(r.body, S.model, S.model_len) == 0, "model bytes differ");
        free(r.body);
    }
    tc_close(&c);
}

/* ---- limits and timeouts ---- */

Test(net_limits, connections_beyond_max_are_refused)
{
    th_init(&S, 1);
    S.cfg.max_connections = 2;
    th_start(&S);
    tclient a, b, extra;
    open_session(&a, 0);
    open_session(&b, 0);
    cr_assert(th_wait_connections(&S, 2, 5000));
    cr_assert_neq(tc_connect(&extra, S.port, &S.tls, 5000), 0,
                  "a third connection got through with max_connections 2");
    tc_close(&extra);
    shoal_net_stats st;
    shoal_net_get_stats(S.net, &st);
    cr_assert_eq(st.refused_total, 1);

    /* Once one leaves, a new one is let in, and the others still work. */
    cr_assert_eq(tc_ws_close(&a, 1000, NULL), SHOAL_OK);
    expect_close(&a, 1000, NULL);
    tc_close(&a);
    cr_assert(th_wait_connections(&S, 1, 5000));
    tclient again;
    open_session(&again, 0);
    send_binary(&again, "in", 2);
    expect_binary(&again, "in", 2);
    send_binary(&b, "still", 5);
    expect_binary(&b, "still", 5);
    tc_close(&again);
    tc_close(&b);
}

Test(net_timeouts, idle_session_is_closed_with_1001)
{
    th_init(&S, 1);
    S.cfg.idle_timeout_ms = 300;
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_close(&c, 1001, "idle timeout");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = th_ms_between(&t0, &t1);
    cr_assert(ms >= 250 && ms < 5000, "closed after %.0f ms of idleness, limit 300 ms", ms);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
}

Test(net_timeouts, traffic_keeps_a_session_open)
{
    th_init(&S, 1);
    S.cfg.idle_timeout_ms = 1000;
    th_start(&S);
    tclient c;
    open_session(&c, 0);
    /* 2.4 s of traffic every 200 ms: far past the idle limit in total,
     * never idle for long. The naps pace the traffic; they synchronise
     * nothing. */
    struct timespec nap = {0, 200 * 1000000L};
    for (int i = 0; i < 12; i++) {
        send_binary(&c, "tick", 4);
        expect_binary(&c, "tick", 4);
        nanosleep(&nap, NULL);
    }
    cr_assert_eq(S.n_closed, 0);
    expect_close(&c, 1001, "idle timeout");
    tc_close(&c);
}

/* Two sessions: the older one keeps talking, the younger one is silent.
 * The silent one is closed on time although the talking one opened first
 * (sessions are swept in the order of their last receive, not of their
 * opening), and the talking one stays open meanwhile. */
Test(net_timeouts, a_silent_session_behind_a_talking_one_is_closed_on_time)
{
    th_init(&S, 1);
    S.cfg.idle_timeout_ms = 1000;
    th_start(&S);
    tclient talker, silent;
    open_session(&talker, 0);
    open_session(&silent, 0);
    struct timespec t0, nap = {0, 100 * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 15; i++) {
        send_binary(&talker, "tick", 4);
        expect_binary(&talker, "tick", 4);
        nanosleep(&nap, NULL);
    }
    /* 1.5 s of the talker's traffic: the silent one was told to go (the
     * server's Close is waiting for it), the talker not. */
    expect_close(&silent, 1001, "idle timeout");
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    send_binary(&talker, "tock", 4);
    expect_binary(&talker, "tock", 4);
    cr_assert(th_wait_closed(&S, 1, 500));
    pthread_mutex_lock(&S.mu);
    const size_t closed = S.n_closed;
    const shoal_conn_id first_closed = S.closed[0];
    pthread_mutex_unlock(&S.mu);
    cr_assert_eq(closed, 1u, "%zu sessions closed, want only the silent one", closed);
    cr_assert_eq(first_closed, th_opened_id(&S, 1), "the talking session was closed");
    send_binary(&talker, "tock", 4);
    expect_binary(&talker, "tock", 4);
    cr_assert(th_ms_between(&t0, &t1) < 5000);
    tc_close(&talker);
    tc_close(&silent);
}

Test(net_timeouts, unfinished_handshake_is_dropped)
{
    th_init(&S, 1);
    S.cfg.handshake_timeout_ms = 300;
    th_start(&S);
    /* TCP only: never starts TLS. */
    tclient c;
    cr_assert_eq(tc_connect(&c, S.port, NULL, 5000), 0, "%s", c.error);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char byte;
    cr_assert_eq(tc_read(&c, &byte, 1), 0, "expected the server to hang up: %s", c.error);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = th_ms_between(&t0, &t1);
    cr_assert(ms >= 250 && ms < 5000, "dropped after %.0f ms, limit 300 ms", ms);
    tc_close(&c);
    /* TLS done, but the HTTP request never completes. */
    tclient h;
    cr_assert_eq(tc_connect(&h, S.port, &S.tls, 5000), 0, "%s", h.error);
    cr_assert_eq(tc_write_all(&h, "GET /healthz HTTP/1.1\r\n", 23), 0);
    cr_assert_eq(tc_read(&h, &byte, 1), 0, "expected the server to hang up: %s", h.error);
    tc_close(&h);
    cr_assert(th_wait_connections(&S, 0, 5000));
}

/* ---- stop ---- */

Test(net_stop, clients_get_1001_and_run_returns_within_a_second)
{
    start(1);
    enum { N = 3 };
    tclient c[N];
    for (int i = 0; i < N; i++)
        open_session(&c[i], 0);
    tclient http;
    cr_assert_eq(tc_connect(&http, S.port, &S.tls, 5000), 0, "%s", http.error);
    tc_http_response r;
    http_ok(&http, "GET", "/healthz", &r); /* an idle keep-alive connection */
    free(r.body);
    cr_assert(th_wait_opened(&S, N, 5000));

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    shoal_net_stop(S.net);
    for (int i = 0; i < N; i++)
        expect_close(&c[i], 1001, "server shutting down");
    cr_assert(th_wait_run_done(&S, 1000), "shoal_net_run still running 1 s after stop");
    double ms = th_ms_between(&t0, &S.run_done_at);
    cr_log_info("shoal_net_run returned %.1f ms after shoal_net_stop", ms);
    cr_assert_lt(ms, 1000.0);
    char byte;
    long got = tc_read(&http, &byte, 1);
    cr_assert_eq(got, 0, "the HTTP connection outlived the server (read %ld: %s)", got, http.error);
    for (int i = 0; i < N; i++)
        tc_close(&c[i]);
    tc_close(&http);
    th_stop(&S); /* on_close exactly once for each session */
    cr_assert_eq(S.n_closed, N);
}

Test(net_stop, run_returns_within_a_second_when_peers_do_not_answer)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    cr_assert(th_wait_opened(&S, 1, 5000));
    /* The client never reads, so the Close is never answered. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    shoal_net_stop(S.net);
    cr_assert(th_wait_run_done(&S, 1000), "shoal_net_run still running 1 s after stop");
    double ms = th_ms_between(&t0, &S.run_done_at);
    cr_log_info("shoal_net_run returned %.1f ms after shoal_net_stop (silent peer)", ms);
    cr_assert_lt(ms, 1000.0);
    tc_close(&c);
    th_stop(&S);
    cr_assert_eq(S.n_closed, 1);
}

/* ---- plain mode, TLS policy, start-up errors ---- */

Test(net_ws, plain_mode_serves_sessions_and_http)
{
    start(0);
    tclient c;
    open_session(&c, 0);
    cr_assert_null(c.ssl);
    send_binary(&c, "plain", 5);
    expect_binary(&c, "plain", 5);
    tc_close(&c);
    tclient h;
    cr_assert_eq(tc_connect(&h, S.port, NULL, 5000), 0, "%s", h.error);
    tc_http_response r;
    http_ok(&h, "GET", "/healthz", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq((char *)r.body, "ok\n");
    free(r.body);
    tc_close(&h);
}

Test(net_tls, negotiates_an_aead_suite_with_forward_secrecy)
{
    start(1);
    tclient c;
    cr_assert_eq(tc_connect(&c, S.port, &S.tls, 5000), 0, "%s", c.error);
    cr_assert_eq(SSL_version(c.ssl), TLS1_3_VERSION, "%s", SSL_get_version(c.ssl));
    tc_close(&c);

    tc_tls tls12 = S.tls;
    tls12.max_version = TLS1_2_VERSION;
    cr_assert_eq(tc_connect(&c, S.port, &tls12, 5000), 0, "%s", c.error);
    const char *suite = SSL_get_cipher_name(c.ssl);
    cr_assert(strncmp(suite, "ECDHE-", 6) == 0 &&
                  (strstr(suite, "GCM") || strstr(suite, "CHACHA20")),
              "TLS 1.2 suite %s", suite);
    tc_close(&c);
}

Test(net_tls, refuses_tls_1_1_and_non_aead_suites)
{
    start(1);
    tclient c;
    tc_tls old = S.tls;
    old.max_version = TLS1_1_VERSION;
    old.ciphers = "DEFAULT:@SECLEVEL=0";
    old.security_level_0 = 1;
    cr_assert_neq(tc_connect(&c, S.port, &old, 5000), 0, "a TLS 1.1 client got in");
    cr_assert_eq(ERR_GET_REASON(c.tls_error), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, "%s", c.error);
    tc_close(&c);

    tc_tls cbc = S.tls;
    cbc.max_version = TLS1_2_VERSION;
    cbc.ciphers = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA";
    cr_assert_neq(tc_connect(&c, S.port, &cbc, 5000), 0, "a CBC-only client got in");
    cr_assert_eq(ERR_GET_REASON(c.tls_error), SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE, "%s", c.error);
    tc_close(&c);

    /* The positive control: the same client with an allowed suite. */
    tc_tls good = S.tls;
    good.max_version = TLS1_2_VERSION;
    good.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
    cr_assert_eq(tc_connect(&c, S.port, &good, 5000), 0, "%s", c.error);
    tc_close(&c);
}

static shoal_err try_new(shoal_errinfo *ei)
{
    shoal_net_handlers h = {0};
    shoal_net *net = NULL;
    memset(ei, 0, sizeof *ei);
    shoal_err err = shoal_net_new(&S.cfg, &h, &net, ei);
    if (err == SHOAL_OK)
        shoal_net_free(net);
    else
        cr_assert_null(net);
    return err;
}

Test(net_new, unreadable_or_bad_certificate_is_eio_naming_the_file)
{
    th_init(&S, 1);
    shoal_errinfo ei;
    const char *missing = "/nonexistent/shoal/cert.pem";
    S.cfg.cert_path = missing;
    cr_assert_eq(try_new(&ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, missing), "message: %s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "No such file"), "message: %s", ei.msg);

    S.cfg.cert_path = S.cert;
    S.cfg.key_path = "/nonexistent/shoal/key.pem";
    cr_assert_eq(try_new(&ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, "/nonexistent/shoal/key.pem"), "message: %s", ei.msg);

    char garbage[160];
    snprintf(garbage, sizeof garbage, "%s/garbage.pem", S.dir);
    FILE *f = fopen(garbage, "w");
    cr_assert_not_null(f);
    fputs("this is not a certificate\n", f);
    fclose(f);
    S.cfg.cert_path = garbage;
    S.cfg.key_path = S.key;
    cr_assert_eq(try_new(&ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, garbage), "message: %s", ei.msg);

    S.cfg.cert_path = S.cert;
    S.cfg.key_path = garbage;
    cr_assert_eq(try_new(&ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, garbage), "message: %s", ei.msg);

    /* The good pair works. */
    S.cfg.key_path = S.key;
    cr_assert_eq(try_new(&ei), SHOAL_OK, "%s", ei.msg);
}

Test(net_new, port_in_use_is_eio_naming_address_and_port)
{
    start(0);
    shoal_net_config taken = S.cfg;
    taken.port = S.port;
    shoal_net_handlers h = {0};
    shoal_net *net = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_net_new(&taken, &h, &net, &ei), SHOAL_EIO);
    cr_assert_null(net);
    char where[32];
    snprintf(where, sizeof where, "127.0.0.1:%u", (unsigned)S.port);
    cr_assert_not_null(strstr(ei.msg, where), "message: %s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "in use"), "message: %s", ei.msg);
}

Test(net_new, invalid_config_is_einval_naming_the_field)
{
    th_init(&S, 0);
    shoal_errinfo ei;
    S.cfg.max_connections = 0;
    cr_assert_eq(try_new(&ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "max_connections"), "message: %s", ei.msg);
    S.cfg.max_connections = 10;
    S.cfg.handshake_timeout_ms = 0;
    cr_assert_eq(try_new(&ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "handshake_timeout_ms"), "message: %s", ei.msg);
    S.cfg.handshake_timeout_ms = 1000;
    S.cfg.tls = 1;
    cr_assert_eq(try_new(&ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "cert_path"), "message: %s", ei.msg);
    S.cfg.tls = 0;
    cr_assert_eq(try_new(&ei), SHOAL_OK, "%s", ei.msg);
}

Test(net_new, binds_the_any_address_and_a_null_address)
{
    const char *addresses[] = {"0.0.0.0", NULL};
    for (size_t i = 0; i < 2; i++) {
        th_init(&S, 0);
        S.cfg.address = addresses[i];
        th_start(&S);
        tclient h;
        cr_assert_eq(tc_connect(&h, S.port, NULL, 5000), 0, "address %s: %s",
                     addresses[i] ? addresses[i] : "NULL", h.error);
        tc_http_response r;
        http_ok(&h, "GET", "/healthz", &r);
        cr_assert_eq(r.status, 200);
        free(r.body);
        tc_close(&h);
        th_fini(&S);
    }
}

Test(net_new, unusable_address_is_refused_naming_it)
{
    th_init(&S, 0);
    shoal_errinfo ei;
    S.cfg.address = "192.0.2.1"; /* TEST-NET-1: not an address of this machine */
    shoal_err err = try_new(&ei);
    cr_assert_eq(err, SHOAL_EIO, "%s: %s", shoal_err_name(err), ei.msg);
    cr_assert_not_null(strstr(ei.msg, "192.0.2.1:0"), "message: %s", ei.msg);
    S.cfg.address = "localhost";
    err = try_new(&ei);
    cr_assert_eq(err, SHOAL_EINVAL, "%s: %s", shoal_err_name(err), ei.msg);
    cr_assert_not_null(strstr(ei.msg, "\"localhost\""), "message: %s", ei.msg);
}

/* Is there a listening socket on `port` bound to `hex_addr` in
 * /proc/net/<table>? ("0100007F" is 127.0.0.1; "00000000" any.) */
static int proc_listens(const char *table, const char *hex_addr, uint16_t port)
{
    char path[64], line[512], want[64];
    snprintf(path, sizeof path, "/proc/net/%s", table);
    snprintf(want, sizeof want, "%s:%04X", hex_addr, (unsigned)port);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char local[80], remote[80];
        unsigned state;
        if (sscanf(line, " %*d: %79s %79s %X", local, remote, &state) == 3 && state == 0x0A &&
            strcmp(local, want) == 0)
            found = 1;
    }
    fclose(f);
    return found;
}

static int proc_listens_anywhere(uint16_t port)
{
    char suffix[16], path[2][64] = {"/proc/net/tcp", "/proc/net/tcp6"}, line[512];
    snprintf(suffix, sizeof suffix, ":%04X", (unsigned)port);
    int count = 0;
    for (int t = 0; t < 2; t++) {
        FILE *f = fopen(path[t], "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            char local[80], remote[80];
            unsigned state;
            size_t n;
            if (sscanf(line, " %*d: %79s %79s %X", local, remote, &state) == 3 && state == 0x0A &&
                (n = strlen(local)) > 5 && strcmp(local + n - 5, suffix) == 0)
                count++;
        }
        fclose(f);
    }
    return count;
}

Test(net_new, binds_only_the_address_given)
{
    th_init(&S, 0);
    th_start(&S); /* 127.0.0.1 */
    cr_assert(proc_listens("tcp", "0100007F", S.port), "nothing listens on 127.0.0.1:%u",
              (unsigned)S.port);
    cr_assert_eq(proc_listens_anywhere(S.port), 1, "port %u is also open on other addresses",
                 (unsigned)S.port);
}

/* ---- RFC 6455 strictness (sections 5.5.1, 7.4): malformed Close frames
 * are answered with the status code the RFC asks for, not echoed ---- */

/* Writes one raw frame: FIN + opcode, the mask bit only when `mask` is
 * set (then a fixed masking key), and a payload of at most 125 bytes. */
static void raw_frame(tclient *c, uint8_t opcode, int mask, const uint8_t *payload, size_t len)
{
    uint8_t f[2 + 4 + 125];
    size_t n = 0;
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    cr_assert_leq(len, 125u);
    f[n++] = (uint8_t)(0x80 | opcode);
    f[n++] = (uint8_t)((mask ? 0x80 : 0) | len);
    if (mask) {
        memcpy(f + n, key, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        f[n++] = mask ? (uint8_t)(payload[i] ^ key[i % 4]) : payload[i];
    cr_assert_eq(tc_write_all(c, f, n), 0, "%s", c->error);
}

Test(net_ws, a_one_byte_close_payload_is_closed_with_1002)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    const uint8_t one[1] = {0x03};
    raw_frame(&c, 0x8, 1, one, 1);
    expect_close(&c, 1002, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
    th_stop(&S);
}

Test(net_ws, a_close_reason_that_is_not_utf8_is_closed_with_1007)
{
    start(1);
    tclient c;
    open_session(&c, 0);
    const uint8_t bad[4] = {0x03, 0xe8, 0xc3, 0x28}; /* 1000, then an invalid sequence */
    raw_frame(&c, 0x8, 1, bad, sizeof bad);
    expect_close(&c, 1007, NULL);
    tc_close(&c);
    cr_assert(th_wait_closed(&S, 1, 5000));
    th_stop(&S);
}
