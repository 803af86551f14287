/* server_load round: D devices through R synchronous rounds. */
#include "server_load.h"

/* ---- round -------------------------------------------------------------------------- */

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
    st.checkin = load_real_us();
    if (load_wss_open(&w, 120000, &ei) != SHOAL_OK)
        goto failed;
    size_t ci_len = 0;
    uint8_t *ci = load_encode_checkin(d->held, d->held_len, &ci_len);
    shoal_err err = shoal_wss_send(w, ci, ci_len, 60000, &ei);
    shoal_free(ci);
    if (err || load_recv_env(w, 30 * 60 * 1000, &env, &ei) != SHOAL_OK)
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
        load_wss_end(w);
        load_sleep_ms(wait < load_opt.max_wait_ms ? wait : load_opt.max_wait_ms);
        return 0;
    }
    Shoal__CheckInResult__Accepted *acc = env->check_in_result->accepted;
    st.accepted = load_real_us();
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
        if (load_recv_env(w, 10 * 60 * 1000, &env, &ei) != SHOAL_OK)
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
    st.model = load_real_us();

    shoal_chunker ch;
    if (shoal_chunker_init(&ch, sh->update, sh->update_len,
                           shoal_chunk_max_payload(SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT)) != SHOAL_OK)
        goto failed;
    shoal_chunk c;
    while (shoal_chunker_next(&ch, &c) == SHOAL_ROW) {
        Shoal__ReportChunk rc;
        shoal_envelope e;
        if (shoal_envelope_report_chunk_init(&e, &rc, session, session_len, &c, &ei) != SHOAL_OK ||
            load_send_env(w, &e, 10 * 60 * 1000, &ei) != SHOAL_OK)
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
    if (load_send_env(w, &re, 10 * 60 * 1000, &ei) != SHOAL_OK)
        goto failed;
    st.reported = load_real_us();
    if (load_recv_env(w, 30 * 60 * 1000, &env, &ei) != SHOAL_OK)
        goto failed;
    st.acked = load_real_us();
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
    load_wss_end(w);
    if (d->sessions < MAX_ROUNDS)
        d->t[d->sessions] = st;
    d->sessions++;
    return 1;

failed:
    if (atomic_fetch_add(&sh->failures, 1) < 10)
        fprintf(stderr, "server_load: device %u: session failed: %s\n", d->id,
                ei.msg[0] ? ei.msg : "(no detail)");
    shoal_envelope_free(env);
    load_wss_end(w);
    return -1;
}

