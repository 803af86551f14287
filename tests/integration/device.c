#include "device.h"

#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"

int tdev_connect(tdev *d, const tdev_server *s)
{
    memset(d, 0, sizeof *d);
    d->codec_out = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    d->codec_in = shoal_codec_defaults(SHOAL_PEER_SERVER);
    shoal_wss_config cfg = {.host = "127.0.0.1",
                            .port = s->port,
                            .server_name = "localhost",
                            .ca_file = s->ca_file,
                            .timeout_ms = 10000};
    shoal_errinfo ei = {0};
    if (shoal_wss_connect(&cfg, &d->wss, &ei) != SHOAL_OK) {
        fprintf(stderr, "tdev_connect: %s\n", ei.msg);
        return -1;
    }
    return 0;
}

void tdev_close(tdev *d)
{
    if (d->wss) {
        if (shoal_wss_close(d->wss, 1000, 2000) != SHOAL_OK) {
            /* The server may already have closed: nothing to do. */
        }
        shoal_wss_free(d->wss);
    }
    shoal_free(d->model);
    shoal_free(d->last_sent);
    d->last_sent = NULL;
    d->wss = NULL;
    d->model = NULL;
}

int tdev_send(tdev *d, const shoal_envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_errinfo ei = {0};
    if (shoal_envelope_encode(&d->codec_out, env, &buf, &len, &ei) != SHOAL_OK) {
        fprintf(stderr, "tdev_send: %s\n", ei.msg);
        return -1;
    }
    return tdev_send_bytes(d, buf, len);
}

int tdev_send_bytes(tdev *d, uint8_t *buf, size_t len)
{
    shoal_errinfo ei = {0};
    shoal_err err = shoal_wss_send(d->wss, buf, len, 10000, &ei);
    shoal_free(d->last_sent);
    d->last_sent = buf;
    d->last_sent_len = len;
    if (err) {
        fprintf(stderr, "tdev_send: %s\n", ei.msg);
        return -1;
    }
    return 0;
}

int tdev_resend_last(tdev *d)
{
    shoal_errinfo ei = {0};
    if (!d->last_sent || shoal_wss_send(d->wss, d->last_sent, d->last_sent_len, 10000, &ei)) {
        fprintf(stderr, "tdev_resend_last: %s\n", ei.msg);
        return -1;
    }
    return 0;
}

static int checkin(tdev *d, const char *population, const char *token, uint32_t version,
                   const uint8_t *held, size_t held_len, const uint8_t *resume, size_t resume_len)
{
    Shoal__Capabilities caps = SHOAL__CAPABILITIES__INIT;
    Shoal__TensorEncoding enc[3] = {SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE,
                                    SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING,
                                    SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING};
    caps.has_max_model_bytes = 1;
    caps.max_model_bytes = 1ull << 30;
    caps.n_encodings = d->secagg_capable ? 3 : 1;
    caps.encodings = enc;
    caps.has_secure_aggregation = d->secagg_capable;
    caps.secure_aggregation = d->secagg_capable;
    caps.has_adaptive_clipping = d->adaptive_capable;
    caps.adaptive_clipping = d->adaptive_capable;
    Shoal__CheckIn ci = SHOAL__CHECK_IN__INIT;
    ci.has_protocol_version = 1;
    ci.protocol_version = version ? version : SHOAL_PROTOCOL_VERSION;
    ci.population = (char *)population;
    ci.has_auth_token = 1;
    ci.auth_token.data = (uint8_t *)token;
    ci.auth_token.len = strlen(token);
    ci.sdk_version = "test-device/1";
    ci.capabilities = &caps;
    d->held_len = held_len < sizeof d->held ? held_len : 0;
    if (d->held_len)
        memcpy(d->held, held, d->held_len);
    if (held_len) {
        ci.has_held_checkpoint_id = 1;
        ci.held_checkpoint_id.data = (uint8_t *)held;
        ci.held_checkpoint_id.len = held_len;
    }
    Shoal__Resume res = SHOAL__RESUME__INIT;
    if (resume_len) {
        res.has_session_id = 1;
        res.session_id.data = (uint8_t *)resume;
        res.session_id.len = resume_len;
        ci.resume = &res;
    }
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    env.check_in = &ci;
    if (version && version != SHOAL_PROTOCOL_VERSION) {
        /* Our codec refuses other versions: encode by hand. */
        size_t n = protobuf_c_message_get_packed_size(&env.base);
        uint8_t *buf = shoal_malloc(n);
        protobuf_c_message_pack(&env.base, buf);
        shoal_errinfo ei = {0};
        shoal_err err = shoal_wss_send(d->wss, buf, n, 10000, &ei);
        shoal_free(buf);
        return err ? -1 : 0;
    }
    return tdev_send(d, &env);
}

