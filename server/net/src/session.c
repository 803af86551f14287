/* WebSocket sessions on the service thread: the upgrade check, on_open,
 * reassembly of inbound messages, the outbox writer and the close
 * handshake. */
#include "net_int.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "shoal/alloc.h"
#include "shoal/ws.h"

/* Is `token` one of the comma-separated tokens in `list`? */
static int list_has_token(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if ((size_t)(stop - start) == tlen && memcmp(start, token, tlen) == 0)
            return 1;
    }
    return 0;
}

/* Refusals are answered with a short HTTP response that says
 * "connection: close", then the connection is hung up (-1; lws sends what
 * it still holds first). */
static int refuse_upgrade(net_conn *c, int status, const char *text, const char *extra_header)
{
    if (shoal_net_http_reply_now(c, status, text, extra_header))
        SHOAL_INFO(NET_LOG, "%s: could not write the %d answer to a refused upgrade", c->peer,
                   status);
    return -1;
}

int shoal_net_session_confirm_upgrade(net_conn *c, const char *upgrade)
{
    char uri[256], protocol[256];
    struct lws *wsi = c->wsi;

    if (!upgrade || strcasecmp(upgrade, "websocket") != 0) {
        /* h2c and the like: this port speaks HTTP/1.1 and WebSocket only. */
        SHOAL_INFO(NET_LOG, "%s: refused an upgrade to \"%.32s\"", c->peer, upgrade ? upgrade : "");
        return -1;
    }
    if (lws_hdr_copy(wsi, uri, (int)sizeof uri, WSI_TOKEN_GET_URI) < 0)
        uri[0] = '\0';
    if (strcmp(uri, SHOAL_NET_WS_PATH) != 0) {
        SHOAL_INFO(NET_LOG, "%s: WebSocket upgrade refused: path \"%.64s\" is not %s", c->peer, uri,
                   SHOAL_NET_WS_PATH);
        return refuse_upgrade(
            c, 404, "no WebSocket endpoint at this path; sessions use " SHOAL_NET_WS_PATH "\n",
            NULL);
    }
    int n = lws_hdr_copy(wsi, protocol, (int)sizeof protocol, WSI_TOKEN_PROTOCOL);
    if (n <= 0 || !list_has_token(protocol, SHOAL_NET_SUBPROTOCOL)) {
        SHOAL_INFO(NET_LOG, "%s: WebSocket upgrade refused: subprotocol %s not requested", c->peer,
                   SHOAL_NET_SUBPROTOCOL);
        return refuse_upgrade(c, 400,
                              "WebSocket sessions need the header "
                              "Sec-WebSocket-Protocol: " SHOAL_NET_SUBPROTOCOL "\n",
                              NULL);
    }
    if (c->net->stopping)
        return refuse_upgrade(c, 503, "server shutting down; try again later\n", "Retry-After: 5");
    return 0;
}

/* ---- the idle sweep ----------------------------------------------------
 * Every open session that is neither paused nor closing is on one list in
 * the order of its last receive: a receive moves it to the tail, O(1), and
 * one timer, due at the head's deadline, closes the sessions at the head
 * that have been quiet for idle_timeout_ms. A timer per session cost
 * O(open sessions) to arm: libwebsockets keeps its timers in one sorted
 * list and inserts by walking it from the head, and an idle deadline is
 * the latest of all. */

static void idle_sweep(lws_sorted_usec_list_t *sul);

static void idle_schedule(shoal_net *net)
{
    if (!net->idle_head)
        return; /* a timer still due finds nothing and stops */
    int64_t due = net->idle_head->last_rx_us + net->cfg.idle_timeout_ms * 1000 - shoal_net_now_us();
    lws_sul_schedule(net->ctx, 0, &net->idle_sul, idle_sweep, due > 0 ? (lws_usec_t)due : 0);
}

static void idle_unlink(net_conn *c)
{
    if (!c->idle_linked)
        return;
    shoal_net *net = c->net;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        net->idle_head = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    else
        net->idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->idle_linked = 0;
}

/* At the tail: c's last receive is the latest. */
static void idle_link(net_conn *c)
{
    shoal_net *net = c->net;
    if (c->idle_linked || c->kill_armed || net->cfg.idle_timeout_ms <= 0)
        return;
    c->idle_prev = net->idle_tail;
    c->idle_next = NULL;
    if (net->idle_tail)
        net->idle_tail->idle_next = c;
    else
        net->idle_head = c;
    net->idle_tail = c;
    c->idle_linked = 1;
    if (net->idle_head == c)
        idle_schedule(net);
}