static void *round_device_main(void *arg)
{
    round_device *d = arg;
    /* Spread the first check-ins over a second, as shoal-fleet does. */
    load_sleep_ms((int64_t)shoal_rng_below(&d->rng, 1000));
    int fails = 0;
    while (d->sessions < load_opt.rounds && !atomic_load(&d->sh->abort) && fails < 5) {
        int r = round_session(d);
        if (r < 0) {
            fails++;
            load_sleep_ms(1000);
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

int load_run_round(void)
{
    long pid = load_opt.server_pid;
    round_shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.lock, NULL);
    round_device *devs = calloc(load_opt.devices, sizeof *devs);
    pthread_t *th = calloc(load_opt.devices, sizeof *th);
    if (!devs || !th)
        load_die("%s", "out of memory");
    scrape m0 = load_metrics_scrape();
    long rss0 = load_proc_status_kib(pid, "VmRSS");
    printf("round: %u devices, %u rounds; server VmRSS before %.1f MiB, model version %.0f\n",
           load_opt.devices, load_opt.rounds, load_mib(rss0), m0.model_version);
    fflush(stdout);
    thread_cpu tc0, tc1;
    load_proc_threads(pid, &tc0);
    double scpu0 = load_proc_cpu_s(pid), ccpu0 = load_self_cpu_s();
    int64_t t0 = load_real_us();
    printf("round: timeline every 2 s (server VmRSS; WebSocket payload MB sent and received by "
           "the server; reports folded):\n");
    for (uint32_t i = 0; i < load_opt.devices; i++) {
        devs[i].sh = &sh;
        devs[i].id = i;
        shoal_rng_derive(&devs[i].rng, 7, i + 1);
        th[i] = load_spawn(round_device_main, &devs[i], 256 * 1024);
    }
    long rss_max = rss0, crss_max = 0;
    while (atomic_load(&sh.done_devices) < load_opt.devices) {
        load_sleep_ms(250);
        long r = load_proc_status_kib(pid, "VmRSS"), c = load_proc_status_kib(0, "VmRSS");
        if (r > rss_max)
            rss_max = r;
        if (c > crss_max)
            crss_max = c;
        if (pid && r < 0) {
            fprintf(stderr, "server_load: the server (pid %ld) is gone\n", pid);
            atomic_store(&sh.abort, 1);
        }
        static int64_t last_scrape;
        if (load_mono_us() - last_scrape > 2000000) {
            last_scrape = load_mono_us();
            scrape s = load_metrics_scrape();
            printf("round: t %5.1f s  version %2.0f  server VmRSS %6.0f MiB  sent %6.0f MB  "
                   "received %6.0f MB  reports %5.0f  client VmRSS %5.0f MiB\n",
                   (double)(load_real_us() - t0) / 1e6, s.model_version, load_mib(r),
                   (s.bytes_sent - m0.bytes_sent) / 1e6,
                   (s.bytes_received - m0.bytes_received) / 1e6, s.reported - m0.reported,
                   load_mib(c));
        }
    }
    for (uint32_t i = 0; i < load_opt.devices; i++)
        pthread_join(th[i], NULL);
    double total_s = (double)(load_real_us() - t0) / 1e6;
    /* The last ack can come before its round's commit (the server acks a
     * report when it accepts it, then collects the sums and commits): wait
     * for the versions before reading the log. */
    for (int64_t until = load_mono_us() + 120 * 1000000LL; load_mono_us() < until;
         load_sleep_ms(100)) {
        scrape s = load_metrics_scrape();
        if (s.model_version >= m0.model_version + load_opt.rounds)
            break;
    }
    load_sleep_ms(200); /* the log line follows the commit */
    double scpu = load_proc_cpu_s(pid) - scpu0, ccpu = load_self_cpu_s() - ccpu0;
    load_proc_threads(pid, &tc1);
    double service = load_print_thread_cpu("round", pid, &tc0, &tc1);
    scrape m1 = load_metrics_scrape();
    long hwm = load_proc_status_kib(pid, "VmHWM");
    long chwm = load_proc_status_kib(0, "VmHWM");

    /* Per server round: the extremes of every step over its devices. */
    typedef struct agg {
        uint64_t round;
        uint32_t devices, acks_accepted;
        int64_t first_checkin, last_accepted, last_model, first_report, last_report, last_ack;
    } agg;
    agg rounds[MAX_ROUNDS];
    int nr = 0;
    for (uint32_t i = 0; i < load_opt.devices; i++)
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
    int nc = load_opt.server_log
                 ? read_commits(load_opt.server_log, commit_round, commit_at, MAX_ROUNDS)
                 : 0;
    printf("round: done in %.1f s: %u failed sessions, %u rejections; CPU: server %.1f s, client "
           "%.1f s\n",
           total_s, atomic_load(&sh.failures), atomic_load(&sh.rejections), scpu, ccpu);
    printf("round: %zu parameters (%zu bytes per update); server VmRSS before %.1f MiB, max "
           "sampled %.1f MiB, VmHWM %.1f MiB; client VmHWM %.1f MiB\n",
           sh.param_count, sh.update_len, load_mib(rss0), load_mib(rss_max), load_mib(hwm),
           load_mib(chwm));
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
    int ok = nr == (int)load_opt.rounds && !atomic_load(&sh.failures);
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
        if (!commit || a->acks_accepted != load_opt.devices)
            ok = 0;
        prev_commit = commit;
    }
    printf("RESULT round.parameters %zu\n", sh.param_count);
    printf("RESULT round.total_s %.1f\n", total_s);
    printf("RESULT round.failures %u\n", atomic_load(&sh.failures));
    printf("RESULT round.rejections %u\n", atomic_load(&sh.rejections));
    printf("RESULT round.server_rss_before_mib %.1f\n", load_mib(rss0));
    printf("RESULT round.server_rss_max_sampled_mib %.1f\n", load_mib(rss_max));
    printf("RESULT round.server_hwm_mib %.1f\n", load_mib(hwm));
    printf("RESULT round.client_hwm_mib %.1f\n", load_mib(chwm));
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
