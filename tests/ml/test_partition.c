#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal/alloc.h"
#include "shoal/partition.h"
#include "shoal/rng.h"

#define ALL_KINDS 7

static const shoal_partition_kind all_kinds[ALL_KINDS] = {
    SHOAL_PARTITION_IID,
    SHOAL_PARTITION_DIRICHLET,
    SHOAL_PARTITION_SHARDS,
    SHOAL_PARTITION_CONTIGUOUS,
    SHOAL_PARTITION_ROUND_ROBIN,
    SHOAL_PARTITION_RANDOM,
    SHOAL_PARTITION_OVERLAP_RESHUFFLE,
};

/* Example i has label i mod classes: every class the same size. */
static int32_t *balanced_labels(size_t count, uint32_t classes)
{
    int32_t *labels = malloc(count * sizeof *labels);
    cr_assert_not_null(labels);
    for (size_t i = 0; i < count; i++)
        labels[i] = (int32_t)(i % classes);
    return labels;
}

/* Labels drawn uniformly at random: classes of uneven sizes. */
static int32_t *random_labels(size_t count, uint32_t classes, uint64_t seed)
{
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    int32_t *labels = malloc(count * sizeof *labels);
    cr_assert_not_null(labels);
    for (size_t i = 0; i < count; i++)
        labels[i] = (int32_t)shoal_rng_below(&rng, classes);
    return labels;
}

static shoal_partition *make(const shoal_partition_config *cfg, const int32_t *labels, size_t count,
                             uint32_t classes, uint32_t clients, uint64_t seed)
{
    shoal_partition *p = NULL;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_partition_new(cfg, labels, count, classes, clients, seed, &p, &ei);
    cr_assert_eq(err, SHOAL_OK, "%s partition of %zu examples among %u clients: %s: %s",
                 shoal_partition_kind_name(cfg->kind), count, clients, shoal_err_name(err), ei.msg);
    cr_assert_not_null(p);
    cr_assert_eq(p->clients, clients);
    return p;
}

static shoal_partition *make_kind(shoal_partition_kind kind, const int32_t *labels, size_t count,
                                  uint32_t classes, uint32_t clients, uint64_t seed)
{
    shoal_partition_config cfg = shoal_partition_defaults(kind);
    return make(&cfg, labels, count, classes, clients, seed);
}

/* Offsets start at 0 and never decrease; every index is in range. */
static void assert_valid(const shoal_partition *p, size_t count)
{
    cr_assert_eq(p->offsets[0], 0);
    for (uint32_t c = 0; c < p->clients; c++)
        cr_assert_leq(p->offsets[c], p->offsets[c + 1], "offsets decrease at client %u", c);
    for (uint64_t i = 0; i < p->offsets[p->clients]; i++)
        cr_assert_lt(p->indices[i], count, "index %u at position %llu is out of range",
                     p->indices[i], (unsigned long long)i);
}

/* Every example is held by exactly one client, once. */
static void assert_permutation(const shoal_partition *p, size_t count)
{
    assert_valid(p, count);
    cr_assert_eq(p->offsets[p->clients], count);
    unsigned char *seen = calloc(count, 1);
    cr_assert_not_null(seen);
    for (size_t i = 0; i < count; i++) {
        cr_assert_eq(seen[p->indices[i]], 0, "example %u is assigned twice", p->indices[i]);
        seen[p->indices[i]] = 1;
    }
    free(seen);
}

static int same_partition(const shoal_partition *a, const shoal_partition *b)
{
    if (a->clients != b->clients)
        return 0;
    if (memcmp(a->offsets, b->offsets, ((size_t)a->clients + 1) * sizeof *a->offsets) != 0)
        return 0;
    return memcmp(a->indices, b->indices, a->offsets[a->clients] * sizeof *a->indices) == 0;
}

static uint32_t distinct_labels(const shoal_partition *p, uint32_t client, const int32_t *labels,
                                uint32_t classes)
{
    uint32_t held[64] = {0}, distinct = 0;
    cr_assert_leq(classes, 64);
    const uint32_t *idx = shoal_partition_indices(p, client);
    for (size_t j = 0; j < shoal_partition_size(p, client); j++)
        if (held[labels[idx[j]]]++ == 0)
            distinct++;
    return distinct;
}

/* Mean over clients of the share of a client's examples that belong to its
 * most common class: 1/classes for a perfectly even mix, 1 when every client
 * holds a single class. */
static double mean_max_class_fraction(const shoal_partition *p, const int32_t *labels,
                                      uint32_t classes)
{
    double total = 0.0;
    uint32_t nonempty = 0;
    for (uint32_t c = 0; c < p->clients; c++) {
        uint32_t held[64] = {0}, most = 0;
        size_t n = shoal_partition_size(p, c);
        const uint32_t *idx = shoal_partition_indices(p, c);
        for (size_t j = 0; j < n; j++)
            if (++held[labels[idx[j]]] > most)
                most = held[labels[idx[j]]];
        if (n) {
            total += (double)most / (double)n;
            nonempty++;
        }
    }
    cr_assert_leq(classes, 64);
    return total / nonempty;
}

