/* Refusals: counters, log lines bounded per reason and minute, and the
 * per-address limit on failed authentications. Time is passed in. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "refusals.h"
#include "shoal/envelope.h"
#include "shoal/log.h"

static int lines;
static char last[512];

static void sink(void *ctx, shoal_log_level level, const char *component, const char *line)
{
    (void)ctx;
    (void)level;
    (void)component;
    lines++;
    snprintf(last, sizeof last, "%s", line);
}

static void restore_sink(void)
{
    shoal_log_set_sink(NULL, NULL);
}

TestSuite(refusals, .fini = restore_sink);

Test(refusals, counts_by_population_and_reason_with_one_row_for_none)
{
    shoal_refusals *r = NULL;
    cr_assert_eq(shoal_refusals_new(2, 0, 10, &r), SHOAL_OK);
    shoal_refusals_count(r, 1, SHOAL__REASON__REASON_AUTH_FAILED);
    shoal_refusals_count(r, 1, SHOAL__REASON__REASON_AUTH_FAILED);
    shoal_refusals_count(r, 0, SHOAL_REFUSAL_RESUME_IDENTITY);
    shoal_refusals_count(r, SHOAL_REFUSALS_NO_POPULATION, SHOAL__REASON__REASON_UNKNOWN_POPULATION);
    cr_assert_eq(shoal_refusals_total(r, 1, SHOAL__REASON__REASON_AUTH_FAILED), 2);
    cr_assert_eq(shoal_refusals_total(r, 0, SHOAL__REASON__REASON_AUTH_FAILED), 0);
    cr_assert_eq(shoal_refusals_total(r, 0, SHOAL_REFUSAL_RESUME_IDENTITY), 1);
    cr_assert_eq(shoal_refusals_total(r, 2, SHOAL__REASON__REASON_UNKNOWN_POPULATION), 1,
                 "index 2 is the row of refusals before a population");
    cr_assert_str_eq(shoal_refusals_label(SHOAL__REASON__REASON_AUTH_FAILED), "auth_failed");
    cr_assert_str_eq(shoal_refusals_label(SHOAL_REFUSAL_AUTH_RATE_LIMITED), "auth_rate_limited");
    cr_assert_str_eq(shoal_refusals_label(SHOAL_REFUSAL_RESUME_IDENTITY), "resume_other_device");
    shoal_refusals_free(r);
}

Test(refusals, log_lines_stop_at_the_limit_then_one_summary_counts_the_rest)
{
    shoal_log_set_sink(sink, NULL);
    shoal_refusals *r = NULL;
    cr_assert_eq(shoal_refusals_new(1, 0, 3, &r), SHOAL_OK);
    const int64_t t0 = 5000000;
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += shoal_refusals_may_log(r, SHOAL__REASON__REASON_MALFORMED, t0 + i);
    cr_assert_eq(allowed, 3);
    /* Another reason has its own budget. */
    cr_assert(shoal_refusals_may_log(r, SHOAL__REASON__REASON_BAD_CHUNK, t0 + 20));
    cr_assert_eq(lines, 0, "no summary within the minute");
    /* A minute later: the 7 suppressed lines are summed up, once. */
    cr_assert(shoal_refusals_may_log(r, SHOAL__REASON__REASON_MALFORMED, t0 + 60000));
    cr_assert_eq(lines, 1);
    cr_assert(strstr(last, "7 more refusal(s) for malformed in the last minute were not logged"),
              "%s", last);
    cr_assert(strstr(last, "limits.refusal_log_per_minute"), "%s", last);
    cr_assert(shoal_refusals_may_log(r, SHOAL__REASON__REASON_MALFORMED, t0 + 60001));
    cr_assert_eq(lines, 1, "a summary only for lines that were suppressed");
    shoal_refusals_free(r);
}

Test(refusals, an_address_is_barred_after_its_failures_until_its_minute_ends)
{
    shoal_refusals *r = NULL;
    cr_assert_eq(shoal_refusals_new(1, 3, 10, &r), SHOAL_OK);
    const int64_t t0 = 7000000;
    int64_t wait = -1;
    for (int i = 0; i < 3; i++) {
        cr_assert_not(shoal_refusals_barred(r, "192.0.2.7", t0 + i * 1000, &wait), "failure %d", i);
        shoal_refusals_auth_failed(r, "192.0.2.7", t0 + i * 1000);
    }
    cr_assert(shoal_refusals_barred(r, "192.0.2.7", t0 + 10000, &wait));
    cr_assert_eq(wait, 50000, "the minute began with the first failure");
    cr_assert_not(shoal_refusals_barred(r, "192.0.2.8", t0 + 10000, &wait), "another address");
    cr_assert_not(shoal_refusals_barred(r, "192.0.2.7", t0 + 60000, &wait), "the minute is over");
    shoal_refusals_auth_failed(r, "192.0.2.7", t0 + 60000);
    cr_assert_not(shoal_refusals_barred(r, "192.0.2.7", t0 + 60001, &wait), "a fresh minute");
    shoal_refusals_free(r);

    /* 0: no limit at all. */
    cr_assert_eq(shoal_refusals_new(1, 0, 10, &r), SHOAL_OK);
    for (int i = 0; i < 100; i++)
        shoal_refusals_auth_failed(r, "192.0.2.7", t0);
    cr_assert_not(shoal_refusals_barred(r, "192.0.2.7", t0, &wait));
    shoal_refusals_free(r);
}

/* A flood of addresses cannot grow the table; each keeps its own count
 * while it has a slot. */
Test(refusals, a_flood_of_addresses_stays_bounded)
{
    shoal_refusals *r = NULL;
    cr_assert_eq(shoal_refusals_new(1, 2, 10, &r), SHOAL_OK);
    char address[64];
    for (int i = 0; i < 100000; i++) {
        snprintf(address, sizeof address, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        shoal_refusals_auth_failed(r, address, 1000 + i / 1000);
    }
    int64_t wait;
    shoal_refusals_auth_failed(r, "198.51.100.1", 2000);
    shoal_refusals_auth_failed(r, "198.51.100.1", 2001);
    cr_assert(shoal_refusals_barred(r, "198.51.100.1", 2002, &wait));
    shoal_refusals_free(r);
}
