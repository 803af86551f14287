#include "shoal/round.h"

#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "session_map_int.h"

/* ---- config ---------------------------------------------------------------- */

shoal_round_config shoal_round_defaults(shoal_round_mode mode, uint32_t goal_count)
{
    shoal_round_config c;
    memset(&c, 0, sizeof c);
    c.mode = mode;
    c.goal_count = goal_count;
    c.over_selection = 1.3f;
    c.min_report_fraction = 0.8f;
    c.selection_window_ms = 60 * 1000;
    c.reporting_deadline_ms = 10 * 60 * 1000;
    c.weighting = SHOAL_WEIGHT_EXAMPLES;
    c.pipelining = 1;
    c.eval_every = 0;
    c.eval_goal_count = goal_count;
    c.buffer_size = 10;
    c.max_staleness = 0;
    c.staleness_exponent = 0.5f;
    c.retry_min_ms = 10 * 1000;
    c.retry_max_ms = 60 * 60 * 1000;
    c.population_estimate = 0;
    c.server_optim = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVG);
    return c;
}

shoal_err shoal_round_config_check(const shoal_round_config *c, shoal_errinfo *ei)
{
    if (!c)
        return SHOAL_EINVAL;
    if (c->mode != SHOAL_ROUND_SYNC && c->mode != SHOAL_ROUND_ASYNC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "mode: must be sync or async");
    if (c->goal_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "goal_count: must be at least 1");
    if (!(c->over_selection >= 1.0f) || c->over_selection > 100.0f)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "over_selection: must be in [1, 100], got %g",
                                 (double)c->over_selection);
    if (!(c->min_report_fraction > 0.0f) || c->min_report_fraction > 1.0f)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "min_report_fraction: must be in (0, 1], got %g",
                                 (double)c->min_report_fraction);
    if (c->selection_window_ms <= 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "selection_window: must be positive");
    if (c->reporting_deadline_ms <= 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "deadline: must be positive");
    if (c->weighting != SHOAL_WEIGHT_EXAMPLES && c->weighting != SHOAL_WEIGHT_UNIFORM)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "weighting: must be examples or uniform");
    if (c->eval_every && c->eval_goal_count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "eval_goal_count: must be at least 1 when eval_every is set");
    if (c->mode == SHOAL_ROUND_ASYNC) {
        if (c->buffer_size == 0)
            return shoal_errinfo_set(ei, SHOAL_EINVAL, "buffer_size: must be at least 1");
        if (!(c->staleness_exponent >= 0.0f) || c->staleness_exponent > 10.0f)
            return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                     "staleness_exponent: must be in [0, 10], got %g",
                                     (double)c->staleness_exponent);
    }
    if (c->retry_min_ms <= 0 || c->retry_max_ms < c->retry_min_ms)
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "retry window: need 0 < retry_min (%lld ms) <= retry_max (%lld ms)",
            (long long)c->retry_min_ms, (long long)c->retry_max_ms);
    if (c->external_aggregation && c->mode != SHOAL_ROUND_SYNC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "external_aggregation: only synchronous rounds support it");
    return shoal_server_optim_config_check(&c->server_optim, ei);
}

/* ---- engine state ------------------------------------------------------------ */

enum phase {
    PHASE_IDLE,        /* slot unused */
    PHASE_SELECTING,   /* accepting check-ins */
    PHASE_WAITING,     /* selected, waiting for the previous round's model (pipelining) */
    PHASE_REPORTING,   /* configured; collecting reports until goal or deadline */
    PHASE_AGGREGATING, /* external_aggregation: closed, waiting for the driver's sum */
};

/* One round in flight: a training round or an evaluation. */
struct slot {
    enum phase phase;
    shoal_task_kind task;
    uint64_t number;
    uint64_t version;     /* model the devices were configured with */
    uint32_t target;      /* devices to select */
    uint32_t goal;        /* reports that close the round */
    uint32_t minimum;     /* reports that suffice at the deadline */
    uint32_t outstanding; /* configured sessions that have neither reported nor been lost */
    int64_t selection_ends, deadline;
    int64_t reporting_started;
    shoal_round_stats stats;
    double loss_sum;
    uint64_t correct;
    double weight_sum;
};

enum { SLOT_TRAIN_A, SLOT_TRAIN_B, SLOT_EVAL, SLOT_COUNT };

struct shoal_round_engine {
    shoal_round_config cfg;
    size_t count;
    float *params;
    float *acc;  /* running weighted sum of deltas (the reporting training round, or the buffer) */
    float *mean; /* scratch for the averaged delta */
    shoal_server_optim *optim;
    uint64_t version;
    uint64_t next_round;
    uint64_t committed, abandoned;
    struct slot slots[SLOT_COUNT];
    struct session_map sessions;

    /* Async (FedBuff): the buffer lives in acc. */
    uint32_t training_now;
    uint32_t buffered;
    double buffer_weight;
    shoal_round_stats buffer_stats;
    double buffer_loss;
    int64_t buffer_started;
    uint32_t late_since_commit;

    /* Pace steering. */
    double checkin_rate; /* check-ins per ms, exponentially smoothed */
    int64_t last_checkin;
    double retry_mean_ms; /* centre of the windows handed out lately */
    double round_ms;      /* smoothed reporting time of a round (sync) or session length (async) */
    double population;

