/* Shoal: the layers models are made of.
 *
 * A layer maps a batch of inputs to a batch of outputs and back-propagates.
 * It owns no memory: its parameters live in the model's ONE flat parameter
 * vector at `param_offset` (weights first, then bias), and its activations
 * and scratch live in the workspace the caller passes in.
 *
 * Activation layout: dense layers work on [batch][features]. Spatial layers
 * (conv2d, maxpool2d) work channel-major, [channel][batch][height][width], so
 * that a convolution over the whole batch is one GEMM whose output needs no
 * transpose; flatten turns that into [batch][channel*height*width] (the
 * PyTorch NCHW flattening order). Weights use PyTorch's layouts: dense
 * [out][in], conv2d [out_channels][in_channels][kernel][kernel], so
 * parameter vectors can be compared with PyTorch directly.
 *
 * All functions are reentrant: concurrent calls on different workspaces are
 * safe; the layer and the parameters are only read. */
#ifndef SHOAL_LAYER_H
#define SHOAL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shoal_layer_kind {
    SHOAL_LAYER_DENSE,
    SHOAL_LAYER_CONV2D,
    SHOAL_LAYER_MAXPOOL2D,
    SHOAL_LAYER_RELU,
    SHOAL_LAYER_FLATTEN,
} shoal_layer_kind;

/* Per-example shape. A flat vector of n features is {n, 1, 1}. */
typedef struct shoal_shape {
    uint32_t c, h, w;
} shoal_shape;

typedef struct shoal_layer {
    shoal_layer_kind kind;
    shoal_shape in, out;
    uint32_t kernel, stride, pad; /* conv2d, maxpool2d */
    size_t param_offset;          /* into the model's parameter vector */
    size_t weight_count, bias_count;
    /* conv2d: examples per im2col block. The convolution unrolls and
     * multiplies one block of the batch at a time so that its im2col matrix
     * stays in the cache whatever the batch; shoal_layer_make sets it from
     * SHOAL_CONV_BLOCK_FLOATS. 0 means the whole batch at once. Any value
     * gives the same results up to float rounding. */
    uint32_t block;
} shoal_layer;

/* The im2col matrix of one conv2d block is kept under this many floats
 * (128 KiB, a quarter of a 512 KiB L2 cache), and at one example at least. */
#define SHOAL_CONV_BLOCK_FLOATS ((size_t)32 * 1024)

static inline size_t shoal_shape_size(shoal_shape s)
{
    return (size_t)s.c * s.h * s.w;
}

/* Fills *layer for the given kind and input shape, computing the output
 * shape and parameter counts; param_offset is left 0 for the caller to set.
 * For dense, `units` is the output width; for conv2d, the output channels;
 * unused otherwise. Returns SHOAL_EINVAL for impossible geometry (kernel
 * larger than the padded input, zero sizes, dense input that is not flat). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_layer_make(shoal_layer_kind kind, shoal_shape in,
                                                     uint32_t units, uint32_t kernel,
                                                     uint32_t stride, uint32_t pad,
                                                     shoal_layer *layer);

/* Floats of scratch the layer keeps from forward to backward for `batch`
 * examples (conv2d: the im2col matrix of one block, none for the geometries
 * the direct kernels handle: stride 1, no padding, 3x3 or 5x5, rows of 8
 * outputs or more; maxpool2d: argmax indices). */
SHOAL_API size_t shoal_layer_saved_floats(const shoal_layer *layer, size_t batch);
/* Floats of temporary scratch needed during backward only (conv2d: the
 * column gradient of one block). May be shared by all layers of a model. */
SHOAL_API size_t shoal_layer_temp_floats(const shoal_layer *layer, size_t batch);

/* out = layer(in) for `batch` examples. `saved` holds
 * shoal_layer_saved_floats() floats and must be passed unchanged to
 * shoal_layer_backward. in and out must not overlap. */
SHOAL_API void shoal_layer_forward(const shoal_layer *layer, const float *params, const float *in,
                                   float *out, size_t batch, float *saved);

/* Given dout = dLoss/dout, ADDS dLoss/dparams into grad (the full gradient
 * vector, same layout as params) and, unless din is NULL, WRITES
 * dLoss/din. `in`, `out` and `saved` are those of the matching forward
 * call; `temp` holds shoal_layer_temp_floats() floats. */
SHOAL_API void shoal_layer_backward(const shoal_layer *layer, const float *params, const float *in,
                                    const float *out, const float *dout, float *din, float *grad,
                                    size_t batch, float *saved, float *temp);

/* Mean softmax cross-entropy over the batch. logits [batch][classes],
 * labels in [0, classes). Writes dlogits = dLoss/dlogits unless NULL; adds
 * the summed (not mean) loss into *loss_sum and the number of argmax hits
 * into *correct (either may be NULL). Returns SHOAL_EINVAL for a label out of
 * range, SHOAL_ENUMERIC when a logit is NaN or Inf. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_softmax_xent(const float *logits, const int32_t *labels,
                                                       size_t batch, uint32_t classes,
                                                       float *dlogits, double *loss_sum,
                                                       size_t *correct);

#ifdef __cplusplus
}
#endif

#endif
