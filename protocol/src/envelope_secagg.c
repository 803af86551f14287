/* Envelope codec: the secure-aggregation messages (Envelope fields 16..31)
 * and Plan.secure_aggregation, by the rules of docs/protocol.md, "Secure
 * aggregation". What one message can tell is checked here: sizes, ranges,
 * order and uniqueness of indices, the masked input's tensor; whether a
 * message belongs to its phase, its group and its sender is the state
 * machine's to decide (secure-agg/), which also refuses replays. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "envelope_int.h"
#include "shoal/encoding.h"

#define GROUP_MAX SHOAL_PROTOCOL_SECAGG_GROUP_MAX

shoal_err shoal_pcheck_secagg_plan(const Shoal__Plan *p, shoal_errinfo *ei)
{
    const Shoal__SecureAggregation *sa = p->secure_aggregation;
    if (p->task_kind != SHOAL__TASK_KIND__TASK_KIND_TRAIN)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.secure_aggregation: only TRAIN tasks aggregate securely");
    TRY(shoal_pcheck_enum(ei, "Plan.secure_aggregation.mode", sa->has_mode, (int)sa->mode, 1,
                          SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG,
                          SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG_PLUS));
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.group_size", sa->has_group_size,
                         sa->group_size, 1, 3, GROUP_MAX));
    const uint32_t n = sa->group_size;
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.index", sa->has_index, sa->index, 1, 0,
                         n - 1));
    if (sa->mode == SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG) {
        TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.degree", sa->has_degree, sa->degree, 1,
                             n - 1, n - 1));
    } else {
        TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.degree", sa->has_degree, sa->degree, 1, 2,
                             n - 2));
        if (sa->degree % 2)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "Plan.secure_aggregation.degree: %" PRIu32
                                     " is odd; SECAGG_PLUS needs an even degree",
                                     sa->degree);
    }
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.threshold", sa->has_threshold, sa->threshold,
                         1, 2, sa->degree));
    TRY(shoal_pcheck_bytes(ei, "Plan.secure_aggregation.graph_seed", sa->has_graph_seed,
                           &sa->graph_seed, 1, SHOAL_PROTOCOL_SECAGG_KEY_BYTES,
                           SHOAL_PROTOCOL_SECAGG_KEY_BYTES));
    TRY(shoal_pcheck_bytes(ei, "Plan.secure_aggregation.session_id", sa->has_session_id,
                           &sa->session_id, 1, SHOAL_PROTOCOL_SECAGG_KEY_BYTES,
                           SHOAL_PROTOCOL_SECAGG_KEY_BYTES));
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.ring_bits", sa->has_ring_bits, sa->ring_bits,
                         1, 1, 64));
    const int want = sa->ring_bits <= 32 ? SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING
                                         : SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
    if ((int)p->update_encoding != want)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.update_encoding: %s with secure aggregation over a "
                                 "%" PRIu32 "-bit ring; must be %s",
                                 shoal_protocol_encoding_name((int)p->update_encoding),
                                 sa->ring_bits, shoal_protocol_encoding_name(want));
    const uint64_t params = p->model->parameter_count;
    /* The weight, and with report_unclipped the unclipped bit. */
    const uint64_t extra = shoal_plan_reports_unclipped(p) ? 2 : 1;
    if (!sa->has_vector_length)
        return shoal_pcheck_missing(ei, "Plan.secure_aggregation.vector_length");
    if (params > UINT64_MAX - extra || sa->vector_length != params + extra)
        return shoal_errinfo_set(
            ei, SHOAL_EPROTO,
            "Plan.secure_aggregation.vector_length: %" PRIu64
            " differs from model.parameter_count + %" PRIu64 " (%s) = %" PRIu64,
            sa->vector_length, extra,
            extra == 2 ? "the weight and the unclipped bit" : "the weight", params + extra);
    TRY(shoal_pcheck_float(ei, "Plan.secure_aggregation.clip", sa->has_clip, sa->clip, 1, 0, 1,
                           HUGE_VAL, 0));
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.max_weight", sa->has_max_weight,
                         sa->max_weight, 1, 1, UINT32_MAX));
    TRY(shoal_pcheck_u64(ei, "Plan.secure_aggregation.phase_timeout_ms", sa->has_phase_timeout_ms,
                         sa->phase_timeout_ms, 1, 1, SHOAL_PROTOCOL_RETRY_MAX_MS));
    return SHOAL_OK;
}

