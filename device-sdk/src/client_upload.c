/* The end of the local work, as the server hears it: the work's result
 * (work_int.h) turned into the update's ReportChunks and the Report, and
 * the ReportAck that ends the session. */
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"
#include "shoal/log.h"
#include "work_int.h"

/* Reports a failure of the device's own work as Report{ERROR} (the server
 * counts the session dropped); the session ends ERROR after the ack. */
static void report_error(shoal_client *c, shoal_err err, shoal_session_reason reason,
                         const shoal_errinfo *ei)
{
    c->pending_outcome = SHOAL_SESSION_ERROR;
    c->pending_err = err;
    c->pending_reason = reason;
    snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "%s", ei->msg);
    shoal_devc_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR, 0, "device error");
}

/* Encodes the update (delta, count floats, taken) for upload and moves to
 * ST_UPLOAD; on failure reports the error and frees delta. */
static void queue_update(shoal_client *c, float *delta, size_t count, uint64_t example_count)
{
    shoal_errinfo ei = {{0}};
    c->upload_len = count * 4;
    c->upload_bytes = shoal_malloc(c->upload_len);
    if (!c->upload_bytes ||
        shoal_tensor_encode_f32le(delta, count, c->upload_bytes, c->upload_len, &ei) != SHOAL_OK ||
        shoal_chunker_init(&c->chunker, c->upload_bytes, c->upload_len,
                           shoal_chunk_max_payload(c->codec_out.max_message_bytes)) != SHOAL_OK) {
        shoal_free(delta);
        if (!c->upload_bytes)
            shoal_errinfo_set(&ei, SHOAL_ENOMEM, "no memory for the update");
        report_error(
            c, SHOAL_ENUMERIC,
            c->upload_bytes ? SHOAL_SESSION_REASON_WORK_FAILED : SHOAL_SESSION_REASON_DEVICE, &ei);
        return;
    }
    c->update = delta;
    c->update_count = count;
    c->pending_outcome = SHOAL_SESSION_TRAINED;
    c->pending_reason = SHOAL_SESSION_REASON_NONE;
    shoal_devc_event(c, SHOAL_EVENT_TRAINED, 0, shoal_devc_phase_ms(c), example_count, 0, NULL);
    c->phase_start_ms = c->port->monotonic_ms(c->port->ctx);
    c->state = ST_UPLOAD;
}

void shoal_devc_work(shoal_client *c)
{
    shoal_devc_work_result w;
    shoal_devc_work_run(c, &w);
    c->res.work_bytes = w.work_bytes;
    if (w.started_ms) {
        c->phase_start_ms = w.started_ms;
        c->last_poll_ms = w.last_poll_ms;
    }
    if (w.end != SHOAL_DEVC_WORK_INSUFFICIENT_DATA && w.end != SHOAL_DEVC_WORK_ABANDONED) {
        c->res.example_count = w.example_count;
        c->res.loss = w.loss;
        c->res.accuracy = w.accuracy;
    }
    /* The plan's update bound, over the whole update, before it is encoded
     * for upload or masked for secure aggregation (where the server cannot
     * check it). An update already within it is left as it is. The work
     * refused non-finite deltas, so the clip cannot fail. With adaptive
     * clipping (Andrew et al. 2021) the device also tells whether its norm
     * was within the round's clip, measured before clipping. */
    const Shoal__UpdateBound *bound = c->accepted->plan->update_bound;
    double norm = 0;
    if (w.end == SHOAL_DEVC_WORK_TRAINED && bound &&
        shoal_clip_l2(w.delta_count, w.delta, bound->l2_norm, &norm) != SHOAL_OK)
        shoal_devc_log(c, SHOAL_LOG_WARN, "the update could not be clipped to %g",
                       (double)bound->l2_norm);
    if (w.end == SHOAL_DEVC_WORK_TRAINED && bound &&
        shoal_plan_reports_unclipped(c->accepted->plan))
        c->res.unclipped = norm <= (double)bound->l2_norm;
    switch (w.end) {
    case SHOAL_DEVC_WORK_TRAINED:
        if (!shoal_devc_secagg_start(c, w.delta, w.delta_count, w.example_count))
            queue_update(c, w.delta, w.delta_count, w.example_count);
        return;
    case SHOAL_DEVC_WORK_EVALUATED:
        c->pending_outcome = SHOAL_SESSION_EVALUATED;
        c->pending_reason = SHOAL_SESSION_REASON_NONE;
        shoal_devc_event(c, SHOAL_EVENT_EVALUATED, 0, shoal_devc_phase_ms(c), w.example_count, 0,
                         NULL);
        shoal_devc_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED, 0, NULL);
        return;
    case SHOAL_DEVC_WORK_INTERRUPTED:
        /* Nothing of a partial run is reported. */
        snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "%s", w.ei.msg);
        c->pending_outcome = SHOAL_SESSION_INTERRUPTED;
        c->pending_reason = w.reason;
        shoal_devc_event(c, SHOAL_EVENT_INTERRUPTED, 0, shoal_devc_phase_ms(c), w.example_count, 0,
                         c->res.errinfo.msg);
        shoal_devc_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED, 0, NULL);
        return;
    case SHOAL_DEVC_WORK_INSUFFICIENT_DATA:
        snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "%s", w.ei.msg);
        c->pending_outcome = SHOAL_SESSION_INSUFFICIENT_DATA;
        c->pending_reason = SHOAL_SESSION_REASON_INSUFFICIENT_DATA;
        shoal_devc_event(c, SHOAL_EVENT_INSUFFICIENT_DATA, 0, 0, w.selected, (int64_t)w.needed,
                         c->res.errinfo.msg);
        shoal_devc_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INSUFFICIENT_DATA, 0, NULL);
        return;
    case SHOAL_DEVC_WORK_FAILED:
        report_error(c, w.err, w.reason, &w.ei);
        return;
    case SHOAL_DEVC_WORK_ABANDONED:
        shoal_devc_fail(c, w.err, w.reason, "%s", w.ei.msg);
        return;
    }
}

