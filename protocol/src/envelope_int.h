/* The envelope codec's field checks, shared by envelope.c and
 * envelope_secagg.c. Each returns SHOAL_OK or SHOAL_EPROTO with
 * "<Message>.<field>: <problem>" in ei; `name` is the field's full path;
 * `required` says whether an absent field is refused. */
#ifndef SHOAL_ENVELOPE_INT_H
#define SHOAL_ENVELOPE_INT_H

#include "shoal/envelope.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        shoal_err try_err_ = (expr);                                                               \
        if (try_err_ != SHOAL_OK)                                                                  \
            return try_err_;                                                                       \
    } while (0)

#define ENC_MIN SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE
#define ENC_MAX SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_UINT64_RING

shoal_err shoal_pcheck_missing(shoal_errinfo *ei, const char *name);
shoal_err shoal_pcheck_bytes(shoal_errinfo *ei, const char *name, int has,
                             const ProtobufCBinaryData *b, int required, size_t min_len,
                             size_t max_len);
shoal_err shoal_pcheck_u64(shoal_errinfo *ei, const char *name, int has, uint64_t v, int required,
                           uint64_t min, uint64_t max);
shoal_err shoal_pcheck_enum(shoal_errinfo *ei, const char *name, int has, int v, int required,
                            int min, int max);
/* lo_open/hi_open: bounds excluded. */
shoal_err shoal_pcheck_float(shoal_errinfo *ei, const char *name, int has, double v, int required,
                             double lo, int lo_open, double hi, int hi_open);
/* offset/total/data rules shared by every chunked transfer; `msg` is the
 * message's name. */
shoal_err shoal_pcheck_chunk_range(shoal_errinfo *ei, const char *msg, int has_offset,
                                   uint64_t offset, int has_total, uint64_t total, int has_data,
                                   const ProtobufCBinaryData *data);
/* ring_bits of a ring tensor: 1..32 for UINT32_RING, 33..64 for
 * UINT64_RING (required). */
shoal_err shoal_pcheck_ring_bits(shoal_errinfo *ei, const char *name, int has, uint64_t bits,
                                 int encoding);

/* envelope_secagg.c: Plan.secure_aggregation against the rest of the plan,
 * and the secure-aggregation bodies (Envelope fields 16..31). */
shoal_err shoal_pcheck_secagg_plan(const Shoal__Plan *p, shoal_errinfo *ei);
shoal_err shoal_pcheck_secagg_body(const shoal_envelope *env, shoal_errinfo *ei);
/* "SecAggKeys", ... or "(unknown)". */

#endif
