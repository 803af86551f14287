/* The device's side of SecAgg / SecAgg+ (see shoal/secagg_protocol.h;
 * Bonawitz et al. CCS 2017, figure 4 and, for the signatures and the
 * consistency round, figure 5). */
#include <sodium.h>
#include <string.h>

#include "secagg_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg_protocol.h"

enum step { STEP_NEW, STEP_ADVERTISED, STEP_SHARED, STEP_MASKED, STEP_CONFIRMED, STEP_DONE };

/* Secrets, in one sodium_malloc block. */
typedef struct secrets {
    uint8_t c_sk[32], s_sk[32], b[32];
    uint8_t sign_sk[SHOAL_SECAGG_SIGN_SECRET_KEY_BYTES];
} secrets;

/* What this device knows of one neighbour. */
typedef struct neighbour {
    uint32_t index;
    int in_u1; /* advertised keys reached us in phase 1 */
    int in_u2; /* its sealed shares reached us in phase 2 */
    uint8_t c_pk[32], s_pk[32];
} neighbour;

/* The shares a neighbour gave us (sodium_malloc'd, one per neighbour). */
typedef struct held_shares {
    shoal_secagg_share s_key, b;
} held_shares;

struct shoal_secagg_client {
    shoal_secagg_config cfg;
    uint32_t index;
    enum step step;
    int malicious;
    secrets *sec;
    held_shares *held; /* degree entries, parallel to nb */
    uint8_t c_pk[32], s_pk[32];
    uint32_t k;
    neighbour *nb; /* ascending by index */
    uint32_t *u3;  /* the survivors this device confirmed (malicious) */
    size_t u3_count;
};

shoal_err shoal_secagg_client_new(const shoal_secagg_config *cfg, uint32_t index,
                                  const uint8_t sign_sk[SHOAL_SECAGG_SIGN_SECRET_KEY_BYTES],
                                  shoal_secagg_client **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: no output");
    *out = NULL;
    shoal_err err = shoal_secagg_config_check(cfg, ei);
    if (err != SHOAL_OK)
        return err;
    if (index >= cfg->n)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: device index %u is not below n = %u", index,
                                 cfg->n);
    if (cfg->verify_keys && !sign_sk)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: the malicious variant needs the device's "
                                 "signing key");
    shoal_secagg_client *c = shoal_calloc(1, sizeof *c);
    if (!c)
        return SHOAL_ENOMEM;
    c->cfg = *cfg;
    c->index = index;
    c->malicious = cfg->verify_keys != NULL;
    c->k = cfg->degree;
    c->sec = sodium_malloc(sizeof *c->sec);
    c->held = sodium_allocarray(c->k, sizeof *c->held);
    c->nb = shoal_calloc(c->k, sizeof *c->nb);
    shoal_secagg_graph *g = NULL;
    if (!c->sec || !c->held || !c->nb || shoal_secagg_graph_for(cfg, &g) != SHOAL_OK) {
        shoal_secagg_client_free(c);
        return SHOAL_ENOMEM;
    }
    sodium_memzero(c->sec, sizeof *c->sec);
    sodium_memzero(c->held, (size_t)c->k * sizeof *c->held);
    uint32_t *idx = shoal_calloc(c->k, sizeof *idx);
    if (!idx || shoal_secagg_graph_neighbors(g, index, idx) != SHOAL_OK) {
        shoal_free(idx);
        shoal_secagg_graph_free(g);
        shoal_secagg_client_free(c);
        return SHOAL_ENOMEM;
    }
    for (uint32_t j = 0; j < c->k; j++)
        c->nb[j].index = idx[j];
    shoal_free(idx);
    shoal_secagg_graph_free(g);
    if (sign_sk)
        memcpy(c->sec->sign_sk, sign_sk, SHOAL_SECAGG_SIGN_SECRET_KEY_BYTES);
    *out = c;
    return SHOAL_OK;
}

void shoal_secagg_client_free(shoal_secagg_client *c)
{
    if (!c)
        return;
    if (c->sec)
        sodium_free(c->sec); /* wipes */
    if (c->held)
        sodium_free(c->held);
    shoal_free(c->nb);
    shoal_free(c->u3);
    sodium_memzero(c, sizeof *c);
    shoal_free(c);
}

