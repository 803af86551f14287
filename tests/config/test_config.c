/* shoal-server's config loader: every field read, defaults filled, and each
 * class of mistake refused with its exact file:line:col, JSON path and what
 * was expected. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/envelope.h"
#include "shoal/secagg.h"
#include "shoal/server_config.h"
#include "config_util.h"

char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/shoal-config-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    shoal_failalloc_uninstall();
    shoal_log_set_sink(NULL, NULL);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = make_dir, .fini = remove_dir);

static void write_file(const char *name, const char *content, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(content, 1, strlen(content), f), strlen(content));
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

shoal_err parse(const char *text, shoal_server_config **out, shoal_errinfo *ei)
{
    return shoal_server_config_parse(text, strlen(text), "shoal.json", dir, out, ei);
}

shoal_server_config *parse_ok(const char *text)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(parse(text, &cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(cfg);
    return cfg;
}

/* The whole message, not a fragment: position, path and wording are the
 * contract with the operator. */
void expect_error(const char *text, shoal_err want, const char *message)
{
    shoal_server_config *cfg = (shoal_server_config *)1;
    shoal_errinfo ei = {{0}};
    shoal_err err = parse(text, &cfg, &ei);
    cr_assert_eq(err, want, "got %s: %s", shoal_err_name(err), ei.msg);
    cr_assert_null(cfg);
    cr_assert_str_eq(ei.msg, message);
    /* The same verdict without an errinfo. */
    cr_assert_eq(parse(text, &cfg, NULL), want);
    cr_assert_null(cfg);
}

#define ROUND_KEYS                                                                                 \
    "mode, goal_count, over_selection, min_report_fraction, selection_window_ms, "                 \
    "reporting_deadline_ms, weighting, pipelining, eval_every, eval_goal_count, buffer_size, "     \
    "max_staleness, staleness_exponent, retry_min_ms, retry_max_ms, population_estimate, "         \
    "resume_grace_ms"

/* ---- accepted configs ---------------------------------------------------- */

