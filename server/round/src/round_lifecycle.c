/* Rounds from selection to commit (synchronous) and FedBuff's server
 * steps: what happens to a slot, and the driver's sum with external
 * aggregation. */
#include <math.h>
#include <string.h>

#include "round_int.h"
#include "shoal/alloc.h"

/* The round whose model the next one needs: reporting, or (with external
 * aggregation) waiting for its sum. */
static struct slot *busy_train(shoal_round_engine *e)
{
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_REPORTING || e->slots[i].phase == PHASE_AGGREGATING)
            return &e->slots[i];
    return NULL;
}

struct slot *shoal_round_selecting_train(shoal_round_engine *e)
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

int shoal_round_slot_index(const shoal_round_engine *e, const struct slot *s)
{
    return (int)(s - e->slots);
}

void shoal_round_open_selection(shoal_round_engine *e, struct slot *s, shoal_task_kind task,
                                int64_t now)
{
    const shoal_round_config *c = &e->cfg;
    shoal_round_slot_reset(s);
    s->phase = PHASE_SELECTING;
    s->task = task;
    s->number = ++e->next_round;
    uint32_t goal = task == SHOAL_TASK_EVAL ? c->eval_goal_count : c->goal_count;
    s->goal = goal;
    s->target = shoal_round_ceil_mul(goal, c->over_selection);
    s->minimum = shoal_round_ceil_mul(goal, c->min_report_fraction);
    /* The window starts with the first device that checks in
     * (shoal_round_checkin): a window running from here would close on the
     * first devices of a population that comes back together (after a
     * commit, at the moment their retry windows named) and split it. */
    s->selection_ends = SHOAL_ROUND_IDLE;
    s->stats.started_ms = now;
}

/* Ends every session of slot s: reporting sessions become late (their
 * reports will be refused as such); selected-but-unconfigured ones are
 * aborted. */
static void release_sessions(shoal_round_engine *e, struct slot *s, int64_t now, const char *reason,
                             shoal_abort_cause cause)
{
    int idx = shoal_round_slot_index(e, s);
    /* A selection abandoned for too few devices in a small population:
     * its devices come back together with any others sent away meanwhile
     * (shoal_round_gather_at). */
    int64_t anchor = cause == SHOAL_ABORT_NO_TASK ? shoal_round_gather_at(e, now) : 0;
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
            shoal_round_retry_window_at(e, now, anchor, &a.retry_min_ms, &a.retry_max_ms);
            shoal_round_emit(e, &a);
            shoal_session_map_remove(&e->sessions, ss->id);
        }
    }
}

static void start_reporting(shoal_round_engine *e, struct slot *s, int64_t now);

/* A selected (not yet configured) device left slot s: its place is free
 * again, and a round that was waiting with a full selection selects anew. */
void shoal_round_unselect(shoal_round_engine *e, struct slot *s, int64_t now)
{
    s->stats.selected--;
    if (s->phase == PHASE_WAITING) {
        s->phase = PHASE_SELECTING;
        s->selection_ends = now + e->cfg.selection_window_ms;
    }
}

/* How a closed training round ends. */
enum outcome {
    OUTCOME_COMMIT,             /* apply the mean in e->mean */
    OUTCOME_TOO_FEW,            /* abandon: too few reports */
    OUTCOME_AGGREGATION_FAILED, /* abandon: the driver could not form the sum */
};

/* Applies the averaged update in e->mean and finishes round s: commit or,
 * if the optimizer refused a non-finite mean, abandon. */
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
        shoal_round_emit(e, &a);
        release_sessions(e, s, now, "round closed", SHOAL_ABORT_ROUND_CLOSED);
        s->phase = PHASE_AGGREGATING;
        return;
    }
    if (commit) {
        double inv = 1.0 / s->weight_sum;
        for (size_t i = 0; i < e->count; i++)
            e->mean[i] = (float)((double)e->acc[i] * inv);
    }
    release_sessions(e, s, now, "round closed", SHOAL_ABORT_ROUND_CLOSED);
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
    shoal_round_emit(e, &a);
    memset(e->acc, 0, e->count * sizeof *e->acc);
    shoal_round_slot_reset(s);

    /* Federated evaluation of the new model every eval_every commits. */
    if (applied && e->cfg.eval_every && e->committed % e->cfg.eval_every == 0 &&
        e->slots[SLOT_EVAL].phase == PHASE_IDLE)
        shoal_round_open_selection(e, &e->slots[SLOT_EVAL], SHOAL_TASK_EVAL, now);

    /* The next round: one may already be selected and waiting for this
     * model (pipelining), or still selecting; otherwise open one. */
    for (int i = SLOT_TRAIN_A; i <= SLOT_TRAIN_B; i++)
        if (e->slots[i].phase == PHASE_WAITING) {
            start_reporting(e, &e->slots[i], now);
            return;
        }
    struct slot *f = shoal_round_selecting_train(e) ? NULL : free_train(e);
    if (f)
        shoal_round_open_selection(e, f, SHOAL_TASK_TRAIN, now);
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
    *err = shoal_round_reserve_actions(e, e->sessions.count + 8);
    return *err ? NULL : s;
}

