/* The selector's checks of an upload (selector.c): each chunk's elements
 * scanned as it arrives, and the population's L2 bound held at the end. */
#include <math.h>
#include <stdio.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"

/* Scans the whole elements the last chunk completed, while its bytes are
 * still in cache: every element finite and within
 * SHOAL_SERVER_MAX_UPDATE_ABS (so that a finite but huge update cannot
 * overflow the round's sum), and the squares for the L2 bound. */
void shoal_upload_scan_received(const shoal_reassembler *upload, upload_scan *u)
{
    size_t have = 0;
    const uint8_t *bytes = shoal_reassembler_received(upload, &have);
    const size_t whole = have / 4, done = u->scan.elements;
    if (u->reason || whole <= done)
        return;
    shoal_errinfo ei = {0};
    shoal_err err = shoal_tensor_scan_add(&u->scan, bytes + 4 * done, whole - done, "update", &ei);
    if (err) {
        u->reason = err == SHOAL_ENUMERIC ? SHOAL__REASON__REASON_NON_FINITE
                                          : SHOAL__REASON__REASON_MALFORMED;
        snprintf(u->detail, sizeof u->detail, "%.159s", ei.msg);
    }
}

/* Issue 13: one device must not move the model by more than the
 * population's L2 bound. 0 when the update may go on, with rm->scale the
 * factor that brings it within clip_norm (1: unchanged), else the
 * refusal's reason. A device that clipped to exactly the bound may have
 * summed its squares in another order (or with fused multiply-adds) and
 * land a few ulps above it here: up to a relative 2^-20 above
 * refuse_norm is rounding, scaled to the bound, not refused. The scale is
 * rounded down, so scale x norm never exceeds the bound. */
int shoal_upload_hold_to_norm(population *pop, double round_clip, double norm, report_msg *rm)
{
    double bound = 0.0;
    rm->scale = 1.0f;
    /* Differential privacy's clip is the round's (adaptive clipping moves
     * it): the plan that session was sent announced it. */
    const double refuse_norm = round_clip > 0.0 ? round_clip : pop->refuse_norm;
    if (refuse_norm && norm > refuse_norm) {
        if (norm > refuse_norm * (1.0 + 0x1p-20)) {
            atomic_fetch_add(&pop->metrics.updates_refused_norm, 1);
            snprintf(rm->detail, sizeof rm->detail,
                     "the update's L2 norm %.6g is above Plan.update_bound.l2_norm %.6g; clip "
                     "the whole update to it before encoding",
                     norm, refuse_norm);
            return SHOAL__REASON__REASON_NORM_EXCEEDED;
        }
        bound = refuse_norm;
    } else if (pop->clip_norm && norm > pop->clip_norm) {
        bound = pop->clip_norm;
        atomic_fetch_add(&pop->metrics.updates_clipped, 1);
    }
    if (bound > 0.0) {
        float scale = (float)(bound / norm);
        while ((double)scale * norm > bound)
            scale = nextafterf(scale, 0.0f);
        rm->scale = scale;
    }
    return 0;
}

float *shoal_upload_floats(const uint8_t *update, size_t count, float scale)
{
    /* Zeros plus scale x the bytes: the fold does the decoding. */
    float *out = shoal_calloc(count ? count : 1, sizeof *out);
    if (out)
        shoal_tensor_fold_f32le(out, update, scale, count);
    return out;
}
