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
 * never stored, except for the rules that need them whole (median, trimmed
 * mean: kept_updates.h), whose updates are kept until the sum is asked.
 *
 * An aggregator reads nothing of the server's but the address of the
 * coordinator to answer: every fold and every answer carries its own data
 * (server_int.h), and what goes wrong folding (an update that found no
 * memory) travels back in the answer for the coordinator to act on. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "secagg_group.h"
#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/encoding.h"
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
    kept_updates kept; /* updates sent with keep */
} partial;

/* A secure-aggregation group running here: when it was last armed to
 * tick, and the time its events took in each phase (wall and this
 * thread's CPU, by the phase the group was in when the event came). */
typedef struct sa_slot {
    shoal_sa_group *group;
    uint64_t id;
    uint32_t pop;
    int64_t armed;
    uint64_t phase_ns[SHOAL_SECAGG_PHASE_DONE], phase_cpu_ns[SHOAL_SECAGG_PHASE_DONE];
} sa_slot;

struct aggregator {
    shoal_server *srv;
    uint32_t index;
    size_t population_count;
    partial *partials; /* 2 per population: [population * 2 + round % 2] */
    sa_slot *groups;
    size_t group_count, group_cap;
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
    for (size_t i = 0; i < 2 * a->population_count; i++) {
        shoal_free(a->partials[i].sum);
        shoal_kept_clear(&a->partials[i].kept);
    }
    for (size_t i = 0; i < a->group_count; i++)
        shoal_sa_group_free(a->groups[i].group);
    shoal_free(a->groups);
    shoal_free(a->partials);
    shoal_free(a);
}

void shoal_fold_msg_free(void *p)
{
    fold_msg *f = p;
    if (!f)
        return;
    shoal_free(f->update);
    shoal_free(f);
}

void shoal_partial_msg_free(void *p)
{
    partial_msg *m = p;
    if (!m)
        return;
    shoal_free(m->sum);
    shoal_kept_clear(&m->kept);
    shoal_free(m);
}

static partial *slot(aggregator *a, size_t pop_index, uint64_t round)
{
    return &a->partials[pop_index * 2 + round % 2];
}

/* Median and trimmed mean need the round's updates whole: the update is
 * kept (taken from f) instead of summed. */
static void keep(aggregator *a, partial *p, fold_msg *f)
{
    float *delta = f->param_count == p->param_count && f->update
                       ? shoal_upload_floats(f->update, f->param_count, f->scale)
                       : NULL;
    if (!delta || shoal_kept_push(&p->kept, delta, f->weight) != SHOAL_OK) {
        shoal_free(delta);
        p->failed++;
        SHOAL_LOG(SHOAL_LOG_ERROR, "aggregator",
                  "aggregator %u: cannot keep an update of round %llu (%zu parameters)", a->index,
                  (unsigned long long)f->round, f->param_count);
        return;
    }
    p->folded++;
}

static void on_fold(aggregator *a, fold_msg *f)
{
    partial *p = slot(a, f->population, f->round);
    if (p->used && p->round != f->round) {
        /* A round whose sum was never collected (its coordinator stopped
         * waiting): nobody will ask for it. */
        shoal_free(p->sum);
        shoal_kept_clear(&p->kept);
        memset(p, 0, sizeof *p);
    }
    if (!p->used) {
        p->used = 1;
        p->round = f->round;
        p->param_count = f->param_count;
    }
    if (f->keep) {
        keep(a, p, f);
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!p->sum && p->param_count == f->param_count)
        p->sum = shoal_calloc(p->param_count, sizeof(float));
    if (!p->sum || f->param_count != p->param_count || !f->update) {
        /* The round's sum would silently miss this update: count it, so
         * that the coordinator does not commit the round. */
        p->failed++;
        SHOAL_LOG(SHOAL_LOG_ERROR, "aggregator",
                  "aggregator %u: cannot fold an update of round %llu (%zu parameters)", a->index,
                  (unsigned long long)f->round, f->param_count);
        return;
    }
    /* Straight from the wire bytes: one pass, no decoded copy. The clip
     * factor rides on the weight. */
    shoal_tensor_fold_f32le(p->sum, f->update, f->weight * f->scale, p->param_count);
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
        pm->kept = p->kept;
        memset(p, 0, sizeof *p);
    }
    shoal_msg m = {
        .type = MSG_CO_PARTIAL, .a = round, .payload = pm, .free_payload = shoal_partial_msg_free};
    if (reply(a, pop_index, &m) != SHOAL_OK)
        shoal_partial_msg_free(pm);
}

