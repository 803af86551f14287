/* The network layer's life cycle, the id map and wake list shared with
 * other threads, and the one libwebsockets callback that dispatches to
 * session.c (WebSocket) and http.c (HTTP). See net_int.h for who owns
 * what. */
#include "net_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"

/* Upper bounds that keep microsecond arithmetic far from overflow. */
#define MAX_TIMEOUT_MS ((int64_t)7 * 24 * 3600 * 1000)
/* OpenSSL keeps session times in whole seconds. */
#define MIN_TICKET_ROTATION_MS ((int64_t)1000)

int64_t shoal_net_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- id map and wake list (callers hold net->lock) ---- */

static size_t bucket_of(const shoal_net *net, shoal_conn_id id)
{
    /* Ids are sequential; a multiplicative hash spreads them anyway. */
    return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & net->bucket_mask;
}

net_conn *shoal_net_map_find(shoal_net *net, shoal_conn_id id)
{
    if (id == 0 || !net->buckets)
        return NULL;
    for (net_conn *c = net->buckets[bucket_of(net, id)]; c; c = c->bucket_next)
        if (c->id == id)
            return c;
    return NULL;
}

void shoal_net_map_insert(shoal_net *net, net_conn *c)
{
    size_t b = bucket_of(net, c->id);
    c->bucket_next = net->buckets[b];
    net->buckets[b] = c;
}

void shoal_net_map_remove(shoal_net *net, net_conn *c)
{
    net_conn **pp = &net->buckets[bucket_of(net, c->id)];
    while (*pp && *pp != c)
        pp = &(*pp)->bucket_next;
    if (*pp)
        *pp = c->bucket_next;
    c->bucket_next = NULL;
}

int shoal_net_wake_push(shoal_net *net, net_conn *c)
{
    if (c->waking)
        return 0;
    int was_empty = net->wake_head == NULL;
    c->waking = 1;
    c->wake_prev = NULL;
    c->wake_next = net->wake_head;
    if (net->wake_head)
        net->wake_head->wake_prev = c;
    net->wake_head = c;
    /* One wake-up covers everything queued until the service thread takes
     * the list, so only the first entry needs to signal. */
    return was_empty;
}

void shoal_net_wake_remove(shoal_net *net, net_conn *c)
{
    if (!c->waking)
        return;
    if (c->wake_prev)
        c->wake_prev->wake_next = c->wake_next;
    else
        net->wake_head = c->wake_next;
    if (c->wake_next)
        c->wake_next->wake_prev = c->wake_prev;
    c->wake_prev = c->wake_next = NULL;
    c->waking = 0;
}

/* RFC 6455 §7.4: codes an endpoint may put in a Close frame. */
static int close_code_sendable(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

void shoal_net_set_close(net_conn *c, uint16_t code, const char *reason)
{
    c->closing = 1;
    c->close_code = close_code_sendable(code) ? code : NET_CLOSE_NORMAL;
    size_t n = reason ? strlen(reason) : 0;
    if (n > NET_MAX_REASON) {
        n = NET_MAX_REASON;
        /* Do not cut a UTF-8 sequence in half: the peer must reject that. */
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(c->close_reason, reason, n);
    c->close_reason[n] = '\0';
    c->close_reason_len = n;
}

/* ---- the service thread ---- */

int shoal_net_cut(struct lws *wsi)
{
    /* lws closes politely: TLS close_notify or shutdown(SHUT_WR), then it
     * waits up to its own timeout (20 s in 4.1) for the peer to finish. A
     * peer we are dropping for not answering will not finish, so end the
     * socket both ways now; lws then sees the end at once and frees it. */
    int fd = (int)lws_get_socket_fd(wsi);
    if (fd >= 0)
        (void)shutdown(fd, SHUT_RDWR);
    return -1;
}

static void peer_name(struct lws *wsi, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN];
    int fd = (int)lws_get_socket_fd(wsi);

    snprintf(out, size, "unknown peer");
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host))
            snprintf(out, size, "%s:%u", host, (unsigned)ntohs(in4->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            if (inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host))
                snprintf(out, size, "%s:%u", host, (unsigned)ntohs(in6->sin6_port));
        } else if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host)) {
            snprintf(out, size, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
        }
    }
}

