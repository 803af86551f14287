/* The app's own trainer (shoal/client_trainer.h) against the real
 * shoal-server in process: the delta it computes is the one the server
 * folds, unplugging stops it through the example iterator, and its
 * failure is reported as Report{ERROR}. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_util.h"
#include "shoal/alloc.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"
#include "shoal/state.h"

/* plan_fields: spliced into the population's plan; population_fields
 * into the population (tpop_ex; NULL: none). */
static void start_server_with(tserver *t, const char *plan_fields, const char *population_fields)
{
    char *pop = tpop_ex("p", "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false",
                        NULL, plan_fields, population_fields);
    tserver_prepare(t, pop);
    free(pop);
    tserver_start(t);
}

static void start_server(tserver *t)
{
    start_server_with(t, NULL, NULL);
}

/* What the test trainer saw. */
typedef struct seen {
    shoal_plan_info plan;
    char architecture[64];
    uint64_t examples[2]; /* per epoch */
    double feature_sum[2][4];
    int calls;
    shoal_err last_next;     /* the last non-ROW answer of next */
    shoal_err result;        /* what the trainer returns when not canceled */
    float scale;             /* the delta is multiplied by it (0: 1) */
    float delta[SDK_PARAMS]; /* the delta the trainer returned */
} seen;

/* Reads two epochs in batches of the plan's size and puts the mean of the
 * examples' features (epoch one) into the first four parameters of the
 * delta; zero elsewhere. */
static shoal_err mean_trainer(void *ctx, const float *weights, size_t count,
                              const shoal_plan_info *plan, shoal_example_iter *it, float *delta_out,
                              shoal_train_metrics *metrics_out)
{
    seen *s = ctx;
    (void)weights;
    s->calls++;
    s->plan = *plan;
    snprintf(s->architecture, sizeof s->architecture, "%s", plan->architecture);
    for (int epoch = 0; epoch < 2; epoch++) {
        if (epoch) {
            shoal_err err = shoal_example_iter_rewind(it);
            if (err)
                return s->last_next = err;
        }
        shoal_example_batch b;
        shoal_err err;
        while ((err = shoal_example_iter_next(it, plan->batch_size, &b)) == SHOAL_ROW) {
            cr_assert_eq(b.feature_count, 4u);
            cr_assert_leq(b.count, plan->batch_size);
            for (size_t i = 0; i < b.count; i++)
                for (int j = 0; j < 4; j++)
                    s->feature_sum[epoch][j] += b.x[i * 4 + (size_t)j];
            s->examples[epoch] += b.count;
        }
        s->last_next = err;
        if (err != SHOAL_DONE)
            return err;
    }
    if (s->result)
        return s->result;
    memset(delta_out, 0, count * sizeof *delta_out);
    for (int j = 0; j < 4; j++)
        delta_out[j] =
            (float)(s->feature_sum[0][j] / (double)s->examples[0]) * (s->scale ? s->scale : 1.0f);
    memcpy(s->delta, delta_out, sizeof s->delta);
    *metrics_out =
        (shoal_train_metrics){.example_count = s->examples[0], .loss = 0.5, .accuracy = 0.75};
    return SHOAL_OK;
}

typedef shoal_err (*train_fn)(void *ctx, const float *weights, size_t count,
                              const shoal_plan_info *plan, shoal_example_iter *it, float *delta_out,
                              shoal_train_metrics *metrics_out);

/* Starts the server (plan_fields spliced into its plan), a device with
 * the test store and the app trainer `train`, and runs one session that
 * must end TRAINED; returns the client (the caller frees it). */
static shoal_client *trained_session(tserver *t, sdk_dev *d, const char *plan_fields,
                                     const char *population_fields, train_fn train, seen *s,
                                     shoal_session_result *r)
{
    start_server_with(t, plan_fields, population_fields);
    sdk_dev_init(d, t);
    sdk_make_store(d->store, "p");
    d->cfg.trainer = (shoal_client_trainer){.train = train, .ctx = s};
    shoal_client *client = sdk_run_session(d, r);
    cr_assert_eq(r->outcome, SHOAL_SESSION_TRAINED, "%s: %s",
                 shoal_session_outcome_name(r->outcome), r->errinfo.msg);
    return client;
}