Test(sim_partition, kind_names_round_trip)
{
    const char *expected[ALL_KINDS] = {"iid",         "dirichlet", "shards",           "contiguous",
                                       "round-robin", "random",    "overlap-reshuffle"};
    for (int i = 0; i < ALL_KINDS; i++) {
        cr_assert_str_eq(shoal_partition_kind_name(all_kinds[i]), expected[i]);
        shoal_partition_kind kind = SHOAL_PARTITION_IID;
        cr_assert_eq(shoal_partition_kind_parse(expected[i], &kind), SHOAL_OK);
        cr_assert_eq(kind, all_kinds[i]);
    }
    cr_assert_str_eq(shoal_partition_kind_name((shoal_partition_kind)99), "?");
}

Test(sim_partition, kind_parse_rejects_unknown_names)
{
    shoal_partition_kind kind = SHOAL_PARTITION_SHARDS;
    const char *bad[] = {"", "IID", "round_robin", "dirichlet ", "overlap", "iidx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(shoal_partition_kind_parse(bad[i], &kind), SHOAL_EINVAL, "\"%s\"", bad[i]);
    cr_assert_eq(kind, SHOAL_PARTITION_SHARDS, "a failed parse left *out alone");
    cr_assert_eq(shoal_partition_kind_parse(NULL, &kind), SHOAL_EINVAL);
    cr_assert_eq(shoal_partition_kind_parse("iid", NULL), SHOAL_EINVAL);
}

Test(sim_partition, defaults_are_the_documented_values)
{
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_SHARDS);
    cr_assert_eq(cfg.kind, SHOAL_PARTITION_SHARDS);
    cr_assert_float_eq(cfg.alpha, 0.5, 1e-12);
    cr_assert_eq(cfg.shards_per_client, 2);
    cr_assert_float_eq(cfg.overlap, 0.1, 1e-12);
    cr_assert_eq(cfg.min_size, 10);
    cr_assert_eq(cfg.examples_per_client, 20);
}

Test(sim_partition, every_scheme_assigns_only_valid_indices)
{
    int32_t *labels = random_labels(6007, 10, 3);
    for (int i = 0; i < ALL_KINDS; i++) {
        shoal_partition *p = make_kind(all_kinds[i], labels, 6007, 10, 97, 1);
        assert_valid(p, 6007);
        shoal_partition_free(p);
    }
    /* Dirichlet sampling with sharing, too. */
    shoal_partition *p = make_kind(SHOAL_PARTITION_DIRICHLET, labels, 6007, 10, 5000, 1);
    assert_valid(p, 6007);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, every_scheme_is_reproducible_from_its_seed)
{
    int32_t *labels = random_labels(3000, 10, 4);
    for (int i = 0; i < ALL_KINDS; i++) {
        shoal_partition *a = make_kind(all_kinds[i], labels, 3000, 10, 30, 42);
        shoal_partition *b = make_kind(all_kinds[i], labels, 3000, 10, 30, 42);
        shoal_partition *c = make_kind(all_kinds[i], labels, 3000, 10, 30, 43);
        cr_assert(same_partition(a, b), "%s: same seed, different partition",
                  shoal_partition_kind_name(all_kinds[i]));
        int seeded = all_kinds[i] != SHOAL_PARTITION_CONTIGUOUS &&
                     all_kinds[i] != SHOAL_PARTITION_ROUND_ROBIN;
        cr_assert_eq(!same_partition(a, c), seeded, "%s: the seed %s matter",
                     shoal_partition_kind_name(all_kinds[i]), seeded ? "should" : "should not");
        shoal_partition_free(a);
        shoal_partition_free(b);
        shoal_partition_free(c);
    }
    free(labels);
}

Test(sim_partition, exclusive_schemes_cover_every_example_exactly_once)
{
    const shoal_partition_kind exclusive[] = {
        SHOAL_PARTITION_IID,    SHOAL_PARTITION_CONTIGUOUS, SHOAL_PARTITION_ROUND_ROBIN,
        SHOAL_PARTITION_SHARDS, SHOAL_PARTITION_DIRICHLET,  SHOAL_PARTITION_RANDOM,
    };
    int32_t *labels = random_labels(6007, 10, 5);
    for (size_t i = 0; i < sizeof exclusive / sizeof exclusive[0]; i++) {
        for (uint32_t clients = 1; clients <= 100; clients += 33) {
            shoal_partition *p = make_kind(exclusive[i], labels, 6007, 10, clients, 7);
            assert_permutation(p, 6007);
            shoal_partition_free(p);
        }
    }
    free(labels);
}

Test(sim_partition, iid_sizes_differ_by_at_most_one_and_the_order_is_shuffled)
{
    shoal_partition *p = make_kind(SHOAL_PARTITION_IID, NULL, 6003, 0, 100, 9);
    assert_permutation(p, 6003);
    /* 6003 = 100 * 60 + 3: three clients of 61, the rest 60. */
    uint32_t larger = 0;
    for (uint32_t c = 0; c < 100; c++) {
        size_t n = shoal_partition_size(p, c);
        cr_assert(n == 60 || n == 61, "client %u holds %zu", c, n);
        larger += n == 61;
    }
    cr_assert_eq(larger, 3);
    size_t in_place = 0;
    for (size_t i = 0; i < 6003; i++)
        in_place += p->indices[i] == i;
    cr_assert_lt(in_place, 30, "%zu of 6003 examples did not move", in_place);
    shoal_partition_free(p);
}

