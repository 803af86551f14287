#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "shoal/actor.h"
#include "shoal/alloc.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (bounded) until *counter reaches want; returns the final value. */
static long wait_for(atomic_long *counter, long want, int timeout_ms)
{
    int64_t end = shoal_actor_now_ms() + timeout_ms;
    while (atomic_load(counter) < want && shoal_actor_now_ms() < end)
        sleep_ms(1);
    return atomic_load(counter);
}

/* ---- ordering and exclusivity --------------------------------------------- */

typedef struct seq_state {
    atomic_long received;
    atomic_int inside;
    atomic_int overlap;
    uint64_t next_expected[4]; /* per sender */
    atomic_int out_of_order;
} seq_state;

static void seq_handler(shoal_actor *self, void *state, shoal_msg *msg)
{
    seq_state *s = state;
    if (atomic_fetch_add(&s->inside, 1) != 0)
        atomic_store(&s->overlap, 1);
    /* Per-sender order must be kept: sender a sends b = 0, 1, 2, ... */
    if (msg->b != s->next_expected[msg->a])
        atomic_store(&s->out_of_order, 1);
    s->next_expected[msg->a] = msg->b + 1;
    atomic_fetch_sub(&s->inside, 1);
    atomic_fetch_add(&s->received, 1);
}

typedef struct sender_arg {
    shoal_actor *actor;
    uint64_t sender;
    uint64_t count;
} sender_arg;

static void *sender_main(void *arg)
{
    sender_arg *sa = arg;
    for (uint64_t i = 0; i < sa->count;) {
        shoal_msg m = {.type = 1, .a = sa->sender, .b = i};
        shoal_err err = shoal_actor_send(sa->actor, &m);
        if (err == SHOAL_OK)
            i++;
        else if (err == SHOAL_ELIMIT)
            sched_yield(); /* backpressure: retry */
        else
            return NULL;
    }
    return NULL;
}

Test(actor, messages_from_each_sender_arrive_in_order_and_never_concurrently)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(4, &sys), SHOAL_OK);
    cr_assert_eq(shoal_actor_system_workers(sys), 4u);
    seq_state st = {0};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "seq", seq_handler, &st, 64, &a), SHOAL_OK);
    cr_assert_str_eq(shoal_actor_name(a), "seq");

    pthread_t th[4];
    sender_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (sender_arg){a, (uint64_t)i, 20000};
        cr_assert_eq(pthread_create(&th[i], NULL, sender_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(wait_for(&st.received, 80000, 10000), 80000);
    cr_assert_eq(atomic_load(&st.overlap), 0, "handler ran on two threads at once");
    cr_assert_eq(atomic_load(&st.out_of_order), 0, "a sender's messages were reordered");
    shoal_actor_system_free(sys);
}

/* Many actors on few workers: everyone gets its mail. */
static void count_handler(shoal_actor *self, void *state, shoal_msg *msg)
{
    atomic_fetch_add((atomic_long *)state, (long)msg->a);
}

Test(actor, many_actors_share_the_workers)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(2, &sys), SHOAL_OK);
    enum { N = 100 };
    atomic_long sums[N];
    shoal_actor *actors[N];
    for (int i = 0; i < N; i++) {
        atomic_init(&sums[i], 0);
        cr_assert_eq(shoal_actor_spawn(sys, "c", count_handler, &sums[i], 1000, &actors[i]),
                     SHOAL_OK);
    }
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < N; i++) {
            shoal_msg m = {.a = (uint64_t)(i + 1)};
            cr_assert_eq(shoal_actor_send(actors[i], &m), SHOAL_OK);
        }
    for (int i = 0; i < N; i++)
        cr_assert_eq(wait_for(&sums[i], 50L * (i + 1), 10000), 50L * (i + 1), "actor %d", i);
    shoal_actor_system_free(sys);
}

/* ---- backpressure and ownership --------------------------------------------- */

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
    atomic_long entered;
    atomic_long handled;
} gate;