Test(device_sdk_trainer, the_apps_delta_is_what_the_server_folds_into_its_checkpoint)
{
    tserver t;
    sdk_dev d;
    seen s = {0};
    shoal_session_result r;
    shoal_client *client = trained_session(&t, &d, NULL, NULL, mean_trainer, &s, &r);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert_eq(s.calls, 1);

    /* The plan as the server configured it (tpop: logreg 1x2x2, 2
     * classes, SGD lr 0.1). */
    cr_assert_str_eq(s.architecture, "logreg");
    cr_assert_eq(s.plan.task, SHOAL_PLAN_TRAIN);
    cr_assert_eq(s.plan.parameter_count, (size_t)SDK_PARAMS);
    cr_assert_eq(s.plan.feature_count, 4u);
    cr_assert_eq(s.plan.classes, 2u);
    cr_assert_eq(s.plan.example_count, (uint64_t)SDK_EXAMPLES);
    cr_assert_eq(s.plan.round, 1u);
    cr_assert_float_eq(s.plan.learning_rate, 0.1f, 1e-7);
    cr_assert_gt(s.plan.batch_size, 0u);

    /* Each epoch is every selected example once: the rewound epoch sums
     * to the same features. The mean is recomputed from the examples. */
    static float x[SDK_EXAMPLES][4];
    static int32_t y[SDK_EXAMPLES];
    sdk_examples(x, y);
    double want[4] = {0};
    for (int i = 0; i < SDK_EXAMPLES; i++)
        for (int j = 0; j < 4; j++)
            want[j] += x[i][j];
    cr_assert_eq(s.examples[0], (uint64_t)SDK_EXAMPLES);
    cr_assert_eq(s.examples[1], (uint64_t)SDK_EXAMPLES);
    for (int j = 0; j < 4; j++) {
        cr_assert_float_eq(s.feature_sum[0][j], want[j], 1e-3);
        cr_assert_float_eq(s.feature_sum[1][j], want[j], 1e-3);
        want[j] /= SDK_EXAMPLES;
    }
    cr_assert_eq(r.example_count, (uint64_t)SDK_EXAMPLES);
    cr_assert_float_eq(r.loss, 0.5, 1e-12);
    cr_assert_float_eq(r.accuracy, 0.75, 1e-12);

    size_t mn = 0;
    float initial[SDK_PARAMS];
    memcpy(initial, shoal_client_model(client, &mn), sizeof initial);
    /* Stopping right after the ack: the server commits the round
     * first. */
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "p", &params, &count, &version), 0);
    cr_assert_eq(count, (size_t)SDK_PARAMS);
    cr_assert_eq(version, 1u);
    for (int j = 0; j < SDK_PARAMS; j++) {
        double delta = j < 4 ? want[j] : 0.0;
        cr_assert_float_eq(params[j], initial[j] + delta, 1e-5, "param %d: %g, want %g", j,
                           (double)params[j], initial[j] + delta);
    }
    shoal_free(params);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

/* mean_trainer, then a claim of a billion examples (issue 13's device). */
static shoal_err inflating_trainer(void *ctx, const float *weights, size_t count,
                                   const shoal_plan_info *plan, shoal_example_iter *it,
                                   float *delta_out, shoal_train_metrics *metrics_out)
{
    shoal_err err = mean_trainer(ctx, weights, count, plan, it, delta_out, metrics_out);
    metrics_out->example_count = 1000000000;
    return err;
}

Test(device_sdk_trainer, the_apps_trainer_claiming_more_than_limits_max_examples_reports_the_limit)
{
    tserver t;
    sdk_dev d;
    seen s = {0};
    shoal_session_result r;
    shoal_client *client =
        trained_session(&t, &d, "\"max_examples\": 100", NULL, inflating_trainer, &s, &r);
    /* The trainer was given at most the limit, and the report claims no
     * more: the server takes it instead of refusing it. */
    cr_assert_eq(s.plan.example_count, 100u);
    cr_assert_eq(s.examples[0], 100u);
    cr_assert_eq(r.example_count, 100u);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "ack status %d",
                 (int)r.ack_status);
    tserver_stop(&t);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

