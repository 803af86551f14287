/* The chunk message builders: what they build decodes to the same fields,
 * encodes to the same bytes as the message filled by hand, and every bad
 * argument is refused with its message and the caller's structs untouched. */
#include <criterion/criterion.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/envelope.h"

static const uint8_t session[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t payload[5] = {0xde, 0xad, 0xbe, 0xef, 0x00};

static shoal_chunk chunk_of(uint64_t offset, uint64_t total, const uint8_t *data, size_t len)
{
    return (shoal_chunk){.offset = offset, .total = total, .data = data, .len = len};
}

/* Decodes bytes as `codec` does and checks the chunk it carries. */
static shoal_envelope *decode_chunk(const shoal_codec *codec, const uint8_t *bytes, size_t len,
                                    shoal_chunk (*view_of)(const shoal_envelope *),
                                    shoal_chunk want)
{
    shoal_envelope *got = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_decode(codec, bytes, len, &got, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_chunk view = view_of(got);
    cr_assert_eq(view.offset, want.offset);
    cr_assert_eq(view.total, want.total);
    cr_assert_eq(view.len, want.len);
    cr_assert_arr_eq(view.data, want.data, want.len);
    return got;
}

static shoal_chunk report_view(const shoal_envelope *env)
{
    cr_assert_eq(env->body_case, SHOAL__ENVELOPE__BODY_REPORT_CHUNK);
    return shoal_chunk_from_report(env->report_chunk);
}

static shoal_chunk model_view(const shoal_envelope *env)
{
    cr_assert_eq(env->body_case, SHOAL__ENVELOPE__BODY_MODEL_CHUNK);
    return shoal_chunk_from_model(env->model_chunk);
}

Test(protocol_builders, report_chunk_decodes_to_its_fields)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    shoal_chunk ch = chunk_of(7, 12, payload, sizeof payload);
    shoal_envelope env;
    Shoal__ReportChunk body;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_report_chunk_init(&env, &body, session, sizeof session, &ch, &ei),
                 SHOAL_OK, "%s", ei.msg);
    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_envelope_encode(&codec, &env, &bytes, &len, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_envelope *got = decode_chunk(&codec, bytes, len, report_view, ch);
    cr_assert_eq(got->report_chunk->session_id.len, sizeof session);
    cr_assert_arr_eq(got->report_chunk->session_id.data, session, sizeof session);
    shoal_envelope_free(got);
    shoal_free(bytes);
}

Test(protocol_builders, model_chunk_decodes_to_its_fields)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    uint8_t checkpoint[SHOAL_PROTOCOL_ID_MAX];
    memset(checkpoint, 0xcc, sizeof checkpoint); /* the longest id allowed */
    shoal_chunk ch = chunk_of(0, sizeof payload, payload, sizeof payload);
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, checkpoint, sizeof checkpoint, &ch,
                                                   &bytes, &len, &ei),
                 SHOAL_OK, "%s", ei.msg);
    cr_assert_leq(len, sizeof payload + SHOAL_CHUNK_ENVELOPE_OVERHEAD);
    shoal_envelope *got = decode_chunk(&codec, bytes, len, model_view, ch);
    cr_assert_eq(got->model_chunk->checkpoint_id.len, sizeof checkpoint);
    cr_assert_arr_eq(got->model_chunk->checkpoint_id.data, checkpoint, sizeof checkpoint);
    shoal_envelope_free(got);
    shoal_free(bytes);
}

/* The builder's bytes are those of the message filled field by field. */
Test(protocol_builders, model_chunk_encodes_like_the_hand_filled_message)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    shoal_chunk ch = chunk_of(3, 8, payload, sizeof payload);
    Shoal__ModelChunk mc = SHOAL__MODEL_CHUNK__INIT;
    mc.has_checkpoint_id = mc.has_offset = mc.has_total_size = mc.has_data = 1;
    mc.checkpoint_id.data = (uint8_t *)session;
    mc.checkpoint_id.len = sizeof session;
    mc.offset = 3;
    mc.total_size = 8;
    mc.data.data = (uint8_t *)payload;
    mc.data.len = sizeof payload;
    shoal_envelope by_hand = SHOAL__ENVELOPE__INIT;
    by_hand.body_case = SHOAL__ENVELOPE__BODY_MODEL_CHUNK;
    by_hand.model_chunk = &mc;
    uint8_t *want = NULL, *got = NULL;
    size_t want_len = 0, got_len = 0;
    cr_assert_eq(shoal_envelope_encode(&codec, &by_hand, &want, &want_len, NULL), SHOAL_OK);
    cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, session, sizeof session, &ch, &got,
                                                   &got_len, NULL),
                 SHOAL_OK);
    cr_assert_eq(got_len, want_len);
    cr_assert_arr_eq(got, want, want_len);
    shoal_free(want);
    shoal_free(got);
}

