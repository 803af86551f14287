/* Shoal: a blocking WebSocket-over-TLS client for POSIX systems.
 *
 * A convenience wrapper for tests, benchmarks and the Linux reference
 * device: it owns a non-blocking TCP socket, drives shoal_tls (tls.h) and
 * shoal_ws (ws.h) over it with poll(), and turns every step into a call
 * that waits at most a given time. Phones use tls.h and ws.h directly with
 * their own socket callbacks.
 *
 *     shoal_wss_config cfg = {.host = "127.0.0.1", .port = 8443,
 *                             .server_name = "localhost",
 *                             .ca_file = "cert.pem", .timeout_ms = 5000};
 *     shoal_wss_connect(&cfg, &wss, &ei);
 *     shoal_wss_send(wss, msg, len, 5000, &ei);
 *     shoal_wss_recv(wss, &reply, &reply_len, 5000, &ei); ... shoal_free(reply);
 *     if (shoal_wss_close(wss, SHOAL_WS_CLOSE_NORMAL, 1000) != SHOAL_OK)
 *         ...;                                 // the server did not answer the Close
 *     shoal_wss_free(wss);
 *
 * Messages are binary (the Shoal protocol is protobuf); a text message
 * from the server is refused. Pings are answered while receiving.
 * Randomness (the Sec-WebSocket-Key and every frame's masking key) comes
 * from the TLS session's CTR_DRBG.
 *
 * Error messages name host:port and what failed: "127.0.0.1:8443: connect
 * failed: Connection refused; is the server running?", "... timed out
 * after 2000 ms during the TLS handshake", "... WebSocket upgrade of
 * /v1/session refused: websocket handshake: server answered HTTP 403 ...".
 *
 * Thread safety: one shoal_wss is used by one thread at a time. SIGPIPE is
 * never raised (MSG_NOSIGNAL). All allocations go through shoal/alloc.h
 * (mbedTLS's internal buffers excepted, see tls.h). */
#ifndef SHOAL_WSS_H
#define SHOAL_WSS_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/wire.h"
#include "shoal/ws.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_WSS_DEFAULT_TIMEOUT_MS 10000

typedef struct shoal_wss shoal_wss;

typedef struct shoal_wss_config {
    /* Required. Host name or address to connect to (resolved with
     * getaddrinfo; every address is tried in turn). */
    const char *host;
    /* Required, non-zero. TCP port. */
    uint16_t port;
    /* Optional. Request path; NULL gives SHOAL_PROTOCOL_WS_PATH. */
    const char *path;
    /* Optional. Subprotocol to request and require; NULL gives
     * SHOAL_PROTOCOL_SUBPROTOCOL, "" requests none. */
    const char *subprotocol;
    /* Optional. DNS name the server certificate must match (and SNI); NULL
     * gives host. mbedTLS 2.28 never matches IP addresses: with host
     * "127.0.0.1" set server_name to the certificate's name, e.g.
     * "localhost". */
    const char *server_name;
    /* Exactly one of the two: the CA certificate(s) to trust, as a PEM
     * file path or as PEM text in memory. */
    const char *ca_file;
    const char *ca_pem;
    /* Limit for connect, TLS handshake and WebSocket upgrade together, in
     * milliseconds; 0 gives SHOAL_WSS_DEFAULT_TIMEOUT_MS. Name resolution
     * (getaddrinfo) is not bounded by it. */
    int timeout_ms;
    /* Optional extra request headers (e.g. Authorization), as in
     * shoal_ws_config. */
    const shoal_ws_header *headers;
    size_t header_count;
    /* Optional limits passed to shoal_ws_config (0: its defaults). */
    size_t max_message;
    size_t max_frame_send;
} shoal_wss_config;

