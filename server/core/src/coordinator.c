/* The coordinator: one actor per population that owns the round engine,
 * the global model and the population's connection to the state database
 * (docs/architecture.md). Selectors send it check-ins, deliveries, reports and
 * losses; it answers them and turns the engine's actions into messages to
 * selectors and commits to SQLite. */
#include <math.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coordinator_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"

#define LOG_COMPONENT "coordinator"

/* How long a shutdown waits for the commit of a round whose reports are
 * all in (the aggregators' partial sums in flight). */
#define SHUTDOWN_COMMIT_WAIT_MS 10000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static void publish_latest(population *pop, model_blob *blob)
{
    shoal_model_blob_ref(blob);
    pthread_mutex_lock(&pop->latest_lock);
    model_blob *old = pop->latest;
    pop->latest = blob;
    pthread_mutex_unlock(&pop->latest_lock);
    shoal_model_blob_unref(old);
    atomic_store(&pop->metrics.model_version, blob->version);
}

shoal_err shoal_coordinator_new(shoal_server *srv, population *pop, shoal_state *state,
                                coordinator **out, shoal_errinfo *ei)
{
    *out = NULL;
    const shoal_population_config *pc = pop->cfg;
    coordinator *co = shoal_calloc(1, sizeof *co);
    if (!co)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
    co->srv = srv;
    co->pop = pop;
    co->state = state;
    shoal_u64map_init(&co->routes);
    shoal_u64map_init(&co->detached);

    shoal_shape shape = {pc->input_shape[0], pc->input_rank > 1 ? pc->input_shape[1] : 1,
                         pc->input_rank > 2 ? pc->input_shape[2] : 1};
    shoal_model *model = NULL;
    shoal_err err = shoal_model_new(pc->arch, shape, pc->classes, &model);
    if (err) {
        shoal_free(co);
        return shoal_errinfo_set(ei, err, "population '%s': cannot build model %s: %s", pc->name,
                                 shoal_model_arch_name(pc->arch), shoal_strerror(err));
    }
    size_t count = shoal_model_param_count(model);
    pop->param_count = count;
    char desc[128];
    snprintf(desc, sizeof desc, "%s %ux%ux%u %u", shoal_model_arch_name(pc->arch), shape.c, shape.h,
             shape.w, pc->classes);

    err = shoal_state_population(state, pc->name, desc, count, &co->pop_id, ei);
    if (err)
        goto fail_model;
    uint64_t interrupted = 0;
    err = shoal_state_recover(state, co->pop_id, &interrupted, ei);
    if (err)
        goto fail_model;
    if (interrupted)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                  "population '%s': %llu round(s) interrupted by the last shutdown or crash; "
                  "restarting from the last committed checkpoint",
                  pc->name, (unsigned long long)interrupted);
    err = shoal_state_last_round(state, co->pop_id, &co->round_offset, ei);
    if (err)
        goto fail_model;

    shoal_checkpoint cp;
    memset(&cp, 0, sizeof cp);
    err = shoal_state_latest(state, co->pop_id, &cp, ei);
    if (err == SHOAL_ENOTFOUND) {
        cp.params = shoal_mallocarray(count, sizeof(float));
        if (!cp.params) {
            err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
            goto fail_model;
        }
        cp.param_count = count;
        shoal_model_init_params(model, pc->init_seed, cp.params);
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': no checkpoint yet; model %s initialised from seed %llu",
                  pc->name, desc, (unsigned long long)pc->init_seed);
    } else if (err) {
        goto fail_model;
    } else {
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': loaded checkpoint version %llu (round %llu)", pc->name,
                  (unsigned long long)cp.version, (unsigned long long)cp.round);
    }
    shoal_model_free(model);
    model = NULL;

    /* Synchronous rounds fold on the aggregators; FedBuff's small buffers
     * fold in the engine. */
    shoal_round_config rc = pc->round;
    rc.external_aggregation = rc.mode == SHOAL_ROUND_SYNC;
    /* The stored strategy state fits only the strategy that wrote it: a
     * config that changed the strategy starts it afresh. */
    size_t need_state = 0;
    {
        shoal_server_optim *probe = NULL;
        if (shoal_server_optim_new(&rc.server_optim, count, &probe) == SHOAL_OK)
            need_state = shoal_server_optim_state_count(probe);
        shoal_server_optim_free(probe);
    }
    const float *opt_state = cp.server_state;
    uint64_t steps = cp.server_steps;
    if (cp.param_count && cp.param_count != count) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "population '%s': its checkpoint has %zu parameters, the model "
                                "%zu; a changed model needs a new population name",
                                pc->name, cp.param_count, count);
        shoal_checkpoint_fini(&cp);
        goto fail;
    }
    if (cp.state_count != need_state) {
        if (cp.state_count || steps)
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': the stored strategy state (%zu values) does not fit "
                      "strategy %s (%zu values); it starts afresh from the stored model",
                      pc->name, cp.state_count, shoal_server_optim_kind_name(rc.server_optim.kind),
                      need_state);
        opt_state = NULL;
        steps = 0;
    }
    err = shoal_round_engine_new(&rc, cp.params, count, need_state ? opt_state : NULL, steps,
                                 cp.version, shoal_actor_now_ms(), &co->engine);
    uint64_t version = cp.version;
    shoal_checkpoint_fini(&cp);
    if (err) {
        err = shoal_errinfo_set(ei, err, "population '%s': cannot start its round engine: %s",
                                pc->name, shoal_strerror(err));
        goto fail;
    }
    co->model = shoal_model_blob_new(shoal_round_params(co->engine), count, version, pop->name_hash,
                                     &srv->server_codec);
    if (!co->model) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
        goto fail;
    }
    publish_latest(pop, co->model);
    if ((err = shoal_coordinator_dp_open(co, version, ei)))
        goto fail;
    if (pc->secagg.enabled && shoal_sa_rounds_new(srv, pop, &co->sa) != SHOAL_OK) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
        goto fail;
    }
    *out = co;
    return SHOAL_OK;

