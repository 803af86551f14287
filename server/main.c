/* shoal-server: the command line around server/core.
 *
 *   shoal-server --config FILE                run the server
 *   shoal-server --check-config --config FILE validate and describe it
 *   shoal-server token --config FILE --population NAME --device ID
 *   shoal-server --help | --version */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/auth.h"
#include "shoal/log.h"
#include "shoal/server.h"
#include "shoal/server_config.h"
#include "shoal/selfsigned.h"
#include "shoal/wire.h"

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "0.0.0"
#endif

static const char usage[] =
    "usage: shoal-server --config FILE [--check-config]\n"
    "       shoal-server token --config FILE --population NAME --device ID\n"
    "       shoal-server --help | --version\n"
    "\n"
    "Serves federated learning rounds to devices over TLS WebSockets\n"
    "(wss://HOST:PORT" SHOAL_PROTOCOL_WS_PATH ") and HTTP on the same port: /healthz,\n"
    "/metrics, /v1/populations/NAME/model.\n"
    "\n"
    "  --config FILE     the JSON configuration (docs/operations.md)\n"
    "  --check-config    check FILE, print what it configures, exit 0 if valid\n"
    "  token             print an HMAC device token for a population whose\n"
    "                    auth mode is \"hmac\"\n"
    "\n"
    "SIGTERM or SIGINT stops it cleanly: open rounds are abandoned with nothing\n"
    "half-applied and the state database is closed.\n";

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void describe(const shoal_server_config *cfg)
{
    printf("%s: valid\n", cfg->path);
    printf("  listen   %s:%u (%s)\n", cfg->listen_address, (unsigned)cfg->port,
           cfg->tls_enabled ? "TLS" : "plain: only behind a TLS-terminating proxy");
    if (cfg->tls_enabled) {
        printf("  tls      cert %s, key %s%s\n", cfg->tls_cert, cfg->tls_key,
               cfg->tls_self_signed ? " (self-signed on first run)" : "");
        if (cfg->tls_session_tickets)
            printf("  tls      session tickets, keys rotated every %lld ms\n",
                   (long long)cfg->tls_ticket_rotation_ms);
        else
            printf("  tls      no session tickets: every handshake is a full one\n");
    }
    if (cfg->http_listen_address)
        printf("  http     %s:%u (plain: /metrics and the models; /healthz on both)\n",
               cfg->http_listen_address, (unsigned)cfg->http_port);
    printf("  state    %s (keep %u checkpoints)\n", cfg->state_path, cfg->keep_checkpoints);
    for (size_t i = 0; i < cfg->population_count; i++) {
        const shoal_population_config *p = &cfg->populations[i];
        printf("  population %s: %s, %s, %s, goal %u, auth %s\n", p->name,
               shoal_model_arch_name(p->arch),
               p->round.mode == SHOAL_ROUND_SYNC ? "sync" : "async (FedBuff)",
               shoal_server_optim_kind_name(p->round.server_optim.kind), p->round.goal_count,
               p->auth_mode == SHOAL_AUTH_HMAC ? "hmac" : "shared");
        if (p->secagg.enabled)
            printf("    secure_aggregation %s: groups of up to %u, degree %u and threshold %u "
                   "for a full group, %u-bit ring\n",
                   p->secagg.plus ? "secagg_plus" : "secagg", p->secagg.group_size,
                   p->secagg.degree, p->secagg.threshold, p->secagg.bits);
        if (p->update_bound.enabled)
            printf("    update_bound l2_norm %g (%s)\n", p->update_bound.l2_norm,
                   p->update_bound.refuse ? "refuse" : "clip");
        if (p->dp.enabled)
            printf("    differential_privacy %s z %g clip %g%s\n",
                   p->dp.mechanism == SHOAL_DP_MECHANISM_FTRL ? "ftrl" : "fedavg",
                   p->dp.noise_multiplier, p->dp.clip,
                   p->dp.adaptive.enabled ? " (the first round's: adaptive clipping)" : "");
        if (p->dp.adaptive.enabled)
            printf("    adaptive_clipping quantile %g rate %g count_noise %g (update z_u %g)\n",
                   p->dp.adaptive.target_quantile, p->dp.adaptive.learning_rate,
                   p->dp.adaptive.count_noise, p->dp.adaptive.update_noise);
        if (p->aggregation.rule != SHOAL_ROBUST_MEAN)
            printf("    aggregation %s\n", p->aggregation.rule == SHOAL_ROBUST_NORM_BOUNDED
                                               ? "norm_bounded_mean"
                                               : shoal_robust_name(p->aggregation.rule));
    }
}

/* The configuration at `path`, or NULL after saying on stderr why not. */
static shoal_server_config *load_config(const char *path)
{
    shoal_server_config *cfg = NULL;
    shoal_errinfo ei = {0};
    if (shoal_server_config_load(path, &cfg, &ei) != SHOAL_OK) {
        fprintf(stderr, "shoal-server: %s\n", ei.msg);
        return NULL;
    }
    return cfg;
}

