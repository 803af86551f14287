#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/log.h"
#include "shoal/sqlite_util.h"
#include "store_int.h"

/* Bump when the schema changes; migrations go in create_schema(). */
#define SCHEMA_VERSION 1
/* "SHEX" in the database header's application_id: tells an example store
 * from any other SQLite file, the server's state database ("SHOL")
 * included. */
#define APPLICATION_ID          0x53484558
#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* The known text sealed under the key at creation; opening it at open time
 * tells a wrong key before any example is read. */
static const char key_check_text[] = "shoal example store key check v1";

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta ("
    "  key TEXT PRIMARY KEY,"
    "  value BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS collection ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  kind INTEGER NOT NULL,"
    "  feature_count INTEGER NOT NULL,"
    "  example_count INTEGER NOT NULL DEFAULT 0,"
    "  payload_bytes INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS example ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  collection INTEGER NOT NULL,"
    "  timestamp_ms INTEGER NOT NULL,"
    "  label INTEGER,"
    "  weight REAL,"
    "  payload BLOB NOT NULL,"
    "  bytes INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS example_by_collection ON example (collection, timestamp_ms);"
    "CREATE INDEX IF NOT EXISTS example_by_time ON example (timestamp_ms);"
    "CREATE TRIGGER IF NOT EXISTS example_added AFTER INSERT ON example BEGIN"
    "  UPDATE collection SET example_count = example_count + 1,"
    "    payload_bytes = payload_bytes + NEW.bytes WHERE id = NEW.collection;"
    "END;"
    "CREATE TRIGGER IF NOT EXISTS example_removed AFTER DELETE ON example BEGIN"
    "  UPDATE collection SET example_count = example_count - 1,"
    "    payload_bytes = payload_bytes - OLD.bytes WHERE id = OLD.collection;"
    "END;";

/* ---- errors and statements ----------------------------------------------- */

#define RESET_HINT                                                                                 \
    "close every handle on it and call shoal_store_destroy() on this path to start an empty "      \
    "store (this deletes every stored example)"
static const char reset_hint[] = RESET_HINT;

static const shoal_sqlite_owner store_owner = {
    .application_id = APPLICATION_ID,
    .schema_version = SCHEMA_VERSION,
    .kind = "a Shoal example store",
    .schema = "example store schema",
    .if_foreign = "give the store another path, or, if this file is a leftover that may be "
                  "deleted, " RESET_HINT,
    .if_newer = "update the app's Shoal SDK, or " RESET_HINT,
};

shoal_err shoal_store_db_error(shoal_store *st, shoal_errinfo *ei, const char *doing)
{
    int extended = sqlite3_errcode(st->db), code = extended & 0xff;
    const char *what = sqlite3_errmsg(st->db);
    if (extended == SQLITE_IOERR_NOMEM)
        code = SQLITE_NOMEM;
    switch (code) {
    case SQLITE_NOMEM:
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: %s: out of memory", st->path, doing);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return shoal_errinfo_set(ei, SHOAL_EAGAIN,
                                 "%s: %s: %s (another handle held the store locked for longer "
                                 "than the busy timeout; try again later)",
                                 st->path, doing, what);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: %s: %s: the file is damaged or is not a Shoal example "
                                 "store; to reset it, %s",
                                 st->path, doing, what, reset_hint);
    case SQLITE_FULL:
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: %s: disk full (%s): free storage space",
                                 st->path, doing, what);
    case SQLITE_TOOBIG:
        return shoal_errinfo_set(ei, SHOAL_ELIMIT, "%s: %s: %s", st->path, doing, what);
    default:
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: %s: %s", st->path, doing, what);
    }
}

shoal_err shoal_store_nomem(shoal_store *st, shoal_errinfo *ei, const char *doing)
{
    return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: %s: out of memory", st->path, doing);
}

shoal_err shoal_store_exec(shoal_store *st, const char *sql, shoal_errinfo *ei, const char *doing)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return shoal_store_db_error(st, ei, doing);
    return SHOAL_OK;
}

