/* Allocation-failure sweeps: failing each allocation in turn must give
 * SHOAL_ENOMEM (with a message), no result, and nothing left allocated.
 * protobuf-c's own allocations go through shoal_malloc, so they are swept
 * too. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/envelope.h"

static void uninstall(void)
{
    shoal_failalloc_uninstall();
}

TestSuite(protocol_alloc, .fini = uninstall);

typedef void (*builder_fn)(fixture *);

static void sweep_decode(builder_fn build, shoal_peer sender)
{
    fixture f;
    build(&f);
    const shoal_codec codec = shoal_codec_defaults(sender);
    size_t len;
    uint8_t *raw = fx_pack_raw(&f.env, &len);

    shoal_failalloc_install(LONG_MAX);
    shoal_envelope *env = NULL;
    cr_assert_eq(shoal_envelope_decode(&codec, raw, len, &env, NULL), SHOAL_OK);
    shoal_envelope_free(env);
    const long allocations = shoal_failalloc_attempts();
    cr_assert_eq(shoal_failalloc_live(), 0);
    cr_assert_gt(allocations, 0);

    for (long k = 0; k < allocations; k++) {
        shoal_failalloc_install(k);
        shoal_errinfo ei = {{0}};
        env = (shoal_envelope *)1;
        shoal_err err = shoal_envelope_decode(&codec, raw, len, &env, &ei);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(err, SHOAL_ENOMEM, "allocation %ld of %ld: %s", k, allocations, ei.msg);
        cr_assert_null(env);
        cr_assert_eq(live, 0, "allocation %ld: %ld blocks leaked", k, live);
        cr_assert(strstr(ei.msg, "out of memory") != NULL, "%s", ei.msg);
    }
    free(raw);
}

Test(protocol_alloc, decode_check_in)
{
    sweep_decode(fx_check_in, SHOAL_PEER_DEVICE);
}

Test(protocol_alloc, decode_accepted)
{
    sweep_decode(fx_accepted, SHOAL_PEER_SERVER);
}

Test(protocol_alloc, decode_rejected)
{
    sweep_decode(fx_rejected, SHOAL_PEER_SERVER);
}

Test(protocol_alloc, decode_model_chunk)
{
    sweep_decode(fx_model_chunk, SHOAL_PEER_SERVER);
}

Test(protocol_alloc, decode_report_chunk)
{
    sweep_decode(fx_report_chunk, SHOAL_PEER_DEVICE);
}

Test(protocol_alloc, decode_report)
{
    sweep_decode(fx_report, SHOAL_PEER_DEVICE);
}

Test(protocol_alloc, decode_report_ack)
{
    sweep_decode(fx_report_ack, SHOAL_PEER_SERVER);
}

Test(protocol_alloc, decode_abort)
{
    sweep_decode(fx_abort, SHOAL_PEER_SERVER);
}

Test(protocol_alloc, encode)
{
    fixture f;
    fx_accepted(&f);
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    shoal_failalloc_install(0);
    uint8_t *bytes = (uint8_t *)1;
    size_t len = 1;
    shoal_errinfo ei;
    shoal_err err = shoal_envelope_encode(&codec, &f.env, &bytes, &len, &ei);
    const long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM);
    cr_assert_null(bytes);
    cr_assert_eq(live, 0);
    char want[96];
    snprintf(want, sizeof want, "CheckInResult: out of memory encoding %zu bytes",
             shoal__envelope__get_packed_size(&f.env));
    cr_assert_str_eq(ei.msg, want);
}

Test(protocol_alloc, version_abort_and_peek)
{
    fixture f;
    fx_check_in(&f);
    f.check_in.protocol_version = 5;
    size_t len;
    uint8_t *raw = fx_pack_raw(&f.env, &len);
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);

    shoal_failalloc_install(LONG_MAX);
    uint32_t version;
    cr_assert_eq(shoal_envelope_unsupported_version(&codec, raw, len, &version), SHOAL_OK);
    const long allocations = shoal_failalloc_attempts();
    for (long k = 0; k < allocations; k++) {
        shoal_failalloc_install(k);
        shoal_err err = shoal_envelope_unsupported_version(&codec, raw, len, &version);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(err, SHOAL_ENOMEM);
        cr_assert_eq(live, 0);
    }

    shoal_failalloc_install(0);
    uint8_t *bytes = (uint8_t *)1;
    shoal_err err = shoal_envelope_encode_version_abort(&codec, 5, 0, 1, &bytes, &len, NULL);
    const long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM);
    cr_assert_null(bytes);
    cr_assert_eq(live, 0);
    free(raw);
}

Test(protocol_alloc, reassembler)
{
    enum { TOTAL = 300000, CHUNK = 7000 };
    uint8_t *bytes = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; i++)
        bytes[i] = (uint8_t)(i * 31);
    shoal_reassembly_limits lim = {TOTAL, CHUNK, 1000};

    /* Count the allocations of one full reassembly. */
    shoal_failalloc_install(LONG_MAX);
    shoal_reassembler *r = NULL;
    cr_assert_eq(shoal_reassembler_new("ModelChunk", &lim, &r), SHOAL_OK);
    shoal_chunker c;
    shoal_chunk chunk;
    cr_assert_eq(shoal_chunker_init(&c, bytes, TOTAL, CHUNK), SHOAL_OK);
    while (shoal_chunker_next(&c, &chunk) == SHOAL_ROW)
        cr_assert(shoal_reassembler_add(r, &chunk, NULL) != SHOAL_ENOMEM);
    shoal_reassembler_free(r);
    const long allocations = shoal_failalloc_attempts();
    cr_assert_eq(shoal_failalloc_live(), 0);
    cr_assert_gt(allocations, 3); /* object, name, and a buffer that grew */

    for (long k = 0; k < allocations; k++) {
        shoal_failalloc_install(k);
        r = NULL;
        shoal_err err = shoal_reassembler_new("ModelChunk", &lim, &r);
        if (err == SHOAL_OK) {
            cr_assert_eq(shoal_chunker_init(&c, bytes, TOTAL, CHUNK), SHOAL_OK);
            while (shoal_chunker_next(&c, &chunk) == SHOAL_ROW) {
                uint64_t acked = shoal_reassembler_acked(r);
                shoal_errinfo ei;
                err = shoal_reassembler_add(r, &chunk, &ei);
                if (err == SHOAL_ENOMEM) {
                    /* The failed chunk left the state intact. */
                    cr_assert_eq(shoal_reassembler_acked(r), acked);
                    cr_assert(strstr(ei.msg, "out of memory") != NULL);
                    break;
                }
            }
        } else {
            cr_assert_null(r);
        }
        shoal_reassembler_free(r);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(err, SHOAL_ENOMEM, "allocation %ld", k);
        cr_assert_eq(live, 0);
    }
    free(bytes);
}
