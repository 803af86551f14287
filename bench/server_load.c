/* server_load: load on a running shoal-server, over TLS WebSockets on
 * loopback, with the real protocol (bench/run_server_load starts the server
 * and runs the three modes; docs/benchmarks.md has the figures).
 *
 *   hold      opens --connections sessions from --threads threads; each
 *             sends a CheckIn for a population whose round needs more
 *             devices than will ever come, so every device is accepted and
 *             waits in selection. Then reads the server's VmRSS/VmHWM
 *             (/proc/PID/status) and /metrics, holds for --hold-s seconds,
 *             checks that no session was answered or dropped, and closes.
 *             Baseline: the server's RSS before the first connection.
 *   checkins  --threads threads loop for --seconds: connect, CheckIn, read
 *             the CheckInResult (the population's only round is full, so
 *             each is Rejected with a retry window), close. Baselines in the
 *             same run: TCP + TLS handshake + close_notify + close (no HTTP),
 *             and TCP + TLS + WebSocket upgrade + close (no CheckIn). The
 *             three variants run --reps times in rotated order; medians.
 *             Server and client CPU per operation come from /proc and
 *             getrusage over each interval.
 *   round     --devices device threads take part in --rounds synchronous
 *             rounds (goal_count = devices): check in, download the model
 *             (received and discarded), upload one update (the same bytes
 *             for every device: the server cannot tell), report, read the
 *             ack, check in again. Times every step on CLOCK_REALTIME and,
 *             given --server-log, reads the coordinator's "round N committed"
 *             lines, so the time from the last report to the commit comes
 *             out of the same clock.
 *
 * Output: readable lines, then "RESULT key value" lines for the driver.
 * All times are wall time; "MiB" is 2^20 bytes. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"
#include "shoal/envelope.h"
#include "shoal/rng.h"
#include "shoal/tls.h"
#include "shoal/wss.h"

static const char usage[] =
    "usage: server_load MODE --port PORT --ca FILE [options]\n"
    "\n"
    "Modes (see the comment at the top of bench/server_load.c):\n"
    "  hold       N concurrent sessions waiting in selection; server memory\n"
    "  checkins   check-ins per second, against TLS-only and TLS+WebSocket\n"
    "             connect/close rates measured in the same run\n"
    "  round      D devices through R synchronous rounds; per-round timings\n"
    "\n"
    "Common options:\n"
    "  --host ADDR          server address (default 127.0.0.1)\n"
    "  --port PORT          server port (required)\n"
    "  --ca FILE            CA (the server's self-signed certificate) (required)\n"
    "  --server-name NAME   DNS name in the certificate (default localhost)\n"
    "  --population NAME    population to check in to (hold, checkins, round)\n"
    "  --token TOKEN        auth token (the population's shared secret)\n"
    "  --token-file FILE    read the token from FILE (one trailing newline stripped)\n"
    "  --server-pid PID     the server process, for /proc figures\n"
    "\n"
    "hold:     --connections N (10000)  --threads T (64)  --hold-s S (5)\n"
    "checkins: --threads K (16)  --seconds T (10)  --reps R (3)\n"
    "round:    --devices D (1000)  --rounds R (2)  --server-log FILE\n"
    "          --max-wait-ms MS (1000): cap on a rejected device's retry wait\n";

/* ---- options ---------------------------------------------------------------------- */

typedef struct options {
    const char *mode;
    const char *host, *ca_file, *server_name, *population, *token, *server_log;
    uint16_t port;
    long server_pid;
    uint32_t connections, threads, hold_s;
    uint32_t seconds, reps;
    uint32_t devices, rounds;
    int64_t max_wait_ms;
    int threads_set;
} options;

static options opt;
static char *ca_pem; /* the CA file, read once */
static struct sockaddr_storage server_addr;
static socklen_t server_addr_len;

static void die(const char *fmt, const char *a)
{
    fprintf(stderr, "server_load: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] == '-' || end == v || *end || errno || x < min || x > max) {
        fprintf(stderr, "server_load: %s: '%s' is not a whole number from %llu to %llu\n", flag, v,
                (unsigned long long)min, (unsigned long long)max);
        exit(2);
    }
    return x;
}

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    return buf;
}

/* ---- clocks and /proc ------------------------------------------------------------- */

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The server's log stamps are CLOCK_REALTIME; so are the round mode's. */
static int64_t real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A "Name:   123 kB" field of /proc/PID/status in KiB; -1 when unreadable.
 * pid 0 is this process. */
static long proc_status_kib(long pid, const char *field)
{
    char path[64], line[256];
    if (pid)
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static double mib(long kib)
{
    return kib < 0 ? NAN : (double)kib / 1024.0;
}

/* utime + stime of a process in seconds, from /proc/PID/stat; NAN when
 * unreadable. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from its ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return NAN;
    unsigned long long ut = 0, st = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static long proc_fd_count(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* CPU seconds of every thread of a process, from /proc/PID/task/TID/stat,
 * with the thread's name: which thread does the server's work. */
#define MAX_THREADS 64
typedef struct thread_cpu {
    int n;
    long tid[MAX_THREADS];
    char name[MAX_THREADS][20];
    double cpu_s[MAX_THREADS];
} thread_cpu;

static void proc_threads(long pid, thread_cpu *out)
{
    memset(out, 0, sizeof *out);
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && out->n < MAX_THREADS) {
        if (e->d_name[0] == '.')
            continue;
        long tid = strtol(e->d_name, NULL, 10);
        char buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/stat", pid, tid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        if (!open || !close ||
            sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) !=
                2)
            continue;
        int i = out->n++;
        out->tid[i] = tid;
        snprintf(out->name[i], sizeof out->name[i], "%.*s", (int)(close - open - 1), open + 1);
        out->cpu_s[i] = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    closedir(d);
}

/* Prints each thread's CPU between two snapshots, busiest first, and
 * returns the main thread's: in shoal-server it runs the libwebsockets
 * service loop, so all TLS and socket I/O. */
