/* The RFC 6455 client state machine: framing, masking, fragmentation,
 * ping/pong and the close handshake. No I/O: see shoal/ws.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/platform_util.h>

#include "shoal/alloc.h"
#include "ws_int.h"

/* A message buffer larger than this is released once its message was
 * handed out, so an idle connection does not pin a megabyte. */
#define WS_MSG_KEEP ((size_t)64 * 1024)

static const uint8_t empty_payload[1] = {0};

/* Close codes an endpoint may put on the wire (RFC 6455 §7.4.1 and the
 * IANA registry: 1012-1014 were registered later; 1004, 1005, 1006 and 1015
 * are reserved or local-only; 3000-4999 belong to libraries and
 * applications). */
static bool close_code_sendable(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

static size_t frame_size(size_t payload_len)
{
    size_t length_bytes = payload_len < 126 ? 0 : payload_len <= 0xFFFF ? 2 : 8;
    return 2 + length_bytes + 4 + payload_len;
}

/* Writes one masked frame (RFC 6455 §5.2, §5.3) at dst, which has room for
 * frame_size(len) bytes. The masking key is fresh for every frame. */
static shoal_err frame_write(shoal_ws *ws, uint8_t *dst, uint8_t first_byte, const uint8_t *payload,
                             size_t len, size_t *written)
{
    uint8_t key[4];
    if (ws->random(ws->random_ctx, key, sizeof key) != SHOAL_OK)
        return SHOAL_ECRYPTO;
    size_t at = 0;
    dst[at++] = first_byte;
    if (len < 126) {
        dst[at++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        dst[at++] = 0x80 | 126;
        dst[at++] = (uint8_t)(len >> 8);
        dst[at++] = (uint8_t)len;
    } else {
        dst[at++] = 0x80 | 127;
        const uint64_t wide = (uint64_t)len;
        for (int shift = 56; shift >= 0; shift -= 8)
            dst[at++] = (uint8_t)(wide >> shift);
    }
    memcpy(dst + at, key, sizeof key);
    at += sizeof key;
    /* Eight bytes at a time (the key twice over; eight is a multiple of
     * its period, so the tail starts at key[0]): the byte loop ran at a
     * byte per cycle, and every byte a device uploads passes here. */
    const uint8_t key8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t k;
    memcpy(&k, key8, sizeof k);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, payload + i, sizeof w);
        w ^= k;
        memcpy(dst + at + i, &w, sizeof w);
    }
    for (; i < len; i++)
        dst[at + i] = payload[i] ^ key[i & 3];
    *written = at + len;
    return SHOAL_OK;
}

/* Makes room for `extra` more bytes in the output queue. A fresh block
 * instead of realloc, so the old one (it may have held the request's
 * Authorization header) is wiped before it is freed. */
static shoal_err out_reserve(shoal_ws *ws, size_t extra)
{
    if (ws->out_off == ws->out_len)
        ws->out_off = ws->out_len = 0;
    if (ws->out_cap - ws->out_len >= extra)
        return SHOAL_OK;
    size_t unsent = ws->out_len - ws->out_off;
    size_t need;
    if (__builtin_add_overflow(unsent, extra, &need))
        return SHOAL_ENOMEM;
    if (ws->out_cap - unsent >= extra) {
        memmove(ws->out, ws->out + ws->out_off, unsent);
        ws->out_off = 0;
        ws->out_len = unsent;
        return SHOAL_OK;
    }
    size_t cap = ws->out_cap * 2 > need ? ws->out_cap * 2 : need;
    if (cap < 256)
        cap = 256;
    uint8_t *grown = shoal_malloc(cap);
    if (!grown) {
        grown = shoal_malloc(need);
        if (!grown)
            return SHOAL_ENOMEM;
        cap = need;
    }
    if (unsent)
        memcpy(grown, ws->out + ws->out_off, unsent);
    if (ws->out) {
        mbedtls_platform_zeroize(ws->out, ws->out_cap);
        shoal_free(ws->out);
    }
    ws->out = grown;
    ws->out_cap = cap;
    ws->out_off = 0;
    ws->out_len = unsent;
    return SHOAL_OK;
}

