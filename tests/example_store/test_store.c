#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/store.h"

static char dir[256], db_path[300];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/shoal-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(db_path, sizeof db_path, "%s/examples.db", dir);
}

static void remove_dir(void)
{
    shoal_failalloc_uninstall();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(example_store, .init = make_dir, .fini = remove_dir);

static const uint8_t key_a[SHOAL_STORE_KEY_BYTES] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[SHOAL_STORE_KEY_BYTES] = "another key, of thirty-two byte";

static shoal_store *open_with(const shoal_store_options *opts)
{
    shoal_store *st = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_open(db_path, opts, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(st);
    return st;
}

static shoal_store *open_plain(void)
{
    return open_with(NULL);
}

static shoal_store *open_encrypted(const uint8_t *key)
{
    shoal_store_options o = {.key = key, .key_len = SHOAL_STORE_KEY_BYTES};
    return open_with(&o);
}

/* Features follow from the label, so any mix-up of rows shows. */
#define FEATURES 6
static float feature(int32_t label, size_t j)
{
    return (float)label + (float)j * 0.25f;
}

typedef struct {
    float x[FEATURES];
    shoal_example ex;
} feature_example;

static void make_example(feature_example *fe, int32_t label, int64_t timestamp_ms)
{
    for (size_t j = 0; j < FEATURES; j++)
        fe->x[j] = feature(label, j);
    memset(&fe->ex, 0, sizeof fe->ex);
    fe->ex.features = fe->x;
    fe->ex.feature_count = FEATURES;
    fe->ex.label = label;
    fe->ex.timestamp_ms = timestamp_ms;
    fe->ex.weight = 1.0f + (float)(label % 3);
}

static void add_one(shoal_store *st, const char *collection, int32_t label, int64_t timestamp_ms)
{
    feature_example fe;
    make_example(&fe, label, timestamp_ms);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_add(st, collection, &fe.ex, timestamp_ms, &ei), SHOAL_OK, "%s",
                 ei.msg);
}

/* Adds labels first..first+count-1 with timestamps ts0 + 10 * i in one
 * batch. */
static shoal_err add_range(shoal_store *st, const char *collection, int32_t first, size_t count,
                           int64_t ts0, shoal_errinfo *ei)
{
    feature_example *fe = calloc(count, sizeof *fe);
    shoal_example *ex = calloc(count, sizeof *ex);
    for (size_t i = 0; i < count; i++) {
        make_example(&fe[i], first + (int32_t)i, ts0 + 10 * (int64_t)i);
        ex[i] = fe[i].ex;
        ex[i].features = fe[i].x;
    }
    shoal_err err = shoal_store_add_batch(st, collection, ex, count, ts0 + 10 * (int64_t)count, ei);
    free(ex);
    free(fe);
    return err;
}

static uint64_t count_of(shoal_store *st, const char *collection)
{
    shoal_store_criteria c = {.collection = collection};
    uint64_t n = 0;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_count(st, &c, &n, &ei), SHOAL_OK, "%s", ei.msg);
    return n;
}

/* Reads one epoch of a feature collection, checking every example's
 * features and weight against its label; returns the labels in order. */
static size_t read_epoch(shoal_store_iter *it, size_t batch_size, int32_t *labels, size_t cap,
                         int64_t *timestamps)
{
    size_t fc = shoal_store_iter_feature_count(it);
    cr_assert_eq(fc, FEATURES);
    float *x = malloc(batch_size * fc * sizeof *x);
    int32_t *y = malloc(batch_size * sizeof *y);
    float *w = malloc(batch_size * sizeof *w);
    int64_t *ts = malloc(batch_size * sizeof *ts);
    shoal_store_batch b = {.x = x, .y = y, .weight = w, .timestamp_ms = ts};
    size_t n = 0;
    shoal_err err;
    shoal_errinfo ei = {{0}};
    while ((err = shoal_store_iter_next(it, batch_size, &b, &ei)) == SHOAL_ROW) {
        cr_assert(b.count >= 1 && b.count <= batch_size);
        for (size_t k = 0; k < b.count; k++) {
            for (size_t j = 0; j < fc; j++)
                cr_assert_eq(x[k * fc + j], feature(y[k], j), "label %d feature %zu", y[k], j);
            cr_assert_eq(w[k], 1.0f + (float)(y[k] % 3));
            cr_assert_lt(n, cap);
            if (timestamps)
                timestamps[n] = ts[k];
            labels[n++] = y[k];
        }
    }
    cr_assert_eq(err, SHOAL_DONE, "%s", ei.msg);
    cr_assert_eq(b.count, 0);
    free(x);
    free(y);
    free(w);
    free(ts);
    return n;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Asserts that labels[0..n) is a permutation of first..first+n-1. */
static void assert_each_once(int32_t *labels, size_t n, int32_t first)
{
    int32_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
    memcpy(sorted, labels, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_i32);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(sorted[i], first + (int32_t)i, "position %zu", i);
    free(sorted);
}

static size_t epoch_labels(shoal_store *st, const shoal_store_criteria *c, uint64_t seed,
                           int32_t *labels, size_t cap)
{
    shoal_store_iter *it = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_iter_new(st, c, seed, &it, &ei), SHOAL_OK, "%s", ei.msg);
    size_t n = read_epoch(it, 7, labels, cap, NULL);
    cr_assert_eq(n, shoal_store_iter_size(it));
    shoal_store_iter_free(it);
    return n;
}

/* ---- adding, counting, selecting -------------------------------------------- */

