/* Every refusal of the envelope codec, with its exact message, on all three
 * paths: shoal_envelope_check (SHOAL_EPROTO), shoal_envelope_encode
 * (SHOAL_EINVAL, nothing allocated) and shoal_envelope_decode of the same
 * message packed without validation (SHOAL_EPROTO, no envelope). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "shoal/alloc.h"
#include "shoal/envelope.h"

static void expect_refused(const fixture *f, shoal_peer sender, const char *expected)
{
    fx_expect_refused(&f->env, sender, expected);
}

/* REFUSE(name, builder, sender, mutation, expected message) */
#define REFUSE(name, builder, sender, mutation, expected)                                          \
    Test(protocol_refusal, name)                                                                   \
    {                                                                                              \
        fixture fx;                                                                                \
        fixture *f = &fx;                                                                          \
        builder(f);                                                                                \
        mutation;                                                                                  \
        expect_refused(f, sender, expected);                                                       \
    }

/* Backing storage for over-long fields, so that packing them stays in
 * bounds. */
static uint8_t long_id[65];
static Shoal__Metric *many_metrics[65];

static void fill_metrics(fixture *f)
{
    for (size_t i = 0; i < 65; i++)
        many_metrics[i] = f->metrics[0];
    f->report.metrics = many_metrics;
    f->report.n_metrics = 65;
}

#define DEV SHOAL_PEER_DEVICE
#define SRV SHOAL_PEER_SERVER
#define ANY SHOAL_PEER_ANY

/* ---- Envelope ---- */
REFUSE(envelope_without_body, fx_abort, ANY, f->env.body_case = SHOAL__ENVELOPE__BODY__NOT_SET,
       "Envelope.body: no message set")
REFUSE(device_may_not_send_check_in_result, fx_rejected, DEV, (void)0,
       "Envelope.body: CheckInResult is sent by the server, not the device")
REFUSE(server_may_not_send_report, fx_report, SRV, (void)0,
       "Envelope.body: Report is sent by the device, not the server")
REFUSE(server_may_not_send_check_in, fx_check_in, SRV, (void)0,
       "Envelope.body: CheckIn is sent by the device, not the server")
REFUSE(device_may_not_send_model_chunk, fx_model_chunk, DEV, (void)0,
       "Envelope.body: ModelChunk is sent by the server, not the device")

/* ---- CheckIn ---- */
REFUSE(check_in_without_version, fx_check_in, DEV, f->check_in.has_protocol_version = 0,
       "CheckIn.protocol_version: missing (required)")
REFUSE(check_in_future_version, fx_check_in, DEV, f->check_in.protocol_version = 7,
       "CheckIn.protocol_version: version 7 is not supported; this peer speaks version 1")
REFUSE(check_in_version_zero, fx_check_in, DEV, f->check_in.protocol_version = 0,
       "CheckIn.protocol_version: version 0 is not supported; this peer speaks version 1")
REFUSE(check_in_without_population, fx_check_in, DEV, f->check_in.population = NULL,
       "CheckIn.population: missing (required)")
REFUSE(check_in_empty_population, fx_check_in, DEV, f->check_in.population = "",
       "CheckIn.population: empty; must be 1 to 128 bytes")
REFUSE(check_in_long_population, fx_check_in, DEV,
       f->check_in.population = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
       "CheckIn.population: longer than 128 bytes")
REFUSE(check_in_without_token, fx_check_in, DEV, f->check_in.has_auth_token = 0,
       "CheckIn.auth_token: missing (required)")
REFUSE(check_in_empty_token, fx_check_in, DEV, f->check_in.auth_token.len = 0,
       "CheckIn.auth_token: 0 bytes; must be 1 to 4096")
REFUSE(check_in_without_sdk_version, fx_check_in, DEV, f->check_in.sdk_version = NULL,
       "CheckIn.sdk_version: missing (required)")
REFUSE(check_in_without_capabilities, fx_check_in, DEV, f->check_in.capabilities = NULL,
       "CheckIn.capabilities: missing (required)")
REFUSE(check_in_without_max_model_bytes, fx_check_in, DEV, f->caps.has_max_model_bytes = 0,
       "CheckIn.capabilities.max_model_bytes: missing (required)")