shoal_err shoal_store_prepare(shoal_store *st, const char *sql, sqlite3_stmt **stmt,
                              shoal_errinfo *ei)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        *stmt = NULL;
        return shoal_store_db_error(st, ei, "cannot prepare a statement");
    }
    return SHOAL_OK;
}

shoal_err shoal_store_begin(shoal_store *st, shoal_errinfo *ei)
{
    if (st->snapshot)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: this handle holds a snapshot for reading; write through "
                                 "another handle, or call shoal_store_snapshot_end first",
                                 st->path);
    return shoal_store_exec(st, "BEGIN IMMEDIATE", ei, "cannot start a write transaction");
}

shoal_err shoal_store_end(shoal_store *st, shoal_err err, shoal_errinfo *ei)
{
    if (!err && !(err = shoal_store_exec(st, "COMMIT", ei, "cannot commit")))
        return SHOAL_OK;
    shoal_sqlite_rollback(st->db);
    return err;
}

shoal_err shoal_store_snapshot_begin(shoal_store *st, shoal_errinfo *ei)
{
    if (!st)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_snapshot_begin: NULL store");
    if (st->snapshot)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: this handle already holds a snapshot",
                                 st->path);
    /* BEGIN is deferred: the read that follows is what fixes the
     * snapshot, so it is taken here rather than at the caller's first
     * query. */
    shoal_err err = shoal_store_exec(st, "BEGIN", ei, "cannot start a snapshot");
    if (!err)
        err =
            shoal_store_exec(st, "SELECT count(*) FROM collection", ei, "cannot start a snapshot");
    if (err) {
        shoal_sqlite_rollback(st->db);
        return err;
    }
    st->snapshot = 1;
    return SHOAL_OK;
}

void shoal_store_snapshot_end(shoal_store *st)
{
    if (!st || !st->snapshot)
        return;
    /* A read-only transaction: ending it cannot lose anything. */
    shoal_sqlite_rollback(st->db);
    st->snapshot = 0;
}

/* ---- open and close ------------------------------------------------------ */

void shoal_store_close(shoal_store *st)
{
    if (!st)
        return;
    shoal_store_snapshot_end(st);
    sqlite3_finalize(st->find_collection);
    sqlite3_finalize(st->insert_example);
    sqlite3_close_v2(st->db);
    if (st->key) {
        if (st->scratch)
            sodium_memzero(st->scratch, st->scratch_cap);
        sodium_free(st->key); /* wipes */
    }
    shoal_free(st->scratch);
    shoal_free(st->path);
    shoal_free(st);
}

/* Reads meta 'encrypted' and 'key_check' (the schema transaction is open).
 * *encrypted is -1 when the store has not been stamped yet. */
static shoal_err read_meta(shoal_store *st, int *encrypted, uint8_t *check, size_t *check_len,
                           shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(st,
                                        "SELECT key, value FROM meta WHERE key IN ('encrypted', "
                                        "'key_check')",
                                        &s, ei);
    if (err)
        return err;
    *encrypted = -1;
    *check_len = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(s, 0);
        if (!key)
            continue;
        if (strcmp(key, "encrypted") == 0) {
            *encrypted = sqlite3_column_int(s, 1) ? 1 : 0;
        } else {
            const void *v = sqlite3_column_blob(s, 1);
            size_t n = (size_t)sqlite3_column_bytes(s, 1);
            if (v && n <= 128) {
                memcpy(check, v, n);
                *check_len = n;
            }
        }
    }
    if (rc != SQLITE_DONE)
        err = shoal_store_db_error(st, ei, "cannot read the store's settings");
    sqlite3_finalize(s);
    return err;
}

