/* Shoal: a sans-I/O RFC 6455 WebSocket client.
 *
 * shoal_ws holds the whole client side of one WebSocket connection (opening
 * handshake, framing, masking, fragmentation, ping/pong, close handshake) and
 * does no I/O: the caller moves bytes between it and a transport of its
 * choice (usually mbedTLS over a non-blocking socket, where send and receive
 * return SHOAL_EAGAIN as with mbedtls_ssl_set_bio):
 *
 *     shoal_ws_new(&config, &ws, &ei);         // queues the HTTP Upgrade request
 *     loop:
 *         out = shoal_ws_pending(ws, &n);      // bytes to send, if any
 *         sent = transport_send(out, n);       // may send fewer, or EAGAIN
 *         shoal_ws_consume(ws, sent);
 *         got = transport_recv(buf, sizeof buf);
 *         for (p = buf; got > 0; p += used, got -= used) {
 *             err = shoal_ws_feed(ws, p, got, &used, &ev, &ei);
 *             if (err == SHOAL_ROW) handle(&ev);   // OPEN, TEXT, BINARY, PONG, CLOSE
 *             else if (err != SHOAL_OK) break;     // see shoal_ws_feed
 *         }
 *     until shoal_ws_get_state(ws) is CLOSED or FAILED and nothing is pending;
 *     then close the transport and shoal_ws_free(ws).
 *
 * It never generates randomness itself: the Sec-WebSocket-Key comes from 16
 * bytes in the config and every frame's masking key from the config's random
 * callback (RFC 6455 §10.3 asks for a strong source: use the port's secure
 * random). No extensions (permessage-deflate is never offered) and at most
 * one subprotocol.
 *
 * A protocol violation by the server ends the connection: shoal_ws_feed
 * returns SHOAL_EPROTO (or SHOAL_ELIMIT for a size limit), fills the errinfo
 * with what was wrong, queues a Close frame with the matching status code
 * (1002 protocol error, 1007 invalid UTF-8, 1009 message too big) when the
 * connection was open, and refuses further input with SHOAL_ECLOSED.
 *
 * Not thread-safe: one shoal_ws is used by one thread at a time. Every
 * allocation goes through shoal/alloc.h. */
#ifndef SHOAL_WS_H
#define SHOAL_WS_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

/* Defaults for the limits in shoal_ws_config (a 0 there selects them). A
 * message carries at most one 1 MiB chunk plus its envelope, hence the
 * 64 KiB of headroom. */
#define SHOAL_WS_DEFAULT_MAX_MESSAGE ((size_t)(1u << 20) + (size_t)(1u << 16))
#define SHOAL_WS_DEFAULT_MAX_HEADER  ((size_t)8192)
/* Length of a Sec-WebSocket-Key (base64 of 16 bytes) and of a
 * Sec-WebSocket-Accept (base64 of a 20-byte SHA-1), without the NUL. */
#define SHOAL_WS_KEY_LEN    24
#define SHOAL_WS_ACCEPT_LEN 28
/* Largest control frame payload (RFC 6455 §5.5) and close reason. */
#define SHOAL_WS_MAX_CONTROL      125
#define SHOAL_WS_MAX_CLOSE_REASON 123

/* Close status codes (RFC 6455 §7.4.1). */
#define SHOAL_WS_CLOSE_NORMAL         1000
#define SHOAL_WS_CLOSE_GOING_AWAY     1001
#define SHOAL_WS_CLOSE_PROTOCOL_ERROR 1002
#define SHOAL_WS_CLOSE_UNSUPPORTED    1003
#define SHOAL_WS_CLOSE_NO_STATUS      1005 /* reported, never sent */
#define SHOAL_WS_CLOSE_INVALID_DATA   1007
#define SHOAL_WS_CLOSE_POLICY         1008
#define SHOAL_WS_CLOSE_TOO_BIG        1009
#define SHOAL_WS_CLOSE_INTERNAL_ERROR 1011

typedef struct shoal_ws shoal_ws;

/* One extra request header, e.g. {"Authorization", "Bearer ..."}. */
typedef struct shoal_ws_header {
    const char *name;
    const char *value;
} shoal_ws_header;

/* Fills buf with len random bytes; returns SHOAL_OK or an error (which makes
 * the send that needed them fail with SHOAL_ECRYPTO). */
typedef shoal_err (*shoal_ws_random_fn)(void *ctx, uint8_t *buf, size_t len);

