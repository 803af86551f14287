/* Aggregators (DESIGN.md §5): actors that fold the accepted updates of
 * synchronous rounds into partial weighted sums, so the folding of a
 * round's reports runs on every worker instead of on the coordinator's
 * thread. A coordinator sends each accepted update to one aggregator
 * (chosen by session) with the weight the round engine gave it; when the
 * engine announces that the round has its reports
 * (SHOAL_ACTION_AGGREGATE) the coordinator asks every aggregator for its
 * partial sum of that round and adds them up (the master aggregation)
 * before the server optimizer step. The coordinator is the only sender of
 * both kinds of message to an aggregator, so every fold of a round arrives
 * before the request for its sum. Updates are folded as they arrive and
 * never stored. */
#include <string.h>
#include <time.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"

typedef struct partial {
    size_t pop;
    uint64_t round;
    float *sum;
    struct partial *next;
} partial;

struct aggregator {
    shoal_server *srv;
    uint32_t index;
    partial *partials; /* rounds with folds not yet collected: one or two */
};

shoal_err shoal_aggregator_new(shoal_server *srv, uint32_t index, aggregator **out)
{
    aggregator *a = shoal_calloc(1, sizeof *a);
    if (!a)
        return SHOAL_ENOMEM;
    a->srv = srv;
    a->index = index;
    *out = a;
    return SHOAL_OK;
}

void shoal_aggregator_free(aggregator *a)
{
    if (!a)
        return;
    partial *p = a->partials;
    while (p) {
        partial *next = p->next;
        shoal_free(p->sum);
        shoal_free(p);
        p = next;
    }
    shoal_free(a);
}

void shoal_fold_msg_free(void *p)
{
    fold_msg *f = p;
    if (!f)
        return;
    shoal_free(f->delta);
    shoal_free(f);
}

static partial *find(aggregator *a, size_t pop, uint64_t round, int create, size_t count)
{
    for (partial *p = a->partials; p; p = p->next)
        if (p->pop == pop && p->round == round)
            return p;
    if (!create)
        return NULL;
    partial *p = shoal_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->sum = shoal_calloc(count, sizeof(float));
    if (!p->sum) {
        shoal_free(p);
        return NULL;
    }
    p->pop = pop;
    p->round = round;
    p->next = a->partials;
    a->partials = p;
    return p;
}

static void fold(float *restrict sum, const float *restrict delta, float weight, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sum[i] += weight * delta[i];
}

void shoal_aggregator_handle(shoal_actor *self, void *state, shoal_msg *msg)
{
    aggregator *a = state;
    size_t pop_index = (size_t)msg->b;
    if (pop_index >= a->srv->pop_count)
        return;
    population *pop = &a->srv->pops[pop_index];
    switch (msg->type) {
    case MSG_AGG_FOLD: {
        const fold_msg *f = msg->payload;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        partial *p = find(a, pop_index, msg->a, 1, pop->param_count);
        if (!p) {
            /* Without memory this update cannot count; the round's sum
             * would silently miss it, so the round must not commit. */
            SHOAL_LOG(SHOAL_LOG_ERROR, "aggregator",
                      "population '%s': out of memory folding an update of round %llu",
                      pop->cfg->name, (unsigned long long)msg->a);
            atomic_store(&pop->metrics.fold_failed, 1);
            return;
        }
        fold(p->sum, f->delta, f->weight, pop->param_count);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        atomic_fetch_add(
            &pop->metrics.aggregation_ns,
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
        return;
    }
    case MSG_AGG_COLLECT: {
        partial *p = find(a, pop_index, msg->a, 0, 0);
        float *sum = NULL;
        if (p) {
            sum = p->sum;
            partial **pp = &a->partials;
            while (*pp != p)
                pp = &(*pp)->next;
            *pp = p->next;
            shoal_free(p);
        }
        shoal_msg reply = {.type = MSG_CO_PARTIAL, .a = msg->a, .payload = sum};
        if (shoal_actor_send_unbounded(pop->coord_actor, &reply) != SHOAL_OK)
            shoal_free(sum);
        return;
    }
    default:
        return;
    }
}
