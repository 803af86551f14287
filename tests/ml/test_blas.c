#include <criterion/criterion.h>
#include <stdlib.h>

#include "shoal/blas.h"
#include "testutil.h"

/* C = alpha * op(A) op(B) + beta * C computed in double, the obvious way. */
static void naive_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                       size_t lda, const float *b, size_t ldb, float beta, double *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t p = 0; p < k; p++) {
                double av = ta ? a[p * lda + i] : a[i * lda + p];
                double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += av * bv;
            }
            c[i * ldc + j] = alpha * s + (beta == 0.0f ? 0.0 : beta * c[i * ldc + j]);
        }
}

static void check_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, float beta,
                       size_t pad)
{
    shoal_rng r;
    shoal_rng_seed(&r, m * 1000 + n * 10 + k);
    size_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    size_t arows = ta ? k : m, brows = tb ? n : k;
    float *a = malloc(arows * lda * sizeof *a), *b = malloc(brows * ldb * sizeof *b);
    float *c = malloc(m * ldc * sizeof *c);
    double *want = malloc(m * ldc * sizeof *want);
    fill_uniform(&r, a, arows * lda, -1, 1);
    fill_uniform(&r, b, brows * ldb, -1, 1);
    fill_uniform(&r, c, m * ldc, -1, 1);
    for (size_t i = 0; i < m * ldc; i++)
        want[i] = c[i];
    naive_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
    shoal_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < ldc; j++) {
            double expect = j < n ? want[i * ldc + j] : want[i * ldc + j];
            cr_assert(fabs(c[i * ldc + j] - expect) <= 1e-4 * (1 + sqrt((double)k)),
                      "ta=%d tb=%d m=%zu n=%zu k=%zu at (%zu,%zu): %f vs %f", ta, tb, m, n, k, i, j,
                      c[i * ldc + j], expect);
        }
    free(a);
    free(b);
    free(c);
    free(want);
}

Test(ml_blas, gemm_matches_naive_for_every_transposition)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 7, 5, 3, 1.0f, 0.0f, 0);
            check_gemm(ta, tb, 13, 17, 29, 0.5f, 1.0f, 3);
            check_gemm(ta, tb, 64, 33, 100, -1.0f, 0.25f, 1);
        }
}

Test(ml_blas, gemm_with_beta_zero_ignores_nan_in_c)
{
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {NAN, NAN, NAN, NAN};
    shoal_gemm(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    cr_assert_float_eq(c[0], 1.0f, 1e-6);
    cr_assert_float_eq(c[3], 4.0f, 1e-6);
}

Test(ml_blas, gemm_with_k_zero_scales_c)
{
    float c[2] = {2, 4};
    shoal_gemm(false, false, 1, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.5f, c, 2);
    cr_assert_float_eq(c[0], 1.0f, 1e-6);
    cr_assert_float_eq(c[1], 2.0f, 1e-6);
}

Test(ml_blas, threaded_gemm_gives_the_same_result)
{
    shoal_blas_set_threads(2);
    cr_assert_eq(shoal_blas_get_threads(), 2);
    check_gemm(false, false, 200, 150, 180, 1.0f, 0.0f, 0);
    check_gemm(true, false, 160, 120, 300, 1.0f, 1.0f, 0);
    shoal_blas_set_threads(1);
}

Test(ml_blas, axpy_adds_scaled_vector)
{
    float x[3] = {1, 2, 3}, y[3] = {1, 1, 1};
    shoal_axpy(3, 2.0f, x, y);
    cr_assert_float_eq(y[0], 3.0f, 1e-6);
    cr_assert_float_eq(y[2], 7.0f, 1e-6);
}