Test(config, every_field_is_read)
{
    write_file("b.secret", "b-population-secret-0123\n", 0600);
    const char *text =
        "{\n"
        "  \"listen\": {\"address\": \"127.0.0.1\", \"port\": 9443},\n"
        "  \"tls\": {\"enabled\": false, \"cert\": \"/etc/shoal/c.pem\", \"key\": \"k.pem\",\n"
        "          \"self_signed\": false},\n"
        "  \"state\": {\"path\": \"/var/lib/shoal/s.db\", \"keep_checkpoints\": 3},\n"
        "  \"server\": {\"workers\": 4, \"log_level\": \"debug\"},\n"
        "  \"limits\": {\"max_connections\": 100, \"max_message_bytes\": 65536,\n"
        "             \"max_chunks\": 7, \"mailbox_capacity\": 99,\n"
        "             \"handshake_timeout_ms\": 5000, \"idle_timeout_ms\": 0},\n"
        "  \"populations\": [\n"
        "    {\"name\": \"a\",\n"
        "     \"auth\": {\"mode\": \"shared\", \"secret\": \"" SECRET "\"},\n"
        "     \"model\": {\"architecture\": \"cnn\", \"input_shape\": [3, 32, 32],\n"
        "               \"classes\": 100, \"init_seed\": 42},\n"
        "     \"plan\": {\"optimizer\": \"adam\", \"learning_rate\": 0.001, \"beta1\": 0.8,\n"
        "              \"beta2\": 0.99, \"eps\": 1e-6, \"weight_decay\": 0.0005,\n"
        "              \"prox_mu\": 0.01, \"epochs\": 5, \"batch_size\": 64,\n"
        "              \"collection\": \"images\", \"max_examples\": 1000,\n"
        "              \"min_examples\": 10, \"max_duration_ms\": 120000},\n"
        "     \"round\": {\"mode\": \"async\", \"goal_count\": 50, \"over_selection\": 2,\n"
        "               \"min_report_fraction\": 0.5, \"selection_window_ms\": 30000,\n"
        "               \"reporting_deadline_ms\": 300000, \"weighting\": \"uniform\",\n"
        "               \"eval_every\": 5, \"eval_goal_count\": 20, \"buffer_size\": 25,\n"
        "               \"max_staleness\": 8, \"staleness_exponent\": 1,\n"
        "               \"retry_min_ms\": 5000, \"retry_max_ms\": 60000,\n"
        "               \"population_estimate\": 100000, \"resume_grace_ms\": 0},\n"
        "     \"strategy\": {\"name\": \"fedyogi\", \"server_lr\": 0.01, \"beta1\": 0.85,\n"
        "                  \"beta2\": 0.95, \"tau\": 0.01}},\n"
        "    {\"name\": \"b\",\n"
        "     \"auth\": {\"mode\": \"hmac\", \"secret_file\": \"b.secret\"},\n"
        "     \"model\": {\"architecture\": \"logreg\", \"input_shape\": [20], \"classes\": 2},\n"
        "     \"plan\": {\"optimizer\": \"momentum\", \"learning_rate\": 1, \"momentum\": 0.5},\n"
        "     \"round\": {\"goal_count\": 3, \"pipelining\": false},\n"
        "     \"strategy\": {\"name\": \"fedavgm\", \"momentum\": 0.7}}\n"
        "  ]\n"
        "}\n";
    shoal_server_config *cfg = parse_ok(text);

    char want[512];
    cr_assert_str_eq(cfg->path, "shoal.json");
    cr_assert_str_eq(cfg->listen_address, "127.0.0.1");
    cr_assert_eq(cfg->port, 9443);
    cr_assert_eq(cfg->tls_enabled, 0);
    cr_assert_eq(cfg->tls_self_signed, 0);
    cr_assert_str_eq(cfg->tls_cert, "/etc/shoal/c.pem");
    snprintf(want, sizeof want, "%s/k.pem", dir);
    cr_assert_str_eq(cfg->tls_key, want);
    cr_assert_str_eq(cfg->state_path, "/var/lib/shoal/s.db");
    cr_assert_eq(cfg->keep_checkpoints, 3);
    cr_assert_eq(cfg->workers, 4);
    cr_assert_eq(cfg->log_level, SHOAL_LOG_DEBUG);
    cr_assert_eq(cfg->max_connections, 100);
    cr_assert_eq(cfg->max_message_bytes, 65536);
    cr_assert_eq(cfg->max_chunks, 7);
    cr_assert_eq(cfg->mailbox_capacity, 99);
    cr_assert_eq(cfg->handshake_timeout_ms, 5000);
    cr_assert_eq(cfg->idle_timeout_ms, 0);
    cr_assert_eq(cfg->population_count, 2);

    const shoal_population_config *a = &cfg->populations[0];
    cr_assert_str_eq(a->name, "a");
    cr_assert_eq(a->auth_mode, SHOAL_AUTH_SHARED);
    cr_assert_eq(a->secret_len, strlen(SECRET));
    cr_assert_eq(memcmp(a->secret, SECRET, a->secret_len), 0);
    cr_assert_eq(a->arch, SHOAL_MODEL_CNN);
    cr_assert_eq(a->input_rank, 3);
    cr_assert_eq(a->input_shape[0], 3);
    cr_assert_eq(a->input_shape[1], 32);
    cr_assert_eq(a->input_shape[2], 32);
    cr_assert_eq(a->input_shape[3], 0);
    cr_assert_eq(a->classes, 100);
    cr_assert_eq(a->init_seed, 42);
    cr_assert_eq(a->client_optim.kind, SHOAL_OPTIM_ADAM);
    cr_assert_float_eq(a->client_optim.lr, 0.001f, 0);
    cr_assert_float_eq(a->client_optim.beta1, 0.8f, 0);
    cr_assert_float_eq(a->client_optim.beta2, 0.99f, 0);
    cr_assert_float_eq(a->client_optim.eps, 1e-6f, 0);
    cr_assert_float_eq(a->client_optim.weight_decay, 0.0005f, 0);
    cr_assert_float_eq(a->client_optim.prox_mu, 0.01f, 0);
    cr_assert_float_eq(a->client_optim.alpha, 0.99f, 0); /* adam: untouched default */
    cr_assert_eq(a->epochs, 5);
    cr_assert_eq(a->batch_size, 64);
    cr_assert_str_eq(a->collection, "images");
    cr_assert_eq(a->max_examples, 1000);
    cr_assert_eq(a->min_examples, 10);
    cr_assert_eq(a->max_duration_ms, 120000);
    const shoal_round_config *r = &a->round;
    cr_assert_eq(r->mode, SHOAL_ROUND_ASYNC);
    cr_assert_eq(r->goal_count, 50);
    cr_assert_float_eq(r->over_selection, 2.0f, 0);
    cr_assert_float_eq(r->min_report_fraction, 0.5f, 0);
    cr_assert_eq(r->selection_window_ms, 30000);
    cr_assert_eq(r->reporting_deadline_ms, 300000);
    cr_assert_eq(r->weighting, SHOAL_WEIGHT_UNIFORM);
    cr_assert_eq(r->eval_every, 5);
    cr_assert_eq(r->eval_goal_count, 20);
    cr_assert_eq(r->buffer_size, 25);
    cr_assert_eq(r->max_staleness, 8);
    cr_assert_float_eq(r->staleness_exponent, 1.0f, 0);
    cr_assert_eq(r->retry_min_ms, 5000);
    cr_assert_eq(r->retry_max_ms, 60000);
    cr_assert_eq(r->population_estimate, 100000);
    cr_assert_eq(a->resume_grace_ms, 0);
    cr_assert_eq(r->server_optim.kind, SHOAL_SERVER_FEDYOGI);
    cr_assert_float_eq(r->server_optim.lr, 0.01f, 0);
    cr_assert_float_eq(r->server_optim.beta1, 0.85f, 0);
    cr_assert_float_eq(r->server_optim.beta2, 0.95f, 0);
    cr_assert_float_eq(r->server_optim.tau, 0.01f, 0);

    const shoal_population_config *b = &cfg->populations[1];
    cr_assert_str_eq(b->name, "b");
    cr_assert_eq(b->auth_mode, SHOAL_AUTH_HMAC);
    /* The file's trailing newline is not part of the secret. */
    cr_assert_eq(b->secret_len, strlen("b-population-secret-0123"));
    cr_assert_eq(memcmp(b->secret, "b-population-secret-0123", b->secret_len), 0);
    cr_assert_eq(b->arch, SHOAL_MODEL_LOGREG);
    cr_assert_eq(b->input_rank, 1);
    cr_assert_eq(b->input_shape[0], 20);
    cr_assert_eq(b->input_shape[1], 0);
    cr_assert_eq(b->classes, 2);
    cr_assert_eq(b->client_optim.kind, SHOAL_OPTIM_MOMENTUM);
    cr_assert_float_eq(b->client_optim.momentum, 0.5f, 0);
    cr_assert_eq(b->round.pipelining, 0);
    cr_assert_eq(b->round.server_optim.kind, SHOAL_SERVER_FEDAVGM);
    cr_assert_float_eq(b->round.server_optim.momentum, 0.7f, 0);
    cr_assert_float_eq(b->round.server_optim.lr, 1.0f, 0);

    cr_assert_eq(shoal_server_config_population(cfg, "b"), b);
    cr_assert_eq(shoal_server_config_population(cfg, "a"), a);
    cr_assert_null(shoal_server_config_population(cfg, "c"));
    cr_assert_null(shoal_server_config_population(cfg, NULL));
    cr_assert_null(shoal_server_config_population(NULL, "a"));
    shoal_server_config_free(cfg);
}

Test(config, defaults_are_filled)
{
    shoal_server_config *cfg = parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK));
    char want[512];
    cr_assert_str_eq(cfg->listen_address, "127.0.0.1");
    cr_assert_eq(cfg->port, 8443);
    cr_assert_eq(cfg->tls_enabled, 1);
    cr_assert_eq(cfg->tls_self_signed, 1);
    snprintf(want, sizeof want, "%s/shoal-state.db", dir);
    cr_assert_str_eq(cfg->state_path, want);
    snprintf(want, sizeof want, "%s/shoal-cert.pem", dir);
    cr_assert_str_eq(cfg->tls_cert, want);
    snprintf(want, sizeof want, "%s/shoal-key.pem", dir);
    cr_assert_str_eq(cfg->tls_key, want);
    cr_assert_eq(cfg->keep_checkpoints, 10);
    cr_assert_eq(cfg->workers, 0);
    cr_assert_eq(cfg->log_level, SHOAL_LOG_INFO);
    cr_assert_eq(cfg->max_connections, 20000);
    cr_assert_eq(cfg->max_message_bytes, 1u << 20);
    cr_assert_eq(cfg->max_chunks, 65536);
    cr_assert_eq(cfg->mailbox_capacity, 65536);
    cr_assert_eq(cfg->handshake_timeout_ms, 30000);
    cr_assert_eq(cfg->idle_timeout_ms, 120000);

    const shoal_population_config *p = &cfg->populations[0];
    cr_assert_eq(p->arch, SHOAL_MODEL_MLP);
    cr_assert_eq(p->input_rank, 3);
    cr_assert_eq(p->input_shape[0], 1);
    cr_assert_eq(p->input_shape[1], 28);
    cr_assert_eq(p->input_shape[2], 28);
    cr_assert_eq(p->classes, 10);
    cr_assert_eq(p->init_seed, 1);
    /* The plan: shoal_optim_defaults for sgd at the given rate. */
    const shoal_optim_config od = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.05f);
    cr_assert_eq(memcmp(&p->client_optim, &od, sizeof od), 0);
    cr_assert_eq(p->epochs, 1);
    cr_assert_eq(p->batch_size, 32);
    cr_assert_str_eq(p->collection, "fashion");
    cr_assert_eq(p->max_examples, 0);
    cr_assert_eq(p->min_examples, 1);
    cr_assert_eq(p->max_duration_ms, 600000);
    cr_assert_eq(p->resume_grace_ms, 30000);
    /* The round: shoal_round_defaults(sync, 10) with the fedavg strategy. */
    const shoal_round_config rd = shoal_round_defaults(SHOAL_ROUND_SYNC, 10);
    cr_assert_eq(memcmp(&p->round, &rd, sizeof rd), 0);
    shoal_server_config_free(cfg);
}