/* A Pong waiting in its slot that the caller has not seen yet can move
 * into the queue at the next frame boundary, so a steady stream of sends
 * cannot starve it. */
static bool pong_movable(const shoal_ws *ws)
{
    return ws->pong_len > 0 && !ws->pong_exposed;
}

/* Queues a whole message, or a control frame, as frames of at most
 * frame_max payload bytes. All or nothing. */
static shoal_err frames_queue(shoal_ws *ws, uint8_t opcode, const uint8_t *data, size_t len,
                              size_t frame_max, shoal_errinfo *ei)
{
    size_t frames = len / frame_max + (len % frame_max != 0);
    if (frames == 0)
        frames = 1;
    const size_t last = len - (frames - 1) * frame_max;
    const size_t largest = frames > 1 ? frame_max : last;
    size_t total = 0;
    if (largest > SIZE_MAX - WS_MAX_CLIENT_HEADER ||
        __builtin_mul_overflow(frames - 1, frame_size(frame_max), &total) ||
        __builtin_add_overflow(total, frame_size(last), &total) ||
        __builtin_add_overflow(total, pong_movable(ws) ? ws->pong_len : 0, &total))
        return shoal_errinfo_set(ei, SHOAL_ELIMIT, "websocket: a %zu-byte message is too large",
                                 len);
    const bool move_pong = pong_movable(ws);
    if (out_reserve(ws, total) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                 "websocket: out of memory queueing a %zu-byte message", len);

    size_t at = ws->out_len;
    if (move_pong) {
        memcpy(ws->out + at, ws->pong, ws->pong_len);
        at += ws->pong_len;
    }
    for (size_t i = 0; i < frames; i++) {
        const size_t offset = i * frame_max;
        const size_t chunk = i + 1 == frames ? last : frame_max;
        const uint8_t fin = i + 1 == frames ? 0x80 : 0;
        const uint8_t op = i == 0 ? opcode : WS_OP_CONT;
        size_t written;
        if (frame_write(ws, ws->out + at, fin | op, data ? data + offset : empty_payload, chunk,
                        &written) != SHOAL_OK) {
            mbedtls_platform_zeroize(ws->out + ws->out_len, at - ws->out_len);
            return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                     "websocket: the random callback failed to give a masking "
                                     "key");
        }
        at += written;
    }
    ws->out_len = at;
    if (move_pong)
        ws->pong_len = ws->pong_off = 0;
    return SHOAL_OK;
}

static shoal_err send_check(shoal_ws *ws, const void *data, size_t len, shoal_errinfo *ei)
{
    if (!ws || (!data && len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "websocket: NULL argument");
    if (ws->state == SHOAL_WS_CONNECTING)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "websocket: cannot send before the handshake completed");
    if (ws->state != SHOAL_WS_OPEN)
        return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                 "websocket: cannot send: the connection is closing or closed");
    return SHOAL_OK;
}

static shoal_err message_send(shoal_ws *ws, uint8_t opcode, const uint8_t *data, size_t len,
                              shoal_errinfo *ei)
{
    shoal_err err = send_check(ws, data, len, ei);
    if (err != SHOAL_OK)
        return err;
    if (len > ws->max_message)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "websocket: a %zu-byte message exceeds max_message (%zu bytes)",
                                 len, ws->max_message);
    return frames_queue(ws, opcode, data, len, ws->max_frame_send, ei);
}

shoal_err shoal_ws_send_binary(shoal_ws *ws, const uint8_t *data, size_t len, shoal_errinfo *ei)
{
    return message_send(ws, WS_OP_BINARY, data, len, ei);
}