fail_model:
    shoal_model_free(model);
fail:
    shoal_coordinator_dp_free(co);
    shoal_model_blob_unref(co->model);
    shoal_round_engine_free(co->engine);
    shoal_u64map_fini(&co->routes);
    shoal_free(co);
    return err;
}

void shoal_coordinator_free(coordinator *co)
{
    if (!co)
        return;
    shoal_u64map_fini_with(&co->routes, shoal_free);
    shoal_u64map_fini_with(&co->detached, shoal_resume_msg_free);
    shoal_free(co->agg_sum);
    shoal_kept_clear(&co->agg_kept);
    shoal_sa_rounds_free(co->sa);
    shoal_coordinator_dp_free(co);
    shoal_model_blob_unref(co->model);
    shoal_round_engine_free(co->engine);
    shoal_free(co);
}

shoal_state *shoal_coordinator_state(const coordinator *co)
{
    return co ? co->state : NULL;
}

/* ---- talking to selectors ----------------------------------------------------- */

static void to_selector(coordinator *co, uint32_t shard, int type, shoal_conn_id conn,
                        void *payload, void (*free_payload)(void *))
{
    shoal_msg m = {.type = type, .a = conn, .payload = payload, .free_payload = free_payload};
    /* Replies bypass the selector's bound: dropping one would strand a
     * device that is waiting for it. */
    if (shoal_actor_send_unbounded(co->srv->selector_actors[shard], &m) != SHOAL_OK) {
        if (free_payload)
            free_payload(payload);
        else
            shoal_free(payload);
    }
}

static void send_reject(coordinator *co, uint32_t shard, shoal_conn_id conn, int reason,
                        int64_t rmin, int64_t rmax, const char *detail)
{
    reject_msg *r = shoal_calloc(1, sizeof *r);
    if (!r)
        return;
    r->reason = reason;
    r->retry_min_ms = rmin;
    r->retry_max_ms = rmax;
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    to_selector(co, shard, MSG_SEL_REJECT, conn, r, NULL);
}

static void send_ack(coordinator *co, uint32_t shard, shoal_conn_id conn, int status, int reason,
                     int64_t rmin, int64_t rmax, const char *detail)
{
    ack_msg *a = shoal_calloc(1, sizeof *a);
    if (!a)
        return;
    a->status = status;
    a->reason = reason;
    a->retry_min_ms = rmin;
    a->retry_max_ms = rmax;
    snprintf(a->detail, sizeof a->detail, "%s", detail ? detail : "");
    to_selector(co, shard, MSG_SEL_ACK, conn, a, NULL);
}

void shoal_coordinator_ack(coordinator *co, uint32_t shard, shoal_conn_id conn, int status,
                           int reason, int64_t rmin, int64_t rmax, const char *detail)
{
    send_ack(co, shard, conn, status, reason, rmin, rmax, detail);
}

/* ---- the engine's actions ----------------------------------------------------- */

/* The round engine runs on the actors' monotonic clock; the state database
 * records Unix ms, so that rounds order by time across restarts and
 * reboots. 0 (not known) stays 0. */
static int64_t unix_ms_of(int64_t engine_ms)
{
    return engine_ms > 0 ? wall_ms() - (shoal_actor_now_ms() - engine_ms) : 0;
}

static shoal_round_record record_of(const coordinator *co, const shoal_round_action *a, int task)
{
    shoal_round_record rec;
    memset(&rec, 0, sizeof rec);
    rec.round = co->round_offset + a->round;
    rec.task = task;
    rec.started_ms = unix_ms_of(a->stats.started_ms);
    rec.ended_ms = unix_ms_of(a->stats.ended_ms);
    rec.selected = a->stats.selected;
    rec.reported = a->stats.reported;
    rec.dropped = a->stats.dropped;
    rec.late = a->stats.late;
    rec.examples = a->stats.examples;
    rec.loss = a->stats.reported ? a->stats.loss : NAN;
    rec.accuracy = task == 1 ? a->stats.accuracy : NAN;
    return rec;
}