    /* Actions: a ring buffer. */
    shoal_round_action *actions;
    size_t action_head, action_count, action_cap;
};

static void slot_reset(struct slot *s)
{
    memset(s, 0, sizeof *s);
    s->phase = PHASE_IDLE;
}

static shoal_err push_action(shoal_round_engine *e, const shoal_round_action *a)
{
    if (e->action_count == e->action_cap) {
        size_t cap = e->action_cap ? e->action_cap * 2 : 64;
        shoal_round_action *na = shoal_mallocarray(cap, sizeof *na);
        if (!na)
            return SHOAL_ENOMEM;
        for (size_t i = 0; i < e->action_count; i++)
            na[i] = e->actions[(e->action_head + i) % e->action_cap];
        shoal_free(e->actions);
        e->actions = na;
        e->action_head = 0;
        e->action_cap = cap;
    }
    e->actions[(e->action_head + e->action_count) % e->action_cap] = *a;
    e->action_count++;
    return SHOAL_OK;
}

shoal_err shoal_round_next_action(shoal_round_engine *e, shoal_round_action *a)
{
    if (!e || !a)
        return SHOAL_EINVAL;
    if (e->action_count == 0)
        return SHOAL_DONE;
    *a = e->actions[e->action_head];
    e->action_head = (e->action_head + 1) % e->action_cap;
    e->action_count--;
    return SHOAL_ROW;
}

/* Queues an action; on allocation failure the engine is unusable for the
 * driver anyway, so actions are pre-reserved where that matters (see
 * reserve_actions) and this only ever fails when nothing was reserved. */
static void emit(shoal_round_engine *e, const shoal_round_action *a)
{
    (void)push_action(e, a);
}

static shoal_err reserve_actions(shoal_round_engine *e, size_t more)
{
    while (e->action_cap - e->action_count < more) {
        size_t cap = e->action_cap ? e->action_cap * 2 : 64;
        while (cap - e->action_count < more)
            cap *= 2;
        shoal_round_action *na = shoal_mallocarray(cap, sizeof *na);
        if (!na)
            return SHOAL_ENOMEM;
        for (size_t i = 0; i < e->action_count; i++)
            na[i] = e->actions[(e->action_head + i) % e->action_cap];
        shoal_free(e->actions);
        e->actions = na;
        e->action_head = 0;
        e->action_cap = cap;
    }
    return SHOAL_OK;
}

static uint32_t ceil_mul(uint32_t n, float f)
{
    /* Fractions arrive as floats (0.8f is 0.800000012): round away the
     * representation error before taking the ceiling. */
    double v = ceil((double)n * (double)f - 1e-4);
    return v < 1.0 ? 1u : (uint32_t)v;
}

/* ---- pace steering -------------------------------------------------------- */

/* Smoothing horizon of the check-in rate. */
static double rate_horizon_ms(const shoal_round_engine *e)
{
    double h = (double)e->cfg.selection_window_ms * 4.0;
    return h < 60000.0 ? 60000.0 : h;
}

static void observe_checkin(shoal_round_engine *e, int64_t now)
{
    double tau = rate_horizon_ms(e);
    double dt = now > e->last_checkin ? (double)(now - e->last_checkin) : 0.0;
    e->checkin_rate = e->checkin_rate * exp(-dt / tau) + 1.0 / tau;
    e->last_checkin = now;
}

/* Devices the population must deliver per ms to keep rounds fed. */
static double demand_per_ms(const shoal_round_engine *e)
{
    const shoal_round_config *c = &e->cfg;
    double per_round = (double)ceil_mul(c->goal_count, c->over_selection);
    double d = per_round / (e->round_ms > 1.0 ? e->round_ms : 1.0);
    if (c->eval_every)
        d += (double)ceil_mul(c->eval_goal_count, c->over_selection) /
             ((double)c->eval_every * (e->round_ms > 1.0 ? e->round_ms : 1.0));
    return d;
}

/* The retry window for a device leaving now. Little's law: a population of
 * N devices each returning after R ms on average checks in at N/R per ms;
 * rounds need D per ms; so R = N / D. N comes from the configuration or from
 * the observed rate times the windows handed out (N = rate * R_current). */
static void retry_window(shoal_round_engine *e, int64_t now, int64_t *lo, int64_t *hi)
{
    const shoal_round_config *c = &e->cfg;
    double since = now > e->last_checkin ? (double)(now - e->last_checkin) : 0.0;
    double rate = e->checkin_rate * exp(-since / rate_horizon_ms(e));
    double n = c->population_estimate ? (double)c->population_estimate : rate * e->retry_mean_ms;
    if (!c->population_estimate) {
        /* Smooth the estimate; it only moves as fast as rounds go by. */
        e->population = e->population > 0.0 ? 0.9 * e->population + 0.1 * n : n;
        n = e->population;
    } else {
        e->population = n;
    }
    double r = n / demand_per_ms(e);
    if (!(r >= (double)c->retry_min_ms))
        r = (double)c->retry_min_ms;
    if (r > (double)c->retry_max_ms)
        r = (double)c->retry_max_ms;
    e->retry_mean_ms = 0.9 * e->retry_mean_ms + 0.1 * r;
    /* +-20% spreads devices out so they do not return as one herd. */
    double a = r * 0.8, b = r * 1.2;
    if (a < (double)c->retry_min_ms)
        a = (double)c->retry_min_ms;
    if (b > (double)c->retry_max_ms)
        b = (double)c->retry_max_ms;
    if (b < a)
        b = a;
    *lo = (int64_t)a;
    *hi = (int64_t)b;
}

