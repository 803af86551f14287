/* HTTP on the session port: health, Prometheus metrics and the latest
 * committed model. Runs on the network service thread, so it only reads
 * atomics and takes short locks. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "server_int.h"
#include "shoal/alloc.h"

typedef struct text {
    char *buf;
    size_t len, cap;
    int failed;
} text;

static void text_add(text *t, const char *fmt, ...) SHOAL_PRINTF(2, 3);
static void text_add(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->buf && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->len + (size_t)n + 1)
            cap *= 2;
        char *buf = shoal_realloc(t->buf, cap);
        if (!buf) {
            t->failed = 1;
            return;
        }
        t->buf = buf;
        t->cap = cap;
    }
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* Prometheus label values escape backslash, quote and newline; population
 * names are restricted to [A-Za-z0-9._-], so none occur. */
static void family(text *t, const char *name, const char *type, const char *help)
{
    text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Differential privacy, for the populations that use it: epsilon (with
 * its delta as a label), the rounds accounted, the budget's state,
 * DP-FTRL's rho, and the clip (adaptive clipping moves it). */
static double dp_value(population *p, int which)
{
    return which == 0   ? bits_double(atomic_load(&p->metrics.dp_epsilon_bits))
           : which == 1 ? (double)atomic_load(&p->metrics.dp_steps)
           : which == 2 ? (double)atomic_load(&p->metrics.dp_exhausted)
           : which == 3 ? bits_double(atomic_load(&p->metrics.dp_rho_bits))
                        : bits_double(atomic_load(&p->metrics.dp_clip_bits));
}

static void dp_metrics(text *t, shoal_server *srv)
{
    static const char *const names[] = {"shoal_dp_epsilon", "shoal_dp_rounds",
                                        "shoal_dp_budget_exhausted", "shoal_dp_rho",
                                        "shoal_dp_clip"};
    static const char *const helps[] = {
        "Epsilon spent so far at the population's delta (DP-FedAvg: RDP accountant; DP-FTRL: "
        "rho converted; improved conversion).",
        "Rounds the privacy accounting has composed.",
        "1 once one more round would take epsilon above budget_epsilon: the population trains "
        "no more.",
        "DP-FTRL: zCDP rho spent so far (sum over trees of k^2 x height / (2 z^2)).",
        "The L2 clip the next training round's updates get (adaptive clipping moves it after "
        "each committed round)."};
    for (int w = 0; w < 5; w++) {
        family(t, names[w], "gauge", helps[w]);
        for (size_t i = 0; i < srv->pop_count; i++) {
            population *p = &srv->pops[i];
            char delta[48] = "";
            if (w == 0)
                snprintf(delta, sizeof delta, ",delta=\"%g\"", p->cfg->dp.delta);
            if (p->cfg->dp.enabled && (w != 3 || p->cfg->dp.mechanism == SHOAL_DP_MECHANISM_FTRL))
                text_add(t, "%s{population=\"%s\"%s} %.9g\n", names[w], p->cfg->name, delta,
                         dp_value(p, w));
        }
    }
}

/* The per-population counters and gauges of pop_metrics, in the order
 * /metrics lists them. */
struct pop_metric {
    const char *name, *type, *help;
    size_t offset; /* of its atomic_uint_least64_t in pop_metrics */
};

static const struct pop_metric round_metrics[] = {
    {"shoal_rounds_started_total", "counter", "Training rounds started.",
     offsetof(pop_metrics, rounds_started)},
    {"shoal_rounds_committed_total", "counter",
     "Training rounds (or async server steps) committed.", offsetof(pop_metrics, rounds_committed)},
    {"shoal_rounds_abandoned_total", "counter", "Rounds abandoned with too few reports.",
     offsetof(pop_metrics, rounds_abandoned)},
    {"shoal_model_version", "gauge", "Version of the latest committed model.",
     offsetof(pop_metrics, model_version)},
    {"shoal_devices_checked_in_total", "counter", "Check-ins that reached selection.",
     offsetof(pop_metrics, checked_in)},
    {"shoal_devices_accepted_total", "counter", "Devices accepted into a task.",
     offsetof(pop_metrics, accepted)},
    {"shoal_devices_rejected_total", "counter", "Devices rejected with a retry window.",
     offsetof(pop_metrics, rejected)},
    {"shoal_devices_reported_total", "counter", "Reports folded into an aggregate.",
     offsetof(pop_metrics, reported)},
    {"shoal_devices_dropped_total", "counter",
     "Accepted devices that ended without a usable report.", offsetof(pop_metrics, dropped)},
    {"shoal_evaluations_total", "counter", "Federated evaluations finished.",
     offsetof(pop_metrics, evaluations)},
    {"shoal_secagg_groups_total", "counter", "Secure-aggregation groups formed.",
     offsetof(pop_metrics, sa_groups)},
    {"shoal_secagg_groups_unmasked_total", "counter",
     "Secure-aggregation groups whose sum was unmasked.", offsetof(pop_metrics, sa_groups_done)},
    {"shoal_secagg_groups_failed_total", "counter",
     "Secure-aggregation groups dropped from their round (below threshold), nothing revealed.",
     offsetof(pop_metrics, sa_groups_failed)},
};

/* Durations kept in ns, shown in seconds. */
static const struct pop_metric secagg_time_metrics[] = {
    {"shoal_secagg_inputs_seconds_total", "counter",
     "Time aggregators spent on the masked-input phase of the unmasked secure-aggregation groups "
     "(adding each masked input into its group's sum).",
     offsetof(pop_metrics, sa_inputs_ns)},
    {"shoal_secagg_unmask_seconds_total", "counter",
     "Time aggregators spent on the unmask phase of the unmasked secure-aggregation groups "
     "(taking the shares, rebuilding the secrets, removing the masks, decoding the sum).",
     offsetof(pop_metrics, sa_unmask_ns)},
};

/* Also kept in ns, shown in seconds. */
static const struct pop_metric aggregation_time_metric[] = {
    {"shoal_aggregation_seconds_total", "counter",
     "Time the coordinator spent folding reports into aggregates.",
     offsetof(pop_metrics, aggregation_ns)},
};

static const struct pop_metric update_bound_metrics[] = {
    {"shoal_updates_clipped_total", "counter",
     "Uploads above the population's L2 norm bound, scaled down to it.",
     offsetof(pop_metrics, updates_clipped)},
    {"shoal_updates_refused_norm_total", "counter",
     "Uploads above the population's L2 norm bound, refused (NORM_EXCEEDED).",
     offsetof(pop_metrics, updates_refused_norm)},
};

/* Lists the metrics m[0 .. count), one line per population; `seconds`: the
 * counters hold nanoseconds, shown in seconds. */
static void per_pop(text *t, shoal_server *srv, const struct pop_metric *m, size_t count,
                    bool seconds)
{
    for (size_t k = 0; k < count; k++) {
        family(t, m[k].name, m[k].type, m[k].help);
        for (size_t i = 0; i < srv->pop_count; i++) {
            const char *metrics = (const char *)&srv->pops[i].metrics;
            const atomic_uint_least64_t *v = (const void *)(metrics + m[k].offset);
            const uint64_t x = atomic_load(v);
            if (seconds)
                text_add(t, "%s{population=\"%s\"} %.6f\n", m[k].name, srv->pops[i].cfg->name,
                         (double)x / 1e9);
            else
                text_add(t, "%s{population=\"%s\"} %llu\n", m[k].name, srv->pops[i].cfg->name,
                         (unsigned long long)x);
        }
    }
}

static void metrics(shoal_server *srv, shoal_http_response *resp)
{
    text t = {0};
    per_pop(&t, srv, round_metrics, sizeof round_metrics / sizeof round_metrics[0], false);
    static const char *const phases[] = {"advertise", "share", "mask", "unmask"};
    family(&t, "shoal_secagg_dropouts_total", "counter",
           "Devices that left their secure-aggregation group, by the phase they missed.");
    for (size_t i = 0; i < srv->pop_count; i++)
        for (int ph = 0; ph < 4; ph++)
            text_add(&t, "shoal_secagg_dropouts_total{population=\"%s\",phase=\"%s\"} %llu\n",
                     srv->pops[i].cfg->name, phases[ph],
                     (unsigned long long)atomic_load(&srv->pops[i].metrics.sa_dropped[ph]));
    per_pop(&t, srv, secagg_time_metrics,
            sizeof secagg_time_metrics / sizeof secagg_time_metrics[0], true);
    per_pop(&t, srv, update_bound_metrics,
            sizeof update_bound_metrics / sizeof update_bound_metrics[0], false);
    dp_metrics(&t, srv);
    family(&t, "shoal_population_halted", "gauge",
           "1 when a commit to the state database failed and the population takes no devices until "
           "a restart.");
    for (size_t i = 0; i < srv->pop_count; i++)
        text_add(&t, "shoal_population_halted{population=\"%s\"} %d\n", srv->pops[i].cfg->name,
                 atomic_load(&srv->pops[i].halted));

    per_pop(&t, srv, aggregation_time_metric, 1, true);
    family(&t, "shoal_eval_loss", "gauge", "Latest federated evaluation loss (NaN before any).");
    for (size_t i = 0; i < srv->pop_count; i++)
        text_add(&t, "shoal_eval_loss{population=\"%s\"} %.6g\n", srv->pops[i].cfg->name,
                 bits_double(atomic_load(&srv->pops[i].metrics.eval_loss_bits)));
    family(&t, "shoal_eval_accuracy", "gauge",
           "Latest federated evaluation accuracy (NaN before any).");
    for (size_t i = 0; i < srv->pop_count; i++)
        text_add(&t, "shoal_eval_accuracy{population=\"%s\"} %.6g\n", srv->pops[i].cfg->name,
                 bits_double(atomic_load(&srv->pops[i].metrics.eval_accuracy_bits)));

    family(&t, "shoal_refusals_total", "counter",
           "Devices turned away, by reason (an Abort, a refused report, a resume of another "
           "device's session); population \"\" before one was named.");
    for (size_t i = 0; i <= srv->pop_count; i++)
        for (int k = 1; k < SHOAL_REFUSAL_KINDS; k++) {
            uint64_t n = shoal_refusals_total(srv->refusals, i, k);
            if (i == srv->pop_count && n == 0)
                continue; /* no population: only what happened */
            text_add(&t, "shoal_refusals_total{population=\"%s\",reason=\"%s\"} %llu\n",
                     i < srv->pop_count ? srv->pops[i].cfg->name : "", shoal_refusals_label(k),
                     (unsigned long long)n);
        }

    shoal_net_stats ns;
    shoal_net_get_stats(srv->net, &ns);
    family(&t, "shoal_connections", "gauge", "Open connections.");
    text_add(&t, "shoal_connections %llu\n", (unsigned long long)ns.connections);
    family(&t, "shoal_connections_refused_total", "counter",
           "Connections refused (limit reached or server busy).");
    text_add(&t, "shoal_connections_refused_total %llu\n", (unsigned long long)ns.refused_total);
    family(&t, "shoal_tls_handshakes_total", "counter",
           "TLS handshakes completed, full or resumed.");
    text_add(&t, "shoal_tls_handshakes_total %llu\n", (unsigned long long)ns.tls_handshakes_total);
    family(&t, "shoal_tls_resumed_total", "counter",
           "TLS handshakes that resumed a session from a ticket (no key exchange, no signature).");
    text_add(&t, "shoal_tls_resumed_total %llu\n", (unsigned long long)ns.tls_resumed_total);
    family(&t, "shoal_bytes_received_total", "counter", "WebSocket payload bytes received.");
    text_add(&t, "shoal_bytes_received_total %llu\n", (unsigned long long)ns.bytes_in_total);
    family(&t, "shoal_bytes_sent_total", "counter", "WebSocket payload bytes sent.");
    text_add(&t, "shoal_bytes_sent_total %llu\n", (unsigned long long)ns.bytes_out_total);
    uint32_t uploading = 0;
    size_t waiting = 0;
    shoal_upload_gate_counts(&srv->uploads, &uploading, &waiting);
    family(&t, "shoal_uploads_active", "gauge",
           "Updates being received now (at most limits.max_concurrent_uploads).");
    text_add(&t, "shoal_uploads_active %u\n", (unsigned)uploading);
    family(&t, "shoal_uploads_waiting", "gauge",
           "Devices whose upload waits for a place, input paused.");
    text_add(&t, "shoal_uploads_waiting %zu\n", waiting);
    family(&t, "shoal_uploads_waited_total", "counter",
           "Uploads that had to wait for a place (limits.max_concurrent_uploads).");
    text_add(&t, "shoal_uploads_waited_total %llu\n",
             (unsigned long long)atomic_load(&srv->uploads.waited_total));

    if (t.failed) {
        shoal_free(t.buf);
        resp->status = 503;
        return;
    }
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    resp->body = (uint8_t *)t.buf;
    resp->body_len = t.len;
}

static void model(shoal_server *srv, const char *name, shoal_http_response *resp)
{
    population *pop = NULL;
    for (size_t i = 0; i < srv->pop_count; i++)
        if (strcmp(srv->pops[i].cfg->name, name) == 0)
            pop = &srv->pops[i];
    if (!pop) {
        resp->status = 404;
        return;
    }
    pthread_mutex_lock(&pop->latest_lock);
    model_blob *b = shoal_model_blob_ref(pop->latest);
    pthread_mutex_unlock(&pop->latest_lock);
    if (!b) {
        resp->status = 503;
        return;
    }
    resp->body = shoal_malloc(b->len);
    if (!resp->body) {
        shoal_model_blob_unref(b);
        resp->status = 503;
        return;
    }
    memcpy(resp->body, b->bytes, b->len);
    resp->body_len = b->len;
    resp->status = 200;
    resp->content_type = "application/octet-stream";
    /* Static per thread: the network layer reads them before the next call. */
    static _Thread_local char version[64], count[64];
    snprintf(version, sizeof version, "X-Shoal-Model-Version: %llu",
             (unsigned long long)b->version);
    snprintf(count, sizeof count, "X-Shoal-Parameter-Count: %zu", b->param_count);
    resp->headers[0] = version;
    resp->headers[1] = count;
    shoal_model_blob_unref(b);
}

/* With http.token set, /metrics and the model need "Authorization: Bearer
 * <token>": 1 when the request may go on, else *resp says 401. */
static int authorized(const shoal_server *srv, const shoal_http_request *req,
                      shoal_http_response *resp)
{
    const char *token = srv->cfg->http_token;
    if (!token)
        return 1;
    static const char scheme[] = "Bearer ";
    const char *given = req->authorization;
    const size_t len = strlen(token);
    if (strncmp(given, scheme, sizeof scheme - 1) == 0 &&
        strlen(given + sizeof scheme - 1) == len &&
        sodium_memcmp(given + sizeof scheme - 1, token, len) == 0)
        return 1;
    static const char body[] = "this endpoint needs the header \"Authorization: Bearer <token>\" "
                               "with the http.token of the server's config\n";
    resp->status = 401;
    resp->content_type = "text/plain";
    resp->headers[0] = "WWW-Authenticate: Bearer realm=\"shoal\"";
    resp->body = shoal_malloc(sizeof body - 1);
    resp->body_len = resp->body ? sizeof body - 1 : 0;
    if (resp->body)
        memcpy(resp->body, body, sizeof body - 1);
    return 0;
}

void shoal_server_http(void *ctx, const shoal_http_request *req, shoal_http_response *resp)
{
    shoal_server *srv = ctx;
    const char *path = req->path;
    static const char prefix[] = "/v1/populations/";
    if (strcmp(path, "/healthz") == 0) {
        int ok = atomic_load(&srv->serving);
        const char *body = ok ? "ok\n" : "stopping\n";
        char halted[512];
        for (size_t i = 0; ok && i < srv->pop_count; i++)
            if (atomic_load(&srv->pops[i].halted)) {
                snprintf(halted, sizeof halted, "population '%s' halted: %s\n",
                         srv->pops[i].cfg->name, srv->pops[i].halt_msg);
                body = halted;
                ok = 0;
            }
        resp->status = ok ? 200 : 503;
        resp->content_type = "text/plain";
        resp->body_len = strlen(body);
        resp->body = shoal_malloc(resp->body_len);
        if (resp->body)
            memcpy(resp->body, body, resp->body_len);
        else
            resp->body_len = 0;
    } else if (srv->cfg->http_listen_address && !req->admin) {
        /* With http.listen the operator's endpoints live there alone. */
        resp->status = 404;
    } else if (strcmp(path, "/metrics") == 0) {
        if (!srv->cfg->http_metrics)
            resp->status = 404;
        else if (authorized(srv, req, resp))
            metrics(srv, resp);
    } else if (strncmp(path, prefix, sizeof prefix - 1) == 0) {
        if (!srv->cfg->http_model) {
            resp->status = 404;
            return;
        }
        const char *name = path + sizeof prefix - 1;
        const char *slash = strchr(name, '/');
        if (!slash || strcmp(slash, "/model") != 0 || slash == name || slash - name > 128) {
            resp->status = 404;
            return;
        }
        char buf[129];
        memcpy(buf, name, (size_t)(slash - name));
        buf[slash - name] = '\0';
        if (authorized(srv, req, resp))
            model(srv, buf, resp);
    } else {
        resp->status = 404;
    }
}
