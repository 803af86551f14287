/* The server's config file (docs/operations.md): reading it, the top-level
 * sections and the entry points. A population's fields are read in
 * config_population.c and config_plan.c, single fields in config_fields.c. */
#include "shoal/server_config.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "server_config_int.h"
#include "shoal/alloc.h"
#include "shoal/file.h"

/* Largest config file read; a real one is a few kilobytes. */
#define CONFIG_FILE_MAX (16u << 20)

/* jansson allocates through the project's hook, so failure injection reaches
 * the parser too. Installed before main() rather than on the first parse: a
 * jansson value made with malloc before the switch and freed after it would
 * otherwise reach a different allocator's free. Plain malloc/free
 * semantics are kept (no size header), so code that frees json_dumps()
 * output with free() still works under the default allocator. */
/* jansson reports some allocation failures as syntax errors (a string it
 * could not copy becomes "string or '}' expected"), so the hook notes
 * failures itself; per thread, as parses may run on several. */
static _Thread_local int jansson_alloc_failed;

static void *jansson_malloc(size_t size)
{
    void *p = shoal_malloc(size);
    if (!p)
        jansson_alloc_failed = 1;
    return p;
}

static void jansson_free(void *ptr)
{
    shoal_free(ptr);
}

__attribute__((constructor)) static void route_jansson_allocations(void)
{
    json_set_alloc_funcs(jansson_malloc, jansson_free);
}

/* ---- small helpers ------------------------------------------------------- */

static char *dir_of(const char *path, int *nomem)
{
    *nomem = 0;
    const char *slash = strrchr(path, '/');
    if (!slash)
        return NULL;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = shoal_malloc(n + 1);
    if (!dir) {
        *nomem = 1;
        return NULL;
    }
    memcpy(dir, path, n);
    dir[n] = 0;
    return dir;
}

/* ---- top-level sections -------------------------------------------------- */

static const char *const root_keys[] = {"listen", "tls",  "state",       "server",
                                        "limits", "http", "populations", NULL};
static const char *const listen_keys[] = {"address", "port", NULL};
static const char *const tls_keys[] = {
    "enabled", "cert", "key", "self_signed", "session_tickets", "ticket_rotation_ms", NULL};
static const char *const state_keys[] = {"path", "keep_checkpoints", NULL};
static const char *const server_keys[] = {"workers", "log_level", NULL};
static const char *const limits_keys[] = {"max_connections",
                                          "max_message_bytes",
                                          "max_chunks",
                                          "mailbox_capacity",
                                          "handshake_timeout_ms",
                                          "idle_timeout_ms",
                                          "auth_failures_per_minute",
                                          "refusal_log_per_minute",
                                          "max_concurrent_uploads",
                                          NULL};
static const char *const http_keys[] = {"token", "metrics", "model", "listen", NULL};

/* How many of the n bytes are spaces, control characters or not ASCII. */
static size_t unprintable(const char *text, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] <= 0x20 || (unsigned char)text[i] >= 0x7f)
            bad++;
    return bad;
}

/* A "listen" object of `parent` ({"address", "port"}) into *address (a
 * copy; the default when absent) and *port. *present says whether the
 * object was there. */
static shoal_err parse_address_port(cfg_ctx *c, const json_t *parent, int64_t default_port,
                                    char **address_out, uint16_t *port_out, int *present)
{
    json_t *listen;
    shoal_err err = shoal_cfg_object(c, parent, "listen", 0, listen_keys, &listen);
    if (err)
        return err;
    if (present)
        *present = listen != NULL;
    shoal_cfg_push_key(c, "listen");
    const char *address = "127.0.0.1";
    const char *given;
    err = shoal_cfg_string(c, listen, "address", 0, "an IP address or interface name", &given);
    if (!err && given) {
        size_t n = strlen(given), bad = unprintable(given, n);
        if (n == 0 || n > 255 || bad) {
            shoal_cfg_push_key(c, "address");
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "%s; expected an IP address or interface name "
                                 "(1 to 255 printable characters, no spaces)",
                                 n == 0    ? "empty"
                                 : n > 255 ? "too long"
                                           : "bad character");
            shoal_cfg_pop(c);
        }
        address = given;
    }
    int64_t port = default_port;
    if (!err)
        err = shoal_cfg_int(c, listen, "port", 0, 0, 65535, &port);
    shoal_cfg_pop(c);
    if (err)
        return err;
    *port_out = (uint16_t)port;
    *address_out = shoal_cfg_dup_string(c, address, &err);
    return err;
}

static shoal_err parse_listen(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    return parse_address_port(c, root, PORT_DEFAULT, &cfg->listen_address, &cfg->port, NULL);
}

