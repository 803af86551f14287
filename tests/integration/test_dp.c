/* Issue 16, DP-FedAvg on the server: a round's committed change is the sum
 * of the uploaded (clipped) updates plus Gaussian noise of stddev z x S,
 * over the expected report count; the accountant survives kill -9; the
 * budget stops the population after the rounds it allows. */
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
#include "shoal/dp_ftrl.h"
#include "shoal/dp_noise.h"
#include "shoal/privacy.h"
#include "shoal/state.h"

/* ---- a round on a model of 20,002 parameters ----------------------------------- */

#define BIG_INPUTS 10000
#define BIG_PARAMS (BIG_INPUTS * 2 + 2) /* logreg [10000] -> 2 classes */
#define DEVICES    3
#define CLIP       1.0
#define NOISE      0.02
#define EXPECTED   4.0 /* expected_reports: not the 3 that report */

typedef struct big_session {
    const tserver *srv;
    float *delta;
    uint64_t examples;
    float *model; /* downloaded */
    enum tdev_result config_result, ack_result;
    int status;
} big_session;

static void *big_main(void *arg)
{
    big_session *b = arg;
    tdev d;
    if (tdev_connect(&d, &b->srv->endpoint) != 0)
        return NULL;
    if (tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0) == 0 &&
        (b->config_result = tdev_await_config(&d, 30000)) == TDEV_ACCEPTED &&
        d.param_count == BIG_PARAMS) {
        memcpy(b->model, d.model, BIG_PARAMS * sizeof(float));
        if (tdev_report(&d, b->delta, BIG_PARAMS, b->examples, 0.25, 65536) == 0) {
            b->ack_result = tdev_await_ack(&d, 30000);
            b->status = d.status;
        }
    }
    tdev_close(&d);
    return NULL;
}

static char *big_population(void)
{
    char *buf = malloc(2048);
    snprintf(buf, 2048,
             "{\"name\": \"p\","
             " \"auth\": {\"mode\": \"shared\", \"secret\": \"" TEST_SECRET "\"},"
             " \"model\": {\"architecture\": \"logreg\", \"input_shape\": [%d],"
             " \"classes\": 2, \"init_seed\": 7},"
             " \"plan\": {\"learning_rate\": 0.1},"
             " \"round\": {\"goal_count\": %d, \"over_selection\": 1.0,"
             " \"min_report_fraction\": 1.0, \"selection_window_ms\": 60000,"
             " \"reporting_deadline_ms\": 30000, \"retry_min_ms\": 1000, \"retry_max_ms\": 5000},"
             " \"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": %g,"
             " \"expected_reports\": %g}}",
             BIG_INPUTS, DEVICES, NOISE, CLIP, EXPECTED);
    return buf;
}

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

/* Polls /metrics until `prefix` reads `want`: the commit, and with it the
 * accountant's figures, follows the last ack asynchronously. The bound is
 * for a stuck server, not a timing expectation. Returns the last value. */
static double wait_metric(const tserver *t, const char *prefix, double want)
{
    double v = metric_value(t, prefix);
    for (int tries = 0; tries < 1500 && v != want; tries++) {
        sleep_ms(20);
        v = metric_value(t, prefix);
    }
    return v;
}

/* Epsilon of `steps` rounds at (q, z) and delta, as the server reports it. */
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

