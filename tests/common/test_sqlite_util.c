/* What the SQLite databases share: the header that says whose a file is,
 * WAL, rollback. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "shoal/sqlite_util.h"

static sqlite3 *open_temp(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/shoal-sqlite-util-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

static void close_temp(sqlite3 *db, const char *path)
{
    sqlite3_close(db);
    char side[300];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    unlink(path);
}

Test(sqlite_util, a_stamp_is_read_back_from_the_header)
{
    char path[64];
    sqlite3 *db = open_temp(path, sizeof path);
    shoal_sqlite_header h = {.application_id = 7, .user_version = 7, .tables = 7};
    cr_assert_eq(shoal_sqlite_header_read(db, &h), SHOAL_OK);
    cr_assert_eq(h.application_id, 0);
    cr_assert_eq(h.user_version, 0);
    cr_assert_eq(h.tables, 0);
    /* An id with the top bit set reads back as SQLite stores it: signed. */
    cr_assert_eq(shoal_sqlite_stamp(db, 0x80000001u, 3), SHOAL_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t (x); CREATE INDEX i ON t (x)", NULL, NULL, NULL),
                 SQLITE_OK);
    cr_assert_eq(shoal_sqlite_header_read(db, &h), SHOAL_OK);
    cr_assert_eq(h.application_id, (int32_t)0x80000001u);
    cr_assert_eq(h.user_version, 3);
    cr_assert_eq(h.tables, 2);
    close_temp(db, path);
}

Test(sqlite_util, a_file_that_is_not_sqlite_fails_on_the_header)
{
    char path[64];
    sqlite3 *db = open_temp(path, sizeof path);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 64; i++)
        fputs("not a database, ", f);
    fclose(f);
    shoal_sqlite_header h;
    cr_assert_eq(shoal_sqlite_header_read(db, &h), SHOAL_EIO);
    cr_assert_eq(sqlite3_errcode(db), SQLITE_NOTADB, "the reason stays on the connection");
    close_temp(db, path);
}

Test(sqlite_util, wal_is_reported_as_taken_or_refused)
{
    char path[64], mode[SHOAL_SQLITE_MODE_LEN];
    sqlite3 *db = open_temp(path, sizeof path);
    cr_assert_eq(shoal_sqlite_wal(db, 0, mode), SHOAL_OK);
    cr_assert_str_eq(mode, "wal");
    close_temp(db, path);
    /* An in-memory database has no file to keep a WAL beside. */
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    cr_assert_eq(shoal_sqlite_wal(db, 0, mode), SHOAL_OK);
    cr_assert_str_eq(mode, "memory");
    sqlite3_close(db);
}

Test(sqlite_util, rollback_undoes_an_open_transaction_and_is_harmless_without_one)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    shoal_sqlite_rollback(db);
    cr_assert_eq(
        sqlite3_exec(db, "CREATE TABLE t (x); BEGIN; INSERT INTO t VALUES (1)", NULL, NULL, NULL),
        SQLITE_OK);
    shoal_sqlite_rollback(db);
    cr_assert(sqlite3_get_autocommit(db));
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(s, 0), 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

Test(sqlite_util, the_owner_check_takes_new_and_own_files_and_names_the_others)
{
    const shoal_sqlite_owner o = {.application_id = 0x41424344,
                                  .schema_version = 3,
                                  .kind = "a test file",
                                  .schema = "test schema",
                                  .if_foreign = "use another path",
                                  .if_newer = "upgrade"};
    shoal_errinfo ei = {{0}};
    shoal_sqlite_header h = {0};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_OK, "a new, empty file");
    h = (shoal_sqlite_header){.application_id = 0x41424344, .user_version = 2, .tables = 4};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_OK, "an older schema");
    h.user_version = 3;
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_OK, "the same schema");

    h.user_version = 4;
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_EFORMAT);
    cr_assert_str_eq(ei.msg, "f.db: written by a newer Shoal (test schema 4; this one reads up "
                             "to 3): upgrade");

    /* Another program's file, even one with no tables yet, and one with
     * tables but no application_id. */
    h = (shoal_sqlite_header){.application_id = 0x53484f4c, .user_version = 1, .tables = 0};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_EFORMAT);
    cr_assert_str_eq(ei.msg, "f.db: a SQLite database of another application (application_id "
                             "0x53484f4c), not a test file: use another path");
    h = (shoal_sqlite_header){.application_id = 0, .user_version = 0, .tables = 1};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_EFORMAT);
    h = (shoal_sqlite_header){.application_id = -1, .user_version = 0, .tables = 1};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &o, "f.db", &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "0xffffffff"), "%s", ei.msg);

    /* An owner whose id has the top bit set reads back negative. */
    const shoal_sqlite_owner high = {.application_id = 0x80000001u,
                                     .schema_version = 1,
                                     .kind = "k",
                                     .schema = "s",
                                     .if_foreign = "f",
                                     .if_newer = "n"};
    h = (shoal_sqlite_header){.application_id = -2147483647, .user_version = 1, .tables = 2};
    cr_assert_eq(shoal_sqlite_check_owner(&h, &high, "f.db", &ei), SHOAL_OK, "%s", ei.msg);
}
