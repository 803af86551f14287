/* Private: the client's state and the functions the client's files share.
 * The client (client*.c) alone drives a session: it sends, moves between
 * states and ends the session. The local work (work.c, trainer.c) reads
 * the client and returns what it did (work_int.h). */
#ifndef SHOAL_CLIENT_INT_H
#define SHOAL_CLIENT_INT_H

#include "shoal/chunk.h"
#include "shoal/client.h"
#include "shoal/envelope.h"
#include "shoal/tls.h"
#include "shoal/ws.h"
#include "state_int.h"

enum shoal_devc_state {
    ST_IDLE = 0,     /* between sessions */
    ST_CONNECTING,   /* TLS handshake, WebSocket upgrade */
    ST_AWAIT_RESULT, /* CheckIn sent */
    ST_DOWNLOAD,     /* ModelChunks arriving */
    ST_WORK,         /* train or evaluate (runs inside one step) */
    ST_UPLOAD,       /* ReportChunks going out, then the Report */
    ST_SECAGG,       /* secure aggregation's phases instead of the upload */
    ST_AWAIT_ACK,    /* Report sent */
    ST_DONE,         /* result ready */
};

struct shoal_client {
    shoal_client_config cfg; /* strings point to the copies below */
    char *host, *server_name, *path, *ca_pem, *population, *store_path;
    uint8_t *token, *store_key;
    const shoal_port *port;
    shoal_codec codec_out, codec_in;

    /* The model held across sessions. */
    float *model;
    size_t model_count;
    uint8_t held[SHOAL_PROTOCOL_ID_MAX];
    size_t held_len;

    /* The last update uploaded. */
    float *update;
    size_t update_count;

    /* One session. */
    int state;
    shoal_session_result res;
    int have_window;
    int64_t deadline_ms;
    shoal_port_conn *conn;
    shoal_tls *tls;
    shoal_ws *ws;
    int tls_ready;
    int want_write;
    shoal_envelope *accepted_env;
    const Shoal__CheckInResult__Accepted *accepted;
    uint8_t session[SHOAL_PROTOCOL_ID_MAX];
    size_t session_len;
    shoal_reassembler *ra;
    uint8_t *upload_bytes;
    size_t upload_len;
    shoal_chunker chunker;
    int report_queued;
    shoal_session_outcome pending_outcome; /* the outcome once the ack arrives */
    shoal_err pending_err;
    shoal_session_reason pending_reason;

    /* The last eligibility poll (monotonic), during transfers and work. */
    int64_t last_poll_ms;

    /* The device state (config.state_path); db.db NULL without one. */
    shoal_devc_db db;
    char *state_path;
    int64_t session_start_ms;    /* monotonic */
    int64_t session_deadline_ms; /* monotonic; 0: no session time budget */
    int64_t phase_start_ms;      /* monotonic: start of the download, training or upload */

    /* Transfers (client_saved.c): an upload cut off before its Report was
     * acknowledged, kept in memory to resume before the reporting
     * deadline (docs/protocol.md, "Resuming an upload"). */
    int64_t accepted_ms; /* monotonic: when Accepted arrived */
    /* The device state holds a saved upload of this population (kept
     * until it is sent, refused or expires, through process deaths). */
    int saved_row;
    struct shoal_devc_saved_upload {
        int held; /* something is saved */
        uint8_t session[SHOAL_PROTOCOL_ID_MAX];
        size_t session_len;
        uint8_t checkpoint[SHOAL_PROTOCOL_ID_MAX];
        size_t checkpoint_len;
        uint8_t *bytes; /* the encoded update */
        size_t len;
        float *update; /* the delta (shoal_client_last_update) */
        size_t update_count;
        uint64_t round, example_count;
        double loss, accuracy;
        int unclipped;       /* adaptive clipping's bit; -1: none */
        int64_t deadline_ms; /* monotonic: the session's reporting deadline */
    } saved;

    /* Secure aggregation (client_secagg.c): the session's group, while the
     * plan asks for it. */
    struct shoal_devc_secagg *sa;

