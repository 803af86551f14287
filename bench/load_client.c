/* server_load: the client side: raw TLS for the baseline and the /metrics
 * scrape, and the WebSocket protocol helpers every mode uses. */
#include "server_load.h"

/* ---- raw TLS (no WebSocket): the baseline and the /metrics scrape ------------------ */

static int raw_send(void *ctx, const uint8_t *buf, size_t len)
{
    rawtls *r = ctx;
    for (;;) {
        ssize_t n = send(r->fd, buf, len > INT_MAX ? INT_MAX : len, MSG_NOSIGNAL);
        if (n > 0)
            return (int)n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK)
            return SHOAL_TLS_IO_AGAIN;
        return SHOAL_TLS_IO_ERROR;
    }
}

static int raw_recv(void *ctx, uint8_t *buf, size_t len)
{
    rawtls *r = ctx;
    for (;;) {
        ssize_t n = recv(r->fd, buf, len > INT_MAX ? INT_MAX : len, 0);
        if (n > 0)
            return (int)n;
        if (n == 0)
            return SHOAL_TLS_IO_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SHOAL_TLS_IO_AGAIN;
        return SHOAL_TLS_IO_ERROR;
    }
}

static int wait_fd(int fd, int for_write, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = for_write ? POLLOUT : POLLIN};
    int rc;
    do
        rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    return rc;
}

void load_raw_close(rawtls *r)
{
    if (r->tls) {
        shoal_errinfo ei = {0};
        for (int i = 0; i < 50; i++) {
            shoal_err err = shoal_tls_close_notify(r->tls, &ei);
            if (err != SHOAL_EAGAIN)
                break;
            wait_fd(r->fd, 1, 100);
        }
        shoal_tls_free(r->tls);
    }
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->tls = NULL;
}

/* TCP connect and TLS handshake within timeout_ms. */
shoal_err load_raw_open(rawtls *r, int timeout_ms, shoal_errinfo *ei)
{
    return load_raw_open_session(r, 0, NULL, 0, timeout_ms, ei);
}

shoal_err load_raw_open_session(rawtls *r, int tickets, const uint8_t *saved, size_t saved_len,
                                int timeout_ms, shoal_errinfo *ei)
{
    r->tls = NULL;
    r->fd = socket(load_server_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return shoal_errinfo_set(ei, SHOAL_EIO, "socket: %s", strerror(errno));
    int one = 1;
    (void)setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int64_t deadline = load_mono_us() + (int64_t)timeout_ms * 1000;
    if (connect(r->fd, (struct sockaddr *)&load_server_addr, load_server_addr_len) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            load_raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_EIO, "connect: %s", strerror(e));
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (wait_fd(r->fd, 1, timeout_ms) <= 0 ||
            getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            load_raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_EIO, "connect: %s",
                                     soerr ? strerror(soerr) : "timed out");
        }
    }
    shoal_tls_config tc = {.server_name = load_opt.server_name,
                           .ca_pem = load_ca_pem,
                           .ca_label = load_opt.ca_file,
                           .send = raw_send,
                           .recv = raw_recv,
                           .io_ctx = r,
                           .session_tickets = tickets};
    shoal_err err = shoal_tls_new(&tc, &r->tls, ei);
    if (!err && saved)
        err = shoal_tls_set_session(r->tls, saved, saved_len, ei);
    if (err) {
        load_raw_close(r);
        return err;
    }
    while ((err = shoal_tls_handshake(r->tls, ei)) == SHOAL_EAGAIN) {
        int left = (int)((deadline - load_mono_us()) / 1000);
        if (left <= 0 || wait_fd(r->fd, shoal_tls_want_write(r->tls), left) <= 0) {
            load_raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_ETIMEDOUT, "TLS handshake timed out");
        }
    }
    if (err) {
        shoal_tls_free(r->tls);
        r->tls = NULL;
        load_raw_close(r);
    }
    return err;
}

/* GET path over HTTPS with Connection: close; the body, malloc'd, or NULL. */
static char *https_get(const char *path)
{
    rawtls r;
    shoal_errinfo ei = {0};
    if (load_raw_open(&r, 10000, &ei) != SHOAL_OK) {
        fprintf(stderr, "server_load: GET %s: %s\n", path, ei.msg);
        return NULL;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, load_opt.server_name);
    size_t off = 0;
    while (off < (size_t)n) {
        size_t w = 0;
        shoal_err err =
            shoal_tls_write(r.tls, (const uint8_t *)req + off, (size_t)n - off, &w, &ei);
        if (err == SHOAL_EAGAIN) {
            wait_fd(r.fd, 1, 1000);
            continue;
        }
        if (err) {
            load_raw_close(&r);
            return NULL;
        }
        off += w;
    }
    while (shoal_tls_flush(r.tls, &ei) == SHOAL_EAGAIN)
        wait_fd(r.fd, 1, 1000);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    int64_t deadline = load_mono_us() + 10 * 1000000;
    while (buf) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        size_t got = 0;
        shoal_err err = shoal_tls_read(r.tls, (uint8_t *)buf + len, cap - len, &got, &ei);
        if (err == SHOAL_OK) {
            len += got;
            continue;
        }
        if (err != SHOAL_EAGAIN || load_mono_us() > deadline)
            break;
        wait_fd(r.fd, 0, 1000);
    }
    load_raw_close(&r);
    if (!buf)
        return NULL;
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (!body) {
        free(buf);
        return NULL;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}

