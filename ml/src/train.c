#include "shoal/train.h"

#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/rng.h"

struct shoal_trainer {
    const shoal_model *model;
    shoal_train_config cfg;
    shoal_model_ws *ws;
    shoal_optim *optim;
    size_t params;
    float *grad;
    float *work;    /* local copy of the parameters for train_local */
    float *batch_x; /* [batch][features] */
    int32_t *batch_y;
    uint32_t *order; /* shuffled example indices */
    size_t order_cap;
};

shoal_err shoal_train_config_check(const shoal_train_config *cfg, shoal_errinfo *ei)
{
    if (!cfg)
        return SHOAL_EINVAL;
    if (cfg->epochs == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "epochs: must be at least 1");
    if (cfg->batch == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "batch: must be at least 1");
    return shoal_optim_config_check(&cfg->optim, ei);
}

shoal_err shoal_trainer_new(const shoal_model *model, const shoal_train_config *cfg,
                            shoal_trainer **out)
{
    if (!model || !out || shoal_train_config_check(cfg, NULL) != SHOAL_OK)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_trainer *t = shoal_calloc(1, sizeof *t);
    if (!t)
        return SHOAL_ENOMEM;
    t->model = model;
    t->cfg = *cfg;
    t->params = shoal_model_param_count(model);
    shoal_err err = shoal_model_ws_new(model, cfg->batch, &t->ws);
    if (err)
        goto fail;
    if ((err = shoal_optim_new(&cfg->optim, t->params, &t->optim)))
        goto fail;
    err = SHOAL_ENOMEM;
    t->grad = shoal_mallocarray(t->params, sizeof(float));
    t->work = shoal_mallocarray(t->params, sizeof(float));
    t->batch_x =
        shoal_mallocarray((size_t)cfg->batch * shoal_model_input_size(model), sizeof(float));
    t->batch_y = shoal_mallocarray(cfg->batch, sizeof(int32_t));
    if (!t->grad || !t->work || !t->batch_x || !t->batch_y)
        goto fail;
    *out = t;
    return SHOAL_OK;
fail:
    shoal_trainer_free(t);
    return err;
}

void shoal_trainer_free(shoal_trainer *t)
{
    if (!t)
        return;
    shoal_model_ws_free(t->ws);
    shoal_optim_free(t->optim);
    shoal_free(t->grad);
    shoal_free(t->work);
    shoal_free(t->batch_x);
    shoal_free(t->batch_y);
    shoal_free(t->order);
    shoal_free(t);
}

static shoal_err check_data(const shoal_trainer *t, const shoal_dataset *data,
                            const uint32_t *indices, size_t count)
{
    if (!data || data->features != shoal_model_input_size(t->model))
        return SHOAL_EINVAL;
    if (data->classes > shoal_model_classes(t->model))
        return SHOAL_EINVAL;
    if (indices)
        for (size_t i = 0; i < count; i++)
            if (indices[i] >= data->count)
                return SHOAL_EINVAL;
    return SHOAL_OK;
}

/* Fills t->order with the examples to visit. */
static shoal_err load_order(shoal_trainer *t, const shoal_dataset *data, const uint32_t *indices,
                            size_t count)
{
    if (count > t->order_cap) {
        uint32_t *order = shoal_realloc(t->order, count * sizeof *order);
        if (!order)
            return SHOAL_ENOMEM;
        t->order = order;
        t->order_cap = count;
    }
    if (indices)
        memcpy(t->order, indices, count * sizeof *indices);
    else
        for (size_t i = 0; i < count; i++)
            t->order[i] = (uint32_t)i;
    (void)data;
    return SHOAL_OK;
}

static shoal_err dataset_read(void *ctx, const uint32_t *ids, size_t n, float *x, int32_t *y)
{
    shoal_dataset_gather(ctx, ids, n, x, y);
    return SHOAL_OK;
}

/* A dataset seen as a source (its indices were checked by check_data). */
static shoal_example_source dataset_source(const shoal_dataset *data)
{
    return (shoal_example_source){data ? data->count : 0, dataset_read, (void *)data};
}

