/* The device client: one session as a non-blocking state machine
 * (shoal_client_step), with shoal_client_run as a loop over it. The
 * protocol is docs/protocol.md; the work (training, evaluation) is in
 * work.c. */
#include "client_int.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"

#define DEFAULT_IO_TIMEOUT_MS  30000
#define DEFAULT_RETRY_MIN_MS   (15u * 60u * 1000u)
#define DEFAULT_RETRY_MAX_MS   (30u * 60u * 1000u)
#define DEFAULT_POLL_MS        1000
#define MAX_MODEL_BYTES        (256ull << 20)
#define DEFAULT_LOG_MAX_AGE_MS (30ull * 24 * 3600 * 1000)
#define DEFAULT_LOG_MAX_ROWS   10000u

/* ---- small helpers ----------------------------------------------------------------- */

void client_log(shoal_client *c, int level, const char *fmt, ...)
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

const char *shoal_session_outcome_name(shoal_session_outcome outcome)
{
    switch (outcome) {
    case SHOAL_SESSION_TRAINED:
        return "TRAINED";
    case SHOAL_SESSION_EVALUATED:
        return "EVALUATED";
    case SHOAL_SESSION_REJECTED:
        return "REJECTED";
    case SHOAL_SESSION_INELIGIBLE:
        return "INELIGIBLE";
    case SHOAL_SESSION_INTERRUPTED:
        return "INTERRUPTED";
    case SHOAL_SESSION_INSUFFICIENT_DATA:
        return "INSUFFICIENT_DATA";
    case SHOAL_SESSION_ERROR:
        return "ERROR";
    case SHOAL_SESSION_NOT_YET:
        return "NOT_YET";
    case SHOAL_SESSION_OVER_BUDGET:
        return "OVER_BUDGET";
    }
    return "?";
}

const char *shoal_client_hold_name(shoal_client_hold hold)
{
    switch (hold) {
    case SHOAL_HOLD_NONE:
        return "NONE";
    case SHOAL_HOLD_RETRY_WINDOW:
        return "RETRY_WINDOW";
    case SHOAL_HOLD_CONTRIBUTION_PERIOD:
        return "CONTRIBUTION_PERIOD";
    case SHOAL_HOLD_BYTES_DOWN:
        return "BYTES_DOWN";
    case SHOAL_HOLD_BYTES_UP:
        return "BYTES_UP";
    }
    return "?";
}

const char *shoal_client_event_name(shoal_client_event_kind kind)
{
    switch (kind) {
    case SHOAL_EVENT_CHECKED_IN:
        return "CHECKED_IN";
    case SHOAL_EVENT_ACCEPTED:
        return "ACCEPTED";
    case SHOAL_EVENT_REJECTED:
        return "REJECTED";
    case SHOAL_EVENT_DOWNLOADED:
        return "DOWNLOADED";
    case SHOAL_EVENT_TRAINED:
        return "TRAINED";
    case SHOAL_EVENT_EVALUATED:
        return "EVALUATED";
    case SHOAL_EVENT_INTERRUPTED:
        return "INTERRUPTED";
    case SHOAL_EVENT_INSUFFICIENT_DATA:
        return "INSUFFICIENT_DATA";
    case SHOAL_EVENT_UPLOADED:
        return "UPLOADED";
    case SHOAL_EVENT_ACKED:
        return "ACKED";
    case SHOAL_EVENT_ERROR:
        return "ERROR";
    case SHOAL_EVENT_INELIGIBLE:
        return "INELIGIBLE";
    case SHOAL_EVENT_HELD:
        return "HELD";
    }
    return "?";
}

/* ---- the device state ---------------------------------------------------------------- */

void client_event(shoal_client *c, shoal_client_event_kind kind, uint64_t bytes,
                  uint64_t duration_ms, uint64_t example_count, int64_t status, const char *detail)
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
    if (client_db_log(&c->db, &ev, &ei) != SHOAL_OK)
        client_log(c, 4, "operational log: %s", ei.msg);
}

uint64_t client_phase_ms(shoal_client *c)
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
    shoal_err err = client_db_log_read(&c->db, since_unix_ms, fn, ctx, &ei);
    if (err)
        client_log(c, 4, "operational log: %s", ei.msg);
    return err;
}

static int64_t clamp_ms(uint64_t v)
{
    return v > (uint64_t)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)v;
}

static void saved_drop(shoal_client *c);
static void saved_restore(shoal_client *c);

/* Ends the session before it starts, with nothing sent, when a persisted
 * retry window, the contribution period or a daily byte budget holds. A
 * state database that cannot be read holds nothing (logged): the server's
 * own admission still applies. */
