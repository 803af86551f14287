/* Tests for secure-agg/: known-answer vectors (tests/vectors/secagg.exp,
 * made by gen_secagg.py from independent implementations), Shamir sharing,
 * masks that cancel exactly in the ring, share transport that refuses
 * anything altered or redirected, the fixed-point encoding's no-wrap bound,
 * the Harary graph, and the SecAgg+ parameter choice. */
#include <criterion/criterion.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/secagg.h"

static void setup(void)
{
    cr_assert_eq(shoal_secagg_init(), SHOAL_OK);
}

/* ---- known-answer vectors ------------------------------------------------------------- */

/* Reads vector `name` from secagg.exp into a malloc'd buffer. */
static uint8_t *vector(const char *name, size_t *len)
{
    const char *dir = getenv("SHOAL_VECTORS_DIR");
    cr_assert_not_null(dir, "SHOAL_VECTORS_DIR is not set (meson test sets it)");
    char path[512];
    snprintf(path, sizeof path, "%s/secagg.exp", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    static char line[80000];
    uint8_t *out = NULL;
    while (fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        if (!sp || (size_t)(sp - line) != strlen(name) || strncmp(line, name, strlen(name)) != 0)
            continue;
        char *hex = sp + 1;
        size_t hexlen = strcspn(hex, "\r\n");
        out = malloc(hexlen / 2 + 1);
        cr_assert_eq(sodium_hex2bin(out, hexlen / 2 + 1, hex, hexlen, NULL, len, NULL), 0);
        break;
    }
    fclose(f);
    cr_assert_not_null(out, "no vector %s in %s", name, path);
    return out;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const uint8_t kat_seed[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                     11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                     22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static void check_prg32(const char *name, unsigned bits, size_t n)
{
    size_t len = 0;
    uint8_t *want = vector(name, &len);
    cr_assert_eq(len, 4 * n);
    uint32_t *acc = calloc(n, sizeof *acc);
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, bits, 1, acc, n), SHOAL_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(acc[i], le32(want + 4 * i), "%s[%zu]: %u, want %u", name, i, acc[i],
                     le32(want + 4 * i));
    /* Subtracting the same mask gives zero back. */
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, bits, -1, acc, n), SHOAL_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(acc[i], 0u);
    free(acc);
    free(want);
}

Test(secagg_prg, matches_the_chacha20_keystream_read_as_ring_elements, .init = setup)
{
    check_prg32("prg32_add_n37", 32, 37);
    check_prg32("prg32_add_n1100", 32, 1100);
    check_prg32("prg13_add_n37", 13, 37);
    check_prg32("prg13_add_n1100", 13, 1100);

    size_t len = 0;
    uint8_t *want = vector("prg64_add_n600", &len);
    cr_assert_eq(len, 8 * 600);
    uint64_t acc[600] = {0};
    cr_assert_eq(shoal_secagg_prg_apply_u64(kat_seed, 64, 1, acc, 600), SHOAL_OK);
    for (size_t i = 0; i < 600; i++)
        cr_assert_eq(acc[i], (uint64_t)le32(want + 8 * i) | (uint64_t)le32(want + 8 * i + 4) << 32,
                     "prg64[%zu]", i);
    free(want);
}

Test(secagg_prg, refuses_bad_widths_and_signs, .init = setup)
{
    uint32_t a[4] = {0};
    uint64_t b[4] = {0};
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, 0, 1, a, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, 33, 1, a, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, 32, 2, a, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u32(kat_seed, 32, 1, NULL, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u64(kat_seed, 32, 1, b, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u64(kat_seed, 65, 1, b, 4), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_prg_apply_u64(NULL, 64, 1, b, 4), SHOAL_EINVAL);
    for (int i = 0; i < 4; i++)
        cr_assert(a[i] == 0 && b[i] == 0, "a refused call wrote");
}

Test(secagg_keys, agree_matches_x25519_blake2b_and_the_kdf, .init = setup)
{
    size_t l;
    uint8_t *sk_a = vector("agree_sk_a", &l), *sk_b = vector("agree_sk_b", &l);
    uint8_t *pk_a = vector("agree_pk_a", &l), *pk_b = vector("agree_pk_b", &l);
    uint8_t *sid = vector("agree_session", &l);
    uint8_t *k1 = vector("agree_key_1", &l), *k2 = vector("agree_key_2", &l);
    uint8_t pk[32];
    cr_assert_eq(crypto_scalarmult_base(pk, sk_a), 0);
    cr_assert_eq(memcmp(pk, pk_a, 32), 0);

    uint8_t ab[32], ba[32];
    cr_assert_eq(shoal_secagg_agree(sk_a, pk_a, pk_b, sid, SHOAL_SECAGG_PURPOSE_MASK, ab),
                 SHOAL_OK);
    cr_assert_eq(shoal_secagg_agree(sk_b, pk_b, pk_a, sid, SHOAL_SECAGG_PURPOSE_MASK, ba),
                 SHOAL_OK);
    cr_assert_eq(memcmp(ab, k1, 32), 0, "mask key differs from the vector");
    cr_assert_eq(memcmp(ba, k1, 32), 0, "the two sides disagree");
    cr_assert_eq(shoal_secagg_agree(sk_a, pk_a, pk_b, sid, SHOAL_SECAGG_PURPOSE_TRANSPORT, ab),
                 SHOAL_OK);
    cr_assert_eq(memcmp(ab, k2, 32), 0, "transport key differs from the vector");

    /* Another session gives another key. */
    sid[0] ^= 1;
    cr_assert_eq(shoal_secagg_agree(sk_a, pk_a, pk_b, sid, SHOAL_SECAGG_PURPOSE_MASK, ab),
                 SHOAL_OK);
    cr_assert_neq(memcmp(ab, k1, 32), 0);
    free(sk_a), free(sk_b), free(pk_a), free(pk_b), free(sid), free(k1), free(k2);
}

Test(secagg_keys, refuses_low_order_points_and_its_own_key, .init = setup)
{
    uint8_t pk[32], sk[32], sid[32] = {1}, key[32];
    cr_assert_eq(shoal_secagg_keypair(pk, sk), SHOAL_OK);
    uint8_t zero[32] = {0};
    memset(key, 0xaa, sizeof key);
    cr_assert_eq(shoal_secagg_agree(sk, pk, zero, sid, SHOAL_SECAGG_PURPOSE_MASK, key),
                 SHOAL_ECRYPTO);
    cr_assert_eq(memcmp(key, zero, 32), 0, "a refused key was left in the output");
    /* The point of order 1 (u = 1) as well. */
    uint8_t one[32] = {1};
    cr_assert_eq(shoal_secagg_agree(sk, pk, one, sid, SHOAL_SECAGG_PURPOSE_MASK, key),
                 SHOAL_ECRYPTO);
    cr_assert_eq(shoal_secagg_agree(sk, pk, pk, sid, SHOAL_SECAGG_PURPOSE_MASK, key),
                 SHOAL_ECRYPTO);
    cr_assert_eq(shoal_secagg_agree(sk, pk, pk, sid, (shoal_secagg_purpose)3, key), SHOAL_EINVAL);
}

/* ---- Shamir ------------------------------------------------------------------------------ */

static shoal_secagg_share kat_share(int x)
{
    char name[32];
    snprintf(name, sizeof name, "shamir_share_x%d", x);
    size_t l;
    uint8_t *b = vector(name, &l);
    cr_assert_eq(l, SHOAL_SECAGG_SHARE_BYTES);
    shoal_secagg_share s;
    cr_assert_eq(shoal_secagg_share_unpack(b, &s), SHOAL_OK);
    uint8_t back[SHOAL_SECAGG_SHARE_BYTES];
    shoal_secagg_share_pack(&s, back);
    cr_assert_eq(memcmp(back, b, l), 0, "pack(unpack(x)) != x");
    free(b);
    return s;
}

Test(secagg_shamir, recovers_the_vector_secret_from_any_three_shares, .init = setup)
{
    size_t l;
    uint8_t *want = vector("shamir_secret", &l);
    shoal_secagg_share all[4] = {kat_share(1), kat_share(2), kat_share(5), kat_share(9)};
    uint8_t got[32];
    /* Every 3-subset, and all four (the fourth is checked against the rest). */
    for (int skip = -1; skip < 4; skip++) {
        shoal_secagg_share sub[4];
        size_t n = 0;
        for (int i = 0; i < 4; i++)
            if (i != skip)
                sub[n++] = all[i];
        cr_assert_eq(shoal_secagg_shamir_combine(sub, n, 3, got), SHOAL_OK, "skip %d", skip);
        cr_assert_eq(memcmp(got, want, 32), 0, "skip %d", skip);
    }
    /* A tampered extra share is detected, and nothing is left in the output. */
    all[3].y[7] = (all[3].y[7] + 1) % SHOAL_SECAGG_PRIME;
    cr_assert_eq(shoal_secagg_shamir_combine(all, 4, 3, got), SHOAL_ECRYPTO);
    uint8_t zero[32] = {0};
    cr_assert_eq(memcmp(got, zero, 32), 0);
    /* Two shares are not enough. */
    cr_assert_eq(shoal_secagg_shamir_combine(all, 2, 3, got), SHOAL_EINVAL);
    free(want);
}

Test(secagg_shamir, split_then_combine_any_threshold_subset, .init = setup)
{
    const uint32_t thresholds[] = {2, 3, 10, 67};
    for (size_t ti = 0; ti < sizeof thresholds / sizeof *thresholds; ti++) {
        uint32_t t = thresholds[ti], n = t + t / 2 + 1;
        uint8_t secret[32], got[32];
        randombytes_buf(secret, sizeof secret);
        uint32_t *xs = malloc(n * sizeof *xs);
        for (uint32_t i = 0; i < n; i++)
            xs[i] = 1000 + 7 * i; /* points need not be 1..n */
        shoal_secagg_share *sh = malloc(n * sizeof *sh);
        cr_assert_eq(shoal_secagg_shamir_split(secret, t, xs, n, sh), SHOAL_OK);
        /* The last t shares, then all n. */
        cr_assert_eq(shoal_secagg_shamir_combine(sh + (n - t), t, t, got), SHOAL_OK);
        cr_assert_eq(memcmp(got, secret, 32), 0, "t=%u", t);
        cr_assert_eq(shoal_secagg_shamir_combine(sh, n, t, got), SHOAL_OK);
        cr_assert_eq(memcmp(got, secret, 32), 0, "t=%u, all shares", t);
        /* t - 1 shares with a wrong threshold claim give a different value
         * (or are refused): they do not determine the secret. */
        if (t > 2 && shoal_secagg_shamir_combine(sh, t - 1, t - 1, got) == SHOAL_OK)
            cr_assert_neq(memcmp(got, secret, 32), 0, "t-1 shares gave the secret");
        free(xs);
        free(sh);
    }
}

/* One weight cache across many secrets, as the server uses it: secrets
 * shared at the same points (cache hits), then at other points and in
 * another order (misses), each rebuilt exactly; a tampered extra share is
 * caught on a hit as on a miss; a cache of another threshold is refused. */
Test(secagg_shamir, cached_weights_rebuild_every_secret_and_catch_tampering, .init = setup)
{
    enum { T = 40, N = 61, SECRETS = 12 };
    uint32_t xs[N];
    for (uint32_t i = 0; i < N; i++)
        xs[i] = 1 + 3 * i;
    shoal_secagg_lagrange *cache;
    cr_assert_eq(shoal_secagg_lagrange_new(T, &cache), SHOAL_OK);
    for (int k = 0; k < SECRETS; k++) {
        uint8_t secret[32], got[32], plain[32];
        randombytes_buf(secret, sizeof secret);
        shoal_secagg_share sh[N];
        cr_assert_eq(shoal_secagg_shamir_split(secret, T, xs, N, sh), SHOAL_OK);
        /* Secrets 4..7 use the last T+1 holders, 8.. reverse them. */
        shoal_secagg_share *use = k < 4 ? sh : sh + (N - T - 1);
        shoal_secagg_share rev[T + 1];
        if (k >= 8) {
            for (int i = 0; i <= T; i++)
                rev[i] = use[T - i];
            use = rev;
        }
        cr_assert_eq(shoal_secagg_shamir_combine_with(cache, use, T + 1, got), SHOAL_OK, "k=%d", k);
        cr_assert_eq(memcmp(got, secret, 32), 0, "secret %d", k);
        cr_assert_eq(shoal_secagg_shamir_combine(use, T + 1, T, plain), SHOAL_OK);
        cr_assert_eq(memcmp(plain, got, 32), 0);
        use[T].y[k % SHOAL_SECAGG_SHARE_PIECES] ^= 1;
        cr_assert_eq(shoal_secagg_shamir_combine_with(cache, use, T + 1, got), SHOAL_ECRYPTO,
                     "tampered extra share accepted for secret %d", k);
        for (int i = 0; i < 32; i++)
            cr_assert_eq(got[i], 0, "a refused combine left the secret");
    }
    /* With the cached set in front, the shares beyond it are still checked:
     * a repeated point, a point of 0 and one past the limit are refused. */
    {
        uint8_t secret[32], got[32];
        randombytes_buf(secret, sizeof secret);
        shoal_secagg_share sh[N];
        cr_assert_eq(shoal_secagg_shamir_split(secret, T, xs, N, sh), SHOAL_OK);
        cr_assert_eq(shoal_secagg_shamir_combine_with(cache, sh, T + 1, got), SHOAL_OK);
        const uint32_t bad_x[] = {sh[0].x, sh[T - 1].x, 0, SHOAL_SECAGG_MAX_SHAREHOLDERS + 1};
        for (size_t b = 0; b < sizeof bad_x / sizeof *bad_x; b++) {
            shoal_secagg_share extra[T + 2];
            memcpy(extra, sh, sizeof extra);
            extra[T + 1].x = bad_x[b];
            cr_assert_eq(shoal_secagg_shamir_combine_with(cache, extra, T + 2, got), SHOAL_EINVAL,
                         "extra point %u accepted", bad_x[b]);
            extra[T].x = bad_x[b];
            cr_assert_eq(shoal_secagg_shamir_combine_with(cache, extra, T + 1, got), SHOAL_EINVAL,
                         "first extra point %u accepted", bad_x[b]);
        }
        cr_assert_eq(shoal_secagg_shamir_combine_with(cache, sh, T + 2, got), SHOAL_OK);
        cr_assert_eq(memcmp(got, secret, 32), 0);
    }
    uint8_t got[32];
    shoal_secagg_share few[T - 1];
    memset(few, 0, sizeof few);
    cr_assert_eq(shoal_secagg_shamir_combine_with(cache, few, T - 1, got), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_shamir_combine_with(NULL, few, T - 1, got), SHOAL_EINVAL);
    shoal_secagg_lagrange_free(cache);
    shoal_secagg_lagrange *bad = (shoal_secagg_lagrange *)1;
    cr_assert_eq(shoal_secagg_lagrange_new(1, &bad), SHOAL_EINVAL);
    cr_assert_null(bad);
    shoal_secagg_lagrange_free(NULL);
}

Test(secagg_shamir, refuses_bad_thresholds_and_points, .init = setup)
{
    uint8_t secret[32] = {1}, got[32];
    uint32_t xs[4] = {1, 2, 3, 4};
    shoal_secagg_share sh[4];
    memset(sh, 0x5a, sizeof sh);
    shoal_secagg_share before[4];
    memcpy(before, sh, sizeof sh);
    cr_assert_eq(shoal_secagg_shamir_split(secret, 1, xs, 4, sh), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_shamir_split(secret, 5, xs, 4, sh), SHOAL_EINVAL);
    uint32_t dup[4] = {1, 2, 2, 4}, zero[4] = {0, 1, 2, 3};
    cr_assert_eq(shoal_secagg_shamir_split(secret, 2, dup, 4, sh), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_shamir_split(secret, 2, zero, 4, sh), SHOAL_EINVAL);
    cr_assert_eq(memcmp(before, sh, sizeof sh), 0, "a refused split wrote shares");

    cr_assert_eq(shoal_secagg_shamir_split(secret, 2, xs, 4, sh), SHOAL_OK);
    sh[1].x = sh[0].x;
    cr_assert_eq(shoal_secagg_shamir_combine(sh, 2, 2, got), SHOAL_EINVAL);
    sh[1].x = 2;
    sh[1].y[0] = SHOAL_SECAGG_PRIME;
    cr_assert_eq(shoal_secagg_shamir_combine(sh, 2, 2, got), SHOAL_EINVAL);

    /* Many points are checked by sorting: a repeat far apart is found. */
    enum { MANY = 100 };
    uint32_t many[MANY];
    for (uint32_t i = 0; i < MANY; i++)
        many[i] = 7 * i + 1;
    shoal_secagg_share msh[MANY];
    cr_assert_eq(shoal_secagg_shamir_split(secret, 60, many, MANY, msh), SHOAL_OK);
    cr_assert_eq(shoal_secagg_shamir_combine(msh, MANY, 60, got), SHOAL_OK);
    cr_assert_eq(memcmp(got, secret, 32), 0);
    msh[97].x = msh[2].x;
    cr_assert_eq(shoal_secagg_shamir_combine(msh, MANY, 60, got), SHOAL_EINVAL);
    many[97] = many[2];
    cr_assert_eq(shoal_secagg_shamir_split(secret, 60, many, MANY, msh), SHOAL_EINVAL);
    many[97] = SHOAL_SECAGG_MAX_SHAREHOLDERS + 1;
    cr_assert_eq(shoal_secagg_shamir_split(secret, 60, many, MANY, msh), SHOAL_EINVAL);

    uint8_t packed[SHOAL_SECAGG_SHARE_BYTES] = {0};
    shoal_secagg_share s;
    cr_assert_eq(shoal_secagg_share_unpack(packed, &s), SHOAL_EFORMAT, "x = 0 accepted");
    packed[0] = 1;
    memset(packed + 4, 0xff, 4); /* a piece >= p */
    cr_assert_eq(shoal_secagg_share_unpack(packed, &s), SHOAL_EFORMAT);
}

/* With t = 2 a share's piece is s + a x for a uniform a: uniform in GF(p)
 * whatever the secret. A chi-square test over 16 bins of the top bits of
 * one piece of one share, for a fixed all-zero secret. */
Test(secagg_shamir, a_single_share_is_uniform_whatever_the_secret, .init = setup)
{
    enum { SAMPLES = 8000, BINS = 16 };
    uint8_t secret[32] = {0};
    uint32_t xs[2] = {3, 4};
    int count[BINS] = {0};
    for (int i = 0; i < SAMPLES; i++) {
        shoal_secagg_share sh[2];
        cr_assert_eq(shoal_secagg_shamir_split(secret, 2, xs, 2, sh), SHOAL_OK);
        count[(uint64_t)sh[0].y[5] * BINS / SHOAL_SECAGG_PRIME]++;
    }
    double chi2 = 0, expect = (double)SAMPLES / BINS;
    for (int b = 0; b < BINS; b++)
        chi2 += (count[b] - expect) * (count[b] - expect) / expect;
    /* 15 degrees of freedom: P(chi2 > 44.3) < 1e-4. */
    cr_assert_lt(chi2, 44.3, "chi-square %.1f: shares are not uniform", chi2);
}

/* ---- share transport ---------------------------------------------------------------------- */

Test(secagg_transport, opens_only_for_the_same_key_session_and_pair, .init = setup)
{
    uint8_t key[32], sid[32], msg[100], sealed[100 + SHOAL_SECAGG_SEAL_OVERHEAD], back[100];
    randombytes_buf(key, sizeof key);
    randombytes_buf(sid, sizeof sid);
    randombytes_buf(msg, sizeof msg);
    cr_assert_eq(shoal_secagg_seal(key, sid, 3, 8, msg, sizeof msg, sealed), SHOAL_OK);
    cr_assert_eq(shoal_secagg_open(key, sid, 3, 8, sealed, sizeof sealed, back), SHOAL_OK);
    cr_assert_eq(memcmp(back, msg, sizeof msg), 0);

    cr_assert_eq(shoal_secagg_open(key, sid, 8, 3, sealed, sizeof sealed, back), SHOAL_ECRYPTO,
                 "opened with sender and receiver swapped");
    cr_assert_eq(shoal_secagg_open(key, sid, 3, 9, sealed, sizeof sealed, back), SHOAL_ECRYPTO,
                 "opened by another receiver");
    sid[31] ^= 1;
    cr_assert_eq(shoal_secagg_open(key, sid, 3, 8, sealed, sizeof sealed, back), SHOAL_ECRYPTO,
                 "replayed into another session");
    sid[31] ^= 1;
    sealed[40] ^= 0x10;
    cr_assert_eq(shoal_secagg_open(key, sid, 3, 8, sealed, sizeof sealed, back), SHOAL_ECRYPTO,
                 "an altered ciphertext opened");
    sealed[40] ^= 0x10;
    cr_assert_eq(shoal_secagg_open(key, sid, 3, 8, sealed, SHOAL_SECAGG_SEAL_OVERHEAD - 1, back),
                 SHOAL_EFORMAT);
    cr_assert_eq(shoal_secagg_seal(key, sid, 3, 3, msg, sizeof msg, sealed), SHOAL_EINVAL);
    /* Two seals of one message differ (random nonces). */
    uint8_t sealed2[sizeof sealed];
    cr_assert_eq(shoal_secagg_seal(key, sid, 3, 8, msg, sizeof msg, sealed2), SHOAL_OK);
    cr_assert_neq(memcmp(sealed, sealed2, sizeof sealed), 0);
}

/* ---- masks cancel -------------------------------------------------------------------------- */

/* n devices mask their inputs with a self mask and pairwise masks (device
 * u adds PRG(s_uv) for v > u and subtracts it for v < u); the server
 * removes the self masks. What is left is exactly the sum of the inputs
 * in the ring, and each masked input alone looks uniform. */
Test(secagg_masks, pairwise_and_self_masks_cancel_exactly_in_the_ring, .init = setup)
{
    enum { N = 7, LEN = 3000, BITS = 24 };
    uint8_t pk[N][32], sk[N][32], self_seed[N][32], sid[32];
    randombytes_buf(sid, sizeof sid);
    for (int u = 0; u < N; u++) {
        cr_assert_eq(shoal_secagg_keypair(pk[u], sk[u]), SHOAL_OK);
        randombytes_buf(self_seed[u], 32);
    }
    static uint32_t x[N][LEN], y[N][LEN], total[LEN], want[LEN];
    memset(total, 0, sizeof total);
    memset(want, 0, sizeof want);
    for (int u = 0; u < N; u++) {
        for (int i = 0; i < LEN; i++) {
            x[u][i] = randombytes_uniform(1u << BITS);
            want[i] = (want[i] + x[u][i]) & ((1u << BITS) - 1);
            y[u][i] = x[u][i];
        }
        cr_assert_eq(shoal_secagg_prg_apply_u32(self_seed[u], BITS, 1, y[u], LEN), SHOAL_OK);
        for (int v = 0; v < N; v++) {
            if (v == u)
                continue;
            uint8_t s[32];
            cr_assert_eq(shoal_secagg_agree(sk[u], pk[u], pk[v], sid, SHOAL_SECAGG_PURPOSE_MASK, s),
                         SHOAL_OK);
            cr_assert_eq(shoal_secagg_prg_apply_u32(s, BITS, u < v ? 1 : -1, y[u], LEN), SHOAL_OK);
        }
    }
    /* A masked input alone: uniform over 16 bins (chi-square, 15 dof). */
    int count[16] = {0};
    for (int i = 0; i < LEN; i++)
        count[y[0][i] >> (BITS - 4)]++;
    double chi2 = 0, e = LEN / 16.0;
    for (int b = 0; b < 16; b++)
        chi2 += (count[b] - e) * (count[b] - e) / e;
    cr_assert_lt(chi2, 44.3, "masked input not uniform: chi-square %.1f", chi2);

    for (int u = 0; u < N; u++)
        for (int i = 0; i < LEN; i++)
            total[i] = (total[i] + y[u][i]) & ((1u << BITS) - 1);
    for (int u = 0; u < N; u++)
        cr_assert_eq(shoal_secagg_prg_apply_u32(self_seed[u], BITS, -1, total, LEN), SHOAL_OK);
    for (int i = 0; i < LEN; i++)
        cr_assert_eq(total[i], want[i], "element %d: %u, want %u", i, total[i], want[i]);
}

/* ---- fixed point ------------------------------------------------------------------------- */

Test(secagg_fixed, refuses_ranges_that_would_crash_or_wrap, .init = setup)
{
    shoal_errinfo ei = {{0}};
    shoal_secagg_fixed fx = {.clip = 0.0, .max_weight = 1, .max_contributors = 10, .bits = 32};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "clip must be a positive finite number"), "%s", ei.msg);
    fx.clip = -1.0;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    fx.clip = NAN;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    fx.clip = INFINITY;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    fx.clip = 1.0;
    fx.bits = 0;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    fx.bits = 65;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    /* 1000 devices of weight up to 2^23 cannot even sum their weights in
     * 32 bits. */
    fx.bits = 32;
    fx.max_contributors = 1000;
    fx.max_weight = 1u << 23;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "does not fit a 32-bit ring"), "%s", ei.msg);
    fx.max_weight = 0;
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, &ei), SHOAL_EINVAL);
}

