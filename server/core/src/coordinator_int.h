/* The coordinator's state, shared by coordinator.c (the round engine's
 * driver) and coordinator_secagg.c (its secure-aggregation groups). */
#ifndef SHOAL_COORDINATOR_INT_H
#define SHOAL_COORDINATOR_INT_H

#include <time.h>

#include "server_int.h"

typedef struct route {
    shoal_conn_id conn;
    uint32_t shard;
} route;

struct coordinator {
    shoal_server *srv;
    population *pop;
    shoal_state *state;
    int64_t pop_id;
    shoal_round_engine *engine;
    model_blob *model;     /* the engine's current model, encoded */
    u64map routes;         /* session -> route */
    u64map detached;       /* session -> resume_msg: connection dropped, may resume */
    uint64_t round_offset; /* rounds recorded before this start */
    uint64_t last_started, last_finished; /* engine round numbers (train) */
    /* The round whose partial sums are being collected (external
     * aggregation), the running master sum and the aggregators still to
     * answer. */
    uint64_t agg_round;
    float *agg_sum;
    size_t agg_pending;
    struct timespec agg_started;
    /* Updates of agg_round that did not reach its sum (an aggregator had
     * no memory, or did not answer): the round must not commit. */
    uint64_t agg_failed;
    /* Median and trimmed mean: the round's updates gathered from the
     * aggregators' partials. */
    kept_updates agg_kept;
    /* Accepted updates of round unsent_round that never reached an
     * aggregator. */
    uint64_t unsent_round, unsent;
    shoal_timer_id timer;
    int64_t timer_due;
    uint64_t timer_generation;
    int shut_down;
    /* A shutdown came while the aggregators' partial sums of a complete
     * round were on their way: it waits for them and the commit. */
    int shutdown_deferred;
    sa_rounds *sa; /* secure aggregation's groups; NULL without it */
};

/* Sends a ReportAck through the session's selector. */
void shoal_coordinator_ack(coordinator *co, uint32_t shard, shoal_conn_id conn, int status,
                           int reason, int64_t rmin, int64_t rmax, const char *detail);
/* Secure aggregation: the round's aggregate from its groups; a group's
 * message (MSG_CO_SA_*). */
void shoal_coordinator_sa_aggregate(coordinator *co, const shoal_round_action *a);
void shoal_coordinator_sa_message(coordinator *co, shoal_msg *msg);

#endif
