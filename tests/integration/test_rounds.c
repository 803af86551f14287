/* The state database's round table as an operator reads it: times on one
 * clock, and no round left "running" by a stop. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

typedef struct round_row {
    int64_t number;
    int64_t started_ms, ended_ms; /* -1: NULL */
    char status[16];
} round_row;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t unix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The rounds of the state database, in the order of the operations guide's
 * query (newest start last here: ORDER BY started_ms, number). */
static int read_rounds(const tserver *t, round_row *rows, int cap)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(t->state, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT number, coalesce(started_ms, -1), "
                                    "coalesce(ended_ms, -1), status FROM round "
                                    "ORDER BY started_ms, number",
                                    -1, &s, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    int n = 0;
    while (sqlite3_step(s) == SQLITE_ROW && n < cap) {
        rows[n].number = sqlite3_column_int64(s, 0);
        rows[n].started_ms = sqlite3_column_int64(s, 1);
        rows[n].ended_ms = sqlite3_column_int64(s, 2);
        snprintf(rows[n].status, sizeof rows[n].status, "%s", sqlite3_column_text(s, 3));
        n++;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* Training and evaluation rounds, before and after a restart, record their
 * start and end in Unix ms: ordered by started_ms they come in round
 * order, and every time lies within the test's own run. */
Test(rounds, rounds_order_by_started_ms_as_by_number_across_a_restart)
{
    const int64_t before = unix_now_ms();
    tserver t;
    tserver_start_one(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false, "
                          "\"eval_every\": 1, \"eval_goal_count\": 1");
    tserver_session(&t, 0.125f, 10, NULL); /* train */
    tserver_session(&t, 0.0f, 10, NULL);   /* evaluate the new version */
    tserver_stop(&t);
    tserver_start(&t);
    tserver_session(&t, 0.25f, 10, NULL);
    tserver_session(&t, 0.0f, 10, NULL);
    tserver_stop(&t);
    const int64_t after = unix_now_ms();

    round_row rows[16];
    int n = read_rounds(&t, rows, 16);
    cr_assert_geq(n, 4, "%d rounds recorded", n);
    for (int i = 0; i < n; i++) {
        const round_row *r = &rows[i];
        cr_assert(r->started_ms >= before && r->started_ms <= after,
                  "round %lld (%s): started_ms %lld is not Unix ms within [%lld, %lld]",
                  (long long)r->number, r->status, (long long)r->started_ms, (long long)before,
                  (long long)after);
        cr_assert(r->ended_ms >= r->started_ms && r->ended_ms <= after,
                  "round %lld (%s): ended_ms %lld, started_ms %lld", (long long)r->number,
                  r->status, (long long)r->ended_ms, (long long)r->started_ms);
        if (i > 0)
            cr_assert_gt(r->number, rows[i - 1].number,
                         "by started_ms round %lld (%s) comes after round %lld (%s)",
                         (long long)r->number, r->status, (long long)rows[i - 1].number,
                         rows[i - 1].status);
    }
    tserver_cleanup(&t);
}

/* SIGTERM while round n reports and, pipelined, round n + 1 selects:
 * every open round is recorded as abandoned, at every stop. */
Test(rounds, sigterm_with_pipelining_leaves_no_round_running)
{
    tserver t;
    tserver_prepare_one(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": true");
    for (int stop = 0; stop < 3; stop++) {
        tserver_spawn(&t);
        tdev reporting, selecting;
        cr_assert_eq(tdev_connect(&reporting, &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&reporting, "p", TEST_SECRET, 0, NULL, 0), 0);
        cr_assert_eq(tdev_await_config(&reporting, 20000), TDEV_ACCEPTED);
        cr_assert_eq(tdev_connect(&selecting, &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&selecting, "p", TEST_SECRET, 0, NULL, 0), 0);
        /* The pipelined round is selecting once the database says so. */
        round_row rows[16];
        int running = 0;
        for (int tries = 0; tries < 500 && running < 2; tries++) {
            running = 0;
            int n = read_rounds(&t, rows, 16);
            for (int i = 0; i < n; i++)
                running += strcmp(rows[i].status, "running") == 0;
            if (running < 2)
                sleep_ms(20);
        }
        cr_assert_eq(running, 2, "stop %d: rounds %llu and %llu should both be running", stop,
                     (unsigned long long)reporting.round, (unsigned long long)reporting.round + 1);
        int status = tserver_kill(&t, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        tdev_close(&reporting);
        tdev_close(&selecting);

        int n = read_rounds(&t, rows, 16);
        cr_assert_eq(n, 2 * (stop + 1), "stop %d: %d rounds recorded", stop, n);
        for (int i = 0; i < n; i++)
            cr_assert_str_eq(rows[i].status, "abandoned", "stop %d: round %lld is %s", stop,
                             (long long)rows[i].number, rows[i].status);
    }
    tserver_cleanup(&t);
}
