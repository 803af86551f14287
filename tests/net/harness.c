#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal/alloc.h"

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

double th_ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

void th_make_certs(th_server *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/shoal-net-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
    snprintf(s->cert, sizeof s->cert, "%s/cert.pem", s->dir);
    snprintf(s->key, sizeof s->key, "%s/key.pem", s->dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 "
             "-keyout %s -out %s >%s/openssl.log 2>&1",
             s->key, s->cert, s->dir);
    int rc = system(cmd);
    cr_assert_eq(rc, 0,
                 "generating the test certificate failed (exit status %d; 127 means the "
                 "openssl command line tool is missing: install the openssl package, "
                 "scripts/bootstrap lists it); see %s/openssl.log",
                 rc, s->dir);
    cr_assert_eq(access(s->cert, R_OK), 0, "no certificate at %s", s->cert);
    s->tls.ca_path = s->cert;
}

static int on_open(void *ctx, shoal_conn_id id, const shoal_conn_info *info)
{
    th_server *s = ctx;
    pthread_mutex_lock(&s->mu);
    memcpy(s->last_peer, info->peer, sizeof s->last_peer);
    int refuse = s->refuse_open;
    if (!refuse && s->n_opened < TH_MAX_IDS)
        s->opened[s->n_opened++] = id;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return refuse;
}

