/* A population's plan (how devices train), round parameters and server
 * strategy. */
#include <stdio.h>
#include <string.h>

#include "server_config_int.h"
#include "shoal/alloc.h"

static const char *const plan_keys[] = {
    "optimizer",    "learning_rate", "momentum",        "beta1",  "beta2",      "alpha",
    "eps",          "weight_decay",  "prox_mu",         "epochs", "batch_size", "collection",
    "max_examples", "min_examples",  "max_duration_ms", NULL};
static const char *const round_keys[] = {"mode",
                                         "goal_count",
                                         "over_selection",
                                         "min_report_fraction",
                                         "selection_window_ms",
                                         "reporting_deadline_ms",
                                         "weighting",
                                         "pipelining",
                                         "eval_every",
                                         "eval_goal_count",
                                         "buffer_size",
                                         "max_staleness",
                                         "staleness_exponent",
                                         "retry_min_ms",
                                         "retry_max_ms",
                                         "population_estimate",
                                         "resume_grace_ms",
                                         NULL};
static const char *const strategy_keys[] = {"name",  "server_lr", "momentum", "beta1",
                                            "beta2", "tau",       NULL};

static const char *optim_name(int i)
{
    return shoal_optim_kind_name((shoal_optim_kind)i);
}

static const char *strategy_name(int i)
{
    return shoal_server_optim_kind_name((shoal_server_optim_kind)i);
}

/* A client hyperparameter `key` in [0, 1) that only `kinds` use. */
static shoal_err plan_unit_param(cfg_ctx *c, const json_t *plan, const char *key,
                                 shoal_optim_kind kind, unsigned kinds, const char *users,
                                 float *out)
{
    if (!(kinds & (1u << kind))) {
        char why[160];
        snprintf(why, sizeof why, "not used by optimizer '%s'; remove it or choose %s",
                 shoal_optim_kind_name(kind), users);
        return shoal_cfg_refuse_unused(c, plan, key, why);
    }
    return shoal_cfg_float(c, plan, key, 0, 0.0, 0, 1.0, 1, out);
}

#define BIT(k) (1u << (k))

