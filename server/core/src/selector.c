/* Selectors: the per-connection half of a session (docs/architecture.md). Each
 * selector actor owns the connections whose id maps to it and does the
 * per-device work in parallel with the others: decoding and validating
 * every message, authenticating check-ins, sending the plan and the model
 * in chunks, reassembling and decoding uploads, refusing malformed or
 * non-finite updates before they reach the coordinator. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/auth.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"
#include "shoal/log.h"
#include "shoal/secagg_wire.h"

#define LOG_COMPONENT "selector"

enum phase {
    PHASE_NEW,        /* waiting for CheckIn */
    PHASE_WAITING,    /* checked in; waiting for the coordinator */
    PHASE_CONFIGURED, /* plan and model sent; waiting for the report */
    PHASE_REPORTED,   /* report forwarded; waiting for the ack */
    PHASE_DONE,       /* answered; closing */
};

typedef struct conn {
    shoal_conn_id id;
    enum phase phase;
    population *pop;
    shoal_session_id session;
    shoal_session_id claimed;                    /* a resume's session, not verified yet */
    char identity[SHOAL_AUTH_DEVICE_ID_MAX + 1]; /* the device id its token names ("" if shared) */
    char address[64]; /* the peer's IP address, for the failed-auth limit */
    uint8_t session_bytes[SESSION_ID_LEN];
    shoal_task_kind task;
    uint64_t round;
    model_blob *model; /* the session's model (a reference), kept for a resume */
    int refused;       /* the upload was refused; its remaining messages are ignored */
    shoal_reassembler *upload;
    upload_scan scan; /* of upload's bytes, as they arrive */
    int gate;         /* its upload's place at srv->uploads (GATE_*) */
    int report_seen;  /* the device's Report arrived (an upload refused mid-way ends with it) */
    int linger;       /* refused mid-upload and acked: closes when the Report arrives */
    uint8_t held[SHOAL_PROTOCOL_ID_MAX];
    size_t held_len;
    int secagg; /* the session's update is summed by its secure-aggregation group */
    sa_plan sa;
    double clip; /* training with DP: the round's clip (configure_msg); 0: none */
} conn;

struct selector {
    shoal_server *srv;
    uint32_t index;
    u64map conns;
};

/* Session ids are random through and through (libsodium's CSPRNG): none
 * tells how many sessions came before it or what the next one will be.
 * 0 is the maps' empty key; a collision with a live session is the
 * coordinator's to catch (on_checkin). */
shoal_session_id shoal_session_id_next(void)
{
    shoal_session_id id = 0;
    while (id == 0)
        randombytes_buf(&id, sizeof id);
    return id;
}

shoal_err shoal_selector_new(shoal_server *srv, uint32_t index, selector **out)
{
    selector *sel = shoal_calloc(1, sizeof *sel);
    if (!sel)
        return SHOAL_ENOMEM;
    sel->srv = srv;
    sel->index = index;
    shoal_u64map_init(&sel->conns);
    *out = sel;
    return SHOAL_OK;
}

static void conn_free(void *p)
{
    conn *c = p;
    if (!c)
        return;
    shoal_model_blob_unref(c->model);
    shoal_reassembler_free(c->upload);
    shoal_free(c);
}

/* The connection starts (or, after a resume, continues) an upload: it
 * passes the gate or waits there with its input paused. */
static void gate_enter(selector *sel, conn *c)
{
    c->gate = shoal_upload_gate_enter(&sel->srv->uploads, c->id);
    if (c->gate == GATE_WAITING) {
        shoal_net_pause_input(sel->srv->net, c->id, 1);
        SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT,
                  "connection %llu: upload waits (limits.max_concurrent_uploads)",
                  (unsigned long long)c->id);
    }
}

/* A plain training session is configured (or resumed): its next message
 * starts its upload. With a limit on uploads, the network layer pauses
 * that message at its first fragment and the gate decides (MSG_CONN_HELD)
 * before the rest is read, so a device waiting for its place holds a few
 * KiB of the server's memory rather than its chunks. Armed before the
 * answer goes out, so the device cannot start first. */
static void hold_upload(selector *sel, conn *c)
{
    if (c->task == SHOAL_TASK_TRAIN && !c->secagg && c->gate == GATE_NONE &&
        sel->srv->cfg->max_concurrent_uploads > 0)
        shoal_net_hold_next(sel->srv->net, c->id);
}

/* The held message of MSG_CONN_HELD: admitted now, it is read on; else it
 * waits at the gate, its input paused, until gate_leave resumes it. */
static void on_held(selector *sel, conn *c)
{
    if (c->gate == GATE_NONE)
        gate_enter(sel, c);
    if (c->gate == GATE_ADMITTED)
        shoal_net_pause_input(sel->srv->net, c->id, 0);
}

/* Its upload is over (reported, refused, or the connection is gone): the
 * place passes to the next waiting connection, whose input resumes. */