Test(config, strategy_defaults_follow_its_name)
{
    /* Adaptive strategies default to server_lr 0.003, not fedavg's 1. */
    const char *text = "{\"populations\": [{\"name\": \"p\", \"auth\": " AUTH_OK
                       ", \"model\": " MODEL_OK ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK
                       ", \"strategy\": {\"name\": \"fedadam\", \"tau\": 0.01}}]}";
    shoal_server_config *cfg = parse_ok(text);
    shoal_server_optim_config want = shoal_server_optim_defaults(SHOAL_SERVER_FEDADAM);
    want.tau = 0.01f;
    cr_assert_float_eq(cfg->populations[0].round.server_optim.lr, 0.003f, 0);
    cr_assert_eq(memcmp(&cfg->populations[0].round.server_optim, &want, sizeof want), 0);
    shoal_server_config_free(cfg);
}

Test(config, optimizer_defaults_follow_its_kind)
{
    shoal_server_config *cfg =
        parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK,
                        "{\"optimizer\": \"adagrad\", \"learning_rate\": 0.1}", ROUND_OK));
    const shoal_optim_config want = shoal_optim_defaults(SHOAL_OPTIM_ADAGRAD, 0.1f);
    cr_assert_float_eq(cfg->populations[0].client_optim.eps, 1e-10f, 0);
    cr_assert_eq(memcmp(&cfg->populations[0].client_optim, &want, sizeof want), 0);
    shoal_server_config_free(cfg);
}

Test(config, eval_goal_count_defaults_to_goal_count)
{
    shoal_server_config *cfg = parse_ok(
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 37, \"eval_every\": 2}"));
    cr_assert_eq(cfg->populations[0].round.eval_goal_count, 37);
    cr_assert_eq(cfg->populations[0].round.eval_every, 2);
    shoal_server_config_free(cfg);
}

Test(config, max_duration_defaults_to_a_shorter_deadline)
{
    shoal_server_config *cfg =
        parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK,
                        "{\"goal_count\": 5, \"reporting_deadline_ms\": 90000}"));
    cr_assert_eq(cfg->populations[0].max_duration_ms, 90000);
    shoal_server_config_free(cfg);
}

Test(config, comment_keys_are_ignored)
{
    const char *text =
        "{\"//\": \"top\", \"// listen\": [1, {\"x\": null}],\n"
        " \"listen\": {\"// port\": \"any\", \"port\": 0},\n"
        " \"populations\": [{\"//\": 1, \"name\": \"p\", \"auth\": " AUTH_OK
        ", \"model\": " MODEL_OK ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK "}]}";
    shoal_server_config *cfg = parse_ok(text);
    cr_assert_eq(cfg->port, 0);
    shoal_server_config_free(cfg);
}

Test(config, escaped_keys_match_their_fields)
{
    /* "\u0067oal_count" is goal_count to jansson, and to the locator. */
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"\\u0067oal_count\": 0}"),
                 SHOAL_EINVAL,
                 "shoal.json:8:36: populations[0].round.goal_count: 0 is out of range; "
                 "expected an integer from 1 to 1000000");
}

Test(config, columns_count_characters)
{
    /* "é" is two bytes and one column. */
    expect_error("{\"// \xc3\xa9\": 1, \"listen\": {\"port\": -1}, \"populations\": []}",
                 SHOAL_EINVAL,
                 "shoal.json:1:32: listen.port: -1 is out of range; expected an integer from 0 to "
                 "65535");
}

Test(config, locator_skips_strings_and_nesting)
{
    /* Brackets and escaped quotes inside strings, nested arrays and objects
     * before the value must not throw the position off. */
    expect_error("{\"// x\": [\"}\\\"]\", {\"a\": [1, {\"b\": \"\\\\\"}], \"c\": -1.5e3}], "
                 "\"listen\": {\"port\": 70000}, \"populations\": []}",
                 SHOAL_EINVAL,
                 "shoal.json:1:77: listen.port: 70000 is out of range; expected an integer from 0 "
                 "to 65535");
}

/* ---- syntax ---------------------------------------------------------------- */

Test(config, syntax_error_gives_janssons_position_and_text)
{
    expect_error("{\n  \"listen\": {\"port\": 1,}\n}\n", SHOAL_EFORMAT,
                 "shoal.json:2:24: string or '}' expected near '}'");
    expect_error("", SHOAL_EFORMAT, "shoal.json:1:1: '[' or '{' expected near end of file");
    /* jansson places an error at the last character of the token it read. */
    expect_error("{\"populations\": []} trailing", SHOAL_EFORMAT,
                 "shoal.json:1:28: end of file expected");
}

Test(config, syntax_error_does_not_quote_a_secret)
{
    /* An invalid escape inside the secret: jansson's excerpt would quote the
     * secret's first bytes back. */
    const char *text = "{\"populations\": [{\"auth\": {\"secret\": \"hunter2hunter2\\q\"}}]}";
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(parse(text, &cfg, &ei), SHOAL_EFORMAT);
    cr_assert_str_eq(ei.msg, "shoal.json:1:54: invalid escape");
    cr_assert_null(strstr(ei.msg, "hunter2"));
}

Test(config, duplicate_key_is_refused)
{
    expect_error("{\n  \"listen\": {\"port\": 1, \"port\": 2}\n}\n", SHOAL_EFORMAT,
                 "shoal.json:2:30: duplicate object key near '\"port\"'");
}

Test(config, top_level_must_be_an_object)
{
    expect_error("[1, 2]", SHOAL_EINVAL,
                 "shoal.json:1:1: the top level is an array; expected an object");
}

/* ---- fields ---------------------------------------------------------------- */

