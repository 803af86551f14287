/* Shoal: the one allocation hook.
 *
 * All Shoal allocations go through shoal_malloc/shoal_calloc/shoal_realloc/
 * shoal_free, which call the installed allocator (default: the C library).
 * Tests install a failure-injecting allocator to prove that every allocation
 * failure is reported as SHOAL_ENOMEM and leaks nothing. */
#ifndef SHOAL_ALLOC_H
#define SHOAL_ALLOC_H

#include <stddef.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_allocator {
    void *(*malloc_fn)(void *ctx, size_t size);             /* required */
    void *(*realloc_fn)(void *ctx, void *ptr, size_t size); /* required */
    void (*free_fn)(void *ctx, void *ptr);                  /* required; ptr may be NULL */
    void *ctx;
} shoal_allocator;

/* Installs `a` (copied); NULL restores the C library allocator. Install it
 * before any Shoal object exists and never while another thread allocates;
 * memory must be freed by the allocator that made it. */
SHOAL_API void shoal_alloc_set(const shoal_allocator *a);

/* Like malloc/calloc/realloc/free. shoal_calloc and shoal_mallocarray check
 * the multiplication for overflow and return NULL on it. shoal_malloc(0)
 * returns a unique pointer or NULL; shoal_free(NULL) is a no-op. Thread-safe
 * if the installed allocator is. */
SHOAL_API void *shoal_malloc(size_t size);
SHOAL_API void *shoal_calloc(size_t count, size_t size);
SHOAL_API void *shoal_mallocarray(size_t count, size_t size);
SHOAL_API void *shoal_realloc(void *ptr, size_t size);
SHOAL_API void shoal_free(void *ptr);
SHOAL_API char *shoal_strdup(const char *s);

/* Makes room for one more element in a growable array of `size`-byte
 * elements holding `count` of *cap: once count has reached *cap, moves the
 * array to twice *cap elements (first_cap when *cap is 0) and updates *cap.
 * `array` is the address of the caller's array pointer (a T **; Shoal
 * assumes, as POSIX does, that all object pointers look alike).
 * SHOAL_ENOMEM, with the array and *cap as they were, when the allocation
 * fails or the size overflows. As thread-safe as the allocator; the array
 * is the caller's to guard. */
SHOAL_NODISCARD shoal_err shoal_grow(void *array, size_t *cap, size_t count, size_t size,
                                     size_t first_cap);

/* Moves a ring buffer of `size`-byte elements (the `count` from index
 * *head on, wrapping at *cap) into a new array of new_cap >= count
 * elements, in order from index 0: *cap becomes new_cap and *head 0.
 * `ring` is the address of the caller's array pointer, as for shoal_grow.
 * SHOAL_ENOMEM, with the ring as it was, when the allocation fails. */
SHOAL_NODISCARD shoal_err shoal_ring_grow(void *ring, size_t *cap, size_t *head, size_t count,
                                          size_t size, size_t new_cap);

/* Failure injection for tests: after `successes` more allocations succeed,
 * every following allocation fails (returns NULL) until
 * shoal_failalloc_uninstall(). Counts are global and not thread-safe: use
 * from single-threaded tests only. */
SHOAL_API void shoal_failalloc_install(long successes);
SHOAL_API void shoal_failalloc_uninstall(void);
/* Number of allocations made (successful or not) since install. */
SHOAL_API long shoal_failalloc_attempts(void);
/* Number of blocks allocated through the hook and not yet freed since
 * install; 0 after a clean unwind. */
SHOAL_API long shoal_failalloc_live(void);

#ifdef __cplusplus
}
#endif

#endif
