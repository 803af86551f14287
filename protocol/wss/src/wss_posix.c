/* The blocking WebSocket-over-TLS client for POSIX (see shoal/wss.h): a
 * non-blocking TCP socket, poll() with deadlines, shoal_tls for TLS and
 * shoal_ws for the framing. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

#include "shoal/alloc.h"
#include "shoal/file.h"
#include "shoal/tls.h"
#include "shoal/ws.h"
#include "shoal/wss.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* there SO_NOSIGPIPE is set on the socket instead */
#endif

/* Largest CA file read: a bundle of a few hundred certificates. */
#define WSS_MAX_CA_FILE ((size_t)1 << 20)
/* One TLS record's worth of plaintext per read. */
#define WSS_IN_CAP 16384
/* How long closing may wait for the socket to take a queued Close or
 * close_notify when the caller's deadline has already passed. */
#define WSS_FINISH_GRACE_MS 200
#define WSS_PEER_LEN        300

struct shoal_wss {
    int fd;
    shoal_tls *tls;
    shoal_ws *ws;
    int last_errno;     /* of the socket call that failed */
    bool server_closed; /* the server's Close arrived */
    bool ended;         /* socket closed: by close, abort or a final error */
    bool feed_failed;   /* the last error came from shoal_ws_feed */
    uint16_t close_code;
    char close_reason[SHOAL_WS_MAX_CLOSE_REASON + 1];
    char peer[WSS_PEER_LEN]; /* "host:port" for messages */
    char path[256];
    size_t in_off, in_len;
    uint8_t in[WSS_IN_CAP];
};

/* ---- time ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -1: no deadline. */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* poll() timeout for what is left until deadline (0 when it passed). */
static int remaining_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ---- socket callbacks for shoal_tls ---- */

/* One send or receive, as shoal_tls wants it: bytes moved, or AGAIN,
 * CLOSED (the peer's orderly end) or ERROR with errno kept. */
static int sock_io(shoal_wss *w, uint8_t *buf, size_t len, bool sending)
{
    if (len > INT_MAX)
        len = INT_MAX;
    for (;;) {
        ssize_t n = sending ? send(w->fd, buf, len, MSG_NOSIGNAL) : recv(w->fd, buf, len, 0);
        if (n > 0)
            return (int)n;
        if (n == 0)
            return sending ? SHOAL_TLS_IO_AGAIN : SHOAL_TLS_IO_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SHOAL_TLS_IO_AGAIN;
        w->last_errno = errno;
        return SHOAL_TLS_IO_ERROR;
    }
}

static int sock_send(void *ctx, const uint8_t *buf, size_t len)
{
    return sock_io(ctx, (uint8_t *)buf, len, true);
}

static int sock_recv(void *ctx, uint8_t *buf, size_t len)
{
    return sock_io(ctx, buf, len, false);
}

static shoal_err ws_random(void *ctx, uint8_t *buf, size_t len)
{
    return shoal_tls_random(ctx, buf, len);
}

/* ---- waiting ---- */

/* Waits until the socket is ready for `events` or the deadline passes.
 * Errors and hang-ups count as ready: the next call reports them. */
static shoal_err wait_socket(shoal_wss *w, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = w->fd, .events = events, .revents = 0};
        int timeout = remaining_ms(deadline);
        int n = poll(&pfd, 1, timeout);
        if (n > 0)
            return SHOAL_OK;
        if (n == 0)
            return SHOAL_ETIMEDOUT;
        if (errno != EINTR) {
            w->last_errno = errno;
            return SHOAL_EIO;
        }
    }
}

static shoal_err timed_out(const shoal_wss *w, int timeout_ms, const char *phase, const char *hint,
                           shoal_errinfo *ei)
{
    return shoal_errinfo_set(ei, SHOAL_ETIMEDOUT, "%s: timed out after %d ms %s%s", w->peer,
                             timeout_ms, phase, hint);
}

/* Rewrites a transport failure reported by shoal_tls with the socket's
 * errno; other errors keep shoal_tls's message (which names the peer). */