Test(config, unknown_key_is_refused_at_the_key)
{
    expect_error(
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 10, \"deadline\": 5}"),
        SHOAL_EINVAL,
        "shoal.json:8:35: populations[0].round.deadline: unknown field 'deadline'; known "
        "fields: " ROUND_KEYS);
    expect_error(
        "{\"listen\": {}, \"populaton\": []}", SHOAL_EINVAL,
        "shoal.json:1:16: populaton: unknown field 'populaton'; known fields: listen, tls, "
        "state, server, limits, http, populations");
}

Test(config, integer_field_refuses_a_real)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 1.5}"), SHOAL_EINVAL,
                 "shoal.json:8:31: populations[0].round.goal_count: 1.5 is not an integer; "
                 "expected an integer from 1 to 1000000");
}

Test(config, wrong_types_are_refused)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": \"10\"}"),
                 SHOAL_EINVAL,
                 "shoal.json:8:31: populations[0].round.goal_count: got a string; expected an "
                 "integer from 1 to 1000000");
    expect_error(
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 10, \"pipelining\": 1}"),
        SHOAL_EINVAL,
        "shoal.json:8:49: populations[0].round.pipelining: got an integer; expected true "
        "or false");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "{\"learning_rate\": \"fast\"}", ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:33: populations[0].plan.learning_rate: got a string; expected a "
                 "number above 0 and at most 100");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "[0.05]", ROUND_OK), SHOAL_EINVAL,
                 "shoal.json:7:15: populations[0].plan: got an array; expected an object");
    expect_error(CONFIG("7", AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK), SHOAL_EINVAL,
                 "shoal.json:4:15: populations[0].name: got an integer; expected a name of 1 to "
                 "128 characters of [A-Za-z0-9._-]");
    expect_error("{\"populations\": {}}", SHOAL_EINVAL,
                 "shoal.json:1:17: populations: got an object; expected an array of 1 to 64 "
                 "population objects");
    expect_error("{\"populations\": [null]}", SHOAL_EINVAL,
                 "shoal.json:1:18: populations[0]: got null; expected a population object");
}

Test(config, reals_accept_integers)
{
    shoal_server_config *cfg =
        parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "{\"learning_rate\": 1}", ROUND_OK));
    cr_assert_float_eq(cfg->populations[0].client_optim.lr, 1.0f, 0);
    shoal_server_config_free(cfg);
}

Test(config, out_of_range_is_refused)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 0}"), SHOAL_EINVAL,
                 "shoal.json:8:31: populations[0].round.goal_count: 0 is out of range; expected an "
                 "integer from 1 to 1000000");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "{\"learning_rate\": 0}", ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:33: populations[0].plan.learning_rate: 0 is out of range; expected "
                 "a number above 0 and at most 100");
    /* Positive in double, zero as the float the engine would use. */
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "{\"learning_rate\": 1e-50}", ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:33: populations[0].plan.learning_rate: 1e-50 is out of range; "
                 "expected a number above 0 and at most 100");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK,
                        "{\"goal_count\": 10, \"min_report_fraction\": 1.25}"),
                 SHOAL_EINVAL,
                 "shoal.json:8:58: populations[0].round.min_report_fraction: 1.25 is out of range; "
                 "expected a number above 0 and at most 1");
    expect_error("{\"limits\": {\"max_message_bytes\": 8191}, \"populations\": []}", SHOAL_EINVAL,
                 "shoal.json:1:34: limits.max_message_bytes: 8191 is out of range; expected an "
                 "integer from 8192 to 1073741824");
    expect_error(CONFIG(NAME_OK, AUTH_OK,
                        "{\"architecture\": \"mlp\", \"input_shape\": [1, 0, 28]}", PLAN_OK,
                        ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:6:59: populations[0].model.input_shape[1]: 0 is out of range; "
                 "expected an integer from 1 to 65536");
    expect_error("{\"populations\": []}", SHOAL_EINVAL,
                 "shoal.json:1:17: populations: 0 entries; expected an array of 1 to 64 population "
                 "objects");
}

Test(config, message_limit_matches_the_protocol)
{
    cr_assert_eq(SHOAL_CONFIG_MAX_MESSAGE_MIN, SHOAL_PROTOCOL_MAX_MESSAGE_MIN);
    cr_assert_eq(SHOAL_CONFIG_SECRET_MAX, SHOAL_PROTOCOL_TOKEN_MAX);
    cr_assert_eq(SHOAL_CONFIG_NAME_MAX, SHOAL_PROTOCOL_NAME_MAX);
}

Test(config, missing_required_field_points_at_its_object)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"mode\": \"sync\"}"), SHOAL_EINVAL,
                 "shoal.json:8:16: populations[0].round.goal_count: missing required field; "
                 "expected an integer from 1 to 1000000");
    expect_error("{\n  \"listen\": {}\n}", SHOAL_EINVAL,
                 "shoal.json:1:1: populations: missing required field; expected an array of 1 to "
                 "64 population objects");
    expect_error(
        "{\"populations\": [{\"name\": \"p\", \"auth\": " AUTH_OK ", \"model\": " MODEL_OK
        ", \"round\": " ROUND_OK "}]}",
        SHOAL_EINVAL,
        "shoal.json:1:18: populations[0].plan: missing required field; expected an object");
    expect_error(CONFIG(NAME_OK, "{\"secret\": \"" SECRET "\"}", MODEL_OK, PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:5:15: populations[0].auth.mode: missing required field; expected one "
                 "of: shared, hmac");
}

Test(config, bad_architecture_name_lists_the_known_ones)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, "{\"architecture\": \"resnet\"}", PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:6:33: populations[0].model.architecture: unknown architecture "
                 "'resnet'; expected one of: logreg, mlp, cnn, cnn2");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK,
                        "{\"optimizer\": \"lbfgs\", \"learning_rate\": 1}", ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:29: populations[0].plan.optimizer: unknown optimizer 'lbfgs'; "
                 "expected one of: sgd, momentum, nesterov, adagrad, rmsprop, adam");
}

