/* Private: the device's local work for one session (work.c: the built-in
 * training and evaluation; trainer.c: the app's own trainer,
 * shoal/client_trainer.h). The work reads the client (its configuration,
 * the model held, the plan accepted) and returns what it did in a
 * shoal_devc_work_result: it sends nothing and changes no state of the
 * client. The client (client_upload.c) turns the result into messages. */
#ifndef SHOAL_DEVC_WORK_INT_H
#define SHOAL_DEVC_WORK_INT_H

#include "client_int.h"
#include "shoal/store.h"
#include "shoal/train.h"

/* SQLite page cache of the store handle a session reads examples
 * through, in KiB, and what SQLite holds besides (schema, statements,
 * lookaside), counted in the session's memory. */
#define SHOAL_DEVC_STORE_CACHE_KIB 256
#define SHOAL_DEVC_STORE_OVERHEAD  (256 * 1024)

/* How the work ended. */
typedef enum shoal_devc_work_end {
    SHOAL_DEVC_WORK_TRAINED,           /* delta holds the update to upload */
    SHOAL_DEVC_WORK_EVALUATED,         /* the metrics are to be reported */
    SHOAL_DEVC_WORK_INTERRUPTED,       /* stopped (reason, ei): nothing to upload */
    SHOAL_DEVC_WORK_INSUFFICIENT_DATA, /* selected < needed (ei) */
    SHOAL_DEVC_WORK_FAILED,            /* to report as Report{ERROR} (err, reason, ei) */
    SHOAL_DEVC_WORK_ABANDONED,         /* nothing to report: end the session (err, reason, ei) */
} shoal_devc_work_end;

typedef struct shoal_devc_work_result {
    shoal_devc_work_end end;
    shoal_err err;
    shoal_session_reason reason;
    shoal_errinfo ei; /* for a person: why it failed, stopped or fell short */
    float *delta;     /* TRAINED: the update, delta_count floats; the caller's */
    size_t delta_count;
    uint64_t example_count; /* examples the work used (or selected) */
    double loss;
    double accuracy;
    uint64_t selected, needed; /* INSUFFICIENT_DATA */
    uint64_t work_bytes;       /* the memory the work was computed to need */
    int64_t started_ms;        /* monotonic: when training or evaluation began; 0: not begun */
    int64_t last_poll_ms;      /* monotonic: the work's last eligibility poll */
} shoal_devc_work_result;

/* The stop check polled during the work: the eligibility policy
 * (rate-limited), the plan's time limit and the session's time budget. */
typedef struct shoal_devc_stop {
    const shoal_client *client;
    int64_t work_deadline_ms;    /* 0: none */
    int64_t session_deadline_ms; /* 0: none */
    int64_t last_poll_ms;
    shoal_session_reason reason; /* why it stopped; NONE while it runs */
    char why[128];               /* STOPPED_INELIGIBLE: which condition */
} shoal_devc_stop;

/* ctx is a shoal_devc_stop; non-zero means stop (stop->reason says why). */
int shoal_devc_should_stop(void *ctx);

/* Sets out->ei to "training stopped: ..." from stop's reason, and ends
 * the result INTERRUPTED. */
void shoal_devc_work_interrupted(const shoal_devc_stop *stop, shoal_devc_work_result *out);

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

/* The plan's limits.max_examples: the most examples the device may train
 * on and claim in its report (0: the plan sets no limit). */
uint64_t shoal_devc_plan_max_examples(const Shoal__Plan *plan);

/* Runs the plan's task on the selected examples and fills *out (zeroed
 * first). */
void shoal_devc_work_run(const shoal_client *c, shoal_devc_work_result *out);

/* Runs the app's train (train non-zero) or evaluate callback on the
 * selection (src, features floats per example) and fills *out. */
void shoal_devc_trainer_work(const shoal_client *c, shoal_devc_stop *stop,
                             const shoal_example_source *src, size_t features, uint64_t seed,
                             int train, shoal_devc_work_result *out);

#endif
