/* Shoal: the on-device example store.
 *
 * The app writes training examples into a SQLite database as they occur;
 * a training session selects some of them with the plan's criteria
 * (collection, time window, maximum count) and reads them back as shuffled
 * mini-batches. Retention limits (age, rows, payload bytes) keep the store
 * bounded, and example payloads can be encrypted at rest with a key the app
 * supplies.
 *
 * Data model. A store holds named collections. Each collection holds
 * examples of one kind, fixed by its first example: float feature vectors of
 * one length (SHOAL_STORE_FEATURES), or opaque byte strings of any length
 * (SHOAL_STORE_BLOBS). An example carries a payload (the features or the
 * blob), an int32 label, a timestamp (unix milliseconds, supplied by the
 * app) and a weight.
 *
 * Durability. The database runs in WAL mode with synchronous=FULL: an add
 * that returned SHOAL_OK survives a crash of the app and a power loss of the
 * device (NORMAL would survive the former only; the store holds the only
 * copy of data that cannot be logged again, so it pays one fsync per
 * transaction). A crash during an add loses that add only. Group adds with
 * shoal_store_add_batch when examples arrive quickly: one transaction, one
 * fsync.
 *
 * Time and randomness come from the caller: timestamps and "now" are int64
 * unix milliseconds passed in, and shuffles are driven by caller seeds
 * (xoshiro256**, shoal/rng.h), so an order is reproducible. Encryption
 * nonces come from libsodium's randombytes.
 *
 * Encryption (optional, per store, fixed when the store is created). With a
 * key, each example's label, weight and payload are sealed with
 * crypto_secretbox (XSalsa20-Poly1305) under a fresh random nonce stored
 * beside the ciphertext; the sealed text also binds the example to its
 * collection and timestamp, so rows cannot be swapped unnoticed. What stays
 * in clear, because selection and retention need it: collection names and
 * kinds, feature counts, timestamps, payload sizes and example counts. A
 * wrong key is refused when the store is opened (SHOAL_ECRYPTO), never
 * turned into garbage examples.
 *
 * Errors a person reads (shoal_errinfo) name the database file and say what
 * to do. A damaged file, a file that is not SQLite, or a SQLite database of
 * another app is refused with SHOAL_EFORMAT; the way out is
 * shoal_store_destroy(path), which deletes the store and every example in
 * it.
 *
 * Threads. A shoal_store handle (and the iterators made from it) must be
 * used by one thread at a time. Several handles may be open on the same file
 * at once, in one thread or many, or in several processes: the usual set-up
 * is one handle on which the app keeps logging and another through which
 * training reads. Writers wait for each other up to the busy timeout;
 * readers never block writers. This needs SQLite built thread-safe (the
 * default, SQLITE_THREADSAFE=1 or 2).
 *
 * Memory. All Shoal allocations go through shoal/alloc.h's hook; SQLite
 * allocates through its own (sqlite3_config). The encryption key lives in
 * sodium_malloc'd memory and is wiped on close. Iteration holds the selected
 * examples' row ids (8 bytes each) and one batch, never the whole store. */
#ifndef SHOAL_STORE_H
#define SHOAL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Size of an encryption key (crypto_secretbox_KEYBYTES). */
#define SHOAL_STORE_KEY_BYTES 32

/* Bytes an encrypted payload takes beyond its plaintext: nonce, MAC and the
 * sealed header (label, weight, collection, timestamp). Counted by the
 * byte retention limit. */
#define SHOAL_STORE_SEAL_OVERHEAD (24 + 16 + 24)

typedef struct shoal_store shoal_store;
typedef struct shoal_store_iter shoal_store_iter;

/* The kind of a collection, fixed by its first example. */
typedef enum shoal_store_kind {
    SHOAL_STORE_FEATURES = 1, /* float vectors, one length per collection */
    SHOAL_STORE_BLOBS = 2,    /* opaque byte strings of any length */
} shoal_store_kind;

/* Retention limits. Zero means "no limit" for every field, so a
 * zero-initialised struct keeps everything. Deletion is oldest first: by
 * timestamp, then by order of insertion. */