static void gate_leave(selector *sel, conn *c)
{
    int was_queued = 0;
    shoal_conn_id next = shoal_upload_gate_leave(&sel->srv->uploads, c->id, c->gate, &was_queued);
    if (was_queued)
        shoal_net_pause_input(sel->srv->net, c->id, 0);
    if (next)
        shoal_net_pause_input(sel->srv->net, next, 0);
    c->gate = GATE_NONE;
}

void shoal_selector_free(selector *sel)
{
    if (!sel)
        return;
    shoal_u64map_fini_with(&sel->conns, conn_free);
    shoal_free(sel);
}

/* ---- sending -------------------------------------------------------------------- */

static Shoal__RetryWindow window(int64_t min_ms, int64_t max_ms)
{
    Shoal__RetryWindow w = SHOAL__RETRY_WINDOW__INIT;
    if (min_ms < 0)
        min_ms = 0;
    if (max_ms < min_ms)
        max_ms = min_ms;
    if ((uint64_t)max_ms > SHOAL_PROTOCOL_RETRY_MAX_MS)
        max_ms = (int64_t)SHOAL_PROTOCOL_RETRY_MAX_MS;
    if (min_ms > max_ms)
        min_ms = max_ms;
    w.has_min_ms = w.has_max_ms = 1;
    w.min_ms = (uint64_t)min_ms;
    w.max_ms = (uint64_t)max_ms;
    return w;
}

static void report_lost(conn *c);

/* Ends the session on this connection: the coordinator learns that the
 * device is gone unless the session already ended there (answered or
 * reported), then the connection closes after what is queued. */
static void finish(selector *sel, conn *c, uint16_t code, const char *why)
{
    report_lost(c);
    c->phase = PHASE_DONE;
    shoal_net_close(sel->srv->net, c->id, code, why);
}

static size_t pop_index(const conn *c)
{
    return c->pop ? c->pop->index : SHOAL_REFUSALS_NO_POPULATION;
}

/* Whether a line about a refusal of `kind` may go to the log now (at most
 * limits.refusal_log_per_minute a minute per kind). */
static int may_log(selector *sel, int kind)
{
    return shoal_refusals_may_log(sel->srv->refusals, kind, shoal_actor_now_ms());
}

/* Sends an Abort and closes. */
static void send_abort(selector *sel, conn *c, int reason, const char *detail, int64_t rmin,
                       int64_t rmax)
{
    Shoal__Abort ab = SHOAL__ABORT__INIT;
    Shoal__RetryWindow w = window(rmin, rmax);
    ab.has_reason = 1;
    ab.reason = reason;
    ab.detail = (char *)detail;
    ab.retry_window = &w;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_ABORT;
    env.abort = &ab;
    shoal_server_send(sel->srv, c->id, &env);
    finish(sel, c, reason == SHOAL__REASON__REASON_SHUTTING_DOWN ? 1001 : 1008,
           shoal_protocol_reason_name(reason));
}

/* Counts the refusal by its reason, sends the Abort and closes. */
static void abort_conn(selector *sel, conn *c, int reason, const char *detail, int64_t rmin,
                       int64_t rmax)
{
    shoal_refusals_count(sel->srv->refusals, pop_index(c), reason);
    send_abort(sel, c, reason, detail, rmin, rmax);
}

static void default_window(const conn *c, int64_t *rmin, int64_t *rmax)
{
    if (c->pop) {
        *rmin = c->pop->cfg->round.retry_min_ms;
        *rmax = c->pop->cfg->round.retry_max_ms;
    } else {
        *rmin = 60 * 1000;
        *rmax = 60 * 60 * 1000;
    }
}

static void abort_default(selector *sel, conn *c, int reason, const char *detail)
{
    int64_t rmin, rmax;
    default_window(c, &rmin, &rmax);
    abort_conn(sel, c, reason, detail, rmin, rmax);
}

static void send_ack_now(selector *sel, conn *c, int status, int reason, const char *detail,
                         int64_t rmin, int64_t rmax, int last)
{
    Shoal__ReportAck ack = SHOAL__REPORT_ACK__INIT;
    Shoal__RetryWindow w = window(rmin, rmax);
    ack.has_session_id = 1;
    ack.session_id.data = c->session_bytes;
    ack.session_id.len = SESSION_ID_LEN;
    ack.has_status = 1;
    ack.status = status;
    if (status == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED)
        shoal_refusals_count(sel->srv->refusals, pop_index(c), reason);
    if (reason) {
        ack.has_reason = 1;
        ack.reason = reason;
    }
    ack.detail = detail && *detail ? (char *)detail : NULL;
    ack.retry_window = &w;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_REPORT_ACK;
    env.report_ack = &ack;
    shoal_server_send(sel->srv, c->id, &env);
    if (last)
        finish(sel, c, 1000, "session over");
}

/* ---- to the coordinator ------------------------------------------------------- */

static shoal_err to_coordinator(conn *c, int type, uint64_t a, uint64_t b, void *payload,
                                void (*free_payload)(void *), int force)
{
    shoal_msg m = {.type = type, .a = a, .b = b, .payload = payload, .free_payload = free_payload};
    if (force)
        return shoal_actor_send_unbounded(c->pop->coord_actor, &m);
    return shoal_actor_send(c->pop->coord_actor, &m);
}

