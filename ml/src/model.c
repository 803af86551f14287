#include "shoal/model.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/names.h"
#include "shoal/rng.h"

enum { MAX_LAYERS = 16, MAX_TENSORS = 2 * MAX_LAYERS };

struct shoal_model {
    shoal_model_arch arch;
    shoal_shape in;
    uint32_t classes;
    size_t layer_count;
    shoal_layer layers[MAX_LAYERS];
    size_t tensor_count;
    shoal_param_info tensors[MAX_TENSORS];
    size_t param_count;
    size_t first_param_layer; /* the lowest layer with parameters */
};

struct shoal_model_ws {
    const shoal_model *model;
    size_t max_batch;
    size_t bytes;
    float *acts[MAX_LAYERS + 1]; /* acts[0] is a channel-major copy of x when needed */
    float *saved[MAX_LAYERS];
    float *temp;
    float *grad_a, *grad_b; /* ping-pong activation gradients */
    float *block;           /* the one allocation all of the above point into */
};

static const char *const arch_names[] = {
    [SHOAL_MODEL_LOGREG] = "logreg",
    [SHOAL_MODEL_MLP] = "mlp",
    [SHOAL_MODEL_CNN] = "cnn",
    [SHOAL_MODEL_CNN2] = "cnn2",
};

shoal_err shoal_model_arch_parse(const char *name, shoal_model_arch *out)
{
    int value;
    if (!out || shoal_names_find(arch_names, SHOAL_NAMES_COUNT(arch_names), name, &value))
        return SHOAL_EINVAL;
    *out = (shoal_model_arch)value;
    return SHOAL_OK;
}

const char *shoal_model_arch_name(shoal_model_arch arch)
{
    return shoal_names_get(arch_names, SHOAL_NAMES_COUNT(arch_names), (int)arch, "?");
}

/* Appends a layer after the current last one; names its tensors when it has
 * parameters. */
static shoal_err add_layer(shoal_model *m, shoal_layer_kind kind, uint32_t units, uint32_t kernel,
                           uint32_t stride, uint32_t pad, const char *name)
{
    if (m->layer_count == MAX_LAYERS)
        return SHOAL_ELIMIT;
    shoal_shape in = m->layer_count ? m->layers[m->layer_count - 1].out : m->in;
    shoal_layer *l = &m->layers[m->layer_count];
    shoal_err err = shoal_layer_make(kind, in, units, kernel, stride, pad, l);
    if (err)
        return err;
    l->param_offset = m->param_count;
    m->layer_count++;
    if (l->weight_count == 0)
        return SHOAL_OK;
    if (m->tensor_count == 0)
        m->first_param_layer = m->layer_count - 1;
    shoal_param_info *w = &m->tensors[m->tensor_count++];
    shoal_param_info *b = &m->tensors[m->tensor_count++];
    snprintf(w->name, sizeof w->name, "%s.weight", name);
    snprintf(b->name, sizeof b->name, "%s.bias", name);
    w->offset = m->param_count;
    w->count = l->weight_count;
    b->offset = w->offset + w->count;
    b->count = l->bias_count;
    b->rank = 1;
    b->shape[0] = (uint32_t)l->bias_count;
    if (kind == SHOAL_LAYER_DENSE) {
        w->rank = 2;
        w->shape[0] = l->out.c;
        w->shape[1] = l->in.c;
    } else {
        w->rank = 4;
        w->shape[0] = l->out.c;
        w->shape[1] = l->in.c;
        w->shape[2] = w->shape[3] = l->kernel;
    }
    m->param_count += l->weight_count + l->bias_count;
    return SHOAL_OK;
}

/* conv -> relu -> 2x2 max pool, the block both CNNs stack twice. */
static shoal_err add_conv_block(shoal_model *m, uint32_t channels, uint32_t pad, const char *name)
{
    shoal_err err = add_layer(m, SHOAL_LAYER_CONV2D, channels, 5, 1, pad, name);
    if (!err)
        err = add_layer(m, SHOAL_LAYER_RELU, 0, 0, 0, 0, "");
    if (!err)
        err = add_layer(m, SHOAL_LAYER_MAXPOOL2D, 0, 2, 2, 0, "");
    return err;
}

