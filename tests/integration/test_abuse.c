/* Abuse limits end to end: failed authentications per address, refusal
 * counters on /metrics, the bearer token of /metrics and the model, and
 * their own listener. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shoal/net.h"
#include "shoal/server.h"
#include "shoal/wire.h"

#define LIMITS_END "\"handshake_timeout_ms\": 5000}"
#define TOKEN      "metrics-token-0123456789abcdef"

/* A server with population p whose config's "limits" object ends as
 * `limits_end` says (it may close it and add members). */
static void start_with(tserver *t, const char *limits_end)
{
    tserver_prepare_one(t, "\"goal_count\": 1, \"over_selection\": 1.0");
    tserver_config_edit(t, LIMITS_END, limits_end);
    tserver_start(t);
}

static void bad_checkin(const tserver *t, const char *token, tdev *d)
{
    cr_assert_eq(tdev_connect(d, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin(d, "p", token, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(d, 10000), TDEV_ABORTED);
    cr_assert_eq(d->reason, SHOAL__REASON__REASON_AUTH_FAILED);
    tdev_close(d);
}

static void expect_metric(const tserver *t, const char *line)
{
    int status = 0;
    char *body = thttp_get_auth(t, "/metrics", "Bearer " TOKEN, &status, NULL);
    cr_assert_eq(status, 200);
    cr_assert(body && strstr(body, line), "no '%s' in:\n%s", line, body ? body : "");
    free(body);
}

/* After limits.auth_failures_per_minute bad tokens from one address, even
 * a good token from it is refused, with the reason and the wait as its
 * retry window; /metrics counts both kinds of refusal. */
Test(abuse, an_address_with_too_many_failed_authentications_is_refused_for_a_while)
{
    tserver t;
    start_with(&t, "\"handshake_timeout_ms\": 5000, \"auth_failures_per_minute\": 3},"
                   " \"http\": {\"token\": \"" TOKEN "\"}");
    tdev d;
    for (int i = 0; i < 3; i++) {
        bad_checkin(&t, "not-the-secret-but-long-enough", &d);
        cr_assert(strstr(d.detail, "not valid"), "attempt %d: %s", i, d.detail);
    }
    bad_checkin(&t, TEST_SECRET, &d);
    cr_assert(strstr(d.detail, "too many failed authentications from your address"), "%s",
              d.detail);
    cr_assert_gt(d.retry_min_ms, 0u);
    cr_assert_leq(d.retry_min_ms, 60000u);
    cr_assert_geq(d.retry_max_ms, d.retry_min_ms);
    expect_metric(&t, "shoal_refusals_total{population=\"p\",reason=\"auth_failed\"} 3\n");
    expect_metric(&t, "shoal_refusals_total{population=\"p\",reason=\"auth_rate_limited\"} 1\n");
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* With http.token, /metrics and the model need it (401 without, or with
 * a wrong one); /healthz never does; an endpoint turned off is 404. */
Test(abuse, metrics_and_the_model_need_the_bearer_token)
{
    tserver t;
    start_with(&t, LIMITS_END ", \"http\": {\"token\": \"" TOKEN "\", \"model\": true}");
    static const char *const paths[] = {"/metrics", "/v1/populations/p/model"};
    for (int i = 0; i < 2; i++) {
        int status = 0;
        char *body = thttp_get_auth(&t, paths[i], NULL, &status, NULL);
        cr_assert_eq(status, 401, "%s without a token", paths[i]);
        cr_assert(body && strstr(body, "Authorization: Bearer"), "%s", body ? body : "");
        free(body);
        body = thttp_get_auth(&t, paths[i], "Bearer " TOKEN "x", &status, NULL);
        cr_assert_eq(status, 401, "%s with a wrong token", paths[i]);
        free(body);
        body = thttp_get_auth(&t, paths[i], "Basic " TOKEN, &status, NULL);
        cr_assert_eq(status, 401, "%s with another scheme", paths[i]);
        free(body);
        body = thttp_get_auth(&t, paths[i], "Bearer " TOKEN, &status, NULL);
        cr_assert_eq(status, 200, "%s with the token", paths[i]);
        free(body);
    }
    int status = 0;
    free(thttp_get(&t, "/healthz", &status, NULL));
    cr_assert_eq(status, 200);
    tserver_stop(&t);

    tserver_config_edit(&t, "\"model\": true", "\"model\": false");
    tserver_start(&t);
    free(thttp_get_auth(&t, "/v1/populations/p/model", "Bearer " TOKEN, &status, NULL));
    cr_assert_eq(status, 404, "the model endpoint is off");
    free(thttp_get_auth(&t, "/metrics", "Bearer " TOKEN, &status, NULL));
    cr_assert_eq(status, 200);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* With http.listen, /metrics and the model are served on that plain-HTTP
 * listener alone; the devices' port keeps /healthz and answers 404 for
 * them; the listener takes no WebSocket sessions. */
Test(abuse, metrics_and_the_model_move_to_their_own_listener)
{
    tserver t;
    start_with(&t, LIMITS_END ", \"http\": {\"listen\": {\"address\": \"127.0.0.1\", "
                              "\"port\": 0}}");
    uint16_t port = shoal_server_http_port(t.srv);
    cr_assert_neq(port, 0, "the listener's port");
    cr_assert_neq(port, t.endpoint.port);
    static const char *const paths[] = {"/metrics", "/v1/populations/p/model"};
    char url[128];
    int status = 0;
    for (int i = 0; i < 2; i++) {
        free(thttp_get(&t, paths[i], &status, NULL));
        cr_assert_eq(status, 404, "%s on the devices' port", paths[i]);
        snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)port, paths[i]);
        char *body = thttp_fetch(&t, url, "", &status, NULL);
        cr_assert_eq(status, 200, "%s on the listener", paths[i]);
        if (i == 0)
            cr_assert(body && strstr(body, "shoal_rounds_committed_total{population=\"p\"}"), "%s",
                      body ? body : "");
        free(body);
    }
    free(thttp_get(&t, "/healthz", &status, NULL));
    cr_assert_eq(status, 200, "/healthz stays on the devices' port");
    snprintf(url, sizeof url, "http://127.0.0.1:%u/healthz", (unsigned)port);
    free(thttp_fetch(&t, url, "", &status, NULL));
    cr_assert_eq(status, 200, "and is on the listener too");
    /* A WebSocket upgrade there is not taken. */
    snprintf(url, sizeof url, "http://127.0.0.1:%u" SHOAL_PROTOCOL_WS_PATH, (unsigned)port);
    free(thttp_fetch(
        &t, url,
        "-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
        "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "
        "-H 'Sec-WebSocket-Protocol: " SHOAL_NET_SUBPROTOCOL "'",
        &status, NULL));
    cr_assert_neq(status, 101, "no WebSocket session on the operator's listener");
    tserver_stop(&t);
    tserver_cleanup(&t);
}