static int held(shoal_client *c)
{
    if (!c->db.db)
        return 0;
    /* An expired saved upload exempts nothing. */
    if (c->saved.held && c->port->monotonic_ms(c->port->ctx) >= c->saved.deadline_ms) {
        client_log(c, 6, "the saved upload missed its reporting deadline: dropped");
        saved_drop(c);
    }
    int64_t now = c->port->wall_ms(c->port->ctx), next = 0, last = 0;
    shoal_errinfo ei = {{0}};
    if (client_db_population(&c->db, c->population, &next, &last, &ei) != SHOAL_OK) {
        client_log(c, 4, "device state: %s", ei.msg);
        return 0;
    }
    shoal_client_hold hold = SHOAL_HOLD_NONE;
    int64_t until = 0;
    int64_t period = clamp_ms(c->cfg.min_contribution_period_ms);
    int64_t day = now / CLIENT_DAY_MS;
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
        if (client_db_traffic(&c->db, day, &down, &up, &ei) != SHOAL_OK) {
            client_log(c, 4, "device state: %s", ei.msg);
            return 0;
        }
        if (c->cfg.budget_bytes_down_per_day && down >= c->cfg.budget_bytes_down_per_day)
            hold = SHOAL_HOLD_BYTES_DOWN;
        else if (c->cfg.budget_bytes_up_per_day && up >= c->cfg.budget_bytes_up_per_day)
            hold = SHOAL_HOLD_BYTES_UP;
        until = (day + 1) * CLIENT_DAY_MS;
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
    client_event(c, SHOAL_EVENT_HELD, 0, left, 0, hold, r->errinfo.msg);
    client_log(c, 6, "session not started: %s", r->errinfo.msg);
    c->state = ST_DONE;
    return 1;
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
        err = client_db_add_traffic(&c->db, now / CLIENT_DAY_MS, c->res.bytes_down, c->res.bytes_up,
                                    &ei);
    if (!err && c->res.connected)
        err = client_db_set_next_checkin(&c->db, c->population, c->res.next_checkin_unix_ms, &ei);
    if (!err && outcome == SHOAL_SESSION_TRAINED)
        err = client_db_set_contribution(&c->db, c->population, now, &ei);
    if (err)
        client_log(c, 4, "device state: %s", ei.msg);
}

/* ---- construction -------------------------------------------------------------------- */

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
        c->db.max_age_ms = clamp_ms(c->cfg.log_max_age_ms);
        c->db.max_rows = clamp_ms(c->cfg.log_max_rows);
        err = client_db_open(&c->db, c->state_path, port->wall_ms(port->ctx), ei);
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
    saved_restore(c);
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

/* Forgets the saved upload held in memory (the device state keeps its
 * copy). The update is wiped: it was computed from the examples. */
static void saved_forget(shoal_client *c)
{
    struct client_saved_upload *s = &c->saved;
    if (s->bytes)
        sodium_memzero(s->bytes, s->len);
    if (s->update)
        sodium_memzero(s->update, s->update_count * sizeof(float));
    shoal_free(s->bytes);
    shoal_free(s->update);
    memset(s, 0, sizeof *s);
}

/* Drops a saved upload for good (sent, refused, or past its deadline),
 * from memory and from the device state. */
static void saved_drop(shoal_client *c)
{
    saved_forget(c);
    shoal_errinfo ei = {{0}};
    if (c->saved_row && c->db.db && client_db_drop_upload(&c->db, c->population, &ei) != SHOAL_OK)
        client_log(c, 4, "device state: %s", ei.msg);
    c->saved_row = 0;
}

/* The key a saved upload is sealed with in the device state: derived from
 * the example store's key, so an update computed from encrypted examples
 * is not kept in clear either. */
static void saved_key(const shoal_client *c,
                      uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES])
{
    static const char context[] = "shoal device state: saved upload v1";
    crypto_generichash(key, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, (const uint8_t *)context,
                       sizeof context - 1, c->cfg.store_key, c->cfg.store_key_len);
}

static size_t put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

/* What a sealed upload is bound to besides its bytes: the population, the
 * session, the checkpoint, and every figure stored beside it (round,
 * example count, metrics, deadline), so that none can be changed in the
 * file without the row failing to open. ad holds SAVED_AD_MAX bytes. */
#define SAVED_AD_MAX (SHOAL_PROTOCOL_ID_MAX * 2 + 5 * 8 + 256)
static size_t saved_ad(const shoal_client *c, const client_db_upload *u, uint8_t *ad)
{
    size_t plen = strlen(c->population) + 1, n = 0;
    if (plen > 256 || u->session_len > SHOAL_PROTOCOL_ID_MAX ||
        u->checkpoint_len > SHOAL_PROTOCOL_ID_MAX)
        return 0;
    memcpy(ad, c->population, plen);
    n = plen;
    ad[n++] = (uint8_t)u->session_len;
    memcpy(ad + n, u->session, u->session_len);
    n += u->session_len;
    ad[n++] = (uint8_t)u->checkpoint_len;
    memcpy(ad + n, u->checkpoint, u->checkpoint_len);
    n += u->checkpoint_len;
    uint64_t loss, accuracy;
    memcpy(&loss, &u->loss, sizeof loss);
    memcpy(&accuracy, &u->accuracy, sizeof accuracy);
    n += put_u64le(ad + n, u->round);
    n += put_u64le(ad + n, u->example_count);
    n += put_u64le(ad + n, (uint64_t)u->deadline_unix_ms);
    n += put_u64le(ad + n, loss);
    n += put_u64le(ad + n, accuracy);
    return n;
}

/* Writes the saved upload to the device state, so that a restarted app
 * can resume it before the deadline. Best effort: without it the upload
 * is only lost on a restart. */
static void saved_persist(shoal_client *c)
{
    struct client_saved_upload *s = &c->saved;
    if (!c->db.db || !s->held)
        return;
    shoal_errinfo ei = {{0}};
    client_db_upload u = {.session_len = s->session_len,
                          .checkpoint_len = s->checkpoint_len,
                          .round = s->round,
                          .example_count = s->example_count,
                          .loss = s->loss,
                          .accuracy = s->accuracy};
    memcpy(u.session, s->session, s->session_len);
    memcpy(u.checkpoint, s->checkpoint, s->checkpoint_len);
    int64_t left = s->deadline_ms - c->port->monotonic_ms(c->port->ctx);
    u.deadline_unix_ms = c->port->wall_ms(c->port->ctx) + (left > 0 ? left : 0);
    uint8_t *sealed = NULL;
    if (c->cfg.store_key) {
        const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
        uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES], ad[SAVED_AD_MAX];
        size_t ad_len = saved_ad(c, &u, ad);
        sealed = shoal_malloc(nb + s->len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
        if (!sealed || !ad_len || c->port->random(c->port->ctx, sealed, nb) != SHOAL_OK) {
            shoal_free(sealed);
            client_log(c, 4, "device state: cannot seal the saved upload; not kept");
            return;
        }
        saved_key(c, key);
        unsigned long long clen = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + nb, &clen, s->bytes, s->len, ad, ad_len,
                                                   NULL, sealed, key);
        sodium_memzero(key, sizeof key);
        u.sealed = 1;
        u.payload = sealed;
        u.payload_len = nb + (size_t)clen;
    } else {
        u.payload = s->bytes;
        u.payload_len = s->len;
    }
    if (client_db_save_upload(&c->db, c->population, &u, &ei) != SHOAL_OK)
        client_log(c, 4, "device state: %s", ei.msg);
    else
        c->saved_row = 1;
    shoal_free(sealed);
}