/* Dense layers of the given widths, each but the last followed by a relu;
 * the last has one output per class. */
static shoal_err add_dense_stack(shoal_model *m, const uint32_t *hidden, size_t n_hidden)
{
    static const char *const names[] = {"fc1", "fc2", "fc3"};
    shoal_err err = SHOAL_OK;
    for (size_t i = 0; i < n_hidden && !err; i++) {
        err = add_layer(m, SHOAL_LAYER_DENSE, hidden[i], 0, 0, 0, names[i]);
        if (!err)
            err = add_layer(m, SHOAL_LAYER_RELU, 0, 0, 0, 0, "");
    }
    return err ? err
               : add_layer(m, SHOAL_LAYER_DENSE, m->classes, 0, 0, 0,
                           n_hidden ? names[n_hidden] : "fc");
}

static shoal_err build(shoal_model *m)
{
    static const uint32_t mlp[] = {200, 200}, cnn[] = {120, 84}, cnn2[] = {512};
    shoal_err err = SHOAL_OK;
    switch (m->arch) {
    case SHOAL_MODEL_LOGREG:
    case SHOAL_MODEL_MLP:
        if (m->in.h != 1 || m->in.w != 1)
            err = add_layer(m, SHOAL_LAYER_FLATTEN, 0, 0, 0, 0, "");
        if (!err)
            err = m->arch == SHOAL_MODEL_MLP ? add_dense_stack(m, mlp, 2)
                                             : add_dense_stack(m, NULL, 0);
        return err;
    case SHOAL_MODEL_CNN:
    case SHOAL_MODEL_CNN2: {
        /* CNN2: "same" padding, 28x28 -> 14x14 -> 7x7, 1,663,370 parameters
         * as in McMahan et al. 2017, section 3. */
        const bool wide = m->arch == SHOAL_MODEL_CNN2;
        if (!(err = add_conv_block(m, wide ? 32 : 6, wide ? 2 : 0, "conv1")) &&
            !(err = add_conv_block(m, wide ? 64 : 16, wide ? 2 : 0, "conv2")) &&
            !(err = add_layer(m, SHOAL_LAYER_FLATTEN, 0, 0, 0, 0, "")))
            err = wide ? add_dense_stack(m, cnn2, 1) : add_dense_stack(m, cnn, 2);
        return err;
    }
    default:
        return SHOAL_EINVAL;
    }
}

shoal_err shoal_model_new(shoal_model_arch arch, shoal_shape in, uint32_t classes,
                          shoal_model **out)
{
    if (!out || classes < 2 || in.c == 0 || in.h == 0 || in.w == 0)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_model *m = shoal_calloc(1, sizeof *m);
    if (!m)
        return SHOAL_ENOMEM;
    m->arch = arch;
    m->in = in;
    m->classes = classes;
    shoal_err err = build(m);
    if (err) {
        shoal_free(m);
        return err;
    }
    *out = m;
    return SHOAL_OK;
}

void shoal_model_free(shoal_model *m)
{
    shoal_free(m);
}

shoal_model_arch shoal_model_get_arch(const shoal_model *m)
{
    return m->arch;
}

size_t shoal_model_param_count(const shoal_model *m)
{
    return m->param_count;
}

size_t shoal_model_input_size(const shoal_model *m)
{
    return shoal_shape_size(m->in);
}

uint32_t shoal_model_classes(const shoal_model *m)
{
    return m->classes;
}

size_t shoal_model_tensor_count(const shoal_model *m)
{
    return m->tensor_count;
}

const shoal_param_info *shoal_model_tensor(const shoal_model *m, size_t i)
{
    return i < m->tensor_count ? &m->tensors[i] : NULL;
}

size_t shoal_model_layer_count(const shoal_model *m)
{
    return m->layer_count;
}

const shoal_layer *shoal_model_layer(const shoal_model *m, size_t i)
{
    return i < m->layer_count ? &m->layers[i] : NULL;
}

