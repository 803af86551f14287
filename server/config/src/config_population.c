/* One population of the config file: its name, auth secret and model, and
 * the array of them ("populations"). */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server_config_int.h"
#include "shoal/alloc.h"

static const char *const population_keys[] = {"name",
                                              "auth",
                                              "model",
                                              "plan",
                                              "round",
                                              "strategy",
                                              "secure_aggregation",
                                              "update_bound",
                                              "aggregation",
                                              "differential_privacy",
                                              NULL};
static const char *const auth_keys[] = {"mode", "secret", "secret_file", NULL};
static const char *const model_keys[] = {"architecture", "input_shape", "classes", "init_seed",
                                         NULL};

#define SECRET_EXPECTED "a secret of 16 to 4096 bytes"

static const char *arch_name(int i)
{
    return shoal_model_arch_name((shoal_model_arch)i);
}

static int name_char_ok(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static shoal_err parse_name(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    const char *expected = "a name of 1 to 128 characters of [A-Za-z0-9._-]";
    const char *name;
    shoal_err err = shoal_cfg_string(c, pop, "name", 1, expected, &name);
    if (err)
        return err;
    size_t n = strlen(name), bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !name_char_ok((unsigned char)name[i]);
    if (n == 0 || n > SHOAL_CONFIG_NAME_MAX || bad) {
        char quoted[80];
        shoal_cfg_quote(name, quoted, sizeof quoted);
        shoal_cfg_push_key(c, "name");
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "'%s' is not a valid name; expected %s", quoted,
                             expected);
        shoal_cfg_pop(c);
        return err;
    }
    p->name = shoal_cfg_dup_string(c, name, &err);
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
        return shoal_cfg_fail(
            c, SHOAL_EIO,
            "cannot read '%.200s': %s; expected a readable file holding " SECRET_EXPECTED, path,
            strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return shoal_cfg_fail(
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
        return shoal_cfg_nomem(c);
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
        err = shoal_cfg_fail(
            c, SHOAL_EIO,
            "cannot read '%.200s': %s; expected a readable file holding " SECRET_EXPECTED, path,
            strerror(read_errno));
    } else {
        if (len > 0 && buf[len - 1] == '\n') {
            len--;
            if (len > 0 && buf[len - 1] == '\r')
                len--;
        }
        if (len < SHOAL_CONFIG_SECRET_MIN || len > SHOAL_CONFIG_SECRET_MAX)
            err = shoal_cfg_fail(
                c, SHOAL_EINVAL, "'%.200s' holds %s%zu bytes; expected " SECRET_EXPECTED, path,
                len > SHOAL_CONFIG_SECRET_MAX ? "more than " : "",
                len > SHOAL_CONFIG_SECRET_MAX ? (size_t)SHOAL_CONFIG_SECRET_MAX : len);
    }
    if (!err) {
        p->secret = shoal_malloc(len);
        if (!p->secret) {
            err = shoal_cfg_nomem(c);
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
    shoal_err err = shoal_cfg_object(c, pop, "auth", 1, auth_keys, &auth);
    if (err)
        return err;
    static const char *const modes[] = {"shared", "hmac"};
    int mode = 0;
    const char *secret = NULL, *secret_file = NULL;
    shoal_cfg_push_key(c, "auth");
    err = shoal_cfg_choice(c, auth, "mode", 1, "auth mode", modes, 2, &mode);
    if (!err)
        err = shoal_cfg_string(c, auth, "secret", 0, SECRET_EXPECTED, &secret);
    if (!err)
        err = shoal_cfg_string(c, auth, "secret_file", 0,
                               "the path of a file holding " SECRET_EXPECTED, &secret_file);
    if (!err && secret && secret_file) {
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "both secret and secret_file are given; expected exactly one of them");
    } else if (!err && !secret && !secret_file) {
        shoal_cfg_push_key(c, "secret");
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "missing required field; expected " SECRET_EXPECTED
                             ", or secret_file naming a file that holds one");
        shoal_cfg_pop(c);
    } else if (!err && secret) {
        /* The length only: the value never appears in a message. */
        const size_t len = json_string_length(json_object_get(auth, "secret"));
        shoal_cfg_push_key(c, "secret");
        if (len < SHOAL_CONFIG_SECRET_MIN || len > SHOAL_CONFIG_SECRET_MAX) {
            err = shoal_cfg_fail(c, SHOAL_EINVAL, "%zu bytes is too %s; expected " SECRET_EXPECTED,
                                 len, len < SHOAL_CONFIG_SECRET_MIN ? "short" : "long");
        } else if (!(p->secret = shoal_malloc(len))) {
            err = shoal_cfg_nomem(c);
        } else {
            memcpy(p->secret, secret, len);
            p->secret_len = len;
        }
        shoal_cfg_pop(c);
    } else if (!err) {
        shoal_cfg_push_key(c, "secret_file");
        if (!secret_file[0]) {
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "empty; expected the path of a file holding " SECRET_EXPECTED);
        } else {
            char *path = shoal_cfg_resolve(c->base_dir, secret_file);
            err = path ? read_secret_file(c, path, p) : shoal_cfg_nomem(c);
            shoal_free(path);
        }
        shoal_cfg_pop(c);
    }
    shoal_cfg_pop(c);
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
    shoal_cfg_push_key(c, "input_shape");
    if (!json_is_array(shape))
        err =
            shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", shoal_cfg_kind(shape), expected);
    else if (json_array_size(shape) != 1 && json_array_size(shape) != 3)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "%zu dimensions; expected %s", json_array_size(shape),
                             expected);
    uint64_t product = 1;
    for (size_t i = 0; !err && i < json_array_size(shape); i++) {
        json_t *dim = json_array_get(shape, i);
        shoal_cfg_push_index(c, i);
        if (!json_is_integer(dim))
            err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected an integer from 1 to 65536",
                                 shoal_cfg_kind(dim));
        else if (json_integer_value(dim) < 1 || json_integer_value(dim) > DIM_MAX)
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "%lld is out of range; expected an integer from 1 to 65536",
                                 (long long)json_integer_value(dim));
        else {
            p->input_shape[i] = (uint32_t)json_integer_value(dim);
            product *= p->input_shape[i];
        }
        shoal_cfg_pop(c);
    }
    if (!err) {
        p->input_rank = (uint32_t)json_array_size(shape);
        for (uint32_t i = p->input_rank; i < 4; i++)
            p->input_shape[i] = 0;
        if (product > SHOAL_CONFIG_INPUT_SIZE_MAX)
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "%llu values per example is too many; expected at most %u",
                                 (unsigned long long)product, SHOAL_CONFIG_INPUT_SIZE_MAX);
    }
    shoal_cfg_pop(c);
    return err;
}