typedef struct shoal_store_retention {
    int64_t max_age_ms;          /* examples with timestamp < now - max_age_ms go */
    uint64_t max_examples;       /* per collection */
    uint64_t max_bytes;          /* per collection, payload bytes as stored */
    uint64_t store_max_examples; /* across all collections */
    uint64_t store_max_bytes;    /* across all collections, payload bytes as stored */
    /* 0: every add applies the limits in its own transaction (so the store
     * never exceeds them); nonzero: only shoal_store_enforce_retention
     * does. */
    int on_demand_only;
} shoal_store_retention;

/* Options for shoal_store_open. A zero-initialised struct (or NULL) opens
 * an unencrypted store with a 5 s busy timeout and no retention limits. */
typedef struct shoal_store_options {
    /* SHOAL_STORE_KEY_BYTES bytes, or NULL for an unencrypted store. Copied
     * into locked, guarded memory; the caller may wipe its copy after
     * shoal_store_open returns. A new store is created encrypted iff a key
     * is given; an existing store must be opened the way it was created. */
    const uint8_t *key;
    size_t key_len; /* SHOAL_STORE_KEY_BYTES when key is not NULL */
    /* How long a writer waits for another handle's write to finish before
     * giving up with SHOAL_EAGAIN. 0: 5000 ms. */
    int busy_timeout_ms;
    shoal_store_retention retention;
    /* Most memory SQLite's page cache of this handle may hold, in KiB.
     * 0: SQLite's default (2000 KiB). Smaller saves memory on a device at
     * the cost of more reads from the file. */
    int cache_kib;
} shoal_store_options;

/* Opens the store at `path`, creating it (and its schema) if the file does
 * not exist; a handle for one thread. `opts` may be NULL (defaults, see
 * shoal_store_options); it is copied. On success *out owns a handle to free
 * with shoal_store_close; on error *out is NULL.
 *
 * Returns SHOAL_OK; SHOAL_EINVAL for a NULL path/out, a key of the wrong
 * length or a negative timeout; SHOAL_EIO if the file cannot be opened,
 * created or written; SHOAL_EFORMAT for a file that is not SQLite or is damaged, a
 * SQLite database of another application (PRAGMA application_id), or a
 * store written by a newer Shoal (PRAGMA user_version); SHOAL_ECRYPTO for an
 * encrypted store opened without a key or with the wrong one, an
 * unencrypted store opened with a key, or libsodium failing to initialise;
 * SHOAL_EAGAIN if another handle held the database locked for longer than
 * the busy timeout; SHOAL_ENOMEM. Every error fills `ei` (may be NULL) with
 * a message naming the file.
 *
 * Thread-safe with respect to other handles. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_open(const char *path,
                                                     const shoal_store_options *opts,
                                                     shoal_store **out, shoal_errinfo *ei);

/* Closes the handle: finalises its statements, closes the connection and
 * wipes and frees the key. Every iterator made from it must have been freed
 * first. NULL is a no-op. Committed examples are already durable; closing
 * adds nothing to that. Call it from the thread using the handle. */
SHOAL_API void shoal_store_close(shoal_store *st);

/* Deletes the store at `path`: the database and its -wal, -shm and -journal
 * files. This is the reset procedure for a store that cannot be opened (a
 * damaged or foreign file, a lost key) and it deletes every example. Close
 * every handle on the file first, in every thread and process; deleting an
 * open store leaves those handles writing to a file nobody will read.
 * Missing files are not an error.
 *
 * Returns SHOAL_OK, SHOAL_EINVAL (NULL path), SHOAL_ENOMEM, or SHOAL_EIO if a
 * file exists but cannot be removed (ei names it). Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_destroy(const char *path, shoal_errinfo *ei);

/* One example, as the app adds it. All pointers are borrowed for the call.
 * Exactly one of features or blob describes the payload:
 *   - features/feature_count: feature_count >= 1 floats, stored bit for
 *     bit (little-endian on disk, whatever the host); blob must be NULL.
 *   - blob/blob_len: blob_len bytes (blob may be NULL when blob_len is 0);
 *     features must be NULL and feature_count 0.
 * weight: 0 (the zero-initialised value) stores 1.0; otherwise a finite
 * value > 0. */
