/* The device client: one session as a non-blocking state machine
 * (shoal_client_step), with shoal_client_run as a loop over it. The
 * protocol is docs/protocol.md. This file holds the client's lifetime and
 * drives the session from state to state; the other client_*.c files
 * hold one stage each (client_int.h), and the local work (work.c,
 * trainer.c) returns its result to client_upload.c. */
#include "client_int.h"

#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"

#define DEFAULT_IO_TIMEOUT_MS  30000
#define DEFAULT_RETRY_MIN_MS   (15u * 60u * 1000u)
#define DEFAULT_RETRY_MAX_MS   (30u * 60u * 1000u)
#define DEFAULT_POLL_MS        1000
#define DEFAULT_LOG_MAX_AGE_MS (30ull * 24 * 3600 * 1000)
#define DEFAULT_LOG_MAX_ROWS   10000u

static char *dup_bytes(const void *p, size_t n, shoal_err *err)
{
    char *d = shoal_malloc(n + 1);
    if (!d) {
        *err = SHOAL_ENOMEM;
        return NULL;
    }
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

shoal_err shoal_port_check(const shoal_port *port, shoal_errinfo *ei)
{
    if (!port)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "port is NULL");
    const char *missing = !port->monotonic_ms ? "monotonic_ms"
                          : !port->wall_ms    ? "wall_ms"
                          : !port->random     ? "random"
                          : !port->connect    ? "connect"
                          : !port->send       ? "send"
                          : !port->recv       ? "recv"
                          : !port->close      ? "close"
                                              : NULL;
    if (missing)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "port: required member %s is NULL; fill it in (see shoal/port.h)",
                                 missing);
    return SHOAL_OK;
}

