/* The state database's round table as an operator reads it: times on one
 * clock, and no round left "running" by a stop. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

typedef struct round_row {
    int64_t number;
    int64_t started_ms, ended_ms; /* -1: NULL */
    char status[16];
} round_row;

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
