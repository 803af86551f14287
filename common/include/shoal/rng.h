/* Shoal: seeded, reproducible pseudo-random numbers for simulation and
 * initialisation. NOT for cryptography (use libsodium's randombytes there).
 *
 * xoshiro256** (Blackman & Vigna 2018), seeded through splitmix64. The same
 * seed gives the same sequence on every platform. Independent streams for
 * parallel work (one per virtual device, one per thread) come from
 * shoal_rng_derive(seed, stream id), never from sharing one generator. A
 * shoal_rng is a plain value: caller-allocated, no cleanup, not thread-safe
 * (use one per thread). */
#ifndef SHOAL_RNG_H
#define SHOAL_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_rng {
    uint64_t s[4];
    double spare_normal;
    int has_spare;
} shoal_rng;

SHOAL_API void shoal_rng_seed(shoal_rng *rng, uint64_t seed);
/* A generator for sub-stream `stream` of `seed`, statistically independent
 * of the other streams of the same seed. */
SHOAL_API void shoal_rng_derive(shoal_rng *rng, uint64_t seed, uint64_t stream);

SHOAL_API uint64_t shoal_rng_u64(shoal_rng *rng);
/* Uniform in [0, 1) with 53 (double) or 24 (float) random bits. */
SHOAL_API double shoal_rng_double(shoal_rng *rng);
SHOAL_API float shoal_rng_float(shoal_rng *rng);
/* Uniform integer in [0, bound), unbiased; bound 0 returns 0. */
SHOAL_API uint64_t shoal_rng_below(shoal_rng *rng, uint64_t bound);
/* Standard normal (mean 0, variance 1). */
SHOAL_API double shoal_rng_normal(shoal_rng *rng);
/* Gamma(shape, 1) for shape > 0 (Marsaglia & Tsang 2000). */
SHOAL_API double shoal_rng_gamma(shoal_rng *rng, double shape);
/* Fisher-Yates shuffle of `count` indices in place. */
SHOAL_API void shoal_rng_shuffle_u32(shoal_rng *rng, uint32_t *items, size_t count);

#ifdef __cplusplus
}
#endif

#endif
