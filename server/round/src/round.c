/* The round engine: its life (new, free), its slots and action queue, and
 * what it tells about its state. The round logic lives in
 * round_lifecycle.c (rounds) and round_events.c (events in), pace steering
 * in round_pace.c, the configuration in round_config.c. */
#include <math.h>
#include <string.h>

#include "round_int.h"
#include "shoal/alloc.h"

void shoal_round_slot_reset(struct slot *s)
{
    memset(s, 0, sizeof *s);
    s->phase = PHASE_IDLE;
}

static shoal_err push_action(shoal_round_engine *e, const shoal_round_action *a)
{
    shoal_err err = shoal_round_reserve_actions(e, 1);
    if (err)
        return err;
    e->actions[(e->action_head + e->action_count) % e->action_cap] = *a;
    e->action_count++;
    return SHOAL_OK;
}

shoal_err shoal_round_next_action(shoal_round_engine *e, shoal_round_action *a)
{
    if (!e || !a)
        return SHOAL_EINVAL;
    if (e->action_count == 0)
        return SHOAL_DONE;
    *a = e->actions[e->action_head];
    e->action_head = (e->action_head + 1) % e->action_cap;
    e->action_count--;
    return SHOAL_ROW;
}

/* Queues an action; on allocation failure the engine is unusable for the
 * driver anyway, so actions are pre-reserved where that matters (see
 * reserve_actions) and this only ever fails when nothing was reserved. */
void shoal_round_emit(shoal_round_engine *e, const shoal_round_action *a)
{
    (void)push_action(e, a);
}

shoal_err shoal_round_reserve_actions(shoal_round_engine *e, size_t more)
{
    if (e->action_cap - e->action_count >= more)
        return SHOAL_OK;
    size_t cap = e->action_cap ? e->action_cap * 2 : 64;
    while (cap - e->action_count < more)
        cap *= 2;
    return shoal_ring_grow(&e->actions, &e->action_cap, &e->action_head, e->action_count,
                           sizeof *e->actions, cap);
}

uint32_t shoal_round_ceil_mul(uint32_t n, float f)
{
    /* Fractions arrive as floats (0.8f is 0.800000012): round away the
     * representation error before taking the ceiling. */
    double v = ceil((double)n * (double)f - 1e-4);
    return v < 1.0 ? 1u : (uint32_t)v;
}

/* ---- public -------------------------------------------------------------------- */

shoal_err shoal_round_engine_new(const shoal_round_config *cfg, const float *params,
                                 size_t param_count, const float *server_state,
                                 uint64_t server_steps, uint64_t version, int64_t now,
                                 shoal_round_engine **out)
{
    if (!out || !params || param_count == 0 || shoal_round_config_check(cfg, NULL) != SHOAL_OK)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_round_engine *e = shoal_calloc(1, sizeof *e);
    if (!e)
        return SHOAL_ENOMEM;
    e->cfg = *cfg;
    e->count = param_count;
    e->version = version;
    shoal_err err = SHOAL_ENOMEM;
    e->params = shoal_mallocarray(param_count, sizeof(float));
    e->acc = shoal_calloc(param_count, sizeof(float));
    e->mean = shoal_mallocarray(param_count, sizeof(float));
    if (!e->params || !e->acc || !e->mean)
        goto fail;
    memcpy(e->params, params, param_count * sizeof(float));
    if ((err = shoal_server_optim_new(&cfg->server_optim, param_count, &e->optim)))
        goto fail;
    if (server_state || server_steps)
        shoal_server_optim_state_set(e->optim, server_state, server_steps);
    if ((err = shoal_session_map_init(&e->sessions, 64)))
        goto fail;
    if ((err = shoal_round_reserve_actions(e, 64)))
        goto fail;
    for (int i = 0; i < SLOT_COUNT; i++)
        shoal_round_slot_reset(&e->slots[i]);
    e->last_checkin = now;
    /* Until rounds have been seen, assume the shortest plausible one: it
     * errs towards short retry windows, which the estimate then lengthens. */
    e->round_ms = (double)cfg->selection_window_ms;
    e->retry_mean_ms = (double)cfg->retry_min_ms;
    e->population = (double)cfg->population_estimate; /* 0: learnt from check-ins */
    e->buffer_started = now;
    if (cfg->mode == SHOAL_ROUND_SYNC)
        shoal_round_open_selection(e, &e->slots[SLOT_TRAIN_A], SHOAL_TASK_TRAIN, now);
    *out = e;
    return SHOAL_OK;
fail:
    shoal_round_engine_free(e);
    return err;
}

void shoal_round_engine_free(shoal_round_engine *e)
{
    if (!e)
        return;
    shoal_free(e->params);
    shoal_free(e->acc);
    shoal_free(e->mean);
    shoal_server_optim_free(e->optim);
    shoal_session_map_fini(&e->sessions);
    shoal_free(e->actions);
    shoal_free(e);
}

int shoal_round_session_open(const shoal_round_engine *e, shoal_session_id session)
{
    const struct session *ss = e ? shoal_session_map_find(&e->sessions, session) : NULL;
    return ss && ss->state == SESSION_CONFIGURED;
}

int shoal_round_session_known(const shoal_round_engine *e, shoal_session_id session)
{
    return e && shoal_session_map_find(&e->sessions, session) != NULL;
}

const float *shoal_round_params(const shoal_round_engine *e)
{
    return e->params;
}

size_t shoal_round_param_count(const shoal_round_engine *e)
{
    return e->count;
}

uint64_t shoal_round_version(const shoal_round_engine *e)
{
    return e->version;
}

const shoal_server_optim *shoal_round_server_optim(const shoal_round_engine *e)
{
    return e->optim;
}

uint64_t shoal_round_committed(const shoal_round_engine *e)
{
    return e->committed;
}

uint64_t shoal_round_abandoned(const shoal_round_engine *e)
{
    return e->abandoned;
}

double shoal_round_population_estimate(const shoal_round_engine *e)
{
    return e->population;
}
