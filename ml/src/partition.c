#include "shoal/partition.h"

#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/names.h"
#include "shoal/rng.h"

/* NIID-Bench redraws until the minimum size holds, without a bound. A cap
 * keeps an impossible request (tiny alpha, min_size close to count/clients)
 * from spinning for ever; 1000 draws take well under a second at MNIST
 * scale, and a feasible configuration needs a handful. */
#define DIRICHLET_MAX_ATTEMPTS 1000

static const char *const kind_names[] = {
    [SHOAL_PARTITION_IID] = "iid",
    [SHOAL_PARTITION_DIRICHLET] = "dirichlet",
    [SHOAL_PARTITION_SHARDS] = "shards",
    [SHOAL_PARTITION_CONTIGUOUS] = "contiguous",
    [SHOAL_PARTITION_ROUND_ROBIN] = "round-robin",
    [SHOAL_PARTITION_RANDOM] = "random",
    [SHOAL_PARTITION_OVERLAP_RESHUFFLE] = "overlap-reshuffle",
};

#define KIND_COUNT SHOAL_NAMES_COUNT(kind_names)

shoal_err shoal_partition_kind_parse(const char *name, shoal_partition_kind *out)
{
    int value;
    if (!out || shoal_names_find(kind_names, KIND_COUNT, name, &value))
        return SHOAL_EINVAL;
    *out = (shoal_partition_kind)value;
    return SHOAL_OK;
}

const char *shoal_partition_kind_name(shoal_partition_kind kind)
{
    return shoal_names_get(kind_names, KIND_COUNT, (int)kind, "?");
}

shoal_partition_config shoal_partition_defaults(shoal_partition_kind kind)
{
    shoal_partition_config c = {0};
    c.kind = kind;
    c.alpha = 0.5;
    c.shards_per_client = 2;
    c.overlap = 0.1;
    c.min_size = 10;
    c.examples_per_client = 20;
    return c;
}

void shoal_partition_free(shoal_partition *p)
{
    if (!p)
        return;
    shoal_free(p->offsets);
    shoal_free(p->indices);
    shoal_free(p);
}

/* A partition with room for `total` indices; offsets zeroed. */
static shoal_err partition_alloc(uint32_t clients, uint64_t total, shoal_partition **out)
{
    *out = NULL;
    if (total > SIZE_MAX / sizeof(uint32_t))
        return SHOAL_ENOMEM;
    shoal_partition *p = shoal_calloc(1, sizeof *p);
    if (!p)
        return SHOAL_ENOMEM;
    p->clients = clients;
    p->offsets = shoal_calloc((size_t)clients + 1, sizeof *p->offsets);
    p->indices = shoal_mallocarray(total ? (size_t)total : 1, sizeof *p->indices);
    if (!p->offsets || !p->indices) {
        shoal_partition_free(p);
        return SHOAL_ENOMEM;
    }
    *out = p;
    return SHOAL_OK;
}

/* Start of slice `i` when `count` items are cut into `slices` slices whose
 * sizes differ by at most one (the larger ones first). Written without
 * i * count, which could overflow 64 bits. */
static uint64_t slice_start(uint64_t i, uint64_t count, uint64_t slices)
{
    uint64_t q = count / slices, r = count % slices;
    return i * q + (i < r ? i : r);
}

static void slice_offsets(uint64_t *offsets, size_t count, uint32_t clients)
{
    for (uint32_t c = 0; c <= clients; c++)
        offsets[c] = slice_start(c, count, clients);
}

static void identity(uint32_t *items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        items[i] = (uint32_t)i;
}

/* Stable counting sort of 0..count-1 by key[i] in [0, buckets): out lists
 * the items of bucket b, in increasing order, at out[offsets[b] ..
 * offsets[b+1]). offsets has buckets + 1 entries. */
