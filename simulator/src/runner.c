#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "aggregate_int.h"
#include "population_int.h"
#include "shoal/alloc.h"
#include "shoal/dataset.h"
#include "shoal/rng.h"
#include "shoal/sim.h"

/* ---- events ------------------------------------------------------------------ */

enum event_kind { EV_CHECKIN, EV_REPORT, EV_DROP };

struct event {
    int64_t t;
    uint64_t seq; /* ties in time go in scheduling order: determinism */
    uint64_t session;
    uint32_t device;
    uint32_t kind;
};

struct heap {
    struct event *v;
    size_t n, cap;
};

static int ev_less(const struct event *a, const struct event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static shoal_err heap_push(struct heap *h, struct event e)
{
    if (shoal_grow(&h->v, &h->cap, h->n, sizeof *h->v, 1024))
        return SHOAL_ENOMEM;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&e, &h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
    return SHOAL_OK;
}

static struct event heap_pop(struct heap *h)
{
    struct event top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct event *best = &last;
        if (l < h->n && ev_less(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (r < h->n && ev_less(&h->v[r], best))
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* ---- jobs: devices configured and not yet finished ----------------------------- */

struct snapshot {
    int refs;
    uint64_t version;
    float params[];
};

struct job {
    uint64_t session;
    uint32_t device;
    shoal_task_kind task;
    int will_report; /* drawn at configuration: dropouts never train */
    int64_t report_at;
    int done;
    struct snapshot *snap;
    float *delta;
    shoal_err err;
    shoal_train_result train;
    shoal_batch_stats eval;
};

struct sim {
    const shoal_sim_config *cfg;
    const shoal_dataset *train, *test;
    shoal_model *model;
    shoal_partition *part;
    shoal_round_engine *engine;
    shoal_sim_aggregator *agg; /* NULL when the engine folds */
    float *agg_mean;
    shoal_sim_aggregation_stats agg_stats; /* the last aggregated round's */
    uint64_t samples_drawn;                /* Poisson or shuffled sampling: rounds drawn so far */
    uint32_t *shuffled;                    /* shuffled sampling: this epoch's order */
    uint32_t shuffle_next, epochs;         /* its next unused client; epochs begun */
    size_t params;
    uint64_t model_bytes, macs;

    struct heap events;
    uint64_t seq;
    uint64_t session_counter;
    int64_t now;

    struct job **jobs;
    size_t job_count, job_cap;
    float **free_deltas;
    size_t free_delta_count, free_delta_cap;
    struct snapshot *latest;

    shoal_trainer **trainers;
    shoal_trainer *test_trainer;

    shoal_sim_result *res;
    shoal_sim_round_fn on_round;
    void *ctx;
    double target;
    double fed_eval;
    double train_s; /* in device sessions since the last round row */
    double last_test_acc, last_test_loss;
    struct timespec wall0;
    shoal_errinfo *ei;
    shoal_err failure;
};

static double wall_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static shoal_err schedule(struct sim *s, int64_t t, enum event_kind kind, uint32_t device,
                          uint64_t session)
{
    struct event e = {.t = t, .seq = s->seq++, .session = session, .device = device, .kind = kind};
    return heap_push(&s->events, e);
}

/* A session id carries its device: device in the high 32 bits. */
static uint64_t next_session(uint32_t device, uint64_t *counter)
{
    return ((uint64_t)device << 32) | (uint32_t)(++*counter);
}

static uint32_t session_device(uint64_t session)
{
    return (uint32_t)(session >> 32);
}

static void snapshot_release(struct snapshot *snap)
{
    if (snap && --snap->refs == 0)
        shoal_free(snap);
}

static struct snapshot *snapshot_current(struct sim *s)
{
    uint64_t v = shoal_round_version(s->engine);
    if (s->latest && s->latest->version == v)
        return s->latest;
    struct snapshot *snap = shoal_malloc(sizeof *snap + s->params * sizeof(float));
    if (!snap)
        return NULL;
    snap->refs = 1; /* held as `latest` */
    snap->version = v;
    memcpy(snap->params, shoal_round_params(s->engine), s->params * sizeof(float));
    snapshot_release(s->latest);
    s->latest = snap;
    return snap;
}

static float *delta_alloc(struct sim *s)
{
    if (s->free_delta_count)
        return s->free_deltas[--s->free_delta_count];
    return shoal_mallocarray(s->params, sizeof(float));
}

static void delta_release(struct sim *s, float *d)
{
    if (!d)
        return;
    if (shoal_grow(&s->free_deltas, &s->free_delta_cap, s->free_delta_count, sizeof *s->free_deltas,
                   64)) {
        shoal_free(d);
        return;
    }
    s->free_deltas[s->free_delta_count++] = d;
}

static struct job *job_find(struct sim *s, uint64_t session, size_t *at)
{
    for (size_t i = 0; i < s->job_count; i++)
        if (s->jobs[i]->session == session) {
            if (at)
                *at = i;
            return s->jobs[i];
        }
    return NULL;
}

static void job_remove(struct sim *s, uint64_t session)
{
    size_t at;
    struct job *j = job_find(s, session, &at);
    if (!j)
        return;
    s->jobs[at] = s->jobs[--s->job_count];
    snapshot_release(j->snap);
    delta_release(s, j->delta);
    shoal_free(j);
}

/* ---- parallel training ------------------------------------------------------------ */

struct batch {
    struct sim *s;
    struct job **todo;
    size_t count;
    atomic_size_t next;
};

struct worker {
    struct batch *b;
    shoal_trainer *trainer;
};

static void run_job(struct sim *s, shoal_trainer *t, struct job *j)
{
    const shoal_partition *p = s->part;
    const uint32_t *idx = shoal_partition_indices(p, j->device);
    size_t n = shoal_partition_size(p, j->device);
    if (j->task == SHOAL_TASK_TRAIN) {
        shoal_rng r;
        shoal_rng_derive(&r, s->cfg->seed ^ 0x5EED0F10CA1ULL, j->session);
        j->err = shoal_trainer_run_local(t, j->snap->params, s->train, idx, n, shoal_rng_u64(&r),
                                         j->delta, &j->train);
    } else {
        memset(&j->eval, 0, sizeof j->eval);
        j->err = shoal_trainer_evaluate(t, j->snap->params, s->train, idx, n, &j->eval);
    }
    j->done = 1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&w->b->next, 1);
        if (i >= w->b->count)
            break;
        run_job(w->b->s, w->trainer, w->b->todo[i]);
    }
    return NULL;
}

/* Trains, on cfg->threads threads, `need` (whose report is being
 * delivered) and the other open jobs due soonest, up to `threads` jobs.
 * Training lazily in report order means stragglers whose round closes first
 * never cost CPU. Ties in due time go by session id, so which jobs run
 * together never depends on array order, and results never depend on which
 * thread ran what. */
static int due_before(const struct job *a, const struct job *b)
{
    return a->report_at < b->report_at || (a->report_at == b->report_at && a->session < b->session);
}

static shoal_err train_pending(struct sim *s, struct job *need)
{
    struct job **todo = shoal_mallocarray(s->cfg->threads + 1, sizeof *todo);
    if (!todo)
        return SHOAL_ENOMEM;
    size_t n = 0, cap = s->cfg->threads;
    todo[n++] = need;
    for (size_t i = 0; i < s->job_count; i++) {
        struct job *j = s->jobs[i];
        if (j == need || j->done || !j->will_report ||
            !shoal_round_session_open(s->engine, j->session))
            continue;
        /* Keep todo[1..n) sorted by due time, at most `threads` in all. */
        size_t at;
        if (n < cap)
            at = n++;
        else if (n > 1 && due_before(j, todo[n - 1]))
            at = n - 1;
        else
            continue;
        while (at > 1 && due_before(j, todo[at - 1])) {
            todo[at] = todo[at - 1];
            at--;
        }
        todo[at] = j;
    }
    struct batch b = {.s = s, .todo = todo, .count = n};
    atomic_init(&b.next, 0);
    size_t threads = s->cfg->threads < n ? s->cfg->threads : n;
    struct worker workers[256];
    pthread_t tids[256];
    int started[256] = {0};
    for (size_t t = 0; t < threads; t++) {
        workers[t].b = &b;
        workers[t].trainer = s->trainers[t];
        if (t > 0)
            started[t] = pthread_create(&tids[t], NULL, worker_main, &workers[t]) == 0;
    }
    if (threads > 0)
        worker_main(&workers[0]);
    for (size_t t = 1; t < threads; t++)
        if (started[t])
            pthread_join(tids[t], NULL);
    /* A thread that failed to start left its share to the others' loop;
     * anything still undone runs here. */
    for (size_t i = 0; i < n; i++)
        if (!todo[i]->done)
            run_job(s, s->trainers[0], todo[i]);
    shoal_free(todo);
    return SHOAL_OK;
}

/* ---- engine actions --------------------------------------------------------------- */

static void central_test(struct sim *s)
{
    shoal_batch_stats st = {0};
    /* A model that no longer evaluates (non-finite logits) scores NaN
     * rather than keeping the previous model's figure. */
    s->last_test_acc = NAN;
    s->last_test_loss = NAN;
    if (shoal_trainer_evaluate(s->test_trainer, shoal_round_params(s->engine), s->test, NULL, 0,
                               &st) == SHOAL_OK &&
        st.count) {
        s->last_test_acc = (double)st.correct / (double)st.count;
        s->last_test_loss = st.loss_sum / (double)st.count;
    }
}

static void emit_row(struct sim *s, const shoal_round_action *a, int abandoned)
{
    shoal_sim_round row;
    memset(&row, 0, sizeof row);
    row.round = shoal_round_committed(s->engine);
    row.sim_time_s = (double)s->now / 1000.0;
    row.selected = a->stats.selected;
    row.reported = a->stats.reported;
    row.dropped = a->stats.dropped;
    row.late = a->stats.late;
    row.train_loss = a->stats.loss;
    row.test_accuracy = NAN;
    row.test_loss = NAN;
    row.abandoned = abandoned;
    shoal_sim_aggregator_epsilon(s->agg, &row.epsilon, &row.epsilon_order);
    row.rho = shoal_sim_aggregator_rho(s->agg, NULL);
    row.dp_clip = s->agg && s->agg_stats.round == a->round ? s->agg_stats.dp_clip : NAN;
    if (s->agg && s->agg_stats.round == a->round) {
        const shoal_sim_secagg_stats *sa = &s->agg_stats.secagg;
        row.secagg_s = sa->seconds;
        memcpy(row.secagg_dropouts, sa->dropouts, sizeof row.secagg_dropouts);
        row.secagg_groups = sa->groups;
        row.secagg_groups_failed = sa->groups_failed;
        s->res->secagg_s += sa->seconds;
        for (int p = 0; p < SHOAL_SIM_SECAGG_PHASES; p++)
            s->res->secagg_dropouts[p] += sa->dropouts[p];
        s->res->secagg_groups_failed += sa->groups_failed;
    }
    if (!abandoned && (row.round % s->cfg->test_every == 0 || row.round >= s->cfg->rounds)) {
        central_test(s);
        row.test_accuracy = s->last_test_acc;
        row.test_loss = s->last_test_loss;
        if (s->target > 0.0 && s->res->rounds_to_target < 0 && s->last_test_acc >= s->target)
            s->res->rounds_to_target = (int)row.round;
    }
    row.fed_eval_accuracy = s->fed_eval;
    row.bytes_down = s->res->bytes_down;
    row.bytes_up = s->res->bytes_up;
    row.wall_s = wall_since(&s->wall0);
    row.train_s = s->train_s;
    s->res->train_s += s->train_s;
    s->train_s = 0.0;
    s->res->late += a->stats.late;
    if (s->on_round)
        s->on_round(s->ctx, &row);
}

static shoal_err configure(struct sim *s, const shoal_round_action *a)
{
    uint32_t device = session_device(a->session);
    struct device_traits tr;
    shoal_sim_device_traits(s->cfg, device, &tr);
    struct job *j = shoal_calloc(1, sizeof *j);
    if (!j)
        return SHOAL_ENOMEM;
    j->session = a->session;
    j->device = device;
    j->task = a->task;
    j->snap = snapshot_current(s);
    if (!j->snap) {
        shoal_free(j);
        return SHOAL_ENOMEM;
    }
    j->snap->refs++;
    if (shoal_grow(&s->jobs, &s->job_cap, s->job_count, sizeof *s->jobs, 64)) {
        snapshot_release(j->snap);
        shoal_free(j);
        return SHOAL_ENOMEM;
    }
    s->jobs[s->job_count++] = j;
    s->res->bytes_down += s->model_bytes;
    s->res->sessions++;

    size_t examples = shoal_partition_size(s->part, device);
    int train = a->task == SHOAL_TASK_TRAIN;
    int64_t dur = shoal_sim_session_ms(s->cfg, &tr, s->model_bytes, s->macs, examples, train);
    int64_t win_start, win_end;
    shoal_sim_device_window(s->cfg, device, &tr, s->now, &win_start, &win_end);
    shoal_rng r;
    shoal_rng_derive(&r, s->cfg->seed ^ 0xD50FF0ULL, a->session);
    double u = shoal_rng_double(&r), when = shoal_rng_double(&r);
    if (u < s->cfg->dropout)
        return schedule(s, s->now + (int64_t)(when * (double)dur), EV_DROP, device, a->session);
    if (win_start > s->now || s->now + dur > win_end)
        return schedule(s, win_start > s->now ? s->now : win_end, EV_DROP, device, a->session);
    j->will_report = 1;
    if (train && !(j->delta = delta_alloc(s)))
        return SHOAL_ENOMEM;
    j->report_at = s->now + dur;
    return schedule(s, s->now + dur, EV_REPORT, device, a->session);
}

/* Whether the simulator draws each round's sample itself (Poisson or
 * shuffled) instead of letting devices check in on their own. */
static int draws_samples(const shoal_sim_config *c)
{
    return c->sampling != SHOAL_SIM_SAMPLING_CHECKIN;
}

/* Shuffled sampling: a fresh permutation of the clients (from the seed
 * and the epoch) for the next epoch. */
static void shuffle_epoch(struct sim *s)
{
    shoal_rng r;
    shoal_rng_derive(&r, s->cfg->seed ^ 0x5A0FF1EULL, ++s->epochs);
    for (uint32_t i = 0; i < s->cfg->clients; i++)
        s->shuffled[i] = i;
    shoal_rng_shuffle_u32(&r, s->shuffled, s->cfg->clients);
    s->shuffle_next = 0;
}

/* Poisson sampling: every client joins the next round independently with
 * probability q; shuffled: the next clients of the epoch's order. Each
 * drawn client checks in during the first half of its selection window;
 * the others stay away. */
static shoal_err draw_sample(struct sim *s)
{
    const double q = (double)s->cfg->round.goal_count / (double)s->cfg->clients;
    shoal_rng r;
    shoal_rng_derive(&r, s->cfg->seed ^ 0x9015505ULL, ++s->samples_drawn);
    const double spread = (double)s->cfg->round.selection_window_ms / 2.0;
    const int shuffled = s->cfg->sampling == SHOAL_SIM_SAMPLING_SHUFFLE;
    const uint32_t goal = s->cfg->round.goal_count;
    if (shuffled && (s->epochs == 0 || s->cfg->clients - s->shuffle_next < goal))
        shuffle_epoch(s);
    for (uint32_t i = 0; i < (shuffled ? goal : s->cfg->clients); i++) {
        uint32_t d = shuffled ? s->shuffled[s->shuffle_next++] : i;
        if (!shuffled && shoal_rng_double(&r) >= q)
            continue;
        shoal_err err =
            schedule(s, s->now + 1 + (int64_t)(shoal_rng_double(&r) * spread), EV_CHECKIN, d, 0);
        if (err)
            return err;
    }
    return SHOAL_OK;
}

/* After a session ends, the device checks in again inside [lo, hi]; under
 * Poisson sampling it waits to be drawn instead. */
static shoal_err reschedule(struct sim *s, uint32_t device, uint64_t session, int64_t lo,
                            int64_t hi)
{
    if (draws_samples(s->cfg))
        return SHOAL_OK;
    shoal_rng r;
    shoal_rng_derive(&r, s->cfg->seed ^ 0x4E7C4EC1ULL, session);
    int64_t span = hi > lo ? hi - lo : 0;
    return schedule(s, s->now + lo + (int64_t)(shoal_rng_double(&r) * (double)span), EV_CHECKIN,
                    device, 0);
}

/* external_aggregation: the round's reports are in; form its mean. */
static shoal_err aggregate_round(struct sim *s, uint64_t round)
{
    int formed = 0;
    shoal_err err =
        shoal_sim_aggregator_mean(s->agg, round, s->agg_mean, &formed, &s->agg_stats, s->ei);
    if (err)
        return err;
    if (s->agg_stats.over_budget) {
        s->res->stopped_by_budget = 1;
        s->res->next_epsilon = s->agg_stats.next_epsilon;
        return SHOAL_OK;
    }
    if (!formed)
        return shoal_round_aggregation_failed(s->engine, s->now, round);
    return shoal_round_aggregated_mean(s->engine, s->now, round, s->agg_mean);
}

static shoal_err drain_actions(struct sim *s)
{
    shoal_round_action a;
    shoal_err err = SHOAL_OK;
    while (!err && shoal_round_next_action(s->engine, &a) == SHOAL_ROW) {
        switch (a.kind) {
        case SHOAL_ACTION_CONFIGURE:
            err = configure(s, &a);
            break;
        case SHOAL_ACTION_ABORT:
            job_remove(s, a.session);
            err =
                reschedule(s, session_device(a.session), a.session, a.retry_min_ms, a.retry_max_ms);
            break;
        case SHOAL_ACTION_AGGREGATE:
            err = aggregate_round(s, a.round);
            break;
        case SHOAL_ACTION_COMMIT:
            s->res->rounds_committed++;
            emit_row(s, &a, 0);
            if (draws_samples(s->cfg) && s->res->rounds_committed < s->cfg->rounds)
                err = draw_sample(s);
            break;
        case SHOAL_ACTION_ABANDONED:
            if (a.task == SHOAL_TASK_TRAIN) {
                if (s->agg)
                    shoal_sim_aggregator_forget(s->agg, a.round);
                s->res->rounds_abandoned++;
                emit_row(s, &a, 1);
                if (draws_samples(s->cfg))
                    err = draw_sample(s);
            }
            break;
        case SHOAL_ACTION_EVALUATED:
            s->fed_eval = a.stats.accuracy;
            break;
        }
    }
    return err;
}

/* ---- event handlers ----------------------------------------------------------------- */

static shoal_err on_checkin(struct sim *s, const struct event *e)
{
    struct device_traits tr;
    shoal_sim_device_traits(s->cfg, e->device, &tr);
    int64_t ws, we;
    shoal_sim_device_window(s->cfg, e->device, &tr, s->now, &ws, &we);
    if (ws > s->now && draws_samples(s->cfg))
        return SHOAL_OK; /* drawn but not available: it misses the round */
    if (ws > s->now) {
        /* Not available: come back during the next window, spread over
         * its first hour so devices do not arrive as one herd. */
        shoal_rng r;
        shoal_rng_derive(&r, s->cfg->seed ^ 0xA7A11ULL, e->seq);
        int64_t spread = we - ws < 3600000 ? we - ws : 3600000;
        return schedule(s, ws + (int64_t)(shoal_rng_double(&r) * (double)spread), EV_CHECKIN,
                        e->device, 0);
    }
    uint64_t session = next_session(e->device, &s->session_counter);
    shoal_checkin_result r;
    shoal_err err = shoal_round_checkin(s->engine, s->now, session, &r);
    if (err)
        return err;
    if (!r.accepted)
        return reschedule(s, e->device, session, r.retry_min_ms, r.retry_max_ms);
    return SHOAL_OK;
}

static shoal_err on_report(struct sim *s, const struct event *e)
{
    struct job *j = job_find(s, e->session, NULL);
    if (!j) /* aborted meanwhile */
        return SHOAL_OK;
    int open = shoal_round_session_open(s->engine, e->session);
    if (!j->done && open) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        shoal_err err = train_pending(s, j);
        s->train_s += wall_since(&t0);
        if (err)
            return err;
    }
    if (j->err && j->err != SHOAL_ECANCELED)
        return shoal_errinfo_set(s->ei, j->err, "device %u: local training failed: %s%s", j->device,
                                 shoal_strerror(j->err),
                                 j->err != SHOAL_ENUMERIC ? ""
                                 : s->cfg->robust.attackers > 0.0
                                     ? " (diverged: the attackers' updates poisoned the model; "
                                       "try a robust --aggregator, or lower --lr)"
                                     : " (diverged: lower --lr)");
    shoal_report rep;
    memset(&rep, 0, sizeof rep);
    if (!open) {
        /* Its round closed while it trained: the report is late whatever
         * it holds, so it was never computed. The upload still happens. */
        rep.example_count = 1;
        rep.delta = j->delta;
        s->res->bytes_up += j->task == SHOAL_TASK_TRAIN ? s->model_bytes : 64;
    } else if (j->task == SHOAL_TASK_TRAIN) {
        if (shoal_sim_device_attacks(s->cfg, j->device))
            shoal_sim_attack_update(s->cfg, j->session, j->delta, s->params);
        rep.example_count = j->train.example_count;
        rep.delta = j->delta;
        rep.loss_sum = j->train.mean_loss * (double)j->train.example_count;
        s->res->bytes_up += s->model_bytes;
    } else {
        rep.example_count = j->eval.count;
        rep.loss_sum = j->eval.loss_sum;
        rep.correct = j->eval.correct;
        s->res->bytes_up += 64;
    }
    shoal_report_ack ack;
    shoal_err err = shoal_round_report(s->engine, s->now, e->session, &rep, &ack);
    if (err)
        return err;
    if (ack.outcome == SHOAL_REPORT_ACCEPTED)
        s->res->reports++;
    if (ack.outcome == SHOAL_REPORT_ACCEPTED && s->agg && j->task == SHOAL_TASK_TRAIN &&
        (err = shoal_sim_aggregator_keep(s->agg, ack.aggregate, j->device, ack.fold_weight,
                                         j->delta)))
        return err;
    job_remove(s, e->session);
    return reschedule(s, e->device, e->session, ack.retry_min_ms, ack.retry_max_ms);
}

static shoal_err on_drop(struct sim *s, const struct event *e)
{
    if (!job_find(s, e->session, NULL))
        return SHOAL_OK;
    s->res->dropouts++;
    shoal_round_lost(s->engine, s->now, e->session);
    job_remove(s, e->session);
    return reschedule(s, e->device, e->session, s->cfg->round.retry_min_ms,
                      2 * s->cfg->round.retry_min_ms);
}

/* ---- run ------------------------------------------------------------------------------ */

static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->job_count; i++) {
        snapshot_release(s->jobs[i]->snap);
        shoal_free(s->jobs[i]->delta);
        shoal_free(s->jobs[i]);
    }
    shoal_free(s->jobs);
    for (size_t i = 0; i < s->free_delta_count; i++)
        shoal_free(s->free_deltas[i]);
    shoal_free(s->free_deltas);
    snapshot_release(s->latest);
    if (s->trainers)
        for (uint32_t t = 0; t < s->cfg->threads; t++)
            shoal_trainer_free(s->trainers[t]);
    shoal_free(s->trainers);
    shoal_trainer_free(s->test_trainer);
    shoal_free(s->events.v);
    shoal_round_engine_free(s->engine);
    shoal_sim_aggregator_free(s->agg);
    shoal_free(s->agg_mean);
    shoal_free(s->shuffled);
    shoal_partition_free(s->part);
    shoal_model_free(s->model);
}

