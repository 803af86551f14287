#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/rng.h"
#include "store_int.h"

struct shoal_store_iter {
    shoal_store *st;
    store_collection coll;
    int64_t *ids;   /* the selection, in this epoch's order */
    int64_t *first; /* the selection in the order of the seed given at
                       creation, for shoal_store_iter_read (NULL until
                       its first call) */
    size_t count;
    size_t pos;    /* next index into ids */
    uint64_t seed; /* the seed given at creation */
    sqlite3_stmt *fetch;
    /* Encrypted feature collections: one opened example (header + floats). */
    uint8_t *plain;
    size_t plain_len;
    /* Blob collections: this batch's blobs, and where each starts. */
    uint8_t *arena;
    size_t arena_cap;
    size_t *offsets;
    size_t offsets_cap;
};

static int by_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The canonical order (ascending id) shuffled by `seed`: the order depends
 * on the seed and the selected set only, not on earlier epochs.
 * Fisher-Yates with unbiased draws (Knuth, TAOCP vol. 2, 3.4.2, Algorithm
 * P). */
static void shuffle_ids(int64_t *ids, size_t count, uint64_t seed)
{
    if (count > 1)
        qsort(ids, count, sizeof *ids, by_id);
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    for (size_t i = count; i > 1; i--) {
        size_t j = (size_t)shoal_rng_below(&rng, i);
        int64_t t = ids[i - 1];
        ids[i - 1] = ids[j];
        ids[j] = t;
    }
}

static void shuffle(shoal_store_iter *it, uint64_t seed)
{
    shuffle_ids(it->ids, it->count, seed);
    it->pos = 0;
}

static void wipe_arena(shoal_store_iter *it)
{
    if (it->st->key && it->arena)
        sodium_memzero(it->arena, it->arena_cap);
}

void shoal_store_iter_free(shoal_store_iter *it)
{
    if (!it)
        return;
    sqlite3_finalize(it->fetch);
    if (it->plain)
        sodium_memzero(it->plain, it->plain_len);
    wipe_arena(it);
    shoal_free(it->plain);
    shoal_free(it->arena);
    shoal_free(it->offsets);
    shoal_free(it->ids);
    shoal_free(it->first);
    shoal_free(it);
}

static shoal_err select_ids(shoal_store_iter *it, const shoal_store_criteria *c, shoal_errinfo *ei)
{
    shoal_store *st = it->st;
    sqlite3_stmt *s;
    shoal_err err = shoal_store_select(st, "SELECT id FROM example", "", c, 1, it->coll.id, &s, ei);
    if (err)
        return err;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (it->count == cap) {
            size_t grown_cap = cap ? cap * 2 : 256;
            int64_t *grown = grown_cap > SIZE_MAX / sizeof *grown
                                 ? NULL
                                 : shoal_realloc(it->ids, grown_cap * sizeof *grown);
            if (!grown) {
                err = shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                        "%s: out of memory selecting more than %zu examples of "
                                        "\"%s\" (set criteria.max_examples)",
                                        st->path, it->count, c->collection);
                break;
            }
            it->ids = grown;
            cap = grown_cap;
        }
        it->ids[it->count++] = sqlite3_column_int64(s, 0);
    }
    if (!err && rc != SQLITE_DONE)
        err = shoal_store_db_error(st, ei, "cannot select examples");
    sqlite3_finalize(s);
    /* The array grew by doubling: give back what the selection does not
     * use, so that it holds 8 bytes per example as documented. */
    if (!err && it->count && it->count < cap) {
        int64_t *fit = shoal_realloc(it->ids, it->count * sizeof *fit);
        if (fit)
            it->ids = fit;
    }
    return err;
}

shoal_err shoal_store_iter_new(shoal_store *st, const shoal_store_criteria *criteria, uint64_t seed,
                               shoal_store_iter **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_iter_new: out is NULL");
    *out = NULL;
    if (!st || !criteria)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_store_iter_new: NULL argument");
    if (!criteria->collection)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: iteration needs criteria.collection",
                                 st->path);
    shoal_err err = shoal_store_check_criteria(st, criteria, ei);
    if (err)
        return err;
    shoal_store_iter *it = shoal_calloc(1, sizeof *it);
    if (!it)
        return shoal_store_nomem(st, ei, "cannot start iterating");
    it->st = st;
    err = shoal_store_find_collection(st, criteria->collection, &it->coll, ei);
    if (err == SHOAL_ENOTFOUND)
        err = shoal_errinfo_set(ei, SHOAL_ENOTFOUND, "%s: no collection \"%s\"", st->path,
                                criteria->collection);
    if (!err && st->key && it->coll.kind == SHOAL_STORE_FEATURES) {
        it->plain_len = STORE_HEADER_BYTES + 4 * it->coll.feature_count;
        if (!(it->plain = shoal_malloc(it->plain_len)))
            err = shoal_store_nomem(st, ei, "cannot start iterating");
    }
    if (!err)
        err = shoal_store_prepare(st,
                                  "SELECT timestamp_ms, label, weight, payload FROM example "
                                  "WHERE id = ?1 AND collection = ?2",
                                  &it->fetch, ei);
    if (!err)
        err = select_ids(it, criteria, ei);
    if (err) {
        shoal_store_iter_free(it);
        return err;
    }
    shuffle(it, seed);
    it->seed = seed;
    *out = it;
    return SHOAL_OK;
}