static void bucket_sort(const uint32_t *key, size_t count, uint32_t buckets, uint64_t *offsets,
                        uint32_t *out)
{
    memset(offsets, 0, ((size_t)buckets + 1) * sizeof *offsets);
    for (size_t i = 0; i < count; i++)
        offsets[key[i]]++;
    /* Running sums give each bucket's end; filling backwards walks every
     * cursor down to its bucket's start and keeps the order stable. */
    for (uint32_t b = 1; b < buckets; b++)
        offsets[b] += offsets[b - 1];
    offsets[buckets] = count;
    for (size_t i = count; i-- > 0;)
        out[--offsets[key[i]]] = (uint32_t)i;
}

static shoal_err partition_iid(size_t count, uint32_t clients, shoal_rng *rng,
                               shoal_partition **out)
{
    shoal_err err = partition_alloc(clients, count, out);
    if (err)
        return err;
    identity((*out)->indices, count);
    shoal_rng_shuffle_u32(rng, (*out)->indices, count);
    slice_offsets((*out)->offsets, count, clients);
    return SHOAL_OK;
}

static shoal_err partition_contiguous(size_t count, uint32_t clients, shoal_partition **out)
{
    shoal_err err = partition_alloc(clients, count, out);
    if (err)
        return err;
    identity((*out)->indices, count);
    slice_offsets((*out)->offsets, count, clients);
    return SHOAL_OK;
}

static shoal_err partition_round_robin(size_t count, uint32_t clients, shoal_partition **out)
{
    shoal_err err = partition_alloc(clients, count, out);
    if (err)
        return err;
    shoal_partition *p = *out;
    /* Client c holds c, c + clients, ...: ceil((count - c) / clients)
     * examples, which is exactly the equal-slice size. */
    slice_offsets(p->offsets, count, clients);
    for (uint32_t c = 0; c < clients; c++) {
        uint32_t *dst = p->indices + p->offsets[c];
        size_t n = shoal_partition_size(p, c);
        for (size_t j = 0; j < n; j++)
            dst[j] = (uint32_t)(c + j * clients);
    }
    return SHOAL_OK;
}

static shoal_err partition_random(size_t count, uint32_t clients, shoal_rng *rng,
                                  shoal_partition **out)
{
    uint32_t *owner = shoal_mallocarray(count, sizeof *owner);
    if (!owner)
        return SHOAL_ENOMEM;
    shoal_err err = partition_alloc(clients, count, out);
    if (err) {
        shoal_free(owner);
        return err;
    }
    for (size_t i = 0; i < count; i++)
        owner[i] = (uint32_t)shoal_rng_below(rng, clients);
    bucket_sort(owner, count, clients, (*out)->offsets, (*out)->indices);
    shoal_free(owner);
    return SHOAL_OK;
}

static shoal_err partition_overlap(size_t count, uint32_t clients, double overlap, shoal_rng *rng,
                                   shoal_partition **out)
{
    /* The same permutation as iid, so overlap 0 reproduces iid exactly. */
    uint32_t *perm = shoal_mallocarray(count, sizeof *perm);
    if (!perm)
        return SHOAL_ENOMEM;
    identity(perm, count);
    shoal_rng_shuffle_u32(rng, perm, count);

    uint64_t total = 0;
    for (uint32_t c = 0; c < clients; c++) {
        uint64_t own = slice_start(c + 1, count, clients) - slice_start(c, count, clients);
        uint64_t extra = (uint64_t)floor(overlap * (double)own + 0.5);
        if (extra > count - own)
            extra = count - own; /* only other clients' examples, none twice */
        total += own + extra;
    }
    shoal_err err = partition_alloc(clients, total, out);
    if (err) {
        shoal_free(perm);
        return err;
    }
    shoal_partition *p = *out;
    /* Each client's window runs on past its own slice into the following
     * slices of the shuffled order, wrapping at the end. */
    uint64_t at = 0;
    for (uint32_t c = 0; c < clients; c++) {
        uint64_t start = slice_start(c, count, clients);
        uint64_t own = slice_start(c + 1, count, clients) - start;
        uint64_t extra = (uint64_t)floor(overlap * (double)own + 0.5);
        if (extra > count - own)
            extra = count - own;
        p->offsets[c] = at;
        for (uint64_t j = 0; j < own + extra; j++)
            p->indices[at++] = perm[(start + j) % count];
    }
    p->offsets[clients] = at;
    shoal_free(perm);
    return SHOAL_OK;
}

