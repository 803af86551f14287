/* The config's abuse limits, the HTTP section and TLS session tickets:
 * defaults, every field read, and mistakes refused with file:line:col and
 * what was expected. */
#include <criterion/criterion.h>
#include <string.h>

#include "shoal/server_config.h"

/* A valid config whose line 2 is `extra` (one or more top-level members,
 * each followed by a comma). */
#define WITH(extra)                                                                                \
    "{\n" extra "\n"                                                                               \
    "  \"populations\": [{\"name\": \"p\","                                                        \
    " \"auth\": {\"mode\": \"shared\", \"secret\": \"0123456789abcdef-secret\"},"                  \
    " \"model\": {\"architecture\": \"logreg\"}, \"plan\": {\"learning_rate\": 0.1},"              \
    " \"round\": {\"goal_count\": 1}}]\n"                                                          \
    "}\n"

static shoal_err load(const char *text, shoal_server_config **cfg, shoal_errinfo *ei)
{
    return shoal_server_config_parse(text, strlen(text), "shoal.json", NULL, cfg, ei);
}

Test(config_http, limits_and_http_have_safe_defaults)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(load(WITH(""), &cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(cfg->listen_address, "127.0.0.1");
    cr_assert_eq(cfg->auth_failures_per_minute, 10);
    cr_assert_eq(cfg->refusal_log_per_minute, 10);
    cr_assert_eq(cfg->max_concurrent_uploads, 128);
    cr_assert_null(cfg->http_token);
    cr_assert_eq(cfg->http_metrics, 1);
    cr_assert_eq(cfg->http_model, 1);
    cr_assert_null(cfg->http_listen_address, "no separate listener unless asked");
    shoal_server_config_free(cfg);
}

Test(config_http, a_separate_listener_has_loopback_and_9464_by_default)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(load(WITH("  \"http\": {\"listen\": {}},"), &cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(cfg->http_listen_address, "127.0.0.1");
    cr_assert_eq(cfg->http_port, 9464);
    shoal_server_config_free(cfg);
    cr_assert_eq(
        load(WITH("  \"http\": {\"listen\": {\"address\": \"10.0.0.7\", \"port\": 9100}},"), &cfg,
             &ei),
        SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(cfg->http_listen_address, "10.0.0.7");
    cr_assert_eq(cfg->http_port, 9100);
    shoal_server_config_free(cfg);
}

Test(config_http, every_field_is_read)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(load(WITH("  \"limits\": {\"auth_failures_per_minute\": 0,"
                           " \"refusal_log_per_minute\": 3, \"max_concurrent_uploads\": 0},"
                           " \"http\": {\"token\": \"metrics-token-0123456789\","
                           " \"metrics\": true, \"model\": false},"),
                      &cfg, &ei),
                 SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cfg->auth_failures_per_minute, 0);
    cr_assert_eq(cfg->refusal_log_per_minute, 3);
    cr_assert_eq(cfg->max_concurrent_uploads, 0);
    cr_assert_str_eq(cfg->http_token, "metrics-token-0123456789");
    cr_assert_eq(cfg->http_metrics, 1);
    cr_assert_eq(cfg->http_model, 0);
    shoal_server_config_free(cfg);
}

Test(config_http, bad_values_name_the_field_and_what_to_do)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {WITH("  \"http\": {\"token\": \"short\"},"),
         "shoal.json:2:21: http.token: 5 bytes; expected 16 to 1024 printable ASCII characters "
         "without spaces (e.g. head -c 32 /dev/urandom | base64)"},
        {WITH("  \"http\": {\"token\": \"has a space in it, sixteen+\"},"),
         "shoal.json:2:21: http.token: 27 bytes with spaces or control characters; expected 16 "
         "to 1024 printable ASCII characters without spaces (e.g. head -c 32 /dev/urandom | "
         "base64)"},
        {WITH("  \"http\": {\"metrics\": \"yes\"},"), NULL},
        {WITH("  \"http\": {\"open\": true},"), NULL},
        {WITH("  \"http\": {\"listen\": {\"port\": 70000}},"), NULL},
        {WITH("  \"http\": {\"listen\": {\"address\": \"\"}},"),
         "shoal.json:2:34: http.listen.address: empty; expected an IP address or interface name (1 "
         "to 255 printable characters, no spaces)"},
        {WITH("  \"http\": {\"listen\": {\"host\": \"x\"}},"), NULL},
        {WITH("  \"listen\": {\"port\": 9000}, \"http\": {\"listen\": {\"port\": 9000}},"),
         "shoal.json:2:57: http.listen.port: 9000 is the devices' port (listen.port) on the same "
         "address; expected another port for the operator's endpoints"},
        {WITH("  \"limits\": {\"refusal_log_per_minute\": 0},"), NULL},
        {WITH("  \"limits\": {\"auth_failures_per_minute\": -1},"), NULL},
        {WITH("  \"limits\": {\"max_concurrent_uploads\": 1000001},"), NULL},
        {WITH("  \"limits\": {\"max_concurrent_uploads\": \"many\"},"), NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_server_config *cfg = (shoal_server_config *)1;
        shoal_errinfo ei = {{0}};
        shoal_err err = load(cases[i].text, &cfg, &ei);
        cr_assert_eq(err, SHOAL_EINVAL, "case %zu: %s: %s", i, shoal_err_name(err), ei.msg);
        cr_assert_null(cfg);
        cr_assert(strncmp(ei.msg, "shoal.json:2:", 13) == 0, "case %zu: %s", i, ei.msg);
        if (cases[i].message)
            cr_assert_str_eq(ei.msg, cases[i].message, "case %zu: %s", i, ei.msg);
    }
}

Test(config_tls, session_tickets_are_on_with_hourly_keys_by_default)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(load(WITH(""), &cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cfg->tls_session_tickets, 1);
    cr_assert_eq(cfg->tls_ticket_rotation_ms, 3600000);
    shoal_server_config_free(cfg);
}

Test(config_tls, session_tickets_and_their_rotation_are_read)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(
        load(WITH("  \"tls\": {\"session_tickets\": true, \"ticket_rotation_ms\": 60000},"), &cfg,
             &ei),
        SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cfg->tls_session_tickets, 1);
    cr_assert_eq(cfg->tls_ticket_rotation_ms, 60000);
    shoal_server_config_free(cfg);
    cr_assert_eq(load(WITH("  \"tls\": {\"session_tickets\": false},"), &cfg, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(cfg->tls_session_tickets, 0);
    shoal_server_config_free(cfg);
}

Test(config_tls, bad_ticket_settings_name_the_field_and_what_to_do)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {WITH("  \"tls\": {\"ticket_rotation_ms\": 999},"),
         "shoal.json:2:33: tls.ticket_rotation_ms: 999 is out of range; expected an integer from "
         "1000 to 604800000"},
        {WITH("  \"tls\": {\"ticket_rotation_ms\": 604800001},"), NULL},
        {WITH("  \"tls\": {\"ticket_rotation_ms\": 1.5e6},"), NULL},
        {WITH("  \"tls\": {\"session_tickets\": \"yes\"},"), NULL},
        {WITH("  \"tls\": {\"session_tickets\": false, \"ticket_rotation_ms\": 60000},"),
         "shoal.json:2:37: tls.ticket_rotation_ms: session_tickets is false: there are no ticket "
         "keys to rotate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_server_config *cfg = (shoal_server_config *)1;
        shoal_errinfo ei = {{0}};
        shoal_err err = load(cases[i].text, &cfg, &ei);
        cr_assert_eq(err, SHOAL_EINVAL, "case %zu: %s: %s", i, shoal_err_name(err), ei.msg);
        cr_assert_null(cfg);
        cr_assert(strncmp(ei.msg, "shoal.json:2:", 13) == 0, "case %zu: %s", i, ei.msg);
        if (cases[i].message)
            cr_assert_str_eq(ei.msg, cases[i].message, "case %zu: %s", i, ei.msg);
    }
}