    /* TLS session resumption (client_tls.c): "host:port", the key of the
     * device state's row, and the session kept for it (secret; wiped). */
    char *peer;
    uint8_t *tls_session;
    size_t tls_session_len;
};

/* Largest model a CheckIn offers to take. */
#define SHOAL_DEVC_MAX_MODEL_BYTES (256ull << 20)

/* Caps a configured duration so that sums with a clock cannot overflow. */
int64_t shoal_devc_clamp_ms(uint64_t v);

/* client_result.c: the log, the operational log, and ending a session. */
void shoal_devc_log(const shoal_client *c, int level, const char *fmt, ...) SHOAL_PRINTF(3, 4);
/* Appends a row to the operational log (no-op without a state database;
 * a failure is logged, never fatal to the session). */
void shoal_devc_event(shoal_client *c, shoal_client_event_kind kind, uint64_t bytes,
                      uint64_t duration_ms, uint64_t example_count, int64_t status,
                      const char *detail);
/* Milliseconds of the monotonic clock since phase_start_ms. */
uint64_t shoal_devc_phase_ms(const shoal_client *c);
/* Takes the server's retry window when it is well formed. */
void shoal_devc_set_window(shoal_client *c, const Shoal__RetryWindow *w);
/* Ends the session (ST_DONE) with outcome, err and reason: draws the next
 * check-in, keeps an upload cut off, closes the connection, logs and
 * persists. errinfo.msg is set by the caller. */
void shoal_devc_finish(shoal_client *c, shoal_session_outcome outcome, shoal_err err,
                       shoal_session_reason reason);
/* Ends the session ERROR, errinfo.msg formatted. */
void shoal_devc_fail(shoal_client *c, shoal_err err, shoal_session_reason reason, const char *fmt,
                     ...) SHOAL_PRINTF(4, 5);

/* client_eligibility.c: when the device may take part. */
int shoal_devc_eligible(const shoal_client *c, char *why, size_t why_cap);
/* Ends the session before it starts (NOT_YET, OVER_BUDGET) when a hold of
 * the device state applies; returns 1 then. */
int shoal_devc_held(shoal_client *c);
/* The poll between transfer chunks; ends the session INTERRUPTED and
 * returns 1 when the device is no longer eligible. */
int shoal_devc_transfer_stopped(shoal_client *c, int report_next);

/* client_transport.c: the connection (TLS, WebSocket). */
/* Connects and sets up TLS and WebSocket (ST_CONNECTING), or fails the
 * session. */
void shoal_devc_connect(shoal_client *c);
/* Moves bytes both ways as far as the transport allows, dispatching each
 * message received to shoal_devc_take_message; sets *progress when
 * anything moved. */
void shoal_devc_pump(shoal_client *c, int *progress);
/* Encodes and queues env; on failure fails the session and returns the
 * error. */
shoal_err shoal_devc_send(shoal_client *c, const shoal_envelope *env);
/* Sends what an encoder produced (err its result, buf its bytes, taken);
 * fails the session on error, naming `what`, with why->msg. */
shoal_err shoal_devc_send_encoded(shoal_client *c, shoal_err err, uint8_t *buf, size_t len,
                                  const char *what, const shoal_errinfo *why);
/* Says goodbye without waiting (WebSocket Close, TLS close_notify) when
 * the connection is up. */
void shoal_devc_close(shoal_client *c);
/* Drops everything that belongs to one session (not the held model). */
void shoal_devc_session_reset(shoal_client *c);
const char *shoal_devc_state_name(int state);

/* client.c: the messages received, by state. */
void shoal_devc_take_message(shoal_client *c, const uint8_t *data, size_t len);

/* client_download.c: check-in and the model download. */
void shoal_devc_send_checkin(shoal_client *c);
/* Takes the CheckInResult (owning env). */
void shoal_devc_take_result(shoal_client *c, shoal_envelope *env);
void shoal_devc_take_model_chunk(shoal_client *c, const Shoal__ModelChunk *mc);

