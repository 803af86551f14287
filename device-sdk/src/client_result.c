/* The client's log and operational log, and the end of a session: the
 * next check-in drawn from the retry window, what the device state keeps,
 * and the result the app reads. */
#include <stdarg.h>
#include <stdio.h>

#include "client_int.h"

void shoal_devc_log(const shoal_client *c, int level, const char *fmt, ...)
{
    if (!c->port->log)
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->port->log(c->port->ctx, level, line);
}

void shoal_devc_event(shoal_client *c, shoal_client_event_kind kind, uint64_t bytes,
                      uint64_t duration_ms, uint64_t example_count, int64_t status,
                      const char *detail)
{
    if (!c->db.db)
        return;
    shoal_client_event ev = {.unix_ms = c->port->wall_ms(c->port->ctx),
                             .kind = kind,
                             .population = c->population,
                             .bytes = bytes,
                             .duration_ms = duration_ms,
                             .example_count = example_count,
                             .status = status,
                             .detail = detail};
    shoal_errinfo ei = {{0}};
    if (shoal_devc_db_log(&c->db, &ev, &ei) != SHOAL_OK)
        shoal_devc_log(c, 4, "operational log: %s", ei.msg);
}

uint64_t shoal_devc_phase_ms(const shoal_client *c)
{
    int64_t d = c->port->monotonic_ms(c->port->ctx) - c->phase_start_ms;
    return d > 0 ? (uint64_t)d : 0;
}

shoal_err shoal_client_log_read(shoal_client *c, int64_t since_unix_ms,
                                int (*fn)(void *ctx, const shoal_client_event *event), void *ctx)
{
    if (!c || !fn || !c->db.db)
        return SHOAL_EINVAL;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_devc_db_log_read(&c->db, since_unix_ms, fn, ctx, &ei);
    if (err)
        shoal_devc_log(c, 4, "operational log: %s", ei.msg);
    return err;
}

int64_t shoal_devc_clamp_ms(uint64_t v)
{
    return v > (uint64_t)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)v;
}

void shoal_devc_set_window(shoal_client *c, const Shoal__RetryWindow *w)
{
    if (w && w->has_min_ms && w->has_max_ms && w->min_ms <= w->max_ms) {
        c->res.retry_min_ms = w->min_ms;
        c->res.retry_max_ms = w->max_ms;
        c->have_window = 1;
    }
}

/* At the end of a session: what the next client must know. Nothing is
 * persisted for a session that never reached the server (ineligible): it
 * may come back as soon as the device is eligible. */
static void persist_session(shoal_client *c, shoal_session_outcome outcome)
{
    if (!c->db.db)
        return;
    shoal_errinfo ei = {{0}};
    int64_t now = c->port->wall_ms(c->port->ctx);
    shoal_err err = SHOAL_OK;
    if (c->res.bytes_down || c->res.bytes_up)
        err = shoal_devc_db_add_traffic(&c->db, now / SHOAL_DEVC_DAY_MS, c->res.bytes_down,
                                        c->res.bytes_up, &ei);
    if (!err && c->res.connected)
        err =
            shoal_devc_db_set_next_checkin(&c->db, c->population, c->res.next_checkin_unix_ms, &ei);
    if (!err && outcome == SHOAL_SESSION_TRAINED)
        err = shoal_devc_db_set_contribution(&c->db, c->population, now, &ei);
    if (err)
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
}

/* Ends the session: picks the next check-in time at once from the window,
 * closes the connection (a WebSocket Close and TLS close_notify if they go
 * out without waiting) and frees the session's state. */
void shoal_devc_finish(shoal_client *c, shoal_session_outcome outcome, shoal_err err,
                       shoal_session_reason reason)
{
    c->res.outcome = outcome;
    c->res.err = err;
    c->res.session_reason = reason;
    if (!c->have_window) {
        c->res.retry_min_ms = c->cfg.fallback_retry_min_ms;
        c->res.retry_max_ms = c->cfg.fallback_retry_max_ms;
    }
    uint64_t span = c->res.retry_max_ms - c->res.retry_min_ms, draw = 0;
    if (c->port->random(c->port->ctx, (uint8_t *)&draw, sizeof draw) != SHOAL_OK)
        draw = 0; /* no randomness: the window's start is still a valid choice */
    /* The modulo bias is below 2^-40 for windows under a week. */
    c->res.next_checkin_ms = c->res.retry_min_ms + (span ? draw % (span + 1) : 0);
    c->res.next_checkin_unix_ms = c->port->wall_ms(c->port->ctx) + (int64_t)c->res.next_checkin_ms;
    shoal_devc_saved_keep(c, outcome, err);
    /* A resumed upload that ended (acknowledged, refused, aborted)
     * leaves nothing to keep. */
    if (c->saved_row && !c->saved.held)
        shoal_devc_saved_drop(c);
    shoal_devc_close(c);
    shoal_devc_session_reset(c);
    c->state = ST_DONE;
    if (outcome == SHOAL_SESSION_REJECTED)
        shoal_devc_event(c, SHOAL_EVENT_REJECTED, 0, 0, 0, c->res.reason, c->res.errinfo.msg);
    else if (outcome == SHOAL_SESSION_INELIGIBLE)
        shoal_devc_event(c, SHOAL_EVENT_INELIGIBLE, 0, 0, 0, 0, c->res.errinfo.msg);
    else if (outcome == SHOAL_SESSION_ERROR)
        shoal_devc_event(c, SHOAL_EVENT_ERROR, 0, 0, 0, err, c->res.errinfo.msg);
    persist_session(c, outcome);
    shoal_devc_log(c, 6, "session ended: %s%s%s; next check-in in %llu ms",
                   shoal_session_outcome_name(outcome), err ? ": " : "",
                   err ? c->res.errinfo.msg : "", (unsigned long long)c->res.next_checkin_ms);
}

void shoal_devc_fail(shoal_client *c, shoal_err err, shoal_session_reason reason, const char *fmt,
                     ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, fmt, ap);
    va_end(ap);
    shoal_devc_finish(c, SHOAL_SESSION_ERROR, err, reason);
}
