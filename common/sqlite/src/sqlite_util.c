#include "shoal/sqlite_util.h"

#include <stdio.h>
#include <string.h>

/* The code of the error sqlite3_errcode(db) holds. */
static shoal_err sqlite_err(sqlite3 *db)
{
    return (sqlite3_errcode(db) & 0xff) == SQLITE_NOMEM ? SHOAL_ENOMEM : SHOAL_EIO;
}

static shoal_err query_int(sqlite3 *db, const char *sql, int64_t *value)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return sqlite_err(db);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? SHOAL_OK : sqlite_err(db);
}

shoal_err shoal_sqlite_header_read(sqlite3 *db, shoal_sqlite_header *h)
{
    shoal_err err;
    *h = (shoal_sqlite_header){0};
    if ((err = query_int(db, "PRAGMA application_id", &h->application_id)) ||
        (err = query_int(db, "PRAGMA user_version", &h->user_version)))
        return err;
    return query_int(db, "SELECT count(*) FROM sqlite_master", &h->tables);
}

shoal_err shoal_sqlite_stamp(sqlite3 *db, uint32_t application_id, int user_version)
{
    char stamp[96];
    /* As a signed 32-bit number: what SQLite stores and reads back. */
    snprintf(stamp, sizeof stamp, "PRAGMA application_id=%d; PRAGMA user_version=%d",
             (int32_t)application_id, user_version);
    return sqlite3_exec(db, stamp, NULL, NULL, NULL) == SQLITE_OK ? SHOAL_OK : sqlite_err(db);
}

shoal_err shoal_sqlite_wal(sqlite3 *db, int busy_ms, char mode[SHOAL_SQLITE_MODE_LEN])
{
    mode[0] = '\0';
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, NULL) != SQLITE_OK)
        return sqlite_err(db);
    int rc = sqlite3_step(s);
    for (int waited = 0; (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && waited < busy_ms;
         waited += 10) {
        sqlite3_reset(s);
        sqlite3_sleep(10);
        rc = sqlite3_step(s);
    }
    const char *answer = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
    snprintf(mode, SHOAL_SQLITE_MODE_LEN, "%s", answer ? answer : "?");
    /* sqlite3_finalize repeats the step's error on the connection. */
    shoal_err err = rc == SQLITE_ROW ? SHOAL_OK : SHOAL_EIO;
    sqlite3_finalize(s);
    return err ? sqlite_err(db) : SHOAL_OK;
}

void shoal_sqlite_rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

shoal_err shoal_sqlite_check_owner(const shoal_sqlite_header *h, const shoal_sqlite_owner *o,
                                   const char *path, shoal_errinfo *ei)
{
    /* SQLite keeps the id as a signed 32-bit integer: compare its bits. */
    const uint32_t app_id = (uint32_t)h->application_id;
    if ((h->tables > 0 || app_id != 0) && app_id != o->application_id)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: a SQLite database of another application (application_id "
                                 "0x%08llx), not %s: %s",
                                 path, (unsigned long long)app_id, o->kind, o->if_foreign);
    if (h->user_version > o->schema_version)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: written by a newer Shoal (%s %lld; this one reads up to %d): "
                                 "%s",
                                 path, o->schema, (long long)h->user_version, o->schema_version,
                                 o->if_newer);
    return SHOAL_OK;
}