static int filter_accept(shoal_net *net)
{
    if (net->stopping)
        return 1;
    if (net->open_count >= net->cfg.max_connections) {
        atomic_fetch_add(&net->stat_refused, 1);
        SHOAL_INFO(NET_LOG, "refusing a connection: %u connections open, max_connections is %u",
                   (unsigned)net->open_count, (unsigned)net->cfg.max_connections);
        return 1;
    }
    return 0;
}

/* libwebsockets' own idle checking ("validity": a PING after a quiet spell,
 * a hang-up later) off: the idle sweep (session.c) does that job, and lws
 * 4.1 re-arms a validity timer per connection in its one sorted timer
 * list, which costs O(open connections) each time (a zero hang-up time
 * turns it off). */
static const lws_retry_bo_t no_validity_checks = {.secs_since_valid_ping = 0,
                                                  .secs_since_valid_hangup = 0};

static void conn_begin(shoal_net *net, struct lws *wsi)
{
    net_conn *c = shoal_calloc(1, sizeof *c);
    if (!c) {
        SHOAL_ERROR(NET_LOG, "out of memory for a new connection; dropping it");
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    c->net = net;
    c->wsi = wsi;
    c->kind = CONN_PENDING;
    peer_name(wsi, c->peer, sizeof c->peer);
    c->next = net->conns;
    if (net->conns)
        net->conns->prev = c;
    net->conns = c;
    net->open_count++;
    atomic_fetch_add(&net->stat_connections, 1);
    lws_set_opaque_user_data(wsi, c);
    /* The TLS handshake and the HTTP request (or upgrade) must be done
     * before this fires; session_open and http_request cancel it. */
    lws_set_timer_usecs(wsi, (lws_usec_t)net->cfg.handshake_timeout_ms * 1000);
    SHOAL_DEBUG(NET_LOG, "%s: connected", c->peer);
}

static void conn_end(shoal_net *net, net_conn *c)
{
    /* LWS_CALLBACK_CLOSED normally came first; this covers any path where
     * lws destroys a session without it, so on_close is never skipped. */
    shoal_net_session_closed(c);
    shoal_net_http_reset(c);
    shoal_free(c->rx);
    c->rx = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        net->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    net->open_count--;
    atomic_fetch_sub(&net->stat_connections, 1);
    lws_set_opaque_user_data(c->wsi, NULL);
    SHOAL_DEBUG(NET_LOG, "%s: disconnected", c->peer);
    shoal_free(c);
}

static void drain_wakes(shoal_net *net)
{
    /* One entry at a time: a sender may queue the same connection again as
     * soon as it is off the list, which would rewrite its links under a
     * walk of a detached list. Entries cannot be freed meanwhile: only this
     * thread frees them, after unlinking them. */
    for (;;) {
        pthread_mutex_lock(&net->lock);
        net_conn *c = net->wake_head;
        int closing = 0, pause_input = 0, hold = 0;
        if (c) {
            shoal_net_wake_remove(net, c);
            closing = c->closing;
            pause_input = c->pause_input;
            hold = c->hold_next;
            c->hold_next = 0;
        }
        pthread_mutex_unlock(&net->lock);
        if (!c)
            break;
        if (hold)
            c->hold_armed = 1;
        shoal_net_session_wake(c, closing, pause_input);
    }
}

static void grace_expired(lws_sorted_usec_list_t *sul)
{
    shoal_net *net = lws_container_of(sul, shoal_net, grace_sul);
    net->grace_over = 1;
    /* lws runs ripe timers at the top of lws_service and then polls; with
     * nothing else scheduled that poll would sleep until some socket
     * stirs. Wake it so shoal_net_run sees grace_over now. */
    lws_cancel_service(net->ctx);
}

static void begin_stop(shoal_net *net)
{
    net->stopping = 1;
    for (net_conn *c = net->conns; c; c = c->next)
        if (c->kind == CONN_WS)
            shoal_net_session_begin_close(c, NET_CLOSE_GOING_AWAY, "server shutting down");
    lws_sul_schedule(net->ctx, 0, &net->grace_sul, grace_expired, NET_STOP_GRACE_US);
    SHOAL_INFO(NET_LOG, "stopping: closing %llu WebSocket sessions",
               (unsigned long long)net->ws_live);
}

static int net_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    (void)user;
    shoal_net *net = lws_context_user(lws_get_context(wsi));
    net_conn *c = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return filter_accept(net);
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* Called while lws_create_context makes the TLS vhost; user is
         * its SSL_CTX (the admin vhost has no TLS). */
        return shoal_net_tls_setup_ctx(net, user) ? -1 : 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        conn_begin(net, wsi);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (c)
            conn_end(net, c);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        drain_wakes(net);
        return 0;
    case LWS_CALLBACK_TIMER:
        if (!c)
            return 0;
        if (c->kind == CONN_PENDING) {
            SHOAL_INFO(NET_LOG,
                       "%s: handshake not finished within handshake_timeout_ms (%lld); "
                       "closing",
                       c->peer, (long long)net->cfg.handshake_timeout_ms);
            return shoal_net_cut(wsi);
        }
        return c->kind == CONN_WS ? shoal_net_session_timer(c) : 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* The admin listener serves HTTP only. */
        if (net->admin_vhost && lws_get_vhost(wsi) == net->admin_vhost)
            return -1;
        return c ? shoal_net_session_confirm_upgrade(c, in) : -1;
    case LWS_CALLBACK_HTTP:
        return c ? shoal_net_http_request(c, in, len) : -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return c ? shoal_net_http_writeable(c) : -1;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c && c->kind == CONN_HTTP)
            shoal_net_http_reset(c);
        return 0;

    case LWS_CALLBACK_ESTABLISHED:
        return c ? shoal_net_session_open(c) : -1;
    case LWS_CALLBACK_RECEIVE:
        return c ? shoal_net_session_receive(c, in, len) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (c)
            shoal_net_idle_touch(c);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c ? shoal_net_session_writeable(c) : -1;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return c && c->kind == CONN_WS ? shoal_net_session_peer_close(c, in, len) : 0;
    case LWS_CALLBACK_CLOSED:
        if (c && c->kind == CONN_WS)
            shoal_net_session_closed(c);
        return 0;
    default:
        return 0;
    }
}

