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
 * The chunk messages have builders (shoal_envelope_model_chunk_init and
 * the rest, below) so every sender fills them the same way.
 *
 * Everything protobuf-c allocates while decoding goes through shoal_malloc
 * (common/include/shoal/alloc.h), so allocation failures are injectable.
 * The codec holds no state: all functions are thread-safe. */
#ifndef SHOAL_ENVELOPE_H
#define SHOAL_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/chunk.h"
#include "shoal/err.h"
#include "shoal/wire.h"
#include "shoal.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version this code speaks (CheckIn.protocol_version). */
#define SHOAL_PROTOCOL_VERSION 1
/* SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT and _MIN: shoal/wire.h. */

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
/* Secure aggregation (equal to secure-agg's sizes; the server and the SDK
 * check that at compile time). */
#define SHOAL_PROTOCOL_SECAGG_GROUP_MAX   1000000u /* SecureAggregation.group_size */
#define SHOAL_PROTOCOL_SECAGG_KEY_BYTES   32u      /* c_pk, s_pk, graph_seed, session_id */
#define SHOAL_PROTOCOL_SECAGG_SIG_BYTES   64u      /* SecAggKey.signature */
#define SHOAL_PROTOCOL_SECAGG_SEAL_BYTES  184u     /* SecAggSealedShare.sealed */
#define SHOAL_PROTOCOL_SECAGG_SHARE_BYTES 68u      /* SecAggRevealedShare.share */

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

/* ---- builders ------------------------------------------------------------ */

/* Fills the caller-allocated *env and *body with the ModelChunk (server to
 * device) carrying `chunk` of the checkpoint named by the
 * checkpoint_id_len bytes at checkpoint_id, and points env at body.
 * Nothing is copied: env borrows body, body borrows checkpoint_id and
 * chunk->data, so all must outlive every use of env. No allocation; never
 * free env with shoal_envelope_free.
 *   SHOAL_EINVAL  a NULL argument, or a message the codec would refuse:
 *                 an id of 0 or more than SHOAL_PROTOCOL_ID_MAX bytes, an
 *                 empty chunk, a total of 0, a range past the total (ei,
 *                 which may be NULL, names the field, e.g.
 *                 "ModelChunk.data: empty; a chunk carries at least 1 byte").
 * On error *env and *body are unchanged. Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_model_chunk_init(
    shoal_envelope *env, Shoal__ModelChunk *body, const uint8_t *checkpoint_id,
    size_t checkpoint_id_len, const shoal_chunk *chunk, shoal_errinfo *ei);

/* As shoal_envelope_model_chunk_init for the ReportChunk (device to
 * server) carrying `chunk` of the update of the session named by the
 * session_id_len bytes at session_id. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_report_chunk_init(
    shoal_envelope *env, Shoal__ReportChunk *body, const uint8_t *session_id, size_t session_id_len,
    const shoal_chunk *chunk, shoal_errinfo *ei);

/* What a device says in its CheckIn (shoal_envelope_checkin_init). */
typedef struct shoal_checkin_fields {
    const char *population;    /* required, as CheckIn.population */
    const uint8_t *auth_token; /* required: auth_token_len bytes */
    size_t auth_token_len;
    const char *sdk_version;  /* required, e.g. "myapp/1.2" */
    uint64_t max_model_bytes; /* required, >= 1: the largest model it takes */
    /* 1: it also offers the ring encodings and secure aggregation. */
    int secure_aggregation;
    /* 1: it reports the unclipped bit when a plan asks for it
     * (Capabilities.adaptive_clipping, Plan.report_unclipped). */
    int adaptive_clipping;
    /* The checkpoint it holds (0 bytes: none), and the session whose
     * upload it resumes (0 bytes: no resume). */
    const uint8_t *held_checkpoint_id;
    size_t held_checkpoint_id_len;
    const uint8_t *resume_session_id;
    size_t resume_session_id_len;
} shoal_checkin_fields;

/* The caller-allocated storage a CheckIn envelope points into. */
typedef struct shoal_checkin_body {
    Shoal__CheckIn check_in;
    Shoal__Capabilities capabilities;
    Shoal__Resume resume;
    Shoal__TensorEncoding encodings[3];
} shoal_checkin_body;

/* Fills *env and *body with the CheckIn of protocol version
 * SHOAL_PROTOCOL_VERSION that `fields` describe (FLOAT32_LE, and the ring
 * encodings with secure_aggregation) and points env at body. Nothing is
 * copied: env borrows body, body borrows every buffer and string of
 * `fields`, so all must outlive every use of env; never free env with
 * shoal_envelope_free. No allocation.
 *   SHOAL_EINVAL  a NULL argument or a CheckIn the codec would refuse: no
 *                 population or an invalid name, an empty or over-long
 *                 token, no sdk_version, max_model_bytes 0, an id of more
 *                 than SHOAL_PROTOCOL_ID_MAX bytes (ei, which may be NULL,
 *                 names the field).
 * On error *env and *body are unspecified. Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_checkin_init(shoal_envelope *env,
                                                                shoal_checkin_body *body,
                                                                const shoal_checkin_fields *fields,
                                                                shoal_errinfo *ei);

/* Builds the ModelChunk as shoal_envelope_model_chunk_init does and encodes
 * it as shoal_envelope_encode does: on SHOAL_OK *out (free with shoal_free)
 * holds *out_len bytes. Errors, with *out NULL: SHOAL_EINVAL as for
 * shoal_envelope_model_chunk_init or a bad codec, SHOAL_ELIMIT when the
 * message exceeds codec->max_message_bytes (a chunk longer than
 * shoal_chunk_max_payload allows), SHOAL_ENOMEM. Inputs are borrowed.
 * Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_envelope_model_chunk_encode(
    const shoal_codec *codec, const uint8_t *checkpoint_id, size_t checkpoint_id_len,
    const shoal_chunk *chunk, uint8_t **out, size_t *out_len, shoal_errinfo *ei);

/* 1 when `plan` asks the device for the unclipped bit of adaptive
 * clipping (Plan.report_unclipped present and true), else 0 (also for
 * NULL). Pure. */
SHOAL_API int shoal_plan_reports_unclipped(const Shoal__Plan *plan);

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