Test(config, model_the_architecture_cannot_build_is_refused)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, "{\"architecture\": \"cnn\", \"input_shape\": [1, 8, 8]}",
                        PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:6:16: populations[0].model: cnn cannot be built for input_shape [1, "
                 "8, 8] with 10 classes; expected h and w of at least 16 for the convolutional "
                 "architectures (cnn, cnn2)");
    expect_error(CONFIG(NAME_OK, AUTH_OK, "{\"architecture\": \"mlp\", \"input_shape\": [28, 28]}",
                        PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:6:55: populations[0].model.input_shape: 2 dimensions; expected [n] or "
                 "[c, h, w], each an integer from 1 to 65536");
    expect_error(CONFIG(NAME_OK, AUTH_OK,
                        "{\"architecture\": \"logreg\", \"input_shape\": [2, 4096, 4096]}", PLAN_OK,
                        ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:6:58: populations[0].model.input_shape: 33554432 values per example "
                 "is too many; expected at most 16777216");
    expect_error(
        CONFIG(NAME_OK, AUTH_OK,
               "{\"architecture\": \"logreg\", \"input_shape\": [65536], \"classes\": 65536}",
               PLAN_OK, ROUND_OK),
        SHOAL_EINVAL,
        "shoal.json:6:16: populations[0].model: logreg on input_shape [65536] with 65536 "
        "classes has 4295032832 parameters; expected at most 268435456");
}

Test(config, round_combination_refused_by_the_engine_points_at_round)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK,
                        "{\"goal_count\": 10, \"retry_min_ms\": 60000, \"retry_max_ms\": 1000}"),
                 SHOAL_EINVAL,
                 "shoal.json:8:16: populations[0].round: retry window: need 0 < retry_min (60000 "
                 "ms) <= retry_max (1000 ms)");
}

Test(config, fields_the_choice_does_not_use_are_refused)
{
    expect_error(
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, "{\"learning_rate\": 0.1, \"momentum\": 0.9}", ROUND_OK),
        SHOAL_EINVAL,
        "shoal.json:7:38: populations[0].plan.momentum: not used by optimizer 'sgd'; "
        "remove it or choose momentum or nesterov");
    expect_error(
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 10, \"buffer_size\": 5}"),
        SHOAL_EINVAL,
        "shoal.json:8:35: populations[0].round.buffer_size: only used in async mode; "
        "remove it or set mode to \"async\"");
    const char *text =
        "{\"populations\": [{\"name\": \"p\", \"auth\": " AUTH_OK ", \"model\": " MODEL_OK
        ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK ", \"strategy\": {\"tau\": 0.1}}]}";
    expect_error(text, SHOAL_EINVAL,
                 "shoal.json:1:206: populations[0].strategy.tau: not used by strategy 'fedavg'; "
                 "remove it or choose fedadagrad, fedadam or fedyogi");
}

Test(config, plan_combinations_are_checked)
{
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK,
                        "{\"learning_rate\": 0.1, \"max_examples\": 5, \"min_examples\": 6}",
                        ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:73: populations[0].plan.min_examples: 6 is more than max_examples "
                 "(5); expected at most max_examples");
    expect_error(CONFIG(NAME_OK, AUTH_OK, MODEL_OK,
                        "{\"learning_rate\": 0.1, \"max_duration_ms\": 700000}", ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:7:57: populations[0].plan.max_duration_ms: 700000 is longer than "
                 "round.reporting_deadline_ms (600000); expected at most the reporting deadline");
}

Test(config, duplicate_population_names_are_refused)
{
    const char *pop = "{\"name\": \"p\", \"auth\": " AUTH_OK ", \"model\": " MODEL_OK
                      ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK "}";
    char text[2048];
    snprintf(text, sizeof text, "{\"populations\": [\n  %s,\n  %s\n]}", pop, pop);
    expect_error(text, SHOAL_EINVAL,
                 "shoal.json:3:12: populations[1].name: duplicate population name 'p' (also "
                 "populations[0]); expected distinct names");
}

Test(config, bad_population_name_is_refused)
{
    expect_error(CONFIG("\"fashion mnist\"", AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK), SHOAL_EINVAL,
                 "shoal.json:4:15: populations[0].name: 'fashion mnist' is not a valid name; "
                 "expected a name of 1 to 128 characters of [A-Za-z0-9._-]");
}

/* ---- secrets --------------------------------------------------------------- */

Test(config, short_secret_is_refused_without_quoting_it)
{
    expect_error(CONFIG(NAME_OK, "{\"mode\": \"shared\", \"secret\": \"tiny-pw\"}", MODEL_OK,
                        PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:5:44: populations[0].auth.secret: 7 bytes is too short; expected a "
                 "secret of 16 to 4096 bytes");
}

Test(config, secret_and_secret_file_are_exclusive)
{
    expect_error(CONFIG(NAME_OK,
                        "{\"mode\": \"hmac\", \"secret\": \"" SECRET "\", \"secret_file\": \"x\"}",
                        MODEL_OK, PLAN_OK, ROUND_OK),
                 SHOAL_EINVAL,
                 "shoal.json:5:15: populations[0].auth: both secret and secret_file are given; "
                 "expected exactly one of them");
    expect_error(CONFIG(NAME_OK, "{\"mode\": \"hmac\"}", MODEL_OK, PLAN_OK, ROUND_OK), SHOAL_EINVAL,
                 "shoal.json:5:15: populations[0].auth.secret: missing required field; expected a "
                 "secret of 16 to 4096 bytes, or secret_file naming a file that holds one");
}

Test(config, unreadable_secret_file_names_its_path)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(
        parse(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"keys/missing.key\"}",
                     MODEL_OK, PLAN_OK, ROUND_OK),
              &cfg, &ei),
        SHOAL_EIO);
    cr_assert_null(cfg);
    char want[600];
    snprintf(want, sizeof want,
             "shoal.json:5:47: populations[0].auth.secret_file: cannot read "
             "'%s/keys/missing.key': No such file or directory; expected a readable file holding "
             "a secret of 16 to 4096 bytes",
             dir);
    cr_assert_str_eq(ei.msg, want);
}

Test(config, secret_file_too_short_is_refused)
{
    write_file("short.key", "0123456789\n", 0600);
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(parse(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"short.key\"}",
                              MODEL_OK, PLAN_OK, ROUND_OK),
                       &cfg, &ei),
                 SHOAL_EINVAL);
    char want[600];
    snprintf(want, sizeof want,
             "shoal.json:5:47: populations[0].auth.secret_file: '%s/short.key' holds 10 bytes; "
             "expected a secret of 16 to 4096 bytes",
             dir);
    cr_assert_str_eq(ei.msg, want);
    cr_assert_null(strstr(ei.msg, "0123456789"));
}

Test(config, secret_file_strips_one_newline_only)
{
    write_file("crlf.key", "abcdefghijklmnop\r\n", 0600);
    write_file("two.key", "abcdefghijklmnop\n\n", 0600);
    shoal_server_config *cfg =
        parse_ok(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"crlf.key\"}", MODEL_OK,
                        PLAN_OK, ROUND_OK));
    cr_assert_eq(cfg->populations[0].secret_len, 16);
    shoal_server_config_free(cfg);
    cfg = parse_ok(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"two.key\"}", MODEL_OK,
                          PLAN_OK, ROUND_OK));
    cr_assert_eq(cfg->populations[0].secret_len, 17);
    cr_assert_eq(cfg->populations[0].secret[16], '\n');
    shoal_server_config_free(cfg);
}