static shoal_err check_session(shoal_errinfo *ei, const char *msg, int has,
                               const ProtobufCBinaryData *id)
{
    char field[64];
    snprintf(field, sizeof field, "%s.session_id", msg);
    return shoal_pcheck_bytes(ei, field, has, id, 1, 1, SHOAL_PROTOCOL_ID_MAX);
}

static shoal_err check_count(shoal_errinfo *ei, const char *field, size_t count, size_t min)
{
    if (count < min || count > GROUP_MAX)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: %zu entries; must be %zu to %u", field,
                                 count, min, GROUP_MAX);
    return SHOAL_OK;
}

static shoal_err check_key(shoal_errinfo *ei, const char *name, const Shoal__SecAggKey *k)
{
    char field[128];
    if (!k)
        return shoal_pcheck_missing(ei, name);
    snprintf(field, sizeof field, "%.100s.index", name);
    TRY(shoal_pcheck_u64(ei, field, k->has_index, k->index, 1, 0, GROUP_MAX - 1));
    snprintf(field, sizeof field, "%.100s.c_pk", name);
    TRY(shoal_pcheck_bytes(ei, field, k->has_c_pk, &k->c_pk, 1, SHOAL_PROTOCOL_SECAGG_KEY_BYTES,
                           SHOAL_PROTOCOL_SECAGG_KEY_BYTES));
    snprintf(field, sizeof field, "%.100s.s_pk", name);
    TRY(shoal_pcheck_bytes(ei, field, k->has_s_pk, &k->s_pk, 1, SHOAL_PROTOCOL_SECAGG_KEY_BYTES,
                           SHOAL_PROTOCOL_SECAGG_KEY_BYTES));
    snprintf(field, sizeof field, "%.100s.signature", name);
    TRY(shoal_pcheck_bytes(ei, field, k->has_signature, &k->signature, 0,
                           SHOAL_PROTOCOL_SECAGG_SIG_BYTES, SHOAL_PROTOCOL_SECAGG_SIG_BYTES));
    if (memcmp(k->c_pk.data, k->s_pk.data, SHOAL_PROTOCOL_SECAGG_KEY_BYTES) == 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s.s_pk: equals c_pk; the two key pairs must be distinct", name);
    return SHOAL_OK;
}

static shoal_err check_sealed(shoal_errinfo *ei, const char *name,
                              const Shoal__SecAggSealedShare *s)
{
    char field[128];
    if (!s)
        return shoal_pcheck_missing(ei, name);
    snprintf(field, sizeof field, "%.100s.from", name);
    TRY(shoal_pcheck_u64(ei, field, s->has_from, s->from, 1, 0, GROUP_MAX - 1));
    snprintf(field, sizeof field, "%.100s.to", name);
    TRY(shoal_pcheck_u64(ei, field, s->has_to, s->to, 1, 0, GROUP_MAX - 1));
    if (s->from == s->to)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s.to: %" PRIu32 " equals from; a device shares with others only",
                                 name, s->to);
    snprintf(field, sizeof field, "%.100s.sealed", name);
    return shoal_pcheck_bytes(ei, field, s->has_sealed, &s->sealed, 1,
                              SHOAL_PROTOCOL_SECAGG_SEAL_BYTES, SHOAL_PROTOCOL_SECAGG_SEAL_BYTES);
}

/* A list of sealed shares with one fixed end (`from` for SecAggShares,
 * `to` for SecAggInbox) and the other end strictly ascending. */
