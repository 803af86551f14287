/* Events in: check-ins, deliveries, reports, losses and time. */
#include <math.h>
#include <string.h>

#include "round_int.h"
#include "shoal/alloc.h"

shoal_err shoal_round_checkin(shoal_round_engine *e, int64_t now, shoal_session_id session,
                              shoal_checkin_result *r)
{
    if (!e || !r)
        return SHOAL_EINVAL;
    memset(r, 0, sizeof *r);
    if (shoal_session_map_find(&e->sessions, session))
        return SHOAL_ESTATE;
    shoal_round_tick(e, now);
    shoal_round_observe_checkin(e, now);
    /* Worst case this check-in queues a CONFIGURE for every selected device
     * plus an action or two: reserve first so nothing half-happens. */
    shoal_err err = shoal_round_reserve_actions(e, e->sessions.count + 8);
    if (err || (err = shoal_session_map_reserve(&e->sessions)))
        return err;

    /* An open evaluation comes first: it needs few devices, and it tells
     * the operator how the model does. It cannot starve training for good:
     * a selection that misses its minimum releases its devices. */
    struct slot *s = &e->slots[SLOT_EVAL];
    if (s->phase != PHASE_SELECTING || s->stats.selected >= s->target)
        s = NULL;
    if (!s && e->cfg.mode == SHOAL_ROUND_SYNC) {
        s = shoal_round_selecting_train(e);
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
        shoal_round_emit(e, &a);
        r->accepted = 1;
        r->round = e->version;
        r->task = SHOAL_TASK_TRAIN;
        r->configure_now = 1;
        return SHOAL_OK;
    }
    if (!s) {
        /* Sync: come back when the round reporting now makes way. */
        int64_t anchor = 0;
        for (int i = 0; e->cfg.mode == SHOAL_ROUND_SYNC && i < SLOT_COUNT; i++)
            if (e->slots[i].task == SHOAL_TASK_TRAIN && e->slots[i].phase == PHASE_REPORTING)
                anchor = shoal_round_next_selection_estimate(e, &e->slots[i]);
        shoal_round_retry_window_at(e, now, anchor, &r->retry_min_ms, &r->retry_max_ms);
        return SHOAL_OK;
    }
    struct session *ss = shoal_session_map_insert(&e->sessions, session);
    ss->state = SESSION_SELECTED;
    ss->slot = shoal_round_slot_index(e, s);
    ss->task = s->task;
    ss->configured_at = now;
    if (s->stats.selected++ == 0 && s->selection_ends == SHOAL_ROUND_IDLE) {
        /* The first device of an idle selection opens its window. */
        s->selection_ends = now + e->cfg.selection_window_ms;
        s->stats.started_ms = now;
    }
    r->accepted = 1;
    r->round = s->number;
    r->task = s->task;
    if (s->stats.selected >= s->target)
        shoal_round_end_selection(e, s, now);
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
    shoal_round_retry_window(e, now, &ack->retry_min_ms, &ack->retry_max_ms);
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
    shoal_err err = shoal_round_reserve_actions(e, e->sessions.count + 8);
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
            shoal_round_unselect(e, &e->slots[ss->slot], now);
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
            shoal_round_close_if_settled(e, rs, now);
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
            shoal_round_async_step(e, now);
        ack->outcome = SHOAL_REPORT_ACCEPTED;
        shoal_round_retry_window(e, now, &ack->retry_min_ms, &ack->retry_max_ms);
        return SHOAL_OK;
    }

    struct slot *s = &e->slots[ss->slot];
    /* Taken before the round may close (and its slot reset) below. */
    const int64_t anchor = shoal_round_next_selection_estimate(e, s);
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
        shoal_round_close_slot(e, s, now, 1);
    else
        shoal_round_close_if_settled(e, s, now);
    ack->outcome = SHOAL_REPORT_ACCEPTED;
    shoal_round_retry_window_at(e, now, anchor, &ack->retry_min_ms, &ack->retry_max_ms);
    return SHOAL_OK;
}

void shoal_round_lost(shoal_round_engine *e, int64_t now, shoal_session_id session)
{
    if (!e)
        return;
    /* Closing a round queues actions; make room before changing anything.
     * Without memory the loss is reported again by the round's deadline. */
    if (shoal_round_reserve_actions(e, e->sessions.count + 8) != SHOAL_OK)
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
        shoal_round_unselect(e, s, now);
    } else {
        s->stats.dropped++;
        s->outstanding--;
        shoal_round_close_if_settled(e, s, now);
    }
    shoal_round_tick(e, now);
}

void shoal_round_tick(shoal_round_engine *e, int64_t now)
{
    if (!e)
        return;
    if (shoal_round_reserve_actions(e, e->sessions.count + 8) != SHOAL_OK)
        return; /* try again on the next event */
    for (int i = 0; i < SLOT_COUNT; i++) {
        struct slot *s = &e->slots[i];
        if (s->phase == PHASE_SELECTING && now >= s->selection_ends)
            shoal_round_end_selection(e, s, now);
        else if (s->phase == PHASE_REPORTING && now >= s->deadline)
            shoal_round_close_slot(e, s, now, s->stats.reported >= s->minimum);
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
