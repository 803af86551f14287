#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/state.h"

static char dir[256], db_path[300];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/shoal-state-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(db_path, sizeof db_path, "%s/state.db", dir);
}

static void remove_dir(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(state, .init = make_dir, .fini = remove_dir);

static shoal_state *open_db(void)
{
    shoal_state *st = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_state_open(db_path, &st, &ei), SHOAL_OK, "%s", ei.msg);
    return st;
}

/* The database with population "p" (logreg, 10 parameters). */
static shoal_state *open_pop(int64_t *pop)
{
    shoal_state *st = open_db();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_state_population(st, "p", "logreg", 10, pop, &ei), SHOAL_OK, "%s", ei.msg);
    return st;
}

static shoal_round_record rec(uint64_t round)
{
    shoal_round_record r = {.round = round,
                            .task = 0,
                            .started_ms = 1000 * (int64_t)round,
                            .ended_ms = 1000 * (int64_t)round + 500,
                            .selected = 13,
                            .reported = 10,
                            .dropped = 2,
                            .late = 1,
                            .examples = 6000,
                            .loss = 0.5,
                            .accuracy = NAN};
    return r;
}

/* params[i] = version + i / 1000: a checkpoint's content follows from its
 * version, so a torn write would show. */
static void fill(float *p, size_t n, uint64_t version)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)version + (float)i / 1000.0f;
}

static shoal_err commit(shoal_state *st, int64_t pop, uint64_t version, size_t n)
{
    float *p = malloc(n * sizeof *p), s[2] = {(float)version, -(float)version};
    fill(p, n, version);
    shoal_checkpoint cp = {.version = version,
                           .round = version + 3,
                           .committed_ms = 42,
                           .param_count = n,
                           .params = p,
                           .state_count = 2,
                           .server_state = s,
                           .server_steps = version};
    shoal_round_record r = rec(version + 3);
    shoal_errinfo ei;
    shoal_err err = shoal_state_commit(st, pop, &cp, &r, &ei);
    free(p);
    return err;
}

Test(state, populations_are_created_once_and_keep_their_model)
{
    shoal_state *st = open_db();
    int64_t a, b, c;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "keyboard", "cnn 1x28x28 10", 44426, &a, &ei),
                 SHOAL_OK);
    cr_assert_eq(shoal_state_population(st, "keyboard", "cnn 1x28x28 10", 44426, &b, &ei),
                 SHOAL_OK);
    cr_assert_eq(a, b);
    cr_assert_eq(shoal_state_population(st, "vision", "mlp 1x28x28 10", 199210, &c, &ei), SHOAL_OK);
    cr_assert_neq(a, c);
    cr_assert_eq(shoal_state_population(st, "keyboard", "mlp 1x28x28 10", 199210, &b, &ei),
                 SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "population \"keyboard\" was created for model"));
    cr_assert_not_null(strstr(ei.msg, db_path));
    shoal_state_close(st);
}

Test(state, a_committed_checkpoint_is_loaded_exactly_after_reopening)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "logreg", 100, &pop, &ei), SHOAL_OK);
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_latest(st, pop, &cp, &ei), SHOAL_ENOTFOUND);
    cr_assert_eq(commit(st, pop, 1, 100), SHOAL_OK);
    cr_assert_eq(commit(st, pop, 2, 100), SHOAL_OK);
    cr_assert_eq(commit(st, pop, 2, 100), SHOAL_ESTATE, "versions only go up");
    shoal_state_close(st);

    st = open_db();
    cr_assert_eq(shoal_state_latest(st, pop, &cp, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cp.version, 2);
    cr_assert_eq(cp.round, 5);
    cr_assert_eq(cp.param_count, 100);
    cr_assert_eq(cp.state_count, 2);
    cr_assert_eq(cp.server_steps, 2);
    float want[100];
    fill(want, 100, 2);
    cr_assert_eq(memcmp(cp.params, want, sizeof want), 0);
    cr_assert_float_eq(cp.server_state[1], -2.0f, 0);
    shoal_checkpoint_fini(&cp);
    uint64_t last;
    cr_assert_eq(shoal_state_last_round(st, pop, &last, &ei), SHOAL_OK);
    cr_assert_eq(last, 5);
    shoal_state_close(st);
}

