#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "population_int.h"
#include "shoal/dataset.h"
#include "shoal/sim.h"

/* A tenth of Fashion-MNIST keeps these runs to seconds. */
static shoal_dataset *train_set, *test_set;

static shoal_dataset *head(const shoal_dataset *d, size_t n)
{
    shoal_dataset *h = NULL;
    cr_assert_eq(shoal_dataset_new(n, d->shape, d->classes, &h), SHOAL_OK);
    memcpy(h->x, d->x, n * d->features * sizeof(float));
    memcpy(h->y, d->y, n * sizeof(int32_t));
    return h;
}

static void load(void)
{
    shoal_dataset *tr = NULL, *te = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_load_fashion_mnist(NULL, 1, &tr, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_dataset_load_fashion_mnist(NULL, 0, &te, &ei), SHOAL_OK, "%s", ei.msg);
    float mean, sd;
    shoal_dataset_stats(tr, &mean, &sd);
    cr_assert_eq(shoal_dataset_normalize(tr, mean, sd), SHOAL_OK);
    cr_assert_eq(shoal_dataset_normalize(te, mean, sd), SHOAL_OK);
    train_set = head(tr, 6000);
    test_set = head(te, 2000);
    shoal_dataset_free(tr);
    shoal_dataset_free(te);
}

static void unload(void)
{
    shoal_dataset_free(train_set);
    shoal_dataset_free(test_set);
}

TestSuite(sim, .init = load, .fini = unload, .timeout = 600);

static shoal_sim_config small(void)
{
    shoal_sim_config c = shoal_sim_defaults();
    c.model = SHOAL_MODEL_LOGREG;
    c.clients = 30;
    c.round = shoal_round_defaults(SHOAL_ROUND_SYNC, 5);
    c.round.selection_window_ms = 60000;
    c.round.reporting_deadline_ms = 3600000;
    c.round.retry_min_ms = 60000;
    c.round.retry_max_ms = 3600000;
    c.rounds = 8;
    c.train.epochs = 1;
    c.train.batch = 20;
    c.train.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.05f);
    c.avail_hours = 24;
    c.dropout = 0;
    return c;
}

struct rows {
    shoal_sim_round r[64];
    int n;
};

static void collect(void *ctx, const shoal_sim_round *row)
{
    struct rows *rows = ctx;
    if (rows->n < 64)
        rows->r[rows->n++] = *row;
}

static shoal_sim_result run(const shoal_sim_config *c, struct rows *rows)
{
    shoal_sim_result res;
    shoal_errinfo ei = {{0}};
    shoal_err err =
        shoal_sim_run_on(c, train_set, test_set, rows ? collect : NULL, rows, 0.0, &res, &ei);
    cr_assert_eq(err, SHOAL_OK, "%s: %s", shoal_strerror(err), ei.msg);
    return res;
}

Test(sim, sync_fedavg_learns_far_above_chance)
{
    shoal_sim_config c = small();
    struct rows rows = {0};
    shoal_sim_result res = run(&c, &rows);
    cr_assert_eq(res.rounds_committed, 8);
    cr_assert_eq(rows.n, 8);
    cr_assert_gt(res.final_test_accuracy, 0.6, "accuracy %.4f", res.final_test_accuracy);
    cr_assert_gt(rows.r[7].test_accuracy, rows.r[0].test_accuracy);
    for (int i = 0; i < rows.n; i++) {
        cr_assert_geq(rows.r[i].reported, 4, "round %d: minimum is ceil(5 * 0.8)", i);
        cr_assert_leq(rows.r[i].selected, 7, "target ceil(5 * 1.3) = 7");
        if (i)
            cr_assert_geq(rows.r[i].sim_time_s, rows.r[i - 1].sim_time_s);
    }
    /* Bytes: every configured device downloaded the 7850-float model. */
    cr_assert_eq(res.bytes_down, res.sessions * 7850 * 4);
}

