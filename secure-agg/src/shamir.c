/* Shamir secret sharing over GF(2^31 - 1) (see shoal/secagg.h; Shamir,
 * "How to share a secret", CACM 1979). A 32-byte secret is 16 pieces of
 * 16 bits, each the constant term of its own polynomial. */
#include <sodium.h>
#include <string.h>

#include "secagg_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg.h"

#define P      SHOAL_SECAGG_PRIME
#define PIECES SHOAL_SECAGG_SHARE_PIECES

static uint32_t add_mod(uint32_t a, uint32_t b)
{
    uint32_t s = a + b; /* < 2^32: both < 2^31 */
    return s >= P ? s - P : s;
}

static uint32_t sub_mod(uint32_t a, uint32_t b)
{
    return a >= b ? a - b : a + P - b;
}

/* a b mod p for p = 2^31 - 1: since 2^31 = 1 (mod p), the product's
 * high bits fold onto its low bits; no division. */
static uint32_t mul_mod(uint32_t a, uint32_t b)
{
    uint64_t x = (uint64_t)a * b; /* < 2^62 */
    x = (x & P) + (x >> 31);      /* < 2^32 */
    x = (x & P) + (x >> 31);      /* <= p */
    return x >= P ? (uint32_t)(x - P) : (uint32_t)x;
}

/* a^(p-2) = a^-1 for a != 0 (Fermat). */
static uint32_t inv_mod(uint32_t a)
{
    uint32_t result = 1, base = a;
    for (uint32_t e = P - 2; e; e >>= 1) {
        if (e & 1)
            result = mul_mod(result, base);
        base = mul_mod(base, base);
    }
    return result;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Whether the count points (one every `stride` bytes from xs) are in
 * 1..SHOAL_SECAGG_MAX_SHAREHOLDERS and distinct: pairwise for a few, by
 * sorting a copy for many (O(count log count); -1 when the copy cannot be
 * allocated). */
static int points_valid(const uint32_t *xs, size_t count, size_t stride)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t x = *(const uint32_t *)((const uint8_t *)xs + i * stride);
        if (x == 0 || x > SHOAL_SECAGG_MAX_SHAREHOLDERS)
            return 0;
    }
    if (count <= 64) {
        for (size_t i = 0; i < count; i++)
            for (size_t j = 0; j < i; j++)
                if (*(const uint32_t *)((const uint8_t *)xs + j * stride) ==
                    *(const uint32_t *)((const uint8_t *)xs + i * stride))
                    return 0;
        return 1;
    }
    uint32_t *sorted = shoal_mallocarray(count, sizeof *sorted);
    if (!sorted)
        return -1;
    for (size_t i = 0; i < count; i++)
        sorted[i] = *(const uint32_t *)((const uint8_t *)xs + i * stride);
    qsort(sorted, count, sizeof *sorted, cmp_u32);
    int ok = 1;
    for (size_t i = 1; i < count && ok; i++)
        ok = sorted[i] != sorted[i - 1];
    shoal_free(sorted);
    return ok;
}

shoal_err shoal_secagg_shamir_split(const uint8_t secret[SHOAL_SECAGG_SECRET_BYTES],
                                    uint32_t threshold, const uint32_t *xs, size_t count,
                                    shoal_secagg_share *out)
{
    if (!secret || !xs || !out || threshold < 2 || threshold > count ||
        count > SHOAL_SECAGG_MAX_SHAREHOLDERS)
        return SHOAL_EINVAL;
    int valid = points_valid(xs, count, sizeof *xs);
    if (valid <= 0)
        return valid < 0 ? SHOAL_ENOMEM : SHOAL_EINVAL;
    /* coef[k * PIECES + j]: coefficient of x^k of piece j's polynomial. */
    size_t ncoef = (size_t)threshold * PIECES;
    uint32_t *coef = sodium_malloc(ncoef * sizeof *coef);
    if (!coef)
        return SHOAL_ENOMEM;
    shoal_secagg_stream rs;
    shoal_secagg_stream_init_random(&rs);
    for (size_t j = 0; j < PIECES; j++)
        coef[j] = (uint32_t)secret[2 * j] | (uint32_t)secret[2 * j + 1] << 8;
    for (size_t i = PIECES; i < ncoef; i++)
        coef[i] = shoal_secagg_stream_uniform(&rs, P);
    shoal_secagg_stream_wipe(&rs);
    for (size_t s = 0; s < count; s++) {
        /* Horner, highest coefficient first, the 16 pieces side by side
         * (one vector loop: they share x and the coefficients' row). */
        uint32_t y[PIECES] = {0}, x = xs[s];
        for (size_t k = threshold; k-- > 0;) {
            const uint32_t *row = coef + k * PIECES;
            for (size_t j = 0; j < PIECES; j++)
                y[j] = add_mod(mul_mod(y[j], x), row[j]);
        }
        out[s].x = x;
        memcpy(out[s].y, y, sizeof y);
        sodium_memzero(y, sizeof y);
    }
    sodium_free(coef); /* sodium_free wipes before it frees */
    return SHOAL_OK;
}

