/* shoal-server: wiring the network layer, the actors and the state
 * database together (docs/architecture.md). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"
#include "shoal/log.h"

#define LOG_COMPONENT "server"

/* ---- model blobs ------------------------------------------------------------------ */

static int encode_chunks(model_blob *b, const shoal_codec *codec)
{
    size_t max_chunk = shoal_chunk_max_payload(codec->max_message_bytes);
    shoal_chunker ch;
    if (shoal_chunker_init(&ch, b->bytes, b->len, max_chunk) != SHOAL_OK)
        return -1;
    size_t n = (b->len + max_chunk - 1) / max_chunk;
    b->chunks = shoal_calloc(n, sizeof *b->chunks);
    b->chunk_lens = shoal_calloc(n, sizeof *b->chunk_lens);
    if (!b->chunks || !b->chunk_lens)
        return -1;
    shoal_chunk chunk;
    while (b->chunk_count < n && shoal_chunker_next(&ch, &chunk) == SHOAL_ROW) {
        shoal_errinfo ei = {0};
        if (shoal_envelope_model_chunk_encode(codec, b->checkpoint_id, CHECKPOINT_ID_LEN, &chunk,
                                              &b->chunks[b->chunk_count],
                                              &b->chunk_lens[b->chunk_count], &ei) != SHOAL_OK)
            return -1;
        b->chunk_count++;
    }
    return b->chunk_count == n ? 0 : -1;
}

static void model_blob_destroy(model_blob *b)
{
    for (size_t i = 0; i < b->chunk_count; i++)
        shoal_free(b->chunks[i]);
    shoal_free(b->chunks);
    shoal_free(b->chunk_lens);
    shoal_free(b->bytes);
    shoal_free(b);
}

model_blob *shoal_model_blob_new(const float *params, size_t count, uint64_t version,
                                 uint64_t population_hash, const shoal_codec *codec)
{
    model_blob *b = shoal_calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->bytes = shoal_mallocarray(count, 4);
    if (!b->bytes) {
        shoal_free(b);
        return NULL;
    }
    b->len = count * 4;
    if (shoal_tensor_encode_f32le(params, count, b->bytes, b->len, NULL) != SHOAL_OK) {
        /* The engine never commits a non-finite model; if one got here
         * it must not be served. */
        model_blob_destroy(b);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->version = version;
    b->param_count = count;
    /* The id names the population, the parameters (so a restored backup
     * whose versions repeat with other values never matches a device's
     * stale copy) and the version, so a device that holds it can skip the
     * download. */
    uint64_t h = population_hash;
    for (size_t i = 0; i < b->len; i++) {
        h ^= b->bytes[i];
        h *= 1099511628211ull;
    }
    for (int i = 0; i < 8; i++) {
        b->checkpoint_id[i] = (uint8_t)(h >> (8 * i));
        b->checkpoint_id[8 + i] = (uint8_t)(version >> (8 * i));
    }
    if (encode_chunks(b, codec) != 0) {
        model_blob_destroy(b);
        return NULL;
    }
    return b;
}

model_blob *shoal_model_blob_ref(model_blob *b)
{
    if (b)
        atomic_fetch_add(&b->refs, 1);
    return b;
}

void shoal_model_blob_unref(model_blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        model_blob_destroy(b);
}

void shoal_model_blob_release(void *blob)
{
    shoal_model_blob_unref(blob);
}

/* ---- sending ---------------------------------------------------------------------- */

void shoal_server_send(shoal_server *srv, shoal_conn_id conn, const shoal_envelope *env)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_errinfo ei = {0};
    shoal_err err = shoal_envelope_encode(&srv->server_codec, env, &bytes, &len, &ei);
    if (err) {
        /* Our own message failed validation: a bug, not the device's fault. */
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT, "connection %llu: cannot encode %s: %s",
                  (unsigned long long)conn, shoal_envelope_body_name(env), ei.msg);
        shoal_net_close(srv->net, conn, 1011, "internal error");
        return;
    }
    err = shoal_net_send(srv->net, conn, bytes, len);
    if (err) {
        shoal_free(bytes);
        if (err == SHOAL_ELIMIT)
            shoal_net_close(srv->net, conn, 1013, "outbox full");
    }
}

