/* Envelope codec: size limit, protobuf-c (un)packing through shoal_malloc,
 * and the validation rules of docs/protocol.md. */
#include "shoal/envelope.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/encoding.h"
#include "envelope_int.h"

/* ---- protobuf-c allocator ----------------------------------------------- */

/* protobuf-c reports an allocation failure and malformed input alike (a NULL
 * result), so the allocator records failures to tell them apart. */
typedef struct pb_alloc_state {
    int failed;
} pb_alloc_state;

static void *pb_alloc(void *data, size_t size)
{
    void *p = shoal_malloc(size);
    if (!p && data)
        ((pb_alloc_state *)data)->failed = 1;
    return p;
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    shoal_free(ptr);
}

/* ---- enum names ---------------------------------------------------------- */

/* The names protoc-c generated from shoal.proto, less the enum's own
 * prefix ("REASON_NOT_SELECTED" -> "NOT_SELECTED"): one list of names, the
 * .proto's. */
static const char *enum_name(const ProtobufCEnumDescriptor *d, const char *prefix, int value)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    if (!v)
        return "?";
    size_t n = strlen(prefix);
    return strncmp(v->name, prefix, n) == 0 ? v->name + n : v->name;
}

const char *shoal_protocol_encoding_name(int encoding)
{
    return enum_name(&shoal__tensor_encoding__descriptor, "TENSOR_ENCODING_", encoding);
}

const char *shoal_protocol_outcome_name(int outcome)
{
    return enum_name(&shoal__report_outcome__descriptor, "REPORT_OUTCOME_", outcome);
}

const char *shoal_protocol_status_name(int status)
{
    return enum_name(&shoal__report_status__descriptor, "REPORT_STATUS_", status);
}

const char *shoal_protocol_reason_name(int reason)
{
    return enum_name(&shoal__reason__descriptor, "REASON_", reason);
}

/* The largest Reason: protoc-c lists an enum's values in number order. */
#define REASON_MAX (shoal__reason__descriptor.values[shoal__reason__descriptor.n_values - 1].value)

const char *shoal_envelope_body_name(const shoal_envelope *env)
{
    if (!env || env->body_case == SHOAL__ENVELOPE__BODY__NOT_SET)
        return "(none)";
    /* The body's message type, as named in shoal.proto ("CheckIn"). */
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&shoal__envelope__descriptor, env->body_case);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return "(unknown)";
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->short_name;
}

/* ---- field checks (envelope_int.h) ---------------------------------------- */

shoal_err shoal_pcheck_missing(shoal_errinfo *ei, const char *name)
{
    return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: missing (required)", name);
}

static shoal_err check_string(shoal_errinfo *ei, const char *name, const char *s, int required,
                              size_t min_len, size_t max_len)
{
    if (!s)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    size_t len = strnlen(s, max_len + 1);
    if (len > max_len)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: longer than %zu bytes", name, max_len);
    if (len < min_len)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: empty; must be %zu to %zu bytes", name,
                                 min_len, max_len);
    return SHOAL_OK;
}

shoal_err shoal_pcheck_bytes(shoal_errinfo *ei, const char *name, int has,
                             const ProtobufCBinaryData *b, int required, size_t min_len,
                             size_t max_len)
{
    if (!has)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    if (b->len < min_len || b->len > max_len)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: %zu bytes; must be %zu to %zu", name,
                                 b->len, min_len, max_len);
    return SHOAL_OK;
}

shoal_err shoal_pcheck_u64(shoal_errinfo *ei, const char *name, int has, uint64_t v, int required,
                           uint64_t min, uint64_t max)
{
    if (!has)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    if (v < min || v > max)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: %" PRIu64 " is out of range; must be %" PRIu64 " to %" PRIu64,
                                 name, v, min, max);
    return SHOAL_OK;
}

shoal_err shoal_pcheck_enum(shoal_errinfo *ei, const char *name, int has, int v, int required,
                            int min, int max)
{
    if (!has)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    if (v < min || v > max)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: %d is not a valid value; must be %d to %d",
                                 name, v, min, max);
    return SHOAL_OK;
}

/* lo_open/hi_open: bounds excluded. */
shoal_err shoal_pcheck_float(shoal_errinfo *ei, const char *name, int has, double v, int required,
                             double lo, int lo_open, double hi, int hi_open)
{
    if (!has)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    if (isfinite(v) && v >= lo && !(lo_open && v == lo) && v <= hi && !(hi_open && v == hi))
        return SHOAL_OK;
    if (isinf(hi))
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: %g is out of range; must be finite and %s %g", name, v,
                                 lo_open ? ">" : ">=", lo);
    return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: %g is out of range; must be %s %g and %s %g",
                             name, v, lo_open ? ">" : ">=", lo, hi_open ? "<" : "<=", hi);
}