static shoal_err tls_error(shoal_wss *w, shoal_err err, const char *phase, shoal_errinfo *ei)
{
    if (err == SHOAL_EIO && w->last_errno != 0) {
        const char *hint = w->last_errno == ECONNRESET || w->last_errno == EPIPE
                               ? "; the server dropped the connection"
                               : "";
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: connection lost %s: %s%s", w->peer, phase,
                                 strerror(w->last_errno), hint);
    }
    return err;
}

/* Closes the socket; the objects stay for shoal_wss_close_code and free. */
static void end_socket(shoal_wss *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    w->ended = true;
}

/* ---- sending ---- */

/* Writes bytes through TLS and flushes them, waiting until the deadline.
 * *sent counts the bytes TLS took (so the caller can consume them from
 * its queue even when this fails). */
static shoal_err write_bytes(shoal_wss *w, const uint8_t *p, size_t n, size_t *sent,
                             int64_t deadline, int timeout_ms, const char *phase, shoal_errinfo *ei)
{
    *sent = 0;
    for (;;) {
        shoal_err err;
        if (*sent < n) {
            size_t took = 0;
            err = shoal_tls_write(w->tls, p + *sent, n - *sent, &took, ei);
            *sent += took;
            if (err == SHOAL_OK)
                continue;
        } else {
            err = shoal_tls_flush(w->tls, ei);
            if (err == SHOAL_OK)
                return SHOAL_OK;
        }
        if (err != SHOAL_EAGAIN)
            return tls_error(w, err, phase, ei);
        err = wait_socket(w, shoal_tls_want_write(w->tls) ? POLLOUT : POLLIN, deadline);
        if (err == SHOAL_ETIMEDOUT)
            return timed_out(w, timeout_ms, phase, "; the server is not reading", ei);
        if (err != SHOAL_OK)
            return tls_error(w, err, phase, ei);
    }
}

/* Sends everything the WebSocket object has queued. */
static shoal_err flush_ws(shoal_wss *w, int64_t deadline, int timeout_ms, const char *phase,
                          shoal_errinfo *ei)
{
    for (;;) {
        size_t n = 0;
        const uint8_t *p = shoal_ws_pending(w->ws, &n);
        if (n == 0)
            return SHOAL_OK;
        size_t sent = 0;
        shoal_err err = write_bytes(w, p, n, &sent, deadline, timeout_ms, phase, ei);
        if (sent > 0 && shoal_ws_consume(w->ws, sent) != SHOAL_OK)
            return shoal_errinfo_set(ei, SHOAL_ESTATE, "%s: internal error consuming output",
                                     w->peer);
        if (err != SHOAL_OK)
            return err;
    }
}

/* Best effort at the end: push out a queued Close and the close_notify
 * within the deadline (or a short grace), then close the socket. */
static void finish(shoal_wss *w, int64_t deadline)
{
    if (w->fd < 0) {
        w->ended = true;
        return;
    }
    int64_t grace = now_ms() + WSS_FINISH_GRACE_MS;
    if (deadline < 0 || deadline < grace)
        deadline = grace;
    shoal_errinfo ignored;
    if (flush_ws(w, deadline, WSS_FINISH_GRACE_MS, "closing", &ignored) == SHOAL_OK) {
        for (;;) {
            shoal_err err = shoal_tls_close_notify(w->tls, &ignored);
            if (err != SHOAL_EAGAIN)
                break;
            if (wait_socket(w, POLLOUT, deadline) != SHOAL_OK)
                break;
        }
    }
    end_socket(w);
}

/* ---- receiving ---- */

/* Sends what is queued (Pongs, the echo of a Close, the rest of a send
 * that timed out) as far as the socket takes it without waiting.
 * SHOAL_OK: all sent; SHOAL_EAGAIN: some is left; or an error. */