static char logged[2048];

static void capture(void *ctx, shoal_log_level level, const char *component, const char *line)
{
    (void)ctx;
    size_t n = strlen(logged);
    snprintf(logged + n, sizeof logged - n, "%d %s %s\n", (int)level, component, line);
}

Test(config, readable_secret_file_is_warned_about)
{
    write_file("open.key", "abcdefghijklmnopq\n", 0644);
    write_file("closed.key", "abcdefghijklmnopq\n", 0600);
    logged[0] = 0;
    shoal_log_set_sink(capture, NULL);
    shoal_log_set_level(SHOAL_LOG_INFO);
    shoal_server_config *cfg =
        parse_ok(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"closed.key\"}", MODEL_OK,
                        PLAN_OK, ROUND_OK));
    shoal_server_config_free(cfg);
    cr_assert_str_eq(logged, "");
    cfg = parse_ok(CONFIG(NAME_OK, "{\"mode\": \"hmac\", \"secret_file\": \"open.key\"}", MODEL_OK,
                          PLAN_OK, ROUND_OK));
    shoal_server_config_free(cfg);
    char want[700];
    snprintf(want, sizeof want,
             "%d config shoal.json: fashion: secret_file '%s/open.key' is readable by group or "
             "others (mode 644); chmod 600 it\n",
             (int)SHOAL_LOG_WARN, dir);
    cr_assert_str_eq(logged, want);
    cr_assert_null(strstr(logged, "abcdefghijklmnopq"));
}

Test(config, secrets_never_reach_messages)
{
    /* Errors after the secret was read, and a secret of the wrong type. */
    const char *texts[] = {
        CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, "{\"goal_count\": 0}"),
        CONFIG(NAME_OK, "{\"mode\": \"shared\", \"secret\": \"" SECRET "\", \"x\": 1}", MODEL_OK,
               PLAN_OK, ROUND_OK),
        CONFIG(NAME_OK, "{\"mode\": \"shared\", \"secret\": [\"" SECRET "\"]}", MODEL_OK, PLAN_OK,
               ROUND_OK),
        CONFIG(NAME_OK, "{\"mode\": \"shared\", \"secret\": \"" SECRET "\" \"x\"}", MODEL_OK,
               PLAN_OK, ROUND_OK),
        CONFIG(NAME_OK, "{\"mode\": \"shared\", \"secret\": " SECRET "}", MODEL_OK, PLAN_OK,
               ROUND_OK),
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        shoal_server_config *cfg = NULL;
        shoal_errinfo ei = {{0}};
        cr_assert_neq(parse(texts[i], &cfg, &ei), SHOAL_OK);
        cr_assert_neq(ei.msg[0], 0);
        cr_assert_null(strstr(ei.msg, "0123456789"), "%zu: %s", i, ei.msg);
    }
}

/* A test allocator that remembers block sizes, so a block can be searched
 * for the secret when it is freed. */
typedef struct {
    size_t size;
    size_t pad;
} block_header;

static int freed_with_secret;

static void *tracking_malloc(void *ctx, size_t size)
{
    (void)ctx;
    block_header *h = malloc(sizeof *h + size + 1);
    if (!h)
        return NULL;
    h->size = size;
    return h + 1;
}

static void *tracking_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    block_header *h = ptr ? (block_header *)ptr - 1 : NULL;
    h = realloc(h, sizeof *h + size + 1);
    if (!h)
        return NULL;
    h->size = size;
    return h + 1;
}

static void tracking_free(void *ctx, void *ptr)
{
    (void)ctx;
    if (!ptr)
        return;
    block_header *h = (block_header *)ptr - 1;
    const size_t n = strlen(SECRET);
    for (size_t i = 0; i + n <= h->size; i++)
        if (memcmp((char *)ptr + i, SECRET, n) == 0)
            freed_with_secret++;
    free(h);
}

Test(config, secrets_are_wiped_before_memory_is_freed)
{
    write_file("file.key", SECRET "\n", 0600);
    char config_path[512];
    snprintf(config_path, sizeof config_path, "%s/shoal.json", dir);
    write_file("shoal.json",
               "{\"populations\": [{\"name\": \"a\", \"auth\": " AUTH_OK ", \"model\": " MODEL_OK
               ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK "},\n"
               "{\"name\": \"b\", \"auth\": {\"mode\": \"hmac\", \"secret_file\": \"file.key\"}, "
               "\"model\": " MODEL_OK ", \"plan\": " PLAN_OK ", \"round\": " ROUND_OK "}]}",
               0600);
    const shoal_allocator tracking = {tracking_malloc, tracking_realloc, tracking_free, NULL};
    shoal_alloc_set(&tracking);
    freed_with_secret = 0;
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_server_config_load(config_path, &cfg, &ei);
    int during_load = freed_with_secret;
    int still_held = cfg && cfg->populations[0].secret_len == strlen(SECRET) &&
                     memcmp(cfg->populations[0].secret, SECRET, strlen(SECRET)) == 0 &&
                     memcmp(cfg->populations[1].secret, SECRET, strlen(SECRET)) == 0;
    shoal_server_config_free(cfg);
    shoal_alloc_set(NULL);
    cr_assert_eq(err, SHOAL_OK, "%s", ei.msg);
    cr_assert(still_held);
    cr_assert_eq(during_load, 0, "%d blocks freed during the load still held the secret",
                 during_load);
    cr_assert_eq(freed_with_secret, 0, "%d blocks freed with the secret", freed_with_secret);
}

/* ---- paths and files ------------------------------------------------------- */

