/* Plain HTTP/1.1 on the session port: GET and HEAD answered by
 * handlers.on_http (health, metrics, model download), bodies written in
 * pieces of NET_PIECE on LWS_CALLBACK_HTTP_WRITEABLE. */
#include "net_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "shoal/alloc.h"

void shoal_net_http_reset(net_conn *c)
{
    shoal_free(c->body);
    c->body = NULL;
    c->body_len = c->body_off = 0;
}

static int token_char(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Appends one "Name: value" header; a malformed one is skipped with a
 * warning rather than sent. Returns non-zero only when the buffer is full. */
static int add_extra_header(net_conn *c, const char *line, unsigned char **p, unsigned char *end)
{
    char name[66];
    const char *colon = strchr(line, ':');
    size_t n = colon ? (size_t)(colon - line) : 0;
    int ok = n > 0 && n < sizeof name - 1;
    for (size_t i = 0; ok && i < n; i++) {
        if (!token_char((unsigned char)line[i]))
            ok = 0;
        else
            name[i] = (char)tolower((unsigned char)line[i]);
    }
    const char *value = ok ? colon + 1 : "";
    while (*value == ' ' || *value == '\t')
        value++;
    for (const char *v = value; ok && *v; v++)
        if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
            ok = 0;
    if (ok) {
        name[n] = '\0';
        /* These describe framing, which is ours to write. */
        if (!strcmp(name, "content-length") || !strcmp(name, "transfer-encoding") ||
            !strcmp(name, "connection") || !strcmp(name, "content-type"))
            ok = 0;
    }
    if (!ok) {
        SHOAL_WARN(NET_LOG, "HTTP answer: header \"%.40s\" is malformed or reserved; left out",
                   line);
        return 0;
    }
    name[n] = ':';
    name[n + 1] = '\0';
    return lws_add_http_header_by_name(c->wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Writes the status line and headers. `announce` is the Content-Length to
 * send (bodies and HEAD alike); lws is told to expect a body of that size
 * only when one follows. */
static int write_head(net_conn *c, int status, const char *content_type, size_t announce,
                      int body_follows, const char *const *extra, size_t extra_count)
{
    struct lws *wsi = c->wsi;
    unsigned char *start = c->net->scratch + LWS_PRE;
    unsigned char *p = start, *end = start + NET_PIECE - 1;

    if (lws_add_http_header_status(wsi, (unsigned)status, &p, end))
        return -1;
    if (content_type && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                                     (const unsigned char *)content_type,
                                                     (int)strlen(content_type), &p, end))
        return -1;
    /* RFC 9110 §8.6: no Content-Length on 1xx and 204; 304 repeats the
     * GET's, which we do not know. */
    int no_length = status < 200 || status == 204 || status == 304;
    if (!no_length) {
        if (body_follows) {
            if (lws_add_http_header_content_length(wsi, (lws_filepos_t)announce, &p, end))
                return -1;
        } else {
            char len[32];
            int m = snprintf(len, sizeof len, "%zu", announce);
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
                                             (const unsigned char *)len, m, &p, end))
                return -1;
        }
    }
    for (size_t i = 0; i < extra_count; i++)
        if (extra[i] && add_extra_header(c, extra[i], &p, end))
            return -1;
    if (c->http_close && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                      (const unsigned char *)"close", 5, &p, end))
        return -1;
    return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

/* The answer is out: ready the connection for its next request. */
static int finish(net_conn *c)
{
    shoal_net_http_reset(c);
    if (c->http_close)
        return -1;
    return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}

/* Starts an answer whose body (owned, may be NULL) follows on writable
 * callbacks. */
static int answer(net_conn *c, int status, const char *content_type, uint8_t *body, size_t body_len,
                  int head, const char *const *extra, size_t extra_count)
{
    int body_follows = !head && body_len > 0 && status >= 200 && status != 204 && status != 304;
    if (write_head(c, status, content_type, body_len, body_follows, extra, extra_count)) {
        shoal_free(body);
        SHOAL_WARN(NET_LOG, "%s: could not write the HTTP %d answer's headers; hanging up", c->peer,
                   status);
        return -1;
    }
    if (!body_follows) {
        shoal_free(body);
        return finish(c);
    }
    c->body = body;
    c->body_len = body_len;
    c->body_off = 0;
    lws_callback_on_writable(c->wsi);
    return 0;
}

static int answer_text(net_conn *c, int status, const char *text, int head, const char *extra)
{
    size_t n = strlen(text);
    uint8_t *body = shoal_malloc(n);
    if (body)
        memcpy(body, text, n);
    const char *extras[1] = {extra};
    return answer(c, status, "text/plain; charset=utf-8", body, body ? n : 0, head, extras,
                  extra ? 1 : 0);
}

