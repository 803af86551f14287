/* The server's side of one SecAgg / SecAgg+ group (see
 * shoal/secagg_protocol.h; Bonawitz et al. CCS 2017, figures 4 and 5;
 * Bell et al. CCS 2020 for the sparse graph). It relays keys and sealed
 * shares, adds masked inputs as they arrive, and at the end rebuilds the
 * secrets it is entitled to and removes their masks. */
#include <sodium.h>
#include <string.h>

#include "secagg_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg_protocol.h"

/* How far each device got: the last phase it answered. */
enum reached { R_NONE, R_ADVERTISED, R_SHARED, R_MASKED, R_CONFIRMED, R_UNMASKED };

typedef struct device {
    enum reached reached;
    shoal_secagg_advertise adv;
    shoal_secagg_sealed_shares *inbox; /* sealed shares addressed to it */
    uint32_t inbox_count;
    shoal_secagg_share *revealed; /* shares of its secret other devices revealed
                                   * (degree places in the server's revealed_all) */
    uint32_t revealed_count;
} device;

struct shoal_secagg_server {
    shoal_secagg_config cfg;
    shoal_secagg_phase phase;
    int malicious;
    shoal_secagg_graph *graph;
    device *dev;
    uint32_t participants[SHOAL_SECAGG_PHASE_DONE]; /* per phase */
    uint32_t *u3;
    size_t u3_count;
    uint32_t *u4;
    uint8_t (*u4_sig)[SHOAL_SECAGG_SIGNATURE_BYTES];
    size_t u4_count;
    shoal_secagg_ring sum;
    uint64_t *result;
    /* Every device's revealed shares, degree places each, in one guarded
     * allocation made at the first unmask answer: one mapping whatever n
     * (a sodium_malloc per device would take three memory mappings each
     * and run into the kernel's limit of about 65,000 near n = 20,000). */
    shoal_secagg_share *revealed_all;
    uint32_t *nb;    /* scratch: one device's neighbours (degree entries) */
    uint32_t *stamp; /* per device: the last `gen` that marked it */
    uint32_t gen;
    /* Every advertised public key, by a keyed hash (SipHash, so that keys
     * chosen to collide cannot slow the table down): entry 2 i + w + 1 is
     * device i's c_pk (w = 0) or s_pk (w = 1); 0 is empty. */
    uint32_t *key_slots;
    size_t key_cap; /* a power of two >= 4 n */
    uint8_t key_hash[crypto_shorthash_KEYBYTES];
};

static const char *const phase_names[] = {"advertise", "share", "mask",  "confirm",
                                          "unmask",    "done",  "failed"};

const char *shoal_secagg_phase_name(shoal_secagg_phase phase)
{
    return (unsigned)phase <= SHOAL_SECAGG_PHASE_FAILED ? phase_names[phase] : "unknown";
}

shoal_err shoal_secagg_server_new(const shoal_secagg_config *cfg, shoal_secagg_server **out,
                                  shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: no output");
    *out = NULL;
    shoal_err err = shoal_secagg_config_check(cfg, ei);
    if (err != SHOAL_OK)
        return err;
    shoal_secagg_server *s = shoal_calloc(1, sizeof *s);
    if (!s)
        return SHOAL_ENOMEM;
    s->cfg = *cfg;
    s->malicious = cfg->verify_keys != NULL;
    s->dev = shoal_calloc(cfg->n, sizeof *s->dev);
    s->nb = shoal_calloc(cfg->degree, sizeof *s->nb);
    s->stamp = shoal_calloc(cfg->n, sizeof *s->stamp);
    for (s->key_cap = 8; s->key_cap < 4 * (size_t)cfg->n; s->key_cap *= 2)
        ;
    s->key_slots = shoal_calloc(s->key_cap, sizeof *s->key_slots);
    randombytes_buf(s->key_hash, sizeof s->key_hash);
    if (!s->dev || !s->nb || !s->stamp || !s->key_slots ||
        shoal_secagg_graph_for(cfg, &s->graph) != SHOAL_OK ||
        shoal_secagg_ring_init(&s->sum, cfg->bits, cfg->length) != SHOAL_OK) {
        shoal_secagg_server_free(s);
        return SHOAL_ENOMEM;
    }
    *out = s;
    return SHOAL_OK;
}

