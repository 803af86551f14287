/* The shoal-server binary killed and restarted: the last committed
 * checkpoint comes back bit for bit and training continues. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#include "harness.h"
#include "shoal/alloc.h"

#define PARAMS 10

/* The latest checkpoint once it reaches version `want` (the coordinator
 * commits right after acknowledging the last report, so poll briefly). */
static uint64_t latest(const tserver *t, uint64_t want, float *out)
{
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    for (int tries = 0; tries < 500; tries++) {
        shoal_free(params);
        params = NULL;
        if (tstate_latest(t, "p", &params, &count, &version) == 0 && version >= want)
            break;
        sleep_ms(20);
    }
    cr_assert_not_null(params);
    cr_assert_eq(count, (size_t)PARAMS);
    memcpy(out, params, PARAMS * sizeof(float));
    shoal_free(params);
    return version;
}

Test(restart, kill_9_mid_round_then_restart_continues_from_the_checkpoint)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);

    float initial[PARAMS], v1[PARAMS];
    tserver_session(&t, 0.125f, 10, initial);
    cr_assert_eq(latest(&t, 1, v1), 1u);
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(v1[i], initial[i] + 0.125f * (float)(i + 1), 1e-6);

    /* A device joins round 2 and is training when the server dies. */
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 20000), TDEV_ACCEPTED);
    cr_assert_arr_eq(d.model, v1, sizeof v1, "round 2 must start from version 1");
    int status = tserver_kill(&t, SIGKILL);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    tdev_close(&d);

    /* Restart: version 1 is served bit for bit, and training goes on. */
    tserver_spawn(&t);
    float served[PARAMS];
    tserver_session(&t, -0.5f, 3, served);
    cr_assert_eq(memcmp(served, v1, sizeof v1), 0, "restarted server lost version 1");
    float v2[PARAMS];
    cr_assert_eq(latest(&t, 2, v2), 2u);
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(v2[i], v1[i] - 0.5f * (float)(i + 1), 1e-6);
    status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    tserver_cleanup(&t);
}

Test(restart, sigterm_stops_cleanly_and_abandons_the_open_round)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 2, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);
    /* One device waits in selection (the round needs two). */
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    sleep_ms(300);
    int status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    /* The device learns the server went away. */
    enum tdev_result r = tdev_await_config(&d, 5000);
    cr_assert(r == TDEV_CLOSED || r == TDEV_ABORTED || r == TDEV_ERROR, "result %d", r);
    tdev_close(&d);
    /* Nothing was committed; a restart still serves the initial model. */
    tserver_spawn(&t);
    tdev a, b;
    cr_assert_eq(tdev_connect(&a, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&a, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_connect(&b, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&b, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&a, 20000), TDEV_ACCEPTED);
    cr_assert_eq(tdev_await_config(&b, 20000), TDEV_ACCEPTED);
    cr_assert_eq(a.round, 2u, "round numbers continue after the abandoned round 1");
    tdev_close(&a);
    tdev_close(&b);
    status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    tserver_cleanup(&t);
}

/* SIGKILL while the round's last report is being acknowledged and
 * committed: whatever the timing, the restarted server loads an intact
 * checkpoint (CRC-checked) and serves exactly what the database holds. */
Test(restart, kill_9_during_the_commit_leaves_an_intact_checkpoint)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    for (int attempt = 0; attempt < 3; attempt++) {
        tserver_spawn(&t);
        tdev d;
        cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
        cr_assert_eq(tdev_await_config(&d, 20000), TDEV_ACCEPTED);
        float delta[PARAMS];
        for (int i = 0; i < PARAMS; i++)
            delta[i] = 0.25f * (float)(attempt + 1);
        cr_assert_eq(tdev_report(&d, delta, PARAMS, 5, 0.1, 1024), 0);
        /* Kill at a different moment each time: at once, then a little later. */
        sleep_ms(attempt * 2);
        int status = tserver_kill(&t, SIGKILL);
        cr_assert(WIFSIGNALED(status));
        tdev_close(&d);
    }
    tserver_spawn(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    int have = tstate_latest(&t, "p", &params, &count, &version) == 0;
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 20000), TDEV_ACCEPTED);
    if (have) {
        cr_assert_leq(version, 3u);
        cr_assert_eq(memcmp(d.model, params, sizeof(float) * PARAMS), 0,
                     "served model differs from checkpoint version %llu",
                     (unsigned long long)version);
        shoal_free(params);
    }
    tdev_close(&d);
    int status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    tserver_cleanup(&t);
}