shoal_err shoal_ws_send_text(shoal_ws *ws, const char *text, size_t len, shoal_errinfo *ei)
{
    size_t bad_at;
    if (text && !shoal_ws_utf8_valid((const uint8_t *)text, len, &bad_at))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket: text message is not valid UTF-8 at byte %zu", bad_at);
    return message_send(ws, WS_OP_TEXT, (const uint8_t *)text, len, ei);
}

shoal_err shoal_ws_ping(shoal_ws *ws, const uint8_t *payload, size_t len, shoal_errinfo *ei)
{
    shoal_err err = send_check(ws, payload, len, ei);
    if (err != SHOAL_OK)
        return err;
    if (len > SHOAL_WS_MAX_CONTROL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket: a Ping payload of %zu bytes exceeds 125", len);
    return frames_queue(ws, WS_OP_PING, payload, len, SHOAL_WS_MAX_CONTROL, ei);
}

/* Fills the Close slot; the Close is sent after everything else and is the
 * last frame. Never allocates, so a connection can always be failed. */
static shoal_err close_queue(shoal_ws *ws, uint16_t code, const char *reason, size_t reason_len)
{
    uint8_t payload[SHOAL_WS_MAX_CONTROL];
    size_t len = 0;
    if (code != 0) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (reason_len > 0)
            memcpy(payload + 2, reason, reason_len);
        len = 2 + reason_len;
    }
    size_t written;
    shoal_err err = frame_write(ws, ws->close_frame, 0x80 | WS_OP_CLOSE, payload, len, &written);
    if (err != SHOAL_OK)
        return err;
    ws->close_len = written;
    ws->close_off = 0;
    ws->close_sent = true;
    return SHOAL_OK;
}

shoal_err shoal_ws_close(shoal_ws *ws, uint16_t code, const char *reason, shoal_errinfo *ei)
{
    if (!ws)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "websocket: NULL argument");
    if (ws->state == SHOAL_WS_CONNECTING)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "websocket: cannot close before the handshake completed; close "
                                 "the transport instead");
    if (ws->state != SHOAL_WS_OPEN || ws->close_sent)
        return shoal_errinfo_set(ei, SHOAL_ECLOSED, "websocket: a Close was already sent");
    const size_t reason_len = reason ? strlen(reason) : 0;
    if (code == 0 && reason_len > 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "websocket: a close reason needs a status code");
    if (code != 0 && !close_code_sendable(code))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket: %u is not a close code an endpoint may send "
                                 "(1000-1003, 1007-1014, 3000-4999)",
                                 (unsigned)code);
    if (reason_len > SHOAL_WS_MAX_CLOSE_REASON)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "websocket: a close reason of %zu bytes exceeds 123", reason_len);
    size_t bad_at;
    if (!shoal_ws_utf8_valid((const uint8_t *)reason, reason_len, &bad_at))
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "websocket: the close reason is not valid UTF-8 at byte %zu", bad_at);
    if (close_queue(ws, code, reason, reason_len) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                 "websocket: the random callback failed to give a masking key");
    ws->state = SHOAL_WS_CLOSING;
    return SHOAL_OK;
}

/* Ends the connection after a protocol violation (RFC 6455 §7.1.7): queue
 * a Close with `code` if the connection was open, then refuse everything.
 * ei was filled by the caller. */
static shoal_err fail(shoal_ws *ws, shoal_err err, uint16_t code)
{
    if (ws->state == SHOAL_WS_OPEN && !ws->close_sent) {
        const char *reason = code == SHOAL_WS_CLOSE_TOO_BIG        ? "message too big"
                             : code == SHOAL_WS_CLOSE_INVALID_DATA ? "invalid UTF-8"
                                                                   : "protocol error";
        /* Without a masking key no frame can be sent; the transport closes
         * anyway. */
        (void)close_queue(ws, code, reason, strlen(reason));
    }
    ws->state = SHOAL_WS_FAILED;
    return err;
}

