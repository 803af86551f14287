/* FLOAT32_LE on known byte vectors (independent of the host's byte order),
 * NaN/Inf refusals, and TensorInfo dispatch. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "shoal/encoding.h"
#include "shoal/envelope.h"

/* IEEE 754 binary32 bit patterns, least significant byte first. */
static const float known_values[] = {1.0f, -2.0f, 0.15625f, 0.0f, -0.0f, 1e-45f, 3.4028235e38f};
static const uint8_t known_bytes[] = {
    0x00, 0x00, 0x80, 0x3f, /*  1.0        = 0x3f800000 */
    0x00, 0x00, 0x00, 0xc0, /* -2.0        = 0xc0000000 */
    0x00, 0x00, 0x20, 0x3e, /*  0.15625    = 0x3e200000 */
    0x00, 0x00, 0x00, 0x00, /*  0.0 */
    0x00, 0x00, 0x00, 0x80, /* -0.0        = 0x80000000 */
    0x01, 0x00, 0x00, 0x00, /*  min subnormal = 0x00000001 */
    0xff, 0xff, 0x7f, 0x7f, /*  FLT_MAX    = 0x7f7fffff */
};
#define KNOWN_COUNT (sizeof known_values / sizeof known_values[0])

Test(protocol_encoding, f32le_encodes_known_vector)
{
    uint8_t out[sizeof known_bytes];
    memset(out, 0xaa, sizeof out);
    cr_assert_eq(shoal_tensor_encode_f32le(known_values, KNOWN_COUNT, out, sizeof out, NULL),
                 SHOAL_OK);
    cr_assert_eq(memcmp(out, known_bytes, sizeof out), 0);
}

Test(protocol_encoding, f32le_decodes_known_vector_bit_exactly)
{
    float out[KNOWN_COUNT];
    cr_assert_eq(
        shoal_tensor_decode_f32le(known_bytes, sizeof known_bytes, out, KNOWN_COUNT, "model", NULL),
        SHOAL_OK);
    for (size_t i = 0; i < KNOWN_COUNT; i++) {
        uint32_t got, want;
        memcpy(&got, &out[i], 4);
        memcpy(&want, &known_values[i], 4);
        cr_assert_eq(got, want, "element %zu: 0x%08x != 0x%08x", i, got, want);
    }
    cr_assert(signbit(out[4]));
}

/* The wire bytes are the host's bytes on a little-endian host and reversed
 * on a big-endian one: compare against the host layout explicitly. */
Test(protocol_encoding, f32le_byte_order_is_explicit)
{
    const float value = 1.0f;
    uint32_t host;
    memcpy(&host, &value, 4);
    uint8_t host_bytes[4];
    memcpy(host_bytes, &host, 4);
    const uint16_t probe = 1;
    uint8_t first;
    memcpy(&first, &probe, 1);
    const int little_endian_host = first == 1;

    uint8_t wire[4];
    cr_assert_eq(shoal_tensor_encode_f32le(&value, 1, wire, 4, NULL), SHOAL_OK);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(wire[i], host_bytes[little_endian_host ? i : 3 - i]);
    cr_assert_eq(wire[3], 0x3f);
}

Test(protocol_encoding, f32le_round_trips_many_values)
{
    enum { N = 4099 };
    static float values[N], back[N];
    static uint8_t wire[4 * N];
    uint32_t state = 12345;
    for (size_t i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        uint32_t bits = state;
        if ((bits & 0x7f800000u) == 0x7f800000u)
            bits &= 0xbfffffffu; /* keep it finite */
        memcpy(&values[i], &bits, 4);
    }
    cr_assert_eq(shoal_tensor_encode_f32le(values, N, wire, sizeof wire, NULL), SHOAL_OK);
    cr_assert_eq(shoal_tensor_decode_f32le(wire, sizeof wire, back, N, NULL, NULL), SHOAL_OK);
    cr_assert_eq(memcmp(values, back, sizeof values), 0);
}

/* A non-finite element has its own code, so a server tells it from a
 * malformed tensor without reading the message. */