static shoal_err check_window(shoal_errinfo *ei, const char *name, const Shoal__RetryWindow *w,
                              int required)
{
    char field[96];
    if (!w)
        return required ? shoal_pcheck_missing(ei, name) : SHOAL_OK;
    snprintf(field, sizeof field, "%s.min_ms", name);
    TRY(shoal_pcheck_u64(ei, field, w->has_min_ms, w->min_ms, 1, 0, SHOAL_PROTOCOL_RETRY_MAX_MS));
    snprintf(field, sizeof field, "%s.max_ms", name);
    TRY(shoal_pcheck_u64(ei, field, w->has_max_ms, w->max_ms, 1, 0, SHOAL_PROTOCOL_RETRY_MAX_MS));
    if (w->min_ms > w->max_ms)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: min_ms %" PRIu64 " is greater than max_ms %" PRIu64, name,
                                 w->min_ms, w->max_ms);
    return SHOAL_OK;
}

static shoal_err check_checkin(const shoal_codec *codec, const Shoal__CheckIn *m, shoal_errinfo *ei)
{
    /* The version first: a newer peer's other fields may mean something
     * else, and its Abort must name the version, not a field. */
    if (!m->has_protocol_version)
        return shoal_pcheck_missing(ei, "CheckIn.protocol_version");
    if (m->protocol_version < codec->version_min || m->protocol_version > codec->version_max) {
        if (codec->version_min == codec->version_max)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "CheckIn.protocol_version: version %" PRIu32
                                     " is not supported; this peer speaks version %" PRIu32,
                                     m->protocol_version, codec->version_min);
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "CheckIn.protocol_version: version %" PRIu32
                                 " is not supported; this peer speaks versions %" PRIu32
                                 " to %" PRIu32,
                                 m->protocol_version, codec->version_min, codec->version_max);
    }
    TRY(check_string(ei, "CheckIn.population", m->population, 1, 1, SHOAL_PROTOCOL_NAME_MAX));
    TRY(shoal_pcheck_bytes(ei, "CheckIn.auth_token", m->has_auth_token, &m->auth_token, 1, 1,
                           SHOAL_PROTOCOL_TOKEN_MAX));
    TRY(check_string(ei, "CheckIn.sdk_version", m->sdk_version, 1, 1,
                     SHOAL_PROTOCOL_SHORT_NAME_MAX));
    const Shoal__Capabilities *caps = m->capabilities;
    if (!caps)
        return shoal_pcheck_missing(ei, "CheckIn.capabilities");
    TRY(shoal_pcheck_u64(ei, "CheckIn.capabilities.max_model_bytes", caps->has_max_model_bytes,
                         caps->max_model_bytes, 1, 1, UINT64_MAX));
    if (caps->n_encodings < 1 || caps->n_encodings > SHOAL_PROTOCOL_ENCODINGS_MAX)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "CheckIn.capabilities.encodings: %zu entries; must be 1 to %u",
                                 caps->n_encodings, SHOAL_PROTOCOL_ENCODINGS_MAX);
    for (size_t i = 0; i < caps->n_encodings; i++) {
        int enc = (int)caps->encodings[i];
        if (enc < ENC_MIN || enc > ENC_MAX)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "CheckIn.capabilities.encodings[%zu]: %d is not a known "
                                     "encoding; must be %d to %d",
                                     i, enc, ENC_MIN, ENC_MAX);
        for (size_t j = 0; j < i; j++)
            if ((int)caps->encodings[j] == enc)
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "CheckIn.capabilities.encodings[%zu]: duplicate "
                                         "encoding %s",
                                         i, shoal_protocol_encoding_name(enc));
    }
    TRY(shoal_pcheck_bytes(ei, "CheckIn.held_checkpoint_id", m->has_held_checkpoint_id,
                           &m->held_checkpoint_id, 0, 0, SHOAL_PROTOCOL_ID_MAX));
    if (m->resume)
        TRY(shoal_pcheck_bytes(ei, "CheckIn.resume.session_id", m->resume->has_session_id,
                               &m->resume->session_id, 1, 1, SHOAL_PROTOCOL_ID_MAX));
    return SHOAL_OK;
}

