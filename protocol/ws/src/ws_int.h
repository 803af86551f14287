/* Shoal WebSocket client: internals shared by ws.c, handshake.c and utf8.c.
 * Not installed; nothing here is part of the API. */
#ifndef SHOAL_WS_INT_H
#define SHOAL_WS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal/ws.h"

/* Incremental UTF-8 validator (Unicode 15, Table 3-7: well-formed byte
 * sequences, so overlongs, surrogates and code points above U+10FFFF are
 * refused). `need` continuation bytes are still due, the next in [lo, hi]. */
typedef struct shoal_ws_utf8 {
    uint8_t need;
    uint8_t lo;
    uint8_t hi;
} shoal_ws_utf8;

void shoal_ws_utf8_init(shoal_ws_utf8 *u);
/* Validates the next len bytes; returns the index of the first byte that
 * cannot continue a valid sequence, or len if there is none. */
size_t shoal_ws_utf8_feed(shoal_ws_utf8 *u, const uint8_t *p, size_t len);
/* True when no sequence is left unfinished. */
bool shoal_ws_utf8_complete(const shoal_ws_utf8 *u);
/* Whole-buffer check; *bad_at (optional) gets the offset of the first
 * invalid byte, or len when the text ends inside a sequence. */
bool shoal_ws_utf8_valid(const uint8_t *p, size_t len, size_t *bad_at);

/* Frame opcodes (RFC 6455 §5.2). */
enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Largest client frame header: 2 + 8 (64-bit length) + 4 (masking key). */
#define WS_MAX_CLIENT_HEADER 14

enum ws_rx_phase {
    RX_HEADER,  /* collecting the 2 to 10 header bytes of a server frame */
    RX_RESERVE, /* data frame header done; the message buffer must grow */
    RX_PAYLOAD, /* copying payload bytes */
};

struct shoal_ws {
    shoal_ws_state state;
    int http_status;

    size_t max_message;
    size_t max_frame_recv;
    size_t max_frame_send;
    size_t max_header;
    shoal_ws_random_fn random;
    void *random_ctx;
    char accept[SHOAL_WS_ACCEPT_LEN + 1]; /* the Sec-WebSocket-Accept we expect */
    char *subprotocol;                    /* requested, or NULL */

    /* Output, sent in this order: a Pong already handed to the caller, the
     * byte queue (request, data frames, our Pings, Pongs moved in at frame
     * boundaries), a Pong not yet handed out, and last the Close. */
    uint8_t *out;
    size_t out_len; /* bytes in out */
    size_t out_off; /* of which sent */
    size_t out_cap;
    uint8_t pong[WS_MAX_CLIENT_HEADER + SHOAL_WS_MAX_CONTROL];
    size_t pong_len; /* 0: no Pong waiting */
    size_t pong_off;
    bool pong_exposed; /* returned by shoal_ws_pending: bytes may be on the wire */
    uint8_t close_frame[WS_MAX_CLIENT_HEADER + SHOAL_WS_MAX_CONTROL];
    size_t close_len;
    size_t close_off;
    bool close_sent; /* a Close is queued (or sent): no more frames after it */

    /* Handshake response head, collected until the empty line. */
    uint8_t *head;
    size_t head_len;
    bool status_seen;

    /* Frame parser. */
    enum ws_rx_phase rx_phase;
    uint8_t hdr[10];
    size_t hdr_len;
    uint8_t opcode;
    bool fin;
    uint64_t frame_len;
    uint64_t frame_got;

    /* Message being reassembled; msg[msg_len] is kept for a NUL. */
    bool in_message;
    uint8_t msg_opcode;
    uint8_t *msg;
    size_t msg_len;
    size_t msg_cap;
    shoal_ws_utf8 utf8;
    bool release_msg; /* the last event lent msg out: reset on the next feed */

    /* Control frame payload, plus a NUL. */
    uint8_t ctrl[SHOAL_WS_MAX_CONTROL + 1];
    size_t ctrl_len;
};

/* handshake.c */
shoal_err shoal_ws_request_build(shoal_ws *ws, const shoal_ws_config *config, shoal_errinfo *ei);
shoal_err shoal_ws_config_check(const shoal_ws_config *config, shoal_errinfo *ei);
/* Consumes response head bytes; SHOAL_ROW (with *consumed) when the 101
 * response was complete and valid. Errors leave the state to the caller. */
shoal_err shoal_ws_head_feed(shoal_ws *ws, const uint8_t *in, size_t len, size_t *consumed,
                             shoal_errinfo *ei);

#endif