void shoal_secagg_server_free(shoal_secagg_server *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; s->dev && i < s->cfg.n; i++)
        shoal_free(s->dev[i].inbox);
    if (s->revealed_all)
        sodium_free(s->revealed_all); /* wipes them */
    shoal_free(s->dev);
    shoal_free(s->nb);
    shoal_free(s->stamp);
    shoal_free(s->key_slots);
    shoal_secagg_graph_free(s->graph);
    shoal_free(s->u3);
    shoal_free(s->u4);
    shoal_free(s->u4_sig);
    shoal_secagg_ring_fini(&s->sum);
    shoal_free(s->result);
    shoal_free(s);
}

shoal_secagg_phase shoal_secagg_server_phase(const shoal_secagg_server *s)
{
    return s->phase;
}

uint32_t shoal_secagg_server_participants(const shoal_secagg_server *s, shoal_secagg_phase phase)
{
    return (unsigned)phase < SHOAL_SECAGG_PHASE_DONE ? s->participants[phase] : 0;
}

/* The reach a device needs to answer the current phase. */
static enum reached needed(const shoal_secagg_server *s)
{
    switch (s->phase) {
    case SHOAL_SECAGG_PHASE_ADVERTISE:
        return R_NONE;
    case SHOAL_SECAGG_PHASE_SHARE:
        return R_ADVERTISED;
    case SHOAL_SECAGG_PHASE_MASK:
        return R_SHARED;
    case SHOAL_SECAGG_PHASE_CONFIRM:
        return R_MASKED;
    case SHOAL_SECAGG_PHASE_UNMASK:
        return s->malicious ? R_CONFIRMED : R_MASKED;
    default:
        return R_UNMASKED + 1;
    }
}

int shoal_secagg_server_phase_complete(const shoal_secagg_server *s)
{
    if (s->phase >= SHOAL_SECAGG_PHASE_DONE)
        return 0;
    enum reached need = needed(s);
    for (uint32_t i = 0; i < s->cfg.n; i++)
        if (s->dev[i].reached == need)
            return 0; /* still in the group, not answered yet */
    return 1;
}

/* The table entry of public key `pk`: the one that holds it, or the empty
 * one where it would go. Linear probing; the table is never more than half
 * full (2 n keys in at least 4 n entries). */
static uint32_t *key_slot(shoal_secagg_server *s, const uint8_t pk[32])
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, pk, 32, s->key_hash);
    size_t i = (size_t)shoal_secagg_get32(h) & (s->key_cap - 1);
    for (;; i = (i + 1) & (s->key_cap - 1)) {
        uint32_t e = s->key_slots[i];
        if (e == 0)
            return &s->key_slots[i];
        const shoal_secagg_advertise *a = &s->dev[(e - 1) / 2].adv;
        if (memcmp((e - 1) % 2 ? a->s_pk : a->c_pk, pk, 32) == 0)
            return &s->key_slots[i];
    }
}

/* u's neighbours in the graph, in s->nb (degree of them). */
static const uint32_t *neighbours(const shoal_secagg_server *s, uint32_t u)
{
    /* Cannot fail: u < n and nb holds degree entries. */
    if (shoal_secagg_graph_neighbors(s->graph, u, s->nb) != SHOAL_OK)
        return NULL;
    return s->nb;
}

/* A new mark: devices stamped with it are those seen in this message. */
static uint32_t new_mark(shoal_secagg_server *s)
{
    if (++s->gen == 0) { /* wrapped: forget every old mark */
        memset(s->stamp, 0, s->cfg.n * sizeof *s->stamp);
        s->gen = 1;
    }
    return s->gen;
}