Test(secagg_fixed, the_largest_possible_sum_does_not_wrap, .init = setup)
{
    const unsigned bits_list[] = {32, 40, 64};
    for (size_t b = 0; b < 3; b++) {
        shoal_secagg_fixed fx = {
            .clip = 0.5, .max_weight = 600, .max_contributors = 500, .bits = bits_list[b]};
        cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
        /* Every device at +clip with the largest weight. */
        float x[4] = {100.0f, 0.5f, -0.5f, -100.0f};
        uint64_t enc[5], sum[5] = {0};
        const uint64_t mask = fx.bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << fx.bits) - 1;
        for (uint32_t d = 0; d < fx.max_contributors; d++) {
            cr_assert_eq(shoal_secagg_fixed_encode(&fx, x, 4, fx.max_weight, enc), SHOAL_OK);
            for (int i = 0; i < 5; i++)
                sum[i] = (sum[i] + enc[i]) & mask;
        }
        double out[4];
        uint64_t w = 0;
        cr_assert_eq(shoal_secagg_fixed_decode(&fx, sum, 4, fx.max_contributors, out, &w), SHOAL_OK,
                     "bits %u", fx.bits);
        double top = 0.5 * 600 * 500;
        cr_assert_eq(w, 600u * 500u);
        cr_assert(fabs(out[0] - top) <= 500 / fx.scale, "bits %u: %f, want %f", fx.bits, out[0],
                  top);
        cr_assert(fabs(out[3] + top) <= 500 / fx.scale, "bits %u: %f", fx.bits, out[3]);
    }
}

