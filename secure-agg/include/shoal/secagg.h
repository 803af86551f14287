/* Shoal: the building blocks of secure aggregation (SecAgg, Bonawitz et
 * al. CCS 2017; SecAgg+, Bell et al. CCS 2020), on libsodium only.
 *
 *   - Shamir secret sharing of 32-byte secrets over the prime field
 *     GF(2^31 - 1);
 *   - the mask PRG: ChaCha20 (IETF) keystream read as ring elements of
 *     Z_(2^bits), added to or subtracted from a vector;
 *   - pairwise key agreement: X25519, then BLAKE2b and crypto_kdf to derive
 *     separate keys for the pairwise mask and for share transport, bound to
 *     the session and to both public keys;
 *   - share transport: XChaCha20-Poly1305 with the sender, receiver and
 *     session as associated data;
 *   - fixed-point encoding of (clipped, example-count weighted) updates into
 *     the ring, with stochastic rounding and a check that the sum of the
 *     contributions can never wrap;
 *   - SecAgg+'s random Harary graph and the choice of its degree k and the
 *     threshold t from the number of devices, the dropout rate and the
 *     corrupt fraction.
 *
 * Every random value in this file comes from libsodium (randombytes_buf or
 * a ChaCha20 stream keyed by it): none from a non-cryptographic generator.
 * Secret inputs are borrowed; functions that compute a secret write it only
 * to caller memory (which should be sodium_malloc'd) and wipe their own
 * temporaries with sodium_memzero. Nothing here logs.
 *
 * Thread safety: every function is safe to call from any thread on
 * distinct outputs; a shoal_secagg_graph is immutable after
 * shoal_secagg_graph_new and may be read by many threads at once.
 * shoal_secagg_init must have returned SHOAL_OK once before any other call
 * (it is idempotent and thread-safe). */
#ifndef SHOAL_SECAGG_H
#define SHOAL_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Initialises libsodium. SHOAL_ECRYPTO if it cannot start (no entropy). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_init(void);

/* ---- Shamir secret sharing ---------------------------------------------------------
 * A 32-byte secret is cut into 16 pieces of 16 bits; each piece is the
 * constant term of its own random polynomial of degree threshold - 1 over
 * GF(p), p = 2^31 - 1, and a share holds the 16 polynomials' values at one
 * point x (a device's 1-based index). Any `threshold` shares give the
 * secret back; fewer reveal nothing about it (each piece is uniformly
 * masked by the polynomial's other coefficients). p is prime, far above any
 * number of devices, and small enough that a product of two elements fits
 * in 64 bits on every target, so no 128-bit arithmetic is needed. */
#define SHOAL_SECAGG_PRIME            2147483647u
#define SHOAL_SECAGG_SECRET_BYTES     32
#define SHOAL_SECAGG_SHARE_PIECES     16
#define SHOAL_SECAGG_SHARE_BYTES      (4 + 4 * SHOAL_SECAGG_SHARE_PIECES) /* serialised */
#define SHOAL_SECAGG_MAX_SHAREHOLDERS 1000000u

typedef struct shoal_secagg_share {
    uint32_t x;                            /* 1..SHOAL_SECAGG_MAX_SHAREHOLDERS */
    uint32_t y[SHOAL_SECAGG_SHARE_PIECES]; /* each < SHOAL_SECAGG_PRIME */
} shoal_secagg_share;

