/* Secure aggregation end to end: a real shoal-server, devices running the
 * secure-agg client state machine over TLS, one of them lost in the middle
 * of the protocol. The committed model must be the FedAvg of the
 * survivors' updates within the fixed-point error, and /metrics must count
 * the group and the dropout. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sessions.h"
#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"
#include "shoal/state.h"

#define PARAMS  10 /* logreg 1x2x2 -> 2 classes */
#define DEVICES 5

typedef struct sa_device {
    const tserver *srv;
    const float *delta; /* params elements */
    size_t params;
    uint32_t examples;
    int leave_at_inbox; /* shares its secrets, then disconnects before masking */
    int adaptive;       /* offers capabilities.adaptive_clipping */
    /* results */
    enum tdev_result config_result, end_result;
    int has_secagg, status, reason;
    uint32_t index, group_size;
    float *model; /* params elements: the model the device was sent */
    /* Adaptive clipping: the plan's clip and whether it asked for the
     * bit, the vector's length, and the bit the device put after its
     * weight (its norm within the clip, before clipping to it). */
    double plan_clip;
    int report_unclipped;
    size_t vector_length;
    uint8_t bit;
} sa_device;

/* Answers one server message; 1 when the session is over. */
static int answer(sa_device *p, tdev *d, shoal_secagg_client *sa, shoal_envelope *env)
{
    shoal_errinfo ei = {0};
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_err err = SHOAL_OK;
    const size_t k = d->sa_cfg.degree;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_SECAGG_KEYS: {
        const Shoal__SecAggKeys *m = env->secagg_keys;
        shoal_secagg_advertise *keys = calloc(m->n_keys, sizeof *keys);
        shoal_secagg_sealed_shares *out = calloc(k, sizeof *out);
        size_t count = 0;
        for (size_t i = 0; i < m->n_keys; i++)
            shoal_secagg_wire_key_get(m->keys[i], &keys[i]);
        err = shoal_secagg_client_share(sa, keys, m->n_keys, out, &count, &ei);
        if (!err)
            err = shoal_secagg_wire_encode_shares(&d->codec_out, d->session, d->session_len, out,
                                                  count, &bytes, &len, &ei);
        free(keys);
        free(out);
        break;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_INBOX: {
        if (p->leave_at_inbox) {
            shoal_wss_abort(d->wss);
            return 1;
        }
        const Shoal__SecAggInbox *m = env->secagg_inbox;
        const size_t length = d->sa_cfg.length;
        shoal_secagg_sealed_shares *in = calloc(m->n_shares, sizeof *in);
        uint64_t *input = calloc(length, sizeof *input);
        uint8_t *masked = calloc(length, shoal_secagg_ring_bytes(d->sa_cfg.bits));
        /* As libshoal-device: with adaptive clipping the bit against the
         * plan's clip, then the clip, then the bit after the weight. */
        float *clipped = malloc(p->params * sizeof *clipped);
        memcpy(clipped, p->delta, p->params * sizeof *clipped);
        double norm = 0;
        if (d->report_unclipped) {
            err = shoal_clip_l2(p->params, clipped, d->plan_clip, &norm);
            p->bit = norm <= d->plan_clip;
        }
        if (!err)
            err = shoal_secagg_wire_sealed_get(m->shares, m->n_shares, in, m->n_shares);
        if (!err)
            err = shoal_secagg_fixed_encode_bits(&d->sa_fx, clipped, p->params, p->examples,
                                                 &p->bit, d->report_unclipped ? 1 : 0, input);
        free(clipped);
        if (!err)
            err = shoal_secagg_client_mask(sa, in, m->n_shares, input, masked, &ei);
        if (!err)
            err = shoal_secagg_wire_encode_masked(
                &d->codec_out, d->session, d->session_len, d->sa_cfg.bits, length, 0, masked,
                length * shoal_secagg_ring_bytes(d->sa_cfg.bits), &bytes, &len, &ei);
        free(in);
        free(input);
        free(masked);
        break;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST: {
        const Shoal__SecAggUnmaskRequest *m = env->secagg_unmask_request;
        shoal_secagg_revealed_share *out = calloc(k, sizeof *out);
        size_t count = 0;
        err = shoal_secagg_client_unmask(sa, m->survivors, m->n_survivors, NULL, NULL, 0, out,
                                         &count, &ei);
        if (!err)
            err = shoal_secagg_wire_encode_unmask(&d->codec_out, d->session, d->session_len, out,
                                                  count, &bytes, &len, &ei);
        free(out);
        break;
    }
    case SHOAL__ENVELOPE__BODY_REPORT_ACK:
        p->end_result = TDEV_ACKED;
        p->status = env->report_ack->status;
        p->reason = env->report_ack->has_reason ? env->report_ack->reason : 0;
        return 1;
    case SHOAL__ENVELOPE__BODY_ABORT:
        p->end_result = TDEV_ABORTED;
        p->reason = env->abort->reason;
        return 1;
    default:
        fprintf(stderr, "secagg device: unexpected %s\n", shoal_envelope_body_name(env));
        return 1;
    }
    if (err) {
        fprintf(stderr, "secagg device %u: %s (%s)\n", p->index, ei.msg, shoal_strerror(err));
        p->end_result = TDEV_ERROR;
        return 1;
    }
    return tdev_send_bytes(d, bytes, len) != 0;
}

static void *sa_session(void *arg)
{
    sa_device *p = arg;
    tdev d;
    if (tdev_connect(&d, &p->srv->endpoint) != 0) {
        p->config_result = TDEV_ERROR;
        return NULL;
    }
    d.secagg_capable = 1;
    d.adaptive_capable = p->adaptive;
    shoal_secagg_client *sa = NULL;
    if (tdev_checkin(&d, "secure", TEST_SECRET, 0, NULL, 0) != 0 ||
        (p->config_result = tdev_await_config(&d, 20000)) != TDEV_ACCEPTED)
        goto done;
    p->has_secagg = d.has_secagg;
    p->index = d.sa_index;
    p->group_size = d.sa_cfg.n;
    p->plan_clip = d.plan_clip;
    p->report_unclipped = d.report_unclipped;
    p->vector_length = d.sa_cfg.length;
    if (d.param_count != p->params) {
        p->config_result = TDEV_ERROR;
        goto done;
    }
    memcpy(p->model, d.model, p->params * sizeof *p->model);
    shoal_secagg_advertise adv;
    uint8_t *bytes;
    size_t len;
    if (!d.has_secagg || shoal_secagg_client_new(&d.sa_cfg, d.sa_index, NULL, &sa, NULL) ||
        shoal_secagg_client_advertise(sa, &adv, NULL) ||
        shoal_secagg_wire_encode_advertise(&d.codec_out, d.session, d.session_len, &adv, &bytes,
                                           &len, NULL) ||
        tdev_send_bytes(&d, bytes, len))
        goto done;
    for (;;) {
        enum tdev_result res;
        shoal_envelope *env = tdev_recv(&d, 20000, &res);
        if (!env) {
            p->end_result = res;
            break;
        }
        int over = answer(p, &d, sa, env);
        shoal_envelope_free(env);
        if (over)
            break;
    }
done:
    shoal_secagg_client_free(sa);
    tdev_close(&d);
    return NULL;
}

static const char population[] =
    "{\"name\": \"secure\","
    " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
    " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 2, 2], \"classes\": 2,"
    " \"init_seed\": 7},"
    " \"plan\": {\"learning_rate\": 0.1},"
    " \"round\": {\"goal_count\": 5, \"over_selection\": 1.0, \"min_report_fraction\": 0.8,"
    " \"pipelining\": false, \"selection_window_ms\": 60000, \"reporting_deadline_ms\": 6000,"
    " \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
    " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1.0, \"max_weight\": 100,"
    " \"phase_timeout_ms\": 1000}}";

Test(server_secagg, a_round_with_a_dropout_commits_the_survivors_fedavg)
{
    tserver t;
    tserver_prepare(&t, population);
    tserver_start(&t);
    sa_device dev[DEVICES];
    pthread_t th[DEVICES];
    float delta[DEVICES][PARAMS], model[DEVICES][PARAMS];
    memset(dev, 0, sizeof dev);
    for (int i = 0; i < DEVICES; i++) {
        dev[i].srv = &t;
        dev[i].examples = 10 * (uint32_t)(i + 1);
        for (int j = 0; j < PARAMS; j++)
            delta[i][j] = 0.01f * (float)((i + 1) * (j % 3 + 1)) * (j % 2 ? -1.0f : 1.0f);
        dev[i].delta = delta[i];
        dev[i].model = model[i];
        dev[i].params = PARAMS;
    }
    dev[1].leave_at_inbox = 1;
    for (int i = 0; i < DEVICES; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, sa_session, &dev[i]), 0);
    for (int i = 0; i < DEVICES; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < DEVICES; i++) {
        cr_assert_eq(dev[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert(dev[i].has_secagg, "device %d: no secure_aggregation in its plan", i);
        cr_assert_eq(dev[i].group_size, DEVICES);
        if (i == 1)
            continue;
        cr_assert_eq(dev[i].end_result, TDEV_ACKED, "device %d: %d", i, dev[i].end_result);
        cr_assert_eq(dev[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    }
    int status = 0;
    size_t mlen = 0;
    char *metrics = thttp_get(&t, "/metrics", &status, &mlen);
    cr_assert_not_null(metrics);
    cr_assert(strstr(metrics, "shoal_secagg_groups_unmasked_total{population=\"secure\"} 1\n"),
              "%s", metrics);
    cr_assert(
        strstr(metrics, "shoal_secagg_dropouts_total{population=\"secure\",phase=\"mask\"} 1\n"));
    /* The aggregator timed the group's masked-input and unmask phases. */
    const char *names[] = {"shoal_secagg_inputs_seconds_total{population=\"secure\"} ",
                           "shoal_secagg_unmask_seconds_total{population=\"secure\"} "};
    for (int k = 0; k < 2; k++) {
        const char *at = strstr(metrics, names[k]);
        cr_assert_not_null(at, "no %s in %s", names[k], metrics);
        double seconds = strtod(at + strlen(names[k]), NULL);
        cr_assert_gt(seconds, 0.0, "%s%g", names[k], seconds);
    }
    free(metrics);
    tserver_stop(&t);

    /* FedAvg of the survivors, each clipped to [-1, 1] (none is beyond). */
    float *params = NULL;
    size_t count = 0;
    uint64_t version = 0;
    cr_assert_eq(tstate_latest(&t, "secure", &params, &count, &version), 0);
    cr_assert_eq(count, (size_t)PARAMS);
    cr_assert_eq(version, 1);
    for (int j = 0; j < PARAMS; j++) {
        double num = 0, den = 0;
        for (int i = 0; i < DEVICES; i++)
            if (i != 1) {
                num += (double)dev[i].examples * dev[i].delta[j];
                den += dev[i].examples;
            }
        double want = dev[0].model[j] + num / den;
        cr_assert_float_eq(params[j], want, 1e-5, "param %d: %g, want %g", j, (double)params[j],
                           want);
    }
    shoal_free(params);
    tserver_cleanup(&t);
}

/* ---- DP-FedAvg with secure aggregation (issue 16) ------------------------------- */

#define DP_INPUTS  10000
#define DP_PARAMS  (DP_INPUTS * 2 + 2) /* logreg [10000] -> 2 classes */
#define DP_DEVICES 5
#define DP_NOISE   0.02
#define DP_CLIP    1.0
#define DP_EXPECT  5.0

/* The devices clip and encode weight 1 before masking; the server sees
 * only the group's sum, adds the noise once to it and divides by the
 * expected count. With one device gone before masking, the committed
 * change is (the 4 survivors' sum + N(0, (z S)^2)) / 5 per coordinate. */
Test(server_secagg, dp_noise_is_added_once_to_the_unmasked_sum, .timeout = 300)
{
    char population_dp[1024];
    snprintf(population_dp, sizeof population_dp,
             "{\"name\": \"secure\","
             " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
             " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [%d], \"classes\": 2,"
             " \"init_seed\": 7},"
             " \"plan\": {\"learning_rate\": 0.1},"
             " \"round\": {\"goal_count\": %d, \"over_selection\": 1.0,"
             " \"min_report_fraction\": 0.8, \"selection_window_ms\": 60000,"
             " \"reporting_deadline_ms\": 20000, \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
             " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1.0,"
             " \"phase_timeout_ms\": 2000},"
             " \"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": %g,"
             " \"expected_reports\": %g}}",
             DP_INPUTS, DP_DEVICES, DP_NOISE, DP_CLIP, DP_EXPECT);
    tserver t;
    tserver_prepare(&t, population_dp);
    tserver_start(&t);
    sa_device dev[DP_DEVICES];
    pthread_t th[DP_DEVICES];
    float *delta[DP_DEVICES];
    memset(dev, 0, sizeof dev);
    for (int i = 0; i < DP_DEVICES; i++) {
        delta[i] = malloc(DP_PARAMS * sizeof(float));
        cr_assert_not_null(delta[i]);
        /* Norm (i + 1) x 0.0012 x sqrt(20002) <= 0.85: within S as sent. */
        for (int j = 0; j < DP_PARAMS; j++)
            delta[i][j] = 0.0012f * (float)(i + 1) * (j % 8 == 0 ? -1.0f : 1.0f);
        dev[i] = (sa_device){.srv = &t, .delta = delta[i], .params = DP_PARAMS, .examples = 1};
        dev[i].model = malloc(DP_PARAMS * sizeof(float));
        cr_assert_not_null(dev[i].model);
    }
    dev[2].leave_at_inbox = 1;
    for (int i = 0; i < DP_DEVICES; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, sa_session, &dev[i]), 0);
    for (int i = 0; i < DP_DEVICES; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < DP_DEVICES; i++) {
        cr_assert_eq(dev[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert(dev[i].has_secagg, "device %d: no secure_aggregation in its plan", i);
        if (i == 2)
            continue;
        cr_assert_eq(dev[i].end_result, TDEV_ACKED, "device %d: %d", i, dev[i].end_result);
        cr_assert_eq(dev[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    }
    /* The commit (and its accounting) follows the acks: wait for it. */
    const char *rounds = "shoal_dp_rounds{population=\"secure\"} 1\n";
    char *metrics = NULL;
    for (int tries = 0; tries < 1500; tries++) {
        free(metrics);
        int status = 0;
        metrics = thttp_get(&t, "/metrics", &status, NULL);
        cr_assert_not_null(metrics);
        if (strstr(metrics, rounds))
            break;
        sleep_ms(20);
    }
    cr_assert(strstr(metrics, rounds), "%s", metrics);
    cr_assert(strstr(metrics, "shoal_secagg_groups_unmasked_total{population=\"secure\"} 1\n"),
              "%s", metrics);
    free(metrics);
    tserver_stop(&t);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "secure", "logreg 10000x1x1 2", DP_PARAMS, &id, &ei),
                 SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_latest(st, id, &cp, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_state_close(st);
    cr_assert_eq(cp.version, 1u);
    const float *params = cp.params;
    /* What is left after the survivors' sum over the expected count is the
     * noise, N(0, (z S / E)^2) per coordinate. 3% on the stddev and 6
     * standard errors on the mean each fail by chance with probability
     * below 2e-9; no noise, noise added per group and again at the
     * coordinator (sqrt 2 too much), or dividing by the 4 survivors (the
     * mean moves by 0.0012 x 12 x (1/4 - 1/5) x 3/4 = 5.4e-4, 3.2 times
     * its bound) all fail. */
    const double sigma = DP_NOISE * DP_CLIP / DP_EXPECT;
    double sum = 0, sq = 0;
    for (int j = 0; j < DP_PARAMS; j++) {
        double uploaded = 0;
        for (int i = 0; i < DP_DEVICES; i++)
            if (i != 2)
                uploaded += delta[i][j];
        const double noise = ((double)params[j] - dev[0].model[j]) - uploaded / DP_EXPECT;
        sum += noise;
        sq += noise * noise;
    }
    const double n = DP_PARAMS, mean = sum / n;
    const double sd = sqrt((sq - n * mean * mean) / (n - 1));
    cr_assert_leq(fabs(sd / sigma - 1.0), 0.03, "noise stddev %g, want %g", sd, sigma);
    cr_assert_leq(fabs(mean), 6.0 * sigma / sqrt(n), "noise mean %g (sigma %g)", mean, sigma);
    shoal_checkpoint_fini(&cp);
    for (int i = 0; i < DP_DEVICES; i++) {
        free(delta[i]);
        free(dev[i].model);
    }
    tserver_cleanup(&t);
}

/* ---- adaptive clipping with secure aggregation (issue 16) ----------------------- */

#define AC_DEVICES 5

/* Waits until /metrics has `line` (the commit follows the acks). */
static char *wait_metrics_line(const tserver *t, const char *line)
{
    char *metrics = NULL;
    for (int tries = 0; tries < 1500; tries++) {
        free(metrics);
        int status = 0;
        metrics = thttp_get(t, "/metrics", &status, NULL);
        cr_assert_not_null(metrics);
        if (strstr(metrics, line))
            break;
        sleep_ms(20);
    }
    cr_assert(strstr(metrics, line), "no \"%s\" in:\n%s", line, metrics);
    return metrics;
}

/* One round of the five devices (norms 0.2, 0.4, 2, 3, 0.5 x the clip
 * direction), device `leaver` (or none: -1) leaving before its masked
 * input; returns the plan's clip and the bits of the survivors. */
static double ac_round(const tserver *t, int leaver, int *survivors_bits, int round)
{
    static const double norms[AC_DEVICES] = {0.2, 0.4, 2.0, 3.0, 0.5};
    sa_device dev[AC_DEVICES];
    pthread_t th[AC_DEVICES];
    float delta[AC_DEVICES][PARAMS], model[AC_DEVICES][PARAMS];
    memset(dev, 0, sizeof dev);
    for (int i = 0; i < AC_DEVICES; i++) {
        for (int j = 0; j < PARAMS; j++)
            delta[i][j] = (float)(norms[i] / sqrt((double)PARAMS)) * (j % 2 ? -1.0f : 1.0f);
        dev[i] = (sa_device){.srv = t,
                             .delta = delta[i],
                             .params = PARAMS,
                             .examples = 1,
                             .model = model[i],
                             .adaptive = 1,
                             .leave_at_inbox = i == leaver};
        cr_assert_eq(pthread_create(&th[i], NULL, sa_session, &dev[i]), 0);
    }
    for (int i = 0; i < AC_DEVICES; i++)
        pthread_join(th[i], NULL);
    *survivors_bits = 0;
    for (int i = 0; i < AC_DEVICES; i++) {
        cr_assert_eq(dev[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert(dev[i].has_secagg && dev[i].report_unclipped, "device %d", i);
        /* The bit travels as one more element of the masked input. */
        cr_assert_eq(dev[i].vector_length, PARAMS + 2);
        cr_assert_eq(dev[i].plan_clip, dev[0].plan_clip);
        if (i == leaver)
            continue;
        cr_assert_eq(dev[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
        *survivors_bits += dev[i].bit;
    }
    char line[96];
    snprintf(line, sizeof line, "shoal_dp_rounds{population=\"secure\"} %d\n", round);
    free(wait_metrics_line(t, line));
    return dev[0].plan_clip;
}

/* The devices put their unclipped bit after the weight and mask it with
 * the rest: the server learns how many of a group's survivors set it, not
 * who. Round 1 (clip 1, target 0.3): the survivors 0, 2, 3, 4 set 1, 0, 0,
 * 1; device 1, which would have set it, leaves before masking and is not
 * counted: the fraction is (2 - 4/2) / 5 + 1/2 = 0.5 and the clip shrinks
 * to exp(-0.2). Round 2, at that clip: 0.2, 0.4 and 0.5 are within, 0.6,
 * and it shrinks again. A server that read no bits from the sum, or that
 * counted the leaver, commits other clips. */
Test(server_secagg, adaptive_clipping_counts_the_masked_bits_of_the_survivors, .timeout = 300)
{
    const double z = 0.001, count_noise = 0.001, gamma = 0.3, eta = 1.0;
    char population_ac[1200];
    snprintf(population_ac, sizeof population_ac,
             "{\"name\": \"secure\","
             " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
             " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [1, 2, 2],"
             " \"classes\": 2, \"init_seed\": 7},"
             " \"plan\": {\"learning_rate\": 0.1},"
             " \"round\": {\"goal_count\": %d, \"over_selection\": 1.0,"
             " \"min_report_fraction\": 0.8, \"selection_window_ms\": 60000,"
             " \"reporting_deadline_ms\": 20000, \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
             " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1.0,"
             " \"phase_timeout_ms\": 2000},"
             " \"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": 1,"
             " \"adaptive_clipping\": {\"target_quantile\": %g, \"learning_rate\": %g,"
             " \"count_noise\": %g}}}",
             AC_DEVICES, z, gamma, eta, count_noise);
    tserver t;
    tserver_prepare(&t, population_ac);
    tserver_start(&t);
    int bits[2];
    double clips[2];
    clips[0] = ac_round(&t, 1, &bits[0], 1);
    clips[1] = ac_round(&t, -1, &bits[1], 2);
    tserver_stop(&t);
    cr_assert_eq(clips[0], 1.0);
    cr_assert_eq(bits[0], 2, "devices 0 and 4");
    cr_assert_eq(bits[1], 3, "devices 0, 1 and 4");

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "secure", "logreg 1x2x2 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    const int reports[2] = {4, 5};
    for (int r = 0; r < 2; r++) {
        uint8_t blob[SHOAL_RDP_PACKED_MAX];
        shoal_dp_record rec;
        cr_assert_eq(shoal_state_dp_load(st, id, (uint64_t)r + 1, blob, sizeof blob, &rec, &ei),
                     SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(rec.clip, clips[r], "round %d", r + 1);
        /* (bits - reports / 2) / E + 1/2, E = goal_count 5, within 10
         * standard deviations of the count's noise. */
        const double exact = (bits[r] - reports[r] / 2.0) / AC_DEVICES + 0.5;
        cr_assert_leq(fabs(rec.unclipped_fraction - exact), 10 * count_noise / AC_DEVICES,
                      "round %d: fraction %.9g, the survivors' bits give %g", r + 1,
                      rec.unclipped_fraction, exact);
        const double next = (double)(float)shoal_round_dp_adaptive_clip(
            rec.clip, rec.unclipped_fraction, gamma, eta);
        cr_assert_eq(rec.next_clip, next, "round %d", r + 1);
        if (r == 0)
            cr_assert_eq(rec.next_clip, clips[1], "the second round's plans carry it");
        cr_assert_lt(rec.next_clip, rec.clip, "round %d: more than 0.3 within", r + 1);
    }
    shoal_state_close(st);
    tserver_cleanup(&t);
}
