/* Shoal: the round engine, the whole round logic of a population as a pure
 * state machine.
 *
 * No I/O, no threads, no clock: the caller passes the time in with every
 * event (milliseconds on any monotonic scale: wall time in the server, a
 * virtual clock in the simulator, chosen values in tests). Events go in:
 * a device checked in, its plan and model were delivered, it reported, it
 * was lost, time advanced. Decisions come back directly (accept or reject
 * with a retry window; report accepted, late or refused) and everything
 * else the driver must do is queued as actions: configure a device, abort
 * a device, a round committed or was abandoned, a federated evaluation
 * finished. The driver drains them with shoal_round_next_action() and arms
 * one timer for shoal_round_next_timer().
 *
 * Synchronous mode (FedAvg family; Bonawitz et al. MLSys 2019, sec. 2.2):
 * each round selects goal_count * over_selection devices within the
 * selection window, configures them, and commits when goal_count reports
 * are in, or at the reporting deadline with at least
 * ceil(goal_count * min_report_fraction); with fewer the round is abandoned
 * and a new one starts from the same model. Reports are folded into a
 * running weighted sum as they arrive and never stored. With pipelining on,
 * selection for round i+1 runs while round i reports (sec. 4.2).
 *
 * Asynchronous mode (FedBuff, Nguyen et al. AISTATS 2022): up to
 * goal_count devices train at once, each from the model version it was
 * given; every report is weighted by 1/(1+staleness)^staleness_exponent
 * and buffered into a running sum; every buffer_size reports the server
 * optimizer steps. Reports staler than max_staleness (if set) are refused.
 *
 * Federated evaluation: after every eval_every committed training rounds
 * (or server steps in async mode) an evaluation task is opened on the new
 * model; eval_goal_count selected devices report loss and accuracy on
 * their own data, aggregated by example count.
 *
 * Pace steering (Bonawitz et al. 2019, sec. 2.3): every rejection carries a
 * retry window sized so that the population's check-ins arrive about as
 * fast as the rounds consume devices: the window's centre is the estimated
 * population size divided by the demanded check-in rate, clamped to
 * [retry_min_ms, retry_max_ms].
 *
 * An engine is not thread-safe: one owner (the population's coordinator
 * actor, or the simulator's event loop) calls it. */
#ifndef SHOAL_ROUND_H
#define SHOAL_ROUND_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/optim.h"

typedef uint64_t shoal_session_id;

typedef enum shoal_round_mode {
    SHOAL_ROUND_SYNC,
    SHOAL_ROUND_ASYNC,
} shoal_round_mode;

typedef enum shoal_weighting {
    SHOAL_WEIGHT_EXAMPLES, /* weight = example count (FedAvg) */
    SHOAL_WEIGHT_UNIFORM,  /* every report counts the same */
} shoal_weighting;

typedef enum shoal_task_kind {
    SHOAL_TASK_TRAIN,
    SHOAL_TASK_EVAL,
} shoal_task_kind;

typedef struct shoal_round_config {
    shoal_round_mode mode;
    uint32_t goal_count;           /* sync: reports per round; async: devices training at once */
    float over_selection;          /* >= 1; default 1.3 */
    float min_report_fraction;     /* (0, 1]; default 0.8 */
    int64_t selection_window_ms;   /* > 0; default 60 s */
    int64_t reporting_deadline_ms; /* > 0, counted from configuration; default 10 min */
    shoal_weighting weighting;
    int pipelining;               /* sync: select the next round while this one reports */
    uint32_t eval_every;          /* 0: no federated evaluation */
    uint32_t eval_goal_count;     /* devices per evaluation; default goal_count */
    uint32_t buffer_size;         /* async: K reports per server step; default 10 */
    uint32_t max_staleness;       /* async: 0 = unbounded */
    float staleness_exponent;     /* async: default 0.5, i.e. 1/sqrt(1+s) */
    int64_t retry_min_ms;         /* bounds of every retry window; default 10 s */
    int64_t retry_max_ms;         /* default 1 h */
    uint64_t population_estimate; /* 0: learn it from the check-in rate */
    /* sync only: the driver folds the accepted updates itself (e.g. on
     * several aggregator threads) instead of passing them to
     * shoal_round_report: each accepted training ack carries the weight to
     * fold the update with and the round it belongs to; when the round has
     * what it needs the engine queues SHOAL_ACTION_AGGREGATE and waits for
     * the weighted sum through shoal_round_aggregated. 0: the engine folds. */
    int external_aggregation;
    shoal_server_optim_config server_optim;
} shoal_round_config;

