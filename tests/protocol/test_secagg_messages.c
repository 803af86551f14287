/* The secure-aggregation messages (Envelope fields 16..22) and
 * Plan.secure_aggregation: valid ones pass and survive a round trip,
 * and each malformed one (forged indices, repeated entries, truncated
 * keys and shares, out-of-range parameters) is refused with its message on
 * all three paths (check, encode, decode of the raw bytes). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "shoal/alloc.h"
#include "shoal/envelope.h"

typedef struct sa_fixture {
    fixture base; /* fx_accepted's plan: 101770 parameters */
    Shoal__SecureAggregation sa;
    uint8_t seed[32], session[32];
    Shoal__SecAggKey key_storage[3];
    Shoal__SecAggKey *keys[3];
    uint8_t pk[6][32], sig[64];
    Shoal__SecAggAdvertise advertise;
    Shoal__SecAggKeys key_list;
    Shoal__SecAggSealedShare sealed_storage[3];
    Shoal__SecAggSealedShare *sealed[3];
    uint8_t sealed_bytes[184];
    Shoal__SecAggShares shares;
    Shoal__SecAggInbox inbox;
    Shoal__TensorInfo input;
    uint8_t chunk[16];
    Shoal__SecAggMaskedInput masked;
    uint32_t survivors[3];
    Shoal__SecAggUnmaskRequest request;
    Shoal__SecAggRevealedShare revealed_storage[2];
    Shoal__SecAggRevealedShare *revealed[2];
    uint8_t share_bytes[68];
    Shoal__SecAggUnmask unmask;
} sa_fixture;

static ProtobufCBinaryData bytes_of(uint8_t *p, size_t len)
{
    ProtobufCBinaryData b = {len, p};
    return b;
}

static const char session_name[] = "session-7f3a";

static ProtobufCBinaryData session_id(void)
{
    return bytes_of((uint8_t *)(uintptr_t)session_name, sizeof session_name - 1);
}

static void body(sa_fixture *f, Shoal__Envelope__BodyCase c, void *msg)
{
    Shoal__Envelope env = SHOAL__ENVELOPE__INIT;
    f->base.env = env;
    f->base.env.body_case = c;
    /* Every body member of the oneof shares one pointer. */
    f->base.env.secagg_advertise = msg;
}

static void fx_plan(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    fx_accepted(&f->base);
    Shoal__SecureAggregation sa = SHOAL__SECURE_AGGREGATION__INIT;
    sa.has_mode = sa.has_group_size = sa.has_index = sa.has_threshold = sa.has_degree = 1;
    sa.mode = SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG_PLUS;
    sa.group_size = 100;
    sa.index = 99;
    sa.degree = 20;
    sa.threshold = 11;
    memset(f->seed, 7, sizeof f->seed);
    memset(f->session, 9, sizeof f->session);
    sa.has_graph_seed = sa.has_session_id = 1;
    sa.graph_seed = bytes_of(f->seed, 32);
    sa.session_id = bytes_of(f->session, 32);
    sa.has_ring_bits = sa.has_vector_length = sa.has_clip = sa.has_max_weight = 1;
    sa.ring_bits = 32;
    sa.vector_length = 101771;
    sa.clip = 0.5f;
    sa.max_weight = 600;
    sa.has_phase_timeout_ms = 1;
    sa.phase_timeout_ms = 30000;
    f->sa = sa;
    f->base.plan.secure_aggregation = &f->sa;
    f->base.plan.update_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING;
}

static void key(sa_fixture *f, size_t i, uint32_t index)
{
    Shoal__SecAggKey k = SHOAL__SEC_AGG_KEY__INIT;
    k.has_index = k.has_c_pk = k.has_s_pk = 1;
    k.index = index;
    memset(f->pk[2 * i], (int)(2 * i + 1), 32);
    memset(f->pk[2 * i + 1], (int)(2 * i + 2), 32);
    k.c_pk = bytes_of(f->pk[2 * i], 32);
    k.s_pk = bytes_of(f->pk[2 * i + 1], 32);
    f->key_storage[i] = k;
    f->keys[i] = &f->key_storage[i];
}

static void fx_advertise(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    key(f, 0, 4);
    Shoal__SecAggAdvertise a = SHOAL__SEC_AGG_ADVERTISE__INIT;
    a.has_session_id = 1;
    a.session_id = session_id();
    a.key = f->keys[0];
    f->advertise = a;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE, &f->advertise);
}

