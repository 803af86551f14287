/* The client's own state database: persisted retry windows, contribution
 * times, daily traffic, the operational log, saved uploads and the TLS
 * session to resume (see state_int.h). Small writes, one statement each: SQLite's autocommit
 * makes each atomic. */
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/sqlite_util.h"

#include "state_int.h"

#define SCHEMA_VERSION 1
/* "SHDS": tells the device state from an example store ("SHEX") or the
 * server's state ("SHOL"). */
#define APPLICATION_ID  0x53484453
#define BUSY_TIMEOUT_MS 5000

static const char schema[] = "CREATE TABLE IF NOT EXISTS population ("
                             "  name TEXT PRIMARY KEY,"
                             "  next_checkin_unix_ms INTEGER NOT NULL DEFAULT 0,"
                             "  last_contribution_unix_ms INTEGER NOT NULL DEFAULT 0);"
                             "CREATE TABLE IF NOT EXISTS traffic ("
                             "  day INTEGER PRIMARY KEY,"
                             "  bytes_down INTEGER NOT NULL DEFAULT 0,"
                             "  bytes_up INTEGER NOT NULL DEFAULT 0);"
                             "CREATE TABLE IF NOT EXISTS event ("
                             "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  unix_ms INTEGER NOT NULL,"
                             "  kind INTEGER NOT NULL,"
                             "  population TEXT NOT NULL,"
                             "  bytes INTEGER NOT NULL,"
                             "  duration_ms INTEGER NOT NULL,"
                             "  example_count INTEGER NOT NULL,"
                             "  status INTEGER NOT NULL,"
                             "  detail TEXT NOT NULL);"
                             "CREATE INDEX IF NOT EXISTS event_by_time ON event (unix_ms);"
                             /* Added in 0.4, so older files gain it on
                              * open; older SDKs ignore it. */
                             "CREATE TABLE IF NOT EXISTS saved_upload ("
                             "  population TEXT PRIMARY KEY,"
                             "  session BLOB NOT NULL,"
                             "  checkpoint BLOB NOT NULL,"
                             "  round INTEGER NOT NULL,"
                             "  example_count INTEGER NOT NULL,"
                             "  loss REAL NOT NULL,"
                             "  accuracy REAL NOT NULL,"
                             "  deadline_unix_ms INTEGER NOT NULL,"
                             "  sealed INTEGER NOT NULL,"
                             "  payload BLOB NOT NULL,"
                             "  unclipped INTEGER);"
                             /* Added in 0.4, likewise. */
                             "CREATE TABLE IF NOT EXISTS tls_session ("
                             "  peer TEXT PRIMARY KEY,"
                             "  saved_unix_ms INTEGER NOT NULL,"
                             "  sealed INTEGER NOT NULL,"
                             "  session BLOB NOT NULL);";

/* Added in 0.4 with adaptive clipping: a saved_upload made before gains the
 * column on open (NULL: no bit). The schema version stays, so older SDKs,
 * which name their columns, still read and write the file. */
static const char add_unclipped[] = "ALTER TABLE saved_upload ADD COLUMN unclipped INTEGER";

static shoal_err db_error(shoal_devc_db *d, shoal_errinfo *ei, const char *doing)
{
    int code = d->db ? sqlite3_errcode(d->db) & 0xff : SQLITE_CANTOPEN;
    const char *what = d->db ? sqlite3_errmsg(d->db) : "cannot open";
    if (code == SQLITE_NOMEM)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: %s: out of memory", d->path, doing);
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return shoal_errinfo_set(ei, SHOAL_EAGAIN,
                                 "%s: %s: %s (another client holds the device state locked; "
                                 "try again later)",
                                 d->path, doing, what);
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: %s: %s: the file is damaged or not a Shoal device state; "
                                 "it holds nothing that cannot be rebuilt: delete it",
                                 d->path, doing, what);
    return shoal_errinfo_set(ei, SHOAL_EIO, "%s: %s: %s", d->path, doing, what);
}

