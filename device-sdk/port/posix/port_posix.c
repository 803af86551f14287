/* The reference POSIX port: see shoal/port_posix.h. */
#define _GNU_SOURCE /* getrandom, MSG_NOSIGNAL on older libcs */

#include "shoal/port_posix.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"

typedef struct posix_ctx {
    char power_dir[256];
    int battery_percent;
    atomic_int charging;
    atomic_int network;
    atomic_int idle;
    void (*log)(void *log_ctx, int level, const char *message);
    void *log_ctx;
} posix_ctx;

struct shoal_port_conn {
    int fd;
};

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t posix_monotonic_ms(void *ctx)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static int64_t posix_wall_ms(void *ctx)
{
    return clock_ms(CLOCK_REALTIME);
}

static shoal_err posix_random(void *ctx, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = getrandom(buf, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return SHOAL_ECRYPTO;
        }
        buf += n;
        len -= (size_t)n;
    }
    return SHOAL_OK;
}

/* Reads the first line of dir/name/attr into out; 0 on success. */
static int read_attr(const char *dir, const char *name, const char *attr, char *out, size_t cap)
{
    char path[1024];
    int n = snprintf(path, sizeof path, "%s/%s/%s", dir, name, attr);
    if (n < 0 || (size_t)n >= sizeof path)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = fgets(out, (int)cap, f);
    fclose(f);
    if (!line)
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

/* Looks through the power supplies: a battery's capacity and status, and
 * any mains/USB supply that is online. */
static void scan_power(const posix_ctx *p, int *percent, int *charging)
{
    *percent = -1;
    *charging = -1;
    if (!p->power_dir[0])
        return;
    DIR *d = opendir(p->power_dir);
    if (!d)
        return;
    struct dirent *e;
    int external_online = -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char type[64], value[64];
        if (read_attr(p->power_dir, e->d_name, "type", type, sizeof type) != 0)
            continue;
        if (strcmp(type, "Battery") == 0) {
            if (*percent < 0 &&
                read_attr(p->power_dir, e->d_name, "capacity", value, sizeof value) == 0) {
                int v = atoi(value);
                if (v >= 0 && v <= 100)
                    *percent = v;
            }
            if (*charging < 0 &&
                read_attr(p->power_dir, e->d_name, "status", value, sizeof value) == 0) {
                if (strcmp(value, "Charging") == 0 || strcmp(value, "Full") == 0)
                    *charging = 1;
                else if (strcmp(value, "Discharging") == 0)
                    *charging = 0;
            }
        } else if (read_attr(p->power_dir, e->d_name, "online", value, sizeof value) == 0) {
            if (strcmp(value, "1") == 0)
                external_online = 1;
            else if (external_online < 0)
                external_online = 0;
        }
    }
    closedir(d);
    if (*charging < 0)
        *charging = external_online;
}

static int posix_battery(void *ctx)
{
    posix_ctx *p = ctx;
    int percent, charging;
    scan_power(p, &percent, &charging);
    return percent >= 0 ? percent : p->battery_percent;
}

static int posix_charging(void *ctx)
{
    posix_ctx *p = ctx;
    int percent, charging;
    scan_power(p, &percent, &charging);
    return charging >= 0 ? charging : atomic_load(&p->charging);
}

static shoal_net_kind posix_network(void *ctx)
{
    return (shoal_net_kind)atomic_load(&((posix_ctx *)ctx)->network);
}

static int posix_idle(void *ctx)
{
    return atomic_load(&((posix_ctx *)ctx)->idle);
}

static shoal_err posix_connect(void *ctx, const char *host, uint16_t port, shoal_port_conn **conn,
                               shoal_errinfo *ei)
{
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0)
        return shoal_errinfo_set(ei, SHOAL_ENOTFOUND, "%s:%u: cannot resolve the host: %s", host,
                                 (unsigned)port, gai_strerror(rc));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int flags = fcntl(fd, F_GETFL, 0);
        int one = 1;
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
            last_errno = errno;
            close(fd);
            fd = -1;
            continue;
        }
        /* Small protocol messages must not wait for Nagle. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS)
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s:%u: connect failed: %s", host, (unsigned)port,
                                 strerror(last_errno));
    shoal_port_conn *c = shoal_malloc(sizeof *c);
    if (!c) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s:%u: out of memory", host, (unsigned)port);
    }
    c->fd = fd;
    *conn = c;
    return SHOAL_OK;
}

/* One send or receive: bytes moved, or AGAIN (a connection still being
 * set up also answers EAGAIN or ENOTCONN), CLOSED (the peer's orderly end
 * of a receive) or ERROR. */