Test(dp, a_round_commits_the_clipped_sum_plus_noise_over_the_expected_reports, .timeout = 300)
{
    tserver t;
    char *pop = big_population();
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    big_session s[DEVICES];
    pthread_t th[DEVICES];
    for (int i = 0; i < DEVICES; i++) {
        s[i] = (big_session){.srv = &t, .examples = 10 * (uint64_t)(i + 1)};
        s[i].delta = malloc(BIG_PARAMS * sizeof(float));
        s[i].model = malloc(BIG_PARAMS * sizeof(float));
        /* Within the clip as a device sends it (norm (i + 1) x 0.002 x
         * sqrt(20002) <= 0.85); example counts differ, which DP ignores. */
        for (int j = 0; j < BIG_PARAMS; j++)
            s[i].delta[j] = 0.002f * (float)(i + 1) * (j % 3 == 0 ? -1.0f : 1.0f);
        cr_assert_eq(pthread_create(&th[i], NULL, big_main, &s[i]), 0);
        sleep_ms(20);
    }
    for (int i = 0; i < DEVICES; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < DEVICES; i++) {
        cr_assert_eq(s[i].config_result, TDEV_ACCEPTED, "device %d", i);
        cr_assert_eq(s[i].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "device %d", i);
    }
    cr_assert_eq(wait_metric(&t, DP_ROUNDS, 1.0), 1.0);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "),
                       epsilon_of(1.0, NOISE, 1, 1e-5), 1e-6 * epsilon_of(1.0, NOISE, 1, 1e-5));
    tserver_stop(&t);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 10000x1x1 2", BIG_PARAMS, &id, &ei),
                 SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_latest(st, id, &cp, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cp.version, 1u);
    uint8_t acc[SHOAL_RDP_PACKED_MAX];
    shoal_dp_record dp;
    cr_assert_eq(shoal_state_dp_load(st, id, 1, acc, sizeof acc, &dp, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(dp.steps, 1u);
    shoal_state_close(st);

    /* What is left after the clipped sum over the expected count is the
     * noise: N(0, (z S / E)^2) per coordinate, independent. */
    const double sigma = NOISE * CLIP / EXPECTED;
    double sum = 0, sq = 0;
    for (int j = 0; j < BIG_PARAMS; j++) {
        double uploaded = 0;
        for (int i = 0; i < DEVICES; i++)
            uploaded += s[i].delta[j];
        const double noise = ((double)cp.params[j] - s[0].model[j]) - uploaded / EXPECTED;
        sum += noise;
        sq += noise * noise;
    }
    const double n = BIG_PARAMS, mean = sum / n;
    const double sd = sqrt((sq - n * mean * mean) / (n - 1));
    /* The sample stddev of 20,002 normals has a relative standard error of
     * 1 / sqrt(2 x 20002) = 0.5%: 3% is 6 standard errors, and so is
     * 6 sigma / sqrt(n) for the mean; each fails by chance with
     * probability below 2e-9. Dividing by the 3 reports instead of 4 would
     * move the mean by 0.002 / 12 (4.7 times the bound); weighting by
     * example counts, by far more. */
    cr_assert_leq(fabs(sd / sigma - 1.0), 0.03, "noise stddev %g, want %g", sd, sigma);
    cr_assert_leq(fabs(mean), 6.0 * sigma / sqrt(n), "noise mean %g (sigma %g)", mean, sigma);
    shoal_checkpoint_fini(&cp);
    for (int i = 0; i < DEVICES; i++) {
        free(s[i].delta);
        free(s[i].model);
    }
    tserver_cleanup(&t);
}

/* ---- the accountant across kill -9, and the budget ------------------------------ */

#define SMALL_DP(Z, EXTRA)                                                                         \
    "\"differential_privacy\": {\"noise_multiplier\": " Z ", \"clip\": 10" EXTRA "},"

/* One device's round, returning once the round is committed and
 * accounted (so the next device finds the next round open). */
static void one_round(const tserver *t, float base)
{
    double before = metric_value(t, DP_ROUNDS);
    session_plan s;
    fill(&s, t, "p", base, 5);
    run_sessions(&s, 1);
    cr_assert_eq(s.config_result, TDEV_ACCEPTED);
    cr_assert_eq(s.status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED);
    cr_assert_eq(wait_metric(t, DP_ROUNDS, before + 1), before + 1, "the round was accounted");
}

Test(dp, the_accountant_survives_kill_9_and_composes_on_after_the_restart, .timeout = 300)
{
    tserver t;
    char *pop =
        tpop_ex("p", "\"goal_count\": 1, \"over_selection\": 1.0", NULL, NULL, SMALL_DP("1.5", ""));
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);
    one_round(&t, 0.125f);
    one_round(&t, 0.25f);
    const double two = epsilon_of(1.0, 1.5, 2, 1e-5);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "), two,
                       two * 1e-6);
    int status = tserver_kill(&t, SIGKILL);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* The restarted server starts from the two rounds on disk. */
    tserver_spawn(&t);
    cr_assert_eq(metric_value(&t, "shoal_dp_rounds{population=\"p\"} "), 2.0);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "), two,
                       two * 1e-6);
    one_round(&t, 0.5f);
    const double three = epsilon_of(1.0, 1.5, 3, 1e-5);
    cr_assert_eq(metric_value(&t, "shoal_dp_rounds{population=\"p\"} "), 3.0);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "),
                       three, three * 1e-6);
    status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    tserver_cleanup(&t);
}