Test(protocol_encoding, decode_refuses_nan_and_inf_naming_the_element)
{
    const uint8_t nan_at_2[] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0, 0x01, 0x00, 0xc0, 0x7f};
    const uint8_t pinf_at_0[] = {0x00, 0x00, 0x80, 0x7f};
    const uint8_t ninf_at_1[] = {0, 0, 0, 0, 0x00, 0x00, 0x80, 0xff};
    float out[3];
    shoal_errinfo ei;
    cr_assert_eq(shoal_tensor_decode_f32le(nan_at_2, sizeof nan_at_2, out, 3, "update", &ei),
                 SHOAL_ENUMERIC);
    cr_assert_str_eq(ei.msg, "update: element 2 is NaN");
    cr_assert_eq(shoal_tensor_decode_f32le(pinf_at_0, 4, out, 1, "update", &ei), SHOAL_ENUMERIC);
    cr_assert_str_eq(ei.msg, "update: element 0 is +Inf");
    cr_assert_eq(shoal_tensor_decode_f32le(ninf_at_1, 8, out, 2, NULL, &ei), SHOAL_ENUMERIC);
    cr_assert_str_eq(ei.msg, "tensor: element 1 is -Inf");
}

Test(protocol_encoding, decode_refuses_wrong_sizes)
{
    float out[4];
    shoal_errinfo ei;
    cr_assert_eq(shoal_tensor_decode_f32le(known_bytes, 10, out, 2, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: 10 bytes is not a whole number of FLOAT32_LE elements");
    cr_assert_eq(shoal_tensor_decode_f32le(known_bytes, 12, out, 4, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: 3 FLOAT32_LE elements received, 4 expected");
    cr_assert_eq(shoal_tensor_decode_f32le(NULL, 8, out, 2, "update", &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_tensor_decode_f32le(NULL, 0, NULL, 0, "update", &ei), SHOAL_OK);
}

Test(protocol_encoding, encode_refuses_non_finite_and_wrong_buffer)
{
    const float values[] = {1.0f, NAN, 2.0f};
    const float inf[] = {-INFINITY};
    uint8_t out[12];
    shoal_errinfo ei;
    cr_assert_eq(shoal_tensor_encode_f32le(values, 3, out, 12, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "tensor: element 1 is NaN; only finite values can be sent");
    cr_assert_eq(shoal_tensor_encode_f32le(inf, 1, out, 4, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "tensor: element 0 is -Inf; only finite values can be sent");
    cr_assert_eq(shoal_tensor_encode_f32le(values, 3, out, 11, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "tensor: 3 elements need 12 bytes of FLOAT32_LE, buffer holds 11");
    cr_assert_eq(shoal_tensor_encode_f32le(NULL, 1, out, 4, &ei), SHOAL_EINVAL);
}

Test(protocol_encoding, element_sizes)
{
    cr_assert_eq(shoal_tensor_element_size(SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE), 4);
    cr_assert_eq(shoal_tensor_element_size(SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED), 1);
    cr_assert_eq(shoal_tensor_element_size(SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING), 4);
    cr_assert_eq(shoal_tensor_element_size(SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UNSPECIFIED), 0);
    cr_assert_eq(shoal_tensor_element_size(77), 0);
}

Test(protocol_encoding, decode_by_tensor_info)
{
    Shoal__TensorInfo info = SHOAL__TENSOR_INFO__INIT;
    info.has_encoding = info.has_element_count = info.has_byte_size = 1;
    info.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    info.element_count = 3;
    info.byte_size = 12;
    float out[3];
    shoal_errinfo ei;
    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 12, out, 3, "update", &ei), SHOAL_OK);
    cr_assert_eq(out[0], 1.0f);
    cr_assert_eq(out[1], -2.0f);
    cr_assert_eq(out[2], 0.15625f);

    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 12, out, 2, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg,
                     "update: TensorInfo.element_count 3 does not match the 2 elements expected");
    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 8, out, 3, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: TensorInfo.byte_size 12 does not match the 8 bytes received");

    info.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED;
    info.byte_size = 3;
    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 3, out, 3, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: encoding INT8_SCALED is reserved and not implemented in "
                             "protocol version 1");
    info.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING;
    info.byte_size = 12;
    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 12, out, 3, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: encoding UINT32_RING is reserved and not implemented in "
                             "protocol version 1");
    info.encoding = (Shoal__TensorEncoding)0;
    cr_assert_eq(shoal_tensor_decode(&info, known_bytes, 12, out, 3, "update", &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "update: unknown encoding 0");
    cr_assert_eq(shoal_tensor_decode(NULL, known_bytes, 12, out, 3, "update", &ei), SHOAL_EINVAL);
}