typedef struct shoal_example {
    const float *features;
    size_t feature_count;
    const void *blob;
    size_t blob_len;
    int32_t label;
    int64_t timestamp_ms; /* when the example occurred, unix ms */
    float weight;
} shoal_example;

/* Adds one example to `collection` (a non-empty name; the collection is
 * created by its first example, which fixes its kind and feature count) in
 * one transaction, and, unless retention is on_demand_only, applies the
 * retention limits in that same transaction with `now_ms` (unix ms) as the
 * current time. On SHOAL_OK the example is durable.
 *
 * Returns SHOAL_OK; SHOAL_EINVAL for a bad argument or an example whose kind
 * or feature count differs from its collection's (ei says which and what
 * the collection holds); SHOAL_ELIMIT if the payload is larger than SQLite
 * accepts; SHOAL_EAGAIN if another handle's write held the lock past the
 * busy timeout; SHOAL_EIO (disk full, I/O error); SHOAL_EFORMAT (the file
 * turned out damaged); SHOAL_ENOMEM. On any error nothing was added or
 * deleted. Not thread-safe on one handle. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_add(shoal_store *st, const char *collection,
                                                    const shoal_example *example, int64_t now_ms,
                                                    shoal_errinfo *ei);

/* Adds `count` examples to `collection` in ONE transaction: all of them or,
 * on any error, none. Every example is checked before anything is written;
 * ei names the index of the first bad one. Retention as in shoal_store_add.
 * count 0 is a no-op. Return codes and thread safety as shoal_store_add. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_add_batch(shoal_store *st, const char *collection,
                                                          const shoal_example *examples,
                                                          size_t count, int64_t now_ms,
                                                          shoal_errinfo *ei);

/* Which examples a session uses. A zero-initialised struct selects the
 * whole store (or the whole collection). */
typedef struct shoal_store_criteria {
    /* The collection; required by shoal_store_iter_new. NULL in
     * shoal_store_count and shoal_store_delete: every collection. */
    const char *collection;
    int64_t start_ms; /* timestamp >= start_ms; 0: no lower bound */
    int64_t end_ms;   /* timestamp < end_ms; 0: no upper bound */
    /* At most this many examples, the newest (by timestamp, then by order
     * of insertion) of those in the window; 0: no limit. */
    uint64_t max_examples;
} shoal_store_criteria;

/* Number of examples `criteria` selects right now, into *count. A
 * collection that does not exist selects nothing (0, SHOAL_OK).
 *
 * Returns SHOAL_OK; SHOAL_EINVAL (NULL argument, end_ms <= start_ms when both
 * are set); SHOAL_EAGAIN, SHOAL_EIO, SHOAL_EFORMAT, SHOAL_ENOMEM from the
 * database. Not thread-safe on one handle. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_count(shoal_store *st,
                                                      const shoal_store_criteria *criteria,
                                                      uint64_t *count, shoal_errinfo *ei);

/* Deletes the examples `criteria` selects (max_examples: the newest that
 * many of the window) in one transaction; *deleted (may be NULL) receives
 * how many. Collections stay, with their kind and feature count. Return
 * codes and thread safety as shoal_store_count. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_delete(shoal_store *st,
                                                       const shoal_store_criteria *criteria,
                                                       uint64_t *deleted, shoal_errinfo *ei);

/* What a collection holds. */
typedef struct shoal_store_collection_info {
    shoal_store_kind kind;
    size_t feature_count;   /* SHOAL_STORE_FEATURES: floats per example; else 0 */
    uint64_t example_count; /* examples stored now */
    uint64_t payload_bytes; /* payload bytes as stored (what max_bytes limits) */
    int64_t oldest_ms;      /* timestamps of the oldest and newest example; */
    int64_t newest_ms;      /* both 0 when the collection is empty */
} shoal_store_collection_info;

