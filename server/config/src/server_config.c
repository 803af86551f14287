#include "shoal/server_config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_fields_int.h"
#include "shoal/alloc.h"

#define LOG_COMPONENT "config"

/* Largest config file read; a real one is a few kilobytes. */
#define CONFIG_FILE_MAX (16u << 20)

enum {
    PORT_DEFAULT = 8443,
    KEEP_CHECKPOINTS_DEFAULT = 10,
    MAX_CONNECTIONS_DEFAULT = 20000,
    MAX_MESSAGE_DEFAULT = SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT,
    MAX_CHUNKS_DEFAULT = 65536,
    MAILBOX_DEFAULT = 65536,
    HANDSHAKE_TIMEOUT_DEFAULT = 30000,
    IDLE_TIMEOUT_DEFAULT = 120000,
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

static int name_char_ok(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static int has_member(const json_t *obj, const char *key)
{
    return obj && json_object_get(obj, key) != NULL;
}

/* The directory part of `path` as a new string, or NULL (with *nomem 0)
 * when it has none. */
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

static char *dup_string(cfg_ctx *c, const char *s, shoal_err *err)
{
    char *d = shoal_strdup(s);
    if (!d)
        *err = cfg_nomem(c);
    return d;
}

/* Refuses `key` in `obj` when present: the chosen optimizer, strategy or
 * mode does not use it, and a value nobody reads is a likely mistake. */
static shoal_err refuse_unused(cfg_ctx *c, const json_t *obj, const char *key, const char *why)
{
    if (!has_member(obj, key))
        return SHOAL_OK;
    cfg_push_key(c, key);
    shoal_err err = cfg_fail_key(c, SHOAL_EINVAL, "%s", why);
    cfg_pop(c);
    return err;
}

/* Turns a refusal from a component's own check (shoal_round_config_check,
 * ...) into a positioned message at the current path. */
static shoal_err relay(cfg_ctx *c, shoal_err err, const shoal_errinfo *inner)
{
    if (err == SHOAL_ENOMEM)
        return cfg_nomem(c);
    return cfg_fail(c, err, "%s", inner->msg);
}

/* ---- top-level sections -------------------------------------------------- */

static const char *const root_keys[] = {"listen", "tls",         "state", "server",
                                        "limits", "populations", NULL};
static const char *const listen_keys[] = {"address", "port", NULL};
static const char *const tls_keys[] = {"enabled", "cert", "key", "self_signed", NULL};
static const char *const state_keys[] = {"path", "keep_checkpoints", NULL};
static const char *const server_keys[] = {"workers", "log_level", NULL};
static const char *const limits_keys[] = {
    "max_connections",      "max_message_bytes", "max_chunks", "mailbox_capacity",
    "handshake_timeout_ms", "idle_timeout_ms",   NULL};

static shoal_err parse_listen(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *listen;
    shoal_err err = cfg_object(c, root, "listen", 0, listen_keys, &listen);
    if (err)
        return err;
    cfg_push_key(c, "listen");
    const char *address = "0.0.0.0";
    const char *given;
    err = cfg_string(c, listen, "address", 0, "an IP address or interface name", &given);
    if (!err && given) {
        size_t n = strlen(given), bad = 0;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)given[i] <= 0x20 || (unsigned char)given[i] >= 0x7f)
                bad++;
        if (n == 0 || n > 255 || bad) {
            cfg_push_key(c, "address");
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%s; expected an IP address or interface name "
                           "(1 to 255 printable characters, no spaces)",
                           n == 0    ? "empty"
                           : n > 255 ? "too long"
                                     : "bad character");
            cfg_pop(c);
        }
        address = given;
    }
    int64_t port = PORT_DEFAULT;
    if (!err)
        err = cfg_int(c, listen, "port", 0, 0, 65535, &port);
    cfg_pop(c);
    if (err)
        return err;
    cfg->port = (uint16_t)port;
    cfg->listen_address = dup_string(c, address, &err);
    return err;
}

static shoal_err parse_state(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *state;
    shoal_err err = cfg_object(c, root, "state", 0, state_keys, &state);
    if (err)
        return err;
    cfg_push_key(c, "state");
    const char *path;
    cfg->keep_checkpoints = KEEP_CHECKPOINTS_DEFAULT;
    err = cfg_string(c, state, "path", 0, "a file path", &path);
    if (!err && path && !path[0]) {
        cfg_push_key(c, "path");
        err = cfg_fail(c, SHOAL_EINVAL, "empty; expected a file path");
        cfg_pop(c);
    }
    if (!err)
        err = cfg_u32(c, state, "keep_checkpoints", 0, 1, 1000000, &cfg->keep_checkpoints);
    cfg_pop(c);
    if (err)
        return err;
    cfg->state_path = cfg_resolve(c->base_dir, path ? path : "shoal-state.db");
    return cfg->state_path ? SHOAL_OK : cfg_nomem(c);
}

/* A TLS file: as given (relative to the config), or `fallback` in the
 * directory of the state database. */
