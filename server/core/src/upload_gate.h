/* Admission of uploads (limits.max_concurrent_uploads). Receiving an update
 * holds its whole reassembly buffer until the Report: a thousand devices
 * uploading 4 MB at once would hold 4 GB. The gate lets at most `max`
 * uploads run; a connection that starts one beyond it waits, its input
 * paused (shoal_net_pause_input: TCP holds the device back), and is
 * admitted when an upload ends, in the order they started.
 *
 * Thread safety: every call takes the gate's mutex; selectors on any worker
 * call it. The gate only counts and queues connection ids: pausing and
 * resuming input is the caller's (so a gate could serve another process's
 * selectors through messages). */
#ifndef SHOAL_UPLOAD_GATE_H
#define SHOAL_UPLOAD_GATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/net.h"

typedef struct upload_gate {
    pthread_mutex_t lock;
    uint32_t max;        /* 0: no limit */
    uint32_t active;     /* admitted uploads not ended */
    shoal_conn_id *ring; /* waiting connections in order; 0: one that left the queue */
    size_t head, used, cap;
    size_t waiting; /* non-zero entries of ring */
    atomic_uint_least64_t waited_total;
} upload_gate;

/* A connection's place at the gate. */
enum { GATE_NONE = 0, GATE_ADMITTED, GATE_WAITING };

/* SHOAL_EINVAL for NULL; SHOAL_ENOMEM. */
SHOAL_NODISCARD shoal_err shoal_upload_gate_init(upload_gate *g, uint32_t max);
void shoal_upload_gate_fini(upload_gate *g);

/* Connection `id` starts an upload: GATE_ADMITTED, or GATE_WAITING (it is
 * queued; pause its input). When the queue cannot grow (out of memory) the
 * upload is admitted: memory is then short anyway, and stalling a device
 * forever would be worse. */
int shoal_upload_gate_enter(upload_gate *g, shoal_conn_id id);

/* Connection `id`'s upload ended (completed, refused, or the connection
 * went away), `state` being what enter returned. Returns the connection
 * that takes its place (resume its input), or 0. A connection that leaves
 * while still queued takes no place and passes none on; *was_queued
 * (may be NULL) then says so, for the caller to resume its own input if
 * the connection lives on. */
shoal_conn_id shoal_upload_gate_leave(upload_gate *g, shoal_conn_id id, int state, int *was_queued);

/* Uploads admitted now and connections waiting, for /metrics. */
void shoal_upload_gate_counts(upload_gate *g, uint32_t *active, size_t *waiting);

#endif
