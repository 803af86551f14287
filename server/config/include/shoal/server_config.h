/* Shoal: shoal-server's configuration, one JSON file.
 *
 * The comments below give every field with its range and default;
 * deploy/config/shoal.json is a complete example. shoal_server_config_load
 * reads the file with jansson (duplicate keys refused, nothing allowed after
 * the top-level object), checks every field and every combination, and fills
 * defaults. Unknown keys are refused too (a misspelt "deadline_ms" must not
 * silently become the default); keys that start with "//" are comments and
 * are ignored whatever their value, so a file can document itself:
 *   "// goal_count": "reports that close a round"
 *
 * Every error names the file, the line and column of the offending value
 * (of the key, for an unknown field or one the chosen optimizer, strategy
 * or round mode does not use; of the enclosing object, for a missing field
 * or a bad combination of fields) and its JSON path, says what was wrong and
 * what is expected, e.g.
 *
 *   shoal.json:14:22: populations[0].round.goal_count: 0 is out of range;
 *   expected an integer from 1 to 1000000
 *
 * Lines and columns are 1-based; columns count characters. A JSON syntax
 * error reads "shoal.json:3:9: <jansson's message>" at jansson's position
 * (the last character of the token it could not take), without jansson's
 * "near '...'" excerpt when that could quote a value.
 *
 * Types are strict: a field documented as an integer must be a JSON integer
 * (1.5 and "3" are refused), a number may be written as an integer or a
 * real, a boolean is true or false. Paths are relative to the config file's
 * directory unless absolute.
 *
 * Secrets (population secrets, the TLS key) are never part of a message.
 * The config holds secrets in shoal_malloc memory wiped on free; the loader
 * wipes the file's text and jansson's string values before freeing them
 * (jansson's lexer frees its scratch token buffer unwiped, and that buffer
 * may still hold a fragment of the last long token).
 *
 * jansson's allocator is routed through shoal_malloc/shoal_free
 * (json_set_alloc_funcs, at program start-up) in every program that links
 * this library. jansson 2.14 aborts if an allocation fails while its lexer
 * grows a token buffer (akheron/jansson#362); every other allocation
 * failure is SHOAL_ENOMEM.
 *
 * Plain data: the config is built once at start-up and then read-only, so
 * any thread may read it. */
#ifndef SHOAL_SERVER_CONFIG_H
#define SHOAL_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/auth.h"
#include "shoal/err.h"
#include "shoal/log.h"
#include "shoal/model.h"
#include "shoal/optim.h"
#include "shoal/robust.h"
#include "shoal/round.h"
#include "shoal/wire.h"

/* Limits the loader enforces (see the fields below). */
#define SHOAL_CONFIG_POPULATIONS_MAX     64u
#define SHOAL_CONFIG_NAME_MAX            128u       /* population name, collection */
#define SHOAL_CONFIG_SECRET_MIN          16u        /* bytes */
#define SHOAL_CONFIG_SECRET_MAX          4096u      /* bytes: the protocol's auth_token limit */
#define SHOAL_CONFIG_INPUT_SIZE_MAX      16777216u  /* c * h * w of one example */
#define SHOAL_CONFIG_PARAM_COUNT_MAX     268435456u /* 1 GiB of float parameters */
#define SHOAL_CONFIG_MAX_MESSAGE_MIN     SHOAL_PROTOCOL_MAX_MESSAGE_MIN
#define SHOAL_CONFIG_MAX_MESSAGE_LIMIT   1073741824u
#define SHOAL_CONFIG_HTTP_TOKEN_EXPECTED "16 to 1024 printable ASCII characters without spaces"

/* "secure_aggregation" (optional; docs/operations.md): training updates
 * are summed with SecAgg / SecAgg+ in groups of group_size devices, one
 * group per aggregator (docs/secure-aggregation.md).
 *   "mode":             "secagg"|"secagg_plus" (required)
 *   "group_size":       3..100000 (default 100)
 *   "clip":             (0, 1000000]: each update element is clipped to
 *                       [-clip, clip] before encoding (required)
 *   "bits":             16..64: the ring Z_(2^bits) (default 32)
 *   "max_weight":       1..4294967295: the largest weight (example count)
 *                       one device contributes (default plan.max_examples,
 *                       or 10000 when that is 0)
 *   "dropout_rate":     [0, 1), secagg_plus only (default 0.3)
 *   "corrupt_rate":     [0, 1), secagg_plus only (default 0.05)
 *   "phase_timeout_ms": 1..3600000 (default 30000): how long each phase
 *                       after the first waits for the group's answers
 *   "min_groups":       1..100000 (default 1): fewer groups unmasked and
 *                       the round is abandoned
 * Needs round.mode "sync". degree and threshold are computed: SecAgg+ by
 * shoal_secagg_plus_choose for the rates (semi-honest server); SecAgg the
 * complete graph with an honest-majority threshold n / 2 + 1. The fixed-
 * point plan (shoal_secagg_fixed_plan for group_size, bits, clip,
 * max_weight) must leave precision. */