static shoal_err partition_shards(const int32_t *labels, size_t count, uint32_t clients,
                                  uint32_t shards_per_client, uint32_t classes, shoal_rng *rng,
                                  shoal_partition **out)
{
    /* McMahan et al. 2017, sec. 3 ("pathological non-IID"): sort by label,
     * cut into equal shards, give each client shards_per_client of them. */
    uint64_t shard_count = (uint64_t)clients * shards_per_client; /* <= count, checked */
    uint32_t *sorted = shoal_mallocarray(count, sizeof *sorted);
    uint64_t *class_offsets = shoal_mallocarray((size_t)classes + 1, sizeof *class_offsets);
    uint32_t *shard_ids = shoal_mallocarray((size_t)shard_count, sizeof *shard_ids);
    shoal_err err = SHOAL_ENOMEM;
    if (!sorted || !class_offsets || !shard_ids)
        goto done;
    err = partition_alloc(clients, count, out);
    if (err)
        goto done;
    shoal_partition *p = *out;

    /* Labels were checked to lie in [0, classes); the unsigned view of an
     * int32_t is allowed to alias it. */
    bucket_sort((const uint32_t *)labels, count, classes, class_offsets, sorted);
    identity(shard_ids, (size_t)shard_count);
    shoal_rng_shuffle_u32(rng, shard_ids, (size_t)shard_count);

    uint64_t at = 0;
    for (uint32_t c = 0; c < clients; c++) {
        p->offsets[c] = at;
        for (uint32_t s = 0; s < shards_per_client; s++) {
            uint32_t shard = shard_ids[(uint64_t)c * shards_per_client + s];
            uint64_t begin = slice_start(shard, count, shard_count);
            uint64_t end = slice_start((uint64_t)shard + 1, count, shard_count);
            memcpy(p->indices + at, sorted + begin, (size_t)(end - begin) * sizeof *sorted);
            at += end - begin;
        }
    }
    p->offsets[clients] = at;
done:
    shoal_free(sorted);
    shoal_free(class_offsets);
    shoal_free(shard_ids);
    return err;
}

/* One NIID-Bench draw (Li et al. ICDE 2022, sec. 4.1; `partition_data`,
 * "noniid-labeldir", in their repository): for each class, Dir(alpha)
 * proportions over the clients, zeroed for clients already holding at least
 * count/clients examples, cut the class's shuffled examples at the
 * cumulative proportions. Writes owner[] and held[] and returns the
 * smallest client size. */
