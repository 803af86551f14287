/* Chunked transfer: splitting with random chunk sizes, reassembly, resume
 * after a cut, and every invalid chunk (with its message and the state left
 * untouched). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/envelope.h"

static uint32_t rng_state = 0x9e3779b9u;
static uint32_t next_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static uint8_t *blob(size_t n, uint32_t seed)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)((i * 2654435761u + seed) >> 13);
    return b;
}

static shoal_reassembler *reassembler(uint64_t max_total, size_t max_chunk, uint32_t max_chunks)
{
    shoal_reassembly_limits lim = {max_total, max_chunk, max_chunks};
    shoal_reassembler *r = NULL;
    cr_assert_eq(shoal_reassembler_new("ReportChunk", &lim, &r), SHOAL_OK);
    return r;
}

Test(protocol_chunk, split_then_reassemble_with_random_sizes)
{
    for (int trial = 0; trial < 200; trial++) {
        size_t total = 1 + next_rand() % 200000;
        size_t max_chunk = 1 + next_rand() % (trial % 2 ? 64 : 70000);
        uint8_t *bytes = blob(total, (uint32_t)trial);
        shoal_chunker c;
        cr_assert_eq(shoal_chunker_init(&c, bytes, total, max_chunk), SHOAL_OK);
        shoal_reassembler *r = reassembler(total, max_chunk, UINT32_MAX);
        shoal_chunk chunk;
        size_t expected_offset = 0, chunks = 0;
        shoal_err err;
        while ((err = shoal_chunker_next(&c, &chunk)) == SHOAL_ROW) {
            cr_assert_eq(chunk.offset, expected_offset);
            cr_assert_eq(chunk.total, total);
            cr_assert(chunk.len >= 1 && chunk.len <= max_chunk);
            /* Every chunk but the last is full. */
            if (chunk.offset + chunk.len < total)
                cr_assert_eq(chunk.len, max_chunk);
            expected_offset += chunk.len;
            chunks++;
            shoal_err added = shoal_reassembler_add(r, &chunk, NULL);
            cr_assert_eq(added, expected_offset == total ? SHOAL_DONE : SHOAL_OK);
            cr_assert_eq(shoal_reassembler_acked(r), expected_offset);
        }
        cr_assert_eq(err, SHOAL_DONE);
        cr_assert_eq(shoal_chunker_next(&c, &chunk), SHOAL_DONE);
        cr_assert_eq(chunks, (total + max_chunk - 1) / max_chunk);
        cr_assert_eq(shoal_reassembler_chunks(r), chunks);
        size_t len = 0;
        const uint8_t *out = shoal_reassembler_bytes(r, &len);
        cr_assert_not_null(out);
        cr_assert_eq(len, total);
        cr_assert_eq(memcmp(out, bytes, total), 0);
        shoal_reassembler_free(r);
        free(bytes);
    }
}

Test(protocol_chunk, upload_resumes_from_the_acknowledged_offset_after_a_cut)
{
    const size_t total = 100000, max_chunk = 4096;
    uint8_t *bytes = blob(total, 7);
    for (int trial = 0; trial < 50; trial++) {
        shoal_reassembler *server = reassembler(total, max_chunk, 1000);
        shoal_chunker device;
        cr_assert_eq(shoal_chunker_init(&device, bytes, total, max_chunk), SHOAL_OK);
        size_t cut_after = next_rand() % 24; /* chunks delivered before the cut */
        shoal_chunk chunk;
        for (size_t i = 0; i < cut_after; i++) {
            cr_assert_eq(shoal_chunker_next(&device, &chunk), SHOAL_ROW);
            cr_assert_eq(shoal_reassembler_add(server, &chunk, NULL), SHOAL_OK);
        }
        /* The connection drops while the next chunks are in flight: the
         * device sent them, the server never saw them. */
        size_t lost = next_rand() % 3;
        for (size_t i = 0; i < lost; i++)
            cr_assert_eq(shoal_chunker_next(&device, &chunk), SHOAL_ROW);

        /* Reconnect: a fresh chunker on the device, resumed from what the
         * server reports (Accepted.upload_resume_offset). */
        uint64_t acked = shoal_reassembler_acked(server);
        cr_assert_eq(acked, cut_after * max_chunk);
        shoal_chunker resumed;
        cr_assert_eq(shoal_chunker_init(&resumed, bytes, total, max_chunk), SHOAL_OK);
        cr_assert_eq(shoal_chunker_resume(&resumed, acked), SHOAL_OK);
        shoal_err err = SHOAL_OK;
        while (shoal_chunker_next(&resumed, &chunk) == SHOAL_ROW) {
            cr_assert_eq(err, SHOAL_OK);
            err = shoal_reassembler_add(server, &chunk, NULL);
            cr_assert(err == SHOAL_OK || err == SHOAL_DONE);
        }
        cr_assert_eq(err, SHOAL_DONE);
        size_t len;
        const uint8_t *out = shoal_reassembler_bytes(server, &len);
        cr_assert_eq(len, total);
        cr_assert_eq(memcmp(out, bytes, total), 0);
        cr_assert_eq(shoal_reassembler_chunks(server), (total + max_chunk - 1) / max_chunk);
        shoal_reassembler_free(server);
    }
    free(bytes);
}