static shoal_err parse_state(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *state;
    shoal_err err = shoal_cfg_object(c, root, "state", 0, state_keys, &state);
    if (err)
        return err;
    shoal_cfg_push_key(c, "state");
    const char *path;
    cfg->keep_checkpoints = KEEP_CHECKPOINTS_DEFAULT;
    err = shoal_cfg_string(c, state, "path", 0, "a file path", &path);
    if (!err && path && !path[0]) {
        shoal_cfg_push_key(c, "path");
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "empty; expected a file path");
        shoal_cfg_pop(c);
    }
    if (!err)
        err = shoal_cfg_u32(c, state, "keep_checkpoints", 0, 1, 1000000, &cfg->keep_checkpoints);
    shoal_cfg_pop(c);
    if (err)
        return err;
    cfg->state_path = shoal_cfg_resolve(c->base_dir, path ? path : "shoal-state.db");
    return cfg->state_path ? SHOAL_OK : shoal_cfg_nomem(c);
}

/* A TLS file: as given (relative to the config), or `fallback` in the
 * directory of the state database. */
static shoal_err tls_path(cfg_ctx *c, const json_t *tls, const char *key, const char *fallback,
                          const char *state_dir, char **out)
{
    const char *given;
    shoal_err err = shoal_cfg_string(c, tls, key, 0, "a file path", &given);
    if (err)
        return err;
    if (given && !given[0]) {
        shoal_cfg_push_key(c, key);
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "empty; expected a file path");
        shoal_cfg_pop(c);
        return err;
    }
    *out = given ? shoal_cfg_resolve(c->base_dir, given) : shoal_cfg_resolve(state_dir, fallback);
    return *out ? SHOAL_OK : shoal_cfg_nomem(c);
}

static shoal_err parse_tls(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *tls;
    shoal_err err = shoal_cfg_object(c, root, "tls", 0, tls_keys, &tls);
    if (err)
        return err;
    cfg->tls_enabled = 1;
    cfg->tls_self_signed = 1;
    cfg->tls_session_tickets = 1;
    cfg->tls_ticket_rotation_ms = TICKET_ROTATION_DEFAULT;
    int nomem;
    char *state_dir = dir_of(cfg->state_path, &nomem);
    if (nomem)
        return shoal_cfg_nomem(c);
    shoal_cfg_push_key(c, "tls");
    err = shoal_cfg_bool(c, tls, "enabled", &cfg->tls_enabled);
    if (!err)
        err = shoal_cfg_bool(c, tls, "self_signed", &cfg->tls_self_signed);
    if (!err)
        err = shoal_cfg_bool(c, tls, "session_tickets", &cfg->tls_session_tickets);
    if (!err)
        err = shoal_cfg_int(c, tls, "ticket_rotation_ms", 0, 1000, WEEK_MS,
                            &cfg->tls_ticket_rotation_ms);
    if (!err && !cfg->tls_session_tickets)
        err = shoal_cfg_refuse_unused(c, tls, "ticket_rotation_ms",
                                      "session_tickets is false: there are no ticket keys to "
                                      "rotate");
    if (!err)
        err = tls_path(c, tls, "cert", "shoal-cert.pem", state_dir, &cfg->tls_cert);
    if (!err)
        err = tls_path(c, tls, "key", "shoal-key.pem", state_dir, &cfg->tls_key);
    shoal_cfg_pop(c);
    shoal_free(state_dir);
    return err;
}

static shoal_err parse_server(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *server;
    shoal_err err = shoal_cfg_object(c, root, "server", 0, server_keys, &server);
    if (err)
        return err;
    static const char *const levels[] = {"error", "warn", "notice", "info", "debug"};
    cfg->workers = 0;
    cfg->log_level = SHOAL_LOG_INFO;
    shoal_cfg_push_key(c, "server");
    err = shoal_cfg_u32(c, server, "workers", 0, 0, 256, &cfg->workers);
    int level = -1;
    if (!err)
        err = shoal_cfg_choice(c, server, "log_level", 0, "log level", levels,
                               sizeof levels / sizeof levels[0], &level);
    shoal_cfg_pop(c);
    if (!err && level >= 0 && shoal_log_level_parse(levels[level], &cfg->log_level) != SHOAL_OK)
        cfg->log_level = SHOAL_LOG_INFO; /* not reached: the names are log.h's */
    return err;
}

