/* What encoding.c and encoding_fold.c share: reading FLOAT32_LE elements
 * and testing their bits. */
#ifndef SHOAL_ENCODING_INT_H
#define SHOAL_ENCODING_INT_H

#include <stdint.h>
#include <string.h>

/* Explicit little-endian: the same bytes on every host; gcc turns the
 * shifts into one load on little-endian hosts, and loops over it
 * vectorize. */
static inline uint32_t shoal_f32le_bits(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline float shoal_f32_from_bits(uint32_t bits)
{
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The exponent field all ones is Inf (zero mantissa) or NaN: testing the
 * bits rather than isfinite() keeps -ffast-math builds honest. */
static inline int shoal_f32_bits_finite(uint32_t bits)
{
    return (bits & 0x7f800000u) != 0x7f800000u;
}

/* "NaN", "-Inf" or "+Inf" for bits that are not finite. */
static inline const char *shoal_f32_bits_kind(uint32_t bits)
{
    return (bits & 0x007fffffu) ? "NaN" : (bits & 0x80000000u) ? "-Inf" : "+Inf";
}

#endif