/* A commit the state database refuses (here: another process holds its
 * write lock past the server's 5 s busy timeout) halts the population:
 * the uncommitted model is not published, devices are turned away, and
 * /healthz says why, until a restart resumes from the last durable
 * version. */
Test(restart, a_failed_commit_halts_the_population_until_a_restart, .timeout = 180)
{
    tserver t;
    char *pop =
        tpop("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false", NULL);
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);
    float initial[PARAMS], v1[PARAMS], seen[PARAMS];
    tserver_session(&t, 0.125f, 10, initial);
    cr_assert_eq(latest(&t, 1, v1), 1u);

    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(t.state, &db), SQLITE_OK);
    /* The server may be writing at this moment (round 2's start): wait for
     * its short transaction rather than fail on it. */
    sqlite3_busy_timeout(db, 30000);
    cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    /* Round 2's report is acknowledged; its commit cannot happen. */
    tserver_session(&t, 0.25f, 10, seen);
    cr_assert_arr_eq(seen, v1, sizeof v1);
    int status = 0;
    char *body = NULL;
    for (int tries = 0; tries < 150 && status != 503; tries++) {
        free(body);
        body = thttp_get(&t, "/healthz", &status, NULL);
        if (status != 503)
            sleep_ms(100);
    }
    cr_assert_eq(status, 503, "the population did not halt: %s", body ? body : "(no body)");
    cr_assert(strstr(body, "population 'p' halted") && strstr(body, "version 2") &&
                  strstr(body, "last durable version is 1"),
              "%s", body);
    free(body);
    body = thttp_get(&t, "/metrics", &status, NULL);
    cr_assert(body && strstr(body, "shoal_population_halted{population=\"p\"} 1"), "%s", body);
    cr_assert(strstr(body, "shoal_model_version{population=\"p\"} 1\n"), "%s", body);
    free(body);
    size_t len = 0;
    body = thttp_get(&t, "/v1/populations/p/model", &status, &len);
    cr_assert_eq(status, 200);
    cr_assert_eq(len, sizeof v1);
    cr_assert_arr_eq(body, v1, sizeof v1, "a model that is not durable was published");
    free(body);

    /* Devices are turned away, also once the lock is gone: fail-stop. */
    tdev d;
    cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
    cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
    cr_assert_eq(tdev_await_config(&d, 20000), TDEV_REJECTED);
    cr_assert_eq(d.reason, SHOAL__REASON__REASON_INTERNAL);
    cr_assert(strstr(d.detail, "halted"), "%s", d.detail);
    tdev_close(&d);
    cr_assert_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    body = thttp_get(&t, "/healthz", &status, NULL);
    cr_assert_eq(status, 503, "%s", body);
    free(body);

    /* A restart resumes from version 1 and trains on. */
    int ws = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "shoal-server exit status %d", ws);
    tserver_spawn(&t);
    body = thttp_get(&t, "/healthz", &status, NULL);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    tserver_session(&t, 0.5f, 10, seen);
    cr_assert_arr_eq(seen, v1, sizeof v1, "the restart did not resume from version 1");
    float v2[PARAMS];
    cr_assert_eq(latest(&t, 2, v2), 2u);
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(v2[i], v1[i] + 0.5f * (float)(i + 1), 1e-6);
    tserver_kill(&t, SIGTERM);
    tserver_cleanup(&t);
}