static shoal_err check_plan(const Shoal__Plan *p, shoal_errinfo *ei)
{
    const int max_task = SHOAL__TASK_KIND__TASK_KIND_EVALUATE;
    TRY(shoal_pcheck_enum(ei, "Plan.task_kind", p->has_task_kind, (int)p->task_kind, 1, 1,
                          max_task));
    const int train = p->task_kind == SHOAL__TASK_KIND__TASK_KIND_TRAIN;

    const Shoal__ModelSpec *ms = p->model;
    if (!ms)
        return shoal_pcheck_missing(ei, "Plan.model");
    TRY(check_string(ei, "Plan.model.architecture", ms->architecture, 1, 1,
                     SHOAL_PROTOCOL_SHORT_NAME_MAX));
    if (ms->n_input_shape < 1 || ms->n_input_shape > SHOAL_PROTOCOL_RANK_MAX)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.model.input_shape: rank %zu; must be 1 to %u",
                                 ms->n_input_shape, SHOAL_PROTOCOL_RANK_MAX);
    for (size_t i = 0; i < ms->n_input_shape; i++)
        if (ms->input_shape[i] < 1 || ms->input_shape[i] > SHOAL_PROTOCOL_DIM_MAX)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "Plan.model.input_shape[%zu]: %" PRIu32
                                     " is out of range; must be 1 to %u",
                                     i, ms->input_shape[i], SHOAL_PROTOCOL_DIM_MAX);
    TRY(shoal_pcheck_u64(ei, "Plan.model.classes", ms->has_classes, ms->classes, 1, 2,
                         SHOAL_PROTOCOL_CLASSES_MAX));
    TRY(shoal_pcheck_u64(ei, "Plan.model.parameter_count", ms->has_parameter_count,
                         ms->parameter_count, 1, 1, UINT64_MAX));

    const Shoal__ClientOptimizer *o = p->optimizer;
    if (!o && train)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.optimizer: missing (required for TRAIN tasks)");
    if (o) {
        TRY(shoal_pcheck_enum(ei, "Plan.optimizer.kind", o->has_kind, (int)o->kind, 1,
                              SHOAL__OPTIMIZER_KIND__OPTIMIZER_SGD,
                              SHOAL__OPTIMIZER_KIND__OPTIMIZER_ADAM));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.learning_rate", o->has_learning_rate,
                               o->learning_rate, 1, 0, 1, HUGE_VAL, 0));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.momentum", o->has_momentum, o->momentum, 0, 0, 0,
                               1, 1));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.beta1", o->has_beta1, o->beta1, 0, 0, 0, 1, 1));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.beta2", o->has_beta2, o->beta2, 0, 0, 0, 1, 1));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.alpha", o->has_alpha, o->alpha, 0, 0, 0, 1, 1));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.eps", o->has_eps, o->eps, 0, 0, 1, HUGE_VAL, 0));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.weight_decay", o->has_weight_decay,
                               o->weight_decay, 0, 0, 0, HUGE_VAL, 0));
        TRY(shoal_pcheck_float(ei, "Plan.optimizer.prox_mu", o->has_prox_mu, o->prox_mu, 0, 0, 0,
                               HUGE_VAL, 0));
        TRY(shoal_pcheck_u64(ei, "Plan.optimizer.epochs", o->has_epochs, o->epochs, 1, 1,
                             SHOAL_PROTOCOL_EPOCHS_MAX));
        TRY(shoal_pcheck_u64(ei, "Plan.optimizer.batch_size", o->has_batch_size, o->batch_size, 1,
                             1, SHOAL_PROTOCOL_BATCH_MAX));
    }

    const Shoal__ExampleSelector *sel = p->selector;
    if (!sel)
        return shoal_pcheck_missing(ei, "Plan.selector");
    TRY(check_string(ei, "Plan.selector.collection", sel->collection, 1, 1,
                     SHOAL_PROTOCOL_NAME_MAX));
    if (sel->has_start_time_unix_ms && sel->has_end_time_unix_ms &&
        sel->end_time_unix_ms <= sel->start_time_unix_ms)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.selector.end_time_unix_ms: %" PRId64
                                 " is not after start_time_unix_ms %" PRId64,
                                 sel->end_time_unix_ms, sel->start_time_unix_ms);

    const Shoal__Limits *lim = p->limits;
    if (!lim)
        return shoal_pcheck_missing(ei, "Plan.limits");
    TRY(shoal_pcheck_u64(ei, "Plan.limits.max_duration_ms", lim->has_max_duration_ms,
                         lim->max_duration_ms, 1, 1, UINT64_MAX));
    TRY(shoal_pcheck_u64(ei, "Plan.limits.max_examples", lim->has_max_examples, lim->max_examples,
                         0, 1, UINT32_MAX));
    if (lim->has_max_examples && lim->has_min_examples && lim->min_examples > lim->max_examples)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.limits.max_examples: %" PRIu32
                                 " is less than min_examples %" PRIu32
                                 "; the server must allow at least the examples it requires",
                                 lim->max_examples, lim->min_examples);
    TRY(shoal_pcheck_u64(ei, "Plan.report_deadline_ms", p->has_report_deadline_ms,
                         p->report_deadline_ms, 1, 1, UINT64_MAX));
    TRY(shoal_pcheck_enum(ei, "Plan.model_encoding", p->has_model_encoding, (int)p->model_encoding,
                          1, ENC_MIN, ENC_MAX));
    if (train && !p->has_update_encoding)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.update_encoding: missing (required for TRAIN tasks)");
    TRY(shoal_pcheck_enum(ei, "Plan.update_encoding", p->has_update_encoding,
                          (int)p->update_encoding, 0, ENC_MIN, ENC_MAX));
    if (p->secure_aggregation)
        TRY(shoal_pcheck_secagg_plan(p, ei));
    if (p->update_bound) {
        if (!train)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "Plan.update_bound: set on an EVALUATE plan; it bounds "
                                     "training updates only");
        TRY(shoal_pcheck_float(ei, "Plan.update_bound.l2_norm", p->update_bound->has_l2_norm,
                               p->update_bound->l2_norm, 1, 0, 1, HUGE_VAL, 1));
    }
    if (shoal_plan_reports_unclipped(p) && (!train || !p->update_bound))
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.report_unclipped: set on %s; the bit is measured against "
                                 "update_bound.l2_norm, so it needs a TRAIN plan with "
                                 "update_bound",
                                 train ? "a plan without update_bound" : "an EVALUATE plan");
    return SHOAL_OK;
}

