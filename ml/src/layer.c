#include "shoal/layer.h"

#include <math.h>
#include <string.h>

#include "shoal/blas.h"

#include "conv_direct.h"

shoal_err shoal_layer_make(shoal_layer_kind kind, shoal_shape in, uint32_t units, uint32_t kernel,
                           uint32_t stride, uint32_t pad, shoal_layer *layer)
{
    if (!layer || in.c == 0 || in.h == 0 || in.w == 0)
        return SHOAL_EINVAL;
    memset(layer, 0, sizeof *layer);
    layer->kind = kind;
    layer->in = in;
    switch (kind) {
    case SHOAL_LAYER_DENSE:
        if (units == 0 || in.h != 1 || in.w != 1)
            return SHOAL_EINVAL;
        layer->out = (shoal_shape){units, 1, 1};
        layer->weight_count = (size_t)units * in.c;
        layer->bias_count = units;
        return SHOAL_OK;
    case SHOAL_LAYER_CONV2D:
    case SHOAL_LAYER_MAXPOOL2D:
        if (kernel == 0 || stride == 0 || in.h + 2 * pad < kernel || in.w + 2 * pad < kernel)
            return SHOAL_EINVAL;
        if (kind == SHOAL_LAYER_MAXPOOL2D && pad != 0)
            return SHOAL_EINVAL;
        if (kind == SHOAL_LAYER_CONV2D && units == 0)
            return SHOAL_EINVAL;
        layer->kernel = kernel;
        layer->stride = stride;
        layer->pad = pad;
        layer->out.c = kind == SHOAL_LAYER_CONV2D ? units : in.c;
        layer->out.h = (in.h + 2 * pad - kernel) / stride + 1;
        layer->out.w = (in.w + 2 * pad - kernel) / stride + 1;
        if (kind == SHOAL_LAYER_CONV2D) {
            layer->weight_count = (size_t)units * in.c * kernel * kernel;
            layer->bias_count = units;
            /* As many examples per im2col block as fit the budget, at least one. */
            size_t per_example = (size_t)in.c * kernel * kernel * layer->out.h * layer->out.w;
            size_t block = SHOAL_CONV_BLOCK_FLOATS / per_example;
            layer->block = block == 0 ? 1 : block > UINT32_MAX ? UINT32_MAX : (uint32_t)block;
        }
        return SHOAL_OK;
    case SHOAL_LAYER_RELU:
        layer->out = in;
        return SHOAL_OK;
    case SHOAL_LAYER_FLATTEN:
        layer->out = (shoal_shape){in.c * in.h * in.w, 1, 1};
        return SHOAL_OK;
    }
    return SHOAL_EINVAL;
}

static size_t conv_col_rows(const shoal_layer *l)
{
    return (size_t)l->in.c * l->kernel * l->kernel;
}

/* Examples per im2col block for a batch of `batch`. */
static size_t conv_block(const shoal_layer *l, size_t batch)
{
    return l->block == 0 || l->block > batch ? batch : l->block;
}

/* Floats of one block's im2col matrix (and of its input-gradient twin). */
static size_t conv_temp_floats(const shoal_layer *l, size_t batch)
{
    return conv_col_rows(l) * conv_block(l, batch) * l->out.h * l->out.w;
}

size_t shoal_layer_saved_floats(const shoal_layer *l, size_t batch)
{
    switch (l->kind) {
    case SHOAL_LAYER_CONV2D:
        /* The direct kernels read the input itself; im2col keeps its matrix. */
        return shoal_conv_direct_fits(l) ? 0 : conv_temp_floats(l, batch);
    case SHOAL_LAYER_MAXPOOL2D:
        return shoal_shape_size(l->out) * batch;
    default:
        return 0;
    }
}

size_t shoal_layer_temp_floats(const shoal_layer *l, size_t batch)
{
    return l->kind == SHOAL_LAYER_CONV2D ? conv_temp_floats(l, batch) : 0;
}