REFUSE(check_in_zero_max_model_bytes, fx_check_in, DEV, f->caps.max_model_bytes = 0,
       "CheckIn.capabilities.max_model_bytes: 0 is out of range; must be 1 to "
       "18446744073709551615")
REFUSE(check_in_no_encodings, fx_check_in, DEV, f->caps.n_encodings = 0,
       "CheckIn.capabilities.encodings: 0 entries; must be 1 to 8")
REFUSE(check_in_unknown_encoding, fx_check_in, DEV,
       (f->caps.n_encodings = 2, f->encodings[1] = (Shoal__TensorEncoding)9),
       "CheckIn.capabilities.encodings[1]: 9 is not a known encoding; must be 1 to 4")
REFUSE(check_in_unspecified_encoding, fx_check_in, DEV,
       f->encodings[0] = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UNSPECIFIED,
       "CheckIn.capabilities.encodings[0]: 0 is not a known encoding; must be 1 to 4")
REFUSE(check_in_duplicate_encoding, fx_check_in, DEV,
       (f->caps.n_encodings = 2, f->encodings[1] = f->encodings[0]),
       "CheckIn.capabilities.encodings[1]: duplicate encoding FLOAT32_LE")
REFUSE(check_in_long_held_checkpoint, fx_check_in, DEV,
       (f->check_in.held_checkpoint_id.len = 65, f->check_in.held_checkpoint_id.data = long_id),
       "CheckIn.held_checkpoint_id: 65 bytes; must be 0 to 64")
REFUSE(check_in_resume_without_session, fx_check_in, DEV,
       (f->resume = (Shoal__Resume)SHOAL__RESUME__INIT, f->check_in.resume = &f->resume),
       "CheckIn.resume.session_id: missing (required)")

/* ---- CheckInResult ---- */
REFUSE(result_without_case, fx_rejected, SRV,
       f->result.result_case = SHOAL__CHECK_IN_RESULT__RESULT__NOT_SET,
       "CheckInResult.result: neither accepted nor rejected is set")
REFUSE(rejected_without_window, fx_rejected, SRV, f->rejected.retry_window = NULL,
       "CheckInResult.rejected.retry_window: missing (required)")
REFUSE(rejected_window_without_max, fx_rejected, SRV, f->window.has_max_ms = 0,
       "CheckInResult.rejected.retry_window.max_ms: missing (required)")
REFUSE(rejected_window_inverted, fx_rejected, SRV, (f->window.min_ms = 10, f->window.max_ms = 9),
       "CheckInResult.rejected.retry_window: min_ms 10 is greater than max_ms 9")
REFUSE(rejected_window_over_a_week, fx_rejected, SRV, f->window.max_ms = 604800001,
       "CheckInResult.rejected.retry_window.max_ms: 604800001 is out of range; must be 0 to "
       "604800000")
REFUSE(rejected_without_reason, fx_rejected, SRV, f->rejected.has_reason = 0,
       "CheckInResult.rejected.reason: missing (required)")
REFUSE(rejected_unknown_reason, fx_rejected, SRV, f->rejected.reason = (Shoal__Reason)21,
       "CheckInResult.rejected.reason: 21 is not a valid value; must be 1 to 20")
REFUSE(rejected_unspecified_reason, fx_rejected, SRV,
       f->rejected.reason = SHOAL__REASON__REASON_UNSPECIFIED,
       "CheckInResult.rejected.reason: 0 is not a valid value; must be 1 to 20")
REFUSE(accepted_without_session, fx_accepted, SRV, f->accepted.has_session_id = 0,
       "CheckInResult.accepted.session_id: missing (required)")
REFUSE(accepted_long_session, fx_accepted, SRV,
       (f->accepted.session_id.len = 65, f->accepted.session_id.data = long_id),
       "CheckInResult.accepted.session_id: 65 bytes; must be 1 to 64")
REFUSE(accepted_without_round, fx_accepted, SRV, f->accepted.has_round = 0,
       "CheckInResult.accepted.round: missing (required)")
REFUSE(accepted_without_task_kind, fx_accepted, SRV, f->accepted.has_task_kind = 0,
       "CheckInResult.accepted.task_kind: missing (required)")
REFUSE(accepted_without_plan, fx_accepted, SRV, f->accepted.plan = NULL,
       "CheckInResult.accepted.plan: missing (required)")
REFUSE(accepted_task_kind_differs_from_plan, fx_accepted, SRV,
       f->accepted.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE,
       "CheckInResult.accepted.task_kind: 2 differs from plan.task_kind 1")
