/* Shoal device SDK: the client that runs one federated session.
 *
 * A session, as docs/protocol.md describes it: check the device's
 * eligibility, connect (TLS with the server's CA pinned, then WebSocket),
 * check in, and then either take the server's rejection and its retry
 * window, or download the model, train on (or evaluate) the examples the
 * plan selects from the on-device example store, upload the update in
 * chunks, report, and read the acknowledgement. Raw examples never leave
 * the device: only the model delta and aggregate metrics are sent.
 *
 *     shoal_client_config cfg = {.host = "fl.example.com", .port = 443,
 *         .server_name = "fl.example.com", .ca_pem = pinned_ca,
 *         .population = "keyboard", .auth_token = token,
 *         .store_path = "/data/app/examples.db",
 *         .policy = {.require_charging = 1, .require_unmetered = 1}};
 *     shoal_client_new(&cfg, &port, &client, &ei);
 *     shoal_client_run(client, &result);          // blocking, one session
 *     schedule the next session at result.next_checkin_unix_ms;
 *     shoal_client_free(client);
 *
 * An event loop drives the same session with shoal_client_step instead:
 * each call does what can be done without blocking and says what to wait
 * for. shoal_client_run is a loop over shoal_client_step and the port's
 * wait.
 *
 * The client keeps the model it downloaded (and its checkpoint id) in
 * memory and names it in the next CheckIn, so the server skips the
 * download when the checkpoint is still current.
 *
 * The SDK never aborts or exits the host process: misuse returns
 * SHOAL_EINVAL. All memory comes from shoal/alloc.h. A client is used by
 * one thread at a time; distinct clients are independent. */
#ifndef SHOAL_CLIENT_H
#define SHOAL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/client_trainer.h"
#include "shoal/err.h"
#include "shoal/port.h"
#include "shoal/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The SDK's user agent, sent as CheckIn.sdk_version: "shoal-device/"
 * followed by the project's version (shoal/version.h). */
#define SHOAL_CLIENT_SDK_VERSION "shoal-device/" SHOAL_VERSION_STRING

typedef struct shoal_client shoal_client;

/* When the device may take part. Every condition is checked before
 * connecting and polled during training, between model chunks and
 * between update chunks (at most once per poll_interval_ms); an unmetered
 * network, when required, is checked again right before the Report, so an
 * upload never completes on a metered network. A condition whose port member is missing or answers
 * "unknown" counts as NOT met when it is required. A zero-initialised
 * policy allows any state. */
typedef struct shoal_eligibility {
    int require_charging;
    int require_unmetered;
    int require_idle;
    int min_battery_percent; /* 0: no minimum; else 1..100 */
    /* Training polls the conditions at most this often; 0 gives 1000. Use
     * a negative value to poll between every two batches. */
    int poll_interval_ms;
} shoal_eligibility;