void shoal_devc_upload_next(shoal_client *c)
{
    shoal_chunk ch;
    if (shoal_chunker_next(&c->chunker, &ch) == SHOAL_ROW) {
        Shoal__ReportChunk rc;
        shoal_envelope env;
        shoal_errinfo ei;
        shoal_err err =
            shoal_envelope_report_chunk_init(&env, &rc, c->session, c->session_len, &ch, &ei);
        if (err)
            shoal_devc_fail(c, err, SHOAL_SESSION_REASON_DEVICE, "sending ReportChunk: %s", ei.msg);
        else
            (void)shoal_devc_send(c, &env);
        return;
    }
    shoal_devc_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED, c->update_count,
                           NULL);
}

void shoal_devc_send_report(shoal_client *c, int outcome, size_t update_count, const char *detail)
{
    Shoal__TensorInfo ti = SHOAL__TENSOR_INFO__INIT;
    Shoal__Metric m1 = SHOAL__METRIC__INIT, m2 = SHOAL__METRIC__INIT;
    Shoal__Metric *ms[2] = {&m1, &m2};
    Shoal__Report r = SHOAL__REPORT__INIT;
    r.has_session_id = 1;
    r.session_id.data = c->session;
    r.session_id.len = c->session_len;
    r.has_outcome = 1;
    r.outcome = outcome;
    if (outcome == SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED) {
        r.has_example_count = 1;
        r.example_count = c->res.example_count;
        m1.name = "loss";
        m1.has_value = 1;
        m1.value = c->res.loss;
        m2.name = "accuracy";
        m2.has_value = 1;
        m2.value = c->res.accuracy;
        r.n_metrics = 2;
        r.metrics = ms;
        /* Adaptive clipping's bit travels with an uploaded update (with
         * secure aggregation it is masked with the update instead). */
        if (update_count && c->res.unclipped >= 0) {
            r.has_unclipped = 1;
            r.unclipped = c->res.unclipped == 1;
        }
        if (update_count) {
            ti.has_encoding = ti.has_element_count = ti.has_byte_size = 1;
            ti.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
            ti.element_count = update_count;
            ti.byte_size = (uint64_t)update_count * 4;
            r.update = &ti;
        }
    } else if (outcome == SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR && detail) {
        r.error_detail = (char *)detail;
    }
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    env.report = &r;
    if (shoal_devc_send(c, &env) == SHOAL_OK) {
        c->report_queued = 1;
        c->state = ST_AWAIT_ACK;
    }
}

void shoal_devc_take_ack(shoal_client *c, const Shoal__ReportAck *ack)
{
    shoal_devc_set_window(c, ack->retry_window);
    c->res.ack_status = ack->status;
    if (c->pending_outcome == SHOAL_SESSION_TRAINED && c->upload_len)
        shoal_devc_event(c, SHOAL_EVENT_UPLOADED, c->upload_len, shoal_devc_phase_ms(c), 0, 0,
                         NULL);
    shoal_devc_event(c, SHOAL_EVENT_ACKED, 0, 0, 0, ack->status, NULL);
    if (ack->status == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED) {
        c->res.reason = ack->has_reason ? ack->reason : 0;
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_REPORT_REFUSED,
                        "the server refused the report: %s%s%s",
                        shoal_protocol_reason_name(c->res.reason),
                        ack->detail && ack->detail[0] ? ": " : "", ack->detail ? ack->detail : "");
        return;
    }
    shoal_devc_finish(c, c->pending_outcome, c->pending_err, c->pending_reason);
}