static int on_message(void *ctx, shoal_conn_id id, uint8_t *bytes, size_t len)
{
    th_server *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->n_messages++;
    int reject = s->reject_messages;
    int burst = s->burst;
    int echo = s->echo;
    pthread_mutex_unlock(&s->mu);
    if (reject)
        return 1;
    if (burst > 0) {
        /* From the service thread itself, so nothing drains meanwhile. */
        for (int i = 0; i < burst; i++) {
            /* Service thread: no Criterion asserts here. */
            uint8_t *copy = shoal_malloc(len ? len : 1);
            shoal_err err = SHOAL_ENOMEM;
            if (copy) {
                memcpy(copy, bytes, len);
                err = shoal_net_send(s->net, id, copy, len);
                if (err)
                    shoal_free(copy);
            }
            pthread_mutex_lock(&s->mu);
            if (s->n_burst < 16)
                s->burst_results[s->n_burst++] = err;
            pthread_mutex_unlock(&s->mu);
        }
        shoal_free(bytes);
        return 0;
    }
    if (!echo) {
        shoal_free(bytes);
        return 0;
    }
    th_item *it = malloc(sizeof *it);
    if (!it)
        return 1;
    it->next = NULL;
    it->id = id;
    it->bytes = bytes;
    it->len = len;
    pthread_mutex_lock(&s->mu);
    if (s->queue_tail)
        s->queue_tail->next = it;
    else
        s->queue_head = it;
    s->queue_tail = it;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void on_held(void *ctx, shoal_conn_id id)
{
    th_server *s = ctx;
    (void)id;
    pthread_mutex_lock(&s->mu);
    s->n_held++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_close(void *ctx, shoal_conn_id id)
{
    th_server *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n_closed < TH_MAX_IDS)
        s->closed[s->n_closed++] = id;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs on the service thread: failures show as a 500, not an assert. */
static void on_http(void *ctx, const shoal_http_request *req, shoal_http_response *resp)
{
    th_server *s = ctx;
    const char *path = req->path;
    if (!strcmp(path, "/healthz")) {
        resp->status = 200;
        resp->content_type = "text/plain";
        resp->body = shoal_malloc(3);
        if (!resp->body) {
            resp->status = 500;
            return;
        }
        memcpy(resp->body, "ok\n", 3);
        resp->body_len = 3;
        resp->headers[0] = "X-Shoal-Version: 12";
        resp->headers[1] = "Cache-Control: no-store";
    } else if (!strcmp(path, "/model") && s->model) {
        resp->status = 200;
        resp->content_type = "application/octet-stream";
        resp->body = shoal_malloc(s->model_len);
        if (!resp->body) {
            resp->status = 500;
            return;
        }
        memcpy(resp->body, s->model, s->model_len);
        resp->body_len = s->model_len;
    } else if (!strcmp(path, "/empty")) {
        resp->status = 204;
    }
    /* Anything else: left unfilled, which means 404. */
}

static void *echo_worker(void *arg)
{
    th_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->queue_head && !s->worker_quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->queue_head && s->worker_quit)
            break;
        th_item *it = s->queue_head;
        s->queue_head = it->next;
        if (!s->queue_head)
            s->queue_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        shoal_err err = shoal_net_send(s->net, it->id, it->bytes, it->len);
        if (err)
            shoal_free(it->bytes);
        free(it);
        pthread_mutex_lock(&s->mu);
        if (err)
            s->echo_failures++;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void *run_thread(void *arg)
{
    th_server *s = arg;
    shoal_err err = shoal_net_run(s->net);
    pthread_mutex_lock(&s->mu);
    s->run_result = err;
    s->run_done = 1;
    clock_gettime(CLOCK_MONOTONIC, &s->run_done_at);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void th_init(th_server *s, int tls)
{
    memset(s, 0, sizeof *s);
    cr_assert_eq(pthread_mutex_init(&s->mu, NULL), 0);
    cr_assert_eq(pthread_cond_init(&s->cv, NULL), 0);
    s->initialized = 1;
    s->echo = 1;
    s->cfg.address = "127.0.0.1";
    s->cfg.port = 0;
    s->cfg.tls = tls;
    s->cfg.max_connections = 512;
    s->cfg.max_message_bytes = (size_t)4 << 20;
    s->cfg.max_outbox_messages = 4096;
    s->cfg.handshake_timeout_ms = 10000;
    s->cfg.idle_timeout_ms = 0;
    if (tls) {
        th_make_certs(s);
        s->cfg.cert_path = s->cert;
        s->cfg.key_path = s->key;
    }
}

void th_start(th_server *s)
{
    shoal_net_handlers h = {.ctx = s,
                            .on_open = on_open,
                            .on_message = on_message,
                            .on_close = on_close,
                            .on_held = on_held,
                            .on_http = on_http};
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_net_new(&s->cfg, &h, &s->net, &ei);
    cr_assert_eq(err, SHOAL_OK, "shoal_net_new: %s: %s", shoal_err_name(err), ei.msg);
    s->port = shoal_net_port(s->net);
    cr_assert_neq(s->port, 0);
    cr_assert_eq(pthread_create(&s->worker, NULL, echo_worker, s), 0);
    cr_assert_eq(pthread_create(&s->run_thread, NULL, run_thread, s), 0);
    s->running = 1;
}

int th_wait_run_done(th_server *s, int timeout_ms)
{
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!s->run_done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    int done = s->run_done;
    pthread_mutex_unlock(&s->mu);
    return done;
}

void th_stop(th_server *s)
{
    if (!s->running)
        return;
    s->running = 0;
    shoal_net_stop(s->net);
    cr_assert(th_wait_run_done(s, 5000), "shoal_net_run did not return within 5 s of stop");
    pthread_join(s->run_thread, NULL);
    cr_assert_eq(s->run_result, SHOAL_OK, "shoal_net_run: %s", shoal_err_name(s->run_result));

    pthread_mutex_lock(&s->mu);
    s->worker_quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);

    /* After run returned every accepted session has had its on_close. */
    cr_assert_eq(s->n_closed, s->n_opened, "%zu sessions opened but %zu closed", s->n_opened,
                 s->n_closed);
    for (size_t i = 0; i < s->n_opened; i++) {
        size_t seen = 0;
        for (size_t j = 0; j < s->n_closed; j++)
            seen += s->closed[j] == s->opened[i];
        cr_assert_eq(seen, 1, "on_close ran %zu times for id %llu", seen,
                     (unsigned long long)s->opened[i]);
    }
    shoal_net_get_stats(s->net, &s->final_stats);
    shoal_net_free(s->net);
    s->net = NULL;
}

void th_fini(th_server *s)
{
    if (!s->initialized)
        return;
    if (s->running)
        th_stop(s);
    while (s->queue_head) {
        th_item *it = s->queue_head;
        s->queue_head = it->next;
        shoal_free(it->bytes);
        free(it);
    }
    free(s->model);
    s->model = NULL;
    if (s->dir[0]) {
        char path[256];
        const char *files[] = {"cert.pem", "key.pem", "openssl.log", "garbage.pem"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
            unlink(path);
        }
        rmdir(s->dir);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    s->initialized = 0;
}

static int wait_count(th_server *s, const size_t *counter, size_t n, int timeout_ms)
{
    struct timespec dl;
    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (*counter < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    int ok = *counter >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

int th_wait_opened(th_server *s, size_t n, int timeout_ms)
{
    return wait_count(s, &s->n_opened, n, timeout_ms);
}

int th_wait_closed(th_server *s, size_t n, int timeout_ms)
{
    return wait_count(s, &s->n_closed, n, timeout_ms);
}

int th_wait_connections(th_server *s, uint64_t n, int timeout_ms)
{
    /* The counter changes on the service thread with no event to wait on:
     * poll it, briefly, against a deadline. */
    struct timespec start, now, nap = {0, 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        shoal_net_stats st;
        shoal_net_get_stats(s->net, &st);
        if (st.connections == n)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (th_ms_between(&start, &now) > timeout_ms)
            return 0;
        nanosleep(&nap, NULL);
    }
}

shoal_conn_id th_opened_id(th_server *s, size_t index)
{
    pthread_mutex_lock(&s->mu);
    shoal_conn_id id = index < s->n_opened ? s->opened[index] : 0;
    pthread_mutex_unlock(&s->mu);
    return id;
}
