/* secure-agg/ internals: a ChaCha20 keystream read word by word. */
#ifndef SHOAL_SECAGG_INT_H
#define SHOAL_SECAGG_INT_H

#include <stddef.h>
#include <stdint.h>

#define SECAGG_STREAM_BLOCK 1024 /* keystream bytes generated at a time */

/* A deterministic stream of the ChaCha20 (IETF) keystream of `key` with a
 * zero nonce. Keyed by randombytes_buf it is the bulk source of the
 * randomness this component needs (polynomial coefficients, rounding);
 * keyed by an announced seed it is the shared randomness every party
 * recomputes (the graph's permutation). Holds key material: wipe it with
 * shoal_secagg_stream_wipe. */
typedef struct shoal_secagg_stream {
    uint8_t key[32];
    uint32_t counter; /* next ChaCha20 block to generate */
    size_t pos;       /* bytes of buf already used */
    uint8_t buf[SECAGG_STREAM_BLOCK];
} shoal_secagg_stream;

void shoal_secagg_stream_init(shoal_secagg_stream *s, const uint8_t key[32]);
/* Keyed by 32 bytes of randombytes_buf. */
void shoal_secagg_stream_init_random(shoal_secagg_stream *s);
uint32_t shoal_secagg_stream_u32(shoal_secagg_stream *s);
uint64_t shoal_secagg_stream_u64(shoal_secagg_stream *s);
/* Uniform in [0, bound), bound >= 1, by rejection (no modulo bias). */
uint32_t shoal_secagg_stream_uniform(shoal_secagg_stream *s, uint32_t bound);
void shoal_secagg_stream_wipe(shoal_secagg_stream *s);

#endif