/* The slot of neighbour `index`, or -1. */
static long slot_of(const shoal_secagg_client *c, uint32_t index)
{
    size_t lo = 0, hi = c->k;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->nb[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->k && c->nb[lo].index == index ? (long)lo : -1;
}

/* The refusal of a call made outside its phase. */
static shoal_err not_in_phase(const shoal_secagg_client *c, const char *phase, shoal_errinfo *ei)
{
    return shoal_errinfo_set(
        ei, SHOAL_ESTATE, "secure aggregation: device %u is not in the %s phase", c->index, phase);
}

shoal_err shoal_secagg_client_advertise(shoal_secagg_client *c, shoal_secagg_advertise *out,
                                        shoal_errinfo *ei)
{
    if (!c || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    if (c->step != STEP_NEW)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "secure aggregation: device %u already advertised its keys",
                                 c->index);
    shoal_err err = shoal_secagg_keypair(c->c_pk, c->sec->c_sk);
    if (err == SHOAL_OK)
        err = shoal_secagg_keypair(c->s_pk, c->sec->s_sk);
    if (err != SHOAL_OK)
        return shoal_errinfo_set(ei, err, "secure aggregation: making the key pairs failed");
    randombytes_buf(c->sec->b, sizeof c->sec->b);
    memset(out, 0, sizeof *out);
    out->index = c->index;
    memcpy(out->c_pk, c->c_pk, 32);
    memcpy(out->s_pk, c->s_pk, 32);
    if (c->malicious) {
        uint8_t m[SECAGG_ADV_SIGNED_BYTES];
        shoal_secagg_adv_signed_bytes(c->cfg.session_id, c->index, c->c_pk, c->s_pk, m);
        crypto_sign_detached(out->signature, NULL, m, sizeof m, c->sec->sign_sk);
    }
    c->step = STEP_ADVERTISED;
    return SHOAL_OK;
}

/* One public key of the key-sharing round and whose it is (`self`: this
 * device's own). */
typedef struct owned_key {
    const uint8_t *pk;
    uint32_t owner;
    int self;
} owned_key;

static int cmp_key(const void *a, const void *b)
{
    return memcmp(((const owned_key *)a)->pk, ((const owned_key *)b)->pk, 32);
}

/* The neighbours' keys as the server relayed them: each from a neighbour,
 * once, signed in the malicious variant, and no public key twice among
 * them and this device's own (found by sorting: O(k log k), not pairwise).
 * Keys are public: compared with memcmp. */
static shoal_err check_keys(const shoal_secagg_client *c, const shoal_secagg_advertise *keys,
                            size_t count, shoal_errinfo *ei)
{
    uint8_t *seen = shoal_calloc(c->k ? c->k : 1, 1);
    owned_key *all = shoal_mallocarray(2 * count + 2, sizeof *all);
    shoal_err err = !seen || !all ? SHOAL_ENOMEM : SHOAL_OK;
    for (size_t i = 0; err == SHOAL_OK && i < count; i++) {
        const shoal_secagg_advertise *a = &keys[i];
        long slot = slot_of(c, a->index);
        if (slot < 0)
            err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                    "secure aggregation: keys of device %u, which is not a "
                                    "neighbour of device %u",
                                    a->index, c->index);
        else if (seen[slot]++)
            err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                    "secure aggregation: device %u's keys arrived twice", a->index);
        else if (c->malicious &&
                 !shoal_secagg_adv_verify(c->cfg.session_id, a, c->cfg.verify_keys[a->index]))
            err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                    "secure aggregation: device %u's keys are not signed by "
                                    "its registered key",
                                    a->index);
        all[2 * i] = (owned_key){a->c_pk, a->index, 0};
        all[2 * i + 1] = (owned_key){a->s_pk, a->index, 0};
    }
    if (err == SHOAL_OK) {
        all[2 * count] = (owned_key){c->c_pk, c->index, 1};
        all[2 * count + 1] = (owned_key){c->s_pk, c->index, 1};
        qsort(all, 2 * count + 2, sizeof *all, cmp_key);
        for (size_t i = 1; err == SHOAL_OK && i < 2 * count + 2; i++) {
            const owned_key *x = &all[i - 1], *y = &all[i];
            if (memcmp(x->pk, y->pk, 32) != 0)
                continue;
            if (x->self || y->self || x->owner == y->owner)
                err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                        "secure aggregation: device %u's keys repeat a key",
                                        x->self ? y->owner : x->owner);
            else
                err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                        "secure aggregation: devices %u and %u advertise the "
                                        "same key",
                                        x->owner < y->owner ? x->owner : y->owner,
                                        x->owner < y->owner ? y->owner : x->owner);
        }
    }
    shoal_free(seen);
    shoal_free(all);
    return err;
}

