/* Shoal network layer: what net.c, session.c, http.c and tls.c share.
 *
 * Threads. The service thread (the caller of shoal_net_run) owns the
 * lws_context, every struct lws and every net_conn. Other threads reach a
 * connection only through net->lock: the id map, a connection's outbox and
 * close request, and the wake list that tells the service thread which
 * connections have something to write. After changing those they call
 * lws_cancel_service(), the one libwebsockets call that is safe from any
 * thread, and the service thread drains the wake list on
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *
 * Lifetime. A net_conn is made for every accepted socket
 * (LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED), hangs on the wsi as its
 * opaque user data (lws frees and re-allocates the per-session user space
 * whenever a connection changes protocol binding, at every HTTP/1.1
 * transaction and at the WebSocket upgrade, so nothing of ours lives there)
 * and is freed on LWS_CALLBACK_WSI_DESTROY. A WebSocket session sits in the
 * id map from on_open's acceptance to LWS_CALLBACK_CLOSED; only the service
 * thread inserts, removes or frees, always under the lock. */
#ifndef SHOAL_NET_INT_H
#define SHOAL_NET_INT_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shoal/log.h"
#include "shoal/net.h"
#include "tickets_int.h"

#define NET_LOG "net"

/* Largest piece written per writable callback: one WebSocket frame of a
 * message, or one slice of an HTTP body. Bounds what libwebsockets copies
 * when the socket takes only part of a write, and lets connections take
 * turns instead of one large message holding the service thread. */
#define NET_PIECE ((size_t)64 * 1024)
/* lws reads WebSocket input into a per-connection buffer of this size;
 * kept small because there is one per connection (tens of thousands). */
#define NET_RX_BUFFER ((size_t)4096)
/* After shoal_net_stop, how long shoal_net_run waits for peers to answer
 * the 1001 Close before tearing the context down anyway. */
#define NET_STOP_GRACE_US ((lws_usec_t)300 * 1000)
/* Largest close reason (RFC 6455 §5.5: 125-byte control payload less the
 * 2-byte code). */
#define NET_MAX_REASON 123

/* Close codes we send (RFC 6455 §7.4.1; 1013 from the IANA registry). */
#define NET_CLOSE_NORMAL      1000
#define NET_CLOSE_GOING_AWAY  1001
#define NET_CLOSE_UNSUPPORTED 1003
#define NET_CLOSE_TOO_BIG     1009
#define NET_CLOSE_INTERNAL    1011
#define NET_CLOSE_TRY_AGAIN   1013

typedef struct net_msg {
    struct net_msg *next;
    uint8_t *bytes;
    size_t len;
    /* Shared bytes (shoal_net_send_shared): released through this instead
     * of being freed. */
    void (*release)(void *ctx);
    void *release_ctx;
} net_msg;

/* Frees a message and its bytes (or drops its reference to shared ones). */
void shoal_net_msg_free(net_msg *m);

typedef enum net_conn_kind {
    CONN_PENDING = 0, /* TLS or the first HTTP request still under way */
    CONN_HTTP,        /* plain HTTP/1.1 requests */
    CONN_WS,          /* a WebSocket session (accepted or being refused) */
} net_conn_kind;

typedef struct net_conn {
    shoal_net *net;
    struct lws *wsi;
    net_conn_kind kind;
    char peer[64];
    struct net_conn *prev, *next; /* net->conns */

    /* WebSocket, service thread only. */
    shoal_conn_id id;
    int accepted;   /* on_open kept it: on_close is owed */
    int rx_ignore;  /* closing: further input is dropped */
    int kill_armed; /* the close deadline timer is set */
    uint8_t *rx;    /* the message being reassembled */
    size_t rx_len, rx_cap;
    int64_t last_rx_us;                     /* monotonic; set with shoal_net_idle_touch */
    struct net_conn *idle_prev, *idle_next; /* net->idle_head list */
    int idle_linked;
    int input_paused; /* lws_rx_flow_control has stopped its reads */
    int hold_armed;   /* pause at the next message's start (shoal_net_hold_next) */
    size_t tx_off;    /* bytes of out_head already written */

    /* HTTP, service thread only. */
    uint8_t *body;
    size_t body_len, body_off;
    int http_close; /* hang up once the answer is written */

    /* Guarded by net->lock. */
    struct net_conn *bucket_next;
    net_msg *out_head, *out_tail;
    size_t out_count;
    int closing;
    int pause_input; /* shoal_net_pause_input's latest wish */
    int hold_next;   /* shoal_net_hold_next asked; drain_wakes moves it to hold_armed */
    uint16_t close_code;
    size_t close_reason_len;
    char close_reason[NET_MAX_REASON + 1];
    int waking;
    struct net_conn *wake_prev, *wake_next;
} net_conn;