/* Checks that `from` may answer phase `phase` now. */
static shoal_err admit(const shoal_secagg_server *s, shoal_secagg_phase phase, uint32_t from,
                       shoal_errinfo *ei)
{
    if (from >= s->cfg.n)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: device index %u is not below n = %u", from,
                                 s->cfg.n);
    if (s->phase != phase)
        return shoal_errinfo_set(
            ei, SHOAL_ESTATE, "secure aggregation: a %s message from device %u in the %s phase",
            shoal_secagg_phase_name(phase), from, shoal_secagg_phase_name(s->phase));
    enum reached r = s->dev[from].reached, need = needed(s);
    if (r != need)
        return shoal_errinfo_set(ei, SHOAL_ESTATE, "secure aggregation: device %u %s the %s phase",
                                 from, r > need ? "already answered" : "dropped out before",
                                 shoal_secagg_phase_name(phase));
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_on_advertise(shoal_secagg_server *s,
                                           const shoal_secagg_advertise *msg, shoal_errinfo *ei)
{
    if (!s || !msg)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    shoal_err err = admit(s, SHOAL_SECAGG_PHASE_ADVERTISE, msg->index, ei);
    if (err != SHOAL_OK)
        return err;
    if (sodium_memcmp(msg->c_pk, msg->s_pk, 32) == 0)
        return shoal_errinfo_set(
            ei, SHOAL_EPROTO, "secure aggregation: device %u advertises one key twice", msg->index);
    for (int w = 0; w < 2; w++) {
        uint32_t *slot = key_slot(s, w ? msg->s_pk : msg->c_pk);
        if (*slot)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u advertises a key device %u "
                                     "already advertised",
                                     msg->index, (*slot - 1) / 2);
    }
    if (s->malicious &&
        !shoal_secagg_adv_verify(s->cfg.session_id, msg, s->cfg.verify_keys[msg->index]))
        return shoal_errinfo_set(ei, SHOAL_EAUTH,
                                 "secure aggregation: device %u's keys are not signed by its "
                                 "registered key",
                                 msg->index);
    s->dev[msg->index].adv = *msg;
    s->dev[msg->index].reached = R_ADVERTISED;
    *key_slot(s, msg->c_pk) = 2 * msg->index + 1;
    *key_slot(s, msg->s_pk) = 2 * msg->index + 2;
    s->participants[SHOAL_SECAGG_PHASE_ADVERTISE]++;
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_keys_for(const shoal_secagg_server *s, uint32_t device_index,
                                       shoal_secagg_advertise *out, size_t *count)
{
    if (!s || !out || !count || device_index >= s->cfg.n)
        return SHOAL_EINVAL;
    *count = 0;
    if (s->phase != SHOAL_SECAGG_PHASE_SHARE)
        return SHOAL_ESTATE;
    const uint32_t *nb = neighbours(s, device_index);
    for (uint32_t i = 0; nb && i < s->cfg.degree; i++)
        if (s->dev[nb[i]].reached >= R_ADVERTISED)
            out[(*count)++] = s->dev[nb[i]].adv;
    return SHOAL_OK;
}

/* Neighbours of `u` that advertised keys. */
static uint32_t advertised_neighbours(const shoal_secagg_server *s, uint32_t u)
{
    const uint32_t *nb = neighbours(s, u);
    uint32_t n = 0;
    for (uint32_t i = 0; nb && i < s->cfg.degree; i++)
        n += s->dev[nb[i]].reached >= R_ADVERTISED;
    return n;
}