/* Fills the caller's *info for `collection`. Returns SHOAL_OK,
 * SHOAL_ENOTFOUND (no such collection), SHOAL_EINVAL, or a database error
 * as shoal_store_count. Not thread-safe on one handle. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_describe(shoal_store *st, const char *collection,
                                                         shoal_store_collection_info *info,
                                                         shoal_errinfo *ei);

/* Deletes `collection` and all its examples in one transaction, so that
 * the name can be used again with another kind or feature count. Returns
 * SHOAL_OK, SHOAL_ENOTFOUND, SHOAL_EINVAL, or a database error as
 * shoal_store_count. Iterators over the collection (in any handle) return
 * no more of its examples. Not thread-safe on one handle. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_drop_collection(shoal_store *st,
                                                                const char *collection,
                                                                shoal_errinfo *ei);

/* Applies `retention` (or, when NULL, the limits given at open) now, in one
 * transaction, with `now_ms` (unix ms) as the current time: first age, then
 * per-collection rows and bytes, then store-wide rows and bytes; oldest
 * first each time. *deleted (may be NULL) receives how many examples went.
 * Return codes and thread safety as shoal_store_count. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_store_enforce_retention(shoal_store *st, const shoal_store_retention *retention,
                              int64_t now_ms, uint64_t *deleted, shoal_errinfo *ei);

/* Runs SQLite's integrity check over the whole file (reads all of it: for
 * start-up after a crash or a support tool, not for every open). Returns
 * SHOAL_OK, or SHOAL_EFORMAT with SQLite's first complaint and the reset
 * procedure in ei; database errors as shoal_store_count. Not thread-safe
 * on one handle. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_check(shoal_store *st, shoal_errinfo *ei);

/* ---- shuffled mini-batches ------------------------------------------------ */

/* Selects the examples `criteria` matches (criteria->collection required)
 * and orders them by a shuffle seeded with `seed`. The order depends only
 * on the seed and the selected set: the same seed over the same examples
 * gives the same order, and shoal_store_iter_rewind(it, s) gives the order
 * shoal_store_iter_new(..., s, ...) would. Holds 8 bytes per selected
 * example; examples are read batch by batch.
 *
 * Examples added after the selection are not part of it; selected examples
 * deleted afterwards (by retention, delete or drop in any handle) are
 * skipped when their turn comes.
 *
 * On success *out owns an iterator to free with shoal_store_iter_free,
 * before the store is closed. Returns SHOAL_OK; SHOAL_EINVAL; SHOAL_ENOTFOUND
 * (no such collection); SHOAL_ENOMEM (also when the selection is too large
 * to hold: set max_examples); database errors as shoal_store_count. The
 * iterator belongs to the store's thread. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_iter_new(shoal_store *st,
                                                         const shoal_store_criteria *criteria,
                                                         uint64_t seed, shoal_store_iter **out,
                                                         shoal_errinfo *ei);

/* Frees the iterator, wiping any decrypted examples it still holds. NULL is
 * a no-op. Call it from the store's thread, before shoal_store_close. */
SHOAL_API void shoal_store_iter_free(shoal_store_iter *it);

/* Number of examples selected (fixed at shoal_store_iter_new; 0 for
 * NULL). These three getters only read the iterator: any thread may call
 * them while no other call on it runs. */
SHOAL_API uint64_t shoal_store_iter_size(const shoal_store_iter *it);
/* The collection's kind and, for SHOAL_STORE_FEATURES, its feature count
 * (0 for blobs): the row length of batch->x. */
SHOAL_API shoal_store_kind shoal_store_iter_kind(const shoal_store_iter *it);
SHOAL_API size_t shoal_store_iter_feature_count(const shoal_store_iter *it);

/* Where shoal_store_iter_next puts a batch. The caller fills the buffer
 * pointers (room for batch_size entries each); the iterator fills them and
 * sets count.
 *   x:      SHOAL_STORE_FEATURES: batch_size * feature_count floats,
 *           row-major [example][feature]; ignored for blobs (may be NULL).
 *   y:      batch_size labels; required.
 *   weight, timestamp_ms: batch_size entries, or NULL if not wanted.
 *   blob, blob_len: SHOAL_STORE_BLOBS: batch_size entries each; blob[i]
 *           points into memory owned by the iterator, valid until the next
 *           shoal_store_iter_next, _rewind or _free on it. Ignored for
 *           feature collections (may be NULL). */