/* A commit that did not reach the state database halts the population
 * (fail-stop): the model in memory is ahead of what is durable, so it is
 * not published, no device is given work that a restart would lose, and
 * /healthz says so until an operator has fixed the cause and restarted the
 * server, which resumes from the last checkpoint on disk. */
static void halt(coordinator *co, uint64_t version, const char *why)
{
    population *pop = co->pop;
    if (atomic_load(&pop->halted))
        return;
    snprintf(pop->halt_msg, sizeof pop->halt_msg,
             "committing version %llu to the state database failed (%.200s); the last durable "
             "version is %llu",
             (unsigned long long)version, why,
             (unsigned long long)atomic_load(&pop->metrics.model_version));
    atomic_store(&pop->halted, 1);
    SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
              "population '%s' halted: %s. It takes no more devices: fix the cause (disk "
              "space, permissions, another process holding the file) and restart shoal-server, "
              "which resumes from the last durable version",
              pop->cfg->name, pop->halt_msg);
}

static void commit(coordinator *co, const shoal_round_action *a)
{
    population *pop = co->pop;
    if (atomic_load(&pop->halted))
        return; /* nothing more is made durable or published until a restart */
    size_t count = pop->param_count;
    const shoal_server_optim *opt = shoal_round_server_optim(co->engine);
    size_t state_count = shoal_server_optim_state_count(opt);
    float *server_state = NULL;
    uint64_t steps = 0;
    if (state_count) {
        server_state = shoal_mallocarray(state_count, sizeof(float));
        if (!server_state) {
            SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                      "population '%s': out of memory saving version %llu; it stays in memory only",
                      pop->cfg->name, (unsigned long long)a->version);
            return;
        }
    }
    shoal_server_optim_state_get(opt, server_state, &steps);

    shoal_checkpoint cp = {
        .version = a->version,
        .round = co->round_offset + a->round,
        .committed_ms = wall_ms(),
        .param_count = count,
        .params = (float *)shoal_round_params(co->engine),
        .state_count = state_count,
        .server_state = server_state,
        .server_steps = steps,
    };
    shoal_round_record rec = record_of(co, a, 0);
    shoal_errinfo ei = {0};
    shoal_dp_record dp;
    shoal_err err = shoal_state_commit_dp(co->state, co->pop_id, &cp, &rec,
                                          shoal_coordinator_dp_prepare(co, &dp), &ei);
    shoal_free(server_state);
    if (err) {
        halt(co, a->version, ei.msg);
        return;
    } else if (pop->cfg->round.mode == SHOAL_ROUND_SYNC || a->version % 10 == 0) {
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': round %llu committed as version %llu: %u reports "
                  "(%u selected, %u dropped, %u late), %llu examples, train loss %.4f",
                  pop->cfg->name, (unsigned long long)rec.round, (unsigned long long)a->version,
                  a->stats.reported, a->stats.selected, a->stats.dropped, a->stats.late,
                  (unsigned long long)a->stats.examples, a->stats.loss);
    }
    if (!err && pop->cfg->round.mode == SHOAL_ROUND_SYNC)
        co->last_finished = a->round;
    shoal_coordinator_dp_committed(co, rec.round, a->version);
    uint32_t keep = co->srv->cfg->keep_checkpoints;
    if (!err && keep && shoal_state_prune(co->state, co->pop_id, keep, &ei) != SHOAL_OK)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT, "population '%s': pruning checkpoints: %s",
                  pop->cfg->name, ei.msg);

    model_blob *blob = shoal_model_blob_new(shoal_round_params(co->engine), count, a->version,
                                            pop->name_hash, &co->srv->server_codec);
    if (blob) {
        shoal_model_blob_unref(co->model);
        co->model = blob;
        publish_latest(pop, blob);
    } else {
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT,
                  "population '%s': out of memory encoding version %llu", pop->cfg->name,
                  (unsigned long long)a->version);
    }
    atomic_fetch_add(&pop->metrics.rounds_committed, 1);
#if defined(__GLIBC__)
    /* A round's uploads came and went in large buffers; hand the freed
     * memory back rather than keep the round's peak for good. */
    malloc_trim(0);
#endif
}

static void round_finished(coordinator *co, const shoal_round_action *a, int task,
                           const char *status)
{
    shoal_round_record rec = record_of(co, a, task);
    shoal_errinfo ei = {0};
    if (shoal_state_round_finished(co->state, co->pop_id, &rec, status, &ei) != SHOAL_OK)
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT, "population '%s': recording round %llu: %s",
                  co->pop->cfg->name, (unsigned long long)rec.round, ei.msg);
}