/* lws's own messages: only its warnings and errors, into our log. */
static void lws_log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    shoal_log_level to = (level & LLL_ERR) ? SHOAL_LOG_ERROR : SHOAL_LOG_WARN;
    SHOAL_LOG(to, NET_LOG, "libwebsockets: %.*s", (int)n, line);
}

static int address_family(const char *address)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, address, buf) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, address, buf) == 1)
        return AF_INET6;
    return AF_UNSPEC;
}

static shoal_err check_config(const shoal_net_config *cfg, shoal_errinfo *ei)
{
    if (cfg->max_connections == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: max_connections is 0; it must be at least 1");
    if (cfg->max_message_bytes == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: max_message_bytes is 0; it must be at least 1");
    if (cfg->max_outbox_messages == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: max_outbox_messages is 0; it must be at least 1");
    if (cfg->handshake_timeout_ms <= 0 || cfg->handshake_timeout_ms > MAX_TIMEOUT_MS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: handshake_timeout_ms is %lld; expected 1 to %lld",
                                 (long long)cfg->handshake_timeout_ms, (long long)MAX_TIMEOUT_MS);
    if (cfg->idle_timeout_ms < 0 || cfg->idle_timeout_ms > MAX_TIMEOUT_MS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: idle_timeout_ms is %lld; expected 0 (never) to %lld",
                                 (long long)cfg->idle_timeout_ms, (long long)MAX_TIMEOUT_MS);
    if (cfg->address && address_family(cfg->address) == AF_UNSPEC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: address \"%.64s\" is not a numeric IPv4 or IPv6 address; "
                                 "give one such as 127.0.0.1 or ::1, or none for all interfaces",
                                 cfg->address);
    if (cfg->tls && cfg->session_tickets &&
        (cfg->ticket_rotation_ms < MIN_TICKET_ROTATION_MS ||
         cfg->ticket_rotation_ms > MAX_TIMEOUT_MS))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: ticket_rotation_ms is %lld; expected %lld to %lld",
                                 (long long)cfg->ticket_rotation_ms,
                                 (long long)MIN_TICKET_ROTATION_MS, (long long)MAX_TIMEOUT_MS);
    if (cfg->tls && (!cfg->cert_path || !*cfg->cert_path || !cfg->key_path || !*cfg->key_path))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "net: TLS is on but %s is not set; give PEM files, or turn TLS "
                                 "off only behind a TLS-terminating proxy",
                                 (!cfg->cert_path || !*cfg->cert_path) ? "cert_path" : "key_path");
    return SHOAL_OK;
}

/* Tries the bind lws is about to do, to say exactly why it cannot (and
 * because lws 4.1 leaks a little on a failed lws_create_context). A
 * success here proves nothing for later: lws's own failure is still
 * handled. */
static shoal_err check_bind(const shoal_net_config *cfg, shoal_errinfo *ei)
{
    const char *shown = cfg->address ? cfg->address : "*";
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (cfg->address && inet_pton(AF_INET, cfg->address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(cfg->port);
        sl = sizeof *in4;
    } else {
        /* An IPv6 address, or none: lws listens on IPv6 (dual stack). */
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(cfg->port);
        in6->sin6_addr = in6addr_any;
        if (cfg->address && inet_pton(AF_INET6, cfg->address, &in6->sin6_addr) != 1)
            return SHOAL_OK; /* check_config refuses these */
        sl = sizeof *in6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return SHOAL_OK; /* no IPv6 here, say: leave it to lws */
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, sl);
    int saved = errno;
    close(fd);
    if (rc == 0)
        return SHOAL_OK;
    return shoal_errinfo_set(
        ei, SHOAL_EIO, "cannot listen on %s:%u: %s; %s", shown, (unsigned)cfg->port,
        strerror(saved),
        saved == EADDRINUSE      ? "another process holds the port: stop it, or choose another "
                                   "port (0 picks a free one)"
        : saved == EACCES        ? "ports below 1024 need privileges: choose a higher port"
        : saved == EADDRNOTAVAIL ? "the address is not one of this machine's: check address"
                                 : "check address and port");
}

static char *dup_or_null(const char *s, int *failed)
{
    if (!s)
        return NULL;
    char *d = shoal_strdup(s);
    if (!d)
        *failed = 1;
    return d;
}

static void warn_fd_limit(const shoal_net_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    /* A few descriptors go to the listener, lws's wake pipe, the state
     * database and logs. */
    if ((rlim_t)cfg->max_connections + 32 > rl.rlim_cur)
        SHOAL_WARN(NET_LOG,
                   "max_connections is %u but this process may open only %llu files "
                   "(ulimit -n); connections beyond that wait in the listen queue: raise "
                   "the limit",
                   (unsigned)cfg->max_connections, (unsigned long long)rl.rlim_cur);
}

/* The admin listener: a second vhost on the same protocol, plain HTTP. */
static shoal_err listen_admin(shoal_net *net, shoal_errinfo *ei)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = net->cfg.admin_port;
    info.iface = net->admin_address;
    info.protocols = net->protocols;
    info.user = net;
    info.vhost_name = "admin";
    info.server_string = "shoal";
    info.retry_and_idle_policy = &no_validity_checks;
    info.max_http_header_data = 4096;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (address_family(net->admin_address) == AF_INET)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    net->admin_vhost = lws_create_vhost(net->ctx, &info);
    int port = net->admin_vhost ? lws_get_vhost_listen_port(net->admin_vhost) : -1;
    if (port <= 0 || port > 65535)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "cannot listen for HTTP on %s:%u (http.listen): the address is "
                                 "in use or not this host's; see the libwebsockets messages "
                                 "logged before this",
                                 net->admin_address, (unsigned)net->cfg.admin_port);
    net->admin_port = (uint16_t)port;
    SHOAL_INFO(NET_LOG, "HTTP for operators on %s:%u (plain)", net->admin_address,
               (unsigned)net->admin_port);
    return SHOAL_OK;
}