int tdev_checkin(tdev *d, const char *population, const char *token, uint32_t version,
                 const uint8_t *held, size_t held_len)
{
    return checkin(d, population, token, version, held, held_len, NULL, 0);
}

int tdev_checkin_resume(tdev *d, const char *population, const char *token, const uint8_t *session,
                        size_t session_len, const uint8_t *checkpoint, size_t checkpoint_len)
{
    return checkin(d, population, token, 0, checkpoint, checkpoint_len, session, session_len);
}

static void take_window(tdev *d, const Shoal__RetryWindow *w)
{
    if (w) {
        d->retry_min_ms = w->min_ms;
        d->retry_max_ms = w->max_ms;
    }
}

/* Receives and decodes one envelope; NULL on close/timeout with *res set. */
shoal_envelope *tdev_recv(tdev *d, int timeout_ms, enum tdev_result *res)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    shoal_errinfo ei = {0};
    shoal_err err = shoal_wss_recv(d->wss, &msg, &len, timeout_ms, &ei);
    if (err == SHOAL_ETIMEDOUT) {
        *res = TDEV_TIMEOUT;
        return NULL;
    }
    if (err == SHOAL_ECLOSED) {
        *res = TDEV_CLOSED;
        return NULL;
    }
    if (err) {
        fprintf(stderr, "tdev recv: %s\n", ei.msg);
        *res = TDEV_ERROR;
        return NULL;
    }
    shoal_envelope *env = NULL;
    err = shoal_envelope_decode(&d->codec_in, msg, len, &env, &ei);
    shoal_free(msg);
    if (err) {
        fprintf(stderr, "tdev decode: %s\n", ei.msg);
        *res = TDEV_ERROR;
        return NULL;
    }
    return env;
}

static enum tdev_result take_abort(tdev *d, const Shoal__Abort *ab)
{
    d->reason = ab->reason;
    snprintf(d->detail, sizeof d->detail, "%s", ab->detail ? ab->detail : "");
    take_window(d, ab->retry_window);
    if (ab->version) {
        d->version_received = (int)ab->version->received;
        d->version_min = (int)ab->version->supported_min;
        d->version_max = (int)ab->version->supported_max;
    }
    return TDEV_ABORTED;
}