static shoal_err tls_path(cfg_ctx *c, const json_t *tls, const char *key, const char *fallback,
                          const char *state_dir, char **out)
{
    const char *given;
    shoal_err err = cfg_string(c, tls, key, 0, "a file path", &given);
    if (err)
        return err;
    if (given && !given[0]) {
        cfg_push_key(c, key);
        err = cfg_fail(c, SHOAL_EINVAL, "empty; expected a file path");
        cfg_pop(c);
        return err;
    }
    *out = given ? cfg_resolve(c->base_dir, given) : cfg_resolve(state_dir, fallback);
    return *out ? SHOAL_OK : cfg_nomem(c);
}

static shoal_err parse_tls(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *tls;
    shoal_err err = cfg_object(c, root, "tls", 0, tls_keys, &tls);
    if (err)
        return err;
    cfg->tls_enabled = 1;
    cfg->tls_self_signed = 1;
    int nomem;
    char *state_dir = dir_of(cfg->state_path, &nomem);
    if (nomem)
        return cfg_nomem(c);
    cfg_push_key(c, "tls");
    err = cfg_bool(c, tls, "enabled", &cfg->tls_enabled);
    if (!err)
        err = cfg_bool(c, tls, "self_signed", &cfg->tls_self_signed);
    if (!err)
        err = tls_path(c, tls, "cert", "shoal-cert.pem", state_dir, &cfg->tls_cert);
    if (!err)
        err = tls_path(c, tls, "key", "shoal-key.pem", state_dir, &cfg->tls_key);
    cfg_pop(c);
    shoal_free(state_dir);
    return err;
}

static shoal_err parse_server(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *server;
    shoal_err err = cfg_object(c, root, "server", 0, server_keys, &server);
    if (err)
        return err;
    static const char *const levels[] = {"error", "warn", "notice", "info", "debug"};
    cfg->workers = 0;
    cfg->log_level = SHOAL_LOG_INFO;
    cfg_push_key(c, "server");
    err = cfg_u32(c, server, "workers", 0, 0, 256, &cfg->workers);
    int level = -1;
    if (!err)
        err = cfg_choice(c, server, "log_level", 0, "log level", levels,
                         sizeof levels / sizeof levels[0], &level);
    cfg_pop(c);
    if (!err && level >= 0 && shoal_log_level_parse(levels[level], &cfg->log_level) != SHOAL_OK)
        cfg->log_level = SHOAL_LOG_INFO; /* not reached: the names are log.h's */
    return err;
}

static shoal_err parse_limits(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    json_t *limits;
    shoal_err err = cfg_object(c, root, "limits", 0, limits_keys, &limits);
    if (err)
        return err;
    cfg->max_connections = MAX_CONNECTIONS_DEFAULT;
    cfg->max_message_bytes = MAX_MESSAGE_DEFAULT;
    cfg->max_chunks = MAX_CHUNKS_DEFAULT;
    cfg->mailbox_capacity = MAILBOX_DEFAULT;
    cfg->handshake_timeout_ms = HANDSHAKE_TIMEOUT_DEFAULT;
    cfg->idle_timeout_ms = IDLE_TIMEOUT_DEFAULT;
    cfg_push_key(c, "limits");
    err = cfg_u32(c, limits, "max_connections", 0, 1, 1000000, &cfg->max_connections);
    if (!err)
        err = cfg_u32(c, limits, "max_message_bytes", 0, SHOAL_CONFIG_MAX_MESSAGE_MIN,
                      SHOAL_CONFIG_MAX_MESSAGE_LIMIT, &cfg->max_message_bytes);
    if (!err)
        err = cfg_u32(c, limits, "max_chunks", 0, 1, 16777216, &cfg->max_chunks);
    if (!err)
        err = cfg_u32(c, limits, "mailbox_capacity", 0, 1, 16777216, &cfg->mailbox_capacity);
    if (!err)
        err = cfg_int(c, limits, "handshake_timeout_ms", 0, 1, 3600000, &cfg->handshake_timeout_ms);
    if (!err)
        err = cfg_int(c, limits, "idle_timeout_ms", 0, 0, DAY_MS, &cfg->idle_timeout_ms);
    cfg_pop(c);
    return err;
}

/* ---- one population ------------------------------------------------------ */

static const char *const population_keys[] = {"name",  "auth",     "model", "plan",
                                              "round", "strategy", NULL};
static const char *const auth_keys[] = {"mode", "secret", "secret_file", NULL};
static const char *const model_keys[] = {"architecture", "input_shape", "classes", "init_seed",
                                         NULL};
static const char *const plan_keys[] = {
    "optimizer",    "learning_rate", "momentum",        "beta1",  "beta2",      "alpha",
    "eps",          "weight_decay",  "prox_mu",         "epochs", "batch_size", "collection",
    "max_examples", "min_examples",  "max_duration_ms", NULL};
