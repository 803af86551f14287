#include <string.h>

#include "session_map_int.h"
#include "shoal/alloc.h"

static size_t hash(shoal_session_id id)
{
    /* splitmix64 finaliser: session ids are often sequential. */
    uint64_t z = id + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (size_t)(z ^ (z >> 31));
}

shoal_err shoal_session_map_init(struct session_map *m, size_t cap)
{
    size_t c = 16;
    while (c < cap)
        c *= 2;
    memset(m, 0, sizeof *m);
    m->entries = shoal_calloc(c, sizeof *m->entries);
    if (!m->entries)
        return SHOAL_ENOMEM;
    m->cap = c;
    return SHOAL_OK;
}

void shoal_session_map_fini(struct session_map *m)
{
    shoal_free(m->entries);
    memset(m, 0, sizeof *m);
}

static struct session *slot_for(struct session *entries, size_t cap, shoal_session_id id)
{
    size_t i = hash(id) & (cap - 1);
    struct session *tomb = NULL;
    for (;;) {
        struct session *s = &entries[i];
        if (s->state == SESSION_FREE)
            return tomb ? tomb : s;
        if (s->state == SESSION_TOMB) {
            if (!tomb)
                tomb = s;
        } else if (s->id == id) {
            return s;
        }
        i = (i + 1) & (cap - 1);
    }
}

shoal_err shoal_session_map_reserve(struct session_map *m)
{
    /* Keep the table at most 70% used, counting tombstones. */
    if ((m->used + 1) * 10 <= m->cap * 7)
        return SHOAL_OK;
    size_t cap = m->cap;
    while ((m->count + 1) * 10 > cap * 5)
        cap *= 2;
    struct session *entries = shoal_calloc(cap, sizeof *entries);
    if (!entries)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct session *s = &m->entries[i];
        if (s->state != SESSION_FREE && s->state != SESSION_TOMB)
            *slot_for(entries, cap, s->id) = *s;
    }
    shoal_free(m->entries);
    m->entries = entries;
    m->cap = cap;
    m->used = m->count;
    return SHOAL_OK;
}

struct session *shoal_session_map_insert(struct session_map *m, shoal_session_id id)
{
    struct session *s = slot_for(m->entries, m->cap, id);
    if (s->state == SESSION_FREE)
        m->used++;
    memset(s, 0, sizeof *s);
    s->id = id;
    s->state = SESSION_SELECTED;
    m->count++;
    return s;
}

struct session *shoal_session_map_find(const struct session_map *m, shoal_session_id id)
{
    size_t i = hash(id) & (m->cap - 1);
    for (;;) {
        struct session *s = &m->entries[i];
        if (s->state == SESSION_FREE)
            return NULL;
        if (s->state != SESSION_TOMB && s->id == id)
            return s;
        i = (i + 1) & (m->cap - 1);
    }
}

void shoal_session_map_remove(struct session_map *m, shoal_session_id id)
{
    struct session *s = shoal_session_map_find(m, id);
    if (!s)
        return;
    s->state = SESSION_TOMB;
    m->count--;
}