/* ---- rounds (sync) ------------------------------------------------------------ */

/* The round whose model the next one needs: reporting, or (with external
 * aggregation) waiting for its sum. */
static struct slot *busy_train(shoal_round_engine *e)
{
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_REPORTING || e->slots[i].phase == PHASE_AGGREGATING)
            return &e->slots[i];
    return NULL;
}

static struct slot *selecting_train(shoal_round_engine *e)
{
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_SELECTING)
            return &e->slots[i];
    return NULL;
}

static struct slot *free_train(shoal_round_engine *e)
{
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_IDLE)
            return &e->slots[i];
    return NULL;
}

static int slot_index(const shoal_round_engine *e, const struct slot *s)
{
    return (int)(s - e->slots);
}

static void open_selection(shoal_round_engine *e, struct slot *s, shoal_task_kind task, int64_t now)
{
    const shoal_round_config *c = &e->cfg;
    slot_reset(s);
    s->phase = PHASE_SELECTING;
    s->task = task;
    s->number = ++e->next_round;
    uint32_t goal = task == SHOAL_TASK_EVAL ? c->eval_goal_count : c->goal_count;
    s->goal = goal;
    s->target = ceil_mul(goal, c->over_selection);
    s->minimum = ceil_mul(goal, c->min_report_fraction);
    s->selection_ends = now + c->selection_window_ms;
    s->stats.started_ms = now;
}

/* Ends every session of slot s: reporting sessions become late (their
 * reports will be refused as such); selected-but-unconfigured ones are
 * aborted. */
static void release_sessions(shoal_round_engine *e, struct slot *s, const char *reason,
                             shoal_abort_cause cause)
{
    int idx = slot_index(e, s);
    for (size_t i = 0; i < e->sessions.cap; i++) {
        struct session *ss = &e->sessions.entries[i];
        if (ss->state == SESSION_FREE || ss->state == SESSION_TOMB || ss->slot != idx ||
            ss->state == SESSION_LATE)
            continue;
        if (ss->state == SESSION_CONFIGURED) {
            ss->state = SESSION_LATE;
        } else {
            shoal_round_action a = {.kind = SHOAL_ACTION_ABORT,
                                    .session = ss->id,
                                    .task = s->task,
                                    .round = s->number,
                                    .reason = reason,
                                    .cause = cause};
            emit(e, &a);
            shoal_session_map_remove(&e->sessions, ss->id);
        }
    }
}

static void start_reporting(shoal_round_engine *e, struct slot *s, int64_t now);

/* A selected (not yet configured) device left slot s: its place is free
 * again, and a round that was waiting with a full selection selects anew. */
static void unselect(shoal_round_engine *e, struct slot *s, int64_t now)
{
    s->stats.selected--;
    if (s->phase == PHASE_WAITING) {
        s->phase = PHASE_SELECTING;
        s->selection_ends = now + e->cfg.selection_window_ms;
    }
}

static void close_if_settled(shoal_round_engine *e, struct slot *s, int64_t now);

/* Applies the averaged update in e->mean and finishes round s: commit or,
 * if the optimizer refused a non-finite mean, abandon. */
/* How a closed training round ends. */
enum outcome {
    OUTCOME_COMMIT,             /* apply the mean in e->mean */
    OUTCOME_TOO_FEW,            /* abandon: too few reports */
    OUTCOME_AGGREGATION_FAILED, /* abandon: the driver could not form the sum */
};

static void finish_train(shoal_round_engine *e, struct slot *s, int64_t now, enum outcome outcome);

/* Round s (training) ends: commit if it has enough, else abandon. With
 * external aggregation a round with enough reports first waits for the
 * driver's sum (shoal_round_aggregated). */
static void close_train(shoal_round_engine *e, struct slot *s, int64_t now, int commit)
{
    s->stats.ended_ms = now;
    s->stats.loss = s->stats.examples ? s->loss_sum / (double)s->stats.examples : 0.0;
    s->stats.late = e->late_since_commit;
    e->late_since_commit = 0;
    if (commit && e->cfg.external_aggregation) {
        shoal_round_action a = {.kind = SHOAL_ACTION_AGGREGATE,
                                .round = s->number,
                                .task = SHOAL_TASK_TRAIN,
                                .version = e->version,
                                .stats = s->stats};
        emit(e, &a);
        release_sessions(e, s, "round closed", SHOAL_ABORT_ROUND_CLOSED);
        s->phase = PHASE_AGGREGATING;
        return;
    }
    if (commit) {
        double inv = 1.0 / s->weight_sum;
        for (size_t i = 0; i < e->count; i++)
            e->mean[i] = (float)((double)e->acc[i] * inv);
    }
    release_sessions(e, s, "round closed", SHOAL_ABORT_ROUND_CLOSED);
    finish_train(e, s, now, commit ? OUTCOME_COMMIT : OUTCOME_TOO_FEW);
}