static void maybe_round_started(coordinator *co, uint64_t round, shoal_task_kind task)
{
    if (task != SHOAL_TASK_TRAIN || co->pop->cfg->round.mode != SHOAL_ROUND_SYNC ||
        round <= co->last_started)
        return;
    co->last_started = round;
    atomic_fetch_add(&co->pop->metrics.rounds_started, 1);
    shoal_errinfo ei = {0};
    if (shoal_state_round_started(co->state, co->pop_id, co->round_offset + round, 0, wall_ms(),
                                  &ei) != SHOAL_OK)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT, "population '%s': recording round start: %s",
                  co->pop->cfg->name, ei.msg);
}

static void drain(coordinator *co)
{
    shoal_round_action a;
    while (shoal_round_next_action(co->engine, &a) == SHOAL_ROW) {
        switch (a.kind) {
        case SHOAL_ACTION_CONFIGURE: {
            route *r = shoal_u64map_get(&co->routes, a.session);
            if (!r)
                break;
            configure_msg *cm = shoal_calloc(1, sizeof *cm);
            if (!cm) {
                shoal_round_lost(co->engine, shoal_actor_now_ms(), a.session);
                break;
            }
            cm->session = a.session;
            shoal_session_bytes_fill(cm->session_bytes, a.session);
            cm->task = a.task;
            cm->round = co->round_offset + a.round;
            cm->model = shoal_model_blob_ref(co->model);
            cm->retry_min_ms = co->pop->cfg->round.retry_min_ms;
            cm->retry_max_ms = co->pop->cfg->round.retry_max_ms;
            if (a.version != co->model->version)
                SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT,
                          "population '%s': configure asks for version %llu, sending %llu",
                          co->pop->cfg->name, (unsigned long long)a.version,
                          (unsigned long long)co->model->version);
            maybe_round_started(co, a.round, a.task);
            if (co->sa && a.task == SHOAL_TASK_TRAIN &&
                shoal_sa_rounds_assign(co->sa, a.round, a.session, shoal_actor_now_ms(), &cm->sa) !=
                    SHOAL_OK) {
                /* No group for it: it is not configured, and its retry
                 * window brings it back for a later round. */
                shoal_configure_msg_free(cm);
                shoal_round_lost(co->engine, shoal_actor_now_ms(), a.session);
                shoal_free(shoal_u64map_take(&co->routes, a.session));
                send_reject(co, r->shard, r->conn, SHOAL__REASON__REASON_ROUND_FULL,
                            co->pop->cfg->round.retry_min_ms, co->pop->cfg->round.retry_max_ms,
                            "the round's secure-aggregation groups are full");
                break;
            }
            cm->secagg = co->sa && a.task == SHOAL_TASK_TRAIN;
            if (a.task == SHOAL_TASK_TRAIN)
                cm->clip = shoal_coordinator_dp_round_clip(co, a.round);
            to_selector(co, r->shard, MSG_SEL_CONFIGURE, r->conn, cm, shoal_configure_msg_free);
            break;
        }
        case SHOAL_ACTION_ABORT: {
            /* The session's round ended without its report: it counts as
             * dropped, whether it was still connected or detached. */
            resume_msg *det = shoal_u64map_take(&co->detached, a.session);
            route *r = shoal_u64map_take(&co->routes, a.session);
            if (det || r)
                atomic_fetch_add(&co->pop->metrics.dropped, 1);
            shoal_resume_msg_free(det);
            if (!r)
                break;
            reject_msg *rm = shoal_calloc(1, sizeof *rm);
            if (rm) {
                rm->reason = a.cause == SHOAL_ABORT_NO_TASK ? SHOAL__REASON__REASON_NO_TASK
                                                            : SHOAL__REASON__REASON_DEADLINE_PASSED;
                rm->retry_min_ms = a.retry_min_ms;
                rm->retry_max_ms = a.retry_max_ms;
                snprintf(rm->detail, sizeof rm->detail, "%s", a.reason ? a.reason : "aborted");
                to_selector(co, r->shard, MSG_SEL_ABORT, r->conn, rm, NULL);
            }
            shoal_free(r);
            break;
        }
        case SHOAL_ACTION_AGGREGATE:
            if (co->sa)
                shoal_coordinator_sa_aggregate(co, &a);
            else
                shoal_coordinator_collect_start(co, &a);
            break;
        case SHOAL_ACTION_COMMIT:
            commit(co, &a);
            break;
        case SHOAL_ACTION_ABANDONED: {
            int eval = a.task == SHOAL_TASK_EVAL;
            if (!eval)
                atomic_fetch_add(&co->pop->metrics.rounds_abandoned, 1);
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': round %llu abandoned (%s): %u of %u selected reported",
                      co->pop->cfg->name, (unsigned long long)(co->round_offset + a.round),
                      a.reason ? a.reason : "too few reports", a.stats.reported, a.stats.selected);
            round_finished(co, &a, eval, "abandoned");
            if (!eval && co->sa)
                shoal_sa_rounds_forget(co->sa, a.round);
            if (!eval && co->pop->cfg->round.mode == SHOAL_ROUND_SYNC)
                co->last_finished = a.round;
            break;
        }
        case SHOAL_ACTION_EVALUATED:
            atomic_store(&co->pop->metrics.eval_loss_bits, double_bits(a.stats.loss));
            atomic_store(&co->pop->metrics.eval_accuracy_bits, double_bits(a.stats.accuracy));
            atomic_fetch_add(&co->pop->metrics.evaluations, 1);
            SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                      "population '%s': federated evaluation of version %llu: loss %.4f, "
                      "accuracy %.4f over %llu examples on %u devices",
                      co->pop->cfg->name, (unsigned long long)a.version, a.stats.loss,
                      a.stats.accuracy, (unsigned long long)a.stats.examples, a.stats.reported);
            round_finished(co, &a, 1, "evaluated");
            break;
        }
    }
}