/* Splits `secret` into `count` shares at the points xs[0..count) (distinct,
 * 1..SHOAL_SECAGG_MAX_SHAREHOLDERS), any `threshold` of which recover it.
 * out[i] gets the share at xs[i]. SHOAL_EINVAL for threshold < 2 (one
 * share would be the secret itself), threshold > count, a point out of
 * range or repeated, or a NULL pointer; SHOAL_ENOMEM; out is then
 * untouched. The polynomials' coefficients are wiped before return. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_shamir_split(const uint8_t secret[SHOAL_SECAGG_SECRET_BYTES], uint32_t threshold,
                          const uint32_t *xs, size_t count, shoal_secagg_share *out);

/* Recovers the secret from `count` >= threshold shares with distinct
 * points. The first `threshold` shares determine the polynomials; every
 * further share must lie on them, or the result is SHOAL_ECRYPTO (a
 * tampered or mismatched share), so a caller that holds more shares than
 * it needs detects a bad one. SHOAL_EINVAL: threshold < 2, count <
 * threshold, a repeated or out-of-range point, a value >= p, or a NULL
 * pointer. SHOAL_ECRYPTO also when a recovered piece exceeds 16 bits (the
 * shares were not made by shoal_secagg_shamir_split from one secret).
 * SHOAL_ENOMEM. On any error `secret` is zeroed. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_shamir_combine(const shoal_secagg_share *shares, size_t count, uint32_t threshold,
                            uint8_t secret[SHOAL_SECAGG_SECRET_BYTES]);

/* Lagrange weights for one set of `threshold` share points, kept between
 * combines so that rebuilding many secrets from shares held by the same
 * devices costs O(t^2) once and O(t) per secret after it. The weights
 * depend only on the points (never on a secret), so the cache holds
 * nothing to wipe. One cache serves one thread at a time.
 * shoal_secagg_lagrange_new: SHOAL_EINVAL for threshold < 2 or above
 * SHOAL_SECAGG_MAX_SHAREHOLDERS or a NULL `out`, SHOAL_ENOMEM; *out is
 * NULL on error. _free(NULL) is a no-op. */
typedef struct shoal_secagg_lagrange shoal_secagg_lagrange;
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_lagrange_new(uint32_t threshold,
                                                              shoal_secagg_lagrange **out);
SHOAL_API void shoal_secagg_lagrange_free(shoal_secagg_lagrange *cache);

/* shoal_secagg_shamir_combine with the cache's threshold, reusing its
 * weights when shares[0..threshold) sit at the points of the previous
 * call (and the first extra share at the same point). Same results and
 * errors as shoal_secagg_shamir_combine; SHOAL_EINVAL also for a NULL
 * cache. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_shamir_combine_with(shoal_secagg_lagrange *cache, const shoal_secagg_share *shares,
                                 size_t count, uint8_t secret[SHOAL_SECAGG_SECRET_BYTES]);

/* Serialises a share: x then the 16 pieces, each 4 bytes little-endian. */
SHOAL_API void shoal_secagg_share_pack(const shoal_secagg_share *share,
                                       uint8_t out[SHOAL_SECAGG_SHARE_BYTES]);

/* Parses a serialised share. SHOAL_EFORMAT when x is 0 or above
 * SHOAL_SECAGG_MAX_SHAREHOLDERS, or a piece is >= p; `share` is then
 * zeroed. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_share_unpack(const uint8_t in[SHOAL_SECAGG_SHARE_BYTES], shoal_secagg_share *share);

/* ---- the mask PRG ------------------------------------------------------------------
 * The mask of a 32-byte seed is the ChaCha20 (IETF: 96-bit zero nonce,
 * block counter from 0) keystream, read as little-endian words: 4 bytes an
 * element for rings of up to 32 bits, 8 bytes for 33 to 64, each reduced
 * mod 2^bits by dropping its high bits (exact and uniform, since 2^bits
 * divides 2^32 and 2^64). Each seed is used for one vector of one round
 * only (seeds are derived per session), so the fixed nonce is never
 * reused with a key. */
#define SHOAL_SECAGG_SEED_BYTES 32

