/* The accepted updates of one round kept whole, for the aggregation rules
 * that need every update at once (median, trimmed mean: shoal/robust.h).
 * Aggregators keep the updates folded to them; the coordinator gathers
 * them from every aggregator when the round closes and runs the rule
 * (docs/architecture.md, "Robust aggregation"). Not thread-safe: one
 * owner at a time, handed over inside actor messages. */
#ifndef SHOAL_KEPT_UPDATES_H
#define SHOAL_KEPT_UPDATES_H

#include <stddef.h>

#include "shoal/err.h"
#include "shoal/server_config.h"

typedef struct kept_updates {
    float **deltas; /* count updates, each owned */
    float *weights; /* the round engine's fold weight of each */
    size_t count, cap;
} kept_updates;

/* Keeps `delta` (taking it on SHOAL_OK; the caller still owns it on
 * SHOAL_ENOMEM) with its fold weight. */
SHOAL_NODISCARD shoal_err shoal_kept_push(kept_updates *k, float *delta, float weight);
/* Moves every update of `from` to the end of `to` (from is left empty);
 * SHOAL_ENOMEM leaves both as they were. */
SHOAL_NODISCARD shoal_err shoal_kept_move(kept_updates *to, kept_updates *from);
/* Frees every update and the arrays; k is left empty. */
void shoal_kept_clear(kept_updates *k);

/* The round's weighted sum as the round engine takes it
 * (shoal_round_aggregated divides by the sum of the weights): the rule's
 * aggregate of the kept updates (each one vote, whatever its weight) times
 * the sum of their weights, into sum[0..d). scratch: count floats.
 * SHOAL_EINVAL with no update kept or a rule that keeps none. */
SHOAL_NODISCARD shoal_err shoal_kept_aggregate(const kept_updates *k,
                                               const shoal_aggregation_config *rule, size_t d,
                                               float *scratch, float *sum);

/* 1 when `rule` needs every update kept. */
int shoal_kept_needed(const shoal_aggregation_config *rule);

#endif