static void finish_train(shoal_round_engine *e, struct slot *s, int64_t now, enum outcome outcome)
{
    shoal_round_action a = {.round = s->number, .task = SHOAL_TASK_TRAIN, .stats = s->stats};
    int applied = outcome == OUTCOME_COMMIT &&
                  shoal_server_optim_apply(e->optim, e->params, e->mean) == SHOAL_OK;
    if (applied) {
        e->version++;
        e->committed++;
        a.kind = SHOAL_ACTION_COMMIT;
        a.version = e->version;
        /* Demand is one round's devices per reporting phase, the time
         * selected devices need to train and report. Time spent waiting for
         * check-ins is left out on purpose: counting it would make slow
         * selection lengthen retry windows, which slows selection further. */
        double dur = (double)(s->stats.ended_ms - s->reporting_started);
        e->round_ms = 0.7 * e->round_ms + 0.3 * dur;
    } else {
        e->abandoned++;
        a.kind = SHOAL_ACTION_ABANDONED;
        a.version = e->version;
        switch (outcome) {
        case OUTCOME_COMMIT:
            a.abandon = SHOAL_ABANDON_NOT_FINITE;
            a.reason = "the averaged update was not finite";
            break;
        case OUTCOME_TOO_FEW:
            a.abandon = SHOAL_ABANDON_TOO_FEW_REPORTS;
            a.reason = "too few reports before the deadline";
            break;
        case OUTCOME_AGGREGATION_FAILED:
            a.abandon = SHOAL_ABANDON_AGGREGATION_FAILED;
            a.reason = "the round's updates could not be aggregated";
            break;
        }
    }
    emit(e, &a);
    memset(e->acc, 0, e->count * sizeof *e->acc);
    slot_reset(s);

    /* Federated evaluation of the new model every eval_every commits. */
    if (applied && e->cfg.eval_every && e->committed % e->cfg.eval_every == 0 &&
        e->slots[SLOT_EVAL].phase == PHASE_IDLE)
        open_selection(e, &e->slots[SLOT_EVAL], SHOAL_TASK_EVAL, now);

    /* The next round: one may already be selected and waiting for this
     * model (pipelining), or still selecting; otherwise open one. */
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_WAITING) {
            start_reporting(e, &e->slots[i], now);
            return;
        }
    struct slot *f = selecting_train(e) ? NULL : free_train(e);
    if (f)
        open_selection(e, f, SHOAL_TASK_TRAIN, now);
}

/* The training round `round` waiting for the driver's sum, with room
 * reserved for the actions finishing it queues; NULL with *err set. */
static struct slot *aggregating_train(shoal_round_engine *e, uint64_t round, shoal_err *err)
{
    struct slot *s = NULL;
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_AGGREGATING && e->slots[i].number == round)
            s = &e->slots[i];
    if (!s) {
        *err = SHOAL_ESTATE;
        return NULL;
    }
    *err = reserve_actions(e, e->sessions.count + 8);
    return *err ? NULL : s;
}

shoal_err shoal_round_aggregated(shoal_round_engine *e, int64_t now, uint64_t round,
                                 const float *sum)
{
    if (!e || !sum || !e->cfg.external_aggregation)
        return SHOAL_EINVAL;
    shoal_err err;
    struct slot *s = aggregating_train(e, round, &err);
    if (!s)
        return err;
    double inv = 1.0 / s->weight_sum;
    for (size_t i = 0; i < e->count; i++)
        e->mean[i] = (float)((double)sum[i] * inv);
    finish_train(e, s, now, OUTCOME_COMMIT);
    return SHOAL_OK;
}

shoal_err shoal_round_aggregation_failed(shoal_round_engine *e, int64_t now, uint64_t round)
{
    if (!e || !e->cfg.external_aggregation)
        return SHOAL_EINVAL;
    shoal_err err;
    struct slot *s = aggregating_train(e, round, &err);
    if (!s)
        return err;
    finish_train(e, s, now, OUTCOME_AGGREGATION_FAILED);
    return SHOAL_OK;
}

static void close_eval(shoal_round_engine *e, struct slot *s, int64_t now)
{
    s->stats.ended_ms = now;
    shoal_round_action a = {.round = s->number, .task = SHOAL_TASK_EVAL, .version = s->version};
    if (s->stats.reported >= s->minimum && s->stats.examples) {
        s->stats.loss = s->loss_sum / (double)s->stats.examples;
        s->stats.accuracy = (double)s->correct / (double)s->stats.examples;
        a.kind = SHOAL_ACTION_EVALUATED;
    } else {
        a.kind = SHOAL_ACTION_ABANDONED;
        a.reason = "too few evaluation reports before the deadline";
        a.abandon = SHOAL_ABANDON_TOO_FEW_REPORTS;
    }
    a.stats = s->stats;
    emit(e, &a);
    release_sessions(e, s, "evaluation closed", SHOAL_ABORT_ROUND_CLOSED);
    slot_reset(s);
}

/* Configuration: every selected device of s gets the plan and the current
 * model; the deadline starts now. */