/* At construction: takes up an upload a previous client saved, if its
 * deadline has not passed. One that cannot be read, opened or decoded is
 * dropped (logged): the worst case is a device that trains again. */
static void saved_restore(shoal_client *c)
{
    if (!c->db.db)
        return;
    shoal_errinfo ei = {{0}};
    client_db_upload u;
    int found = 0;
    if (client_db_load_upload(&c->db, c->population, &u, &found, &ei) != SHOAL_OK) {
        client_log(c, 4, "device state: %s", ei.msg);
        if (client_db_drop_upload(&c->db, c->population, &ei) != SHOAL_OK)
            client_log(c, 4, "device state: %s", ei.msg);
        return;
    }
    if (!found)
        return;
    c->saved_row = 1;
    struct client_saved_upload *s = &c->saved;
    int64_t left = u.deadline_unix_ms - c->port->wall_ms(c->port->ctx);
    const char *why = NULL;
    uint8_t *bytes = u.payload;
    size_t len = u.payload_len;
    if (left <= 0) {
        why = "its reporting deadline has passed";
    } else if (u.sealed != (c->cfg.store_key != NULL)) {
        why = u.sealed ? "it is sealed and no store_key is set" : "it is not sealed";
    } else if (u.sealed) {
        const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
        uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES], ad[SAVED_AD_MAX];
        size_t ad_len = saved_ad(c, &u, ad);
        unsigned long long mlen = 0;
        bytes = len > nb + crypto_aead_xchacha20poly1305_ietf_ABYTES ? shoal_malloc(len) : NULL;
        saved_key(c, key);
        if (!bytes || !ad_len ||
            crypto_aead_xchacha20poly1305_ietf_decrypt(bytes, &mlen, NULL, u.payload + nb, len - nb,
                                                       ad, ad_len, u.payload, key) != 0) {
            why = "it fails authentication with this store_key";
        }
        sodium_memzero(key, sizeof key);
        len = (size_t)mlen;
    }
    float *update = NULL;
    if (!why &&
        (len % 4 != 0 || !(update = shoal_mallocarray(len / 4, sizeof(float))) ||
         shoal_tensor_decode_f32le(bytes, len, update, len / 4, "saved update", &ei) != SHOAL_OK))
        why = "it cannot be decoded";
    if (why) {
        client_log(c, 5, "the saved upload of \"%s\" is dropped: %s", c->population, why);
        if (update)
            sodium_memzero(update, (len / 4) * sizeof(float));
        shoal_free(update);
        if (bytes && bytes != u.payload) {
            sodium_memzero(bytes, u.payload_len);
            shoal_free(bytes);
        }
        shoal_free(u.payload);
        saved_drop(c);
        return;
    }
    if (bytes != u.payload)
        shoal_free(u.payload);
    s->held = 1;
    memcpy(s->session, u.session, u.session_len);
    s->session_len = u.session_len;
    memcpy(s->checkpoint, u.checkpoint, u.checkpoint_len);
    s->checkpoint_len = u.checkpoint_len;
    s->bytes = bytes;
    s->len = len;
    s->update = update;
    s->update_count = len / 4;
    s->round = u.round;
    s->example_count = u.example_count;
    s->loss = u.loss;
    s->accuracy = u.accuracy;
    s->deadline_ms = c->port->monotonic_ms(c->port->ctx) + left;
    client_log(c, 6, "a saved upload of %zu bytes for round %llu is kept from an earlier run", len,
               (unsigned long long)u.round);
}

/* Drops everything that belongs to one session (not the held model). */
static void session_reset(shoal_client *c)
{
    if (c->conn)
        c->port->close(c->port->ctx, c->conn);
    c->conn = NULL;
    shoal_ws_free(c->ws);
    c->ws = NULL;
    shoal_tls_free(c->tls);
    c->tls = NULL;
    shoal_envelope_free(c->accepted_env);
    c->accepted_env = NULL;
    c->accepted = NULL;
    shoal_reassembler_free(c->ra);
    c->ra = NULL;
    shoal_free(c->upload_bytes);
    c->upload_bytes = NULL;
    c->upload_len = 0;
    c->tls_ready = 0;
    c->have_window = 0;
    c->want_write = 0;
    c->report_queued = 0;
}

void shoal_client_free(shoal_client *c)
{
    if (!c)
        return;
    session_reset(c);
    saved_forget(c); /* the device state keeps it for the next client */
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
    client_db_close(&c->db);
    shoal_free(c->state_path);
    shoal_free(c);
}

/* ---- eligibility ----------------------------------------------------------------------- */

int client_eligible(shoal_client *c, char *why, size_t why_cap)
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

/* ---- ending a session ------------------------------------------------------------------ */

static void set_window(shoal_client *c, const Shoal__RetryWindow *w)
{
    if (w && w->has_min_ms && w->has_max_ms && w->min_ms <= w->max_ms) {
        c->res.retry_min_ms = w->min_ms;
        c->res.retry_max_ms = w->max_ms;
        c->have_window = 1;
    }
}