/* The coordinator acts on a loss only for the connection its route names,
 * so a device cannot end another device's session by claiming its id. */
static void report_lost(conn *c)
{
    if (!c->pop || (c->phase != PHASE_WAITING && c->phase != PHASE_CONFIGURED))
        return;
    (void)to_coordinator(c, MSG_CO_LOST, c->session, c->id, NULL, NULL, 1);
    if (c->claimed && c->claimed != c->session)
        (void)to_coordinator(c, MSG_CO_LOST, c->claimed, c->id, NULL, NULL, 1);
}

/* Hands a report (maybe a refusal found here) to the coordinator, which
 * answers with the ack. */
static void forward_report(selector *sel, conn *c, report_msg *rm)
{
    rm->session = c->session;
    rm->conn = c->id;
    rm->shard = sel->index;
    c->phase = PHASE_REPORTED;
    gate_leave(sel, c);
    if (to_coordinator(c, MSG_CO_REPORT, 0, 0, rm, shoal_report_msg_free, 1) != SHOAL_OK) {
        shoal_report_msg_free(rm);
        abort_default(sel, c, SHOAL__REASON__REASON_SHUTTING_DOWN, "the server is shutting down");
    }
}

static void refuse_report(selector *sel, conn *c, int reason)
{
    c->refused = 1;
    report_msg *rm = shoal_calloc(1, sizeof *rm);
    if (!rm) {
        abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
        return;
    }
    rm->refused = reason;
    rm->loss = rm->accuracy = NAN;
    forward_report(sel, c, rm);
}

/* Messages about a device's input may quote it: no control characters
 * reach the log (one line per event). */
static void sanitize(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

/* ---- inbound -------------------------------------------------------------------- */

static void on_check_in(selector *sel, conn *c, const Shoal__CheckIn *ci)
{
    shoal_server *srv = sel->srv;
    population *pop = NULL;
    for (size_t i = 0; i < srv->pop_count; i++)
        if (strcmp(srv->pops[i].cfg->name, ci->population) == 0)
            pop = &srv->pops[i];
    if (!pop) {
        char detail[200];
        snprintf(detail, sizeof detail, "population '%.128s' is not served here", ci->population);
        abort_default(sel, c, SHOAL__REASON__REASON_UNKNOWN_POPULATION, detail);
        return;
    }
    c->pop = pop;
    shoal_refusals *refusals = srv->refusals;
    const int64_t now = shoal_actor_now_ms();
    int64_t wait_ms = 0;
    if (shoal_refusals_barred(refusals, c->address, now, &wait_ms)) {
        /* Too many bad tokens from this address: not even checked, until
         * its minute is over. */
        shoal_refusals_count(refusals, pop->index, SHOAL_REFUSAL_AUTH_RATE_LIMITED);
        if (may_log(sel, SHOAL_REFUSAL_AUTH_RATE_LIMITED))
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "connection %llu from %s: check-in refused: more than %u failed "
                      "authentications from this address within a minute "
                      "(limits.auth_failures_per_minute)",
                      (unsigned long long)c->id, c->address, srv->cfg->auth_failures_per_minute);
        char detail[160];
        snprintf(detail, sizeof detail,
                 "too many failed authentications from your address; retry in %lld s",
                 (long long)((wait_ms + 999) / 1000));
        send_abort(sel, c, SHOAL__REASON__REASON_AUTH_FAILED, detail, wait_ms,
                   wait_ms + pop->cfg->round.retry_min_ms);
        return;
    }
    char device_id[65];
    shoal_errinfo ei = {0};
    if (shoal_auth_check(pop->cfg->auth_mode, pop->cfg->secret, pop->cfg->secret_len,
                         pop->cfg->name, ci->auth_token.data, ci->auth_token.len, device_id,
                         &ei) != SHOAL_OK) {
        shoal_refusals_auth_failed(refusals, c->address, now);
        if (may_log(sel, SHOAL__REASON__REASON_AUTH_FAILED))
            SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                      "connection %llu from %s: check-in refused: %s", (unsigned long long)c->id,
                      c->address, ei.msg);
        abort_default(sel, c, SHOAL__REASON__REASON_AUTH_FAILED,
                      "the auth token is not valid for this population");
        return;
    }
    snprintf(c->identity, sizeof c->identity, "%s", device_id);
    char detail[320];
    const int refusal =
        shoal_session_capabilities_refusal(pop, ci->capabilities, detail, sizeof detail);
    if (refusal) {
        abort_default(sel, c, refusal, detail);
        return;
    }
    if (!atomic_load(&srv->serving)) {
        abort_default(sel, c, SHOAL__REASON__REASON_SHUTTING_DOWN, "the server is shutting down");
        return;
    }
    if (ci->has_held_checkpoint_id && ci->held_checkpoint_id.len <= sizeof c->held) {
        memcpy(c->held, ci->held_checkpoint_id.data, ci->held_checkpoint_id.len);
        c->held_len = ci->held_checkpoint_id.len;
    }
    if (ci->resume && ci->resume->session_id.len == SESSION_ID_LEN &&
        pop->cfg->resume_grace_ms > 0) {
        /* Continue a session whose upload was cut off; the coordinator
         * answers as to a new check-in if it cannot. */
        resume_msg *rm = shoal_calloc(1, sizeof *rm);
        if (!rm) {
            abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
            return;
        }
        const uint8_t *id = ci->resume->session_id.data;
        for (int i = 0; i < 8; i++)
            rm->session |= (uint64_t)id[i] << (8 * i);
        memcpy(rm->session_bytes, id, SESSION_ID_LEN);
        memcpy(rm->identity, c->identity, sizeof rm->identity);
        rm->conn = c->id;
        rm->shard = sel->index;
        rm->fallback = shoal_session_id_next();
        c->session = rm->fallback;
        c->claimed = rm->session;
        if (to_coordinator(c, MSG_CO_RESUME, 0, 0, rm, shoal_resume_msg_free, 0) != SHOAL_OK) {
            shoal_resume_msg_free(rm);
            abort_default(sel, c, SHOAL__REASON__REASON_ROUND_FULL,
                          "the server is busy; retry in the window");
            return;
        }
        c->phase = PHASE_WAITING;
        return;
    }
    c->session = shoal_session_id_next();
    checkin_msg *cm = shoal_malloc(sizeof *cm);
    if (!cm) {
        abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
        return;
    }
    cm->conn = c->id;
    cm->shard = sel->index;
    shoal_err err = to_coordinator(c, MSG_CO_CHECKIN, 0, c->session, cm, NULL, 0);
    if (err != SHOAL_OK) {
        shoal_free(cm);
        /* A full coordinator mailbox is backpressure: come back later. */
        abort_default(sel, c, SHOAL__REASON__REASON_ROUND_FULL,
                      "the server is busy; retry in the window");
        return;
    }
    c->phase = PHASE_WAITING;
}

