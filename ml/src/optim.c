#include "shoal/optim.h"

#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/names.h"

struct shoal_optim {
    shoal_optim_config cfg;
    size_t count;
    uint64_t steps;
    float *buf1; /* momentum buffer, adagrad sum, rmsprop/adam second moment */
    float *buf2; /* adam first moment */
};

size_t shoal_optim_bytes(const shoal_optim *opt)
{
    if (!opt)
        return 0;
    return sizeof *opt + ((opt->buf1 != NULL) + (opt->buf2 != NULL)) *
                             (opt->count ? opt->count : 1) * sizeof(float);
}

static const char *const optim_names[] = {
    [SHOAL_OPTIM_SGD] = "sgd",           [SHOAL_OPTIM_MOMENTUM] = "momentum",
    [SHOAL_OPTIM_NESTEROV] = "nesterov", [SHOAL_OPTIM_ADAGRAD] = "adagrad",
    [SHOAL_OPTIM_RMSPROP] = "rmsprop",   [SHOAL_OPTIM_ADAM] = "adam",
};

shoal_err shoal_optim_kind_parse(const char *name, shoal_optim_kind *out)
{
    int value;
    if (!out || shoal_names_find(optim_names, SHOAL_NAMES_COUNT(optim_names), name, &value))
        return SHOAL_EINVAL;
    *out = (shoal_optim_kind)value;
    return SHOAL_OK;
}

const char *shoal_optim_kind_name(shoal_optim_kind kind)
{
    return shoal_names_get(optim_names, SHOAL_NAMES_COUNT(optim_names), (int)kind, "?");
}

shoal_optim_config shoal_optim_defaults(shoal_optim_kind kind, float lr)
{
    shoal_optim_config c = {0};
    c.kind = kind;
    c.lr = lr;
    c.momentum = 0.9f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.alpha = 0.99f;
    c.eps = kind == SHOAL_OPTIM_ADAGRAD ? 1e-10f : 1e-8f;
    return c;
}

static int in_unit(float v)
{
    return v >= 0.0f && v < 1.0f;
}

shoal_err shoal_optim_config_check(const shoal_optim_config *c, shoal_errinfo *ei)
{
    if (!c)
        return SHOAL_EINVAL;
    if ((unsigned)c->kind >= SHOAL_NAMES_COUNT(optim_names))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "optimizer: unknown kind %d", (int)c->kind);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "lr: must be a positive finite number, got %g",
                                 (double)c->lr);
    if (!in_unit(c->momentum))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "momentum: must be in [0, 1), got %g",
                                 (double)c->momentum);
    if (!in_unit(c->beta1) || !in_unit(c->beta2))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "beta1, beta2: must be in [0, 1), got %g, %g",
                                 (double)c->beta1, (double)c->beta2);
    if (!in_unit(c->alpha))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "alpha: must be in [0, 1), got %g",
                                 (double)c->alpha);
    if (!(c->eps > 0.0f) || !isfinite(c->eps))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "eps: must be positive, got %g", (double)c->eps);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "weight_decay: must be >= 0, got %g",
                                 (double)c->weight_decay);
    if (!(c->prox_mu >= 0.0f) || !isfinite(c->prox_mu))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "prox_mu: must be >= 0, got %g",
                                 (double)c->prox_mu);
    return SHOAL_OK;
}

shoal_err shoal_optim_new(const shoal_optim_config *cfg, size_t count, shoal_optim **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (shoal_optim_config_check(cfg, NULL) != SHOAL_OK)
        return SHOAL_EINVAL;
    shoal_optim *o = shoal_calloc(1, sizeof *o);
    if (!o)
        return SHOAL_ENOMEM;
    o->cfg = *cfg;
    o->count = count;
    int buffers = cfg->kind == SHOAL_OPTIM_SGD ? 0 : cfg->kind == SHOAL_OPTIM_ADAM ? 2 : 1;
    if (buffers >= 1 && !(o->buf1 = shoal_calloc(count ? count : 1, sizeof(float))))
        goto nomem;
    if (buffers >= 2 && !(o->buf2 = shoal_calloc(count ? count : 1, sizeof(float))))
        goto nomem;
    *out = o;
    return SHOAL_OK;
nomem:
    shoal_optim_free(o);
    return SHOAL_ENOMEM;
}

void shoal_optim_free(shoal_optim *o)
{
    if (!o)
        return;
    shoal_free(o->buf1);
    shoal_free(o->buf2);
    shoal_free(o);
}

shoal_err shoal_optim_set_lr(shoal_optim *o, float lr)
{
    if (!o || !(lr > 0.0f) || !isfinite(lr))
        return SHOAL_EINVAL;
    o->cfg.lr = lr;
    return SHOAL_OK;
}

void shoal_optim_reset(shoal_optim *o)
{
    o->steps = 0;
    if (o->buf1)
        memset(o->buf1, 0, o->count * sizeof(float));
    if (o->buf2)
        memset(o->buf2, 0, o->count * sizeof(float));
}

