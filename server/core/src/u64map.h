/* A hash map from non-zero uint64 keys to pointers (open addressing with
 * linear probing and backward-shift deletion). One owner; not
 * thread-safe. */
#ifndef SHOAL_U64MAP_H
#define SHOAL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

typedef struct u64map {
    uint64_t *keys; /* 0 marks an empty slot */
    void **values;
    size_t cap, len;
} u64map;

void shoal_u64map_init(u64map *m);
void shoal_u64map_fini(u64map *m);
/* shoal_u64map_fini for a map that owns its values: each goes to
 * free_value first. */
void shoal_u64map_fini_with(u64map *m, void (*free_value)(void *value));
/* Inserts or replaces. SHOAL_ENOMEM leaves the map unchanged. */
shoal_err shoal_u64map_put(u64map *m, uint64_t key, void *value);
void *shoal_u64map_get(const u64map *m, uint64_t key);
/* Removes key and returns its value (NULL if absent). */
void *shoal_u64map_take(u64map *m, uint64_t key);

/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->keys[i]) ... */

#endif
