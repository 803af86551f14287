/* Shoal: client (local) optimizers and server optimizers.
 *
 * Client optimizers follow PyTorch's torch.optim update rules, so a Shoal
 * run and a PyTorch run from the same parameters take the same steps:
 *   sgd       p -= lr * g
 *   momentum  b = mu*b + g;            p -= lr * b
 *   nesterov  b = mu*b + g;            p -= lr * (g + mu*b)
 *   adagrad   s += g^2;                p -= lr * g / (sqrt(s) + eps)
 *   rmsprop   v = a*v + (1-a)*g^2;     p -= lr * g / (sqrt(v) + eps)
 *   adam      m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *             p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 * where g already includes weight decay (g += wd * p) and the FedProx
 * proximal term (g += mu_prox * (p - anchor), Li et al. MLSys 2020).
 *
 * Server optimizers apply the averaged client delta (client minus global
 * model) exactly as Reddi et al. ICLR 2021, Algorithm 2 ("Adaptive Federated
 * Optimization"), with the server learning rate eta:
 *   fedavg      x += eta * d
 *   fedavgm     m = beta*m + d;                    x += eta * m   (Hsu et al. 2019)
 *   fedadagrad  m = b1*m + (1-b1)*d; v = v + d^2;                 x += eta*m/(sqrt(v)+tau)
 *   fedadam     m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2;       x += eta*m/(sqrt(v)+tau)
 *   fedyogi     m = b1*m + (1-b1)*d;
 *               v = v - (1-b2)*d^2*sign(v - d^2);                 x += eta*m/(sqrt(v)+tau)
 * with v initialised to tau^2 (the paper's v_{-1} >= tau^2) and no bias
 * correction, as in the paper.
 *
 * An optimizer object holds its state (one or two vectors) and is not
 * thread-safe; its state can be exported and restored for checkpoints. */
#ifndef SHOAL_OPTIM_H
#define SHOAL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shoal_optim_kind {
    SHOAL_OPTIM_SGD,
    SHOAL_OPTIM_MOMENTUM,
    SHOAL_OPTIM_NESTEROV,
    SHOAL_OPTIM_ADAGRAD,
    SHOAL_OPTIM_RMSPROP,
    SHOAL_OPTIM_ADAM,
} shoal_optim_kind;

typedef struct shoal_optim_config {
    shoal_optim_kind kind;
    float lr;           /* > 0 */
    float momentum;     /* momentum, nesterov: [0, 1); default 0.9 */
    float beta1, beta2; /* adam: defaults 0.9, 0.999 */
    float alpha;        /* rmsprop smoothing: default 0.99 */
    float eps;          /* adagrad 1e-10, rmsprop and adam 1e-8 by default */
    float weight_decay; /* L2, >= 0 */
    float prox_mu;      /* FedProx proximal coefficient, >= 0 */
} shoal_optim_config;

typedef struct shoal_optim shoal_optim;

/* "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam". */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_optim_kind_parse(const char *name, shoal_optim_kind *out);
SHOAL_API const char *shoal_optim_kind_name(shoal_optim_kind kind);

/* A config of `kind` with learning rate `lr` and every other field at its
 * default (see above). */
SHOAL_API shoal_optim_config shoal_optim_defaults(shoal_optim_kind kind, float lr);

/* Checks every field; fills ei with the offending field and its allowed
 * range. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_optim_config_check(const shoal_optim_config *cfg,
                                                             shoal_errinfo *ei);

/* An optimizer for `count` parameters. SHOAL_EINVAL for a bad config,
 * SHOAL_ENOMEM. Free with shoal_optim_free (NULL is a no-op). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_optim_new(const shoal_optim_config *cfg, size_t count,
                                                    shoal_optim **out);
SHOAL_API void shoal_optim_free(shoal_optim *opt);

/* One step: updates params in place from grad. grad is used as scratch and
 * left modified (it receives the decayed/proximal gradient). anchor is the
 * FedProx reference point (the global model); it may be NULL when prox_mu
 * is 0. */
SHOAL_API void shoal_optim_step(shoal_optim *opt, float *params, float *grad, const float *anchor);

/* Changes the learning rate for the following steps (a schedule); keeps the
 * state. lr must be positive and finite, else SHOAL_EINVAL and no change. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_optim_set_lr(shoal_optim *opt, float lr);

/* Forgets all state (momentum buffers, step count). */
SHOAL_API void shoal_optim_reset(shoal_optim *opt);
/* Heap bytes the optimizer holds (its state buffers); 0 for NULL. */
SHOAL_API size_t shoal_optim_bytes(const shoal_optim *opt);

/* ---- server optimizers --------------------------------------------------- */

typedef enum shoal_server_optim_kind {
    SHOAL_SERVER_FEDAVG,
    SHOAL_SERVER_FEDAVGM,
    SHOAL_SERVER_FEDADAGRAD,
    SHOAL_SERVER_FEDADAM,
    SHOAL_SERVER_FEDYOGI,
} shoal_server_optim_kind;

typedef struct shoal_server_optim_config {
    shoal_server_optim_kind kind;
    float lr; /* server learning rate eta, > 0; default 1 (fedavg, fedavgm), 0.003 (adaptive) */
    float momentum; /* fedavgm beta, [0, 1); default 0.9 */
    float beta1;    /* adaptive: [0, 1); default 0.9 */
    float beta2;    /* fedadam, fedyogi: [0, 1); default 0.99 */
    float tau;      /* adaptivity, > 0; default 1e-3 */
} shoal_server_optim_config;

typedef struct shoal_server_optim shoal_server_optim;

/* "fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi". */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_optim_kind_parse(const char *name,
                                                                  shoal_server_optim_kind *out);
SHOAL_API const char *shoal_server_optim_kind_name(shoal_server_optim_kind kind);
SHOAL_API shoal_server_optim_config shoal_server_optim_defaults(shoal_server_optim_kind kind);
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_server_optim_config_check(const shoal_server_optim_config *cfg, shoal_errinfo *ei);

SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_optim_new(const shoal_server_optim_config *cfg,
                                                           size_t count, shoal_server_optim **out);
SHOAL_API void shoal_server_optim_free(shoal_server_optim *opt);

/* x += update(delta). delta is the (weighted) mean of client deltas, client
 * model minus global model. Returns SHOAL_ENUMERIC, leaving params and the
 * state untouched, if delta holds NaN or Inf. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_optim_apply(shoal_server_optim *opt, float *params,
                                                             const float *delta);

/* Optimizer state for checkpoints: shoal_server_optim_state_count() floats
 * (0 for fedavg, count for fedavgm, 2*count for the adaptive methods),
 * plus the number of steps taken. get copies out; set copies in. */
SHOAL_API size_t shoal_server_optim_state_count(const shoal_server_optim *opt);
SHOAL_API void shoal_server_optim_state_get(const shoal_server_optim *opt, float *state,
                                            uint64_t *steps);
SHOAL_API void shoal_server_optim_state_set(shoal_server_optim *opt, const float *state,
                                            uint64_t steps);

#ifdef __cplusplus
}
#endif

#endif