static shoal_err fail_proto(shoal_ws *ws, shoal_err err, uint16_t code, shoal_errinfo *ei,
                            const char *fmt, ...) SHOAL_PRINTF(5, 6);

static shoal_err fail_proto(shoal_ws *ws, shoal_err err, uint16_t code, shoal_errinfo *ei,
                            const char *fmt, ...)
{
    if (ei) {
        va_list ap;
        va_start(ap, fmt);
        char detail[SHOAL_ERRINFO_LEN];
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
        if (ws->state == SHOAL_WS_OPEN && !ws->close_sent)
            (void)shoal_errinfo_set(ei, err, "websocket: %s (closing with %u)", detail,
                                    (unsigned)code);
        else
            (void)shoal_errinfo_set(ei, err, "websocket: %s", detail);
    }
    return fail(ws, err, code);
}

/* Checks the first two header bytes as soon as they arrive (RFC 6455 §5.2,
 * §5.5), so a broken peer is refused before any length is trusted. */
static shoal_err header_start_check(shoal_ws *ws, shoal_errinfo *ei)
{
    const uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1];
    ws->fin = (b0 & 0x80) != 0;
    ws->opcode = b0 & 0x0F;
    const unsigned len7 = b1 & 0x7F;
    if (b0 & 0x70)
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                          "frame has reserved bits 0x%02x set, but no extension was negotiated",
                          (unsigned)(b0 & 0x70));
    switch (ws->opcode) {
    case WS_OP_CONT:
    case WS_OP_TEXT:
    case WS_OP_BINARY:
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        break;
    default:
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                          "frame has reserved opcode 0x%x", (unsigned)ws->opcode);
    }
    if (b1 & 0x80)
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                          "the server sent a masked frame (servers must not mask, RFC 6455 "
                          "section 5.1)");
    if (ws->opcode & 0x8) {
        if (!ws->fin)
            return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                              "control frame (opcode 0x%x) is fragmented", (unsigned)ws->opcode);
        if (len7 > SHOAL_WS_MAX_CONTROL)
            return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                              "control frame (opcode 0x%x) declares a payload over 125 bytes",
                              (unsigned)ws->opcode);
    } else if (ws->opcode == WS_OP_CONT && !ws->in_message) {
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                          "continuation frame without a message to continue");
    } else if (ws->opcode != WS_OP_CONT && ws->in_message) {
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                          "new %s message started before the fragmented one ended",
                          ws->opcode == WS_OP_TEXT ? "text" : "binary");
    }
    return SHOAL_OK;
}

static size_t header_need(const shoal_ws *ws)
{
    const unsigned len7 = ws->hdr[1] & 0x7F;
    return len7 < 126 ? 2 : len7 == 126 ? 4 : 10;
}

/* The whole header is in: decode the length (RFC 6455 §5.2: minimal
 * encoding, 64-bit lengths with the top bit clear) and apply the limits
 * before any buffer is sized from it. */
static shoal_err header_finish(shoal_ws *ws, shoal_errinfo *ei)
{
    const unsigned len7 = ws->hdr[1] & 0x7F;
    uint64_t len = len7;
    if (len7 == 126) {
        len = (uint64_t)ws->hdr[2] << 8 | ws->hdr[3];
        if (len < 126)
            return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                              "16-bit frame length %u should have used the 7-bit form",
                              (unsigned)len);
    } else if (len7 == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | ws->hdr[i];
        if (len >> 63)
            return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                              "64-bit frame length has its most significant bit set");
        if (len <= 0xFFFF)
            return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_PROTOCOL_ERROR, ei,
                              "64-bit frame length %llu should have used a shorter form",
                              (unsigned long long)len);
    }
    ws->frame_len = len;
    ws->frame_got = 0;
    if (ws->opcode & 0x8) {
        ws->ctrl_len = 0;
        ws->rx_phase = RX_PAYLOAD;
        return SHOAL_OK;
    }
    if (len > ws->max_frame_recv)
        return fail_proto(ws, SHOAL_ELIMIT, SHOAL_WS_CLOSE_TOO_BIG, ei,
                          "frame payload of %llu bytes exceeds the limit of %zu (max_frame_recv)",
                          (unsigned long long)len, ws->max_frame_recv);
    const size_t so_far = ws->opcode == WS_OP_CONT ? ws->msg_len : 0;
    if (len > ws->max_message - so_far)
        return fail_proto(ws, SHOAL_ELIMIT, SHOAL_WS_CLOSE_TOO_BIG, ei,
                          "message of at least %llu bytes exceeds the limit of %zu (max_message)",
                          (unsigned long long)(so_far + len), ws->max_message);
    if (ws->opcode != WS_OP_CONT) {
        ws->in_message = true;
        ws->msg_opcode = ws->opcode;
        ws->msg_len = 0;
        shoal_ws_utf8_init(&ws->utf8);
    }
    ws->rx_phase = RX_RESERVE;
    return SHOAL_OK;
}