static int cmd_token(int argc, char **argv)
{
    const char *config = NULL, *population = NULL, *device = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "shoal-server token: %s needs a value\n%s", a, usage);
            return 2;
        }
        if (strcmp(a, "--config") == 0)
            config = argv[++i];
        else if (strcmp(a, "--population") == 0)
            population = argv[++i];
        else if (strcmp(a, "--device") == 0)
            device = argv[++i];
        else {
            fprintf(stderr, "shoal-server token: unknown option '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!config || !population || !device) {
        fprintf(stderr, "shoal-server token: --config, --population and --device are required\n");
        return 2;
    }
    shoal_server_config *cfg = load_config(config);
    if (!cfg)
        return 1;
    shoal_errinfo ei = {0};
    const shoal_population_config *p = shoal_server_config_population(cfg, population);
    int rc = 1;
    if (!p) {
        fprintf(stderr, "shoal-server token: %s has no population '%s'\n", config, population);
    } else if (p->auth_mode != SHOAL_AUTH_HMAC) {
        fprintf(stderr,
                "shoal-server token: population '%s' uses auth mode \"shared\"; per-device "
                "tokens need \"mode\": \"hmac\" in its auth section\n",
                population);
    } else {
        char token[256];
        if (shoal_auth_mint(p->secret, p->secret_len, p->name, device, token, sizeof token, &ei) !=
            SHOAL_OK) {
            fprintf(stderr, "shoal-server token: %s\n", ei.msg);
        } else {
            printf("%s\n", token);
            rc = 0;
        }
    }
    shoal_server_config_free(cfg);
    return rc;
}

/* Signals arrive on whichever thread has them unblocked (libraries such as
 * OpenBLAS start threads before main), so the handler only writes a byte to
 * a pipe and a thread of ours does the stopping. */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* Nothing async-signal-safe to do about it. */
    }
    errno = saved;
}

static void *signal_main(void *arg)
{
    shoal_server *srv = arg;
    unsigned char b = 0;
    ssize_t n;
    do
        n = read(signal_pipe[0], &b, 1);
    while (n < 0 && errno == EINTR);
    if (n == 1 && b != 0) {
        SHOAL_LOG(SHOAL_LOG_INFO, "server", "%s received: stopping",
                  b == SIGTERM ? "SIGTERM" : "SIGINT");
        shoal_server_stop(srv);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "token") == 0)
        return cmd_token(argc, argv);
    const char *config = NULL;
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("shoal-server %s\n", SHOAL_VERSION);
            return 0;
        } else if (strcmp(a, "--check-config") == 0) {
            check_only = 1;
        } else if (strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "shoal-server: --config needs a file\n%s", usage);
                return 2;
            }
            config = argv[++i];
        } else {
            fprintf(stderr, "shoal-server: unknown argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "shoal-server: --config FILE is required\n%s", usage);
        return 2;
    }

    shoal_server_config *cfg = load_config(config);
    if (!cfg)
        return 1;
    shoal_errinfo ei = {0};
    if (check_only) {
        describe(cfg);
        shoal_server_config_free(cfg);
        return 0;
    }
    shoal_log_set_level(cfg->log_level);

    if (cfg->tls_enabled) {
        int have_cert = file_exists(cfg->tls_cert), have_key = file_exists(cfg->tls_key);
        if (!have_cert && !have_key && cfg->tls_self_signed) {
            if (shoal_selfsigned_make(cfg->tls_cert, cfg->tls_key, "localhost", 825, &ei) !=
                SHOAL_OK) {
                fprintf(stderr, "shoal-server: %s\n", ei.msg);
                shoal_server_config_free(cfg);
                return 1;
            }
            SHOAL_LOG(SHOAL_LOG_INFO, "server",
                      "made a self-signed certificate for localhost: %s (key %s); devices pin "
                      "this file as their CA",
                      cfg->tls_cert, cfg->tls_key);
        } else if (!have_cert || !have_key) {
            fprintf(stderr,
                    "shoal-server: %s: %s does not exist; give both tls.cert and tls.key, or "
                    "neither with tls.self_signed true to make a pair\n",
                    cfg->path, have_cert ? cfg->tls_key : cfg->tls_cert);
            shoal_server_config_free(cfg);
            return 1;
        }
    }

    if (pipe(signal_pipe) != 0) {
        fprintf(stderr, "shoal-server: pipe: %s\n", strerror(errno));
        shoal_server_config_free(cfg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    shoal_server *srv = NULL;
    if (shoal_server_new(cfg, &srv, &ei) != SHOAL_OK) {
        fprintf(stderr, "shoal-server: %s\n", ei.msg);
        shoal_server_config_free(cfg);
        return 1;
    }
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_main, srv) != 0) {
        fprintf(stderr, "shoal-server: cannot start the signal thread\n");
        shoal_server_free(srv);
        shoal_server_config_free(cfg);
        return 1;
    }
    fprintf(stderr,
            "shoal-server: listening on %s://%s:%u" SHOAL_PROTOCOL_WS_PATH " (%zu population%s)\n",
            cfg->tls_enabled ? "wss" : "ws", cfg->listen_address, (unsigned)shoal_server_port(srv),
            cfg->population_count, cfg->population_count == 1 ? "" : "s");
    if (cfg->http_listen_address)
        fprintf(stderr, "shoal-server: metrics and models on http://%s:%u\n",
                cfg->http_listen_address, (unsigned)shoal_server_http_port(srv));
    fflush(stderr);

    shoal_err err = shoal_server_run(srv);
    /* Wake the signal thread if the server stopped for another reason. */
    unsigned char zero = 0;
    if (write(signal_pipe[1], &zero, 1) != 1)
        fprintf(stderr, "shoal-server: cannot wake the signal thread\n");
    pthread_join(sig_thread, NULL);
    shoal_server_free(srv);
    shoal_server_config_free(cfg);
    if (err) {
        fprintf(stderr, "shoal-server: stopped with an error: %s\n", shoal_strerror(err));
        return 1;
    }
    return 0;
}
