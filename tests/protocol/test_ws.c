/* Tests for the sans-I/O RFC 6455 client (protocol/ws). Frames from the
 * server are written out byte by byte from RFC 6455 §5.7; what the client
 * sends is decoded by an independent parser (client_frames_parse). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/wire.h"
#include "shoal/ws.h"

/* RFC 6455 §1.3: the sample nonce, its key and accept value. */
#define SAMPLE_NONCE  "the sample nonce"
#define SAMPLE_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define SAMPLE_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char ok_response[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n"
                                  "\r\n";

/* Random source: a scripted byte sequence, then a counter; or failure. */
typedef struct test_rng {
    const uint8_t *script;
    size_t script_len;
    size_t pos;
    uint8_t counter;
    bool fail;
} test_rng;

static shoal_err rng_fill(void *ctx, uint8_t *buf, size_t len)
{
    test_rng *r = ctx;
    if (r->fail)
        return SHOAL_ECRYPTO;
    for (size_t i = 0; i < len; i++)
        buf[i] = r->pos < r->script_len ? r->script[r->pos++] : (uint8_t)(0x5A + r->counter++);
    return SHOAL_OK;
}

static test_rng default_rng;

static shoal_ws_config base_config(test_rng *rng)
{
    shoal_ws_config c;
    memset(&c, 0, sizeof c);
    c.host = "server.example.com";
    c.path = "/chat";
    memcpy(c.key_nonce, SAMPLE_NONCE, 16);
    c.random = rng_fill;
    c.random_ctx = rng ? rng : &default_rng;
    return c;
}

/* A growable byte string. */
typedef struct bytes {
    uint8_t *p;
    size_t len;
} bytes;

static void bytes_add(bytes *b, const void *p, size_t len)
{
    b->p = realloc(b->p, b->len + len + 1);
    cr_assert_not_null(b->p);
    memcpy(b->p + b->len, p, len);
    b->len += len;
}

static void bytes_byte(bytes *b, uint8_t v)
{
    bytes_add(b, &v, 1);
}

/* A server frame (never masked unless asked) with the shortest length. */
static void server_frame(bytes *b, uint8_t first, const void *payload, size_t len)
{
    bytes_byte(b, first);
    if (len < 126) {
        bytes_byte(b, (uint8_t)len);
    } else if (len <= 0xFFFF) {
        bytes_byte(b, 126);
        bytes_byte(b, (uint8_t)(len >> 8));
        bytes_byte(b, (uint8_t)len);
    } else {
        bytes_byte(b, 127);
        for (int shift = 56; shift >= 0; shift -= 8)
            bytes_byte(b, (uint8_t)((uint64_t)len >> shift));
    }
    if (len)
        bytes_add(b, payload, len);
}

/* Takes everything pending, in pieces of at most `piece` bytes. */
static bytes drain_by(shoal_ws *ws, size_t piece)
{
    bytes out = {NULL, 0};
    for (;;) {
        size_t n;
        const uint8_t *p = shoal_ws_pending(ws, &n);
        if (n == 0) {
            cr_assert_null(p);
            break;
        }
        if (n > piece)
            n = piece;
        bytes_add(&out, p, n);
        cr_assert_eq(shoal_ws_consume(ws, n), SHOAL_OK);
    }
    return out;
}

static bytes drain(shoal_ws *ws)
{
    return drain_by(ws, SIZE_MAX);
}

/* One frame the client sent, unmasked. */
typedef struct client_frame {
    bool fin;
    uint8_t opcode;
    uint8_t mask[4];
    size_t len;
    uint8_t payload[70000];
} client_frame;

/* Decodes client output: every frame must be masked, RSV clear, with the
 * minimal length form. Returns the number of frames; frames may be NULL to
 * count only. */
static size_t client_frames_parse(const uint8_t *p, size_t len, client_frame *frames, size_t max)
{
    size_t count = 0, at = 0;
    while (at < len) {
        cr_assert_geq(len - at, 2, "truncated client frame header");
        uint8_t b0 = p[at], b1 = p[at + 1];
        cr_assert_eq(b0 & 0x70, 0, "client set RSV bits");
        cr_assert(b1 & 0x80, "client frame not masked");
        size_t plen = b1 & 0x7F, hdr = 2;
        if (plen == 126) {
            plen = (size_t)p[at + 2] << 8 | p[at + 3];
            cr_assert_geq(plen, 126);
            hdr = 4;
        } else if (plen == 127) {
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[at + 2 + i];
            cr_assert_gt(plen, 0xFFFF);
            hdr = 10;
        }
        cr_assert_geq(len - at, hdr + 4 + plen, "truncated client frame");
        if (frames) {
            cr_assert_lt(count, max);
            client_frame *f = &frames[count];
            f->fin = (b0 & 0x80) != 0;
            f->opcode = b0 & 0x0F;
            memcpy(f->mask, p + at + hdr, 4);
            f->len = plen;
            cr_assert_leq(plen, sizeof f->payload);
            for (size_t i = 0; i < plen; i++)
                f->payload[i] = p[at + hdr + 4 + i] ^ f->mask[i & 3];
        }
        count++;
        at += hdr + 4 + plen;
    }
    return count;
}

static client_frame frames_buf[8];

/* Recorded events. */
typedef struct rec_event {
    shoal_ws_event_kind kind;
    uint16_t close_code;
    size_t len;
    uint8_t *data;
} rec_event;

typedef struct run {
    rec_event ev[64];
    size_t count;
    shoal_err err; /* first error other than SHOAL_OK/SHOAL_ROW, or SHOAL_OK */
    shoal_errinfo ei;
    int enomem; /* SHOAL_ENOMEM returns that were retried */
} run;

/* Feeds one chunk, recording every event; stops at the first error. With
 * retry_enomem, an allocation failure is retried after lifting the fault
 * injection, and must lose nothing. */
static void feed_chunk(shoal_ws *ws, run *r, const uint8_t *p, size_t len, bool retry_enomem)
{
    if (r->err != SHOAL_OK)
        return;
    for (;;) {
        size_t used = SIZE_MAX;
        shoal_ws_event ev;
        shoal_err err = shoal_ws_feed(ws, p, len, &used, &ev, &r->ei);
        cr_assert_leq(used, len);
        p += used;
        len -= used;
        if (err == SHOAL_ROW) {
            cr_assert_lt(r->count, 64);
            cr_assert_not_null(ev.data);
            cr_assert_eq(ev.data[ev.len], 0, "event data is not NUL-terminated");
            rec_event *e = &r->ev[r->count++];
            e->kind = ev.kind;
            e->close_code = ev.close_code;
            e->len = ev.len;
            e->data = malloc(ev.len + 1);
            memcpy(e->data, ev.data, ev.len);
            e->data[ev.len] = 0;
            if (len == 0)
                return;
            continue;
        }
        if (err == SHOAL_ENOMEM && retry_enomem) {
            /* Retried even with no bytes left: the pending work is inside. */
            r->enomem++;
            shoal_failalloc_uninstall();
            continue;
        }
        if (err != SHOAL_OK) {
            r->err = err;
            return;
        }
        cr_assert_eq(len, 0);
        return;
    }
}

static void run_free(run *r)
{
    for (size_t i = 0; i < r->count; i++)
        free(r->ev[i].data);
    r->count = 0;
}