/* ---- plans -------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void build_plans(population *pop)
{
    const shoal_population_config *pc = pop->cfg;

    Shoal__ModelSpec ms = SHOAL__MODEL_SPEC__INIT;
    pop->model_spec = ms;
    pop->model_spec.architecture = (char *)shoal_model_arch_name(pc->arch);
    for (uint32_t i = 0; i < pc->input_rank && i < 4; i++)
        pop->input_shape[i] = pc->input_shape[i];
    pop->model_spec.n_input_shape = pc->input_rank;
    pop->model_spec.input_shape = pop->input_shape;
    pop->model_spec.has_classes = 1;
    pop->model_spec.classes = pc->classes;
    pop->model_spec.has_parameter_count = 1;
    pop->model_spec.parameter_count = pop->param_count;

    const shoal_optim_config *oc = &pc->client_optim;
    Shoal__ClientOptimizer co = SHOAL__CLIENT_OPTIMIZER__INIT;
    pop->optimizer = co;
    Shoal__ClientOptimizer *o = &pop->optimizer;
    o->has_kind = 1;
    o->kind = (Shoal__OptimizerKind)(oc->kind + 1);
    o->has_learning_rate = 1;
    o->learning_rate = oc->lr;
    if (oc->kind == SHOAL_OPTIM_MOMENTUM || oc->kind == SHOAL_OPTIM_NESTEROV) {
        o->has_momentum = 1;
        o->momentum = oc->momentum;
    }
    if (oc->kind == SHOAL_OPTIM_ADAM) {
        o->has_beta1 = o->has_beta2 = 1;
        o->beta1 = oc->beta1;
        o->beta2 = oc->beta2;
    }
    if (oc->kind == SHOAL_OPTIM_RMSPROP) {
        o->has_alpha = 1;
        o->alpha = oc->alpha;
    }
    if (oc->kind == SHOAL_OPTIM_ADAGRAD || oc->kind == SHOAL_OPTIM_RMSPROP ||
        oc->kind == SHOAL_OPTIM_ADAM) {
        o->has_eps = 1;
        o->eps = oc->eps;
    }
    if (oc->weight_decay > 0) {
        o->has_weight_decay = 1;
        o->weight_decay = oc->weight_decay;
    }
    if (oc->prox_mu > 0) {
        o->has_prox_mu = 1;
        o->prox_mu = oc->prox_mu;
    }
    o->has_epochs = o->has_batch_size = 1;
    o->epochs = pc->epochs;
    o->batch_size = pc->batch_size;

    Shoal__ExampleSelector es = SHOAL__EXAMPLE_SELECTOR__INIT;
    pop->example_selector = es;
    pop->example_selector.collection = pc->collection;
    if (pc->max_examples) {
        pop->example_selector.has_max_examples = 1;
        pop->example_selector.max_examples = pc->max_examples;
    }
    Shoal__Limits lim = SHOAL__LIMITS__INIT;
    pop->limits = lim;
    pop->limits.has_max_duration_ms = 1;
    pop->limits.max_duration_ms = pc->max_duration_ms;
    pop->limits.has_min_examples = 1;
    pop->limits.min_examples = pc->min_examples;
    /* The device is told the largest example count it may claim, the
     * one on_report enforces: the plan's, or the server's hard limit. */
    pop->limits.has_max_examples = 1;
    pop->limits.max_examples =
        pc->max_examples ? pc->max_examples : (uint32_t)SHOAL_SERVER_MAX_EXAMPLES;
    if (pop->limits.max_examples < pc->min_examples)
        pop->limits.max_examples = pc->min_examples;

    Shoal__Plan plan = SHOAL__PLAN__INIT;
    plan.has_task_kind = 1;
    plan.task_kind = SHOAL__TASK_KIND__TASK_KIND_TRAIN;
    plan.model = &pop->model_spec;
    plan.optimizer = &pop->optimizer;
    plan.selector = &pop->example_selector;
    plan.limits = &pop->limits;
    plan.has_report_deadline_ms = 1;
    plan.report_deadline_ms = (uint64_t)pc->round.reporting_deadline_ms;
    plan.has_model_encoding = 1;
    plan.model_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    plan.has_update_encoding = 1;
    plan.update_encoding = SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE;
    /* Devices clip to the announced bound before encoding (also under
     * secure aggregation, where the server cannot check one update). */
    Shoal__UpdateBound ub = SHOAL__UPDATE_BOUND__INIT;
    pop->update_bound = ub;
    pop->refuse_norm = pop->clip_norm = 0;
    if (pc->update_bound.enabled) {
        pop->update_bound.has_l2_norm = 1;
        pop->update_bound.l2_norm = (float)pc->update_bound.l2_norm;
        plan.update_bound = &pop->update_bound;
        if (pc->update_bound.refuse)
            pop->refuse_norm = pc->update_bound.l2_norm;
        else
            pop->clip_norm = pc->update_bound.l2_norm;
    }
    if (pc->aggregation.rule == SHOAL_ROBUST_NORM_BOUNDED &&
        (!pop->clip_norm || pc->aggregation.l2_norm < pop->clip_norm))
        pop->clip_norm = pc->aggregation.l2_norm;
    pop->train_plan = plan;

    pop->eval_plan = plan;
    pop->eval_plan.task_kind = SHOAL__TASK_KIND__TASK_KIND_EVALUATE;
    pop->eval_plan.optimizer = NULL;
    pop->eval_plan.has_update_encoding = 0;
    pop->eval_plan.update_bound = NULL;
}

