/* The device's local work for one session: select the plan's examples
 * from the example store, gather them into memory, and train (the delta
 * goes up in chunks) or evaluate (metrics only). Raw examples stay here:
 * nothing below hands them to the connection. */
#include <stdio.h>
#include <string.h>

#include "trainer_int.h"
#include "shoal/alloc.h"
#include "shoal/encoding.h"
#include "shoal/plan.h"
#include "shoal/store.h"
#include "shoal/train.h"

#define GATHER_BATCH 256

/* Polled by shoal_train_local between batches: the eligibility policy
 * (rate-limited) and the plan's time limit. */
int client_should_stop(void *ctx)
{
    shoal_client *c = ctx;
    int64_t now = c->port->monotonic_ms(c->port->ctx);
    if (c->work_deadline_ms && now >= c->work_deadline_ms) {
        c->stopped_time = 1;
        return 1;
    }
    if (c->session_deadline_ms && now >= c->session_deadline_ms) {
        c->stopped_budget = 1;
        return 1;
    }
    int interval = c->cfg.policy.poll_interval_ms;
    if (interval < 0 || now - c->last_poll_ms >= interval) {
        c->last_poll_ms = now;
        if (!client_eligible(c, c->stop_why, sizeof c->stop_why)) {
            c->stopped_ineligible = 1;
            return 1;
        }
    }
    return 0;
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
static shoal_err plan_shape(shoal_client *c, const Shoal__ModelSpec *spec, shoal_shape *out,
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

/* Reads the examples the plan's selector picks into a new dataset
 * (*out NULL when there are none). */
static shoal_err gather(shoal_client *c, shoal_shape shape, uint32_t classes, uint64_t seed,
                        shoal_dataset **out, shoal_errinfo *ei)
{
    *out = NULL;
    const Shoal__ExampleSelector *sel = c->accepted->plan->selector;
    shoal_store_options so = {.key = c->cfg.store_key, .key_len = c->cfg.store_key_len};
    shoal_store *st = NULL;
    shoal_err err = shoal_store_open(c->cfg.store_path, &so, &st, ei);
    if (err)
        return err;
    shoal_store_criteria crit = {.collection = sel->collection,
                                 .start_ms =
                                     sel->has_start_time_unix_ms ? sel->start_time_unix_ms : 0,
                                 .end_ms = sel->has_end_time_unix_ms ? sel->end_time_unix_ms : 0,
                                 .max_examples = sel->has_max_examples ? sel->max_examples : 0};
    if (c->cfg.max_examples && (!crit.max_examples || crit.max_examples > c->cfg.max_examples))
        crit.max_examples = c->cfg.max_examples;
    shoal_store_iter *it = NULL;
    err = shoal_store_iter_new(st, &crit, seed, &it, ei);
    if (err == SHOAL_ENOTFOUND) {
        shoal_store_close(st);
        return SHOAL_OK; /* no such collection: no examples */
    }
    if (err) {
        shoal_store_close(st);
        return err;
    }
    uint64_t n = shoal_store_iter_size(it);
    size_t features = (size_t)shape.c * shape.h * shape.w;
    shoal_dataset *ds = NULL;
    if (n == 0)
        goto done;
    if (shoal_store_iter_kind(it) != SHOAL_STORE_FEATURES ||
        shoal_store_iter_feature_count(it) != features) {
        err = shoal_errinfo_set(ei, SHOAL_EINVAL,
                                "collection \"%s\" holds examples of %zu features; the plan's "
                                "model takes %zu",
                                sel->collection, shoal_store_iter_feature_count(it), features);
        goto done;
    }
    if (n > SIZE_MAX / (features * sizeof(float))) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "%llu examples do not fit in memory",
                                (unsigned long long)n);
        goto done;
    }
    err = shoal_dataset_new((size_t)n, shape, classes, &ds);
    if (err) {
        shoal_errinfo_set(ei, err, "no memory for %llu examples", (unsigned long long)n);
        goto done;
    }
    size_t at = 0;
    while (at < n) {
        shoal_store_batch b = {.x = ds->x + at * features, .y = ds->y + at};
        size_t want = n - at < GATHER_BATCH ? (size_t)(n - at) : GATHER_BATCH;
        err = shoal_store_iter_next(it, want, &b, ei);
        if (err == SHOAL_DONE)
            break;
        if (err != SHOAL_ROW)
            goto done;
        for (size_t i = 0; i < b.count; i++)
            if (b.y[i] < 0 || (uint32_t)b.y[i] >= classes) {
                err = shoal_errinfo_set(ei, SHOAL_EINVAL,
                                        "an example of collection \"%s\" has label %d; the plan's "
                                        "model has %u classes",
                                        sel->collection, (int)b.y[i], classes);
                goto done;
            }
        at += b.count;
    }
    err = SHOAL_OK;
    ds->count = at; /* examples deleted since the selection are skipped */
done:
    shoal_store_iter_free(it);
    shoal_store_close(st);
    if (err || (ds && ds->count == 0)) {
        if (ds)
            memset(ds->x, 0, ds->count * features * sizeof(float));
        shoal_dataset_free(ds);
        ds = NULL;
    }
    *out = ds;
    return err;
}