int shoal_net_http_reply_now(net_conn *c, int status, const char *text, const char *extra_header)
{
    /* Written by hand: during LWS_CALLBACK_HTTP_CONFIRM_UPGRADE lws 4.1 has
     * not yet recorded the request's HTTP version, so its header helpers
     * would answer an HTTP/1.1 client with "HTTP/1.0". */
    const char *phrase = status == 400   ? "Bad Request"
                         : status == 404 ? "Not Found"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    char *out = (char *)c->net->scratch + LWS_PRE;
    int n = snprintf(out, NET_PIECE,
                     "HTTP/1.1 %d %s\r\n"
                     "server: shoal\r\n"
                     "content-type: text/plain; charset=utf-8\r\n"
                     "content-length: %zu\r\n"
                     "%s%s"
                     "connection: close\r\n"
                     "\r\n"
                     "%s",
                     status, phrase, strlen(text), extra_header ? extra_header : "",
                     extra_header ? "\r\n" : "", text);
    if (n < 0 || (size_t)n >= NET_PIECE)
        return -1;
    return lws_write(c->wsi, (unsigned char *)out, (size_t)n, LWS_WRITE_HTTP) < n ? -1 : 0;
}

int shoal_net_http_request(net_conn *c, const char *path, size_t path_len)
{
    shoal_net *net = c->net;
    struct lws *wsi = c->wsi;

    if (c->kind == CONN_PENDING) {
        c->kind = CONN_HTTP;
        lws_set_timer_usecs(wsi, LWS_SET_TIMER_USEC_CANCEL);
    }
    shoal_net_http_reset(c);
    c->http_close = 0;
    atomic_fetch_add(&net->stat_http, 1);

    int head;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0) {
        head = 0;
    } else if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0) {
        head = 1;
    } else {
        /* A request body may follow that we will not read: hang up after
         * answering rather than parse it as the next request. */
        c->http_close = 1;
        return answer_text(c, 405, "only GET and HEAD are served here\n", 0, "Allow: GET, HEAD");
    }

    char target[1024];
    if (!path || path_len >= sizeof target) {
        c->http_close = 1;
        return answer_text(c, 414, "request path too long\n", head, NULL);
    }
    memcpy(target, path, path_len);
    target[path_len] = '\0';

    if (strcmp(target, SHOAL_NET_WS_PATH) == 0)
        return answer_text(
            c, 426,
            "this path takes WebSocket upgrades with subprotocol " SHOAL_NET_SUBPROTOCOL "\n", head,
            "Upgrade: websocket");

    /* Bearer tokens are short: a longer header counts as none. */
    char authorization[1100] = "";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
        lws_hdr_copy(wsi, authorization, (int)sizeof authorization, WSI_TOKEN_HTTP_AUTHORIZATION) <
            0)
        authorization[0] = '\0';
    shoal_http_request req = {.path = target,
                              .authorization = authorization,
                              .admin = net->admin_vhost && lws_get_vhost(wsi) == net->admin_vhost};
    shoal_http_response resp;
    memset(&resp, 0, sizeof resp);
    if (net->handlers.on_http)
        net->handlers.on_http(net->handlers.ctx, &req, &resp);
    if (resp.status == 0) {
        shoal_free(resp.body);
        return answer_text(c, 404, "not found\n", head, NULL);
    }
    if (resp.status < 100 || resp.status > 599 || (resp.body_len > 0 && !resp.body)) {
        SHOAL_ERROR(NET_LOG,
                    "HTTP handler for %.200s answered status %d with %zu body bytes at %p; "
                    "sending 500",
                    target, resp.status, resp.body_len, (void *)resp.body);
        shoal_free(resp.body);
        return answer_text(c, 500, "internal error\n", head, NULL);
    }
    size_t extra_count = sizeof resp.headers / sizeof resp.headers[0];
    return answer(c, resp.status, resp.content_type, resp.body, resp.body_len, head, resp.headers,
                  extra_count);
}

int shoal_net_http_writeable(net_conn *c)
{
    if (!c->body)
        return 0;
    size_t piece = c->body_len - c->body_off;
    if (piece > NET_PIECE)
        piece = NET_PIECE;
    int last = c->body_off + piece == c->body_len;
    unsigned char *buf = c->net->scratch + LWS_PRE;
    memcpy(buf, c->body + c->body_off, piece);
    int n = lws_write(c->wsi, buf, piece, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    if (n < 0 || (size_t)n < piece) {
        SHOAL_INFO(NET_LOG, "%s: HTTP body write failed after %zu of %zu bytes; hanging up",
                   c->peer, c->body_off, c->body_len);
        return -1;
    }
    c->body_off += piece;
    if (last)
        return finish(c);
    lws_callback_on_writable(c->wsi);
    return 0;
}