Test(state, rounds_running_at_a_crash_are_marked_interrupted)
{
    int64_t pop;
    shoal_state *st = open_pop(&pop);
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_round_started(st, pop, 1, 0, 100, &ei), SHOAL_OK);
    cr_assert_eq(commit(st, pop, 1, 10), SHOAL_OK); /* round 4 */
    cr_assert_eq(shoal_state_round_started(st, pop, 5, 0, 200, &ei), SHOAL_OK);
    shoal_round_record ab = rec(6);
    cr_assert_eq(shoal_state_round_finished(st, pop, &ab, "abandoned", &ei), SHOAL_OK);
    shoal_state_close(st);
    st = open_db();
    uint64_t n;
    cr_assert_eq(shoal_state_recover(st, pop, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 2, "rounds 1 and 5 were running");
    cr_assert_eq(shoal_state_recover(st, pop, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 0);
    shoal_state_close(st);
}

Test(state, a_killed_writer_leaves_a_complete_latest_checkpoint, .timeout = 120)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "big", 50000, &pop, &ei), SHOAL_OK);
    shoal_state_close(st);
    uint64_t seen = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        pid_t child = fork();
        cr_assert_neq(child, -1);
        if (child == 0) {
            shoal_state *cs = NULL;
            if (shoal_state_open(db_path, &cs, NULL))
                _exit(3);
            for (uint64_t v = seen + 1;; v++)
                if (commit(cs, pop, v, 50000))
                    _exit(4);
        }
        struct timespec ts = {0, (20 + 15 * attempt) * 1000000L};
        nanosleep(&ts, NULL);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        cr_assert(WIFSIGNALED(status), "the writer was killed, not failed (%d)", status);
        st = open_db();
        shoal_checkpoint cp;
        shoal_err err = shoal_state_latest(st, pop, &cp, &ei);
        if (err == SHOAL_ENOTFOUND) { /* killed before its first commit */
            shoal_state_close(st);
            continue;
        }
        cr_assert_eq(err, SHOAL_OK, "%s", ei.msg);
        cr_assert_geq(cp.version, seen);
        float *want = malloc(50000 * sizeof *want);
        fill(want, 50000, cp.version);
        cr_assert_eq(memcmp(cp.params, want, 50000 * sizeof *want), 0, "version %llu intact",
                     (unsigned long long)cp.version);
        free(want);
        seen = cp.version;
        shoal_checkpoint_fini(&cp);
        shoal_state_close(st);
    }
    cr_assert_gt(seen, 0, "some commits completed");
}

Test(state, damaged_checkpoints_are_reported_not_loaded)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 8, &pop, &ei), SHOAL_OK);
    cr_assert_eq(commit(st, pop, 1, 8), SHOAL_OK);
    shoal_state_close(st);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "UPDATE checkpoint SET params = zeroblob(32)", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    st = open_db();
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_latest(st, pop, &cp, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "checkpoint version 1 is damaged"), "%s", ei.msg);
    shoal_state_close(st);
}

Test(state, foreign_and_newer_files_are_refused_with_the_path)
{
    shoal_state *st = NULL;
    shoal_errinfo ei;
    FILE *f = fopen(db_path, "wb");
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    cr_assert_eq(shoal_state_open(db_path, &st, &ei), SHOAL_EFORMAT);
    cr_assert_null(st);
    cr_assert_not_null(strstr(ei.msg, db_path));
    cr_assert_not_null(strstr(ei.msg, "not a Shoal state database"), "%s", ei.msg);
    remove(db_path);

    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE photos (id INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(shoal_state_open(db_path, &st, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "another application"), "%s", ei.msg);
    remove(db_path);

    st = open_db();
    shoal_state_close(st);
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(shoal_state_open(db_path, &st, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "newer Shoal"), "%s", ei.msg);

    cr_assert_eq(shoal_state_open("/nonexistent-dir/state.db", &st, &ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, "/nonexistent-dir/state.db"));
}

Test(state, prune_keeps_the_newest_checkpoints)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 4, &pop, &ei), SHOAL_OK);
    for (uint64_t v = 1; v <= 5; v++)
        cr_assert_eq(commit(st, pop, v, 4), SHOAL_OK);
    cr_assert_eq(shoal_state_prune(st, pop, 2, &ei), SHOAL_OK);
    cr_assert_eq(shoal_state_prune(st, pop, 0, &ei), SHOAL_EINVAL);
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_latest(st, pop, &cp, &ei), SHOAL_OK);
    cr_assert_eq(cp.version, 5);
    shoal_checkpoint_fini(&cp);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    cr_assert_eq(
        sqlite3_prepare_v2(db, "SELECT count(*), min(version) FROM checkpoint", -1, &s, NULL),
        SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(s, 0), 2);
    cr_assert_eq(sqlite3_column_int(s, 1), 4);
    sqlite3_finalize(s);
    sqlite3_close(db);
    shoal_state_close(st);
}