static shoal_err run_epoch(shoal_trainer *t, float *params, const float *anchor,
                           const shoal_example_source *src, size_t count, shoal_rng *rng,
                           shoal_batch_stats *stats, uint64_t *steps)
{
    shoal_rng_shuffle_u32(rng, t->order, count);
    const size_t batch = t->cfg.batch;
    for (size_t start = 0; start < count; start += batch) {
        if (t->cfg.max_steps && *steps >= t->cfg.max_steps)
            return SHOAL_DONE;
        if (t->cfg.should_stop && t->cfg.should_stop(t->cfg.should_stop_ctx))
            return SHOAL_ECANCELED;
        size_t n = count - start < batch ? count - start : batch;
        shoal_err err = src->read(src->ctx, t->order + start, n, t->batch_x, t->batch_y);
        if (err)
            return err;
        err = shoal_model_grad(t->model, t->ws, params, t->batch_x, t->batch_y, n, t->grad, stats);
        if (err)
            return err;
        shoal_optim_step(t->optim, params, t->grad, anchor);
        (*steps)++;
    }
    return SHOAL_OK;
}

shoal_err shoal_trainer_epoch(shoal_trainer *t, float *params, const float *anchor,
                              const shoal_dataset *data, const uint32_t *indices, size_t count,
                              shoal_rng *rng, shoal_batch_stats *stats)
{
    if (!t || !params || !rng)
        return SHOAL_EINVAL;
    if (data && !indices)
        count = data->count;
    shoal_err err = check_data(t, data, indices, count);
    if (err || (err = load_order(t, data, indices, count)))
        return err;
    uint64_t steps = 0;
    shoal_batch_stats local = {0};
    shoal_example_source src = dataset_source(data);
    err = run_epoch(t, params, anchor, &src, count, rng, &local, &steps);
    if (stats) {
        stats->loss_sum += local.loss_sum;
        stats->correct += local.correct;
        stats->count += local.count;
    }
    if (err == SHOAL_DONE)
        err = SHOAL_OK;
    if (!err && local.count && !isfinite(local.loss_sum))
        err = SHOAL_ENUMERIC;
    return err;
}

shoal_err shoal_trainer_set_lr(shoal_trainer *t, float lr)
{
    if (!t)
        return SHOAL_EINVAL;
    shoal_err err = shoal_optim_set_lr(t->optim, lr);
    if (!err)
        t->cfg.optim.lr = lr;
    return err;
}

/* Evaluates over positions 0..count-1 of src, batch by batch. */
static shoal_err evaluate_source(shoal_trainer *t, const float *params,
                                 const shoal_example_source *src, const uint32_t *indices,
                                 size_t count, shoal_batch_stats *stats)
{
    const size_t batch = t->cfg.batch;
    uint32_t seq[256];
    for (size_t start = 0; start < count; start += batch) {
        size_t n = count - start < batch ? count - start : batch;
        shoal_err err;
        if (indices) {
            err = src->read(src->ctx, indices + start, n, t->batch_x, t->batch_y);
        } else {
            /* Sequential positions in chunks, without allocating. */
            size_t features = shoal_model_input_size(t->model);
            err = SHOAL_OK;
            for (size_t done = 0; done < n && !err;) {
                size_t k = n - done < 256 ? n - done : 256;
                for (size_t i = 0; i < k; i++)
                    seq[i] = (uint32_t)(start + done + i);
                err = src->read(src->ctx, seq, k, t->batch_x + done * features, t->batch_y + done);
                done += k;
            }
        }
        if (err ||
            (err = shoal_model_eval(t->model, t->ws, params, t->batch_x, t->batch_y, n, stats)))
            return err;
    }
    return SHOAL_OK;
}

shoal_err shoal_trainer_evaluate(shoal_trainer *t, const float *params, const shoal_dataset *data,
                                 const uint32_t *indices, size_t count, shoal_batch_stats *stats)
{
    if (!t || !params)
        return SHOAL_EINVAL;
    if (data && !indices)
        count = data->count;
    shoal_err err = check_data(t, data, indices, count);
    if (err)
        return err;
    shoal_example_source src = dataset_source(data);
    return evaluate_source(t, params, &src, indices, count, stats);
}

static int source_ok(const shoal_example_source *src)
{
    return src && src->read && src->count <= UINT32_MAX;
}

shoal_err shoal_trainer_evaluate_source(shoal_trainer *t, const float *params,
                                        const shoal_example_source *src, shoal_batch_stats *stats)
{
    if (!t || !params || !source_ok(src))
        return SHOAL_EINVAL;
    return evaluate_source(t, params, src, NULL, src->count, stats);
}