static shoal_err check_sealed_list(shoal_errinfo *ei, const char *msg,
                                   Shoal__SecAggSealedShare *const *shares, size_t count,
                                   int fixed_from)
{
    char field[128];
    snprintf(field, sizeof field, "%s.shares", msg);
    TRY(check_count(ei, field, count, 1));
    for (size_t i = 0; i < count; i++) {
        snprintf(field, sizeof field, "%s.shares[%zu]", msg, i);
        TRY(check_sealed(ei, field, shares[i]));
        if (i == 0)
            continue;
        const Shoal__SecAggSealedShare *a = shares[i - 1], *b = shares[i];
        uint32_t fixed_a = fixed_from ? a->from : a->to, fixed_b = fixed_from ? b->from : b->to;
        uint32_t var_a = fixed_from ? a->to : a->from, var_b = fixed_from ? b->to : b->from;
        const char *fixed_name = fixed_from ? "from" : "to", *var_name = fixed_from ? "to" : "from";
        if (fixed_b != fixed_a)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "%s.%s: %" PRIu32 " differs from shares[0].%s %" PRIu32
                                     "; one message carries one device's shares",
                                     field, fixed_name, fixed_b, fixed_name, fixed_a);
        if (var_b <= var_a)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "%s.%s: %" PRIu32 " is not above the previous %" PRIu32
                                     "; indices must be strictly ascending",
                                     field, var_name, var_b, var_a);
    }
    return SHOAL_OK;
}

static shoal_err check_masked(const Shoal__SecAggMaskedInput *m, shoal_errinfo *ei)
{
    TRY(check_session(ei, "SecAggMaskedInput", m->has_session_id, &m->session_id));
    const Shoal__TensorInfo *t = m->input;
    if (!t)
        return shoal_pcheck_missing(ei, "SecAggMaskedInput.input");
    if (!t->has_encoding)
        return shoal_pcheck_missing(ei, "SecAggMaskedInput.input.encoding");
    if (t->encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING &&
        t->encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "SecAggMaskedInput.input.encoding: %s; a masked input is "
                                 "UINT32_RING or UINT64_RING",
                                 shoal_protocol_encoding_name((int)t->encoding));
    TRY(shoal_pcheck_u64(ei, "SecAggMaskedInput.input.element_count", t->has_element_count,
                         t->element_count, 1, 1, UINT64_MAX / 8));
    const uint64_t elem = shoal_tensor_element_size((int)t->encoding);
    if (!t->has_byte_size)
        return shoal_pcheck_missing(ei, "SecAggMaskedInput.input.byte_size");
    if (t->byte_size != t->element_count * elem)
        return shoal_errinfo_set(
            ei, SHOAL_EPROTO,
            "SecAggMaskedInput.input.byte_size: %" PRIu64 " does not match %" PRIu64
            " elements of %s (%" PRIu64 " bytes each)",
            t->byte_size, t->element_count, shoal_protocol_encoding_name((int)t->encoding), elem);
    if (t->has_scale)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "SecAggMaskedInput.input.scale: a ring tensor carries no scale");
    TRY(shoal_pcheck_ring_bits(ei, "SecAggMaskedInput.input.ring_bits", t->has_ring_bits,
                               t->ring_bits, (int)t->encoding));
    TRY(shoal_pcheck_chunk_range(ei, "SecAggMaskedInput", m->has_offset, m->offset,
                                 m->has_total_size, m->total_size, m->has_data, &m->data));
    if (m->total_size != t->byte_size)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "SecAggMaskedInput.total_size: %" PRIu64
                                 " differs from input.byte_size %" PRIu64,
                                 m->total_size, t->byte_size);
    return SHOAL_OK;
}

static shoal_err check_unmask(const Shoal__SecAggUnmask *m, shoal_errinfo *ei)
{
    char field[64];
    TRY(check_session(ei, "SecAggUnmask", m->has_session_id, &m->session_id));
    TRY(check_count(ei, "SecAggUnmask.shares", m->n_shares, 0));
    for (size_t i = 0; i < m->n_shares; i++) {
        const Shoal__SecAggRevealedShare *s = m->shares[i];
        snprintf(field, sizeof field, "SecAggUnmask.shares[%zu]", i);
        if (!s)
            return shoal_pcheck_missing(ei, field);
        snprintf(field, sizeof field, "SecAggUnmask.shares[%zu].of", i);
        TRY(shoal_pcheck_u64(ei, field, s->has_of, s->of, 1, 0, GROUP_MAX - 1));
        if (i > 0 && s->of <= m->shares[i - 1]->of)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "%s: %" PRIu32 " is not above the previous %" PRIu32
                                     "; one share per device, ascending",
                                     field, s->of, m->shares[i - 1]->of);
        snprintf(field, sizeof field, "SecAggUnmask.shares[%zu].kind", i);
        TRY(shoal_pcheck_enum(ei, field, s->has_kind, (int)s->kind, 1,
                              SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_SELF_MASK,
                              SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_MASK_KEY));
        snprintf(field, sizeof field, "SecAggUnmask.shares[%zu].share", i);
        TRY(shoal_pcheck_bytes(ei, field, s->has_share, &s->share, 1,
                               SHOAL_PROTOCOL_SECAGG_SHARE_BYTES,
                               SHOAL_PROTOCOL_SECAGG_SHARE_BYTES));
    }
    return SHOAL_OK;
}