Test(dp, the_population_stops_after_the_rounds_its_budget_allows, .timeout = 300)
{
    /* q = 20 / 1000 and z = 0.8: the budget lies halfway between epsilon
     * after ALLOWED rounds and after one more. */
    enum { ALLOWED = 3 };
    const double q = 20.0 / 1000.0, z = 0.8;
    const double below = epsilon_of(q, z, ALLOWED, 1e-5),
                 above = epsilon_of(q, z, ALLOWED + 1, 1e-5);
    cr_assert_lt(below, above);
    char dp[256], round[160];
    snprintf(dp, sizeof dp,
             "\"differential_privacy\": {\"noise_multiplier\": %g, \"clip\": 10, "
             "\"expected_reports\": 20, \"budget_epsilon\": %.17g},",
             z, (below + above) / 2);
    snprintf(round, sizeof round,
             "\"goal_count\": 1, \"over_selection\": 1.0, \"population_estimate\": 1000");
    char *pop = tpop_ex("p", round, NULL, NULL, dp);
    tserver t;
    tserver_prepare(&t, pop);
    free(pop);
    tserver_start(&t);
    for (int r = 0; r < ALLOWED; r++) {
        cr_assert_eq(metric_value(&t, "shoal_dp_budget_exhausted{population=\"p\"} "), 0.0,
                     "before round %d", r + 1);
        one_round(&t, 0.125f * (float)(r + 1));
    }
    cr_assert_eq(metric_value(&t, DP_ROUNDS), (double)ALLOWED);
    cr_assert_eq(wait_metric(&t, "shoal_dp_budget_exhausted{population=\"p\"} ", 1.0), 1.0);
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "),
                       below, below * 1e-6);
    /* The next device is turned away with the reason and the longest
     * retry window, and no round starts. */
    session_plan s;
    fill(&s, &t, "p", 1.0f, 5);
    run_sessions(&s, 1);
    cr_assert_eq(s.config_result, TDEV_REJECTED);
    cr_assert_eq(s.reason, SHOAL__REASON__REASON_NO_TASK, "reason %d", s.reason);
    cr_assert_eq(s.retry_min_ms, 5000u);
    cr_assert_eq(s.retry_max_ms, 5000u);
    cr_assert_eq(metric_value(&t, "shoal_rounds_started_total{population=\"p\"} "),
                 (double)ALLOWED);
    tserver_stop(&t);
    /* The budget holds across a restart. */
    tserver_start(&t);
    fill(&s, &t, "p", 1.0f, 5);
    run_sessions(&s, 1);
    cr_assert_eq(s.config_result, TDEV_REJECTED);
    cr_assert_eq(metric_value(&t, "shoal_dp_budget_exhausted{population=\"p\"} "), 1.0);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

/* ---- DP-FTRL: the release is what the tree gives, across kill -9 --------------- */

/* N_t of the tree committed with `version`, in grid steps. */
static void committed_prefix_noise(shoal_state *st, int64_t id, uint64_t version, int64_t *steps,
                                   uint64_t *step_in_tree)
{
    uint8_t blob[SHOAL_RDP_PACKED_MAX];
    shoal_dp_record rec;
    shoal_errinfo ei = {0};
    shoal_dp_ftrl_state state;
    cr_assert_eq(shoal_state_dp_load(st, id, version, blob, sizeof blob, &rec, &ei), SHOAL_OK,
                 "version %llu: %s", (unsigned long long)version, ei.msg);
    cr_assert_eq(shoal_dp_ftrl_state_unpack(rec.accountant, rec.accountant_len, &state), SHOAL_OK);
    cr_assert_eq(rec.steps, version);
    cr_assert_eq(state.rounds, version);
    cr_assert_float_eq(state.rho, (double)version / 8.0, 1e-12);
    cr_assert_eq(shoal_dp_tree_current_steps(&state.tree, steps), SHOAL_OK);
    *step_in_tree = state.tree.step;
}

/* z = 2, S = 10, a tree every 2 rounds, k = 1: rho grows by 1/8 a round
 * while a tree's height grows (rounds 1 and 2 of each tree: heights 1
 * and 2), so after r rounds rho = r / 8. The budget lies between epsilon
 * after 5 and after 6 rounds. Rounds 1-3 run, the server is killed
 * (round 3 opened tree 2), and rounds 4-5 run on the restarted server:
 * round 4 must take away round 3's node, which only the committed tree
 * knows. Each round's change of the model is g / E x (the upload rounded
 * to the grid g = z S / 1024 + N_t - N_(t-1)), N from the committed trees
 * (N_(t-1) = 0 when round t opens a tree). */