shoal_err shoal_sim_run_on(const shoal_sim_config *cfg, const shoal_dataset *train,
                           const shoal_dataset *test, shoal_sim_round_fn on_round, void *ctx,
                           double target, shoal_sim_result *res, shoal_errinfo *ei)
{
    if (!cfg || !train || !test || !res)
        return SHOAL_EINVAL;
    shoal_err err = shoal_sim_config_check(cfg, ei);
    if (err)
        return err;
    if (train->features != test->features)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "train and test sets differ in shape");
    memset(res, 0, sizeof *res);
    res->rounds_to_target = -1;
    res->epsilon = res->epsilon_order = res->next_epsilon = res->rho = res->dp_clip = NAN;
    res->fed_eval_accuracy = NAN;
    struct sim s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.train = train;
    s.test = test;
    s.res = res;
    s.on_round = on_round;
    s.ctx = ctx;
    s.target = target;
    s.fed_eval = NAN;
    s.ei = ei;
    s.last_test_acc = NAN;
    s.last_test_loss = NAN;
    clock_gettime(CLOCK_MONOTONIC, &s.wall0);

    uint32_t classes = train->classes > test->classes ? train->classes : test->classes;
    if ((err = shoal_model_new(cfg->model, train->shape, classes, &s.model))) {
        shoal_errinfo_set(ei, err, "model %s does not fit inputs of %ux%ux%u",
                          shoal_model_arch_name(cfg->model), train->shape.c, train->shape.h,
                          train->shape.w);
        goto out;
    }
    s.params = shoal_model_param_count(s.model);
    s.model_bytes = (uint64_t)s.params * sizeof(float);
    s.macs = shoal_model_macs_per_example(s.model);
    if ((err = shoal_partition_new(&cfg->partition, train->y, train->count, train->classes,
                                   cfg->clients, cfg->seed, &s.part, ei)))
        goto out;
    float *init = shoal_mallocarray(s.params, sizeof(float));
    if (!init) {
        err = SHOAL_ENOMEM;
        goto out;
    }
    shoal_model_init_params(s.model, cfg->seed, init);
    shoal_round_config round_cfg = cfg->round;
    if (draws_samples(cfg)) {
        /* The sample is the round: take every drawn device, close when each
         * has reported or dropped, one round at a time. */
        round_cfg.goal_count = cfg->clients;
        round_cfg.over_selection = 1.0f;
        round_cfg.min_report_fraction = 0.5f / (float)cfg->clients;
        round_cfg.pipelining = 0;
    }
    if (shoal_sim_aggregates_itself(cfg)) {
        round_cfg.external_aggregation = 1;
        if ((err = shoal_sim_aggregator_new(cfg, s.params, &s.agg)) ||
            !(s.agg_mean = shoal_mallocarray(s.params, sizeof(float)))) {
            shoal_free(init);
            err = err ? err : SHOAL_ENOMEM;
            goto out;
        }
    }
    err = shoal_round_engine_new(&round_cfg, init, s.params, NULL, 0, 0, 0, &s.engine);
    shoal_free(init);
    if (err)
        goto out;
    err = SHOAL_ENOMEM;
    if (!(s.trainers = shoal_calloc(cfg->threads, sizeof *s.trainers)))
        goto out;
    for (uint32_t t = 0; t < cfg->threads; t++)
        if ((err = shoal_trainer_new(s.model, &cfg->train, &s.trainers[t])))
            goto out;
    shoal_train_config eval_cfg = cfg->train;
    eval_cfg.batch = 500;
    if ((err = shoal_trainer_new(s.model, &eval_cfg, &s.test_trainer)))
        goto out;

    /* Every device's first check-in: somewhere in its first window. */
    if (cfg->sampling == SHOAL_SIM_SAMPLING_SHUFFLE &&
        !(s.shuffled = shoal_mallocarray(cfg->clients, sizeof *s.shuffled))) {
        err = SHOAL_ENOMEM;
        goto out;
    }
    if (draws_samples(cfg) && (err = draw_sample(&s)))
        goto out;
    for (uint32_t d = 0; d < cfg->clients && !draws_samples(cfg); d++) {
        struct device_traits tr;
        shoal_sim_device_traits(cfg, d, &tr);
        int64_t ws, we;
        shoal_sim_device_window(cfg, d, &tr, 0, &ws, &we);
        shoal_rng r;
        shoal_rng_derive(&r, cfg->seed ^ 0xF1257ULL, d);
        int64_t spread =
            we - ws < cfg->round.selection_window_ms ? we - ws : cfg->round.selection_window_ms;
        if ((err = schedule(&s, ws + (int64_t)(shoal_rng_double(&r) * (double)spread), EV_CHECKIN,
                            d, 0)))
            goto out;
    }

    const int64_t horizon = (int64_t)(cfg->max_sim_hours * 3600.0 * 1000.0);
    err = SHOAL_OK;
    while (!err && res->rounds_committed < cfg->rounds && !res->stopped_by_budget) {
        int64_t timer = shoal_round_next_timer(s.engine);
        if (s.events.n == 0 && timer == INT64_MAX)
            break;
        if (timer != INT64_MAX && (s.events.n == 0 || timer <= s.events.v[0].t)) {
            s.now = timer > s.now ? timer : s.now;
            if (s.now > horizon)
                break;
            shoal_round_tick(s.engine, s.now);
            err = drain_actions(&s);
            continue;
        }
        struct event e = heap_pop(&s.events);
        s.now = e.t > s.now ? e.t : s.now;
        if (s.now > horizon)
            break;
        switch (e.kind) {
        case EV_CHECKIN:
            err = on_checkin(&s, &e);
            break;
        case EV_REPORT:
            err = on_report(&s, &e);
            break;
        case EV_DROP:
            err = on_drop(&s, &e);
            break;
        }
        if (!err)
            err = drain_actions(&s);
    }
    shoal_sim_aggregator_epsilon(s.agg, &res->epsilon, &res->epsilon_order);
    res->rho = shoal_sim_aggregator_rho(s.agg, &res->ftrl_participations);
    res->dp_clip = shoal_sim_aggregator_clip(s.agg);
    if (!err && res->rounds_committed < cfg->rounds && !res->stopped_by_budget)
        err = shoal_errinfo_set(ei, SHOAL_ETIMEDOUT,
                                "%s: only %llu of %u rounds committed within %.0f simulated "
                                "hours: devices are rarely available, drop out too often or miss "
                                "the deadline (check --avail-hours, --dropout, --deadline, "
                                "--clients-per-round, or raise --max-sim-hours)",
                                res->rounds_committed ? "stopped early" : "no round committed",
                                (unsigned long long)res->rounds_committed, cfg->rounds,
                                cfg->max_sim_hours);
    if (err && err != SHOAL_ETIMEDOUT && ei && !ei->msg[0])
        shoal_errinfo_set(ei, err, "simulation failed: %s", shoal_strerror(err));
    if (!err) {
        central_test(&s);
        res->final_test_accuracy = s.last_test_acc;
        res->final_test_loss = s.last_test_loss;
        res->fed_eval_accuracy = s.fed_eval;
    }
