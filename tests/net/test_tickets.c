/* TLS session tickets in the server's network layer: the key ring's
 * schedule with the time passed in (server/net/src/tickets_int.h), and a
 * real shoal_net resuming OpenSSL clients' sessions over TLS 1.2 and 1.3
 * (or not, with session_tickets off), counted in its stats. */
#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "harness.h"
#include "shoal/net.h"
#include "tickets_int.h"

/* ---- the key ring ---- */

#define PERIOD_US ((int64_t)3600 * 1000000)
#define T0_US     ((int64_t)987654321)

static shoal_net_tickets *ring(void)
{
    shoal_net_tickets *t = NULL;
    cr_assert_eq(shoal_net_tickets_new(PERIOD_US, T0_US, &t), SHOAL_OK);
    cr_assert_not_null(t);
    return t;
}

Test(net_ticket_keys, a_key_is_current_for_one_period_then_previous_for_one_then_gone)
{
    shoal_net_tickets *t = ring();
    uint8_t k0[SHOAL_NET_TICKET_NAME_LEN], k1[SHOAL_NET_TICKET_NAME_LEN];
    shoal_net_tickets_current_name(t, T0_US, k0);
    cr_assert_eq(shoal_net_tickets_find(t, k0, T0_US), SHOAL_NET_TICKET_CURRENT);
    cr_assert_eq(shoal_net_tickets_find(t, k0, T0_US + PERIOD_US - 1), SHOAL_NET_TICKET_CURRENT);
    cr_assert_eq(shoal_net_tickets_rotations(t), 0);

    /* One period: a new current key; the old one still opens its tickets
     * (which OpenSSL then renews). */
    cr_assert_eq(shoal_net_tickets_find(t, k0, T0_US + PERIOD_US), SHOAL_NET_TICKET_PREVIOUS);
    shoal_net_tickets_current_name(t, T0_US + PERIOD_US, k1);
    cr_assert_neq(memcmp(k0, k1, sizeof k0), 0);
    cr_assert_eq(shoal_net_tickets_find(t, k1, T0_US + PERIOD_US), SHOAL_NET_TICKET_CURRENT);
    cr_assert_eq(shoal_net_tickets_find(t, k0, T0_US + 2 * PERIOD_US - 1),
                 SHOAL_NET_TICKET_PREVIOUS);
    cr_assert_eq(shoal_net_tickets_rotations(t), 1);

    /* Two periods after it became current, a key is forgotten. */
    cr_assert_eq(shoal_net_tickets_find(t, k0, T0_US + 2 * PERIOD_US), SHOAL_NET_TICKET_UNKNOWN);
    cr_assert_eq(shoal_net_tickets_find(t, k1, T0_US + 2 * PERIOD_US), SHOAL_NET_TICKET_PREVIOUS);
    cr_assert_eq(shoal_net_tickets_find(t, k1, T0_US + 3 * PERIOD_US), SHOAL_NET_TICKET_UNKNOWN);
    cr_assert_eq(shoal_net_tickets_rotations(t), 3);
    shoal_net_tickets_free(t);
}

/* Rotations are lazy but keep to the schedule: after two idle periods
 * both keys are gone, and the next rotation is at the next multiple of
 * the period from the start. */
Test(net_ticket_keys, an_idle_ring_rotates_as_if_on_time)
{
    shoal_net_tickets *t = ring();
    uint8_t k0[SHOAL_NET_TICKET_NAME_LEN], k2[SHOAL_NET_TICKET_NAME_LEN];
    shoal_net_tickets_current_name(t, T0_US, k0);
    int64_t late = T0_US + 2 * PERIOD_US + PERIOD_US / 2;
    cr_assert_eq(shoal_net_tickets_find(t, k0, late), SHOAL_NET_TICKET_UNKNOWN);
    shoal_net_tickets_current_name(t, late, k2);
    cr_assert_neq(memcmp(k0, k2, sizeof k0), 0);
    cr_assert_eq(shoal_net_tickets_rotations(t), 2);
    cr_assert_eq(shoal_net_tickets_find(t, k2, T0_US + 3 * PERIOD_US - 1),
                 SHOAL_NET_TICKET_CURRENT);
    cr_assert_eq(shoal_net_tickets_find(t, k2, T0_US + 3 * PERIOD_US), SHOAL_NET_TICKET_PREVIOUS);
    shoal_net_tickets_free(t);
}

Test(net_ticket_keys, names_from_elsewhere_are_unknown)
{
    shoal_net_tickets *a = ring(), *b = ring();
    uint8_t name[SHOAL_NET_TICKET_NAME_LEN];
    shoal_net_tickets_current_name(b, T0_US, name);
    cr_assert_eq(shoal_net_tickets_find(a, name, T0_US), SHOAL_NET_TICKET_UNKNOWN,
                 "two rings (two processes, or a restart) share no key");
    memset(name, 0, sizeof name);
    cr_assert_eq(shoal_net_tickets_find(a, name, T0_US), SHOAL_NET_TICKET_UNKNOWN);
    shoal_net_tickets_free(a);
    shoal_net_tickets_free(b);
    shoal_net_tickets_free(NULL);
}

Test(net_ticket_keys, a_period_of_zero_is_einval)
{
    shoal_net_tickets *t = (shoal_net_tickets *)&t;
    cr_assert_eq(shoal_net_tickets_new(0, T0_US, &t), SHOAL_EINVAL);
    cr_assert_null(t);
    cr_assert_eq(shoal_net_tickets_new(PERIOD_US, T0_US, NULL), SHOAL_EINVAL);
}