static int posix_io(shoal_port_conn *conn, uint8_t *buf, size_t len, bool sending)
{
    if (len > 0x7fffffff)
        len = 0x7fffffff;
    for (;;) {
        ssize_t n = sending ? send(conn->fd, buf, len, MSG_NOSIGNAL) : recv(conn->fd, buf, len, 0);
        if (n > 0)
            return (int)n;
        if (n == 0)
            return sending ? SHOAL_PORT_IO_AGAIN : SHOAL_PORT_IO_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
            return SHOAL_PORT_IO_AGAIN;
        return SHOAL_PORT_IO_ERROR;
    }
}

static int posix_send(void *ctx, shoal_port_conn *conn, const uint8_t *buf, size_t len)
{
    return posix_io(conn, (uint8_t *)buf, len, true);
}

static int posix_recv(void *ctx, shoal_port_conn *conn, uint8_t *buf, size_t len)
{
    return posix_io(conn, buf, len, false);
}

static void posix_close(void *ctx, shoal_port_conn *conn)
{
    if (conn) {
        close(conn->fd);
        shoal_free(conn);
    }
}

static shoal_err posix_wait(void *ctx, shoal_port_conn *conn, int want_write, int timeout_ms)
{
    struct pollfd pfd = {.fd = conn->fd, .events = want_write ? POLLOUT : POLLIN};
    for (;;) {
        int n = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
        if (n > 0)
            return SHOAL_OK; /* errors and hang-ups show up in send/recv */
        if (n == 0)
            return SHOAL_ETIMEDOUT;
        if (errno != EINTR)
            return SHOAL_EIO;
    }
}

static void posix_log(void *ctx, int level, const char *message)
{
    posix_ctx *p = ctx;
    if (p->log)
        p->log(p->log_ctx, level, message);
}

shoal_err shoal_posix_port_init(const shoal_posix_port_config *cfg, shoal_port *port,
                                shoal_errinfo *ei)
{
    if (!port)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "posix port: port is NULL");
    memset(port, 0, sizeof *port);
    shoal_posix_port_config def = {.battery_percent = -1, .charging = -1, .idle = -1};
    if (!cfg)
        cfg = &def;
    if (cfg->battery_percent < -1 || cfg->battery_percent > 100)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "posix port: battery_percent %d is out of range; must be -1 "
                                 "(unknown) or 0..100",
                                 cfg->battery_percent);
    if (cfg->charging < -1 || cfg->charging > 1 || cfg->idle < -1 || cfg->idle > 1)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "posix port: charging and idle must be -1 (unknown), 0 or 1");
    if ((int)cfg->network < SHOAL_NET_UNKNOWN || cfg->network > SHOAL_NET_UNMETERED)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "posix port: unknown network kind %d",
                                 (int)cfg->network);
    const char *dir = cfg->power_supply_dir ? cfg->power_supply_dir : "/sys/class/power_supply";
    if (strlen(dir) >= sizeof((posix_ctx *)0)->power_dir)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "posix port: power_supply_dir is too long");
    posix_ctx *p = shoal_calloc(1, sizeof *p);
    if (!p)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "posix port: out of memory");
    snprintf(p->power_dir, sizeof p->power_dir, "%s", dir);
    p->battery_percent = cfg->battery_percent;
    atomic_init(&p->charging, cfg->charging);
    atomic_init(&p->network, (int)cfg->network);
    atomic_init(&p->idle, cfg->idle);
    p->log = cfg->log;
    p->log_ctx = cfg->log_ctx;
    port->ctx = p;
    port->monotonic_ms = posix_monotonic_ms;
    port->wall_ms = posix_wall_ms;
    port->random = posix_random;
    port->battery_percent = posix_battery;
    port->charging = posix_charging;
    port->network = posix_network;
    port->idle = posix_idle;
    port->connect = posix_connect;
    port->send = posix_send;
    port->recv = posix_recv;
    port->close = posix_close;
    port->wait = posix_wait;
    port->log = cfg->log ? posix_log : NULL;
    return SHOAL_OK;
}

void shoal_posix_port_fini(shoal_port *port)
{
    if (!port)
        return;
    shoal_free(port->ctx);
    memset(port, 0, sizeof *port);
}

void shoal_posix_port_set(shoal_port *port, int charging, shoal_net_kind network, int idle)
{
    if (!port || !port->ctx || port->monotonic_ms != posix_monotonic_ms)
        return;
    posix_ctx *p = port->ctx;
    atomic_store(&p->charging, charging);
    atomic_store(&p->network, (int)network);
    atomic_store(&p->idle, idle);
}