static double print_thread_cpu(const char *mode, long pid, const thread_cpu *a, const thread_cpu *b)
{
    double d[MAX_THREADS], service = NAN;
    int order[MAX_THREADS];
    for (int i = 0; i < b->n; i++) {
        d[i] = b->cpu_s[i];
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i])
                d[i] -= a->cpu_s[j];
        order[i] = i;
        if (b->tid[i] == pid)
            service = d[i];
    }
    for (int i = 1; i < b->n; i++)
        for (int j = i; j > 0 && d[order[j]] > d[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    printf("%s: server CPU by thread:", mode);
    for (int k = 0; k < b->n && k < 8; k++) {
        int i = order[k];
        if (d[i] < 0.05)
            break;
        printf(" %s %ld%s %.1f s;", b->name[i], b->tid[i],
               b->tid[i] == pid ? " (main: lws service loop)" : "", d[i]);
    }
    printf("\n");
    return service;
}

/* ---- raw TLS (no WebSocket): the baseline and the /metrics scrape ------------------ */

typedef struct rawtls {
    int fd;
    shoal_tls *tls;
} rawtls;

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

static void raw_close(rawtls *r)
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
static shoal_err raw_open(rawtls *r, int timeout_ms, shoal_errinfo *ei)
{
    r->tls = NULL;
    r->fd = socket(server_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return shoal_errinfo_set(ei, SHOAL_EIO, "socket: %s", strerror(errno));
    int one = 1;
    (void)setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int64_t deadline = mono_us() + (int64_t)timeout_ms * 1000;
    if (connect(r->fd, (struct sockaddr *)&server_addr, server_addr_len) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_EIO, "connect: %s", strerror(e));
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (wait_fd(r->fd, 1, timeout_ms) <= 0 ||
            getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_EIO, "connect: %s",
                                     soerr ? strerror(soerr) : "timed out");
        }
    }
    shoal_tls_config tc = {.server_name = opt.server_name,
                           .ca_pem = ca_pem,
                           .ca_label = opt.ca_file,
                           .send = raw_send,
                           .recv = raw_recv,
                           .io_ctx = r};
    shoal_err err = shoal_tls_new(&tc, &r->tls, ei);
    if (err) {
        raw_close(r);
        return err;
    }
    while ((err = shoal_tls_handshake(r->tls, ei)) == SHOAL_EAGAIN) {
        int left = (int)((deadline - mono_us()) / 1000);
        if (left <= 0 || wait_fd(r->fd, shoal_tls_want_write(r->tls), left) <= 0) {
            raw_close(r);
            return shoal_errinfo_set(ei, SHOAL_ETIMEDOUT, "TLS handshake timed out");
        }
    }
    if (err) {
        shoal_tls_free(r->tls);
        r->tls = NULL;
        raw_close(r);
    }
    return err;
}

/* GET path over HTTPS with Connection: close; the body, malloc'd, or NULL. */
static char *https_get(const char *path)
{
    rawtls r;
    shoal_errinfo ei = {0};
    if (raw_open(&r, 10000, &ei) != SHOAL_OK) {
        fprintf(stderr, "server_load: GET %s: %s\n", path, ei.msg);
        return NULL;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, opt.server_name);
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
            raw_close(&r);
            return NULL;
        }
        off += w;
    }
    while (shoal_tls_flush(r.tls, &ei) == SHOAL_EAGAIN)
        wait_fd(r.fd, 1, 1000);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    int64_t deadline = mono_us() + 10 * 1000000;
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
        if (err != SHOAL_EAGAIN || mono_us() > deadline)
            break;
        wait_fd(r.fd, 0, 1000);
    }
    raw_close(&r);
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

typedef struct scrape {
    double connections, accepted, rejected, checked_in, reported, aggregation_s, model_version;
    double bytes_sent, bytes_received;
} scrape;