/* ---- network callbacks -------------------------------------------------------------- */

static shoal_actor *selector_for(shoal_server *srv, shoal_conn_id id)
{
    return srv->selector_actors[id % srv->selector_count];
}

static int net_on_open(void *ctx, shoal_conn_id id, const shoal_conn_info *info)
{
    shoal_server *srv = ctx;
    if (!atomic_load(&srv->serving) || atomic_load(&srv->actors_gone))
        return 1;
    /* "ip:port" or "[ip6]:port": the selector keys failed authentications
     * by the address alone. */
    char *address = shoal_strdup(info ? info->peer : "");
    if (!address)
        return 1;
    char *colon = strrchr(address, ':');
    if (colon)
        *colon = 0;
    shoal_msg m = {.type = MSG_CONN_OPEN, .a = id, .payload = address, .free_payload = shoal_free};
    if (shoal_actor_send(selector_for(srv, id), &m) == SHOAL_OK)
        return 0;
    shoal_free(address);
    return 1;
}

static int net_on_message(void *ctx, shoal_conn_id id, uint8_t *bytes, size_t len)
{
    shoal_server *srv = ctx;
    if (atomic_load(&srv->actors_gone))
        return 1;
    shoal_msg m = {.type = MSG_CONN_DATA, .a = id, .payload = bytes, .len = len};
    return shoal_actor_send(selector_for(srv, id), &m) == SHOAL_OK ? 0 : 1;
}

/* Tells connection id's selector of an event it must never miss to
 * backpressure (a mailbox beyond its capacity): a close, or a held message
 * whose connection stays paused until the selector answers. */
static void tell_selector(shoal_server *srv, int type, shoal_conn_id id, const char *what)
{
    if (atomic_load(&srv->actors_gone))
        return;
    shoal_msg m = {.type = type, .a = id};
    if (shoal_actor_send_unbounded(selector_for(srv, id), &m) != SHOAL_OK)
        SHOAL_LOG(SHOAL_LOG_DEBUG, LOG_COMPONENT, "connection %llu %s during shutdown",
                  (unsigned long long)id, what);
}

static void net_on_held(void *ctx, shoal_conn_id id)
{
    tell_selector(ctx, MSG_CONN_HELD, id, "held");
}

static void net_on_close(void *ctx, shoal_conn_id id)
{
    tell_selector(ctx, MSG_CONN_CLOSED, id, "closed");
}

/* ---- lifecycle ---------------------------------------------------------------------- */

