/* The selector's checks of an upload: the L2 bound (refuse, clip, and the
 * rounding margin of a refusing bound) and the chunk-by-chunk scan. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "server_int.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"

static report_msg held_in_round(population *pop, double round_clip, double norm, int *reason)
{
    report_msg rm;
    memset(&rm, 0, sizeof rm);
    *reason = shoal_upload_hold_to_norm(pop, round_clip, norm, &rm);
    return rm;
}

static report_msg held(population *pop, double norm, int *reason)
{
    return held_in_round(pop, 0.0, norm, reason);
}

Test(server_upload_checks, a_refusing_bound_refuses_above_it_and_scales_rounding)
{
    population pop;
    memset(&pop, 0, sizeof pop);
    pop.refuse_norm = 2.0;
    int reason;
    report_msg rm = held(&pop, 1.5, &reason);
    cr_assert_eq(reason, 0);
    cr_assert_eq(rm.scale, 1.0f, "an update within the bound is left alone");
    /* A few ulps above: rounding, scaled to the bound, never above it. */
    const double just_above = 2.0 * (1.0 + 0x1p-24);
    rm = held(&pop, just_above, &reason);
    cr_assert_eq(reason, 0);
    cr_assert(rm.scale < 1.0f && (double)rm.scale * just_above <= 2.0, "scale %.9g", rm.scale);
    cr_assert_eq(atomic_load(&pop.metrics.updates_refused_norm), 0u);
    /* Beyond the margin: refused, with both norms in the detail. */
    rm = held(&pop, 2.0 * (1.0 + 0x1p-18), &reason);
    cr_assert_eq(reason, SHOAL__REASON__REASON_NORM_EXCEEDED);
    cr_assert(strstr(rm.detail, "above Plan.update_bound.l2_norm 2"), "%s", rm.detail);
    cr_assert_eq(atomic_load(&pop.metrics.updates_refused_norm), 1u);
}

/* Differential privacy's clip is the round's (adaptive clipping moves
 * it): an upload is held to the clip its session's plan announced, not to
 * the population's first one. */
Test(server_upload_checks, the_rounds_clip_replaces_the_populations_bound)
{
    population pop;
    memset(&pop, 0, sizeof pop);
    pop.refuse_norm = 2.0;
    int reason;
    report_msg rm = held_in_round(&pop, 4.0, 3.0, &reason);
    cr_assert_eq(reason, 0, "within the round's clip of 4, though above the first clip of 2");
    cr_assert_eq(rm.scale, 1.0f);
    rm = held_in_round(&pop, 1.0, 1.5, &reason);
    cr_assert_eq(reason, SHOAL__REASON__REASON_NORM_EXCEEDED, "above the round's clip of 1");
    cr_assert(strstr(rm.detail, "above Plan.update_bound.l2_norm 1;"), "%s", rm.detail);
    rm = held_in_round(&pop, 1.0, 1.0 * (1.0 + 0x1p-24), &reason);
    cr_assert_eq(reason, 0, "rounding at the round's clip is scaled, not refused");
    cr_assert(rm.scale < 1.0f);
}

Test(server_upload_checks, a_clipping_bound_scales_down_and_counts)
{
    population pop;
    memset(&pop, 0, sizeof pop);
    pop.clip_norm = 3.0;
    int reason;
    report_msg rm = held(&pop, 12.0, &reason);
    cr_assert_eq(reason, 0);
    cr_assert_float_eq(rm.scale, 0.25f, 1e-7f);
    cr_assert((double)rm.scale * 12.0 <= 3.0);
    cr_assert_eq(atomic_load(&pop.metrics.updates_clipped), 1u);
    rm = held(&pop, 3.0, &reason);
    cr_assert_eq(rm.scale, 1.0f);
    cr_assert_eq(atomic_load(&pop.metrics.updates_clipped), 1u, "at the bound is not clipped");
}

/* Chunks of any size, split inside elements: the scan covers every whole
 * element once, and a NaN is found in the chunk that completes it. */
Test(server_upload_checks, chunks_split_inside_elements_are_scanned_once)
{
    enum { N = 3001 };
    static float v[N];
    static uint8_t wire[4 * N];
    for (size_t i = 0; i < N; i++)
        v[i] = (float)((int)(i % 17) - 8);
    cr_assert_eq(shoal_tensor_encode_f32le(v, N, wire, sizeof wire, NULL), SHOAL_OK);
    for (int with_nan = 0; with_nan < 2; with_nan++) {
        if (with_nan) {
            const uint8_t nan_bits[4] = {0x01, 0x00, 0x80, 0x7f};
            memcpy(wire + 4 * 2000, nan_bits, 4);
        }
        shoal_reassembly_limits lim = {
            .max_total = sizeof wire, .max_chunk = 4096, .max_chunks = 100};
        shoal_reassembler *r;
        cr_assert_eq(shoal_reassembler_new("ReportChunk", &lim, &r), SHOAL_OK);
        upload_scan u;
        memset(&u, 0, sizeof u);
        shoal_tensor_scan_init(&u.scan, 1e6f);
        size_t off = 0, step = 1;
        shoal_err err = SHOAL_OK;
        while (off < sizeof wire) {
            size_t n = sizeof wire - off < step ? sizeof wire - off : step;
            shoal_chunk c = {.offset = off, .total = sizeof wire, .data = wire + off, .len = n};
            err = shoal_reassembler_add(r, &c, NULL);
            cr_assert(err == SHOAL_OK || err == SHOAL_DONE);
            shoal_upload_scan_received(r, &u);
            off += n;
            step = step * 3 + 1; /* 1, 4, 13, 40, ... bytes: splits inside elements */
            if (step > 4096)
                step = 4093;
        }
        cr_assert_eq(err, SHOAL_DONE);
        if (with_nan) {
            cr_assert_eq(u.reason, SHOAL__REASON__REASON_NON_FINITE);
            cr_assert(strstr(u.detail, "update: element 2000 is NaN"), "%s", u.detail);
        } else {
            cr_assert_eq(u.reason, 0, "%s", u.detail);
            cr_assert_eq(u.scan.elements, (size_t)N);
            double sum = 0.0;
            for (size_t i = 0; i < N; i++)
                sum += (double)v[i] * v[i];
            cr_assert_float_eq(shoal_tensor_scan_norm(&u.scan), sqrt(sum), 1e-12 * sqrt(sum));
        }
        shoal_reassembler_free(r);
    }
}