REFUSE(accepted_zero_model_size, fx_accepted, SRV, f->accepted.model_size = 0,
       "CheckInResult.accepted.model_size: 0 is out of range; must be 1 to 18446744073709551615")
REFUSE(accepted_without_checkpoint, fx_accepted, SRV, f->accepted.has_checkpoint_id = 0,
       "CheckInResult.accepted.checkpoint_id: missing (required)")
REFUSE(accepted_without_window, fx_accepted, SRV, f->accepted.retry_window = NULL,
       "CheckInResult.accepted.retry_window: missing (required)")
REFUSE(accepted_tiny_message_limit, fx_accepted, SRV,
       (f->accepted.has_max_message_bytes = 1, f->accepted.max_message_bytes = 8191),
       "CheckInResult.accepted.max_message_bytes: 8191 is out of range; must be 8192 to "
       "4294967295")

/* ---- Plan ---- */
REFUSE(plan_unknown_task_kind, fx_accepted, SRV, f->plan.task_kind = (Shoal__TaskKind)3,
       "Plan.task_kind: 3 is not a valid value; must be 1 to 2")
REFUSE(plan_without_model, fx_accepted, SRV, f->plan.model = NULL, "Plan.model: missing (required)")
REFUSE(plan_without_architecture, fx_accepted, SRV, f->model.architecture = NULL,
       "Plan.model.architecture: missing (required)")
REFUSE(plan_rank_zero, fx_accepted, SRV, f->model.n_input_shape = 0,
       "Plan.model.input_shape: rank 0; must be 1 to 4")
REFUSE(plan_zero_dim, fx_accepted, SRV, f->input_shape[2] = 0,
       "Plan.model.input_shape[2]: 0 is out of range; must be 1 to 65536")
REFUSE(plan_one_class, fx_accepted, SRV, f->model.classes = 1,
       "Plan.model.classes: 1 is out of range; must be 2 to 65536")
REFUSE(plan_without_parameter_count, fx_accepted, SRV, f->model.has_parameter_count = 0,
       "Plan.model.parameter_count: missing (required)")
REFUSE(plan_train_without_optimizer, fx_accepted, SRV, f->plan.optimizer = NULL,
       "Plan.optimizer: missing (required for TRAIN tasks)")
REFUSE(plan_unknown_optimizer, fx_accepted, SRV, f->optimizer.kind = (Shoal__OptimizerKind)7,
       "Plan.optimizer.kind: 7 is not a valid value; must be 1 to 6")
REFUSE(plan_negative_learning_rate, fx_accepted, SRV, f->optimizer.learning_rate = -1.0f,
       "Plan.optimizer.learning_rate: -1 is out of range; must be finite and > 0")
REFUSE(plan_nan_learning_rate, fx_accepted, SRV, f->optimizer.learning_rate = NAN,
       "Plan.optimizer.learning_rate: nan is out of range; must be finite and > 0")
REFUSE(plan_momentum_one, fx_accepted, SRV, f->optimizer.momentum = 1.0f,
       "Plan.optimizer.momentum: 1 is out of range; must be >= 0 and < 1")
REFUSE(plan_negative_weight_decay, fx_accepted, SRV, f->optimizer.weight_decay = -0.5f,
       "Plan.optimizer.weight_decay: -0.5 is out of range; must be finite and >= 0")
REFUSE(plan_zero_eps, fx_accepted, SRV, (f->optimizer.has_eps = 1, f->optimizer.eps = 0),
       "Plan.optimizer.eps: 0 is out of range; must be finite and > 0")
REFUSE(plan_zero_epochs, fx_accepted, SRV, f->optimizer.epochs = 0,
       "Plan.optimizer.epochs: 0 is out of range; must be 1 to 1000")
REFUSE(plan_huge_batch, fx_accepted, SRV, f->optimizer.batch_size = 65537,
       "Plan.optimizer.batch_size: 65537 is out of range; must be 1 to 65536")
REFUSE(plan_without_selector, fx_accepted, SRV, f->plan.selector = NULL,
       "Plan.selector: missing (required)")
REFUSE(plan_selector_without_collection, fx_accepted, SRV, f->selector.collection = NULL,
       "Plan.selector.collection: missing (required)")
