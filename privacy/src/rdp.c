/* The RDP accountant of shoal/privacy.h. */
#include <math.h>
#include <string.h>

#include "shoal/privacy.h"

static const double default_orders[SHOAL_RDP_DEFAULT_ORDERS] = {
    1.25, 1.5, 1.75, 2,  2.25, 2.5, 3,  3.5, 4,  4.5, 5,  6,  7,  8,  9,  10,  11,  12,
    13,   14,  15,   16, 17,   18,  19, 20,  21, 22,  23, 24, 25, 26, 27, 28,  29,  30,
    31,   32,  33,   34, 35,   36,  37, 38,  39, 40,  41, 42, 43, 44, 45, 46,  47,  48,
    49,   50,  51,   52, 53,   54,  55, 56,  57, 58,  59, 60, 61, 62, 63, 128, 256, 512};

const double *shoal_rdp_default_orders(size_t *count)
{
    if (count)
        *count = SHOAL_RDP_DEFAULT_ORDERS;
    return default_orders;
}

const char *shoal_dp_conversion_name(shoal_dp_conversion conversion)
{
    return conversion == SHOAL_DP_CONVERSION_CLASSIC ? "classic" : "improved";
}

/* log(e^a + e^b) */
static double log_add(double a, double b)
{
    double hi = a > b ? a : b, lo = a > b ? b : a;
    if (hi == -INFINITY)
        return -INFINITY;
    return hi + log1p(exp(lo - hi));
}

/* log |C(n, k)| for real n, through the gamma function (lgamma gives
 * log |Gamma|, so a negative generalised coefficient counts by its size,
 * which bounds the series from above). */
static double log_comb(double n, double k)
{
    return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0);
}

