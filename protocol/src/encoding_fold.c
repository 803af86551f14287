/* FLOAT32_LE updates checked and folded straight from their wire bytes
 * (shoal/encoding.h). A server reads an accepted update twice: once to
 * decide whether to take it (every element finite and in range, its L2
 * norm), once to add it to a sum. Neither pass writes a decoded copy. */
#include <math.h>
#include <string.h>

#include "encoding_int.h"
#include "shoal/clones.h"
#include "shoal/encoding.h"

/* LANES independent double sums: without -ffast-math a compiler may not
 * reorder one running sum, so the lanes are written as vectors (gcc and
 * clang; other compilers take the plain loop, same arithmetic). Lane k
 * sums the squares of the elements i with i % LANES == k in order, so the
 * result does not depend on the compiler's choices: a float's square is
 * exact in double, so a fused multiply-add rounds it as a multiply and
 * an add do, and both CPU bodies give the same sums. */
#define LANES SHOAL_TENSOR_SCAN_LANES

_Static_assert(LANES % 8 == 0, "the vector bodies take LANES elements in steps of 8");

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

/* Element `first + i` of the tensor, bytes[4i..4i+4), into its lane; 1
 * when it is not finite or its magnitude's bits are above lim. */
static inline uint32_t scan_one(double lane[LANES], const uint8_t *bytes, size_t i, size_t first,
                                uint32_t lim)
{
    const uint32_t bits = shoal_f32le_bits(bytes + 4 * i);
    const double x = shoal_f32_from_bits(bits);
    lane[(first + i) % LANES] += x * x;
    return (bits & 0x7fffffffu) > lim;
}

#if SHOAL_X86_DISPATCH || defined(__SSE2__)
/* x86-64: the SSE2 body every such CPU runs, and with SHOAL_X86_DISPATCH
 * (common/include/shoal/clones.h) an AVX2+FMA body picked at run time.
 * Written with intrinsics: GCC 12 turns generic vectors wider than the
 * target's registers into scalar code, and its float-to-double conversion
 * of vector halves into element-by-element work.
 *
 * Each scans whole steps of LANES elements of p[0..4n), lane 0 first,
 * ORs into *bad when a magnitude's bits are above lim (signed compares:
 * both are below 2^31) and returns how many elements it took. */
#include <immintrin.h>

static size_t scan_sse2(double lane[LANES], const uint8_t *p, size_t n, uint32_t lim, uint32_t *bad)
{
    const __m128i mag = _mm_set1_epi32(0x7fffffff), limv = _mm_set1_epi32((int32_t)lim);
    __m128i badv = _mm_setzero_si128();
    __m128d acc[LANES / 2];
    for (int k = 0; k < LANES / 2; k++)
        acc[k] = _mm_loadu_pd(lane + 2 * k);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES / 4; k++) {
            const uint8_t *q = p + 4 * i + 16 * k;
            const __m128i bits = _mm_loadu_si128((const __m128i *)(const void *)q);
            badv = _mm_or_si128(badv, _mm_cmpgt_epi32(_mm_and_si128(bits, mag), limv));
            /* The upper half loaded again: cheaper than moving it down. */
            const __m128d lo = _mm_cvtps_pd(_mm_castsi128_ps(bits));
            const __m128d hi = _mm_cvtps_pd(
                _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(const void *)(q + 8))));
            acc[2 * k] = _mm_add_pd(acc[2 * k], _mm_mul_pd(lo, lo));
            acc[2 * k + 1] = _mm_add_pd(acc[2 * k + 1], _mm_mul_pd(hi, hi));
        }
    for (int k = 0; k < LANES / 2; k++)
        _mm_storeu_pd(lane + 2 * k, acc[k]);
    *bad |= _mm_movemask_epi8(badv) != 0;
    return i;
}

