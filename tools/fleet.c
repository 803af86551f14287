/* shoal-fleet: a fleet of virtual devices in one process, driving a real
 * shoal-server over TLS with the real protocol. Each device holds a shard
 * of Fashion-MNIST (or, with --synthetic, no data at all), checks in,
 * honours retry windows, downloads the model (skipping it when it already
 * holds the checkpoint), trains with shoal_train_local — the same function
 * the simulator and the device SDK call — and uploads its update in
 * chunks, or, when its plan asks for secure aggregation, answers its
 * group's phases instead (fleet_secagg.c). Used as the end-to-end
 * demonstration (scripts/federate) and as a load generator.
 *
 * One thread per device (devices mostly wait on the network); at most
 * --threads of them train at once. Each time a device receives a model
 * version not seen before, the fleet evaluates it on the test set and
 * prints a progress line. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleet_secagg.h"
#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/chunk.h"
#include "shoal/dataset.h"
#include "shoal/encoding.h"
#include "shoal/envelope.h"
#include "shoal/model.h"
#include "shoal/partition.h"
#include "shoal/version.h"
#include "shoal/plan.h"
#include "shoal/rng.h"
#include "shoal/train.h"
#include "shoal/wss.h"

static const char usage[] =
    "usage: shoal-fleet --port PORT --ca FILE --population NAME\n"
    "                   (--token TOKEN | --token-file FILE) [options]\n"
    "\n"
    "Runs --devices virtual devices against a shoal-server until the\n"
    "population's model reaches version --rounds.\n"
    "\n"
    "  --host HOST            server address (default 127.0.0.1)\n"
    "  --server-name NAME     DNS name in the server certificate (default localhost)\n"
    "  --devices N            virtual devices (default 20)\n"
    "  --rounds R             stop once model version R is committed (default 20)\n"
    "  --partition SCHEME     iid, dirichlet, shards, ... (default dirichlet)\n"
    "  --alpha A              dirichlet concentration (default 0.5)\n"
    "  --seed S               partition and training seed (default 1)\n"
    "  --threads T            devices training at once (default 2)\n"
    "  --data-dir DIR         Fashion-MNIST IDX files (default the Debian package's)\n"
    "  --synthetic            no dataset: report small random updates (load tests)\n"
    "  --max-wait-ms MS       cap on any retry wait (default 5000)\n"
    "  --quiet                only the final line\n"
    "  --help, --version      print this text or the version and exit\n";

typedef struct fleet {
    /* configuration */
    const char *host, *server_name, *ca, *population, *token, *data_dir;
    uint16_t port;
    uint32_t devices, rounds, threads;
    uint64_t seed;
    shoal_partition_kind partition;
    double alpha;
    int synthetic, quiet;
    int64_t max_wait_ms;
    /* data */
    shoal_dataset *train, *test;
    shoal_partition *part;
    /* shared state */
    pthread_mutex_t lock;
    pthread_cond_t train_slot;
    uint32_t training_now;
    shoal_model *model; /* built from the first plan */
    char model_desc[160];
    uint64_t best_version; /* newest version seen */
    double last_accuracy;
    uint64_t last_evaluated;
    atomic_int done;
    atomic_uint_least64_t sessions, reports, rejections, failures;
    struct timespec start;
} fleet;

static double elapsed_s(const fleet *f)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - f->start.tv_sec) + (now.tv_nsec - f->start.tv_nsec) / 1e9;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

typedef struct device {
    fleet *f;
    uint32_t id;
    shoal_rng rng;
    float *model; /* the checkpoint held */
    size_t param_count;
    uint8_t checkpoint[SHOAL_PROTOCOL_ID_MAX];
    size_t checkpoint_len;
    float *delta;
    int synthetic_drawn; /* --synthetic: delta holds this device's update */
} device;

/* ---- protocol helpers -------------------------------------------------------------- */

static shoal_err send_env(shoal_wss *wss, const shoal_envelope *env, shoal_errinfo *ei)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_err err = shoal_envelope_encode(&codec, env, &buf, &len, ei);
    if (err)
        return err;
    err = shoal_wss_send(wss, buf, len, 60000, ei);
    shoal_free(buf);
    return err;
}