static void start_reporting(shoal_round_engine *e, struct slot *s, int64_t now)
{
    int idx = slot_index(e, s);
    s->phase = PHASE_REPORTING;
    s->version = e->version;
    s->reporting_started = now;
    s->deadline = now + e->cfg.reporting_deadline_ms;
    for (size_t i = 0; i < e->sessions.cap; i++) {
        struct session *ss = &e->sessions.entries[i];
        if (ss->state != SESSION_SELECTED || ss->slot != idx)
            continue;
        ss->state = SESSION_CONFIGURED;
        ss->version = e->version;
        s->outstanding++;
        shoal_round_action a = {.kind = SHOAL_ACTION_CONFIGURE,
                                .session = ss->id,
                                .task = s->task,
                                .round = s->number,
                                .version = e->version};
        emit(e, &a);
    }
    if (s->task == SHOAL_TASK_TRAIN && e->cfg.pipelining && !selecting_train(e)) {
        struct slot *f = free_train(e);
        if (f)
            open_selection(e, f, SHOAL_TASK_TRAIN, now);
    }
    /* Every device of a waiting round may have been lost meanwhile. */
    close_if_settled(e, s, now);
}

/* Selection of s is over (target reached or window closed). */
static void end_selection(shoal_round_engine *e, struct slot *s, int64_t now)
{
    if (s->stats.selected < s->minimum) {
        /* Too few devices in the window: the selection is abandoned and
         * the devices it held are released (Bonawitz et al. 2019, sec.
         * 2.2), so no device waits unboundedly and no two open selections
         * can hold each other's devices forever. */
        const char *why = "selection window closed with too few devices";
        shoal_round_action a = {.kind = SHOAL_ACTION_ABANDONED,
                                .task = s->task,
                                .round = s->number,
                                .version = e->version,
                                .reason = why,
                                .abandon = SHOAL_ABANDON_TOO_FEW_DEVICES,
                                .stats = s->stats};
        a.stats.ended_ms = now;
        if (s->task == SHOAL_TASK_TRAIN)
            e->abandoned++;
        emit(e, &a);
        release_sessions(e, s, why, SHOAL_ABORT_NO_TASK);
        open_selection(e, s, s->task, now);
        return;
    }
    if (s->task == SHOAL_TASK_TRAIN && busy_train(e)) {
        s->phase = PHASE_WAITING; /* pipelined: wait for the model */
        return;
    }
    start_reporting(e, s, now);
}

static void close_slot(shoal_round_engine *e, struct slot *s, int64_t now, int enough)
{
    if (s->task == SHOAL_TASK_EVAL)
        close_eval(e, s, now);
    else
        close_train(e, s, now, enough);
}

/* A reporting round with nobody left to report closes at once: waiting for
 * the deadline could not bring more reports. */
static void close_if_settled(shoal_round_engine *e, struct slot *s, int64_t now)
{
    if (s->phase == PHASE_REPORTING && s->outstanding == 0)
        close_slot(e, s, now, s->stats.reported >= s->minimum);
}

/* ---- async (FedBuff) ------------------------------------------------------------ */

static void async_step(shoal_round_engine *e, int64_t now)
{
    shoal_round_stats st = e->buffer_stats;
    st.ended_ms = now;
    st.started_ms = e->buffer_started;
    st.loss = st.examples ? e->buffer_loss / (double)st.examples : 0.0;
    st.late = e->late_since_commit;
    e->late_since_commit = 0;
    double inv = 1.0 / e->buffer_weight;
    for (size_t i = 0; i < e->count; i++)
        e->mean[i] = (float)((double)e->acc[i] * inv);
    /* Server steps and federated evaluations draw their numbers from one
     * counter, so that no two records of the population share one. */
    shoal_round_action a = {.round = ++e->next_round, .task = SHOAL_TASK_TRAIN, .stats = st};
    if (shoal_server_optim_apply(e->optim, e->params, e->mean) == SHOAL_OK) {
        e->version++;
        e->committed++;
        a.kind = SHOAL_ACTION_COMMIT;
    } else {
        e->abandoned++;
        a.kind = SHOAL_ACTION_ABANDONED;
        a.reason = "the averaged update was not finite";
        a.abandon = SHOAL_ABANDON_NOT_FINITE;
    }
    a.version = e->version;
    emit(e, &a);
    memset(e->acc, 0, e->count * sizeof *e->acc);
    e->buffered = 0;
    e->buffer_weight = 0.0;
    e->buffer_loss = 0.0;
    memset(&e->buffer_stats, 0, sizeof e->buffer_stats);
    e->buffer_started = now;
    if (a.kind == SHOAL_ACTION_COMMIT && e->cfg.eval_every &&
        e->committed % e->cfg.eval_every == 0 && e->slots[SLOT_EVAL].phase == PHASE_IDLE)
        open_selection(e, &e->slots[SLOT_EVAL], SHOAL_TASK_EVAL, now);
}

/* ---- public -------------------------------------------------------------------- */