static const char *const round_keys[] = {"mode",
                                         "goal_count",
                                         "over_selection",
                                         "min_report_fraction",
                                         "selection_window_ms",
                                         "reporting_deadline_ms",
                                         "weighting",
                                         "pipelining",
                                         "eval_every",
                                         "eval_goal_count",
                                         "buffer_size",
                                         "max_staleness",
                                         "staleness_exponent",
                                         "retry_min_ms",
                                         "retry_max_ms",
                                         "population_estimate",
                                         "resume_grace_ms",
                                         NULL};
static const char *const strategy_keys[] = {"name",  "server_lr", "momentum", "beta1",
                                            "beta2", "tau",       NULL};

#define SECRET_EXPECTED "a secret of 16 to 4096 bytes"

/* Names an ml/ enum knows, in enum order, for choices and their messages:
 * the lists stay in step with ml/ by construction. */
static size_t names_of(const char *(*name_fn)(int), const char **names, size_t cap)
{
    size_t n = 0;
    while (n < cap && strcmp(name_fn((int)n), "?") != 0) {
        names[n] = name_fn((int)n);
        n++;
    }
    return n;
}

static const char *arch_name(int i)
{
    return shoal_model_arch_name((shoal_model_arch)i);
}

static const char *optim_name(int i)
{
    return shoal_optim_kind_name((shoal_optim_kind)i);
}

static const char *strategy_name(int i)
{
    return shoal_server_optim_kind_name((shoal_server_optim_kind)i);
}

static shoal_err parse_name(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    const char *expected = "a name of 1 to 128 characters of [A-Za-z0-9._-]";
    const char *name;
    shoal_err err = cfg_string(c, pop, "name", 1, expected, &name);
    if (err)
        return err;
    size_t n = strlen(name), bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !name_char_ok((unsigned char)name[i]);
    if (n == 0 || n > SHOAL_CONFIG_NAME_MAX || bad) {
        char quoted[80];
        cfg_quote(name, quoted, sizeof quoted);
        cfg_push_key(c, "name");
        err = cfg_fail(c, SHOAL_EINVAL, "'%s' is not a valid name; expected %s", quoted, expected);
        cfg_pop(c);
        return err;
    }
    p->name = dup_string(c, name, &err);
    return err;
}

/* Reads a secret file whole. The buffer is wiped before it is freed on every
 * path; the file's permissions are only warned about, since tightening them
 * is the operator's call. */
static shoal_err read_secret_file(cfg_ctx *c, const char *path, shoal_population_config *p)
{
    /* Enough to see that a file is too long even after stripping "\r\n". */
    const size_t cap = SHOAL_CONFIG_SECRET_MAX + 3;
    /* O_NONBLOCK: a FIFO must not hang start-up; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return cfg_fail(
            c, SHOAL_EIO,
            "cannot read '%.200s': %s; expected a readable file holding " SECRET_EXPECTED, path,
            strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cfg_fail(
            c, SHOAL_EIO,
            "cannot read '%.200s': not a regular file; expected a file holding " SECRET_EXPECTED,
            path);
    }
    if (st.st_mode & (S_IRGRP | S_IROTH))
        SHOAL_WARN(LOG_COMPONENT,
                   "%s: %s: secret_file '%.200s' is readable by group or others (mode %03o); "
                   "chmod 600 it",
                   c->name, p->name, path, (unsigned)(st.st_mode & 0777));
    uint8_t *buf = shoal_malloc(cap);
    if (!buf) {
        close(fd);
        return cfg_nomem(c);
    }
    size_t len = 0;
    int read_errno = 0;
    while (len < cap) {
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            read_errno = errno;
            break;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    shoal_err err = SHOAL_OK;
    if (read_errno) {
        err =
            cfg_fail(c, SHOAL_EIO,
                     "cannot read '%.200s': %s; expected a readable file holding " SECRET_EXPECTED,
                     path, strerror(read_errno));
    } else {
        if (len > 0 && buf[len - 1] == '\n') {
            len--;
            if (len > 0 && buf[len - 1] == '\r')
                len--;
        }
        if (len < SHOAL_CONFIG_SECRET_MIN || len > SHOAL_CONFIG_SECRET_MAX)
            err = cfg_fail(c, SHOAL_EINVAL, "'%.200s' holds %s%zu bytes; expected " SECRET_EXPECTED,
                           path, len > SHOAL_CONFIG_SECRET_MAX ? "more than " : "",
                           len > SHOAL_CONFIG_SECRET_MAX ? (size_t)SHOAL_CONFIG_SECRET_MAX : len);
    }
    if (!err) {
        p->secret = shoal_malloc(len);
        if (!p->secret) {
            err = cfg_nomem(c);
        } else {
            memcpy(p->secret, buf, len);
            p->secret_len = len;
        }
    }
    sodium_memzero(buf, cap);
    shoal_free(buf);
    return err;
}

static shoal_err parse_auth(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *auth;
    shoal_err err = cfg_object(c, pop, "auth", 1, auth_keys, &auth);
    if (err)
        return err;
    static const char *const modes[] = {"shared", "hmac"};
    int mode = 0;
    const char *secret = NULL, *secret_file = NULL;
    cfg_push_key(c, "auth");
    err = cfg_choice(c, auth, "mode", 1, "auth mode", modes, 2, &mode);
    if (!err)
        err = cfg_string(c, auth, "secret", 0, SECRET_EXPECTED, &secret);
    if (!err)
        err = cfg_string(c, auth, "secret_file", 0, "the path of a file holding " SECRET_EXPECTED,
                         &secret_file);
    if (!err && secret && secret_file) {
        err = cfg_fail(c, SHOAL_EINVAL,
                       "both secret and secret_file are given; expected exactly one of them");
    } else if (!err && !secret && !secret_file) {
        cfg_push_key(c, "secret");
        err = cfg_fail(c, SHOAL_EINVAL,
                       "missing required field; expected " SECRET_EXPECTED
                       ", or secret_file naming a file that holds one");
        cfg_pop(c);
    } else if (!err && secret) {
        /* The length only: the value never appears in a message. */
        const size_t len = json_string_length(json_object_get(auth, "secret"));
        cfg_push_key(c, "secret");
        if (len < SHOAL_CONFIG_SECRET_MIN || len > SHOAL_CONFIG_SECRET_MAX) {
            err = cfg_fail(c, SHOAL_EINVAL, "%zu bytes is too %s; expected " SECRET_EXPECTED, len,
                           len < SHOAL_CONFIG_SECRET_MIN ? "short" : "long");
        } else if (!(p->secret = shoal_malloc(len))) {
            err = cfg_nomem(c);
        } else {
            memcpy(p->secret, secret, len);
            p->secret_len = len;
        }
        cfg_pop(c);
    } else if (!err) {
        cfg_push_key(c, "secret_file");
        if (!secret_file[0]) {
            err = cfg_fail(c, SHOAL_EINVAL,
                           "empty; expected the path of a file holding " SECRET_EXPECTED);
        } else {
            char *path = cfg_resolve(c->base_dir, secret_file);
            err = path ? read_secret_file(c, path, p) : cfg_nomem(c);
            shoal_free(path);
        }
        cfg_pop(c);
    }
    cfg_pop(c);
    p->auth_mode = mode == 0 ? SHOAL_AUTH_SHARED : SHOAL_AUTH_HMAC;
    return err;
}

