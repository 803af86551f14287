/* Shoal: local training, the one function devices and the simulator share.
 *
 * shoal_train_local() is what a device does in a round: start from the
 * global model, run E epochs of mini-batch training over its examples with
 * the plan's optimizer, and return the delta (local minus global), the
 * example count and metrics. The device SDK calls it on a phone; the
 * simulator calls it for each virtual device; so what is simulated is
 * exactly what ships.
 *
 * shoal_trainer is the lower layer it is built on, also used for
 * centralised training: a model, a workspace, an optimizer with its state,
 * and the batch buffers. Mini-batches are gathered from a shuffled index
 * permutation into one batch buffer: the dataset is never copied per epoch.
 * A trainer is not thread-safe; use one per thread. */
#ifndef SHOAL_TRAIN_H
#define SHOAL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/dataset.h"
#include "shoal/model.h"
#include "shoal/optim.h"
#include "shoal/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Cooperative cancellation, polled between batches: return non-zero to stop
 * (a device that stopped charging, a simulation deadline). */
typedef int (*shoal_should_stop_fn)(void *ctx);

typedef struct shoal_train_config {
    uint32_t epochs;                  /* >= 1 */
    uint32_t batch;                   /* >= 1; the last batch of an epoch may be smaller */
    uint64_t max_steps;               /* 0: no limit; otherwise stop after this many batches */
    shoal_optim_config optim;         /* client optimizer, including prox_mu */
    shoal_should_stop_fn should_stop; /* optional */
    void *should_stop_ctx;
} shoal_train_config;

typedef struct shoal_train_result {
    size_t example_count; /* distinct examples trained on */
    uint64_t steps;       /* optimizer steps taken */
    uint32_t epochs_done; /* complete epochs */
    double mean_loss;     /* mean training loss over all batches seen */
    double accuracy;      /* training accuracy over all batches seen */
} shoal_train_result;

typedef struct shoal_trainer shoal_trainer;

/* Examples that are not in one shoal_dataset in memory: a device's example
 * store, read batch by batch. `count` examples with the model's input
 * size; read() fills x ([n][features]) and y with the examples at
 * positions ids[0..n) (each < count, possibly repeated across calls, in
 * any order) and returns SHOAL_OK, or an error that ends the call it
 * happened in with that error. A position must name the same example on
 * every call. Labels outside the model's classes are an error
 * (SHOAL_EINVAL) whoever checks them first. */
typedef struct shoal_example_source {
    size_t count;
    shoal_err (*read)(void *ctx, const uint32_t *ids, size_t n, float *x, int32_t *y);
    void *ctx;
} shoal_example_source;

/* Checks a training config; ei names the bad field. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_train_config_check(const shoal_train_config *cfg,
                                                             shoal_errinfo *ei);

/* A trainer for `model` (borrowed; must outlive the trainer). SHOAL_EINVAL,
 * SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_new(const shoal_model *model,
                                                      const shoal_train_config *cfg,
                                                      shoal_trainer **out);
SHOAL_API void shoal_trainer_free(shoal_trainer *t);

/* One epoch over examples `indices[0..count)` of `data` (all of data when
 * indices is NULL), in an order shuffled by rng, updating params in place.
 * anchor is the FedProx reference (may be NULL). Adds into *stats.
 * Returns SHOAL_ECANCELED when should_stop fired (params hold the partial
 * progress), SHOAL_EINVAL for an input size or label that does not fit the
 * model, SHOAL_ENUMERIC when training diverged to NaN/Inf. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_epoch(shoal_trainer *t, float *params,
                                                        const float *anchor,
                                                        const shoal_dataset *data,
                                                        const uint32_t *indices, size_t count,
                                                        shoal_rng *rng, shoal_batch_stats *stats);

/* Sets the learning rate of the following epochs (for a schedule), keeping
 * the optimizer state. SHOAL_EINVAL for lr <= 0 or non-finite. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_set_lr(shoal_trainer *t, float lr);

/* Evaluates params on examples indices[0..count) of data (all when NULL). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_evaluate(shoal_trainer *t, const float *params,
                                                           const shoal_dataset *data,
                                                           const uint32_t *indices, size_t count,
                                                           shoal_batch_stats *stats);

/* Local training as a device does it: delta_out (param_count floats) =
 * trained model - global. Shuffling comes from `seed`, so the same inputs
 * give the same delta bit for bit. On SHOAL_ECANCELED or any error
 * delta_out is unspecified and must not be reported. Thread-safe for
 * distinct outputs: every call builds its own trainer. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_train_local(const shoal_model *model, const float *global,
                                                      const shoal_dataset *data,
                                                      const uint32_t *indices, size_t count,
                                                      const shoal_train_config *cfg, uint64_t seed,
                                                      float *delta_out, shoal_train_result *result);

/* The same with a caller-kept trainer (its optimizer is reset first), which
 * saves the allocations when one thread trains many virtual devices. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_run_local(shoal_trainer *t, const float *global,
                                                            const shoal_dataset *data,
                                                            const uint32_t *indices, size_t count,
                                                            uint64_t seed, float *delta_out,
                                                            shoal_train_result *result);

/* shoal_train_local and shoal_trainer_evaluate over a source: the same
 * arithmetic, so a source whose position p holds example p of a dataset
 * gives the dataset's results bit for bit. Holds one batch and 4 bytes
 * per example of the source in memory, never the whole source. Returns
 * what the dataset versions return, SHOAL_EINVAL also for a NULL source,
 * one without read or with more than UINT32_MAX examples, and any error
 * the source's read returns (training stops there). read is called on the
 * caller's thread only; the source is borrowed for the call. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_train_local_source(
    const shoal_model *model, const float *global, const shoal_example_source *src,
    const shoal_train_config *cfg, uint64_t seed, float *delta_out, shoal_train_result *result);
/* The same with a caller-kept trainer (see shoal_trainer_run_local). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_run_local_source(shoal_trainer *t,
                                                                   const float *global,
                                                                   const shoal_example_source *src,
                                                                   uint64_t seed, float *delta_out,
                                                                   shoal_train_result *result);
/* Heap bytes the trainer holds now (workspace, optimizer state, gradient,
 * working copy of the parameters, batch buffers, example order); the
 * order grows to 4 bytes per example at the first run over more examples
 * than before. 0 for NULL. */
SHOAL_API size_t shoal_trainer_bytes(const shoal_trainer *t);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_trainer_evaluate_source(shoal_trainer *t,
                                                                  const float *params,
                                                                  const shoal_example_source *src,
                                                                  shoal_batch_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