static uint64_t dirichlet_draw(uint32_t *by_class, const uint64_t *class_offsets, uint32_t classes,
                               size_t count, uint32_t clients, double alpha, shoal_rng *rng,
                               double *weight, uint64_t *held, uint32_t *owner)
{
    /* held < count / clients (real division) <=> held < ceil(count / clients). */
    uint64_t cap = (count + (uint64_t)clients - 1) / clients;
    memset(held, 0, (size_t)clients * sizeof *held);
    for (uint32_t k = 0; k < classes; k++) {
        uint32_t *members = by_class + class_offsets[k];
        uint64_t n = class_offsets[k + 1] - class_offsets[k];
        if (n == 0)
            continue;
        shoal_rng_shuffle_u32(rng, members, (size_t)n);

        /* Normalising Gamma(alpha) draws gives Dir(alpha); drawing them only
         * for eligible clients is the same as zeroing and renormalising. */
        double sum = 0.0;
        uint32_t eligible = 0, last = 0;
        for (uint32_t c = 0; c < clients; c++) {
            weight[c] = 0.0;
            if (held[c] < cap) {
                weight[c] = shoal_rng_gamma(rng, alpha);
                sum += weight[c];
                eligible++;
                last = c;
            }
        }
        /* Some client is always eligible: the classes not yet dealt hold
         * at least n examples, so the sizes so far sum to less than count. */
        if (!(sum > 0.0) || !isfinite(sum)) {
            /* Every draw underflowed (alpha around 1e-3 or below): the limit
             * of Dir(alpha) as alpha -> 0 puts all mass on one client. */
            uint64_t pick = shoal_rng_below(rng, eligible);
            for (uint32_t c = 0; c < clients; c++) {
                if (held[c] < cap && pick-- == 0) {
                    memset(weight, 0, (size_t)clients * sizeof *weight);
                    weight[c] = 1.0;
                    last = c;
                    break;
                }
            }
            sum = 1.0;
        }

        double cumulative = 0.0;
        uint64_t begin = 0;
        for (uint32_t c = 0; c <= last; c++) {
            cumulative += weight[c];
            uint64_t end = n;
            if (c != last) {
                end = (uint64_t)(cumulative / sum * (double)n);
                end = end < begin ? begin : end > n ? n : end;
            }
            for (uint64_t j = begin; j < end; j++)
                owner[members[j]] = c;
            held[c] += end - begin;
            begin = end;
        }
    }
    uint64_t smallest = UINT64_MAX;
    for (uint32_t c = 0; c < clients; c++)
        smallest = held[c] < smallest ? held[c] : smallest;
    return smallest;
}

static shoal_err partition_dirichlet(const shoal_partition_config *cfg, const int32_t *labels,
                                     size_t count, uint32_t classes, uint32_t clients,
                                     shoal_rng *rng, shoal_partition **out, shoal_errinfo *ei)
{
    uint32_t *by_class = shoal_mallocarray(count, sizeof *by_class);
    uint32_t *owner = shoal_mallocarray(count, sizeof *owner);
    uint64_t *class_offsets = shoal_mallocarray((size_t)classes + 1, sizeof *class_offsets);
    double *weight = shoal_mallocarray(clients, sizeof *weight);
    shoal_err err = SHOAL_ENOMEM;
    if (!by_class || !owner || !class_offsets || !weight)
        goto done;
    err = partition_alloc(clients, count, out);
    if (err)
        goto done;
    shoal_partition *p = *out;

    bucket_sort((const uint32_t *)labels, count, classes, class_offsets, by_class);
    int attempt = 0;
    /* p->offsets doubles as the per-client counter until the final sort. */
    while (dirichlet_draw(by_class, class_offsets, classes, count, clients, cfg->alpha, rng, weight,
                          p->offsets, owner) < cfg->min_size) {
        if (++attempt == DIRICHLET_MAX_ATTEMPTS) {
            shoal_partition_free(p);
            *out = NULL;
            err = shoal_errinfo_set(
                ei, SHOAL_EINVAL,
                "dirichlet partition (alpha %g): no draw in %d gave all %u clients at least %u "
                "examples of the %zu; use a larger alpha, fewer clients or a smaller min_size",
                cfg->alpha, DIRICHLET_MAX_ATTEMPTS, clients, cfg->min_size, count);
            goto done;
        }
    }
    bucket_sort(owner, count, clients, p->offsets, p->indices);
    /* NIID-Bench shuffles each client's examples so they do not come
     * grouped by class. */
    for (uint32_t c = 0; c < clients; c++)
        shoal_rng_shuffle_u32(rng, p->indices + p->offsets[c], shoal_partition_size(p, c));
done:
    shoal_free(by_class);
    shoal_free(owner);
    shoal_free(class_offsets);
    shoal_free(weight);
    return err;
}

/* Sampling with sharing for populations larger than the dataset: each
 * client draws q ~ Dir(alpha) over the classes present and then its
 * examples, class by q and example uniformly within the class. Client c
 * draws from stream c of the seed, so its data does not depend on how the
 * clients before it were drawn. */
