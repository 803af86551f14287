/* The deterministic test port: see shoal/port_test.h. */
#include "shoal/port_test.h"

#include <string.h>

#include "shoal/alloc.h"

static int64_t test_monotonic_ms(void *ctx)
{
    shoal_test_port *tp = ctx;
    int64_t now = tp->monotonic_ms;
    tp->monotonic_ms += tp->monotonic_step_ms;
    return now;
}

static int64_t test_wall_ms(void *ctx)
{
    shoal_test_port *tp = ctx;
    return tp->wall_ms + tp->monotonic_ms;
}

static shoal_err test_random(void *ctx, uint8_t *buf, size_t len)
{
    shoal_test_port *tp = ctx;
    while (len > 0) {
        uint64_t v = shoal_rng_u64(&tp->rng);
        size_t n = len < 8 ? len : 8;
        memcpy(buf, &v, n);
        buf += n;
        len -= n;
    }
    return SHOAL_OK;
}

static int test_battery(void *ctx)
{
    return ((shoal_test_port *)ctx)->battery_percent;
}

static int test_charging(void *ctx)
{
    shoal_test_port *tp = ctx;
    tp->charging_polls++;
    if (tp->charging_flip_after && tp->charging_polls > tp->charging_flip_after)
        tp->charging = tp->charging_after;
    return tp->charging;
}

static shoal_net_kind test_network(void *ctx)
{
    return ((shoal_test_port *)ctx)->network;
}

static int test_idle(void *ctx)
{
    return ((shoal_test_port *)ctx)->idle;
}

static shoal_err test_connect(void *ctx, const char *host, uint16_t port, shoal_port_conn **conn,
                              shoal_errinfo *ei)
{
    shoal_test_port *tp = ctx;
    tp->connects++;
    if (!tp->transport)
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s:%u: the test port has no transport", host,
                                 (unsigned)port);
    return tp->transport->connect(tp->transport->ctx, host, port, conn, ei);
}

static void record(shoal_test_port *tp, const uint8_t *buf, size_t len)
{
    if (tp->sent_len + len > tp->sent_cap) {
        size_t cap = tp->sent_cap ? tp->sent_cap : 4096;
        while (cap < tp->sent_len + len)
            cap *= 2;
        uint8_t *p = shoal_realloc(tp->sent, cap);
        if (!p) {
            tp->record_failed = 1;
            return;
        }
        tp->sent = p;
        tp->sent_cap = cap;
    }
    memcpy(tp->sent + tp->sent_len, buf, len);
    tp->sent_len += len;
}

/* What the test's io hook makes of a send (sending 1) or receive of len
 * bytes: 0 lets the transport move them. */
static int hooked(shoal_test_port *tp, int sending, size_t len)
{
    return tp->io_hook ? tp->io_hook(tp->hook_ctx, tp, sending, len) : 0;
}

static int test_send(void *ctx, shoal_port_conn *conn, const uint8_t *buf, size_t len)
{
    shoal_test_port *tp = ctx;
    int n = hooked(tp, 1, len);
    if (n)
        return n;
    n = tp->transport->send(tp->transport->ctx, conn, buf, len);
    if (n > 0) {
        tp->bytes_sent += (uint64_t)n;
        if (tp->record_sent)
            record(tp, buf, (size_t)n);
    }
    return n;
}

static int test_recv(void *ctx, shoal_port_conn *conn, uint8_t *buf, size_t len)
{
    shoal_test_port *tp = ctx;
    int n = hooked(tp, 0, len);
    if (!n && (n = tp->transport->recv(tp->transport->ctx, conn, buf, len)) > 0)
        tp->bytes_received += (uint64_t)n;
    return n;
}

static void test_close(void *ctx, shoal_port_conn *conn)
{
    shoal_test_port *tp = ctx;
    tp->transport->close(tp->transport->ctx, conn);
}

static shoal_err test_wait(void *ctx, shoal_port_conn *conn, int want_write, int timeout_ms)
{
    shoal_test_port *tp = ctx;
    if (!tp->transport->wait)
        return SHOAL_OK;
    return tp->transport->wait(tp->transport->ctx, conn, want_write, timeout_ms);
}

void shoal_test_port_init(shoal_test_port *tp)
{
    memset(tp, 0, sizeof *tp);
    tp->monotonic_ms = 1000;
    tp->monotonic_step_ms = 1;
    tp->wall_ms = 1767225600000; /* 2026-01-01T00:00:00Z */
    tp->seed = 1;
    tp->battery_percent = 100;
    tp->charging = 1;
    tp->network = SHOAL_NET_UNMETERED;
    tp->idle = 1;
}

void shoal_test_port_bind(shoal_test_port *tp, shoal_port *port)
{
    memset(port, 0, sizeof *port);
    shoal_rng_seed(&tp->rng, tp->seed);
    port->ctx = tp;
    port->monotonic_ms = test_monotonic_ms;
    port->wall_ms = test_wall_ms;
    port->random = test_random;
    port->battery_percent = test_battery;
    port->charging = test_charging;
    port->network = test_network;
    port->idle = test_idle;
    port->connect = test_connect;
    port->send = test_send;
    port->recv = test_recv;
    port->close = test_close;
    port->wait = test_wait;
}

void shoal_test_port_fini(shoal_test_port *tp)
{
    if (!tp)
        return;
    shoal_free(tp->sent);
    tp->sent = NULL;
    tp->sent_len = tp->sent_cap = 0;
}
