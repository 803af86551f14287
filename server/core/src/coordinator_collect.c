/* The coordinator's collection of a synchronous round's aggregate without
 * secure aggregation: every aggregator's partial weighted sum (or, for
 * median and trimmed mean, the updates it kept) gathered into one sum for
 * the round engine, or for the DP step (coordinator_dp.c). */
#include <time.h>

#include "coordinator_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"

#define LOG_COMPONENT "coordinator"

/* The engine closed round a.round with enough reports: ask every
 * aggregator for its partial sum. */
void shoal_coordinator_collect_start(coordinator *co, const shoal_round_action *a)
{
    shoal_server *srv = co->srv;
    shoal_free(co->agg_sum);
    shoal_kept_clear(&co->agg_kept);
    co->agg_sum = shoal_calloc(co->pop->param_count, sizeof(float));
    co->agg_round = a->round;
    co->agg_pending = 0;
    co->agg_failed = co->unsent_round == a->round ? co->unsent : 0;
    clock_gettime(CLOCK_MONOTONIC, &co->agg_started);
    if (!co->agg_sum)
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                  "population '%s': out of memory collecting round %llu", co->pop->cfg->name,
                  (unsigned long long)(co->round_offset + a->round));
    for (size_t i = 0; i < srv->aggregator_count; i++) {
        shoal_msg m = {.type = MSG_AGG_COLLECT, .a = a->round, .b = co->pop->index};
        if (shoal_actor_send_unbounded(srv->aggregator_actors[i], &m) == SHOAL_OK)
            co->agg_pending++;
    }
}

/* Median and trimmed mean: the rule over the updates gathered, as the
 * weighted sum the engine takes, into co->agg_sum. */
static void robust_sum(coordinator *co)
{
    const shoal_aggregation_config *rule = &co->pop->cfg->aggregation;
    if (!shoal_kept_needed(rule) || co->agg_failed || !co->agg_sum)
        return;
    float *scratch = shoal_mallocarray(co->agg_kept.count ? co->agg_kept.count : 1, sizeof(float));
    if (!scratch || shoal_kept_aggregate(&co->agg_kept, rule, co->pop->param_count, scratch,
                                         co->agg_sum) != SHOAL_OK)
        co->agg_failed++;
    shoal_free(scratch);
}

static void finish_collect(coordinator *co, int64_t now)
{
    population *pop = co->pop;
    robust_sum(co);
    shoal_kept_clear(&co->agg_kept);
    if (co->agg_failed || !co->agg_sum) {
        /* An update of this round did not reach its sum: the sum is wrong,
         * so the engine abandons the round with nothing applied. */
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                  "population '%s': round %llu: %llu update(s) could not be aggregated%s",
                  pop->cfg->name, (unsigned long long)(co->round_offset + co->agg_round),
                  (unsigned long long)co->agg_failed, co->agg_sum ? "" : ", no memory for the sum");
        if (shoal_round_aggregation_failed(co->engine, now, co->agg_round) != SHOAL_OK)
            SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT, "population '%s': cannot abandon round %llu",
                      pop->cfg->name, (unsigned long long)(co->round_offset + co->agg_round));
    } else if ((co->dp ? shoal_coordinator_dp_aggregated(co, now, co->agg_round, co->agg_sum)
                       : shoal_round_aggregated(co->engine, now, co->agg_round, co->agg_sum)) !=
               SHOAL_OK) {
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                  "population '%s': round %llu was not waiting for its sum", pop->cfg->name,
                  (unsigned long long)(co->round_offset + co->agg_round));
    }
    shoal_free(co->agg_sum);
    co->agg_sum = NULL;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_fetch_add(&pop->metrics.aggregation_ns,
                     (uint64_t)((t1.tv_sec - co->agg_started.tv_sec) * 1000000000LL +
                                (t1.tv_nsec - co->agg_started.tv_nsec)));
}

/* An aggregator's share of the round being collected: `partial` is NULL
 * when the aggregator could not answer with it. */
void shoal_coordinator_collect_partial(coordinator *co, uint64_t round, partial_msg *partial,
                                       int64_t now)
{
    if (round != co->agg_round || co->agg_pending == 0)
        return;
    if (!partial) {
        co->agg_failed++;
    } else {
        co->agg_failed += partial->failed;
        if (shoal_kept_move(&co->agg_kept, &partial->kept) != SHOAL_OK)
            co->agg_failed += partial->kept.count;
        atomic_fetch_add(&co->pop->metrics.aggregation_ns, partial->fold_ns);
        if (partial->sum && partial->param_count != co->pop->param_count)
            co->agg_failed += partial->folded;
        else if (partial->sum && co->agg_sum) {
            float *restrict sum = co->agg_sum;
            for (size_t i = 0; i < co->pop->param_count; i++)
                sum[i] += partial->sum[i];
        }
    }
    if (--co->agg_pending == 0)
        finish_collect(co, now);
}