/* Keeps an update whose upload was cut off, for the next session to
 * resume (docs/protocol.md, "Resuming an upload"): only before the
 * server's Abort or refusal (those end the session on its side too), and
 * only for a trained update. In memory: a client freed, or a process
 * restarted, starts over. */
static void saved_keep(shoal_client *c, shoal_session_outcome outcome, shoal_err err)
{
    int cut = outcome == SHOAL_SESSION_INTERRUPTED ||
              (outcome == SHOAL_SESSION_ERROR &&
               (err == SHOAL_EIO || err == SHOAL_ECLOSED || err == SHOAL_ETIMEDOUT));
    if (!cut || (c->state != ST_UPLOAD && c->state != ST_AWAIT_ACK) || !c->upload_bytes ||
        !c->accepted || c->pending_outcome != SHOAL_SESSION_TRAINED || c->res.reason)
        return;
    saved_forget(c);
    struct client_saved_upload *s = &c->saved;
    s->held = 1;
    memcpy(s->session, c->session, c->session_len);
    s->session_len = c->session_len;
    memcpy(s->checkpoint, c->held, c->held_len);
    s->checkpoint_len = c->held_len;
    s->bytes = c->upload_bytes;
    s->len = c->upload_len;
    c->upload_bytes = NULL;
    c->upload_len = 0;
    s->update = c->update;
    s->update_count = c->update_count;
    c->update = NULL;
    c->update_count = 0;
    s->round = c->res.round;
    s->example_count = c->res.example_count;
    s->loss = c->res.loss;
    s->accuracy = c->res.accuracy;
    s->deadline_ms = c->accepted_ms + clamp_ms(c->accepted->plan->report_deadline_ms);
    c->res.upload_saved = 1;
    saved_persist(c);
    client_log(c, 6, "upload of %zu bytes cut off at %zu: kept to resume before the deadline",
               s->len, c->chunker.offset);
}

/* Ends the session: picks the next check-in time at once from the window,
 * closes the connection (a WebSocket Close and TLS close_notify if they go
 * out without waiting) and frees the session's state. */
static void finish(shoal_client *c, shoal_session_outcome outcome, shoal_err err)
{
    c->res.outcome = outcome;
    c->res.err = err;
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
    saved_keep(c, outcome, err);
    /* A resumed upload that ended (acknowledged, refused, aborted)
     * leaves nothing to keep. */
    if (c->saved_row && !c->saved.held)
        saved_drop(c);

    if (c->ws && c->tls_ready) {
        shoal_errinfo ei;
        if (shoal_ws_get_state(c->ws) == SHOAL_WS_OPEN &&
            shoal_ws_close(c->ws, SHOAL_WS_CLOSE_NORMAL, NULL, &ei) != SHOAL_OK) {
            /* Nothing more to say to a server that is gone. */
        }
        size_t n = 0, w = 0;
        const uint8_t *p = shoal_ws_pending(c->ws, &n);
        if (n && shoal_tls_write(c->tls, p, n, &w, &ei) == SHOAL_OK &&
            shoal_ws_consume(c->ws, w) != SHOAL_OK) {
            /* cannot happen: w <= n */
        }
        if (shoal_tls_close_notify(c->tls, &ei) != SHOAL_OK) {
            /* best effort: the transport may be gone */
        }
    }
    session_reset(c);
    c->state = ST_DONE;
    if (outcome == SHOAL_SESSION_REJECTED)
        client_event(c, SHOAL_EVENT_REJECTED, 0, 0, 0, c->res.reason, c->res.errinfo.msg);
    else if (outcome == SHOAL_SESSION_INELIGIBLE)
        client_event(c, SHOAL_EVENT_INELIGIBLE, 0, 0, 0, 0, c->res.errinfo.msg);
    else if (outcome == SHOAL_SESSION_ERROR)
        client_event(c, SHOAL_EVENT_ERROR, 0, 0, 0, err, c->res.errinfo.msg);
    persist_session(c, outcome);
    client_log(c, 6, "session ended: %s%s%s; next check-in in %llu ms",
               shoal_session_outcome_name(outcome), err ? ": " : "", err ? c->res.errinfo.msg : "",
               (unsigned long long)c->res.next_checkin_ms);
}

void client_fail(shoal_client *c, shoal_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, fmt, ap);
    va_end(ap);
    finish(c, SHOAL_SESSION_ERROR, err);
}

/* ---- sending ---------------------------------------------------------------------------- */

shoal_err client_send(shoal_client *c, const shoal_envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_errinfo ei;
    shoal_err err = shoal_envelope_encode(&c->codec_out, env, &buf, &len, &ei);
    if (!err) {
        if (c->cfg.observe_send)
            c->cfg.observe_send(c->cfg.observe_ctx, buf, len);
        err = shoal_ws_send_binary(c->ws, buf, len, &ei);
        shoal_free(buf);
    }
    if (err)
        client_fail(c, err, "sending %s: %s", shoal_envelope_body_name(env), ei.msg);
    return err;
}