shoal_err shoal_client_new(const shoal_client_config *cfg, const shoal_port *port,
                           shoal_client **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_client_new: out is NULL");
    *out = NULL;
    if (!cfg)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_client_new: config is NULL");
    shoal_err err = shoal_port_check(port, ei);
    if (err)
        return err;
    const char *missing = !cfg->host || !cfg->host[0]               ? "host"
                          : !cfg->port                              ? "port"
                          : !cfg->ca_pem                            ? "ca_pem"
                          : !cfg->population || !cfg->population[0] ? "population"
                          : !cfg->auth_token                        ? "auth_token"
                          : !cfg->store_path || !cfg->store_path[0] ? "store_path"
                                                                    : NULL;
    if (missing)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "client config: %s is required", missing);
    size_t token_len =
        cfg->auth_token_len ? cfg->auth_token_len : strlen((const char *)cfg->auth_token);
    if (token_len == 0 || token_len > SHOAL_PROTOCOL_TOKEN_MAX)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: auth_token must be 1 to %u bytes, not %zu",
                                 SHOAL_PROTOCOL_TOKEN_MAX, token_len);
    if (strlen(cfg->population) > SHOAL_PROTOCOL_NAME_MAX)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: population must be at most %u bytes",
                                 SHOAL_PROTOCOL_NAME_MAX);
    const shoal_eligibility *pol = &cfg->policy;
    if (pol->min_battery_percent < 0 || pol->min_battery_percent > 100)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: policy.min_battery_percent %d is out of range; "
                                 "must be 0 (none) to 100",
                                 pol->min_battery_percent);
    if (cfg->io_timeout_ms < 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "client config: io_timeout_ms is negative");
    if (cfg->fallback_retry_min_ms > cfg->fallback_retry_max_ms)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: fallback_retry_min_ms exceeds "
                                 "fallback_retry_max_ms");
    if (cfg->store_key && cfg->store_key_len == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: store_key given without store_key_len");
    if ((!cfg->state_path || !cfg->state_path[0]) &&
        (cfg->budget_bytes_down_per_day || cfg->budget_bytes_up_per_day ||
         cfg->min_contribution_period_ms))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: the daily byte budgets and "
                                 "min_contribution_period_ms are kept in the device state: set "
                                 "state_path too");
    if (cfg->max_message_bytes && (cfg->max_message_bytes < SHOAL_PROTOCOL_MAX_MESSAGE_MIN ||
                                   cfg->max_message_bytes > SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: max_message_bytes %zu is out of range; must be 0 "
                                 "(default) or %u to %u",
                                 cfg->max_message_bytes, SHOAL_PROTOCOL_MAX_MESSAGE_MIN,
                                 (unsigned)SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT);
    if (cfg->state_path && cfg->store_path && strcmp(cfg->state_path, cfg->store_path) == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "client config: state_path must be a file of its own, not the "
                                 "example store");

    shoal_client *c = shoal_calloc(1, sizeof *c);
    if (!c)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "shoal_client_new: out of memory");
    c->port = port;
    c->cfg = *cfg;
    size_t ca_len = cfg->ca_pem_len ? cfg->ca_pem_len : strlen(cfg->ca_pem);
    const char *name = cfg->server_name ? cfg->server_name : cfg->host;
    const char *path = cfg->path ? cfg->path : SHOAL_PROTOCOL_WS_PATH;
    err = SHOAL_OK;
    c->host = dup_bytes(cfg->host, strlen(cfg->host), &err);
    c->server_name = dup_bytes(name, strlen(name), &err);
    c->path = dup_bytes(path, strlen(path), &err);
    c->ca_pem = dup_bytes(cfg->ca_pem, ca_len, &err);
    c->population = dup_bytes(cfg->population, strlen(cfg->population), &err);
    c->token = (uint8_t *)dup_bytes(cfg->auth_token, token_len, &err);
    c->store_path = dup_bytes(cfg->store_path, strlen(cfg->store_path), &err);
    if (cfg->store_key)
        c->store_key = (uint8_t *)dup_bytes(cfg->store_key, cfg->store_key_len, &err);
    if (cfg->state_path && cfg->state_path[0])
        c->state_path = dup_bytes(cfg->state_path, strlen(cfg->state_path), &err);
    char peer[300];
    snprintf(peer, sizeof peer, "%s:%u", cfg->host, (unsigned)cfg->port);
    c->peer = dup_bytes(peer, strlen(peer), &err);
    if (err) {
        shoal_client_free(c);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "shoal_client_new: out of memory");
    }
    c->cfg.host = c->host;
    c->cfg.server_name = c->server_name;
    c->cfg.path = c->path;
    c->cfg.ca_pem = c->ca_pem;
    c->cfg.ca_pem_len = ca_len;
    c->cfg.population = c->population;
    c->cfg.auth_token = c->token;
    c->cfg.auth_token_len = token_len;
    c->cfg.store_path = c->store_path;
    c->cfg.store_key = c->store_key;
    c->cfg.state_path = c->state_path;
    if (!c->cfg.log_max_age_ms)
        c->cfg.log_max_age_ms = DEFAULT_LOG_MAX_AGE_MS;
    if (!c->cfg.log_max_rows)
        c->cfg.log_max_rows = DEFAULT_LOG_MAX_ROWS;
    if (c->state_path) {
        c->db.max_age_ms = shoal_devc_clamp_ms(c->cfg.log_max_age_ms);
        c->db.max_rows = shoal_devc_clamp_ms(c->cfg.log_max_rows);
        err = shoal_devc_db_open(&c->db, c->state_path, port->wall_ms(port->ctx), ei);
        if (err) {
            shoal_client_free(c);
            return err;
        }
    }
    if (!c->cfg.io_timeout_ms)
        c->cfg.io_timeout_ms = DEFAULT_IO_TIMEOUT_MS;
    if (!c->cfg.fallback_retry_max_ms) {
        c->cfg.fallback_retry_min_ms = DEFAULT_RETRY_MIN_MS;
        c->cfg.fallback_retry_max_ms = DEFAULT_RETRY_MAX_MS;
    }
    if (!c->cfg.policy.poll_interval_ms)
        c->cfg.policy.poll_interval_ms = DEFAULT_POLL_MS;
    c->codec_out = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    c->codec_in = shoal_codec_defaults(SHOAL_PEER_SERVER);
    if (c->cfg.max_message_bytes)
        c->codec_out.max_message_bytes = c->cfg.max_message_bytes;
    c->state = ST_IDLE;
    shoal_devc_saved_restore(c);
    shoal_devc_tls_restore(c);
    *out = c;
    return SHOAL_OK;
}

static void wipe_free(void *p, size_t n)
{
    if (p) {
        volatile uint8_t *v = p;
        for (size_t i = 0; i < n; i++)
            v[i] = 0;
        shoal_free(p);
    }
}