shoal_err shoal_secagg_server_on_shares(shoal_secagg_server *s, uint32_t from,
                                        const shoal_secagg_sealed_shares *msgs, size_t count,
                                        shoal_errinfo *ei)
{
    if (!s || (!msgs && count))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    shoal_err err = admit(s, SHOAL_SECAGG_PHASE_SHARE, from, ei);
    if (err != SHOAL_OK)
        return err;
    uint32_t want = advertised_neighbours(s, from);
    if (count != want)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: device %u sent shares for %zu devices; it "
                                 "has %u neighbours with keys",
                                 from, count, want);
    const uint32_t mark = new_mark(s);
    for (size_t i = 0; i < count; i++) {
        uint32_t to = msgs[i].to;
        if (msgs[i].from != from || to >= s->cfg.n || to == from ||
            s->dev[to].reached < R_ADVERTISED || !shoal_secagg_graph_adjacent(s->graph, from, to))
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u sent shares from %u to %u: "
                                     "not its own, or not to a neighbour with keys",
                                     from, msgs[i].from, to);
        if (s->stamp[to] == mark)
            return shoal_errinfo_set(
                ei, SHOAL_EPROTO, "secure aggregation: device %u sent two shares to %u", from, to);
        s->stamp[to] = mark;
    }
    /* Every inbox takes one more; grow them all first so nothing is half
     * delivered on ENOMEM. */
    for (size_t i = 0; i < count; i++) {
        device *d = &s->dev[msgs[i].to];
        if (!d->inbox) {
            d->inbox = shoal_calloc(s->cfg.degree, sizeof *d->inbox);
            if (!d->inbox)
                return SHOAL_ENOMEM;
        }
    }
    for (size_t i = 0; i < count; i++) {
        device *d = &s->dev[msgs[i].to];
        d->inbox[d->inbox_count++] = msgs[i];
    }
    s->dev[from].reached = R_SHARED;
    s->participants[SHOAL_SECAGG_PHASE_SHARE]++;
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_inbox(const shoal_secagg_server *s, uint32_t device_index,
                                    const shoal_secagg_sealed_shares **out, size_t *count)
{
    if (!s || !out || !count || device_index >= s->cfg.n)
        return SHOAL_EINVAL;
    *out = NULL;
    *count = 0;
    if (s->phase != SHOAL_SECAGG_PHASE_MASK)
        return SHOAL_ESTATE;
    const device *d = &s->dev[device_index];
    /* Only shares from devices that stayed until the end of phase 1. */
    *out = d->inbox;
    *count = d->inbox_count;
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_on_masked(shoal_secagg_server *s, uint32_t from,
                                        const uint8_t *masked, size_t len, shoal_errinfo *ei)
{
    if (!s || !masked)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    shoal_err err = admit(s, SHOAL_SECAGG_PHASE_MASK, from, ei);
    if (err != SHOAL_OK)
        return err;
    size_t want = s->cfg.length * shoal_secagg_ring_bytes(s->cfg.bits);
    if (len != want)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "secure aggregation: device %u's masked input has %zu bytes, not "
                                 "%zu",
                                 from, len, want);
    /* Every element must be a ring element: its unused high bits zero. */
    const size_t w = shoal_secagg_ring_bytes(s->cfg.bits);
    if (s->cfg.bits != 8 * w) {
        for (size_t i = 0; i < s->cfg.length; i++) {
            uint64_t v = shoal_secagg_get32(masked + i * w);
            if (w == 8)
                v |= (uint64_t)shoal_secagg_get32(masked + i * w + 4) << 32;
            if (v >> s->cfg.bits)
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "secure aggregation: device %u's masked element %zu is "
                                         "not below 2^%u",
                                         from, i, s->cfg.bits);
        }
    }
    shoal_secagg_ring_add_bytes(&s->sum, masked);
    s->dev[from].reached = R_MASKED;
    s->participants[SHOAL_SECAGG_PHASE_MASK]++;
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_on_confirm(shoal_secagg_server *s, uint32_t from,
                                         const uint8_t signature[SHOAL_SECAGG_SIGNATURE_BYTES],
                                         shoal_errinfo *ei)
{
    if (!s || !signature)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    shoal_err err = admit(s, SHOAL_SECAGG_PHASE_CONFIRM, from, ei);
    if (err != SHOAL_OK)
        return err;
    size_t len = 0;
    uint8_t *m = shoal_secagg_u3_signed_bytes(s->cfg.session_id, s->u3, s->u3_count, &len);
    if (!m)
        return SHOAL_ENOMEM;
    int ok = crypto_sign_verify_detached(signature, m, len, s->cfg.verify_keys[from]) == 0;
    shoal_free(m);
    if (!ok)
        return shoal_errinfo_set(ei, SHOAL_EAUTH,
                                 "secure aggregation: device %u's confirmation is not its "
                                 "signature of the survivor list",
                                 from);
    s->u4[s->u4_count] = from;
    memcpy(s->u4_sig[s->u4_count], signature, SHOAL_SECAGG_SIGNATURE_BYTES);
    s->u4_count++;
    s->dev[from].reached = R_CONFIRMED;
    s->participants[SHOAL_SECAGG_PHASE_CONFIRM]++;
    return SHOAL_OK;
}

const uint32_t *shoal_secagg_server_survivors(const shoal_secagg_server *s, size_t *count)
{
    *count = s->u3_count;
    return s->u3;
}

size_t shoal_secagg_server_signatures(const shoal_secagg_server *s, const uint32_t **signers,
                                      const uint8_t (**signatures)[SHOAL_SECAGG_SIGNATURE_BYTES])
{
    *signers = s->u4;
    *signatures = (const uint8_t(*)[SHOAL_SECAGG_SIGNATURE_BYTES])s->u4_sig;
    return s->u4_count;
}

/* Did `v` mask with `d`? Both reached share (so each got the other's
 * sealed shares) and they are neighbours. */
static int masked_with(const shoal_secagg_server *s, uint32_t v, uint32_t d)
{
    return v != d && s->dev[v].reached >= R_SHARED && s->dev[d].reached >= R_SHARED &&
           shoal_secagg_graph_adjacent(s->graph, v, d);
}

