/* The coordinator's side of secure aggregation (DESIGN.md §5): it cuts a
 * round's configured devices into groups, opens each group on an
 * aggregator (which runs its protocol, secagg_group.c), routes devices'
 * messages to it, and at the round's end adds the groups' unmasked sums
 * into the round's mean. Nothing here sees a key, a share or an input. */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "secagg_group.h"
#include "coordinator_int.h"
#include "shoal/alloc.h"
#include "shoal/log.h"

#define LOG_COMPONENT "secagg"

typedef struct sa_group_view {
    uint64_t id, round;
    uint32_t aggregator;
    uint32_t n, configured;
    shoal_session_id *sessions; /* n; 0 where no device was configured */
    shoal_secagg_config cfg;    /* what its members' plans announce */
    shoal_secagg_fixed fx;
    int state;   /* 0 running, 1 unmasked, 2 failed */
    double *sum; /* unmasked: param_count */
    uint64_t weight;
    uint64_t unclipped; /* unmasked, adaptive clipping: its survivors' unclipped bits */
} sa_group_view;

struct sa_rounds {
    shoal_server *srv;
    population *pop;
    sa_group_view *groups;
    size_t count, cap;
    uint64_t next_id;
};

shoal_err shoal_sa_rounds_new(shoal_server *srv, population *pop, sa_rounds **out)
{
    if (shoal_secagg_init() != SHOAL_OK)
        return SHOAL_ECRYPTO;
    sa_rounds *sa = shoal_calloc(1, sizeof *sa);
    if (!sa)
        return SHOAL_ENOMEM;
    sa->srv = srv;
    sa->pop = pop;
    /* Group ids unique across populations: the population in the top bits. */
    sa->next_id = ((uint64_t)pop->index << 48) + 1;
    *out = sa;
    return SHOAL_OK;
}

static void view_free(sa_group_view *g)
{
    shoal_free(g->sessions);
    shoal_free(g->sum);
}

void shoal_sa_rounds_free(sa_rounds *sa)
{
    if (!sa)
        return;
    for (size_t i = 0; i < sa->count; i++)
        view_free(&sa->groups[i]);
    shoal_free(sa->groups);
    shoal_free(sa);
}

static sa_group_view *find(const sa_rounds *sa, uint64_t id)
{
    for (size_t i = 0; i < sa->count; i++)
        if (sa->groups[i].id == id)
            return &sa->groups[i];
    return NULL;
}

/* The round's selection target cut into groups of at most group_size,
 * sizes differing by at most one: group `k` of them. */
static uint32_t group_size_of(const shoal_population_config *pc, uint32_t k, uint32_t *groups)
{
    uint32_t target = (uint32_t)ceil((double)pc->round.goal_count * pc->round.over_selection);
    uint32_t size = pc->secagg.group_size;
    *groups = (target + size - 1) / size;
    return target / *groups + (k < target % *groups);
}

/* degree and threshold for a group of n: the configured choice scaled to
 * this n (the config checked the full size). */
static void graph_for(const shoal_secagg_population_config *s, uint32_t n, shoal_secagg_config *cfg)
{
    cfg->n = n;
    cfg->degree = n - 1;
    cfg->threshold = n / 2 + 1;
    shoal_secagg_plus_params pp;
    if (s->plus && shoal_secagg_plus_choose(n, s->dropout_rate, s->corrupt_rate,
                                            SHOAL_SECAGG_SEMI_HONEST, &pp, NULL) == SHOAL_OK) {
        cfg->degree = pp.degree;
        cfg->threshold = pp.threshold;
    }
}