/* A sample's value from Prometheus text: the line starting with `name`
 * followed by a space (name may include {labels}). NAN when absent. */
static double metric_value(const char *text, const char *name)
{
    if (!text)
        return NAN;
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

scrape load_metrics_scrape(void)
{
    scrape s = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    char *text = https_get("/metrics");
    if (!text)
        return s;
    char name[300];
    s.connections = metric_value(text, "shoal_connections");
    s.bytes_sent = metric_value(text, "shoal_bytes_sent_total");
    s.bytes_received = metric_value(text, "shoal_bytes_received_total");
    s.tls_handshakes = metric_value(text, "shoal_tls_handshakes_total");
    s.tls_resumed = metric_value(text, "shoal_tls_resumed_total");
    if (load_opt.population) {
#define POP_METRIC(field, metric)                                                                  \
    snprintf(name, sizeof name, metric "{population=\"%s\"}", load_opt.population);                \
    s.field = metric_value(text, name)
        POP_METRIC(accepted, "shoal_devices_accepted_total");
        POP_METRIC(rejected, "shoal_devices_rejected_total");
        POP_METRIC(checked_in, "shoal_devices_checked_in_total");
        POP_METRIC(reported, "shoal_devices_reported_total");
        POP_METRIC(aggregation_s, "shoal_aggregation_seconds_total");
        POP_METRIC(model_version, "shoal_model_version");
#undef POP_METRIC
    }
    free(text);
    return s;
}

/* ---- protocol helpers ------------------------------------------------------------- */

shoal_err load_wss_open(shoal_wss **out, int timeout_ms, shoal_errinfo *ei)
{
    shoal_wss_config cfg = {.host = load_opt.host,
                            .port = load_opt.port,
                            .server_name = load_opt.server_name,
                            .ca_pem = load_ca_pem,
                            .timeout_ms = timeout_ms};
    return shoal_wss_connect(&cfg, out, ei);
}

/* A CheckIn, encoded; held_len 0 for none. */
uint8_t *load_encode_checkin(const uint8_t *held, size_t held_len, size_t *len)
{
    shoal_checkin_fields cf = {.population = load_opt.population,
                               .auth_token = (const uint8_t *)load_opt.token,
                               .auth_token_len = strlen(load_opt.token),
                               .sdk_version = "server_load/1",
                               .max_model_bytes = 1ull << 32,
                               .held_checkpoint_id = held,
                               .held_checkpoint_id_len = held_len};
    shoal_checkin_body body;
    shoal_envelope env;
    shoal_errinfo ei = {0};
    if (shoal_envelope_checkin_init(&env, &body, &cf, &ei) != SHOAL_OK)
        load_die("cannot build a CheckIn: %s", ei.msg);
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *buf = NULL;
    if (shoal_envelope_encode(&codec, &env, &buf, len, &ei) != SHOAL_OK)
        load_die("cannot encode a CheckIn: %s", ei.msg);
    return buf;
}

shoal_err load_send_env(shoal_wss *w, const shoal_envelope *env, int timeout_ms, shoal_errinfo *ei)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_err err = shoal_envelope_encode(&codec, env, &buf, &len, ei);
    if (err)
        return err;
    err = shoal_wss_send(w, buf, len, timeout_ms, ei);
    shoal_free(buf);
    return err;
}

shoal_err load_recv_env(shoal_wss *w, int timeout_ms, shoal_envelope **out, shoal_errinfo *ei)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    /* A ModelChunk is as large as the server's max_message_bytes allows. */
    codec.max_message_bytes = 1u << 30;
    uint8_t *msg = NULL;
    size_t len = 0;
    shoal_err err = shoal_wss_recv(w, &msg, &len, timeout_ms, ei);
    if (err)
        return err;
    err = shoal_envelope_decode(&codec, msg, len, out, ei);
    shoal_free(msg);
    return err;
}

void load_wss_end(shoal_wss *w)
{
    if (!w)
        return;
    if (shoal_wss_close(w, 1000, 5000) != SHOAL_OK) {
        /* The server may have closed first; nothing to do. */
    }
    shoal_wss_free(w);
}
