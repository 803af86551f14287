#include "shoal/blas.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#ifdef SHOAL_HAVE_BLAS
#include <cblas.h>
#endif

static int blas_threads = 1;

#ifdef SHOAL_HAVE_BLAS

void shoal_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda, b,
                (int)ldb, beta, c, (int)ldc);
}

void shoal_blas_set_threads(int threads)
{
    blas_threads = threads < 1 ? 1 : threads;
    openblas_set_num_threads(blas_threads);
}

const char *shoal_blas_backend(void)
{
    return "openblas";
}

#else

struct gemm_job {
    bool trans_a, trans_b;
    size_t m0, m1, n, k;
    float alpha;
    const float *a, *b;
    size_t lda, ldb;
    float *c;
    size_t ldc;
};

static float dot(const float *x, const float *y, size_t k)
{
    /* Eight independent partial sums let the compiler vectorise without
     * reassociating a single accumulator. */
    float acc[8] = {0};
    size_t p = 0;
    for (; p + 8 <= k; p += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += x[p + u] * y[p + u];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; p < k; p++)
        s += x[p] * y[p];
    return s;
}

static void gemm_rows(const struct gemm_job *j)
{
    const size_t n = j->n, k = j->k;
    for (size_t i = j->m0; i < j->m1; i++) {
        float *restrict ci = j->c + i * j->ldc;
        if (!j->trans_b) {
            for (size_t p = 0; p < k; p++) {
                float aip = j->alpha * (j->trans_a ? j->a[p * j->lda + i] : j->a[i * j->lda + p]);
                if (aip == 0.0f)
                    continue;
                const float *restrict bp = j->b + p * j->ldb;
                for (size_t col = 0; col < n; col++)
                    ci[col] += aip * bp[col];
            }
        } else if (!j->trans_a) {
            const float *ai = j->a + i * j->lda;
            for (size_t col = 0; col < n; col++)
                ci[col] += j->alpha * dot(ai, j->b + col * j->ldb, k);
        } else {
            for (size_t col = 0; col < n; col++) {
                float s = 0.0f;
                for (size_t p = 0; p < k; p++)
                    s += j->a[p * j->lda + i] * j->b[col * j->ldb + p];
                ci[col] += j->alpha * s;
            }
        }
    }
}

static void *gemm_thread(void *arg)
{
    gemm_rows(arg);
    return NULL;
}

enum { MAX_GEMM_THREADS = 64 };

void shoal_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                size_t ldc)
{
    for (size_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, n * sizeof *ci);
        else if (beta != 1.0f)
            for (size_t col = 0; col < n; col++)
                ci[col] *= beta;
    }
    if (k == 0 || m == 0 || n == 0)
        return;
    struct gemm_job job = {trans_a, trans_b, 0, m, n, k, alpha, a, b, lda, ldb, c, ldc};
    size_t threads = (size_t)blas_threads;
    /* A thread start costs tens of microseconds: only split products big
     * enough to repay it, and never into slices of fewer than 4 rows. */
    if (threads > m / 4)
        threads = m / 4;
    if (threads <= 1 || (double)m * (double)n * (double)k < 4e6) {
        gemm_rows(&job);
        return;
    }
    if (threads > MAX_GEMM_THREADS)
        threads = MAX_GEMM_THREADS;
    struct gemm_job jobs[MAX_GEMM_THREADS];
    pthread_t tids[MAX_GEMM_THREADS];
    bool started[MAX_GEMM_THREADS] = {false};
    for (size_t t = 0; t < threads; t++) {
        jobs[t] = job;
        jobs[t].m0 = m * t / threads;
        jobs[t].m1 = m * (t + 1) / threads;
        if (t > 0)
            started[t] = pthread_create(&tids[t], NULL, gemm_thread, &jobs[t]) == 0;
    }
    gemm_rows(&jobs[0]);
    for (size_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            gemm_rows(&jobs[t]); /* could not start a thread: do its share here */
    }
}

void shoal_blas_set_threads(int threads)
{
    blas_threads = threads < 1 ? 1 : threads;
}

const char *shoal_blas_backend(void)
{
    return "portable";
}

#endif

int shoal_blas_get_threads(void)
{
    return blas_threads;
}

void shoal_axpy(size_t n, float alpha, const float *restrict x, float *restrict y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

double shoal_nrm2(size_t n, const float *x)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

shoal_err shoal_clip_l2(size_t n, float *x, double bound, double *norm)
{
    if ((!x && n) || !(bound > 0.0) || isinf(bound))
        return SHOAL_EINVAL;
    double before = shoal_nrm2(n, x);
    if (!isfinite(before))
        return SHOAL_ENUMERIC;
    if (norm)
        *norm = before;
    /* Each scaled float rounds, which can leave the norm a few ulps above
     * the bound: shrink again by the excess and a tiny margin. */
    for (double now = before, margin = 1.0; now > bound; margin *= 1.0 - 0x1p-20) {
        const double scale = bound / now * margin;
        for (size_t i = 0; i < n; i++)
            x[i] = (float)(x[i] * scale);
        now = shoal_nrm2(n, x);
    }
    return SHOAL_OK;
}