REFUSE(plan_selector_empty_window, fx_accepted, SRV,
       f->selector.end_time_unix_ms = f->selector.start_time_unix_ms,
       "Plan.selector.end_time_unix_ms: 1700000000000 is not after start_time_unix_ms "
       "1700000000000")
REFUSE(plan_without_limits, fx_accepted, SRV, f->plan.limits = NULL,
       "Plan.limits: missing (required)")
REFUSE(plan_zero_duration, fx_accepted, SRV, f->limits.max_duration_ms = 0,
       "Plan.limits.max_duration_ms: 0 is out of range; must be 1 to 18446744073709551615")
REFUSE(plan_zero_max_examples, fx_accepted, SRV, f->limits.max_examples = 0,
       "Plan.limits.max_examples: 0 is out of range; must be 1 to 4294967295")
REFUSE(plan_max_examples_below_min_examples, fx_accepted, SRV, f->limits.max_examples = 19,
       "Plan.limits.max_examples: 19 is less than min_examples 20; the server must allow at "
       "least the examples it requires")
REFUSE(plan_update_bound_without_l2_norm, fx_accepted, SRV, f->update_bound.has_l2_norm = 0,
       "Plan.update_bound.l2_norm: missing (required)")
REFUSE(plan_update_bound_zero, fx_accepted, SRV, f->update_bound.l2_norm = 0.0f,
       "Plan.update_bound.l2_norm: 0 is out of range; must be finite and > 0")
REFUSE(plan_update_bound_infinite, fx_accepted, SRV, f->update_bound.l2_norm = INFINITY,
       "Plan.update_bound.l2_norm: inf is out of range; must be finite and > 0")
REFUSE(plan_update_bound_on_evaluate, fx_accepted, SRV,
       (f->plan.task_kind = f->accepted.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE,
        f->plan.optimizer = NULL, f->plan.has_update_encoding = 0),
       "Plan.update_bound: set on an EVALUATE plan; it bounds training updates only")
REFUSE(plan_report_unclipped_without_update_bound, fx_accepted, SRV,
       (f->plan.has_report_unclipped = f->plan.report_unclipped = 1, f->plan.update_bound = NULL),
       "Plan.report_unclipped: set on a plan without update_bound; the bit is measured against "
       "update_bound.l2_norm, so it needs a TRAIN plan with update_bound")
REFUSE(plan_report_unclipped_on_evaluate, fx_accepted, SRV,
       (f->plan.task_kind = f->accepted.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE,
        f->plan.optimizer = NULL, f->plan.has_update_encoding = 0, f->plan.update_bound = NULL,
        f->plan.has_report_unclipped = f->plan.report_unclipped = 1),
       "Plan.report_unclipped: set on an EVALUATE plan; the bit is measured against "
       "update_bound.l2_norm, so it needs a TRAIN plan with update_bound")
REFUSE(plan_without_deadline, fx_accepted, SRV, f->plan.has_report_deadline_ms = 0,
       "Plan.report_deadline_ms: missing (required)")
REFUSE(plan_without_model_encoding, fx_accepted, SRV, f->plan.has_model_encoding = 0,
       "Plan.model_encoding: missing (required)")
REFUSE(plan_train_without_update_encoding, fx_accepted, SRV, f->plan.has_update_encoding = 0,
       "Plan.update_encoding: missing (required for TRAIN tasks)")
REFUSE(plan_unknown_update_encoding, fx_accepted, SRV,
       f->plan.update_encoding = (Shoal__TensorEncoding)5,
       "Plan.update_encoding: 5 is not a valid value; must be 1 to 4")

/* ---- ModelChunk / ReportChunk ---- */
REFUSE(model_chunk_without_checkpoint, fx_model_chunk, SRV, f->model_chunk.has_checkpoint_id = 0,
       "ModelChunk.checkpoint_id: missing (required)")
REFUSE(model_chunk_without_offset, fx_model_chunk, SRV, f->model_chunk.has_offset = 0,
       "ModelChunk.offset: missing (required)")
REFUSE(model_chunk_without_total, fx_model_chunk, SRV, f->model_chunk.has_total_size = 0,
       "ModelChunk.total_size: missing (required)")
REFUSE(model_chunk_zero_total, fx_model_chunk, SRV, f->model_chunk.total_size = 0,
       "ModelChunk.total_size: 0 is out of range; must be 1 to 18446744073709551615")
