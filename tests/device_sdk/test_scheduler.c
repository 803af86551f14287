/* Several populations on one device (shoal/scheduler.h) against the real
 * shoal-server in process: sessions alternate, each population's retry
 * window holds (in memory, and across schedulers through the state
 * database), and a session never starts while another runs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_util.h"
#include "shoal/scheduler.h"

#define ROUND "\"goal_count\": 1, \"over_selection\": 1.0, \"pipelining\": false"

static void start_two(tserver *t)
{
    char *a = tpop("a", ROUND, NULL), *b = tpop("b", ROUND, NULL);
    char both[8192];
    snprintf(both, sizeof both, "%s, %s", a, b);
    free(a);
    free(b);
    tserver_prepare(t, both);
    tserver_start(t);
}

/* Population b's trainer: tries to start another session from inside its
 * own, then sends a zero delta. */
typedef struct reentry {
    shoal_scheduler *sched;
    shoal_err nested;
    int calls;
} reentry;

static shoal_err nesting_trainer(void *ctx, const float *weights, size_t count,
                                 const shoal_plan_info *plan, shoal_example_iter *it,
                                 float *delta_out, shoal_train_metrics *metrics_out)
{
    reentry *re = ctx;
    (void)weights;
    (void)plan;
    (void)it;
    re->calls++;
    shoal_scheduler_result nested;
    re->nested = shoal_scheduler_run_next(re->sched, &nested);
    memset(delta_out, 0, count * sizeof *delta_out);
    metrics_out->example_count = shoal_example_iter_size(it);
    return SHOAL_OK;
}

static int64_t wall_now(sdk_dev *d)
{
    return d->tp.wall_ms + d->tp.monotonic_ms;
}

