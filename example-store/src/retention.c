#include <stdint.h>

#include "shoal/log.h"
#include "store_int.h"

static int64_t clamp64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* Deletes the oldest examples (of one collection, or of the whole store
 * when collection_id < 0) until at least `rows` examples and `bytes`
 * payload bytes are gone. Walks the age index from the oldest to find the
 * last example to delete, then deletes everything up to it in one
 * statement: the work is proportional to what goes, not to what stays. */
static shoal_err trim(shoal_store *st, int64_t collection_id, uint64_t rows, uint64_t bytes,
                      uint64_t *deleted, shoal_errinfo *ei)
{
    if (!rows && !bytes)
        return SHOAL_OK;
    int whole_store = collection_id < 0;
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(
        st,
        whole_store ? "SELECT id, timestamp_ms, bytes FROM example ORDER BY timestamp_ms, id"
                    : "SELECT id, timestamp_ms, bytes FROM example WHERE collection = ? ORDER BY "
                      "timestamp_ms, id",
        &s, ei);
    if (err)
        return err;
    if (!whole_store)
        sqlite3_bind_int64(s, 1, collection_id);
    uint64_t gone_rows = 0, gone_bytes = 0;
    int64_t last_id = 0, last_ts = 0;
    int rc = SQLITE_DONE;
    while ((gone_rows < rows || gone_bytes < bytes) && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        last_id = sqlite3_column_int64(s, 0);
        last_ts = sqlite3_column_int64(s, 1);
        gone_rows++;
        gone_bytes += (uint64_t)sqlite3_column_int64(s, 2);
    }
    if (gone_rows < rows || gone_bytes < bytes) {
        if (rc != SQLITE_DONE)
            err = shoal_store_db_error(st, ei, "cannot read examples for retention");
    }
    sqlite3_finalize(s);
    if (err || gone_rows == 0)
        return err;
    if ((err = shoal_store_prepare(st,
                                   whole_store
                                       ? "DELETE FROM example WHERE (timestamp_ms, id) <= (?2, ?3)"
                                       : "DELETE FROM example WHERE collection = ?1 AND "
                                         "(timestamp_ms, id) <= (?2, ?3)",
                                   &s, ei)))
        return err;
    if (!whole_store)
        sqlite3_bind_int64(s, 1, collection_id);
    sqlite3_bind_int64(s, 2, last_ts);
    sqlite3_bind_int64(s, 3, last_id);
    if (sqlite3_step(s) == SQLITE_DONE)
        *deleted += (uint64_t)sqlite3_changes(st->db);
    else
        err = shoal_store_db_error(st, ei, "cannot delete old examples");
    sqlite3_finalize(s);
    return err;
}

static shoal_err by_age(shoal_store *st, int64_t max_age_ms, int64_t now_ms, uint64_t *deleted,
                        shoal_errinfo *ei)
{
    if (max_age_ms <= 0 || now_ms < INT64_MIN + max_age_ms)
        return SHOAL_OK;
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(st, "DELETE FROM example WHERE timestamp_ms < ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, now_ms - max_age_ms);
    if (sqlite3_step(s) == SQLITE_DONE)
        *deleted += (uint64_t)sqlite3_changes(st->db);
    else
        err = shoal_store_db_error(st, ei, "cannot delete expired examples");
    sqlite3_finalize(s);
    return err;
}

/* Each collection over its limits, in id order; the running totals the
 * triggers keep make finding them cheap. */
static shoal_err per_collection(shoal_store *st, const shoal_store_retention *r, uint64_t *deleted,
                                shoal_errinfo *ei)
{
    if (!r->max_examples && !r->max_bytes)
        return SHOAL_OK;
    int64_t max_rows = r->max_examples ? clamp64(r->max_examples) : INT64_MAX;
    int64_t max_bytes = r->max_bytes ? clamp64(r->max_bytes) : INT64_MAX;
    int64_t after = INT64_MIN;
    for (;;) {
        sqlite3_stmt *s;
        shoal_err err = shoal_store_prepare(
            st,
            "SELECT id, example_count, payload_bytes FROM collection WHERE id > ?1 AND "
            "(example_count > ?2 OR payload_bytes > ?3) ORDER BY id LIMIT 1",
            &s, ei);
        if (err)
            return err;
        sqlite3_bind_int64(s, 1, after);
        sqlite3_bind_int64(s, 2, max_rows);
        sqlite3_bind_int64(s, 3, max_bytes);
        int rc = sqlite3_step(s);
        int64_t rows = 0, bytes = 0;
        if (rc == SQLITE_ROW) {
            after = sqlite3_column_int64(s, 0);
            rows = sqlite3_column_int64(s, 1);
            bytes = sqlite3_column_int64(s, 2);
        } else if (rc != SQLITE_DONE) {
            err = shoal_store_db_error(st, ei, "cannot read collections");
        }
        sqlite3_finalize(s);
        if (err || rc == SQLITE_DONE)
            return err;
        if ((err = trim(st, after, rows > max_rows ? (uint64_t)(rows - max_rows) : 0,
                        bytes > max_bytes ? (uint64_t)(bytes - max_bytes) : 0, deleted, ei)))
            return err;
    }
}

static shoal_err whole_store(shoal_store *st, const shoal_store_retention *r, uint64_t *deleted,
                             shoal_errinfo *ei)
{
    if (!r->store_max_examples && !r->store_max_bytes)
        return SHOAL_OK;
    sqlite3_stmt *s;
    shoal_err err = shoal_store_prepare(
        st,
        "SELECT coalesce(sum(example_count), 0), coalesce(sum(payload_bytes), 0) FROM collection",
        &s, ei);
    if (err)
        return err;
    uint64_t rows = 0, bytes = 0;
    if (sqlite3_step(s) == SQLITE_ROW) {
        rows = (uint64_t)sqlite3_column_int64(s, 0);
        bytes = (uint64_t)sqlite3_column_int64(s, 1);
    } else {
        err = shoal_store_db_error(st, ei, "cannot read collections");
    }
    sqlite3_finalize(s);
    if (err)
        return err;
    uint64_t excess_rows =
        r->store_max_examples && rows > r->store_max_examples ? rows - r->store_max_examples : 0;
    uint64_t excess_bytes =
        r->store_max_bytes && bytes > r->store_max_bytes ? bytes - r->store_max_bytes : 0;
    return trim(st, -1, excess_rows, excess_bytes, deleted, ei);
}

shoal_err shoal_store_apply_retention(shoal_store *st, const shoal_store_retention *r,
                                      int64_t now_ms, uint64_t *deleted, shoal_errinfo *ei)
{
    *deleted = 0;
    shoal_err err;
    if ((err = by_age(st, r->max_age_ms, now_ms, deleted, ei)) ||
        (err = per_collection(st, r, deleted, ei)) || (err = whole_store(st, r, deleted, ei)))
        return err;
    if (*deleted)
        SHOAL_DEBUG(STORE_LOG, "%s: retention deleted %llu examples", st->path,
                    (unsigned long long)*deleted);
    return SHOAL_OK;
}
