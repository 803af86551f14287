/* The opening handshake (RFC 6455 §4.1): the client's HTTP/1.1 Upgrade
 * request and the strict check of the server's 101 response. */
#include <stdio.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>

#include "shoal/alloc.h"
#include "ws_int.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

shoal_err shoal_ws_accept_key(const char *key, char out[SHOAL_WS_ACCEPT_LEN + 1])
{
    if (!key || !out)
        return SHOAL_EINVAL;
    uint8_t digest[20];
    mbedtls_sha1_context sha;
    mbedtls_sha1_init(&sha);
    int rc = mbedtls_sha1_starts_ret(&sha);
    if (rc == 0)
        rc = mbedtls_sha1_update_ret(&sha, (const unsigned char *)key, strlen(key));
    if (rc == 0)
        rc = mbedtls_sha1_update_ret(&sha, (const unsigned char *)WS_GUID, strlen(WS_GUID));
    if (rc == 0)
        rc = mbedtls_sha1_finish_ret(&sha, digest);
    mbedtls_sha1_free(&sha);
    size_t written = 0;
    if (rc == 0)
        rc = mbedtls_base64_encode((unsigned char *)out, SHOAL_WS_ACCEPT_LEN + 1, &written, digest,
                                   sizeof digest);
    if (rc != 0 || written != SHOAL_WS_ACCEPT_LEN)
        return SHOAL_ECRYPTO;
    return SHOAL_OK;
}

/* RFC 7230 §3.2.6 token characters. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* field-value characters (RFC 7230 §3.2): VCHAR, SP, HTAB, obs-text. */
static bool is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static bool is_visible_ascii(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7F)
            return false;
    return true;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    if (strlen(want) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char a = (unsigned char)name[i], b = (unsigned char)want[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* Headers the request writes itself, which a caller must not add twice or
 * contradict. */
static bool header_is_reserved(const char *name)
{
    static const char *const reserved[] = {"host", "upgrade", "connection", "content-length",
                                           "transfer-encoding"};
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (name_is(name, len, reserved[i]))
            return true;
    return len >= 14 && name_is(name, 14, "sec-websocket-");
}

shoal_err shoal_ws_config_check(const shoal_ws_config *config, shoal_errinfo *ei)
{
    if (!config->host || !is_visible_ascii(config->host))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket config: host must be a non-empty host[:port] of "
                                 "printable ASCII without spaces");
    if (!config->path || config->path[0] != '/' || !is_visible_ascii(config->path))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket config: path must start with '/' and be printable "
                                 "ASCII without spaces");
    if (!config->random)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "websocket config: random is required (masking keys come from it)");
    if (config->subprotocol && !is_token(config->subprotocol, strlen(config->subprotocol)))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket config: subprotocol \"%s\" is not an HTTP token",
                                 config->subprotocol);
    if (config->header_count > 0 && !config->headers)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket config: header_count is %zu but headers is NULL",
                                 config->header_count);
    for (size_t i = 0; i < config->header_count; i++) {
        const shoal_ws_header *h = &config->headers[i];
        if (!h->name || !is_token(h->name, strlen(h->name)))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "websocket config: headers[%zu]: the name must be an HTTP "
                                     "token",
                                     i);
        if (header_is_reserved(h->name))
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "websocket config: headers[%zu]: \"%s\" is written by the "
                                     "client itself and cannot be set",
                                     i, h->name);
        if (!h->value)
            return shoal_errinfo_set(
                ei, SHOAL_EINVAL, "websocket config: headers[%zu] (%s): value is NULL", i, h->name);
        /* Refusing CR and LF keeps a value from smuggling in more headers.
         * The value may be a secret: do not echo it. */
        for (const char *c = h->value; *c; c++)
            if (!is_field_char((unsigned char)*c))
                return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                         "websocket config: headers[%zu] (%s): the value holds a "
                                         "control character (CR, LF or other)",
                                         i, h->name);
    }
    return SHOAL_OK;
}

/* Appends s to the request; with dst NULL only measures. */
static void put(uint8_t *dst, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (dst)
        memcpy(dst + *len, s, n);
    *len += n;
}