static void run_expect_same(const run *a, const run *b)
{
    cr_assert_eq(a->count, b->count, "event count %zu vs %zu", a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        cr_assert_eq(a->ev[i].kind, b->ev[i].kind);
        cr_assert_eq(a->ev[i].close_code, b->ev[i].close_code);
        cr_assert_eq(a->ev[i].len, b->ev[i].len);
        cr_assert_eq(memcmp(a->ev[i].data, b->ev[i].data, a->ev[i].len), 0);
    }
    cr_assert_eq(a->err, b->err);
}

/* A client past the handshake: request drained, 101 fed. */
static shoal_ws *open_with(shoal_ws_config *c)
{
    shoal_ws *ws = NULL;
    shoal_errinfo ei;
    cr_assert_eq(shoal_ws_new(c, &ws, &ei), SHOAL_OK, "%s", ei.msg);
    bytes req = drain(ws);
    free(req.p);
    run r;
    memset(&r, 0, sizeof r);
    feed_chunk(ws, &r, (const uint8_t *)ok_response, strlen(ok_response), false);
    cr_assert_eq(r.err, SHOAL_OK, "%s", r.ei.msg);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_OPEN);
    run_free(&r);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_OPEN);
    return ws;
}

static shoal_ws *open_default(void)
{
    shoal_ws_config c = base_config(NULL);
    return open_with(&c);
}

/* Feeds server bytes to an open client and returns the run. */
static run feed_all(shoal_ws *ws, const bytes *b)
{
    run r;
    memset(&r, 0, sizeof r);
    feed_chunk(ws, &r, b->p, b->len, false);
    return r;
}

/* Asserts the run failed with err, the message names `what`, the client
 * refuses more input, and the last frame it sends is a Close with `code`. */
static void expect_failure(shoal_ws *ws, run *r, shoal_err err, const char *what, uint16_t code)
{
    cr_assert_eq(r->err, err, "got %s (%s)", shoal_err_name(r->err), r->ei.msg);
    cr_assert_not_null(strstr(r->ei.msg, what), "message \"%s\" lacks \"%s\"", r->ei.msg, what);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_FAILED);
    size_t used = 99;
    shoal_ws_event ev;
    const uint8_t more[1] = {0x81};
    cr_assert_eq(shoal_ws_feed(ws, more, 1, &used, &ev, NULL), SHOAL_ECLOSED);
    cr_assert_eq(used, 0);
    cr_assert_eq(shoal_ws_send_binary(ws, more, 1, NULL), SHOAL_ECLOSED);
    cr_assert_eq(shoal_ws_close(ws, 1000, NULL, NULL), SHOAL_ECLOSED);
    bytes out = drain(ws);
    if (code == 0) {
        cr_assert_eq(out.len, 0, "no Close expected before the handshake completed");
    } else {
        size_t n = client_frames_parse(out.p, out.len, frames_buf, 8);
        cr_assert_geq(n, 1);
        client_frame *f = &frames_buf[n - 1];
        cr_assert_eq(f->opcode, 0x8);
        cr_assert(f->fin);
        cr_assert_geq(f->len, 2);
        cr_assert_eq(f->payload[0] << 8 | f->payload[1], code);
    }
    free(out.p);
    run_free(r);
}

/* ---- handshake ---------------------------------------------------------- */

Test(protocol_ws_handshake, accept_key_matches_rfc_sample)
{
    char accept[SHOAL_WS_ACCEPT_LEN + 1];
    cr_assert_eq(shoal_ws_accept_key(SAMPLE_KEY, accept), SHOAL_OK);
    cr_assert_str_eq(accept, SAMPLE_ACCEPT);
    cr_assert_eq(shoal_ws_accept_key(NULL, accept), SHOAL_EINVAL);
}

Test(protocol_ws_handshake, request_carries_sample_key_and_extra_headers)
{
    shoal_ws_config c = base_config(NULL);
    shoal_ws_header h[] = {{"Authorization", "Bearer tok.en"}, {"X-Shoal-Sdk", "0.1.0"}};
    c.headers = h;
    c.header_count = 2;
    c.subprotocol = SHOAL_PROTOCOL_SUBPROTOCOL;
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_CONNECTING);
    cr_assert_eq(shoal_ws_http_status(ws), 0);
    bytes req = drain_by(ws, 7);
    const char *want = "GET /chat HTTP/1.1\r\n"
                       "Host: server.example.com\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL "\r\n"
                       "Authorization: Bearer tok.en\r\n"
                       "X-Shoal-Sdk: 0.1.0\r\n"
                       "\r\n";
    cr_assert_eq(req.len, strlen(want));
    cr_assert_eq(memcmp(req.p, want, req.len), 0, "%.*s", (int)req.len, req.p);
    free(req.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_handshake, accepts_101_and_parses_frames_in_the_same_read)
{
    shoal_ws_config c = base_config(NULL);
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    bytes in = {NULL, 0};
    bytes_add(&in, ok_response, strlen(ok_response));
    server_frame(&in, 0x81, "Hello", 5);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK, "%s", r.ei.msg);
    cr_assert_eq(r.count, 2);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_OPEN);
    cr_assert_eq(r.ev[0].len, 0);
    cr_assert_eq(r.ev[1].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_eq(r.ev[1].len, 5);
    cr_assert_eq(memcmp(r.ev[1].data, "Hello", 5), 0);
    cr_assert_eq(shoal_ws_http_status(ws), 101);
    run_free(&r);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_handshake, header_names_and_tokens_are_case_insensitive)
{
    shoal_ws_config c = base_config(NULL);
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    const char *resp = "HTTP/1.1 101 Switching Protocols\r\n"
                       "server: test\r\n"
                       "UPGRADE: WebSocket\r\n"
                       "connection: keep-alive,  upgrade \r\n"
                       "sec-websocket-accept:" SAMPLE_ACCEPT "  \r\n"
                       "Sec-WebSocket-Extensions:\r\n"
                       "\r\n";
    bytes in = {NULL, 0};
    bytes_add(&in, resp, strlen(resp));
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK, "%s", r.ei.msg);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_OPEN);
    run_free(&r);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_handshake, subprotocol_must_be_the_one_requested)
{
    const char *base = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n";
    struct {
        const char *requested, *answer, *err_part;
    } cases[] = {
        {SHOAL_PROTOCOL_SUBPROTOCOL, "Sec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL "\r\n",
         NULL},
        {SHOAL_PROTOCOL_SUBPROTOCOL, "", "did not select"},
        {SHOAL_PROTOCOL_SUBPROTOCOL, "Sec-WebSocket-Protocol: shoal.v2\r\n",
         "\"shoal.v2\", but \"" SHOAL_PROTOCOL_SUBPROTOCOL "\""},
        {NULL, "Sec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL "\r\n", "none was requested"},
        {SHOAL_PROTOCOL_SUBPROTOCOL,
         "Sec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL
         "\r\nSec-WebSocket-Protocol: " SHOAL_PROTOCOL_SUBPROTOCOL "\r\n",
         "appears 2 times"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_ws_config c = base_config(NULL);
        c.subprotocol = cases[i].requested;
        shoal_ws *ws;
        cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
        bytes in = {NULL, 0};
        bytes_add(&in, base, strlen(base));
        bytes_add(&in, cases[i].answer, strlen(cases[i].answer));
        bytes_add(&in, "\r\n", 2);
        run r = feed_all(ws, &in);
        if (!cases[i].err_part) {
            cr_assert_eq(r.err, SHOAL_OK, "case %zu: %s", i, r.ei.msg);
            cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_OPEN);
            run_free(&r);
        } else {
            free(drain(ws).p);
            expect_failure(ws, &r, SHOAL_EPROTO, cases[i].err_part, 0);
        }
        free(in.p);
        shoal_ws_free(ws);
    }
}

Test(protocol_ws_handshake, bad_responses_fail_with_a_clear_message)
{
    struct {
        const char *response, *err_part;
    } cases[] = {
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
         "Sec-WebSocket-Accept is \"AAAAAAAAAAAAAAAAAAAAAAAAAAA=\", expected \"" SAMPLE_ACCEPT},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "x\r\n\r\n",
         "did not answer this request's key"},
        {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n\r\n",
         "lacks \"Upgrade: websocket\""},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n\r\n",
         "lacks \"Upgrade: websocket\""},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: close\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n\r\n",
         "lacks \"Connection: Upgrade\""},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
         "lacks Sec-WebSocket-Accept"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n\r\n",
         "appears 2 times"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n"
         "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
         "extension \"permessage-deflate\""},
        {"HTTP/1.0 101 Switching Protocols\r\n\r\n", "HTTP/1.1 status line"},
        {"SSH-2.0-OpenSSH_9.2\r\n", "HTTP/1.1 status line: \"SSH-2.0-OpenSSH_9.2\""},
        {"HTTP/1.1 10 Oops\r\n\r\n", "HTTP/1.1 status line"},
        {"HTTP/1.1 101Switching\r\n\r\n", "HTTP/1.1 status line"},
        {"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\n", "bare LF"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\rX", "CR not followed by LF"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade:\0websocket\r\n\r\n", "NUL byte"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n  continued\r\n\r\n",
         "obsolete line folding"},
        {"HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n",
         "header line 2 is not \"Name: value\""},
        {"HTTP/1.1 101 Switching Protocols\r\nBad Name: x\r\n\r\n", "is not \"Name: value\""},
        {"HTTP/1.1 101 Switching Protocols\r\nX: a\x01"
         "b\r\n\r\n",
         "control character"},
        {"HTTP/1.1 101 Switching\x7f\r\n\r\n", "control character in the status line"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_ws_config c = base_config(NULL);
        shoal_ws *ws;
        cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
        free(drain(ws).p);
        bytes in = {NULL, 0};
        /* Embedded NULs: take the length from the literal where it has one. */
        size_t len = strlen(cases[i].response);
        if (strstr(cases[i].err_part, "NUL"))
            len = strlen(cases[i].response) + 1 + strlen(cases[i].response + len + 1);
        bytes_add(&in, cases[i].response, len);
        run r = feed_all(ws, &in);
        cr_assert_not_null(strstr(r.ei.msg, "websocket handshake: "), "case %zu: %s", i, r.ei.msg);
        expect_failure(ws, &r, SHOAL_EPROTO, cases[i].err_part, 0);
        free(in.p);
        shoal_ws_free(ws);
    }
}

