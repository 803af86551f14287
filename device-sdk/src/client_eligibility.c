/* When the device may take part: the eligibility policy before a session
 * and between transfer chunks, and the holds of the device state (retry
 * window, contribution period, daily byte budgets) before it connects. */
#include <stdio.h>

#include "client_int.h"

int shoal_devc_eligible(const shoal_client *c, char *why, size_t why_cap)
{
    const shoal_port *p = c->port;
    const shoal_eligibility *pol = &c->cfg.policy;
    if (pol->require_charging) {
        int v = p->charging ? p->charging(p->ctx) : -1;
        if (v != 1) {
            snprintf(why, why_cap, "not charging%s", v < 0 ? " (unknown)" : "");
            return 0;
        }
    }
    if (pol->require_unmetered) {
        shoal_net_kind k = p->network ? p->network(p->ctx) : SHOAL_NET_UNKNOWN;
        if (k != SHOAL_NET_UNMETERED) {
            snprintf(why, why_cap, "not on an unmetered network");
            return 0;
        }
    }
    if (pol->require_idle) {
        int v = p->idle ? p->idle(p->ctx) : -1;
        if (v != 1) {
            snprintf(why, why_cap, "not idle%s", v < 0 ? " (unknown)" : "");
            return 0;
        }
    }
    if (pol->min_battery_percent > 0) {
        int v = p->battery_percent ? p->battery_percent(p->ctx) : -1;
        if (v < pol->min_battery_percent) {
            if (v < 0)
                snprintf(why, why_cap, "battery level unknown");
            else
                snprintf(why, why_cap, "battery at %d %%, below %d %%", v,
                         pol->min_battery_percent);
            return 0;
        }
    }
    return 1;
}

/* Ends the session before it starts, with nothing sent, when a persisted
 * retry window, the contribution period or a daily byte budget holds. A
 * state database that cannot be read holds nothing (logged): the server's
 * own admission still applies. */