static shoal_err partition_dirichlet_shared(const shoal_partition_config *cfg,
                                            const int32_t *labels, size_t count, uint32_t classes,
                                            uint32_t clients, uint64_t seed, shoal_partition **out)
{
    uint32_t per_client = cfg->examples_per_client;
    uint32_t *by_class = shoal_mallocarray(count, sizeof *by_class);
    uint64_t *class_offsets = shoal_mallocarray((size_t)classes + 1, sizeof *class_offsets);
    uint32_t *present = shoal_mallocarray(classes, sizeof *present);
    double *cumulative = shoal_mallocarray(classes, sizeof *cumulative);
    shoal_err err = SHOAL_ENOMEM;
    if (!by_class || !class_offsets || !present || !cumulative)
        goto done;
    err = partition_alloc(clients, (uint64_t)clients * per_client, out);
    if (err)
        goto done;
    shoal_partition *p = *out;

    bucket_sort((const uint32_t *)labels, count, classes, class_offsets, by_class);
    uint32_t present_count = 0; /* >= 1: count > 0 */
    for (uint32_t k = 0; k < classes; k++)
        if (class_offsets[k + 1] > class_offsets[k])
            present[present_count++] = k;

    for (uint32_t c = 0; c < clients; c++) {
        shoal_rng rng;
        shoal_rng_derive(&rng, seed, c);
        double total = 0.0;
        for (uint32_t j = 0; j < present_count; j++) {
            total += shoal_rng_gamma(&rng, cfg->alpha);
            cumulative[j] = total;
        }
        uint32_t only = UINT32_MAX; /* set when all mass is on one class */
        if (!(total > 0.0) || !isfinite(total))
            only = (uint32_t)shoal_rng_below(&rng, present_count);

        uint32_t *dst = p->indices + (uint64_t)c * per_client;
        p->offsets[c] = (uint64_t)c * per_client;
        for (uint32_t e = 0; e < per_client; e++) {
            uint32_t j = only;
            if (j == UINT32_MAX) {
                double u;
                do
                    u = shoal_rng_double(&rng) * total;
                while (u >= total);
                /* The first class whose cumulative weight exceeds u; a
                 * zero-weight class never is, as its predecessor's equals
                 * its own. */
                uint32_t lo = 0, hi = present_count - 1;
                while (lo < hi) {
                    uint32_t mid = lo + (hi - lo) / 2;
                    if (cumulative[mid] > u)
                        hi = mid;
                    else
                        lo = mid + 1;
                }
                j = lo;
            }
            uint32_t k = present[j];
            uint64_t n = class_offsets[k + 1] - class_offsets[k];
            dst[e] = by_class[class_offsets[k] + shoal_rng_below(&rng, n)];
        }
    }
    p->offsets[clients] = (uint64_t)clients * per_client;
done:
    shoal_free(by_class);
    shoal_free(class_offsets);
    shoal_free(present);
    shoal_free(cumulative);
    return err;
}

static int needs_labels(shoal_partition_kind kind)
{
    return kind == SHOAL_PARTITION_DIRICHLET || kind == SHOAL_PARTITION_SHARDS;
}

/* Schemes that hand each example to exactly one client and must give every
 * client at least one. */
static int needs_an_example_each(shoal_partition_kind kind)
{
    return kind == SHOAL_PARTITION_IID || kind == SHOAL_PARTITION_CONTIGUOUS ||
           kind == SHOAL_PARTITION_ROUND_ROBIN || kind == SHOAL_PARTITION_OVERLAP_RESHUFFLE;
}

