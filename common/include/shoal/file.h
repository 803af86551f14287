/* Shoal: reading a small file whole.
 *
 * For configuration, certificates and tokens: a regular file of bounded
 * size, read into shoal_malloc'd memory with a NUL after its last byte.
 * Internal to Shoal (not installed). Thread-safe: no shared state. */
#ifndef SHOAL_FILE_H
#define SHOAL_FILE_H

#include <stddef.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads `path` whole into *out (NUL-terminated; *len excludes the NUL, len
 * may be NULL). `what` names the file in errors ("the config file", "the CA
 * file"); `hint`, when not NULL, is appended to the open and size errors to
 * say what to do. Refused: anything but a regular file (SHOAL_EIO), a file of
 * more than `max_bytes` (SHOAL_ELIMIT), a file that grew while it was read
 * (SHOAL_EIO). The buffer is the caller's: shoal_file_free wipes it (files
 * read this way may hold secrets). On error *out is NULL and nothing of the
 * file is left in memory. */
SHOAL_NODISCARD shoal_err shoal_file_read(const char *path, const char *what, const char *hint,
                                          size_t max_bytes, char **out, size_t *len,
                                          shoal_errinfo *ei);

/* Wipes the first len + 1 bytes of buf (the text and its NUL) and frees it.
 * NULL is ignored. */
void shoal_file_free(char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
