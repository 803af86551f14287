/* The actor runtime: bounded mailboxes, a run queue served by a worker
 * pool, and one timer thread with a binary heap of deadlines. */
#include "shoal/actor.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/log.h"

/* Messages an actor runs per turn before yielding its worker, so one busy
 * actor cannot starve the rest. */
#define TURN_BATCH 32

struct shoal_actor {
    shoal_actor_system *sys;
    char *name;
    shoal_actor_handler handler;
    void *state;
    pthread_mutex_t lock;
    shoal_msg *ring; /* ring buffer, ring_cap slots; may grow past capacity for timers */
    size_t ring_cap, head, count;
    size_t capacity; /* bound for ordinary sends */
    int scheduled;   /* in the run queue or running */
    shoal_actor *next_ready;
    shoal_actor *next_all;
};

typedef struct timer_entry {
    int64_t due_ms;
    shoal_timer_id id;
    shoal_actor *actor;
    shoal_msg msg;
} timer_entry;

struct shoal_actor_system {
    pthread_mutex_t lock; /* run queue, actor list, stopping */
    pthread_cond_t work;
    shoal_actor *ready_head, *ready_tail;
    shoal_actor *all;
    int stopping;
    unsigned worker_count;
    pthread_t *workers;

    pthread_mutex_t timer_lock;
    pthread_cond_t timer_cond;
    timer_entry *heap;
    size_t heap_len, heap_cap;
    shoal_timer_id next_timer_id;
    int timer_stopping;
    int timer_started;
    pthread_t timer_thread;
};

int64_t shoal_actor_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msg_release(shoal_msg *m)
{
    if (m->payload) {
        if (m->free_payload)
            m->free_payload(m->payload);
        else
            shoal_free(m->payload);
        m->payload = NULL;
    }
}

/* ---- mailbox ---------------------------------------------------------------- */

/* Called with a->lock held. force: ignore the capacity bound (timers). */
static shoal_err mailbox_push(shoal_actor *a, const shoal_msg *msg, int force)
{
    if (!force && a->count >= a->capacity)
        return SHOAL_ELIMIT;
    if (a->count == a->ring_cap &&
        shoal_ring_grow(&a->ring, &a->ring_cap, &a->head, a->count, sizeof *a->ring,
                        a->ring_cap ? a->ring_cap * 2 : 16))
        return SHOAL_ENOMEM;
    a->ring[(a->head + a->count) % a->ring_cap] = *msg;
    a->count++;
    return SHOAL_OK;
}

static void ready_push_locked(shoal_actor_system *sys, shoal_actor *a)
{
    a->next_ready = NULL;
    if (sys->ready_tail)
        sys->ready_tail->next_ready = a;
    else
        sys->ready_head = a;
    sys->ready_tail = a;
    pthread_cond_signal(&sys->work);
}

static shoal_err deliver(shoal_actor *a, const shoal_msg *msg, int force)
{
    shoal_actor_system *sys = a->sys;
    pthread_mutex_lock(&sys->lock);
    int stopping = sys->stopping;
    pthread_mutex_unlock(&sys->lock);
    if (stopping)
        return SHOAL_ECLOSED;

    pthread_mutex_lock(&a->lock);
    shoal_err err = mailbox_push(a, msg, force);
    int enqueue = 0;
    if (err == SHOAL_OK && !a->scheduled) {
        a->scheduled = 1;
        enqueue = 1;
    }
    pthread_mutex_unlock(&a->lock);
    if (enqueue) {
        pthread_mutex_lock(&sys->lock);
        ready_push_locked(sys, a);
        pthread_mutex_unlock(&sys->lock);
    }
    return err;
}

shoal_err shoal_actor_send(shoal_actor *actor, const shoal_msg *msg)
{
    if (!actor || !msg)
        return SHOAL_EINVAL;
    return deliver(actor, msg, 0);
}

shoal_err shoal_actor_send_unbounded(shoal_actor *actor, const shoal_msg *msg)
{
    if (!actor || !msg)
        return SHOAL_EINVAL;
    return deliver(actor, msg, 1);
}