typedef struct shoal_secagg_population_config {
    int enabled;
    int plus; /* 1: secagg_plus */
    uint32_t group_size;
    double clip;
    uint32_t bits;
    uint32_t max_weight;
    double dropout_rate, corrupt_rate;
    uint64_t phase_timeout_ms;
    uint32_t min_groups;
    uint32_t degree, threshold; /* computed */
} shoal_secagg_population_config;

/* "update_bound" (optional; docs/operations.md): the largest L2 norm of
 * one device's update, over the whole delta. Announced in the plan
 * (Plan.update_bound) so that devices clip first.
 *   "l2_norm": (0, 1e9] (required): S
 *   "action":  "clip"|"refuse" (default "clip"): what the server does with
 *              a plain upload above S: scale it by S / norm, or refuse it
 *              with REASON_NORM_EXCEEDED
 * With secure aggregation the server never sees one update: the devices
 * clip to S, and the fixed-point clip bounds every element. */
typedef struct shoal_update_bound_config {
    int enabled;
    double l2_norm;
    int refuse; /* 1: "refuse"; 0: "clip" */
} shoal_update_bound_config;

/* The largest number of floats (max reports x parameters) a median or
 * trimmed-mean population may keep for one round: 256 Mi floats, 1 GiB. */
#define SHOAL_CONFIG_ROBUST_FLOATS_MAX 268435456ull

/* "aggregation" (optional; docs/operations.md): how a synchronous round
 * combines its updates.
 *   "rule":          "mean"|"median"|"trimmed_mean"|"norm_bounded_mean"
 *                    (default "mean")
 *   "trim_fraction": [0, 0.5), trimmed_mean only (default 0.1): beta, the
 *                    share dropped at each end of every coordinate
 *   "l2_norm":       (0, 1e9], norm_bounded_mean only (required there):
 *                    each update is clipped to it before the weighted mean
 * median and trimmed_mean need every update of the round at once: they
 * are refused with secure aggregation, with round.mode "async", and when
 * ceil(goal_count x over_selection) x the model's parameters exceeds
 * SHOAL_CONFIG_ROBUST_FLOATS_MAX. */
typedef struct shoal_aggregation_config {
    shoal_robust_kind rule;
    double trim_fraction;
    double l2_norm;
} shoal_aggregation_config;

/* "differential_privacy" (optional; docs/privacy.md, docs/operations.md):
 * DP-FedAvg (McMahan et al. 2018, fixed denominator) or DP-FTRL (Kairouz
 * et al. 2021, tree aggregation) on the server.
 *   "mechanism":        "fedavg" | "ftrl" (default "fedavg")
 *   "noise_multiplier": (0, 1e6] (required): z; the noise added to each
 *                       round's sum (DP-FTRL: each tree node) has
 *                       standard deviation z x clip
 *   "clip":             (0, 1e9] (required): S, the L2 bound of one
 *                       device's update
 *   "delta":            (0, 1) (default 1e-5): the delta epsilon is
 *                       reported at
 *   "budget_epsilon":   (0, 1e6] (optional): no round starts that would
 *                       take epsilon above it
 *   "expected_reports": (0, 1e9] (default round.goal_count): the
 *                       denominator of the noisy mean, q x N
 *   "restart_every":    0..2^31, ftrl only (default 0: one tree): rounds
 *                       per tree; each tree's rho adds to the total
 *   "max_participations": 1..1000000, ftrl only (default 1): the most
 *                       rounds one device reports in within one tree, k in
 *                       rho = k^2 x height / (2 z^2). The server does not
 *                       enforce it (docs/privacy.md)
 *   "adaptive_clipping": {...}, fedavg only (optional): the clip follows
 *                       a quantile of the update norms (Andrew et al.
 *                       2021); "clip" is then the first round's:
 *     "target_quantile": (0, 1) (required): gamma
 *     "learning_rate":   (0, 10] (default 0.2): eta, the geometric rate
 *     "count_noise":     (0, 1e6] (default expected_reports / 20): sigma_b,
 *                        the stddev of the noise on the count of
 *                        unclipped updates; 2 sigma_b must be above z,
 *                        which stays the total noise multiplier the
 *                        accountant composes (the update's is
 *                        adaptive.update_noise, computed)
 *                       With it an explicit "update_bound" is refused (the
 *                       bound follows the clip round by round).
 * DP implies update_bound {l2_norm S, action "refuse"} (a config whose
 * update_bound says otherwise is refused), weighting "uniform" (every
 * report counts once) and pipelining false (a round's epsilon is known
 * before the next one starts); an explicit "examples" or true is refused.
 * Refused with round.mode "async" and with a rule other than "mean".
 * With secure aggregation, max_weight is 1 (an explicit other value is
 * refused). sampling_rate is computed: expected_reports /
 * round.population_estimate, or 1 when the estimate is 0 (unknown: no
 * amplification by sampling is claimed); an estimate below
 * expected_reports is refused. */
