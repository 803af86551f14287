/* Client optimizers (shoal_optim_*): every kind against the update rules
 * written in ml/include/shoal/optim.h (PyTorch's torch.optim), recomputed
 * here in double precision, plus weight decay, the FedProx proximal term
 * (Li et al. MLSys 2020), reset, and config checks. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/optim.h"

#define N_PARAMS 3
#define N_STEPS  3

/* Mixed signs and magnitudes, changing from step to step so that a buffer
 * that is reset, skipped or mixed up with another shows. */
static const float params_start[N_PARAMS] = {0.5f, -1.25f, 2.0f};
static const float grads[N_STEPS][N_PARAMS] = {
    {0.3f, -0.8f, 1.5f},
    {-0.2f, -0.5f, 0.75f},
    {0.05f, 0.9f, -1.1f},
};
static const float anchor_point[N_PARAMS] = {0.25f, -1.0f, 1.0f};

/* float32 arithmetic against a double reference over a few steps. */
static void expect_close(const float *got, const double *want, int step, const char *what)
{
    for (int i = 0; i < N_PARAMS; i++)
        cr_expect(fabs((double)got[i] - want[i]) <= 1e-5 * (1.0 + fabs(want[i])),
                  "%s, step %d: p[%d] = %.9g, expected %.9g", what, step, i, (double)got[i],
                  want[i]);
}

/* Runs N_STEPS steps of `cfg` on params_start/grads (with anchor_point as
 * the FedProx anchor) and compares each with the double-precision
 * reference, which updates ref[] in place. */
typedef void (*ref_step_fn)(const shoal_optim_config *cfg, int t, double *p, const double *g,
                            double *buf_a, double *buf_b);

static void run_against_reference(const shoal_optim_config *cfg, ref_step_fn ref_step,
                                  const char *what)
{
    shoal_optim *opt = NULL;
    cr_assert_eq(shoal_optim_new(cfg, N_PARAMS, &opt), SHOAL_OK, "%s", what);
    float p[N_PARAMS];
    double ref[N_PARAMS], buf_a[N_PARAMS] = {0}, buf_b[N_PARAMS] = {0};
    for (int i = 0; i < N_PARAMS; i++)
        ref[i] = p[i] = params_start[i];
    for (int t = 1; t <= N_STEPS; t++) {
        float g[N_PARAMS];
        double gd[N_PARAMS];
        for (int i = 0; i < N_PARAMS; i++) {
            g[i] = grads[t - 1][i];
            /* The decayed and proximal gradient, from the header. */
            gd[i] = (double)grads[t - 1][i] + (double)cfg->weight_decay * ref[i] +
                    (double)cfg->prox_mu * (ref[i] - (double)anchor_point[i]);
        }
        shoal_optim_step(opt, p, g, anchor_point);
        /* The header says grad is left holding the decayed/proximal one. */
        for (int i = 0; i < N_PARAMS; i++)
            cr_expect(fabs((double)g[i] - gd[i]) <= 1e-5 * (1.0 + fabs(gd[i])),
                      "%s, step %d: grad[%d] = %.9g, expected %.9g", what, t, i, (double)g[i],
                      gd[i]);
        ref_step(cfg, t, ref, gd, buf_a, buf_b);
        expect_close(p, ref, t, what);
    }
    shoal_optim_free(opt);
}

/* ---- the formulas of optim.h, in double ---------------------------------- */

static void ref_sgd(const shoal_optim_config *c, int t, double *p, const double *g, double *a,
                    double *b)
{
    for (int i = 0; i < N_PARAMS; i++)
        p[i] -= (double)c->lr * g[i];
}

static void ref_momentum(const shoal_optim_config *c, int t, double *p, const double *g,
                         double *buf, double *unused)
{
    const double mu = c->momentum, lr = c->lr;
    for (int i = 0; i < N_PARAMS; i++) {
        buf[i] = mu * buf[i] + g[i];
        p[i] -= lr * buf[i];
    }
}

