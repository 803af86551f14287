/* Aggregators (docs/architecture.md): actors that fold the accepted updates of
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
 * never stored.
 *
 * An aggregator reads nothing of the server's but the address of the
 * coordinator to answer: every fold and every answer carries its own data
 * (server_int.h), and what goes wrong folding (an update that found no
 * memory) travels back in the answer for the coordinator to act on. */
#include <string.h>
#include <time.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"

/* The sum of one round of one population being folded here. A population
 * has at most two training rounds in flight and folds only for the one
 * reporting, whose sum is collected before the next one reports: a slot
 * per population and round parity never holds two live rounds. */
typedef struct partial {
    int used;
    uint64_t round;
    size_t param_count;
    float *sum; /* NULL until the first fold finds memory */
    uint64_t folded, failed, fold_ns;
} partial;

struct aggregator {
    shoal_server *srv;
    uint32_t index;
    size_t population_count;
    partial *partials; /* 2 per population: [population * 2 + round % 2] */
};

shoal_err shoal_aggregator_new(shoal_server *srv, uint32_t index, size_t population_count,
                               aggregator **out)
{
    aggregator *a = shoal_calloc(1, sizeof *a);
    if (!a)
        return SHOAL_ENOMEM;
    a->srv = srv;
    a->index = index;
    a->population_count = population_count;
    a->partials = shoal_calloc(2 * (population_count ? population_count : 1), sizeof *a->partials);
    if (!a->partials) {
        shoal_free(a);
        return SHOAL_ENOMEM;
    }
    *out = a;
    return SHOAL_OK;
}

void shoal_aggregator_free(aggregator *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < 2 * a->population_count; i++)
        shoal_free(a->partials[i].sum);
    shoal_free(a->partials);
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

void shoal_partial_msg_free(void *p)
{
    partial_msg *m = p;
    if (!m)
        return;
    shoal_free(m->sum);
    shoal_free(m);
}

static partial *slot(aggregator *a, size_t pop_index, uint64_t round)
{
    return &a->partials[pop_index * 2 + round % 2];
}

static void fold(float *restrict sum, const float *restrict delta, float weight, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sum[i] += weight * delta[i];
}

static void on_fold(aggregator *a, const fold_msg *f)
{
    partial *p = slot(a, f->population, f->round);
    if (p->used && p->round != f->round) {
        /* A round whose sum was never collected (its coordinator stopped
         * waiting): nobody will ask for it. */
        shoal_free(p->sum);
        memset(p, 0, sizeof *p);
    }
    if (!p->used) {
        p->used = 1;
        p->round = f->round;
        p->param_count = f->param_count;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!p->sum && p->param_count == f->param_count)
        p->sum = shoal_calloc(p->param_count, sizeof(float));
    if (!p->sum || f->param_count != p->param_count || !f->delta) {
        /* The round's sum would silently miss this update: count it, so
         * that the coordinator does not commit the round. */
        p->failed++;
        SHOAL_LOG(SHOAL_LOG_ERROR, "aggregator",
                  "aggregator %u: cannot fold an update of round %llu (%zu parameters)", a->index,
                  (unsigned long long)f->round, f->param_count);
        return;
    }
    fold(p->sum, f->delta, f->weight, p->param_count);
    p->folded++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    p->fold_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
}

/* The address of a population's coordinator: the one thing an aggregator
 * asks the server, and what a transport to another process would replace. */
static shoal_err reply(aggregator *a, size_t pop_index, shoal_msg *m)
{
    return shoal_actor_send_unbounded(a->srv->pops[pop_index].coord_actor, m);
}

static void on_collect(aggregator *a, size_t pop_index, uint64_t round)
{
    partial *p = slot(a, pop_index, round);
    partial_msg *pm = shoal_calloc(1, sizeof *pm);
    if (!pm) {
        shoal_msg failed = {.type = MSG_CO_PARTIAL_FAILED, .a = round};
        (void)reply(a, pop_index, &failed);
        return;
    }
    pm->round = round;
    if (p->used && p->round == round) {
        pm->sum = p->sum;
        pm->param_count = p->sum ? p->param_count : 0;
        pm->folded = p->folded;
        pm->failed = p->failed;
        pm->fold_ns = p->fold_ns;
        memset(p, 0, sizeof *p);
    }
    shoal_msg m = {
        .type = MSG_CO_PARTIAL, .a = round, .payload = pm, .free_payload = shoal_partial_msg_free};
    if (reply(a, pop_index, &m) != SHOAL_OK)
        shoal_partial_msg_free(pm);
}

void shoal_aggregator_handle(shoal_actor *self, void *state, shoal_msg *msg)
{
    aggregator *a = state;
    switch (msg->type) {
    case MSG_AGG_FOLD: {
        const fold_msg *f = msg->payload;
        if (f && f->population < a->population_count)
            on_fold(a, f);
        return;
    }
    case MSG_AGG_COLLECT:
        if (msg->b < a->population_count)
            on_collect(a, (size_t)msg->b, msg->a);
        return;
    default:
        return;
    }
}