Test(state, allocation_failures_are_reported_and_leak_nothing)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 16, &pop, &ei), SHOAL_OK);
    cr_assert_eq(commit(st, pop, 1, 16), SHOAL_OK);
    for (long k = 0;; k++) {
        shoal_failalloc_install(k);
        shoal_checkpoint cp;
        shoal_err err = shoal_state_latest(st, pop, &cp, &ei);
        if (!err)
            shoal_checkpoint_fini(&cp);
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0);
        if (!err)
            break;
        cr_assert_eq(err, SHOAL_ENOMEM);
        cr_assert_lt(k, 10);
    }
    shoal_state_close(st);
}

static int64_t column_or(sqlite3 *db, const char *sql, int64_t null_value)
{
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
    int64_t v = sqlite3_column_type(s, 0) == SQLITE_NULL ? null_value : sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* A schema-1 file mixed Unix ms with the monotonic clock in round times.
 * Opening it converts a monotonic value with the anchor of the checkpoint
 * committed for the same round and makes one without an anchor NULL; Unix
 * values stay. (W is any Unix time: nothing here depends on today.) */
Test(state, schema_1_round_times_are_migrated_to_unix_ms)
{
    const int64_t W = 1700000000000;
    int64_t pop;
    shoal_state *st = open_pop(&pop);
    shoal_state_close(st);

    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "INSERT INTO round (population, number, task, status, started_ms, ended_ms) VALUES "
             "(%1$lld, 1, 0, 'committed', 1000, 5000),"     /* monotonic, anchored */
             "(%1$lld, 2, 0, 'abandoned', %2$lld, 9000),"   /* Unix start, monotonic end */
             "(%1$lld, 3, 1, 'evaluated', 10000, 12000),"   /* no anchor */
             "(%1$lld, 4, 0, 'running', %3$lld, 0),"        /* not ended */
             "(%1$lld, 5, 0, 'committed', %4$lld, %5$lld)," /* Unix already */
             "(%1$lld, 6, 0, 'committed', 20000, 25000);"   /* its anchor is no Unix time */
             "INSERT INTO checkpoint VALUES (%1$lld, 1, 1, %6$lld, x'00000000', 0, x'', 0, 0),"
             "(%1$lld, 2, 6, 42, x'00000000', 0, x'', 0, 0);"
             "PRAGMA user_version = 1",
             (long long)pop, (long long)(W + 100000), (long long)(W + 200000),
             (long long)(W + 300000), (long long)(W + 301000), (long long)W);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);

    for (int open = 0; open < 2; open++) { /* the second open finds nothing to migrate */
        st = open_db();
        shoal_state_close(st);
        cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        cr_assert_eq(column_or(db, "PRAGMA user_version", -1), 3);
        const struct {
            int number;
            int64_t started, ended; /* -1: NULL */
        } want[] = {{1, W - 4000, W},    {2, W + 100000, -1},         {3, -1, -1},
                    {4, W + 200000, -1}, {5, W + 300000, W + 301000}, {6, -1, -1}};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            char q[128];
            snprintf(q, sizeof q, "SELECT started_ms FROM round WHERE number = %d", want[i].number);
            cr_assert_eq(column_or(db, q, -1), want[i].started, "round %d started_ms",
                         want[i].number);
            snprintf(q, sizeof q, "SELECT ended_ms FROM round WHERE number = %d", want[i].number);
            cr_assert_eq(column_or(db, q, -1), want[i].ended, "round %d ended_ms", want[i].number);
        }
        sqlite3_close(db);
    }
}