static size_t request_write(uint8_t *dst, const shoal_ws_config *config, const char *key)
{
    size_t len = 0;
    put(dst, &len, "GET ");
    put(dst, &len, config->path);
    put(dst, &len, " HTTP/1.1\r\nHost: ");
    put(dst, &len, config->host);
    put(dst, &len, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    put(dst, &len, key);
    put(dst, &len, "\r\nSec-WebSocket-Version: 13\r\n");
    if (config->subprotocol) {
        put(dst, &len, "Sec-WebSocket-Protocol: ");
        put(dst, &len, config->subprotocol);
        put(dst, &len, "\r\n");
    }
    for (size_t i = 0; i < config->header_count; i++) {
        put(dst, &len, config->headers[i].name);
        put(dst, &len, ": ");
        put(dst, &len, config->headers[i].value);
        put(dst, &len, "\r\n");
    }
    put(dst, &len, "\r\n");
    return len;
}

shoal_err shoal_ws_request_build(shoal_ws *ws, const shoal_ws_config *config, shoal_errinfo *ei)
{
    char key[SHOAL_WS_KEY_LEN + 1];
    size_t written = 0;
    if (mbedtls_base64_encode((unsigned char *)key, sizeof key, &written, config->key_nonce,
                              sizeof config->key_nonce) != 0 ||
        written != SHOAL_WS_KEY_LEN)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "websocket: base64 of the key failed");
    if (shoal_ws_accept_key(key, ws->accept) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "websocket: SHA-1 of the key failed");

    size_t len = request_write(NULL, config, key);
    ws->out = shoal_malloc(len);
    if (!ws->out)
        return shoal_errinfo_set(
            ei, SHOAL_ENOMEM, "websocket: out of memory for the %zu-byte handshake request", len);
    ws->out_cap = len;
    ws->out_len = request_write(ws->out, config, key);
    ws->out_off = 0;
    return SHOAL_OK;
}

/* Copies up to 80 bytes of server text into an error message, replacing
 * anything not printable ASCII, so a hostile reason phrase cannot put
 * control characters or invalid UTF-8 into logs. */
static void sanitize(char *dst, size_t cap, const uint8_t *src, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < cap && i < 80; i++)
        dst[n++] = (src[i] >= 0x20 && src[i] < 0x7F) ? (char)src[i] : '?';
    if (len > 80 && n + 4 < cap) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = 0;
}

static shoal_err status_line_check(shoal_ws *ws, const uint8_t *line, size_t len, shoal_errinfo *ei)
{
    char shown[96];
    if (len < 12 || memcmp(line, "HTTP/1.1 ", 9) != 0 || line[9] < '0' || line[9] > '9' ||
        line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
        (len > 12 && line[12] != ' ')) {
        sanitize(shown, sizeof shown, line, len);
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: the response does not start with an "
                                 "HTTP/1.1 status line: \"%s\"",
                                 shown);
    }
    ws->http_status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (ws->http_status == 101) {
        for (size_t i = 13; i < len; i++)
            if (!is_field_char(line[i]))
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "websocket handshake: control character in the status "
                                         "line");
        return SHOAL_OK;
    }
    /* A refusal is reported whatever its reason phrase holds (sanitized). */

    const uint8_t *reason = len > 13 ? line + 13 : line + len;
    sanitize(shown, sizeof shown, reason, (size_t)(line + len - reason));
    const int status = ws->http_status;
    const char *hint = "";
    shoal_err err = SHOAL_EPROTO;
    if (status == 401 || status == 403) {
        err = SHOAL_EAUTH;
        hint = ": the server refused the credentials; check the device token";
    } else if (status >= 300 && status < 400) {
        hint = ": redirects are not followed; configure the final URL";
    } else if (status == 429 || status == 503) {
        hint = ": the server is busy; retry later";
    } else if (status >= 400 && status < 500) {
        hint = ": check the host, path and headers of the request";
    } else if (status >= 500) {
        hint = ": server error; retry later";
    }
    return shoal_errinfo_set(ei, err,
                             "websocket handshake: server answered HTTP %d %s instead of 101 "
                             "Switching Protocols%s",
                             status, shown, hint);
}

/* True when the comma-separated list `value` holds `token`
 * (case-insensitive), as Upgrade and Connection may list several. */
static bool list_has_token(const uint8_t *value, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end > start && name_is((const char *)value + start, end - start, token))
            return true;
    }
    return false;
}

/* Checks the header lines of a complete 101 response: head[0..len) ends
 * with the empty line; the status line was already checked. */
