/* shoal-fleet's secure aggregation (docs/secure-aggregation.md): when a
 * device's plan carries Plan.secure_aggregation, it never uploads its
 * update; it encodes it in fixed point with its weight and answers its
 * group's phases with the secure-agg client state machine, as the device
 * SDK does (device-sdk/src/client_secagg.c), over the fleet's blocking
 * WebSocket. */
#ifndef SHOAL_FLEET_SECAGG_H
#define SHOAL_FLEET_SECAGG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal/envelope.h"
#include "shoal/secagg.h"
#include "shoal/secagg_protocol.h"
#include "shoal/wss.h"

/* A device's place in its group, copied out of an Accepted's plan (so it
 * outlives the envelope). */
typedef struct fleet_secagg_plan {
    shoal_secagg_config cfg; /* verify_keys NULL: the semi-honest variant */
    shoal_secagg_fixed fx;
    uint32_t index;
    int64_t wait_ms; /* the longest the group can take: the report deadline plus four phases */
} fleet_secagg_plan;

/* Reads plan->secure_aggregation into *out. SHOAL_EPROTO, with ei naming
 * the field, when the group does not fit an update of `param_count`
 * parameters or secure-agg refuses it. Thread-safe. */
SHOAL_NODISCARD shoal_err shoal_fleet_secagg_plan(const Shoal__Plan *plan, size_t param_count,
                                                  fleet_secagg_plan *out, shoal_errinfo *ei);

/* Runs the device's side of its group over `wss` (borrowed): encodes
 * `delta` (count floats) with weight `example_count` (capped at the plan's
 * max_weight, at least 1), advertises its keys, then answers SecAggKeys,
 * SecAggInbox (the masked input in chunks of the largest payload one
 * message carries) and SecAggUnmaskRequest until the group's ReportAck or
 * an Abort arrives; *end (free with shoal_envelope_free) is that message.
 * `give_up` (may be NULL) is polled every 250 ms while waiting; when it
 * reads nonzero the call returns SHOAL_ECLOSED. Errors: SHOAL_ETIMEDOUT
 * after plan->wait_ms without a message, SHOAL_EPROTO for a message that
 * is not the group's, and the codes of the state machine, the encoders and
 * the socket; ei says which. Thread-safe for distinct sockets. */
SHOAL_NODISCARD shoal_err shoal_fleet_secagg_run(shoal_wss *wss, const uint8_t *session,
                                                 size_t session_len, const fleet_secagg_plan *plan,
                                                 const float *delta, size_t count,
                                                 uint64_t example_count, const atomic_int *give_up,
                                                 shoal_envelope **end, shoal_errinfo *ei);

#endif