int shoal_devc_held(shoal_client *c)
{
    if (!c->db.db)
        return 0;
    /* An expired saved upload exempts nothing. */
    shoal_devc_saved_expire(c);
    int64_t now = c->port->wall_ms(c->port->ctx), next = 0, last = 0;
    shoal_errinfo ei = {{0}};
    if (shoal_devc_db_population(&c->db, c->population, &next, &last, &ei) != SHOAL_OK) {
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
        return 0;
    }
    shoal_client_hold hold = SHOAL_HOLD_NONE;
    int64_t until = 0;
    int64_t period = shoal_devc_clamp_ms(c->cfg.min_contribution_period_ms);
    int64_t day = now / SHOAL_DEVC_DAY_MS;
    uint64_t down = 0, up = 0;
    /* A saved upload resumes whatever window the interrupted session
     * drew: it must reach the server before its reporting deadline, and
     * it finishes a contribution already made. The byte budgets still
     * hold it. */
    if (next > now && !c->saved.held) {
        hold = SHOAL_HOLD_RETRY_WINDOW;
        until = next;
    } else if (period && last && last + period > now && !c->saved.held) {
        hold = SHOAL_HOLD_CONTRIBUTION_PERIOD;
        until = last + period;
    } else if (c->cfg.budget_bytes_down_per_day || c->cfg.budget_bytes_up_per_day) {
        if (shoal_devc_db_traffic(&c->db, day, &down, &up, &ei) != SHOAL_OK) {
            shoal_devc_log(c, 4, "device state: %s", ei.msg);
            return 0;
        }
        if (c->cfg.budget_bytes_down_per_day && down >= c->cfg.budget_bytes_down_per_day)
            hold = SHOAL_HOLD_BYTES_DOWN;
        else if (c->cfg.budget_bytes_up_per_day && up >= c->cfg.budget_bytes_up_per_day)
            hold = SHOAL_HOLD_BYTES_UP;
        until = (day + 1) * SHOAL_DEVC_DAY_MS;
    }
    if (hold == SHOAL_HOLD_NONE)
        return 0;
    uint64_t left = (uint64_t)(until - now);
    shoal_session_result *r = &c->res;
    r->outcome = hold == SHOAL_HOLD_BYTES_DOWN || hold == SHOAL_HOLD_BYTES_UP
                     ? SHOAL_SESSION_OVER_BUDGET
                     : SHOAL_SESSION_NOT_YET;
    r->hold = hold;
    r->hold_until_unix_ms = until;
    r->retry_min_ms = r->retry_max_ms = r->next_checkin_ms = left;
    r->next_checkin_unix_ms = until;
    switch (hold) {
    case SHOAL_HOLD_RETRY_WINDOW:
        snprintf(r->errinfo.msg, sizeof r->errinfo.msg,
                 "not yet: the check-in time an earlier session chose is %llu ms away",
                 (unsigned long long)left);
        break;
    case SHOAL_HOLD_CONTRIBUTION_PERIOD:
        snprintf(r->errinfo.msg, sizeof r->errinfo.msg,
                 "not yet: the last contribution to \"%s\" was less than "
                 "min_contribution_period_ms (%llu) ago; %llu ms left",
                 c->population, (unsigned long long)c->cfg.min_contribution_period_ms,
                 (unsigned long long)left);
        break;
    default:
        snprintf(r->errinfo.msg, sizeof r->errinfo.msg,
                 "over budget: %llu bytes %s today, budget_bytes_%s_per_day is %llu; resets in "
                 "%llu ms (UTC midnight)",
                 (unsigned long long)(hold == SHOAL_HOLD_BYTES_DOWN ? down : up),
                 hold == SHOAL_HOLD_BYTES_DOWN ? "received" : "sent",
                 hold == SHOAL_HOLD_BYTES_DOWN ? "down" : "up",
                 (unsigned long long)(hold == SHOAL_HOLD_BYTES_DOWN
                                          ? c->cfg.budget_bytes_down_per_day
                                          : c->cfg.budget_bytes_up_per_day),
                 (unsigned long long)left);
    }
    shoal_devc_event(c, SHOAL_EVENT_HELD, 0, left, 0, hold, r->errinfo.msg);
    shoal_devc_log(c, 6, "session not started: %s", r->errinfo.msg);
    r->session_reason = SHOAL_SESSION_REASON_HELD;
    c->state = ST_DONE;
    return 1;
}

/* Polled between model chunks and between update chunks, at most once
 * per poll_interval_ms like training; before the Report (report_next) an
 * unmetered network, when required, is checked every time. When the
 * device is no longer eligible the session ends INTERRUPTED: a download is
 * closed, an upload stops sending at once (nothing more goes out, not
 * even a close handshake) and is kept to resume. Returns 1 when it
 * ended the session. */
int shoal_devc_transfer_stopped(shoal_client *c, int report_next)
{
    int64_t now = c->port->monotonic_ms(c->port->ctx);
    int interval = c->cfg.policy.poll_interval_ms;
    char why[128] = "";
    int eligible = 1;
    if (interval < 0 || now - c->last_poll_ms >= interval) {
        c->last_poll_ms = now;
        eligible = shoal_devc_eligible(c, why, sizeof why);
    }
    if (eligible && report_next && c->cfg.policy.require_unmetered) {
        const shoal_port *p = c->port;
        if ((p->network ? p->network(p->ctx) : SHOAL_NET_UNKNOWN) != SHOAL_NET_UNMETERED) {
            snprintf(why, sizeof why, "not on an unmetered network");
            eligible = 0;
        }
    }
    if (eligible)
        return 0;
    int uploading = c->state == ST_UPLOAD;
    snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "%s stopped: %s",
             uploading ? "the upload" : "the model download", why);
    shoal_devc_event(c, SHOAL_EVENT_INTERRUPTED, uploading ? c->chunker.offset : 0,
                     shoal_devc_phase_ms(c), c->res.example_count, 0, c->res.errinfo.msg);
    if (uploading)
        c->tls_ready = 0; /* shoal_devc_finish then sends nothing more */
    shoal_devc_finish(c, SHOAL_SESSION_INTERRUPTED, SHOAL_OK,
                      SHOAL_SESSION_REASON_STOPPED_INELIGIBLE);
    return 1;
}
