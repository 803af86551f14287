/* The SDK with secure aggregation, against the real server: devices whose
 * plan asks for it never upload their update, run the protocol across the
 * server's phase messages inside shoal_client_run, and the committed model
 * is the FedAvg of their (clipped) updates within the fixed-point error. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_util.h"
#include "shoal/alloc.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"
#include "shoal/state.h"

#define DEVICES 3

static const char population[] =
    "{\"name\": \"s\","
    " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
    " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 2, 2], \"classes\": 2,"
    " \"init_seed\": 7},"
    " \"plan\": {\"learning_rate\": 0.1, \"max_examples\": 100},"
    " \"round\": {\"goal_count\": 3, \"over_selection\": 1.0, \"min_report_fraction\": 1.0,"
    " \"pipelining\": false, \"selection_window_ms\": 60000, \"reporting_deadline_ms\": 10000,"
    " \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
    " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 0.5, \"bits\": 48,"
    " \"phase_timeout_ms\": 2000}}";

typedef struct run {
    sdk_dev dev;
    shoal_client *client;
    shoal_session_result result;
    shoal_err err;
    float update[SDK_PARAMS], model[SDK_PARAMS];
    size_t update_count;
    int sent_report_chunks, sent_masked, sent_reports;
    float norm; /* adaptive test: the app trainer's update norm */
} run;

static void observe(void *ctx, const uint8_t *message, size_t len)
{
    run *r = ctx;
    Shoal__Envelope *env = shoal__envelope__unpack(NULL, len, message);
    cr_assert_not_null(env);
    r->sent_report_chunks += env->body_case == SHOAL__ENVELOPE__BODY_REPORT_CHUNK;
    r->sent_masked += env->body_case == SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT;
    r->sent_reports += env->body_case == SHOAL__ENVELOPE__BODY_REPORT;
    shoal__envelope__free_unpacked(env, NULL);
}

static void *run_main(void *arg)
{
    run *r = arg;
    r->err = shoal_client_run(r->client, &r->result);
    size_t n = 0;
    const float *u = shoal_client_last_update(r->client, &n);
    r->update_count = n;
    if (u && n == SDK_PARAMS)
        memcpy(r->update, u, sizeof r->update);
    return NULL;
}

Test(sdk_secagg, devices_sum_securely_and_the_server_commits_their_fedavg)
{
    tserver t;
    tserver_prepare(&t, population);
    tserver_start(&t);
    run runs[DEVICES];
    pthread_t th[DEVICES];
    memset(runs, 0, sizeof runs);
    for (int i = 0; i < DEVICES; i++) {
        run *r = &runs[i];
        sdk_dev_init(&r->dev, &t);
        snprintf(r->dev.store, sizeof r->dev.store, "%s/examples-%d.db", t.dir, i);
        sdk_make_store(r->dev.store, "s");
        r->dev.cfg.population = "s";
        r->dev.cfg.train_seed = 42 + (uint64_t)i;
        r->dev.cfg.observe_send = observe;
        r->dev.cfg.observe_ctx = r;
        shoal_errinfo ei = {0};
        cr_assert_eq(shoal_client_new(&r->dev.cfg, &r->dev.port, &r->client, &ei), SHOAL_OK, "%s",
                     ei.msg);
    }
    for (int i = 0; i < DEVICES; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, run_main, &runs[i]), 0);
    for (int i = 0; i < DEVICES; i++)
        pthread_join(th[i], NULL);
    /* The model every device trained from is the population's first. */
    float *initial = NULL;
    for (int i = 0; i < DEVICES; i++) {
        const run *r = &runs[i];
        cr_assert_eq(r->err, SHOAL_OK);
        cr_assert_eq(r->result.outcome, SHOAL_SESSION_TRAINED, "device %d: %s", i,
                     r->result.errinfo.msg);
        cr_assert_eq(r->result.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
        cr_assert_eq(r->sent_report_chunks, 0, "device %d uploaded its update in the clear", i);
        cr_assert_eq(r->sent_masked, 1);
        cr_assert_eq(r->update_count, (size_t)SDK_PARAMS);
        cr_assert_gt(r->result.work_bytes, 0);
    }
    tserver_stop(&t);
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "s", &params, &count, &version), 0);
    cr_assert_eq(version, 1);
    cr_assert_eq(count, (size_t)SDK_PARAMS);
    /* The initial model, as the server built it from init_seed 7: the
     * committed one less the mean, checked against a second device's view. */
    size_t held = 0;
    const float *m0 = shoal_client_model(runs[0].client, &held);
    cr_assert_eq(held, (size_t)SDK_PARAMS);
    initial = malloc(sizeof(float) * SDK_PARAMS);
    memcpy(initial, m0, sizeof(float) * SDK_PARAMS);
    for (int j = 0; j < SDK_PARAMS; j++) {
        double num = 0, den = 0;
        for (int i = 0; i < DEVICES; i++) {
            const double w =
                (double)(runs[i].result.example_count < 100 ? runs[i].result.example_count : 100);
            num += w * fmin(fmax(runs[i].update[j], -0.5), 0.5);
            den += w;
        }
        const double want = initial[j] + num / den;
        cr_assert_float_eq(params[j], want, 1e-5, "param %d: %g, want %g", j, (double)params[j],
                           want);
    }
    free(initial);
    shoal_free(params);
    for (int i = 0; i < DEVICES; i++) {
        shoal_client_free(runs[i].client);
        sdk_dev_fini(&runs[i].dev);
    }
    tserver_cleanup(&t);
}