struct shoal_net {
    shoal_net_config cfg; /* strings point at the copies below */
    char *address;
    char *cert_path;
    char *key_path;
    shoal_net_handlers handlers;
    struct lws_protocols protocols[2]; /* lws keeps a pointer: lives here */
    struct lws_context *ctx;
    uint16_t port;
    char *admin_address;           /* cfg.admin_address's copy */
    struct lws_vhost *admin_vhost; /* NULL without an admin listener */
    uint16_t admin_port;
    /* The session ticket keys (cfg.tls and cfg.session_tickets); freed
     * after the lws context, whose SSL_CTX uses them. */
    shoal_net_tickets *tickets;

    /* Service thread only. */
    uint8_t *scratch; /* LWS_PRE + NET_PIECE: staging for lws_write */
    net_conn *conns;  /* every accepted socket */
    uint32_t open_count;
    uint64_t ws_live; /* accepted sessions not yet closed */
    shoal_conn_id last_id;
    int stopping;
    int grace_over;
    lws_sorted_usec_list_t grace_sul;
    /* Open sessions neither paused nor closing, by last receive (oldest
     * first), and the one timer that closes the idle ones (session.c). */
    net_conn *idle_head, *idle_tail;
    lws_sorted_usec_list_t idle_sul;

    pthread_mutex_t lock;
    /* Guarded by lock. */
    net_conn **buckets; /* id map, chained */
    size_t bucket_mask;
    int ctx_alive; /* lws_cancel_service may be called */
    net_conn *wake_head;

    atomic_int stop_requested;
    atomic_int run_started;
    _Atomic uint64_t stat_connections;
    _Atomic uint64_t stat_accepted;
    _Atomic uint64_t stat_refused;
    _Atomic uint64_t stat_bytes_in;
    _Atomic uint64_t stat_bytes_out;
    _Atomic uint64_t stat_http;
    _Atomic uint64_t stat_tls_handshakes;
    _Atomic uint64_t stat_tls_resumed;
};

/* net.c */
int64_t shoal_net_now_us(void);
/* session.c: input arrived on c (or its silence stops counting): its idle
 * clock restarts. */
void shoal_net_idle_touch(net_conn *c);
/* Drops a connection that stopped answering without waiting for the peer;
 * returns -1 for the callback to return. */
int shoal_net_cut(struct lws *wsi);
/* Under net->lock: the session with this id, or NULL. */
net_conn *shoal_net_map_find(shoal_net *net, shoal_conn_id id);
void shoal_net_map_insert(shoal_net *net, net_conn *c);
void shoal_net_map_remove(shoal_net *net, net_conn *c);
/* Under net->lock: asks the service thread for a writable callback on c;
 * returns non-zero when the caller must lws_cancel_service(). */
int shoal_net_wake_push(shoal_net *net, net_conn *c);
void shoal_net_wake_remove(shoal_net *net, net_conn *c);
/* Copies a close code and reason into c (under net->lock). */
void shoal_net_set_close(net_conn *c, uint16_t code, const char *reason);

/* session.c: the WebSocket half, service thread only. */
int shoal_net_session_confirm_upgrade(net_conn *c, const char *upgrade);
int shoal_net_session_open(net_conn *c);
int shoal_net_session_receive(net_conn *c, const uint8_t *in, size_t len);
int shoal_net_session_writeable(net_conn *c);
int shoal_net_session_timer(net_conn *c);
/* Another thread queued output or a close for c. */
/* Writes what is queued, arms the close deadline when closing, and stops
 * or restarts reading as pause_input asks (the idle clock restarts then). */
void shoal_net_session_wake(net_conn *c, int closing, int pause_input);
void shoal_net_session_closed(net_conn *c);
/* The peer sent a Close (payload in/len): 0 to let lws echo it, -1 after
 * choosing our own status code for a malformed one (RFC 6455 §7.4). */
int shoal_net_session_peer_close(net_conn *c, const uint8_t *in, size_t len);
/* Flushes what is queued, then closes with code/reason (service thread). */
void shoal_net_session_begin_close(net_conn *c, uint16_t code, const char *reason);

/* http.c: the HTTP half, service thread only. */
int shoal_net_http_request(net_conn *c, const char *path, size_t path_len);
int shoal_net_http_writeable(net_conn *c);
void shoal_net_http_reset(net_conn *c);
/* A short answer written at once (refused upgrades); returns 0 or -1. */
int shoal_net_http_reply_now(net_conn *c, int status, const char *text, const char *extra_header);

/* tls.c */
shoal_err shoal_net_tls_check(const char *cert_path, const char *key_path, shoal_errinfo *ei);
/* OpenSSL option bits and the TLS 1.2 cipher list for the vhost. */
long shoal_net_tls_options(void);
const char *shoal_net_tls12_ciphers(void);
/* Session resumption on the vhost's SSL_CTX (lws hands it over in
 * LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS): tickets sealed
 * with net->tickets, or none; no session cache; every completed
 * handshake counted in stat_tls_handshakes (and stat_tls_resumed).
 * Returns 0 or -1. */
int shoal_net_tls_setup_ctx(shoal_net *net, void *ssl_ctx);

#endif
