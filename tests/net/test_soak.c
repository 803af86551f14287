/* Soak: 200 TLS sessions open at once, each exchanging a few messages with
 * the echo handler, from four client threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "harness.h"

enum { THREADS = 4, PER_THREAD = 50, MESSAGES = 4 };

static th_server S;

typedef struct soak_worker {
    int index;
    pthread_barrier_t *opened;  /* all sessions open before any traffic */
    pthread_barrier_t *checked; /* the test thread has looked at the stats */
    tclient clients[PER_THREAD];
    int failed;
    char error[600];
} soak_worker;

/* No Criterion asserts off the test's thread: failures are recorded. */
static int soak_fail(soak_worker *w, int conn, const char *what, const tclient *c)
{
    if (!w->failed)
        snprintf(w->error, sizeof w->error, "thread %d, connection %d: %s: %s", w->index, conn,
                 what, c ? c->error : "");
    w->failed = 1;
    return -1;
}

static void message_for(uint8_t *buf, size_t len, int thread, int conn, int seq)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(thread * 31 + conn * 7 + seq * 3 + (int)i);
}

static size_t length_for(int conn, int seq)
{
    return 16 + (size_t)((conn * 131 + seq * 977) % 20000);
}

static void exchange(soak_worker *w)
{
    uint8_t want[20016];
    for (int seq = 0; seq < MESSAGES && !w->failed; seq++) {
        for (int i = 0; i < PER_THREAD; i++) {
            size_t len = length_for(i, seq);
            message_for(want, len, w->index, i, seq);
            if (tc_ws_send(&w->clients[i], want, len) != SHOAL_OK) {
                soak_fail(w, i, "send", &w->clients[i]);
                return;
            }
        }
        for (int i = 0; i < PER_THREAD; i++) {
            size_t len = length_for(i, seq);
            message_for(want, len, w->index, i, seq);
            tc_event ev;
            shoal_err err = tc_ws_next(&w->clients[i], &ev);
            if (err != SHOAL_OK) {
                soak_fail(w, i, shoal_err_name(err), &w->clients[i]);
                return;
            }
            int ok = ev.kind == SHOAL_WS_EVENT_BINARY && ev.len == len &&
                     memcmp(ev.data, want, len) == 0;
            free(ev.data);
            if (!ok) {
                soak_fail(w, i, "echo differs from what was sent", NULL);
                return;
            }
        }
    }
    for (int i = 0; i < PER_THREAD && !w->failed; i++) {
        if (tc_ws_close(&w->clients[i], 1000, "done") != SHOAL_OK)
            soak_fail(w, i, "close", &w->clients[i]);
    }
    for (int i = 0; i < PER_THREAD && !w->failed; i++) {
        tc_event ev;
        if (tc_ws_next(&w->clients[i], &ev) != SHOAL_OK || ev.kind != SHOAL_WS_EVENT_CLOSE)
            soak_fail(w, i, "expected the server's Close", &w->clients[i]);
        else
            free(ev.data);
    }
}

static void *soak_thread(void *arg)
{
    soak_worker *w = arg;
    int opened = 0;
    for (; opened < PER_THREAD; opened++) {
        if (tc_session(&w->clients[opened], S.port, &S.tls, 0) != SHOAL_OK) {
            soak_fail(w, opened, "open", &w->clients[opened]);
            break;
        }
    }
    pthread_barrier_wait(w->opened);
    pthread_barrier_wait(w->checked);
    if (!w->failed)
        exchange(w);
    for (int i = 0; i < PER_THREAD; i++)
        tc_close(&w->clients[i]);
    return NULL;
}

static void teardown(void)
{
    th_fini(&S);
}

Test(net_soak, two_hundred_sessions_exchange_messages, .fini = teardown, .timeout = 180)
{
    th_init(&S, 1);
    S.cfg.max_connections = THREADS * PER_THREAD;
    th_start(&S);

    pthread_barrier_t opened, checked;
    cr_assert_eq(pthread_barrier_init(&opened, NULL, THREADS + 1), 0);
    cr_assert_eq(pthread_barrier_init(&checked, NULL, THREADS + 1), 0);
    soak_worker *w = calloc(THREADS, sizeof *w);
    cr_assert_not_null(w);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].index = i;
        w[i].opened = &opened;
        w[i].checked = &checked;
        cr_assert_eq(pthread_create(&t[i], NULL, soak_thread, &w[i]), 0);
    }
    pthread_barrier_wait(&opened);
    int opened_all = th_wait_opened(&S, THREADS * PER_THREAD, 10000);
    shoal_net_stats st;
    shoal_net_get_stats(S.net, &st);
    pthread_barrier_wait(&checked);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        cr_assert(!w[i].failed, "%s", w[i].error);
    free(w);
    pthread_barrier_destroy(&opened);
    pthread_barrier_destroy(&checked);

    cr_assert(opened_all, "only %zu of %d sessions opened", S.n_opened, THREADS * PER_THREAD);
    cr_assert_eq(st.connections, THREADS * PER_THREAD, "%llu connections open at the peak",
                 (unsigned long long)st.connections);
    cr_assert(th_wait_closed(&S, THREADS * PER_THREAD, 10000), "%zu sessions closed", S.n_closed);
    th_stop(&S);
    cr_assert_eq(S.n_messages, (size_t)THREADS * PER_THREAD * MESSAGES);
    cr_assert_eq(S.echo_failures, 0);
    cr_assert_eq(S.final_stats.refused_total, 0);
    cr_assert_eq(S.final_stats.accepted_total, THREADS * PER_THREAD);
}
