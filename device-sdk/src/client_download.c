/* Check-in and the model download: the CheckIn (naming the checkpoint
 * held, or the upload to resume), the server's answer, and the model's
 * chunks reassembled and decoded. */
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"

void shoal_devc_send_checkin(shoal_client *c)
{
    shoal_checkin_fields f = {.population = c->population,
                              .auth_token = c->token,
                              .auth_token_len = c->cfg.auth_token_len,
                              .sdk_version = SHOAL_CLIENT_SDK_VERSION,
                              .max_model_bytes = SHOAL_DEVC_MAX_MODEL_BYTES,
                              .secure_aggregation = 1,
                              .adaptive_clipping = 1};
    if (c->model && c->held_len) {
        f.held_checkpoint_id = c->held;
        f.held_checkpoint_id_len = c->held_len;
    }
    shoal_devc_saved_expire(c);
    if (c->saved.held) {
        /* The server answers a resume without ModelChunks: the device
         * names the checkpoint its update was computed from. */
        f.resume_session_id = c->saved.session;
        f.resume_session_id_len = c->saved.session_len;
        f.held_checkpoint_id = c->saved.checkpoint;
        f.held_checkpoint_id_len = c->saved.checkpoint_len;
    }
    shoal_checkin_body body;
    shoal_envelope env;
    shoal_errinfo ei = {0};
    if (shoal_envelope_checkin_init(&env, &body, &f, &ei) != SHOAL_OK) {
        shoal_devc_fail(c, SHOAL_EINVAL, SHOAL_SESSION_REASON_DEVICE,
                        "cannot build the CheckIn: %s", ei.msg);
        return;
    }
    if (shoal_devc_send(c, &env) == SHOAL_OK) {
        c->state = ST_AWAIT_RESULT;
        shoal_devc_event(c, SHOAL_EVENT_CHECKED_IN, 0, 0, 0, 0, NULL);
    }
}

void shoal_devc_take_result(shoal_client *c, shoal_envelope *env)
{
    Shoal__CheckInResult *r = env->check_in_result;
    if (r->result_case == SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
        const Shoal__CheckInResult__Rejected *rj = r->rejected;
        shoal_devc_saved_drop(c); /* a server that can resume answers Accepted */
        shoal_devc_set_window(c, rj->retry_window);
        c->res.reason = rj->reason;
        const char *detail = rj->detail ? rj->detail : "";
        switch (rj->reason) {
        case SHOAL__REASON__REASON_AUTH_FAILED:
            shoal_devc_fail(c, SHOAL_EAUTH, SHOAL_SESSION_REASON_AUTH_FAILED,
                            "check-in refused: AUTH_FAILED: %s", detail);
            break;
        case SHOAL__REASON__REASON_UNKNOWN_POPULATION:
            shoal_devc_fail(c, SHOAL_ENOTFOUND, SHOAL_SESSION_REASON_UNKNOWN_POPULATION,
                            "check-in refused: UNKNOWN_POPULATION \"%s\": %s", c->population,
                            detail);
            break;
        case SHOAL__REASON__REASON_VERSION_UNSUPPORTED:
            shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_VERSION_UNSUPPORTED,
                            "check-in refused: VERSION_UNSUPPORTED: %s", detail);
            break;
        default:
            snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "rejected: %s%s%s",
                     shoal_protocol_reason_name(rj->reason), detail[0] ? ": " : "", detail);
            shoal_devc_finish(c, SHOAL_SESSION_REJECTED, SHOAL_OK, SHOAL_SESSION_REASON_REJECTED);
        }
        shoal_envelope_free(env);
        return;
    }
    Shoal__CheckInResult__Accepted *a = r->accepted;
    c->accepted_env = env;
    c->accepted = a;
    shoal_devc_set_window(c, a->retry_window);
    /* Nothing larger than the server takes: it would close with 1009. */
    if (a->has_max_message_bytes && a->max_message_bytes < c->codec_out.max_message_bytes)
        c->codec_out.max_message_bytes = (size_t)a->max_message_bytes;
    c->res.round = a->round;
    shoal_devc_event(c, SHOAL_EVENT_ACCEPTED, 0, 0, 0, (int64_t)a->round, NULL);
    c->phase_start_ms = c->port->monotonic_ms(c->port->ctx);
    c->accepted_ms = c->phase_start_ms;
    c->last_poll_ms = c->phase_start_ms; /* eligibility was checked before connecting */
    memcpy(c->session, a->session_id.data, a->session_id.len);
    c->session_len = a->session_id.len;
    const Shoal__Plan *plan = a->plan;
    /* With secure aggregation the update travels masked, in the ring
     * encoding the codec has already matched to the plan's ring. */
    if (plan->model_encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE ||
        (a->task_kind == SHOAL__TASK_KIND__TASK_KIND_TRAIN && !plan->secure_aggregation &&
         plan->update_encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE)) {
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "the plan asks for encodings this SDK did not offer");
        return;
    }
    uint64_t params = plan->model->parameter_count;
    if (params > SHOAL_DEVC_MAX_MODEL_BYTES / 4 || a->model_size != params * 4) {
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "the plan's model (%llu parameters, %llu bytes) does not fit this device",
                        (unsigned long long)params, (unsigned long long)a->model_size);
        return;
    }
    if (c->saved.held) {
        if (shoal_devc_saved_resume(c, a))
            return;
        shoal_devc_log(c, 6, "the server did not resume the saved upload: dropped");
        shoal_devc_saved_drop(c);
    }
    if (a->has_upload_resume_offset) {
        /* It sends no model and waits for ReportChunks we cannot give. */
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "the server resumed an upload (offset %llu) this client does not hold",
                        (unsigned long long)a->upload_resume_offset);
        return;
    }
    if (!shoal_model_download_needed(a, c->held, c->model ? c->held_len : 0) &&
        c->model_count == params) {
        c->state = ST_WORK;
        return;
    }
    shoal_reassembly_limits lim = {
        .max_total = a->model_size, .max_chunk = 1u << 20, .max_chunks = 1000000};
    if (shoal_reassembler_new("ModelChunk", &lim, &c->ra) != SHOAL_OK) {
        shoal_devc_fail(c, SHOAL_ENOMEM, SHOAL_SESSION_REASON_DEVICE,
                        "out of memory for a model of %llu bytes",
                        (unsigned long long)a->model_size);
        return;
    }
    c->state = ST_DOWNLOAD;
}

