/* The secure-aggregation messages to and from the state machines' structs
 * (shoal/secagg_wire.h). */
#include "shoal/secagg_wire.h"

#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"

_Static_assert(SHOAL_PROTOCOL_SECAGG_KEY_BYTES == SHOAL_SECAGG_PUBLIC_KEY_BYTES &&
                   SHOAL_PROTOCOL_SECAGG_KEY_BYTES == SHOAL_SECAGG_SESSION_ID_BYTES,
               "wire key and session sizes differ from secure-agg's");
_Static_assert(SHOAL_PROTOCOL_SECAGG_SEAL_BYTES == SHOAL_SECAGG_SHARES_SEALED_BYTES,
               "wire sealed-share size differs from secure-agg's");
_Static_assert(SHOAL_PROTOCOL_SECAGG_SHARE_BYTES == SHOAL_SECAGG_SHARE_BYTES,
               "wire share size differs from secure-agg's");
_Static_assert(SHOAL_PROTOCOL_SECAGG_SIG_BYTES == SHOAL_SECAGG_SIGNATURE_BYTES,
               "wire signature size differs from secure-agg's");

static ProtobufCBinaryData bin(const uint8_t *p, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *)(uintptr_t)p};
    return b;
}

shoal_err shoal_secagg_wire_plan(const Shoal__SecureAggregation *sa, shoal_secagg_config *cfg,
                                 uint32_t *index, shoal_secagg_fixed *fx, shoal_errinfo *ei)
{
    if (!sa || !cfg || !index || !fx)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_secagg_wire_plan: NULL argument");
    if (sa->graph_seed.len != sizeof cfg->graph_seed ||
        sa->session_id.len != sizeof cfg->session_id)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "Plan.secure_aggregation: graph_seed and session_id must be %zu "
                                 "bytes",
                                 sizeof cfg->session_id);
    memset(cfg, 0, sizeof *cfg);
    cfg->n = sa->group_size;
    cfg->threshold = sa->threshold;
    cfg->degree = sa->degree;
    memcpy(cfg->graph_seed, sa->graph_seed.data, sizeof cfg->graph_seed);
    memcpy(cfg->session_id, sa->session_id.data, sizeof cfg->session_id);
    cfg->bits = sa->ring_bits;
    cfg->length = (size_t)sa->vector_length;
    if ((uint64_t)cfg->length != sa->vector_length)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "Plan.secure_aggregation.vector_length: too long for this host");
    *index = sa->index;
    shoal_err err = shoal_secagg_config_check(cfg, ei);
    if (err)
        return err;
    memset(fx, 0, sizeof *fx);
    fx->clip = sa->clip;
    fx->max_weight = sa->max_weight;
    fx->max_contributors = sa->group_size;
    fx->bits = sa->ring_bits;
    return shoal_secagg_fixed_plan(fx, ei);
}

void shoal_secagg_wire_plan_fill(Shoal__SecureAggregation *sa, const shoal_secagg_config *cfg,
                                 uint32_t index, const shoal_secagg_fixed *fx, int plus,
                                 uint64_t phase_timeout_ms)
{
    Shoal__SecureAggregation m = SHOAL__SECURE_AGGREGATION__INIT;
    m.has_mode = m.has_group_size = m.has_index = m.has_threshold = m.has_degree = 1;
    m.mode = plus ? SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG_PLUS
                  : SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG;
    m.group_size = cfg->n;
    m.index = index;
    m.threshold = cfg->threshold;
    m.degree = cfg->degree;
    m.has_graph_seed = m.has_session_id = 1;
    m.graph_seed = bin(cfg->graph_seed, sizeof cfg->graph_seed);
    m.session_id = bin(cfg->session_id, sizeof cfg->session_id);
    m.has_ring_bits = m.has_vector_length = m.has_clip = m.has_max_weight = 1;
    m.ring_bits = cfg->bits;
    m.vector_length = cfg->length;
    m.clip = (float)fx->clip;
    m.max_weight = fx->max_weight;
    m.has_phase_timeout_ms = 1;
    m.phase_timeout_ms = phase_timeout_ms;
    *sa = m;
}

/* The protocol wants every list in ascending order of its varying index;
 * the state machines keep their own order. */
static int by_index(const void *a, const void *b)
{
    uint32_t x = (*(Shoal__SecAggKey *const *)a)->index, y = (*(Shoal__SecAggKey *const *)b)->index;
    return (x > y) - (x < y);
}

static int by_to(const void *a, const void *b)
{
    uint32_t x = (*(Shoal__SecAggSealedShare *const *)a)->to;
    uint32_t y = (*(Shoal__SecAggSealedShare *const *)b)->to;
    return (x > y) - (x < y);
}

static int by_from(const void *a, const void *b)
{
    uint32_t x = (*(Shoal__SecAggSealedShare *const *)a)->from;
    uint32_t y = (*(Shoal__SecAggSealedShare *const *)b)->from;
    return (x > y) - (x < y);
}

