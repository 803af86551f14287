/* shoal-server internals: the actors and what they tell each other.
 *
 *   net (service thread) --data/open/close--> selector[conn % n]
 *   selector --checkin/delivered/report/lost--> coordinator[population]
 *   coordinator --configure/reject/ack/abort--> selector (by shard index)
 *   selector --encoded frames--> net (shoal_net_send)
 *
 * A selector owns the per-connection protocol state (phase, reassembler)
 * and does the per-device work in parallel: decoding, authentication,
 * chunking the model out, reassembling and decoding the update, NaN checks.
 * A coordinator owns its population's round engine, model and state
 * database connection, and is the only writer of both. */
#ifndef SHOAL_SERVER_INT_H
#define SHOAL_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shoal/actor.h"
#include "shoal/auth.h"
#include "shoal/envelope.h"
#include "shoal/model.h"
#include "shoal/net.h"
#include "shoal/round.h"
#include "shoal/secagg_protocol.h"
#include "shoal/server.h"
#include "shoal/state.h"
#include "kept_updates.h"
#include "shoal/encoding.h"
#include "refusals.h"
#include "upload_gate.h"
#include "u64map.h"

#define SESSION_ID_LEN 16 /* 8-byte engine id + 8 random bytes */
/* Largest example count a report may claim when the plan sets no
 * max_examples, and largest |element| of an update: beyond either one
 * device could outweigh, or overflow, a round's sum. */
#define SHOAL_SERVER_MAX_EXAMPLES   1000000000ull
#define SHOAL_SERVER_MAX_UPDATE_ABS 1.0e6f
#define CHECKPOINT_ID_LEN           16

/* An immutable encoded model shared by reference between the coordinator,
 * selectors and HTTP. */
typedef struct model_blob {
    atomic_int refs;
    uint64_t version;
    uint8_t checkpoint_id[CHECKPOINT_ID_LEN];
    size_t param_count;
    uint8_t *bytes; /* FLOAT32_LE */
    size_t len;
    /* The model's ModelChunk envelopes, encoded once and shared by every
     * connection that downloads this version. */
    uint8_t **chunks;
    size_t *chunk_lens;
    size_t chunk_count;
} model_blob;

/* NULL on allocation failure or a non-finite model. `codec` gives the
 * message size the chunks are cut to. */
model_blob *shoal_model_blob_new(const float *params, size_t count, uint64_t version,
                                 uint64_t population_hash, const shoal_codec *codec);
/* shoal_net_send_shared's release callback for a model_blob reference. */
void shoal_model_blob_release(void *blob);
model_blob *shoal_model_blob_ref(model_blob *b);
void shoal_model_blob_unref(model_blob *b);

/* Counters for /metrics, per population; written by any actor. */
typedef struct pop_metrics {
    atomic_uint_least64_t rounds_started, rounds_committed, rounds_abandoned, model_version;
    atomic_uint_least64_t checked_in, accepted, rejected, reported, dropped;
    atomic_uint_least64_t aggregation_ns;
    atomic_uint_least64_t eval_loss_bits, eval_accuracy_bits; /* doubles; NaN before any */
    atomic_uint_least64_t evaluations;
    /* Secure aggregation: groups formed, unmasked, failed; devices lost
     * at each phase (advertise, share, mask, unmask). */
    atomic_uint_least64_t sa_groups, sa_groups_done, sa_groups_failed;
    atomic_uint_least64_t sa_dropped[4];
    /* ... and, over the unmasked groups, the time their aggregators spent
     * on the masked inputs and on unmasking (sa_result_msg). */
    atomic_uint_least64_t sa_inputs_ns, sa_unmask_ns;
    /* Plain uploads above the update bound: scaled down, or refused. */
    atomic_uint_least64_t updates_clipped, updates_refused_norm;
    /* Differential privacy: epsilon so far (a double), the rounds the
     * accountant composed, 1 once the budget allows no more rounds. */
    atomic_uint_least64_t dp_epsilon_bits, dp_steps, dp_exhausted;
    atomic_uint_least64_t dp_rho_bits;  /* DP-FTRL: rho so far (a double) */
    atomic_uint_least64_t dp_clip_bits; /* the clip the next round gets (a double) */
} pop_metrics;

typedef struct coordinator coordinator;
typedef struct selector selector;
typedef struct aggregator aggregator;