typedef struct shoal_client_config {
    /* Required. Server address, TCP port and the DNS name its
     * certificate carries (SNI, and verified; NULL gives host, which must
     * then be a DNS name: see shoal/tls.h). */
    const char *host;
    uint16_t port;
    const char *server_name;
    /* Optional. WebSocket path; NULL gives "/v1/session". */
    const char *path;
    /* Required. The pinned CA certificate(s), PEM; ca_pem_len 0 means
     * strlen(ca_pem). The system trust store is never used. */
    const char *ca_pem;
    size_t ca_pem_len;
    /* Required. Population name and the device's auth token. */
    const char *population;
    const uint8_t *auth_token;
    size_t auth_token_len; /* 0: strlen((const char *)auth_token) */
    /* Required. The example store to read (opened read-only per session)
     * and its encryption key if it has one. */
    const char *store_path;
    const uint8_t *store_key;
    size_t store_key_len;
    /* When the device may take part (see shoal_eligibility). */
    shoal_eligibility policy;
    /* Limit for each network wait (connect, handshake, every message);
     * 0 gives 30000 ms. */
    int io_timeout_ms;
    /* Most examples selected for one session, whatever the plan allows;
     * 0: the plan's max_examples only. (Examples are read from the store
     * batch by batch; each selected one costs the session 20 bytes.) */
    uint64_t max_examples;
    /* Window returned when the device is ineligible before check-in or the
     * session fails before the server gave one; 0/0 gives
     * [15 min, 30 min]. */
    uint64_t fallback_retry_min_ms;
    uint64_t fallback_retry_max_ms;
    /* Seed for example shuffling and training; 0: drawn from the port's
     * random. Fixed seeds make a session reproducible (tests). */
    uint64_t train_seed;
    /* Optional audit hook: called with every protocol message (an encoded
     * shoal.Envelope, before WebSocket framing and TLS) the client sends,
     * borrowed for the call. Lets an app or a test check what leaves the
     * device. */
    void (*observe_send)(void *observe_ctx, const uint8_t *message, size_t len);
    void *observe_ctx;

    /* ---- Added in 0.2: the device's own state database (docs/sdk.md,
     * "Device state"). Everything below is optional; zero keeps the
     * behaviour of 0.1. ---- */

    /* Optional. Path of a small SQLite database (WAL) the client keeps for
     * itself, distinct from the example store; created if missing. It holds
     * the next check-in time chosen per population (a new client does not
     * check in before it: outcome NOT_YET), the last contribution time per
     * population, bytes moved per UTC day, and the operational log
     * (shoal_client_log_read). NULL: none of this is kept, and the budget
     * and period fields below must be 0. */
    const char *state_path;
    /* Operational log caps: rows older than log_max_age_ms (0 gives 30 days)
     * and all but the newest log_max_rows rows (0 gives 10,000) are
     * deleted. */
    uint64_t log_max_age_ms;
    uint64_t log_max_rows;
    /* Budgets (0: none). Bytes received and sent on the connection (TLS
     * records included) per UTC day: when the day's total has reached a
     * budget, a session does not connect and ends OVER_BUDGET, naming the
     * budget and when it resets (the next UTC midnight). A session that
     * starts under budget is not cut short by it. */
    uint64_t budget_bytes_down_per_day;
    uint64_t budget_bytes_up_per_day;
    /* Wall time per session (0: none), measured with the monotonic clock
     * from the start of the session: before training it ends the session
     * with outcome INTERRUPTED; training is stopped when it runs out
     * (INTERRUPTED, nothing uploaded). Examples per session: see
     * max_examples above. */
    uint64_t budget_session_ms;
    /* Least time between two contributions (TRAINED sessions) to the same
     * population, wall clock (0: none). Before it has passed a session
     * does not connect and ends NOT_YET. */
    uint64_t min_contribution_period_ms;

    /* ---- Added in 0.3 ---- */

    /* Optional: the app's own trainer (shoal/client_trainer.h). With
     * trainer.train set, training plans call it instead of the built-in
     * models of ml/ (the plan's architecture then need not be built in);
     * with trainer.evaluate set, evaluation plans call that. Zero: the
     * built-in models. */
    shoal_client_trainer trainer;

    /* Optional: the largest protocol message the client sends (bytes; 0
     * gives the protocol's default, 1 MiB; else at least 8192). Update
     * chunks (ReportChunk) are cut to fit it, so a smaller value means
     * more, smaller chunks: finer-grained upload resume and eligibility
     * polls between chunks. */
    size_t max_message_bytes;

    /* ---- Added in 0.4 ---- */

    /* Memory for a session's local work (0: none), in bytes: what the
     * work adds to the client's heap at its peak (the trainer's workspace,
     * optimizer state, gradient and working copy, one batch, 20 bytes per
     * selected example, the example store's read handle, and for training
     * the update and its encoding), computed from the plan before the work
     * starts. Over budget, nothing is trained: the session ends ERROR
     * (SHOAL_ELIMIT) naming both figures, Report{ERROR} is sent.
     * shoal_session_result.work_bytes gives the figure of every session;
     * docs/sdk.md, "Memory", measures the whole session. The app's own
     * trainer is counted without its own allocations. */
    uint64_t budget_session_bytes;

    /* TLS session resumption (docs/sdk.md, "TLS session resumption"),
     * on unless this is non-zero. After each full handshake the client
     * keeps the TLS session the server gave (its session ticket and the
     * session's master secret) and offers it on the next connection to
     * the same host:port, which then skips the key exchange and the
     * certificate: less CPU and fewer bytes on both ends. In memory, and
     * with state_path also in the device state, so a restarted app
     * resumes too; sealed there with a key derived from store_key when
     * there is one, in clear otherwise. Whoever reads it can decrypt the
     * recorded traffic of the sessions that used it and pose as the
     * server to this device until the server stops taking the ticket
     * (shoal-server: two periods of its tls.ticket_rotation_ms at most):
     * keep state_path in the app's private storage, or set this. A
     * session is kept only for the server name and pinned CA it was
     * verified against: a changed ca_pem or server_name means a full,
     * verified handshake. */
    int disable_tls_resumption;
} shoal_client_config;