Test(protocol_ws_handshake, refusals_report_status_and_reason)
{
    struct {
        const char *status_line;
        int status;
        shoal_err err;
        const char *err_part;
    } cases[] = {
        {"HTTP/1.1 403 Forbidden\r\n", 403, SHOAL_EAUTH, "HTTP 403 Forbidden instead of 101"},
        {"HTTP/1.1 401 Unauthorized\r\n", 401, SHOAL_EAUTH, "check the device token"},
        {"HTTP/1.1 503 Service Unavailable\r\n", 503, SHOAL_EPROTO, "503 Service Unavailable"},
        {"HTTP/1.1 404 Not Found\r\n", 404, SHOAL_EPROTO, "check the host, path"},
        {"HTTP/1.1 302 Found\r\n", 302, SHOAL_EPROTO, "redirects are not followed"},
        {"HTTP/1.1 500\r\n", 500, SHOAL_EPROTO, "HTTP 500  instead"},
        {"HTTP/1.1 200 OK\r\n", 200, SHOAL_EPROTO, "HTTP 200 OK instead of 101"},
        {"HTTP/1.1 400 Bad \x1b[31mred\r\n", 400, SHOAL_EPROTO, "HTTP 400 Bad ?[31mred"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_ws_config c = base_config(NULL);
        shoal_ws *ws;
        cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
        free(drain(ws).p);
        /* The refusal is reported from the status line alone; the rest of
         * the response (body included) need not arrive. */
        bytes in = {NULL, 0};
        bytes_add(&in, cases[i].status_line, strlen(cases[i].status_line));
        bytes_add(&in, "Content-Length: 1000\r\n", 22);
        run r = feed_all(ws, &in);
        cr_assert_eq(shoal_ws_http_status(ws), cases[i].status);
        expect_failure(ws, &r, cases[i].err, cases[i].err_part, 0);
        free(in.p);
        shoal_ws_free(ws);
    }
}

Test(protocol_ws_handshake, response_head_is_limited)
{
    shoal_ws_config c = base_config(NULL);
    c.max_header = 200;
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    free(drain(ws).p);
    bytes in = {NULL, 0};
    bytes_add(&in, "HTTP/1.1 101 Switching Protocols\r\n", 34);
    for (int i = 0; i < 20; i++)
        bytes_add(&in, "X-Padding: 0123456789\r\n", 23);
    run r = feed_all(ws, &in);
    expect_failure(ws, &r, SHOAL_ELIMIT, "exceeds the limit of 200 bytes", 0);
    free(in.p);
    shoal_ws_free(ws);

    /* Exactly at the limit is fine. */
    c.max_header = strlen(ok_response);
    shoal_ws_free(open_with(&c));
}

Test(protocol_ws_handshake, bad_configs_are_refused)
{
    shoal_ws *ws = (shoal_ws *)1;
    shoal_errinfo ei;
    shoal_ws_config c = base_config(NULL);
    c.host = NULL;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    cr_assert_null(ws);
    cr_assert_not_null(strstr(ei.msg, "host"));
    c = base_config(NULL);
    c.host = "evil.example\r\nX-Injected: 1";
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    c = base_config(NULL);
    c.path = "chat";
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "path must start with '/'"));
    c = base_config(NULL);
    c.path = "/a b";
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    c = base_config(NULL);
    c.random = NULL;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "random is required"));
    c = base_config(NULL);
    c.subprotocol = "two words";
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    c = base_config(NULL);
    c.header_count = 1;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);

    shoal_ws_header injected = {"Authorization", "Bearer x\r\nX-Evil: 1"};
    c = base_config(NULL);
    c.headers = &injected;
    c.header_count = 1;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "headers[0] (Authorization)"));
    cr_assert_null(strstr(ei.msg, "Bearer"), "the secret value must not be echoed");
    const char *reserved[] = {
        "Host",          "upgrade", "CONNECTION", "Sec-WebSocket-Key", "sec-websocket-extensions",
        "Content-Length"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        shoal_ws_header h = {reserved[i], "x"};
        c.headers = &h;
        cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL, "%s", reserved[i]);
        cr_assert_not_null(strstr(ei.msg, "cannot be set"));
    }
    shoal_ws_header bad_name = {"Bad:Name", "x"};
    c.headers = &bad_name;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    shoal_ws_header null_value = {"X-Ok", NULL};
    c.headers = &null_value;
    cr_assert_eq(shoal_ws_new(&c, &ws, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_ws_new(NULL, &ws, &ei), SHOAL_EINVAL);
    c = base_config(NULL);
    cr_assert_eq(shoal_ws_new(&c, NULL, &ei), SHOAL_EINVAL);
}