shoal_err shoal_cfg_parse_plan(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *plan;
    shoal_err err = shoal_cfg_object(c, pop, "plan", 1, plan_keys, &plan);
    if (err)
        return err;
    const char *optims[8];
    const size_t optim_count = shoal_cfg_names_of(optim_name, optims, 8);
    int kind_index = 0;
    float lr = 0.0f;
    shoal_cfg_push_key(c, "plan");
    err = shoal_cfg_choice(c, plan, "optimizer", 0, "optimizer", optims, optim_count, &kind_index);
    shoal_optim_kind kind = SHOAL_OPTIM_SGD;
    if (!err && shoal_optim_kind_parse(optims[kind_index], &kind) != SHOAL_OK)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "optimizer '%s' is not known to ml/",
                             optims[kind_index]);
    if (!err)
        err = shoal_cfg_float(c, plan, "learning_rate", 1, 0.0, 1, 100.0, 0, &lr);
    /* Defaults depend on the optimizer (adagrad's eps), so they come first
     * and the file overrides them. */
    shoal_optim_config *o = &p->client_optim;
    if (!err)
        *o = shoal_optim_defaults(kind, lr);
    const unsigned momentum_users = BIT(SHOAL_OPTIM_MOMENTUM) | BIT(SHOAL_OPTIM_NESTEROV);
    const unsigned adam = BIT(SHOAL_OPTIM_ADAM);
    const unsigned eps_users = BIT(SHOAL_OPTIM_ADAGRAD) | BIT(SHOAL_OPTIM_RMSPROP) | adam;
    if (!err)
        err = plan_unit_param(c, plan, "momentum", kind, momentum_users, "momentum or nesterov",
                              &o->momentum);
    if (!err)
        err = plan_unit_param(c, plan, "beta1", kind, adam, "adam", &o->beta1);
    if (!err)
        err = plan_unit_param(c, plan, "beta2", kind, adam, "adam", &o->beta2);
    if (!err)
        err =
            plan_unit_param(c, plan, "alpha", kind, BIT(SHOAL_OPTIM_RMSPROP), "rmsprop", &o->alpha);
    if (!err && !(eps_users & BIT(kind))) {
        char why[160];
        snprintf(why, sizeof why,
                 "not used by optimizer '%s'; remove it or choose adagrad, "
                 "rmsprop or adam",
                 shoal_optim_kind_name(kind));
        err = shoal_cfg_refuse_unused(c, plan, "eps", why);
    } else if (!err) {
        err = shoal_cfg_float(c, plan, "eps", 0, 0.0, 1, 1.0, 0, &o->eps);
    }
    if (!err)
        err = shoal_cfg_float(c, plan, "weight_decay", 0, 0.0, 0, 10.0, 0, &o->weight_decay);
    if (!err)
        err = shoal_cfg_float(c, plan, "prox_mu", 0, 0.0, 0, 1000.0, 0, &o->prox_mu);
    if (!err) {
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_optim_config_check(o, &inner);
        if (checked)
            err = shoal_cfg_relay(c, checked, &inner);
    }

    p->epochs = EPOCHS_DEFAULT;
    p->batch_size = BATCH_DEFAULT;
    p->max_examples = 0;
    p->min_examples = 1;
    if (!err)
        err = shoal_cfg_u32(c, plan, "epochs", 0, 1, 1000, &p->epochs);
    if (!err)
        err = shoal_cfg_u32(c, plan, "batch_size", 0, 1, 65536, &p->batch_size);
    if (!err)
        err = shoal_cfg_u32(c, plan, "max_examples", 0, 0, UINT32_MAX, &p->max_examples);
    if (!err)
        err = shoal_cfg_u32(c, plan, "min_examples", 0, 1, UINT32_MAX, &p->min_examples);
    if (!err && p->max_examples && p->min_examples > p->max_examples) {
        shoal_cfg_push_key(c, "min_examples");
        err = shoal_cfg_fail(c, SHOAL_EINVAL,
                             "%u is more than max_examples (%u); expected at most max_examples",
                             (unsigned)p->min_examples, (unsigned)p->max_examples);
        shoal_cfg_pop(c);
    }
    const char *collection = NULL;
    if (!err)
        err = shoal_cfg_string(c, plan, "collection", 0, "a collection name of 1 to 128 bytes",
                               &collection);
    if (!err && collection) {
        size_t n = strlen(collection), bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += (unsigned char)collection[i] < 0x20 || collection[i] == 0x7f;
        if (n == 0 || n > SHOAL_CONFIG_NAME_MAX || bad) {
            shoal_cfg_push_key(c, "collection");
            err = shoal_cfg_fail(c, SHOAL_EINVAL,
                                 "%s; expected a collection name of 1 to 128 bytes without control "
                                 "characters",
                                 n == 0                      ? "empty"
                                 : n > SHOAL_CONFIG_NAME_MAX ? "too long"
                                                             : "control character");
            shoal_cfg_pop(c);
        }
    }
    if (!err)
        p->collection = shoal_cfg_dup_string(c, collection ? collection : p->name, &err);
    shoal_cfg_pop(c);
    return err;
}

