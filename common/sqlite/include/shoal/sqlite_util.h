/* Shoal: what the SQLite databases (the example store, the device state,
 * the server state) do alike when they open a file.
 *
 * Each database words its own errors, naming its file and the remedy that
 * fits it: a function here that fails returns SHOAL_ENOMEM (SQLite ran out
 * of memory) or SHOAL_EIO (any other SQLite error) and leaves the reason on
 * the connection, where sqlite3_errcode(db) and sqlite3_errmsg(db) give it
 * to the caller's own error function. Nothing here writes a shoal_errinfo.
 *
 * Private to Shoal (not installed). Every function works on one connection
 * and is as thread-safe as that connection: use it from the thread that
 * owns it. */
#ifndef SHOAL_SQLITE_UTIL_H
#define SHOAL_SQLITE_UTIL_H

#include <sqlite3.h>
#include <stdint.h>

#include "shoal/err.h"

/* The header fields that tell whose a database file is. */
typedef struct shoal_sqlite_header {
    int64_t application_id; /* PRAGMA application_id: whose file it is */
    int64_t user_version;   /* PRAGMA user_version: its schema version */
    int64_t tables;         /* schema objects: 0 in a new, empty file */
} shoal_sqlite_header;

/* Reads the header of db's main database into *h. Reading it is the first
 * thing that fails on a damaged file or one that is not SQLite (the
 * connection's error code is then SQLITE_NOTADB or SQLITE_CORRUPT). */
SHOAL_NODISCARD shoal_err shoal_sqlite_header_read(sqlite3 *db, shoal_sqlite_header *h);

/* Writes application_id and user_version into db's header (inside the
 * caller's schema transaction, so that a file is stamped only with its
 * schema complete). */
SHOAL_NODISCARD shoal_err shoal_sqlite_stamp(sqlite3 *db, uint32_t application_id,
                                             int user_version);

/* Asks for WAL journalling. SHOAL_OK when SQLite answered: mode[] then
 * holds the journal mode it reports, "wal" when the switch took, another
 * (e.g. "delete" on a file system without shared memory, "memory" for an
 * in-memory database) when it was refused: the caller decides what that
 * means. A new file needs the database to itself for a moment to switch,
 * and SQLite answers SQLITE_BUSY at once (without its busy handler) while
 * another connection opens the same file: the question is asked again
 * every 10 ms for up to busy_ms. */
#define SHOAL_SQLITE_MODE_LEN 16
SHOAL_NODISCARD shoal_err shoal_sqlite_wal(sqlite3 *db, int busy_ms,
                                           char mode[SHOAL_SQLITE_MODE_LEN]);

/* Rolls back db's open transaction, if there is one (after a failure
 * inside it; a failure to roll back leaves nothing more to do). */
void shoal_sqlite_rollback(sqlite3 *db);

#endif