Test(protocol_ws_handshake, nothing_but_the_handshake_before_open)
{
    shoal_ws_config c = base_config(NULL);
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    shoal_errinfo ei;
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"x", 1, &ei), SHOAL_ESTATE);
    cr_assert_not_null(strstr(ei.msg, "before the handshake"));
    cr_assert_eq(shoal_ws_ping(ws, NULL, 0, NULL), SHOAL_ESTATE);
    cr_assert_eq(shoal_ws_close(ws, 1000, NULL, NULL), SHOAL_ESTATE);
    shoal_ws_free(ws);
}

/* ---- receiving: RFC 6455 §5.7 examples -------------------------------- */

static run feed_raw(shoal_ws *ws, const uint8_t *p, size_t len)
{
    bytes b = {(uint8_t *)p, len};
    return feed_all(ws, &b);
}

Test(protocol_ws_frames, rfc_single_unmasked_text_frame)
{
    shoal_ws *ws = open_default();
    const uint8_t frame[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    run r = feed_raw(ws, frame, sizeof frame);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_eq(r.ev[0].len, 5);
    cr_assert_str_eq((const char *)r.ev[0].data, "Hello");
    run_free(&r);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, rfc_masked_text_from_server_is_a_protocol_error)
{
    shoal_ws *ws = open_default();
    const uint8_t frame[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    run r = feed_raw(ws, frame, sizeof frame);
    expect_failure(ws, &r, SHOAL_EPROTO, "masked frame", SHOAL_WS_CLOSE_PROTOCOL_ERROR);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, rfc_fragmented_text_is_one_message)
{
    shoal_ws *ws = open_default();
    const uint8_t frames[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
    run r = feed_raw(ws, frames, sizeof frames);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_eq(r.ev[0].len, 5);
    cr_assert_eq(memcmp(r.ev[0].data, "Hello", 5), 0);
    run_free(&r);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, rfc_ping_gets_the_rfc_masked_pong)
{
    /* The masking key of RFC 6455 §5.7's masked Pong: the Pong must come
     * out byte for byte as the RFC prints it. */
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    test_rng rng = {0};
    shoal_ws_config c = base_config(&rng);
    shoal_ws *ws = open_with(&c);
    rng.script = key;
    rng.script_len = 4;
    const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    run r = feed_raw(ws, ping, sizeof ping);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.count, 0, "a Ping is answered, not reported");
    bytes out = drain(ws);
    const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    cr_assert_eq(out.len, sizeof pong);
    cr_assert_eq(memcmp(out.p, pong, sizeof pong), 0);
    free(out.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, rfc_256_byte_and_64k_binary_lengths)
{
    shoal_ws *ws = open_default();
    for (size_t len = 255; len <= 257; len++) {
        bytes in = {NULL, 0};
        uint8_t *payload = malloc(len);
        for (size_t i = 0; i < len; i++)
            payload[i] = (uint8_t)(i * 7);
        server_frame(&in, 0x82, payload, len);
        if (len == 256) {
            const uint8_t hdr[] = {0x82, 0x7E, 0x01, 0x00}; /* RFC 6455 §5.7 */
            cr_assert_eq(memcmp(in.p, hdr, 4), 0);
        }
        run r = feed_all(ws, &in);
        cr_assert_eq(r.err, SHOAL_OK);
        cr_assert_eq(r.count, 1);
        cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_BINARY);
        cr_assert_eq(r.ev[0].len, len);
        cr_assert_eq(memcmp(r.ev[0].data, payload, len), 0);
        run_free(&r);
        free(payload);
        free(in.p);
    }
    const size_t big = 65536;
    uint8_t *payload = malloc(big);
    for (size_t i = 0; i < big; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    bytes in = {NULL, 0};
    server_frame(&in, 0x82, payload, big);
    const uint8_t hdr[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}; /* RFC 6455 §5.7 */
    cr_assert_eq(memcmp(in.p, hdr, sizeof hdr), 0);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].len, big);
    cr_assert_eq(memcmp(r.ev[0].data, payload, big), 0);
    run_free(&r);
    free(payload);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, empty_messages_and_control_frames_interleaved_in_fragments)
{
    shoal_ws *ws = open_default();
    bytes in = {NULL, 0};
    server_frame(&in, 0x82, NULL, 0);  /* empty binary */
    server_frame(&in, 0x01, "Hel", 3); /* text, not final */
    server_frame(&in, 0x89, "p1", 2);  /* ping between fragments */
    server_frame(&in, 0x00, NULL, 0);  /* empty continuation */
    server_frame(&in, 0x8A, "p2", 2);  /* pong between fragments */
    server_frame(&in, 0x80, "lo", 2);  /* final continuation */
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK, "%s", r.ei.msg);
    cr_assert_eq(r.count, 3);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_BINARY);
    cr_assert_eq(r.ev[0].len, 0);
    cr_assert_eq(r.ev[1].kind, SHOAL_WS_EVENT_PONG);
    cr_assert_eq(r.ev[1].len, 2);
    cr_assert_eq(memcmp(r.ev[1].data, "p2", 2), 0);
    cr_assert_eq(r.ev[2].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_str_eq((const char *)r.ev[2].data, "Hello");
    bytes out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].opcode, 0xA);
    cr_assert_eq(frames_buf[0].len, 2);
    cr_assert_eq(memcmp(frames_buf[0].payload, "p1", 2), 0);
    free(out.p);
    run_free(&r);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_frames, utf8_is_validated_across_fragments)
{
    struct {
        const char *bytes;
        size_t len;
        size_t split; /* fragment boundary; 0 = one frame */
        bool valid;
    } cases[] = {
        {"\xe2\x82\xac", 3, 1, true},      /* EURO SIGN split across frames */
        {"\xf0\x9f\x98\x80", 4, 2, true},  /* U+1F600 split in the middle */
        {"\xf4\x8f\xbf\xbf", 4, 0, true},  /* U+10FFFF, the largest */
        {"\xed\x9f\xbf", 3, 0, true},      /* U+D7FF, just below surrogates */
        {"\xc0\x80", 2, 0, false},         /* overlong NUL */
        {"\xe0\x80\xaf", 3, 0, false},     /* overlong '/' */
        {"\xed\xa0\x80", 3, 0, false},     /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0, false}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0, false}, /* F5 never appears */
        {"\x80", 1, 0, false},             /* lone continuation */
        {"abc\xe2\x82", 5, 0, false},      /* ends inside a sequence */
        {"\xe2\x82", 2, 1, false},         /* ... also when fragmented */
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, 5, true}, /* "κόσμε" */
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", 14, 5, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shoal_ws *ws = open_default();
        bytes in = {NULL, 0};
        if (cases[i].split) {
            server_frame(&in, 0x01, cases[i].bytes, cases[i].split);
            server_frame(&in, 0x80, cases[i].bytes + cases[i].split, cases[i].len - cases[i].split);
        } else {
            server_frame(&in, 0x81, cases[i].bytes, cases[i].len);
        }
        run r = feed_all(ws, &in);
        if (cases[i].valid) {
            cr_assert_eq(r.err, SHOAL_OK, "case %zu: %s", i, r.ei.msg);
            cr_assert_eq(r.count, 1);
            cr_assert_eq(r.ev[0].len, cases[i].len);
            run_free(&r);
        } else {
            expect_failure(ws, &r, SHOAL_EPROTO, "UTF-8", SHOAL_WS_CLOSE_INVALID_DATA);
        }
        free(in.p);
        shoal_ws_free(ws);
    }
}

Test(protocol_ws_frames, binary_messages_are_not_utf8_checked)
{
    shoal_ws *ws = open_default();
    bytes in = {NULL, 0};
    server_frame(&in, 0x82, "\xff\xfe\xc0\x80", 4);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_BINARY);
    run_free(&r);
    free(in.p);
    shoal_ws_free(ws);
}

