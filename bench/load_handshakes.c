/* server_load handshakes: the server's CPU per full TLS handshake and per
 * resumed one (a session ticket), from client threads opening
 * --connections connections for each variant, against the cost
 * of the public-key operations a full handshake makes the server do,
 * measured with OpenSSL in this process in the same run.
 *
 * Variants, each --connections connections of TCP connect, TLS handshake
 * (mbedTLS, as the device SDK), close_notify and close, from --threads
 * client threads (each opening its share one after another; default 1),
 * run --reps times in rotated order:
 *   full_no_ticket  a full handshake, no ticket asked for (what every
 *                   connection cost before session tickets);
 *   full_ticket     a full handshake that asks for and gets a ticket (a
 *                   device's first connection, or one after its ticket
 *                   expired);
 *   resumed         offering the session a full_ticket handshake saved:
 *                   no key exchange, no certificate, no signature.
 * Server CPU is utime + stime of the whole process (/proc/PID/stat) over
 * each measurement, client CPU this process's (getrusage); /metrics
 * confirms how many handshakes the server resumed. */
#include <openssl/evp.h>

#include "server_load.h"

enum hs_variant { HS_FULL_NO_TICKET, HS_FULL_TICKET, HS_RESUMED, HS_COUNT };
static const char *const hs_names[HS_COUNT] = {"full_no_ticket", "full_ticket", "resumed"};

typedef struct hs_result {
    double server_us, client_us, wall_us; /* per handshake */
    uint32_t resumed;                     /* the client saw a resumption */
    double server_resumed;                /* /metrics shoal_tls_resumed_total delta */
} hs_result;

static double thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef struct hs_shared {
    enum hs_variant v;
    const uint8_t *saved;
    size_t saved_len;
    uint32_t per_thread;
    atomic_uint resumed;
} hs_shared;

static void *hs_main(void *arg)
{
    hs_shared *sh = arg;
    for (uint32_t i = 0; i < sh->per_thread; i++) {
        rawtls conn;
        shoal_errinfo ei = {0};
        shoal_err err = load_raw_open_session(&conn, sh->v != HS_FULL_NO_TICKET,
                                              sh->v == HS_RESUMED ? sh->saved : NULL, sh->saved_len,
                                              30000, &ei);
        if (err)
            load_die("handshakes: a connection failed: %s", ei.msg);
        atomic_fetch_add(&sh->resumed, (unsigned)shoal_tls_resumed(conn.tls));
        load_raw_close(&conn);
    }
    return NULL;
}

/* --connections connections from --threads threads (each one after
 * another on its thread). */
static hs_result run_variant(enum hs_variant v, const uint8_t *saved, size_t saved_len)
{
    hs_result r;
    memset(&r, 0, sizeof r);
    hs_shared sh = {.v = v,
                    .saved = saved,
                    .saved_len = saved_len,
                    .per_thread = load_opt.connections / load_opt.threads};
    atomic_init(&sh.resumed, 0);
    pthread_t th[256];
    scrape m0 = load_metrics_scrape();
    double s0 = load_proc_cpu_s(load_opt.server_pid), c0 = load_self_cpu_s();
    int64_t t0 = load_mono_us();
    for (uint32_t i = 0; i < load_opt.threads; i++)
        th[i] = load_spawn(hs_main, &sh, 256 * 1024);
    for (uint32_t i = 0; i < load_opt.threads; i++)
        pthread_join(th[i], NULL);
    double el_us = (double)(load_mono_us() - t0);
    double s1 = load_proc_cpu_s(load_opt.server_pid), c1 = load_self_cpu_s();
    scrape m1 = load_metrics_scrape();
    double n = (double)sh.per_thread * load_opt.threads;
    r.server_us = (s1 - s0) * 1e6 / n;
    r.client_us = (c1 - c0) * 1e6 / n;
    r.wall_us = el_us / n;
    r.resumed = atomic_load(&sh.resumed);
    r.server_resumed = m1.tls_resumed - m0.tls_resumed;
    return r;
}

/* ---- the same-run floor: the server's public-key work in a full handshake ---------- */

/* CPU microseconds per call of fn, the median of 5 batches of `per_batch`. */
static double per_op_us(int (*fn)(void *), void *ctx, int per_batch)
{
    double batch[5];
    for (int b = 0; b < 5; b++) {
        double t0 = thread_cpu_us();
        for (int i = 0; i < per_batch; i++)
            if (fn(ctx) != 1)
                load_die("handshakes: the OpenSSL baseline failed (%s)", "EVP");
        batch[b] = (thread_cpu_us() - t0) / per_batch;
    }
    return load_median(batch, 5);
}

typedef struct floor_ctx {
    EVP_PKEY *peer_x25519; /* the client's share */
    EVP_PKEY *ecdsa_key;   /* the certificate's key kind: P-256 */
    uint8_t params[133];   /* what ServerKeyExchange signs: two randoms + the share */
} floor_ctx;

/* ECDHE with X25519 (OpenSSL's first choice among the groups mbedTLS
 * offers): a fresh key pair and the shared secret. */
static int x25519_op(void *arg)
{
    floor_ctx *f = arg;
    EVP_PKEY *mine = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    EVP_PKEY_CTX *dc = mine ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
    uint8_t secret[32];
    size_t len = sizeof secret;
    int ok = dc && EVP_PKEY_derive_init(dc) == 1 &&
             EVP_PKEY_derive_set_peer(dc, f->peer_x25519) == 1 &&
             EVP_PKEY_derive(dc, secret, &len) == 1;
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_free(mine);
    return ok;
}

