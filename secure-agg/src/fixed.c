/* Fixed-point encoding of weighted updates into the ring (see
 * shoal/secagg.h). */
#include <math.h>
#include <sodium.h>

#include "secagg_int.h"
#include "shoal/secagg.h"

/* The largest encoded element: (clip * max_weight * 2) * scale, rounded up. */
static double element_max(const shoal_secagg_fixed *fx)
{
    return ceil(2.0 * fx->clip * (double)fx->max_weight * fx->scale);
}

/* 2^bits as a double (exact for every bits <= 64). */
static double ring_size(unsigned bits)
{
    return ldexp(1.0, (int)bits);
}

shoal_err shoal_secagg_fixed_plan(shoal_secagg_fixed *fx, shoal_errinfo *ei)
{
    if (!fx)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: no encoding given");
    if (!(fx->clip > 0.0) || !isfinite(fx->clip))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: clip must be a positive finite number, "
                                 "got %g",
                                 fx->clip);
    if (fx->max_weight == 0 || fx->max_contributors == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: max_weight (%u) and max_contributors (%u) "
                                 "must be at least 1",
                                 fx->max_weight, fx->max_contributors);
    if (fx->bits < 1 || fx->bits > 64)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: the ring must have 1 to 64 bits, got %u",
                                 fx->bits);
    const double n = (double)fx->max_contributors, room = ring_size(fx->bits);
    if (n * (double)fx->max_weight >= room)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: %u contributors of weight up to %u can sum "
                                 "to %.0f, which does not fit a %u-bit ring; use more bits or "
                                 "fewer contributors",
                                 fx->max_contributors, fx->max_weight, n * fx->max_weight,
                                 fx->bits);
    /* Largest scale 2^e whose sum of n maximal elements stays below 2^bits;
     * elements also stay below 2^53 so every step is exact in a double. */
    for (int e = 52; e >= -20; e--) {
        fx->scale = ldexp(1.0, e);
        double emax = element_max(fx);
        if (emax <= ldexp(1.0, 53) && n * emax < room)
            return SHOAL_OK;
    }
    fx->scale = 0.0;
    return shoal_errinfo_set(ei, SHOAL_EINVAL,
                             "secure aggregation: %u contributors x range [-%g, %g] x weight %u "
                             "cannot be summed in a %u-bit ring at any useful precision; use "
                             "more bits, or lower clip, max_weight or the group size",
                             fx->max_contributors, fx->clip, fx->clip, fx->max_weight, fx->bits);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(shoal_secagg_stream *s)
{
    return (double)(shoal_secagg_stream_u64(s) >> 11) * 0x1.0p-53;
}

shoal_err shoal_secagg_fixed_encode(const shoal_secagg_fixed *fx, const float *x, size_t n,
                                    uint32_t w, uint64_t *out)
{
    if (!fx || !(fx->scale > 0.0) || (!x && n > 0) || !out || w == 0 || w > fx->max_weight)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return SHOAL_ENUMERIC;
    const double clip = fx->clip, offset = clip * (double)fx->max_weight;
    const double emax = element_max(fx);
    shoal_secagg_stream rs;
    shoal_secagg_stream_init_random(&rs);
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        v = v > clip ? clip : v < -clip ? -clip : v;
        double u = (v * (double)w + offset) * fx->scale;
        double f = floor(u);
        if (uniform01(&rs) < u - f)
            f += 1.0;
        if (f > emax)
            f = emax;
        if (f < 0.0)
            f = 0.0;
        out[i] = (uint64_t)f;
    }
    out[n] = w;
    shoal_secagg_stream_wipe(&rs);
    return SHOAL_OK;
}

shoal_err shoal_secagg_fixed_decode(const shoal_secagg_fixed *fx, const uint64_t *sum, size_t n,
                                    uint32_t contributors, double *out, uint64_t *total_weight)
{
    if (!fx || !(fx->scale > 0.0) || (!sum) || (!out && n > 0) || !total_weight ||
        contributors == 0 || contributors > fx->max_contributors)
        return SHOAL_EINVAL;
    const double k = (double)contributors, emax = element_max(fx);
    const double offset = k * fx->clip * (double)fx->max_weight;
    uint64_t wsum = sum[n];
    if (wsum < contributors || (double)wsum > k * (double)fx->max_weight)
        return SHOAL_EPROTO;
    for (size_t i = 0; i < n; i++) {
        if ((double)sum[i] > k * emax)
            return SHOAL_EPROTO;
        out[i] = (double)sum[i] / fx->scale - offset;
    }
    *total_weight = wsum;
    return SHOAL_OK;
}

shoal_err shoal_secagg_fixed_encode_bits(const shoal_secagg_fixed *fx, const float *x, size_t n,
                                         uint32_t w, const uint8_t *bits, size_t bit_count,
                                         uint64_t *out)
{
    if ((!bits && bit_count > 0) || !out)
        return SHOAL_EINVAL;
    for (size_t k = 0; k < bit_count; k++)
        if (bits[k] > 1)
            return SHOAL_EINVAL;
    shoal_err err = shoal_secagg_fixed_encode(fx, x, n, w, out);
    if (err)
        return err;
    for (size_t k = 0; k < bit_count; k++)
        out[n + 1 + k] = bits[k];
    return SHOAL_OK;
}

shoal_err shoal_secagg_fixed_decode_bits(const shoal_secagg_fixed *fx, const uint64_t *sum,
                                         size_t n, uint32_t contributors, double *out,
                                         uint64_t *total_weight, size_t bit_count, uint64_t *counts)
{
    if ((!counts && bit_count > 0) || !sum)
        return SHOAL_EINVAL;
    shoal_err err = shoal_secagg_fixed_decode(fx, sum, n, contributors, out, total_weight);
    if (err)
        return err;
    for (size_t k = 0; k < bit_count; k++)
        if (sum[n + 1 + k] > contributors)
            return SHOAL_EPROTO;
    for (size_t k = 0; k < bit_count; k++)
        counts[k] = sum[n + 1 + k];
    return SHOAL_OK;
}
