/* Admission of uploads (upload_gate.h). */
#include "upload_gate.h"

#include <string.h>

#include "shoal/alloc.h"

shoal_err shoal_upload_gate_init(upload_gate *g, uint32_t max)
{
    if (!g)
        return SHOAL_EINVAL;
    memset(g, 0, sizeof *g);
    g->max = max;
    if (pthread_mutex_init(&g->lock, NULL) != 0)
        return SHOAL_ENOMEM;
    return SHOAL_OK;
}

void shoal_upload_gate_fini(upload_gate *g)
{
    if (!g)
        return;
    shoal_free(g->ring);
    pthread_mutex_destroy(&g->lock);
    memset(g, 0, sizeof *g);
}

/* Appends id to the ring (doubling it when full); 0 on ENOMEM. */
static int push(upload_gate *g, shoal_conn_id id)
{
    if (g->used == g->cap && shoal_ring_grow(&g->ring, &g->cap, &g->head, g->used, sizeof *g->ring,
                                             g->cap ? g->cap * 2 : 64) != SHOAL_OK)
        return 0;
    g->ring[(g->head + g->used) % g->cap] = id;
    g->used++;
    g->waiting++;
    return 1;
}

/* The first waiting id, taken off the ring; 0 when none waits. */
static shoal_conn_id pop(upload_gate *g)
{
    while (g->used) {
        shoal_conn_id id = g->ring[g->head];
        g->head = (g->head + 1) % g->cap;
        g->used--;
        if (id) {
            g->waiting--;
            return id;
        }
    }
    return 0;
}

int shoal_upload_gate_enter(upload_gate *g, shoal_conn_id id)
{
    int state = GATE_ADMITTED;
    pthread_mutex_lock(&g->lock);
    if (g->max == 0 || g->active < g->max || !push(g, id)) {
        g->active++;
    } else {
        state = GATE_WAITING;
        atomic_fetch_add(&g->waited_total, 1);
    }
    pthread_mutex_unlock(&g->lock);
    return state;
}

shoal_conn_id shoal_upload_gate_leave(upload_gate *g, shoal_conn_id id, int state, int *was_queued)
{
    shoal_conn_id next = 0;
    if (was_queued)
        *was_queued = 0;
    if (state == GATE_NONE)
        return 0;
    pthread_mutex_lock(&g->lock);
    if (state == GATE_WAITING) {
        /* Still queued: leave the queue, holding no place. Else it was
         * admitted by a pop and holds one, as if admitted at once. */
        for (size_t i = 0; i < g->used; i++) {
            shoal_conn_id *at = &g->ring[(g->head + i) % g->cap];
            if (*at == id) {
                *at = 0;
                g->waiting--;
                if (was_queued)
                    *was_queued = 1;
                pthread_mutex_unlock(&g->lock);
                return 0;
            }
        }
    }
    /* Its place passes to the first waiting connection, if any. */
    next = pop(g);
    if (!next)
        g->active--;
    pthread_mutex_unlock(&g->lock);
    return next;
}

void shoal_upload_gate_counts(upload_gate *g, uint32_t *active, size_t *waiting)
{
    pthread_mutex_lock(&g->lock);
    *active = g->active;
    *waiting = g->waiting;
    pthread_mutex_unlock(&g->lock);
}