/* One population at run time. */
typedef struct population {
    const shoal_population_config *cfg;
    size_t index;
    uint64_t name_hash;
    size_t param_count;
    Shoal__Plan train_plan, eval_plan; /* built once from the config; borrowed by encoders */
    Shoal__ModelSpec model_spec;
    Shoal__ClientOptimizer optimizer;
    Shoal__ExampleSelector example_selector;
    Shoal__Limits limits;
    Shoal__UpdateBound update_bound;
    /* The L2 norms the selector holds plain uploads to (0: none): above
     * refuse_norm an upload is refused (update_bound "refuse"); above
     * clip_norm it is scaled down to it (update_bound "clip", or the
     * norm_bounded_mean rule, whichever is smaller). */
    double refuse_norm, clip_norm;
    uint32_t input_shape[4];
    pop_metrics metrics;
    coordinator *coord;
    shoal_actor *coord_actor;
    /* The latest committed model, for HTTP downloads. */
    pthread_mutex_t latest_lock;
    model_blob *latest;
    /* Set (once, by the coordinator) when a commit to the state database
     * failed: the population takes no more devices until a restart, and
     * halt_msg (written before halted is set) says why. */
    atomic_int halted;
    char halt_msg[384];
} population;

struct shoal_server {
    const shoal_server_config *cfg;
    shoal_actor_system *actors;
    shoal_net *net;
    population *pops;
    size_t pop_count;
    selector **selectors;
    shoal_actor **selector_actors;
    size_t selector_count;
    /* Aggregators fold accepted updates of synchronous rounds in parallel;
     * the coordinator sums their partial sums (the master aggregation). */
    aggregator **aggregators;
    shoal_actor **aggregator_actors;
    size_t aggregator_count;
    shoal_codec device_codec; /* checks what devices send */
    shoal_codec server_codec; /* checks what we send */
    atomic_int serving;       /* 1 while sessions are accepted */
    atomic_int stopping;
    atomic_int actors_gone; /* set before the actor system is freed */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    size_t coordinators_done;
    shoal_refusals *refusals; /* counters, bounded logs, the failed-auth limit */
    upload_gate uploads;      /* limits.max_concurrent_uploads */
    int uploads_ready;
};

/* Message types. */
enum {
    /* to selectors */
    MSG_CONN_OPEN = 1,       /* a = conn, payload = the peer's IP address (a string) */
    MSG_CONN_DATA,           /* a = conn, payload = bytes */
    MSG_CONN_CLOSED,         /* a = conn */
    MSG_CONN_HELD,           /* a = conn: its input paused at a message's start (hold_next) */
    MSG_SEL_CONFIGURE,       /* a = conn, payload = configure_msg */
    MSG_SEL_REJECT,          /* a = conn, payload = reject_msg */
    MSG_SEL_ACK,             /* a = conn, payload = ack_msg */
    MSG_SEL_ABORT,           /* a = conn, payload = reject_msg (reason, window) */
    MSG_SEL_CHECKIN_TIMEOUT, /* a = conn: it must have checked in by now */
    MSG_SEL_RESUMED,         /* a = conn, payload = resume_msg: the session continues here */
    /* to coordinators */
    MSG_CO_CHECKIN,   /* payload = checkin_msg */
    MSG_CO_DELIVERED, /* a = session */
    MSG_CO_REPORT,    /* payload = report_msg */
    MSG_CO_LOST,      /* a = session */
    MSG_CO_TICK,      /* a = timer generation */
    MSG_CO_SHUTDOWN,
    MSG_CO_DETACH,         /* payload = resume_msg: a session's connection dropped mid-upload */
    MSG_CO_RESUME,         /* payload = resume_msg: a device asks to continue a session */
    MSG_CO_EXPIRE,         /* a = session: a detached session's grace period ended */
    MSG_CO_PARTIAL,        /* payload = partial_msg: an aggregator's share of a round */
    MSG_CO_PARTIAL_FAILED, /* a = round: an aggregator could not answer with its share */
    MSG_CO_SA_DEVICE,      /* payload = sa_input_msg: a device's secure-aggregation message */
    MSG_CO_SA_FRAMES,      /* payload = sa_frames_msg: a group's messages to its devices */
    MSG_CO_SA_RESULT,      /* payload = sa_result_msg: a group ended */
    /* to aggregators */
    MSG_AGG_FOLD,     /* payload = fold_msg */
    MSG_AGG_COLLECT,  /* a = round, b = population index: reply MSG_CO_PARTIAL */
    MSG_AGG_SA_OPEN,  /* payload = sa_group_params: run this group here */
    MSG_AGG_SA_INPUT, /* payload = sa_input_msg: a message for one of its groups */
    MSG_AGG_SA_TICK,  /* a = group: its deadline may have passed */
};