/* Room for this frame's payload and the NUL after the message. Grows
 * geometrically (up to the message limit) so many small fragments cost
 * linear time. */
static shoal_err msg_reserve(shoal_ws *ws, shoal_errinfo *ei)
{
    const size_t need = ws->msg_len + (size_t)ws->frame_len + 1;
    if (need <= ws->msg_cap)
        return SHOAL_OK;
    size_t cap = ws->msg_cap * 2;
    if (cap > ws->max_message + 1)
        cap = ws->max_message + 1;
    if (cap < need)
        cap = need;
    uint8_t *grown = shoal_realloc(ws->msg, cap);
    if (!grown)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                 "websocket: out of memory for a message of %zu bytes", need - 1);
    ws->msg = grown;
    ws->msg_cap = cap;
    return SHOAL_OK;
}

/* Puts the Pong for a Ping in the Pong slot. A newer Ping replaces a Pong
 * the caller has not seen yet; while one is on the wire, further Pings go
 * unanswered. RFC 6455 §5.5.3 allows answering only the most recent Ping,
 * and this bounds what a Ping flood can queue to one frame. */
static void pong_queue(shoal_ws *ws)
{
    if (ws->pong_exposed)
        return;
    size_t written;
    if (frame_write(ws, ws->pong, 0x80 | WS_OP_PONG, ws->ctrl, ws->ctrl_len, &written) !=
        SHOAL_OK) {
        ws->pong_len = ws->pong_off = 0; /* no key, no Pong; the server may time out */
        return;
    }
    ws->pong_len = written;
    ws->pong_off = 0;
}

/* RFC 6455 §5.5.1 and §7.4: what a received Close payload is wrong with,
 * as the status code to close with (0: nothing) and a sentence in
 * `detail`. */
static uint16_t close_payload_problem(const uint8_t *payload, size_t len, uint16_t *code,
                                      char *detail, size_t cap)
{
    *code = SHOAL_WS_CLOSE_NO_STATUS;
    if (len == 1) {
        snprintf(detail, cap, "Close frame with a 1-byte payload (a status code takes 2)");
        return SHOAL_WS_CLOSE_PROTOCOL_ERROR;
    }
    if (len < 2)
        return 0;
    *code = (uint16_t)(payload[0] << 8 | payload[1]);
    if (!close_code_sendable(*code)) {
        snprintf(detail, cap, "Close frame with invalid status code %u", (unsigned)*code);
        return SHOAL_WS_CLOSE_PROTOCOL_ERROR;
    }
    size_t bad_at;
    if (!shoal_ws_utf8_valid(payload + 2, len - 2, &bad_at)) {
        snprintf(detail, cap, "Close reason is not valid UTF-8 at byte %zu", bad_at);
        return SHOAL_WS_CLOSE_INVALID_DATA;
    }
    return 0;
}

