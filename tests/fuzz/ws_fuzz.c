/* Fuzz target for the WebSocket client state machine (protocol/ws).
 *
 * Input: one flags byte, then bytes "from the server". Flags:
 *   bit 0      feed a valid 101 response first (else the input is the whole
 *              response, handshake included)
 *   bit 1      small limits (max_message 300, max_frame_recv 200,
 *              max_header 256, max_frame_send 7)
 *   bits 2-4   chunk size for the second run (1, 2, 3, 5, 16, 64, 257, all)
 *   bit 5      request subprotocol SHOAL_PROTOCOL_SUBPROTOCOL
 *   bit 6      answer every message with a send (exercises the output
 *              queue against incoming Pings)
 *
 * Invariants (a violation aborts):
 *   - feeding the bytes in one piece and in chunks gives the same events,
 *     the same verdict and the same bytes to send;
 *   - a failed allocation returns SHOAL_ENOMEM and, retried, loses nothing;
 *   - every event is well-formed: text is valid UTF-8 (checked here by an
 *     independent decoder), messages within max_message, Pongs within 125
 *     bytes, Close codes valid or 1005;
 *   - every error is one the API documents, comes with a message, ends in
 *     state FAILED (or CLOSED) and refuses further input;
 *   - everything the client sends is the request and then well-formed
 *     masked frames, nothing after a Close, and a failure after the
 *     handshake ends with a Close of 1002, 1007 or 1009. */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/wire.h"
