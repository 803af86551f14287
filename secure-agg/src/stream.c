/* The keystream reader of secagg_int.h. */
#include <sodium.h>
#include <string.h>

#include "secagg_int.h"

void shoal_secagg_stream_init(shoal_secagg_stream *s, const uint8_t key[32])
{
    memcpy(s->key, key, sizeof s->key);
    s->counter = 0;
    s->pos = sizeof s->buf;
}

void shoal_secagg_stream_init_random(shoal_secagg_stream *s)
{
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    shoal_secagg_stream_init(s, key);
    sodium_memzero(key, sizeof key);
}

static void refill(shoal_secagg_stream *s)
{
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    memset(s->buf, 0, sizeof s->buf);
    crypto_stream_chacha20_ietf_xor_ic(s->buf, s->buf, sizeof s->buf, nonce, s->counter, s->key);
    s->counter += (uint32_t)(sizeof s->buf / 64);
    s->pos = 0;
}

uint32_t shoal_secagg_stream_u32(shoal_secagg_stream *s)
{
    if (s->pos + 4 > sizeof s->buf)
        refill(s);
    const uint8_t *p = s->buf + s->pos;
    s->pos += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t shoal_secagg_stream_u64(shoal_secagg_stream *s)
{
    uint64_t lo = shoal_secagg_stream_u32(s);
    return lo | (uint64_t)shoal_secagg_stream_u32(s) << 32;
}

uint32_t shoal_secagg_stream_uniform(shoal_secagg_stream *s, uint32_t bound)
{
    if (bound <= 1)
        return 0;
    /* Accept only below the largest multiple of bound that fits in 2^32. */
    uint32_t limit = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
    for (;;) {
        uint32_t r = shoal_secagg_stream_u32(s);
        if (r >= limit)
            return r % bound;
    }
}

void shoal_secagg_stream_wipe(shoal_secagg_stream *s)
{
    sodium_memzero(s, sizeof *s);
}