typedef struct shoal_ws_config {
    /* Required. Host header value, with ":port" when not the default port;
     * printable ASCII without spaces. */
    const char *host;
    /* Required. Request target: starts with '/', printable ASCII without
     * spaces (query string allowed). */
    const char *path;
    /* Required. 16 fresh random bytes for the Sec-WebSocket-Key. */
    uint8_t key_nonce[16];
    /* Required. Source of the 4-byte masking key of every frame sent. */
    shoal_ws_random_fn random;
    void *random_ctx;
    /* Optional. Subprotocol to request (Sec-WebSocket-Protocol, a token);
     * the server must select exactly it. NULL: none requested, and the
     * server must not select one. */
    const char *subprotocol;
    /* Optional extra request headers (copied). Names must be tokens; values
     * printable (no CR, LF or NUL). Host, Upgrade, Connection,
     * Content-Length, Transfer-Encoding and Sec-WebSocket-* are refused:
     * this object writes them. Values may hold secrets (Authorization): the
     * copy is wiped when sent and on free. */
    const shoal_ws_header *headers;
    size_t header_count;
    /* Limits; 0 selects the default.
     * max_message:    largest message (sum of its frames' payloads), both
     *                 received (else 1009) and sent (else SHOAL_ELIMIT).
     *                 Default SHOAL_WS_DEFAULT_MAX_MESSAGE.
     * max_frame_recv: largest payload of one received frame (else 1009).
     *                 Default max_message.
     * max_frame_send: largest payload per frame sent; longer messages are
     *                 fragmented. Default max_message (no fragmentation).
     * max_header:     largest HTTP response head, status line to the empty
     *                 line inclusive. Default SHOAL_WS_DEFAULT_MAX_HEADER. */
    size_t max_message;
    size_t max_frame_recv;
    size_t max_frame_send;
    size_t max_header;
} shoal_ws_config;

typedef enum shoal_ws_state {
    SHOAL_WS_CONNECTING = 1, /* request queued, waiting for the 101 response */
    SHOAL_WS_OPEN,           /* messages flow both ways */
    SHOAL_WS_CLOSING,        /* we sent Close; still receiving until the server's Close */
    SHOAL_WS_CLOSED,         /* Close sent and received: flush pending, then close transport */
    SHOAL_WS_FAILED,         /* handshake or protocol failure: flush pending, then close */
} shoal_ws_state;

typedef enum shoal_ws_event_kind {
    SHOAL_WS_EVENT_OPEN = 1, /* 101 received and checked; data and len are 0 */
    SHOAL_WS_EVENT_TEXT,     /* a whole text message, valid UTF-8 */
    SHOAL_WS_EVENT_BINARY,   /* a whole binary message */
    SHOAL_WS_EVENT_PONG,     /* a Pong; data is its payload (at most 125 bytes) */
    SHOAL_WS_EVENT_CLOSE,    /* the server's Close; data is the UTF-8 reason */
} shoal_ws_event_kind;

/* What shoal_ws_feed returns with SHOAL_ROW. data points into the shoal_ws
 * (never NULL, and data[len] is a NUL byte, so text can be used as a C
 * string if it holds no NUL) and stays valid until the next call to
 * shoal_ws_feed or shoal_ws_free on the same object: copy what must live
 * longer. close_code is set for SHOAL_WS_EVENT_CLOSE only (1005,
 * SHOAL_WS_CLOSE_NO_STATUS, when the Close carried no code). */
typedef struct shoal_ws_event {
    shoal_ws_event_kind kind;
    const uint8_t *data;
    size_t len;
    uint16_t close_code;
} shoal_ws_event;

/* Creates a client and queues the HTTP/1.1 Upgrade request (RFC 6455 §4.1)
 * for shoal_ws_pending. The config and everything it points to are copied
 * or used only during the call, except random_ctx, which must outlive the
 * object. SHOAL_EINVAL (with ei filled) for a missing or malformed field,
 * SHOAL_ENOMEM. On error *out is NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_new(const shoal_ws_config *config, shoal_ws **out,
                                                 shoal_errinfo *ei);

/* Frees ws and everything it owns, wiping buffered output (NULL: no-op).
 * Pointers from earlier events become invalid. */
SHOAL_API void shoal_ws_free(shoal_ws *ws);