static shoal_err flush_ws_now(shoal_wss *w, shoal_errinfo *ei)
{
    size_t n = 0;
    const uint8_t *p = shoal_ws_pending(w->ws, &n);
    while (n > 0) {
        size_t took = 0;
        shoal_err err = shoal_tls_write(w->tls, p, n, &took, ei);
        if (took > 0 && shoal_ws_consume(w->ws, took) != SHOAL_OK)
            return shoal_errinfo_set(ei, SHOAL_ESTATE, "%s: internal error consuming output",
                                     w->peer);
        if (err != SHOAL_OK)
            return err;
        p = shoal_ws_pending(w->ws, &n);
    }
    return shoal_tls_flush(w->tls, ei);
}

/* Produces the next WebSocket event (SHOAL_ROW), reading as needed until
 * the deadline. Errors from shoal_ws_feed come back with its message,
 * prefixed by the peer. */
static shoal_err next_event(shoal_wss *w, shoal_ws_event *ev, int64_t deadline, int timeout_ms,
                            const char *phase, shoal_errinfo *ei)
{
    for (;;) {
        if (w->in_off < w->in_len) {
            size_t used = 0;
            shoal_errinfo wei;
            wei.msg[0] = '\0';
            shoal_err err =
                shoal_ws_feed(w->ws, w->in + w->in_off, w->in_len - w->in_off, &used, ev, &wei);
            w->in_off += used;
            if (err == SHOAL_ROW)
                return SHOAL_ROW;
            if (err != SHOAL_OK) {
                w->feed_failed = true;
                return shoal_errinfo_set(ei, err, "%s: %s", w->peer, wei.msg);
            }
            continue;
        }
        shoal_err err = flush_ws_now(w, ei);
        if (err != SHOAL_OK && err != SHOAL_EAGAIN)
            return tls_error(w, err, phase, ei);
        bool output_left = err == SHOAL_EAGAIN;
        size_t got = 0;
        err = shoal_tls_read(w->tls, w->in, sizeof w->in, &got, ei);
        if (err == SHOAL_OK) {
            w->in_off = 0;
            w->in_len = got;
            continue;
        }
        if (err == SHOAL_ECLOSED)
            return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                     "%s: the server closed the connection %s without a "
                                     "WebSocket Close",
                                     w->peer, phase);
        if (err != SHOAL_EAGAIN)
            return tls_error(w, err, phase, ei);
        short events = shoal_tls_want_write(w->tls) ? POLLOUT : POLLIN;
        if (output_left)
            events |= POLLOUT;
        err = wait_socket(w, events, deadline);
        if (err == SHOAL_ETIMEDOUT)
            return timed_out(w, timeout_ms, phase, "", ei);
        if (err != SHOAL_OK)
            return tls_error(w, err, phase, ei);
    }
}

static void record_close(shoal_wss *w, const shoal_ws_event *ev)
{
    w->server_closed = true;
    w->close_code = ev->close_code;
    size_t n = ev->len < SHOAL_WS_MAX_CLOSE_REASON ? ev->len : SHOAL_WS_MAX_CLOSE_REASON;
    memcpy(w->close_reason, ev->data, n);
    w->close_reason[n] = '\0';
}

/* ---- connecting ---- */

static bool set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return false;
    flags = fcntl(fd, F_GETFD);
    return flags >= 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0;
}