static shoal_err exec(shoal_devc_db *d, const char *sql, shoal_errinfo *ei, const char *doing)
{
    if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(d, ei, doing);
    return SHOAL_OK;
}

static shoal_err prepare(shoal_devc_db *d, const char *sql, sqlite3_stmt **s, shoal_errinfo *ei)
{
    if (sqlite3_prepare_v2(d->db, sql, -1, s, NULL) != SQLITE_OK) {
        *s = NULL;
        return db_error(d, ei, "cannot prepare a statement");
    }
    return SHOAL_OK;
}

/* Steps a statement that returns no rows and finalizes it. */
static shoal_err run(shoal_devc_db *d, sqlite3_stmt *s, shoal_errinfo *ei, const char *doing)
{
    shoal_err err = sqlite3_step(s) == SQLITE_DONE ? SHOAL_OK : db_error(d, ei, doing);
    sqlite3_finalize(s);
    return err;
}

/* Steps a statement to its first row, if any, reads its two integer
 * columns (left as they were when there is no row) and finalizes it. */
static shoal_err two_ints(shoal_devc_db *d, sqlite3_stmt *s, int64_t *first, int64_t *second,
                          shoal_errinfo *ei, const char *doing)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *first = sqlite3_column_int64(s, 0);
        *second = sqlite3_column_int64(s, 1);
    }
    shoal_err err = rc == SQLITE_ROW || rc == SQLITE_DONE ? SHOAL_OK : db_error(d, ei, doing);
    sqlite3_finalize(s);
    return err;
}

/* PRAGMA table_info rather than the pragma_table_info() function, which
 * SQLite builds before 3.16 (some still on devices) lack. */
static shoal_err column_exists(shoal_devc_db *d, const char *table, const char *column, int *exists,
                               shoal_errinfo *ei)
{
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *s;
    shoal_err err = prepare(d, sql, &s, ei);
    if (err)
        return err;
    *exists = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (name && strcmp(name, column) == 0)
            *exists = 1;
    }
    if (rc != SQLITE_DONE)
        err = db_error(d, ei, "cannot read the schema");
    sqlite3_finalize(s);
    return err;
}