static shoal_err check_checkin_result(const Shoal__CheckInResult *m, shoal_errinfo *ei)
{
    switch (m->result_case) {
    case SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED: {
        const Shoal__CheckInResult__Accepted *a = m->accepted;
        if (!a)
            return shoal_pcheck_missing(ei, "CheckInResult.accepted");
        TRY(shoal_pcheck_bytes(ei, "CheckInResult.accepted.session_id", a->has_session_id,
                               &a->session_id, 1, 1, SHOAL_PROTOCOL_ID_MAX));
        if (!a->has_round)
            return shoal_pcheck_missing(ei, "CheckInResult.accepted.round");
        TRY(shoal_pcheck_enum(ei, "CheckInResult.accepted.task_kind", a->has_task_kind,
                              (int)a->task_kind, 1, SHOAL__TASK_KIND__TASK_KIND_TRAIN,
                              SHOAL__TASK_KIND__TASK_KIND_EVALUATE));
        if (!a->plan)
            return shoal_pcheck_missing(ei, "CheckInResult.accepted.plan");
        TRY(check_plan(a->plan, ei));
        if (a->plan->task_kind != a->task_kind)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "CheckInResult.accepted.task_kind: %d differs from "
                                     "plan.task_kind %d",
                                     (int)a->task_kind, (int)a->plan->task_kind);
        TRY(shoal_pcheck_u64(ei, "CheckInResult.accepted.model_size", a->has_model_size,
                             a->model_size, 1, 1, UINT64_MAX));
        TRY(shoal_pcheck_bytes(ei, "CheckInResult.accepted.checkpoint_id", a->has_checkpoint_id,
                               &a->checkpoint_id, 1, 1, SHOAL_PROTOCOL_ID_MAX));
        TRY(check_window(ei, "CheckInResult.accepted.retry_window", a->retry_window, 1));
        TRY(shoal_pcheck_u64(ei, "CheckInResult.accepted.max_message_bytes",
                             a->has_max_message_bytes, a->max_message_bytes, 0,
                             SHOAL_PROTOCOL_MAX_MESSAGE_MIN, UINT32_MAX));
        return SHOAL_OK;
    }
    case SHOAL__CHECK_IN_RESULT__RESULT_REJECTED: {
        const Shoal__CheckInResult__Rejected *r = m->rejected;
        if (!r)
            return shoal_pcheck_missing(ei, "CheckInResult.rejected");
        TRY(check_window(ei, "CheckInResult.rejected.retry_window", r->retry_window, 1));
        TRY(shoal_pcheck_enum(ei, "CheckInResult.rejected.reason", r->has_reason, (int)r->reason, 1,
                              1, REASON_MAX));
        TRY(check_string(ei, "CheckInResult.rejected.detail", r->detail, 0, 0,
                         SHOAL_PROTOCOL_DETAIL_MAX));
        return SHOAL_OK;
    }
    case SHOAL__CHECK_IN_RESULT__RESULT__NOT_SET:
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "CheckInResult.result: neither accepted nor rejected is set");
    default:
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "CheckInResult.result: unknown case %d",
                                 (int)m->result_case);
    }
}

/* offset/total/data rules shared by ModelChunk and ReportChunk. */
shoal_err shoal_pcheck_ring_bits(shoal_errinfo *ei, const char *name, int has, uint64_t bits,
                                 int encoding)
{
    if (encoding == SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING)
        return shoal_pcheck_u64(ei, name, has, bits, 1, 33, 64);
    return shoal_pcheck_u64(ei, name, has, bits, 1, 1, 32);
}

shoal_err shoal_pcheck_chunk_range(shoal_errinfo *ei, const char *msg, int has_offset,
                                   uint64_t offset, int has_total, uint64_t total, int has_data,
                                   const ProtobufCBinaryData *data)
{
    char field[48];
    snprintf(field, sizeof field, "%s.offset", msg);
    if (!has_offset)
        return shoal_pcheck_missing(ei, field);
    snprintf(field, sizeof field, "%s.total_size", msg);
    TRY(shoal_pcheck_u64(ei, field, has_total, total, 1, 1, UINT64_MAX));
    snprintf(field, sizeof field, "%s.data", msg);
    if (!has_data)
        return shoal_pcheck_missing(ei, field);
    if (data->len == 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: empty; a chunk carries at least 1 byte",
                                 field);
    if (offset > total || data->len > total - offset)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: bytes [%" PRIu64 ", +%zu) run past total_size %" PRIu64,
                                 field, offset, data->len, total);
    return SHOAL_OK;
}