shoal_err shoal_net_new(const shoal_net_config *cfg, const shoal_net_handlers *handlers,
                        shoal_net **out, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    if (!cfg || !handlers || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "net: NULL config, handlers or out");
    shoal_err err = check_config(cfg, ei);
    if (!err)
        err = check_bind(cfg, ei);
    if (err)
        return err;
    if (cfg->tls) {
        err = shoal_net_tls_check(cfg->cert_path, cfg->key_path, ei);
        if (err)
            return err;
    }

    shoal_net *net = shoal_calloc(1, sizeof *net);
    if (!net)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "net: out of memory");
    if (pthread_mutex_init(&net->lock, NULL) != 0) {
        shoal_free(net);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "net: cannot create a mutex");
    }
    net->cfg = *cfg;
    net->handlers = *handlers;
    int failed = 0;
    net->address = dup_or_null(cfg->address, &failed);
    net->admin_address = dup_or_null(cfg->admin_address, &failed);
    net->cfg.admin_address = net->admin_address;
    net->cert_path = dup_or_null(cfg->tls ? cfg->cert_path : NULL, &failed);
    net->key_path = dup_or_null(cfg->tls ? cfg->key_path : NULL, &failed);
    net->cfg.address = net->address;
    net->cfg.cert_path = net->cert_path;
    net->cfg.key_path = net->key_path;

    /* Sized once: the map never holds more than max_connections sessions. */
    size_t buckets = 64;
    while (buckets < cfg->max_connections && buckets < ((size_t)1 << 20))
        buckets <<= 1;
    net->buckets = shoal_calloc(buckets, sizeof *net->buckets);
    net->bucket_mask = buckets - 1;
    net->scratch = shoal_malloc(LWS_PRE + NET_PIECE);
    if (failed || !net->buckets || !net->scratch) {
        shoal_net_free(net);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "net: out of memory");
    }
    if (cfg->tls && cfg->session_tickets &&
        (err = shoal_net_tickets_new(cfg->ticket_rotation_ms * 1000, shoal_net_now_us(),
                                     &net->tickets))) {
        shoal_net_free(net);
        return shoal_errinfo_set(ei, err, "net: cannot make the TLS session ticket keys: %s",
                                 shoal_strerror(err));
    }

    /* One protocol serves both HTTP (lws sends all HTTP to protocols[0])
     * and the WebSocket subprotocol; the list ends with an all-zero entry
     * (lws 4.1 has no LWS_PROTOCOL_LIST_TERM). */
    memset(net->protocols, 0, sizeof net->protocols);
    net->protocols[0].name = SHOAL_NET_SUBPROTOCOL;
    net->protocols[0].callback = net_callback;
    net->protocols[0].per_session_data_size = 0;
    net->protocols[0].rx_buffer_size = NET_RX_BUFFER;
    /* Without this lws would cap each send() at rx_buffer_size and copy
     * the rest of every piece into its own buffer. */
    net->protocols[0].tx_packet_size = NET_PIECE + 16;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    warn_fd_limit(cfg);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = cfg->port;
    info.iface = net->address;
    info.protocols = net->protocols;
    info.user = net;
    info.gid = -1;
    info.uid = -1;
    info.server_string = "shoal";
    info.max_http_header_data = 4096;
    info.alpn = "http/1.1";
    info.retry_and_idle_policy = &no_validity_checks;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    /* lws 4.1 built with IPv6 cannot bind an IPv4 address: it listens on
     * every interface instead ("127.0.0.1" becomes *:port). With IPv6 off
     * for this vhost it binds exactly the address given. */
    if (net->address && address_family(net->address) == AF_INET)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (cfg->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = net->cert_path;
        info.ssl_private_key_filepath = net->key_path;
        info.ssl_options_set = shoal_net_tls_options();
        info.ssl_cipher_list = shoal_net_tls12_ciphers();
        /* tls1_3_plus_cipher_list stays NULL: OpenSSL's TLS 1.3 suites
         * are all AEAD. */
    }

    net->ctx = lws_create_context(&info);
    if (!net->ctx) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "cannot start the server on %s:%u%s; see the libwebsockets "
                                "messages logged before this",
                                cfg->address ? cfg->address : "*", (unsigned)cfg->port,
                                cfg->tls ? " (listening socket or TLS set-up failed)" : "");
        shoal_net_free(net);
        return err;
    }
    net->ctx_alive = 1;
    struct lws_vhost *vh = lws_get_vhost_by_name(net->ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : -1;
    if (port <= 0 || port > 65535) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "cannot listen on %s:%u: libwebsockets reports no listening "
                                "port",
                                cfg->address ? cfg->address : "*", (unsigned)cfg->port);
        shoal_net_free(net);
        return err;
    }
    net->port = (uint16_t)port;
    SHOAL_INFO(NET_LOG, "listening on %s:%u (%s)", cfg->address ? cfg->address : "*",
               (unsigned)net->port,
               !cfg->tls              ? "plain, behind a TLS proxy"
               : cfg->session_tickets ? "TLS, session tickets on"
                                      : "TLS, session tickets off");
    if (net->admin_address && (err = listen_admin(net, ei))) {
        shoal_net_free(net);
        return err;
    }
    *out = net;
    return SHOAL_OK;
}