/* Multiply-accumulates of one layer's forward GEMM for one example. */
static uint64_t layer_macs(const shoal_layer *l)
{
    if (l->kind == SHOAL_LAYER_DENSE)
        return l->weight_count;
    if (l->kind == SHOAL_LAYER_CONV2D)
        return (uint64_t)l->weight_count * l->out.h * l->out.w;
    return 0;
}

uint64_t shoal_model_macs_per_example(const shoal_model *m)
{
    uint64_t macs = 0;
    for (size_t i = 0; i < m->layer_count; i++)
        macs += layer_macs(&m->layers[i]);
    return macs;
}

uint64_t shoal_model_train_flops_per_example(const shoal_model *m)
{
    uint64_t macs = 0;
    for (size_t i = 0; i < m->layer_count; i++) {
        /* Forward and weight gradient; the input gradient only where a layer
         * with parameters lies below (shoal_model_grad skips the rest). */
        uint64_t products = i > m->first_param_layer ? 3 : 2;
        macs += products * layer_macs(&m->layers[i]);
    }
    return 2 * macs;
}

void shoal_model_init_params(const shoal_model *m, uint64_t seed, float *params)
{
    for (size_t i = 0; i < m->layer_count; i++) {
        const shoal_layer *l = &m->layers[i];
        if (l->weight_count == 0)
            continue;
        /* One stream per layer: adding a layer does not reshuffle the others. */
        shoal_rng rng;
        shoal_rng_derive(&rng, seed, i);
        size_t fan_in = l->weight_count / l->bias_count;
        float bound = 1.0f / sqrtf((float)fan_in);
        float *p = params + l->param_offset;
        for (size_t j = 0; j < l->weight_count + l->bias_count; j++)
            p[j] = (2.0f * shoal_rng_float(&rng) - 1.0f) * bound;
    }
}

/* Spatial layers and flatten want channel-major input; the model's input is NCHW. With
 * one channel the two layouts coincide and no copy is needed. */
static int needs_input_transpose(const shoal_model *m)
{
    const shoal_layer *first = &m->layers[0];
    return (first->kind == SHOAL_LAYER_CONV2D || first->kind == SHOAL_LAYER_MAXPOOL2D ||
            first->kind == SHOAL_LAYER_FLATTEN) &&
           m->in.c > 1;
}

shoal_err shoal_model_ws_new(const shoal_model *m, size_t max_batch, shoal_model_ws **out)
{
    if (!m || !out || max_batch == 0)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_model_ws *ws = shoal_calloc(1, sizeof *ws);
    if (!ws)
        return SHOAL_ENOMEM;
    ws->model = m;
    ws->max_batch = max_batch;

    size_t total = 0, max_act = shoal_shape_size(m->in), max_temp = 0;
    size_t in_copy = needs_input_transpose(m) ? shoal_shape_size(m->in) * max_batch : 0;
    total += in_copy;
    for (size_t i = 0; i < m->layer_count; i++) {
        const shoal_layer *l = &m->layers[i];
        size_t act = shoal_shape_size(l->out);
        if (act > max_act)
            max_act = act;
        total += act * max_batch + shoal_layer_saved_floats(l, max_batch);
        size_t temp = shoal_layer_temp_floats(l, max_batch);
        if (temp > max_temp)
            max_temp = temp;
    }
    total += max_temp + 2 * max_act * max_batch;
    float *block = shoal_mallocarray(total ? total : 1, sizeof(float));
    if (!block) {
        shoal_free(ws);
        return SHOAL_ENOMEM;
    }
    ws->block = block;
    ws->bytes = total * sizeof(float);
    float *p = block;
    ws->acts[0] = in_copy ? p : NULL;
    p += in_copy;
    for (size_t i = 0; i < m->layer_count; i++) {
        const shoal_layer *l = &m->layers[i];
        ws->acts[i + 1] = p;
        p += shoal_shape_size(l->out) * max_batch;
        ws->saved[i] = p;
        p += shoal_layer_saved_floats(l, max_batch);
    }
    ws->temp = p;
    p += max_temp;
    ws->grad_a = p;
    p += max_act * max_batch;
    ws->grad_b = p;
    *out = ws;
    return SHOAL_OK;
}