Test(secagg_fixed, weighted_sum_decodes_within_the_rounding_bound, .init = setup)
{
    enum { N = 50, LEN = 200 };
    shoal_secagg_fixed fx = {.clip = 2.0, .max_weight = 100, .max_contributors = N, .bits = 32};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
    static float x[N][LEN];
    double want[LEN] = {0};
    uint64_t sum[LEN + 1] = {0}, enc[LEN + 1], wsum = 0;
    for (int d = 0; d < N; d++) {
        uint32_t w = 1 + randombytes_uniform(100);
        wsum += w;
        for (int i = 0; i < LEN; i++) {
            x[d][i] = (float)((double)randombytes_uniform(10000) / 2000.0 - 2.5); /* some clip */
            double c = x[d][i] > 2.0 ? 2.0 : x[d][i] < -2.0 ? -2.0 : x[d][i];
            want[i] += w * c;
        }
        cr_assert_eq(shoal_secagg_fixed_encode(&fx, x[d], LEN, w, enc), SHOAL_OK);
        for (int i = 0; i <= LEN; i++)
            sum[i] = (sum[i] + enc[i]) & 0xffffffffu;
    }
    double out[LEN];
    uint64_t w = 0;
    cr_assert_eq(shoal_secagg_fixed_decode(&fx, sum, LEN, N, out, &w), SHOAL_OK);
    cr_assert_eq(w, wsum);
    for (int i = 0; i < LEN; i++)
        cr_assert(fabs(out[i] - want[i]) <= N / fx.scale, "element %d: %f, want %f (step %g)", i,
                  out[i], want[i], 1 / fx.scale);

    /* A sum beyond what N inputs can reach is refused. */
    sum[3] = 0xffffffffu;
    cr_assert_eq(shoal_secagg_fixed_decode(&fx, sum, LEN, 2, out, &w), SHOAL_EPROTO);
    float bad[2] = {0.0f, NAN};
    cr_assert_eq(shoal_secagg_fixed_encode(&fx, bad, 2, 1, enc), SHOAL_ENUMERIC);
    cr_assert_eq(shoal_secagg_fixed_encode(&fx, bad, 1, 101, enc), SHOAL_EINVAL);
}