void shoal_devc_take_model_chunk(shoal_client *c, const Shoal__ModelChunk *mc)
{
    const Shoal__CheckInResult__Accepted *a = c->accepted;
    if (mc->checkpoint_id.len != a->checkpoint_id.len ||
        memcmp(mc->checkpoint_id.data, a->checkpoint_id.data, mc->checkpoint_id.len) != 0) {
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "a ModelChunk names another checkpoint than Accepted");
        return;
    }
    shoal_chunk ch = shoal_chunk_from_model(mc);
    shoal_errinfo ei;
    shoal_err err = shoal_reassembler_add(c->ra, &ch, &ei);
    if (err == SHOAL_OK) {
        (void)shoal_devc_transfer_stopped(c, 0);
        return;
    }
    if (err != SHOAL_DONE) {
        shoal_devc_fail(c, err,
                        err == SHOAL_ENOMEM ? SHOAL_SESSION_REASON_DEVICE
                                            : SHOAL_SESSION_REASON_PROTOCOL,
                        "model download: %s", ei.msg);
        return;
    }
    size_t len = 0, count = a->plan->model->parameter_count;
    const uint8_t *bytes = shoal_reassembler_bytes(c->ra, &len);
    float *model = shoal_mallocarray(count, sizeof(float));
    if (!model) {
        shoal_devc_fail(c, SHOAL_ENOMEM, SHOAL_SESSION_REASON_DEVICE,
                        "out of memory for the model");
        return;
    }
    err = shoal_tensor_decode_f32le(bytes, len, model, count, "model", &ei);
    shoal_reassembler_free(c->ra);
    c->ra = NULL;
    if (err) {
        shoal_free(model);
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_PROTOCOL, "model download: %s", ei.msg);
        return;
    }
    shoal_free(c->model);
    c->model = model;
    c->model_count = count;
    memcpy(c->held, a->checkpoint_id.data, a->checkpoint_id.len);
    c->held_len = a->checkpoint_id.len;
    c->res.model_downloaded = 1;
    shoal_devc_event(c, SHOAL_EVENT_DOWNLOADED, a->model_size, shoal_devc_phase_ms(c), 0, 0, NULL);
    c->state = ST_WORK;
}