static void rearm(coordinator *co)
{
    if (co->shut_down)
        return;
    int64_t due = shoal_round_next_timer(co->engine);
    if (due == co->timer_due)
        return;
    if (co->timer)
        shoal_actor_timer_cancel(shoal_actor_system_of(co->pop->coord_actor), co->timer);
    co->timer = 0;
    co->timer_due = due;
    if (due == INT64_MAX)
        return;
    shoal_msg m = {.type = MSG_CO_TICK, .a = ++co->timer_generation};
    if (shoal_actor_send_after(co->pop->coord_actor, due - shoal_actor_now_ms(), &m, &co->timer) !=
        SHOAL_OK)
        co->timer_due = INT64_MIN; /* try again on the next event */
}

shoal_err shoal_coordinator_start(coordinator *co)
{
    co->timer_due = INT64_MIN;
    shoal_msg m = {.type = MSG_CO_TICK, .a = 0};
    return shoal_actor_send_after(co->pop->coord_actor, 0, &m, NULL);
}

/* ---- events --------------------------------------------------------------------- */

/* The wire reason for the engine's refusal. */
static int reason_of_refusal(shoal_refusal refusal)
{
    switch (refusal) {
    case SHOAL_REFUSAL_MALFORMED:
        return SHOAL__REASON__REASON_MALFORMED;
    case SHOAL_REFUSAL_NON_FINITE:
        return SHOAL__REASON__REASON_NON_FINITE;
    case SHOAL_REFUSAL_TOO_STALE:
    case SHOAL_REFUSAL_LATE:
        return SHOAL__REASON__REASON_DEADLINE_PASSED;
    default:
        return SHOAL__REASON__REASON_NOT_SELECTED;
    }
}

/* Session ids are random (shoal_session_id_next): one already live here
 * is drawn again rather than confused with the other session. (The
 * selector learns the new id with the configuration.) */
static shoal_session_id unused_session(const coordinator *co, shoal_session_id session)
{
    while (shoal_u64map_get(&co->routes, session) || shoal_u64map_get(&co->detached, session) ||
           shoal_round_session_known(co->engine, session))
        session = shoal_session_id_next();
    return session;
}

static void on_checkin(coordinator *co, shoal_session_id session, const checkin_msg *cm)
{
    const shoal_round_config *rc = &co->pop->cfg->round;
    session = unused_session(co, session);
    atomic_fetch_add(&co->pop->metrics.checked_in, 1);
    if (co->shut_down) {
        send_reject(co, cm->shard, cm->conn, SHOAL__REASON__REASON_SHUTTING_DOWN, rc->retry_min_ms,
                    rc->retry_max_ms, "the server is shutting down");
        return;
    }
    if (atomic_load(&co->pop->halted)) {
        atomic_fetch_add(&co->pop->metrics.rejected, 1);
        send_reject(co, cm->shard, cm->conn, SHOAL__REASON__REASON_INTERNAL, rc->retry_max_ms,
                    rc->retry_max_ms, "the population is halted: its state database failed");
        return;
    }
    if (shoal_coordinator_dp_exhausted(co)) {
        char detail[160];
        shoal_coordinator_dp_refusal(co, detail, sizeof detail);
        atomic_fetch_add(&co->pop->metrics.rejected, 1);
        send_reject(co, cm->shard, cm->conn, SHOAL__REASON__REASON_NO_TASK, rc->retry_max_ms,
                    rc->retry_max_ms, detail);
        return;
    }
    route *r = shoal_malloc(sizeof *r);
    if (!r || shoal_u64map_put(&co->routes, session, r) != SHOAL_OK) {
        shoal_free(r);
        send_reject(co, cm->shard, cm->conn, SHOAL__REASON__REASON_INTERNAL, rc->retry_min_ms,
                    rc->retry_max_ms, "server out of memory");
        return;
    }
    r->conn = cm->conn;
    r->shard = cm->shard;
    shoal_checkin_result res;
    shoal_err err = shoal_round_checkin(co->engine, shoal_actor_now_ms(), session, &res);
    if (err || !res.accepted) {
        shoal_free(shoal_u64map_take(&co->routes, session));
        atomic_fetch_add(&co->pop->metrics.rejected, 1);
        int64_t rmin = err ? rc->retry_min_ms : res.retry_min_ms;
        int64_t rmax = err ? rc->retry_max_ms : res.retry_max_ms;
        send_reject(co, cm->shard, cm->conn,
                    err ? SHOAL__REASON__REASON_INTERNAL : SHOAL__REASON__REASON_ROUND_FULL, rmin,
                    rmax, err ? "round engine error" : "no device needed now; retry in the window");
        return;
    }
    atomic_fetch_add(&co->pop->metrics.accepted, 1);
    maybe_round_started(co, res.round, res.task);
}

