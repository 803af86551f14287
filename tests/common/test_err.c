#include <criterion/criterion.h>
#include <string.h>

#include "shoal/err.h"

Test(common_err, every_code_has_a_distinct_name_and_text)
{
    for (int a = 0; a < SHOAL_ERR_COUNT_; a++) {
        cr_assert_str_neq(shoal_strerror((shoal_err)a), "unknown error", "code %d", a);
        cr_assert_str_neq(shoal_err_name((shoal_err)a), "SHOAL_E?", "code %d", a);
        for (int b = a + 1; b < SHOAL_ERR_COUNT_; b++)
            cr_assert_str_neq(shoal_err_name((shoal_err)a), shoal_err_name((shoal_err)b));
    }
}

Test(common_err, statuses_sit_outside_the_error_range)
{
    cr_assert_gt(SHOAL_ROW, SHOAL_ERR_COUNT_);
    cr_assert_str_eq(shoal_err_name(SHOAL_DONE), "SHOAL_DONE");
    cr_assert_str_eq(shoal_strerror(SHOAL_ROW), "row available");
}

Test(common_err, unknown_values_are_named_as_unknown)
{
    cr_assert_str_eq(shoal_strerror((shoal_err)9999), "unknown error");
    cr_assert_str_eq(shoal_strerror((shoal_err)-1), "unknown error");
    cr_assert_str_eq(shoal_err_name((shoal_err)SHOAL_ERR_COUNT_), "SHOAL_E?");
}

Test(common_err, errinfo_formats_and_returns_the_code)
{
    shoal_errinfo ei;
    cr_assert_eq(shoal_errinfo_set(&ei, SHOAL_EFORMAT, "%s:%d: bad", "f.csv", 3), SHOAL_EFORMAT);
    cr_assert_str_eq(ei.msg, "f.csv:3: bad");
    cr_assert_eq(shoal_errinfo_set(NULL, SHOAL_EIO, "ignored"), SHOAL_EIO);
}

Test(common_err, errinfo_truncates_long_messages)
{
    shoal_errinfo ei;
    char big[2 * SHOAL_ERRINFO_LEN];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    (void)shoal_errinfo_set(&ei, SHOAL_EINVAL, "%s", big);
    cr_assert_eq(strlen(ei.msg), SHOAL_ERRINFO_LEN - 1);
}