static void fx_keys(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    key(f, 0, 1);
    key(f, 1, 2);
    key(f, 2, 5);
    Shoal__SecAggKeys k = SHOAL__SEC_AGG_KEYS__INIT;
    k.n_keys = 3;
    k.keys = f->keys;
    f->key_list = k;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_KEYS, &f->key_list);
}

static void sealed(sa_fixture *f, size_t i, uint32_t from, uint32_t to)
{
    Shoal__SecAggSealedShare s = SHOAL__SEC_AGG_SEALED_SHARE__INIT;
    s.has_from = s.has_to = s.has_sealed = 1;
    s.from = from;
    s.to = to;
    memset(f->sealed_bytes, 0xa5, sizeof f->sealed_bytes);
    s.sealed = bytes_of(f->sealed_bytes, sizeof f->sealed_bytes);
    f->sealed_storage[i] = s;
    f->sealed[i] = &f->sealed_storage[i];
}

static void fx_shares(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    sealed(f, 0, 3, 1);
    sealed(f, 1, 3, 2);
    sealed(f, 2, 3, 7);
    Shoal__SecAggShares s = SHOAL__SEC_AGG_SHARES__INIT;
    s.has_session_id = 1;
    s.session_id = session_id();
    s.n_shares = 3;
    s.shares = f->sealed;
    f->shares = s;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_SHARES, &f->shares);
}

static void fx_inbox(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    sealed(f, 0, 0, 3);
    sealed(f, 1, 2, 3);
    Shoal__SecAggInbox in = SHOAL__SEC_AGG_INBOX__INIT;
    in.n_shares = 2;
    in.shares = f->sealed;
    f->inbox = in;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_INBOX, &f->inbox);
}

static void fx_masked(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    Shoal__TensorInfo t = SHOAL__TENSOR_INFO__INIT;
    t.has_encoding = t.has_element_count = t.has_byte_size = t.has_ring_bits = 1;
    t.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING;
    t.element_count = 8;
    t.byte_size = 32;
    t.ring_bits = 24;
    f->input = t;
    Shoal__SecAggMaskedInput m = SHOAL__SEC_AGG_MASKED_INPUT__INIT;
    m.has_session_id = m.has_offset = m.has_total_size = m.has_data = 1;
    m.session_id = session_id();
    m.input = &f->input;
    m.offset = 16;
    m.total_size = 32;
    memset(f->chunk, 0x3c, sizeof f->chunk);
    m.data = bytes_of(f->chunk, sizeof f->chunk);
    f->masked = m;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT, &f->masked);
}

static void fx_request(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    f->survivors[0] = 0;
    f->survivors[1] = 2;
    f->survivors[2] = 3;
    Shoal__SecAggUnmaskRequest r = SHOAL__SEC_AGG_UNMASK_REQUEST__INIT;
    r.n_survivors = 3;
    r.survivors = f->survivors;
    f->request = r;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST, &f->request);
}

static void fx_unmask(sa_fixture *f)
{
    memset(f, 0, sizeof *f);
    memset(f->share_bytes, 0x11, sizeof f->share_bytes);
    for (size_t i = 0; i < 2; i++) {
        Shoal__SecAggRevealedShare s = SHOAL__SEC_AGG_REVEALED_SHARE__INIT;
        s.has_of = s.has_kind = s.has_share = 1;
        s.of = (uint32_t)(2 * i + 1);
        s.kind = i ? SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_MASK_KEY
                   : SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_SELF_MASK;
        s.share = bytes_of(f->share_bytes, sizeof f->share_bytes);
        f->revealed_storage[i] = s;
        f->revealed[i] = &f->revealed_storage[i];
    }
    Shoal__SecAggUnmask u = SHOAL__SEC_AGG_UNMASK__INIT;
    u.has_session_id = 1;
    u.session_id = session_id();
    u.n_shares = 2;
    u.shares = f->revealed;
    f->unmask = u;
    body(f, SHOAL__ENVELOPE__BODY_SECAGG_UNMASK, &f->unmask);
}