shoal_err shoal_secagg_server_on_unmask(shoal_secagg_server *s, uint32_t from,
                                        const shoal_secagg_revealed_share *shares, size_t count,
                                        shoal_errinfo *ei)
{
    if (!s || (!shares && count))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    shoal_err err = admit(s, SHOAL_SECAGG_PHASE_UNMASK, from, ei);
    if (err != SHOAL_OK)
        return err;
    const uint32_t mark = new_mark(s);
    for (size_t i = 0; i < count; i++) {
        const shoal_secagg_revealed_share *r = &shares[i];
        uint32_t of = r->of;
        if (of >= s->cfg.n || !masked_with(s, from, of))
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u revealed a share of device %u, "
                                     "which did not share with it",
                                     from, of);
        /* A survivor's self-mask seed, or a dropped device's mask key:
         * never the other, so no device is ever both unmasked and
         * revealed. */
        shoal_secagg_share_kind want = s->dev[of].reached >= R_MASKED ? SHOAL_SECAGG_SHARE_SELF_MASK
                                                                      : SHOAL_SECAGG_SHARE_MASK_KEY;
        if (r->kind != want)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u revealed the wrong kind of "
                                     "share of device %u (it %s)",
                                     from, of,
                                     want == SHOAL_SECAGG_SHARE_SELF_MASK ? "survived" : "dropped");
        shoal_secagg_share sh;
        if (shoal_secagg_share_unpack(r->share, &sh) != SHOAL_OK || sh.x != from + 1)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u's share of device %u is "
                                     "malformed or not at its own point",
                                     from, of);
        sodium_memzero(&sh, sizeof sh);
        if (s->stamp[of] == mark)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "secure aggregation: device %u revealed two shares of device "
                                     "%u",
                                     from, of);
        s->stamp[of] = mark;
    }
    for (size_t i = 0; i < count; i++) {
        device *d = &s->dev[shares[i].of];
        if (!s->revealed_all) {
            s->revealed_all =
                sodium_allocarray((size_t)s->cfg.n * s->cfg.degree, sizeof *s->revealed_all);
            if (!s->revealed_all)
                return SHOAL_ENOMEM;
        }
        if (!d->revealed)
            d->revealed = s->revealed_all + (size_t)shares[i].of * s->cfg.degree;
    }
    for (size_t i = 0; i < count; i++) {
        device *d = &s->dev[shares[i].of];
        if (shoal_secagg_share_unpack(shares[i].share, &d->revealed[d->revealed_count]) == SHOAL_OK)
            d->revealed_count++;
    }
    s->dev[from].reached = R_UNMASKED;
    s->participants[SHOAL_SECAGG_PHASE_UNMASK]++;
    return SHOAL_OK;
}

static shoal_err fail_group(shoal_secagg_server *s, shoal_err err)
{
    s->phase = SHOAL_SECAGG_PHASE_FAILED;
    return err;
}

/* Rebuilds the secrets and removes the masks from the sum. */
static shoal_err unmask(shoal_secagg_server *s, shoal_errinfo *ei)
{
    uint8_t *secret = sodium_malloc(32);
    shoal_secagg_lagrange *weights = NULL;
    if (!secret || shoal_secagg_lagrange_new(s->cfg.threshold, &weights) != SHOAL_OK) {
        sodium_free(secret);
        return SHOAL_ENOMEM;
    }
    shoal_err err = SHOAL_OK;
    for (uint32_t d = 0; err == SHOAL_OK && d < s->cfg.n; d++) {
        device *dv = &s->dev[d];
        if (dv->reached < R_SHARED)
            continue; /* never masked with anyone */
        int survived = dv->reached >= R_MASKED;
        if (dv->revealed_count < s->cfg.threshold) {
            err = shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                    "secure aggregation: only %u shares of device %u's %s came "
                                    "back; the threshold is %u",
                                    dv->revealed_count, d, survived ? "self mask" : "mask key",
                                    s->cfg.threshold);
            break;
        }
        /* t shares rebuild the secret; one more, when there is one, checks
         * them (a tampered share then fails the group instead of skewing
         * the sum). The weights are reused while the holders are the same
         * (shoal_secagg_lagrange), so a group of n costs O(n t), not
         * O(n t^2). */
        uint32_t use =
            dv->revealed_count > s->cfg.threshold ? s->cfg.threshold + 1 : s->cfg.threshold;
        err = shoal_secagg_shamir_combine_with(weights, dv->revealed, use, secret);
        if (err != SHOAL_OK) {
            shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                              "secure aggregation: the shares of device %u's %s disagree", d,
                              survived ? "self mask" : "mask key");
            err = SHOAL_ECRYPTO;
            break;
        }
        if (survived) {
            err = shoal_secagg_ring_apply(&s->sum, secret, -1);
            continue;
        }
        /* A dropped device: its key must be the one it advertised; then
         * remove the pairwise masks its surviving neighbours added. */
        uint8_t pk[32];
        if (crypto_scalarmult_base(pk, secret) != 0 || sodium_memcmp(pk, dv->adv.s_pk, 32) != 0) {
            err = shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                    "secure aggregation: the rebuilt mask key of device %u does "
                                    "not match the key it advertised",
                                    d);
            break;
        }
        const uint32_t *nb = neighbours(s, d);
        for (uint32_t i = 0; nb && err == SHOAL_OK && i < s->cfg.degree; i++) {
            uint32_t v = nb[i];
            if (s->dev[v].reached < R_MASKED || !masked_with(s, v, d))
                continue;
            uint8_t seed[32];
            err = shoal_secagg_agree(secret, dv->adv.s_pk, s->dev[v].adv.s_pk, s->cfg.session_id,
                                     SHOAL_SECAGG_PURPOSE_MASK, seed);
            /* v added +PRG when v < d, so take it away the other way. */
            if (err == SHOAL_OK)
                err = shoal_secagg_ring_apply(&s->sum, seed, v < d ? -1 : 1);
            sodium_memzero(seed, sizeof seed);
        }
    }
    shoal_secagg_lagrange_free(weights);
    sodium_free(secret);
    return err;
}