/* Lagrange weights for one set of t nodes, kept between combines: the
 * server rebuilds every device's secret from shares held by the same
 * devices (with the complete graph, all of them), so the O(t^2) part is
 * paid once per holder set and every weight vector after it costs O(t).
 * Barycentric form (Berrut and Trefethen 2004): with b_j = 1 / prod_{m !=
 * j} (x_j - x_m) and L(x) = prod_m (x - x_m), the weight of node j at a
 * point x that is no node is L(x) b_j / (x - x_j). */
struct shoal_secagg_lagrange {
    uint32_t threshold;
    int valid;          /* nodes/bary/at_zero hold a set */
    uint32_t *nodes;    /* the set's points, in the order of the shares */
    uint32_t *bary;     /* b_j */
    uint32_t *at_zero;  /* weights at 0: the constant term */
    uint32_t *at_check; /* weights at check_x */
    uint32_t check_x;   /* 0: at_check holds nothing */
    uint32_t *scratch;  /* prefix products for batch inversion */
    uint32_t arrays[];  /* the storage of the five above */
};

shoal_err shoal_secagg_lagrange_new(uint32_t threshold, shoal_secagg_lagrange **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (threshold < 2 || threshold > SHOAL_SECAGG_MAX_SHAREHOLDERS)
        return SHOAL_EINVAL;
    /* One block: the struct, then its five arrays of t. */
    shoal_secagg_lagrange *c =
        shoal_calloc(1, sizeof *c + (size_t)threshold * 5 * sizeof *c->arrays);
    if (!c)
        return SHOAL_ENOMEM;
    uint32_t *arrays = c->arrays;
    c->threshold = threshold;
    c->nodes = arrays;
    c->bary = arrays + threshold;
    c->at_zero = arrays + 2 * (size_t)threshold;
    c->at_check = arrays + 3 * (size_t)threshold;
    c->scratch = arrays + 4 * (size_t)threshold;
    *out = c;
    return SHOAL_OK;
}

void shoal_secagg_lagrange_free(shoal_secagg_lagrange *c)
{
    shoal_free(c);
}

/* v[j] = 1 / v[j] for every j (all nonzero), with one exponentiation
 * (Montgomery's trick): prefix products, one inverse, then back. */
static void invert_all(uint32_t *v, uint32_t t, uint32_t *prefix)
{
    uint32_t acc = 1;
    for (uint32_t j = 0; j < t; j++) {
        prefix[j] = acc;
        acc = mul_mod(acc, v[j]);
    }
    uint32_t inv = inv_mod(acc);
    for (uint32_t j = t; j-- > 0;) {
        uint32_t vj = v[j];
        v[j] = mul_mod(inv, prefix[j]);
        inv = mul_mod(inv, vj);
    }
}

/* w[j]: the weight of node j at x, which is 0 or a point that is no node. */
static void weights_at(shoal_secagg_lagrange *c, uint32_t x, uint32_t *w)
{
    uint32_t t = c->threshold, l = 1;
    for (uint32_t j = 0; j < t; j++) {
        w[j] = sub_mod(x, c->nodes[j]);
        l = mul_mod(l, w[j]);
    }
    invert_all(w, t, c->scratch);
    for (uint32_t j = 0; j < t; j++)
        w[j] = mul_mod(mul_mod(l, c->bary[j]), w[j]);
}

/* Whether the cache holds the nodes of shares[0..t), in that order. */
static int holds(const shoal_secagg_lagrange *c, const shoal_secagg_share *shares)
{
    if (!c->valid)
        return 0;
    uint32_t j = 0;
    while (j < c->threshold && c->nodes[j] == shares[j].x)
        j++;
    return j == c->threshold;
}

/* Makes the cache hold the nodes of shares[0..t) (checked distinct and in
 * range by the caller). */
static void lagrange_use(shoal_secagg_lagrange *c, const shoal_secagg_share *shares)
{
    uint32_t t = c->threshold;
    if (holds(c, shares))
        return;
    for (uint32_t j = 0; j < t; j++)
        c->nodes[j] = shares[j].x;
    for (uint32_t j = 0; j < t; j++) {
        uint32_t den = 1;
        for (uint32_t m = 0; m < t; m++)
            if (m != j)
                den = mul_mod(den, sub_mod(c->nodes[j], c->nodes[m]));
        c->bary[j] = den;
    }
    invert_all(c->bary, t, c->scratch);
    weights_at(c, 0, c->at_zero);
    c->check_x = 0;
    c->valid = 1;
}