Test(sim_partition, contiguous_keeps_dataset_order_in_equal_slices)
{
    shoal_partition *p = make_kind(SHOAL_PARTITION_CONTIGUOUS, NULL, 1005, 0, 10, 9);
    for (size_t i = 0; i < 1005; i++)
        cr_assert_eq(p->indices[i], i);
    for (uint32_t c = 0; c < 10; c++)
        cr_assert_eq(shoal_partition_size(p, c), c < 5 ? 101u : 100u, "client %u", c);
    shoal_partition_free(p);
}

Test(sim_partition, round_robin_gives_example_i_to_client_i_mod_clients)
{
    const uint32_t clients = 7;
    shoal_partition *p = make_kind(SHOAL_PARTITION_ROUND_ROBIN, NULL, 100, 0, clients, 9);
    assert_permutation(p, 100);
    for (uint32_t c = 0; c < clients; c++) {
        const uint32_t *idx = shoal_partition_indices(p, c);
        size_t n = shoal_partition_size(p, c);
        cr_assert_eq(n, (100 - c + clients - 1) / clients, "client %u holds %zu", c, n);
        for (size_t j = 0; j < n; j++)
            cr_assert_eq(idx[j], c + j * clients, "client %u position %zu", c, j);
    }
    shoal_partition_free(p);
}

/* Checks the shards construction independently: sort by (label, index),
 * cut into clients * spc slices whose sizes differ by at most one, and
 * check that each client's examples are exactly spc whole slices. */
static void assert_whole_shards(const shoal_partition *p, const int32_t *labels, size_t count,
                                uint32_t classes, uint32_t spc)
{
    assert_permutation(p, count);
    size_t shard_count = (size_t)p->clients * spc;
    /* rank[i]: position of example i in the label-sorted order. */
    size_t *rank = malloc(count * sizeof *rank);
    size_t at = 0;
    for (uint32_t k = 0; k < classes; k++)
        for (size_t i = 0; i < count; i++)
            if ((uint32_t)labels[i] == k)
                rank[i] = at++;
    size_t *shard_of_rank = malloc(count * sizeof *shard_of_rank);
    size_t *shard_size = calloc(shard_count, sizeof *shard_size);
    size_t base = count / shard_count, extra = count % shard_count;
    at = 0;
    for (size_t s = 0; s < shard_count; s++) {
        shard_size[s] = base + (s < extra);
        for (size_t j = 0; j < shard_size[s]; j++)
            shard_of_rank[at++] = s;
    }
    size_t *seen = calloc(shard_count, sizeof *seen);
    for (uint32_t c = 0; c < p->clients; c++) {
        const uint32_t *idx = shoal_partition_indices(p, c);
        size_t n = shoal_partition_size(p, c), shards = 0;
        for (size_t j = 0; j < n; j++)
            if (seen[shard_of_rank[rank[idx[j]]]]++ == 0)
                shards++;
        cr_assert_eq(shards, spc, "client %u holds pieces of %zu shards", c, shards);
        for (size_t j = 0; j < n; j++) {
            size_t s = shard_of_rank[rank[idx[j]]];
            cr_assert_eq(seen[s], shard_size[s], "client %u holds %zu of the %zu in shard %zu", c,
                         seen[s], shard_size[s], s);
        }
    }
    free(rank);
    free(shard_of_rank);
    free(shard_size);
    free(seen);
}

Test(sim_partition, shards_give_each_client_exactly_its_whole_shards)
{
    int32_t *labels = balanced_labels(6000, 10);
    shoal_partition *p = make_kind(SHOAL_PARTITION_SHARDS, labels, 6000, 10, 100, 11);
    assert_whole_shards(p, labels, 6000, 10, 2);
    for (uint32_t c = 0; c < 100; c++)
        cr_assert_eq(shoal_partition_size(p, c), 60);
    shoal_partition_free(p);
    free(labels);

    /* Uneven: 6007 examples in 150 shards of 40 or 41, three per client. */
    labels = random_labels(6007, 10, 12);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_SHARDS);
    cfg.shards_per_client = 3;
    p = make(&cfg, labels, 6007, 10, 50, 13);
    assert_whole_shards(p, labels, 6007, 10, 3);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, shards_leave_clients_with_at_most_two_labels)
{
    /* 600 per class, 200 shards of 30: no shard straddles two classes. */
    int32_t *labels = balanced_labels(6000, 10);
    shoal_partition *p = make_kind(SHOAL_PARTITION_SHARDS, labels, 6000, 10, 100, 14);
    uint32_t single = 0;
    for (uint32_t c = 0; c < 100; c++) {
        uint32_t d = distinct_labels(p, c, labels, 10);
        cr_assert(d == 1 || d == 2, "client %u holds %u labels", c, d);
        single += d == 1;
    }
    cr_assert_lt(single, 30, "random dealing gave %u clients two shards of one class", single);
    shoal_partition_free(p);
    free(labels);

    /* Uneven classes: a few shards straddle a class boundary. */
    labels = random_labels(6000, 10, 15);
    p = make_kind(SHOAL_PARTITION_SHARDS, labels, 6000, 10, 100, 16);
    uint32_t at_most_two = 0;
    for (uint32_t c = 0; c < 100; c++) {
        uint32_t d = distinct_labels(p, c, labels, 10);
        cr_assert_leq(d, 4, "client %u holds %u labels from 2 shards", c, d);
        at_most_two += d <= 2;
    }
    cr_assert_geq(at_most_two, 80, "only %u of 100 clients hold at most 2 labels", at_most_two);
    shoal_partition_free(p);
    free(labels);
}