shoal_err shoal_secagg_client_share(shoal_secagg_client *c, const shoal_secagg_advertise *keys,
                                    size_t count, shoal_secagg_sealed_shares *out,
                                    size_t *out_count, shoal_errinfo *ei)
{
    if (!c || (!keys && count) || !out || !out_count)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    *out_count = 0;
    if (c->step != STEP_ADVERTISED)
        return not_in_phase(c, "key-sharing", ei);
    /* Check everything before changing anything. */
    shoal_err err = check_keys(c, keys, count, ei);
    if (err != SHOAL_OK)
        return err;
    if (count < c->cfg.threshold)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: only %zu neighbours of device %u advertised "
                                 "keys; the threshold is %u",
                                 count, c->index, c->cfg.threshold);

    /* Shares of s_sk and b at every neighbour's point (index + 1). */
    uint32_t *xs = shoal_calloc(count, sizeof *xs);
    shoal_secagg_share *ss = sodium_allocarray(count, sizeof *ss);
    shoal_secagg_share *bs = sodium_allocarray(count, sizeof *bs);
    uint8_t *plain = sodium_malloc(SHOAL_SECAGG_SHARES_PLAIN_BYTES);
    err = !xs || !ss || !bs || !plain ? SHOAL_ENOMEM : SHOAL_OK;
    for (size_t i = 0; err == SHOAL_OK && i < count; i++)
        xs[i] = keys[i].index + 1;
    if (err == SHOAL_OK)
        err = shoal_secagg_shamir_split(c->sec->s_sk, c->cfg.threshold, xs, count, ss);
    if (err == SHOAL_OK)
        err = shoal_secagg_shamir_split(c->sec->b, c->cfg.threshold, xs, count, bs);
    for (size_t i = 0; err == SHOAL_OK && i < count; i++) {
        uint8_t key[32];
        err = shoal_secagg_agree(c->sec->c_sk, c->c_pk, keys[i].c_pk, c->cfg.session_id,
                                 SHOAL_SECAGG_PURPOSE_TRANSPORT, key);
        if (err != SHOAL_OK) {
            shoal_errinfo_set(ei, err,
                              "secure aggregation: device %u's transport key is not a "
                              "usable X25519 key",
                              keys[i].index);
            break;
        }
        shoal_secagg_put32(plain, c->index);
        shoal_secagg_put32(plain + 4, keys[i].index);
        shoal_secagg_share_pack(&ss[i], plain + 8);
        shoal_secagg_share_pack(&bs[i], plain + 8 + SHOAL_SECAGG_SHARE_BYTES);
        out[i].from = c->index;
        out[i].to = keys[i].index;
        err = shoal_secagg_seal(key, c->cfg.session_id, c->index, keys[i].index, plain,
                                SHOAL_SECAGG_SHARES_PLAIN_BYTES, out[i].sealed);
        sodium_memzero(key, sizeof key);
    }
    shoal_free(xs);
    if (ss)
        sodium_free(ss);
    if (bs)
        sodium_free(bs);
    if (plain)
        sodium_free(plain);
    if (err != SHOAL_OK)
        return err;
    for (size_t i = 0; i < count; i++) {
        neighbour *n = &c->nb[slot_of(c, keys[i].index)];
        n->in_u1 = 1;
        memcpy(n->c_pk, keys[i].c_pk, 32);
        memcpy(n->s_pk, keys[i].s_pk, 32);
    }
    *out_count = count;
    c->step = STEP_SHARED;
    return SHOAL_OK;
}

