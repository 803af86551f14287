#include "shoal/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void shoal_rng_seed(shoal_rng *rng, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&sm);
    rng->has_spare = 0;
    rng->spare_normal = 0.0;
}

void shoal_rng_derive(shoal_rng *rng, uint64_t seed, uint64_t stream)
{
    /* Mix the stream id through splitmix64 before combining so that nearby
     * (seed, stream) pairs land far apart in the seed space. */
    uint64_t sm = stream ^ 0xD1B54A32D192ED03ULL;
    uint64_t mixed = splitmix64(&sm);
    shoal_rng_seed(rng, seed ^ mixed ^ rotl(mixed, 17));
}

uint64_t shoal_rng_u64(shoal_rng *rng)
{
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double shoal_rng_double(shoal_rng *rng)
{
    return (double)(shoal_rng_u64(rng) >> 11) * 0x1.0p-53;
}

float shoal_rng_float(shoal_rng *rng)
{
    return (float)(shoal_rng_u64(rng) >> 40) * 0x1.0p-24f;
}

uint64_t shoal_rng_below(shoal_rng *rng, uint64_t bound)
{
    if (bound == 0)
        return 0;
    /* Rejection on the top of the range keeps the result unbiased. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = shoal_rng_u64(rng);
        if (r >= threshold)
            return r % bound;
    }
}

double shoal_rng_normal(shoal_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare_normal;
    }
    /* Marsaglia polar method: exact, no trigonometry. */
    double u, v, s;
    do {
        u = 2.0 * shoal_rng_double(rng) - 1.0;
        v = 2.0 * shoal_rng_double(rng) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    rng->spare_normal = v * f;
    rng->has_spare = 1;
    return u * f;
}

double shoal_rng_gamma(shoal_rng *rng, double shape)
{
    if (!(shape > 0.0))
        return 0.0;
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a). */
        double u;
        do
            u = shoal_rng_double(rng);
        while (u == 0.0);
        return shoal_rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0;
    double c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = shoal_rng_normal(rng);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = shoal_rng_double(rng);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

void shoal_rng_shuffle_u32(shoal_rng *rng, uint32_t *items, size_t count)
{
    for (size_t i = count; i > 1; i--) {
        size_t j = (size_t)shoal_rng_below(rng, i);
        uint32_t t = items[i - 1];
        items[i - 1] = items[j];
        items[j] = t;
    }
}
