/* A test client for the network layer: a blocking socket with timeouts,
 * optionally OpenSSL on top, driving the sans-I/O WebSocket client
 * (protocol/ws) or speaking HTTP/1.1 by hand. No Criterion here: the soak
 * test runs it on several threads, so every function returns a status and
 * leaves a message in tc->error. */
#ifndef SHOAL_TEST_NET_CLIENT_H
#define SHOAL_TEST_NET_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/ws.h"

typedef struct tclient {
    int fd;
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    shoal_ws *ws;
    uint16_t port;
    uint8_t in[16384]; /* received, not yet fed to ws */
    size_t in_len, in_off;
    unsigned long tls_error; /* OpenSSL error code of a failed handshake */
    char error[512];
} tclient;

/* TLS options; zero for "OpenSSL's defaults". */
typedef struct tc_tls {
    const char *ca_path; /* trust anchor (the self-signed certificate) */
    int max_version;     /* e.g. TLS1_1_VERSION */
    const char *ciphers; /* TLS 1.2 cipher list */
    int security_level_0;
    int min_version;      /* e.g. TLS1_3_VERSION */
    SSL_SESSION *session; /* offered for resumption (SSL_session_reused tells) */
} tc_tls;

/* Connects to 127.0.0.1:port with send/receive timeouts of timeout_ms;
 * over TLS (verifying the certificate for "localhost") when tls is not
 * NULL. Returns 0, or -1 with tc->error (and tc->tls_error) set. */
int tc_connect(tclient *tc, uint16_t port, const tc_tls *tls, int timeout_ms);
void tc_close(tclient *tc);

/* Raw bytes. tc_read returns the count, 0 at end of stream, -1 on error or
 * timeout. */
int tc_write_all(tclient *tc, const void *buf, size_t len);
long tc_read(tclient *tc, void *buf, size_t len);

/* WebSocket opening handshake on a connected client. subprotocol NULL:
 * none requested. max_frame_send 0: one frame per message. Returns
 * SHOAL_OK when open; otherwise the shoal_ws_feed error, and *http_status
 * (may be NULL) holds the server's status code. */
shoal_err tc_ws_open(tclient *tc, const char *path, const char *subprotocol, size_t max_frame_send,
                     int *http_status);

/* Connect plus handshake at SHOAL_NET_WS_PATH with subprotocol
 * SHOAL_NET_SUBPROTOCOL. */
shoal_err tc_session(tclient *tc, uint16_t port, const tc_tls *tls, size_t max_frame_send);

shoal_err tc_ws_send(tclient *tc, const void *data, size_t len);
shoal_err tc_ws_send_text(tclient *tc, const char *text);
shoal_err tc_ws_close(tclient *tc, uint16_t code, const char *reason);

/* One event from the server; data is malloc'd (free() it), NUL-terminated. */
typedef struct tc_event {
    shoal_ws_event_kind kind;
    uint8_t *data;
    size_t len;
    uint16_t close_code;
} tc_event;
shoal_err tc_ws_next(tclient *tc, tc_event *ev);

/* One HTTP/1.1 request on a connected client (keep-alive). The response
 * head goes to head (NUL-terminated); the body, if any (never for HEAD),
 * is malloc'd. */
typedef struct tc_http_response {
    int status;
    char head[8192];
    uint8_t *body;
    size_t body_len;
} tc_http_response;
int tc_http(tclient *tc, const char *method, const char *path, tc_http_response *out);
/* Value of header `name` (case-insensitive) in a response head, copied to
 * out; NULL when absent. */
const char *tc_http_header(const tc_http_response *r, const char *name, char *out, size_t size);

#endif
