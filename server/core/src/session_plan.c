/* What a session's plan asks of a device, and the plan a training session
 * gets: the population's (built once, server.c), with its round's clip
 * and its secure-aggregation group. Used by the selectors; pure. */
#include <stdio.h>

#include "server_int.h"
#include "shoal/secagg_wire.h"

static int has_encoding(const Shoal__Capabilities *caps, int encoding)
{
    for (size_t i = 0; i < caps->n_encodings; i++)
        if ((int)caps->encodings[i] == encoding)
            return 1;
    return 0;
}

int shoal_session_capabilities_refusal(const population *pop, const Shoal__Capabilities *caps,
                                       char *detail, size_t len)
{
    if (!has_encoding(caps, SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE)) {
        snprintf(detail, len, "this server needs FLOAT32_LE in capabilities.encodings");
        return SHOAL__REASON__REASON_UNSUPPORTED_ENCODING;
    }
    const int ring = pop->cfg->secagg.bits <= 32
                         ? SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING
                         : SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
    if (pop->cfg->secagg.enabled && (!caps->secure_aggregation || !has_encoding(caps, ring))) {
        snprintf(detail, len,
                 "population '%.128s' aggregates securely: it needs "
                 "capabilities.secure_aggregation and %s in capabilities.encodings",
                 pop->cfg->name, shoal_protocol_encoding_name(ring));
        return SHOAL__REASON__REASON_UNSUPPORTED_ENCODING;
    }
    if (pop->cfg->dp.adaptive.enabled && !caps->adaptive_clipping) {
        /* Its reports would lack the unclipped bit (an older device). */
        snprintf(detail, len,
                 "population '%.128s' clips adaptively: it needs capabilities.adaptive_clipping "
                 "(the device reports whether its update was within the plan's clip)",
                 pop->cfg->name);
        return SHOAL__REASON__REASON_UNSUPPORTED_ENCODING;
    }
    if (caps->max_model_bytes < (uint64_t)pop->param_count * 4) {
        snprintf(detail, len, "the model is %llu bytes, above capabilities.max_model_bytes %llu",
                 (unsigned long long)pop->param_count * 4,
                 (unsigned long long)caps->max_model_bytes);
        return SHOAL__REASON__REASON_MESSAGE_TOO_LARGE;
    }
    return 0;
}

void shoal_session_train_plan(const population *pop, double clip, const sa_plan *sa,
                              Shoal__Plan *plan, session_plan_storage *storage)
{
    *plan = pop->train_plan;
    if (clip > 0) {
        /* Differential privacy: the round's clip S_t is the bound (it moves
         * each round with adaptive clipping), and with adaptive clipping
         * the device reports whether its update was within it. */
        storage->update_bound = (Shoal__UpdateBound)SHOAL__UPDATE_BOUND__INIT;
        storage->update_bound.has_l2_norm = 1;
        storage->update_bound.l2_norm = (float)clip;
        plan->update_bound = &storage->update_bound;
        plan->has_report_unclipped = plan->report_unclipped = pop->cfg->dp.adaptive.enabled;
    }
    if (sa) {
        shoal_secagg_wire_plan_fill(&storage->sa, &sa->cfg, sa->index, &sa->fx, sa->plus,
                                    sa->phase_timeout_ms);
        plan->secure_aggregation = &storage->sa;
        plan->update_encoding = sa->cfg.bits <= 32
                                    ? SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT32_RING
                                    : SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING;
        /* Its keys are due when training ends; the four phases follow. */
        plan->report_deadline_ms =
            pop->cfg->round.reporting_deadline_ms - 4 * storage->sa.phase_timeout_ms;
    }
}