static void send_checkin(shoal_client *c)
{
    Shoal__Capabilities caps = SHOAL__CAPABILITIES__INIT;
    Shoal__TensorEncoding enc[1] = {SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE};
    caps.has_max_model_bytes = 1;
    caps.max_model_bytes = MAX_MODEL_BYTES;
    caps.n_encodings = 1;
    caps.encodings = enc;
    Shoal__CheckIn ci = SHOAL__CHECK_IN__INIT;
    ci.has_protocol_version = 1;
    ci.protocol_version = SHOAL_PROTOCOL_VERSION;
    ci.population = c->population;
    ci.has_auth_token = 1;
    ci.auth_token.data = c->token;
    ci.auth_token.len = c->cfg.auth_token_len;
    ci.sdk_version = SHOAL_CLIENT_SDK_VERSION;
    ci.capabilities = &caps;
    if (c->model && c->held_len) {
        ci.has_held_checkpoint_id = 1;
        ci.held_checkpoint_id.data = c->held;
        ci.held_checkpoint_id.len = c->held_len;
    }
    Shoal__Resume resume = SHOAL__RESUME__INIT;
    if (c->saved.held && c->port->monotonic_ms(c->port->ctx) >= c->saved.deadline_ms) {
        client_log(c, 6, "the saved upload missed its reporting deadline: dropped");
        saved_drop(c);
    }
    if (c->saved.held) {
        /* The server answers a resume without ModelChunks: the device
         * names the checkpoint its update was computed from. */
        resume.has_session_id = 1;
        resume.session_id.data = c->saved.session;
        resume.session_id.len = c->saved.session_len;
        ci.resume = &resume;
        ci.has_held_checkpoint_id = 1;
        ci.held_checkpoint_id.data = c->saved.checkpoint;
        ci.held_checkpoint_id.len = c->saved.checkpoint_len;
    }
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    env.check_in = &ci;
    if (client_send(c, &env) == SHOAL_OK) {
        c->state = ST_AWAIT_RESULT;
        client_event(c, SHOAL_EVENT_CHECKED_IN, 0, 0, 0, 0, NULL);
    }
}

/* Queues the next ReportChunk of the update, or the Report after the last. */
static void upload_next(shoal_client *c)
{
    shoal_chunk ch;
    if (shoal_chunker_next(&c->chunker, &ch) == SHOAL_ROW) {
        Shoal__ReportChunk rc;
        shoal_envelope env;
        shoal_errinfo ei;
        shoal_err err =
            shoal_envelope_report_chunk_init(&env, &rc, c->session, c->session_len, &ch, &ei);
        if (err)
            client_fail(c, err, "sending ReportChunk: %s", ei.msg);
        else
            (void)client_send(c, &env);
        return;
    }
    client_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED, c->update_count, NULL);
}

void client_send_report(shoal_client *c, int outcome, size_t update_count, const char *detail)
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
    if (client_send(c, &env) == SHOAL_OK) {
        c->report_queued = 1;
        c->state = ST_AWAIT_ACK;
    }
}

/* ---- receiving -------------------------------------------------------------------------- */

static void take_abort(shoal_client *c, const Shoal__Abort *ab)
{
    set_window(c, ab->retry_window);
    c->res.reason = ab->reason;
    shoal_err err = ab->reason == SHOAL__REASON__REASON_AUTH_FAILED           ? SHOAL_EAUTH
                    : ab->reason == SHOAL__REASON__REASON_VERSION_UNSUPPORTED ? SHOAL_EPROTO
                                                                              : SHOAL_ECLOSED;
    client_fail(c, err, "%s:%u: the server aborted the session: %s%s%s", c->host,
                (unsigned)c->cfg.port, shoal_protocol_reason_name(ab->reason),
                ab->detail && ab->detail[0] ? ": " : "", ab->detail ? ab->detail : "");
}

/* Continues a saved upload when the server resumed its session: the
 * ReportChunks start at upload_resume_offset, the Report repeats the
 * metrics of the training that produced the update. Returns 0 when the
 * answer is not a resume of the saved session. */
static int resume_upload(shoal_client *c, const Shoal__CheckInResult__Accepted *a)
{
    struct client_saved_upload *s = &c->saved;
    if (!a->has_upload_resume_offset || a->upload_resume_offset > s->len ||
        a->task_kind != SHOAL__TASK_KIND__TASK_KIND_TRAIN || a->session_id.len != s->session_len ||
        memcmp(a->session_id.data, s->session, s->session_len) != 0 ||
        a->plan->model->parameter_count != s->update_count)
        return 0;
    if (shoal_chunker_init(&c->chunker, s->bytes, s->len,
                           shoal_chunk_max_payload(c->codec_out.max_message_bytes)) != SHOAL_OK ||
        shoal_chunker_resume(&c->chunker, a->upload_resume_offset) != SHOAL_OK)
        return 0;
    c->upload_bytes = s->bytes;
    c->upload_len = s->len;
    shoal_free(c->update);
    c->update = s->update;
    c->update_count = s->update_count;
    c->res.example_count = s->example_count;
    c->res.loss = s->loss;
    c->res.accuracy = s->accuracy;
    c->res.upload_resumed = 1;
    c->res.upload_resume_offset = a->upload_resume_offset;
    s->bytes = NULL;
    s->update = NULL;
    /* The device state keeps its copy until the Report is acknowledged:
     * a process killed during this upload resumes it again. */
    saved_forget(c);
    c->pending_outcome = SHOAL_SESSION_TRAINED;
    client_log(c, 6, "resuming the upload at byte %llu of %zu",
               (unsigned long long)a->upload_resume_offset, c->upload_len);
    c->state = ST_UPLOAD;
    return 1;
}

/* Polled between model chunks and between update chunks, at most once
 * per poll_interval_ms like training; before the Report (report_next) an
 * unmetered network, when required, is checked every time. When the
 * device is no longer eligible the session ends INTERRUPTED: a download is
 * closed, an upload stops sending at once (nothing more goes out, not
 * even a close handshake) and is kept to resume. Returns 1 when it
 * ended the session. */
