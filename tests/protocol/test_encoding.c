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

/* The server's scan: the L2 norm of FLOAT32_LE bytes in one pass, and the
 * first bad element named, in any block (blocks are 4096 elements). */
Test(protocol_encoding, scan_gives_the_norm_and_names_the_first_bad_element)
{
    enum { N = 3 * 4096 + 13 }; /* three whole blocks, a partial one, a ragged tail */
    static float v[N];
    static uint8_t wire[4 * N];
    long double want = 0.0L;
    uint32_t state = 12345;
    for (size_t i = 0; i < N; i++) {
        state = state * 1664525u + 1013904223u;
        v[i] = ((float)(state >> 8) / 16777216.0f - 0.5f) * 3.0f;
        want += (long double)v[i] * v[i];
    }
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    double norm = -1.0;
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, INFINITY, &norm, "update", NULL),
                 SHOAL_OK);
    cr_assert_float_eq(norm, (double)sqrtl(want), 1e-12 * (double)sqrtl(want));
    const float three_four[2] = {3.0f, -4.0f};
    uint8_t w2[8];
    cr_assert_eq(shoal_tensor_encode_f32le(three_four, 2, w2, 8, NULL), SHOAL_OK);
    cr_assert_eq(shoal_tensor_scan_f32le(w2, 8, 2, 4.0f, &norm, NULL, NULL), SHOAL_OK);
    cr_assert_eq(norm, 5.0, "the norm of (3, -4) is %g", norm);

    /* A NaN in the third block, after an element above the bound in the
     * same block: the first failing element is named, with its kind. */
    shoal_errinfo ei = {0};
    const size_t nan_at = 2 * 4096 + 100, big_at = 2 * 4096 + 7;
    const uint8_t nan_bits[4] = {0x00, 0x00, 0xc0, 0x7f};
    memcpy(wire + 4 * nan_at, nan_bits, 4);
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, INFINITY, &norm, "update", &ei),
                 SHOAL_ENUMERIC);
    cr_assert(strstr(ei.msg, "update: element 8292 is NaN"), "%s", ei.msg);
    cr_assert_eq(norm, 0.0);
    const float big = 2.5f;
    uint8_t big_bytes[4];
    cr_assert_eq(shoal_tensor_encode_f32le(&big, 1, big_bytes, 4, NULL), SHOAL_OK);
    memcpy(wire + 4 * big_at, big_bytes, 4);
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, 2.0f, &norm, "update", &ei),
                 SHOAL_ELIMIT);
    cr_assert(strstr(ei.msg, "element 8199 is 2.5, above the 2"), "%s", ei.msg);
    /* The last element of a ragged tail is checked too. */
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    memcpy(wire + 4 * (N - 1), nan_bits, 4);
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, INFINITY, &norm, NULL, &ei),
                 SHOAL_ENUMERIC);
    cr_assert(strstr(ei.msg, "element 12300 is NaN"), "%s", ei.msg);
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire - 1, N, INFINITY, &norm, NULL, &ei),
                 SHOAL_EPROTO);
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, 0.0f, &norm, NULL, &ei),
                 SHOAL_EINVAL);
}

/* Folding from the bytes equals decoding and then adding. */
Test(protocol_encoding, fold_from_bytes_equals_decode_then_add)
{
    enum { N = 1031 };
    static float v[N], acc[N], want[N], back[N];
    static uint8_t wire[4 * N];
    for (size_t i = 0; i < N; i++) {
        v[i] = (float)((int)(i % 97) - 48) / 7.0f;
        acc[i] = want[i] = (float)i * 0.25f;
    }
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    cr_assert_eq(shoal_tensor_decode_f32le(wire, sizeof wire, back, N, NULL, NULL), SHOAL_OK);
    const float weight = 3.0f;
    for (size_t i = 0; i < N; i++)
        want[i] += weight * back[i];
    shoal_tensor_fold_f32le(acc, wire, weight, N);
    for (size_t i = 0; i < N; i++)
        cr_assert_float_eq(acc[i], want[i], 1e-6f * (1.0f + fabsf(want[i])), "element %zu", i);
}

/* Scanning chunk by chunk, however the elements are split, gives the very
 * same norm as one scan (lanes go by element index), and names a bad
 * element by its index in the whole tensor. */