static void ref_nesterov(const shoal_optim_config *c, int t, double *p, const double *g,
                         double *buf, double *unused)
{
    const double mu = c->momentum, lr = c->lr;
    for (int i = 0; i < N_PARAMS; i++) {
        buf[i] = mu * buf[i] + g[i];
        p[i] -= lr * (g[i] + mu * buf[i]);
    }
}

static void ref_adagrad(const shoal_optim_config *c, int t, double *p, const double *g, double *sum,
                        double *unused)
{
    const double lr = c->lr, eps = c->eps;
    for (int i = 0; i < N_PARAMS; i++) {
        sum[i] += g[i] * g[i];
        p[i] -= lr * g[i] / (sqrt(sum[i]) + eps);
    }
}

static void ref_rmsprop(const shoal_optim_config *c, int t, double *p, const double *g, double *v,
                        double *unused)
{
    const double a = c->alpha, lr = c->lr, eps = c->eps;
    for (int i = 0; i < N_PARAMS; i++) {
        v[i] = a * v[i] + (1.0 - a) * g[i] * g[i];
        p[i] -= lr * g[i] / (sqrt(v[i]) + eps);
    }
}

static void ref_adam(const shoal_optim_config *c, int t, double *p, const double *g, double *m,
                     double *v)
{
    const double b1 = c->beta1, b2 = c->beta2, lr = c->lr, eps = c->eps;
    for (int i = 0; i < N_PARAMS; i++) {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        double m_hat = m[i] / (1.0 - pow(b1, t));
        double v_hat = v[i] / (1.0 - pow(b2, t));
        p[i] -= lr * m_hat / (sqrt(v_hat) + eps);
    }
}

/* ---- each kind ------------------------------------------------------------ */

Test(ml_optim, sgd_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
    run_against_reference(&c, ref_sgd, "sgd");
}

Test(ml_optim, sgd_first_step_by_hand)
{
    /* p -= lr * g with lr = 0.5: values exact in binary. */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.5f);
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 3, &opt), SHOAL_OK);
    float p[3] = {1.0f, -2.0f, 0.25f}, g[3] = {0.5f, -1.0f, 4.0f};
    shoal_optim_step(opt, p, g, NULL);
    cr_expect_eq(p[0], 0.75f);
    cr_expect_eq(p[1], -1.5f);
    cr_expect_eq(p[2], -1.75f);
    shoal_optim_free(opt);
}

Test(ml_optim, momentum_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_MOMENTUM, 0.1f);
    run_against_reference(&c, ref_momentum, "momentum 0.9");
    c.momentum = 0.5f;
    c.lr = 0.3f;
    run_against_reference(&c, ref_momentum, "momentum 0.5");
}

Test(ml_optim, momentum_by_hand)
{
    /* mu = 0.5, lr = 1, g = 1 then 1: b = 1 then 1.5; p = -1 then -2.5. */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_MOMENTUM, 1.0f);
    c.momentum = 0.5f;
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 1, &opt), SHOAL_OK);
    float p = 0.0f, g = 1.0f;
    shoal_optim_step(opt, &p, &g, NULL);
    cr_expect_eq(p, -1.0f);
    g = 1.0f;
    shoal_optim_step(opt, &p, &g, NULL);
    cr_expect_eq(p, -2.5f);
    shoal_optim_free(opt);
}

Test(ml_optim, nesterov_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_NESTEROV, 0.1f);
    run_against_reference(&c, ref_nesterov, "nesterov 0.9");
    c.momentum = 0.5f;
    c.lr = 0.3f;
    run_against_reference(&c, ref_nesterov, "nesterov 0.5");
}

