#include "shoal/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *libc_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size ? size : 1);
}

static void *libc_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    return realloc(ptr, size ? size : 1);
}

static void libc_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

static const shoal_allocator libc_allocator = {libc_malloc, libc_realloc, libc_free, NULL};
static shoal_allocator current = {libc_malloc, libc_realloc, libc_free, NULL};

void shoal_alloc_set(const shoal_allocator *a)
{
    current = a ? *a : libc_allocator;
}

void *shoal_malloc(size_t size)
{
    return current.malloc_fn(current.ctx, size);
}

void *shoal_mallocarray(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return shoal_malloc(count * size);
}

void *shoal_calloc(size_t count, size_t size)
{
    void *p = shoal_mallocarray(count, size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *shoal_realloc(void *ptr, size_t size)
{
    return current.realloc_fn(current.ctx, ptr, size);
}

shoal_err shoal_grow(void *array, size_t *cap, size_t count, size_t size, size_t first_cap)
{
    if (count < *cap)
        return SHOAL_OK;
    if (*cap > SIZE_MAX / 2)
        return SHOAL_ENOMEM;
    size_t grown = *cap ? *cap * 2 : first_cap;
    void *items;
    memcpy(&items, array, sizeof items);
    void *moved =
        grown && size && grown <= SIZE_MAX / size ? shoal_realloc(items, grown * size) : NULL;
    if (!moved)
        return SHOAL_ENOMEM;
    memcpy(array, &moved, sizeof moved);
    *cap = grown;
    return SHOAL_OK;
}

shoal_err shoal_ring_grow(void *ring, size_t *cap, size_t *head, size_t count, size_t size,
                          size_t new_cap)
{
    unsigned char *old, *moved = shoal_mallocarray(new_cap ? new_cap : 1, size);
    if (!moved)
        return SHOAL_ENOMEM;
    memcpy(&old, ring, sizeof old);
    /* The elements from *head to the end of the old array, then the ones
     * that wrapped to its start. */
    size_t tail = count < *cap - *head ? count : *cap - *head;
    if (tail)
        memcpy(moved, old + *head * size, tail * size);
    if (count > tail)
        memcpy(moved + tail * size, old, (count - tail) * size);
    shoal_free(old);
    memcpy(ring, &moved, sizeof moved);
    *cap = new_cap;
    *head = 0;
    return SHOAL_OK;
}

void shoal_free(void *ptr)
{
    if (ptr)
        current.free_fn(current.ctx, ptr);
}

char *shoal_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = shoal_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Failure-injecting allocator. */
static long fail_remaining;
static long fail_attempts;
static long fail_live;

static void *fail_malloc(void *ctx, size_t size)
{
    (void)ctx;
    fail_attempts++;
    if (fail_remaining <= 0)
        return NULL;
    fail_remaining--;
    void *p = malloc(size ? size : 1);
    if (p)
        fail_live++;
    return p;
}

static void *fail_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    fail_attempts++;
    if (fail_remaining <= 0)
        return NULL;
    fail_remaining--;
    void *p = realloc(ptr, size ? size : 1);
    if (p && !ptr)
        fail_live++;
    return p;
}

static void fail_free(void *ctx, void *ptr)
{
    (void)ctx;
    if (ptr)
        fail_live--;
    free(ptr);
}

void shoal_failalloc_install(long successes)
{
    fail_remaining = successes;
    fail_attempts = 0;
    fail_live = 0;
    shoal_allocator a = {fail_malloc, fail_realloc, fail_free, NULL};
    shoal_alloc_set(&a);
}

void shoal_failalloc_uninstall(void)
{
    shoal_alloc_set(NULL);
}

long shoal_failalloc_attempts(void)
{
    return fail_attempts;
}

long shoal_failalloc_live(void)
{
    return fail_live;
}