static shoal_err put_meta(shoal_store *st, const char *key, const void *value, size_t len,
                          int64_t number, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(st, "INSERT INTO meta (key, value) VALUES (?, ?)", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (value)
        sqlite3_bind_blob(s, 2, value, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_int64(s, 2, number);
    if (sqlite3_step(s) != SQLITE_DONE)
        err = shoal_store_db_error(st, ei, "cannot record the store's settings");
    sqlite3_finalize(s);
    return err;
}

/* Creates the schema and stamps a new store with its encryption setting,
 * in one transaction; a handle that loses the race to create it finds the
 * winner's stamp and adopts it. */
static shoal_err create_schema(shoal_store *st, int *encrypted, uint8_t *check, size_t *check_len,
                               shoal_errinfo *ei)
{
    shoal_err err = shoal_store_begin(st, ei);
    if (err)
        return err;
    if ((err = shoal_store_exec(st, schema, ei, "cannot create the schema")) ||
        (err = read_meta(st, encrypted, check, check_len, ei)) || *encrypted >= 0)
        return shoal_store_end(st, err, ei);
    /* A new store: it is encrypted iff this handle has a key. */
    *encrypted = st->key != NULL;
    err = put_meta(st, "encrypted", NULL, 0, *encrypted, ei);
    if (!err && *encrypted) {
        size_t text_len = sizeof key_check_text - 1;
        *check_len = STORE_NONCE_BYTES + STORE_MAC_BYTES + text_len;
        randombytes_buf(check, STORE_NONCE_BYTES);
        crypto_secretbox_easy(check + STORE_NONCE_BYTES, (const uint8_t *)key_check_text, text_len,
                              check, st->key);
        err = put_meta(st, "key_check", check, *check_len, 0, ei);
    }
    if (!err && shoal_sqlite_stamp(st->db, APPLICATION_ID, SCHEMA_VERSION))
        err = shoal_store_db_error(st, ei, "cannot stamp the schema");
    return shoal_store_end(st, err, ei);
}

/* Checks that this handle's key (or lack of one) fits the store. */
static shoal_err check_key(shoal_store *st, int encrypted, const uint8_t *check, size_t check_len,
                           shoal_errinfo *ei)
{
    if (encrypted && !st->key)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                 "%s: the store is encrypted: open it with its key "
                                 "(shoal_store_options.key), or, if the key is lost, %s",
                                 st->path, reset_hint);
    if (!encrypted && st->key)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                 "%s: the store was created without encryption and cannot be "
                                 "opened with a key: open it without one, or, to start an "
                                 "encrypted store, %s",
                                 st->path, reset_hint);
    if (!encrypted)
        return SHOAL_OK;
    uint8_t text[sizeof key_check_text];
    size_t text_len = sizeof key_check_text - 1;
    if (check_len != STORE_NONCE_BYTES + STORE_MAC_BYTES + text_len ||
        crypto_secretbox_open_easy(text, check + STORE_NONCE_BYTES, check_len - STORE_NONCE_BYTES,
                                   check, st->key) != 0 ||
        memcmp(text, key_check_text, text_len) != 0)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                 "%s: wrong key: the key given does not open this encrypted "
                                 "store; open it with the key it was created with, or, if that "
                                 "key is lost (its examples cannot be recovered), %s",
                                 st->path, reset_hint);
    return SHOAL_OK;
}

