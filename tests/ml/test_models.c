#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/model.h"
#include "testutil.h"

static const shoal_shape mnist = {1, 28, 28};

static shoal_model *build(shoal_model_arch arch, shoal_shape in)
{
    shoal_model *m = NULL;
    cr_assert_eq(shoal_model_new(arch, in, 10, &m), SHOAL_OK);
    return m;
}

Test(ml_models, parameter_counts_match_the_papers)
{
    /* logreg 784*10+10; 2NN 784*200+200+200*200+200+200*10+10; NIID-Bench
     * CNN 156+2416+30840+10164+850; McMahan CNN 1,663,370 (2017, sec. 3). */
    const struct {
        shoal_model_arch arch;
        size_t params;
    } want[] = {{SHOAL_MODEL_LOGREG, 7850},
                {SHOAL_MODEL_MLP, 199210},
                {SHOAL_MODEL_CNN, 44426},
                {SHOAL_MODEL_CNN2, 1663370}};
    for (size_t i = 0; i < 4; i++) {
        shoal_model *m = build(want[i].arch, mnist);
        cr_assert_eq(shoal_model_param_count(m), want[i].params, "%s",
                     shoal_model_arch_name(want[i].arch));
        shoal_model_free(m);
    }
}

Test(ml_models, layout_is_named_contiguous_and_complete)
{
    shoal_model *m = build(SHOAL_MODEL_CNN, mnist);
    const char *names[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                           "fc1.bias",     "fc2.weight", "fc2.bias",     "fc3.weight", "fc3.bias"};
    cr_assert_eq(shoal_model_tensor_count(m), 10);
    size_t offset = 0;
    for (size_t i = 0; i < 10; i++) {
        const shoal_param_info *t = shoal_model_tensor(m, i);
        cr_assert_str_eq(t->name, names[i]);
        cr_assert_eq(t->offset, offset);
        size_t prod = 1;
        for (uint32_t d = 0; d < t->rank; d++)
            prod *= t->shape[d];
        cr_assert_eq(prod, t->count, "%s", t->name);
        offset += t->count;
    }
    cr_assert_eq(offset, shoal_model_param_count(m));
    const shoal_param_info *c1 = shoal_model_tensor(m, 0);
    cr_assert_eq(c1->rank, 4);
    cr_assert_eq(c1->shape[0], 6);
    cr_assert_eq(c1->shape[2], 5);
    cr_assert_null(shoal_model_tensor(m, 10));
    shoal_model_free(m);
}

Test(ml_models, init_is_deterministic_bounded_and_seed_dependent)
{
    shoal_model *m = build(SHOAL_MODEL_MLP, mnist);
    size_t n = shoal_model_param_count(m);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    shoal_model_init_params(m, 5, a);
    shoal_model_init_params(m, 5, b);
    shoal_model_init_params(m, 6, c);
    cr_assert_eq(memcmp(a, b, n * sizeof *a), 0);
    cr_assert_neq(memcmp(a, c, n * sizeof *a), 0);
    /* fc1 fan-in 784: every weight within 1/sqrt(784) = 1/28 */
    for (size_t i = 0; i < 784 * 200; i++)
        cr_assert_leq(fabsf(a[i]), 1.0f / 28.0f);
    double sq = 0;
    for (size_t i = 0; i < 784 * 200; i++)
        sq += (double)a[i] * a[i];
    /* Uniform(-b, b) has variance b^2/3. */
    cr_assert_float_eq(sq / (784 * 200), 1.0 / (784.0 * 3.0), 2e-5);
    free(a);
    free(b);
    free(c);
    shoal_model_free(m);
}

Test(ml_models, arch_names_round_trip)
{
    for (int a = SHOAL_MODEL_LOGREG; a <= SHOAL_MODEL_CNN2; a++) {
        shoal_model_arch back;
        cr_assert_eq(shoal_model_arch_parse(shoal_model_arch_name(a), &back), SHOAL_OK);
        cr_assert_eq((int)back, a);
    }
    shoal_model_arch x;
    cr_assert_eq(shoal_model_arch_parse("resnet", &x), SHOAL_EINVAL);
}

/* Finite differences of the mean batch loss against shoal_model_grad on a
 * sample of parameters spread over every tensor. ReLU and max-pooling have
 * kinks, which a perturbation can straddle; the sample must agree on at
 * least 97% of entries and as a whole vector. */
