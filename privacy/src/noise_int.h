/* privacy/ internals: noise regenerated from a seed. */
#ifndef SHOAL_PRIVACY_NOISE_INT_H
#define SHOAL_PRIVACY_NOISE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

/* acc[i] += stddev/1024 x a discrete Gaussian (sigma 1024) drawn from a
 * stream determined by `seed`: the same seed gives the same noise. */
shoal_err shoal_dp_seeded_noise(const uint8_t seed[32], double stddev, float *acc, size_t n);

/* acc[i] += sign x the same discrete Gaussian numbers (sigma 1024) as
 * shoal_dp_seeded_noise draws from `seed`, as integers: noise in grid
 * steps, which adds and cancels exactly. sign is +1 or -1. */
shoal_err shoal_dp_seeded_steps(const uint8_t seed[32], int sign, int64_t *acc, size_t n);

#endif