/* ---- dense ---------------------------------------------------------- */

static void dense_forward(const shoal_layer *l, const float *params, const float *in, float *out,
                          size_t batch)
{
    const size_t ni = l->in.c, no = l->out.c;
    const float *w = params + l->param_offset, *bias = w + l->weight_count;
    for (size_t b = 0; b < batch; b++)
        memcpy(out + b * no, bias, no * sizeof *out);
    shoal_gemm(false, true, batch, no, ni, 1.0f, in, ni, w, ni, 1.0f, out, no);
}

static void dense_backward(const shoal_layer *l, const float *params, const float *in,
                           const float *dout, float *din, float *grad, size_t batch)
{
    const size_t ni = l->in.c, no = l->out.c;
    const float *w = params + l->param_offset;
    float *gw = grad + l->param_offset, *gb = gw + l->weight_count;
    shoal_gemm(true, false, no, ni, batch, 1.0f, dout, no, in, ni, 1.0f, gw, ni);
    for (size_t b = 0; b < batch; b++)
        for (size_t o = 0; o < no; o++)
            gb[o] += dout[b * no + o];
    if (din)
        shoal_gemm(false, false, batch, ni, no, 1.0f, dout, no, w, ni, 0.0f, din, ni);
}

/* ---- conv2d: im2col + GEMM --------------------------------------------- */

/* The output columns ox whose input column ox*S - pad + kx lies inside the
 * image: [*lo, *hi). */
static void valid_columns(const shoal_layer *l, size_t kx, size_t *lo, size_t *hi)
{
    const long S = (long)l->stride, P = (long)l->pad, W = (long)l->in.w, OW = (long)l->out.w;
    long first = P > (long)kx ? (P - (long)kx + S - 1) / S : 0;
    long span = W - 1 + P - (long)kx;
    long last = span < 0 ? 0 : span / S + 1; /* one past the last valid ox */
    if (last > OW)
        last = OW;
    if (first > last)
        first = last;
    *lo = (size_t)first;
    *hi = (size_t)(last < 0 ? 0 : last);
}

/* dst[0..n) = src[0..n) for the short rows of im2col, where a memcpy call
 * costs more than the copy: fixed-size chunks become vector moves. */
static inline void copy_row(float *restrict dst, const float *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        memcpy(dst + i, src + i, 8 * sizeof *dst);
    for (; i < n; i++)
        dst[i] = src[i];
}

/* dst[0..n) += src[0..n), for col2im's short rows: the fixed-size inner
 * loop vectorises without the aliasing checks and prologues that cost more
 * than eight additions. */
static inline void add_row(float *restrict dst, const float *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t u = 0; u < 8; u++)
            dst[i + u] += src[i + u];
    for (; i < n; i++)
        dst[i] += src[i];
}

/* The block of examples [b0, b0 + n) of a batch of `batch`, unrolled:
 * col[(c,ky,kx)][(j,oy,ox)] = in[c][b0+j][oy*s-pad+ky][ox*s-pad+kx] (0 outside). */
static void im2col(const shoal_layer *l, const float *in, float *col, size_t batch, size_t b0,
                   size_t n)
{
    const size_t H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    const size_t K = l->kernel, S = l->stride;
    const long P = (long)l->pad;
    const size_t cols = n * OH * OW;
    for (size_t c = 0; c < l->in.c; c++)
        for (size_t ky = 0; ky < K; ky++)
            for (size_t kx = 0; kx < K; kx++) {
                float *row = col + ((c * K + ky) * K + kx) * cols;
                size_t x_lo, x_hi;
                valid_columns(l, kx, &x_lo, &x_hi);
                for (size_t j = 0; j < n; j++) {
                    const float *plane = in + (c * batch + b0 + j) * H * W;
                    for (size_t oy = 0; oy < OH; oy++) {
                        float *dst = row + (j * OH + oy) * OW;
                        long iy = (long)(oy * S + ky) - P;
                        if (iy < 0 || iy >= (long)H) {
                            memset(dst, 0, OW * sizeof *dst);
                            continue;
                        }
                        const float *src = plane + (size_t)iy * W;
                        if (S == 1 && x_lo == 0 && x_hi == OW) {
                            /* The whole row lies inside the image: a copy. */
                            copy_row(dst, src + (long)kx - P, OW);
                            continue;
                        }
                        for (size_t ox = 0; ox < OW; ox++) {
                            long ix = (long)(ox * S + kx) - P;
                            dst[ox] = (ix >= 0 && ix < (long)W) ? src[ix] : 0.0f;
                        }
                    }
                }
            }
}