/* A graceful stop closes every running round, with its end time. */
Test(state, close_running_marks_every_running_round_with_its_end)
{
    int64_t pop;
    shoal_state *st = open_pop(&pop);
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_round_started(st, pop, 1, 0, 1700000000000, &ei), SHOAL_OK);
    cr_assert_eq(shoal_state_round_started(st, pop, 2, 0, 1700000001000, &ei), SHOAL_OK);
    uint64_t n = 0;
    cr_assert_eq(shoal_state_close_running(st, pop, "abandoned", 1700000002000, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(shoal_state_close_running(st, pop, "abandoned", 1700000003000, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 0, "nothing is left running");
    shoal_state_close(st);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(column_or(db,
                           "SELECT count(*) FROM round WHERE status = 'abandoned' AND "
                           "ended_ms = 1700000002000",
                           -1),
                 2);
    sqlite3_close(db);
}

/* ---- differential privacy --------------------------------------------------------- */

static shoal_err commit_dp(shoal_state *st, int64_t pop, uint64_t version, const uint8_t *acc,
                           size_t len, double epsilon)
{
    float p[8];
    fill(p, 8, version);
    shoal_checkpoint cp = {.version = version,
                           .round = version + 3,
                           .committed_ms = 42,
                           .param_count = 8,
                           .params = p};
    shoal_round_record r = rec(version + 3);
    shoal_dp_record dp = {.accountant = acc,
                          .accountant_len = len,
                          .steps = version,
                          .epsilon = epsilon,
                          .delta = 1e-5};
    shoal_errinfo ei;
    return shoal_state_commit_dp(st, pop, &cp, &r, &dp, &ei);
}

Test(state, the_privacy_accountant_is_committed_with_its_checkpoint_and_survives_reopening)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 8, &pop, &ei), SHOAL_OK);
    const uint8_t one[5] = {1, 2, 3, 4, 5}, two[3] = {9, 8, 7};
    cr_assert_eq(commit_dp(st, pop, 1, one, sizeof one, 0.5), SHOAL_OK);
    cr_assert_eq(commit_dp(st, pop, 2, two, sizeof two, 0.75), SHOAL_OK);
    /* A refused commit stores no privacy record either. */
    const uint8_t stale[2] = {6, 6};
    cr_assert_eq(commit_dp(st, pop, 2, stale, sizeof stale, 9), SHOAL_ESTATE);
    shoal_state_close(st);

    st = open_db();
    uint8_t buf[16];
    shoal_dp_record dp;
    cr_assert_eq(shoal_state_dp_load(st, pop, 2, buf, sizeof buf, &dp, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(dp.accountant_len, sizeof two);
    cr_assert_eq(memcmp(dp.accountant, two, sizeof two), 0);
    cr_assert_eq(dp.steps, 2);
    cr_assert_eq(dp.epsilon, 0.75);
    cr_assert_eq(dp.delta, 1e-5);
    cr_assert_eq(shoal_state_dp_load(st, pop, 1, buf, sizeof buf, &dp, &ei), SHOAL_OK);
    cr_assert_eq(memcmp(dp.accountant, one, sizeof one), 0);
    cr_assert_eq(shoal_state_dp_load(st, pop, 3, buf, sizeof buf, &dp, &ei), SHOAL_ENOTFOUND);
    cr_assert_eq(shoal_state_dp_load(st, pop, 1, buf, 4, &dp, &ei), SHOAL_EFORMAT,
                 "5 bytes do not fit 4");
    /* A commit without DP leaves no record. */
    cr_assert_eq(commit(st, pop, 3, 8), SHOAL_OK);
    cr_assert_eq(shoal_state_dp_load(st, pop, 3, buf, sizeof buf, &dp, &ei), SHOAL_ENOTFOUND);
    shoal_state_close(st);
}

Test(state, a_damaged_privacy_accountant_is_reported_not_loaded)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 8, &pop, &ei), SHOAL_OK);
    const uint8_t acc[4] = {1, 2, 3, 4};
    cr_assert_eq(commit_dp(st, pop, 1, acc, sizeof acc, 0.5), SHOAL_OK);
    shoal_state_close(st);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "UPDATE dp_round SET accountant = x'01020305'", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    st = open_db();
    uint8_t buf[16];
    shoal_dp_record dp;
    cr_assert_eq(shoal_state_dp_load(st, pop, 1, buf, sizeof buf, &dp, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "privacy accountant of checkpoint version 1 is damaged"),
                       "%s", ei.msg);
    shoal_state_close(st);
}