static void on_report(coordinator *co, report_msg *rm)
{
    const shoal_round_config *rc = &co->pop->cfg->round;
    route *r = shoal_u64map_get(&co->routes, rm->session);
    if (!r || r->conn != rm->conn) {
        send_ack(co, rm->shard, rm->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED,
                 SHOAL__REASON__REASON_NOT_SELECTED, rc->retry_min_ms, rc->retry_max_ms, NULL);
        return;
    }
    shoal_free(shoal_u64map_take(&co->routes, rm->session));
    int64_t now = shoal_actor_now_ms();
    if (rm->refused) {
        shoal_round_lost(co->engine, now, rm->session);
        atomic_fetch_add(&co->pop->metrics.dropped, 1);
        send_ack(co, rm->shard, rm->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED, rm->refused,
                 rc->retry_min_ms, rc->retry_max_ms, rm->detail[0] ? rm->detail : NULL);
        return;
    }
    if (rm->outcome != SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED) {
        /* Interrupted, insufficient data or an error on the device: no
         * update, not a failure of the protocol. */
        shoal_round_lost(co->engine, now, rm->session);
        atomic_fetch_add(&co->pop->metrics.dropped, 1);
        send_ack(co, rm->shard, rm->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, 0,
                 rc->retry_min_ms, rc->retry_max_ms, NULL);
        return;
    }
    int external = co->pop->cfg->round.mode == SHOAL_ROUND_SYNC;
    /* FedBuff folds in the engine, which takes floats: decoded here (the
     * selector scanned the bytes) and scaled by the selector's clip. */
    float *delta = NULL;
    if (!external && rm->update &&
        !(delta = shoal_upload_floats(rm->update, co->pop->param_count, rm->scale))) {
        send_ack(co, rm->shard, rm->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED,
                 SHOAL__REASON__REASON_INTERNAL, rc->retry_min_ms, rc->retry_max_ms,
                 "server out of memory");
        return;
    }
    shoal_report rep = {
        .example_count = rm->example_count,
        .delta = delta,
        .loss_sum = isfinite(rm->loss) ? rm->loss * (double)rm->example_count : 0.0,
        .correct = isfinite(rm->accuracy)
                       ? (uint64_t)llround(rm->accuracy * (double)rm->example_count)
                       : 0,
    };
    shoal_report_ack ack;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    shoal_err err = shoal_round_report(co->engine, now, rm->session, &rep, &ack);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    shoal_free(delta);
    if (!external) /* FedBuff: the engine folded it */
        atomic_fetch_add(
            &co->pop->metrics.aggregation_ns,
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
    if (err) {
        send_ack(co, rm->shard, rm->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED,
                 SHOAL__REASON__REASON_INTERNAL, rc->retry_min_ms, rc->retry_max_ms,
                 shoal_strerror(err));
        return;
    }
    int status = SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, reason = 0;
    if (ack.outcome == SHOAL_REPORT_ACCEPTED) {
        atomic_fetch_add(&co->pop->metrics.reported, 1);
        if (external && rm->update)
            shoal_coordinator_dp_count(co, ack.aggregate, 1, rm->unclipped == 1);
        if (external && rm->update) {
            /* Hand the update to an aggregator; it is folded there, before
             * this round's sum is collected (messages from here arrive in
             * order). */
            shoal_server *srv = co->srv;
            fold_msg *f = shoal_malloc(sizeof *f);
            shoal_msg m = {.type = MSG_AGG_FOLD, .payload = f, .free_payload = shoal_fold_msg_free};
            if (f) {
                *f = (fold_msg){.population = (uint32_t)co->pop->index,
                                .round = ack.aggregate,
                                .weight = ack.fold_weight,
                                .scale = rm->scale,
                                .param_count = co->pop->param_count,
                                .update = rm->update,
                                .keep = shoal_kept_needed(&co->pop->cfg->aggregation)};
                rm->update = NULL;
            }
            if (!f ||
                shoal_actor_send_unbounded(
                    srv->aggregator_actors[rm->session % srv->aggregator_count], &m) != SHOAL_OK) {
                shoal_fold_msg_free(f);
                if (co->unsent_round != ack.aggregate) {
                    co->unsent_round = ack.aggregate;
                    co->unsent = 0;
                }
                co->unsent++;
            }
        }
    } else if (ack.outcome == SHOAL_REPORT_LATE) {
        status = SHOAL__REPORT_STATUS__REPORT_STATUS_LATE;
    } else {
        status = SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED;
        reason = reason_of_refusal(ack.refusal);
    }
    send_ack(co, rm->shard, rm->conn, status, reason, ack.retry_min_ms, ack.retry_max_ms,
             ack.reason);
}

static int same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    /* Constant time: the random half of a session id is a secret. */
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (uint8_t)(a[i] ^ b[i]);
    return diff == 0;
}

