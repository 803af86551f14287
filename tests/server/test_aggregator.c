/* Aggregators: what they answer a coordinator, driven message by message.
 * Folds run on the test's thread (shoal_aggregator_handle called
 * directly); the answer goes through the actor system to a recording
 * stand-in for the population's coordinator. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "server_int.h"
#include "shoal/alloc.h"
#include "shoal/encoding.h"

#define PARAMS 4

static shoal_actor_system *sys;
static shoal_server srv;
static population pops[2];
static aggregator *agg;

/* The coordinator's stand-in keeps the last answer. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int answers;
static int answer_type;
static uint64_t answer_round;
static partial_msg *answer;

static void record(shoal_actor *self, void *state, shoal_msg *msg)
{
    pthread_mutex_lock(&lock);
    shoal_partial_msg_free(answer);
    answer = msg->type == MSG_CO_PARTIAL ? msg->payload : NULL;
    if (answer)
        msg->payload = NULL;
    answer_type = msg->type;
    answer_round = msg->a;
    answers++;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

static void setup(void)
{
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    srv.pops = pops;
    srv.pop_count = 2;
    for (size_t i = 0; i < 2; i++) {
        pops[i].index = i;
        pops[i].param_count = PARAMS;
        cr_assert_eq(shoal_actor_spawn(sys, "coordinator", record, NULL, 16, &pops[i].coord_actor),
                     SHOAL_OK);
    }
    cr_assert_eq(shoal_aggregator_new(&srv, 0, 2, &agg), SHOAL_OK);
    answers = 0;
    answer = NULL;
}

static void teardown(void)
{
    shoal_actor_system_free(sys);
    shoal_aggregator_free(agg);
    shoal_partial_msg_free(answer);
    answer = NULL;
}

TestSuite(server_aggregator, .init = setup, .fini = teardown);

/* Folds one update; with `no_memory` every allocation the aggregator
 * tries fails. */
static void fold_with(uint32_t pop, uint64_t round, float weight, const float delta[PARAMS],
                      int no_memory)
{
    fold_msg *f = shoal_calloc(1, sizeof *f);
    cr_assert_not_null(f);
    *f = (fold_msg){
        .population = pop, .round = round, .weight = weight, .scale = 1.0f, .param_count = PARAMS};
    f->update = shoal_malloc(PARAMS * 4);
    cr_assert_not_null(f->update);
    cr_assert_eq(shoal_tensor_encode_f32le(delta, PARAMS, f->update, PARAMS * 4, NULL), SHOAL_OK);
    shoal_msg m = {.type = MSG_AGG_FOLD, .payload = f};
    if (no_memory)
        shoal_failalloc_install(0);
    shoal_aggregator_handle(NULL, agg, &m);
    if (no_memory)
        shoal_failalloc_uninstall();
    shoal_fold_msg_free(f);
}

static void fold(uint32_t pop, uint64_t round, float weight, const float delta[PARAMS])
{
    fold_with(pop, round, weight, delta, 0);
}

/* Asks for population pop's share of `round` and waits for the answer. */
static partial_msg *collect(uint32_t pop, uint64_t round)
{
    pthread_mutex_lock(&lock);
    int before = answers;
    pthread_mutex_unlock(&lock);
    shoal_msg m = {.type = MSG_AGG_COLLECT, .a = round, .b = pop};
    shoal_aggregator_handle(NULL, agg, &m);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&lock);
    while (answers == before)
        cr_assert_eq(pthread_cond_timedwait(&cond, &lock, &until), 0, "no answer");
    cr_assert_eq(answer_type, MSG_CO_PARTIAL);
    cr_assert_eq(answer_round, round);
    partial_msg *p = answer;
    answer = NULL;
    pthread_mutex_unlock(&lock);
    cr_assert_not_null(p);
    cr_assert_eq(p->round, round);
    return p;
}

static const float d1[PARAMS] = {1.0f, -2.0f, 0.5f, 0.0f};
static const float d2[PARAMS] = {0.25f, 4.0f, -1.0f, 8.0f};

Test(server_aggregator, answers_with_its_own_copy_of_the_weighted_sum)
{
    fold(0, 1, 2.0f, d1);
    fold(0, 1, 3.0f, d2);
    partial_msg *p = collect(0, 1);
    cr_assert_eq(p->param_count, (size_t)PARAMS);
    cr_assert_eq(p->folded, 2u);
    cr_assert_eq(p->failed, 0u);
    cr_assert_not_null(p->sum);
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(p->sum[i], 2.0f * d1[i] + 3.0f * d2[i], 1e-6, "param %d", i);
    shoal_partial_msg_free(p);

    /* Collected once: asked again, it has nothing of that round. */
    p = collect(0, 1);
    cr_assert_null(p->sum);
    cr_assert_eq(p->param_count, 0u);
    cr_assert_eq(p->folded, 0u);
    shoal_partial_msg_free(p);
}

Test(server_aggregator, keeps_rounds_and_populations_apart)
{
    fold(0, 1, 1.0f, d1);
    fold(0, 2, 1.0f, d2);
    fold(1, 1, 10.0f, d2);
    partial_msg *p = collect(0, 1);
    cr_assert_eq(p->folded, 1u);
    cr_assert_arr_eq(p->sum, d1, sizeof d1);
    shoal_partial_msg_free(p);
    p = collect(1, 1);
    cr_assert_eq(p->folded, 1u);
    for (int i = 0; i < PARAMS; i++)
        cr_assert_float_eq(p->sum[i], 10.0f * d2[i], 1e-6);
    shoal_partial_msg_free(p);
    p = collect(0, 2);
    cr_assert_eq(p->folded, 1u);
    cr_assert_arr_eq(p->sum, d2, sizeof d2);
    shoal_partial_msg_free(p);
}

Test(server_aggregator, an_update_that_finds_no_memory_is_counted_in_the_answer)
{
    /* The first fold of a round allocates the sum: let that fail. */
    fold_with(0, 1, 1.0f, d1, 1);
    fold(0, 1, 1.0f, d2);
    partial_msg *p = collect(0, 1);
    cr_assert_eq(p->failed, 1u, "the lost update is reported, not dropped silently");
    cr_assert_eq(p->folded, 1u);
    cr_assert_arr_eq(p->sum, d2, sizeof d2);
    shoal_partial_msg_free(p);
}

Test(server_aggregator, an_update_of_the_wrong_size_is_counted_not_folded)
{
    fold(0, 1, 1.0f, d1);
    fold_msg f = {
        .population = 0, .round = 1, .weight = 1.0f, .scale = 1.0f, .param_count = PARAMS + 1};
    f.update = shoal_calloc(PARAMS + 1, 4);
    shoal_msg m = {.type = MSG_AGG_FOLD, .payload = &f};
    shoal_aggregator_handle(NULL, agg, &m);
    shoal_free(f.update);
    partial_msg *p = collect(0, 1);
    cr_assert_eq(p->failed, 1u);
    cr_assert_eq(p->folded, 1u);
    cr_assert_arr_eq(p->sum, d1, sizeof d1);
    shoal_partial_msg_free(p);
}