/* A config with every default above, for `mode` and `goal_count`, and the
 * server optimizer at shoal_server_optim_defaults(SHOAL_SERVER_FEDAVG). */
SHOAL_API shoal_round_config shoal_round_defaults(shoal_round_mode mode, uint32_t goal_count);

/* Checks every field and combination; ei names the field and the rule. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_config_check(const shoal_round_config *cfg,
                                                             shoal_errinfo *ei);

typedef struct shoal_round_engine shoal_round_engine;

/* An engine starting from `params` (param_count floats, copied) at time
 * `now`. server_state/steps restore the server optimizer (NULL/0 for a
 * fresh one) and `version` is the number of the last committed model, so a
 * restarted server continues where its checkpoint left off. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_engine_new(const shoal_round_config *cfg,
                                                           const float *params, size_t param_count,
                                                           const float *server_state,
                                                           uint64_t server_steps, uint64_t version,
                                                           int64_t now, shoal_round_engine **out);
SHOAL_API void shoal_round_engine_free(shoal_round_engine *e);

/* ---- events in ----------------------------------------------------------- */

typedef struct shoal_checkin_result {
    int accepted;
    uint64_t round;       /* accepted: the round (sync) or version (async) joined */
    shoal_task_kind task; /* accepted: train or evaluate */
    int configure_now;    /* accepted: a CONFIGURE action for it is queued now; else later */
    int64_t retry_min_ms; /* rejected: when to come back, relative to now */
    int64_t retry_max_ms;
} shoal_checkin_result;

/* A device opened session `session` (unique, chosen by the driver) and asks
 * for work. SHOAL_ESTATE if the session is already known. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_checkin(shoal_round_engine *e, int64_t now,
                                                        shoal_session_id session,
                                                        shoal_checkin_result *result);

/* The plan and model of a CONFIGURE action reached the device (the
 * reporting deadline is already running from configuration). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_delivered(shoal_round_engine *e, int64_t now,
                                                          shoal_session_id session);

typedef enum shoal_report_outcome {
    SHOAL_REPORT_ACCEPTED,
    SHOAL_REPORT_LATE,    /* its round already closed; discarded */
    SHOAL_REPORT_REFUSED, /* not selected, sent twice, wrong shape, NaN/Inf, too stale */
} shoal_report_outcome;

typedef struct shoal_report {
    uint64_t example_count; /* > 0 */
    const float *delta;     /* train: param_count floats, local minus global; eval, and train
                               with external_aggregation: NULL (not read) */
    double loss_sum;        /* summed loss over the examples (train or eval) */
    uint64_t correct;       /* eval: argmax hits */
} shoal_report;

/* Why a report was not folded in (LATE and REFUSED), for drivers that map
 * it to a wire reason; the ack's `reason` text says the same for people. */
typedef enum shoal_refusal {
    SHOAL_REFUSAL_NONE = 0,       /* accepted */
    SHOAL_REFUSAL_NOT_SELECTED,   /* unknown session */
    SHOAL_REFUSAL_NOT_CONFIGURED, /* selected but not configured yet */
    SHOAL_REFUSAL_LATE,           /* its round closed */
    SHOAL_REFUSAL_MALFORMED,      /* no examples, no update, more hits than examples, bad loss */
    SHOAL_REFUSAL_NON_FINITE,     /* NaN or Inf in the update */
    SHOAL_REFUSAL_TOO_STALE,      /* async: staler than max_staleness */
} shoal_refusal;

