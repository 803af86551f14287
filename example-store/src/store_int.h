/* Shoal example store: what store.c, add.c, retention.c, iter.c and
 * payload.c share.
 *
 * Schema (version 1; application_id "SHEX"):
 *   meta(key, value)        'encrypted' (0/1) and, when 1, 'key_check': a
 *                           secretbox of a known text, to tell a wrong key
 *                           at open instead of at the first example.
 *   collection              name, kind, feature_count, and running totals
 *                           example_count/payload_bytes kept by triggers, so
 *                           that retention on every add costs O(1) to check.
 *   example                 id (AUTOINCREMENT: never reused, so an iterator's
 *                           selected id names the same example or none),
 *                           collection, timestamp_ms, label, weight, payload,
 *                           bytes (= length(payload)).
 * Unencrypted rows keep label and weight in their columns and the payload
 * in clear (features as little-endian float32). Encrypted rows have NULL
 * label and weight; the payload is nonce || secretbox(header || payload)
 * with header = collection id (i64), timestamp (i64), label (i32), weight
 * (f32), all little-endian. */
#ifndef SHOAL_STORE_INT_H
#define SHOAL_STORE_INT_H

#include <sqlite3.h>
#include <stdint.h>

#include "shoal/store.h"

#define STORE_LOG "store"

#define STORE_NONCE_BYTES  24 /* crypto_secretbox_NONCEBYTES */
#define STORE_MAC_BYTES    16 /* crypto_secretbox_MACBYTES */
#define STORE_HEADER_BYTES 24 /* sealed header: collection, timestamp, label, weight */

struct shoal_store {
    sqlite3 *db;
    char *path;
    uint8_t *key; /* sodium_malloc'd, read-only; NULL: unencrypted */
    int busy_ms;  /* the busy timeout, also the WAL switch's retry budget */
    int snapshot; /* a read transaction is held (shoal_store_snapshot_begin) */
    shoal_store_retention retention;
    /* Statements every add uses, prepared once (NULL until first use). */
    sqlite3_stmt *find_collection;
    sqlite3_stmt *insert_example;
    /* Encoding buffer for adds, grown as needed. Encrypted stores seal in
     * place, so it holds ciphertext between calls; it is still wiped on
     * close. */
    uint8_t *scratch;
    size_t scratch_cap;
};

typedef struct store_collection {
    int64_t id;
    shoal_store_kind kind;
    size_t feature_count;
} store_collection;

/* A SQLite failure on st->db as a shoal_err, with a message naming the
 * file: SQLITE_NOMEM -> SHOAL_ENOMEM ("out of memory"), BUSY/LOCKED ->
 * SHOAL_EAGAIN, CORRUPT/NOTADB -> SHOAL_EFORMAT (with the reset procedure),
 * FULL -> SHOAL_EIO ("disk full"), TOOBIG -> SHOAL_ELIMIT, else SHOAL_EIO. */
shoal_err shoal_store_db_error(shoal_store *st, shoal_errinfo *ei, const char *doing);
shoal_err shoal_store_exec(shoal_store *st, const char *sql, shoal_errinfo *ei, const char *doing);
shoal_err shoal_store_prepare(shoal_store *st, const char *sql, sqlite3_stmt **stmt,
                              shoal_errinfo *ei);
shoal_err shoal_store_nomem(shoal_store *st, shoal_errinfo *ei, const char *doing);

/* BEGIN IMMEDIATE (waits for other writers up to the busy timeout). */
shoal_err shoal_store_begin(shoal_store *st, shoal_errinfo *ei);
/* COMMIT, or ROLLBACK when err is not SHOAL_OK; returns the first error. */
shoal_err shoal_store_end(shoal_store *st, shoal_err err, shoal_errinfo *ei);

/* Looks up a collection by name: SHOAL_OK, SHOAL_ENOTFOUND, or an error. */
shoal_err shoal_store_find_collection(shoal_store *st, const char *name, store_collection *coll,
                                      shoal_errinfo *ei);

/* Checks a criteria struct (window, name, limit). */
shoal_err shoal_store_check_criteria(shoal_store *st, const shoal_store_criteria *c,
                                     shoal_errinfo *ei);
/* Prepares `head` WHERE <criteria> [ORDER BY newest first LIMIT max when
 * `limited`] `tail`, with every parameter bound. */
shoal_err shoal_store_select(shoal_store *st, const char *head, const char *tail,
                             const shoal_store_criteria *c, int limited, int64_t collection_id,
                             sqlite3_stmt **out, shoal_errinfo *ei);

/* Applies the limits inside the caller's transaction. */
shoal_err shoal_store_apply_retention(shoal_store *st, const shoal_store_retention *r,
                                      int64_t now_ms, uint64_t *deleted, shoal_errinfo *ei);

/* ---- payload encoding (payload.c) ---------------------------------------- */

/* Bytes the stored payload of `ex` takes (plaintext, or sealed with the
 * overhead when the store is encrypted). */
size_t shoal_store_stored_size(const shoal_store *st, const shoal_example *ex);
/* Encodes `ex` into out (stored_size bytes): little-endian floats or the
 * blob, sealed under the store key when there is one. */
void shoal_store_encode(const shoal_store *st, const store_collection *coll,
                        const shoal_example *ex, float weight, uint8_t *out);
/* Opens a sealed payload of `len` bytes into `plain` (len - nonce - MAC
 * bytes) and checks that its header names this collection and timestamp.
 * Returns 0, or -1 when authentication or the binding fails. */
int shoal_store_unseal(const shoal_store *st, const uint8_t *sealed, size_t len, uint8_t *plain,
                       int64_t collection_id, int64_t timestamp_ms, int32_t *label, float *weight);

void shoal_store_put_le32(uint8_t *b, uint32_t v);
void shoal_store_put_le64(uint8_t *b, uint64_t v);
uint32_t shoal_store_get_le32(const uint8_t *b);
uint64_t shoal_store_get_le64(const uint8_t *b);
/* n floats <-> little-endian bytes, whatever the host order. */
void shoal_store_floats_to_le(const float *v, size_t n, uint8_t *out);
void shoal_store_floats_from_le(const uint8_t *b, size_t n, float *out);

#endif