/* client_upload.c: the work's result, the update's chunks, the Report. */
/* Runs the local work and sends what it ends in: ends in ST_UPLOAD,
 * ST_AWAIT_ACK or ST_DONE. */
void shoal_devc_work(shoal_client *c);
/* Queues the next ReportChunk, or the Report after the last. */
void shoal_devc_upload_next(shoal_client *c);
/* Sends the Report (a Shoal__ReportOutcome) and moves to ST_AWAIT_ACK. */
void shoal_devc_send_report(shoal_client *c, int outcome, size_t update_count, const char *detail);
void shoal_devc_take_ack(shoal_client *c, const Shoal__ReportAck *ack);

/* client_secagg.c: secure aggregation (docs/protocol.md, "Secure
 * aggregation"). When the plan asks for it, takes the trained delta
 * (count floats, taken) and starts the phases (ST_SECAGG), returning 1;
 * else returns 0 and takes nothing. */
int shoal_devc_secagg_start(shoal_client *c, float *delta, size_t count, uint64_t example_count);
/* A server message of the phases (KEYS, INBOX, UNMASK_REQUEST). */
void shoal_devc_secagg_take(shoal_client *c, const shoal_envelope *env);
/* How long the device may wait between phase messages. */
int64_t shoal_devc_secagg_wait_ms(const shoal_client *c);
/* Bytes the phases add to a session of this plan (the budget's share). */
uint64_t shoal_devc_secagg_bytes(const Shoal__SecureAggregation *sa);
void shoal_devc_secagg_free(shoal_client *c);

/* client_tls.c: the TLS session kept to resume (docs/sdk.md, "TLS
 * session resumption"). */
/* At construction: takes up the session the device state keeps for this
 * peer (dropping one that cannot be opened). */
void shoal_devc_tls_restore(shoal_client *c);
/* Before the handshake: offers the kept session to c->tls. */
void shoal_devc_tls_offer(shoal_client *c);
/* After the handshake: records whether it resumed, and keeps the
 * session the server gave (or drops the kept one if it gave none). */
void shoal_devc_tls_keep(shoal_client *c);
/* Wipes the session held in memory (the device state keeps its copy). */
void shoal_devc_tls_forget(shoal_client *c);

/* client_saved.c: an upload cut off, kept to resume
 * (docs/protocol.md, "Resuming an upload"). */
void shoal_devc_saved_forget(shoal_client *c);
void shoal_devc_saved_drop(shoal_client *c);
void shoal_devc_saved_restore(shoal_client *c);

/* The device state's sealed rows (saved uploads, kept TLS sessions):
 * XChaCha20-Poly1305 under a key derived from cfg.store_key (which must be
 * set) and `context` (one per kind of row), a random nonce in front, `ad`
 * bound. shoal_devc_seal: *out (shoal_malloc'd, the caller frees it) gets
 * nonce and ciphertext; SHOAL_ENOMEM, or the port's random source's error.
 * shoal_devc_unseal: *out (shoal_malloc'd; the caller wipes and frees it)
 * gets the plaintext; SHOAL_EFORMAT for a row too short to be sealed,
 * SHOAL_ECRYPTO when it fails authentication, SHOAL_ENOMEM. On error *out
 * is NULL. The client's own thread only. */
shoal_err shoal_devc_seal(const shoal_client *c, const char *context, const uint8_t *plain,
                          size_t len, const uint8_t *ad, size_t ad_len, uint8_t **out,
                          size_t *out_len);
shoal_err shoal_devc_unseal(const shoal_client *c, const char *context, const uint8_t *sealed,
                            size_t len, const uint8_t *ad, size_t ad_len, uint8_t **out,
                            size_t *out_len);
void shoal_devc_saved_keep(shoal_client *c, shoal_session_outcome outcome, shoal_err err);
/* Drops the saved upload when its reporting deadline has passed. */
void shoal_devc_saved_expire(shoal_client *c);
/* Continues the saved upload when the server resumed its session;
 * returns 0 when a is not such a resume. */
int shoal_devc_saved_resume(shoal_client *c, const Shoal__CheckInResult__Accepted *a);

#endif
