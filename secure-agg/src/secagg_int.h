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

/* ---- ring vectors ----------------------------------------------------------------------
 * A vector of Z_(2^bits): 32-bit words for bits <= 32, 64-bit otherwise
 * (exactly one of w32, w64 is set). */
#include "shoal/err.h"

typedef struct shoal_secagg_ring {
    unsigned bits;
    size_t n;
    uint32_t *w32;
    uint64_t *w64;
} shoal_secagg_ring;

shoal_err shoal_secagg_ring_init(shoal_secagg_ring *r, unsigned bits, size_t n);
void shoal_secagg_ring_fini(shoal_secagg_ring *r);
/* r = x (each x[i] < 2^bits, checked: SHOAL_EINVAL). */
shoal_err shoal_secagg_ring_set(shoal_secagg_ring *r, const uint64_t *x);
/* r += the little-endian words in bytes (n x ring_bytes). */
void shoal_secagg_ring_add_bytes(shoal_secagg_ring *r, const uint8_t *bytes);
/* r += sign x PRG(seed). */
shoal_err shoal_secagg_ring_apply(shoal_secagg_ring *r, const uint8_t seed[32], int sign);
void shoal_secagg_ring_to_bytes(const shoal_secagg_ring *r, uint8_t *out);
void shoal_secagg_ring_to_u64(const shoal_secagg_ring *r, uint64_t *out);

/* Little-endian 32-bit words. */
static inline void shoal_secagg_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t shoal_secagg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The graph both sides build from a config (complete for degree n - 1). */
struct shoal_secagg_graph;
struct shoal_secagg_config;
shoal_err shoal_secagg_graph_for(const struct shoal_secagg_config *cfg,
                                 struct shoal_secagg_graph **out);

/* What a device signs: its advertisement, and U3. */
#define SECAGG_ADV_SIGNED_BYTES (16 + 32 + 4 + 32 + 32)
void shoal_secagg_adv_signed_bytes(const uint8_t session_id[32], uint32_t index,
                                   const uint8_t c_pk[32], const uint8_t s_pk[32],
                                   uint8_t out[SECAGG_ADV_SIGNED_BYTES]);
/* 1 when a's signature verifies under verify_key, else 0. */
struct shoal_secagg_advertise;
int shoal_secagg_adv_verify(const uint8_t session_id[32], const struct shoal_secagg_advertise *a,
                            const uint8_t verify_key[32]);
/* 1 when a and b share any public key (in either role), else 0. */
int shoal_secagg_adv_collide(const struct shoal_secagg_advertise *a,
                             const struct shoal_secagg_advertise *b);
/* U3's signed form, written into a malloc'd buffer (*len bytes); NULL on
 * allocation failure. */
uint8_t *shoal_secagg_u3_signed_bytes(const uint8_t session_id[32], const uint32_t *survivors,
                                      size_t count, size_t *len);

#endif
