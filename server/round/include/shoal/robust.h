/* Shoal: robust aggregation, for populations without secure aggregation
 * (the server must see individual updates to compute these).
 *
 *   - coordinate-wise median (Yin et al. 2018);
 *   - coordinate-wise trimmed mean: per coordinate, drop the beta n largest
 *     and beta n smallest values and average the rest (Yin et al. 2018);
 *   - norm-bounded mean: each update clipped to an L2 norm bound before
 *     the usual weighted mean (Sun et al. 2019, "Can you really backdoor
 *     federated learning?"); it streams, so it needs no stored updates.
 *
 * Median and trimmed mean give every update one vote, whatever example
 * count it claims: the count is the device's word, and a weighted median
 * would let one device buy the majority. Pure functions: no allocation but
 * `scratch`, thread-safe on distinct outputs. */
#ifndef SHOAL_ROBUST_H
#define SHOAL_ROBUST_H

#include <stddef.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shoal_robust_kind {
    SHOAL_ROBUST_MEAN = 0,     /* the plain weighted mean (FedAvg) */
    SHOAL_ROBUST_MEDIAN,       /* coordinate-wise median */
    SHOAL_ROBUST_TRIMMED_MEAN, /* coordinate-wise trimmed mean */
    SHOAL_ROBUST_NORM_BOUNDED  /* clip each update's L2 norm, then the mean */
} shoal_robust_kind;

/* "mean", "median", "trimmed_mean", "norm_bounded"; parse returns
 * SHOAL_EINVAL for other names. */
SHOAL_API const char *shoal_robust_name(shoal_robust_kind kind);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_robust_parse(const char *name, shoal_robust_kind *out);

/* out[j] = median over i < n of updates[i][j], j < d (the mean of the two
 * middle values for even n). scratch: n floats. SHOAL_EINVAL for n == 0 or
 * NULL pointers. Non-finite values are the caller's to refuse first. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_robust_median(const float *const *updates, size_t n,
                                                        size_t d, float *scratch, float *out);

/* out[j] = the mean of updates[.][j] without its floor(beta n) smallest
 * and floor(beta n) largest values. beta in [0, 0.5); scratch: n floats.
 * SHOAL_EINVAL for beta outside that range, n == 0 or NULL pointers. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_robust_trimmed_mean(const float *const *updates, size_t n,
                                                              size_t d, double beta, float *scratch,
                                                              float *out);

/* Scales update[0..d) so its L2 norm is at most `bound` (unchanged when it
 * already is; never above it after float rounding: shoal_clip_l2 in
 * shoal/blas.h), and reports the norm it had in *norm (may be NULL).
 * SHOAL_EINVAL for bound not positive and finite; SHOAL_ENUMERIC for a
 * non-finite norm (nothing changed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_robust_clip(float *update, size_t d, double bound,
                                                      double *norm);

/* The L2 norm of x[0..d), accumulated in double. */
SHOAL_API double shoal_robust_norm(const float *x, size_t d);

#ifdef __cplusplus
}
#endif

#endif