shoal_err shoal_round_engine_new(const shoal_round_config *cfg, const float *params,
                                 size_t param_count, const float *server_state,
                                 uint64_t server_steps, uint64_t version, int64_t now,
                                 shoal_round_engine **out)
{
    if (!out || !params || param_count == 0 || shoal_round_config_check(cfg, NULL) != SHOAL_OK)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_round_engine *e = shoal_calloc(1, sizeof *e);
    if (!e)
        return SHOAL_ENOMEM;
    e->cfg = *cfg;
    e->count = param_count;
    e->version = version;
    shoal_err err = SHOAL_ENOMEM;
    e->params = shoal_mallocarray(param_count, sizeof(float));
    e->acc = shoal_calloc(param_count, sizeof(float));
    e->mean = shoal_mallocarray(param_count, sizeof(float));
    if (!e->params || !e->acc || !e->mean)
        goto fail;
    memcpy(e->params, params, param_count * sizeof(float));
    if ((err = shoal_server_optim_new(&cfg->server_optim, param_count, &e->optim)))
        goto fail;
    if (server_state || server_steps)
        shoal_server_optim_state_set(e->optim, server_state, server_steps);
    if ((err = shoal_session_map_init(&e->sessions, 64)))
        goto fail;
    if ((err = reserve_actions(e, 64)))
        goto fail;
    for (int i = 0; i < SLOT_COUNT; i++)
        slot_reset(&e->slots[i]);
    e->last_checkin = now;
    /* Until rounds have been seen, assume the shortest plausible one: it
     * errs towards short retry windows, which the estimate then lengthens. */
    e->round_ms = (double)cfg->selection_window_ms;
    e->retry_mean_ms = (double)cfg->retry_min_ms;
    e->buffer_started = now;
    if (cfg->mode == SHOAL_ROUND_SYNC)
        open_selection(e, &e->slots[SLOT_TRAIN_A], SHOAL_TASK_TRAIN, now);
    *out = e;
    return SHOAL_OK;
fail:
    shoal_round_engine_free(e);
    return err;
}

void shoal_round_engine_free(shoal_round_engine *e)
{
    if (!e)
        return;
    shoal_free(e->params);
    shoal_free(e->acc);
    shoal_free(e->mean);
    shoal_server_optim_free(e->optim);
    shoal_session_map_fini(&e->sessions);
    shoal_free(e->actions);
    shoal_free(e);
}

shoal_err shoal_round_checkin(shoal_round_engine *e, int64_t now, shoal_session_id session,
                              shoal_checkin_result *r)
{
    if (!e || !r)
        return SHOAL_EINVAL;
    memset(r, 0, sizeof *r);
    if (shoal_session_map_find(&e->sessions, session))
        return SHOAL_ESTATE;
    shoal_round_tick(e, now);
    observe_checkin(e, now);
    /* Worst case this check-in queues a CONFIGURE for every selected device
     * plus an action or two: reserve first so nothing half-happens. */
    shoal_err err = reserve_actions(e, e->sessions.count + 8);
    if (err || (err = shoal_session_map_reserve(&e->sessions)))
        return err;

    /* An open evaluation comes first: it needs few devices, and it tells
     * the operator how the model does. It cannot starve training for good:
     * a selection that misses its minimum releases its devices. */
    struct slot *s = &e->slots[SLOT_EVAL];
    if (s->phase != PHASE_SELECTING || s->stats.selected >= s->target)
        s = NULL;
    if (!s && e->cfg.mode == SHOAL_ROUND_SYNC) {
        s = selecting_train(e);
        if (s && s->stats.selected >= s->target)
            s = NULL;
    } else if (!s && e->training_now < e->cfg.goal_count) {
        struct session *ss = shoal_session_map_insert(&e->sessions, session);
        ss->state = SESSION_CONFIGURED;
        ss->slot = -1;
        ss->task = SHOAL_TASK_TRAIN;
        ss->version = e->version;
        ss->configured_at = now;
        e->training_now++;
        e->buffer_stats.selected++;
        shoal_round_action a = {.kind = SHOAL_ACTION_CONFIGURE,
                                .session = session,
                                .task = SHOAL_TASK_TRAIN,
                                .round = e->version,
                                .version = e->version};
        emit(e, &a);
        r->accepted = 1;
        r->round = e->version;
        r->task = SHOAL_TASK_TRAIN;
        r->configure_now = 1;
        return SHOAL_OK;
    }
    if (!s) {
        retry_window(e, now, &r->retry_min_ms, &r->retry_max_ms);
        return SHOAL_OK;
    }
    struct session *ss = shoal_session_map_insert(&e->sessions, session);
    ss->state = SESSION_SELECTED;
    ss->slot = slot_index(e, s);
    ss->task = s->task;
    ss->configured_at = now;
    s->stats.selected++;
    r->accepted = 1;
    r->round = s->number;
    r->task = s->task;
    if (s->stats.selected >= s->target)
        end_selection(e, s, now);
    r->configure_now = ss->state == SESSION_CONFIGURED;
    return SHOAL_OK;
}

shoal_err shoal_round_delivered(shoal_round_engine *e, int64_t now, shoal_session_id session)
{
    if (!e)
        return SHOAL_EINVAL;
    struct session *ss = shoal_session_map_find(&e->sessions, session);
    if (!ss || ss->state != SESSION_CONFIGURED)
        return SHOAL_ESTATE;
    ss->delivered = 1;
    (void)now;
    return SHOAL_OK;
}

static void ack_refused(shoal_round_engine *e, int64_t now, shoal_report_ack *ack,
                        shoal_report_outcome outcome, shoal_refusal refusal, const char *reason)
{
    ack->outcome = outcome;
    ack->refusal = refusal;
    ack->reason = reason;
    retry_window(e, now, &ack->retry_min_ms, &ack->retry_max_ms);
}

/* Exponent bits all ones is NaN or Inf. The check is branch-free within a
 * block so it vectorizes (an early exit per element keeps gcc scalar); the
 * block bound keeps a bad update from costing a full pass. */