void shoal_client_free(shoal_client *c)
{
    if (!c)
        return;
    shoal_devc_session_reset(c);
    shoal_devc_saved_forget(c); /* the device state keeps it for the next client */
    shoal_devc_tls_forget(c);   /* likewise */
    shoal_free(c->peer);
    shoal_free(c->model);
    shoal_free(c->update);
    shoal_free(c->host);
    shoal_free(c->server_name);
    shoal_free(c->path);
    shoal_free(c->ca_pem);
    shoal_free(c->population);
    wipe_free(c->token, c->cfg.auth_token_len);
    shoal_free(c->store_path);
    wipe_free(c->store_key, c->cfg.store_key_len);
    shoal_devc_db_close(&c->db);
    shoal_free(c->state_path);
    shoal_free(c);
}

/* A refusal waiting will not cure (token, population, version) gets its
 * own error and reason, as when it comes in CheckInResult.Rejected. */
static void take_abort(shoal_client *c, const Shoal__Abort *ab)
{
    shoal_devc_set_window(c, ab->retry_window);
    c->res.reason = ab->reason;
    shoal_err err = SHOAL_ECLOSED;
    shoal_session_reason reason = SHOAL_SESSION_REASON_ABORTED;
    if (ab->reason == SHOAL__REASON__REASON_AUTH_FAILED) {
        err = SHOAL_EAUTH;
        reason = SHOAL_SESSION_REASON_AUTH_FAILED;
    } else if (ab->reason == SHOAL__REASON__REASON_UNKNOWN_POPULATION) {
        err = SHOAL_ENOTFOUND;
        reason = SHOAL_SESSION_REASON_UNKNOWN_POPULATION;
    } else if (ab->reason == SHOAL__REASON__REASON_VERSION_UNSUPPORTED) {
        err = SHOAL_EPROTO;
        reason = SHOAL_SESSION_REASON_VERSION_UNSUPPORTED;
    }
    shoal_devc_fail(c, err, reason, "%s:%u: the server aborted the session: %s%s%s", c->host,
                    (unsigned)c->cfg.port, shoal_protocol_reason_name(ab->reason),
                    ab->detail && ab->detail[0] ? ": " : "", ab->detail ? ab->detail : "");
}

void shoal_devc_take_message(shoal_client *c, const uint8_t *data, size_t len)
{
    shoal_envelope *env = NULL;
    shoal_errinfo ei;
    shoal_err err = shoal_envelope_decode(&c->codec_in, data, len, &env, &ei);
    if (err) {
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_PROTOCOL,
                        "%s:%u: a message from the server was refused: %s", c->host,
                        (unsigned)c->cfg.port, ei.msg);
        return;
    }
    int body = env->body_case;
    if (body == SHOAL__ENVELOPE__BODY_ABORT) {
        take_abort(c, env->abort);
    } else if (c->state == ST_AWAIT_RESULT && body == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT) {
        shoal_devc_take_result(c, env);
        return; /* it owns env */
    } else if (c->state == ST_DOWNLOAD && body == SHOAL__ENVELOPE__BODY_MODEL_CHUNK) {
        shoal_devc_take_model_chunk(c, env->model_chunk);
    } else if (c->state == ST_SECAGG && (body == SHOAL__ENVELOPE__BODY_SECAGG_KEYS ||
                                         body == SHOAL__ENVELOPE__BODY_SECAGG_INBOX ||
                                         body == SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST)) {
        shoal_devc_secagg_take(c, env);
    } else if (c->report_queued && body == SHOAL__ENVELOPE__BODY_REPORT_ACK) {
        shoal_devc_take_ack(c, env->report_ack);
    } else {
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "unexpected %s from the server in this state",
                        shoal_envelope_body_name(env));
    }
    shoal_envelope_free(env);
}

static void start_session(shoal_client *c)
{
    memset(&c->res, 0, sizeof c->res);
    c->res.unclipped = -1;
    shoal_free(c->update);
    c->update = NULL;
    c->update_count = 0;
    c->pending_outcome = SHOAL_SESSION_ERROR;
    c->pending_err = SHOAL_OK;
    c->pending_reason = SHOAL_SESSION_REASON_NONE;
    if (shoal_devc_held(c))
        return;
    char why[128];
    if (!shoal_devc_eligible(c, why, sizeof why)) {
        snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "ineligible: %s", why);
        shoal_devc_finish(c, SHOAL_SESSION_INELIGIBLE, SHOAL_OK, SHOAL_SESSION_REASON_INELIGIBLE);
        return;
    }
    shoal_devc_connect(c);
}

