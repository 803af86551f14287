/* Shared by the trainer and scheduler tests: one SDK device (the POSIX
 * port under the test port) against the in-process server, its example
 * store, and a recorder of the protocol messages it sends. */
#ifndef SHOAL_TEST_SDK_UTIL_H
#define SHOAL_TEST_SDK_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "shoal/client.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"

#define SDK_EXAMPLES 300
#define SDK_PARAMS   10

typedef struct sdk_dev {
    shoal_port posix;
    shoal_test_port tp;
    shoal_port port;
    shoal_client_config cfg;
    char store[256];
    char *ca;
} sdk_dev;

/* The examples make_store writes (collection-independent). */
void sdk_examples(float x[SDK_EXAMPLES][4], int32_t y[SDK_EXAMPLES]);
void sdk_make_store(const char *path, const char *collection);
/* Population "p", charging required, polled before every batch. */
void sdk_dev_init(sdk_dev *d, const tserver *t);
void sdk_dev_fini(sdk_dev *d);
/* A client for d (asserting it is made) after one shoal_client_run into
 * *r; the caller frees it. */
shoal_client *sdk_run_session(sdk_dev *d, shoal_session_result *r);

/* What observe_send saw: the body case of each Envelope, the population
 * named in each CheckIn, and the outcome of each Report. */
typedef struct sdk_sent {
    int bodies[256];
    int tags[256]; /* the observe ctx tag of each message */
    unsigned count;
    int report_outcome; /* last Report's outcome; 0 none */
    unsigned report_chunks;
} sdk_sent;

typedef struct sdk_observer {
    sdk_sent *sent;
    int tag;
} sdk_observer;

void sdk_observe(void *ctx, const uint8_t *message, size_t len);

/* A whole file as a NUL-terminated string (malloc'd); asserts it reads. */
char *sdk_read_text(const char *path);
void sdk_sleep_ms(int ms);

#endif