uint16_t shoal_ws_close_payload_check(const uint8_t *payload, size_t len, uint16_t *code,
                                      shoal_errinfo *ei)
{
    uint16_t c;
    char detail[160];
    uint16_t answer = close_payload_problem(payload, len, &c, detail, sizeof detail);
    if (code)
        *code = c;
    if (answer)
        shoal_errinfo_set(ei, SHOAL_EPROTO, "websocket: %s", detail);
    return answer;
}

static shoal_err close_received(shoal_ws *ws, shoal_ws_event *ev, shoal_errinfo *ei)
{
    uint16_t code;
    char detail[160];
    uint16_t answer = close_payload_problem(ws->ctrl, ws->ctrl_len, &code, detail, sizeof detail);
    if (answer)
        return fail_proto(ws, SHOAL_EPROTO, answer, ei, "%s", detail);
    if (ws->state == SHOAL_WS_OPEN && !ws->close_sent) {
        /* Echo the status code (RFC 6455 §5.5.1); no reason needed. */
        (void)close_queue(ws, code == SHOAL_WS_CLOSE_NO_STATUS ? 0 : code, NULL, 0);
    }
    ws->state = SHOAL_WS_CLOSED;
    ws->ctrl[ws->ctrl_len] = 0;
    ev->kind = SHOAL_WS_EVENT_CLOSE;
    ev->close_code = code;
    ev->data = ws->ctrl_len >= 2 ? ws->ctrl + 2 : ws->ctrl;
    ev->len = ws->ctrl_len >= 2 ? ws->ctrl_len - 2 : 0;
    return SHOAL_ROW;
}

/* A frame's payload is complete. */
static shoal_err frame_done(shoal_ws *ws, shoal_ws_event *ev, shoal_errinfo *ei)
{
    switch (ws->opcode) {
    case WS_OP_PING:
        if (ws->state == SHOAL_WS_OPEN && !ws->close_sent)
            pong_queue(ws);
        return SHOAL_OK;
    case WS_OP_PONG:
        ws->ctrl[ws->ctrl_len] = 0;
        ev->kind = SHOAL_WS_EVENT_PONG;
        ev->data = ws->ctrl;
        ev->len = ws->ctrl_len;
        return SHOAL_ROW;
    case WS_OP_CLOSE:
        return close_received(ws, ev, ei);
    default:
        break;
    }
    if (!ws->fin)
        return SHOAL_OK;
    if (ws->msg_opcode == WS_OP_TEXT && !shoal_ws_utf8_complete(&ws->utf8))
        return fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_INVALID_DATA, ei,
                          "text message ends inside a UTF-8 sequence");
    ws->msg[ws->msg_len] = 0;
    ws->in_message = false;
    ws->release_msg = true;
    ev->kind = ws->msg_opcode == WS_OP_TEXT ? SHOAL_WS_EVENT_TEXT : SHOAL_WS_EVENT_BINARY;
    ev->data = ws->msg;
    ev->len = ws->msg_len;
    return SHOAL_ROW;
}