static shoal_err parse_model(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *model;
    shoal_err err = shoal_cfg_object(c, pop, "model", 1, model_keys, &model);
    if (err)
        return err;
    const char *archs[8];
    const size_t arch_count = shoal_cfg_names_of(arch_name, archs, 8);
    int arch = 0;
    int64_t seed = 1;
    p->input_shape[0] = 1;
    p->input_shape[1] = 28;
    p->input_shape[2] = 28;
    p->input_rank = 3;
    p->classes = CLASSES_DEFAULT;
    shoal_cfg_push_key(c, "model");
    err = shoal_cfg_choice(c, model, "architecture", 1, "architecture", archs, arch_count, &arch);
    if (!err)
        err = parse_input_shape(c, model, p);
    if (!err)
        err = shoal_cfg_u32(c, model, "classes", 0, 2, 65536, &p->classes);
    if (!err)
        err = shoal_cfg_int(c, model, "init_seed", 0, 0, INT64_MAX, &seed);
    if (!err && shoal_model_arch_parse(archs[arch], &p->arch) != SHOAL_OK)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "architecture '%s' is not known to ml/", archs[arch]);
    if (!err) {
        /* The model as the server will build it: catches shapes the
         * architecture cannot take before any device is configured. */
        shoal_model *built = NULL;
        char shape[64];
        format_shape(p, shape, sizeof shape);
        shoal_err made = shoal_model_new(p->arch, shape_of(p), p->classes, &built);
        if (made == SHOAL_ENOMEM)
            err = shoal_cfg_nomem(c);
        else if (made != SHOAL_OK)
            err = shoal_cfg_fail(
                c, SHOAL_EINVAL,
                "%s cannot be built for input_shape %s with %u classes; expected h and "
                "w of at least 16 for the convolutional architectures (cnn, cnn2)",
                archs[arch], shape, (unsigned)p->classes);
        else if (shoal_model_param_count(built) > SHOAL_CONFIG_PARAM_COUNT_MAX)
            err = shoal_cfg_fail(
                c, SHOAL_EINVAL,
                "%s on input_shape %s with %u classes has %zu parameters; expected at "
                "most %u",
                archs[arch], shape, (unsigned)p->classes, shoal_model_param_count(built),
                SHOAL_CONFIG_PARAM_COUNT_MAX);
        else
            p->param_count = shoal_model_param_count(built);
        shoal_model_free(built);
    }
    shoal_cfg_pop(c);
    p->init_seed = (uint64_t)seed;
    return err;
}

