#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/layer.h"
#include "testutil.h"

/* Everything one layer needs for a forward/backward pair. */
struct rig {
    shoal_layer l;
    size_t batch, n_in, n_out, n_par;
    float *params, *in, *out, *saved, *temp, *weights_r, *grad, *din;
};

static struct rig rig_new(shoal_layer l, size_t batch, uint64_t seed, int away_from_zero)
{
    struct rig g = {.l = l, .batch = batch};
    shoal_rng r;
    shoal_rng_seed(&r, seed);
    g.n_in = shoal_shape_size(l.in) * batch;
    g.n_out = shoal_shape_size(l.out) * batch;
    g.n_par = l.weight_count + l.bias_count;
    g.params = calloc(g.n_par + 1, sizeof(float));
    g.grad = calloc(g.n_par + 1, sizeof(float));
    g.in = malloc(g.n_in * sizeof(float));
    g.din = malloc(g.n_in * sizeof(float));
    g.out = malloc(g.n_out * sizeof(float));
    g.weights_r = malloc(g.n_out * sizeof(float));
    g.saved = malloc((shoal_layer_saved_floats(&l, batch) + 1) * sizeof(float));
    g.temp = malloc((shoal_layer_temp_floats(&l, batch) + 1) * sizeof(float));
    fill_uniform(&r, g.params, g.n_par, -0.5f, 0.5f);
    if (away_from_zero)
        fill_away_from_zero(&r, g.in, g.n_in, 0.1f, 1.0f);
    else
        fill_uniform(&r, g.in, g.n_in, -1.0f, 1.0f);
    fill_uniform(&r, g.weights_r, g.n_out, -1.0f, 1.0f);
    return g;
}

static void rig_free(struct rig *g)
{
    free(g->params);
    free(g->grad);
    free(g->in);
    free(g->din);
    free(g->out);
    free(g->weights_r);
    free(g->saved);
    free(g->temp);
}

/* The scalar whose gradient is checked: sum(out * R). */
static double rig_loss(struct rig *g)
{
    shoal_layer_forward(&g->l, g->params, g->in, g->out, g->batch, g->saved);
    double s = 0;
    for (size_t i = 0; i < g->n_out; i++)
        s += (double)g->out[i] * g->weights_r[i];
    return s;
}

/* Central differences against the analytic gradient for every parameter
 * and every input (or a strided sample of them when there are many). */
static void gradcheck(struct rig *g, float eps, double tol)
{
    rig_loss(g);
    memset(g->grad, 0, g->n_par * sizeof(float));
    shoal_layer_backward(&g->l, g->params, g->in, g->out, g->weights_r, g->din, g->grad, g->batch,
                         g->saved, g->temp);
    size_t step = g->n_par > 300 ? g->n_par / 150 : 1;
    for (size_t j = 0; j < g->n_par; j += step) {
        float keep = g->params[j];
        g->params[j] = keep + eps;
        double up = rig_loss(g);
        g->params[j] = keep - eps;
        double down = rig_loss(g);
        g->params[j] = keep;
        double numeric = (up - down) / (2.0 * eps);
        cr_assert(grad_close(numeric, g->grad[j], tol, tol), "param %zu: numeric %g analytic %g", j,
                  numeric, (double)g->grad[j]);
    }
    step = g->n_in > 300 ? g->n_in / 150 : 1;
    for (size_t j = 0; j < g->n_in; j += step) {
        float keep = g->in[j];
        g->in[j] = keep + eps;
        double up = rig_loss(g);
        g->in[j] = keep - eps;
        double down = rig_loss(g);
        g->in[j] = keep;
        double numeric = (up - down) / (2.0 * eps);
        cr_assert(grad_close(numeric, g->din[j], tol, tol), "input %zu: numeric %g analytic %g", j,
                  numeric, (double)g->din[j]);
    }
}

static shoal_layer make(shoal_layer_kind kind, shoal_shape in, uint32_t units, uint32_t kernel,
                        uint32_t stride, uint32_t pad)
{
    shoal_layer l;
    cr_assert_eq(shoal_layer_make(kind, in, units, kernel, stride, pad, &l), SHOAL_OK);
    return l;
}