Test(sim, same_seed_same_run_whatever_the_thread_count)
{
    shoal_sim_config c = small();
    c.partition = shoal_partition_defaults(SHOAL_PARTITION_DIRICHLET);
    c.dropout = 0.1;
    c.avail_hours = 8;
    c.rounds = 4;
    struct rows a = {0}, b = {0}, d = {0};
    shoal_sim_result ra = run(&c, &a);
    c.threads = 2;
    shoal_sim_result rb = run(&c, &b);
    cr_assert_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        cr_assert_eq(a.r[i].sim_time_s, b.r[i].sim_time_s);
        cr_assert_eq(a.r[i].reported, b.r[i].reported);
        cr_assert_eq(memcmp(&a.r[i].test_accuracy, &b.r[i].test_accuracy, sizeof(double)), 0);
        cr_assert_eq(memcmp(&a.r[i].train_loss, &b.r[i].train_loss, sizeof(double)), 0);
    }
    cr_assert_eq(ra.final_test_accuracy, rb.final_test_accuracy);
    c.seed = 2;
    shoal_sim_result rd = run(&c, &d);
    cr_assert(rd.final_test_accuracy != ra.final_test_accuracy ||
                  d.r[0].sim_time_s != a.r[0].sim_time_s,
              "another seed gives another run");
}

Test(sim, identical_devices_finishing_together_give_the_same_run_on_any_thread_count)
{
    /* speed-sigma 0: every device takes exactly as long, so many reports
     * fall due at the same instant; the trained set must not depend on
     * the thread count. */
    shoal_sim_config c = small();
    c.clients = 10;
    c.round.goal_count = 10;
    c.round.over_selection = 1.0f;
    c.speed_sigma = 0;
    c.rounds = 2;
    struct rows a = {0}, b = {0};
    run(&c, &a);
    c.threads = 3;
    run(&c, &b);
    for (int i = 0; i < a.n; i++)
        cr_assert_eq(memcmp(&a.r[i].test_accuracy, &b.r[i].test_accuracy, sizeof(double)), 0,
                     "round %d: %.6f vs %.6f", i, a.r[i].test_accuracy, b.r[i].test_accuracy);
}

Test(sim, async_fedbuff_learns_and_counts_server_steps)
{
    shoal_sim_config c = small();
    c.round = shoal_round_defaults(SHOAL_ROUND_ASYNC, 6);
    c.round.buffer_size = 3;
    c.round.reporting_deadline_ms = 3600000;
    c.round.retry_min_ms = 60000;
    c.round.retry_max_ms = 3600000;
    c.rounds = 12;
    struct rows rows = {0};
    shoal_sim_result res = run(&c, &rows);
    cr_assert_eq(res.rounds_committed, 12);
    for (int i = 0; i < rows.n; i++)
        cr_assert_eq(rows.r[i].reported, 3, "each step folds buffer_size reports");
    cr_assert_gt(res.final_test_accuracy, 0.6, "accuracy %.4f", res.final_test_accuracy);
}

Test(sim, dropouts_and_availability_are_survived_and_counted)
{
    shoal_sim_config c = small();
    c.dropout = 0.3;
    c.avail_hours = 6;
    c.rounds = 5;
    shoal_sim_result res = run(&c, NULL);
    cr_assert_eq(res.rounds_committed, 5);
    cr_assert_gt(res.dropouts, 0);
    cr_assert_gt(res.final_test_accuracy, 0.5);
}

Test(sim, federated_evaluation_tracks_the_test_accuracy)
{
    shoal_sim_config c = small();
    c.round.eval_every = 2;
    c.round.eval_goal_count = 10;
    struct rows rows = {0};
    shoal_sim_result res = run(&c, &rows);
    cr_assert(!isnan(res.fed_eval_accuracy), "an evaluation completed");
    /* Devices evaluate on their own (training) examples: close to the
     * central test accuracy for an iid split. */
    cr_assert_float_eq(res.fed_eval_accuracy, res.final_test_accuracy, 0.1);
}