/* log(erfc(x)), accurate where erfc underflows. */
static double log_erfc(double x)
{
    double r = erfc(x);
    if (r > 1e-300)
        return log(r);
    /* The asymptotic series at infinity:
     * erfc(x) ~ exp(-x^2 - 1/(2x^2) + 5/(8x^4) - 37/(24x^6) + 353/(64x^8)) / (x sqrt(pi)) */
    double x2 = x * x;
    return -0.5 * log(3.14159265358979323846) - log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
           37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

/* log A_alpha for integer alpha (Mironov et al. 2019, section 3.2). */
static double log_a_int(double q, double sigma, unsigned alpha)
{
    double log_a = -INFINITY, log1mq = log1p(-q), logq = log(q);
    for (unsigned i = 0; i <= alpha; i++) {
        double di = (double)i;
        double s = log_comb((double)alpha, di) + di * logq + ((double)alpha - di) * log1mq +
                   (di * di - di) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    return log_a;
}

/* log A_alpha for fractional alpha (section 3.3): two integrals, over
 * (-inf, z0] and [z0, inf), each a series. */
static double log_a_frac(double q, double sigma, double alpha, int *converged)
{
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    const double z0 = sigma * sigma * log(1.0 / q - 1.0) + 0.5;
    const double log1mq = log1p(-q), logq = log(q), s2 = sqrt(2.0) * sigma;
    double last_s0 = -INFINITY, last_s1 = -INFINITY;
    for (int step = 0; step < 1000; step++) {
        double i = (double)step, j = alpha - i;
        double log_coef = log_comb(alpha, i);
        double log_t0 = log_coef + i * logq + j * log1mq;
        double log_t1 = log_coef + j * logq + i * log1mq;
        double log_e0 = log(0.5) + log_erfc((i - z0) / s2);
        double log_e1 = log(0.5) + log_erfc((z0 - j) / s2);
        double log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        double log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        double total = log_add(log_a0, log_a1);
        if (log_s0 < last_s0 && log_s1 < last_s1 && fmax(log_s0, log_s1) < total - 30.0) {
            *converged = 1;
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    *converged = 0;
    return INFINITY;
}

shoal_err shoal_rdp_sampled_gaussian(double q, double z, double order, double *rdp)
{
    if (!rdp || !(q >= 0.0 && q <= 1.0) || !(z >= 0.0) || !(order > 1.0))
        return SHOAL_EINVAL;
    if (q == 0.0) {
        *rdp = 0.0;
        return SHOAL_OK;
    }
    if (isinf(order) || z == 0.0) {
        *rdp = INFINITY;
        return SHOAL_OK;
    }
    if (q == 1.0) {
        *rdp = order / (2.0 * z * z);
        return SHOAL_OK;
    }
    if (order == floor(order) && order < 4294967295.0) {
        *rdp = log_a_int(q, z, (unsigned)order) / (order - 1.0);
        return SHOAL_OK;
    }
    int converged = 0;
    double log_a = log_a_frac(q, z, order, &converged);
    *rdp = log_a / (order - 1.0);
    return converged ? SHOAL_OK : SHOAL_ENUMERIC;
}

shoal_err shoal_rdp_accountant_init(shoal_rdp_accountant *acc, const double *orders, size_t count)
{
    if (!acc)
        return SHOAL_EINVAL;
    if (!orders) {
        orders = default_orders;
        count = SHOAL_RDP_DEFAULT_ORDERS;
    }
    if (count == 0 || count > SHOAL_RDP_MAX_ORDERS)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < count; i++)
        if (!(orders[i] > 1.0) || (i > 0 && !(orders[i] > orders[i - 1])))
            return SHOAL_EINVAL;
    memset(acc, 0, sizeof *acc);
    acc->count = (uint32_t)count;
    memcpy(acc->orders, orders, count * sizeof *orders);
    return SHOAL_OK;
}

shoal_err shoal_rdp_accountant_compose(shoal_rdp_accountant *acc, double q, double z,
                                       uint64_t steps)
{
    if (!acc || !(q >= 0.0 && q <= 1.0) || !(z >= 0.0))
        return SHOAL_EINVAL;
    double add[SHOAL_RDP_MAX_ORDERS];
    for (uint32_t i = 0; i < acc->count; i++) {
        double r = 0.0;
        shoal_err err = shoal_rdp_sampled_gaussian(q, z, acc->orders[i], &r);
        if (err == SHOAL_ENUMERIC)
            r = INFINITY; /* that order is left out of every epsilon from now on */
        else if (err != SHOAL_OK)
            return err;
        add[i] = r * (double)steps;
        if (r == 0.0)
            add[i] = 0.0; /* not 0 x inf */
    }
    for (uint32_t i = 0; i < acc->count; i++)
        acc->rdp[i] += add[i];
    acc->steps += steps;
    return SHOAL_OK;
}

shoal_err shoal_rdp_epsilon(const double *orders, const double *rdp, size_t count, double delta,
                            shoal_dp_conversion conversion, double *epsilon, double *order)
{
    if (!orders || !rdp || !epsilon || count == 0 || !(delta >= 0.0 && delta < 1.0) ||
        (conversion != SHOAL_DP_CONVERSION_IMPROVED && conversion != SHOAL_DP_CONVERSION_CLASSIC))
        return SHOAL_EINVAL;
    double best = INFINITY, best_order = orders[0];
    if (delta == 0.0) {
        best = 0.0;
        for (size_t i = 0; i < count; i++)
            if (rdp[i] != 0.0)
                best = INFINITY;
        *epsilon = best;
        if (order)
            *order = 0.0;
        return SHOAL_OK;
    }
    for (size_t i = 0; i < count; i++) {
        double a = orders[i], r = rdp[i], e;
        if (!(a > 1.0))
            return SHOAL_EINVAL;
        if (r < 0.0)
            e = 0.0;
        else if (conversion == SHOAL_DP_CONVERSION_CLASSIC)
            e = r - log(delta) / (a - 1.0);
        else if (delta * delta + expm1(-r) > 0.0)
            e = 0.0; /* the KL bound: delta <= sqrt(1 - exp(-rdp)) */
        else if (a > 1.01)
            e = r + log1p(-1.0 / a) - log(delta * a) / (a - 1.0);
        else
            e = INFINITY;
        if (e < best) {
            best = e;
            best_order = a;
        }
    }
    *epsilon = best > 0.0 ? best : 0.0;
    if (order)
        *order = best_order;
    return SHOAL_OK;
}

shoal_err shoal_rdp_accountant_epsilon(const shoal_rdp_accountant *acc, double delta,
                                       shoal_dp_conversion conversion, double *epsilon,
                                       double *order)
{
    if (!acc)
        return SHOAL_EINVAL;
    return shoal_rdp_epsilon(acc->orders, acc->rdp, acc->count, delta, conversion, epsilon, order);
}

shoal_err shoal_rdp_accountant_epsilon_after(const shoal_rdp_accountant *acc, double q, double z,
                                             uint64_t steps, double delta,
                                             shoal_dp_conversion conversion, double *epsilon,
                                             double *order)
{
    if (!acc)
        return SHOAL_EINVAL;
    shoal_rdp_accountant probe = *acc;
    shoal_err err = shoal_rdp_accountant_compose(&probe, q, z, steps);
    return err ? err : shoal_rdp_accountant_epsilon(&probe, delta, conversion, epsilon, order);
}

static shoal_err epsilon_for(double q, uint64_t steps, double delta, double z,
                             shoal_dp_conversion conversion, double *eps)
{
    shoal_rdp_accountant acc;
    shoal_err err = shoal_rdp_accountant_init(&acc, NULL, 0);
    if (err == SHOAL_OK)
        err = shoal_rdp_accountant_compose(&acc, q, z, steps);
    if (err == SHOAL_OK)
        err = shoal_rdp_accountant_epsilon(&acc, delta, conversion, eps, NULL);
    return err;
}

shoal_err shoal_rdp_noise_for_epsilon(double q, uint64_t steps, double delta, double epsilon,
                                      shoal_dp_conversion conversion, double *z)
{
    if (!z || !(q > 0.0 && q <= 1.0) || steps == 0 || !(delta > 0.0 && delta < 1.0) ||
        !(epsilon > 0.0) || isinf(epsilon))
        return SHOAL_EINVAL;
    /* epsilon falls as z grows: bracket, then bisect in log space. */
    double lo = 1e-3, hi = 1.0, eps = 0.0;
    shoal_err err;
    while ((err = epsilon_for(q, steps, delta, hi, conversion, &eps)) == SHOAL_OK &&
           eps > epsilon) {
        lo = hi;
        hi *= 2.0;
        if (hi > 1e6)
            return SHOAL_ELIMIT;
    }
    if (err != SHOAL_OK)
        return err;
    while (hi / lo > 1.0 + 1e-7) {
        double mid = sqrt(lo * hi);
        if ((err = epsilon_for(q, steps, delta, mid, conversion, &eps)) != SHOAL_OK)
            return err;
        if (eps > epsilon)
            lo = mid;
        else
            hi = mid;
    }
    *z = hi;
    return SHOAL_OK;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_double(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(p, v);
}

static double get_double(const uint8_t *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

size_t shoal_rdp_accountant_pack(const shoal_rdp_accountant *acc, uint8_t *out)
{
    memcpy(out, "SRDP", 4);
    put_u32(out + 4, 1);
    put_u32(out + 8, acc->count);
    put_u64(out + 12, acc->steps);
    for (uint32_t i = 0; i < acc->count; i++) {
        put_double(out + 20 + 16 * i, acc->orders[i]);
        put_double(out + 28 + 16 * i, acc->rdp[i]);
    }
    return 20 + 16 * (size_t)acc->count;
}

shoal_err shoal_rdp_accountant_unpack(const uint8_t *in, size_t len, shoal_rdp_accountant *acc)
{
    if (!in || !acc || len < 20 || memcmp(in, "SRDP", 4) != 0 || get_u32(in + 4) != 1)
        return SHOAL_EFORMAT;
    uint32_t count = get_u32(in + 8);
    if (count == 0 || count > SHOAL_RDP_MAX_ORDERS || len != 20 + 16 * (size_t)count)
        return SHOAL_EFORMAT;
    shoal_rdp_accountant a;
    memset(&a, 0, sizeof a);
    a.count = count;
    a.steps = get_u64(in + 12);
    for (uint32_t i = 0; i < count; i++) {
        a.orders[i] = get_double(in + 20 + 16 * i);
        a.rdp[i] = get_double(in + 28 + 16 * i);
        if (!(a.orders[i] > 1.0) || (i > 0 && !(a.orders[i] > a.orders[i - 1])) ||
            !(a.rdp[i] >= 0.0))
            return SHOAL_EFORMAT;
    }
    *acc = a;
    return SHOAL_OK;
}
