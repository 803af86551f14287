/* Fuzz target for the chunk reassembler and splitter (protocol/src/chunk.c).
 *
 * The input is a program: a header with the limits and a split size, then
 * chunk records (format below; tests/protocol/make_fuzz_corpus.py writes
 * seeds). Each chunk goes to shoal_reassembler_add and to a reference model
 * of the rules written here from docs/protocol.md: the verdicts must agree,
 * a refused chunk must leave the reassembler exactly as it was, and the
 * completed blob must equal the bytes of the accepted chunks. The completed
 * blob (or the received prefix) is then split with shoal_chunker and put
 * back together, also after a resume from the middle. A violated invariant
 * aborts.
 *
 * Header (5 bytes): max_total u16 LE (0 means 1), max_chunk - 1 u8,
 * max_chunks - 1 u8, split size - 1 u8. Record (6 bytes + data): flags u8,
 * offset u16 LE, total u16 LE, len u8, then len data bytes (fewer if the
 * input ends). Flags bit 0 adds 2^64 - 2^16 to the offset, bit 1 to the
 * total, so that overflowing ranges are reachable.
 *
 * As the server does, the whole FLOAT32_LE elements each accepted chunk
 * completes are scanned (shoal_tensor_scan_add over
 * shoal_reassembler_received); the received prefix must equal the model's
 * bytes, and the chunk-by-chunk scan must agree with one scan of the
 * whole blob: the same verdict and, when clean, the same norm to the bit.
 * The complete blob is then taken (shoal_reassembler_take) and checked. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HUGE_BASE (UINT64_MAX - 0xffffu)

typedef struct model {
    uint64_t total; /* 0 until the first accepted chunk */
    uint64_t acked;
    uint32_t chunks;
    uint8_t *bytes; /* [max_total] */
} model;

/* The rules of docs/protocol.md, "Chunked transfer". */
static int model_accepts(const model *m, const shoal_reassembly_limits *lim, const shoal_chunk *c)
{
    if (m->total != 0 && m->acked == m->total)
        return 0; /* complete */
    if (c->len == 0 || c->total == 0)
        return 0;
    if (m->total != 0 && c->total != m->total)
        return 0;
    if (c->total > lim->max_total || c->len > lim->max_chunk)
        return 0;
    if (c->offset != m->acked)
        return 0;
    if (c->offset > c->total || c->len > c->total - c->offset)
        return 0;
    if (m->chunks >= lim->max_chunks)
        return 0;
    return 1;
}