/* The adjoint of im2col for the same block: din[c][b0+j][y][x] = the sum of
 * the col entries it fed (the block's planes are overwritten). */
static void col2im(const shoal_layer *l, const float *col, float *din, size_t batch, size_t b0,
                   size_t n)
{
    const size_t H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    const size_t K = l->kernel, S = l->stride;
    const long P = (long)l->pad;
    const size_t cols = n * OH * OW;
    for (size_t c = 0; c < l->in.c; c++)
        memset(din + (c * batch + b0) * H * W, 0, n * H * W * sizeof *din);
    for (size_t c = 0; c < l->in.c; c++)
        for (size_t ky = 0; ky < K; ky++)
            for (size_t kx = 0; kx < K; kx++) {
                const float *row = col + ((c * K + ky) * K + kx) * cols;
                size_t x_lo, x_hi;
                valid_columns(l, kx, &x_lo, &x_hi);
                for (size_t j = 0; j < n; j++) {
                    float *plane = din + (c * batch + b0 + j) * H * W;
                    for (size_t oy = 0; oy < OH; oy++) {
                        long iy = (long)(oy * S + ky) - P;
                        if (iy < 0 || iy >= (long)H)
                            continue;
                        const float *src = row + (j * OH + oy) * OW;
                        float *dst = plane + (size_t)iy * W;
                        if (S == 1) {
                            add_row(dst + (long)kx - P + (long)x_lo, src + x_lo, x_hi - x_lo);
                            continue;
                        }
                        for (size_t ox = x_lo; ox < x_hi; ox++)
                            dst[ox * S + kx - (size_t)P] += src[ox];
                    }
                }
            }
}

/* The whole batch's im2col matrix would leave the cache as the batch grows:
 * im2col and the GEMMs run one block of l->block examples at a time, on a
 * block-sized col matrix (`col`, the layer's saved scratch). */
static void conv_forward(const shoal_layer *l, const float *params, const float *in, float *out,
                         size_t batch, float *col)
{
    const size_t oc = l->out.c, rows = conv_col_rows(l), plane = (size_t)l->out.h * l->out.w;
    const size_t cols = batch * plane, block = conv_block(l, batch);
    const float *w = params + l->param_offset, *bias = w + l->weight_count;
    if (shoal_conv_direct_fits(l)) {
        shoal_conv_direct_forward(l, w, bias, in, out, batch);
        return;
    }
    for (size_t b0 = 0; b0 < batch; b0 += block) {
        const size_t n = batch - b0 < block ? batch - b0 : block, span = n * plane;
        im2col(l, in, col, batch, b0, n);
        for (size_t o = 0; o < oc; o++) {
            float *dst = out + o * cols + b0 * plane;
            for (size_t j = 0; j < span; j++)
                dst[j] = bias[o];
        }
        shoal_gemm(false, false, oc, span, rows, 1.0f, w, rows, col, span, 1.0f, out + b0 * plane,
                   cols);
    }
}

/* Per block: the weight gradient accumulates dout_block x col_block^T, and
 * the input gradient is col2im(W^T x dout_block). With one block, the col
 * matrix forward left in `col` is still valid; with more it is rebuilt. */
