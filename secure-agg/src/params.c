/* Choosing SecAgg+'s degree k and threshold t (Bell et al. CCS 2020,
 * section 3 and appendix; see docs/secure-aggregation.md for the bounds and
 * how they compare with fcp/secagg's finder). All probabilities are
 * computed in log space from exact hypergeometric terms. */
#include <math.h>

#include "shoal/alloc.h"
#include "shoal/secagg.h"

/* log C(a, b) */
static double log_choose(double a, double b)
{
    return lgamma(a + 1.0) - lgamma(b + 1.0) - lgamma(a - b + 1.0);
}

/* log P(X = x) for X ~ Hypergeometric(population N, K marked, k draws). */
static double log_hyper(double N, double K, double k, double x)
{
    if (x < 0 || x > k || x > K || k - x > N - K)
        return -INFINITY;
    return log_choose(K, x) + log_choose(N - K, k - x) - log_choose(N, k);
}

/* log(e^a + e^b) */
static double log_add(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    return a > b ? a + log1p(exp(b - a)) : b + log1p(exp(a - b));
}

/* upper[x] = log P(X >= x) and lower[x] = log P(X <= x) for x in 0..k.
 * One log_hyper at the lowest possible x, then the ratio P(x + 1) / P(x) =
 * (K - x)(k - x) / ((x + 1)(N - K - k + x + 1)): O(k), no lgamma per term
 * (upper is used as scratch for the point probabilities first). */
static void log_tails(double N, double K, uint32_t k, double *upper, double *lower)
{
    const double kk = (double)k;
    double lo = kk - (N - K) > 0 ? kk - (N - K) : 0.0, hi = kk < K ? kk : K;
    for (uint32_t x = 0; x <= k; x++)
        upper[x] = -INFINITY;
    if (lo <= hi) {
        double l = log_hyper(N, K, kk, lo);
        for (double x = lo; x <= hi; x += 1.0) {
            upper[(uint32_t)x] = l;
            l += log(K - x) + log(kk - x) - log(x + 1.0) - log(N - K - kk + x + 1.0);
        }
    }
    double acc = -INFINITY;
    for (uint32_t x = 0; x <= k; x++) {
        acc = log_add(acc, upper[x]);
        lower[x] = acc;
    }
    acc = -INFINITY;
    for (uint32_t x = k + 1; x-- > 0;) {
        acc = log_add(acc, upper[x]);
        upper[x] = acc;
    }
}

/* A union bound on the probability that removing `bad` random devices
 * disconnects H(n, k): a cut needs k/2 consecutive removed devices at two
 * places on the ring, n (n - k - 1) / 2 pairs of places, each all-bad with
 * probability C(bad, k) / C(n, k). */
static double log_p_disconnected(double n, double k, double bad)
{
    if (k > bad)
        return -INFINITY;
    return log(n) + log(n - k - 1.0) - log(2.0) + log_choose(bad, k) - log_choose(n, k);
}

shoal_err shoal_secagg_plus_choose(uint32_t n, double dropout_rate, double corrupt_rate,
                                   shoal_secagg_adversary adversary, shoal_secagg_plus_params *out,
                                   shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "SecAgg+ parameters: no output given");
    if (n < 3 || n > SHOAL_SECAGG_MAX_SHAREHOLDERS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "SecAgg+ parameters: the group must have 3 to %u devices, got %u",
                                 SHOAL_SECAGG_MAX_SHAREHOLDERS, n);
    if (!(dropout_rate >= 0.0 && dropout_rate < 1.0) ||
        !(corrupt_rate >= 0.0 && corrupt_rate < 1.0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "SecAgg+ parameters: dropout_rate (%g) and corrupt_rate (%g) "
                                 "must be in [0, 1)",
                                 dropout_rate, corrupt_rate);
    if (adversary != SHOAL_SECAGG_SEMI_HONEST && adversary != SHOAL_SECAGG_MALICIOUS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "SecAgg+ parameters: unknown adversary %d",
                                 (int)adversary);
    double load = corrupt_rate + dropout_rate * (adversary == SHOAL_SECAGG_MALICIOUS ? 2.0 : 1.0);
    if (load > 0.9)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL,
            "SecAgg+ parameters: corrupt_rate + %sdropout_rate is %g, above 0.9: no graph sparser "
            "than the complete one protects that many; lower the rates",
            adversary == SHOAL_SECAGG_MALICIOUS ? "2 x " : "", load);

    /* A tiny epsilon keeps rates like 0.1 x 1000 from rounding to 99. */
    const double eps = 1e-12, N = (double)n;
    const double corrupt = floor(corrupt_rate * N + eps);
    const double dropped = floor(dropout_rate * N + eps);
    /* 2^-40 split over the two bad events, and per device by a union
     * bound over the n devices. */
    const double log_security = -(SHOAL_SECAGG_SECURITY_BITS + 1) * log(2.0);
    const double log_security_per_device = log_security - log(N);
    const double log_failure_per_device = -SHOAL_SECAGG_CORRECTNESS_BITS * log(2.0) - log(N);

    double *upper = shoal_calloc((size_t)n + 1, sizeof *upper);
    double *lower = shoal_calloc((size_t)n + 1, sizeof *lower);
    if (!upper || !lower) {
        shoal_free(upper);
        shoal_free(lower);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "SecAgg+ parameters: out of memory");
    }
    for (uint32_t k = 2; k + 2 <= n; k += 2) {
        const double K = (double)k;
        if (log_p_disconnected(N, K, corrupt + dropped) > log_security)
            continue;
        /* A device's k neighbours are drawn from the n - 1 others. t1: the
         * fewest corrupt neighbours that some device exceeds only with
         * negligible probability. */
        log_tails(N - 1.0, corrupt, k, upper, lower);
        long t1 = 0;
        while (t1 < (long)k && upper[t1 + 1] > log_security_per_device)
            t1++;
        /* t2: the most shares a device can count on from surviving
         * neighbours, failing only with probability 2^-20 over the group. */
        log_tails(N - 1.0, N - 1.0 - dropped, k, upper, lower);
        long t2 = 0;
        while (t2 < (long)k && lower[t2] <= log_failure_per_device)
            t2++;
        long t = t1 + 1;
        if (adversary == SHOAL_SECAGG_MALICIOUS) {
            /* No two disjoint share sets: t > (k + t1) / 2. */
            long tm = ((long)k + t1) / 2 + 1;
            if (tm > t)
                t = tm;
        }
        if (t < 2)
            t = 2;
        if (t > t2)
            continue;
        out->degree = k;
        out->threshold = (uint32_t)t;
        shoal_free(upper);
        shoal_free(lower);
        return SHOAL_OK;
    }
    shoal_free(upper);
    shoal_free(lower);
    return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                             "SecAgg+ parameters: no degree below %u devices meets 2^-%d security "
                             "and 2^-%d failure with dropout_rate %g and corrupt_rate %g; use "
                             "plain SecAgg (the complete graph) or lower the rates",
                             n - 1, SHOAL_SECAGG_SECURITY_BITS, SHOAL_SECAGG_CORRECTNESS_BITS,
                             dropout_rate, corrupt_rate);
}