static shoal_err trim(shoal_devc_db *d, int64_t now_unix_ms, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d, "DELETE FROM event WHERE unix_ms < ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, now_unix_ms - d->max_age_ms);
    if ((err = run(d, s, ei, "cannot trim the log by age")))
        return err;
    err = prepare(d, "DELETE FROM event WHERE id <= (SELECT max(id) FROM event) - ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, d->max_rows);
    if ((err = run(d, s, ei, "cannot trim the log by rows")))
        return err;
    /* Traffic older than a week is of no use to a daily budget. */
    err = prepare(d, "DELETE FROM traffic WHERE day < ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, now_unix_ms / SHOAL_DEVC_DAY_MS - 7);
    return run(d, s, ei, "cannot trim the traffic counts");
}

static const shoal_sqlite_owner state_owner = {
    .application_id = APPLICATION_ID,
    .schema_version = SCHEMA_VERSION,
    .kind = "a Shoal device state",
    .schema = "device state schema",
    .if_foreign = "give state_path a file of its own (not the example store)",
    .if_newer = "update the SDK or delete the file",
};

static shoal_err setup(shoal_devc_db *d, shoal_errinfo *ei)
{
    shoal_sqlite_header h;
    if (shoal_sqlite_header_read(d->db, &h))
        return db_error(d, ei, "cannot read the database header");
    shoal_err err = shoal_sqlite_check_owner(&h, &state_owner, d->path, ei);
    if (err)
        return err;
    char mode[SHOAL_SQLITE_MODE_LEN];
    if (shoal_sqlite_wal(d->db, 0, mode))
        return db_error(d, ei, "cannot enable WAL");
    if (sqlite3_stricmp(mode, "wal") != 0)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "%s: the database refused WAL mode (\"%s\"): keep the device "
                                 "state on a local file system",
                                 d->path, mode);
    /* NORMAL is durable enough here: a lost last row costs one early
     * check-in or one log line, never consistency (WAL). */
    if ((err = exec(d, "PRAGMA synchronous=NORMAL", ei, "cannot configure the database")) ||
        (err = exec(d, "BEGIN IMMEDIATE", ei, "cannot start a write transaction")))
        return err;
    int has_unclipped = 0;
    if (!(err = exec(d, schema, ei, "cannot create the schema")) &&
        !(err = column_exists(d, "saved_upload", "unclipped", &has_unclipped, ei)) &&
        !has_unclipped)
        err = exec(d, add_unclipped, ei, "cannot add a column to the saved uploads");
    if (!err && shoal_sqlite_stamp(d->db, APPLICATION_ID, SCHEMA_VERSION))
        err = db_error(d, ei, "cannot stamp the schema");
    if (!err)
        err = exec(d, "COMMIT", ei, "cannot commit the schema");
    if (err)
        shoal_sqlite_rollback(d->db);
    return err;
}

shoal_err shoal_devc_db_open(shoal_devc_db *d, const char *path, int64_t now_unix_ms,
                             shoal_errinfo *ei)
{
    d->path = path;
    int rc = sqlite3_open_v2(
        path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    shoal_err err = SHOAL_OK;
    if (rc != SQLITE_OK)
        err = db_error(d, ei, "cannot open the device state");
    if (!err) {
        sqlite3_busy_timeout(d->db, BUSY_TIMEOUT_MS);
        err = setup(d, ei);
    }
    if (!err)
        err = trim(d, now_unix_ms, ei);
    if (err)
        shoal_devc_db_close(d);
    return err;
}

void shoal_devc_db_close(shoal_devc_db *d)
{
    if (d->db)
        sqlite3_close_v2(d->db);
    d->db = NULL;
}

shoal_err shoal_devc_db_population(shoal_devc_db *d, const char *population, int64_t *next_checkin,
                                   int64_t *last_contribution, shoal_errinfo *ei)
{
    *next_checkin = *last_contribution = 0;
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "SELECT next_checkin_unix_ms, last_contribution_unix_ms FROM "
                            "population WHERE name = ?",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, population, -1, SQLITE_STATIC);
    return two_ints(d, s, next_checkin, last_contribution, ei,
                    "cannot read the population's times");
}

static shoal_err set_time(shoal_devc_db *d, const char *sql, const char *population,
                          int64_t unix_ms, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d, sql, &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, population, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, unix_ms);
    return run(d, s, ei, "cannot record the population's times");
}

shoal_err shoal_devc_db_set_next_checkin(shoal_devc_db *d, const char *population, int64_t unix_ms,
                                         shoal_errinfo *ei)
{
    return set_time(d,
                    "INSERT INTO population (name, next_checkin_unix_ms) VALUES (?1, ?2) "
                    "ON CONFLICT (name) DO UPDATE SET next_checkin_unix_ms = ?2",
                    population, unix_ms, ei);
}

shoal_err shoal_devc_db_set_contribution(shoal_devc_db *d, const char *population, int64_t unix_ms,
                                         shoal_errinfo *ei)
{
    return set_time(d,
                    "INSERT INTO population (name, last_contribution_unix_ms) VALUES (?1, ?2) "
                    "ON CONFLICT (name) DO UPDATE SET last_contribution_unix_ms = ?2",
                    population, unix_ms, ei);
}

shoal_err shoal_devc_db_traffic(shoal_devc_db *d, int64_t day, uint64_t *down, uint64_t *up,
                                shoal_errinfo *ei)
{
    *down = *up = 0;
    sqlite3_stmt *s;
    shoal_err err = prepare(d, "SELECT bytes_down, bytes_up FROM traffic WHERE day = ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, day);
    int64_t bytes_down = 0, bytes_up = 0;
    if ((err = two_ints(d, s, &bytes_down, &bytes_up, ei, "cannot read the day's traffic")))
        return err;
    *down = (uint64_t)bytes_down;
    *up = (uint64_t)bytes_up;
    return SHOAL_OK;
}

shoal_err shoal_devc_db_add_traffic(shoal_devc_db *d, int64_t day, uint64_t down, uint64_t up,
                                    shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "INSERT INTO traffic (day, bytes_down, bytes_up) VALUES (?1, ?2, ?3) "
                            "ON CONFLICT (day) DO UPDATE SET bytes_down = bytes_down + ?2, "
                            "bytes_up = bytes_up + ?3",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, day);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)down);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)up);
    return run(d, s, ei, "cannot record the day's traffic");
}