/* acc[i] = (acc[i] + sign * mask[i]) mod 2^bits for i < n, with sign +1
 * (add) or -1 (subtract). bits 1..32; acc's elements are taken mod 2^bits
 * first. SHOAL_EINVAL for bits out of range, a sign other than +-1, or a
 * NULL pointer with n > 0. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_prg_apply_u32(
    const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits, int sign, uint32_t *acc, size_t n);

/* The same for rings of 33 to 64 bits, 8 keystream bytes an element. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_prg_apply_u64(
    const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits, int sign, uint64_t *acc, size_t n);

/* ---- keys ----------------------------------------------------------------------------
 * Each device has two X25519 key pairs per session: c (share transport)
 * and s (pairwise masks). A session id (32 bytes the server chooses per
 * round and group, announced to every device) binds every derived key to
 * that round, so nothing carries over from one round to the next. */
#define SHOAL_SECAGG_PUBLIC_KEY_BYTES 32
#define SHOAL_SECAGG_SECRET_KEY_BYTES 32
#define SHOAL_SECAGG_SESSION_ID_BYTES 32
#define SHOAL_SECAGG_KEY_BYTES        32

/* Makes an X25519 key pair from randombytes_buf. sk should be
 * sodium_malloc'd. SHOAL_EINVAL for NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_keypair(uint8_t pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                                                         uint8_t sk[SHOAL_SECAGG_SECRET_KEY_BYTES]);

/* What an agreed key is for; each purpose gives an independent key. */
typedef enum shoal_secagg_purpose {
    SHOAL_SECAGG_PURPOSE_MASK = 1,     /* the pairwise mask seed (s keys) */
    SHOAL_SECAGG_PURPOSE_TRANSPORT = 2 /* the share-transport AEAD key (c keys) */
} shoal_secagg_purpose;

/* The key two devices share: X25519(my_sk, their_pk), hashed with BLAKE2b
 * together with the session id and both public keys in a fixed order
 * (smaller first, so both sides get the same key), then crypto_kdf with
 * context "shoalsa1" and the purpose as subkey id. SHOAL_ECRYPTO when
 * their_pk is a low-order point (the X25519 result would be all zero: a
 * forged key) or equals my_pk; SHOAL_EINVAL for a NULL pointer or an
 * unknown purpose. On error `key` is zeroed. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_agree(const uint8_t my_sk[SHOAL_SECAGG_SECRET_KEY_BYTES],
                   const uint8_t my_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                   const uint8_t their_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                   const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES],
                   shoal_secagg_purpose purpose, uint8_t key[SHOAL_SECAGG_KEY_BYTES]);

/* ---- share transport -------------------------------------------------------------------
 * A sealed message is a random 24-byte nonce, the XChaCha20-Poly1305
 * ciphertext and its 16-byte tag; the associated data binds it to the
 * session and to the (sender, receiver) pair, so the server can neither
 * redirect it to another device nor replay it in another round. */
#define SHOAL_SECAGG_SEAL_OVERHEAD (24 + 16)

/* Seals `len` bytes for `receiver` from `sender` into out (len +
 * SHOAL_SECAGG_SEAL_OVERHEAD bytes). SHOAL_EINVAL for NULL pointers or
 * sender == receiver. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_seal(const uint8_t key[SHOAL_SECAGG_KEY_BYTES],
                  const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES], uint32_t sender,
                  uint32_t receiver, const uint8_t *msg, size_t len, uint8_t *out);

/* Opens a sealed message of `sealed_len` bytes into out (sealed_len -
 * SHOAL_SECAGG_SEAL_OVERHEAD bytes). SHOAL_ECRYPTO when it was not sealed
 * with this key for this session, sender and receiver, or was altered;
 * SHOAL_EFORMAT when shorter than the overhead; SHOAL_EINVAL for NULL
 * pointers. On error out is zeroed. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_open(const uint8_t key[SHOAL_SECAGG_KEY_BYTES],
                  const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES], uint32_t sender,
                  uint32_t receiver, const uint8_t *sealed, size_t sealed_len, uint8_t *out);

/* ---- fixed-point encoding -------------------------------------------------------------
 * A device clips each element of its update to [-clip, clip], multiplies it
 * by its weight w (its example count, 1..max_weight; 1 when unweighted),
 * and encodes v = w * x as the integer round_stochastic((v + clip *
 * max_weight) * scale), in [0, 2 * clip * max_weight * scale]. The weight
 * itself travels as one more element. The server's sum over n devices of
 * those integers is below n * (2 * clip * max_weight * scale + 1), which
 * shoal_secagg_fixed_plan checks is below 2^bits, so the sum can never
 * wrap, and decodes as sum / scale - n * clip * max_weight. Stochastic
 * rounding (up with probability equal to the fraction) keeps each encoded
 * element unbiased. */