static void conv_backward(const shoal_layer *l, const float *params, const float *in,
                          const float *dout, float *din, float *grad, size_t batch, float *col,
                          float *dcol)
{
    const size_t oc = l->out.c, rows = conv_col_rows(l), plane = (size_t)l->out.h * l->out.w;
    const size_t cols = batch * plane, block = conv_block(l, batch);
    const float *w = params + l->param_offset;
    float *gw = grad + l->param_offset, *gb = gw + l->weight_count;
    for (size_t o = 0; o < oc; o++) {
        const float *src = dout + o * cols;
        /* Eight partial sums: vectorisable and more accurate than one. */
        float acc[8] = {0};
        size_t j = 0;
        for (; j + 8 <= cols; j += 8)
            for (int u = 0; u < 8; u++)
                acc[u] += src[j + u];
        float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; j < cols; j++)
            s += src[j];
        gb[o] += s;
    }
    /* The direct kernels compute the weight gradient; the input gradient
     * stays a GEMM and col2im (measured faster than a direct full
     * correlation, which multiplies the zero border too). */
    const bool direct = shoal_conv_direct_fits(l);
    if (direct)
        shoal_conv_direct_weight_grad(l, dout, in, gw, batch);
    for (size_t b0 = 0; b0 < batch && (din || !direct); b0 += block) {
        const size_t n = batch - b0 < block ? batch - b0 : block, span = n * plane;
        if (!direct) {
            if (block < batch)
                im2col(l, in, col, batch, b0, n);
            shoal_gemm(false, true, oc, rows, span, 1.0f, dout + b0 * plane, cols, col, span, 1.0f,
                       gw, rows);
        }
        if (din) {
            shoal_gemm(true, false, rows, span, oc, 1.0f, w, rows, dout + b0 * plane, cols, 0.0f,
                       dcol, span);
            col2im(l, dcol, din, batch, b0, n);
        }
    }
}

/* ---- maxpool2d ---------------------------------------------------------- */

/* Whether v takes the place of the current maximum: larger, or the first
 * NaN (a NaN in a window is propagated, as PyTorch does). */
static inline int pool_wins(float v, float best)
{
    return v > best || (v != v && best == best);
}

/* The common 2x2/2 pooling of one plane, with selects instead of branches
 * (which of four values wins is a coin toss a branch predictor loses). */
static void pool2_plane(const float *restrict src, size_t W, size_t OH, size_t OW,
                        float *restrict dst, float *restrict arg)
{
    for (size_t oy = 0; oy < OH; oy++) {
        const float *r0 = src + 2 * oy * W, *r1 = r0 + W;
        for (size_t ox = 0; ox < OW; ox++) {
            const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
            float best = a, at = 0.0f;
            const int take_b = pool_wins(b, best);
            best = take_b ? b : best;
            at = take_b ? 1.0f : at;
            const int take_c = pool_wins(c, best);
            best = take_c ? c : best;
            at = take_c ? 2.0f : at;
            const int take_d = pool_wins(d, best);
            best = take_d ? d : best;
            at = take_d ? 3.0f : at;
            dst[oy * OW + ox] = best;
            arg[oy * OW + ox] = at;
        }
    }
}

/* The adjoint of pool2_plane: each window's four inputs are written (the
 * gradient where the maximum was, 0 elsewhere), so no scatter and no
 * clearing first except for a row or column no window covers. */
static void pool2_plane_backward(const float *restrict g, const float *restrict arg, size_t H,
                                 size_t W, size_t OH, size_t OW, float *restrict din)
{
    if (H != 2 * OH || W != 2 * OW)
        memset(din, 0, H * W * sizeof *din);
    for (size_t oy = 0; oy < OH; oy++) {
        float *d0 = din + 2 * oy * W, *d1 = d0 + W;
        for (size_t ox = 0; ox < OW; ox++) {
            const float v = g[oy * OW + ox], at = arg[oy * OW + ox];
            d0[2 * ox] = at == 0.0f ? v : 0.0f;
            d0[2 * ox + 1] = at == 1.0f ? v : 0.0f;
            d1[2 * ox] = at == 2.0f ? v : 0.0f;
            d1[2 * ox + 1] = at == 3.0f ? v : 0.0f;
        }
    }
}