static uint32_t interpolate(const shoal_secagg_share *shares, uint32_t t, const uint32_t *w,
                            size_t piece)
{
    uint32_t acc = 0;
    for (uint32_t j = 0; j < t; j++)
        acc = add_mod(acc, mul_mod(w[j], shares[j].y[piece]));
    return acc;
}

shoal_err shoal_secagg_shamir_combine_with(shoal_secagg_lagrange *cache,
                                           const shoal_secagg_share *shares, size_t count,
                                           uint8_t secret[SHOAL_SECAGG_SECRET_BYTES])
{
    if (!secret)
        return SHOAL_EINVAL;
    memset(secret, 0, SHOAL_SECAGG_SECRET_BYTES);
    if (!cache || !shares)
        return SHOAL_EINVAL;
    uint32_t threshold = cache->threshold;
    if (count < threshold || count > SHOAL_SECAGG_MAX_SHAREHOLDERS)
        return SHOAL_EINVAL;
    /* The points must be distinct and in range. When the first t are the
     * cached set they were checked when it was built: only the shares
     * beyond them are checked, against each other and the set (O(t) per
     * extra share instead of O(count^2) per call). */
    if (holds(cache, shares)) {
        for (size_t e = threshold; e < count; e++) {
            uint32_t x = shares[e].x;
            if (x == 0 || x > SHOAL_SECAGG_MAX_SHAREHOLDERS)
                return SHOAL_EINVAL;
            for (size_t j = 0; j < e; j++)
                if (shares[j].x == x)
                    return SHOAL_EINVAL;
        }
    } else {
        int valid = points_valid(&shares[0].x, count, sizeof *shares);
        if (valid <= 0)
            return valid < 0 ? SHOAL_ENOMEM : SHOAL_EINVAL;
    }
    for (size_t s = 0; s < count; s++)
        for (size_t j = 0; j < PIECES; j++)
            if (shares[s].y[j] >= P)
                return SHOAL_EINVAL;
    lagrange_use(cache, shares);
    shoal_err err = SHOAL_OK;
    for (size_t j = 0; j < PIECES && err == SHOAL_OK; j++) {
        uint32_t piece = interpolate(shares, threshold, cache->at_zero, j);
        if (piece > 0xffffu)
            err = SHOAL_ECRYPTO;
        secret[2 * j] = (uint8_t)piece;
        secret[2 * j + 1] = (uint8_t)(piece >> 8);
    }
    /* Every share beyond the first t must lie on the same polynomials. */
    for (size_t s = threshold; s < count && err == SHOAL_OK; s++) {
        if (cache->check_x != shares[s].x) {
            weights_at(cache, shares[s].x, cache->at_check);
            cache->check_x = shares[s].x;
        }
        for (size_t j = 0; j < PIECES; j++)
            if (interpolate(shares, threshold, cache->at_check, j) != shares[s].y[j]) {
                err = SHOAL_ECRYPTO;
                break;
            }
    }
    if (err != SHOAL_OK)
        sodium_memzero(secret, SHOAL_SECAGG_SECRET_BYTES);
    return err;
}

shoal_err shoal_secagg_shamir_combine(const shoal_secagg_share *shares, size_t count,
                                      uint32_t threshold, uint8_t secret[SHOAL_SECAGG_SECRET_BYTES])
{
    if (!secret)
        return SHOAL_EINVAL;
    memset(secret, 0, SHOAL_SECAGG_SECRET_BYTES);
    shoal_secagg_lagrange *cache;
    shoal_err err = shoal_secagg_lagrange_new(threshold, &cache);
    if (err != SHOAL_OK)
        return err;
    err = shoal_secagg_shamir_combine_with(cache, shares, count, secret);
    shoal_secagg_lagrange_free(cache);
    return err;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void shoal_secagg_share_pack(const shoal_secagg_share *share, uint8_t out[SHOAL_SECAGG_SHARE_BYTES])
{
    put32(out, share->x);
    for (size_t j = 0; j < PIECES; j++)
        put32(out + 4 + 4 * j, share->y[j]);
}

shoal_err shoal_secagg_share_unpack(const uint8_t in[SHOAL_SECAGG_SHARE_BYTES],
                                    shoal_secagg_share *share)
{
    share->x = get32(in);
    int ok = share->x != 0 && share->x <= SHOAL_SECAGG_MAX_SHAREHOLDERS;
    for (size_t j = 0; j < PIECES; j++) {
        share->y[j] = get32(in + 4 + 4 * j);
        ok &= share->y[j] < P;
    }
    if (!ok) {
        sodium_memzero(share, sizeof *share);
        return SHOAL_EFORMAT;
    }
    return SHOAL_OK;
}