shoal_err shoal_partition_new(const shoal_partition_config *cfg, const int32_t *labels,
                              size_t count, uint32_t classes, uint32_t clients, uint64_t seed,
                              shoal_partition **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "partition: no place for the result (out)");
    *out = NULL;
    if (!cfg)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "partition: no configuration (cfg is NULL)");
    if ((unsigned)cfg->kind >= KIND_COUNT)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "partition: unknown scheme %d", (int)cfg->kind);
    const char *scheme = kind_names[cfg->kind];
    if (clients == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s partition: clients must be at least 1",
                                 scheme);
    if (count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s partition: the dataset has no examples",
                                 scheme);
    if ((uint64_t)count > UINT32_MAX)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s partition: %zu examples is more than the %u that 32-bit "
                                 "indices can address",
                                 scheme, count, (unsigned)UINT32_MAX);
    if (!labels && needs_labels(cfg->kind))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s partition: needs the labels (labels is NULL)", scheme);
    if (labels)
        for (size_t i = 0; i < count; i++)
            if (labels[i] < 0 || (uint32_t)labels[i] >= classes)
                return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                         "%s partition: example %zu has label %d, outside the "
                                         "%u classes [0, %u)",
                                         scheme, i, (int)labels[i], classes, classes);
    if (needs_an_example_each(cfg->kind) && clients > count)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s partition: %u clients but only %zu examples; use at most %zu "
                                 "clients, or the dirichlet scheme, which shares examples",
                                 scheme, clients, count, count);

    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    shoal_err err = SHOAL_OK;
    switch (cfg->kind) {
    case SHOAL_PARTITION_IID:
        err = partition_iid(count, clients, &rng, out);
        break;
    case SHOAL_PARTITION_CONTIGUOUS:
        err = partition_contiguous(count, clients, out);
        break;
    case SHOAL_PARTITION_ROUND_ROBIN:
        err = partition_round_robin(count, clients, out);
        break;
    case SHOAL_PARTITION_RANDOM:
        err = partition_random(count, clients, &rng, out);
        break;
    case SHOAL_PARTITION_OVERLAP_RESHUFFLE:
        if (!(cfg->overlap >= 0.0 && cfg->overlap <= 1.0))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s partition: overlap must be a fraction in [0, 1] (got %g)",
                                     scheme, cfg->overlap);
        err = partition_overlap(count, clients, cfg->overlap, &rng, out);
        break;
    case SHOAL_PARTITION_SHARDS:
        if (cfg->shards_per_client == 0)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s partition: shards_per_client must be at least 1", scheme);
        if ((uint64_t)clients * cfg->shards_per_client > count)
            return shoal_errinfo_set(
                ei, SHOAL_EINVAL,
                "%s partition: %u clients x %u shards per client need %llu shards, more than the "
                "%zu examples; use fewer clients or fewer shards per client",
                scheme, clients, cfg->shards_per_client,
                (unsigned long long)clients * cfg->shards_per_client, count);
        err = partition_shards(labels, count, clients, cfg->shards_per_client, classes, &rng, out);
        break;
    case SHOAL_PARTITION_DIRICHLET:
        if (!(cfg->alpha > 0.0) || !isfinite(cfg->alpha))
            return shoal_errinfo_set(
                ei, SHOAL_EINVAL,
                "%s partition: alpha must be a positive finite number (got %g); smaller is more "
                "skewed, 0.5 is usual",
                scheme, cfg->alpha);
        if ((uint64_t)clients * cfg->min_size > count) {
            if (cfg->examples_per_client == 0)
                return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                         "%s partition: %u clients x min_size %u exceed the %zu "
                                         "examples, so examples are shared, and that needs "
                                         "examples_per_client of at least 1",
                                         scheme, clients, cfg->min_size, count);
            err = partition_dirichlet_shared(cfg, labels, count, classes, clients, seed, out);
        } else {
            err = partition_dirichlet(cfg, labels, count, classes, clients, &rng, out, ei);
        }
        break;
    }
    if (err == SHOAL_ENOMEM)
        shoal_errinfo_set(ei, err, "%s partition: out of memory for %zu examples among %u clients",
                          scheme, count, clients);
    return err;
}
