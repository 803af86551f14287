/* Chunk splitting and strictly ordered reassembly. */
#include "shoal/chunk.h"

#include <inttypes.h>
#include <string.h>

#include "shoal/alloc.h"

size_t shoal_chunk_max_payload(size_t max_message_bytes)
{
    return max_message_bytes > SHOAL_CHUNK_ENVELOPE_OVERHEAD
               ? max_message_bytes - SHOAL_CHUNK_ENVELOPE_OVERHEAD
               : 0;
}

shoal_err shoal_chunker_init(shoal_chunker *c, const uint8_t *bytes, size_t total, size_t max_chunk)
{
    if (!c || !bytes || total == 0 || max_chunk == 0)
        return SHOAL_EINVAL;
    c->bytes = bytes;
    c->total = total;
    c->max_chunk = max_chunk;
    c->offset = 0;
    return SHOAL_OK;
}

shoal_err shoal_chunker_next(shoal_chunker *c, shoal_chunk *out)
{
    if (!c || !out)
        return SHOAL_EINVAL;
    if (c->offset >= c->total)
        return SHOAL_DONE;
    size_t len = c->total - c->offset;
    if (len > c->max_chunk)
        len = c->max_chunk;
    out->offset = c->offset;
    out->total = c->total;
    out->data = c->bytes + c->offset;
    out->len = len;
    c->offset += len;
    return SHOAL_ROW;
}

shoal_err shoal_chunker_resume(shoal_chunker *c, uint64_t acked_offset)
{
    if (!c || acked_offset > c->total)
        return SHOAL_EINVAL;
    c->offset = (size_t)acked_offset;
    return SHOAL_OK;
}

struct shoal_reassembler {
    char *what;
    shoal_reassembly_limits limits;
    uint64_t total; /* 0 until the first chunk */
    uint64_t acked; /* bytes [0, acked) held */
    uint32_t chunks;
    uint8_t *buf;
    size_t cap;
};

shoal_err shoal_reassembler_new(const char *what, const shoal_reassembly_limits *limits,
                                shoal_reassembler **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (!what || !limits || limits->max_total == 0 || limits->max_chunk == 0 ||
        limits->max_chunks == 0)
        return SHOAL_EINVAL;
    shoal_reassembler *r = shoal_calloc(1, sizeof *r);
    if (!r)
        return SHOAL_ENOMEM;
    r->what = shoal_strdup(what);
    if (!r->what) {
        shoal_free(r);
        return SHOAL_ENOMEM;
    }
    r->limits = *limits;
    *out = r;
    return SHOAL_OK;
}

void shoal_reassembler_free(shoal_reassembler *r)
{
    if (!r)
        return;
    shoal_free(r->buf);
    shoal_free(r->what);
    shoal_free(r);
}

/* Grows geometrically towards `total` rather than allocating the claimed
 * total up front: a peer that announces a large blob and stops after one
 * chunk costs memory in proportion to what it sent. */
static shoal_err reserve(shoal_reassembler *r, uint64_t need, uint64_t total)
{
    if (need <= r->cap)
        return SHOAL_OK;
    uint64_t cap = r->cap ? r->cap : 65536;
    while (cap < need)
        cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
    if (cap > total)
        cap = total;
    if (cap > SIZE_MAX)
        return SHOAL_ENOMEM;
    uint8_t *grown = shoal_realloc(r->buf, (size_t)cap);
    if (!grown)
        return SHOAL_ENOMEM;
    r->buf = grown;
    r->cap = (size_t)cap;
    return SHOAL_OK;
}