static shoal_err check_header(shoal_store *st, int *fresh, shoal_errinfo *ei)
{
    shoal_sqlite_header h;
    /* One read transaction, so that another handle creating the store
     * meanwhile is seen either not at all or complete. */
    if (sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return shoal_store_db_error(st, ei, "cannot read the database");
    shoal_err err = shoal_sqlite_header_read(st->db, &h)
                        ? shoal_store_db_error(st, ei, "cannot read the database")
                        : SHOAL_OK;
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (err)
        return err;
    if ((err = shoal_sqlite_check_owner(&h, &store_owner, st->path, ei)))
        return err;
    *fresh = h.user_version < SCHEMA_VERSION;
    return SHOAL_OK;
}

static shoal_err configure(shoal_store *st, shoal_errinfo *ei)
{
    /* Another handle opening the same file may hold the switch up for up
     * to the busy timeout. */
    char mode[SHOAL_SQLITE_MODE_LEN];
    if (shoal_sqlite_wal(st->db, st->busy_ms, mode))
        return shoal_store_db_error(st, ei, "cannot enable WAL");
    if (sqlite3_stricmp(mode, "wal") != 0)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "%s: the database refused WAL mode (journal mode \"%s\"): keep "
                                 "the store on a local file system",
                                 st->path, mode);
    /* FULL: a commit is on storage when it returns, through power loss too
     * (see store.h). secure_delete: retention and delete overwrite what
     * they remove, so old examples of an unencrypted store do not linger in
     * free pages. */
    return shoal_store_exec(st, "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON", ei,
                            "cannot configure the database");
}

shoal_err shoal_store_open(const char *path, const shoal_store_options *opts, shoal_store **out,
                           shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_open: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_open: no path given");
    shoal_store_options o = {0};
    if (opts)
        o = *opts;
    if (o.key && o.key_len != SHOAL_STORE_KEY_BYTES)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: the key is %zu bytes, not %d", path,
                                 o.key_len, SHOAL_STORE_KEY_BYTES);
    if (o.busy_timeout_ms < 0 || o.retention.max_age_ms < 0 || o.cache_kib < 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: busy_timeout_ms, cache_kib and retention.max_age_ms must "
                                 "not be negative",
                                 path);
    if (o.key && sodium_init() < 0)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "%s: libsodium failed to initialise", path);

    shoal_store *st = shoal_calloc(1, sizeof *st);
    if (!st || !(st->path = shoal_strdup(path))) {
        shoal_free(st);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory opening the store", path);
    }
    st->retention = o.retention;
    shoal_err err;
    if (o.key) {
        if (!(st->key = sodium_malloc(SHOAL_STORE_KEY_BYTES))) {
            err = shoal_store_nomem(st, ei, "cannot hold the key");
            goto fail;
        }
        memcpy(st->key, o.key, SHOAL_STORE_KEY_BYTES);
        sodium_mprotect_readonly(st->key);
    }
    /* NOMUTEX: a handle belongs to one thread at a time (store.h), so
     * SQLite's per-connection mutex buys nothing. */
    int rc = sqlite3_open_v2(
        path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (!st->db || rc == SQLITE_NOMEM)
            err = shoal_store_nomem(st, ei, "cannot open the store");
        else
            err = shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot open the store: %s", path,
                                    sqlite3_errmsg(st->db));
        goto fail;
    }
    if (sqlite3_db_readonly(st->db, "main") == 1) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "%s: the file can only be read: give the app write permission "
                                "on it and its directory",
                                path);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    if (o.cache_kib) {
        /* Negative: a size in KiB rather than in pages. */
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA cache_size=-%d", o.cache_kib);
        if ((err = shoal_store_exec(st, pragma, ei, "cannot size the page cache")))
            goto fail;
    }
    st->busy_ms = o.busy_timeout_ms ? o.busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS;
    sqlite3_busy_timeout(st->db, st->busy_ms);
    int fresh = 0, encrypted = -1;
    uint8_t check[128];
    size_t check_len = 0;
    if ((err = check_header(st, &fresh, ei)) || (err = configure(st, ei)))
        goto fail;
    /* An existing store is only read here, so opening the trainer's handle
     * does not wait for the app's writes. */
    if (!fresh)
        err = read_meta(st, &encrypted, check, &check_len, ei);
    if (!err && encrypted < 0)
        err = create_schema(st, &encrypted, check, &check_len, ei);
    if (err || (err = check_key(st, encrypted, check, check_len, ei)))
        goto fail;
    *out = st;
    return SHOAL_OK;
fail:
    shoal_store_close(st);
    return err;
}