REFUSE(model_chunk_without_data, fx_model_chunk, SRV, f->model_chunk.has_data = 0,
       "ModelChunk.data: missing (required)")
REFUSE(model_chunk_empty_data, fx_model_chunk, SRV, f->model_chunk.data.len = 0,
       "ModelChunk.data: empty; a chunk carries at least 1 byte")
REFUSE(model_chunk_past_total, fx_model_chunk, SRV, f->model_chunk.offset = 49,
       "ModelChunk.data: bytes [49, +16) run past total_size 64")
REFUSE(model_chunk_offset_overflow, fx_model_chunk, SRV,
       (f->model_chunk.offset = UINT64_MAX - 3, f->model_chunk.total_size = UINT64_MAX),
       "ModelChunk.data: bytes [18446744073709551612, +16) run past total_size "
       "18446744073709551615")
REFUSE(report_chunk_without_session, fx_report_chunk, DEV, f->report_chunk.has_session_id = 0,
       "ReportChunk.session_id: missing (required)")
REFUSE(report_chunk_offset_past_total, fx_report_chunk, DEV, f->report_chunk.offset = 17,
       "ReportChunk.data: bytes [17, +16) run past total_size 16")

/* ---- Report ---- */
REFUSE(report_without_session, fx_report, DEV, f->report.has_session_id = 0,
       "Report.session_id: missing (required)")
REFUSE(report_without_outcome, fx_report, DEV, f->report.has_outcome = 0,
       "Report.outcome: missing (required)")
REFUSE(report_unspecified_outcome, fx_report, DEV,
       f->report.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_UNSPECIFIED,
       "Report.outcome: 0 is not a valid value; must be 1 to 4")
REFUSE(report_completed_without_count, fx_report, DEV, f->report.has_example_count = 0,
       "Report.example_count: missing (required for COMPLETED)")
REFUSE(report_completed_zero_examples, fx_report, DEV, f->report.example_count = 0,
       "Report.example_count: 0 is out of range; must be 1 to 18446744073709551615")
REFUSE(report_too_many_metrics, fx_report, DEV, fill_metrics(f),
       "Report.metrics: 65 entries; at most 64")
REFUSE(report_metric_without_name, fx_report, DEV, f->metric_storage[1].name = NULL,
       "Report.metrics[1].name: missing (required)")
REFUSE(report_duplicate_metric, fx_report, DEV, f->metric_storage[1].name = "loss",
       "Report.metrics[1].name: duplicate metric \"loss\"")
REFUSE(report_metric_without_value, fx_report, DEV, f->metric_storage[0].has_value = 0,
       "Report.metrics[0].value: missing (required)")
REFUSE(report_nan_metric, fx_report, DEV, f->metric_storage[1].value = NAN,
       "Report.metrics[1].value: NaN; metric values must be finite")
REFUSE(report_inf_metric, fx_report, DEV, f->metric_storage[0].value = -INFINITY,
       "Report.metrics[0].value: infinite; metric values must be finite")
REFUSE(report_interrupted_with_update, fx_report, DEV,
       f->report.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED,
       "Report.update: present with outcome INTERRUPTED; only COMPLETED reports carry an update")
REFUSE(report_update_without_encoding, fx_report, DEV, f->update.has_encoding = 0,
       "Report.update.encoding: missing (required)")
REFUSE(report_update_zero_elements, fx_report, DEV, f->update.element_count = 0,
       "Report.update.element_count: 0 is out of range; must be 1 to 18446744073709551615")
REFUSE(report_update_without_byte_size, fx_report, DEV, f->update.has_byte_size = 0,
       "Report.update.byte_size: missing (required)")
REFUSE(report_update_wrong_byte_size, fx_report, DEV, f->update.byte_size = 101770,
       "Report.update.byte_size: 101770 does not match 101770 elements of FLOAT32_LE (4 bytes "
       "each)")
REFUSE(report_update_byte_size_overflow, fx_report, DEV,
       (f->update.element_count = 1ull << 62, f->update.byte_size = 0),
       "Report.update.byte_size: 0 does not match 4611686018427387904 elements of FLOAT32_LE (4 "
       "bytes each)")
REFUSE(report_float_update_with_scale, fx_report, DEV,
       (f->update.has_scale = 1, f->update.scale = 0.5f),
       "Report.update.scale: only INT8_SCALED tensors carry a scale")