/* init borrows: the envelope points at the caller's body, which points at
 * the caller's id and data. */
Test(protocol_builders, init_borrows_the_callers_buffers)
{
    shoal_envelope env;
    Shoal__ReportChunk body;
    shoal_chunk ch = chunk_of(0, sizeof payload, payload, sizeof payload);
    cr_assert_eq(shoal_envelope_report_chunk_init(&env, &body, session, sizeof session, &ch, NULL),
                 SHOAL_OK);
    cr_assert_eq(env.body_case, SHOAL__ENVELOPE__BODY_REPORT_CHUNK);
    cr_assert_eq(env.report_chunk, &body);
    cr_assert_eq(body.session_id.data, session);
    cr_assert_eq(body.data.data, payload);
    cr_assert_eq(body.data.len, sizeof payload);
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    cr_assert_eq(shoal_envelope_check(&codec, &env, NULL), SHOAL_OK);
}

/* Each refusal: SHOAL_EINVAL, the message naming the field, and the
 * caller's envelope and body exactly as they were. */
static void refuse_report(const uint8_t *id, size_t id_len, shoal_chunk ch, const char *want)
{
    shoal_envelope env;
    Shoal__ReportChunk body;
    memset(&env, 0xa5, sizeof env);
    memset(&body, 0x5a, sizeof body);
    shoal_envelope env_before = env;
    Shoal__ReportChunk body_before = body;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_report_chunk_init(&env, &body, id, id_len, &ch, &ei), SHOAL_EINVAL,
                 "%s", want);
    cr_assert_str_eq(ei.msg, want);
    cr_assert_arr_eq(&env, &env_before, sizeof env);
    cr_assert_arr_eq(&body, &body_before, sizeof body);
}

Test(protocol_builders, report_chunk_refusals)
{
    uint8_t long_id[SHOAL_PROTOCOL_ID_MAX + 1] = {0};
    refuse_report(NULL, 4, chunk_of(0, 5, payload, 5), "ReportChunk: NULL argument");
    refuse_report(session, 16, chunk_of(0, 5, NULL, 5), "ReportChunk: NULL argument");
    refuse_report(session, 0, chunk_of(0, 5, payload, 5),
                  "ReportChunk.session_id: 0 bytes; must be 1 to 64");
    refuse_report(long_id, sizeof long_id, chunk_of(0, 5, payload, 5),
                  "ReportChunk.session_id: 65 bytes; must be 1 to 64");
    refuse_report(session, 16, chunk_of(0, 5, payload, 0),
                  "ReportChunk.data: empty; a chunk carries at least 1 byte");
    refuse_report(session, 16, chunk_of(0, 0, payload, 5),
                  "ReportChunk.total_size: 0 is out of range; must be 1 to 18446744073709551615");
    refuse_report(session, 16, chunk_of(1, 5, payload, 5),
                  "ReportChunk.data: bytes [1, +5) run past total_size 5");
    refuse_report(session, 16, chunk_of(UINT64_MAX - 1, UINT64_MAX, payload, 5),
                  "ReportChunk.data: bytes [18446744073709551614, +5) run past total_size "
                  "18446744073709551615");
}