static shoal_err check_tensor_info(const Shoal__TensorInfo *t, shoal_errinfo *ei)
{
    TRY(shoal_pcheck_enum(ei, "Report.update.encoding", t->has_encoding, (int)t->encoding, 1,
                          ENC_MIN, ENC_MAX));
    TRY(shoal_pcheck_u64(ei, "Report.update.element_count", t->has_element_count, t->element_count,
                         1, 1, UINT64_MAX));
    if (!t->has_byte_size)
        return shoal_pcheck_missing(ei, "Report.update.byte_size");
    const uint64_t elem = shoal_tensor_element_size((int)t->encoding);
    if (t->element_count > UINT64_MAX / elem || t->byte_size != t->element_count * elem)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.update.byte_size: %" PRIu64 " does not match %" PRIu64
                                 " elements of %s (%" PRIu64 " bytes each)",
                                 t->byte_size, t->element_count,
                                 shoal_protocol_encoding_name((int)t->encoding), elem);
    const int int8 = t->encoding == SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_INT8_SCALED;
    const int ring = t->encoding == SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING ||
                     t->encoding == SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
    if (t->has_scale && !int8)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.update.scale: only INT8_SCALED tensors carry a scale");
    if (t->has_ring_bits && !ring)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.update.ring_bits: only UINT32_RING and UINT64_RING "
                                 "tensors carry ring_bits");
    if (int8)
        TRY(shoal_pcheck_float(ei, "Report.update.scale", t->has_scale, t->scale, 1, 0, 1, HUGE_VAL,
                               0));
    if (ring)
        TRY(shoal_pcheck_ring_bits(ei, "Report.update.ring_bits", t->has_ring_bits, t->ring_bits,
                                   (int)t->encoding));
    return SHOAL_OK;
}

static shoal_err check_report(const Shoal__Report *m, shoal_errinfo *ei)
{
    TRY(shoal_pcheck_bytes(ei, "Report.session_id", m->has_session_id, &m->session_id, 1, 1,
                           SHOAL_PROTOCOL_ID_MAX));
    TRY(shoal_pcheck_enum(ei, "Report.outcome", m->has_outcome, (int)m->outcome, 1,
                          SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED,
                          SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR));
    const int completed = m->outcome == SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    if (completed && !m->has_example_count)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.example_count: missing (required for COMPLETED)");
    TRY(shoal_pcheck_u64(ei, "Report.example_count", m->has_example_count, m->example_count, 0,
                         completed ? 1 : 0, UINT64_MAX));
    if (m->n_metrics > SHOAL_PROTOCOL_METRICS_MAX)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "Report.metrics: %zu entries; at most %u",
                                 m->n_metrics, SHOAL_PROTOCOL_METRICS_MAX);
    for (size_t i = 0; i < m->n_metrics; i++) {
        const Shoal__Metric *metric = m->metrics[i];
        char field[48];
        snprintf(field, sizeof field, "Report.metrics[%zu].name", i);
        if (!metric)
            return shoal_pcheck_missing(ei, field);
        TRY(check_string(ei, field, metric->name, 1, 1, SHOAL_PROTOCOL_SHORT_NAME_MAX));
        for (size_t j = 0; j < i; j++)
            if (m->metrics[j] && strcmp(m->metrics[j]->name, metric->name) == 0)
                return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: duplicate metric \"%s\"", field,
                                         metric->name);
        snprintf(field, sizeof field, "Report.metrics[%zu].value", i);
        if (!metric->has_value)
            return shoal_pcheck_missing(ei, field);
        if (!isfinite(metric->value))
            return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: %s; metric values must be finite",
                                     field, isnan(metric->value) ? "NaN" : "infinite");
    }
    if (m->update) {
        if (!completed)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "Report.update: present with outcome %s; only COMPLETED "
                                     "reports carry an update",
                                     shoal_protocol_outcome_name((int)m->outcome));
        TRY(check_tensor_info(m->update, ei));
    }
    if (m->has_unclipped && !completed)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.unclipped: present with outcome %s; only COMPLETED "
                                 "reports carry it",
                                 shoal_protocol_outcome_name((int)m->outcome));
    if (m->error_detail && m->outcome != SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Report.error_detail: present with outcome %s; only ERROR "
                                 "reports carry one",
                                 shoal_protocol_outcome_name((int)m->outcome));
    TRY(check_string(ei, "Report.error_detail", m->error_detail, 0, 0, SHOAL_PROTOCOL_DETAIL_MAX));
    return SHOAL_OK;
}

static shoal_err check_report_ack(const Shoal__ReportAck *m, shoal_errinfo *ei)
{
    TRY(shoal_pcheck_bytes(ei, "ReportAck.session_id", m->has_session_id, &m->session_id, 1, 1,
                           SHOAL_PROTOCOL_ID_MAX));
    TRY(shoal_pcheck_enum(ei, "ReportAck.status", m->has_status, (int)m->status, 1,
                          SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED,
                          SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED));
    const int refused = m->status == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED;
    if (refused && !m->has_reason)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "ReportAck.reason: missing (required for REFUSED)");
    TRY(shoal_pcheck_enum(ei, "ReportAck.reason", m->has_reason, (int)m->reason, 0, 1, REASON_MAX));
    TRY(check_string(ei, "ReportAck.detail", m->detail, 0, 0, SHOAL_PROTOCOL_DETAIL_MAX));
    TRY(check_window(ei, "ReportAck.retry_window", m->retry_window, 1));
    return SHOAL_OK;
}

