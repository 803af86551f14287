#include "fixtures.h"

#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)(uintptr_t)s};
    return b;
}

static void reset(fixture *f)
{
    memset(f, 0, sizeof *f);
    Shoal__Envelope env = SHOAL__ENVELOPE__INIT;
    f->env = env;
}

static void window(fixture *f, uint64_t min_ms, uint64_t max_ms)
{
    Shoal__RetryWindow w = SHOAL__RETRY_WINDOW__INIT;
    w.has_min_ms = w.has_max_ms = 1;
    w.min_ms = min_ms;
    w.max_ms = max_ms;
    f->window = w;
}

void fx_check_in(fixture *f)
{
    reset(f);
    Shoal__Capabilities caps = SHOAL__CAPABILITIES__INIT;
    caps.has_max_model_bytes = 1;
    caps.max_model_bytes = 64u << 20;
    f->encodings[0] = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    caps.n_encodings = 1;
    caps.encodings = f->encodings;
    caps.has_secure_aggregation = 1;
    caps.secure_aggregation = 1;
    f->caps = caps;

    Shoal__CheckIn c = SHOAL__CHECK_IN__INIT;
    c.has_protocol_version = 1;
    c.protocol_version = SHOAL_PROTOCOL_VERSION;
    c.population = "keyboard-next-word";
    c.has_auth_token = 1;
    c.auth_token = bin("population-token-0123456789");
    c.sdk_version = "shoal-device 0.1.0";
    c.capabilities = &f->caps;
    c.has_held_checkpoint_id = 1;
    c.held_checkpoint_id = bin("ckpt-41");
    f->check_in = c;

    f->env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    f->env.check_in = &f->check_in;
}

static void plan(fixture *f)
{
    Shoal__ModelSpec m = SHOAL__MODEL_SPEC__INIT;
    m.architecture = "mlp";
    f->input_shape[0] = 1;
    f->input_shape[1] = 28;
    f->input_shape[2] = 28;
    m.n_input_shape = 3;
    m.input_shape = f->input_shape;
    m.has_classes = 1;
    m.classes = 10;
    m.has_parameter_count = 1;
    m.parameter_count = 101770;
    f->model = m;

    Shoal__ClientOptimizer o = SHOAL__CLIENT_OPTIMIZER__INIT;
    o.has_kind = 1;
    o.kind = SHOAL__OPTIMIZER_KIND__OPTIMIZER_MOMENTUM;
    o.has_learning_rate = 1;
    o.learning_rate = 0.05f;
    o.has_momentum = 1;
    o.momentum = 0.9f;
    o.has_weight_decay = 1;
    o.weight_decay = 1e-4f;
    o.has_epochs = 1;
    o.epochs = 2;
    o.has_batch_size = 1;
    o.batch_size = 32;
    f->optimizer = o;

    Shoal__ExampleSelector s = SHOAL__EXAMPLE_SELECTOR__INIT;
    s.collection = "typed-words";
    s.has_start_time_unix_ms = 1;
    s.start_time_unix_ms = 1700000000000;
    s.has_end_time_unix_ms = 1;
    s.end_time_unix_ms = 1700600000000;
    s.has_max_examples = 1;
    s.max_examples = 500;
    f->selector = s;

    Shoal__Limits l = SHOAL__LIMITS__INIT;
    l.has_max_duration_ms = 1;
    l.max_duration_ms = 120000;
    l.has_min_examples = 1;
    l.min_examples = 20;
    l.has_max_examples = 1;
    l.max_examples = 5000;
    f->limits = l;

    Shoal__UpdateBound ub = SHOAL__UPDATE_BOUND__INIT;
    ub.has_l2_norm = 1;
    ub.l2_norm = 2.5f;
    f->update_bound = ub;

    Shoal__Plan p = SHOAL__PLAN__INIT;
    p.has_task_kind = 1;
    p.task_kind = SHOAL__TASK_KIND__TASK_KIND_TRAIN;
    p.model = &f->model;
    p.optimizer = &f->optimizer;
    p.selector = &f->selector;
    p.limits = &f->limits;
    p.update_bound = &f->update_bound;
    p.has_report_deadline_ms = 1;
    p.report_deadline_ms = 600000;
    p.has_model_encoding = 1;
    p.model_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    p.has_update_encoding = 1;
    p.update_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    f->plan = p;
}

void fx_accepted(fixture *f)
{
    reset(f);
    plan(f);
    window(f, 3600000, 7200000);
    Shoal__CheckInResult__Accepted a = SHOAL__CHECK_IN_RESULT__ACCEPTED__INIT;
    a.has_session_id = 1;
    a.session_id = bin("session-7f3a");
    a.has_round = 1;
    a.round = 42;
    a.has_task_kind = 1;
    a.task_kind = SHOAL__TASK_KIND__TASK_KIND_TRAIN;
    a.plan = &f->plan;
    a.has_model_size = 1;
    a.model_size = 101770 * 4;
    a.has_checkpoint_id = 1;
    a.checkpoint_id = bin("ckpt-42");
    a.retry_window = &f->window;
    f->accepted = a;
    Shoal__CheckInResult r = SHOAL__CHECK_IN_RESULT__INIT;
    r.result_case = SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED;
    r.accepted = &f->accepted;
    f->result = r;
    f->env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT;
    f->env.check_in_result = &f->result;
}