Test(protocol_encoding, scan_by_chunks_equals_one_scan_and_names_global_indices)
{
    enum { N = 5000 };
    static float v[N];
    static uint8_t wire[4 * N];
    for (size_t i = 0; i < N; i++)
        v[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i % 13));
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    double whole = 0.0;
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, INFINITY, &whole, NULL, NULL),
                 SHOAL_OK);
    const size_t splits[][4] = {{1, 7, 1000, 3992}, {4097, 1, 1, 901}, {3, 5, 11, 4981}};
    for (size_t s = 0; s < 3; s++) {
        shoal_tensor_scan scan;
        shoal_tensor_scan_init(&scan, INFINITY);
        size_t at = 0;
        for (size_t k = 0; k < 4; k++) {
            cr_assert_eq(shoal_tensor_scan_add(&scan, wire + 4 * at, splits[s][k], NULL, NULL),
                         SHOAL_OK);
            at += splits[s][k];
        }
        cr_assert_eq(at, (size_t)N);
        cr_assert_eq(scan.elements, (size_t)N);
        cr_assert_eq(shoal_tensor_scan_norm(&scan), whole, "split %zu: %.17g vs %.17g", s,
                     shoal_tensor_scan_norm(&scan), whole);
    }
    const uint8_t inf_bits[4] = {0x00, 0x00, 0x80, 0xff}; /* -Inf */
    memcpy(wire + 4 * 4321, inf_bits, 4);
    shoal_tensor_scan scan;
    shoal_tensor_scan_init(&scan, INFINITY);
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_tensor_scan_add(&scan, wire, 4000, "update", &ei), SHOAL_OK);
    cr_assert_eq(shoal_tensor_scan_add(&scan, wire + 4 * 4000, 1000, "update", &ei),
                 SHOAL_ENUMERIC);
    cr_assert(strstr(ei.msg, "update: element 4321 is -Inf"), "%s", ei.msg);
    cr_assert_eq(shoal_tensor_scan_add(&scan, wire, 1, "update", &ei), SHOAL_ESTATE);
}

/* The scan's one compare per element: wherever a bad element stands
 * (before, in and after the vector steps, whatever element the call
 * starts at), it is found and named; an element exactly at the bound
 * passes and the next float above it does not; with no bound, Inf is
 * still refused as not finite. The norm is the lanes' sum to the bit. */
Test(protocol_encoding, scan_finds_a_bad_element_at_every_position)
{
    enum { N = 3 * SHOAL_TENSOR_SCAN_LANES + 5 };
    float v[N];
    uint8_t wire[4 * N];
    for (size_t i = 0; i < N; i++)
        v[i] = (i % 2 ? -1.0f : 1.0f) * (0.5f + (float)i / 64.0f);
    const float bound = 2.0f;
    for (size_t first = 0; first <= SHOAL_TENSOR_SCAN_LANES + 1; first++) {
        for (size_t bad = first; bad < N; bad++) {
            for (int kind = 0; kind < 3; kind++) {
                cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
                /* The encoder refuses what is not finite: the bits go in by hand. */
                const float x = kind == 0   ? nextafterf(bound, INFINITY)
                                : kind == 1 ? -NAN
                                            : -INFINITY;
                uint32_t bits;
                memcpy(&bits, &x, sizeof bits);
                for (int b = 0; b < 4; b++)
                    wire[4 * bad + b] = (uint8_t)(bits >> (8 * b));
                shoal_tensor_scan scan;
                shoal_tensor_scan_init(&scan, bound);
                shoal_errinfo ei = {0};
                cr_assert_eq(shoal_tensor_scan_add(&scan, wire, first, "u", &ei), SHOAL_OK);
                const shoal_err want = kind == 0 ? SHOAL_ELIMIT : SHOAL_ENUMERIC;
                cr_assert_eq(shoal_tensor_scan_add(&scan, wire + 4 * first, N - first, "u", &ei),
                             want, "first %zu, bad element %zu of kind %d", first, bad, kind);
                char named[32];
                snprintf(named, sizeof named, "u: element %zu is ", bad);
                cr_assert(strstr(ei.msg, named), "%s (first %zu)", ei.msg, first);
            }
        }
    }
    /* At the bound, negative or positive, and subnormals: accepted; the
     * norm is the sum of the lanes taken in index order, exactly. */
    v[3] = bound;
    v[SHOAL_TENSOR_SCAN_LANES + 2] = -bound;
    v[N - 1] = 1e-40f;
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    double lane[SHOAL_TENSOR_SCAN_LANES] = {0}, sum = 0.0, norm = -1.0;
    for (size_t i = 0; i < N; i++)
        lane[i % SHOAL_TENSOR_SCAN_LANES] += (double)v[i] * (double)v[i];
    for (size_t k = 0; k < SHOAL_TENSOR_SCAN_LANES; k++)
        sum += lane[k];
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, bound, &norm, NULL, NULL), SHOAL_OK);
    cr_assert_eq(norm, sqrt(sum), "%.17g vs %.17g", norm, sqrt(sum));
    /* No bound: Inf is not finite, whatever the bound says. */
    const uint8_t inf_bits[4] = {0x00, 0x00, 0x80, 0x7f}; /* +Inf */
    memcpy(wire + 4 * 5, inf_bits, 4);
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_tensor_scan_f32le(wire, sizeof wire, N, INFINITY, &norm, "u", &ei),
                 SHOAL_ENUMERIC);
    cr_assert(strstr(ei.msg, "u: element 5 is +Inf"), "%s", ei.msg);
}