static void model_gradcheck(shoal_model_arch arch, shoal_shape in, uint32_t classes, uint64_t seed)
{
    shoal_model *m = NULL;
    cr_assert_eq(shoal_model_new(arch, in, classes, &m), SHOAL_OK);
    const size_t batch = 3, n = shoal_model_param_count(m), f = shoal_model_input_size(m);
    shoal_model_ws *ws = NULL;
    cr_assert_eq(shoal_model_ws_new(m, batch, &ws), SHOAL_OK);
    float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *x = malloc(batch * f * 4);
    int32_t y[3] = {1, 0, (int32_t)classes - 1};
    shoal_rng r;
    shoal_rng_seed(&r, seed);
    shoal_model_init_params(m, seed, p);
    /* Larger biases than the default keep most ReLUs away from zero. */
    fill_uniform(&r, x, batch * f, -1, 1);
    shoal_batch_stats st = {0};
    cr_assert_eq(shoal_model_grad(m, ws, p, x, y, batch, g, &st), SHOAL_OK);
    cr_assert_eq(st.count, batch);
    const int samples = 120;
    int bad = 0;
    double diff2 = 0, norm2 = 0;
    const float eps = 2e-3f;
    for (int s = 0; s < samples; s++) {
        size_t j = (size_t)shoal_rng_below(&r, n);
        if (s < (int)shoal_model_tensor_count(m))
            j = shoal_model_tensor(m, (size_t)s)->offset; /* every tensor at least once */
        float keep = p[j];
        shoal_batch_stats up = {0}, down = {0};
        p[j] = keep + eps;
        cr_assert_eq(shoal_model_eval(m, ws, p, x, y, batch, &up), SHOAL_OK);
        p[j] = keep - eps;
        cr_assert_eq(shoal_model_eval(m, ws, p, x, y, batch, &down), SHOAL_OK);
        p[j] = keep;
        double numeric = (up.loss_sum - down.loss_sum) / batch / (2.0 * eps);
        bad += !grad_close(numeric, g[j], 2e-3, 5e-2);
        diff2 += (numeric - g[j]) * (numeric - g[j]);
        norm2 += numeric * numeric + (double)g[j] * g[j];
    }
    cr_assert_leq(bad, samples * 3 / 100, "%s: %d of %d entries disagree",
                  shoal_model_arch_name(arch), bad, samples);
    cr_assert_lt(sqrt(diff2 / (norm2 + 1e-30)), 3e-2, "%s: relative error %g",
                 shoal_model_arch_name(arch), sqrt(diff2 / norm2));
    free(p);
    free(g);
    free(x);
    shoal_model_ws_free(ws);
    shoal_model_free(m);
}

Test(ml_models, logreg_gradient_matches_finite_differences)
{
    model_gradcheck(SHOAL_MODEL_LOGREG, mnist, 10, 1);
}

Test(ml_models, mlp_gradient_matches_finite_differences)
{
    model_gradcheck(SHOAL_MODEL_MLP, mnist, 10, 2);
}

Test(ml_models, cnn_gradient_matches_finite_differences)
{
    model_gradcheck(SHOAL_MODEL_CNN, mnist, 10, 3);
}

Test(ml_models, cnn2_gradient_matches_finite_differences)
{
    model_gradcheck(SHOAL_MODEL_CNN2, mnist, 10, 4);
}

Test(ml_models, multichannel_cnn_gradient_matches_finite_differences)
{
    /* Three input channels exercise the NCHW to channel-major transpose. */
    model_gradcheck(SHOAL_MODEL_CNN, (shoal_shape){3, 16, 16}, 4, 5);
}

Test(ml_models, grad_equals_mean_of_single_example_grads)
{
    shoal_model *m = build(SHOAL_MODEL_CNN, mnist);
    size_t n = shoal_model_param_count(m);
    shoal_model_ws *ws;
    cr_assert_eq(shoal_model_ws_new(m, 4, &ws), SHOAL_OK);
    float *p = malloc(n * 4), *g = malloc(n * 4), *g1 = malloc(n * 4), *x = malloc(4 * 784 * 4);
    double *sum = calloc(n, sizeof *sum);
    int32_t y[4] = {3, 1, 4, 1};
    shoal_rng r;
    shoal_rng_seed(&r, 12);
    shoal_model_init_params(m, 12, p);
    fill_uniform(&r, x, 4 * 784, 0, 1);
    cr_assert_eq(shoal_model_grad(m, ws, p, x, y, 4, g, NULL), SHOAL_OK);
    for (int b = 0; b < 4; b++) {
        cr_assert_eq(shoal_model_grad(m, ws, p, x + b * 784, y + b, 1, g1, NULL), SHOAL_OK);
        for (size_t i = 0; i < n; i++)
            sum[i] += g1[i] / 4.0;
    }
    for (size_t i = 0; i < n; i++)
        cr_assert_float_eq(g[i], sum[i], 1e-5 + 1e-3 * fabs(sum[i]), "param %zu", i);
    free(p);
    free(g);
    free(g1);
    free(x);
    free(sum);
    shoal_model_ws_free(ws);
    shoal_model_free(m);
}