static shoal_err check_abort(const shoal_codec *codec, const Shoal__Abort *m, shoal_errinfo *ei)
{
    TRY(shoal_pcheck_enum(ei, "Abort.reason", m->has_reason, (int)m->reason, 1, 1, REASON_MAX));
    TRY(check_string(ei, "Abort.detail", m->detail, 0, 0, SHOAL_PROTOCOL_DETAIL_MAX));
    if (!m->retry_window && codec->sender == SHOAL_PEER_SERVER)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Abort.retry_window: missing (required from the server)");
    TRY(check_window(ei, "Abort.retry_window", m->retry_window, 0));
    const Shoal__VersionMismatch *v = m->version;
    if (m->reason == SHOAL__REASON__REASON_VERSION_UNSUPPORTED && !v)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Abort.version: missing (required with VERSION_UNSUPPORTED)");
    if (v) {
        if (!v->has_received)
            return shoal_pcheck_missing(ei, "Abort.version.received");
        if (!v->has_supported_min)
            return shoal_pcheck_missing(ei, "Abort.version.supported_min");
        if (!v->has_supported_max)
            return shoal_pcheck_missing(ei, "Abort.version.supported_max");
        if (v->supported_min > v->supported_max)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "Abort.version: supported_min %" PRIu32
                                     " is greater than supported_max %" PRIu32,
                                     v->supported_min, v->supported_max);
    }
    return SHOAL_OK;
}

static shoal_err check_sender(const shoal_codec *codec, const shoal_envelope *env,
                              shoal_errinfo *ei)
{
    if (codec->sender == SHOAL_PEER_ANY)
        return SHOAL_OK;
    shoal_peer from;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_CHECK_IN:
    case SHOAL__ENVELOPE__BODY_REPORT_CHUNK:
    case SHOAL__ENVELOPE__BODY_REPORT:
    case SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE:
    case SHOAL__ENVELOPE__BODY_SECAGG_SHARES:
    case SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT:
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK:
        from = SHOAL_PEER_DEVICE;
        break;
    case SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT:
    case SHOAL__ENVELOPE__BODY_MODEL_CHUNK:
    case SHOAL__ENVELOPE__BODY_REPORT_ACK:
    case SHOAL__ENVELOPE__BODY_SECAGG_KEYS:
    case SHOAL__ENVELOPE__BODY_SECAGG_INBOX:
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST:
        from = SHOAL_PEER_SERVER;
        break;
    default:
        return SHOAL_OK;
    }
    if (from != codec->sender)
        return shoal_errinfo_set(
            ei, SHOAL_EPROTO, "Envelope.body: %s is sent by the %s, not the %s",
            shoal_envelope_body_name(env), from == SHOAL_PEER_DEVICE ? "device" : "server",
            codec->sender == SHOAL_PEER_DEVICE ? "device" : "server");
    return SHOAL_OK;
}

static shoal_err check_codec(const shoal_codec *codec, shoal_errinfo *ei)
{
    if (!codec)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_codec: NULL");
    if (codec->max_message_bytes < SHOAL_PROTOCOL_MAX_MESSAGE_MIN)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "shoal_codec.max_message_bytes: %zu is below the minimum %u",
                                 codec->max_message_bytes, SHOAL_PROTOCOL_MAX_MESSAGE_MIN);
    if (codec->version_min < 1 || codec->version_min > codec->version_max)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "shoal_codec: version range %" PRIu32 " to %" PRIu32
                                 " is empty or starts at 0",
                                 codec->version_min, codec->version_max);
    if (codec->sender != SHOAL_PEER_ANY && codec->sender != SHOAL_PEER_DEVICE &&
        codec->sender != SHOAL_PEER_SERVER)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_codec.sender: %d is not a shoal_peer",
                                 (int)codec->sender);
    return SHOAL_OK;
}

/* The first field the parser did not know, for the "unknown body" message:
 * a newer peer's oneof member lands among the unknown fields. */
static shoal_err unknown_body(const shoal_envelope *env, shoal_errinfo *ei)
{
    if (env->base.n_unknown_fields > 0) {
        uint32_t tag = env->base.unknown_fields[0].tag;
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Envelope.body: field %" PRIu32
                                 " is not a message of protocol version %d%s",
                                 tag, SHOAL_PROTOCOL_VERSION,
                                 tag >= 16 && tag <= 31 ? " (16..31 are reserved for secure "
                                                          "aggregation)"
                                                        : "");
    }
    return shoal_errinfo_set(ei, SHOAL_EPROTO, "Envelope.body: no message set");
}

/* Field numbers run from 1 to 2^29 - 1. protobuf-c keeps an unknown field
 * whatever its number, and an over-long tag can spell 0: such a message
 * would be re-encoded into bytes no parser takes, so it is refused here,
 * in every nested message. */