void shoal_net_idle_touch(net_conn *c)
{
    c->last_rx_us = shoal_net_now_us();
    if (c->idle_linked && c->net->idle_tail != c) {
        idle_unlink(c);
        idle_link(c);
    }
}

static void idle_sweep(lws_sorted_usec_list_t *sul)
{
    shoal_net *net = lws_container_of(sul, shoal_net, idle_sul);
    const int64_t now = shoal_net_now_us(), idle_us = net->cfg.idle_timeout_ms * 1000;
    while (net->idle_head && now - net->idle_head->last_rx_us >= idle_us) {
        net_conn *c = net->idle_head;
        idle_unlink(c);
        SHOAL_INFO(NET_LOG, "%s: session %llu idle for %lld ms; closing with 1001", c->peer,
                   (unsigned long long)c->id, (long long)((now - c->last_rx_us) / 1000));
        shoal_net_session_begin_close(c, NET_CLOSE_GOING_AWAY, "idle timeout");
    }
    idle_schedule(net);
}

/* Once a session is closing, a peer that stops reading must not hold it
 * open forever: it gets handshake_timeout_ms to take what is queued and the
 * Close. */
static void arm_kill(net_conn *c)
{
    if (c->kill_armed)
        return;
    c->kill_armed = 1;
    c->rx_ignore = 1;
    idle_unlink(c);
    lws_set_timer_usecs(c->wsi, (lws_usec_t)c->net->cfg.handshake_timeout_ms * 1000);
}

static void discard_rx(net_conn *c)
{
    shoal_free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
}

void shoal_net_session_begin_close(net_conn *c, uint16_t code, const char *reason)
{
    shoal_net *net = c->net;
    pthread_mutex_lock(&net->lock);
    if (!c->closing)
        shoal_net_set_close(c, code, reason);
    pthread_mutex_unlock(&net->lock);
    discard_rx(c);
    arm_kill(c);
    lws_callback_on_writable(c->wsi);
}

/* Closes at once from inside a callback (the caller returns our -1): for
 * a peer that broke the rules, nothing queued is worth sending first. */
static int close_now(net_conn *c, uint16_t code, const char *reason)
{
    shoal_net *net = c->net;
    pthread_mutex_lock(&net->lock);
    shoal_net_set_close(c, code, reason);
    pthread_mutex_unlock(&net->lock);
    discard_rx(c);
    c->rx_ignore = 1;
    lws_close_reason(c->wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                     c->close_reason_len);
    return -1;
}

/* Takes c off the wake list (and, when in_map, out of the id map) and
 * frees what it still had to send; with closing, marks it closing in the
 * same hold of the lock, so no sender queues to it after. */
static void detach(net_conn *c, int in_map, int closing)
{
    shoal_net *net = c->net;
    pthread_mutex_lock(&net->lock);
    if (in_map)
        shoal_net_map_remove(net, c);
    shoal_net_wake_remove(net, c);
    if (closing)
        c->closing = 1;
    net_msg *dropped = c->out_head;
    c->out_head = c->out_tail = NULL;
    c->out_count = 0;
    pthread_mutex_unlock(&net->lock);
    while (dropped) {
        net_msg *next = dropped->next;
        shoal_net_msg_free(dropped);
        dropped = next;
    }
}

int shoal_net_session_open(net_conn *c)
{
    shoal_net *net = c->net;
    c->kind = CONN_WS;
    c->id = ++net->last_id;
    /* The handshake is done: its timer goes, the idle sweep takes over. */
    lws_set_timer_usecs(c->wsi, LWS_SET_TIMER_USEC_CANCEL);
    shoal_net_idle_touch(c);
    idle_link(c);
    if (net->stopping) {
        shoal_net_session_begin_close(c, NET_CLOSE_GOING_AWAY, "server shutting down");
        return 0;
    }

    /* In the map before on_open runs: the handler may hand the id to
     * another thread that sends at once. */
    pthread_mutex_lock(&net->lock);
    shoal_net_map_insert(net, c);
    pthread_mutex_unlock(&net->lock);

    shoal_conn_info info;
    memset(&info, 0, sizeof info);
    memcpy(info.peer, c->peer, sizeof info.peer);
    int refuse = net->handlers.on_open ? net->handlers.on_open(net->handlers.ctx, c->id, &info) : 0;
    if (refuse) {
        detach(c, 1, 0);
        atomic_fetch_add(&net->stat_refused, 1);
        SHOAL_INFO(NET_LOG, "%s: session refused by the server (1013 try again later)", c->peer);
        shoal_net_session_begin_close(c, NET_CLOSE_TRY_AGAIN, "try again later");
        return 0;
    }
    c->accepted = 1;
    net->ws_live++;
    atomic_fetch_add(&net->stat_accepted, 1);
    SHOAL_DEBUG(NET_LOG, "%s: session %llu open", c->peer, (unsigned long long)c->id);
    return 0;
}