/* ---- workers ---------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    shoal_actor_system *sys = arg;
    for (;;) {
        pthread_mutex_lock(&sys->lock);
        while (!sys->stopping && !sys->ready_head)
            pthread_cond_wait(&sys->work, &sys->lock);
        if (sys->stopping) {
            pthread_mutex_unlock(&sys->lock);
            return NULL;
        }
        shoal_actor *a = sys->ready_head;
        sys->ready_head = a->next_ready;
        if (!sys->ready_head)
            sys->ready_tail = NULL;
        pthread_mutex_unlock(&sys->lock);

        for (int i = 0; i < TURN_BATCH; i++) {
            pthread_mutex_lock(&a->lock);
            if (a->count == 0) {
                pthread_mutex_unlock(&a->lock);
                break;
            }
            shoal_msg m = a->ring[a->head];
            a->head = (a->head + 1) % a->ring_cap;
            a->count--;
            pthread_mutex_unlock(&a->lock);
            a->handler(a, a->state, &m);
            msg_release(&m);
        }

        pthread_mutex_lock(&a->lock);
        int again = a->count > 0;
        if (!again)
            a->scheduled = 0;
        pthread_mutex_unlock(&a->lock);
        if (again) {
            pthread_mutex_lock(&sys->lock);
            ready_push_locked(sys, a);
            pthread_mutex_unlock(&sys->lock);
        }
    }
}

/* ---- timers ----------------------------------------------------------------- */