void shoal_optim_step(shoal_optim *o, float *restrict p, float *restrict g,
                      const float *restrict anchor)
{
    const shoal_optim_config *c = &o->cfg;
    const size_t n = o->count;
    const float lr = c->lr;
    o->steps++;
    if (c->weight_decay != 0.0f)
        for (size_t i = 0; i < n; i++)
            g[i] += c->weight_decay * p[i];
    if (c->prox_mu != 0.0f && anchor)
        for (size_t i = 0; i < n; i++)
            g[i] += c->prox_mu * (p[i] - anchor[i]);
    float *restrict b1 = o->buf1, *restrict b2 = o->buf2;
    switch (c->kind) {
    case SHOAL_OPTIM_SGD:
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * g[i];
        break;
    case SHOAL_OPTIM_MOMENTUM:
        for (size_t i = 0; i < n; i++) {
            b1[i] = c->momentum * b1[i] + g[i];
            p[i] -= lr * b1[i];
        }
        break;
    case SHOAL_OPTIM_NESTEROV:
        for (size_t i = 0; i < n; i++) {
            b1[i] = c->momentum * b1[i] + g[i];
            p[i] -= lr * (g[i] + c->momentum * b1[i]);
        }
        break;
    case SHOAL_OPTIM_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            b1[i] += g[i] * g[i];
            p[i] -= lr * g[i] / (sqrtf(b1[i]) + c->eps);
        }
        break;
    case SHOAL_OPTIM_RMSPROP:
        for (size_t i = 0; i < n; i++) {
            b1[i] = c->alpha * b1[i] + (1.0f - c->alpha) * g[i] * g[i];
            p[i] -= lr * g[i] / (sqrtf(b1[i]) + c->eps);
        }
        break;
    case SHOAL_OPTIM_ADAM: {
        const float bc1 = 1.0f - powf(c->beta1, (float)o->steps);
        const float bc2 = 1.0f - powf(c->beta2, (float)o->steps);
        const float step = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
        for (size_t i = 0; i < n; i++) {
            b2[i] = c->beta1 * b2[i] + (1.0f - c->beta1) * g[i];
            b1[i] = c->beta2 * b1[i] + (1.0f - c->beta2) * g[i] * g[i];
            p[i] -= step * b2[i] / (sqrtf(b1[i]) * inv_sqrt_bc2 + c->eps);
        }
        break;
    }
    }
}

/* ---- server optimizers ---------------------------------------------------- */

struct shoal_server_optim {
    shoal_server_optim_config cfg;
    size_t count;
    uint64_t steps;
    float *m; /* first moment / momentum */
    float *v; /* second moment */
};

static const char *const server_names[] = {
    [SHOAL_SERVER_FEDAVG] = "fedavg",         [SHOAL_SERVER_FEDAVGM] = "fedavgm",
    [SHOAL_SERVER_FEDADAGRAD] = "fedadagrad", [SHOAL_SERVER_FEDADAM] = "fedadam",
    [SHOAL_SERVER_FEDYOGI] = "fedyogi",
};

shoal_err shoal_server_optim_kind_parse(const char *name, shoal_server_optim_kind *out)
{
    int value;
    if (!out || shoal_names_find(server_names, SHOAL_NAMES_COUNT(server_names), name, &value))
        return SHOAL_EINVAL;
    *out = (shoal_server_optim_kind)value;
    return SHOAL_OK;
}

const char *shoal_server_optim_kind_name(shoal_server_optim_kind kind)
{
    return shoal_names_get(server_names, SHOAL_NAMES_COUNT(server_names), (int)kind, "?");
}

shoal_server_optim_config shoal_server_optim_defaults(shoal_server_optim_kind kind)
{
    shoal_server_optim_config c = {0};
    c.kind = kind;
    /* Adaptive methods need a much smaller server step than plain averaging:
     * 10^-2.5, the best server rate for FedAdam and FedYogi with tau 1e-3 in
     * Reddi et al. 2021's grids (Appendix D, EMNIST), and the best here on
     * Fashion-MNIST (docs/benchmarks.md). */
    c.lr = kind <= SHOAL_SERVER_FEDAVGM ? 1.0f : 0.003f;
    c.momentum = 0.9f;
    c.beta1 = 0.9f;
    c.beta2 = 0.99f;
    c.tau = 1e-3f;
    return c;
}