static int all_finite(const float *v, size_t n)
{
    enum { BLOCK = 4096 };
    for (size_t start = 0; start < n; start += BLOCK) {
        size_t end = n - start < BLOCK ? n : start + BLOCK;
        uint32_t bad = 0;
        for (size_t i = start; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, &v[i], sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            return 0;
    }
    return 1;
}

/* acc += weight * delta. The pointers come in as restrict parameters: in the
 * callers' loops a float store through e->acc may alias e->acc, e->count and
 * rep->delta themselves (the build has -fno-strict-aliasing), so gcc reloads
 * all three every element and cannot vectorize. */
static void fold_into(float *restrict acc, const float *restrict delta, float weight, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] += weight * delta[i];
}

shoal_err shoal_round_report(shoal_round_engine *e, int64_t now, shoal_session_id session,
                             const shoal_report *rep, shoal_report_ack *ack)
{
    if (!e || !rep || !ack)
        return SHOAL_EINVAL;
    memset(ack, 0, sizeof *ack);
    shoal_round_tick(e, now);
    shoal_err err = reserve_actions(e, e->sessions.count + 8);
    if (err)
        return err;
    struct session *ss = shoal_session_map_find(&e->sessions, session);
    if (!ss) {
        ack_refused(e, now, ack, SHOAL_REPORT_REFUSED, SHOAL_REFUSAL_NOT_SELECTED,
                    "session not selected for any round");
        return SHOAL_OK;
    }
    if (ss->state == SESSION_LATE) {
        e->late_since_commit++;
        shoal_session_map_remove(&e->sessions, session);
        ack_refused(e, now, ack, SHOAL_REPORT_LATE, SHOAL_REFUSAL_LATE,
                    "the round closed before this report");
        return SHOAL_OK;
    }
    if (ss->state != SESSION_CONFIGURED) {
        /* The session ends with the ack, as for every report: its place in
         * the selection is freed. */
        if (ss->slot >= 0)
            unselect(e, &e->slots[ss->slot], now);
        shoal_session_map_remove(&e->sessions, session);
        ack_refused(e, now, ack, SHOAL_REPORT_REFUSED, SHOAL_REFUSAL_NOT_CONFIGURED,
                    "session was not configured yet");
        return SHOAL_OK;
    }
    shoal_task_kind task = ss->task;
    const char *bad = NULL;
    shoal_refusal why = SHOAL_REFUSAL_MALFORMED;
    if (rep->example_count == 0)
        bad = "report has no examples";
    else if (task == SHOAL_TASK_TRAIN && !rep->delta && !e->cfg.external_aggregation)
        bad = "training report has no update";
    else if (task == SHOAL_TASK_EVAL && rep->correct > rep->example_count)
        bad = "evaluation report has more hits than examples";
    else if (!isfinite(rep->loss_sum) || rep->loss_sum < 0.0)
        bad = "report loss is not a finite non-negative number";
    else if (task == SHOAL_TASK_TRAIN && !e->cfg.external_aggregation &&
             !all_finite(rep->delta, e->count)) {
        bad = "update contains NaN or Inf";
        why = SHOAL_REFUSAL_NON_FINITE;
    }
    double staleness = 0.0;
    if (!bad && e->cfg.mode == SHOAL_ROUND_ASYNC && task == SHOAL_TASK_TRAIN) {
        staleness = (double)(e->version - ss->version);
        if (e->cfg.max_staleness && staleness > (double)e->cfg.max_staleness) {
            bad = "update is staler than max_staleness";
            why = SHOAL_REFUSAL_TOO_STALE;
        }
    }
    if (bad) {
        /* The session is over either way; a refused training report frees
         * its slot. */
        if (e->cfg.mode == SHOAL_ROUND_ASYNC && task == SHOAL_TASK_TRAIN) {
            e->training_now--;
            e->buffer_stats.dropped++;
            shoal_session_map_remove(&e->sessions, session);
        } else {
            struct slot *rs = &e->slots[ss->slot];
            rs->stats.dropped++;
            rs->outstanding--;
            shoal_session_map_remove(&e->sessions, session);
            close_if_settled(e, rs, now);
        }
        ack_refused(e, now, ack, SHOAL_REPORT_REFUSED, why, bad);
        return SHOAL_OK;
    }

    double w = e->cfg.weighting == SHOAL_WEIGHT_EXAMPLES ? (double)rep->example_count : 1.0;
    if (e->cfg.mode == SHOAL_ROUND_ASYNC && task == SHOAL_TASK_TRAIN) {
        /* FedBuff: down-weight by staleness, normalise by the undiscounted
         * weights so stale updates really count less (Nguyen et al. 2022,
         * Algorithm 1). */
        double s = pow(1.0 + staleness, -(double)e->cfg.staleness_exponent);
        float ws = (float)(w * s);
        fold_into(e->acc, rep->delta, ws, e->count);
        e->buffer_weight += w;
        e->buffer_loss += rep->loss_sum;
        e->buffer_stats.reported++;
        e->buffer_stats.examples += rep->example_count;
        e->buffered++;
        e->training_now--;
        double dur = (double)(now - ss->configured_at);
        e->round_ms = e->round_ms > 0.0 ? 0.9 * e->round_ms + 0.1 * dur : dur;
        shoal_session_map_remove(&e->sessions, session);
        if (e->buffered >= e->cfg.buffer_size)
            async_step(e, now);
        ack->outcome = SHOAL_REPORT_ACCEPTED;
        retry_window(e, now, &ack->retry_min_ms, &ack->retry_max_ms);
        return SHOAL_OK;
    }

    struct slot *s = &e->slots[ss->slot];
    shoal_session_map_remove(&e->sessions, session);
    s->outstanding--;
    s->stats.reported++;
    s->stats.examples += rep->example_count;
    s->loss_sum += rep->loss_sum;
    if (task == SHOAL_TASK_TRAIN && e->cfg.external_aggregation) {
        /* The driver folds it: tell it with which weight, into which sum. */
        ack->fold_weight = (float)w;
        ack->aggregate = s->number;
        s->weight_sum += w;
    } else if (task == SHOAL_TASK_TRAIN) {
        /* Fold at once; the update is never stored. */
        float wf = (float)w;
        fold_into(e->acc, rep->delta, wf, e->count);
        s->weight_sum += w;
    } else {
        s->correct += rep->correct;
    }
    if (s->stats.reported >= s->goal)
        close_slot(e, s, now, 1);
    else
        close_if_settled(e, s, now);
    ack->outcome = SHOAL_REPORT_ACCEPTED;
    retry_window(e, now, &ack->retry_min_ms, &ack->retry_max_ms);
    return SHOAL_OK;
}

