#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "shoal/alloc.h"

Test(common_alloc, calloc_zeroes_and_overflow_returns_null)
{
    unsigned char *p = shoal_calloc(16, 4);
    cr_assert_not_null(p);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(p[i], 0);
    shoal_free(p);
    cr_assert_null(shoal_calloc(SIZE_MAX / 2, 4));
    cr_assert_null(shoal_mallocarray(SIZE_MAX / 8, 16));
    shoal_free(NULL);
}

Test(common_alloc, strdup_copies)
{
    char *s = shoal_strdup("population");
    cr_assert_str_eq(s, "population");
    shoal_free(s);
}

Test(common_alloc, failalloc_fails_after_the_given_number_of_successes)
{
    shoal_failalloc_install(2);
    void *a = shoal_malloc(8), *b = shoal_malloc(8), *c = shoal_malloc(8);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(c);
    cr_assert_null(shoal_realloc(a, 32));
    cr_assert_eq(shoal_failalloc_attempts(), 4);
    cr_assert_eq(shoal_failalloc_live(), 2);
    shoal_free(a);
    shoal_free(b);
    cr_assert_eq(shoal_failalloc_live(), 0);
    shoal_failalloc_uninstall();
    void *d = shoal_malloc(8);
    cr_assert_not_null(d);
    shoal_free(d);
}

struct counting {
    int mallocs, frees;
};

static void *count_malloc(void *ctx, size_t n)
{
    ((struct counting *)ctx)->mallocs++;
    return malloc(n);
}

static void *count_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return realloc(p, n);
}

static void count_free(void *ctx, void *p)
{
    ((struct counting *)ctx)->frees++;
    free(p);
}

Test(common_alloc, installed_allocator_receives_every_call)
{
    struct counting c = {0};
    shoal_allocator a = {count_malloc, count_realloc, count_free, &c};
    shoal_alloc_set(&a);
    void *p = shoal_calloc(3, 3);
    char *s = shoal_strdup("x");
    shoal_free(p);
    shoal_free(s);
    shoal_alloc_set(NULL);
    cr_assert_eq(c.mallocs, 2);
    cr_assert_eq(c.frees, 2);
}

Test(common_alloc, grow_doubles_only_when_full_and_keeps_the_elements)
{
    int *v = NULL;
    size_t cap = 0, count = 0;
    size_t caps_seen[8], changes = 0;
    for (int i = 0; i < 20; i++) {
        size_t before = cap;
        cr_assert_eq(shoal_grow(&v, &cap, count, sizeof *v, 3), SHOAL_OK);
        if (cap != before)
            caps_seen[changes++] = cap;
        cr_assert_gt(cap, count);
        v[count++] = i * i;
    }
    cr_assert_eq(changes, 4);
    cr_assert_eq(caps_seen[0], 3);
    cr_assert_eq(caps_seen[1], 6);
    cr_assert_eq(caps_seen[2], 12);
    cr_assert_eq(caps_seen[3], 24);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(v[i], i * i);
    shoal_free(v);
}

Test(common_alloc, grow_failing_leaves_the_array_as_it_was)
{
    int *v = NULL;
    size_t cap = 0;
    cr_assert_eq(shoal_grow(&v, &cap, 0, sizeof *v, 2), SHOAL_OK);
    v[0] = 7;
    v[1] = 8;
    int *was = v;
    shoal_failalloc_install(0);
    shoal_err err = shoal_grow(&v, &cap, 2, sizeof *v, 2);
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM);
    cr_assert_eq(v, was);
    cr_assert_eq(cap, 2);
    cr_assert_eq(v[1], 8);
    /* A size that overflows is refused before any allocation. */
    size_t huge_cap = SIZE_MAX / 4 + 1;
    cr_assert_eq(shoal_grow(&v, &huge_cap, huge_cap, 2, 2), SHOAL_ENOMEM);
    cr_assert_eq(v, was);
    shoal_free(v);
}

Test(common_alloc, ring_grow_unwraps_the_ring_in_order)
{
    /* A ring of 4 holding 10, 11, 12 from index 3: 10 at 3, 11 at 0, 12 at 1. */
    const int slots[4] = {11, 12, -1, 10};
    int *ring = shoal_malloc(sizeof slots);
    cr_assert_not_null(ring);
    memcpy(ring, slots, sizeof slots);
    size_t cap = 4, head = 3;
    cr_assert_eq(shoal_ring_grow(&ring, &cap, &head, 3, sizeof *ring, 8), SHOAL_OK);
    cr_assert_eq(cap, 8);
    cr_assert_eq(head, 0);
    cr_assert_eq(ring[0], 10);
    cr_assert_eq(ring[1], 11);
    cr_assert_eq(ring[2], 12);
    shoal_free(ring);

    /* An empty ring that never had an array. */
    int *none = NULL;
    cap = head = 0;
    cr_assert_eq(shoal_ring_grow(&none, &cap, &head, 0, sizeof *none, 16), SHOAL_OK);
    cr_assert_not_null(none);
    cr_assert_eq(cap, 16);
    shoal_free(none);
}

Test(common_alloc, ring_grow_failing_leaves_the_ring_as_it_was)
{
    const int slots[2] = {5, 4};
    int *ring = shoal_malloc(sizeof slots);
    cr_assert_not_null(ring);
    memcpy(ring, slots, sizeof slots);
    size_t cap = 2, head = 1;
    const struct {
        int *ring;
        size_t cap, head;
    } before = {ring, cap, head};
    shoal_failalloc_install(0);
    cr_assert_eq(shoal_ring_grow(&ring, &cap, &head, 2, sizeof *ring, 4), SHOAL_ENOMEM);
    shoal_failalloc_uninstall();
    cr_assert(ring == before.ring && cap == before.cap && head == before.head);
    cr_assert(memcmp(ring, slots, sizeof slots) == 0, "the elements stay where they were");
    shoal_free(ring);
}