static shoal_shape shape_of(const shoal_population_config *p)
{
    /* [n] is {n, 1, 1}; [c, h, w] as written. */
    shoal_shape s = {p->input_shape[0], 1, 1};
    if (p->input_rank == 3) {
        s.h = p->input_shape[1];
        s.w = p->input_shape[2];
    }
    return s;
}

static void format_shape(const shoal_population_config *p, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "[");
    for (uint32_t i = 0; i < p->input_rank && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%u", i ? ", " : "", (unsigned)p->input_shape[i]);
    if (n < cap)
        snprintf(out + n, cap - n, "]");
}

static shoal_err parse_input_shape(cfg_ctx *c, const json_t *model, shoal_population_config *p)
{
    /* No [h, w]: whether it means one channel or h channels of width w
     * would be a guess. */
    const char *expected = "[n] or [c, h, w], each an integer from 1 to 65536";
    json_t *shape = json_object_get(model, "input_shape");
    if (!shape)
        return SHOAL_OK;
    shoal_err err = SHOAL_OK;
    cfg_push_key(c, "input_shape");
    if (!json_is_array(shape))
        err = cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", cfg_kind(shape), expected);
    else if (json_array_size(shape) != 1 && json_array_size(shape) != 3)
        err = cfg_fail(c, SHOAL_EINVAL, "%zu dimensions; expected %s", json_array_size(shape),
                       expected);
    uint64_t product = 1;
    for (size_t i = 0; !err && i < json_array_size(shape); i++) {
        json_t *dim = json_array_get(shape, i);
        cfg_push_index(c, i);
        if (!json_is_integer(dim))
            err = cfg_fail(c, SHOAL_EINVAL, "got %s; expected an integer from 1 to 65536",
                           cfg_kind(dim));
        else if (json_integer_value(dim) < 1 || json_integer_value(dim) > DIM_MAX)
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%lld is out of range; expected an integer from 1 to 65536",
                           (long long)json_integer_value(dim));
        else {
            p->input_shape[i] = (uint32_t)json_integer_value(dim);
            product *= p->input_shape[i];
        }
        cfg_pop(c);
    }
    if (!err) {
        p->input_rank = (uint32_t)json_array_size(shape);
        for (uint32_t i = p->input_rank; i < 4; i++)
            p->input_shape[i] = 0;
        if (product > SHOAL_CONFIG_INPUT_SIZE_MAX)
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%llu values per example is too many; expected at most %u",
                           (unsigned long long)product, SHOAL_CONFIG_INPUT_SIZE_MAX);
    }
    cfg_pop(c);
    return err;
}

