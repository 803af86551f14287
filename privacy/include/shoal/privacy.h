/* Shoal: differential-privacy accounting.
 *
 * A Renyi-DP (RDP) accountant for the Poisson-subsampled Gaussian
 * mechanism (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of
 * the Sampled Gaussian Mechanism"): each round, every device takes part
 * independently with probability q, and the server adds Gaussian noise of
 * standard deviation z x S to the sum of updates clipped to L2 norm S. RDP
 * composes by addition over rounds; the total converts to (epsilon, delta)
 * by the improved conversion (Balle et al. 2020, "Hypothesis testing
 * interpretations and Renyi differential privacy", Proposition 12;
 * Canonne, Kamath, Steinke 2020, equation 20) or, on request, the classic
 * one (Mironov 2017, Proposition 3). The arithmetic follows Google's
 * dp_accounting (RdpAccountant) step for step, so the figures agree with it.
 *
 * The guarantee assumes Poisson sampling, which a real server cannot
 * enforce (devices choose when to check in); see docs/privacy.md.
 *
 * Everything here is pure computation: thread-safe, no allocation, no I/O. */
#ifndef SHOAL_PRIVACY_H
#define SHOAL_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How RDP becomes (epsilon, delta). */
typedef enum shoal_dp_conversion {
    /* eps = rdp + log1p(-1/a) - log(delta a) / (a - 1), for orders a > 1.01;
     * 0 when delta^2 + expm1(-rdp) > 0 (the KL bound already gives it). */
    SHOAL_DP_CONVERSION_IMPROVED = 0,
    /* eps = rdp - log(delta) / (a - 1). */
    SHOAL_DP_CONVERSION_CLASSIC = 1
} shoal_dp_conversion;

/* "improved" or "classic". */
SHOAL_API const char *shoal_dp_conversion_name(shoal_dp_conversion conversion);

/* The default grid of orders: 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4,
 * 4.5, then every integer 5..63, then 128, 256, 512 (72 orders; the grid of
 * TensorFlow Privacy's DP-SGD accounting). */
#define SHOAL_RDP_DEFAULT_ORDERS 72
#define SHOAL_RDP_MAX_ORDERS     256
SHOAL_API const double *shoal_rdp_default_orders(size_t *count);

/* The RDP at `order` of one step of the Poisson-subsampled Gaussian
 * mechanism with sampling rate q in [0, 1] and noise multiplier z >= 0: 0
 * for q = 0, infinity for z = 0 or an infinite order, order / (2 z^2) for
 * q = 1. Integer orders sum the binomial expansion exactly; fractional
 * orders use the two-sided series of Mironov et al. 2019, section 3.3.
 * SHOAL_EINVAL for q outside [0, 1], z < 0, an order <= 1, or NaN
 * arguments; SHOAL_ENUMERIC when the fractional series does not converge in
 * 1000 terms (*rdp is then infinity, and the order must be left out). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_sampled_gaussian(double q, double z, double order,
                                                               double *rdp);

/* A running total of RDP over a grid of orders. Plain data: it can be
 * copied, and stored as it is (see shoal_rdp_accountant_pack). */
typedef struct shoal_rdp_accountant {
    uint32_t count;                      /* orders in use */
    double orders[SHOAL_RDP_MAX_ORDERS]; /* each > 1, ascending */
    double rdp[SHOAL_RDP_MAX_ORDERS];    /* total RDP at each order */
    uint64_t steps;                      /* rounds composed so far */
} shoal_rdp_accountant;

/* Starts at zero with `orders` (count of them, each > 1 and ascending; at
 * most SHOAL_RDP_MAX_ORDERS), or the default grid when orders is NULL.
 * SHOAL_EINVAL otherwise. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_accountant_init(shoal_rdp_accountant *acc,
                                                              const double *orders, size_t count);

/* Adds `steps` rounds of the sampled Gaussian (q, z). SHOAL_EINVAL for bad
 * q or z (the total is then unchanged). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_accountant_compose(shoal_rdp_accountant *acc,
                                                                 double q, double z,
                                                                 uint64_t steps);

/* The smallest epsilon over the grid for `delta` in (0, 1), and the order
 * that gives it. delta 0: epsilon 0 if every rdp is 0, else infinity.
 * SHOAL_EINVAL for delta outside [0, 1) or NaN. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_epsilon(const double *orders, const double *rdp,
                                                      size_t count, double delta,
                                                      shoal_dp_conversion conversion,
                                                      double *epsilon, double *order);

SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_accountant_epsilon(const shoal_rdp_accountant *acc,
                                                                 double delta,
                                                                 shoal_dp_conversion conversion,
                                                                 double *epsilon, double *order);

/* Epsilon (and its order) that `acc` would give after `steps` more steps
 * at (q, z), without changing acc: a budget's "one more round?" test.
 * Errors as shoal_rdp_accountant_compose and _epsilon. Thread-safe for an
 * accountant nobody changes meanwhile. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_accountant_epsilon_after(
    const shoal_rdp_accountant *acc, double q, double z, uint64_t steps, double delta,
    shoal_dp_conversion conversion, double *epsilon, double *order);

/* The smallest noise multiplier z (to within a relative 1e-6) for which
 * `steps` rounds at sampling rate q give at most `epsilon` at `delta` on
 * the default grid. SHOAL_EINVAL for bad arguments; SHOAL_ELIMIT when even
 * z = 10^6 does not reach the target. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_noise_for_epsilon(double q, uint64_t steps,
                                                                double delta, double epsilon,
                                                                shoal_dp_conversion conversion,
                                                                double *z);

/* Serialised accountant (for a checkpoint): "SRDP", version 1, count,
 * steps, then count pairs of (order, rdp) as IEEE-754 doubles, all
 * little-endian. SHOAL_RDP_PACKED_MAX bytes at most. */
#define SHOAL_RDP_PACKED_MAX (4 + 4 + 4 + 8 + 16 * SHOAL_RDP_MAX_ORDERS)
SHOAL_API size_t shoal_rdp_accountant_pack(const shoal_rdp_accountant *acc, uint8_t *out);
/* SHOAL_EFORMAT for a buffer that is not a packed accountant (bad magic or
 * version, a length that does not match, orders not ascending above 1, a
 * negative or NaN rdp). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_rdp_accountant_unpack(const uint8_t *in, size_t len,
                                                                shoal_rdp_accountant *acc);

#ifdef __cplusplus
}
#endif

#endif