/* Adaptive clipping: the round's clip, the noised unclipped fraction and
 * the next round's clip are committed with the accountant; a fixed clip
 * stores no fraction and no next clip. */
Test(state, the_clip_is_committed_with_the_accountant_and_survives_reopening)
{
    shoal_state *st = open_db();
    int64_t pop;
    shoal_errinfo ei;
    cr_assert_eq(shoal_state_population(st, "p", "m", 8, &pop, &ei), SHOAL_OK);
    const uint8_t acc[3] = {1, 2, 3};
    float p[8];
    fill(p, 8, 1);
    shoal_checkpoint cp = {
        .version = 1, .round = 4, .committed_ms = 42, .param_count = 8, .params = p};
    shoal_round_record r = rec(4);
    shoal_dp_record dp = {.accountant = acc,
                          .accountant_len = sizeof acc,
                          .steps = 1,
                          .epsilon = 0.5,
                          .delta = 1e-5,
                          .clip = 0.25,
                          .unclipped_fraction = -0.125, /* noised: may leave [0, 1] */
                          .next_clip = 0.3125};
    cr_assert_eq(shoal_state_commit_dp(st, pop, &cp, &r, &dp, &ei), SHOAL_OK, "%s", ei.msg);
    fill(p, 8, 2);
    cp.version = 2;
    cp.round = r.round = 5;
    dp.clip = 2.0;
    dp.unclipped_fraction = 0.5;
    dp.next_clip = 0; /* a fixed clip */
    cr_assert_eq(shoal_state_commit_dp(st, pop, &cp, &r, &dp, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_state_close(st);

    st = open_db();
    uint8_t buf[16];
    shoal_dp_record got;
    cr_assert_eq(shoal_state_dp_load(st, pop, 1, buf, sizeof buf, &got, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(got.clip, 0.25);
    cr_assert_eq(got.unclipped_fraction, -0.125);
    cr_assert_eq(got.next_clip, 0.3125);
    cr_assert_eq(shoal_state_dp_load(st, pop, 2, buf, sizeof buf, &got, &ei), SHOAL_OK);
    cr_assert_eq(got.clip, 2.0);
    cr_assert(isnan(got.unclipped_fraction), "no fraction without adaptive clipping");
    cr_assert_eq(got.next_clip, 0);
    shoal_state_close(st);
}

/* A schema-2 file's dp_round gains the clip columns; its rows load with
 * no clip recorded. */
Test(state, schema_2_privacy_rows_gain_the_clip_columns)
{
    int64_t pop;
    shoal_state *st = open_pop(&pop);
    shoal_state_close(st);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    char sql[1024];
    /* The table as schema 2 made it, with one row (crc32 of 01 02 03). */
    snprintf(sql, sizeof sql,
             "DROP TABLE dp_round;"
             "CREATE TABLE dp_round (population INTEGER NOT NULL REFERENCES population(id),"
             "  number INTEGER NOT NULL, version INTEGER NOT NULL, steps INTEGER NOT NULL,"
             "  epsilon REAL NOT NULL, delta REAL NOT NULL, accountant BLOB NOT NULL,"
             "  accountant_crc INTEGER NOT NULL, PRIMARY KEY (population, number));"
             "INSERT INTO dp_round VALUES (%lld, 4, 1, 1, 0.5, 1e-5, x'010203', %u);"
             "PRAGMA user_version = 2",
             (long long)pop, 0x55bc801du);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    for (int open = 0; open < 2; open++) { /* the second open finds nothing to migrate */
        st = open_db();
        uint8_t buf[16];
        shoal_dp_record got;
        shoal_errinfo ei;
        cr_assert_eq(shoal_state_dp_load(st, pop, 1, buf, sizeof buf, &got, &ei), SHOAL_OK, "%s",
                     ei.msg);
        cr_assert_eq(got.steps, 1u);
        cr_assert_eq(got.clip, 0);
        cr_assert_eq(got.next_clip, 0);
        shoal_state_close(st);
        cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        cr_assert_eq(column_or(db, "PRAGMA user_version", -1), 3);
        cr_assert_eq(column_or(db,
                               "SELECT count(*) FROM pragma_table_info('dp_round') WHERE name IN "
                               "('clip', 'unclipped_fraction', 'next_clip')",
                               -1),
                     3);
        sqlite3_close(db);
    }
}
