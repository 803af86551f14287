/* Issue 16, adaptive clipping on the server (Andrew et al. 2021): devices
 * learn each round's clip from their plan, report whether their update was
 * within it (Report.unclipped), and clip before uploading; the server
 * counts the bits, noises the count, moves the clip toward the target
 * quantile of the norms, holds uploads to the round's clip, and commits
 * the clip with the accountant so that a restart (kill -9 included) goes
 * on from it. The noise is made tiny (z = count_noise = 0.001) so that
 * the committed clips can be recomputed here from the bits the devices
 * sent, within a bound the noise cannot pass (10 standard deviations). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "sessions.h"
#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/privacy.h"
#include "shoal/round_dp.h"
#include "shoal/state.h"

#define Z           0.001
#define COUNT_NOISE 0.001

/* One device's session: an update of L2 norm `norm` (every element
 * equal), clipped to the plan's clip before the upload unless told not
 * to, with the unclipped bit unless told not to. */
typedef struct adaptive_session {
    const tserver *srv;
    double norm;
    int no_capability; /* checks in without capabilities.adaptive_clipping */
    int no_bit;        /* leaves Report.unclipped out */
    int no_clip;       /* uploads the update as trained, above the clip */
    /* results */
    enum tdev_result config_result, ack_result;
    int status, reason;
    uint64_t round;
    double plan_clip;
    int report_unclipped;
    int bit; /* the bit it computed: norm <= plan_clip */
} adaptive_session;

static void *adaptive_main(void *arg)
{
    adaptive_session *s = arg;
    tdev d;
    if (tdev_connect(&d, &s->srv->endpoint) != 0) {
        s->config_result = TDEV_ERROR;
        return NULL;
    }
    d.adaptive_capable = !s->no_capability;
    if (tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0) != 0 ||
        (s->config_result = tdev_await_config(&d, 20000)) != TDEV_ACCEPTED) {
        s->reason = d.reason;
        tdev_close(&d);
        return NULL;
    }
    s->round = d.round;
    s->plan_clip = d.plan_clip;
    s->report_unclipped = d.report_unclipped;
    float delta[PARAMS];
    for (int j = 0; j < PARAMS; j++)
        delta[j] = (float)(s->norm / sqrt((double)PARAMS));
    /* The device's own order: the bit against the plan's clip, before
     * clipping (what libshoal-device does). */
    double norm = 0;
    for (int j = 0; j < PARAMS; j++)
        norm += (double)delta[j] * delta[j];
    norm = sqrt(norm);
    s->bit = norm <= (double)(float)s->plan_clip;
    if (!s->no_clip && shoal_clip_l2(PARAMS, delta, s->plan_clip, NULL) != SHOAL_OK)
        cr_log_error("cannot clip");
    d.has_unclipped = !s->no_bit;
    d.unclipped = s->bit;
    if (tdev_report(&d, delta, PARAMS, 5, 0.25, 16) == 0)
        s->ack_result = tdev_await_ack(&d, 20000);
    s->status = d.status;
    s->reason = d.reason;
    tdev_close(&d);
    return NULL;
}

static void run_adaptive(adaptive_session *s, int n)
{
    pthread_t th[8];
    for (int i = 0; i < n; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, adaptive_main, &s[i]), 0);
        sleep_ms(20);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* /metrics prints 9 significant digits: a clip (a float) reads back as
 * the nearest double, so clips are compared as floats. */
static double metric_value(const tserver *t, const char *prefix)
{
    int status = 0;
    char *metrics = thttp_get(t, "/metrics", &status, NULL);
    cr_assert_not_null(metrics);
    cr_assert_eq(status, 200);
    const char *at = strstr(metrics, prefix);
    cr_assert_not_null(at, "no \"%s\" in:\n%s", prefix, metrics);
    double v = strtod(at + strlen(prefix), NULL);
    free(metrics);
    return v;
}

#define DP_ROUNDS "shoal_dp_rounds{population=\"p\"} "
#define DP_CLIP   "shoal_dp_clip{population=\"p\"} "

/* Polls until the round's commit (and its accounting) is visible: it
 * follows the last ack asynchronously. The bound is for a stuck server,
 * not a timing expectation. */
static void wait_rounds(const tserver *t, double want)
{
    double v = metric_value(t, DP_ROUNDS);
    for (int tries = 0; tries < 1500 && v != want; tries++) {
        sleep_ms(20);
        v = metric_value(t, DP_ROUNDS);
    }
    cr_assert_eq(v, want, "rounds accounted");
}

/* A round of n devices with these norms, all accepted; returns the round's
 * plan clip (the same for every device) and the number of bits set. */