static void on_report_chunk(selector *sel, conn *c, const Shoal__ReportChunk *rc)
{
    if (rc->session_id.len != SESSION_ID_LEN ||
        memcmp(rc->session_id.data, c->session_bytes, SESSION_ID_LEN) != 0) {
        abort_default(sel, c, SHOAL__REASON__REASON_NOT_SELECTED,
                      "ReportChunk.session_id is not this connection's session");
        return;
    }
    if (c->task != SHOAL_TASK_TRAIN) {
        refuse_report(sel, c, SHOAL__REASON__REASON_MALFORMED);
        return;
    }
    if (!c->upload) {
        uint64_t max_chunk = shoal_chunk_max_payload(sel->srv->cfg->max_message_bytes);
        shoal_reassembly_limits lim = {.max_total = (uint64_t)c->pop->param_count * 4,
                                       .max_chunk = max_chunk ? max_chunk : 1,
                                       .max_chunks = sel->srv->cfg->max_chunks};
        if (shoal_reassembler_new("ReportChunk", &lim, &c->upload) != SHOAL_OK) {
            abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
            return;
        }
        memset(&c->scan, 0, sizeof c->scan);
        shoal_tensor_scan_init(&c->scan.scan, SHOAL_SERVER_MAX_UPDATE_ABS);
    }
    if (c->gate == GATE_NONE)
        gate_enter(sel, c);
    shoal_chunk chunk = shoal_chunk_from_report(rc);
    shoal_errinfo ei = {0};
    shoal_err err = shoal_reassembler_add(c->upload, &chunk, &ei);
    if (err == SHOAL_OK || err == SHOAL_DONE) {
        shoal_upload_scan_received(c->upload, &c->scan);
    } else {
        if (may_log(sel, SHOAL__REASON__REASON_BAD_CHUNK))
            SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT, "connection %llu: %s",
                      (unsigned long long)c->id, ei.msg);
        refuse_report(sel, c,
                      err == SHOAL_ELIMIT && chunk.total > (uint64_t)c->pop->param_count * 4
                          ? SHOAL__REASON__REASON_SHAPE_MISMATCH
                          : SHOAL__REASON__REASON_BAD_CHUNK);
    }
}

static double metric(const Shoal__Report *r, const char *name)
{
    for (size_t i = 0; i < r->n_metrics; i++)
        if (strcmp(r->metrics[i]->name, name) == 0)
            return r->metrics[i]->value;
    return NAN;
}

