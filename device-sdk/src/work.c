/* The device's local work for one session: select the plan's examples
 * from the example store and train on them (the delta goes up in chunks)
 * or evaluate (metrics only). Examples are read from the store batch by
 * batch as training draws them, never gathered: the session holds one
 * batch and 20 bytes per selected example (the selection's row ids and
 * creation order, 8 bytes each, and the trainer's order, 4). Raw examples
 * stay here: nothing below hands them to the connection. */
#include <stdio.h>
#include <string.h>

#include "work_int.h"
#include "shoal/alloc.h"
#include "shoal/encoding.h"
#include "shoal/plan.h"
#include "shoal/store.h"
#include "shoal/train.h"

/* Polled by the trainer between batches: the plan's time limit, the
 * session's time budget, and the eligibility policy (rate-limited). */
int shoal_devc_should_stop(void *ctx)
{
    shoal_devc_stop *stop = ctx;
    const shoal_port *port = stop->client->port;
    if (stop->reason != SHOAL_SESSION_REASON_NONE)
        return 1;
    int64_t now = port->monotonic_ms(port->ctx);
    if (stop->work_deadline_ms && now >= stop->work_deadline_ms) {
        stop->reason = SHOAL_SESSION_REASON_TIME_LIMIT;
        return 1;
    }
    if (stop->session_deadline_ms && now >= stop->session_deadline_ms) {
        stop->reason = SHOAL_SESSION_REASON_SESSION_BUDGET;
        return 1;
    }
    int interval = stop->client->cfg.policy.poll_interval_ms;
    if (interval < 0 || now - stop->last_poll_ms >= interval) {
        stop->last_poll_ms = now;
        if (!shoal_devc_eligible(stop->client, stop->why, sizeof stop->why)) {
            stop->reason = SHOAL_SESSION_REASON_STOPPED_INELIGIBLE;
            return 1;
        }
    }
    return 0;
}

void shoal_devc_work_interrupted(const shoal_devc_stop *stop, shoal_devc_work_result *out)
{
    /* A stop the trainer saw without the check (the app's own
     * cancellation) is the app's. */
    shoal_session_reason reason =
        stop->reason != SHOAL_SESSION_REASON_NONE ? stop->reason : SHOAL_SESSION_REASON_CANCELED;
    snprintf(out->ei.msg, sizeof out->ei.msg, "training stopped: %s",
             reason == SHOAL_SESSION_REASON_STOPPED_INELIGIBLE ? stop->why
             : reason == SHOAL_SESSION_REASON_TIME_LIMIT       ? "the plan's time limit passed"
             : reason == SHOAL_SESSION_REASON_SESSION_BUDGET
                 ? "the session's time budget (budget_session_ms) ran out"
                 : "the app's trainer canceled it");
    out->end = SHOAL_DEVC_WORK_INTERRUPTED;
    out->err = SHOAL_OK;
    out->reason = reason;
}

shoal_err shoal_plan_train_config(const Shoal__Plan *plan, shoal_train_config *tc)
{
    if (!plan || !tc)
        return SHOAL_EINVAL;
    const Shoal__ClientOptimizer *o = plan->optimizer;
    if (!o || o->kind < SHOAL__OPTIMIZER_KIND__OPTIMIZER_SGD ||
        o->kind > SHOAL__OPTIMIZER_KIND__OPTIMIZER_ADAM)
        return SHOAL_EPROTO;
    memset(tc, 0, sizeof *tc);
    tc->optim = shoal_optim_defaults((shoal_optim_kind)(o->kind - 1), o->learning_rate);
    if (o->has_momentum)
        tc->optim.momentum = o->momentum;
    if (o->has_beta1)
        tc->optim.beta1 = o->beta1;
    if (o->has_beta2)
        tc->optim.beta2 = o->beta2;
    if (o->has_alpha)
        tc->optim.alpha = o->alpha;
    if (o->has_eps)
        tc->optim.eps = o->eps;
    if (o->has_weight_decay)
        tc->optim.weight_decay = o->weight_decay;
    if (o->has_prox_mu)
        tc->optim.prox_mu = o->prox_mu;
    tc->epochs = o->epochs;
    tc->batch = o->batch_size;
    return SHOAL_OK;
}