Test(ml_optim, nesterov_by_hand)
{
    /* mu = 0.5, lr = 1, g = 1 then 1: b = 1, p -= 1 + 0.5 = 1.5;
     * b = 1.5, p -= 1 + 0.75 = 1.75. */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_NESTEROV, 1.0f);
    c.momentum = 0.5f;
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 1, &opt), SHOAL_OK);
    float p = 0.0f, g = 1.0f;
    shoal_optim_step(opt, &p, &g, NULL);
    cr_expect_eq(p, -1.5f);
    g = 1.0f;
    shoal_optim_step(opt, &p, &g, NULL);
    cr_expect_eq(p, -3.25f);
    shoal_optim_free(opt);
}

Test(ml_optim, adagrad_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_ADAGRAD, 0.1f);
    run_against_reference(&c, ref_adagrad, "adagrad");
    c.eps = 0.5f; /* large enough that eps's place in the formula matters */
    run_against_reference(&c, ref_adagrad, "adagrad eps 0.5");
}

Test(ml_optim, rmsprop_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_RMSPROP, 0.01f);
    run_against_reference(&c, ref_rmsprop, "rmsprop alpha 0.99");
    c.alpha = 0.75f;
    c.eps = 0.25f;
    c.lr = 0.1f;
    run_against_reference(&c, ref_rmsprop, "rmsprop alpha 0.75");
}

Test(ml_optim, adam_steps_match_formula)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 0.1f);
    run_against_reference(&c, ref_adam, "adam defaults");
    /* Betas far from 1 and a large eps, so that bias correction, the two
     * moments and eps each change the result visibly. */
    c.beta1 = 0.5f;
    c.beta2 = 0.75f;
    c.eps = 0.1f;
    run_against_reference(&c, ref_adam, "adam 0.5/0.75");
}

Test(ml_optim, adam_first_step_is_lr_times_sign)
{
    /* With bias correction, m_hat = g and v_hat = g^2 at t = 1, so the first
     * step is lr * g / (|g| + eps), about lr * sign(g). */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 0.01f);
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 3, &opt), SHOAL_OK);
    float p[3] = {0, 0, 0}, g[3] = {3.0f, -0.002f, 40.0f};
    shoal_optim_step(opt, p, g, NULL);
    cr_expect_float_eq(p[0], -0.01f, 1e-6);
    cr_expect_float_eq(p[1], 0.01f, 1e-6);
    cr_expect_float_eq(p[2], -0.01f, 1e-6);
    shoal_optim_free(opt);
}

/* ---- weight decay and FedProx --------------------------------------------- */

Test(ml_optim, weight_decay_adds_to_gradient)
{
    const ref_step_fn refs[] = {ref_sgd,     ref_momentum, ref_nesterov,
                                ref_adagrad, ref_rmsprop,  ref_adam};
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.05f);
        c.weight_decay = 0.25f;
        run_against_reference(&c, refs[k], shoal_optim_kind_name((shoal_optim_kind)k));
    }
}

Test(ml_optim, weight_decay_by_hand)
{
    /* g = 0, wd = 0.5, lr = 0.5, p = 2: g becomes 1, p becomes 1.5. */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.5f);
    c.weight_decay = 0.5f;
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 1, &opt), SHOAL_OK);
    float p = 2.0f, g = 0.0f;
    shoal_optim_step(opt, &p, &g, NULL);
    cr_expect_eq(g, 1.0f);
    cr_expect_eq(p, 1.5f);
    shoal_optim_free(opt);
}

Test(ml_optim, prox_term_pulls_towards_anchor)
{
    const ref_step_fn refs[] = {ref_sgd,     ref_momentum, ref_nesterov,
                                ref_adagrad, ref_rmsprop,  ref_adam};
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.05f);
        c.prox_mu = 0.5f;
        run_against_reference(&c, refs[k], shoal_optim_kind_name((shoal_optim_kind)k));
        c.weight_decay = 0.125f; /* both terms at once */
        run_against_reference(&c, refs[k], shoal_optim_kind_name((shoal_optim_kind)k));
    }
}