Test(example_store, added_examples_come_back_exactly_once)
{
    shoal_store *st = open_plain();
    for (int32_t i = 0; i < 5; i++)
        add_one(st, "taps", i, 1000 + i);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "taps", 5, 40, 2000, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(count_of(st, "taps"), 45);
    shoal_store_close(st);

    st = open_plain(); /* durable across handles */
    shoal_store_criteria c = {.collection = "taps"};
    int32_t labels[64];
    size_t n = epoch_labels(st, &c, 7, labels, 64);
    cr_assert_eq(n, 45);
    assert_each_once(labels, n, 0);

    shoal_store_collection_info info;
    cr_assert_eq(shoal_store_describe(st, "taps", &info, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(info.kind, SHOAL_STORE_FEATURES);
    cr_assert_eq(info.feature_count, FEATURES);
    cr_assert_eq(info.example_count, 45);
    cr_assert_eq(info.payload_bytes, 45 * FEATURES * 4);
    cr_assert_eq(info.oldest_ms, 1000);
    cr_assert_eq(info.newest_ms, 2000 + 390);
    cr_assert_eq(shoal_store_describe(st, "nope", &info, &ei), SHOAL_ENOTFOUND);
    cr_assert_not_null(strstr(ei.msg, "no collection \"nope\""), "%s", ei.msg);
    shoal_store_close(st);
}

Test(example_store, weight_zero_stores_one_and_bad_examples_are_refused)
{
    shoal_store *st = open_plain();
    float x[3] = {1, 2, 3};
    shoal_example ex = {.features = x, .feature_count = 3, .label = 4, .timestamp_ms = 5};
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_add(st, "c", &ex, 5, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_iter *it;
    shoal_store_criteria c = {.collection = "c"};
    cr_assert_eq(shoal_store_iter_new(st, &c, 1, &it, &ei), SHOAL_OK);
    float bx[3], w;
    int32_t y;
    shoal_store_batch b = {.x = bx, .y = &y, .weight = &w};
    cr_assert_eq(shoal_store_iter_next(it, 1, &b, &ei), SHOAL_ROW);
    cr_assert_eq(w, 1.0f);
    cr_assert_eq(y, 4);
    shoal_store_iter_free(it);

    shoal_example bad = ex;
    bad.weight = -1;
    cr_assert_eq(shoal_store_add(st, "c", &bad, 5, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "weight"), "%s", ei.msg);
    bad = ex;
    bad.features = NULL;
    bad.feature_count = 0;
    cr_assert_eq(shoal_store_add(st, "c", &bad, 5, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "neither features nor a blob"), "%s", ei.msg);
    bad = ex;
    bad.blob = "x";
    bad.blob_len = 1;
    cr_assert_eq(shoal_store_add(st, "c", &bad, 5, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_store_add(st, "", &ex, 5, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_store_add(st, NULL, &ex, 5, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_store_add(NULL, "c", &ex, 5, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_store_add_batch(st, "c", NULL, 0, 5, &ei), SHOAL_OK);
    cr_assert_eq(count_of(st, "c"), 1);
    shoal_store_close(st);
}

Test(example_store, a_collection_keeps_its_feature_count_and_kind)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "pixels", 0, 3, 100, &ei), SHOAL_OK);
    float ten[10] = {0};
    shoal_example ex = {.features = ten, .feature_count = 10, .timestamp_ms = 1};
    cr_assert_eq(shoal_store_add(st, "pixels", &ex, 1, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "collection \"pixels\" holds vectors of 6 features; this "
                                      "example has 10"),
                       "%s", ei.msg);
    shoal_example blob = {.blob = "abc", .blob_len = 3};
    cr_assert_eq(shoal_store_add(st, "pixels", &blob, 1, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "holds feature vectors, not blobs"), "%s", ei.msg);

    /* One bad example refuses the whole batch, named by its index. */
    feature_example fe[3];
    shoal_example batch[3];
    for (int i = 0; i < 3; i++) {
        make_example(&fe[i], 50 + i, 500);
        batch[i] = fe[i].ex;
        batch[i].features = fe[i].x;
    }
    batch[2].feature_count = 5;
    cr_assert_eq(shoal_store_add_batch(st, "pixels", batch, 3, 500, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "example 2: has 5 features but the batch's first example "
                                      "has 6"),
                       "%s", ei.msg);
    cr_assert_eq(count_of(st, "pixels"), 3, "nothing of the refused batch was added");

    /* Dropping the collection frees the name for another shape. */
    cr_assert_eq(shoal_store_drop_collection(st, "pixels", &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(count_of(st, "pixels"), 0);
    cr_assert_eq(shoal_store_add(st, "pixels", &ex, 1, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_store_drop_collection(st, "absent", &ei), SHOAL_ENOTFOUND);
    shoal_store_close(st);
}

Test(example_store, time_window_and_max_count_select_the_right_examples)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    /* labels i at 1000 + 10 i, i = 0..99 */
    cr_assert_eq(add_range(st, "c", 0, 100, 1000, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(add_range(st, "other", 1000, 10, 1000, &ei), SHOAL_OK, "%s", ei.msg);
    int32_t labels[128];
    uint64_t n;

    shoal_store_criteria window = {.collection = "c", .start_ms = 1200, .end_ms = 1500};
    cr_assert_eq(shoal_store_count(st, &window, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 30, "[1200, 1500) holds labels 20..49");
    cr_assert_eq(epoch_labels(st, &window, 3, labels, 128), 30);
    assert_each_once(labels, 30, 20);

    shoal_store_criteria newest_in_window = window;
    newest_in_window.max_examples = 5;
    cr_assert_eq(shoal_store_count(st, &newest_in_window, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 5);
    cr_assert_eq(epoch_labels(st, &newest_in_window, 3, labels, 128), 5);
    assert_each_once(labels, 5, 45);

    shoal_store_criteria newest = {.collection = "c", .max_examples = 7};
    cr_assert_eq(epoch_labels(st, &newest, 3, labels, 128), 7);
    assert_each_once(labels, 7, 93);

    shoal_store_criteria from = {.collection = "c", .start_ms = 1950};
    cr_assert_eq(epoch_labels(st, &from, 3, labels, 128), 5);
    assert_each_once(labels, 5, 95);
    shoal_store_criteria until = {.collection = "c", .end_ms = 1030};
    cr_assert_eq(epoch_labels(st, &until, 3, labels, 128), 3);
    assert_each_once(labels, 3, 0);

    shoal_store_criteria everything = {0};
    cr_assert_eq(shoal_store_count(st, &everything, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 110, "no collection: the whole store");
    everything.start_ms = 1900;
    cr_assert_eq(shoal_store_count(st, &everything, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 10, "labels 90..99 of c; other ends at 1090");

    shoal_store_criteria absent = {.collection = "absent"};
    cr_assert_eq(shoal_store_count(st, &absent, &n, &ei), SHOAL_OK);
    cr_assert_eq(n, 0);
    shoal_store_iter *it = (shoal_store_iter *)1;
    cr_assert_eq(shoal_store_iter_new(st, &absent, 1, &it, &ei), SHOAL_ENOTFOUND);
    cr_assert_null(it);
    cr_assert_not_null(strstr(ei.msg, "no collection \"absent\""), "%s", ei.msg);

    shoal_store_criteria empty = {.collection = "c", .start_ms = 1500, .end_ms = 1500};
    cr_assert_eq(shoal_store_count(st, &empty, &n, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "end_ms must be after start_ms"), "%s", ei.msg);
    cr_assert_eq(shoal_store_iter_new(st, &everything, 1, &it, &ei), SHOAL_EINVAL,
                 "iteration needs a collection");
    shoal_store_close(st);
}

Test(example_store, delete_removes_exactly_what_the_criteria_select)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 50, 1000, &ei), SHOAL_OK);
    uint64_t deleted;
    shoal_store_criteria window = {.collection = "c", .start_ms = 1100, .end_ms = 1200};
    cr_assert_eq(shoal_store_delete(st, &window, &deleted, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(deleted, 10);
    shoal_store_criteria newest = {.collection = "c", .max_examples = 5};
    cr_assert_eq(shoal_store_delete(st, &newest, &deleted, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(deleted, 5);
    shoal_store_criteria all = {.collection = "c"};
    int32_t labels[64];
    size_t n = epoch_labels(st, &all, 1, labels, 64);
    cr_assert_eq(n, 35);
    qsort(labels, n, sizeof *labels, cmp_i32);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(labels[i], i < 10 ? (int32_t)i : (int32_t)i + 10);
    shoal_store_close(st);
}

/* ---- iteration ------------------------------------------------------------------ */

Test(example_store, each_epoch_covers_every_example_once_in_a_seed_determined_order)
{
    enum { N = 60 };
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, N, 1000, &ei), SHOAL_OK);
    shoal_store_criteria c = {.collection = "c"};
    int32_t a[N], again[N], b[N], epoch[N];
    cr_assert_eq(epoch_labels(st, &c, 11, a, N), N);
    cr_assert_eq(epoch_labels(st, &c, 11, again, N), N);
    cr_assert_eq(epoch_labels(st, &c, 12, b, N), N);
    assert_each_once(a, N, 0);
    assert_each_once(b, N, 0);
    cr_assert_eq(memcmp(a, again, sizeof a), 0, "same seed, same order");
    cr_assert_neq(memcmp(a, b, sizeof a), 0, "another seed, another order");
    int in_place = 0;
    for (int i = 0; i < N; i++)
        in_place += a[i] == i;
    cr_assert_lt(in_place, N / 4, "the order is shuffled, not insertion order");

    /* Epochs of one iterator: each a permutation, each seed's own order,
     * and rewinding with the first seed repeats the first epoch. */
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 11, &it, &ei), SHOAL_OK);
    cr_assert_eq(read_epoch(it, 8, epoch, N, NULL), N);
    cr_assert_eq(memcmp(epoch, a, sizeof a), 0);
    shoal_store_iter_rewind(it, 12);
    cr_assert_eq(read_epoch(it, 8, epoch, N, NULL), N);
    cr_assert_eq(memcmp(epoch, b, sizeof b), 0, "rewind(s) orders as iter_new(s) does");
    shoal_store_iter_rewind(it, 11);
    cr_assert_eq(read_epoch(it, 60, epoch, N, NULL), N);
    cr_assert_eq(memcmp(epoch, a, sizeof a), 0, "the order does not depend on batch size");
    shoal_store_iter_free(it);
    shoal_store_close(st);
}

Test(example_store, the_last_batch_of_an_epoch_is_short)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 23, 1000, &ei), SHOAL_OK);
    shoal_store_criteria c = {.collection = "c"};
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 5, &it, &ei), SHOAL_OK);
    cr_assert_eq(shoal_store_iter_size(it), 23);
    float x[5 * FEATURES];
    int32_t y[5];
    shoal_store_batch b = {.x = x, .y = y};
    for (int epoch = 0; epoch < 2; epoch++) {
        const size_t want[] = {5, 5, 5, 5, 3};
        for (int i = 0; i < 5; i++) {
            cr_assert_eq(shoal_store_iter_next(it, 5, &b, &ei), SHOAL_ROW, "%s", ei.msg);
            cr_assert_eq(b.count, want[i], "batch %d", i);
        }
        cr_assert_eq(shoal_store_iter_next(it, 5, &b, &ei), SHOAL_DONE);
        cr_assert_eq(shoal_store_iter_next(it, 5, &b, &ei), SHOAL_DONE, "and stays done");
        shoal_store_iter_rewind(it, 6 + (uint64_t)epoch);
    }
    cr_assert_eq(shoal_store_iter_next(it, 0, &b, &ei), SHOAL_EINVAL);
    shoal_store_batch no_x = {.y = y};
    cr_assert_eq(shoal_store_iter_next(it, 5, &no_x, &ei), SHOAL_EINVAL);
    shoal_store_iter_free(it);
    shoal_store_close(st);
}

Test(example_store, examples_deleted_during_an_epoch_are_skipped)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 20, 1000, &ei), SHOAL_OK);
    shoal_store_criteria c = {.collection = "c"};
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 5, &it, &ei), SHOAL_OK);
    shoal_store_criteria first_half = {.collection = "c", .end_ms = 1100};
    uint64_t deleted;
    cr_assert_eq(shoal_store_delete(st, &first_half, &deleted, &ei), SHOAL_OK);
    cr_assert_eq(deleted, 10);
    add_one(st, "c", 99, 5000); /* not part of the selection */
    int32_t labels[32];
    size_t n = read_epoch(it, 4, labels, 32, NULL);
    cr_assert_eq(n, 10);
    assert_each_once(labels, n, 10);
    shoal_store_iter_free(it);
    shoal_store_close(st);
}