typedef enum shoal_dp_mechanism {
    SHOAL_DP_MECHANISM_FEDAVG = 0,
    SHOAL_DP_MECHANISM_FTRL = 1
} shoal_dp_mechanism;

/* Adaptive clipping (differential_privacy.adaptive_clipping). */
typedef struct shoal_dp_adaptive_config {
    int enabled;
    double target_quantile; /* gamma */
    double learning_rate;   /* eta */
    double count_noise;     /* sigma_b */
    double update_noise;    /* computed: z_u = (z^-2 - (2 sigma_b)^-2)^-1/2 */
} shoal_dp_adaptive_config;

typedef struct shoal_dp_population_config {
    int enabled;
    shoal_dp_mechanism mechanism;
    uint64_t restart_every;      /* DP-FTRL: rounds per tree; 0: never restart */
    uint32_t max_participations; /* DP-FTRL: k */
    double noise_multiplier;
    double clip; /* as devices see it: rounded to float, like update_bound */
    double delta;
    double budget_epsilon; /* 0: no budget */
    double expected_reports;
    double sampling_rate; /* computed: q */
    shoal_dp_adaptive_config adaptive;
} shoal_dp_population_config;

/* One population: a model, the plan devices train with, the server
 * strategy and the round parameters. Object keys: "name", "auth", "model",
 * "plan", "round" (all required), "strategy", "secure_aggregation",
 * "update_bound", "aggregation" and "differential_privacy" (optional). */