Test(device_sdk_scheduler, alternates_populations_honours_windows_and_never_overlaps_sessions)
{
    tserver t;
    start_two(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "a");
    sdk_make_store(d.store, "b");
    sdk_sent sent = {0};
    sdk_observer obs[2] = {{.sent = &sent, .tag = 0}, {.sent = &sent, .tag = 1}};
    reentry re = {0};
    shoal_client_config cfgs[2] = {d.cfg, d.cfg};
    cfgs[0].population = "a";
    cfgs[1].population = "b";
    for (int i = 0; i < 2; i++) {
        cfgs[i].observe_send = sdk_observe;
        cfgs[i].observe_ctx = &obs[i];
    }
    cfgs[1].trainer = (shoal_client_trainer){.train = nesting_trainer, .ctx = &re};
    shoal_scheduler *sched = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_scheduler_new(cfgs, 2, &d.port, &sched, &ei), SHOAL_OK, "%s", ei.msg);
    re.sched = sched;

    /* Both due at once: a first (order), then b (it ran least recently). */
    shoal_scheduler_result r;
    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_OK);
    cr_assert(r.ran);
    cr_assert_eq(r.index, 0u);
    cr_assert_str_eq(r.population, "a");
    cr_assert_eq(r.session.outcome, SHOAL_SESSION_TRAINED, "%s", r.session.errinfo.msg);
    cr_assert_eq(r.next_index, 1u);
    cr_assert_leq(r.next_due_unix_ms, wall_now(&d));
    int64_t a_next = r.session.next_checkin_unix_ms;

    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_OK);
    cr_assert(r.ran);
    cr_assert_str_eq(r.population, "b");
    cr_assert_eq(r.session.outcome, SHOAL_SESSION_TRAINED, "%s", r.session.errinfo.msg);
    cr_assert_eq(re.calls, 1);
    cr_assert_eq(re.nested, SHOAL_ESTATE, "a session started inside another: %s",
                 shoal_strerror(re.nested));
    int64_t b_next = r.session.next_checkin_unix_ms;
    cr_assert_eq(r.next_index, 0u);
    cr_assert_eq(r.next_due_unix_ms, a_next);

    /* Both inside their retry windows: nothing runs, nothing connects. */
    unsigned connects = d.tp.connects;
    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_EAGAIN);
    cr_assert_eq(r.ran, 0);
    cr_assert_eq(d.tp.connects, connects);
    int64_t first_due = a_next < b_next ? a_next : b_next;
    size_t first = a_next <= b_next ? 0 : 1;
    cr_assert_eq(r.next_due_unix_ms, first_due);
    cr_assert_eq(r.next_index, first);

    /* At the earlier window's time, exactly that population runs; the
     * other's window still holds. */
    d.tp.monotonic_ms += first_due - wall_now(&d);
    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_OK);
    cr_assert(r.ran);
    cr_assert_eq(r.index, first);
    cr_assert_eq(r.session.outcome, SHOAL_SESSION_TRAINED, "%s", r.session.errinfo.msg);
    cr_assert_eq(r.session.round, 2u);
    int64_t other_due = first ? a_next : b_next;
    if (other_due > wall_now(&d) + 1) {
        cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_EAGAIN);
        cr_assert_eq(r.next_index, 1 - first);
        d.tp.monotonic_ms += r.next_due_unix_ms - wall_now(&d);
    }
    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_OK);
    cr_assert_eq(r.index, 1 - first);
    cr_assert_eq(r.session.outcome, SHOAL_SESSION_TRAINED, "%s", r.session.errinfo.msg);

    /* Never two at once: the messages of one session are contiguous, and
     * the sender changes only at a CheckIn. Four sessions: four runs. */
    unsigned switches = 0, checkins = 0;
    for (unsigned k = 0; k < sent.count; k++) {
        checkins += sent.bodies[k] == SHOAL__ENVELOPE__BODY_CHECK_IN;
        if (k && sent.tags[k] != sent.tags[k - 1]) {
            switches++;
            cr_assert_eq(sent.bodies[k], SHOAL__ENVELOPE__BODY_CHECK_IN,
                         "message %u of population %d came inside another session", k,
                         sent.tags[k]);
        }
    }
    cr_assert_eq(checkins, 4u);
    cr_assert_geq(switches, 2u);
    shoal_scheduler_free(sched);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_scheduler, persisted_retry_windows_hold_in_a_new_scheduler)
{
    tserver t;
    start_two(&t);
    sdk_dev d;
    sdk_dev_init(&d, &t);
    sdk_make_store(d.store, "a");
    sdk_make_store(d.store, "b");
    char state[256];
    snprintf(state, sizeof state, "%s/device-state.db", t.dir);
    shoal_client_config cfgs[2] = {d.cfg, d.cfg};
    cfgs[0].population = "a";
    cfgs[1].population = "b";
    cfgs[0].state_path = cfgs[1].state_path = state;
    shoal_scheduler *sched = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_scheduler_new(cfgs, 2, &d.port, &sched, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_scheduler_result r;
    int64_t next[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_OK);
        cr_assert_eq(r.index, (size_t)i);
        cr_assert_eq(r.session.outcome, SHOAL_SESSION_TRAINED, "%s", r.session.errinfo.msg);
        next[i] = r.session.next_checkin_unix_ms;
    }
    shoal_scheduler_free(sched);

    /* A new scheduler (as after a restart) knows nothing in memory: the
     * state database's windows decide. */
    cr_assert_eq(shoal_scheduler_new(cfgs, 2, &d.port, &sched, &ei), SHOAL_OK, "%s", ei.msg);
    unsigned connects = d.tp.connects;
    cr_assert_eq(shoal_scheduler_run_next(sched, &r), SHOAL_EAGAIN);
    size_t first = next[0] <= next[1] ? 0 : 1;
    cr_assert_eq(r.next_index, first);
    cr_assert_eq(r.next_due_unix_ms, next[first]);
    cr_assert_eq(d.tp.connects, connects);
    int64_t due = 0;
    size_t index = 9;
    cr_assert_eq(shoal_scheduler_next_due(sched, &due, &index), SHOAL_OK);
    cr_assert_eq(due, next[first]);
    cr_assert_eq(index, first);
    shoal_scheduler_free(sched);
    sdk_dev_fini(&d);
    tserver_stop(&t);
    tserver_cleanup(&t);
}

Test(device_sdk_scheduler, a_population_named_twice_is_refused)
{
    shoal_client_config cfg = {.host = "127.0.0.1",
                               .port = 1,
                               .ca_pem = "x",
                               .population = "a",
                               .auth_token = (const uint8_t *)"t",
                               .store_path = "/nonexistent/examples.db"};
    shoal_client_config cfgs[2] = {cfg, cfg};
    shoal_test_port tp;
    shoal_port port;
    shoal_test_port_init(&tp);
    shoal_test_port_bind(&tp, &port);
    shoal_scheduler *sched = (shoal_scheduler *)&tp;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_scheduler_new(cfgs, 2, &port, &sched, &ei), SHOAL_EINVAL);
    cr_assert_null(sched);
    cr_assert_not_null(strstr(ei.msg, "\"a\""), "%s", ei.msg);
    cr_assert_eq(shoal_scheduler_new(cfgs, 0, &port, &sched, &ei), SHOAL_EINVAL);
    shoal_scheduler_result r;
    cr_assert_eq(shoal_scheduler_run_next(NULL, &r), SHOAL_EINVAL);
    cr_assert_null(shoal_scheduler_client(NULL, 0));
    shoal_test_port_fini(&tp);
}