static int by_of(const void *a, const void *b)
{
    uint32_t x = (*(Shoal__SecAggRevealedShare *const *)a)->of;
    uint32_t y = (*(Shoal__SecAggRevealedShare *const *)b)->of;
    return (x > y) - (x < y);
}

static shoal_err encode(const shoal_codec *codec, Shoal__Envelope__BodyCase body, void *msg,
                        uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    Shoal__Envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = body;
    /* Every member of the body oneof shares one pointer. */
    env.secagg_advertise = msg;
    return shoal_envelope_encode(codec, &env, out, out_len, ei);
}

static void key_set(Shoal__SecAggKey *k, const shoal_secagg_advertise *adv)
{
    Shoal__SecAggKey m = SHOAL__SEC_AGG_KEY__INIT;
    m.has_index = m.has_c_pk = m.has_s_pk = 1;
    m.index = adv->index;
    m.c_pk = bin(adv->c_pk, sizeof adv->c_pk);
    m.s_pk = bin(adv->s_pk, sizeof adv->s_pk);
    *k = m;
}

void shoal_secagg_wire_key_get(const Shoal__SecAggKey *k, shoal_secagg_advertise *out)
{
    memset(out, 0, sizeof *out);
    out->index = k->index;
    memcpy(out->c_pk, k->c_pk.data, sizeof out->c_pk);
    memcpy(out->s_pk, k->s_pk.data, sizeof out->s_pk);
    if (k->has_signature)
        memcpy(out->signature, k->signature.data, sizeof out->signature);
}

shoal_err shoal_secagg_wire_encode_advertise(const shoal_codec *codec, const uint8_t *session,
                                             size_t session_len, const shoal_secagg_advertise *adv,
                                             uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    Shoal__SecAggKey key;
    key_set(&key, adv);
    Shoal__SecAggAdvertise m = SHOAL__SEC_AGG_ADVERTISE__INIT;
    m.has_session_id = 1;
    m.session_id = bin(session, session_len);
    m.key = &key;
    return encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE, &m, out, out_len, ei);
}

shoal_err shoal_secagg_wire_encode_keys(const shoal_codec *codec,
                                        const shoal_secagg_advertise *keys, size_t count,
                                        uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    *out = NULL;
    Shoal__SecAggKey *storage = shoal_mallocarray(count ? count : 1, sizeof *storage);
    Shoal__SecAggKey **list = shoal_mallocarray(count ? count : 1, sizeof *list);
    shoal_err err = SHOAL_ENOMEM;
    if (storage && list) {
        for (size_t i = 0; i < count; i++) {
            key_set(&storage[i], &keys[i]);
            list[i] = &storage[i];
        }
        qsort(list, count, sizeof *list, by_index);
        Shoal__SecAggKeys m = SHOAL__SEC_AGG_KEYS__INIT;
        m.n_keys = count;
        m.keys = list;
        err = encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_KEYS, &m, out, out_len, ei);
    }
    shoal_free(storage);
    shoal_free(list);
    return err;
}

/* Builds the repeated SecAggSealedShare of `count` shares. */
static shoal_err sealed_list(const shoal_secagg_sealed_shares *shares, size_t count,
                             Shoal__SecAggSealedShare **storage, Shoal__SecAggSealedShare ***list)
{
    *storage = shoal_mallocarray(count ? count : 1, sizeof **storage);
    *list = shoal_mallocarray(count ? count : 1, sizeof **list);
    if (!*storage || !*list)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        Shoal__SecAggSealedShare s = SHOAL__SEC_AGG_SEALED_SHARE__INIT;
        s.has_from = s.has_to = s.has_sealed = 1;
        s.from = shares[i].from;
        s.to = shares[i].to;
        s.sealed = bin(shares[i].sealed, sizeof shares[i].sealed);
        (*storage)[i] = s;
        (*list)[i] = &(*storage)[i];
    }
    return SHOAL_OK;
}

shoal_err shoal_secagg_wire_encode_shares(const shoal_codec *codec, const uint8_t *session,
                                          size_t session_len,
                                          const shoal_secagg_sealed_shares *shares, size_t count,
                                          uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    *out = NULL;
    Shoal__SecAggSealedShare *storage, **list;
    shoal_err err = sealed_list(shares, count, &storage, &list);
    if (!err) {
        qsort(list, count, sizeof *list, by_to);
        Shoal__SecAggShares m = SHOAL__SEC_AGG_SHARES__INIT;
        m.has_session_id = 1;
        m.session_id = bin(session, session_len);
        m.n_shares = count;
        m.shares = list;
        err = encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_SHARES, &m, out, out_len, ei);
    }
    shoal_free(storage);
    shoal_free(list);
    return err;
}