/* The population refuses (not clips) updates above the bound: only a
 * device that clipped first is accepted. */
#define REFUSE_ABOVE_ONE "\"update_bound\": {\"l2_norm\": 1.0, \"action\": \"refuse\"},"

static double norm_of(const float *x, size_t n)
{
    double sq = 0;
    for (size_t i = 0; i < n; i++)
        sq += (double)x[i] * x[i];
    return sqrt(sq);
}

Test(device_sdk_trainer, an_update_above_the_plans_bound_is_clipped_to_it_before_upload)
{
    tserver t;
    sdk_dev d;
    seen s = {.scale = 1000.0f};
    shoal_session_result r;
    shoal_client *client = trained_session(&t, &d, NULL, REFUSE_ABOVE_ONE, mean_trainer, &s, &r);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "ack status %d",
                 (int)r.ack_status);
    size_t n = 0;
    const float *sent = shoal_client_last_update(client, &n);
    cr_assert_eq(n, (size_t)SDK_PARAMS);
    double before = norm_of(s.delta, n);
    cr_assert_gt(before, 100.0);
    cr_assert_leq(norm_of(sent, n), 1.0);
    /* The whole update scaled by one factor, S / norm. */
    for (size_t j = 0; j < n; j++)
        cr_assert_float_eq(sent[j], s.delta[j] / before, 1e-6, "element %zu", j);
    tserver_stop(&t);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_trainer, an_update_within_the_plans_bound_is_uploaded_unchanged)
{
    tserver t;
    sdk_dev d;
    seen s = {0};
    shoal_session_result r;
    shoal_client *client = trained_session(&t, &d, NULL, REFUSE_ABOVE_ONE, mean_trainer, &s, &r);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    size_t n = 0;
    const float *sent = shoal_client_last_update(client, &n);
    cr_assert_lt(norm_of(s.delta, n), 1.0);
    cr_assert_arr_eq(sent, s.delta, sizeof s.delta);
    tserver_stop(&t);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

/* ---- adaptive clipping (Andrew et al. 2021) ------------------------------------ */

/* The plan's clip starts at 1 and moves toward the median norm at rate 1;
 * the noise is tiny (z = count_noise = 0.001) so the committed fraction is
 * the one report's bit within 0.01 (10 standard deviations). */
#define ADAPTIVE_DP                                                                                \
    "\"differential_privacy\": {\"noise_multiplier\": 0.001, \"clip\": 1, "                        \
    "\"adaptive_clipping\": {\"target_quantile\": 0.5, \"learning_rate\": 1, "                     \
    "\"count_noise\": 0.001}},"

/* One session of an update scaled by `scale` in an adaptive population:
 * the SDK's bit must be `bit` (its norm before clipping against the
 * plan's clip of 1), the upload within the clip, and the server's next
 * clip the geometric step from the bit it was sent. Measuring after
 * clipping would always say 1; sending no bit would be refused. */
static void expect_adaptive(float scale, int bit)
{
    tserver t;
    sdk_dev d;
    seen s = {.scale = scale};
    shoal_session_result r;
    shoal_client *client = trained_session(&t, &d, NULL, ADAPTIVE_DP, mean_trainer, &s, &r);
    cr_assert_eq(r.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "ack status %d: %s",
                 (int)r.ack_status, r.errinfo.msg);
    cr_assert_eq(r.unclipped, bit);
    size_t n = 0;
    const float *sent = shoal_client_last_update(client, &n);
    cr_assert_eq(n, (size_t)SDK_PARAMS);
    cr_assert_eq(norm_of(s.delta, n) <= 1.0, bit, "norm %g", norm_of(s.delta, n));
    cr_assert_leq(norm_of(sent, n), 1.0);
    tserver_stop(&t);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x2x2 2", SDK_PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    uint8_t blob[SHOAL_RDP_PACKED_MAX];
    shoal_dp_record rec;
    cr_assert_eq(shoal_state_dp_load(st, id, 1, blob, sizeof blob, &rec, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_state_close(st);
    cr_assert_eq(rec.clip, 1.0);
    cr_assert_leq(fabs(rec.unclipped_fraction - bit), 0.01, "fraction %g", rec.unclipped_fraction);
    const double next =
        (double)(float)shoal_round_dp_adaptive_clip(1.0, rec.unclipped_fraction, 0.5, 1.0);
    cr_assert_eq(rec.next_clip, next);
    if (bit)
        cr_assert_lt(rec.next_clip, 1.0, "within: the clip shrinks toward the median");
    else
        cr_assert_gt(rec.next_clip, 1.0, "clipped: the clip grows toward the median");
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_trainer, an_update_clipped_to_the_rounds_clip_is_reported_clipped)
{
    expect_adaptive(1000.0f, 0);
}

Test(device_sdk_trainer, an_update_within_the_rounds_clip_is_reported_unclipped)
{
    expect_adaptive(1.0f, 1);
}

Test(device_sdk_trainer, unplugging_stops_the_apps_trainer_through_the_iterator_and_uploads_nothing)
{
    tserver t;
    start_server(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    /* Poll 1 is before check-in; the iterator polls at every next(): the
     * fourth poll (third batch) finds the device unplugged. */
    d.tp.charging_flip_after = 3;
    d.tp.charging_after = 0;
    sdk_sent sent = {0};
    sdk_observer obs = {.sent = &sent};
    d.cfg.observe_send = sdk_observe;
    d.cfg.observe_ctx = &obs;
    seen s = {0};
    d.cfg.trainer = (shoal_client_trainer){.train = mean_trainer, .ctx = &s};
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_STOPPED_INELIGIBLE, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_not_null(strstr(r.errinfo.msg, "not charging"), "%s", r.errinfo.msg);
    cr_assert_eq(s.last_next, SHOAL_ECANCELED);
    cr_assert_eq(s.examples[0], 2u * s.plan.batch_size, "two batches read before the stop");
    cr_assert_eq(d.tp.charging_polls, 4u);
    cr_assert_null(shoal_client_last_update(client, NULL));
    cr_assert_eq(sent.report_chunks, 0u, "no part of an update was sent");
    cr_assert_eq(sent.report_outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED);
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_neq(tstate_latest(&t, "p", &params, &count, &version), 0,
                  "a checkpoint (version %llu) was committed", (unsigned long long)version);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_cleanup(&t);
}

Test(device_sdk_trainer, the_apps_trainer_failing_ends_in_error_and_reports_error)
{
    tserver t;
    start_server(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    sdk_sent sent = {0};
    sdk_observer obs = {.sent = &sent};
    d.cfg.observe_send = sdk_observe;
    d.cfg.observe_ctx = &obs;
    seen s = {.result = SHOAL_EIO};
    d.cfg.trainer = (shoal_client_trainer){.train = mean_trainer, .ctx = &s};
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR, "%s: %s", shoal_session_outcome_name(r.outcome),
                 r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_WORK_FAILED, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_EIO, "%s", shoal_strerror(r.err));
    cr_assert_not_null(strstr(r.errinfo.msg, "train callback"), "%s", r.errinfo.msg);
    cr_assert_eq(sent.report_outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_ERROR);
    cr_assert_eq(sent.report_chunks, 0u);
    cr_assert_null(shoal_client_last_update(client, NULL));
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_trainer, the_apps_trainer_canceling_on_its_own_interrupts_with_reason_canceled)
{
    tserver t;
    start_server(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "p");
    sdk_sent sent = {0};
    sdk_observer obs = {.sent = &sent};
    d.cfg.observe_send = sdk_observe;
    d.cfg.observe_ctx = &obs;
    /* The device stays eligible: the stop is the callback's own. */
    seen s = {.result = SHOAL_ECANCELED};
    d.cfg.trainer = (shoal_client_trainer){.train = mean_trainer, .ctx = &s};
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d.cfg, &d.port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(client, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_INTERRUPTED, "%s: %s",
                 shoal_session_outcome_name(r.outcome), r.errinfo.msg);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_CANCELED, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_OK);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(sent.report_outcome, SHOAL__REPORT_OUTCOME__REPORT_OUTCOME_INTERRUPTED);
    cr_assert_eq(sent.report_chunks, 0u);
    shoal_client_free(client);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}