shoal_err shoal_store_destroy(const char *path, shoal_errinfo *ei)
{
    if (!path || !*path)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_destroy: no path given");
    static const char *const suffixes[] = {"-wal", "-shm", "-journal", ""};
    size_t len = strlen(path);
    char *name = shoal_malloc(len + sizeof "-journal");
    if (!name)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    shoal_err err = SHOAL_OK;
    /* The WAL and journal go first: SQLite would replay a leftover WAL into
     * whatever database is next created under this name. */
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes && !err; i++) {
        memcpy(name, path, len);
        strcpy(name + len, suffixes[i]);
        if (remove(name) == 0)
            continue;
        /* remove() failed: fine if there was nothing to remove. */
        FILE *f = fopen(name, "rb");
        if (f) {
            fclose(f);
            err = shoal_errinfo_set(ei, SHOAL_EIO,
                                    "%s: cannot delete it: check the permissions of its "
                                    "directory",
                                    name);
        }
    }
    shoal_free(name);
    if (!err)
        SHOAL_INFO(STORE_LOG, "%s: example store deleted", path);
    return err;
}

/* ---- collections ----------------------------------------------------------- */

shoal_err shoal_store_find_collection(shoal_store *st, const char *name, store_collection *coll,
                                      shoal_errinfo *ei)
{
    if (!st->find_collection &&
        sqlite3_prepare_v3(st->db, "SELECT id, kind, feature_count FROM collection WHERE name = ?",
                           -1, SQLITE_PREPARE_PERSISTENT, &st->find_collection,
                           NULL) != SQLITE_OK) {
        st->find_collection = NULL;
        return shoal_store_db_error(st, ei, "cannot prepare a statement");
    }
    sqlite3_stmt *s = st->find_collection;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    shoal_err err = SHOAL_OK;
    if (rc == SQLITE_ROW) {
        coll->id = sqlite3_column_int64(s, 0);
        coll->kind = sqlite3_column_int(s, 1) == SHOAL_STORE_BLOBS ? SHOAL_STORE_BLOBS
                                                                   : SHOAL_STORE_FEATURES;
        coll->feature_count = (size_t)sqlite3_column_int64(s, 2);
    } else if (rc == SQLITE_DONE) {
        err = SHOAL_ENOTFOUND;
    } else {
        err = shoal_store_db_error(st, ei, "cannot read collections");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return err;
}

static shoal_err check_name(const shoal_store *st, const char *name, shoal_errinfo *ei)
{
    if (!name || !*name || strlen(name) > 255)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: a collection name must be 1 to 255 bytes long",
                                 st ? st->path : "example store");
    return SHOAL_OK;
}

shoal_err shoal_store_describe(shoal_store *st, const char *name, shoal_store_collection_info *info,
                               shoal_errinfo *ei)
{
    if (!st || !info)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_describe: NULL argument");
    shoal_err err = check_name(st, name, ei);
    if (err)
        return err;
    sqlite3_stmt *s;
    if ((err = shoal_store_prepare(st,
                                   "SELECT c.kind, c.feature_count, c.example_count, "
                                   "c.payload_bytes, (SELECT min(timestamp_ms) FROM example "
                                   "WHERE collection = c.id), (SELECT max(timestamp_ms) FROM "
                                   "example WHERE collection = c.id) FROM collection c WHERE "
                                   "c.name = ?",
                                   &s, ei)))
        return err;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        memset(info, 0, sizeof *info);
        info->kind = sqlite3_column_int(s, 0) == SHOAL_STORE_BLOBS ? SHOAL_STORE_BLOBS
                                                                   : SHOAL_STORE_FEATURES;
        info->feature_count =
            info->kind == SHOAL_STORE_FEATURES ? (size_t)sqlite3_column_int64(s, 1) : 0;
        info->example_count = (uint64_t)sqlite3_column_int64(s, 2);
        info->payload_bytes = (uint64_t)sqlite3_column_int64(s, 3);
        info->oldest_ms = sqlite3_column_int64(s, 4); /* NULL reads as 0 */
        info->newest_ms = sqlite3_column_int64(s, 5);
    } else if (rc == SQLITE_DONE) {
        err = shoal_errinfo_set(ei, SHOAL_ENOTFOUND, "%s: no collection \"%s\"", st->path, name);
    } else {
        err = shoal_store_db_error(st, ei, "cannot read the collection");
    }
    sqlite3_finalize(s);
    return err;
}

