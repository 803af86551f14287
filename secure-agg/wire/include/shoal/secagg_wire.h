/* Shoal: the secure-aggregation messages of the wire protocol
 * (protocol/shoal.proto, Envelope fields 16..22 and Plan.secure_aggregation)
 * to and from the state machines' structs (shoal/secagg_protocol.h). The
 * server's groups and the device SDK both speak through these, so the two
 * sides cannot disagree on a field.
 *
 * The encoders validate and encode a whole Envelope as shoal_envelope_encode
 * does: on SHOAL_OK *out (free with shoal_free) holds *out_len bytes; on
 * error *out is NULL and the codes are those of shoal_envelope_encode
 * (SHOAL_EINVAL for a message the codec refuses, SHOAL_ELIMIT above the
 * message limit, SHOAL_ENOMEM). Lists are sent in the ascending order
 * the protocol asks for, whatever their order here. Inputs are borrowed. The readers take a
 * message that shoal_envelope_decode accepted and copy it out; they never
 * fail on such a message but for room (SHOAL_ELIMIT when it holds more
 * entries than `cap`). Everything here is stateless and thread-safe. */
#ifndef SHOAL_SECAGG_WIRE_H
#define SHOAL_SECAGG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/envelope.h"
#include "shoal/secagg.h"
#include "shoal/secagg_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A plan's group, as the state machines and the fixed-point code take it:
 * the config (verify_keys NULL: the semi-honest variant), the device's
 * index, and the fixed-point plan (shoal_secagg_fixed_plan already run).
 * SHOAL_EINVAL, with ei naming the field, when the config or the plan is
 * refused by secure-agg (e.g. a range that leaves no precision). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_wire_plan(const Shoal__SecureAggregation *sa,
                                                           shoal_secagg_config *cfg,
                                                           uint32_t *index, shoal_secagg_fixed *fx,
                                                           shoal_errinfo *ei);
/* The other way: fills *sa (caller-allocated; it borrows cfg's seeds) for
 * device `index`. */
SHOAL_API void shoal_secagg_wire_plan_fill(Shoal__SecureAggregation *sa,
                                           const shoal_secagg_config *cfg, uint32_t index,
                                           const shoal_secagg_fixed *fx, int plus,
                                           uint64_t phase_timeout_ms);

/* ---- device to server ---- */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_wire_encode_advertise(
    const shoal_codec *codec, const uint8_t *session, size_t session_len,
    const shoal_secagg_advertise *adv, uint8_t **out, size_t *out_len, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_wire_encode_shares(const shoal_codec *codec, const uint8_t *session,
                                size_t session_len, const shoal_secagg_sealed_shares *shares,
                                size_t count, uint8_t **out, size_t *out_len, shoal_errinfo *ei);
/* One chunk of a masked input of `length` ring elements of `bits` bits:
 * bytes [offset, offset + len) of the whole. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_wire_encode_masked(
    const shoal_codec *codec, const uint8_t *session, size_t session_len, unsigned bits,
    size_t length, uint64_t offset, const uint8_t *data, size_t len, uint8_t **out, size_t *out_len,
    shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_wire_encode_unmask(const shoal_codec *codec, const uint8_t *session,
                                size_t session_len, const shoal_secagg_revealed_share *shares,
                                size_t count, uint8_t **out, size_t *out_len, shoal_errinfo *ei);

/* ---- server to device ---- */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_wire_encode_keys(const shoal_codec *codec, const shoal_secagg_advertise *keys,
                              size_t count, uint8_t **out, size_t *out_len, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_wire_encode_inbox(const shoal_codec *codec, const shoal_secagg_sealed_shares *shares,
                               size_t count, uint8_t **out, size_t *out_len, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_wire_encode_request(const shoal_codec *codec,
                                                                     const uint32_t *survivors,
                                                                     size_t count, uint8_t **out,
                                                                     size_t *out_len,
                                                                     shoal_errinfo *ei);

/* ---- readers ---- */
SHOAL_API void shoal_secagg_wire_key_get(const Shoal__SecAggKey *k, shoal_secagg_advertise *out);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_wire_sealed_get(
    Shoal__SecAggSealedShare *const *in, size_t count, shoal_secagg_sealed_shares *out, size_t cap);
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_wire_revealed_get(Shoal__SecAggRevealedShare *const *in, size_t count,
                               shoal_secagg_revealed_share *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