/* Reads positions[0..n) with shoal_store_iter_read, checking each
 * example's features against its label. */
static shoal_err read_at(shoal_store_iter *it, const uint32_t *pos, size_t n, int32_t *labels,
                         shoal_errinfo *ei)
{
    float x[64 * FEATURES];
    int32_t y[64];
    cr_assert_leq(n, 64);
    shoal_store_batch b = {.x = x, .y = y};
    shoal_err err = shoal_store_iter_read(it, pos, n, &b, ei);
    if (err != SHOAL_ROW) {
        cr_assert_eq(b.count, 0);
        return err;
    }
    cr_assert_eq(b.count, n);
    for (size_t k = 0; k < n; k++) {
        for (size_t j = 0; j < FEATURES; j++)
            cr_assert_eq(x[k * FEATURES + j], feature(y[k], j));
        labels[k] = y[k];
    }
    return SHOAL_ROW;
}

static void check_read_by_position(shoal_store *st)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 100, 40, 1000, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_criteria c = {.collection = "c"};
    int32_t first[40], again[40];
    cr_assert_eq(epoch_labels(st, &c, 9, first, 40), 40);
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 9, &it, &ei), SHOAL_OK, "%s", ei.msg);
    /* A rewind reshuffles iter_next's order but not the positions. */
    shoal_store_iter_rewind(it, 1234);
    uint32_t pos[40];
    for (uint32_t i = 0; i < 40; i++)
        pos[i] = 39 - i;
    cr_assert_eq(read_at(it, pos, 40, again, &ei), SHOAL_ROW, "%s", ei.msg);
    for (size_t i = 0; i < 40; i++)
        cr_assert_eq(again[i], first[39 - i], "position %zu", 39 - i);
    /* Repeats are fine; a position past the selection is refused. */
    uint32_t some[3] = {5, 5, 0};
    cr_assert_eq(read_at(it, some, 3, again, &ei), SHOAL_ROW);
    cr_assert_eq(again[0], first[5]);
    cr_assert_eq(again[1], first[5]);
    cr_assert_eq(again[2], first[0]);
    uint32_t bad[2] = {3, 40};
    cr_assert_eq(read_at(it, bad, 2, again, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "position 40") && strstr(ei.msg, "40 examples"), "%s", ei.msg);
    /* iter_next still walks the rewound epoch, whole. */
    int32_t walked[40];
    cr_assert_eq(read_epoch(it, 6, walked, 40, NULL), 40);
    assert_each_once(walked, 40, 100);
    shoal_store_iter_free(it);
}

Test(example_store, examples_are_read_by_position_in_the_creation_order)
{
    shoal_store *st = open_plain();
    check_read_by_position(st);
    shoal_store_close(st);
    remove_dir();
    make_dir();
    st = open_encrypted(key_a);
    check_read_by_position(st);
    shoal_store_close(st);
}

