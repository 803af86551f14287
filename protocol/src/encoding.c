/* Tensor encodings: FLOAT32_LE with an explicit byte order. */
#include "shoal/encoding.h"

#include <inttypes.h>
#include <string.h>

#include "encoding_int.h"
#include "shoal/envelope.h"

size_t shoal_tensor_element_size(int encoding)
{
    switch (encoding) {
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE:
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING:
        return 4;
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED:
        return 1;
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING:
        return 8;
    default:
        return 0;
    }
}

shoal_err shoal_tensor_encode_f32le(const float *values, size_t count, uint8_t *out, size_t out_len,
                                    shoal_errinfo *ei)
{
    if (count > SIZE_MAX / 4 || out_len != count * 4)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "tensor: %zu elements need %zu bytes of FLOAT32_LE, buffer holds %zu",
            count, count <= SIZE_MAX / 4 ? count * 4 : SIZE_MAX, out_len);
    if (count > 0 && (!values || !out))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "tensor: NULL values or output");
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        if (!shoal_f32_bits_finite(bits))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "tensor: element %zu is %s; only finite values can be sent", i,
                                     shoal_f32_bits_kind(bits));
        /* Explicit little-endian: the same bytes on every host. */
        out[4 * i + 0] = (uint8_t)(bits);
        out[4 * i + 1] = (uint8_t)(bits >> 8);
        out[4 * i + 2] = (uint8_t)(bits >> 16);
        out[4 * i + 3] = (uint8_t)(bits >> 24);
    }
    return SHOAL_OK;
}

shoal_err shoal_tensor_decode_f32le(const uint8_t *bytes, size_t len, float *out, size_t count,
                                    const char *what, shoal_errinfo *ei)
{
    if (!what)
        what = "tensor";
    if (len % 4 != 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: %zu bytes is not a whole number of FLOAT32_LE elements", what,
                                 len);
    if (len / 4 != count)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: %zu FLOAT32_LE elements received, %zu expected", what,
                                 len / 4, count);
    if (count > 0 && (!bytes || !out))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: NULL input or output", what);
    /* Blocks decoded without a branch per element vectorize; a block with a
     * non-finite element is rescanned to name it. */
    enum { BLOCK = 4096 };
    for (size_t start = 0; start < count; start += BLOCK) {
        size_t end = count - start < BLOCK ? count : start + BLOCK;
        uint32_t bad = 0;
        for (size_t i = start; i < end; i++) {
            uint32_t bits = shoal_f32le_bits(bytes + 4 * i);
            bad |= !shoal_f32_bits_finite(bits);
            memcpy(&out[i], &bits, sizeof bits);
        }
        if (bad)
            for (size_t i = start; i < end; i++) {
                uint32_t bits;
                memcpy(&bits, &out[i], sizeof bits);
                if (!shoal_f32_bits_finite(bits))
                    return shoal_errinfo_set(ei, SHOAL_ENUMERIC, "%s: element %zu is %s", what, i,
                                             shoal_f32_bits_kind(bits));
            }
    }
    return SHOAL_OK;
}

shoal_err shoal_tensor_decode(const Shoal__TensorInfo *info, const uint8_t *bytes, size_t len,
                              float *out, size_t count, const char *what, shoal_errinfo *ei)
{
    if (!what)
        what = "tensor";
    if (!info)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: NULL TensorInfo", what);
    if (!info->has_element_count || info->element_count != count)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: TensorInfo.element_count %" PRIu64 " does not match the %zu "
                                 "elements expected",
                                 what, info->element_count, count);
    if (!info->has_byte_size || info->byte_size != len)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: TensorInfo.byte_size %" PRIu64
                                 " does not match the %zu bytes "
                                 "received",
                                 what, info->byte_size, len);
    switch (info->encoding) {
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE:
        return shoal_tensor_decode_f32le(bytes, len, out, count, what, ei);
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED:
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING:
    case SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING:
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: encoding %s is reserved and not implemented in protocol "
                                 "version %d",
                                 what, shoal_protocol_encoding_name((int)info->encoding),
                                 SHOAL_PROTOCOL_VERSION);
    default:
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: unknown encoding %d", what,
                                 (int)info->encoding);
    }
}
