/* Envelope codec: round trips of every message, and every refusal with its
 * message, on both the encode and the decode path. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "shoal/alloc.h"
#include "shoal/envelope.h"

/* Encodes f->env, decodes it again, re-encodes the result: the bytes must
 * be identical and the decoded envelope is returned for field checks. */
static shoal_envelope *round_trip(const fixture *f, shoal_peer sender)
{
    const shoal_codec codec = shoal_codec_defaults(sender);
    shoal_errinfo ei = {{0}};
    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_envelope_encode(&codec, &f->env, &bytes, &len, &ei), SHOAL_OK, "%s", ei.msg);
    /* The codec's bytes are protobuf-c's: a second encoder agrees. */
    size_t raw_len;
    uint8_t *raw = fx_pack_raw(&f->env, &raw_len);
    cr_assert_eq(raw_len, len);
    cr_assert_eq(memcmp(raw, bytes, len), 0);
    free(raw);

    shoal_envelope *env = NULL;
    cr_assert_eq(shoal_envelope_decode(&codec, bytes, len, &env, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(env);
    cr_assert_eq(env->body_case, f->env.body_case);

    uint8_t *again = NULL;
    size_t again_len = 0;
    cr_assert_eq(shoal_envelope_encode(&codec, env, &again, &again_len, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(again_len, len);
    cr_assert_eq(memcmp(again, bytes, len), 0);
    shoal_free(again);
    shoal_free(bytes);
    return env;
}

static int bin_eq(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

Test(protocol_envelope, check_in_round_trips_every_field)
{
    fixture f;
    fx_check_in(&f);
    f.encodings[1] = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED;
    f.caps.n_encodings = 2;
    f.resume.has_session_id = 1;
    f.resume.session_id.data = (uint8_t *)"session-old";
    f.resume.session_id.len = 11;
    Shoal__Resume init = SHOAL__RESUME__INIT;
    f.resume.base = init.base;
    f.check_in.resume = &f.resume;
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_DEVICE);
    const Shoal__CheckIn *c = env->check_in;
    cr_assert_eq(c->protocol_version, 1);
    cr_assert_str_eq(c->population, "keyboard-next-word");
    cr_assert(bin_eq(c->auth_token, "population-token-0123456789"));
    cr_assert_str_eq(c->sdk_version, "shoal-device 0.1.0");
    cr_assert_eq(c->capabilities->max_model_bytes, 64u << 20);
    cr_assert_eq(c->capabilities->n_encodings, 2);
    cr_assert_eq(c->capabilities->encodings[0], SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE);
    cr_assert_eq(c->capabilities->encodings[1],
                 SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED);
    cr_assert(c->capabilities->has_secure_aggregation && c->capabilities->secure_aggregation);
    cr_assert(bin_eq(c->held_checkpoint_id, "ckpt-41"));
    cr_assert(bin_eq(c->resume->session_id, "session-old"));
    cr_assert_str_eq(shoal_envelope_body_name(env), "CheckIn");
    shoal_envelope_free(env);
}

Test(protocol_envelope, accepted_round_trips_with_full_plan)
{
    fixture f;
    fx_accepted(&f);
    f.accepted.has_upload_resume_offset = 1;
    f.accepted.upload_resume_offset = 4096;
    f.accepted.has_max_message_bytes = 1;
    f.accepted.max_message_bytes = 65536;
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
    cr_assert_eq(env->check_in_result->result_case, SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED);
    const Shoal__CheckInResult__Accepted *a = env->check_in_result->accepted;
    cr_assert(bin_eq(a->session_id, "session-7f3a"));
    cr_assert_eq(a->round, 42);
    cr_assert_eq(a->task_kind, SHOAL__TASK_KIND__TASK_KIND_TRAIN);
    cr_assert_eq(a->model_size, 407080);
    cr_assert(bin_eq(a->checkpoint_id, "ckpt-42"));
    cr_assert_eq(a->retry_window->min_ms, 3600000);
    cr_assert_eq(a->retry_window->max_ms, 7200000);
    cr_assert_eq(a->upload_resume_offset, 4096);
    cr_assert(a->has_max_message_bytes);
    cr_assert_eq(a->max_message_bytes, 65536);
    const Shoal__Plan *p = a->plan;
    cr_assert_str_eq(p->model->architecture, "mlp");
    cr_assert_eq(p->model->n_input_shape, 3);
    cr_assert_eq(p->model->input_shape[1], 28);
    cr_assert_eq(p->model->classes, 10);
    cr_assert_eq(p->model->parameter_count, 101770);
    cr_assert_eq(p->optimizer->kind, SHOAL__OPTIMIZER_KIND__OPTIMIZER_MOMENTUM);
    cr_assert_float_eq(p->optimizer->learning_rate, 0.05f, 0);
    cr_assert_float_eq(p->optimizer->momentum, 0.9f, 0);
    cr_assert_eq(p->optimizer->epochs, 2);
    cr_assert_eq(p->optimizer->batch_size, 32);
    cr_assert_str_eq(p->selector->collection, "typed-words");
    cr_assert_eq(p->selector->start_time_unix_ms, 1700000000000);
    cr_assert_eq(p->selector->end_time_unix_ms, 1700600000000);
    cr_assert_eq(p->selector->max_examples, 500);
    cr_assert_eq(p->limits->max_duration_ms, 120000);
    cr_assert_eq(p->limits->min_examples, 20);
    cr_assert_eq(p->limits->max_examples, 5000);
    cr_assert_not_null(p->update_bound);
    cr_assert_float_eq(p->update_bound->l2_norm, 2.5f, 0);
    cr_assert_eq(p->report_deadline_ms, 600000);
    cr_assert_eq(p->model_encoding, SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE);
    cr_assert_eq(p->update_encoding, SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE);
    shoal_envelope_free(env);
}

Test(protocol_envelope, evaluate_plan_needs_no_optimizer_or_update_encoding)
{
    fixture f;
    fx_accepted(&f);
    f.plan.task_kind = f.accepted.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE;
    f.plan.optimizer = NULL;
    f.plan.has_update_encoding = 0;
    f.plan.update_bound = NULL;
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
    cr_assert_null(env->check_in_result->accepted->plan->optimizer);
    shoal_envelope_free(env);
}

Test(protocol_envelope, rejected_round_trips)
{
    fixture f;
    fx_rejected(&f);
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
    const Shoal__CheckInResult__Rejected *r = env->check_in_result->rejected;
    cr_assert_eq(r->reason, SHOAL__REASON__REASON_ROUND_FULL);
    cr_assert_str_eq(r->detail, "round 42 has selected 130 of 130 devices");
    cr_assert_eq(r->retry_window->min_ms, 60000);
    cr_assert_eq(r->retry_window->max_ms, 900000);
    shoal_envelope_free(env);
}

Test(protocol_envelope, model_chunk_round_trips)
{
    fixture f;
    fx_model_chunk(&f);
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
    const Shoal__ModelChunk *c = env->model_chunk;
    cr_assert(bin_eq(c->checkpoint_id, "ckpt-42"));
    cr_assert_eq(c->offset, 32);
    cr_assert_eq(c->total_size, 64);
    cr_assert_eq(c->data.len, 16);
    cr_assert_eq(memcmp(c->data.data, f.chunk_data, 16), 0);
    shoal_envelope_free(env);
}

Test(protocol_envelope, report_chunk_round_trips)
{
    fixture f;
    fx_report_chunk(&f);
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_DEVICE);
    const Shoal__ReportChunk *c = env->report_chunk;
    cr_assert(bin_eq(c->session_id, "session-7f3a"));
    cr_assert_eq(c->offset, 0);
    cr_assert_eq(c->total_size, 16);
    cr_assert_eq(memcmp(c->data.data, f.chunk_data, 16), 0);
    shoal_envelope_free(env);
}

Test(protocol_envelope, report_round_trips)
{
    fixture f;
    fx_report(&f);
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_DEVICE);
    const Shoal__Report *r = env->report;
    cr_assert_eq(r->outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED);
    cr_assert_eq(r->example_count, 480);
    cr_assert_eq(r->n_metrics, 2);
    cr_assert_str_eq(r->metrics[0]->name, "loss");
    cr_assert_eq(r->metrics[0]->value, 0.4375);
    cr_assert_str_eq(r->metrics[1]->name, "accuracy");
    cr_assert_eq(r->metrics[1]->value, 0.8125);
    cr_assert_eq(r->update->encoding, SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE);
    cr_assert_eq(r->update->element_count, 101770);
    cr_assert_eq(r->update->byte_size, 407080);
    cr_assert_not(r->has_unclipped);
    shoal_envelope_free(env);
    /* Adaptive clipping's bit, either way. */
    for (int bit = 0; bit < 2; bit++) {
        fx_report(&f);
        f.report.has_unclipped = 1;
        f.report.unclipped = bit;
        env = round_trip(&f, SHOAL_PEER_DEVICE);
        cr_assert(env->report->has_unclipped);
        cr_assert_eq(env->report->unclipped, bit);
        shoal_envelope_free(env);
    }
}

Test(protocol_envelope, every_report_outcome_round_trips)
{
    const Shoal__ReportOutcome outcomes[] = {
        SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED,
        SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INSUFFICIENT_DATA,
        SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR};
    for (size_t i = 0; i < 3; i++) {
        fixture f;
        fx_report(&f);
        f.report.outcome = outcomes[i];
        f.report.update = NULL;
        f.report.has_example_count = 0;
        if (outcomes[i] == SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR)
            f.report.error_detail = "example store is corrupt";
        shoal_envelope *env = round_trip(&f, SHOAL_PEER_DEVICE);
        cr_assert_eq(env->report->outcome, outcomes[i]);
        cr_assert_null(env->report->update);
        shoal_envelope_free(env);
    }
}

Test(protocol_envelope, report_ack_round_trips_every_status)
{
    const Shoal__ReportStatus statuses[] = {SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED,
                                            SHOAL__REPORT_STATUS__REPORT_STATUS_LATE,
                                            SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED};
    for (size_t i = 0; i < 3; i++) {
        fixture f;
        fx_report_ack(&f);
        f.ack.status = statuses[i];
        if (statuses[i] != SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED) {
            f.ack.has_reason = 0;
            f.ack.detail = NULL;
        }
        shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
        const Shoal__ReportAck *a = env->report_ack;
        cr_assert_eq(a->status, statuses[i]);
        cr_assert(bin_eq(a->session_id, "session-7f3a"));
        cr_assert_eq(a->retry_window->min_ms, 3600000);
        cr_assert_eq(a->retry_window->max_ms, 10800000);
        if (statuses[i] == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED) {
            cr_assert_eq(a->reason, SHOAL__REASON__REASON_SHAPE_MISMATCH);
            cr_assert_str_eq(a->detail, "update has 10 elements, plan expects 101770");
        }
        shoal_envelope_free(env);
    }
}

Test(protocol_envelope, abort_round_trips_both_directions)
{
    fixture f;
    fx_abort(&f);
    shoal_envelope *env = round_trip(&f, SHOAL_PEER_SERVER);
    cr_assert_eq(env->abort->reason, SHOAL__REASON__REASON_SHUTTING_DOWN);
    cr_assert_str_eq(env->abort->detail, "server is shutting down");
    cr_assert_eq(env->abort->retry_window->max_ms, 5000);
    shoal_envelope_free(env);

    /* A device's Abort needs no retry window. */
    fx_abort(&f);
    f.abort_msg.reason = SHOAL__REASON__REASON_DEVICE_INELIGIBLE;
    f.abort_msg.retry_window = NULL;
    env = round_trip(&f, SHOAL_PEER_DEVICE);
    cr_assert_eq(env->abort->reason, SHOAL__REASON__REASON_DEVICE_INELIGIBLE);
    cr_assert_null(env->abort->retry_window);
    shoal_envelope_free(env);
}

Test(protocol_envelope, unknown_fields_inside_messages_are_ignored)
{
    /* Forward compatibility: a newer peer adds field 99 to CheckIn. */
    fixture f;
    fx_check_in(&f);
    size_t len;
    uint8_t *raw = fx_pack_raw(&f.env, &len);
    /* Envelope{1: CheckIn{..., 99: varint 5}}: extend CheckIn's length. */
    cr_assert_eq(raw[0], 0x0a);
    cr_assert_lt(raw[1], 0x7e); /* one-byte length */
    uint8_t *grown = malloc(len + 3);
    memcpy(grown, raw, len);
    grown[1] = (uint8_t)(raw[1] + 3);
    grown[len] = 0x98; /* field 99, varint: (99 << 3) = 792 = 0x98 0x06 */
    grown[len + 1] = 0x06;
    grown[len + 2] = 0x05;
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    shoal_envelope *env = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_decode(&codec, grown, len + 3, &env, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(env->check_in->population, "keyboard-next-word");
    shoal_envelope_free(env);
    free(grown);
    free(raw);
}

/* An over-long tag can spell field number 0 (0x81 0x00 is tag 1: field
 * 0, fixed64), which protobuf-c keeps as an unknown field but would
 * re-encode as a single 0x01 no parser takes; numbers past 2^29 - 1 are
 * not valid either. Both are refused, at any depth, naming the message. */
Test(protocol_envelope, invalid_field_numbers_are_refused_at_any_depth)
{
    fixture f;
    fx_check_in(&f);
    size_t len;
    uint8_t *raw = fx_pack_raw(&f.env, &len);
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *grown = malloc(len + 16);
    static const uint8_t field0[] = {0x81, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
    /* Outside CheckIn, then inside it. */
    for (int inside = 0; inside < 2; inside++) {
        memcpy(grown, raw, len);
        memcpy(grown + len, field0, sizeof field0);
        if (inside)
            grown[1] = (uint8_t)(raw[1] + sizeof field0);
        shoal_envelope *env = NULL;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_envelope_decode(&codec, grown, len + sizeof field0, &env, &ei),
                     SHOAL_EPROTO);
        cr_assert_null(env);
        cr_assert(strstr(ei.msg, inside ? "CheckIn: field number 0" : "Envelope: field number 0"),
                  "%s", ei.msg);
    }
    /* Field 2^29 (varint 0x80 0x80 0x80 0x80 0x10, wire type 0) = 5. */
    static const uint8_t huge[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x05};
    memcpy(grown, raw, len);
    memcpy(grown + len, huge, sizeof huge);
    shoal_envelope *env = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_decode(&codec, grown, len + sizeof huge, &env, &ei), SHOAL_EPROTO);
    cr_assert(strstr(ei.msg, "field number 536870912 is not valid"), "%s", ei.msg);
    free(grown);
    free(raw);
}

Test(protocol_envelope, codec_defaults)
{
    shoal_codec c = shoal_codec_defaults(SHOAL_PEER_SERVER);
    cr_assert_eq(c.max_message_bytes, 1048576);
    cr_assert_eq(c.version_min, 1);
    cr_assert_eq(c.version_max, 1);
    cr_assert_eq(c.sender, SHOAL_PEER_SERVER);
}

Test(protocol_envelope, enum_names)
{
    cr_assert_str_eq(shoal_protocol_encoding_name(1), "FLOAT32_LE");
    cr_assert_str_eq(shoal_protocol_encoding_name(3), "UINT32_RING");
    cr_assert_str_eq(shoal_protocol_encoding_name(9), "?");
    cr_assert_str_eq(shoal_protocol_outcome_name(2), "INTERRUPTED");
    cr_assert_str_eq(shoal_protocol_outcome_name(-1), "?");
    cr_assert_str_eq(shoal_protocol_status_name(2), "LATE");
    cr_assert_str_eq(shoal_protocol_reason_name(SHOAL__REASON__REASON_VERSION_UNSUPPORTED),
                     "VERSION_UNSUPPORTED");
    cr_assert_str_eq(shoal_protocol_reason_name(SHOAL__REASON__REASON_CANCELLED), "CANCELLED");
    cr_assert_str_eq(shoal_protocol_encoding_name(4), "UINT64_RING");
    cr_assert_str_eq(shoal_protocol_reason_name(SHOAL__REASON__REASON_SECAGG_FAILED),
                     "SECAGG_FAILED");
    cr_assert_str_eq(shoal_protocol_reason_name(SHOAL__REASON__REASON_NORM_EXCEEDED),
                     "NORM_EXCEEDED");
    cr_assert_str_eq(shoal_protocol_reason_name(21), "?");
}