static double adaptive_round(const tserver *t, const double *norms, int n, int *bits)
{
    adaptive_session s[8];
    memset(s, 0, sizeof s);
    for (int i = 0; i < n; i++)
        s[i] = (adaptive_session){.srv = t, .norm = norms[i]};
    const double before = metric_value(t, DP_ROUNDS);
    run_adaptive(s, n);
    *bits = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(s[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED,
                     "device %d: reason %d", i, s[i].reason);
        cr_assert(s[i].report_unclipped, "device %d: the plan asks for the bit", i);
        cr_assert_eq(s[i].plan_clip, s[0].plan_clip, "one clip per round");
        cr_assert_eq(s[i].round, s[0].round);
        *bits += s[i].bit;
    }
    wait_rounds(t, before + 1);
    return s[0].plan_clip;
}

/* The privacy record committed with checkpoint `version`. */
static shoal_dp_record record_of(shoal_state *st, int64_t id, uint64_t version)
{
    static uint8_t blob[SHOAL_RDP_PACKED_MAX];
    shoal_dp_record rec;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_state_dp_load(st, id, version, blob, sizeof blob, &rec, &ei), SHOAL_OK,
                 "version %llu: %s", (unsigned long long)version, ei.msg);
    return rec;
}

/* The clip the server must commit after a round at `clip` whose noised
 * unclipped fraction was `fraction`: the geometric step, as the plan's
 * float. */
static double next_clip(double clip, double fraction, double gamma, double eta)
{
    return (double)(float)shoal_round_dp_adaptive_clip(clip, fraction, gamma, eta);
}

static double epsilon_of(double q, double z, uint64_t steps, double delta)
{
    shoal_rdp_accountant acc;
    double eps = 0, order = 0;
    cr_assert_eq(shoal_rdp_accountant_init(&acc, NULL, 0), SHOAL_OK);
    cr_assert_eq(shoal_rdp_accountant_compose(&acc, q, z, steps), SHOAL_OK);
    cr_assert_eq(
        shoal_rdp_accountant_epsilon(&acc, delta, SHOAL_DP_CONVERSION_IMPROVED, &eps, &order),
        SHOAL_OK);
    return eps;
}

/* Four devices of norms 0.5, 1, 2 and 4, a first clip of 8, the median as
 * the target and a rate of 1. Every norm is within 8, so the clip shrinks
 * (8 -> 4.85 -> 2.94); then 4 is clipped (3 of 4 within: 2.29, 1.78);
 * then 2 is too, half are within, and the clip stays between the median
 * norms 1 and 2. A server that counted no bits would grow the clip, one
 * that ignored them would keep 8, one that moved it from the fraction of
 * another round or a plan that kept the first clip would break the
 * recomputation, and one that held uploads to the first clip would accept
 * the last device below. */
Test(dp_adaptive, the_clip_follows_the_median_norm_from_the_bits_devices_report, .timeout = 300)
{
    enum { DEVICES = 4, ROUNDS = 6 };
    const double norms[DEVICES] = {0.5, 1.0, 2.0, 4.0};
    const double gamma = 0.5, eta = 1.0;
    char dp[320];
    snprintf(dp, sizeof dp,
             "\"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": 8, "
             "\"adaptive_clipping\": {\"target_quantile\": %g, \"learning_rate\": %g, "
             "\"count_noise\": %g}},",
             Z, gamma, eta, COUNT_NOISE);
    char *pop =
        tpop_ex("p", "\"goal_count\": 4, \"over_selection\": 1.0, \"min_report_fraction\": 1.0",
                NULL, NULL, dp);
    tserver t;
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    cr_assert_eq(metric_value(&t, DP_CLIP), 8.0, "the first round's clip");
    double clips[ROUNDS + 1];
    int bits[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        /* What /metrics says the next round gets is what its plans say. */
        const double announced = metric_value(&t, DP_CLIP);
        clips[r] = adaptive_round(&t, norms, DEVICES, &bits[r]);
        cr_assert_eq((float)clips[r], (float)announced, "round %d", r + 1);
    }
    clips[ROUNDS] = (double)(float)metric_value(&t, DP_CLIP);
    cr_assert_eq(clips[0], 8.0);
    cr_assert_eq(bits[0], 4);
    /* The total z is what the accountant composed, not the update's share. */
    const double eps = epsilon_of(1.0, Z, ROUNDS, 1e-5);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "), eps,
                       eps * 1e-6);

    /* The round's clip holds uploads: one above it (below the first
     * clip) is refused, and so is a report without its bit; a device that
     * cannot send the bit is turned away at check-in. */
    adaptive_session rogue[4] = {
        {.srv = &t, .norm = 0.5},
        {.srv = &t, .norm = 4.0, .no_clip = 1},
        {.srv = &t, .norm = 0.5, .no_bit = 1},
        {.srv = &t, .norm = 1.0},
    };
    adaptive_session old = {.srv = &t, .norm = 1.0, .no_capability = 1};
    run_adaptive(&old, 1);
    cr_assert_eq(old.config_result, TDEV_ABORTED);
    cr_assert_eq(old.reason, SHOAL__REASON__REASON_UNSUPPORTED_ENCODING);
    run_adaptive(rogue, 4);
    cr_assert_eq(rogue[1].plan_clip, clips[ROUNDS]);
    cr_assert_eq(rogue[1].status, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED);
    cr_assert_eq(rogue[1].reason, SHOAL__REASON__REASON_NORM_EXCEEDED);
    cr_assert_eq(rogue[2].status, SHOAL__REPORT_STATUS__REPORT_STATUS_REFUSED);
    cr_assert_eq(rogue[2].reason, SHOAL__REASON__REASON_MALFORMED);
    cr_assert_eq(rogue[0].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    tserver_stop(&t);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x2x2 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    for (int r = 0; r < ROUNDS; r++) {
        const shoal_dp_record rec = record_of(st, id, (uint64_t)r + 1);
        cr_assert_eq(rec.clip, clips[r], "round %d: the clip its plans announced", r + 1);
        /* The noised fraction: the bits sent over the expected 4, within 10
         * standard deviations of the count's noise. */
        const double exact = (double)bits[r] / DEVICES;
        cr_assert_leq(fabs(rec.unclipped_fraction - exact), 10 * COUNT_NOISE / DEVICES,
                      "round %d: fraction %.9g, the bits give %g", r + 1, rec.unclipped_fraction,
                      exact);
        cr_assert_eq(rec.next_clip, next_clip(rec.clip, rec.unclipped_fraction, gamma, eta),
                     "round %d: next clip %.9g", r + 1, rec.next_clip);
        cr_assert_eq(rec.next_clip, clips[r + 1], "round %d: the next round got it", r + 1);
    }
    shoal_state_close(st);
    /* The direction the norms dictate: down while more than half are
     * within, then held between the median norms. */
    cr_assert_eq(bits[0] + bits[1], 8);
    cr_assert_eq(bits[2] + bits[3], 6);
    cr_assert_eq(bits[4] + bits[5], 4);
    for (int r = 0; r < 4; r++)
        cr_assert_lt(clips[r + 1], clips[r], "round %d", r + 1);
    for (int r = 4; r <= ROUNDS; r++)
        cr_assert(clips[r] > 1.0 && clips[r] < 2.0, "round %d: clip %g", r + 1, clips[r]);
    tserver_cleanup(&t);
}

