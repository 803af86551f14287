#include <sodium.h>
#include <string.h>

#include "store_int.h"

_Static_assert(STORE_NONCE_BYTES == crypto_secretbox_NONCEBYTES, "nonce size");
_Static_assert(STORE_MAC_BYTES == crypto_secretbox_MACBYTES, "MAC size");
_Static_assert(SHOAL_STORE_KEY_BYTES == crypto_secretbox_KEYBYTES, "key size");
_Static_assert(SHOAL_STORE_SEAL_OVERHEAD ==
                   STORE_NONCE_BYTES + STORE_MAC_BYTES + STORE_HEADER_BYTES,
               "seal overhead");

void shoal_store_put_le32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

void shoal_store_put_le64(uint8_t *b, uint64_t v)
{
    shoal_store_put_le32(b, (uint32_t)v);
    shoal_store_put_le32(b + 4, (uint32_t)(v >> 32));
}

uint32_t shoal_store_get_le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

uint64_t shoal_store_get_le64(const uint8_t *b)
{
    return (uint64_t)shoal_store_get_le32(b) | (uint64_t)shoal_store_get_le32(b + 4) << 32;
}

void shoal_store_floats_to_le(const float *v, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        shoal_store_put_le32(out + 4 * i, u);
    }
}

void shoal_store_floats_from_le(const uint8_t *b, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = shoal_store_get_le32(b + 4 * i);
        memcpy(&out[i], &u, 4);
    }
}

static size_t plain_payload_size(const shoal_example *ex)
{
    return ex->features ? ex->feature_count * 4 : ex->blob_len;
}

size_t shoal_store_stored_size(const shoal_store *st, const shoal_example *ex)
{
    size_t n = plain_payload_size(ex);
    return st->key ? n + STORE_NONCE_BYTES + STORE_MAC_BYTES + STORE_HEADER_BYTES : n;
}

static void write_payload(const shoal_example *ex, uint8_t *out)
{
    if (ex->features)
        shoal_store_floats_to_le(ex->features, ex->feature_count, out);
    else if (ex->blob_len)
        memcpy(out, ex->blob, ex->blob_len);
}

void shoal_store_encode(const shoal_store *st, const store_collection *coll,
                        const shoal_example *ex, float weight, uint8_t *out)
{
    if (!st->key) {
        write_payload(ex, out);
        return;
    }
    /* Seal in place: the plaintext is laid out where the ciphertext goes
     * (after nonce and MAC); libsodium allows the overlap. */
    uint8_t *nonce = out, *plain = out + STORE_NONCE_BYTES + STORE_MAC_BYTES;
    size_t plain_len = STORE_HEADER_BYTES + plain_payload_size(ex);
    uint32_t w;
    memcpy(&w, &weight, 4);
    shoal_store_put_le64(plain, (uint64_t)coll->id);
    shoal_store_put_le64(plain + 8, (uint64_t)ex->timestamp_ms);
    shoal_store_put_le32(plain + 16, (uint32_t)ex->label);
    shoal_store_put_le32(plain + 20, w);
    write_payload(ex, plain + STORE_HEADER_BYTES);
    randombytes_buf(nonce, STORE_NONCE_BYTES);
    crypto_secretbox_easy(out + STORE_NONCE_BYTES, plain, plain_len, nonce, st->key);
}

int shoal_store_unseal(const shoal_store *st, const uint8_t *sealed, size_t len, uint8_t *plain,
                       int64_t collection_id, int64_t timestamp_ms, int32_t *label, float *weight)
{
    if (len < STORE_NONCE_BYTES + STORE_MAC_BYTES + STORE_HEADER_BYTES)
        return -1;
    if (crypto_secretbox_open_easy(plain, sealed + STORE_NONCE_BYTES, len - STORE_NONCE_BYTES,
                                   sealed, st->key) != 0)
        return -1;
    /* The header binds the sealed text to its row: a payload copied into
     * another collection or given another timestamp does not open. */
    if ((int64_t)shoal_store_get_le64(plain) != collection_id ||
        (int64_t)shoal_store_get_le64(plain + 8) != timestamp_ms) {
        sodium_memzero(plain, len - STORE_NONCE_BYTES - STORE_MAC_BYTES);
        return -1;
    }
    *label = (int32_t)shoal_store_get_le32(plain + 16);
    uint32_t w = shoal_store_get_le32(plain + 20);
    memcpy(weight, &w, 4);
    return 0;
}
