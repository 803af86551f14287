/* Kept updates for median and trimmed mean (see kept_updates.h). */
#include "kept_updates.h"

#include <string.h>

#include "shoal/alloc.h"
#include "shoal/robust.h"

int shoal_kept_needed(const shoal_aggregation_config *rule)
{
    return rule->rule == SHOAL_ROBUST_MEDIAN || rule->rule == SHOAL_ROBUST_TRIMMED_MEAN;
}

static shoal_err reserve(kept_updates *k, size_t need)
{
    if (need <= k->cap)
        return SHOAL_OK;
    size_t cap = k->cap ? 2 * k->cap : 16;
    while (cap < need)
        cap *= 2;
    float **deltas = shoal_realloc(k->deltas, cap * sizeof *deltas);
    if (!deltas)
        return SHOAL_ENOMEM;
    k->deltas = deltas;
    float *weights = shoal_realloc(k->weights, cap * sizeof *weights);
    if (!weights)
        return SHOAL_ENOMEM;
    k->weights = weights;
    k->cap = cap;
    return SHOAL_OK;
}

shoal_err shoal_kept_push(kept_updates *k, float *delta, float weight)
{
    if (reserve(k, k->count + 1) != SHOAL_OK)
        return SHOAL_ENOMEM;
    k->deltas[k->count] = delta;
    k->weights[k->count] = weight;
    k->count++;
    return SHOAL_OK;
}

shoal_err shoal_kept_move(kept_updates *to, kept_updates *from)
{
    /* Nothing to move: an aggregator that kept no update has no arrays
     * (and memcpy takes no NULL, even for 0 bytes). */
    if (from->count == 0)
        return SHOAL_OK;
    if (reserve(to, to->count + from->count) != SHOAL_OK)
        return SHOAL_ENOMEM;
    memcpy(to->deltas + to->count, from->deltas, from->count * sizeof *from->deltas);
    memcpy(to->weights + to->count, from->weights, from->count * sizeof *from->weights);
    to->count += from->count;
    from->count = 0;
    return SHOAL_OK;
}

void shoal_kept_clear(kept_updates *k)
{
    for (size_t i = 0; i < k->count; i++)
        shoal_free(k->deltas[i]);
    shoal_free(k->deltas);
    shoal_free(k->weights);
    memset(k, 0, sizeof *k);
}

shoal_err shoal_kept_aggregate(const kept_updates *k, const shoal_aggregation_config *rule,
                               size_t d, float *scratch, float *sum)
{
    if (!k->count || !shoal_kept_needed(rule))
        return SHOAL_EINVAL;
    const float *const *updates = (const float *const *)k->deltas;
    shoal_err err =
        rule->rule == SHOAL_ROBUST_MEDIAN
            ? shoal_robust_median(updates, k->count, d, scratch, sum)
            : shoal_robust_trimmed_mean(updates, k->count, d, rule->trim_fraction, scratch, sum);
    if (err)
        return err;
    /* The engine divides by the sum of the weights it gave (in double, of
     * the unrounded weights): multiply by the sum of the ones it sent, equal
     * to float rounding. */
    double total = 0;
    for (size_t i = 0; i < k->count; i++)
        total += k->weights[i];
    for (size_t j = 0; j < d; j++)
        sum[j] = (float)(sum[j] * total);
    return SHOAL_OK;
}