shoal_err shoal_devc_db_log(shoal_devc_db *d, const shoal_client_event *ev, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "INSERT INTO event (unix_ms, kind, population, bytes, duration_ms, "
                            "example_count, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, ev->unix_ms);
    sqlite3_bind_int(s, 2, (int)ev->kind);
    sqlite3_bind_text(s, 3, ev->population ? ev->population : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)ev->bytes);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)ev->duration_ms);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)ev->example_count);
    sqlite3_bind_int64(s, 7, ev->status);
    sqlite3_bind_text(s, 8, ev->detail ? ev->detail : "", -1, SQLITE_STATIC);
    if ((err = run(d, s, ei, "cannot append to the log")))
        return err;
    return trim(d, ev->unix_ms, ei);
}

shoal_err shoal_devc_db_log_read(shoal_devc_db *d, int64_t since_unix_ms,
                                 int (*fn)(void *ctx, const shoal_client_event *event), void *ctx,
                                 shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "SELECT id, unix_ms, kind, population, bytes, duration_ms, "
                            "example_count, status, detail FROM event WHERE unix_ms >= ? "
                            "ORDER BY id",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, since_unix_ms);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        shoal_client_event ev = {
            .id = sqlite3_column_int64(s, 0),
            .unix_ms = sqlite3_column_int64(s, 1),
            .kind = (shoal_client_event_kind)sqlite3_column_int(s, 2),
            .population = (const char *)sqlite3_column_text(s, 3),
            .bytes = (uint64_t)sqlite3_column_int64(s, 4),
            .duration_ms = (uint64_t)sqlite3_column_int64(s, 5),
            .example_count = (uint64_t)sqlite3_column_int64(s, 6),
            .status = sqlite3_column_int64(s, 7),
            .detail = (const char *)sqlite3_column_text(s, 8),
        };
        if (!ev.population)
            ev.population = "";
        if (!ev.detail)
            ev.detail = "";
        if (fn(ctx, &ev)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        err = db_error(d, ei, "cannot read the log");
    sqlite3_finalize(s);
    return err;
}

shoal_err shoal_devc_db_save_upload(shoal_devc_db *d, const char *population,
                                    const shoal_devc_db_upload *u, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "INSERT OR REPLACE INTO saved_upload (population, session, "
                            "checkpoint, round, example_count, loss, accuracy, "
                            "deadline_unix_ms, sealed, payload, unclipped) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, population, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, u->session, (int)u->session_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, u->checkpoint, (int)u->checkpoint_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)u->round);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)u->example_count);
    sqlite3_bind_double(s, 6, u->loss);
    sqlite3_bind_double(s, 7, u->accuracy);
    sqlite3_bind_int64(s, 8, u->deadline_unix_ms);
    sqlite3_bind_int(s, 9, u->sealed);
    sqlite3_bind_blob64(s, 10, u->payload, u->payload_len, SQLITE_STATIC);
    if (u->unclipped >= 0)
        sqlite3_bind_int(s, 11, u->unclipped ? 1 : 0);
    else
        sqlite3_bind_null(s, 11);
    return run(d, s, ei, "cannot save the upload");
}