static shoal_err headers_check(shoal_ws *ws, const uint8_t *head, size_t len, shoal_errinfo *ei)
{
    bool upgrade = false, connection = false;
    int accept_count = 0, protocol_count = 0;
    const uint8_t *accept_value = NULL;
    size_t accept_len = 0;
    char shown[96];

    const uint8_t *line = memchr(head, '\n', len);
    line++; /* the status line ends in CRLF: the caller found it */
    int line_no = 1;
    for (;;) {
        const uint8_t *eol = memchr(line, '\n', (size_t)(head + len - line));
        size_t line_len = (size_t)(eol - line) - 1; /* without CRLF */
        line_no++;
        if (line_len == 0)
            break;
        if (line[0] == ' ' || line[0] == '\t')
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "websocket handshake: header line %d starts with whitespace "
                                     "(obsolete line folding is not accepted)",
                                     line_no);
        const uint8_t *colon = memchr(line, ':', line_len);
        if (!colon || !is_token((const char *)line, (size_t)(colon - line))) {
            sanitize(shown, sizeof shown, line, line_len);
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "websocket handshake: header line %d is not \"Name: value\": "
                                     "\"%s\"",
                                     line_no, shown);
        }
        const char *name = (const char *)line;
        size_t name_len = (size_t)(colon - line);
        const uint8_t *value = colon + 1, *value_end = line + line_len;
        for (const uint8_t *c = value; c < value_end; c++)
            if (!is_field_char(*c))
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "websocket handshake: header line %d holds a control "
                                         "character",
                                         line_no);
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        size_t value_len = (size_t)(value_end - value);

        if (name_is(name, name_len, "upgrade")) {
            upgrade = upgrade || list_has_token(value, value_len, "websocket");
        } else if (name_is(name, name_len, "connection")) {
            connection = connection || list_has_token(value, value_len, "upgrade");
        } else if (name_is(name, name_len, "sec-websocket-accept")) {
            accept_count++;
            accept_value = value;
            accept_len = value_len;
        } else if (name_is(name, name_len, "sec-websocket-extensions")) {
            if (value_len > 0) {
                sanitize(shown, sizeof shown, value, value_len);
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "websocket handshake: the server selected extension "
                                         "\"%s\", but none was offered",
                                         shown);
            }
        } else if (name_is(name, name_len, "sec-websocket-protocol")) {
            protocol_count++;
            sanitize(shown, sizeof shown, value, value_len);
            if (!ws->subprotocol)
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "websocket handshake: the server selected subprotocol "
                                         "\"%s\", but none was requested",
                                         shown);
            if (strlen(ws->subprotocol) != value_len ||
                memcmp(ws->subprotocol, value, value_len) != 0)
                return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                         "websocket handshake: the server selected subprotocol "
                                         "\"%s\", but \"%s\" was requested",
                                         shown, ws->subprotocol);
        }
        line = eol + 1;
    }

    if (!upgrade)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: the 101 response lacks \"Upgrade: "
                                 "websocket\"");
    if (!connection)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: the 101 response lacks \"Connection: "
                                 "Upgrade\"");
    if (accept_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: the 101 response lacks "
                                 "Sec-WebSocket-Accept");
    if (accept_count > 1)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: Sec-WebSocket-Accept appears %d times",
                                 accept_count);
    if (accept_len != SHOAL_WS_ACCEPT_LEN ||
        memcmp(accept_value, ws->accept, SHOAL_WS_ACCEPT_LEN) != 0) {
        sanitize(shown, sizeof shown, accept_value, accept_len);
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: Sec-WebSocket-Accept is \"%s\", expected "
                                 "\"%s\" (the server did not answer this request's key)",
                                 shown, ws->accept);
    }
    if (protocol_count > 1)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: Sec-WebSocket-Protocol appears %d times",
                                 protocol_count);
    if (ws->subprotocol && protocol_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "websocket handshake: the server did not select the requested "
                                 "subprotocol \"%s\"",
                                 ws->subprotocol);
    return SHOAL_OK;
}

shoal_err shoal_ws_head_feed(shoal_ws *ws, const uint8_t *in, size_t len, size_t *consumed,
                             shoal_errinfo *ei)
{
    /* Byte by byte: the head is small, and checking each line ending as it
     * arrives refuses a non-HTTP peer and a non-101 status at once instead
     * of waiting for a head that may never end. */
    size_t i = 0;
    while (i < len) {
        if (ws->head_len == ws->max_header) {
            *consumed = i;
            return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                     "websocket handshake: the response head exceeds the limit of "
                                     "%zu bytes (max_header)",
                                     ws->max_header);
        }
        const uint8_t b = in[i++];
        const uint8_t prev = ws->head_len > 0 ? ws->head[ws->head_len - 1] : 0;
        ws->head[ws->head_len++] = b;
        *consumed = i;
        if (b == 0)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "websocket handshake: NUL byte in the response head at "
                                     "offset %zu",
                                     ws->head_len - 1);
        if (prev == '\r' && b != '\n')
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "websocket handshake: CR not followed by LF at offset %zu",
                                     ws->head_len - 2);
        if (b != '\n')
            continue;
        if (prev != '\r')
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "websocket handshake: line ends in a bare LF at offset %zu "
                                     "(HTTP requires CRLF)",
                                     ws->head_len - 1);
        if (!ws->status_seen) {
            ws->status_seen = true;
            shoal_err err = status_line_check(ws, ws->head, ws->head_len - 2, ei);
            if (err != SHOAL_OK)
                return err;
        } else if (ws->head_len >= 4 && ws->head[ws->head_len - 3] == '\n') {
            shoal_err err = headers_check(ws, ws->head, ws->head_len, ei);
            return err == SHOAL_OK ? SHOAL_ROW : err;
        }
    }
    *consumed = len;
    return SHOAL_OK;
}
