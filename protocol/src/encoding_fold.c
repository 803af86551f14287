/* FLOAT32_LE updates checked and folded straight from their wire bytes
 * (shoal/encoding.h). A server reads an accepted update twice: once to
 * decide whether to take it (every element finite and in range, its L2
 * norm), once to add it to a sum. Neither pass writes a decoded copy. */
#include <math.h>
#include <string.h>

#include "encoding_int.h"
#include "shoal/encoding.h"

/* LANES independent double sums: without -ffast-math a compiler may not
 * reorder one running sum, so the lanes are written as vectors (gcc and
 * clang; other compilers take the plain loop, same arithmetic). Lane k
 * sums the squares of the elements i with i % LANES == k in order, so the
 * result does not depend on the compiler's choices. */
enum { BLOCK = 1024 }; /* a 4 KiB block on the stack */
#define LANES SHOAL_TENSOR_SCAN_LANES

void shoal_tensor_scan_init(shoal_tensor_scan *scan, float max_abs)
{
    memset(scan, 0, sizeof *scan);
    scan->max_abs = max_abs;
}

/* Names the first element of bytes[0..n) that is not finite or above the
 * bound (first = the index of bytes[0] in the tensor). */
static shoal_err name_bad(const uint8_t *bytes, size_t n, size_t first, float max_abs,
                          const char *what, shoal_errinfo *ei)
{
    for (size_t i = 0; i < n; i++) {
        const uint32_t bits = shoal_f32le_bits(bytes + 4 * i);
        if (!shoal_f32_bits_finite(bits))
            return shoal_errinfo_set(ei, SHOAL_ENUMERIC, "%s: element %zu is %s", what, first + i,
                                     shoal_f32_bits_kind(bits));
        if (fabsf(shoal_f32_from_bits(bits)) > max_abs)
            return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                     "%s: element %zu is %g, above the %g an element may be", what,
                                     first + i, (double)shoal_f32_from_bits(bits), (double)max_abs);
    }
    return SHOAL_EINVAL; /* not reached: the caller saw a bad element */
}

/* Adds the squares of block[0..n) to the lanes; element j of the block is
 * element `first + j` of the tensor and goes to lane (first + j) % LANES. */
static void add_squares(double lane[LANES], const float *block, size_t n, size_t first)
{
    size_t i = 0;
    for (; i < n && (first + i) % LANES; i++)
        lane[(first + i) % LANES] += (double)block[i] * (double)block[i];
#if defined(__GNUC__) /* gcc and clang: vector types of any target's width */
    typedef float f32x4 __attribute__((vector_size(16)));
    typedef double f64x4 __attribute__((vector_size(32)));
    f64x4 v[LANES / 4];
    memcpy(v, lane, sizeof v);
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES / 4; k++) {
            f32x4 four;
            memcpy(&four, &block[i + 4 * k], sizeof four);
            const f64x4 x = __builtin_convertvector(four, f64x4);
            v[k] += x * x;
        }
    memcpy(lane, v, sizeof v);
#endif
    for (; i < n; i++)
        lane[(first + i) % LANES] += (double)block[i] * (double)block[i];
}

shoal_err shoal_tensor_scan_add(shoal_tensor_scan *scan, const uint8_t *bytes, size_t count,
                                const char *what, shoal_errinfo *ei)
{
    if (!what)
        what = "tensor";
    if (!scan || (count > 0 && !bytes) || !(scan->max_abs > 0.0f))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: NULL scan or input, or a bound that is not positive", what);
    if (scan->failed)
        return shoal_errinfo_set(ei, SHOAL_ESTATE, "%s: the scan already found a bad element",
                                 what);
    float block[BLOCK]; /* one block decoded, in L1: the squares are summed from it */
    uint32_t max_bits;
    memcpy(&max_bits, &scan->max_abs, sizeof max_bits);
    for (size_t start = 0; start < count; start += BLOCK) {
        const size_t n = count - start < BLOCK ? count - start : BLOCK;
        const uint8_t *in = bytes + 4 * start;
        /* One pass tests and copies: |x| > max_abs compares the bits
         * without the sign (for finite non-negative floats the order of
         * the bits is the order of the values), and a NaN's bits are above
         * every bound. */
        uint32_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            const uint32_t bits = shoal_f32le_bits(in + 4 * i);
            bad |= !shoal_f32_bits_finite(bits) | ((bits & 0x7fffffffu) > max_bits);
            block[i] = shoal_f32_from_bits(bits);
        }
        if (bad) {
            scan->failed = 1;
            return name_bad(in, n, scan->elements, scan->max_abs, what, ei);
        }
        add_squares(scan->lane, block, n, scan->elements);
        scan->elements += n;
    }
    return SHOAL_OK;
}

double shoal_tensor_scan_norm(const shoal_tensor_scan *scan)
{
    double sum = 0.0;
    for (size_t k = 0; k < LANES; k++)
        sum += scan->lane[k];
    return sqrt(sum);
}

shoal_err shoal_tensor_scan_f32le(const uint8_t *bytes, size_t len, size_t count, float max_abs,
                                  double *norm, const char *what, shoal_errinfo *ei)
{
    if (norm)
        *norm = 0.0;
    if (count > SIZE_MAX / 4 || len != count * 4)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: %zu bytes received, %zu FLOAT32_LE elements expected",
                                 what ? what : "tensor", len, count);
    if (!norm)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: NULL norm", what ? what : "tensor");
    shoal_tensor_scan scan;
    shoal_tensor_scan_init(&scan, max_abs);
    shoal_err err = shoal_tensor_scan_add(&scan, bytes, count, what, ei);
    if (err == SHOAL_OK)
        *norm = shoal_tensor_scan_norm(&scan);
    return err;
}

void shoal_tensor_fold_f32le(float *restrict acc, const uint8_t *restrict bytes, float weight,
                             size_t count)
{
    for (size_t i = 0; i < count; i++)
        acc[i] += weight * shoal_f32_from_bits(shoal_f32le_bits(bytes + 4 * i));
}