Test(protocol_chunk, resending_the_lost_chunk_without_resume_is_an_overlap)
{
    uint8_t *bytes = blob(100, 1);
    shoal_reassembler *r = reassembler(100, 40, 10);
    shoal_chunk a = {0, 100, bytes, 40}, b = {40, 100, bytes + 40, 40};
    cr_assert_eq(shoal_reassembler_add(r, &a, NULL), SHOAL_OK);
    cr_assert_eq(shoal_reassembler_add(r, &b, NULL), SHOAL_OK);
    shoal_errinfo ei;
    cr_assert_eq(shoal_reassembler_add(r, &a, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(
        ei.msg, "ReportChunk: overlap: chunk starts at offset 0, bytes up to 80 already arrived");
    shoal_reassembler_free(r);
    free(bytes);
}

/* One invalid chunk after a valid first chunk [0, 10) of 100: the error and
 * its message, and nothing changed. */
static void expect_invalid(shoal_chunk bad, shoal_err want, const char *message)
{
    static uint8_t bytes[200];
    shoal_reassembler *r = reassembler(1000, 50, 3);
    shoal_chunk first = {0, 100, bytes, 10};
    cr_assert_eq(shoal_reassembler_add(r, &first, NULL), SHOAL_OK);
    if (!bad.data)
        bad.data = bytes;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_reassembler_add(r, &bad, &ei), want, "%s", ei.msg);
    cr_assert_str_eq(ei.msg, message);
    cr_assert_eq(shoal_reassembler_acked(r), 10);
    cr_assert_eq(shoal_reassembler_total(r), 100);
    cr_assert_eq(shoal_reassembler_chunks(r), 1);
    cr_assert_not(shoal_reassembler_complete(r));
    /* The right next chunk is still accepted. */
    shoal_chunk next = {10, 100, bytes, 50};
    cr_assert_eq(shoal_reassembler_add(r, &next, NULL), SHOAL_OK);
    shoal_reassembler_free(r);
}

Test(protocol_chunk, gap)
{
    expect_invalid((shoal_chunk){11, 100, NULL, 5}, SHOAL_EPROTO,
                   "ReportChunk: gap: chunk starts at offset 11, expected 10");
}

Test(protocol_chunk, overlap)
{
    expect_invalid(
        (shoal_chunk){9, 100, NULL, 5}, SHOAL_EPROTO,
        "ReportChunk: overlap: chunk starts at offset 9, bytes up to 10 already arrived");
}

Test(protocol_chunk, total_change)
{
    expect_invalid((shoal_chunk){10, 101, NULL, 5}, SHOAL_EPROTO,
                   "ReportChunk: total_size changed from 100 to 101 at offset 10");
}

Test(protocol_chunk, runs_past_total)
{
    expect_invalid((shoal_chunk){95, 100, NULL, 6}, SHOAL_EPROTO,
                   "ReportChunk: chunk [95, +6) runs past total_size 100");
}

Test(protocol_chunk, offset_past_total)
{
    expect_invalid((shoal_chunk){101, 100, NULL, 1}, SHOAL_EPROTO,
                   "ReportChunk: chunk [101, +1) runs past total_size 100");
}

Test(protocol_chunk, offset_overflow)
{
    /* offset + len wraps around 2^64: must not look like a valid range. */
    shoal_reassembly_limits lim = {UINT64_MAX, 50, 3};
    shoal_reassembler *r = NULL;
    cr_assert_eq(shoal_reassembler_new("ModelChunk", &lim, &r), SHOAL_OK);
    static uint8_t bytes[10];
    shoal_chunk bad = {UINT64_MAX - 2, UINT64_MAX, bytes, 10};
    shoal_errinfo ei;
    shoal_err err = shoal_reassembler_add(r, &bad, &ei);
    cr_assert(err == SHOAL_EPROTO || err == SHOAL_ELIMIT);
    cr_assert_eq(shoal_reassembler_acked(r), 0);
    cr_assert_eq(shoal_reassembler_total(r), 0);
    shoal_reassembler_free(r);
}

Test(protocol_chunk, empty_chunk)
{
    expect_invalid((shoal_chunk){10, 100, NULL, 0}, SHOAL_EPROTO,
                   "ReportChunk: empty chunk at offset 10; chunks carry at least 1 byte");
}

Test(protocol_chunk, zero_total)
{
    expect_invalid((shoal_chunk){10, 0, NULL, 5}, SHOAL_EPROTO,
                   "ReportChunk: total_size 0; a blob has at least 1 byte");
}

Test(protocol_chunk, chunk_above_limit)
{
    expect_invalid((shoal_chunk){10, 100, NULL, 51}, SHOAL_ELIMIT,
                   "ReportChunk: chunk of 51 bytes at offset 10 is above the limit of 50 bytes");
}

Test(protocol_chunk, total_above_limit_on_first_chunk)
{
    shoal_reassembler *r = reassembler(1000, 50, 3);
    static uint8_t bytes[10];
    shoal_chunk c = {0, 1001, bytes, 10};
    shoal_errinfo ei;
    cr_assert_eq(shoal_reassembler_add(r, &c, &ei), SHOAL_ELIMIT);
    cr_assert_str_eq(ei.msg, "ReportChunk: total_size 1001 is above the limit of 1000 bytes");
    cr_assert_eq(shoal_reassembler_total(r), 0);
    cr_assert_null(shoal_reassembler_bytes(r, NULL));
    shoal_reassembler_free(r);
}

Test(protocol_chunk, chunk_count_limit)
{
    static uint8_t bytes[100];
    shoal_reassembler *r = reassembler(100, 50, 3);
    for (uint64_t off = 0; off < 30; off += 10) {
        shoal_chunk c = {off, 100, bytes, 10};
        cr_assert_eq(shoal_reassembler_add(r, &c, NULL), SHOAL_OK);
    }
    shoal_chunk fourth = {30, 100, bytes, 10};
    shoal_errinfo ei;
    cr_assert_eq(shoal_reassembler_add(r, &fourth, &ei), SHOAL_ELIMIT);
    cr_assert_str_eq(ei.msg, "ReportChunk: more than 3 chunks (at offset 30 of 100)");
    cr_assert_eq(shoal_reassembler_acked(r), 30);
    shoal_reassembler_free(r);
}

Test(protocol_chunk, chunk_after_completion)
{
    static uint8_t bytes[20];
    shoal_reassembler *r = reassembler(100, 50, 3);
    shoal_chunk all = {0, 20, bytes, 20};
    cr_assert_eq(shoal_reassembler_add(r, &all, NULL), SHOAL_DONE);
    shoal_chunk again = {20, 20, bytes, 1};
    shoal_errinfo ei;
    cr_assert_eq(shoal_reassembler_add(r, &again, &ei), SHOAL_ESTATE);
    cr_assert_str_eq(ei.msg, "ReportChunk: chunk at offset 20 after all 20 bytes arrived");
    cr_assert(shoal_reassembler_complete(r));
    shoal_reassembler_free(r);
}

Test(protocol_chunk, first_chunk_must_start_at_zero)
{
    static uint8_t bytes[20];
    shoal_reassembler *r = reassembler(100, 50, 3);
    shoal_chunk c = {5, 20, bytes, 5};
    shoal_errinfo ei;
    cr_assert_eq(shoal_reassembler_add(r, &c, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "ReportChunk: gap: chunk starts at offset 5, expected 0");
    shoal_reassembler_free(r);
}

Test(protocol_chunk, bad_arguments)
{
    shoal_reassembly_limits lim = {100, 10, 10};
    shoal_reassembler *r = (shoal_reassembler *)1;
    cr_assert_eq(shoal_reassembler_new(NULL, &lim, &r), SHOAL_EINVAL);
    cr_assert_null(r);
    lim.max_chunk = 0;
    cr_assert_eq(shoal_reassembler_new("x", &lim, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_reassembler_new("x", NULL, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_reassembler_new("x", &lim, NULL), SHOAL_EINVAL);
    shoal_reassembler_free(NULL);

    static uint8_t bytes[4];
    shoal_chunker c;
    cr_assert_eq(shoal_chunker_init(&c, bytes, 0, 1), SHOAL_EINVAL);
    cr_assert_eq(shoal_chunker_init(&c, bytes, 4, 0), SHOAL_EINVAL);
    cr_assert_eq(shoal_chunker_init(&c, NULL, 4, 1), SHOAL_EINVAL);
    cr_assert_eq(shoal_chunker_init(&c, bytes, 4, 3), SHOAL_OK);
    cr_assert_eq(shoal_chunker_resume(&c, 5), SHOAL_EINVAL);
    cr_assert_eq(c.offset, 0);
    cr_assert_eq(shoal_chunker_resume(&c, 4), SHOAL_OK);
    shoal_chunk out;
    cr_assert_eq(shoal_chunker_next(&c, &out), SHOAL_DONE);
}

/* The whole path: split a model, wrap each chunk in a ModelChunk envelope
 * of at most the message limit, encode, decode, reassemble. */
Test(protocol_chunk, model_travels_through_envelopes)
{
    const size_t total = 300000;
    uint8_t *model = blob(total, 99);
    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    codec.max_message_bytes = 65536;
    const size_t max_chunk = shoal_chunk_max_payload(codec.max_message_bytes);
    cr_assert_eq(max_chunk, 65536 - SHOAL_CHUNK_ENVELOPE_OVERHEAD);
    uint8_t checkpoint[64];
    memset(checkpoint, 0xcc, sizeof checkpoint); /* the longest id allowed */

    shoal_chunker c;
    cr_assert_eq(shoal_chunker_init(&c, model, total, max_chunk), SHOAL_OK);
    shoal_reassembler *r = NULL;
    shoal_reassembly_limits lim = {total, max_chunk, 100};
    cr_assert_eq(shoal_reassembler_new("ModelChunk", &lim, &r), SHOAL_OK);
    shoal_chunk chunk;
    shoal_err added = SHOAL_OK;
    while (shoal_chunker_next(&c, &chunk) == SHOAL_ROW) {
        uint8_t *bytes;
        size_t len;
        shoal_errinfo ei;
        cr_assert_eq(shoal_envelope_model_chunk_encode(&codec, checkpoint, sizeof checkpoint,
                                                       &chunk, &bytes, &len, &ei),
                     SHOAL_OK, "%s", ei.msg);
        cr_assert_leq(len, codec.max_message_bytes);
        shoal_envelope *got;
        cr_assert_eq(shoal_envelope_decode(&codec, bytes, len, &got, &ei), SHOAL_OK, "%s", ei.msg);
        shoal_chunk view = shoal_chunk_from_model(got->model_chunk);
        added = shoal_reassembler_add(r, &view, &ei);
        cr_assert(added == SHOAL_OK || added == SHOAL_DONE, "%s", ei.msg);
        shoal_envelope_free(got);
        shoal_free(bytes);
    }
    cr_assert_eq(added, SHOAL_DONE);
    size_t len;
    cr_assert_eq(memcmp(shoal_reassembler_bytes(r, &len), model, total), 0);
    shoal_reassembler_free(r);
    free(model);
}

Test(protocol_chunk, report_chunk_view)
{
    fixture f;
    fx_report_chunk(&f);
    shoal_chunk v = shoal_chunk_from_report(&f.report_chunk);
    cr_assert_eq(v.offset, 0);
    cr_assert_eq(v.total, 16);
    cr_assert_eq(v.len, 16);
    cr_assert_eq(v.data, f.chunk_data);
}

Test(protocol_chunk, max_payload)
{
    cr_assert_eq(shoal_chunk_max_payload(1u << 20), (1u << 20) - 128);
    cr_assert_eq(shoal_chunk_max_payload(128), 0);
    cr_assert_eq(shoal_chunk_max_payload(0), 0);
}

Test(protocol_checkpoint, download_skipped_only_for_the_same_checkpoint)
{
    fixture f;
    fx_accepted(&f);
    const Shoal__CheckInResult__Accepted *a = &f.accepted;
    cr_assert_not(shoal_model_download_needed(a, (const uint8_t *)"ckpt-42", 7));
    cr_assert(shoal_model_download_needed(a, (const uint8_t *)"ckpt-41", 7));
    cr_assert(shoal_model_download_needed(a, (const uint8_t *)"ckpt-42x", 8));
    cr_assert(shoal_model_download_needed(a, (const uint8_t *)"ckpt-4", 6));
    cr_assert(shoal_model_download_needed(a, NULL, 0));
    cr_assert(shoal_model_download_needed(NULL, (const uint8_t *)"ckpt-42", 7));
    f.accepted.has_checkpoint_id = 0;
    cr_assert(shoal_model_download_needed(a, (const uint8_t *)"ckpt-42", 7));

    /* Device and server decide from the decoded messages alike. */
    fixture in;
    fx_check_in(&in);
    fx_accepted(&f);
    cr_assert(shoal_model_download_needed(&f.accepted, in.check_in.held_checkpoint_id.data,
                                          in.check_in.held_checkpoint_id.len));
}