/* ---- protocol errors ----------------------------------------------------- */

static void expect_frame_error(const uint8_t *p, size_t len, shoal_err err, const char *what,
                               uint16_t code)
{
    shoal_ws *ws = open_default();
    run r = feed_raw(ws, p, len);
    expect_failure(ws, &r, err, what, code);
    shoal_ws_free(ws);
}

Test(protocol_ws_errors, reserved_bits_and_opcodes)
{
    const uint8_t rsv[] = {0x40, 0x20, 0x10};
    for (size_t i = 0; i < 3; i++) {
        const uint8_t f[] = {(uint8_t)(0x81 | rsv[i]), 0x00};
        expect_frame_error(f, 2, SHOAL_EPROTO, "reserved bits", 1002);
    }
    const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof ops; i++) {
        const uint8_t f[] = {(uint8_t)(0x80 | ops[i]), 0x00};
        expect_frame_error(f, 2, SHOAL_EPROTO, "reserved opcode", 1002);
    }
}

Test(protocol_ws_errors, control_frame_rules)
{
    const uint8_t fragmented_ping[] = {0x09, 0x00};
    expect_frame_error(fragmented_ping, 2, SHOAL_EPROTO, "is fragmented", 1002);
    const uint8_t long_ping[] = {0x89, 0x7E, 0x00, 0x7E};
    expect_frame_error(long_ping, 4, SHOAL_EPROTO, "over 125 bytes", 1002);
    const uint8_t close_one_byte[] = {0x88, 0x01, 0x03};
    expect_frame_error(close_one_byte, 3, SHOAL_EPROTO, "1-byte payload", 1002);
}

Test(protocol_ws_errors, continuation_rules)
{
    const uint8_t orphan[] = {0x80, 0x01, 'x'};
    expect_frame_error(orphan, 3, SHOAL_EPROTO, "continuation frame without a message", 1002);
    const uint8_t interleaved[] = {0x01, 0x01, 'a', 0x82, 0x01, 'b'};
    expect_frame_error(interleaved, 6, SHOAL_EPROTO, "new binary message started", 1002);
    const uint8_t interleaved_text[] = {0x02, 0x01, 'a', 0x01, 0x01, 'b'};
    expect_frame_error(interleaved_text, 6, SHOAL_EPROTO, "new text message started", 1002);
}

Test(protocol_ws_errors, lengths_must_be_minimal_and_64_bit_top_bit_clear)
{
    const uint8_t short16[] = {0x82, 0x7E, 0x00, 0x7D};
    expect_frame_error(short16, 4, SHOAL_EPROTO, "16-bit frame length 125", 1002);
    const uint8_t short64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    expect_frame_error(short64, 10, SHOAL_EPROTO, "64-bit frame length 65535", 1002);
    const uint8_t top_bit[] = {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
    expect_frame_error(top_bit, 10, SHOAL_EPROTO, "most significant bit", 1002);
    /* 2^63 - 1 is well-formed but far over any limit. */
    const uint8_t huge[] = {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    expect_frame_error(huge, 10, SHOAL_ELIMIT, "9223372036854775807 bytes exceeds", 1009);
}

Test(protocol_ws_errors, frame_and_message_limits)
{
    test_rng rng = {0};
    shoal_ws_config c = base_config(&rng);
    c.max_message = 100;
    c.max_frame_recv = 60;
    uint8_t payload[100];
    memset(payload, 'z', sizeof payload);

    shoal_ws *ws = open_with(&c);
    bytes in = {NULL, 0};
    server_frame(&in, 0x82, payload, 61);
    run r = feed_all(ws, &in);
    expect_failure(ws, &r, SHOAL_ELIMIT, "61 bytes exceeds the limit of 60 (max_frame_recv)", 1009);
    shoal_ws_free(ws);
    free(in.p);

    /* 60 + 40 is exactly the limit; one more byte in a third fragment is
     * refused before its payload arrives. */
    ws = open_with(&c);
    in = (bytes){NULL, 0};
    server_frame(&in, 0x02, payload, 60);
    server_frame(&in, 0x80, payload, 40);
    server_frame(&in, 0x02, payload, 60);
    server_frame(&in, 0x00, payload, 40);
    server_frame(&in, 0x80, payload, 1);
    r = feed_all(ws, &in);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].len, 100);
    expect_failure(ws, &r, SHOAL_ELIMIT, "at least 101 bytes exceeds the limit of 100", 1009);
    shoal_ws_free(ws);
    free(in.p);
}

Test(protocol_ws_errors, default_limit_is_one_mebibyte_plus_overhead)
{
    shoal_ws *ws = open_default();
    const uint64_t len = SHOAL_WS_DEFAULT_MAX_MESSAGE + 1;
    uint8_t f[10] = {0x82, 0x7F};
    for (int i = 0; i < 8; i++)
        f[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    run r = feed_raw(ws, f, sizeof f);
    expect_failure(ws, &r, SHOAL_ELIMIT, "1114113 bytes exceeds", 1009);
    shoal_ws_free(ws);
}

Test(protocol_ws_errors, close_codes_are_validated)
{
    const uint16_t invalid[] = {0,    999,  1004, 1005, 1006, 1015,
                                1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        const uint8_t f[] = {0x88, 0x02, (uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        expect_frame_error(f, 4, SHOAL_EPROTO, "invalid status code", 1002);
    }
    const uint8_t bad_reason[] = {0x88, 0x04, 0x03, 0xE8, 0xC3, 0x28};
    expect_frame_error(bad_reason, 6, SHOAL_EPROTO, "Close reason is not valid UTF-8", 1007);
}

/* ---- close handshake ----------------------------------------------------- */

Test(protocol_ws_close, server_close_is_echoed_and_reported)
{
    const uint16_t valid[] = {1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        shoal_ws *ws = open_default();
        uint8_t payload[5] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i], 'b', 'y', 'e'};
        bytes in = {NULL, 0};
        server_frame(&in, 0x88, payload, 5);
        server_frame(&in, 0x81, "late", 4); /* after Close: never read */
        run r = feed_all(ws, &in);
        cr_assert_eq(r.err, SHOAL_ECLOSED);
        cr_assert_eq(r.count, 1);
        cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_CLOSE);
        cr_assert_eq(r.ev[0].close_code, valid[i]);
        cr_assert_eq(r.ev[0].len, 3);
        cr_assert_str_eq((const char *)r.ev[0].data, "bye");
        cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_CLOSED);
        bytes out = drain(ws);
        cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
        cr_assert_eq(frames_buf[0].opcode, 0x8);
        cr_assert_eq(frames_buf[0].len, 2);
        cr_assert_eq(frames_buf[0].payload[0] << 8 | frames_buf[0].payload[1], valid[i]);
        free(out.p);
        cr_assert_eq(shoal_ws_send_binary(ws, payload, 1, NULL), SHOAL_ECLOSED);
        run_free(&r);
        free(in.p);
        shoal_ws_free(ws);
    }
}

Test(protocol_ws_close, close_without_code_reports_1005_and_echoes_empty)
{
    shoal_ws *ws = open_default();
    const uint8_t f[] = {0x88, 0x00};
    run r = feed_raw(ws, f, 2);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(r.ev[0].close_code, SHOAL_WS_CLOSE_NO_STATUS);
    cr_assert_eq(r.ev[0].len, 0);
    bytes out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].opcode, 0x8);
    cr_assert_eq(frames_buf[0].len, 0);
    free(out.p);
    run_free(&r);
    shoal_ws_free(ws);
}