Test(example_store, a_snapshot_keeps_a_selection_whole_while_others_write)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 20, 1000, &ei), SHOAL_OK);
    shoal_store *writer = open_plain();
    shoal_store_criteria c = {.collection = "c"};
    shoal_store_criteria first_half = {.collection = "c", .end_ms = 1100};
    uint32_t all[20];
    for (uint32_t i = 0; i < 20; i++)
        all[i] = i;
    int32_t labels[20];
    uint64_t deleted;

    /* Without a snapshot, a deleted example is an error naming it. */
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 3, &it, &ei), SHOAL_OK);
    cr_assert_eq(shoal_store_delete(writer, &first_half, &deleted, &ei), SHOAL_OK);
    cr_assert_eq(deleted, 10);
    cr_assert_eq(read_at(it, all, 20, labels, &ei), SHOAL_ENOTFOUND);
    cr_assert(strstr(ei.msg, "deleted after it was selected") && strstr(ei.msg, "snapshot"), "%s",
              ei.msg);
    shoal_store_iter_free(it);

    /* With one, another handle's deletes and adds are not seen until it
     * ends. */
    cr_assert_eq(add_range(writer, "c", 0, 10, 1000, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_store_snapshot_begin(st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_store_snapshot_begin(st, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_store_iter_new(st, &c, 3, &it, &ei), SHOAL_OK);
    cr_assert_eq(shoal_store_iter_size(it), 20);
    cr_assert_eq(shoal_store_delete(writer, &first_half, &deleted, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(deleted, 10);
    add_one(writer, "c", 77, 9000);
    cr_assert_eq(read_at(it, all, 20, labels, &ei), SHOAL_ROW, "%s", ei.msg);
    assert_each_once(labels, 20, 0);
    cr_assert_eq(count_of(st, "c"), 20, "the snapshot sees the store as it was");
    /* No writes through a handle holding a snapshot. */
    feature_example fe;
    make_example(&fe, 5, 1);
    cr_assert_eq(shoal_store_add(st, "c", &fe.ex, 1, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "snapshot"), "%s", ei.msg);
    shoal_store_iter_free(it);
    shoal_store_snapshot_end(st);
    cr_assert_eq(count_of(st, "c"), 11);
    cr_assert_eq(shoal_store_add(st, "c", &fe.ex, 1, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_snapshot_end(st); /* a no-op now */
    shoal_store_close(writer);
    shoal_store_close(st);
}

Test(example_store, blobs_of_any_length_round_trip)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    enum { N = 40 };
    /* Blob i: i * 97 bytes (blob 0 is empty), byte j = i + j. */
    static uint8_t data[N][N * 97 + 1];
    shoal_example ex[N];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < i * 97; j++)
            data[i][j] = (uint8_t)(i + j);
        ex[i] = (shoal_example){
            .blob = data[i], .blob_len = (size_t)i * 97, .label = i, .timestamp_ms = 100 + i};
    }
    cr_assert_eq(shoal_store_add_batch(st, "notes", ex, N, 200, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_criteria c = {.collection = "notes"};
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 9, &it, &ei), SHOAL_OK);
    cr_assert_eq(shoal_store_iter_kind(it), SHOAL_STORE_BLOBS);
    cr_assert_eq(shoal_store_iter_feature_count(it), 0);
    const uint8_t *blob[6];
    size_t len[6];
    int32_t y[6];
    int64_t ts[6];
    shoal_store_batch b = {.y = y, .timestamp_ms = ts, .blob = blob, .blob_len = len};
    int seen[N] = {0};
    shoal_err err;
    while ((err = shoal_store_iter_next(it, 6, &b, &ei)) == SHOAL_ROW) {
        for (size_t k = 0; k < b.count; k++) {
            int i = y[k];
            cr_assert(i >= 0 && i < N);
            seen[i]++;
            cr_assert_eq(len[k], (size_t)i * 97);
            cr_assert_eq(ts[k], 100 + i);
            cr_assert_not_null(blob[k]);
            cr_assert_eq(memcmp(blob[k], data[i], len[k]), 0, "blob %d", i);
        }
    }
    cr_assert_eq(err, SHOAL_DONE, "%s", ei.msg);
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "blob %d seen once", i);
    shoal_store_batch no_blobs = {.y = y};
    shoal_store_iter_rewind(it, 1);
    cr_assert_eq(shoal_store_iter_next(it, 6, &no_blobs, &ei), SHOAL_EINVAL);
    shoal_store_iter_free(it);

    float x[2] = {1, 2};
    shoal_example fx = {.features = x, .feature_count = 2};
    cr_assert_eq(shoal_store_add(st, "notes", &fx, 1, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "holds blobs, not feature vectors"), "%s", ei.msg);
    shoal_store_close(st);
}

/* ---- retention ------------------------------------------------------------------- */

/* Labels left in the collection, sorted. */
static size_t remaining(shoal_store *st, const char *collection, int32_t *labels, size_t cap)
{
    shoal_store_criteria c = {.collection = collection};
    size_t n = epoch_labels(st, &c, 1, labels, cap);
    qsort(labels, n, sizeof *labels, cmp_i32);
    return n;
}

Test(example_store, retention_by_age_deletes_what_is_older_than_the_limit)
{
    shoal_store_options o = {.retention = {.max_age_ms = 100, .on_demand_only = 1}};
    shoal_store *st = open_with(&o);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 30, 1000, &ei), SHOAL_OK); /* ts 1000..1290 */
    cr_assert_eq(count_of(st, "c"), 30, "on_demand_only: adds do not enforce");
    uint64_t deleted;
    cr_assert_eq(shoal_store_enforce_retention(st, NULL, 1250, &deleted, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(deleted, 15, "timestamps below 1150 go");
    int32_t labels[32];
    cr_assert_eq(remaining(st, "c", labels, 32), 15);
    cr_assert_eq(labels[0], 15);
    /* Explicit limits override the handle's. */
    shoal_store_retention tighter = {.max_age_ms = 50};
    cr_assert_eq(shoal_store_enforce_retention(st, &tighter, 1250, &deleted, &ei), SHOAL_OK);
    cr_assert_eq(deleted, 5);
    shoal_store_close(st);

    /* Enforced on add with the caller's clock. */
    o.retention.on_demand_only = 0;
    st = open_with(&o);
    add_one(st, "c", 100, 5000);
    cr_assert_eq(count_of(st, "c"), 1, "everything older than 4900 went with the add");
    shoal_store_close(st);
}

Test(example_store, retention_by_rows_keeps_the_newest_by_timestamp)
{
    shoal_store_options o = {.retention = {.max_examples = 10}};
    shoal_store *st = open_with(&o);
    /* Inserted out of time order: label i has timestamp (i * 7) % 25 * 10,
     * so insertion order and age disagree. */
    for (int32_t i = 0; i < 25; i++) {
        add_one(st, "c", i, 1000 + ((i * 7) % 25) * 10);
        uint64_t n = count_of(st, "c");
        cr_assert_eq(n, i < 10 ? (uint64_t)i + 1 : 10, "never above the limit");
    }
    shoal_store_collection_info info;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_describe(st, "c", &info, &ei), SHOAL_OK);
    cr_assert_eq(info.example_count, 10);
    /* Which ten survive: simulate. A row is deleted when it is the oldest
     * at some add beyond the limit. */
    int64_t ts[25];
    int alive[25] = {0};
    for (int i = 0; i < 25; i++) {
        ts[i] = 1000 + ((i * 7) % 25) * 10;
        alive[i] = 1;
        int live = 0;
        for (int j = 0; j <= i; j++)
            live += alive[j];
        if (live > 10) {
            int oldest = -1;
            for (int j = 0; j <= i; j++)
                if (alive[j] && (oldest < 0 || ts[j] < ts[oldest]))
                    oldest = j;
            alive[oldest] = 0;
        }
    }
    int32_t labels[32];
    size_t n = remaining(st, "c", labels, 32);
    cr_assert_eq(n, 10);
    size_t k = 0;
    for (int i = 0; i < 25; i++)
        if (alive[i])
            cr_assert_eq(labels[k++], i, "survivor %zu", k);
    shoal_store_close(st);
}

Test(example_store, retention_ties_in_time_go_in_insertion_order)
{
    shoal_store *st = open_plain();
    for (int32_t i = 0; i < 8; i++)
        add_one(st, "c", i, 1000); /* all at the same millisecond */
    shoal_store_retention r = {.max_examples = 3};
    uint64_t deleted;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_enforce_retention(st, &r, 1000, &deleted, &ei), SHOAL_OK);
    cr_assert_eq(deleted, 5);
    int32_t labels[8];
    cr_assert_eq(remaining(st, "c", labels, 8), 3);
    cr_assert_eq(labels[0], 5);
    cr_assert_eq(labels[2], 7);
    shoal_store_close(st);
}

Test(example_store, retention_by_bytes_counts_stored_payload_bytes)
{
    /* Each example: 6 floats = 24 bytes. 100 bytes hold 4 of them. */
    shoal_store_options o = {.retention = {.max_bytes = 100}};
    shoal_store *st = open_with(&o);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 9, 1000, &ei), SHOAL_OK);
    int32_t labels[16];
    cr_assert_eq(remaining(st, "c", labels, 16), 4);
    cr_assert_eq(labels[0], 5, "the oldest went first");
    add_one(st, "d", 50, 900); /* another collection has its own budget */
    cr_assert_eq(count_of(st, "c"), 4);
    cr_assert_eq(count_of(st, "d"), 1);
    shoal_store_close(st);

    /* Encrypted: each example also carries the seal's overhead. */
    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);
    const uint64_t sealed = 24 + SHOAL_STORE_SEAL_OVERHEAD;
    shoal_store_options oe = {
        .key = key_a, .key_len = SHOAL_STORE_KEY_BYTES, .retention = {.max_bytes = 3 * sealed}};
    st = open_with(&oe);
    cr_assert_eq(add_range(st, "c", 0, 9, 1000, &ei), SHOAL_OK);
    shoal_store_collection_info info;
    cr_assert_eq(shoal_store_describe(st, "c", &info, &ei), SHOAL_OK);
    cr_assert_eq(info.example_count, 3);
    cr_assert_eq(info.payload_bytes, 3 * sealed);
    cr_assert_eq(remaining(st, "c", labels, 16), 3);
    cr_assert_eq(labels[0], 6);
    shoal_store_close(st);
}