static void resplit(const uint8_t *blob, size_t len, size_t split, size_t resume_at)
{
    shoal_reassembly_limits lim = {len, split, UINT32_MAX};
    shoal_reassembler *r = NULL;
    if (shoal_reassembler_new("ModelChunk", &lim, &r) != SHOAL_OK)
        abort();
    shoal_chunker c;
    if (shoal_chunker_init(&c, blob, len, split) != SHOAL_OK)
        abort();
    shoal_chunk chunk;
    shoal_err err = SHOAL_OK;
    size_t delivered = 0;
    while (shoal_chunker_next(&c, &chunk) == SHOAL_ROW) {
        if (chunk.len == 0 || chunk.len > split || chunk.offset != delivered)
            abort();
        err = shoal_reassembler_add(r, &chunk, NULL);
        if (err != SHOAL_OK && err != SHOAL_DONE)
            abort();
        delivered += chunk.len;
        if (resume_at && delivered >= resume_at && err == SHOAL_OK) {
            /* Cut: the next chunk is sent but lost; the sender restarts from
             * the receiver's offset. */
            shoal_chunk lost;
            if (shoal_chunker_next(&c, &lost) != SHOAL_ROW)
                abort();
            if (shoal_chunker_resume(&c, shoal_reassembler_acked(r)) != SHOAL_OK)
                abort();
            delivered = (size_t)shoal_reassembler_acked(r);
            resume_at = 0;
        }
    }
    if (err != SHOAL_DONE || delivered != len)
        abort();
    size_t out_len;
    const uint8_t *out = shoal_reassembler_bytes(r, &out_len);
    if (!out || out_len != len || memcmp(out, blob, len) != 0)
        abort();
    shoal_reassembler_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    shoal_reassembly_limits lim;
    lim.max_total = (uint64_t)data[0] | (uint64_t)data[1] << 8;
    if (lim.max_total == 0)
        lim.max_total = 1;
    lim.max_chunk = (size_t)data[2] + 1;
    lim.max_chunks = (uint32_t)data[3] + 1;
    const size_t split = (size_t)data[4] + 1;
    size_t pos = 5;

    shoal_reassembler *r = NULL;
    if (shoal_reassembler_new("ReportChunk", &lim, &r) != SHOAL_OK)
        abort();
    model m = {0, 0, 0, calloc(1, (size_t)lim.max_total)};
    if (!m.bytes)
        abort();
    /* A bound that some inputs exceed: bytes 0x4b.. make floats >= 1.3e7. */
    const float max_abs = 1e7f;
    shoal_tensor_scan scan;
    shoal_tensor_scan_init(&scan, max_abs);
    shoal_err scan_err = SHOAL_OK;

    while (pos + 6 <= size) {
        const uint8_t flags = data[pos];
        shoal_chunk c;
        c.offset = (uint64_t)data[pos + 1] | (uint64_t)data[pos + 2] << 8;
        c.total = (uint64_t)data[pos + 3] | (uint64_t)data[pos + 4] << 8;
        if (flags & 1)
            c.offset += HUGE_BASE;
        if (flags & 2)
            c.total += HUGE_BASE;
        c.len = data[pos + 5];
        pos += 6;
        if (c.len > size - pos)
            c.len = size - pos;
        c.data = data + pos;
        pos += c.len;

        const int accept = model_accepts(&m, &lim, &c);
        const int was_complete = m.total != 0 && m.acked == m.total;
        shoal_errinfo ei;
        ei.msg[0] = 0;
        shoal_err err = shoal_reassembler_add(r, &c, &ei);
        if (accept) {
            memcpy(m.bytes + c.offset, c.data, c.len);
            m.total = c.total;
            m.acked = c.offset + c.len;
            m.chunks++;
            if (err != (m.acked == m.total ? SHOAL_DONE : SHOAL_OK))
                abort();
            size_t have = 0;
            const uint8_t *got = shoal_reassembler_received(r, &have);
            if (have != m.acked || !got || memcmp(got, m.bytes, have) != 0)
                abort();
            if (scan_err == SHOAL_OK && have / 4 > scan.elements)
                scan_err = shoal_tensor_scan_add(&scan, got + 4 * scan.elements,
                                                 have / 4 - scan.elements, "update", NULL);
        } else {
            if (err != SHOAL_EPROTO && err != SHOAL_ELIMIT && err != SHOAL_ESTATE)
                abort();
            if ((err == SHOAL_ESTATE) != was_complete)
                abort();
            if (strncmp(ei.msg, "ReportChunk: ", 13) != 0)
                abort();
        }
        if (shoal_reassembler_acked(r) != m.acked || shoal_reassembler_total(r) != m.total ||
            shoal_reassembler_chunks(r) != m.chunks)
            abort();
    }

    size_t len = 0;
    const uint8_t *blob = shoal_reassembler_bytes(r, &len);
    const int complete = m.total != 0 && m.acked == m.total;
    if (complete != shoal_reassembler_complete(r) || complete != (blob != NULL))
        abort();
    if (complete && (len != m.total || memcmp(blob, m.bytes, len) != 0))
        abort();
    if (complete && len % 4 == 0) {
        double norm = -1.0;
        shoal_err whole = shoal_tensor_scan_f32le(blob, len, len / 4, max_abs, &norm, NULL, NULL);
        if (whole != scan_err || (whole == SHOAL_OK && norm != shoal_tensor_scan_norm(&scan)))
            abort();
    }
    if (complete) {
        size_t taken_len = 0;
        uint8_t *taken = shoal_reassembler_take(r, &taken_len);
        if (!taken || taken_len != m.total || memcmp(taken, m.bytes, taken_len) != 0 ||
            shoal_reassembler_take(r, &taken_len) != NULL || taken_len != 0)
            abort();
        shoal_free(taken);
    }

    /* Split what arrived and put it back together, plain and resumed. */
    if (m.acked > 0) {
        resplit(m.bytes, (size_t)m.acked, split, 0);
        resplit(m.bytes, (size_t)m.acked, split, (size_t)m.acked / 2 + 1);
    }

    shoal_reassembler_free(r);
    free(m.bytes);
    return 0;
}