typedef struct shoal_secagg_fixed {
    double clip;               /* > 0, finite */
    uint32_t max_weight;       /* >= 1 */
    uint32_t max_contributors; /* >= 1: the most devices whose inputs are summed */
    unsigned bits;             /* ring Z_(2^bits), 1..64 */
    double scale;              /* computed: integer steps per unit of w * x */
} shoal_secagg_fixed;

/* Fills fx->scale with the largest power of two for which the sum of
 * max_contributors encoded inputs stays below 2^bits. SHOAL_EINVAL (`ei`
 * names the field and the bound) for a clip that is not positive and
 * finite, max_weight or max_contributors 0, bits out of 1..64, or when even
 * a scale of 2^-20 would not leave room (then the ring is too small for
 * n x range: raise bits, or lower clip, max_weight or the group size). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_fixed_plan(shoal_secagg_fixed *fx,
                                                            shoal_errinfo *ei);

/* Encodes x[0..n) with weight w into out[0..n) (ring elements as uint64,
 * each < 2^bits), followed by out[n] = w. Non-finite x is refused
 * (SHOAL_ENUMERIC, nothing written); w must be 1..max_weight (SHOAL_EINVAL).
 * The rounding randomness comes from a ChaCha20 stream keyed by
 * randombytes_buf. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_fixed_encode(const shoal_secagg_fixed *fx,
                                                              const float *x, size_t n, uint32_t w,
                                                              uint64_t *out);

/* Decodes the sum of `contributors` encoded inputs: sum[0..n) into the
 * weighted sum out[i] = sum_j w_j * x_j[i], and sum[n] into *total_weight.
 * SHOAL_EINVAL for contributors 0 or above max_contributors; SHOAL_EPROTO
 * when an element (or the weight) lies outside what that many inputs can
 * sum to (the sum was corrupted or mixed with another group's). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_fixed_decode(const shoal_secagg_fixed *fx,
                                                              const uint64_t *sum, size_t n,
                                                              uint32_t contributors, double *out,
                                                              uint64_t *total_weight);

/* Flags summed beside the update: encodes as shoal_secagg_fixed_encode,
 * then out[n + 1 + k] = bits[k] for k < bit_count, each 0 or 1, so the
 * server learns only how many devices of the group set each flag (adaptive
 * clipping's unclipped bit, Andrew et al. 2021: docs/protocol.md, "Adaptive
 * clipping"). A sum of max_contributors flags is below the room
 * shoal_secagg_fixed_plan leaves for the weights, so it cannot wrap.
 * SHOAL_EINVAL (nothing written) for a bit other than 0 or 1, or NULL bits
 * with bit_count > 0; otherwise as shoal_secagg_fixed_encode. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_fixed_encode_bits(const shoal_secagg_fixed *fx,
                                                                   const float *x, size_t n,
                                                                   uint32_t w, const uint8_t *bits,
                                                                   size_t bit_count, uint64_t *out);

/* Decodes as shoal_secagg_fixed_decode, and the flags' sums sum[n + 1 + k]
 * into counts[k] for k < bit_count. SHOAL_EPROTO (nothing written to
 * counts) when a count is above `contributors`; SHOAL_EINVAL for NULL
 * counts with bit_count > 0; otherwise as shoal_secagg_fixed_decode. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_fixed_decode_bits(
    const shoal_secagg_fixed *fx, const uint64_t *sum, size_t n, uint32_t contributors, double *out,
    uint64_t *total_weight, size_t bit_count, uint64_t *counts);

/* ---- SecAgg+ graphs ------------------------------------------------------------------
 * A random Harary graph H(n, k): the n devices are placed on a ring in a
 * random order (a permutation drawn from a ChaCha20 stream keyed by `seed`,
 * which the server draws with randombytes_buf and announces), and each is
 * joined to the k/2 devices on either side. Every device then masks only
 * with its k neighbours and shares its secrets among them. k = n - 1 is
 * the complete graph: plain SecAgg. */