Test(config, relative_paths_resolve_against_the_config_directory)
{
    char sub[300], config_path[400], want[512];
    snprintf(sub, sizeof sub, "%s/etc", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    write_file("etc/p.key", SECRET "\n", 0600);
    write_file("etc/shoal.json",
               "{\"state\": {\"path\": \"data/s.db\"}, \"tls\": {\"key\": \"../tls/k.pem\"},\n"
               " \"populations\": [{\"name\": \"p\", \"auth\": {\"mode\": \"shared\", "
               "\"secret_file\": \"p.key\"}, \"model\": " MODEL_OK ", \"plan\": " PLAN_OK
               ", \"round\": " ROUND_OK "}]}",
               0600);
    snprintf(config_path, sizeof config_path, "%s/shoal.json", sub);
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_server_config_load(config_path, &cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(cfg->path, config_path);
    snprintf(want, sizeof want, "%s/data/s.db", sub);
    cr_assert_str_eq(cfg->state_path, want);
    /* The default cert sits beside the state database; a given key is
     * relative to the config file. */
    snprintf(want, sizeof want, "%s/data/shoal-cert.pem", sub);
    cr_assert_str_eq(cfg->tls_cert, want);
    snprintf(want, sizeof want, "%s/../tls/k.pem", sub);
    cr_assert_str_eq(cfg->tls_key, want);
    cr_assert_eq(cfg->populations[0].secret_len, strlen(SECRET));
    shoal_server_config_free(cfg);

    /* Without a base directory, paths stay relative to the current one. */
    const char *text = "{\"state\": {\"path\": \"s.db\"}, \"populations\": [{\"name\": \"p\", "
                       "\"auth\": " AUTH_OK ", \"model\": " MODEL_OK ", \"plan\": " PLAN_OK
                       ", \"round\": " ROUND_OK "}]}";
    cr_assert_eq(shoal_server_config_parse(text, strlen(text), NULL, NULL, &cfg, &ei), SHOAL_OK,
                 "%s", ei.msg);
    cr_assert_str_eq(cfg->path, "config");
    cr_assert_str_eq(cfg->state_path, "s.db");
    cr_assert_str_eq(cfg->tls_cert, "shoal-cert.pem");
    shoal_server_config_free(cfg);
}

Test(config, load_errors_name_the_file)
{
    char path[400];
    snprintf(path, sizeof path, "%s/absent.json", dir);
    shoal_server_config *cfg = (shoal_server_config *)1;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_server_config_load(path, &cfg, &ei), SHOAL_EIO);
    cr_assert_null(cfg);
    char want[600];
    snprintf(want, sizeof want, "%s: cannot open the config file: No such file or directory", path);
    cr_assert_str_eq(ei.msg, want);

    write_file("bad.json", "{\n  \"populations\": [1,\n}", 0600);
    snprintf(path, sizeof path, "%s/bad.json", dir);
    cr_assert_eq(shoal_server_config_load(path, &cfg, &ei), SHOAL_EFORMAT);
    snprintf(want, sizeof want, "%s:3:1: unexpected token near '}'", path);
    cr_assert_str_eq(ei.msg, want);

    cr_assert_eq(shoal_server_config_load(dir, &cfg, &ei), SHOAL_EIO);
    snprintf(want, sizeof want, "%s: the config file is not a regular file", dir);
    cr_assert_str_eq(ei.msg, want);
}

Test(config, bad_arguments_are_refused)
{
    shoal_server_config *cfg = (shoal_server_config *)1;
    cr_assert_eq(shoal_server_config_parse(NULL, 5, "x", NULL, &cfg, NULL), SHOAL_EINVAL);
    cr_assert_null(cfg);
    cr_assert_eq(shoal_server_config_parse("{}", 2, "x", NULL, NULL, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_server_config_load(NULL, &cfg, NULL), SHOAL_EINVAL);
    shoal_server_config_free(NULL);
}

Test(config, text_need_not_be_nul_terminated)
{
    const char *text = CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK);
    size_t len = strlen(text);
    char *copy = malloc(len);
    cr_assert_not_null(copy);
    memcpy(copy, text, len);
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_server_config_parse(copy, len, "shoal.json", dir, &cfg, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_server_config_free(cfg);
    free(copy);
}

/* ---- the example ----------------------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    cr_assert_geq(size, 0);
    rewind(f);
    char *buf = malloc((size_t)size + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    buf[size] = 0;
    *len = (size_t)size;
    return buf;
}

Test(config, deploy_example_loads)
{
    /* The example reads its secret from a file beside it; give it one. */
    write_file("fashion-mnist.secret", "c2hvYWwtZXhhbXBsZS1zZWNyZXQtMzItYnl0ZXM=\n", 0600);
    size_t len;
    char *text = slurp(SHOAL_SOURCE_ROOT "/deploy/config/shoal.json", &len);
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_server_config_parse(text, len, "deploy/config/shoal.json", dir, &cfg, &ei),
                 SHOAL_OK, "%s", ei.msg);
    free(text);
    cr_assert_eq(cfg->population_count, 1);
    const shoal_population_config *p = shoal_server_config_population(cfg, "fashion-mnist");
    cr_assert_not_null(p);
    cr_assert_eq(p->arch, SHOAL_MODEL_MLP);
    cr_assert_eq(p->client_optim.kind, SHOAL_OPTIM_SGD);
    cr_assert_float_eq(p->client_optim.lr, 0.05f, 0);
    cr_assert_eq(p->epochs, 1);
    cr_assert_eq(p->batch_size, 32);
    cr_assert_eq(p->round.mode, SHOAL_ROUND_SYNC);
    cr_assert_eq(p->round.goal_count, 10);
    cr_assert_eq(p->round.server_optim.kind, SHOAL_SERVER_FEDAVG);
    cr_assert_eq(p->auth_mode, SHOAL_AUTH_SHARED);
    cr_assert_eq(p->secret_len, strlen("c2hvYWwtZXhhbXBsZS1zZWNyZXQtMzItYnl0ZXM="));
    /* It spells out the defaults: every value equals what an empty section
     * would give. */
    const shoal_round_config rd = shoal_round_defaults(SHOAL_ROUND_SYNC, 10);
    cr_assert_eq(memcmp(&p->round, &rd, sizeof rd), 0);
    const shoal_optim_config od = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.05f);
    cr_assert_eq(memcmp(&p->client_optim, &od, sizeof od), 0);
    cr_assert_eq(cfg->port, 8443);
    cr_assert_eq(cfg->max_message_bytes, 1u << 20);
    shoal_server_config_free(cfg);
}

/* ---- allocation failures ----------------------------------------------------- */

/* How many allocations jansson's own parse of `text` makes (they go through
 * shoal_malloc too). */
static long jansson_parse_allocations(const char *text)
{
    shoal_failalloc_install(LONG_MAX);
    json_error_t je;
    json_t *root = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &je);
    const long allocations = shoal_failalloc_attempts();
    json_decref(root);
    const long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_not_null(root, "%s", je.text);
    cr_assert_eq(live, 0);
    return allocations;
}

/* Failing each allocation of a full parse in turn must give SHOAL_ENOMEM,
 * no result and no leak. The sweep starts after json_loadb's own
 * allocations: jansson 2.14 does not survive a failed allocation while its
 * lexer grows a token buffer (assert(c == d) in lex_unget_unsave; upstream
 * akheron/jansson#362), so those cannot be injected. */