/* Adaptive clipping's unclipped bit rides after the weight: the group's
 * sum of the bits is how many devices set it, and the update and weight
 * decode as without it. */
Test(secagg_fixed, bits_after_the_weight_sum_to_the_count_of_devices_that_set_them, .init = setup)
{
    enum { N = 7, LEN = 5 };
    shoal_secagg_fixed fx = {.clip = 1.0, .max_weight = 1, .max_contributors = N, .bits = 16};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
    const uint64_t mask = 0xffff;
    uint64_t sum[LEN + 2] = {0}, enc[LEN + 2];
    double want[LEN] = {0};
    uint64_t set = 0;
    for (int d = 0; d < N; d++) {
        float x[LEN];
        for (int i = 0; i < LEN; i++) {
            x[i] = (float)(d - 3) / 8.0f * (float)(i % 2 ? 1 : -1);
            want[i] += x[i];
        }
        const uint8_t bit = (uint8_t)(d % 3 == 0); /* devices 0, 3, 6 */
        set += bit;
        cr_assert_eq(shoal_secagg_fixed_encode_bits(&fx, x, LEN, 1, &bit, 1, enc), SHOAL_OK);
        cr_assert_eq(enc[LEN], 1u, "the weight");
        cr_assert_eq(enc[LEN + 1], bit, "the bit, as it is");
        for (int i = 0; i < LEN + 2; i++)
            sum[i] = (sum[i] + enc[i]) & mask;
    }
    double out[LEN];
    uint64_t w = 0, count = 99;
    cr_assert_eq(shoal_secagg_fixed_decode_bits(&fx, sum, LEN, N, out, &w, 1, &count), SHOAL_OK);
    cr_assert_eq(w, (uint64_t)N);
    cr_assert_eq(count, set);
    cr_assert_eq(count, 3u);
    for (int i = 0; i < LEN; i++)
        cr_assert(fabs(out[i] - want[i]) <= N / fx.scale, "element %d: %f, want %f", i, out[i],
                  want[i]);

    /* More set than contributed is a corrupted sum; nothing is counted. */
    count = 99;
    sum[LEN + 1] = N + 1;
    cr_assert_eq(shoal_secagg_fixed_decode_bits(&fx, sum, LEN, N, out, &w, 1, &count),
                 SHOAL_EPROTO);
    cr_assert_eq(count, 99u);
    /* A flag is a bit. */
    const uint8_t two = 2;
    float x[LEN] = {0};
    enc[0] = 12345;
    cr_assert_eq(shoal_secagg_fixed_encode_bits(&fx, x, LEN, 1, &two, 1, enc), SHOAL_EINVAL);
    cr_assert_eq(enc[0], 12345u, "nothing written");
    cr_assert_eq(shoal_secagg_fixed_encode_bits(&fx, x, LEN, 1, NULL, 1, enc), SHOAL_EINVAL);
}