typedef struct shoal_secagg_graph shoal_secagg_graph;

/* Makes H(n, k) for n >= 3 devices (at most SHOAL_SECAGG_MAX_SHAREHOLDERS)
 * and an even k with 2 <= k <= n - 2, or k = n - 1 (complete).
 * SHOAL_EINVAL otherwise; SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_graph_new(uint32_t n, uint32_t k,
                                                           const uint8_t seed[32],
                                                           shoal_secagg_graph **out);
/* Frees a graph; NULL is a no-op. */
SHOAL_API void shoal_secagg_graph_free(shoal_secagg_graph *g);

/* The degree k. `g` must not be NULL. */
SHOAL_API uint32_t shoal_secagg_graph_degree(const shoal_secagg_graph *g);

/* Writes device i's k neighbours (indices 0..n-1, ascending) to out[0..k).
 * SHOAL_EINVAL for i >= n. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_graph_neighbors(const shoal_secagg_graph *g,
                                                                 uint32_t i, uint32_t *out);

/* 1 if devices i and j (distinct, < n) are neighbours, else 0 (also for
 * i == j, an index >= n, or a NULL graph). */
SHOAL_API int shoal_secagg_graph_adjacent(const shoal_secagg_graph *g, uint32_t i, uint32_t j);

/* The threat model SecAgg+ parameters are chosen for (Bell et al. 2020,
 * section 3): up to corrupt_rate * n devices collude with the server, and
 * up to dropout_rate * n devices drop out before the end. */
typedef enum shoal_secagg_adversary {
    SHOAL_SECAGG_SEMI_HONEST = 0, /* the server follows the protocol */
    SHOAL_SECAGG_MALICIOUS = 1    /* the server may lie about who dropped out */
} shoal_secagg_adversary;

typedef struct shoal_secagg_plus_params {
    uint32_t degree;    /* k: neighbours per device */
    uint32_t threshold; /* t: shares needed to recover a secret */
} shoal_secagg_plus_params;

/* The statistical security (2^-40) and failure probability (2^-20) every
 * choice of shoal_secagg_plus_choose meets. */
#define SHOAL_SECAGG_SECURITY_BITS    40
#define SHOAL_SECAGG_CORRECTNESS_BITS 20

/* Chooses the smallest even degree k (and with it the smallest threshold
 * t) such that, over the random graph, (a) the probability that the
 * surviving honest devices' graph is disconnected, and (b) the probability
 * that some device has t or more corrupt neighbours, are each at most
 * 2^-41 (together 2^-40), and (c) the probability that some device keeps
 * fewer than t surviving neighbours is at most 2^-20; against a malicious
 * server also t > (k + corrupt neighbours) / 2, so no two disjoint sets of
 * shares can both be gathered. SHOAL_EINVAL (`ei` says which bound) for n <
 * 3 or above SHOAL_SECAGG_MAX_SHAREHOLDERS, rates outside [0, 1), or
 * corrupt_rate + dropout_rate (malicious: + 2 x dropout_rate) above 0.9;
 * SHOAL_ELIMIT when no degree below n - 1 meets the bounds (small n with
 * high rates: use the complete graph, plain SecAgg, with a threshold of
 * your own analysis, or lower the rates). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_plus_choose(uint32_t n, double dropout_rate,
                                                             double corrupt_rate,
                                                             shoal_secagg_adversary adversary,
                                                             shoal_secagg_plus_params *out,
                                                             shoal_errinfo *ei);

#ifdef __cplusplus
}
#endif

#endif