Test(ml_optim, prox_by_hand)
{
    /* g = 0, mu = 1, lr = 0.25, p = 3, anchor = 1: g = 2, p = 2.5. At the
     * anchor the term vanishes. */
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.25f);
    c.prox_mu = 1.0f;
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, 2, &opt), SHOAL_OK);
    const float anchor[2] = {1.0f, -4.0f};
    float p[2] = {3.0f, -4.0f}, g[2] = {0.0f, 0.0f};
    shoal_optim_step(opt, p, g, anchor);
    cr_expect_eq(g[0], 2.0f);
    cr_expect_eq(p[0], 2.5f);
    cr_expect_eq(g[1], 0.0f);
    cr_expect_eq(p[1], -4.0f);
    shoal_optim_free(opt);
}

Test(ml_optim, zero_prox_mu_accepts_null_anchor)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 0.1f);
    shoal_optim *opt;
    cr_assert_eq(shoal_optim_new(&c, N_PARAMS, &opt), SHOAL_OK);
    float p[N_PARAMS], g[N_PARAMS];
    memcpy(p, params_start, sizeof p);
    memcpy(g, grads[0], sizeof g);
    shoal_optim_step(opt, p, g, NULL);
    cr_expect_arr_eq(g, grads[0], sizeof g, "grad changed without decay or prox");
    shoal_optim_free(opt);
}

/* ---- reset ---------------------------------------------------------------- */

Test(ml_optim, reset_matches_fresh_optimizer)
{
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        const char *kind = shoal_optim_kind_name((shoal_optim_kind)k);
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.05f);
        c.beta1 = 0.5f; /* bias correction depends strongly on the step count */
        shoal_optim *used, *fresh;
        cr_assert_eq(shoal_optim_new(&c, N_PARAMS, &used), SHOAL_OK);
        cr_assert_eq(shoal_optim_new(&c, N_PARAMS, &fresh), SHOAL_OK);
        float p[N_PARAMS], g[N_PARAMS];
        memcpy(p, params_start, sizeof p);
        for (int t = 0; t < 2; t++) {
            memcpy(g, grads[t], sizeof g);
            shoal_optim_step(used, p, g, NULL);
        }
        shoal_optim_reset(used);

        /* From the same point, the reset optimizer and a new one agree
         * bit for bit, step after step. */
        float q[N_PARAMS], h[N_PARAMS];
        memcpy(q, p, sizeof q);
        for (int t = 0; t < N_STEPS; t++) {
            memcpy(g, grads[(t + 2) % N_STEPS], sizeof g);
            memcpy(h, g, sizeof h);
            shoal_optim_step(used, p, g, NULL);
            shoal_optim_step(fresh, q, h, NULL);
            cr_expect_arr_eq(p, q, sizeof p, "%s: step %d after reset differs from fresh", kind,
                             t + 1);
        }
        shoal_optim_free(used);
        shoal_optim_free(fresh);
    }
}

Test(ml_optim, without_reset_state_carries_over)
{
    /* The converse of reset_matches_fresh_optimizer: stateful kinds do
     * depend on history, so that test can fail. */
    for (int k = SHOAL_OPTIM_MOMENTUM; k <= SHOAL_OPTIM_ADAM; k++) {
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.05f);
        c.beta1 = 0.5f;
        shoal_optim *used, *fresh;
        cr_assert_eq(shoal_optim_new(&c, N_PARAMS, &used), SHOAL_OK);
        cr_assert_eq(shoal_optim_new(&c, N_PARAMS, &fresh), SHOAL_OK);
        float p[N_PARAMS], q[N_PARAMS], g[N_PARAMS];
        memcpy(p, params_start, sizeof p);
        memcpy(g, grads[0], sizeof g);
        shoal_optim_step(used, p, g, NULL);
        memcpy(q, p, sizeof q);
        memcpy(g, grads[1], sizeof g);
        shoal_optim_step(used, p, g, NULL);
        memcpy(g, grads[1], sizeof g);
        shoal_optim_step(fresh, q, g, NULL);
        cr_expect(memcmp(p, q, sizeof p) != 0, "%s: history made no difference",
                  shoal_optim_kind_name((shoal_optim_kind)k));
        shoal_optim_free(used);
        shoal_optim_free(fresh);
    }
}