/* `argmax` records, per output, the winning position inside its window
 * (ky * K + kx) as a float; small integers are exact in float. */
static void pool_forward(const shoal_layer *l, const float *in, float *out, size_t batch,
                         float *argmax)
{
    const size_t H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    const size_t K = l->kernel, S = l->stride, planes = l->in.c * batch;
    if (K == 2 && S == 2) {
        for (size_t p = 0; p < planes; p++)
            pool2_plane(in + p * H * W, W, OH, OW, out + p * OH * OW, argmax + p * OH * OW);
        return;
    }
    for (size_t p = 0; p < planes; p++) {
        const float *src = in + p * H * W;
        float *dst = out + p * OH * OW, *arg = argmax + p * OH * OW;
        for (size_t oy = 0; oy < OH; oy++)
            for (size_t ox = 0; ox < OW; ox++) {
                const float *win = src + oy * S * W + ox * S;
                float best = win[0];
                size_t best_at = 0;
                for (size_t ky = 0; ky < K; ky++)
                    for (size_t kx = 0; kx < K; kx++) {
                        float v = win[ky * W + kx];
                        if (pool_wins(v, best)) {
                            best = v;
                            best_at = ky * K + kx;
                        }
                    }
                dst[oy * OW + ox] = best;
                arg[oy * OW + ox] = (float)best_at;
            }
    }
}

/* Routes each output gradient to the input its window's maximum came
 * from (windows may overlap: they add). */
static void pool_scatter(const shoal_layer *l, const float *dout, float *din, size_t batch,
                         const float *argmax, size_t K, size_t S)
{
    const size_t H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    const size_t planes = l->in.c * batch;
    memset(din, 0, planes * H * W * sizeof *din);
    for (size_t p = 0; p < planes; p++) {
        const float *g = dout + p * OH * OW, *arg = argmax + p * OH * OW;
        float *dst = din + p * H * W;
        for (size_t oy = 0; oy < OH; oy++)
            for (size_t ox = 0; ox < OW; ox++) {
                size_t at = (size_t)arg[oy * OW + ox];
                dst[(oy * S + at / K) * W + ox * S + at % K] += g[oy * OW + ox];
            }
    }
}

static void pool_backward(const shoal_layer *l, const float *dout, float *din, size_t batch,
                          const float *argmax)
{
    const size_t H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    if (l->kernel == 2 && l->stride == 2) {
        for (size_t p = 0; p < l->in.c * batch; p++)
            pool2_plane_backward(dout + p * OH * OW, argmax + p * OH * OW, H, W, OH, OW,
                                 din + p * H * W);
        return;
    }
    pool_scatter(l, dout, din, batch, argmax, l->kernel, l->stride);
}

/* ---- flatten: [c][b][hw] <-> [b][c][hw] ---------------------------------- */

static void flatten_forward(const shoal_layer *l, const float *in, float *out, size_t batch)
{
    const size_t C = l->in.c, HW = (size_t)l->in.h * l->in.w;
    for (size_t c = 0; c < C; c++)
        for (size_t b = 0; b < batch; b++)
            memcpy(out + (b * C + c) * HW, in + (c * batch + b) * HW, HW * sizeof *out);
}

static void flatten_backward(const shoal_layer *l, const float *dout, float *din, size_t batch)
{
    const size_t C = l->in.c, HW = (size_t)l->in.h * l->in.w;
    for (size_t c = 0; c < C; c++)
        for (size_t b = 0; b < batch; b++)
            memcpy(din + (c * batch + b) * HW, dout + (b * C + c) * HW, HW * sizeof *din);
}