/* A device's place in a secure-aggregation group, as its plan announces it
 * (plain data: the selector writes Plan.secure_aggregation from it). */
typedef struct sa_plan {
    shoal_secagg_config cfg; /* verify_keys NULL */
    shoal_secagg_fixed fx;
    uint32_t index;
    int plus;
    uint64_t phase_timeout_ms;
} sa_plan;

/* A device's secure-aggregation message on its way to its group: from the
 * selector (session, conn set; group unset) to the coordinator, then to
 * the group's aggregator (group, index set). Owns env. */
typedef struct sa_input_msg {
    shoal_session_id session;
    shoal_conn_id conn;
    uint64_t group;
    uint32_t index;
    shoal_envelope *env;
} sa_input_msg;
void shoal_sa_input_msg_free(void *p);

/* Encoded envelopes from a group to its devices (by index); owns them. */
struct sa_frame;
typedef struct sa_frames_msg {
    uint64_t group;
    struct sa_frame *frames;
    size_t count;
} sa_frames_msg;
void shoal_sa_frames_msg_free(void *p);

/* A group ended. DONE: sum (param_count doubles, owned) is the weighted sum
 * of U3's updates and total_weight their weights (and unclipped, with
 * adaptive clipping, how many of them set the unclipped bit); FAILED: sum
 * NULL. */
typedef struct sa_result_msg {
    uint64_t group;
    int done;
    uint32_t dropped[4];
    size_t param_count;
    double *sum;
    uint64_t total_weight;
    uint64_t unclipped;
    uint32_t *survivors; /* owned, ascending indices */
    size_t survivor_count;
    /* Time the aggregator spent on the group's masked-input phase (adding
     * the inputs into its sum) and on its unmask phase (taking the shares,
     * rebuilding the secrets, removing the masks, decoding the sum): wall
     * and the aggregator thread's CPU, ns. */
    uint64_t inputs_ns, inputs_cpu_ns, unmask_ns, unmask_cpu_ns;
    char why[160];
} sa_result_msg;
void shoal_sa_result_msg_free(void *p);

/* Messages to and from an aggregator carry everything it needs by value or
 * as owned buffers, never a pointer into the server's populations,
 * sessions or configuration, so an aggregator group could run in another
 * process: the population index is only an address for the answer. */

/* An accepted update on its way to an aggregator. */
typedef struct fold_msg {
    uint32_t population; /* index: whose coordinator collects the sum */
    uint64_t round;
    float weight;       /* the round engine's fold weight */
    float scale;        /* the selector's L2 clip factor for update (1: none) */
    size_t param_count; /* of update */
    uint8_t *update;    /* param_count FLOAT32_LE, scanned by the selector, owned */
    int keep;           /* keep the update whole (median, trimmed mean), do not sum it */
} fold_msg;
void shoal_fold_msg_free(void *p);

/* An aggregator's answer to MSG_AGG_COLLECT: its weighted sum of the
 * round's updates it was sent, and what went wrong folding them. */
typedef struct partial_msg {
    uint64_t round;
    size_t param_count; /* of sum; 0 when sum is NULL */
    float *sum;         /* owned; NULL when no update of the round was folded here */
    uint64_t folded;    /* updates in sum */
    uint64_t failed;    /* updates of the round that could not be folded (no memory) */
    uint64_t fold_ns;   /* time spent folding them */
    kept_updates kept;  /* the round's updates sent with keep, owned */
} partial_msg;
void shoal_partial_msg_free(void *p);

/* An aggregator for populations 0 .. population_count - 1. */
shoal_err shoal_aggregator_new(shoal_server *srv, uint32_t index, size_t population_count,
                               aggregator **out);
void shoal_aggregator_free(aggregator *a);
void shoal_aggregator_handle(shoal_actor *self, void *state, shoal_msg *msg);

typedef struct checkin_msg {
    shoal_conn_id conn;
    uint32_t shard;
} checkin_msg;