/* Stochastic rounding is unbiased: the mean of many encodings of a value
 * between two grid points is the value. */
Test(secagg_fixed, stochastic_rounding_is_unbiased, .init = setup)
{
    shoal_secagg_fixed fx = {.clip = 1.0, .max_weight = 1, .max_contributors = 1, .bits = 8};
    cr_assert_eq(shoal_secagg_fixed_plan(&fx, NULL), SHOAL_OK);
    /* 8 bits: scale 2^6 = 64 steps per unit on [-1, 1] → 128 + 1 values fit. */
    cr_assert_eq(fx.scale, 64.0);
    float x = 0.3f; /* (0.3 + 1) * 64 = 83.2: rounds up 20% of the time */
    enum { TRIALS = 20000 };
    double mean = 0;
    uint64_t enc[2];
    for (int i = 0; i < TRIALS; i++) {
        cr_assert_eq(shoal_secagg_fixed_encode(&fx, &x, 1, 1, enc), SHOAL_OK);
        cr_assert(enc[0] == 83 || enc[0] == 84, "%llu", (unsigned long long)enc[0]);
        mean += (double)enc[0];
    }
    mean /= TRIALS;
    /* Mean 83.2, sd of one draw 0.4: 6 standard errors is 0.017. */
    cr_assert(fabs(mean - 83.2) < 0.017, "mean %f", mean);
}