/* The end of an externally aggregated training round: with the driver's
 * sum of the weighted updates (divided by the round's weight here) or
 * their mean, it commits; with neither, the aggregation failed. */
static shoal_err finish_external(shoal_round_engine *e, int64_t now, uint64_t round,
                                 const float *sum, const float *mean)
{
    if (!e || !e->cfg.external_aggregation)
        return SHOAL_EINVAL;
    shoal_err err;
    struct slot *s = aggregating_train(e, round, &err);
    if (!s)
        return err;
    if (sum) {
        double inv = 1.0 / s->weight_sum;
        for (size_t i = 0; i < e->count; i++)
            e->mean[i] = (float)((double)sum[i] * inv);
    } else if (mean) {
        memcpy(e->mean, mean, e->count * sizeof *e->mean);
    }
    finish_train(e, s, now, sum || mean ? OUTCOME_COMMIT : OUTCOME_AGGREGATION_FAILED);
    return SHOAL_OK;
}

shoal_err shoal_round_aggregated(shoal_round_engine *e, int64_t now, uint64_t round,
                                 const float *sum)
{
    return sum ? finish_external(e, now, round, sum, NULL) : SHOAL_EINVAL;
}

shoal_err shoal_round_aggregated_mean(shoal_round_engine *e, int64_t now, uint64_t round,
                                      const float *mean)
{
    return mean ? finish_external(e, now, round, NULL, mean) : SHOAL_EINVAL;
}

shoal_err shoal_round_aggregation_failed(shoal_round_engine *e, int64_t now, uint64_t round)
{
    return finish_external(e, now, round, NULL, NULL);
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
    shoal_round_emit(e, &a);
    release_sessions(e, s, now, "evaluation closed", SHOAL_ABORT_ROUND_CLOSED);
    shoal_round_slot_reset(s);
}

/* Configuration: every selected device of s gets the plan and the current
 * model; the deadline starts now. */
static void start_reporting(shoal_round_engine *e, struct slot *s, int64_t now)
{
    int idx = shoal_round_slot_index(e, s);
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
        shoal_round_emit(e, &a);
    }
    if (s->task == SHOAL_TASK_TRAIN && e->cfg.pipelining && !shoal_round_selecting_train(e)) {
        struct slot *f = free_train(e);
        if (f)
            shoal_round_open_selection(e, f, SHOAL_TASK_TRAIN, now);
    }
    /* Every device of a waiting round may have been lost meanwhile. */
    shoal_round_close_if_settled(e, s, now);
}

/* Selection of s is over (target reached or window closed). */
void shoal_round_end_selection(shoal_round_engine *e, struct slot *s, int64_t now)
{
    if (s->stats.selected == 0) {
        /* Nobody checked in: there is no round to abandon. The selection
         * idles without a timer, and its window starts with the first
         * device that checks in (shoal_round_checkin). */
        s->selection_ends = SHOAL_ROUND_IDLE;
        return;
    }
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
        shoal_round_emit(e, &a);
        release_sessions(e, s, now, why, SHOAL_ABORT_NO_TASK);
        shoal_round_open_selection(e, s, s->task, now);
        return;
    }
    if (s->task == SHOAL_TASK_TRAIN && busy_train(e)) {
        s->phase = PHASE_WAITING; /* pipelined: wait for the model */
        return;
    }
    start_reporting(e, s, now);
}

void shoal_round_close_slot(shoal_round_engine *e, struct slot *s, int64_t now, int enough)
{
    if (s->task == SHOAL_TASK_EVAL)
        close_eval(e, s, now);
    else
        close_train(e, s, now, enough);
}

/* A reporting round with nobody left to report closes at once: waiting for
 * the deadline could not bring more reports. */
void shoal_round_close_if_settled(shoal_round_engine *e, struct slot *s, int64_t now)
{
    if (s->phase == PHASE_REPORTING && s->outstanding == 0)
        shoal_round_close_slot(e, s, now, s->stats.reported >= s->minimum);
}

/* ---- async (FedBuff) ------------------------------------------------------------ */

void shoal_round_async_step(shoal_round_engine *e, int64_t now)
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
    shoal_round_emit(e, &a);
    memset(e->acc, 0, e->count * sizeof *e->acc);
    e->buffered = 0;
    e->buffer_weight = 0.0;
    e->buffer_loss = 0.0;
    memset(&e->buffer_stats, 0, sizeof e->buffer_stats);
    e->buffer_started = now;
    if (a.kind == SHOAL_ACTION_COMMIT && e->cfg.eval_every &&
        e->committed % e->cfg.eval_every == 0 && e->slots[SLOT_EVAL].phase == PHASE_IDLE)
        shoal_round_open_selection(e, &e->slots[SLOT_EVAL], SHOAL_TASK_EVAL, now);
}