static scrape metrics_scrape(void)
{
    scrape s = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    char *text = https_get("/metrics");
    if (!text)
        return s;
    char name[300];
    s.connections = metric_value(text, "shoal_connections");
    s.bytes_sent = metric_value(text, "shoal_bytes_sent_total");
    s.bytes_received = metric_value(text, "shoal_bytes_received_total");
    if (opt.population) {
#define POP_METRIC(field, metric)                                                                  \
    snprintf(name, sizeof name, metric "{population=\"%s\"}", opt.population);                     \
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

static shoal_err wss_open(shoal_wss **out, int timeout_ms, shoal_errinfo *ei)
{
    shoal_wss_config cfg = {.host = opt.host,
                            .port = opt.port,
                            .server_name = opt.server_name,
                            .ca_pem = ca_pem,
                            .timeout_ms = timeout_ms};
    return shoal_wss_connect(&cfg, out, ei);
}

/* A CheckIn, encoded; held_len 0 for none. */
static uint8_t *encode_checkin(const uint8_t *held, size_t held_len, size_t *len)
{
    Shoal__Capabilities caps = SHOAL__CAPABILITIES__INIT;
    Shoal__TensorEncoding enc[1] = {SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE};
    caps.has_max_model_bytes = 1;
    caps.max_model_bytes = 1ull << 32;
    caps.n_encodings = 1;
    caps.encodings = enc;
    Shoal__CheckIn ci = SHOAL__CHECK_IN__INIT;
    ci.has_protocol_version = 1;
    ci.protocol_version = SHOAL_PROTOCOL_VERSION;
    ci.population = (char *)opt.population;
    ci.has_auth_token = 1;
    ci.auth_token.data = (uint8_t *)opt.token;
    ci.auth_token.len = strlen(opt.token);
    ci.sdk_version = "server_load/1";
    ci.capabilities = &caps;
    if (held_len) {
        ci.has_held_checkpoint_id = 1;
        ci.held_checkpoint_id.data = (uint8_t *)held;
        ci.held_checkpoint_id.len = held_len;
    }
    shoal_envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    env.check_in = &ci;
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *buf = NULL;
    shoal_errinfo ei = {0};
    if (shoal_envelope_encode(&codec, &env, &buf, len, &ei) != SHOAL_OK)
        die("cannot encode a CheckIn: %s", ei.msg);
    return buf;
}

static shoal_err send_env(shoal_wss *w, const shoal_envelope *env, int timeout_ms,
                          shoal_errinfo *ei)
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

static shoal_err recv_env(shoal_wss *w, int timeout_ms, shoal_envelope **out, shoal_errinfo *ei)
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

static void wss_end(shoal_wss *w)
{
    if (!w)
        return;
    if (shoal_wss_close(w, 1000, 5000) != SHOAL_OK) {
        /* The server may have closed first; nothing to do. */
    }
    shoal_wss_free(w);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static pthread_t spawn(void *(*fn)(void *), void *arg, size_t stack)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack);
    pthread_t t;
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        fprintf(stderr, "server_load: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
    return t;
}

/* ---- hold --------------------------------------------------------------------------- */

typedef struct hold_shared {
    shoal_wss **conns;
    const uint8_t *checkin;
    size_t checkin_len;
    atomic_uint failed, opened;
    atomic_uint_least64_t connect_us_sum;
    uint32_t threads;
    pthread_mutex_t mark_lock; /* progress lines */
    double mark_cpu;
    int64_t mark_t;
} hold_shared;

typedef struct hold_worker {
    hold_shared *sh;
    uint32_t index;
} hold_worker;

static void *hold_open_main(void *arg)
{
    hold_worker *hw = arg;
    hold_shared *sh = hw->sh;
    for (uint32_t i = hw->index; i < opt.connections; i += sh->threads) {
        shoal_errinfo ei = {0};
        shoal_wss *w = NULL;
        int64_t t0 = mono_us();
        shoal_err err = wss_open(&w, 60000, &ei);
        if (!err) {
            atomic_fetch_add(&sh->connect_us_sum, (uint64_t)(mono_us() - t0));
            err = shoal_wss_send(w, sh->checkin, sh->checkin_len, 30000, &ei);
            if (err) {
                shoal_wss_free(w);
                w = NULL;
            }
        }
        if (err) {
            if (atomic_fetch_add(&sh->failed, 1) < 5)
                fprintf(stderr, "server_load: hold: connection %u: %s\n", i, ei.msg);
            continue;
        }
        sh->conns[i] = w;
        unsigned n = atomic_fetch_add(&sh->opened, 1) + 1;
        if (n % 1000 == 0) {
            /* Server CPU per thousand new sessions: constant unless something
             * costs more as sessions accumulate. */
            pthread_mutex_lock(&sh->mark_lock);
            double cpu = proc_cpu_s(opt.server_pid);
            int64_t now = mono_us();
            printf("hold: %5u sessions open: the last 1000 took %.2f s, %.2f s of server CPU\n", n,
                   (double)(now - sh->mark_t) / 1e6, cpu - sh->mark_cpu);
            sh->mark_cpu = cpu;
            sh->mark_t = now;
            pthread_mutex_unlock(&sh->mark_lock);
        }
    }
    return NULL;
}

static void *hold_close_main(void *arg)
{
    hold_worker *hw = arg;
    for (uint32_t i = hw->index; i < opt.connections; i += hw->sh->threads) {
        wss_end(hw->sh->conns[i]);
        hw->sh->conns[i] = NULL;
    }
    return NULL;
}

static int run_hold(void)
{
    long pid = opt.server_pid;
    size_t checkin_len = 0;
    uint8_t *checkin = encode_checkin(NULL, 0, &checkin_len);
    scrape before = metrics_scrape();
    long idle_rss = proc_status_kib(pid, "VmRSS"), idle_hwm = proc_status_kib(pid, "VmHWM");
    long client_idle_rss = proc_status_kib(0, "VmRSS");
    printf("hold: server pid %ld idle: VmRSS %.1f MiB, VmHWM %.1f MiB, %.0f connections\n", pid,
           mib(idle_rss), mib(idle_hwm), before.connections);

    hold_shared sh;
    memset(&sh, 0, sizeof sh);
    sh.conns = calloc(opt.connections, sizeof *sh.conns);
    sh.checkin = checkin;
    sh.checkin_len = checkin_len;
    sh.threads = opt.threads;
    hold_worker *hw = calloc(opt.threads, sizeof *hw);
    pthread_t *th = calloc(opt.threads, sizeof *th);
    if (!sh.conns || !hw || !th)
        die("%s", "out of memory");
    thread_cpu tc0, tc1;
    proc_threads(pid, &tc0);
    double server_cpu0 = proc_cpu_s(pid), client_cpu0 = self_cpu_s();
    int64_t t0 = mono_us();
    pthread_mutex_init(&sh.mark_lock, NULL);
    sh.mark_cpu = server_cpu0;
    sh.mark_t = t0;
    for (uint32_t i = 0; i < opt.threads; i++) {
        hw[i] = (hold_worker){.sh = &sh, .index = i};
        th[i] = spawn(hold_open_main, &hw[i], 256 * 1024);
    }
    for (uint32_t i = 0; i < opt.threads; i++)
        pthread_join(th[i], NULL);
    double open_s = (double)(mono_us() - t0) / 1e6;
    unsigned opened = atomic_load(&sh.opened), failed = atomic_load(&sh.failed);
    double server_cpu_open = proc_cpu_s(pid) - server_cpu0;
    double client_cpu_open = self_cpu_s() - client_cpu0;
    printf("hold: %u of %u sessions opened in %.1f s (%.0f/s, %u threads), %u failed; mean "
           "connect %.1f ms; CPU: server %.1f s, client %.1f s\n",
           opened, opt.connections, open_s, opened / open_s, opt.threads, failed,
           opened ? (double)atomic_load(&sh.connect_us_sum) / opened / 1000.0 : NAN,
           server_cpu_open, client_cpu_open);
    proc_threads(pid, &tc1);
    double service_open = print_thread_cpu("hold", pid, &tc0, &tc1);

    /* Every CheckIn sent must have reached selection. */
    scrape s = before;
    int64_t wait_until = mono_us() + 60 * 1000000LL;
    do {
        sleep_ms(250);
        s = metrics_scrape();
    } while (!(s.accepted - before.accepted >= opened) && mono_us() < wait_until);
    double accepted = s.accepted - before.accepted;
    double settle_s = (double)(mono_us() - t0) / 1e6 - open_s;

    long rss = proc_status_kib(pid, "VmRSS"), hwm = proc_status_kib(pid, "VmHWM");
    long threads = proc_status_kib(pid, "Threads"), fds = proc_fd_count(pid);
    long crss = proc_status_kib(0, "VmRSS");
    double conns_min = s.connections, conns_max = s.connections;
    long rss_max = rss, crss_max = crss;
    printf("hold: %.0f accepted into selection (%.1f s after the last connect); server: "
           "shoal_connections %.0f (this scrape included), VmRSS %.1f MiB, VmHWM %.1f MiB, %ld "
           "threads, %ld fds; client VmRSS %.1f MiB\n",
           accepted, settle_s, s.connections, mib(rss), mib(hwm), threads, fds, mib(crss));

    for (uint32_t sec = 0; sec < opt.hold_s; sec++) {
        sleep_ms(1000);
        scrape h = metrics_scrape();
        long r = proc_status_kib(pid, "VmRSS"), c = proc_status_kib(0, "VmRSS");
        if (r > rss_max)
            rss_max = r;
        if (c > crss_max)
            crss_max = c;
        if (h.connections < conns_min)
            conns_min = h.connections;
        if (h.connections > conns_max)
            conns_max = h.connections;
    }
    /* A session that was answered (rejected, aborted) or closed is not being
     * held: look for anything that arrived. */
    unsigned answered = 0, lost = 0;
    for (uint32_t i = 0; i < opt.connections; i++) {
        if (!sh.conns[i])
            continue;
        uint8_t *msg = NULL;
        size_t len = 0;
        shoal_errinfo ei = {0};
        shoal_err err = shoal_wss_recv(sh.conns[i], &msg, &len, 0, &ei);
        if (err == SHOAL_OK)
            answered++;
        else if (err != SHOAL_ETIMEDOUT)
            lost++;
        shoal_free(msg);
    }
    long hwm_held = proc_status_kib(pid, "VmHWM");
    printf("hold: held %u s: shoal_connections %.0f..%.0f, server VmRSS max %.1f MiB, client "
           "VmRSS max %.1f MiB; sessions answered early %u, closed %u\n",
           opt.hold_s, conns_min, conns_max, mib(rss_max), mib(crss_max), answered, lost);

    t0 = mono_us();
    for (uint32_t i = 0; i < opt.threads; i++)
        th[i] = spawn(hold_close_main, &hw[i], 256 * 1024);
    for (uint32_t i = 0; i < opt.threads; i++)
        pthread_join(th[i], NULL);
    double close_s = (double)(mono_us() - t0) / 1e6;
    wait_until = mono_us() + 60 * 1000000LL;
    scrape after;
    do {
        sleep_ms(250);
        after = metrics_scrape();
    } while (!(after.connections <= before.connections) && mono_us() < wait_until);
    sleep_ms(1000);
    long rss_after = proc_status_kib(pid, "VmRSS");
    printf("hold: closed in %.1f s; server afterwards: shoal_connections %.0f, VmRSS %.1f MiB\n",
           close_s, after.connections, mib(rss_after));

    double per_session_kib = opened ? (double)(rss_max - idle_rss) / opened : NAN;
    printf("hold: server memory per held session %.1f KiB (VmRSS held - idle) / sessions; client "
           "%.1f KiB\n",
           per_session_kib, opened ? (double)(crss_max - client_idle_rss) / opened : NAN);
    printf("RESULT hold.sessions_requested %u\n", opt.connections);
    printf("RESULT hold.sessions_opened %u\n", opened);
    printf("RESULT hold.sessions_failed %u\n", failed);
    printf("RESULT hold.accepted %.0f\n", accepted);
    printf("RESULT hold.answered_early %u\n", answered);
    printf("RESULT hold.closed_early %u\n", lost);
    printf("RESULT hold.open_s %.2f\n", open_s);
    printf("RESULT hold.open_per_s %.0f\n", opened / open_s);
    printf("RESULT hold.connections_metric_min %.0f\n", conns_min);
    printf("RESULT hold.server_rss_idle_mib %.1f\n", mib(idle_rss));
    printf("RESULT hold.server_rss_held_mib %.1f\n", mib(rss_max));
    printf("RESULT hold.server_hwm_mib %.1f\n", mib(hwm_held));
    printf("RESULT hold.server_rss_after_close_mib %.1f\n", mib(rss_after));
    printf("RESULT hold.server_kib_per_session %.1f\n", per_session_kib);
    printf("RESULT hold.server_threads %ld\n", threads);
    printf("RESULT hold.server_fds %ld\n", fds);
    printf("RESULT hold.client_rss_mib %.1f\n", mib(crss_max));
    printf("RESULT hold.server_cpu_open_s %.1f\n", server_cpu_open);
    printf("RESULT hold.client_cpu_open_s %.1f\n", client_cpu_open);
    printf("RESULT hold.server_service_thread_cpu_open_s %.1f\n", service_open);
    free(sh.conns);
    free(hw);
    free(th);
    shoal_free(checkin);
    return opened == opt.connections && accepted >= opened && !answered && !lost ? 0 : 1;
}

/* ---- checkins ----------------------------------------------------------------------- */

enum variant { V_TLS, V_WS, V_CHECKIN, V_COUNT };
static const char *const variant_names[V_COUNT] = {"tls_connect_close", "ws_connect_close",
                                                   "checkin"};

typedef struct ci_shared {
    enum variant v;
    const uint8_t *checkin;
    size_t checkin_len;
    atomic_int stop;
    atomic_uint_least64_t ops, errors, rejected, accepted, aborted;
    atomic_uint_least64_t connect_us, exchange_us, close_us;
} ci_shared;

static void ci_error(ci_shared *sh, const char *what, const char *msg)
{
    if (atomic_fetch_add(&sh->errors, 1) < 5)
        fprintf(stderr, "server_load: %s: %s: %s\n", variant_names[sh->v], what, msg);
}

static void *ci_main(void *arg)
{
    ci_shared *sh = arg;
    while (!atomic_load(&sh->stop)) {
        shoal_errinfo ei = {0};
        int64_t t0 = mono_us();
        if (sh->v == V_TLS) {
            rawtls r;
            if (raw_open(&r, 30000, &ei) != SHOAL_OK) {
                ci_error(sh, "connect", ei.msg);
                continue;
            }
            int64_t t1 = mono_us();
            raw_close(&r);
            atomic_fetch_add(&sh->connect_us, (uint64_t)(t1 - t0));
            atomic_fetch_add(&sh->close_us, (uint64_t)(mono_us() - t1));
            atomic_fetch_add(&sh->ops, 1);
            continue;
        }
        shoal_wss *w = NULL;
        if (wss_open(&w, 30000, &ei) != SHOAL_OK) {
            ci_error(sh, "connect", ei.msg);
            continue;
        }
        int64_t t1 = mono_us(), t2 = t1;
        int ok = 1;
        if (sh->v == V_CHECKIN) {
            shoal_envelope *env = NULL;
            if (shoal_wss_send(w, sh->checkin, sh->checkin_len, 30000, &ei) != SHOAL_OK ||
                recv_env(w, 30000, &env, &ei) != SHOAL_OK) {
                ci_error(sh, "check-in", ei.msg);
                ok = 0;
            } else if (env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT &&
                       env->check_in_result->result_case ==
                           SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
                atomic_fetch_add(&sh->rejected, 1);
            } else if (env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT) {
                atomic_fetch_add(&sh->accepted, 1);
            } else {
                atomic_fetch_add(&sh->aborted, 1);
            }
            shoal_envelope_free(env);
            t2 = mono_us();
        }
        wss_end(w);
        if (!ok)
            continue;
        atomic_fetch_add(&sh->connect_us, (uint64_t)(t1 - t0));
        atomic_fetch_add(&sh->exchange_us, (uint64_t)(t2 - t1));
        atomic_fetch_add(&sh->close_us, (uint64_t)(mono_us() - t2));
        atomic_fetch_add(&sh->ops, 1);
    }
    return NULL;
}

typedef struct ci_result {
    double rate, errors, server_cpu_ms_per_op, client_cpu_ms_per_op, server_cpu_share;
    double connect_ms, exchange_ms, close_ms;
    uint64_t ops, rejected, accepted, aborted;
} ci_result;

static ci_result run_variant(enum variant v, const uint8_t *checkin, size_t checkin_len)
{
    ci_shared sh;
    memset(&sh, 0, sizeof sh);
    sh.v = v;
    sh.checkin = checkin;
    sh.checkin_len = checkin_len;
    pthread_t *th = calloc(opt.threads, sizeof *th);
    double scpu0 = proc_cpu_s(opt.server_pid), ccpu0 = self_cpu_s();
    int64_t t0 = mono_us();
    for (uint32_t i = 0; i < opt.threads; i++)
        th[i] = spawn(ci_main, &sh, 256 * 1024);
    sleep_ms((int64_t)opt.seconds * 1000);
    atomic_store(&sh.stop, 1);
    for (uint32_t i = 0; i < opt.threads; i++)
        pthread_join(th[i], NULL);
    double el = (double)(mono_us() - t0) / 1e6;
    double scpu = proc_cpu_s(opt.server_pid) - scpu0, ccpu = self_cpu_s() - ccpu0;
    free(th);
    ci_result r;
    memset(&r, 0, sizeof r);
    r.ops = atomic_load(&sh.ops);
    double ops = r.ops ? (double)r.ops : NAN;
    r.rate = (double)r.ops / el;
    r.errors = (double)atomic_load(&sh.errors);
    r.server_cpu_ms_per_op = scpu * 1000.0 / ops;
    r.client_cpu_ms_per_op = ccpu * 1000.0 / ops;
    r.server_cpu_share = scpu / el;
    r.connect_ms = (double)atomic_load(&sh.connect_us) / ops / 1000.0;
    r.exchange_ms = (double)atomic_load(&sh.exchange_us) / ops / 1000.0;
    r.close_ms = (double)atomic_load(&sh.close_us) / ops / 1000.0;
    r.rejected = atomic_load(&sh.rejected);
    r.accepted = atomic_load(&sh.accepted);
    r.aborted = atomic_load(&sh.aborted);
    return r;
}

static int run_checkins(void)
{
    size_t checkin_len = 0;
    uint8_t *checkin = encode_checkin(NULL, 0, &checkin_len);
    /* The holder takes the round's only place and never reports, so every
     * later check-in is turned away with a retry window. */
    shoal_wss *holder = NULL;
    shoal_errinfo ei = {0};
    shoal_envelope *env = NULL;
    if (wss_open(&holder, 30000, &ei) != SHOAL_OK ||
        shoal_wss_send(holder, checkin, checkin_len, 30000, &ei) != SHOAL_OK ||
        recv_env(holder, 30000, &env, &ei) != SHOAL_OK)
        die("checkins: the holder session failed: %s", ei.msg);
    int holder_ok = env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT &&
                    env->check_in_result->result_case == SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED;
    printf("checkins: holder session %s; %u threads, %u s per measurement, %u repetitions\n",
           holder_ok ? "accepted (the round is now full)" : "NOT accepted", opt.threads,
           opt.seconds, opt.reps);
    shoal_envelope_free(env);

    double rate[V_COUNT][64], scpu[V_COUNT][64], ccpu[V_COUNT][64], conn[V_COUNT][64],
        exch[V_COUNT][64], clo[V_COUNT][64], share[V_COUNT][64];
    uint64_t rejected = 0, accepted = 0, aborted = 0, errors = 0;
    printf("%-18s %4s %9s %8s %13s %13s %10s %10s %9s\n", "variant", "rep", "ops/s", "ops",
           "srv cpu ms/op", "cli cpu ms/op", "connect ms", "exchange ms", "close ms");
    for (uint32_t rep = 0; rep < opt.reps; rep++)
        for (int j = 0; j < V_COUNT; j++) {
            enum variant v = (enum variant)((j + rep) % V_COUNT);
            ci_result r = run_variant(v, checkin, checkin_len);
            rate[v][rep] = r.rate;
            scpu[v][rep] = r.server_cpu_ms_per_op;
            ccpu[v][rep] = r.client_cpu_ms_per_op;
            share[v][rep] = r.server_cpu_share;
            conn[v][rep] = r.connect_ms;
            exch[v][rep] = r.exchange_ms;
            clo[v][rep] = r.close_ms;
            errors += (uint64_t)r.errors;
            if (v == V_CHECKIN) {
                rejected += r.rejected;
                accepted += r.accepted;
                aborted += r.aborted;
            }
            printf("%-18s %4u %9.1f %8llu %13.3f %13.3f %10.2f %10.2f %9.2f\n", variant_names[v],
                   rep + 1, r.rate, (unsigned long long)r.ops, r.server_cpu_ms_per_op,
                   r.client_cpu_ms_per_op, r.connect_ms, r.exchange_ms, r.close_ms);
            fflush(stdout);
        }
    printf("checkins: check-in answers: %llu rejected, %llu accepted, %llu aborted; %llu errors "
           "over all variants\n",
           (unsigned long long)rejected, (unsigned long long)accepted, (unsigned long long)aborted,
           (unsigned long long)errors);
    printf("medians of %u:\n", opt.reps);
    printf("%-18s %9s %13s %13s %12s %10s %11s %9s\n", "variant", "ops/s", "srv cpu ms/op",
           "cli cpu ms/op", "srv cores", "connect ms", "exchange ms", "close ms");
    for (int v = 0; v < V_COUNT; v++) {
        double m[7] = {median(rate[v], opt.reps), median(scpu[v], opt.reps),
                       median(ccpu[v], opt.reps), median(share[v], opt.reps),
                       median(conn[v], opt.reps), median(exch[v], opt.reps),
                       median(clo[v], opt.reps)};
        printf("%-18s %9.1f %13.3f %13.3f %12.2f %10.2f %11.2f %9.2f\n", variant_names[v], m[0],
               m[1], m[2], m[3], m[4], m[5], m[6]);
        printf("RESULT checkins.%s.per_s %.1f\n", variant_names[v], m[0]);
        printf("RESULT checkins.%s.server_cpu_ms %.3f\n", variant_names[v], m[1]);
        printf("RESULT checkins.%s.client_cpu_ms %.3f\n", variant_names[v], m[2]);
        printf("RESULT checkins.%s.server_cores %.2f\n", variant_names[v], m[3]);
        printf("RESULT checkins.%s.connect_ms %.2f\n", variant_names[v], m[4]);
        printf("RESULT checkins.%s.exchange_ms %.2f\n", variant_names[v], m[5]);
        printf("RESULT checkins.%s.close_ms %.2f\n", variant_names[v], m[6]);
    }
    /* What the server alone could do: its CPU per check-in, per core. */
    double scpu_ci = median(scpu[V_CHECKIN], opt.reps);
    printf("checkins: server CPU per check-in %.3f ms: at most %.0f check-ins/s per server core "
           "(the load generator's mbedTLS handshakes, %.3f ms CPU each, bound the measured "
           "rate)\n",
           scpu_ci, 1000.0 / scpu_ci, median(ccpu[V_CHECKIN], opt.reps));
    printf("RESULT checkins.checkin.server_bound_per_core_s %.0f\n", 1000.0 / scpu_ci);
    printf("RESULT checkins.threads %u\n", opt.threads);
    printf("RESULT checkins.rejected %llu\n", (unsigned long long)rejected);
    printf("RESULT checkins.accepted %llu\n", (unsigned long long)accepted);
    printf("RESULT checkins.errors %llu\n", (unsigned long long)errors);
    wss_end(holder);
    shoal_free(checkin);
    return holder_ok && !errors && !accepted ? 0 : 1;
}

/* ---- round -------------------------------------------------------------------------- */

#define MAX_ROUNDS 64

/* What one device saw in one session (0: did not happen). */
typedef struct step_times {
    uint64_t round;
    int64_t checkin, accepted, model, reported, acked;
    int ack_accepted;
} step_times;

typedef struct round_shared {
    pthread_mutex_t lock;
    uint8_t *update; /* FLOAT32_LE bytes of the one update every device sends */
    size_t update_len, param_count;
    uint64_t model_size;
    atomic_uint failures, rejections, done_devices;
    atomic_int abort;
} round_shared;

typedef struct round_device {
    round_shared *sh;
    uint32_t id;
    shoal_rng rng;
    uint8_t held[SHOAL_PROTOCOL_ID_MAX];
    size_t held_len;
    uint32_t sessions;
    step_times t[MAX_ROUNDS];
} round_device;

/* The shared update: small normal values, made once for the plan's count. */
static shoal_err shared_update(round_shared *sh, size_t count)
{
    pthread_mutex_lock(&sh->lock);
    shoal_err err = SHOAL_OK;
    if (!sh->update) {
        float *v = shoal_mallocarray(count, sizeof(float));
        uint8_t *b = shoal_mallocarray(count, 4);
        shoal_rng rng;
        shoal_rng_seed(&rng, 1);
        if (!v || !b) {
            err = SHOAL_ENOMEM;
        } else {
            for (size_t i = 0; i < count; i++)
                v[i] = (float)(shoal_rng_normal(&rng) * 1e-3);
            err = shoal_tensor_encode_f32le(v, count, b, count * 4, NULL);
        }
        shoal_free(v);
        if (err) {
            shoal_free(b);
        } else {
            sh->update = b;
            sh->update_len = count * 4;
            sh->param_count = count;
        }
    } else if (sh->param_count != count) {
        err = SHOAL_EPROTO;
    }
    pthread_mutex_unlock(&sh->lock);
    return err;
}

/* One session: 1 when it ended with a report acknowledged, 0 when the
 * device was turned away (and has waited), -1 on failure. */
static int round_session(round_device *d)
{
    round_shared *sh = d->sh;
    step_times st;
    memset(&st, 0, sizeof st);
    shoal_errinfo ei = {0};
    shoal_wss *w = NULL;
    shoal_envelope *env = NULL;
    st.checkin = real_us();
    if (wss_open(&w, 120000, &ei) != SHOAL_OK)
        goto failed;
    size_t ci_len = 0;
    uint8_t *ci = encode_checkin(d->held, d->held_len, &ci_len);
    shoal_err err = shoal_wss_send(w, ci, ci_len, 60000, &ei);
    shoal_free(ci);
    if (err || recv_env(w, 30 * 60 * 1000, &env, &ei) != SHOAL_OK)
        goto failed;
    if (env->body_case != SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT) {
        shoal_errinfo_set(
            &ei, SHOAL_EPROTO, "expected CheckInResult, got %s%s%s", shoal_envelope_body_name(env),
            env->body_case == SHOAL__ENVELOPE__BODY_ABORT ? ": " : "",
            env->body_case == SHOAL__ENVELOPE__BODY_ABORT && env->abort->detail ? env->abort->detail
                                                                                : "");
        goto failed;
    }
    if (env->check_in_result->result_case == SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
        atomic_fetch_add(&sh->rejections, 1);
        const Shoal__RetryWindow *rw = env->check_in_result->rejected->retry_window;
        int64_t wait = rw ? (int64_t)rw->min_ms : 1000;
        shoal_envelope_free(env);
        wss_end(w);
        sleep_ms(wait < opt.max_wait_ms ? wait : opt.max_wait_ms);
        return 0;
    }
    Shoal__CheckInResult__Accepted *acc = env->check_in_result->accepted;
    st.accepted = real_us();
    st.round = acc->round;
    size_t count = acc->plan->model->parameter_count;
    if (acc->task_kind != SHOAL__TASK_KIND__TASK_KIND_TRAIN) {
        shoal_errinfo_set(&ei, SHOAL_EPROTO, "accepted for a task other than training");
        goto failed;
    }
    if (shared_update(sh, count) != SHOAL_OK) {
        shoal_errinfo_set(&ei, SHOAL_ENOMEM, "cannot make a %zu-parameter update", count);
        goto failed;
    }
    uint8_t session[SHOAL_PROTOCOL_ID_MAX];
    size_t session_len = acc->session_id.len;
    memcpy(session, acc->session_id.data, session_len);
    uint8_t ckpt[SHOAL_PROTOCOL_ID_MAX];
    size_t ckpt_len = acc->checkpoint_id.len;
    memcpy(ckpt, acc->checkpoint_id.data, ckpt_len);
    int download = shoal_model_download_needed(acc, d->held, d->held_len);
    uint64_t model_size = acc->model_size;
    shoal_envelope_free(env);
    env = NULL;
    /* The model: received, counted and dropped (nothing here trains). */
    uint64_t got = 0;
    while (download && got < model_size) {
        if (recv_env(w, 10 * 60 * 1000, &env, &ei) != SHOAL_OK)
            goto failed;
        if (env->body_case != SHOAL__ENVELOPE__BODY_MODEL_CHUNK) {
            shoal_errinfo_set(&ei, SHOAL_EPROTO, "expected ModelChunk, got %s",
                              shoal_envelope_body_name(env));
            goto failed;
        }
        got += env->model_chunk->data.len;
        shoal_envelope_free(env);
        env = NULL;
    }
    memcpy(d->held, ckpt, ckpt_len);
    d->held_len = ckpt_len;
    st.model = real_us();

    shoal_chunker ch;
    if (shoal_chunker_init(&ch, sh->update, sh->update_len,
                           shoal_chunk_max_payload(SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT)) != SHOAL_OK)
        goto failed;
    shoal_chunk c;
    while (shoal_chunker_next(&ch, &c) == SHOAL_ROW) {
        Shoal__ReportChunk rc;
        shoal_envelope e;
        if (shoal_envelope_report_chunk_init(&e, &rc, session, session_len, &c, &ei) != SHOAL_OK ||
            send_env(w, &e, 10 * 60 * 1000, &ei) != SHOAL_OK)
            goto failed;
    }
    Shoal__Report rep = SHOAL__REPORT__INIT;
    Shoal__TensorInfo ti = SHOAL__TENSOR_INFO__INIT;
    Shoal__Metric loss = SHOAL__METRIC__INIT;
    Shoal__Metric *metrics[1] = {&loss};
    rep.has_session_id = 1;
    rep.session_id.data = session;
    rep.session_id.len = session_len;
    rep.has_outcome = 1;
    rep.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    rep.has_example_count = 1;
    rep.example_count = 10;
    loss.name = "loss";
    loss.has_value = 1;
    loss.value = 1.0;
    rep.metrics = metrics;
    rep.n_metrics = 1;
    ti.has_encoding = ti.has_element_count = ti.has_byte_size = 1;
    ti.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    ti.element_count = count;
    ti.byte_size = sh->update_len;
    rep.update = &ti;
    shoal_envelope re = SHOAL__ENVELOPE__INIT;
    re.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    re.report = &rep;
    if (send_env(w, &re, 10 * 60 * 1000, &ei) != SHOAL_OK)
        goto failed;
    st.reported = real_us();
    if (recv_env(w, 30 * 60 * 1000, &env, &ei) != SHOAL_OK)
        goto failed;
    st.acked = real_us();
    if (env->body_case != SHOAL__ENVELOPE__BODY_REPORT_ACK) {
        shoal_errinfo_set(&ei, SHOAL_EPROTO, "expected ReportAck, got %s",
                          shoal_envelope_body_name(env));
        goto failed;
    }
    st.ack_accepted = env->report_ack->status == SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED;
    if (!st.ack_accepted)
        fprintf(stderr, "server_load: device %u: report %s: %s\n", d->id,
                shoal_protocol_status_name(env->report_ack->status),
                env->report_ack->detail ? env->report_ack->detail : "");
    shoal_envelope_free(env);
    wss_end(w);
    if (d->sessions < MAX_ROUNDS)
        d->t[d->sessions] = st;
    d->sessions++;
    return 1;

failed:
    if (atomic_fetch_add(&sh->failures, 1) < 10)
        fprintf(stderr, "server_load: device %u: session failed: %s\n", d->id,
                ei.msg[0] ? ei.msg : "(no detail)");
    shoal_envelope_free(env);
    wss_end(w);
    return -1;
}

static void *round_device_main(void *arg)
{
    round_device *d = arg;
    /* Spread the first check-ins over a second, as shoal-fleet does. */
    sleep_ms((int64_t)shoal_rng_below(&d->rng, 1000));
    int fails = 0;
    while (d->sessions < opt.rounds && !atomic_load(&d->sh->abort) && fails < 5) {
        int r = round_session(d);
        if (r < 0) {
            fails++;
            sleep_ms(1000);
        }
    }
    atomic_fetch_add(&d->sh->done_devices, 1);
    return NULL;
}

/* Seconds since the epoch of a UTC civil time (timegm is not POSIX). */
static int64_t utc_seconds(int y, int mon, int d, int h, int mi, int sec)
{
    /* Days from 1970-01-01 (H. Hinnant's days_from_civil). */
    y -= mon <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + h * 3600 + mi * 60 + sec;
}

/* "round N committed as version V" lines of the server's log: their
 * CLOCK_REALTIME stamps (us) by round number. */
static int read_commits(const char *path, uint64_t *round, int64_t *at, int max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[2048];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, ": round ");
        if (!p || !strstr(line, " committed as version "))
            continue;
        int y, mon, d, h, mi, sec, ms;
        if (sscanf(line, "%d-%d-%dT%d:%d:%d.%dZ", &y, &mon, &d, &h, &mi, &sec, &ms) != 7)
            continue;
        round[n] = strtoull(p + 8, NULL, 10);
        at[n] = utc_seconds(y, mon, d, h, mi, sec) * 1000000 + (int64_t)ms * 1000;
        n++;
    }
    fclose(f);
    return n;
}