Test(sim, bad_configurations_are_refused_with_the_field_named)
{
    shoal_sim_config c = small();
    shoal_errinfo ei;
    c.round.goal_count = 40; /* more than 30 clients */
    cr_assert_eq(shoal_sim_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "clients-per-round"), "%s", ei.msg);
    c = small();
    c.dropout = 1.0;
    cr_assert_eq(shoal_sim_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "dropout"));
    c = small();
    c.train.optim.lr = 0;
    cr_assert_eq(shoal_sim_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "lr"));
    c = small();
    c.round.mode = SHOAL_ROUND_ASYNC;
    c.round.buffer_size = 100;
    cr_assert_eq(shoal_sim_config_check(&c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "buffer-size"));
    c = small();
    c.partition.alpha = -1;
    c.partition.kind = SHOAL_PARTITION_DIRICHLET;
    shoal_sim_result res;
    cr_assert_eq(shoal_sim_run_on(&c, train_set, test_set, NULL, NULL, 0, &res, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "alpha"), "%s", ei.msg);
}

Test(sim, devices_that_are_never_available_long_enough_end_with_a_clear_error)
{
    shoal_sim_config c = small();
    c.avail_hours = 0.001;   /* a few seconds a day */
    c.compute_mflops = 0.01; /* and very slow */
    c.max_sim_hours = 48;
    shoal_sim_result res;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_sim_run_on(&c, train_set, test_set, NULL, NULL, 0, &res, &ei),
                 SHOAL_ETIMEDOUT);
    cr_assert_not_null(strstr(ei.msg, "no round committed"), "%s", ei.msg);
}

Test(population, windows_contain_or_follow_now_and_repeat_daily)
{
    shoal_sim_config c = shoal_sim_defaults();
    c.avail_hours = 8;
    c.avail_extra = 0;
    for (uint32_t d = 0; d < 200; d++) {
        struct device_traits t;
        shoal_sim_device_traits(&c, d, &t);
        cr_assert(t.speed_mflops > 0 && t.bandwidth_kbps > 0);
        int64_t now = (int64_t)d * 7919 * 1000;
        int64_t s, e;
        shoal_sim_device_window(&c, d, &t, now, &s, &e);
        cr_assert_lt(s, e);
        cr_assert_lt(now, e, "the window has not ended");
        cr_assert_leq(s - now, SIM_DAY_MS + 3 * 3600 * 1000, "next window within a day");
        /* 8 h +- 25% */
        cr_assert_leq(e - s, (int64_t)(10.0 * 3600 * 1000) + 1);
        /* The same question gives the same answer. */
        int64_t s2, e2;
        shoal_sim_device_window(&c, d, &t, now, &s2, &e2);
        cr_assert_eq(s, s2);
        cr_assert_eq(e, e2);
        /* Just after the window ends the next one starts later. */
        int64_t s3, e3;
        shoal_sim_device_window(&c, d, &t, e, &s3, &e3);
        cr_assert_geq(s3, e);
    }
}

Test(population, always_available_and_session_time_follows_flops_and_bytes)
{
    shoal_sim_config c = shoal_sim_defaults();
    c.avail_hours = 24;
    c.train.epochs = 2;
    struct device_traits t = {.tz_offset_ms = 0, .speed_mflops = 1000, .bandwidth_kbps = 8000};
    int64_t s, e;
    shoal_sim_device_window(&c, 3, &t, 12345, &s, &e);
    cr_assert_eq(s, 12345);
    cr_assert_eq(e, INT64_MAX);
    /* 1 MB down and up at 8 Mbit/s = 2 s; 2 * 1e6 MACs * 100 examples * 3 * 2
     * epochs / 1e9 = 1.2 s. */
    int64_t ms = shoal_sim_session_ms(&c, &t, 1000000, 1000000, 100, 1);
    cr_assert(ms >= 3200 && ms <= 3202, "%lld ms", (long long)ms);
}
