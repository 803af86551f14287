/* Sessions as devices see them: their ids, and who may continue them. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SESSIONS 24

static uint64_t le64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* A session id says nothing about the sessions before it: no half of it
 * counts. With a counter in the first 8 bytes consecutive ids would differ
 * by a small number there and share their high bytes. */
Test(sessions, consecutive_session_ids_share_no_structure)
{
    tserver t;
    tserver_start_one(&t, "\"mode\": \"async\", \"goal_count\": 64, \"buffer_size\": 64");
    uint8_t ids[SESSIONS][16];
    for (int i = 0; i < SESSIONS; i++) {
        tdev d;
        cr_assert_eq(tdev_connect(&d, &t.endpoint), 0);
        cr_assert_eq(tdev_checkin(&d, "p", TEST_SECRET, 0, NULL, 0), 0);
        cr_assert_eq(tdev_await_config(&d, 10000), TDEV_ACCEPTED, "session %d", i);
        cr_assert_eq(d.session_len, 16u);
        memcpy(ids[i], d.session, 16);
        shoal_wss_abort(d.wss);
        tdev_close(&d);
    }
    tserver_stop(&t);
    tserver_cleanup(&t);

    int same_high = 1;
    for (int i = 0; i < SESSIONS; i++) {
        for (int j = 0; j < i; j++)
            cr_assert_neq(memcmp(ids[i], ids[j], 16), 0, "sessions %d and %d share an id", i, j);
        if (i == 0)
            continue;
        uint64_t a = le64(ids[i - 1]), b = le64(ids[i]);
        uint64_t gap = a > b ? a - b : b - a;
        /* Two random 64-bit numbers are this close with odds of 2^-31. */
        cr_assert_gt(gap, (uint64_t)1 << 32, "sessions %d and %d: first halves %llu and %llu",
                     i - 1, i, (unsigned long long)a, (unsigned long long)b);
        if (memcmp(ids[i] + 4, ids[0] + 4, 4) != 0)
            same_high = 0;
    }
    cr_assert_not(same_high, "every session id has the same bytes 4..7");
}