static shoal_err parse_limits(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *limits;
    shoal_err err = shoal_cfg_object(c, root, "limits", 0, limits_keys, &limits);
    if (err)
        return err;
    cfg->max_connections = MAX_CONNECTIONS_DEFAULT;
    cfg->max_message_bytes = MAX_MESSAGE_DEFAULT;
    cfg->max_chunks = MAX_CHUNKS_DEFAULT;
    cfg->mailbox_capacity = MAILBOX_DEFAULT;
    cfg->handshake_timeout_ms = HANDSHAKE_TIMEOUT_DEFAULT;
    cfg->idle_timeout_ms = IDLE_TIMEOUT_DEFAULT;
    cfg->auth_failures_per_minute = AUTH_FAILURES_DEFAULT;
    cfg->refusal_log_per_minute = REFUSAL_LOG_DEFAULT;
    cfg->max_concurrent_uploads = CONCURRENT_UPLOADS_DEFAULT;
    shoal_cfg_push_key(c, "limits");
    err = shoal_cfg_u32(c, limits, "max_connections", 0, 1, 1000000, &cfg->max_connections);
    if (!err)
        err = shoal_cfg_u32(c, limits, "max_message_bytes", 0, SHOAL_CONFIG_MAX_MESSAGE_MIN,
                            SHOAL_CONFIG_MAX_MESSAGE_LIMIT, &cfg->max_message_bytes);
    if (!err)
        err = shoal_cfg_u32(c, limits, "max_chunks", 0, 1, 16777216, &cfg->max_chunks);
    if (!err)
        err = shoal_cfg_u32(c, limits, "mailbox_capacity", 0, 1, 16777216, &cfg->mailbox_capacity);
    if (!err)
        err = shoal_cfg_int(c, limits, "handshake_timeout_ms", 0, 1, 3600000,
                            &cfg->handshake_timeout_ms);
    if (!err)
        err = shoal_cfg_int(c, limits, "idle_timeout_ms", 0, 0, DAY_MS, &cfg->idle_timeout_ms);
    if (!err)
        err = shoal_cfg_u32(c, limits, "auth_failures_per_minute", 0, 0, 1000000,
                            &cfg->auth_failures_per_minute);
    if (!err)
        err = shoal_cfg_u32(c, limits, "refusal_log_per_minute", 0, 1, 1000000,
                            &cfg->refusal_log_per_minute);
    if (!err)
        err = shoal_cfg_u32(c, limits, "max_concurrent_uploads", 0, 0, 1000000,
                            &cfg->max_concurrent_uploads);
    shoal_cfg_pop(c);
    return err;
}

static shoal_err parse_http(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *http;
    shoal_err err = shoal_cfg_object(c, root, "http", 0, http_keys, &http);
    if (err)
        return err;
    cfg->http_metrics = cfg->http_model = 1;
    shoal_cfg_push_key(c, "http");
    const char *token = NULL;
    err = shoal_cfg_string(c, http, "token", 0,
                           "a bearer token of " SHOAL_CONFIG_HTTP_TOKEN_EXPECTED, &token);
    if (!err && token) {
        size_t n = strlen(token), bad = unprintable(token, n);
        if (n < SHOAL_CONFIG_SECRET_MIN || n > 1024 || bad) {
            shoal_cfg_push_key(c, "token");
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "%zu bytes%s; expected " SHOAL_CONFIG_HTTP_TOKEN_EXPECTED
                                 " (e.g. head -c 32 /dev/urandom | base64)",
                                 n, bad ? " with spaces or control characters" : "");
            shoal_cfg_pop(c);
        } else if (!(cfg->http_token = shoal_strdup(token))) {
            err = shoal_cfg_nomem(c);
        }
    }
    if (!err)
        err = shoal_cfg_bool(c, http, "metrics", &cfg->http_metrics);
    if (!err)
        err = shoal_cfg_bool(c, http, "model", &cfg->http_model);
    int separate = 0;
    char *address = NULL;
    uint16_t port = 0;
    if (!err && http)
        err = parse_address_port(c, http, HTTP_PORT_DEFAULT, &address, &port, &separate);
    if (!err && separate && port != 0 && port == cfg->port &&
        strcmp(address, cfg->listen_address) == 0) {
        shoal_cfg_push_key(c, "listen");
        shoal_cfg_push_key(c, "port");
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "%u is the devices' port (listen.port) on the same address; "
                             "expected another port for the operator's endpoints",
                             (unsigned)port);
        shoal_cfg_pop(c);
        shoal_cfg_pop(c);
    }
    if (!err && separate) {
        cfg->http_listen_address = address;
        cfg->http_port = port;
    } else {
        shoal_free(address);
    }
    shoal_cfg_pop(c);
    return err;
}

/* ---- entry points -------------------------------------------------------- */

/* jansson keeps its own copies of the secrets in the tree: wipe them before
 * the tree goes back to the allocator. */
static void wipe_tree_secrets(json_t *root)
{
    json_t *pops = json_object_get(root, "populations");
    for (size_t i = 0; i < json_array_size(pops); i++) {
        json_t *auth = json_object_get(json_array_get(pops, i), "auth");
        json_t *secret = json_object_get(auth, "secret");
        if (json_is_string(secret))
            sodium_memzero((char *)json_string_value(secret), json_string_length(secret));
    }
    json_t *token = json_object_get(json_object_get(root, "http"), "token");
    if (json_is_string(token))
        sodium_memzero((char *)json_string_value(token), json_string_length(token));
}