static shoal_err open_group(sa_rounds *sa, uint64_t round, uint32_t k, int64_t now,
                            sa_group_view **out)
{
    const shoal_population_config *pc = sa->pop->cfg;
    const shoal_secagg_population_config *s = &pc->secagg;
    uint32_t groups;
    const uint32_t n = group_size_of(pc, k, &groups);
    if (k >= groups || n < 3)
        return SHOAL_ELIMIT;
    if (sa->count == sa->cap) {
        size_t cap = sa->cap ? 2 * sa->cap : 8;
        sa_group_view *g = shoal_realloc(sa->groups, cap * sizeof *g);
        if (!g)
            return SHOAL_ENOMEM;
        sa->groups = g;
        sa->cap = cap;
    }
    sa_group_params *p = shoal_calloc(1, sizeof *p);
    shoal_session_id *sessions = shoal_calloc(n, sizeof *sessions);
    if (!p || !sessions) {
        shoal_free(p);
        shoal_free(sessions);
        return SHOAL_ENOMEM;
    }
    p->id = sa->next_id++;
    p->population = (uint32_t)sa->pop->index;
    p->round = round;
    graph_for(s, n, &p->cfg);
    p->cfg.bits = s->bits;
    /* The weighted update, the weight, and with adaptive clipping the
     * unclipped bit (Andrew et al. 2021): summed under the masks, so the
     * server learns only how many of a group's survivors set it. */
    p->flags = pc->dp.adaptive.enabled ? 1 : 0;
    p->cfg.length = sa->pop->param_count + 1 + p->flags;
    randombytes_buf(p->cfg.graph_seed, sizeof p->cfg.graph_seed);
    randombytes_buf(p->cfg.session_id, sizeof p->cfg.session_id);
    p->fx = (shoal_secagg_fixed){
        .clip = s->clip, .max_weight = s->max_weight, .max_contributors = n, .bits = s->bits};
    p->phase_timeout_ms = (int64_t)s->phase_timeout_ms;
    /* Training runs to the reporting deadline less the four phases. */
    p->advertise_deadline = now + pc->round.reporting_deadline_ms - 4 * p->phase_timeout_ms;
    shoal_err err = shoal_secagg_fixed_plan(&p->fx, NULL);
    const uint32_t agg_index = (uint32_t)(p->id % sa->srv->aggregator_count);
    shoal_msg m = {.type = MSG_AGG_SA_OPEN, .payload = p, .free_payload = shoal_free};
    sa_group_view *g = &sa->groups[sa->count];
    *g = (sa_group_view){.id = p->id,
                         .round = round,
                         .aggregator = agg_index,
                         .n = n,
                         .sessions = sessions,
                         .cfg = p->cfg,
                         .fx = p->fx};
    if (!err)
        err = shoal_actor_send_unbounded(sa->srv->aggregator_actors[agg_index], &m);
    if (err) {
        shoal_free(p);
        shoal_free(sessions);
        return err;
    }
    sa->count++;
    atomic_fetch_add(&sa->pop->metrics.sa_groups, 1);
    *out = g;
    return SHOAL_OK;
}

shoal_err shoal_sa_rounds_assign(sa_rounds *sa, uint64_t round, shoal_session_id session,
                                 int64_t now, sa_plan *out)
{
    sa_group_view *g = NULL;
    uint32_t opened = 0;
    for (size_t i = 0; i < sa->count; i++) {
        if (sa->groups[i].round != round)
            continue;
        opened++;
        if (sa->groups[i].state == 0 && sa->groups[i].configured < sa->groups[i].n) {
            g = &sa->groups[i];
            break;
        }
    }
    if (!g) {
        shoal_err err = open_group(sa, round, opened, now, &g);
        if (err)
            return err;
    }
    const uint32_t index = g->configured++;
    g->sessions[index] = session;
    *out = (sa_plan){.cfg = g->cfg,
                     .fx = g->fx,
                     .index = index,
                     .plus = sa->pop->cfg->secagg.plus,
                     .phase_timeout_ms = sa->pop->cfg->secagg.phase_timeout_ms};
    return SHOAL_OK;
}

static sa_group_view *group_of(const sa_rounds *sa, shoal_session_id session, uint32_t *index)
{
    for (size_t i = 0; i < sa->count; i++)
        for (uint32_t k = 0; k < sa->groups[i].configured; k++)
            if (sa->groups[i].sessions[k] == session) {
                *index = k;
                return &sa->groups[i];
            }
    return NULL;
}

shoal_err shoal_sa_rounds_forward(sa_rounds *sa, sa_input_msg *msg)
{
    uint32_t index;
    sa_group_view *g = group_of(sa, msg->session, &index);
    if (!g || g->state != 0)
        return SHOAL_ENOTFOUND;
    msg->group = g->id;
    msg->index = index;
    shoal_msg m = {
        .type = MSG_AGG_SA_INPUT, .payload = msg, .free_payload = shoal_sa_input_msg_free};
    return shoal_actor_send_unbounded(sa->srv->aggregator_actors[g->aggregator], &m);
}

shoal_session_id shoal_sa_rounds_session(const sa_rounds *sa, uint64_t group, uint32_t index)
{
    const sa_group_view *g = find(sa, group);
    return g && index < g->configured ? g->sessions[index] : 0;
}