/* NIID-Bench's setting: 60,000 examples over 100 clients. (At 6000
 * examples, alpha 0.1 leaves about ten clients short of 10 in every draw;
 * see the test after next.) */
Test(sim_partition, dirichlet_gives_every_client_at_least_min_size)
{
    int32_t *labels = balanced_labels(60000, 10);
    const double alphas[] = {0.1, 0.5, 1.0, 100.0};
    for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++) {
        for (uint32_t min_size = 10; min_size <= 30; min_size += 20) {
            shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
            cfg.alpha = alphas[a];
            cfg.min_size = min_size;
            shoal_partition *p = make(&cfg, labels, 60000, 10, 100, 17);
            assert_permutation(p, 60000);
            /* Each client's examples are shuffled, not left in dataset or
             * class order. */
            uint32_t sorted = 0;
            for (uint32_t c = 0; c < 100; c++) {
                const uint32_t *idx = shoal_partition_indices(p, c);
                size_t j = 1, n = shoal_partition_size(p, c);
                while (j < n && idx[j - 1] < idx[j])
                    j++;
                sorted += j == n;
            }
            cr_assert_lt(sorted, 5, "%u clients hold their examples in dataset order", sorted);
            for (uint32_t c = 0; c < 100; c++)
                cr_assert_geq(shoal_partition_size(p, c), min_size,
                              "alpha %g: client %u holds %zu < %u", alphas[a], c,
                              shoal_partition_size(p, c), min_size);
            shoal_partition_free(p);
        }
    }
    free(labels);
}