/* One address: a non-blocking connect finished with poll. Returns the
 * socket, or -1 with *err_no set (ETIMEDOUT when the deadline passed). */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *err_no)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        *err_no = errno;
        return -1;
    }
    if (!set_nonblocking(fd)) {
        *err_no = errno;
        close(fd);
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            *err_no = errno;
            close(fd);
            return -1;
        }
        for (;;) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
            int n = poll(&pfd, 1, remaining_ms(deadline));
            if (n > 0)
                break;
            if (n == 0 || errno != EINTR) {
                *err_no = n == 0 ? ETIMEDOUT : errno;
                close(fd);
                return -1;
            }
        }
        int so_error = 0;
        socklen_t len = sizeof so_error;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0)
            so_error = errno;
        if (so_error != 0) {
            *err_no = so_error;
            close(fd);
            return -1;
        }
    }
    int one = 1;
    /* Small request/response messages: do not wait for Nagle. Failure only
     * costs latency. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    return fd;
}

static shoal_err tcp_connect(shoal_wss *w, const char *host, uint16_t port, int64_t deadline,
                             int timeout_ms, shoal_errinfo *ei)
{
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *list = NULL;
    int gai = getaddrinfo(host, service, &hints, &list);
    if (gai != 0) {
        if (gai == EAI_NONAME || gai == EAI_FAIL)
            return shoal_errinfo_set(ei, SHOAL_ENOTFOUND,
                                     "%s: cannot resolve host \"%s\": %s; check the host name",
                                     w->peer, host, gai_strerror(gai));
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot resolve host \"%s\": %s", w->peer, host,
                                 gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
    }
    int err_no = 0;
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        w->fd = connect_one(ai, deadline, &err_no);
        if (w->fd >= 0 || err_no == ETIMEDOUT)
            break;
    }
    freeaddrinfo(list);
    if (w->fd >= 0)
        return SHOAL_OK;
    if (err_no == ETIMEDOUT)
        return timed_out(w, timeout_ms, "during the TCP connect",
                         "; check the address, the port and any firewall", ei);
    if (err_no == ECONNREFUSED)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "%s: connect failed: %s; is the server running and listening on "
                                 "port %u?",
                                 w->peer, strerror(err_no), (unsigned)port);
    return shoal_errinfo_set(ei, SHOAL_EIO,
                             "%s: connect failed: %s; check the address and the "
                             "network",
                             w->peer, strerror(err_no));
}

static shoal_err tls_connect(shoal_wss *w, const shoal_wss_config *cfg, const char *server_name,
                             int64_t deadline, int timeout_ms, shoal_errinfo *ei)
{
    char *ca_text = NULL;
    char ca_label[WSS_PEER_LEN];
    const char *ca_pem = cfg->ca_pem;
    if (cfg->ca_file) {
        shoal_err err =
            shoal_file_read(cfg->ca_file, "the CA file",
                            "check ca_file (the server's certificate or its CA, in PEM)",
                            WSS_MAX_CA_FILE, &ca_text, NULL, ei);
        if (err != SHOAL_OK)
            return err;
        ca_pem = ca_text;
        snprintf(ca_label, sizeof ca_label, "CA file %s", cfg->ca_file);
    } else {
        snprintf(ca_label, sizeof ca_label, "CA certificates given in ca_pem");
    }
    shoal_tls_config tc;
    memset(&tc, 0, sizeof tc);
    tc.server_name = server_name;
    tc.ca_pem = ca_pem;
    tc.ca_label = ca_label;
    tc.peer_label = w->peer;
    tc.send = sock_send;
    tc.recv = sock_recv;
    tc.io_ctx = w;
    shoal_err err = shoal_tls_new(&tc, &w->tls, ei);
    shoal_free(ca_text);
    if (err != SHOAL_OK)
        return err;

    err = tcp_connect(w, cfg->host, cfg->port, deadline, timeout_ms, ei);
    if (err != SHOAL_OK)
        return err;
    for (;;) {
        err = shoal_tls_handshake(w->tls, ei);
        if (err == SHOAL_OK)
            return SHOAL_OK;
        if (err != SHOAL_EAGAIN)
            return tls_error(w, err, "during the TLS handshake", ei);
        err = wait_socket(w, shoal_tls_want_write(w->tls) ? POLLOUT : POLLIN, deadline);
        if (err == SHOAL_ETIMEDOUT)
            return timed_out(w, timeout_ms, "during the TLS handshake",
                             "; the port accepts connections but no TLS server answered", ei);
        if (err != SHOAL_OK)
            return tls_error(w, err, "during the TLS handshake", ei);
    }
}

static shoal_err ws_upgrade(shoal_wss *w, const shoal_wss_config *cfg, const char *server_name,
                            int64_t deadline, int timeout_ms, shoal_errinfo *ei)
{
    /* The Host header names what SNI named; an IPv6 literal needs
     * brackets. */
    char host_header[WSS_PEER_LEN];
    bool v6 = strchr(server_name, ':') != NULL;
    snprintf(host_header, sizeof host_header, "%s%s%s:%u", v6 ? "[" : "", server_name,
             v6 ? "]" : "", (unsigned)cfg->port);

    shoal_ws_config wc;
    memset(&wc, 0, sizeof wc);
    wc.host = host_header;
    wc.path = w->path;
    wc.random = ws_random;
    wc.random_ctx = w->tls;
    wc.subprotocol = cfg->subprotocol == NULL      ? SHOAL_PROTOCOL_SUBPROTOCOL
                     : cfg->subprotocol[0] == '\0' ? NULL
                                                   : cfg->subprotocol;
    wc.headers = cfg->headers;
    wc.header_count = cfg->header_count;
    wc.max_message = cfg->max_message;
    wc.max_frame_send = cfg->max_frame_send;
    if (shoal_tls_random(w->tls, wc.key_nonce, sizeof wc.key_nonce) != SHOAL_OK)
        return shoal_errinfo_set(
            ei, SHOAL_ECRYPTO, "%s: the random generator failed making the WebSocket key", w->peer);
    shoal_err err = shoal_ws_new(&wc, &w->ws, ei);
    mbedtls_platform_zeroize(wc.key_nonce, sizeof wc.key_nonce);
    if (err != SHOAL_OK)
        return err;

    err = flush_ws(w, deadline, timeout_ms, "during the WebSocket upgrade", ei);
    if (err != SHOAL_OK)
        return err;
    for (;;) {
        shoal_ws_event ev;
        err = next_event(w, &ev, deadline, timeout_ms, "during the WebSocket upgrade", ei);
        if (err == SHOAL_ROW && ev.kind == SHOAL_WS_EVENT_OPEN)
            return SHOAL_OK;
        if (err == SHOAL_ROW)
            continue; /* nothing else can come before OPEN */
        if (w->feed_failed && err != SHOAL_ENOMEM) {
            /* ei: "host:port: websocket handshake: ..." from shoal_ws. */
            char detail[SHOAL_ERRINFO_LEN];
            snprintf(detail, sizeof detail, "%s", ei ? ei->msg : "");
            const char *rest = strncmp(detail, w->peer, strlen(w->peer)) == 0
                                   ? detail + strlen(w->peer) + 2
                                   : detail;
            return shoal_errinfo_set(ei, err, "%s: WebSocket upgrade of %s refused: %s", w->peer,
                                     w->path, rest);
        }
        if (err == SHOAL_ECLOSED)
            return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                     "%s: the server closed the connection during the WebSocket "
                                     "upgrade of %s without answering; check the path and the "
                                     "subprotocol (\"%s\")",
                                     w->peer, w->path, wc.subprotocol ? wc.subprotocol : "");
        return err;
    }
}