typedef struct shoal_population_config {
    char *name; /* "name": 1..128 bytes of [A-Za-z0-9._-] (used in URLs); distinct */

    /* "auth" (required): {"mode": "shared"|"hmac" (required),
     *                     "secret": "..." | "secret_file": path}.
     * Exactly one of secret and secret_file. A secret is 16..4096 bytes
     * (its UTF-8 bytes as written). A secret_file is read whole, with one
     * trailing "\n" (or "\r\n") stripped; a file readable by group or others
     * is accepted with a warning in the log. See shoal/auth.h for the
     * modes. `secret` is shoal_malloc'd, not NUL-terminated. */
    shoal_auth_mode auth_mode;
    uint8_t *secret;
    size_t secret_len;

    /* "model" (required):
     *   "architecture": "logreg"|"mlp"|"cnn"|"cnn2" (required)
     *   "input_shape":  [n] (a flat vector: shoal_shape {n, 1, 1}) or
     *                   [c, h, w]; each 1..65536, product at most
     *                   SHOAL_CONFIG_INPUT_SIZE_MAX (default [1, 28, 28]).
     *                   input_shape[0..input_rank) holds them as written
     *                   (input_rank 1 or 3), the rest is 0
     *   "classes":      2..65536 (default 10)
     *   "init_seed":    0..2^63-1 (default 1)
     * shoal_model_new must accept the combination (cnn and cnn2 need h and
     * w of at least 16) and the model must have at most
     * SHOAL_CONFIG_PARAM_COUNT_MAX parameters. */
    shoal_model_arch arch;
    uint32_t input_shape[4];
    uint32_t input_rank;
    uint32_t classes;
    uint64_t init_seed;
    size_t param_count; /* computed: the model's parameters */

    /* "plan" (required):
     *   "optimizer":       "sgd"|"momentum"|"nesterov"|"adagrad"|"rmsprop"|"adam"
     *                      (default "sgd")
     *   "learning_rate":   (0, 100] (required)
     *   "momentum":        [0, 1), momentum and nesterov only (default 0.9)
     *   "beta1", "beta2":  [0, 1), adam only (defaults 0.9, 0.999)
     *   "alpha":           [0, 1), rmsprop only (default 0.99)
     *   "eps":             (0, 1], adagrad, rmsprop and adam only
     *   "weight_decay":    [0, 10] (default 0)
     *   "prox_mu":         [0, 1000], FedProx (default 0)
     *   "epochs":          1..1000 (default 1)
     *   "batch_size":      1..65536 (default 32)
     *   "collection":      1..128 bytes, no control characters (default the
     *                      population name)
     *   "max_examples":    0..4294967295 (default 0: all)
     *   "min_examples":    1..4294967295, at most max_examples when that is
     *                      set (default 1)
     *   "max_duration_ms": 1..86400000, at most round.reporting_deadline_ms
     *                      (default 600000, or the deadline if shorter)
     * A hyperparameter the chosen optimizer does not use is refused.
     * client_optim holds kind and hyperparameters (shoal_optim_defaults
     * filled in, then overridden; shoal_optim_config_check passes). */
    shoal_optim_config client_optim;
    uint32_t epochs;
    uint32_t batch_size;
    char *collection;
    uint32_t max_examples;
    uint32_t min_examples;
    uint64_t max_duration_ms;

    /* "round" (required):
     *   "mode":                  "sync"|"async" (default "sync")
     *   "goal_count":            1..1000000 (required)
     *   "over_selection":        [1, 100] (default 1.3)
     *   "min_report_fraction":   (0, 1] (default 0.8)
     *   "selection_window_ms":   1..86400000 (default 60000)
     *   "reporting_deadline_ms": 1..604800000 (default 600000)
     *   "weighting":             "examples"|"uniform" (default "examples")
     *   "pipelining":            bool, sync only (default true)
     *   "eval_every":            0..1000000 (default 0: no federated evaluation)
     *   "eval_goal_count":       1..1000000 (default goal_count)
     *   "buffer_size":           1..1000000, async only (default 10)
     *   "max_staleness":         0..1000000, async only (default 0: unbounded)
     *   "staleness_exponent":    [0, 10], async only (default 0.5)
     *   "retry_min_ms":          1..604800000 (default 10000)
     *   "retry_max_ms":          1..604800000, >= retry_min_ms (default 3600000)
     *   "population_estimate":   0..10^12 (default 0: learn it)
     *   "resume_grace_ms":       0..3600000 (default 30000), see below
     * "strategy" (optional):
     *   "name":      "fedavg"|"fedavgm"|"fedadagrad"|"fedadam"|"fedyogi"
     *                (default "fedavg")
     *   "server_lr": (0, 100] (default 1 for fedavg and fedavgm, 0.003 for
     *                the adaptive ones)
     *   "momentum":  [0, 1), fedavgm only (default 0.9)
     *   "beta1":     [0, 1), fedadagrad, fedadam, fedyogi only (default 0.9)
     *   "beta2":     [0, 1), fedadam, fedyogi only (default 0.99)
     *   "tau":       (0, 10], adaptive only (default 0.001)
     * round.server_optim holds the strategy. Defaults are those of
     * shoal_round_defaults / shoal_server_optim_defaults (for the named
     * strategy); the combination is checked with shoal_round_config_check,
     * whose refusals point at the "round" object. Fields the chosen mode or
     * strategy does not use are refused. */
    shoal_round_config round;
    /* How long a session whose connection dropped may resume its upload
     * before it counts as lost (default 30000; 0 disables resuming). */
    int64_t resume_grace_ms;
    shoal_secagg_population_config secagg;
    shoal_update_bound_config update_bound;
    shoal_aggregation_config aggregation;
    shoal_dp_population_config dp;
} shoal_population_config;

/* The top-level object's keys: "listen", "tls", "state", "server",
 * "limits", "http" (all optional) and "populations" (required). */