typedef struct shoal_report_ack {
    shoal_report_outcome outcome;
    const char *reason;   /* static text for LATE and REFUSED; NULL when accepted */
    int64_t retry_min_ms; /* when to check in again, relative to now */
    int64_t retry_max_ms;
    /* external_aggregation, an accepted training report: the driver must add
     * fold_weight * update to its sum for round `aggregate`. */
    float fold_weight;
    uint64_t aggregate;
    shoal_refusal refusal; /* SHOAL_REFUSAL_NONE when accepted */
} shoal_report_ack;

/* A device's report. The engine folds an accepted delta into its running
 * sum at once and keeps no pointer to it. The session ends with the ack. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_report(shoal_round_engine *e, int64_t now,
                                                       shoal_session_id session,
                                                       const shoal_report *report,
                                                       shoal_report_ack *ack);

/* The session ended without a report (connection lost, device became
 * ineligible, interrupted). Unknown sessions are ignored. */
SHOAL_API void shoal_round_lost(shoal_round_engine *e, int64_t now, shoal_session_id session);

/* Time advanced: fires the selection window and deadlines due by now. */
SHOAL_API void shoal_round_tick(shoal_round_engine *e, int64_t now);

/* The next time shoal_round_tick must be called, or INT64_MAX if none. */
SHOAL_API int64_t shoal_round_next_timer(const shoal_round_engine *e);

/* ---- actions out --------------------------------------------------------- */

typedef enum shoal_round_action_kind {
    SHOAL_ACTION_CONFIGURE, /* send plan + model `version` for `task` to `session` */
    SHOAL_ACTION_ABORT,     /* tell `session` to stop; its session is over */
    SHOAL_ACTION_COMMIT,    /* model `version` committed: persist params + state */
    SHOAL_ACTION_ABANDONED, /* round `round` abandoned, nothing applied */
    SHOAL_ACTION_EVALUATED, /* federated evaluation of model `version` finished */
    SHOAL_ACTION_AGGREGATE, /* external_aggregation: round `round` has its reports; pass the
                               weighted sum of their updates to shoal_round_aggregated */
} shoal_round_action_kind;

typedef struct shoal_round_stats {
    uint32_t selected; /* devices accepted into the round */
    uint32_t reported; /* accepted reports */
    uint32_t dropped;  /* lost before reporting */
    uint32_t late;     /* reports after the round closed */
    uint64_t examples; /* examples behind the accepted reports */
    double loss;       /* example-weighted mean of reported losses */
    double accuracy;   /* evaluation: example-weighted accuracy */
    int64_t started_ms, ended_ms;
} shoal_round_stats;

/* Why a session was aborted (SHOAL_ACTION_ABORT), for drivers that map it
 * to a wire reason; `reason` says the same for people. */
typedef enum shoal_abort_cause {
    SHOAL_ABORT_ROUND_CLOSED = 0, /* its round (or evaluation) ended without it */
    SHOAL_ABORT_NO_TASK,          /* its selection was abandoned: there is no task */
} shoal_abort_cause;

/* Why a round was abandoned (SHOAL_ACTION_ABANDONED); `reason` says the
 * same for people. */
typedef enum shoal_abandon_cause {
    SHOAL_ABANDON_TOO_FEW_REPORTS = 0, /* fewer than the minimum reported before the deadline */
    SHOAL_ABANDON_TOO_FEW_DEVICES,     /* the selection window closed with too few devices */
    SHOAL_ABANDON_NOT_FINITE,          /* the averaged update (or the optimizer step) was not
                                          finite */
    SHOAL_ABANDON_AGGREGATION_FAILED,  /* the driver could not aggregate the round's updates
                                          (shoal_round_aggregation_failed) */
} shoal_abandon_cause;

typedef struct shoal_round_action {
    shoal_round_action_kind kind;
    shoal_session_id session;    /* CONFIGURE, ABORT */
    shoal_task_kind task;        /* CONFIGURE */
    uint64_t round;              /* round number (sync) or server step (async) */
    uint64_t version;            /* CONFIGURE: model to send; COMMIT, EVALUATED: model */
    const char *reason;          /* ABORT, ABANDONED: static text */
    shoal_round_stats stats;     /* COMMIT, ABANDONED, EVALUATED */
    shoal_abort_cause cause;     /* ABORT */
    shoal_abandon_cause abandon; /* ABANDONED */
    /* ABORT: when the device is to check in again, relative to now, paced
     * by the engine (a small population's devices are sent back to one
     * common moment, so that they meet in one selection window). */
    int64_t retry_min_ms;
    int64_t retry_max_ms;
} shoal_round_action;