shoal_err shoal_reassembler_add(shoal_reassembler *r, const shoal_chunk *chunk, shoal_errinfo *ei)
{
    if (!r || !chunk || (!chunk->data && chunk->len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_reassembler_add: NULL argument");
    const char *what = r->what;
    if (r->total != 0 && r->acked == r->total)
        return shoal_errinfo_set(
            ei, SHOAL_ESTATE, "%s: chunk at offset %" PRIu64 " after all %" PRIu64 " bytes arrived",
            what, chunk->offset, r->total);
    if (chunk->len == 0)
        return shoal_errinfo_set(
            ei, SHOAL_EPROTO, "%s: empty chunk at offset %" PRIu64 "; chunks carry at least 1 byte",
            what, chunk->offset);
    if (chunk->total == 0)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "%s: total_size 0; a blob has at least 1 byte",
                                 what);
    if (r->total != 0 && chunk->total != r->total)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: total_size changed from %" PRIu64 " to %" PRIu64
                                 " at offset %" PRIu64,
                                 what, r->total, chunk->total, chunk->offset);
    if (chunk->total > r->limits.max_total || chunk->total > SIZE_MAX)
        return shoal_errinfo_set(
            ei, SHOAL_ELIMIT, "%s: total_size %" PRIu64 " is above the limit of %" PRIu64 " bytes",
            what, chunk->total, r->limits.max_total);
    if (chunk->len > r->limits.max_chunk)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%s: chunk of %zu bytes at offset %" PRIu64
                                 " is above the limit of %zu bytes",
                                 what, chunk->len, chunk->offset, r->limits.max_chunk);
    if (chunk->offset > chunk->total || chunk->len > chunk->total - chunk->offset)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: chunk [%" PRIu64 ", +%zu) runs past total_size %" PRIu64,
                                 what, chunk->offset, chunk->len, chunk->total);
    if (chunk->offset > r->acked)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: gap: chunk starts at offset %" PRIu64 ", expected %" PRIu64,
                                 what, chunk->offset, r->acked);
    if (chunk->offset < r->acked)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s: overlap: chunk starts at offset %" PRIu64
                                 ", bytes up to %" PRIu64 " already arrived",
                                 what, chunk->offset, r->acked);
    if (r->chunks >= r->limits.max_chunks)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%s: more than %" PRIu32 " chunks (at offset %" PRIu64
                                 " of %" PRIu64 ")",
                                 what, r->limits.max_chunks, chunk->offset, chunk->total);
    const uint64_t end = chunk->offset + chunk->len;
    if (reserve(r, end, chunk->total) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory holding %" PRIu64 " bytes",
                                 what, end);
    memcpy(r->buf + chunk->offset, chunk->data, chunk->len);
    r->total = chunk->total;
    r->acked = end;
    r->chunks++;
    return r->acked == r->total ? SHOAL_DONE : SHOAL_OK;
}

uint64_t shoal_reassembler_acked(const shoal_reassembler *r)
{
    return r ? r->acked : 0;
}

uint64_t shoal_reassembler_total(const shoal_reassembler *r)
{
    return r ? r->total : 0;
}

uint32_t shoal_reassembler_chunks(const shoal_reassembler *r)
{
    return r ? r->chunks : 0;
}

int shoal_reassembler_complete(const shoal_reassembler *r)
{
    return r && r->total != 0 && r->acked == r->total;
}

const uint8_t *shoal_reassembler_bytes(const shoal_reassembler *r, size_t *len)
{
    if (!shoal_reassembler_complete(r)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = (size_t)r->total;
    return r->buf;
}

const uint8_t *shoal_reassembler_received(const shoal_reassembler *r, size_t *len)
{
    if (len)
        *len = r ? (size_t)r->acked : 0;
    return r ? r->buf : NULL;
}

uint8_t *shoal_reassembler_take(shoal_reassembler *r, size_t *len)
{
    if (len)
        *len = 0;
    if (!shoal_reassembler_complete(r) || !r->buf)
        return NULL;
    uint8_t *blob = r->buf;
    if (len)
        *len = (size_t)r->total;
    r->buf = NULL;
    r->cap = 0;
    return blob;
}

shoal_chunk shoal_chunk_from_model(const Shoal__ModelChunk *msg)
{
    shoal_chunk c = {msg->offset, msg->total_size, msg->data.data, msg->data.len};
    return c;
}

shoal_chunk shoal_chunk_from_report(const Shoal__ReportChunk *msg)
{
    shoal_chunk c = {msg->offset, msg->total_size, msg->data.data, msg->data.len};
    return c;
}

int shoal_model_download_needed(const Shoal__CheckInResult__Accepted *accepted, const uint8_t *held,
                                size_t held_len)
{
    if (!accepted || !accepted->has_checkpoint_id || accepted->checkpoint_id.len == 0)
        return 1;
    if (!held || held_len != accepted->checkpoint_id.len)
        return 1;
    return memcmp(held, accepted->checkpoint_id.data, held_len) != 0;
}