shoal_err shoal_secagg_server_close_phase(shoal_secagg_server *s, shoal_errinfo *ei)
{
    if (!s)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation: NULL argument");
    if (s->phase >= SHOAL_SECAGG_PHASE_DONE)
        return shoal_errinfo_set(ei, SHOAL_ESTATE, "secure aggregation: the group is %s",
                                 shoal_secagg_phase_name(s->phase));
    uint32_t got = s->participants[s->phase];
    if (got < s->cfg.threshold) {
        shoal_errinfo_set(ei, SHOAL_ELIMIT,
                          "secure aggregation: %u devices answered the %s phase; the threshold "
                          "is %u, so the group fails",
                          got, shoal_secagg_phase_name(s->phase), s->cfg.threshold);
        return fail_group(s, SHOAL_ELIMIT);
    }
    switch (s->phase) {
    case SHOAL_SECAGG_PHASE_ADVERTISE:
        s->phase = SHOAL_SECAGG_PHASE_SHARE;
        break;
    case SHOAL_SECAGG_PHASE_SHARE:
        s->phase = SHOAL_SECAGG_PHASE_MASK;
        break;
    case SHOAL_SECAGG_PHASE_MASK: {
        s->u3 = shoal_calloc(got, sizeof *s->u3);
        if (!s->u3)
            return SHOAL_ENOMEM;
        for (uint32_t i = 0; i < s->cfg.n; i++)
            if (s->dev[i].reached >= R_MASKED)
                s->u3[s->u3_count++] = i;
        if (s->malicious) {
            s->u4 = shoal_calloc(got, sizeof *s->u4);
            s->u4_sig = shoal_calloc(got, sizeof *s->u4_sig);
            if (!s->u4 || !s->u4_sig)
                return SHOAL_ENOMEM;
            s->phase = SHOAL_SECAGG_PHASE_CONFIRM;
        } else {
            s->phase = SHOAL_SECAGG_PHASE_UNMASK;
        }
        break;
    }
    case SHOAL_SECAGG_PHASE_CONFIRM:
        s->phase = SHOAL_SECAGG_PHASE_UNMASK;
        break;
    case SHOAL_SECAGG_PHASE_UNMASK: {
        shoal_err err = unmask(s, ei);
        if (err != SHOAL_OK)
            return fail_group(s, err);
        s->result = shoal_calloc(s->cfg.length, sizeof *s->result);
        if (!s->result)
            return SHOAL_ENOMEM;
        shoal_secagg_ring_to_u64(&s->sum, s->result);
        s->phase = SHOAL_SECAGG_PHASE_DONE;
        break;
    }
    default:
        break;
    }
    return SHOAL_OK;
}

shoal_err shoal_secagg_server_result(const shoal_secagg_server *s, const uint64_t **sum,
                                     uint32_t *contributors)
{
    if (!s || !sum || !contributors)
        return SHOAL_EINVAL;
    if (s->phase != SHOAL_SECAGG_PHASE_DONE)
        return SHOAL_ESTATE;
    *sum = s->result;
    *contributors = (uint32_t)s->u3_count;
    return SHOAL_OK;
}