/* The plan's input shape, and its parameter count checked against the
 * model held. */
static shoal_err plan_shape(const shoal_client *c, const Shoal__ModelSpec *spec, shoal_shape *out,
                            shoal_errinfo *ei)
{
    if (spec->n_input_shape < 1 || spec->n_input_shape > 3)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "the plan's input shape has rank %zu; 1..3",
                                 spec->n_input_shape);
    *out = (shoal_shape){spec->input_shape[0], spec->n_input_shape > 1 ? spec->input_shape[1] : 1,
                         spec->n_input_shape > 2 ? spec->input_shape[2] : 1};
    if (spec->parameter_count != c->model_count)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "the plan says %llu parameters; the model downloaded has %zu",
                                 (unsigned long long)spec->parameter_count, c->model_count);
    return SHOAL_OK;
}

static shoal_err build_model(const Shoal__ModelSpec *spec, shoal_model **out, shoal_errinfo *ei)
{
    shoal_model_arch arch;
    if (shoal_model_arch_parse(spec->architecture, &arch) != SHOAL_OK)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "the plan's model architecture \"%s\" is not built into this SDK",
                                 spec->architecture);
    shoal_shape s = {spec->input_shape[0], spec->n_input_shape > 1 ? spec->input_shape[1] : 1,
                     spec->n_input_shape > 2 ? spec->input_shape[2] : 1};
    if (spec->n_input_shape > 3)
        return shoal_errinfo_set(ei, SHOAL_EPROTO, "the plan's input shape has rank %zu; at most 3",
                                 spec->n_input_shape);
    shoal_err err = shoal_model_new(arch, s, spec->classes, out);
    if (err)
        return shoal_errinfo_set(ei, err,
                                 "the plan's model (%s %ux%ux%u, %u classes) cannot be "
                                 "built here",
                                 spec->architecture, s.c, s.h, s.w, spec->classes);
    if (shoal_model_param_count(*out) != spec->parameter_count) {
        size_t have = shoal_model_param_count(*out);
        shoal_model_free(*out);
        *out = NULL;
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "the plan says %llu parameters; the model here has %zu",
                                 (unsigned long long)spec->parameter_count, have);
    }
    return SHOAL_OK;
}

/* The smaller of two example limits, 0 meaning none. */
static uint64_t min_limit(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* The plan's criteria, capped by the plan's limits.max_examples (the most
 * the server accepts) and the client's max_examples. */
static shoal_store_criteria selection_criteria(const shoal_client *c)
{
    const Shoal__Plan *plan = c->accepted->plan;
    const Shoal__ExampleSelector *s = plan->selector;
    shoal_store_criteria crit = {.collection = s->collection,
                                 .start_ms = s->has_start_time_unix_ms ? s->start_time_unix_ms : 0,
                                 .end_ms = s->has_end_time_unix_ms ? s->end_time_unix_ms : 0,
                                 .max_examples = s->has_max_examples ? s->max_examples : 0};
    crit.max_examples = min_limit(crit.max_examples, shoal_devc_plan_max_examples(plan));
    crit.max_examples = min_limit(crit.max_examples, c->cfg.max_examples);
    return crit;
}

uint64_t shoal_devc_plan_max_examples(const Shoal__Plan *plan)
{
    const Shoal__Limits *lim = plan->limits;
    return lim && lim->has_max_examples ? lim->max_examples : 0;
}

/* Opens the store under a snapshot, so that what the app logs or
 * retention deletes meanwhile does not change the selection, and counts
 * the plan's examples into sel->count (0 when the collection does not
 * exist). Nothing per example is allocated yet: the memory budget is
 * checked against the count first. */
static shoal_err selection_open(const shoal_client *c, shoal_shape shape, uint32_t classes,
                                shoal_devc_selection *sel, shoal_errinfo *ei)
{
    memset(sel, 0, sizeof *sel);
    sel->collection = c->accepted->plan->selector->collection;
    sel->classes = classes;
    sel->features = (size_t)shape.c * shape.h * shape.w;
    shoal_store_options so = {.key = c->cfg.store_key,
                              .key_len = c->cfg.store_key_len,
                              .cache_kib = SHOAL_DEVC_STORE_CACHE_KIB};
    shoal_err err = shoal_store_open(c->cfg.store_path, &so, &sel->st, ei);
    if (err || (err = shoal_store_snapshot_begin(sel->st, ei)))
        return err;
    shoal_store_criteria crit = selection_criteria(c);
    uint64_t n = 0;
    if ((err = shoal_store_count(sel->st, &crit, &n, ei)))
        return err;
    if (n > UINT32_MAX)
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%llu examples selected from \"%s\"; at most %u per session: "
                                 "set max_examples",
                                 (unsigned long long)n, sel->collection, UINT32_MAX);
    sel->count = (size_t)n;
    return SHOAL_OK;
}

