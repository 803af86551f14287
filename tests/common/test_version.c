/* shoal_version() and shoal/version.h against the project version meson
 * holds (meson.build), passed in as SHOAL_TEST_PROJECT_VERSION. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "shoal/version.h"

Test(common_version, the_library_says_the_version_meson_builds)
{
    cr_assert_str_eq(shoal_version(), SHOAL_TEST_PROJECT_VERSION);
    cr_assert_str_eq(SHOAL_VERSION_STRING, SHOAL_TEST_PROJECT_VERSION);
}

Test(common_version, the_numbers_spell_the_string)
{
    char spelled[32];
    snprintf(spelled, sizeof spelled, "%d.%d.%d", SHOAL_VERSION_MAJOR, SHOAL_VERSION_MINOR,
             SHOAL_VERSION_PATCH);
    cr_assert_str_eq(spelled, shoal_version());
    cr_assert_eq(SHOAL_VERSION_NUMBER,
                 SHOAL_VERSION_MAJOR * 10000 + SHOAL_VERSION_MINOR * 100 + SHOAL_VERSION_PATCH);
}
