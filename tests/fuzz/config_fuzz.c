/* Fuzz target for shoal_server_config_parse (server/config/src/).
 *
 * Any byte string is either refused with SHOAL_EFORMAT, SHOAL_EINVAL,
 * SHOAL_EIO or SHOAL_ENOMEM, no config and a message that starts with the
 * file name ("fuzz.json:"); or accepted as a config whose every population
 * passes the checks the server relies on: a valid, distinct name found by
 * shoal_server_config_population, a secret of 16..4096 bytes, a model
 * shoal_model_new builds, client and round configs their own checks accept,
 * and a plan duration within the reporting deadline. Without an errinfo the
 * verdict is the same. For inputs up to 2 KiB, failing each allocation the
 * loader makes after jansson's parse in turn must give SHOAL_ENOMEM and
 * leave nothing allocated (jansson 2.14 itself aborts on a failed allocation
 * inside its lexer, akheron/jansson#362, so its own allocations are not
 * failed). A violated invariant aborts.
 *
 * Relative paths resolve under a directory that does not exist, so a
 * secret_file the fuzzer writes is refused with SHOAL_EIO rather than read
 * from wherever the fuzzer runs. */
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/log.h"
#include "shoal/server_config.h"

#define INPUT_NAME "fuzz.json"
#define BASE_DIR   "/nonexistent/shoal-config-fuzz"
/* Above this the allocation sweep (one parse per allocation) costs more
 * than the coverage it adds. */
#define SWEEP_MAX_INPUT 2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static shoal_err parse(const uint8_t *data, size_t size, shoal_server_config **out,
                       shoal_errinfo *ei)
{
    return shoal_server_config_parse((const char *)data, size, INPUT_NAME, BASE_DIR, out, ei);
}

static void check_refusal(shoal_err err, const shoal_server_config *cfg, const shoal_errinfo *ei)
{
    if (err != SHOAL_EFORMAT && err != SHOAL_EINVAL && err != SHOAL_EIO && err != SHOAL_ENOMEM)
        abort();
    if (cfg != NULL)
        abort();
    if (strncmp(ei->msg, INPUT_NAME ":", strlen(INPUT_NAME ":")) != 0)
        abort();
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > SHOAL_CONFIG_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void check_population(const shoal_server_config *cfg, const shoal_population_config *p)
{
    if (!p->name || !name_ok(p->name) || shoal_server_config_population(cfg, p->name) != p)
        abort();
    if (p->auth_mode != SHOAL_AUTH_SHARED && p->auth_mode != SHOAL_AUTH_HMAC)
        abort();
    if (!p->secret || p->secret_len < SHOAL_CONFIG_SECRET_MIN ||
        p->secret_len > SHOAL_CONFIG_SECRET_MAX)
        abort();
    if (p->input_rank != 1 && p->input_rank != 3)
        abort();
    shoal_shape shape = {p->input_shape[0], p->input_rank == 3 ? p->input_shape[1] : 1,
                         p->input_rank == 3 ? p->input_shape[2] : 1};
    shoal_model *model = NULL;
    shoal_err made = shoal_model_new(p->arch, shape, p->classes, &model);
    if (made != SHOAL_OK || shoal_model_param_count(model) > SHOAL_CONFIG_PARAM_COUNT_MAX)
        abort();
    shoal_model_free(model);
    if (shoal_optim_config_check(&p->client_optim, NULL) != SHOAL_OK)
        abort();
    if (shoal_round_config_check(&p->round, NULL) != SHOAL_OK)
        abort();
    if (p->epochs < 1 || p->epochs > 1000 || p->batch_size < 1 || p->batch_size > 65536)
        abort();
    if (!p->collection || strlen(p->collection) < 1 || strlen(p->collection) > 128)
        abort();
    if (p->min_examples < 1 || (p->max_examples && p->min_examples > p->max_examples))
        abort();
    if (p->max_duration_ms < 1 || p->max_duration_ms > (uint64_t)p->round.reporting_deadline_ms)
        abort();
    if (p->resume_grace_ms < 0)
        abort();
}

static void check_accepted(const shoal_server_config *cfg)
{
    if (!cfg || !cfg->path || strcmp(cfg->path, INPUT_NAME) != 0)
        abort();
    if (!cfg->listen_address || !cfg->state_path || !cfg->tls_cert || !cfg->tls_key)
        abort();
    if (cfg->population_count < 1 || cfg->population_count > SHOAL_CONFIG_POPULATIONS_MAX)
        abort();
    if (cfg->max_message_bytes < SHOAL_CONFIG_MAX_MESSAGE_MIN)
        abort();
    for (size_t i = 0; i < cfg->population_count; i++) {
        check_population(cfg, &cfg->populations[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->populations[i].name, cfg->populations[j].name) == 0)
                abort();
    }
}

static void check_allocation_failures(const uint8_t *data, size_t size, shoal_err verdict)
{
    /* jansson's allocations come first and go through the same hook. */
    shoal_failalloc_install(LONG_MAX);
    json_error_t je;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    const long first = shoal_failalloc_attempts();
    json_decref(root);
    shoal_failalloc_uninstall();
    if (!root)
        return; /* a syntax error: nothing after jansson's parse to fail */

    shoal_failalloc_install(LONG_MAX);
    shoal_server_config *cfg = NULL;
    shoal_err counted = parse(data, size, &cfg, NULL);
    shoal_server_config_free(cfg);
    const long allocations = shoal_failalloc_attempts();
    const long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    if (counted != verdict || live != 0)
        abort();
    for (long successes = first; successes < allocations; successes++) {
        shoal_failalloc_install(successes);
        shoal_errinfo ei;
        ei.msg[0] = 0;
        cfg = NULL;
        shoal_err err = parse(data, size, &cfg, &ei);
        const long left = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        if (err != SHOAL_ENOMEM || left != 0)
            abort();
        check_refusal(err, cfg, &ei);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A secret_file readable by others is only a warning; keep it quiet. */
    shoal_log_set_level(SHOAL_LOG_ERROR);

    shoal_errinfo ei;
    ei.msg[0] = 0;
    shoal_server_config *cfg = (shoal_server_config *)&ei; /* must be reset */
    shoal_err err = parse(data, size, &cfg, &ei);
    if (err != SHOAL_OK)
        check_refusal(err, cfg, &ei);
    else
        check_accepted(cfg);

    shoal_server_config *again = NULL;
    shoal_err err_again = parse(data, size, &again, NULL);
    if (err_again != err || (err == SHOAL_OK) != (again != NULL))
        abort();
    shoal_server_config_free(again);
    shoal_server_config_free(err == SHOAL_OK ? cfg : NULL);

    if (size <= SWEEP_MAX_INPUT)
        check_allocation_failures(data, size, err);
    return 0;
}
