/* Tables of names for an enum's values, read both ways. */
#include <criterion/criterion.h>

#include "shoal/names.h"

enum colour { RED = 1, GREEN, BLUE = 4 };
static const char *const colour_names[] = {[RED] = "red", [GREEN] = "green", [BLUE] = "blue"};

Test(names, a_value_gives_its_name_and_an_unnamed_one_the_fallback)
{
    const size_t n = SHOAL_NAMES_COUNT(colour_names);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(shoal_names_get(colour_names, n, GREEN, "?"), "green");
    cr_assert_str_eq(shoal_names_get(colour_names, n, BLUE, "?"), "blue");
    cr_assert_str_eq(shoal_names_get(colour_names, n, 0, "?"), "?", "a gap in the table");
    cr_assert_str_eq(shoal_names_get(colour_names, n, 3, "none"), "none");
    cr_assert_str_eq(shoal_names_get(colour_names, n, 5, "?"), "?", "past the end");
    cr_assert_str_eq(shoal_names_get(colour_names, n, -1, "?"), "?", "negative");
}

Test(names, a_name_gives_its_value_and_an_unknown_one_einval)
{
    const size_t n = SHOAL_NAMES_COUNT(colour_names);
    int value = -7;
    cr_assert_eq(shoal_names_find(colour_names, n, "blue", &value), SHOAL_OK);
    cr_assert_eq(value, BLUE);
    cr_assert_eq(shoal_names_find(colour_names, n, "red", &value), SHOAL_OK);
    cr_assert_eq(value, RED);
    value = -7;
    cr_assert_eq(shoal_names_find(colour_names, n, "Blue", &value), SHOAL_EINVAL);
    cr_assert_eq(shoal_names_find(colour_names, n, "", &value), SHOAL_EINVAL);
    cr_assert_eq(shoal_names_find(colour_names, n, NULL, &value), SHOAL_EINVAL);
    cr_assert_eq(value, -7, "untouched on failure");
}