enum tdev_result tdev_await_config(tdev *d, int timeout_ms)
{
    enum tdev_result res = TDEV_ERROR;
    shoal_envelope *env = tdev_recv(d, timeout_ms, &res);
    if (!env)
        return res;
    if (env->body_case == SHOAL__ENVELOPE__BODY_ABORT) {
        res = take_abort(d, env->abort);
        shoal_envelope_free(env);
        return res;
    }
    if (env->body_case != SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT) {
        fprintf(stderr, "tdev: expected CheckInResult, got %s\n", shoal_envelope_body_name(env));
        shoal_envelope_free(env);
        return TDEV_ERROR;
    }
    Shoal__CheckInResult *r = env->check_in_result;
    if (r->result_case == SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
        d->reason = r->rejected->reason;
        snprintf(d->detail, sizeof d->detail, "%s", r->rejected->detail ? r->rejected->detail : "");
        take_window(d, r->rejected->retry_window);
        shoal_envelope_free(env);
        return TDEV_REJECTED;
    }
    Shoal__CheckInResult__Accepted *a = r->accepted;
    memcpy(d->session, a->session_id.data, a->session_id.len);
    d->session_len = a->session_id.len;
    d->round = a->round;
    d->task = a->task_kind;
    d->param_count = a->plan->model->parameter_count;
    d->report_deadline_ms = a->plan->report_deadline_ms;
    d->max_examples = a->plan->limits->has_max_examples ? a->plan->limits->max_examples : 0;
    d->has_secagg = a->plan->secure_aggregation != NULL;
    d->plan_clip = a->plan->update_bound ? a->plan->update_bound->l2_norm : 0.0;
    d->report_unclipped = shoal_plan_reports_unclipped(a->plan);
    if (d->has_secagg && shoal_secagg_wire_plan(a->plan->secure_aggregation, &d->sa_cfg,
                                                &d->sa_index, &d->sa_fx, NULL) != SHOAL_OK) {
        shoal_envelope_free(env);
        return TDEV_ERROR;
    }
    memcpy(d->checkpoint, a->checkpoint_id.data, a->checkpoint_id.len);
    d->checkpoint_len = a->checkpoint_id.len;
    take_window(d, a->retry_window);
    d->has_resume_offset = a->has_upload_resume_offset;
    d->resume_offset = a->upload_resume_offset;
    int download = shoal_model_download_needed(a, d->held, d->held_len);
    uint64_t model_size = a->model_size;
    shoal_envelope_free(env);
    if (!download)
        return TDEV_ACCEPTED;

    shoal_reassembly_limits lim = {
        .max_total = model_size, .max_chunk = 1u << 20, .max_chunks = 100000};
    shoal_reassembler *ra = NULL;
    if (shoal_reassembler_new("ModelChunk", &lim, &ra) != SHOAL_OK)
        return TDEV_ERROR;
    for (;;) {
        env = tdev_recv(d, timeout_ms, &res);
        if (!env) {
            shoal_reassembler_free(ra);
            return res;
        }
        if (env->body_case != SHOAL__ENVELOPE__BODY_MODEL_CHUNK) {
            fprintf(stderr, "tdev: expected ModelChunk, got %s\n", shoal_envelope_body_name(env));
            shoal_envelope_free(env);
            shoal_reassembler_free(ra);
            return TDEV_ERROR;
        }
        shoal_chunk ch = shoal_chunk_from_model(env->model_chunk);
        shoal_errinfo ei = {0};
        shoal_err err = shoal_reassembler_add(ra, &ch, &ei);
        shoal_envelope_free(env);
        if (err == SHOAL_DONE)
            break;
        if (err) {
            fprintf(stderr, "tdev: %s\n", ei.msg);
            shoal_reassembler_free(ra);
            return TDEV_ERROR;
        }
    }
    size_t len = 0;
    const uint8_t *bytes = shoal_reassembler_bytes(ra, &len);
    d->model = shoal_mallocarray(d->param_count, sizeof(float));
    shoal_errinfo ei = {0};
    shoal_err err = shoal_tensor_decode_f32le(bytes, len, d->model, d->param_count, "model", &ei);
    shoal_reassembler_free(ra);
    if (err) {
        fprintf(stderr, "tdev: %s\n", ei.msg);
        return TDEV_ERROR;
    }
    return TDEV_ACCEPTED;
}

int tdev_upload(tdev *d, const float *delta, size_t count, size_t chunk, uint64_t from,
                unsigned max_chunks)
{
    size_t len = count * 4;
    uint8_t *bytes = shoal_malloc(len);
    /* Encode by hand so tests can send NaN. */
    for (size_t i = 0; i < count; i++)
        memcpy(bytes + 4 * i, &delta[i], 4); /* the tests run little-endian hosts */
    shoal_chunker ch;
    if (shoal_chunker_init(&ch, bytes, len, chunk) != SHOAL_OK ||
        (from && shoal_chunker_resume(&ch, from) != SHOAL_OK)) {
        shoal_free(bytes);
        return -1;
    }
    shoal_chunk c;
    unsigned sent = 0;
    while (sent < max_chunks && shoal_chunker_next(&ch, &c) == SHOAL_ROW) {
        Shoal__ReportChunk rc;
        shoal_envelope env;
        if (shoal_envelope_report_chunk_init(&env, &rc, d->session, d->session_len, &c, NULL) !=
                SHOAL_OK ||
            tdev_send(d, &env) != 0) {
            shoal_free(bytes);
            return -1;
        }
        sent++;
    }
    shoal_free(bytes);
    return 0;
}