#define FIELD_NUMBER_MAX 536870911u
static shoal_err check_field_numbers(const ProtobufCMessage *m, shoal_errinfo *ei)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        if (tag == 0 || tag > FIELD_NUMBER_MAX)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "%s: field number %" PRIu32
                                     " is not valid (field numbers are 1 to %u)",
                                     m->descriptor->short_name, tag, FIELD_NUMBER_MAX);
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        /* A oneof's members share one pointer: only the set case's. */
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + fd->quantifier_offset) != fd->id)
            continue;
        const char *member = (const char *)m + fd->offset;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + fd->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)member;
            for (size_t k = 0; k < n; k++)
                if (items[k])
                    TRY(check_field_numbers(items[k], ei));
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)member;
            if (sub)
                TRY(check_field_numbers(sub, ei));
        }
    }
    return SHOAL_OK;
}

static shoal_err check_envelope(const shoal_codec *codec, const shoal_envelope *env,
                                shoal_errinfo *ei)
{
    TRY(check_field_numbers(&env->base, ei));
    if (env->body_case == SHOAL__ENVELOPE__BODY__NOT_SET)
        return unknown_body(env, ei);
    TRY(check_sender(codec, env, ei));
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_CHECK_IN:
        if (!env->check_in)
            return shoal_pcheck_missing(ei, "Envelope.check_in");
        return check_checkin(codec, env->check_in, ei);
    case SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT:
        if (!env->check_in_result)
            return shoal_pcheck_missing(ei, "Envelope.check_in_result");
        return check_checkin_result(env->check_in_result, ei);
    case SHOAL__ENVELOPE__BODY_MODEL_CHUNK: {
        const Shoal__ModelChunk *c = env->model_chunk;
        if (!c)
            return shoal_pcheck_missing(ei, "Envelope.model_chunk");
        TRY(shoal_pcheck_bytes(ei, "ModelChunk.checkpoint_id", c->has_checkpoint_id,
                               &c->checkpoint_id, 1, 1, SHOAL_PROTOCOL_ID_MAX));
        return shoal_pcheck_chunk_range(ei, "ModelChunk", c->has_offset, c->offset,
                                        c->has_total_size, c->total_size, c->has_data, &c->data);
    }
    case SHOAL__ENVELOPE__BODY_REPORT_CHUNK: {
        const Shoal__ReportChunk *c = env->report_chunk;
        if (!c)
            return shoal_pcheck_missing(ei, "Envelope.report_chunk");
        TRY(shoal_pcheck_bytes(ei, "ReportChunk.session_id", c->has_session_id, &c->session_id, 1,
                               1, SHOAL_PROTOCOL_ID_MAX));
        return shoal_pcheck_chunk_range(ei, "ReportChunk", c->has_offset, c->offset,
                                        c->has_total_size, c->total_size, c->has_data, &c->data);
    }
    case SHOAL__ENVELOPE__BODY_REPORT:
        if (!env->report)
            return shoal_pcheck_missing(ei, "Envelope.report");
        return check_report(env->report, ei);
    case SHOAL__ENVELOPE__BODY_REPORT_ACK:
        if (!env->report_ack)
            return shoal_pcheck_missing(ei, "Envelope.report_ack");
        return check_report_ack(env->report_ack, ei);
    case SHOAL__ENVELOPE__BODY_ABORT:
        if (!env->abort)
            return shoal_pcheck_missing(ei, "Envelope.abort");
        return check_abort(codec, env->abort, ei);
    default:
        return shoal_pcheck_secagg_body(env, ei);
    }
}

/* ---- public API ---------------------------------------------------------- */

shoal_codec shoal_codec_defaults(shoal_peer sender)
{
    shoal_codec c;
    c.max_message_bytes = SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT;
    c.version_min = SHOAL_PROTOCOL_VERSION;
    c.version_max = SHOAL_PROTOCOL_VERSION;
    c.sender = sender;
    return c;
}

shoal_err shoal_envelope_check(const shoal_codec *codec, const shoal_envelope *env,
                               shoal_errinfo *ei)
{
    TRY(check_codec(codec, ei));
    if (!env)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "Envelope: NULL");
    return check_envelope(codec, env, ei);
}

shoal_err shoal_envelope_encode(const shoal_codec *codec, const shoal_envelope *env, uint8_t **out,
                                size_t *out_len, shoal_errinfo *ei)
{
    if (!out || !out_len)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_envelope_encode: NULL output");
    *out = NULL;
    *out_len = 0;
    shoal_err err = shoal_envelope_check(codec, env, ei);
    if (err == SHOAL_EPROTO)
        return SHOAL_EINVAL; /* our own message is wrong, not the peer */
    if (err != SHOAL_OK)
        return err;
    size_t len = protobuf_c_message_get_packed_size(&env->base);
    if (len > codec->max_message_bytes)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%s: encodes to %zu bytes, above the message limit of %zu bytes",
                                 shoal_envelope_body_name(env), len, codec->max_message_bytes);
    uint8_t *buf = shoal_malloc(len);
    if (!buf)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory encoding %zu bytes",
                                 shoal_envelope_body_name(env), len);
    size_t packed = protobuf_c_message_pack(&env->base, buf);
    if (packed != len) {
        shoal_free(buf);
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: packed %zu bytes, expected %zu",
                                 shoal_envelope_body_name(env), packed, len);
    }
    *out = buf;
    *out_len = len;
    return SHOAL_OK;
}

