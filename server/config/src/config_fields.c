#include "config_fields_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"

void shoal_cfg_push_key(cfg_ctx *c, const char *key)
{
    /* The schema is at most five levels deep; deeper is a bug here. */
    if (c->depth < CFG_DEPTH_MAX)
        c->path[c->depth] = (json_step){key, 0};
    c->depth++;
}

void shoal_cfg_push_index(cfg_ctx *c, size_t index)
{
    if (c->depth < CFG_DEPTH_MAX)
        c->path[c->depth] = (json_step){NULL, index};
    c->depth++;
}

void shoal_cfg_pop(cfg_ctx *c)
{
    if (c->depth > 0)
        c->depth--;
}

void shoal_cfg_quote(const char *s, char *out, size_t cap)
{
    size_t n = 0, i = 0;
    for (; s[i] && i < 64 && n + 8 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (s[i] && n + 4 <= cap) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = 0;
}

static void format_path(const cfg_ctx *c, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    size_t depth = c->depth < CFG_DEPTH_MAX ? c->depth : CFG_DEPTH_MAX;
    for (size_t i = 0; i < depth && n < cap; i++) {
        int w;
        if (c->path[i].key) {
            char key[80];
            shoal_cfg_quote(c->path[i].key, key, sizeof key);
            w = snprintf(out + n, cap - n, "%s%s", i ? "." : "", key);
        } else {
            w = snprintf(out + n, cap - n, "[%zu]", c->path[i].index);
        }
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static shoal_err fail_v(cfg_ctx *c, shoal_err err, int at_key, const char *fmt, va_list ap)
{
    if (!c->ei)
        return err;
    json_pos value, key;
    size_t depth = c->depth < CFG_DEPTH_MAX ? c->depth : CFG_DEPTH_MAX;
    shoal_json_locate(c->text, c->len, c->path, depth, &value, &key);
    json_pos at = at_key ? key : value;
    char path[256], what[384];
    format_path(c, path, sizeof path);
    vsnprintf(what, sizeof what, fmt, ap);
    if (path[0])
        return shoal_errinfo_set(c->ei, err, "%s:%ld:%ld: %s: %s", c->name, at.line, at.column,
                                 path, what);
    return shoal_errinfo_set(c->ei, err, "%s:%ld:%ld: %s", c->name, at.line, at.column, what);
}

shoal_err shoal_cfg_fail(cfg_ctx *c, shoal_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err = fail_v(c, err, 0, fmt, ap);
    va_end(ap);
    return err;
}

shoal_err shoal_cfg_fail_key(cfg_ctx *c, shoal_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err = fail_v(c, err, 1, fmt, ap);
    va_end(ap);
    return err;
}

shoal_err shoal_cfg_nomem(cfg_ctx *c)
{
    return shoal_errinfo_set(c->ei, SHOAL_ENOMEM, "%s: out of memory", c->name);
}

const char *shoal_cfg_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* Shortest decimal that reads back as v, so 0.1 shows as "0.1". */
static void format_real(double v, char *out, size_t cap)
{
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(out, cap, "%.*g", digits, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

shoal_err shoal_cfg_known_keys(cfg_ctx *c, const json_t *obj, const char *const *known)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        (void)value;
        if (strncmp(key, "//", 2) == 0)
            continue;
        int ok = 0;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (ok)
            continue;
        char list[320], quoted[80];
        size_t n = 0;
        list[0] = 0;
        for (size_t i = 0; known[i] && n < sizeof list; i++) {
            int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", known[i]);
            if (w < 0)
                break;
            n += (size_t)w;
        }
        shoal_cfg_quote(key, quoted, sizeof quoted);
        shoal_cfg_push_key(c, key);
        shoal_err err = shoal_cfg_fail_key(c, SHOAL_EINVAL, "unknown field '%s'; known fields: %s",
                                           quoted, list);
        shoal_cfg_pop(c);
        return err;
    }
    return SHOAL_OK;
}

/* The member `key`, or NULL. Fails when it is missing and required;
 * `expected` describes it for that message. */
static shoal_err member(cfg_ctx *c, const json_t *parent, const char *key, int required,
                        const char *expected, json_t **out)
{
    *out = parent ? json_object_get(parent, key) : NULL;
    if (*out || !required)
        return SHOAL_OK;
    shoal_cfg_push_key(c, key);
    shoal_err err =
        shoal_cfg_fail(c, SHOAL_EINVAL, "missing required field; expected %s", expected);
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_object(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *const *known, json_t **out)
{
    *out = NULL;
    json_t *v;
    shoal_err err = member(c, parent, key, required, "an object", &v);
    if (err || !v)
        return err;
    shoal_cfg_push_key(c, key);
    if (!json_is_object(v))
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected an object", shoal_cfg_kind(v));
    else
        err = shoal_cfg_known_keys(c, v, known);
    shoal_cfg_pop(c);
    if (!err)
        *out = v;
    return err;
}

shoal_err shoal_cfg_int(cfg_ctx *c, const json_t *parent, const char *key, int required, int64_t lo,
                        int64_t hi, int64_t *out)
{
    char expected[96];
    snprintf(expected, sizeof expected, "an integer from %lld to %lld", (long long)lo,
             (long long)hi);
    json_t *v;
    shoal_err err = member(c, parent, key, required, expected, &v);
    if (err || !v)
        return err;
    shoal_cfg_push_key(c, key);
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < lo || n > hi)
            err = shoal_cfg_fail(c, SHOAL_EINVAL, "%lld is out of range; expected %s", (long long)n,
                                 expected);
        else
            *out = (int64_t)n;
    } else if (json_is_real(v)) {
        char shown[32];
        format_real(json_real_value(v), shown, sizeof shown);
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "%s is not an integer; expected %s", shown, expected);
    } else {
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", shoal_cfg_kind(v), expected);
    }
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_u32(cfg_ctx *c, const json_t *parent, const char *key, int required,
                        uint32_t lo, uint32_t hi, uint32_t *out)
{
    int64_t v = *out;
    shoal_err err = shoal_cfg_int(c, parent, key, required, lo, hi, &v);
    if (!err)
        *out = (uint32_t)v;
    return err;
}

static void describe_interval(double lo, int lo_open, double hi, int hi_open, char *out, size_t cap)
{
    char a[32], b[32];
    format_real(lo, a, sizeof a);
    format_real(hi, b, sizeof b);
    if (!lo_open && !hi_open)
        snprintf(out, cap, "a number from %s to %s", a, b);
    else if (lo_open && !hi_open)
        snprintf(out, cap, "a number above %s and at most %s", a, b);
    else if (!lo_open && hi_open)
        snprintf(out, cap, "a number of at least %s and below %s", a, b);
    else
        snprintf(out, cap, "a number above %s and below %s", a, b);
}

shoal_err shoal_cfg_float(cfg_ctx *c, const json_t *parent, const char *key, int required,
                          double lo, int lo_open, double hi, int hi_open, float *out)
{
    char expected[128];
    describe_interval(lo, lo_open, hi, hi_open, expected, sizeof expected);
    json_t *v;
    shoal_err err = member(c, parent, key, required, expected, &v);
    if (err || !v)
        return err;
    shoal_cfg_push_key(c, key);
    if (json_is_number(v)) {
        const double d = json_number_value(v);
        /* The check is on the float the engine will use: 1e-50 is no
         * positive learning rate once rounded. */
        const double f = (double)(float)d;
        const int below = lo_open ? !(f > lo) : !(f >= lo);
        const int above = hi_open ? !(f < hi) : !(f <= hi);
        if (!isfinite(d) || below || above) {
            char shown[32];
            if (json_is_integer(v))
                snprintf(shown, sizeof shown, "%lld", (long long)json_integer_value(v));
            else
                format_real(d, shown, sizeof shown);
            err =
                shoal_cfg_fail(c, SHOAL_EINVAL, "%s is out of range; expected %s", shown, expected);
        } else {
            *out = (float)d;
        }
    } else {
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", shoal_cfg_kind(v), expected);
    }
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_bool(cfg_ctx *c, const json_t *parent, const char *key, int *out)
{
    json_t *v;
    shoal_err err = member(c, parent, key, 0, "true or false", &v);
    if (err || !v)
        return err;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return SHOAL_OK;
    }
    shoal_cfg_push_key(c, key);
    err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected true or false", shoal_cfg_kind(v));
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_string(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *expected, const char **out)
{
    *out = NULL;
    json_t *v;
    shoal_err err = member(c, parent, key, required, expected, &v);
    if (err || !v)
        return err;
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return SHOAL_OK;
    }
    shoal_cfg_push_key(c, key);
    err = shoal_cfg_fail(c, SHOAL_EINVAL, "got %s; expected %s", shoal_cfg_kind(v), expected);
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_choice(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *what, const char *const *names, size_t count, int *out)
{
    char list[160];
    size_t n = 0;
    list[0] = 0;
    for (size_t i = 0; i < count && n < sizeof list; i++) {
        int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    char expected[200];
    snprintf(expected, sizeof expected, "one of: %s", list);
    const char *s;
    shoal_err err = shoal_cfg_string(c, parent, key, required, expected, &s);
    if (err || !s)
        return err;
    for (size_t i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return SHOAL_OK;
        }
    char quoted[80];
    shoal_cfg_quote(s, quoted, sizeof quoted);
    shoal_cfg_push_key(c, key);
    err = shoal_cfg_fail(c, SHOAL_EINVAL, "unknown %s '%s'; expected %s", what, quoted, expected);
    shoal_cfg_pop(c);
    return err;
}

char *shoal_cfg_resolve(const char *base_dir, const char *path)
{
    if (path[0] == '/' || !base_dir || !base_dir[0])
        return shoal_strdup(path);
    const size_t dir_len = strlen(base_dir), path_len = strlen(path);
    const int slash = base_dir[dir_len - 1] != '/';
    char *out = shoal_malloc(dir_len + (size_t)slash + path_len + 1);
    if (!out)
        return NULL;
    memcpy(out, base_dir, dir_len);
    if (slash)
        out[dir_len] = '/';
    memcpy(out + dir_len + (size_t)slash, path, path_len + 1);
    return out;
}

static int has_member(const json_t *obj, const char *key)
{
    return obj && json_object_get(obj, key) != NULL;
}

/* The directory part of `path` as a new string, or NULL (with *nomem 0)
 * when it has none. */
char *shoal_cfg_dup_string(cfg_ctx *c, const char *s, shoal_err *err)
{
    char *d = shoal_strdup(s);
    if (!d)
        *err = shoal_cfg_nomem(c);
    return d;
}

/* Refuses `key` in `obj` when present: the chosen optimizer, strategy or
 * mode does not use it, and a value nobody reads is a likely mistake. */
shoal_err shoal_cfg_refuse_unused(cfg_ctx *c, const json_t *obj, const char *key, const char *why)
{
    if (!has_member(obj, key))
        return SHOAL_OK;
    shoal_cfg_push_key(c, key);
    shoal_err err = shoal_cfg_fail_key(c, SHOAL_EINVAL, "%s", why);
    shoal_cfg_pop(c);
    return err;
}

/* Turns a refusal from a component's own check (shoal_round_config_check,
 * ...) into a positioned message at the current path. */
shoal_err shoal_cfg_relay(cfg_ctx *c, shoal_err err, const shoal_errinfo *inner)
{
    if (err == SHOAL_ENOMEM)
        return shoal_cfg_nomem(c);
    return shoal_cfg_fail(c, err, "%s", inner->msg);
}

/* Names an ml/ enum knows, in enum order, for choices and their messages:
 * the lists stay in step with ml/ by construction. */
size_t shoal_cfg_names_of(const char *(*name_fn)(int), const char **names, size_t cap)
{
    size_t n = 0;
    while (n < cap && strcmp(name_fn((int)n), "?") != 0) {
        names[n] = name_fn((int)n);
        n++;
    }
    return n;
}