static void on_detach(coordinator *co, shoal_msg *msg)
{
    resume_msg *rm = msg->payload;
    route *r = shoal_u64map_get(&co->routes, rm->session);
    if (!r || r->conn != rm->conn)
        return; /* not this connection's session (any more) */
    shoal_free(shoal_u64map_take(&co->routes, rm->session));
    int64_t now = shoal_actor_now_ms();
    if (!shoal_round_session_open(co->engine, rm->session) ||
        shoal_u64map_put(&co->detached, rm->session, rm) != SHOAL_OK) {
        shoal_round_lost(co->engine, now, rm->session);
        atomic_fetch_add(&co->pop->metrics.dropped, 1);
        return;
    }
    msg->payload = NULL; /* kept in co->detached */
    shoal_msg ex = {.type = MSG_CO_EXPIRE, .a = rm->session};
    if (shoal_actor_send_after(co->pop->coord_actor, co->pop->cfg->resume_grace_ms, &ex, NULL) !=
        SHOAL_OK) {
        shoal_resume_msg_free(shoal_u64map_take(&co->detached, rm->session));
        shoal_round_lost(co->engine, now, rm->session);
        atomic_fetch_add(&co->pop->metrics.dropped, 1);
    }
}

static void on_expire(coordinator *co, shoal_session_id session)
{
    resume_msg *rm = shoal_u64map_take(&co->detached, session);
    if (!rm)
        return; /* resumed, reported or aborted meanwhile */
    shoal_resume_msg_free(rm);
    shoal_round_lost(co->engine, shoal_actor_now_ms(), session);
    atomic_fetch_add(&co->pop->metrics.dropped, 1);
}

static void on_resume(coordinator *co, const resume_msg *req)
{
    resume_msg *d =
        atomic_load(&co->pop->halted) ? NULL : shoal_u64map_get(&co->detached, req->session);
    route *r = NULL;
    if (d && same_bytes(d->session_bytes, req->session_bytes, SESSION_ID_LEN) &&
        strcmp(d->identity, req->identity) != 0) {
        /* The session's id but another device's token: the session stays
         * detached for its own device. */
        shoal_refusals_count(co->srv->refusals, co->pop->index, SHOAL_REFUSAL_RESUME_IDENTITY);
        if (shoal_refusals_may_log(co->srv->refusals, SHOAL_REFUSAL_RESUME_IDENTITY,
                                   shoal_actor_now_ms()))
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': device '%s' asked to resume a session opened by another "
                      "device; answered as a new check-in",
                      co->pop->cfg->name, req->identity);
        d = NULL;
    }
    if (d && same_bytes(d->session_bytes, req->session_bytes, SESSION_ID_LEN) &&
        shoal_round_session_open(co->engine, req->session) &&
        (r = shoal_malloc(sizeof *r)) != NULL &&
        shoal_u64map_put(&co->routes, req->session, r) == SHOAL_OK) {
        shoal_u64map_take(&co->detached, req->session);
        r->conn = req->conn;
        r->shard = req->shard;
        d->retry_min_ms = co->pop->cfg->round.retry_min_ms;
        d->retry_max_ms = co->pop->cfg->round.retry_max_ms;
        to_selector(co, req->shard, MSG_SEL_RESUMED, req->conn, d, shoal_resume_msg_free);
        return;
    }
    shoal_free(r);
    /* Not resumable (unknown, expired, closed round, wrong id): answer as
     * to any other check-in, under a new session. */
    checkin_msg cm = {.conn = req->conn, .shard = req->shard};
    on_checkin(co, req->fallback, &cm);
}