/* Two devices of norms 1 and 3 and the 0.9 quantile as the target: the
 * clip grows from 2 (2.98, then 4.45). The server is killed after round 2;
 * the restarted one announces 4.45 at once and the next plan carries it,
 * and round 3 (both within) moves it from there, not from the config's 2. */
Test(dp_adaptive, the_clip_survives_kill_9_and_moves_on_from_the_committed_one, .timeout = 300)
{
    const double norms[2] = {1.0, 3.0};
    const double gamma = 0.9, eta = 1.0;
    char dp[320];
    snprintf(dp, sizeof dp,
             "\"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": 2, "
             "\"adaptive_clipping\": {\"target_quantile\": %g, \"learning_rate\": %g, "
             "\"count_noise\": %g}},",
             Z, gamma, eta, COUNT_NOISE);
    char *pop =
        tpop_ex("p", "\"goal_count\": 2, \"over_selection\": 1.0, \"min_report_fraction\": 1.0",
                NULL, NULL, dp);
    tserver t;
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);
    int bits[3];
    double clips[3];
    clips[0] = adaptive_round(&t, norms, 2, &bits[0]);
    clips[1] = adaptive_round(&t, norms, 2, &bits[1]);
    const double committed = (double)(float)metric_value(&t, DP_CLIP);
    cr_assert_eq(clips[0], 2.0);
    cr_assert_gt(clips[1], clips[0]);
    cr_assert_gt(committed, clips[1]);
    cr_assert_eq(bits[0] + bits[1], 2, "3 is above both clips");
    int status = tserver_kill(&t, SIGKILL);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    tserver_spawn(&t);
    cr_assert_eq(metric_value(&t, DP_ROUNDS), 2.0);
    cr_assert_eq((float)metric_value(&t, DP_CLIP), (float)committed,
                 "the clip on disk, not the config's");
    clips[2] = adaptive_round(&t, norms, 2, &bits[2]);
    cr_assert_eq(clips[2], committed, "the plan after the restart");
    cr_assert_eq(bits[2], 2, "both within %g", committed);
    const double after = (double)(float)metric_value(&t, DP_CLIP);
    status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x2x2 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    const shoal_dp_record two = record_of(st, id, 2), three = record_of(st, id, 3);
    shoal_state_close(st);
    cr_assert_eq(two.next_clip, committed);
    cr_assert_eq(three.clip, committed);
    cr_assert_leq(fabs(three.unclipped_fraction - 1.0), 10 * COUNT_NOISE / 2);
    cr_assert_eq(three.next_clip, next_clip(committed, three.unclipped_fraction, gamma, eta));
    cr_assert_eq(after, three.next_clip);
    cr_assert_lt(after, committed, "all within: the clip shrinks toward the 0.9 quantile");
    tserver_cleanup(&t);
}