/* How a session ended. */
typedef enum shoal_session_outcome {
    SHOAL_SESSION_TRAINED = 1,       /* trained, uploaded, reported; see ack_status */
    SHOAL_SESSION_EVALUATED,         /* evaluated and reported metrics */
    SHOAL_SESSION_REJECTED,          /* the server had no room or no task: try later */
    SHOAL_SESSION_INELIGIBLE,        /* not eligible before check-in: nothing was sent */
    SHOAL_SESSION_INTERRUPTED,       /* became ineligible or ran out of time: nothing uploaded */
    SHOAL_SESSION_INSUFFICIENT_DATA, /* fewer examples than the plan's minimum */
    SHOAL_SESSION_ERROR,             /* see err and errinfo */
    /* Added in 0.2 (need config.state_path): nothing was sent. */
    SHOAL_SESSION_NOT_YET, /* a persisted retry window or the contribution period holds: see hold */
    SHOAL_SESSION_OVER_BUDGET, /* a daily byte budget is used up: see hold */
} shoal_session_outcome;

/* Why a session did not connect (outcomes NOT_YET and OVER_BUDGET). */
typedef enum shoal_client_hold {
    SHOAL_HOLD_NONE = 0,
    SHOAL_HOLD_RETRY_WINDOW,        /* the next check-in time an earlier session chose */
    SHOAL_HOLD_CONTRIBUTION_PERIOD, /* config.min_contribution_period_ms */
    SHOAL_HOLD_BYTES_DOWN,          /* config.budget_bytes_down_per_day */
    SHOAL_HOLD_BYTES_UP,            /* config.budget_bytes_up_per_day */
} shoal_client_hold;

/* Added in 0.4: why a session ended as it did, as a code an app can
 * decide on (errinfo.msg is for a person and may change wording). Each
 * outcome comes with the reasons listed beside it. */
typedef enum shoal_session_reason {
    SHOAL_SESSION_REASON_NONE = 0,   /* TRAINED, EVALUATED: the task was done */
    SHOAL_SESSION_REASON_HELD,       /* NOT_YET, OVER_BUDGET: see hold */
    SHOAL_SESSION_REASON_INELIGIBLE, /* INELIGIBLE: the policy failed before connecting */
    /* ERROR: the connection (connect, TLS, WebSocket, send or receive)
     * failed or the server closed it; err says which. Try later. */
    SHOAL_SESSION_REASON_CONNECTION,
    /* ERROR: the server's certificate failed verification against
     * ca_pem (err SHOAL_EAUTH). Waiting does not cure it. */
    SHOAL_SESSION_REASON_SERVER_UNTRUSTED,
    SHOAL_SESSION_REASON_TIMEOUT, /* ERROR: no progress for io_timeout_ms */
    /* ERROR: the server broke the protocol, or sent what this device
     * cannot take (encodings, model size, an upload it does not hold). */
    SHOAL_SESSION_REASON_PROTOCOL,
    SHOAL_SESSION_REASON_REJECTED, /* REJECTED: no room or no task; see reason */
    /* ERROR: the server refused the auth token (CheckInResult.Rejected,
     * Abort, or HTTP 401/403 on the upgrade). Waiting does not cure it. */
    SHOAL_SESSION_REASON_AUTH_FAILED,
    SHOAL_SESSION_REASON_UNKNOWN_POPULATION, /* ERROR: the server does not know config.population */
    SHOAL_SESSION_REASON_VERSION_UNSUPPORTED, /* ERROR: the server does not speak this SDK's version
                                               */
    SHOAL_SESSION_REASON_ABORTED,        /* ERROR: the server aborted the session; see reason */
    SHOAL_SESSION_REASON_REPORT_REFUSED, /* ERROR: the ReportAck refused the report; see reason */
    /* INTERRUPTED: the device became ineligible during the download,
     * the local work or the upload. */
    SHOAL_SESSION_REASON_STOPPED_INELIGIBLE,
    SHOAL_SESSION_REASON_TIME_LIMIT,     /* INTERRUPTED: the plan's time limit passed in training */
    SHOAL_SESSION_REASON_SESSION_BUDGET, /* INTERRUPTED: budget_session_ms ran out */
    SHOAL_SESSION_REASON_CANCELED,       /* INTERRUPTED: the app's trainer canceled the work */
    SHOAL_SESSION_REASON_INSUFFICIENT_DATA, /* INSUFFICIENT_DATA: fewer examples than the plan needs
                                             */
    SHOAL_SESSION_REASON_MEMORY_BUDGET,     /* ERROR: the work would exceed budget_session_bytes */
    /* ERROR: the device's own work failed: the store, the plan's model,
     * the trainer or the app's callbacks (err says which). */
    SHOAL_SESSION_REASON_WORK_FAILED,
    /* ERROR: the device itself failed: memory, the port's random source,
     * the client's TLS or WebSocket setup. */
    SHOAL_SESSION_REASON_DEVICE,
} shoal_session_reason;