void client_wipe_dataset(shoal_dataset *ds)
{
    if (ds) {
        volatile float *x = ds->x;
        for (size_t i = 0; i < ds->count * ds->features; i++)
            x[i] = 0;
        shoal_dataset_free(ds);
    }
}

/* Reports a failure of the device's own work as Report{ERROR} (the server
 * counts the session dropped) and ends with outcome ERROR after the ack. */
void client_report_error(shoal_client *c, shoal_err err, const shoal_errinfo *ei)
{
    c->pending_outcome = SHOAL_SESSION_ERROR;
    c->pending_err = err;
    snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "%s", ei->msg);
    client_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR, 0, "device error");
}

void client_work(shoal_client *c)
{
    const Shoal__Plan *plan = c->accepted->plan;
    const int train = c->accepted->task_kind == SHOAL__TASK_KIND__TASK_KIND_TRAIN;
    shoal_errinfo ei = {{0}};
    shoal_model *model = NULL;
    shoal_dataset *ds = NULL;
    /* The app's own trainer needs no built-in model: only the plan's
     * shape, to select and check the examples. */
    const int custom = train ? c->cfg.trainer.train != NULL : c->cfg.trainer.evaluate != NULL;
    shoal_shape shape = {0, 0, 0};
    uint32_t classes = plan->model->classes;
    shoal_err err =
        custom ? plan_shape(c, plan->model, &shape, &ei) : build_model(plan->model, &model, &ei);
    if (err) {
        client_report_error(c, err, &ei);
        return;
    }
    if (!custom)
        shape = shoal_model_layer(model, 0)->in;
    uint64_t seed = c->cfg.train_seed;
    if (!seed && c->port->random(c->port->ctx, (uint8_t *)&seed, sizeof seed) != SHOAL_OK) {
        shoal_model_free(model);
        client_fail(c, SHOAL_ECRYPTO, "the port's random source failed");
        return;
    }
    err = gather(c, shape, classes, seed, &ds, &ei);
    if (err) {
        shoal_model_free(model);
        client_report_error(c, err, &ei);
        return;
    }
    uint64_t have = ds ? ds->count : 0;
    uint64_t need = plan->limits->has_min_examples && plan->limits->min_examples
                        ? plan->limits->min_examples
                        : 1;
    if (have < need) {
        client_wipe_dataset(ds);
        shoal_model_free(model);
        snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg,
                 "%llu examples selected from \"%s\"; the plan needs %llu",
                 (unsigned long long)have, plan->selector->collection, (unsigned long long)need);
        c->pending_outcome = SHOAL_SESSION_INSUFFICIENT_DATA;
        client_event(c, SHOAL_EVENT_INSUFFICIENT_DATA, 0, 0, have, (int64_t)need,
                     c->res.errinfo.msg);
        client_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INSUFFICIENT_DATA, 0, NULL);
        return;
    }

    c->stopped_ineligible = c->stopped_time = c->stopped_budget = 0;
    int64_t now = c->port->monotonic_ms(c->port->ctx);
    c->phase_start_ms = now;
    c->last_poll_ms = now;
    c->work_deadline_ms = now + (int64_t)plan->limits->max_duration_ms;
    size_t count = c->model_count;
    if (custom) {
        client_trainer_work(c, ds, seed, train);
        return;
    }

    if (!train) {
        /* Evaluate: loss and accuracy only, no update. */
        shoal_train_config tc = {.epochs = 1, .batch = 64};
        tc.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
        shoal_trainer *t = NULL;
        shoal_batch_stats stats = {0};
        err = shoal_trainer_new(model, &tc, &t);
        if (!err)
            err = shoal_trainer_evaluate(t, c->model, ds, NULL, ds->count, &stats);
        shoal_trainer_free(t);
        client_wipe_dataset(ds);
        shoal_model_free(model);
        if (err || stats.count == 0) {
            shoal_errinfo_set(&ei, err ? err : SHOAL_EINVAL, "evaluation failed: %s",
                              shoal_strerror(err));
            client_report_error(c, err ? err : SHOAL_EINVAL, &ei);
            return;
        }
        c->res.example_count = stats.count;
        c->res.loss = stats.loss_sum / (double)stats.count;
        c->res.accuracy = (double)stats.correct / (double)stats.count;
        c->pending_outcome = SHOAL_SESSION_EVALUATED;
        client_event(c, SHOAL_EVENT_EVALUATED, 0, client_phase_ms(c), stats.count, 0, NULL);
        client_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED, 0, NULL);
        return;
    }

    shoal_train_config tc;
    if (shoal_plan_train_config(plan, &tc) != SHOAL_OK) {
        client_wipe_dataset(ds);
        shoal_model_free(model);
        shoal_errinfo_set(&ei, SHOAL_EPROTO, "the plan's optimizer is not supported");
        client_report_error(c, SHOAL_EPROTO, &ei);
        return;
    }
    tc.should_stop = client_should_stop;
    tc.should_stop_ctx = c;
    float *delta = shoal_mallocarray(count, sizeof(float));
    shoal_train_result tr = {0};
    err = delta ? shoal_train_local(model, c->model, ds, NULL, ds->count, &tc, seed, delta, &tr)
                : SHOAL_ENOMEM;
    client_wipe_dataset(ds);
    shoal_model_free(model);
    c->res.example_count = tr.example_count;
    c->res.loss = tr.mean_loss;
    c->res.accuracy = tr.accuracy;
    if (err == SHOAL_ECANCELED) {
        /* Nothing of a partial run is reported: the delta is dropped. */
        shoal_free(delta);
        client_report_interrupted(c, tr.example_count);
        return;
    }
    if (err) {
        shoal_free(delta);
        shoal_errinfo_set(&ei, err, "local training failed: %s", shoal_strerror(err));
        client_report_error(c, err, &ei);
        return;
    }
    client_queue_update(c, delta, count, tr.example_count);
}

