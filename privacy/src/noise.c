/* The server's noise (see shoal/dp_noise.h): an exact sampler of the
 * discrete Gaussian (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian
 * for Differential Privacy", algorithms 1-3) driven by libsodium, so no
 * floating-point arithmetic decides a sample (Mironov 2012, "On
 * significance of the least significant bits for differential privacy"). */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "noise_int.h"
#include "shoal/dp_noise.h"

/* Random bytes: blocks of randombytes_buf_deterministic (ChaCha20), each
 * under its own 32-byte key: fresh from randombytes_buf, or, for noise
 * that must be regenerated later (DP-FTRL's tree nodes), BLAKE2b of the
 * block's number keyed by a stored seed. */
typedef struct rng {
    uint8_t buf[4096];
    size_t pos;
    int seeded;
    uint64_t block;
    uint8_t seed[32];
} rng;

static void rng_init(rng *r)
{
    r->pos = sizeof r->buf;
    r->seeded = 0;
}

static void rng_init_seeded(rng *r, const uint8_t seed[32])
{
    rng_init(r);
    r->seeded = 1;
    r->block = 0;
    memcpy(r->seed, seed, 32);
}

static uint64_t rng_u64(rng *r)
{
    if (r->pos + 8 > sizeof r->buf) {
        uint8_t key[randombytes_SEEDBYTES];
        if (r->seeded) {
            uint8_t counter[8];
            for (int i = 0; i < 8; i++)
                counter[i] = (uint8_t)(r->block >> (8 * i));
            r->block++;
            crypto_generichash(key, sizeof key, counter, sizeof counter, r->seed, 32);
        } else {
            randombytes_buf(key, sizeof key);
        }
        randombytes_buf_deterministic(r->buf, sizeof r->buf, key);
        sodium_memzero(key, sizeof key);
        r->pos = 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | r->buf[r->pos + (size_t)i];
    r->pos += 8;
    return v;
}

/* Uniform in [0, bound), bound >= 1, without modulo bias. */
static uint64_t rng_below(rng *r, uint64_t bound)
{
    uint64_t limit = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t v = rng_u64(r);
        if (v >= limit)
            return v % bound;
    }
}

/* Bernoulli(n / d), 0 <= n <= d, d >= 1. */
static int bernoulli(rng *r, uint64_t n, uint64_t d)
{
    return rng_below(r, d) < n;
}

/* Bernoulli(exp(-n / d)) for 0 <= n <= d (CKS algorithm 1, first case):
 * K counts successes of Bernoulli(gamma / k); the result is K odd. */
static int bernoulli_exp_small(rng *r, uint64_t n, uint64_t d)
{
    uint64_t k = 1;
    for (;;) {
        /* Bernoulli(n / (d k)); d k stays below 2^64 for the sizes used. */
        if (!bernoulli(r, n, d * k))
            return k % 2;
        k++;
    }
}

/* Bernoulli(exp(-n / d)) for any n >= 0 (second case: exp(-1) per whole
 * unit, then the fraction). */
static int bernoulli_exp(rng *r, uint64_t n, uint64_t d)
{
    for (uint64_t i = n / d; i > 0; i--)
        if (!bernoulli_exp_small(r, 1, 1))
            return 0;
    return bernoulli_exp_small(r, n % d, d);
}

/* Discrete Laplace with scale t >= 1 (CKS algorithm 2). */
static int64_t discrete_laplace(rng *r, uint64_t t)
{
    for (;;) {
        uint64_t u = rng_below(r, t);
        if (!bernoulli_exp(r, u, t))
            continue;
        uint64_t v = 0;
        while (bernoulli_exp_small(r, 1, 1))
            v++;
        uint64_t x = u + t * v;
        int negative = bernoulli(r, 1, 2);
        if (negative && x == 0)
            continue;
        return negative ? -(int64_t)x : (int64_t)x;
    }
}

/* Discrete Gaussian with integer sigma (CKS algorithm 3, sigma^2 = s):
 * t = sigma + 1, accept a Laplace sample Y with probability
 * exp(-(|Y| - s/t)^2 / (2 s)) = exp(-(|Y| t - s)^2 / (2 s t^2)). */
static int64_t discrete_gaussian(rng *r, uint64_t sigma)
{
    const uint64_t s = sigma * sigma, t = sigma + 1;
    for (;;) {
        int64_t y = discrete_laplace(r, t);
        uint64_t a = (uint64_t)(y < 0 ? -y : y);
        /* Keep every integer below 2^64: |Y| t <= 2^30, i.e. |Y| beyond
         * 64 sigma even at SHOAL_DP_MAX_SIGMA, where the discrete Gaussian
         * has mass below e^-2000; rejecting there changes nothing that
         * can be measured. */
        if (a > ((uint64_t)1 << 30) / t)
            continue;
        uint64_t diff = a * t > s ? a * t - s : s - a * t;
        if (bernoulli_exp(r, diff * diff, 2 * s * t * t))
            return y;
    }
}

shoal_err shoal_dp_discrete_gaussian(uint32_t sigma, int64_t *out, size_t n)
{
    if (sigma < 1 || sigma > SHOAL_DP_MAX_SIGMA || (!out && n))
        return SHOAL_EINVAL;
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    rng r;
    rng_init(&r);
    for (size_t i = 0; i < n; i++)
        out[i] = discrete_gaussian(&r, sigma);
    sodium_memzero(&r, sizeof r);
    return SHOAL_OK;
}

shoal_err shoal_dp_seeded_noise(const uint8_t seed[32], double stddev, float *acc, size_t n)
{
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    const double grid = stddev / SHOAL_DP_NOISE_SIGMA;
    rng r;
    rng_init_seeded(&r, seed);
    for (size_t i = 0; i < n; i++)
        acc[i] += (float)((double)discrete_gaussian(&r, SHOAL_DP_NOISE_SIGMA) * grid);
    sodium_memzero(&r, sizeof r);
    return SHOAL_OK;
}

shoal_err shoal_dp_seeded_steps(const uint8_t seed[32], int sign, int64_t *acc, size_t n)
{
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    rng r;
    rng_init_seeded(&r, seed);
    for (size_t i = 0; i < n; i++) {
        int64_t steps = discrete_gaussian(&r, SHOAL_DP_NOISE_SIGMA);
        acc[i] += sign < 0 ? -steps : steps;
    }
    sodium_memzero(&r, sizeof r);
    return SHOAL_OK;
}

shoal_err shoal_dp_add_gaussian_noise(float *sum, size_t n, double stddev)
{
    if ((!sum && n) || !(stddev > 0.0) || isinf(stddev))
        return SHOAL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(sum[i]))
            return SHOAL_ENUMERIC;
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    const double grid = stddev / SHOAL_DP_NOISE_SIGMA;
    rng r;
    rng_init(&r);
    for (size_t i = 0; i < n; i++) {
        /* The sum on the grid, plus grid x a discrete Gaussian of
         * SHOAL_DP_NOISE_SIGMA steps: noise of standard deviation stddev. */
        double steps = nearbyint((double)sum[i] / grid);
        sum[i] = (float)((steps + (double)discrete_gaussian(&r, SHOAL_DP_NOISE_SIGMA)) * grid);
    }
    sodium_memzero(&r, sizeof r);
    return SHOAL_OK;
}