shoal_err shoal_secagg_wire_encode_inbox(const shoal_codec *codec,
                                         const shoal_secagg_sealed_shares *shares, size_t count,
                                         uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    *out = NULL;
    Shoal__SecAggSealedShare *storage, **list;
    shoal_err err = sealed_list(shares, count, &storage, &list);
    if (!err) {
        qsort(list, count, sizeof *list, by_from);
        Shoal__SecAggInbox m = SHOAL__SEC_AGG_INBOX__INIT;
        m.n_shares = count;
        m.shares = list;
        err = encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_INBOX, &m, out, out_len, ei);
    }
    shoal_free(storage);
    shoal_free(list);
    return err;
}

shoal_err shoal_secagg_wire_sealed_get(Shoal__SecAggSealedShare *const *in, size_t count,
                                       shoal_secagg_sealed_shares *out, size_t cap)
{
    if (count > cap)
        return SHOAL_ELIMIT;
    for (size_t i = 0; i < count; i++) {
        out[i].from = in[i]->from;
        out[i].to = in[i]->to;
        memcpy(out[i].sealed, in[i]->sealed.data, sizeof out[i].sealed);
    }
    return SHOAL_OK;
}

shoal_err shoal_secagg_wire_encode_masked(const shoal_codec *codec, const uint8_t *session,
                                          size_t session_len, unsigned bits, size_t length,
                                          uint64_t offset, const uint8_t *data, size_t len,
                                          uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    const size_t elem = shoal_secagg_ring_bytes(bits);
    Shoal__TensorInfo info = SHOAL__TENSOR_INFO__INIT;
    info.has_encoding = info.has_element_count = info.has_byte_size = info.has_ring_bits = 1;
    info.encoding = elem == 4 ? SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING
                              : SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
    info.element_count = length;
    info.byte_size = (uint64_t)length * elem;
    info.ring_bits = bits;
    Shoal__SecAggMaskedInput m = SHOAL__SEC_AGG_MASKED_INPUT__INIT;
    m.has_session_id = m.has_offset = m.has_total_size = m.has_data = 1;
    m.session_id = bin(session, session_len);
    m.input = &info;
    m.offset = offset;
    m.total_size = info.byte_size;
    m.data = bin(data, len);
    return encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT, &m, out, out_len, ei);
}

shoal_err shoal_secagg_wire_encode_request(const shoal_codec *codec, const uint32_t *survivors,
                                           size_t count, uint8_t **out, size_t *out_len,
                                           shoal_errinfo *ei)
{
    Shoal__SecAggUnmaskRequest m = SHOAL__SEC_AGG_UNMASK_REQUEST__INIT;
    m.n_survivors = count;
    m.survivors = (uint32_t *)(uintptr_t)survivors;
    return encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST, &m, out, out_len, ei);
}

shoal_err shoal_secagg_wire_encode_unmask(const shoal_codec *codec, const uint8_t *session,
                                          size_t session_len,
                                          const shoal_secagg_revealed_share *shares, size_t count,
                                          uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    *out = NULL;
    Shoal__SecAggRevealedShare *storage = shoal_mallocarray(count ? count : 1, sizeof *storage);
    Shoal__SecAggRevealedShare **list = shoal_mallocarray(count ? count : 1, sizeof *list);
    shoal_err err = SHOAL_ENOMEM;
    if (storage && list) {
        for (size_t i = 0; i < count; i++) {
            Shoal__SecAggRevealedShare s = SHOAL__SEC_AGG_REVEALED_SHARE__INIT;
            s.has_of = s.has_kind = s.has_share = 1;
            s.of = shares[i].of;
            s.kind = shares[i].kind == SHOAL_SECAGG_SHARE_SELF_MASK
                         ? SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_SELF_MASK
                         : SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_MASK_KEY;
            s.share = bin(shares[i].share, sizeof shares[i].share);
            storage[i] = s;
            list[i] = &storage[i];
        }
        qsort(list, count, sizeof *list, by_of);
        Shoal__SecAggUnmask m = SHOAL__SEC_AGG_UNMASK__INIT;
        m.has_session_id = 1;
        m.session_id = bin(session, session_len);
        m.n_shares = count;
        m.shares = list;
        err = encode(codec, SHOAL__ENVELOPE__BODY_SECAGG_UNMASK, &m, out, out_len, ei);
    }
    shoal_free(storage);
    shoal_free(list);
    return err;
}

shoal_err shoal_secagg_wire_revealed_get(Shoal__SecAggRevealedShare *const *in, size_t count,
                                         shoal_secagg_revealed_share *out, size_t cap)
{
    if (count > cap)
        return SHOAL_ELIMIT;
    for (size_t i = 0; i < count; i++) {
        out[i].of = in[i]->of;
        out[i].kind = in[i]->kind == SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_SELF_MASK
                          ? SHOAL_SECAGG_SHARE_SELF_MASK
                          : SHOAL_SECAGG_SHARE_MASK_KEY;
        memcpy(out[i].share, in[i]->share.data, sizeof out[i].share);
    }
    return SHOAL_OK;
}