uint64_t shoal_store_iter_size(const shoal_store_iter *it)
{
    return it ? it->count : 0;
}

shoal_store_kind shoal_store_iter_kind(const shoal_store_iter *it)
{
    return it ? it->coll.kind : SHOAL_STORE_FEATURES;
}

size_t shoal_store_iter_feature_count(const shoal_store_iter *it)
{
    return it ? it->coll.feature_count : 0;
}

void shoal_store_iter_rewind(shoal_store_iter *it, uint64_t epoch_seed)
{
    if (it)
        shuffle(it, epoch_seed);
}

static shoal_err damaged(shoal_store_iter *it, int64_t id, const char *what, shoal_errinfo *ei)
{
    return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                             "%s: example %lld is damaged (%s): delete it, or reset the store "
                             "with shoal_store_destroy()",
                             it->st->path, (long long)id, what);
}

static shoal_err reserve_arena(shoal_store_iter *it, size_t need, shoal_errinfo *ei)
{
    if (need == 0)
        need = 1; /* so that an empty blob still points into the arena */
    if (need <= it->arena_cap)
        return SHOAL_OK;
    size_t cap = it->arena_cap ? it->arena_cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *grown = shoal_malloc(cap);
    if (!grown)
        return shoal_store_nomem(it->st, ei, "cannot read a batch of blobs");
    /* A fresh block rather than realloc, so decrypted blobs of an
     * encrypted store are wiped, not left behind in freed memory. */
    if (it->arena) {
        memcpy(grown, it->arena, it->arena_cap);
        wipe_arena(it);
        shoal_free(it->arena);
    }
    it->arena = grown;
    it->arena_cap = cap;
    return SHOAL_OK;
}

/* Reads the example of the current row into slot `k` of the batch. */
static shoal_err read_row(shoal_store_iter *it, int64_t id, size_t k, shoal_store_batch *b,
                          size_t *arena_used, shoal_errinfo *ei)
{
    shoal_store *st = it->st;
    sqlite3_stmt *s = it->fetch;
    int64_t ts = sqlite3_column_int64(s, 0);
    const uint8_t *payload = sqlite3_column_blob(s, 3);
    size_t len = (size_t)sqlite3_column_bytes(s, 3);
    /* NULL with a length: SQLite ran out of memory converting the value. */
    if (!payload && (len || (sqlite3_errcode(st->db) & 0xff) == SQLITE_NOMEM))
        return shoal_store_db_error(st, ei, "cannot read an example");
    int32_t label;
    float weight;
    const size_t sealed_extra = STORE_NONCE_BYTES + STORE_MAC_BYTES;
    if (it->coll.kind == SHOAL_STORE_FEATURES) {
        size_t fc = it->coll.feature_count;
        float *x = b->x + k * fc;
        if (st->key) {
            if (len != sealed_extra + it->plain_len)
                return damaged(it, id, "wrong length", ei);
            if (shoal_store_unseal(st, payload, len, it->plain, it->coll.id, ts, &label, &weight))
                goto forged;
            shoal_store_floats_from_le(it->plain + STORE_HEADER_BYTES, fc, x);
            sodium_memzero(it->plain, it->plain_len);
        } else {
            if (len != 4 * fc)
                return damaged(it, id, "wrong length", ei);
            shoal_store_floats_from_le(payload, fc, x);
        }
    } else {
        size_t start = *arena_used, plain_len = len;
        if (st->key) {
            if (len < sealed_extra + STORE_HEADER_BYTES)
                return damaged(it, id, "too short", ei);
            plain_len = len - sealed_extra;
        }
        shoal_err err = reserve_arena(it, start + plain_len, ei);
        if (err)
            return err;
        if (st->key) {
            if (shoal_store_unseal(st, payload, len, it->arena + start, it->coll.id, ts, &label,
                                   &weight))
                goto forged;
            it->offsets[k] = start + STORE_HEADER_BYTES;
            b->blob_len[k] = plain_len - STORE_HEADER_BYTES;
        } else {
            if (len)
                memcpy(it->arena + start, payload, len);
            it->offsets[k] = start;
            b->blob_len[k] = len;
        }
        *arena_used = start + plain_len;
    }
    if (!st->key) {
        label = (int32_t)sqlite3_column_int64(s, 1);
        weight = (float)sqlite3_column_double(s, 2);
    }
    b->y[k] = label;
    if (b->weight)
        b->weight[k] = weight;
    if (b->timestamp_ms)
        b->timestamp_ms[k] = ts;
    return SHOAL_OK;
forged:
    return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                             "%s: example %lld fails authentication: the file was altered or "
                             "damaged; delete the example, or reset the store with "
                             "shoal_store_destroy()",
                             st->path, (long long)id);
}