/* ---- config --------------------------------------------------------------- */

Test(ml_optim, defaults_match_header)
{
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.125f);
        cr_expect_eq(c.kind, (shoal_optim_kind)k);
        cr_expect_eq(c.lr, 0.125f);
        cr_expect_eq(c.momentum, 0.9f);
        cr_expect_eq(c.beta1, 0.9f);
        cr_expect_eq(c.beta2, 0.999f);
        cr_expect_eq(c.alpha, 0.99f);
        cr_expect_eq(c.eps, k == SHOAL_OPTIM_ADAGRAD ? 1e-10f : 1e-8f);
        cr_expect_eq(c.weight_decay, 0.0f);
        cr_expect_eq(c.prox_mu, 0.0f);
        shoal_errinfo ei = {{0}};
        cr_expect_eq(shoal_optim_config_check(&c, &ei), SHOAL_OK, "%s", ei.msg);
    }
}

static void expect_config_refused(shoal_optim_config cfg, const char *field, double value)
{
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_optim_config_check(&cfg, &ei), SHOAL_EINVAL, "%s = %g accepted", field,
                 value);
    cr_expect_not_null(strstr(ei.msg, field), "message '%s' does not name %s (value %g)", ei.msg,
                       field, value);
    cr_expect_eq(shoal_optim_config_check(&cfg, NULL), SHOAL_EINVAL);
    shoal_optim *opt = (shoal_optim *)&cfg; /* a sentinel that must be cleared */
    cr_expect_eq(shoal_optim_new(&cfg, 3, &opt), SHOAL_EINVAL, "%s = %g", field, value);
    cr_expect_null(opt, "bad config left *out set");
}

Test(ml_optim, config_check_names_bad_field)
{
    const float bad_lr[] = {0.0f, -0.1f, NAN, INFINITY, -INFINITY};
    const float bad_unit[] = {1.0f, 1.5f, -0.01f, NAN, INFINITY};
    const float bad_eps[] = {0.0f, -1e-8f, NAN, INFINITY};
    const float bad_nonneg[] = {-0.1f, -INFINITY, NAN, INFINITY};
    shoal_optim_config c;
    for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
        c = shoal_optim_defaults(SHOAL_OPTIM_SGD, bad_lr[i]);
        expect_config_refused(c, "lr", bad_lr[i]);
    }
    for (size_t i = 0; i < sizeof bad_unit / sizeof bad_unit[0]; i++) {
        c = shoal_optim_defaults(SHOAL_OPTIM_MOMENTUM, 0.1f);
        c.momentum = bad_unit[i];
        expect_config_refused(c, "momentum", bad_unit[i]);
        c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 0.1f);
        c.beta1 = bad_unit[i];
        expect_config_refused(c, "beta1", bad_unit[i]);
        c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 0.1f);
        c.beta2 = bad_unit[i];
        expect_config_refused(c, "beta2", bad_unit[i]);
        c = shoal_optim_defaults(SHOAL_OPTIM_RMSPROP, 0.1f);
        c.alpha = bad_unit[i];
        expect_config_refused(c, "alpha", bad_unit[i]);
    }
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
        c = shoal_optim_defaults(SHOAL_OPTIM_ADAGRAD, 0.1f);
        c.eps = bad_eps[i];
        expect_config_refused(c, "eps", bad_eps[i]);
    }
    for (size_t i = 0; i < sizeof bad_nonneg / sizeof bad_nonneg[0]; i++) {
        c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
        c.weight_decay = bad_nonneg[i];
        expect_config_refused(c, "weight_decay", bad_nonneg[i]);
        c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
        c.prox_mu = bad_nonneg[i];
        expect_config_refused(c, "prox_mu", bad_nonneg[i]);
    }
    c = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.1f);
    c.kind = (shoal_optim_kind)6;
    expect_config_refused(c, "kind", 6);
    cr_expect_eq(shoal_optim_config_check(NULL, NULL), SHOAL_EINVAL);
}