static shoal_err parse_strategy(cfg_ctx *c, const json_t *pop, shoal_server_optim_config *s)
{
    json_t *strategy;
    shoal_err err = shoal_cfg_object(c, pop, "strategy", 0, strategy_keys, &strategy);
    if (err)
        return err;
    const char *names[8];
    const size_t count = shoal_cfg_names_of(strategy_name, names, 8);
    int index = 0;
    shoal_server_optim_kind kind = SHOAL_SERVER_FEDAVG;
    shoal_cfg_push_key(c, "strategy");
    err = shoal_cfg_choice(c, strategy, "name", 0, "strategy", names, count, &index);
    if (!err && shoal_server_optim_kind_parse(names[index], &kind) != SHOAL_OK)
        err = shoal_cfg_fail(c, SHOAL_EINVAL, "strategy '%s' is not known to ml/", names[index]);
    /* The server learning rate's default depends on the strategy (0.003 for
     * the adaptive ones): defaults first, then the file. */
    if (!err)
        *s = shoal_server_optim_defaults(kind);
    const int adaptive = kind == SHOAL_SERVER_FEDADAGRAD || kind == SHOAL_SERVER_FEDADAM ||
                         kind == SHOAL_SERVER_FEDYOGI;
    char why[160];
    if (!err)
        err = shoal_cfg_float(c, strategy, "server_lr", 0, 0.0, 1, 100.0, 0, &s->lr);
    if (!err && kind != SHOAL_SERVER_FEDAVGM) {
        snprintf(why, sizeof why, "not used by strategy '%s'; remove it or choose fedavgm",
                 names[index]);
        err = shoal_cfg_refuse_unused(c, strategy, "momentum", why);
    } else if (!err) {
        err = shoal_cfg_float(c, strategy, "momentum", 0, 0.0, 0, 1.0, 1, &s->momentum);
    }
    snprintf(why, sizeof why,
             "not used by strategy '%s'; remove it or choose fedadagrad, fedadam or fedyogi",
             names[index]);
    if (!err && !adaptive)
        err = shoal_cfg_refuse_unused(c, strategy, "beta1", why);
    else if (!err)
        err = shoal_cfg_float(c, strategy, "beta1", 0, 0.0, 0, 1.0, 1, &s->beta1);
    if (!err && !adaptive)
        err = shoal_cfg_refuse_unused(c, strategy, "tau", why);
    else if (!err)
        err = shoal_cfg_float(c, strategy, "tau", 0, 0.0, 1, 10.0, 0, &s->tau);
    if (!err && kind != SHOAL_SERVER_FEDADAM && kind != SHOAL_SERVER_FEDYOGI) {
        snprintf(why, sizeof why,
                 "not used by strategy '%s'; remove it or choose fedadam or "
                 "fedyogi",
                 names[index]);
        err = shoal_cfg_refuse_unused(c, strategy, "beta2", why);
    } else if (!err) {
        err = shoal_cfg_float(c, strategy, "beta2", 0, 0.0, 0, 1.0, 1, &s->beta2);
    }
    if (!err) {
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_server_optim_config_check(s, &inner);
        if (checked)
            err = shoal_cfg_relay(c, checked, &inner);
    }
    shoal_cfg_pop(c);
    return err;
}

