/* Direct convolution kernels for the small convolutions of the cnn, where
 * im2col and a GEMM of a few output channels spend more time copying and
 * packing than multiplying (docs/ml.md, "Convolutions").
 *
 * Private to ml/: layer.c chooses them with shoal_conv_direct_fits() and
 * falls back to im2col + GEMM for every other geometry. Layouts are the
 * layer's: activations channel-major across the batch, in[c][b][y][x] and
 * out[o][b][oy][ox]; weights w[o][c][ky][kx]. The kernels are pure
 * functions of their arguments and thread-safe. Built with GCC for x86-64
 * Linux, each exists twice, for x86-64-v3 (AVX2, FMA) and for the baseline,
 * and the loader picks one for the CPU at hand. */
#ifndef SHOAL_ML_CONV_DIRECT_H
#define SHOAL_ML_CONV_DIRECT_H

#include <stdbool.h>
#include <stddef.h>

#include "shoal/layer.h"

/* Whether the direct kernels handle this conv2d layer's geometry: stride 1,
 * no padding, a 3x3 or 5x5 kernel, rows of at least eight outputs. */
bool shoal_conv_direct_fits(const shoal_layer *l);

/* out = bias + the convolution of `in` with the weights, for `batch`
 * examples (out is overwritten). */
void shoal_conv_direct_forward(const shoal_layer *l, const float *w, const float *bias,
                               const float *in, float *out, size_t batch);

/* gw += the weight gradient of the batch: gw[o][c][ky][kx] +=
 * sum over b, oy, ox of dout[o][b][oy][ox] * in[c][b][oy+ky][ox+kx]. */
void shoal_conv_direct_weight_grad(const shoal_layer *l, const float *dout, const float *in,
                                   float *gw, size_t batch);

#endif