out:
    res->sim_time_s = (double)s.now / 1000.0;
    res->wall_s = wall_since(&s.wall0);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        res->peak_rss_bytes = (size_t)ru.ru_maxrss * 1024;
    sim_free(&s);
    return err;
}

shoal_err shoal_sim_run(const shoal_sim_config *cfg, shoal_sim_round_fn on_round, void *ctx,
                        double target, shoal_sim_result *res, shoal_errinfo *ei)
{
    if (!cfg || !res)
        return SHOAL_EINVAL;
    shoal_err err = shoal_sim_config_check(cfg, ei);
    if (err)
        return err;
    shoal_dataset *train = NULL, *test = NULL;
    if ((err = shoal_dataset_load_fashion_mnist(cfg->data_dir, 1, &train, ei)) ||
        (err = shoal_dataset_load_fashion_mnist(cfg->data_dir, 0, &test, ei)))
        goto out;
    float mean, sd;
    shoal_dataset_stats(train, &mean, &sd);
    if ((err = shoal_dataset_normalize(train, mean, sd)) ||
        (err = shoal_dataset_normalize(test, mean, sd)))
        goto out;
    err = shoal_sim_run_on(cfg, train, test, on_round, ctx, target, res, ei);
out:
    shoal_dataset_free(train);
    shoal_dataset_free(test);
    return err;
}
