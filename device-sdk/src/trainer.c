/* The app's own trainer (shoal/client_trainer.h): the examples the plan
 * selected, read from the store by work.c's source batch by batch and
 * served to the callback in shuffled batches, with the client's stop
 * checks polled at every batch. The callback sees the plan's selection
 * and nothing else of the store. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/rng.h"
#include "work_int.h"

struct shoal_example_iter {
    shoal_devc_stop *stop;
    const shoal_example_source *src;
    size_t features;
    shoal_err read_err; /* a failed read of the store, kept for the report */
    uint32_t *order;    /* this epoch's permutation of 0..count-1 */
    size_t at;
    shoal_rng rng;
    float *x; /* the current batch */
    int32_t *y;
    size_t cap;
    int canceled;
};

static int iter_stop(shoal_example_iter *it)
{
    if (!it->canceled && shoal_devc_should_stop(it->stop))
        it->canceled = 1;
    return it->canceled;
}

/* A new order (Fisher-Yates, shoal_rng_shuffle_u32), drawn from a stream seeded with the
 * session's seed: a fixed train_seed gives the same batches. */
static void shuffle(shoal_example_iter *it)
{
    shoal_rng_shuffle_u32(&it->rng, it->order, it->src->count);
    it->at = 0;
}

shoal_err shoal_example_iter_next(shoal_example_iter *it, size_t max_examples,
                                  shoal_example_batch *batch)
{
    if (!it || !batch || max_examples == 0)
        return SHOAL_EINVAL;
    memset(batch, 0, sizeof *batch);
    if (iter_stop(it))
        return SHOAL_ECANCELED;
    size_t left = it->src->count - it->at;
    if (left == 0)
        return SHOAL_DONE;
    size_t n = left < max_examples ? left : max_examples;
    size_t features = it->features;
    if (n > it->cap) {
        float *x = shoal_mallocarray(n * features, sizeof(float));
        int32_t *y = shoal_mallocarray(n, sizeof(int32_t));
        if (!x || !y) {
            shoal_free(x);
            shoal_free(y);
            return SHOAL_ENOMEM;
        }
        if (it->x)
            memset(it->x, 0, it->cap * features * sizeof(float));
        shoal_free(it->x);
        shoal_free(it->y);
        it->x = x;
        it->y = y;
        it->cap = n;
    }
    shoal_err err = it->src->read(it->src->ctx, it->order + it->at, n, it->x, it->y);
    if (err) {
        it->read_err = err;
        return err;
    }
    it->at += n;
    *batch = (shoal_example_batch){.x = it->x, .y = it->y, .count = n, .feature_count = features};
    return SHOAL_ROW;
}

shoal_err shoal_example_iter_rewind(shoal_example_iter *it)
{
    if (!it)
        return SHOAL_EINVAL;
    if (iter_stop(it))
        return SHOAL_ECANCELED;
    shuffle(it);
    return SHOAL_OK;
}

uint64_t shoal_example_iter_size(const shoal_example_iter *it)
{
    return it ? it->src->count : 0;
}

int shoal_example_iter_should_stop(shoal_example_iter *it)
{
    return it ? iter_stop(it) : 1;
}

static void iter_fini(shoal_example_iter *it)
{
    if (it->x)
        memset(it->x, 0, it->cap * it->features * sizeof(float));
    shoal_free(it->x);
    shoal_free(it->y);
    shoal_free(it->order);
}

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

void shoal_devc_trainer_work(const shoal_client *c, shoal_devc_stop *stop,
                             const shoal_example_source *src, size_t features, uint64_t seed,
                             int train, shoal_devc_work_result *out)
{
    const Shoal__Plan *plan = c->accepted->plan;
    const Shoal__ModelSpec *spec = plan->model;
    const Shoal__ClientOptimizer *o = plan->optimizer;
    shoal_errinfo *ei = &out->ei;
    shoal_example_iter it = {.stop = stop, .src = src, .features = features};
    shoal_plan_info info = {
        .task = train ? SHOAL_PLAN_TRAIN : SHOAL_PLAN_EVALUATE,
        .round = c->res.round,
        .population = c->population,
        .architecture = spec->architecture ? spec->architecture : "",
        .input_shape = spec->input_shape,
        .input_rank = spec->n_input_shape,
        .classes = spec->classes,
        .parameter_count = c->model_count,
        .feature_count = features,
        .example_count = src->count,
        .optimizer_kind = o ? (int)o->kind : 0,
        .learning_rate = o ? o->learning_rate : 0,
        .epochs = o ? o->epochs : 1,
        .batch_size = o ? o->batch_size : 0,
        .max_duration_ms = plan->limits->max_duration_ms,
    };
    shoal_rng_seed(&it.rng, seed);
    it.order = shoal_mallocarray(src->count, sizeof(uint32_t));
    float *delta = train ? shoal_calloc(c->model_count, sizeof(float)) : NULL;
    if (!it.order || (train && !delta)) {
        shoal_free(delta);
        iter_fini(&it);
        out->end = SHOAL_DEVC_WORK_FAILED;
        out->reason = SHOAL_SESSION_REASON_DEVICE;
        out->err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "no memory for the app's trainer");
        return;
    }
    /* The store's iteration already shuffled the selection; epoch one
     * takes that order, rewinds draw new ones. */
    for (size_t i = 0; i < src->count; i++)
        it.order[i] = (uint32_t)i;
    shoal_train_metrics m = {0};
    const shoal_client_trainer *t = &c->cfg.trainer;
    shoal_err err = train ? t->train(t->ctx, c->model, c->model_count, &info, &it, delta, &m)
                          : t->evaluate(t->ctx, c->model, c->model_count, &info, &it, &m);
    int canceled = it.canceled;
    shoal_err read_err = it.read_err;
    iter_fini(&it);
    uint64_t selected = src->count;
    out->example_count = m.example_count ? m.example_count : selected;
    /* The app's trainer saw at most the plan's limit: a larger claim would
     * only get the report refused. */
    uint64_t claim_max = shoal_devc_plan_max_examples(plan);
    if (claim_max && out->example_count > claim_max)
        out->example_count = claim_max;
    out->loss = m.loss;
    out->accuracy = m.accuracy;
    if (canceled || err == SHOAL_ECANCELED) {
        /* The stop the iterator reported wins over what the callback
         * returned: a partial delta is never sent. */
        shoal_free(delta);
        shoal_devc_work_interrupted(stop, out);
        return;
    }
    if (read_err) {
        /* A batch the store could not give fails the session whatever
         * the callback made of it. */
        const shoal_devc_selection *sel = src->ctx;
        err = read_err;
        *ei = sel->ei;
    } else if (!err && train && !all_finite(delta, c->model_count))
        err = shoal_errinfo_set(ei, SHOAL_ENUMERIC,
                                "the app's trainer returned a delta with a NaN or an infinity");
    else if (err)
        shoal_errinfo_set(ei, err, "the app's %s callback failed: %s", train ? "train" : "evaluate",
                          shoal_strerror(err));
    if (err) {
        shoal_free(delta);
        out->end = SHOAL_DEVC_WORK_FAILED;
        out->reason = SHOAL_SESSION_REASON_WORK_FAILED;
        out->err = err;
        return;
    }
    if (!train) {
        out->end = SHOAL_DEVC_WORK_EVALUATED;
        return;
    }
    out->end = SHOAL_DEVC_WORK_TRAINED;
    out->delta = delta;
    out->delta_count = c->model_count;
}