static int transfer_stopped(shoal_client *c, int report_next)
{
    int64_t now = c->port->monotonic_ms(c->port->ctx);
    int interval = c->cfg.policy.poll_interval_ms;
    char why[128] = "";
    int eligible = 1;
    if (interval < 0 || now - c->last_poll_ms >= interval) {
        c->last_poll_ms = now;
        eligible = client_eligible(c, why, sizeof why);
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
    client_event(c, SHOAL_EVENT_INTERRUPTED, uploading ? c->chunker.offset : 0, client_phase_ms(c),
                 c->res.example_count, 0, c->res.errinfo.msg);
    if (uploading)
        c->tls_ready = 0; /* finish() then sends nothing more */
    finish(c, SHOAL_SESSION_INTERRUPTED, SHOAL_OK);
    return 1;
}

static void take_result(shoal_client *c, shoal_envelope *env)
{
    Shoal__CheckInResult *r = env->check_in_result;
    if (r->result_case == SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
        const Shoal__CheckInResult__Rejected *rj = r->rejected;
        saved_drop(c); /* a server that can resume answers Accepted */
        set_window(c, rj->retry_window);
        c->res.reason = rj->reason;
        const char *detail = rj->detail ? rj->detail : "";
        switch (rj->reason) {
        case SHOAL__REASON__REASON_AUTH_FAILED:
            client_fail(c, SHOAL_EAUTH, "check-in refused: AUTH_FAILED: %s", detail);
            break;
        case SHOAL__REASON__REASON_UNKNOWN_POPULATION:
            client_fail(c, SHOAL_ENOTFOUND, "check-in refused: UNKNOWN_POPULATION \"%s\": %s",
                        c->population, detail);
            break;
        case SHOAL__REASON__REASON_VERSION_UNSUPPORTED:
            client_fail(c, SHOAL_EPROTO, "check-in refused: VERSION_UNSUPPORTED: %s", detail);
            break;
        default:
            snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "rejected: %s%s%s",
                     shoal_protocol_reason_name(rj->reason), detail[0] ? ": " : "", detail);
            finish(c, SHOAL_SESSION_REJECTED, SHOAL_OK);
        }
        shoal_envelope_free(env);
        return;
    }
    Shoal__CheckInResult__Accepted *a = r->accepted;
    c->accepted_env = env;
    c->accepted = a;
    set_window(c, a->retry_window);
    c->res.round = a->round;
    client_event(c, SHOAL_EVENT_ACCEPTED, 0, 0, 0, (int64_t)a->round, NULL);
    c->phase_start_ms = c->port->monotonic_ms(c->port->ctx);
    c->accepted_ms = c->phase_start_ms;
    c->last_poll_ms = c->phase_start_ms; /* eligibility was checked before connecting */
    memcpy(c->session, a->session_id.data, a->session_id.len);
    c->session_len = a->session_id.len;
    const Shoal__Plan *plan = a->plan;
    if (plan->model_encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE ||
        (a->task_kind == SHOAL__TASK_KIND__TASK_KIND_TRAIN &&
         plan->update_encoding != SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE)) {
        client_fail(c, SHOAL_EPROTO, "the plan asks for encodings this SDK did not offer");
        return;
    }
    uint64_t params = plan->model->parameter_count;
    if (params > MAX_MODEL_BYTES / 4 || a->model_size != params * 4) {
        client_fail(c, SHOAL_EPROTO,
                    "the plan's model (%llu parameters, %llu bytes) does not fit this device",
                    (unsigned long long)params, (unsigned long long)a->model_size);
        return;
    }
    if (c->saved.held) {
        if (resume_upload(c, a))
            return;
        client_log(c, 6, "the server did not resume the saved upload: dropped");
        saved_drop(c);
    }
    if (a->has_upload_resume_offset) {
        /* It sends no model and waits for ReportChunks we cannot give. */
        client_fail(c, SHOAL_EPROTO,
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
        client_fail(c, SHOAL_ENOMEM, "out of memory for a model of %llu bytes",
                    (unsigned long long)a->model_size);
        return;
    }
    c->state = ST_DOWNLOAD;
}

static void take_model_chunk(shoal_client *c, const Shoal__ModelChunk *mc)
{
    const Shoal__CheckInResult__Accepted *a = c->accepted;
    if (mc->checkpoint_id.len != a->checkpoint_id.len ||
        memcmp(mc->checkpoint_id.data, a->checkpoint_id.data, mc->checkpoint_id.len) != 0) {
        client_fail(c, SHOAL_EPROTO, "a ModelChunk names another checkpoint than Accepted");
        return;
    }
    shoal_chunk ch = shoal_chunk_from_model(mc);
    shoal_errinfo ei;
    shoal_err err = shoal_reassembler_add(c->ra, &ch, &ei);
    if (err == SHOAL_OK) {
        (void)transfer_stopped(c, 0);
        return;
    }
    if (err != SHOAL_DONE) {
        client_fail(c, err, "model download: %s", ei.msg);
        return;
    }
    size_t len = 0, count = a->plan->model->parameter_count;
    const uint8_t *bytes = shoal_reassembler_bytes(c->ra, &len);
    float *model = shoal_mallocarray(count, sizeof(float));
    if (!model) {
        client_fail(c, SHOAL_ENOMEM, "out of memory for the model");
        return;
    }
    err = shoal_tensor_decode_f32le(bytes, len, model, count, "model", &ei);
    shoal_reassembler_free(c->ra);
    c->ra = NULL;
    if (err) {
        shoal_free(model);
        client_fail(c, err, "model download: %s", ei.msg);
        return;
    }
    shoal_free(c->model);
    c->model = model;
    c->model_count = count;
    memcpy(c->held, a->checkpoint_id.data, a->checkpoint_id.len);
    c->held_len = a->checkpoint_id.len;
    c->res.model_downloaded = 1;
    client_event(c, SHOAL_EVENT_DOWNLOADED, a->model_size, client_phase_ms(c), 0, 0, NULL);
    c->state = ST_WORK;
}

static void take_ack(shoal_client *c, const Shoal__ReportAck *ack)
{
    set_window(c, ack->retry_window);
    c->res.ack_status = ack->status;
    if (c->pending_outcome == SHOAL_SESSION_TRAINED && c->upload_len)
        client_event(c, SHOAL_EVENT_UPLOADED, c->upload_len, client_phase_ms(c), 0, 0, NULL);
    client_event(c, SHOAL_EVENT_ACKED, 0, 0, 0, ack->status, NULL);
    if (ack->status == SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED) {
        c->res.reason = ack->has_reason ? ack->reason : 0;
        client_fail(c, SHOAL_EPROTO, "the server refused the report: %s%s%s",
                    shoal_protocol_reason_name(c->res.reason),
                    ack->detail && ack->detail[0] ? ": " : "", ack->detail ? ack->detail : "");
        return;
    }
    finish(c, c->pending_outcome, c->pending_err);
}

static void take_message(shoal_client *c, const uint8_t *data, size_t len)
{
    shoal_envelope *env = NULL;
    shoal_errinfo ei;
    shoal_err err = shoal_envelope_decode(&c->codec_in, data, len, &env, &ei);
    if (err) {
        client_fail(c, err, "%s:%u: a message from the server was refused: %s", c->host,
                    (unsigned)c->cfg.port, ei.msg);
        return;
    }
    int body = env->body_case;
    if (body == SHOAL__ENVELOPE__BODY_ABORT) {
        take_abort(c, env->abort);
    } else if (c->state == ST_AWAIT_RESULT && body == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT) {
        take_result(c, env);
        return; /* take_result owns env */
    } else if (c->state == ST_DOWNLOAD && body == SHOAL__ENVELOPE__BODY_MODEL_CHUNK) {
        take_model_chunk(c, env->model_chunk);
    } else if (c->report_queued && body == SHOAL__ENVELOPE__BODY_REPORT_ACK) {
        take_ack(c, env->report_ack);
    } else {
        client_fail(c, SHOAL_EPROTO, "unexpected %s from the server in this state",
                    shoal_envelope_body_name(env));
    }
    shoal_envelope_free(env);
}

/* ---- moving bytes --------------------------------------------------------------------- */

/* The byte counts are what crossed the connection, TLS records included:
 * what a data plan is charged. */
static int tls_send(void *ctx, const uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    int n = c->port->send(c->port->ctx, c->conn, buf, len);
    if (n > 0)
        c->res.bytes_up += (uint64_t)n;
    return n;
}

static int tls_recv(void *ctx, uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    int n = c->port->recv(c->port->ctx, c->conn, buf, len);
    if (n > 0)
        c->res.bytes_down += (uint64_t)n;
    return n;
}

static shoal_err port_random(void *ctx, uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    return c->port->random(c->port->ctx, buf, len);
}

static void start_session(shoal_client *c)
{
    memset(&c->res, 0, sizeof c->res);
    shoal_free(c->update);
    c->update = NULL;
    c->update_count = 0;
    c->pending_outcome = SHOAL_SESSION_ERROR;
    c->pending_err = SHOAL_OK;
    if (held(c))
        return;
    char why[128];
    if (!client_eligible(c, why, sizeof why)) {
        snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "ineligible: %s", why);
        finish(c, SHOAL_SESSION_INELIGIBLE, SHOAL_OK);
        return;
    }
    shoal_errinfo ei = {{0}};
    shoal_err err = c->port->connect(c->port->ctx, c->host, c->cfg.port, &c->conn, &ei);
    if (err) {
        c->conn = NULL;
        client_fail(c, err, "%s", ei.msg);
        return;
    }
    c->res.connected = 1;
    char peer[300];
    snprintf(peer, sizeof peer, "%s:%u", c->host, (unsigned)c->cfg.port);
    shoal_tls_config tc = {.server_name = c->server_name,
                           .ca_pem = c->ca_pem,
                           .ca_pem_len = c->cfg.ca_pem_len,
                           .ca_label = "the pinned CA (client config ca_pem)",
                           .peer_label = peer,
                           .send = tls_send,
                           .recv = tls_recv,
                           .io_ctx = c,
                           .entropy = port_random,
                           .entropy_ctx = c};
    err = shoal_tls_new(&tc, &c->tls, &ei);
    if (err) {
        client_fail(c, err, "%s", ei.msg);
        return;
    }
    shoal_ws_config wc = {.host = peer,
                          .path = c->path,
                          .random = port_random,
                          .random_ctx = c,
                          .subprotocol = SHOAL_PROTOCOL_SUBPROTOCOL};
    if (c->cfg.port == 443)
        wc.host = c->host;
    err = c->port->random(c->port->ctx, wc.key_nonce, sizeof wc.key_nonce);
    if (err) {
        client_fail(c, SHOAL_ECRYPTO, "the port's random source failed");
        return;
    }
    err = shoal_ws_new(&wc, &c->ws, &ei);
    if (err) {
        client_fail(c, err, "%s", ei.msg);
        return;
    }
    c->state = ST_CONNECTING;
}