Test(ml_optim, config_check_accepts_boundaries)
{
    shoal_optim_config c = shoal_optim_defaults(SHOAL_OPTIM_ADAM, 1e-6f);
    c.momentum = 0.0f;
    c.beta1 = 0.0f;
    c.beta2 = 0.0f;
    c.alpha = 0.0f;
    c.weight_decay = 0.0f;
    c.prox_mu = 0.0f;
    c.eps = 1e-30f;
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_optim_config_check(&c, &ei), SHOAL_OK, "%s", ei.msg);
    c.weight_decay = 10.0f;
    c.prox_mu = 100.0f;
    c.lr = 1e3f;
    cr_expect_eq(shoal_optim_config_check(&c, &ei), SHOAL_OK, "%s", ei.msg);
}

Test(ml_optim, kind_names_round_trip)
{
    const char *names[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"};
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        cr_assert_str_eq(shoal_optim_kind_name((shoal_optim_kind)k), names[k]);
        shoal_optim_kind kind = (shoal_optim_kind)-1;
        cr_assert_eq(shoal_optim_kind_parse(names[k], &kind), SHOAL_OK, "%s", names[k]);
        cr_assert_eq(kind, (shoal_optim_kind)k);
    }
}

Test(ml_optim, unknown_kind_names_are_refused)
{
    const char *bad[] = {"", "SGD", "sgd ", " adam", "adamw", "ada", "momentum2", "fedavg"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shoal_optim_kind kind;
        cr_expect_eq(shoal_optim_kind_parse(bad[i], &kind), SHOAL_EINVAL, "'%s' accepted", bad[i]);
    }
    shoal_optim_kind kind;
    cr_expect_eq(shoal_optim_kind_parse(NULL, &kind), SHOAL_EINVAL);
    cr_expect_eq(shoal_optim_kind_parse("sgd", NULL), SHOAL_EINVAL);
    const char *name = shoal_optim_kind_name((shoal_optim_kind)99);
    cr_assert_not_null(name);
    cr_expect_eq(shoal_optim_kind_parse(name, &kind), SHOAL_EINVAL, "'%s' names kind 99", name);
}

Test(ml_optim, zero_parameters_is_allowed)
{
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.1f);
        shoal_optim *opt;
        cr_assert_eq(shoal_optim_new(&c, 0, &opt), SHOAL_OK);
        float p = 7.0f, g = 1.0f;
        shoal_optim_step(opt, &p, &g, NULL);
        shoal_optim_reset(opt);
        cr_expect_eq(p, 7.0f);
        shoal_optim_free(opt);
    }
    shoal_optim_free(NULL);
}

Test(ml_optim, new_reports_every_allocation_failure)
{
    for (int k = SHOAL_OPTIM_SGD; k <= SHOAL_OPTIM_ADAM; k++) {
        const char *kind = shoal_optim_kind_name((shoal_optim_kind)k);
        shoal_optim_config c = shoal_optim_defaults((shoal_optim_kind)k, 0.1f);
        int done = 0;
        for (long allow = 0; allow < 100 && !done; allow++) {
            shoal_optim *opt = NULL;
            shoal_failalloc_install(allow);
            shoal_err err = shoal_optim_new(&c, 5, &opt);
            if (err == SHOAL_OK) {
                done = 1;
                shoal_optim_free(opt);
            } else {
                cr_expect_eq(err, SHOAL_ENOMEM, "%s, %ld allocations allowed: %s", kind, allow,
                             shoal_err_name(err));
                cr_expect_null(opt);
            }
            long live = shoal_failalloc_live();
            shoal_failalloc_uninstall();
            cr_assert_eq(live, 0, "%s: %ld blocks leaked with %ld allocations allowed", kind, live,
                         allow);
        }
        cr_assert(done, "%s: never succeeded", kind);
    }
}
