/* Where a value sits in JSON text.
 *
 * jansson does not record positions, so error messages find them again: the
 * text is scanned along a path of object keys and array indices (strings
 * with escapes, nesting), as jansson parsed it. Columns count characters
 * (UTF-8 sequences), 1-based, like jansson's own error positions. */
#ifndef SHOAL_JSON_LOCATE_INT_H
#define SHOAL_JSON_LOCATE_INT_H

#include <stddef.h>

/* One step of a path: an object member (key != NULL, NUL-terminated,
 * compared after unescaping) or an array element (key == NULL, index). */
typedef struct json_step {
    const char *key;
    size_t index;
} json_step;

typedef struct json_pos {
    long line;   /* 1-based */
    long column; /* 1-based, in characters */
} json_pos;

/* Follows `path` (count steps) from the top-level value of `text` (len
 * bytes). Returns how many steps were found: count when the whole path
 * exists. *value receives the position of the deepest value reached (the
 * value at the path, or the object or array where the first missing step
 * should have been); *key, when the last step found is an object member, the
 * position of its key (else the same as *value). Text that is not valid
 * JSON gives a best-effort answer and never a read outside text[0, len). */
size_t shoal_json_locate(const char *text, size_t len, const json_step *path, size_t count,
                         json_pos *value, json_pos *key);

#endif