shoal_err shoal_pcheck_secagg_body(const shoal_envelope *env, shoal_errinfo *ei)
{
    char field[64];
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE: {
        const Shoal__SecAggAdvertise *m = env->secagg_advertise;
        if (!m)
            return shoal_pcheck_missing(ei, "Envelope.secagg_advertise");
        TRY(check_session(ei, "SecAggAdvertise", m->has_session_id, &m->session_id));
        return check_key(ei, "SecAggAdvertise.key", m->key);
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_KEYS: {
        const Shoal__SecAggKeys *m = env->secagg_keys;
        if (!m)
            return shoal_pcheck_missing(ei, "Envelope.secagg_keys");
        TRY(check_count(ei, "SecAggKeys.keys", m->n_keys, 1));
        for (size_t i = 0; i < m->n_keys; i++) {
            snprintf(field, sizeof field, "SecAggKeys.keys[%zu]", i);
            TRY(check_key(ei, field, m->keys[i]));
            if (i > 0 && m->keys[i]->index <= m->keys[i - 1]->index)
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "%s.index: %" PRIu32 " is not above the previous %" PRIu32
                                         "; one key per device, ascending",
                                         field, m->keys[i]->index, m->keys[i - 1]->index);
        }
        return SHOAL_OK;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_SHARES: {
        const Shoal__SecAggShares *m = env->secagg_shares;
        if (!m)
            return shoal_pcheck_missing(ei, "Envelope.secagg_shares");
        TRY(check_session(ei, "SecAggShares", m->has_session_id, &m->session_id));
        return check_sealed_list(ei, "SecAggShares", m->shares, m->n_shares, 1);
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_INBOX: {
        const Shoal__SecAggInbox *m = env->secagg_inbox;
        if (!m)
            return shoal_pcheck_missing(ei, "Envelope.secagg_inbox");
        return check_sealed_list(ei, "SecAggInbox", m->shares, m->n_shares, 0);
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT:
        if (!env->secagg_masked_input)
            return shoal_pcheck_missing(ei, "Envelope.secagg_masked_input");
        return check_masked(env->secagg_masked_input, ei);
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST: {
        const Shoal__SecAggUnmaskRequest *m = env->secagg_unmask_request;
        if (!m)
            return shoal_pcheck_missing(ei, "Envelope.secagg_unmask_request");
        TRY(check_count(ei, "SecAggUnmaskRequest.survivors", m->n_survivors, 2));
        for (size_t i = 0; i < m->n_survivors; i++) {
            snprintf(field, sizeof field, "SecAggUnmaskRequest.survivors[%zu]", i);
            TRY(shoal_pcheck_u64(ei, field, 1, m->survivors[i], 1, 0, GROUP_MAX - 1));
            if (i > 0 && m->survivors[i] <= m->survivors[i - 1])
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "%s: %" PRIu32 " is not above the previous %" PRIu32
                                         "; U3 is strictly ascending",
                                         field, m->survivors[i], m->survivors[i - 1]);
        }
        return SHOAL_OK;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK:
        if (!env->secagg_unmask)
            return shoal_pcheck_missing(ei, "Envelope.secagg_unmask");
        return check_unmask(env->secagg_unmask, ei);
    default:
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "Envelope.body: unknown case %d",
                                 (int)env->body_case);
    }
}