#if SHOAL_X86_DISPATCH
__attribute__((target("avx2,fma"))) static size_t scan_avx2(double lane[LANES], const uint8_t *p,
                                                            size_t n, uint32_t lim, uint32_t *bad)
{
    const __m256i mag = _mm256_set1_epi32(0x7fffffff), limv = _mm256_set1_epi32((int32_t)lim);
    __m256i badv = _mm256_setzero_si256();
    __m256d acc[LANES / 4];
    for (int k = 0; k < LANES / 4; k++)
        acc[k] = _mm256_loadu_pd(lane + 4 * k);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES / 8; k++) {
            const __m256i bits =
                _mm256_loadu_si256((const __m256i *)(const void *)(p + 4 * i + 32 * k));
            badv = _mm256_or_si256(badv, _mm256_cmpgt_epi32(_mm256_and_si256(bits, mag), limv));
            /* Loaded again as two halves: converting from memory costs
             * less than extracting the upper half. */
            const float *f = (const float *)(const void *)(p + 4 * i + 32 * k);
            const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(f));
            const __m256d hi = _mm256_cvtps_pd(_mm_loadu_ps(f + 4));
            acc[2 * k] = _mm256_fmadd_pd(lo, lo, acc[2 * k]);
            acc[2 * k + 1] = _mm256_fmadd_pd(hi, hi, acc[2 * k + 1]);
        }
    for (int k = 0; k < LANES / 4; k++)
        _mm256_storeu_pd(lane + 4 * k, acc[k]);
    *bad |= !_mm256_testz_si256(badv, badv);
    return i;
}
#endif

static size_t scan_steps(double lane[LANES], const uint8_t *p, size_t n, uint32_t lim,
                         uint32_t *bad)
{
#if SHOAL_X86_DISPATCH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return scan_avx2(lane, p, n, lim, bad);
#endif
    return scan_sse2(lane, p, n, lim, bad);
}

#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Other little-endian targets (arm64, armhf): 16-byte generic vectors,
 * the width NEON has. */
static size_t scan_steps(double lane[LANES], const uint8_t *p, size_t n, uint32_t lim,
                         uint32_t *bad)
{
    typedef int32_t i32x4 __attribute__((vector_size(16)));
    typedef float f32x4 __attribute__((vector_size(16)));
    typedef double f64x4 __attribute__((vector_size(32)));
    const int32_t m = 0x7fffffff, l = (int32_t)lim;
    const i32x4 mag = {m, m, m, m}, limv = {l, l, l, l};
    i32x4 badv = {0, 0, 0, 0};
    f64x4 acc[LANES / 4];
    memcpy(acc, lane, sizeof acc);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES / 4; k++) {
            i32x4 bits;
            f32x4 four;
            memcpy(&bits, p + 4 * i + 16 * k, sizeof bits);
            memcpy(&four, p + 4 * i + 16 * k, sizeof four);
            badv |= (bits & mag) > limv;
            const f64x4 x = __builtin_convertvector(four, f64x4);
            acc[k] += x * x;
        }
    memcpy(lane, acc, sizeof acc);
    for (int k = 0; k < 4; k++)
        *bad |= (uint32_t)badv[k];
    return i;
}

#else
/* Anything else: the element loop in scan_bytes does it all. */
static size_t scan_steps(double lane[LANES], const uint8_t *p, size_t n, uint32_t lim,
                         uint32_t *bad)
{
    (void)lane, (void)p, (void)n, (void)lim, (void)bad;
    return 0;
}
#endif

/* One pass over bytes[0..4n) (element `first` of the tensor onwards): the
 * squares into the lanes, and nonzero when an element's magnitude bits are
 * above lim. With lim at most FLT_MAX's bits, NaN and Inf are above it too
 * (their bits are above every finite float's), so one compare tests both. */
static uint32_t scan_bytes(double lane[LANES], const uint8_t *bytes, size_t n, size_t first,
                           uint32_t lim)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i < n && (first + i) % LANES; i++)
        bad |= scan_one(lane, bytes, i, first, lim);
    i += scan_steps(lane, bytes + 4 * i, n - i, lim, &bad);
    for (; i < n; i++)
        bad |= scan_one(lane, bytes, i, first, lim);
    return bad;
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
    /* FLT_MAX's bits when there is no finite bound: see scan_bytes. */
    uint32_t lim;
    memcpy(&lim, &scan->max_abs, sizeof lim);
    if (lim > 0x7f7fffffu)
        lim = 0x7f7fffffu;
    /* The lanes are only added to: a bad element found late leaves them
     * changed, and the scan is over then anyway. */
    if (scan_bytes(scan->lane, bytes, count, scan->elements, lim)) {
        scan->failed = 1;
        return name_bad(bytes, count, scan->elements, scan->max_abs, what, ei);
    }
    scan->elements += count;
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
