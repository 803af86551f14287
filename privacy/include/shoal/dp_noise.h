/* Shoal: the noise of DP-FedAvg, from a cryptographic source through a
 * sampler that floating-point arithmetic cannot betray.
 *
 * A textbook Gaussian sampler in floating point leaks through the low bits
 * of its output which inputs are likely (Mironov 2012). So the noise is an
 * exact discrete Gaussian on a fine grid (Canonne, Kamath, Steinke 2020):
 * integer arithmetic and Bernoulli trials on random bytes from libsodium
 * decide every sample; floating point only scales the integer result. The
 * sum is first rounded to the same grid, so what is released is a grid
 * point: the sum's low bits cannot show through.
 *
 * The discrete Gaussian of parameter sigma on the integers has variance
 * slightly below sigma^2 and the same privacy as the continuous Gaussian
 * of that sigma for integer-valued sums (CKS 2020, theorem 4); at sigma =
 * SHOAL_DP_NOISE_SIGMA = 1024 grid steps the two differ by far less than
 * the accountant's precision. Rounding to a grid of stddev / 1024 moves
 * each coordinate of the sum by at most half a step, a change the
 * accounting absorbs (the sensitivity grows by at most
 * sqrt(d) x step / 2, below 0.1% of the clip norm for d <= 10^6 at z >= 1;
 * see docs/privacy.md).
 *
 * Thread-safe; no allocation. */
#ifndef SHOAL_DP_NOISE_H
#define SHOAL_DP_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_DP_NOISE_SIGMA 1024u /* grid steps per standard deviation */
#define SHOAL_DP_MAX_SIGMA   4096u

/* Fills out[0..n) with independent samples of the discrete Gaussian
 * N_Z(0, sigma^2), sigma 1..SHOAL_DP_MAX_SIGMA. SHOAL_EINVAL otherwise;
 * SHOAL_ECRYPTO when libsodium cannot start. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_discrete_gaussian(uint32_t sigma, int64_t *out,
                                                               size_t n);

/* Adds noise of standard deviation `stddev` to every coordinate of
 * sum[0..n), once: each coordinate is rounded to the grid stddev / 1024 and
 * moved by a discrete Gaussian number of grid steps (sigma 1024).
 * SHOAL_EINVAL for stddev not positive and finite; SHOAL_ENUMERIC for a
 * non-finite coordinate (nothing is changed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_add_gaussian_noise(float *sum, size_t n,
                                                                double stddev);

#ifdef __cplusplus
}
#endif

#endif