int tdev_send_report(tdev *d, size_t count, uint64_t examples, double loss)
{
    Shoal__TensorInfo ti = SHOAL__TENSOR_INFO__INIT;
    ti.has_encoding = ti.has_element_count = ti.has_byte_size = 1;
    ti.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    ti.element_count = count;
    ti.byte_size = count * 4;
    Shoal__Metric m = SHOAL__METRIC__INIT;
    m.name = "loss";
    m.has_value = 1;
    m.value = loss;
    Shoal__Metric *ms[1] = {&m};
    Shoal__Report r = SHOAL__REPORT__INIT;
    r.has_session_id = 1;
    r.session_id.data = d->session;
    r.session_id.len = d->session_len;
    r.has_outcome = 1;
    r.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    r.has_example_count = 1;
    r.example_count = examples;
    r.n_metrics = 1;
    r.metrics = ms;
    r.update = &ti;
    r.has_unclipped = d->has_unclipped;
    r.unclipped = d->unclipped;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    env.report = &r;
    return tdev_send(d, &env);
}

int tdev_report(tdev *d, const float *delta, size_t count, uint64_t examples, double loss,
                size_t chunk)
{
    if (tdev_upload(d, delta, count, chunk, 0, ~0u) != 0)
        return -1;
    return tdev_send_report(d, count, examples, loss);
}

int tdev_report_eval(tdev *d, uint64_t examples, double loss, double accuracy)
{
    Shoal__Metric m1 = SHOAL__METRIC__INIT, m2 = SHOAL__METRIC__INIT;
    m1.name = "loss";
    m1.has_value = 1;
    m1.value = loss;
    m2.name = "accuracy";
    m2.has_value = 1;
    m2.value = accuracy;
    Shoal__Metric *ms[2] = {&m1, &m2};
    Shoal__Report r = SHOAL__REPORT__INIT;
    r.has_session_id = 1;
    r.session_id.data = d->session;
    r.session_id.len = d->session_len;
    r.has_outcome = 1;
    r.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    r.has_example_count = 1;
    r.example_count = examples;
    r.n_metrics = 2;
    r.metrics = ms;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    env.report = &r;
    return tdev_send(d, &env);
}

int tdev_report_outcome(tdev *d, int outcome)
{
    Shoal__Report r = SHOAL__REPORT__INIT;
    r.has_session_id = 1;
    r.session_id.data = d->session;
    r.session_id.len = d->session_len;
    r.has_outcome = 1;
    r.outcome = outcome;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    env.report = &r;
    return tdev_send(d, &env);
}

enum tdev_result tdev_await_ack(tdev *d, int timeout_ms)
{
    enum tdev_result res = TDEV_ERROR;
    shoal_envelope *env = tdev_recv(d, timeout_ms, &res);
    if (!env)
        return res;
    if (env->body_case == SHOAL__ENVELOPE__BODY_ABORT) {
        res = take_abort(d, env->abort);
    } else if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT_ACK) {
        d->status = env->report_ack->status;
        d->reason = env->report_ack->has_reason ? env->report_ack->reason : 0;
        snprintf(d->detail, sizeof d->detail, "%s",
                 env->report_ack->detail ? env->report_ack->detail : "");
        take_window(d, env->report_ack->retry_window);
        res = TDEV_ACKED;
    } else {
        fprintf(stderr, "tdev: expected ReportAck, got %s\n", shoal_envelope_body_name(env));
        res = TDEV_ERROR;
    }
    shoal_envelope_free(env);
    return res;
}
