/* Shoal: what the SQLite databases (the example store, the device state,
 * the server state) do alike when they open a file.
 *
 * Each database words its own errors, naming its file and the remedy that
 * fits it: a function here that fails on SQLite returns SHOAL_ENOMEM (SQLite
 * ran out of memory) or SHOAL_EIO (any other SQLite error) and leaves the
 * reason on the connection, where sqlite3_errcode(db) and sqlite3_errmsg(db)
 * give it to the caller's own error function. Only shoal_sqlite_check_owner
 * writes a shoal_errinfo, with the words and remedies its caller passes.
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

/* Whose a database file is, and what its owner tells a person who opened
 * the wrong file (shoal_sqlite_check_owner). */
typedef struct shoal_sqlite_owner {
    uint32_t application_id; /* the owner's PRAGMA application_id */
    int schema_version;      /* the newest schema this build reads */
    const char *kind;        /* the file, as a noun: "a Shoal device state" */
    const char *schema;      /* its schema, as a noun: "device state schema" */
    const char *if_foreign;  /* the remedy for another program's file */
    const char *if_newer;    /* the remedy for a newer schema */
} shoal_sqlite_owner;

/* SHOAL_OK when h is the header of a new, empty file or of one of o's files
 * with a schema this build reads. SHOAL_EFORMAT, with a message naming path,
 * the foreign application_id or the newer schema, and o's remedy, when the
 * file belongs to another program or to a newer Shoal. */
SHOAL_NODISCARD shoal_err shoal_sqlite_check_owner(const shoal_sqlite_header *h,
                                                   const shoal_sqlite_owner *o, const char *path,
                                                   shoal_errinfo *ei);

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