shoal_err shoal_server_new(const shoal_server_config *cfg, shoal_server **out, shoal_errinfo *ei)
{
    if (!cfg || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_server_new: NULL argument");
    *out = NULL;
    shoal_server *srv = shoal_calloc(1, sizeof *srv);
    if (!srv)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
    srv->cfg = cfg;
    pthread_mutex_init(&srv->done_lock, NULL);
    pthread_cond_init(&srv->done_cond, NULL);
    srv->device_codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    srv->device_codec.max_message_bytes = cfg->max_message_bytes;
    srv->server_codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    srv->server_codec.max_message_bytes = cfg->max_message_bytes;
    shoal_err err = shoal_refusals_new(cfg->population_count, cfg->auth_failures_per_minute,
                                       cfg->refusal_log_per_minute, &srv->refusals);
    if (!err && (err = shoal_upload_gate_init(&srv->uploads, cfg->max_concurrent_uploads)) == 0)
        srv->uploads_ready = 1;
    if (err) {
        err = shoal_errinfo_set(ei, err, "out of memory");
        goto fail;
    }

    err = shoal_actor_system_new(cfg->workers, &srv->actors);
    if (err) {
        err =
            shoal_errinfo_set(ei, err, "cannot start the worker threads: %s", shoal_strerror(err));
        goto fail;
    }
    srv->selector_count = shoal_actor_system_workers(srv->actors);
    srv->selectors = shoal_calloc(srv->selector_count, sizeof *srv->selectors);
    srv->selector_actors = shoal_calloc(srv->selector_count, sizeof *srv->selector_actors);
    srv->pops = shoal_calloc(cfg->population_count, sizeof *srv->pops);
    if (!srv->selectors || !srv->selector_actors || !srv->pops) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < srv->selector_count; i++) {
        char name[32];
        snprintf(name, sizeof name, "selector-%zu", i);
        err = shoal_selector_new(srv, (uint32_t)i, &srv->selectors[i]);
        if (!err)
            err = shoal_actor_spawn(srv->actors, name, shoal_selector_handle, srv->selectors[i],
                                    cfg->mailbox_capacity, &srv->selector_actors[i]);
        if (err) {
            err = shoal_errinfo_set(ei, err, "cannot start the selectors: %s", shoal_strerror(err));
            goto fail;
        }
    }

    srv->aggregator_count = srv->selector_count;
    srv->aggregators = shoal_calloc(srv->aggregator_count, sizeof *srv->aggregators);
    srv->aggregator_actors = shoal_calloc(srv->aggregator_count, sizeof *srv->aggregator_actors);
    if (!srv->aggregators || !srv->aggregator_actors) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < srv->aggregator_count; i++) {
        char name[32];
        snprintf(name, sizeof name, "aggregator-%zu", i);
        err = shoal_aggregator_new(srv, (uint32_t)i, cfg->population_count, &srv->aggregators[i]);
        if (!err)
            err = shoal_actor_spawn(srv->actors, name, shoal_aggregator_handle, srv->aggregators[i],
                                    cfg->mailbox_capacity, &srv->aggregator_actors[i]);
        if (err) {
            err =
                shoal_errinfo_set(ei, err, "cannot start the aggregators: %s", shoal_strerror(err));
            goto fail;
        }
    }

    for (size_t i = 0; i < cfg->population_count; i++) {
        population *pop = &srv->pops[i];
        pop->cfg = &cfg->populations[i];
        pop->index = i;
        pop->name_hash = fnv1a(pop->cfg->name);
        pthread_mutex_init(&pop->latest_lock, NULL);
        atomic_store(&pop->metrics.eval_loss_bits, 0x7ff8000000000000ull);
        atomic_store(&pop->metrics.eval_accuracy_bits, 0x7ff8000000000000ull);
        srv->pop_count = i + 1;
        /* Each coordinator has its own connection to the database: SQLite
         * connections are single-threaded, and WAL lets them share it. */
        shoal_state *state = NULL;
        err = shoal_state_open(cfg->state_path, &state, ei);
        if (err)
            goto fail;
        err = shoal_coordinator_new(srv, pop, state, &pop->coord, ei);
        if (err) {
            shoal_state_close(state);
            goto fail;
        }
        build_plans(pop);
        char name[160];
        snprintf(name, sizeof name, "coordinator-%s", pop->cfg->name);
        err = shoal_actor_spawn(srv->actors, name, shoal_coordinator_handle, pop->coord,
                                cfg->mailbox_capacity, &pop->coord_actor);
        if (err) {
            err = shoal_errinfo_set(ei, err, "cannot start a coordinator: %s", shoal_strerror(err));
            goto fail;
        }
    }

    /* A device keeps its connection open while it trains, sending nothing
     * until its report, so the idle limit must outlast the longest
     * reporting deadline. */
    /* A device selected for the next round (pipelining) waits silently
     * for up to a whole reporting phase of the current one before its own
     * deadline even starts. */
    int64_t idle_ms = cfg->idle_timeout_ms;
    for (size_t i = 0; idle_ms > 0 && i < cfg->population_count; i++) {
        const shoal_round_config *rc = &cfg->populations[i].round;
        int64_t need =
            rc->reporting_deadline_ms * (rc->mode == SHOAL_ROUND_SYNC && rc->pipelining ? 2 : 1) +
            rc->selection_window_ms + 60000;
        if (idle_ms < need)
            idle_ms = need;
    }
    if (idle_ms > 7LL * 24 * 3600 * 1000)
        idle_ms = 7LL * 24 * 3600 * 1000;
    /* Every chunk of the largest model fits in a connection's outbox, with
     * room for the messages around them. */
    size_t payload = shoal_chunk_max_payload(cfg->max_message_bytes);
    size_t outbox = 256;
    for (size_t i = 0; payload && i < srv->pop_count; i++) {
        size_t n = (srv->pops[i].param_count * 4 + payload - 1) / payload + 16;
        if (n > outbox)
            outbox = n;
    }
    shoal_net_config nc = {
        .address = cfg->listen_address,
        .port = cfg->port,
        .tls = cfg->tls_enabled,
        .cert_path = cfg->tls_cert,
        .key_path = cfg->tls_key,
        .max_connections = cfg->max_connections,
        .max_message_bytes = cfg->max_message_bytes,
        .max_outbox_messages = outbox,
        .handshake_timeout_ms = cfg->handshake_timeout_ms,
        .idle_timeout_ms = idle_ms,
        .admin_address = cfg->http_listen_address,
        .admin_port = cfg->http_port,
        .session_tickets = cfg->tls_session_tickets,
        .ticket_rotation_ms = cfg->tls_ticket_rotation_ms,
    };
    shoal_net_handlers h = {
        .ctx = srv,
        .on_open = net_on_open,
        .on_message = net_on_message,
        .on_close = net_on_close,
        .on_held = net_on_held,
        .on_http = shoal_server_http,
    };
    err = shoal_net_new(&nc, &h, &srv->net, ei);
    if (err)
        goto fail;
    for (size_t i = 0; i < srv->pop_count; i++) {
        err = shoal_coordinator_start(srv->pops[i].coord);
        if (err) {
            err = shoal_errinfo_set(ei, err, "cannot start a coordinator: %s", shoal_strerror(err));
            goto fail;
        }
    }
    atomic_store(&srv->serving, 1);
    *out = srv;
    return SHOAL_OK;