typedef struct shoal_session_result {
    shoal_session_outcome outcome;
    shoal_err err;         /* SHOAL_OK unless outcome is ERROR */
    shoal_errinfo errinfo; /* what failed, for a person */
    int reason;            /* the server's Shoal__Reason, when it gave one; else 0 */
    int ack_status;        /* Shoal__ReportStatus of the ReportAck; else 0 */
    /* The server's retry window (relative, ms), or the fallback window. */
    uint64_t retry_min_ms;
    uint64_t retry_max_ms;
    /* The next check-in chosen uniformly in the window with the port's
     * random: relative to the end of the session, and as wall-clock
     * time. */
    uint64_t next_checkin_ms;
    int64_t next_checkin_unix_ms;
    /* What was done (TRAINED, EVALUATED; partial for INTERRUPTED). */
    uint64_t round;
    uint64_t example_count;
    double loss;
    double accuracy;
    int connected;        /* a connection was opened */
    int model_downloaded; /* 0 when the held checkpoint was current */
    /* Added in 0.2. For NOT_YET and OVER_BUDGET: which hold, and the wall
     * time it ends (also in next_checkin_unix_ms; next_checkin_ms,
     * retry_min_ms and retry_max_ms are the time left). */
    shoal_client_hold hold;
    int64_t hold_until_unix_ms;
    /* Bytes received and sent on the connection in this session. */
    uint64_t bytes_down;
    uint64_t bytes_up;
    /* Added in 0.3: upload resume (docs/sdk.md, "Resuming an upload").
     * upload_saved: the upload was cut off (connection lost, or the
     * device became ineligible) and the client keeps the update to
     * resume it at the next session before the reporting deadline: in
     * memory, and with state_path also in the device state, where a new
     * client (an app restarted) takes it up (0.4). upload_resumed: this session continued such an
     * upload from the server's upload_resume_offset, without training again. */
    int upload_saved;
    int upload_resumed;
    uint64_t upload_resume_offset;
    /* Added in 0.4: the memory the session's local work was computed to
     * need (see budget_session_bytes); 0 when it did not get that far. */
    uint64_t work_bytes;
    /* Added in 0.4: why the session ended (see shoal_session_reason). */
    shoal_session_reason session_reason;
    /* Added in 0.4: the TLS handshake resumed a kept session (the server
     * took its ticket) instead of a full handshake; 0 as well when no
     * connection was made. */
    int tls_resumed;
    /* Added in 0.4: differential privacy's adaptive clipping. When the
     * plan asked for it (Plan.report_unclipped), 1 when the update's L2
     * norm was within the plan's clip before clipping, 0 when it was
     * clipped to it; the bit went to the server in the Report, or summed
     * under the masks with secure aggregation. -1 when the plan did not
     * ask (or nothing was trained). */
    int unclipped;
} shoal_session_result;

/* Creates a client; no I/O yet. cfg and everything it points to are copied;
 * port is borrowed (it and its ctx must outlive the client). Returns
 * SHOAL_OK and *out, or with *out NULL and ei (may be NULL) naming the
 * field: SHOAL_EINVAL (a NULL or missing required field, a required port
 * member missing, a bad policy value), SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_client_new(const shoal_client_config *cfg,
                                                     const shoal_port *port, shoal_client **out,
                                                     shoal_errinfo *ei);

/* Closes any open connection (without a close handshake), wipes and frees
 * everything. NULL is a no-op. */
SHOAL_API void shoal_client_free(shoal_client *client);

