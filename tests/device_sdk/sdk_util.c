#include "sdk_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal.pb-c.h"
#include "shoal/rng.h"
#include "shoal/store.h"

void sdk_examples(float x[SDK_EXAMPLES][4], int32_t y[SDK_EXAMPLES])
{
    shoal_rng rng;
    shoal_rng_seed(&rng, 2024);
    for (int i = 0; i < SDK_EXAMPLES; i++) {
        for (int j = 0; j < 4; j++)
            x[i][j] = (float)shoal_rng_normal(&rng) + 0.123456f * (float)(j + 1);
        y[i] = x[i][0] + x[i][1] > x[i][2] + x[i][3];
    }
}

void sdk_make_store(const char *path, const char *collection)
{
    static float x[SDK_EXAMPLES][4];
    static int32_t y[SDK_EXAMPLES];
    sdk_examples(x, y);
    shoal_store *st = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_store_open(path, NULL, &st, &ei), SHOAL_OK, "%s", ei.msg);
    static shoal_example ex[SDK_EXAMPLES];
    memset(ex, 0, sizeof ex);
    for (int i = 0; i < SDK_EXAMPLES; i++) {
        ex[i].features = x[i];
        ex[i].feature_count = 4;
        ex[i].label = y[i];
        ex[i].timestamp_ms = 1767225600000 + i;
    }
    cr_assert_eq(
        shoal_store_add_batch(st, collection, ex, SDK_EXAMPLES, 1767225600000 + SDK_EXAMPLES, &ei),
        SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
}

char *sdk_read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

void sdk_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

shoal_client *sdk_run_session(sdk_dev *d, shoal_session_result *r)
{
    shoal_client *client = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(&d->cfg, &d->port, &client, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_client_run(client, r), SHOAL_OK);
    return client;
}

void sdk_dev_init(sdk_dev *d, const tserver *t)
{
    memset(d, 0, sizeof *d);
    shoal_errinfo ei = {0};
    shoal_posix_port_config pc = {
        .power_supply_dir = "", .battery_percent = -1, .charging = -1, .idle = -1};
    cr_assert_eq(shoal_posix_port_init(&pc, &d->posix, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_test_port_init(&d->tp);
    d->tp.transport = &d->posix;
    shoal_test_port_bind(&d->tp, &d->port);
    snprintf(d->store, sizeof d->store, "%s/examples.db", t->dir);
    d->ca = sdk_read_text(t->cert);
    d->cfg = (shoal_client_config){.host = "127.0.0.1",
                                   .port = t->endpoint.port,
                                   .server_name = "localhost",
                                   .ca_pem = d->ca,
                                   .population = "p",
                                   .auth_token = (const uint8_t *)TEST_SECRET,
                                   .store_path = d->store,
                                   .io_timeout_ms = 10000,
                                   .train_seed = 42,
                                   .policy = {.require_charging = 1, .poll_interval_ms = -1}};
}

void sdk_dev_fini(sdk_dev *d)
{
    shoal_test_port_fini(&d->tp);
    shoal_posix_port_fini(&d->posix);
    free(d->ca);
}

void sdk_observe(void *ctx, const uint8_t *message, size_t len)
{
    sdk_observer *o = ctx;
    sdk_sent *s = o->sent;
    Shoal__Envelope *env = shoal__envelope__unpack(NULL, len, message);
    cr_assert_not_null(env, "the client sent a message that is not an Envelope");
    if (s->count < 256) {
        s->bodies[s->count] = env->body_case;
        s->tags[s->count] = o->tag;
        s->count++;
    }
    if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT)
        s->report_outcome = env->report->outcome;
    if (env->body_case == SHOAL__ENVELOPE__BODY_REPORT_CHUNK)
        s->report_chunks++;
    shoal__envelope__free_unpacked(env, NULL);
}