Test(ml_layers, dense_forward_matches_hand_computation)
{
    shoal_layer l = make(SHOAL_LAYER_DENSE, (shoal_shape){3, 1, 1}, 2, 0, 0, 0);
    /* W = [[1,2,3],[4,5,6]], b = [0.5,-1]; x = [1,0,-1] -> [1-3+0.5, 4-6-1] */
    float p[8] = {1, 2, 3, 4, 5, 6, 0.5f, -1}, x[3] = {1, 0, -1}, y[2];
    shoal_layer_forward(&l, p, x, y, 1, NULL);
    cr_assert_float_eq(y[0], -1.5f, 1e-6);
    cr_assert_float_eq(y[1], -3.0f, 1e-6);
}

Test(ml_layers, dense_gradients_match_finite_differences)
{
    struct rig g = rig_new(make(SHOAL_LAYER_DENSE, (shoal_shape){7, 1, 1}, 5, 0, 0, 0), 3, 1, 0);
    gradcheck(&g, 1e-2f, 2e-3);
    rig_free(&g);
}

Test(ml_layers, backward_accumulates_into_grad)
{
    struct rig g = rig_new(make(SHOAL_LAYER_DENSE, (shoal_shape){4, 1, 1}, 3, 0, 0, 0), 2, 2, 0);
    rig_loss(&g);
    memset(g.grad, 0, g.n_par * sizeof(float));
    shoal_layer_backward(&g.l, g.params, g.in, g.out, g.weights_r, NULL, g.grad, 2, g.saved,
                         g.temp);
    float once = g.grad[0];
    shoal_layer_backward(&g.l, g.params, g.in, g.out, g.weights_r, NULL, g.grad, 2, g.saved,
                         g.temp);
    cr_assert_float_eq(g.grad[0], 2 * once, 1e-5);
    rig_free(&g);
}

/* Direct convolution on the channel-major layout, for comparison. */
static void naive_conv(const shoal_layer *l, const float *p, const float *in, float *out,
                       size_t batch)
{
    const size_t C = l->in.c, H = l->in.h, W = l->in.w, O = l->out.c, OH = l->out.h, OW = l->out.w,
                 K = l->kernel;
    const float *bias = p + l->weight_count;
    for (size_t o = 0; o < O; o++)
        for (size_t b = 0; b < batch; b++)
            for (size_t oy = 0; oy < OH; oy++)
                for (size_t ox = 0; ox < OW; ox++) {
                    double s = bias[o];
                    for (size_t c = 0; c < C; c++)
                        for (size_t ky = 0; ky < K; ky++)
                            for (size_t kx = 0; kx < K; kx++) {
                                long y = (long)(oy * l->stride + ky) - (long)l->pad;
                                long x = (long)(ox * l->stride + kx) - (long)l->pad;
                                if (y < 0 || x < 0 || y >= (long)H || x >= (long)W)
                                    continue;
                                s += p[((o * C + c) * K + ky) * K + kx] *
                                     in[((c * batch + b) * H + (size_t)y) * W + (size_t)x];
                            }
                    out[((o * batch + b) * OH + oy) * OW + ox] = (float)s;
                }
}