static void on_report(selector *sel, conn *c, const Shoal__Report *r)
{
    c->report_seen = 1;
    if (r->session_id.len != SESSION_ID_LEN ||
        memcmp(r->session_id.data, c->session_bytes, SESSION_ID_LEN) != 0) {
        abort_default(sel, c, SHOAL__REASON__REASON_NOT_SELECTED,
                      "Report.session_id is not this connection's session");
        return;
    }
    report_msg *rm = shoal_calloc(1, sizeof *rm);
    if (!rm) {
        abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
        return;
    }
    rm->outcome = r->outcome;
    rm->example_count = r->example_count;
    rm->scale = 1.0f;
    rm->unclipped = -1;
    /* One device must not outweigh a round: its example count is capped by
     * the plan's limits.max_examples (which the device was sent), and its
     * update's elements by SHOAL_SERVER_MAX_UPDATE_ABS so that a finite but
     * huge update cannot overflow the round's sum. */
    if (r->outcome == SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED &&
        r->example_count > c->pop->limits.max_examples) {
        rm->refused = SHOAL__REASON__REASON_MALFORMED;
        snprintf(rm->detail, sizeof rm->detail,
                 "Report.example_count %llu is above Plan.limits.max_examples %u; claim at "
                 "most the plan's limit",
                 (unsigned long long)r->example_count, (unsigned)c->pop->limits.max_examples);
        shoal_reassembler_free(c->upload);
        c->upload = NULL;
        forward_report(sel, c, rm);
        return;
    }
    rm->loss = metric(r, "loss");
    rm->accuracy = metric(r, "accuracy");
    if (r->outcome != SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED) {
        forward_report(sel, c, rm);
        return;
    }
    if (c->task == SHOAL_TASK_EVAL) {
        if (r->update || !isfinite(rm->loss) || !isfinite(rm->accuracy) || rm->accuracy < 0 ||
            rm->accuracy > 1)
            rm->refused = SHOAL__REASON__REASON_MALFORMED;
        forward_report(sel, c, rm);
        return;
    }
    /* A completed training report: the update must be whole and match the
     * plan's shape, and every element finite (scan_received). */
    size_t count = c->pop->param_count;
    size_t len = 0;
    const uint8_t *bytes = c->upload ? shoal_reassembler_bytes(c->upload, &len) : NULL;
    if (!r->update || r->update->encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE) {
        rm->refused = r->update ? SHOAL__REASON__REASON_UNSUPPORTED_ENCODING
                                : SHOAL__REASON__REASON_MALFORMED;
    } else if (r->update->element_count != count) {
        rm->refused = SHOAL__REASON__REASON_SHAPE_MISMATCH;
    } else if (!bytes || len != r->update->byte_size) {
        rm->refused = SHOAL__REASON__REASON_BAD_CHUNK;
    } else if (c->scan.reason) {
        rm->refused = c->scan.reason;
        memcpy(rm->detail, c->scan.detail, sizeof rm->detail);
    } else if (c->pop->cfg->dp.adaptive.enabled && !r->has_unclipped) {
        rm->refused = SHOAL__REASON__REASON_MALFORMED;
        snprintf(rm->detail, sizeof rm->detail,
                 "Report.unclipped: missing; the plan asked for it (Plan.report_unclipped)");
    } else {
        /* Decided on the scan the chunks left (it covered all `count`
         * elements: the codec checked byte_size == 4 x element_count); the
         * bytes themselves go on to be folded (shoal_tensor_fold_f32le),
         * never decoded. */
        rm->refused =
            shoal_upload_hold_to_norm(c->pop, c->clip, shoal_tensor_scan_norm(&c->scan.scan), rm);
        if (!rm->refused)
            rm->update = shoal_reassembler_take(c->upload, NULL);
        if (!rm->refused && r->has_unclipped)
            rm->unclipped = r->unclipped ? 1 : 0;
    }
    if (!rm->refused && !(isnan(rm->loss) || isfinite(rm->loss)))
        rm->refused = SHOAL__REASON__REASON_NON_FINITE;
    shoal_reassembler_free(c->upload);
    c->upload = NULL;
    forward_report(sel, c, rm);
}

/* A secure-aggregation message of a configured secure session goes to its
 * group (through the coordinator, which knows the group); 1 when sent. */
static int to_group(selector *sel, conn *c, shoal_envelope *env)
{
    /* Every device message of the secure phases leads with session_id. */
    const ProtobufCBinaryData *id = &env->secagg_advertise->session_id;
    if (!c->secagg || c->phase != PHASE_CONFIGURED) {
        abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                      "a secure aggregation message outside a secure-aggregation session");
        return 0;
    }
    if (id->len != SESSION_ID_LEN || memcmp(id->data, c->session_bytes, SESSION_ID_LEN) != 0) {
        abort_default(sel, c, SHOAL__REASON__REASON_NOT_SELECTED,
                      "session_id is not this connection's session");
        return 0;
    }
    sa_input_msg *in = shoal_calloc(1, sizeof *in);
    if (!in) {
        abort_default(sel, c, SHOAL__REASON__REASON_INTERNAL, "server out of memory");
        return 0;
    }
    in->session = c->session;
    in->conn = c->id;
    in->env = env;
    if (to_coordinator(c, MSG_CO_SA_DEVICE, 0, 0, in, shoal_sa_input_msg_free, 1) != SHOAL_OK) {
        shoal_free(in);
        abort_default(sel, c, SHOAL__REASON__REASON_SHUTTING_DOWN, "the server is shutting down");
        return 0;
    }
    return 1;
}