shoal_err shoal_wss_connect(const shoal_wss_config *cfg, shoal_wss **out, shoal_errinfo *ei)
{
    if (out == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: out is NULL");
    *out = NULL;
    if (cfg == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: config is NULL");
    if (cfg->host == NULL || cfg->host[0] == '\0')
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: host is required");
    if (cfg->port == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: %s: port is required", cfg->host);
    if ((cfg->ca_file == NULL) == (cfg->ca_pem == NULL))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "wss: %s:%u: give exactly one of ca_file and ca_pem (the CA "
                                 "certificate the server's certificate must chain to)",
                                 cfg->host, (unsigned)cfg->port);
    const char *path = cfg->path ? cfg->path : SHOAL_PROTOCOL_WS_PATH;
    if (strlen(path) >= sizeof((shoal_wss *)0)->path)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: path is longer than %zu characters",
                                 sizeof((shoal_wss *)0)->path - 1);
    if (cfg->timeout_ms < 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "wss: timeout_ms must be positive (0 for the default)");
    int timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : SHOAL_WSS_DEFAULT_TIMEOUT_MS;
    int64_t deadline = deadline_after(timeout_ms);
    const char *server_name = cfg->server_name ? cfg->server_name : cfg->host;

    shoal_wss *w = shoal_calloc(1, sizeof *w);
    if (w == NULL)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "wss: out of memory");
    w->fd = -1;
    bool v6 = strchr(cfg->host, ':') != NULL;
    snprintf(w->peer, sizeof w->peer, "%s%s%s:%u", v6 ? "[" : "", cfg->host, v6 ? "]" : "",
             (unsigned)cfg->port);
    snprintf(w->path, sizeof w->path, "%s", path);

    shoal_err err = tls_connect(w, cfg, server_name, deadline, timeout_ms, ei);
    if (err == SHOAL_OK)
        err = ws_upgrade(w, cfg, server_name, deadline, timeout_ms, ei);
    if (err != SHOAL_OK) {
        shoal_wss_free(w);
        return err;
    }
    *out = w;
    return SHOAL_OK;
}

