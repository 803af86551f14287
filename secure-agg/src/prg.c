/* The mask PRG (see shoal/secagg.h): ChaCha20 keystream as ring elements,
 * added to or subtracted from a vector block by block, so the mask is
 * never materialised whole. */
#include <sodium.h>
#include <string.h>

#include "shoal/secagg.h"

#define BLOCK_BYTES 4096 /* keystream per pass: 64 ChaCha20 blocks, stays in L1 */

shoal_err shoal_secagg_init(void)
{
    return sodium_init() < 0 ? SHOAL_ECRYPTO : SHOAL_OK;
}

static const uint8_t zero_nonce[crypto_stream_chacha20_ietf_NONCEBYTES];

/* The little-endian words of the keystream, whatever the host's order
 * (compilers turn these into one load). */
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Adds sign x the keystream of `seed`, read as `width`-byte little-endian
 * words reduced mod 2^bits, to acc32 (width 4: bits 1..32) or acc64
 * (width 8: bits 33..64), one L1-sized block of keystream at a time. */
static shoal_err apply(const uint8_t *seed, unsigned bits, int sign, uint32_t *acc32,
                       uint64_t *acc64, size_t n, size_t width)
{
    const unsigned lo = width == 4 ? 1 : 33, hi = 8 * (unsigned)width;
    if (!seed || bits < lo || bits > hi || (sign != 1 && sign != -1) || (!acc32 && !acc64 && n > 0))
        return SHOAL_EINVAL;
    const uint64_t mask = bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
    const size_t per_block = BLOCK_BYTES / width;
    uint8_t ks[BLOCK_BYTES];
    uint32_t counter = 0;
    for (size_t done = 0; done < n;) {
        size_t take = n - done < per_block ? n - done : per_block;
        size_t bytes = (take * width + 63) & ~(size_t)63; /* whole ChaCha20 blocks */
        memset(ks, 0, bytes);
        crypto_stream_chacha20_ietf_xor_ic(ks, ks, bytes, zero_nonce, counter, seed);
        counter += (uint32_t)(bytes / 64);
        for (size_t i = 0; width == 4 && i < take; i++) {
            uint32_t *a = &acc32[done + i], m = le32(ks + 4 * i);
            *a = (uint32_t)((sign > 0 ? *a + m : *a - m) & mask);
        }
        for (size_t i = 0; width == 8 && i < take; i++) {
            uint64_t *a = &acc64[done + i], m = le64(ks + 8 * i);
            *a = (sign > 0 ? *a + m : *a - m) & mask;
        }
        done += take;
    }
    sodium_memzero(ks, sizeof ks);
    return SHOAL_OK;
}

shoal_err shoal_secagg_prg_apply_u32(const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits,
                                     int sign, uint32_t *acc, size_t n)
{
    return apply(seed, bits, sign, acc, NULL, n, 4);
}

shoal_err shoal_secagg_prg_apply_u64(const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits,
                                     int sign, uint64_t *acc, size_t n)
{
    return apply(seed, bits, sign, NULL, acc, n, 8);
}