Test(ml_layers, conv2d_forward_matches_direct_convolution)
{
    const struct {
        shoal_shape in;
        uint32_t out_c, k, stride, pad;
    } cases[] = {
        {{1, 8, 8}, 3, 3, 1, 0},
        {{2, 9, 7}, 4, 3, 2, 1},
        {{3, 12, 12}, 5, 5, 1, 2},
        /* Direct kernels (stride 1, no padding, rows of 8 or more): the
         * cnn's two convolutions, rows that are not a multiple of 8 wide,
         * an odd number of rows, and 1, 2, 3 and 4 channels per tile. */
        {{1, 28, 28}, 6, 5, 1, 0},
        {{6, 12, 12}, 16, 5, 1, 0},
        {{2, 13, 11}, 5, 3, 1, 0},
        {{3, 10, 17}, 6, 3, 1, 0},
        {{1, 12, 12}, 2, 5, 1, 0},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        shoal_layer l = make(SHOAL_LAYER_CONV2D, cases[t].in, cases[t].out_c, cases[t].k,
                             cases[t].stride, cases[t].pad);
        struct rig g = rig_new(l, 3, 10 + t, 0);
        float *want = malloc(g.n_out * sizeof(float));
        naive_conv(&l, g.params, g.in, want, 3);
        shoal_layer_forward(&l, g.params, g.in, g.out, 3, g.saved);
        for (size_t i = 0; i < g.n_out; i++)
            cr_assert_float_eq(g.out[i], want[i], 1e-4, "case %zu output %zu", t, i);
        free(want);
        rig_free(&g);
    }
}

Test(ml_layers, conv2d_gradients_match_finite_differences)
{
    const struct {
        shoal_shape in;
        uint32_t out_c, k, stride, pad;
        size_t batch;
    } cases[] = {
        {{2, 7, 6}, 3, 3, 1, 1, 2},
        {{1, 9, 9}, 2, 5, 2, 0, 3},
        /* Direct kernels: rows of 9 (a tile flush with the right edge, a
         * weight-gradient tail), 11 rows (a last single row), one channel
         * per tile; and 5x5 kernels with 3 and 2 channels per tile. */
        {{2, 13, 11}, 5, 3, 1, 0, 2},
        {{3, 12, 12}, 6, 5, 1, 0, 2},
        {{1, 12, 13}, 2, 5, 1, 0, 3},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        struct rig g = rig_new(make(SHOAL_LAYER_CONV2D, cases[t].in, cases[t].out_c, cases[t].k,
                                    cases[t].stride, cases[t].pad),
                               cases[t].batch, 3 + t, 0);
        gradcheck(&g, 1e-2f, 3e-3);
        rig_free(&g);
    }
    /* Blocks of two examples over a batch of three: the col matrix is
     * rebuilt in backward and the last block is short. */
    shoal_layer blocked = make(SHOAL_LAYER_CONV2D, (shoal_shape){2, 7, 6}, 3, 3, 1, 1);
    blocked.block = 2;
    struct rig b = rig_new(blocked, 3, 5, 0);
    gradcheck(&b, 1e-2f, 3e-3);
    rig_free(&b);
}

/* Runs forward and backward of `l` with its block set to `block` on the same
 * inputs (seed 7) and returns the rig holding out, grad and din. */
static struct rig conv_run_blocked(shoal_layer l, size_t batch, uint32_t block)
{
    l.block = block;
    struct rig g = rig_new(l, batch, 7, 0);
    rig_loss(&g);
    memset(g.grad, 0, g.n_par * sizeof(float));
    shoal_layer_backward(&g.l, g.params, g.in, g.out, g.weights_r, g.din, g.grad, g.batch, g.saved,
                         g.temp);
    return g;
}

/* A weight gradient sums thousands of products in an order that depends on
 * the blocks (and, with the portable GEMM, on the block's length): float
 * rounding differs by some 1e-5. A block dropped or counted twice would move
 * the results by their own size. */
static void assert_all_close(const float *got, const float *want, size_t n, const char *what,
                             uint32_t block)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(grad_close(got[i], want[i], 1e-4, 1e-4), "block %u: %s[%zu] = %g, whole batch %g",
                  block, what, i, (double)got[i], (double)want[i]);
}