static shoal_err parse_model(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *model;
    shoal_err err = cfg_object(c, pop, "model", 1, model_keys, &model);
    if (err)
        return err;
    const char *archs[8];
    const size_t arch_count = names_of(arch_name, archs, 8);
    int arch = 0;
    int64_t seed = 1;
    p->input_shape[0] = 1;
    p->input_shape[1] = 28;
    p->input_shape[2] = 28;
    p->input_rank = 3;
    p->classes = CLASSES_DEFAULT;
    cfg_push_key(c, "model");
    err = cfg_choice(c, model, "architecture", 1, "architecture", archs, arch_count, &arch);
    if (!err)
        err = parse_input_shape(c, model, p);
    if (!err)
        err = cfg_u32(c, model, "classes", 0, 2, 65536, &p->classes);
    if (!err)
        err = cfg_int(c, model, "init_seed", 0, 0, INT64_MAX, &seed);
    if (!err && shoal_model_arch_parse(archs[arch], &p->arch) != SHOAL_OK)
        err = cfg_fail(c, SHOAL_EINVAL, "architecture '%s' is not known to ml/", archs[arch]);
    if (!err) {
        /* The model as the server will build it: catches shapes the
         * architecture cannot take before any device is configured. */
        shoal_model *built = NULL;
        char shape[64];
        format_shape(p, shape, sizeof shape);
        shoal_err made = shoal_model_new(p->arch, shape_of(p), p->classes, &built);
        if (made == SHOAL_ENOMEM)
            err = cfg_nomem(c);
        else if (made != SHOAL_OK)
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%s cannot be built for input_shape %s with %u classes; expected h and "
                           "w of at least 16 for the convolutional architectures (cnn, cnn2)",
                           archs[arch], shape, (unsigned)p->classes);
        else if (shoal_model_param_count(built) > SHOAL_CONFIG_PARAM_COUNT_MAX)
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%s on input_shape %s with %u classes has %zu parameters; expected at "
                           "most %u",
                           archs[arch], shape, (unsigned)p->classes, shoal_model_param_count(built),
                           SHOAL_CONFIG_PARAM_COUNT_MAX);
        shoal_model_free(built);
    }
    cfg_pop(c);
    p->init_seed = (uint64_t)seed;
    return err;
}

/* A client hyperparameter `key` in [0, 1) that only `kinds` use. */
static shoal_err plan_unit_param(cfg_ctx *c, const json_t *plan, const char *key,
                                 shoal_optim_kind kind, unsigned kinds, const char *users,
                                 float *out)
{
    if (!(kinds & (1u << kind))) {
        char why[160];
        snprintf(why, sizeof why, "not used by optimizer '%s'; remove it or choose %s",
                 shoal_optim_kind_name(kind), users);
        return refuse_unused(c, plan, key, why);
    }
    return cfg_float(c, plan, key, 0, 0.0, 0, 1.0, 1, out);
}

#define BIT(k) (1u << (k))

