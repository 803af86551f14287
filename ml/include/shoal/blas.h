/* Shoal: the dense linear algebra the learning core is written in.
 *
 * Row-major single-precision GEMM, C = alpha * op(A) * op(B) + beta * C,
 * with op(X) = X or X^T. Built on OpenBLAS (cblas_sgemm) when the `blas`
 * feature is on, otherwise on portable C kernels; both give the same results
 * up to float rounding. Thread-safe: no shared state besides OpenBLAS's own
 * thread pool. */
#ifndef SHOAL_BLAS_H
#define SHOAL_BLAS_H

#include <stdbool.h>
#include <stddef.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc are row strides of
 * the stored (untransposed) matrices. beta == 0 overwrites C (NaN in C is not
 * propagated). */
SHOAL_API void shoal_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                          const float *a, size_t lda, const float *b, size_t ldb, float beta,
                          float *c, size_t ldc);

/* y += alpha * x over n floats. */
SHOAL_API void shoal_axpy(size_t n, float alpha, const float *x, float *y);

/* The L2 norm of x[0..n), accumulated in double (x may be NULL when n is
 * 0). Reads x only; thread-safe. */
SHOAL_API double shoal_nrm2(size_t n, const float *x);

/* Scales x[0..n) so that its L2 norm (shoal_nrm2) is at most `bound`,
 * leaving it unchanged when it already is, and reports the norm it had in
 * *norm (may be NULL). The result's norm is never above `bound`: float
 * rounding after the scale is shrunk away. SHOAL_EINVAL for bound not
 * positive and finite or x NULL with n > 0; SHOAL_ENUMERIC for a
 * non-finite norm (nothing changed). Thread-safe on distinct x. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_clip_l2(size_t n, float *x, double bound, double *norm);

/* Threads the GEMM backend may use (1 = single-threaded). With OpenBLAS this
 * sets its pool size; the portable kernels run on the calling thread and
 * split large products across up to `threads` worker threads. Not
 * thread-safe: call at start-up. */
SHOAL_API void shoal_blas_set_threads(int threads);
SHOAL_API int shoal_blas_get_threads(void);

/* "openblas 0.3.21 (...)" or "portable". Static string. */
SHOAL_API const char *shoal_blas_backend(void);

#ifdef __cplusplus
}
#endif

#endif