shoal_err shoal_server_optim_config_check(const shoal_server_optim_config *c, shoal_errinfo *ei)
{
    if (!c)
        return SHOAL_EINVAL;
    if ((unsigned)c->kind >= SHOAL_NAMES_COUNT(server_names))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "strategy: unknown kind %d", (int)c->kind);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return shoal_errinfo_set(
            ei, SHOAL_EINVAL, "server_lr: must be a positive finite number, got %g", (double)c->lr);
    if (!in_unit(c->momentum))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "server_momentum: must be in [0, 1), got %g",
                                 (double)c->momentum);
    if (!in_unit(c->beta1) || !in_unit(c->beta2))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "beta1, beta2: must be in [0, 1), got %g, %g",
                                 (double)c->beta1, (double)c->beta2);
    if (!(c->tau > 0.0f) || !isfinite(c->tau))
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "tau: must be positive, got %g", (double)c->tau);
    return SHOAL_OK;
}

static size_t server_state_vectors(shoal_server_optim_kind kind)
{
    return kind == SHOAL_SERVER_FEDAVG ? 0 : kind == SHOAL_SERVER_FEDAVGM ? 1 : 2;
}

shoal_err shoal_server_optim_new(const shoal_server_optim_config *cfg, size_t count,
                                 shoal_server_optim **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (shoal_server_optim_config_check(cfg, NULL) != SHOAL_OK)
        return SHOAL_EINVAL;
    shoal_server_optim *o = shoal_calloc(1, sizeof *o);
    if (!o)
        return SHOAL_ENOMEM;
    o->cfg = *cfg;
    o->count = count;
    size_t vectors = server_state_vectors(cfg->kind);
    if (vectors >= 1 && !(o->m = shoal_calloc(count ? count : 1, sizeof(float))))
        goto nomem;
    if (vectors >= 2) {
        if (!(o->v = shoal_mallocarray(count ? count : 1, sizeof(float))))
            goto nomem;
        for (size_t i = 0; i < count; i++)
            o->v[i] = cfg->tau * cfg->tau;
    }
    *out = o;
    return SHOAL_OK;
nomem:
    shoal_server_optim_free(o);
    return SHOAL_ENOMEM;
}

void shoal_server_optim_free(shoal_server_optim *o)
{
    if (!o)
        return;
    shoal_free(o->m);
    shoal_free(o->v);
    shoal_free(o);
}

shoal_err shoal_server_optim_apply(shoal_server_optim *o, float *restrict x,
                                   const float *restrict d)
{
    const size_t n = o->count;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(d[i]))
            return SHOAL_ENUMERIC;
    const shoal_server_optim_config *c = &o->cfg;
    const float eta = c->lr, b1 = c->beta1, b2 = c->beta2, tau = c->tau;
    float *restrict m = o->m, *restrict v = o->v;
    switch (c->kind) {
    case SHOAL_SERVER_FEDAVG:
        for (size_t i = 0; i < n; i++)
            x[i] += eta * d[i];
        break;
    case SHOAL_SERVER_FEDAVGM:
        for (size_t i = 0; i < n; i++) {
            m[i] = c->momentum * m[i] + d[i];
            x[i] += eta * m[i];
        }
        break;
    case SHOAL_SERVER_FEDADAGRAD:
        for (size_t i = 0; i < n; i++) {
            m[i] = b1 * m[i] + (1.0f - b1) * d[i];
            v[i] = v[i] + d[i] * d[i];
            x[i] += eta * m[i] / (sqrtf(v[i]) + tau);
        }
        break;
    case SHOAL_SERVER_FEDADAM:
        for (size_t i = 0; i < n; i++) {
            m[i] = b1 * m[i] + (1.0f - b1) * d[i];
            v[i] = b2 * v[i] + (1.0f - b2) * d[i] * d[i];
            x[i] += eta * m[i] / (sqrtf(v[i]) + tau);
        }
        break;
    case SHOAL_SERVER_FEDYOGI:
        for (size_t i = 0; i < n; i++) {
            float d2 = d[i] * d[i];
            float diff = v[i] - d2;
            float sign = diff > 0.0f ? 1.0f : diff < 0.0f ? -1.0f : 0.0f;
            m[i] = b1 * m[i] + (1.0f - b1) * d[i];
            v[i] = v[i] - (1.0f - b2) * d2 * sign;
            x[i] += eta * m[i] / (sqrtf(v[i]) + tau);
        }
        break;
    }
    o->steps++;
    return SHOAL_OK;
}

size_t shoal_server_optim_state_count(const shoal_server_optim *o)
{
    return server_state_vectors(o->cfg.kind) * o->count;
}

void shoal_server_optim_state_get(const shoal_server_optim *o, float *state, uint64_t *steps)
{
    if (o->m && state)
        memcpy(state, o->m, o->count * sizeof(float));
    if (o->v && state)
        memcpy(state + o->count, o->v, o->count * sizeof(float));
    if (steps)
        *steps = o->steps;
}

void shoal_server_optim_state_set(shoal_server_optim *o, const float *state, uint64_t steps)
{
    if (o->m && state)
        memcpy(o->m, state, o->count * sizeof(float));
    if (o->v && state)
        memcpy(o->v, state + o->count, o->count * sizeof(float));
    o->steps = steps;
}