typedef struct configure_msg {
    shoal_session_id session;
    uint8_t session_bytes[SESSION_ID_LEN];
    shoal_task_kind task;
    uint64_t round;
    /* One reference, owned by the message. The one shared thing a message
     * carries: the model sent to devices, immutable once built and
     * refcounted, so that a thousand configured devices share one encoding
     * of it instead of a copy each (docs/benchmarks.md). A transport to
     * another process would send the version and fetch the blob once. */
    model_blob *model;
    int64_t retry_min_ms, retry_max_ms;
    int secagg; /* the device aggregates securely, in the group of sa */
    sa_plan sa;
    /* Training with differential privacy: the round's clip S_t, the
     * update_bound its plan announces and its uploads are held to (it
     * moves with adaptive clipping); 0: the population's bounds. */
    double clip;
} configure_msg;

/* A session moving between connections for an upload resume. */
struct shoal_reassembler;
/* An upload's scan, made chunk by chunk as its bytes arrive
 * (shoal_tensor_scan_add) so nothing is left to read when the Report
 * comes; it travels with the upload across a resume. What it finds is
 * told only when the Report closes the upload (whose encoding decides
 * first). */
typedef struct upload_scan {
    shoal_tensor_scan scan;
    int reason;       /* the Shoal__Reason it found (NON_FINITE, MALFORMED), 0 none */
    char detail[160]; /* with reason: the element and what was wrong with it */
} upload_scan;

/* upload_checks.c. Scans the whole elements of `upload` that arrived since
 * the last call into u (u->reason and u->detail set on the first bad one). */
void shoal_upload_scan_received(const struct shoal_reassembler *upload, upload_scan *u);

typedef struct resume_msg {
    shoal_session_id session;
    shoal_session_id fallback; /* MSG_CO_RESUME: the new session if it cannot resume */
    uint8_t session_bytes[SESSION_ID_LEN];
    /* Who opened the session (MSG_CO_DETACH) or asks to continue it
     * (MSG_CO_RESUME): the authenticated device id in hmac mode, "" in
     * shared mode. A resume continues only the same identity's session. */
    char identity[SHOAL_AUTH_DEVICE_ID_MAX + 1];
    shoal_conn_id conn; /* MSG_CO_RESUME: the new connection */
    uint32_t shard;     /* MSG_CO_RESUME: its selector */
    shoal_task_kind task;
    uint64_t round;
    struct shoal_reassembler *upload; /* owned; NULL if nothing arrived yet */
    upload_scan scan;                 /* of upload's bytes */
    model_blob *model; /* MSG_SEL_RESUMED: the session's model (a reference, as in configure_msg) */
    int64_t retry_min_ms, retry_max_ms;
    double clip; /* the session's clip, as configure_msg's */
} resume_msg;

void shoal_resume_msg_free(void *p);

typedef struct reject_msg {
    int reason; /* Shoal__Reason */
    int64_t retry_min_ms, retry_max_ms;
    char detail[160];
} reject_msg;

typedef struct report_msg {
    shoal_session_id session;
    shoal_conn_id conn;
    uint32_t shard;
    int outcome; /* Shoal__ReportOutcome */
    int refused; /* a Shoal__Reason found by the selector (shape, NaN, chunk), or 0 */
    uint64_t example_count;
    double loss;      /* mean loss reported, NaN if absent */
    double accuracy;  /* evaluation accuracy, NaN if absent */
    uint8_t *update;  /* train + completed: param_count FLOAT32_LE, scanned, owned */
    float scale;      /* the factor that brings update within the L2 bound (1: none) */
    int unclipped;    /* adaptive clipping: the device's bit, 0 or 1 (-1: not asked) */
    char detail[160]; /* with refused: what was wrong, for the ack ("" none) */
} report_msg;

/* upload_checks.c. Holds an accepted upload of L2 norm `norm` to the
 * population's update bound, or to its round's clip when round_clip > 0
 * (differential privacy: refused above it): 0 when it may go on, with
 * rm->scale the factor that brings it within the bound (1: unchanged),
 * else the refusal's Shoal__Reason with rm->detail saying why. */
int shoal_upload_hold_to_norm(population *pop, double round_clip, double norm, report_msg *rm);

/* upload_checks.c. An accepted update (`count` FLOAT32_LE elements, already
 * scanned) as floats times `scale`, for the paths that need floats (FedBuff,
 * the robust rules): an array the caller frees with shoal_free, or NULL
 * when memory is short. Thread-safe. */
float *shoal_upload_floats(const uint8_t *update, size_t count, float scale);

typedef struct ack_msg {
    int status; /* Shoal__ReportStatus */
    int reason;
    int64_t retry_min_ms, retry_max_ms;
    char detail[160];
} ack_msg;