static void destroy_context(shoal_net *net)
{
    if (!net->ctx)
        return;
    pthread_mutex_lock(&net->lock);
    net->ctx_alive = 0;
    pthread_mutex_unlock(&net->lock);
    lws_sul_cancel(&net->grace_sul);
    lws_sul_cancel(&net->idle_sul);
    /* Closes what is left; LWS_CALLBACK_CLOSED / WSI_DESTROY still run
     * (on this thread), so every accepted session gets its on_close. */
    lws_context_destroy(net->ctx);
    net->ctx = NULL;
}

void shoal_net_free(shoal_net *net)
{
    if (!net)
        return;
    destroy_context(net);
    shoal_net_tickets_free(net->tickets);
    shoal_free(net->buckets);
    shoal_free(net->scratch);
    shoal_free(net->address);
    shoal_free(net->admin_address);
    shoal_free(net->cert_path);
    shoal_free(net->key_path);
    pthread_mutex_destroy(&net->lock);
    shoal_free(net);
}

uint16_t shoal_net_port(const shoal_net *net)
{
    return net ? net->port : 0;
}

uint16_t shoal_net_admin_port(const shoal_net *net)
{
    return net ? net->admin_port : 0;
}

shoal_err shoal_net_run(shoal_net *net)
{
    if (!net)
        return SHOAL_EINVAL;
    if (atomic_exchange(&net->run_started, 1) || !net->ctx)
        return SHOAL_ESTATE;
    shoal_err err = SHOAL_OK;
    for (;;) {
        if (atomic_load(&net->stop_requested) && !net->stopping)
            begin_stop(net);
        if (net->stopping && (net->ws_live == 0 || net->grace_over))
            break;
        if (lws_service(net->ctx, 0) < 0) {
            SHOAL_ERROR(NET_LOG, "the service loop failed on port %u; closing every connection",
                        (unsigned)net->port);
            err = SHOAL_EIO;
            break;
        }
    }
    destroy_context(net);
    SHOAL_INFO(NET_LOG, "stopped (port %u)", (unsigned)net->port);
    return err;
}

