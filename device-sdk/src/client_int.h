/* Private: the client's state, shared by client.c (protocol) and work.c
 * (training and evaluation). */
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

    /* Training-time checks. */
    int64_t last_poll_ms;
    int64_t work_deadline_ms;
    int stopped_ineligible;
    int stopped_time;
    char stop_why[128];

    /* The device state (config.state_path); db.db NULL without one. */
    shoal_devc_db db;
    char *state_path;
    int64_t session_start_ms;    /* monotonic */
    int64_t session_deadline_ms; /* monotonic; 0: no session time budget */
    int64_t phase_start_ms;      /* monotonic: start of the download, training or upload */
    int stopped_budget;

    /* Transfers (client.c): an upload cut off before its Report was
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
        int64_t deadline_ms; /* monotonic: the session's reporting deadline */
    } saved;
};

void shoal_devc_log(shoal_client *c, int level, const char *fmt, ...) SHOAL_PRINTF(3, 4);
void shoal_devc_fail(shoal_client *c, shoal_err err, const char *fmt, ...) SHOAL_PRINTF(3, 4);
int shoal_devc_eligible(shoal_client *c, char *why, size_t why_cap);
shoal_err shoal_devc_send(shoal_client *c, const shoal_envelope *env);
void shoal_devc_send_report(shoal_client *c, int outcome, size_t update_count, const char *detail);
const char *shoal_devc_state_name(int state);
/* Appends a row to the operational log (no-op without a state database;
 * a failure is logged, never fatal to the session). */
void shoal_devc_event(shoal_client *c, shoal_client_event_kind kind, uint64_t bytes,
                      uint64_t duration_ms, uint64_t example_count, int64_t status,
                      const char *detail);
/* Milliseconds of the monotonic clock since phase_start_ms. */
uint64_t shoal_devc_phase_ms(shoal_client *c);
/* Runs the plan's task; ends in ST_UPLOAD, ST_AWAIT_ACK or ST_DONE. */
void shoal_devc_work(shoal_client *c);

#endif
