/* Shoal: chunked transfer of models and updates.
 *
 * A model (server to device, ModelChunk) or an update (device to server,
 * ReportChunk) larger than one message travels as chunks: byte ranges
 * [offset, offset + len) of a blob of `total` bytes, sent in order, each at
 * most max_chunk bytes. The sender splits with a shoal_chunker; the receiver
 * puts them back together with a shoal_reassembler, which refuses gaps,
 * overlaps, a changed total, ranges past the total, empty or oversize
 * chunks, too many chunks and totals over its limit.
 *
 * Resuming: a reassembler's acknowledged offset (shoal_reassembler_acked) is
 * the length of the prefix it holds. When an upload is cut off, the server
 * keeps the reassembler, tells the reconnecting device that offset
 * (CheckInResult.Accepted.upload_resume_offset) and the device continues
 * with shoal_chunker_resume.
 *
 * Objects are not thread-safe; distinct objects may be used concurrently. */
#ifndef SHOAL_CHUNK_H
#define SHOAL_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal.pb-c.h"

/* Upper bound on what a ModelChunk or ReportChunk Envelope adds around its
 * data (tags, lengths, offsets and a 64-byte id). */
#define SHOAL_CHUNK_ENVELOPE_OVERHEAD 128u

/* One chunk: `len` bytes at `data` (borrowed) holding [offset, offset+len)
 * of a blob of `total` bytes. */
typedef struct shoal_chunk {
    uint64_t offset;
    uint64_t total;
    const uint8_t *data;
    size_t len;
} shoal_chunk;

/* Largest chunk payload whose ModelChunk/ReportChunk Envelope fits in
 * max_message_bytes (0 when it is too small for any). */
SHOAL_API size_t shoal_chunk_max_payload(size_t max_message_bytes);

/* ---- splitting ----------------------------------------------------------- */

/* Caller-allocated splitter over a borrowed blob; no cleanup needed. */
typedef struct shoal_chunker {
    const uint8_t *bytes;
    size_t total;
    size_t max_chunk;
    size_t offset; /* start of the next chunk */
} shoal_chunker;

/* Prepares to split bytes[0..total) into chunks of at most max_chunk bytes.
 * SHOAL_EINVAL when total or max_chunk is 0 or bytes is NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_chunker_init(shoal_chunker *c, const uint8_t *bytes,
                                                       size_t total, size_t max_chunk);

/* The next chunk: SHOAL_ROW with *out filled (out->data points into the
 * blob), or SHOAL_DONE when all bytes have been produced. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_chunker_next(shoal_chunker *c, shoal_chunk *out);

/* Continues from `acked_offset` (what the receiver reported holding):
 * the next chunk starts there. SHOAL_EINVAL (no change) when it is past the
 * total. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_chunker_resume(shoal_chunker *c, uint64_t acked_offset);

/* ---- reassembly ---------------------------------------------------------- */

typedef struct shoal_reassembly_limits {
    uint64_t max_total;  /* largest blob accepted, bytes (>= 1) */
    size_t max_chunk;    /* largest chunk payload, bytes (>= 1) */
    uint32_t max_chunks; /* most chunks per blob (>= 1), counted across resumes */
} shoal_reassembly_limits;

typedef struct shoal_reassembler shoal_reassembler;

/* A reassembler for one blob. `what` ("ModelChunk", "ReportChunk") starts
 * every error message and is copied. SHOAL_EINVAL for a zero limit or NULL
 * argument, SHOAL_ENOMEM. Free with shoal_reassembler_free. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_reassembler_new(const char *what,
                                                          const shoal_reassembly_limits *limits,
                                                          shoal_reassembler **out);
SHOAL_API void shoal_reassembler_free(shoal_reassembler *r);

/* Adds a chunk (its bytes are copied). Returns SHOAL_OK when more bytes are
 * expected, SHOAL_DONE when this chunk completed the blob. Errors leave the
 * reassembler exactly as it was, with ei naming the violation:
 *   SHOAL_EPROTO  empty chunk; total 0 or different from the first chunk's;
 *                 offset after the acknowledged offset (gap) or before it
 *                 (overlap); range past the total or overflowing;
 *   SHOAL_ELIMIT  total above max_total, chunk above max_chunk, one chunk
 *                 more than max_chunks;
 *   SHOAL_ESTATE  the blob is already complete;
 *   SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_reassembler_add(shoal_reassembler *r,
                                                          const shoal_chunk *chunk,
                                                          shoal_errinfo *ei);

/* Bytes held: every byte below this offset has arrived, none above. */
SHOAL_API uint64_t shoal_reassembler_acked(const shoal_reassembler *r);
/* The blob's total (0 before the first chunk). */
SHOAL_API uint64_t shoal_reassembler_total(const shoal_reassembler *r);
/* Chunks accepted so far. */
SHOAL_API uint32_t shoal_reassembler_chunks(const shoal_reassembler *r);
/* Non-zero once every byte has arrived. */
SHOAL_API int shoal_reassembler_complete(const shoal_reassembler *r);
/* The blob once complete (NULL before), valid until the reassembler is
 * freed; *len receives its size. */
SHOAL_API const uint8_t *shoal_reassembler_bytes(const shoal_reassembler *r, size_t *len);

/* The bytes received so far, complete or not: *len gets the acknowledged
 * offset, and every byte below it is at the pointer (NULL with *len 0
 * before the first chunk). Valid until the next add, take or free: a
 * receiver checks each chunk's bytes right after adding it. */
SHOAL_API const uint8_t *shoal_reassembler_received(const shoal_reassembler *r, size_t *len);

/* Hands over the complete blob: the caller owns it (free with shoal_free)
 * and *len receives its size. NULL (and *len 0) before the blob is
 * complete. Afterwards the reassembler holds no bytes: only
 * shoal_reassembler_free may follow. */
SHOAL_API uint8_t *shoal_reassembler_take(shoal_reassembler *r, size_t *len);

/* ---- message helpers ----------------------------------------------------- */

/* Views a decoded ModelChunk / ReportChunk as a shoal_chunk (borrowing its
 * data). */
SHOAL_API shoal_chunk shoal_chunk_from_model(const Shoal__ModelChunk *msg);
SHOAL_API shoal_chunk shoal_chunk_from_report(const Shoal__ReportChunk *msg);

/* Checkpoint skip: non-zero when the model of `accepted` must be
 * downloaded, i.e. the `held_len` bytes at `held` (the device's
 * CheckIn.held_checkpoint_id; may be NULL with held_len 0) are not the
 * accepted checkpoint_id. Device and server both call it, so they agree on
 * whether ModelChunks follow. */
SHOAL_API int shoal_model_download_needed(const Shoal__CheckInResult__Accepted *accepted,
                                          const uint8_t *held, size_t held_len);

#endif
