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

/* Adds sign x the keystream of `seed`, read as `width`-byte little-endian
 * words reduced mod 2^bits, to acc32 (width 4) or acc64 (width 8), one
 * L1-sized block of keystream at a time. */
static void apply(const uint8_t *seed, unsigned bits, int sign, uint32_t *acc32, uint64_t *acc64,
                  size_t n, size_t width)
{
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
        if (width == 4) {
            uint32_t *a = acc32 + done;
            for (size_t i = 0; i < take; i++) {
                uint32_t m;
                memcpy(&m, ks + 4 * i, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
                m = __builtin_bswap32(m);
#endif
                a[i] = (uint32_t)((sign > 0 ? a[i] + m : a[i] - m) & mask);
            }
        } else {
            uint64_t *a = acc64 + done;
            for (size_t i = 0; i < take; i++) {
                uint64_t m;
                memcpy(&m, ks + 8 * i, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
                m = __builtin_bswap64(m);
#endif
                a[i] = (sign > 0 ? a[i] + m : a[i] - m) & mask;
            }
        }
        done += take;
    }
    sodium_memzero(ks, sizeof ks);
}

shoal_err shoal_secagg_prg_apply_u32(const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits,
                                     int sign, uint32_t *acc, size_t n)
{
    if (!seed || bits < 1 || bits > 32 || (sign != 1 && sign != -1) || (!acc && n > 0))
        return SHOAL_EINVAL;
    apply(seed, bits, sign, acc, NULL, n, 4);
    return SHOAL_OK;
}

shoal_err shoal_secagg_prg_apply_u64(const uint8_t seed[SHOAL_SECAGG_SEED_BYTES], unsigned bits,
                                     int sign, uint64_t *acc, size_t n)
{
    if (!seed || bits < 33 || bits > 64 || (sign != 1 && sign != -1) || (!acc && n > 0))
        return SHOAL_EINVAL;
    apply(seed, bits, sign, NULL, acc, n, 8);
    return SHOAL_OK;
}