shoal_err shoal_client_step(shoal_client *c, int64_t now_ms, shoal_session_result *out)
{
    if (!c || !out)
        return SHOAL_EINVAL;
    if (c->state == ST_IDLE) {
        c->session_start_ms = now_ms;
        c->session_deadline_ms =
            c->cfg.budget_session_ms ? now_ms + shoal_devc_clamp_ms(c->cfg.budget_session_ms) : 0;
        start_session(c);
        c->deadline_ms = now_ms + c->cfg.io_timeout_ms;
    }
    for (;;) {
        if (c->session_deadline_ms && now_ms >= c->session_deadline_ms &&
            (c->state == ST_CONNECTING || c->state == ST_AWAIT_RESULT || c->state == ST_DOWNLOAD)) {
            /* Nothing trained yet: the server counts the device dropped. */
            snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg,
                     "the session's time budget (budget_session_ms %llu) ran out during %s",
                     (unsigned long long)c->cfg.budget_session_ms, shoal_devc_state_name(c->state));
            shoal_devc_event(c, SHOAL_EVENT_INTERRUPTED, 0, 0, 0, 0, c->res.errinfo.msg);
            shoal_devc_finish(c, SHOAL_SESSION_INTERRUPTED, SHOAL_OK,
                              SHOAL_SESSION_REASON_SESSION_BUDGET);
        }
        if (c->state == ST_DONE) {
            *out = c->res;
            c->state = ST_IDLE;
            return SHOAL_DONE;
        }
        if (c->state == ST_WORK) {
            shoal_devc_work(c);
            c->deadline_ms = c->port->monotonic_ms(c->port->ctx) + shoal_devc_secagg_wait_ms(c);
            continue;
        }
        int progress = 0, before = c->state;
        if (c->state == ST_UPLOAD) {
            size_t n = 0;
            (void)shoal_ws_pending(c->ws, &n);
            if (n == 0) {
                /* Between chunks (training has just polled before the
                 * first), and always before the Report. */
                int report_next = c->chunker.offset >= c->chunker.total;
                if ((c->chunker.offset > 0 || c->res.upload_resumed) &&
                    shoal_devc_transfer_stopped(c, report_next))
                    continue;
                shoal_devc_upload_next(c);
                progress = 1;
            }
        }
        if (c->state != ST_DONE)
            shoal_devc_pump(c, &progress);
        if (c->state == ST_DONE)
            continue;
        if (progress || c->state != before) {
            /* Between secure aggregation's phases the group may take
             * longer than a transfer would. */
            c->deadline_ms = now_ms + shoal_devc_secagg_wait_ms(c);
            continue;
        }
        if (now_ms >= c->deadline_ms) {
            shoal_devc_fail(c, SHOAL_ETIMEDOUT, SHOAL_SESSION_REASON_TIMEOUT,
                            "%s:%u: no progress for %d ms during %s", c->host,
                            (unsigned)c->cfg.port, c->cfg.io_timeout_ms,
                            shoal_devc_state_name(c->state));
            continue;
        }
        return SHOAL_EAGAIN;
    }
}

shoal_err shoal_client_run(shoal_client *c, shoal_session_result *out)
{
    if (!c || !out || !c->port->wait)
        return SHOAL_EINVAL;
    if (c->state != ST_IDLE)
        return SHOAL_ESTATE;
    for (;;) {
        int64_t now = c->port->monotonic_ms(c->port->ctx);
        shoal_err err = shoal_client_step(c, now, out);
        if (err == SHOAL_DONE)
            return SHOAL_OK;
        if (err != SHOAL_EAGAIN)
            return err;
        int64_t left = c->deadline_ms - now;
        if (left < 1)
            left = 1;
        if (left > 1000)
            left = 1000; /* re-check the deadline at least every second */
        shoal_err w = c->port->wait(c->port->ctx, c->conn, c->want_write, (int)left);
        if (w != SHOAL_OK && w != SHOAL_ETIMEDOUT) {
            /* A failing wait is reported by the next send or recv. */
        }
    }
}

shoal_port_conn *shoal_client_conn(const shoal_client *c)
{
    return c ? c->conn : NULL;
}

int shoal_client_want_write(const shoal_client *c)
{
    return c ? c->want_write : 0;
}

int64_t shoal_client_deadline_ms(const shoal_client *c)
{
    return c ? c->deadline_ms : 0;
}

const float *shoal_client_last_update(const shoal_client *c, size_t *count)
{
    if (count)
        *count = c && c->update ? c->update_count : 0;
    return c ? c->update : NULL;
}

const float *shoal_client_model(const shoal_client *c, size_t *count)
{
    if (count)
        *count = c && c->model ? c->model_count : 0;
    return c ? c->model : NULL;
}