void client_report_interrupted(shoal_client *c, uint64_t example_count)
{
    snprintf(c->res.errinfo.msg, sizeof c->res.errinfo.msg, "training stopped: %s",
             c->stopped_ineligible ? c->stop_why
             : c->stopped_time     ? "the plan's time limit passed"
             : c->stopped_budget   ? "the session's time budget (budget_session_ms) ran out"
                                   : "the app's trainer canceled it");
    c->pending_outcome = SHOAL_SESSION_INTERRUPTED;
    client_event(c, SHOAL_EVENT_INTERRUPTED, 0, client_phase_ms(c), example_count, 0,
                 c->res.errinfo.msg);
    client_send_report(c, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED, 0, NULL);
}

void client_queue_update(shoal_client *c, float *delta, size_t count, uint64_t example_count)
{
    shoal_errinfo ei = {{0}};
    c->upload_len = count * 4;
    c->upload_bytes = shoal_malloc(c->upload_len);
    if (!c->upload_bytes ||
        shoal_tensor_encode_f32le(delta, count, c->upload_bytes, c->upload_len, &ei) != SHOAL_OK ||
        shoal_chunker_init(&c->chunker, c->upload_bytes, c->upload_len,
                           shoal_chunk_max_payload(c->codec_out.max_message_bytes)) != SHOAL_OK) {
        shoal_free(delta);
        if (!c->upload_bytes)
            shoal_errinfo_set(&ei, SHOAL_ENOMEM, "no memory for the update");
        client_report_error(c, SHOAL_ENUMERIC, &ei);
        return;
    }
    c->update = delta;
    c->update_count = count;
    c->pending_outcome = SHOAL_SESSION_TRAINED;
    client_event(c, SHOAL_EVENT_TRAINED, 0, client_phase_ms(c), example_count, 0, NULL);
    c->phase_start_ms = c->port->monotonic_ms(c->port->ctx);
    c->state = ST_UPLOAD;
}
