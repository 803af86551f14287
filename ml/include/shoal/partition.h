/* Shoal: splitting a labelled dataset across clients. shoal-sim's virtual
 * devices, shoal-fleet's and shoal-device's shards all come from here, so
 * client c holds the same examples in each.
 *
 * A partition assigns every client a list of example indices into the
 * dataset: client c holds indices[offsets[c] .. offsets[c+1]). Schemes:
 *
 *   iid                 shuffle, then equal contiguous slices (sizes differ by at most 1)
 *   dirichlet           label skew as in NIID-Bench (Li et al. ICDE 2022, sec. 4.1):
 *                       per class k, proportions p ~ Dir(alpha) over the clients,
 *                       zeroed for clients already holding >= count/clients examples,
 *                       renormalised; class k's shuffled examples are cut at the
 *                       cumulative proportions; redrawn until every client holds
 *                       at least min_size examples (default 10); each
 *                       client's list is then shuffled. At most 1000 draws
 *                       are tried (see shoal_partition_new)
 *   shards              McMahan et al. 2017: sort by label, cut into
 *                       clients * shards_per_client equal shards (sizes
 *                       differ by at most 1), deal each client
 *                       shards_per_client random shards
 *   contiguous          equal slices in dataset order (parameter-server range split)
 *   round-robin         example i goes to client i mod clients
 *   random              each example to a uniformly random client
 *   overlap-reshuffle   iid slices enlarged by `overlap` (a fraction, e.g. 0.1
 *                       = 10% more examples, rounded to the nearest example),
 *                       the extra drawn from the other clients' slices, so
 *                       neighbouring clients share data: client c's window runs
 *                       on from its own slice into the next clients' slices of
 *                       the same shuffled order, wrapping at the end, and never
 *                       holds an example twice. Overlap 0 gives exactly the iid
 *                       partition of the same seed.
 *
 * When clients * min_size exceeds the dataset (a million simulated devices
 * over 60,000 examples), dirichlet switches to sampling with sharing: each
 * client draws label proportions q ~ Dir(alpha) over the classes present in
 * the dataset and then `examples_per_client` examples, each from a class
 * drawn from q and uniformly within that class (with replacement), so
 * examples are shared between clients and may repeat within one. Client c's
 * draws come from stream c of the seed (shoal_rng_derive), so its examples
 * depend only on the seed, c and the configuration, not on the number of
 * clients.
 *
 * random, and dirichlet with min_size 0, may leave a client with no
 * examples; the other schemes give every client at least one.
 *
 * Everything is drawn from `seed`: the same inputs give the same partition
 * on every platform. A partition is immutable after creation and may be
 * shared by threads. */
#ifndef SHOAL_PARTITION_H
#define SHOAL_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

typedef enum shoal_partition_kind {
    SHOAL_PARTITION_IID,
    SHOAL_PARTITION_DIRICHLET,
    SHOAL_PARTITION_SHARDS,
    SHOAL_PARTITION_CONTIGUOUS,
    SHOAL_PARTITION_ROUND_ROBIN,
    SHOAL_PARTITION_RANDOM,
    SHOAL_PARTITION_OVERLAP_RESHUFFLE,
} shoal_partition_kind;

typedef struct shoal_partition_config {
    shoal_partition_kind kind;
    double alpha;                 /* dirichlet concentration, > 0 (default 0.5) */
    uint32_t shards_per_client;   /* shards, >= 1 (default 2) */
    double overlap;               /* overlap-reshuffle: extra fraction in [0, 1] (default 0.1) */
    uint32_t min_size;            /* dirichlet: minimum examples per client (default 10) */
    uint32_t examples_per_client; /* dirichlet with sharing (default 20) */
} shoal_partition_config;

typedef struct shoal_partition {
    uint32_t clients;
    uint64_t *offsets; /* clients + 1 entries */
    uint32_t *indices; /* offsets[clients] entries */
} shoal_partition;

/* Scheme names: "iid", "dirichlet", "shards", "contiguous", "round-robin",
 * "random", "overlap-reshuffle" (exact, lower case). parse gives
 * SHOAL_EINVAL for any other name or NULL; kind_name gives "?" for an
 * unknown kind. defaults gives `kind` with the documented default of every
 * field. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_partition_kind_parse(const char *name,
                                                               shoal_partition_kind *out);
SHOAL_API const char *shoal_partition_kind_name(shoal_partition_kind kind);
SHOAL_API shoal_partition_config shoal_partition_defaults(shoal_partition_kind kind);

/* Partitions `count` examples with labels in [0, classes) among `clients`
 * clients and stores a new partition in *out (NULL on error). `labels`
 * (count entries) is borrowed; only dirichlet and shards need it, the other
 * schemes accept NULL, and every scheme checks the labels it is given. Only
 * the fields of cfg that the scheme uses are read and checked.
 *
 * SHOAL_EINVAL (ei names the problem and what to do) for cfg or out NULL,
 * an unknown kind, clients 0, an empty dataset or one of more than
 * UINT32_MAX examples, more clients than examples where the scheme cannot
 * share (iid, shards, contiguous, round-robin, overlap-reshuffle), more
 * shards (clients * shards_per_client) than examples or shards_per_client 0,
 * alpha not positive and finite, overlap outside [0, 1], examples_per_client
 * 0 when dirichlet shares, a label out of range or missing labels, and a
 * dirichlet partition that after 1000 draws still leaves some client below
 * min_size (a larger alpha, fewer clients or a smaller min_size helps);
 * SHOAL_ENOMEM. Free with shoal_partition_free. Thread-safe: touches no
 * shared state besides the allocator. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_partition_new(const shoal_partition_config *cfg,
                                                        const int32_t *labels, size_t count,
                                                        uint32_t classes, uint32_t clients,
                                                        uint64_t seed, shoal_partition **out,
                                                        shoal_errinfo *ei);
/* Frees p; NULL is a no-op. */
SHOAL_API void shoal_partition_free(shoal_partition *p);

static inline size_t shoal_partition_size(const shoal_partition *p, uint32_t client)
{
    return (size_t)(p->offsets[client + 1] - p->offsets[client]);
}

static inline const uint32_t *shoal_partition_indices(const shoal_partition *p, uint32_t client)
{
    return p->indices + p->offsets[client];
}

#endif
