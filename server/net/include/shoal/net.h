/* Shoal: the server's network layer, on libwebsockets.
 *
 * One service thread (the caller of shoal_net_run) owns the lws_context and
 * every connection; nothing else touches libwebsockets except
 * lws_cancel_service(). Connections are named by a shoal_conn_id, a number
 * never reused during the process's life, so an actor holding the id of a
 * connection that has gone away gets SHOAL_ECLOSED instead of touching freed
 * memory.
 *
 * One port serves both:
 *  - WebSocket sessions at path SHOAL_NET_WS_PATH with subprotocol
 *    SHOAL_NET_SUBPROTOCOL: every binary message is handed whole (fragments
 *    reassembled, at most max_message_bytes) to handlers.on_message; text
 *    messages and oversize messages close the connection (1003, 1009);
 *  - HTTP GET of any other path: handlers.on_http answers (health, metrics,
 *    model download).
 * Upgrades elsewhere, or without the subprotocol, are refused (404, 400).
 *
 * Outbound: any thread calls shoal_net_send; the message joins the
 * connection's outbox, the service thread is woken with
 * lws_cancel_service(), asks for a writable callback and writes one message
 * per callback (a message longer than 64 KiB goes out as a fragmented
 * message, one frame per callback). shoal_net_close flushes what is queued,
 * then closes.
 *
 * TLS (OpenSSL under libwebsockets) is on unless the config turns it off:
 * TLS 1.2 minimum, ECDHE with AES-GCM or ChaCha20-Poly1305 only. With
 * session_tickets, a client that presents a ticket from an earlier
 * connection resumes its session (no key exchange, no signature); the
 * ticket keys are made at start, kept in sodium_malloc memory and rotated
 * every ticket_rotation_ms (server/net/src/tickets_int.h). The server
 * keeps no session cache either way. */
#ifndef SHOAL_NET_H
#define SHOAL_NET_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/wire.h"

/* The protocol's path and subprotocol (shoal/wire.h). */
#define SHOAL_NET_WS_PATH     SHOAL_PROTOCOL_WS_PATH
#define SHOAL_NET_SUBPROTOCOL SHOAL_PROTOCOL_SUBPROTOCOL

typedef uint64_t shoal_conn_id; /* 0 is never a valid id */

/* Copied by shoal_net_new (strings included). shoal_net_new refuses with
 * SHOAL_EINVAL, naming the field: a limit of 0, a timeout outside its range
 * (up to 7 days), tls without both paths, or session tickets with
 * ticket_rotation_ms outside 1000 to 7 days. */
typedef struct shoal_net_config {
    const char *address; /* numeric address to bind, e.g. "127.0.0.1"; NULL: all */
    uint16_t port;       /* 0: pick a free port (see shoal_net_port) */
    int tls;             /* non-zero: serve TLS with cert_path/key_path (PEM); zero: plain,
                            for running behind a TLS-terminating proxy */
    const char *cert_path;
    const char *key_path;
    /* TCP connections at once (WebSocket, HTTP and handshakes in progress),
     * >= 1. Beyond it a new connection is closed as soon as it is
     * accepted, before TLS, and counted in refused_total. */
    uint32_t max_connections;
    size_t max_message_bytes;   /* largest inbound WebSocket message, >= 1; beyond: 1009 */
    size_t max_outbox_messages; /* per connection, >= 1; beyond: shoal_net_send says
                                   SHOAL_ELIMIT */
    /* TLS + HTTP request or upgrade must finish within this (> 0). Also
     * how long a closing session may take to flush and close before it is
     * cut. */
    int64_t handshake_timeout_ms;
    /* No inbound message data or pong for this long: the session is closed
     * with 1001 "idle timeout" (0: never). Idle HTTP keep-alive connections
     * are closed by libwebsockets after 5 s. */
    int64_t idle_timeout_ms;
    /* A second listener, plain HTTP only, for the operator's endpoints
     * (on_http sees req->admin = 1 for its requests): NULL for none. It
     * takes no WebSocket sessions; bind it to loopback or a private
     * network. admin_port 0 picks a free port (shoal_net_admin_port). */
    const char *admin_address;
    uint16_t admin_port;
    /* TLS session tickets (with tls only): non-zero issues tickets and
     * resumes the sessions they carry; zero makes every handshake a full
     * one. Tickets are sealed with a key that is current for
     * ticket_rotation_ms (1000 to 7 days), then accepted (and replaced by
     * a new ticket) for one more period, then forgotten: a ticket works
     * for less than 2 x ticket_rotation_ms, and never after a restart. A
     * session is resumed at most 2 x ticket_rotation_ms after its full
     * handshake. */
    int session_tickets;
    int64_t ticket_rotation_ms;
} shoal_net_config;