/* Runs one session to its end, waiting with the port's wait member, and
 * fills *out. Returns SHOAL_OK whenever the session ran (whatever its
 * outcome: read out->outcome), SHOAL_EINVAL for NULL arguments or a port
 * without wait, SHOAL_ESTATE when a session started with
 * shoal_client_step is in progress. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_client_run(shoal_client *client,
                                                     shoal_session_result *out);

/* Advances the session without blocking on the network (training, when
 * it is its turn, runs inside the call). now_ms is the port's monotonic
 * time. Returns:
 *   SHOAL_EAGAIN  waiting on the connection: call again when it is
 *                 readable (writable if shoal_client_want_write) or at
 *                 shoal_client_deadline_ms at the latest;
 *   SHOAL_DONE    the session is over and *out is filled; the next call
 *                 starts a new session;
 *   SHOAL_EINVAL  NULL arguments. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_client_step(shoal_client *client, int64_t now_ms,
                                                      shoal_session_result *out);

/* After SHOAL_EAGAIN from shoal_client_step: the connection to wait on
 * (the handle the port's connect returned), whether to wait for
 * writability, and the monotonic time by which to call step again. */
SHOAL_API shoal_port_conn *shoal_client_conn(const shoal_client *client);
SHOAL_API int shoal_client_want_write(const shoal_client *client);
SHOAL_API int64_t shoal_client_deadline_ms(const shoal_client *client);

/* The update (model delta, *count floats) the last TRAINED session
 * uploaded, or NULL (count 0) if there was none. Valid until the next
 * session starts or the client is freed. For tests and diagnostics. */
SHOAL_API const float *shoal_client_last_update(const shoal_client *client, size_t *count);

/* The model the client holds (downloaded in the last accepted session),
 * or NULL. Same lifetime as shoal_client_last_update. */
SHOAL_API const float *shoal_client_model(const shoal_client *client, size_t *count);

/* Short name of an outcome ("TRAINED", ...); "?" for unknown values. */
SHOAL_API const char *shoal_session_outcome_name(shoal_session_outcome outcome);

/* ---- The operational log (added in 0.2; needs config.state_path) ------------------------- */

/* What a log row records. Sizes and times only: never an example, a model
 * or an update. */
typedef enum shoal_client_event_kind {
    SHOAL_EVENT_CHECKED_IN = 1,    /* CheckIn sent */
    SHOAL_EVENT_ACCEPTED,          /* status: the round */
    SHOAL_EVENT_REJECTED,          /* status: the Shoal__Reason */
    SHOAL_EVENT_DOWNLOADED,        /* bytes: model bytes; duration_ms */
    SHOAL_EVENT_TRAINED,           /* example_count; duration_ms */
    SHOAL_EVENT_EVALUATED,         /* example_count; duration_ms */
    SHOAL_EVENT_INTERRUPTED,       /* example_count so far; detail: why */
    SHOAL_EVENT_INSUFFICIENT_DATA, /* example_count: how many there were */
    SHOAL_EVENT_UPLOADED,          /* bytes: update bytes; duration_ms */
    SHOAL_EVENT_ACKED,             /* status: the Shoal__ReportStatus */
    SHOAL_EVENT_ERROR,             /* status: the shoal_err; detail: errinfo */
    SHOAL_EVENT_INELIGIBLE,        /* detail: which condition */
    SHOAL_EVENT_HELD,              /* status: the shoal_client_hold; detail */
} shoal_client_event_kind;

typedef struct shoal_client_event {
    int64_t id;      /* increasing, never reused */
    int64_t unix_ms; /* the port's wall clock when it happened */
    shoal_client_event_kind kind;
    const char *population;
    uint64_t bytes;
    uint64_t duration_ms;
    uint64_t example_count;
    int64_t status;
    const char *detail; /* "" when none */
} shoal_client_event;

/* Calls fn(ctx, event) for every log row with unix_ms >= since_unix_ms,
 * oldest first, until fn returns non-zero. The event and its strings are
 * borrowed for the call. Returns SHOAL_OK; SHOAL_EINVAL (NULL client or
 * fn, or a client without state_path); SHOAL_EIO, SHOAL_ENOMEM (the
 * database failed). Not during shoal_client_step's callbacks. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_client_log_read(shoal_client *client, int64_t since_unix_ms,
                      int (*fn)(void *ctx, const shoal_client_event *event), void *ctx);

/* Short name of an event kind ("CHECKED_IN", ...); "?" for unknown. */
SHOAL_API const char *shoal_client_event_name(shoal_client_event_kind kind);

/* Short name of a session reason ("AUTH_FAILED", ...); "NONE"; "?" for
 * unknown. Added in 0.4. */
SHOAL_API const char *shoal_session_reason_name(shoal_session_reason reason);

/* Short name of a hold ("RETRY_WINDOW", ...); "NONE"; "?" for unknown. */
SHOAL_API const char *shoal_client_hold_name(shoal_client_hold hold);

#ifdef __cplusplus
}
#endif

#endif