#include "shoal/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char ok_response[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                                  "\r\n";
static const char ok_response_proto[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                        "Upgrade: websocket\r\n"
                                        "Connection: Upgrade\r\n"
                                        "Sec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL "\r\n"
                                        "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                                        "\r\n";

static void check(bool ok)
{
    if (!ok)
        abort();
}

static shoal_err counter_random(void *ctx, uint8_t *buf, size_t len)
{
    uint32_t *state = ctx;
    for (size_t i = 0; i < len; i++) {
        *state = *state * 1103515245u + 12345u;
        buf[i] = (uint8_t)(*state >> 16);
    }
    return SHOAL_OK;
}

/* Independent UTF-8 check: decode each code point and range-check it. */
static bool utf8_ok(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n;
        if (p[i] < 0x80) {
            i++;
            continue;
        } else if ((p[i] & 0xE0) == 0xC0) {
            cp = p[i] & 0x1F;
            n = 2;
        } else if ((p[i] & 0xF0) == 0xE0) {
            cp = p[i] & 0x0F;
            n = 3;
        } else if ((p[i] & 0xF8) == 0xF0) {
            cp = p[i] & 0x07;
            n = 4;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

static bool close_code_ok(unsigned code)
{
    return code == 1005 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* What one run saw: a running hash of the events, the verdict, the output. */
typedef struct outcome {
    uint64_t event_hash;
    size_t events;
    shoal_err err;
    bool opened;
    uint8_t *out;
    size_t out_len;
    size_t out_cap;
} outcome;

static void hash_bytes(uint64_t *h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        *h = (*h ^ b[i]) * 1099511628211u;
}

static void out_take(shoal_ws *ws, outcome *o)
{
    for (;;) {
        size_t n;
        const uint8_t *p = shoal_ws_pending(ws, &n);
        if (n == 0)
            return;
        if (o->out_len + n > o->out_cap) {
            size_t cap = (o->out_len + n) * 2;
            uint8_t *grown = realloc(o->out, cap);
            check(grown != NULL);
            o->out = grown;
            o->out_cap = cap;
        }
        memcpy(o->out + o->out_len, p, n);
        o->out_len += n;
        check(shoal_ws_consume(ws, n) == SHOAL_OK);
    }
}

typedef struct setup {
    uint8_t flags;
    shoal_ws_config config;
    uint32_t rng_state;
} setup;

static void event_check(const setup *s, const shoal_ws_event *ev, shoal_ws *ws)
{
    const size_t max_message =
        s->config.max_message ? s->config.max_message : SHOAL_WS_DEFAULT_MAX_MESSAGE;
    check(ev->data != NULL && ev->data[ev->len] == 0);
    switch (ev->kind) {
    case SHOAL_WS_EVENT_OPEN:
        check(ev->len == 0 && shoal_ws_http_status(ws) == 101);
        break;
    case SHOAL_WS_EVENT_TEXT:
        check(utf8_ok(ev->data, ev->len));
        /* fall through */
    case SHOAL_WS_EVENT_BINARY:
        check(ev->len <= max_message);
        break;
    case SHOAL_WS_EVENT_PONG:
        check(ev->len <= 125);
        break;
    case SHOAL_WS_EVENT_CLOSE:
        check(close_code_ok(ev->close_code));
        check(ev->len <= 123 && utf8_ok(ev->data, ev->len));
        check(shoal_ws_get_state(ws) == SHOAL_WS_CLOSED);
        break;
    default:
        abort();
    }
}

/* Feeds one chunk; false once the run has ended (error). */
static bool feed_chunk(const setup *s, shoal_ws *ws, outcome *o, const uint8_t *p, size_t len,
                       bool retry_enomem)
{
    if (len == 0 && shoal_ws_get_state(ws) == SHOAL_WS_CLOSED)
        return true; /* an empty read after the Close */
    for (;;) {
        size_t used = SIZE_MAX;
        shoal_ws_event ev;
        shoal_errinfo ei;
        ei.msg[0] = 0;
        shoal_err err = shoal_ws_feed(ws, p, len, &used, &ev, &ei);
        check(used <= len);
        p += used;
        len -= used;
        if (err == SHOAL_ROW) {
            event_check(s, &ev, ws);
            o->events++;
            hash_bytes(&o->event_hash, &ev.kind, sizeof ev.kind);
            hash_bytes(&o->event_hash, &ev.close_code, sizeof ev.close_code);
            hash_bytes(&o->event_hash, &ev.len, sizeof ev.len);
            hash_bytes(&o->event_hash, ev.data, ev.len);
            if (ev.kind == SHOAL_WS_EVENT_OPEN)
                o->opened = true;
            if ((s->flags & 0x40) &&
                (ev.kind == SHOAL_WS_EVENT_TEXT || ev.kind == SHOAL_WS_EVENT_BINARY)) {
                shoal_err sent = shoal_ws_send_binary(ws, ev.data, ev.len, NULL);
                if (sent == SHOAL_ENOMEM && retry_enomem) {
                    shoal_failalloc_uninstall();
                    sent = shoal_ws_send_binary(ws, ev.data, ev.len, NULL);
                }
                check(sent == SHOAL_OK);
            }
            if (len == 0)
                return true;
            continue;
        }
        if (err == SHOAL_ENOMEM && retry_enomem) {
            shoal_failalloc_uninstall();
            continue;
        }
        if (err == SHOAL_OK) {
            check(len == 0);
            return true;
        }
        /* Only documented verdicts, each explained, and nothing after. */
        check(err == SHOAL_EPROTO || err == SHOAL_ELIMIT || err == SHOAL_EAUTH ||
              err == SHOAL_ECLOSED);
        check(ei.msg[0] != 0);
        if (err == SHOAL_ECLOSED) {
            check(shoal_ws_get_state(ws) == SHOAL_WS_CLOSED);
            check(used == 0);
        } else {
            check(shoal_ws_get_state(ws) == SHOAL_WS_FAILED);
        }
        if (err == SHOAL_EAUTH)
            check(shoal_ws_http_status(ws) == 401 || shoal_ws_http_status(ws) == 403);
        size_t again = 1;
        check(shoal_ws_feed(ws, p, len, &again, &ev, NULL) == SHOAL_ECLOSED && again == 0);
        o->err = err;
        return false;
    }
}

static void run(const setup *s, const uint8_t *server, size_t len, size_t chunk, outcome *o,
                long fail_after)
{
    memset(o, 0, sizeof *o);
    o->event_hash = 14695981039346656037u;
    setup local = *s;
    local.config.random_ctx = &local.rng_state;
    if (fail_after >= 0)
        shoal_failalloc_install(fail_after);
    shoal_ws *ws = NULL;
    shoal_err err = shoal_ws_new(&local.config, &ws, NULL);
    if (err == SHOAL_ENOMEM && fail_after >= 0) {
        shoal_failalloc_uninstall();
        err = shoal_ws_new(&local.config, &ws, NULL);
    }
    check(err == SHOAL_OK);
    out_take(ws, o);
    bool going = true;
    if (s->flags & 0x01) {
        const char *resp = (s->flags & 0x20) ? ok_response_proto : ok_response;
        going = feed_chunk(&local, ws, o, (const uint8_t *)resp, strlen(resp), fail_after >= 0);
        check(going && o->opened);
    }
    for (size_t at = 0; going && at < len; at += chunk) {
        const size_t n = len - at < chunk ? len - at : chunk;
        going = feed_chunk(&local, ws, o, server + at, n, fail_after >= 0);
    }
    if (fail_after >= 0)
        shoal_failalloc_uninstall();
    out_take(ws, o);
    shoal_ws_free(ws);
}

/* Walks what the client sent: the request, then masked frames. */
static void output_check(const outcome *o)
{
    const uint8_t *p = o->out;
    size_t len = o->out_len;
    check(len >= 4);
    size_t at = 0;
    while (at + 4 <= len && memcmp(p + at, "\r\n\r\n", 4) != 0)
        at++;
    check(at + 4 <= len);
    at += 4;
    if (!o->opened) {
        check(at == len); /* nothing but the request before the handshake */
        return;
    }
    bool closed = false;
    unsigned last_close = 0;
    while (at < len) {
        check(!closed); /* nothing after a Close */
        check(len - at >= 2);
        const uint8_t b0 = p[at], b1 = p[at + 1];
        check((b0 & 0x70) == 0 && (b1 & 0x80));
        const unsigned op = b0 & 0x0F;
        check(op <= 2 || (op >= 8 && op <= 10));
        uint64_t plen = b1 & 0x7F;
        size_t hdr = 2;
        if (plen == 126) {
            check(len - at >= 4);
            plen = (uint64_t)p[at + 2] << 8 | p[at + 3];
            check(plen >= 126);
            hdr = 4;
        } else if (plen == 127) {
            check(len - at >= 10);
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[at + 2 + i];
            check(plen > 0xFFFF);
            hdr = 10;
        }
        if (op >= 8)
            check((b0 & 0x80) && plen <= 125);
        check(len - at - hdr >= 4 && plen <= len - at - hdr - 4);
        if (op == 8) {
            closed = true;
            check(plen != 1);
            if (plen >= 2) {
                const uint8_t *mask = p + at + hdr;
                last_close = (unsigned)(p[at + hdr + 4] ^ mask[0]) << 8 |
                             (unsigned)(p[at + hdr + 5] ^ mask[1]);
                check(close_code_ok(last_close) && last_close != 1005);
            }
        }
        at += hdr + 4 + (size_t)plen;
    }
    if (o->err == SHOAL_EPROTO || o->err == SHOAL_ELIMIT)
        check(closed && (last_close == 1002 || last_close == 1007 || last_close == 1009));
}

static bool outcome_same(const outcome *a, const outcome *b)
{
    return a->event_hash == b->event_hash && a->events == b->events && a->err == b->err &&
           a->opened == b->opened && a->out_len == b->out_len &&
           (a->out_len == 0 || memcmp(a->out, b->out, a->out_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup s;
    memset(&s, 0, sizeof s);
    s.flags = data[0];
    s.rng_state = 1;
    s.config.host = "fuzz.example";
    s.config.path = "/v1/ws";
    memcpy(s.config.key_nonce, "the sample nonce", 16);
    s.config.random = counter_random;
    if (s.flags & 0x02) {
        s.config.max_message = 300;
        s.config.max_frame_recv = 200;
        s.config.max_header = 256;
        s.config.max_frame_send = 7;
    }
    if (s.flags & 0x20)
        s.config.subprotocol = SHOAL_PROTOCOL_SUBPROTOCOL;
    static const size_t chunks[8] = {1, 2, 3, 5, 16, 64, 257, SIZE_MAX};
    const size_t chunk = chunks[(s.flags >> 2) & 7];
    const uint8_t *server = data + 1;
    const size_t len = size - 1;

    outcome whole, split;
    run(&s, server, len, SIZE_MAX, &whole, -1);
    output_check(&whole);
    run(&s, server, len, chunk, &split, -1);
    check(outcome_same(&whole, &split));
    free(split.out);

    /* Fail each of the first allocations in turn (shoal_ws_new's among
     * them): the run must end exactly as without the failure. */
    outcome counted;
    run(&s, server, len, SIZE_MAX, &counted, LONG_MAX);
    check(outcome_same(&whole, &counted));
    free(counted.out);
    for (long k = 0; k < 8; k++) {
        outcome failed;
        run(&s, server, len, SIZE_MAX, &failed, k);
        check(outcome_same(&whole, &failed));
        free(failed.out);
    }
    free(whole.out);
    return 0;
}
