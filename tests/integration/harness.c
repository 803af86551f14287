#include "harness.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/state.h"
#include "shoal/selfsigned.h"

char *tpop(const char *name, const char *round_fields, const char *strategy)
{
    return tpop_ex(name, round_fields, strategy, NULL, NULL);
}

char *tpop_ex(const char *name, const char *round_fields, const char *strategy,
              const char *plan_fields, const char *population_fields)
{
    char *buf = malloc(4096);
    snprintf(buf, 4096,
             "{\"name\": \"%s\","
             " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
             " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 2, 2],"
             " \"classes\": 2, \"init_seed\": 7},"
             " \"plan\": {\"learning_rate\": 0.1%s%s},"
             " \"strategy\": {%s},%s%s"
             " \"round\": {%s\"selection_window_ms\": 60000,"
             " \"reporting_deadline_ms\": 30000, \"retry_min_ms\": 1000,"
             " \"retry_max_ms\": 5000%s%s}}",
             name, plan_fields ? ", " : "", plan_fields ? plan_fields : "",
             strategy ? strategy : "\"name\": \"fedavg\"", population_fields ? " " : "",
             population_fields ? population_fields : "",
             round_fields && strstr(round_fields, "\"mode\"") ? "" : "\"mode\": \"sync\", ",
             round_fields ? ", " : "", round_fields ? round_fields : "");
    return buf;
}

void tserver_prepare(tserver *t, const char *populations)
{
    memset(t, 0, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/shoal-it-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->cert, sizeof t->cert, "%s/cert.pem", t->dir);
    snprintf(t->key, sizeof t->key, "%s/key.pem", t->dir);
    snprintf(t->state, sizeof t->state, "%s/state.db", t->dir);
    snprintf(t->config, sizeof t->config, "%s/shoal.json", t->dir);
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_selfsigned_make(t->cert, t->key, "localhost", 30, &ei), SHOAL_OK, "%s",
                 ei.msg);
    FILE *f = fopen(t->config, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "{\"listen\": {\"address\": \"127.0.0.1\", \"port\": 0},\n"
            " \"tls\": {\"cert\": \"cert.pem\", \"key\": \"key.pem\", \"self_signed\": false},\n"
            " \"state\": {\"path\": \"state.db\", \"keep_checkpoints\": 3},\n"
            " \"server\": {\"workers\": 2, \"log_level\": \"warn\"},\n"
            " \"limits\": {\"max_connections\": 256, \"handshake_timeout_ms\": 5000},\n"
            " \"populations\": [%s]}\n",
            populations);
    fclose(f);
    t->endpoint.ca_file = t->cert;
}

static void *serve(void *arg)
{
    tserver *t = arg;
    shoal_err err = shoal_server_run(t->srv);
    if (err)
        fprintf(stderr, "shoal_server_run: %s\n", shoal_strerror(err));
    return NULL;
}

void tserver_start(tserver *t)
{
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_server_config_load(t->config, &t->cfg, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_server_new(t->cfg, &t->srv, &ei), SHOAL_OK, "%s", ei.msg);
    t->endpoint.port = shoal_server_port(t->srv);
    cr_assert_neq(t->endpoint.port, 0);
    cr_assert_eq(pthread_create(&t->thread, NULL, serve, t), 0);
    t->running = 1;
}

void tserver_config_edit(const tserver *t, const char *from, const char *to)
{
    FILE *f = fopen(t->config, "rb");
    cr_assert_not_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    cr_assert_not_null(at, "the config has no '%s'", from);
    f = fopen(t->config, "wb");
    cr_assert_not_null(f);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    fclose(f);
}

void tserver_prepare_one(tserver *t, const char *round_fields)
{
    char *pop = tpop("p", round_fields, NULL);
    tserver_prepare(t, pop);
    free(pop);
}

void tserver_start_one(tserver *t, const char *round_fields)
{
    tserver_prepare_one(t, round_fields);
    tserver_start(t);
}

void tserver_stop(tserver *t)
{
    if (t->running) {
        shoal_server_stop(t->srv);
        pthread_join(t->thread, NULL);
        t->running = 0;
    }
    shoal_server_free(t->srv);
    shoal_server_config_free(t->cfg);
    t->srv = NULL;
    t->cfg = NULL;
}

