#include "u64map.h"

#include "shoal/alloc.h"

static size_t slot_of(uint64_t key, size_t cap)
{
    /* Fibonacci hashing: consecutive ids (connections, sessions) spread out. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

void shoal_u64map_init(u64map *m)
{
    m->keys = NULL;
    m->values = NULL;
    m->cap = m->len = 0;
}

void shoal_u64map_fini(u64map *m)
{
    shoal_free(m->keys);
    shoal_free(m->values);
    shoal_u64map_init(m);
}

void shoal_u64map_fini_with(u64map *m, void (*free_value)(void *value))
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            free_value(m->values[i]);
    shoal_u64map_fini(m);
}

static shoal_err grow(u64map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = shoal_calloc(cap, sizeof *keys);
    void **values = shoal_calloc(cap, sizeof *values);
    if (!keys || !values) {
        shoal_free(keys);
        shoal_free(values);
        return SHOAL_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t s = slot_of(m->keys[i], cap);
        while (keys[s])
            s = (s + 1) & (cap - 1);
        keys[s] = m->keys[i];
        values[s] = m->values[i];
    }
    shoal_free(m->keys);
    shoal_free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = cap;
    return SHOAL_OK;
}

shoal_err shoal_u64map_put(u64map *m, uint64_t key, void *value)
{
    if (key == 0)
        return SHOAL_EINVAL;
    if ((m->len + 1) * 4 > m->cap * 3) {
        shoal_err err = grow(m);
        if (err)
            return err;
    }
    size_t s = slot_of(key, m->cap);
    while (m->keys[s] && m->keys[s] != key)
        s = (s + 1) & (m->cap - 1);
    if (!m->keys[s])
        m->len++;
    m->keys[s] = key;
    m->values[s] = value;
    return SHOAL_OK;
}

void *shoal_u64map_get(const u64map *m, uint64_t key)
{
    if (!m->cap || key == 0)
        return NULL;
    size_t s = slot_of(key, m->cap);
    while (m->keys[s]) {
        if (m->keys[s] == key)
            return m->values[s];
        s = (s + 1) & (m->cap - 1);
    }
    return NULL;
}

void *shoal_u64map_take(u64map *m, uint64_t key)
{
    if (!m->cap || key == 0)
        return NULL;
    size_t s = slot_of(key, m->cap);
    while (m->keys[s] && m->keys[s] != key)
        s = (s + 1) & (m->cap - 1);
    if (!m->keys[s])
        return NULL;
    void *value = m->values[s];
    m->keys[s] = 0;
    m->values[s] = NULL;
    m->len--;
    /* Backward-shift deletion keeps every probe chain unbroken. */
    size_t hole = s, i = (s + 1) & (m->cap - 1);
    while (m->keys[i]) {
        size_t home = slot_of(m->keys[i], m->cap);
        /* Move keys[i] into the hole if the hole lies on its probe path. */
        size_t dist_i = (i - home) & (m->cap - 1);
        size_t dist_hole = (hole - home) & (m->cap - 1);
        if (dist_hole < dist_i) {
            m->keys[hole] = m->keys[i];
            m->values[hole] = m->values[i];
            m->keys[i] = 0;
            m->values[i] = NULL;
            hole = i;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return value;
}
