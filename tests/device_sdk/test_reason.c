/* The session reason (shoal_session_reason): each one the situations
 * elsewhere in this suite do not reach, pinned to the situation that
 * produces it, and the names; and the user agent a CheckIn carries. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sdk_util.h"

static void start_server(tserver *t)
{
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

Test(device_sdk_reason, every_reason_has_its_own_name_and_unknown_ones_read_as_a_question_mark)
{
    const char *seen[SHOAL_SESSION_REASON_DEVICE + 1] = {0};
    for (int r = SHOAL_SESSION_REASON_NONE; r <= SHOAL_SESSION_REASON_DEVICE; r++) {
        const char *name = shoal_session_reason_name((shoal_session_reason)r);
        cr_assert_str_neq(name, "?", "reason %d has no name", r);
        for (int q = 0; q < r; q++)
            cr_assert_str_neq(name, seen[q], "reasons %d and %d are both %s", q, r, name);
        seen[r] = name;
    }
    cr_assert_str_eq(shoal_session_reason_name(SHOAL_SESSION_REASON_NONE), "NONE");
    cr_assert_str_eq(shoal_session_reason_name(SHOAL_SESSION_REASON_AUTH_FAILED), "AUTH_FAILED");
    cr_assert_str_eq(
        shoal_session_reason_name((shoal_session_reason)(SHOAL_SESSION_REASON_DEVICE + 1)), "?");
}

Test(device_sdk_reason, a_population_the_server_does_not_know_is_unknown_population)
{
    tserver t;
    start_server(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    d.cfg.population = "nobody-trains-here";
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.err, SHOAL_ENOTFOUND, "%s", shoal_strerror(r.err));
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_UNKNOWN_POPULATION, "%s",
                 shoal_session_reason_name(r.session_reason));
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_reason, a_server_that_never_answers_is_a_timeout)
{
    /* A listening socket nobody accepts on: the kernel completes the TCP
     * handshake, and the TLS ClientHello is never answered. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 4), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);

    shoal_errinfo ei = {0};
    shoal_port posix;
    shoal_posix_port_config pc = {
        .power_supply_dir = "", .battery_percent = -1, .charging = -1, .idle = -1};
    cr_assert_eq(shoal_posix_port_init(&pc, &posix, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_test_port tp;
    shoal_test_port_init(&tp);
    tp.transport = &posix;
    tp.monotonic_step_ms = 50; /* the timeout comes after a few waits */
    shoal_port port;
    shoal_test_port_bind(&tp, &port);
    shoal_client_config cfg = {.host = "127.0.0.1",
                               .port = ntohs(sa.sin_port),
                               .server_name = "localhost",
                               .ca_pem = "-----BEGIN CERTIFICATE-----\n",
                               .population = "p",
                               .auth_token = (const uint8_t *)"token",
                               .store_path = "/tmp/none.db",
                               .io_timeout_ms = 300};
    shoal_client *client = NULL;
    cr_assert_eq(shoal_client_new(&cfg, &port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    /* A CA that does not parse fails the client's own TLS setup first. */
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_DEVICE, "%s: %s",
                 shoal_session_reason_name(r.session_reason), r.errinfo.msg);
    shoal_client_free(client);

    char *ca = NULL;
    tserver t;
    start_server(&t);
    ca = sdk_read_text(t.cert);
    cfg.ca_pem = ca;
    cr_assert_eq(shoal_client_new(&cfg, &port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.err, SHOAL_ETIMEDOUT, "%s: %s", shoal_strerror(r.err), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_TIMEOUT, "%s",
                 shoal_session_reason_name(r.session_reason));
    shoal_client_free(client);
    free(ca);
    tserver_stop(&t);
    tserver_cleanup(&t);
    shoal_test_port_fini(&tp);
    shoal_posix_port_fini(&posix);
    close(fd);
}

/* Keeps the CheckIn's sdk_version. */
static void keep_user_agent(void *ctx, const uint8_t *message, size_t len)
{
    char *agent = ctx;
    Shoal__Envelope *env = shoal__envelope__unpack(NULL, len, message);
    cr_assert_not_null(env);
    if (env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN && env->check_in->sdk_version)
        snprintf(agent, 64, "%s", env->check_in->sdk_version);
    shoal__envelope__free_unpacked(env, NULL);
}

Test(device_sdk_version, the_check_in_carries_the_projects_version_as_its_user_agent)
{
    cr_assert_str_eq(SHOAL_CLIENT_SDK_VERSION, "shoal-device/" SHOAL_TEST_PROJECT_VERSION);
    tserver t;
    start_server(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    char agent[64] = "";
    d.cfg.observe_send = keep_user_agent;
    d.cfg.observe_ctx = agent;
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_str_eq(agent, "shoal-device/" SHOAL_TEST_PROJECT_VERSION);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}
