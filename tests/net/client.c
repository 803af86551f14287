#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "shoal/net.h"

static int fail(tclient *tc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tc->error, sizeof tc->error, fmt, ap);
    va_end(ap);
    return -1;
}

int tc_connect(tclient *tc, uint16_t port, const tc_tls *tls, int timeout_ms)
{
    memset(tc, 0, sizeof *tc);
    tc->fd = -1;
    tc->port = port;
    tc->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (tc->fd < 0)
        return fail(tc, "socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int one = 1;
    if (setsockopt(tc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) ||
        setsockopt(tc->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) ||
        setsockopt(tc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
        return fail(tc, "setsockopt: %s", strerror(errno));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(tc->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return fail(tc, "connect to 127.0.0.1:%u: %s", (unsigned)port, strerror(errno));
    if (!tls)
        return 0;

    ERR_clear_error();
    tc->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!tc->ssl_ctx)
        return fail(tc, "SSL_CTX_new failed");
    if (tls->ca_path) {
        if (SSL_CTX_load_verify_locations(tc->ssl_ctx, tls->ca_path, NULL) != 1)
            return fail(tc, "cannot load %s as trust anchor", tls->ca_path);
        SSL_CTX_set_verify(tc->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    /* A server that closes TCP without close_notify reads as end of
     * stream, as it would for a browser. */
    SSL_CTX_set_options(tc->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (tls->security_level_0)
        SSL_CTX_set_security_level(tc->ssl_ctx, 0);
    if (tls->max_version && SSL_CTX_set_max_proto_version(tc->ssl_ctx, tls->max_version) != 1)
        return fail(tc, "cannot set max TLS version");
    if (tls->min_version && SSL_CTX_set_min_proto_version(tc->ssl_ctx, tls->min_version) != 1)
        return fail(tc, "cannot set min TLS version");
    if (tls->ciphers && SSL_CTX_set_cipher_list(tc->ssl_ctx, tls->ciphers) != 1)
        return fail(tc, "cannot set cipher list %s", tls->ciphers);
    tc->ssl = SSL_new(tc->ssl_ctx);
    if (!tc->ssl || SSL_set_fd(tc->ssl, tc->fd) != 1 ||
        SSL_set_tlsext_host_name(tc->ssl, "localhost") != 1 ||
        SSL_set1_host(tc->ssl, "localhost") != 1 ||
        (tls->session && SSL_set_session(tc->ssl, tls->session) != 1))
        return fail(tc, "SSL set-up failed");
    int rc = SSL_connect(tc->ssl);
    if (rc != 1) {
        int e = SSL_get_error(tc->ssl, rc);
        tc->tls_error = ERR_peek_error();
        char why[256] = "";
        if (tc->tls_error)
            ERR_error_string_n(tc->tls_error, why, sizeof why);
        ERR_clear_error();
        return fail(tc, "TLS handshake with 127.0.0.1:%u failed (SSL_get_error %d, errno %s): %s",
                    (unsigned)port, e, strerror(errno), why);
    }
    return 0;
}

void tc_close(tclient *tc)
{
    shoal_ws_free(tc->ws);
    tc->ws = NULL;
    if (tc->ssl)
        SSL_free(tc->ssl);
    tc->ssl = NULL;
    if (tc->ssl_ctx)
        SSL_CTX_free(tc->ssl_ctx);
    tc->ssl_ctx = NULL;
    if (tc->fd >= 0)
        close(tc->fd);
    tc->fd = -1;
}

int tc_write_all(tclient *tc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        long n;
        if (tc->ssl) {
            int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
            n = SSL_write(tc->ssl, p, chunk);
            if (n <= 0) {
                ERR_clear_error();
                return fail(tc, "SSL_write failed: %s", strerror(errno));
            }
        } else {
            n = send(tc->fd, p, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return fail(tc, "send: %s", strerror(errno));
            }
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

long tc_read(tclient *tc, void *buf, size_t len)
{
    for (;;) {
        if (tc->ssl) {
            int n = SSL_read(tc->ssl, buf, len > (1u << 30) ? (1 << 30) : (int)len);
            if (n > 0)
                return n;
            int e = SSL_get_error(tc->ssl, n);
            ERR_clear_error();
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            /* A peer that closes TCP without close_notify: end of stream. */
            if (e == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET))
                return 0;
            fail(tc, "SSL_read failed (SSL_get_error %d): %s", e,
                 errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        ssize_t n = recv(tc->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET)
            return 0;
        fail(tc, "recv: %s", errno == EAGAIN ? "timed out" : strerror(errno));
        return -1;
    }
}

static shoal_err rand_fill(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    return RAND_bytes(buf, (int)len) == 1 ? SHOAL_OK : SHOAL_ECRYPTO;
}

static shoal_err flush(tclient *tc)
{
    size_t n;
    const uint8_t *p;
    while ((p = shoal_ws_pending(tc->ws, &n)) != NULL && n > 0) {
        if (tc_write_all(tc, p, n))
            return SHOAL_EIO;
        if (shoal_ws_consume(tc->ws, n) != SHOAL_OK)
            return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

/* Feeds buffered input, reading more as needed, until one event. */
static shoal_err next_event(tclient *tc, shoal_ws_event *ev)
{
    shoal_errinfo ei;
    for (;;) {
        if (tc->in_off < tc->in_len || tc->in_len == 0) {
            size_t used = 0;
            ei.msg[0] = '\0';
            shoal_err err =
                shoal_ws_feed(tc->ws, tc->in + tc->in_off, tc->in_len - tc->in_off, &used, ev, &ei);
            tc->in_off += used;
            if (tc->in_off == tc->in_len)
                tc->in_off = tc->in_len = 0;
            if (err == SHOAL_ROW) {
                shoal_err ferr = flush(tc); /* pongs, the Close echo */
                (void)ferr;
                return SHOAL_ROW;
            }
            if (err != SHOAL_OK) {
                fail(tc, "ws feed: %s: %s", shoal_err_name(err), ei.msg);
                (void)flush(tc);
                return err;
            }
        }
        long n = tc_read(tc, tc->in, sizeof tc->in);
        if (n == 0) {
            fail(tc, "connection closed by the server");
            return SHOAL_ECLOSED;
        }
        if (n < 0)
            return SHOAL_ETIMEDOUT;
        tc->in_off = 0;
        tc->in_len = (size_t)n;
    }
}

shoal_err tc_ws_open(tclient *tc, const char *path, const char *subprotocol, size_t max_frame_send,
                     int *http_status)
{
    char host[32];
    snprintf(host, sizeof host, "localhost:%u", (unsigned)tc->port);
    shoal_ws_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.host = host;
    cfg.path = path;
    if (RAND_bytes(cfg.key_nonce, sizeof cfg.key_nonce) != 1)
        return SHOAL_ECRYPTO;
    cfg.random = rand_fill;
    cfg.subprotocol = subprotocol;
    cfg.max_message = (size_t)16 << 20;
    cfg.max_frame_send = max_frame_send;
    shoal_errinfo ei;
    shoal_err err = shoal_ws_new(&cfg, &tc->ws, &ei);
    if (err) {
        fail(tc, "shoal_ws_new: %s", ei.msg);
        return err;
    }
    err = flush(tc);
    if (err)
        return err;
    shoal_ws_event ev;
    err = next_event(tc, &ev);
    if (http_status)
        *http_status = shoal_ws_http_status(tc->ws);
    if (err == SHOAL_ROW && ev.kind == SHOAL_WS_EVENT_OPEN)
        return SHOAL_OK;
    if (err == SHOAL_ROW) {
        fail(tc, "first event was %d, not OPEN", (int)ev.kind);
        return SHOAL_EPROTO;
    }
    return err;
}

shoal_err tc_session(tclient *tc, uint16_t port, const tc_tls *tls, size_t max_frame_send)
{
    if (tc_connect(tc, port, tls, 10000))
        return SHOAL_EIO;
    return tc_ws_open(tc, SHOAL_NET_WS_PATH, SHOAL_NET_SUBPROTOCOL, max_frame_send, NULL);
}

shoal_err tc_ws_send(tclient *tc, const void *data, size_t len)
{
    shoal_errinfo ei;
    shoal_err err = shoal_ws_send_binary(tc->ws, data, len, &ei);
    if (err) {
        fail(tc, "send_binary: %s", ei.msg);
        return err;
    }
    return flush(tc);
}

shoal_err tc_ws_send_text(tclient *tc, const char *text)
{
    shoal_errinfo ei;
    shoal_err err = shoal_ws_send_text(tc->ws, text, strlen(text), &ei);
    if (err)
        return err;
    return flush(tc);
}

shoal_err tc_ws_close(tclient *tc, uint16_t code, const char *reason)
{
    shoal_errinfo ei;
    shoal_err err = shoal_ws_close(tc->ws, code, reason, &ei);
    if (err)
        return err;
    return flush(tc);
}

shoal_err tc_ws_next(tclient *tc, tc_event *out)
{
    memset(out, 0, sizeof *out);
    shoal_ws_event ev;
    shoal_err err = next_event(tc, &ev);
    if (err != SHOAL_ROW)
        return err;
    out->kind = ev.kind;
    out->len = ev.len;
    out->close_code = ev.close_code;
    out->data = malloc(ev.len + 1);
    if (!out->data)
        return SHOAL_ENOMEM;
    memcpy(out->data, ev.data, ev.len);
    out->data[ev.len] = '\0';
    return SHOAL_OK;
}

int tc_http(tclient *tc, const char *method, const char *path, tc_http_response *out)
{
    memset(out, 0, sizeof *out);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost:%u\r\nUser-Agent: shoal-test\r\n\r\n",
                     method, path, (unsigned)tc->port);
    if (tc_write_all(tc, req, (size_t)n))
        return -1;

    /* Read the head byte by byte from the buffer so nothing past it is
     * consumed. */
    size_t head_len = 0;
    for (;;) {
        if (tc->in_off == tc->in_len) {
            long got = tc_read(tc, tc->in, sizeof tc->in);
            if (got <= 0)
                return fail(tc, "HTTP: connection ended inside the response head (%zu bytes)",
                            head_len);
            tc->in_off = 0;
            tc->in_len = (size_t)got;
        }
        if (head_len + 1 >= sizeof out->head)
            return fail(tc, "HTTP: response head too long");
        out->head[head_len++] = (char)tc->in[tc->in_off++];
        out->head[head_len] = '\0';
        if (head_len >= 4 && !memcmp(out->head + head_len - 4, "\r\n\r\n", 4))
            break;
    }
    if (sscanf(out->head, "HTTP/1.1 %d", &out->status) != 1)
        return fail(tc, "HTTP: bad status line: %.60s", out->head);
    if (!strcmp(method, "HEAD") || out->status == 204 || out->status == 304)
        return 0;

    char value[64];
    long long length = -1;
    if (tc_http_header(out, "content-length", value, sizeof value))
        length = atoll(value);
    size_t cap = length >= 0 ? (size_t)length + 1 : 65536;
    out->body = malloc(cap);
    if (!out->body)
        return fail(tc, "out of memory");
    for (;;) {
        if (length >= 0 && out->body_len == (size_t)length)
            break;
        if (tc->in_off == tc->in_len) {
            long got = tc_read(tc, tc->in, sizeof tc->in);
            if (got < 0)
                return -1;
            if (got == 0) {
                if (length < 0)
                    break;
                return fail(tc, "HTTP: body ended after %zu of %lld bytes", out->body_len, length);
            }
            tc->in_off = 0;
            tc->in_len = (size_t)got;
        }
        size_t take = tc->in_len - tc->in_off;
        if (length >= 0 && take > (size_t)length - out->body_len)
            take = (size_t)length - out->body_len;
        if (out->body_len + take + 1 > cap) {
            cap = (out->body_len + take + 1) * 2;
            uint8_t *grown = realloc(out->body, cap);
            if (!grown)
                return fail(tc, "out of memory");
            out->body = grown;
        }
        memcpy(out->body + out->body_len, tc->in + tc->in_off, take);
        out->body_len += take;
        tc->in_off += take;
    }
    out->body[out->body_len] = '\0';
    return 0;
}

const char *tc_http_header(const tc_http_response *r, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        if (!strncasecmp(line, name, nlen) && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t n = end ? (size_t)(end - v) : strlen(v);
            if (n >= size)
                n = size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        line = strstr(line, "\r\n");
    }
    return NULL;
}