shoal_err shoal_secagg_client_mask(shoal_secagg_client *c, const shoal_secagg_sealed_shares *in,
                                   size_t count, const uint64_t *input, uint8_t *masked,
                                   shoal_errinfo *ei)
{
    if (!c || (!in && count) || !input || !masked)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    if (c->step != STEP_SHARED)
        return not_in_phase(c, "masking", ei);
    if (count < c->cfg.threshold)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: device %u received shares from %zu "
                                 "neighbours; the threshold is %u",
                                 c->index, count, c->cfg.threshold);
    /* Open and check every message into scratch first; keep nothing of a
     * refused batch. */
    held_shares *got = sodium_allocarray(c->k, sizeof *got);
    uint8_t *plain = sodium_malloc(SHOAL_SECAGG_SHARES_PLAIN_BYTES);
    int *seen = shoal_calloc(c->k, sizeof *seen);
    shoal_err err = !got || !plain || !seen ? SHOAL_ENOMEM : SHOAL_OK;
    for (size_t i = 0; err == SHOAL_OK && i < count; i++) {
        long j = slot_of(c, in[i].from);
        if (in[i].to != c->index || j < 0 || !c->nb[j].in_u1 || seen[j]) {
            err = shoal_errinfo_set(ei, SHOAL_EPROTO,
                                    "secure aggregation: shares from device %u to %u are not "
                                    "for device %u from a neighbour that shared keys, or came "
                                    "twice",
                                    in[i].from, in[i].to, c->index);
            break;
        }
        seen[j] = 1;
        uint8_t key[32];
        err = shoal_secagg_agree(c->sec->c_sk, c->c_pk, c->nb[j].c_pk, c->cfg.session_id,
                                 SHOAL_SECAGG_PURPOSE_TRANSPORT, key);
        if (err == SHOAL_OK)
            err = shoal_secagg_open(key, c->cfg.session_id, in[i].from, c->index, in[i].sealed,
                                    SHOAL_SECAGG_SHARES_SEALED_BYTES, plain);
        sodium_memzero(key, sizeof key);
        if (err == SHOAL_OK &&
            (shoal_secagg_get32(plain) != in[i].from || shoal_secagg_get32(plain + 4) != c->index))
            err = SHOAL_ECRYPTO;
        if (err == SHOAL_OK && (shoal_secagg_share_unpack(plain + 8, &got[j].s_key) != SHOAL_OK ||
                                shoal_secagg_share_unpack(plain + 8 + SHOAL_SECAGG_SHARE_BYTES,
                                                          &got[j].b) != SHOAL_OK ||
                                got[j].s_key.x != c->index + 1 || got[j].b.x != c->index + 1))
            err = SHOAL_ECRYPTO;
        if (err != SHOAL_OK)
            shoal_errinfo_set(ei, err,
                              "secure aggregation: the shares from device %u to device %u do "
                              "not open or are not for this device",
                              in[i].from, c->index);
    }
    shoal_secagg_ring ring = {0};
    if (err == SHOAL_OK)
        err = shoal_secagg_ring_init(&ring, c->cfg.bits, c->cfg.length);
    if (err == SHOAL_OK && shoal_secagg_ring_set(&ring, input) != SHOAL_OK)
        err = shoal_errinfo_set(ei, SHOAL_EINVAL,
                                "secure aggregation: an input element is not below 2^%u",
                                c->cfg.bits);
    /* y = x + PRG(b) + sum over neighbours v in U2 of +-PRG(s_uv): + when
     * this device's index is the smaller. */
    if (err == SHOAL_OK)
        err = shoal_secagg_ring_apply(&ring, c->sec->b, 1);
    for (uint32_t j = 0; err == SHOAL_OK && j < c->k; j++) {
        if (!seen[j])
            continue;
        uint8_t s[32];
        err = shoal_secagg_agree(c->sec->s_sk, c->s_pk, c->nb[j].s_pk, c->cfg.session_id,
                                 SHOAL_SECAGG_PURPOSE_MASK, s);
        if (err == SHOAL_OK)
            err = shoal_secagg_ring_apply(&ring, s, c->index < c->nb[j].index ? 1 : -1);
        sodium_memzero(s, sizeof s);
    }
    if (err == SHOAL_OK) {
        shoal_secagg_ring_to_bytes(&ring, masked);
        for (uint32_t j = 0; j < c->k; j++)
            if (seen[j]) {
                c->nb[j].in_u2 = 1;
                c->held[j] = got[j];
            }
        c->step = STEP_MASKED;
    }
    shoal_secagg_ring_fini(&ring);
    if (got)
        sodium_free(got);
    if (plain)
        sodium_free(plain);
    shoal_free(seen);
    return err;
}