static shoal_err parse_plan(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *plan;
    shoal_err err = cfg_object(c, pop, "plan", 1, plan_keys, &plan);
    if (err)
        return err;
    const char *optims[8];
    const size_t optim_count = names_of(optim_name, optims, 8);
    int kind_index = 0;
    float lr = 0.0f;
    cfg_push_key(c, "plan");
    err = cfg_choice(c, plan, "optimizer", 0, "optimizer", optims, optim_count, &kind_index);
    shoal_optim_kind kind = SHOAL_OPTIM_SGD;
    if (!err && shoal_optim_kind_parse(optims[kind_index], &kind) != SHOAL_OK)
        err = cfg_fail(c, SHOAL_EINVAL, "optimizer '%s' is not known to ml/", optims[kind_index]);
    if (!err)
        err = cfg_float(c, plan, "learning_rate", 1, 0.0, 1, 100.0, 0, &lr);
    /* Defaults depend on the optimizer (adagrad's eps), so they come first
     * and the file overrides them. */
    shoal_optim_config *o = &p->client_optim;
    if (!err)
        *o = shoal_optim_defaults(kind, lr);
    const unsigned momentum_users = BIT(SHOAL_OPTIM_MOMENTUM) | BIT(SHOAL_OPTIM_NESTEROV);
    const unsigned adam = BIT(SHOAL_OPTIM_ADAM);
    const unsigned eps_users = BIT(SHOAL_OPTIM_ADAGRAD) | BIT(SHOAL_OPTIM_RMSPROP) | adam;
    if (!err)
        err = plan_unit_param(c, plan, "momentum", kind, momentum_users, "momentum or nesterov",
                              &o->momentum);
    if (!err)
        err = plan_unit_param(c, plan, "beta1", kind, adam, "adam", &o->beta1);
    if (!err)
        err = plan_unit_param(c, plan, "beta2", kind, adam, "adam", &o->beta2);
    if (!err)
        err =
            plan_unit_param(c, plan, "alpha", kind, BIT(SHOAL_OPTIM_RMSPROP), "rmsprop", &o->alpha);
    if (!err && !(eps_users & BIT(kind))) {
        char why[160];
        snprintf(why, sizeof why,
                 "not used by optimizer '%s'; remove it or choose adagrad, "
                 "rmsprop or adam",
                 shoal_optim_kind_name(kind));
        err = refuse_unused(c, plan, "eps", why);
    } else if (!err) {
        err = cfg_float(c, plan, "eps", 0, 0.0, 1, 1.0, 0, &o->eps);
    }
    if (!err)
        err = cfg_float(c, plan, "weight_decay", 0, 0.0, 0, 10.0, 0, &o->weight_decay);
    if (!err)
        err = cfg_float(c, plan, "prox_mu", 0, 0.0, 0, 1000.0, 0, &o->prox_mu);
    if (!err) {
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_optim_config_check(o, &inner);
        if (checked)
            err = relay(c, checked, &inner);
    }

    p->epochs = EPOCHS_DEFAULT;
    p->batch_size = BATCH_DEFAULT;
    p->max_examples = 0;
    p->min_examples = 1;
    if (!err)
        err = cfg_u32(c, plan, "epochs", 0, 1, 1000, &p->epochs);
    if (!err)
        err = cfg_u32(c, plan, "batch_size", 0, 1, 65536, &p->batch_size);
    if (!err)
        err = cfg_u32(c, plan, "max_examples", 0, 0, UINT32_MAX, &p->max_examples);
    if (!err)
        err = cfg_u32(c, plan, "min_examples", 0, 1, UINT32_MAX, &p->min_examples);
    if (!err && p->max_examples && p->min_examples > p->max_examples) {
        cfg_push_key(c, "min_examples");
        err = cfg_fail(c, SHOAL_EINVAL,
                       "%u is more than max_examples (%u); expected at most max_examples",
                       (unsigned)p->min_examples, (unsigned)p->max_examples);
        cfg_pop(c);
    }
    const char *collection = NULL;
    if (!err)
        err = cfg_string(c, plan, "collection", 0, "a collection name of 1 to 128 bytes",
                         &collection);
    if (!err && collection) {
        size_t n = strlen(collection), bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += (unsigned char)collection[i] < 0x20 || collection[i] == 0x7f;
        if (n == 0 || n > SHOAL_CONFIG_NAME_MAX || bad) {
            cfg_push_key(c, "collection");
            err = cfg_fail(c, SHOAL_EINVAL,
                           "%s; expected a collection name of 1 to 128 bytes without control "
                           "characters",
                           n == 0                      ? "empty"
                           : n > SHOAL_CONFIG_NAME_MAX ? "too long"
                                                       : "control character");
            cfg_pop(c);
        }
    }
    if (!err)
        p->collection = dup_string(c, collection ? collection : p->name, &err);
    cfg_pop(c);
    return err;
}

static shoal_err parse_strategy(cfg_ctx *c, const json_t *pop, shoal_server_optim_config *s)
{
    json_t *strategy;
    shoal_err err = cfg_object(c, pop, "strategy", 0, strategy_keys, &strategy);
    if (err)
        return err;
    const char *names[8];
    const size_t count = names_of(strategy_name, names, 8);
    int index = 0;
    shoal_server_optim_kind kind = SHOAL_SERVER_FEDAVG;
    cfg_push_key(c, "strategy");
    err = cfg_choice(c, strategy, "name", 0, "strategy", names, count, &index);
    if (!err && shoal_server_optim_kind_parse(names[index], &kind) != SHOAL_OK)
        err = cfg_fail(c, SHOAL_EINVAL, "strategy '%s' is not known to ml/", names[index]);
    /* The server learning rate's default depends on the strategy (0.003 for
     * the adaptive ones): defaults first, then the file. */
    if (!err)
        *s = shoal_server_optim_defaults(kind);
    const int adaptive = kind == SHOAL_SERVER_FEDADAGRAD || kind == SHOAL_SERVER_FEDADAM ||
                         kind == SHOAL_SERVER_FEDYOGI;
    char why[160];
    if (!err)
        err = cfg_float(c, strategy, "server_lr", 0, 0.0, 1, 100.0, 0, &s->lr);
    if (!err && kind != SHOAL_SERVER_FEDAVGM) {
        snprintf(why, sizeof why, "not used by strategy '%s'; remove it or choose fedavgm",
                 names[index]);
        err = refuse_unused(c, strategy, "momentum", why);
    } else if (!err) {
        err = cfg_float(c, strategy, "momentum", 0, 0.0, 0, 1.0, 1, &s->momentum);
    }
    snprintf(why, sizeof why,
             "not used by strategy '%s'; remove it or choose fedadagrad, fedadam or fedyogi",
             names[index]);
    if (!err && !adaptive)
        err = refuse_unused(c, strategy, "beta1", why);
    else if (!err)
        err = cfg_float(c, strategy, "beta1", 0, 0.0, 0, 1.0, 1, &s->beta1);
    if (!err && !adaptive)
        err = refuse_unused(c, strategy, "tau", why);
    else if (!err)
        err = cfg_float(c, strategy, "tau", 0, 0.0, 1, 10.0, 0, &s->tau);
    if (!err && kind != SHOAL_SERVER_FEDADAM && kind != SHOAL_SERVER_FEDYOGI) {
        snprintf(why, sizeof why,
                 "not used by strategy '%s'; remove it or choose fedadam or "
                 "fedyogi",
                 names[index]);
        err = refuse_unused(c, strategy, "beta2", why);
    } else if (!err) {
        err = cfg_float(c, strategy, "beta2", 0, 0.0, 0, 1.0, 1, &s->beta2);
    }
    if (!err) {
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_server_optim_config_check(s, &inner);
        if (checked)
            err = relay(c, checked, &inner);
    }
    cfg_pop(c);
    return err;
}