/* Encodes with the sender's codec, decodes, and returns the decoded copy. */
static shoal_envelope *round_trip(const sa_fixture *f, shoal_peer sender)
{
    const shoal_codec codec = shoal_codec_defaults(sender);
    shoal_errinfo ei = {{0}};
    uint8_t *out;
    size_t len;
    cr_assert_eq(shoal_envelope_encode(&codec, &f->base.env, &out, &len, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_envelope *env;
    cr_assert_eq(shoal_envelope_decode(&codec, out, len, &env, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_free(out);
    cr_assert_eq(env->body_case, f->base.env.body_case);
    return env;
}

#define DEV SHOAL_PEER_DEVICE
#define SRV SHOAL_PEER_SERVER
#define REFUSE(name, builder, sender, mutation, expected)                                          \
    Test(protocol_secagg_refusal, name)                                                            \
    {                                                                                              \
        sa_fixture fixture_storage, *f = &fixture_storage;                                         \
        builder(f);                                                                                \
        mutation;                                                                                  \
        fx_expect_refused(&f->base.env, sender, expected);                                         \
    }

Test(protocol_secagg, messages_round_trip_with_every_field)
{
    sa_fixture f;
    fx_plan(&f);
    shoal_envelope *env = round_trip(&f, SRV);
    const Shoal__SecureAggregation *sa = env->check_in_result->accepted->plan->secure_aggregation;
    cr_assert_not_null(sa);
    cr_assert_eq(sa->index, 99);
    cr_assert_eq(sa->vector_length, 101771);
    cr_assert_float_eq(sa->clip, 0.5f, 0);
    cr_assert_arr_eq(sa->session_id.data, f.session, 32);
    shoal_envelope_free(env);

    fx_keys(&f);
    env = round_trip(&f, SRV);
    cr_assert_eq(env->secagg_keys->n_keys, 3);
    cr_assert_eq(env->secagg_keys->keys[2]->index, 5);
    cr_assert_arr_eq(env->secagg_keys->keys[1]->s_pk.data, f.pk[3], 32);
    cr_assert_str_eq(shoal_envelope_body_name(env), "SecAggKeys");
    shoal_envelope_free(env);

    fx_shares(&f);
    env = round_trip(&f, DEV);
    cr_assert_eq(env->secagg_shares->shares[2]->to, 7);
    cr_assert_eq(env->secagg_shares->shares[2]->sealed.len, SHOAL_PROTOCOL_SECAGG_SEAL_BYTES);
    shoal_envelope_free(env);

    fx_masked(&f);
    env = round_trip(&f, DEV);
    cr_assert_eq(env->secagg_masked_input->input->ring_bits, 24);
    cr_assert_eq(env->secagg_masked_input->offset, 16);
    shoal_envelope_free(env);

    fx_request(&f);
    env = round_trip(&f, SRV);
    cr_assert_eq(env->secagg_unmask_request->n_survivors, 3);
    cr_assert_eq(env->secagg_unmask_request->survivors[2], 3);
    shoal_envelope_free(env);

    fx_unmask(&f);
    env = round_trip(&f, DEV);
    cr_assert_eq(env->secagg_unmask->shares[1]->kind,
                 SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_MASK_KEY);
    shoal_envelope_free(env);

    fx_advertise(&f);
    env = round_trip(&f, DEV);
    cr_assert_eq(env->secagg_advertise->key->index, 4);
    shoal_envelope_free(env);
    fx_inbox(&f);
    env = round_trip(&f, SRV);
    cr_assert_eq(env->secagg_inbox->shares[1]->from, 2);
    shoal_envelope_free(env);
}

Test(protocol_secagg, secagg_mode_has_the_complete_graph)
{
    sa_fixture f;
    fx_plan(&f);
    f.sa.mode = SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG;
    f.sa.degree = 99;
    f.sa.threshold = 60;
    const shoal_codec codec = shoal_codec_defaults(SRV);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_check(&codec, &f.base.env, &ei), SHOAL_OK, "%s", ei.msg);
    f.sa.ring_bits = 40;
    f.base.plan.update_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
    cr_assert_eq(shoal_envelope_check(&codec, &f.base.env, &ei), SHOAL_OK, "%s", ei.msg);
}

/* Adaptive clipping: the unclipped bit is one more element, after the
 * weight. */
Test(protocol_secagg, a_plan_asking_for_the_unclipped_bit_has_room_for_it)
{
    sa_fixture f;
    fx_plan(&f);
    f.base.plan.has_report_unclipped = f.base.plan.report_unclipped = 1;
    f.sa.vector_length = 101772;
    shoal_envelope *env = round_trip(&f, SRV);
    const Shoal__Plan *p = env->check_in_result->accepted->plan;
    cr_assert(shoal_plan_reports_unclipped(p));
    cr_assert_eq(p->secure_aggregation->vector_length, 101772);
    shoal_envelope_free(env);
    /* Present but false asks for nothing. */
    f.base.plan.report_unclipped = 0;
    const shoal_codec codec = shoal_codec_defaults(SRV);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_check(&codec, &f.base.env, &ei), SHOAL_EPROTO);
    f.sa.vector_length = 101771;
    cr_assert_eq(shoal_envelope_check(&codec, &f.base.env, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not(shoal_plan_reports_unclipped(&f.base.plan));
}

/* ---- the plan ---- */
REFUSE(plan_index_outside_group, fx_plan, SRV, f->sa.index = 100,
       "Plan.secure_aggregation.index: 100 is out of range; must be 0 to 99")
REFUSE(plan_without_session, fx_plan, SRV, f->sa.has_session_id = 0,
       "Plan.secure_aggregation.session_id: missing (required)")
REFUSE(plan_short_session, fx_plan, SRV, f->sa.session_id.len = 31,
       "Plan.secure_aggregation.session_id: 31 bytes; must be 32 to 32")
REFUSE(plan_group_of_two, fx_plan, SRV, f->sa.group_size = 2,
       "Plan.secure_aggregation.group_size: 2 is out of range; must be 3 to 1000000")
REFUSE(plan_odd_degree, fx_plan, SRV, f->sa.degree = 21,
       "Plan.secure_aggregation.degree: 21 is odd; SECAGG_PLUS needs an even degree")
REFUSE(plan_secagg_sparse_degree, fx_plan, SRV,
       (f->sa.mode = SHOAL__SEC_AGG_MODE__SECAGG_MODE_SECAGG),
       "Plan.secure_aggregation.degree: 20 is out of range; must be 99 to 99")
REFUSE(plan_threshold_above_degree, fx_plan, SRV, f->sa.threshold = 21,
       "Plan.secure_aggregation.threshold: 21 is out of range; must be 2 to 20")
REFUSE(plan_unknown_mode, fx_plan, SRV, f->sa.mode = (Shoal__SecAggMode)3,
       "Plan.secure_aggregation.mode: 3 is not a valid value; must be 1 to 2")
REFUSE(plan_float_update, fx_plan, SRV,
       f->base.plan.update_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE,
       "Plan.update_encoding: FLOAT32_LE with secure aggregation over a 32-bit ring; must be "
       "UINT32_RING")
REFUSE(plan_wide_ring_narrow_encoding, fx_plan, SRV, f->sa.ring_bits = 33,
       "Plan.update_encoding: UINT32_RING with secure aggregation over a 33-bit ring; must be "
       "UINT64_RING")
REFUSE(plan_vector_without_weight, fx_plan, SRV, f->sa.vector_length = 101770,
       "Plan.secure_aggregation.vector_length: 101770 differs from model.parameter_count + 1 "
       "(the weight) = 101771")
REFUSE(plan_unclipped_bit_without_room, fx_plan, SRV,
       (f->base.plan.has_report_unclipped = f->base.plan.report_unclipped = 1),
       "Plan.secure_aggregation.vector_length: 101771 differs from model.parameter_count + 2 "
       "(the weight and the unclipped bit) = 101772")
REFUSE(plan_zero_clip, fx_plan, SRV, f->sa.clip = 0,
       "Plan.secure_aggregation.clip: 0 is out of range; must be finite and > 0")
REFUSE(plan_zero_max_weight, fx_plan, SRV, f->sa.max_weight = 0,
       "Plan.secure_aggregation.max_weight: 0 is out of range; must be 1 to 4294967295")
REFUSE(plan_for_evaluation, fx_plan, SRV,
       (f->base.plan.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE,
        f->base.accepted.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE),
       "Plan.secure_aggregation: only TRAIN tasks aggregate securely")

/* ---- phase 0 and 1 ---- */
REFUSE(advertise_truncated_key, fx_advertise, DEV, f->key_storage[0].c_pk.len = 31,
       "SecAggAdvertise.key.c_pk: 31 bytes; must be 32 to 32")
REFUSE(advertise_same_key_twice, fx_advertise, DEV, f->key_storage[0].s_pk.data = f->pk[0],
       "SecAggAdvertise.key.s_pk: equals c_pk; the two key pairs must be distinct")
REFUSE(advertise_without_session, fx_advertise, DEV, f->advertise.has_session_id = 0,
       "SecAggAdvertise.session_id: missing (required)")
REFUSE(advertise_short_signature, fx_advertise, DEV,
       (f->key_storage[0].has_signature = 1, f->key_storage[0].signature.len = 63,
        f->key_storage[0].signature.data = f->sig),
       "SecAggAdvertise.key.signature: 63 bytes; must be 64 to 64")
REFUSE(advertise_from_server, fx_advertise, SRV, (void)0,
       "Envelope.body: SecAggAdvertise is sent by the device, not the server")
REFUSE(keys_repeated_index, fx_keys, SRV, f->key_storage[2].index = 2,
       "SecAggKeys.keys[2].index: 2 is not above the previous 2; one key per device, ascending")
REFUSE(keys_empty, fx_keys, SRV, f->key_list.n_keys = 0,
       "SecAggKeys.keys: 0 entries; must be 1 to 1000000")
REFUSE(keys_forged_index, fx_keys, SRV, f->key_storage[2].index = 1000000,
       "SecAggKeys.keys[2].index: 1000000 is out of range; must be 0 to 999999")
REFUSE(keys_from_device, fx_keys, DEV, (void)0,
       "Envelope.body: SecAggKeys is sent by the server, not the device")
REFUSE(shares_two_senders, fx_shares, DEV, f->sealed_storage[1].from = 4,
       "SecAggShares.shares[1].from: 4 differs from shares[0].from 3; one message carries one "
       "device's shares")
REFUSE(shares_repeated_target, fx_shares, DEV, f->sealed_storage[2].to = 2,
       "SecAggShares.shares[2].to: 2 is not above the previous 2; indices must be strictly "
       "ascending")
REFUSE(shares_to_itself, fx_shares, DEV, f->sealed_storage[0].to = 3,
       "SecAggShares.shares[0].to: 3 equals from; a device shares with others only")
REFUSE(shares_truncated_ciphertext, fx_shares, DEV, f->sealed_storage[1].sealed.len = 183,
       "SecAggShares.shares[1].sealed: 183 bytes; must be 184 to 184")
REFUSE(inbox_two_receivers, fx_inbox, SRV, f->sealed_storage[1].to = 4,
       "SecAggInbox.shares[1].to: 4 differs from shares[0].to 3; one message carries one "
       "device's shares")

/* ---- phase 2 ---- */
REFUSE(masked_float_tensor, fx_masked, DEV,
       f->input.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE,
       "SecAggMaskedInput.input.encoding: FLOAT32_LE; a masked input is UINT32_RING or "
       "UINT64_RING")
REFUSE(masked_ring_too_wide, fx_masked, DEV, f->input.ring_bits = 33,
       "SecAggMaskedInput.input.ring_bits: 33 is out of range; must be 1 to 32")
REFUSE(masked_wide_ring_too_narrow, fx_masked, DEV,
       (f->input.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING,
        f->input.byte_size = 64, f->masked.total_size = 64),
       "SecAggMaskedInput.input.ring_bits: 24 is out of range; must be 33 to 64")
REFUSE(masked_byte_size_mismatch, fx_masked, DEV, f->input.byte_size = 33,
       "SecAggMaskedInput.input.byte_size: 33 does not match 8 elements of UINT32_RING (4 bytes "
       "each)")
REFUSE(masked_total_differs, fx_masked, DEV, (f->masked.total_size = 40, f->masked.offset = 0),
       "SecAggMaskedInput.total_size: 40 differs from input.byte_size 32")
REFUSE(masked_past_end, fx_masked, DEV, f->masked.offset = 17,
       "SecAggMaskedInput.data: bytes [17, +16) run past total_size 32")
REFUSE(masked_without_input, fx_masked, DEV, f->masked.input = NULL,
       "SecAggMaskedInput.input: missing (required)")

/* ---- phase 4 ---- */
REFUSE(request_one_survivor, fx_request, SRV, f->request.n_survivors = 1,
       "SecAggUnmaskRequest.survivors: 1 entries; must be 2 to 1000000")
REFUSE(request_repeated_survivor, fx_request, SRV, f->survivors[2] = 2,
       "SecAggUnmaskRequest.survivors[2]: 2 is not above the previous 2; U3 is strictly "
       "ascending")
REFUSE(unmask_two_shares_of_one_device, fx_unmask, DEV, f->revealed_storage[1].of = 1,
       "SecAggUnmask.shares[1].of: 1 is not above the previous 1; one share per device, "
       "ascending")
REFUSE(unmask_unspecified_kind, fx_unmask, DEV,
       f->revealed_storage[0].kind = SHOAL__SEC_AGG_SHARE_KIND__SECAGG_SHARE_UNSPECIFIED,
       "SecAggUnmask.shares[0].kind: 0 is not a valid value; must be 1 to 2")
REFUSE(unmask_truncated_share, fx_unmask, DEV, f->revealed_storage[1].share.len = 67,
       "SecAggUnmask.shares[1].share: 67 bytes; must be 68 to 68")
REFUSE(unmask_without_session, fx_unmask, DEV, f->unmask.has_session_id = 0,
       "SecAggUnmask.session_id: missing (required)")