/* Moves bytes both ways as far as the transport allows and dispatches
 * every message received. Sets *progress when anything moved. */
static void pump(shoal_client *c, int *progress)
{
    shoal_errinfo ei;
    shoal_err err;
    if (!c->tls_ready) {
        err = shoal_tls_handshake(c->tls, &ei);
        if (err == SHOAL_EAGAIN) {
            c->want_write = shoal_tls_want_write(c->tls);
            return;
        }
        if (err) {
            client_fail(c, err, "%s", ei.msg);
            return;
        }
        c->tls_ready = 1;
        *progress = 1;
    }
    c->want_write = 0;
    for (;;) {
        size_t n = 0, w = 0;
        const uint8_t *p = shoal_ws_pending(c->ws, &n);
        if (!n)
            break;
        err = shoal_tls_write(c->tls, p, n, &w, &ei);
        if (err == SHOAL_EAGAIN) {
            c->want_write = 1;
            break;
        }
        if (err) {
            client_fail(c, err, "%s:%u: sending failed: %s", c->host, (unsigned)c->cfg.port,
                        ei.msg);
            return;
        }
        if (shoal_ws_consume(c->ws, w) != SHOAL_OK) {
            client_fail(c, SHOAL_EPROTO, "internal: WebSocket consumed more than pending");
            return;
        }
        *progress = 1;
    }
    err = shoal_tls_flush(c->tls, &ei);
    if (err == SHOAL_EAGAIN)
        c->want_write = 1;
    else if (err) {
        client_fail(c, err, "%s:%u: sending failed: %s", c->host, (unsigned)c->cfg.port, ei.msg);
        return;
    }
    uint8_t buf[16384];
    while (c->state != ST_DONE && c->state != ST_WORK) {
        size_t got = 0;
        err = shoal_tls_read(c->tls, buf, sizeof buf, &got, &ei);
        if (err == SHOAL_EAGAIN)
            return;
        if (err) {
            client_fail(c, err, "%s:%u: the connection ended during %s: %s", c->host,
                        (unsigned)c->cfg.port, client_state_name(c->state), ei.msg);
            return;
        }
        *progress = 1;
        size_t off = 0;
        while (off < got) {
            size_t used = 0;
            shoal_ws_event ev;
            err = shoal_ws_feed(c->ws, buf + off, got - off, &used, &ev, &ei);
            off += used;
            if (err == SHOAL_OK)
                break;
            if (err != SHOAL_ROW) {
                client_fail(c, err, "%s:%u: %s", c->host, (unsigned)c->cfg.port, ei.msg);
                return;
            }
            if (ev.kind == SHOAL_WS_EVENT_OPEN && c->state == ST_CONNECTING) {
                send_checkin(c);
            } else if (ev.kind == SHOAL_WS_EVENT_BINARY) {
                take_message(c, ev.data, ev.len);
            } else if (ev.kind == SHOAL_WS_EVENT_CLOSE) {
                client_fail(c, SHOAL_ECLOSED,
                            "%s:%u: the server closed the connection during %s (code %u%s%.*s)",
                            c->host, (unsigned)c->cfg.port, client_state_name(c->state),
                            (unsigned)ev.close_code, ev.len ? ": " : "", (int)ev.len,
                            (const char *)ev.data);
            } else if (ev.kind == SHOAL_WS_EVENT_TEXT) {
                client_fail(c, SHOAL_EPROTO, "the server sent a text message");
            }
            if (c->state == ST_DONE)
                return;
            /* Messages queued in answer go out on the next round of the loop
             * in step(). Bytes after a state change to WORK stay in buf:
             * the server sends nothing more until we report, so none are
             * expected; any that came are fed now. */
        }
    }
}