/* Local training over the `count` positions in t->order. */
static shoal_err run_local(shoal_trainer *t, const float *global, const shoal_example_source *src,
                           size_t count, uint64_t seed, float *delta_out,
                           shoal_train_result *result)
{
    shoal_err err = SHOAL_OK;
    shoal_optim_reset(t->optim);
    memcpy(t->work, global, t->params * sizeof(float));
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    shoal_batch_stats stats = {0};
    uint64_t steps = 0;
    uint32_t epochs = 0;
    const float *anchor = t->cfg.optim.prox_mu != 0.0f ? global : NULL;
    for (; epochs < t->cfg.epochs; epochs++) {
        err = run_epoch(t, t->work, anchor, src, count, &rng, &stats, &steps);
        if (err)
            break;
    }
    if (err == SHOAL_DONE)
        err = SHOAL_OK;
    if (!err && stats.count && !isfinite(stats.loss_sum))
        err = SHOAL_ENUMERIC;
    if (!err)
        for (size_t i = 0; i < t->params; i++) {
            delta_out[i] = t->work[i] - global[i];
            if (!isfinite(delta_out[i]))
                err = SHOAL_ENUMERIC;
        }
    if (result) {
        /* Stopped inside the first epoch (max_steps, cancellation): only
         * the examples of the batches taken count. */
        uint64_t seen = steps * t->cfg.batch;
        result->example_count = epochs > 0 || seen >= count ? count : (size_t)seen;
        result->steps = steps;
        result->epochs_done = epochs;
        result->mean_loss = stats.count ? stats.loss_sum / (double)stats.count : 0.0;
        result->accuracy = stats.count ? (double)stats.correct / (double)stats.count : 0.0;
    }
    return err;
}

shoal_err shoal_trainer_run_local(shoal_trainer *t, const float *global, const shoal_dataset *data,
                                  const uint32_t *indices, size_t count, uint64_t seed,
                                  float *delta_out, shoal_train_result *result)
{
    if (!t || !global || !delta_out || !data)
        return SHOAL_EINVAL;
    if (!indices)
        count = data->count;
    shoal_err err = check_data(t, data, indices, count);
    if (err || (err = load_order(t, data, indices, count)))
        return err;
    shoal_example_source src = dataset_source(data);
    return run_local(t, global, &src, count, seed, delta_out, result);
}

shoal_err shoal_train_local(const shoal_model *model, const float *global,
                            const shoal_dataset *data, const uint32_t *indices, size_t count,
                            const shoal_train_config *cfg, uint64_t seed, float *delta_out,
                            shoal_train_result *result)
{
    shoal_trainer *t;
    shoal_err err = shoal_trainer_new(model, cfg, &t);
    if (err)
        return err;
    err = shoal_trainer_run_local(t, global, data, indices, count, seed, delta_out, result);
    shoal_trainer_free(t);
    return err;
}

shoal_err shoal_trainer_run_local_source(shoal_trainer *t, const float *global,
                                         const shoal_example_source *src, uint64_t seed,
                                         float *delta_out, shoal_train_result *result)
{
    if (!t || !global || !delta_out || !source_ok(src))
        return SHOAL_EINVAL;
    shoal_err err = load_order(t, NULL, NULL, src->count);
    if (!err)
        err = run_local(t, global, src, src->count, seed, delta_out, result);
    return err;
}

shoal_err shoal_train_local_source(const shoal_model *model, const float *global,
                                   const shoal_example_source *src, const shoal_train_config *cfg,
                                   uint64_t seed, float *delta_out, shoal_train_result *result)
{
    if (!global || !delta_out || !source_ok(src))
        return SHOAL_EINVAL;
    shoal_trainer *t;
    shoal_err err = shoal_trainer_new(model, cfg, &t);
    if (err)
        return err;
    err = shoal_trainer_run_local_source(t, global, src, seed, delta_out, result);
    shoal_trainer_free(t);
    return err;
}

size_t shoal_trainer_bytes(const shoal_trainer *t)
{
    if (!t)
        return 0;
    size_t features = shoal_model_input_size(t->model);
    return sizeof *t + shoal_model_ws_bytes(t->ws) + shoal_optim_bytes(t->optim) +
           2 * t->params * sizeof(float) + (size_t)t->cfg.batch * features * sizeof(float) +
           (size_t)t->cfg.batch * sizeof(int32_t) + t->order_cap * sizeof(uint32_t);
}