shoal_err shoal_store_iter_next(shoal_store_iter *it, size_t batch_size, shoal_store_batch *b,
                                shoal_errinfo *ei)
{
    if (!it || !b || batch_size == 0 || !b->y)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "shoal_store_iter_next: needs an iterator, a batch with y, and "
                                 "batch_size >= 1");
    int blobs = it->coll.kind == SHOAL_STORE_BLOBS;
    if (blobs ? !b->blob || !b->blob_len : !b->x)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%s: a batch of %s needs %s", it->st->path,
                                 blobs ? "blobs" : "feature vectors",
                                 blobs ? "blob and blob_len" : "x");
    b->count = 0;
    if (blobs && batch_size > it->offsets_cap) {
        size_t *grown = shoal_mallocarray(batch_size, sizeof *grown);
        if (!grown)
            return shoal_store_nomem(it->st, ei, "cannot read a batch of blobs");
        shoal_free(it->offsets);
        it->offsets = grown;
        it->offsets_cap = batch_size;
    }
    wipe_arena(it);
    const size_t start = it->pos;
    size_t filled = 0, arena_used = 0;
    shoal_err err = SHOAL_OK;
    while (filled < batch_size && it->pos < it->count && !err) {
        int64_t id = it->ids[it->pos++];
        sqlite3_bind_int64(it->fetch, 1, id);
        sqlite3_bind_int64(it->fetch, 2, it->coll.id);
        int rc = sqlite3_step(it->fetch);
        if (rc == SQLITE_ROW) {
            if (!(err = read_row(it, id, filled, b, &arena_used, ei)))
                filled++;
        } else if (rc != SQLITE_DONE) { /* DONE: deleted since the selection */
            err = shoal_store_db_error(it->st, ei, "cannot read an example");
        }
        sqlite3_reset(it->fetch);
    }
    if (err) {
        it->pos = start;
        wipe_arena(it);
        return err;
    }
    if (filled == 0)
        return SHOAL_DONE;
    if (blobs)
        for (size_t k = 0; k < filled; k++)
            b->blob[k] = it->arena + it->offsets[k];
    b->count = filled;
    return SHOAL_ROW;
}

/* Fetches example `id` into slot k of a feature batch; SHOAL_ENOTFOUND when
 * it is gone. */
static shoal_err fetch_one(shoal_store_iter *it, int64_t id, size_t k, shoal_store_batch *b,
                           shoal_errinfo *ei)
{
    sqlite3_bind_int64(it->fetch, 1, id);
    sqlite3_bind_int64(it->fetch, 2, it->coll.id);
    int rc = sqlite3_step(it->fetch);
    size_t unused = 0;
    shoal_err err;
    if (rc == SQLITE_ROW)
        err = read_row(it, id, k, b, &unused, ei);
    else if (rc == SQLITE_DONE)
        err = shoal_errinfo_set(ei, SHOAL_ENOTFOUND,
                                "%s: example %lld was deleted after it was selected; "
                                "hold a snapshot (shoal_store_snapshot_begin) while reading a "
                                "selection by position",
                                it->st->path, (long long)id);
    else
        err = shoal_store_db_error(it->st, ei, "cannot read an example");
    sqlite3_reset(it->fetch);
    return err;
}

shoal_err shoal_store_iter_read(shoal_store_iter *it, const uint32_t *positions, size_t n,
                                shoal_store_batch *b, shoal_errinfo *ei)
{
    if (b)
        b->count = 0;
    if (!it || !b || !b->y || !b->x || (n && !positions))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "shoal_store_iter_read: needs an iterator, positions and a "
                                 "batch with x and y");
    if (it->coll.kind != SHOAL_STORE_FEATURES)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "%s: shoal_store_iter_read reads feature collections only; "
                                 "iterate blobs with shoal_store_iter_next",
                                 it->st->path);
    b->count = 0;
    for (size_t k = 0; k < n; k++)
        if (positions[k] >= it->count)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "%s: position %u is outside the selection of %zu examples",
                                     it->st->path, positions[k], it->count);
    if (!it->first && it->count) {
        /* The creation order, kept apart from ids (which rewinds
         * reshuffle): 8 more bytes per selected example. */
        it->first = shoal_mallocarray(it->count, sizeof *it->first);
        if (!it->first)
            return shoal_store_nomem(it->st, ei, "cannot read examples by position");
        memcpy(it->first, it->ids, it->count * sizeof *it->first);
        shuffle_ids(it->first, it->count, it->seed);
    }
    for (size_t k = 0; k < n; k++) {
        shoal_err err = fetch_one(it, it->first[positions[k]], k, b, ei);
        if (err) {
            if (it->st->key)
                sodium_memzero(b->x, n * it->coll.feature_count * sizeof(float));
            return err;
        }
    }
    b->count = n;
    return SHOAL_ROW;
}