static void sweep(const char *text)
{
    const long first = jansson_parse_allocations(text);
    shoal_failalloc_install(LONG_MAX);
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {{0}};
    shoal_err err = parse(text, &cfg, &ei);
    shoal_server_config_free(cfg);
    const long allocations = shoal_failalloc_attempts();
    const long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(live, 0);
    cr_assert_gt(first, 10);
    cr_assert_gt(allocations, first + 10);

    for (long k = first; k < allocations; k++) {
        shoal_failalloc_install(k);
        cfg = (shoal_server_config *)1;
        ei.msg[0] = 0;
        err = parse(text, &cfg, &ei);
        const long left = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(err, SHOAL_ENOMEM, "allocation %ld of %ld: %s: %s", k, allocations,
                     shoal_err_name(err), ei.msg);
        cr_assert_null(cfg);
        cr_assert_eq(left, 0, "allocation %ld: %ld blocks leaked", k, left);
        cr_assert_str_eq(ei.msg, "shoal.json: out of memory");
    }
}

Test(config, every_allocation_failure_is_enomem)
{
    write_file("p.key", SECRET "\n", 0600);
    sweep("{\"listen\": {\"address\": \"::1\"}, \"tls\": {\"cert\": \"c.pem\"},\n"
          " \"populations\": [{\"name\": \"a\", \"auth\": " AUTH_OK ", \"model\": " MODEL_OK
          ", \"plan\": {\"learning_rate\": 0.1, \"collection\": \"c\"}, \"round\": " ROUND_OK
          "},\n {\"name\": \"b\", \"auth\": {\"mode\": \"hmac\", \"secret_file\": \"p.key\"}, "
          "\"model\": {\"architecture\": \"cnn\"}, \"plan\": " PLAN_OK ", \"round\": " ROUND_OK
          ", \"strategy\": {\"name\": \"fedadam\"}}]}");
}

/* ---- secure_aggregation ---------------------------------------------------- */

/* The round, then "secure_aggregation" on line 9: its value starts at
 * column 29. */
#define SECAGG(ROUND, SA)                                                                          \
    CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND ",\n      \"secure_aggregation\": " SA)

Test(config, secure_aggregation_is_read_and_its_graph_chosen)
{
    shoal_server_config *cfg = parse_ok(
        SECAGG(ROUND_OK, "{\"mode\": \"secagg_plus\", \"group_size\": 200, \"clip\": 0.5, "
                         "\"bits\": 40, \"max_weight\": 600, \"dropout_rate\": 0.1, "
                         "\"corrupt_rate\": 0.05, \"phase_timeout_ms\": 5000, \"min_groups\": 2}"));
    const shoal_secagg_population_config *s = &cfg->populations[0].secagg;
    cr_assert(s->enabled && s->plus);
    cr_assert_eq(s->group_size, 200);
    cr_assert_float_eq(s->clip, 0.5, 1e-9);
    cr_assert_eq(s->bits, 40);
    cr_assert_eq(s->max_weight, 600);
    cr_assert_eq(s->phase_timeout_ms, 5000);
    cr_assert_eq(s->min_groups, 2);
    /* The same choice as the secure-agg library's, for the same rates. */
    shoal_secagg_plus_params pp;
    cr_assert_eq(shoal_secagg_plus_choose(200, 0.1f, 0.05f, SHOAL_SECAGG_SEMI_HONEST, &pp, NULL),
                 SHOAL_OK);
    cr_assert_eq(s->degree, pp.degree);
    cr_assert_eq(s->threshold, pp.threshold);
    cr_assert_lt(s->degree, 199);
    shoal_server_config_free(cfg);
}

Test(config, secure_aggregation_defaults_and_the_complete_graph)
{
    shoal_server_config *cfg = parse_ok(SECAGG(ROUND_OK, "{\"mode\": \"secagg\", \"clip\": 1}"));
    const shoal_secagg_population_config *s = &cfg->populations[0].secagg;
    cr_assert(s->enabled && !s->plus);
    cr_assert_eq(s->group_size, 100);
    cr_assert_eq(s->bits, 32);
    cr_assert_eq(s->max_weight, 10000);
    cr_assert_eq(s->phase_timeout_ms, 30000);
    cr_assert_eq(s->degree, 99);
    cr_assert_eq(s->threshold, 51);
    shoal_server_config_free(cfg);
    cfg = parse_ok(CONFIG(NAME_OK, AUTH_OK, MODEL_OK, PLAN_OK, ROUND_OK));
    cr_assert_not(cfg->populations[0].secagg.enabled);
    shoal_server_config_free(cfg);
}

Test(config, secure_aggregation_refusals_name_the_field)
{
    expect_error(SECAGG(ROUND_OK, "{\"clip\": 1}"), SHOAL_EINVAL,
                 "shoal.json:9:29: populations[0].secure_aggregation.mode: missing required "
                 "field; expected one of: secagg, secagg_plus");
    expect_error(SECAGG(ROUND_OK, "{\"mode\": \"secagg\"}"), SHOAL_EINVAL,
                 "shoal.json:9:29: populations[0].secure_aggregation.clip: missing required "
                 "field; expected a number above 0 and at most 1e+06");
    expect_error(SECAGG(ROUND_OK, "{\"mode\": \"secagg\", \"clip\": 1, \"group_size\": 2}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:73: populations[0].secure_aggregation.group_size: 2 is out of "
                 "range; expected an integer from 3 to 100000");
    expect_error(SECAGG(ROUND_OK, "{\"mode\": \"secagg\", \"clip\": 1, \"dropout_rate\": 0.1}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:59: populations[0].secure_aggregation.dropout_rate: only "
                 "secagg_plus uses it (secagg connects every pair of devices)");
    expect_error(
        SECAGG("{\"goal_count\": 10, \"mode\": \"async\"}", "{\"mode\": \"secagg\", \"clip\": 1}"),
        SHOAL_EINVAL,
        "shoal.json:9:29: populations[0].secure_aggregation: secure aggregation needs "
        "round.mode \"sync\"; a group sums the updates of one round");
    expect_error(SECAGG(ROUND_OK, "{\"mode\": \"secagg\", \"clip\": 1, \"bits\": 16, "
                                  "\"group_size\": 1000}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:29: populations[0].secure_aggregation: secure aggregation: 1000 "
                 "contributors of weight up to 10000 can sum to 10000000, which does not fit a "
                 "16-bit ring; use more bits or fewer contributors");
    expect_error(SECAGG(ROUND_OK, "{\"mode\": \"secagg_plus\", \"clip\": 1, \"group_size\": 10, "
                                  "\"dropout_rate\": 0.6, \"corrupt_rate\": 0.35}"),
                 SHOAL_EINVAL,
                 "shoal.json:9:29: populations[0].secure_aggregation: no SecAgg+ graph for "
                 "group_size 10 at dropout_rate 0.6 and corrupt_rate 0.35 (SecAgg+ parameters: "
                 "corrupt_rate + dropout_rate is 0.95, above 0.9: no graph sparser than the "
                 "complete one protects that many; lower the rates); lower the rates, raise "
                 "group_size, or use mode \"secagg\"");
}