void shoal_sa_rounds_result(sa_rounds *sa, sa_result_msg *res,
                            void (*report)(void *ctx, shoal_session_id session, int survived),
                            void *ctx)
{
    sa_group_view *g = find(sa, res->group);
    if (!g || g->state != 0)
        return;
    population *pop = sa->pop;
    for (int p = 0; p < 4; p++)
        atomic_fetch_add(&pop->metrics.sa_dropped[p], res->dropped[p]);
    /* Differential privacy: every device weighs 1 (max_weight 1), so a
     * group's weights add up to its survivors; more would mean a device
     * weighed itself above the sensitivity the noise is set for. */
    if (res->done && pop->cfg->dp.enabled && res->total_weight != res->survivor_count) {
        snprintf(res->why, sizeof res->why,
                 "its weights add up to %llu for %zu devices; with differential privacy each "
                 "device weighs 1",
                 (unsigned long long)res->total_weight, res->survivor_count);
        res->done = 0;
    }
    if (res->done && res->sum && res->param_count == pop->param_count) {
        g->state = 1;
        g->sum = res->sum;
        res->sum = NULL;
        g->weight = res->total_weight;
        g->unclipped = res->unclipped;
        atomic_fetch_add(&pop->metrics.sa_groups_done, 1);
        atomic_fetch_add(&pop->metrics.sa_inputs_ns, res->inputs_ns);
        atomic_fetch_add(&pop->metrics.sa_unmask_ns, res->unmask_ns);
        SHOAL_LOG(SHOAL_LOG_INFO, LOG_COMPONENT,
                  "population '%s': group %llu of round %llu unmasked: %zu of %u devices, "
                  "dropped %u/%u/%u/%u (advertise/share/mask/unmask); masked inputs %.3f ms "
                  "(CPU %.3f ms), unmasking %.3f ms (CPU %.3f ms)",
                  pop->cfg->name, (unsigned long long)g->id, (unsigned long long)g->round,
                  res->survivor_count, (unsigned)g->n, (unsigned)res->dropped[0],
                  (unsigned)res->dropped[1], (unsigned)res->dropped[2], (unsigned)res->dropped[3],
                  (double)res->inputs_ns / 1e6, (double)res->inputs_cpu_ns / 1e6,
                  (double)res->unmask_ns / 1e6, (double)res->unmask_cpu_ns / 1e6);
    } else {
        g->state = 2;
        atomic_fetch_add(&pop->metrics.sa_groups_failed, 1);
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                  "population '%s': group %llu of round %llu failed and is dropped from the "
                  "round, nothing of it revealed: %s",
                  pop->cfg->name, (unsigned long long)g->id, (unsigned long long)g->round,
                  res->why);
    }
    size_t next = 0;
    for (uint32_t k = 0; k < g->configured; k++) {
        int survived = 0;
        if (g->state == 1 && next < res->survivor_count && res->survivors[next] == k) {
            survived = 1;
            next++;
        }
        if (g->sessions[k])
            report(ctx, g->sessions[k], survived);
    }
}

static void forget_where(sa_rounds *sa, uint64_t round, int up_to)
{
    size_t kept = 0;
    for (size_t i = 0; i < sa->count; i++) {
        sa_group_view *g = &sa->groups[i];
        if (up_to ? g->round <= round : g->round == round)
            view_free(g);
        else
            sa->groups[kept++] = *g;
    }
    sa->count = kept;
}

shoal_err shoal_sa_rounds_mean(sa_rounds *sa, uint64_t round, int sum_only, float *mean,
                               uint64_t *weight_out, uint64_t *unclipped_out, char *why,
                               size_t why_len)
{
    const size_t count = sa->pop->param_count;
    double *sum = shoal_calloc(count, sizeof *sum);
    uint64_t weight = 0, unclipped = 0;
    uint32_t unmasked = 0, formed = 0;
    for (size_t i = 0; sum && i < sa->count; i++) {
        const sa_group_view *g = &sa->groups[i];
        if (g->round != round)
            continue;
        formed++;
        if (g->state != 1)
            continue;
        unmasked++;
        weight += g->weight;
        unclipped += g->unclipped;
        for (size_t j = 0; j < count; j++)
            sum[j] += g->sum[j];
    }
    shoal_err err = SHOAL_OK;
    const uint32_t min_groups = sa->pop->cfg->secagg.min_groups;
    if (!sum) {
        err = SHOAL_ENOMEM;
        snprintf(why, why_len, "out of memory adding the groups' sums");
    } else if (unmasked < min_groups || weight == 0) {
        err = SHOAL_ELIMIT;
        snprintf(why, why_len,
                 "%u of %u secure-aggregation groups unmasked; the round needs at least %u",
                 (unsigned)unmasked, (unsigned)formed, (unsigned)min_groups);
    } else {
        const double divisor = sum_only ? 1.0 : (double)weight;
        for (size_t j = 0; j < count; j++)
            mean[j] = (float)(sum[j] / divisor);
        *weight_out = weight;
        *unclipped_out = unclipped;
    }
    shoal_free(sum);
    forget_where(sa, round, 0);
    return err;
}

void shoal_sa_rounds_forget(sa_rounds *sa, uint64_t round)
{
    forget_where(sa, round, 1);
}

/* ---- the coordinator's side: the engine, routes and acks ------------------------ */

/* The engine asked for the round's aggregate: the mean of its unmasked
 * groups, or the round fails without them. */