static shoal_err frames_feed(shoal_ws *ws, const uint8_t *in, size_t len, size_t *consumed,
                             shoal_ws_event *ev, shoal_errinfo *ei)
{
    size_t i = 0;
    shoal_err err = SHOAL_OK;
    for (;;) {
        if (ws->rx_phase == RX_HEADER) {
            if (i == len)
                break;
            ws->hdr[ws->hdr_len++] = in[i++];
            if (ws->hdr_len == 2 && (err = header_start_check(ws, ei)) != SHOAL_OK)
                break;
            if (ws->hdr_len < 2 || ws->hdr_len < header_need(ws))
                continue;
            ws->hdr_len = 0;
            if ((err = header_finish(ws, ei)) != SHOAL_OK)
                break;
        }
        if (ws->rx_phase == RX_RESERVE) {
            if ((err = msg_reserve(ws, ei)) != SHOAL_OK)
                break; /* SHOAL_ENOMEM: the next call retries from here */
            ws->rx_phase = RX_PAYLOAD;
        }
        const uint64_t want = ws->frame_len - ws->frame_got;
        const size_t take = want < (uint64_t)(len - i) ? (size_t)want : len - i;
        if (take > 0) {
            if (ws->opcode & 0x8) {
                memcpy(ws->ctrl + ws->ctrl_len, in + i, take);
                ws->ctrl_len += take;
            } else {
                uint8_t *dst = ws->msg + ws->msg_len;
                memcpy(dst, in + i, take);
                if (ws->msg_opcode == WS_OP_TEXT) {
                    /* Fail fast on the first bad byte (RFC 6455 §8.1). */
                    size_t valid = shoal_ws_utf8_feed(&ws->utf8, dst, take);
                    if (valid < take) {
                        i += valid + 1;
                        err = fail_proto(ws, SHOAL_EPROTO, SHOAL_WS_CLOSE_INVALID_DATA, ei,
                                         "text message is not valid UTF-8 at byte %zu",
                                         ws->msg_len + valid);
                        break;
                    }
                }
                ws->msg_len += take;
            }
            ws->frame_got += take;
            i += take;
        }
        if (ws->frame_got < ws->frame_len)
            break; /* input used up mid-payload */
        ws->rx_phase = RX_HEADER;
        if ((err = frame_done(ws, ev, ei)) != SHOAL_OK)
            break;
    }
    *consumed = i;
    return err;
}

shoal_err shoal_ws_feed(shoal_ws *ws, const uint8_t *in, size_t len, size_t *consumed,
                        shoal_ws_event *ev, shoal_errinfo *ei)
{
    if (consumed)
        *consumed = 0;
    if (ev)
        memset(ev, 0, sizeof *ev);
    if (!ws || !consumed || !ev || (!in && len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "websocket: NULL argument to shoal_ws_feed");
    if (ws->release_msg) {
        ws->release_msg = false;
        ws->msg_len = 0;
        if (ws->msg_cap > WS_MSG_KEEP) {
            shoal_free(ws->msg);
            ws->msg = NULL;
            ws->msg_cap = 0;
        }
    }
    ev->data = empty_payload;

    shoal_err err;
    switch (ws->state) {
    case SHOAL_WS_CONNECTING:
        err = shoal_ws_head_feed(ws, in, len, consumed, ei);
        if (err == SHOAL_ROW) {
            ws->state = SHOAL_WS_OPEN;
            shoal_free(ws->head);
            ws->head = NULL;
            ev->kind = SHOAL_WS_EVENT_OPEN;
        } else if (err != SHOAL_OK) {
            ws->state = SHOAL_WS_FAILED;
        }
        return err;
    case SHOAL_WS_OPEN:
    case SHOAL_WS_CLOSING:
        return frames_feed(ws, in, len, consumed, ev, ei);
    default:
        return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                 "websocket: the connection is closed; no more input is "
                                 "accepted");
    }
}

/* Which output region goes next; see the order in struct shoal_ws. */
enum out_region { OUT_NONE, OUT_QUEUE, OUT_PONG, OUT_CLOSE };

static enum out_region out_next(const shoal_ws *ws)
{
    if (ws->pong_exposed && ws->pong_off < ws->pong_len)
        return OUT_PONG;
    if (ws->out_off < ws->out_len)
        return OUT_QUEUE;
    if (ws->pong_off < ws->pong_len)
        return OUT_PONG;
    if (ws->close_off < ws->close_len)
        return OUT_CLOSE;
    return OUT_NONE;
}

const uint8_t *shoal_ws_pending(shoal_ws *ws, size_t *len)
{
    if (!ws) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t n = 0;
    const uint8_t *p = NULL;
    switch (out_next(ws)) {
    case OUT_QUEUE:
        p = ws->out + ws->out_off;
        n = ws->out_len - ws->out_off;
        break;
    case OUT_PONG:
        ws->pong_exposed = true;
        p = ws->pong + ws->pong_off;
        n = ws->pong_len - ws->pong_off;
        break;
    case OUT_CLOSE:
        p = ws->close_frame + ws->close_off;
        n = ws->close_len - ws->close_off;
        break;
    case OUT_NONE:
        break;
    }
    if (len)
        *len = n;
    return p;
}

