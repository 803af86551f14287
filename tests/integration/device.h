/* A scripted test device speaking the Shoal protocol over TLS, for the
 * server's integration tests: each step is one call, so a test can stop,
 * misbehave or disconnect at any point of a session. */
#ifndef SHOAL_TEST_DEVICE_H
#define SHOAL_TEST_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/envelope.h"
#include "shoal/secagg_wire.h"
#include "shoal/wss.h"

typedef struct tdev {
    shoal_wss *wss;
    shoal_codec codec_out; /* checks what the device sends */
    shoal_codec codec_in;  /* checks what the server sends */
    /* After an Accepted: */
    uint8_t session[64];
    size_t session_len;
    uint64_t round;
    int task; /* Shoal__TaskKind */
    uint64_t param_count;
    uint64_t report_deadline_ms;
    uint64_t max_examples; /* the plan's limits.max_examples; 0 absent */
    uint8_t checkpoint[64];
    size_t checkpoint_len;
    float *model; /* the downloaded model (param_count floats) */
    /* After a rejection, abort or ack: */
    int reason;
    int status;
    uint64_t retry_min_ms, retry_max_ms;
    char detail[600];
    int version_received, version_min, version_max;
    uint8_t held[64]; /* the checkpoint named in the last CheckIn */
    size_t held_len;
    int has_resume_offset;
    uint64_t resume_offset;
    uint8_t *last_sent; /* the last message sent, for duplicates */
    size_t last_sent_len;
    /* Secure aggregation: set secagg_capable before checking in; after an
     * Accepted whose plan has secure_aggregation, has_secagg and its group. */
    int secagg_capable;
    int has_secagg;
    shoal_secagg_config sa_cfg;
    uint32_t sa_index;
    shoal_secagg_fixed sa_fx;
    /* Adaptive clipping: set adaptive_capable before checking in; after an
     * Accepted, the plan's update_bound.l2_norm (0 without one) and
     * whether it asks for the unclipped bit. Set has_unclipped and
     * unclipped before tdev_send_report (or tdev_report) to send
     * Report.unclipped. */
    int adaptive_capable;
    double plan_clip;
    int report_unclipped;
    int has_unclipped, unclipped;
} tdev;

typedef struct tdev_server {
    const char *ca_file;
    uint16_t port;
} tdev_server;

/* Connects; 0 on success, else prints the error and returns -1. */
int tdev_connect(tdev *d, const tdev_server *s);
void tdev_close(tdev *d);

/* Sends a CheckIn (protocol version 1 unless `version` != 0). */
int tdev_checkin(tdev *d, const char *population, const char *token, uint32_t version,
                 const uint8_t *held, size_t held_len);

/* A CheckIn asking to resume `session`, holding `checkpoint`. */
int tdev_checkin_resume(tdev *d, const char *population, const char *token, const uint8_t *session,
                        size_t session_len, const uint8_t *checkpoint, size_t checkpoint_len);
/* Sends ReportChunks of `delta` in `chunk`-byte pieces from byte `from`,
 * at most `max_chunks` of them. */
int tdev_upload(tdev *d, const float *delta, size_t count, size_t chunk, uint64_t from,
                unsigned max_chunks);
/* Sends the Report for an update of `count` floats already uploaded. */
int tdev_send_report(tdev *d, size_t count, uint64_t examples, double loss);

/* What came back. */
enum tdev_result {
    TDEV_ACCEPTED = 1,
    TDEV_REJECTED,
    TDEV_ABORTED,
    TDEV_ACKED,
    TDEV_CLOSED,
    TDEV_TIMEOUT,
    TDEV_ERROR,
};

/* Waits for the CheckInResult; with Accepted also downloads the model
 * (unless skipped by the held checkpoint). */
enum tdev_result tdev_await_config(tdev *d, int timeout_ms);

/* Uploads `delta` (param_count floats, or `count` floats to test shape
 * checks) in chunks of `chunk` bytes and sends the Report with
 * example_count and a "loss" metric. */
int tdev_report(tdev *d, const float *delta, size_t count, uint64_t examples, double loss,
                size_t chunk);
/* Sends an evaluation report: loss and accuracy metrics. */
int tdev_report_eval(tdev *d, uint64_t examples, double loss, double accuracy);
/* Sends a Report without an update (INTERRUPTED and friends). */
int tdev_report_outcome(tdev *d, int outcome);

/* Waits for the ReportAck (or Abort/close). */
enum tdev_result tdev_await_ack(tdev *d, int timeout_ms);

/* Encodes and sends any envelope (validated by the device codec unless
 * raw). */
int tdev_send(tdev *d, const shoal_envelope *env);
/* Sends encoded bytes (taking them: they become last_sent). */
int tdev_send_bytes(tdev *d, uint8_t *buf, size_t len);
/* Receives and decodes one envelope; NULL on close, timeout or error, with
 * *res saying which. Free with shoal_envelope_free. */
shoal_envelope *tdev_recv(tdev *d, int timeout_ms, enum tdev_result *res);
/* Sends the last message again, byte for byte. */
int tdev_resend_last(tdev *d);

#endif
