/* Shoal: models as a spec plus ONE flat float parameter vector.
 *
 * A shoal_model is an immutable description: its layers and the named
 * layout of its parameter vector ("conv1.weight" at offset 0, shape
 * [6,1,5,5], ...). The parameters themselves are a plain float array the
 * caller owns, of shoal_model_param_count() floats, so that aggregation,
 * compression and secure aggregation all work on one vector. A model may be
 * shared by any number of threads; each thread that computes needs its own
 * shoal_model_ws (workspace: activations and scratch for one batch size).
 *
 * Inputs are [batch][c*h*w] floats in NCHW order; labels are int32 class
 * indices in [0, classes). */
#ifndef SHOAL_MODEL_H
#define SHOAL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shoal_model_arch {
    SHOAL_MODEL_LOGREG, /* softmax regression */
    SHOAL_MODEL_MLP,    /* 784-200-200-10, McMahan et al. 2017 "2NN" */
    SHOAL_MODEL_CNN,    /* NIID-Bench CNN (Li et al. 2022): conv6@5 pool conv16@5 pool 120 84 */
    SHOAL_MODEL_CNN2,   /* McMahan et al. 2017 CNN: conv32@5 pool conv64@5 pool 512 */
} shoal_model_arch;

typedef struct shoal_model shoal_model;
typedef struct shoal_model_ws shoal_model_ws;

/* One named tensor inside the parameter vector. */
typedef struct shoal_param_info {
    char name[32];     /* "fc1.weight" */
    size_t offset;     /* in floats */
    size_t count;      /* floats */
    uint32_t rank;     /* 1, 2 or 4 */
    uint32_t shape[4]; /* PyTorch order: [out][in] or [out][in][k][k] */
} shoal_param_info;

/* Loss and accuracy accumulated over batches. */
typedef struct shoal_batch_stats {
    double loss_sum; /* summed (not mean) cross-entropy */
    size_t correct;  /* argmax hits */
    size_t count;    /* examples seen */
} shoal_batch_stats;

/* "logreg", "mlp", "cnn", "cnn2" <-> arch. parse returns SHOAL_EINVAL for an
 * unknown name. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_model_arch_parse(const char *name, shoal_model_arch *out);
SHOAL_API const char *shoal_model_arch_name(shoal_model_arch arch);

/* Builds the model for inputs of shape `in` and `classes` outputs. The conv
 * architectures need h, w >= 16 (two 5x5 convolutions and two poolings).
 * Returns SHOAL_EINVAL for an unknown arch or impossible shape, SHOAL_ENOMEM.
 * Free with shoal_model_free (NULL is a no-op). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_model_new(shoal_model_arch arch, shoal_shape in,
                                                    uint32_t classes, shoal_model **out);
SHOAL_API void shoal_model_free(shoal_model *model);

SHOAL_API shoal_model_arch shoal_model_get_arch(const shoal_model *model);
SHOAL_API size_t shoal_model_param_count(const shoal_model *model);
SHOAL_API size_t shoal_model_input_size(const shoal_model *model);
SHOAL_API uint32_t shoal_model_classes(const shoal_model *model);
/* Multiply-accumulates of one forward pass of one example; a training step
 * costs about three times that. */
SHOAL_API uint64_t shoal_model_macs_per_example(const shoal_model *model);
/* Floating-point operations of one training step per example, counted from
 * the layer shapes as 2 per multiply-accumulate of the GEMMs: the forward
 * pass, the weight gradients, and the input gradients of every layer that
 * has a layer with parameters below it (the ones shoal_model_grad computes;
 * bias, activation and pooling passes are not counted). What a benchmark
 * divides by to report GFLOP/s. */
SHOAL_API uint64_t shoal_model_train_flops_per_example(const shoal_model *model);

/* The named layout: tensor i of shoal_model_tensor_count(). Pointers live as
 * long as the model. */
SHOAL_API size_t shoal_model_tensor_count(const shoal_model *model);
SHOAL_API const shoal_param_info *shoal_model_tensor(const shoal_model *model, size_t i);
SHOAL_API size_t shoal_model_layer_count(const shoal_model *model);
SHOAL_API const shoal_layer *shoal_model_layer(const shoal_model *model, size_t i);

/* Deterministic initialisation from `seed` (same seed, same vector, on every
 * platform): weights and biases uniform in +-1/sqrt(fan_in), PyTorch's
 * default for Linear and Conv2d. */
SHOAL_API void shoal_model_init_params(const shoal_model *model, uint64_t seed, float *params);

/* Workspace for batches of up to max_batch examples. SHOAL_EINVAL for
 * max_batch 0, SHOAL_ENOMEM. Not thread-safe: one per thread. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_model_ws_new(const shoal_model *model, size_t max_batch,
                                                       shoal_model_ws **out);
SHOAL_API void shoal_model_ws_free(shoal_model_ws *ws);
SHOAL_API size_t shoal_model_ws_max_batch(const shoal_model_ws *ws);
/* Bytes the workspace holds (activations, gradients of activations, scratch). */
SHOAL_API size_t shoal_model_ws_bytes(const shoal_model_ws *ws);

/* Forward and backward over one batch: OVERWRITES grad (param_count floats)
 * with the gradient of the mean cross-entropy and adds loss and hits into
 * *stats (may be NULL). SHOAL_EINVAL for batch 0 or above the workspace's
 * max, or a label out of range; SHOAL_ENUMERIC if the logits are NaN/Inf. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_model_grad(const shoal_model *model, shoal_model_ws *ws,
                                                     const float *params, const float *x,
                                                     const int32_t *labels, size_t batch,
                                                     float *grad, shoal_batch_stats *stats);

/* Forward only: adds loss and hits into *stats. Same errors as grad. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_model_eval(const shoal_model *model, shoal_model_ws *ws,
                                                     const float *params, const float *x,
                                                     const int32_t *labels, size_t batch,
                                                     shoal_batch_stats *stats);

/* Forward only: the logits of the last forward call, [batch][classes]; lives
 * until the next call on ws. */
SHOAL_API const float *shoal_model_ws_logits(const shoal_model_ws *ws);

#ifdef __cplusplus
}
#endif

#endif