void shoal_round_lost(shoal_round_engine *e, int64_t now, shoal_session_id session)
{
    if (!e)
        return;
    /* Closing a round queues actions; make room before changing anything.
     * Without memory the loss is reported again by the round's deadline. */
    if (reserve_actions(e, e->sessions.count + 8) != SHOAL_OK)
        return;
    struct session *ss = shoal_session_map_find(&e->sessions, session);
    if (!ss)
        return;
    if (ss->state == SESSION_LATE) {
        shoal_session_map_remove(&e->sessions, session);
        return;
    }
    if (e->cfg.mode == SHOAL_ROUND_ASYNC && ss->task == SHOAL_TASK_TRAIN) {
        e->training_now--;
        e->buffer_stats.dropped++;
        shoal_session_map_remove(&e->sessions, session);
        return;
    }
    struct slot *s = &e->slots[ss->slot];
    int was_selected = ss->state == SESSION_SELECTED;
    shoal_session_map_remove(&e->sessions, session);
    if (was_selected) {
        unselect(e, s, now);
    } else {
        s->stats.dropped++;
        s->outstanding--;
        close_if_settled(e, s, now);
    }
    shoal_round_tick(e, now);
}

void shoal_round_tick(shoal_round_engine *e, int64_t now)
{
    if (!e)
        return;
    if (reserve_actions(e, e->sessions.count + 8) != SHOAL_OK)
        return; /* try again on the next event */
    for (int i = 0; i < SLOT_COUNT; i++) {
        struct slot *s = &e->slots[i];
        if (s->phase == PHASE_SELECTING && now >= s->selection_ends)
            end_selection(e, s, now);
        else if (s->phase == PHASE_REPORTING && now >= s->deadline)
            close_slot(e, s, now, s->stats.reported >= s->minimum);
    }
    if (e->cfg.mode == SHOAL_ROUND_ASYNC) {
        /* A training session past its deadline is dropped: its slot goes to
         * another device. */
        for (size_t i = 0; i < e->sessions.cap; i++) {
            struct session *ss = &e->sessions.entries[i];
            if (ss->state != SESSION_CONFIGURED || ss->slot >= 0)
                continue;
            if (now - ss->configured_at >= e->cfg.reporting_deadline_ms) {
                ss->state = SESSION_LATE;
                e->training_now--;
                e->buffer_stats.dropped++;
            }
        }
    }
}

int64_t shoal_round_next_timer(const shoal_round_engine *e)
{
    int64_t t = INT64_MAX;
    if (!e)
        return t;
    for (int i = 0; i < SLOT_COUNT; i++) {
        const struct slot *s = &e->slots[i];
        if (s->phase == PHASE_SELECTING && s->selection_ends < t)
            t = s->selection_ends;
        if (s->phase == PHASE_REPORTING && s->deadline < t)
            t = s->deadline;
    }
    if (e->cfg.mode == SHOAL_ROUND_ASYNC)
        for (size_t i = 0; i < e->sessions.cap; i++) {
            const struct session *ss = &e->sessions.entries[i];
            if (ss->state == SESSION_CONFIGURED && ss->slot < 0 &&
                ss->configured_at + e->cfg.reporting_deadline_ms < t)
                t = ss->configured_at + e->cfg.reporting_deadline_ms;
        }
    return t;
}

int shoal_round_session_open(const shoal_round_engine *e, shoal_session_id session)
{
    const struct session *ss = e ? shoal_session_map_find(&e->sessions, session) : NULL;
    return ss && ss->state == SESSION_CONFIGURED;
}

const float *shoal_round_params(const shoal_round_engine *e)
{
    return e->params;
}

size_t shoal_round_param_count(const shoal_round_engine *e)
{
    return e->count;
}

uint64_t shoal_round_version(const shoal_round_engine *e)
{
    return e->version;
}

const shoal_server_optim *shoal_round_server_optim(const shoal_round_engine *e)
{
    return e->optim;
}

uint64_t shoal_round_committed(const shoal_round_engine *e)
{
    return e->committed;
}

uint64_t shoal_round_abandoned(const shoal_round_engine *e)
{
    return e->abandoned;
}

double shoal_round_population_estimate(const shoal_round_engine *e)
{
    return e->population;
}