/* ---- a server and OpenSSL clients ---- */

static th_server R;

static void teardown(void)
{
    th_fini(&R);
}

TestSuite(net_resume, .fini = teardown, .timeout = 60);

static void start(int tickets)
{
    th_init(&R, 1);
    R.cfg.session_tickets = tickets;
    R.cfg.ticket_rotation_ms = 3600000;
    th_start(&R);
}

/* One connection with TLS `version` only, offering `offer` (NULL: none),
 * and one HTTP request (whose answer also brings TLS 1.3's tickets, sent
 * after the handshake). Returns whether the session was resumed; *out
 * (if not NULL) gets the session to offer next. */
static int connect_once(uint16_t port, int version, SSL_SESSION *offer, SSL_SESSION **out)
{
    tclient c;
    tc_tls tls = {
        .ca_path = R.cert, .min_version = version, .max_version = version, .session = offer};
    cr_assert_eq(tc_connect(&c, port, &tls, 5000), 0, "%s", c.error);
    tc_http_response resp;
    cr_assert_eq(tc_http(&c, "GET", "/healthz", &resp), 0, "%s", c.error);
    cr_assert_eq(resp.status, 200);
    free(resp.body);
    int reused = SSL_session_reused(c.ssl);
    if (out)
        *out = SSL_get1_session(c.ssl);
    /* close_notify first: OpenSSL makes the session of a connection
     * dropped without one unresumable (a "bad session"). */
    (void)SSL_shutdown(c.ssl);
    tc_close(&c);
    return reused;
}

static void stats(th_server *s, uint64_t *handshakes, uint64_t *resumed)
{
    shoal_net_stats st;
    shoal_net_get_stats(s->net, &st);
    *handshakes = st.tls_handshakes_total;
    *resumed = st.tls_resumed_total;
}

Test(net_resume, tls_1_2_and_1_3_clients_resume_with_their_ticket)
{
    start(1);
    const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (int i = 0; i < 2; i++) {
        SSL_SESSION *first = NULL, *second = NULL;
        cr_assert_not(connect_once(R.port, versions[i], NULL, &first));
        cr_assert(SSL_SESSION_is_resumable(first), "version %x: no ticket", versions[i]);
        cr_assert(connect_once(R.port, versions[i], first, &second), "version %x", versions[i]);
        cr_assert(connect_once(R.port, versions[i], second, NULL), "version %x", versions[i]);
        SSL_SESSION_free(first);
        SSL_SESSION_free(second);
    }
    uint64_t handshakes, resumed;
    stats(&R, &handshakes, &resumed);
    cr_assert_eq(handshakes, 6);
    cr_assert_eq(resumed, 4);
}

Test(net_resume, with_tickets_off_no_session_resumes)
{
    start(0);
    const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (int i = 0; i < 2; i++) {
        SSL_SESSION *first = NULL;
        cr_assert_not(connect_once(R.port, versions[i], NULL, &first));
        cr_assert_not(connect_once(R.port, versions[i], first, NULL), "version %x", versions[i]);
        SSL_SESSION_free(first);
    }
    uint64_t handshakes, resumed;
    stats(&R, &handshakes, &resumed);
    cr_assert_eq(handshakes, 4);
    cr_assert_eq(resumed, 0);
}

/* Another process's keys (or this one's after a restart) open nothing. */
Test(net_resume, a_ticket_from_another_server_gets_a_full_handshake)
{
    start(1);
    SSL_SESSION *first = NULL;
    cr_assert_not(connect_once(R.port, TLS1_2_VERSION, NULL, &first));

    /* The same certificate, another server: its own keys. */
    static th_server other;
    th_init(&other, 0);
    other.cfg = R.cfg;
    other.cfg.port = 0;
    th_start(&other);
    cr_assert_not(connect_once(other.port, TLS1_2_VERSION, first, NULL));
    uint64_t handshakes, resumed;
    stats(&other, &handshakes, &resumed);
    cr_assert_eq(handshakes, 1);
    cr_assert_eq(resumed, 0);
    th_fini(&other);

    cr_assert(connect_once(R.port, TLS1_2_VERSION, first, NULL), "the issuer still takes it");
    SSL_SESSION_free(first);
}

Test(net_resume, a_rotation_period_out_of_range_is_einval_naming_it)
{
    th_init(&R, 1);
    R.cfg.session_tickets = 1;
    const int64_t bad[] = {0, 999, (int64_t)7 * 24 * 3600 * 1000 + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        R.cfg.ticket_rotation_ms = bad[i];
        shoal_net_handlers h = {0};
        shoal_errinfo ei = {{0}};
        shoal_net *net = NULL;
        cr_assert_eq(shoal_net_new(&R.cfg, &h, &net, &ei), SHOAL_EINVAL, "%lld", (long long)bad[i]);
        cr_assert_null(net);
        cr_assert_not_null(strstr(ei.msg, "ticket_rotation_ms"), "%s", ei.msg);
    }
    /* Without tickets the period is not used. */
    R.cfg.session_tickets = 0;
    shoal_net_handlers h = {0};
    shoal_errinfo ei = {{0}};
    shoal_net *net = NULL;
    cr_assert_eq(shoal_net_new(&R.cfg, &h, &net, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_net_free(net);
}
