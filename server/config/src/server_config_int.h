/* shoal-config internals shared by its files: server_config.c (the file,
 * the top-level sections), config_population.c (a population's name,
 * auth and model), config_plan.c (its plan, round and strategy). */
#ifndef SHOAL_SERVER_CONFIG_INT_H
#define SHOAL_SERVER_CONFIG_INT_H

#include <jansson.h>

#include "config_fields_int.h"
#include "shoal/server_config.h"
#include "shoal/wire.h"

#define LOG_COMPONENT "config"

/* Defaults and bounds of the schema (docs/operations.md). */
enum {
    PORT_DEFAULT = 8443,
    HTTP_PORT_DEFAULT = 9464,
    KEEP_CHECKPOINTS_DEFAULT = 10,
    MAX_CONNECTIONS_DEFAULT = 20000,
    MAX_MESSAGE_DEFAULT = SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT,
    MAX_CHUNKS_DEFAULT = 65536,
    MAILBOX_DEFAULT = 65536,
    HANDSHAKE_TIMEOUT_DEFAULT = 30000,
    TICKET_ROTATION_DEFAULT = 3600000,
    IDLE_TIMEOUT_DEFAULT = 120000,
    AUTH_FAILURES_DEFAULT = 10,
    REFUSAL_LOG_DEFAULT = 10,
    CONCURRENT_UPLOADS_DEFAULT = 128,
    EPOCHS_DEFAULT = 1,
    BATCH_DEFAULT = 32,
    MAX_DURATION_DEFAULT = 600000,
    RESUME_GRACE_DEFAULT = 30000,
    CLASSES_DEFAULT = 10,
    DIM_MAX = 65536,
    GOAL_MAX = 1000000,
    DAY_MS = 86400000,
    WEEK_MS = 7 * DAY_MS,
};

/* "populations": an array of population objects, into cfg->populations. */
shoal_err shoal_cfg_parse_populations(cfg_ctx *c, const json_t *root, shoal_server_config *cfg);

/* A population's "plan" (without max_duration_ms) and "round" (with its
 * "strategy"), into p. */
shoal_err shoal_cfg_parse_plan(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
shoal_err shoal_cfg_parse_round(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
/* plan.max_duration_ms, read after the round for its deadline. */
shoal_err shoal_cfg_parse_duration(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
/* "secure_aggregation", read last: it checks itself against the plan and
 * the round (config_secagg.c). */
shoal_err shoal_cfg_parse_secagg(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
/* "update_bound" and "aggregation" (config_aggregation.c), read after
 * "secure_aggregation", which they are checked against. */
shoal_err shoal_cfg_parse_update_bound(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
shoal_err shoal_cfg_parse_aggregation(cfg_ctx *c, const json_t *pop, shoal_population_config *p);
/* "differential_privacy" (config_dp.c), read last: it sets and checks the
 * update bound, the weighting, pipelining and secure aggregation's
 * max_weight. */
shoal_err shoal_cfg_parse_dp(cfg_ctx *c, const json_t *pop, shoal_population_config *p);

#endif
