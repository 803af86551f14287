/* Private: what work.c (the built-in training) and trainer.c (the app's
 * own trainer, shoal/client_trainer.h) share. */
#ifndef SHOAL_CLIENT_TRAINER_INT_H
#define SHOAL_CLIENT_TRAINER_INT_H

#include "client_int.h"
#include "shoal/store.h"
#include "shoal/train.h"

/* SQLite page cache of the store handle a session reads examples
 * through, in KiB, and what SQLite holds besides (schema, statements,
 * lookaside), counted in the session's memory. */
#define CLIENT_STORE_CACHE_KIB 256
#define CLIENT_STORE_OVERHEAD  (256 * 1024)

/* The plan's examples in the store, read by position (a snapshot holds
 * the selection still for the session). */
typedef struct client_selection {
    shoal_store *st;
    shoal_store_iter *it;
    size_t count; /* examples selected */
    size_t features;
    uint32_t classes;
    const char *collection;
    shoal_err err; /* the last read's failure, described in ei */
    shoal_errinfo ei;
} client_selection;

shoal_err client_selection_read(void *ctx, const uint32_t *ids, size_t n, float *x, int32_t *y);
shoal_example_source client_selection_source(client_selection *sel);
void client_selection_close(client_selection *sel);

/* The stop check polled during the work: the eligibility policy
 * (rate-limited), the plan's time limit and the session's time budget.
 * ctx is the client; non-zero means stop, and the stopped_* flags say
 * why. */
int client_should_stop(void *ctx);

/* Sends Report{ERROR}; the session ends ERROR (err, ei) after the ack. */
void client_report_error(shoal_client *c, shoal_err err, const shoal_errinfo *ei);

/* Sends Report{INTERRUPTED} naming why the work stopped; nothing is
 * uploaded. */
void client_report_interrupted(shoal_client *c, uint64_t example_count);

/* Queues delta (count floats, taken) for upload and moves to ST_UPLOAD;
 * on failure reports the error itself and frees delta. */
void client_queue_update(shoal_client *c, float *delta, size_t count, uint64_t example_count);

/* Runs the app's train (train non-zero) or evaluate callback on the
 * selection (src, features floats per example), and reports. */
void client_trainer_work(shoal_client *c, const shoal_example_source *src, size_t features,
                         uint64_t seed, int train);

#endif
