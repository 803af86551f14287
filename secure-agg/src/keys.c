/* Key agreement and share transport (see shoal/secagg.h). */
#include <sodium.h>
#include <string.h>

#include "shoal/secagg.h"

#define KDF_CONTEXT "shoalsa1"

shoal_err shoal_secagg_keypair(uint8_t pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                               uint8_t sk[SHOAL_SECAGG_SECRET_KEY_BYTES])
{
    if (!pk || !sk)
        return SHOAL_EINVAL;
    randombytes_buf(sk, SHOAL_SECAGG_SECRET_KEY_BYTES);
    return crypto_scalarmult_base(pk, sk) == 0 ? SHOAL_OK : SHOAL_ECRYPTO;
}

shoal_err shoal_secagg_agree(const uint8_t my_sk[SHOAL_SECAGG_SECRET_KEY_BYTES],
                             const uint8_t my_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                             const uint8_t their_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES],
                             const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES],
                             shoal_secagg_purpose purpose, uint8_t key[SHOAL_SECAGG_KEY_BYTES])
{
    if (!key)
        return SHOAL_EINVAL;
    memset(key, 0, SHOAL_SECAGG_KEY_BYTES);
    if (!my_sk || !my_pk || !their_pk || !session_id ||
        (purpose != SHOAL_SECAGG_PURPOSE_MASK && purpose != SHOAL_SECAGG_PURPOSE_TRANSPORT))
        return SHOAL_EINVAL;
    if (sodium_memcmp(my_pk, their_pk, SHOAL_SECAGG_PUBLIC_KEY_BYTES) == 0)
        return SHOAL_ECRYPTO;
    uint8_t shared[crypto_scalarmult_BYTES], master[crypto_kdf_KEYBYTES];
    /* libsodium refuses (returns -1) a low-order point: the result would
     * be all zero, a key the server could predict. */
    if (crypto_scalarmult(shared, my_sk, their_pk) != 0) {
        sodium_memzero(shared, sizeof shared);
        return SHOAL_ECRYPTO;
    }
    /* Both sides hash the public keys in the same order: smaller first. */
    const uint8_t *lo = my_pk, *hi = their_pk;
    if (memcmp(my_pk, their_pk, SHOAL_SECAGG_PUBLIC_KEY_BYTES) > 0) {
        lo = their_pk;
        hi = my_pk;
    }
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof master);
    crypto_generichash_update(&h, shared, sizeof shared);
    crypto_generichash_update(&h, session_id, SHOAL_SECAGG_SESSION_ID_BYTES);
    crypto_generichash_update(&h, lo, SHOAL_SECAGG_PUBLIC_KEY_BYTES);
    crypto_generichash_update(&h, hi, SHOAL_SECAGG_PUBLIC_KEY_BYTES);
    crypto_generichash_final(&h, master, sizeof master);
    int rc = crypto_kdf_derive_from_key(key, SHOAL_SECAGG_KEY_BYTES, (uint64_t)purpose, KDF_CONTEXT,
                                        master);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(master, sizeof master);
    sodium_memzero(&h, sizeof h);
    if (rc != 0) {
        sodium_memzero(key, SHOAL_SECAGG_KEY_BYTES);
        return SHOAL_ECRYPTO;
    }
    return SHOAL_OK;
}

/* Associated data: session id, then sender and receiver (4 bytes each,
 * little-endian). */
static void make_ad(uint8_t ad[SHOAL_SECAGG_SESSION_ID_BYTES + 8],
                    const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES], uint32_t sender,
                    uint32_t receiver)
{
    memcpy(ad, session_id, SHOAL_SECAGG_SESSION_ID_BYTES);
    for (int i = 0; i < 4; i++) {
        ad[SHOAL_SECAGG_SESSION_ID_BYTES + i] = (uint8_t)(sender >> (8 * i));
        ad[SHOAL_SECAGG_SESSION_ID_BYTES + 4 + i] = (uint8_t)(receiver >> (8 * i));
    }
}

shoal_err shoal_secagg_seal(const uint8_t key[SHOAL_SECAGG_KEY_BYTES],
                            const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES],
                            uint32_t sender, uint32_t receiver, const uint8_t *msg, size_t len,
                            uint8_t *out)
{
    if (!key || !session_id || (!msg && len > 0) || !out || sender == receiver)
        return SHOAL_EINVAL;
    uint8_t ad[SHOAL_SECAGG_SESSION_ID_BYTES + 8];
    make_ad(ad, session_id, sender, receiver);
    uint8_t *nonce = out;
    randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                                               &clen, msg, len, ad, sizeof ad, NULL, nonce, key);
    return SHOAL_OK;
}

shoal_err shoal_secagg_open(const uint8_t key[SHOAL_SECAGG_KEY_BYTES],
                            const uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES],
                            uint32_t sender, uint32_t receiver, const uint8_t *sealed,
                            size_t sealed_len, uint8_t *out)
{
    if (!key || !session_id || !sealed || !out)
        return SHOAL_EINVAL;
    if (sealed_len < SHOAL_SECAGG_SEAL_OVERHEAD)
        return SHOAL_EFORMAT;
    uint8_t ad[SHOAL_SECAGG_SESSION_ID_BYTES + 8];
    make_ad(ad, session_id, sender, receiver);
    const size_t npub = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            out, &mlen, NULL, sealed + npub, sealed_len - npub, ad, sizeof ad, sealed, key) != 0) {
        sodium_memzero(out, sealed_len - SHOAL_SECAGG_SEAL_OVERHEAD);
        return SHOAL_ECRYPTO;
    }
    return SHOAL_OK;
}