/* The ECDSA P-256 signature over the key exchange parameters. */
static int ecdsa_op(void *arg)
{
    floor_ctx *f = arg;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t sig[80];
    size_t len = sizeof sig;
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, f->ecdsa_key) == 1 &&
             EVP_DigestSign(md, sig, &len, f->params, sizeof f->params) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static void measure_floor(double *x25519_us, double *ecdsa_us)
{
    floor_ctx f;
    memset(&f, 0, sizeof f);
    f.peer_x25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    f.ecdsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!f.peer_x25519 || !f.ecdsa_key)
        load_die("handshakes: cannot make the baseline's keys (%s)", "OpenSSL");
    for (size_t i = 0; i < sizeof f.params; i++)
        f.params[i] = (uint8_t)(i * 37 + 11);
    *x25519_us = per_op_us(x25519_op, &f, 400);
    *ecdsa_us = per_op_us(ecdsa_op, &f, 400);
    EVP_PKEY_free(f.peer_x25519);
    EVP_PKEY_free(f.ecdsa_key);
}

static void print_loadavg(const char *when)
{
    char buf[128] = "?";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            snprintf(buf, sizeof buf, "?\n");
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
    printf("handshakes: load average %s: %s\n", when, buf);
}

int load_run_handshakes(void)
{
    if (!load_opt.server_pid)
        load_die("handshakes: --server-pid is required (%s)", "server CPU comes from /proc");
    if (!load_opt.threads_set)
        load_opt.threads = 1;
    if (load_opt.threads > 256 || load_opt.threads > load_opt.connections)
        load_die("handshakes: --threads must be 1 to 256 and at most --connections (%s)", "");
    print_loadavg("at start");
    /* The session every resumed connection offers: one full handshake's. */
    rawtls first;
    shoal_errinfo ei = {0};
    if (load_raw_open_session(&first, 1, NULL, 0, 30000, &ei) != SHOAL_OK)
        load_die("handshakes: the first connection failed: %s", ei.msg);
    printf("handshakes: cipher suite %s\n", shoal_tls_ciphersuite(first.tls));
    uint8_t *saved = NULL;
    size_t saved_len = 0;
    if (shoal_tls_get_session(first.tls, &saved, &saved_len, &ei) != SHOAL_OK)
        load_die("handshakes: the server gave nothing to resume (is tls.session_tickets on?): %s",
                 ei.msg);
    load_raw_close(&first);
    printf("handshakes: %u connections per measurement from %u client thread(s), each opening "
           "its share one after another; %u repetitions in rotated order\n",
           load_opt.connections / load_opt.threads * load_opt.threads, load_opt.threads,
           load_opt.reps);
    printf("%-15s %4s %14s %14s %12s %8s %12s\n", "variant", "rep", "srv cpu us/hs",
           "cli cpu us/hs", "wall us/hs", "resumed", "srv resumed");

    double srv[HS_COUNT][64], cli[HS_COUNT][64], wall[HS_COUNT][64];
    uint32_t reps = load_opt.reps > 64 ? 64 : load_opt.reps;
    for (uint32_t rep = 0; rep < reps; rep++)
        for (int j = 0; j < HS_COUNT; j++) {
            enum hs_variant v = (enum hs_variant)((j + rep) % HS_COUNT);
            hs_result r = run_variant(v, saved, saved_len);
            srv[v][rep] = r.server_us;
            cli[v][rep] = r.client_us;
            wall[v][rep] = r.wall_us;
            printf("%-15s %4u %14.1f %14.1f %12.1f %8u %12.0f\n", hs_names[v], rep, r.server_us,
                   r.client_us, r.wall_us, r.resumed, r.server_resumed);
            if (v == HS_RESUMED &&
                r.resumed != load_opt.connections / load_opt.threads * load_opt.threads)
                printf("handshakes: WARNING: only %u resumed\n", r.resumed);
        }
    shoal_tls_session_free(saved, saved_len);

    double x25519_us = 0, ecdsa_us = 0;
    measure_floor(&x25519_us, &ecdsa_us);
    double med_srv[HS_COUNT], med_cli[HS_COUNT], med_wall[HS_COUNT];
    for (int v = 0; v < HS_COUNT; v++) {
        med_srv[v] = load_median(srv[v], reps);
        med_cli[v] = load_median(cli[v], reps);
        med_wall[v] = load_median(wall[v], reps);
    }
    double floor_us = x25519_us + ecdsa_us;
    double saved_us = med_srv[HS_FULL_TICKET] - med_srv[HS_RESUMED];
    printf("\nmedians of %u repetitions (server CPU includes accepting and closing the TCP "
           "connection):\n",
           reps);
    for (int v = 0; v < HS_COUNT; v++)
        printf("  %-15s server %8.1f us  client %8.1f us  wall %8.1f us per handshake\n",
               hs_names[v], med_srv[v], med_cli[v], med_wall[v]);
    printf("  baseline (OpenSSL, this process, same run): X25519 key pair + shared secret "
           "%.1f us, ECDSA P-256 sign %.1f us; sum %.1f us\n",
           x25519_us, ecdsa_us, floor_us);
    printf("  resumed / full_ticket: %.2f of the server CPU; full_ticket - resumed = %.1f us "
           "= %.2f x the baseline sum\n",
           med_srv[HS_RESUMED] / med_srv[HS_FULL_TICKET], saved_us, saved_us / floor_us);
    print_loadavg("at end");
    for (int v = 0; v < HS_COUNT; v++) {
        printf("RESULT %s_server_us %.2f\n", hs_names[v], med_srv[v]);
        printf("RESULT %s_client_us %.2f\n", hs_names[v], med_cli[v]);
        printf("RESULT %s_wall_us %.2f\n", hs_names[v], med_wall[v]);
    }
    printf("RESULT baseline_x25519_us %.2f\nRESULT baseline_ecdsa_p256_sign_us %.2f\n", x25519_us,
           ecdsa_us);
    return 0;
}