void shoal_model_ws_free(shoal_model_ws *ws)
{
    if (!ws)
        return;
    shoal_free(ws->block);
    shoal_free(ws);
}

size_t shoal_model_ws_max_batch(const shoal_model_ws *ws)
{
    return ws->max_batch;
}

size_t shoal_model_ws_bytes(const shoal_model_ws *ws)
{
    return ws->bytes + sizeof *ws;
}

const float *shoal_model_ws_logits(const shoal_model_ws *ws)
{
    return ws->acts[ws->model->layer_count];
}

static const float *forward(const shoal_model *m, shoal_model_ws *ws, const float *params,
                            const float *x, size_t batch)
{
    const float *in = x;
    if (ws->acts[0]) {
        const size_t C = m->in.c, HW = (size_t)m->in.h * m->in.w;
        for (size_t b = 0; b < batch; b++)
            for (size_t c = 0; c < C; c++)
                memcpy(ws->acts[0] + (c * batch + b) * HW, x + (b * C + c) * HW,
                       HW * sizeof(float));
        in = ws->acts[0];
    }
    for (size_t i = 0; i < m->layer_count; i++) {
        shoal_layer_forward(&m->layers[i], params, in, ws->acts[i + 1], batch, ws->saved[i]);
        in = ws->acts[i + 1];
    }
    return in;
}

static shoal_err check_call(const shoal_model *m, const shoal_model_ws *ws, const float *params,
                            const float *x, const int32_t *labels, size_t batch)
{
    if (!m || !ws || ws->model != m || !params || !x || !labels)
        return SHOAL_EINVAL;
    if (batch == 0 || batch > ws->max_batch)
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

shoal_err shoal_model_eval(const shoal_model *m, shoal_model_ws *ws, const float *params,
                           const float *x, const int32_t *labels, size_t batch,
                           shoal_batch_stats *stats)
{
    shoal_err err = check_call(m, ws, params, x, labels, batch);
    if (err)
        return err;
    const float *logits = forward(m, ws, params, x, batch);
    shoal_batch_stats local = {0};
    err = shoal_softmax_xent(logits, labels, batch, m->classes, NULL, &local.loss_sum,
                             &local.correct);
    if (err)
        return err;
    if (stats) {
        stats->loss_sum += local.loss_sum;
        stats->correct += local.correct;
        stats->count += batch;
    }
    return SHOAL_OK;
}

shoal_err shoal_model_grad(const shoal_model *m, shoal_model_ws *ws, const float *params,
                           const float *x, const int32_t *labels, size_t batch, float *grad,
                           shoal_batch_stats *stats)
{
    shoal_err err = check_call(m, ws, params, x, labels, batch);
    if (err)
        return err;
    if (!grad)
        return SHOAL_EINVAL;
    const float *logits = forward(m, ws, params, x, batch);
    shoal_batch_stats local = {0};
    float *dout = ws->grad_a, *din = ws->grad_b;
    err = shoal_softmax_xent(logits, labels, batch, m->classes, dout, &local.loss_sum,
                             &local.correct);
    if (err)
        return err;
    memset(grad, 0, m->param_count * sizeof *grad);
    /* Below the lowest layer with parameters no gradient is needed, and that
     * layer's own input gradient is not computed. */
    for (size_t i = m->layer_count; i-- > m->first_param_layer;) {
        const shoal_layer *l = &m->layers[i];
        const float *in = i ? ws->acts[i] : (ws->acts[0] ? ws->acts[0] : x);
        float *din_or_null = i > m->first_param_layer ? din : NULL;
        shoal_layer_backward(l, params, in, ws->acts[i + 1], dout, din_or_null, grad, batch,
                             ws->saved[i], ws->temp);
        float *t = dout;
        dout = din;
        din = t;
    }
    if (stats) {
        stats->loss_sum += local.loss_sum;
        stats->correct += local.correct;
        stats->count += batch;
    }
    return SHOAL_OK;
}