const char *client_state_name(int state)
{
    switch (state) {
    case ST_IDLE:
        return "start";
    case ST_CONNECTING:
        return "the TLS and WebSocket handshakes";
    case ST_AWAIT_RESULT:
        return "check-in";
    case ST_DOWNLOAD:
        return "the model download";
    case ST_WORK:
        return "local training";
    case ST_UPLOAD:
        return "the upload";
    case ST_AWAIT_ACK:
        return "the wait for the report's acknowledgement";
    case ST_DONE:
        return "the end of the session";
    }
    return "?";
}

/* ---- the state machine ------------------------------------------------------------------ */

shoal_err shoal_client_step(shoal_client *c, int64_t now_ms, shoal_session_result *out)
{
    if (!c || !out)
        return SHOAL_EINVAL;
    if (c->state == ST_IDLE) {
        c->session_start_ms = now_ms;
        c->session_deadline_ms =
            c->cfg.budget_session_ms ? now_ms + clamp_ms(c->cfg.budget_session_ms) : 0;
        start_session(c);
        c->deadline_ms = now_ms + c->cfg.io_timeout_ms;
    }
    for (;;) {
        if (c->session_deadline_ms && now_ms >= c->session_deadline_ms &&
            (c->state == ST_CONNECTING || c->state == ST_AWAIT_RESULT || c->state == ST_DOWNLOAD)) {
            /* Nothing trained yet: the server counts the device dropped. */
            snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg,
                     "the session's time budget (budget_session_ms %llu) ran out during %s",
                     (unsigned long long)c->cfg.budget_session_ms, client_state_name(c->state));
            client_event(c, SHOAL_EVENT_INTERRUPTED, 0, 0, 0, 0, c->res.errinfo.msg);
            finish(c, SHOAL_SESSION_INTERRUPTED, SHOAL_OK);
        }
        if (c->state == ST_DONE) {
            *out = c->res;
            c->state = ST_IDLE;
            return SHOAL_DONE;
        }
        if (c->state == ST_WORK) {
            client_work(c);
            c->deadline_ms = c->port->monotonic_ms(c->port->ctx) + c->cfg.io_timeout_ms;
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
                    transfer_stopped(c, report_next))
                    continue;
                upload_next(c);
                progress = 1;
            }
        }
        if (c->state != ST_DONE)
            pump(c, &progress);
        if (c->state == ST_DONE)
            continue;
        if (progress || c->state != before) {
            c->deadline_ms = now_ms + c->cfg.io_timeout_ms;
            continue;
        }
        if (now_ms >= c->deadline_ms) {
            client_fail(c, SHOAL_ETIMEDOUT, "%s:%u: no progress for %d ms during %s", c->host,
                        (unsigned)c->cfg.port, c->cfg.io_timeout_ms, client_state_name(c->state));
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
