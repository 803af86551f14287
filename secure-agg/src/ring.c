/* Ring vectors, the config check and the signed forms shared by the
 * device's and the server's state machines. */
#include <sodium.h>
#include <string.h>

#include "secagg_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg_protocol.h"

size_t shoal_secagg_ring_bytes(unsigned bits)
{
    return bits <= 32 ? 4 : 8;
}

shoal_err shoal_secagg_ring_init(shoal_secagg_ring *r, unsigned bits, size_t n)
{
    memset(r, 0, sizeof *r);
    r->bits = bits;
    r->n = n;
    if (bits <= 32)
        r->w32 = shoal_calloc(n ? n : 1, sizeof *r->w32);
    else
        r->w64 = shoal_calloc(n ? n : 1, sizeof *r->w64);
    return r->w32 || r->w64 ? SHOAL_OK : SHOAL_ENOMEM;
}

void shoal_secagg_ring_fini(shoal_secagg_ring *r)
{
    shoal_free(r->w32);
    shoal_free(r->w64);
    memset(r, 0, sizeof *r);
}

static uint64_t ring_mask(unsigned bits)
{
    return bits >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
}

shoal_err shoal_secagg_ring_set(shoal_secagg_ring *r, const uint64_t *x)
{
    const uint64_t mask = ring_mask(r->bits);
    for (size_t i = 0; i < r->n; i++)
        if (x[i] & ~mask)
            return SHOAL_EINVAL;
    for (size_t i = 0; i < r->n; i++) {
        if (r->w32)
            r->w32[i] = (uint32_t)x[i];
        else
            r->w64[i] = x[i];
    }
    return SHOAL_OK;
}

void shoal_secagg_ring_add_bytes(shoal_secagg_ring *r, const uint8_t *bytes)
{
    const uint64_t mask = ring_mask(r->bits);
    if (r->w32) {
        const uint32_t m32 = (uint32_t)mask;
        uint32_t word[256];
        for (size_t i = 0; i < r->n; i += 256) {
            size_t take = r->n - i < 256 ? r->n - i : 256;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(word, bytes + 4 * i, 4 * take); /* the wire order is the host's */
#else
            for (size_t j = 0; j < take; j++)
                word[j] = shoal_secagg_get32(bytes + 4 * (i + j));
#endif
            uint32_t *acc = r->w32 + i;
            for (size_t j = 0; j < take; j++)
                acc[j] = (acc[j] + word[j]) & m32;
        }
    } else {
        for (size_t i = 0; i < r->n; i++) {
            uint64_t v = shoal_secagg_get32(bytes + 8 * i) |
                         (uint64_t)shoal_secagg_get32(bytes + 8 * i + 4) << 32;
            r->w64[i] = (r->w64[i] + v) & mask;
        }
    }
}

shoal_err shoal_secagg_ring_apply(shoal_secagg_ring *r, const uint8_t seed[32], int sign)
{
    return r->w32 ? shoal_secagg_prg_apply_u32(seed, r->bits, sign, r->w32, r->n)
                  : shoal_secagg_prg_apply_u64(seed, r->bits, sign, r->w64, r->n);
}

void shoal_secagg_ring_to_bytes(const shoal_secagg_ring *r, uint8_t *out)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->w32) {
            shoal_secagg_put32(out + 4 * i, r->w32[i]);
        } else {
            shoal_secagg_put32(out + 8 * i, (uint32_t)r->w64[i]);
            shoal_secagg_put32(out + 8 * i + 4, (uint32_t)(r->w64[i] >> 32));
        }
    }
}

void shoal_secagg_ring_to_u64(const shoal_secagg_ring *r, uint64_t *out)
{
    for (size_t i = 0; i < r->n; i++)
        out[i] = r->w32 ? r->w32[i] : r->w64[i];
}

shoal_err shoal_secagg_config_check(const shoal_secagg_config *cfg, shoal_errinfo *ei)
{
    if (!cfg)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: no config");
    if (cfg->n < 3 || cfg->n > SHOAL_SECAGG_MAX_SHAREHOLDERS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: n must be 3..%u devices, got %u",
                                 SHOAL_SECAGG_MAX_SHAREHOLDERS, cfg->n);
    if (!(cfg->degree == cfg->n - 1 ||
          (cfg->degree >= 2 && cfg->degree <= cfg->n - 2 && cfg->degree % 2 == 0)))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: degree must be n - 1 (%u, SecAgg) or an "
                                 "even number from 2 to n - 2 (SecAgg+), got %u",
                                 cfg->n - 1, cfg->degree);
    if (cfg->threshold < 2 || cfg->threshold > cfg->degree)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: threshold must be 2..degree (%u), got %u",
                                 cfg->degree, cfg->threshold);
    if (cfg->bits < 1 || cfg->bits > 64)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: bits must be 1..64, got %u",
                                 cfg->bits);
    if (cfg->length == 0 || cfg->length > ((size_t)1 << 31))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: length must be 1..2^31 elements, got %zu",
                                 cfg->length);
    return SHOAL_OK;
}

shoal_err shoal_secagg_graph_for(const shoal_secagg_config *cfg, shoal_secagg_graph **out)
{
    return shoal_secagg_graph_new(cfg->n, cfg->degree, cfg->graph_seed, out);
}

void shoal_secagg_adv_signed_bytes(const uint8_t session_id[32], uint32_t index,
                                   const uint8_t c_pk[32], const uint8_t s_pk[32],
                                   uint8_t out[SECAGG_ADV_SIGNED_BYTES])
{
    memcpy(out, "shoal secagg adv", 16);
    memcpy(out + 16, session_id, 32);
    shoal_secagg_put32(out + 48, index);
    memcpy(out + 52, c_pk, 32);
    memcpy(out + 84, s_pk, 32);
}

uint8_t *shoal_secagg_u3_signed_bytes(const uint8_t session_id[32], const uint32_t *survivors,
                                      size_t count, size_t *len)
{
    *len = 16 + 32 + 4 + 4 * count;
    uint8_t *b = shoal_malloc(*len);
    if (!b)
        return NULL;
    memcpy(b, "shoal secagg u3\0", 16);
    memcpy(b + 16, session_id, 32);
    shoal_secagg_put32(b + 48, (uint32_t)count);
    for (size_t i = 0; i < count; i++)
        shoal_secagg_put32(b + 52 + 4 * i, survivors[i]);
    return b;
}

int shoal_secagg_adv_verify(const uint8_t session_id[32], const shoal_secagg_advertise *a,
                            const uint8_t verify_key[SHOAL_SECAGG_SIGN_PUBLIC_KEY_BYTES])
{
    uint8_t m[SECAGG_ADV_SIGNED_BYTES];
    shoal_secagg_adv_signed_bytes(session_id, a->index, a->c_pk, a->s_pk, m);
    return crypto_sign_verify_detached(a->signature, m, sizeof m, verify_key) == 0;
}

int shoal_secagg_adv_collide(const shoal_secagg_advertise *a, const shoal_secagg_advertise *b)
{
    return sodium_memcmp(a->c_pk, b->c_pk, 32) == 0 || sodium_memcmp(a->s_pk, b->s_pk, 32) == 0 ||
           sodium_memcmp(a->c_pk, b->s_pk, 32) == 0 || sodium_memcmp(a->s_pk, b->c_pk, 32) == 0;
}
