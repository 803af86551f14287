/* The round engine's state, shared by its files. Internal: the API is
 * shoal/round.h. */
#ifndef SHOAL_ROUND_INT_H
#define SHOAL_ROUND_INT_H

#include <stddef.h>
#include <stdint.h>

#include "session_map_int.h"
#include "shoal/round.h"

/* A selection no device has joined: no timer until one does. */
#define SHOAL_ROUND_IDLE INT64_MAX

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
    int64_t selection_ends, deadline; /* selection_ends SHOAL_ROUND_IDLE: no device yet */
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
    int64_t gather_base; /* shoal_round_gather_at's grid; 0 until first needed */

    /* Actions: a ring buffer. */
    shoal_round_action *actions;
    size_t action_head, action_count, action_cap;
};

/* Shared by the engine's files (round.c, round_pace.c, round_lifecycle.c,
 * round_events.c); none of this is API. */

/* ---- round.c: slots and the action queue ---- */
void shoal_round_slot_reset(struct slot *s);
/* Queues an action; never fails where shoal_round_reserve_actions made
 * room first. */
void shoal_round_emit(shoal_round_engine *e, const shoal_round_action *a);
/* Makes room for `more` actions so that the event that follows cannot
 * half-happen for want of memory. */
shoal_err shoal_round_reserve_actions(shoal_round_engine *e, size_t more);
/* ceil(n * f), at least 1. */
uint32_t shoal_round_ceil_mul(uint32_t n, float f);

/* ---- round_pace.c: pace steering ---- */
void shoal_round_observe_checkin(shoal_round_engine *e, int64_t now);
/* The retry window [*lo, *hi] ms for a device leaving now. */
void shoal_round_retry_window(shoal_round_engine *e, int64_t now, int64_t *lo, int64_t *hi);
/* The same, but for a small population every device answered for the same
 * round comes back at `anchor` (absolute; 0: no anchor) and together. */
/* The moment a small population's devices sent away from an abandoned
 * selection come back at (absolute; 0 for a population that is not
 * small): the first point at least retry_min_ms away on one grid of
 * period selection window + retry_min_ms + the windows' spread. A group
 * that comes back at a grid point and is sent away again goes to the next
 * point, where every group sent away meanwhile also comes: groups merge
 * instead of taking turns. */
int64_t shoal_round_gather_at(shoal_round_engine *e, int64_t now);
void shoal_round_retry_window_at(shoal_round_engine *e, int64_t now, int64_t anchor, int64_t *lo,
                                 int64_t *hi);
/* 1 when the population is at most twice one round's selection (sync). */
int shoal_round_small_population(const shoal_round_engine *e);
/* When the round reporting in slot s is expected to make way for the next
 * selection (absolute engine time). */
int64_t shoal_round_next_selection_estimate(const shoal_round_engine *e, const struct slot *s);

/* ---- round_lifecycle.c: rounds from selection to commit, FedBuff steps ---- */
struct slot *shoal_round_selecting_train(shoal_round_engine *e);
int shoal_round_slot_index(const shoal_round_engine *e, const struct slot *s);
void shoal_round_open_selection(shoal_round_engine *e, struct slot *s, shoal_task_kind task,
                                int64_t now);
/* Selection of s is over (target reached or window closed). */
void shoal_round_end_selection(shoal_round_engine *e, struct slot *s, int64_t now);
/* A selected (not yet configured) device left slot s. */
void shoal_round_unselect(shoal_round_engine *e, struct slot *s, int64_t now);
/* Closes s once every configured session has reported or been lost. */
void shoal_round_close_if_settled(shoal_round_engine *e, struct slot *s, int64_t now);
/* Closes s: `enough` reports arrived for it to count. */
void shoal_round_close_slot(shoal_round_engine *e, struct slot *s, int64_t now, int enough);
/* FedBuff: applies the buffer of updates as one server step. */
void shoal_round_async_step(shoal_round_engine *e, int64_t now);

#endif