static void gated_handler(shoal_actor *self, void *state, shoal_msg *msg)
{
    gate *g = state;
    atomic_fetch_add(&g->entered, 1);
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    atomic_fetch_add(&g->handled, 1);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static atomic_long freed_payloads;
static void counting_free(void *p)
{
    atomic_fetch_add(&freed_payloads, 1);
    shoal_free(p);
}

Test(actor, full_mailbox_refuses_and_leaves_the_payload_with_the_sender)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "gated", gated_handler, &g, 3, &a), SHOAL_OK);
    atomic_store(&freed_payloads, 0);

    shoal_msg m = {.payload = shoal_malloc(8), .free_payload = counting_free};
    cr_assert_eq(shoal_actor_send(a, &m), SHOAL_OK);
    cr_assert_eq(wait_for(&g.entered, 1, 5000), 1); /* the worker holds it, blocked */
    for (int i = 0; i < 3; i++) {
        shoal_msg f = {.payload = shoal_malloc(8), .free_payload = counting_free};
        cr_assert_eq(shoal_actor_send(a, &f), SHOAL_OK);
    }
    cr_assert_eq(shoal_actor_pending(a), 3u);
    void *mine = shoal_malloc(8);
    shoal_msg over = {.payload = mine, .free_payload = counting_free};
    cr_assert_eq(shoal_actor_send(a, &over), SHOAL_ELIMIT);
    cr_assert_eq(atomic_load(&freed_payloads), 0, "a refused payload was freed");
    shoal_free(mine); /* still ours */

    gate_open(&g);
    cr_assert_eq(wait_for(&g.handled, 4, 5000), 4);
    cr_assert_eq(wait_for(&freed_payloads, 4, 5000), 4, "payloads are freed after handling");
    shoal_actor_system_free(sys);
}

static void *kept_payload;
static void keeping_handler(shoal_actor *self, void *state, shoal_msg *msg)
{
    kept_payload = msg->payload;
    msg->payload = NULL; /* take it */
    atomic_fetch_add((atomic_long *)state, 1);
}

Test(actor, handler_can_take_the_payload)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    atomic_long n = 0;
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "keep", keeping_handler, &n, 4, &a), SHOAL_OK);
    atomic_store(&freed_payloads, 0);
    char *p = shoal_malloc(6);
    memcpy(p, "hello", 6);
    shoal_msg m = {.payload = p, .free_payload = counting_free};
    cr_assert_eq(shoal_actor_send(a, &m), SHOAL_OK);
    cr_assert_eq(wait_for(&n, 1, 5000), 1);
    shoal_actor_system_free(sys);
    cr_assert_eq(atomic_load(&freed_payloads), 0);
    cr_assert_eq(kept_payload, p);
    cr_assert_str_eq(kept_payload, "hello");
    shoal_free(p);
}

Test(actor, freeing_the_system_frees_undelivered_payloads)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "gated", gated_handler, &g, 10, &a), SHOAL_OK);
    atomic_store(&freed_payloads, 0);
    for (int i = 0; i < 5; i++) {
        shoal_msg m = {.payload = shoal_malloc(8), .free_payload = counting_free};
        cr_assert_eq(shoal_actor_send(a, &m), SHOAL_OK);
    }
    shoal_msg t = {.payload = shoal_malloc(8), .free_payload = counting_free};
    cr_assert_eq(shoal_actor_send_after(a, 60000, &t, NULL), SHOAL_OK);
    cr_assert_eq(wait_for(&g.entered, 1, 5000), 1);
    gate_open(&g); /* let the running one finish so free can join */
    shoal_actor_system_free(sys);
    /* 5 sent + 1 timer: each is freed exactly once, handled or not. */
    cr_assert_eq(atomic_load(&freed_payloads), 6);
}

/* ---- timers ------------------------------------------------------------------ */

typedef struct timer_log {
    pthread_mutex_t lock;
    int64_t at[16];
    uint64_t order[16];
    atomic_long n;
} timer_log;

static void timer_handler(shoal_actor *self, void *state, shoal_msg *msg)
{
    timer_log *tl = state;
    pthread_mutex_lock(&tl->lock);
    long i = atomic_load(&tl->n);
    if (i < 16) {
        tl->at[i] = shoal_actor_now_ms();
        tl->order[i] = msg->a;
    }
    pthread_mutex_unlock(&tl->lock);
    atomic_fetch_add(&tl->n, 1);
}