/* At a message's start: when shoal_net_hold_next armed it, pauses the
 * input here (as shoal_net_pause_input would) and tells the server. The
 * flag is the service thread's own, so an unheld message costs no lock. */
static void take_hold(net_conn *c)
{
    if (!c->hold_armed)
        return;
    c->hold_armed = 0;
    shoal_net *net = c->net;
    pthread_mutex_lock(&net->lock);
    const int closing = c->closing;
    if (!closing)
        c->pause_input = 1; /* the wish, as shoal_net_pause_input records it */
    pthread_mutex_unlock(&net->lock);
    if (closing)
        return;
    shoal_net_session_wake(c, 0, 1);
    net->handlers.on_held(net->handlers.ctx, c->id);
}

int shoal_net_session_receive(net_conn *c, const uint8_t *in, size_t len)
{
    shoal_net *net = c->net;
    struct lws *wsi = c->wsi;

    shoal_net_idle_touch(c);
    atomic_fetch_add(&net->stat_bytes_in, len);
    if (c->rx_ignore)
        return 0;
    if (!lws_frame_is_binary(wsi)) {
        SHOAL_INFO(NET_LOG, "%s: session %llu sent a text message; closing with 1003", c->peer,
                   (unsigned long long)c->id);
        return close_now(c, NET_CLOSE_UNSUPPORTED, "text messages are not accepted; send binary");
    }
    if (lws_is_first_fragment(wsi)) {
        c->rx_len = 0;
        take_hold(c);
    }

    /* Refuse as soon as the frame headers announce too much, before the
     * payload arrives. */
    size_t max = net->cfg.max_message_bytes;
    size_t remaining = lws_remaining_packet_payload(wsi);
    if (len > max - c->rx_len || remaining > max - c->rx_len - len) {
        SHOAL_INFO(NET_LOG,
                   "%s: session %llu sent a message over max_message_bytes (%zu); closing "
                   "with 1009",
                   c->peer, (unsigned long long)c->id, max);
        return close_now(c, NET_CLOSE_TOO_BIG, "message too big");
    }
    /* While input is paused (a held message), only what arrived is kept:
     * the rest of the message is not read until it resumes. */
    size_t need = c->rx_len + len + (c->input_paused ? 0 : remaining);
    if (need == 0)
        need = 1; /* a zero-length message still gets a buffer to own */
    if (need > c->rx_cap) {
        size_t doubled = c->rx_cap > SIZE_MAX / 2 ? SIZE_MAX : c->rx_cap * 2;
        size_t cap = doubled > need ? doubled : need;
        if (cap > max)
            cap = max > need ? max : need;
        uint8_t *grown = shoal_realloc(c->rx, cap);
        if (!grown) {
            SHOAL_ERROR(NET_LOG,
                        "%s: session %llu: out of memory for a %zu-byte message; closing with "
                        "1011",
                        c->peer, (unsigned long long)c->id, need);
            return close_now(c, NET_CLOSE_INTERNAL, "server out of memory");
        }
        c->rx = grown;
        c->rx_cap = cap;
    }
    if (len)
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi))
        return 0;

    uint8_t *msg = c->rx;
    size_t msg_len = c->rx_len;
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
    if (!net->handlers.on_message) {
        shoal_free(msg);
        return 0;
    }
    if (net->handlers.on_message(net->handlers.ctx, c->id, msg, msg_len) != 0) {
        shoal_free(msg);
        SHOAL_INFO(NET_LOG,
                   "%s: session %llu: the server could not take a message; closing with 1013",
                   c->peer, (unsigned long long)c->id);
        shoal_net_session_begin_close(c, NET_CLOSE_TRY_AGAIN, "server busy, try again later");
    }
    return 0;
}