static void heap_swap(timer_entry *h, size_t i, size_t j)
{
    timer_entry t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static int heap_less(const timer_entry *h, size_t i, size_t j)
{
    /* Ties by id keep timers with equal deadlines in arming order. */
    return h[i].due_ms < h[j].due_ms || (h[i].due_ms == h[j].due_ms && h[i].id < h[j].id);
}

static void heap_up(timer_entry *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(h, i, p))
            break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(timer_entry *h, size_t len, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < len && heap_less(h, l, m))
            m = l;
        if (r < len && heap_less(h, r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

static void heap_remove(shoal_actor_system *sys, size_t i)
{
    sys->heap_len--;
    if (i == sys->heap_len)
        return;
    sys->heap[i] = sys->heap[sys->heap_len];
    heap_up(sys->heap, i);
    heap_down(sys->heap, sys->heap_len, i);
}

static void *timer_main(void *arg)
{
    shoal_actor_system *sys = arg;
    pthread_mutex_lock(&sys->timer_lock);
    while (!sys->timer_stopping) {
        if (sys->heap_len == 0) {
            pthread_cond_wait(&sys->timer_cond, &sys->timer_lock);
            continue;
        }
        int64_t now = shoal_actor_now_ms();
        timer_entry *top = &sys->heap[0];
        if (top->due_ms > now) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait = top->due_ms - now;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&sys->timer_cond, &sys->timer_lock, &ts);
            continue;
        }
        timer_entry t = *top;
        heap_remove(sys, 0);
        pthread_mutex_unlock(&sys->timer_lock);
        shoal_err err = deliver(t.actor, &t.msg, 1);
        pthread_mutex_lock(&sys->timer_lock);
        if (err == SHOAL_ENOMEM && !sys->timer_stopping && sys->heap_len < sys->heap_cap) {
            /* Out of memory growing the mailbox: try again shortly rather
             * than lose a deadline. */
            t.due_ms = shoal_actor_now_ms() + 10;
            sys->heap[sys->heap_len++] = t;
            heap_up(sys->heap, sys->heap_len - 1);
        } else if (err != SHOAL_OK) {
            msg_release(&t.msg);
        }
    }
    pthread_mutex_unlock(&sys->timer_lock);
    return NULL;
}

shoal_err shoal_actor_send_after(shoal_actor *actor, int64_t delay_ms, const shoal_msg *msg,
                                 shoal_timer_id *id)
{
    if (id)
        *id = 0;
    if (!actor || !msg)
        return SHOAL_EINVAL;
    shoal_actor_system *sys = actor->sys;
    if (delay_ms < 0)
        delay_ms = 0;
    pthread_mutex_lock(&sys->timer_lock);
    if (sys->timer_stopping) {
        pthread_mutex_unlock(&sys->timer_lock);
        return SHOAL_ECLOSED;
    }
    if (shoal_grow(&sys->heap, &sys->heap_cap, sys->heap_len, sizeof *sys->heap, 64)) {
        pthread_mutex_unlock(&sys->timer_lock);
        return SHOAL_ENOMEM;
    }
    timer_entry *t = &sys->heap[sys->heap_len++];
    t->due_ms = shoal_actor_now_ms() + delay_ms;
    t->id = ++sys->next_timer_id;
    t->actor = actor;
    t->msg = *msg;
    if (id)
        *id = t->id;
    heap_up(sys->heap, sys->heap_len - 1);
    pthread_cond_signal(&sys->timer_cond);
    pthread_mutex_unlock(&sys->timer_lock);
    return SHOAL_OK;
}

int shoal_actor_timer_cancel(shoal_actor_system *sys, shoal_timer_id id)
{
    if (!sys || id == 0)
        return 0;
    int found = 0;
    shoal_msg m = {0};
    pthread_mutex_lock(&sys->timer_lock);
    for (size_t i = 0; i < sys->heap_len; i++) {
        if (sys->heap[i].id == id) {
            m = sys->heap[i].msg;
            heap_remove(sys, i);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&sys->timer_lock);
    if (found)
        msg_release(&m);
    return found;
}

/* ---- system ----------------------------------------------------------------- */

shoal_err shoal_actor_system_new(unsigned workers, shoal_actor_system **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (unsigned)n : 1;
    }
    shoal_actor_system *sys = shoal_calloc(1, sizeof *sys);
    if (!sys)
        return SHOAL_ENOMEM;
    sys->workers = shoal_calloc(workers, sizeof *sys->workers);
    if (!sys->workers) {
        shoal_free(sys);
        return SHOAL_ENOMEM;
    }
    pthread_mutex_init(&sys->lock, NULL);
    pthread_cond_init(&sys->work, NULL);
    pthread_mutex_init(&sys->timer_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sys->timer_cond, &attr);
    pthread_condattr_destroy(&attr);

    if (pthread_create(&sys->timer_thread, NULL, timer_main, sys) != 0) {
        shoal_actor_system_free(sys);
        return SHOAL_EIO;
    }
    sys->timer_started = 1;
    for (unsigned i = 0; i < workers; i++) {
        if (pthread_create(&sys->workers[i], NULL, worker_main, sys) != 0) {
            shoal_actor_system_free(sys);
            return SHOAL_EIO;
        }
        sys->worker_count++;
    }
    *out = sys;
    return SHOAL_OK;
}

void shoal_actor_system_free(shoal_actor_system *sys)
{
    if (!sys)
        return;
    pthread_mutex_lock(&sys->timer_lock);
    sys->timer_stopping = 1;
    pthread_cond_broadcast(&sys->timer_cond);
    pthread_mutex_unlock(&sys->timer_lock);
    if (sys->timer_started)
        pthread_join(sys->timer_thread, NULL);

    pthread_mutex_lock(&sys->lock);
    sys->stopping = 1;
    pthread_cond_broadcast(&sys->work);
    pthread_mutex_unlock(&sys->lock);
    for (unsigned i = 0; i < sys->worker_count; i++)
        pthread_join(sys->workers[i], NULL);

    for (size_t i = 0; i < sys->heap_len; i++)
        msg_release(&sys->heap[i].msg);
    shoal_free(sys->heap);

    shoal_actor *a = sys->all;
    while (a) {
        shoal_actor *next = a->next_all;
        for (size_t i = 0; i < a->count; i++)
            msg_release(&a->ring[(a->head + i) % a->ring_cap]);
        shoal_free(a->ring);
        shoal_free(a->name);
        pthread_mutex_destroy(&a->lock);
        shoal_free(a);
        a = next;
    }
    pthread_cond_destroy(&sys->timer_cond);
    pthread_mutex_destroy(&sys->timer_lock);
    pthread_cond_destroy(&sys->work);
    pthread_mutex_destroy(&sys->lock);
    shoal_free(sys->workers);
    shoal_free(sys);
}

unsigned shoal_actor_system_workers(const shoal_actor_system *sys)
{
    return sys ? sys->worker_count : 0;
}

shoal_err shoal_actor_spawn(shoal_actor_system *sys, const char *name, shoal_actor_handler handler,
                            void *state, size_t capacity, shoal_actor **out)
{
    if (out)
        *out = NULL;
    if (!sys || !name || !handler || capacity == 0 || !out)
        return SHOAL_EINVAL;
    shoal_actor *a = shoal_calloc(1, sizeof *a);
    if (!a)
        return SHOAL_ENOMEM;
    a->name = shoal_strdup(name);
    if (!a->name) {
        shoal_free(a);
        return SHOAL_ENOMEM;
    }
    a->sys = sys;
    a->handler = handler;
    a->state = state;
    a->capacity = capacity;
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_lock(&sys->lock);
    if (sys->stopping) {
        pthread_mutex_unlock(&sys->lock);
        pthread_mutex_destroy(&a->lock);
        shoal_free(a->name);
        shoal_free(a);
        return SHOAL_ECLOSED;
    }
    a->next_all = sys->all;
    sys->all = a;
    pthread_mutex_unlock(&sys->lock);
    *out = a;
    return SHOAL_OK;
}

const char *shoal_actor_name(const shoal_actor *actor)
{
    return actor ? actor->name : "(null)";
}

shoal_actor_system *shoal_actor_system_of(const shoal_actor *actor)
{
    return actor ? actor->sys : NULL;
}

size_t shoal_actor_pending(shoal_actor *actor)
{
    if (!actor)
        return 0;
    pthread_mutex_lock(&actor->lock);
    size_t n = actor->count;
    pthread_mutex_unlock(&actor->lock);
    return n;
}