Test(sim_partition, dirichlet_small_alpha_skews_labels_far_more_than_large_alpha)
{
    int32_t *labels = balanced_labels(60000, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.alpha = 0.1;
    shoal_partition *skewed = make(&cfg, labels, 60000, 10, 100, 18);
    cfg.alpha = 100.0;
    shoal_partition *even = make(&cfg, labels, 60000, 10, 100, 18);
    double skew = mean_max_class_fraction(skewed, labels, 10);
    double flat = mean_max_class_fraction(even, labels, 10);
    cr_log_info("dirichlet mean max-class fraction: alpha 0.1 %.3f, alpha 100 %.3f", skew, flat);
    /* Dir(0.1) over 100 clients hands each class to a few clients; Dir(100)
     * is close to the even 0.1 per class. */
    cr_assert_gt(skew, 0.6, "alpha 0.1: mean max-class fraction %.3f", skew);
    cr_assert_lt(flat, 0.2, "alpha 100: mean max-class fraction %.3f", flat);
    shoal_partition_free(skewed);
    shoal_partition_free(even);
    free(labels);
}

Test(sim_partition, dirichlet_stops_dealing_to_clients_that_hold_their_share)
{
    /* The NIID-Bench balance trick, checked exactly: classes are dealt in
     * order 0, 1, ..., and a client that already holds at least
     * count/clients examples gets nothing from the classes after. */
    int32_t *labels = random_labels(60000, 10, 32);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.alpha = 0.1;
    shoal_partition *p = make(&cfg, labels, 60000, 10, 100, 33);
    uint32_t capped = 0;
    for (uint32_t c = 0; c < 100; c++) {
        size_t per_class[10] = {0}, held = 0;
        const uint32_t *idx = shoal_partition_indices(p, c);
        for (size_t j = 0; j < shoal_partition_size(p, c); j++)
            per_class[labels[idx[j]]]++;
        for (uint32_t k = 0; k < 10; k++) {
            if (held >= 600)
                cr_assert_eq(per_class[k], 0,
                             "client %u held %zu >= 600 before class %u, then got %zu of it", c,
                             held, k, per_class[k]);
            held += per_class[k];
        }
        capped += held >= 600;
    }
    cr_assert_gt(capped, 10, "only %u clients reached their share: nothing was tested", capped);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, dirichlet_same_seed_same_partition_different_seed_different)
{
    int32_t *labels = balanced_labels(6000, 10);
    shoal_partition *a = make_kind(SHOAL_PARTITION_DIRICHLET, labels, 6000, 10, 100, 19);
    shoal_partition *b = make_kind(SHOAL_PARTITION_DIRICHLET, labels, 6000, 10, 100, 19);
    shoal_partition *c = make_kind(SHOAL_PARTITION_DIRICHLET, labels, 6000, 10, 100, 20);
    cr_assert(same_partition(a, b));
    cr_assert_not(same_partition(a, c));
    size_t same_size = 0;
    for (uint32_t k = 0; k < 100; k++)
        same_size += shoal_partition_size(a, k) == shoal_partition_size(c, k);
    cr_assert_lt(same_size, 50, "%zu of 100 clients have the same size under another seed",
                 same_size);
    shoal_partition_free(a);
    shoal_partition_free(b);
    shoal_partition_free(c);
    free(labels);
}

Test(sim_partition, dirichlet_gives_up_with_a_clear_error_when_min_size_is_unreachable)
{
    /* One class, alpha 0.001: each draw gives nearly the whole class to one
     * client, so the other nine never reach 10. */
    int32_t *labels = balanced_labels(100, 1);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.alpha = 0.001;
    shoal_partition *p = (shoal_partition *)(uintptr_t)1; /* must be reset to NULL */
    shoal_errinfo ei = {{0}};
    shoal_failalloc_install(LONG_MAX); /* counts blocks; fails none */
    cr_assert_eq(shoal_partition_new(&cfg, labels, 100, 1, 10, 21, &p, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_failalloc_live(), 0, "giving up leaked %ld blocks", shoal_failalloc_live());
    shoal_failalloc_uninstall();
    cr_assert_null(p);
    cr_assert(strstr(ei.msg, "larger alpha"), "%s", ei.msg);
    cr_assert(strstr(ei.msg, "min_size"), "%s", ei.msg);
    free(labels);

    /* A realistic case: alpha 0.1 over 100 clients of 60 examples each
     * leaves some client short in every draw; fewer clients, as the message
     * suggests, works. */
    labels = balanced_labels(6000, 10);
    cfg.alpha = 0.1;
    p = (shoal_partition *)(uintptr_t)1;
    cr_assert_eq(shoal_partition_new(&cfg, labels, 6000, 10, 100, 21, &p, &ei), SHOAL_EINVAL);
    cr_assert_null(p);
    cr_assert(strstr(ei.msg, "100 clients at least 10 examples"), "%s", ei.msg);
    p = make(&cfg, labels, 6000, 10, 20, 21);
    assert_permutation(p, 6000);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, dirichlet_with_underflowing_draws_gives_each_class_to_one_client)
{
    /* Gamma(1e-6) draws are almost always 0 in double precision: the limit
     * of Dir(alpha) as alpha -> 0 puts a class entirely on one client. */
    int32_t *labels = balanced_labels(1000, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.alpha = 1e-6;
    cfg.min_size = 0;
    shoal_partition *p = make(&cfg, labels, 1000, 10, 20, 22);
    assert_permutation(p, 1000);
    uint32_t in_order = 0;
    for (uint32_t k = 0; k < 10; k++) {
        uint32_t holders = 0;
        for (uint32_t c = 0; c < 20; c++) {
            const uint32_t *idx = shoal_partition_indices(p, c);
            size_t n = shoal_partition_size(p, c);
            size_t held = 0;
            for (size_t j = 0; j < n; j++)
                held += labels[idx[j]] == (int32_t)k;
            holders += held > 0;
            in_order += held > 0 && c == k;
        }
        cr_assert_eq(holders, 1, "class %u is spread over %u clients", k, holders);
    }
    /* The one client is drawn at random, not the first one eligible. */
    cr_assert_lt(in_order, 10, "class k went to client k for every k");
    shoal_partition_free(p);

    /* With sharing, every client draws from a single class. */
    cfg.min_size = 10;
    p = make(&cfg, labels, 1000, 10, 2000, 22);
    uint32_t clients_of_class[10] = {0};
    for (uint32_t c = 0; c < 2000; c++) {
        cr_assert_eq(shoal_partition_size(p, c), 20);
        cr_assert_eq(distinct_labels(p, c, labels, 10), 1, "client %u", c);
        clients_of_class[labels[shoal_partition_indices(p, c)[0]]]++;
    }
    for (uint32_t k = 0; k < 10; k++)
        cr_assert_gt(clients_of_class[k], 100, "only %u of 2000 clients draw class %u",
                     clients_of_class[k], k);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, dirichlet_shares_examples_when_clients_exceed_count_over_min_size)
{
    /* 100,000 clients x min_size 10 > 6000 examples: sampling with sharing. */
    int32_t *labels = balanced_labels(6000, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.examples_per_client = 25;
    cfg.alpha = 0.1;
    shoal_partition *p = make(&cfg, labels, 6000, 10, 100000, 23);
    assert_valid(p, 6000);
    for (uint32_t c = 0; c < 100000; c++)
        cr_assert_eq(shoal_partition_size(p, c), 25, "client %u", c);
    cr_assert_eq(p->offsets[100000], 2500000);
    /* Every example is used, and many times over. */
    uint32_t *uses = calloc(6000, sizeof *uses);
    for (size_t i = 0; i < 2500000; i++)
        uses[p->indices[i]]++;
    for (size_t i = 0; i < 6000; i++)
        cr_assert_gt(uses[i], 100, "example %zu used %u times", i, uses[i]);
    free(uses);
    double skew = mean_max_class_fraction(p, labels, 10);

    /* Label skew follows alpha here too. */
    cfg.alpha = 100.0;
    shoal_partition *even = make(&cfg, labels, 6000, 10, 100000, 23);
    double flat = mean_max_class_fraction(even, labels, 10);
    cr_log_info("sharing mean max-class fraction: alpha 0.1 %.3f, alpha 100 %.3f", skew, flat);
    cr_assert_gt(skew, 0.6);
    cr_assert_lt(flat, 0.35);
    shoal_partition_free(even);

    /* A client's examples depend only on the seed and its number, not on
     * the size of the population. */
    cfg.alpha = 0.1;
    shoal_partition *fewer = make(&cfg, labels, 6000, 10, 1000, 23);
    for (uint32_t c = 0; c < 1000; c++)
        cr_assert_arr_eq(shoal_partition_indices(p, c), shoal_partition_indices(fewer, c),
                         25 * sizeof(uint32_t), "client %u", c);
    shoal_partition_free(fewer);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, dirichlet_sharing_ignores_classes_without_examples)
{
    /* Classes 1, 3, 5, ... have no examples; they must never be drawn. */
    int32_t *labels = balanced_labels(500, 5);
    for (size_t i = 0; i < 500; i++)
        labels[i] *= 2;
    shoal_partition *p = make_kind(SHOAL_PARTITION_DIRICHLET, labels, 500, 10, 1000, 24);
    for (uint32_t c = 0; c < 1000; c++)
        cr_assert_eq(shoal_partition_size(p, c), 20);
    assert_valid(p, 500);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, overlap_reshuffle_enlarges_iid_slices_with_neighbours_examples)
{
    /* 6050 over 100 clients: slices of 61 (50 clients) and 60; with 29%
     * overlap 61 -> 79 (61 + 17.69 rounded) and 60 -> 77 (60 + 17.4). */
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_OVERLAP_RESHUFFLE);
    cfg.overlap = 0.29;
    shoal_partition *p = make(&cfg, NULL, 6050, 0, 100, 25);
    shoal_partition *iid = make_kind(SHOAL_PARTITION_IID, NULL, 6050, 0, 100, 25);
    assert_valid(p, 6050);
    uint32_t *uses = calloc(6050, sizeof *uses);
    for (uint32_t c = 0; c < 100; c++) {
        size_t own = shoal_partition_size(iid, c);
        size_t n = shoal_partition_size(p, c);
        cr_assert_eq(n, own == 61 ? 79u : 77u, "client %u: iid %zu, overlap %zu", c, own, n);
        /* The client's own iid slice comes first; the extra examples are not
         * its own and none repeats. */
        const uint32_t *idx = shoal_partition_indices(p, c);
        cr_assert_arr_eq(idx, shoal_partition_indices(iid, c), own * sizeof(uint32_t));
        for (size_t j = 0; j < n; j++)
            for (size_t m = j + 1; m < n; m++)
                cr_assert_neq(idx[j], idx[m], "client %u holds example %u twice", c, idx[j]);
        for (size_t j = 0; j < n; j++)
            uses[idx[j]]++;
    }
    size_t shared = 0, total = p->offsets[100];
    for (size_t i = 0; i < 6050; i++) {
        cr_assert_geq(uses[i], 1, "example %zu is held by no client", i);
        shared += uses[i] > 1;
    }
    cr_assert_eq(total, 50 * 79 + 50 * 77);
    cr_assert_eq(shared, total - 6050, "every extra example is one some other client holds");
    free(uses);
    shoal_partition_free(p);
    shoal_partition_free(iid);
}

Test(sim_partition, overlap_zero_is_iid_and_overlap_one_never_repeats_an_example)
{
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_OVERLAP_RESHUFFLE);
    cfg.overlap = 0.0;
    shoal_partition *p = make(&cfg, NULL, 1000, 0, 10, 26);
    shoal_partition *iid = make_kind(SHOAL_PARTITION_IID, NULL, 1000, 0, 10, 26);
    cr_assert(same_partition(p, iid));
    shoal_partition_free(p);
    shoal_partition_free(iid);

    /* One client: there are no other slices to draw from. */
    cfg.overlap = 1.0;
    p = make(&cfg, NULL, 1000, 0, 1, 26);
    assert_permutation(p, 1000);
    shoal_partition_free(p);
    /* Two clients of 500, each doubled: both hold everything, once. */
    p = make(&cfg, NULL, 1000, 0, 2, 26);
    for (uint32_t c = 0; c < 2; c++) {
        cr_assert_eq(shoal_partition_size(p, c), 1000);
        unsigned char seen[1000] = {0};
        const uint32_t *idx = shoal_partition_indices(p, c);
        for (size_t j = 0; j < 1000; j++) {
            cr_assert_eq(seen[idx[j]], 0);
            seen[idx[j]] = 1;
        }
    }
    shoal_partition_free(p);
}

Test(sim_partition, random_covers_every_example_once_even_with_more_clients_than_examples)
{
    shoal_partition *p = make_kind(SHOAL_PARTITION_RANDOM, NULL, 10000, 0, 10, 27);
    assert_permutation(p, 10000);
    /* Binomial(10000, 0.1): mean 1000, sd 30. */
    uint32_t exactly_even = 0;
    for (uint32_t c = 0; c < 10; c++) {
        size_t n = shoal_partition_size(p, c);
        cr_assert(n > 850 && n < 1150, "client %u holds %zu", c, n);
        exactly_even += n == 1000;
        /* Not a round-robin in disguise: a client's examples are spread
         * over every residue mod 10. */
        size_t residue[10] = {0};
        for (size_t j = 0; j < n; j++)
            residue[shoal_partition_indices(p, c)[j] % 10]++;
        for (uint32_t r = 0; r < 10; r++)
            cr_assert_gt(residue[r], n / 20, "client %u: %zu of %zu examples are %u mod 10", c,
                         residue[r], n, r);
        const uint32_t *idx = shoal_partition_indices(p, c);
        for (size_t j = 1; j < n; j++)
            cr_assert_lt(idx[j - 1], idx[j], "client %u not in dataset order", c);
    }
    cr_assert_lt(exactly_even, 5, "%u of 10 clients hold exactly 1000", exactly_even);
    shoal_partition_free(p);

    p = make_kind(SHOAL_PARTITION_RANDOM, NULL, 10, 0, 100, 27);
    assert_permutation(p, 10);
    shoal_partition_free(p);
}

/* Runs shoal_partition_new expecting SHOAL_EINVAL with every word of
 * `needles` in the message and *out reset to NULL. */
static void assert_rejected(const shoal_partition_config *cfg, const int32_t *labels, size_t count,
                            uint32_t classes, uint32_t clients, const char *needle1,
                            const char *needle2)
{
    shoal_partition *p = (shoal_partition *)(uintptr_t)1;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_partition_new(cfg, labels, count, classes, clients, 1, &p, &ei);
    cr_assert_eq(err, SHOAL_EINVAL, "%s, %zu examples, %u clients: got %s",
                 cfg ? shoal_partition_kind_name(cfg->kind) : "NULL cfg", count, clients,
                 shoal_err_name(err));
    cr_assert_null(p);
    cr_assert(strstr(ei.msg, needle1), "message \"%s\" lacks \"%s\"", ei.msg, needle1);
    if (needle2)
        cr_assert(strstr(ei.msg, needle2), "message \"%s\" lacks \"%s\"", ei.msg, needle2);
    /* NULL errinfo is allowed. */
    cr_assert_eq(shoal_partition_new(cfg, labels, count, classes, clients, 1, &p, NULL),
                 SHOAL_EINVAL);
}

Test(sim_partition, rejects_zero_clients_for_every_scheme)
{
    int32_t *labels = balanced_labels(100, 10);
    for (int i = 0; i < ALL_KINDS; i++) {
        shoal_partition_config cfg = shoal_partition_defaults(all_kinds[i]);
        assert_rejected(&cfg, labels, 100, 10, 0, "clients must be at least 1",
                        shoal_partition_kind_name(all_kinds[i]));
    }
    free(labels);
}

Test(sim_partition, rejects_alpha_that_is_not_positive_and_finite)
{
    int32_t *labels = balanced_labels(100, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    const double bad[] = {0.0, -0.5, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.alpha = bad[i];
        assert_rejected(&cfg, labels, 100, 10, 5, "alpha must be a positive", NULL);
    }
    free(labels);
}

Test(sim_partition, rejects_more_clients_than_examples_where_examples_cannot_be_shared)
{
    const shoal_partition_kind exclusive[] = {SHOAL_PARTITION_IID, SHOAL_PARTITION_CONTIGUOUS,
                                              SHOAL_PARTITION_ROUND_ROBIN,
                                              SHOAL_PARTITION_OVERLAP_RESHUFFLE};
    for (size_t i = 0; i < sizeof exclusive / sizeof exclusive[0]; i++) {
        shoal_partition_config cfg = shoal_partition_defaults(exclusive[i]);
        assert_rejected(&cfg, NULL, 100, 0, 101, "101 clients but only 100 examples", "dirichlet");
    }
    /* Exactly as many clients as examples is fine: one each. */
    shoal_partition *p = make_kind(SHOAL_PARTITION_IID, NULL, 100, 0, 100, 1);
    for (uint32_t c = 0; c < 100; c++)
        cr_assert_eq(shoal_partition_size(p, c), 1);
    shoal_partition_free(p);
}

Test(sim_partition, rejects_more_shards_than_examples)
{
    int32_t *labels = balanced_labels(100, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_SHARDS);
    cfg.shards_per_client = 3;
    assert_rejected(&cfg, labels, 100, 10, 34, "need 102 shards", "fewer");
    cfg.shards_per_client = 0;
    assert_rejected(&cfg, labels, 100, 10, 10, "shards_per_client must be at least 1", NULL);
    /* 100 shards of one example each is the limit. */
    cfg.shards_per_client = 2;
    shoal_partition *p = make(&cfg, labels, 100, 10, 50, 1);
    assert_whole_shards(p, labels, 100, 10, 2);
    shoal_partition_free(p);
    free(labels);
}

Test(sim_partition, rejects_labels_out_of_range_or_missing)
{
    int32_t *labels = balanced_labels(100, 10);
    for (int i = 0; i < ALL_KINDS; i++) {
        shoal_partition_config cfg = shoal_partition_defaults(all_kinds[i]);
        labels[37] = -1;
        assert_rejected(&cfg, labels, 100, 10, 5, "example 37 has label -1", "[0, 10)");
        labels[37] = 10;
        assert_rejected(&cfg, labels, 100, 10, 5, "example 37 has label 10", NULL);
        labels[37] = 7;
        assert_rejected(&cfg, labels, 100, 0, 5, "example 0 has label 0", "0 classes");
    }
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    assert_rejected(&cfg, NULL, 100, 10, 5, "needs the labels", NULL);
    cfg.kind = SHOAL_PARTITION_SHARDS;
    assert_rejected(&cfg, NULL, 100, 10, 5, "needs the labels", NULL);
    free(labels);
}

Test(sim_partition, rejects_bad_configuration_and_arguments)
{
    int32_t *labels = balanced_labels(100, 10);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_OVERLAP_RESHUFFLE);
    const double bad_overlap[] = {-0.1, 1.5, NAN};
    for (size_t i = 0; i < sizeof bad_overlap / sizeof bad_overlap[0]; i++) {
        cfg.overlap = bad_overlap[i];
        assert_rejected(&cfg, labels, 100, 10, 5, "overlap must be a fraction in [0, 1]", NULL);
    }
    cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    cfg.examples_per_client = 0;
    assert_rejected(&cfg, labels, 100, 10, 50, "examples_per_client", NULL);
    cfg = shoal_partition_defaults(SHOAL_PARTITION_IID);
    assert_rejected(&cfg, labels, 0, 10, 5, "no examples", NULL);
    cfg.kind = (shoal_partition_kind)42;
    assert_rejected(&cfg, labels, 100, 10, 5, "unknown scheme 42", NULL);
    assert_rejected(NULL, labels, 100, 10, 5, "cfg", NULL);
    cfg.kind = SHOAL_PARTITION_IID;
    cr_assert_eq(shoal_partition_new(&cfg, labels, 100, 10, 5, 1, NULL, NULL), SHOAL_EINVAL);
    free(labels);
}

Test(sim_partition, every_allocation_failure_is_enomem_and_leaks_nothing)
{
    int32_t *labels = random_labels(600, 10, 28);
    for (int i = 0; i <= ALL_KINDS; i++) {
        /* The last round is dirichlet with sharing (300 clients x 10 > 600). */
        shoal_partition_kind kind = i < ALL_KINDS ? all_kinds[i] : SHOAL_PARTITION_DIRICHLET;
        uint32_t clients = i < ALL_KINDS ? 20 : 300;
        shoal_partition_config cfg = shoal_partition_defaults(kind);
        shoal_partition *expected = make(&cfg, labels, 600, 10, clients, 29);
        for (long k = 0;; k++) {
            cr_assert_lt(k, 100, "%s: still failing after %ld allocations",
                         shoal_partition_kind_name(kind), k);
            shoal_failalloc_install(k);
            shoal_partition *p = (shoal_partition *)(uintptr_t)1;
            shoal_errinfo ei = {{0}};
            shoal_err err = shoal_partition_new(&cfg, labels, 600, 10, clients, 29, &p, &ei);
            if (err == SHOAL_OK) {
                cr_assert(same_partition(p, expected), "%s", shoal_partition_kind_name(kind));
                shoal_partition_free(p);
                cr_assert_eq(shoal_failalloc_live(), 0);
                shoal_failalloc_uninstall();
                break;
            }
            long live = shoal_failalloc_live();
            shoal_failalloc_uninstall();
            cr_assert_eq(err, SHOAL_ENOMEM, "%s, %ld allocations allowed: %s",
                         shoal_partition_kind_name(kind), k, shoal_err_name(err));
            cr_assert_null(p);
            cr_assert_eq(live, 0, "%s, %ld allocations allowed: %ld blocks leaked",
                         shoal_partition_kind_name(kind), k, live);
            cr_assert(strstr(ei.msg, "out of memory"), "%s", ei.msg);
        }
        shoal_partition_free(expected);
    }
    free(labels);
}

Test(sim_partition, dirichlet_sharing_scales_to_a_million_clients, .timeout = 120)
{
    /* Fashion-MNIST sized labels; 1,000,000 clients x 20 examples: 8 MB of
     * offsets and 80 MB of indices. */
    int32_t *labels = random_labels(60000, 10, 30);
    shoal_partition_config cfg = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    shoal_partition *p = make(&cfg, labels, 60000, 10, 1000000, 31);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr,
            "partition: dirichlet with sharing, 1,000,000 clients x 20 over 60,000: %.3f s\n",
            seconds);
    cr_assert_eq(p->offsets[1000000], 20000000);
    for (uint32_t c = 0; c < 1000000; c++)
        cr_assert_eq(p->offsets[c], (uint64_t)c * 20);
    for (size_t i = 0; i < 20000000; i++)
        cr_assert_lt(p->indices[i], 60000);
    shoal_partition_free(p);
    free(labels);
}