Test(actor, timers_fire_after_their_delay_in_deadline_order)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(2, &sys), SHOAL_OK);
    timer_log tl = {.lock = PTHREAD_MUTEX_INITIALIZER};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "timers", timer_handler, &tl, 4, &a), SHOAL_OK);
    int64_t start = shoal_actor_now_ms();
    int delays[3] = {150, 50, 100};
    for (int i = 0; i < 3; i++) {
        shoal_msg m = {.a = (uint64_t)delays[i]};
        cr_assert_eq(shoal_actor_send_after(a, delays[i], &m, NULL), SHOAL_OK);
    }
    cr_assert_eq(wait_for(&tl.n, 3, 5000), 3);
    cr_assert_eq(tl.order[0], 50u);
    cr_assert_eq(tl.order[1], 100u);
    cr_assert_eq(tl.order[2], 150u);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(tl.at[i] - start, (int64_t)tl.order[i], "timer %d fired early", i);
    shoal_actor_system_free(sys);
}

Test(actor, cancelled_timer_never_fires_and_frees_its_payload)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    timer_log tl = {.lock = PTHREAD_MUTEX_INITIALIZER};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "timers", timer_handler, &tl, 4, &a), SHOAL_OK);
    atomic_store(&freed_payloads, 0);
    shoal_timer_id id1, id2;
    shoal_msg m1 = {.a = 1, .payload = shoal_malloc(4), .free_payload = counting_free};
    shoal_msg m2 = {.a = 2};
    cr_assert_eq(shoal_actor_send_after(a, 50, &m1, &id1), SHOAL_OK);
    cr_assert_eq(shoal_actor_send_after(a, 100, &m2, &id2), SHOAL_OK);
    cr_assert_neq(id1, id2);
    cr_assert_eq(shoal_actor_timer_cancel(sys, id1), 1);
    cr_assert_eq(atomic_load(&freed_payloads), 1);
    cr_assert_eq(shoal_actor_timer_cancel(sys, id1), 0, "a timer is cancelled once");
    cr_assert_eq(wait_for(&tl.n, 1, 5000), 1);
    sleep_ms(100);
    cr_assert_eq(atomic_load(&tl.n), 1);
    cr_assert_eq(tl.order[0], 2u);
    cr_assert_eq(shoal_actor_timer_cancel(sys, id2), 0, "a fired timer cannot be cancelled");
    shoal_actor_system_free(sys);
}

Test(actor, timers_bypass_the_mailbox_bound)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "gated", gated_handler, &g, 1, &a), SHOAL_OK);
    shoal_msg m = {0};
    cr_assert_eq(shoal_actor_send(a, &m), SHOAL_OK);
    cr_assert_eq(wait_for(&g.entered, 1, 5000), 1);
    cr_assert_eq(shoal_actor_send(a, &m), SHOAL_OK);
    cr_assert_eq(shoal_actor_send(a, &m), SHOAL_ELIMIT);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(shoal_actor_send_after(a, 0, &m, NULL), SHOAL_OK);
    int64_t end = shoal_actor_now_ms() + 5000;
    while (shoal_actor_pending(a) < 6 && shoal_actor_now_ms() < end)
        sleep_ms(1);
    cr_assert_eq(shoal_actor_pending(a), 6u, "timer messages were dropped by the bound");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shoal_actor_send_unbounded(a, &m), SHOAL_OK);
    cr_assert_eq(shoal_actor_pending(a), 9u, "unbounded sends were dropped by the bound");
    gate_open(&g);
    cr_assert_eq(wait_for(&g.handled, 10, 5000), 10);
    shoal_actor_system_free(sys);
}

Test(actor, bad_arguments_are_refused)
{
    shoal_actor_system *sys;
    cr_assert_eq(shoal_actor_system_new(1, &sys), SHOAL_OK);
    shoal_actor *a;
    cr_assert_eq(shoal_actor_spawn(sys, "x", NULL, NULL, 1, &a), SHOAL_EINVAL);
    cr_assert_eq(shoal_actor_spawn(sys, "x", count_handler, NULL, 0, &a), SHOAL_EINVAL);
    cr_assert_null(a);
    cr_assert_eq(shoal_actor_send(NULL, &(shoal_msg){0}), SHOAL_EINVAL);
    shoal_actor_system_free(sys);
    shoal_actor_system_free(NULL);
}