static shoal_err parse_round(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *round;
    shoal_err err = cfg_object(c, pop, "round", 1, round_keys, &round);
    if (err)
        return err;
    static const char *const modes[] = {"sync", "async"};            /* shoal_round_mode order */
    static const char *const weightings[] = {"examples", "uniform"}; /* shoal_weighting order */
    int mode = SHOAL_ROUND_SYNC;
    uint32_t goal = 1;
    cfg_push_key(c, "round");
    err = cfg_choice(c, round, "mode", 0, "round mode", modes, 2, &mode);
    if (!err)
        err = cfg_u32(c, round, "goal_count", 1, 1, GOAL_MAX, &goal);
    shoal_round_config *r = &p->round;
    /* eval_goal_count defaults to goal_count: the defaults need both. */
    if (!err)
        *r = shoal_round_defaults((shoal_round_mode)mode, goal);
    if (!err)
        err = cfg_float(c, round, "over_selection", 0, 1.0, 0, 100.0, 0, &r->over_selection);
    if (!err)
        err =
            cfg_float(c, round, "min_report_fraction", 0, 0.0, 1, 1.0, 0, &r->min_report_fraction);
    if (!err)
        err = cfg_int(c, round, "selection_window_ms", 0, 1, DAY_MS, &r->selection_window_ms);
    if (!err)
        err = cfg_int(c, round, "reporting_deadline_ms", 0, 1, WEEK_MS, &r->reporting_deadline_ms);
    int weighting = (int)r->weighting;
    if (!err)
        err = cfg_choice(c, round, "weighting", 0, "weighting", weightings, 2, &weighting);
    r->weighting = (shoal_weighting)weighting;
    if (!err && mode == SHOAL_ROUND_ASYNC)
        err = refuse_unused(c, round, "pipelining",
                            "only used in sync mode; remove it or set mode to \"sync\"");
    else if (!err)
        err = cfg_bool(c, round, "pipelining", &r->pipelining);
    if (!err)
        err = cfg_u32(c, round, "eval_every", 0, 0, GOAL_MAX, &r->eval_every);
    if (!err)
        err = cfg_u32(c, round, "eval_goal_count", 0, 1, GOAL_MAX, &r->eval_goal_count);
    if (mode == SHOAL_ROUND_SYNC) {
        static const char *const async_only[] = {"buffer_size", "max_staleness",
                                                 "staleness_exponent"};
        for (size_t i = 0; !err && i < 3; i++)
            err = refuse_unused(c, round, async_only[i],
                                "only used in async mode; remove it or set mode to \"async\"");
    } else {
        if (!err)
            err = cfg_u32(c, round, "buffer_size", 0, 1, GOAL_MAX, &r->buffer_size);
        if (!err)
            err = cfg_u32(c, round, "max_staleness", 0, 0, GOAL_MAX, &r->max_staleness);
        if (!err)
            err = cfg_float(c, round, "staleness_exponent", 0, 0.0, 0, 10.0, 0,
                            &r->staleness_exponent);
    }
    if (!err)
        err = cfg_int(c, round, "retry_min_ms", 0, 1, WEEK_MS, &r->retry_min_ms);
    if (!err)
        err = cfg_int(c, round, "retry_max_ms", 0, 1, WEEK_MS, &r->retry_max_ms);
    int64_t estimate = 0;
    if (!err)
        err = cfg_int(c, round, "population_estimate", 0, 0, 1000000000000LL, &estimate);
    r->population_estimate = (uint64_t)estimate;
    p->resume_grace_ms = RESUME_GRACE_DEFAULT;
    if (!err)
        err = cfg_int(c, round, "resume_grace_ms", 0, 0, 3600000, &p->resume_grace_ms);
    cfg_pop(c);
    if (!err)
        err = parse_strategy(c, pop, &r->server_optim);
    if (!err) {
        /* Combinations (retry_min <= retry_max, ...) are the engine's rules;
         * its message is relayed at the round object. */
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_round_config_check(r, &inner);
        if (checked) {
            cfg_push_key(c, "round");
            err = relay(c, checked, &inner);
            cfg_pop(c);
        }
    }
    return err;
}

