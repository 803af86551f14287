/* Sessions the round engine knows about, keyed by session id: an
 * open-addressing hash table with linear probing and tombstones. Only
 * devices selected for a round (or still owing a late report) are in it, so
 * it stays as small as the rounds are, whatever the population. */
#ifndef SHOAL_SESSION_MAP_INT_H
#define SHOAL_SESSION_MAP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/round.h"

enum session_state {
    SESSION_FREE = 0,
    SESSION_TOMB,       /* removed; keeps probe chains intact */
    SESSION_SELECTED,   /* accepted, waiting for configuration */
    SESSION_CONFIGURED, /* plan and model sent; report expected */
    SESSION_LATE,       /* its round closed; a report will be refused as late */
};

struct session {
    shoal_session_id id;
    uint8_t state;
    uint8_t task;
    uint8_t delivered;
    int8_t slot; /* round slot, or -1 for an asynchronous training session */
    uint64_t version;
    int64_t configured_at;
};

struct session_map {
    struct session *entries;
    size_t cap;   /* power of two */
    size_t count; /* live entries */
    size_t used;  /* live entries + tombstones */
};

shoal_err shoal_session_map_init(struct session_map *m, size_t cap);
void shoal_session_map_fini(struct session_map *m);
/* Makes room so that the next shoal_session_map_insert cannot fail. */
shoal_err shoal_session_map_reserve(struct session_map *m);
/* Inserts a zeroed entry for id (which must not be present). */
struct session *shoal_session_map_insert(struct session_map *m, shoal_session_id id);
struct session *shoal_session_map_find(const struct session_map *m, shoal_session_id id);
void shoal_session_map_remove(struct session_map *m, shoal_session_id id);

#endif
