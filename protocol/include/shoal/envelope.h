/* Shoal: the wire protocol's envelope codec.
 *
 * Every WebSocket binary message is one shoal.Envelope (protocol/shoal.proto,
 * compiled with protoc-c into shoal.pb-c.h). Messages are the protobuf-c
 * structs of that header: build one with its *_INIT macros, encode it with
 * shoal_envelope_encode; decode received bytes with shoal_envelope_decode.
 *
 * Both directions run the same validation (shoal_envelope_check), so a peer
 * never sends what it would refuse: size limit, a known body, every required
 * field present, every value in range (docs/protocol.md lists the rules). A
 * refusal fills shoal_errinfo with the message and field at fault, e.g.
 * "CheckIn.capabilities.encodings[1]: duplicate encoding FLOAT32_LE".
 *
 * Everything protobuf-c allocates while decoding goes through shoal_malloc
 * (common/include/shoal/alloc.h), so allocation failures are injectable.
 * The codec holds no state: all functions are thread-safe. */
#ifndef SHOAL_ENVELOPE_H
#define SHOAL_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version this code speaks (CheckIn.protocol_version). */
#define SHOAL_PROTOCOL_VERSION 1
/* Default limit on one encoded Envelope, both directions (1 MiB). */
#define SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT (1u << 20)
/* Smallest configurable limit: room for a CheckIn with a full-size token. */
#define SHOAL_PROTOCOL_MAX_MESSAGE_MIN 8192u

/* Field limits enforced by the codec (docs/protocol.md, "Limits"). */
#define SHOAL_PROTOCOL_ID_MAX         64u   /* session and checkpoint ids, bytes */
#define SHOAL_PROTOCOL_NAME_MAX       128u  /* population, collection */
#define SHOAL_PROTOCOL_SHORT_NAME_MAX 64u   /* sdk_version, architecture, metric name */
#define SHOAL_PROTOCOL_TOKEN_MAX      4096u /* auth_token */
#define SHOAL_PROTOCOL_DETAIL_MAX     512u  /* detail / error_detail text */
#define SHOAL_PROTOCOL_METRICS_MAX    64u
#define SHOAL_PROTOCOL_ENCODINGS_MAX  8u
#define SHOAL_PROTOCOL_RANK_MAX       4u
#define SHOAL_PROTOCOL_DIM_MAX        65536u
#define SHOAL_PROTOCOL_CLASSES_MAX    65536u
#define SHOAL_PROTOCOL_EPOCHS_MAX     1000u
#define SHOAL_PROTOCOL_BATCH_MAX      65536u
#define SHOAL_PROTOCOL_RETRY_MAX_MS   604800000ull /* 7 days */

typedef Shoal__Envelope shoal_envelope;

/* Who produced the message being encoded or decoded. With DEVICE or SERVER
 * the codec refuses messages only the other side may send (a device never
 * sends CheckInResult) and requires a server's Abort to carry a retry
 * window; ANY skips those checks. */
typedef enum shoal_peer {
    SHOAL_PEER_ANY = 0,
    SHOAL_PEER_DEVICE,
    SHOAL_PEER_SERVER,
} shoal_peer;

/* Codec settings; plain data, caller-allocated. */
typedef struct shoal_codec {
    size_t max_message_bytes; /* limit on one encoded Envelope; >= SHOAL_PROTOCOL_MAX_MESSAGE_MIN */
    uint32_t version_min;     /* CheckIn.protocol_version accepted: [version_min, version_max] */
    uint32_t version_max;
    shoal_peer sender; /* who produced the messages this codec checks */
} shoal_codec;

/* A codec with the 1 MiB limit and version SHOAL_PROTOCOL_VERSION only. */
SHOAL_API shoal_codec shoal_codec_defaults(shoal_peer sender);

/* Validates env without encoding it. SHOAL_OK, or SHOAL_EPROTO with ei
 * naming the message and field ("Plan.optimizer.learning_rate: -1 is out of
 * range; must be finite and > 0"), or SHOAL_EINVAL for a bad codec. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_check(const shoal_codec *codec,
                                                         const shoal_envelope *env,
                                                         shoal_errinfo *ei);

/* Validates and serializes env into a new buffer (*out, *out_len; free
 * with shoal_free). env is borrowed. SHOAL_EINVAL when env fails validation
 * (ei says why), SHOAL_ELIMIT when the encoding exceeds
 * codec->max_message_bytes, SHOAL_ENOMEM. On error *out is NULL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_encode(const shoal_codec *codec,
                                                          const shoal_envelope *env, uint8_t **out,
                                                          size_t *out_len, shoal_errinfo *ei);

/* Parses and validates `len` received bytes. On SHOAL_OK *out is a new
 * envelope; free it with shoal_envelope_free. Errors, with ei filled and
 * *out NULL:
 *   SHOAL_ELIMIT  len exceeds codec->max_message_bytes (checked first);
 *   SHOAL_EPROTO  not a protobuf Envelope, an unknown or empty body, a
 *                 missing required field, a value out of range, a message
 *                 the sender may not send, or a CheckIn whose
 *                 protocol_version is outside [version_min, version_max]
 *                 (answer that one with shoal_envelope_encode_version_abort);
 *   SHOAL_ENOMEM  an allocation failed;
 *   SHOAL_EINVAL  bad arguments or codec. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_decode(const shoal_codec *codec,
                                                          const uint8_t *buf, size_t len,
                                                          shoal_envelope **out, shoal_errinfo *ei);

/* Frees an envelope returned by shoal_envelope_decode. NULL is a no-op.
 * Never pass an envelope built by hand. */
SHOAL_API void shoal_envelope_free(shoal_envelope *env);

/* "CheckIn", "Abort", ... for env's body; "(none)" when no body is set and
 * "(unknown)" for an out-of-range case. Static strings. */
SHOAL_API const char *shoal_envelope_body_name(const shoal_envelope *env);

/* For a received message that shoal_envelope_decode refused: if `buf` is a
 * CheckIn carrying a protocol_version outside the codec's range, stores it
 * in *version and returns SHOAL_OK; otherwise SHOAL_ENOTFOUND (also for
 * unparseable or oversize input), or SHOAL_ENOMEM. Looks only at the
 * version, so a newer peer's CheckIn that this version cannot validate is
 * still answered with the right Abort. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_unsupported_version(const shoal_codec *codec,
                                                                       const uint8_t *buf,
                                                                       size_t len,
                                                                       uint32_t *version);

/* Encodes the server's answer to a CheckIn with an unsupported protocol
 * version: an Abort with REASON_VERSION_UNSUPPORTED, VersionMismatch
 * {received, codec->version_min, codec->version_max}, a detail naming both
 * ("protocol version 7 is not supported; this server speaks version 1")
 * and the retry window [retry_min_ms, retry_max_ms]. Output as for
 * shoal_envelope_encode; SHOAL_EINVAL for an invalid window or codec, or a
 * `received` version the codec supports. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_encode_version_abort(
    const shoal_codec *codec, uint32_t received, uint64_t retry_min_ms, uint64_t retry_max_ms,
    uint8_t **out, size_t *out_len, shoal_errinfo *ei);

/* Short names of enum values for messages and logs: "FLOAT32_LE",
 * "COMPLETED", "REFUSED", "AUTH_FAILED"; "?" for unknown values. */
SHOAL_API const char *shoal_protocol_encoding_name(int encoding);
SHOAL_API const char *shoal_protocol_outcome_name(int outcome);
SHOAL_API const char *shoal_protocol_status_name(int status);
SHOAL_API const char *shoal_protocol_reason_name(int reason);

#ifdef __cplusplus
}
#endif

#endif