/* U3 must be ascending, hold at least t devices and this one. */
static shoal_err check_u3(const shoal_secagg_client *c, const uint32_t *survivors, size_t count,
                          shoal_errinfo *ei)
{
    int self = 0;
    for (size_t i = 0; i < count; i++) {
        if (survivors[i] >= c->cfg.n || (i > 0 && survivors[i] <= survivors[i - 1]))
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: the survivor list is not a strictly "
                                     "ascending list of device indices");
        self |= survivors[i] == c->index;
    }
    if (count < c->cfg.threshold || !self)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: the survivor list has %zu devices (threshold "
                                 "%u)%s",
                                 count, c->cfg.threshold,
                                 self ? "" : " and leaves this device out");
    return SHOAL_OK;
}

shoal_err shoal_secagg_client_confirm(shoal_secagg_client *c, const uint32_t *survivors,
                                      size_t count, uint8_t signature[SHOAL_SECAGG_SIGNATURE_BYTES],
                                      shoal_errinfo *ei)
{
    if (!c || !survivors || !signature)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    if (c->step != STEP_MASKED || !c->malicious)
        return not_in_phase(c, "consistency", ei);
    shoal_err err = check_u3(c, survivors, count, ei);
    if (err != SHOAL_OK)
        return err;
    size_t len = 0;
    uint8_t *m = shoal_secagg_u3_signed_bytes(c->cfg.session_id, survivors, count, &len);
    c->u3 = shoal_calloc(count, sizeof *c->u3);
    if (!m || !c->u3) {
        shoal_free(m);
        shoal_free(c->u3);
        c->u3 = NULL;
        return SHOAL_ENOMEM;
    }
    crypto_sign_detached(signature, NULL, m, len, c->sec->sign_sk);
    shoal_free(m);
    memcpy(c->u3, survivors, count * sizeof *c->u3);
    c->u3_count = count;
    c->step = STEP_CONFIRMED;
    return SHOAL_OK;
}

static int contains(const uint32_t *sorted, size_t count, uint32_t v)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sorted[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < count && sorted[lo] == v;
}

shoal_err shoal_secagg_client_unmask(shoal_secagg_client *c, const uint32_t *survivors,
                                     size_t count, const uint32_t *signers,
                                     const uint8_t (*signatures)[SHOAL_SECAGG_SIGNATURE_BYTES],
                                     size_t signer_count, shoal_secagg_revealed_share *out,
                                     size_t *out_count, shoal_errinfo *ei)
{
    if (!c || !survivors || !out || !out_count)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    *out_count = 0;
    enum step want = c->malicious ? STEP_CONFIRMED : STEP_MASKED;
    if (c->step != want)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "secure aggregation: device %u is not in the unmasking phase%s",
                                 c->index, c->step == STEP_DONE ? " (it already answered)" : "");
    shoal_err err = check_u3(c, survivors, count, ei);
    if (err != SHOAL_OK)
        return err;
    if (c->malicious) {
        if (count != c->u3_count || memcmp(survivors, c->u3, count * sizeof *survivors) != 0)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: the survivor list changed since device "
                                     "%u confirmed it",
                                     c->index);
        size_t len = 0;
        uint8_t *m = shoal_secagg_u3_signed_bytes(c->cfg.session_id, survivors, count, &len);
        if (!m)
            return SHOAL_ENOMEM;
        size_t valid = 0;
        for (size_t i = 0; i < signer_count && signers && signatures; i++) {
            int dup = 0;
            for (size_t j = 0; j < i; j++)
                dup |= signers[j] == signers[i];
            if (!dup && contains(survivors, count, signers[i]) &&
                crypto_sign_verify_detached(signatures[i], m, len,
                                            c->cfg.verify_keys[signers[i]]) == 0)
                valid++;
        }
        shoal_free(m);
        if (valid < c->cfg.threshold)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: %zu valid confirmations of the survivor "
                                     "list; the threshold is %u",
                                     valid, c->cfg.threshold);
    }
    size_t o = 0;
    for (uint32_t j = 0; j < c->k; j++) {
        if (!c->nb[j].in_u2)
            continue;
        int alive = contains(survivors, count, c->nb[j].index);
        out[o].of = c->nb[j].index;
        out[o].kind = alive ? SHOAL_SECAGG_SHARE_SELF_MASK : SHOAL_SECAGG_SHARE_MASK_KEY;
        shoal_secagg_share_pack(alive ? &c->held[j].b : &c->held[j].s_key, out[o].share);
        o++;
    }
    /* Nothing more to reveal, ever: wipe what is held. */
    sodium_memzero(c->held, (size_t)c->k * sizeof *c->held);
    *out_count = o;
    c->step = STEP_DONE;
    return SHOAL_OK;
}