/* max_duration_ms needs the round's deadline, so it is read last. */
static shoal_err parse_duration(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    const int64_t deadline = p->round.reporting_deadline_ms;
    int64_t duration = deadline < MAX_DURATION_DEFAULT ? deadline : MAX_DURATION_DEFAULT;
    const json_t *plan = json_object_get(pop, "plan");
    cfg_push_key(c, "plan");
    shoal_err err = cfg_int(c, plan, "max_duration_ms", 0, 1, DAY_MS, &duration);
    if (!err && duration > deadline) {
        cfg_push_key(c, "max_duration_ms");
        err = cfg_fail(c, SHOAL_EINVAL,
                       "%lld is longer than round.reporting_deadline_ms (%lld); expected at most "
                       "the reporting deadline",
                       (long long)duration, (long long)deadline);
        cfg_pop(c);
    }
    cfg_pop(c);
    p->max_duration_ms = (uint64_t)duration;
    return err;
}

static shoal_err parse_population(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    if (!json_is_object(pop))
        return cfg_fail(c, SHOAL_EINVAL, "got %s; expected a population object", cfg_kind(pop));
    shoal_err err = cfg_known_keys(c, pop, population_keys);
    if (!err)
        err = parse_name(c, pop, p);
    if (!err)
        err = parse_auth(c, pop, p);
    if (!err)
        err = parse_model(c, pop, p);
    if (!err)
        err = parse_plan(c, pop, p);
    if (!err)
        err = parse_round(c, pop, p);
    if (!err)
        err = parse_duration(c, pop, p);
    return err;
}

static shoal_err parse_populations(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    const char *expected = "an array of 1 to 64 population objects";
    json_t *pops = json_object_get(root, "populations");
    shoal_err err = SHOAL_OK;
    cfg_push_key(c, "populations");
    if (!pops)
        err = cfg_fail(c, SHOAL_EINVAL, "missing required field; expected %s", expected);
    else if (!json_is_array(pops))
        err = cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", cfg_kind(pops), expected);
    else if (json_array_size(pops) < 1 || json_array_size(pops) > SHOAL_CONFIG_POPULATIONS_MAX)
        err =
            cfg_fail(c, SHOAL_EINVAL, "%zu entries; expected %s", json_array_size(pops), expected);
    if (!err) {
        const size_t count = json_array_size(pops);
        cfg->populations = shoal_calloc(count, sizeof *cfg->populations);
        if (!cfg->populations)
            err = cfg_nomem(c);
        else
            cfg->population_count = count;
    }
    for (size_t i = 0; !err && i < cfg->population_count; i++) {
        shoal_population_config *p = &cfg->populations[i];
        cfg_push_index(c, i);
        err = parse_population(c, json_array_get(pops, i), p);
        for (size_t j = 0; !err && j < i; j++)
            if (strcmp(cfg->populations[j].name, p->name) == 0) {
                cfg_push_key(c, "name");
                err = cfg_fail(c, SHOAL_EINVAL,
                               "duplicate population name '%s' (also populations[%zu]); "
                               "expected distinct names",
                               p->name, j);
                cfg_pop(c);
            }
        cfg_pop(c);
    }
    cfg_pop(c);
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
    shoal_free(cfg->tls_cert);
    shoal_free(cfg->tls_key);
    shoal_free(cfg->state_path);
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
        err = cfg_nomem(&c);
    else if (!json_is_object(root))
        err = cfg_fail(&c, SHOAL_EINVAL, "the top level is %s; expected an object", cfg_kind(root));
    if (!err)
        err = cfg_known_keys(&c, root, root_keys);
    if (!err && !(cfg->path = shoal_strdup(name)))
        err = cfg_nomem(&c);
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
        err = parse_populations(&c, root, cfg);

    wipe_tree_secrets(root);
    json_decref(root);
    if (err) {
        shoal_server_config_free(cfg);
        return err;
    }
    *out = cfg;
    return SHOAL_OK;
}

/* The whole file into shoal_malloc'd memory (it holds secrets: the caller
 * wipes it). */
static shoal_err read_file(const char *path, char **text, size_t *len, shoal_errinfo *ei)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > CONFIG_FILE_MAX) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "%s: %lld bytes is too large for a config file; "
                                 "expected at most %u",
                                 path, (long long)st.st_size, CONFIG_FILE_MAX);
    }
    /* One byte more than the size, to see a file that grew meanwhile. */
    const size_t cap = (size_t)st.st_size + 1;
    char *buf = shoal_malloc(cap);
    if (!buf) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    }
    size_t used = 0;
    while (used < cap) {
        ssize_t got = read(fd, buf + used, cap - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            sodium_memzero(buf, cap);
            shoal_free(buf);
            return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot read: %s", path, strerror(e));
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    if (used == cap) {
        sodium_memzero(buf, cap);
        shoal_free(buf);
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: changed while being read", path);
    }
    *text = buf;
    *len = used;
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
    shoal_err err = read_file(path, &text, &len, ei);
    if (err)
        return err;
    int nomem;
    char *dir = dir_of(path, &nomem);
    if (nomem)
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    else
        err = shoal_server_config_parse(text, len, path, dir, out, ei);
    shoal_free(dir);
    sodium_memzero(text, len);
    shoal_free(text);
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