/* ---- graphs -------------------------------------------------------------------------------- */

Test(secagg_graph, every_device_has_k_neighbours_and_adjacency_is_symmetric, .init = setup)
{
    uint8_t seed[32];
    randombytes_buf(seed, sizeof seed);
    const uint32_t n = 101, k = 12;
    shoal_secagg_graph *g = NULL;
    cr_assert_eq(shoal_secagg_graph_new(n, k, seed, &g), SHOAL_OK);
    cr_assert_eq(shoal_secagg_graph_degree(g), k);
    uint32_t nb[12];
    int degree[101] = {0};
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(shoal_secagg_graph_neighbors(g, i, nb), SHOAL_OK);
        for (uint32_t j = 0; j < k; j++) {
            cr_assert_neq(nb[j], i);
            cr_assert(j == 0 || nb[j] > nb[j - 1], "neighbours not ascending");
            cr_assert(shoal_secagg_graph_adjacent(g, i, nb[j]));
            cr_assert(shoal_secagg_graph_adjacent(g, nb[j], i), "adjacency not symmetric");
            degree[nb[j]]++;
        }
        int adj = 0;
        for (uint32_t j = 0; j < n; j++)
            adj += shoal_secagg_graph_adjacent(g, i, j);
        cr_assert_eq(adj, (int)k);
    }
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(degree[i], (int)k);

    /* The same seed gives the same graph; another seed another. */
    shoal_secagg_graph *g2 = NULL, *g3 = NULL;
    cr_assert_eq(shoal_secagg_graph_new(n, k, seed, &g2), SHOAL_OK);
    seed[0] ^= 1;
    cr_assert_eq(shoal_secagg_graph_new(n, k, seed, &g3), SHOAL_OK);
    int same2 = 1, same3 = 1;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++) {
            same2 &= shoal_secagg_graph_adjacent(g, i, j) == shoal_secagg_graph_adjacent(g2, i, j);
            same3 &= shoal_secagg_graph_adjacent(g, i, j) == shoal_secagg_graph_adjacent(g3, i, j);
        }
    cr_assert(same2);
    cr_assert(!same3);
    shoal_secagg_graph_free(g);
    shoal_secagg_graph_free(g2);
    shoal_secagg_graph_free(g3);
}