/* ---- adaptive clipping ---------------------------------------------------------- */

static const char adaptive_population[] =
    "{\"name\": \"s\","
    " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
    " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 2, 2], \"classes\": 2,"
    " \"init_seed\": 7},"
    " \"plan\": {\"learning_rate\": 0.1},"
    " \"round\": {\"goal_count\": 3, \"over_selection\": 1.0, \"min_report_fraction\": 1.0,"
    " \"selection_window_ms\": 60000, \"reporting_deadline_ms\": 10000,"
    " \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
    " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1.0, \"phase_timeout_ms\": 2000},"
    " \"differential_privacy\": {\"noise_multiplier\": 0.001, \"clip\": 1,"
    " \"adaptive_clipping\": {\"target_quantile\": 0.5, \"learning_rate\": 1,"
    " \"count_noise\": 0.001}}}";

/* An app trainer whose update has every element equal, of L2 norm r->norm. */
static shoal_err constant_trainer(void *ctx, const float *weights, size_t count,
                                  const shoal_plan_info *plan, shoal_example_iter *it,
                                  float *delta_out, shoal_train_metrics *metrics_out)
{
    const run *r = ctx;
    (void)weights, (void)plan, (void)it;
    for (size_t j = 0; j < count; j++)
        delta_out[j] = (float)(r->norm / sqrt((double)count));
    *metrics_out = (shoal_train_metrics){.loss = 0.5, .accuracy = 0.5};
    return SHOAL_OK;
}

/* With secure aggregation the SDK measures its norm against the plan's
 * clip, clips, and puts the bit after its weight in the masked input (no
 * Report carries it). Norms 0.5, 3 and 0.8 against the clip of 1: bits 1,
 * 0, 1, and the server's noised fraction (2 - 3/2) / 3 + 1/2; the model
 * moves by the clipped updates over the 3 expected reports. */
Test(sdk_secagg, the_unclipped_bit_is_masked_with_the_update_and_counted_by_the_server)
{
    tserver t;
    tserver_prepare(&t, adaptive_population);
    tserver_start(&t);
    const float norms[DEVICES] = {0.5f, 3.0f, 0.8f};
    const int bits[DEVICES] = {1, 0, 1};
    run runs[DEVICES];
    pthread_t th[DEVICES];
    memset(runs, 0, sizeof runs);
    for (int i = 0; i < DEVICES; i++) {
        run *r = &runs[i];
        r->norm = norms[i];
        sdk_dev_init(&r->dev, &t);
        snprintf(r->dev.store, sizeof r->dev.store, "%s/examples-%d.db", t.dir, i);
        sdk_make_store(r->dev.store, "s");
        r->dev.cfg.population = "s";
        r->dev.cfg.observe_send = observe;
        r->dev.cfg.observe_ctx = r;
        r->dev.cfg.trainer = (shoal_client_trainer){.train = constant_trainer, .ctx = r};
        shoal_errinfo ei = {0};
        cr_assert_eq(shoal_client_new(&r->dev.cfg, &r->dev.port, &r->client, &ei), SHOAL_OK, "%s",
                     ei.msg);
    }
    for (int i = 0; i < DEVICES; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, run_main, &runs[i]), 0);
    for (int i = 0; i < DEVICES; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < DEVICES; i++) {
        const run *r = &runs[i];
        cr_assert_eq(r->result.outcome, SHOAL_SESSION_TRAINED, "device %d: %s", i,
                     r->result.errinfo.msg);
        cr_assert_eq(r->result.ack_status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
        cr_assert_eq(r->result.unclipped, bits[i], "device %d", i);
        cr_assert_eq(r->sent_report_chunks + r->sent_reports, 0, "device %d: no Report", i);
        cr_assert_geq(r->sent_masked, 1);
    }
    tserver_stop(&t);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "s", "logreg 1x2x2 2", SDK_PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    uint8_t blob[SHOAL_RDP_PACKED_MAX];
    shoal_dp_record rec;
    cr_assert_eq(shoal_state_dp_load(st, id, 1, blob, sizeof blob, &rec, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_latest(st, id, &cp, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_state_close(st);
    const double exact = (2 - 1.5) / 3 + 0.5;
    cr_assert_leq(fabs(rec.unclipped_fraction - exact), 10 * 0.001 / 3, "fraction %.9g",
                  rec.unclipped_fraction);
    cr_assert_eq(rec.next_clip, (double)(float)shoal_round_dp_adaptive_clip(
                                    1.0, rec.unclipped_fraction, 0.5, 1.0));
    /* The clipped updates (norms 0.5, 1, 0.8) over 3, plus noise of
     * stddev z_u S / 3 = 3.9e-4 per coordinate: 3e-3 is nearly 8 of them;
     * the unclipped 3 would move each coordinate 0.2 more. */
    size_t held = 0;
    const float *initial = shoal_client_model(runs[0].client, &held);
    cr_assert_eq(held, (size_t)SDK_PARAMS);
    const double per = (0.5 + 1.0 + 0.8) / sqrt((double)SDK_PARAMS) / 3;
    for (int j = 0; j < SDK_PARAMS; j++)
        cr_assert_float_eq(cp.params[j], initial[j] + per, 3e-3, "param %d", j);
    shoal_checkpoint_fini(&cp);
    for (int i = 0; i < DEVICES; i++) {
        shoal_client_free(runs[i].client);
        sdk_dev_fini(&runs[i].dev);
    }
    tserver_cleanup(&t);
}
