/* server_load checkins: check-ins per second against TLS-only and
 * TLS+WebSocket baselines measured in the same run. */
#include "server_load.h"

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
        int64_t t0 = load_mono_us();
        if (sh->v == V_TLS) {
            rawtls r;
            if (load_raw_open(&r, 30000, &ei) != SHOAL_OK) {
                ci_error(sh, "connect", ei.msg);
                continue;
            }
            int64_t t1 = load_mono_us();
            load_raw_close(&r);
            atomic_fetch_add(&sh->connect_us, (uint64_t)(t1 - t0));
            atomic_fetch_add(&sh->close_us, (uint64_t)(load_mono_us() - t1));
            atomic_fetch_add(&sh->ops, 1);
            continue;
        }
        shoal_wss *w = NULL;
        if (load_wss_open(&w, 30000, &ei) != SHOAL_OK) {
            ci_error(sh, "connect", ei.msg);
            continue;
        }
        int64_t t1 = load_mono_us(), t2 = t1;
        int ok = 1;
        if (sh->v == V_CHECKIN) {
            shoal_envelope *env = NULL;
            if (shoal_wss_send(w, sh->checkin, sh->checkin_len, 30000, &ei) != SHOAL_OK ||
                load_recv_env(w, 30000, &env, &ei) != SHOAL_OK) {
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
            t2 = load_mono_us();
        }
        load_wss_end(w);
        if (!ok)
            continue;
        atomic_fetch_add(&sh->connect_us, (uint64_t)(t1 - t0));
        atomic_fetch_add(&sh->exchange_us, (uint64_t)(t2 - t1));
        atomic_fetch_add(&sh->close_us, (uint64_t)(load_mono_us() - t2));
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
    pthread_t *th = calloc(load_opt.threads, sizeof *th);
    double scpu0 = load_proc_cpu_s(load_opt.server_pid), ccpu0 = load_self_cpu_s();
    int64_t t0 = load_mono_us();
    for (uint32_t i = 0; i < load_opt.threads; i++)
        th[i] = load_spawn(ci_main, &sh, 256 * 1024);
    load_sleep_ms((int64_t)load_opt.seconds * 1000);
    atomic_store(&sh.stop, 1);
    for (uint32_t i = 0; i < load_opt.threads; i++)
        pthread_join(th[i], NULL);
    double el = (double)(load_mono_us() - t0) / 1e6;
    double scpu = load_proc_cpu_s(load_opt.server_pid) - scpu0, ccpu = load_self_cpu_s() - ccpu0;
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

int load_run_checkins(void)
{
    size_t checkin_len = 0;
    uint8_t *checkin = load_encode_checkin(NULL, 0, &checkin_len);
    /* The holder takes the round's only place and never reports, so every
     * later check-in is turned away with a retry window. */
    shoal_wss *holder = NULL;
    shoal_errinfo ei = {0};
    shoal_envelope *env = NULL;
    if (load_wss_open(&holder, 30000, &ei) != SHOAL_OK ||
        shoal_wss_send(holder, checkin, checkin_len, 30000, &ei) != SHOAL_OK ||
        load_recv_env(holder, 30000, &env, &ei) != SHOAL_OK)
        load_die("checkins: the holder session failed: %s", ei.msg);
    int holder_ok = env->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN_RESULT &&
                    env->check_in_result->result_case == SHOAL__CHECK_IN_RESULT__RESULT_ACCEPTED;
    printf("checkins: holder session %s; %u threads, %u s per measurement, %u repetitions\n",
           holder_ok ? "accepted (the round is now full)" : "NOT accepted", load_opt.threads,
           load_opt.seconds, load_opt.reps);
    shoal_envelope_free(env);

    double rate[V_COUNT][64], scpu[V_COUNT][64], ccpu[V_COUNT][64], conn[V_COUNT][64],
        exch[V_COUNT][64], clo[V_COUNT][64], share[V_COUNT][64];
    uint64_t rejected = 0, accepted = 0, aborted = 0, errors = 0;
    printf("%-18s %4s %9s %8s %13s %13s %10s %10s %9s\n", "variant", "rep", "ops/s", "ops",
           "srv cpu ms/op", "cli cpu ms/op", "connect ms", "exchange ms", "close ms");
    for (uint32_t rep = 0; rep < load_opt.reps; rep++)
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
    printf("medians of %u:\n", load_opt.reps);
    printf("%-18s %9s %13s %13s %12s %10s %11s %9s\n", "variant", "ops/s", "srv cpu ms/op",
           "cli cpu ms/op", "srv cores", "connect ms", "exchange ms", "close ms");
    for (int v = 0; v < V_COUNT; v++) {
        double m[7] = {load_median(rate[v], load_opt.reps), load_median(scpu[v], load_opt.reps),
                       load_median(ccpu[v], load_opt.reps), load_median(share[v], load_opt.reps),
                       load_median(conn[v], load_opt.reps), load_median(exch[v], load_opt.reps),
                       load_median(clo[v], load_opt.reps)};
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
    double scpu_ci = load_median(scpu[V_CHECKIN], load_opt.reps);
    printf("checkins: server CPU per check-in %.3f ms: at most %.0f check-ins/s per server core "
           "(the load generator's mbedTLS handshakes, %.3f ms CPU each, bound the measured "
           "rate)\n",
           scpu_ci, 1000.0 / scpu_ci, load_median(ccpu[V_CHECKIN], load_opt.reps));
    printf("RESULT checkins.checkin.server_bound_per_core_s %.0f\n", 1000.0 / scpu_ci);
    printf("RESULT checkins.threads %u\n", load_opt.threads);
    printf("RESULT checkins.rejected %llu\n", (unsigned long long)rejected);
    printf("RESULT checkins.accepted %llu\n", (unsigned long long)accepted);
    printf("RESULT checkins.errors %llu\n", (unsigned long long)errors);
    load_wss_end(holder);
    shoal_free(checkin);
    return holder_ok && !errors && !accepted ? 0 : 1;
}