typedef struct shoal_store_batch {
    float *x;
    int32_t *y;
    float *weight;
    int64_t *timestamp_ms;
    const uint8_t **blob;
    size_t *blob_len;
    size_t count; /* out: examples in this batch, 1..batch_size */
} shoal_store_batch;

/* Fills `batch` with the next up to `batch_size` examples of this epoch.
 * Every selected example comes exactly once per epoch; the last batch of an
 * epoch may be short (count < batch_size).
 *
 * Returns SHOAL_ROW (batch->count >= 1 examples filled), SHOAL_DONE (the
 * epoch is over; count 0; call shoal_store_iter_rewind for another), or an
 * error: SHOAL_EINVAL (batch_size 0, missing buffers); SHOAL_ECRYPTO (a
 * sealed example fails authentication: the file was altered; ei names the
 * example); SHOAL_EFORMAT (a stored example is malformed); SHOAL_ENOMEM;
 * database errors as shoal_store_count. After an error the position is
 * where it was before the call, so the call can be retried. Same thread
 * as the store. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_iter_next(shoal_store_iter *it, size_t batch_size,
                                                          shoal_store_batch *batch,
                                                          shoal_errinfo *ei);

/* Starts a new epoch over the same selection, reshuffled with
 * `epoch_seed` (the order shoal_store_iter_new would give with that seed).
 * Blob pointers of the last batch become invalid. Cannot fail; NULL is a
 * no-op. Same thread as the store. */
SHOAL_API void shoal_store_iter_rewind(shoal_store_iter *it, uint64_t epoch_seed);

/* Random access into a selection of feature vectors, for a trainer that
 * draws its own mini-batches: reads the examples at `positions[0..n)`
 * (each < shoal_store_iter_size) of the order the iterator was created
 * with (its seed; rewinds do not change it) into batch->x and batch->y
 * (room for n each; weight and timestamp_ms filled when not NULL), and
 * sets batch->count to n. Position p names the same example on every
 * call, so reading 0..size-1 in order gives what shoal_store_iter_next
 * gave in the first epoch. The first call allocates 8 bytes per selected
 * example.
 *
 * Returns SHOAL_ROW; SHOAL_EINVAL (a position out of range, missing
 * buffers, a blob collection); SHOAL_ENOTFOUND (a selected example was
 * deleted since the selection; hold a snapshot, below, to rule that out);
 * the errors of shoal_store_iter_next. On error batch->count is 0 and the
 * batch contents are unspecified (wiped for an encrypted store). Same
 * thread as the store. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_iter_read(shoal_store_iter *it,
                                                          const uint32_t *positions, size_t n,
                                                          shoal_store_batch *batch,
                                                          shoal_errinfo *ei);

/* ---- snapshots ------------------------------------------------------------ */

/* Pins what this handle reads to the store as it is now (a read
 * transaction), until shoal_store_snapshot_end: examples other handles
 * add or delete meanwhile (the app logging while a session trains,
 * retention) are neither seen nor missed, so a selection made under the
 * snapshot stays whole. Other handles keep writing; SQLite's write-ahead
 * log grows until the snapshot ends (it cannot be checkpointed past it),
 * so hold one for a session, not for the app's lifetime. Writes through
 * this handle fail with SHOAL_EINVAL while it is held.
 *
 * Returns SHOAL_OK; SHOAL_EINVAL (NULL, or a snapshot already held);
 * database errors as shoal_store_count. Same thread as the store; the
 * iterators made from the handle read under the snapshot too. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_store_snapshot_begin(shoal_store *st, shoal_errinfo *ei);
/* Ends the snapshot (no-op without one). shoal_store_close ends it too. */
SHOAL_API void shoal_store_snapshot_end(shoal_store *st);

#ifdef __cplusplus
}
#endif

#endif