/* A connection-lifetime snapshot passed to on_open. */
typedef struct shoal_conn_info {
    char peer[64]; /* "ip:port" of the remote end */
} shoal_conn_info;

/* An HTTP answer filled by on_http. body is allocated with shoal_malloc and
 * owned by the network layer afterwards (it frees it). */
typedef struct shoal_http_response {
    int status;               /* 200, 404, 503, ... */
    const char *content_type; /* static string */
    uint8_t *body;
    size_t body_len;
    /* Up to 4 extra headers ("X-Shoal-Version: 12"), static or owned by the
     * handler until the next on_http call on this thread. Malformed ones,
     * and Content-Length, Content-Type, Transfer-Encoding and Connection
     * (the network layer writes those), are left out with a warning. */
    const char *headers[4];
} shoal_http_response;

/* An HTTP request as on_http sees it; both strings live until on_http
 * returns. */
typedef struct shoal_http_request {
    const char *path;          /* without the query string */
    const char *authorization; /* the Authorization header's value; "" when absent or too long */
    int admin;                 /* 1: it came to the admin listener (shoal_net_config) */
} shoal_http_request;

/* Callbacks, all run on the service thread (the caller of shoal_net_run);
 * they must not block. They may call shoal_net_send and shoal_net_close. */
typedef struct shoal_net_handlers {
    void *ctx;
    /* A WebSocket session opened. The id works with shoal_net_send from any
     * thread as soon as this is called. Return 0 to keep it, non-zero to
     * refuse (the connection is closed with 1013 "try again later", and
     * anything sent meanwhile is dropped). NULL: every session is kept. */
    int (*on_open)(void *ctx, shoal_conn_id id, const shoal_conn_info *info);
    /* One whole binary message (fragments reassembled; len may be 0,
     * bytes is never NULL). Return 0 and `bytes` (shoal_malloc'd) belongs
     * to the callee; return non-zero when it could not be taken (a full
     * mailbox): the network layer keeps and frees `bytes`, and closes the
     * session with 1013 after what is queued. */
    int (*on_message)(void *ctx, shoal_conn_id id, uint8_t *bytes, size_t len);
    /* The session is gone (either side closed, error, timeout, stop).
     * Called exactly once for every id on_open accepted, at the latest
     * before shoal_net_run returns; never for a refused one. */
    void (*on_close)(void *ctx, shoal_conn_id id);
    /* Input of `id` paused at the start of a message, as shoal_net_hold_next
     * asked; nothing more is read from it until shoal_net_pause_input(id,
     * 0). Called before that message's on_message. NULL: shoal_net_hold_next
     * does nothing. */
    void (*on_held)(void *ctx, shoal_conn_id id);
    /* An HTTP GET (or HEAD) of req->path (without the query string). Fill
     * *resp (it arrives zeroed); status left 0 means 404. For HEAD the
     * body is only measured for Content-Length, then freed. Not called for
     * other methods (405) or for GET SHOAL_NET_WS_PATH without an upgrade
     * (426). */
    void (*on_http)(void *ctx, const shoal_http_request *req, shoal_http_response *resp);
} shoal_net_handlers;

typedef struct shoal_net shoal_net;

/* Creates the context and binds the port. SHOAL_EIO (address in use,
 * unreadable, malformed or mismatched certificate or key, ...) with ei
 * naming the address:port or file; SHOAL_EINVAL for a bad config (see
 * shoal_net_config) or a NULL argument; SHOAL_ENOMEM. The certificate and
 * key are checked with OpenSSL before libwebsockets loads them. Process-wide
 * side effects: libwebsockets' own warnings and errors go to the Shoal log,
 * and libwebsockets sets SIGPIPE to ignored. On error *out is NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_net_new(const shoal_net_config *cfg,
                                                  const shoal_net_handlers *handlers,
                                                  shoal_net **out, shoal_errinfo *ei);
/* Frees everything; call after shoal_net_run returned (or if it was never
 * called), never while it runs. NULL is a no-op. */
SHOAL_API void shoal_net_free(shoal_net *net);

/* The port actually bound (useful with port 0). Thread-safe. */
SHOAL_API uint16_t shoal_net_port(const shoal_net *net);
/* The admin listener's port; 0 without one. */
SHOAL_API uint16_t shoal_net_admin_port(const shoal_net *net);