static shoal_err recv_env(shoal_wss *wss, int timeout_ms, shoal_envelope **out, shoal_errinfo *ei)
{
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    uint8_t *msg = NULL;
    size_t len = 0;
    shoal_err err = shoal_wss_recv(wss, &msg, &len, timeout_ms, ei);
    if (err)
        return err;
    err = shoal_envelope_decode(&codec, msg, len, out, ei);
    shoal_free(msg);
    return err;
}

/* Picks the wait from a retry window at once, as the protocol asks. */
static int64_t pick_wait(device *d, const Shoal__RetryWindow *w)
{
    if (!w)
        return 1000;
    uint64_t span = w->max_ms > w->min_ms ? w->max_ms - w->min_ms : 0;
    int64_t ms = (int64_t)(w->min_ms + (span ? shoal_rng_below(&d->rng, span + 1) : 0));
    return ms < d->f->max_wait_ms ? ms : d->f->max_wait_ms;
}

/* ---- training and evaluation -------------------------------------------------------- */

/* The fleet's model object, built from the first plan seen. */
static shoal_err fleet_model(fleet *f, const Shoal__ModelSpec *spec, shoal_errinfo *ei)
{
    pthread_mutex_lock(&f->lock);
    shoal_err err = SHOAL_OK;
    if (!f->model) {
        shoal_model_arch arch;
        err = shoal_model_arch_parse(spec->architecture, &arch);
        if (!err) {
            shoal_shape s = {spec->input_shape[0],
                             spec->n_input_shape > 1 ? spec->input_shape[1] : 1,
                             spec->n_input_shape > 2 ? spec->input_shape[2] : 1};
            err = shoal_model_new(arch, s, spec->classes, &f->model);
            snprintf(f->model_desc, sizeof f->model_desc,
                     "%s %ux%ux%u, %u classes, %llu parameters", spec->architecture, s.c, s.h, s.w,
                     spec->classes, (unsigned long long)spec->parameter_count);
        }
        if (err)
            shoal_errinfo_set(ei, err, "the plan's model (%s) cannot be built here",
                              spec->architecture);
        else if (shoal_model_param_count(f->model) != spec->parameter_count)
            err = shoal_errinfo_set(
                ei, SHOAL_EPROTO, "the plan says %llu parameters, the model here has %zu",
                (unsigned long long)spec->parameter_count, shoal_model_param_count(f->model));
    }
    pthread_mutex_unlock(&f->lock);
    return err;
}

static uint64_t version_of(const uint8_t *checkpoint, size_t len)
{
    /* shoal-server's checkpoint ids end with the version, little-endian. */
    uint64_t v = 0;
    if (len >= 16)
        for (int i = 0; i < 8; i++)
            v |= (uint64_t)checkpoint[8 + i] << (8 * i);
    return v;
}

/* Evaluates a newly seen model version on the test set and prints it. */
static void observe_version(fleet *f, const float *params, uint64_t version)
{
    pthread_mutex_lock(&f->lock);
    if (version <= f->last_evaluated || f->synthetic || !f->model) {
        if (version > f->best_version)
            f->best_version = version;
        if (f->synthetic && version > f->last_evaluated && !f->quiet) {
            f->last_evaluated = version;
            fprintf(stderr, "version %llu seen at %.1f s\n", (unsigned long long)version,
                    elapsed_s(f));
        }
        if (version >= f->rounds)
            atomic_store(&f->done, 1);
        pthread_mutex_unlock(&f->lock);
        return;
    }
    f->last_evaluated = version;
    if (version > f->best_version)
        f->best_version = version;
    shoal_model_ws *ws = NULL;
    shoal_batch_stats st = {0};
    if (shoal_model_ws_new(f->model, 500, &ws) == SHOAL_OK) {
        for (size_t i = 0; i < f->test->count; i += 500) {
            size_t n = f->test->count - i < 500 ? f->test->count - i : 500;
            if (shoal_model_eval(f->model, ws, params, f->test->x + i * f->test->features,
                                 f->test->y + i, n, &st) != SHOAL_OK)
                break;
        }
        shoal_model_ws_free(ws);
    }
    if (st.count) {
        f->last_accuracy = (double)st.correct / (double)st.count;
        if (!f->quiet)
            printf("round %3llu  test_accuracy %.4f  test_loss %.4f  sessions %llu  reports %llu  "
                   "rejections %llu  %.1f s\n",
                   (unsigned long long)version, f->last_accuracy, st.loss_sum / (double)st.count,
                   (unsigned long long)atomic_load(&f->sessions),
                   (unsigned long long)atomic_load(&f->reports),
                   (unsigned long long)atomic_load(&f->rejections), elapsed_s(f));
        fflush(stdout);
    }
    if (version >= f->rounds)
        atomic_store(&f->done, 1);
    pthread_mutex_unlock(&f->lock);
}