shoal_err shoal_cfg_parse_round(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    json_t *round;
    shoal_err err = shoal_cfg_object(c, pop, "round", 1, round_keys, &round);
    if (err)
        return err;
    static const char *const modes[] = {"sync", "async"};            /* shoal_round_mode order */
    static const char *const weightings[] = {"examples", "uniform"}; /* shoal_weighting order */
    int mode = SHOAL_ROUND_SYNC;
    uint32_t goal = 1;
    shoal_cfg_push_key(c, "round");
    err = shoal_cfg_choice(c, round, "mode", 0, "round mode", modes, 2, &mode);
    if (!err)
        err = shoal_cfg_u32(c, round, "goal_count", 1, 1, GOAL_MAX, &goal);
    shoal_round_config *r = &p->round;
    /* eval_goal_count defaults to goal_count: the defaults need both. */
    if (!err)
        *r = shoal_round_defaults((shoal_round_mode)mode, goal);
    if (!err)
        err = shoal_cfg_float(c, round, "over_selection", 0, 1.0, 0, 100.0, 0, &r->over_selection);
    if (!err)
        err = shoal_cfg_float(c, round, "min_report_fraction", 0, 0.0, 1, 1.0, 0,
                              &r->min_report_fraction);
    if (!err)
        err = shoal_cfg_int(c, round, "selection_window_ms", 0, 1, DAY_MS, &r->selection_window_ms);
    if (!err)
        err = shoal_cfg_int(c, round, "reporting_deadline_ms", 0, 1, WEEK_MS,
                            &r->reporting_deadline_ms);
    int weighting = (int)r->weighting;
    if (!err)
        err = shoal_cfg_choice(c, round, "weighting", 0, "weighting", weightings, 2, &weighting);
    r->weighting = (shoal_weighting)weighting;
    if (!err && mode == SHOAL_ROUND_ASYNC)
        err = shoal_cfg_refuse_unused(c, round, "pipelining",
                                      "only used in sync mode; remove it or set mode to \"sync\"");
    else if (!err)
        err = shoal_cfg_bool(c, round, "pipelining", &r->pipelining);
    if (!err)
        err = shoal_cfg_u32(c, round, "eval_every", 0, 0, GOAL_MAX, &r->eval_every);
    if (!err)
        err = shoal_cfg_u32(c, round, "eval_goal_count", 0, 1, GOAL_MAX, &r->eval_goal_count);
    if (mode == SHOAL_ROUND_SYNC) {
        static const char *const async_only[] = {"buffer_size", "max_staleness",
                                                 "staleness_exponent"};
        for (size_t i = 0; !err && i < 3; i++)
            err = shoal_cfg_refuse_unused(
                c, round, async_only[i],
                "only used in async mode; remove it or set mode to \"async\"");
    } else {
        if (!err)
            err = shoal_cfg_u32(c, round, "buffer_size", 0, 1, GOAL_MAX, &r->buffer_size);
        if (!err)
            err = shoal_cfg_u32(c, round, "max_staleness", 0, 0, GOAL_MAX, &r->max_staleness);
        if (!err)
            err = shoal_cfg_float(c, round, "staleness_exponent", 0, 0.0, 0, 10.0, 0,
                                  &r->staleness_exponent);
    }
    if (!err)
        err = shoal_cfg_int(c, round, "retry_min_ms", 0, 1, WEEK_MS, &r->retry_min_ms);
    if (!err)
        err = shoal_cfg_int(c, round, "retry_max_ms", 0, 1, WEEK_MS, &r->retry_max_ms);
    int64_t estimate = 0;
    if (!err)
        err = shoal_cfg_int(c, round, "population_estimate", 0, 0, 1000000000000LL, &estimate);
    r->population_estimate = (uint64_t)estimate;
    p->resume_grace_ms = RESUME_GRACE_DEFAULT;
    if (!err)
        err = shoal_cfg_int(c, round, "resume_grace_ms", 0, 0, 3600000, &p->resume_grace_ms);
    shoal_cfg_pop(c);
    if (!err)
        err = parse_strategy(c, pop, &r->server_optim);
    if (!err) {
        /* Combinations (retry_min <= retry_max, ...) are the engine's rules;
         * its message is relayed at the round object. */
        shoal_errinfo inner = {{0}};
        shoal_err checked = shoal_round_config_check(r, &inner);
        if (checked) {
            shoal_cfg_push_key(c, "round");
            err = shoal_cfg_relay(c, checked, &inner);
            shoal_cfg_pop(c);
        }
    }
    return err;
}

/* max_duration_ms needs the round's deadline, so it is read last. */
shoal_err shoal_cfg_parse_duration(cfg_ctx *c, const json_t *pop, shoal_population_config *p)
{
    const int64_t deadline = p->round.reporting_deadline_ms;
    int64_t duration = deadline < MAX_DURATION_DEFAULT ? deadline : MAX_DURATION_DEFAULT;
    const json_t *plan = json_object_get(pop, "plan");
    shoal_cfg_push_key(c, "plan");
    shoal_err err = shoal_cfg_int(c, plan, "max_duration_ms", 0, 1, DAY_MS, &duration);
    if (!err && duration > deadline) {
        shoal_cfg_push_key(c, "max_duration_ms");
        err = shoal_cfg_fail(
            c, SHOAL_EINVAL,
            "%lld is longer than round.reporting_deadline_ms (%lld); expected at most "
            "the reporting deadline",
            (long long)duration, (long long)deadline);
        shoal_cfg_pop(c);
    }
    shoal_cfg_pop(c);
    p->max_duration_ms = (uint64_t)duration;
    return err;
}