Test(protocol_ws_close, client_close_waits_for_the_server_and_still_receives)
{
    shoal_ws *ws = open_default();
    cr_assert_eq(shoal_ws_send_text(ws, "last", 4, NULL), SHOAL_OK);
    cr_assert_eq(shoal_ws_close(ws, SHOAL_WS_CLOSE_GOING_AWAY, "bye", NULL), SHOAL_OK);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_CLOSING);
    shoal_errinfo ei;
    cr_assert_eq(shoal_ws_send_text(ws, "x", 1, &ei), SHOAL_ECLOSED);
    cr_assert_eq(shoal_ws_close(ws, 1000, NULL, NULL), SHOAL_ECLOSED);
    bytes out = drain_by(ws, 3);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 2);
    cr_assert_eq(frames_buf[0].opcode, 0x1);
    cr_assert_eq(frames_buf[1].opcode, 0x8);
    cr_assert_eq(frames_buf[1].len, 5);
    cr_assert_eq(memcmp(frames_buf[1].payload,
                        "\x03\xe9"
                        "bye",
                        5),
                 0);
    free(out.p);

    bytes in = {NULL, 0};
    server_frame(&in, 0x82, "data", 4);
    server_frame(&in, 0x89, "ping", 4); /* no Pong after our Close */
    server_frame(&in, 0x88, "\x03\xe9", 2);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(r.count, 2);
    cr_assert_eq(r.ev[0].kind, SHOAL_WS_EVENT_BINARY);
    cr_assert_eq(r.ev[1].kind, SHOAL_WS_EVENT_CLOSE);
    cr_assert_eq(r.ev[1].close_code, 1001);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_CLOSED);
    out = drain(ws);
    cr_assert_eq(out.len, 0, "no second Close and no Pong");
    run_free(&r);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_close, close_arguments_are_checked)
{
    shoal_ws *ws = open_default();
    shoal_errinfo ei;
    const uint16_t bad[] = {1, 999, 1004, 1005, 1006, 1015, 2000, 5000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(shoal_ws_close(ws, bad[i], NULL, &ei), SHOAL_EINVAL, "%u", bad[i]);
        cr_assert_not_null(strstr(ei.msg, "not a close code"));
    }
    cr_assert_eq(shoal_ws_close(ws, 0, "why", &ei), SHOAL_EINVAL);
    char reason[200];
    memset(reason, 'r', sizeof reason);
    reason[124] = 0;
    cr_assert_eq(shoal_ws_close(ws, 1000, reason, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "124 bytes exceeds 123"));
    cr_assert_eq(shoal_ws_close(ws, 1000, "\xc3\x28", &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_OPEN, "refused closes leave the state");
    bytes out = drain(ws);
    cr_assert_eq(out.len, 0);
    reason[123] = 0;
    cr_assert_eq(shoal_ws_close(ws, 4000, reason, &ei), SHOAL_OK);
    out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].len, 125);
    free(out.p);
    shoal_ws_free(ws);

    ws = open_default();
    cr_assert_eq(shoal_ws_close(ws, 0, NULL, &ei), SHOAL_OK);
    out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].len, 0);
    free(out.p);
    shoal_ws_free(ws);
}

/* ---- sending ------------------------------------------------------------- */

Test(protocol_ws_send, masked_hello_matches_rfc_vector)
{
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    test_rng rng = {0};
    shoal_ws_config c = base_config(&rng);
    shoal_ws *ws = open_with(&c);
    rng.script = key;
    rng.script_len = 4;
    cr_assert_eq(shoal_ws_send_text(ws, "Hello", 5, NULL), SHOAL_OK);
    bytes out = drain(ws);
    const uint8_t want[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    cr_assert_eq(out.len, sizeof want);
    cr_assert_eq(memcmp(out.p, want, sizeof want), 0);
    free(out.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_send, masking_round_trips_at_every_length_form)
{
    shoal_ws *ws = open_default();
    const size_t lens[] = {0, 1, 125, 126, 127, 256, 65535, 65536, 65537};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t len = lens[k];
        uint8_t *data = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)(i * 31 + k);
        cr_assert_eq(shoal_ws_send_binary(ws, data, len, NULL), SHOAL_OK);
        bytes out = drain_by(ws, 1000);
        cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
        const size_t hdr = len < 126 ? 6 : len <= 0xFFFF ? 8 : 14;
        cr_assert_eq(out.len, hdr + len);
        cr_assert_eq(frames_buf[0].opcode, 0x2);
        cr_assert(frames_buf[0].fin);
        cr_assert_eq(frames_buf[0].len, len);
        cr_assert_eq(memcmp(frames_buf[0].payload, data, len), 0);
        free(out.p);
        free(data);
    }
    shoal_ws_free(ws);
}

Test(protocol_ws_send, every_frame_gets_a_fresh_masking_key)
{
    shoal_ws *ws = open_default();
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"a", 1, NULL), SHOAL_OK);
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"a", 1, NULL), SHOAL_OK);
    bytes out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 2);
    cr_assert_neq(memcmp(frames_buf[0].mask, frames_buf[1].mask, 4), 0);
    free(out.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_send, fragments_with_a_small_max_frame)
{
    shoal_ws_config c = base_config(NULL);
    c.max_frame_send = 3;
    shoal_ws *ws = open_with(&c);
    struct {
        const char *text;
        size_t frames;
    } cases[] = {{"Hello", 2}, {"abcdef", 2}, {"abc", 1}, {"", 1}, {"abcdefg", 3}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *t = cases[k].text;
        const size_t len = strlen(t);
        cr_assert_eq(shoal_ws_send_text(ws, t, len, NULL), SHOAL_OK);
        bytes out = drain(ws);
        size_t n = client_frames_parse(out.p, out.len, frames_buf, 8);
        cr_assert_eq(n, cases[k].frames, "\"%s\": %zu frames", t, n);
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(frames_buf[i].opcode, i == 0 ? 0x1 : 0x0);
            cr_assert_eq(frames_buf[i].fin, i + 1 == n);
            cr_assert_leq(frames_buf[i].len, 3);
            cr_assert_eq(memcmp(frames_buf[i].payload, t + at, frames_buf[i].len), 0);
            at += frames_buf[i].len;
        }
        cr_assert_eq(at, len);
        free(out.p);
    }
    shoal_ws_free(ws);
}