Test(example_store, store_wide_limits_delete_the_oldest_of_any_collection)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    /* a: labels 0..9 at 1000, 1020, ...; b: labels 100..109 at 1010, 1030, ... */
    for (int32_t i = 0; i < 10; i++) {
        add_one(st, "a", i, 1000 + 20 * i);
        add_one(st, "b", 100 + i, 1010 + 20 * i);
    }
    shoal_store_retention r = {.store_max_examples = 7};
    uint64_t deleted;
    cr_assert_eq(shoal_store_enforce_retention(st, &r, 0, &deleted, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(deleted, 13);
    int32_t labels[16];
    /* The newest seven: a 7..9 (1140..1180) and b 106..109 (1130..1190). */
    cr_assert_eq(remaining(st, "a", labels, 16), 3);
    cr_assert_eq(labels[0], 7);
    cr_assert_eq(remaining(st, "b", labels, 16), 4);
    cr_assert_eq(labels[0], 106);
    shoal_store_retention bytes = {.store_max_bytes = 24 * 2};
    cr_assert_eq(shoal_store_enforce_retention(st, &bytes, 0, &deleted, &ei), SHOAL_OK);
    cr_assert_eq(deleted, 5);
    cr_assert_eq(count_of(st, "a"), 1, "a 9 (1180)");
    cr_assert_eq(count_of(st, "b"), 1, "b 109 (1190)");
    shoal_store_close(st);
}

/* ---- encryption ----------------------------------------------------------------- */

static int file_contains(const char *path, const void *needle, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    int found = 0;
    for (size_t i = 0; !found && i + len <= got; i++)
        found = memcmp(buf + i, needle, len) == 0;
    free(buf);
    return found;
}

Test(example_store, encrypted_examples_round_trip_and_are_not_stored_in_clear)
{
    static const char secret[] = "the user typed: meet me at the old harbour at nine";
    shoal_store *st = open_encrypted(key_a);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 20, 1000, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_example note = {
        .blob = secret, .blob_len = sizeof secret, .label = 7, .timestamp_ms = 5, .weight = 2};
    cr_assert_eq(shoal_store_add(st, "notes", &note, 5, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);

    /* Nothing of the payloads or labels in clear, in the database or its WAL. */
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", db_path);
    cr_assert_not(file_contains(db_path, "old harbour", 11));
    cr_assert_not(file_contains(wal, "old harbour", 11));
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT count(*) FROM example WHERE label IS NOT NULL OR "
                                    "weight IS NOT NULL",
                                    -1, &s, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(s, 0), 0, "labels and weights are sealed");
    sqlite3_finalize(s);
    sqlite3_close(db);

    st = open_encrypted(key_a);
    shoal_store_criteria c = {.collection = "c"};
    int32_t labels[32];
    cr_assert_eq(epoch_labels(st, &c, 2, labels, 32), 20);
    assert_each_once(labels, 20, 0);
    shoal_store_criteria notes = {.collection = "notes"};
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &notes, 1, &it, &ei), SHOAL_OK);
    const uint8_t *blob;
    size_t len;
    int32_t y;
    float w;
    shoal_store_batch b = {.y = &y, .weight = &w, .blob = &blob, .blob_len = &len};
    cr_assert_eq(shoal_store_iter_next(it, 1, &b, &ei), SHOAL_ROW, "%s", ei.msg);
    cr_assert_eq(len, sizeof secret);
    cr_assert_eq(memcmp(blob, secret, len), 0);
    cr_assert_eq(y, 7);
    cr_assert_eq(w, 2.0f);
    shoal_store_iter_free(it);
    shoal_store_close(st);
}

Test(example_store, a_wrong_key_is_refused_at_open_naming_the_file)
{
    shoal_store *st = open_encrypted(key_a);
    add_one(st, "c", 1, 1);
    shoal_store_close(st);
    shoal_store_options o = {.key = key_b, .key_len = SHOAL_STORE_KEY_BYTES};
    shoal_errinfo ei = {{0}};
    st = (shoal_store *)1;
    cr_assert_eq(shoal_store_open(db_path, &o, &st, &ei), SHOAL_ECRYPTO);
    cr_assert_null(st);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "wrong key"), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "shoal_store_destroy"), "%s", ei.msg);
    o.key_len = 16;
    cr_assert_eq(shoal_store_open(db_path, &o, &st, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "the key is 16 bytes, not 32"), "%s", ei.msg);
    st = open_encrypted(key_a); /* the right key still opens it */
    cr_assert_eq(count_of(st, "c"), 1);
    shoal_store_close(st);
}

Test(example_store, key_and_no_key_mismatches_are_refused_clearly)
{
    shoal_store *st = open_plain();
    add_one(st, "c", 1, 1);
    shoal_store_close(st);
    shoal_store_options with_key = {.key = key_a, .key_len = SHOAL_STORE_KEY_BYTES};
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_open(db_path, &with_key, &st, &ei), SHOAL_ECRYPTO);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "created without encryption"), "%s", ei.msg);

    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);
    st = open_encrypted(key_a);
    shoal_store_close(st);
    cr_assert_eq(shoal_store_open(db_path, NULL, &st, &ei), SHOAL_ECRYPTO);
    cr_assert_null(st);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "the store is encrypted: open it with its key"), "%s",
                       ei.msg);
}

/* Runs one SQL statement on the store's file behind its back. */
static void tamper(const char *sql)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s", msg ? msg : "");
    sqlite3_close(db);
}

static shoal_err first_batch(shoal_store *st, shoal_errinfo *ei)
{
    shoal_store_criteria c = {.collection = "c"};
    shoal_store_iter *it;
    cr_assert_eq(shoal_store_iter_new(st, &c, 1, &it, ei), SHOAL_OK);
    float x[4 * FEATURES];
    int32_t y[4];
    shoal_store_batch b = {.x = x, .y = y};
    shoal_err err = shoal_store_iter_next(it, 4, &b, ei);
    shoal_store_iter_free(it);
    return err;
}

Test(example_store, altered_sealed_examples_fail_authentication)
{
    shoal_store *st = open_encrypted(key_a);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 2, 1000, &ei), SHOAL_OK);
    shoal_store_close(st);

    /* A payload moved to another row (another timestamp) does not open. */
    tamper("UPDATE example SET payload = (SELECT payload FROM example WHERE timestamp_ms = 1010) "
           "WHERE timestamp_ms = 1000");
    st = open_encrypted(key_a);
    cr_assert_eq(first_batch(st, &ei), SHOAL_ECRYPTO);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "fails authentication"), "%s", ei.msg);
    shoal_store_close(st);

    /* A flipped ciphertext byte does not open either. */
    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);
    st = open_encrypted(key_a);
    cr_assert_eq(add_range(st, "c", 0, 2, 1000, &ei), SHOAL_OK);
    shoal_store_close(st);
    /* The byte is changed whatever it was: a fixed replacement would equal it once in 256 runs. */
    tamper("UPDATE example SET payload = substr(payload, 1, 30) || "
           "CASE WHEN substr(payload, 31, 1) = x'ff' THEN x'00' ELSE x'ff' END || "
           "substr(payload, 32) WHERE timestamp_ms = 1000");
    st = open_encrypted(key_a);
    cr_assert_eq(first_batch(st, &ei), SHOAL_ECRYPTO);
    shoal_store_close(st);
}

/* ---- foreign, damaged and newer files; reset ----------------------------------- */

Test(example_store, garbage_and_foreign_files_are_refused_naming_the_file)
{
    shoal_store *st = (shoal_store *)1;
    shoal_errinfo ei = {{0}};
    FILE *f = fopen(db_path, "wb");
    for (int i = 0; i < 8192; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    cr_assert_eq(shoal_store_open(db_path, NULL, &st, &ei), SHOAL_EFORMAT);
    cr_assert_null(st);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "not a Shoal example store"), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "shoal_store_destroy()"), "%s", ei.msg);
    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);

    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE photos (id INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(shoal_store_open(db_path, NULL, &st, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "another application"), "%s", ei.msg);
    cr_assert(file_contains(db_path, "photos", 6), "the other app's file is left alone");
    remove(db_path);

    /* The server's state database is another application too. */
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA application_id = 1397247820; CREATE TABLE t (x)", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(shoal_store_open(db_path, NULL, &st, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "application_id 0x53484f4c"), "%s", ei.msg);
    remove(db_path);

    st = open_plain();
    shoal_store_close(st);
    tamper("PRAGMA user_version = 99");
    cr_assert_eq(shoal_store_open(db_path, NULL, &st, &ei), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(ei.msg, "newer Shoal (example store schema 99"), "%s", ei.msg);

    cr_assert_eq(shoal_store_open("/nonexistent-dir/examples.db", NULL, &st, &ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, "/nonexistent-dir/examples.db"), "%s", ei.msg);
    cr_assert_eq(shoal_store_open(NULL, NULL, &st, &ei), SHOAL_EINVAL);
}

