/* The connection of one session: the port's socket under TLS (the
 * server's CA pinned) under WebSocket. Moves bytes both ways without
 * blocking and hands each message received to the client
 * (shoal_devc_take_message). */
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"

/* The byte counts are what crossed the connection, TLS records included:
 * what a data plan is charged. */
static int counted(int n, uint64_t *bytes)
{
    if (n > 0)
        *bytes += (uint64_t)n;
    return n;
}

static int tls_send(void *ctx, const uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    return counted(c->port->send(c->port->ctx, c->conn, buf, len), &c->res.bytes_up);
}

static int tls_recv(void *ctx, uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    return counted(c->port->recv(c->port->ctx, c->conn, buf, len), &c->res.bytes_down);
}

static shoal_err port_random(void *ctx, uint8_t *buf, size_t len)
{
    shoal_client *c = ctx;
    return c->port->random(c->port->ctx, buf, len);
}

void shoal_devc_connect(shoal_client *c)
{
    shoal_errinfo ei = {{0}};
    shoal_err err = c->port->connect(c->port->ctx, c->host, c->cfg.port, &c->conn, &ei);
    if (err) {
        c->conn = NULL;
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_CONNECTION, "%s", ei.msg);
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
                           .entropy_ctx = c,
                           .session_tickets = !c->cfg.disable_tls_resumption};
    err = shoal_tls_new(&tc, &c->tls, &ei);
    if (err) {
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_DEVICE, "%s", ei.msg);
        return;
    }
    shoal_devc_tls_offer(c);
    shoal_ws_config wc = {.host = peer,
                          .path = c->path,
                          .random = port_random,
                          .random_ctx = c,
                          .subprotocol = SHOAL_PROTOCOL_SUBPROTOCOL};
    if (c->cfg.port == 443)
        wc.host = c->host;
    err = c->port->random(c->port->ctx, wc.key_nonce, sizeof wc.key_nonce);
    if (err) {
        shoal_devc_fail(c, SHOAL_ECRYPTO, SHOAL_SESSION_REASON_DEVICE,
                        "the port's random source failed");
        return;
    }
    err = shoal_ws_new(&wc, &c->ws, &ei);
    if (err) {
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_DEVICE, "%s", ei.msg);
        return;
    }
    c->state = ST_CONNECTING;
}

/* Moves bytes both ways as far as the transport allows and dispatches
 * every message received. Sets *progress when anything moved. */
void shoal_devc_pump(shoal_client *c, int *progress)
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
            /* A certificate the pinned CA does not vouch for will not
             * become trusted by waiting. */
            shoal_devc_fail(c, err,
                            err == SHOAL_EAUTH ? SHOAL_SESSION_REASON_SERVER_UNTRUSTED
                                               : SHOAL_SESSION_REASON_CONNECTION,
                            "%s", ei.msg);
            return;
        }
        c->tls_ready = 1;
        shoal_devc_tls_keep(c);
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
            shoal_devc_fail(c, err, SHOAL_SESSION_REASON_CONNECTION, "%s:%u: sending failed: %s",
                            c->host, (unsigned)c->cfg.port, ei.msg);
            return;
        }
        if (shoal_ws_consume(c->ws, w) != SHOAL_OK) {
            shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_DEVICE,
                            "internal: WebSocket consumed more than pending");
            return;
        }
        *progress = 1;
    }
    err = shoal_tls_flush(c->tls, &ei);
    if (err == SHOAL_EAGAIN)
        c->want_write = 1;
    else if (err) {
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_CONNECTION, "%s:%u: sending failed: %s",
                        c->host, (unsigned)c->cfg.port, ei.msg);
        return;
    }
    uint8_t buf[16384];
    while (c->state != ST_DONE && c->state != ST_WORK) {
        size_t got = 0;
        err = shoal_tls_read(c->tls, buf, sizeof buf, &got, &ei);
        if (err == SHOAL_EAGAIN)
            return;
        if (err) {
            shoal_devc_fail(c, err, SHOAL_SESSION_REASON_CONNECTION,
                            "%s:%u: the connection ended during %s: %s", c->host,
                            (unsigned)c->cfg.port, shoal_devc_state_name(c->state), ei.msg);
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
                /* 401 or 403 to the upgrade: the server refused the
                 * device's credentials before the protocol began. */
                shoal_devc_fail(c, err,
                                err == SHOAL_EAUTH ? SHOAL_SESSION_REASON_AUTH_FAILED
                                                   : SHOAL_SESSION_REASON_PROTOCOL,
                                "%s:%u: %s", c->host, (unsigned)c->cfg.port, ei.msg);
                return;
            }
            if (ev.kind == SHOAL_WS_EVENT_OPEN && c->state == ST_CONNECTING) {
                shoal_devc_send_checkin(c);
            } else if (ev.kind == SHOAL_WS_EVENT_BINARY) {
                shoal_devc_take_message(c, ev.data, ev.len);
            } else if (ev.kind == SHOAL_WS_EVENT_CLOSE) {
                shoal_devc_fail(c, SHOAL_ECLOSED, SHOAL_SESSION_REASON_CONNECTION,
                                "%s:%u: the server closed the connection during %s (code %u%s%.*s)",
                                c->host, (unsigned)c->cfg.port, shoal_devc_state_name(c->state),
                                (unsigned)ev.close_code, ev.len ? ": " : "", (int)ev.len,
                                (const char *)ev.data);
            } else if (ev.kind == SHOAL_WS_EVENT_TEXT) {
                shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                                "the server sent a text message");
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

const char *shoal_devc_state_name(int state)
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
    case ST_SECAGG:
        return "secure aggregation";
    case ST_AWAIT_ACK:
        return "the wait for the report's acknowledgement";
    case ST_DONE:
        return "the end of the session";
    }
    return "?";
}

shoal_err shoal_devc_send(shoal_client *c, const shoal_envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_errinfo ei;
    shoal_err err = shoal_envelope_encode(&c->codec_out, env, &buf, &len, &ei);
    return shoal_devc_send_encoded(c, err, buf, len, shoal_envelope_body_name(env), &ei);
}

shoal_err shoal_devc_send_encoded(shoal_client *c, shoal_err err, uint8_t *buf, size_t len,
                                  const char *what, const shoal_errinfo *why)
{
    shoal_errinfo ei = *why;
    /* A message the device cannot encode is its own failure; one the
     * WebSocket will not take, the connection's. */
    shoal_session_reason reason = SHOAL_SESSION_REASON_DEVICE;
    if (!err) {
        if (c->cfg.observe_send)
            c->cfg.observe_send(c->cfg.observe_ctx, buf, len);
        err = shoal_ws_send_binary(c->ws, buf, len, &ei);
        shoal_free(buf);
        reason = SHOAL_SESSION_REASON_CONNECTION;
    }
    if (err)
        shoal_devc_fail(c, err, reason, "sending %s: %s", what, ei.msg);
    return err;
}

void shoal_devc_close(shoal_client *c)
{
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
}

/* Drops everything that belongs to one session (not the held model). */
void shoal_devc_session_reset(shoal_client *c)
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
    shoal_devc_secagg_free(c);
}
