/* Shoal: the server's actor runtime.
 *
 * An actor is private state plus a handler plus a bounded mailbox. A pool of
 * worker threads runs actors that have mail; one actor never runs on two
 * threads at once, so its handler needs no locks for its own state
 * (docs/architecture.md). Messages are small structs carrying a type, two integers and an owned
 * payload. Sending hands the payload over only when it succeeds:
 *
 *   SHOAL_OK      the message is in the mailbox; the runtime owns the payload
 *                 and frees it (with msg->free_payload, default shoal_free)
 *                 after the handler returns, unless the handler took it by
 *                 setting msg->payload to NULL;
 *   SHOAL_ELIMIT  the mailbox is full: backpressure, the caller still owns
 *                 the payload and decides (drop, close the connection, retry);
 *   SHOAL_ECLOSED the system is stopping; the caller still owns it.
 *
 * Timers deliver a message to an actor after a delay; they bypass the
 * mailbox bound (a deadline must never be lost to backpressure) and can be
 * cancelled. Actors live until the system is freed.
 *
 * Thread safety: shoal_actor_send, shoal_actor_send_after and
 * shoal_actor_timer_cancel may be called from any thread, including
 * handlers; everything else from the owning (main) thread. */
#ifndef SHOAL_ACTOR_H
#define SHOAL_ACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

typedef struct shoal_actor_system shoal_actor_system;
typedef struct shoal_actor shoal_actor;

typedef struct shoal_msg {
    int type;                            /* the receiver's message kind */
    uint64_t a, b;                       /* small arguments (connection id, session id, ...) */
    void *payload;                       /* owned; NULL for none */
    size_t len;                          /* payload bytes, if meaningful */
    void (*free_payload)(void *payload); /* NULL: shoal_free */
} shoal_msg;

/* Runs one message. `msg` is valid during the call; set msg->payload to
 * NULL to keep the payload. `state` is the pointer given to spawn. */
typedef void (*shoal_actor_handler)(shoal_actor *self, void *state, shoal_msg *msg);

/* A system with `workers` threads (0: one per online core). The threads
 * start at once. SHOAL_ENOMEM, SHOAL_EIO (thread creation failed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_actor_system_new(unsigned workers,
                                                           shoal_actor_system **out);

/* Stops accepting mail, lets every worker finish the message it is running,
 * joins the threads, cancels timers and frees every actor and every
 * undelivered payload. `state` pointers are not freed (they belong to the
 * spawner). NULL is a no-op. */
SHOAL_API void shoal_actor_system_free(shoal_actor_system *sys);

/* Number of worker threads. */
SHOAL_API unsigned shoal_actor_system_workers(const shoal_actor_system *sys);

/* A new actor named `name` (copied; for logs) with a mailbox of
 * `capacity` (>= 1) messages. SHOAL_EINVAL, SHOAL_ENOMEM, SHOAL_ECLOSED. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_actor_spawn(shoal_actor_system *sys, const char *name,
                                                      shoal_actor_handler handler, void *state,
                                                      size_t capacity, shoal_actor **out);

/* Posts a copy of *msg (see the header comment for ownership). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_actor_send(shoal_actor *actor, const shoal_msg *msg);

/* The same, ignoring the mailbox bound: for replies and internal messages
 * that must not be lost to backpressure (a device waiting for its answer,
 * an update already accepted into a round). Messages from one sender
 * arrive in the order sent, whichever of the two calls sent them.
 * SHOAL_ECLOSED or SHOAL_ENOMEM leave the payload with the caller. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_actor_send_unbounded(shoal_actor *actor,
                                                               const shoal_msg *msg);

typedef uint64_t shoal_timer_id; /* 0 is never a timer */

/* Delivers *msg to `actor` after `delay_ms` (<= 0: as soon as possible),
 * regardless of the mailbox bound. Takes the payload on SHOAL_OK; *id
 * (may be NULL) names the timer for shoal_actor_timer_cancel. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_actor_send_after(shoal_actor *actor, int64_t delay_ms,
                                                           const shoal_msg *msg,
                                                           shoal_timer_id *id);

/* Cancels a pending timer and frees its payload. Returns 1 if it was
 * cancelled, 0 if it already fired (or never existed). */
SHOAL_API int shoal_actor_timer_cancel(shoal_actor_system *sys, shoal_timer_id id);

/* The actor's name, its system, and the messages waiting in its mailbox. */
SHOAL_API const char *shoal_actor_name(const shoal_actor *actor);
SHOAL_API shoal_actor_system *shoal_actor_system_of(const shoal_actor *actor);
SHOAL_API size_t shoal_actor_pending(shoal_actor *actor);

/* Milliseconds on the monotonic clock the timers use. */
SHOAL_API int64_t shoal_actor_now_ms(void);

#endif