void shoal_net_stop(shoal_net *net)
{
    if (!net)
        return;
    atomic_store(&net->stop_requested, 1);
    pthread_mutex_lock(&net->lock);
    if (net->ctx_alive)
        lws_cancel_service(net->ctx);
    pthread_mutex_unlock(&net->lock);
}

void shoal_net_msg_free(net_msg *m)
{
    if (!m)
        return;
    if (m->release)
        m->release(m->release_ctx);
    else
        shoal_free(m->bytes);
    shoal_free(m);
}

static shoal_err enqueue(shoal_net *net, shoal_conn_id id, uint8_t *bytes, size_t len,
                         void (*release)(void *), void *release_ctx)
{
    if (!net || (!bytes && len > 0))
        return SHOAL_EINVAL;
    net_msg *m = shoal_malloc(sizeof *m);
    if (!m)
        return SHOAL_ENOMEM;
    m->next = NULL;
    m->bytes = bytes;
    m->len = len;
    m->release = release;
    m->release_ctx = release_ctx;

    shoal_err err = SHOAL_OK;
    pthread_mutex_lock(&net->lock);
    net_conn *c = net->ctx_alive ? shoal_net_map_find(net, id) : NULL;
    if (!c || c->closing) {
        err = SHOAL_ECLOSED;
    } else if (c->out_count >= net->cfg.max_outbox_messages) {
        err = SHOAL_ELIMIT;
    } else {
        if (c->out_tail)
            c->out_tail->next = m;
        else
            c->out_head = m;
        c->out_tail = m;
        c->out_count++;
        if (shoal_net_wake_push(net, c))
            lws_cancel_service(net->ctx);
    }
    pthread_mutex_unlock(&net->lock);
    if (err)
        shoal_free(m);
    return err;
}

