/* A shoal_net under test: its handlers record what happened, an echo
 * worker thread answers messages through shoal_net_send, and
 * shoal_net_run runs on its own thread. Helpers assert with Criterion, so
 * call them from the test's thread only. */
#ifndef SHOAL_TEST_NET_HARNESS_H
#define SHOAL_TEST_NET_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "client.h"
#include "shoal/net.h"

#define TH_MAX_IDS 1024

typedef struct th_item {
    struct th_item *next;
    shoal_conn_id id;
    uint8_t *bytes;
    size_t len;
} th_item;

typedef struct th_server {
    int initialized;
    shoal_net *net;
    shoal_net_config cfg;
    uint16_t port;
    char dir[64];
    char cert[128];
    char key[128];
    tc_tls tls; /* what a client needs to trust this server */

    pthread_t run_thread;
    int running;
    shoal_err run_result;
    int run_done;
    struct timespec run_done_at;

    pthread_mutex_t mu;
    pthread_cond_t cv;

    /* Behaviour. */
    int refuse_open;     /* on_open says no */
    int reject_messages; /* on_message says no */
    int burst;           /* on_message sends this many copies itself */
    int echo;            /* the worker thread echoes every message */

    /* What happened (under mu). */
    shoal_conn_id opened[TH_MAX_IDS];
    size_t n_opened;
    shoal_conn_id closed[TH_MAX_IDS];
    size_t n_closed;
    char last_peer[64];
    shoal_err burst_results[16];
    size_t n_burst;
    size_t n_messages;
    size_t n_held; /* on_held calls */
    size_t echo_failures;

    th_item *queue_head, *queue_tail;
    pthread_t worker;
    int worker_quit;

    shoal_net_stats final_stats; /* taken by th_stop after run returned */

    uint8_t *model; /* body served at /model */
    size_t model_len;
} th_server;

/* Generates a self-signed P-256 certificate for "localhost" with the openssl
 * command line tool in a new temporary directory. */
void th_make_certs(th_server *s);
/* Test defaults: 127.0.0.1, port 0, generous limits; TLS on when tls. */
void th_init(th_server *s, int tls);
/* shoal_net_new, then shoal_net_run on a thread. */
void th_start(th_server *s);
/* shoal_net_stop, waits (bounded) for run to return, frees; checks that
 * on_close ran exactly once for every id on_open accepted. */
void th_stop(th_server *s);
/* Removes the temporary directory and frees the harness. */
void th_fini(th_server *s);

/* Wait (up to timeout_ms) until at least n sessions opened / closed, or
 * run returned. Return 1 if the condition held in time. */
int th_wait_opened(th_server *s, size_t n, int timeout_ms);
int th_wait_closed(th_server *s, size_t n, int timeout_ms);
int th_wait_run_done(th_server *s, int timeout_ms);
/* Polls the stats until connections == n. */
int th_wait_connections(th_server *s, uint64_t n, int timeout_ms);
shoal_conn_id th_opened_id(th_server *s, size_t index);

double th_ms_between(const struct timespec *a, const struct timespec *b);

#endif