static void on_shutdown(coordinator *co)
{
    if (co->shut_down)
        return;
    co->shut_down = 1;
    if (co->timer)
        shoal_actor_timer_cancel(shoal_actor_system_of(co->pop->coord_actor), co->timer);
    co->timer = 0;
    /* Every round that was selecting or reporting ends here with nothing
     * applied (with pipelining, one reporting and the next selecting); a
     * restart begins a new one from the last checkpoint. */
    uint64_t closed = 0;
    shoal_errinfo ei = {0};
    if (shoal_state_close_running(co->state, co->pop_id, "abandoned", wall_ms(), &closed, &ei) !=
        SHOAL_OK)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT, "population '%s': %s", co->pop->cfg->name, ei.msg);
    else if (closed)
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': %llu open round(s) abandoned at shutdown", co->pop->cfg->name,
                  (unsigned long long)closed);
    shoal_server *srv = co->srv;
    pthread_mutex_lock(&srv->done_lock);
    srv->coordinators_done++;
    pthread_cond_broadcast(&srv->done_cond);
    pthread_mutex_unlock(&srv->done_lock);
}

void shoal_coordinator_handle(shoal_actor *self, void *state, shoal_msg *msg)
{
    coordinator *co = state;
    int64_t now = shoal_actor_now_ms();
    switch (msg->type) {
    case MSG_CO_CHECKIN:
        on_checkin(co, msg->b, msg->payload);
        break;
    case MSG_CO_DELIVERED:
        if (!co->shut_down && shoal_round_delivered(co->engine, now, msg->a) != SHOAL_OK)
            SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT, "delivered: unknown session");
        break;
    case MSG_CO_REPORT:
        if (!co->shut_down)
            on_report(co, msg->payload);
        break;
    case MSG_CO_DETACH:
        if (!co->shut_down)
            on_detach(co, msg);
        break;
    case MSG_CO_RESUME:
        if (!co->shut_down)
            on_resume(co, msg->payload);
        break;
    case MSG_CO_EXPIRE:
        if (!co->shut_down)
            on_expire(co, msg->a);
        break;
    case MSG_CO_PARTIAL:
        if (!co->shut_down && msg->payload)
            shoal_coordinator_collect_partial(co, msg->a, msg->payload, now);
        break;
    case MSG_CO_PARTIAL_FAILED:
        if (!co->shut_down)
            shoal_coordinator_collect_partial(co, msg->a, NULL, now);
        break;
    case MSG_CO_SA_DEVICE:
    case MSG_CO_SA_FRAMES:
    case MSG_CO_SA_RESULT:
        if (!co->shut_down)
            shoal_coordinator_sa_message(co, msg);
        break;
    case MSG_CO_LOST:
        if (co->shut_down)
            break;
        {
            /* Only the connection the session is routed to can lose it. */
            route *r = shoal_u64map_get(&co->routes, msg->a);
            if (!r || r->conn != msg->b)
                break;
            shoal_free(shoal_u64map_take(&co->routes, msg->a));
            atomic_fetch_add(&co->pop->metrics.dropped, 1);
            shoal_round_lost(co->engine, now, msg->a);
            break;
        }
    case MSG_CO_TICK:
        if (co->shut_down || (msg->a != 0 && msg->a != co->timer_generation))
            return;
        co->timer = 0;
        co->timer_due = INT64_MIN;
        shoal_round_tick(co->engine, now);
        break;
    case MSG_CO_SHUTDOWN:
        if (msg->a == 0 && co->agg_pending > 0 && !co->shut_down && !co->shutdown_deferred) {
            /* The round closed with its reports in and acknowledged, and
             * the aggregators' partial sums are on their way: commit it
             * before stopping rather than lose acknowledged work. A
             * second shutdown message (a = 1) bounds the wait, should a
             * partial never come. */
            shoal_msg late = {.type = MSG_CO_SHUTDOWN, .a = 1};
            if (shoal_actor_send_after(co->pop->coord_actor, SHUTDOWN_COMMIT_WAIT_MS, &late,
                                       NULL) == SHOAL_OK) {
                co->shutdown_deferred = 1;
                SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                          "population '%s': shutdown waits up to %d ms for round %llu to commit",
                          co->pop->cfg->name, SHUTDOWN_COMMIT_WAIT_MS,
                          (unsigned long long)(co->round_offset + co->agg_round));
                return;
            }
        }
        if (co->shutdown_deferred && !co->shut_down)
            SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                      "population '%s': round %llu did not commit within %d ms of the shutdown",
                      co->pop->cfg->name, (unsigned long long)(co->round_offset + co->agg_round),
                      SHUTDOWN_COMMIT_WAIT_MS);
        on_shutdown(co);
        return;
    default:
        return;
    }
    if (!co->shut_down) {
        drain(co);
        if (co->shutdown_deferred && co->agg_pending == 0) {
            on_shutdown(co);
            return;
        }
        rearm(co);
    }
}
