/* Private: what work.c (the built-in training) and trainer.c (the app's
 * own trainer, shoal/client_trainer.h) share. */
#ifndef SHOAL_CLIENT_TRAINER_INT_H
#define SHOAL_CLIENT_TRAINER_INT_H

#include "client_int.h"
#include "shoal/dataset.h"

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

/* Zeroes and frees a gathered dataset; NULL is a no-op. */
void client_wipe_dataset(shoal_dataset *ds);

/* Runs the app's train (train non-zero) or evaluate callback on the
 * gathered examples (ds, taken), and reports. */
void client_trainer_work(shoal_client *c, shoal_dataset *ds, uint64_t seed, int train);

#endif