shoal_err shoal_ws_consume(shoal_ws *ws, size_t n)
{
    if (!ws)
        return SHOAL_EINVAL;
    if (n == 0)
        return SHOAL_OK;
    switch (out_next(ws)) {
    case OUT_QUEUE:
        if (n > ws->out_len - ws->out_off)
            return SHOAL_EINVAL;
        /* Sent bytes are not kept: the request may carry a token. */
        mbedtls_platform_zeroize(ws->out + ws->out_off, n);
        ws->out_off += n;
        if (ws->out_off == ws->out_len)
            ws->out_off = ws->out_len = 0;
        return SHOAL_OK;
    case OUT_PONG:
        if (!ws->pong_exposed || n > ws->pong_len - ws->pong_off)
            return SHOAL_EINVAL;
        ws->pong_off += n;
        if (ws->pong_off == ws->pong_len) {
            ws->pong_len = ws->pong_off = 0;
            ws->pong_exposed = false;
        }
        return SHOAL_OK;
    case OUT_CLOSE:
        if (n > ws->close_len - ws->close_off)
            return SHOAL_EINVAL;
        ws->close_off += n;
        return SHOAL_OK;
    case OUT_NONE:
        break;
    }
    return SHOAL_EINVAL;
}

shoal_ws_state shoal_ws_get_state(const shoal_ws *ws)
{
    return ws ? ws->state : SHOAL_WS_FAILED;
}

int shoal_ws_http_status(const shoal_ws *ws)
{
    return ws ? ws->http_status : 0;
}

shoal_err shoal_ws_new(const shoal_ws_config *config, shoal_ws **out, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    if (!config || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "websocket: NULL argument to shoal_ws_new");
    shoal_err err = shoal_ws_config_check(config, ei);
    if (err != SHOAL_OK)
        return err;

    shoal_ws *ws = shoal_calloc(1, sizeof *ws);
    if (!ws)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "websocket: out of memory");
    ws->state = SHOAL_WS_CONNECTING;
    ws->rx_phase = RX_HEADER;
    ws->random = config->random;
    ws->random_ctx = config->random_ctx;
    ws->max_message = config->max_message ? config->max_message : SHOAL_WS_DEFAULT_MAX_MESSAGE;
    ws->max_frame_recv = config->max_frame_recv ? config->max_frame_recv : ws->max_message;
    ws->max_frame_send = config->max_frame_send ? config->max_frame_send : ws->max_message;
    ws->max_header = config->max_header ? config->max_header : SHOAL_WS_DEFAULT_MAX_HEADER;
    /* The message buffer holds max_message + 1 bytes. */
    if (ws->max_message == SIZE_MAX)
        ws->max_message--;

    if (config->subprotocol && !(ws->subprotocol = shoal_strdup(config->subprotocol))) {
        shoal_ws_free(ws);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "websocket: out of memory");
    }
    ws->head = shoal_malloc(ws->max_header);
    if (!ws->head) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                "websocket: out of memory for a %zu-byte response head buffer",
                                ws->max_header);
        shoal_ws_free(ws);
        return err;
    }
    err = shoal_ws_request_build(ws, config, ei);
    if (err != SHOAL_OK) {
        shoal_ws_free(ws);
        return err;
    }
    *out = ws;
    return SHOAL_OK;
}

void shoal_ws_free(shoal_ws *ws)
{
    if (!ws)
        return;
    if (ws->out) {
        mbedtls_platform_zeroize(ws->out, ws->out_cap);
        shoal_free(ws->out);
    }
    shoal_free(ws->head);
    shoal_free(ws->msg);
    shoal_free(ws->subprotocol);
    shoal_free(ws);
}