void shoal_coordinator_sa_aggregate(coordinator *co, const shoal_round_action *a)
{
    const int64_t now = shoal_actor_now_ms();
    float *mean = shoal_mallocarray(co->pop->param_count, sizeof *mean);
    char why[200] = "out of memory for the mean";
    uint64_t reports = 0, unclipped = 0;
    shoal_err err = mean ? shoal_sa_rounds_mean(co->sa, a->round, co->dp != NULL, mean, &reports,
                                                &unclipped, why, sizeof why)
                         : SHOAL_ENOMEM;
    if (!err && co->dp) {
        /* DP weighs every device 1: the weights are the reports. */
        shoal_coordinator_dp_count(co, a->round, reports, unclipped);
        err = shoal_coordinator_dp_aggregated(co, now, a->round, mean);
    } else if (!err)
        err = shoal_round_aggregated_mean(co->engine, now, a->round, mean);
    else {
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT, "population '%s': round %llu: %s",
                  co->pop->cfg->name, (unsigned long long)(co->round_offset + a->round), why);
        err = shoal_round_aggregation_failed(co->engine, now, a->round);
    }
    if (err)
        SHOAL_LOG(SHOAL_LOG_ERROR, LOG_COMPONENT, "population '%s': round %llu: %s",
                  co->pop->cfg->name, (unsigned long long)(co->round_offset + a->round),
                  shoal_strerror(err));
    shoal_free(mean);
}

/* A group ended: its survivors report to the engine (their updates are in
 * the group's sum, weighted there); the others are out of the round. */
static void sa_report(void *ctx, shoal_session_id session, int survived)
{
    coordinator *co = ctx;
    const shoal_round_config *rc = &co->pop->cfg->round;
    const int64_t now = shoal_actor_now_ms();
    route *r = shoal_u64map_take(&co->routes, session);
    shoal_report rep = {.example_count = 1};
    shoal_report_ack ack;
    if (!survived || shoal_round_report(co->engine, now, session, &rep, &ack) != SHOAL_OK) {
        shoal_round_lost(co->engine, now, session);
        if (r) {
            atomic_fetch_add(&co->pop->metrics.dropped, 1);
            shoal_coordinator_ack(
                co, r->shard, r->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED,
                SHOAL__REASON__REASON_SECAGG_FAILED, rc->retry_min_ms, rc->retry_max_ms,
                "the secure-aggregation group did not include this device's update");
        }
    } else if (r) {
        /* The group's sum goes into the round's mean whole (its result
         * arrived before the round's aggregate): every survivor's update
         * is in it, even one the engine counts after its goal was met. */
        atomic_fetch_add(&co->pop->metrics.reported, 1);
        shoal_coordinator_ack(co, r->shard, r->conn, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED,
                              0, ack.retry_min_ms, ack.retry_max_ms, NULL);
    }
    shoal_free(r);
}

void shoal_coordinator_sa_message(coordinator *co, shoal_msg *msg)
{
    if (!co->sa || !msg->payload)
        return;
    if (msg->type == MSG_CO_SA_RESULT) {
        shoal_sa_rounds_result(co->sa, msg->payload, sa_report, co);
    } else if (msg->type == MSG_CO_SA_FRAMES) {
        sa_frames_msg *fm = msg->payload;
        for (size_t i = 0; i < fm->count; i++) {
            route *r = shoal_u64map_get(
                &co->routes, shoal_sa_rounds_session(co->sa, fm->group, fm->frames[i].index));
            if (r && shoal_net_send(co->srv->net, r->conn, fm->frames[i].bytes,
                                    fm->frames[i].len) == SHOAL_OK)
                fm->frames[i].bytes = NULL;
        }
    } else {
        sa_input_msg *in = msg->payload;
        /* Only the connection the session is routed to speaks for it. */
        route *r = shoal_u64map_get(&co->routes, in->session);
        if (r && r->conn == in->conn && shoal_sa_rounds_forward(co->sa, in) == SHOAL_OK)
            msg->payload = NULL;
    }
}

void shoal_sa_input_msg_free(void *p)
{
    sa_input_msg *m = p;
    if (!m)
        return;
    shoal_envelope_free(m->env);
    shoal_free(m);
}

void shoal_sa_frames_msg_free(void *p)
{
    sa_frames_msg *m = p;
    if (!m)
        return;
    for (size_t i = 0; i < m->count; i++)
        shoal_free(m->frames[i].bytes);
    shoal_free(m->frames);
    shoal_free(m);
}

void shoal_sa_result_msg_free(void *p)
{
    sa_result_msg *m = p;
    if (!m)
        return;
    shoal_free(m->sum);
    shoal_free(m->survivors);
    shoal_free(m);
}
