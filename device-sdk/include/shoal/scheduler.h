/* Shoal device SDK: several populations on one device, one session at a
 * time (docs/sdk.md, "Several populations").
 *
 * A scheduler holds one client per population and runs their sessions one
 * after another, never two at once: each call of shoal_scheduler_run_next
 * picks the population whose next allowed check-in is earliest and runs
 * one session for it. A population's next allowed check-in is the latest
 * of: the time its last session chose (the server's retry window, or the
 * fallback window), and, when its config has state_path, the persisted
 * retry window and contribution period of the device state database, so
 * windows survive a restart. Ties go to the population that ran least
 * recently (round robin).
 *
 *     shoal_scheduler_new(cfgs, 2, &port, &sched, &ei);
 *     for (;;) {
 *         shoal_scheduler_result r;
 *         shoal_err err = shoal_scheduler_run_next(sched, &r);
 *         // SHOAL_OK: r.session is the session of r.population;
 *         // SHOAL_EAGAIN: nothing due. Either way, wake at r.next_due_unix_ms.
 *     }
 *
 * A scheduler is used by one thread at a time. */
#ifndef SHOAL_SCHEDULER_H
#define SHOAL_SCHEDULER_H

#include "shoal/client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_scheduler shoal_scheduler;

typedef struct shoal_scheduler_result {
    int ran;                /* a session ran (SHOAL_OK); 0 for SHOAL_EAGAIN */
    size_t index;           /* which config it ran (when ran) */
    const char *population; /* its name; lives as long as the scheduler */
    shoal_session_result session;
    /* After the call: the wall time (port wall_ms) the next session is
     * due, and for which config. */
    int64_t next_due_unix_ms;
    size_t next_index;
} shoal_scheduler_result;

/* Creates a client for each of configs[0..count) (see shoal_client_new;
 * each config is copied), sharing port (borrowed: it must outlive the
 * scheduler). Populations must be distinct. Returns SHOAL_OK and *out, or
 * with *out NULL and ei naming the config: SHOAL_EINVAL (NULL arguments,
 * count 0, a bad config, a population twice), SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_scheduler_new(const shoal_client_config *configs,
                                                        size_t count, const shoal_port *port,
                                                        shoal_scheduler **out, shoal_errinfo *ei);

/* Frees the clients and the scheduler. NULL is a no-op. */
SHOAL_API void shoal_scheduler_free(shoal_scheduler *sched);

/* When the earliest population is due (its time <= the port's wall
 * clock), runs one session for it with shoal_client_run (blocking) and
 * returns SHOAL_OK with out->ran set; otherwise runs nothing and returns
 * SHOAL_EAGAIN. Both fill out->next_due_unix_ms and out->next_index.
 * Returns SHOAL_EINVAL (NULL arguments), SHOAL_ESTATE (called while a
 * session of this scheduler runs, e.g. from a trainer callback: a second
 * session never starts), or shoal_client_run's error. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_scheduler_run_next(shoal_scheduler *sched,
                                                             shoal_scheduler_result *out);

/* The wall time the next session is due and for which config, without
 * running anything. Returns SHOAL_OK, SHOAL_EINVAL (NULL arguments). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_scheduler_next_due(shoal_scheduler *sched,
                                                             int64_t *unix_ms, size_t *index);

/* The client of configs[index] (e.g. for shoal_client_log_read), or NULL
 * when index is out of range. Borrowed: lives as long as the scheduler. */
SHOAL_API shoal_client *shoal_scheduler_client(shoal_scheduler *sched, size_t index);

#ifdef __cplusplus
}
#endif

#endif