/* Connects, completes the TLS handshake (verifying the certificate
 * against the CA and server_name) and the WebSocket upgrade, all within
 * cfg->timeout_ms. cfg and what it points to are used only during the
 * call. Returns SHOAL_OK and *out, or with *out NULL and ei filled:
 *   SHOAL_EINVAL     a missing or malformed field (host, port, both or
 *                    neither CA source, bad header), or an unusable CA;
 *   SHOAL_ENOTFOUND  host does not resolve;
 *   SHOAL_EIO        the CA file cannot be read, or the connection failed
 *                    (refused, unreachable, reset) on every address;
 *   SHOAL_ETIMEDOUT  the deadline passed; ei names the phase (TCP
 *                    connect, TLS handshake, WebSocket upgrade);
 *   SHOAL_EAUTH      the certificate was not trusted (see
 *                    shoal_tls_handshake), or the upgrade was answered
 *                    with HTTP 401/403;
 *   SHOAL_EPROTO     a TLS failure other than trust, or the upgrade was
 *                    refused or answered wrongly (ei gives the HTTP status
 *                    and, e.g., a missing subprotocol);
 *   SHOAL_ECLOSED    the server closed the connection before the upgrade
 *                    completed;
 *   SHOAL_ECRYPTO, SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_wss_connect(const shoal_wss_config *cfg, shoal_wss **out,
                                                      shoal_errinfo *ei);

/* Sends data[0..len) as one binary message (fragmented by
 * cfg->max_frame_send if set), waiting up to timeout_ms (-1: no limit) for
 * the socket to take it. data is borrowed for the call.
 *   SHOAL_OK         all of it went to the socket;
 *   SHOAL_ETIMEDOUT  the socket did not take it in time: what remains is
 *                    still queued and goes out first on the next send,
 *                    recv or close;
 *   SHOAL_ECLOSED    the connection is closed (by either side) or was
 *                    aborted; SHOAL_ELIMIT len exceeds max_message;
 *   SHOAL_EIO        the socket failed; SHOAL_EPROTO a TLS failure;
 *   SHOAL_EINVAL     NULL wss, or data NULL with len > 0; SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_wss_send(shoal_wss *wss, const uint8_t *data, size_t len,
                                                   int timeout_ms, shoal_errinfo *ei);

/* Waits up to timeout_ms (-1: no limit) for the next binary message and
 * returns it in *msg (allocated with shoal_malloc, caller frees with
 * shoal_free; a 0-byte message gives a non-NULL *msg) and *len. Pings
 * are answered and Pongs dropped on the way. On error *msg is NULL and
 * *len 0.
 *   SHOAL_ETIMEDOUT  nothing complete arrived in time (a partial message
 *                    stays buffered; call again);
 *   SHOAL_ECLOSED    the server closed the WebSocket (its code and reason
 *                    via shoal_wss_close_code; the Close is answered) or
 *                    the connection;
 *   SHOAL_EPROTO     the server broke RFC 6455 or sent a text message
 *                    (refused: the connection is closed with 1003);
 *   SHOAL_ELIMIT     a message exceeded max_message (closed with 1009);
 *   SHOAL_EIO        the socket failed;
 *   SHOAL_EINVAL     a NULL argument; SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_wss_recv(shoal_wss *wss, uint8_t **msg, size_t *len,
                                                   int timeout_ms, shoal_errinfo *ei);

/* The close code the server sent (SHOAL_WS_CLOSE_NO_STATUS, 1005, for a
 * Close without one), or 0 while the server has not closed. If reason is
 * not NULL, *reason gets its UTF-8 reason text (NUL-terminated, possibly
 * empty), valid until shoal_wss_free. */
SHOAL_API uint16_t shoal_wss_close_code(const shoal_wss *wss, const char **reason);

/* Closes in order: sends a Close with `code` (0: no code; otherwise a code
 * an endpoint may send, see shoal_ws_close), waits up to timeout_ms
 * (-1: no limit) for the server's Close (dropping data messages), sends
 * the TLS close_notify and closes the socket. SHOAL_OK when the server
 * answered; SHOAL_ETIMEDOUT when it did not in time; SHOAL_ECLOSED when
 * the connection was already closed or failed (after a Close from the
 * server this is not an error: SHOAL_OK); SHOAL_EINVAL for a bad code. The
 * socket is closed in every case except SHOAL_EINVAL; shoal_wss_free is
 * still required. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_wss_close(shoal_wss *wss, uint16_t code, int timeout_ms);

/* For tests of a server against misbehaving clients: writes bytes[0..len)
 * through TLS as they are, bypassing the WebSocket framing (after
 * flushing what is already queued), waiting up to timeout_ms (-1: no
 * limit). Errors as for shoal_wss_send. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_wss_write_raw(shoal_wss *wss, const uint8_t *bytes,
                                                        size_t len, int timeout_ms,
                                                        shoal_errinfo *ei);

/* For tests: drops the TCP connection at once, with neither WebSocket
 * Close nor TLS close_notify, and with a TCP reset (SO_LINGER 0) so queued
 * data is discarded. Later calls other than shoal_wss_free and
 * shoal_wss_close_code return SHOAL_ECLOSED. */
SHOAL_API void shoal_wss_abort(shoal_wss *wss);

/* Closes the socket if still open (without a close handshake: use
 * shoal_wss_close first for an orderly end), wipes and frees everything.
 * NULL is a no-op. */
SHOAL_API void shoal_wss_free(shoal_wss *wss);

/* The negotiated TLS cipher suite (see shoal_tls_ciphersuite); static
 * string, "" if unknown. */
SHOAL_API const char *shoal_wss_ciphersuite(const shoal_wss *wss);

#ifdef __cplusplus
}
#endif

#endif