Test(ml_layers, conv2d_blocks_of_any_size_give_the_whole_batch_results)
{
    const struct {
        shoal_shape in;
        uint32_t out_c, k, stride, pad;
    } cases[] = {
        {{1, 28, 28}, 6, 5, 1, 0},  /* the cnn's conv1 */
        {{6, 12, 12}, 16, 5, 1, 0}, /* its conv2 */
        {{2, 9, 7}, 4, 3, 2, 1},
    };
    const size_t batch = 7;
    const uint32_t blocks[] = {1, 2, 3, 6, 7, 64};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        shoal_layer l = make(SHOAL_LAYER_CONV2D, cases[t].in, cases[t].out_c, cases[t].k,
                             cases[t].stride, cases[t].pad);
        cr_assert_geq(l.block, 1, "shoal_layer_make chooses a block");
        struct rig whole = conv_run_blocked(l, batch, 0);
        for (size_t k = 0; k < sizeof blocks / sizeof blocks[0]; k++) {
            struct rig g = conv_run_blocked(l, batch, blocks[k]);
            assert_all_close(g.out, whole.out, g.n_out, "out", blocks[k]);
            assert_all_close(g.grad, whole.grad, g.n_par, "grad", blocks[k]);
            assert_all_close(g.din, whole.din, g.n_in, "din", blocks[k]);
            rig_free(&g);
        }
        rig_free(&whole);
    }
}

Test(ml_layers, maxpool_forward_picks_window_maxima)
{
    shoal_layer l = make(SHOAL_LAYER_MAXPOOL2D, (shoal_shape){1, 4, 4}, 0, 2, 2, 0);
    float in[16] = {1, 2, 5, 0, 3, 4, -1, -2, 0, 0, 9, 8, -5, 7, 6, 1}, out[4], saved[4];
    shoal_layer_forward(&l, NULL, in, out, 1, saved);
    cr_assert_float_eq(out[0], 4, 0);
    cr_assert_float_eq(out[1], 5, 0);
    cr_assert_float_eq(out[2], 7, 0);
    cr_assert_float_eq(out[3], 9, 0);
}

Test(ml_layers, maxpool_gradients_match_finite_differences)
{
    shoal_layer l = make(SHOAL_LAYER_MAXPOOL2D, (shoal_shape){3, 6, 6}, 0, 2, 2, 0);
    struct rig g = rig_new(l, 2, 5, 0);
    /* Distinct values 0.05 apart: no ties within eps, so no kinks. */
    size_t n = g.n_in;
    uint32_t *perm = malloc(n * sizeof *perm);
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    shoal_rng r;
    shoal_rng_seed(&r, 77);
    shoal_rng_shuffle_u32(&r, perm, n);
    for (size_t i = 0; i < n; i++)
        g.in[i] = 0.05f * (float)perm[i];
    free(perm);
    gradcheck(&g, 1e-2f, 1e-3);
    rig_free(&g);
}

Test(ml_layers, relu_forward_and_gradients)
{
    shoal_layer l = make(SHOAL_LAYER_RELU, (shoal_shape){5, 1, 1}, 0, 0, 0, 0);
    float in[5] = {-2, -0.5f, 0, 0.5f, 3}, out[5];
    shoal_layer_forward(&l, NULL, in, out, 1, NULL);
    float want[5] = {0, 0, 0, 0.5f, 3};
    for (int i = 0; i < 5; i++)
        cr_assert_float_eq(out[i], want[i], 0);
    struct rig g = rig_new(make(SHOAL_LAYER_RELU, (shoal_shape){4, 3, 3}, 0, 0, 0, 0), 2, 6, 1);
    gradcheck(&g, 1e-2f, 1e-3);
    rig_free(&g);
}