static shoal_err parse_population(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    if (!json_is_object(pop))
        return shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected a population object",
                              shoal_cfg_kind(pop));
    /* In this order: a section may read what those before it set
     * (plan.max_duration_ms is read after the round, for its deadline),
     * and the first section at fault is the one reported. */
    static shoal_err (*const sections[])(cfg_ctx *, const json_t *, shoal_population_config *) = {
        parse_name,
        parse_auth,
        parse_model,
        shoal_cfg_parse_plan,
        shoal_cfg_parse_round,
        shoal_cfg_parse_duration,
        shoal_cfg_parse_secagg,
        shoal_cfg_parse_update_bound,
        shoal_cfg_parse_aggregation,
        shoal_cfg_parse_dp,
    };
    shoal_err err = shoal_cfg_known_keys(c, pop, population_keys);
    for (size_t i = 0; !err && i < sizeof sections / sizeof sections[0]; i++)
        err = sections[i](c, pop, p);
    return err;
}

shoal_err shoal_cfg_parse_populations(cfg_ctx *c, const json_t *root, shoal_server_config *cfg)
{
    const char *expected = "an array of 1 to 64 population objects";
    json_t *pops = json_object_get(root, "populations");
    shoal_err err = SHOAL_OK;
    shoal_cfg_push_key(c, "populations");
    if (!pops)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "missing required field; expected %s", expected);
    else if (!json_is_array(pops))
        err =
            shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", shoal_cfg_kind(pops), expected);
    else if (json_array_size(pops) < 1 || json_array_size(pops) > SHOAL_CONFIG_POPULATIONS_MAX)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "%zu entries; expected %s", json_array_size(pops),
                             expected);
    if (!err) {
        const size_t count = json_array_size(pops);
        cfg->populations = shoal_calloc(count, sizeof *cfg->populations);
        if (!cfg->populations)
            err = shoal_cfg_nomem(c);
        else
            cfg->population_count = count;
    }
    for (size_t i = 0; !err && i < cfg->population_count; i++) {
        shoal_population_config *p = &cfg->populations[i];
        shoal_cfg_push_index(c, i);
        err = parse_population(c, json_array_get(pops, i), p);
        for (size_t j = 0; !err && j < i; j++)
            if (strcmp(cfg->populations[j].name, p->name) == 0) {
                shoal_cfg_push_key(c, "name");
                err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                     "duplicate population name '%s' (also populations[%zu]); "
                                     "expected distinct names",
                                     p->name, j);
                shoal_cfg_pop(c);
            }
        shoal_cfg_pop(c);
    }
    shoal_cfg_pop(c);
    return err;
}