/* ---- one session ----------------------------------------------------------------------- */

/* Runs one session; returns how long to wait before the next check-in. */
static int64_t session(device *d)
{
    fleet *f = d->f;
    shoal_errinfo ei = {0};
    shoal_wss_config wc = {.host = f->host,
                           .port = f->port,
                           .server_name = f->server_name,
                           .ca_file = f->ca,
                           .timeout_ms = 20000};
    shoal_wss *wss = NULL;
    if (shoal_wss_connect(&wc, &wss, &ei) != SHOAL_OK) {
        atomic_fetch_add(&f->failures, 1);
        if (!f->quiet && atomic_load(&f->failures) <= 3)
            fprintf(stderr, "shoal-fleet: device %u: %s\n", d->id, ei.msg);
        return 1000 + (int64_t)shoal_rng_below(&d->rng, 2000);
    }
    int64_t wait = 1000;
    shoal_envelope *env = NULL;

    shoal_checkin_fields cf = {.population = f->population,
                               .auth_token = (const uint8_t *)f->token,
                               .auth_token_len = strlen(f->token),
                               .sdk_version = "shoal-fleet/" SHOAL_VERSION_STRING,
                               .max_model_bytes = 1ull << 30,
                               .secure_aggregation = 1,
                               .held_checkpoint_id = d->checkpoint,
                               .held_checkpoint_id_len = d->checkpoint_len};
    shoal_checkin_body body;
    shoal_envelope out;
    if (shoal_envelope_checkin_init(&out, &body, &cf, &ei) != SHOAL_OK)
        goto failed;
    if (send_env(wss, &out, &ei) != SHOAL_OK)
        goto failed;
    /* Selection can take a whole selection window: wait for it, but give
     * up as soon as the fleet is done. */
    for (;;) {
        shoal_err err = recv_env(wss, 250, &env, &ei);
        if (err == SHOAL_OK)
            break;
        if (err != SHOAL_ETIMEDOUT)
            goto failed;
        if (atomic_load(&f->done)) {
            wait = 0;
            goto done;
        }
    }
    if (env->body_case == SHOAL__ENVELOPE__BODY_ABORT) {
        wait = pick_wait(d, env->abort->retry_window);
        if (!f->quiet && !atomic_load(&f->done))
            fprintf(stderr, "shoal-fleet: device %u: aborted: %s (%s)\n", d->id,
                    shoal_protocol_reason_name(env->abort->reason),
                    env->abort->detail ? env->abort->detail : "");
        goto done;
    }
    if (env->body_case != SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT)
        goto unexpected;
    if (env->check_in_result->result_case == SHOAL__CHECK_IN_RESULT__RESULT_REJECTED) {
        atomic_fetch_add(&f->rejections, 1);
        wait = pick_wait(d, env->check_in_result->rejected->retry_window);
        goto done;
    }
    atomic_fetch_add(&f->sessions, 1);
    Shoal__CheckInResult__Accepted *acc = env->check_in_result->accepted;
    int64_t wait_if_lost = pick_wait(d, acc->retry_window);
    wait = wait_if_lost;
    if (fleet_model(f, acc->plan->model, &ei) != SHOAL_OK)
        goto failed;
    size_t count = shoal_model_param_count(f->model);
    /* With secure aggregation the update is never uploaded: it is masked
     * in its group (the plan says which and how). */
    fleet_secagg_plan sa_plan;
    const int secure = acc->plan->secure_aggregation != NULL;
    if (secure && shoal_fleet_secagg_plan(acc->plan, count, &sa_plan, &ei) != SHOAL_OK)
        goto failed;
    if (!d->model) {
        d->model = shoal_mallocarray(count, sizeof(float));
        d->delta = shoal_mallocarray(count, sizeof(float));
        d->param_count = count;
        if (!d->model || !d->delta)
            goto failed;
    }
    uint8_t session_id[SHOAL_PROTOCOL_ID_MAX];
    size_t session_len = acc->session_id.len;
    memcpy(session_id, acc->session_id.data, session_len);
    int task = acc->task_kind;
    shoal_train_config tc;
    int have_tc = task == SHOAL__TASK_KIND__TASK_KIND_TRAIN &&
                  shoal_plan_train_config(acc->plan, &tc) == SHOAL_OK;
    if (shoal_model_download_needed(acc, d->checkpoint, d->checkpoint_len)) {
        uint64_t model_size = acc->model_size;
        uint8_t ckpt[SHOAL_PROTOCOL_ID_MAX];
        size_t ckpt_len = acc->checkpoint_id.len;
        memcpy(ckpt, acc->checkpoint_id.data, ckpt_len);
        shoal_envelope_free(env);
        env = NULL;
        shoal_reassembly_limits lim = {
            .max_total = model_size, .max_chunk = 1u << 20, .max_chunks = 1u << 20};
        shoal_reassembler *ra = NULL;
        if (model_size != count * 4 || shoal_reassembler_new("ModelChunk", &lim, &ra) != SHOAL_OK)
            goto failed;
        shoal_err err = SHOAL_OK;
        while (err == SHOAL_OK) {
            shoal_envelope *c = NULL;
            if ((err = recv_env(wss, 60000, &c, &ei)) != SHOAL_OK)
                break;
            if (c->body_case != SHOAL__ENVELOPE__BODY_MODEL_CHUNK) {
                shoal_envelope_free(c);
                err = SHOAL_EPROTO;
                break;
            }
            shoal_chunk ch = shoal_chunk_from_model(c->model_chunk);
            err = shoal_reassembler_add(ra, &ch, &ei);
            shoal_envelope_free(c);
        }
        size_t len = 0;
        const uint8_t *bytes = shoal_reassembler_bytes(ra, &len);
        if (err == SHOAL_DONE && bytes)
            err = shoal_tensor_decode_f32le(bytes, len, d->model, count, "model", &ei);
        shoal_reassembler_free(ra);
        if (err != SHOAL_OK)
            goto failed;
        memcpy(d->checkpoint, ckpt, ckpt_len);
        d->checkpoint_len = ckpt_len;
        observe_version(f, d->model, version_of(ckpt, ckpt_len));
    } else {
        shoal_envelope_free(env);
        env = NULL;
    }

    /* Work: train (or evaluate) on this device's shard. */
    const uint32_t *indices = NULL;
    size_t n = 0;
    if (f->part) {
        indices = f->part->indices + f->part->offsets[d->id];
        n = f->part->offsets[d->id + 1] - f->part->offsets[d->id];
    }
    Shoal__Report rep = SHOAL__REPORT__INIT;
    Shoal__TensorInfo ti = SHOAL__TENSOR_INFO__INIT;
    Shoal__Metric m_loss = SHOAL__METRIC__INIT, m_acc = SHOAL__METRIC__INIT;
    Shoal__Metric *metrics[2] = {&m_loss, &m_acc};
    rep.has_session_id = 1;
    rep.session_id.data = session_id;
    rep.session_id.len = session_len;
    rep.has_outcome = 1;
    rep.outcome = SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED;
    rep.has_example_count = 1;
    m_loss.name = "loss";
    m_loss.has_value = 1;
    m_acc.name = "accuracy";
    m_acc.has_value = 1;
    rep.metrics = metrics;

    if (task == SHOAL__TASK_KIND__TASK_KIND_EVALUATE) {
        shoal_batch_stats st = {0};
        if (f->synthetic) {
            st.count = 10;
            st.correct = 5;
            st.loss_sum = 5;
        } else {
            shoal_model_ws *ws = NULL;
            float *x = shoal_mallocarray(256 * f->train->features, sizeof(float));
            int32_t *y = shoal_mallocarray(256, sizeof(int32_t));
            if (x && y && shoal_model_ws_new(f->model, 256, &ws) == SHOAL_OK) {
                for (size_t i = 0; i < n; i += 256) {
                    size_t b = n - i < 256 ? n - i : 256;
                    shoal_dataset_gather(f->train, indices + i, b, x, y);
                    if (shoal_model_eval(f->model, ws, d->model, x, y, b, &st) != SHOAL_OK)
                        break;
                }
            }
            shoal_model_ws_free(ws);
            shoal_free(x);
            shoal_free(y);
        }
        if (!st.count)
            goto failed;
        rep.example_count = st.count;
        m_loss.value = st.loss_sum / (double)st.count;
        m_acc.value = (double)st.correct / (double)st.count;
        rep.n_metrics = 2;
    } else {
        if (!have_tc)
            goto failed;
        shoal_train_result tr = {0};
        if (f->synthetic) {
            /* Drawn once per device and sent again every round: a load test
             * should spend its CPU on what a device does with the server,
             * and a million normal draws cost more than uploading them. */
            if (!d->synthetic_drawn)
                for (size_t i = 0; i < count; i++)
                    d->delta[i] = (float)(shoal_rng_normal(&d->rng) * 1e-3);
            d->synthetic_drawn = 1;
            tr.example_count = 10;
            tr.mean_loss = 1.0;
        } else {
            pthread_mutex_lock(&f->lock);
            while (f->training_now >= f->threads)
                pthread_cond_wait(&f->train_slot, &f->lock);
            f->training_now++;
            pthread_mutex_unlock(&f->lock);
            shoal_err err = shoal_train_local(f->model, d->model, f->train, indices, n, &tc,
                                              shoal_rng_u64(&d->rng), d->delta, &tr);
            pthread_mutex_lock(&f->lock);
            f->training_now--;
            pthread_cond_signal(&f->train_slot);
            pthread_mutex_unlock(&f->lock);
            if (err) {
                fprintf(stderr, "shoal-fleet: device %u: training failed: %s\n", d->id,
                        shoal_strerror(err));
                goto failed;
            }
        }
        if (secure) {
            if (shoal_fleet_secagg_run(wss, session_id, session_len, &sa_plan, d->delta, count,
                                       tr.example_count, &f->done, &env, &ei) == SHOAL_OK)
                goto answered;
            /* The fleet stopped while its group was running: not a failure. */
            if (atomic_load(&f->done)) {
                wait = 0;
                goto done;
            }
            goto failed;
        }
        /* Upload the update in chunks, then the report describing it. */
        size_t bytes_len = count * 4;
        uint8_t *bytes = shoal_malloc(bytes_len);
        if (!bytes || shoal_tensor_encode_f32le(d->delta, count, bytes, bytes_len, &ei)) {
            shoal_free(bytes);
            goto failed;
        }
        shoal_chunker ch;
        shoal_err err = shoal_chunker_init(
            &ch, bytes, bytes_len, shoal_chunk_max_payload(SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT));
        shoal_chunk c;
        while (!err && shoal_chunker_next(&ch, &c) == SHOAL_ROW) {
            Shoal__ReportChunk rc;
            shoal_envelope e;
            err = shoal_envelope_report_chunk_init(&e, &rc, session_id, session_len, &c, &ei);
            if (!err)
                err = send_env(wss, &e, &ei);
        }
        shoal_free(bytes);
        if (err)
            goto failed;
        ti.has_encoding = ti.has_element_count = ti.has_byte_size = 1;
        ti.encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
        ti.element_count = count;
        ti.byte_size = bytes_len;
        rep.update = &ti;
        rep.example_count = tr.example_count;
        m_loss.value = isfinite(tr.mean_loss) ? tr.mean_loss : 0.0;
        rep.n_metrics = 1;
    }
    shoal_envelope re = SHOAL__ENVELOPE__INIT;
    re.body_case = SHOAL__ENVELOPE__BODY_REPORT;
    re.report = &rep;
    if (send_env(wss, &re, &ei) != SHOAL_OK)
        goto failed;
    if (recv_env(wss, 15 * 60 * 1000, &env, &ei) != SHOAL_OK)
        goto failed;
answered:
    if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT_ACK) {
        if (env->report_ack->status == SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED)
            atomic_fetch_add(&f->reports, 1);
        wait = pick_wait(d, env->report_ack->retry_window);
    } else if (env->body_case == SHOAL__ENVELOPE__BODY_ABORT) {
        wait = pick_wait(d, env->abort->retry_window);
    }
    goto done;

