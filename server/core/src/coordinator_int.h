/* The coordinator's state, shared by coordinator.c (the round engine's
 * driver) and coordinator_secagg.c (its secure-aggregation groups). */
#ifndef SHOAL_COORDINATOR_INT_H
#define SHOAL_COORDINATOR_INT_H

#include <time.h>

#include "server_int.h"

typedef struct coord_dp coord_dp;

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
    coord_dp *dp;  /* differential privacy; NULL without it */
};

/* Sends a ReportAck through the session's selector. */
void shoal_coordinator_ack(coordinator *co, uint32_t shard, shoal_conn_id conn, int status,
                           int reason, int64_t rmin, int64_t rmax, const char *detail);
/* Without secure aggregation: the engine closed round a->round with
 * enough reports, so ask every aggregator for its partial sum; then each
 * aggregator's answer (partial NULL when it could not give one, borrowed:
 * the caller frees it). After the last one the sum goes to the engine (or
 * the DP step), or the round is abandoned when an update missed it.
 * Coordinator thread only. */
void shoal_coordinator_collect_start(coordinator *co, const shoal_round_action *a);
void shoal_coordinator_collect_partial(coordinator *co, uint64_t round, partial_msg *partial,
                                       int64_t now);
/* Secure aggregation: the round's aggregate from its groups; a group's
 * message (MSG_CO_SA_*). */
void shoal_coordinator_sa_aggregate(coordinator *co, const shoal_round_action *a);
void shoal_coordinator_sa_message(coordinator *co, shoal_msg *msg);

/* coordinator_dp.c: DP-FedAvg (differential_privacy in the config). */
/* Loads the accountant committed with checkpoint `version` (0: none yet),
 * publishes epsilon and checks the budget. Nothing without DP. */
shoal_err shoal_coordinator_dp_open(coordinator *co, uint64_t version, shoal_errinfo *ei);
void shoal_coordinator_dp_free(coordinator *co);
/* 1 when the budget allows no more rounds: check-ins are turned away. */
int shoal_coordinator_dp_exhausted(const coordinator *co);
/* What the turned-away devices are told. */
void shoal_coordinator_dp_refusal(const coordinator *co, char *detail, size_t len);
/* The clip S_t of training round `round` (engine numbering), for its
 * plans and its uploads' bound: fixed when the round configures its first
 * device, the config's clip or, with adaptive clipping, the one the last
 * committed round gave. 0 without DP. */
double shoal_coordinator_dp_round_clip(coordinator *co, uint64_t round);
/* Adaptive clipping: `reports` more updates of `round` reached its sum,
 * `unclipped` of them with the unclipped bit set (a plain report: 1 and
 * its bit; secure aggregation: the unmasked groups' totals). Nothing
 * without adaptive clipping, or for another round than the clip's. */
void shoal_coordinator_dp_count(coordinator *co, uint64_t round, uint64_t reports,
                                uint64_t unclipped);
/* The round's sum of clipped updates (each weighing 1), noised once and
 * divided by the expected reports, to the engine (in place: sum becomes
 * the mean); with adaptive clipping also the noised unclipped count and
 * the next round's clip, which the commit makes current. The round is
 * abandoned, nothing released, when the noise cannot be drawn. Returns
 * the engine's answer. */
shoal_err shoal_coordinator_dp_aggregated(coordinator *co, int64_t now, uint64_t round, float *sum);
/* The accountant with the round being committed, for shoal_state_commit_dp
 * (in *out, pointing into co's storage); NULL without DP. */
const shoal_dp_record *shoal_coordinator_dp_prepare(coordinator *co, shoal_dp_record *out);
/* The commit is durable: the accountant moves on, epsilon is logged and
 * published, the budget checked. */
void shoal_coordinator_dp_committed(coordinator *co, uint64_t round, uint64_t version);

#endif