/* Feeds received bytes. Processes in[0..len) until one event is ready or
 * the input is used up, and sets *consumed to the number of bytes used
 * (those need not be fed again; the rest must be, in order).
 *   SHOAL_ROW      *ev holds an event (see shoal_ws_event for its lifetime);
 *                  call again with the unused bytes (possibly none left).
 *   SHOAL_OK       all len bytes used, no event yet (*consumed == len).
 *   SHOAL_EPROTO   the server broke RFC 6455 or sent a bad handshake
 *                  response (a non-101 status other than 401/403 included:
 *                  shoal_ws_http_status tells it); ei names what.
 *   SHOAL_EAUTH    the server answered the handshake with 401 or 403.
 *   SHOAL_ELIMIT   the response head, a frame or a message exceeded its
 *                  limit.
 *   SHOAL_ECLOSED  the connection is CLOSED or FAILED: nothing more is
 *                  accepted (*consumed == 0).
 *   SHOAL_ENOMEM   growing the message buffer failed; nothing is lost:
 *                  call again (with the unused bytes, possibly none) to
 *                  retry.
 *   SHOAL_EINVAL   a NULL argument (in may be NULL when len is 0).
 * After SHOAL_EPROTO, SHOAL_EAUTH or SHOAL_ELIMIT the state is FAILED; if
 * the connection was open, a Close frame with the matching code is queued.
 * A Ping is answered with a Pong automatically (while OPEN); a Close from
 * the server is answered with a Close echoing its code, and the state
 * becomes CLOSED. Feeding len 0 is allowed. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_feed(shoal_ws *ws, const uint8_t *in, size_t len,
                                                  size_t *consumed, shoal_ws_event *ev,
                                                  shoal_errinfo *ei);

/* The next bytes to send: returns a pointer to *len bytes (NULL and 0 when
 * nothing is pending). The pointer stays valid until the next call on ws
 * other than shoal_ws_get_state/shoal_ws_http_status. Send any prefix of
 * them, then report it with shoal_ws_consume. */
SHOAL_API const uint8_t *shoal_ws_pending(shoal_ws *ws, size_t *len);

/* Marks the first n bytes returned by the last shoal_ws_pending as sent.
 * SHOAL_EINVAL if n exceeds what is pending (nothing is consumed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_consume(shoal_ws *ws, size_t n);

/* Queue a message: one frame, or frames of at most max_frame_send payload
 * bytes each, every frame masked with a fresh key from the random callback.
 * All frames are queued or none: on error nothing is queued. text must be
 * valid UTF-8. data is borrowed (copied). Returns SHOAL_ESTATE before the
 * handshake completed, SHOAL_ECLOSED once a Close was sent or the
 * connection failed, SHOAL_ELIMIT when len exceeds max_message,
 * SHOAL_EINVAL for invalid UTF-8 text or data NULL with len > 0,
 * SHOAL_ECRYPTO when the random callback fails, SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_send_binary(shoal_ws *ws, const uint8_t *data,
                                                         size_t len, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_send_text(shoal_ws *ws, const char *text, size_t len,
                                                       shoal_errinfo *ei);

/* Queues a Ping with up to 125 bytes of payload (the server's Pong arrives
 * as SHOAL_WS_EVENT_PONG). Errors as for shoal_ws_send_binary; SHOAL_EINVAL
 * for len > 125. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_ping(shoal_ws *ws, const uint8_t *payload, size_t len,
                                                  shoal_errinfo *ei);

/* Starts the close handshake: queues a Close with `code` and `reason` (at
 * most 123 bytes of UTF-8; NULL for none) after everything already queued.
 * code 0 sends a Close without a status code (then reason must be empty).
 * Otherwise code must be one an endpoint may send: 1000-1003, 1007-1014 or
 * 3000-4999 (SHOAL_EINVAL). The state becomes CLOSING; keep feeding until
 * the server's Close (SHOAL_WS_EVENT_CLOSE, state CLOSED). SHOAL_ESTATE
 * before the handshake, SHOAL_ECLOSED if a Close was already sent or the
 * connection failed. Never allocates. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_close(shoal_ws *ws, uint16_t code, const char *reason,
                                                   shoal_errinfo *ei);

/* The current state (see shoal_ws_state). */
/* Checks a received Close frame's payload (RFC 6455 §5.5.1, §7.4): empty,
 * or a status code an endpoint may send followed by a UTF-8 reason.
 * Returns 0 when it is well formed, else the status code to close the
 * connection with: SHOAL_WS_CLOSE_PROTOCOL_ERROR (1002) for a 1-byte
 * payload or a code no endpoint may send, SHOAL_WS_CLOSE_INVALID_DATA
 * (1007) for a reason that is not UTF-8; `ei` (may be NULL) says which.
 * *code (may be NULL) gets the peer's status code, or
 * SHOAL_WS_CLOSE_NO_STATUS. For servers whose WebSocket library leaves
 * this to the application. Thread-safe. */
SHOAL_API uint16_t shoal_ws_close_payload_check(const uint8_t *payload, size_t len, uint16_t *code,
                                                shoal_errinfo *ei);

SHOAL_API shoal_ws_state shoal_ws_get_state(const shoal_ws *ws);

/* The status code of the handshake response once its status line arrived
 * (101 on success, e.g. 403 or 503 on refusal), else 0. */
SHOAL_API int shoal_ws_http_status(const shoal_ws *ws);

/* Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2:
 * base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))) into out,
 * NUL-terminated. SHOAL_EINVAL for a NULL argument, SHOAL_ECRYPTO if
 * hashing fails. Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_ws_accept_key(const char *key,
                                                        char out[SHOAL_WS_ACCEPT_LEN + 1]);

#endif