Test(secagg_graph, complete_graph_and_refusals, .init = setup)
{
    uint8_t seed[32] = {9};
    shoal_secagg_graph *g = NULL;
    cr_assert_eq(shoal_secagg_graph_new(5, 4, seed, &g), SHOAL_OK);
    uint32_t nb[4];
    cr_assert_eq(shoal_secagg_graph_neighbors(g, 2, nb), SHOAL_OK);
    cr_assert(nb[0] == 0 && nb[1] == 1 && nb[2] == 3 && nb[3] == 4);
    cr_assert_eq(shoal_secagg_graph_neighbors(g, 5, nb), SHOAL_EINVAL);
    shoal_secagg_graph_free(g);
    cr_assert_eq(shoal_secagg_graph_new(10, 3, seed, &g), SHOAL_EINVAL, "odd degree");
    cr_assert_eq(shoal_secagg_graph_new(10, 0, seed, &g), SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_graph_new(2, 1, seed, &g), SHOAL_EINVAL);
    cr_assert_null(g);
}

/* ---- SecAgg+ parameters ------------------------------------------------------------------- */

/* fcp/secagg's graph_parameter_finder_test table (degree, threshold) for
 * the same threat models, and ours. They agree on every row but two: our
 * bounds draw a device's neighbours from the n - 1 other devices and take
 * quantiles exactly, which needs one more step of degree at n = 1000 with
 * 45% + 45%, and at n = 10 with 33% dropout refuses k = 4 (a device with 4
 * neighbours keeps fewer than t = 2 of them with probability 1/21, far
 * above 2^-20); see docs/secure-aggregation.md. */