static void on_data(selector *sel, conn *c, const uint8_t *bytes, size_t len)
{
    shoal_server *srv = sel->srv;
    if (c->phase == PHASE_DONE)
        return;
    shoal_envelope *env = NULL;
    shoal_errinfo ei = {0};
    shoal_err err = shoal_envelope_decode(&srv->device_codec, bytes, len, &env, &ei);
    if (err) {
        uint32_t version;
        if (c->phase == PHASE_NEW && shoal_envelope_unsupported_version(
                                         &srv->device_codec, bytes, len, &version) == SHOAL_OK) {
            uint8_t *out = NULL;
            size_t out_len = 0;
            if (shoal_envelope_encode_version_abort(&srv->server_codec, version, 60 * 60 * 1000,
                                                    24 * 60 * 60 * 1000, &out, &out_len,
                                                    &ei) == SHOAL_OK &&
                shoal_net_send(srv->net, c->id, out, out_len) != SHOAL_OK)
                shoal_free(out);
            finish(sel, c, 1008, "protocol version not supported");
            return;
        }
        sanitize(ei.msg);
        const int reason = err == SHOAL_ELIMIT ? SHOAL__REASON__REASON_MESSAGE_TOO_LARGE
                                               : SHOAL__REASON__REASON_MALFORMED;
        if (may_log(sel, reason))
            SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT, "connection %llu: refused message: %s",
                      (unsigned long long)c->id, ei.msg);
        char detail[SHOAL_PROTOCOL_DETAIL_MAX];
        snprintf(detail, sizeof detail, "%s", ei.msg);
        abort_default(sel, c, reason, detail);
        return;
    }

    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_CHECK_IN:
        if (c->phase != PHASE_NEW) {
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "CheckIn sent twice on one connection");
        } else {
            on_check_in(sel, c, env->check_in);
        }
        break;
    case SHOAL__ENVELOPE__BODY_REPORT_CHUNK:
        if (c->secagg) {
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "this session aggregates securely: its update travels as "
                          "SecAggMaskedInput, never as ReportChunk");
        } else if (c->phase == PHASE_CONFIGURED) {
            on_report_chunk(sel, c, env->report_chunk);
        } else if (c->phase == PHASE_REPORTED && c->refused) {
            /* The rest of an upload already refused: its ack is on the way. */
        } else {
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "ReportChunk before the session was configured");
        }
        break;
    case SHOAL__ENVELOPE__BODY_REPORT:
        if (c->secagg) {
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "this session aggregates securely: its SecAggUnmask is its report");
        } else if (c->phase == PHASE_CONFIGURED) {
            on_report(sel, c, env->report);
        } else if (c->phase == PHASE_REPORTED && c->refused) {
            /* The Report closing an upload already refused: once its ack
             * is out, the session can close without cutting the device
             * off in the middle of what it sends. */
            c->report_seen = 1;
            if (c->linger)
                finish(sel, c, 1000, "session over");
        } else if (c->phase == PHASE_REPORTED) {
            /* Refused at once; the first report's ack still follows and
             * ends the session. */
            int64_t rmin, rmax;
            default_window(c, &rmin, &rmax);
            send_ack_now(sel, c, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED,
                         SHOAL__REASON__REASON_DUPLICATE, "this session already reported", rmin,
                         rmax, 0);
        } else {
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "Report before the session was configured");
        }
        break;
    case SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE:
    case SHOAL__ENVELOPE__BODY_SECAGG_SHARES:
    case SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT:
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK:
        if (to_group(sel, c, env))
            env = NULL; /* on its way to the group */
        break;
    case SHOAL__ENVELOPE__BODY_ABORT:
        /* The device ends the session (e.g. it became ineligible). */
        finish(sel, c, 1000, "aborted by device");
        break;
    default:
        abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED, "unexpected message from a device");
        break;
    }
    shoal_envelope_free(env);
}

/* ---- answers from the coordinator --------------------------------------------- */

/* Sends Accepted for the connection's session (its plan, model and
 * retry window), then the model unless the device holds it. resume_offset
 * >= 0 answers a resume. */