int shoal_net_session_writeable(net_conn *c)
{
    shoal_net *net = c->net;
    struct lws *wsi = c->wsi;
    char reason[NET_MAX_REASON + 1];

    pthread_mutex_lock(&net->lock);
    net_msg *m = c->out_head;
    int closing = c->closing;
    uint16_t code = c->close_code;
    size_t reason_len = c->close_reason_len;
    memcpy(reason, c->close_reason, reason_len + 1);
    pthread_mutex_unlock(&net->lock);

    if (closing)
        arm_kill(c);
    if (!m) {
        if (!closing)
            return 0;
        /* Everything queued is out: lws sends this Close and waits for
         * the peer's. */
        SHOAL_DEBUG(NET_LOG, "%s: session %llu closing with %u", c->peer, (unsigned long long)c->id,
                    (unsigned)code);
        lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, reason_len);
        return -1;
    }

    /* One frame per callback: a message longer than NET_PIECE goes out as
     * a fragmented message, one piece each time the socket can take it. */
    size_t piece = m->len - c->tx_off;
    if (piece > NET_PIECE)
        piece = NET_PIECE;
    int is_start = c->tx_off == 0;
    int is_end = c->tx_off + piece == m->len;
    uint8_t *buf = net->scratch + LWS_PRE;
    if (piece)
        memcpy(buf, m->bytes + c->tx_off, piece);
    int n =
        lws_write(wsi, buf, piece,
                  (enum lws_write_protocol)lws_write_ws_flags(LWS_WRITE_BINARY, is_start, is_end));
    /* lws keeps whatever the socket did not take and sends it before the
     * next writable callback, so anything short of `piece` is an error. */
    if (n < 0 || (size_t)n < piece) {
        SHOAL_INFO(NET_LOG, "%s: session %llu: write failed; dropping the connection", c->peer,
                   (unsigned long long)c->id);
        return -1;
    }
    atomic_fetch_add(&net->stat_bytes_out, piece);
    c->tx_off += piece;

    int more = 1;
    if (is_end) {
        pthread_mutex_lock(&net->lock);
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_count--;
        more = c->out_head != NULL || c->closing;
        pthread_mutex_unlock(&net->lock);
        shoal_net_msg_free(m);
        c->tx_off = 0;
    }
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

void shoal_net_session_wake(net_conn *c, int closing, int pause_input)
{
    if (closing) {
        arm_kill(c);
        pause_input = 0; /* the peer's Close must be read */
    }
    if (pause_input != c->input_paused) {
        lws_rx_flow_control(c->wsi, !pause_input);
        c->input_paused = pause_input;
        /* Silence while paused is ours: off the idle list, and its clock
         * starts again when reading resumes. */
        if (pause_input)
            idle_unlink(c);
        shoal_net_idle_touch(c);
        if (!pause_input)
            idle_link(c);
    }
    lws_callback_on_writable(c->wsi);
}

int shoal_net_session_timer(net_conn *c)
{
    shoal_net *net = c->net;
    if (c->kill_armed) {
        SHOAL_INFO(NET_LOG,
                   "%s: session %llu: the peer did not take the close within %lld ms; "
                   "dropping the connection",
                   c->peer, (unsigned long long)c->id, (long long)net->cfg.handshake_timeout_ms);
        return shoal_net_cut(c->wsi);
    }
    return 0; /* idle sessions are closed by the sweep */
}

void shoal_net_session_closed(net_conn *c)
{
    shoal_net *net = c->net;
    idle_unlink(c);
    detach(c, c->accepted, 1);
    discard_rx(c);
    c->rx_ignore = 1;
    if (c->accepted) {
        c->accepted = 0;
        net->ws_live--;
        SHOAL_DEBUG(NET_LOG, "%s: session %llu closed", c->peer, (unsigned long long)c->id);
        if (net->handlers.on_close)
            net->handlers.on_close(net->handlers.ctx, c->id);
    }
}

int shoal_net_session_peer_close(net_conn *c, const uint8_t *in, size_t len)
{
    shoal_errinfo ei;
    uint16_t answer = shoal_ws_close_payload_check(in, len, NULL, &ei);
    if (!answer)
        return 0;
    /* libwebsockets would echo a malformed Close as it is; answer it with
     * the status code RFC 6455 asks for instead. */
    SHOAL_DEBUG(NET_LOG, "%s: %s; closing with %u", c->peer, ei.msg, (unsigned)answer);
    static const char reason[] = "malformed Close frame";
    lws_close_reason(c->wsi, (enum lws_close_status)answer, (unsigned char *)reason,
                     sizeof reason - 1);
    return -1;
}