Test(protocol_builders, model_chunk_refusals)
{
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    Shoal__ModelChunk body = SHOAL__MODEL_CHUNK__INIT;
    shoal_chunk ch = chunk_of(0, 5, payload, 5);
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_model_chunk_init(NULL, &body, session, 16, &ch, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_model_chunk_init(&env, NULL, session, 16, &ch, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_model_chunk_init(&env, &body, session, 16, NULL, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_model_chunk_init(&env, &body, session, 0, &ch, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "ModelChunk.checkpoint_id: 0 bytes; must be 1 to 64");
    cr_assert_eq(env.body_case, SHOAL__ENVELOPE__BODY__NOT_SET, "a refusal changed the envelope");
    cr_assert_eq(body.has_data, 0, "a refusal changed the body");
}

/* The encoder refuses what the builder refuses, and what the codec's limit
 * refuses, leaving *out NULL. */
Test(protocol_builders, encode_refusals_leave_no_output)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    codec.max_message_bytes = SHOAL_PROTOCOL_MAX_MESSAGE_MIN;
    static uint8_t big[SHOAL_PROTOCOL_MAX_MESSAGE_MIN];
    shoal_chunk too_big = chunk_of(0, sizeof big, big, sizeof big);
    uint8_t *out = (uint8_t *)&codec; /* any non-NULL value */
    size_t out_len = 0;
    shoal_errinfo ei = {0};
    cr_assert_eq(
        shoal_envelope_model_chunk_encode(&codec, session, 16, &too_big, &out, &out_len, &ei),
        SHOAL_ELIMIT);
    cr_assert_null(out);
    cr_assert(strstr(ei.msg, "above the message limit of 8192 bytes") != NULL, "%s", ei.msg);

    shoal_chunk fits = chunk_of(0, 5, payload, 5);
    out = (uint8_t *)&codec;
    cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, session, 0, &fits, &out, &out_len, &ei),
                 SHOAL_EINVAL);
    cr_assert_null(out);
    codec.max_message_bytes = 0;
    out = (uint8_t *)&codec;
    cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, session, 16, &fits, &out, &out_len, &ei),
                 SHOAL_EINVAL, "a bad codec is refused");
    cr_assert_null(out);
    cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, session, 16, &fits, NULL, &out_len, &ei),
                 SHOAL_EINVAL);
}

/* The CheckIn builder: what it says decodes back, with and without the
 * secure-aggregation offer and a resume; what the codec would refuse is
 * refused with the field named. */
Test(protocol_builders, checkin_decodes_to_its_fields)
{
    static const uint8_t token[] = "a-device-token", held[8] = {1, 2, 3, 4, 5, 6, 7, 8},
                         resumed[16] = {9};
    /* Both ends check it as a message from a device. */
    shoal_codec device = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    for (int plus = 0; plus <= 1; plus++) {
        shoal_checkin_fields f = {.population = "keyboard",
                                  .auth_token = token,
                                  .auth_token_len = sizeof token - 1,
                                  .sdk_version = "test/1",
                                  .max_model_bytes = 1u << 20,
                                  .secure_aggregation = plus,
                                  .held_checkpoint_id = held,
                                  .held_checkpoint_id_len = sizeof held,
                                  .resume_session_id = plus ? resumed : NULL,
                                  .resume_session_id_len = plus ? sizeof resumed : 0};
        shoal_checkin_body body;
        shoal_envelope env;
        shoal_errinfo ei = {0};
        cr_assert_eq(shoal_envelope_checkin_init(&env, &body, &f, &ei), SHOAL_OK, "%s", ei.msg);
        uint8_t *bytes = NULL;
        size_t len = 0;
        cr_assert_eq(shoal_envelope_encode(&device, &env, &bytes, &len, &ei), SHOAL_OK, "%s",
                     ei.msg);
        shoal_envelope *got = NULL;
        cr_assert_eq(shoal_envelope_decode(&device, bytes, len, &got, &ei), SHOAL_OK, "%s", ei.msg);
        const Shoal__CheckIn *ci = got->check_in;
        cr_assert_str_eq(ci->population, "keyboard");
        cr_assert_eq(ci->protocol_version, SHOAL_PROTOCOL_VERSION);
        cr_assert_eq(ci->auth_token.len, sizeof token - 1);
        cr_assert_arr_eq(ci->held_checkpoint_id.data, held, sizeof held);
        cr_assert_eq(ci->capabilities->max_model_bytes, 1u << 20);
        cr_assert_eq(ci->capabilities->n_encodings, plus ? 3u : 1u);
        cr_assert_eq(ci->capabilities->secure_aggregation, plus);
        cr_assert_eq(ci->resume != NULL, plus);
        if (plus)
            cr_assert_arr_eq(ci->resume->session_id.data, resumed, sizeof resumed);
        shoal_envelope_free(got);
        shoal_free(bytes);
    }
    shoal_checkin_fields bad = {.population = "keyboard",
                                .auth_token = token,
                                .auth_token_len = sizeof token - 1,
                                .sdk_version = "test/1"};
    shoal_checkin_body body;
    shoal_envelope env;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_envelope_checkin_init(&env, &body, &bad, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "max_model_bytes"), "%s", ei.msg);
    bad.max_model_bytes = 1;
    bad.population = NULL;
    cr_assert_eq(shoal_envelope_checkin_init(&env, &body, &bad, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "population"), "%s", ei.msg);
}
