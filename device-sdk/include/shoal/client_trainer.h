/* Shoal device SDK: the app's own trainer, called by the client through
 * callbacks instead of the built-in models of ml/ (docs/sdk.md, "Your own
 * trainer").
 *
 * The client still does everything around the training: eligibility,
 * check-in, download, selecting the plan's examples from the example
 * store, the upload and the report. The app's train callback gets the
 * global weights, a description of the plan, and an iterator over the
 * plan's examples only (shuffled, in batches, rewound per epoch); it fills
 * the delta (new weights minus the given ones, `count` floats) and the
 * metrics. The client polls the eligibility policy and the time limits
 * inside the iterator: when the device becomes ineligible,
 * shoal_example_iter_next returns SHOAL_ECANCELED and the callback should
 * return SHOAL_ECANCELED at once. Whatever the callback then returns,
 * nothing is uploaded and the session ends INTERRUPTED.
 *
 *     static shoal_err my_train(void *ctx, const float *weights, size_t count,
 *                               const shoal_plan_info *plan, shoal_example_iter *it,
 *                               float *delta_out, shoal_train_metrics *metrics_out)
 *     {
 *         for (uint32_t e = 0; e < plan->epochs; e++) {
 *             shoal_example_batch b;
 *             shoal_err err;
 *             while ((err = shoal_example_iter_next(it, plan->batch_size, &b)) == SHOAL_ROW)
 *                 step(ctx, b.x, b.y, b.count);
 *             if (err != SHOAL_DONE)
 *                 return err;                     // SHOAL_ECANCELED: stop now
 *             if ((err = shoal_example_iter_rewind(it)) != SHOAL_OK)
 *                 return err;
 *         }
 *         ... delta_out[i] = new[i] - weights[i]; metrics_out->... ;
 *         return SHOAL_OK;
 *     }
 *     cfg.trainer = (shoal_client_trainer){.train = my_train, .ctx = app};
 *
 * The callbacks run on the thread that calls shoal_client_run or
 * shoal_client_step, inside that call. */
#ifndef SHOAL_CLIENT_TRAINER_H
#define SHOAL_CLIENT_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which task the plan asks for. */
typedef enum shoal_plan_task {
    SHOAL_PLAN_TRAIN = 1,
    SHOAL_PLAN_EVALUATE = 2,
} shoal_plan_task;

/* What the server's plan says, for the callback; borrowed for the call. */
typedef struct shoal_plan_info {
    shoal_plan_task task;
    uint64_t round;
    const char *population;
    /* The model: architecture name as the server configured it (the SDK
     * need not know it), input shape (rank 1..3), classes, and the number
     * of parameters (== the callback's count). */
    const char *architecture;
    const uint32_t *input_shape;
    size_t input_rank;
    uint32_t classes;
    size_t parameter_count;
    /* Features per example (the product of input_shape) and how many
     * examples the plan selected on this device. */
    size_t feature_count;
    uint64_t example_count;
    /* The client optimizer (TRAIN): ClientOptimizer.kind of
     * docs/protocol.md (1 SGD, ...), its learning rate, epochs and batch
     * size as the server sent them. */
    int optimizer_kind;
    float learning_rate;
    uint32_t epochs;
    uint32_t batch_size;
    /* The plan's limit on local work; the client stops the iterator when
     * it passes. */
    uint64_t max_duration_ms;
} shoal_plan_info;

/* What the callback reports; only aggregates leave the device. */
typedef struct shoal_train_metrics {
    uint64_t example_count; /* distinct examples used; 0 gives the selection's size */
    double loss;            /* mean loss */
    double accuracy;        /* 0..1 */
} shoal_train_metrics;

/* Examples of the plan's selection, read by the callback in batches. */
typedef struct shoal_example_iter shoal_example_iter;

/* One batch: count examples of feature_count floats each (x, row-major)
 * and their labels (y, 0..classes-1). Borrowed until the next call on the
 * iterator. */
typedef struct shoal_example_batch {
    const float *x;
    const int32_t *y;
    size_t count;
    size_t feature_count;
} shoal_example_batch;

/* Fills *batch with up to max_examples (>= 1) examples of the current
 * epoch. Returns SHOAL_ROW (a batch), SHOAL_DONE (the epoch is over:
 * rewind for another), SHOAL_ECANCELED (the device became ineligible, or
 * the plan's or the session's time ran out: stop and return
 * SHOAL_ECANCELED), SHOAL_EINVAL (NULL arguments, max_examples 0), or an
 * error reading the example store (SHOAL_EIO, SHOAL_ECRYPTO,
 * SHOAL_EFORMAT, SHOAL_ENOMEM, SHOAL_EINVAL for a label outside the
 * plan's classes: return it; the session ends ERROR naming the cause
 * whatever the callback returns). Examples are read from the store as
 * batches are asked for: the iterator holds one batch of the largest
 * max_examples asked and 4 bytes per selected example. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_example_iter_next(shoal_example_iter *it,
                                                            size_t max_examples,
                                                            shoal_example_batch *batch);

/* Starts another epoch over the same examples in a new order. Returns
 * SHOAL_OK, SHOAL_ECANCELED (as above), SHOAL_EINVAL (NULL). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_example_iter_rewind(shoal_example_iter *it);

/* Examples in the selection (per epoch); 0 for NULL. */
SHOAL_API uint64_t shoal_example_iter_size(const shoal_example_iter *it);

/* For callbacks that work long without reading: non-zero when the client
 * wants the work stopped (the same checks as next). */
SHOAL_API int shoal_example_iter_should_stop(shoal_example_iter *it);

/* The app's trainer. train is required to use it; evaluate is optional
 * (without it, evaluation plans use the built-in model of ml/, which must
 * then know the plan's architecture). Return SHOAL_OK with delta_out /
 * metrics_out filled, SHOAL_ECANCELED when stopped (session
 * INTERRUPTED, nothing uploaded), or any other error (session ERROR,
 * Report{ERROR} sent). A delta with a NaN or an infinity is an error
 * (SHOAL_ENUMERIC). ctx is passed through. */
typedef struct shoal_client_trainer {
    shoal_err (*train)(void *ctx, const float *weights, size_t count, const shoal_plan_info *plan,
                       shoal_example_iter *examples, float *delta_out,
                       shoal_train_metrics *metrics_out);
    shoal_err (*evaluate)(void *ctx, const float *weights, size_t count,
                          const shoal_plan_info *plan, shoal_example_iter *examples,
                          shoal_train_metrics *metrics_out);
    void *ctx;
} shoal_client_trainer;

#ifdef __cplusplus
}
#endif

#endif