/* ---- after the upgrade ---- */

static shoal_err check_usable(const shoal_wss *w, const char *doing, shoal_errinfo *ei)
{
    if (!w->ended)
        return SHOAL_OK;
    if (w->server_closed)
        return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                 "%s: cannot %s: the server closed the WebSocket (code %u%s%s)",
                                 w->peer, doing, (unsigned)w->close_code,
                                 w->close_reason[0] ? ", " : "", w->close_reason);
    return shoal_errinfo_set(ei, SHOAL_ECLOSED, "%s: cannot %s: the connection is closed", w->peer,
                             doing);
}

shoal_err shoal_wss_send(shoal_wss *w, const uint8_t *data, size_t len, int timeout_ms,
                         shoal_errinfo *ei)
{
    if (w == NULL || (data == NULL && len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: send needs a connection and data");
    shoal_err err = check_usable(w, "send", ei);
    if (err != SHOAL_OK)
        return err;
    shoal_errinfo wei;
    err = shoal_ws_send_binary(w->ws, data ? data : (const uint8_t *)"", len, &wei);
    if (err != SHOAL_OK)
        return shoal_errinfo_set(ei, err, "%s: %s", w->peer, wei.msg);
    err = flush_ws(w, deadline_after(timeout_ms), timeout_ms, "sending a message", ei);
    if (err != SHOAL_OK && err != SHOAL_ETIMEDOUT)
        end_socket(w);
    return err;
}

shoal_err shoal_wss_write_raw(shoal_wss *w, const uint8_t *bytes, size_t len, int timeout_ms,
                              shoal_errinfo *ei)
{
    if (w == NULL || (bytes == NULL && len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: write_raw needs a connection and bytes");
    shoal_err err = check_usable(w, "write", ei);
    if (err != SHOAL_OK)
        return err;
    int64_t deadline = deadline_after(timeout_ms);
    err = flush_ws(w, deadline, timeout_ms, "writing raw bytes", ei);
    if (err == SHOAL_OK && len > 0) {
        size_t sent = 0;
        err = write_bytes(w, bytes, len, &sent, deadline, timeout_ms, "writing raw bytes", ei);
    }
    if (err != SHOAL_OK && err != SHOAL_ETIMEDOUT)
        end_socket(w);
    return err;
}

shoal_err shoal_wss_recv(shoal_wss *w, uint8_t **msg, size_t *len, int timeout_ms,
                         shoal_errinfo *ei)
{
    if (msg != NULL)
        *msg = NULL;
    if (len != NULL)
        *len = 0;
    if (w == NULL || msg == NULL || len == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "wss: recv needs a connection, msg and len");
    shoal_err err = check_usable(w, "receive", ei);
    if (err != SHOAL_OK)
        return err;
    int64_t deadline = deadline_after(timeout_ms);
    for (;;) {
        shoal_ws_event ev;
        err = next_event(w, &ev, deadline, timeout_ms, "waiting for a message", ei);
        if (err == SHOAL_ETIMEDOUT || err == SHOAL_ENOMEM)
            return err; /* nothing lost: the caller may call again */
        if (err != SHOAL_ROW) {
            /* shoal_ws may have queued a Close (1002, 1007, 1009). */
            finish(w, deadline);
            return err;
        }
        switch (ev.kind) {
        case SHOAL_WS_EVENT_BINARY: {
            uint8_t *copy = shoal_malloc(ev.len ? ev.len : 1);
            if (copy == NULL)
                /* The message is gone from shoal_ws: the stream lost it. */
                return shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                         "%s: out of memory for a %zu-byte message (dropped)",
                                         w->peer, ev.len);
            memcpy(copy, ev.data, ev.len);
            *msg = copy;
            *len = ev.len;
            /* A Pong for a Ping that came in the same read is queued:
             * send it now rather than at the next call. A failure shows
             * at the next call. */
            shoal_errinfo ignored;
            (void)flush_ws_now(w, &ignored);
            return SHOAL_OK;
        }
        case SHOAL_WS_EVENT_TEXT: {
            shoal_errinfo ignored;
            /* Fails only when a Close is already on its way: fine. */
            if (shoal_ws_close(w->ws, SHOAL_WS_CLOSE_UNSUPPORTED, "binary messages only",
                               &ignored) != SHOAL_OK)
                ignored.msg[0] = '\0';
            finish(w, deadline);
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "%s: the server sent a %zu-byte text message; Shoal "
                                     "messages are binary, so the connection was closed with "
                                     "1003",
                                     w->peer, ev.len);
        }
        case SHOAL_WS_EVENT_CLOSE:
            record_close(w, &ev);
            finish(w, deadline); /* sends the echo shoal_ws queued */
            return shoal_errinfo_set(
                ei, SHOAL_ECLOSED, "%s: the server closed the WebSocket with code %u%s%s%s",
                w->peer, (unsigned)w->close_code, w->close_reason[0] ? " (\"" : "", w->close_reason,
                w->close_reason[0] ? "\")" : "");
        case SHOAL_WS_EVENT_PONG:
        case SHOAL_WS_EVENT_OPEN:
            break;
        }
    }
}

uint16_t shoal_wss_close_code(const shoal_wss *w, const char **reason)
{
    if (reason != NULL)
        *reason = (w != NULL && w->server_closed) ? w->close_reason : "";
    return (w != NULL && w->server_closed) ? w->close_code : 0;
}

shoal_err shoal_wss_close(shoal_wss *w, uint16_t code, int timeout_ms)
{
    if (w == NULL)
        return SHOAL_EINVAL;
    if (w->ended)
        return w->server_closed ? SHOAL_OK : SHOAL_ECLOSED;
    int64_t deadline = deadline_after(timeout_ms);
    shoal_errinfo ignored;
    shoal_err err = shoal_ws_close(w->ws, code, NULL, &ignored);
    if (err == SHOAL_EINVAL)
        return err;
    if (err != SHOAL_OK) {
        finish(w, deadline);
        return SHOAL_ECLOSED;
    }
    err = flush_ws(w, deadline, timeout_ms, "closing", &ignored);
    while (err == SHOAL_OK) {
        shoal_ws_event ev;
        err = next_event(w, &ev, deadline, timeout_ms, "waiting for the server's Close", &ignored);
        if (err == SHOAL_ROW && ev.kind == SHOAL_WS_EVENT_CLOSE) {
            record_close(w, &ev);
            finish(w, deadline);
            return SHOAL_OK;
        }
        if (err == SHOAL_ROW)
            err = SHOAL_OK; /* data still in flight: dropped */
    }
    finish(w, deadline);
    return err == SHOAL_ETIMEDOUT ? SHOAL_ETIMEDOUT : SHOAL_ECLOSED;
}

void shoal_wss_abort(shoal_wss *w)
{
    if (w == NULL || w->fd < 0) {
        if (w)
            w->ended = true;
        return;
    }
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(w->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    end_socket(w);
}

void shoal_wss_free(shoal_wss *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        close(w->fd);
    shoal_ws_free(w->ws);
    shoal_tls_free(w->tls);
    mbedtls_platform_zeroize(w, sizeof *w); /* in[] held plaintext */
    shoal_free(w);
}

const char *shoal_wss_ciphersuite(const shoal_wss *w)
{
    return w ? shoal_tls_ciphersuite(w->tls) : "";
}