void shoal_report_msg_free(void *p);
/* The wire form of a session id: the engine's id, then 8 random bytes. */
void shoal_session_bytes_fill(uint8_t out[SESSION_ID_LEN], shoal_session_id session);
/* A new random session id, never 0. Unique only with high probability: the
 * coordinator draws again for one that is live in its population. */
shoal_session_id shoal_session_id_next(void);
void shoal_configure_msg_free(void *p);

/* coordinator.c */
shoal_err shoal_coordinator_new(shoal_server *srv, population *pop, shoal_state *state,
                                coordinator **out, shoal_errinfo *ei);
void shoal_coordinator_free(coordinator *co);
shoal_state *shoal_coordinator_state(const coordinator *co);
void shoal_coordinator_handle(shoal_actor *self, void *state, shoal_msg *msg);
/* Starts the timers; called once the actors are running. */
shoal_err shoal_coordinator_start(coordinator *co);

/* coordinator_secagg.c: the coordinator's view of its rounds' groups. */
typedef struct sa_rounds sa_rounds;
shoal_err shoal_sa_rounds_new(shoal_server *srv, population *pop, sa_rounds **out);
void shoal_sa_rounds_free(sa_rounds *sa);
/* Puts `session` of `round` in a group (opening one on an aggregator when
 * needed) and fills its plan. SHOAL_ELIMIT when the round's groups are
 * full, SHOAL_ENOMEM. */
shoal_err shoal_sa_rounds_assign(sa_rounds *sa, uint64_t round, shoal_session_id session,
                                 int64_t now, sa_plan *out);
/* Forwards a device's message to its group's aggregator; takes msg on
 * SHOAL_OK. SHOAL_ENOTFOUND for a session in no group. */
shoal_err shoal_sa_rounds_forward(sa_rounds *sa, sa_input_msg *msg);
/* The session of device `index` of `group`, or 0. */
shoal_session_id shoal_sa_rounds_session(const sa_rounds *sa, uint64_t group, uint32_t index);
/* Records a group's end. Calls report(ctx, session, survived) for each of
 * its members (survived: in U3 of a group that unmasked). */
void shoal_sa_rounds_result(sa_rounds *sa, sa_result_msg *res,
                            void (*report)(void *ctx, shoal_session_id session, int survived),
                            void *ctx);
/* The engine asked for round `round`'s aggregate: the mean of its unmasked
 * groups into mean[param_count] (sum_only: their sum, for differential
 * privacy's own denominator), with the sum of their weights in *weight
 * and of their unclipped bits in *unclipped (adaptive clipping; else 0).
 * SHOAL_ELIMIT (nothing written, why in `why`) with fewer than min_groups
 * groups. Forgets the round's groups. */
shoal_err shoal_sa_rounds_mean(sa_rounds *sa, uint64_t round, int sum_only, float *mean,
                               uint64_t *weight, uint64_t *unclipped, char *why, size_t why_len);
/* Forgets groups of rounds up to `round` (ended without an aggregate). */
void shoal_sa_rounds_forget(sa_rounds *sa, uint64_t round);

/* selector.c */
shoal_err shoal_selector_new(shoal_server *srv, uint32_t index, selector **out);
void shoal_selector_free(selector *sel);
void shoal_selector_handle(shoal_actor *self, void *state, shoal_msg *msg);

/* session_plan.c. Whether a device's capabilities fit what the
 * population's plans ask: 0, or the Shoal__Reason to abort its check-in
 * with and, in detail[0..len), why (an encoding, secure aggregation,
 * adaptive clipping's bit, the model's size). */
int shoal_session_capabilities_refusal(const population *pop, const Shoal__Capabilities *caps,
                                       char *detail, size_t len);
/* session_plan.c. The plan of a training session: the population's, with
 * its round's clip (clip > 0: update_bound.l2_norm, and report_unclipped
 * with adaptive clipping) and its secure-aggregation group (sa not NULL),
 * in *plan pointing into *storage and pop (which must outlive it). */
typedef struct session_plan_storage {
    Shoal__UpdateBound update_bound;
    Shoal__SecureAggregation sa;
} session_plan_storage;
void shoal_session_train_plan(const population *pop, double clip, const sa_plan *sa,
                              Shoal__Plan *plan, session_plan_storage *storage);

/* http.c */
void shoal_server_http(void *ctx, const shoal_http_request *req, shoal_http_response *resp);

/* Encodes and sends one envelope to `conn`; on failure closes it. */
void shoal_server_send(shoal_server *srv, shoal_conn_id conn, const shoal_envelope *env);

#endif
