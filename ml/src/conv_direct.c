#include "conv_direct.h"

#include <string.h>

#include "shoal/clones.h"

/* Outputs per register tile along a row: eight floats, one AVX register or
 * two SSE registers. The fixed-size inner loops below vectorise into them. */
#define LANES 8

/* Multiply-adds fuse where the CPU has FMA (x86-64-v3, arm64): one
 * rounding instead of two, and half the instructions. The eight-float
 * values below pass between always-inline helpers only, so the warning
 * that their ABI differs without AVX never matters. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define INLINE static inline __attribute__((always_inline))

/* Eight floats as one value: one AVX register, or two SSE registers on the
 * baseline. Written out rather than left to the auto-vectoriser, which
 * vectorises these loops along the wrong dimension. */
typedef float v8 __attribute__((vector_size(LANES * sizeof(float))));

INLINE v8 load8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void store8(float *p, const v8 *v)
{
    memcpy(p, v, sizeof *v);
}

INLINE float sum8(const v8 *v)
{
    return (((*v)[0] + (*v)[4]) + ((*v)[1] + (*v)[5])) +
           (((*v)[2] + (*v)[6]) + ((*v)[3] + (*v)[7]));
}

bool shoal_conv_direct_fits(const shoal_layer *l)
{
    return l->kind == SHOAL_LAYER_CONV2D && l->stride == 1 && l->pad == 0 &&
           (l->kernel == 3 || l->kernel == 5) && l->out.w >= LANES;
}

/* ---- forward ---------------------------------------------------------------
 * A tile is G output channels x R rows x LANES outputs, held in registers
 * while every (c, ky, kx) tap adds into it: each input load feeds G
 * multiply-adds, each output is stored once, and the 2G independent sums
 * keep the multiply-add units busy instead of waiting on one another. */

/* The tile at (o0, oy, ox0) of example b; ox0 + LANES <= OW, oy + R <= OH. */
INLINE void fwd_tile(const shoal_layer *l, const float *w, const float *bias, const float *in,
                     float *out, size_t batch, size_t b, size_t o0, size_t oy, size_t ox0,
                     const size_t K, const size_t G, const size_t R)
{
    const size_t C = l->in.c, H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
    v8 acc[2][4];
    for (size_t r = 0; r < R; r++)
        for (size_t g = 0; g < G; g++)
            acc[r][g] = (v8){0} + bias[o0 + g];
    for (size_t c = 0; c < C; c++) {
        const float *plane = in + (c * batch + b) * H * W + oy * W + ox0;
        const float *wc = w + (o0 * C + c) * K * K;
        for (size_t ky = 0; ky < K; ky++)
            for (size_t kx = 0; kx < K; kx++) {
                v8 x[2];
                for (size_t r = 0; r < R; r++)
                    x[r] = load8(plane + (ky + r) * W + kx);
                for (size_t g = 0; g < G; g++) {
                    const float wv = wc[g * C * K * K + ky * K + kx];
                    for (size_t r = 0; r < R; r++)
                        acc[r][g] += wv * x[r];
                }
            }
    }
    for (size_t r = 0; r < R; r++)
        for (size_t g = 0; g < G; g++)
            store8(out + ((o0 + g) * batch + b) * OH * OW + (oy + r) * OW + ox0, &acc[r][g]);
}

/* Tiles cover each row from the left; a row whose width is not a multiple
 * of LANES ends with a tile flush with its right edge, overlapping the one
 * before it (outputs are stored, not added, so computing some twice is
 * harmless). */
INLINE void fwd_k_g(const shoal_layer *l, const float *w, const float *bias, const float *in,
                    float *out, size_t batch, const size_t K, const size_t G)
{
    const size_t OC = l->out.c, OH = l->out.h, OW = l->out.w;
    for (size_t b = 0; b < batch; b++)
        for (size_t o0 = 0; o0 < OC; o0 += G)
            for (size_t oy = 0; oy < OH; oy += 2)
                for (size_t x = 0; x < OW; x += LANES) {
                    const size_t ox0 = x + LANES <= OW ? x : OW - LANES;
                    if (oy + 1 < OH)
                        fwd_tile(l, w, bias, in, out, batch, b, o0, oy, ox0, K, G, 2);
                    else
                        fwd_tile(l, w, bias, in, out, batch, b, o0, oy, ox0, K, G, 1);
                }
}