REFUSE(report_int8_update_without_scale, fx_report, DEV,
       (f->update.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED,
        f->update.byte_size = f->update.element_count),
       "Report.update.scale: missing (required)")
REFUSE(report_ring_update_bits_out_of_range, fx_report, DEV,
       (f->update.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING,
        f->update.has_ring_bits = 1, f->update.ring_bits = 33),
       "Report.update.ring_bits: 33 is out of range; must be 1 to 32")
REFUSE(report_unclipped_on_interrupted, fx_report, DEV,
       (f->report.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED,
        f->report.update = NULL, f->report.has_unclipped = 1, f->report.unclipped = 0),
       "Report.unclipped: present with outcome INTERRUPTED; only COMPLETED reports carry it")
REFUSE(report_error_detail_on_completed, fx_report, DEV, f->report.error_detail = "oops",
       "Report.error_detail: present with outcome COMPLETED; only ERROR reports carry one")

/* ---- ReportAck ---- */
REFUSE(ack_without_session, fx_report_ack, SRV, f->ack.has_session_id = 0,
       "ReportAck.session_id: missing (required)")
REFUSE(ack_without_status, fx_report_ack, SRV, f->ack.has_status = 0,
       "ReportAck.status: missing (required)")
REFUSE(ack_unknown_status, fx_report_ack, SRV, f->ack.status = (Shoal__ReportStatus)4,
       "ReportAck.status: 4 is not a valid value; must be 1 to 3")
REFUSE(ack_refused_without_reason, fx_report_ack, SRV, f->ack.has_reason = 0,
       "ReportAck.reason: missing (required for REFUSED)")
REFUSE(ack_without_window, fx_report_ack, SRV, f->ack.retry_window = NULL,
       "ReportAck.retry_window: missing (required)")
REFUSE(ack_long_detail, fx_report_ack, SRV,
       f->ack.detail = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxy",
       "ReportAck.detail: longer than 512 bytes")

/* ---- Abort ---- */
REFUSE(abort_without_reason, fx_abort, SRV, f->abort_msg.has_reason = 0,
       "Abort.reason: missing (required)")
REFUSE(server_abort_without_window, fx_abort, SRV, f->abort_msg.retry_window = NULL,
       "Abort.retry_window: missing (required from the server)")
REFUSE(abort_bad_window, fx_abort, DEV, f->window.min_ms = 6000,
       "Abort.retry_window: min_ms 6000 is greater than max_ms 5000")
REFUSE(version_abort_without_versions, fx_abort, SRV,
       f->abort_msg.reason = SHOAL__REASON__REASON_VERSION_UNSUPPORTED,
       "Abort.version: missing (required with VERSION_UNSUPPORTED)")
REFUSE(version_abort_inverted_range, fx_abort, SRV,
       (f->version = (Shoal__VersionMismatch)SHOAL__VERSION_MISMATCH__INIT,
        f->version.has_received = f->version.has_supported_min = f->version.has_supported_max = 1,
        f->version.received = 9, f->version.supported_min = 3, f->version.supported_max = 2,
        f->abort_msg.version = &f->version),
       "Abort.version: supported_min 3 is greater than supported_max 2")
REFUSE(version_abort_without_received, fx_abort, SRV,
       (f->version = (Shoal__VersionMismatch)SHOAL__VERSION_MISMATCH__INIT,
        f->abort_msg.version = &f->version),
       "Abort.version.received: missing (required)")

/* ---- decode-only refusals ---- */

static shoal_err decode(const shoal_codec *codec, const uint8_t *buf, size_t len, shoal_errinfo *ei)
{
    shoal_envelope *env = (shoal_envelope *)1;
    shoal_err err = shoal_envelope_decode(codec, buf, len, &env, ei);
    if (err != SHOAL_OK)
        cr_assert_null(env);
    shoal_envelope_free(env);
    return err;
}

Test(protocol_refusal, message_over_the_size_limit)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    size_t len = codec.max_message_bytes + 1;
    uint8_t *buf = calloc(1, len);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(decode(&codec, buf, len, &ei), SHOAL_ELIMIT);
    cr_assert_str_eq(ei.msg,
                     "Envelope: message is 1048577 bytes, above the limit of 1048576 bytes");
    free(buf);
}