typedef struct shoal_server_config {
    char *path; /* the file this came from (for messages) */

    /* "listen": {"address": an IP address or interface name, 1..255
     *            printable characters without spaces (default "127.0.0.1":
     *            loopback only; "0.0.0.0" for every interface),
     *            "port": 0..65535 (default 8443; 0 picks a free port,
     *            printed at start-up)} */
    char *listen_address;
    uint16_t port;

    /* "tls": {"enabled": bool (default true), "cert": path, "key": path,
     *         "self_signed": bool (default true: when cert and key do not
     *         exist yet, make a self-signed pair for "localhost" there),
     *         "session_tickets": bool (default true: devices resume their
     *         TLS session with a ticket instead of a full handshake),
     *         "ticket_rotation_ms": 1000..604800000 (default 3600000: the
     *         ticket keys rotate every hour; a ticket works for less than
     *         two periods)}.
     * Default paths: "shoal-cert.pem", "shoal-key.pem" in the directory of
     * the state database. Filled in even when TLS is disabled. */
    int tls_enabled;
    char *tls_cert;
    char *tls_key;
    int tls_self_signed;
    int tls_session_tickets;
    int64_t tls_ticket_rotation_ms;

    /* "state": {"path": (default "shoal-state.db" beside the config file),
     *           "keep_checkpoints": 1..1000000 (default 10)} */
    char *state_path;
    uint32_t keep_checkpoints;

    /* "server": {"workers": 0..256 (default 0: one per core),
     *            "log_level": "error"|"warn"|"notice"|"info"|"debug"
     *            (default "info")} */
    uint32_t workers;
    shoal_log_level log_level;

    /* "limits":
     *   "max_connections":      1..1000000 (default 20000)
     *   "max_message_bytes":    8192..1073741824 (default 1048576)
     *   "max_chunks":           1..16777216 (default 65536)
     *   "mailbox_capacity":     1..16777216 (default 65536)
     *   "handshake_timeout_ms": 1..3600000 (default 30000)
     *   "idle_timeout_ms":      0..86400000 (default 120000; 0: never)
     *   "auth_failures_per_minute": 0..1000000 (default 10; 0: no limit):
     *                           check-ins from one IP address whose token
     *                           fails; beyond this within a minute, the
     *                           address's check-ins are refused
     *                           (AUTH_FAILED, with the wait as the retry
     *                           window) until the minute is over
     *   "refusal_log_per_minute": 1..1000000 (default 10): log lines per
     *                           refusal reason and minute; the rest are
     *                           counted and summed up in one line
     *   "max_concurrent_uploads": 0..1000000 (default 128; 0: no limit):
     *                           updates received at once; a device that
     *                           starts one beyond it is paused (its reads
     *                           stop, TCP holds it back) until an upload
     *                           ends, in the order they started */
    uint32_t max_connections;
    uint32_t max_message_bytes;
    uint32_t max_chunks;
    uint32_t mailbox_capacity;
    int64_t handshake_timeout_ms;
    int64_t idle_timeout_ms;
    uint32_t auth_failures_per_minute;
    uint32_t max_concurrent_uploads;
    uint32_t refusal_log_per_minute;

    /* "http": {"token": SHOAL_CONFIG_HTTP_TOKEN_EXPECTED (default none),
     *          "metrics": bool (default true), "model": bool (default true)}.
     * "metrics" and "model" serve /metrics and /v1/populations/<name>/model;
     * false answers 404. With a token, both need the request header
     * "Authorization: Bearer <token>" (else 401); /healthz never does.
     * http_token is NULL without one (shoal_malloc'd, wiped on free). */
    char *http_token;
    int http_metrics, http_model;
    /* "http": {"listen": {"address", "port"}}: /metrics and the model are
     * served there, in plain HTTP, and no longer on the devices' port
     * (which keeps /healthz). Address as "listen" (default "127.0.0.1"),
     * port default 9464. http_listen_address is NULL without it. */
    char *http_listen_address;
    uint16_t http_port;

    /* "populations": [ ... ] (1..64 entries, distinct names), in file order */
    shoal_population_config *populations;
    size_t population_count;
} shoal_server_config;

/* Reads and checks the config file at `path`. On SHOAL_OK *out is a new
 * config (free with shoal_server_config_free); on error *out is NULL.
 * SHOAL_EIO when the file (or a secret_file) cannot be read, SHOAL_EFORMAT
 * for a JSON syntax error, SHOAL_EINVAL for a field that is missing,
 * unknown, of the wrong type or out of range, or a bad combination;
 * SHOAL_ENOMEM. ei (optional) holds the message described above; file
 * names in it are `path` as given, and relative paths in the file are
 * relative to the directory of `path` as given. Thread-safe (it may log a
 * warning about a secret_file's permissions). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_config_load(const char *path,
                                                             shoal_server_config **out,
                                                             shoal_errinfo *ei);

/* The same from text in memory (len bytes, not necessarily NUL-terminated);
 * `name` stands for the file in messages (NULL: "config") and relative
 * paths are relative to `base_dir` (NULL: the current directory). The text
 * is borrowed; it holds secrets, so the caller wipes it when done. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_config_parse(const char *text, size_t len,
                                                              const char *name,
                                                              const char *base_dir,
                                                              shoal_server_config **out,
                                                              shoal_errinfo *ei);

/* Frees everything, wiping secrets first. NULL is a no-op. */
SHOAL_API void shoal_server_config_free(shoal_server_config *cfg);

/* The population named `name`, or NULL. The pointer lives as long as cfg. */
SHOAL_API const shoal_population_config *
shoal_server_config_population(const shoal_server_config *cfg, const char *name);

#endif