Test(example_store, a_damaged_file_is_reported_by_check_and_reset_by_destroy)
{
    shoal_store *st = open_plain();
    shoal_errinfo ei = {{0}};
    cr_assert_eq(add_range(st, "c", 0, 400, 1000, &ei), SHOAL_OK);
    cr_assert_eq(shoal_store_check(st, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_store_close(st);
    /* Overwrite the middle pages (the header stays valid). */
    struct stat sb;
    cr_assert_eq(stat(db_path, &sb), 0);
    cr_assert_gt(sb.st_size, 4 * 4096);
    FILE *f = fopen(db_path, "r+b");
    fseek(f, 2 * 4096, SEEK_SET);
    for (int i = 0; i < 2 * 4096; i++)
        fputc(0xa5, f);
    fclose(f);
    shoal_err err = SHOAL_OK;
    if (shoal_store_open(db_path, NULL, &st, &ei) == SHOAL_OK) {
        err = shoal_store_check(st, &ei);
        shoal_store_close(st);
    } else {
        err = SHOAL_EFORMAT;
    }
    cr_assert_eq(err, SHOAL_EFORMAT, "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "shoal_store_destroy()"), "%s", ei.msg);

    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK, "%s", ei.msg);
    st = open_plain();
    cr_assert_eq(count_of(st, "c"), 0, "a fresh, empty store");
    shoal_store_close(st);
}

Test(example_store, destroy_removes_the_database_and_its_wal_and_shm_files)
{
    shoal_store *st = open_plain();
    add_one(st, "c", 1, 1);
    char wal[320], shm[320], journal[330];
    snprintf(wal, sizeof wal, "%s-wal", db_path);
    snprintf(shm, sizeof shm, "%s-shm", db_path);
    snprintf(journal, sizeof journal, "%s-journal", db_path);
    cr_assert_eq(access(wal, F_OK), 0, "an open WAL store has its -wal file");
    cr_assert_eq(access(shm, F_OK), 0);
    /* Leave the files behind as a crashed app would: copy them aside while
     * open, close (which checkpoints and removes them), and put them back. */
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s.keep' && cp '%s' '%s.keep'", wal, wal, shm, shm);
    cr_assert_eq(system(cmd), 0);
    shoal_store_close(st);
    snprintf(cmd, sizeof cmd, "mv '%s.keep' '%s' && mv '%s.keep' '%s' && touch '%s'", wal, wal, shm,
             shm, journal);
    cr_assert_eq(system(cmd), 0);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_neq(access(db_path, F_OK), 0);
    cr_assert_neq(access(wal, F_OK), 0);
    cr_assert_neq(access(shm, F_OK), 0);
    cr_assert_neq(access(journal, F_OK), 0);
    cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK, "nothing to delete is fine");
    cr_assert_eq(shoal_store_destroy(NULL, &ei), SHOAL_EINVAL);
}

/* ---- concurrency and crashes ------------------------------------------------------ */

enum { WRITER_BATCHES = 150, WRITER_BATCH = 8 };

typedef struct {
    shoal_err err;
    char msg[SHOAL_ERRINFO_LEN];
    int done; /* the writer's, read by the reader */
    uint64_t reads, max_seen;
} thread_result;

typedef struct {
    thread_result reader, writer;
} thread_pair;

static void *writer_thread(void *arg)
{
    thread_result *r = &((thread_pair *)arg)->writer;
    const thread_result *reader = &((thread_pair *)arg)->reader;
    shoal_store *st = NULL;
    shoal_errinfo ei = {{0}};
    if ((r->err = shoal_store_open(db_path, NULL, &st, &ei)) == SHOAL_OK) {
        for (int i = 0; i < WRITER_BATCHES && !r->err; i++) {
            /* However the threads are scheduled, some reads overlap the
             * writes: the last batch waits for three of them (or 60 s). */
            for (int waited = 0; i == WRITER_BATCHES - 1 && waited < 60000 &&
                                 __atomic_load_n(&reader->reads, __ATOMIC_SEQ_CST) < 3;
                 waited++)
                nanosleep(&(struct timespec){0, 1000000L}, NULL);
            r->err = add_range(st, "live", i * WRITER_BATCH, WRITER_BATCH, 1000 + 100 * i, &ei);
        }
        shoal_store_close(st);
    }
    memcpy(r->msg, ei.msg, sizeof r->msg);
    __atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Reads epochs while the writer writes: every epoch is a consistent
 * prefix of the writer's batches, growing over time. */
static void *reader_thread(void *arg)
{
    thread_result *r = &((thread_pair *)arg)->reader;
    thread_result *w = &((thread_pair *)arg)->writer;
    shoal_store *st = NULL;
    shoal_errinfo ei = {{0}};
    enum { CAP = WRITER_BATCHES * WRITER_BATCH };
    int32_t *labels = malloc(CAP * sizeof *labels);
    float *x = malloc(16 * FEATURES * sizeof *x);
    int32_t y[16];
    if ((r->err = shoal_store_open(db_path, NULL, &st, &ei)) == SHOAL_OK) {
        int last = 0;
        while (!r->err && !last) {
            last = __atomic_load_n(&w->done, __ATOMIC_SEQ_CST);
            shoal_store_criteria c = {.collection = "live"};
            shoal_store_iter *it = NULL;
            r->err = shoal_store_iter_new(st, &c, r->reads, &it, &ei);
            if (r->err == SHOAL_ENOTFOUND) { /* before the first commit */
                r->err = SHOAL_OK;
                continue;
            }
            size_t n = 0;
            shoal_store_batch b = {.x = x, .y = y};
            shoal_err err = SHOAL_DONE;
            while (!r->err && (err = shoal_store_iter_next(it, 16, &b, &ei)) == SHOAL_ROW)
                for (size_t k = 0; k < b.count && n < CAP; k++) {
                    for (size_t j = 0; j < FEATURES; j++)
                        if (x[k * FEATURES + j] != feature(y[k], j))
                            r->err = SHOAL_EFORMAT;
                    labels[n++] = y[k];
                }
            if (!r->err && err != SHOAL_DONE)
                r->err = err;
            shoal_store_iter_free(it);
            /* Whole batches, from the first: labels 0..n-1 exactly. */
            if (!r->err && (n % WRITER_BATCH || n < r->max_seen))
                r->err = SHOAL_ESTATE;
            qsort(labels, n, sizeof *labels, cmp_i32);
            for (size_t i = 0; i < n && !r->err; i++)
                if (labels[i] != (int32_t)i)
                    r->err = SHOAL_ESTATE;
            r->max_seen = n;
            __atomic_add_fetch(&r->reads, 1, __ATOMIC_SEQ_CST);
        }
        shoal_store_close(st);
    }
    memcpy(r->msg, ei.msg, sizeof r->msg);
    free(labels);
    free(x);
    return NULL;
}

Test(example_store, a_writer_and_a_reader_thread_share_the_file, .timeout = 300)
{
    shoal_store *st = open_plain(); /* created before the threads race for it */
    shoal_store_close(st);
    thread_pair pair = {0};
    pthread_t reader, writer;
    cr_assert_eq(pthread_create(&writer, NULL, writer_thread, &pair), 0);
    cr_assert_eq(pthread_create(&reader, NULL, reader_thread, &pair), 0);
    pthread_join(writer, NULL);
    pthread_join(reader, NULL);
    cr_assert_eq(pair.writer.err, SHOAL_OK, "writer: %s", pair.writer.msg);
    cr_assert_eq(pair.reader.err, SHOAL_OK, "reader: %s (%s)", shoal_err_name(pair.reader.err),
                 pair.reader.msg);
    cr_log_info("the reader read %llu epochs while the writer wrote",
                (unsigned long long)pair.reader.reads);
    cr_assert_gt(pair.reader.reads, 2, "the reader read while the writer wrote");
    cr_assert_eq(pair.reader.max_seen, WRITER_BATCHES * WRITER_BATCH,
                 "the last read saw every commit");
}

Test(example_store, a_writer_blocked_past_the_busy_timeout_gets_eagain_and_readers_go_on)
{
    shoal_store_options o = {.busy_timeout_ms = 50};
    shoal_store *st = open_with(&o);
    add_one(st, "c", 1, 1);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(db_path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    feature_example fe;
    make_example(&fe, 2, 2);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_store_add(st, "c", &fe.ex, 2, &ei), SHOAL_EAGAIN);
    cr_assert_not_null(strstr(ei.msg, db_path), "%s", ei.msg);
    cr_assert_not_null(strstr(ei.msg, "try again later"), "%s", ei.msg);
    cr_assert_eq(count_of(st, "c"), 1, "reading goes on while another handle writes");
    cr_assert_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    cr_assert_eq(shoal_store_add(st, "c", &fe.ex, 2, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(count_of(st, "c"), 2);
    shoal_store_close(st);
    o.busy_timeout_ms = -1;
    cr_assert_eq(shoal_store_open(db_path, &o, &st, &ei), SHOAL_EINVAL);
    /* The page cache's bound: negative is refused, a small one works. */
    o.busy_timeout_ms = 0;
    o.cache_kib = -1;
    cr_assert_eq(shoal_store_open(db_path, &o, &st, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "cache_kib"), "%s", ei.msg);
    o.cache_kib = 16;
    cr_assert_eq(shoal_store_open(db_path, &o, &st, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(count_of(st, "c"), 2);
    shoal_store_close(st);
}

typedef struct {
    const char *path;
    const shoal_store_options *opts;
    shoal_err err;
    char msg[SHOAL_ERRINFO_LEN];
} opener;

static void *open_thread(void *arg)
{
    opener *o = arg;
    shoal_store *st = NULL;
    shoal_errinfo ei = {{0}};
    o->err = shoal_store_open(o->path, o->opts, &st, &ei);
    if (!o->err)
        o->err = shoal_store_add(st, "c", &(shoal_example){.blob = "x", .blob_len = 1}, 0, &ei);
    shoal_store_close(st);
    memcpy(o->msg, ei.msg, sizeof o->msg);
    return NULL;
}

Test(example_store, handles_racing_to_create_a_store_all_open_it, .timeout = 120)
{
    shoal_store_options encrypted = {.key = key_a, .key_len = SHOAL_STORE_KEY_BYTES};
    for (int round = 0; round < 20; round++) {
        char path[320];
        snprintf(path, sizeof path, "%s/race-%d.db", dir, round);
        enum { N = 4 };
        opener o[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++) {
            o[i] = (opener){.path = path, .opts = round % 2 ? &encrypted : NULL};
            cr_assert_eq(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
        }
        for (int i = 0; i < N; i++)
            pthread_join(t[i], NULL);
        for (int i = 0; i < N; i++)
            cr_assert_eq(o[i].err, SHOAL_OK, "round %d, handle %d: %s", round, i, o[i].msg);
        shoal_store *st = NULL;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_store_open(path, round % 2 ? &encrypted : NULL, &st, &ei), SHOAL_OK,
                     "%s", ei.msg);
        cr_assert_eq(count_of(st, "c"), N);
        shoal_store_close(st);
    }
}

/* The child adds batches of 5 and reports the number of examples committed
 * after each commit returns; the parent kills it mid-write. */
static void killed_writer_child(int fd, int32_t first)
{
    shoal_store *st = NULL;
    if (shoal_store_open(db_path, NULL, &st, NULL))
        _exit(3);
    for (int32_t next = first;; next += 5) {
        if (add_range(st, "log", next, 5, 1000 + 10 * (int64_t)next, NULL))
            _exit(4);
        uint64_t committed = (uint64_t)next + 5;
        if (write(fd, &committed, sizeof committed) != (ssize_t)sizeof committed)
            _exit(5);
    }
}

Test(example_store, a_killed_writer_loses_nothing_it_committed, .timeout = 300)
{
    uint64_t committed = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t child = fork();
        cr_assert_neq(child, -1);
        if (child == 0) {
            close(fds[0]);
            killed_writer_child(fds[1], (int32_t)committed);
        }
        close(fds[1]);
        /* Wait for the first commit, then let it write for a while. */
        uint64_t reported;
        uint64_t last = committed;
        if (read(fds[0], &reported, sizeof reported) == (ssize_t)sizeof reported)
            last = reported;
        struct timespec ts = {0, (10 + 37 * attempt) * 1000000L};
        nanosleep(&ts, NULL);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        cr_assert(WIFSIGNALED(status), "the writer was killed, not failed (%d)", status);
        while (read(fds[0], &reported, sizeof reported) == (ssize_t)sizeof reported)
            last = reported;
        close(fds[0]);

        shoal_store *st = open_plain();
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_store_check(st, &ei), SHOAL_OK, "%s", ei.msg);
        uint64_t n = count_of(st, "log");
        cr_assert_geq(n, last, "every reported commit is there (%llu of %llu)",
                      (unsigned long long)n, (unsigned long long)last);
        cr_assert_leq(n, last + 5, "at most the one unreported batch beyond");
        cr_assert_eq(n % 5, 0, "batches are all or nothing");
        if (n) {
            int32_t *labels = malloc(n * sizeof *labels);
            shoal_store_criteria c = {.collection = "log"};
            cr_assert_eq(epoch_labels(st, &c, 1, labels, n), n);
            assert_each_once(labels, n, 0);
            free(labels);
        }
        shoal_store_close(st);
        cr_log_info("attempt %d: %llu examples reported committed, %llu found", attempt,
                    (unsigned long long)last, (unsigned long long)n);
        committed = n;
    }
    cr_assert_gt(committed, 0, "some commits completed");
}

/* ---- allocation failures ---------------------------------------------------------- */

Test(example_store, allocation_failures_in_open_add_and_iterate_leak_nothing)
{
    static const shoal_store_options encrypted = {.key = key_a, .key_len = SHOAL_STORE_KEY_BYTES};
    const shoal_store_options *modes[2] = {NULL, &encrypted};
    for (int m = 0; m < 2; m++) {
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);
        /* open (creating the store, then again opening it) */
        for (int pass = 0; pass < 2; pass++) {
            for (long k = 0;; k++) {
                shoal_failalloc_install(k);
                shoal_store *st = (shoal_store *)1;
                shoal_err err = shoal_store_open(db_path, modes[m], &st, &ei);
                shoal_store_close(err ? NULL : st);
                long live = shoal_failalloc_live();
                shoal_failalloc_uninstall();
                cr_assert_eq(live, 0, "open, allocation %ld: %ld blocks leaked", k, live);
                if (!err)
                    break;
                cr_assert_eq(err, SHOAL_ENOMEM, "open, allocation %ld: %s", k, ei.msg);
                cr_assert_null(st);
                cr_assert_not_null(strstr(ei.msg, "out of memory"), "%s", ei.msg);
                cr_assert_lt(k, 100);
            }
        }
        /* add: a failure adds nothing */
        for (long k = 0;; k++) {
            shoal_store *st = open_with(modes[m]);
            shoal_failalloc_install(k);
            feature_example fe;
            make_example(&fe, (int32_t)k, 1000 + k);
            shoal_err err = shoal_store_add(st, "c", &fe.ex, 1000 + k, &ei);
            long live = shoal_failalloc_live();
            shoal_failalloc_uninstall();
            shoal_store_close(st);
            st = open_with(modes[m]);
            uint64_t n = count_of(st, "c");
            shoal_store_close(st);
            if (!err) {
                cr_assert_eq(n, 1);
                break;
            }
            cr_assert_eq(live, 0, "add, allocation %ld", k);
            cr_assert_eq(err, SHOAL_ENOMEM, "add, allocation %ld: %s", k, ei.msg);
            cr_assert_not_null(strstr(ei.msg, "out of memory"), "%s", ei.msg);
            cr_assert_eq(n, 0, "a failed add adds nothing");
            cr_assert_lt(k, 100);
        }
        shoal_store *st = open_with(modes[m]);
        cr_assert_eq(add_range(st, "c", 1, 299, 2000, &ei), SHOAL_OK);
        shoal_example blobs[50];
        static uint8_t bytes[5000];
        for (int i = 0; i < 50; i++)
            blobs[i] = (shoal_example){
                .blob = bytes, .blob_len = (size_t)i * 100, .label = i, .timestamp_ms = i};
        cr_assert_eq(shoal_store_add_batch(st, "b", blobs, 50, 0, &ei), SHOAL_OK);
        /* iterate: a whole epoch of features and one of blobs, every
         * allocation failing in turn */
        const char *collections[2] = {"c", "b"};
        for (int ci = 0; ci < 2; ci++) {
            for (long k = 0;; k++) {
                shoal_failalloc_install(k);
                shoal_store_criteria c = {.collection = collections[ci]};
                shoal_store_iter *it = (shoal_store_iter *)1;
                shoal_err err = shoal_store_iter_new(st, &c, 3, &it, &ei);
                size_t n = 0;
                if (!err) {
                    float x[7 * FEATURES];
                    int32_t y[7];
                    const uint8_t *blob[7];
                    size_t len[7];
                    shoal_store_batch b = {.x = x, .y = y, .blob = blob, .blob_len = len};
                    while ((err = shoal_store_iter_next(it, 7, &b, &ei)) == SHOAL_ROW)
                        n += b.count;
                    if (err == SHOAL_DONE) {
                        err = SHOAL_OK;
                        cr_assert_eq(n, ci ? 50 : 300);
                    }
                    shoal_store_iter_free(it);
                } else {
                    cr_assert_null(it);
                }
                long live = shoal_failalloc_live();
                shoal_failalloc_uninstall();
                cr_assert_eq(live, 0, "iterate %s, allocation %ld", collections[ci], k);
                if (!err)
                    break;
                cr_assert_eq(err, SHOAL_ENOMEM, "iterate, allocation %ld: %s", k, ei.msg);
                cr_assert_not_null(strstr(ei.msg, "out of memory"), "%s", ei.msg);
                cr_assert_lt(k, 100);
            }
        }
        shoal_store_close(st);
    }
}

/* SQLite's own allocations, routed through the Shoal hook so that the
 * sweep below fails them too. Criterion runs each test in a process of its
 * own, so this configuration does not leak into other tests. SQLite wants
 * the size of a block back: it sits in the 8 bytes before it. */
static void *sqlite_malloc(int n)
{
    uint64_t *p = shoal_malloc((size_t)n + 8);
    if (!p)
        return NULL;
    p[0] = (uint64_t)n;
    return p + 1;
}

static void sqlite_free(void *p)
{
    if (p)
        shoal_free((uint64_t *)p - 1);
}

static void *sqlite_realloc(void *p, int n)
{
    uint64_t *q = shoal_realloc((uint64_t *)p - 1, (size_t)n + 8);
    if (!q)
        return NULL;
    q[0] = (uint64_t)n;
    return q + 1;
}

static int sqlite_size(void *p)
{
    return p ? (int)((uint64_t *)p)[-1] : 0;
}

static int sqlite_roundup(int n)
{
    return (n + 7) & ~7;
}

static int sqlite_mem_init(void *ctx)
{
    (void)ctx;
    return SQLITE_OK;
}

static void sqlite_mem_shutdown(void *ctx)
{
    (void)ctx;
}

static void route_sqlite_allocations(void)
{
    static const sqlite3_mem_methods methods = {
        sqlite_malloc,  sqlite_free,     sqlite_realloc,      sqlite_size,
        sqlite_roundup, sqlite_mem_init, sqlite_mem_shutdown, NULL};
    cr_assert_eq(sqlite3_shutdown(), SQLITE_OK);
    cr_assert_eq(sqlite3_config(SQLITE_CONFIG_MALLOC, &methods), SQLITE_OK);
    /* No lookaside: every allocation reaches the hook. */
    cr_assert_eq(sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0), SQLITE_OK);
    cr_assert_eq(sqlite3_initialize(), SQLITE_OK);
}

typedef enum { SWEEP_OPEN, SWEEP_ADD, SWEEP_ITERATE } sweep_step;

/* Opens the store, does `step`, closes it: all inside the failing window. */
static shoal_err open_and(sweep_step step, const shoal_store_options *opts, long k,
                          shoal_errinfo *ei)
{
    shoal_store *st = NULL;
    shoal_err err = shoal_store_open(db_path, opts, &st, ei);
    if (!err && step == SWEEP_ADD) {
        err = add_range(st, "c", (int32_t)(1000 + 5 * k), 5, 5000 + 100 * k, ei);
    } else if (!err && step == SWEEP_ITERATE) {
        shoal_store_criteria c = {.collection = "c"};
        shoal_store_iter *it = NULL;
        if (!(err = shoal_store_iter_new(st, &c, 3, &it, ei))) {
            float x[16 * FEATURES];
            int32_t y[16];
            shoal_store_batch b = {.x = x, .y = y};
            while ((err = shoal_store_iter_next(it, 16, &b, ei)) == SHOAL_ROW)
                ;
            if (err == SHOAL_DONE)
                err = SHOAL_OK;
            shoal_store_iter_free(it);
        }
    }
    shoal_store_close(st);
    return err;
}

Test(example_store, sqlite_allocation_failures_are_reported_and_lose_nothing, .timeout = 600)
{
    route_sqlite_allocations();
    static const shoal_store_options encrypted = {.key = key_a, .key_len = SHOAL_STORE_KEY_BYTES};
    const shoal_store_options *modes[2] = {NULL, &encrypted};
    for (int m = 0; m < 2; m++) {
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_store_destroy(db_path, &ei), SHOAL_OK);
        shoal_store *st = open_with(modes[m]);
        cr_assert_eq(add_range(st, "c", 0, 40, 1000, &ei), SHOAL_OK);
        shoal_store_close(st);
        for (sweep_step step = SWEEP_OPEN; step <= SWEEP_ITERATE; step++) {
            /* Count the allocations of a clean run, then fail each in turn
             * (SQLite survives some failures, so success does not end the
             * sweep). */
            shoal_failalloc_install(LONG_MAX);
            cr_assert_eq(open_and(step, modes[m], -1, &ei), SHOAL_OK, "%s", ei.msg);
            const long allocations = shoal_failalloc_attempts();
            shoal_failalloc_uninstall();
            long failures = 0;
            for (long k = 0; k < allocations; k++) {
                st = open_with(modes[m]);
                uint64_t before = count_of(st, "c");
                shoal_store_close(st);

                shoal_failalloc_install(k);
                shoal_err err = open_and(step, modes[m], k, &ei);
                long live = shoal_failalloc_live();
                shoal_failalloc_uninstall();

                cr_assert_eq(live, 0, "step %d, allocation %ld: %ld blocks leaked", step, k, live);
                cr_assert(err == SHOAL_OK || err == SHOAL_ENOMEM, "step %d, allocation %ld: %s: %s",
                          step, k, shoal_err_name(err), ei.msg);
                if (err) {
                    failures++;
                    cr_assert_not_null(strstr(ei.msg, "out of memory"), "%s", ei.msg);
                }
                st = open_with(modes[m]);
                cr_assert_eq(shoal_store_check(st, &ei), SHOAL_OK, "%s", ei.msg);
                uint64_t after = count_of(st, "c");
                shoal_store_close(st);
                cr_assert_eq(after, before + (step == SWEEP_ADD && !err ? 5 : 0),
                             "step %d, allocation %ld: %s", step, k, ei.msg);
            }
            cr_log_info("mode %d step %d: %ld allocations, %ld failures reported", m, step,
                        allocations, failures);
            cr_assert_gt(failures, 10, "SQLite's allocations were swept");
        }
    }
}