Test(ml_models, multichannel_batches_equal_one_example_at_a_time_for_every_arch)
{
    /* Inputs are NCHW; with several channels a layer that wants
     * channel-major input must not mix examples of the batch. */
    const shoal_model_arch archs[] = {SHOAL_MODEL_LOGREG, SHOAL_MODEL_MLP, SHOAL_MODEL_CNN};
    const shoal_shape in = {3, 16, 16};
    for (size_t k = 0; k < 3; k++) {
        shoal_model *m = NULL;
        cr_assert_eq(shoal_model_new(archs[k], in, 4, &m), SHOAL_OK);
        shoal_model_ws *ws;
        cr_assert_eq(shoal_model_ws_new(m, 3, &ws), SHOAL_OK);
        size_t n = shoal_model_param_count(m), f = shoal_model_input_size(m);
        float *p = malloc(n * 4), *x = malloc(3 * f * 4);
        int32_t y[3] = {0, 3, 1};
        shoal_rng r;
        shoal_rng_seed(&r, 40 + k);
        shoal_model_init_params(m, 40 + k, p);
        fill_uniform(&r, x, 3 * f, -1, 1);
        shoal_batch_stats whole = {0}, single = {0};
        cr_assert_eq(shoal_model_eval(m, ws, p, x, y, 3, &whole), SHOAL_OK);
        for (int b = 0; b < 3; b++)
            cr_assert_eq(shoal_model_eval(m, ws, p, x + b * f, y + b, 1, &single), SHOAL_OK);
        cr_assert_float_eq(whole.loss_sum, single.loss_sum, 1e-4, "%s",
                           shoal_model_arch_name(archs[k]));
        free(p);
        free(x);
        shoal_model_ws_free(ws);
        shoal_model_free(m);
    }
}

Test(ml_models, calls_with_bad_arguments_are_refused)
{
    shoal_model *m = build(SHOAL_MODEL_LOGREG, mnist), *other = build(SHOAL_MODEL_MLP, mnist);
    shoal_model_ws *ws, *ws_other;
    cr_assert_eq(shoal_model_ws_new(m, 2, &ws), SHOAL_OK);
    cr_assert_eq(shoal_model_ws_new(other, 2, &ws_other), SHOAL_OK);
    float *p = calloc(shoal_model_param_count(m), 4), *g = calloc(shoal_model_param_count(m), 4);
    float x[3 * 784] = {0};
    int32_t y[3] = {0, 1, 2}, bad[2] = {0, 10};
    cr_assert_eq(shoal_model_grad(m, ws, p, x, y, 0, g, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_model_grad(m, ws, p, x, y, 3, g, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_model_grad(m, ws_other, p, x, y, 2, g, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_model_eval(m, ws, p, x, bad, 2, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_model_grad(m, ws, p, x, y, 2, NULL, NULL), SHOAL_EINVAL);
    shoal_model *none = NULL;
    cr_assert_eq(shoal_model_new(SHOAL_MODEL_CNN, (shoal_shape){1, 8, 8}, 10, &none), SHOAL_EINVAL);
    cr_assert_null(none);
    cr_assert_eq(shoal_model_new(SHOAL_MODEL_MLP, mnist, 1, &none), SHOAL_EINVAL);
    cr_assert_eq(shoal_model_new((shoal_model_arch)42, mnist, 10, &none), SHOAL_EINVAL);
    shoal_model_ws *w0;
    cr_assert_eq(shoal_model_ws_new(m, 0, &w0), SHOAL_EINVAL);
    free(p);
    free(g);
    shoal_model_ws_free(ws);
    shoal_model_ws_free(ws_other);
    shoal_model_free(m);
    shoal_model_free(other);
}

Test(ml_models, allocation_failures_are_reported_and_leak_nothing)
{
    for (long k = 0;; k++) {
        shoal_failalloc_install(k);
        shoal_model *m = NULL;
        shoal_model_ws *ws = NULL;
        shoal_err err = shoal_model_new(SHOAL_MODEL_CNN, mnist, 10, &m);
        if (!err)
            err = shoal_model_ws_new(m, 8, &ws);
        shoal_model_ws_free(ws);
        shoal_model_free(m);
        long live = shoal_failalloc_live(), attempts = shoal_failalloc_attempts();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "leak with %ld successful allocations", k);
        if (!err)
            break;
        cr_assert_eq(err, SHOAL_ENOMEM);
        cr_assert_gt(attempts, k);
        cr_assert_lt(k, 100);
    }
}

Test(ml_models, macs_per_example_counts_dense_and_conv)
{
    shoal_model *m = build(SHOAL_MODEL_CNN, mnist);
    /* conv1 150*24*24 + conv2 2400*8*8 + 256*120 + 120*84 + 84*10 */
    cr_assert_eq(shoal_model_macs_per_example(m),
                 150ull * 576 + 2400ull * 64 + 256 * 120 + 120 * 84 + 840);
    shoal_model_free(m);
}

Test(ml_models, train_flops_count_forward_weight_and_needed_input_gradients)
{
    shoal_model *cnn = build(SHOAL_MODEL_CNN, mnist), *mlp = build(SHOAL_MODEL_MLP, mnist);
    /* conv1 sits on the input: no input gradient; every later GEMM has one. */
    const uint64_t conv1 = 150ull * 576, rest = 2400ull * 64 + 256 * 120 + 120 * 84 + 840;
    cr_assert_eq(shoal_model_train_flops_per_example(cnn), 2 * (2 * conv1 + 3 * rest));
    /* The mlp's flatten has no parameters: fc1 is the lowest layer that has. */
    const uint64_t fc1 = 784ull * 200, fc23 = 200ull * 200 + 200 * 10;
    cr_assert_eq(shoal_model_train_flops_per_example(mlp), 2 * (2 * fc1 + 3 * fc23));
    shoal_model_free(cnn);
    shoal_model_free(mlp);
}