/* Channels per tile: the largest of 4, 3, 2, 1 that divides the output
 * channels, so that every tile is full. */
static size_t group_for(size_t channels)
{
    return channels % 4 == 0 ? 4 : channels % 3 == 0 ? 3 : channels % 2 == 0 ? 2 : 1;
}

SHOAL_CLONES
void shoal_conv_direct_forward(const shoal_layer *l, const float *w, const float *bias,
                               const float *in, float *out, size_t batch)
{
    const size_t G = group_for(l->out.c);
    /* Constant K and G let the tap and tile loops unroll fully. */
#define FWD(k, g)                                                                                  \
    case (k)*8 + (g):                                                                              \
        fwd_k_g(l, w, bias, in, out, batch, k, g);                                                 \
        return;
    switch (l->kernel * 8 + G) {
        FWD(3, 1) FWD(3, 2) FWD(3, 3) FWD(3, 4) FWD(5, 1) FWD(5, 2) FWD(5, 3) FWD(5, 4)
    }
#undef FWD
}

/* ---- weight gradient -------------------------------------------------------
 * For one (o, c, ky): the K weights of that kernel row accumulate over the
 * whole batch in 2 x K registers (even and odd rows apart, so that the sums
 * do not wait on one another), each dout load feeding K multiply-adds; one
 * reduction per kernel row and batch. */

INLINE void wgrad_k(const shoal_layer *l, const float *dout, const float *in, float *gw,
                    size_t batch, const size_t K)
{
    const size_t C = l->in.c, H = l->in.h, W = l->in.w, OC = l->out.c, OH = l->out.h;
    const size_t OW = l->out.w, tiled = OW - OW % LANES;
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++) {
            float *g = gw + (o * C + c) * K * K;
            for (size_t ky = 0; ky < K; ky++) {
                v8 even[5] = {0}, odd[5] = {0};
                float tail[5] = {0};
                for (size_t b = 0; b < batch; b++) {
                    const float *dplane = dout + (o * batch + b) * OH * OW;
                    const float *iplane = in + (c * batch + b) * H * W + ky * W;
                    size_t oy = 0;
                    for (; oy + 2 <= OH; oy += 2) {
                        const float *d = dplane + oy * OW, *src = iplane + oy * W;
                        for (size_t ox0 = 0; ox0 < tiled; ox0 += LANES) {
                            const v8 d0 = load8(d + ox0), d1 = load8(d + OW + ox0);
                            for (size_t kx = 0; kx < K; kx++) {
                                even[kx] += d0 * load8(src + ox0 + kx);
                                odd[kx] += d1 * load8(src + W + ox0 + kx);
                            }
                        }
                    }
                    for (; oy < OH; oy++) {
                        const float *d = dplane + oy * OW, *src = iplane + oy * W;
                        for (size_t ox0 = 0; ox0 < tiled; ox0 += LANES) {
                            const v8 d0 = load8(d + ox0);
                            for (size_t kx = 0; kx < K; kx++)
                                even[kx] += d0 * load8(src + ox0 + kx);
                        }
                    }
                    for (oy = 0; tiled < OW && oy < OH; oy++) {
                        const float *d = dplane + oy * OW, *src = iplane + oy * W;
                        for (size_t ox = tiled; ox < OW; ox++)
                            for (size_t kx = 0; kx < K; kx++)
                                tail[kx] += d[ox] * src[ox + kx];
                    }
                }
                for (size_t kx = 0; kx < K; kx++) {
                    const v8 both = even[kx] + odd[kx];
                    g[ky * K + kx] += sum8(&both) + tail[kx];
                }
            }
        }
}

SHOAL_CLONES
void shoal_conv_direct_weight_grad(const shoal_layer *l, const float *dout, const float *in,
                                   float *gw, size_t batch)
{
    if (l->kernel == 3)
        wgrad_k(l, dout, in, gw, batch, 3);
    else
        wgrad_k(l, dout, in, gw, batch, 5);
}