/* Selects the examples counted (the snapshot keeps the count true) in an
 * order shuffled by seed, and checks their shape against the plan's. */
static shoal_err selection_start(const shoal_client *c, uint64_t seed, shoal_devc_selection *sel,
                                 shoal_errinfo *ei)
{
    shoal_store_criteria crit = selection_criteria(c);
    shoal_err err = shoal_store_iter_new(sel->st, &crit, seed, &sel->it, ei);
    if (err)
        return err;
    if (shoal_store_iter_size(sel->it) != sel->count)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "the store's selection changed under its snapshot (%llu "
                                 "examples, %zu counted)",
                                 (unsigned long long)shoal_store_iter_size(sel->it), sel->count);
    if (shoal_store_iter_kind(sel->it) != SHOAL_STORE_FEATURES ||
        shoal_store_iter_feature_count(sel->it) != sel->features)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "collection \"%s\" holds examples of %zu features; the plan's "
                                 "model takes %zu",
                                 sel->collection, shoal_store_iter_feature_count(sel->it),
                                 sel->features);
    return SHOAL_OK;
}

void shoal_devc_selection_close(shoal_devc_selection *sel)
{
    shoal_store_iter_free(sel->it);
    shoal_store_close(sel->st); /* ends the snapshot */
    sel->it = NULL;
    sel->st = NULL;
}

/* shoal_example_source.read over the selection: the examples at positions
 * ids, their labels checked against the plan's classes. */
shoal_err shoal_devc_selection_read(void *ctx, const uint32_t *ids, size_t n, float *x, int32_t *y)
{
    shoal_devc_selection *sel = ctx;
    shoal_store_batch b = {.x = x, .y = y};
    shoal_err err = shoal_store_iter_read(sel->it, ids, n, &b, &sel->ei);
    if (err != SHOAL_ROW)
        return sel->err = err;
    for (size_t i = 0; i < n; i++)
        if (y[i] < 0 || (uint32_t)y[i] >= sel->classes)
            return sel->err = shoal_errinfo_set(&sel->ei, SHOAL_EINVAL,
                                                "an example of collection \"%s\" has label %d; "
                                                "the plan's model has %u classes",
                                                sel->collection, (int)y[i], sel->classes);
    return SHOAL_OK;
}

shoal_example_source shoal_devc_selection_source(shoal_devc_selection *sel)
{
    return (shoal_example_source){sel->count, shoal_devc_selection_read, sel};
}

/* Heap the session's local work adds at its peak to what the client held
 * before it: the trainer (workspace, optimizer, gradient, working copy,
 * one batch, 4 bytes per example), the selection (16 bytes per example),
 * the store handle (page cache and SQLite's own), and for training the
 * delta and its encoding for the upload. trainer_bytes is 0 for the app's
 * own trainer, whose memory the SDK cannot see. */