static int run_round(void)
{
    long pid = opt.server_pid;
    round_shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.lock, NULL);
    round_device *devs = calloc(opt.devices, sizeof *devs);
    pthread_t *th = calloc(opt.devices, sizeof *th);
    if (!devs || !th)
        die("%s", "out of memory");
    scrape m0 = metrics_scrape();
    long rss0 = proc_status_kib(pid, "VmRSS");
    printf("round: %u devices, %u rounds; server VmRSS before %.1f MiB, model version %.0f\n",
           opt.devices, opt.rounds, mib(rss0), m0.model_version);
    fflush(stdout);
    thread_cpu tc0, tc1;
    proc_threads(pid, &tc0);
    double scpu0 = proc_cpu_s(pid), ccpu0 = self_cpu_s();
    int64_t t0 = real_us();
    printf("round: timeline every 2 s (server VmRSS; WebSocket payload MB sent and received by "
           "the server; reports folded):\n");
    for (uint32_t i = 0; i < opt.devices; i++) {
        devs[i].sh = &sh;
        devs[i].id = i;
        shoal_rng_derive(&devs[i].rng, 7, i + 1);
        th[i] = spawn(round_device_main, &devs[i], 256 * 1024);
    }
    long rss_max = rss0, crss_max = 0;
    while (atomic_load(&sh.done_devices) < opt.devices) {
        sleep_ms(250);
        long r = proc_status_kib(pid, "VmRSS"), c = proc_status_kib(0, "VmRSS");
        if (r > rss_max)
            rss_max = r;
        if (c > crss_max)
            crss_max = c;
        if (pid && r < 0) {
            fprintf(stderr, "server_load: the server (pid %ld) is gone\n", pid);
            atomic_store(&sh.abort, 1);
        }
        static int64_t last_scrape;
        if (mono_us() - last_scrape > 2000000) {
            last_scrape = mono_us();
            scrape s = metrics_scrape();
            printf("round: t %5.1f s  version %2.0f  server VmRSS %6.0f MiB  sent %6.0f MB  "
                   "received %6.0f MB  reports %5.0f  client VmRSS %5.0f MiB\n",
                   (double)(real_us() - t0) / 1e6, s.model_version, mib(r),
                   (s.bytes_sent - m0.bytes_sent) / 1e6,
                   (s.bytes_received - m0.bytes_received) / 1e6, s.reported - m0.reported, mib(c));
        }
    }
    for (uint32_t i = 0; i < opt.devices; i++)
        pthread_join(th[i], NULL);
    double total_s = (double)(real_us() - t0) / 1e6;
    /* The last ack can come before its round's commit (the server acks a
     * report when it accepts it, then collects the sums and commits): wait
     * for the versions before reading the log. */
    for (int64_t until = mono_us() + 120 * 1000000LL; mono_us() < until; sleep_ms(100)) {
        scrape s = metrics_scrape();
        if (s.model_version >= m0.model_version + opt.rounds)
            break;
    }
    sleep_ms(200); /* the log line follows the commit */
    double scpu = proc_cpu_s(pid) - scpu0, ccpu = self_cpu_s() - ccpu0;
    proc_threads(pid, &tc1);
    double service = print_thread_cpu("round", pid, &tc0, &tc1);
    scrape m1 = metrics_scrape();
    long hwm = proc_status_kib(pid, "VmHWM");
    long chwm = proc_status_kib(0, "VmHWM");

    /* Per server round: the extremes of every step over its devices. */
    typedef struct agg {
        uint64_t round;
        uint32_t devices, acks_accepted;
        int64_t first_checkin, last_accepted, last_model, first_report, last_report, last_ack;
    } agg;
    agg rounds[MAX_ROUNDS];
    int nr = 0;
    for (uint32_t i = 0; i < opt.devices; i++)
        for (uint32_t k = 0; k < devs[i].sessions && k < MAX_ROUNDS; k++) {
            const step_times *st = &devs[i].t[k];
            int j = 0;
            while (j < nr && rounds[j].round != st->round)
                j++;
            if (j == nr) {
                if (nr == MAX_ROUNDS)
                    continue;
                memset(&rounds[nr], 0, sizeof rounds[nr]);
                rounds[nr].round = st->round;
                rounds[nr].first_checkin = rounds[nr].first_report = INT64_MAX;
                nr++;
            }
            agg *a = &rounds[j];
            a->devices++;
            a->acks_accepted += (uint32_t)st->ack_accepted;
#define MIN_IN(f, v) a->f = (v) < a->f ? (v) : a->f
#define MAX_IN(f, v) a->f = (v) > a->f ? (v) : a->f
            MIN_IN(first_checkin, st->checkin);
            MAX_IN(last_accepted, st->accepted);
            MAX_IN(last_model, st->model);
            MIN_IN(first_report, st->reported);
            MAX_IN(last_report, st->reported);
            MAX_IN(last_ack, st->acked);
#undef MIN_IN
#undef MAX_IN
        }
    uint64_t commit_round[MAX_ROUNDS];
    int64_t commit_at[MAX_ROUNDS];
    int nc = opt.server_log ? read_commits(opt.server_log, commit_round, commit_at, MAX_ROUNDS) : 0;
    printf("round: done in %.1f s: %u failed sessions, %u rejections; CPU: server %.1f s, client "
           "%.1f s\n",
           total_s, atomic_load(&sh.failures), atomic_load(&sh.rejections), scpu, ccpu);
    printf("round: %zu parameters (%zu bytes per update); server VmRSS before %.1f MiB, max "
           "sampled %.1f MiB, VmHWM %.1f MiB; client VmHWM %.1f MiB\n",
           sh.param_count, sh.update_len, mib(rss0), mib(rss_max), mib(hwm), mib(chwm));
    double agg_s = m1.aggregation_s - m0.aggregation_s;
    double reports = m1.reported - m0.reported;
    printf("round: shoal_aggregation_seconds_total grew by %.3f s over %.0f reports (%.2f ms "
           "per report, fold and server step)\n",
           agg_s, reports, reports > 0 ? agg_s * 1000.0 / reports : NAN);
    printf("Times in seconds from the first check-in; 'commit' is the server log's "
           "\"round N committed\" line (ms resolution).\n");
    printf("%5s %7s %6s %9s %9s %9s %9s %9s %9s %8s %12s %11s\n", "round", "devices", "acked",
           "configd", "models", "1st rep", "last rep", "last ack", "commit", "wall", "lastrep->cmt",
           "lastack->cmt");
    /* Sort by round number. */
    for (int i = 1; i < nr; i++)
        for (int j = i; j > 0 && rounds[j].round < rounds[j - 1].round; j--) {
            agg tmp = rounds[j];
            rounds[j] = rounds[j - 1];
            rounds[j - 1] = tmp;
        }
    int64_t prev_commit = 0;
    int ok = nr == (int)opt.rounds && !atomic_load(&sh.failures);
    for (int i = 0; i < nr; i++) {
        agg *a = &rounds[i];
        int64_t commit = 0;
        for (int j = 0; j < nc; j++)
            if (commit_round[j] == a->round)
                commit = commit_at[j];
        int64_t start = i == 0 ? a->first_checkin : prev_commit;
#define REL(x) ((x) ? (double)((x)-t0) / 1e6 : NAN)
        double wall = commit && start ? (double)(commit - start) / 1e6 : NAN;
        double rep_to_commit = commit ? (double)(commit - a->last_report) / 1e6 : NAN;
        double ack_to_commit = commit ? (double)(commit - a->last_ack) / 1e6 : NAN;
        printf("%5llu %7u %6u %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %8.2f %12.3f %11.3f\n",
               (unsigned long long)a->round, a->devices, a->acks_accepted, REL(a->last_accepted),
               REL(a->last_model), REL(a->first_report), REL(a->last_report), REL(a->last_ack),
               REL(commit), wall, rep_to_commit, ack_to_commit);
#undef REL
        printf("RESULT round.%llu.devices %u\n", (unsigned long long)a->round, a->devices);
        printf("RESULT round.%llu.acks_accepted %u\n", (unsigned long long)a->round,
               a->acks_accepted);
        printf("RESULT round.%llu.wall_s %.2f\n", (unsigned long long)a->round, wall);
        printf("RESULT round.%llu.download_s %.2f\n", (unsigned long long)a->round,
               (double)(a->last_model - (i == 0 ? a->first_checkin : start)) / 1e6);
        printf("RESULT round.%llu.last_report_to_commit_s %.3f\n", (unsigned long long)a->round,
               rep_to_commit);
        printf("RESULT round.%llu.last_ack_to_commit_s %.3f\n", (unsigned long long)a->round,
               ack_to_commit);
        if (!commit || a->acks_accepted != opt.devices)
            ok = 0;
        prev_commit = commit;
    }
    printf("RESULT round.parameters %zu\n", sh.param_count);
    printf("RESULT round.total_s %.1f\n", total_s);
    printf("RESULT round.failures %u\n", atomic_load(&sh.failures));
    printf("RESULT round.rejections %u\n", atomic_load(&sh.rejections));
    printf("RESULT round.server_rss_before_mib %.1f\n", mib(rss0));
    printf("RESULT round.server_rss_max_sampled_mib %.1f\n", mib(rss_max));
    printf("RESULT round.server_hwm_mib %.1f\n", mib(hwm));
    printf("RESULT round.client_hwm_mib %.1f\n", mib(chwm));
    printf("RESULT round.server_cpu_s %.1f\n", scpu);
    printf("RESULT round.server_service_thread_cpu_s %.1f\n", service);
    printf("RESULT round.client_cpu_s %.1f\n", ccpu);
    printf("RESULT round.aggregation_s %.3f\n", agg_s);
    printf("RESULT round.aggregation_ms_per_report %.3f\n",
           reports > 0 ? agg_s * 1000.0 / reports : NAN);
    shoal_free(sh.update);
    free(devs);
    free(th);
    return ok ? 0 : 1;
}