/* Runs a DELETE whose one parameter is a collection's id. */
static shoal_err delete_by_id(shoal_store *st, const char *sql, int64_t id, shoal_errinfo *ei,
                              const char *doing)
{
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(st, sql, &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) != SQLITE_DONE)
        err = shoal_store_db_error(st, ei, doing);
    sqlite3_finalize(s);
    return err;
}

shoal_err shoal_store_drop_collection(shoal_store *st, const char *name, shoal_errinfo *ei)
{
    if (!st)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_drop_collection: NULL store");
    shoal_err err = check_name(st, name, ei);
    if (err || (err = shoal_store_begin(st, ei)))
        return err;
    store_collection coll;
    err = shoal_store_find_collection(st, name, &coll, ei);
    if (err == SHOAL_ENOTFOUND)
        err = shoal_errinfo_set(ei, SHOAL_ENOTFOUND, "%s: no collection \"%s\"", st->path, name);
    if (!err)
        err = delete_by_id(st, "DELETE FROM example WHERE collection = ?", coll.id, ei,
                           "cannot delete the collection's examples");
    if (!err)
        err = delete_by_id(st, "DELETE FROM collection WHERE id = ?", coll.id, ei,
                           "cannot delete the collection");
    return shoal_store_end(st, err, ei);
}

/* ---- criteria ---------------------------------------------------------------- */

/* "collection = :coll AND timestamp_ms >= :start AND timestamp_ms < :end",
 * keeping only the bounds that are set. Never longer than 96 bytes. */
static void where_clause(const shoal_store_criteria *c, int by_collection, char *buf, size_t size)
{
    snprintf(buf, size, "1%s%s%s", by_collection ? " AND collection = :coll" : "",
             c->start_ms ? " AND timestamp_ms >= :start" : "",
             c->end_ms ? " AND timestamp_ms < :end" : "");
}

static void bind_named_int64(sqlite3_stmt *s, const char *name, int64_t value)
{
    int i = sqlite3_bind_parameter_index(s, name);
    if (i > 0)
        sqlite3_bind_int64(s, i, value);
}

shoal_err shoal_store_check_criteria(shoal_store *st, const shoal_store_criteria *c,
                                     shoal_errinfo *ei)
{
    if (c->collection) {
        shoal_err err = check_name(st, c->collection, ei);
        if (err)
            return err;
    }
    if (c->start_ms && c->end_ms && c->end_ms <= c->start_ms)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: the time window [%lld, %lld) is empty: end_ms must be after "
                                 "start_ms",
                                 st->path, (long long)c->start_ms, (long long)c->end_ms);
    if (c->max_examples > (uint64_t)INT64_MAX)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: max_examples is too large", st->path);
    return SHOAL_OK;
}

shoal_err shoal_store_select(shoal_store *st, const char *head, const char *tail,
                             const shoal_store_criteria *c, int limited, int64_t collection_id,
                             sqlite3_stmt **out, shoal_errinfo *ei)
{
    char where[128], sql[384];
    where_clause(c, c->collection != NULL, where, sizeof where);
    snprintf(sql, sizeof sql, "%s WHERE %s%s%s", head, where,
             limited && c->max_examples ? " ORDER BY timestamp_ms DESC, id DESC LIMIT :max" : "",
             tail);
    shoal_err err = shoal_store_prepare(st, sql, out, ei);
    if (err)
        return err;
    bind_named_int64(*out, ":coll", collection_id);
    bind_named_int64(*out, ":start", c->start_ms);
    bind_named_int64(*out, ":end", c->end_ms);
    bind_named_int64(*out, ":max", (int64_t)c->max_examples);
    return SHOAL_OK;
}

