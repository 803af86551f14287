/* The locator that puts line and column into configuration errors: keys
 * are compared after unescaping, as jansson reads them. */
#include <criterion/criterion.h>
#include <string.h>

#include "json_locate_int.h"

static size_t locate(const char *text, const char *want, json_pos *key)
{
    json_step step = {.key = want};
    json_pos value;
    return shoal_json_locate(text, strlen(text), &step, 1, &value, key);
}

Test(config_json_locate, one_letter_escapes_stand_for_their_bytes)
{
    /* Column 13 is the second key: "a\tb" is not "a\nb". */
    const char *text = "{\"a\\tb\": 1, \"a\\nb\": 2, \"a\\/b\": 3}";
    json_pos key;
    cr_assert_eq(locate(text, "a\nb", &key), 1);
    cr_assert_eq(key.line, 1);
    cr_assert_eq(key.column, 13);
    cr_assert_eq(locate(text, "a\tb", &key), 1);
    cr_assert_eq(key.column, 2);
    cr_assert_eq(locate(text, "a/b", &key), 1);
    cr_assert_eq(key.column, 24);
    cr_assert_eq(locate(text, "a\rb", &key), 0);
}

Test(config_json_locate, members_after_nested_values_are_found)
{
    const char *text = "{\"x\": [1, {\"y\": \"}\"}], \"z\": 0}";
    json_pos key;
    cr_assert_eq(locate(text, "z", &key), 1);
    cr_assert_eq(key.column, 24);
}