/* Runs the service loop on the calling thread until shoal_net_stop, then
 * closes what is left (on_close runs for every open session) and tears the
 * libwebsockets context down before returning. Returns SHOAL_OK after a
 * stop, SHOAL_EIO if the loop failed, SHOAL_ESTATE when called a second
 * time, SHOAL_EINVAL for NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_net_run(shoal_net *net);

/* Asks the service loop to close every session (1001 "server shutting
 * down", after what is queued), refuse new ones and return: at once when
 * the peers have answered the Close, else after 300 ms; HTTP connections
 * are cut. Before shoal_net_run, makes it return at once; after, a no-op.
 * Thread-safe, async-signal-unsafe (call from a normal thread). */
SHOAL_API void shoal_net_stop(shoal_net *net);

/* Queues one binary message for connection `id`; thread-safe. Takes
 * ownership of `bytes` (shoal_malloc'd; NULL allowed when len is 0) on
 * SHOAL_OK only. SHOAL_ECLOSED: the connection is gone, closing or never
 * existed (0 included); SHOAL_ELIMIT: its outbox holds max_outbox_messages
 * (a message counts until fully written); SHOAL_EINVAL: NULL net, or NULL
 * bytes with len > 0; SHOAL_ENOMEM. Messages to one id go out in order. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_net_send(shoal_net *net, shoal_conn_id id, uint8_t *bytes,
                                                   size_t len);

/* The same for bytes shared by many connections (a model's chunks, sent
 * to every device of a round): they are only read, and release(ctx) is
 * called once this connection is done with them (written or dropped). The
 * reference passes on SHOAL_OK only. Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_net_send_shared(shoal_net *net, shoal_conn_id id,
                                                          const uint8_t *bytes, size_t len,
                                                          void (*release)(void *ctx), void *ctx);

/* Closes connection `id` after its queued messages are written, with a
 * WebSocket close `code` and short `reason` (copied; cut to 123 bytes; NULL
 * for none). A code an endpoint may not send (RFC 6455 §7.4) becomes 1000.
 * From this call on, shoal_net_send to the id says SHOAL_ECLOSED. A peer
 * that does not take the queued messages within handshake_timeout_ms is
 * cut. Thread-safe; unknown or already closing ids are ignored. */
SHOAL_API void shoal_net_close(shoal_net *net, shoal_conn_id id, uint16_t code, const char *reason);

/* Stops (pause non-zero) or restarts reading connection `id`'s input:
 * while paused, the service thread reads nothing more from its socket
 * (lws_rx_flow_control), so TCP holds the peer back, and the idle timeout
 * does not run; what was read before still arrives. For admitting a
 * bounded number of uploads at once. Thread-safe; unknown or closing ids
 * are ignored, and a closing connection is read again (its Close must be
 * seen). */
SHOAL_API void shoal_net_pause_input(shoal_net *net, shoal_conn_id id, int pause);

/* Pauses connection `id`'s input at the start of its next message, as
 * shoal_net_pause_input(id, 1) would, and then calls handlers.on_held: the
 * caller decides whether that message may come in (shoal_net_pause_input
 * (id, 0)) before it is read. Until then the server holds at most the
 * message's first fragment (a few KiB), not the size it announces. Once
 * only: the message after it is not held unless asked again. For uploads
 * admitted a bounded number at a time: a device waiting for its place
 * costs the server a fragment, not its update. Thread-safe; unknown or
 * closing ids are ignored; without an on_held handler a no-op. */
SHOAL_API void shoal_net_hold_next(shoal_net *net, shoal_conn_id id);

/* Counters for /metrics; thread-safe snapshot. */
typedef struct shoal_net_stats {
    uint64_t connections;     /* TCP connections open now (see max_connections) */
    uint64_t accepted_total;  /* WebSocket sessions opened */
    uint64_t refused_total;   /* over max_connections, or refused by on_open */
    uint64_t bytes_in_total;  /* WebSocket payload bytes received */
    uint64_t bytes_out_total; /* WebSocket payload bytes sent */
    uint64_t http_requests_total;
    uint64_t tls_handshakes_total; /* TLS handshakes completed, full or resumed */
    uint64_t tls_resumed_total;    /* ... of which resumed a session (a ticket) */
} shoal_net_stats;
SHOAL_API void shoal_net_get_stats(const shoal_net *net, shoal_net_stats *out);

#endif