Test(ml_layers, flatten_turns_channel_major_into_nchw_and_back)
{
    shoal_layer l = make(SHOAL_LAYER_FLATTEN, (shoal_shape){2, 1, 3}, 0, 0, 0, 0);
    /* in[c][b][w], batch 2: c0b0 = 1 2 3, c0b1 = 4 5 6, c1b0 = 7 8 9, c1b1 = 10 11 12 */
    float in[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, out[12], back[12];
    shoal_layer_forward(&l, NULL, in, out, 2, NULL);
    float want[12] = {1, 2, 3, 7, 8, 9, 4, 5, 6, 10, 11, 12};
    for (int i = 0; i < 12; i++)
        cr_assert_float_eq(out[i], want[i], 0);
    shoal_layer_backward(&l, NULL, in, out, out, back, NULL, 2, NULL, NULL);
    for (int i = 0; i < 12; i++)
        cr_assert_float_eq(back[i], in[i], 0);
}

Test(ml_layers, softmax_xent_known_values)
{
    float logits[4] = {0, 0, 1, 3}, d[4];
    int32_t labels[2] = {0, 1};
    double loss = 0;
    size_t correct = 0;
    cr_assert_eq(shoal_softmax_xent(logits, labels, 2, 2, d, &loss, &correct), SHOAL_OK);
    /* ln 2 + ln(1 + e^-2) */
    cr_assert_float_eq(loss, log(2.0) + log(1.0 + exp(-2.0)), 1e-6);
    cr_assert_eq(correct, 2); /* a tie goes to the first index (0); then index 1 */
    cr_assert_float_eq(d[0], (0.5 - 1.0) / 2, 1e-6);
    cr_assert_float_eq(d[1], 0.5 / 2, 1e-6);
    double p1 = exp(1.0) / (exp(1.0) + exp(3.0));
    cr_assert_float_eq(d[2], p1 / 2, 1e-6);
    cr_assert_float_eq(d[3], (1 - p1 - 1) / 2, 1e-6);
}

Test(ml_layers, softmax_xent_gradient_matches_finite_differences)
{
    shoal_rng r;
    shoal_rng_seed(&r, 8);
    float z[3 * 6], d[3 * 6];
    int32_t y[3] = {5, 0, 2};
    fill_uniform(&r, z, 18, -3, 3);
    double base = 0;
    cr_assert_eq(shoal_softmax_xent(z, y, 3, 6, d, &base, NULL), SHOAL_OK);
    for (int j = 0; j < 18; j++) {
        float keep = z[j];
        double up = 0, down = 0;
        z[j] = keep + 1e-2f;
        cr_assert_eq(shoal_softmax_xent(z, y, 3, 6, NULL, &up, NULL), SHOAL_OK);
        z[j] = keep - 1e-2f;
        cr_assert_eq(shoal_softmax_xent(z, y, 3, 6, NULL, &down, NULL), SHOAL_OK);
        z[j] = keep;
        /* d is the gradient of the MEAN loss; up/down are sums. */
        double numeric = (up - down) / (2e-2 * 3);
        cr_assert(grad_close(numeric, d[j], 1e-4, 1e-3), "logit %d: %g vs %g", j, numeric, d[j]);
    }
}

Test(ml_layers, softmax_xent_rejects_bad_labels_and_non_finite_logits)
{
    float z[2] = {0, 1};
    int32_t bad[1] = {2}, neg[1] = {-1}, ok[1] = {1};
    cr_assert_eq(shoal_softmax_xent(z, bad, 1, 2, NULL, NULL, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_softmax_xent(z, neg, 1, 2, NULL, NULL, NULL), SHOAL_EINVAL);
    z[1] = NAN;
    cr_assert_eq(shoal_softmax_xent(z, ok, 1, 2, NULL, NULL, NULL), SHOAL_ENUMERIC);
    z[1] = INFINITY;
    cr_assert_eq(shoal_softmax_xent(z, ok, 1, 2, NULL, NULL, NULL), SHOAL_ENUMERIC);
}

Test(ml_layers, make_rejects_impossible_geometry)
{
    shoal_layer l;
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_CONV2D, (shoal_shape){1, 4, 4}, 2, 5, 1, 0, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_CONV2D, (shoal_shape){1, 4, 4}, 0, 3, 1, 0, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_CONV2D, (shoal_shape){1, 4, 4}, 2, 3, 0, 0, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_DENSE, (shoal_shape){1, 4, 4}, 2, 0, 0, 0, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_DENSE, (shoal_shape){0, 1, 1}, 2, 0, 0, 0, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_MAXPOOL2D, (shoal_shape){1, 4, 4}, 0, 2, 2, 1, &l),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_layer_make(SHOAL_LAYER_CONV2D, (shoal_shape){1, 4, 4}, 2, 5, 1, 1, &l),
                 SHOAL_OK);
    cr_assert_eq(l.out.h, 2);
}