unexpected:
    shoal_errinfo_set(&ei, SHOAL_EPROTO, "unexpected %s", shoal_envelope_body_name(env));
failed:
    atomic_fetch_add(&f->failures, 1);
    if (!f->quiet && !atomic_load(&f->done))
        fprintf(stderr, "shoal-fleet: device %u: session failed: %s\n", d->id,
                ei.msg[0] ? ei.msg : "(no detail)");
done:
    shoal_envelope_free(env);
    if (shoal_wss_close(wss, 1000, 2000) != SHOAL_OK) {
        /* The server usually closes first; nothing to do. */
    }
    shoal_wss_free(wss);
    return wait;
}

static void *device_main(void *arg)
{
    device *d = arg;
    /* Spread the first check-ins over a second. */
    sleep_ms((int64_t)shoal_rng_below(&d->rng, 1000));
    while (!atomic_load(&d->f->done)) {
        int64_t wait = session(d);
        for (int64_t slept = 0; slept < wait && !atomic_load(&d->f->done); slept += 100)
            sleep_ms(wait - slept < 100 ? wait - slept : 100);
    }
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------ */

static int parse_u64(const char *flag, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v > max || s[0] == '-') {
        fprintf(stderr, "shoal-fleet: %s: '%s' is not an integer from 0 to %llu\n", flag, s,
                (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    fleet f;
    memset(&f, 0, sizeof f);
    f.host = "127.0.0.1";
    f.server_name = "localhost";
    f.devices = 20;
    f.rounds = 20;
    f.threads = 2;
    f.seed = 1;
    f.partition = SHOAL_PARTITION_DIRICHLET;
    f.alpha = 0.5;
    f.max_wait_ms = 5000;
    uint64_t v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("shoal-fleet %s\n", shoal_version());
            return 0;
        }
        if (strcmp(a, "--synthetic") == 0) {
            f.synthetic = 1;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            f.quiet = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "shoal-fleet: %s needs a value\n%s", a, usage);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(a, "--host") == 0)
            f.host = val;
        else if (strcmp(a, "--server-name") == 0)
            f.server_name = val;
        else if (strcmp(a, "--ca") == 0)
            f.ca = val;
        else if (strcmp(a, "--population") == 0)
            f.population = val;
        else if (strcmp(a, "--token") == 0)
            f.token = val;
        else if (strcmp(a, "--token-file") == 0) {
            FILE *tf = fopen(val, "r");
            static char token_buf[4097];
            size_t got = tf ? fread(token_buf, 1, sizeof token_buf - 1, tf) : 0;
            if (tf)
                fclose(tf);
            while (got && (token_buf[got - 1] == '\n' || token_buf[got - 1] == '\r'))
                got--;
            token_buf[got] = '\0';
            if (!tf || !got) {
                fprintf(stderr, "shoal-fleet: --token-file %s: %s\n", val,
                        tf ? "empty file" : strerror(errno));
                return 2;
            }
            f.token = token_buf;
        } else if (strcmp(a, "--data-dir") == 0)
            f.data_dir = val;
        else if (strcmp(a, "--port") == 0) {
            if (parse_u64(a, val, 65535, &v) || v == 0)
                return 2;
            f.port = (uint16_t)v;
        } else if (strcmp(a, "--devices") == 0) {
            if (parse_u64(a, val, 100000, &v) || v == 0)
                return 2;
            f.devices = (uint32_t)v;
        } else if (strcmp(a, "--rounds") == 0) {
            if (parse_u64(a, val, 1000000, &v) || v == 0)
                return 2;
            f.rounds = (uint32_t)v;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_u64(a, val, 256, &v) || v == 0)
                return 2;
            f.threads = (uint32_t)v;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_u64(a, val, UINT64_MAX, &v))
                return 2;
            f.seed = v;
        } else if (strcmp(a, "--max-wait-ms") == 0) {
            if (parse_u64(a, val, 86400000, &v))
                return 2;
            f.max_wait_ms = (int64_t)v;
        } else if (strcmp(a, "--partition") == 0) {
            if (shoal_partition_kind_parse(val, &f.partition) != SHOAL_OK) {
                fprintf(stderr, "shoal-fleet: --partition: unknown scheme '%s'\n", val);
                return 2;
            }
        } else if (strcmp(a, "--alpha") == 0) {
            char *end;
            f.alpha = strtod(val, &end);
            if (*end || !(f.alpha > 0) || !isfinite(f.alpha)) {
                fprintf(stderr, "shoal-fleet: --alpha: '%s' must be a positive number\n", val);
                return 2;
            }
        } else {
            fprintf(stderr, "shoal-fleet: unknown option '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!f.port || !f.ca || !f.population || !f.token) {
        fprintf(stderr, "shoal-fleet: --port, --ca, --population and --token are required\n%s",
                usage);
        return 2;
    }
    shoal_errinfo ei = {0};
    if (!f.synthetic) {
        if (shoal_dataset_load_fashion_mnist(f.data_dir, 1, &f.train, &ei) != SHOAL_OK ||
            shoal_dataset_load_fashion_mnist(f.data_dir, 0, &f.test, &ei) != SHOAL_OK) {
            fprintf(stderr, "shoal-fleet: %s\n", ei.msg);
            return 1;
        }
        float mean, sd;
        shoal_dataset_stats(f.train, &mean, &sd);
        if (shoal_dataset_normalize(f.train, mean, sd) != SHOAL_OK ||
            shoal_dataset_normalize(f.test, mean, sd) != SHOAL_OK)
            return 1;
        shoal_partition_config pc = shoal_partition_defaults(f.partition);
        pc.alpha = f.alpha;
        if (shoal_partition_new(&pc, f.train->y, f.train->count, f.train->classes, f.devices,
                                f.seed, &f.part, &ei) != SHOAL_OK) {
            fprintf(stderr, "shoal-fleet: %s\n", ei.msg);
            return 1;
        }
    }
    /* Devices train concurrently on their own threads: one BLAS thread each. */
    shoal_blas_set_threads(1);
    pthread_mutex_init(&f.lock, NULL);
    pthread_cond_init(&f.train_slot, NULL);
    clock_gettime(CLOCK_MONOTONIC, &f.start);
    if (!f.quiet)
        fprintf(stderr,
                "shoal-fleet: %u devices (%s%s) -> %s:%u population '%s', until version %u\n",
                f.devices, f.synthetic ? "synthetic" : shoal_partition_kind_name(f.partition),
                f.synthetic ? "" : " shards of Fashion-MNIST", f.host, (unsigned)f.port,
                f.population, f.rounds);

    device *devs = shoal_calloc(f.devices, sizeof *devs);
    pthread_t *th = shoal_calloc(f.devices, sizeof *th);
    if (!devs || !th)
        return 1;
    uint32_t started = 0;
    for (uint32_t i = 0; i < f.devices; i++) {
        devs[i].f = &f;
        devs[i].id = i;
        shoal_rng_derive(&devs[i].rng, f.seed, i + 1);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int rc = pthread_create(&th[i], &attr, device_main, &devs[i]);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            fprintf(stderr, "shoal-fleet: could only start %u device threads\n", i);
            break;
        }
        started++;
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    int ok = atomic_load(&f.done);
    if (!f.quiet)
        fprintf(stderr,
                "shoal-fleet: %llu sessions, %llu reports, %llu rejections, %llu failed "
                "sessions, %.1f s\n",
                (unsigned long long)atomic_load(&f.sessions),
                (unsigned long long)atomic_load(&f.reports),
                (unsigned long long)atomic_load(&f.rejections),
                (unsigned long long)atomic_load(&f.failures), elapsed_s(&f));
    if (!f.synthetic)
        printf("final_test_accuracy=%.4f\n", f.last_accuracy);
    for (uint32_t i = 0; i < f.devices; i++) {
        shoal_free(devs[i].model);
        shoal_free(devs[i].delta);
    }
    shoal_free(devs);
    shoal_free(th);
    shoal_model_free(f.model);
    shoal_partition_free(f.part);
    shoal_dataset_free(f.train);
    shoal_dataset_free(f.test);
    return ok ? 0 : 1;
}