Test(protocol_ws_send, refused_sends_queue_nothing)
{
    test_rng rng = {0};
    shoal_ws_config c = base_config(&rng);
    c.max_message = 10;
    shoal_ws *ws = open_with(&c);
    shoal_errinfo ei;
    cr_assert_eq(shoal_ws_send_text(ws, "ab\xff", 3, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "not valid UTF-8 at byte 2"));
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"0123456789A", 11, &ei), SHOAL_ELIMIT);
    cr_assert_not_null(strstr(ei.msg, "exceeds max_message (10 bytes)"));
    cr_assert_eq(shoal_ws_send_binary(ws, NULL, 1, &ei), SHOAL_EINVAL);
    uint8_t big_ping[126] = {0};
    cr_assert_eq(shoal_ws_ping(ws, big_ping, 126, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_ws_send_binary(NULL, big_ping, 1, &ei), SHOAL_EINVAL);
    rng.fail = true;
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"x", 1, &ei), SHOAL_ECRYPTO);
    cr_assert_eq(shoal_ws_close(ws, 1000, NULL, &ei), SHOAL_ECRYPTO);
    cr_assert_eq(shoal_ws_get_state(ws), SHOAL_WS_OPEN);
    bytes out = drain(ws);
    cr_assert_eq(out.len, 0);
    rng.fail = false;
    cr_assert_eq(shoal_ws_ping(ws, big_ping, 125, &ei), SHOAL_OK);
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"0123456789", 10, &ei), SHOAL_OK);
    out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 2);
    cr_assert_eq(frames_buf[0].opcode, 0x9);
    cr_assert_eq(frames_buf[0].len, 125);
    free(out.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_send, consume_refuses_more_than_pending)
{
    shoal_ws_config c = base_config(NULL);
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    size_t n;
    cr_assert_not_null(shoal_ws_pending(ws, &n));
    cr_assert_eq(shoal_ws_consume(ws, n + 1), SHOAL_EINVAL);
    cr_assert_eq(shoal_ws_consume(ws, 0), SHOAL_OK);
    size_t again;
    shoal_ws_pending(ws, &again);
    cr_assert_eq(again, n);
    cr_assert_eq(shoal_ws_consume(ws, n), SHOAL_OK);
    cr_assert_null(shoal_ws_pending(ws, &n));
    cr_assert_eq(n, 0);
    cr_assert_eq(shoal_ws_consume(ws, 1), SHOAL_EINVAL);
    shoal_ws_free(ws);
    shoal_ws_free(NULL);
}

/* ---- pong bookkeeping ---------------------------------------------------- */

Test(protocol_ws_pong, a_ping_flood_queues_one_pong_for_the_latest_ping)
{
    shoal_ws *ws = open_default();
    bytes in = {NULL, 0};
    for (int i = 0; i < 1000; i++) {
        char payload[8];
        int n = snprintf(payload, sizeof payload, "%d", i);
        server_frame(&in, 0x89, payload, (size_t)n);
    }
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    bytes out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].opcode, 0xA);
    cr_assert_eq(frames_buf[0].len, 3);
    cr_assert_eq(memcmp(frames_buf[0].payload, "999", 3), 0);
    free(out.p);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_pong, a_pong_on_the_wire_is_never_replaced)
{
    shoal_ws *ws = open_default();
    bytes in = {NULL, 0};
    server_frame(&in, 0x89, "first", 5);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    size_t n;
    const uint8_t *p = shoal_ws_pending(ws, &n);
    cr_assert_eq(n, 11);
    bytes sent = {NULL, 0};
    bytes_add(&sent, p, 4); /* part of the first Pong is on the wire */
    cr_assert_eq(shoal_ws_consume(ws, 4), SHOAL_OK);
    free(in.p);
    in = (bytes){NULL, 0};
    server_frame(&in, 0x89, "second", 6);
    r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"data", 4, NULL), SHOAL_OK);
    bytes rest = drain(ws);
    bytes_add(&sent, rest.p, rest.len);
    cr_assert_eq(client_frames_parse(sent.p, sent.len, frames_buf, 8), 2);
    cr_assert_eq(frames_buf[0].opcode, 0xA);
    cr_assert_eq(memcmp(frames_buf[0].payload, "first", 5), 0);
    cr_assert_eq(frames_buf[1].opcode, 0x2);
    free(rest.p);
    free(sent.p);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_pong, a_waiting_pong_goes_out_at_the_next_frame_boundary)
{
    shoal_ws *ws = open_default();
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"one", 3, NULL), SHOAL_OK);
    size_t n;
    shoal_ws_pending(ws, &n);
    cr_assert_eq(shoal_ws_consume(ws, 2), SHOAL_OK); /* "one" is half sent */
    bytes in = {NULL, 0};
    server_frame(&in, 0x89, "p", 1);
    run r = feed_all(ws, &in);
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"two", 3, NULL), SHOAL_OK);
    bytes out = drain(ws);
    /* The rest of "one", then the Pong, then "two". */
    cr_assert_eq(out.len, 7 + 7 + 9);
    cr_assert_eq(client_frames_parse(out.p + 7, out.len - 7, frames_buf, 8), 2);
    cr_assert_eq(frames_buf[0].opcode, 0xA);
    cr_assert_eq(frames_buf[1].opcode, 0x2);
    cr_assert_eq(memcmp(frames_buf[1].payload, "two", 3), 0);
    free(out.p);
    free(in.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_pong, failure_close_goes_after_queued_frames)
{
    shoal_ws *ws = open_default();
    cr_assert_eq(shoal_ws_send_binary(ws, (const uint8_t *)"queued", 6, NULL), SHOAL_OK);
    const uint8_t ping[] = {0x89, 0x00};
    run r = feed_raw(ws, ping, 2);
    cr_assert_eq(r.err, SHOAL_OK);
    const uint8_t bad[] = {0xC1, 0x00};
    r = feed_raw(ws, bad, 2);
    cr_assert_eq(r.err, SHOAL_EPROTO);
    bytes out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 3);
    cr_assert_eq(frames_buf[0].opcode, 0x2);
    cr_assert_eq(frames_buf[1].opcode, 0xA);
    cr_assert_eq(frames_buf[2].opcode, 0x8);
    cr_assert_eq(frames_buf[2].payload[0] << 8 | frames_buf[2].payload[1], 1002);
    cr_assert_eq(memcmp(frames_buf[2].payload + 2, "protocol error", 14), 0);
    free(out.p);
    shoal_ws_free(ws);
}

/* ---- every split of the input ---------------------------------------------- */

/* The handshake and a mix of frames: every kind of event, fragments with
 * control frames between them, all three length forms. */
static bytes script_stream(void)
{
    bytes in = {NULL, 0};
    bytes_add(&in, ok_response, strlen(ok_response));
    server_frame(&in, 0x81, "Hello", 5);
    server_frame(&in, 0x01, "\xe2\x82", 2);
    server_frame(&in, 0x89, "ping", 4);
    server_frame(&in, 0x80, "\xac!", 2);
    static uint8_t medium[300];
    for (size_t i = 0; i < sizeof medium; i++)
        medium[i] = (uint8_t)i;
    server_frame(&in, 0x02, medium, 200);
    server_frame(&in, 0x8A, "pong", 4);
    server_frame(&in, 0x80, medium + 200, 100);
    server_frame(&in, 0x82, NULL, 0);
    server_frame(&in, 0x88, "\x03\xe8ok", 4);
    return in;
}

static run run_script(const bytes *in, const size_t *cuts, size_t ncuts, bytes *out)
{
    shoal_ws_config c = base_config(NULL);
    test_rng rng = {0};
    c.random_ctx = &rng;
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    bytes req = drain(ws);
    free(req.p);
    run r;
    memset(&r, 0, sizeof r);
    size_t at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : in->len;
        /* An empty read after the Close would get SHOAL_ECLOSED. */
        if (end == at && shoal_ws_get_state(ws) == SHOAL_WS_CLOSED)
            continue;
        feed_chunk(ws, &r, in->p + at, end - at, false);
        at = end;
    }
    *out = drain(ws);
    shoal_ws_free(ws);
    return r;
}

