#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "store_int.h"

static float stored_weight(const shoal_example *ex)
{
    return ex->weight == 0 ? 1.0f : ex->weight;
}

/* Checks one example on its own and against the batch's first. */
static shoal_err check_example(const shoal_store *st, const shoal_example *ex, size_t index,
                               size_t count, const shoal_example *first, shoal_errinfo *ei)
{
    char where[48] = "";
    if (count > 1)
        snprintf(where, sizeof where, "example %zu: ", index);
    if (ex->features && ex->blob)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: %shas both features and a blob; give one",
                                 st->path, where);
    if (ex->features && ex->feature_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: %shas features but feature_count is 0",
                                 st->path, where);
    if (!ex->features && ex->feature_count)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: %sfeature_count is %zu but features is NULL", st->path, where,
                                 ex->feature_count);
    if (!ex->features && !ex->blob)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: %shas neither features nor a blob",
                                 st->path, where);
    if (ex->features && ex->blob_len)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: %shas features but blob_len is %zu",
                                 st->path, where, ex->blob_len);
    if (!isfinite(ex->weight) || ex->weight < 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: %sweight must be finite and positive (0 stores 1)", st->path,
                                 where);
    if (ex != first) {
        if (!ex->features != !first->features)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s: %sis a %s but the batch's first example is a %s",
                                     st->path, where, ex->features ? "feature vector" : "blob",
                                     first->features ? "feature vector" : "blob");
        if (ex->feature_count != first->feature_count)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s: %shas %zu features but the batch's first example has "
                                     "%zu",
                                     st->path, where, ex->feature_count, first->feature_count);
    }
    /* The payload must fit SQLite's blob limit and size_t arithmetic. */
    const size_t overhead = STORE_NONCE_BYTES + STORE_MAC_BYTES + STORE_HEADER_BYTES;
    size_t limit = (size_t)sqlite3_limit(st->db, SQLITE_LIMIT_LENGTH, -1);
    size_t payload = ex->blob_len;
    if (ex->features) {
        if (ex->feature_count > (SIZE_MAX - overhead) / 4)
            payload = SIZE_MAX - overhead;
        else
            payload = ex->feature_count * 4;
    }
    if (payload > SIZE_MAX - overhead || payload + overhead > limit)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%s: %sa payload of %zu bytes is larger than the store "
                                 "accepts (%zu bytes with overhead)",
                                 st->path, where, payload, limit);
    return SHOAL_OK;
}

static const char *kind_text(shoal_store_kind kind)
{
    return kind == SHOAL_STORE_BLOBS ? "blobs" : "feature vectors";
}

/* The collection the batch goes into, created with the batch's shape if
 * it does not exist, refused if its shape differs. Inside the transaction. */
static shoal_err collection_for(shoal_store *st, const char *name, const shoal_example *first,
                                store_collection *coll, shoal_errinfo *ei)
{
    shoal_store_kind kind = first->features ? SHOAL_STORE_FEATURES : SHOAL_STORE_BLOBS;
    size_t features = first->features ? first->feature_count : 0;
    shoal_err err = shoal_store_find_collection(st, name, coll, ei);
    if (!err) {
        if (coll->kind != kind)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s: collection \"%s\" holds %s, not %s: use another "
                                     "collection, or drop this one to change its kind",
                                     st->path, name, kind_text(coll->kind), kind_text(kind));
        if (coll->feature_count != features)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s: collection \"%s\" holds vectors of %zu features; this "
                                     "example has %zu: use another collection, or drop this one "
                                     "to change its feature count",
                                     st->path, name, coll->feature_count, features);
        return SHOAL_OK;
    }
    if (err != SHOAL_ENOTFOUND)
        return err;
    sqlite3_stmt *s;
    if ((err = shoal_store_prepare(
             st, "INSERT INTO collection (name, kind, feature_count) VALUES (?, ?, ?)", &s, ei)))
        return err;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, (int)kind);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)features);
    if (sqlite3_step(s) == SQLITE_DONE) {
        coll->id = sqlite3_last_insert_rowid(st->db);
        coll->kind = kind;
        coll->feature_count = features;
    } else {
        err = shoal_store_db_error(st, ei, "cannot create the collection");
    }
    sqlite3_finalize(s);
    return err;
}

static shoal_err insert(shoal_store *st, const store_collection *coll, const shoal_example *ex,
                        float weight, shoal_errinfo *ei)
{
    if (!st->insert_example &&
        sqlite3_prepare_v3(st->db,
                           "INSERT INTO example (collection, timestamp_ms, label, weight, "
                           "payload, bytes) VALUES (?, ?, ?, ?, ?, ?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &st->insert_example, NULL) != SQLITE_OK) {
        st->insert_example = NULL;
        return shoal_store_db_error(st, ei, "cannot prepare a statement");
    }
    size_t len = shoal_store_stored_size(st, ex);
    shoal_store_encode(st, coll, ex, weight, st->scratch);
    sqlite3_stmt *s = st->insert_example;
    sqlite3_bind_int64(s, 1, coll->id);
    sqlite3_bind_int64(s, 2, ex->timestamp_ms);
    if (st->key) { /* sealed inside the payload */
        sqlite3_bind_null(s, 3);
        sqlite3_bind_null(s, 4);
    } else {
        sqlite3_bind_int(s, 3, ex->label);
        sqlite3_bind_double(s, 4, weight);
    }
    /* zeroblob-free empty blobs: SQLite stores a NULL for a NULL pointer,
     * so bind a valid one. */
    sqlite3_bind_blob64(s, 5, len ? st->scratch : (const void *)"", len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)len);
    shoal_err err = SHOAL_OK;
    if (sqlite3_step(s) != SQLITE_DONE)
        err = shoal_store_db_error(st, ei, "cannot add the example");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return err;
}

shoal_err shoal_store_add_batch(shoal_store *st, const char *collection,
                                const shoal_example *examples, size_t count, int64_t now_ms,
                                shoal_errinfo *ei)
{
    if (!st || (count && !examples))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_add: NULL argument");
    if (!collection || !*collection || strlen(collection) > 255)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: a collection name must be 1 to 255 bytes long", st->path);
    if (count == 0)
        return SHOAL_OK;
    size_t largest = 0;
    shoal_err err;
    /* Everything is checked before anything is written. */
    for (size_t i = 0; i < count; i++) {
        if ((err = check_example(st, &examples[i], i, count, &examples[0], ei)))
            return err;
        size_t len = shoal_store_stored_size(st, &examples[i]);
        if (len > largest)
            largest = len;
    }
    if (largest > st->scratch_cap) {
        uint8_t *grown = shoal_realloc(st->scratch, largest);
        if (!grown)
            return shoal_store_nomem(st, ei, "cannot encode the example");
        st->scratch = grown;
        st->scratch_cap = largest;
    }
    if ((err = shoal_store_begin(st, ei)))
        return err;
    store_collection coll;
    err = collection_for(st, collection, &examples[0], &coll, ei);
    for (size_t i = 0; i < count && !err; i++)
        err = insert(st, &coll, &examples[i], stored_weight(&examples[i]), ei);
    if (!err && !st->retention.on_demand_only) {
        uint64_t deleted;
        err = shoal_store_apply_retention(st, &st->retention, now_ms, &deleted, ei);
    }
    return shoal_store_end(st, err, ei);
}

shoal_err shoal_store_add(shoal_store *st, const char *collection, const shoal_example *example,
                          int64_t now_ms, shoal_errinfo *ei)
{
    if (!example)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_add: NULL example");
    return shoal_store_add_batch(st, collection, example, 1, now_ms, ei);
}
