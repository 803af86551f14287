/* The session's local work against the real shoal-server in process:
 * examples are read from the store as training draws them (the session's
 * heap does not grow with the selection), under a snapshot (what the app
 * logs or deletes meanwhile changes nothing), within the memory budget,
 * and the app's evaluate callback reports metrics only. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sdk_util.h"
#include "shoal/alloc.h"
#include "shoal/rng.h"
#include "shoal/store.h"

static void start(tserver *t, const char *round_fields)
{
    char *pop = tpop("p", round_fields, NULL);
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

static shoal_client *new_client(sdk_dev *d)
{
    shoal_client *c = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &c, &ei), SHOAL_OK, "%s", ei.msg);
    return c;
}

/* Runs sessions until one is not REJECTED (the next round may open a
 * moment after the last commit). */
static void run_until_taken(shoal_client *c, shoal_session_result *r)
{
    for (int tries = 0; tries < 50; tries++) {
        cr_assert_eq(shoal_client_run(c, r), SHOAL_OK);
        if (r->outcome != SHOAL_SESSION_REJECTED)
            return;
        sdk_sleep_ms(100);
    }
}

/* ---- the app's evaluate callback ------------------------------------------ */

typedef struct eval_seen {
    int calls;
    shoal_plan_task task;
    uint64_t examples;
    double label_sum;
    size_t count;
    float first_weight;
} eval_seen;

static shoal_err count_evaluator(void *ctx, const float *weights, size_t count,
                                 const shoal_plan_info *plan, shoal_example_iter *it,
                                 shoal_train_metrics *metrics_out)
{
    eval_seen *s = ctx;
    s->calls++;
    s->task = plan->task;
    s->count = count;
    s->first_weight = weights[0];
    shoal_example_batch b;
    shoal_err err;
    while ((err = shoal_example_iter_next(it, 7, &b)) == SHOAL_ROW) {
        s->examples += b.count;
        for (size_t i = 0; i < b.count; i++)
            s->label_sum += b.y[i];
    }
    if (err != SHOAL_DONE)
        return err;
    *metrics_out = (shoal_train_metrics){
        .example_count = s->examples, .loss = 0.25, .accuracy = s->label_sum / (double)s->examples};
    return SHOAL_OK;
}