/* external_aggregation: the weighted sum (param_count floats: the sum of
 * fold_weight * update over every report accepted into `round`) of a round
 * announced by SHOAL_ACTION_AGGREGATE. The engine applies the server
 * optimizer to sum / (sum of weights) and queues SHOAL_ACTION_COMMIT (or
 * ABANDONED if the mean is not finite); the next round, if one waits for
 * this model, is configured. SHOAL_ESTATE when `round` is not waiting for
 * its sum, SHOAL_EINVAL for NULL arguments or without
 * external_aggregation. `sum` is read during the call only. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_aggregated(shoal_round_engine *e, int64_t now,
                                                           uint64_t round, const float *sum);

/* external_aggregation: the driver could not form the weighted sum of a
 * round announced by SHOAL_ACTION_AGGREGATE (an update could not be folded,
 * a partial sum was lost): the engine abandons the round with nothing
 * applied and queues SHOAL_ACTION_ABANDONED with cause
 * SHOAL_ABANDON_AGGREGATION_FAILED; the next round, if one waits for this
 * model, is configured with the current one. SHOAL_ESTATE when `round` is
 * not waiting for its sum, SHOAL_EINVAL for a NULL engine or without
 * external_aggregation, SHOAL_ENOMEM if the actions cannot be queued (the
 * round then still waits). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_aggregation_failed(shoal_round_engine *e,
                                                                   int64_t now, uint64_t round);

/* external_aggregation: the mean update of `round` itself (param_count
 * floats), for drivers that aggregate in a way the engine's weighted mean
 * cannot express: a secure-aggregation group's unmasked sum divided by the
 * weight it carries, a differentially private sum divided by the expected
 * number of reports, a median or a trimmed mean. The engine applies the
 * server optimizer to it as it is, and queues SHOAL_ACTION_COMMIT (or
 * ABANDONED if it is not finite). Errors as shoal_round_aggregated. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_aggregated_mean(shoal_round_engine *e, int64_t now,
                                                                uint64_t round, const float *mean);

/* Pops the oldest queued action: SHOAL_ROW with *action filled, or
 * SHOAL_DONE when there is none. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_next_action(shoal_round_engine *e,
                                                            shoal_round_action *action);

/* Whether a report from `session` would still be folded in now: 1 while it
 * is configured for a round that is open, 0 otherwise (unknown, waiting
 * for configuration, or its round closed). Lets a driver skip work whose
 * result would be refused as late. */
SHOAL_API int shoal_round_session_open(const shoal_round_engine *e, shoal_session_id session);

/* Whether the engine knows `session` at all (waiting, configured, or kept
 * to answer a duplicate): 1 if so, 0 otherwise. shoal_round_checkin
 * refuses a known session with SHOAL_ESTATE; a driver that draws random
 * ids asks first and draws again. */
SHOAL_API int shoal_round_session_known(const shoal_round_engine *e, shoal_session_id session);

/* ---- state --------------------------------------------------------------- */

/* The current global model (param_count floats) and its version; valid
 * until the next event. */
SHOAL_API const float *shoal_round_params(const shoal_round_engine *e);
SHOAL_API size_t shoal_round_param_count(const shoal_round_engine *e);
SHOAL_API uint64_t shoal_round_version(const shoal_round_engine *e);
SHOAL_API const shoal_server_optim *shoal_round_server_optim(const shoal_round_engine *e);
/* Rounds committed and abandoned so far. */
SHOAL_API uint64_t shoal_round_committed(const shoal_round_engine *e);
SHOAL_API uint64_t shoal_round_abandoned(const shoal_round_engine *e);
/* The population size pace steering currently assumes. */
SHOAL_API double shoal_round_population_estimate(const shoal_round_engine *e);

#endif