static void send_accepted(selector *sel, conn *c, int64_t rmin, int64_t rmax, int64_t resume_offset)
{
    shoal_server *srv = sel->srv;
    population *pop = c->pop;
    model_blob *model = c->model;

    Shoal__CheckInResult__Accepted acc = SHOAL__CHECK_IN_RESULT__ACCEPTED__INIT;
    Shoal__RetryWindow w = window(rmin, rmax);
    acc.has_session_id = 1;
    acc.session_id.data = c->session_bytes;
    acc.session_id.len = SESSION_ID_LEN;
    acc.has_round = 1;
    acc.round = c->round;
    acc.has_task_kind = 1;
    acc.task_kind = c->task == SHOAL_TASK_TRAIN ? SHOAL__TASK_KIND__TASK_KIND_TRAIN
                                                : SHOAL__TASK_KIND__TASK_KIND_EVALUATE;
    acc.plan = c->task == SHOAL_TASK_TRAIN ? &pop->train_plan : &pop->eval_plan;
    Shoal__Plan plan;
    session_plan_storage storage;
    if (c->task == SHOAL_TASK_TRAIN && (c->secagg || c->clip > 0)) {
        /* The population's plan, with the round's clip and this device's
         * group. */
        shoal_session_train_plan(pop, c->clip, c->secagg ? &c->sa : NULL, &plan, &storage);
        acc.plan = &plan;
    }
    acc.has_model_size = 1;
    acc.model_size = model->len;
    acc.has_checkpoint_id = 1;
    acc.checkpoint_id.data = model->checkpoint_id;
    acc.checkpoint_id.len = CHECKPOINT_ID_LEN;
    acc.retry_window = &w;
    /* Its limit on what the device sends, so that a device built for the
     * 1 MiB default does not meet close 1009 here. */
    acc.has_max_message_bytes = 1;
    acc.max_message_bytes = srv->cfg->max_message_bytes;
    if (resume_offset >= 0) {
        acc.has_upload_resume_offset = 1;
        acc.upload_resume_offset = (uint64_t)resume_offset;
    }
    Shoal__CheckInResult res = SHOAL__CHECK_IN_RESULT__INIT;
    res.result_case = SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED;
    res.accepted = &acc;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT;
    env.check_in_result = &res;
    shoal_server_send(srv, c->id, &env);

    if (shoal_model_download_needed(&acc, c->held, c->held_len)) {
        /* The chunks were encoded once for this model version; every
         * download queues references to them. */
        for (size_t k = 0; k < model->chunk_count; k++) {
            shoal_err err =
                shoal_net_send_shared(srv->net, c->id, model->chunks[k], model->chunk_lens[k],
                                      shoal_model_blob_release, shoal_model_blob_ref(model));
            if (err) {
                shoal_model_blob_unref(model);
                if (err == SHOAL_ELIMIT)
                    shoal_net_close(srv->net, c->id, 1013, "outbox full");
                break;
            }
        }
    }
    c->phase = PHASE_CONFIGURED;
}

static void on_configure(selector *sel, conn *c, configure_msg *cm)
{
    c->claimed = 0;
    c->session = cm->session;
    c->task = cm->task;
    c->round = cm->round;
    c->secagg = cm->secagg;
    c->sa = cm->sa;
    c->clip = cm->clip;
    memcpy(c->session_bytes, cm->session_bytes, SESSION_ID_LEN);
    shoal_model_blob_unref(c->model);
    c->model = cm->model; /* the message's reference moves to the connection */
    cm->model = NULL;
    hold_upload(sel, c);
    send_accepted(sel, c, cm->retry_min_ms, cm->retry_max_ms, -1);
    if (c->phase == PHASE_CONFIGURED)
        (void)to_coordinator(c, MSG_CO_DELIVERED, c->session, 0, NULL, NULL, 1);
}

static void on_resumed(selector *sel, conn *c, resume_msg *rm)
{
    c->claimed = 0;
    c->session = rm->session;
    c->task = rm->task;
    c->round = rm->round;
    c->clip = rm->clip;
    memcpy(c->session_bytes, rm->session_bytes, SESSION_ID_LEN);
    shoal_model_blob_unref(c->model);
    c->model = rm->model;
    rm->model = NULL;
    shoal_reassembler_free(c->upload);
    c->upload = rm->upload;
    c->scan = rm->scan;
    rm->upload = NULL;
    int64_t offset = c->upload ? (int64_t)shoal_reassembler_acked(c->upload) : 0;
    SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT, "connection %llu: session resumed at byte %lld",
              (unsigned long long)c->id, (long long)offset);
    hold_upload(sel, c);
    send_accepted(sel, c, rm->retry_min_ms, rm->retry_max_ms, offset);
}

/* The connection dropped while its device was uploading (or training):
 * hand the partial upload to the coordinator so the device can resume. */
static void detach(conn *c)
{
    resume_msg *rm = shoal_calloc(1, sizeof *rm);
    if (!rm) {
        report_lost(c);
        return;
    }
    rm->session = c->session;
    rm->conn = c->id;
    memcpy(rm->session_bytes, c->session_bytes, SESSION_ID_LEN);
    memcpy(rm->identity, c->identity, sizeof rm->identity);
    rm->task = c->task;
    rm->round = c->round;
    rm->clip = c->clip;
    rm->upload = c->upload;
    rm->scan = c->scan;
    c->upload = NULL;
    rm->model = c->model;
    c->model = NULL;
    if (to_coordinator(c, MSG_CO_DETACH, 0, 0, rm, shoal_resume_msg_free, 1) != SHOAL_OK) {
        shoal_resume_msg_free(rm);
        report_lost(c);
    }
}

static void on_reject(selector *sel, conn *c, const reject_msg *rm)
{
    Shoal__CheckInResult__Rejected rej = SHOAL__CHECK_IN_RESULT__REJECTED__INIT;
    Shoal__RetryWindow w = window(rm->retry_min_ms, rm->retry_max_ms);
    rej.retry_window = &w;
    rej.has_reason = 1;
    rej.reason = rm->reason;
    rej.detail = rm->detail[0] ? (char *)rm->detail : NULL;
    Shoal__CheckInResult res = SHOAL__CHECK_IN_RESULT__INIT;
    res.result_case = SHOAL__CHECK_IN_RESULT__RESULT_REJECTED;
    res.rejected = &rej;
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT;
    env.check_in_result = &res;
    shoal_server_send(sel->srv, c->id, &env);
    finish(sel, c, 1000, "rejected");
}