static void expect_script_result(const run *r)
{
    cr_assert_eq(r->err, SHOAL_OK, "%s", r->ei.msg);
    cr_assert_eq(r->count, 7);
    cr_assert_eq(r->ev[0].kind, SHOAL_WS_EVENT_OPEN);
    cr_assert_eq(r->ev[1].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_eq(r->ev[2].kind, SHOAL_WS_EVENT_TEXT);
    cr_assert_str_eq((const char *)r->ev[2].data, "\xe2\x82\xac!");
    cr_assert_eq(r->ev[3].kind, SHOAL_WS_EVENT_PONG);
    cr_assert_eq(r->ev[4].kind, SHOAL_WS_EVENT_BINARY);
    cr_assert_eq(r->ev[4].len, 300);
    cr_assert_eq(r->ev[5].kind, SHOAL_WS_EVENT_BINARY);
    cr_assert_eq(r->ev[5].len, 0);
    cr_assert_eq(r->ev[6].kind, SHOAL_WS_EVENT_CLOSE);
    cr_assert_eq(r->ev[6].close_code, 1000);
    cr_assert_str_eq((const char *)r->ev[6].data, "ok");
}

Test(protocol_ws_split, every_one_and_two_way_split_gives_the_same_events)
{
    bytes in = script_stream();
    bytes ref_out;
    run ref = run_script(&in, NULL, 0, &ref_out);
    expect_script_result(&ref);
    /* The Pong for "ping", then the echo of the Close. */
    cr_assert_eq(client_frames_parse(ref_out.p, ref_out.len, frames_buf, 8), 2);
    cr_assert_eq(frames_buf[0].opcode, 0xA);
    cr_assert_eq(frames_buf[1].opcode, 0x8);
    for (size_t a = 0; a <= in.len; a++) {
        for (size_t b = a; b <= in.len; b += (a % 7 == 0 ? 1 : 13)) {
            size_t cuts[2] = {a, b};
            bytes out;
            run r = run_script(&in, cuts, 2, &out);
            run_expect_same(&ref, &r);
            cr_assert_eq(out.len, ref_out.len);
            cr_assert_eq(memcmp(out.p, ref_out.p, out.len), 0);
            free(out.p);
            run_free(&r);
        }
    }
    run_free(&ref);
    free(ref_out.p);
    free(in.p);
}

Test(protocol_ws_split, byte_at_a_time)
{
    bytes in = script_stream();
    bytes ref_out;
    run ref = run_script(&in, NULL, 0, &ref_out);
    size_t *cuts = malloc(in.len * sizeof *cuts);
    for (size_t i = 0; i < in.len; i++)
        cuts[i] = i + 1;
    bytes out;
    run r = run_script(&in, cuts, in.len - 1, &out);
    run_expect_same(&ref, &r);
    cr_assert_eq(out.len, ref_out.len);
    free(cuts);
    free(out.p);
    run_free(&r);
    run_free(&ref);
    free(ref_out.p);
    free(in.p);
}

Test(protocol_ws_split, errors_are_found_at_every_split)
{
    /* A masked frame in the middle: the same error at the same place. */
    bytes in = {NULL, 0};
    bytes_add(&in, ok_response, strlen(ok_response));
    server_frame(&in, 0x81, "ok", 2);
    const uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'x'};
    bytes_add(&in, masked, sizeof masked);
    for (size_t a = 0; a <= in.len; a++) {
        size_t cuts[1] = {a};
        bytes out;
        run r = run_script(&in, cuts, 1, &out);
        cr_assert_eq(r.err, SHOAL_EPROTO);
        cr_assert_eq(r.count, 2);
        cr_assert_not_null(strstr(r.ei.msg, "masked frame"));
        free(out.p);
        run_free(&r);
    }
    free(in.p);
}

/* ---- allocation failures --------------------------------------------------- */

Test(protocol_ws_alloc, new_fails_cleanly_at_every_allocation)
{
    shoal_ws_config c = base_config(NULL);
    c.subprotocol = SHOAL_PROTOCOL_SUBPROTOCOL;
    shoal_failalloc_install(LONG_MAX);
    shoal_ws *ws;
    cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
    shoal_ws_free(ws);
    const long allocations = shoal_failalloc_attempts();
    cr_assert_eq(shoal_failalloc_live(), 0);
    cr_assert_geq(allocations, 3);
    for (long k = 0; k < allocations; k++) {
        shoal_failalloc_install(k);
        shoal_errinfo ei;
        ws = (shoal_ws *)1;
        shoal_err err = shoal_ws_new(&c, &ws, &ei);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(err, SHOAL_ENOMEM, "k=%ld", k);
        cr_assert_null(ws);
        cr_assert_eq(live, 0, "k=%ld leaks %ld blocks", k, live);
        cr_assert_not_null(strstr(ei.msg, "out of memory"));
    }
}

Test(protocol_ws_alloc, feed_enomem_is_retryable_and_loses_nothing)
{
    bytes in = script_stream();
    bytes ref_out;
    run ref = run_script(&in, NULL, 0, &ref_out);
    for (long k = 0; k < 6; k++) {
        shoal_ws_config c = base_config(NULL);
        test_rng rng = {0};
        c.random_ctx = &rng;
        shoal_ws *ws;
        cr_assert_eq(shoal_ws_new(&c, &ws, NULL), SHOAL_OK);
        free(drain(ws).p);
        run r;
        memset(&r, 0, sizeof r);
        shoal_failalloc_install(k);
        for (size_t i = 0; i < in.len; i += 5) /* in pieces, to grow buffers more often */
            feed_chunk(ws, &r, in.p + i, in.len - i < 5 ? in.len - i : 5, true);
        shoal_failalloc_uninstall();
        /* Three allocations: "Hello", then the 300-byte message twice. */
        cr_assert_eq(r.enomem, k < 3 ? 1 : 0, "k=%ld", k);
        run_expect_same(&ref, &r);
        bytes out = drain(ws);
        cr_assert_eq(out.len, ref_out.len);
        cr_assert_eq(memcmp(out.p, ref_out.p, out.len), 0);
        free(out.p);
        run_free(&r);
        shoal_ws_free(ws);
    }
    run_free(&ref);
    free(ref_out.p);
    free(in.p);
}

Test(protocol_ws_alloc, send_enomem_queues_nothing)
{
    shoal_ws *ws = open_default();
    uint8_t data[5000];
    memset(data, 7, sizeof data);
    shoal_failalloc_install(0);
    shoal_errinfo ei;
    shoal_err err = shoal_ws_send_binary(ws, data, sizeof data, &ei);
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM);
    cr_assert_not_null(strstr(ei.msg, "out of memory"));
    bytes out = drain(ws);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(shoal_ws_send_binary(ws, data, sizeof data, &ei), SHOAL_OK);
    out = drain(ws);
    cr_assert_eq(client_frames_parse(out.p, out.len, frames_buf, 8), 1);
    cr_assert_eq(frames_buf[0].len, sizeof data);
    free(out.p);
    shoal_ws_free(ws);
}

Test(protocol_ws_alloc, large_message_buffer_is_released_after_use)
{
    shoal_ws *ws = open_default();
    const size_t big = 200000;
    uint8_t *payload = calloc(1, big);
    bytes in = {NULL, 0};
    server_frame(&in, 0x82, payload, big);
    server_frame(&in, 0x82, "small", 5);
    shoal_failalloc_install(LONG_MAX);
    run r = feed_all(ws, &in);
    const long live = shoal_failalloc_live(), attempts = shoal_failalloc_attempts();
    shoal_failalloc_uninstall();
    cr_assert_eq(r.count, 2);
    cr_assert_eq(r.ev[1].len, 5);
    /* The 200 kB buffer was freed, and a small one made for "small". */
    cr_assert_eq(attempts, 2);
    cr_assert_eq(live, 1);
    run_free(&r);
    free(in.p);
    free(payload);
    shoal_ws_free(ws);
}