shoal_err shoal_net_send(shoal_net *net, shoal_conn_id id, uint8_t *bytes, size_t len)
{
    return enqueue(net, id, bytes, len, NULL, NULL);
}

shoal_err shoal_net_send_shared(shoal_net *net, shoal_conn_id id, const uint8_t *bytes, size_t len,
                                void (*release)(void *ctx), void *ctx)
{
    if (!release)
        return SHOAL_EINVAL;
    return enqueue(net, id, (uint8_t *)bytes, len, release, ctx);
}

void shoal_net_close(shoal_net *net, shoal_conn_id id, uint16_t code, const char *reason)
{
    if (!net)
        return;
    pthread_mutex_lock(&net->lock);
    net_conn *c = net->ctx_alive ? shoal_net_map_find(net, id) : NULL;
    if (c && !c->closing) {
        shoal_net_set_close(c, code, reason);
        if (shoal_net_wake_push(net, c))
            lws_cancel_service(net->ctx);
    }
    pthread_mutex_unlock(&net->lock);
}

void shoal_net_pause_input(shoal_net *net, shoal_conn_id id, int pause)
{
    if (!net)
        return;
    pthread_mutex_lock(&net->lock);
    net_conn *c = net->ctx_alive ? shoal_net_map_find(net, id) : NULL;
    if (c && !c->closing && c->pause_input != !!pause) {
        c->pause_input = !!pause;
        if (shoal_net_wake_push(net, c))
            lws_cancel_service(net->ctx);
    }
    pthread_mutex_unlock(&net->lock);
}

void shoal_net_hold_next(shoal_net *net, shoal_conn_id id)
{
    if (!net || !net->handlers.on_held)
        return;
    pthread_mutex_lock(&net->lock);
    net_conn *c = net->ctx_alive ? shoal_net_map_find(net, id) : NULL;
    if (c && !c->closing) {
        c->hold_next = 1; /* drain_wakes arms it on the service thread */
        if (shoal_net_wake_push(net, c))
            lws_cancel_service(net->ctx);
    }
    pthread_mutex_unlock(&net->lock);
}

void shoal_net_get_stats(const shoal_net *net, shoal_net_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!net)
        return;
    shoal_net *n = (shoal_net *)net; /* atomics are read, not changed */
    out->connections = atomic_load(&n->stat_connections);
    out->accepted_total = atomic_load(&n->stat_accepted);
    out->refused_total = atomic_load(&n->stat_refused);
    out->bytes_in_total = atomic_load(&n->stat_bytes_in);
    out->bytes_out_total = atomic_load(&n->stat_bytes_out);
    out->http_requests_total = atomic_load(&n->stat_http);
    out->tls_handshakes_total = atomic_load(&n->stat_tls_handshakes);
    out->tls_resumed_total = atomic_load(&n->stat_tls_resumed);
}