Test(dp, ftrl_releases_what_the_committed_tree_gives_across_kill_9, .timeout = 300)
{
    enum { ROUNDS = 5 };
    const double z = 2.0, clip = 10.0, grid = z * clip / SHOAL_DP_NOISE_SIGMA;
    double eps5, eps6;
    cr_assert_eq(shoal_zcdp_epsilon(5.0 / 8.0, 1e-5, &eps5), SHOAL_OK);
    cr_assert_eq(shoal_zcdp_epsilon(6.0 / 8.0, 1e-5, &eps6), SHOAL_OK);
    char dp[256];
    snprintf(dp, sizeof dp,
             "\"differential_privacy\": {\"mechanism\": \"ftrl\", \"noise_multiplier\": %g, "
             "\"clip\": %g, \"restart_every\": 2, \"budget_epsilon\": %.17g},",
             z, clip, (eps5 + eps6) / 2);
    char *pop = tpop_ex("p", "\"goal_count\": 1, \"over_selection\": 1.0", NULL, NULL, dp);
    tserver t;
    tserver_prepare(&t, pop);
    free(pop);
    tserver_spawn(&t);
    session_plan s[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        if (r == 3) {
            int status = tserver_kill(&t, SIGKILL);
            cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
            tserver_spawn(&t);
            cr_assert_eq(metric_value(&t, DP_ROUNDS), 3.0);
            cr_assert_float_eq(metric_value(&t, "shoal_dp_rho{population=\"p\"} "), 3.0 / 8.0,
                               1e-12);
        }
        double before = metric_value(&t, DP_ROUNDS);
        /* Norm 0.1 (r + 1) x sqrt(385) <= 9.9: within the clip. */
        fill(&s[r], &t, "p", 0.1f * (float)(r + 1), 5);
        run_sessions(&s[r], 1);
        cr_assert_eq(s[r].status, SHOAL__REPORT_STATUS__REPORT_STATUS_ACCEPTED, "round %d", r + 1);
        cr_assert_eq(wait_metric(&t, DP_ROUNDS, before + 1), before + 1);
        cr_assert_float_eq(metric_value(&t, "shoal_dp_rho{population=\"p\"} "), (r + 1) / 8.0,
                           1e-12, "round %d", r + 1);
    }
    cr_assert_float_eq(metric_value(&t, "shoal_dp_epsilon{population=\"p\",delta=\"1e-05\"} "),
                       eps5, eps5 * 1e-9);
    cr_assert_eq(wait_metric(&t, "shoal_dp_budget_exhausted{population=\"p\"} ", 1.0), 1.0);
    int status = tserver_kill(&t, SIGTERM);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);

    shoal_state *st = NULL;
    shoal_errinfo ei = {0};
    int64_t id;
    shoal_checkpoint cp;
    cr_assert_eq(shoal_state_open(t.state, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_state_population(st, "p", "logreg 1x2x2 2", PARAMS, &id, &ei), SHOAL_OK,
                 "%s", ei.msg);
    cr_assert_eq(shoal_state_latest(st, id, &cp, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(cp.version, (uint64_t)ROUNDS);
    int64_t prev[PARAMS] = {0}, now[PARAMS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t step = 0;
        committed_prefix_noise(st, id, (uint64_t)r + 1, now, &step);
        cr_assert_eq(step, (uint64_t)(r % 2 + 1), "round %d's place in its tree", r + 1);
        if (step == 1)
            memset(prev, 0, sizeof prev);
        /* The model after round r + 1: the next session's download, or the
         * last checkpoint. */
        const float *after = r + 1 < ROUNDS ? s[r + 1].model : cp.params;
        for (int j = 0; j < PARAMS; j++) {
            double upload = nearbyint((double)s[r].delta[j] / grid);
            double want = (upload + (double)(now[j] - prev[j])) * grid; /* E = 1 */
            double got = (double)after[j] - (double)s[r].model[j];
            cr_assert(fabs(got - want) < grid / 100,
                      "round %d coordinate %d: %.9g, the tree "
                      "gives %.9g",
                      r + 1, j, got, want);
        }
        memcpy(prev, now, sizeof prev);
    }
    shoal_checkpoint_fini(&cp);
    shoal_state_close(st);
    tserver_cleanup(&t);
}