/* ---- main --------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    opt.mode = argv[1];
    opt.host = "127.0.0.1";
    opt.server_name = "localhost";
    opt.connections = 10000;
    opt.threads = 16;
    opt.hold_s = 5;
    opt.seconds = 10;
    opt.reps = 3;
    opt.devices = 1000;
    opt.rounds = 2;
    opt.max_wait_ms = 1000;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "server_load: %s needs a value\n%s", a, usage);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--host") == 0)
            opt.host = v;
        else if (strcmp(a, "--port") == 0)
            opt.port = (uint16_t)parse_u64(a, v, 1, 65535);
        else if (strcmp(a, "--ca") == 0)
            opt.ca_file = v;
        else if (strcmp(a, "--server-name") == 0)
            opt.server_name = v;
        else if (strcmp(a, "--population") == 0)
            opt.population = v;
        else if (strcmp(a, "--token") == 0)
            opt.token = v;
        else if (strcmp(a, "--token-file") == 0) {
            char *t = read_file(v, 4096);
            if (!t)
                die("--token-file: cannot read %s", v);
            size_t n = strlen(t);
            if (n && t[n - 1] == '\n')
                t[--n] = '\0';
            if (n && t[n - 1] == '\r')
                t[--n] = '\0';
            opt.token = t;
        } else if (strcmp(a, "--server-pid") == 0)
            opt.server_pid = (long)parse_u64(a, v, 1, INT_MAX);
        else if (strcmp(a, "--server-log") == 0)
            opt.server_log = v;
        else if (strcmp(a, "--connections") == 0)
            opt.connections = (uint32_t)parse_u64(a, v, 1, 1000000);
        else if (strcmp(a, "--threads") == 0) {
            opt.threads = (uint32_t)parse_u64(a, v, 1, 4096);
            opt.threads_set = 1;
        } else if (strcmp(a, "--hold-s") == 0)
            opt.hold_s = (uint32_t)parse_u64(a, v, 0, 86400);
        else if (strcmp(a, "--seconds") == 0)
            opt.seconds = (uint32_t)parse_u64(a, v, 1, 86400);
        else if (strcmp(a, "--reps") == 0)
            opt.reps = (uint32_t)parse_u64(a, v, 1, 64);
        else if (strcmp(a, "--devices") == 0)
            opt.devices = (uint32_t)parse_u64(a, v, 1, 100000);
        else if (strcmp(a, "--rounds") == 0)
            opt.rounds = (uint32_t)parse_u64(a, v, 1, MAX_ROUNDS);
        else if (strcmp(a, "--max-wait-ms") == 0)
            opt.max_wait_ms = (int64_t)parse_u64(a, v, 0, 86400000);
        else {
            fprintf(stderr, "server_load: unknown option '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (strcmp(opt.mode, "hold") && strcmp(opt.mode, "checkins") && strcmp(opt.mode, "round")) {
        fprintf(stderr, "server_load: unknown mode '%s'\n%s", opt.mode, usage);
        return 2;
    }
    if (!opt.port || !opt.ca_file || !opt.population || !opt.token) {
        fprintf(stderr, "server_load: --port, --ca, --population and --token are required\n%s",
                usage);
        return 2;
    }
    if (!opt.threads_set && strcmp(opt.mode, "hold") == 0)
        opt.threads = 64;
    ca_pem = read_file(opt.ca_file, 1 << 20);
    if (!ca_pem)
        die("--ca: cannot read %s", opt.ca_file);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&server_addr;
    if (inet_pton(AF_INET, opt.host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(opt.port);
        server_addr_len = sizeof *in4;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&server_addr;
        if (inet_pton(AF_INET6, opt.host, &in6->sin6_addr) != 1)
            die("--host: '%s' is not a numeric IPv4 or IPv6 address", opt.host);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(opt.port);
        server_addr_len = sizeof *in6;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && strcmp(opt.mode, "hold") == 0 &&
        rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)opt.connections + 64)
        fprintf(stderr,
                "server_load: warning: ulimit -n is %llu, below --connections %u + 64; raise it\n",
                (unsigned long long)rl.rlim_cur, opt.connections);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc;
    if (strcmp(opt.mode, "hold") == 0)
        rc = run_hold();
    else if (strcmp(opt.mode, "checkins") == 0)
        rc = run_checkins();
    else
        rc = run_round();
    free(ca_pem);
    return rc;
}