/* ---- secure aggregation: one group per shoal_sa_group ---------------------------- */

static shoal_err add_group(aggregator *a, uint64_t id, uint32_t pop, shoal_sa_group *g)
{
    if (a->group_count == a->group_cap) {
        size_t cap = a->group_cap ? 2 * a->group_cap : 8;
        sa_slot *groups = shoal_realloc(a->groups, cap * sizeof *groups);
        if (!groups)
            return SHOAL_ENOMEM;
        a->groups = groups;
        a->group_cap = cap;
    }
    a->groups[a->group_count++] = (sa_slot){.group = g, .id = id, .pop = pop, .armed = INT64_MIN};
    return SHOAL_OK;
}

static size_t group_slot(const aggregator *a, uint64_t id)
{
    for (size_t i = 0; i < a->group_count; i++)
        if (a->groups[i].id == id)
            return i;
    return SIZE_MAX;
}

/* A group that failed to start, or ended: its result goes to the
 * coordinator, which answers the devices. */
static void send_result(aggregator *a, uint32_t pop, uint64_t id, const sa_slot *s, const char *why)
{
    shoal_sa_group *g = s ? s->group : NULL;
    sa_result_msg *r = shoal_calloc(1, sizeof *r);
    if (!r)
        return;
    r->group = id;
    if (s) {
        r->inputs_ns = s->phase_ns[SHOAL_SECAGG_PHASE_MASK];
        r->inputs_cpu_ns = s->phase_cpu_ns[SHOAL_SECAGG_PHASE_MASK];
        r->unmask_ns = s->phase_ns[SHOAL_SECAGG_PHASE_UNMASK];
        r->unmask_cpu_ns = s->phase_cpu_ns[SHOAL_SECAGG_PHASE_UNMASK];
    }
    snprintf(r->why, sizeof r->why, "%.150s", why ? why : (g ? shoal_sa_group_failure(g) : ""));
    if (g) {
        memcpy(r->dropped, shoal_sa_group_dropped(g), sizeof r->dropped);
        uint64_t weight, unclipped;
        const uint32_t *u3;
        size_t u3_count;
        const double *sum = shoal_sa_group_sum(g, &weight, &unclipped, &u3, &u3_count);
        const size_t count = a->srv->pops[pop].param_count;
        if (sum) {
            r->sum = shoal_mallocarray(count, sizeof *r->sum);
            r->survivors = shoal_mallocarray(u3_count, sizeof *r->survivors);
            if (r->sum && r->survivors) {
                memcpy(r->sum, sum, count * sizeof *sum);
                memcpy(r->survivors, u3, u3_count * sizeof *u3);
                r->done = 1;
                r->param_count = count;
                r->total_weight = weight;
                r->unclipped = unclipped;
                r->survivor_count = u3_count;
            } else {
                snprintf(r->why, sizeof r->why, "out of memory passing the group's sum on");
            }
        }
    }
    shoal_msg m = {
        .type = MSG_CO_SA_RESULT, .payload = r, .free_payload = shoal_sa_result_msg_free};
    if (reply(a, pop, &m) != SHOAL_OK)
        shoal_sa_result_msg_free(r);
}

/* After every event of a group: its frames to the coordinator, its end, or
 * its next deadline. */