/* jansson's message with its " near '...'" excerpt dropped when the excerpt
 * could be a piece of a value (a secret written with a typo would otherwise
 * be quoted back); excerpts that are only punctuation, the end of the file
 * or a duplicated key stay. */
static void syntax_text(const json_error_t *je, char *out, size_t cap)
{
    snprintf(out, cap, "%s", je->text);
    char *near = strstr(out, " near ");
    if (!near)
        return;
    const char *excerpt = near + 6;
    int keep = json_error_code(je) == json_error_duplicate_key ||
               strcmp(excerpt, "end of file") == 0 ||
               (strlen(excerpt) == 3 && excerpt[0] == '\'' && excerpt[2] == '\'' &&
                strchr("{}[],:", excerpt[1]) != NULL);
    if (!keep)
        *near = 0;
}

void shoal_server_config_free(shoal_server_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->population_count; i++) {
        shoal_population_config *p = &cfg->populations[i];
        if (p->secret) {
            sodium_memzero(p->secret, p->secret_len);
            shoal_free(p->secret);
        }
        shoal_free(p->name);
        shoal_free(p->collection);
    }
    shoal_free(cfg->populations);
    shoal_free(cfg->path);
    shoal_free(cfg->listen_address);
    shoal_free(cfg->http_listen_address);
    shoal_free(cfg->tls_cert);
    shoal_free(cfg->tls_key);
    shoal_free(cfg->state_path);
    if (cfg->http_token) {
        sodium_memzero(cfg->http_token, strlen(cfg->http_token));
        shoal_free(cfg->http_token);
    }
    shoal_free(cfg);
}

shoal_err shoal_server_config_parse(const char *text, size_t len, const char *name,
                                    const char *base_dir, shoal_server_config **out,
                                    shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    if (!name)
        name = "config";
    if (!out || (!text && len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: no text or no result pointer", name);
    if (!text)
        text = "";

    json_error_t je;
    jansson_alloc_failed = 0;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (jansson_alloc_failed || json_error_code(&je) == json_error_out_of_memory)
            return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", name);
        char what[JSON_ERROR_TEXT_LENGTH];
        syntax_text(&je, what, sizeof what);
        if (je.line < 1)
            return shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: %s", name, what);
        return shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s:%d:%d: %s", name, je.line,
                                 je.column < 1 ? 1 : je.column, what);
    }

    cfg_ctx c = {.text = text, .len = len, .name = name, .base_dir = base_dir, .ei = ei};
    shoal_err err = SHOAL_OK;
    shoal_server_config *cfg = shoal_calloc(1, sizeof *cfg);
    if (!cfg)
        err = shoal_cfg_nomem(&c);
    else if (!json_is_object(root))
        err = shoal_cfg_fail(&c, SHOAL_EINVAL, "the top level is %s; expected an object",
                             shoal_cfg_kind(root));
    if (!err)
        err = shoal_cfg_known_keys(&c, root, root_keys);
    if (!err && !(cfg->path = shoal_strdup(name)))
        err = shoal_cfg_nomem(&c);
    if (!err)
        err = parse_listen(&c, root, cfg);
    if (!err)
        err = parse_state(&c, root, cfg);
    if (!err)
        err = parse_tls(&c, root, cfg);
    if (!err)
        err = parse_server(&c, root, cfg);
    if (!err)
        err = parse_limits(&c, root, cfg);
    if (!err)
        err = parse_http(&c, root, cfg);
    if (!err)
        err = shoal_cfg_parse_populations(&c, root, cfg);

    wipe_tree_secrets(root);
    json_decref(root);
    if (err) {
        shoal_server_config_free(cfg);
        return err;
    }
    *out = cfg;
    return SHOAL_OK;
}

shoal_err shoal_server_config_load(const char *path, shoal_server_config **out, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "config: no path or no result pointer");
    char *text = NULL;
    size_t len = 0;
    shoal_err err =
        shoal_file_read(path, "the config file", NULL, CONFIG_FILE_MAX, &text, &len, ei);
    if (err)
        return err;
    int nomem;
    char *dir = dir_of(path, &nomem);
    if (nomem)
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    else
        err = shoal_server_config_parse(text, len, path, dir, out, ei);
    shoal_free(dir);
    shoal_file_free(text, len);
    return err;
}

const shoal_population_config *shoal_server_config_population(const shoal_server_config *cfg,
                                                              const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->population_count; i++)
        if (strcmp(cfg->populations[i].name, name) == 0)
            return &cfg->populations[i];
    return NULL;
}