fail:
    shoal_server_free(srv);
    return err;
}

uint16_t shoal_server_port(const shoal_server *srv)
{
    return srv && srv->net ? shoal_net_port(srv->net) : 0;
}

uint16_t shoal_server_http_port(const shoal_server *srv)
{
    return srv && srv->net ? shoal_net_admin_port(srv->net) : 0;
}

shoal_err shoal_server_run(shoal_server *srv)
{
    if (!srv)
        return SHOAL_EINVAL;
    shoal_err err = shoal_net_run(srv->net);
    atomic_store(&srv->serving, 0);
    /* Each coordinator records its open round as abandoned; wait for all. */
    for (size_t i = 0; i < srv->pop_count; i++) {
        shoal_msg m = {.type = MSG_CO_SHUTDOWN};
        if (shoal_actor_send_after(srv->pops[i].coord_actor, 0, &m, NULL) != SHOAL_OK) {
            pthread_mutex_lock(&srv->done_lock);
            srv->coordinators_done++;
            pthread_mutex_unlock(&srv->done_lock);
        }
    }
    pthread_mutex_lock(&srv->done_lock);
    while (srv->coordinators_done < srv->pop_count)
        pthread_cond_wait(&srv->done_cond, &srv->done_lock);
    pthread_mutex_unlock(&srv->done_lock);
    SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT, "stopped");
    return err;
}

void shoal_server_stop(shoal_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->serving, 0);
    atomic_store(&srv->stopping, 1);
    if (srv->net)
        shoal_net_stop(srv->net);
}

void shoal_server_free(shoal_server *srv)
{
    if (!srv)
        return;
    /* Workers first: nothing may run while what they point to goes away.
     * Closing the network afterwards may still report closes: they are
     * dropped once the actors are gone. */
    atomic_store(&srv->actors_gone, 1);
    shoal_actor_system_free(srv->actors);
    shoal_net_free(srv->net);
    for (size_t i = 0; i < srv->selector_count && srv->selectors; i++)
        shoal_selector_free(srv->selectors[i]);
    for (size_t i = 0; i < srv->aggregator_count && srv->aggregators; i++)
        shoal_aggregator_free(srv->aggregators[i]);
    shoal_free(srv->aggregators);
    shoal_free(srv->aggregator_actors);
    for (size_t i = 0; i < srv->pop_count; i++) {
        population *pop = &srv->pops[i];
        if (pop->coord) {
            shoal_state *st = shoal_coordinator_state(pop->coord);
            shoal_coordinator_free(pop->coord);
            shoal_state_close(st);
        }
        shoal_model_blob_unref(pop->latest);
        pthread_mutex_destroy(&pop->latest_lock);
    }
    shoal_free(srv->pops);
    shoal_free(srv->selectors);
    shoal_free(srv->selector_actors);
    shoal_refusals_free(srv->refusals);
    if (srv->uploads_ready)
        shoal_upload_gate_fini(&srv->uploads);
    pthread_cond_destroy(&srv->done_cond);
    pthread_mutex_destroy(&srv->done_lock);
    shoal_free(srv);
}