Test(protocol_refusal, configurable_size_limit_applies_both_ways)
{
    fixture f;
    fx_model_chunk(&f);
    static uint8_t big[9000];
    f.model_chunk.data.data = big;
    f.model_chunk.data.len = sizeof big;
    f.model_chunk.offset = 0;
    f.model_chunk.total_size = sizeof big;
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    codec.max_message_bytes = 8192;
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_encode(&codec, &f.env, &bytes, &len, &ei), SHOAL_ELIMIT);
    cr_assert_null(bytes);
    /* 9000 data bytes + 3 (tag, 2-byte length) + id 9 + offset 2 + total 3,
     * inside the Envelope's tag and 2-byte length: 9020. */
    cr_assert_str_eq(ei.msg, "ModelChunk: encodes to 9020 bytes, above the message limit of 8192 "
                             "bytes");
    size_t raw_len;
    uint8_t *raw = fx_pack_raw(&f.env, &raw_len);
    cr_assert_eq(decode(&codec, raw, raw_len, &ei), SHOAL_ELIMIT);
    cr_assert_str_eq(ei.msg, "Envelope: message is 9020 bytes, above the limit of 8192 bytes");
    codec.max_message_bytes = raw_len;
    cr_assert_eq(decode(&codec, raw, raw_len, &ei), SHOAL_OK);
    free(raw);
}

Test(protocol_refusal, garbage_bytes)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    const uint8_t truncated[] = {0x0a, 0x10, 0x08, 0x01}; /* CheckIn of 16 bytes, 2 present */
    shoal_errinfo ei = {{0}};
    cr_assert_eq(decode(&codec, truncated, sizeof truncated, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "Envelope: 4 bytes are not a valid shoal.Envelope encoding "
                             "(truncated, bad wire type or bad length)");
    const uint8_t wire_type_7[] = {0x0f};
    cr_assert_eq(decode(&codec, wire_type_7, 1, &ei), SHOAL_EPROTO);
}

Test(protocol_refusal, empty_message_has_no_body)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(decode(&codec, NULL, 0, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "Envelope.body: no message set");
}