shoal_err shoal_devc_db_load_upload(shoal_devc_db *d, const char *population,
                                    shoal_devc_db_upload *u, int *found, shoal_errinfo *ei)
{
    memset(u, 0, sizeof *u);
    *found = 0;
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "SELECT session, checkpoint, round, example_count, loss, accuracy, "
                            "deadline_unix_ms, sealed, payload, unclipped FROM saved_upload "
                            "WHERE population = ?",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, population, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        size_t session_len = (size_t)sqlite3_column_bytes(s, 0);
        size_t checkpoint_len = (size_t)sqlite3_column_bytes(s, 1);
        size_t payload_len = (size_t)sqlite3_column_bytes(s, 8);
        if (session_len == 0 || session_len > sizeof u->session ||
            checkpoint_len > sizeof u->checkpoint || payload_len == 0) {
            err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                    "%s: the saved upload of \"%s\" is malformed; it is "
                                    "dropped",
                                    d->path, population);
        } else if (!(u->payload = shoal_malloc(payload_len))) {
            err =
                shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: no memory for the saved upload", d->path);
        } else {
            memcpy(u->session, sqlite3_column_blob(s, 0), session_len);
            u->session_len = session_len;
            if (checkpoint_len)
                memcpy(u->checkpoint, sqlite3_column_blob(s, 1), checkpoint_len);
            u->checkpoint_len = checkpoint_len;
            u->round = (uint64_t)sqlite3_column_int64(s, 2);
            u->example_count = (uint64_t)sqlite3_column_int64(s, 3);
            u->loss = sqlite3_column_double(s, 4);
            u->accuracy = sqlite3_column_double(s, 5);
            u->deadline_unix_ms = sqlite3_column_int64(s, 6);
            u->sealed = sqlite3_column_int(s, 7);
            memcpy(u->payload, sqlite3_column_blob(s, 8), payload_len);
            u->payload_len = payload_len;
            u->unclipped = sqlite3_column_type(s, 9) == SQLITE_NULL ? -1
                           : sqlite3_column_int(s, 9)               ? 1
                                                                    : 0;
            *found = 1;
        }
    } else if (rc != SQLITE_DONE) {
        err = db_error(d, ei, "cannot read the saved upload");
    }
    sqlite3_finalize(s);
    return err;
}

shoal_err shoal_devc_db_drop_upload(shoal_devc_db *d, const char *population, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d, "DELETE FROM saved_upload WHERE population = ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, population, -1, SQLITE_STATIC);
    return run(d, s, ei, "cannot drop the saved upload");
}

shoal_err shoal_devc_db_save_tls(shoal_devc_db *d, const char *peer, const uint8_t *session,
                                 size_t len, int sealed, int64_t now_unix_ms, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d,
                            "INSERT OR REPLACE INTO tls_session (peer, saved_unix_ms, sealed, "
                            "session) VALUES (?, ?, ?, ?)",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now_unix_ms);
    sqlite3_bind_int(s, 3, sealed);
    sqlite3_bind_blob64(s, 4, session, len, SQLITE_STATIC);
    return run(d, s, ei, "cannot save the TLS session");
}

shoal_err shoal_devc_db_load_tls(shoal_devc_db *d, const char *peer, uint8_t **session, size_t *len,
                                 int *sealed, shoal_errinfo *ei)
{
    *session = NULL;
    *len = 0;
    *sealed = 0;
    sqlite3_stmt *s;
    shoal_err err = prepare(d, "SELECT sealed, session FROM tls_session WHERE peer = ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, peer, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(s, 1);
        const void *blob = sqlite3_column_blob(s, 1);
        if (n == 0 || !blob) {
            err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                    "%s: the TLS session saved for %s is empty; it is dropped",
                                    d->path, peer);
        } else if (!(*session = shoal_malloc(n))) {
            err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: no memory for the TLS session", d->path);
        } else {
            memcpy(*session, blob, n);
            *len = n;
            *sealed = sqlite3_column_int(s, 0);
        }
    } else if (rc != SQLITE_DONE) {
        err = db_error(d, ei, "cannot read the TLS session");
    }
    sqlite3_finalize(s);
    return err;
}

shoal_err shoal_devc_db_drop_tls(shoal_devc_db *d, const char *peer, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(d, "DELETE FROM tls_session WHERE peer = ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, peer, -1, SQLITE_STATIC);
    return run(d, s, ei, "cannot drop the TLS session");
}