static uint64_t work_bytes(const shoal_client *c, size_t trainer_bytes, size_t examples, int train)
{
    uint64_t b = trainer_bytes + 16 * (uint64_t)examples + SHOAL_DEVC_STORE_CACHE_KIB * 1024ull +
                 SHOAL_DEVC_STORE_OVERHEAD;
    if (train)
        b += 2 * 4 * (uint64_t)c->model_count;
    if (train && c->accepted->plan->secure_aggregation)
        b += shoal_devc_secagg_bytes(c->accepted->plan->secure_aggregation);
    return b;
}

/* The session's memory budget, checked before the work starts. */
static int over_memory_budget(const shoal_client *c, uint64_t need, shoal_errinfo *ei)
{
    if (!c->cfg.budget_session_bytes || need <= c->cfg.budget_session_bytes)
        return 0;
    shoal_errinfo_set(ei, SHOAL_ELIMIT,
                      "this plan's local work needs about %llu bytes of memory; "
                      "budget_session_bytes is %llu: raise it, or lower max_examples if the "
                      "selection is what is large",
                      (unsigned long long)need, (unsigned long long)c->cfg.budget_session_bytes);
    return 1;
}

void shoal_devc_work_run(const shoal_client *c, shoal_devc_work_result *out)
{
    const Shoal__Plan *plan = c->accepted->plan;
    const int train = c->accepted->task_kind == SHOAL__TASK_KIND__TASK_KIND_TRAIN;
    shoal_model *model = NULL;
    shoal_devc_selection sel = {0};
    shoal_trainer *t = NULL;
    float *delta = NULL;
    memset(out, 0, sizeof *out);
    shoal_errinfo *ei = &out->ei;
    shoal_session_reason reason = SHOAL_SESSION_REASON_WORK_FAILED;
    /* The app's own trainer needs no built-in model: only the plan's
     * shape, to select and check the examples. */
    const int custom = train ? c->cfg.trainer.train != NULL : c->cfg.trainer.evaluate != NULL;
    shoal_shape shape = {0, 0, 0};
    uint32_t classes = plan->model->classes;
    shoal_err err =
        custom ? plan_shape(c, plan->model, &shape, ei) : build_model(plan->model, &model, ei);
    if (err)
        goto error;
    if (!custom)
        shape = shoal_model_layer(model, 0)->in;
    uint64_t seed = c->cfg.train_seed;
    if (!seed && c->port->random(c->port->ctx, (uint8_t *)&seed, sizeof seed) != SHOAL_OK) {
        shoal_model_free(model);
        out->end = SHOAL_DEVC_WORK_ABANDONED;
        out->reason = SHOAL_SESSION_REASON_DEVICE;
        out->err = shoal_errinfo_set(ei, SHOAL_ECRYPTO, "the port's random source failed");
        return;
    }
    if ((err = selection_open(c, shape, classes, &sel, ei)))
        goto error;
    uint64_t need = plan->limits->has_min_examples && plan->limits->min_examples
                        ? plan->limits->min_examples
                        : 1;
    if (sel.count < need) {
        snprintf(ei->msg, sizeof ei->msg, "%zu examples selected from \"%s\"; the plan needs %llu",
                 sel.count, plan->selector->collection, (unsigned long long)need);
        out->end = SHOAL_DEVC_WORK_INSUFFICIENT_DATA;
        out->reason = SHOAL_SESSION_REASON_INSUFFICIENT_DATA;
        out->selected = sel.count;
        out->needed = need;
        goto out;
    }

    shoal_train_config tc;
    shoal_devc_stop stop = {.client = c};
    if (!train) {
        /* Evaluation: loss and accuracy only, no update. */
        tc = (shoal_train_config){.epochs = 1, .batch = 64};
        tc.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
    } else if (!custom && shoal_plan_train_config(plan, &tc) != SHOAL_OK) {
        err = shoal_errinfo_set(ei, SHOAL_EPROTO, "the plan's optimizer is not supported");
        goto error;
    }
    if (!custom) {
        tc.should_stop = shoal_devc_should_stop;
        tc.should_stop_ctx = &stop;
        if ((err = shoal_trainer_new(model, &tc, &t))) {
            shoal_errinfo_set(ei, err, "cannot set up training of the plan's model: %s",
                              shoal_strerror(err));
            goto error;
        }
    }
    /* The trainer's example order grows at its first run: counted here. */
    size_t trainer_bytes = 4 * sel.count + (custom ? 0 : shoal_trainer_bytes(t));
    out->work_bytes = work_bytes(c, trainer_bytes, sel.count, train);
    if (over_memory_budget(c, out->work_bytes, ei)) {
        err = SHOAL_ELIMIT;
        reason = SHOAL_SESSION_REASON_MEMORY_BUDGET;
        goto error;
    }
    if ((err = selection_start(c, seed, &sel, ei)))
        goto error;

    int64_t now = c->port->monotonic_ms(c->port->ctx);
    out->started_ms = now;
    stop.last_poll_ms = now;
    stop.work_deadline_ms = now + (int64_t)plan->limits->max_duration_ms;
    stop.session_deadline_ms = c->session_deadline_ms;
    size_t count = c->model_count;
    shoal_example_source src = shoal_devc_selection_source(&sel);
    if (custom) {
        shoal_devc_trainer_work(c, &stop, &src, sel.features, seed, train, out);
        out->last_poll_ms = stop.last_poll_ms;
        goto out;
    }

    if (!train) {
        shoal_batch_stats stats = {0};
        err = shoal_trainer_evaluate_source(t, c->model, &src, &stats);
        out->last_poll_ms = stop.last_poll_ms;
        if (err && sel.err) {
            err = sel.err;
            *ei = sel.ei;
            goto error;
        }
        if (err || stats.count == 0) {
            err = err ? err : SHOAL_EINVAL;
            shoal_errinfo_set(ei, err, "evaluation failed: %s", shoal_strerror(err));
            goto error;
        }
        out->example_count = stats.count;
        out->loss = stats.loss_sum / (double)stats.count;
        out->accuracy = (double)stats.correct / (double)stats.count;
        out->end = SHOAL_DEVC_WORK_EVALUATED;
        goto out;
    }

    delta = shoal_mallocarray(count, sizeof(float));
    shoal_train_result tr = {0};
    err =
        delta ? shoal_trainer_run_local_source(t, c->model, &src, seed, delta, &tr) : SHOAL_ENOMEM;
    out->last_poll_ms = stop.last_poll_ms;
    /* The store, trainer and model go before the upload is encoded. */
    shoal_trainer_free(t);
    t = NULL;
    shoal_devc_selection_close(&sel);
    shoal_model_free(model);
    model = NULL;
    out->example_count = tr.example_count;
    out->loss = tr.mean_loss;
    out->accuracy = tr.accuracy;
    if (err == SHOAL_ECANCELED) {
        /* Nothing of a partial run is reported: the delta is dropped. */
        shoal_devc_work_interrupted(&stop, out);
        goto out;
    }
    if (err && sel.err) {
        err = sel.err;
        *ei = sel.ei;
        goto error;
    }
    if (err) {
        if (err == SHOAL_ENOMEM)
            reason = SHOAL_SESSION_REASON_DEVICE;
        shoal_errinfo_set(ei, err, "local training failed: %s", shoal_strerror(err));
        goto error;
    }
    out->end = SHOAL_DEVC_WORK_TRAINED;
    out->delta = delta;
    out->delta_count = count;
    delta = NULL;
    goto out;
error:
    /* A failure of the device's own work is reported as Report{ERROR}
     * (the server counts the session dropped). */
    out->end = SHOAL_DEVC_WORK_FAILED;
    out->err = err;
    out->reason = reason;
out:
    shoal_free(delta);
    shoal_trainer_free(t);
    shoal_devc_selection_close(&sel);
    shoal_model_free(model);
}
