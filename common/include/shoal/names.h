/* Shoal: tables of names for an enum's values, read both ways.
 *
 * A table is an array of strings indexed by the enum's values, written
 * with designated initializers (`[SHOAL_X_FOO] = "foo"`); values it does
 * not name are NULL. Tables are static and read-only: every function here
 * is thread-safe. Private to Shoal (not installed). */
#ifndef SHOAL_NAMES_H
#define SHOAL_NAMES_H

#include <stddef.h>

#include "shoal/err.h"

/* The number of entries of a table (an array, not a pointer). */
#define SHOAL_NAMES_COUNT(table) (sizeof(table) / sizeof((table)[0]))

/* The name of `value` in names[0..count), or `unknown` for a value the
 * table does not name (out of range, or NULL there). */
const char *shoal_names_get(const char *const *names, size_t count, int value, const char *unknown);

/* The value named `name` in names[0..count) into *value. SHOAL_EINVAL,
 * with *value untouched, for a NULL name or one the table does not hold. */
SHOAL_NODISCARD shoal_err shoal_names_find(const char *const *names, size_t count, const char *name,
                                           int *value);

#endif