Test(protocol_refusal, reserved_secagg_body_is_an_unknown_case)
{
    /* Envelope field 23 (reserved for SecAgg), length-delimited, 2 bytes. */
    const uint8_t secagg[] = {0xba, 0x01, 0x02, 0x08, 0x01};
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(decode(&codec, secagg, sizeof secagg, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "Envelope.body: field 23 is not a message of protocol version 1 "
                             "(16..31 are reserved for secure aggregation)");
    const uint8_t future[] = {0x42, 0x00}; /* field 8, empty */
    cr_assert_eq(decode(&codec, future, sizeof future, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "Envelope.body: field 8 is not a message of protocol version 1");
}

Test(protocol_refusal, hand_built_unknown_case)
{
    fixture f;
    fx_abort(&f);
    f.env.body_case = (Shoal__Envelope__BodyCase)12;
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "Envelope.body: unknown case 12");
    cr_assert_str_eq(shoal_envelope_body_name(&f.env), "(unknown)");
}

Test(protocol_refusal, bad_codec_settings)
{
    fixture f;
    fx_abort(&f);
    shoal_errinfo ei = {{0}};
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    codec.max_message_bytes = 100;
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "shoal_codec.max_message_bytes: 100 is below the minimum 8192");
    codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    codec.version_min = 2;
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "shoal_codec: version range 2 to 1 is empty or starts at 0");
    codec = shoal_codec_defaults((shoal_peer)5);
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_check(NULL, &f.env, &ei), SHOAL_EINVAL);
    codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    cr_assert_eq(shoal_envelope_check(&codec, NULL, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_decode(&codec, NULL, 5, (shoal_envelope **)&ei, NULL),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_decode(&codec, NULL, 0, NULL, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_envelope_encode(&codec, &f.env, NULL, NULL, NULL), SHOAL_EINVAL);
}

/* ---- versioning ---- */

Test(protocol_version, unsupported_check_in_is_answered_with_an_abort_naming_both_versions)
{
    fixture f;
    fx_check_in(&f);
    f.check_in.protocol_version = 7;
    size_t len;
    uint8_t *raw = fx_pack_raw(&f.env, &len);

    const shoal_codec server = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(decode(&server, raw, len, &ei), SHOAL_EPROTO);

    uint32_t version = 0;
    cr_assert_eq(shoal_envelope_unsupported_version(&server, raw, len, &version), SHOAL_OK);
    cr_assert_eq(version, 7);

    uint8_t *abort_bytes = NULL;
    size_t abort_len = 0;
    const shoal_codec answer = shoal_codec_defaults(SHOAL_PEER_SERVER);
    cr_assert_eq(shoal_envelope_encode_version_abort(&answer, version, 60000, 120000, &abort_bytes,
                                                     &abort_len, &ei),
                 SHOAL_OK, "%s", ei.msg);

    /* The device decodes it as a server message. */
    const shoal_codec device = shoal_codec_defaults(SHOAL_PEER_SERVER);
    shoal_envelope *env = NULL;
    cr_assert_eq(shoal_envelope_decode(&device, abort_bytes, abort_len, &env, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(env->body_case, SHOAL__ENVELOPE__BODY_ABORT);
    const Shoal__Abort *a = env->abort;
    cr_assert_eq(a->reason, SHOAL__REASON__REASON_VERSION_UNSUPPORTED);
    cr_assert_str_eq(a->detail,
                     "protocol version 7 is not supported; this server speaks version 1");
    cr_assert_eq(a->version->received, 7);
    cr_assert_eq(a->version->supported_min, 1);
    cr_assert_eq(a->version->supported_max, 1);
    cr_assert_eq(a->retry_window->min_ms, 60000);
    cr_assert_eq(a->retry_window->max_ms, 120000);
    shoal_envelope_free(env);
    shoal_free(abort_bytes);
    free(raw);
}

Test(protocol_version, range_of_versions_is_named)
{
    fixture f;
    fx_check_in(&f);
    f.check_in.protocol_version = 9;
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    codec.version_max = 3;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "CheckIn.protocol_version: version 9 is not supported; this peer "
                             "speaks versions 1 to 3");
    f.check_in.protocol_version = 3;
    cr_assert_eq(shoal_envelope_check(&codec, &f.env, &ei), SHOAL_OK);

    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_envelope_encode_version_abort(&codec, 9, 0, 0, &bytes, &len, &ei), SHOAL_OK);
    shoal_envelope *env = NULL;
    cr_assert_eq(shoal_envelope_decode(&codec, bytes, len, &env, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(env->abort->detail,
                     "protocol version 9 is not supported; this server speaks versions 1 to 3");
    shoal_envelope_free(env);
    shoal_free(bytes);
}

Test(protocol_version, version_abort_helper_refuses_bad_input)
{
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    uint8_t *bytes = (uint8_t *)1;
    size_t len = 0;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_encode_version_abort(&codec, 1, 0, 10, &bytes, &len, &ei),
                 SHOAL_EINVAL);
    cr_assert_null(bytes);
    cr_assert_str_eq(ei.msg, "shoal_envelope_encode_version_abort: version 1 is supported");
    cr_assert_eq(shoal_envelope_encode_version_abort(&codec, 2, 10, 9, &bytes, &len, &ei),
                 SHOAL_EINVAL);
    cr_assert_null(bytes);
    cr_assert_str_eq(ei.msg, "Abort.retry_window: min_ms 10 is greater than max_ms 9");
}

Test(protocol_version, supported_or_other_messages_are_not_reported)
{
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    fixture f;
    uint32_t version = 12345;
    size_t len;

    fx_check_in(&f);
    uint8_t *raw = fx_pack_raw(&f.env, &len);
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, raw, len, &version), SHOAL_ENOTFOUND);
    free(raw);

    fx_report(&f);
    raw = fx_pack_raw(&f.env, &len);
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, raw, len, &version), SHOAL_ENOTFOUND);
    free(raw);

    const uint8_t garbage[] = {0xff, 0xff};
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, garbage, 2, &version), SHOAL_ENOTFOUND);
    cr_assert_eq(version, 12345);
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, garbage, 2, NULL), SHOAL_EINVAL);

    /* A newer CheckIn whose other fields this version would refuse. */
    fx_check_in(&f);
    f.check_in.protocol_version = 2;
    f.check_in.population = NULL;
    f.check_in.capabilities = NULL;
    raw = fx_pack_raw(&f.env, &len);
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, raw, len, &version), SHOAL_OK);
    cr_assert_eq(version, 2);
    free(raw);
}