static void after_event(aggregator *a, shoal_actor *self, size_t slot)
{
    sa_slot *s = &a->groups[slot];
    shoal_sa_group *g = s->group;
    const uint64_t id = s->id;
    const uint32_t pop = s->pop;
    size_t count;
    sa_frame *frames = shoal_sa_group_take_frames(g, &count);
    if (count) {
        sa_frames_msg *fm = shoal_malloc(sizeof *fm);
        shoal_msg m = {
            .type = MSG_CO_SA_FRAMES, .payload = fm, .free_payload = shoal_sa_frames_msg_free};
        if (fm)
            *fm = (sa_frames_msg){.group = id, .frames = frames, .count = count};
        if (!fm || reply(a, pop, &m) != SHOAL_OK) {
            /* The devices miss the phase and drop out at its deadline. */
            for (size_t i = 0; i < count; i++)
                shoal_free(frames[i].bytes);
            shoal_free(frames);
            shoal_free(fm);
        }
    } else {
        shoal_free(frames);
    }
    if (shoal_sa_group_state(g) != SA_GROUP_RUNNING) {
        send_result(a, pop, id, s, NULL);
        shoal_sa_group_free(g);
        a->groups[slot] = a->groups[--a->group_count];
        return;
    }
    const int64_t due = shoal_sa_group_deadline(g);
    if (due != s->armed) {
        shoal_msg t = {.type = MSG_AGG_SA_TICK, .a = id};
        int64_t delay = due - shoal_actor_now_ms();
        if (shoal_actor_send_after(self, delay > 0 ? delay : 0, &t, NULL) == SHOAL_OK)
            s->armed = due;
    }
}

static void on_sa_open(aggregator *a, shoal_actor *self, const sa_group_params *p)
{
    shoal_sa_group *g = NULL;
    shoal_errinfo ei = {{0}};
    if (p->population >= a->population_count)
        return;
    if (shoal_sa_group_new(p, &a->srv->server_codec, &g, &ei) != SHOAL_OK ||
        add_group(a, p->id, p->population, g) != SHOAL_OK) {
        shoal_sa_group_free(g);
        send_result(a, p->population, p->id, NULL, ei.msg[0] ? ei.msg : "out of memory");
        return;
    }
    after_event(a, self, a->group_count - 1);
}

static uint64_t elapsed_ns(const struct timespec *t0, const struct timespec *t1)
{
    return (uint64_t)((t1->tv_sec - t0->tv_sec) * 1000000000LL + (t1->tv_nsec - t0->tv_nsec));
}

/* A group's event (a device's message, or env NULL: its deadline), timed
 * and counted to the phase it came in: the masked-input phase's time is
 * adding inputs into the group's sum, the unmask phase's is taking the
 * shares, rebuilding the secrets, removing the masks and decoding. */
static void group_event(aggregator *a, shoal_actor *self, size_t slot, const sa_input_msg *in)
{
    sa_slot *s = &a->groups[slot];
    const shoal_secagg_phase phase = shoal_sa_group_phase(s->group);
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    if (!in) {
        s->armed = INT64_MIN;
        shoal_sa_group_tick(s->group, shoal_actor_now_ms());
    } else {
        shoal_errinfo ei = {{0}};
        if (shoal_sa_group_on_message(s->group, in->index, in->env, shoal_actor_now_ms(), &ei) !=
            SHOAL_OK)
            SHOAL_LOG(SHOAL_LOG_INFO, "aggregator", "group %llu, device %u: refused: %s",
                      (unsigned long long)in->group, (unsigned)in->index, ei.msg);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if ((unsigned)phase < SHOAL_SECAGG_PHASE_DONE) {
        s->phase_ns[phase] += elapsed_ns(&t0, &t1);
        s->phase_cpu_ns[phase] += elapsed_ns(&c0, &c1);
    }
    after_event(a, self, slot);
}

static void on_sa_input(aggregator *a, shoal_actor *self, const sa_input_msg *in)
{
    size_t slot = group_slot(a, in->group);
    if (slot == SIZE_MAX)
        return; /* the group has ended: the device learns it from its ack */
    group_event(a, self, slot, in);
}

static void on_sa_tick(aggregator *a, shoal_actor *self, uint64_t id)
{
    size_t slot = group_slot(a, id);
    if (slot != SIZE_MAX)
        group_event(a, self, slot, NULL);
}

void shoal_aggregator_handle(shoal_actor *self, void *state, shoal_msg *msg)
{
    aggregator *a = state;
    switch (msg->type) {
    case MSG_AGG_SA_OPEN:
        if (msg->payload)
            on_sa_open(a, self, msg->payload);
        return;
    case MSG_AGG_SA_INPUT:
        if (msg->payload)
            on_sa_input(a, self, msg->payload);
        return;
    case MSG_AGG_SA_TICK:
        on_sa_tick(a, self, msg->a);
        return;
    case MSG_AGG_FOLD: {
        fold_msg *f = msg->payload;
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