Test(device_sdk_work, the_apps_evaluate_callback_reports_its_metrics_and_no_update)
{
    tserver t;
    start(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false, "
              "\"eval_every\": 1, \"eval_goal_count\": 1");
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    eval_seen s = {0};
    d.cfg.trainer = (shoal_client_trainer){.evaluate = count_evaluator, .ctx = &s};
    sdk_sent sent = {0};
    sdk_observer obs = {.sent = &sent};
    d.cfg.observe_send = sdk_observe;
    d.cfg.observe_ctx = &obs;
    shoal_client *c = new_client(&d);
    shoal_session_result r;
    /* Training plans use the built-in model (no train callback). */
    cr_assert_eq(shoal_client_run(c, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s", r.errinfo.msg);
    cr_assert_eq(s.calls, 0, "a training plan called the evaluate callback");
    unsigned chunks_after_training = sent.report_chunks;
    cr_assert_gt(chunks_after_training, 0u);

    run_until_taken(c, &r);
    cr_assert_eq(r.outcome, SHOAL_SESSION_EVALUATED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_NONE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.task, SHOAL_PLAN_EVALUATE);
    cr_assert_eq(s.count, (size_t)SDK_PARAMS);
    size_t mn = 0;
    cr_assert_eq(s.first_weight, shoal_client_model(c, &mn)[0], "the served model was passed");
    /* Every selected example, once; the metrics are the callback's. */
    static float x[SDK_EXAMPLES][4];
    static int32_t y[SDK_EXAMPLES];
    sdk_examples(x, y);
    double labels = 0;
    for (int i = 0; i < SDK_EXAMPLES; i++)
        labels += y[i];
    cr_assert_eq(s.examples, (uint64_t)SDK_EXAMPLES);
    cr_assert_float_eq(s.label_sum, labels, 1e-9);
    cr_assert_eq(r.example_count, (uint64_t)SDK_EXAMPLES);
    cr_assert_float_eq(r.loss, 0.25, 1e-12);
    cr_assert_float_eq(r.accuracy, labels / SDK_EXAMPLES, 1e-12);
    cr_assert_eq(sent.report_outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_COMPLETED);
    cr_assert_eq(sent.report_chunks, chunks_after_training, "an evaluation sent update chunks");
    shoal_client_free(c);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- the snapshot ----------------------------------------------------------- */

/* Reads two epochs; after the first batch it empties the store through
 * another handle and logs new examples there, as an app might while a
 * session trains. */
typedef struct churn {
    const char *store;
    uint64_t examples[2];
    double feature_sum[2];
    int churned;
} churn;

static void churn_store(const char *path)
{
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_criteria all = {.collection = "p"};
    uint64_t deleted = 0;
    cr_assert_eq(shoal_store_delete(st, &all, &deleted, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(deleted, (uint64_t)SDK_EXAMPLES);
    float x[4] = {100, 100, 100, 100};
    shoal_example ex = {.features = x, .feature_count = 4, .label = 1, .timestamp_ms = 1};
    for (int i = 0; i < 10; i++)
        cr_assert_eq(shoal_store_add(st, "p", &ex, 2, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
}

static shoal_err churn_trainer(void *ctx, const float *weights, size_t count,
                               const shoal_plan_info *plan, shoal_example_iter *it,
                               float *delta_out, shoal_train_metrics *metrics_out)
{
    churn *s = ctx;
    (void)weights;
    for (int epoch = 0; epoch < 2; epoch++) {
        shoal_err err;
        if (epoch && (err = shoal_example_iter_rewind(it)))
            return err;
        shoal_example_batch b;
        while ((err = shoal_example_iter_next(it, 16, &b)) == SHOAL_ROW) {
            s->examples[epoch] += b.count;
            for (size_t i = 0; i < b.count * 4; i++)
                s->feature_sum[epoch] += b.x[i];
            if (!s->churned) {
                churn_store(s->store);
                s->churned = 1;
            }
        }
        if (err != SHOAL_DONE)
            return err;
    }
    memset(delta_out, 0, count * sizeof *delta_out);
    metrics_out->example_count = plan->example_count;
    return SHOAL_OK;
}

Test(device_sdk_work, examples_deleted_and_logged_during_training_leave_the_selection_whole)
{
    tserver t;
    start(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    churn s = {.store = d.store};
    d.cfg.trainer = (shoal_client_trainer){.train = churn_trainer, .ctx = &s};
    shoal_client *c = new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(c, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert(s.churned);
    static float x[SDK_EXAMPLES][4];
    static int32_t y[SDK_EXAMPLES];
    sdk_examples(x, y);
    double want = 0;
    for (int i = 0; i < SDK_EXAMPLES; i++)
        for (int j = 0; j < 4; j++)
            want += x[i][j];
    for (int e = 0; e < 2; e++) {
        cr_assert_eq(s.examples[e], (uint64_t)SDK_EXAMPLES, "epoch %d", e);
        cr_assert_float_eq(s.feature_sum[e], want, 1e-3, "epoch %d read other examples", e);
    }
    /* After the session the store is what the app left. */
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(d.store, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_criteria all = {.collection = "p"};
    uint64_t n = 0;
    cr_assert_eq(shoal_store_count(st, &all, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 10u);
    shoal_store_close(st);
    shoal_client_free(c);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- the memory budget ------------------------------------------------------ */

Test(device_sdk_work, a_session_over_its_memory_budget_trains_nothing_and_says_why)
{
    tserver t;
    start(&t, "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false");
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    sdk_sent sent = {0};
    sdk_observer obs = {.sent = &sent};
    d.cfg.observe_send = sdk_observe;
    d.cfg.observe_ctx = &obs;
    d.cfg.budget_session_bytes = 4096;
    shoal_client *c = new_client(&d);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(c, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_MEMORY_BUDGET, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_ELIMIT, "%s", shoal_strerror(r.err));
    cr_assert_gt(r.work_bytes, 4096u);
    char want[64];
    snprintf(want, sizeof want, "needs about %llu bytes", (unsigned long long)r.work_bytes);
    cr_assert(strstr(r.errinfo.msg, want) && strstr(r.errinfo.msg, "budget_session_bytes is 4096"),
              "%s", r.errinfo.msg);
    cr_assert_eq(sent.report_outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR);
    cr_assert_eq(sent.report_chunks, 0u);
    cr_assert_null(shoal_client_last_update(c, NULL));
    uint64_t need = r.work_bytes;
    shoal_client_free(c);

    /* Exactly the figure it named is enough. */
    d.cfg.budget_session_bytes = need;
    c = new_client(&d);
    run_until_taken(c, &r);
    cr_assert_eq(r.outcome, SHOAL_SESSION_TRAINED, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.work_bytes, need);
    shoal_client_free(c);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- streaming: heap use does not follow the selection ----------------------- */

/* Counts the live bytes of the blocks the test's own thread allocates
 * through the shoal allocation hook (the server's threads share the hook
 * but are not counted), and their peak. */
typedef struct counted {
    size_t size;
    int mine;
    int pad;
} counted;

static pthread_t counted_thread;
static _Atomic long long live_bytes, peak_bytes;

static void note(long long delta)
{
    long long now = atomic_fetch_add(&live_bytes, delta) + delta;
    long long p = atomic_load(&peak_bytes);
    while (now > p && !atomic_compare_exchange_weak(&peak_bytes, &p, now)) {
    }
}

static void *count_malloc(void *ctx, size_t size)
{
    (void)ctx;
    counted *h = malloc(sizeof(counted) + size + 16);
    if (!h)
        return NULL;
    h->size = size;
    h->mine = pthread_equal(pthread_self(), counted_thread);
    if (h->mine)
        note((long long)size);
    return (char *)h + 32;
}

static void count_free(void *ctx, void *ptr)
{
    (void)ctx;
    if (!ptr)
        return;
    counted *h = (counted *)((char *)ptr - 32);
    if (h->mine)
        note(-(long long)h->size);
    free(h);
}

static void *count_realloc(void *ctx, void *ptr, size_t size)
{
    if (!ptr)
        return count_malloc(ctx, size);
    counted *h = (counted *)((char *)ptr - 32);
    void *n = count_malloc(ctx, size);
    if (!n)
        return NULL;
    memcpy(n, ptr, h->size < size ? h->size : size);
    count_free(ctx, ptr);
    return n;
}

_Static_assert(sizeof(counted) <= 32, "header fits the 32-byte prefix");

/* A population whose examples are 28x28 images (784 floats, 3 KiB each):
 * logreg, 10 classes. */
static void start_images(tserver *t)
{
    const char *pop =
        "{\"name\": \"p\", \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
        " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 28, 28],"
        " \"classes\": 10, \"init_seed\": 7},"
        " \"plan\": {\"learning_rate\": 0.05, \"epochs\": 1, \"batch_size\": 32},"
        " \"strategy\": {\"name\": \"fedavg\"},"
        " \"round\": {\"mode\": \"sync\", \"goal_count\": 1, \"over_selection\": 1.0,"
        " \"pipelining\": false, \"selection_window_ms\": 60000,"
        " \"reporting_deadline_ms\": 60000, \"retry_min_ms\": 100, \"retry_max_ms\": 200}}";
    tserver_prepare(t, pop);
    tserver_start(t);
}

static void add_images(const char *path, int count, uint64_t seed)
{
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    enum { BATCH = 200 };
    float *x = malloc((size_t)BATCH * 784 * sizeof *x);
    shoal_example ex[BATCH];
    shoal_rng rng;
    shoal_rng_seed(&rng, seed);
    for (int done = 0; done < count; done += BATCH) {
        int n = count - done < BATCH ? count - done : BATCH;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < 784; j++)
                x[i * 784 + j] = shoal_rng_float(&rng);
            ex[i] = (shoal_example){.features = x + i * 784,
                                    .feature_count = 784,
                                    .label = (int32_t)((done + i) % 10),
                                    .timestamp_ms = 1767225600000 + done + i};
        }
        cr_assert_eq(shoal_store_add_batch(st, "p", ex, (size_t)n, 1767225600000 + done, &ei),
                     SHOAL_OK, "%s", ei.msg);
    }
    free(x);
    shoal_store_close(st);
}

/* Peak growth of the counted heap over one session. */
static long long session_peak(shoal_client *c, shoal_session_result *r)
{
    long long before = atomic_load(&live_bytes);
    atomic_store(&peak_bytes, before);
    run_until_taken(c, r);
    cr_assert_eq(r->outcome, SHOAL_SESSION_TRAINED, "%s: %s",
                 shoal_session_outcome_name(r->outcome), r->errinfo.msg);
    return atomic_load(&peak_bytes) - before;
}

Test(device_sdk_work, the_session_heap_does_not_grow_with_the_examples_selected, .timeout = 120)
{
    counted_thread = pthread_self();
    shoal_allocator a = {count_malloc, count_realloc, count_free, NULL};
    shoal_alloc_set(&a);
    tserver t;
    start_images(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    add_images(d.store, 200, 1);
    /* A new client for each session, so that both download the model. */
    shoal_client *c = new_client(&d);
    shoal_session_result r;
    long long small = session_peak(c, &r);
    uint64_t small_work = r.work_bytes;
    cr_assert_eq(r.example_count, 200u);
    cr_assert(r.model_downloaded);
    shoal_client_free(c);
    /* Ten times the examples: 2,000 x 3,136 bytes = 6.0 MiB of them. */
    add_images(d.store, 1800, 2);
    c = new_client(&d);
    long long large = session_peak(c, &r);
    cr_assert(r.model_downloaded);
    cr_assert_eq(r.example_count, 2000u);
    cr_log_info("session heap peak: %lld bytes with 200 examples, %lld with 2000; "
                "computed work %llu and %llu",
                small, large, (unsigned long long)small_work, (unsigned long long)r.work_bytes);
    /* Gathering the examples would add 1800 x 3136 = 5.6 MB; reading them
     * as training draws them adds 20 bytes each (and the rest of the
     * session's heap does not depend on them). */
    cr_assert_lt(large - small, 1800 * 32, "the heap grew %lld bytes with 1800 more examples",
                 large - small);
    cr_assert_eq(r.work_bytes - small_work, 1800u * 20u);
    cr_assert_lt(large, 2000 * 3136 / 4, "a session holding 2000 examples peaked at %lld bytes",
                 large);
    shoal_client_free(c);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
    shoal_alloc_set(NULL);
}