void fx_rejected(fixture *f)
{
    reset(f);
    window(f, 60000, 900000);
    Shoal__CheckInResult__Rejected j = SHOAL__CHECK_IN_RESULT__REJECTED__INIT;
    j.retry_window = &f->window;
    j.has_reason = 1;
    j.reason = SHOAL__REASON__REASON_ROUND_FULL;
    j.detail = "round 42 has selected 130 of 130 devices";
    f->rejected = j;
    Shoal__CheckInResult r = SHOAL__CHECK_IN_RESULT__INIT;
    r.result_case = SHOAL__CHECK_IN_RESULT__RESULT_REJECTED;
    r.rejected = &f->rejected;
    f->result = r;
    f->env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT;
    f->env.check_in_result = &f->result;
}

void fx_model_chunk(fixture *f)
{
    reset(f);
    for (size_t i = 0; i < sizeof f->chunk_data; i++)
        f->chunk_data[i] = (uint8_t)(i * 17 + 3);
    Shoal__ModelChunk c = SHOAL__MODEL_CHUNK__INIT;
    c.has_checkpoint_id = 1;
    c.checkpoint_id = bin("ckpt-42");
    c.has_offset = 1;
    c.offset = 32;
    c.has_total_size = 1;
    c.total_size = 64;
    c.has_data = 1;
    c.data.len = sizeof f->chunk_data;
    c.data.data = f->chunk_data;
    f->model_chunk = c;
    f->env.body_case = SHOAL__ENVELOPE__BODY_MODEL_CHUNK;
    f->env.model_chunk = &f->model_chunk;
}

void fx_report_chunk(fixture *f)
{
    reset(f);
    for (size_t i = 0; i < sizeof f->chunk_data; i++)
        f->chunk_data[i] = (uint8_t)(255 - i);
    Shoal__ReportChunk c = SHOAL__REPORT_CHUNK__INIT;
    c.has_session_id = 1;
    c.session_id = bin("session-7f3a");
    c.has_offset = 1;
    c.offset = 0;
    c.has_total_size = 1;
    c.total_size = 16;
    c.has_data = 1;
    c.data.len = sizeof f->chunk_data;
    c.data.data = f->chunk_data;
    f->report_chunk = c;
    f->env.body_case = SHOAL__ENVELOPE__BODY_REPORT_CHUNK;
    f->env.report_chunk = &f->report_chunk;
}

void fx_report(fixture *f)
{
    reset(f);
    Shoal__TensorInfo t = SHOAL__TENSOR_INFO__INIT;
    t.has_encoding = 1;
    t.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    t.has_element_count = 1;
    t.element_count = 101770;
    t.has_byte_size = 1;
    t.byte_size = 101770 * 4;
    f->update = t;
    Shoal__Metric m0 = SHOAL__METRIC__INIT, m1 = SHOAL__METRIC__INIT;
    m0.name = "loss";
    m0.has_value = 1;
    m0.value = 0.4375;
    m1.name = "accuracy";
    m1.has_value = 1;
    m1.value = 0.8125;
    f->metric_storage[0] = m0;
    f->metric_storage[1] = m1;
    f->metrics[0] = &f->metric_storage[0];
    f->metrics[1] = &f->metric_storage[1];
    Shoal__Report r = SHOAL__REPORT__INIT;
    r.has_session_id = 1;
    r.session_id = bin("session-7f3a");
    r.has_outcome = 1;
    r.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    r.has_example_count = 1;
    r.example_count = 480;
    r.n_metrics = 2;
    r.metrics = f->metrics;
    r.update = &f->update;
    f->report = r;
    f->env.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    f->env.report = &f->report;
}

void fx_report_ack(fixture *f)
{
    reset(f);
    window(f, 3600000, 10800000);
    Shoal__ReportAck a = SHOAL__REPORT_ACK__INIT;
    a.has_session_id = 1;
    a.session_id = bin("session-7f3a");
    a.has_status = 1;
    a.status = SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED;
    a.has_reason = 1;
    a.reason = SHOAL__REASON__REASON_SHAPE_MISMATCH;
    a.detail = "update has 10 elements, plan expects 101770";
    a.retry_window = &f->window;
    f->ack = a;
    f->env.body_case = SHOAL__ENVELOPE__BODY_REPORT_ACK;
    f->env.report_ack = &f->ack;
}

void fx_abort(fixture *f)
{
    reset(f);
    window(f, 1000, 5000);
    Shoal__Abort a = SHOAL__ABORT__INIT;
    a.has_reason = 1;
    a.reason = SHOAL__REASON__REASON_SHUTTING_DOWN;
    a.detail = "server is shutting down";
    a.retry_window = &f->window;
    f->abort_msg = a;
    f->env.body_case = SHOAL__ENVELOPE__BODY_ABORT;
    f->env.abort = &f->abort_msg;
}

uint8_t *fx_pack_raw(const Shoal__Envelope *env, size_t *len)
{
    *len = shoal__envelope__get_packed_size(env);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        shoal__envelope__pack(env, buf);
    return buf;
}

void fx_expect_refused(const Shoal__Envelope *msg, shoal_peer sender, const char *expected)
{
    const shoal_codec codec = shoal_codec_defaults(sender);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_check(&codec, msg, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, expected);

    uint8_t *bytes = (uint8_t *)1;
    size_t len = 99;
    memset(&ei, 0, sizeof ei);
    cr_assert_eq(shoal_envelope_encode(&codec, msg, &bytes, &len, &ei), SHOAL_EINVAL);
    cr_assert_null(bytes);
    cr_assert_eq(len, 0);
    cr_assert_str_eq(ei.msg, expected);

    size_t raw_len;
    uint8_t *raw = fx_pack_raw(msg, &raw_len);
    shoal_envelope *env = (shoal_envelope *)1;
    memset(&ei, 0, sizeof ei);
    cr_assert_eq(shoal_envelope_decode(&codec, raw, raw_len, &env, &ei), SHOAL_EPROTO);
    cr_assert_null(env);
    cr_assert_str_eq(ei.msg, expected);
    free(raw);
}