shoal_err shoal_store_count(shoal_store *st, const shoal_store_criteria *c, uint64_t *count,
                            shoal_errinfo *ei)
{
    if (!st || !c || !count)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_count: NULL argument");
    *count = 0;
    shoal_err err = shoal_store_check_criteria(st, c, ei);
    if (err)
        return err;
    store_collection coll = {0};
    if (c->collection) {
        err = shoal_store_find_collection(st, c->collection, &coll, ei);
        if (err == SHOAL_ENOTFOUND)
            return SHOAL_OK;
        if (err)
            return err;
    }
    /* Without a limit, then capped: the same number, without a sort. */
    sqlite3_stmt *s;
    if ((err = shoal_store_select(st, "SELECT count(*) FROM example", "", c, 0, coll.id, &s, ei)))
        return err;
    if (sqlite3_step(s) == SQLITE_ROW) {
        uint64_t n = (uint64_t)sqlite3_column_int64(s, 0);
        *count = c->max_examples && n > c->max_examples ? c->max_examples : n;
    } else {
        err = shoal_store_db_error(st, ei, "cannot count examples");
    }
    sqlite3_finalize(s);
    return err;
}

shoal_err shoal_store_delete(shoal_store *st, const shoal_store_criteria *c, uint64_t *deleted,
                             shoal_errinfo *ei)
{
    if (!st || !c)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_delete: NULL argument");
    if (deleted)
        *deleted = 0;
    shoal_err err = shoal_store_check_criteria(st, c, ei);
    if (err || (err = shoal_store_begin(st, ei)))
        return err;
    store_collection coll = {0};
    if (c->collection)
        err = shoal_store_find_collection(st, c->collection, &coll, ei);
    if (err == SHOAL_ENOTFOUND)
        return shoal_store_end(st, SHOAL_OK, ei);
    sqlite3_stmt *s = NULL;
    if (!err)
        err = shoal_store_select(st, "DELETE FROM example WHERE id IN (SELECT id FROM example", ")",
                                 c, 1, coll.id, &s, ei);
    if (!err) {
        if (sqlite3_step(s) != SQLITE_DONE)
            err = shoal_store_db_error(st, ei, "cannot delete examples");
        else if (deleted)
            *deleted = (uint64_t)sqlite3_changes(st->db);
        sqlite3_finalize(s);
    }
    return shoal_store_end(st, err, ei);
}

shoal_err shoal_store_enforce_retention(shoal_store *st, const shoal_store_retention *r,
                                        int64_t now_ms, uint64_t *deleted, shoal_errinfo *ei)
{
    if (!st)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_enforce_retention: NULL store");
    if (deleted)
        *deleted = 0;
    if (!r)
        r = &st->retention;
    if (r->max_age_ms < 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: retention.max_age_ms is negative",
                                 st->path);
    shoal_err err = shoal_store_begin(st, ei);
    if (err)
        return err;
    uint64_t n = 0;
    err = shoal_store_apply_retention(st, r, now_ms, &n, ei);
    if (!(err = shoal_store_end(st, err, ei)) && deleted)
        *deleted = n;
    return err;
}

shoal_err shoal_store_check(shoal_store *st, shoal_errinfo *ei)
{
    if (!st)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_check: NULL store");
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(st, "PRAGMA integrity_check(1)", &s, ei);
    if (err)
        return err;
    if (sqlite3_step(s) != SQLITE_ROW) {
        err = shoal_store_db_error(st, ei, "cannot check the database");
    } else {
        const char *verdict = (const char *)sqlite3_column_text(s, 0);
        if (!verdict || strcmp(verdict, "ok") != 0)
            err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                    "%s: the file is damaged (%s); to reset it, %s", st->path,
                                    verdict ? verdict : "no verdict", reset_hint);
    }
    sqlite3_finalize(s);
    return err;
}
