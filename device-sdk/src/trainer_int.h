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
#define SHOAL_DEVC_STORE_CACHE_KIB 256
#define SHOAL_DEVC_STORE_OVERHEAD  (256 * 1024)

/* The plan's examples in the store, read by position (a snapshot holds
 * the selection still for the session). */
typedef struct shoal_devc_selection {
    shoal_store *st;
    shoal_store_iter *it;
    size_t count; /* examples selected */
    size_t features;
    uint32_t classes;
    const char *collection;
    shoal_err err; /* the last read's failure, described in ei */
    shoal_errinfo ei;
} shoal_devc_selection;

shoal_err shoal_devc_selection_read(void *ctx, const uint32_t *ids, size_t n, float *x, int32_t *y);
shoal_example_source shoal_devc_selection_source(shoal_devc_selection *sel);
void shoal_devc_selection_close(shoal_devc_selection *sel);

/* The stop check polled during the work: the eligibility policy
 * (rate-limited), the plan's time limit and the session's time budget.
 * ctx is the client; non-zero means stop, and the stopped_* flags say
 * why. */
int shoal_devc_should_stop(void *ctx);

/* Sends Report{ERROR}; the session ends ERROR (err, ei) after the ack. */
void shoal_devc_report_error(shoal_client *c, shoal_err err, const shoal_errinfo *ei);

/* Sends Report{INTERRUPTED} naming why the work stopped; nothing is
 * uploaded. */
void shoal_devc_report_interrupted(shoal_client *c, uint64_t example_count);

/* Queues delta (count floats, taken) for upload and moves to ST_UPLOAD;
 * on failure reports the error itself and frees delta. */
void shoal_devc_queue_update(shoal_client *c, float *delta, size_t count, uint64_t example_count);

/* Runs the app's train (train non-zero) or evaluate callback on the
 * selection (src, features floats per example), and reports. */
void shoal_devc_trainer_work(shoal_client *c, const shoal_example_source *src, size_t features,
                             uint64_t seed, int train);

#endif
