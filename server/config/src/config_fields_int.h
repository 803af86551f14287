/* Typed reading of config fields with positioned error messages.
 *
 * A cfg_ctx carries the text, its name, the JSON path of the value being
 * read and the errinfo. Every reader checks one member of an object: its
 * type, its range, and says what was wrong and what is expected, as
 *   <name>:<line>:<col>: <path>: <what was wrong>; <what is expected>
 * An absent optional member leaves *out untouched, so callers set defaults
 * first and let the file override them. */
#ifndef SHOAL_CONFIG_FIELDS_INT_H
#define SHOAL_CONFIG_FIELDS_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "json_locate_int.h"
#include "shoal/err.h"

#define CFG_DEPTH_MAX 8

typedef struct cfg_ctx {
    const char *text;
    size_t len;
    const char *name;     /* the file, in messages */
    const char *base_dir; /* relative paths are relative to it; NULL: the current directory */
    json_step path[CFG_DEPTH_MAX];
    size_t depth;
    shoal_errinfo *ei;
} cfg_ctx;

/* Path bookkeeping: push before reading a member, pop after. */
void shoal_cfg_push_key(cfg_ctx *c, const char *key);
void shoal_cfg_push_index(cfg_ctx *c, size_t index);
void shoal_cfg_pop(cfg_ctx *c);

/* Fails at the current path: the position is that of its value, or of the
 * enclosing object when the value is missing. */
shoal_err shoal_cfg_fail(cfg_ctx *c, shoal_err err, const char *fmt, ...) SHOAL_PRINTF(3, 4);
/* The same, pointing at the key of the current path's last member. */
shoal_err shoal_cfg_fail_key(cfg_ctx *c, shoal_err err, const char *fmt, ...) SHOAL_PRINTF(3, 4);
/* Out of memory: no position needed (and none to compute safely). */
shoal_err shoal_cfg_nomem(cfg_ctx *c);

/* Copies at most 64 bytes of s into out (cap >= 72), replacing control
 * characters, and marks a cut with "...": for quoting user text. */
void shoal_cfg_quote(const char *s, char *out, size_t cap);

/* A member that must be an object (NULL when absent and not required); its
 * keys must be among `known` (NULL-terminated). Keys starting with "//" are
 * comments and ignored. */
shoal_err shoal_cfg_object(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *const *known, json_t **out);
/* Checks the keys of `obj` (the value at the current path). */
shoal_err shoal_cfg_known_keys(cfg_ctx *c, const json_t *obj, const char *const *known);

/* Integers must be JSON integers in [lo, hi]. */
shoal_err shoal_cfg_int(cfg_ctx *c, const json_t *parent, const char *key, int required, int64_t lo,
                        int64_t hi, int64_t *out);
shoal_err shoal_cfg_u32(cfg_ctx *c, const json_t *parent, const char *key, int required,
                        uint32_t lo, uint32_t hi, uint32_t *out);

/* Numbers (integer or real) in the interval lo..hi, each end included or
 * open (lo_open, hi_open); checked after rounding to float. */
shoal_err shoal_cfg_float(cfg_ctx *c, const json_t *parent, const char *key, int required,
                          double lo, int lo_open, double hi, int hi_open, float *out);

/* true or false, stored as 1 or 0. */
shoal_err shoal_cfg_bool(cfg_ctx *c, const json_t *parent, const char *key, int *out);

/* A string; `expected` describes it for the messages ("a path"). *out is
 * jansson's (valid while the tree lives), NULL when absent. */
shoal_err shoal_cfg_string(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *expected, const char **out);

/* A string of `names` (count entries); *out is the index. `what` names it
 * in messages ("mode"). */
shoal_err shoal_cfg_choice(cfg_ctx *c, const json_t *parent, const char *key, int required,
                           const char *what, const char *const *names, size_t count, int *out);

/* A path from the config, relative to base_dir, into a new shoal_malloc'd
 * string. NULL on allocation failure. */
char *shoal_cfg_resolve(const char *base_dir, const char *path);

/* "an object", "a string", "true", ... for messages. */
const char *shoal_cfg_kind(const json_t *v);

/* Helpers shared by the schema's files. */
/* A copy of s; NULL with *err set (positioned) without memory. */
char *shoal_cfg_dup_string(cfg_ctx *c, const char *s, shoal_err *err);
/* Refuses `key` in `obj` when present, with `why`. */
shoal_err shoal_cfg_refuse_unused(cfg_ctx *c, const json_t *obj, const char *key, const char *why);
/* A component's own refusal (inner) as a positioned message here. */
shoal_err shoal_cfg_relay(cfg_ctx *c, shoal_err err, const shoal_errinfo *inner);
/* The names name_fn gives for 0, 1, ... until it says "?", at most cap. */
size_t shoal_cfg_names_of(const char *(*name_fn)(int), const char **names, size_t cap);

#endif