typedef struct {
    uint32_t n;
    double corrupt, dropout;
    shoal_secagg_adversary adv;
    uint32_t fcp_k, fcp_t;
    uint32_t k, t; /* ours where it differs; 0: the same as fcp's */
} fcp_row;

static const fcp_row fcp_table[] = {
    {100, 0.45, 0.45, SHOAL_SECAGG_SEMI_HONEST, 92, 46, 0, 0},
    {1000, 0.45, 0.45, SHOAL_SECAGG_SEMI_HONEST, 822, 417, 824, 418},
    {10, 0.33, 0.33, SHOAL_SECAGG_SEMI_HONEST, 8, 4, 0, 0},
    {100, 0.33, 0.33, SHOAL_SECAGG_SEMI_HONEST, 68, 34, 0, 0},
    {1000, 0.33, 0.33, SHOAL_SECAGG_SEMI_HONEST, 286, 150, 0, 0},
    {10000, 0.33, 0.33, SHOAL_SECAGG_SEMI_HONEST, 422, 221, 0, 0},
    {100, 0.3, 0.3, SHOAL_SECAGG_MALICIOUS, 92, 62, 0, 0},
    {1000, 0.3, 0.3, SHOAL_SECAGG_MALICIOUS, 872, 584, 0, 0},
    {10, 0.05, 0.33, SHOAL_SECAGG_SEMI_HONEST, 4, 2, 6, 2},
    {100, 0.05, 0.33, SHOAL_SECAGG_SEMI_HONEST, 28, 6, 0, 0},
    {1000, 0.05, 0.33, SHOAL_SECAGG_SEMI_HONEST, 72, 24, 0, 0},
    {10000, 0.05, 0.33, SHOAL_SECAGG_SEMI_HONEST, 86, 29, 0, 0},
    {100000, 0.05, 0.33, SHOAL_SECAGG_SEMI_HONEST, 96, 32, 0, 0},
    {10, 0.05, 0.33, SHOAL_SECAGG_MALICIOUS, 8, 5, 0, 0},
    {100, 0.05, 0.33, SHOAL_SECAGG_MALICIOUS, 72, 39, 0, 0},
    {1000, 0.05, 0.33, SHOAL_SECAGG_MALICIOUS, 398, 223, 0, 0},
    {10, 0.33, 0.05, SHOAL_SECAGG_SEMI_HONEST, 4, 4, 0, 0},
    {100, 0.33, 0.05, SHOAL_SECAGG_SEMI_HONEST, 34, 29, 0, 0},
    {1000, 0.33, 0.05, SHOAL_SECAGG_SEMI_HONEST, 78, 60, 0, 0},
};

Test(secagg_plus, degrees_and_thresholds_match_fcp_secagg_but_where_explained, .init = setup)
{
    for (size_t i = 0; i < sizeof fcp_table / sizeof *fcp_table; i++) {
        const fcp_row *r = &fcp_table[i];
        shoal_secagg_plus_params p;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_secagg_plus_choose(r->n, r->dropout, r->corrupt, r->adv, &p, &ei),
                     SHOAL_OK, "n=%u: %s", r->n, ei.msg);
        printf("n=%-6u corrupt=%.2f dropout=%.2f %-11s  k=%-4u t=%-4u  fcp k=%-4u t=%u\n", r->n,
               r->corrupt, r->dropout, r->adv ? "malicious" : "semi-honest", p.degree, p.threshold,
               r->fcp_k, r->fcp_t);
        cr_assert(p.degree % 2 == 0 && p.degree <= r->n - 2);
        cr_assert(p.threshold >= 2 && p.threshold <= p.degree);
        uint32_t want_k = r->k ? r->k : r->fcp_k, want_t = r->k ? r->t : r->fcp_t;
        cr_assert_eq(p.degree, want_k, "n=%u: k=%u, want %u", r->n, p.degree, want_k);
        cr_assert_eq(p.threshold, want_t, "n=%u: t=%u, want %u", r->n, p.threshold, want_t);
        if (r->adv == SHOAL_SECAGG_MALICIOUS)
            cr_assert_gt(2 * p.threshold, p.degree, "malicious threshold must exceed k/2");
    }
}

Test(secagg_plus, refuses_infeasible_threat_models_with_a_reason, .init = setup)
{
    shoal_secagg_plus_params p;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_secagg_plus_choose(100, 0.5, 0.45, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
                 SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "above 0.9"), "%s", ei.msg);
    cr_assert_eq(shoal_secagg_plus_choose(100, 0.3, 0.35, SHOAL_SECAGG_MALICIOUS, &p, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_plus_choose(2, 0.1, 0.1, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_plus_choose(100, 1.0, 0.0, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_secagg_plus_choose(100, NAN, 0.0, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
                 SHOAL_EINVAL);
    /* Five devices with heavy dropout: no sparse graph works. */
    cr_assert_eq(shoal_secagg_plus_choose(5, 0.4, 0.4, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
                 SHOAL_ELIMIT);
    cr_assert_not_null(strstr(ei.msg, "plain SecAgg"), "%s", ei.msg);
}