static shoal_err unpack(const shoal_codec *codec, const uint8_t *buf, size_t len,
                        shoal_envelope **out, shoal_errinfo *ei)
{
    *out = NULL;
    if (len > codec->max_message_bytes)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "Envelope: message is %zu bytes, above the limit of %zu bytes",
                                 len, codec->max_message_bytes);
    pb_alloc_state state = {0};
    ProtobufCAllocator allocator = {pb_alloc, pb_free, &state};
    /* protobuf-c reads nothing through a NULL pointer when len is 0. */
    static const uint8_t empty[1] = {0};
    shoal_envelope *env = shoal__envelope__unpack(&allocator, len, buf ? buf : empty);
    if (!env) {
        if (state.failed)
            return shoal_errinfo_set(ei, SHOAL_ENOMEM, "Envelope: out of memory decoding %zu bytes",
                                     len);
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Envelope: %zu bytes are not a valid shoal.Envelope encoding "
                                 "(truncated, bad wire type or bad length)",
                                 len);
    }
    *out = env;
    return SHOAL_OK;
}

shoal_err shoal_envelope_decode(const shoal_codec *codec, const uint8_t *buf, size_t len,
                                shoal_envelope **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_envelope_decode: NULL output");
    *out = NULL;
    TRY(check_codec(codec, ei));
    if (!buf && len > 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_envelope_decode: NULL buffer");
    shoal_envelope *env;
    TRY(unpack(codec, buf, len, &env, ei));
    shoal_err err = check_envelope(codec, env, ei);
    if (err != SHOAL_OK) {
        shoal_envelope_free(env);
        return err;
    }
    *out = env;
    return SHOAL_OK;
}

void shoal_envelope_free(shoal_envelope *env)
{
    if (!env)
        return;
    ProtobufCAllocator allocator = {pb_alloc, pb_free, NULL};
    shoal__envelope__free_unpacked(env, &allocator);
}

shoal_err shoal_envelope_unsupported_version(const shoal_codec *codec, const uint8_t *buf,
                                             size_t len, uint32_t *version)
{
    if (!version || check_codec(codec, NULL) != SHOAL_OK || (!buf && len > 0))
        return SHOAL_EINVAL;
    shoal_envelope *env;
    shoal_err err = unpack(codec, buf, len, &env, NULL);
    if (err == SHOAL_ENOMEM)
        return err;
    if (err != SHOAL_OK)
        return SHOAL_ENOTFOUND;
    err = SHOAL_ENOTFOUND;
    if (env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN && env->check_in &&
        env->check_in->has_protocol_version) {
        uint32_t v = env->check_in->protocol_version;
        if (v < codec->version_min || v > codec->version_max) {
            *version = v;
            err = SHOAL_OK;
        }
    }
    shoal_envelope_free(env);
    return err;
}

shoal_err shoal_envelope_encode_version_abort(const shoal_codec *codec, uint32_t received,
                                              uint64_t retry_min_ms, uint64_t retry_max_ms,
                                              uint8_t **out, size_t *out_len, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    TRY(check_codec(codec, ei));
    if (received >= codec->version_min && received <= codec->version_max)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL,
            "shoal_envelope_encode_version_abort: version %" PRIu32 " is supported", received);
    char detail[SHOAL_PROTOCOL_DETAIL_MAX];
    if (codec->version_min == codec->version_max)
        snprintf(detail, sizeof detail,
                 "protocol version %" PRIu32
                 " is not supported; this server speaks version %" PRIu32,
                 received, codec->version_min);
    else
        snprintf(detail, sizeof detail,
                 "protocol version %" PRIu32
                 " is not supported; this server speaks versions %" PRIu32 " to %" PRIu32,
                 received, codec->version_min, codec->version_max);

    Shoal__RetryWindow window = SHOAL__RETRY_WINDOW__INIT;
    window.has_min_ms = window.has_max_ms = 1;
    window.min_ms = retry_min_ms;
    window.max_ms = retry_max_ms;
    Shoal__VersionMismatch mismatch = SHOAL__VERSION_MISMATCH__INIT;
    mismatch.has_received = mismatch.has_supported_min = mismatch.has_supported_max = 1;
    mismatch.received = received;
    mismatch.supported_min = codec->version_min;
    mismatch.supported_max = codec->version_max;
    Shoal__Abort abort_msg = SHOAL__ABORT__INIT;
    abort_msg.has_reason = 1;
    abort_msg.reason = SHOAL__REASON__REASON_VERSION_UNSUPPORTED;
    abort_msg.detail = detail;
    abort_msg.retry_window = &window;
    abort_msg.version = &mismatch;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_ABORT;
    env.abort = &abort_msg;
    return shoal_envelope_encode(codec, &env, out, out_len, ei);
}