/* ---- relu: restrict-qualified so that they vectorise --------------------- */

static void relu_forward(size_t n, const float *restrict in, float *restrict out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

static void relu_backward(size_t n, const float *restrict out, const float *restrict dout,
                          float *restrict din)
{
    /* Both loads unconditional: a select, not a branch on random signs. */
    for (size_t i = 0; i < n; i++) {
        const float g = dout[i], o = out[i];
        din[i] = o > 0.0f ? g : 0.0f;
    }
}

/* ---- dispatch ------------------------------------------------------------ */

void shoal_layer_forward(const shoal_layer *l, const float *params, const float *in, float *out,
                         size_t batch, float *saved)
{
    switch (l->kind) {
    case SHOAL_LAYER_DENSE:
        dense_forward(l, params, in, out, batch);
        break;
    case SHOAL_LAYER_CONV2D:
        conv_forward(l, params, in, out, batch, saved);
        break;
    case SHOAL_LAYER_MAXPOOL2D:
        pool_forward(l, in, out, batch, saved);
        break;
    case SHOAL_LAYER_RELU:
        relu_forward(shoal_shape_size(l->in) * batch, in, out);
        break;
    case SHOAL_LAYER_FLATTEN:
        flatten_forward(l, in, out, batch);
        break;
    }
}

void shoal_layer_backward(const shoal_layer *l, const float *params, const float *in,
                          const float *out, const float *dout, float *din, float *grad,
                          size_t batch, float *saved, float *temp)
{
    switch (l->kind) {
    case SHOAL_LAYER_DENSE:
        dense_backward(l, params, in, dout, din, grad, batch);
        break;
    case SHOAL_LAYER_CONV2D:
        conv_backward(l, params, in, dout, din, grad, batch, saved, temp);
        break;
    case SHOAL_LAYER_MAXPOOL2D:
        if (din)
            pool_backward(l, dout, din, batch, saved);
        break;
    case SHOAL_LAYER_RELU:
        if (din)
            relu_backward(shoal_shape_size(l->in) * batch, out, dout, din);
        break;
    case SHOAL_LAYER_FLATTEN:
        if (din)
            flatten_backward(l, dout, din, batch);
        break;
    }
}

shoal_err shoal_softmax_xent(const float *logits, const int32_t *labels, size_t batch,
                             uint32_t classes, float *dlogits, double *loss_sum, size_t *correct)
{
    if (classes == 0)
        return SHOAL_EINVAL;
    double loss = 0.0;
    size_t hits = 0;
    const float inv_batch = batch ? 1.0f / (float)batch : 0.0f;
    for (size_t b = 0; b < batch; b++) {
        const float *z = logits + b * classes;
        int32_t y = labels[b];
        if (y < 0 || (uint32_t)y >= classes)
            return SHOAL_EINVAL;
        float zmax = z[0];
        size_t arg = 0;
        for (size_t k = 0; k < classes; k++) {
            if (!isfinite(z[k]))
                return SHOAL_ENUMERIC;
            if (z[k] > zmax) {
                zmax = z[k];
                arg = k;
            }
        }
        double sum = 0.0;
        for (size_t k = 0; k < classes; k++)
            sum += exp((double)(z[k] - zmax));
        double log_sum = log(sum);
        loss += log_sum - (double)(z[y] - zmax);
        hits += arg == (size_t)y;
        if (dlogits) {
            float *d = dlogits + b * classes;
            for (size_t k = 0; k < classes; k++) {
                float p = (float)exp((double)(z[k] - zmax) - log_sum);
                d[k] = (p - (k == (size_t)y ? 1.0f : 0.0f)) * inv_batch;
            }
        }
    }
    if (loss_sum)
        *loss_sum += loss;
    if (correct)
        *correct += hits;
    return SHOAL_OK;
}