void shoal_selector_handle(shoal_actor *self, void *state, shoal_msg *msg)
{
    selector *sel = state;
    shoal_conn_id id = msg->a;
    conn *c = shoal_u64map_get(&sel->conns, id);
    switch (msg->type) {
    case MSG_CONN_OPEN:
        if (!c) {
            c = shoal_calloc(1, sizeof *c);
            if (!c || shoal_u64map_put(&sel->conns, id, c) != SHOAL_OK) {
                shoal_free(c);
                shoal_net_close(sel->srv->net, id, 1011, "server out of memory");
                return;
            }
            c->id = id;
            c->phase = PHASE_NEW;
            if (msg->payload)
                snprintf(c->address, sizeof c->address, "%s", (const char *)msg->payload);
            /* A connection that never checks in must not hold a slot until
             * the idle limit: it has the handshake timeout to do so. */
            shoal_msg t = {.type = MSG_SEL_CHECKIN_TIMEOUT, .a = id};
            if (shoal_actor_send_after(self, sel->srv->cfg->handshake_timeout_ms, &t, NULL) !=
                SHOAL_OK)
                SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT, "no check-in timer for %llu",
                          (unsigned long long)id);
        }
        return;
    case MSG_SEL_CHECKIN_TIMEOUT:
        if (c && c->phase == PHASE_NEW)
            abort_default(sel, c, SHOAL__REASON__REASON_MALFORMED,
                          "no CheckIn within the handshake timeout");
        return;
    case MSG_CONN_DATA:
        if (c)
            on_data(sel, c, msg->payload, msg->len);
        return;
    case MSG_CONN_HELD:
        if (c)
            on_held(sel, c);
        return;
    case MSG_CONN_CLOSED:
        if (c) {
            shoal_u64map_take(&sel->conns, id);
            gate_leave(sel, c);
            if (c->phase == PHASE_CONFIGURED && c->task == SHOAL_TASK_TRAIN && !c->refused &&
                !c->secagg && c->pop->cfg->resume_grace_ms > 0)
                detach(c);
            else
                report_lost(c);
            conn_free(c);
        }
        return;
    case MSG_SEL_CONFIGURE: {
        configure_msg *cm = msg->payload;
        /* A device that left before its configuration was already
         * reported lost when its connection closed. (A failed resume is
         * configured as a new session, hence no session check.) */
        if (!c || c->phase != PHASE_WAITING)
            return;
        on_configure(sel, c, cm);
        return;
    }
    case MSG_SEL_RESUMED:
        /* If the new connection went away too, its close already told the
         * coordinator the session is lost; the payload is freed. */
        if (c && c->phase == PHASE_WAITING)
            on_resumed(sel, c, msg->payload);
        return;
    case MSG_SEL_REJECT:
        if (c && c->phase == PHASE_WAITING)
            on_reject(sel, c, msg->payload);
        return;
    case MSG_SEL_ACK:
        if (c && (c->phase == PHASE_REPORTED || (c->phase == PHASE_CONFIGURED && c->secagg))) {
            const ack_msg *a = msg->payload;
            /* An upload refused before its Report: the device is still
             * sending. Closing now would reset the connection under it
             * and could take the ack with it, so the session lingers,
             * dropping what comes, until the Report (or the idle
             * timeout). */
            c->linger = c->refused && !c->report_seen && !c->secagg;
            send_ack_now(sel, c, a->status, a->reason, a->detail, a->retry_min_ms, a->retry_max_ms,
                         !c->linger);
        }
        return;
    case MSG_SEL_ABORT:
        if (c && c->phase != PHASE_DONE) {
            const reject_msg *r = msg->payload;
            abort_conn(sel, c, r->reason, r->detail, r->retry_min_ms, r->retry_max_ms);
        }
        return;
    default:
        return;
    }
}

void shoal_report_msg_free(void *p)
{
    report_msg *rm = p;
    if (!rm)
        return;
    shoal_free(rm->update);
    shoal_free(rm);
}

void shoal_resume_msg_free(void *p)
{
    resume_msg *rm = p;
    if (!rm)
        return;
    shoal_reassembler_free(rm->upload);
    shoal_model_blob_unref(rm->model);
    shoal_free(rm);
}

void shoal_configure_msg_free(void *p)
{
    configure_msg *cm = p;
    if (!cm)
        return;
    shoal_model_blob_unref(cm->model);
    shoal_free(cm);
}

/* Session ids on the wire: the engine's id (random itself, and how the
 * coordinator finds the session) followed by 8 more random bytes that only
 * the device learns (so nobody can guess another device's). */
void shoal_session_bytes_fill(uint8_t out[SESSION_ID_LEN], shoal_session_id session)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(session >> (8 * i));
    randombytes_buf(out + 8, SESSION_ID_LEN - 8);
}
