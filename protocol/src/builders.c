/* Builders of the chunk messages: the one place their fields are filled. */
#include <string.h>

#include "shoal/envelope.h"

/* Validates the filled message with the codec's own rules, so a builder
 * refuses exactly what shoal_envelope_encode and the peer would. */
static shoal_err check_built(const shoal_envelope *env, shoal_errinfo *ei)
{
    shoal_codec any = shoal_codec_defaults(SHOAL_PEER_ANY);
    shoal_err err = shoal_envelope_check(&any, env, ei);
    return err == SHOAL_EPROTO ? SHOAL_EINVAL : err;
}

/* Fills the fields both chunk messages share. protobuf-c's bytes fields are
 * not const; encoding only reads them. */
static void fill(ProtobufCBinaryData *id, uint64_t *offset, uint64_t *total,
                 ProtobufCBinaryData *data, const uint8_t *id_bytes, size_t id_len,
                 const shoal_chunk *chunk)
{
    *id = (ProtobufCBinaryData){.len = id_len, .data = (uint8_t *)(uintptr_t)id_bytes};
    *offset = chunk->offset;
    *total = chunk->total;
    *data = (ProtobufCBinaryData){.len = chunk->len, .data = (uint8_t *)(uintptr_t)chunk->data};
}

static int null_arguments(const shoal_envelope *env, const void *body, const uint8_t *id,
                          const shoal_chunk *chunk)
{
    return !env || !body || !id || !chunk || !chunk->data;
}

shoal_err shoal_envelope_model_chunk_init(shoal_envelope *env, Shoal__ModelChunk *body,
                                          const uint8_t *checkpoint_id, size_t checkpoint_id_len,
                                          const shoal_chunk *chunk, shoal_errinfo *ei)
{
    if (null_arguments(env, body, checkpoint_id, chunk))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "ModelChunk: NULL argument");
    Shoal__ModelChunk mc = SHOAL__MODEL_CHUNK__INIT;
    mc.has_checkpoint_id = mc.has_offset = mc.has_total_size = mc.has_data = 1;
    fill(&mc.checkpoint_id, &mc.offset, &mc.total_size, &mc.data, checkpoint_id, checkpoint_id_len,
         chunk);
    shoal_envelope e = SHOAL__ENVELOPE__INIT;
    e.body_case = SHOAL__ENVELOPE__BODY_MODEL_CHUNK;
    e.model_chunk = &mc;
    shoal_err err = check_built(&e, ei);
    if (err == SHOAL_OK) {
        *body = mc;
        *env = e;
        env->model_chunk = body;
    }
    return err;
}

shoal_err shoal_envelope_report_chunk_init(shoal_envelope *env, Shoal__ReportChunk *body,
                                           const uint8_t *session_id, size_t session_id_len,
                                           const shoal_chunk *chunk, shoal_errinfo *ei)
{
    if (null_arguments(env, body, session_id, chunk))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "ReportChunk: NULL argument");
    Shoal__ReportChunk rc = SHOAL__REPORT_CHUNK__INIT;
    rc.has_session_id = rc.has_offset = rc.has_total_size = rc.has_data = 1;
    fill(&rc.session_id, &rc.offset, &rc.total_size, &rc.data, session_id, session_id_len, chunk);
    shoal_envelope e = SHOAL__ENVELOPE__INIT;
    e.body_case = SHOAL__ENVELOPE__BODY_REPORT_CHUNK;
    e.report_chunk = &rc;
    shoal_err err = check_built(&e, ei);
    if (err == SHOAL_OK) {
        *body = rc;
        *env = e;
        env->report_chunk = body;
    }
    return err;
}

shoal_err shoal_envelope_checkin_init(shoal_envelope *env, shoal_checkin_body *body,
                                      const shoal_checkin_fields *f, shoal_errinfo *ei)
{
    if (!env || !body || !f || (!f->auth_token && f->auth_token_len) ||
        (!f->held_checkpoint_id && f->held_checkpoint_id_len) ||
        (!f->resume_session_id && f->resume_session_id_len))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "CheckIn: NULL argument");
    static const Shoal__TensorEncoding encodings[3] = {
        SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE,
        SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING,
        SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING};
    memcpy(body->encodings, encodings, sizeof encodings);
    Shoal__Capabilities *caps = &body->capabilities;
    *caps = (Shoal__Capabilities)SHOAL__CAPABILITIES__INIT;
    caps->has_max_model_bytes = 1;
    caps->max_model_bytes = f->max_model_bytes;
    caps->n_encodings = f->secure_aggregation ? 3 : 1;
    caps->encodings = body->encodings;
    caps->has_secure_aggregation = f->secure_aggregation != 0;
    caps->secure_aggregation = f->secure_aggregation != 0;
    caps->has_adaptive_clipping = f->adaptive_clipping != 0;
    caps->adaptive_clipping = f->adaptive_clipping != 0;
    Shoal__CheckIn *ci = &body->check_in;
    *ci = (Shoal__CheckIn)SHOAL__CHECK_IN__INIT;
    ci->has_protocol_version = 1;
    ci->protocol_version = SHOAL_PROTOCOL_VERSION;
    ci->population = (char *)(uintptr_t)f->population;
    ci->has_auth_token = 1;
    ci->auth_token = (ProtobufCBinaryData){.len = f->auth_token_len,
                                           .data = (uint8_t *)(uintptr_t)f->auth_token};
    ci->sdk_version = (char *)(uintptr_t)f->sdk_version;
    ci->capabilities = caps;
    if (f->held_checkpoint_id_len) {
        ci->has_held_checkpoint_id = 1;
        ci->held_checkpoint_id = (ProtobufCBinaryData){
            .len = f->held_checkpoint_id_len, .data = (uint8_t *)(uintptr_t)f->held_checkpoint_id};
    }
    body->resume = (Shoal__Resume)SHOAL__RESUME__INIT;
    if (f->resume_session_id_len) {
        body->resume.has_session_id = 1;
        body->resume.session_id = (ProtobufCBinaryData){
            .len = f->resume_session_id_len, .data = (uint8_t *)(uintptr_t)f->resume_session_id};
        ci->resume = &body->resume;
    }
    *env = (shoal_envelope)SHOAL__ENVELOPE__INIT;
    env->body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    env->check_in = ci;
    return check_built(env, ei);
}

shoal_err shoal_envelope_model_chunk_encode(const shoal_codec *codec, const uint8_t *checkpoint_id,
                                            size_t checkpoint_id_len, const shoal_chunk *chunk,
                                            uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    shoal_envelope env;
    Shoal__ModelChunk body;
    shoal_err err =
        shoal_envelope_model_chunk_init(&env, &body, checkpoint_id, checkpoint_id_len, chunk, ei);
    return err != SHOAL_OK ? err : shoal_envelope_encode(codec, &env, out, out_len, ei);
}

int shoal_plan_reports_unclipped(const Shoal__Plan *plan)
{
    return plan && plan->has_report_unclipped && plan->report_unclipped;
}