void tserver_spawn(tserver *t)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* Never outlive a test that failed half-way. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(SHOAL_SERVER_BIN, "shoal-server", "--config", t->config, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    t->pid = pid;
    FILE *f = fdopen(fds[0], "r");
    char line[512];
    unsigned port = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, "listening on wss://127.0.0.1:");
        if (p && sscanf(p, "listening on wss://127.0.0.1:%u", &port) == 1)
            break;
        fputs(line, stderr);
    }
    cr_assert_neq(port, 0u, "shoal-server did not start");
    t->endpoint.port = (uint16_t)port;
    /* Keep draining its stderr so it never blocks on a full pipe. */
    if (fork() == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        while (fgets(line, sizeof line, f))
            fputs(line, stderr);
        _exit(0);
    }
    fclose(f);
}

int tserver_kill(tserver *t, int sig)
{
    int status = 0;
    kill(t->pid, sig);
    waitpid(t->pid, &status, 0);
    t->pid = 0;
    return status;
}

void tserver_cleanup(tserver *t)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", t->dir);
}

void tserver_session(const tserver *t, float delta_scale, uint64_t examples, float *model_out)
{
    enum { PARAMS = 10 }; /* logreg 1x2x2 -> 2 classes */
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t->endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 20000), TDEV_ACCEPTED);
    cr_assert_not_null(d.model);
    if (model_out)
        memcpy(model_out, d.model, PARAMS * sizeof(float));
    if (d.task == SHOAL__TASK_KIND__TASK_KIND_EVALUATE) {
        cr_assert_eq(tdev_report_eval(&d, examples, 0.5, 0.75), 0);
    } else {
        float delta[PARAMS];
        for (int i = 0; i < PARAMS; i++)
            delta[i] = delta_scale * (float)(i + 1);
        cr_assert_eq(tdev_report(&d, delta, PARAMS, examples, 0.1, 1024), 0);
    }
    cr_assert_eq(tdev_await_ack(&d, 20000), TDEV_ACKED);
    cr_assert_eq(d.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tdev_close(&d);
}

char *thttp_get(const tserver *t, const char *path, int *status, size_t *len)
{
    return thttp_get_auth(t, path, NULL, status, len);
}

char *thttp_get_auth(const tserver *t, const char *path, const char *authorization, int *status,
                     size_t *len)
{
    char url[1200], extra[1024] = "";
    if (authorization)
        snprintf(extra, sizeof extra, "-H 'Authorization: %s' ", authorization);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             "--cacert '%s' --resolve localhost:%u:127.0.0.1", t->cert, (unsigned)t->endpoint.port);
    snprintf(url, sizeof url, "https://localhost:%u%s", (unsigned)t->endpoint.port, path);
    return thttp_fetch(t, url, extra, status, len);
}

char *thttp_fetch(const tserver *t, const char *url, const char *extra, int *status, size_t *len)
{
    char out[256], cmd[2560];
    snprintf(out, sizeof out, "%s/http-body", t->dir);
    snprintf(cmd, sizeof cmd, "curl -s -o '%s' -w '%%{http_code}' %s '%s'", out, extra, url);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    if (fscanf(p, "%d", status) != 1)
        *status = 0;
    pclose(p);
    FILE *f = fopen(out, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *body = malloc((size_t)n + 1);
    size_t got = fread(body, 1, (size_t)n, f);
    fclose(f);
    body[got] = '\0';
    if (len)
        *len = got;
    return body;
}

int tstate_latest(const tserver *t, const char *population, float **params, size_t *count,
                  uint64_t *version)
{
    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    if (shoal_state_open(t->state, &st, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s\n", ei.msg);
        return -1;
    }
    int64_t id;
    /* The description must match the server's ("logreg 1x2x2 2", 10). */
    if (shoal_state_population(st, population, "logreg 1x2x2 2", 10, &id, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s\n", ei.msg);
        shoal_state_close(st);
        return -1;
    }
    shoal_checkpoint cp;
    memset(&cp, 0, sizeof cp);
    shoal_err err = shoal_state_latest(st, id, &cp, &ei);
    shoal_state_close(st);
    if (err) {
        fprintf(stderr, "%s\n", ei.msg);
        return -1;
    }
    *params = cp.params;
    *count = cp.param_count;
    *version = cp.version;
    cp.params = NULL;
    shoal_checkpoint_fini(&cp);
    return 0;
}
